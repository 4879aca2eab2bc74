//! The SQS side of lead-sync: one FIFO batch in, a partial batch response out.
//!
//! Ordering rule: AWS's guide for FIFO partial failures stops at the first failure and reports
//! every later message of the batch. We fail only the later messages of the failed *group*
//! instead (what AWS Powertools calls `skip_group_on_error`): each group keeps its order, and
//! other tenants' and customers' groups go on. Groups run concurrently; inside a group, messages
//! run one after the other.
//!
//! Isolation and time: a panic or error in one record fails that record's group, never the
//! batch (a failed invocation would redeliver every tenant's messages). No event starts unless
//! [`EVENT_TIME`] is left before the invocation's deadline (half the invocation's time, for a
//! function given less); the rest are reported failed with their visibility set to zero, so they
//! come back at once without a back-off penalty.
//! Retry delays are whole seconds for SQS: rounded up, and never under [`MIN_RETRY`].

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::MessageAttributeValue;
use futures::{FutureExt, StreamExt};
use tracing::Instrument;

use super::Outcome;
use super::failure::{MIN_RETRY, backoff};
use super::replay;
use crate::events::LeadEvent;
use crate::metrics::{Metric, Metrics, function};
use crate::tenant::TenantId;

pub use super::startup::{StartError, lead_sync_from_env, lead_sync_with};

/// Most groups handled at once by one invocation. Groups of one tenant share its portal's rate
/// budget, so more would only wait on it.
const MAX_CONCURRENT_GROUPS: usize = 8;
/// SQS caps a message's visibility timeout at 12 hours.
const MAX_VISIBILITY: Duration = Duration::from_secs(12 * 60 * 60);
/// When an event cannot be re-queued it is retried after this long instead.
const REQUEUE_FALLBACK_DELAY: Duration = Duration::from_secs(30);
/// SQS message attribute values are bounded; reasons are short sentences anyway.
const MAX_REASON_LEN: usize = 512;
/// The time one event may need (a few MCP calls at their timeouts, budget waits): no event
/// starts with less left before the invocation's deadline.
pub const EVENT_TIME: Duration = Duration::from_secs(20);
/// Given to each event's own timeout below the deadline, to answer the batch in time.
const ANSWER_MARGIN: Duration = Duration::from_secs(2);

/// What lead-sync does with one valid event (the sync engine; tests may script it).
pub trait EventHandler: Send + Sync {
    /// `deadline`: the event must be given up by then (and is retried soon).
    fn handle<'a>(
        &'a self,
        event: &'a LeadEvent,
        body: &'a str,
        receive_count: u32,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Outcome> + Send + 'a;

    /// Called around each batch: what the handler may share between the batch's events lives
    /// from `begin_batch` to `end_batch`. `firsts`: the tenant and customer of each group's
    /// first lead event (the engine reads their integrations and links in one request).
    fn begin_batch<'a>(
        &'a self,
        firsts: &'a [(TenantId, String)],
    ) -> impl Future<Output = ()> + Send + 'a {
        let _ = firsts;
        std::future::ready(())
    }
    fn end_batch(&self) {}

    /// The store that keeps parked events, for replay requests (none: they are dead-lettered
    /// as unknown events would be).
    fn replay_store(&self) -> Option<&crate::store::Store> {
        None
    }
}

impl EventHandler for super::SyncEngine {
    fn handle<'a>(
        &'a self,
        event: &'a LeadEvent,
        body: &'a str,
        receive_count: u32,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Outcome> + Send + 'a {
        super::SyncEngine::handle(self, event, body, receive_count, deadline)
    }

    fn begin_batch<'a>(
        &'a self,
        firsts: &'a [(TenantId, String)],
    ) -> impl Future<Output = ()> + Send + 'a {
        super::SyncEngine::begin_batch(self, firsts)
    }

    fn end_batch(&self) {
        super::SyncEngine::end_batch(self);
    }

    fn replay_store(&self) -> Option<&crate::store::Store> {
        Some(self.store())
    }
}

