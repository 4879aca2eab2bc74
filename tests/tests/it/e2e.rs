//! End to end through the real function binaries: `cargo lambda watch` serves the six functions
//! (debug builds), the in-process poller plays the SQS event source mapping, the sandbox plays the
//! portal, moto_server plays AWS. The HTTP API is called through watch's function URLs with a
//! locally signed HS256 JWT.
//!
//! cargo lambda watch is started ONCE per test binary (a static) on a free port, with one table,
//! key and queue pair; each test uses its own tenant and its own sandbox, so the tests can share
//! it. The first start compiles the functions (minutes on 2 cores), hence the 10-minute readiness
//! timeout. A small supervisor shell stops watch's process group when the test binary exits.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::events::{LeadEvent, LeadEventProducer};
use shared::tenant::TenantId;
use teleagent_tests::harness::{self, workspace_root};
use teleagent_tests::local::poller::{self, HttpInvoker, Poller, PollerOptions};
use teleagent_tests::local::run::{self as local_run, ApiClient};
use teleagent_tests::sandbox::{Sandbox, SandboxConfig};

/// The redrive setting of the e2e queue (and LEAD_QUEUE_MAX_RECEIVE_COUNT of the functions):
/// high enough that a rate-limit storm's retries are retried, not parked.
const MAX_RECEIVE: u32 = 10;

pub(crate) struct Stack {
    pub(crate) base: String,
    pub(crate) secret: String,
    pub(crate) queue_url: String,
    pub(crate) dlq_url: String,
    pub(crate) changes_url: String,
    pub(crate) watch_url: String,
}

pub(crate) fn stack() -> &'static Stack {
    static STACK: OnceLock<Result<Stack, String>> = OnceLock::new();
    let s = STACK.get_or_init(|| {
        // Own thread and runtime: the SDK clients used here must not outlive a test's runtime.
        std::thread::spawn(|| {
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?
                .block_on(start_stack())
        })
        .join()
        .map_err(|_| "stack start panicked".to_owned())?
    });
    match s {
        Ok(s) => s,
        Err(e) => panic!("e2e stack did not start: {e}"),
    }
}

