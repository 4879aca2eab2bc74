//! A local stand-in for Lambda's SQS event source mapping (ESM): it long-polls the FIFO lead
//! queue, hands each batch to `lead-sync` as an `SQSEvent`, and acts on the function's partial
//! batch response the way the ESM does with `ReportBatchItemFailures`: delete what succeeded,
//! leave the failed items to come back when their visibility runs out (the function itself sets
//! that visibility through `ChangeMessageVisibility`), and move a message whose receive count went
//! past the redrive policy's `maxReceiveCount` to the dead-letter queue.
//!
//! The logic lives here, not in the `sqs-poller` binary, so the end-to-end tests can run the very
//! same poller in-process and the benchmark can point it at its own runtime API.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde_json::{Value, json};

/// Why a poll/invoke round went wrong. Every variant is retryable from the poller's point of view:
/// the messages stay in the queue and come back after their visibility timeout.
#[derive(Debug, thiserror::Error)]
pub enum PollerError {
    #[error("SQS {op} failed: {source}")]
    Sqs {
        op: &'static str,
        #[source]
        source: Box<aws_sdk_sqs::Error>,
    },
    #[error("the queue's attributes are unusable: {0}")]
    QueueAttributes(String),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
}

fn sqs_err<E: Into<aws_sdk_sqs::Error>>(op: &'static str) -> impl FnOnce(E) -> PollerError {
    move |e| PollerError::Sqs {
        op,
        source: Box::new(e.into()),
    }
}

/// Why an invocation of the function failed as a whole (the ESM then treats the whole batch as
/// failed: nothing is deleted).
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("could not reach the function: {0}")]
    Unreachable(String),
    #[error("the function answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("the function failed: {error_type}: {message}")]
    FunctionError { error_type: String, message: String },
    #[error("the function's answer is not a batch response: {0}")]
    BadResponse(String),
}

/// How a batch reaches the function: over HTTP (cargo lambda watch's invoke API) or through the
/// benchmark's own runtime API. Returns the function's raw JSON answer.
pub trait Invoker: Send + Sync {
    fn invoke(&self, event: Value) -> impl Future<Output = Result<Value, InvokeError>> + Send;
}

/// Invokes a function through the Lambda `Invoke` HTTP API that `cargo lambda watch` serves:
/// `POST {base}/2015-03-31/functions/{name}/invocations`.
#[derive(Clone, Debug)]
pub struct HttpInvoker {
    client: reqwest::Client,
    url: String,
}

impl HttpInvoker {
    /// `base` like `http://127.0.0.1:9000`; `function` like `lead-sync`. The timeout covers a
    /// cold compile by cargo lambda watch on the first call.
    pub fn new(base: &str, function: &str, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .unwrap_or_default();
        Self {
            client,
            url: format!(
                "{}/2015-03-31/functions/{function}/invocations",
                base.trim_end_matches('/')
            ),
        }
    }
}