/// Handles SQS batches for the lead queue: the engine per event, the dead-letter queue for
/// invalid events and refused data, visibility for retries.
pub struct BatchProcessor<H> {
    handler: H,
    sqs: aws_sdk_sqs::Client,
    queue_url: Option<String>,
    dead_letter_queue_url: String,
    /// The lead queue's redrive `maxReceiveCount` (replay requests are renewed before it).
    max_receive_count: u32,
    /// What the batch decided per event, flushed with the engine's figures after each batch.
    metrics: Metrics,
}

/// The per-message verdict the batch response is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Verdict {
    Ack,
    Fail { delay: Option<Duration> },
}

impl<H: EventHandler> BatchProcessor<H> {
    pub fn new(
        handler: H,
        sqs: aws_sdk_sqs::Client,
        queue_url: Option<String>,
        dead_letter_queue_url: String,
    ) -> Self {
        Self {
            handler,
            sqs,
            queue_url,
            dead_letter_queue_url,
            max_receive_count: 5,
            metrics: Metrics::off(),
        }
    }

    /// Counts what happens to each event in `metrics` (the engine's recorder too, so one flush
    /// per invocation writes both) and writes them as EMF lines at the end of every batch.
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// The lead queue's redrive `maxReceiveCount` (default 5, as in the template).
    pub fn with_max_receive_count(mut self, n: u32) -> Self {
        self.max_receive_count = n;
        self
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Processes a batch; the response lists exactly the messages SQS must deliver again.
    /// `deadline`: the invocation's (from the Lambda context); none in tests that do not care.
    pub async fn process(&self, batch: SqsEvent, deadline: Option<Instant>) -> SqsBatchResponse {
        let groups = group_in_order(&batch.records);
        let time = deadline.map(TimeRule::new);
        let firsts: Vec<(TenantId, String)> = groups
            .iter()
            .filter_map(|(_, records)| {
                let event = LeadEvent::parse(records.first()?.body.as_deref()?).ok()?;
                Some((event.tenant_id, event.customer.id))
            })
            .collect();
        self.handler.begin_batch(&firsts).await;
        let results: Vec<Vec<(String, Verdict)>> = futures::stream::iter(groups)
            .map(|(group, records)| self.process_group(group, records, time))
            .buffer_unordered(MAX_CONCURRENT_GROUPS)
            .collect()
            .await;
        self.handler.end_batch();
        let mut response = SqsBatchResponse::default();
        // Report in the batch's order, which keeps the response stable for callers and tests.
        let failed: HashMap<String, ()> = results
            .into_iter()
            .flatten()
            .filter(|(_, v)| matches!(v, Verdict::Fail { .. }))
            .map(|(id, _)| (id, ()))
            .collect();
        for r in &batch.records {
            if let Some(id) = &r.message_id
                && failed.contains_key(id)
            {
                response.add_failure(id.clone());
            }
        }
        // One invocation, one flush: Lambda runs one batch at a time per container.
        self.metrics.flush(function::LEAD_SYNC);
        response
    }

    /// Counts a lead event that was handed back to the queue without being handled (a later
    /// message of a failed group, the deadline near, a panic). Replay requests are not events.
    fn count_handed_back(&self, record: &SqsMessage) {
        if replay::parse_request(record.body.as_deref().unwrap_or("")).is_none() {
            self.metrics.count(Metric::EventsReceived, 1);
            self.metrics.count(Metric::EventsRetried, 1);
        }
    }

    /// Counts a sent-on event: `sent` when the send succeeded, else it is retried.
    fn count_sent(&self, verdict: Verdict, sent: Metric) -> Verdict {
        let metric = match verdict {
            Verdict::Ack => sent,
            Verdict::Fail { .. } => Metric::EventsRetried,
        };
        self.metrics.count(metric, 1);
        verdict
    }

    async fn process_group(
        &self,
        group: String,
        records: Vec<&SqsMessage>,
        time: Option<TimeRule>,
    ) -> Vec<(String, Verdict)> {
        let mut out = Vec::with_capacity(records.len());
        let mut group_failed: Option<Option<Duration>> = None;
        for record in records {
            let Some(id) = record.message_id.clone() else {
                // Without an id the message cannot be reported; SQS always sets one.
                tracing::error!("SQS record without messageId skipped");
                continue;
            };
            let span = tracing::info_span!("message", message_id = %id, group = %group, event_id = tracing::field::Empty, tenant_id = tracing::field::Empty);
            let verdict = match group_failed {
                // A later message of a failed group: not processed, reported failed, and hidden as
                // long as the failed one so the group comes back together, in order.
                Some(delay) => {
                    self.count_handed_back(record);
                    if let Some(delay) = delay {
                        self.set_visibility(record, delay)
                            .instrument(span.clone())
                            .await;
                    }
                    Verdict::Fail { delay }
                }
                None if time.is_some_and(|t| !t.may_start()) => {
                    // Not enough time to finish it: back at once, no back-off penalty.
                    tracing::info!(parent: &span, "invocation deadline near: event not started");
                    self.count_handed_back(record);
                    self.set_visibility(record, Duration::ZERO)
                        .instrument(span)
                        .await;
                    Verdict::Fail { delay: None }
                }
                None => {
                    let event_deadline = time.map(|t| t.event_deadline());
                    AssertUnwindSafe(self.process_record(&group, record, event_deadline))
                        .catch_unwind()
                        .instrument(span.clone())
                        .await
                        .unwrap_or_else(|_| {
                            self.count_handed_back(record);
                            tracing::error!(parent: &span, "handling the event panicked; its group is retried");
                            Verdict::Fail { delay: Some(backoff(1, 0)) }
                        })
                }
            };
            if let Verdict::Fail { delay } = &verdict {
                group_failed.get_or_insert(*delay);
            }
            out.push((id, verdict));
        }
        out
    }

    async fn process_record(
        &self,
        group: &str,
        record: &SqsMessage,
        deadline: Option<Instant>,
    ) -> Verdict {
        let body = record.body.as_deref().unwrap_or("");
        if let Some(request) = replay::parse_request(body) {
            let receive_count = record
                .attributes
                .get("ApproximateReceiveCount")
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            return self.replay(request, record, receive_count).await;
        }
        self.metrics.count(Metric::EventsReceived, 1);
        let event = match LeadEvent::parse(body) {
            Ok(e) => e,
            Err(e) => {
                let reason = format!("invalid lead event: {e}");
                tracing::warn!(%reason, outcome = "dead_lettered", failure_class = "invalid_event", "event refused");
                let verdict = self.dead_letter(group, record, &reason).await;
                return self.count_sent(verdict, Metric::EventsDeadLettered);
            }
        };
        let span = tracing::Span::current();
        span.record("event_id", event.event_id.as_str());
        span.record("tenant_id", event.tenant_id.as_str());
        let receive_count = record
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|c| c.parse().ok())
            .unwrap_or(1);
        match self
            .handler
            .handle(&event, body, receive_count, deadline)
            .await
        {
            Outcome::Done => Verdict::Ack,
            Outcome::Skipped { reason } => {
                tracing::info!(%reason, "event skipped");
                self.metrics.count(Metric::EventsSkippedNotConnected, 1);
                Verdict::Ack
            }
            Outcome::Parked { reason } => {
                tracing::warn!(%reason, "event parked");
                self.metrics.count(Metric::EventsParked, 1);
                Verdict::Ack
            }
            Outcome::DeadLetter { reason } => {
                tracing::warn!(%reason, "event dead-lettered");
                let verdict = self.dead_letter(group, record, &reason).await;
                self.count_sent(verdict, Metric::EventsDeadLettered)
            }
            Outcome::Requeue { reason } => {
                tracing::info!(%reason, "event sent to the back of its group");
                let verdict = self.requeue(group, record, &event.event_id).await;
                self.count_sent(verdict, Metric::EventsRequeued)
            }
            Outcome::Retry { delay, reason } => {
                tracing::info!(%reason, delay_ms = delay.as_millis() as u64, "event retried later");
                self.metrics.count(Metric::EventsRetried, 1);
                self.set_visibility(record, delay).await;
                Verdict::Fail { delay: Some(delay) }
            }
        }
    }

