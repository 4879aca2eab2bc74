//! `POST /api/bitrix-mcp/connect`: validate the body, prove the token live against the MCP
//! server, and only then encrypt and store it. A failed check stores nothing.

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use url::Url;

use super::error::json_response;
use super::{ApiError, App, LIVE_CHECK_DEADLINE, Route, admit};
use crate::crm::{CheckError, LiveCheck, live_check};
use crate::mcp::McpError;
use crate::secret::SecretToken;
use crate::store::{NewConnection, StoreError};
use crate::tenant::TenantId;
use crate::vault::VaultError;

/// Shortest token accepted (after trimming); real Bitrix24 MCP tokens are far longer.
const MIN_TOKEN_CHARS: usize = 10;
const FIELDS: [&str; 2] = ["mcp_token", "mcp_url"];

/// The validated connect body: the trimmed token and the guard-checked URL.
struct ConnectBody {
    token: SecretToken,
    url: Url,
}

/// Parses by hand instead of deriving `Deserialize`: serde's messages quote offending values
/// ("invalid type: string \"...\""), and a value in this body may be the token.
fn parse_body(bytes: &[u8], app: &App) -> Result<ConnectBody, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::Invalid(
            "Request body is required: {\"mcp_token\": \"...\"}".into(),
        ));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|_| ApiError::Invalid("Request body is not valid JSON".into()))?;
    let Value::Object(mut obj) = value else {
        return Err(ApiError::Invalid(
            "Request body must be a JSON object".into(),
        ));
    };
    if let Some(unknown) = obj.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(ApiError::Invalid(unknown_field(unknown)));
    }
    let token = match obj.remove("mcp_token") {
        None | Some(Value::Null) => {
            return Err(ApiError::Invalid("Field mcp_token is required".into()));
        }
        Some(Value::String(s)) => SecretToken::new(s.trim().to_owned()),
        Some(_) => return Err(ApiError::Invalid("Field mcp_token must be a string".into())),
    };
    if token.char_len() < MIN_TOKEN_CHARS {
        return Err(ApiError::Invalid(format!(
            "Field mcp_token must be at least {MIN_TOKEN_CHARS} characters"
        )));
    }
    let raw_url = match obj.remove("mcp_url") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(ApiError::Invalid("Field mcp_url must be a string".into())),
    };
    let url = app
        .url_guard()
        .check(raw_url.as_deref())
        .map_err(|e| ApiError::Invalid(format!("Invalid mcp_url: {e}")))?;
    Ok(ConnectBody { token, url })
}

/// Names an unknown field only when it looks like a field name (a pasted token used as a key
/// must not be echoed).
fn unknown_field(key: &str) -> String {
    let plain = key.len() <= 40 && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    // Short keys, or snake_case names, look like field names; a long unbroken string may be a
    // token pasted in the wrong place.
    if plain && (key.chars().count() < MIN_TOKEN_CHARS || key.contains('_')) {
        format!("Unknown field {key}; allowed: mcp_token, mcp_url")
    } else {
        "Unknown field in request body; allowed: mcp_token, mcp_url".into()
    }
}

/// The reason after "Connection failed: ", written for the person who pasted the token: what
/// went wrong and what to do. Never upstream text.
pub fn connection_failure_reason(err: &CheckError) -> String {
    match err {
        CheckError::Mcp(McpError::Unauthorized { status, code }) => {
            let forbidden = *status == Some(403)
                || code
                    .as_deref()
                    .is_some_and(|c| c == "ACCESS_DENIED" || c == "insufficient_scope");
            if forbidden {
                "the token's Bitrix24 user has no rights to CRM leads; give that user access to \
                 leads (or create the token as a user who has it) and try again"
                    .into()
            } else {
                "Bitrix24 rejected the token: it is wrong, expired or revoked. Create a new one \
                 in Bitrix24 under Apps -> MCP connections and paste it here"
                    .into()
            }
        }
        CheckError::Mcp(McpError::UrlRejected(e)) => format!("the MCP URL is not allowed: {e}"),
        CheckError::Mcp(McpError::RateLimited { .. }) => {
            "Bitrix24's request limit for this portal was reached; try again in a minute".into()
        }
        CheckError::Mcp(McpError::Transient { .. }) | CheckError::Deadline(_) => {
            "the Bitrix24 MCP server could not be reached or did not answer in time; check the \
             MCP URL and try again in a few minutes"
                .into()
        }
        CheckError::Mcp(
            McpError::Protocol { .. }
            | McpError::NotFound
            | McpError::UnknownTool
            | McpError::InvalidArguments,
        ) => "the server at the MCP URL did not answer as a Bitrix24 MCP server; check the MCP URL"
            .into(),
        CheckError::Missing(_) => {
            format!("{err}; use a Bitrix24 MCP server that offers CRM lead tools")
        }
        CheckError::Mcp(McpError::Permanent { .. }) => {
            format!("{err}; check the token's rights to CRM leads")
        }
        CheckError::FilterIgnored => format!(
            "{err}; the connector could then change leads that are not this customer's, so it \
             will not use this server. Use a Bitrix24 MCP server whose lead search filters"
        ),
        CheckError::ToolMap(_) => {
            "the connector's tool mapping is misconfigured; contact support".into()
        }
        CheckError::Crm(_) => {
            "the Bitrix24 MCP server's lead tools answered in an unexpected way; contact support"
                .into()
        }
    }
}

