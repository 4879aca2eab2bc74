//! The operator's command (`bitrix-admin`): a tenant's state, re-driving dead-lettered events
//! back to the lead queue, and replaying a tenant's parked events. It works against AWS or the
//! local stack with the functions' own environment (`TABLE_NAME`, `LEAD_QUEUE_URL`,
//! `DEAD_LETTER_QUEUE_URL`, `AWS_ENDPOINT_URL`).
//!
//! Moving an event never loses it: a dead-lettered message is deleted from the dead-letter queue
//! only after its send to the lead queue succeeded (a failed send leaves it where it was), and
//! an event re-driven twice has one effect, because lead-sync's idempotency record says it is
//! done. Messages that do not match the filter are put back at once (visibility 0).

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

use crate::store::{Store, StoreError};
use crate::sync::replay::{self, ReplayError};
use crate::tenant::TenantId;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("SQS: {0}")]
    Sqs(String),
}

fn sqs_err(e: impl std::fmt::Display) -> AdminError {
    AdminError::Sqs(e.to_string())
}

/// What `status` shows: the integration (never the token), parked events, recent audit lines.
pub async fn tenant_status(
    store: &Store,
    t: &TenantId,
    audit_lines: usize,
) -> Result<Value, AdminError> {
    let integ = store.get_integration(t).await?;
    let parked = store.list_parked(t).await?;
    let mut audit = store.list_audit(t).await?;
    audit.reverse();
    audit.truncate(audit_lines);
    let integration = integ.map(|i| {
        json!({
            "connected": i.is_connected(),
            "mcp_url": i.mcp_url,
            "portal_id": i.portal_id,
            "sync_status": i.sync_status.map(|s| s.as_str()),
            "last_error": i.last_error,
            "connected_at": i.connected_at.map(|t| t.to_string()),
            "last_sync_at": i.last_sync_at.map(|t| t.to_string()),
            "rate": {"per_sec": i.rate.per_sec, "burst": i.rate.burst},
            "version": i.version,
            "parked_count": i.parked_count,
        })
    });
    Ok(json!({
        "tenant_id": t.as_str(),
        "integration": integration,
        "parked_events": parked.iter().map(|p| json!({
            "event_id": p.event_id, "occurred_at": p.occurred_at.to_string(), "reason": p.reason,
        })).collect::<Vec<_>>(),
        "recent_audit": audit.iter().map(|a| json!({
            "at": a.at.to_string(), "kind": a.kind, "detail": a.detail,
        })).collect::<Vec<_>>(),
    }))
}

/// Which dead-lettered messages to move.
#[derive(Debug, Clone, Default)]
pub struct RedriveFilter {
    pub tenant: Option<TenantId>,
    /// Part of the `reason` attribute lead-sync wrote (case-insensitive).
    pub reason: Option<String>,
    pub dry_run: bool,
}

/// What a re-drive did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Redriven {
    /// Sent to the lead queue and deleted from the dead-letter queue (or, on a dry run, would be).
    pub moved: usize,
    /// Left in the dead-letter queue: not matching the filter.
    pub skipped: usize,
    /// Matching, but the send (or the delete after it) failed: still in the dead-letter queue
    /// (a failed delete after a good send leaves a copy that lead-sync will find done).
    pub failed: usize,
    /// One line per matching message: what was done with it.
    pub lines: Vec<String>,
}

/// The FIFO group of a lead event body: `<tenant>:<customer>` (the producer's), else the tenant.
fn group_of(body: &Value) -> Option<String> {
    let tenant = body.get("tenant_id")?.as_str()?;
    let group = match body.pointer("/customer/id").and_then(Value::as_str) {
        Some(c) => format!("{tenant}:{c}"),
        None => tenant.to_owned(),
    };
    Some(
        group
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(128)
            .collect(),
    )
}

