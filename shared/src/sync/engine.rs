//! One lead event, start to end: claim the event id, read the integration, take the tenant's
//! cached connection ([`super::connections`]), resolve and write the lead
//! ([`super::resolution`]), record it with its done mark. A failure becomes a [`Plan`]
//! ([`super::failure::plan`]) that [`SyncEngine::carry_out`] executes; the batch does the rest
//! with the [`Outcome`].
//!
//! DynamoDB requests are the event's main cost, so each is made once: around a batch
//! ([`SyncEngine::begin_batch`]) the integrations and the first link of each group are read in
//! one request; per event there is the claim, a budget take per `tools/call`, and one write of
//! the link with the done mark.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex as StdMutex;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use time::OffsetDateTime;
use tracing::Instrument;

use super::connections::{BudgetedCrm, Connection, Connections, bound_report};
use super::failure::{
    Attempt, EventPlan, HELD_RETRY, IntegrationPlan, Outcome, Plan, SyncError, backoff, plan,
    retry_in_place,
};
use super::ports::EventClaims;
use super::replay;
use super::resolution::{PendingWrite, Resolver, Synced, Unrecorded};
use crate::config::Config;
use crate::crm::{Crm, CrmError};
use crate::events::LeadEvent;
use crate::mcp::{McpClient, UrlGuard};
use crate::metrics::{Metric, Metrics};
use crate::phone::parse_phone;
use crate::store::{Claim, Integration, LinkState, Store, StoreError, SyncStatus};
use crate::tenant::TenantId;
use crate::vault::Vault;

/// The event claim's lease: at least the function timeout (60 s), so a live consumer never loses
/// its claim mid-event; a crashed one's claim is retaken after it.
const EVENT_LEASE: Duration = Duration::from_secs(120);
/// An event of a tenant whose budget is known to stay empty longer than this is held back
/// before it touches DynamoDB (a shorter wait is slept in the rate gate).
const BUDGET_SKIP_ABOVE: Duration = Duration::from_secs(1);
/// A tenant's replay is asked for at most this often per container (the queue also
/// deduplicates the same minute's requests).
const REPLAY_REQUEST_EVERY: Duration = Duration::from_secs(60);
/// `last_sync_at` is written at most this often per tenant per container, and not while the
/// integration as read shows one younger than this (written by another container): status
/// shows it to the minute, and a write per event would be a third of the event's DynamoDB cost.
const LAST_SYNC_EVERY: Duration = Duration::from_secs(60);

struct Inner {
    store: Store,
    conns: Connections,
    default_region: Option<String>,
    max_receive_count: u32,
    replay_after_park: Duration,
    /// Where replay requests go (the lead queue); none: replays start only on connect/test.
    replay_queue: Option<(aws_sdk_sqs::Client, String)>,
    replay_asked: StdMutex<HashMap<String, Instant>>,
    last_sync_touched: StdMutex<HashMap<String, Instant>>,
    metrics: Metrics,
    /// The replay timer this container set last per tenant (epoch ms it fires).
    timers: StdMutex<HashMap<String, i64>>,
    /// What the batch being handled read once for its events: the integrations and the first
    /// links (`None` outside a batch: every event reads its own).
    batch: StdMutex<Option<BatchShared>>,
    /// Per tenant, until when the portal's shared budget has no token (what its last take
    /// said; the budget only moves forward, so no token comes earlier).
    budget_empty_until: StdMutex<HashMap<String, Instant>>,
}

/// What the events of one batch share.
#[derive(Default)]
struct BatchShared {
    /// Per tenant, the integration as the batch read it (a cell, so concurrent groups of one
    /// tenant wait for one read instead of each making their own).
    integrations: HashMap<String, Arc<tokio::sync::OnceCell<Option<Integration>>>>,
    /// Per (tenant, customer), the link read with the integrations for the group's first
    /// event, then the link each synced event wrote; taken by the next event of the customer.
    links: HashMap<(String, String), Option<LinkState>>,
}

/// What one event's sync used so far, kept past a failure: the integration version (an
/// integration-wide failure is recorded only against the connection that failed) and the
/// `tools/call` requests made (for the event's log line).
#[derive(Debug, Default)]
struct Progress {
    version: Option<u64>,
    calls: u32,
    /// An update sent and not yet recorded on the link (kept there if the event fails).
    unrecorded: Unrecorded,
    /// The link as the batch read it, used by the first resolution instead of a read.
    batch_link: Option<Option<LinkState>>,
    /// The link as the resolution wrote it (for the customer's next event in the batch).
    written_link: Option<LinkState>,
}

