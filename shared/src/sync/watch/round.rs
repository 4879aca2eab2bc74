//! One watch round for one tenant: list the connector's leads changed since the tenant's cursor
//! (pages of the bound list operation, each call from the portal's shared budget), compare each
//! with its link ([`super::changes`]), publish the `lead.changed` events, record on the links
//! what the CRM shows, and only then move the cursor. A round that fails anywhere leaves the
//! cursor where it was, so the next round reads the same changes again: nothing is lost, and
//! what was already published is not published twice (the links already hold it as seen, and
//! the queue drops a repeated deduplication id).
//!
//! Paging is by the cursor itself: the list is ordered by `DATE_MODIFY` then `ID` and filtered
//! `>=DATE_MODIFY cursor`, and the next page starts at the last row's `DATE_MODIFY`. `>=`, not
//! `>`: `DATE_MODIFY` has whole seconds, and a lead changed later in the same second as the last
//! one read would otherwise be skipped; rows read again at the cursor's second report nothing.
//! Offsets (`start`) are used only when a whole page shares one second, since an offset into a
//! list that changes while it is read skips rows.

use std::time::Duration;

use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::changes::{self, Observation};
use crate::crm::client::LIST_PAGE;
use crate::crm::{Crm, Operation, ToolKind};
use crate::events::LeadChanged;
use crate::store::{LinkState, Store, StoreError, SyncStatus};
use crate::sync::connections::{BudgetedCrm, Connections};
use crate::sync::failure::{Attempt, IntegrationPlan, SyncError, plan};
use crate::tenant::TenantId;

/// Pages one round reads at most (250 changed leads); the rest waits for the next round, so
/// one busy portal cannot hold an invocation.
pub const MAX_PAGES_PER_ROUND: usize = 5;
/// A tenant's first round looks back this far.
pub const FIRST_LOOKBACK: time::Duration = time::Duration::days(1);
/// The time one round may take (a few pages, each a budget wait and an MCP call): the consumer
/// starts no round with less left before the invocation's deadline, and cuts a round off there.
pub const ROUND_TIME: Duration = Duration::from_secs(25);
/// SQS `SendMessageBatch` takes at most 10 entries.
const SEND_BATCH: usize = 10;

/// Why a round stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The portal, the token or the lead-sync side of the connection failed.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The outbound queue did not take the events (the operator's side).
    #[error("the lead changes queue refused {failed} of the round's events")]
    Publish { failed: usize },
}

impl From<StoreError> for WatchError {
    fn from(e: StoreError) -> Self {
        WatchError::Sync(SyncError::Store(e))
    }
}

impl WatchError {
    /// A failure on the operator's side (DynamoDB, KMS, SQS): the work item is reported failed
    /// and alarmed. Anything else is the portal's: the next round tries again.
    pub fn is_operator_side(&self) -> bool {
        match self {
            WatchError::Publish { .. } => true,
            WatchError::Sync(e) => plan(e, attempt()).operator_alarm,
        }
    }
}

fn attempt() -> Attempt {
    Attempt {
        receive_count: 1,
        max_receive_count: u32::MAX,
        jitter_ms: 0,
    }
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// `tools/call` requests made (list pages).
    pub calls: usize,
    pub rows: usize,
    pub published: usize,
    /// Why nothing was watched (not active, no list operation), if so.
    pub skipped: Option<&'static str>,
}

/// Watches tenants: built once per container, shared by every work item.
pub struct Watcher {
    store: Store,
    conns: Connections,
    sqs: aws_sdk_sqs::Client,
    changes_queue_url: String,
}

