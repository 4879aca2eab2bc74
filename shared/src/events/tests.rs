//! Unit tests of the parser and the typed validation; the schema agreement and the SQS round trip
//! are in `tests/tests/it/events.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use serde_json::{Value, json};
use time::macros::datetime;

use super::*;

/// One table row's change to a valid event.
type JsonEdit = Box<dyn FnOnce(&mut Value)>;
type EventEdit = Box<dyn FnOnce(&mut LeadEvent)>;

fn full() -> Value {
    json!({
        "version": 1,
        "event_id": "0b6f2c1e-8f4a-4d3b-9c2e-7a1b2c3d4e5f",
        "tenant_id": "6f1c2e9a-3b7d-4c1e-9a2b-1d2e3f4a5b6c",
        "occurred_at": "2025-03-04T10:15:30.250+05:00",
        "customer": {"id": "tg:123", "name": "Ann", "phone": "+998901234567", "username": "ann"},
        "lead": {
            "intent": "buy", "score": 82, "hotness": "hot", "status": "qualified",
            "fields_collected": {"name": "Anna K", "phone": "998901234567", "product": "sofa",
                                 "budget": "1000 USD", "timeline": "this month", "color": "green"},
            "notes": "wants delivery"
        }
    })
}

fn parse(v: &Value) -> Result<LeadEvent, EventError> {
    LeadEvent::parse(&v.to_string())
}

/// Applies `edit` to a copy of the full event and parses it.
fn parse_edited(edit: impl FnOnce(&mut Value)) -> Result<LeadEvent, EventError> {
    let mut v = full();
    edit(&mut v);
    parse(&v)
}

#[test]
fn parses_every_field_of_a_full_event() {
    let e = parse(&full()).unwrap();
    assert_eq!(e.version, 1);
    assert_eq!(e.event_id, "0b6f2c1e-8f4a-4d3b-9c2e-7a1b2c3d4e5f");
    assert_eq!(e.tenant_id.as_str(), "6f1c2e9a-3b7d-4c1e-9a2b-1d2e3f4a5b6c");
    assert_eq!(e.occurred_at, datetime!(2025-03-04 10:15:30.250 +05:00));
    assert_eq!(e.occurred_at.offset().whole_hours(), 5);
    assert_eq!(e.customer.id, "tg:123");
    assert_eq!(e.customer.name.as_deref(), Some("Ann"));
    assert_eq!(e.customer.phone.as_deref(), Some("+998901234567"));
    assert_eq!(e.customer.username.as_deref(), Some("ann"));
    assert_eq!(e.lead.intent.as_deref(), Some("buy"));
    assert_eq!(e.lead.score, 82);
    assert_eq!(e.lead.hotness, Some(Hotness::Hot));
    assert_eq!(e.lead.status, Some(LeadStatus::Qualified));
    let f = &e.lead.fields_collected;
    assert_eq!(f.name.as_deref(), Some("Anna K"));
    assert_eq!(f.phone.as_deref(), Some("998901234567"));
    assert_eq!(f.product.as_deref(), Some("sofa"));
    assert_eq!(f.budget.as_deref(), Some("1000 USD"));
    assert_eq!(f.timeline.as_deref(), Some("this month"));
    assert_eq!(f.extra.len(), 1);
    assert_eq!(f.extra["color"], "green");
    assert_eq!(e.lead.notes.as_deref(), Some("wants delivery"));
    assert_eq!(e.group_id(), "6f1c2e9a-3b7d-4c1e-9a2b-1d2e3f4a5b6c:tg:123");
}

#[test]
fn minimal_event_parses_with_everything_optional_absent() {
    let e = LeadEvent::parse(
        r#"{"version":1,"event_id":"0b6f2c1e-8f4a-4d3b-9c2e-7a1b2c3d4e5f","tenant_id":"t-1",
            "occurred_at":"2025-03-04T10:15:30Z","customer":{"id":"tg:1"},"lead":{"score":0}}"#,
    )
    .unwrap();
    assert_eq!(e.customer.name, None);
    assert_eq!(e.lead.hotness, None);
    assert_eq!(e.lead.status, None);
    assert_eq!(e.lead.fields_collected, FieldsCollected::default());
    assert_eq!(e.display_name(), None);
    assert_eq!(e.raw_phone(), None);
}

