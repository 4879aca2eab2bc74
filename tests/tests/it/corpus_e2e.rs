//! End to end through the real function binaries (the `cargo lambda watch` stack of `e2e.rs`,
//! started once per test binary) against sandboxes that serve the catalogues of REAL public
//! Bitrix24 MCP servers (`tests/fixtures/catalogues`, corpus mode), plus the sandbox's own
//! per-operation profile with flat properties and a raw `fields` object. Each test connects a
//! tenant through the HTTP API, publishes a new customer, an update of it (higher score, status
//! change) and a second customer whose phone the portal already has under another spelling, lets
//! the poller deliver them, and checks the portal: one lead per customer, fields set, the
//! existing lead adopted rather than duplicated, no phone doubled. The answer mode alternates so
//! JSON and SSE are each covered at least twice.
//!
//! The tests take turns (`TURN`), and each waits out the last long-poll of the previous test's
//! poller before it publishes: every poller reads the one shared queue, and a `ReceiveMessage`
//! that an aborted poller left pending in moto still takes messages, which then stay invisible
//! for the queue's 30 s visibility timeout.

use std::time::{Duration, Instant};

use serde_json::json;
use shared::events::LeadStatus;
use teleagent_tests::local::poller::PollerOptions;
use teleagent_tests::sandbox::{AnswerMode, Catalogue, SandboxConfig};

use crate::e2e::{phone_count, wait_until, world};

/// One corpus test at a time (see the module doc).
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What differs between the servers, as far as the assertions go.
struct Case {
    cfg: SandboxConfig,
    /// Whether the connector can see the portal's user fields through a bound lead-fields tool
    /// (then the score is a UF_CRM_TELEAGENT_SCORE value, otherwise a line of text).
    score_in_user_field: bool,
}

