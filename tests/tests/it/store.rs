//! The DynamoDB store against moto: integration lifecycle and its version guards, links, the
//! idempotency claim race, parking order, TTL attributes, tenant isolation and the shared rate
//! bucket.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the assertion

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;
use shared::store::{
    Claim, EventDone, Integration, LeadLink, LinkMeta, LinkState, NewConnection, RateParams, Store,
    StoreError, SyncStatus, TokenTake,
};
use shared::tenant::TenantId;
use teleagent_tests::harness::TestEnv;
use time::OffsetDateTime;
use time::macros::datetime;

fn tenant(name: &str) -> TenantId {
    TenantId::parse(&format!("{name}-{}", uuid::Uuid::new_v4())).unwrap()
}

fn store(env: &TestEnv) -> Store {
    Store::new(env.clients.dynamodb.clone(), env.table.clone())
}

/// A store whose DynamoDB requests are counted where they are answered: a pass-through proxy
/// in front of moto.
async fn counted_store(env: &TestEnv) -> (teleagent_tests::aws_faults::AwsFaultProxy, Store) {
    let proxy = teleagent_tests::aws_faults::AwsFaultProxy::start(
        teleagent_tests::harness::moto_endpoint(),
    )
    .await
    .unwrap();
    let sdk = teleagent_tests::harness::sdk_config_at(&proxy.endpoint()).await;
    let st = Store::new(aws_sdk_dynamodb::Client::new(&sdk), env.table.clone());
    (proxy, st)
}

fn ddb_requests(proxy: &teleagent_tests::aws_faults::AwsFaultProxy) -> u64 {
    proxy.stats().requests
}

fn conn(token: &[u8], portal: &str) -> NewConnection {
    NewConnection {
        token_ciphertext: token.to_vec(),
        mcp_url: format!("https://{portal}/mcp"),
        portal_id: portal.to_owned(),
        binding: json!({"profile": "lead-tools", "tools": {"create": "crm_lead_add"}}),
        portal_info: json!({"sources": ["TELEGRAM"]}),
        rate: RateParams {
            per_sec: 5.0,
            burst: 250.0,
        },
        connected_at: datetime!(2025-03-01 10:00:00 UTC),
    }
}

