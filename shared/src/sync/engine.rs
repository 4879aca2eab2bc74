//! The per-event sync (design.md §4 steps 2-6): claim the event, read the integration, get the
//! token, binding and MCP session from the per-container cache, find or create the lead within
//! the portal's rate budget, record the link. Failures go to [`super::outcome::decide`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::{Duration, Instant};

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tracing::Instrument;
use url::Url;

use super::fields::{self, UpdateInput};
use super::outcome::{Decision, HELD_RETRY, Outcome, SyncError, backoff, decide};
use crate::config::Config;
use crate::crm::binding::discover;
use crate::crm::{Binding, Crm, CrmError, Operation, ToolMap};
use crate::events::LeadEvent;
use crate::mcp::{McpClient, McpError, McpSession, UrlGuard};
use crate::phone::{Phone, parse_phone, search_spellings};
use crate::secret::SecretToken;
use crate::store::{
    Claim, CreateClaim, Integration, LeadLink, LinkMeta, LinkState, RateParams, Store, SyncStatus,
};
use crate::tenant::TenantId;
use crate::vault::Vault;

/// The event claim's lease: at least the function timeout (60 s), so a live consumer never loses
/// its claim mid-event; a crashed one's claim is retaken after it.
const EVENT_LEASE: Duration = Duration::from_secs(120);
/// Done records outlive the queue's retention (14 d) plus the parking period (14 d).
const DONE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// The per-customer create lock's lease: one search plus one create, with room for slow calls.
const CREATE_LEASE: Duration = Duration::from_secs(60);
/// A budget wait up to this long is slept through; a longer one fails the event with that delay.
const MAX_BUDGET_SLEEP: Duration = Duration::from_secs(1);
/// Takes of a budget token before giving up (each may sleep up to [`MAX_BUDGET_SLEEP`]).
const BUDGET_ATTEMPTS: usize = 4;
/// How long a link's `sent` values are trusted without reading the lead back.
///
/// Trade-off: within this window after our last create/update/get we update from `sent` alone,
/// which keeps a conversation's burst of events near one `tools/call` each (the benchmark's
/// <= 1.2); the price is that a manager's edit made inside the window can be overwritten by the
/// next event's changed value. After the window, the lead is read first and edited fields win.
const VERIFY_WINDOW: time::Duration = time::Duration::minutes(10);

/// Counters for the benchmark (per container, since start).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Events handled (every call of [`SyncEngine::handle`]).
    pub events: u64,
    /// `tools/call` requests sent to Bitrix24 (what the portal's rate limit counts).
    pub tool_calls: u64,
    /// Every MCP HTTP request (handshakes, `tools/list`, `tools/call`).
    pub mcp_http_requests: u64,
    /// KMS requests of the vault.
    pub kms_calls: u64,
    /// DynamoDB requests of the store.
    pub ddb_calls: u64,
}

/// A tenant's cached connection: valid while the integration's version is unchanged and younger
/// than `TOKEN_CACHE_TTL_SECS`, so KMS is asked at most once per tenant per container per TTL and
/// the MCP session is initialised once, not per event.
struct TenantEntry {
    version: u64,
    token: SecretToken,
    binding: Binding,
    url: Url,
    cached_at: Instant,
    session: Option<McpSession>,
    /// Session counters already added to the engine's totals.
    seen_tools: u64,
    seen_http: u64,
}

/// One tenant's slot. The tokio mutex is held for a whole event, so one tenant's events in a
/// container run one at a time (its portal budget is shared anyway); tenants run in parallel.
type Slot = Arc<tokio::sync::Mutex<Option<TenantEntry>>>;

struct Inner {
    store: Store,
    vault: Vault,
    mcp: McpClient,
    guard: UrlGuard,
    tool_map: Option<String>,
    token_ttl: Duration,
    default_region: Option<String>,
    max_receive_count: u32,
    slots: StdMutex<HashMap<String, Slot>>,
    events: AtomicU64,
    tool_calls: AtomicU64,
    http_requests: AtomicU64,
}

/// The sync engine: built once per container, cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct SyncEngine {
    inner: Arc<Inner>,
}

