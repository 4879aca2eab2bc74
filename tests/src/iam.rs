//! Running the real function binaries with exactly the permissions `infra/template.yaml` gives
//! them, against a moto_server of their own that enforces IAM.
//!
//! What moto 5.2.5 evaluates (read in `moto/core/authorization.py`, `moto/iam/access_control.py`,
//! `moto/iam/policy_conditions.py`, `moto/kms/policy_validator.py`): with
//! `INITIAL_NO_AUTH_ACTION_COUNT=n` every request after the first `n` must be SigV4-signed with
//! the access key of an IAM user (or assumed role) moto knows, and the signature is checked. The
//! user's policies are evaluated on the ACTION (`service:Operation`, wildcards allowed, explicit
//! Deny wins). The RESOURCE is only checked where a service tells moto which resource a request
//! is for: SQS (the queue's ARN), S3, IAM and STS; for DynamoDB, KMS, SSM and Logs moto passes
//! `*`, so a statement naming a table or key ARN never matches there. CONDITIONS of identity
//! policies are not evaluated (no request context is passed; a condition with no values
//! passes). KMS key policies are not evaluated either (only a Deny on `kms:DescribeKey`).
//!
//! So this module gives moto the template's statements with the resource widened to `*` for
//! the services whose resource moto cannot see ([`moto_policy`]), and checks what moto does not
//! itself, from moto's request recorder ([`read_recording`]): every call a function made must be
//! allowed by its template statements with the real resource ARN and, for KMS, the encryption
//! context conditions ([`allows`]); and every statement must be used by some call.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig};
use base64::Engine as _;
use serde_json::{Value, json};

use crate::harness::workspace_root;
use crate::local::runtime_api::RuntimeApi;

pub const REGION: &str = "us-east-1";
/// moto's default account.
pub const ACCOUNT: &str = "123456789012";
/// moto_server's free unauthenticated requests: CreateUser, PutUserPolicy, CreateAccessKey of
/// the administrator that sets everything else up.
const FREE_REQUESTS: u32 = 3;

/// Static credentials.
#[derive(Clone, Debug)]
pub struct Keys {
    pub access_key_id: String,
    pub secret_access_key: String,
}

/// SDK configuration for `endpoint` signed with `keys`.
pub async fn sdk_config(endpoint: &str, keys: &Keys) -> SdkConfig {
    let creds = aws_sdk_dynamodb::config::Credentials::new(
        keys.access_key_id.clone(),
        keys.secret_access_key.clone(),
        None,
        None,
        "iam-test",
    );
    aws_config::defaults(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new(REGION))
        .credentials_provider(creds)
        .load()
        .await
}

/// A moto_server that enforces IAM and records every request.
pub struct IamMoto {
    pub endpoint: String,
    pub recording: PathBuf,
    pub admin: Keys,
}