impl Invoker for HttpInvoker {
    async fn invoke(&self, event: Value) -> Result<Value, InvokeError> {
        let resp = self
            .client
            .post(&self.url)
            .json(&event)
            .send()
            .await
            .map_err(|e| InvokeError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp
            .text()
            .await
            .map_err(|e| InvokeError::Unreachable(e.to_string()))?;
        if !(200..300).contains(&status) {
            return Err(InvokeError::Status {
                status,
                body: truncate(&text, 300),
            });
        }
        parse_function_answer(&text)
    }
}

/// Lambda's answer body: empty or `null` means success with no report; an object with
/// `errorType` is a function error; anything else is the handler's JSON.
pub fn parse_function_answer(text: &str) -> Result<Value, InvokeError> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let v: Value = serde_json::from_str(text)
        .map_err(|e| InvokeError::BadResponse(format!("{e}: {}", truncate(text, 200))))?;
    if let Some(t) = v.get("errorType").and_then(Value::as_str) {
        return Err(InvokeError::FunctionError {
            error_type: t.to_owned(),
            message: v
                .get("errorMessage")
                .and_then(Value::as_str)
                .map(|m| truncate(m, 300))
                .unwrap_or_default(),
        });
    }
    Ok(v)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// What the ESM does with a batch response, decided from the ids alone: `Ok(failed ids)`, or
/// `Err(reason)` when the whole batch counts as failed. AWS treats a response naming an id that
/// is not in the batch (or an empty id) as a failure of the whole batch; `null`/no
/// `batchItemFailures` means every item succeeded.
pub fn failed_ids(answer: &Value, batch_ids: &HashSet<String>) -> Result<HashSet<String>, String> {
    let Some(list) = answer.get("batchItemFailures") else {
        return Ok(HashSet::new());
    };
    if list.is_null() {
        return Ok(HashSet::new());
    }
    let Some(items) = list.as_array() else {
        return Err("batchItemFailures is not a list".into());
    };
    let mut failed = HashSet::new();
    for item in items {
        match item.get("itemIdentifier").and_then(Value::as_str) {
            Some(id) if batch_ids.contains(id) => {
                failed.insert(id.to_owned());
            }
            Some(id) => return Err(format!("unknown itemIdentifier {id:?}")),
            None => return Err("a batch item failure has no itemIdentifier".into()),
        }
    }
    Ok(failed)
}

/// Knobs of the stand-in ESM. Defaults match the SAM template's mapping (batch size 10).
#[derive(Clone, Debug)]
pub struct PollerOptions {
    /// Messages per `ReceiveMessage` and so per invocation (1..=10).
    pub batch_size: i32,
    /// Long-poll wait per receive; short keeps Ctrl-C and test shutdown snappy.
    pub wait_time_secs: i32,
    /// With `wait_time_secs: 0`, the pause after a receive that found nothing. moto's long poll
    /// spins (holding its interpreter) while the only visible messages belong to FIFO groups
    /// with a message in flight, which slows every other request it serves; many loops
    /// long-polling a queue held up by one slow group therefore slow the whole local stack,
    /// which real SQS does not. Short polls with this pause avoid that.
    pub idle_pause: Duration,
    /// Concurrent receive/invoke loops (the ESM's maximum concurrency).
    pub concurrency: usize,
    /// Region written into each record's `awsRegion`.
    pub region: String,
    /// The dead-letter queue's URL when the caller knows it. Otherwise it is looked up with
    /// `GetQueueUrl`, which the real event source mapping never calls (so a poller running with
    /// a function's own credentials passes the URL, and the role needs no such permission).
    pub dead_letter_queue_url: Option<String>,
}

impl Default for PollerOptions {
    fn default() -> Self {
        Self {
            batch_size: 10,
            wait_time_secs: 1,
            idle_pause: Duration::ZERO,
            concurrency: 1,
            region: "us-east-1".into(),
            dead_letter_queue_url: None,
        }
    }
}

/// Counters, read at any time (progress lines, reports, the benchmark).
#[derive(Debug, Default)]
pub struct PollerStats {
    pub receives: AtomicU64,
    pub messages: AtomicU64,
    pub invocations: AtomicU64,
    pub invoke_errors: AtomicU64,
    pub items_failed: AtomicU64,
    pub deleted: AtomicU64,
    pub redriven: AtomicU64,
}

/// A copy of [`PollerStats`] at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct PollerSnapshot {
    pub receives: u64,
    pub messages: u64,
    pub invocations: u64,
    pub invoke_errors: u64,
    pub items_failed: u64,
    pub deleted: u64,
    pub redriven: u64,
}

impl PollerStats {
    pub fn snapshot(&self) -> PollerSnapshot {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PollerSnapshot {
            receives: g(&self.receives),
            messages: g(&self.messages),
            invocations: g(&self.invocations),
            invoke_errors: g(&self.invoke_errors),
            items_failed: g(&self.items_failed),
            deleted: g(&self.deleted),
            redriven: g(&self.redriven),
        }
    }
}

/// What one receive/invoke round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BatchReport {
    pub received: usize,
    pub deleted: usize,
    pub failed: usize,
    pub redriven: usize,
    /// Set when the invocation failed as a whole (nothing deleted).
    pub error: Option<String>,
}

/// The stand-in event source mapping for one queue and one function.
pub struct Poller<I> {
    sqs: aws_sdk_sqs::Client,
    queue_url: String,
    queue_arn: String,
    /// From the queue's redrive policy: (maxReceiveCount, DLQ url).
    redrive: Option<(u32, String)>,
    invoker: I,
    opts: PollerOptions,
    stats: Arc<PollerStats>,
}

