//! Change watching (lead-watch's core) against moto and the sandbox portal, over real HTTP: a
//! manager's changes arrive once in the outbound FIFO queue with old and new values, the
//! connector's own writes never echo, the next inbound event respects the manager's fields, a
//! round that cannot publish keeps its cursor, a page of changes in one second is read through,
//! and the fan-out over 200 tenants (one portal failing) watches every healthy tenant each
//! round within each portal's rate budget.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the assertion

use std::time::{Duration, Instant};

use aws_lambda_events::event::sqs::SqsEvent;
use serde_json::json;
use shared::events::{LeadChanged, LeadStatus, Stage};
use shared::mcp::UrlGuard;
use shared::store::RateParams;
use shared::sync::Outcome;
use shared::sync::connections::Connections;
use shared::sync::watch::{FanOut, WatchConsumer, Watcher};
use shared::tenant::TenantId;
use teleagent_tests::harness::{delete_message, receive_as_event};
use teleagent_tests::sandbox::{Faults, Sandbox, ToolShape};

use super::sync::{Rig, event, fast_portal, fast_rate, handle, tenant};

impl Rig {
    /// A lead-watch container's watcher, publishing to `changes_queue`.
    pub(crate) fn watcher_to(&self, changes_queue: &str) -> Watcher {
        let conns = Connections::new(
            self.vault.clone(),
            self.mcp.clone(),
            UrlGuard::from_config(&self.cfg),
            None,
            Duration::from_secs(300),
        );
        Watcher::new(
            self.store.clone(),
            conns,
            self.env.clients.sqs.clone(),
            changes_queue.to_owned(),
        )
    }

    pub(crate) fn watcher(&self) -> Watcher {
        self.watcher_to(&self.env.changes_queue_url)
    }
}

/// A rig with one tenant connected to its sandbox at a generous budget.
async fn connected(shape: ToolShape) -> (Rig, TenantId) {
    let rig = Rig::new(fast_portal(shape)).await;
    let t = tenant();
    rig.connect(&t, &rig.sandbox.issue_token(false), fast_rate())
        .await;
    (rig, t)
}

/// Everything on the outbound queue now, as events with their FIFO group.
async fn drain_changes(rig: &Rig) -> Vec<(LeadChanged, String)> {
    let mut out = Vec::new();
    loop {
        let batch = receive_as_event(&rig.env.clients.sqs, &rig.env.changes_queue_url).await;
        if batch.records.is_empty() {
            return out;
        }
        for r in batch.records {
            let ev: LeadChanged = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
            let group = r
                .attributes
                .get("MessageGroupId")
                .cloned()
                .unwrap_or_default();
            out.push((ev, group));
            delete_message(
                &rig.env.clients.sqs,
                &rig.env.changes_queue_url,
                r.receipt_handle,
            )
            .await;
        }
    }
}

