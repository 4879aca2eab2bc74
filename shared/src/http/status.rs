//! `GET /api/bitrix-mcp/status`: one consistent read, nothing decrypted. `connected` is false
//! when the integration is in `error`, so the web UI shows the token form again and the tenant
//! can paste a new token; `sync_status`/`last_error` say why, and `parked_events` how many
//! events wait for the portal to work again; `last_watch_at` when managers' changes in Bitrix24
//! were last read back (lead-watch).

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::connect::store_error;
use super::error::json_response;
use super::{ApiError, Route, StoreApp, admit};
use crate::store::SyncStatus;

fn rfc3339(t: Option<OffsetDateTime>) -> Value {
    t.and_then(|t| t.format(&Rfc3339).ok())
        .map_or(Value::Null, Value::String)
}

#[tracing::instrument(skip_all, fields(tenant_id))]
pub(super) async fn status(app: &StoreApp, req: Request) -> Result<Response<Body>, ApiError> {
    let (tenant, _body) = admit(&app.config, Route::Status, &req)?;
    let integ = app
        .store
        .get_integration(&tenant)
        .await
        .map_err(|e| store_error("read integration", e))?;
    let body = match integ.filter(|i| i.is_connected()) {
        Some(i) => json!({
            "connected": i.sync_status != Some(SyncStatus::Error),
            "mcp_url": i.mcp_url,
            "connected_at": rfc3339(i.connected_at),
            "last_sync_at": rfc3339(i.last_sync_at),
            "sync_status": i.sync_status.map(SyncStatus::as_str),
            "last_error": i.last_error,
            "parked_events": i.parked_count,
            "last_watch_at": rfc3339(i.last_watch_at),
        }),
        None => json!({
            "connected": false,
            "mcp_url": null,
            "connected_at": null,
            "last_sync_at": null,
            "sync_status": null,
            "last_error": null,
            "parked_events": null,
            "last_watch_at": null,
        }),
    };
    Ok(json_response(http::StatusCode::OK, &body))
}