/// A portal serving catalogue `c`; `user_fields`: it has UF_CRM_TELEAGENT_SCORE/HOTNESS.
fn corpus(c: Catalogue, mode: AnswerMode, user_fields: bool, score_in_user_field: bool) -> Case {
    Case {
        cfg: SandboxConfig {
            catalogue: Some(c),
            answer_mode: mode,
            has_teleagent_user_fields: user_fields,
            ..SandboxConfig::default()
        },
        score_in_user_field,
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

async fn three_events_land(case: Case) {
    // Declared first, so it is released after the world (and its poller) is gone.
    let _turn = TURN.lock().await;
    let started = Instant::now();
    let label = match case.cfg.catalogue {
        Some(c) => c.name().to_owned(),
        None => format!("{:?}", case.cfg.shape),
    };
    let watchable = !matches!(
        case.cfg.catalogue,
        Some(Catalogue::AaBlinov | Catalogue::Leosozza)
    );
    let w = world(case.cfg).await;
    // The portal's own lead, its phone typed the way a person would.
    let seeded = w.sandbox.seed_lead(json!({
        "TITLE": "Website form", "NAME": "Olim", "SOURCE_ID": "WEB",
        "PHONE": [{"VALUE": "+998 97 111 22 33", "VALUE_TYPE": "WORK"}],
    }));
    let (code, v) = w.connect(&w.sandbox.issue_token(true)).await;
    assert_eq!(code, 200, "{label}: connect: {v}");
    assert_eq!(v["success"], true, "{label}: connect: {v}");
    // Whether managers' changes can flow back (the corpus's expected.json says which servers'
    // lead lists filter and sort): connect says so in words when they cannot.
    assert_eq!(
        v.get("notice").is_none(),
        watchable,
        "{label}: connect's notice on change watching: {v}"
    );
    if !watchable {
        let notice = v["notice"].as_str().unwrap_or_default();
        assert!(
            notice.contains("will not reach TeleAgent"),
            "{label}: {notice}"
        );
    }
    let long_poll = Duration::from_secs(
        PollerOptions::default()
            .wait_time_secs
            .unsigned_abs()
            .into(),
    );
    tokio::time::sleep(long_poll + Duration::from_millis(500)).await;

    let new_phone = "+998901112233";
    let mut first = w.event("tg:1", 0, 40, "c1 first", new_phone);
    first.lead.status = Some(LeadStatus::New);
    let mut second = w.event("tg:1", 1, 90, "c1 second", new_phone);
    second.lead.status = Some(LeadStatus::Contacted);
    let known = w.event("tg:2", 2, 60, "c2 first", "+998971112233");
    for e in [&first, &second, &known] {
        w.producer.send(e).await.unwrap();
    }
    wait_until(
        &format!("{label}: every note in the portal"),
        Duration::from_secs(120),
        || {
            let text = w.portal_text();
            ["c1 first", "c1 second", "c2 first"]
                .iter()
                .all(|n| text.contains(n))
        },
    )
    .await;

    let ours = w.leads_by_customer();
    let all = w.sandbox.leads();
    assert_eq!(
        all.len(),
        2,
        "{label}: one new lead + the existing one: {all:#?}"
    );
    let c1 = match ours.get("tg:1").map(Vec::as_slice) {
        Some([one]) => one.clone(),
        other => panic!("{label}: exactly one lead for tg:1, got {other:?}"),
    };
    assert!(
        !ours.contains_key("tg:2"),
        "{label}: tg:2 adopted the existing lead"
    );
    assert_eq!(c1["ORIGINATOR_ID"], "teleagent", "{label}: {c1}");
    assert_eq!(c1["NAME"], "Name tg:1", "{label}: {c1}");
    assert_eq!(
        c1["STATUS_ID"], "IN_PROCESS",
        "{label}: the status moved: {c1}"
    );
    assert_eq!(phone_count(&c1), 1, "{label}: one phone: {c1}");
    assert_eq!(
        digits(c1["PHONE"][0]["VALUE"].as_str().unwrap_or("")),
        digits(new_phone),
        "{label}: {c1}"
    );
    let text = w.lead_text(&c1);
    if case.score_in_user_field {
        assert_eq!(
            c1["UF_CRM_TELEAGENT_SCORE"],
            json!(90.0),
            "{label}: the higher score: {c1}"
        );
    } else {
        assert!(
            text.contains("Score: 90"),
            "{label}: the higher score in the text: {text}"
        );
    }
    assert_eq!(
        text.matches("c1 second").count(),
        1,
        "{label}: the update's note once: {text}"
    );

    let existing = w.sandbox.lead(seeded).unwrap();
    let etext = w.lead_text(&existing);
    assert!(
        etext.contains("c2 first"),
        "{label}: tg:2's event went to the existing lead: {etext}"
    );
    assert_eq!(
        phone_count(&existing),
        1,
        "{label}: the existing lead keeps its one phone: {existing}"
    );
    assert_eq!(existing["TITLE"], "Website form", "{label}: {existing}");

    let st = w.status().await;
    assert_eq!(st["connected"], true, "{label}: {st}");
    assert_eq!(st["sync_status"], "active", "{label}: {st}");
    let calls = w.sandbox.calls();
    assert_eq!(
        calls.by_outcome.get("rpc_error"),
        None,
        "{label}: no JSON-RPC error: {calls:?}"
    );
    eprintln!(
        "corpus_e2e {label}: {:.1} s, tool calls {:?}, outcomes {:?}",
        started.elapsed().as_secs_f64(),
        calls.by_tool,
        calls.by_outcome
    );
}

/// yzel has entity CRUD tools only: no way to read lead fields, so the score goes into the text
/// even though the portal has the user fields; no comment tool, so notes go into COMMENTS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn yzel_catalogue_end_to_end_json() {
    three_events_land(corpus(Catalogue::Yzel, AnswerMode::Json, true, false)).await;
}

/// aa-blinov: JSON-string arguments, FastMCP answers (text + structuredContent), SSE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aa_blinov_catalogue_end_to_end_sse() {
    three_events_land(corpus(Catalogue::AaBlinov, AnswerMode::Sse, false, false)).await;
}

/// The same with the user fields in the portal: aa-blinov's `get_lead_fields` answers
/// `{"success": true, "fields": {...}}`, and the connector must see the fields inside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aa_blinov_catalogue_sees_user_fields_sse() {
    three_events_land(corpus(Catalogue::AaBlinov, AnswerMode::Sse, true, true)).await;
}

/// kostikpenzin: one `bx24_crm_leads {action}` tool; `list` pages through every page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kostikpenzin_catalogue_end_to_end_json() {
    three_events_land(corpus(
        Catalogue::Kostikpenzin,
        AnswerMode::Json,
        false,
        false,
    ))
    .await;
}

/// bit2beat: entity tools plus `b24_call` (statuses, duplicates) and `b24_crm_timeline_add`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bit2beat_catalogue_end_to_end_sse() {
    three_events_land(corpus(Catalogue::Bit2beat, AnswerMode::Sse, false, false)).await;
}

/// The sandbox's own per-operation profile: flat properties plus a raw `fields` object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lead_tools_flat_and_fields_end_to_end_sse() {
    three_events_land(Case {
        cfg: SandboxConfig {
            answer_mode: AnswerMode::Sse,
            has_teleagent_user_fields: true,
            ..SandboxConfig::default()
        },
        score_in_user_field: true,
    })
    .await;
}
