//! The local-stack harness: finds or starts moto_server (through `infra/stack.sh up`, once per
//! test binary) and gives each test its own table, KMS key and queues with a UUID suffix, so tests
//! run in parallel and in any order.

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};
use aws_sdk_sqs::types::QueueAttributeName;
use shared::aws::AwsClients;
use shared::config::Config;

/// The redrive `maxReceiveCount` of every test lead queue.
pub const TEST_MAX_RECEIVE_COUNT: u32 = 4;

/// The workspace root (the parent of this crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.trim_matches(|c| c == '\'' || c == '"').to_owned(),
            )
        })
        .collect()
}

fn answers(endpoint: &str) -> bool {
    let Some(addr) = endpoint.strip_prefix("http://") else {
        return false;
    };
    addr.parse()
        .ok()
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_millis(300)).ok())
        .is_some()
}

/// The moto_server endpoint: `TELEAGENT_TEST_AWS_ENDPOINT` if set, else the running local stack
/// (`.local/stack.env`), else one started now with `infra/stack.sh up`.
pub fn moto_endpoint() -> &'static str {
    static ENDPOINT: OnceLock<String> = OnceLock::new();
    ENDPOINT.get_or_init(|| {
        if let Ok(e) = std::env::var("TELEAGENT_TEST_AWS_ENDPOINT") {
            return e;
        }
        let root = workspace_root();
        let env_file = root.join(".local/stack.env");
        if let Ok(text) = std::fs::read_to_string(&env_file)
            && let Some(e) = parse_env_file(&text).get("AWS_ENDPOINT_URL")
            && answers(e)
        {
            return e.clone();
        }
        let out = Command::new("bash")
            .arg(root.join("infra/stack.sh"))
            .arg("up")
            .output()
            .expect("run infra/stack.sh up");
        assert!(
            out.status.success(),
            "infra/stack.sh up failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        parse_env_file(&String::from_utf8_lossy(&out.stdout))
            .remove("AWS_ENDPOINT_URL")
            .expect("stack.env names AWS_ENDPOINT_URL")
    })
}

/// SDK configuration pointing at moto_server with static test credentials.
pub async fn sdk_config() -> SdkConfig {
    sdk_config_at(moto_endpoint()).await
}

/// The same, pointed at another endpoint (the AWS fault proxy in front of moto).
pub async fn sdk_config_at(endpoint: &str) -> SdkConfig {
    let creds =
        aws_sdk_dynamodb::config::Credentials::new("testing", "testing", None, None, "test");
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(creds)
        .load()
        .await
}

/// One test's private slice of the local stack.
pub struct TestEnv {
    pub clients: AwsClients,
    pub table: String,
    pub key_id: String,
    pub queue_url: String,
    pub dlq_url: String,
    /// The outbound FIFO queue of `lead.changed` events.
    pub changes_queue_url: String,
    /// lead-watch's queue of per-tenant work items (standard).
    pub watch_queue_url: String,
    /// The environment a function would see, as a map (tests never touch the process env).
    pub vars: HashMap<String, String>,
}

impl TestEnv {
    /// Creates a table (TTL on `expires_at`), a KMS key, a FIFO lead queue and its FIFO DLQ.
    pub async fn new() -> Self {
        let sdk = sdk_config().await;
        let clients = AwsClients::from_sdk_config(&sdk);
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let table = format!("t-{suffix}");
        create_table(&clients.dynamodb, &table).await;
        let key_id = clients
            .kms
            .create_key()
            .description("test key")
            .send()
            .await
            .expect("create key")
            .key_metadata
            .expect("key metadata")
            .key_id;
        let (queue_url, dlq_url) = create_queues(&clients.sqs, &suffix).await;
        let (changes_queue_url, watch_queue_url) = create_watch_queues(&clients.sqs, &suffix).await;
        let vars = HashMap::from([
            (
                "LEAD_CHANGES_QUEUE_URL".to_owned(),
                changes_queue_url.clone(),
            ),
            ("WATCH_QUEUE_URL".to_owned(), watch_queue_url.clone()),
            ("TABLE_NAME".to_owned(), table.clone()),
            ("KMS_KEY_ID".to_owned(), key_id.clone()),
            ("LEAD_QUEUE_URL".to_owned(), queue_url.clone()),
            ("DEAD_LETTER_QUEUE_URL".to_owned(), dlq_url.clone()),
            ("AWS_ENDPOINT_URL".to_owned(), moto_endpoint().to_owned()),
            (
                "LEAD_QUEUE_MAX_RECEIVE_COUNT".to_owned(),
                TEST_MAX_RECEIVE_COUNT.to_string(),
            ),
        ]);
        Self {
            clients,
            table,
            key_id,
            queue_url,
            dlq_url,
            changes_queue_url,
            watch_queue_url,
            vars,
        }
    }