    /// A replay request: re-send the tenant's parked events (see [`replay`]). A timer not yet
    /// due waits (its visibility is set to the time left). A failure retries the request; on the
    /// receive before the queue's `maxReceiveCount` a fresh request is sent instead, so a replay
    /// request never becomes a dead letter.
    async fn replay(
        &self,
        request: replay::ReplayRequest,
        record: &SqsMessage,
        receive_count: u32,
    ) -> Verdict {
        let (Some(store), Some(queue_url)) = (self.handler.replay_store(), &self.queue_url) else {
            tracing::error!("a replay request without a store or LEAD_QUEUE_URL; dropped");
            return Verdict::Ack;
        };
        let tenant = &request.tenant;
        let last = super::failure::retries_exhausted(receive_count, self.max_receive_count);
        if let Some(at) = request.not_before_ms {
            let wait_ms = i128::from(at) - replay::now_millis();
            if wait_ms > 0 {
                if last {
                    return self.renew_timer(tenant, at, queue_url).await;
                }
                let delay = Duration::from_millis(u64::try_from(wait_ms).unwrap_or(u64::MAX));
                self.set_visibility(record, delay).await;
                return Verdict::Fail { delay: Some(delay) };
            }
        }
        match replay::replay_parked(store, &self.sqs, queue_url, tenant).await {
            Ok(_) => Verdict::Ack,
            Err(e) if last => {
                tracing::warn!(error = %e, tenant_id = %tenant, "replay failed again; asking anew");
                let at = i64::try_from(replay::now_millis()).unwrap_or(i64::MAX)
                    + REQUEUE_FALLBACK_DELAY.as_millis() as i64;
                self.renew_timer(tenant, at, queue_url).await
            }
            Err(e) => {
                tracing::warn!(error = %e, tenant_id = %tenant, "replay failed; retried later");
                self.set_visibility(record, REQUEUE_FALLBACK_DELAY).await;
                Verdict::Fail {
                    delay: Some(REQUEUE_FALLBACK_DELAY),
                }
            }
        }
    }