/// The class of a failed live check, as the `ConnectResults` metric's `Class` counts it: one
/// word per reason a person is given ([`connection_failure_reason`]).
pub fn check_class(err: &CheckError) -> &'static str {
    match err {
        CheckError::Mcp(McpError::Unauthorized { .. }) => "token_rejected",
        CheckError::Mcp(McpError::UrlRejected(_)) => "url_rejected",
        CheckError::Mcp(McpError::RateLimited { .. }) => "rate_limited",
        CheckError::Mcp(McpError::Transient { .. }) | CheckError::Deadline(_) => "unreachable",
        CheckError::Mcp(
            McpError::Protocol { .. }
            | McpError::NotFound
            | McpError::UnknownTool
            | McpError::InvalidArguments,
        ) => "not_mcp",
        CheckError::Missing(_) => "tools_missing",
        CheckError::Mcp(McpError::Permanent { .. }) => "refused",
        CheckError::FilterIgnored => "filter_ignored",
        CheckError::ToolMap(_) => "tool_map",
        CheckError::Crm(_) => "unexpected_answer",
    }
}

/// Maps a vault failure at connect/test: KMS outages are 503, a missing or unusable key is an
/// operator problem (500).
pub(super) fn vault_error(what: &'static str, e: VaultError) -> ApiError {
    match e {
        VaultError::Unavailable { .. } => ApiError::unavailable(what, e),
        other => ApiError::internal(what, other),
    }
}

/// Maps a store failure: outages are 503; conflicts left after the retry, missing or corrupt
/// items are 500.
pub(super) fn store_error(what: &'static str, e: StoreError) -> ApiError {
    match e {
        StoreError::Unavailable(_) => ApiError::unavailable(what, e),
        other => ApiError::internal(what, other),
    }
}

#[tracing::instrument(skip_all, fields(tenant_id))]
pub(super) async fn connect(
    app: &App,
    req: lambda_http::Request,
) -> Result<lambda_http::Response<lambda_http::Body>, ApiError> {
    let (tenant, bytes) = admit(&app.config, Route::Connect, &req)?;
    let body = parse_body(&bytes, app)?;
    let check = live_check(
        &app.mcp,
        &body.url,
        &body.token,
        app.config.mcp_tool_map.as_deref(),
        LIVE_CHECK_DEADLINE,
    )
    .await
    .map_err(|e| {
        tracing::info!(error = %e, failure_class = check_class(&e), "live check failed at connect");
        ApiError::ConnectionFailed {
            reason: connection_failure_reason(&e),
            class: check_class(&e),
        }
    })?;
    let ciphertext = app
        .vault
        .encrypt(&tenant, &body.token)
        .await
        .map_err(|e| vault_error("encrypt token", e))?;
    let connected_at = OffsetDateTime::now_utc();
    let saved = save(app, &tenant, &body.url, ciphertext, &check, connected_at).await?;
    let detail = json!({
        "mcp_url": body.url.as_str(),
        "portal_id": check.portal_id,
        "bound": check.binding.report()["bound"],
        "version": saved,
    });
    if let Err(e) = app.store.audit(&tenant, "connected", detail).await {
        tracing::warn!(error = ?e, "audit line for connect not written");
    }
    super::replay(app, &tenant).await;
    let at = connected_at
        .format(&Rfc3339)
        .map_err(|e| ApiError::internal("format connected_at", e))?;
    let mut answer =
        json!({"success": true, "message": "Bitrix24 connected successfully", "connected_at": at});
    // Answers may add fields (the web UI ignores those it does not know): a server whose lead
    // list cannot serve change watching is said in words, the connection still works.
    if let Some(why) = check.binding.watch_gap() {
        answer["notice"] = json!(crate::crm::binding::watch_words(why));
    }
    Ok(json_response(http::StatusCode::OK, &answer))
}