/// The raw item, read past the store, to check what is really written.
async fn raw_items(
    env: &TestEnv,
    t: &TenantId,
    prefix: &str,
) -> Vec<HashMap<String, AttributeValue>> {
    env.clients
        .dynamodb
        .query()
        .table_name(&env.table)
        .key_condition_expression("pk = :pk AND begins_with(sk, :p)")
        .expression_attribute_values(":pk", AttributeValue::S(t.partition_key()))
        .expression_attribute_values(":p", AttributeValue::S(prefix.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .unwrap()
        .items
        .unwrap_or_default()
}

fn expires_at(item: &HashMap<String, AttributeValue>) -> i64 {
    match item.get("expires_at") {
        Some(AttributeValue::N(n)) => n.parse().unwrap(),
        other => panic!("expires_at missing or not a number: {other:?}"),
    }
}

#[tokio::test]
async fn integration_lifecycle() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let t = tenant("a");

    assert_eq!(st.get_integration(&t).await.unwrap(), None);
    assert_eq!(
        st.clear_connection(&t).await.unwrap(),
        None,
        "clear of nothing is Ok(None)"
    );

    let saved = st
        .save_connection(&t, conn(b"ct-1", "p1.bitrix24.com"), 0)
        .await
        .unwrap();
    assert_eq!(saved.version, 1);
    assert_eq!(saved.sync_status, Some(SyncStatus::Active));
    assert_eq!(
        saved.rate,
        RateParams {
            per_sec: 5.0,
            burst: 250.0
        }
    );
    assert_eq!(st.get_integration(&t).await.unwrap().as_ref(), Some(&saved));
    assert_eq!(saved.token_ciphertext.as_deref(), Some(&b"ct-1"[..]));
    assert_eq!(
        saved.binding.as_ref().unwrap()["tools"]["create"],
        "crm_lead_add"
    );

    // A sync touches last_sync_at without moving the version (token caches stay valid).
    let synced_at = datetime!(2025-03-02 08:30:00.25 UTC);
    st.touch_last_sync(&t, synced_at).await.unwrap();
    let got = st.get_integration(&t).await.unwrap().unwrap();
    assert_eq!((got.version, got.last_sync_at), (1, Some(synced_at)));

    let errored = st
        .set_status(&t, 1, SyncStatus::Error, Some("token revoked".into()))
        .await
        .unwrap();
    assert_eq!(
        (errored.version, errored.sync_status),
        (2, Some(SyncStatus::Error))
    );
    assert_eq!(errored.last_error.as_deref(), Some("token revoked"));

    let rebound = st
        .set_binding(&t, 2, json!({"profile": "generic"}), json!({}))
        .await
        .unwrap();
    assert_eq!(rebound.version, 3);
    assert_eq!(
        rebound.token_ciphertext.as_deref(),
        Some(&b"ct-1"[..]),
        "token kept"
    );

    // Reconnect: new token, status active, error cleared, last_sync_at kept.
    let again = st
        .save_connection(&t, conn(b"ct-2", "p2.bitrix24.com"), 3)
        .await
        .unwrap();
    assert_eq!(again.version, 4);
    assert_eq!(again.sync_status, Some(SyncStatus::Active));
    assert_eq!(again.last_error, None);
    assert_eq!(again.last_sync_at, Some(synced_at));
    assert_eq!(again.portal_id.as_deref(), Some("p2.bitrix24.com"));

    let cleared = st.clear_connection(&t).await.unwrap().unwrap();
    assert_eq!(cleared.version, 5);
    assert!(!cleared.is_connected());
    assert_eq!(
        (
            cleared.mcp_url.as_ref(),
            cleared.portal_id.as_ref(),
            cleared.binding.as_ref()
        ),
        (None, None, None)
    );
    assert_eq!(cleared.sync_status, None);
    assert_eq!(
        cleared.last_sync_at,
        Some(synced_at),
        "last_sync_at survives a disconnect"
    );
    assert!(cleared.disconnected_at.is_some());
    let raw = &raw_items(&env, &t, "BITRIX#MCP").await[0];
    assert!(
        !raw.contains_key("token_ciphertext"),
        "ciphertext really removed"
    );

    // Idempotent: a second clear changes nothing.
    let twice = st.clear_connection(&t).await.unwrap().unwrap();
    assert_eq!(twice, cleared);
    // A finished sync after the disconnect must not resurrect anything.
    assert!(matches!(
        st.touch_last_sync(&t, OffsetDateTime::now_utc()).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        st.set_binding(&t, 5, json!({}), json!({})).await,
        Err(StoreError::Conflict)
    ));

    // Connecting again after a disconnect uses the read version.
    let back = st
        .save_connection(&t, conn(b"ct-3", "p1.bitrix24.com"), 5)
        .await
        .unwrap();
    assert_eq!((back.version, back.disconnected_at), (6, None));
}

#[tokio::test]
async fn version_guards_detect_concurrent_writers() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let t = tenant("a");

    // Two first connects racing from version 0: exactly one wins.
    let (r1, r2) = tokio::join!(
        st.save_connection(&t, conn(b"one", "p1"), 0),
        st.save_connection(&t, conn(b"two", "p2"), 0),
    );
    let wins = [&r1, &r2].iter().filter(|r| r.is_ok()).count();
    assert_eq!(wins, 1, "{r1:?} / {r2:?}");
    assert!(
        [&r1, &r2]
            .iter()
            .any(|r| matches!(r, Err(StoreError::Conflict)))
    );
    let winner: Integration = r1.or(r2).unwrap();
    assert_eq!(st.get_integration(&t).await.unwrap().unwrap(), winner);

    // Two reconnects from the same read version: one Conflict.
    let (r1, r2) = tokio::join!(
        st.save_connection(&t, conn(b"three", "p1"), 1),
        st.save_connection(&t, conn(b"four", "p2"), 1),
    );
    assert_eq!(
        [&r1, &r2]
            .iter()
            .filter(|r| matches!(r, Err(StoreError::Conflict)))
            .count(),
        1
    );
    let current = st.get_integration(&t).await.unwrap().unwrap();
    assert_eq!(current.version, 2);

    // An error seen with the OLD token (version 1) cannot overwrite the fresh connect.
    let table: [(u64, bool, &str); 3] = [
        (1, false, "stale version"),
        (7, false, "future version"),
        (2, true, "current version"),
    ];
    for (v, ok, why) in table {
        let r = st
            .set_status(&t, v, SyncStatus::Error, Some("401".into()))
            .await;
        assert_eq!(r.is_ok(), ok, "{why}: {r:?}");
        if !ok {
            assert!(matches!(r, Err(StoreError::Conflict)), "{why}: {r:?}");
            let now = st.get_integration(&t).await.unwrap().unwrap();
            assert_eq!(
                now.sync_status,
                Some(SyncStatus::Active),
                "{why}: status unchanged"
            );
        }
    }
    let now = st.get_integration(&t).await.unwrap().unwrap();
    assert_eq!((now.version, now.sync_status), (3, Some(SyncStatus::Error)));
    assert!(matches!(
        st.set_binding(&t, 2, json!({}), json!({})).await,
        Err(StoreError::Conflict)
    ));
    // Clearing the error (status back to active) removes last_error.
    let ok = st
        .set_status(&t, 3, SyncStatus::Active, None)
        .await
        .unwrap();
    assert_eq!((ok.last_error, ok.version), (None, 4));
}