    /// Replaces a replay request that used up its receives by a fresh one.
    async fn renew_timer(
        &self,
        tenant: &crate::tenant::TenantId,
        at: i64,
        queue_url: &str,
    ) -> Verdict {
        match replay::request_replay_later(&self.sqs, queue_url, tenant, at).await {
            Ok(()) => Verdict::Ack,
            Err(e) => {
                tracing::error!(error = %e, tenant_id = %tenant, "could not renew the replay request");
                Verdict::Fail {
                    delay: Some(REQUEUE_FALLBACK_DELAY),
                }
            }
        }
    }

    /// Sends the original body to the dead-letter queue with the reason as a message attribute,
    /// then acknowledges it. If the DLQ cannot take it, the message is reported failed instead:
    /// it is retried, never lost.
    async fn dead_letter(&self, group: &str, record: &SqsMessage, reason: &str) -> Verdict {
        let reason: String = reason.chars().take(MAX_REASON_LEN).collect();
        let body = record.body.clone().unwrap_or_default();
        let message_id = record.message_id.clone().unwrap_or_default();
        let mut send = self
            .sqs
            .send_message()
            .queue_url(&self.dead_letter_queue_url)
            .message_body(if body.is_empty() {
                "(empty body)".to_owned()
            } else {
                body
            })
            .set_message_attributes(Some(
                [("reason", &reason), ("source_message_id", &message_id)]
                    .into_iter()
                    .filter_map(|(k, v)| string_attribute(v).map(|a| (k.to_owned(), a)))
                    .collect(),
            ));
        if self.dead_letter_queue_url.ends_with(".fifo") {
            send = send
                .message_group_id(group)
                .message_deduplication_id(dedup_id(&message_id));
        }
        match send.send().await {
            Ok(_) => Verdict::Ack,
            Err(e) => {
                tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "dead-letter send failed; message kept for retry");
                Verdict::Fail { delay: None }
            }
        }
    }

    /// Sends the body to the lead queue again as a new message of the same group (a fresh
    /// deduplication id: FIFO would drop a re-send under the original one within 5 minutes), then
    /// acknowledges the original. If that send fails, the original is retried instead.
    async fn requeue(&self, group: &str, record: &SqsMessage, event_id: &str) -> Verdict {
        let Some(queue_url) = &self.queue_url else {
            tracing::error!("LEAD_QUEUE_URL is not set: cannot re-queue; retrying instead");
            return Verdict::Fail {
                delay: Some(REQUEUE_FALLBACK_DELAY),
            };
        };
        let millis = time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let mut send = self
            .sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(record.body.clone().unwrap_or_default());
        if queue_url.ends_with(".fifo") {
            send = send
                .message_group_id(group)
                .message_deduplication_id(dedup_id(&format!("{event_id}-q{millis}")));
        }
        match send.send().await {
            Ok(_) => Verdict::Ack,
            Err(e) => {
                tracing::error!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "re-queue failed; message kept for retry");
                Verdict::Fail {
                    delay: Some(REQUEUE_FALLBACK_DELAY),
                }
            }
        }
    }

    /// Best effort: a failed ChangeMessageVisibility never changes the batch response.
    async fn set_visibility(&self, record: &SqsMessage, delay: Duration) {
        let (Some(queue_url), Some(handle)) = (&self.queue_url, &record.receipt_handle) else {
            return;
        };
        let secs = visibility_secs(delay);
        if let Err(e) = self
            .sqs
            .change_message_visibility()
            .queue_url(queue_url)
            .receipt_handle(handle)
            .visibility_timeout(secs)
            .send()
            .await
        {
            tracing::warn!(error = %aws_sdk_sqs::error::DisplayErrorContext(&e), "could not change visibility");
        }
    }
}