/// What a successful sync did, for the audit line.
struct Synced {
    kind: &'static str,
    lead_id: i64,
}

impl SyncEngine {
    pub fn new(cfg: &Config, store: Store, vault: Vault, mcp: McpClient) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                vault,
                mcp,
                guard: UrlGuard::from_config(cfg),
                tool_map: cfg.mcp_tool_map.clone(),
                token_ttl: cfg.token_cache_ttl,
                default_region: cfg.default_phone_region.clone(),
                max_receive_count: cfg.lead_queue_max_receive_count,
                slots: StdMutex::new(HashMap::new()),
                events: AtomicU64::new(0),
                tool_calls: AtomicU64::new(0),
                http_requests: AtomicU64::new(0),
            }),
        }
    }

    pub fn stats(&self) -> SyncStats {
        let i = &self.inner;
        SyncStats {
            events: i.events.load(Ordering::Relaxed),
            tool_calls: i.tool_calls.load(Ordering::Relaxed),
            mcp_http_requests: i.http_requests.load(Ordering::Relaxed),
            kms_calls: i.vault.kms_calls(),
            ddb_calls: i.store.ddb_calls(),
        }
    }

    /// Handles one valid event. `receive_count` = SQS ApproximateReceiveCount (1 on first
    /// delivery); `body` is the raw message body, parked verbatim so a replay re-sends it exactly.
    pub async fn handle(&self, event: &LeadEvent, body: &str, receive_count: u32) -> Outcome {
        let span = tracing::info_span!(
            "sync_event",
            tenant_id = %event.tenant_id,
            event_id = %event.event_id,
            customer_id = %event.customer.id,
            lead_id = tracing::field::Empty,
        );
        self.handle_inner(event, body, receive_count)
            .instrument(span)
            .await
    }

    async fn handle_inner(&self, event: &LeadEvent, body: &str, receive_count: u32) -> Outcome {
        let i = &self.inner;
        i.events.fetch_add(1, Ordering::Relaxed);
        let t = &event.tenant_id;
        let now = OffsetDateTime::now_utc();
        match i
            .store
            .claim_event(t, &event.event_id, EVENT_LEASE, now)
            .await
        {
            Ok(Claim::Claimed) => {}
            Ok(Claim::AlreadyDone) => {
                tracing::info!("duplicate event: already done");
                return Outcome::Done;
            }
            Ok(Claim::HeldByOther { until }) => {
                // Never acknowledged: the other consumer may fail. Nothing to release.
                let wait: Duration = (until - now).try_into().unwrap_or(Duration::ZERO);
                return self
                    .fail(
                        event,
                        body,
                        receive_count,
                        SyncError::EventHeld { wait },
                        None,
                    )
                    .await;
            }
            Err(e) => {
                // Nothing claimed, nothing to release.
                return self
                    .fail(event, body, receive_count, SyncError::Store(e), None)
                    .await;
            }
        }
        let mut version = None;
        match self.process(event, &mut version).await {
            Ok(done) => {
                tracing::Span::current().record("lead_id", done.lead_id);
                if let Err(e) = i.store.complete_event(t, &event.event_id, DONE_TTL).await {
                    // The lead and link are written: a redelivery finds nothing left to send.
                    tracing::warn!(error = %e, "could not mark the event done");
                }
                if let Err(e) = i.store.touch_last_sync(t, OffsetDateTime::now_utc()).await {
                    tracing::warn!(error = %e, "could not record last_sync_at");
                }
                self.audit(
                    t,
                    done.kind,
                    json!({"event_id": event.event_id, "customer_id": event.customer.id, "lead_id": done.lead_id}),
                )
                .await;
                Outcome::Done
            }
            Err(err) => {
                let outcome = self.fail(event, body, receive_count, err, version).await;
                if let Err(e) = i.store.release_event(t, &event.event_id).await {
                    tracing::warn!(error = %e, "could not release the event claim (the lease will expire)");
                }
                outcome
            }
        }
    }

    /// Carries out the decision of [`decide`] for a failed event.
    async fn fail(
        &self,
        event: &LeadEvent,
        body: &str,
        receive_count: u32,
        err: SyncError,
        version: Option<u64>,
    ) -> Outcome {
        let i = &self.inner;
        let t = &event.tenant_id;
        let jitter = jitter_ms();
        let decision = decide(&err, receive_count, i.max_receive_count, jitter);
        tracing::info!(error = %err, ?decision, "event not synced");
        match decision {
            Decision::Outcome(Outcome::Skipped { reason }) => {
                self.audit(
                    t,
                    "event_skipped",
                    json!({"event_id": event.event_id, "reason": reason}),
                )
                .await;
                Outcome::Skipped { reason }
            }
            Decision::Outcome(o) => o,
            Decision::Park { reason } => self.park(event, body, reason, receive_count).await,
            Decision::IntegrationFailure { reason } => {
                self.drop_entry(t).await;
                if let Some(v) = version {
                    match i
                        .store
                        .set_status(t, v, SyncStatus::Error, Some(reason.clone()))
                        .await
                    {
                        Ok(_) => {
                            self.audit(
                                t,
                                "integration_error",
                                json!({"reason": reason, "event_id": event.event_id}),
                            )
                            .await;
                        }
                        Err(crate::store::StoreError::Conflict) => {
                            // The connection changed while we used the old one: try the new one.
                            return Outcome::Retry {
                                delay: HELD_RETRY,
                                reason:
                                    "the Bitrix24 connection changed; retrying with the new one"
                                        .into(),
                            };
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "could not set the integration error status")
                        }
                    }
                }
                self.park(event, body, reason, receive_count).await
            }
        }
    }

    /// Keeps the event in `PARKED#`; if even that fails, the event is retried (never lost).
    async fn park(
        &self,
        event: &LeadEvent,
        body: &str,
        reason: String,
        receive_count: u32,
    ) -> Outcome {
        let t = &event.tenant_id;
        match self
            .inner
            .store
            .park_event(t, event.occurred_at, &event.event_id, body, &reason)
            .await
        {
            Ok(()) => {
                self.audit(
                    t,
                    "event_parked",
                    json!({"event_id": event.event_id, "reason": reason}),
                )
                .await;
                Outcome::Parked { reason }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not park the event; it will be retried");
                Outcome::Retry {
                    delay: backoff(receive_count, jitter_ms()),
                    reason: format!("could not park the event: {e}"),
                }
            }
        }
    }

    async fn audit(&self, t: &TenantId, kind: &str, detail: Value) {
        if let Err(e) = self.inner.store.audit(t, kind, detail).await {
            tracing::warn!(error = %e, kind, "could not write the audit line");
        }
    }

    fn slot(&self, t: &TenantId) -> Slot {
        let mut slots = self
            .inner
            .slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots.entry(t.as_str().to_owned()).or_default().clone()
    }

    /// Forgets the tenant's token, binding and session (401, revoked, changed tools).
    async fn drop_entry(&self, t: &TenantId) {
        let slot = self.slot(t);
        let mut guard = slot.lock().await;
        if let Some(mut e) = guard.take() {
            self.flush(&mut e);
        }
    }

    /// Adds the session's new requests to the engine's counters.
    fn flush(&self, e: &mut TenantEntry) {
        if let Some(s) = &e.session {
            let (tools, http) = (s.tool_calls(), s.http_requests());
            self.inner
                .tool_calls
                .fetch_add(tools.saturating_sub(e.seen_tools), Ordering::Relaxed);
            self.inner
                .http_requests
                .fetch_add(http.saturating_sub(e.seen_http), Ordering::Relaxed);
            e.seen_tools = tools;
            e.seen_http = http;
        }
    }

    /// Steps 3-6 for a claimed event. `version` receives the integration version used, so an
    /// integration-wide failure is recorded only against the connection that failed.
    async fn process(
        &self,
        event: &LeadEvent,
        version: &mut Option<u64>,
    ) -> Result<Synced, SyncError> {
        let i = &self.inner;
        let t = &event.tenant_id;
        let integ = match i.store.get_integration(t).await? {
            Some(integ) if integ.is_connected() => integ,
            _ => return Err(SyncError::NotConnected),
        };
        *version = Some(integ.version);
        match integ.sync_status {
            Some(SyncStatus::Error) => return Err(SyncError::IntegrationInError),
            Some(SyncStatus::Paused) => return Err(SyncError::Paused),
            Some(SyncStatus::Active) | None => {}
        }
        let portal_id = integ
            .portal_id
            .clone()
            .ok_or(SyncError::BadConnection("no portal identity"))?;
        let slot = self.slot(t);
        let mut guard = slot.lock().await;
        self.refresh_entry(&mut guard, t, &integ).await?;
        let Some(entry) = guard.as_mut() else {
            return Err(SyncError::NotConnected);
        };
        let mut result = if entry.binding.ops.is_empty() {
            // A binding stored by an older version of the connector: bind the tools again.
            Err(SyncError::Crm(CrmError::BindingStale { op: "all" }))
        } else {
            self.run_in_session(entry, &integ, &portal_id, event).await
        };
        // An unknown tool, or refused arguments: bind the tools again, once. Refused arguments
        // with an unchanged binding are this event's data (the dead-letter queue).
        if let Err(SyncError::Crm(CrmError::BindingStale { op } | CrmError::Rejected { op })) =
            &result
        {
            let op = *op;
            let rejected = matches!(result, Err(SyncError::Crm(CrmError::Rejected { .. })));
            tracing::warn!(op, rejected, "re-discovering the tools once");
            let before = entry.binding.ops.clone();
            result = match self.rediscover(entry, &integ, t).await {
                Ok(_) if rejected && entry.binding.ops == before => result,
                Ok(new_version) => {
                    *version = Some(new_version);
                    self.run_in_session(entry, &integ, &portal_id, event).await
                }
                Err(e) => Err(e),
            };
        }
        self.flush(entry);
        match &result {
            Err(SyncError::Crm(CrmError::Mcp(McpError::Unauthorized { .. }))) => {
                // The token no longer works: forget it all (design.md §3).
                *guard = None;
            }
            Err(SyncError::Crm(CrmError::Mcp(
                McpError::Transient { .. } | McpError::Protocol { .. },
            ))) => {
                // The session may be broken; the next event initialises a new one.
                entry.session = None;
                entry.seen_tools = 0;
                entry.seen_http = 0;
            }
            _ => {}
        }
        result
    }

    /// Makes the slot hold a valid entry for this integration version (KMS only when it does not).
    async fn refresh_entry(
        &self,
        slot: &mut Option<TenantEntry>,
        t: &TenantId,
        integ: &Integration,
    ) -> Result<(), SyncError> {
        let fresh = slot.as_ref().is_some_and(|e| {
            e.version == integ.version && e.cached_at.elapsed() < self.inner.token_ttl
        });
        if fresh {
            return Ok(());
        }
        if let Some(mut old) = slot.take() {
            self.flush(&mut old);
        }
        let ciphertext = integ
            .token_ciphertext
            .as_deref()
            .ok_or(SyncError::NotConnected)?;
        // An unreadable binding (stored by an older version) is bound again in the session.
        let binding = integ
            .binding
            .as_ref()
            .and_then(Binding::from_value)
            .unwrap_or_else(|| Binding {
                ops: Default::default(),
                caps: integ
                    .binding
                    .as_ref()
                    .and_then(|b| serde_json::from_value(b.get("caps")?.clone()).ok())
                    .unwrap_or_default(),
            });
        let url = self.inner.guard.check(integ.mcp_url.as_deref())?;
        let token = self.inner.vault.decrypt(t, ciphertext).await?;
        *slot = Some(TenantEntry {
            version: integ.version,
            token,
            binding,
            url,
            cached_at: Instant::now(),
            session: None,
            seen_tools: 0,
            seen_http: 0,
        });
        Ok(())
    }

    /// Opens the entry's MCP session unless one is open.
    async fn open_session(&self, entry: &mut TenantEntry) -> Result<(), SyncError> {
        if entry.session.is_none() {
            let s = self
                .inner
                .mcp
                .connect(&entry.url, &entry.token)
                .await
                .map_err(CrmError::from)?;
            entry.seen_tools = 0;
            entry.seen_http = 0;
            entry.session = Some(s);
            // The handshake's requests count even if the first call fails.
            self.flush(entry);
        }
        Ok(())
    }

    async fn run_in_session(
        &self,
        entry: &mut TenantEntry,
        integ: &Integration,
        portal_id: &str,
        event: &LeadEvent,
    ) -> Result<Synced, SyncError> {
        self.open_session(entry).await?;
        let TenantEntry {
            session, binding, ..
        } = entry;
        let Some(session) = session.as_mut() else {
            return Err(SyncError::NotConnected);
        };
        let phone = event
            .raw_phone()
            .map(|raw| parse_phone(raw, self.inner.default_region.as_deref()));
        let mut run = Run {
            portal: Portal {
                crm: Crm::new(session, binding),
                store: &self.inner.store,
                tenant: &event.tenant_id,
                rate: &integ.rate,
            },
            store: &self.inner.store,
            event,
            portal_id,
            phone,
            caps: binding.caps.clone(),
            now: OffsetDateTime::now_utc(),
        };
        run.sync().await
    }

    /// An unknown tool, refused arguments, or a binding stored by an older version: list the
    /// tools again and bind them (keeping the portal capabilities read at connect); a binding
    /// that changed is stored, an unchanged one is not.
    async fn rediscover(
        &self,
        entry: &mut TenantEntry,
        integ: &Integration,
        t: &TenantId,
    ) -> Result<u64, SyncError> {
        self.open_session(entry).await?;
        let Some(session) = entry.session.as_mut() else {
            return Err(SyncError::NotConnected);
        };
        let tools = session.list_tools().await.map_err(CrmError::from)?;
        let map = self
            .inner
            .tool_map
            .as_deref()
            .map(ToolMap::parse)
            .transpose()
            .map_err(|_| SyncError::BadConnection("MCP_TOOL_MAP is invalid"))?;
        let mut binding = discover(&tools, map.as_ref());
        binding.caps = entry.binding.caps.clone();
        if let Some(op) = binding.missing_required().first() {
            return Err(CrmError::Unsupported(*op).into());
        }
        if binding == entry.binding {
            return Ok(entry.version); // nothing changed: nothing to store
        }
        let mut info = integ.portal_info.clone().unwrap_or_else(|| json!({}));
        if let Value::Object(m) = &mut info {
            m.insert("bound".into(), binding.report()["bound"].clone());
        }
        let updated = self
            .inner
            .store
            .set_binding(t, entry.version, binding.to_value(), info)
            .await?;
        self.audit(t, "binding_rediscovered", binding.report())
            .await;
        entry.version = updated.version;
        entry.binding = binding;
        Ok(updated.version)
    }
}

