//! `ApiError` and the ONE place where any failure of the HTTP API becomes a response: always JSON
//! `{"detail": ...}` with `content-type: application/json`, safe text only. Causes of 500/503
//! go to the log (by `Debug`, which keeps the source chain), never to the body.

use lambda_http::{Body, Response};
use serde_json::Value;

use super::auth::AuthError;

/// Everything a route can fail with, carrying what decides the status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No valid tenant: missing/invalid JWT, no tenant claim.
    #[error("Not authenticated: {0}")]
    Unauthorized(#[from] AuthError),
    #[error("Method not allowed; use {allowed}")]
    MethodNotAllowed { allowed: http::Method },
    #[error("Request body too large (limit {} bytes)", super::MAX_BODY_BYTES)]
    PayloadTooLarge,
    /// The body, token or URL is invalid; the text names the field and the rule, never a value
    /// that could be the token.
    #[error("{0}")]
    Invalid(String),
    /// connect's live check failed; the reason is written for a person, the class
    /// ([`super::connect::check_class`]) for the `ConnectResults` metric.
    #[error("Connection failed: {reason}")]
    ConnectionFailed { reason: String, class: &'static str },
    #[error("Bitrix24 MCP not configured")]
    NotConfigured,
    /// AWS (DynamoDB, KMS) is unavailable: retryable, 503.
    #[error("Service temporarily unavailable, please try again")]
    Unavailable {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A bug, a misconfiguration or corrupt data: 500 with no detail.
    #[error("Internal error")]
    Internal {
        what: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ApiError {
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            Self::Unauthorized(_) => S::UNAUTHORIZED,
            Self::MethodNotAllowed { .. } => S::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => S::PAYLOAD_TOO_LARGE,
            Self::Invalid(_) => S::UNPROCESSABLE_ENTITY,
            Self::ConnectionFailed { .. } | Self::NotConfigured => S::BAD_REQUEST,
            Self::Unavailable { .. } => S::SERVICE_UNAVAILABLE,
            Self::Internal { .. } => S::INTERNAL_SERVER_ERROR,
        }
    }

    /// The class of a failed connect or test, as the `ConnectResults` metric counts it.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Unauthorized(_) => "unauthenticated",
            Self::MethodNotAllowed { .. } | Self::PayloadTooLarge | Self::Invalid(_) => "invalid",
            Self::ConnectionFailed { class, .. } => class,
            Self::NotConfigured => "not_configured",
            Self::Unavailable { .. } | Self::Internal { .. } => "operator",
        }
    }

    pub(crate) fn unavailable(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Unavailable {
            what,
            source: Box::new(source),
        }
    }

    pub(crate) fn internal(
        what: &'static str,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self::Internal {
            what,
            source: Box::new(source),
        }
    }

    /// The response; logs server-side failures with their cause chain, and client errors at
    /// info (they are expected, but a burst of 401s is worth seeing).
    pub fn into_response(self) -> Response<Body> {
        self.into_response_with(|_| serde_json::Map::new())
    }

    /// The response of the test route: `{"detail"}` plus `"ok": false` and `"message"` with the
    /// same text. The TeleAgent web UI reads `ok` and `message` from test's answer whatever its
    /// status (a 401 after the session expired, a 400 after a disconnect in another tab) and
    /// would otherwise show "Test failed: undefined"; `detail` stays for every other client.
    pub fn into_test_response(self) -> Response<Body> {
        self.into_response_with(|detail| {
            serde_json::Map::from_iter([
                ("ok".to_owned(), Value::Bool(false)),
                ("message".to_owned(), Value::String(detail.to_owned())),
            ])
        })
    }

    /// The response, with route-specific fields (built from the detail text) beside `detail`.
    fn into_response_with(
        self,
        extra: impl FnOnce(&str) -> serde_json::Map<String, Value>,
    ) -> Response<Body> {
        let status = self.status();
        match &self {
            Self::Unavailable { what, source } | Self::Internal { what, source } => {
                tracing::error!(status = status.as_u16(), what, error = ?source, "request failed");
            }
            Self::Unauthorized(reason) => {
                tracing::info!(status = status.as_u16(), %reason, "request not authenticated");
            }
            other => tracing::info!(status = status.as_u16(), detail = %other, "request refused"),
        }
        let detail = self.to_string();
        let mut body = extra(&detail);
        body.insert("detail".to_owned(), Value::String(detail));
        let mut resp = json_response(status, &Value::Object(body));
        match &self {
            Self::MethodNotAllowed { allowed } => {
                if let Ok(v) = http::HeaderValue::from_str(allowed.as_str()) {
                    resp.headers_mut().insert(http::header::ALLOW, v);
                }
            }
            Self::Unauthorized(_) => {
                resp.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
            }
            _ => {}
        }
        resp
    }
}

/// A JSON response. `no-store`: answers carry per-tenant state and must not be cached.
pub(crate) fn json_response(status: http::StatusCode, body: &Value) -> Response<Body> {
    let mut resp = Response::new(Body::Text(body.to_string()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(resp: &Response<Body>) -> Value {
        match resp.body() {
            Body::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("not a text body: {other:?}"),
        }
    }

    #[test]
    fn every_error_is_json_with_detail_and_the_right_status() {
        let io = || std::io::Error::other("dynamo exploded with secret-cause");
        let rows: Vec<(ApiError, u16, &str)> = vec![
            (
                ApiError::Unauthorized(AuthError::Missing),
                401,
                "Not authenticated: ",
            ),
            (
                ApiError::MethodNotAllowed {
                    allowed: http::Method::POST,
                },
                405,
                "Method not allowed; use POST",
            ),
            (ApiError::PayloadTooLarge, 413, "Request body too large"),
            (
                ApiError::Invalid("mcp_token must be a string".into()),
                422,
                "mcp_token must be a string",
            ),
            (
                ApiError::ConnectionFailed {
                    reason: "x".into(),
                    class: "unreachable",
                },
                400,
                "Connection failed: x",
            ),
            (ApiError::NotConfigured, 400, "Bitrix24 MCP not configured"),
            (
                ApiError::unavailable("read", io()),
                503,
                "Service temporarily unavailable",
            ),
            (ApiError::internal("read", io()), 500, "Internal error"),
        ];
        for (err, status, prefix) in rows {
            let resp = err.into_response();
            assert_eq!(resp.status().as_u16(), status, "{prefix}");
            assert_eq!(
                resp.headers()[http::header::CONTENT_TYPE],
                "application/json"
            );
            let detail = body_of(&resp)["detail"].as_str().unwrap().to_owned();
            assert!(
                detail.starts_with(prefix),
                "{detail:?} should start with {prefix:?}"
            );
            assert!(
                !detail.contains("secret-cause"),
                "cause leaked into {detail:?}"
            );
        }
    }

    #[test]
    fn test_route_errors_carry_ok_false_and_message_equal_to_detail() {
        for err in [
            ApiError::NotConfigured,
            ApiError::Unauthorized(AuthError::Missing),
            ApiError::PayloadTooLarge,
            ApiError::internal("read", std::io::Error::other("x")),
        ] {
            let resp = err.into_test_response();
            let body = body_of(&resp);
            assert_eq!(body["ok"], false, "{body}");
            assert_eq!(body["message"], body["detail"], "{body}");
            assert!(body["detail"].as_str().is_some_and(|d| !d.is_empty()));
        }
    }

    #[test]
    fn method_not_allowed_names_the_allowed_method() {
        let resp = ApiError::MethodNotAllowed {
            allowed: http::Method::GET,
        }
        .into_response();
        assert_eq!(resp.headers()[http::header::ALLOW], "GET");
    }
}