/// Starts moto_server on a free port with IAM enforcement after `FREE_REQUESTS` requests and
/// the request recorder on, creates the administrator, and returns once it answers. A supervisor
/// shell stops the server when this test process exits (statics are never dropped).
pub async fn start_moto() -> Result<IamMoto, String> {
    let root = workspace_root();
    let port = crate::local::run::free_port().map_err(|e| e.to_string())?;
    let state = root.join(".local");
    std::fs::create_dir_all(&state).map_err(|e| e.to_string())?;
    let recording = state.join(format!("iam-moto-{port}.jsonl"));
    let log = state.join(format!("iam-moto-{port}.log"));
    let script = format!(
        "'{moto}' -H 127.0.0.1 -p {port} >'{log}' 2>&1 & \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; kill -TERM 0",
        moto = root.join(".venv/bin/moto_server").display(),
        log = log.display(),
        pid = std::process::id(),
    );
    std::process::Command::new("bash")
        .args(["-c", &script])
        .env("INITIAL_NO_AUTH_ACTION_COUNT", FREE_REQUESTS.to_string())
        .env("MOTO_ENABLE_RECORDING", "true")
        .env("MOTO_RECORDER_FILEPATH", &recording)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start moto_server: {e}"))?;
    let endpoint = format!("http://127.0.0.1:{port}");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}")
        .parse()
        .map_err(|e| format!("{e}"))?;
    let mut up = false;
    for _ in 0..150 {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if !up {
        return Err(format!("moto_server did not start; see {}", log.display()));
    }
    // The free requests: an administrator with every permission, whose keys set up the rest.
    let boot = Keys {
        access_key_id: "AKIABOOTSTRAP0000000".into(),
        secret_access_key: "bootstrap".into(),
    };
    let iam = aws_sdk_iam::Client::new(&sdk_config(&endpoint, &boot).await);
    let admin = create_user(
        &iam,
        "admin",
        &json!({"Version": "2012-10-17",
                "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )
    .await?;
    Ok(IamMoto {
        endpoint,
        recording,
        admin,
    })
}

/// An IAM user with one inline policy, and its access key.
pub async fn create_user(
    iam: &aws_sdk_iam::Client,
    name: &str,
    policy: &Value,
) -> Result<Keys, String> {
    iam.create_user()
        .user_name(name)
        .send()
        .await
        .map_err(|e| format!("CreateUser {name}: {:?}", aws_sdk_iam::Error::from(e)))?;
    iam.put_user_policy()
        .user_name(name)
        .policy_name(format!("{name}-template"))
        .policy_document(policy.to_string())
        .send()
        .await
        .map_err(|e| format!("PutUserPolicy {name}: {:?}", aws_sdk_iam::Error::from(e)))?;
    let key = iam
        .create_access_key()
        .user_name(name)
        .send()
        .await
        .map_err(|e| format!("CreateAccessKey {name}: {:?}", aws_sdk_iam::Error::from(e)))?
        .access_key
        .ok_or("no access key")?;
    Ok(Keys {
        access_key_id: key.access_key_id,
        secret_access_key: key.secret_access_key,
    })
}

/// Services whose requests moto authorises against resource `*` (it cannot tell the resource).
fn moto_sees_resource(action: &str) -> bool {
    action.starts_with("sqs:")
}

/// The statements as moto can evaluate them: Action kept, Resource widened to `*` where moto
/// passes `*` for the request (see the module doc); the exact resources are checked by [`allows`].
pub fn moto_policy(statements: &[Value]) -> Value {
    let widened: Vec<Value> = statements
        .iter()
        .map(|s| {
            let mut s = s.clone();
            let actions = as_list(&s["Action"]);
            if !actions.iter().all(|a| moto_sees_resource(a)) {
                s["Resource"] = json!("*");
            }
            // AWS authorises SQS's batch calls as their single action (SendMessageBatch needs
            // sqs:SendMessage); moto checks the batch call's own name, so it is added for moto.
            let batches: Vec<String> = actions
                .iter()
                .filter_map(|a| SQS_BATCHES.iter().find(|(_, one)| one == a))
                .map(|(batch, _)| (*batch).to_owned())
                .collect();
            if !batches.is_empty() {
                let mut all = actions.clone();
                all.extend(batches);
                s["Action"] = json!(all);
            }
            s
        })
        .collect();
    json!({"Version": "2012-10-17", "Statement": widened})
}

/// SQS batch calls and the action AWS authorises each as.
const SQS_BATCHES: [(&str, &str); 3] = [
    ("sqs:SendMessageBatch", "sqs:SendMessage"),
    ("sqs:DeleteMessageBatch", "sqs:DeleteMessage"),
    (
        "sqs:ChangeMessageVisibilityBatch",
        "sqs:ChangeMessageVisibility",
    ),
];

pub fn as_list(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => vec![s.clone()],
        Value::Array(a) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

fn glob(pattern: &str, value: &str) -> bool {
    // IAM wildcards: `*` any run, `?` one character.
    fn go(p: &[u8], v: &[u8]) -> bool {
        match (p.first(), v.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], v) || (!v.is_empty() && go(p, &v[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &v[1..]),
            (Some(a), Some(b)) if a.eq_ignore_ascii_case(b) => go(&p[1..], &v[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), value.as_bytes())
}

/// One AWS call a function made, as moto recorded it.
#[derive(Clone, Debug)]
pub struct Call {
    pub access_key_id: String,
    /// `service:Operation`, e.g. `dynamodb:GetItem`.
    pub action: String,
    /// The resource ARN the call was for.
    pub resource: String,
    /// The KMS encryption context, for KMS calls.
    pub encryption_context: HashMap<String, String>,
    /// The attributes a DynamoDB read projects (`dynamodb:Attributes`); empty without a
    /// projection.
    pub attributes: Vec<String>,
}

/// How the recording names resources: table names, key ids, queue URLs, parameter names.
#[derive(Clone, Debug, Default)]
pub struct Arns {
    pub tables: HashMap<String, String>,
    pub keys: HashMap<String, String>,
    pub queues: HashMap<String, String>,
}

impl Arns {
    fn resource(&self, action: &str, body: &Value) -> String {
        let s = |k: &str| body[k].as_str().unwrap_or_default().to_owned();
        match action.split(':').next().unwrap_or_default() {
            "dynamodb" => {
                // A batch names its table(s) as the keys of `RequestItems` (ours use one).
                let t = body["TableName"]
                    .as_str()
                    .or_else(|| {
                        body["RequestItems"]
                            .as_object()?
                            .keys()
                            .next()
                            .map(String::as_str)
                    })
                    .unwrap_or_default()
                    .to_owned();
                let table = self.tables.get(&t).cloned().unwrap_or(t);
                // A query of an index is authorised on the index's own ARN.
                match body["IndexName"].as_str() {
                    Some(index) => format!("{table}/index/{index}"),
                    None => table,
                }
            }
            "kms" => {
                let k = s("KeyId");
                self.keys.get(&k).cloned().unwrap_or(k)
            }
            "sqs" => {
                let q = s("QueueUrl");
                self.queues.get(&q).cloned().unwrap_or(q)
            }
            "ssm" => {
                let n = s("Name");
                let n = n.strip_prefix('/').unwrap_or(&n).to_owned();
                format!("arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/{n}")
            }
            _ => "*".to_owned(),
        }
    }
}

/// The JSON-protocol calls (DynamoDB, KMS, SQS, SSM: `X-Amz-Target`) in moto's recording.
pub fn read_recording(path: &Path, arns: &Arns) -> Result<Vec<Call>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let entry: Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
        let headers = &entry["headers"];
        let header = |k: &str| {
            headers
                .as_object()
                .and_then(|h| h.iter().find(|(n, _)| n.eq_ignore_ascii_case(k)))
                .and_then(|(_, v)| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let target = header("X-Amz-Target");
        let Some((prefix, op)) = target.split_once('.') else {
            continue;
        };
        let service = match prefix {
            p if p.starts_with("DynamoDB") => "dynamodb",
            "TrentService" => "kms",
            "AmazonSQS" => "sqs",
            "AmazonSSM" => "ssm",
            _ => continue,
        };
        let auth = header("Authorization");
        let Some(key) = auth
            .split("Credential=")
            .nth(1)
            .and_then(|c| c.split('/').next())
        else {
            continue;
        };
        let raw = entry["body"].as_str().unwrap_or_default();
        let bytes = if entry["body_encoded"].as_bool() == Some(true) {
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap_or_default()
        } else {
            raw.as_bytes().to_vec()
        };
        let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let action = format!("{service}:{op}");
        let action = SQS_BATCHES
            .iter()
            .find(|(batch, _)| *batch == action)
            .map_or(action.clone(), |(_, one)| (*one).to_owned());
        let encryption_context = body["EncryptionContext"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        let names = &body["ExpressionAttributeNames"];
        let attributes = body["ProjectionExpression"]
            .as_str()
            .map(|p| {
                p.split(',')
                    .map(|a| {
                        let a = a.trim();
                        names[a].as_str().unwrap_or(a).to_owned()
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.push(Call {
            attributes,
            access_key_id: key.to_owned(),
            resource: arns.resource(&action, &body),
            action,
            encryption_context,
        });
    }
    Ok(out)
}

/// Whether a resolved Allow statement covers `call`: action and resource with IAM wildcards, and
/// the condition operators the template uses on KMS encryption contexts (`StringEquals`,
/// `ForAllValues:StringEquals`, `Null`). Any other condition makes the answer `false`, so a new
/// kind of condition is noticed here rather than assumed to hold.
pub fn allows(statement: &Value, call: &Call) -> bool {
    if statement["Effect"].as_str() != Some("Allow") {
        return false;
    }
    if !as_list(&statement["Action"])
        .iter()
        .any(|a| glob(a, &call.action))
    {
        return false;
    }
    if !as_list(&statement["Resource"])
        .iter()
        .any(|r| glob(r, &call.resource))
    {
        return false;
    }
    let Some(conds) = statement["Condition"].as_object() else {
        return true;
    };
    let ctx_value = |key: &str| -> Option<String> {
        key.strip_prefix("kms:EncryptionContext:")
            .and_then(|k| call.encryption_context.get(k).cloned())
    };
    conds.iter().all(|(op, pairs)| {
        let Some(pairs) = pairs.as_object() else {
            return false;
        };
        pairs.iter().all(|(key, want)| {
            let want = match want {
                Value::Array(_) => as_list(want),
                Value::String(s) => vec![s.clone()],
                _ => return false,
            };
            match op.as_str() {
                "StringEquals" => ctx_value(key).is_some_and(|v| want.contains(&v)),
                "ForAllValues:StringEquals" if key == "kms:EncryptionContextKeys" => {
                    call.encryption_context.keys().all(|k| want.contains(k))
                }
                // Of nothing, every value matches: a read without a projection passes.
                "ForAllValues:StringEquals" if key == "dynamodb:Attributes" => {
                    call.attributes.iter().all(|a| want.contains(a))
                }
                "Null" => {
                    let absent = ctx_value(key).is_none();
                    want.iter().all(|w| (w == "true") == absent)
                }
                _ => false,
            }
        })
    })
}

/// Builds the six function binaries (debug, as the tests' own profile) once per test binary
/// and returns the directory that holds them.
pub fn function_binaries() -> Result<&'static Path, String> {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    DIR.get_or_init(|| {
        let root = workspace_root();
        let mut cmd = std::process::Command::new(env!("CARGO"));
        cmd.current_dir(&root).args(["build", "--locked"]);
        for f in crate::local::run::FUNCTIONS {
            cmd.args(["-p", f]);
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run cargo build: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "cargo build of the functions failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        Ok(target.join("debug"))
    })
    .as_deref()
    .map_err(Clone::clone)
}

/// A function binary running the way Lambda runs it: its own Runtime API, its own environment
/// (nothing inherited), its output in a log file.
pub struct FunctionProcess {
    pub name: String,
    pub api: Arc<RuntimeApi>,
    pub log: PathBuf,
    _child: tokio::process::Child,
}

impl FunctionProcess {
    /// Starts `name` with `env` and waits until its init is over (the first `GET /next`).
    pub async fn start(
        name: &str,
        env: &HashMap<String, String>,
        log: PathBuf,
    ) -> Result<Self, String> {
        let bin = function_binaries()?.join(name);
        let api = Arc::new(
            RuntimeApi::start(name)
                .await
                .map_err(|e| format!("{name}: {e}"))?,
        );
        let out = std::fs::File::create(&log).map_err(|e| e.to_string())?;
        let err = out.try_clone().map_err(|e| e.to_string())?;
        let mut vars: HashMap<String, String> = [
            ("AWS_LAMBDA_RUNTIME_API", api.address()),
            ("AWS_LAMBDA_FUNCTION_NAME", name.to_owned()),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
            ("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}")),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "iam-test".into()),
            ("AWS_REGION", REGION.into()),
            ("AWS_DEFAULT_REGION", REGION.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        vars.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let mut child = tokio::process::Command::new(&bin)
            .env_clear()
            .envs(&vars)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        // Init is over at the first `GET /next`; a refused start exits (or reports) first.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            if api.first_poll_at().is_some() {
                break;
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some()
                || api.init_error().is_some()
                || tokio::time::Instant::now() > deadline
            {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!(
                    "{name} did not finish its init ({exited:?}, {:?}):\n{text}",
                    api.init_error()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            name: name.to_owned(),
            api,
            log,
            _child: child,
        })
    }

    /// Everything the function printed so far.
    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// An API Gateway HTTP API (payload v2) event for a route WITHOUT a gateway authorizer (the
/// hs256 sign-in mode): the bearer JWT travels in the `authorization` header.
pub fn http_event(method: &str, route: &str, jwt: Option<&str>, body: Option<&Value>) -> Value {
    let path = format!("/api/bitrix-mcp/{route}");
    let mut headers = json!({"content-type": "application/json", "host": "api.example.com"});
    if let Some(t) = jwt {
        headers["authorization"] = json!(format!("Bearer {t}"));
    }
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": ACCOUNT,
            "apiId": "iamtest",
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": "iam-test"},
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "01/Dec/2026:08:00:00 +0000",
            "timeEpoch": 1_796_000_000_000u64
        },
        "body": body.map(Value::to_string),
        "isBase64Encoded": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(action: &str, resource: &str, ctx: &[(&str, &str)]) -> Call {
        Call {
            access_key_id: "k".into(),
            action: action.into(),
            resource: resource.into(),
            encryption_context: ctx
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            attributes: Vec::new(),
        }
    }

    #[test]
    fn statements_match_action_resource_and_kms_context() {
        let decrypt = json!({
            "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "arn:aws:kms:r:a:key/k1",
            "Condition": {
                "StringEquals": {"kms:EncryptionContext:purpose": "bitrix-mcp-token"},
                "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant_id", "purpose"]}
            }
        });
        let key = "arn:aws:kms:r:a:key/k1";
        let good = [("tenant_id", "t"), ("purpose", "bitrix-mcp-token")];
        for (c, want, why) in [
            (call("kms:Decrypt", key, &good), true, "the token's context"),
            (
                call("kms:Decrypt", "arn:aws:kms:r:a:key/other", &good),
                false,
                "another key",
            ),
            (call("kms:Encrypt", key, &good), false, "another action"),
            (
                call("kms:Decrypt", key, &[("tenant_id", "t"), ("purpose", "x")]),
                false,
                "purpose",
            ),
            (
                call(
                    "kms:Decrypt",
                    key,
                    &[
                        ("tenant_id", "t"),
                        ("purpose", "bitrix-mcp-token"),
                        ("x", "y"),
                    ],
                ),
                false,
                "an extra context key",
            ),
        ] {
            assert_eq!(allows(&decrypt, &c), want, "{why}");
        }
        let sqs = json!({"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": ["arn:aws:sqs:*:*:q.fifo"]});
        assert!(allows(
            &sqs,
            &call("sqs:SendMessage", "arn:aws:sqs:us-east-1:1:q.fifo", &[])
        ));
        assert!(!allows(
            &sqs,
            &call("sqs:SendMessage", "arn:aws:sqs:us-east-1:1:dlq.fifo", &[])
        ));
    }
}
