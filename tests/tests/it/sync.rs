//! The sync engine against moto (DynamoDB, KMS, SQS) and the sandbox portal, over real HTTP:
//! create then update (history kept, no second phone), idempotency, two consumers of one customer,
//! a phone written another way, a 503 storm, a revoked token with parking and replay, both tool
//! shapes, and a 200-event run that prints Bitrix24 calls and KMS calls per event.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the assertion

use std::time::{Duration, Instant};

use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde_json::{Value, json};
use shared::config::Config;
use shared::crm::live_check;
use shared::events::{Hotness, LeadEvent, LeadStatus};
use shared::mcp::{McpClient, McpClientOptions, UrlGuard};
use shared::secret::SecretToken;
use shared::store::{NewConnection, RateParams, Store, SyncStatus};
use shared::sync::{Outcome, SyncEngine};
use shared::tenant::TenantId;
use shared::vault::Vault;
use teleagent_tests::harness::TestEnv;
use teleagent_tests::sandbox::{Sandbox, SandboxConfig, ToolShape};

/// A portal that will not throttle us (our own budget is generous too), so tests are fast.
pub(crate) fn fast_portal(shape: ToolShape) -> SandboxConfig {
    SandboxConfig {
        shape,
        bucket_rate_per_sec: 1000.0,
        bucket_depth: 1000,
        has_telegram_source: true,
        has_qualified_status: true,
        has_teleagent_user_fields: true,
        ..SandboxConfig::default()
    }
}

pub(crate) struct Rig {
    pub(crate) env: TestEnv,
    pub(crate) cfg: Config,
    pub(crate) sandbox: Sandbox,
    pub(crate) store: Store,
    pub(crate) vault: Vault,
    pub(crate) mcp: McpClient,
}

impl Rig {
    /// lead-sync as its main builds it (no metrics written).
    fn processor(&self) -> shared::sync::batch::BatchProcessor<shared::sync::SyncEngine> {
        shared::sync::batch::lead_sync_with(
            &self.cfg,
            &self.env.clients,
            self.env.dlq_url.clone(),
            shared::metrics::Metrics::off(),
        )
        .unwrap()
    }

    pub(crate) async fn new(portal: SandboxConfig) -> Self {
        let env = TestEnv::new().await;
        let cfg = env.config_with(&[("MCP_ALLOW_LOOPBACK", "true")]);
        let sandbox = Sandbox::start(portal).await;
        let store = Store::new(env.clients.dynamodb.clone(), env.table.clone());
        let vault = Vault::new(env.clients.kms.clone(), Some(env.key_id.clone()));
        let mcp = McpClient::new(UrlGuard::from_config(&cfg), McpClientOptions::default()).unwrap();
        Self {
            env,
            cfg,
            sandbox,
            store,
            vault,
            mcp,
        }
    }

    /// A lead-sync container: its own engine (and caches) over the same table and key.
    pub(crate) fn engine(&self) -> SyncEngine {
        SyncEngine::new(
            &self.cfg,
            self.store.clone(),
            self.vault.clone(),
            self.mcp.clone(),
        )
    }

    /// What the connect handler does: live check, encrypt, store (then the caller may replay).
    pub(crate) async fn connect(&self, t: &TenantId, token: &str, rate: RateParams) {
        let url = UrlGuard::from_config(&self.cfg)
            .check(Some(&self.sandbox.mcp_url()))
            .unwrap();
        let secret = SecretToken::new(token.to_owned());
        let check = live_check(&self.mcp, &url, &secret, None, Duration::from_secs(20))
            .await
            .unwrap();
        let ciphertext = self.vault.encrypt(t, &secret).await.unwrap();
        let version = self
            .store
            .get_integration(t)
            .await
            .unwrap()
            .map_or(0, |i| i.version);
        self.store
            .save_connection(
                t,
                NewConnection {
                    token_ciphertext: ciphertext,
                    mcp_url: url.to_string(),
                    portal_id: check.portal_id,
                    binding: check.binding.to_value(),
                    portal_info: check.portal_info,
                    rate,
                    connected_at: time::OffsetDateTime::now_utc(),
                },
                version,
            )
            .await
            .unwrap();
    }

    pub(crate) fn leads_of(&self, t: &TenantId) -> Vec<Value> {
        let prefix = format!("{t}:");
        self.sandbox
            .leads()
            .into_iter()
            .filter(|l| {
                l["ORIGIN_ID"]
                    .as_str()
                    .is_some_and(|o| o.starts_with(&prefix))
            })
            .collect()
    }
}

pub(crate) fn fast_rate() -> RateParams {
    RateParams {
        per_sec: 1000.0,
        burst: 1000.0,
    }
}

pub(crate) fn tenant() -> TenantId {
    TenantId::parse(&uuid::Uuid::new_v4().to_string()).unwrap()
}

pub(crate) fn event(t: &TenantId, customer: &str, score: u8) -> LeadEvent {
    LeadEvent::new(t.clone(), customer, score)
}

/// An engine whose AWS requests are counted where they are answered: a pass-through proxy in
/// front of moto.
async fn counted_engine(rig: &Rig) -> (teleagent_tests::aws_faults::AwsFaultProxy, SyncEngine) {
    let proxy = teleagent_tests::aws_faults::AwsFaultProxy::start(
        teleagent_tests::harness::moto_endpoint(),
    )
    .await
    .unwrap();
    let counted = shared::aws::AwsClients::from_sdk_config(
        &teleagent_tests::harness::sdk_config_at(&proxy.endpoint()).await,
    );
    let engine = SyncEngine::new(
        &rig.cfg,
        Store::new(counted.dynamodb.clone(), rig.env.table.clone()),
        Vault::new(counted.kms.clone(), Some(rig.env.key_id.clone())),
        rig.mcp.clone(),
    );
    (proxy, engine)
}

/// The events as one SQS batch of lead-sync's mapping (message id = event id, group as the
/// producer sets it), for tests that drive the batch processor without a queue.
fn sqs_batch(events: &[LeadEvent]) -> aws_lambda_events::event::sqs::SqsEvent {
    let mut ev = aws_lambda_events::event::sqs::SqsEvent::default();
    ev.records = events
        .iter()
        .map(|e| {
            let mut r = aws_lambda_events::event::sqs::SqsMessage::default();
            r.message_id = Some(e.event_id.clone());
            r.body = Some(e.to_json());
            r.attributes.insert("MessageGroupId".into(), e.group_id());
            r
        })
        .collect();
    ev
}

pub(crate) async fn handle(engine: &SyncEngine, ev: &LeadEvent) -> Outcome {
    engine.handle(ev, &ev.to_json(), 1, None).await
}