/// An interrupted write kept on the link: only while the item links that lead; read back with
/// the link; a whole put after the next event clears it.
#[tokio::test]
async fn a_pending_write_is_kept_on_its_link_only() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let t = tenant("pending");
    let link = LeadLink {
        customer_id: "tg:9".into(),
        lead_id: 42,
        portal_id: "p1".into(),
        phone_e164: None,
        last_event_at: datetime!(2025-03-01 10:00:00 UTC),
        sent: serde_json::Map::new(),
    };
    let mut pending = serde_json::Map::new();
    pending.insert("STATUS_ID".into(), json!("IN_PROCESS"));
    pending.insert("UF_CRM_TELEAGENT_SCORE".into(), json!(37));
    assert!(
        !st.mark_link_pending(&t, "tg:9", 42, &pending)
            .await
            .unwrap(),
        "no link: nothing written"
    );
    st.put_link(&t, &link).await.unwrap();
    assert!(
        !st.mark_link_pending(&t, "tg:9", 41, &pending)
            .await
            .unwrap(),
        "another lead: left alone"
    );
    assert!(
        st.mark_link_pending(&t, "tg:9", 42, &pending)
            .await
            .unwrap()
    );
    let Some(LinkState::Linked(read, meta)) = st.get_link_state(&t, "tg:9").await.unwrap() else {
        panic!("linked")
    };
    assert_eq!((read, meta.pending.clone()), (link.clone(), pending));
    st.put_link_with(&t, &link, &LinkMeta::default())
        .await
        .unwrap();
    let Some(LinkState::Linked(_, meta)) = st.get_link_state(&t, "tg:9").await.unwrap() else {
        panic!("linked")
    };
    assert!(
        meta.pending.is_empty(),
        "the next event's link write settles it"
    );
}

#[tokio::test]
async fn lead_links_crud() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let t = tenant("a");
    let mut sent = serde_json::Map::new();
    sent.insert("TITLE".into(), json!("Telegram: Ann"));
    sent.insert("STATUS_ID".into(), json!("NEW"));
    let cases = [
        LeadLink {
            customer_id: "tg:123".into(),
            lead_id: 42,
            portal_id: "p1".into(),
            phone_e164: Some("+998901234567".into()),
            last_event_at: datetime!(2025-03-01 10:00:00.123456 +02:00),
            sent: sent.clone(),
        },
        LeadLink {
            customer_id: "tg:456#odd".into(),
            lead_id: 7,
            portal_id: "p1".into(),
            phone_e164: None,
            last_event_at: datetime!(2025-03-01 10:00:00 UTC),
            sent: serde_json::Map::new(),
        },
    ];
    for link in &cases {
        assert_eq!(st.get_link(&t, &link.customer_id).await.unwrap(), None);
        st.put_link(&t, link).await.unwrap();
        assert_eq!(
            st.get_link(&t, &link.customer_id).await.unwrap().as_ref(),
            Some(link)
        );
    }
    let mut updated = cases[0].clone();
    updated.lead_id = 43;
    updated
        .sent
        .insert("UF_CRM_TELEAGENT_SCORE".into(), json!(82));
    st.put_link(&t, &updated).await.unwrap();
    assert_eq!(st.get_link(&t, "tg:123").await.unwrap(), Some(updated));

    st.delete_link(&t, "tg:123").await.unwrap();
    assert_eq!(st.get_link(&t, "tg:123").await.unwrap(), None);
    st.delete_link(&t, "tg:123").await.unwrap();
    assert_eq!(
        st.get_link(&t, "tg:456#odd").await.unwrap().as_ref(),
        Some(&cases[1]),
        "other link kept"
    );
}

