//! The HTTP API end to end: the four handlers driven with real API Gateway v2
//! events (`events/*.json`, claims rewritten per test tenant) against moto_server and the
//! Bitrix24 sandbox. Every response is checked against `infra/openapi.yaml`; the token must
//! appear in no response and no log line.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the assertion

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use lambda_http::{Body, Request};
use serde_json::{Value, json};
use shared::http::{App, Route};
use shared::store::{LeadLink, SyncStatus};
use shared::tenant::TenantId;
use teleagent_tests::harness::{TestEnv, workspace_root};
use teleagent_tests::sandbox::{Sandbox, SandboxConfig};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

const HS_SECRET: &str = "local-hs256-secret-for-tests-0123456789";

fn route_name(route: Route) -> &'static str {
    match route {
        Route::Connect => "connect",
        Route::Test => "test",
        Route::Disconnect => "disconnect",
        Route::Status => "status",
    }
}

/// How the request proves its tenant.
#[derive(Clone)]
enum Auth {
    /// API Gateway JWT authorizer claims (string values, as API Gateway sends them).
    Claims(Vec<(&'static str, String)>),
    /// No authorizer context; optional Authorization header (the HS256 path).
    Header(Option<String>),
}

fn claims_for(tenant: &str) -> Auth {
    Auth::Claims(vec![
        ("tenant_id", tenant.to_owned()),
        ("sub", "user-1".to_owned()),
    ])
}

/// Builds a real `lambda_http::Request` from `events/<route>.json`, like API Gateway would send.
fn event(route: Route, auth: &Auth, body: Option<&str>, method: Option<&str>) -> Request {
    let path = workspace_root().join(format!("events/{}.json", route_name(route)));
    let mut ev: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    match auth {
        Auth::Claims(claims) => {
            let map: serde_json::Map<String, Value> = claims
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::String(v.clone())))
                .collect();
            ev["requestContext"]["authorizer"]["jwt"]["claims"] = Value::Object(map);
        }
        Auth::Header(h) => {
            ev["requestContext"]
                .as_object_mut()
                .unwrap()
                .remove("authorizer");
            if let Some(h) = h {
                ev["headers"]["authorization"] = Value::String(h.clone());
            }
        }
    }
    match body {
        Some(b) => ev["body"] = Value::String(b.to_owned()),
        None => {
            ev.as_object_mut().unwrap().remove("body");
        }
    }
    if let Some(m) = method {
        ev["requestContext"]["http"]["method"] = Value::String(m.to_owned());
    }
    lambda_http::request::from_str(&ev.to_string()).unwrap()
}

/// The OpenAPI document, loaded once.
fn openapi() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(|| {
        let text = std::fs::read_to_string(workspace_root().join("infra/openapi.yaml")).unwrap();
        serde_yaml::from_str(&text).unwrap()
    })
}

/// Resolves a local `$ref` in the OpenAPI document.
fn deref(v: &Value) -> &Value {
    match v.get("$ref").and_then(Value::as_str) {
        Some(r) => deref(openapi().pointer(r.trim_start_matches('#')).unwrap()),
        None => v,
    }
}

/// Validates a real response against the route's documented response schema.
fn check_openapi(route: Route, status: u16, body: &Value) {
    let method = if route == Route::Status {
        "get"
    } else {
        "post"
    };
    let op = &openapi()["paths"][route.path()][method];
    let resp = op["responses"].get(status.to_string()).unwrap_or_else(|| {
        panic!(
            "{} {status} is not documented in infra/openapi.yaml",
            route.path()
        )
    });
    let schema = &deref(resp)["content"]["application/json"]["schema"];
    let mut root = schema.clone();
    root["components"] = openapi()["components"].clone();
    let validator = jsonschema::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap();
    let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "{} {status}: {body} does not match infra/openapi.yaml: {errors:?}",
        route.path()
    );
}

struct Answer {
    status: u16,
    body: Value,
    raw: String,
}

/// Sends one event through the route's entry point; asserts the JSON content type and the OpenAPI schema.
async fn call(app: &App, route: Route, req: Request) -> Answer {
    let resp = match route {
        Route::Connect => shared::http::connect(app, req).await,
        Route::Test => shared::http::test(app, req).await,
        Route::Disconnect => shared::http::disconnect(&app.store_app(), req).await,
        Route::Status => shared::http::status(&app.store_app(), req).await,
    }
    .unwrap();
    assert_eq!(
        resp.headers()
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap()),
        Some("application/json"),
        "every response is JSON"
    );
    let raw = match resp.body() {
        Body::Text(t) => t.clone(),
        Body::Binary(b) => String::from_utf8(b.clone()).unwrap(),
        _ => String::new(),
    };
    let body: Value = serde_json::from_str(&raw).unwrap();
    let status = resp.status().as_u16();
    check_openapi(route, status, &body);
    Answer { status, body, raw }
}

