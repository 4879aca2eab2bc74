//! A fault-injecting HTTP/1.1 proxy in front of moto_server, so the functions' AWS error handling
//! is tested against the errors the real AWS SDK for Rust sees from DynamoDB, KMS and SQS.
//!
//! Every request is forwarded unchanged (method, path, query, headers including `Host`, body);
//! for a chosen share of requests, per service and operation, a fault is answered instead:
//! throttling and KMS errors in each service's own wire format, HTTP 500, a delay (then forward
//! or reset), or a TCP reset without any answer. The plan changes at run time, in process
//! ([`AwsFaultProxy::set_plan`]) or over HTTP on the proxy's own port:
//!
//! * `GET /__faults` the plan, `POST /__faults` (a [`FaultPlan`] as JSON) replaces it;
//! * `GET /__faults/stats` the [`FaultStats`], `DELETE /__faults/stats` zeroes them.
//!
//! Operations are named by `X-Amz-Target` (`DynamoDB_20120810.PutItem`, `TrentService.Decrypt`,
//! `AmazonSQS.SendMessage`), or for the SQS query protocol by the `Action` form field. The service
//! is the SigV4 credential scope's (`dynamodb`, `kms`, `sqs`), else the one the target names.
//!
//! Like the sandbox, the proxy runs on its own thread and Tokio runtime, so it outlives the
//! runtime of the test that started it and a delay fault never stalls the test's executor.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::IncomingStream;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

/// The largest request body the proxy reads (DynamoDB batch writes stay far below).
const MAX_BODY: usize = 64 * 1024 * 1024;

/// What to inject.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// HTTP 400 `ThrottlingException` (DynamoDB, KMS); SQS: `RequestThrottled`.
    Throttle,
    /// HTTP 400 `ProvisionedThroughputExceededException` (a DynamoDB error; bare code elsewhere).
    ProvisionedThroughput,
    /// HTTP 500: DynamoDB `InternalServerError`, KMS `KMSInternalException`, SQS `InternalError`.
    Http500,
    /// Wait `delay_ms`, then forward (or reset, see [`FaultRule::then`]).
    Delay,
    /// Close the connection with a TCP RST, without any answer.
    Reset,
    /// HTTP 400 `KMSInvalidStateException`; SQS: `KMS.InvalidStateException`.
    KmsInvalidState,
    /// HTTP 400 `DisabledException`; SQS: `KMS.DisabledException`.
    KmsDisabled,
    /// `AccessDeniedException` (HTTP 400); SQS: `AccessDenied` (HTTP 403).
    AccessDenied,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Throttle => "throttle",
            Self::ProvisionedThroughput => "provisioned_throughput",
            Self::Http500 => "http500",
            Self::Delay => "delay",
            Self::Reset => "reset",
            Self::KmsInvalidState => "kms_invalid_state",
            Self::KmsDisabled => "kms_disabled",
            Self::AccessDenied => "access_denied",
        }
    }
}

/// What a [`FaultKind::Delay`] does once the delay is over.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterDelay {
    /// Forward the request (it still takes effect upstream if the client gave up meanwhile).
    #[default]
    Forward,
    /// Reset the connection: the request never reaches upstream (`"drop"` is accepted too).
    #[serde(alias = "drop")]
    Reset,
}

fn wildcard() -> String {
    "*".to_owned()
}

/// One fault: which requests (`service`, `operation`, `*` = any, case-insensitive) and what share
/// of them (0.0..=1.0) get `fault`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultRule {
    /// `dynamodb`, `kms`, `sqs` or `*`.
    #[serde(default = "wildcard")]
    pub service: String,
    /// `PutItem`, `Decrypt`, `SendMessage`, ... or `*`.
    #[serde(default = "wildcard")]
    pub operation: String,
    pub fault: FaultKind,
    pub share: f64,
    /// For [`FaultKind::Delay`] (default 5000 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// For [`FaultKind::Delay`]: forward (default) or reset once the delay is over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<AfterDelay>,
    /// Overrides the error code of an error fault (the JSON `__type` and, for SQS, the
    /// `x-amzn-query-error` code), e.g. `ThrottlingException` for an SQS throttle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Overrides the error message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl FaultRule {
    pub fn new(service: &str, operation: &str, fault: FaultKind, share: f64) -> Self {
        Self {
            service: service.to_owned(),
            operation: operation.to_owned(),
            fault,
            share,
            delay_ms: None,
            then: None,
            code: None,
            message: None,
        }
    }

    /// A [`FaultKind::Delay`] of `delay_ms`, then `then`.
    pub fn delay(
        service: &str,
        operation: &str,
        share: f64,
        delay_ms: u64,
        then: AfterDelay,
    ) -> Self {
        Self {
            delay_ms: Some(delay_ms),
            then: Some(then),
            ..Self::new(service, operation, FaultKind::Delay, share)
        }
    }

    pub fn with_code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    fn matches(&self, op: &Operation) -> bool {
        let m = |pat: &str, v: &str| pat == "*" || pat.eq_ignore_ascii_case(v);
        m(&self.service, &op.service) && m(&self.operation, &op.operation)
    }
}

