//! The live check connect and test run: MCP `initialize`, `tools/list`, tool
//! binding, the portal's capabilities, and one read-only call (a phone search for a number that
//! cannot exist) so a token without CRM rights fails here and not at the first lead. All of it
//! under one deadline, so nothing is stored after the web UI gave up.

use std::time::Duration;

use serde_json::{Value, json};
use url::Url;

use super::binding::Binding;
use super::client::{Crm, CrmError};
use super::discovery::discover;
use super::ops::Operation;
use super::toolmap::ToolMap;
use crate::mcp::{McpClient, McpError};
use crate::secret::SecretToken;

/// Searched at connect: `+0` is no country's code, so this finds nothing on any portal.
const IMPOSSIBLE_PHONE: &str = "+0000000000";

#[derive(Debug, Clone)]
pub struct LiveCheck {
    pub binding: Binding,
    /// What connect/test show as `portal_info`: server, protocol version, bound operations.
    pub portal_info: Value,
    /// Which portal the token reaches; lead links from another portal are ignored.
    pub portal_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Mcp(#[from] McpError),
    #[error("this Bitrix24 MCP server offers no tool to {}", purposes(.0))]
    Missing(Vec<Operation>),
    #[error("the Bitrix24 MCP server did not finish the check within {} seconds", .0.as_secs())]
    Deadline(Duration),
    /// The search for a phone that cannot exist found leads: the server ignores filters.
    #[error(
        "the Bitrix24 MCP server's lead search ignores its filter (a search for a number that cannot exist returned leads)"
    )]
    FilterIgnored,
    #[error("the connector's MCP_TOOL_MAP is invalid: {0}")]
    ToolMap(#[from] super::toolmap::ToolMapError),
    #[error(transparent)]
    Crm(CrmError),
}

fn purposes(ops: &[Operation]) -> String {
    let words: Vec<&str> = ops.iter().map(|op| op.purpose()).collect();
    match words.as_slice() {
        [] => String::new(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} or {}", rest.join(", "), last),
    }
}

impl From<CrmError> for CheckError {
    fn from(e: CrmError) -> Self {
        match e {
            CrmError::Mcp(m) => CheckError::Mcp(m),
            CrmError::Unsupported(op) => CheckError::Missing(vec![op]),
            other => CheckError::Crm(other),
        }
    }
}

impl CheckError {
    /// The token was refused (401/403 or an auth error in a tool): an `error` state for test.
    pub fn is_auth(&self) -> bool {
        matches!(self, CheckError::Mcp(McpError::Unauthorized { .. }))
    }
}

/// Runs the whole check under `deadline`.
pub async fn live_check(
    mcp: &McpClient,
    url: &Url,
    token: &SecretToken,
    tool_map: Option<&str>,
    deadline: Duration,
) -> Result<LiveCheck, CheckError> {
    let map = tool_map.map(ToolMap::parse).transpose()?;
    tokio::time::timeout(deadline, check(mcp, url, token, map.as_ref()))
        .await
        .unwrap_or(Err(CheckError::Deadline(deadline)))
}

async fn check(
    mcp: &McpClient,
    url: &Url,
    token: &SecretToken,
    map: Option<&ToolMap>,
) -> Result<LiveCheck, CheckError> {
    let mut session = mcp.connect(url, token).await?;
    let result = async {
        let tools = session.list_tools().await?;
        let mut binding = discover(&tools, map);
        let missing = binding.missing_required();
        if !missing.is_empty() {
            return Err(CheckError::Missing(missing));
        }
        let mut crm = Crm::new(&mut session, &binding);
        if !crm
            .find_by_phones(&[IMPOSSIBLE_PHONE.to_owned()])
            .await?
            .is_empty()
        {
            return Err(CheckError::FilterIgnored);
        }
        let caps = crm.capabilities().await?;
        binding.caps = caps;
        Ok(binding)
    }
    .await;
    let server = session.server_info().clone();
    let protocol = session.protocol_version().to_owned();
    session.close().await;
    let binding = result?;
    let report = binding.report();
    let portal_info = json!({
        "server_name": server.name,
        "server_version": server.version,
        "protocol_version": protocol,
        "bound": report["bound"],
        "missing": report["missing_optional"],
        "capabilities": binding.caps,
        "change_watch": binding.change_watch(),
    });
    Ok(LiveCheck {
        portal_id: portal_identity(url, &server.name, token),
        binding,
        portal_info,
    })
}

/// Which portal a token reaches. Bitrix24's hosted server has one URL for every portal, so the
/// portal is read from the token when it is a JWT naming one (unverified claims, used only to
/// tell portals apart, never for trust); else the server URL and name identify it.
pub fn portal_identity(url: &Url, server_name: &str, token: &SecretToken) -> String {
    if let Some(portal) = jwt_portal_claim(token.expose()) {
        return format!("portal:{portal}");
    }
    let host = url.host_str().unwrap_or("");
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("server:{host}{port}{}#{server_name}", url.path())
}

fn jwt_portal_claim(token: &str) -> Option<String> {
    use base64::Engine as _;
    let mut parts = token.split('.');
    let (_, payload, _) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: Value = serde_json::from_slice(&bytes).ok()?;
    [
        "domain",
        "portal",
        "member_id",
        "client_endpoint",
        "portal_url",
    ]
    .iter()
    .find_map(|k| claims.get(*k).and_then(Value::as_str))
    .filter(|v| v.len() <= 200)
    .map(|v| v.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;

    use super::*;

    #[test]
    fn portal_identity_prefers_the_token_portal_then_the_server() {
        let url = Url::parse("https://mcp.bitrix24.com/mcp/").unwrap();
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"domain":"Acme.bitrix24.com","sub":"1"}"#);
        let jwt = SecretToken::new(format!("eyJhbGciOiJIUzI1NiJ9.{claims}.sig"));
        assert_eq!(
            portal_identity(&url, "b24", &jwt),
            "portal:acme.bitrix24.com"
        );
        let opaque = SecretToken::new("opaque-token-123".into());
        let local = Url::parse("http://127.0.0.1:4000/mcp/").unwrap();
        assert_eq!(
            portal_identity(&local, "bitrix24-sandbox", &opaque),
            "server:127.0.0.1:4000/mcp/#bitrix24-sandbox"
        );
        assert!(!portal_identity(&url, "b24", &opaque).contains("opaque"));
    }

    #[test]
    fn missing_operations_are_named_for_a_person() {
        let e = CheckError::Missing(vec![Operation::CreateLead]);
        assert_eq!(
            e.to_string(),
            "this Bitrix24 MCP server offers no tool to create leads"
        );
        let e = CheckError::Missing(vec![
            Operation::FindByPhone,
            Operation::CreateLead,
            Operation::UpdateLead,
        ]);
        assert_eq!(
            e.to_string(),
            "this Bitrix24 MCP server offers no tool to find leads by phone, create leads or update leads"
        );
    }
}