#[test]
fn nulls_are_absent_everywhere_optional_and_missing_where_required() {
    let e = parse_edited(|v| {
        v["customer"]["name"] = Value::Null;
        v["lead"]["hotness"] = Value::Null;
        v["lead"]["status"] = Value::Null;
        v["lead"]["notes"] = Value::Null;
        v["lead"]["fields_collected"]["budget"] = Value::Null;
        v["lead"]["fields_collected"]["size"] = Value::Null;
    })
    .unwrap();
    assert_eq!(e.customer.name, None);
    assert_eq!(e.lead.hotness, None);
    assert_eq!(e.lead.status, None);
    assert_eq!(e.lead.notes, None);
    assert_eq!(e.lead.fields_collected.budget, None);
    assert!(!e.lead.fields_collected.extra.contains_key("size"));

    let e = parse_edited(|v| v["lead"]["fields_collected"] = Value::Null).unwrap();
    assert_eq!(e.lead.fields_collected, FieldsCollected::default());

    let err = parse_edited(|v| v["customer"]["id"] = Value::Null).unwrap_err();
    assert_eq!(err.reason(), "customer.id: is required");
    let err = parse_edited(|v| v["lead"]["score"] = Value::Null).unwrap_err();
    assert_eq!(err.reason(), "lead.score: is required");
}

#[test]
fn refusals_name_the_field_and_the_rule() {
    let cases: Vec<(JsonEdit, &str, &str)> = vec![
        (
            Box::new(|v| v["version"] = json!(2)),
            "version: must be 1",
            "future version",
        ),
        (
            Box::new(|v| {
                v.as_object_mut().unwrap().remove("event_id");
            }),
            "event_id: is required",
            "missing id",
        ),
        (
            Box::new(|v| v["event_id"] = json!("0b6f2c1e8f4a4d3b9c2e7a1b2c3d4e5f")),
            "event_id: must be a UUID (8-4-4-4-12 hex digits)",
            "simple uuid form",
        ),
        (
            Box::new(|v| v["tenant_id"] = json!("a:b")),
            "tenant_id: tenant id may hold only letters, digits, '-', '_' and '.'",
            "colon forges a group",
        ),
        (
            Box::new(|v| v["tenant_id"] = json!(" t-1")),
            "tenant_id: must not start or end with whitespace",
            "padded tenant",
        ),
        (
            Box::new(|v| v["tenant_id"] = json!("t".repeat(64))),
            "tenant_id: longer than 63 characters",
            "group id would pass 128",
        ),
        (
            Box::new(|v| v["occurred_at"] = json!("2025-03-04T10:15:30")),
            "occurred_at: must be an RFC 3339 date-time like 2025-01-31T09:30:00Z (offset required)",
            "no offset",
        ),
        (
            Box::new(|v| v["occurred_at"] = json!("2025-02-30T10:15:30Z")),
            "occurred_at: is not a real date and time",
            "february 30",
        ),
        (
            Box::new(|v| v["customer"]["id"] = json!("tg 1")),
            "customer.id: may hold only visible ASCII characters (no whitespace or control characters)",
            "space",
        ),
        (
            Box::new(|v| v["customer"]["id"] = json!("x".repeat(65))),
            "customer.id: longer than 64 characters",
            "long id",
        ),
        (
            Box::new(|v| v["customer"]["id"] = json!("")),
            "customer.id: must not be empty",
            "empty id",
        ),
        (
            Box::new(|v| v["customer"]["nick"] = json!("a")),
            "customer: unknown field \"nick\"",
            "unknown customer field",
        ),
        (
            Box::new(|v| v["lead"]["score"] = json!(101)),
            "lead.score: must be between 0 and 100",
            "score 101",
        ),
        (
            Box::new(|v| v["lead"]["score"] = json!(-1)),
            "lead.score: must be between 0 and 100",
            "negative score",
        ),
        (
            Box::new(|v| v["lead"]["score"] = json!(8.5)),
            "lead.score: must be an integer",
            "fraction",
        ),
        (
            Box::new(|v| v["lead"]["score"] = json!("82")),
            "lead.score: must be an integer",
            "string score",
        ),
        (
            Box::new(|v| v["lead"]["hotness"] = json!("HOT")),
            "lead.hotness: must be cold, warm or hot",
            "upper case",
        ),
        (
            Box::new(|v| v["lead"]["status"] = json!("done")),
            "lead.status: must be new, contacted, qualified, won or lost",
            "unknown status",
        ),
        (
            Box::new(|v| v["lead"]["notes"] = json!("n".repeat(4001))),
            "lead.notes: longer than 4000 characters",
            "long notes",
        ),
        (
            Box::new(|v| v["lead"]["fields_collected"]["budget"] = json!(1000)),
            "lead.fields_collected.budget: must be a string",
            "number value",
        ),
        (
            Box::new(|v| v["lead"]["fields_collected"]["color"] = json!("g".repeat(1001))),
            "lead.fields_collected[\"color\"]: longer than 1000 characters",
            "long extra",
        ),
        (
            Box::new(|v| v["lead"]["fields_collected"]["k".repeat(65)] = json!("v")),
            "lead.fields_collected: a key is longer than 64 characters",
            "long key",
        ),
        (
            Box::new(|v| v["extra"] = json!(1)),
            "body: unknown field \"extra\"",
            "unknown top field",
        ),
        (
            Box::new(|v| *v = json!([1])),
            "body: must be a JSON object",
            "array",
        ),
    ];
    for (edit, want, why) in cases {
        let err = parse_edited(edit).expect_err(why);
        assert_eq!(err.reason(), want, "{why}");
        assert_eq!(err.kind(), EventErrorKind::Invalid, "{why}");
    }
}