/// The faults to inject. For one request, the shares of the rules it matches split `[0, 1)` in
/// rule order (one draw per matching request), so they add up; with no matching rule, no draw.
/// With a `seed` the draws are deterministic for a given order of matching requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultPlan {
    #[serde(default)]
    pub rules: Vec<FaultRule>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl FaultPlan {
    /// No faults: everything is forwarded.
    pub fn none() -> Self {
        Self::default()
    }

    pub fn rule(mut self, rule: FaultRule) -> Self {
        self.rules.push(rule);
        self
    }

    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }
}

/// Counters for one `service/operation`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OperationStats {
    /// Every request seen.
    pub requests: u64,
    /// Requests sent upstream and answered (a delay-then-forward counts here and as injected).
    pub forwarded: u64,
    /// Requests that got a fault.
    pub injected: u64,
    /// Forwards that failed (upstream down): answered 502.
    pub upstream_errors: u64,
    /// Injected faults by [`FaultKind::name`].
    pub by_fault: BTreeMap<String, u64>,
}

/// What went through the proxy; `by_operation` is keyed `service/operation`
/// (`dynamodb/PutItem`, `sqs/SendMessage`, `unknown/unknown`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultStats {
    pub requests: u64,
    pub forwarded: u64,
    pub injected: u64,
    pub upstream_errors: u64,
    pub by_operation: BTreeMap<String, OperationStats>,
}

impl FaultStats {
    pub fn operation(&self, service: &str, operation: &str) -> OperationStats {
        self.by_operation
            .get(&format!("{service}/{operation}"))
            .cloned()
            .unwrap_or_default()
    }

    fn op(&mut self, op: &Operation) -> &mut OperationStats {
        self.by_operation.entry(op.key()).or_default()
    }
}

/// SplitMix64: small, fast, and the same sequence on every platform and crate version.
#[derive(Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn from_entropy() -> Self {
        Self(rand::random())
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

struct Inner {
    plan: FaultPlan,
    rng: SplitMix64,
    stats: FaultStats,
}

impl Inner {
    fn set_plan(&mut self, plan: FaultPlan) {
        self.rng = plan.seed.map_or_else(SplitMix64::from_entropy, SplitMix64);
        self.plan = plan;
    }

    /// Counts the request and picks its fault, if any.
    fn decide(&mut self, op: &Operation) -> Option<FaultRule> {
        self.stats.requests += 1;
        self.stats.op(op).requests += 1;
        let matching: Vec<&FaultRule> = self.plan.rules.iter().filter(|r| r.matches(op)).collect();
        if matching.is_empty() {
            return None;
        }
        let draw = self.rng.next_f64();
        let mut upto = 0.0;
        let rule = matching.into_iter().find(|r| {
            upto += if r.share.is_finite() {
                r.share.clamp(0.0, 1.0)
            } else {
                0.0
            };
            draw < upto
        })?;
        let rule = rule.clone();
        self.stats.injected += 1;
        let s = self.stats.op(op);
        s.injected += 1;
        *s.by_fault.entry(rule.fault.name().to_owned()).or_default() += 1;
        Some(rule)
    }

    fn forwarded(&mut self, op: &Operation, ok: bool) {
        if ok {
            self.stats.forwarded += 1;
            self.stats.op(op).forwarded += 1;
        } else {
            self.stats.upstream_errors += 1;
            self.stats.op(op).upstream_errors += 1;
        }
    }
}

struct Shared {
    inner: Mutex<Inner>,
    /// `http://host:port`, no trailing slash.
    upstream: String,
    client: Client<HttpConnector, Body>,
}

