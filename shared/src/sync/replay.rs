//! Parked events come back by themselves. An event is parked when its integration is in `error`
//! or its retries ran out on a failing portal; it is replayed (sent to the lead queue again, in
//! `occurred_at` order) once the portal is usable again. Three things start a replay: a connect,
//! a successful `test` of an integration in `error`, and the tenant's next successful sync. None
//! of them replays in its own time: each sends one small request message to the lead queue
//! (group `<tenant>:~replay`), and lead-sync carries the replay out when that message arrives.
//! A successful sync's requests are deduplicated per tenant and minute, so a burst of successes
//! asks once; a connect's or test's request, a timer and a renewal always go out (the FIFO queue
//! drops an id it saw in the last five minutes, even when that request already ran, before the
//! events it would now replay were parked). A fourth starter is the timer lead-sync sets when it
//! parks events of a working integration: a request that waits `REPLAY_AFTER_PARK_SECS`.
//!
//! A replay is safe under concurrency: each parked event is deleted only if it is still the copy
//! that was sent (see [`crate::store::Store::delete_parked`]); one parked again meanwhile stays.
//! It sends at most [`REPLAY_BATCH`] events per request and asks again for the rest.

use serde_json::{Value, json};

use crate::store::{Store, StoreError};
use crate::tenant::TenantId;

/// The `type` of a replay request on the lead queue.
pub const REPLAY_REQUEST: &str = "replay_parked";
/// Events re-sent per replay request (one SQS send and one delete each: well inside a run).
pub const REPLAY_BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The queue refused a message; the events from this one on stay parked.
    #[error("the lead queue did not take a message")]
    Send(#[source] Box<aws_sdk_sqs::Error>),
}

/// What one replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    pub sent: usize,
    /// Sent, but parked again meanwhile: the newer copy stays parked.
    pub kept: usize,
    /// Still parked after this run (beyond [`REPLAY_BATCH`]): another request was sent.
    pub left: usize,
}

/// A replay request read from the lead queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    pub tenant: TenantId,
    /// Not before this time (epoch ms): a timer set when events were parked on a working
    /// integration, so they come back even if the tenant sends nothing more.
    pub not_before_ms: Option<i64>,
}

/// The replay request a body holds, or `None` when the body is something else.
pub fn parse_request(body: &str) -> Option<ReplayRequest> {
    let v: Value = serde_json::from_str(body).ok()?;
    if v.get("type").and_then(Value::as_str) != Some(REPLAY_REQUEST) {
        return None;
    }
    Some(ReplayRequest {
        tenant: TenantId::parse(v.get("tenant_id")?.as_str()?).ok()?,
        not_before_ms: v.get("not_before_ms").and_then(Value::as_i64),
    })
}

pub(crate) fn now_millis() -> i128 {
    time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000
}

/// Asks lead-sync to replay the tenant's parked events. `dedup`: the same minute's requests are
/// one (the FIFO queue drops repeats); a continuation passes `false` to always go out.
pub async fn request_replay(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    tenant: &TenantId,
    dedup: bool,
) -> Result<(), ReplayError> {
    send_request(sqs, queue_url, tenant, dedup, None).await
}

/// Sets the timer: a replay request that waits until `not_before_ms`. Timers have a group of
/// their own (`<tenant>:~replay-later`), so a waiting timer never holds up a connect's request.
/// A timer is never deduplicated against an earlier one: that one may have fired already,
/// before the events this timer is for were parked (the sync engine keeps the count down by
/// not setting a second timer while its own is still ahead). A renewal of a timer that used
/// up its receives carries the same time and must not pass for a repeat either.
pub async fn request_replay_later(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    tenant: &TenantId,
    not_before_ms: i64,
) -> Result<(), ReplayError> {
    send_request(sqs, queue_url, tenant, false, Some(not_before_ms)).await
}

