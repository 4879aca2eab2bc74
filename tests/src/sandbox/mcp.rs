//! The MCP Streamable HTTP endpoint (`/mcp/` and `/mcp`) as the MCP specification describes
//! the server side: bearer auth (401 with `WWW-Authenticate`), the Accept rule (406), sessions
//! (400 without the id, 404 once gone), the protocol-version header, 202 for notifications, no
//! batches, paginated `tools/list`, and JSON or SSE answers. Faults and the leaky bucket sit in
//! front exactly where a real portal's would: faults before anything, the bucket on `tools/call`.
//! With a corpus catalogue configured, `tools/list` and `tools/call` are that server's
//! (`corpus.rs`); everything around them (auth, sessions, bucket, faults, stats) stays the same.
//! Each request is served by the portal its bearer token belongs to (`Portals::route`), with
//! that portal's faults, bucket, sessions and counters.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde_json::{Value, json};

use super::corpus::{self, Answer, Failure};
use super::faults::FaultAction;
use super::portal::{RestError, RestOk};
use super::tools;
use super::{AnswerMode, AnswerStyle, Routes, Session, State, lock};

/// Versions the sandbox speaks, newest first.
pub(crate) const SUPPORTED_VERSIONS: &[&str] =
    &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// Answered when the client proposes a version the sandbox does not know.
const FALLBACK_VERSION: &str = "2025-06-18";
/// From this version on, the client must send `MCP-Protocol-Version` (dates compare as text).
const HEADER_REQUIRED_FROM: &str = "2025-06-18";
/// `tools/list` page size, small so clients must follow `nextCursor`.
const TOOLS_PAGE: usize = 4;

const SESSION_HEADER: &str = "mcp-session-id";
const VERSION_HEADER: &str = "mcp-protocol-version";

pub(crate) fn router(state: Routes) -> Router {
    let route = post(post_mcp).get(get_mcp).delete(delete_mcp);
    Router::new()
        .route("/mcp/", route.clone())
        .route("/mcp", route)
        .with_state(state)
}

/// What one POST produces, before it is rendered as HTTP.
enum Reply {
    /// A plain HTTP answer outside JSON-RPC (errors of the transport or of the portal).
    Http {
        status: StatusCode,
        body: Value,
        www_authenticate: bool,
    },
    /// A JSON-RPC response, rendered as JSON or SSE per `answer_mode`.
    Rpc {
        message: Value,
        session_id: Option<String>,
        mode: AnswerMode,
    },
    /// 202, no body: notifications and client responses.
    Accepted,
}

fn http(status: StatusCode, body: Value) -> Reply {
    Reply::Http {
        status,
        body,
        www_authenticate: false,
    }
}

async fn post_mcp(AxState(routes): AxState<Routes>, headers: HeaderMap, body: Bytes) -> Response {
    let shared = routes.route(&headers);
    let (action, latency) = {
        let mut st = lock(&shared);
        st.calls.total_http += 1;
        let action = st.faults.decide();
        (action, st.faults.latency_ms)
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    match action {
        FaultAction::Error5xx => {
            lock(&shared).calls.outcome("fault_5xx");
            return render(http(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "INTERNAL_SERVER_ERROR", "error_description": "Internal server error"}),
            ));
        }
        FaultAction::Drop => {
            lock(&shared).calls.outcome("dropped");
            return dropped_connection();
        }
        FaultAction::Pass => {}
    }
    let reply = {
        let mut st = lock(&shared);
        let (reply, outcome) = handle_post(&mut st, &headers, &body);
        st.calls.outcome(outcome);
        reply
    };
    render(reply)
}

/// A response whose body fails before its first byte: hyper then aborts the connection without
/// flushing the already-buffered head, so the client sees a closed connection and no status.
fn dropped_connection() -> Response {
    let failing = futures::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "sandbox fault: connection dropped",
        ))
    });
    Response::new(Body::from_stream(failing))
}

