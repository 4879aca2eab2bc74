//! `POST /api/bitrix-mcp/disconnect`: remove the token and the connection fields, keep the lead
//! links (a reconnect must find the leads it made, not duplicate them). Idempotent.

use lambda_http::{Body, Request, Response};
use serde_json::json;

use super::connect::store_error;
use super::error::json_response;
use super::{ApiError, Route, StoreApp, admit};

#[tracing::instrument(skip_all, fields(tenant_id))]
pub(super) async fn disconnect(app: &StoreApp, req: Request) -> Result<Response<Body>, ApiError> {
    let (tenant, _body) = admit(&app.config, Route::Disconnect, &req)?;
    let after = app
        .store
        .clear_connection(&tenant)
        .await
        .map_err(|e| store_error("clear connection", e))?;
    let detail = json!({"version": after.map(|i| i.version)});
    if let Err(e) = app.store.audit(&tenant, "disconnected", detail).await {
        tracing::warn!(error = ?e, "audit line for disconnect not written");
    }
    Ok(json_response(
        http::StatusCode::OK,
        &json!({"success": true, "message": "Bitrix24 disconnected"}),
    ))
}
