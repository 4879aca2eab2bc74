//! Starting a real function binary the way Lambda does, for the benchmark and the soak: the
//! environment Lambda and the SAM template give it (pointed at a local Runtime API and a local
//! AWS endpoint), the process itself, and the API Gateway request an HTTP function receives.

use std::path::Path;
use std::process::Stdio;

use serde_json::{Value, json};

/// What differs between runs in a function's environment; the rest is what Lambda sets.
#[derive(Clone, Debug)]
pub struct FunctionEnv<'a> {
    /// `AWS_LAMBDA_RUNTIME_API` (`RuntimeApi::address`).
    pub runtime_api: String,
    /// `AWS_ENDPOINT_URL`: moto, or a proxy in front of it.
    pub aws_endpoint: &'a str,
    pub table: &'a str,
    pub key_id: &'a str,
    pub queue_url: &'a str,
    pub dlq_url: &'a str,
    pub watch_queue_url: Option<&'a str>,
    pub changes_queue_url: Option<&'a str>,
    /// `LEAD_QUEUE_MAX_RECEIVE_COUNT` (the queue's redrive setting).
    pub max_receive: u32,
    /// `AWS_LAMBDA_LOG_LEVEL` (upper-cased).
    pub log_level: &'a str,
    /// `AWS_LAMBDA_LOG_STREAM_NAME`: names the run.
    pub log_stream: &'a str,
    /// More variables (`REPLAY_AFTER_PARK_SECS`, ...), set last.
    pub extra: Vec<(String, String)>,
}

/// The environment of `function` as Lambda starts it (256 MB, us-east-1, test credentials),
/// with `PATH` passed through.
pub fn lambda_env(function: &str, e: &FunctionEnv<'_>) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = vec![
        ("AWS_LAMBDA_RUNTIME_API", e.runtime_api.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME", function.to_owned()),
        ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256".into()),
        ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{function}"),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", e.log_stream.to_owned()),
        ("AWS_LAMBDA_LOG_LEVEL", e.log_level.to_uppercase()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_DEFAULT_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("AWS_ENDPOINT_URL", e.aws_endpoint.to_owned()),
        ("TABLE_NAME", e.table.to_owned()),
        ("KMS_KEY_ID", e.key_id.to_owned()),
        ("LEAD_QUEUE_URL", e.queue_url.to_owned()),
        ("DEAD_LETTER_QUEUE_URL", e.dlq_url.to_owned()),
        ("LEAD_QUEUE_MAX_RECEIVE_COUNT", e.max_receive.to_string()),
        ("MCP_ALLOW_LOOPBACK", "true".into()),
        ("_HANDLER", "bootstrap".into()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    if let Some(u) = e.watch_queue_url {
        v.push(("WATCH_QUEUE_URL".into(), u.to_owned()));
    }
    if let Some(u) = e.changes_queue_url {
        v.push(("LEAD_CHANGES_QUEUE_URL".into(), u.to_owned()));
    }
    v.extend(e.extra.iter().cloned());
    if let Ok(path) = std::env::var("PATH") {
        v.push(("PATH".into(), path));
    }
    v
}

/// Starts `bin` with exactly `env`; its output goes to `log` (stdout and stderr together), or
/// nowhere. The process is killed when the handle is dropped.
pub fn spawn_function(
    bin: &Path,
    env: &[(String, String)],
    log: Option<&Path>,
) -> Result<tokio::process::Child, String> {
    let (out, err) = match log {
        Some(log) => {
            let out = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
            let err = out.try_clone().map_err(|e| e.to_string())?;
            (Stdio::from(out), Stdio::from(err))
        }
        None => (Stdio::null(), Stdio::null()),
    };
    tokio::process::Command::new(bin)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))
}

/// An API Gateway HTTP API (payload v2) request with JWT authorizer claims, as API Gateway sends
/// it to the HTTP functions; `caller` names the run (`apiId`, the user, the user agent).
pub fn apigw_event(
    method: &str,
    route: &str,
    tenant: &str,
    body: Option<Value>,
    caller: &str,
) -> Value {
    let path = format!("/api/bitrix-mcp/{route}");
    json!({
        "version": "2.0",
        "routeKey": format!("{method} {path}"),
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": "api.example.com"},
        "requestContext": {
            "accountId": "123456789012",
            "apiId": caller,
            "authorizer": {"jwt": {"claims": {"tenant_id": tenant, "sub": format!("{caller}-user")}, "scopes": null}},
            "domainName": "api.example.com",
            "domainPrefix": "api",
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1",
                     "sourceIp": "127.0.0.1", "userAgent": caller},
            "requestId": uuid::Uuid::new_v4().to_string(),
            "routeKey": format!("{method} {path}"),
            "stage": "$default",
            "time": "01/Dec/2026:08:00:00 +0000",
            "timeEpoch": 1_795_000_000_000u64
        },
        "body": body.map(|b| b.to_string()),
        "isBase64Encoded": false
    })
}