/// How many leads a search may offer before the connector stops reading them and creates one:
/// each costs a read, and a server whose search ignores its filter offers every lead.
const MAX_ADOPT_CANDIDATES: usize = 3;

/// The `VALUE`s of a lead's PHONE multifield.
fn lead_phone_values(lead: &Map<String, Value>) -> impl Iterator<Item = &str> {
    lead.get("PHONE")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("VALUE").and_then(Value::as_str))
}

/// A random 0..1000 ms for backoff jitter (uuid v4 is already a dependency and random enough).
fn jitter_ms() -> u64 {
    (uuid::Uuid::new_v4().as_u128() % 1000) as u64
}

/// The bound CRM operations, each preceded by a token from the portal's shared budget.
struct Portal<'a> {
    crm: Crm<'a>,
    store: &'a Store,
    tenant: &'a TenantId,
    rate: &'a RateParams,
}

impl Portal<'_> {
    /// design.md §4 "Rate budget": a short wait is slept through, a long one fails the event.
    async fn budget(&self) -> Result<(), SyncError> {
        let mut wait = MAX_BUDGET_SLEEP;
        for _ in 0..BUDGET_ATTEMPTS {
            wait = self
                .store
                .take_rate_token(self.tenant, self.rate, OffsetDateTime::now_utc())
                .await?;
            if wait.is_zero() {
                return Ok(());
            }
            if wait > MAX_BUDGET_SLEEP {
                return Err(SyncError::RateBudget { wait });
            }
            tokio::time::sleep(wait).await;
        }
        Err(SyncError::RateBudget { wait })
    }

    fn has(&self, op: Operation) -> bool {
        self.crm.has(op)
    }

    async fn find_by_phones(&mut self, spellings: &[String]) -> Result<Vec<i64>, SyncError> {
        self.budget().await?;
        Ok(self.crm.find_by_phones(spellings).await?)
    }

    async fn find_by_origin(&mut self, origin_id: &str) -> Result<Vec<i64>, SyncError> {
        self.budget().await?;
        Ok(self
            .crm
            .find_by_origin(fields::ORIGINATOR, origin_id)
            .await?)
    }

    async fn create_lead(&mut self, f: Map<String, Value>) -> Result<i64, SyncError> {
        self.budget().await?;
        Ok(self.crm.create_lead(f).await?)
    }

    /// `Ok(false)` when the lead no longer exists.
    async fn update_lead(&mut self, id: i64, f: Map<String, Value>) -> Result<bool, SyncError> {
        self.budget().await?;
        gone_as_false(self.crm.update_lead(id, f).await)
    }

    async fn get_lead(&mut self, id: i64) -> Result<Option<Map<String, Value>>, SyncError> {
        self.budget().await?;
        Ok(self.crm.get_lead(id).await?)
    }

    /// `Ok(false)` when the lead no longer exists.
    async fn add_comment(&mut self, id: i64, text: &str) -> Result<bool, SyncError> {
        self.budget().await?;
        gone_as_false(self.crm.add_comment(id, text).await)
    }
}