async fn get_mcp(AxState(routes): AxState<Routes>, headers: HeaderMap) -> Response {
    let shared = routes.route(&headers);
    {
        let mut st = lock(&shared);
        st.calls.total_http += 1;
        st.calls.outcome("get_stream");
    }
    let mut r = (
        StatusCode::METHOD_NOT_ALLOWED,
        axum::Json(json!({"error": "METHOD_NOT_ALLOWED", "error_description": "The GET stream is not offered"})),
    )
        .into_response();
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("POST, DELETE"));
    r
}

async fn delete_mcp(AxState(routes): AxState<Routes>, headers: HeaderMap) -> Response {
    let shared = routes.route(&headers);
    let reply = {
        let mut st = lock(&shared);
        st.calls.total_http += 1;
        let (reply, outcome) = handle_delete(&mut st, &headers);
        st.calls.outcome(outcome);
        reply
    };
    render(reply)
}

fn handle_delete(st: &mut State, headers: &HeaderMap) -> (Reply, &'static str) {
    if let Err(r) = authenticate(st, headers) {
        return (r, "unauthorized");
    }
    if !st.config.sessions {
        // No sessions to end: the spec lets a server refuse DELETE with 405.
        return (
            http(
                StatusCode::METHOD_NOT_ALLOWED,
                json!({"error": "METHOD_NOT_ALLOWED", "error_description": "This server issues no sessions"}),
            ),
            "delete_without_sessions",
        );
    }
    let Some(id) = header_str(headers, SESSION_HEADER) else {
        return (
            http(
                StatusCode::BAD_REQUEST,
                json!({"error": "Bad Request: Mcp-Session-Id header is required"}),
            ),
            "session_missing",
        );
    };
    if st.sessions.remove(id).is_none() {
        return (
            http(StatusCode::NOT_FOUND, json!({"error": "Session not found"})),
            "session_expired",
        );
    }
    (http(StatusCode::OK, json!({})), "session_deleted")
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// The token of a valid `Authorization: Bearer <token>`, plus whether it is an admin's.
fn authenticate(st: &State, headers: &HeaderMap) -> Result<(String, bool), Reply> {
    let token = header_str(headers, "authorization")
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty());
    match token.and_then(|t| st.tokens.get(t).map(|admin| (t.to_owned(), *admin))) {
        Some(ok) => Ok(ok),
        None => Err(Reply::Http {
            status: StatusCode::UNAUTHORIZED,
            body: json!({"error": "expired_token", "error_description": "The access token provided has expired or is invalid."}),
            www_authenticate: true,
        }),
    }
}

fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// Handles one POST under the state lock; returns the reply and its `by_outcome` label.
fn handle_post(st: &mut State, headers: &HeaderMap, body: &[u8]) -> (Reply, &'static str) {
    let (token, admin) = match authenticate(st, headers) {
        Ok(t) => t,
        Err(r) => return (r, "unauthorized"),
    };
    let accept = header_str(headers, "accept")
        .unwrap_or("")
        .to_ascii_lowercase();
    if !(accept.contains("application/json") && accept.contains("text/event-stream")) {
        return (
            http(
                StatusCode::NOT_ACCEPTABLE,
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600,
                  "message": "Not Acceptable: client must accept both application/json and text/event-stream"}}),
            ),
            "not_acceptable",
        );
    }
    let content_type = header_str(headers, "content-type").unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return (
            http(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600,
                  "message": "Unsupported Media Type: Content-Type must be application/json"}}),
            ),
            "unsupported_media_type",
        );
    }
    let msg: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => {
            return (
                http(
                    StatusCode::BAD_REQUEST,
                    rpc_error(&Value::Null, -32700, "Parse error"),
                ),
                "bad_request",
            );
        }
    };
    let Some(obj) = msg.as_object() else {
        let why = if msg.is_array() {
            "Invalid Request: batches are not supported"
        } else {
            "Invalid Request"
        };
        return (
            http(
                StatusCode::BAD_REQUEST,
                rpc_error(&Value::Null, -32600, why),
            ),
            "bad_request",
        );
    };
    let id = obj.get("id").cloned();
    let method = obj.get("method").and_then(Value::as_str);
    let valid_id = id.as_ref().is_none_or(|i| i.is_string() || i.is_number());
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") || !valid_id {
        return (
            http(
                StatusCode::BAD_REQUEST,
                rpc_error(&id.unwrap_or(Value::Null), -32600, "Invalid Request"),
            ),
            "bad_request",
        );
    }
    let mode = st.config.answer_mode;
    if method == Some("initialize") {
        let Some(id) = id else {
            return (
                http(
                    StatusCode::BAD_REQUEST,
                    rpc_error(&Value::Null, -32600, "initialize must be a request"),
                ),
                "bad_request",
            );
        };
        return initialize(st, &token, &id, obj.get("params"));
    }

    // Every later message belongs to a session (when sessions are on) and a version.
    let negotiated = if st.config.sessions {
        let Some(sid) = header_str(headers, SESSION_HEADER) else {
            return (
                http(
                    StatusCode::BAD_REQUEST,
                    rpc_error(
                        &Value::Null,
                        -32600,
                        "Bad Request: Mcp-Session-Id header is required",
                    ),
                ),
                "session_missing",
            );
        };
        match st.sessions.get(sid) {
            Some(s) if s.token == token => Some(s.protocol_version.clone()),
            _ => {
                return (
                    http(
                        StatusCode::NOT_FOUND,
                        rpc_error(&Value::Null, -32001, "Session not found"),
                    ),
                    "session_expired",
                );
            }
        }
    } else {
        st.versions_by_token.get(&token).cloned()
    };
    let sent = header_str(headers, VERSION_HEADER);
    let version_ok = match (&negotiated, sent) {
        (Some(n), Some(s)) => n == s,
        (Some(n), None) => n.as_str() < HEADER_REQUIRED_FROM,
        (None, Some(s)) => SUPPORTED_VERSIONS.contains(&s),
        (None, None) => true,
    };
    if !version_ok {
        return (
            http(
                StatusCode::BAD_REQUEST,
                rpc_error(
                    &Value::Null,
                    -32600,
                    "Bad Request: missing or unsupported MCP-Protocol-Version header",
                ),
            ),
            "bad_protocol_version",
        );
    }

    let (Some(id), Some(method)) = (id, method) else {
        // A notification (no id) or a response from the client: accepted, no body.
        return (Reply::Accepted, "accepted");
    };
    let params = obj.get("params").cloned().unwrap_or_else(|| json!({}));
    let rpc = |message: Value| Reply::Rpc {
        message,
        session_id: None,
        mode,
    };
    match method {
        "ping" => (rpc(rpc_result(&id, json!({}))), "ok"),
        "tools/list" => {
            st.calls.tools_list += 1;
            match tools_page(st, &params) {
                Ok(result) => (rpc(rpc_result(&id, result)), "ok"),
                Err(msg) => (rpc(rpc_error(&id, -32602, msg)), "rpc_error"),
            }
        }
        "tools/call" => {
            let at = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            st.calls
                .tools_call_ms_by_token
                .entry(token.clone())
                .or_default()
                .push(at);
            tools_call(st, &id, &params, admin)
        }
        _ => (rpc(rpc_error(&id, -32601, "Method not found")), "rpc_error"),
    }
}

fn initialize(
    st: &mut State,
    token: &str,
    id: &Value,
    params: Option<&Value>,
) -> (Reply, &'static str) {
    st.calls.initialize += 1;
    let asked = params
        .and_then(|p| p.get("protocolVersion"))
        .and_then(Value::as_str);
    let version = match (&st.config.protocol_version, asked) {
        (Some(fixed), _) => fixed.clone(),
        (None, Some(v)) if SUPPORTED_VERSIONS.contains(&v) => v.to_owned(),
        (None, _) => FALLBACK_VERSION.to_owned(),
    };
    let session_id = if st.config.sessions {
        let sid = uuid::Uuid::new_v4().to_string();
        st.sessions.insert(
            sid.clone(),
            Session {
                token: token.to_owned(),
                protocol_version: version.clone(),
            },
        );
        Some(sid)
    } else {
        st.versions_by_token
            .insert(token.to_owned(), version.clone());
        None
    };
    let server_info = st
        .config
        .catalogue
        .and_then(corpus::Catalogue::server_info)
        .unwrap_or_else(
            || json!({"name": st.config.server_name, "version": env!("CARGO_PKG_VERSION")}),
        );
    let result = json!({
        "protocolVersion": version,
        "capabilities": {"tools": {}},
        "serverInfo": server_info,
        "instructions": "Bitrix24 sandbox portal: CRM tools act with the connecting user's permissions.",
    });
    (
        Reply::Rpc {
            message: rpc_result(id, result),
            session_id,
            mode: st.config.answer_mode,
        },
        "ok",
    )
}

