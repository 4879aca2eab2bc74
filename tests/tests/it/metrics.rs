//! The metrics as CloudWatch would read them: the real `bitrix-connect` and `lead-sync` binaries
//! (debug builds) run against their own local Runtime API with this test's own table, key and
//! queues, the poller plays the event source mapping, the sandbox the portal. The EMF lines in
//! each process's output are added up and compared with what happened: 8 events -> 3 leads
//! created, 4 updated, 1 dead-lettered; every `tools/call` the sandbox served is a `BitrixCalls`
//! `ok`. Their JSON log lines are read too: one searchable line per synced event, and no token.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use shared::events::{LeadEvent, LeadEventProducer, LeadStatus};
use shared::metrics::{Totals, function};
use shared::tenant::TenantId;
use teleagent_tests::harness::{TestEnv, workspace_root};
use teleagent_tests::iam::{FunctionProcess, http_event};
use teleagent_tests::local::poller::{self, Poller, PollerOptions};
use teleagent_tests::local::run::sign_jwt;
use teleagent_tests::local::runtime_api::InvocationResult;
use teleagent_tests::sandbox::{Sandbox, SandboxConfig};

/// lead-sync's output up to the invocation that handled `event_id` (the EMF lines of the
/// batches before it).
fn out_before_revoke<'a>(out: &'a str, event_id: &str) -> &'a str {
    let cut = out.find(event_id).unwrap_or(out.len());
    &out[..out[..cut].rfind('\n').map_or(0, |i| i + 1)]
}

/// The functions' environment: this test's resources, the sandbox on loopback, JSON logs.
fn function_env(env: &TestEnv, secret: &str) -> HashMap<String, String> {
    let mut vars = env.vars.clone();
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("JWT_HS256_SECRET", secret),
        ("MCP_ALLOW_LOOPBACK", "true"),
        ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
    ] {
        vars.insert(k.to_owned(), v.to_owned());
    }
    vars
}