impl Watcher {
    pub fn new(
        store: Store,
        conns: Connections,
        sqs: aws_sdk_sqs::Client,
        changes_queue_url: String,
    ) -> Self {
        Self {
            store,
            conns,
            sqs,
            changes_queue_url,
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// One round for one tenant.
    #[tracing::instrument(skip_all, fields(tenant_id = %t))]
    pub async fn watch_tenant(&self, t: &TenantId) -> Result<RoundReport, WatchError> {
        let Some(integ) = self.store.get_integration(t).await? else {
            return Ok(skipped("not connected"));
        };
        if !integ.is_connected() || integ.sync_status != Some(SyncStatus::Active) {
            return Ok(skipped("not active"));
        }
        let Some(portal_id) = integ.portal_id.clone() else {
            return Ok(skipped("no portal identity"));
        };
        let slot = self.conns.slot(t);
        let mut guard = slot.lock().await;
        let result = async {
            self.conns.refresh(&mut guard, t, &integ).await?;
            let conn = guard.as_mut().ok_or(SyncError::NotConnected)?;
            if conn.binding.watch_gap().is_some() {
                return Ok(skipped("the server cannot list changed leads"));
            }
            self.conns.open_session(conn).await?;
            let with_offsets = carries_start(&conn.binding);
            let (session, binding) = (&mut conn.session, &conn.binding);
            let session = session.as_mut().ok_or(SyncError::NotConnected)?;
            // lead-watch writes no metric lines yet: its calls are counted nowhere.
            let metrics = crate::metrics::Metrics::off();
            let mut calls = 0;
            let mut crm = BudgetedCrm {
                crm: Crm::new(session, binding),
                budget: &self.store,
                tenant: t,
                rate: &integ.rate,
                metrics: &metrics,
                calls: &mut calls,
            };
            let cursor = integ
                .watch_cursor
                .as_ref()
                .filter(|c| c.portal_id == portal_id)
                .map(|c| c.modified.clone());
            self.round(&mut crm, t, &portal_id, cursor, with_offsets)
                .await
        }
        .await;
        if let Err(WatchError::Sync(e)) = &result {
            let p = plan(e, attempt());
            self.conns.apply_locked(&mut guard, p.cache);
            if let IntegrationPlan::Error(reason) = p.integration {
                match self
                    .store
                    .set_status(t, integ.version, SyncStatus::Error, Some(reason))
                    .await
                {
                    Ok(_) | Err(StoreError::Conflict) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not set the integration error status")
                    }
                }
            }
        }
        result
    }

    async fn round(
        &self,
        crm: &mut BudgetedCrm<'_>,
        t: &TenantId,
        portal_id: &str,
        cursor: Option<String>,
        with_offsets: bool,
    ) -> Result<RoundReport, WatchError> {
        let now = OffsetDateTime::now_utc();
        let mut report = RoundReport::default();
        let first = match &cursor {
            Some(c) => c.clone(),
            None => first_cursor(now),
        };
        let mut since = first.clone();
        let mut start = 0u64;
        for _ in 0..MAX_PAGES_PER_ROUND {
            let rows = crm.list_changed(&since, start).await?;
            report.calls += 1;
            report.rows += rows.len();
            report.published += self.handle_page(t, portal_id, &rows, now).await?;
            let full = rows.len() >= LIST_PAGE;
            let Some(last) = rows.iter().rev().find_map(changes::modified_text) else {
                break;
            };
            if last != since {
                since = last.to_owned();
                start = 0;
            } else if full && with_offsets {
                start += LIST_PAGE as u64;
            } else if full {
                tracing::warn!(
                    since,
                    "a whole page of leads changed in one second and the list tool takes no \
                     offset: the rest of that second is read again next round"
                );
                break;
            }
            if !full {
                break;
            }
        }
        let moved = (cursor.as_deref() != Some(since.as_str())).then_some(since.as_str());
        self.store.advance_watch(t, portal_id, moved, now).await?;
        tracing::info!(
            calls = report.calls,
            rows = report.rows,
            published = report.published,
            "watch round done"
        );
        Ok(report)
    }

    /// One page: compare, publish, then record what was seen. Returns the events published.
    async fn handle_page(
        &self,
        t: &TenantId,
        portal_id: &str,
        rows: &[Map<String, Value>],
        now: OffsetDateTime,
    ) -> Result<usize, WatchError> {
        let prefix = format!("{t}:");
        let mut out: Vec<(LeadChanged, String)> = Vec::new();
        let mut seen_updates: Vec<(String, i64, Map<String, Value>)> = Vec::new();
        for row in rows {
            let Some(lead_id) = crate::crm::client::lead_id(row) else {
                continue;
            };
            // ORIGIN_ID is `<tenant_id>:<customer_id>` on every lead the connector creates.
            let Some(customer) = row
                .get("ORIGIN_ID")
                .and_then(Value::as_str)
                .and_then(|o| o.strip_prefix(&prefix))
            else {
                continue;
            };
            let Some(LinkState::Linked(link, meta)) =
                self.store.get_link_state(t, customer).await?
            else {
                continue;
            };
            if link.lead_id != lead_id || link.portal_id != portal_id {
                continue;
            }
            let Observation { changes, seen } = changes::observe(&link.sent, &meta.seen, row);
            if !changes.is_empty() {
                let modified = changes::modified_text(row).unwrap_or_default();
                let dedup = changes::dedup_id(t.as_str(), lead_id, modified);
                out.push((
                    changes::event(t.as_str(), customer, lead_id, row, changes, now),
                    dedup,
                ));
            }
            if seen != meta.seen {
                seen_updates.push((customer.to_owned(), lead_id, seen));
            }
        }
        let published = out.len();
        self.publish(out).await?;
        for (customer, lead_id, seen) in seen_updates {
            self.store.record_seen(t, &customer, lead_id, &seen).await?;
        }
        Ok(published)
    }

    async fn publish(&self, events: Vec<(LeadChanged, String)>) -> Result<(), WatchError> {
        for chunk in events.chunks(SEND_BATCH) {
            let mut entries = Vec::with_capacity(chunk.len());
            for (i, (ev, dedup)) in chunk.iter().enumerate() {
                let body =
                    serde_json::to_string(ev).map_err(|_| WatchError::Publish { failed: 1 })?;
                let entry = SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .message_group_id(changes::group_id(&ev.tenant_id, &ev.customer_id))
                    .message_deduplication_id(dedup)
                    .build()
                    .map_err(|_| WatchError::Publish { failed: 1 })?;
                entries.push(entry);
            }
            let out = self
                .sqs
                .send_message_batch()
                .queue_url(&self.changes_queue_url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| {
                    tracing::error!(error = %aws_sdk_sqs::Error::from(e), operator_alarm = true, "publishing lead changes failed");
                    WatchError::Publish { failed: chunk.len() }
                })?;
            if !out.failed().is_empty() {
                tracing::error!(
                    failed = out.failed().len(),
                    operator_alarm = true,
                    "the lead changes queue refused events"
                );
                return Err(WatchError::Publish {
                    failed: out.failed().len(),
                });
            }
        }
        Ok(())
    }
}

fn skipped(why: &'static str) -> RoundReport {
    RoundReport {
        skipped: Some(why),
        ..RoundReport::default()
    }
}

/// Where a tenant's first round starts: [`FIRST_LOOKBACK`] ago, in whole UTC seconds.
fn first_cursor(now: OffsetDateTime) -> String {
    let t = (now - FIRST_LOOKBACK).replace_nanosecond(0).unwrap_or(now);
    t.format(&Rfc3339).unwrap_or_default()
}

/// Whether the bound list tool can take a page offset.
fn carries_start(b: &crate::crm::Binding) -> bool {
    match b.get(Operation::ListLeads).map(|t| &t.kind) {
        Some(ToolKind::Rest { .. }) => true,
        Some(ToolKind::Args(plan)) => {
            plan.has(|s| matches!(s, crate::crm::args::Source::Param { name } if name == "start"))
        }
        None => false,
    }
}
