//! lead-watch's round played locally as AWS runs it: EventBridge Scheduler's invocation (the
//! function fans out one work item per due tenant to the watch queue), then the watch queue's
//! event source mapping (the poller) hands the work items to the same function. And the
//! consumer's side: what arrived on the outbound `lead.changed` queue.

use std::time::Duration;

use serde_json::{Value, json};

use super::poller::{HttpInvoker, Poller, PollerOptions, parse_function_answer};

/// One round through `cargo lambda watch` at `base`; returns the work items handled.
pub async fn watch_round(
    base: &str,
    sqs: &aws_sdk_sqs::Client,
    watch_queue_url: &str,
) -> Result<usize, String> {
    let url = format!("{base}/2015-03-31/functions/lead-watch/invocations");
    let text = reqwest::Client::new()
        .post(&url)
        .json(&json!({}))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .map_err(|e| format!("invoke lead-watch: {e}"))?
        .text()
        .await
        .map_err(|e| format!("lead-watch's answer: {e}"))?;
    let fanned = parse_function_answer(&text).map_err(|e| e.to_string())?;
    tracing::debug!(%fanned, "lead-watch fanned out");
    let esm = Poller::new(
        sqs.clone(),
        watch_queue_url.to_owned(),
        HttpInvoker::new(base, "lead-watch", Duration::from_secs(120)),
        PollerOptions {
            wait_time_secs: 1,
            ..PollerOptions::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut handled = 0;
    loop {
        let r = esm.poll_once().await.map_err(|e| e.to_string())?;
        if let Some(e) = r.error {
            return Err(format!("lead-watch failed a batch as a whole: {e}"));
        }
        if r.received == 0 {
            return Ok(handled);
        }
        handled += r.deleted;
    }
}

/// Every `lead.changed` event on the changes queue now (received and deleted, as a consumer
/// does), with its FIFO group.
pub async fn take_changes(
    sqs: &aws_sdk_sqs::Client,
    changes_queue_url: &str,
) -> Result<Vec<(Value, String)>, String> {
    let mut out = Vec::new();
    loop {
        let got = sqs
            .receive_message()
            .queue_url(changes_queue_url)
            .max_number_of_messages(10)
            .wait_time_seconds(1)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
            )
            .send()
            .await
            .map_err(|e| format!("receive changes: {}", aws_sdk_sqs::Error::from(e)))?;
        let messages = got.messages.unwrap_or_default();
        if messages.is_empty() {
            return Ok(out);
        }
        for m in messages {
            let ev: Value = serde_json::from_str(m.body().unwrap_or("{}")).unwrap_or(Value::Null);
            let group = m
                .attributes()
                .and_then(|a| {
                    a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                })
                .cloned()
                .unwrap_or_default();
            sqs.delete_message()
                .queue_url(changes_queue_url)
                .set_receipt_handle(m.receipt_handle)
                .send()
                .await
                .map_err(|e| format!("delete a change: {}", aws_sdk_sqs::Error::from(e)))?;
            out.push((ev, group));
        }
    }
}
