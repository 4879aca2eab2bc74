//! Tests of the Bitrix24 sandbox itself, over real HTTP with raw reqwest: the wire behaviour
//! other tests rely on (handshake, sessions, status codes, JSON vs SSE) and the portal semantics
//! the connector relies on (multifields, findbycomm, bucket, admin-only user fields, pagination).

// Test helpers outside `#[test]` fns unwrap too: a failure there is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use reqwest::StatusCode;
use serde_json::{Value, json};
use teleagent_tests::sandbox::{
    AnswerMode, AnswerStyle, Faults, Sandbox, SandboxConfig, SandboxPortal, ToolShape,
};

const ACCEPT: &str = "application/json, text/event-stream";
const VERSION: &str = "2025-11-25";

/// A raw MCP client: just enough to drive the sandbox by hand.
struct Raw {
    http: reqwest::Client,
    url: String,
    token: String,
    session: Option<String>,
    version: Option<String>,
    next_id: u64,
}

impl Raw {
    fn new(sb: &SandboxPortal, token: String) -> Self {
        Self {
            http: reqwest::Client::new(),
            url: sb.mcp_url(),
            token,
            session: None,
            version: None,
            next_id: 1,
        }
    }

    fn post(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("accept", ACCEPT)
            .json(body);
        if let Some(s) = &self.session {
            r = r.header("mcp-session-id", s);
        }
        if let Some(v) = &self.version {
            r = r.header("mcp-protocol-version", v);
        }
        r
    }

