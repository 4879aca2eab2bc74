//! The MCP client (shared::mcp) against the sandbox portal over real HTTP: handshake, paginated
//! tools/list, tool calls in both answer modes and two tool shapes, session recovery after a 404,
//! and the error classes callers branch on (revoked token, 503 storm, timeout, dropped
//! connection, 5xx). Every test also checks that the optional GET stream was never opened.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use serde_json::{Value, json};
use shared::mcp::{McpClient, McpClientOptions, McpError, McpSession, TransientReason, UrlGuard};
use shared::secret::SecretToken;
use teleagent_tests::sandbox::{AnswerMode, Faults, Sandbox, SandboxConfig, ToolShape};

const MODES: [AnswerMode; 2] = [AnswerMode::Json, AnswerMode::Sse];

struct Rig {
    sb: Sandbox,
    client: McpClient,
    url: url::Url,
    token: SecretToken,
}

impl Rig {
    async fn start(shape: ToolShape, mode: AnswerMode) -> Self {
        Self::with(
            SandboxConfig {
                shape,
                answer_mode: mode,
                ..SandboxConfig::default()
            },
            McpClientOptions::default(),
        )
        .await
    }

    async fn with(cfg: SandboxConfig, opts: McpClientOptions) -> Self {
        let sb = Sandbox::start(cfg).await;
        let guard = UrlGuard::new(&[], true);
        let url = guard
            .check(Some(&sb.mcp_url()))
            .expect("sandbox URL passes the guard");
        let token = SecretToken::new(sb.issue_token(false));
        let client = McpClient::new(guard, opts).unwrap();
        Self {
            sb,
            client,
            url,
            token,
        }
    }

    async fn connect(&self) -> McpSession {
        self.client.connect(&self.url, &self.token).await.unwrap()
    }

    fn outcome(&self, name: &str) -> u64 {
        self.sb.calls().by_outcome.get(name).copied().unwrap_or(0)
    }

    fn assert_no_get_stream(&self, why: &str) {
        assert_eq!(
            self.outcome("get_stream"),
            0,
            "{why}: the GET stream was opened"
        );
    }
}

/// Creates a lead through whichever tool the shape offers and returns its id.
async fn create_lead(s: &mut McpSession, shape: ToolShape, title: &str) -> i64 {
    let fields = json!({"TITLE": title, "NAME": "Ann", "PHONE": [{"VALUE": "+998901234567", "VALUE_TYPE": "WORK"}]});
    let out = match shape {
        ToolShape::LeadTools => {
            s.call_tool("bitrix24_create_lead", json!({"fields": fields}))
                .await
        }
        ToolShape::RestMethod => {
            s.call_tool(
                "bitrix24_call_method",
                json!({"method": "crm.lead.add", "params": {"fields": fields}}),
            )
            .await
        }
        ToolShape::CrmEntity => {
            s.call_tool("crm_add", json!({"entity": "lead", "fields": fields}))
                .await
        }
    }
    .unwrap();
    assert!(!out.is_error, "create failed: {}", out.text);
    let v = out.json().expect("create answers JSON");
    v.as_i64()
        .or_else(|| v.get("result").and_then(Value::as_i64))
        .unwrap_or_else(|| panic!("no id in {v}"))
}

async fn get_lead(s: &mut McpSession, shape: ToolShape, id: i64) -> Result<Value, McpError> {
    let out = match shape {
        ToolShape::LeadTools => s.call_tool("bitrix24_get_lead", json!({"id": id})).await?,
        ToolShape::RestMethod => {
            s.call_tool(
                "bitrix24_call_method",
                json!({"method": "crm.lead.get", "params": {"id": id}}),
            )
            .await?
        }
        ToolShape::CrmEntity => {
            s.call_tool("crm_get", json!({"entity": "lead", "id": id}))
                .await?
        }
    };
    if out.is_error {
        return Err(shared::mcp::classify_tool_error(&out.text));
    }
    let v = out.json().expect("get answers JSON");
    Ok(v.get("result")
        .cloned()
        .filter(Value::is_object)
        .unwrap_or(v))
}

