//! The state every invocation of an HTTP function borrows, built once per container: the
//! configuration, the store, the vault, the MCP client (one connection pool with the SSRF guard)
//! and the SQS client (connect and test re-send parked events to the lead queue).

use crate::aws::AwsClients;
use crate::config::{Config, ConfigError};
use crate::mcp::{McpClient, McpClientOptions, McpError, UrlGuard};
use crate::store::Store;
use crate::vault::Vault;

/// Why a container could not start; the runtime reports it as an init error.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("the MCP HTTP client could not be built")]
    Mcp(#[source] McpError),
}

/// Per-container state, shared by reference with every invocation.
#[derive(Clone, Debug)]
pub struct App {
    pub config: Config,
    pub store: Store,
    pub vault: Vault,
    pub mcp: McpClient,
    pub sqs: aws_sdk_sqs::Client,
}

impl App {
    /// Reads the environment (design.md §7) and builds the AWS clients from the standard SDK
    /// environment; no network I/O happens here.
    pub async fn from_env() -> Result<Self, AppError> {
        let config = Config::from_env()?;
        let clients = AwsClients::from_env().await;
        Self::new(config, &clients)
    }

    /// Builds the state from a configuration and clients (tests pass moto-backed ones).
    pub fn new(config: Config, clients: &AwsClients) -> Result<Self, AppError> {
        let mcp = McpClient::new(UrlGuard::from_config(&config), McpClientOptions::default())
            .map_err(AppError::Mcp)?;
        Ok(Self {
            store: Store::new(clients.dynamodb.clone(), config.table_name.clone()),
            vault: Vault::new(clients.kms.clone(), config.kms_key_id.clone()),
            sqs: clients.sqs.clone(),
            mcp,
            config,
        })
    }

    /// The guard that validates tenant-supplied MCP URLs (same rules as the client's).
    pub fn url_guard(&self) -> UrlGuard {
        UrlGuard::from_config(&self.config)
    }
}