#[test]
fn bounds_are_counted_in_characters_not_bytes() {
    // 200 Cyrillic letters are 400 bytes and still within the name bound.
    let e = parse_edited(|v| v["customer"]["name"] = json!("Я".repeat(200))).unwrap();
    assert_eq!(e.customer.name.unwrap().chars().count(), 200);
    assert!(parse_edited(|v| v["customer"]["name"] = json!("Я".repeat(201))).is_err());
}

#[test]
fn fields_collected_takes_at_most_twenty_keys_nulls_included() {
    let twenty = |v: &mut Value| {
        let f = v["lead"]["fields_collected"].as_object_mut().unwrap();
        for i in 0..14 {
            f.insert(format!("k{i}"), json!("v"));
        }
        assert_eq!(f.len(), 20);
    };
    assert_eq!(
        parse_edited(twenty)
            .unwrap()
            .lead
            .fields_collected
            .extra
            .len(),
        15
    );
    let err = parse_edited(|v| {
        twenty(v);
        v["lead"]["fields_collected"]["k99"] = Value::Null;
    })
    .unwrap_err();
    assert_eq!(err.reason(), "lead.fields_collected: more than 20 keys");
}

#[test]
fn reasons_never_echo_long_values_and_stay_short() {
    let secret = "S".repeat(5000);
    let err = parse_edited(|v| v["lead"]["notes"] = json!(secret)).unwrap_err();
    assert!(!err.reason().contains("SSSS"), "{}", err.reason());
    let err = parse_edited(|v| v["lead"]["fields_collected"][&secret] = json!("v")).unwrap_err();
    assert!(!err.reason().contains(&"S".repeat(40)), "{}", err.reason());
    let err = parse_edited(|v| v["customer"][&secret] = json!("v")).unwrap_err();
    assert!(err.reason().chars().count() <= 240, "{}", err.reason());
    assert!(!err.reason().contains(&"S".repeat(40)), "{}", err.reason());
    let err = LeadEvent::parse(&format!("{{\"notes\": \"{secret}")).unwrap_err();
    assert_eq!(err.kind(), EventErrorKind::NotJson);
    assert!(!err.reason().contains("SSSS"), "{}", err.reason());
}

#[test]
fn body_over_64_kib_is_refused_before_parsing() {
    let body = format!("{}{}", " ".repeat(MAX_BODY_BYTES), full());
    let err = LeadEvent::parse(&body).unwrap_err();
    assert_eq!(err.kind(), EventErrorKind::TooLarge);
    // Exactly at the limit is fine.
    let text = full().to_string();
    let padded = format!("{}{}", " ".repeat(MAX_BODY_BYTES - text.len()), text);
    assert!(LeadEvent::parse(&padded).is_ok());
}

#[test]
fn integers_are_judged_by_value_like_json_schema() {
    assert_eq!(
        parse_edited(|v| v["lead"]["score"] = json!(82.0))
            .unwrap()
            .lead
            .score,
        82
    );
    assert_eq!(
        parse_edited(|v| v["version"] = json!(1.0)).unwrap().version,
        1
    );
    let e = LeadEvent::parse(&full().to_string().replace("\"score\":82", "\"score\":1e2")).unwrap();
    assert_eq!(e.lead.score, 100);
}

#[test]
fn time_shape_refuses_the_corners_parsers_disagree_on() {
    for (raw, ok) in [
        ("2025-03-04T10:15:30Z", true),
        ("2025-03-04T10:15:30.123456789-03:30", true),
        ("0000-01-01T00:00:00Z", true),
        ("2025-03-04t10:15:30Z", false),
        ("2025-03-04T10:15:30z", false),
        ("2025-03-04T10:15:30.1234567890Z", false),
        ("2025-03-04T10:15:30.Z", false),
        ("2016-12-31T23:59:60Z", false),
        ("2025-03-04 10:15:30Z", false),
        ("2025-03-04T10:15:30+0500", false),
        ("2025-03-04T10:15:30+05:00 ", false),
    ] {
        assert_eq!(shape::is_rfc3339_shape(raw), ok, "{raw}");
    }
}

