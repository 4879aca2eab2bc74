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

const RATE_CODES: &[&str] = &["QUERY_LIMIT_EXCEEDED", "OVERLOAD_LIMIT"];
const AUTH_CODES: &[&str] = &[
    "NO_AUTH_FOUND",
    "expired_token",
    "invalid_token",
    "INVALID_CREDENTIALS",
    "ACCESS_DENIED",
    "insufficient_scope",
];

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
    Some(Duration::from_secs_f64((at - now).max(0.0)))
}

/// Classifies a tool's error text (isError results, or plain-text errors), keeping only
/// recognised Bitrix24 error codes, never the raw text. Bitrix24 errors reach us either as JSON
/// `{"error": CODE, "error_description": ...}` or as prose such as "Ошибка Bitrix24: Not found"
/// (facts §1, §4), so both the `error` field and the words are read.
pub fn classify_tool_error(text: &str) -> McpError {
    let json: Option<serde_json::Value> = serde_json::from_str(text.trim()).ok();
    let code = json.as_ref().and_then(|j| j.get("error")).and_then(|e| {
        e.as_str()
            .map(str::to_owned)
            .or_else(|| e.get("code").and_then(|c| c.as_str()).map(str::to_owned))
    });
    let has = |needle: &str| {
        code.as_deref()
            .is_some_and(|c| c.eq_ignore_ascii_case(needle))
            || contains_word(text, needle)
    };
    let found = |list: &[&str]| list.iter().copied().find(|c| has(c)).map(str::to_owned);

    if found(RATE_CODES).is_some() {
        return McpError::RateLimited {
            retry_after: json.as_ref().and_then(reset_wait),
        };
    }
    if has("OPERATION_TIME_LIMIT") {
        return McpError::RateLimited {
            retry_after: json.as_ref().and_then(reset_wait),
        };
    }
    if let Some(c) = found(AUTH_CODES) {
        return McpError::Unauthorized {
            status: None,
            code: Some(c),
        };
    }
    for (needle, status) in [
        ("401", Some(401)),
        ("Unauthorized", Some(401)),
        ("403", Some(403)),
    ] {
        if has(needle) {
            return McpError::Unauthorized { status, code: None };
        }
    }
    let lower = text.to_lowercase();
    if has("NOT_FOUND") || lower.contains("not found") || lower.contains("не найден") {
        return McpError::NotFound;
    }
    if has("INTERNAL_SERVER_ERROR")
        || ["500", "502", "503"].iter().any(|s| has(s))
        || lower.contains("timeout")
        || lower.contains("timed out")
    {
        return McpError::transient(TransientReason::Upstream);
    }
    McpError::Permanent {
        code: code.as_deref().and_then(safe_code),
    }
}

/// `needle` occurs in `text` not glued to other letters/digits/underscores, so "5003" is not
/// "500" and "ACCESS_DENIED_X" is not "ACCESS_DENIED".
fn contains_word(text: &str, needle: &str) -> bool {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let hay = text.to_ascii_lowercase();
    let needle = needle.to_ascii_lowercase();
    let mut start = 0;
    while let Some(pos) = hay[start..].find(&needle) {
        let at = start + pos;
        let end = at + needle.len();
        let before_ok = hay[..at].chars().next_back().is_none_or(|c| !is_word(c));
        let after_ok = hay[end..].chars().next().is_none_or(|c| !is_word(c));
        if before_ok && after_ok {
            return true;
        }
        start = at + needle.len().max(1);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_tool_error_texts() {
        type Row = (&'static str, fn(&McpError) -> bool, &'static str);
        let rows: &[Row] = &[
            (
                r#"{"error":"QUERY_LIMIT_EXCEEDED","error_description":"Too many requests"}"#,
                |e| matches!(e, McpError::RateLimited { .. }),
                "rate limit code",
            ),
            (
                "Ошибка Bitrix24: OVERLOAD_LIMIT",
                |e| matches!(e, McpError::RateLimited { .. }),
                "overload in prose",
            ),
            (
                r#"{"error":"OPERATION_TIME_LIMIT","time":{"operating_reset_at":1}}"#,
                |e| matches!(e, McpError::RateLimited { retry_after: Some(d) } if d.is_zero()),
                "operating limit with past reset",
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
                "insufficient_scope",
                |e| matches!(e, McpError::Unauthorized { .. }),
                "scope",
            ),
            (
                "HTTP 401 Unauthorized",
                |e| {
                    matches!(
                        e,
                        McpError::Unauthorized {
                            status: Some(401),
                            ..
                        }
                    )
                },
                "401 in prose",
            ),
            (
                "Request failed: 403",
                |e| {
                    matches!(
                        e,
                        McpError::Unauthorized {
                            status: Some(403),
                            ..
                        }
                    )
                },
                "403 in prose",
            ),
            (
                "Ошибка Bitrix24: Not found",
                |e| *e == McpError::NotFound,
                "plain not found",
            ),
            (
                r#"{"error":"NOT_FOUND"}"#,
                |e| *e == McpError::NotFound,
                "code not found",
            ),
            (
                "Лид не найден",
                |e| *e == McpError::NotFound,
                "russian not found",
            ),
            (
                r#"{"error":"INTERNAL_SERVER_ERROR"}"#,
                |e| e.is_retryable(),
                "internal error",
            ),
            ("upstream answered 502", |e| e.is_retryable(), "502"),
            ("Gateway timeout", |e| e.is_retryable(), "timeout"),
            (
                r#"{"error":"ERROR_CORE","error_description":"Status is wrong: token abc123"}"#,
                |e| {
                    *e == McpError::Permanent {
                        code: Some("ERROR_CORE".into()),
                    }
                },
                "validation error keeps code",
            ),
            (
                "something odd happened",
                |e| *e == McpError::Permanent { code: None },
                "unknown prose",
            ),
            (
                "error 5003 in field",
                |e| *e == McpError::Permanent { code: None },
                "5003 is not 500",
            ),
        ];
        for (text, ok, why) in rows {
            let e = classify_tool_error(text);
            assert!(ok(&e), "{why}: {text:?} -> {e:?}");
            let shown = e.to_string();
            assert!(
                !shown.contains("abc123") && !shown.contains("Too many requests"),
                "{why}: raw text leaked: {shown}"
            );
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
