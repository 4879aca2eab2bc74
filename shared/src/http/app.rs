//! The state every invocation of an HTTP function borrows, built once per container. Two shapes,
//! so each function links and builds only what its route uses:
//! - [`StoreApp`] (status, disconnect): the configuration and the DynamoDB store;
//! - [`App`] (connect, test): also the vault (KMS), the MCP client (one connection pool with the
//!   SSRF guard) and the SQS client (a pass re-sends parked events to the lead queue).

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

/// Per-container state of the routes that only read or clear the stored integration.
#[derive(Clone, Debug)]
pub struct StoreApp {
    pub config: Config,
    pub store: Store,
}

impl StoreApp {
    /// Reads the environment (design.md §7) and builds the DynamoDB client only; no network I/O.
    pub async fn from_env() -> Result<Self, AppError> {
        let config = Config::from_env()?;
        let sdk = crate::aws::sdk_config().await;
        Ok(Self::new(config, aws_sdk_dynamodb::Client::new(&sdk)))
    }

    /// Builds the state from a configuration and a client (tests pass a moto-backed one).
    pub fn new(config: Config, dynamodb: aws_sdk_dynamodb::Client) -> Self {
        Self {
            store: Store::new(dynamodb, config.table_name.clone()),
            config,
        }
    }
}

/// Per-container state of the routes that run the live check (connect, test).
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

    /// The same configuration and store, for the routes that need nothing more (tests and
    /// local tools serve every route from one `App`).
    pub fn store_app(&self) -> StoreApp {
        StoreApp {
            config: self.config.clone(),
            store: self.store.clone(),
        }
    }

    /// The guard that validates tenant-supplied MCP URLs (same rules as the client's).
    pub fn url_guard(&self) -> UrlGuard {
        UrlGuard::from_config(&self.config)
    }
}