#[tokio::test]
async fn event_claims_are_exclusive_and_idempotent() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let t = tenant("a");
    let lease = Duration::from_secs(60);
    let now = OffsetDateTime::now_utc();

    // Race: two consumers claim the same event at once; several rounds to give the race a chance.
    for round in 0..5 {
        let id = format!("ev-race-{round}");
        let (s1, s2) = (st.clone(), st.clone());
        let (t1, t2) = (t.clone(), t.clone());
        let (id1, id2) = (id.clone(), id.clone());
        let (a, b) = tokio::join!(
            tokio::spawn(async move { s1.claim_event(&t1, &id1, lease, now).await }),
            tokio::spawn(async move { s2.claim_event(&t2, &id2, lease, now).await }),
        );
        let outcomes = [a.unwrap().unwrap(), b.unwrap().unwrap()];
        assert_eq!(
            outcomes.iter().filter(|c| **c == Claim::Claimed).count(),
            1,
            "round {round}: {outcomes:?}"
        );
        assert!(
            outcomes
                .iter()
                .any(|c| matches!(c, Claim::HeldByOther { until } if *until > now)),
            "round {round}: the loser sees the live lease: {outcomes:?}"
        );
    }

    // Done -> AlreadyDone, even with an expired lease; release never removes a done record.
    st.complete_event(&t, "ev-race-0", Duration::from_secs(30 * 86400), None)
        .await
        .unwrap();
    st.release_event(&t, "ev-race-0").await.unwrap();
    let later = now + Duration::from_secs(3600);
    assert_eq!(
        st.claim_event(&t, "ev-race-0", lease, later).await.unwrap(),
        Claim::AlreadyDone
    );

    // An expired lease can be retaken; a live one cannot.
    let short = Duration::from_secs(1);
    assert_eq!(
        st.claim_event(&t, "ev-lease", short, now).await.unwrap(),
        Claim::Claimed
    );
    assert!(matches!(
        st.claim_event(&t, "ev-lease", short, now + Duration::from_millis(500))
            .await
            .unwrap(),
        Claim::HeldByOther { .. }
    ));
    assert_eq!(
        st.claim_event(&t, "ev-lease", short, now + Duration::from_secs(2))
            .await
            .unwrap(),
        Claim::Claimed
    );

    // Release gives the claim back at once.
    assert_eq!(
        st.claim_event(&t, "ev-release", lease, now).await.unwrap(),
        Claim::Claimed
    );
    st.release_event(&t, "ev-release").await.unwrap();
    assert_eq!(
        st.claim_event(&t, "ev-release", lease, now).await.unwrap(),
        Claim::Claimed
    );

    // TTLs: in progress = lease end + 1 day; done = now + done_ttl.
    let items = raw_items(&env, &t, "EVENT#").await;
    let by_sk = |sk: &str| {
        items
            .iter()
            .find(|i| i.get("sk") == Some(&AttributeValue::S(sk.into())))
            .unwrap()
    };
    let in_progress = expires_at(by_sk("EVENT#ev-release"));
    assert_eq!(in_progress, (now + lease).unix_timestamp() + 86400);
    let done = expires_at(by_sk("EVENT#ev-race-0"));
    let expect = OffsetDateTime::now_utc().unix_timestamp() + 30 * 86400;
    assert!((done - expect).abs() < 60, "done TTL {done} vs {expect}");
}

#[tokio::test]
async fn parked_events_list_in_occurred_order_with_ttl() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let t = tenant("a");
    // Written out of order, with offsets: order must follow the instant, not the text.
    let events = [
        (datetime!(2025-03-01 12:00:00 +03:00), "e-2"), // 09:00 UTC
        (datetime!(2025-03-01 08:59:59.999 UTC), "e-1"),
        (datetime!(2025-03-01 09:00:00 UTC), "e-3"), // same instant as e-2: event id breaks the tie
        (datetime!(2025-03-02 00:00:00 UTC), "e-4"),
    ];
    for (at, id) in events {
        st.park_event(
            &t,
            at,
            id,
            &format!("{{\"event_id\":\"{id}\"}}"),
            "integration in error",
        )
        .await
        .unwrap();
    }
    let parked = st.list_parked(&t).await.unwrap();
    let ids: Vec<_> = parked.iter().map(|p| p.event_id.as_str()).collect();
    assert_eq!(ids, ["e-1", "e-2", "e-3", "e-4"]);
    assert_eq!(parked[1].occurred_at, datetime!(2025-03-01 09:00:00 UTC));
    assert_eq!(parked[1].body, "{\"event_id\":\"e-2\"}");
    assert_eq!(parked[1].reason, "integration in error");

    let now = OffsetDateTime::now_utc().unix_timestamp();
    for item in raw_items(&env, &t, "PARKED#").await {
        assert!((expires_at(&item) - (now + 14 * 86400)).abs() < 60);
    }

    st.delete_parked(&t, &parked[1]).await.unwrap();
    let ids: Vec<_> = st
        .list_parked(&t)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.event_id)
        .collect();
    assert_eq!(ids, ["e-1", "e-3", "e-4"]);
}

