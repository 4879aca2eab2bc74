//! A minimal Lambda Runtime API on loopback, enough to run a real function binary the way the
//! Lambda service does (`AWS_LAMBDA_RUNTIME_API=127.0.0.1:<port>`) and to time it: when the
//! process first asks for work (`GET .../invocation/next` = the end of its init), and when each
//! answer comes back. The benchmark uses it for cold starts and warm latency, and as the
//! poller's [`Invoker`] so the lead-sync stream runs through the release binary.
//!
//! Endpoints (runtime API 2018-06-01): `GET /runtime/invocation/next` (long-polls until an event
//! is queued; answers with the `Lambda-Runtime-Aws-Request-Id`, `-Deadline-Ms`,
//! `-Invoked-Function-Arn` and `-Trace-Id` headers), `POST /runtime/invocation/{id}/response`,
//! `POST /runtime/invocation/{id}/error`, `POST /runtime/init/error`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::local::poller::{InvokeError, Invoker};

/// How one invocation ended.
#[derive(Clone, Debug, PartialEq)]
pub enum InvocationResult {
    /// The handler's answer (JSON, or `Value::String` when it was not JSON).
    Response(Value),
    /// What the runtime posted to `/error` (`errorType`, `errorMessage`).
    Error(Value),
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeApiError {
    #[error("could not bind the runtime API: {0}")]
    Bind(#[source] std::io::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the function went away before answering")]
    Dropped,
}

struct Queued {
    id: String,
    payload: Value,
}

struct Inner {
    function_arn: String,
    tx: mpsc::UnboundedSender<Queued>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Queued>>,
    pending: Mutex<HashMap<String, oneshot::Sender<InvocationResult>>>,
    first_poll: Mutex<Option<Instant>>,
    polled: Notify,
    polls: AtomicU64,
    init_error: Mutex<Option<Value>>,
    next_id: AtomicU64,
}

/// A running runtime API (an axum server on its own task). Dropping it stops the server.
pub struct RuntimeApi {
    addr: SocketAddr,
    inner: Arc<Inner>,
    _stop: oneshot::Sender<()>,
}

impl RuntimeApi {
    /// Binds 127.0.0.1:0 and serves; `function_name` goes into the invoked function ARN.
    pub async fn start(function_name: &str) -> Result<RuntimeApi, RuntimeApiError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(RuntimeApiError::Bind)?;
        let addr = listener.local_addr().map_err(RuntimeApiError::Bind)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{function_name}"),
            tx,
            rx: tokio::sync::Mutex::new(rx),
            pending: Mutex::new(HashMap::new()),
            first_poll: Mutex::new(None),
            polled: Notify::new(),
            polls: AtomicU64::new(0),
            init_error: Mutex::new(None),
            next_id: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(inner.clone());
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(RuntimeApi {
            addr,
            inner,
            _stop: stop,
        })
    }

    /// The value for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// When the function first asked for work: the end of its init phase.
    pub fn first_poll_at(&self) -> Option<Instant> {
        *lock(&self.inner.first_poll)
    }

    /// How many `GET /next` requests arrived.
    pub fn polls(&self) -> u64 {
        self.inner.polls.load(Ordering::Relaxed)
    }

    /// Waits for the first `GET /next` (or gives up after `timeout`).
    pub async fn wait_first_poll(&self, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.polled.notified();
            if let Some(t) = self.first_poll_at() {
                return Some(t);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.first_poll_at();
            }
        }
    }

    /// What the function posted to `/runtime/init/error`, if anything.
    pub fn init_error(&self) -> Option<Value> {
        lock(&self.inner.init_error).clone()
    }

    /// Queues an event; the receiver yields its result.
    pub fn submit(&self, payload: Value) -> oneshot::Receiver<InvocationResult> {
        let n = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{n:08}-{}", uuid::Uuid::new_v4().simple());
        let (tx, rx) = oneshot::channel();
        lock(&self.inner.pending).insert(id.clone(), tx);
        // The receiver half lives in `inner`, so the channel cannot be closed while we exist.
        let _ = self.inner.tx.send(Queued { id, payload });
        rx
    }

    /// Queues an event and waits for its result.
    pub async fn invoke(
        &self,
        payload: Value,
        timeout: Duration,
    ) -> Result<InvocationResult, RuntimeApiError> {
        let rx = self.submit(payload);
        match tokio::time::timeout(timeout, rx).await {
            Err(_) => Err(RuntimeApiError::Timeout(timeout)),
            Ok(Err(_)) => Err(RuntimeApiError::Dropped),
            Ok(Ok(r)) => Ok(r),
        }
    }
}