/// When an event may start, and by when it must be given up, for one invocation. An event
/// needs up to [`EVENT_TIME`], and [`ANSWER_MARGIN`] is kept to answer the batch; a function
/// given a shorter timeout than that scales both to its own budget (half of it to start an
/// event, a tenth to answer), so its first event always starts.
#[derive(Debug, Clone, Copy)]
struct TimeRule {
    deadline: Instant,
    start_before: Duration,
    margin: Duration,
}

impl TimeRule {
    fn new(deadline: Instant) -> Self {
        let budget = deadline.saturating_duration_since(Instant::now());
        Self {
            deadline,
            start_before: EVENT_TIME.min(budget / 2),
            margin: ANSWER_MARGIN.min(budget / 10),
        }
    }

    fn may_start(&self) -> bool {
        self.deadline.saturating_duration_since(Instant::now()) >= self.start_before
    }

    fn event_deadline(&self) -> Instant {
        self.deadline - self.margin
    }
}

/// The invocation's deadline as an `Instant`, from the Lambda context's `deadline` (epoch
/// milliseconds). `None` when it is unset or already past when the invocation starts: Lambda
/// never hands out a past deadline, but local emulators may send 0 or a stale value, and a past
/// deadline would give up every event at once.
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> Option<Instant> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_millis();
    let left = u64::try_from(u128::from(deadline_ms).saturating_sub(now_ms)).ok()?;
    if left == 0 {
        tracing::warn!(
            deadline_ms,
            "the invocation's deadline is unset or past; running without one"
        );
        return None;
    }
    Some(Instant::now() + Duration::from_millis(left))
}

/// A retry delay as SQS visibility seconds: rounded up (a 300 ms wait is 1 s, not 0), at least
/// [`MIN_RETRY`] for a real retry, at most 12 hours. Zero stays zero (back at once).
fn visibility_secs(delay: Duration) -> i32 {
    if delay.is_zero() {
        return 0;
    }
    let d = delay.max(MIN_RETRY).min(MAX_VISIBILITY);
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX)
}