/// Stores the connection guarded by the version just read; one retry on a concurrent change
/// (then the later connect wins, which is what the person who clicked last expects). Returns
/// the new version.
async fn save(
    app: &App,
    tenant: &TenantId,
    url: &Url,
    ciphertext: Vec<u8>,
    check: &LiveCheck,
    connected_at: OffsetDateTime,
) -> Result<u64, ApiError> {
    let mut attempt = 0;
    loop {
        let current = app
            .store
            .get_integration(tenant)
            .await
            .map_err(|e| store_error("read integration", e))?;
        let conn = NewConnection {
            token_ciphertext: ciphertext.clone(),
            mcp_url: url.as_str().to_owned(),
            portal_id: check.portal_id.clone(),
            binding: check.binding.to_value(),
            portal_info: check.portal_info.clone(),
            rate: current.as_ref().map(|i| i.rate).unwrap_or_default(),
            connected_at,
        };
        let version = current.map(|i| i.version).unwrap_or(0);
        match app.store.save_connection(tenant, conn, version).await {
            Ok(saved) => return Ok(saved.version),
            Err(StoreError::Conflict) if attempt == 0 => {
                tracing::info!("integration changed while connecting; retrying once");
                attempt += 1;
            }
            Err(e) => return Err(store_error("save connection", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::Operation;
    use crate::mcp::{TransientReason, UrlError};

    #[test]
    fn failure_reasons_tell_a_person_what_to_do() {
        let rows: Vec<(CheckError, &str, &str)> = vec![
            (
                CheckError::Mcp(McpError::Unauthorized {
                    status: Some(401),
                    code: None,
                }),
                "Apps -> MCP connections",
                "401",
            ),
            (
                CheckError::Mcp(McpError::Unauthorized {
                    status: None,
                    code: Some("expired_token".into()),
                }),
                "expired or revoked",
                "expired token code",
            ),
            (
                CheckError::Mcp(McpError::Unauthorized {
                    status: Some(403),
                    code: None,
                }),
                "no rights to CRM leads",
                "403",
            ),
            (
                CheckError::Mcp(McpError::Unauthorized {
                    status: None,
                    code: Some("ACCESS_DENIED".into()),
                }),
                "no rights to CRM leads",
                "ACCESS_DENIED",
            ),
            (
                CheckError::Mcp(McpError::UrlRejected(UrlError::PrivateAddress {
                    host: "x.bitrix24.com".into(),
                })),
                "the MCP URL is not allowed: host x.bitrix24.com resolved to a private",
                "guard at resolve time",
            ),
            (
                CheckError::Mcp(McpError::Transient {
                    reason: TransientReason::Connect,
                }),
                "could not be reached",
                "unreachable",
            ),
            (
                CheckError::Deadline(LIVE_CHECK_DEADLINE),
                "did not answer in time",
                "deadline",
            ),
            (
                CheckError::Mcp(McpError::RateLimited { retry_after: None }),
                "try again in a minute",
                "rate limited",
            ),
            (
                CheckError::Missing(vec![Operation::CreateLead]),
                "this Bitrix24 MCP server offers no tool to create leads",
                "missing ops",
            ),
        ];
        for (err, needle, why) in rows {
            let reason = connection_failure_reason(&err);
            assert!(
                reason.contains(needle),
                "{why}: {reason:?} lacks {needle:?}"
            );
        }
    }

    #[test]
    fn unknown_field_never_echoes_a_token_like_key() {
        assert!(unknown_field("extra").contains("extra"));
        assert!(unknown_field("portal_name").contains("portal_name"));
        let token_like = "a8f3kq9zT2mmXc81LpQw";
        assert!(!unknown_field(token_like).contains(token_like));
    }
}
