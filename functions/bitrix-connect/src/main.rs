//! `bitrix-connect`: API Gateway HTTP API (payload v2) -> `shared::http`, route `connect`.
//! Wiring only: tracing, the per-container state (config, AWS clients, MCP client), the runtime.

use lambda_http::{Error, Request, service_fn};
use shared::http::{App, Route, handle};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let app = App::from_env().await?;
    let app = &app;
    lambda_http::run(service_fn(move |req: Request| {
        handle(app, Route::Connect, req)
    }))
    .await
}