#[tokio::test]
async fn parked_listing_reads_every_page() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let t = tenant("a");
    // A Query page holds at most 1 MB: 60 bodies of 20 KB (1.2 MB) need two pages.
    let body = "x".repeat(20_000);
    let base = datetime!(2025-03-01 00:00:00 UTC);
    for i in 0..60 {
        st.park_event(
            &t,
            base + Duration::from_secs(i),
            &format!("e-{i:03}"),
            &body,
            "r",
        )
        .await
        .unwrap();
    }
    let (proxy, counted) = counted_store(&env).await;
    let parked = counted.list_parked(&t).await.unwrap();
    assert!(
        ddb_requests(&proxy) >= 2,
        "the listing crossed a page boundary"
    );
    assert_eq!(parked.len(), 60, "all pages read");
    assert!(
        parked
            .windows(2)
            .all(|w| w[0].occurred_at < w[1].occurred_at)
    );
}

#[tokio::test]
async fn audit_lines_have_ttl_and_list_in_order() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let t = tenant("a");
    st.audit(
        &t,
        "connect",
        json!({"portal": "p1", "profile": "lead-tools"}),
    )
    .await
    .unwrap();
    st.audit(&t, "lead_created", json!({"lead_id": 42}))
        .await
        .unwrap();
    let lines = st.list_audit(&t).await.unwrap();
    let kinds: Vec<_> = lines.iter().map(|l| l.kind.as_str()).collect();
    assert_eq!(kinds, ["connect", "lead_created"]);
    assert_eq!(lines[1].detail["lead_id"], 42);
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let raw = raw_items(&env, &t, "AUDIT#").await;
    assert_eq!(raw.len(), 2);
    for item in raw {
        assert!((expires_at(&item) - (now + 90 * 86400)).abs() < 60);
    }
}

#[tokio::test]
async fn tenants_are_isolated() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let (a, b) = (tenant("a"), tenant("b"));
    let now = OffsetDateTime::now_utc();
    let lease = Duration::from_secs(60);

    let a_int = st
        .save_connection(&a, conn(b"a-token", "pa"), 0)
        .await
        .unwrap();
    let link = LeadLink {
        customer_id: "tg:1".into(),
        lead_id: 1,
        portal_id: "pa".into(),
        phone_e164: None,
        last_event_at: now,
        sent: serde_json::Map::new(),
    };
    st.put_link(&a, &link).await.unwrap();
    assert_eq!(
        st.claim_event(&a, "ev-1", lease, now).await.unwrap(),
        Claim::Claimed
    );
    st.park_event(&a, now, "ev-p", "{}", "error").await.unwrap();
    st.audit(&a, "connect", json!({})).await.unwrap();

    // B sees none of it.
    assert_eq!(st.get_integration(&b).await.unwrap(), None);
    assert_eq!(st.get_link(&b, "tg:1").await.unwrap(), None);
    assert!(st.list_parked(&b).await.unwrap().is_empty());
    assert!(st.list_audit(&b).await.unwrap().is_empty());
    // B's claim of the same event id is B's own, not blocked by A's lease.
    assert_eq!(
        st.claim_event(&b, "ev-1", lease, now).await.unwrap(),
        Claim::Claimed
    );

    // B's destructive calls change nothing of A's.
    assert_eq!(st.clear_connection(&b).await.unwrap(), None);
    st.delete_link(&b, "tg:1").await.unwrap();
    st.release_event(&b, "ev-1").await.unwrap();
    st.complete_event(&b, "ev-1", Duration::from_secs(60), None)
        .await
        .unwrap();
    let a_parked = st.list_parked(&a).await.unwrap();
    assert!(
        matches!(
            st.delete_parked(&b, &a_parked[0]).await,
            Err(StoreError::Conflict)
        ),
        "B has no such parked item"
    );
    assert!(matches!(
        st.set_status(&b, a_int.version, SyncStatus::Error, None)
            .await,
        Err(StoreError::Conflict)
    ));

    assert_eq!(
        st.get_integration(&a).await.unwrap(),
        Some(Integration {
            parked_count: 1,
            ..a_int
        }),
        "A's item is A's: only A's own park counted"
    );
    assert_eq!(st.get_link(&a, "tg:1").await.unwrap(), Some(link));
    assert!(matches!(
        st.claim_event(&a, "ev-1", lease, now).await.unwrap(),
        Claim::HeldByOther { .. }
    ));
    assert_eq!(st.list_parked(&a).await.unwrap(), a_parked);
}