/// A log sink shared with a tracing subscriber that is the default for this test's thread (the
/// tests run on a current-thread runtime, so every task of the test logs into it).
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let logs = Logs::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        (logs, tracing::subscriber::set_default(subscriber))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

struct Fixture {
    env: TestEnv,
    app: App,
    sandbox: Sandbox,
}

async fn fixture(extra: &[(&str, &str)]) -> Fixture {
    let env = TestEnv::new().await;
    let mut vars = vec![("MCP_ALLOW_LOOPBACK", "true")];
    vars.extend_from_slice(extra);
    let app = App::new(env.config_with(&vars), &env.clients).unwrap();
    let sandbox = Sandbox::start(SandboxConfig::default()).await;
    Fixture { env, app, sandbox }
}

fn tenant_id() -> String {
    format!("tenant-{}", uuid::Uuid::new_v4().simple())
}

fn connect_body(token: &str, url: &str) -> String {
    json!({"mcp_token": token, "mcp_url": url}).to_string()
}

impl Fixture {
    async fn send(&self, route: Route, tenant: &str, body: Option<&str>) -> Answer {
        call(
            &self.app,
            route,
            event(route, &claims_for(tenant), body, None),
        )
        .await
    }

    async fn connect(&self, tenant: &str, token: &str) -> Answer {
        let body = connect_body(token, &self.sandbox.mcp_url());
        self.send(Route::Connect, tenant, Some(&body)).await
    }

    async fn integration(&self, tenant: &str) -> Option<shared::store::Integration> {
        let t = TenantId::parse(tenant).unwrap();
        self.app.store.get_integration(&t).await.unwrap()
    }
}

#[test]
fn every_event_file_parses_as_an_api_gateway_v2_request() {
    use lambda_http::RequestExt;
    for route in [
        Route::Connect,
        Route::Test,
        Route::Disconnect,
        Route::Status,
    ] {
        let path = workspace_root().join(format!("events/{}.json", route_name(route)));
        let req = lambda_http::request::from_str(&std::fs::read_to_string(&path).unwrap())
            .unwrap_or_else(|e| panic!("{path:?} does not parse: {e}"));
        assert_eq!(req.method(), route.method(), "{path:?} method");
        assert_eq!(req.uri().path(), route.path(), "{path:?} path");
        let claims = match req.request_context_ref() {
            Some(lambda_http::request::RequestContext::ApiGatewayV2(ctx)) => ctx
                .authorizer
                .as_ref()
                .unwrap()
                .jwt
                .as_ref()
                .unwrap()
                .claims
                .clone(),
            _ => panic!("{path:?} is not an API Gateway v2 event"),
        };
        assert!(
            claims.contains_key("tenant_id"),
            "{path:?} carries the tenant claim"
        );
    }
}

#[test]
fn openapi_documents_the_four_routes() {
    for (route, method) in [
        (Route::Connect, "post"),
        (Route::Test, "post"),
        (Route::Disconnect, "post"),
        (Route::Status, "get"),
    ] {
        let op = &openapi()["paths"][route.path()][method];
        assert!(
            op["responses"]["200"].is_object(),
            "{} 200 documented",
            route.path()
        );
        assert!(
            op["responses"]["401"].is_object(),
            "{} 401 documented",
            route.path()
        );
    }
    assert_eq!(openapi()["openapi"], "3.1.0");
}

