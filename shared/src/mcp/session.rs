//! The MCP session: `initialize` and version negotiation, JSON-RPC ids, `tools/list` pages,
//! `tools/call`, and the one re-initialisation after the server forgot our session (HTTP 404).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

use super::error::{McpError, safe_code};
use super::guard::UrlGuard;
use super::transport::{PostAnswer, PostError, SessionHeaders, Transport};
use crate::secret::SecretToken;

/// The version we propose; the server may answer with any of [`SUPPORTED_PROTOCOL_VERSIONS`].
pub const PROPOSED_PROTOCOL_VERSION: &str = "2025-11-25";
/// Versions we can speak; a server answering anything else is refused.
pub const SUPPORTED_PROTOCOL_VERSIONS: &[&str] =
    &["2025-11-25", "2025-06-18", "2025-03-26", "2024-11-05"];
/// `tools/list` pages we follow before deciding the server loops.
const MAX_TOOL_PAGES: usize = 50;
/// Bound on a JSON-RPC error message we pass on.
const MAX_RPC_MESSAGE: usize = 120;

/// Timeouts for the MCP HTTP client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct McpClientOptions {
    /// TCP + TLS connect.
    pub connect_timeout: Duration,
    /// One HTTP request, answer included. Bitrix24 itself stops a request at 60 s, but our
    /// callers have a 20 s deadline (connect's live check), so a slow call must fail well before.
    pub request_timeout: Duration,
}

impl Default for McpClientOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(15),
        }
    }
}

/// The MCP client: one HTTP connection pool with the SSRF guard (set up on its first request),
/// made once per container and shared (cheap `Clone`). Sessions are per tenant.
#[derive(Debug, Clone)]
pub struct McpClient {
    transport: Arc<Transport>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    pub name: String,
    pub version: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    pub name: String,
    pub description: Option<String>,
    pub input_schema: Value,
}

/// A `tools/call` result. Business failures come here with `is_error` (or, from some servers,
/// as plain error text without it); [`super::classify_tool_error`] reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// All text content items joined with "\n".
    pub text: String,
    pub structured: Option<Value>,
    pub is_error: bool,
}

impl ToolOutput {
    /// The text parsed as JSON, when it is JSON (servers put REST results there as text).
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(self.text.trim()).ok()
    }
}

impl McpClient {
    pub fn new(guard: UrlGuard, opts: McpClientOptions) -> Result<Self, McpError> {
        Ok(Self {
            transport: Arc::new(Transport::new(
                guard,
                opts.connect_timeout,
                opts.request_timeout,
            )?),
        })
    }

    /// Opens a session: `initialize` (proposing 2025-11-25), then `notifications/initialized`.
    /// The URL must come from [`UrlGuard::check`].
    #[tracing::instrument(skip_all, fields(host = url.host_str().unwrap_or("")))]
    pub async fn connect(&self, url: &Url, token: &SecretToken) -> Result<McpSession, McpError> {
        let mut session = McpSession {
            transport: self.transport.clone(),
            url: url.clone(),
            token: token.clone(),
            session_id: None,
            protocol_version: String::new(),
            server_info: ServerInfo {
                name: String::new(),
                version: None,
            },
            next_id: 0,
        };
        session.initialize().await?;
        Ok(session)
    }
}

/// One MCP session with one server and token. Not shared between tasks: calls take `&mut self`
/// because ids and the session id change.
#[derive(Debug)]
pub struct McpSession {
    transport: Arc<Transport>,
    url: Url,
    token: SecretToken,
    session_id: Option<String>,
    protocol_version: String,
    server_info: ServerInfo,
    next_id: i64,
}

impl McpSession {
    pub fn server_info(&self) -> &ServerInfo {
        &self.server_info
    }

    pub fn protocol_version(&self) -> &str {
        &self.protocol_version
    }

