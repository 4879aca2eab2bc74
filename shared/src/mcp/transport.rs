//! Moves one JSON-RPC message per HTTP POST (MCP Streamable HTTP) and classifies what
//! comes back: HTTP status and Bitrix24 error bodies into [`McpError`], `application/json` or
//! `text/event-stream` answers into the one response we wait for. Never opens the GET stream,
//! never follows redirects, connects only to addresses the guard accepts.

use std::sync::OnceLock;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::StatusCode;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use serde_json::Value;
use url::Url;

use super::error::{McpError, TransientReason, reset_wait, safe_code};
use super::guard::{AddressRefused, GuardedResolver, UrlError, UrlGuard};
use crate::secret::SecretToken;

/// Largest answer we read; a Bitrix24 page of 50 leads is far below it.
pub(crate) const MAX_BODY_BYTES: usize = 4 * 1024 * 1024;
pub(crate) const SESSION_HEADER: &str = "mcp-session-id";
pub(crate) const VERSION_HEADER: &str = "mcp-protocol-version";

/// One HTTP client (connection pool, guarded resolver) per container, built on the first POST:
/// a container whose invocations never reach an MCP server (lead-watch's scheduled fan-out,
/// test without a stored token, an invalid event) never builds it, and its TLS set-up reads
/// the container's root certificates from [`crate::tls`], shared with the AWS SDK.
#[derive(Debug)]
pub(crate) struct Transport {
    http: OnceLock<reqwest::Client>,
    guard: UrlGuard,
    connect_timeout: Duration,
    request_timeout: Duration,
}

/// What one POST produced.
#[derive(Debug)]
pub(crate) struct PostAnswer {
    /// `Mcp-Session-Id` of the answer, if any.
    pub session_id: Option<String>,
    /// The JSON-RPC response matching our id; `None` for an accepted notification (202).
    pub message: Option<Value>,
}

/// Transport failures: the session-gone case is handled by the session layer, not the caller.
#[derive(Debug)]
pub(crate) enum PostError {
    /// 404 on a request that carried a session id: re-initialize and retry.
    SessionGone,
    Mcp(McpError),
}

impl From<McpError> for PostError {
    fn from(e: McpError) -> Self {
        Self::Mcp(e)
    }
}

/// Headers that go with every POST after `initialize`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionHeaders<'a> {
    pub session_id: Option<&'a str>,
    pub protocol_version: Option<&'a str>,
}

impl Transport {
    pub(crate) fn new(
        guard: UrlGuard,
        connect_timeout: Duration,
        request_timeout: Duration,
    ) -> Result<Self, McpError> {
        Ok(Self {
            http: OnceLock::new(),
            guard,
            connect_timeout,
            request_timeout,
        })
    }

