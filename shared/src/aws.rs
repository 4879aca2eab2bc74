//! AWS clients, built once per container.
//!
//! In the functions ([`lambda_sdk_config`], [`AwsClients::from_env`]) the SDK configuration is
//! read from the environment variables Lambda sets, and nothing else: `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` (the function role's credentials), `AWS_REGION`
//! (else `AWS_DEFAULT_REGION`), and `AWS_ENDPOINT_URL` for the local stack (ignored when
//! `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`). Inside Lambda the SDK's default chain finds the
//! same credentials in the same variables, but its loader also reads the shared config and
//! credentials files, resolves a dozen more settings through them, and links the profile, STS (web
//! identity, assume-role), container and IMDS providers into every function: 2.5 to 3.6 ms of
//! each cold start on the development machine (a read of the root certificates included) and
//! about 760 KB of each x86_64 binary, for sources Lambda never uses. The operator's tool
//! (`bitrix-admin`) runs on a workstation and keeps the full chain ([`sdk_config`]).
//!
//! All clients of a container share one HTTPS client (one connection pool, one TLS set-up with
//! the container's root certificates, [`crate::tls`]), built on the first request instead of
//! once per SDK client at construction (the SDK's default client builds a TLS connector when each
//! client is made, then throws it away and builds another for the first request).
//!
//! Each function builds only the clients its handler calls (status and disconnect: DynamoDB
//! only): an unused SDK client is code in the zip and work at cold start.

use std::time::Duration;

use aws_config::environment::EnvironmentVariableCredentialsProvider;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::shared::IntoShared;

/// The SDK loader's default connect timeout (`aws_config`'s `SDK_DEFAULT_CONNECT_TIMEOUT`),
/// kept so the functions time out as before.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(3100);

/// The full default chain (environment, shared config files, web identity, containers, IMDS),
/// for tools that run outside Lambda (`bitrix-admin`). No network I/O: credentials are
/// resolved on the first call.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The functions' SDK configuration, from Lambda's environment variables only (see the module
/// documentation). Reads no file and makes no network call; a missing credential variable
/// fails the first AWS call, as the default chain does when it finds nothing.
pub fn lambda_sdk_config() -> SdkConfig {
    lambda_sdk_config_from(|k| std::env::var(k).ok())
}

/// The same from a lookup, so tests can pass plain maps.
pub fn lambda_sdk_config_from(get: impl Fn(&str) -> Option<String>) -> SdkConfig {
    let var = |k: &str| {
        get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let region = var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION"));
    let ignore_endpoints =
        var("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS").is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let endpoint = var("AWS_ENDPOINT_URL").filter(|_| !ignore_endpoints);
    let mut b = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .credentials_provider(SharedCredentialsProvider::new(
            EnvironmentVariableCredentialsProvider::new(),
        ))
        .retry_config(RetryConfig::standard())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        )
        .identity_cache(aws_config::identity::IdentityCache::lazy().build())
        .http_client(https_client());
    if let Some(sleep) = aws_smithy_async::rt::sleep::default_async_sleep() {
        b = b.sleep_impl(sleep);
    }
    b.set_region(region.map(Region::new));
    b.set_endpoint_url(endpoint);
    b.build()
}

/// The SDK's default HTTPS client (hyper 1, rustls on aws-lc, proxies from the environment),
/// with the container's root certificates from [`crate::tls`], and no connector built before
/// the first request.
fn https_client() -> SharedHttpClient {
    let client = Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(CryptoMode::AwsLc));
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.tls_context(crate::tls::sdk_tls_context()).build()
    });
    BuiltOnFirstRequest(client).into_shared()
}

/// The SDK's client validation builds (and drops) a TLS connector for every client at
/// construction "so that native certs load at client initialization time"; the connector the
/// first request uses is built again anyway. This wrapper skips that throw-away build: the one
/// connector is made on the first request and shared by every client of the container.
#[derive(Debug)]
struct BuiltOnFirstRequest(SharedHttpClient);

impl HttpClient for BuiltOnFirstRequest {
    fn http_connector(
        &self,
        settings: &HttpConnectorSettings,
        components: &RuntimeComponents,
    ) -> SharedHttpConnector {
        self.0.http_connector(settings, components)
    }

    fn connector_metadata(
        &self,
    ) -> Option<aws_smithy_runtime_api::client::connector_metadata::ConnectorMetadata> {
        self.0.connector_metadata()
    }
}

/// The three AWS clients lead-sync (and the tests) use; the HTTP functions build only theirs.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl AwsClients {
    /// The clients of a function, from Lambda's environment ([`lambda_sdk_config`]).
    pub async fn from_env() -> Self {
        Self::from_sdk_config(&lambda_sdk_config())
    }

    pub fn from_sdk_config(sdk: &SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            kms: aws_sdk_kms::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn sdk(pairs: &[(&str, &str)]) -> SdkConfig {
        let m: HashMap<&str, &str> = pairs.iter().copied().collect();
        lambda_sdk_config_from(|k| m.get(k).map(|v| (*v).to_owned()))
    }

    #[test]
    fn region_and_endpoint_come_from_lambdas_variables() {
        let c = sdk(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ]);
        assert_eq!(c.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(c.endpoint_url(), Some("http://127.0.0.1:5000"));
        assert_eq!(
            c.timeout_config().and_then(|t| t.connect_timeout()),
            Some(CONNECT_TIMEOUT)
        );
        assert!(c.credentials_provider().is_some() && c.http_client().is_some());

        let c = sdk(&[("AWS_DEFAULT_REGION", "us-east-1")]);
        assert_eq!(c.region().map(|r| r.as_ref()), Some("us-east-1"));
        assert_eq!(c.endpoint_url(), None, "real AWS");

        let c = sdk(&[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ]);
        assert_eq!(c.endpoint_url(), None);
        assert!(c.region().is_none());
    }
}