async fn send_request(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    tenant: &TenantId,
    dedup: bool,
    not_before_ms: Option<i64>,
) -> Result<(), ReplayError> {
    let mut body = json!({"version": 1, "type": REPLAY_REQUEST, "tenant_id": tenant.as_str()});
    if let Some(at) = not_before_ms {
        body["not_before_ms"] = json!(at);
    }
    let slot = if dedup {
        format!("m{}", now_millis() / 60_000)
    } else {
        format!("c{}", uuid::Uuid::new_v4().simple())
    };
    let group = if not_before_ms.is_some() {
        "~replay-later"
    } else {
        "~replay"
    };
    let mut send = sqs
        .send_message()
        .queue_url(queue_url)
        .message_body(body.to_string());
    if queue_url.ends_with(".fifo") {
        send = send
            .message_group_id(bounded(&format!("{tenant}:{group}")))
            .message_deduplication_id(bounded(&format!("replay-{tenant}-{slot}")));
    }
    send.send()
        .await
        .map_err(|e| ReplayError::Send(Box::new(e.into())))?;
    tracing::info!(tenant_id = %tenant, "replay of parked events requested");
    Ok(())
}

/// Re-sends the tenant's parked events, oldest first, at most [`REPLAY_BATCH`] of them; each is
/// deleted once sent if it is still the copy that was sent. Stops at the first failed send, so
/// the order is kept for the next attempt. More left: another request is sent.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
pub async fn replay_parked(
    store: &Store,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    tenant: &TenantId,
) -> Result<Replayed, ReplayError> {
    let seen = store
        .get_integration(tenant)
        .await?
        .map_or(0, |i| i.parked_count);
    let parked = store.list_parked(tenant).await?;
    if parked.is_empty() {
        store.reset_parked_count(tenant, seen).await?;
        return Ok(Replayed::default());
    }
    let mut done = Replayed {
        left: parked.len().saturating_sub(REPLAY_BATCH),
        ..Replayed::default()
    };
    let millis = now_millis();
    for ev in parked.iter().take(REPLAY_BATCH) {
        let mut send = sqs
            .send_message()
            .queue_url(queue_url)
            .message_body(&ev.body);
        if queue_url.ends_with(".fifo") {
            // A fresh deduplication id: the FIFO queue drops an id it saw in the last 5 minutes,
            // so the event's first send would make this one vanish.
            send = send
                .message_group_id(group_id(tenant, &ev.body))
                .message_deduplication_id(bounded(&format!("{}-r{millis}", ev.event_id)));
        }
        send.send()
            .await
            .map_err(|e| ReplayError::Send(Box::new(e.into())))?;
        match store.delete_parked(tenant, ev).await {
            Ok(()) => done.sent += 1,
            Err(StoreError::Conflict) => done.kept += 1,
            Err(e) => return Err(e.into()),
        }
    }
    if done.left > 0 {
        request_replay(sqs, queue_url, tenant, false).await?;
    }
    tracing::info!(
        sent = done.sent,
        kept = done.kept,
        left = done.left,
        "parked events re-sent"
    );
    Ok(done)
}

/// `<tenant>:<customer id>`, the producer's group; the customer id is read from the stored body
/// (a body that does not name one still goes out, in the tenant's own group, and the consumer
/// dead-letters it).
fn group_id(tenant: &TenantId, body: &str) -> String {
    let customer = serde_json::from_str::<Value>(body).ok().and_then(|v| {
        v.pointer("/customer/id")
            .and_then(Value::as_str)
            .map(str::to_owned)
    });
    match customer {
        Some(c) => bounded(&format!("{tenant}:{c}")),
        None => bounded(tenant.as_str()),
    }
}

/// SQS group and deduplication ids: at most 128 printable ASCII characters.
fn bounded(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_group_ids() {
        let t = TenantId::parse("7f8e5b0a-3c1d-4e2f-9a6b-1c2d3e4f5a6b").unwrap();
        assert_eq!(
            group_id(&t, r#"{"customer":{"id":"tg:1"}}"#),
            "7f8e5b0a-3c1d-4e2f-9a6b-1c2d3e4f5a6b:tg:1"
        );
        assert_eq!(group_id(&t, "not json"), t.to_string());
        assert!(bounded(&"x".repeat(200)).len() <= 128);
        let body =
            json!({"version": 1, "type": REPLAY_REQUEST, "tenant_id": t.as_str()}).to_string();
        assert_eq!(parse_request(&body).map(|r| r.tenant), Some(t.clone()));
        let timer = json!({"type": REPLAY_REQUEST, "tenant_id": t.as_str(), "not_before_ms": 5})
            .to_string();
        assert_eq!(parse_request(&timer).and_then(|r| r.not_before_ms), Some(5));
        assert_eq!(parse_request(r#"{"type":"lead"}"#), None);
        assert_eq!(parse_request("{}"), None);
    }
}