async fn start_stack() -> Result<Stack, String> {
    let root = workspace_root();
    let sdk = harness::sdk_config().await;
    let clients = shared::aws::AwsClients::from_sdk_config(&sdk);
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let table = format!("e2e-{suffix}");
    harness::create_table(&clients.dynamodb, &table).await;
    let key_id = clients
        .kms
        .create_key()
        .send()
        .await
        .map_err(|e| format!("{e:?}"))?
        .key_metadata
        .ok_or("no key")?
        .key_id;
    let (queue_url, dlq_url) =
        poller::create_queue_pair(&clients.sqs, &format!("e2e-{suffix}"), MAX_RECEIVE, 30).await?;
    let changes_url = teleagent_tests::harness::create_queue(
        &clients.sqs,
        &format!("e2e-{suffix}-changes.fifo"),
        true,
    )
    .await?;
    let watch_url =
        teleagent_tests::harness::create_queue(&clients.sqs, &format!("e2e-{suffix}-watch"), false)
            .await?;
    let secret = format!("e2e-secret-{suffix}");
    let env: HashMap<String, String> = [
        ("AWS_ENDPOINT_URL", harness::moto_endpoint().to_owned()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ACCESS_KEY_ID", "testing".into()),
        ("AWS_SECRET_ACCESS_KEY", "testing".into()),
        ("TABLE_NAME", table),
        ("KMS_KEY_ID", key_id),
        ("LEAD_QUEUE_URL", queue_url.clone()),
        ("DEAD_LETTER_QUEUE_URL", dlq_url.clone()),
        ("LEAD_CHANGES_QUEUE_URL", changes_url.clone()),
        ("WATCH_QUEUE_URL", watch_url.clone()),
        ("LEAD_QUEUE_MAX_RECEIVE_COUNT", MAX_RECEIVE.to_string()),
        ("JWT_HS256_SECRET", secret.clone()),
        ("MCP_ALLOW_LOOPBACK", "true".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let port = local_run::free_port().map_err(|e| e.to_string())?;
    let env_file = root.join(format!(".local/watch-{port}.env"));
    std::fs::create_dir_all(root.join(".local")).map_err(|e| e.to_string())?;
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    std::fs::write(&env_file, text).map_err(|e| e.to_string())?;
    // The supervisor: runs watch in the background and, once this test process is gone, signals
    // its own process group (itself, watch, cargo and the function processes) and removes the env
    // file. Statics are never dropped, so this is what stops watch after the tests.
    let script = format!(
        "cargo lambda watch --invoke-address 127.0.0.1 --invoke-port {port} --env-file '{f}' \
         >'{log}' 2>&1 & \
         while kill -0 {pid} 2>/dev/null; do sleep 1; done; rm -f '{f}'; kill -TERM 0",
        f = env_file.display(),
        log = root.join(".local/e2e-watch.log").display(),
        pid = std::process::id(),
    );
    let path = format!(
        "{}:{}",
        root.join(".venv/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(&root)
        .env("PATH", path)
        .envs(&env)
        .stdin(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start cargo lambda watch: {e}"))?;
    let base = format!("http://127.0.0.1:{port}");
    ApiClient::new(&base)
        .wait_ready(Duration::from_secs(600), |f, t| {
            eprintln!("e2e: {f} ready after {:.0} s", t.as_secs_f64());
        })
        .await?;
    Ok(Stack {
        base,
        secret,
        queue_url,
        dlq_url,
        changes_url,
        watch_url,
    })
}

/// One test's view: its tenant, its sandbox, its poller (on the shared queue), its clients.
pub(crate) struct World {
    pub(crate) api: ApiClient,
    pub(crate) jwt: String,
    pub(crate) tenant: TenantId,
    pub(crate) sandbox: Sandbox,
    pub(crate) sqs: aws_sdk_sqs::Client,
    pub(crate) producer: LeadEventProducer,
    pub(crate) poller: tokio::task::JoinHandle<()>,
}

impl Drop for World {
    fn drop(&mut self) {
        self.poller.abort();
    }
}

pub(crate) async fn world(cfg: SandboxConfig) -> World {
    let st = stack();
    let sdk = harness::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let tenant = TenantId::parse(&format!(
        "e2e-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ))
    .unwrap();
    let jwt = local_run::sign_jwt(&st.secret, tenant.as_str(), Duration::from_secs(3600)).unwrap();
    let p = Poller::new(
        sqs.clone(),
        st.queue_url.clone(),
        HttpInvoker::new(&st.base, "lead-sync", Duration::from_secs(120)),
        PollerOptions::default(),
    )
    .await
    .unwrap();
    let poller = tokio::spawn(async move { p.run(std::future::pending()).await });
    World {
        api: ApiClient::new(&st.base),
        jwt,
        producer: LeadEventProducer::new(sqs.clone(), st.queue_url.clone()),
        tenant,
        sandbox: Sandbox::start(cfg).await,
        sqs,
        poller,
    }
}

impl World {
    pub(crate) async fn connect(&self, token: &str) -> (u16, Value) {
        self.api
            .call(
                "connect",
                Some(&self.jwt),
                Some(json!({"mcp_token": token, "mcp_url": self.sandbox.mcp_url()})),
            )
            .await
            .unwrap()
    }

    pub(crate) async fn status(&self) -> Value {
        let (code, v) = self
            .api
            .call("status", Some(&self.jwt), None)
            .await
            .unwrap();
        assert_eq!(code, 200, "status: {v}");
        v
    }

    pub(crate) fn event(
        &self,
        customer: &str,
        k: i64,
        score: u8,
        notes: &str,
        phone: &str,
    ) -> LeadEvent {
        let mut e = LeadEvent::new(self.tenant.clone(), customer, score);
        e.occurred_at = time::OffsetDateTime::now_utc() - time::Duration::minutes(30)
            + time::Duration::seconds(k);
        e.customer.name = Some(format!("Name {customer}"));
        e.customer.phone = Some(phone.to_owned());
        e.lead.notes = Some(notes.to_owned());
        e
    }

    /// Leads this tenant's connector made, by customer (ORIGIN_ID = "<tenant>:<customer>").
    pub(crate) fn leads_by_customer(&self) -> HashMap<String, Vec<Value>> {
        let prefix = format!("{}:", self.tenant);
        let mut m: HashMap<String, Vec<Value>> = HashMap::new();
        for l in self.sandbox.leads() {
            if let Some(c) = l["ORIGIN_ID"]
                .as_str()
                .and_then(|o| o.strip_prefix(&prefix))
            {
                m.entry(c.to_owned()).or_default().push(l.clone());
            }
        }
        m
    }

    /// Everything a person reads on a lead: COMMENTS plus its timeline comments.
    pub(crate) fn lead_text(&self, lead: &Value) -> String {
        let id: i64 = lead["ID"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let mut t = lead["COMMENTS"].as_str().unwrap_or_default().to_owned();
        for c in self.sandbox.timeline_comments(id) {
            t.push('\n');
            t.push_str(&c);
        }
        t
    }

    pub(crate) fn portal_text(&self) -> String {
        self.sandbox
            .leads()
            .iter()
            .map(|l| self.lead_text(l))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

pub(crate) async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

pub(crate) fn phone_count(lead: &Value) -> usize {
    lead["PHONE"].as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_events_reach_the_portal_through_the_real_functions() {
    let w = world(SandboxConfig::default()).await;
    let seeded = w.sandbox.seed_lead(json!({
        "TITLE": "Website form", "NAME": "Olim", "SOURCE_ID": "WEB",
        "PHONE": [{"VALUE": "+998 (97) 111-22-33", "VALUE_TYPE": "WORK"}],
    }));
    let (code, v) = w.connect(&w.sandbox.issue_token(true)).await;
    assert_eq!(code, 200, "connect: {v}");
    assert_eq!(v["success"], true);

    // 5 customers x 3 events in order; c3 is the portal's existing lead (phone spelled apart).
    let mut all = Vec::new();
    for c in 1..=5 {
        let phone = if c == 3 {
            "998971112233".to_owned()
        } else {
            format!("+99890{c:07}")
        };
        for k in 0..3 {
            let e = w.event(
                &format!("tg:{c}"),
                k,
                30 + 20 * k as u8,
                &format!("note c{c} #{k}"),
                &phone,
            );
            w.producer.send(&e).await.unwrap();
            all.push(e);
        }
    }
    // One event delivered twice (a producer retry after the dedup window) ...
    let again = &all[4];
    w.sqs
        .send_message()
        .queue_url(&stack().queue_url)
        .message_body(again.to_json())
        .message_group_id(again.group_id())
        .message_deduplication_id(format!("{}-again", again.event_id))
        .send()
        .await
        .unwrap();
    // ... and one invalid event, which must go to the dead-letter queue, not block the rest.
    let mut bad = all[0].to_value();
    let bad_id = uuid::Uuid::new_v4().to_string();
    bad["event_id"] = json!(bad_id);
    bad["customer"]["id"] = json!("tg:99");
    bad["lead"]["score"] = json!(150);
    w.sqs
        .send_message()
        .queue_url(&stack().queue_url)
        .message_body(bad.to_string())
        .message_group_id(format!("{}:tg:99", w.tenant))
        .message_deduplication_id(&bad_id)
        .send()
        .await
        .unwrap();

    wait_until(
        "every customer's last note in the portal",
        Duration::from_secs(300),
        || {
            let text = w.portal_text();
            (1..=5).all(|c| text.contains(&format!("note c{c} #2")))
        },
    )
    .await;
    let dlq = stack().dlq_url.clone();
    let mut dead = None;
    for _ in 0..60 {
        let all = poller::peek_all(&w.sqs, &dlq).await.unwrap();
        dead = all.into_iter().find(|p| p.body.contains(&bad_id));
        if dead.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dead = dead.expect("the invalid event is in the dead-letter queue");
    let reason = dead.reason.unwrap_or_default();
    assert!(
        reason.contains("score"),
        "the reason names the field: {reason:?}"
    );

    // Nothing lost, nothing doubled.
    let ours = w.leads_by_customer();
    assert_eq!(
        ours.len(),
        4,
        "leads created for the 4 new customers: {ours:?}"
    );
    for (c, leads) in &ours {
        assert_eq!(leads.len(), 1, "one lead for {c}");
        assert_eq!(
            phone_count(&leads[0]),
            1,
            "the phone is not re-sent on updates ({c})"
        );
    }
    assert_eq!(
        w.sandbox.leads().len(),
        5,
        "4 created + the existing one, no duplicate"
    );
    let existing = w.sandbox.lead(seeded).unwrap();
    let text = w.lead_text(&existing);
    assert!(
        text.contains("note c3 #2"),
        "c3's events went to the existing lead: {text}"
    );
    assert_eq!(
        phone_count(&existing),
        1,
        "the existing lead keeps its one phone"
    );
    let portal = w.portal_text();
    for e in &all {
        let note = e.lead.notes.as_deref().unwrap();
        assert_eq!(
            portal.matches(note).count(),
            1,
            "note {note:?} appears exactly once (the twice-delivered event had one effect)"
        );
    }
    let st = w.status().await;
    assert_eq!(st["connected"], true, "{st}");
    assert_eq!(st["sync_status"], "active", "{st}");
    assert!(st["last_sync_at"].is_string(), "{st}");
    assert_eq!(
        w.sandbox.calls().by_outcome.get("get_stream"),
        None,
        "no GET stream opened"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limit_storm_and_a_revoked_token_lose_nothing() {
    // A portal whose bucket is nearly full already (depth 3): most calls of a burst get 503.
    let w = world(SandboxConfig {
        bucket_depth: 3,
        ..SandboxConfig::default()
    })
    .await;
    let token = w.sandbox.issue_token(true);
    // connect's own calls would hit the small bucket too: let it through a normal bucket first.
    w.sandbox.set_config(|c| c.bucket_depth = 50);
    let (code, v) = w.connect(&token).await;
    assert_eq!(code, 200, "connect: {v}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    w.sandbox.set_config(|c| c.bucket_depth = 3);

    let customers = 4;
    for k in 0..2 {
        for c in 1..=customers {
            let e = w.event(
                &format!("tg:s{c}"),
                k,
                50,
                &format!("storm c{c} #{k}"),
                &format!("+99891{c:07}"),
            );
            w.producer.send(&e).await.unwrap();
        }
    }
    wait_until(
        "every storm event in the portal",
        Duration::from_secs(480),
        || {
            let text = w.portal_text();
            (1..=customers).all(|c| text.contains(&format!("storm c{c} #1")))
        },
    )
    .await;
    let rate_limited = w
        .sandbox
        .calls()
        .by_outcome
        .get("rate_limited")
        .copied()
        .unwrap_or(0);
    assert!(
        rate_limited > 0,
        "the storm really happened: {:?}",
        w.sandbox.calls()
    );
    let ours = w.leads_by_customer();
    assert_eq!(
        ours.len(),
        customers,
        "one lead per customer after the storm"
    );
    assert!(
        ours.values().all(|l| l.len() == 1),
        "no duplicate lead: {ours:?}"
    );

    // The token is revoked in Bitrix24 mid-stream: events are parked, the UI shows the form again.
    w.sandbox.set_config(|c| c.bucket_depth = 50);
    w.sandbox.revoke_token(&token);
    for c in 1..=3 {
        let e = w.event(
            &format!("tg:s{c}"),
            10,
            80,
            &format!("after revoke c{c}"),
            &format!("+99891{c:07}"),
        );
        w.producer.send(&e).await.unwrap();
    }
    let start = Instant::now();
    let status = loop {
        let st = w.status().await;
        if st["sync_status"] == "error" {
            break st;
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "status never turned to error: {st}"
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    assert_eq!(status["connected"], false, "{status}");
    assert!(status["last_error"].is_string(), "{status}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !w.portal_text().contains("after revoke"),
        "nothing reaches the portal with a revoked token"
    );

    // Reconnect with a new token: the parked events are replayed and land.
    let (code, v) = w.connect(&w.sandbox.issue_token(true)).await;
    assert_eq!(code, 200, "reconnect: {v}");
    wait_until(
        "the parked events in the portal",
        Duration::from_secs(240),
        || {
            let text = w.portal_text();
            (1..=3).all(|c| text.contains(&format!("after revoke c{c}")))
        },
    )
    .await;
    let st = w.status().await;
    assert_eq!(st["connected"], true, "{st}");
    assert_eq!(st["sync_status"], "active", "{st}");
    let ours = w.leads_by_customer();
    assert_eq!(ours.len(), customers, "still one lead per customer");
    assert!(
        ours.values().all(|l| l.len() == 1),
        "no duplicate lead after replay"
    );
}

/// The issue's end to end: a manager junks one lead and renames another in the portal; within
/// one watch round (the schedule's invocation of the real lead-watch, then its queue's mapping)
/// each change is on the outbound queue once, with old and new values; the connector's own
/// updates produce nothing there; the next inbound event leaves the manager's name alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_managers_changes_come_back_through_lead_watch() {
    use teleagent_tests::local::watch_round::{take_changes, watch_round};
    let st = stack();
    let w = world(SandboxConfig::default()).await;
    let (code, v) = w.connect(&w.sandbox.issue_token(true)).await;
    assert_eq!(code, 200, "connect: {v}");
    assert!(
        v.get("notice").is_none(),
        "the sandbox's list can be watched: {v}"
    );
    assert_eq!(w.status().await["last_watch_at"], Value::Null);
    let mut ann = w.event("tg:1", 0, 40, "first", "+998901110001");
    ann.lead.status = Some(shared::events::LeadStatus::Contacted);
    let bob = w.event("tg:2", 1, 40, "first", "+998901110002");
    w.producer.send(&ann).await.unwrap();
    w.producer.send(&bob).await.unwrap();
    wait_until("both leads", Duration::from_secs(60), || {
        w.leads_by_customer().len() == 2
    })
    .await;
    let mine = |changes: Vec<(Value, String)>| -> Vec<(Value, String)> {
        changes
            .into_iter()
            .filter(|(e, _)| e["tenant_id"] == w.tenant.as_str())
            .collect()
    };
    watch_round(&st.base, &w.sqs, &st.watch_url).await.unwrap();
    assert!(
        mine(take_changes(&w.sqs, &st.changes_url).await.unwrap()).is_empty(),
        "the connector's own leads are not changes"
    );

    let id = |c: &str| -> i64 {
        w.leads_by_customer()[c][0]["ID"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    w.sandbox
        .manager_edit(id("tg:1"), json!({"STATUS_ID": "JUNK"}))
        .unwrap();
    w.sandbox
        .manager_edit(id("tg:2"), json!({"NAME": "Bobur"}))
        .unwrap();
    watch_round(&st.base, &w.sqs, &st.watch_url).await.unwrap();
    let mut got = mine(take_changes(&w.sqs, &st.changes_url).await.unwrap());
    got.sort_by_key(|(e, _)| e["customer_id"].as_str().unwrap_or_default().to_owned());
    assert_eq!(got.len(), 2, "each change once: {got:?}");
    assert_eq!(
        got[0].1,
        format!("{}:tg:1", w.tenant),
        "one group per tenant and customer"
    );
    assert_eq!(
        got[0].0["changes"],
        json!({"status": {"from": "IN_PROCESS", "to": "JUNK", "stage": "lost"}}),
    );
    assert_eq!(
        got[1].0["changes"],
        json!({"name": {"from": "Name tg:2", "to": "Bobur"}}),
    );
    assert_ne!(
        w.status().await["last_watch_at"],
        Value::Null,
        "status shows the watch"
    );

    // The next inbound events: the manager's name and status stay, the score moves on, and
    // the connector's own update is not echoed back.
    let mut again = w.event("tg:2", 2, 90, "second", "+998901110002");
    again.customer.name = Some("Name tg:2".into());
    w.producer.send(&again).await.unwrap();
    let mut won = w.event("tg:1", 3, 95, "second", "+998901110001");
    won.lead.status = Some(shared::events::LeadStatus::Won);
    w.producer.send(&won).await.unwrap();
    wait_until("the second events synced", Duration::from_secs(60), || {
        let leads = w.leads_by_customer();
        leads["tg:1"][0]["COMMENTS"].as_str().is_some()
            && w.lead_text(&leads["tg:2"][0]).contains("second")
            && w.lead_text(&leads["tg:1"][0]).contains("second")
    })
    .await;
    let leads = w.leads_by_customer();
    assert_eq!(
        leads["tg:2"][0]["NAME"], "Bobur",
        "the manager's name stays"
    );
    assert_eq!(
        leads["tg:1"][0]["STATUS_ID"], "JUNK",
        "the manager's junk stays"
    );
    watch_round(&st.base, &w.sqs, &st.watch_url).await.unwrap();
    let after = mine(take_changes(&w.sqs, &st.changes_url).await.unwrap());
    assert!(
        after.is_empty(),
        "the connector's own updates produce nothing: {after:?}"
    );
}