impl<I: Invoker> Poller<I> {
    /// Reads the queue's ARN and redrive policy once (as the ESM knows its source queue).
    pub async fn new(
        sqs: aws_sdk_sqs::Client,
        queue_url: String,
        invoker: I,
        opts: PollerOptions,
    ) -> Result<Self, PollerError> {
        let attrs = sqs
            .get_queue_attributes()
            .queue_url(&queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(sqs_err("GetQueueAttributes"))?
            .attributes
            .unwrap_or_default();
        let queue_arn = attrs
            .get(&QueueAttributeName::QueueArn)
            .cloned()
            .ok_or_else(|| PollerError::QueueAttributes("no QueueArn".into()))?;
        let redrive = match attrs.get(&QueueAttributeName::RedrivePolicy) {
            None => None,
            Some(policy) => {
                let p: Value = serde_json::from_str(policy)
                    .map_err(|e| PollerError::QueueAttributes(format!("RedrivePolicy: {e}")))?;
                let max = match &p["maxReceiveCount"] {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.parse().ok(),
                    _ => None,
                }
                .ok_or_else(|| PollerError::QueueAttributes("no maxReceiveCount".into()))?;
                let dlq_url = match &opts.dead_letter_queue_url {
                    Some(url) => url.clone(),
                    None => {
                        let dlq_arn = p["deadLetterTargetArn"].as_str().unwrap_or_default();
                        let dlq_name = dlq_arn.rsplit(':').next().unwrap_or_default();
                        sqs.get_queue_url()
                            .queue_name(dlq_name)
                            .send()
                            .await
                            .map_err(sqs_err("GetQueueUrl"))?
                            .queue_url
                            .ok_or_else(|| PollerError::QueueAttributes("DLQ has no url".into()))?
                    }
                };
                Some((u32::try_from(max).unwrap_or(u32::MAX), dlq_url))
            }
        };
        Ok(Self {
            sqs,
            queue_url,
            queue_arn,
            redrive,
            invoker,
            opts,
            stats: Arc::new(PollerStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<PollerStats> {
        self.stats.clone()
    }

    pub fn dead_letter_queue_url(&self) -> Option<&str> {
        self.redrive.as_ref().map(|(_, u)| u.as_str())
    }

    /// Runs `opts.concurrency` receive/invoke loops until `shutdown` completes. A round that fails
    /// is logged and the loop goes on after a short pause, as the ESM keeps polling.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        let loops = (0..self.opts.concurrency.max(1)).map(|_| async {
            loop {
                match self.poll_once().await {
                    Ok(r) if r.received > 0 => {
                        tracing::debug!(?r, "batch handled");
                        if let Some(e) = &r.error {
                            tracing::warn!(error = %e, "invocation failed; batch left in the queue");
                        }
                    }
                    Ok(_) => {
                        if !self.opts.idle_pause.is_zero() {
                            tokio::time::sleep(self.opts.idle_pause).await;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "poll round failed");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
        });
        tokio::select! {
            _ = futures::future::join_all(loops) => {}
            () = shutdown => {}
        }
    }

    /// One round: receive a batch, redrive what is past `maxReceiveCount`, invoke, delete what
    /// succeeded.
    pub async fn poll_once(&self) -> Result<BatchReport, PollerError> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(self.opts.batch_size.clamp(1, 10))
            .wait_time_seconds(self.opts.wait_time_secs.clamp(0, 20))
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(sqs_err("ReceiveMessage"))?;
        self.stats.receives.fetch_add(1, Ordering::Relaxed);
        let messages = out.messages.unwrap_or_default();
        let mut report = BatchReport {
            received: messages.len(),
            ..BatchReport::default()
        };
        if messages.is_empty() {
            return Ok(report);
        }
        self.stats
            .messages
            .fetch_add(messages.len() as u64, Ordering::Relaxed);

        let mut records = Vec::new();
        let mut handles = HashMap::new();
        for m in &messages {
            let attrs = m.attributes.clone().unwrap_or_default();
            let count: u32 = attrs
                .get(&MessageSystemAttributeName::ApproximateReceiveCount)
                .and_then(|c| c.parse().ok())
                .unwrap_or(1);
            if let Some((max, dlq)) = &self.redrive
                && count > *max
            {
                // moto moves such messages itself on receive; this covers a queue that does not.
                self.redrive_one(m, dlq).await?;
                report.redriven += 1;
                continue;
            }
            let (Some(id), Some(handle)) = (m.message_id(), m.receipt_handle()) else {
                continue;
            };
            handles.insert(id.to_owned(), handle.to_owned());
            records.push(sqs_record(m, &self.queue_arn, &self.opts.region));
        }
        if records.is_empty() {
            return Ok(report);
        }
        let ids: HashSet<String> = handles.keys().cloned().collect();
        self.stats.invocations.fetch_add(1, Ordering::Relaxed);
        let answer = self
            .invoker
            .invoke(json!({ "Records": records }))
            .await
            .map_err(|e| e.to_string())
            .and_then(|a| failed_ids(&a, &ids));
        let failed = match answer {
            Ok(f) => f,
            Err(e) => {
                // The whole batch failed: nothing is deleted, every message comes back after
                // its visibility timeout (as with a function error under the real ESM).
                self.stats.invoke_errors.fetch_add(1, Ordering::Relaxed);
                report.failed = ids.len();
                report.error = Some(e);
                return Ok(report);
            }
        };
        report.failed = failed.len();
        self.stats
            .items_failed
            .fetch_add(failed.len() as u64, Ordering::Relaxed);
        for (id, handle) in &handles {
            if failed.contains(id) {
                continue;
            }
            self.sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(handle)
                .send()
                .await
                .map_err(sqs_err("DeleteMessage"))?;
            report.deleted += 1;
            self.stats.deleted.fetch_add(1, Ordering::Relaxed);
        }
        Ok(report)
    }

    async fn redrive_one(
        &self,
        m: &aws_sdk_sqs::types::Message,
        dlq: &str,
    ) -> Result<(), PollerError> {
        let attrs = m.attributes.clone().unwrap_or_default();
        let mut send = self
            .sqs
            .send_message()
            .queue_url(dlq)
            .message_body(m.body().unwrap_or_default());
        if dlq.ends_with(".fifo") {
            let group = attrs
                .get(&MessageSystemAttributeName::MessageGroupId)
                .cloned()
                .unwrap_or_else(|| "redrive".into());
            send = send
                .message_group_id(group)
                .message_deduplication_id(m.message_id().unwrap_or("redrive"));
        }
        send.send().await.map_err(sqs_err("SendMessage"))?;
        if let Some(h) = m.receipt_handle() {
            self.sqs
                .delete_message()
                .queue_url(&self.queue_url)
                .receipt_handle(h)
                .send()
                .await
                .map_err(sqs_err("DeleteMessage"))?;
        }
        self.stats.redriven.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// One record of an `SQSEvent` exactly as Lambda's ESM writes it (camelCase keys, system
/// attributes as strings, FIFO's `MessageGroupId`/`MessageDeduplicationId`/`SequenceNumber`).
pub fn sqs_record(m: &aws_sdk_sqs::types::Message, queue_arn: &str, region: &str) -> Value {
    let attrs: serde_json::Map<String, Value> = m
        .attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.as_str().to_owned(), Value::String(v)))
        .collect();
    let message_attributes: serde_json::Map<String, Value> = m
        .message_attributes
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| {
            (
                k,
                json!({
                    "stringValue": v.string_value,
                    "dataType": v.data_type,
                    "stringListValues": [],
                    "binaryListValues": [],
                }),
            )
        })
        .collect();
    json!({
        "messageId": m.message_id(),
        "receiptHandle": m.receipt_handle(),
        "body": m.body(),
        "attributes": attrs,
        "messageAttributes": message_attributes,
        "md5OfBody": m.md5_of_body(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    })
}

/// Waits until the queue holds no message (visible, in flight or delayed) for `settle`, or the
/// deadline passes; returns whether it drained. The demo and the tests use this to know that
/// every published event has been handled (or parked, or dead-lettered).
pub async fn wait_drained(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    settle: Duration,
    deadline: Duration,
    mut progress: impl FnMut(u64),
) -> Result<bool, PollerError> {
    let start = Instant::now();
    let mut empty_since: Option<Instant> = None;
    loop {
        let n = queue_depth(sqs, queue_url).await?;
        progress(n);
        if n == 0 {
            let since = *empty_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= settle {
                return Ok(true);
            }
        } else {
            empty_since = None;
        }
        if start.elapsed() > deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Visible + in-flight + delayed messages of a queue.
pub async fn queue_depth(sqs: &aws_sdk_sqs::Client, queue_url: &str) -> Result<u64, PollerError> {
    let attrs = sqs
        .get_queue_attributes()
        .queue_url(queue_url)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
        .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesDelayed)
        .send()
        .await
        .map_err(sqs_err("GetQueueAttributes"))?
        .attributes
        .unwrap_or_default();
    Ok(attrs.values().filter_map(|v| v.parse::<u64>().ok()).sum())
}

/// A message seen in a (dead-letter) queue: its body and the `reason` attribute lead-sync puts
/// on what it dead-letters (absent on messages the redrive policy moved).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peeked {
    pub body: String,
    pub reason: Option<String>,
}

/// Reads every message of a (dead-letter) queue without consuming it for good: each is received
/// with a zero visibility timeout, so it stays there. For reports and assertions.
pub async fn peek_all(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> Result<Vec<Peeked>, PollerError> {
    let mut seen: HashMap<String, Peeked> = HashMap::new();
    for _ in 0..20 {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(0)
            .message_attribute_names("All")
            .send()
            .await
            .map_err(sqs_err("ReceiveMessage"))?;
        let msgs = out.messages.unwrap_or_default();
        let before = seen.len();
        for m in msgs {
            let reason = m
                .message_attributes
                .as_ref()
                .and_then(|a| a.get("reason"))
                .and_then(|v| v.string_value.clone());
            if let Some(id) = m.message_id {
                seen.entry(id).or_insert(Peeked {
                    body: m.body.unwrap_or_default(),
                    reason,
                });
            }
        }
        if seen.len() == before {
            break;
        }
    }
    Ok(seen.into_values().collect())
}

/// Creates a FIFO queue and its FIFO dead-letter queue (redrive after `max_receive_count`
/// receives), as the SAM template does, for runs that need their own redrive setting (the
/// benchmark uses the template's 5, the end-to-end tests more, so a storm's retries never park).
/// Returns (queue url, dlq url).
pub async fn create_queue_pair(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    max_receive_count: u32,
    visibility_timeout_secs: u32,
) -> Result<(String, String), String> {
    fn err<E: Into<aws_sdk_sqs::Error>>(op: &'static str) -> impl FnOnce(E) -> String {
        move |e| format!("{op}: {:?}", e.into())
    }
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("{name}-dlq.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .map_err(err("CreateQueue dlq"))?
        .queue_url
        .ok_or("no dlq url")?;
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(err("GetQueueAttributes"))?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or("no dlq arn")?;
    let redrive = json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": max_receive_count.to_string(),
    });
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("{name}.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(
            QueueAttributeName::VisibilityTimeout,
            visibility_timeout_secs.to_string(),
        )
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .map_err(err("CreateQueue"))?
        .queue_url
        .ok_or("no queue url")?;
    Ok((queue_url, dlq_url))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn batch_responses_are_read_like_the_esm_does() {
        let batch = ids(&["a", "b", "c"]);
        // (answer, failed ids or None = whole batch failed, why)
        type Row = (Value, Option<HashSet<String>>, &'static str);
        let rows: Vec<Row> = vec![
            (Value::Null, Some(ids(&[])), "null answer: all succeeded"),
            (json!({}), Some(ids(&[])), "no list: all succeeded"),
            (
                json!({"batchItemFailures": []}),
                Some(ids(&[])),
                "empty list",
            ),
            (
                json!({"batchItemFailures": [{"itemIdentifier": "b"}, {"itemIdentifier": "c"}]}),
                Some(ids(&["b", "c"])),
                "two failed",
            ),
            (
                json!({"batchItemFailures": [{"itemIdentifier": "zzz"}]}),
                None,
                "unknown id fails the whole batch",
            ),
            (
                json!({"batchItemFailures": [{"itemIdentifier": null}]}),
                None,
                "missing id fails the whole batch",
            ),
            (json!({"batchItemFailures": "b"}), None, "not a list"),
        ];
        for (answer, want, why) in rows {
            let got = failed_ids(&answer, &batch).ok();
            assert_eq!(got, want, "{why}");
        }
    }

    #[test]
    fn function_errors_are_told_apart_from_answers() {
        assert_eq!(parse_function_answer("").unwrap(), Value::Null);
        assert!(matches!(
            parse_function_answer(r#"{"errorType":"Panic","errorMessage":"boom"}"#),
            Err(InvokeError::FunctionError { .. })
        ));
        assert!(matches!(
            parse_function_answer("<html>"),
            Err(InvokeError::BadResponse(_))
        ));
        let ok = parse_function_answer(r#"{"batchItemFailures":[]}"#).unwrap();
        assert_eq!(ok["batchItemFailures"], json!([]));
    }

    #[test]
    fn records_parse_as_the_runtime_would() {
        let m = aws_sdk_sqs::types::Message::builder()
            .message_id("m-1")
            .receipt_handle("rh-1")
            .body(r#"{"x":1}"#)
            .md5_of_body("abc")
            .attributes(MessageSystemAttributeName::ApproximateReceiveCount, "2")
            .attributes(MessageSystemAttributeName::MessageGroupId, "t:c")
            .build();
        let rec = sqs_record(&m, "arn:aws:sqs:us-east-1:123456789012:q.fifo", "us-east-1");
        let event: aws_lambda_events::event::sqs::SqsEvent =
            serde_json::from_value(json!({ "Records": [rec] })).expect("valid SQSEvent");
        let r = &event.records[0];
        assert_eq!(r.message_id.as_deref(), Some("m-1"));
        assert_eq!(r.body.as_deref(), Some(r#"{"x":1}"#));
        assert_eq!(r.attributes["ApproximateReceiveCount"], "2");
        assert_eq!(r.attributes["MessageGroupId"], "t:c");
        assert_eq!(r.event_source.as_deref(), Some("aws:sqs"));
    }
}