    /// The function configuration for this env, with extra variables on top.
    pub fn config_with(&self, extra: &[(&str, &str)]) -> Config {
        let mut vars = self.vars.clone();
        for (k, v) in extra {
            vars.insert((*k).to_owned(), (*v).to_owned());
        }
        Config::from_lookup(|k| vars.get(k).cloned()).expect("test config")
    }

    pub fn config(&self) -> Config {
        self.config_with(&[])
    }
}

pub async fn create_table(ddb: &aws_sdk_dynamodb::Client, table: &str) {
    let attr = |n: &str| {
        AttributeDefinition::builder()
            .attribute_name(n)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .expect("attribute")
    };
    let key = |n: &str, t| {
        KeySchemaElement::builder()
            .attribute_name(n)
            .key_type(t)
            .build()
            .expect("key")
    };
    ddb.create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(attr("pk"))
        .attribute_definitions(attr("sk"))
        .attribute_definitions(attr(shared::store::WATCH_SHARD_ATTR))
        .key_schema(key("pk", KeyType::Hash))
        .key_schema(key("sk", KeyType::Range))
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(shared::store::WATCH_INDEX)
                .key_schema(key(shared::store::WATCH_SHARD_ATTR, KeyType::Hash))
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::Include)
                        .non_key_attributes("sync_status")
                        .non_key_attributes("last_sync_at")
                        .non_key_attributes("watch_opt_in")
                        .build(),
                )
                .build()
                .expect("watch index"),
        )
        .send()
        .await
        .expect("create table");
    ddb.update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name("expires_at")
                .build()
                .expect("ttl spec"),
        )
        .send()
        .await
        .expect("enable ttl");
}

async fn create_queues(sqs: &aws_sdk_sqs::Client, suffix: &str) -> (String, String) {
    let dlq_url = sqs
        .create_queue()
        .queue_name(format!("dlq-{suffix}.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create dlq")
        .queue_url
        .expect("dlq url");
    let dlq_arn = sqs
        .get_queue_attributes()
        .queue_url(&dlq_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .expect("dlq attributes")
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .expect("dlq arn");
    let redrive = serde_json::json!({
        "deadLetterTargetArn": dlq_arn,
        "maxReceiveCount": TEST_MAX_RECEIVE_COUNT.to_string(),
    });
    let queue_url = sqs
        .create_queue()
        .queue_name(format!("leads-{suffix}.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
        .send()
        .await
        .expect("create queue")
        .queue_url
        .expect("queue url");
    (queue_url, dlq_url)
}

/// A queue without a redrive policy (FIFO when `fifo`), by name; its URL.
pub async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    fifo: bool,
) -> Result<String, String> {
    let mut req = sqs.create_queue().queue_name(name);
    if fifo {
        req = req.attributes(QueueAttributeName::FifoQueue, "true");
    }
    req.send()
        .await
        .map_err(|e| format!("CreateQueue {name}: {:?}", aws_sdk_sqs::Error::from(e)))?
        .queue_url
        .ok_or_else(|| format!("CreateQueue {name}: no URL"))
}

/// The outbound FIFO `lead.changed` queue and the standard watch work queue.
async fn create_watch_queues(sqs: &aws_sdk_sqs::Client, suffix: &str) -> (String, String) {
    let changes = sqs
        .create_queue()
        .queue_name(format!("changes-{suffix}.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .send()
        .await
        .expect("create changes queue")
        .queue_url
        .expect("changes queue url");
    let work = sqs
        .create_queue()
        .queue_name(format!("watch-{suffix}"))
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .expect("create watch queue")
        .queue_url
        .expect("watch queue url");
    (changes, work)
}

/// Deletes one received message (a consumer's acknowledgement).
pub async fn delete_message(sqs: &aws_sdk_sqs::Client, queue_url: &str, receipt: Option<String>) {
    sqs.delete_message()
        .queue_url(queue_url)
        .set_receipt_handle(receipt)
        .send()
        .await
        .expect("delete a received message");
}

/// Receives up to ten messages of `queue_url` (all system attributes) as the Lambda SQS event
/// the event source mapping would deliver, so receipt handles and attributes are real.
pub async fn receive_as_event(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
) -> aws_lambda_events::event::sqs::SqsEvent {
    use aws_lambda_events::event::sqs::{SqsEvent, SqsMessage};
    let got = sqs
        .receive_message()
        .queue_url(queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive from the test queue");
    let mut ev = SqsEvent::default();
    for m in got.messages.unwrap_or_default() {
        let mut r = SqsMessage::default();
        r.message_id = m.message_id.clone();
        r.receipt_handle = m.receipt_handle.clone();
        r.body = m.body.clone();
        for (k, v) in m.attributes.unwrap_or_default() {
            r.attributes.insert(k.as_str().to_owned(), v);
        }
        ev.records.push(r);
    }
    ev
}
