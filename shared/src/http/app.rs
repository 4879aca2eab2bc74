//! The state every invocation of an HTTP function borrows, built once per container. Two shapes,
//! so each function links and builds only what its route uses:
//! - [`StoreApp`] (status, disconnect): the configuration and the DynamoDB store;
//! - [`App`] (connect, test): also the vault (KMS), the MCP client (one connection pool with the
//!   SSRF guard) and the SQS client (a pass re-sends parked events to the lead queue).
//!
//! Both read the HS256 sign-in secret at init when `JWT_HS256_SECRET_PARAMETER` names an SSM
//! SecureString ([`resolve_hs256_secret`]): once per container, so a warm invocation costs no
//! SSM call, and the secret never sits in the function's environment, where anyone allowed
//! `lambda:GetFunctionConfiguration` could read it and mint a token for any tenant.

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
    /// The HS256 secret's SSM parameter could not be read (missing, no permission, or its KMS
    /// key refused). The error names the parameter, never its value.
    #[error("the HS256 secret could not be read from SSM parameter {parameter}")]
    SigningSecret {
        parameter: String,
        #[source]
        source: Box<aws_sdk_ssm::Error>,
    },
    /// The SSM parameter exists but holds no value.
    #[error("SSM parameter {parameter} holds no HS256 secret")]
    SigningSecretEmpty { parameter: String },
}

/// When `JWT_HS256_SECRET_PARAMETER` is set, reads that SSM parameter (decrypted: a
/// SecureString) into `config.jwt_hs256_secret`, refusing a secret under 32 bytes like the
/// environment variable. A value already in `JWT_HS256_SECRET` (local runs) is kept only when no
/// parameter is named.
pub async fn resolve_hs256_secret(
    config: &mut Config,
    ssm: &aws_sdk_ssm::Client,
) -> Result<(), AppError> {
    let Some(parameter) = config.jwt_hs256_secret_parameter.clone() else {
        return Ok(());
    };
    let out = ssm
        .get_parameter()
        .name(&parameter)
        .with_decryption(true)
        .send()
        .await
        .map_err(|e| AppError::SigningSecret {
            parameter: parameter.clone(),
            source: Box::new(e.into()),
        })?;
    let value = out
        .parameter
        .and_then(|p| p.value)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AppError::SigningSecretEmpty {
            parameter: parameter.clone(),
        })?;
    config.jwt_hs256_secret = Some(crate::config::parse_hs256_secret(
        "JWT_HS256_SECRET_PARAMETER",
        value,
    )?);
    Ok(())
}

/// The SSM client, only when a parameter is named (the JWT-authorizer mode makes no SSM call).
async fn load_hs256_secret(
    config: &mut Config,
    sdk: &aws_config::SdkConfig,
) -> Result<(), AppError> {
    if config.jwt_hs256_secret_parameter.is_none() {
        return Ok(());
    }
    resolve_hs256_secret(config, &aws_sdk_ssm::Client::new(sdk)).await
}

/// Per-container state of the routes that only read or clear the stored integration.
#[derive(Clone, Debug)]
pub struct StoreApp {
    pub config: Config,
    pub store: Store,
}

impl StoreApp {
    /// Reads the environment and builds the DynamoDB client only; the one network call is the
    /// HS256 secret's SSM read, when a parameter is named.
    pub async fn from_env() -> Result<Self, AppError> {
        let mut config = Config::from_env()?;
        let sdk = crate::aws::lambda_sdk_config();
        load_hs256_secret(&mut config, &sdk).await?;
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
    /// connect's and test's results (`ConnectResults`, `IntegrationsErrored`), written as EMF
    /// lines after each request; off unless built by [`App::from_env`].
    pub metrics: crate::metrics::Metrics,
}

impl App {
    /// Reads the environment and builds the AWS clients from Lambda's variables
    /// ([`crate::aws::lambda_sdk_config`]); the one network call is the HS256 secret's SSM read,
    /// when a parameter is named.
    pub async fn from_env() -> Result<Self, AppError> {
        let mut config = Config::from_env()?;
        let sdk = crate::aws::lambda_sdk_config();
        load_hs256_secret(&mut config, &sdk).await?;
        let mut app = Self::new(config, &AwsClients::from_sdk_config(&sdk))?;
        app.metrics = crate::metrics::Metrics::new();
        Ok(app)
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
            metrics: crate::metrics::Metrics::off(),
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