#[test]
fn json_round_trip_is_lossless() {
    let e = parse(&full()).unwrap();
    let again = LeadEvent::parse(&e.to_json()).unwrap();
    assert_eq!(again, e);
    assert_eq!(again.occurred_at.offset(), e.occurred_at.offset());
    // Absent options are left out, not written as null.
    let minimal = LeadEvent::new(TenantId::parse("t-1").unwrap(), "tg:1", 5);
    let v: Value = serde_json::from_str(&minimal.to_json()).unwrap();
    assert_eq!(v["customer"], json!({"id": "tg:1"}));
    assert_eq!(v["lead"], json!({"score": 5}));
}

#[test]
fn new_fills_id_version_and_millisecond_time() {
    let e = LeadEvent::new(TenantId::parse("t-1").unwrap(), "tg:42", 70);
    assert_eq!(e.version, 1);
    assert!(shape::is_hyphenated_uuid(&e.event_id));
    assert_eq!(e.occurred_at.nanosecond() % 1_000_000, 0);
    assert!(e.occurred_at.offset().is_utc());
    assert!((OffsetDateTime::now_utc() - e.occurred_at).whole_seconds() < 5);
    assert_ne!(
        e.event_id,
        LeadEvent::new(e.tenant_id.clone(), "tg:42", 70).event_id
    );
    e.validate().unwrap();
    assert_eq!(LeadEvent::parse(&e.to_json()).unwrap(), e);
}

#[test]
fn validate_holds_built_events_to_the_parser_rules() {
    let base = || LeadEvent::new(TenantId::parse("t-1").unwrap(), "tg:42", 70);
    let cases: Vec<(EventEdit, &str)> = vec![
        (Box::new(|e| e.version = 2), "version: must be 1"),
        (
            Box::new(|e| e.event_id = "nope".into()),
            "event_id: must be a UUID (8-4-4-4-12 hex digits)",
        ),
        (
            Box::new(|e| e.lead.score = 101),
            "lead.score: must be between 0 and 100",
        ),
        (
            Box::new(|e| e.customer.id = "tg:é".into()),
            "customer.id: may hold only visible ASCII characters (no whitespace or control characters)",
        ),
        (
            Box::new(|e| e.customer.username = Some("u".repeat(65))),
            "customer.username: longer than 64 characters",
        ),
        (
            Box::new(|e| {
                e.lead
                    .fields_collected
                    .extra
                    .insert("name".into(), "x".into())
                    .map(drop)
                    .unwrap_or(())
            }),
            "lead.fields_collected.name: belongs in its named field, not in extra",
        ),
        (
            Box::new(|e| {
                e.lead
                    .fields_collected
                    .extra
                    .insert(String::new(), "x".into())
                    .map(drop)
                    .unwrap_or(())
            }),
            "lead.fields_collected: a key is empty",
        ),
        (
            Box::new(|e| {
                for i in 0..21 {
                    e.lead
                        .fields_collected
                        .extra
                        .insert(format!("k{i}"), "v".into());
                }
            }),
            "lead.fields_collected: more than 20 keys",
        ),
        (
            Box::new(|e| e.occurred_at = datetime!(-0001-01-01 00:00 UTC)),
            "occurred_at: cannot be written as RFC 3339 (year 0000..9999)",
        ),
    ];
    for (edit, want) in cases {
        let mut e = base();
        edit(&mut e);
        assert_eq!(e.validate().unwrap_err().reason(), want);
    }
    // An offset with seconds cannot be written as is; it goes out in UTC, the same instant.
    let mut e = base();
    e.occurred_at = e
        .occurred_at
        .to_offset(time::UtcOffset::from_hms(1, 0, 30).unwrap());
    e.validate().unwrap();
    assert_eq!(
        LeadEvent::parse(&e.to_json()).unwrap().occurred_at,
        e.occurred_at
    );
}

#[test]
fn customer_values_win_and_blank_values_do_not() {
    let mut e = parse(&full()).unwrap();
    assert_eq!(e.display_name(), Some("Ann"));
    assert_eq!(e.raw_phone(), Some("+998901234567"));
    e.customer.name = Some("  ".into());
    e.customer.phone = None;
    assert_eq!(e.display_name(), Some("Anna K"));
    assert_eq!(e.raw_phone(), Some("998901234567"));
}

#[test]
fn enums_speak_the_wire_spelling() {
    for h in Hotness::ALL {
        assert_eq!(Hotness::from_wire(h.as_str()), Some(h));
        assert_eq!(serde_json::to_value(h).unwrap(), json!(h.as_str()));
    }
    for s in LeadStatus::ALL {
        assert_eq!(LeadStatus::from_wire(s.as_str()), Some(s));
        assert_eq!(
            serde_json::from_value::<LeadStatus>(json!(s.as_str())).unwrap(),
            s
        );
    }
}
