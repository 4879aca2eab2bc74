//! The lead event contract held from both sides: one table of bodies, each judged by the Rust
//! parser and by `events/lead-event.v1.schema.json` (the Python pipeline's view), which must agree
//! with each other and with the row; then the typed producer's round trip through moto's FIFO SQS.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is the failure report

use std::sync::LazyLock;

use aws_sdk_sqs::types::MessageSystemAttributeName;
use serde_json::{Value, json};
use shared::events::{EventErrorKind, LeadEvent, LeadEventProducer, MAX_BODY_BYTES, ProducerError};
use shared::tenant::TenantId;
use teleagent_tests::harness::{TestEnv, workspace_root};

fn read(rel: &str) -> String {
    std::fs::read_to_string(workspace_root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

static SCHEMA: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(&read("events/lead-event.v1.schema.json")).unwrap();
    assert!(
        jsonschema::meta::is_valid(&schema),
        "the schema is not a valid JSON Schema"
    );
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap()
});

/// The schema's verdict on a raw body, plus the one rule a schema cannot state (its `$comment`
/// says so): the body size. The errors explain a disagreement.
fn schema_verdict(body: &str) -> Result<(), String> {
    if body.len() > MAX_BODY_BYTES {
        return Err("body too large".into());
    }
    let value: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    let errors: Vec<String> = SCHEMA
        .iter_errors(&value)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

fn sample() -> Value {
    serde_json::from_str(&read("events/lead-event.sample.json")).unwrap()
}

/// The sample with one JSON-pointer location set (parents must exist).
fn with(pointer: &str, value: Value) -> String {
    let mut v = sample();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    target
        .as_object_mut()
        .unwrap()
        .insert(key.to_owned(), value);
    v.to_string()
}

/// The sample with one JSON-pointer location removed.
fn without(pointer: &str) -> String {
    let mut v = sample();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = if parent.is_empty() {
        &mut v
    } else {
        v.pointer_mut(parent).unwrap()
    };
    assert!(
        target.as_object_mut().unwrap().remove(key).is_some(),
        "{pointer}"
    );
    v.to_string()
}

/// `fields_collected` with `n` keys: the five named ones, then `k5`, `k6`, ...
fn n_fields(n: usize) -> Value {
    let mut m = serde_json::Map::new();
    for (i, name) in ["name", "phone", "product", "budget", "timeline"]
        .iter()
        .enumerate()
        .take(n)
    {
        m.insert((*name).to_owned(), json!(format!("v{i}")));
    }
    for i in 5..n {
        m.insert(format!("k{i}"), json!("v"));
    }
    Value::Object(m)
}

const MINIMAL: &str = r#"{"version":1,"event_id":"3f2b8c1e-5a6d-4e7f-9a0b-1c2d3e4f5a6b","tenant_id":"t-1","occurred_at":"2025-06-12T09:03:27Z","customer":{"id":"tg:1"},"lead":{"score":50}}"#;

/// (body, valid, why)
fn table() -> Vec<(String, bool, &'static str)> {
    let ok = |b: String, why| (b, true, why);
    let bad = |b: String, why| (b, false, why);
    let at = |t: &str| with("/occurred_at", json!(t));
    let cid = |c: &str| with("/customer/id", json!(c));
    let padded = {
        let s = sample().to_string();
        format!("{}{s}", " ".repeat(MAX_BODY_BYTES + 1 - s.len()))
    };
    let at_limit = {
        let s = sample().to_string();
        format!("{}{s}", " ".repeat(MAX_BODY_BYTES - s.len()))
    };
    vec![
        // --- valid ---
        ok(sample().to_string(), "the shipped sample"),
        ok(MINIMAL.to_owned(), "only the required fields"),
        ok(
            MINIMAL.replace(r#""score":50"#, r#""score":50,"hotness":null,"status":null,"intent":null,"notes":null,"fields_collected":null"#),
            "null optional lead fields are absent",
        ),
        ok(
            MINIMAL.replace(r#"{"id":"tg:1"}"#, r#"{"id":"tg:1","name":null,"phone":null,"username":null}"#),
            "null optional customer fields are absent",
        ),
        ok(with("/lead/fields_collected/budget", Value::Null), "null named field value"),
        ok(with("/lead/fields_collected/size", Value::Null), "null extra field value"),
        ok(with("/lead/score", json!(0)), "score 0"),
        ok(with("/lead/score", json!(100)), "score 100"),
        ok(with("/lead/score", json!(82.0)), "82.0 is an integer by value"),
        ok(MINIMAL.replace(r#""score":50"#, r#""score":1e2"#), "1e2 is the integer 100"),
        ok(with("/version", json!(1.0)), "1.0 equals the const 1"),
        ok(with("/event_id", json!("3F2B8C1E-5A6D-4E7F-9A0B-1C2D3E4F5A6B")), "upper-case uuid"),
        ok(with("/event_id", json!("00000000-0000-0000-0000-000000000000")), "nil uuid"),
        ok(with("/tenant_id", json!("acme_corp.eu-1")), "tenant id with dot and underscore"),
        ok(with("/tenant_id", json!("t".repeat(63))), "63-character tenant id"),
        ok(cid(&"x".repeat(64)), "64-character customer id"),
        ok(cid("wa:+998901234567/~!@#$%^&*()[]{}"), "punctuation in customer id"),
        ok(at("2025-06-12T09:03:27.123456789+05:30"), "nanoseconds and a half-hour offset"),
        ok(at("2025-06-12T09:03:27-00:00"), "unknown-local-offset spelling"),
        ok(at("2024-02-29T23:59:59Z"), "leap day"),
        ok(at("0000-01-01T00:00:00Z"), "year zero"),
        ok(with("/customer/name", json!("Я".repeat(200))), "200 Cyrillic letters (400 bytes)"),
        ok(with("/customer/name", json!("😀".repeat(200))), "200 astral code points"),
        ok(with("/customer/phone", json!("p".repeat(64))), "64-character phone"),
        ok(with("/customer/username", json!("u".repeat(64))), "64-character username"),
        ok(with("/lead/intent", json!("i".repeat(200))), "200-character intent"),
        ok(with("/lead/notes", json!("n\n".repeat(2000))), "4000-character notes with newlines"),
        ok(with("/lead/fields_collected", n_fields(20)), "20 keys in fields_collected"),
        ok(with("/lead/fields_collected", json!({})), "empty fields_collected"),
        ok(with(&format!("/lead/fields_collected/{}", "k".repeat(64)), json!("v")), "64-character key"),
        ok(with("/lead/fields_collected/product", json!("p".repeat(1000))), "1000-character named value"),
        ok(with("/lead/fields_collected/color", json!("c".repeat(1000))), "1000-character extra value"),
        ok(at_limit, "exactly 64 KiB"),
        // --- invalid: whole body ---
        bad("not json".into(), "not JSON"),
        bad(String::new(), "empty body"),
        bad("[]".into(), "array body"),
        bad("null".into(), "null body"),
        bad(r#""event""#.into(), "string body"),
        bad(padded, "one byte over 64 KiB"),
        bad(with("/extra", json!(1)), "unknown top-level field"),
        // --- version ---
        bad(without("/version"), "no version"),
        bad(with("/version", json!(2)), "version 2"),
        bad(with("/version", json!("1")), "version as a string"),
        bad(with("/version", Value::Null), "null version"),
        // --- event_id ---
        bad(without("/event_id"), "no event id"),
        bad(with("/event_id", json!("not-a-uuid")), "not a uuid"),
        bad(with("/event_id", json!("3f2b8c1e5a6d4e7f9a0b1c2d3e4f5a6b")), "uuid without hyphens"),
        bad(with("/event_id", json!("{3f2b8c1e-5a6d-4e7f-9a0b-1c2d3e4f5a6b}")), "braced uuid"),
        bad(with("/event_id", json!("urn:uuid:3f2b8c1e-5a6d-4e7f-9a0b-1c2d3e4f5a6b")), "urn uuid"),
        bad(with("/event_id", json!("3f2b8c1e-5a6d-4e7f-9a0b-1c2d3e4f5a6g")), "non-hex digit"),
        bad(with("/event_id", json!(12345)), "numeric id"),
        // --- tenant_id ---
        bad(without("/tenant_id"), "no tenant"),
        bad(with("/tenant_id", json!("")), "empty tenant"),
        bad(with("/tenant_id", json!("a:b")), "colon would forge a group id"),
        bad(with("/tenant_id", json!("a#b")), "hash would forge a key"),
        bad(with("/tenant_id", json!(" t-1")), "padded tenant"),
        bad(with("/tenant_id", json!("t".repeat(64))), "64-character tenant: group id over 128"),
        bad(with("/tenant_id", json!(7)), "numeric tenant"),
        // --- occurred_at ---
        bad(without("/occurred_at"), "no time"),
        bad(at("2025-06-12T09:03:27"), "no offset"),
        bad(at("2025-06-12"), "date only"),
        bad(at("2025-06-12 09:03:27Z"), "space separator"),
        bad(at("2025-06-12t09:03:27Z"), "lower-case t"),
        bad(at("2025-06-12T09:03:27z"), "lower-case z"),
        bad(at("2016-12-31T23:59:60Z"), "leap second"),
        bad(at("2025-02-30T09:03:27Z"), "february 30"),
        bad(at("2023-02-29T09:03:27Z"), "not a leap year"),
        bad(at("2025-06-12T24:00:00Z"), "hour 24"),
        bad(at("2025-06-12T09:60:00Z"), "minute 60"),
        bad(at("2025-06-12T09:03:27+24:00"), "offset hour 24"),
        bad(at("2025-06-12T09:03:27+05:60"), "offset minute 60"),
        bad(at("2025-06-12T09:03:27+0500"), "offset without colon"),
        bad(at("2025-06-12T09:03:27.1234567890Z"), "ten fraction digits"),
        bad(at("2025-06-12T09:03:27.Z"), "empty fraction"),
        bad(with("/occurred_at", json!(1_749_719_007)), "unix seconds"),
        // --- customer ---
        bad(without("/customer"), "no customer"),
        bad(with("/customer", Value::Null), "null customer"),
        bad(with("/customer", json!([])), "customer array"),
        bad(without("/customer/id"), "no customer id"),
        bad(cid(""), "empty customer id"),
        bad(cid("tg 1"), "space in customer id"),
        bad(cid("tg:1\t"), "tab in customer id"),
        bad(cid("tg:\u{0}1"), "NUL in customer id"),
        bad(cid("tg:\u{a0}1"), "no-break space in customer id"),
        bad(cid("tg:дима"), "non-ASCII customer id (SQS group id alphabet)"),
        bad(cid(&"x".repeat(65)), "65-character customer id"),
        bad(with("/customer/id", json!(123)), "numeric customer id"),
        bad(with("/customer/nick", json!("a")), "unknown customer field"),
        bad(with("/customer/name", json!("Я".repeat(201))), "201-character name"),
        bad(with("/customer/name", json!(5)), "numeric name"),
        bad(with("/customer/phone", json!("p".repeat(65))), "65-character phone"),
        bad(with("/customer/phone", json!(998_901_234_567_u64)), "numeric phone"),
        bad(with("/customer/username", json!("u".repeat(65))), "65-character username"),
        // --- lead ---
        bad(without("/lead"), "no lead"),
        bad(with("/lead", json!("hot")), "lead as a string"),
        bad(without("/lead/score"), "no score"),
        bad(with("/lead/score", Value::Null), "null score"),
        bad(with("/lead/score", json!(101)), "score 101"),
        bad(with("/lead/score", json!(-1)), "negative score"),
        bad(with("/lead/score", json!(8.5)), "fractional score"),
        bad(with("/lead/score", json!("82")), "score as a string"),
        bad(with("/lead/hotness", json!("HOT")), "upper-case hotness"),
        bad(with("/lead/hotness", json!("lukewarm")), "unknown hotness"),
        bad(with("/lead/hotness", json!(1)), "numeric hotness"),
        bad(with("/lead/status", json!("done")), "unknown status"),
        bad(with("/lead/status", json!("Won")), "capitalised status"),
        bad(with("/lead/intent", json!("i".repeat(201))), "201-character intent"),
        bad(with("/lead/notes", json!("n".repeat(4001))), "4001-character notes"),
        bad(with("/lead/notes", json!(["a"])), "notes as an array"),
        bad(with("/lead/priority", json!(1)), "unknown lead field"),
        // --- fields_collected ---
        bad(with("/lead/fields_collected", json!(["name"])), "fields_collected array"),
        bad(with("/lead/fields_collected", json!("name=Ann")), "fields_collected string"),
        bad(with("/lead/fields_collected", n_fields(21)), "21 keys"),
        bad(
            {
                let mut f = n_fields(20);
                f["k20"] = Value::Null;
                with("/lead/fields_collected", f)
            },
            "21 keys, one of them null",
        ),
        bad(with("/lead/fields_collected/budget", json!(1000)), "numeric named value"),
        bad(with("/lead/fields_collected/color", json!(true)), "boolean extra value"),
        bad(with("/lead/fields_collected/color", json!({"a": "b"})), "nested object value"),
        bad(with("/lead/fields_collected/product", json!("p".repeat(1001))), "1001-character named value"),
        bad(with("/lead/fields_collected/color", json!("c".repeat(1001))), "1001-character extra value"),
        bad(with(&format!("/lead/fields_collected/{}", "k".repeat(65)), json!("v")), "65-character key"),
        bad(with("/lead/fields_collected/", json!("v")), "empty key"),
    ]
}

#[test]
fn rust_parser_and_json_schema_agree_on_every_row() {
    let rows = table();
    let mut valid = 0;
    for (body, want, why) in &rows {
        let rust = LeadEvent::parse(body);
        let schema = schema_verdict(body);
        assert_eq!(
            rust.is_ok(),
            *want,
            "Rust parser on {why:?}: {:?}",
            rust.as_ref().err().map(|e| e.reason())
        );
        assert_eq!(schema.is_ok(), *want, "schema on {why:?}: {schema:?}");
        if let Err(e) = &rust {
            assert!(
                e.reason().chars().count() <= 240 && !e.reason().contains(&"x".repeat(40)),
                "{why}: reason not short or echoes input: {}",
                e.reason()
            );
        }
        if let Ok(event) = rust {
            valid += 1;
            // What the parser accepted, written back, is accepted by both again, unchanged.
            let written = event.to_json();
            assert_eq!(LeadEvent::parse(&written).as_ref(), Ok(&event), "{why}");
            assert_eq!(schema_verdict(&written), Ok(()), "{why}: written form");
        }
    }
    assert!(valid >= 30 && rows.len() - valid >= 80, "table shrank");
}

#[test]
fn sample_is_the_full_shape() {
    let e = LeadEvent::parse(&read("events/lead-event.sample.json")).unwrap();
    assert_eq!(e.display_name(), Some("Dilnoza Karimova"));
    assert_eq!(e.raw_phone(), Some("998901234567"));
    assert!(e.lead.hotness.is_some() && e.lead.status.is_some());
    assert!(e.lead.fields_collected.product.is_some());
    assert!(!e.lead.fields_collected.extra.is_empty());
    assert_eq!(
        e.group_id(),
        "6f1c2e9a-3b7d-4c1e-9a2b-1d2e3f4a5b6c:tg:582931047"
    );
}

#[test]
fn error_kinds_separate_size_syntax_and_rules() {
    let kind = |b: &str| LeadEvent::parse(b).unwrap_err().kind();
    assert_eq!(kind("{"), EventErrorKind::NotJson);
    assert_eq!(
        kind(&" ".repeat(MAX_BODY_BYTES + 1)),
        EventErrorKind::TooLarge
    );
    assert_eq!(
        kind(&with("/lead/score", json!(101))),
        EventErrorKind::Invalid
    );
}

#[tokio::test]
async fn producer_round_trip_through_fifo_queue() {
    let env = TestEnv::new().await;
    let sqs = &env.clients.sqs;
    let producer = LeadEventProducer::new(sqs.clone(), env.queue_url.clone());

    let mut event = LeadEvent::parse(&read("events/lead-event.sample.json")).unwrap();
    event.event_id = uuid::Uuid::new_v4().to_string();
    event.tenant_id = TenantId::parse(&uuid::Uuid::new_v4().to_string()).unwrap();
    producer.send(&event).await.unwrap();
    // The same event again (a producer retry): FIFO deduplication on event_id drops it.
    producer.send(&event).await.unwrap();
    // An invalid event is refused before SQS sees it.
    let mut invalid = event.clone();
    invalid.event_id = uuid::Uuid::new_v4().to_string();
    invalid.lead.score = 101;
    match producer.send(&invalid).await {
        Err(ProducerError::Invalid(e)) => {
            assert_eq!(e.reason(), "lead.score: must be between 0 and 100")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }

    let out = sqs
        .receive_message()
        .queue_url(&env.queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .message_system_attribute_names(MessageSystemAttributeName::All)
        .send()
        .await
        .unwrap();
    let messages = out.messages();
    assert_eq!(
        messages.len(),
        1,
        "one message after a duplicate and an invalid send"
    );
    let msg = &messages[0];
    let back = LeadEvent::parse(msg.body().unwrap()).unwrap();
    assert_eq!(back, event);
    let attrs = msg.attributes().unwrap();
    assert_eq!(
        attrs.get(&MessageSystemAttributeName::MessageGroupId),
        Some(&format!("{}:tg:582931047", event.tenant_id))
    );
    assert_eq!(
        attrs.get(&MessageSystemAttributeName::MessageDeduplicationId),
        Some(&event.event_id)
    );
}

#[tokio::test]
async fn producer_reports_an_unreachable_queue_as_a_send_error() {
    let env = TestEnv::new().await;
    let producer = LeadEventProducer::new(
        env.clients.sqs.clone(),
        format!("{}-missing.fifo", env.queue_url.trim_end_matches(".fifo")),
    );
    let event = LeadEvent::new(TenantId::parse("t-1").unwrap(), "tg:1", 10);
    match producer.send(&event).await {
        Err(ProducerError::Send(_)) => {}
        other => panic!("expected Send error, got {other:?}"),
    }
}

/// The outbound contract: what `shared::events::LeadChanged` writes is what
/// `events/lead-changed.v1.schema.json` promises the Python consumer, and the schema refuses
/// what the type could never write.
#[test]
fn lead_changed_events_match_their_json_schema() {
    use shared::events::{Change, Changes, LeadChanged, Stage, StatusChange};
    let schema: Value = serde_json::from_str(&read("events/lead-changed.v1.schema.json")).unwrap();
    assert!(
        jsonschema::meta::is_valid(&schema),
        "not a valid JSON Schema"
    );
    let v = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&schema)
        .unwrap();
    let at = time::OffsetDateTime::now_utc();
    let ev = LeadChanged {
        version: 1,
        kind: "lead.changed".into(),
        event_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: uuid::Uuid::new_v4().to_string(),
        customer_id: "tg:123".into(),
        lead_id: 42,
        modified_at: at,
        observed_at: at,
        changes: Changes {
            status: Some(StatusChange {
                from: Some("IN_PROCESS".into()),
                to: Some("JUNK".into()),
                stage: Stage::Lost,
            }),
            name: Some(Change {
                from: Some("Ann".into()),
                to: None,
            }),
            assigned_by_id: Some(Change {
                from: Some("1".into()),
                to: Some("7".into()),
            }),
            ..Changes::default()
        },
    };
    let sample: Value = serde_json::from_str(&read("events/lead-changed.sample.json")).unwrap();
    assert!(v.is_valid(&sample), "the sample follows the schema");
    let typed: LeadChanged = serde_json::from_value(sample).unwrap();
    assert_eq!(typed.changes.status.unwrap().stage, Stage::Lost);
    let written = serde_json::to_value(&ev).unwrap();
    let errors: Vec<String> = v.iter_errors(&written).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?} in {written}");
    let back: LeadChanged = serde_json::from_value(written.clone()).unwrap();
    assert_eq!(back, ev, "the consumer's view reads back as written");
    for (patch, why) in [
        (json!({"changes": {}}), "no change at all"),
        (json!({"type": "lead.created"}), "another type"),
        (
            json!({"changes": {"status": {"from": "NEW", "to": "JUNK", "stage": "junk"}}}),
            "a stage outside TeleAgent's words",
        ),
        (
            json!({"changes": {"title": {"from": "a", "to": "b"}}}),
            "a field the contract does not report",
        ),
        (json!({"lead_id": "42"}), "the lead id as text"),
    ] {
        let mut bad = written.clone();
        for (k, val) in patch.as_object().unwrap() {
            bad[k] = val.clone();
        }
        assert!(!v.is_valid(&bad), "the schema accepts {why}");
    }
}