/// One `tools/list` page; the cursor is an opaque offset.
fn tools_page(st: &State, params: &Value) -> Result<Value, &'static str> {
    let all = match st.config.catalogue {
        Some(c) => c.tools(),
        None => tools::catalogue(st.config.shape),
    };
    let start = match params.get("cursor") {
        None | Some(Value::Null) => 0,
        Some(Value::String(c)) => c
            .strip_prefix("page:")
            .and_then(|n| n.parse::<usize>().ok())
            .filter(|n| *n < all.len())
            .ok_or("Invalid params: unknown cursor")?,
        Some(_) => return Err("Invalid params: cursor must be a string"),
    };
    let page: Vec<Value> = all.iter().skip(start).take(TOOLS_PAGE).cloned().collect();
    let mut result = json!({"tools": page});
    if start + TOOLS_PAGE < all.len() {
        result["nextCursor"] = json!(format!("page:{}", start + TOOLS_PAGE));
    }
    Ok(result)
}

fn tools_call(st: &mut State, id: &Value, params: &Value, admin: bool) -> (Reply, &'static str) {
    st.calls.tools_call += 1;
    let mode = st.config.answer_mode;
    let rpc = |message: Value| Reply::Rpc {
        message,
        session_id: None,
        mode,
    };
    let Some(name) = params.get("name").and_then(Value::as_str) else {
        return (
            rpc(rpc_error(id, -32602, "Invalid params: name is required")),
            "rpc_error",
        );
    };
    let args = params
        .get("arguments")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(c) = st.config.catalogue {
        return corpus_call(st, c, id, name, &args, admin);
    }
    let Some(resolved) = tools::resolve(st.config.shape, name, &args) else {
        return (
            rpc(rpc_error(id, -32602, &format!("Unknown tool: {name}"))),
            "rpc_error",
        );
    };
    let (rate, depth) = (st.config.bucket_rate_per_sec, st.config.bucket_depth);
    if !st.bucket.try_add(rate, depth) {
        return (
            http(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}),
            ),
            "rate_limited",
        );
    }
    *st.calls.by_tool.entry(name.to_owned()).or_default() += 1;
    let outcome = resolved.and_then(|call| {
        *st.calls
            .by_method
            .entry(call.method.to_ascii_lowercase())
            .or_default() += 1;
        if st.config.search_ignores_filter {
            st.portal
                .execute_ignoring_filters(&call.method, &call.params, admin)
        } else {
            st.portal.execute(&call.method, &call.params, admin)
        }
    });
    tracing::debug!(tool = name, ok = outcome.is_ok(), "sandbox tool call");
    let (result, label) = tool_result(st, outcome);
    (rpc(rpc_result(id, result)), label)
}

