//! The MCP client's error type: what callers branch on (retry, re-auth, give up), with Display
//! text safe to show a tenant: never the token, never a raw upstream body.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::guard::UrlError;

/// Why a failure is worth retrying later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransientReason {
    /// No answer within the request timeout.
    Timeout,
    /// DNS failure, refused or reset connection before any answer.
    Connect,
    /// The connection closed (or the body broke) before our response arrived.
    ConnectionDropped,
    /// A 5xx answer that is not Bitrix24's rate limit.
    ServerError { status: u16 },
    /// A tool error whose text names a temporary Bitrix24 failure (INTERNAL_SERVER_ERROR, timeout).
    Upstream,
}

impl std::fmt::Display for TransientReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Timeout => f.write_str("timed out"),
            Self::Connect => f.write_str("could not connect"),
            Self::ConnectionDropped => f.write_str("connection dropped"),
            Self::ServerError { status } => write!(f, "HTTP {status}"),
            Self::Upstream => f.write_str("temporary Bitrix24 error"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum McpError {
    #[error("Bitrix24 rejected the token (it may be wrong, expired or revoked){}", code_suffix(.code))]
    Unauthorized {
        status: Option<u16>,
        code: Option<String>,
    },
    #[error("Bitrix24 rate limit reached; retry later")]
    RateLimited { retry_after: Option<Duration> },
    #[error("Bitrix24 MCP server unreachable or timed out ({reason})")]
    Transient { reason: TransientReason },
    #[error("Bitrix24 reports the record was not found")]
    NotFound,
    #[error("Bitrix24 refused the operation{}", code_suffix(.code))]
    Permanent { code: Option<String> },
    #[error("the Bitrix24 MCP server answered unexpectedly: {detail}")]
    Protocol { detail: String },
    /// The server does not know the tool that was called (JSON-RPC -32601, or -32602 / an
    /// error result that says the tool is unknown): the binding is stale.
    #[error("the Bitrix24 MCP server does not know the tool that was called")]
    UnknownTool,
    /// JSON-RPC -32602 for a known tool: the server refused these arguments. Whether that is
    /// this event's data or a changed schema is for the caller to find out (re-discovery).
    #[error("the Bitrix24 MCP server refused the tool's arguments (JSON-RPC -32602)")]
    InvalidArguments,
    #[error(transparent)]
    UrlRejected(#[from] UrlError),
}

fn code_suffix(code: &Option<String>) -> String {
    code.as_ref().map(|c| format!(" ({c})")).unwrap_or_default()
}

impl McpError {
    /// Rate limits and transient failures go away by themselves; everything else needs a person
    /// (new token, different URL, different data).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Transient { .. })
    }

    /// How long Bitrix24 asked us to wait, when it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => *retry_after,
            _ => None,
        }
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Self {
        Self::Protocol {
            detail: detail.into(),
        }
    }

    pub(crate) fn transient(reason: TransientReason) -> Self {
        Self::Transient { reason }
    }
}

/// A code is echoed only when it looks like an identifier (`ERROR_CORE`, `invalid_token`), so no
/// free text from upstream reaches an error message.
pub(crate) fn safe_code(code: &str) -> Option<String> {
    let ok = !code.is_empty()
        && code.len() <= 64
        && code
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
    ok.then(|| code.to_owned())
}

