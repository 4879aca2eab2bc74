//! The per-container cache of tenants' connections: the decrypted token, the tool binding and
//! the open MCP session, valid while the integration item's version is unchanged and younger
//! than `TOKEN_CACHE_TTL_SECS`. So KMS is asked at most once per tenant per container per TTL,
//! and a session is initialised once, not per event. Also the rate gate: every lead operation
//! first takes a token from the portal's budget shared by all consumers ([`BudgetedCrm`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use url::Url;

use super::failure::{CachePlan, SyncError};
use super::fields;
use super::ports::{Lead, LeadCrm, RateBudget, TokenOpener};
use crate::crm::discovery::discover;
use crate::crm::{Binding, Crm, CrmError, Operation, PortalCaps, ToolMap};
use crate::mcp::{McpClient, McpError, McpSession, UrlGuard};
use crate::metrics::{Metric, Metrics};
use crate::secret::SecretToken;
use crate::store::{Integration, RateParams, Store, TokenTake};
use crate::tenant::TenantId;
use crate::vault::Vault;

/// A budget token due within this long is taken and waited for; a later one fails the event
/// with that delay.
const MAX_BUDGET_SLEEP: Duration = Duration::from_secs(1);

/// A tenant's cached connection.
pub struct Connection {
    pub version: u64,
    token: SecretToken,
    pub binding: Binding,
    url: Url,
    cached_at: Instant,
    pub session: Option<McpSession>,
}

/// One tenant's slot. The tokio mutex is held for a whole event, so one tenant's events in a
/// container run one at a time (its portal budget is shared anyway); tenants run in parallel.
pub type Slot = Arc<tokio::sync::Mutex<Option<Connection>>>;

/// The cache and what it needs to fill it.
pub struct Connections {
    vault: Vault,
    mcp: McpClient,
    guard: UrlGuard,
    tool_map: Option<String>,
    ttl: Duration,
    slots: StdMutex<HashMap<String, Slot>>,
}

impl Connections {
    pub fn new(
        vault: Vault,
        mcp: McpClient,
        guard: UrlGuard,
        tool_map: Option<String>,
        ttl: Duration,
    ) -> Self {
        Self {
            vault,
            mcp,
            guard,
            tool_map,
            ttl,
            slots: StdMutex::new(HashMap::new()),
        }
    }

    pub fn slot(&self, t: &TenantId) -> Slot {
        let mut slots = self
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(t.as_str().to_owned()).or_default().clone()
    }

    /// Makes the slot hold a valid connection for this integration version (KMS only when it
    /// does not). A binding stored by an older version of the connector is unreadable: it is
    /// left empty here, and bound again in the session by the engine.
    pub async fn refresh(
        &self,
        slot: &mut Option<Connection>,
        t: &TenantId,
        integ: &Integration,
    ) -> Result<(), SyncError> {
        let fresh = slot
            .as_ref()
            .is_some_and(|c| c.version == integ.version && c.cached_at.elapsed() < self.ttl);
        if fresh {
            return Ok(());
        }
        let ciphertext = integ
            .token_ciphertext
            .as_deref()
            .ok_or(SyncError::NotConnected)?;
        let binding = integ
            .binding
            .as_ref()
            .and_then(Binding::from_value)
            .unwrap_or_else(|| Binding {
                ops: Default::default(),
                caps: integ
                    .binding
                    .as_ref()
                    .and_then(|b| serde_json::from_value::<PortalCaps>(b.get("caps")?.clone()).ok())
                    .unwrap_or_default(),
            });
        let url = self.guard.check(integ.mcp_url.as_deref())?;
        let token = self.vault.open(t, ciphertext).await?;
        *slot = Some(Connection {
            version: integ.version,
            token,
            binding,
            url,
            cached_at: Instant::now(),
            session: None,
        });
        Ok(())
    }

