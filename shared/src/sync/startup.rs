//! What lead-sync builds once per container: configuration, clients, the engine and the batch
//! processor. No network I/O happens here: AWS credentials and MCP sessions are set up on first
//! use, so a cold start pays only for what the first event needs.

use super::SyncEngine;
use super::batch::BatchProcessor;

/// Why lead-sync could not start: a missing or invalid variable, or an unusable MCP client.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot build the MCP client: {0}")]
    Mcp(#[from] crate::mcp::McpError),
}

/// Everything lead-sync needs, built once per container from the environment.
/// No network I/O happens here: AWS credentials and MCP sessions are set up on first use.
pub async fn lead_sync_from_env() -> Result<BatchProcessor<SyncEngine>, StartError> {
    let cfg = crate::config::Config::from_env()?;
    let dlq = cfg.require_dead_letter_queue_url()?.to_owned();
    let aws = crate::aws::AwsClients::from_env().await;
    Ok(lead_sync_with(
        &cfg,
        &aws,
        dlq,
        crate::metrics::Metrics::new(),
    )?)
}

/// The same, from explicit configuration and clients (tests, the benchmark). `metrics`: where
/// the engine and the batch count outcomes, written as EMF lines after each batch
/// ([`crate::metrics::Metrics::off`] for none).
pub fn lead_sync_with(
    cfg: &crate::config::Config,
    aws: &crate::aws::AwsClients,
    dead_letter_queue_url: String,
    metrics: crate::metrics::Metrics,
) -> Result<BatchProcessor<SyncEngine>, crate::mcp::McpError> {
    let store = crate::store::Store::new(aws.dynamodb.clone(), cfg.table_name.clone());
    let vault = crate::vault::Vault::new(aws.kms.clone(), cfg.kms_key_id.clone());
    let mcp = crate::mcp::McpClient::new(
        crate::mcp::UrlGuard::from_config(cfg),
        crate::mcp::McpClientOptions::default(),
    )?;
    let mut engine = SyncEngine::new(cfg, store, vault, mcp).with_metrics(metrics.clone());
    if let Some(queue) = &cfg.lead_queue_url {
        engine = engine.with_replay_queue(aws.sqs.clone(), queue.clone());
    }
    Ok(BatchProcessor::new(
        engine,
        aws.sqs.clone(),
        cfg.lead_queue_url.clone(),
        dead_letter_queue_url,
    )
    .with_max_receive_count(cfg.lead_queue_max_receive_count)
    .with_metrics(metrics))
}