/// `time.operating_reset_at` (epoch seconds) of a Bitrix24 envelope, as a wait from now.
pub(crate) fn reset_wait(body: &serde_json::Value) -> Option<Duration> {
    let reset = body.pointer("/time/operating_reset_at")?;
    let at = reset
        .as_f64()
        .or_else(|| reset.as_str().and_then(|s| s.parse().ok()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    wait_from_secs(at - now)
}

/// Longest wait an upstream number may ask for: the operating-time limit resets within ten
/// minutes, so anything longer is a broken or hostile value, capped rather than trusted.
pub(crate) const MAX_UPSTREAM_WAIT: Duration = Duration::from_secs(600);

/// Seconds from upstream as a wait: negative or NaN is none, infinity or overflow is the cap.
/// `Duration::from_secs_f64` panics on those, and one panic would fail a whole batch.
pub(crate) fn wait_from_secs(secs: f64) -> Option<Duration> {
    if secs.is_nan() {
        return None;
    }
    Some(
        Duration::try_from_secs_f64(secs.max(0.0))
            .unwrap_or(MAX_UPSTREAM_WAIT)
            .min(MAX_UPSTREAM_WAIT),
    )
}

/// Rate limits: the portal's leaky bucket (503) and its overload guard.
const RATE_CODES: &[&str] = &["QUERY_LIMIT_EXCEEDED", "OVERLOAD_LIMIT"];
/// The per-method operating-time limit (429); its answer says when it resets.
const OPERATING_CODE: &str = "OPERATION_TIME_LIMIT";
/// The token or the user behind it is refused.
const AUTH_CODES: &[&str] = &[
    "NO_AUTH_FOUND",
    "expired_token",
    "invalid_token",
    "INVALID_CREDENTIALS",
    "ACCESS_DENIED",
    "insufficient_scope",
    "WRONG_AUTH_TYPE",
    "user_access_error",
];
/// Bitrix24's own temporary failures.
const TRANSIENT_CODES: &[&str] = &["INTERNAL_SERVER_ERROR", "ERROR_UNEXPECTED_ANSWER"];
const NOT_FOUND_CODES: &[&str] = &["NOT_FOUND", "ERROR_NOT_FOUND"];

/// The class a Bitrix24 error code stands for, if it is one the connector knows.
fn class_of_code(code: &str, body: Option<&serde_json::Value>) -> Option<McpError> {
    if RATE_CODES.contains(&code) || code == OPERATING_CODE {
        return Some(McpError::RateLimited {
            retry_after: body.and_then(reset_wait),
        });
    }
    if AUTH_CODES.contains(&code) {
        return Some(McpError::Unauthorized {
            status: None,
            code: Some(code.to_owned()),
        });
    }
    if TRANSIENT_CODES.contains(&code) {
        return Some(McpError::transient(TransientReason::Upstream));
    }
    if NOT_FOUND_CODES.contains(&code) {
        return Some(McpError::NotFound);
    }
    None
}

/// Bitrix24 answers a missing record with an empty code and this whole description.
fn is_not_found_message(text: &str) -> bool {
    let t = text.trim().trim_end_matches('.').trim();
    let t = t.to_lowercase();
    [
        "not found",
        "lead not found",
        "не найден",
        "не найдено",
        "лид не найден",
    ]
    .contains(&t.as_str())
}

/// A known Bitrix24 code standing alone in a plain-text error (`Ошибка Bitrix24:
/// QUERY_LIMIT_EXCEEDED`). Codes are identifiers with an underscore, compared exactly, so no
/// customer text ("call after 401", "+1 403 555 0100", "server error") can look like one.
fn code_in_text(text: &str) -> Option<&'static str> {
    let all = RATE_CODES
        .iter()
        .chain(std::iter::once(&OPERATING_CODE))
        .chain(AUTH_CODES)
        .chain(TRANSIENT_CODES)
        .chain(NOT_FOUND_CODES);
    let words: Vec<&str> = text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.contains('_'))
        .collect();
    all.copied().find(|code| words.contains(code))
}

/// The message after a plain-text error's prefix (`Ошибка Bitrix24: Not found` -> `Not found`).
fn after_prefix(text: &str) -> &str {
    let t = text.trim();
    match t.rsplit_once(':') {
        Some((prefix, rest)) if prefix.chars().count() <= 40 && !prefix.contains('\n') => rest,
        _ => t,
    }
}

