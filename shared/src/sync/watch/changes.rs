//! The change rules, as pure functions: what one row of the change list says changed, against
//! what the link last sent and last saw. No I/O here, so every rule is tested by table.
//!
//! - A field's baseline is what change watching last saw of it, else the value last sent: a
//!   value the connector wrote itself is therefore never reported back (its own writes do not
//!   echo), and a manager's change is reported once (it is then the seen value).
//! - A field with no baseline (never sent, never seen: the responsible user on a lead's first
//!   round) is recorded and not reported, so a new lead does not look "changed" by its defaults.
//! - A field the list did not return (a portal without the connector's user fields, a server
//!   that ignores `select`) is left out: unknown is not empty.

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::events::{
    Change, Changes, EVENT_VERSION, LEAD_CHANGED, LeadChanged, Stage, StatusChange,
};
use crate::sync::fields::{UF_HOTNESS, UF_SCORE, same_value};

/// The Bitrix24 fields whose changes are reported.
pub const WATCHED: [&str; 5] = ["STATUS_ID", "NAME", "ASSIGNED_BY_ID", UF_SCORE, UF_HOTNESS];

/// What one row says: the changes to report, and the `seen` map the link should hold after.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Observation {
    pub changes: Changes,
    pub seen: Map<String, Value>,
}

/// A field value as text; empty and null are `None`.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.trim().to_owned()),
        other => Some(other.to_string()),
    }
}

fn same(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(x), Some(y)) => same_value(&Value::String(x.clone()), &Value::String(y.clone())),
        (None, None) => true,
        _ => false,
    }
}

/// Compares one row of the change list with the link's `sent` and `seen` maps.
pub fn observe(
    sent: &Map<String, Value>,
    seen: &Map<String, Value>,
    row: &Map<String, Value>,
) -> Observation {
    let mut out = Observation {
        changes: Changes::default(),
        seen: seen.clone(),
    };
    for field in WATCHED {
        let Some(now_value) = row.get(field) else {
            continue;
        };
        let now = text(now_value);
        out.seen.insert(
            field.to_owned(),
            now.clone().map_or(Value::Null, Value::String),
        );
        let Some(before) = seen.get(field).or_else(|| sent.get(field)) else {
            continue;
        };
        let before = text(before);
        if same(&before, &now) {
            continue;
        }
        let change = Change {
            from: before,
            to: now,
        };
        match field {
            "STATUS_ID" => {
                let semantic = row.get("STATUS_SEMANTIC_ID").and_then(Value::as_str);
                out.changes.status = Some(StatusChange {
                    stage: Stage::of(change.to.as_deref(), semantic),
                    from: change.from,
                    to: change.to,
                });
            }
            "NAME" => out.changes.name = Some(change),
            "ASSIGNED_BY_ID" => out.changes.assigned_by_id = Some(change),
            UF_SCORE => out.changes.score = Some(change),
            _ => out.changes.hotness = Some(change),
        }
    }
    out
}

/// The row's `DATE_MODIFY` as written by the portal.
pub fn modified_text(row: &Map<String, Value>) -> Option<&str> {
    row.get("DATE_MODIFY")
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
}

/// The `lead.changed` event for an observation with changes.
pub fn event(
    tenant_id: &str,
    customer_id: &str,
    lead_id: i64,
    row: &Map<String, Value>,
    changes: Changes,
    observed_at: OffsetDateTime,
) -> LeadChanged {
    let modified_at = modified_text(row)
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
        .unwrap_or(observed_at);
    LeadChanged {
        version: EVENT_VERSION,
        kind: LEAD_CHANGED.to_owned(),
        event_id: uuid::Uuid::new_v4().to_string(),
        tenant_id: tenant_id.to_owned(),
        customer_id: customer_id.to_owned(),
        lead_id,
        modified_at,
        observed_at,
        changes,
    }
}

/// The FIFO `MessageDeduplicationId`: tenant, lead id and `DATE_MODIFY`, so one change read
/// twice (a round retried after publishing, two rounds overlapping) is one message. The tenant
/// is part of it because lead ids repeat across portals and the queue deduplicates across
/// groups. SQS allows 128 characters of printable ASCII.
pub fn dedup_id(tenant_id: &str, lead_id: i64, modified: &str) -> String {
    let raw = format!("{tenant_id}:{lead_id}:{modified}");
    raw.chars()
        .map(|c| if c.is_ascii_graphic() { c } else { '_' })
        .take(128)
        .collect()
}