    /// The HTTP client, built on first use (see [`Transport`]).
    fn http(&self) -> Result<&reqwest::Client, McpError> {
        if let Some(http) = self.http.get() {
            return Ok(http);
        }
        let failed = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, "building the MCP HTTP client failed");
            McpError::protocol("the HTTP client could not be built")
        };
        let tls = crate::tls::rustls_client_config().map_err(|e| failed(&e))?;
        let http = reqwest::Client::builder()
            .dns_resolver(GuardedResolver {
                guard: self.guard.clone(),
            })
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .connect_timeout(self.connect_timeout)
            .user_agent(concat!("teleagent-bitrix/", env!("CARGO_PKG_VERSION")))
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| failed(&e))?;
        Ok(self.http.get_or_init(|| http))
    }

    /// POSTs one JSON-RPC message. `expect_id` is the id of our request (None for a notification).
    pub(crate) async fn post(
        &self,
        url: &Url,
        token: &SecretToken,
        headers: SessionHeaders<'_>,
        body: &Value,
        expect_id: Option<i64>,
    ) -> Result<PostAnswer, PostError> {
        let payload = serde_json::to_vec(body)
            .map_err(|_| McpError::protocol("request could not be encoded"))?;
        let mut req = self
            .http()?
            .post(url.clone())
            .timeout(self.request_timeout)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .header(ACCEPT, "application/json, text/event-stream")
            .header(CONTENT_TYPE, "application/json")
            .body(payload);
        if let Some(id) = headers.session_id {
            req = req.header(SESSION_HEADER, id);
        }
        if let Some(v) = headers.protocol_version {
            req = req.header(VERSION_HEADER, v);
        }
        let resp = req.send().await.map_err(send_error)?;
        let status = resp.status();
        let session_id = resp
            .headers()
            .get(SESSION_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        if status == StatusCode::NOT_FOUND && headers.session_id.is_some() {
            return Err(PostError::SessionGone);
        }
        if !status.is_success() {
            let resp_headers = resp.headers().clone();
            // Best effort: the body only serves to find a Bitrix24 error code.
            let body = read_capped(resp.bytes_stream()).await.unwrap_or_default();
            return Err(classify_status(status, &resp_headers, &body).into());
        }
        let Some(expect_id) = expect_id else {
            // Notification: 202 (or any 2xx) with nothing we need.
            return Ok(PostAnswer {
                session_id,
                message: None,
            });
        };
        if status == StatusCode::ACCEPTED {
            return Err(
                McpError::protocol("the server accepted a request without answering it").into(),
            );
        }
        let content_type = resp
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_ascii_lowercase();
        let message = if content_type.starts_with("application/json") {
            let bytes = read_capped(resp.bytes_stream()).await?;
            let msg: Value = serde_json::from_slice(&bytes)
                .map_err(|_| McpError::protocol("the answer is not valid JSON"))?;
            if !id_matches(&msg, expect_id) {
                return Err(McpError::protocol("the answer does not match the request id").into());
            }
            msg
        } else if content_type.starts_with("text/event-stream") {
            read_sse_response(resp.bytes_stream(), expect_id).await?
        } else {
            return Err(McpError::protocol(format!(
                "unexpected content type {:?}",
                content_type.chars().take(60).collect::<String>()
            ))
            .into());
        };
        Ok(PostAnswer {
            session_id,
            message: Some(message),
        })
    }

    /// Ends a session. Best effort: servers may answer 405, and a failure changes nothing for us.
    pub(crate) async fn delete(&self, url: &Url, token: &SecretToken, headers: SessionHeaders<'_>) {
        let Some(id) = headers.session_id else { return };
        let Ok(http) = self.http() else { return };
        let mut req = http
            .delete(url.clone())
            .timeout(self.request_timeout)
            .header(AUTHORIZATION, format!("Bearer {}", token.expose()))
            .header(SESSION_HEADER, id);
        if let Some(v) = headers.protocol_version {
            req = req.header(VERSION_HEADER, v);
        }
        match req.send().await {
            Ok(r) => tracing::debug!(status = r.status().as_u16(), "MCP session closed"),
            Err(e) => tracing::debug!(error = %send_error(e), "closing the MCP session failed"),
        }
    }
}

fn id_matches(msg: &Value, id: i64) -> bool {
    msg.get("id").and_then(Value::as_i64) == Some(id)
}

/// Maps a reqwest failure to what the caller can do about it. A refused resolution is found by
/// walking the source chain for our own [`AddressRefused`].
fn send_error(e: reqwest::Error) -> McpError {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(s) = src {
        if let Some(refused) = s.downcast_ref::<AddressRefused>() {
            return McpError::UrlRejected(UrlError::PrivateAddress {
                host: refused.host.clone(),
            });
        }
        src = s.source();
    }
    if e.is_timeout() {
        McpError::transient(TransientReason::Timeout)
    } else if e.is_connect() {
        McpError::transient(TransientReason::Connect)
    } else {
        // Sent but no complete answer: the connection closed or reset under us.
        McpError::transient(TransientReason::ConnectionDropped)
    }
}

fn body_error(e: &reqwest::Error) -> McpError {
    if e.is_timeout() {
        McpError::transient(TransientReason::Timeout)
    } else {
        McpError::transient(TransientReason::ConnectionDropped)
    }
}