/// Moves matching dead-lettered messages back to the lead queue, each deleted from the
/// dead-letter queue only after its send succeeded. Reads until the dead-letter queue has
/// nothing left it has not seen in this run.
pub async fn redrive(
    sqs: &aws_sdk_sqs::Client,
    dead_letter_queue_url: &str,
    lead_queue_url: &str,
    filter: &RedriveFilter,
) -> Result<Redriven, AdminError> {
    let mut done = Redriven::default();
    let mut seen = HashSet::new();
    let run = uuid::Uuid::new_v4().simple().to_string();
    loop {
        let out = sqs
            .receive_message()
            .queue_url(dead_letter_queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(60)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(|e| sqs_err(aws_sdk_sqs::error::DisplayErrorContext(e)))?;
        let (fresh, again): (Vec<_>, Vec<_>) = out
            .messages
            .unwrap_or_default()
            .into_iter()
            .partition(|m| m.message_id().is_some_and(|id| seen.insert(id.to_owned())));
        // Seen before in this run (put back earlier): put back again, and stop when that is
        // all there is.
        for m in &again {
            release(
                sqs,
                dead_letter_queue_url,
                m.receipt_handle().unwrap_or_default(),
            )
            .await;
        }
        if fresh.is_empty() {
            return Ok(done);
        }
        for m in fresh {
            move_one(
                sqs,
                dead_letter_queue_url,
                lead_queue_url,
                filter,
                &run,
                &m,
                &mut done,
            )
            .await;
        }
    }
}

/// One dead-lettered message: left (not matching, or a dry run), or sent to the lead queue and
/// then deleted from the dead-letter queue.
async fn move_one(
    sqs: &aws_sdk_sqs::Client,
    dead_letter_queue_url: &str,
    lead_queue_url: &str,
    filter: &RedriveFilter,
    run: &str,
    m: &aws_sdk_sqs::types::Message,
    done: &mut Redriven,
) {
    let id = m.message_id().unwrap_or("?").to_owned();
    let body_text = m.body().unwrap_or_default().to_owned();
    let body: Value = serde_json::from_str(&body_text).unwrap_or(Value::Null);
    let reason = m
        .message_attributes()
        .and_then(|a| a.get("reason"))
        .and_then(|v| v.string_value())
        .unwrap_or_default()
        .to_owned();
    let tenant_ok = filter
        .tenant
        .as_ref()
        .is_none_or(|t| body.get("tenant_id").and_then(Value::as_str) == Some(t.as_str()));
    let reason_ok = filter
        .reason
        .as_ref()
        .is_none_or(|r| reason.to_lowercase().contains(&r.to_lowercase()));
    let handle = m.receipt_handle().unwrap_or_default().to_owned();
    if !(tenant_ok && reason_ok) {
        done.skipped += 1;
        release(sqs, dead_letter_queue_url, &handle).await;
        return;
    }
    if filter.dry_run {
        done.moved += 1;
        done.lines.push(format!("would move {id} ({reason})"));
        release(sqs, dead_letter_queue_url, &handle).await;
        return;
    }
    let mut send = sqs
        .send_message()
        .queue_url(lead_queue_url)
        .message_body(&body_text);
    if lead_queue_url.ends_with(".fifo") {
        let dedup: String = format!("redrive-{run}-{id}").chars().take(128).collect();
        send = send
            .message_group_id(group_of(&body).unwrap_or_else(|| "bitrix-admin".into()))
            .message_deduplication_id(dedup);
    }
    if let Err(e) = send.send().await {
        let e = aws_sdk_sqs::error::DisplayErrorContext(e);
        done.lines.push(format!("not moved {id}: {e}"));
        done.failed += 1;
        release(sqs, dead_letter_queue_url, &handle).await;
        return;
    }
    let deleted = sqs
        .delete_message()
        .queue_url(dead_letter_queue_url)
        .receipt_handle(&handle)
        .send()
        .await;
    match deleted {
        Ok(_) => {
            done.moved += 1;
            done.lines.push(format!("moved {id} ({reason})"));
        }
        Err(e) => {
            let e = aws_sdk_sqs::error::DisplayErrorContext(e);
            done.lines.push(format!("sent but not deleted {id}: {e}"));
            done.failed += 1;
        }
    }
}

/// Puts a message back at once (best effort: otherwise it comes back after its visibility).
async fn release(sqs: &aws_sdk_sqs::Client, queue_url: &str, handle: &str) {
    let _ = sqs
        .change_message_visibility()
        .queue_url(queue_url)
        .receipt_handle(handle)
        .visibility_timeout(0)
        .send()
        .await;
}

/// Replays every parked event of the tenant to the lead queue now (in batches, oldest first).
pub async fn replay_tenant(
    store: &Store,
    sqs: &aws_sdk_sqs::Client,
    lead_queue_url: &str,
    t: &TenantId,
) -> Result<usize, AdminError> {
    let mut sent = 0;
    loop {
        let r = replay::replay_parked(store, sqs, lead_queue_url, t).await?;
        sent += r.sent;
        if r.left == 0 {
            return Ok(sent);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
