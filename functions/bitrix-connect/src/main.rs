//! `bitrix-connect`: API Gateway HTTP API (payload v2) -> `shared::http::connect`.
//! Wiring only: tracing, the per-container state (config, DynamoDB, KMS and SQS clients, the MCP client), the runtime.

use lambda_http::{Error, Request, service_fn};
use shared::http::{App, connect};

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::telemetry::init();
    let app = App::from_env().await?;
    let app = &app;
    lambda_http::run(service_fn(move |req: Request| connect(app, req))).await
}