#[tokio::test]
async fn rate_bucket_gives_burst_then_waits_and_counts_requests() {
    let env = TestEnv::new().await;
    let (proxy, st) = counted_store(&env).await;
    let t = tenant("a");
    let rate = RateParams::default();
    let now = OffsetDateTime::now_utc();
    for i in 0..50 {
        assert_eq!(
            st.take_rate_token(&t, &rate, now).await.unwrap(),
            Duration::ZERO,
            "take {i}"
        );
    }
    // One conditional write per take (GCRA, remembered in the container), the first one
    // included (it assumes an idle budget in its condition instead of reading): no
    // read-modify-write round trips without contention.
    assert_eq!(ddb_requests(&proxy), 50);
    let wait = st.take_rate_token(&t, &rate, now).await.unwrap();
    assert_eq!(wait, Duration::from_millis(500));
    // The refused take did not draw: half a second later exactly one token is there.
    let later = now + Duration::from_millis(500);
    assert_eq!(
        st.take_rate_token(&t, &rate, later).await.unwrap(),
        Duration::ZERO
    );
    assert!(st.take_rate_token(&t, &rate, later).await.unwrap() > Duration::ZERO);
    // Another tenant's portal has its own bucket.
    assert_eq!(
        st.take_rate_token(&tenant("b"), &rate, now).await.unwrap(),
        Duration::ZERO
    );
}

#[tokio::test]
async fn concurrent_takers_never_overdraw() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let t = tenant("a");
    let rate = RateParams {
        per_sec: 2.0,
        burst: 10.0,
    };
    let start = OffsetDateTime::now_utc();
    let taker = |st: Store, t: TenantId| async move {
        let mut taken = 0u32;
        let mut conflicts = 0u32;
        // Long enough for the burst even when moto answers slowly (a loaded CI machine).
        let deadline = std::time::Instant::now() + Duration::from_millis(4000);
        while std::time::Instant::now() < deadline {
            match st
                .take_rate_token(&t, &rate, OffsetDateTime::now_utc())
                .await
            {
                Ok(w) if w.is_zero() => taken += 1,
                Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                Err(StoreError::Conflict) => conflicts += 1,
                Err(e) => panic!("take failed: {e:?}"),
            }
        }
        (taken, conflicts)
    };
    let (a, b, c) = tokio::join!(
        tokio::spawn(taker(st.clone(), t.clone())),
        tokio::spawn(taker(st.clone(), t.clone())),
        tokio::spawn(taker(st.clone(), t.clone())),
    );
    let elapsed = (OffsetDateTime::now_utc() - start).as_seconds_f64();
    let outcomes = [a.unwrap(), b.unwrap(), c.unwrap()];
    let taken: u32 = outcomes.iter().map(|o| o.0).sum();
    let allowed = rate.burst + elapsed * rate.per_sec;
    assert!(
        f64::from(taken) <= allowed,
        "{taken} tokens taken, at most {allowed:.2} allowed ({outcomes:?})"
    );
    assert!(
        taken >= 10,
        "the burst itself is available: {taken} ({outcomes:?})"
    );
}

/// The rate budget is the operator's to change in the item (an Enterprise portal: 5/s, 250)
/// without a deploy, and a reconnect keeps it.
#[tokio::test]
async fn an_operator_set_rate_survives_a_reconnect() {
    let env = TestEnv::new().await;
    let st = store(&env);
    let t = tenant("rate");
    let mut first = conn(b"ct-1", "p1.bitrix24.com");
    first.rate = RateParams::default();
    let saved = st.save_connection(&t, first, 0).await.unwrap();
    assert_eq!(saved.rate, RateParams::default());
    env.clients
        .dynamodb
        .update_item()
        .table_name(&env.table)
        .key("pk", AttributeValue::S(t.partition_key()))
        .key("sk", AttributeValue::S("BITRIX#MCP".into()))
        .update_expression("SET rate_per_sec = :r, rate_burst = :b")
        .expression_attribute_values(":r", AttributeValue::N("5".into()))
        .expression_attribute_values(":b", AttributeValue::N("250".into()))
        .send()
        .await
        .unwrap();
    let mut again = conn(b"ct-2", "p1.bitrix24.com");
    again.rate = RateParams::default();
    let reconnected = st.save_connection(&t, again, saved.version).await.unwrap();
    assert_eq!(
        reconnected.rate,
        RateParams {
            per_sec: 5.0,
            burst: 250.0
        },
        "the reconnect kept the operator's budget"
    );
}

