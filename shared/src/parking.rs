//! Re-sending parked events (design.md §4 step 3): after a successful connect or test, the events
//! kept while the integration was in `error` go back to the lead queue in `occurred_at` order.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::store::{Store, StoreError};
use crate::tenant::TenantId;

#[derive(Debug, thiserror::Error)]
pub enum ParkingError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// The queue refused a message; the events from this one on stay parked.
    #[error("the lead queue did not take a parked event")]
    Send(#[source] Box<aws_sdk_sqs::Error>),
}

/// Re-sends every parked event of `tenant` and deletes each after its send; returns how many
/// were sent. Stops at the first failed send so the order is kept for the next attempt.
#[tracing::instrument(skip_all, fields(tenant_id = %tenant))]
pub async fn replay_parked(
    store: &Store,
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    tenant: &TenantId,
) -> Result<usize, ParkingError> {
    let parked = store.list_parked(tenant).await?;
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut sent = 0;
    for ev in &parked {
        sqs.send_message()
            .queue_url(queue_url)
            .message_body(&ev.body)
            .message_group_id(group_id(tenant, &ev.body))
            // The FIFO queue drops a message whose id it saw in the last 5 minutes: the original
            // id (the event's first send) would make this re-send vanish silently.
            .message_deduplication_id(dedup_id(&ev.event_id, millis))
            .send()
            .await
            .map_err(|e| ParkingError::Send(Box::new(e.into())))?;
        store.delete_parked(tenant, ev).await?;
        sent += 1;
    }
    if sent > 0 {
        tracing::info!(sent, "parked events re-sent");
    }
    Ok(sent)
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
    let group = match customer {
        Some(c) => format!("{tenant}:{c}"),
        None => tenant.to_string(),
    };
    group.chars().take(128).collect()
}

/// SQS deduplication ids are at most 128 characters.
fn dedup_id(event_id: &str, millis: u128) -> String {
    let suffix = format!("-r{millis}");
    let head: String = event_id
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(128 - suffix.len())
        .collect();
    format!("{head}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_and_dedup_ids() {
        let t = TenantId::parse("7f8e5b0a-3c1d-4e2f-9a6b-1c2d3e4f5a6b").unwrap();
        assert_eq!(
            group_id(&t, r#"{"customer":{"id":"tg:1"}}"#),
            "7f8e5b0a-3c1d-4e2f-9a6b-1c2d3e4f5a6b:tg:1"
        );
        assert_eq!(group_id(&t, "not json"), t.to_string());
        assert_eq!(dedup_id("e1", 1700000000123), "e1-r1700000000123");
        assert!(dedup_id(&"x".repeat(200), 1).len() <= 128);
    }
}