fn phones(lead: &Value) -> Vec<String> {
    lead["PHONE"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|p| p["VALUE"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn new_customer_then_updates_for_both_tool_shapes() {
    for shape in [ToolShape::LeadTools, ToolShape::RestMethod] {
        let why = format!("{shape:?}");
        let rig = Rig::new(fast_portal(shape)).await;
        let t = tenant();
        let token = rig.sandbox.issue_token(false);
        rig.connect(&t, &token, fast_rate()).await;
        let engine = rig.engine();
        rig.sandbox.reset_calls();

        let mut first = event(&t, "tg:1001", 40);
        first.customer.name = Some("Ann".into());
        first.customer.phone = Some("+998901234567".into());
        first.lead.status = Some(LeadStatus::New);
        first.lead.hotness = Some(Hotness::Warm);
        first.lead.notes = Some("asked about delivery".into());
        first.lead.fields_collected.product = Some("Sofa".into());
        assert_eq!(handle(&engine, &first).await, Outcome::Done, "{why}");
        let leads = rig.leads_of(&t);
        assert_eq!(leads.len(), 1, "{why}: one lead");
        let lead = &leads[0];
        let id: i64 = lead["ID"].as_str().unwrap().parse().unwrap();
        assert_eq!(lead["TITLE"], "Telegram: Ann", "{why}");
        assert_eq!(lead["NAME"], "Ann", "{why}");
        assert_eq!(lead["SOURCE_ID"], "TELEGRAM", "{why}");
        assert_eq!(lead["STATUS_ID"], "NEW", "{why}");
        assert_eq!(lead["ORIGINATOR_ID"], "teleagent", "{why}");
        assert_eq!(lead["ORIGIN_ID"], format!("{t}:tg:1001"), "{why}");
        assert_eq!(lead["UF_CRM_TELEAGENT_HOTNESS"], "warm", "{why}");
        assert_eq!(phones(lead), vec!["+998901234567".to_owned()], "{why}");
        let comments = lead["COMMENTS"].as_str().unwrap();
        assert!(
            comments.contains("Product: Sofa") && comments.contains("asked about delivery"),
            "{why}: {comments}"
        );
        assert_eq!(
            rig.sandbox.calls().tools_call,
            2,
            "{why}: phone search + create"
        );

        let mut second = event(&t, "tg:1001", 85);
        second.customer.phone = Some("998901234567".into());
        second.lead.status = Some(LeadStatus::Qualified);
        second.lead.hotness = Some(Hotness::Hot);
        second.lead.notes = Some("ready to pay on Friday".into());
        rig.sandbox.reset_calls();
        assert_eq!(handle(&engine, &second).await, Outcome::Done, "{why}");
        assert_eq!(
            rig.sandbox.calls().tools_call,
            3,
            "{why}: a read (the status is the manager's once the lead exists), one update, one comment"
        );
        let lead = rig.sandbox.lead(id).unwrap();
        assert_eq!(rig.leads_of(&t).len(), 1, "{why}: still one lead");
        assert_eq!(lead["STATUS_ID"], "UC_QUALIFIED", "{why}");
        assert_eq!(lead["UF_CRM_TELEAGENT_HOTNESS"], "hot", "{why}");
        assert_eq!(phones(&lead).len(), 1, "{why}: no second phone");
        assert!(
            lead["COMMENTS"]
                .as_str()
                .unwrap()
                .contains("asked about delivery"),
            "{why}: old notes kept"
        );
        let timeline = rig.sandbox.timeline_comments(id);
        assert_eq!(timeline.len(), 1, "{why}: {timeline:?}");
        assert!(timeline[0].contains("ready to pay on Friday"), "{why}");

        // The same event again (redelivery): acknowledged, nothing sent.
        rig.sandbox.reset_calls();
        assert_eq!(handle(&engine, &second).await, Outcome::Done, "{why}");
        assert_eq!(
            rig.sandbox.calls().tools_call,
            0,
            "{why}: duplicate has no effect"
        );
        assert_eq!(rig.sandbox.timeline_comments(id).len(), 1, "{why}");

        // An older event arriving late adds its notes but changes no field.
        let mut late = event(&t, "tg:1001", 10);
        late.occurred_at = first.occurred_at - time::Duration::minutes(1);
        late.lead.status = Some(LeadStatus::New);
        late.lead.notes = Some("early remark".into());
        assert_eq!(handle(&engine, &late).await, Outcome::Done, "{why}");
        let lead = rig.sandbox.lead(id).unwrap();
        assert_eq!(
            lead["STATUS_ID"], "UC_QUALIFIED",
            "{why}: status not moved back"
        );
        assert_eq!(
            rig.sandbox.timeline_comments(id).len(),
            2,
            "{why}: late notes added"
        );

        // The done record is the event's audit line: what the sync did, in one write.
        for (ev, kind) in [(&first, "lead_created"), (&second, "lead_updated")] {
            let item = rig
                .env
                .clients
                .dynamodb
                .get_item()
                .table_name(&rig.env.table)
                .key(
                    "pk",
                    aws_sdk_dynamodb::types::AttributeValue::S(t.partition_key()),
                )
                .key(
                    "sk",
                    aws_sdk_dynamodb::types::AttributeValue::S(format!("EVENT#{}", ev.event_id)),
                )
                .send()
                .await
                .unwrap()
                .item
                .unwrap();
            let outcome = item["outcome"].as_s().unwrap();
            assert!(outcome.contains(kind), "{why}: {outcome}");
        }
        assert!(
            rig.store
                .get_integration(&t)
                .await
                .unwrap()
                .unwrap()
                .last_sync_at
                .is_some()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_tenant_that_never_connected_is_skipped() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    let ev = event(&t, "tg:5", 50);
    assert!(matches!(
        handle(&rig.engine(), &ev).await,
        Outcome::Skipped { .. }
    ));
    assert!(
        rig.store.list_parked(&t).await.unwrap().is_empty(),
        "not kept"
    );
    assert_eq!(rig.sandbox.calls().total_http, 0);
    let audit = rig.store.list_audit(&t).await.unwrap();
    assert_eq!(audit.len(), 1);
    assert_eq!(audit[0].kind, "event_skipped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_consumers_of_one_customer_make_one_lead() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    let token = rig.sandbox.issue_token(false);
    rig.connect(&t, &token, fast_rate()).await;
    // No phone: only the create lock can keep the two creates apart.
    for round in 0..3 {
        let customer = format!("tg:race{round}");
        let (a, b) = (rig.engine(), rig.engine());
        let (e1, e2) = (event(&t, &customer, 30), event(&t, &customer, 60));
        let (o1, o2) = tokio::join!(handle(&a, &e1), handle(&b, &e2));
        for (engine, ev, mut o) in [(&a, &e1, o1), (&b, &e2, o2)] {
            for _ in 0..20 {
                match o {
                    Outcome::Done => break,
                    Outcome::Retry { .. } => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        o = handle(engine, ev).await;
                    }
                    other => panic!("round {round}: unexpected {other:?}"),
                }
            }
            assert_eq!(o, Outcome::Done, "round {round}");
        }
        let mine: Vec<Value> = rig
            .leads_of(&t)
            .into_iter()
            .filter(|l| l["ORIGIN_ID"] == format!("{t}:{customer}"))
            .collect();
        assert_eq!(mine.len(), 1, "round {round}: exactly one lead: {mine:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_customer_already_in_the_portal_is_found_by_another_spelling() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    let token = rig.sandbox.issue_token(false);
    rig.connect(&t, &token, fast_rate()).await;
    let existing = rig.sandbox.seed_lead(json!({
        "TITLE": "Website form", "NAME": "Dilnoza (manager typed)", "STATUS_ID": "IN_PROCESS",
        "PHONE": [{"VALUE": "+998 (90) 123-45-67", "VALUE_TYPE": "WORK"}],
    }));
    let engine = rig.engine();
    let mut ev = event(&t, "tg:777", 70);
    ev.customer.name = Some("Dilnoza".into());
    ev.customer.phone = Some("998901234567".into());
    ev.lead.status = Some(LeadStatus::New);
    ev.lead.hotness = Some(Hotness::Hot);
    ev.lead.fields_collected.budget = Some("1000 USD".into());
    assert_eq!(handle(&engine, &ev).await, Outcome::Done);
    let all = rig.sandbox.leads();
    assert_eq!(all.len(), 1, "found, not duplicated: {all:?}");
    let lead = rig.sandbox.lead(existing).unwrap();
    assert_eq!(
        lead["NAME"], "Dilnoza (manager typed)",
        "never NAME on a lead made by someone else"
    );
    assert_eq!(lead["TITLE"], "Website form");
    assert_eq!(
        lead["STATUS_ID"], "IN_PROCESS",
        "NEW is not forward of IN_PROCESS"
    );
    assert_eq!(lead["UF_CRM_TELEAGENT_HOTNESS"], "hot");
    assert_eq!(phones(&lead).len(), 1);
    let timeline = rig.sandbox.timeline_comments(existing);
    assert!(
        timeline.iter().any(|c| c.contains("Budget: 1000 USD")),
        "{timeline:?}"
    );
    // The link now leads the next event straight to it.
    let mut next = event(&t, "tg:777", 90);
    next.lead.status = Some(LeadStatus::Won);
    rig.sandbox.reset_calls();
    assert_eq!(handle(&engine, &next).await, Outcome::Done);
    assert_eq!(
        rig.sandbox.calls().tools_call,
        2,
        "a status change reads the lead first, then updates it"
    );
    assert_eq!(
        rig.sandbox.lead(existing).unwrap()["STATUS_ID"],
        "CONVERTED"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_503_storm_is_retried_until_every_event_lands() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    let token = rig.sandbox.issue_token(false);
    rig.connect(&t, &token, fast_rate()).await;
    // Drains one call a second, far slower than the unpaced engine calls (the tenant's own
    // budget is set high here), so refusals are certain whatever the machine's speed.
    rig.sandbox.set_config(|c| {
        c.bucket_depth = 3;
        c.bucket_rate_per_sec = 1.0;
    });
    let engine = rig.engine();
    let mut pending: Vec<LeadEvent> = (0..6)
        .map(|i: u32| {
            let mut e = event(&t, &format!("tg:storm{i}"), 50);
            if i.is_multiple_of(2) {
                e.customer.phone = Some(format!("+99890555000{i}"));
            }
            e
        })
        .collect();
    let mut retries = 0;
    let started = Instant::now();
    // Plays a consumer that respects the retry delay: a round stops at the first Retry, waits
    // until the portal's bucket has drained, and goes on in the same order.
    while !pending.is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "storm did not settle"
        );
        let mut next = Vec::new();
        let mut blocked = false;
        for e in pending {
            if blocked {
                next.push(e);
                continue;
            }
            match handle(&engine, &e).await {
                Outcome::Done => {}
                Outcome::Retry { delay, .. } => {
                    assert!(delay >= Duration::from_secs(1), "{delay:?}");
                    retries += 1;
                    blocked = true;
                    next.push(e);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        pending = next;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_secs(3)).await;
        }
    }
    let calls = rig.sandbox.calls();
    println!(
        "503 storm: {retries} retry outcomes, {:?}",
        calls.by_outcome
    );
    assert!(retries > 0, "the small bucket must have refused some calls");
    assert!(calls.by_outcome.get("rate_limited").copied().unwrap_or(0) > 0);
    let mut origins: Vec<String> = rig
        .leads_of(&t)
        .iter()
        .map(|l| l["ORIGIN_ID"].as_str().unwrap().to_owned())
        .collect();
    origins.sort();
    let want: Vec<String> = (0..6).map(|i| format!("{t}:tg:storm{i}")).collect();
    assert_eq!(origins, want, "every event landed exactly once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_parks_events_until_reconnect_and_replay() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    let old = rig.sandbox.issue_token(false);
    rig.connect(&t, &old, fast_rate()).await;
    let engine = rig.engine();
    let first = event(&t, "tg:42", 20);
    assert_eq!(handle(&engine, &first).await, Outcome::Done);

    rig.sandbox.revoke_token(&old);
    let mut second = event(&t, "tg:42", 55);
    second.lead.status = Some(LeadStatus::Contacted);
    let mut third = event(&t, "tg:42", 80);
    third.lead.status = Some(LeadStatus::Qualified);
    third.occurred_at = second.occurred_at + time::Duration::seconds(1);
    third.lead.notes = Some("after the outage".into());
    for ev in [&second, &third] {
        let o = handle(&engine, ev).await;
        assert!(matches!(o, Outcome::Parked { .. }), "{o:?}");
    }
    let integ = rig.store.get_integration(&t).await.unwrap().unwrap();
    assert_eq!(integ.sync_status, Some(SyncStatus::Error));
    let err = integ.last_error.unwrap();
    assert!(
        err.contains("rejected the token") && !err.contains(&old),
        "{err}"
    );
    assert_eq!(rig.store.list_parked(&t).await.unwrap().len(), 2);

    // Reconnect with a new token, then replay into the real FIFO queue.
    let new = rig.sandbox.issue_token(false);
    rig.connect(&t, &new, fast_rate()).await;
    let replayed = shared::sync::replay::replay_parked(
        &rig.store,
        &rig.env.clients.sqs,
        &rig.env.queue_url,
        &t,
    )
    .await
    .unwrap();
    assert_eq!((replayed.sent, replayed.kept, replayed.left), (2, 0, 0));
    assert!(rig.store.list_parked(&t).await.unwrap().is_empty());
    let mut received = Vec::new();
    for _ in 0..5 {
        let out = rig
            .env
            .clients
            .sqs
            .receive_message()
            .queue_url(&rig.env.queue_url)
            .max_number_of_messages(10)
            .message_system_attribute_names(MessageSystemAttributeName::All)
            .send()
            .await
            .unwrap();
        for m in out.messages.unwrap_or_default() {
            let group =
                m.attributes.as_ref().unwrap()[&MessageSystemAttributeName::MessageGroupId].clone();
            assert_eq!(group, format!("{t}:tg:42"));
            let body = m.body.unwrap();
            let ev = LeadEvent::parse(&body).unwrap();
            assert_eq!(engine.handle(&ev, &body, 1, None).await, Outcome::Done);
            rig.env
                .clients
                .sqs
                .delete_message()
                .queue_url(&rig.env.queue_url)
                .receipt_handle(m.receipt_handle.unwrap())
                .send()
                .await
                .unwrap();
            received.push(ev.event_id);
        }
        if received.len() == 2 {
            break;
        }
    }
    assert_eq!(
        received,
        vec![second.event_id.clone(), third.event_id.clone()],
        "occurred_at order"
    );
    let leads = rig.leads_of(&t);
    assert_eq!(leads.len(), 1);
    assert_eq!(leads[0]["STATUS_ID"], "UC_QUALIFIED");
    let id: i64 = leads[0]["ID"].as_str().unwrap().parse().unwrap();
    assert!(
        rig.sandbox
            .timeline_comments(id)
            .iter()
            .any(|c| c.contains("after the outage"))
    );
    assert_eq!(
        rig.store
            .get_integration(&t)
            .await
            .unwrap()
            .unwrap()
            .sync_status,
        Some(SyncStatus::Active)
    );
}

/// The benchmark stream in small: 4 tenants x 10 customers x 5 events, one customer
/// in ten already in the portal under another spelling of their phone; of the later events half
/// change score, hotness or status and a fifth carry new notes; one in fifty is delivered twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_200_event_stream_stays_near_one_call_per_event() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let (proxy, engine) = counted_engine(&rig).await;
    let tenants: Vec<TenantId> = (0..4).map(|_| tenant()).collect();
    for (ti, t) in tenants.iter().enumerate() {
        let token = rig.sandbox.issue_token(false);
        rig.connect(t, &token, fast_rate()).await;
        for c in 0..10 {
            if c == 3 {
                rig.sandbox.seed_lead(json!({
                    "TITLE": "Call", "STATUS_ID": "NEW",
                    "PHONE": [{"VALUE": format!("+998 (90) 1{ti}{c}-45-67"), "VALUE_TYPE": "WORK"}],
                }));
            }
        }
    }
    rig.sandbox.reset_calls();
    proxy.reset_stats();
    let started = Instant::now();
    let mut handled = 0u64;
    let runs = tenants.iter().enumerate().map(|(ti, t)| {
        let engine = engine.clone();
        async move {
            let mut n = 0u64;
            let mut k = 0usize;
            for c in 0..10 {
                let customer = format!("tg:{ti}{c}");
                let mut score = 30u8;
                let mut status = LeadStatus::New;
                for step in 0..5 {
                    k += 1;
                    let mut ev = event(t, &customer, score);
                    ev.customer.name = Some(format!("Customer {ti}{c}"));
                    ev.customer.phone = Some(format!("99890 1{ti}{c} 45 67"));
                    if step > 0 && k.is_multiple_of(2) {
                        score += 10;
                        status = match status {
                            LeadStatus::New => LeadStatus::Contacted,
                            _ => LeadStatus::Qualified,
                        };
                    }
                    ev.lead.score = score;
                    ev.lead.status = Some(status);
                    if step == 0 || k.is_multiple_of(5) {
                        ev.lead.notes = Some(format!("note {k}"));
                    }
                    let deliveries = if k.is_multiple_of(50) { 2 } else { 1 };
                    for _ in 0..deliveries {
                        let o = handle(&engine, &ev).await;
                        assert_eq!(o, Outcome::Done, "{customer} step {step}");
                    }
                    n += 1;
                }
            }
            n
        }
    });
    for n in futures::future::join_all(runs).await {
        handled += n;
    }
    let calls = rig.sandbox.calls();
    let aws = proxy.stats();
    let kms = aws.operation("kms", "Decrypt").requests;
    let ddb: u64 = aws
        .by_operation
        .iter()
        .filter(|(k, _)| k.starts_with("dynamodb/"))
        .map(|(_, o)| o.requests)
        .sum();
    let per_event = calls.tools_call as f64 / handled as f64;
    println!(
        "stream: {handled} events, 4 tenants x 10 customers x 5 events, 4 customers already in the portal, 4 duplicate deliveries, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!(
        "Bitrix24 tools/call per event: {per_event:.2} ({} calls; by method {:?})",
        calls.tools_call, calls.by_method
    );
    println!(
        "MCP handshake: {} initialize, {} tools/list",
        calls.initialize, calls.tools_list
    );
    println!(
        "KMS calls per event: {:.3} ({kms} for {} tenants); DynamoDB requests per event: {:.1}",
        kms as f64 / handled as f64,
        tenants.len(),
        ddb as f64 / handled as f64
    );
    assert_eq!(handled, 200);
    let leads: usize = tenants.iter().map(|t| rig.leads_of(t).len()).sum();
    assert_eq!(
        leads + 4,
        rig.sandbox.leads().len(),
        "the 4 seeded leads were linked, not duplicated"
    );
    assert_eq!(rig.sandbox.leads().len(), 40, "one lead per customer");
    // Every other later event here changes the status, which is the manager's field once the
    // lead exists: read, then update (two calls). Score and hotness are the connector's own
    // user fields (one call, no read).
    assert!(
        per_event <= 1.5,
        "tools/call per event {per_event:.2} > 1.5"
    );
    assert!(
        kms <= tenants.len() as u64,
        "KMS calls {kms} > 1 per tenant"
    );
    let ddb_per_event = ddb as f64 / handled as f64;
    assert!(
        ddb_per_event <= 7.0,
        "DynamoDB requests per event {ddb_per_event:.1}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn changed_tools_are_rediscovered_once_and_the_event_lands() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    let token = rig.sandbox.issue_token(false);
    rig.connect(&t, &token, fast_rate()).await;
    let engine = rig.engine();
    assert_eq!(handle(&engine, &event(&t, "tg:9", 10)).await, Outcome::Done);
    let before = rig.store.get_integration(&t).await.unwrap().unwrap();

    // The server now offers one generic REST tool instead of the per-operation tools.
    rig.sandbox.set_config(|c| c.shape = ToolShape::RestMethod);
    let mut ev = event(&t, "tg:9", 95);
    ev.lead.status = Some(LeadStatus::Won);
    assert_eq!(handle(&engine, &ev).await, Outcome::Done);
    let lead = &rig.leads_of(&t)[0];
    assert_eq!(lead["STATUS_ID"], "CONVERTED");
    let after = rig.store.get_integration(&t).await.unwrap().unwrap();
    assert_eq!(after.version, before.version + 1, "binding stored once");
    assert_eq!(after.sync_status, Some(SyncStatus::Active));
    let binding = shared::crm::Binding::from_value(after.binding.as_ref().unwrap()).unwrap();
    assert_eq!(
        binding
            .get(shared::crm::Operation::UpdateLead)
            .unwrap()
            .tool,
        "bitrix24_call_method"
    );
    assert!(binding.caps.has_teleagent_user_fields, "capabilities kept");
    let kinds: Vec<String> = rig
        .store
        .list_audit(&t)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.kind)
        .collect();
    assert!(
        kinds.contains(&"binding_rediscovered".to_owned()),
        "{kinds:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn data_the_portal_refuses_is_a_dead_letter_and_can_be_retried() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    let token = rig.sandbox.issue_token(false);
    rig.connect(&t, &token, fast_rate()).await;
    // The TELEGRAM source read at connect was deleted since: crm.lead.add refuses SOURCE_ID.
    rig.sandbox.set_config(|c| c.has_telegram_source = false);
    let engine = rig.engine();
    let ev = event(&t, "tg:dl", 50);
    let o = handle(&engine, &ev).await;
    assert!(
        matches!(&o, Outcome::DeadLetter { reason } if reason.contains("refused")),
        "{o:?}"
    );
    assert!(rig.leads_of(&t).is_empty());
    assert!(
        rig.store.list_parked(&t).await.unwrap().is_empty(),
        "dead letters are not parked"
    );
    // The claim was released: once the portal is fixed, a redrive of the same event lands.
    rig.sandbox.set_config(|c| c.has_telegram_source = true);
    assert_eq!(handle(&engine, &ev).await, Outcome::Done);
    assert_eq!(rig.leads_of(&t).len(), 1);
}

/// A disabled KMS key (or access denied) is the operator's mistake: the event is retried with
/// back-off and the tenant stays `active` (it used to go to `error`, park its events and be asked
/// to reconnect). moto does not enforce a disabled key on Decrypt, so the fault proxy answers for
/// KMS as AWS does.
#[tokio::test]
async fn a_disabled_kms_key_leaves_the_tenant_active() {
    use teleagent_tests::aws_faults::{AwsFaultProxy, FaultKind, FaultPlan, FaultRule};
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    rig.connect(&t, &rig.sandbox.issue_token(false), fast_rate())
        .await;
    let proxy = AwsFaultProxy::start(teleagent_tests::harness::moto_endpoint())
        .await
        .unwrap();
    let sdk = teleagent_tests::harness::sdk_config_at(&proxy.endpoint()).await;
    let kms = aws_sdk_kms::Client::new(&sdk);
    let engine = SyncEngine::new(
        &rig.cfg,
        rig.store.clone(),
        Vault::new(kms, Some(rig.env.key_id.clone())),
        rig.mcp.clone(),
    );
    for fault in [
        FaultKind::KmsDisabled,
        FaultKind::AccessDenied,
        FaultKind::KmsInvalidState,
    ] {
        proxy.set_plan(FaultPlan::none().rule(FaultRule::new("kms", "Decrypt", fault, 1.0)));
        let o = handle(&engine, &event(&t, "tg:kms", 40)).await;
        assert!(matches!(o, Outcome::Retry { .. }), "{fault:?}: {o:?}");
        let integ = rig.store.get_integration(&t).await.unwrap().unwrap();
        assert_eq!(
            integ.sync_status,
            Some(SyncStatus::Active),
            "{fault:?}: {:?}",
            integ.last_error
        );
        assert!(
            rig.store.list_parked(&t).await.unwrap().is_empty(),
            "{fault:?}"
        );
    }
    // The operator fixes the key: the retry lands.
    proxy.set_plan(FaultPlan::none());
    assert_eq!(
        handle(&engine, &event(&t, "tg:kms", 41)).await,
        Outcome::Done
    );
}

/// The replay race: an event parked again between a replay's send and its delete keeps the new
/// copy (it used to be deleted unconditionally, and the event was lost).
#[tokio::test]
async fn a_replay_never_deletes_a_copy_parked_after_its_send() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    rig.connect(&t, &rig.sandbox.issue_token(false), fast_rate())
        .await;
    let at = time::OffsetDateTime::now_utc();
    rig.store
        .park_event(&t, at, "ev-1", "{}", "first")
        .await
        .unwrap();
    let sent = rig.store.list_parked(&t).await.unwrap();
    // lead-sync parks the same event again while the replay's send is under way
    rig.store
        .park_event(&t, at, "ev-1", "{}", "again")
        .await
        .unwrap();
    let err = rig.store.delete_parked(&t, &sent[0]).await.unwrap_err();
    assert!(
        matches!(err, shared::store::StoreError::Conflict),
        "{err:?}"
    );
    let left = rig.store.list_parked(&t).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].reason, "again", "the newer copy is kept");
    assert_eq!(
        rig.store
            .get_integration(&t)
            .await
            .unwrap()
            .unwrap()
            .parked_count,
        2
    );
    rig.store.delete_parked(&t, &left[0]).await.unwrap();
    assert!(rig.store.list_parked(&t).await.unwrap().is_empty());
}

/// Parked while healthy, replayed without anyone pressing a button: the tenant's next
/// successful sync asks for the replay, and lead-sync's batch carries it out.
#[tokio::test]
async fn parked_events_come_back_after_the_next_successful_sync() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    rig.connect(&t, &rig.sandbox.issue_token(false), fast_rate())
        .await;
    let processor = rig.processor();
    let engine = processor.handler();
    // The portal fails until the last receive: the event is parked, the integration stays active.
    rig.sandbox.set_faults(teleagent_tests::sandbox::Faults {
        error_5xx_ratio: 1.0,
        ..Default::default()
    });
    let parked = event(&t, "tg:p", 30);
    let o = engine
        .handle(
            &parked,
            &parked.to_json(),
            teleagent_tests::harness::TEST_MAX_RECEIVE_COUNT - 1,
            None,
        )
        .await;
    assert!(matches!(o, Outcome::Parked { .. }), "{o:?}");
    let integ = rig.store.get_integration(&t).await.unwrap().unwrap();
    assert_eq!(
        (integ.sync_status, integ.parked_count),
        (Some(SyncStatus::Active), 1)
    );
    // The portal is back; another customer's event syncs and asks for the replay.
    rig.sandbox
        .set_faults(teleagent_tests::sandbox::Faults::default());
    assert_eq!(handle(engine, &event(&t, "tg:q", 50)).await, Outcome::Done);
    // Two requests: the timer set when the event was parked on a working integration (due in
    // five minutes: it waits), and the successful sync's (now).
    let requests =
        teleagent_tests::harness::receive_as_event(&rig.env.clients.sqs, &rig.env.queue_url).await;
    let mut groups: Vec<String> = requests
        .records
        .iter()
        .map(|r| r.attributes["MessageGroupId"].clone())
        .collect();
    groups.sort();
    assert_eq!(
        groups,
        [format!("{t}:~replay"), format!("{t}:~replay-later")]
    );
    let timer = requests
        .records
        .iter()
        .find(|r| r.attributes["MessageGroupId"].ends_with("later"))
        .and_then(|r| r.message_id.clone())
        .unwrap();
    let answer = processor.process(requests, None).await;
    let failed: Vec<String> = answer
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(failed, [timer], "the timer is not due yet");
    assert!(rig.store.list_parked(&t).await.unwrap().is_empty());
    let replayed =
        teleagent_tests::harness::receive_as_event(&rig.env.clients.sqs, &rig.env.queue_url).await;
    assert_eq!(replayed.records.len(), 1);
    assert!(
        processor
            .process(replayed, None)
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(rig.leads_of(&t).len(), 2, "the parked event's lead landed");
}

/// Sends an event to the dead-letter queue the way lead-sync does (the `reason` attribute).
async fn dead_letter_like_lead_sync(
    sqs: &aws_sdk_sqs::Client,
    dlq: &str,
    ev: &LeadEvent,
    reason: &str,
) {
    let reason = aws_sdk_sqs::types::MessageAttributeValue::builder()
        .data_type("String")
        .string_value(reason)
        .build()
        .unwrap();
    sqs.send_message()
        .queue_url(dlq)
        .message_body(ev.to_json())
        .message_group_id(ev.group_id())
        .message_deduplication_id(uuid::Uuid::new_v4().simple().to_string())
        .message_attributes("reason", reason)
        .send()
        .await
        .unwrap();
}

/// The operator's re-drive: dead-lettered events go back to the lead queue (filtered by tenant
/// and reason, a dry run first), each deleted from the dead-letter queue only after its send;
/// once the cause is fixed they land exactly once, also when one is re-driven twice.
#[tokio::test]
async fn bitrix_admin_redrives_dead_letters_once_the_cause_is_fixed() {
    use shared::admin::{RedriveFilter, redrive};
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let (t, other) = (tenant(), tenant());
    let sqs = &rig.env.clients.sqs;
    let dlq = rig.env.dlq_url.clone();
    // What lead-sync dead-lettered while the tenant's portal refused the data, plus another
    // tenant's event that must stay.
    let events: Vec<LeadEvent> = (0..3).map(|i| event(&t, &format!("tg:r{i}"), 40)).collect();
    for ev in &events {
        dead_letter_like_lead_sync(sqs, &dlq, ev, "Bitrix24 refused the operation (ERROR_CORE)")
            .await;
    }
    // the same event dead-lettered twice
    dead_letter_like_lead_sync(
        sqs,
        &dlq,
        &events[0],
        "Bitrix24 refused the operation (ERROR_CORE)",
    )
    .await;
    dead_letter_like_lead_sync(
        sqs,
        &dlq,
        &event(&other, "tg:x", 10),
        "invalid lead event: lead.score",
    )
    .await;

    let filter = RedriveFilter {
        tenant: Some(t.clone()),
        reason: Some("refused".into()),
        dry_run: true,
    };
    let dry = redrive(sqs, &rig.env.dlq_url, &rig.env.queue_url, &filter)
        .await
        .unwrap();
    assert_eq!(
        (dry.moved, dry.skipped, dry.failed),
        (4, 1, 0),
        "{:?}",
        dry.lines
    );

    // The cause is fixed (the tenant connects); the real re-drive moves the four.
    rig.connect(&t, &rig.sandbox.issue_token(false), fast_rate())
        .await;
    let real = RedriveFilter {
        dry_run: false,
        ..filter
    };
    let done = redrive(sqs, &rig.env.dlq_url, &rig.env.queue_url, &real)
        .await
        .unwrap();
    assert_eq!(
        (done.moved, done.skipped, done.failed),
        (4, 1, 0),
        "{:?}",
        done.lines
    );
    let processor = rig.processor();
    let mut handled = 0;
    for _ in 0..5 {
        let batch = teleagent_tests::harness::receive_as_event(sqs, &rig.env.queue_url).await;
        if batch.records.is_empty() {
            break;
        }
        handled += batch.records.len();
        assert!(
            processor
                .process(batch, None)
                .await
                .batch_item_failures
                .is_empty()
        );
    }
    assert_eq!(handled, 4);
    let leads = rig.leads_of(&t);
    assert_eq!(
        leads.len(),
        3,
        "every re-driven event landed once: {leads:?}"
    );
    // Only the other tenant's message is left in the dead-letter queue.
    let left = redrive(
        sqs,
        &rig.env.dlq_url,
        &rig.env.queue_url,
        &RedriveFilter {
            dry_run: true,
            ..RedriveFilter::default()
        },
    )
    .await
    .unwrap();
    assert_eq!((left.moved, left.skipped), (1, 0), "{:?}", left.lines);
    let dead = teleagent_tests::local::poller::peek_all(sqs, &dlq)
        .await
        .unwrap();
    assert!(
        dead.iter().all(|p| !p.body.contains(t.as_str())),
        "none of the tenant's events is left in the dead-letter queue: {dead:?}"
    );
    assert_eq!(dead.len(), 1, "the other tenant's event stays: {dead:?}");
}

/// A server whose lead search ignores its filter: connect's live check fails with a reason, and
/// lead-sync, on a connection made before the server broke, never touches a lead whose phone or
/// ORIGIN_ID is not the customer's.
#[tokio::test]
async fn a_search_that_ignores_its_filter_never_touches_a_stranger() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let stranger = rig.sandbox.seed_lead(json!({
        "TITLE": "Stranger", "STATUS_ID": "NEW", "NAME": "Bob",
        "PHONE": [{"VALUE": "+15550001111", "VALUE_TYPE": "WORK"}],
    }));
    let before = rig.sandbox.lead(stranger).unwrap();
    rig.sandbox.set_config(|c| c.search_ignores_filter = true);
    let url = UrlGuard::from_config(&rig.cfg)
        .check(Some(&rig.sandbox.mcp_url()))
        .unwrap();
    let secret = SecretToken::new(rig.sandbox.issue_token(false));
    let err = live_check(&rig.mcp, &url, &secret, None, Duration::from_secs(20))
        .await
        .unwrap_err();
    assert!(
        matches!(err, shared::crm::CheckError::FilterIgnored),
        "{err:?}"
    );
    let reason = shared::http::connection_failure_reason(&err);
    assert!(reason.contains("ignores its filter"), "{reason}");

    rig.sandbox.set_config(|c| c.search_ignores_filter = false);
    let t = tenant();
    rig.connect(&t, &rig.sandbox.issue_token(false), fast_rate())
        .await;
    rig.sandbox.set_config(|c| c.search_ignores_filter = true);
    let mut ev = event(&t, "tg:new", 40);
    ev.customer.phone = Some("+998901112233".into());
    ev.lead.notes = Some("first contact".into());
    assert_eq!(handle(&rig.engine(), &ev).await, Outcome::Done);
    assert_eq!(
        rig.sandbox.lead(stranger).unwrap(),
        before,
        "the stranger's lead is untouched"
    );
    assert!(rig.sandbox.timeline_comments(stranger).is_empty());
    assert_eq!(
        rig.leads_of(&t).len(),
        1,
        "the customer got a lead of their own"
    );
}

/// A timer that used up its receives is renewed with the same time, and a second timer may be
/// set after the first one fired. SQS drops a FIFO message whose deduplication id it saw in the
/// last five minutes, even when that message was already received and deleted (moto drops it
/// only while the first is still queued), so every timer must carry an id of its own, or the
/// parked events it is for wait for good.
#[tokio::test]
async fn replay_timers_never_repeat_a_deduplication_id() {
    let env = TestEnv::new().await;
    let t = TenantId::parse("timer-renewal").unwrap();
    let sqs = &env.clients.sqs;
    let at = i64::try_from(
        (time::OffsetDateTime::now_utc() + time::Duration::seconds(1)).unix_timestamp_nanos()
            / 1_000_000,
    )
    .unwrap();
    let mut ids = Vec::new();
    for round in 0..2 {
        shared::sync::replay::request_replay_later(sqs, &env.queue_url, &t, at)
            .await
            .unwrap();
        let got = teleagent_tests::harness::receive_as_event(sqs, &env.queue_url).await;
        assert_eq!(got.records.len(), 1, "timer {round} arrives");
        let r = &got.records[0];
        let request = shared::sync::replay::parse_request(r.body.as_deref().unwrap()).unwrap();
        assert_eq!(
            (request.tenant, request.not_before_ms),
            (t.clone(), Some(at))
        );
        ids.push(r.attributes["MessageDeduplicationId"].clone());
        sqs.delete_message()
            .queue_url(&env.queue_url)
            .receipt_handle(r.receipt_handle.clone().unwrap())
            .send()
            .await
            .unwrap();
    }
    assert_ne!(ids[0], ids[1], "a renewal is not a repeat");
}

/// A portal whose shared budget is empty for a while: the first event that learns it waits as
/// a budget wait does; the tenant's next events in that container wait too, before their claim,
/// link and integration requests (each would only be released again).
#[tokio::test]
async fn events_of_a_portal_out_of_budget_wait_without_dynamodb_requests() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let (proxy, engine) = counted_engine(&rig).await;
    let t = tenant();
    let token = rig.sandbox.issue_token(false);
    // One token, then one every 50 s.
    let slow = RateParams {
        per_sec: 0.02,
        burst: 1.0,
    };
    rig.connect(&t, &token, slow).await;
    let first = handle(&engine, &event(&t, "tg:1", 50)).await;
    assert_eq!(first, Outcome::Done, "the one token creates the first lead");
    let second = handle(&engine, &event(&t, "tg:2", 50)).await;
    assert!(
        matches!(second, Outcome::Retry { .. }),
        "no token for the second: {second:?}"
    );
    proxy.reset_stats();
    let next = handle(&engine, &event(&t, "tg:3", 50)).await;
    let Outcome::Retry { delay, .. } = next else {
        panic!("held back: {next:?}")
    };
    assert!(
        delay > Duration::from_secs(30),
        "until a token is there: {delay:?}"
    );
    assert_eq!(
        proxy.stats().requests,
        0,
        "no AWS request for an event that cannot get a token"
    );
}

/// A lead batch as lead-sync handles it, counted at the DynamoDB endpoint: the batch reads its
/// integration and its customers' links in one BatchGetItem, and each event then costs its
/// claim, one budget take per `tools/call`, and one BatchWriteItem that writes the link and
/// the done mark together. No GetItem at all, also for a customer's second event in the batch
/// (it reads the link its first one wrote).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_costs_one_read_and_each_event_a_claim_its_takes_and_one_write() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let (proxy, engine) = counted_engine(&rig).await;
    let t = tenant();
    rig.connect(&t, &rig.sandbox.issue_token(false), fast_rate())
        .await;
    // (customer, score) in batch order.
    let batch = |events: &[(usize, u8)]| {
        let events: Vec<LeadEvent> = events
            .iter()
            .map(|&(c, score)| event(&t, &format!("tg:b{c}"), score))
            .collect();
        sqs_batch(&events)
    };
    let processor = shared::sync::batch::BatchProcessor::new(
        engine,
        rig.env.clients.sqs.clone(),
        Some(rig.env.queue_url.clone()),
        rig.env.dlq_url.clone(),
    );
    // First contact: ten leads created and linked.
    let firsts: Vec<(usize, u8)> = (0..10).map(|c| (c, 30)).collect();
    let first = processor.process(batch(&firsts), None).await;
    assert!(first.batch_item_failures.is_empty(), "{first:?}");
    assert_eq!(rig.leads_of(&t).len(), 10);
    // Five customers' next two events, each changing the score (the connector's own field):
    // one update each. The second event of a customer reads the link the first one wrote.
    proxy.reset_stats();
    rig.sandbox.reset_calls();
    let nexts: Vec<(usize, u8)> = (0..5).flat_map(|c| [(c, 50), (c, 60)]).collect();
    let second = processor.process(batch(&nexts), None).await;
    assert!(second.batch_item_failures.is_empty(), "{second:?}");
    let calls = rig.sandbox.calls().tools_call;
    assert_eq!(calls, 10, "one update per event");
    let aws = proxy.stats();
    let ddb = |op: &str| aws.operation("dynamodb", op).requests;
    println!(
        "second batch: GetItem {} BatchGetItem {} PutItem {} UpdateItem {} BatchWriteItem {} DeleteItem {}",
        ddb("GetItem"),
        ddb("BatchGetItem"),
        ddb("PutItem"),
        ddb("UpdateItem"),
        ddb("BatchWriteItem"),
        ddb("DeleteItem")
    );
    assert_eq!(ddb("GetItem"), 0, "no event reads on its own");
    assert_eq!(ddb("BatchGetItem"), 1, "one read for the batch");
    assert_eq!(ddb("PutItem"), 10, "one claim per event");
    assert_eq!(ddb("UpdateItem"), calls, "one budget take per tools/call");
    assert_eq!(ddb("BatchWriteItem"), 10, "link and done mark in one write");
    assert_eq!(ddb("DeleteItem"), 0);
    let total: u64 = aws
        .by_operation
        .iter()
        .filter(|(k, _)| k.starts_with("dynamodb/"))
        .map(|(_, o)| o.requests)
        .sum();
    assert_eq!(total, 1 + 10 + calls + 10, "nothing else");
    for c in 0..10 {
        let link = rig
            .store
            .get_link(&t, &format!("tg:b{c}"))
            .await
            .unwrap()
            .expect("linked");
        let lead = rig.sandbox.lead(link.lead_id).unwrap();
        let score = lead["UF_CRM_TELEAGENT_SCORE"].to_string();
        let want = if c < 5 { 60.0 } else { 30.0 };
        assert_eq!(
            score.trim_matches('"').parse::<f64>().ok(),
            Some(want),
            "{score}"
        );
    }
}

/// The manager's edits win, through lead-sync's batch against the sandbox,
/// without change watching: a manager sets one lead to JUNK and renames another; each
/// customer's next event arrives one second later and changes status and name; both leads keep
/// what the manager set (the event reads the lead before it touches a manager's field), the
/// connector's own score moves on, and the notes land as timeline comments.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_managers_junk_and_rename_survive_the_next_event_a_second_later() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    rig.connect(&t, &rig.sandbox.issue_token(false), fast_rate())
        .await;
    let processor = rig.processor();
    let batch = sqs_batch;
    let ev = |customer: &str, name: &str, score: u8, status: LeadStatus, notes: &str| {
        let mut e = event(&t, customer, score);
        e.customer.name = Some(name.into());
        e.lead.status = Some(status);
        e.lead.notes = Some(notes.into());
        e
    };
    let first = [
        ev("tg:ann", "Ann", 40, LeadStatus::Contacted, "first contact"),
        ev("tg:bob", "Bob", 40, LeadStatus::New, "first contact"),
    ];
    let r = processor.process(batch(&first), None).await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");
    let id = |c: &str| {
        let lead = rig
            .leads_of(&t)
            .into_iter()
            .find(|l| l["ORIGIN_ID"] == format!("{t}:{c}"))
            .expect("lead");
        lead["ID"].as_str().unwrap().parse::<i64>().unwrap()
    };
    let (ann, bob) = (id("tg:ann"), id("tg:bob"));
    rig.sandbox
        .manager_edit(ann, json!({"STATUS_ID": "JUNK"}))
        .expect("junked");
    rig.sandbox
        .manager_edit(bob, json!({"NAME": "Robert (VIP)"}))
        .expect("renamed");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let next = [
        ev(
            "tg:ann",
            "Ann",
            80,
            LeadStatus::Qualified,
            "wants a call on Friday",
        ),
        ev(
            "tg:bob",
            "Bobby",
            70,
            LeadStatus::Contacted,
            "asked for the price list",
        ),
    ];
    let r = processor.process(batch(&next), None).await;
    assert!(r.batch_item_failures.is_empty(), "{r:?}");

    let ann_lead = rig.sandbox.lead(ann).unwrap();
    assert_eq!(ann_lead["STATUS_ID"], "JUNK", "the manager's junk stays");
    assert!(
        rig.sandbox
            .timeline_comments(ann)
            .iter()
            .any(|c| c.contains("wants a call on Friday")),
        "the junked lead still gets its notes: {:?}",
        rig.sandbox.timeline_comments(ann)
    );
    let bob_lead = rig.sandbox.lead(bob).unwrap();
    assert_eq!(bob_lead["NAME"], "Robert (VIP)", "the manager's name stays");
    assert_eq!(
        bob_lead["STATUS_ID"], "IN_PROCESS",
        "the status the manager left alone moves on"
    );
    let score = bob_lead["UF_CRM_TELEAGENT_SCORE"].to_string();
    assert_eq!(
        score.trim_matches('"').parse::<f64>().ok(),
        Some(70.0),
        "the connector's own field moves on: {score}"
    );
    assert!(
        rig.sandbox
            .timeline_comments(bob)
            .iter()
            .any(|c| c.contains("asked for the price list")),
        "{:?}",
        rig.sandbox.timeline_comments(bob)
    );
}

/// `last_sync_at` is written once a minute per tenant, not once a minute per container: a
/// container whose integration read shows a value written a moment ago by another one does not
/// write it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_recent_last_sync_written_elsewhere_is_not_written_again() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    rig.connect(&t, &rig.sandbox.issue_token(false), fast_rate())
        .await;
    let (_first_proxy, first) = counted_engine(&rig).await;
    assert_eq!(
        handle(&first, &event(&t, "tg:one", 40)).await,
        Outcome::Done
    );
    let written = rig.store.get_integration(&t).await.unwrap().unwrap();
    assert!(
        written.last_sync_at.is_some(),
        "the first container wrote it"
    );

    let (proxy, second) = counted_engine(&rig).await;
    rig.sandbox.reset_calls();
    assert_eq!(
        handle(&second, &event(&t, "tg:two", 40)).await,
        Outcome::Done
    );
    let calls = rig.sandbox.calls().tools_call;
    let updates = proxy.stats().operation("dynamodb", "UpdateItem").requests;
    assert_eq!(updates, calls, "budget takes only, no last_sync_at write");
    let after = rig.store.get_integration(&t).await.unwrap().unwrap();
    assert_eq!(after.last_sync_at, written.last_sync_at);
}