    /// All tools, following `nextCursor` (at most 50 pages).
    pub async fn list_tools(&mut self) -> Result<Vec<ToolInfo>, McpError> {
        let mut tools = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_TOOL_PAGES {
            let params = match &cursor {
                Some(c) => json!({ "cursor": c }),
                None => json!({}),
            };
            let result = self.request("tools/list", params).await?;
            let page = result
                .get("tools")
                .and_then(Value::as_array)
                .ok_or_else(|| McpError::protocol("tools/list answer has no tools array"))?;
            for t in page {
                let name = t
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or_else(|| McpError::protocol("a tool has no name"))?;
                tools.push(ToolInfo {
                    name: name.to_owned(),
                    description: t
                        .get("description")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                    input_schema: t.get("inputSchema").cloned().unwrap_or_else(|| json!({})),
                });
            }
            cursor = result
                .get("nextCursor")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned);
            if cursor.is_none() {
                return Ok(tools);
            }
        }
        Err(McpError::protocol(format!(
            "tools/list did not end after {MAX_TOOL_PAGES} pages"
        )))
    }

    /// Calls one tool. A result with `isError` is returned as `Ok` with `is_error` set: only the
    /// caller knows which tool errors are fatal.
    #[tracing::instrument(skip(self, arguments))]
    pub async fn call_tool(
        &mut self,
        name: &str,
        arguments: Value,
    ) -> Result<ToolOutput, McpError> {
        let result = self
            .request(
                "tools/call",
                json!({ "name": name, "arguments": arguments }),
            )
            .await?;
        let content = result
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| McpError::protocol("tools/call answer has no content"))?;
        let text = content
            .iter()
            .filter(|c| c.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|c| c.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n");
        Ok(ToolOutput {
            text,
            structured: result
                .get("structuredContent")
                .cloned()
                .filter(|v| !v.is_null()),
            is_error: result
                .get("isError")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
    }

    /// Ends the session on the server (DELETE); errors and 405 are ignored.
    pub async fn close(self) {
        let headers = self.headers();
        self.transport.delete(&self.url, &self.token, headers).await;
    }

    fn headers(&self) -> SessionHeaders<'_> {
        SessionHeaders {
            session_id: self.session_id.as_deref(),
            protocol_version: (!self.protocol_version.is_empty())
                .then_some(self.protocol_version.as_str()),
        }
    }

    fn take_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    async fn post(&mut self, body: &Value, id: Option<i64>) -> Result<PostAnswer, PostError> {
        let transport = self.transport.clone();
        let headers = SessionHeaders {
            session_id: self.session_id.as_deref(),
            protocol_version: (!self.protocol_version.is_empty())
                .then_some(self.protocol_version.as_str()),
        };
        transport
            .post(&self.url, &self.token, headers, body, id)
            .await
    }

    /// `initialize` without a session id, then `notifications/initialized` with the new one.
    async fn initialize(&mut self) -> Result<(), McpError> {
        self.session_id = None;
        self.protocol_version.clear();
        let id = self.take_id();
        let body = json!({
            "jsonrpc": "2.0", "id": id, "method": "initialize",
            "params": {
                "protocolVersion": PROPOSED_PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "teleagent-bitrix", "version": env!("CARGO_PKG_VERSION") }
            }
        });
        let answer = self.post(&body, Some(id)).await.map_err(|e| match e {
            PostError::SessionGone => McpError::protocol("initialize answered 404"),
            PostError::Mcp(e) => e,
        })?;
        let result = rpc_result(answer.message)?;
        let version = result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .ok_or_else(|| McpError::protocol("initialize answer has no protocolVersion"))?;
        if !SUPPORTED_PROTOCOL_VERSIONS.contains(&version) {
            return Err(McpError::protocol(format!(
                "unsupported MCP protocol version {:?}",
                version.chars().take(40).collect::<String>()
            )));
        }
        let info = result.get("serverInfo");
        self.server_info = ServerInfo {
            name: info
                .and_then(|i| i.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            version: info
                .and_then(|i| i.get("version"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        };
        self.protocol_version = version.to_owned();
        self.session_id = answer.session_id;
        tracing::debug!(
            protocol_version = %self.protocol_version,
            has_session = self.session_id.is_some(),
            "MCP session initialized"
        );
        let note = json!({ "jsonrpc": "2.0", "method": "notifications/initialized" });
        self.post(&note, None).await.map_err(|e| match e {
            PostError::SessionGone => McpError::protocol("the new session was refused"),
            PostError::Mcp(e) => e,
        })?;
        Ok(())
    }

    /// One request; after a 404 on our session id, re-initialize once and retry once.
    async fn request(&mut self, method: &str, params: Value) -> Result<Value, McpError> {
        let mut recovered = false;
        loop {
            let id = self.take_id();
            let body = json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params });
            match self.post(&body, Some(id)).await {
                Ok(answer) => return rpc_result(answer.message),
                Err(PostError::SessionGone) if !recovered => {
                    tracing::info!(method, "MCP session expired; re-initializing once");
                    recovered = true;
                    self.initialize().await?;
                }
                Err(PostError::SessionGone) => {
                    return Err(McpError::protocol(
                        "the server dropped the session again right after re-initialization",
                    ));
                }
                Err(PostError::Mcp(e)) => return Err(e),
            }
        }
    }
}

