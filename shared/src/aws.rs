//! AWS clients, built once per container from the standard SDK environment
//! (`AWS_REGION`, credentials, `AWS_ENDPOINT_URL` for the local stack).
//!
//! Each function builds only the clients its handler calls (status and disconnect: DynamoDB
//! only), so [`sdk_config`] is separate from the client constructors: an unused SDK client is
//! code in the zip and work at cold start.

use aws_config::{BehaviorVersion, SdkConfig};

/// Reads the standard SDK environment. No network I/O: credentials are resolved lazily on the
/// first call, so this adds little to a cold start.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}

/// The three AWS clients lead-sync (and the tests) use; the HTTP functions build only theirs.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub dynamodb: aws_sdk_dynamodb::Client,
    pub kms: aws_sdk_kms::Client,
    pub sqs: aws_sdk_sqs::Client,
}

impl AwsClients {
    pub async fn from_env() -> Self {
        Self::from_sdk_config(&sdk_config().await)
    }

    pub fn from_sdk_config(sdk: &SdkConfig) -> Self {
        Self {
            dynamodb: aws_sdk_dynamodb::Client::new(sdk),
            kms: aws_sdk_kms::Client::new(sdk),
            sqs: aws_sdk_sqs::Client::new(sdk),
        }
    }
}