fn lead_id_of(rig: &Rig, t: &TenantId, customer: &str) -> i64 {
    let origin = format!("{t}:{customer}");
    rig.leads_of(t)
        .into_iter()
        .find(|l| l["ORIGIN_ID"] == origin.as_str())
        .and_then(|l| l["ID"].as_str().and_then(|id| id.parse().ok()))
        .expect("the customer's lead")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_managers_changes_arrive_once_and_the_connectors_own_never_echo() {
    for shape in [ToolShape::LeadTools, ToolShape::RestMethod] {
        let why = format!("{shape:?}");
        let (rig, t) = connected(shape).await;
        let engine = rig.engine();
        for (customer, name) in [("tg:1", "Ann"), ("tg:2", "Bob")] {
            let mut ev = event(&t, customer, 40);
            ev.customer.name = Some(name.into());
            ev.lead.status = Some(LeadStatus::Contacted);
            assert_eq!(handle(&engine, &ev).await, Outcome::Done, "{why}");
        }
        let watcher = rig.watcher();
        let first = watcher.watch_tenant(&t).await.unwrap();
        assert_eq!(
            first.published, 0,
            "{why}: the connector's own leads are not changes"
        );
        assert_eq!(first.rows, 2, "{why}: both leads were read");
        assert!(drain_changes(&rig).await.is_empty(), "{why}");

        let (ann, bob) = (lead_id_of(&rig, &t, "tg:1"), lead_id_of(&rig, &t, "tg:2"));
        rig.sandbox
            .manager_edit(ann, json!({"STATUS_ID": "JUNK"}))
            .unwrap();
        rig.sandbox
            .manager_edit(bob, json!({"NAME": "Robert", "ASSIGNED_BY_ID": 7}))
            .unwrap();
        let second = watcher.watch_tenant(&t).await.unwrap();
        assert_eq!(second.published, 2, "{why}");
        let mut got = drain_changes(&rig).await;
        got.sort_by_key(|(e, _)| e.customer_id.clone());
        assert_eq!(got.len(), 2, "{why}: each change once");
        let (junked, group) = &got[0];
        assert_eq!(
            group,
            &format!("{t}:tg:1"),
            "{why}: group per tenant and customer"
        );
        assert_eq!(junked.kind, "lead.changed");
        assert_eq!(junked.lead_id, ann);
        let status = junked.changes.status.as_ref().unwrap();
        assert_eq!(
            (status.from.as_deref(), status.to.as_deref(), status.stage),
            (Some("IN_PROCESS"), Some("JUNK"), Stage::Lost),
            "{why}"
        );
        assert!(junked.changes.name.is_none(), "{why}: only what changed");
        let renamed = &got[1].0;
        let name = renamed.changes.name.as_ref().unwrap();
        assert_eq!(
            (name.from.as_deref(), name.to.as_deref()),
            (Some("Bob"), Some("Robert")),
            "{why}"
        );
        let owner = renamed.changes.assigned_by_id.as_ref().unwrap();
        assert_eq!(
            (owner.from.as_deref(), owner.to.as_deref()),
            (Some("1"), Some("7")),
            "{why}"
        );

        let third = watcher.watch_tenant(&t).await.unwrap();
        assert_eq!(third.published, 0, "{why}: a change is reported once");

        // The next inbound events respect the manager's fields; their own writes do not echo.
        let mut back = event(&t, "tg:2", 90);
        back.customer.name = Some("Bob".into());
        back.lead.status = Some(LeadStatus::Qualified);
        assert_eq!(handle(&engine, &back).await, Outcome::Done, "{why}");
        let mut won = event(&t, "tg:1", 95);
        won.lead.status = Some(LeadStatus::Won);
        assert_eq!(handle(&engine, &won).await, Outcome::Done, "{why}");
        let bob_lead = rig.sandbox.lead(bob).unwrap();
        assert_eq!(
            bob_lead["NAME"], "Robert",
            "{why}: the manager's name stays"
        );
        assert_eq!(
            bob_lead["STATUS_ID"], "UC_QUALIFIED",
            "{why}: our status moves on"
        );
        assert_eq!(bob_lead["UF_CRM_TELEAGENT_SCORE"], 90.0, "{why}");
        assert_eq!(
            rig.sandbox.lead(ann).unwrap()["STATUS_ID"],
            "JUNK",
            "{why}: junked stays"
        );
        let fourth = watcher.watch_tenant(&t).await.unwrap();
        assert_eq!(
            fourth.published, 0,
            "{why}: the connector's own updates produce nothing"
        );
        assert!(drain_changes(&rig).await.is_empty(), "{why}");
        let integ = rig.store.get_integration(&t).await.unwrap().unwrap();
        assert!(
            integ.last_watch_at.is_some(),
            "{why}: status can show last_watch_at"
        );
        assert!(integ.watch_cursor.is_some(), "{why}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_round_that_cannot_publish_keeps_its_cursor_and_the_next_one_delivers() {
    let (rig, t) = connected(ToolShape::LeadTools).await;
    let mut ev = event(&t, "tg:7", 50);
    ev.customer.name = Some("Ann".into());
    assert_eq!(handle(&rig.engine(), &ev).await, Outcome::Done);
    rig.watcher().watch_tenant(&t).await.unwrap();
    let cursor = rig
        .store
        .get_integration(&t)
        .await
        .unwrap()
        .unwrap()
        .watch_cursor;
    tokio::time::sleep(Duration::from_millis(1100)).await; // DATE_MODIFY has whole seconds
    let lead = lead_id_of(&rig, &t, "tg:7");
    rig.sandbox
        .manager_edit(lead, json!({"NAME": "Anna"}))
        .unwrap();

    let gone = format!("{}-missing", rig.env.changes_queue_url);
    let err = rig.watcher_to(&gone).watch_tenant(&t).await.unwrap_err();
    assert!(
        err.is_operator_side(),
        "a queue that refuses is the operator's side: {err}"
    );
    let after = rig.store.get_integration(&t).await.unwrap().unwrap();
    assert_eq!(
        after.watch_cursor, cursor,
        "the cursor did not move past unpublished changes"
    );
    let link = rig.store.get_link_state(&t, "tg:7").await.unwrap();
    let Some(shared::store::LinkState::Linked(_, meta)) = link else {
        panic!("linked")
    };
    assert_ne!(
        meta.seen.get("NAME"),
        Some(&json!("Anna")),
        "nothing recorded as seen"
    );

    let report = rig.watcher().watch_tenant(&t).await.unwrap();
    assert_eq!(report.published, 1);
    let got = drain_changes(&rig).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].0.changes.name.as_ref().unwrap().to.as_deref(),
        Some("Anna")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn more_changes_than_a_page_are_all_read() {
    let (rig, t) = connected(ToolShape::LeadTools).await;
    let engine = rig.engine();
    let customers: Vec<String> = (0..62).map(|i| format!("tg:{i}")).collect();
    futures::future::join_all(customers.iter().map(|c| {
        let engine = engine.clone();
        let ev = {
            let mut e = event(&t, c, 30);
            e.lead.status = Some(LeadStatus::New);
            e
        };
        async move { handle(&engine, &ev).await }
    }))
    .await
    .into_iter()
    .for_each(|o| assert_eq!(o, Outcome::Done));
    let watcher = rig.watcher();
    watcher.watch_tenant(&t).await.unwrap();
    for lead in rig.leads_of(&t) {
        let id: i64 = lead["ID"].as_str().unwrap().parse().unwrap();
        rig.sandbox
            .manager_edit(id, json!({"STATUS_ID": "IN_PROCESS"}))
            .unwrap();
    }
    let report = watcher.watch_tenant(&t).await.unwrap();
    assert!(report.calls >= 2, "more than one page: {report:?}");
    assert_eq!(report.published, 62, "{report:?}");
    let got = drain_changes(&rig).await;
    let mut ids: Vec<i64> = got.iter().map(|(e, _)| e.lead_id).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 62, "every changed lead once");
}

/// Plays the watch queue's event source mapping: receive batches of ten and process them with
/// five invocations side by side until the queue is empty; returns the items reported failed.
async fn drain_watch_queue(rig: &Rig, consumer: &WatchConsumer) -> usize {
    let mut failed = 0;
    loop {
        let mut batches: Vec<SqsEvent> = Vec::new();
        for _ in 0..5 {
            let b = receive_as_event(&rig.env.clients.sqs, &rig.env.watch_queue_url).await;
            if !b.records.is_empty() {
                batches.push(b);
            }
        }
        if batches.is_empty() {
            return failed;
        }
        let results =
            futures::future::join_all(batches.iter().cloned().map(|b| consumer.process(b, None)))
                .await;
        for (batch, response) in batches.iter().zip(results) {
            let failed_ids: Vec<String> = response
                .batch_item_failures
                .iter()
                .map(|f| f.item_identifier.clone())
                .collect();
            failed += failed_ids.len();
            for r in &batch.records {
                if failed_ids.contains(r.message_id.as_ref().unwrap()) {
                    continue;
                }
                delete_message(
                    &rig.env.clients.sqs,
                    &rig.env.watch_queue_url,
                    r.receipt_handle.clone(),
                )
                .await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_tenants_fan_out_and_a_failing_portal_delays_no_one() {
    let started = Instant::now();
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let failing = Sandbox::start(fast_portal(ToolShape::LeadTools)).await;
    // A tight budget for every portal: one call at once, one a second.
    let budget = RateParams {
        per_sec: 1.0,
        burst: 1.0,
    };
    let tenants: Vec<TenantId> = (0..200).map(|_| tenant()).collect();
    // Connect (the failing tenant on its own portal) and sync one lead each, through the real
    // store and sandbox; connect once, then store the same binding for the others.
    // The live check at connect is not budgeted (it runs once, under connect's deadline), so
    // the budget check below leaves out the token it used.
    let connect_token = rig.sandbox.issue_token(false);
    rig.connect(&tenants[0], &connect_token, budget).await;
    let template = rig
        .store
        .get_integration(&tenants[0])
        .await
        .unwrap()
        .unwrap();
    futures::future::join_all(tenants.iter().enumerate().skip(1).map(|(i, t)| {
        let (rig, template, failing) = (&rig, &template, &failing);
        async move {
            let (sandbox, token) = if i == 199 {
                (failing, failing.issue_token(false))
            } else {
                (&rig.sandbox, rig.sandbox.issue_token(false))
            };
            let secret = shared::secret::SecretToken::new(token.clone());
            let ciphertext = rig.vault.encrypt(t, &secret).await.unwrap();
            rig.store
                .save_connection(
                    t,
                    shared::store::NewConnection {
                        token_ciphertext: ciphertext,
                        mcp_url: sandbox.mcp_url(),
                        portal_id: format!("portal-{i}"),
                        binding: template.binding.clone().unwrap(),
                        portal_info: json!({}),
                        rate: budget,
                        connected_at: time::OffsetDateTime::now_utc(),
                    },
                    0,
                )
                .await
                .unwrap();
            token
        }
    }))
    .await;
    eprintln!("connected 200 tenants in {:?}", started.elapsed());
    let engine = rig.engine();
    for t in &tenants {
        rig.store
            .touch_last_sync(t, time::OffsetDateTime::now_utc())
            .await
            .unwrap();
    }
    let mut ev = event(&tenants[1], "tg:1", 10);
    ev.customer.name = Some("Ann".into());
    assert_eq!(handle(&engine, &ev).await, Outcome::Done);
    failing.set_faults(Faults {
        error_5xx_ratio: 1.0,
        ..Faults::default()
    });

    let fan_out = FanOut::new(
        rig.store.clone(),
        rig.env.clients.sqs.clone(),
        rig.env.watch_queue_url.clone(),
    );
    let consumer = WatchConsumer::new(rig.watcher());
    for round in 1..=2 {
        let report = fan_out.run(time::OffsetDateTime::now_utc()).await.unwrap();
        assert_eq!(
            report.due, 200,
            "round {round}: every integration that synced today"
        );
        assert_eq!(report.enqueued, 200, "round {round}");
        let failed = drain_watch_queue(&rig, &consumer).await;
        eprintln!("round {round} done at {:?}", started.elapsed());
        assert_eq!(
            failed, 0,
            "round {round}: a failing portal is the portal's, retried next round"
        );
        for t in &tenants[..199] {
            let integ = rig.store.get_integration(t).await.unwrap().unwrap();
            assert!(integ.last_watch_at.is_some(), "round {round}: {t} watched");
        }
        let sick = rig
            .store
            .get_integration(&tenants[199])
            .await
            .unwrap()
            .unwrap();
        assert!(
            sick.last_watch_at.is_none(),
            "round {round}: the failing portal did not finish"
        );
        assert_eq!(
            sick.sync_status,
            Some(shared::store::SyncStatus::Active),
            "5xx is transient: the tenant stays active and is due next round"
        );
        if round == 1 {
            let lead = lead_id_of(&rig, &tenants[1], "tg:1");
            rig.sandbox
                .manager_edit(lead, json!({"NAME": "Anna"}))
                .unwrap();
        }
    }
    assert!(
        failing
            .calls()
            .by_outcome
            .get("fault_5xx")
            .copied()
            .unwrap_or(0)
            >= 2,
        "the failing portal was tried in both rounds"
    );
    let got = drain_changes(&rig).await;
    assert_eq!(got.len(), 1, "the one manager change, once");
    assert_eq!(got[0].0.tenant_id, tenants[1].as_str());
    // Every portal's calls against its budget (1 at once, 1 per second): two rounds back to
    // back mean each tenant's second call waited for its token.
    let calls = rig.sandbox.calls().tools_call_ms_by_token;
    let watched = calls.values().filter(|times| times.len() >= 2).count();
    assert!(
        watched >= 199,
        "every healthy tenant called in both rounds: {watched}"
    );
    for (token, times) in calls.iter().filter(|(k, _)| **k != connect_token) {
        for pair in times.windows(2) {
            assert!(
                pair[1] - pair[0] >= 900,
                "a portal's calls {} ms apart exceed its 1/s budget ({})",
                pair[1] - pair[0],
                token.len()
            );
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

/// A revoked token found by a watch round puts the integration in `error` (as lead-sync would),
/// so the schedule stops enqueueing the tenant until it reconnects; the work item is the
/// portal's failure, not the operator's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_revoked_token_found_by_watching_sets_the_integration_to_error() {
    let rig = Rig::new(fast_portal(ToolShape::LeadTools)).await;
    let t = tenant();
    let token = rig.sandbox.issue_token(false);
    rig.connect(&t, &token, fast_rate()).await;
    rig.store
        .touch_last_sync(&t, time::OffsetDateTime::now_utc())
        .await
        .unwrap();
    rig.sandbox.revoke_token(&token);
    let err = rig.watcher().watch_tenant(&t).await.unwrap_err();
    assert!(
        !err.is_operator_side(),
        "a revoked token is the tenant's: {err}"
    );
    let integ = rig.store.get_integration(&t).await.unwrap().unwrap();
    assert_eq!(integ.sync_status, Some(shared::store::SyncStatus::Error));
    assert!(integ.last_watch_at.is_none());
    let fan_out = FanOut::new(
        rig.store.clone(),
        rig.env.clients.sqs.clone(),
        rig.env.watch_queue_url.clone(),
    );
    let report = fan_out.run(time::OffsetDateTime::now_utc()).await.unwrap();
    assert_eq!(
        (report.candidates, report.due),
        (1, 0),
        "an integration in error is not due"
    );
}