impl Shared {
    /// Locks the state; a panic elsewhere while locked must not wedge every later request.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A running proxy on `127.0.0.1:<port>`; dropping it stops the server.
pub struct AwsFaultProxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl AwsFaultProxy {
    /// Starts a proxy to `upstream` (`http://host:port`) on a free loopback port, with no faults.
    pub async fn start(upstream: &str) -> std::io::Result<Self> {
        Self::start_on(upstream, 0).await
    }

    /// Starts a proxy to `upstream` on `127.0.0.1:port` (0 = a free port).
    pub async fn start_on(upstream: &str, port: u16) -> std::io::Result<Self> {
        let upstream = parse_upstream(upstream)?;
        let listener = std::net::TcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                plan: FaultPlan::none(),
                rng: SplitMix64::from_entropy(),
                stats: FaultStats::default(),
            }),
            upstream,
            client,
        });
        let router = axum::Router::new()
            .route("/__faults", get(get_plan).post(post_plan))
            .route("/__faults/stats", get(get_stats).delete(delete_stats))
            .fallback(proxy)
            .with_state(shared.clone());
        let (tx, rx) = oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("aws-fault-proxy-{}", addr.port()))
            .spawn(move || serve_on_own_runtime(listener, router, rx))?;
        tracing::info!(%addr, upstream = %shared.upstream, "aws fault proxy listening");
        Ok(Self {
            shared,
            addr,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:<port>`: the endpoint URL to give the SDK.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Replaces the plan (and restarts the draws from its seed); the stats are kept.
    pub fn set_plan(&self, plan: FaultPlan) {
        self.shared.lock().set_plan(plan);
    }

    pub fn plan(&self) -> FaultPlan {
        self.shared.lock().plan.clone()
    }

    pub fn stats(&self) -> FaultStats {
        self.shared.lock().stats.clone()
    }

    pub fn reset_stats(&self) {
        self.shared.lock().stats = FaultStats::default();
    }
}

impl Drop for AwsFaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            // The thread may already be gone; nothing to stop then.
            let _ = tx.send(());
        }
    }
}

fn parse_upstream(upstream: &str) -> std::io::Result<String> {
    let bad = |why: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("upstream {upstream:?}: {why}"),
        )
    };
    let uri: Uri = upstream.parse().map_err(|_| bad("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("only http:// is supported"));
    }
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    Ok(format!("http://{authority}"))
}

fn serve_on_own_runtime(
    listener: std::net::TcpListener,
    router: axum::Router,
    shutdown: oneshot::Receiver<()>,
) {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "aws fault proxy runtime failed to build");
            return;
        }
    };
    rt.block_on(async move {
        let listener = match tokio::net::TcpListener::from_std(listener) {
            Ok(l) => ResetListener(l),
            Err(e) => {
                tracing::error!(error = %e, "aws fault proxy listener failed");
                return;
            }
        };
        let app = router.into_make_service_with_connect_info::<Conn>();
        tokio::select! {
            r = axum::serve(listener, app) => {
                if let Err(e) = r {
                    tracing::error!(error = %e, "aws fault proxy stopped");
                }
            }
            _ = shutdown => {}
        }
    });
    // Dropping the runtime here cancels every open connection task.
}

// --- Connections that can be reset --------------------------------------------------------------

/// Accepts connections whose socket can be armed to close with RST instead of FIN.
struct ResetListener(tokio::net::TcpListener);

/// A connection's handle for its requests: arming it makes the socket's close a TCP reset.
#[derive(Clone, Debug)]
struct Conn {
    reset: Arc<AtomicBool>,
}

impl axum::serve::Listener for ResetListener {
    type Io = ResettableStream;
    type Addr = Conn;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => {
                    // Best effort: SDK requests are small, one write each.
                    let _ = stream.set_nodelay(true);
                    let reset = Arc::new(AtomicBool::new(false));
                    let conn = Conn {
                        reset: reset.clone(),
                    };
                    return (ResettableStream { stream, reset }, conn);
                }
                // EMFILE and the like: back off instead of spinning (axum does the same).
                Err(e) => {
                    tracing::warn!(error = %e, "aws fault proxy accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        // Only used for logging by axum; a fresh, unarmed handle.
        self.0.local_addr().map(|_| Conn {
            reset: Arc::new(AtomicBool::new(false)),
        })
    }
}

impl Connected<IncomingStream<'_, ResetListener>> for Conn {
    fn connect_info(stream: IncomingStream<'_, ResetListener>) -> Self {
        stream.remote_addr().clone()
    }
}

/// A TCP stream that sets `SO_LINGER` 0 on drop once armed, so the kernel sends RST. Only armed
/// streams get it: a zero linger on every socket could cut off answers still in the send buffer.
struct ResettableStream {
    stream: TcpStream,
    reset: Arc<AtomicBool>,
}

impl Drop for ResettableStream {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.stream.set_zero_linger();
        }
    }
}

impl AsyncRead for ResettableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ResettableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if self.reset.load(Ordering::SeqCst) {
            // Never send FIN on an armed stream: the close must be the reset.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Arms the connection and answers with a body that fails before its first byte: hyper then
/// aborts the connection without writing the buffered head, and the armed socket closes with RST.
fn reset_connection(conn: &Conn) -> Response {
    conn.reset.store(true, Ordering::SeqCst);
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "aws fault proxy: connection reset",
        ))
    });
    Response::new(Body::from_stream(failing))
}

// --- Classifying requests -----------------------------------------------------------------------

/// How the request was encoded, so an injected error is encoded the way the SDK expects.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Protocol {
    /// awsJson 1.0/1.1 (`X-Amz-Target`); the error echoes the request's content type.
    Json(Option<HeaderValue>),
    /// awsQuery (`Action=` form body): errors are XML `ErrorResponse` documents.
    Query,
}

#[derive(Clone, Debug)]
struct Operation {
    service: String,
    operation: String,
    protocol: Protocol,
}

impl Operation {
    fn key(&self) -> String {
        format!("{}/{}", self.service, self.operation)
    }
}

/// The service of the SigV4 credential scope: `Credential=AKID/20250101/us-east-1/sqs/aws4_request`.
fn scope_service(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let cred = auth.split("Credential=").nth(1)?;
    let cred = cred.split([',', ' ']).next()?;
    let service = cred.split('/').nth(3)?;
    (!service.is_empty()).then(|| service.to_ascii_lowercase())
}

fn target_service(prefix: &str) -> String {
    match prefix {
        p if p.starts_with("DynamoDBStreams_") => "dynamodbstreams".to_owned(),
        p if p.starts_with("DynamoDB_") => "dynamodb".to_owned(),
        "TrentService" => "kms".to_owned(),
        "AmazonSQS" => "sqs".to_owned(),
        p => p.to_ascii_lowercase(),
    }
}

fn classify(headers: &HeaderMap, query: Option<&str>, body: &[u8]) -> Operation {
    let scope = scope_service(headers);
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        let (prefix, operation) = target.rsplit_once('.').unwrap_or(("", target));
        return Operation {
            service: scope.unwrap_or_else(|| target_service(prefix)),
            operation: operation.to_owned(),
            protocol: Protocol::Json(headers.get(header::CONTENT_TYPE).cloned()),
        };
    }
    let action = |bytes: &[u8]| {
        url::form_urlencoded::parse(bytes)
            .find(|(k, _)| k == "Action")
            .map(|(_, v)| v.into_owned())
    };
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let found =
        if form { action(body) } else { None }.or_else(|| query.and_then(|q| action(q.as_bytes())));
    match found {
        Some(operation) => Operation {
            service: scope.unwrap_or_else(|| "sqs".to_owned()),
            operation,
            protocol: Protocol::Query,
        },
        None => Operation {
            service: scope.unwrap_or_else(|| "unknown".to_owned()),
            operation: "unknown".to_owned(),
            protocol: Protocol::Json(headers.get(header::CONTENT_TYPE).cloned()),
        },
    }
}

// --- Injected errors ----------------------------------------------------------------------------

/// An error as one service puts it on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
struct WireError {
    status: StatusCode,
    /// The JSON `__type`.
    json_type: String,
    /// The awsQuery code (SQS: `x-amzn-query-error` on JSON, `<Code>` on query).
    query_code: String,
    /// `Sender` (client-side fault) or `Receiver` (server-side).
    fault_type: &'static str,
    message: String,
}

const DDB_NS: &str = "com.amazonaws.dynamodb.v20120810#";
const CORAL_NS: &str = "com.amazon.coral.service#";
const SQS_NS: &str = "com.amazonaws.sqs#";

fn wire_error(service: &str, rule: &FaultRule) -> WireError {
    let bad_request = StatusCode::BAD_REQUEST;
    // (status, JSON __type, query code, default message)
    let (status, json_type, query_code, message): (StatusCode, String, String, &str) =
        match (rule.fault, service) {
            (FaultKind::Throttle, "dynamodb") => (
                bad_request,
                format!("{DDB_NS}ThrottlingException"),
                "ThrottlingException".into(),
                "Throughput exceeds the current capacity of your table or index.",
            ),
            (FaultKind::Throttle, "sqs") => (
                bad_request,
                format!("{SQS_NS}RequestThrottled"),
                "RequestThrottled".into(),
                "Request is throttled.",
            ),
            (FaultKind::Throttle, _) => (
                bad_request,
                "ThrottlingException".into(),
                "ThrottlingException".into(),
                "Rate exceeded",
            ),
            (FaultKind::ProvisionedThroughput, s) => (
                bad_request,
                format!(
                    "{}ProvisionedThroughputExceededException",
                    if s == "dynamodb" { DDB_NS } else { "" }
                ),
                "ProvisionedThroughputExceededException".into(),
                "The level of configured provisioned throughput for the table was exceeded. \
                 Consider increasing your provisioning level with the UpdateTable API.",
            ),
            (FaultKind::Http500, "dynamodb") => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{DDB_NS}InternalServerError"),
                "InternalServerError".into(),
                "Internal server error",
            ),
            (FaultKind::Http500, "kms") => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "KMSInternalException".into(),
                "KMSInternalException".into(),
                "An internal error occurred.",
            ),
            (FaultKind::Http500, "sqs") => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{SQS_NS}InternalError"),
                "InternalError".into(),
                "We encountered an internal error. Please try again.",
            ),
            (FaultKind::Http500, _) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure".into(),
                "InternalFailure".into(),
                "Internal server error",
            ),
            (FaultKind::KmsInvalidState, "sqs") => (
                bad_request,
                format!("{SQS_NS}KmsInvalidState"),
                "KMS.InvalidStateException".into(),
                "The request was rejected because the state of the specified resource is not \
                 valid for this request.",
            ),
            (FaultKind::KmsInvalidState, _) => (
                bad_request,
                "KMSInvalidStateException".into(),
                "KMSInvalidStateException".into(),
                "The key is pending deletion or otherwise not in a valid state for this request.",
            ),
            (FaultKind::KmsDisabled, "sqs") => (
                bad_request,
                format!("{SQS_NS}KmsDisabled"),
                "KMS.DisabledException".into(),
                "The request was denied because the specified CMK isn't enabled.",
            ),
            (FaultKind::KmsDisabled, _) => (
                bad_request,
                "DisabledException".into(),
                "DisabledException".into(),
                "The key is disabled.",
            ),
            (FaultKind::AccessDenied, "sqs") => (
                StatusCode::FORBIDDEN,
                format!("{CORAL_NS}AccessDeniedException"),
                "AccessDenied".into(),
                "Access to the resource is denied.",
            ),
            (FaultKind::AccessDenied, "kms") => (
                bad_request,
                "AccessDeniedException".into(),
                "AccessDeniedException".into(),
                "User is not authorized to perform this operation because no identity-based \
                 policy allows it.",
            ),
            (FaultKind::AccessDenied, _) => (
                bad_request,
                format!("{CORAL_NS}AccessDeniedException"),
                "AccessDeniedException".into(),
                "User is not authorized to perform this operation.",
            ),
            // Not error answers; never rendered, but keep a sane fallback.
            (FaultKind::Delay | FaultKind::Reset, _) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "InternalFailure".into(),
                "InternalFailure".into(),
                "Internal server error",
            ),
        };
    let fault_type = if status.is_server_error() {
        "Receiver"
    } else {
        "Sender"
    };
    match &rule.code {
        Some(code) => WireError {
            status,
            json_type: code.clone(),
            query_code: code.clone(),
            fault_type,
            message: rule.message.clone().unwrap_or_else(|| message.to_owned()),
        },
        None => WireError {
            status,
            json_type,
            query_code,
            fault_type,
            message: rule.message.clone().unwrap_or_else(|| message.to_owned()),
        },
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The injected error answer, in the request's protocol and the service's dialect.
fn error_response(op: &Operation, rule: &FaultRule) -> Response {
    let e = wire_error(&op.service, rule);
    let request_id = uuid::Uuid::new_v4().to_string();
    let mut resp = match &op.protocol {
        Protocol::Json(content_type) => {
            let body = serde_json::json!({"__type": e.json_type, "message": e.message});
            let mut r = Response::new(Body::from(body.to_string()));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                content_type
                    .clone()
                    .unwrap_or_else(|| HeaderValue::from_static("application/x-amz-json-1.0")),
            );
            if op.service == "sqs"
                && let Ok(v) = HeaderValue::from_str(&format!("{};{}", e.query_code, e.fault_type))
            {
                r.headers_mut()
                    .insert(HeaderName::from_static("x-amzn-query-error"), v);
            }
            r
        }
        Protocol::Query => {
            let body = format!(
                "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"http://queue.amazonaws.com/doc/2012-11-05/\">\
                 <Error><Type>{}</Type><Code>{}</Code><Message>{}</Message><Detail/></Error>\
                 <RequestId>{request_id}</RequestId></ErrorResponse>",
                e.fault_type,
                xml_escape(&e.query_code),
                xml_escape(&e.message),
            );
            let mut r = Response::new(Body::from(body));
            r.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/xml"));
            r
        }
    };
    *resp.status_mut() = e.status;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut()
            .insert(HeaderName::from_static("x-amzn-requestid"), v);
    }
    resp
}

// --- Handlers -----------------------------------------------------------------------------------

/// Connection-level headers: they describe one hop, so they are not forwarded either way.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for h in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::TE,
        header::TRAILER,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(h);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

async fn proxy(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<Conn>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("aws fault proxy: cannot read the request body: {e}"),
            )
                .into_response();
        }
    };
    let op = classify(&parts.headers, parts.uri.query(), &body);
    let rule = shared.lock().decide(&op);
    let mut delay = None;
    if let Some(rule) = rule {
        match rule.fault {
            FaultKind::Reset => return reset_connection(&conn),
            FaultKind::Delay => {
                let d = Duration::from_millis(rule.delay_ms.unwrap_or(5000));
                if rule.then == Some(AfterDelay::Reset) {
                    tokio::time::sleep(d).await;
                    return reset_connection(&conn);
                }
                delay = Some(d);
            }
            _ => return error_response(&op, &rule),
        }
    }
    // A task of its own: hyper drops this handler when the client hangs up (an SDK timeout), but
    // a request that reached AWS still takes effect there, so the forward must carry on.
    let task = tokio::spawn(async move {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        forward(&shared, &op, parts, body).await
    });
    match task.await {
        Ok(resp) => resp,
        Err(e) => (
            StatusCode::BAD_GATEWAY,
            format!("aws fault proxy: forward task failed: {e}"),
        )
            .into_response(),
    }
}

async fn forward(
    shared: &Shared,
    op: &Operation,
    mut parts: http::request::Parts,
    body: Bytes,
) -> Response {
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    parts.uri = match format!("{}{path}", shared.upstream).parse() {
        Ok(u) => u,
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                format!("aws fault proxy: bad path: {e}"),
            )
                .into_response();
        }
    };
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    // The original Host header stays: SigV4 signed it, and moto builds queue URLs from it.
    let upstream_req = http::Request::from_parts(parts, Body::from(body));
    match shared.client.request(upstream_req).await {
        Ok(resp) => {
            shared.lock().forwarded(op, true);
            let (mut parts, body) = resp.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            shared.lock().forwarded(op, false);
            tracing::warn!(error = %e, upstream = %shared.upstream, "aws fault proxy: upstream failed");
            (
                StatusCode::BAD_GATEWAY,
                format!("aws fault proxy: upstream {} failed: {e}", shared.upstream),
            )
                .into_response()
        }
    }
}

async fn get_plan(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.lock().plan.clone()).into_response()
}

async fn post_plan(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<FaultPlan>(&body) {
        Ok(plan) => {
            shared.lock().set_plan(plan.clone());
            axum::Json(plan).into_response()
        }
        Err(e) => (
            StatusCode::BAD_REQUEST,
            axum::Json(serde_json::json!({"error": format!("bad fault plan: {e}")})),
        )
            .into_response(),
    }
}

async fn get_stats(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(shared.lock().stats.clone()).into_response()
}

async fn delete_stats(State(shared): State<Arc<Shared>>) -> Response {
    let old = std::mem::take(&mut shared.lock().stats);
    axum::Json(old).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(service: &str, operation: &str) -> Operation {
        Operation {
            service: service.to_owned(),
            operation: operation.to_owned(),
            protocol: Protocol::Query,
        }
    }

    fn inner(plan: FaultPlan) -> Inner {
        let mut i = Inner {
            plan: FaultPlan::none(),
            rng: SplitMix64(0),
            stats: FaultStats::default(),
        };
        i.set_plan(plan);
        i
    }

    #[test]
    fn plan_parses_the_documented_shape() {
        let plan: FaultPlan = serde_json::from_str(
            r#"{"rules":[{"service":"dynamodb","operation":"PutItem","fault":"provisioned_throughput","share":0.1},
                        {"service":"*","operation":"*","fault":"delay","share":0.5,"delay_ms":300,"then":"drop"}],
                "seed":7}"#,
        )
        .unwrap();
        assert_eq!(plan.seed, Some(7));
        assert_eq!(plan.rules[0].fault, FaultKind::ProvisionedThroughput);
        assert_eq!(plan.rules[1].then, Some(AfterDelay::Reset));
        assert!(
            serde_json::from_str::<FaultPlan>(r#"{"rules":[{"fault":"nope","share":1}]}"#).is_err()
        );
    }

    #[test]
    fn seeded_draws_repeat_and_shares_partition() {
        let plan = FaultPlan::none()
            .rule(FaultRule::new("sqs", "*", FaultKind::Throttle, 0.25))
            .rule(FaultRule::new("*", "SendMessage", FaultKind::Http500, 0.25))
            .seed(42);
        let run = |plan: FaultPlan| {
            let mut i = inner(plan);
            (0..1000)
                .map(|_| i.decide(&op("sqs", "SendMessage")).map(|r| r.fault))
                .collect::<Vec<_>>()
        };
        let a = run(plan.clone());
        assert_eq!(a, run(plan));
        let throttles = a
            .iter()
            .filter(|f| **f == Some(FaultKind::Throttle))
            .count();
        let errors = a.iter().filter(|f| **f == Some(FaultKind::Http500)).count();
        assert!((200..300).contains(&throttles), "{throttles}");
        assert!((200..300).contains(&errors), "{errors}");
    }

    #[test]
    fn rules_match_service_and_operation() {
        let mut i =
            inner(FaultPlan::none().rule(FaultRule::new("kms", "decrypt", FaultKind::Reset, 1.0)));
        assert!(i.decide(&op("kms", "Decrypt")).is_some());
        assert!(i.decide(&op("kms", "Encrypt")).is_none());
        assert!(i.decide(&op("sqs", "Decrypt")).is_none());
        assert_eq!(i.stats.requests, 3);
        assert_eq!(i.stats.injected, 1);
        assert_eq!(i.stats.operation("kms", "Decrypt").by_fault["reset"], 1);
    }

    #[test]
    fn classifies_json_and_query_requests() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("DynamoDB_20120810.PutItem"),
        );
        let o = classify(&h, None, b"{}");
        assert_eq!(
            (o.service.as_str(), o.operation.as_str()),
            ("dynamodb", "PutItem")
        );
        h.insert(
            "x-amz-target",
            HeaderValue::from_static("TrentService.Decrypt"),
        );
        assert_eq!(classify(&h, None, b"{}").service, "kms");
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static(
                "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sqs/aws4_request, \
                 SignedHeaders=host, Signature=00",
            ),
        );
        let o = classify(
            &h,
            None,
            b"Action=SendMessage&Version=2012-11-05&MessageBody=hi",
        );
        assert_eq!(
            (o.service.as_str(), o.operation.as_str()),
            ("sqs", "SendMessage")
        );
        assert_eq!(o.protocol, Protocol::Query);
    }

    #[test]
    fn sqs_errors_carry_the_query_code() {
        let e = wire_error(
            "sqs",
            &FaultRule::new("sqs", "*", FaultKind::KmsInvalidState, 1.0),
        );
        assert_eq!(e.query_code, "KMS.InvalidStateException");
        let e = wire_error(
            "sqs",
            &FaultRule::new("sqs", "*", FaultKind::Throttle, 1.0).with_code("ThrottlingException"),
        );
        assert_eq!(
            (e.json_type.as_str(), e.query_code.as_str()),
            ("ThrottlingException", "ThrottlingException")
        );
    }
}