fn string_attribute(v: &str) -> Option<MessageAttributeValue> {
    // `build` fails only without a data type, which is always set here.
    MessageAttributeValue::builder()
        .data_type("String")
        .string_value(if v.is_empty() { "-" } else { v })
        .build()
        .ok()
}

/// SQS deduplication ids are at most 128 characters of `[A-Za-z0-9!-~]`.
fn dedup_id(message_id: &str) -> String {
    let id: String = message_id
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect();
    if id.is_empty() {
        "no-message-id".to_owned()
    } else {
        id
    }
}

/// Records grouped by `MessageGroupId`, groups in order of first appearance, records in batch order.
/// A standard (non-FIFO) queue has no groups: each message is its own group.
fn group_in_order(records: &[SqsMessage]) -> Vec<(String, Vec<&SqsMessage>)> {
    let mut groups: Vec<(String, Vec<&SqsMessage>)> = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let key = r
            .attributes
            .get("MessageGroupId")
            .cloned()
            .unwrap_or_else(|| format!("#standard-{i}"));
        match groups.iter_mut().find(|(g, _)| *g == key) {
            Some((_, rs)) => rs.push(r),
            None => groups.push((key, vec![r])),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(id: &str, group: Option<&str>) -> SqsMessage {
        let mut m = SqsMessage::default();
        m.message_id = Some(id.into());
        if let Some(g) = group {
            m.attributes.insert("MessageGroupId".into(), g.into());
        }
        m
    }

    #[test]
    fn groups_keep_first_appearance_and_batch_order() {
        let recs = vec![
            msg("1", Some("a")),
            msg("2", Some("b")),
            msg("3", Some("a")),
            msg("4", None),
            msg("5", Some("b")),
        ];
        let groups = group_in_order(&recs);
        let shape: Vec<(String, Vec<String>)> = groups
            .into_iter()
            .map(|(g, rs)| {
                (
                    g,
                    rs.iter().map(|r| r.message_id.clone().unwrap()).collect(),
                )
            })
            .collect();
        assert_eq!(
            shape,
            vec![
                ("a".to_owned(), vec!["1".to_owned(), "3".to_owned()]),
                ("b".to_owned(), vec!["2".to_owned(), "5".to_owned()]),
                ("#standard-3".to_owned(), vec!["4".to_owned()]),
            ]
        );
    }

    #[test]
    fn dedup_ids_are_sqs_safe() {
        assert_eq!(dedup_id("abc-123"), "abc-123");
        assert_eq!(dedup_id(""), "no-message-id");
        assert_eq!(dedup_id(&"x".repeat(200)).len(), 128);
        assert_eq!(dedup_id("a b\u{e9}c"), "abc");
    }

    #[test]
    fn a_past_or_unset_deadline_is_no_deadline() {
        assert!(deadline_from_epoch_ms(0).is_none());
        assert!(
            deadline_from_epoch_ms(1_700_000_000).is_none(),
            "seconds, not ms: long past"
        );
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let d = deadline_from_epoch_ms(now_ms + 60_000).unwrap();
        let left = d.saturating_duration_since(Instant::now());
        assert!(
            left > Duration::from_secs(58) && left <= Duration::from_secs(60),
            "{left:?}"
        );
    }

    #[test]
    fn retry_delays_round_up_with_a_floor() {
        for (delay, secs, why) in [
            (Duration::ZERO, 0, "zero: back at once"),
            (
                Duration::from_millis(300),
                2,
                "a sub-second wait is not 0 s",
            ),
            (Duration::from_millis(2500), 3, "rounded up"),
            (Duration::from_secs(7), 7, "whole seconds kept"),
            (Duration::from_secs(100_000), 43_200, "capped at 12 hours"),
        ] {
            assert_eq!(visibility_secs(delay), secs, "{why}");
        }
    }
}