    /// Opens the connection's MCP session unless one is open.
    pub async fn open_session(&self, c: &mut Connection) -> Result<(), SyncError> {
        if c.session.is_none() {
            let s = self
                .mcp
                .connect(&c.url, &c.token)
                .await
                .map_err(CrmError::from)?;
            c.session = Some(s);
        }
        Ok(())
    }

    /// Lists the tools again and binds them (keeping the portal capabilities read at connect).
    /// Returns the new binding when it differs from the cached one, `None` when it is the same.
    pub async fn bind_again(&self, c: &mut Connection) -> Result<Option<Binding>, SyncError> {
        self.open_session(c).await?;
        let Some(session) = c.session.as_mut() else {
            return Err(SyncError::NotConnected);
        };
        let tools = session.list_tools().await.map_err(CrmError::from)?;
        let map = self
            .tool_map
            .as_deref()
            .map(ToolMap::parse)
            .transpose()
            .map_err(|_| SyncError::BadConnection("MCP_TOOL_MAP is invalid"))?;
        let mut binding = discover(&tools, map.as_ref());
        binding.caps = c.binding.caps.clone();
        if let Some(op) = binding.missing_required().first() {
            return Err(CrmError::Unsupported(*op).into());
        }
        Ok((binding != c.binding).then_some(binding))
    }

    /// Carries out the cache part of a failure plan.
    pub async fn apply(&self, t: &TenantId, plan: CachePlan) {
        if plan == CachePlan::Keep {
            return;
        }
        let slot = self.slot(t);
        let mut guard = slot.lock().await;
        self.apply_locked(&mut guard, plan);
    }

    /// The same, for a caller already holding the slot.
    pub fn apply_locked(&self, slot: &mut Option<Connection>, plan: CachePlan) {
        match plan {
            CachePlan::Keep => {}
            CachePlan::ResetSession => {
                if let Some(c) = slot.as_mut() {
                    c.session = None;
                }
            }
            CachePlan::Forget => *slot = None,
        }
    }
}

/// The bound CRM operations of one session, each preceded by a token from the portal's shared
/// budget: a short wait is slept through, a long one fails the event with that wait.
/// Every operation is one `tools/call`: here each is counted for the event (`calls`) and, with
/// how it ended, in the `BitrixCalls` metric; the budget's sleeps go to `RateLimitWaitMs`.
pub struct BudgetedCrm<'a> {
    pub crm: Crm<'a>,
    pub budget: &'a Store,
    pub tenant: &'a TenantId,
    pub rate: &'a RateParams,
    pub metrics: &'a Metrics,
    /// `tools/call` requests made so far by this event.
    pub calls: &'a mut u32,
}

/// How a `tools/call` ended, as the `Outcome` of the `BitrixCalls` metric. From the error's
/// structure, as the failure plan reads it: the rate limits, the portal failing (timeouts,
/// 5xx, answers that are not MCP), the token refused, and everything the server refused about
/// this call (its data, an unknown tool, a missing record).
pub fn call_outcome(err: Option<&CrmError>) -> &'static str {
    match err {
        None => "ok",
        Some(CrmError::Mcp(McpError::RateLimited { .. })) => "rate_limited",
        Some(CrmError::Mcp(McpError::Transient { .. } | McpError::Protocol { .. })) => "transient",
        Some(CrmError::Mcp(McpError::Unauthorized { .. })) => "auth",
        Some(_) => "data",
    }
}

impl BudgetedCrm<'_> {
    /// Counts one finished `tools/call`.
    fn tally<T>(&mut self, r: Result<T, CrmError>) -> Result<T, CrmError> {
        *self.calls += 1;
        self.metrics
            .count_as(Metric::BitrixCalls, call_outcome(r.as_ref().err()), 1);
        r
    }

    /// One token of the portal's budget before a call: taken at once, or one due within
    /// [`MAX_BUDGET_SLEEP`] taken and waited for (one request either way); a budget empty for
    /// longer fails the event with that delay.
    async fn gate(&self) -> Result<(), SyncError> {
        let now = OffsetDateTime::now_utc();
        match self
            .budget
            .take(self.tenant, self.rate, now, MAX_BUDGET_SLEEP)
            .await?
        {
            TokenTake::Taken { after } => {
                if !after.is_zero() {
                    self.metrics.observe(Metric::RateLimitWaitMs, after);
                    tokio::time::sleep(after).await;
                }
                Ok(())
            }
            TokenTake::Empty { wait } => Err(SyncError::RateBudget { wait }),
        }
    }
}

