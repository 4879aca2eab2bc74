//! The HTTP API (`/api/bitrix-mcp/{connect,test,disconnect,status}`, the README's "HTTP API"), served by
//! four Lambda functions behind API Gateway HTTP API (payload v2) through `lambda_http`.
//!
//! `app` is the state built once per container, `auth` turns a request into a [`TenantId`]
//! (authorizer claims or an HS256 bearer JWT), `error` is the ONE place where failures become
//! responses, and one file per route holds that route's rules. Every handler answers JSON and never
//! returns `Err` to the runtime: a runtime error would become API Gateway's non-JSON 502.
//!
//! There is one entry point per route ([`connect`], [`test`](fn@test), [`disconnect`], [`status`]) rather
//! than one dispatcher: each function's `main` names only its route, so the linker keeps only that
//! route's code and state (status and disconnect carry no KMS, SQS or MCP client).
//!
//! [`TenantId`]: crate::tenant::TenantId

pub mod app;
pub mod auth;
mod connect;
mod disconnect;
pub mod error;
mod status;
mod test_connection;

use lambda_http::{Body, Request, Response};

use crate::metrics::{self, Metric};

pub use app::{App, AppError, StoreApp};
pub use auth::AuthError;
pub use connect::connection_failure_reason;
pub use error::ApiError;

/// Largest request body accepted (the connect body is two short strings); larger -> 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// Deadline of the whole live check, kept under API Gateway's 29 s so nothing is stored after the
/// web UI gave up.
pub const LIVE_CHECK_DEADLINE: std::time::Duration = std::time::Duration::from_secs(20);

/// The four routes; each function serves one of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    Connect,
    Test,
    Disconnect,
    Status,
}

impl Route {
    /// The HTTP method the route accepts; anything else is 405.
    pub fn method(self) -> http::Method {
        match self {
            Self::Status => http::Method::GET,
            Self::Connect | Self::Test | Self::Disconnect => http::Method::POST,
        }
    }

    /// The route's path under the API (as in `infra/openapi.yaml`).
    pub fn path(self) -> &'static str {
        match self {
            Self::Connect => "/api/bitrix-mcp/connect",
            Self::Test => "/api/bitrix-mcp/test",
            Self::Disconnect => "/api/bitrix-mcp/disconnect",
            Self::Status => "/api/bitrix-mcp/status",
        }
    }
}

/// `POST /connect`. Always a JSON response; the `Result` only satisfies `lambda_http::run`'s
/// service bound and is never `Err` (the same holds for the other three entry points).
pub async fn connect(app: &App, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let result = connect::connect(app, sensitive_authorization(req)).await;
    let class = result.as_ref().map_or_else(ApiError::class, |_| "ok");
    app.metrics.count_as(Metric::ConnectResults, class, 1);
    app.metrics.flush(metrics::function::CONNECT);
    Ok(respond(result))
}

/// `POST /test`. Its failures also carry `ok: false` and `message` ([`ApiError::into_test_response`]).
pub async fn test(app: &App, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    let (response, class) = match test_connection::test(app, sensitive_authorization(req)).await {
        Ok(answer) => answer,
        Err(e) => {
            let class = e.class();
            (e.into_test_response(), class)
        }
    };
    app.metrics.count_as(Metric::ConnectResults, class, 1);
    app.metrics.flush(metrics::function::TEST);
    Ok(response)
}

/// `POST /disconnect`.
pub async fn disconnect(
    app: &StoreApp,
    req: Request,
) -> Result<Response<Body>, lambda_http::Error> {
    Ok(respond(
        disconnect::disconnect(app, sensitive_authorization(req)).await,
    ))
}

/// `GET /status`.
pub async fn status(app: &StoreApp, req: Request) -> Result<Response<Body>, lambda_http::Error> {
    Ok(respond(
        status::status(app, sensitive_authorization(req)).await,
    ))
}

/// Marks the `Authorization` header sensitive, so a `Debug` of the request or its headers (in a
/// log line, an error, a panic message) prints `Sensitive` instead of the bearer JWT.
pub fn sensitive_authorization(mut req: Request) -> Request {
    if let Some(v) = req.headers_mut().get_mut(http::header::AUTHORIZATION) {
        v.set_sensitive(true);
    }
    req
}

/// Every route's outcome becomes a response here; failures through [`ApiError::into_response`].
fn respond(result: Result<Response<Body>, ApiError>) -> Response<Body> {
    result.unwrap_or_else(ApiError::into_response)
}

/// The checks every route does first, in this order: method (405), tenant (401), body size (413).
/// Returns the tenant and the body bytes.
fn admit(
    config: &crate::config::Config,
    route: Route,
    req: &Request,
) -> Result<(crate::tenant::TenantId, Vec<u8>), ApiError> {
    if req.method() != route.method() {
        return Err(ApiError::MethodNotAllowed {
            allowed: route.method(),
        });
    }
    let tenant = auth::tenant_from_request(req, config)?;
    tracing::Span::current().record("tenant_id", tenant.as_str());
    let body: &[u8] = match req.body() {
        Body::Empty => &[],
        Body::Text(t) => t.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    };
    if body.len() > MAX_BODY_BYTES {
        return Err(ApiError::PayloadTooLarge);
    }
    Ok((tenant, body.to_vec()))
}

/// Asks lead-sync to replay the tenant's parked events after a successful connect or test: one
/// SQS message, so the request never waits for the replay itself. A failure is logged and never
/// fails the request: the events stay parked, and the tenant's next successful sync asks again.
async fn replay(app: &App, tenant: &crate::tenant::TenantId) {
    let Some(queue) = app.config.lead_queue_url.as_deref() else {
        tracing::warn!("LEAD_QUEUE_URL is not set; parked events stay parked");
        return;
    };
    if let Err(e) = crate::sync::replay::request_replay(&app.sqs, queue, tenant, false).await {
        tracing::warn!(error = ?e, "replay not requested; parked events stay parked");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_authorization_header_is_never_printed() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnRfaWQiOiJ0In0.SIGNATURE-PART";
        let req = http::Request::builder()
            .header(http::header::AUTHORIZATION, format!("Bearer {jwt}"))
            .body(lambda_http::Body::Empty)
            .unwrap_or_default();
        assert!(
            format!("{req:?}").contains("SIGNATURE-PART"),
            "the header is there to hide"
        );
        let req = super::sensitive_authorization(req);
        let printed = format!("{req:?} {:?}", req.headers());
        assert!(!printed.contains("SIGNATURE-PART"), "{printed}");
        assert!(
            req.headers().contains_key(http::header::AUTHORIZATION),
            "still sent on"
        );
    }
}
