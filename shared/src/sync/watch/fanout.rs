//! lead-watch's two triggers. Many thousands of tenants must not be walked in series by one
//! invocation, so the work is split through a queue:
//!
//! - **Scheduled** (EventBridge Scheduler, every minute by default): [`FanOut`] reads the watch
//!   index shard by shard and sends one small work item `{"tenant_id"}` per due tenant to
//!   `WATCH_QUEUE_URL` (a standard queue: work items have no order). Due: `active`, and synced
//!   within the last day or opted in (`watch_opt_in` on the integration item).
//! - **SQS** (that queue): [`WatchConsumer`] watches the batch's tenants in parallel, up to
//!   [`MAX_PARALLEL_TENANTS`] per invocation, and more invocations run side by side within the
//!   event source mapping's maximum concurrency. Each call still takes its token from its own
//!   portal's budget, so parallel tenants never push one portal over its limit.
//!
//! Failures: a portal that fails (rate limit, timeouts, a revoked token) fails its own round
//! only; the work item is acknowledged and the tenant is simply due again next round, from the
//! same cursor. A failure on the operator's side (DynamoDB, KMS, the outbound queue) reports
//! the item failed (a partial batch response), so SQS delivers it again and, if it keeps
//! failing, the dead-letter queue and its alarm show it. A panic fails its item only.

use std::panic::AssertUnwindSafe;
use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use futures::{FutureExt, StreamExt};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tracing::Instrument;

use super::round::{ROUND_TIME, Watcher};
use crate::store::{Store, all_watch_shards};
use crate::sync::connections::Connections;
use crate::sync::startup::StartError;
use crate::tenant::TenantId;

/// Tenants watched at once by one invocation (each waits mostly on its own portal).
pub const MAX_PARALLEL_TENANTS: usize = 16;
/// Integrations that synced this recently are due (older ones only when opted in).
pub const RECENT_SYNC: time::Duration = time::Duration::days(1);
/// Work-item sends in flight at once while fanning out.
const SEND_CONCURRENCY: usize = 8;

/// One work item on the watch queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchWork {
    pub tenant_id: String,
}

/// What a scheduled run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FanOutReport {
    pub candidates: usize,
    pub due: usize,
    pub enqueued: usize,
    pub failed: usize,
}

/// The scheduled side: due tenants to the watch queue.
pub struct FanOut {
    store: Store,
    sqs: aws_sdk_sqs::Client,
    watch_queue_url: String,
}

/// Why a scheduled run did not enqueue every due tenant (the schedule's retry runs it again;
/// a tenant enqueued twice is watched twice, from the same cursor, with no double event).
#[derive(Debug, thiserror::Error)]
pub enum FanOutError {
    #[error("reading the watch index: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("{failed} of {due} watch work items could not be enqueued")]
    Enqueue { failed: usize, due: usize },
}

impl FanOut {
    pub fn new(store: Store, sqs: aws_sdk_sqs::Client, watch_queue_url: String) -> Self {
        Self {
            store,
            sqs,
            watch_queue_url,
        }
    }

    /// Every due tenant, from every shard of the watch index.
    pub async fn due_tenants(
        &self,
        now: OffsetDateTime,
    ) -> Result<(usize, Vec<TenantId>), FanOutError> {
        let mut candidates = 0;
        let mut due = Vec::new();
        for shard in all_watch_shards() {
            let mut start = None;
            loop {
                let (page, next) = self.store.watch_candidates(&shard, start).await?;
                candidates += page.len();
                due.extend(
                    page.into_iter()
                        .filter(|c| c.is_due(now, RECENT_SYNC))
                        .map(|c| c.tenant),
                );
                match next {
                    Some(k) => start = Some(k),
                    None => break,
                }
            }
        }
        Ok((candidates, due))
    }

    /// The scheduled run: one work item per due tenant.
    #[tracing::instrument(skip_all)]
    pub async fn run(&self, now: OffsetDateTime) -> Result<FanOutReport, FanOutError> {
        let (candidates, due) = self.due_tenants(now).await?;
        let chunks: Vec<&[TenantId]> = due.chunks(10).collect();
        let failed: usize = futures::stream::iter(chunks)
            .map(|chunk| self.send(chunk))
            .buffer_unordered(SEND_CONCURRENCY)
            .collect::<Vec<usize>>()
            .await
            .into_iter()
            .sum();
        let report = FanOutReport {
            candidates,
            due: due.len(),
            enqueued: due.len() - failed,
            failed,
        };
        tracing::info!(?report, "watch work enqueued");
        if failed > 0 {
            return Err(FanOutError::Enqueue {
                failed,
                due: due.len(),
            });
        }
        Ok(report)
    }

    /// Sends one batch of work items; returns how many were not taken.
    async fn send(&self, tenants: &[TenantId]) -> usize {
        let entries: Vec<SendMessageBatchRequestEntry> = tenants
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let body = serde_json::to_string(&WatchWork {
                    tenant_id: t.as_str().to_owned(),
                })
                .ok()?;
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(body)
                    .build()
                    .ok()
            })
            .collect();
        let built = entries.len();
        match self
            .sqs
            .send_message_batch()
            .queue_url(&self.watch_queue_url)
            .set_entries(Some(entries))
            .send()
            .await
        {
            Ok(out) => tenants.len() - built + out.failed().len(),
            Err(e) => {
                tracing::error!(error = %aws_sdk_sqs::Error::from(e), operator_alarm = true, "enqueueing watch work failed");
                tenants.len()
            }
        }
    }
}

/// The SQS side: one batch of work items in, a partial batch response out.
pub struct WatchConsumer {
    watcher: Watcher,
}