/// A `tools/call` in corpus mode: the server's unknown-tool answer, else the bucket, then the
/// server's translation, the portal's REST semantics and the server's answer format.
fn corpus_call(
    st: &mut State,
    c: corpus::Catalogue,
    id: &Value,
    name: &str,
    args: &Value,
    admin: bool,
) -> (Reply, &'static str) {
    let mode = st.config.answer_mode;
    let reply = |answer: Answer, failed: bool| -> (Reply, &'static str) {
        let (message, label) = match answer {
            Answer::Result(r) => (rpc_result(id, r), if failed { "tool_error" } else { "ok" }),
            Answer::RpcError { code, message } => (rpc_error(id, code, &message), "rpc_error"),
        };
        (
            Reply::Rpc {
                message,
                session_id: None,
                mode,
            },
            label,
        )
    };
    if !c.is_known(name) {
        return reply(corpus::unknown_tool(c, name), true);
    }
    let (rate, depth) = (st.config.bucket_rate_per_sec, st.config.bucket_depth);
    if !st.bucket.try_add(rate, depth) {
        return (
            http(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many requests"}),
            ),
            "rate_limited",
        );
    }
    *st.calls.by_tool.entry(name.to_owned()).or_default() += 1;
    let outcome = corpus::resolve(c, name, args).and_then(|plan| {
        let mut run = |params: &Value| {
            *st.calls
                .by_method
                .entry(plan.call.method.to_ascii_lowercase())
                .or_default() += 1;
            st.portal.execute(&plan.call.method, params, admin)
        };
        if !plan.all_pages {
            return run(&plan.call.params).map_err(Failure::from);
        }
        // A get_all-style client: every page from `start` on, concatenated.
        let mut params = plan.call.params.clone();
        let mut rows = Vec::new();
        let mut total = None;
        for _ in 0..corpus::MAX_PAGES {
            let page = run(&params)?;
            total = page.total;
            match page.result {
                Value::Array(a) => rows.extend(a),
                other => rows.push(other),
            }
            match (page.next, params.as_object_mut()) {
                (Some(next), Some(p)) => {
                    p.insert("start".to_owned(), json!(next));
                }
                _ => break,
            }
        }
        Ok(RestOk {
            result: Value::Array(rows),
            next: None,
            total,
        })
    });
    tracing::debug!(
        tool = name,
        catalogue = c.name(),
        ok = outcome.is_ok(),
        "sandbox corpus tool call"
    );
    let failed = outcome.is_err();
    reply(corpus::answer(c, name, args, outcome), failed)
}

/// The `tools/call` result for a REST outcome, per answer style and error style.
fn tool_result(st: &State, outcome: Result<RestOk, RestError>) -> (Value, &'static str) {
    match outcome {
        Ok(ok) => {
            let text = match st.config.answer_style {
                AnswerStyle::Bare => ok.result.to_string(),
                AnswerStyle::Envelope => envelope(ok).to_string(),
            };
            (json!({"content": [{"type": "text", "text": text}]}), "ok")
        }
        Err(e) if st.config.plain_text_errors => (
            json!({"content": [{"type": "text", "text": format!("Ошибка Bitrix24: {}", e.description)}]}),
            "tool_error",
        ),
        Err(e) => (
            json!({"content": [{"type": "text", "text": e.body().to_string()}], "isError": true}),
            "tool_error",
        ),
    }
}

/// The REST envelope: `result`, `next`/`total` for lists, and `time`.
pub(crate) fn envelope(ok: RestOk) -> Value {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default();
    let mut env = json!({
        "result": ok.result,
        "time": {"start": now, "finish": now + 0.01, "duration": 0.01, "processing": 0.005,
                 "date_start": "", "date_finish": "",
                 "operating_reset_at": now.floor() + 600.0, "operating": 0},
    });
    if let Some(next) = ok.next {
        env["next"] = json!(next);
    }
    if let Some(total) = ok.total {
        env["total"] = json!(total);
    }
    env
}

fn render(reply: Reply) -> Response {
    match reply {
        Reply::Accepted => StatusCode::ACCEPTED.into_response(),
        Reply::Http {
            status,
            body,
            www_authenticate,
        } => {
            let mut r = (status, axum::Json(body)).into_response();
            if www_authenticate {
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer error=\"invalid_token\""),
                );
            }
            r
        }
        Reply::Rpc {
            message,
            session_id,
            mode,
        } => {
            let mut r = match mode {
                AnswerMode::Json => (StatusCode::OK, axum::Json(message)).into_response(),
                AnswerMode::Sse => sse(&message),
            };
            if let Some(sid) = session_id.and_then(|s| HeaderValue::from_str(&s).ok()) {
                r.headers_mut().insert(SESSION_HEADER, sid);
            }
            r
        }
    }
}

/// An SSE answer: a server log notification first (clients must skip it), then the response.
fn sse(message: &Value) -> Response {
    let note = json!({"jsonrpc": "2.0", "method": "notifications/message",
                      "params": {"level": "info", "logger": "bitrix24-sandbox", "data": "processing request"}});
    let text = format!("event: message\ndata: {note}\n\nevent: message\ndata: {message}\n\n");
    let body = Body::from_stream(futures::stream::iter([Ok::<_, Infallible>(Bytes::from(
        text,
    ))]));
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