/// A refused claim learns from the refusal itself whether the event is done or held: one
/// request per claim attempt, never a read after it.
#[tokio::test]
async fn a_refused_claim_tells_done_from_held_without_a_read() {
    let env = TestEnv::new().await;
    let (proxy, st) = counted_store(&env).await;
    let t = tenant("claims-no-read");
    let lease = Duration::from_secs(60);
    let now = OffsetDateTime::now_utc();
    assert_eq!(
        st.claim_event(&t, "ev-1", lease, now).await.unwrap(),
        Claim::Claimed
    );
    assert!(matches!(
        st.claim_event(&t, "ev-1", lease, now).await.unwrap(),
        Claim::HeldByOther { until } if until > now
    ));
    st.complete_event(&t, "ev-1", Duration::from_secs(86400), None)
        .await
        .unwrap();
    assert_eq!(
        st.claim_event(&t, "ev-1", lease, now).await.unwrap(),
        Claim::AlreadyDone
    );
    let stats = proxy.stats();
    assert_eq!(stats.operation("dynamodb", "GetItem").requests, 0);
    assert_eq!(ddb_requests(&proxy), 4, "three claims and the done mark");
}

/// A container's first take assumes an idle budget, but only in its condition: a budget another
/// container has emptied is not taken from again.
#[tokio::test]
async fn a_first_take_never_overdraws_a_budget_another_container_emptied() {
    let env = TestEnv::new().await;
    let t = tenant("budget-second-container");
    let rate = RateParams::default();
    let now = OffsetDateTime::now_utc();
    let first = store(&env);
    for _ in 0..50 {
        assert_eq!(
            first.take_rate_token(&t, &rate, now).await.unwrap(),
            Duration::ZERO
        );
    }
    let (proxy, second) = counted_store(&env).await;
    let wait = second.take_rate_token(&t, &rate, now).await.unwrap();
    assert_eq!(wait, Duration::from_millis(500), "the budget is empty");
    assert_eq!(
        ddb_requests(&proxy),
        1,
        "the refused write carried the stored budget: no read"
    );
    // And an idle budget is taken from in one write by a fresh container.
    let idle = tenant("budget-idle");
    let (proxy, third) = counted_store(&env).await;
    assert_eq!(
        third.take_rate_token(&idle, &rate, now).await.unwrap(),
        Duration::ZERO
    );
    assert_eq!(ddb_requests(&proxy), 1);
}

/// The link and its event's done mark go in one request, and a batch reads its tenants'
/// integrations and its customers' links in one request: found, absent, and another tenant's.
#[tokio::test]
async fn a_link_is_written_with_its_done_mark_and_a_batch_reads_at_once() {
    let env = TestEnv::new().await;
    let (proxy, st) = counted_store(&env).await;
    let (a, b) = (tenant("batch-a"), tenant("batch-b"));
    st.save_connection(&a, conn(b"ct-a", "a.bitrix24.ru"), 0)
        .await
        .unwrap();
    let link = LeadLink {
        customer_id: "tg:1".into(),
        lead_id: 7,
        portal_id: "a.bitrix24.ru".into(),
        phone_e164: None,
        last_event_at: datetime!(2025-03-01 10:00:00 UTC),
        sent: serde_json::Map::new(),
    };
    proxy.reset_stats();
    let outcome = json!({"kind": "lead_created", "customer_id": "tg:1", "lead_id": 7});
    st.put_link_done(
        &a,
        &link,
        &LinkMeta::default(),
        &EventDone {
            event_id: "ev-9",
            ttl: Duration::from_secs(86400),
            outcome: &outcome,
        },
    )
    .await
    .unwrap();
    assert_eq!(ddb_requests(&proxy), 1, "one request for both");
    assert_eq!(st.get_link(&a, "tg:1").await.unwrap(), Some(link.clone()));
    assert_eq!(
        st.claim_event(
            &a,
            "ev-9",
            Duration::from_secs(60),
            OffsetDateTime::now_utc()
        )
        .await
        .unwrap(),
        Claim::AlreadyDone
    );

    proxy.reset_stats();
    let read = st
        .read_for_batch(&[
            (a.clone(), "tg:1".to_owned()),
            (a.clone(), "tg:2".to_owned()),
            (b.clone(), "tg:1".to_owned()),
        ])
        .await
        .unwrap();
    assert_eq!(ddb_requests(&proxy), 1, "one request for the batch");
    assert_eq!(
        read.integrations[a.as_str()].as_ref().map(|i| i.version),
        Some(1)
    );
    assert_eq!(read.integrations[b.as_str()], None, "b never connected");
    match &read.links[&(a.as_str().to_owned(), "tg:1".to_owned())] {
        Some(LinkState::Linked(l, _)) => assert_eq!(l, &link),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        read.links[&(a.as_str().to_owned(), "tg:2".to_owned())],
        None
    );
    assert_eq!(
        read.links[&(b.as_str().to_owned(), "tg:1".to_owned())],
        None,
        "a's link is not b's"
    );
}

