//! `bitrix-test`: API Gateway HTTP API (payload v2) -> `shared::http::test` (the route in `shared::http::test_connection`).
//! Wiring only: tracing, the per-container state (config, DynamoDB, KMS and SQS clients, the MCP client), the runtime.

use lambda_http::{Error, Request, service_fn};
use shared::http::{App, test};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::from_env().await?;
    let app = &app;
    lambda_http::run(service_fn(move |req: Request| test(app, req))).await
}
