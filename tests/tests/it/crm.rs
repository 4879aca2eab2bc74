//! The CRM layer (binding + typed lead operations) on the MCP client, against the sandbox over
//! real HTTP, in both answer modes and all three tool shapes: the binding is found, a lead is
//! created, found by the phone spellings whatever spelling the portal stored, updated (a phone
//! item without ID is appended by Bitrix24, so the phone is never re-sent), fetched, commented,
//! and the live check that connect runs reports what it bound.

use std::time::Duration;

use serde_json::{Map, Value, json};
use shared::crm::{Crm, Operation, discovery::discover, live_check};
use shared::mcp::{McpClient, McpClientOptions, UrlGuard};
use shared::phone::{Phone, parse_phone, search_spellings};
use shared::secret::SecretToken;
use teleagent_tests::sandbox::{AnswerMode, Sandbox, SandboxConfig, ToolShape};

const SHAPES: [ToolShape; 3] = [
    ToolShape::LeadTools,
    ToolShape::RestMethod,
    ToolShape::CrmEntity,
];
const MODES: [AnswerMode; 2] = [AnswerMode::Json, AnswerMode::Sse];

fn fields(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_shape_and_mode_creates_finds_updates_and_fetches_a_lead() {
    let e164 = match parse_phone("998901234567", None) {
        Phone::Parsed { e164, .. } => e164,
        other => panic!("Telegram-style number not parsed: {other:?}"),
    };
    let spellings = search_spellings(&e164);
    for shape in SHAPES {
        for mode in MODES {
            let why = format!("{shape:?}/{mode:?}");
            let sb = Sandbox::start(SandboxConfig {
                shape,
                answer_mode: mode,
                ..SandboxConfig::default()
            })
            .await;
            let guard = UrlGuard::new(&[], true);
            let url = guard.check(Some(&sb.mcp_url())).unwrap();
            let token = SecretToken::new(sb.issue_token(false));
            let client = McpClient::new(guard, McpClientOptions::default()).unwrap();
            let mut session = client.connect(&url, &token).await.unwrap();
            let tools = session.list_tools().await.unwrap();
            let binding = discover(&tools, None);
            assert!(
                binding.missing_required().is_empty(),
                "{why}: {:?}",
                binding.report()
            );
            let mut crm = Crm::new(&mut session, &binding);

            // Leads made elsewhere, with the number written the ways people write it.
            let seeded: Vec<i64> = ["+998 (90) 123-45-67", "998901234567", "+998901234567"]
                .iter()
                .map(|p| {
                    sb.seed_lead(
                        json!({"TITLE": "web form", "PHONE": [{"VALUE": p, "VALUE_TYPE": "WORK"}]}),
                    )
                })
                .collect();
            let created = crm
                .create_lead(fields(json!({
                    "TITLE": "Telegram: Ann", "NAME": "Ann",
                    "PHONE": [{"VALUE": e164, "VALUE_TYPE": "WORK"}],
                    "ORIGINATOR_ID": "teleagent", "ORIGIN_ID": "t-1:tg:1",
                })))
                .await
                .unwrap();
            let found = crm.find_by_phones(&spellings).await.unwrap();
            for id in seeded.iter().chain([&created]) {
                assert!(
                    found.contains(id),
                    "{why}: lead {id} not found by {spellings:?}: {found:?}"
                );
            }
            assert!(
                crm.find_by_phones(&search_spellings("+14155550100"))
                    .await
                    .unwrap()
                    .is_empty(),
                "{why}: a number nobody has finds nothing"
            );
            if crm.has(Operation::ListLeads) {
                assert_eq!(
                    crm.find_by_origin("teleagent", "t-1:tg:1").await.unwrap(),
                    vec![created],
                    "{why}: ORIGIN_ID search"
                );
            }

            crm.update_lead(created, fields(json!({"STATUS_ID": "IN_PROCESS"})))
                .await
                .unwrap();
            let lead = crm.get_lead(created).await.unwrap().expect("lead exists");
            assert_eq!(lead["STATUS_ID"], "IN_PROCESS", "{why}");
            assert_eq!(
                lead["PHONE"].as_array().map(Vec::len),
                Some(1),
                "{why}: an update without PHONE keeps exactly one phone item"
            );
            assert!(
                crm.get_lead(999_999).await.unwrap().is_none(),
                "{why}: a deleted lead reads as None"
            );
            if crm.has(Operation::AddComment) {
                crm.add_comment(created, "Wants May").await.unwrap();
                assert_eq!(
                    sb.timeline_comments(created),
                    vec!["Wants May".to_owned()],
                    "{why}"
                );
            }
            session.close().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_check_reports_bindings_and_refuses_a_server_without_lead_tools() {
    let sb = Sandbox::start(SandboxConfig {
        shape: ToolShape::RestMethod,
        has_telegram_source: true,
        has_teleagent_user_fields: true,
        ..SandboxConfig::default()
    })
    .await;
    let guard = UrlGuard::new(&[], true);
    let url = guard.check(Some(&sb.mcp_url())).unwrap();
    let client = McpClient::new(guard, McpClientOptions::default()).unwrap();
    let token = SecretToken::new(sb.issue_token(false));
    let check = live_check(&client, &url, &token, None, Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(
        check.portal_info["bound"]["create_lead"]["tool"],
        "bitrix24_call_method"
    );
    assert_eq!(check.portal_info["server_name"], "bitrix24-sandbox");
    assert!(check.binding.caps.has_telegram_source);
    assert!(check.binding.caps.has_teleagent_user_fields);
    assert!(!check.binding.caps.has_qualified_status);
    assert!(
        sb.leads().is_empty(),
        "the live check only reads: it created {:?}",
        sb.leads()
    );

    // A tool map naming a tool the server lacks leaves that operation unbound: connect must say so.
    let err = live_check(
        &client,
        &url,
        &token,
        Some(r#"{"create_lead": "bitrix24_create_lead"}"#),
        Duration::from_secs(20),
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "this Bitrix24 MCP server offers no tool to create leads"
    );
}