/// The `result` of a JSON-RPC response, or its `error` classified by its code:
/// -32601 (method not found) and a -32602 whose message says the tool is unknown or not found
/// are [`McpError::UnknownTool`]; any other -32602 is [`McpError::InvalidArguments`]; a Bitrix24
/// auth code standing as the whole message is [`McpError::Unauthorized`]; the rest is
/// [`McpError::Protocol`] with the code and a bounded message.
fn rpc_result(message: Option<Value>) -> Result<Value, McpError> {
    let mut msg = message.ok_or_else(|| McpError::protocol("no response"))?;
    if let Some(err) = msg.get("error") {
        let code = err.get("code").and_then(Value::as_i64).unwrap_or(0);
        let message = err.get("message").and_then(Value::as_str).unwrap_or("");
        match code {
            -32601 => return Err(McpError::UnknownTool),
            -32602 if says_unknown_tool(message) => return Err(McpError::UnknownTool),
            -32602 => return Err(McpError::InvalidArguments),
            _ => {}
        }
        // Some servers answer auth failures as JSON-RPC errors whose message is the Bitrix24 code.
        if let Some(c) = safe_code(message.trim())
            && matches!(
                c.as_str(),
                "expired_token" | "invalid_token" | "NO_AUTH_FOUND"
            )
        {
            return Err(McpError::Unauthorized {
                status: None,
                code: Some(c),
            });
        }
        let text = match code {
            -32700 => "parse error".to_owned(),
            -32600 => "invalid request".to_owned(),
            -32603 => "internal error".to_owned(),
            _ => bounded_message(message),
        };
        return Err(McpError::protocol(format!("JSON-RPC error {code}: {text}")));
    }
    match msg.get_mut("result") {
        Some(r) if r.is_object() => Ok(r.take()),
        _ => Err(McpError::protocol("response has no result object")),
    }
}

/// How the MCP SDKs word a call to a tool they do not have: the Python SDK "Unknown tool: x",
/// the TypeScript SDK "Tool x not found". Read only on a JSON-RPC -32602 or an error result of
/// `tools/call`, never on a tool's business answer.
pub fn says_unknown_tool(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    let m = m.trim_start_matches("mcp error -32602:").trim();
    m.starts_with("unknown tool")
        || m.starts_with("tool not found")
        || (m.starts_with("tool ") && m.ends_with("not found"))
}

/// A server's JSON-RPC message, cut short and stripped of control characters.
fn bounded_message(m: &str) -> String {
    let s: String = m
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_RPC_MESSAGE)
        .collect();
    if s.is_empty() { "no message".into() } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_errors_are_bounded_and_named() {
        for (error, want, why) in [
            (
                json!({"code":-32602,"message":"Unknown tool: secret_stuff"}),
                McpError::UnknownTool,
                "python SDK wording",
            ),
            (
                json!({"code":-32602,"message":"MCP error -32602: Tool crm_add not found"}),
                McpError::UnknownTool,
                "typescript SDK wording",
            ),
            (
                json!({"code":-32601,"message":"Method not found"}),
                McpError::UnknownTool,
                "method not found",
            ),
            (
                json!({"code":-32602,"message":"Invalid arguments: phone +1 401 555 0100"}),
                McpError::InvalidArguments,
                "bad data with a number in it",
            ),
            (
                json!({"code":-32602}),
                McpError::InvalidArguments,
                "no message",
            ),
        ] {
            let e = rpc_result(Some(json!({"jsonrpc":"2.0","id":1,"error": error}))).unwrap_err();
            assert_eq!(e, want, "{why}");
            assert!(!e.to_string().contains("secret_stuff"), "{why}: {e}");
        }
        let long = "x".repeat(1000);
        let e = rpc_result(Some(json!({"error":{"code":-32000,"message":long}}))).unwrap_err();
        assert!(e.to_string().len() < 250, "{e}");
        assert!(matches!(
            rpc_result(Some(json!({"id":1}))),
            Err(McpError::Protocol { .. })
        ));
        assert_eq!(
            rpc_result(Some(json!({"id":1,"result":{"a":1}}))).unwrap(),
            json!({"a":1})
        );
    }

    #[test]
    fn tool_output_json() {
        let o = ToolOutput {
            text: " {\"result\": 5} ".into(),
            structured: None,
            is_error: false,
        };
        assert_eq!(o.json(), Some(json!({"result": 5})));
        let p = ToolOutput {
            text: "Ошибка Bitrix24: Not found".into(),
            structured: None,
            is_error: false,
        };
        assert_eq!(p.json(), None);
    }
}

#[cfg(test)]
mod guard_at_connect_tests {
    use super::*;
    use crate::mcp::UrlError;

    /// A listed DNS name that resolves to loopback must be refused at resolution, before any
    /// byte is sent: the listener we bind must never see a connection.
    #[tokio::test]
    async fn name_resolving_to_loopback_is_refused_without_a_request() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let guard = UrlGuard::new(&["localhost".into()], false);
        let url = guard
            .check(Some(&format!("https://localhost:{port}/mcp/")))
            .expect("localhost is on this allow-list, so the text check passes");
        let client = McpClient::new(guard, McpClientOptions::default()).unwrap();
        let err = client
            .connect(&url, &SecretToken::new("t0ken-value-123".into()))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, McpError::UrlRejected(UrlError::PrivateAddress { host }) if host == "localhost"),
            "{err:?}"
        );
        assert!(err.to_string().contains("private"), "{err}");
        match listener.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("a connection reached the listener: {other:?}"),
        }
    }
}
