//! `POST /api/bitrix-mcp/test`: decrypt the stored token and run the same live check as connect.
//! A pass heals an `error` integration (and re-sends its parked events); an auth failure puts it
//! in `error` so the web UI offers the token form again.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use super::connect::{check_class, connection_failure_reason, store_error, vault_error};
use super::error::json_response;
use super::{ApiError, App, LIVE_CHECK_DEADLINE, Route, admit};
use crate::crm::live_check;
use crate::metrics::Metric;
use crate::store::{Integration, StoreError, SyncStatus};
use crate::sync::failure::errored;
use crate::tenant::TenantId;
use crate::vault::VaultError;

const OK_MESSAGE: &str =
    "Connection OK: the Bitrix24 MCP server answered and its lead tools are bound";

fn outcome(ok: bool, message: &str, portal_info: Value) -> Response<Body> {
    json_response(
        http::StatusCode::OK,
        &json!({"ok": ok, "message": message, "portal_info": portal_info}),
    )
}

/// The answer, and its class for the `ConnectResults` metric (`ok`, or what failed).
#[tracing::instrument(skip_all, fields(tenant_id))]
pub(super) async fn test(
    app: &App,
    req: Request,
) -> Result<(Response<Body>, &'static str), ApiError> {
    let (tenant, _body) = admit(&app.config, Route::Test, &req)?;
    let integ = app
        .store
        .get_integration(&tenant)
        .await
        .map_err(|e| store_error("read integration", e))?
        .filter(Integration::is_connected)
        .ok_or(ApiError::NotConfigured)?;
    let Some(ciphertext) = integ.token_ciphertext.as_deref() else {
        return Err(ApiError::NotConfigured);
    };
    let token = match app.vault.decrypt(&tenant, ciphertext).await {
        Ok(token) => token,
        Err(e @ VaultError::Refused { .. }) => {
            tracing::warn!(error = ?e, "stored token cannot be decrypted");
            let reason = "the stored token cannot be read; connect again with a new token";
            mark_error(app, &tenant, &integ, reason, errored::STORED_CONNECTION).await;
            let class = errored::STORED_CONNECTION;
            return Ok((outcome(false, reason, Value::Null), class));
        }
        Err(e) => return Err(vault_error("decrypt token", e)),
    };
    let url = match app.url_guard().check(integ.mcp_url.as_deref()) {
        Ok(url) => url,
        Err(e) => {
            let reason = format!("the stored MCP URL is no longer allowed ({e}); connect again");
            return Ok((outcome(false, &reason, Value::Null), "url_rejected"));
        }
    };
    let check = live_check(
        &app.mcp,
        &url,
        &token,
        app.config.mcp_tool_map.as_deref(),
        LIVE_CHECK_DEADLINE,
    )
    .await;
    match check {
        Ok(check) => {
            let mut version = integ.version;
            if integ.sync_status == Some(SyncStatus::Error) {
                match app
                    .store
                    .set_status(&tenant, version, SyncStatus::Active, None)
                    .await
                {
                    Ok(updated) => {
                        version = updated.version;
                        audit(app, &tenant, "reactivated", json!({"by": "test"})).await;
                        super::replay(app, &tenant).await;
                    }
                    Err(e) => tracing::warn!(error = ?e, "could not reactivate the integration"),
                }
            }
            let binding = check.binding.to_value();
            if integ.binding.as_ref() != Some(&binding) {
                match app
                    .store
                    .set_binding(&tenant, version, binding, check.portal_info.clone())
                    .await
                {
                    Ok(_) => audit(app, &tenant, "binding_changed", check.binding.report()).await,
                    Err(e) => tracing::warn!(error = ?e, "changed binding not stored"),
                }
            }
            Ok((outcome(true, OK_MESSAGE, check.portal_info), "ok"))
        }
        Err(e) => {
            let class = check_class(&e);
            tracing::info!(error = %e, auth = e.is_auth(), failure_class = class, "live check failed at test");
            let reason = connection_failure_reason(&e);
            if e.is_auth() {
                mark_error(app, &tenant, &integ, &reason, errored::TOKEN_REJECTED).await;
            }
            Ok((outcome(false, &reason, Value::Null), class))
        }
    }
}

/// Puts the integration in `error` with a safe `last_error`, guarded by the version read, so a
/// failure seen with an old token never overwrites a connect that happened meanwhile.
/// `class`: one of [`errored`]'s names, for the `IntegrationsErrored` metric.
async fn mark_error(
    app: &App,
    tenant: &TenantId,
    integ: &Integration,
    reason: &str,
    class: &'static str,
) {
    match app
        .store
        .set_status(
            tenant,
            integ.version,
            SyncStatus::Error,
            Some(reason.to_owned()),
        )
        .await
    {
        Ok(_) => {
            app.metrics.count_as(Metric::IntegrationsErrored, class, 1);
            tracing::warn!(tenant_id = %tenant, failure_class = class, reason, "integration turned to error");
            audit(
                app,
                tenant,
                "error",
                json!({"by": "test", "reason": reason}),
            )
            .await
        }
        Err(StoreError::Conflict) => {
            tracing::info!("integration changed meanwhile; error state not recorded");
        }
        Err(e) => tracing::warn!(error = ?e, "could not record the error state"),
    }
}

async fn audit(app: &App, tenant: &TenantId, kind: &str, detail: Value) {
    if let Err(e) = app.store.audit(tenant, kind, detail).await {
        tracing::warn!(error = ?e, kind, "audit line not written");
    }
}