/// The sync engine: built once per container, cheap to clone (shared state behind an `Arc`).
#[derive(Clone)]
pub struct SyncEngine {
    inner: Arc<Inner>,
}

impl SyncEngine {
    pub fn new(cfg: &Config, store: Store, vault: Vault, mcp: McpClient) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                conns: Connections::new(
                    vault,
                    mcp,
                    UrlGuard::from_config(cfg),
                    cfg.mcp_tool_map.clone(),
                    cfg.token_cache_ttl,
                ),
                default_region: cfg.default_phone_region.clone(),
                max_receive_count: cfg.lead_queue_max_receive_count,
                replay_after_park: cfg.replay_after_park,
                replay_queue: None,
                replay_asked: StdMutex::new(HashMap::new()),
                last_sync_touched: StdMutex::new(HashMap::new()),
                metrics: Metrics::off(),
                timers: StdMutex::new(HashMap::new()),
                budget_empty_until: StdMutex::new(HashMap::new()),
                batch: StdMutex::new(None),
            }),
        }
    }

    /// Lets a successful sync ask for the replay of the tenant's parked events.
    pub fn with_replay_queue(mut self, sqs: aws_sdk_sqs::Client, queue_url: String) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.replay_queue = Some((sqs, queue_url));
        }
        self
    }

    /// Records the engine's outcomes (what each synced event did, its latency and calls,
    /// integrations turned to `error`) in `metrics`; the batch flushes them.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.metrics = metrics;
        }
        self
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// From now until [`SyncEngine::end_batch`], each tenant's integration is read once, and
    /// with it the link of each group's first customer (`firsts`): one BatchGetItem for the
    /// batch instead of two GetItems per event. The events of one batch (seconds) see the
    /// integration as the batch found it, except for what this engine changes itself (an
    /// `error` status, a new binding), which is read again; a status another consumer sets
    /// meanwhile is seen by the next batch. If the read fails, each event reads its own.
    pub async fn begin_batch(&self, firsts: &[(TenantId, String)]) {
        let mut shared = BatchShared::default();
        match self.inner.store.read_for_batch(firsts).await {
            Ok(read) => {
                for (t, integ) in read.integrations {
                    let cell = tokio::sync::OnceCell::new_with(Some(integ));
                    shared.integrations.insert(t, Arc::new(cell));
                }
                shared.links = read.links;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not read the batch's integrations and links; each event reads its own")
            }
        }
        *self.batch() = Some(shared);
    }

    /// Ends the batch's sharing: every event reads the integration again.
    pub fn end_batch(&self) {
        *self.batch() = None;
    }

    fn batch(&self) -> std::sync::MutexGuard<'_, Option<BatchShared>> {
        self.inner
            .batch
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After a synced event, the link it wrote is what its customer's next event in the batch
    /// reads (a failed event leaves none: the group's later events are handed back anyway).
    fn keep_batch_link(&self, event: &LeadEvent, link: LinkState) {
        if let Some(b) = self.batch().as_mut() {
            let key = (
                event.tenant_id.as_str().to_owned(),
                event.customer.id.clone(),
            );
            b.links.insert(key, Some(link));
        }
    }

    /// The batch's read of the event's link, if it made one (taken: read once).
    fn take_batch_link(&self, event: &LeadEvent) -> Option<Option<LinkState>> {
        let key = (
            event.tenant_id.as_str().to_owned(),
            event.customer.id.clone(),
        );
        self.batch().as_mut()?.links.remove(&key)
    }

    /// The tenant's integration: the batch's read if there is one, else a read now.
    async fn integration(&self, t: &TenantId) -> Result<Option<Integration>, StoreError> {
        let cell = self.batch().as_mut().map(|b| {
            b.integrations
                .entry(t.as_str().to_owned())
                .or_default()
                .clone()
        });
        let Some(cell) = cell else {
            return self.inner.store.get_integration(t).await;
        };
        cell.get_or_try_init(|| self.inner.store.get_integration(t))
            .await
            .cloned()
    }

    /// The integration changed (this engine wrote it): the batch's later events read it again.
    fn forget_integration(&self, t: &TenantId) {
        if let Some(b) = self.batch().as_mut() {
            b.integrations.remove(t.as_str());
        }
    }

    /// Handles one valid event. `receive_count` = SQS ApproximateReceiveCount (1 on first
    /// delivery); `body` is the raw message body, parked verbatim so a replay re-sends it
    /// exactly; past `deadline` the event is given up (and retried soon) rather than cut off by
    /// the function's timeout.
    pub async fn handle(
        &self,
        event: &LeadEvent,
        body: &str,
        receive_count: u32,
        deadline: Option<Instant>,
    ) -> Outcome {
        let span = tracing::info_span!(
            "sync_event",
            tenant_id = %event.tenant_id,
            event_id = %event.event_id,
            customer_id = %event.customer.id,
            lead_id = tracing::field::Empty,
        );
        self.handle_claimed(event, body, receive_count, deadline)
            .instrument(span)
            .await
    }

    async fn handle_claimed(
        &self,
        event: &LeadEvent,
        body: &str,
        receive_count: u32,
        deadline: Option<Instant>,
    ) -> Outcome {
        let i = &self.inner;
        let t = &event.tenant_id;
        // Taken first, whatever happens to the event: a later event of the group reads anew.
        let batch_link = self.take_batch_link(event);
        // The portal's budget was found empty for a while yet: the event would claim, read and
        // release only to learn that again. It waits as a budget wait does, without a request.
        if let Some(wait) = self.budget_wait(t) {
            let err = SyncError::RateBudget { wait };
            let none = Progress::default();
            return self
                .carry_out(event, body, receive_count, &err, &none)
                .await;
        }
        let now = OffsetDateTime::now_utc();
        match i.store.claim(t, &event.event_id, EVENT_LEASE, now).await {
            Ok(Claim::Claimed) => {}
            Ok(Claim::AlreadyDone) => {
                i.metrics.count(Metric::EventsDuplicate, 1);
                tracing::info!(
                    tenant_id = %t,
                    customer_id = %event.customer.id,
                    event_id = %event.event_id,
                    outcome = "duplicate",
                    calls = 0,
                    "event already done: acknowledged"
                );
                return Outcome::Done;
            }
            Ok(Claim::HeldByOther { until }) => {
                // Never acknowledged: the other consumer may fail. Nothing to release.
                let wait = (until - now).try_into().unwrap_or(Duration::ZERO);
                let err = SyncError::EventHeld { wait };
                let none = Progress::default();
                return self
                    .carry_out(event, body, receive_count, &err, &none)
                    .await;
            }
            Err(e) => {
                let err = SyncError::Store(e);
                let none = Progress::default();
                return self
                    .carry_out(event, body, receive_count, &err, &none)
                    .await;
            }
        }
        let mut progress = Progress {
            batch_link,
            ..Progress::default()
        };
        let run = self.sync(event, &mut progress);
        let result = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
            Some(left) => tokio::time::timeout(left, run)
                .await
                .unwrap_or(Err(SyncError::Deadline)),
            None => run.await,
        };
        match result {
            Ok((done, integ)) => {
                if let Some(link) = progress.written_link.take() {
                    self.keep_batch_link(event, link);
                }
                self.finish(event, done, &integ, progress.calls).await;
                Outcome::Done
            }
            Err(err) => {
                if let SyncError::RateBudget { wait } = &err {
                    self.note_budget_empty(t, *wait);
                }
                if let Some(write) = progress.unrecorded.take() {
                    self.keep_pending(t, &write).await;
                }
                let outcome = self
                    .carry_out(event, body, receive_count, &err, &progress)
                    .await;
                if let Err(e) = i.store.release(t, &event.event_id).await {
                    tracing::warn!(error = %e, "could not release the event claim (the lease will expire)");
                }
                outcome
            }
        }
    }

    /// After a sync (whose link write carried the done mark, also the event's audit line): its
    /// metrics and log line, `last_sync_at` (at most once a minute), and a replay request when
    /// the tenant has parked events (its portal works again).
    async fn finish(&self, event: &LeadEvent, done: Synced, integ: &Integration, calls: u32) {
        let i = &self.inner;
        let t = &event.tenant_id;
        let latency: Duration = (OffsetDateTime::now_utc() - event.occurred_at)
            .try_into()
            .unwrap_or(Duration::ZERO);
        i.metrics.count(synced_metric(done.kind), 1);
        i.metrics.observe(Metric::LeadLatencyMs, latency);
        tracing::Span::current().record("lead_id", done.lead_id);
        // The event's searchable line: the fields are on the line itself, not only on its span.
        tracing::info!(
            tenant_id = %t,
            customer_id = %event.customer.id,
            event_id = %event.event_id,
            lead_id = done.lead_id,
            outcome = done.kind,
            calls,
            latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
            "event synced"
        );
        // The integration as read shows a recent enough value (another container wrote it):
        // no write, whichever container's turn it would be.
        let now = OffsetDateTime::now_utc();
        let recent = integ
            .last_sync_at
            .is_some_and(|at| now - at < time::Duration::seconds(LAST_SYNC_EVERY.as_secs() as i64));
        if !recent
            && self.due(&i.last_sync_touched, t, LAST_SYNC_EVERY)
            && let Err(e) = i.store.touch_last_sync(t, now).await
        {
            tracing::warn!(error = %e, "could not record last_sync_at");
        }
        if integ.parked_count > 0 {
            self.ask_replay(t).await;
        }
    }

    /// How long the tenant's budget stays empty, when that is more than a short sleep: what
    /// the last take that found it empty said, or what this container's own takes left in the
    /// budget (the batch's integration gives the rate; the budget only moves forward, so
    /// neither is ever too long).
    fn budget_wait(&self, t: &TenantId) -> Option<Duration> {
        let failed = self
            .inner
            .budget_empty_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(t.as_str())
            .map(|until| until.saturating_duration_since(Instant::now()));
        let rate = self.batch().as_ref().and_then(|b| {
            let integ = b.integrations.get(t.as_str())?.get()?.as_ref()?;
            Some(integ.rate)
        });
        let taken = rate.and_then(|rate| {
            self.inner
                .store
                .known_budget_wait(t, &rate, OffsetDateTime::now_utc())
        });
        let left = failed.max(taken)?;
        (left > BUDGET_SKIP_ABOVE).then_some(left)
    }

    fn note_budget_empty(&self, t: &TenantId, wait: Duration) {
        self.inner
            .budget_empty_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(t.as_str().to_owned(), Instant::now() + wait);
    }

    /// Whether `every` has passed since this container last did the thing for `t` (and if so,
    /// notes that it does it now).
    fn due(
        &self,
        last: &StdMutex<HashMap<String, Instant>>,
        t: &TenantId,
        every: Duration,
    ) -> bool {
        let mut last = last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if last.get(t.as_str()).is_some_and(|at| at.elapsed() < every) {
            return false;
        }
        last.insert(t.as_str().to_owned(), Instant::now());
        true
    }

    async fn ask_replay(&self, t: &TenantId) {
        let Some((sqs, queue)) = &self.inner.replay_queue else {
            return;
        };
        if !self.due(&self.inner.replay_asked, t, REPLAY_REQUEST_EVERY) {
            return;
        }
        if let Err(e) = replay::request_replay(sqs, queue, t, true).await {
            tracing::warn!(error = %e, "could not ask for the replay of parked events");
        }
    }

    /// Reads the integration, takes the tenant's connection, resolves and writes the lead.
    /// `version` receives the integration version used, so an integration-wide failure is
    /// recorded only against the connection that failed.
    async fn sync(
        &self,
        event: &LeadEvent,
        progress: &mut Progress,
    ) -> Result<(Synced, Integration), SyncError> {
        let i = &self.inner;
        let t = &event.tenant_id;
        let integ = match self.integration(t).await? {
            Some(integ) if integ.is_connected() => integ,
            _ => return Err(SyncError::NotConnected),
        };
        progress.version = Some(integ.version);
        match integ.sync_status {
            Some(SyncStatus::Error) => return Err(SyncError::IntegrationInError),
            Some(SyncStatus::Paused) => return Err(SyncError::Paused),
            Some(SyncStatus::Active) | None => {}
        }
        let portal_id = integ
            .portal_id
            .clone()
            .ok_or(SyncError::BadConnection("no portal identity"))?;
        let slot = i.conns.slot(t);
        let mut guard = slot.lock().await;
        i.conns.refresh(&mut guard, t, &integ).await?;
        let Some(conn) = guard.as_mut() else {
            return Err(SyncError::NotConnected);
        };
        let done = self
            .sync_bound(conn, &integ, &portal_id, event, progress)
            .await?;
        Ok((done, integ))
    }

    /// The resolution, binding the tools again once when the binding is unreadable, a bound
    /// tool is unknown, or the server refused the arguments. Refused arguments with an unchanged
    /// binding are this event's data.
    async fn sync_bound(
        &self,
        conn: &mut Connection,
        integ: &Integration,
        portal_id: &str,
        event: &LeadEvent,
        progress: &mut Progress,
    ) -> Result<Synced, SyncError> {
        let first = if conn.binding.ops.is_empty() {
            Err(SyncError::Crm(CrmError::BindingStale { op: "all" }))
        } else {
            self.resolve(conn, integ, portal_id, event, progress).await
        };
        let rejected = match &first {
            Err(SyncError::Crm(CrmError::Rejected { .. })) => true,
            Err(SyncError::Crm(CrmError::BindingStale { .. })) => false,
            _ => return first,
        };
        tracing::warn!(rejected, "binding the tools again");
        let Some(binding) = self.inner.conns.bind_again(conn).await? else {
            return first; // unchanged: a refusal stands as the event's; a stale tool too
        };
        let t = &event.tenant_id;
        let info = bound_report(integ.portal_info.as_ref(), &binding);
        let updated = self
            .inner
            .store
            .set_binding(t, conn.version, binding.to_value(), info)
            .await?;
        self.forget_integration(t);
        self.audit(t, "binding_rediscovered", binding.report())
            .await;
        conn.version = updated.version;
        conn.binding = binding;
        progress.version = Some(updated.version);
        self.resolve(conn, integ, portal_id, event, progress).await
    }

    async fn resolve(
        &self,
        conn: &mut Connection,
        integ: &Integration,
        portal_id: &str,
        event: &LeadEvent,
        progress: &mut Progress,
    ) -> Result<Synced, SyncError> {
        let Progress {
            calls,
            unrecorded,
            batch_link,
            written_link,
            ..
        } = progress;
        let i = &self.inner;
        i.conns.open_session(conn).await?;
        let Connection {
            session, binding, ..
        } = conn;
        let Some(session) = session.as_mut() else {
            return Err(SyncError::NotConnected);
        };
        let mut crm = BudgetedCrm {
            crm: Crm::new(session, binding),
            budget: &i.store,
            tenant: &event.tenant_id,
            rate: &integ.rate,
            metrics: &i.metrics,
            calls,
        };
        let phone = event
            .raw_phone()
            .map(|raw| parse_phone(raw, i.default_region.as_deref()));
        let mut resolver = Resolver {
            crm: &mut crm,
            links: &i.store,
            event,
            portal_id,
            phone,
            caps: binding.caps.clone(),
            now: OffsetDateTime::now_utc(),
            known_link: batch_link.take(),
            written: None,
            unrecorded,
        };
        let done = resolver.resolve().await;
        *written_link = resolver.written.take();
        done
    }

    /// An event failed after it sent an update it could not record: what it sent is kept on
    /// the link, so the next event settles it against the lead instead of trusting `sent`.
    /// Tried a few times in place (the next event is this customer's, soon).
    async fn keep_pending(&self, t: &TenantId, write: &PendingWrite) {
        let store = &self.inner.store;
        if let Err(e) = retry_in_place("the interrupted write's note", || {
            store.mark_link_pending(t, &write.customer_id, write.lead_id, &write.fields)
        })
        .await
        {
            tracing::error!(error = %e, lead_id = write.lead_id, "could not keep the interrupted write on the link; the next event may take it for a manager's edit");
        }
    }

    /// Carries out the failure plan for `err`: the cached connection, the integration, then the
    /// event (parked here; the batch acts on the rest of the outcome).
    async fn carry_out(
        &self,
        event: &LeadEvent,
        body: &str,
        receive_count: u32,
        err: &SyncError,
        progress: &Progress,
    ) -> Outcome {
        let i = &self.inner;
        let t = &event.tenant_id;
        let attempt = Attempt {
            receive_count,
            max_receive_count: i.max_receive_count,
            jitter_ms: jitter_ms(),
        };
        let Plan {
            cache,
            integration,
            event: event_plan,
            operator_alarm,
            class,
        } = plan(err, attempt);
        // The failure's searchable line: its class and the safe reason (a `SyncError`'s Display
        // never holds a token or upstream text).
        let outcome = event_plan.name();
        if operator_alarm {
            tracing::error!(tenant_id = %t, customer_id = %event.customer.id, event_id = %event.event_id, outcome, failure_class = class, calls = progress.calls, reason = %err, operator_alarm = true, "operator-side failure; retried, the tenant is not blamed");
        } else {
            tracing::info!(tenant_id = %t, customer_id = %event.customer.id, event_id = %event.event_id, outcome, failure_class = class, calls = progress.calls, reason = %err, "event not synced");
        }
        if let EventPlan::Retry { delay, .. } = &event_plan
            && err.is_rate_limit()
        {
            i.metrics.observe(Metric::RateLimitWaitMs, *delay);
        }
        i.conns.apply(t, cache).await;
        if let IntegrationPlan::Error(reason) = &integration
            && let Some(v) = progress.version
        {
            match i
                .store
                .set_status(t, v, SyncStatus::Error, Some(reason.clone()))
                .await
            {
                Ok(_) => {
                    self.forget_integration(t);
                    i.metrics.count_as(Metric::IntegrationsErrored, class, 1);
                    tracing::warn!(tenant_id = %t, failure_class = class, %reason, "integration turned to error");
                    let detail = json!({"reason": reason, "event_id": event.event_id});
                    self.audit(t, "integration_error", detail).await;
                }
                Err(StoreError::Conflict) => {
                    // The connection changed while we used the old one: try the new one.
                    self.forget_integration(t);
                    return Outcome::Retry {
                        delay: HELD_RETRY,
                        reason: "the Bitrix24 connection changed; retrying with the new one".into(),
                    };
                }
                Err(e) => tracing::warn!(error = %e, "could not set the integration error status"),
            }
        }
        match event_plan {
            EventPlan::Skip(reason) => {
                let detail = json!({"event_id": event.event_id, "reason": reason});
                self.audit(t, "event_skipped", detail).await;
                Outcome::Skipped { reason }
            }
            EventPlan::Park(reason) => {
                let outcome = self.park(event, body, reason, receive_count).await;
                // Parked on a working integration (the portal or our side kept failing): nothing
                // else may come to bring it back (a reconnect does for an integration in error),
                // so a timer is set on the queue.
                let working = integration == IntegrationPlan::Keep
                    && !matches!(err, SyncError::IntegrationInError | SyncError::Paused);
                if working && matches!(outcome, Outcome::Parked { .. }) {
                    self.set_replay_timer(t).await;
                }
                outcome
            }
            EventPlan::DeadLetter(reason) => Outcome::DeadLetter { reason },
            EventPlan::Retry { delay, reason } => Outcome::Retry { delay, reason },
            EventPlan::Requeue(reason) => Outcome::Requeue { reason },
        }
    }

    /// A replay request due `REPLAY_AFTER_PARK_SECS` from now. Not a second one while this
    /// container's last timer for the tenant is still ahead: that one replays everything parked
    /// by the time it fires, this event included.
    async fn set_replay_timer(&self, t: &TenantId) {
        let Some((sqs, queue)) = &self.inner.replay_queue else {
            return;
        };
        let now = i64::try_from(replay::now_millis()).unwrap_or(i64::MAX);
        let timers = || {
            self.inner
                .timers
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        if timers().get(t.as_str()).is_some_and(|at| *at > now) {
            return;
        }
        let at = now.saturating_add(
            i64::try_from(self.inner.replay_after_park.as_millis()).unwrap_or(i64::MAX),
        );
        match replay::request_replay_later(sqs, queue, t, at).await {
            Ok(()) => {
                timers().insert(t.as_str().to_owned(), at);
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not set the replay timer; the next successful sync replays");
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
                let detail = json!({"event_id": event.event_id, "reason": reason});
                self.audit(t, "event_parked", detail).await;
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
}

/// The metric a successful sync counts in, by what it did (`Synced::kind`).
fn synced_metric(kind: &str) -> Metric {
    match kind {
        "lead_created" | "lead_recovered" => Metric::LeadsCreated,
        "notes_added" => Metric::NotesAdded,
        "lead_unchanged" => Metric::EventsUnchanged,
        // lead_updated, and lead_linked: a lead found in the portal, adopted and written.
        _ => Metric::LeadsUpdated,
    }
}

/// A random 0..1000 ms for backoff jitter (uuid v4 is already a dependency and random enough).
fn jitter_ms() -> u64 {
    (uuid::Uuid::new_v4().as_u128() % 1000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind a sync reports lands in the metric the README's table names for it.
    #[test]
    fn each_synced_kind_counts_in_its_metric() {
        for (kind, metric) in [
            ("lead_created", Metric::LeadsCreated),
            ("lead_recovered", Metric::LeadsCreated),
            ("lead_linked", Metric::LeadsUpdated),
            ("lead_updated", Metric::LeadsUpdated),
            ("notes_added", Metric::NotesAdded),
            ("lead_unchanged", Metric::EventsUnchanged),
        ] {
            assert_eq!(synced_metric(kind), metric, "{kind}");
        }
    }
}