    /// initialize + notifications/initialized; returns the initialize result.
    async fn handshake(&mut self) -> Value {
        let resp = self
            .post(&json!({"jsonrpc": "2.0", "id": 0, "method": "initialize",
                "params": {"protocolVersion": VERSION, "capabilities": {},
                           "clientInfo": {"name": "raw", "version": "0"}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        self.session = resp
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let msg = read_message(resp, 0).await;
        self.version = Some(
            msg["result"]["protocolVersion"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
        let n = self
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .send()
            .await
            .unwrap();
        assert_eq!(n.status(), StatusCode::ACCEPTED);
        assert!(n.bytes().await.unwrap().is_empty());
        msg["result"].clone()
    }

    async fn request(&mut self, method: &str, params: Value) -> reqwest::Response {
        let id = self.next_id;
        self.next_id += 1;
        self.post(&json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}))
            .send()
            .await
            .unwrap()
    }

    /// A JSON-RPC call that must succeed at the HTTP level; returns the whole message.
    async fn rpc(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        let resp = self.request(method, params).await;
        assert_eq!(resp.status(), StatusCode::OK, "{method}");
        read_message(resp, id).await
    }

    /// tools/call; returns (parsed text or raw text as a string, isError).
    async fn tool(&mut self, name: &str, arguments: Value) -> (Value, bool) {
        let msg = self
            .rpc("tools/call", json!({"name": name, "arguments": arguments}))
            .await;
        let result = &msg["result"];
        let text = result["content"][0]["text"].as_str().unwrap();
        let parsed = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.into()));
        (parsed, result["isError"] == json!(true))
    }
}

/// Reads the JSON-RPC response with `id` from a JSON or SSE answer.
async fn read_message(resp: reqwest::Response, id: u64) -> Value {
    let ct = resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned();
    let text = resp.text().await.unwrap();
    if ct.starts_with("application/json") {
        return serde_json::from_str(&text).unwrap();
    }
    assert!(ct.starts_with("text/event-stream"), "content type {ct}");
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str::<Value>(d.trim()).unwrap())
        .find(|m| m["id"] == json!(id))
        .unwrap_or_else(|| panic!("no response with id {id} in {text}"))
}

async fn connected(cfg: SandboxConfig, admin: bool) -> (Sandbox, Raw) {
    let sb = Sandbox::start(cfg).await;
    let mut raw = Raw::new(&sb, sb.issue_token(admin));
    raw.handshake().await;
    (sb, raw)
}

#[tokio::test]
async fn handshake_negotiates_version_and_issues_a_session() {
    let sb = Sandbox::start(SandboxConfig::default()).await;
    let mut raw = Raw::new(&sb, sb.issue_token(false));
    let init = raw.handshake().await;
    assert_eq!(init["protocolVersion"], VERSION);
    assert_eq!(init["serverInfo"]["name"], "bitrix24-sandbox");
    assert!(init["capabilities"]["tools"].is_object());
    let sid = raw.session.clone().expect("a session id");
    assert!(uuid::Uuid::parse_str(&sid).is_ok(), "{sid}");

    // Unknown proposed version -> 2025-06-18.
    let resp = raw
        .post(&json!({"jsonrpc": "2.0", "id": 9, "method": "initialize",
                      "params": {"protocolVersion": "2099-01-01", "capabilities": {}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        read_message(resp, 9).await["result"]["protocolVersion"],
        "2025-06-18"
    );

    // Later requests need the session and the version header.
    let mut no_session = Raw::new(&sb, raw.token.clone());
    no_session.version = raw.version.clone();
    let r = no_session.request("tools/list", json!({})).await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "missing session id");
    let mut no_version = Raw::new(&sb, raw.token.clone());
    no_version.session = raw.session.clone();
    let r = no_version.request("tools/list", json!({})).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "missing MCP-Protocol-Version"
    );
    no_version.version = Some("2025-03-26".into());
    let r = no_version.request("tools/list", json!({})).await;
    assert_eq!(
        r.status(),
        StatusCode::BAD_REQUEST,
        "a version other than negotiated"
    );

    // Unknown method, batches.
    let m = raw.rpc("resources/list", json!({})).await;
    assert_eq!(m["error"]["code"], -32601);
    let r = raw
        .post(&json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST, "batch");

    let calls = sb.calls();
    assert_eq!(calls.initialize, 2);
    assert_eq!(calls.by_outcome["session_missing"], 1);
    assert_eq!(calls.by_outcome["bad_protocol_version"], 2);
}

#[tokio::test]
async fn auth_accept_and_session_expiry_status_codes() {
    let (sb, mut raw) = connected(SandboxConfig::default(), false).await;

    // 406 without both media types in Accept.
    let r = reqwest::Client::new()
        .post(sb.mcp_url())
        .bearer_auth(&raw.token)
        .header("accept", "application/json")
        .json(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_ACCEPTABLE);

    // 401 for an unknown token, with WWW-Authenticate and the Bitrix24 body.
    let bad = Raw::new(&sb, "not-a-token".into());
    let r = bad
        .post(&json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let www = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    assert!(www.contains("invalid_token"), "{www}");
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "expired_token");

    // Expired sessions answer 404; a fresh handshake works again.
    assert_eq!(
        raw.request("tools/list", json!({})).await.status(),
        StatusCode::OK
    );
    sb.expire_sessions();
    assert_eq!(
        raw.request("tools/list", json!({})).await.status(),
        StatusCode::NOT_FOUND
    );
    raw.session = None;
    raw.version = None;
    raw.handshake().await;
    assert_eq!(
        raw.request("tools/list", json!({})).await.status(),
        StatusCode::OK
    );

    // A revoked token fails even inside its open session.
    sb.revoke_token(&raw.token);
    assert_eq!(
        raw.request("tools/list", json!({})).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // GET stream: 405 and counted; DELETE ends a session.
    let r = reqwest::Client::new()
        .get(sb.mcp_url())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let mut other = Raw::new(&sb, sb.issue_token(false));
    other.handshake().await;
    let del = |o: &Raw| {
        o.http
            .delete(&o.url)
            .bearer_auth(&o.token)
            .header("mcp-session-id", o.session.clone().unwrap())
            .send()
    };
    assert_eq!(del(&other).await.unwrap().status(), StatusCode::OK);
    assert_eq!(del(&other).await.unwrap().status(), StatusCode::NOT_FOUND);

    let c = sb.calls();
    assert_eq!(c.by_outcome["get_stream"], 1);
    assert_eq!(c.by_outcome["session_expired"], 2);
    assert_eq!(c.by_outcome["unauthorized"], 2);
    assert_eq!(c.by_outcome["not_acceptable"], 1);
}

#[tokio::test]
async fn json_and_sse_answers_carry_the_same_response() {
    let (sb, mut raw) = connected(SandboxConfig::default(), false).await;
    let id = raw.next_id;
    let r = raw.request("tools/list", json!({})).await;
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let json_answer = read_message(r, id).await;

    sb.set_config(|c| c.answer_mode = AnswerMode::Sse);
    let id = raw.next_id;
    let r = raw.request("tools/list", json!({})).await;
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let body = r.text().await.unwrap();
    let events: Vec<Value> = body
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(events.len(), 2, "{body}");
    assert_eq!(
        events[0]["method"], "notifications/message",
        "a notification comes first"
    );
    assert_eq!(events[1]["id"], json!(id));
    assert_eq!(events[1]["result"], json_answer["result"]);
}

#[tokio::test]
async fn tools_list_pages_with_a_cursor() {
    for (shape, expected) in [
        (ToolShape::LeadTools, 10),
        (ToolShape::RestMethod, 3),
        (ToolShape::CrmEntity, 6),
    ] {
        let (_sb, mut raw) = connected(
            SandboxConfig {
                shape,
                ..SandboxConfig::default()
            },
            false,
        )
        .await;
        let mut names = Vec::new();
        let mut cursor: Option<String> = None;
        let mut pages = 0;
        loop {
            let params = cursor.as_ref().map_or(json!({}), |c| json!({"cursor": c}));
            let m = raw.rpc("tools/list", params).await;
            let tools = m["result"]["tools"].as_array().unwrap();
            assert!(tools.len() <= 4, "{shape:?}: page too big");
            for t in tools {
                assert_eq!(t["inputSchema"]["type"], "object");
                names.push(t["name"].as_str().unwrap().to_owned());
            }
            pages += 1;
            match m["result"]["nextCursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
        assert_eq!(names.len(), expected, "{shape:?}: {names:?}");
        assert_eq!(pages, expected.div_ceil(4), "{shape:?}");
        if shape == ToolShape::LeadTools {
            assert!(
                !names[..4].contains(&"bitrix24_create_lead".to_owned()),
                "create_lead must not be on the first page"
            );
        }
    }
    let (_sb, mut raw) = connected(SandboxConfig::default(), false).await;
    let m = raw.rpc("tools/list", json!({"cursor": "bogus"})).await;
    assert_eq!(m["error"]["code"], -32602);
    let m = raw
        .rpc("tools/call", json!({"name": "crm_add", "arguments": {}}))
        .await;
    assert_eq!(m["error"]["code"], -32602, "unknown tool");
}

#[tokio::test]
async fn phone_multifield_append_overwrite_delete() {
    let (sb, mut raw) = connected(SandboxConfig::default(), false).await;
    let (id, err) = raw
        .tool(
            "bitrix24_create_lead",
            json!({"fields": {"TITLE": "Acme", "NAME": "Ann",
                              "PHONE": [{"VALUE": "+998 90 123-45-67", "VALUE_TYPE": "WORK"}]}}),
        )
        .await;
    assert!(!err);
    let id = id.as_i64().unwrap();
    let phones = |sb: &Sandbox| -> Vec<(String, String)> {
        sb.lead(id).unwrap()["PHONE"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|p| {
                        (
                            p["ID"].as_str().unwrap().to_owned(),
                            p["VALUE"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let first = phones(&sb);
    assert_eq!(first.len(), 1);

    // Re-sending the number without ID appends a duplicate (the classic client bug).
    let (ok, _) = raw
        .tool(
            "bitrix24_update_lead",
            json!({"id": id, "fields": {"PHONE": [{"VALUE": "+998 90 123-45-67"}]}}),
        )
        .await;
    assert_eq!(ok, json!(true));
    let two = phones(&sb);
    assert_eq!(two.len(), 2, "an item without ID is appended");
    assert_eq!(two[0].1, two[1].1);

    // {ID, VALUE} overwrites that item only.
    raw.tool(
        "bitrix24_update_lead",
        json!({"id": id, "fields": {"PHONE": [{"ID": two[1].0, "VALUE": "+1 555 0100"}]}}),
    )
    .await;
    let p = phones(&sb);
    assert_eq!(
        p,
        vec![two[0].clone(), (two[1].0.clone(), "+1 555 0100".into())]
    );

    // {ID, DELETE:"Y"} and an empty VALUE both delete.
    raw.tool(
        "bitrix24_update_lead",
        json!({"id": id, "fields": {"PHONE": [{"ID": two[0].0, "DELETE": "Y"}, {"ID": two[1].0, "VALUE": ""}]}}),
    )
    .await;
    let lead = sb.lead(id).unwrap();
    assert!(lead.get("PHONE").is_none(), "{lead}");
    assert_eq!(lead["HAS_PHONE"], "N");
    assert_eq!(lead["NAME"], "Ann", "fields not sent stay");

    // Unknown lead: a tool error naming Not found.
    let (e, is_error) = raw
        .tool(
            "bitrix24_update_lead",
            json!({"id": 999, "fields": {"TITLE": "x"}}),
        )
        .await;
    assert!(is_error);
    assert_eq!(e["error_description"], "Not found");

    // Invalid STATUS_ID: an ERROR_CORE tool error and no lead.
    let (e, is_error) = raw
        .tool(
            "bitrix24_create_lead",
            json!({"fields": {"TITLE": "t", "SOURCE_ID": "TELEGRAM"}}),
        )
        .await;
    assert!(is_error);
    assert_eq!(e["error"], "ERROR_CORE");
    assert_eq!(sb.leads().len(), 1);
    let c = sb.calls();
    assert_eq!(c.by_tool["bitrix24_update_lead"], 4);
    assert_eq!(c.by_method["crm.lead.update"], 4);
    assert_eq!(c.by_method["crm.lead.add"], 2);
}

#[tokio::test]
async fn findbycomm_digits_match_and_empty_array_on_miss() {
    let (sb, mut raw) = connected(SandboxConfig::default(), false).await;
    let id = sb.seed_lead(
        json!({"TITLE": "x", "PHONE": [{"VALUE": "+998 90 123-45-67", "VALUE_TYPE": "MOBILE"}]}),
    );
    sb.seed_lead(json!({"TITLE": "y", "PHONE": [{"VALUE": "+7 812 999-93-31"}]}));
    assert_eq!(sb.calls().tools_call, 0, "seeding is not a call");
    let find = |values: Value| json!({"type": "PHONE", "values": values, "entity_type": "LEAD"});
    for (values, expected, why) in [
        (
            json!(["998901234567"]),
            json!({"LEAD": [id]}),
            "digits only",
        ),
        (json!(["+998901234567"]), json!({"LEAD": [id]}), "with plus"),
        (
            json!(["901234567"]),
            json!([]),
            "national-only spelling does not match",
        ),
        (
            json!(["+78129999331#4048"]),
            json!({"LEAD": [2]}),
            "extension ignored",
        ),
        (
            json!(["+10000000000"]),
            json!([]),
            "no match -> empty ARRAY",
        ),
    ] {
        let (got, err) = raw.tool("bitrix24_find_duplicates", find(values)).await;
        assert!(!err, "{why}");
        assert_eq!(got, expected, "{why}");
    }
    let many: Vec<String> = (0..21).map(|i| format!("+1555000{i:04}")).collect();
    let (e, err) = raw
        .tool("bitrix24_find_duplicates", find(json!(many)))
        .await;
    assert!(err, "21 values: {e}");

    // The same through the generic REST tool, envelope style and plain-text errors.
    sb.set_config(|c| {
        c.shape = ToolShape::RestMethod;
        c.answer_style = AnswerStyle::Envelope;
        c.plain_text_errors = true;
    });
    let (got, _) = raw
        .tool(
            "bitrix24_call_method",
            json!({"method": "crm.duplicate.findbycomm", "params": find(json!(["998901234567"]))}),
        )
        .await;
    assert_eq!(got["result"], json!({"LEAD": [id]}));
    assert!(got["time"]["start"].is_number());
    let (got, err) = raw
        .tool(
            "bitrix24_call_method",
            json!({"method": "crm.lead.get", "params": {"id": 77}}),
        )
        .await;
    assert!(!err, "plain-text errors do not set isError");
    assert_eq!(got, json!("Ошибка Bitrix24: Not found"));
    assert_eq!(sb.calls().by_method["crm.duplicate.findbycomm"], 7);
}

#[tokio::test]
async fn bucket_gives_503_past_depth_and_handshake_is_free() {
    let (sb, mut raw) = connected(
        SandboxConfig {
            bucket_rate_per_sec: 0.001,
            bucket_depth: 3,
            ..SandboxConfig::default()
        },
        false,
    )
    .await;
    raw.rpc("tools/list", json!({})).await;
    for i in 0..3 {
        let (_, err) = raw.tool("bitrix24_list_lead_fields", json!({})).await;
        assert!(!err, "call {i}");
    }
    let r = raw
        .request(
            "tools/call",
            json!({"name": "bitrix24_list_lead_fields", "arguments": {}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "QUERY_LIMIT_EXCEEDED");
    // Shared by every token of the portal.
    let mut other = Raw::new(&sb, sb.issue_token(false));
    other.handshake().await;
    let r = other
        .request(
            "tools/call",
            json!({"name": "bitrix24_get_lead", "arguments": {"id": 1}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let c = sb.calls();
    assert_eq!(c.by_outcome["rate_limited"], 2);
    assert_eq!(
        c.by_tool["bitrix24_list_lead_fields"], 3,
        "refused calls do not run"
    );
    assert_eq!(c.tools_call, 5);
}

#[tokio::test]
async fn userfield_and_status_add_are_admin_only() {
    let sb = Sandbox::start(SandboxConfig {
        shape: ToolShape::RestMethod,
        ..SandboxConfig::default()
    })
    .await;
    let add_uf = json!({"method": "crm.lead.userfield.add",
        "params": {"fields": {"USER_TYPE_ID": "double", "FIELD_NAME": "TELEAGENT_SCORE", "LABEL": "Score"}}});
    let add_source = json!({"method": "crm.status.add",
        "params": {"fields": {"ENTITY_ID": "SOURCE", "STATUS_ID": "TELEGRAM", "NAME": "Telegram"}}});

    let mut user = Raw::new(&sb, sb.issue_token(false));
    user.handshake().await;
    for args in [&add_uf, &add_source] {
        let (e, err) = user.tool("bitrix24_call_method", args.clone()).await;
        assert!(err);
        assert_eq!(e["error"], "ACCESS_DENIED");
    }

    let mut admin = Raw::new(&sb, sb.issue_token(true));
    admin.handshake().await;
    let (id, err) = admin.tool("bitrix24_call_method", add_uf.clone()).await;
    assert!(!err && id.is_i64(), "{id}");
    let (_, err) = admin.tool("bitrix24_call_method", add_source).await;
    assert!(!err);
    let (fields, _) = user
        .tool("bitrix24_call_method", json!({"method": "crm.lead.fields"}))
        .await;
    assert_eq!(fields["UF_CRM_TELEAGENT_SCORE"]["type"], "double");
    let (list, _) = user
        .tool(
            "bitrix24_call_method",
            json!({"method": "crm.lead.userfield.list"}),
        )
        .await;
    assert_eq!(list[0]["FIELD_NAME"], "UF_CRM_TELEAGENT_SCORE");
    let (sources, _) = user
        .tool(
            "bitrix24_call_method",
            json!({"method": "crm.status.list", "params": {"filter": {"ENTITY_ID": "SOURCE"}}}),
        )
        .await;
    assert!(
        sources
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["STATUS_ID"] == "TELEGRAM")
    );

    // The new field and source are now usable on leads.
    let (lead_id, err) = user
        .tool(
            "bitrix24_call_method",
            json!({"method": "crm.lead.add", "params": {"fields":
                {"TITLE": "t", "SOURCE_ID": "TELEGRAM", "UF_CRM_TELEAGENT_SCORE": 0.75}}}),
        )
        .await;
    assert!(!err, "{lead_id}");
    let lead = sb.lead(lead_id.as_i64().unwrap()).unwrap();
    assert_eq!(lead["UF_CRM_TELEAGENT_SCORE"], json!(0.75));
    assert_eq!(lead["SOURCE_ID"], "TELEGRAM");
}

#[tokio::test]
async fn list_pages_of_fifty_and_comments() {
    let (sb, mut raw) = connected(
        SandboxConfig {
            shape: ToolShape::CrmEntity,
            answer_style: AnswerStyle::Envelope,
            ..SandboxConfig::default()
        },
        false,
    )
    .await;
    for i in 0..55 {
        sb.seed_lead(json!({"TITLE": format!("L{i}"), "ORIGINATOR_ID": "teleagent"}));
    }
    let (page, _) = raw
        .tool(
            "crm_list",
            json!({"entity": "lead", "filter": {"ORIGINATOR_ID": "teleagent"}}),
        )
        .await;
    assert_eq!(page["result"].as_array().unwrap().len(), 50);
    assert_eq!(page["next"], 50);
    assert_eq!(page["total"], 55);
    let (page, _) = raw
        .tool(
            "crm_list",
            json!({"entity": "lead", "filter": {"ORIGINATOR_ID": "teleagent"}, "start": 50}),
        )
        .await;
    assert_eq!(page["result"].as_array().unwrap().len(), 5);
    assert!(page.get("next").is_none());
    let (e, err) = raw
        .tool("crm_get", json!({"entity": "deal", "id": 1}))
        .await;
    assert!(err, "{e}");

    sb.set_config(|c| c.shape = ToolShape::LeadTools);
    let (_, err) = raw
        .tool(
            "bitrix24_add_lead_comment",
            json!({"lead_id": 3, "comment": "hello"}),
        )
        .await;
    assert!(!err);
    assert_eq!(sb.timeline_comments(3), vec!["hello".to_owned()]);
    assert!(sb.timeline_comments(4).is_empty());
}

#[tokio::test]
async fn faults_5xx_and_dropped_connections() {
    let (sb, mut raw) = connected(SandboxConfig::default(), false).await;
    sb.set_faults(Faults {
        fail_next_n_with_5xx: 2,
        ..Faults::default()
    });
    for _ in 0..2 {
        let r = raw.request("tools/list", json!({})).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    assert_eq!(
        raw.request("tools/list", json!({})).await.status(),
        StatusCode::OK
    );

    sb.set_faults(Faults {
        drop_ratio: 1.0,
        latency_ms: 50,
        ..Faults::default()
    });
    let started = std::time::Instant::now();
    let err = raw
        .post(&json!({"jsonrpc": "2.0", "id": 99, "method": "tools/list"}))
        .send()
        .await
        .expect_err("a dropped connection gives no response at all");
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));
    assert!(!err.is_status() && err.status().is_none(), "{err:?}");
    sb.set_faults(Faults::default());
    assert_eq!(
        raw.request("tools/list", json!({})).await.status(),
        StatusCode::OK
    );

    let c = sb.calls();
    assert_eq!(c.by_outcome["fault_5xx"], 2);
    assert_eq!(c.by_outcome["dropped"], 1);
}

#[tokio::test]
async fn sessionless_mode_and_admin_api() {
    let sb = Sandbox::start(SandboxConfig {
        sessions: false,
        ..SandboxConfig::default()
    })
    .await;
    let http = reqwest::Client::new();
    let admin = |p: &str| format!("{}/admin/{p}", sb.base_url());
    let token: Value = http
        .post(admin("tokens"))
        .json(&json!({"admin": false}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut raw = Raw::new(&sb, token["token"].as_str().unwrap().to_owned());
    raw.handshake().await;
    assert!(
        raw.session.is_none(),
        "no Mcp-Session-Id when sessions are off"
    );
    let del = http
        .delete(sb.mcp_url())
        .bearer_auth(&raw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(
        del.status(),
        StatusCode::METHOD_NOT_ALLOWED,
        "DELETE without sessions"
    );
    let (id, _) = raw
        .tool(
            "bitrix24_create_lead",
            json!({"fields": {"TITLE": "via mcp"}}),
        )
        .await;

    let seeded: Value = http
        .post(admin("leads"))
        .json(&json!({"fields": {"TITLE": "via admin"}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seeded["id"], 2);
    let leads: Vec<Value> = http
        .get(admin("leads"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let titles: Vec<&str> = leads.iter().map(|l| l["TITLE"].as_str().unwrap()).collect();
    assert_eq!(titles, ["via mcp", "via admin"]);
    assert_eq!(leads[0]["ID"], id.to_string());

    let calls: Value = http
        .get(admin("calls"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(calls["tools_call"], 1);
    assert_eq!(calls["by_method"]["crm.lead.add"], 1);
    http.post(admin("calls/reset")).send().await.unwrap();
    assert_eq!(sb.calls().tools_call, 0);

    let cfg: Value = http
        .post(admin("config"))
        .json(&json!({"shape": "crm-entity", "answer_mode": "sse", "has_telegram_source": true}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(cfg["shape"], "crm-entity");
    assert_eq!(sb.config().answer_mode, AnswerMode::Sse);
    let (sources, _) = raw
        .tool("crm_status_list", json!({"entity_id": "SOURCE"}))
        .await;
    assert!(
        sources
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["STATUS_ID"] == "TELEGRAM")
    );

    http.post(admin("tokens/revoke"))
        .json(&json!({"token": raw.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        raw.request("tools/list", json!({})).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

/// One sandbox, three portals on one URL: each token reaches its own portal's leads, bucket,
/// faults and counters; a slow or failing portal leaves the others as they were.
#[tokio::test]
async fn portals_are_apart_in_leads_buckets_faults_and_counters() {
    let sb = Sandbox::start(SandboxConfig::default()).await;
    let small = sb.add_portal(SandboxConfig {
        bucket_rate_per_sec: 0.001,
        bucket_depth: 2,
        ..SandboxConfig::default()
    });
    let other = sb.add_portal(SandboxConfig::default());
    assert_eq!((small.index(), other.index()), (1, 2));
    assert_eq!(sb.portals().len(), 3);
    assert_eq!(
        small.mcp_url(),
        sb.mcp_url(),
        "one endpoint, the token picks the portal"
    );
    let mut main = Raw::new(&sb, sb.issue_token(false));
    let mut a = Raw::new(&small, small.issue_token(false));
    let mut b = Raw::new(&other, other.issue_token(false));
    for r in [&mut main, &mut a, &mut b] {
        r.handshake().await;
    }

    // Leads: a lead made through one portal's token is in that portal only.
    let (id, err) = a
        .tool(
            "bitrix24_create_lead",
            json!({"fields": {"TITLE": "in portal 1"}}),
        )
        .await;
    assert!(!err);
    assert_eq!(small.leads().len(), 1);
    assert!(sb.leads().is_empty() && other.leads().is_empty());
    let writes = small.lead_writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, "crm.lead.add");
    assert_eq!(json!(writes[0].lead_id.to_string()), json!(id.to_string()));
    assert_eq!(writes[0].fields["TITLE"], "in portal 1");
    assert!(sb.lead_writes().is_empty());

    // Buckets: portal 1's second call fills its depth of 2, the third is refused; the other
    // portals' buckets are untouched.
    assert!(!a.tool("bitrix24_list_lead_fields", json!({})).await.1);
    let r = a
        .request(
            "tools/call",
            json!({"name": "bitrix24_list_lead_fields", "arguments": {}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!b.tool("bitrix24_list_lead_fields", json!({})).await.1);
    assert!(!main.tool("bitrix24_list_lead_fields", json!({})).await.1);
    assert_eq!(small.calls().by_outcome["rate_limited"], 1);
    assert!(!sb.calls().by_outcome.contains_key("rate_limited"));
    assert!(!other.calls().by_outcome.contains_key("rate_limited"));
    assert_eq!(small.calls().tools_call, 3);
    assert_eq!(other.calls().tools_call, 1);
    assert_eq!(sb.calls().tools_call, 1);
    assert_eq!(small.calls().tools_call_ms_by_token.len(), 1);

    // Faults: portal 2 is slow and portal 1 answers 500 for a stretch; the first portal is not.
    other.set_faults(Faults {
        latency_ms: 400,
        ..Faults::default()
    });
    small.set_faults(Faults::error_5xx_for(std::time::Duration::from_millis(600)));
    let t = std::time::Instant::now();
    assert_eq!(
        main.request("tools/list", json!({})).await.status(),
        StatusCode::OK
    );
    assert!(
        t.elapsed() < std::time::Duration::from_millis(300),
        "{:?}",
        t.elapsed()
    );
    let t = std::time::Instant::now();
    assert_eq!(
        b.request("tools/list", json!({})).await.status(),
        StatusCode::OK
    );
    assert!(t.elapsed() >= std::time::Duration::from_millis(400));
    for _ in 0..2 {
        let r = a.request("tools/list", json!({})).await;
        assert_eq!(r.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert_eq!(
        a.request("tools/list", json!({})).await.status(),
        StatusCode::OK,
        "the stretch is over"
    );
    assert_eq!(small.calls().by_outcome["fault_5xx"], 2);
    assert!(!sb.calls().by_outcome.contains_key("fault_5xx"));

    // A token is one portal's: revoked there, it is not someone else's.
    small.revoke_token(&a.token);
    let r = a.request("tools/list", json!({})).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(small.calls().by_outcome["unauthorized"], 1);

    // The same over the admin API.
    let http = reqwest::Client::new();
    let admin = |p: &str| format!("{}/admin/{p}", sb.base_url());
    let get = |p: &str| {
        let r = http.get(admin(p)).send();
        async move { r.await.unwrap().json::<Value>().await.unwrap() }
    };
    let added: Value = http
        .post(admin("portals"))
        .json(&json!({"bucket_depth": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(added["portal"], 3);
    let mut c = Raw::new(&sb, added["token"].as_str().unwrap().to_owned());
    c.handshake().await;
    assert!(
        !c.tool(
            "bitrix24_create_lead",
            json!({"fields": {"TITLE": "in portal 3"}})
        )
        .await
        .1
    );
    let r = c
        .request(
            "tools/call",
            json!({"name": "bitrix24_list_lead_fields", "arguments": {}}),
        )
        .await;
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "its own depth of 1"
    );
    let f = http
        .post(admin("portals/3/faults"))
        .json(&json!({"fail_next_n_with_5xx": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(f.status(), StatusCode::OK);
    assert_eq!(
        c.request("tools/list", json!({})).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    let calls = get("portals/3/calls").await;
    assert_eq!(calls["tools_call"], 2);
    assert_eq!(calls["by_outcome"]["fault_5xx"], 1);
    let leads = get("portals/3/leads").await;
    assert_eq!(leads.as_array().unwrap().len(), 1);
    let writes = get("portals/3/writes").await;
    assert_eq!(writes[0]["method"], "crm.lead.add");
    assert_eq!(
        http.get(admin("portals/9/calls"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(sb.leads().len(), 0, "the first portal still has none");
}