/// Classifies a tool's error answer (an `isError` result, a `{"error": ...}` body in a result,
/// or plain non-JSON text where JSON belongs) from its structure only:
/// - a JSON body's `error` code (a string, or an object's `code`) decides; an empty or absent
///   code with the description "Not found" is Bitrix24's missing record;
/// - in plain text, a known Bitrix24 code standing as its own identifier, or a message that is
///   exactly "Not found" after its prefix;
/// - anything else is [`McpError::Permanent`] without a code: the operation was refused, and
///   nothing in the text is guessed at. Numbers and ordinary words in free text never decide,
///   because error texts echo what was sent (a customer's phone `+1 403 555 0100`, a note
///   "call after 401").
pub fn classify_tool_error(text: &str) -> McpError {
    let json: Option<serde_json::Value> = serde_json::from_str(text.trim()).ok();
    if let Some(obj) = json.as_ref().and_then(serde_json::Value::as_object) {
        return classify_error_body(obj, json.as_ref());
    }
    if let Some(class) = code_in_text(text).and_then(|code| class_of_code(code, None)) {
        return class;
    }
    if is_not_found_message(after_prefix(text)) {
        return McpError::NotFound;
    }
    McpError::Permanent { code: None }
}

/// Classifies a structured Bitrix24 error body `{"error": CODE, "error_description": ...}`.
pub fn classify_error_body(
    obj: &serde_json::Map<String, serde_json::Value>,
    whole: Option<&serde_json::Value>,
) -> McpError {
    let err = obj.get("error");
    let code = err.and_then(|e| {
        e.as_str()
            .map(str::to_owned)
            .or_else(|| e.get("code").and_then(|c| c.as_str()).map(str::to_owned))
    });
    let description = obj
        .get("error_description")
        .or_else(|| err.and_then(|e| e.get("message")))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    match code.as_deref().map(str::trim) {
        Some(c) if !c.is_empty() => {
            class_of_code(c, whole).unwrap_or(McpError::Permanent { code: safe_code(c) })
        }
        _ if is_not_found_message(description) => McpError::NotFound,
        _ => McpError::Permanent { code: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The class of every kind of tool error answer, decided by structure alone.
    #[test]
    fn classifies_tool_errors_from_structure_not_prose() {
        type Row = (&'static str, fn(&McpError) -> bool, &'static str);
        let rate = |e: &McpError| matches!(e, McpError::RateLimited { .. });
        let auth = |e: &McpError| matches!(e, McpError::Unauthorized { .. });
        let transient = |e: &McpError| matches!(e, McpError::Transient { .. });
        let not_found = |e: &McpError| *e == McpError::NotFound;
        let refused = |e: &McpError| *e == McpError::Permanent { code: None };
        let rows: &[Row] = &[
            (
                r#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#,
                rate,
                "leaky bucket code in a JSON body",
            ),
            (r#"{"error":"OVERLOAD_LIMIT"}"#, rate, "overload code"),
            (
                "Ошибка Bitrix24: OVERLOAD_LIMIT",
                rate,
                "a code alone in plain text is still a code",
            ),
            (
                r#"{"error":"OPERATION_TIME_LIMIT","time":{"operating_reset_at":1}}"#,
                |e| matches!(e, McpError::RateLimited { retry_after: Some(d) } if d.is_zero()),
                "operating limit whose reset has passed: no wait",
            ),
            (
                r#"{"error":"OPERATION_TIME_LIMIT","time":{"operating_reset_at":1e300}}"#,
                |e| matches!(e, McpError::RateLimited { retry_after: Some(d) } if *d == MAX_UPSTREAM_WAIT),
                "an absurd reset time is capped, never a panic",
            ),
            (
                r#"{"error":"expired_token","error_description":"The access token provided has expired."}"#,
                |e| matches!(e, McpError::Unauthorized { code: Some(c), .. } if c == "expired_token"),
                "expired token",
            ),
            (
                r#"{"error":"ACCESS_DENIED","error_description":"Access denied"}"#,
                |e| matches!(e, McpError::Unauthorized { code: Some(c), .. } if c == "ACCESS_DENIED"),
                "access denied",
            ),
            (
                r#"{"error":{"code":"insufficient_scope","message":"scope crm"}}"#,
                auth,
                "code inside an error object",
            ),
            ("insufficient_scope", auth, "a bare auth code"),
            (
                r#"{"error":"INTERNAL_SERVER_ERROR"}"#,
                transient,
                "Bitrix24's internal error",
            ),
            (r#"{"error":"NOT_FOUND"}"#, not_found, "not-found code"),
            (
                r#"{"error":"","error_description":"Not found"}"#,
                not_found,
                "crm.lead.get on a missing id: empty code, description Not found",
            ),
            (
                "Ошибка Bitrix24: Not found",
                not_found,
                "plain text whose whole message is Not found",
            ),
            (
                "Лид не найден",
                not_found,
                "the whole message is 'lead not found'",
            ),
            (
                "Лид не найден? Клиент сказал: позвоните",
                refused,
                "a sentence that contains the words is not that message",
            ),
            (
                r#"{"error":"ERROR_CORE","error_description":"Status is wrong: token abc123"}"#,
                |e| {
                    *e == McpError::Permanent {
                        code: Some("ERROR_CORE".into()),
                    }
                },
                "a refused field keeps its code, never its description",
            ),
            (
                "Error: invalid phone +1 403 555 0100",
                refused,
                "an echoed phone with 403 in it is not an auth failure",
            ),
            (
                "Could not add comment 'call after 401 pm'",
                refused,
                "an echoed note with 401 is not an auth failure",
            ),
            (
                "Ошибка: клиент просил перезвонить, код 503",
                refused,
                "503 in prose is not a server failure",
            ),
            (
                "HTTP 401 Unauthorized",
                refused,
                "numbers and words in prose never decide",
            ),
            (
                "Gateway timeout",
                refused,
                "timeout in prose is not transient",
            ),
            ("upstream answered 502", refused, "502 in prose"),
            (
                "ACCESS_DENIED_X happened",
                refused,
                "a longer identifier is not the code",
            ),
            ("something odd happened", refused, "unknown prose"),
            (
                r#"{"error":"Some description with spaces"}"#,
                refused,
                "a non-identifier code is not echoed",
            ),
        ];
        for (text, ok, why) in rows {
            let e = classify_tool_error(text);
            assert!(ok(&e), "{why}: {text:?} -> {e:?}");
            let shown = e.to_string();
            assert!(
                !shown.contains("abc123")
                    && !shown.contains("Too many requests")
                    && !shown.contains("403 555"),
                "{why}: raw text leaked: {shown}"
            );
        }
        assert!(rows.len() >= 20);
    }

    #[test]
    fn upstream_seconds_never_panic() {
        for (secs, want) in [
            (f64::INFINITY, Some(MAX_UPSTREAM_WAIT)),
            (1e300, Some(MAX_UPSTREAM_WAIT)),
            (f64::NAN, None),
            (-5.0, Some(Duration::ZERO)),
            (1.5, Some(Duration::from_millis(1500))),
        ] {
            assert_eq!(wait_from_secs(secs), want, "{secs}");
        }
    }

    #[test]
    fn future_reset_time_becomes_a_wait() {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let text = format!(
            r#"{{"error":"OPERATION_TIME_LIMIT","time":{{"operating_reset_at":{}}}}}"#,
            now + 30
        );
        let wait = classify_tool_error(&text).retry_after().unwrap();
        assert!(
            wait > Duration::from_secs(25) && wait <= Duration::from_secs(30),
            "{wait:?}"
        );
    }

    #[test]
    fn retryability_follows_the_variant() {
        assert!(McpError::transient(TransientReason::Timeout).is_retryable());
        assert!(McpError::RateLimited { retry_after: None }.is_retryable());
        assert!(!McpError::NotFound.is_retryable());
        assert!(
            !McpError::Unauthorized {
                status: Some(401),
                code: None
            }
            .is_retryable()
        );
        assert!(!McpError::UrlRejected(UrlError::NoHost).is_retryable());
        assert_eq!(
            McpError::Unauthorized {
                status: Some(401),
                code: None
            }
            .to_string(),
            "Bitrix24 rejected the token (it may be wrong, expired or revoked)"
        );
    }
}