impl BudgetedCrm<'_> {
    /// One page of the connector's leads changed at or after `since` (change watching), one
    /// token of the portal's budget like every other call.
    pub async fn list_changed(&mut self, since: &str, start: u64) -> Result<Vec<Lead>, SyncError> {
        self.gate().await?;
        Ok(self
            .crm
            .list_changed(fields::ORIGINATOR, since, start)
            .await?)
    }
}

fn gone_as_false(r: Result<(), CrmError>) -> Result<bool, SyncError> {
    match r {
        Ok(()) => Ok(true),
        Err(CrmError::Mcp(McpError::NotFound)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

impl LeadCrm for BudgetedCrm<'_> {
    fn has(&self, op: Operation) -> bool {
        self.crm.has(op)
    }

    async fn find_by_phones(&mut self, spellings: &[String]) -> Result<Vec<i64>, SyncError> {
        self.gate().await?;
        let r = self.crm.find_by_phones(spellings).await;
        Ok(self.tally(r)?)
    }

    async fn find_by_origin(&mut self, origin_id: &str) -> Result<Vec<i64>, SyncError> {
        self.gate().await?;
        let r = self.crm.find_by_origin(fields::ORIGINATOR, origin_id).await;
        Ok(self.tally(r)?)
    }

    async fn create_lead(&mut self, f: Map<String, Value>) -> Result<i64, SyncError> {
        self.gate().await?;
        let r = self.crm.create_lead(f).await;
        Ok(self.tally(r)?)
    }

    async fn update_lead(&mut self, id: i64, f: Map<String, Value>) -> Result<bool, SyncError> {
        self.gate().await?;
        let r = self.crm.update_lead(id, f).await;
        gone_as_false(self.tally(r))
    }

    async fn get_lead(&mut self, id: i64) -> Result<Option<Lead>, SyncError> {
        self.gate().await?;
        let r = self.crm.get_lead(id).await;
        Ok(self.tally(r)?)
    }

    async fn add_comment(&mut self, id: i64, text: &str) -> Result<bool, SyncError> {
        self.gate().await?;
        let r = self.crm.add_comment(id, text).await;
        gone_as_false(self.tally(r))
    }
}

/// What `portal_info.bound` shows after the tools were bound again.
pub fn bound_report(info: Option<&Value>, binding: &Binding) -> Value {
    let mut info = info.cloned().unwrap_or_else(|| json!({}));
    if let Value::Object(m) = &mut info {
        m.insert("bound".into(), binding.report()["bound"].clone());
    }
    info
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mcp::TransientReason;

    #[test]
    fn calls_are_counted_by_how_they_ended() {
        let rows: Vec<(Option<CrmError>, &str)> = vec![
            (None, "ok"),
            (
                Some(CrmError::Mcp(McpError::RateLimited { retry_after: None })),
                "rate_limited",
            ),
            (
                Some(CrmError::Mcp(McpError::Transient {
                    reason: TransientReason::Timeout,
                })),
                "transient",
            ),
            (
                Some(CrmError::Mcp(McpError::Unauthorized {
                    status: Some(403),
                    code: None,
                })),
                "auth",
            ),
            (Some(CrmError::Rejected { op: "update_lead" }), "data"),
            (Some(CrmError::Mcp(McpError::NotFound)), "data"),
        ];
        for (err, want) in rows {
            assert_eq!(call_outcome(err.as_ref()), want, "{err:?}");
        }
    }
}