#[tokio::test]
async fn connect_list_and_call_in_every_mode_and_shape() {
    for shape in [ToolShape::LeadTools, ToolShape::RestMethod] {
        for mode in MODES {
            let why = format!("{shape:?}/{mode:?}");
            let rig = Rig::start(shape, mode).await;
            let mut s = rig.connect().await;
            assert_eq!(s.server_info().name, "bitrix24-sandbox", "{why}");
            assert_eq!(s.protocol_version(), "2025-11-25", "{why}");

            let tools = s.list_tools().await.unwrap();
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            let stats = rig.sb.calls();
            match shape {
                ToolShape::LeadTools => {
                    for n in [
                        "bitrix24_create_lead",
                        "bitrix24_get_lead",
                        "bitrix24_find_duplicates",
                        "search_tasks",
                    ] {
                        assert!(names.contains(&n), "{why}: {n} missing from {names:?}");
                    }
                    assert!(tools.len() > 4, "{why}: more than one page expected");
                    assert_eq!(
                        stats.tools_list as usize,
                        tools.len().div_ceil(4),
                        "{why}: every page fetched once"
                    );
                }
                _ => {
                    assert!(names.contains(&"bitrix24_call_method"), "{why}: {names:?}");
                }
            }
            let create = tools
                .iter()
                .find(|t| t.name.contains("create") || t.name.contains("call_method"))
                .unwrap();
            assert_eq!(create.input_schema["type"], "object", "{why}: schema kept");

            let id = create_lead(&mut s, shape, &format!("Telegram: {why}")).await;
            let lead = get_lead(&mut s, shape, id).await.unwrap();
            assert_eq!(lead["TITLE"], format!("Telegram: {why}"), "{why}: {lead}");
            let stored = rig.sb.lead(id).expect("lead exists in the portal");
            assert_eq!(stored["NAME"], "Ann", "{why}");

            // counted where they are answered: the sandbox
            let calls = rig.sb.calls();
            assert_eq!(calls.tools_call, 2, "{why}");
            assert_eq!(calls.initialize, 1, "{why}: one handshake");
            assert_eq!(
                calls.tools_list, stats.tools_list,
                "{why}: every page fetched once"
            );
            s.close().await;
            assert_eq!(
                rig.outcome("session_deleted"),
                1,
                "{why}: DELETE ends the session"
            );
            rig.assert_no_get_stream(&why);
        }
    }
}

#[tokio::test]
async fn works_without_a_session_id_and_with_older_versions() {
    let cfg = SandboxConfig {
        sessions: false,
        protocol_version: Some("2025-03-26".into()),
        ..SandboxConfig::default()
    };
    let rig = Rig::with(cfg, McpClientOptions::default()).await;
    let mut s = rig.connect().await;
    assert_eq!(s.protocol_version(), "2025-03-26");
    assert!(!s.list_tools().await.unwrap().is_empty());
    s.close().await; // no session id: nothing to delete, must not fail
    rig.assert_no_get_stream("no sessions");
}

#[tokio::test]
async fn unsupported_version_is_refused_by_name() {
    let cfg = SandboxConfig {
        protocol_version: Some("2031-01-01".into()),
        ..SandboxConfig::default()
    };
    let rig = Rig::with(cfg, McpClientOptions::default()).await;
    let err = rig.client.connect(&rig.url, &rig.token).await.unwrap_err();
    assert!(
        matches!(&err, McpError::Protocol { detail } if detail.contains("2031-01-01")),
        "{err:?}"
    );
}

#[tokio::test]
async fn expired_session_is_recovered_once() {
    for mode in MODES {
        let why = format!("{mode:?}");
        let rig = Rig::start(ToolShape::LeadTools, mode).await;
        let mut s = rig.connect().await;
        let id = create_lead(&mut s, ToolShape::LeadTools, "before expiry").await;
        rig.sb.expire_sessions();
        let lead = get_lead(&mut s, ToolShape::LeadTools, id).await.unwrap();
        assert_eq!(lead["TITLE"], "before expiry", "{why}");
        let stats = rig.sb.calls();
        assert_eq!(stats.initialize, 2, "{why}: one re-initialize");
        assert_eq!(
            rig.outcome("session_expired"),
            1,
            "{why}: exactly one 404 seen"
        );
        // The new session works for later calls too.
        get_lead(&mut s, ToolShape::LeadTools, id).await.unwrap();
        assert_eq!(rig.sb.calls().initialize, 2, "{why}");
        rig.assert_no_get_stream(&why);
    }
}

#[tokio::test]
async fn revoked_or_unknown_token_is_unauthorized() {
    for mode in MODES {
        let why = format!("{mode:?}");
        let rig = Rig::start(ToolShape::RestMethod, mode).await;
        let mut s = rig.connect().await;
        rig.sb.revoke_token(rig.token.expose());
        let err = s.list_tools().await.unwrap_err();
        assert!(
            matches!(
                &err,
                McpError::Unauthorized {
                    status: Some(401),
                    ..
                }
            ),
            "{why}: {err:?}"
        );
        assert!(!err.is_retryable(), "{why}");
        assert!(
            !err.to_string().contains(rig.token.expose()),
            "{why}: token in message"
        );

        let wrong = SecretToken::new("not-a-real-token-123".into());
        let err = rig.client.connect(&rig.url, &wrong).await.unwrap_err();
        assert!(
            matches!(
                err,
                McpError::Unauthorized {
                    status: Some(401),
                    ..
                }
            ),
            "{why}: {err:?}"
        );
        rig.assert_no_get_stream(&why);
    }
}