/// `customer`'s `k`-th event: each later one moves the status forward (a field change, so an
/// update rather than notes only).
fn event(tenant: &TenantId, customer: &str, k: usize) -> LeadEvent {
    let mut e = LeadEvent::new(tenant.clone(), customer, 40 + 10 * k as u8);
    e.occurred_at = time::OffsetDateTime::now_utc() - time::Duration::seconds(30 - k as i64);
    e.customer.name = Some(format!("Name {customer}"));
    e.customer.phone = Some(format!("+99890{:07}", customer.len()));
    e.lead.status = Some([LeadStatus::New, LeadStatus::Contacted, LeadStatus::Won][k]);
    e.lead.notes = Some(format!("note {customer} #{k}"));
    e
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metric_lines_of_the_real_binaries_count_what_happened() {
    let env = TestEnv::new().await;
    let sandbox = Sandbox::start(SandboxConfig::default()).await;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let secret = format!("metrics-test-secret-{suffix}");
    let tenant = TenantId::parse(&format!("m-{}", &suffix[..12])).unwrap();
    let jwt = sign_jwt(&secret, tenant.as_str(), Duration::from_secs(3600)).unwrap();
    let vars = function_env(&env, &secret);
    let dir = workspace_root().join(".local");
    std::fs::create_dir_all(&dir).unwrap();
    let mut started = Vec::new();
    for name in [function::CONNECT, function::LEAD_SYNC] {
        let log = dir.join(format!("metrics-{suffix}-{name}.log"));
        started.push(FunctionProcess::start(name, &vars, log).await.unwrap());
    }
    let (sync, connect) = (started.pop().unwrap(), started.pop().unwrap());

    // One connect that fails (a token the portal does not know) and one that works.
    let token = sandbox.issue_token(true);
    for (t, want) in [("not-a-token-the-portal-knows", 400), (token.as_str(), 200)] {
        let body = json!({"mcp_token": t, "mcp_url": sandbox.mcp_url()});
        let ev = http_event("POST", "connect", Some(&jwt), Some(&body));
        let r = connect.api.invoke(ev, Duration::from_secs(60)).await;
        let Ok(InvocationResult::Response(resp)) = r else {
            panic!("connect failed as a whole: {r:?}");
        };
        assert_eq!(resp["statusCode"], want, "{resp}");
    }
    // connect's live check made calls of its own; from here on every call is lead-sync's.
    sandbox.reset_calls();

    // 8 events: customers of 3, 2 and 2 events (3 creates, 4 updates) and one invalid event.
    let producer = LeadEventProducer::new(env.clients.sqs.clone(), env.queue_url.clone());
    let mut events = Vec::new();
    for (customer, n) in [("tg:1", 3), ("tg:22", 2), ("tg:333", 2)] {
        for k in 0..n {
            let e = event(&tenant, customer, k);
            producer.send(&e).await.unwrap();
            events.push(e);
        }
    }
    let mut bad = events[0].to_value();
    let bad_id = uuid::Uuid::new_v4().to_string();
    bad["event_id"] = json!(bad_id);
    bad["customer"]["id"] = json!("tg:9");
    bad["lead"]["score"] = json!(150);
    env.clients
        .sqs
        .send_message()
        .queue_url(&env.queue_url)
        .message_body(bad.to_string())
        .message_group_id(format!("{tenant}:tg:9"))
        .message_deduplication_id(&bad_id)
        .send()
        .await
        .unwrap();

    let p = Poller::new(
        env.clients.sqs.clone(),
        env.queue_url.clone(),
        sync.api.clone(),
        PollerOptions {
            dead_letter_queue_url: Some(env.dlq_url.clone()),
            ..PollerOptions::default()
        },
    )
    .await
    .unwrap();
    let run = tokio::spawn(async move { p.run(std::future::pending()).await });
    let drain = || {
        poller::wait_drained(
            &env.clients.sqs,
            &env.queue_url,
            Duration::from_secs(3),
            Duration::from_secs(120),
            |_| {},
        )
    };
    assert!(drain().await.unwrap(), "the lead queue drained");
    assert_eq!(sandbox.leads().len(), 3, "3 leads: {:?}", sandbox.leads());
    let calls_before_revoke = sandbox.calls().tools_call;

    // Then the tenant revokes the token: the next event is parked, the integration errored.
    sandbox.revoke_token(&token);
    let mut late = event(&tenant, "tg:1", 2);
    late.lead.score = 99;
    late.lead.notes = Some("after the revocation".into());
    producer.send(&late).await.unwrap();
    assert!(drain().await.unwrap(), "the lead queue drained again");
    run.abort();

    let out = sync.output();
    let want = [
        ("EventsReceived", 8.0),
        ("LeadsCreated", 3.0),
        ("LeadsUpdated", 4.0),
        ("EventsDeadLettered", 1.0),
        ("EventsParked", 0.0),
        ("EventsRetried", 0.0),
        ("NotesAdded", 0.0),
        ("LeadLatencyMs", 7.0),
        ("BitrixCalls.ok", calls_before_revoke as f64),
    ];
    // Everything up to the revocation, then the revoked event on top.
    let mut all = Totals::default();
    all.add_lines(&out, Some(function::LEAD_SYNC));
    let mut first = Totals::default();
    first.add_lines(
        out_before_revoke(&out, &late.event_id),
        Some(function::LEAD_SYNC),
    );
    for (key, n) in want {
        assert_eq!(first.get(key), n, "{key} in {:?}", first.sums);
    }
    for (key, n) in [
        ("EventsReceived", 9.0),
        ("EventsParked", 1.0),
        ("IntegrationsErrored.token_rejected", 1.0),
        ("BitrixCalls.auth", 1.0),
        // The sandbox counts authenticated calls only: the refused one is on top.
        ("BitrixCalls", (sandbox.calls().tools_call + 1) as f64),
    ] {
        assert_eq!(all.get(key), n, "{key} in {:?}", all.sums);
    }
    assert!(
        all.max["LeadLatencyMs"] >= 24_000.0,
        "latency from occurred_at (24 s or more ago): {:?}",
        all.max
    );
    let mut c = Totals::default();
    c.add_lines(&connect.output(), Some(function::CONNECT));
    assert_eq!(c.get("ConnectResults.ok"), 1.0, "{:?}", c.sums);
    assert_eq!(c.get("ConnectResults.token_rejected"), 1.0, "{:?}", c.sums);

    // The searchable lines: one per synced event, its fields on the line itself.
    let synced: Vec<Value> = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "event synced")
        .collect();
    assert_eq!(synced.len(), 7, "{out}");
    for e in &events {
        let line = synced
            .iter()
            .find(|v| v["fields"]["event_id"] == e.event_id.as_str())
            .unwrap_or_else(|| panic!("no line for {}", e.event_id));
        let f = &line["fields"];
        assert_eq!(f["tenant_id"], tenant.as_str(), "{line}");
        assert_eq!(f["customer_id"], e.customer.id.as_str(), "{line}");
        assert!(f["lead_id"].as_i64().is_some_and(|id| id > 0), "{line}");
        assert!(
            matches!(f["outcome"].as_str(), Some("lead_created" | "lead_updated")),
            "{line}"
        );
        assert!(f["calls"].as_u64().is_some_and(|n| n >= 1), "{line}");
        assert!(f["latency_ms"].as_u64().is_some(), "{line}");
    }
    assert!(
        out.contains("\"failure_class\":\"invalid_event\""),
        "the invalid event's failure has its class: {out}"
    );
    let parked = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| {
            v["fields"]["event_id"] == late.event_id.as_str() && v["fields"]["outcome"] == "parked"
        })
        .unwrap_or_else(|| panic!("the revoked event's failure line: {out}"));
    assert_eq!(
        parked["fields"]["failure_class"], "token_rejected",
        "{parked}"
    );
    assert!(
        parked["fields"]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("rejected the token")),
        "a safe reason: {parked}"
    );
    for (name, text) in [("lead-sync", &out), ("bitrix-connect", &connect.output())] {
        for (what, value) in [
            ("the token", token.as_str()),
            ("the refused token", "not-a-token-the-portal-knows"),
            ("the signing secret", secret.as_str()),
        ] {
            assert!(!text.contains(value), "{name} printed {what}");
        }
    }
}