/// The FIFO group: one per tenant and customer, as on the inbound queue.
pub fn group_id(tenant_id: &str, customer_id: &str) -> String {
    format!("{tenant_id}:{customer_id}")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn what_a_row_reports_against_sent_and_seen() {
        let sent = m(
            json!({"STATUS_ID": "IN_PROCESS", "NAME": "Ann", UF_SCORE: 82, "PHONE": "+998901234567"}),
        );
        struct Row {
            why: &'static str,
            seen: Value,
            row: Value,
            changes: Value,
        }
        let rows = [
            Row {
                why: "the connector's own values: nothing echoes back",
                seen: json!({}),
                row: json!({"ID": "5", "STATUS_ID": "IN_PROCESS", "NAME": "Ann", UF_SCORE: "82.0", "ASSIGNED_BY_ID": "1"}),
                changes: json!({}),
            },
            Row {
                why: "a manager junks and renames; the responsible user is first seen, not reported",
                seen: json!({}),
                row: json!({"STATUS_ID": "JUNK", "STATUS_SEMANTIC_ID": "F", "NAME": "Anna", "ASSIGNED_BY_ID": "1"}),
                changes: json!({"status": {"from": "IN_PROCESS", "to": "JUNK", "stage": "lost"},
                                "name": {"from": "Ann", "to": "Anna"}}),
            },
            Row {
                why: "what was seen already is not reported again",
                seen: json!({"STATUS_ID": "JUNK", "NAME": "Anna", "ASSIGNED_BY_ID": "1"}),
                row: json!({"STATUS_ID": "JUNK", "NAME": "Anna", "ASSIGNED_BY_ID": "1"}),
                changes: json!({}),
            },
            Row {
                why: "a take-over after the first sighting is reported",
                seen: json!({"ASSIGNED_BY_ID": "1"}),
                row: json!({"ASSIGNED_BY_ID": "7", "UF_CRM_TELEAGENT_HOTNESS": "hot"}),
                changes: json!({"assigned_by_id": {"from": "1", "to": "7"}}),
            },
            Row {
                why: "a manager's own success status is won; an emptied name is null",
                seen: json!({}),
                row: json!({"STATUS_ID": "UC_DONE", "STATUS_SEMANTIC_ID": "S", "NAME": "", UF_SCORE: "40"}),
                changes: json!({"status": {"from": "IN_PROCESS", "to": "UC_DONE", "stage": "won"},
                                "name": {"from": "Ann", "to": null}, "score": {"from": "82", "to": "40"}}),
            },
            Row {
                why: "fields the list did not return are unknown, not changed",
                seen: json!({}),
                row: json!({"ID": "5"}),
                changes: json!({}),
            },
        ];
        for r in rows {
            let obs = observe(&sent, &m(r.seen), &m(r.row.clone()));
            assert_eq!(
                serde_json::to_value(&obs.changes).unwrap(),
                r.changes,
                "{}",
                r.why
            );
            for field in WATCHED {
                if let Some(v) = r.row.get(field) {
                    assert_eq!(
                        obs.seen.get(field).and_then(text),
                        text(v),
                        "{}: seen records what the CRM shows",
                        r.why
                    );
                }
            }
        }
    }

    #[test]
    fn stages_in_teleagent_words() {
        for (status, semantic, stage) in [
            (Some("NEW"), Some("P"), Stage::New),
            (Some("IN_PROCESS"), None, Stage::InWork),
            (Some("UC_QUALIFIED"), Some("P"), Stage::InWork),
            (Some("CONVERTED"), None, Stage::Won),
            (Some("JUNK"), None, Stage::Lost),
            (Some("UC_SPAM"), Some("F"), Stage::Lost),
            (None, None, Stage::New),
        ] {
            assert_eq!(
                Stage::of(status, semantic),
                stage,
                "{status:?} {semantic:?}"
            );
        }
    }

    #[test]
    fn dedup_ids_repeat_per_change_and_differ_across_tenants() {
        let a = dedup_id("t1", 42, "2026-12-01T10:00:00+03:00");
        assert_eq!(a, dedup_id("t1", 42, "2026-12-01T10:00:00+03:00"));
        assert_ne!(a, dedup_id("t2", 42, "2026-12-01T10:00:00+03:00"));
        assert_ne!(a, dedup_id("t1", 42, "2026-12-01T10:00:01+03:00"));
        let long = dedup_id(&"x".repeat(200), 1, "a b");
        assert_eq!(long.len(), 128);
        assert!(long.chars().all(|c| c.is_ascii_graphic()));
    }
}