#[tokio::test]
async fn query_limit_storm_is_rate_limited() {
    for mode in MODES {
        let why = format!("{mode:?}");
        let cfg = SandboxConfig {
            answer_mode: mode,
            bucket_depth: 2,
            bucket_rate_per_sec: 0.01,
            ..SandboxConfig::default()
        };
        let rig = Rig::with(cfg, McpClientOptions::default()).await;
        let mut s = rig.connect().await;
        let mut limited = None;
        for i in 0..5 {
            match s.call_tool("bitrix24_get_lead", json!({"id": 1})).await {
                Ok(_) => {}
                Err(e) => {
                    limited = Some((i, e));
                    break;
                }
            }
        }
        let (at, err) = limited.unwrap_or_else(|| panic!("{why}: never rate limited"));
        assert_eq!(at, 2, "{why}: the call past depth 2 is refused");
        assert!(
            matches!(err, McpError::RateLimited { .. }),
            "{why}: {err:?}"
        );
        assert!(err.is_retryable(), "{why}");
        assert_eq!(rig.outcome("rate_limited"), 1, "{why}");
        rig.assert_no_get_stream(&why);
    }
}

#[tokio::test]
async fn slow_server_times_out_as_transient() {
    let opts = McpClientOptions {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(300),
    };
    for mode in MODES {
        let why = format!("{mode:?}");
        let cfg = SandboxConfig {
            answer_mode: mode,
            ..SandboxConfig::default()
        };
        let rig = Rig::with(cfg, opts).await;
        let mut s = rig.connect().await;
        rig.sb.set_faults(Faults {
            latency_ms: 1200,
            ..Faults::default()
        });
        let started = std::time::Instant::now();
        let err = s.list_tools().await.unwrap_err();
        assert_eq!(
            err,
            McpError::Transient {
                reason: TransientReason::Timeout
            },
            "{why}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(1100),
            "{why}: waited {:?}",
            started.elapsed()
        );
        assert!(err.is_retryable(), "{why}");
        rig.assert_no_get_stream(&why);
    }
}

#[tokio::test]
async fn server_errors_and_dropped_connections_are_transient() {
    let rig = Rig::start(ToolShape::LeadTools, AnswerMode::Sse).await;
    let mut s = rig.connect().await;

    rig.sb.set_faults(Faults {
        fail_next_n_with_5xx: 1,
        ..Faults::default()
    });
    let err = s
        .call_tool("bitrix24_get_lead", json!({"id": 1}))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        McpError::Transient {
            reason: TransientReason::ServerError { status: 500 }
        }
    );

    rig.sb.set_faults(Faults {
        drop_ratio: 1.0,
        ..Faults::default()
    });
    let err = s
        .call_tool("bitrix24_get_lead", json!({"id": 1}))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            McpError::Transient {
                reason: TransientReason::ConnectionDropped | TransientReason::Connect
            }
        ),
        "{err:?}"
    );

    rig.sb.set_faults(Faults::default());
    let id = create_lead(&mut s, ToolShape::LeadTools, "after faults").await;
    assert!(
        rig.sb.lead(id).is_some(),
        "the session still works after the faults"
    );
    rig.assert_no_get_stream("faults");
}

#[tokio::test]
async fn tool_errors_and_unknown_tools_are_told_apart() {
    let rig = Rig::start(ToolShape::LeadTools, AnswerMode::Json).await;
    let mut s = rig.connect().await;

    let err = get_lead(&mut s, ToolShape::LeadTools, 999_999)
        .await
        .unwrap_err();
    assert_eq!(err, McpError::NotFound);

    let err = s.call_tool("no_such_tool", json!({})).await.unwrap_err();
    assert_eq!(
        err,
        McpError::UnknownTool,
        "the sandbox answers -32602 Unknown tool"
    );

    rig.sb.set_config(|c| c.plain_text_errors = true);
    let out = s
        .call_tool("bitrix24_get_lead", json!({"id": 999_999}))
        .await
        .unwrap();
    assert!(
        !out.is_error && out.json().is_none(),
        "plain text error: {out:?}"
    );
    assert_eq!(
        shared::mcp::classify_tool_error(&out.text),
        McpError::NotFound
    );
}
