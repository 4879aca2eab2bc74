//! Our slim MCP Streamable HTTP client for Bitrix24's MCP server. Written instead of using rmcp
//! for exact control over HTTP status/body classification (503 QUERY_LIMIT_EXCEEDED, 429 with its
//! reset time, 401/403), the SSRF guard on the address actually connected to, and no GET stream.
//!
//! `guard` decides which URLs and addresses are allowed, `transport` moves one JSON-RPC message
//! per POST, `session` speaks the protocol, `error` is what callers branch on.

pub mod error;
pub mod guard;
pub mod session;
mod transport;

pub use error::{McpError, TransientReason, classify_error_body, classify_tool_error};
pub use guard::{UrlError, UrlGuard};
pub use session::{
    McpClient, McpClientOptions, McpSession, PROPOSED_PROTOCOL_VERSION,
    SUPPORTED_PROTOCOL_VERSIONS, ServerInfo, ToolInfo, ToolOutput, says_unknown_tool,
};