#[tokio::test]
async fn connect_test_status_disconnect_round_trip_without_leaking_the_token() {
    let (logs, _guard) = Logs::capture();
    let fx = fixture(&[]).await;
    let tenant = tenant_id();
    let t = TenantId::parse(&tenant).unwrap();
    let token = fx.sandbox.issue_token(false);
    let mut raws = Vec::new();

    let before = fx.send(Route::Status, &tenant, None).await;
    assert_eq!(before.status, 200);
    assert_eq!(
        before.body,
        json!({"connected": false, "mcp_url": null, "connected_at": null, "last_sync_at": null,
               "sync_status": null, "last_error": null, "parked_events": null,
               "last_watch_at": null}),
        "nulls before any connect"
    );

    let c = fx.connect(&tenant, &format!("  {token}  ")).await;
    assert_eq!(c.status, 200, "connect: {}", c.raw);
    assert_eq!(c.body["success"], true);
    assert_eq!(c.body["message"], "Bitrix24 connected successfully");
    let connected_at =
        OffsetDateTime::parse(c.body["connected_at"].as_str().unwrap(), &Rfc3339).unwrap();
    raws.push(c.raw);

    let stored = fx
        .integration(&tenant)
        .await
        .expect("connect stored the integration");
    let ct = stored.token_ciphertext.clone().expect("ciphertext stored");
    assert!(
        !String::from_utf8_lossy(&ct).contains(&token),
        "the stored token is encrypted, not plaintext"
    );
    assert_eq!(
        fx.app.vault.decrypt(&t, &ct).await.unwrap().expose(),
        token,
        "the TRIMMED token is what was stored"
    );
    assert_eq!(stored.sync_status, Some(SyncStatus::Active));
    assert_eq!(
        stored.mcp_url.as_deref(),
        Some(fx.sandbox.mcp_url().as_str())
    );
    assert!(stored.binding.is_some() && stored.portal_info.is_some());
    let audit = fx.app.store.list_audit(&t).await.unwrap();
    assert!(
        audit.iter().any(|a| a.kind == "connected"),
        "connect writes an audit line"
    );

    let s = fx.send(Route::Status, &tenant, None).await;
    assert_eq!(s.body["connected"], true);
    assert_eq!(s.body["sync_status"], "active");
    assert_eq!(s.body["mcp_url"], fx.sandbox.mcp_url());
    assert_eq!(s.body["last_error"], Value::Null);
    let status_at =
        OffsetDateTime::parse(s.body["connected_at"].as_str().unwrap(), &Rfc3339).unwrap();
    assert_eq!(status_at.unix_timestamp(), connected_at.unix_timestamp());
    raws.push(s.raw);

    let calls_before = fx.sandbox.calls().initialize;
    let tst = fx.send(Route::Test, &tenant, Some("{}")).await;
    assert_eq!(tst.status, 200);
    assert_eq!(tst.body["ok"], true, "test with a live token: {}", tst.raw);
    assert_eq!(tst.body["portal_info"]["server_name"], "bitrix24-sandbox");
    assert!(
        tst.body["portal_info"]["bound"]["create_lead"].is_object()
            || tst.body["portal_info"]["bound"]
                .as_object()
                .is_some_and(|b| !b.is_empty()),
        "portal_info names the bound operations: {}",
        tst.raw
    );
    assert!(
        fx.sandbox.calls().initialize > calls_before,
        "test really ran the live check against the portal"
    );
    raws.push(tst.raw);

    // A lead link made by sync must survive a disconnect (a reconnect must not duplicate leads).
    let link = LeadLink {
        customer_id: "tg:42".into(),
        lead_id: 7,
        portal_id: stored.portal_id.clone().unwrap(),
        phone_e164: None,
        last_event_at: OffsetDateTime::now_utc(),
        sent: serde_json::Map::new(),
    };
    fx.app.store.put_link(&t, &link).await.unwrap();

    for round in 1..=2 {
        let d = fx.send(Route::Disconnect, &tenant, None).await;
        assert_eq!(d.status, 200, "disconnect round {round}");
        assert_eq!(
            d.body,
            json!({"success": true, "message": "Bitrix24 disconnected"})
        );
        raws.push(d.raw);
    }
    let after = fx.integration(&tenant).await.unwrap();
    assert!(
        after.token_ciphertext.is_none(),
        "disconnect removed the token"
    );
    assert!(
        fx.app.store.get_link(&t, "tg:42").await.unwrap().is_some(),
        "disconnect keeps lead links"
    );
    let audit = fx.app.store.list_audit(&t).await.unwrap();
    assert!(
        audit.iter().any(|a| a.kind == "disconnected"),
        "disconnect writes an audit line"
    );

    let s = fx.send(Route::Status, &tenant, None).await;
    assert_eq!(
        s.body, before.body,
        "status is back to nulls after disconnect"
    );
    let tst = fx.send(Route::Test, &tenant, None).await;
    assert_eq!(tst.status, 400);
    assert_eq!(
        tst.body,
        json!({"detail": "Bitrix24 MCP not configured", "ok": false, "message": "Bitrix24 MCP not configured"})
    );
    raws.push(tst.raw);

    for raw in &raws {
        assert!(!raw.contains(&token), "token leaked in a response: {raw}");
    }
    let text = logs.text();
    assert!(
        text.contains(&tenant),
        "log capture works (handler spans carry tenant_id)"
    );
    assert!(!text.contains(&token), "token leaked into the logs");
}

#[tokio::test]
async fn connect_with_a_revoked_token_stores_nothing_and_says_what_to_do() {
    let (logs, _guard) = Logs::capture();
    let fx = fixture(&[]).await;
    let tenant = tenant_id();
    let token = fx.sandbox.issue_token(false);
    fx.sandbox.revoke_token(&token);
    let c = fx.connect(&tenant, &token).await;
    assert_eq!(c.status, 400, "{}", c.raw);
    let detail = c.body["detail"].as_str().unwrap();
    assert!(detail.starts_with("Connection failed: "), "{detail}");
    assert!(
        detail.contains("Apps -> MCP connections"),
        "tells where to get a new token: {detail}"
    );
    assert!(
        fx.integration(&tenant).await.is_none(),
        "a failed check stores nothing"
    );
    let t = TenantId::parse(&tenant).unwrap();
    assert!(fx.app.store.list_audit(&t).await.unwrap().is_empty());
    assert!(
        !c.raw.contains(&token) && !logs.text().contains(&token),
        "token leaked"
    );
}