/// The benchmark runs the poller against a release `lead-sync` process through this.
impl Invoker for Arc<RuntimeApi> {
    async fn invoke(&self, event: Value) -> Result<Value, InvokeError> {
        match RuntimeApi::invoke(self, event, Duration::from_secs(120)).await {
            Ok(InvocationResult::Response(v)) => Ok(v),
            Ok(InvocationResult::Error(e)) => Err(InvokeError::FunctionError {
                error_type: e["errorType"].as_str().unwrap_or("Unknown").to_owned(),
                message: e["errorMessage"].as_str().unwrap_or_default().to_owned(),
            }),
            Err(e) => Err(InvokeError::Unreachable(e.to_string())),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned lock only means another handler panicked; the data is still usable here.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn next(State(inner): State<Arc<Inner>>) -> impl IntoResponse {
    let now = Instant::now();
    {
        let mut first = lock(&inner.first_poll);
        if first.is_none() {
            *first = Some(now);
        }
    }
    inner.polls.fetch_add(1, Ordering::Relaxed);
    inner.polled.notify_waiters();
    let queued = inner.rx.lock().await.recv().await;
    let Some(q) = queued else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            HeaderMap::new(),
            Bytes::new(),
        );
    };
    let deadline_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() + 60_000)
        .unwrap_or(0);
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(name, v);
        }
    };
    put("lambda-runtime-aws-request-id", q.id.clone());
    put("lambda-runtime-deadline-ms", deadline_ms.to_string());
    put(
        "lambda-runtime-invoked-function-arn",
        inner.function_arn.clone(),
    );
    put(
        "lambda-runtime-trace-id",
        format!(
            "Root=1-{:08x}-{}",
            deadline_ms as u32,
            uuid::Uuid::new_v4().simple()
        ),
    );
    put("content-type", "application/json".into());
    (StatusCode::OK, h, Bytes::from(q.payload.to_string()))
}

fn body_value(body: &Bytes) -> Value {
    serde_json::from_slice(body)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()))
}

fn finish(inner: &Inner, id: &str, result: InvocationResult) -> (StatusCode, axum::Json<Value>) {
    match lock(&inner.pending).remove(id) {
        Some(tx) => {
            let _ = tx.send(result);
            (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"})))
        }
        None => (
            StatusCode::BAD_REQUEST,
            axum::Json(
                json!({"errorMessage": "unknown request id", "errorType": "InvalidRequestID"}),
            ),
        ),
    }
}

async fn response(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    finish(&inner, &id, InvocationResult::Response(body_value(&body)))
}

async fn error(
    State(inner): State<Arc<Inner>>,
    Path(id): Path<String>,
    body: Bytes,
) -> impl IntoResponse {
    finish(&inner, &id, InvocationResult::Error(body_value(&body)))
}

async fn init_error(State(inner): State<Arc<Inner>>, body: Bytes) -> impl IntoResponse {
    *lock(&inner.init_error) = Some(body_value(&body));
    (StatusCode::ACCEPTED, axum::Json(json!({"status": "OK"})))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plays the runtime client by hand: poll, read the headers, answer; the API hands the answer
    /// to whoever submitted the event.
    #[tokio::test]
    async fn an_event_goes_out_with_lambda_headers_and_its_answer_comes_back() {
        let api = RuntimeApi::start("fn-x").await.unwrap();
        let base = format!("http://{}/2018-06-01/runtime", api.address());
        let http = reqwest::Client::new();
        let rx = api.submit(json!({"hello": 1}));
        let resp = http
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .unwrap();
        assert!(api.first_poll_at().is_some());
        let id = resp.headers()["lambda-runtime-aws-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            resp.headers()["lambda-runtime-invoked-function-arn"]
                .to_str()
                .unwrap()
                .ends_with(":function:fn-x")
        );
        let deadline: u128 = resp.headers()["lambda-runtime-deadline-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(deadline > 0);
        assert!(resp.headers().contains_key("lambda-runtime-trace-id"));
        assert_eq!(resp.json::<Value>().await.unwrap(), json!({"hello": 1}));
        let r = http
            .post(format!("{base}/invocation/{id}/response"))
            .body(r#"{"ok":true}"#)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        assert_eq!(
            rx.await.unwrap(),
            InvocationResult::Response(json!({"ok": true}))
        );

        let rx = api.submit(json!({}));
        let resp = http
            .get(format!("{base}/invocation/next"))
            .send()
            .await
            .unwrap();
        let id = resp.headers()["lambda-runtime-aws-request-id"]
            .to_str()
            .unwrap()
            .to_owned();
        http.post(format!("{base}/invocation/{id}/error"))
            .body(r#"{"errorType":"Boom","errorMessage":"x"}"#)
            .send()
            .await
            .unwrap();
        assert!(
            matches!(rx.await.unwrap(), InvocationResult::Error(e) if e["errorType"] == "Boom")
        );
        assert_eq!(api.polls(), 2);
        let unknown = http
            .post(format!("{base}/invocation/nope/response"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(unknown.status(), 400);
    }
}