impl WatchConsumer {
    pub fn new(watcher: Watcher) -> Self {
        Self { watcher }
    }

    pub fn watcher(&self) -> &Watcher {
        &self.watcher
    }

    /// Watches the batch's tenants in parallel; the response lists exactly the items SQS must
    /// deliver again (operator-side failures, panics, items with no time left to start).
    pub async fn process(&self, batch: SqsEvent, deadline: Option<Instant>) -> SqsBatchResponse {
        let failed: Vec<Option<String>> = futures::stream::iter(batch.records.iter())
            .map(|record| self.process_record(record, deadline))
            .buffer_unordered(MAX_PARALLEL_TENANTS)
            .collect()
            .await;
        let mut response = SqsBatchResponse::default();
        for id in failed.into_iter().flatten() {
            response.add_failure(id);
        }
        response
    }

    /// `Some(message id)` when the item must come back.
    async fn process_record(
        &self,
        record: &SqsMessage,
        deadline: Option<Instant>,
    ) -> Option<String> {
        let id = record.message_id.clone().unwrap_or_default();
        let Some(work) = record
            .body
            .as_deref()
            .and_then(|b| serde_json::from_str::<WatchWork>(b).ok())
        else {
            // Only the scheduled run writes this queue: a body it did not write is dropped.
            tracing::error!(message_id = %id, "a watch work item that does not parse: dropped");
            return None;
        };
        let Ok(tenant) = TenantId::parse(&work.tenant_id) else {
            tracing::error!(message_id = %id, "a watch work item with an invalid tenant id: dropped");
            return None;
        };
        let budget = match deadline {
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) if left > ROUND_TIME => left - Duration::from_secs(2),
                _ => return Some(id), // no time to start: back at once
            },
            None => ROUND_TIME,
        };
        let span = tracing::info_span!("watch_tenant", tenant_id = %tenant, message_id = %id);
        let round = AssertUnwindSafe(tokio::time::timeout(
            budget,
            self.watcher.watch_tenant(&tenant),
        ))
        .catch_unwind()
        .instrument(span.clone())
        .await;
        match round {
            Ok(Ok(Ok(_))) => None,
            Ok(Ok(Err(e))) if e.is_operator_side() => {
                tracing::error!(parent: &span, error = %e, operator_alarm = true, "watch round failed on the operator's side; retried");
                Some(id)
            }
            Ok(Ok(Err(e))) => {
                tracing::info!(parent: &span, error = %e, "watch round failed; the tenant is watched again next round");
                None
            }
            Ok(Err(_)) => {
                tracing::warn!(parent: &span, "watch round ran out of time; retried");
                Some(id)
            }
            Err(_) => {
                tracing::error!(parent: &span, "watch round panicked; retried");
                Some(id)
            }
        }
    }
}

/// lead-watch's handler: a scheduled event fans out, an SQS batch is watched.
pub struct LeadWatch {
    pub fan_out: FanOut,
    pub consumer: WatchConsumer,
}

/// What lead-watch answers.
#[derive(Debug)]
pub enum LeadWatchAnswer {
    FannedOut(FanOutReport),
    Batch(SqsBatchResponse),
}

impl LeadWatch {
    /// Dispatches on the event's shape: SQS batches carry `Records`; anything else is the
    /// schedule's (EventBridge Scheduler sends the target's input, which the template leaves
    /// as its default object).
    pub async fn handle(
        &self,
        event: serde_json::Value,
        deadline: Option<Instant>,
    ) -> Result<serde_json::Value, LeadWatchError> {
        if event.get("Records").is_some() {
            let batch: SqsEvent =
                serde_json::from_value(event).map_err(|_| LeadWatchError::BadEvent)?;
            let response = self.consumer.process(batch, deadline).await;
            return serde_json::to_value(response).map_err(|_| LeadWatchError::BadEvent);
        }
        let report = self.fan_out.run(OffsetDateTime::now_utc()).await?;
        serde_json::to_value(report).map_err(|_| LeadWatchError::BadEvent)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeadWatchError {
    #[error("the event is neither an SQS batch nor a scheduled run")]
    BadEvent,
    #[error(transparent)]
    FanOut(#[from] FanOutError),
}

/// Everything lead-watch needs, built once per container from the environment (no network
/// I/O here).
pub async fn lead_watch_from_env() -> Result<LeadWatch, StartError> {
    let cfg = crate::config::Config::from_env()?;
    let aws = crate::aws::AwsClients::from_env().await;
    lead_watch_with(&cfg, &aws)
}

/// The same, from explicit configuration and clients (tests).
pub fn lead_watch_with(
    cfg: &crate::config::Config,
    aws: &crate::aws::AwsClients,
) -> Result<LeadWatch, StartError> {
    let changes = cfg.require_lead_changes_queue_url()?.to_owned();
    let work = cfg.require_watch_queue_url()?.to_owned();
    let store = Store::new(aws.dynamodb.clone(), cfg.table_name.clone());
    let vault = crate::vault::Vault::new(aws.kms.clone(), cfg.kms_key_id.clone());
    let guard = crate::mcp::UrlGuard::from_config(cfg);
    let mcp = crate::mcp::McpClient::new(guard.clone(), crate::mcp::McpClientOptions::default())?;
    let conns = Connections::new(
        vault,
        mcp,
        guard,
        cfg.mcp_tool_map.clone(),
        cfg.token_cache_ttl,
    );
    let watcher = Watcher::new(store.clone(), conns, aws.sqs.clone(), changes);
    Ok(LeadWatch {
        fan_out: FanOut::new(store, aws.sqs.clone(), work),
        consumer: WatchConsumer::new(watcher),
    })
}