/// Containers taking from one busy budget at the same time do not make each other retry: each
/// take is one request while tokens are left (the write adds to what is stored instead of
/// replacing what the container last saw).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_takes_from_a_busy_budget_cost_one_request_each() {
    let env = TestEnv::new().await;
    let (proxy, first) = counted_store(&env).await;
    let sdk = teleagent_tests::harness::sdk_config_at(&proxy.endpoint()).await;
    let t = tenant("busy-budget");
    let rate = RateParams::default(); // 2/s, burst 50: 30 takes never empty it
    assert_eq!(
        first
            .take_rate_token(&t, &rate, OffsetDateTime::now_utc())
            .await
            .unwrap(),
        Duration::ZERO
    );
    let containers: Vec<Store> = (0..3)
        .map(|_| Store::new(aws_sdk_dynamodb::Client::new(&sdk), env.table.clone()))
        .collect();
    // Every container learns the budget once (its first take meets a budget in use).
    for st in &containers {
        assert_eq!(
            st.take_rate_token(&t, &rate, OffsetDateTime::now_utc())
                .await
                .unwrap(),
            Duration::ZERO
        );
    }
    proxy.reset_stats();
    let runs = containers.iter().map(|st| {
        let t = t.clone();
        async move {
            for _ in 0..10 {
                let wait = st
                    .take_rate_token(&t, &rate, OffsetDateTime::now_utc())
                    .await
                    .unwrap();
                assert_eq!(wait, Duration::ZERO);
            }
        }
    });
    futures::future::join_all(runs).await;
    assert_eq!(
        ddb_requests(&proxy),
        30,
        "30 takes, one request each, with three containers racing"
    );
}

/// A token due within the horizon is taken at once, for a call that waits for it: the calls
/// stay paced at the rate, and each take is one request; a token due later is not taken, and a
/// container that knows the budget learns that without a request.
#[tokio::test]
async fn a_token_due_soon_is_reserved_in_one_request() {
    let env = TestEnv::new().await;
    let (proxy, st) = counted_store(&env).await;
    let t = tenant("reserve");
    let rate = RateParams {
        per_sec: 2.0,
        burst: 2.0,
    };
    let now = OffsetDateTime::now_utc();
    let horizon = Duration::from_secs(1);
    let mut afters = Vec::new();
    for _ in 0..4 {
        match st
            .reserve_rate_token(&t, &rate, now, horizon)
            .await
            .unwrap()
        {
            TokenTake::Taken { after } => afters.push(after.as_millis()),
            TokenTake::Empty { wait } => panic!("empty after {afters:?}: {wait:?}"),
        }
    }
    assert_eq!(
        afters,
        vec![0, 0, 500, 1000],
        "the burst, then one every 500 ms"
    );
    assert_eq!(ddb_requests(&proxy), 4, "one request per take");
    match st
        .reserve_rate_token(&t, &rate, now, horizon)
        .await
        .unwrap()
    {
        TokenTake::Empty { wait } => assert_eq!(wait, Duration::from_millis(1500)),
        other => panic!("{other:?}"),
    }
    assert_eq!(ddb_requests(&proxy), 4, "known empty: no request");
    // What the container's own takes left is known without a request too (the engine holds an
    // event back on it before its claim): the next token is due in 1.5 s, and none is due
    // once the time has come.
    assert_eq!(
        st.known_budget_wait(&t, &rate, now),
        Some(Duration::from_millis(1500))
    );
    let due = now + Duration::from_millis(1500);
    assert_eq!(st.known_budget_wait(&t, &rate, due), None);
    assert_eq!(
        st.known_budget_wait(&tenant("never-seen"), &rate, now),
        None
    );
}