/// A minimal MCP server whose tools have nothing to do with CRM leads.
async fn server_without_lead_tools() -> String {
    use axum::routing::post;
    async fn mcp(axum::Json(req): axum::Json<Value>) -> axum::response::Response {
        use axum::response::IntoResponse;
        let id = req.get("id").cloned();
        let result = match req["method"].as_str() {
            Some("initialize") => {
                json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                                        "serverInfo": {"name": "tasks-only", "version": "1"}})
            }
            Some("tools/list") => {
                json!({"tools": [{"name": "search_tasks", "description": "Search tasks by title",
                "inputSchema": {"type": "object", "properties": {"q": {"type": "string"}}}}]})
            }
            _ if id.is_none() => return http::StatusCode::ACCEPTED.into_response(),
            _ => {
                return axum::Json(
                    json!({"jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "no"}}),
                )
                .into_response();
            }
        };
        axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().route("/mcp/", post(mcp));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/mcp/")
}

#[tokio::test]
async fn failed_live_checks_answer_400_with_a_reason_and_store_nothing() {
    let fx = fixture(&[]).await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("http://127.0.0.1:{port}/mcp/")
    };
    let no_lead_tools = server_without_lead_tools().await;
    let limited = Sandbox::start(SandboxConfig {
        bucket_depth: 0,
        ..SandboxConfig::default()
    })
    .await;
    let token = fx.sandbox.issue_token(false);
    let limited_token = limited.issue_token(false);
    let rows = [
        (
            connect_body(&token, &closed),
            "could not be reached",
            "portal unreachable",
        ),
        (
            connect_body(&token, &no_lead_tools),
            "offers no tool to",
            "server lacks lead tools",
        ),
        (
            connect_body(&limited_token, &limited.mcp_url()),
            "try again in a minute",
            "rate limited",
        ),
        (
            connect_body("wrong-token-0123456789", &fx.sandbox.mcp_url()),
            "wrong, expired or revoked",
            "unknown token",
        ),
    ];
    for (body, needle, why) in rows {
        let tenant = tenant_id();
        let c = fx.send(Route::Connect, &tenant, Some(&body)).await;
        assert_eq!(c.status, 400, "{why}: {}", c.raw);
        let detail = c.body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("Connection failed: ") && detail.contains(needle),
            "{why}: {detail}"
        );
        assert!(
            fx.integration(&tenant).await.is_none(),
            "{why}: nothing stored"
        );
    }
}

/// (body, method override, expected status, text the detail must contain, why)
type BadRequest = (
    Option<String>,
    Option<&'static str>,
    u16,
    &'static str,
    &'static str,
);