fn gone_as_false(r: Result<(), CrmError>) -> Result<bool, SyncError> {
    match r {
        Ok(()) => Ok(true),
        Err(CrmError::Mcp(McpError::NotFound)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// How a lead found by search relates to us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Found {
    /// Made by someone else, found by phone: only our fields, a forward status and a comment.
    Foreign,
    /// Made by us in an earlier attempt that crashed before linking (found by ORIGIN_ID).
    Recovered,
}

/// One event's lead resolution and writes.
struct Run<'a> {
    portal: Portal<'a>,
    store: &'a Store,
    event: &'a LeadEvent,
    portal_id: &'a str,
    phone: Option<Phone>,
    caps: crate::crm::PortalCaps,
    now: OffsetDateTime,
}

impl Run<'_> {
    fn tenant(&self) -> &TenantId {
        &self.event.tenant_id
    }

    fn customer(&self) -> &str {
        &self.event.customer.id
    }

    fn e164(&self) -> Option<&str> {
        match &self.phone {
            Some(Phone::Parsed { e164, .. }) => Some(e164),
            _ => None,
        }
    }

    /// Step 4: the stored link of this portal, else the create path.
    async fn sync(&mut self) -> Result<Synced, SyncError> {
        if let Some(LinkState::Linked(link, meta)) = self
            .store
            .get_link_state(self.tenant(), self.customer())
            .await?
            && link.portal_id == self.portal_id
        {
            if let Some(done) = self.update_linked(link, meta).await? {
                return Ok(done);
            }
            tracing::info!("linked lead was deleted in Bitrix24: dropping the link");
            self.store
                .delete_link(self.tenant(), self.customer())
                .await?;
        }
        self.create_path().await
    }

    /// Step 4b: under the per-customer create lock, search then create.
    async fn create_path(&mut self) -> Result<Synced, SyncError> {
        let claim = self
            .store
            .claim_lead_create(
                self.tenant(),
                self.customer(),
                self.portal_id,
                CREATE_LEASE,
                self.now,
            )
            .await?;
        match claim {
            CreateClaim::Held { .. } => Err(SyncError::CreateLockHeld),
            CreateClaim::Linked(link, meta) => match self.update_linked(link, meta).await? {
                Some(done) => Ok(done),
                None => {
                    self.store
                        .delete_link(self.tenant(), self.customer())
                        .await?;
                    Err(SyncError::LeadGone)
                }
            },
            CreateClaim::Claimed { resumed } => {
                let mut attempted = false;
                let result = self.create_locked(resumed, &mut attempted).await;
                if result.is_err()
                    && let Err(e) = self
                        .store
                        .release_lead_create(self.tenant(), self.customer(), attempted)
                        .await
                {
                    tracing::warn!(error = %e, "could not release the create lock (its lease will end)");
                }
                result
            }
        }
    }

    async fn create_locked(
        &mut self,
        resumed: bool,
        attempted: &mut bool,
    ) -> Result<Synced, SyncError> {
        if resumed && self.portal.has(Operation::ListLeads) {
            let ids = self
                .portal
                .find_by_origin(&fields::origin_id(self.event))
                .await?;
            for id in ids.into_iter().take(MAX_ADOPT_CANDIDATES) {
                if let Some(done) = self.adopt(id, Found::Recovered).await? {
                    return Ok(done);
                }
            }
        }
        if let Some(e164) = self.e164().map(str::to_owned) {
            let ids = self.portal.find_by_phones(&search_spellings(&e164)).await?;
            for id in ids.into_iter().take(MAX_ADOPT_CANDIDATES) {
                if let Some(done) = self.adopt(id, Found::Foreign).await? {
                    return Ok(done);
                }
            }
        }
        let (f, sent) = fields::create_fields(self.event, &self.caps, self.phone.as_ref());
        *attempted = true;
        let lead_id = self.portal.create_lead(f).await?;
        tracing::info!(lead_id, "lead created");
        let link = LeadLink {
            customer_id: self.customer().to_owned(),
            lead_id,
            portal_id: self.portal_id.to_owned(),
            phone_e164: self.e164().map(str::to_owned),
            last_event_at: self.event.occurred_at,
            sent,
        };
        let meta = LinkMeta {
            verified_at: Some(self.now),
            notes_sent: self.event.lead.notes.clone(),
        };
        self.store
            .put_link_with(self.tenant(), &link, &meta)
            .await?;
        Ok(Synced {
            kind: "lead_created",
            lead_id,
        })
    }

    /// Never adopt a lead that is not ours: one found by phone must carry one of the customer's
    /// spellings among its PHONE values; one found by ORIGIN_ID must carry that ORIGIN_ID.
    fn is_ours(&self, lead: &Map<String, Value>, found: Found) -> bool {
        match found {
            Found::Recovered => {
                lead.get("ORIGIN_ID").and_then(Value::as_str)
                    == Some(&fields::origin_id(self.event))
            }
            Found::Foreign => {
                let Some(e164) = self.e164() else {
                    return false;
                };
                let spellings = search_spellings(e164);
                lead_phone_values(lead).any(|v| crate::phone::is_spelling_of(v, &spellings))
            }
        }
    }

    /// A lead found by search: read it, send only what the rules allow, link it. `None` when it
    /// vanished between the search and the read.
    async fn adopt(&mut self, lead_id: i64, found: Found) -> Result<Option<Synced>, SyncError> {
        let Some(lead) = self.portal.get_lead(lead_id).await? else {
            return Ok(None);
        };
        if !self.is_ours(&lead, found) {
            tracing::warn!(
                lead_id,
                ?found,
                "a search returned a lead that is not this customer's: not adopted"
            );
            return Ok(None);
        }
        let desired = fields::desired(self.event, &self.caps, self.phone.as_ref());
        let plan = fields::plan_update(UpdateInput {
            desired: &desired,
            sent: &Map::new(),
            crm: Some(&lead),
            older: false,
            link_phone: None,
            foreign: found == Found::Foreign,
        });
        let mut f = plan.fields;
        // Our create already carried the summary; a foreign lead gets it as history.
        let text = (found == Found::Foreign)
            .then(|| fields::summary(self.event, &self.caps, self.phone.as_ref()));
        let by_tool = self.portal.has(Operation::AddComment);
        if let Some(text) = &text
            && !by_tool
        {
            f.insert(
                "COMMENTS".into(),
                json!(fields::appended_comments(Some(&lead), text)),
            );
        }
        if !f.is_empty() && !self.portal.update_lead(lead_id, f).await? {
            return Ok(None);
        }
        if let Some(text) = &text
            && by_tool
            && !self.portal.add_comment(lead_id, text).await?
        {
            return Ok(None);
        }
        let link = LeadLink {
            customer_id: self.customer().to_owned(),
            lead_id,
            portal_id: self.portal_id.to_owned(),
            phone_e164: self.e164().map(str::to_owned),
            last_event_at: self.event.occurred_at,
            sent: plan.sent,
        };
        let meta = LinkMeta {
            verified_at: Some(self.now),
            notes_sent: self.event.lead.notes.clone(),
        };
        self.store
            .put_link_with(self.tenant(), &link, &meta)
            .await?;
        let kind = match found {
            Found::Foreign => "lead_linked",
            Found::Recovered => "lead_recovered",
        };
        tracing::info!(lead_id, kind, "existing lead linked");
        Ok(Some(Synced { kind, lead_id }))
    }

    /// Step 5 "Update" for a linked lead. `None` when Bitrix24 says the lead no longer exists.
    async fn update_linked(
        &mut self,
        link: LeadLink,
        meta: LinkMeta,
    ) -> Result<Option<Synced>, SyncError> {
        let lead_id = link.lead_id;
        let older = self.event.occurred_at < link.last_event_at;
        let desired = fields::desired(self.event, &self.caps, self.phone.as_ref());
        let notes = fields::new_notes(self.event, meta.notes_sent.as_deref());
        let input = |crm| UpdateInput {
            desired: &desired,
            sent: &link.sent,
            crm,
            older,
            link_phone: link.phone_e164.as_deref(),
            foreign: false,
        };
        let trusted = fields::plan_update(input(None));
        let has_text = notes.is_some() || !trusted.text_lines.is_empty();
        let by_tool = self.portal.has(Operation::AddComment);
        let mut verified_at = meta.verified_at;
        let plan = if trusted.fields.is_empty() && !has_text {
            // Nothing to send: nothing a manager's edit could lose, so no read either.
            trusted
        } else {
            let stale = meta
                .verified_at
                .is_none_or(|v| self.now - v > VERIFY_WINDOW);
            if stale || (has_text && !by_tool) {
                let Some(lead) = self.portal.get_lead(lead_id).await? else {
                    return Ok(None);
                };
                verified_at = Some(self.now);
                let mut plan = fields::plan_update(input(Some(&lead)));
                plan.fields =
                    self.with_comments(plan.fields, notes, &plan.text_lines, Some(&lead), by_tool);
                plan
            } else {
                let mut plan = trusted;
                plan.fields =
                    self.with_comments(plan.fields, notes, &plan.text_lines, None, by_tool);
                plan
            }
        };
        let text = fields::comment_text(self.event.occurred_at, notes, &plan.text_lines);
        let sent_fields = !plan.fields.is_empty();
        if sent_fields {
            if !self.portal.update_lead(lead_id, plan.fields).await? {
                return Ok(None);
            }
            verified_at = Some(self.now);
        }
        if by_tool
            && let Some(text) = &text
            && !self.portal.add_comment(lead_id, text).await?
        {
            return Ok(None);
        }
        let phone_e164 = link.phone_e164.clone().or_else(|| {
            plan.sent
                .get(fields::PHONE)
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        let updated = LeadLink {
            last_event_at: link.last_event_at.max(self.event.occurred_at),
            sent: plan.sent,
            phone_e164,
            ..link
        };
        let meta = LinkMeta {
            verified_at,
            notes_sent: notes.map(str::to_owned).or(meta.notes_sent),
        };
        self.store
            .put_link_with(self.tenant(), &updated, &meta)
            .await?;
        let kind = match (sent_fields, text.is_some()) {
            (true, _) => "lead_updated",
            (false, true) => "notes_added",
            (false, false) => "lead_unchanged",
        };
        Ok(Some(Synced { kind, lead_id }))
    }

    /// Without a comment tool, new notes go into COMMENTS, appended to what the CRM shows.
    fn with_comments(
        &self,
        mut f: Map<String, Value>,
        notes: Option<&str>,
        lines: &[String],
        lead: Option<&Map<String, Value>>,
        by_tool: bool,
    ) -> Map<String, Value> {
        if !by_tool && let Some(text) = fields::comment_text(self.event.occurred_at, notes, lines) {
            f.insert(
                "COMMENTS".into(),
                json!(fields::appended_comments(lead, &text)),
            );
        }
        f
    }
}