async fn read_capped(
    mut stream: impl Stream<Item = reqwest::Result<Bytes>> + Unpin,
) -> Result<Vec<u8>, McpError> {
    let mut buf = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| body_error(&e))?;
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(McpError::protocol("the answer is larger than 4 MiB"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

/// Classifies a non-2xx answer by its status and Bitrix24 error code: 401/403 auth, 503 with QUERY_LIMIT_EXCEEDED or
/// OVERLOAD_LIMIT and 429 rate limits, other 5xx transient, 3xx a refused redirect.
pub(crate) fn classify_status(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> McpError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let code = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(Value::as_str)
        .and_then(safe_code);
    let retry_after = headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .or_else(|| json.as_ref().and_then(reset_wait));
    let s = status.as_u16();
    match s {
        300..=399 => McpError::UrlRejected(UrlError::Redirect { status: s }),
        401 | 403 => McpError::Unauthorized {
            status: Some(s),
            code,
        },
        429 => McpError::RateLimited { retry_after },
        503 if matches!(
            code.as_deref(),
            Some("QUERY_LIMIT_EXCEEDED" | "OVERLOAD_LIMIT")
        ) =>
        {
            McpError::RateLimited { retry_after }
        }
        500..=599 => McpError::transient(TransientReason::ServerError { status: s }),
        404 => McpError::protocol("the MCP endpoint was not found (HTTP 404); check the URL path"),
        _ => McpError::protocol(format!("HTTP {s} from the MCP server")),
    }
}

/// Error of the capped byte stream fed to the SSE parser.
#[derive(Debug, thiserror::Error)]
enum SseReadError {
    #[error("body")]
    Body(#[source] reqwest::Error),
    #[error("too large")]
    TooLarge,
}

/// Reads SSE events until the JSON-RPC response with our id; server notifications and requests
/// that come first are skipped. Returns without waiting for the stream to end (a server may
/// keep it open).
pub(crate) async fn read_sse_response<S>(stream: S, expect_id: i64) -> Result<Value, McpError>
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
{
    let mut seen = 0usize;
    let capped = stream.map(move |item| match item {
        Ok(b) => {
            seen += b.len();
            if seen > MAX_BODY_BYTES {
                Err(SseReadError::TooLarge)
            } else {
                Ok(b)
            }
        }
        Err(e) => Err(SseReadError::Body(e)),
    });
    let mut events = Box::pin(sse_stream::SseStream::from_bytes_stream(capped));
    while let Some(ev) = events.next().await {
        let ev = ev.map_err(|e| match e {
            sse_stream::Error::Body(inner) => match inner.downcast_ref::<SseReadError>() {
                Some(SseReadError::TooLarge) => {
                    McpError::protocol("the answer is larger than 4 MiB")
                }
                Some(SseReadError::Body(re)) => body_error(re),
                None => McpError::transient(TransientReason::ConnectionDropped),
            },
            _ => McpError::protocol("malformed event stream"),
        })?;
        let Some(data) = ev.data.as_deref() else {
            continue;
        };
        if data.trim().is_empty() {
            continue; // priming event (2025-11-25 servers send an empty one with an id)
        }
        let Ok(msg) = serde_json::from_str::<Value>(data) else {
            return Err(McpError::protocol("an event carried invalid JSON"));
        };
        let is_response = msg.get("result").is_some() || msg.get("error").is_some();
        if is_response && id_matches(&msg, expect_id) {
            return Ok(msg);
        }
        let method = msg.get("method").and_then(Value::as_str).unwrap_or("");
        tracing::debug!(method, "skipping an SSE message that is not our response");
    }
    Err(McpError::transient(TransientReason::ConnectionDropped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn chunks(parts: &[&str]) -> impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static {
        let owned: Vec<reqwest::Result<Bytes>> = parts
            .iter()
            .map(|p| Ok(Bytes::from(p.to_string())))
            .collect();
        futures::stream::iter(owned)
    }

    #[tokio::test]
    async fn sse_skips_notifications_and_other_ids() {
        let s = chunks(&[
            "id: 0\ndata:\n\n",
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\",\"params\":{}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"ping\"}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"id\":6,\"result\":{\"x\":0}}\n\n",
            "data: {\"jsonrpc\":\"2.0\",\"id\":7,", // split across chunks
            "\"result\":{\"x\":1}}\n\n",
        ]);
        let msg = read_sse_response(s, 7).await.unwrap();
        assert_eq!(msg["result"]["x"], 1);
    }

    #[tokio::test]
    async fn sse_stops_at_our_response_without_waiting_for_the_end() {
        let head = chunks(&["data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\n\n"]);
        let s = head.chain(futures::stream::pending());
        let msg = tokio::time::timeout(Duration::from_secs(2), read_sse_response(s, 1))
            .await
            .expect("must not wait for the stream to end")
            .unwrap();
        assert_eq!(msg["id"], 1);
    }

    #[tokio::test]
    async fn sse_that_ends_without_our_response_is_a_dropped_connection() {
        let s = chunks(&["data: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\n\n"]);
        let e = read_sse_response(s, 3).await.unwrap_err();
        assert_eq!(e, McpError::transient(TransientReason::ConnectionDropped));
        let bad = chunks(&["data: not json\n\n"]);
        assert!(matches!(
            read_sse_response(bad, 3).await.unwrap_err(),
            McpError::Protocol { .. }
        ));
    }

    #[tokio::test]
    async fn sse_is_capped() {
        let big = format!("data: {}\n\n", "x".repeat(MAX_BODY_BYTES + 10));
        let s = futures::stream::iter(vec![Ok(Bytes::from(big))]);
        let e = read_sse_response(s, 1).await.unwrap_err();
        assert!(
            matches!(&e, McpError::Protocol { detail } if detail.contains("4 MiB")),
            "{e:?}"
        );
    }

    #[test]
    fn statuses_are_classified() {
        let mut retry = HeaderMap::new();
        retry.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let none = HeaderMap::new();
        let rows: Vec<(u16, &HeaderMap, &str, McpError, &str)> = vec![
            (
                401,
                &none,
                r#"{"error":"expired_token","error_description":"The access token provided has expired."}"#,
                McpError::Unauthorized {
                    status: Some(401),
                    code: Some("expired_token".into()),
                },
                "401 keeps code",
            ),
            (
                403,
                &none,
                "<html>forbidden</html>",
                McpError::Unauthorized {
                    status: Some(403),
                    code: None,
                },
                "403 html body",
            ),
            (
                503,
                &none,
                r#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#,
                McpError::RateLimited { retry_after: None },
                "503 query limit",
            ),
            (
                503,
                &retry,
                r#"{"error":"OVERLOAD_LIMIT"}"#,
                McpError::RateLimited {
                    retry_after: Some(Duration::from_secs(7)),
                },
                "503 overload + Retry-After",
            ),
            (
                503,
                &none,
                "Service Unavailable",
                McpError::transient(TransientReason::ServerError { status: 503 }),
                "plain 503",
            ),
            (
                429,
                &retry,
                "",
                McpError::RateLimited {
                    retry_after: Some(Duration::from_secs(7)),
                },
                "429 Retry-After",
            ),
            (
                429,
                &none,
                r#"{"error":"OPERATION_TIME_LIMIT","time":{"operating_reset_at":1}}"#,
                McpError::RateLimited {
                    retry_after: Some(Duration::ZERO),
                },
                "429 reset in the past",
            ),
            (
                500,
                &none,
                r#"{"error":"INTERNAL_SERVER_ERROR"}"#,
                McpError::transient(TransientReason::ServerError { status: 500 }),
                "500",
            ),
            (
                302,
                &none,
                "",
                McpError::UrlRejected(UrlError::Redirect { status: 302 }),
                "redirect",
            ),
            (
                406,
                &none,
                "Not Acceptable",
                McpError::protocol("HTTP 406 from the MCP server"),
                "406",
            ),
        ];
        for (status, headers, body, want, why) in rows {
            let got = classify_status(
                StatusCode::from_u16(status).unwrap(),
                headers,
                body.as_bytes(),
            );
            assert_eq!(got, want, "{why}");
            assert!(
                !got.to_string().contains("Too many requests") && !got.to_string().contains("html"),
                "{why}: body leaked"
            );
        }
    }
}