#[tokio::test]
async fn bad_requests_are_4xx_json_with_detail_never_500() {
    let fx = fixture(&[]).await;
    let tenant = tenant_id();
    let url = fx.sandbox.mcp_url();
    let huge = json!({"mcp_token": "x".repeat(17 * 1024)}).to_string();
    let rows: Vec<BadRequest> = vec![
        (None, None, 422, "required", "missing body"),
        (Some("   ".into()), None, 422, "required", "blank body"),
        (
            Some("{\"mcp_token\": ".into()),
            None,
            422,
            "not valid JSON",
            "malformed JSON",
        ),
        (
            Some("[\"abcdefghijkl\"]".into()),
            None,
            422,
            "JSON object",
            "array body",
        ),
        (
            Some("\"abcdefghijkl\"".into()),
            None,
            422,
            "JSON object",
            "string body",
        ),
        (
            Some(json!({"mcp_token": 12345678901_u64}).to_string()),
            None,
            422,
            "mcp_token must be a string",
            "token as number",
        ),
        (
            Some(json!({"mcp_token": ["abcdefghijkl"]}).to_string()),
            None,
            422,
            "mcp_token must be a string",
            "token as array",
        ),
        (
            Some(json!({"mcp_url": url}).to_string()),
            None,
            422,
            "mcp_token is required",
            "no token",
        ),
        (
            Some(json!({"mcp_token": null}).to_string()),
            None,
            422,
            "mcp_token is required",
            "null token",
        ),
        (
            Some(json!({"mcp_token": "short"}).to_string()),
            None,
            422,
            "at least 10",
            "short token",
        ),
        (
            Some(json!({"mcp_token": "   short1   "}).to_string()),
            None,
            422,
            "at least 10",
            "short after trimming",
        ),
        (
            Some(json!({"mcp_token": "abcdefghijkl", "extra": 1}).to_string()),
            None,
            422,
            "Unknown field extra",
            "unknown field",
        ),
        (
            Some(json!({"mcp_token": "abcdefghijkl", "mcp_url": 5}).to_string()),
            None,
            422,
            "mcp_url must be a string",
            "url as number",
        ),
        (
            Some(
                json!({"mcp_token": "abcdefghijkl", "mcp_url": "http://acme.bitrix24.com/mcp/"})
                    .to_string(),
            ),
            None,
            422,
            "must use https",
            "http scheme",
        ),
        (
            Some(
                json!({"mcp_token": "abcdefghijkl", "mcp_url": "https://169.254.169.254/latest/"})
                    .to_string(),
            ),
            None,
            422,
            "not an IP address",
            "metadata address",
        ),
        (
            Some(
                json!({"mcp_token": "abcdefghijkl", "mcp_url": "https://evil.example.com/mcp/"})
                    .to_string(),
            ),
            None,
            422,
            "not an allowed Bitrix24 domain",
            "off-list host",
        ),
        (
            Some(json!({"mcp_token": "abcdefghijkl", "mcp_url": "not a url"}).to_string()),
            None,
            422,
            "not a valid URL",
            "garbage url",
        ),
        (Some(huge), None, 413, "too large", "body over 16 KiB"),
        (
            Some(json!({"mcp_token": "abcdefghijkl"}).to_string()),
            Some("GET"),
            405,
            "use POST",
            "wrong method",
        ),
    ];
    for (body, method, status, needle, why) in rows {
        let req = event(
            Route::Connect,
            &claims_for(&tenant),
            body.as_deref(),
            method,
        );
        let a = call(&fx.app, Route::Connect, req).await;
        assert_eq!(a.status, status, "{why}: {}", a.raw);
        let detail = a.body["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("{why}: no detail"));
        assert!(
            detail.contains(needle),
            "{why}: {detail:?} lacks {needle:?}"
        );
        assert!(
            !detail.contains("abcdefghijkl"),
            "{why}: token echoed in {detail:?}"
        );
    }
    for (route, method) in [
        (Route::Status, "POST"),
        (Route::Test, "GET"),
        (Route::Disconnect, "GET"),
    ] {
        let a = call(
            &fx.app,
            route,
            event(route, &claims_for(&tenant), None, Some(method)),
        )
        .await;
        assert_eq!(a.status, 405, "{method} {}", route.path());
    }
    assert!(
        fx.integration(&tenant).await.is_none(),
        "no bad request stored anything"
    );
    assert_eq!(
        fx.sandbox.calls().initialize,
        0,
        "no bad request reached the portal"
    );
}

/// Unpadded base64url, for hand-made JWTs that no library would sign (`alg: none`).
fn base64url(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

fn hs256(claims: Value, alg: Algorithm, key: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(key.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn no_valid_tenant_is_401_on_every_route() {
    let fx = fixture(&[("JWT_HS256_SECRET", HS_SECRET)]).await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let tenant = tenant_id();
    let good = |extra: Value| {
        let mut c = json!({"tenant_id": tenant, "exp": now + 300});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let b64 = |v: Value| base64url(v.to_string().as_bytes());
    let alg_none = format!(
        "{}.{}.",
        b64(json!({"alg": "none", "typ": "JWT"})),
        b64(good(json!({})))
    );
    let bearer = |t: String| Auth::Header(Some(format!("Bearer {t}")));
    let rows: Vec<(Auth, &str)> = vec![
        (
            Auth::Header(None),
            "no authorizer and no Authorization header",
        ),
        (
            Auth::Header(Some(format!(
                "Basic {}",
                hs256(good(json!({})), Algorithm::HS256, HS_SECRET)
            ))),
            "not a bearer scheme",
        ),
        (
            bearer(hs256(
                good(json!({})),
                Algorithm::HS256,
                "some-other-secret-of-enough-length",
            )),
            "wrong key",
        ),
        (
            bearer(hs256(
                good(json!({"exp": now - 120})),
                Algorithm::HS256,
                HS_SECRET,
            )),
            "expired",
        ),
        (
            bearer(hs256(
                good(json!({"nbf": now + 300})),
                Algorithm::HS256,
                HS_SECRET,
            )),
            "nbf in the future",
        ),
        (bearer(alg_none), "alg none"),
        (
            bearer(hs256(
                json!({"sub": "u", "exp": now + 300}),
                Algorithm::HS256,
                HS_SECRET,
            )),
            "no tenant claim",
        ),
        (
            bearer(hs256(
                good(json!({"tenant_id": "a#b"})),
                Algorithm::HS256,
                HS_SECRET,
            )),
            "tenant id forging a key",
        ),
        (
            Auth::Claims(vec![("sub", "user-1".into())]),
            "authorizer claims without tenant_id",
        ),
    ];
    for (auth, why) in &rows {
        for route in [
            Route::Connect,
            Route::Test,
            Route::Disconnect,
            Route::Status,
        ] {
            let body = (route == Route::Connect)
                .then(|| connect_body("abcdefghijkl", &fx.sandbox.mcp_url()));
            let a = call(&fx.app, route, event(route, auth, body.as_deref(), None)).await;
            assert_eq!(a.status, 401, "{why} on {}: {}", route.path(), a.raw);
            assert!(
                a.body["detail"]
                    .as_str()
                    .unwrap()
                    .starts_with("Not authenticated"),
                "{why}"
            );
        }
    }
    assert!(fx.integration(&tenant).await.is_none());

    // The HS256 path works when the token is right (what `cargo lambda watch` runs use).
    let ok = bearer(hs256(good(json!({})), Algorithm::HS256, HS_SECRET));
    let a = call(
        &fx.app,
        Route::Status,
        event(Route::Status, &ok, None, None),
    )
    .await;
    assert_eq!(a.status, 200, "valid HS256 bearer JWT: {}", a.raw);

    // Without JWT_HS256_SECRET only authorizer claims are trusted, even for a well-signed token.
    let strict = App::new(
        fx.env.config_with(&[("MCP_ALLOW_LOOPBACK", "true")]),
        &fx.env.clients,
    )
    .unwrap();
    let a = call(
        &strict,
        Route::Status,
        event(Route::Status, &ok, None, None),
    )
    .await;
    assert_eq!(
        a.status, 401,
        "a bearer token is not trusted unless JWT_HS256_SECRET is set"
    );
}

#[tokio::test]
async fn dotted_tenant_claim_arrives_as_a_json_string() {
    let fx = fixture(&[("TENANT_CLAIM", "app_metadata.tenant_id")]).await;
    let tenant = tenant_id();
    let token = fx.sandbox.issue_token(false);
    let auth = Auth::Claims(vec![(
        "app_metadata",
        json!({"tenant_id": tenant}).to_string(),
    )]);
    let body = connect_body(&token, &fx.sandbox.mcp_url());
    let a = call(
        &fx.app,
        Route::Connect,
        event(Route::Connect, &auth, Some(&body), None),
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.raw);
    assert!(
        fx.integration(&tenant).await.is_some(),
        "stored under the nested claim's tenant"
    );
}

#[tokio::test]
async fn tenant_b_cannot_see_test_or_disconnect_tenant_a() {
    let fx = fixture(&[]).await;
    let (a, b) = (tenant_id(), tenant_id());
    let token = fx.sandbox.issue_token(false);
    assert_eq!(fx.connect(&a, &token).await.status, 200);

    let s = fx.send(Route::Status, &b, None).await;
    assert_eq!(s.body["connected"], false, "B sees nothing of A");
    assert_eq!(s.body["mcp_url"], Value::Null);
    let t = fx.send(Route::Test, &b, None).await;
    assert_eq!(t.status, 400, "B cannot test A's connection");
    let d = fx.send(Route::Disconnect, &b, None).await;
    assert_eq!(d.status, 200, "B's disconnect is a no-op success");

    let sa = fx.send(Route::Status, &a, None).await;
    assert_eq!(
        sa.body["connected"], true,
        "A is still connected after B's disconnect"
    );
    assert!(fx.integration(&a).await.unwrap().token_ciphertext.is_some());
    assert_eq!(fx.send(Route::Test, &a, None).await.body["ok"], true);
}

#[tokio::test]
async fn revoked_token_turns_error_and_a_passing_test_heals_and_replays_parked_events() {
    let (logs, _guard) = Logs::capture();
    let fx = fixture(&[]).await;
    let tenant = tenant_id();
    let t = TenantId::parse(&tenant).unwrap();
    let token = fx.sandbox.issue_token(false);
    assert_eq!(fx.connect(&tenant, &token).await.status, 200);
    // The connect asked for a replay too (never deduplicated against another request): take it
    // off the queue, so what follows sees the test's own.
    let asked =
        teleagent_tests::harness::receive_as_event(&fx.env.clients.sqs, &fx.env.queue_url).await;
    assert_eq!(asked.records.len(), 1, "connect asks once");
    fx.env
        .clients
        .sqs
        .delete_message()
        .queue_url(&fx.env.queue_url)
        .receipt_handle(asked.records[0].receipt_handle.clone().unwrap())
        .send()
        .await
        .unwrap();

    fx.sandbox.revoke_token(&token);
    let tst = fx.send(Route::Test, &tenant, None).await;
    assert_eq!(tst.status, 200);
    assert_eq!(tst.body["ok"], false);
    assert_eq!(tst.body["portal_info"], Value::Null);
    assert!(
        tst.body["message"].as_str().unwrap().contains("revoked"),
        "{}",
        tst.raw
    );
    let s = fx.send(Route::Status, &tenant, None).await;
    assert_eq!(
        s.body["connected"], false,
        "an error integration shows the token form again"
    );
    assert_eq!(s.body["sync_status"], "error");
    assert!(s.body["last_error"].as_str().unwrap().contains("revoked"));
    assert!(!s.raw.contains(&token));

    // While in error, lead-sync parks events; a passing test must re-send them in order.
    let body = |id: &str, customer: &str| {
        json!({"version": 1, "event_id": id, "tenant_id": tenant, "occurred_at": "2026-01-01T00:00:00Z",
               "customer": {"id": customer}, "lead": {"score": 50}}).to_string()
    };
    let t0 = OffsetDateTime::now_utc() - time::Duration::minutes(5);
    fx.app
        .store
        .park_event(
            &t,
            t0 + time::Duration::seconds(1),
            "ev-2",
            &body("ev-2", "tg:2"),
            "error",
        )
        .await
        .unwrap();
    fx.app
        .store
        .park_event(&t, t0, "ev-1", &body("ev-1", "tg:1"), "error")
        .await
        .unwrap();

    fx.sandbox.register_token(&token, false); // the portal accepts the token again
    let tst = fx.send(Route::Test, &tenant, None).await;
    assert_eq!(tst.body["ok"], true, "{}", tst.raw);
    let s = fx.send(Route::Status, &tenant, None).await;
    assert_eq!(s.body["connected"], true);
    assert_eq!(s.body["sync_status"], "active");
    assert_eq!(
        s.body["last_error"],
        Value::Null,
        "a passing test clears last_error"
    );
    // The test answered without replaying: it asked lead-sync to, with one message.
    assert_eq!(
        fx.app.store.list_parked(&t).await.unwrap().len(),
        2,
        "not replayed inside test"
    );
    let request =
        teleagent_tests::harness::receive_as_event(&fx.env.clients.sqs, &fx.env.queue_url).await;
    assert_eq!(request.records.len(), 1, "one replay request");
    let r = &request.records[0];
    assert_eq!(r.attributes["MessageGroupId"], format!("{tenant}:~replay"));
    assert_eq!(
        shared::sync::replay::parse_request(r.body.as_deref().unwrap()).map(|r| r.tenant),
        Some(t.clone())
    );
    let processor = shared::sync::batch::lead_sync_with(
        &fx.env.config_with(&[("MCP_ALLOW_LOOPBACK", "true")]),
        &fx.env.clients,
        fx.env.dlq_url.clone(),
        shared::metrics::Metrics::off(),
    )
    .unwrap();
    let answer = processor.process(request, None).await;
    assert!(answer.batch_item_failures.is_empty(), "{answer:?}");
    assert!(
        fx.app.store.list_parked(&t).await.unwrap().is_empty(),
        "parked events re-sent and removed"
    );
    assert_eq!(fx.integration(&tenant).await.unwrap().parked_count, 0);
    let msgs = fx
        .env
        .clients
        .sqs
        .receive_message()
        .queue_url(&fx.env.queue_url)
        .max_number_of_messages(10)
        .message_system_attribute_names(
            aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId,
        )
        .send()
        .await
        .unwrap()
        .messages
        .unwrap_or_default();
    let got: Vec<(String, String)> = msgs
        .iter()
        .map(|m| {
            let v: Value = serde_json::from_str(m.body().unwrap()).unwrap();
            let group = m.attributes().unwrap()
                [&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId]
                .clone();
            (v["event_id"].as_str().unwrap().to_owned(), group)
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("ev-1".to_owned(), format!("{tenant}:tg:1")),
            ("ev-2".to_owned(), format!("{tenant}:tg:2"))
        ],
        "re-sent in occurred_at order with the customer's FIFO group"
    );

    // connect over an error integration replaces the token and sets active as well.
    fx.sandbox.revoke_token(&token);
    assert_eq!(fx.send(Route::Test, &tenant, None).await.body["ok"], false);
    let fresh = fx.sandbox.issue_token(false);
    assert_eq!(fx.connect(&tenant, &fresh).await.status, 200);
    let i = fx.integration(&tenant).await.unwrap();
    assert_eq!(i.sync_status, Some(SyncStatus::Active));
    assert_eq!(i.last_error, None);
    assert_eq!(
        fx.app
            .vault
            .decrypt(&t, i.token_ciphertext.as_deref().unwrap())
            .await
            .unwrap()
            .expose(),
        fresh
    );
    let text = logs.text();
    assert!(
        !text.contains(&token) && !text.contains(&fresh),
        "token leaked into the logs"
    );
}

/// The web UI's Test button reads `data.ok` and `data.message` whatever the status: every error
/// answer of test carries `ok: false` and a `message` equal to `detail` (else the UI would show
/// "Test failed: undefined" after a disconnect in another tab or with an expired session).
#[tokio::test]
async fn every_error_answer_of_test_carries_ok_false_and_its_message() {
    let fx = fixture(&[("JWT_HS256_SECRET", HS_SECRET)]).await;
    let tenant = tenant_id();
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let jwt = |exp: i64| {
        hs256(
            json!({"tenant_id": tenant, "exp": exp}),
            Algorithm::HS256,
            HS_SECRET,
        )
    };
    let bearer = |t: String| Auth::Header(Some(format!("Bearer {t}")));
    let too_large = "x".repeat(shared::http::MAX_BODY_BYTES + 1);
    let rows: Vec<(Auth, Option<&str>, u16, &str)> = vec![
        (
            claims_for(&tenant),
            None,
            400,
            "not configured (never connected, or disconnected in another tab)",
        ),
        (Auth::Header(None), None, 401, "no JWT"),
        (
            bearer(jwt(now - 3600)),
            None,
            401,
            "expired JWT (session expired)",
        ),
        (
            bearer(jwt(now + 300)),
            Some(too_large.as_str()),
            413,
            "body too large",
        ),
    ];
    for (auth, body, status, why) in rows {
        let a = call(&fx.app, Route::Test, event(Route::Test, &auth, body, None)).await;
        assert_eq!(a.status, status, "{why}: {}", a.raw);
        assert_eq!(a.body["ok"], false, "{why}: {}", a.raw);
        let detail = a.body["detail"].as_str().unwrap_or_default();
        assert!(!detail.is_empty(), "{why}: detail stays for other clients");
        assert_eq!(a.body["message"], detail, "{why}: message equals detail");
    }
}

/// The hs256 sign-in mode in AWS: the secret is an SSM SecureString read once at start (never an
/// environment value); a secret under 32 bytes is refused at start, and the errors name the
/// parameter, never the value.
#[tokio::test]
async fn the_hs256_secret_comes_from_an_ssm_securestring_read_at_start() {
    let env = TestEnv::new().await;
    let ssm = aws_sdk_ssm::Client::new(&teleagent_tests::harness::sdk_config().await);
    let name = format!("/teleagent-test/{}/jwt", uuid::Uuid::new_v4().simple());
    let put = |n: String, v: &'static str| {
        let ssm = ssm.clone();
        async move {
            ssm.put_parameter()
                .name(n)
                .value(v)
                .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
                .send()
                .await
                .unwrap();
        }
    };
    put(name.clone(), HS_SECRET).await;
    let with_parameter = |n: &str| {
        env.config_with(&[
            ("MCP_ALLOW_LOOPBACK", "true"),
            ("JWT_HS256_SECRET_PARAMETER", n),
        ])
    };

    let mut cfg = with_parameter(&name);
    assert!(
        cfg.jwt_hs256_secret.is_none(),
        "nothing secret in the environment"
    );
    shared::http::app::resolve_hs256_secret(&mut cfg, &ssm)
        .await
        .unwrap();
    let app = App::new(cfg, &env.clients).unwrap();
    let tenant = tenant_id();
    let jwt = hs256(
        json!({"tenant_id": tenant, "exp": OffsetDateTime::now_utc().unix_timestamp() + 300}),
        Algorithm::HS256,
        HS_SECRET,
    );
    let ok = Auth::Header(Some(format!("Bearer {jwt}")));
    let a = call(&app, Route::Status, event(Route::Status, &ok, None, None)).await;
    assert_eq!(
        a.status, 200,
        "a token signed with the parameter's secret: {}",
        a.raw
    );

    let short = format!("{name}-short");
    put(short.clone(), "too-short-secret").await;
    let missing = format!("{name}-missing");
    for (n, why) in [
        (short, "a secret under 32 bytes"),
        (missing, "no such parameter"),
    ] {
        let mut cfg = with_parameter(&n);
        let e = shared::http::app::resolve_hs256_secret(&mut cfg, &ssm)
            .await
            .expect_err(why);
        let text = format!("{e} {e:?}");
        assert!(
            text.contains("JWT_HS256_SECRET_PARAMETER") || text.contains(&n),
            "{why}: {text}"
        );
        assert!(
            !text.contains("too-short-secret"),
            "{why}: the value leaked: {text}"
        );
        assert!(cfg.jwt_hs256_secret.is_none(), "{why}");
    }
}
