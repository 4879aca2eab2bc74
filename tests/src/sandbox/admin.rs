//! The admin API under `/admin/` (JSON, no auth; the server binds loopback only): the Rust API
//! of [`super::Sandbox`] over HTTP, for the demo binary and for humans poking at a running portal.
//! The routes without a portal number act on the first portal; `POST /admin/portals` (body: a
//! config patch, `{}` for the defaults) adds a portal and answers its number and an admin token,
//! and `/admin/portals/{n}/{tokens,faults,calls,leads,writes}` act on portal `n` (0 = the first).

use axum::extract::{Path, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    CallStats, Faults, LeadWrite, Routes, SandboxConfig, SandboxConfigPatch, Shared, lock,
    new_token,
};

pub(crate) fn router(state: Shared) -> Router {
    Router::new()
        .route("/admin/tokens", post(issue_token))
        .route("/admin/tokens/revoke", post(revoke_token))
        .route("/admin/faults", post(set_faults))
        .route("/admin/sessions/expire", post(expire_sessions))
        .route("/admin/config", post(set_config).get(get_config))
        .route("/admin/leads", post(seed_lead).get(list_leads))
        .route("/admin/leads/{id}", get(get_lead))
        .route("/admin/leads/{id}/comments", get(lead_comments))
        .route("/admin/leads/{id}/manager", post(manager_edit))
        .route("/admin/calls", get(calls))
        .route("/admin/calls/reset", post(reset_calls))
        .with_state(state)
}

#[derive(Deserialize)]
struct IssueToken {
    #[serde(default)]
    admin: bool,
}

async fn issue_token(AxState(s): AxState<Shared>, Json(req): Json<IssueToken>) -> Json<Value> {
    let token = new_token();
    lock(&s).tokens.insert(token.clone(), req.admin);
    Json(json!({"token": token}))
}

#[derive(Deserialize)]
struct RevokeToken {
    token: String,
}

async fn revoke_token(AxState(s): AxState<Shared>, Json(req): Json<RevokeToken>) -> Json<Value> {
    let mut st = lock(&s);
    let existed = st.tokens.remove(&req.token).is_some();
    st.sessions.retain(|_, sess| sess.token != req.token);
    Json(json!({"revoked": existed}))
}

async fn set_faults(AxState(s): AxState<Shared>, Json(f): Json<Faults>) -> Json<Faults> {
    lock(&s).faults = f.clone();
    Json(f)
}

async fn expire_sessions(AxState(s): AxState<Shared>) -> Json<Value> {
    let mut st = lock(&s);
    let n = st.sessions.len();
    st.sessions.clear();
    Json(json!({"expired": n}))
}

async fn set_config(
    AxState(s): AxState<Shared>,
    Json(patch): Json<SandboxConfigPatch>,
) -> Response {
    let mut st = lock(&s);
    patch.apply(&mut st.config);
    let cfg = st.config.clone();
    st.portal.apply_flags(&cfg);
    Json(cfg).into_response()
}

async fn get_config(AxState(s): AxState<Shared>) -> Response {
    Json(lock(&s).config.clone()).into_response()
}

#[derive(Deserialize)]
struct SeedLead {
    fields: Value,
}

async fn seed_lead(AxState(s): AxState<Shared>, Json(req): Json<SeedLead>) -> Json<Value> {
    let id = lock(&s).portal.seed_lead(&req.fields);
    Json(json!({"id": id}))
}

async fn list_leads(AxState(s): AxState<Shared>) -> Json<Vec<Value>> {
    Json(lock(&s).portal.all_leads())
}

async fn get_lead(AxState(s): AxState<Shared>, Path(id): Path<i64>) -> Response {
    match lock(&s).portal.lead_json(id) {
        Some(lead) => Json(lead).into_response(),
        None => (StatusCode::NOT_FOUND, Json(json!({"error": "NOT_FOUND"}))).into_response(),
    }
}

