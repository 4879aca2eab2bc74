//! What the demo driver and the end-to-end tests share to run the real functions locally:
//! `cargo lambda watch` as a child process (in its own process group, so stopping it also stops
//! the cargo build and the function processes it started), readiness polling, a locally signed
//! HS256 JWT (the functions verify it themselves: cargo lambda watch passes no authorizer
//! context, so local runs verify the HS256 JWT themselves), and a client for the HTTP API through
//! watch's function URLs.

use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The six functions cargo lambda watch serves.
pub const FUNCTIONS: [&str; 6] = [
    "bitrix-connect",
    "bitrix-test",
    "bitrix-disconnect",
    "bitrix-status",
    "lead-sync",
    "lead-watch",
];

/// A free loopback port (bound then released; fine for a local run).
pub fn free_port() -> std::io::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// Reads `export K='V'` lines (`.local/stack.env`).
pub fn read_env_file(path: &Path) -> std::io::Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path)?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix("export "))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.trim_matches(|c| c == '\'' || c == '"').to_owned(),
            )
        })
        .collect())
}

/// An HS256 JWT like Supabase's legacy keys sign: `tenant_id` claim, `sub`, `iat`, `exp`.
pub fn sign_jwt(
    secret: &str,
    tenant: &str,
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let claims = json!({
        "sub": format!("user-of-{tenant}"),
        "tenant_id": tenant,
        "role": "authenticated",
        "iat": now,
        "exp": now + i64::try_from(ttl.as_secs()).unwrap_or(3600),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
}

/// The function that serves a route.
pub fn function_for(route: &str) -> &'static str {
    match route {
        "connect" => "bitrix-connect",
        "test" => "bitrix-test",
        "disconnect" => "bitrix-disconnect",
        _ => "bitrix-status",
    }
}

/// Calls the HTTP API through cargo lambda watch's function URLs:
/// `{base}/lambda-url/<function>/api/bitrix-mcp/<route>`.
#[derive(Clone, Debug)]
pub struct ApiClient {
    http: reqwest::Client,
    base: String,
}

impl ApiClient {
    pub fn new(base: &str) -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(900))
                .build()
                .unwrap_or_default(),
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn url(&self, route: &str) -> String {
        format!(
            "{}/lambda-url/{}/api/bitrix-mcp/{route}",
            self.base,
            function_for(route)
        )
    }

    /// One API call; returns the status and the JSON body (`Value::String` if not JSON).
    pub async fn call(
        &self,
        route: &str,
        jwt: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, Value), reqwest::Error> {
        let url = self.url(route);
        let mut req = if route == "status" {
            self.http.get(url)
        } else {
            self.http.post(url)
        };
        if let Some(t) = jwt {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, v))
    }

    /// Invokes a function through watch's Lambda Invoke API (what `cargo lambda invoke` does).
    pub async fn invoke(
        &self,
        function: &str,
        payload: &Value,
    ) -> Result<(u16, Value), reqwest::Error> {
        let resp = self
            .http
            .post(format!(
                "{}/2015-03-31/functions/{function}/invocations",
                self.base
            ))
            .json(payload)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// Waits until all six functions are compiled and answer: the HTTP ones 401 without a JWT
    /// (so the function itself ran), lead-sync and lead-watch an empty batch response. cargo lambda watch builds
    /// each function on its first request; on 2 cores the first time takes minutes.
    pub async fn wait_ready(
        &self,
        timeout: Duration,
        mut progress: impl FnMut(&str, Duration),
    ) -> Result<(), String> {
        let start = Instant::now();
        for f in FUNCTIONS {
            loop {
                let ok = if f.starts_with("lead-") {
                    match self.invoke(f, &json!({"Records": []})).await {
                        Ok((200, v)) => v.get("batchItemFailures").is_some(),
                        _ => false,
                    }
                } else {
                    let route = f.trim_start_matches("bitrix-");
                    matches!(
                        self.call(route, None, None).await,
                        Ok((401, Value::Object(_)))
                    )
                };
                if ok {
                    progress(f, start.elapsed());
                    break;
                }
                if start.elapsed() > timeout {
                    return Err(format!("{f} did not answer within {timeout:?}"));
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Ok(())
    }
}

/// Starts `cargo lambda watch` on `127.0.0.1:<port>` with `env` added to its environment (which the
/// functions inherit), `.venv/bin` first on PATH, in its own process group; its output (cargo's
/// build log and the functions' logs) goes to `log`.
pub fn spawn_watch(
    root: &Path,
    port: u16,
    env: &HashMap<String, String>,
    log: &Path,
) -> std::io::Result<tokio::process::Child> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    let err = out.try_clone()?;
    let path = format!(
        "{}:{}",
        root.join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env_file = root.join(format!(".local/watch-{port}.env"));
    // Also hand the variables over explicitly: cargo lambda watch documents --env-file as the way
    // to set the functions' environment.
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::create_dir_all(root.join(".local"))?;
    std::fs::write(&env_file, text)?;
    tokio::process::Command::new("cargo")
        .args([
            "lambda",
            "watch",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
        ])
        .arg(port.to_string())
        .arg("--env-file")
        .arg(&env_file)
        .current_dir(root)
        .env("PATH", path)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
}

/// Stops a child started in its own process group: SIGTERM to the group, then SIGKILL after
/// `grace`. Only the group we created is signalled.
pub async fn stop_group(child: &mut tokio::process::Child, grace: Duration) {
    let Some(pid) = child.id() else {
        return;
    };
    let signal = |sig: &str| {
        let _ = std::process::Command::new("kill")
            .args([sig, "--", &format!("-{pid}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    };
    signal("-TERM");
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        signal("-KILL");
        let _ = child.wait().await;
    } else {
        // The leader is gone; make sure nothing of its group lingers.
        signal("-KILL");
    }
}

/// Resolves on Ctrl-C (SIGINT) or SIGTERM: how the sandbox, the poller and the demo know to stop
/// and clean up what they started.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "no SIGTERM handler; stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
