//! `bitrix-status`: API Gateway HTTP API (payload v2) -> `shared::http::status`.
//! Wiring only: tracing, the per-container state (config and the DynamoDB client only), the runtime.

use lambda_http::{Error, Request, service_fn};
use shared::http::{StoreApp, status};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = StoreApp::from_env().await?;
    let app = &app;
    lambda_http::run(service_fn(move |req: Request| status(app, req))).await
}