/// The manager's console: `POST /admin/leads/{id}/manager {"fields": {...}, "manager_id"?}`
/// changes a lead as a manager would in the portal (status, name, responsible user, ...).
#[derive(Deserialize)]
struct ManagerEdit {
    fields: Value,
    #[serde(default = "default_manager")]
    manager_id: String,
}

fn default_manager() -> String {
    super::MANAGER_ID.to_owned()
}

async fn manager_edit(
    AxState(s): AxState<Shared>,
    Path(id): Path<i64>,
    Json(req): Json<ManagerEdit>,
) -> Response {
    match lock(&s)
        .portal
        .manager_edit(id, &req.manager_id, &req.fields)
    {
        Ok(lead) => Json(lead).into_response(),
        Err(e) => (StatusCode::UNPROCESSABLE_ENTITY, Json(e.body())).into_response(),
    }
}

async fn lead_comments(AxState(s): AxState<Shared>, Path(id): Path<i64>) -> Json<Vec<String>> {
    Json(lock(&s).portal.comments_of(id))
}

async fn calls(AxState(s): AxState<Shared>) -> Json<CallStats> {
    Json(lock(&s).calls.clone())
}

async fn reset_calls(AxState(s): AxState<Shared>) -> StatusCode {
    lock(&s).calls = CallStats::default();
    StatusCode::NO_CONTENT
}

/// The multi-portal routes (`POST /admin/portals`, `/admin/portals/{n}/...`).
pub(crate) fn portals_router(routes: Routes) -> Router {
    Router::new()
        .route("/admin/portals", post(add_portal))
        .route("/admin/portals/{n}/tokens", post(portal_token))
        .route("/admin/portals/{n}/faults", post(portal_faults))
        .route("/admin/portals/{n}/calls", get(portal_calls))
        .route("/admin/portals/{n}/leads", get(portal_leads))
        .route("/admin/portals/{n}/writes", get(portal_writes))
        .with_state(routes)
}

fn no_portal(n: usize) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "NOT_FOUND", "error_description": format!("no portal {n}")})),
    )
        .into_response()
}

async fn add_portal(
    AxState(r): AxState<Routes>,
    Json(patch): Json<SandboxConfigPatch>,
) -> Json<Value> {
    let mut cfg = SandboxConfig::default();
    patch.apply(&mut cfg);
    let (n, state) = r.add(cfg);
    let token = new_token();
    r.register(n, &state, &token, true);
    Json(json!({"portal": n, "token": token}))
}

async fn portal_token(
    AxState(r): AxState<Routes>,
    Path(n): Path<usize>,
    Json(req): Json<IssueToken>,
) -> Response {
    let Some(state) = r.get(n) else {
        return no_portal(n);
    };
    let token = new_token();
    r.register(n, &state, &token, req.admin);
    Json(json!({"token": token})).into_response()
}

async fn portal_faults(
    AxState(r): AxState<Routes>,
    Path(n): Path<usize>,
    Json(f): Json<Faults>,
) -> Response {
    let Some(state) = r.get(n) else {
        return no_portal(n);
    };
    lock(&state).faults = f.clone();
    Json(f).into_response()
}

async fn portal_calls(AxState(r): AxState<Routes>, Path(n): Path<usize>) -> Response {
    match r.get(n) {
        Some(state) => Json::<CallStats>(lock(&state).calls.clone()).into_response(),
        None => no_portal(n),
    }
}

async fn portal_leads(AxState(r): AxState<Routes>, Path(n): Path<usize>) -> Response {
    match r.get(n) {
        Some(state) => Json(lock(&state).portal.all_leads()).into_response(),
        None => no_portal(n),
    }
}

async fn portal_writes(AxState(r): AxState<Routes>, Path(n): Path<usize>) -> Response {
    match r.get(n) {
        Some(state) => {
            Json::<Vec<LeadWrite>>(lock(&state).portal.writes().to_vec()).into_response()
        }
        None => no_portal(n),
    }
}
