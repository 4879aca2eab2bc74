//! The field rules as pure functions: what a new lead carries, which values an
//! update sends, how statuses may move. No I/O here, so every rule is unit-tested by table.

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::crm::PortalCaps;
use crate::events::{LeadEvent, LeadStatus};
use crate::phone::Phone;

/// `ORIGINATOR_ID` of every lead the connector creates; with `ORIGIN_ID` it lets a retry find
/// the lead an interrupted attempt created.
pub const ORIGINATOR: &str = "teleagent";
pub const UF_SCORE: &str = "UF_CRM_TELEAGENT_SCORE";
pub const UF_HOTNESS: &str = "UF_CRM_TELEAGENT_HOTNESS";
/// Keys in a link's `sent` map for score/hotness written into comment text (portals without
/// our user fields): not Bitrix24 fields, so they are never sent as fields.
pub const TEXT_SCORE: &str = "#score";
pub const TEXT_HOTNESS: &str = "#hotness";
/// The phone is tracked in `sent` as its E.164 text; it is sent as a PHONE multifield item.
pub const PHONE: &str = "PHONE";

/// `ORIGIN_ID` of the lead of one customer: lets a retry after a crash between create and link
/// find the lead even when the customer has no phone.
pub fn origin_id(event: &LeadEvent) -> String {
    format!("{}:{}", event.tenant_id, event.customer.id)
}

/// The status map: new -> NEW, contacted -> IN_PROCESS, qualified -> UC_QUALIFIED (when the
/// portal has it) else IN_PROCESS, won -> CONVERTED, lost -> JUNK.
pub fn status_id(status: LeadStatus, caps: &PortalCaps) -> &'static str {
    match status {
        LeadStatus::New => "NEW",
        LeadStatus::Contacted => "IN_PROCESS",
        LeadStatus::Qualified if caps.has_qualified_status => "UC_QUALIFIED",
        LeadStatus::Qualified => "IN_PROCESS",
        LeadStatus::Won => "CONVERTED",
        LeadStatus::Lost => "JUNK",
    }
}

/// Order of statuses: NEW < IN_PROCESS < (UC_QUALIFIED, PROCESSED) < final (CONVERTED, JUNK).
/// A custom status a manager made (`UC_*` other than ours) ranks with the qualified ones, so we
/// only move such a lead to a final status.
fn status_rank(status: &str) -> u8 {
    match status {
        "NEW" => 0,
        "IN_PROCESS" => 1,
        "CONVERTED" | "JUNK" => 3,
        _ => 2,
    }
}

pub fn is_final(status: &str) -> bool {
    status_rank(status) == 3
}

/// Statuses only move forward; `from` None (unknown) allows any.
pub fn is_forward(from: Option<&str>, to: &str) -> bool {
    from.is_none_or(|f| status_rank(to) > status_rank(f))
}

/// The customer's name as TeleAgent knows it.
fn name(event: &LeadEvent) -> Option<&str> {
    event
        .display_name()
        .map(str::trim)
        .filter(|n| !n.is_empty())
}

/// The lead summary the seed builds (COMMENTS of a new lead, or the comment on a lead found by
/// phone). Score and hotness are in the text only when the portal has no user fields for them.
pub fn summary(event: &LeadEvent, caps: &PortalCaps, phone: Option<&Phone>) -> String {
    let lead = &event.lead;
    let fc = &lead.fields_collected;
    let mut lines = vec!["TeleAgent lead summary".to_owned()];
    let mut line = |label: &str, v: Option<&str>| {
        if let Some(v) = v.map(str::trim).filter(|v| !v.is_empty()) {
            lines.push(format!("{label}: {v}"));
        }
    };
    line("Product", fc.product.as_deref());
    line("Budget", fc.budget.as_deref());
    line("Timeline", fc.timeline.as_deref());
    line("Intent", lead.intent.as_deref());
    line("Notes", lead.notes.as_deref());
    if !caps.has_teleagent_user_fields {
        line("Score", Some(&lead.score.to_string()));
        line("Hotness", lead.hotness.map(|h| h.as_str()));
    }
    line(
        "Telegram username",
        event
            .customer
            .username
            .as_deref()
            .map(|u| u.trim_start_matches('@')),
    );
    if let Some(Phone::Unparsed { text }) = phone {
        line("Phone (as given, not recognised)", Some(text));
    }
    for (k, v) in &fc.extra {
        line(k, Some(v));
    }
    lines.join("\n")
}

/// The values we track for a lead (keys as in a link's `sent` map): what an update may send.
pub fn desired(event: &LeadEvent, caps: &PortalCaps, phone: Option<&Phone>) -> Map<String, Value> {
    let mut m = Map::new();
    if let Some(st) = event.lead.status {
        m.insert("STATUS_ID".into(), json!(status_id(st, caps)));
    }
    if let Some(n) = name(event) {
        m.insert("NAME".into(), json!(n));
    }
    if let Some(Phone::Parsed { e164, .. }) = phone {
        m.insert(PHONE.into(), json!(e164));
    }
    let hotness = event.lead.hotness.map(|h| h.as_str());
    let (score_key, hot_key) = if caps.has_teleagent_user_fields {
        (UF_SCORE, UF_HOTNESS)
    } else {
        (TEXT_SCORE, TEXT_HOTNESS)
    };
    m.insert(score_key.into(), json!(event.lead.score));
    if let Some(h) = hotness {
        m.insert(hot_key.into(), json!(h));
    }
    m
}

/// The fields of a new lead, and the `sent` map they amount to.
pub fn create_fields(
    event: &LeadEvent,
    caps: &PortalCaps,
    phone: Option<&Phone>,
) -> (Map<String, Value>, Map<String, Value>) {
    let sent = desired(event, caps, phone);
    let title = name(event)
        .or(event.customer.username.as_deref())
        .unwrap_or(&event.customer.id);
    let mut f = Map::new();
    f.insert("TITLE".into(), json!(format!("Telegram: {title}")));
    let source = if caps.has_telegram_source {
        "TELEGRAM"
    } else {
        "OTHER"
    };
    f.insert("SOURCE_ID".into(), json!(source));
    f.insert("ORIGINATOR_ID".into(), json!(ORIGINATOR));
    f.insert("ORIGIN_ID".into(), json!(origin_id(event)));
    f.insert("COMMENTS".into(), json!(summary(event, caps, phone)));
    for (k, v) in &sent {
        match k.as_str() {
            PHONE => {
                f.insert(PHONE.into(), json!([{"VALUE": v, "VALUE_TYPE": "WORK"}]));
            }
            TEXT_SCORE | TEXT_HOTNESS => {}
            _ => {
                f.insert(k.clone(), v.clone());
            }
        }
    }
    (f, sent)
}

/// Two field values are the same when equal as JSON, as text, or as numbers (Bitrix24 answers
/// numbers as strings and doubles as "82.0").
pub fn same_value(a: &Value, b: &Value) -> bool {
    if a == b {
        return true;
    }
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    match (text(a), text(b)) {
        (Some(x), Some(y)) => {
            x == y || matches!((x.parse::<f64>(), y.parse::<f64>()), (Ok(p), Ok(q)) if p == q)
        }
        _ => false,
    }
}

fn digits(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Whether the lead already carries this number (its PHONE items, compared by digits).
pub fn lead_has_phone(lead: &Map<String, Value>, e164: &str) -> bool {
    let want = digits(e164);
    lead.get(PHONE)
        .and_then(Value::as_array)
        .is_some_and(|items| {
            items.iter().any(|i| {
                i.get("VALUE")
                    .and_then(Value::as_str)
                    .is_some_and(|v| digits(v) == want)
            })
        })
}

/// The lead's current value of a tracked key (None for text-only keys and absent fields).
fn crm_value<'a>(lead: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match key {
        TEXT_SCORE | TEXT_HOTNESS | PHONE => None,
        _ => lead.get(key).filter(|v| !v.is_null()),
    }
}

/// Fields the connector owns: its own user fields. Written without reading the lead first;
/// every other field is the manager's once the lead exists (see `plan_update`).
/// The values last sent, with those of an interrupted write the lead now shows taken as ours.
/// `pending` holds what an earlier event sent without recording it (its answer was lost, or a
/// later step of that event failed): a field the CRM shows with that value was written by us,
/// not by a manager, so the next update may change it again (and need not send it twice).
pub fn reconcile_pending(
    sent: &Map<String, Value>,
    pending: &Map<String, Value>,
    lead: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = sent.clone();
    for (key, value) in pending {
        if crm_value(lead, key).is_some_and(|current| same_value(current, value)) {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

pub fn is_connector_owned(field: &str) -> bool {
    field.starts_with("UF_CRM_TELEAGENT_")
}

/// An update decided: the fields to send (Bitrix24 shape), the `sent` map afterwards, and lines
/// for the comment text (score/hotness changes on portals without our user fields).
#[derive(Debug, Default, PartialEq)]
pub struct UpdatePlan {
    pub fields: Map<String, Value>,
    pub sent: Map<String, Value>,
    pub text_lines: Vec<String>,
}

/// Inputs of [`plan_update`].
pub struct UpdateInput<'a> {
    pub desired: &'a Map<String, Value>,
    pub sent: &'a Map<String, Value>,
    /// The lead as read now, when it was (verification, or needed for COMMENTS).
    pub crm: Option<&'a Map<String, Value>>,
    /// The event is older than the newest one applied: notes only.
    pub older: bool,
    /// The phone the link already recorded (never re-sent: a PHONE item without ID is appended).
    pub link_phone: Option<&'a str>,
    /// Only our own fields and a forward status (a lead someone else made): never NAME/PHONE.
    pub foreign: bool,
    /// Values change watching saw in the CRM that differ from what was sent: a manager holds
    /// these fields, so without a read they are left alone (no read is needed to know it).
    pub held: &'a Map<String, Value>,
}

/// The fields a manager holds according to change watching: `seen` values that differ from the
/// values last sent (a field never sent, like the responsible user, is not ours to write).
pub fn held_by_manager(sent: &Map<String, Value>, seen: &Map<String, Value>) -> Map<String, Value> {
    seen.iter()
        .filter(|(k, v)| sent.get(*k).is_some_and(|s| !same_value(s, v)))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The update of a linked lead: desired values minus those equal to what was last sent; a value
/// the CRM shows differently from what we sent was edited by a person and is left alone (and
/// adopted as sent, so later events do not fight the manager over it); statuses only move
/// forward; a lead in a final status (CONVERTED, JUNK) and an out-of-order event change no field.
pub fn plan_update(i: UpdateInput<'_>) -> UpdatePlan {
    let mut plan = UpdatePlan {
        sent: i.sent.clone(),
        ..UpdatePlan::default()
    };
    let crm_status = i
        .crm
        .and_then(|l| l.get("STATUS_ID"))
        .and_then(Value::as_str);
    let sent_status = i.sent.get("STATUS_ID").and_then(Value::as_str);
    let held_status = i.held.get("STATUS_ID").and_then(Value::as_str);
    let known_status = crm_status.or(held_status).or(sent_status);
    // What the CRM shows as far as we know: a read in this event, else what watching saw.
    let closed = crm_status.or(if i.crm.is_none() { held_status } else { None });
    if let Some(status) = closed.filter(|s| is_final(s)) {
        // A manager closed the lead: remember it, so later events send notes only, even those
        // that would not read the lead first.
        plan.sent.insert("STATUS_ID".into(), json!(status));
        return plan;
    }
    if i.older || (i.crm.is_none() && sent_status.is_some_and(is_final)) {
        return plan;
    }
    for (key, want) in i.desired {
        let last = i.sent.get(key);
        if last.is_some_and(|l| same_value(l, want)) {
            continue;
        }
        if i.crm.is_none() && i.held.contains_key(key) {
            // The manager changed it (change watching saw it): theirs wins, as after a read.
            plan.sent.insert(key.clone(), want.clone());
            continue;
        }
        let now_in_crm = i.crm.and_then(|l| crm_value(l, key));
        if let Some(current) = now_in_crm {
            if same_value(current, want) {
                plan.sent.insert(key.clone(), want.clone());
                continue;
            }
            if last.is_some_and(|l| !same_value(l, current)) {
                // A person changed it after we sent it: theirs wins.
                plan.sent.insert(key.clone(), want.clone());
                continue;
            }
        }
        match key.as_str() {
            "STATUS_ID" => {
                let Some(to) = want.as_str() else { continue };
                if !is_forward(known_status, to) {
                    continue;
                }
                plan.fields.insert(key.clone(), want.clone());
            }
            "NAME" if i.foreign => {
                plan.sent.insert(key.clone(), want.clone());
                continue;
            }
            PHONE => {
                let Some(e164) = want.as_str() else { continue };
                let already = i.foreign
                    || i.link_phone.is_some()
                    || last.is_some()
                    || i.crm.is_some_and(|l| lead_has_phone(l, e164));
                plan.sent.insert(key.clone(), want.clone());
                if !already {
                    plan.fields
                        .insert(PHONE.into(), json!([{"VALUE": e164, "VALUE_TYPE": "WORK"}]));
                }
                continue;
            }
            TEXT_SCORE => plan.text_lines.push(format!("Score: {}", text_of(want))),
            TEXT_HOTNESS => plan.text_lines.push(format!("Hotness: {}", text_of(want))),
            _ => {
                plan.fields.insert(key.clone(), want.clone());
            }
        }
        plan.sent.insert(key.clone(), want.clone());
    }
    plan
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Notes to add as history, when they differ from the notes last written.
pub fn new_notes<'a>(event: &'a LeadEvent, notes_sent: Option<&str>) -> Option<&'a str> {
    event
        .lead
        .notes
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty() && Some(*n) != notes_sent.map(str::trim))
}

/// The dated comment text for new notes and text-only changes; None when there is nothing.
pub fn comment_text(at: OffsetDateTime, notes: Option<&str>, lines: &[String]) -> Option<String> {
    if notes.is_none() && lines.is_empty() {
        return None;
    }
    let when = at.format(&Rfc3339).unwrap_or_else(|_| at.to_string());
    let mut out = format!("TeleAgent, {when}:");
    if let Some(n) = notes {
        out.push('\n');
        out.push_str(n);
    }
    for l in lines {
        out.push('\n');
        out.push_str(l);
    }
    Some(out)
}

/// COMMENTS with `text` appended (never overwritten: notes are history).
pub fn appended_comments(lead: Option<&Map<String, Value>>, text: &str) -> String {
    match lead
        .and_then(|l| l.get("COMMENTS"))
        .and_then(Value::as_str)
        .filter(|c| !c.trim().is_empty())
    {
        Some(current) => format!("{current}\n\n{text}"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Hotness;
    use crate::tenant::TenantId;

    const TENANT: &str = "7f8e5b0a-3c1d-4e2f-9a6b-1c2d3e4f5a6b";

    fn event() -> LeadEvent {
        let mut e = LeadEvent::new(TenantId::parse(TENANT).unwrap(), "tg:42", 82);
        e.customer.name = Some("Ann".into());
        e.customer.username = Some("ann_k".into());
        e.lead.hotness = Some(Hotness::Hot);
        e.lead.status = Some(LeadStatus::Qualified);
        e.lead.intent = Some("buy".into());
        e.lead.notes = Some("wants delivery".into());
        e.lead.fields_collected.product = Some("Sofa".into());
        e.lead
            .fields_collected
            .extra
            .insert("color".into(), "red".into());
        e
    }

    fn caps(uf: bool, tg: bool, q: bool) -> PortalCaps {
        PortalCaps {
            has_telegram_source: tg,
            has_qualified_status: q,
            has_teleagent_user_fields: uf,
            read: true,
        }
    }

    fn parsed() -> Phone {
        Phone::Parsed {
            e164: "+998901234567".into(),
            region: Some("UZ".into()),
        }
    }

    #[test]
    fn a_pending_value_the_lead_shows_counts_as_sent_and_others_do_not() {
        let sent = json!({"STATUS_ID": "NEW", "UF_CRM_TELEAGENT_SCORE": 6, "NAME": "Ann"});
        let pending =
            json!({"STATUS_ID": "IN_PROCESS", "UF_CRM_TELEAGENT_SCORE": 37, "NAME": "Anna"});
        // Our interrupted write landed for the status and the score; a manager renamed the lead.
        let lead =
            json!({"STATUS_ID": "IN_PROCESS", "UF_CRM_TELEAGENT_SCORE": "37", "NAME": "Annie"});
        let out = reconcile_pending(
            sent.as_object().unwrap(),
            pending.as_object().unwrap(),
            lead.as_object().unwrap(),
        );
        assert_eq!(out["STATUS_ID"], "IN_PROCESS");
        assert_eq!(out["UF_CRM_TELEAGENT_SCORE"], 37);
        assert_eq!(
            out["NAME"], "Ann",
            "the manager's name is not taken as ours"
        );
        // The next event's score equals the stale sent value: it must still be written.
        let desired = json!({"UF_CRM_TELEAGENT_SCORE": 6, "STATUS_ID": "UC_QUALIFIED"});
        let plan = plan_update(UpdateInput {
            desired: desired.as_object().unwrap(),
            sent: &out,
            crm: lead.as_object(),
            older: false,
            link_phone: None,
            foreign: false,
            held: &Map::new(),
        });
        assert_eq!(plan.fields.get("UF_CRM_TELEAGENT_SCORE"), Some(&json!(6)));
        assert_eq!(plan.fields.get("STATUS_ID"), Some(&json!("UC_QUALIFIED")));
    }

    #[test]
    fn status_map_follows_the_portal() {
        let rows = [
            (LeadStatus::New, false, "NEW"),
            (LeadStatus::Contacted, false, "IN_PROCESS"),
            (LeadStatus::Qualified, false, "IN_PROCESS"),
            (LeadStatus::Qualified, true, "UC_QUALIFIED"),
            (LeadStatus::Won, false, "CONVERTED"),
            (LeadStatus::Lost, true, "JUNK"),
        ];
        for (st, q, want) in rows {
            assert_eq!(
                status_id(st, &caps(false, false, q)),
                want,
                "{st:?} qualified={q}"
            );
        }
    }

    #[test]
    fn statuses_only_move_forward() {
        let rows = [
            (None, "NEW", true, "unknown current allows any"),
            (Some("NEW"), "IN_PROCESS", true, "new -> in process"),
            (Some("IN_PROCESS"), "NEW", false, "never back to new"),
            (Some("IN_PROCESS"), "UC_QUALIFIED", true, "to qualified"),
            (
                Some("PROCESSED"),
                "UC_QUALIFIED",
                false,
                "same rank is not forward",
            ),
            (Some("UC_QUALIFIED"), "CONVERTED", true, "to final"),
            (Some("CONVERTED"), "JUNK", false, "final stays"),
            (
                Some("UC_MANAGER_STAGE"),
                "IN_PROCESS",
                false,
                "manager's custom stage kept",
            ),
        ];
        for (from, to, want, why) in rows {
            assert_eq!(is_forward(from, to), want, "{why}");
        }
    }

    #[test]
    fn create_fields_by_portal_capabilities() {
        let e = event();
        let (f, sent) = create_fields(&e, &caps(true, true, true), Some(&parsed()));
        assert_eq!(f["TITLE"], "Telegram: Ann");
        assert_eq!(f["NAME"], "Ann");
        assert_eq!(f["SOURCE_ID"], "TELEGRAM");
        assert_eq!(f["STATUS_ID"], "UC_QUALIFIED");
        assert_eq!(f["ORIGINATOR_ID"], "teleagent");
        assert_eq!(f["ORIGIN_ID"], format!("{TENANT}:tg:42"));
        assert_eq!(
            f["PHONE"],
            json!([{"VALUE": "+998901234567", "VALUE_TYPE": "WORK"}])
        );
        assert_eq!(f[UF_SCORE], 82);
        assert_eq!(f[UF_HOTNESS], "hot");
        let comments = f["COMMENTS"].as_str().unwrap();
        for want in [
            "Product: Sofa",
            "Intent: buy",
            "Notes: wants delivery",
            "color: red",
            "ann_k",
        ] {
            assert!(comments.contains(want), "{want} in {comments}");
        }
        assert!(!comments.contains("Score"), "score is in the user field");
        assert_eq!(sent["PHONE"], "+998901234567");

        let (f, sent) = create_fields(
            &e,
            &caps(false, false, false),
            Some(&Phone::Unparsed {
                text: "call me".into(),
            }),
        );
        assert_eq!(f["SOURCE_ID"], "OTHER");
        assert_eq!(f["STATUS_ID"], "IN_PROCESS");
        assert!(
            f.get(UF_SCORE).is_none() && f.get("PHONE").is_none() && f.get(TEXT_SCORE).is_none()
        );
        let comments = f["COMMENTS"].as_str().unwrap();
        assert!(
            comments.contains("Score: 82") && comments.contains("Hotness: hot"),
            "{comments}"
        );
        assert!(comments.contains("call me"), "unparsed phone kept as text");
        assert_eq!(sent[TEXT_SCORE], 82);
        assert!(sent.get(PHONE).is_none());
    }

    #[test]
    fn title_falls_back_to_username_then_id() {
        let mut e = event();
        e.customer.name = None;
        assert_eq!(
            create_fields(&e, &caps(false, false, false), None).0["TITLE"],
            "Telegram: ann_k"
        );
        e.customer.username = None;
        let (f, _) = create_fields(&e, &caps(false, false, false), None);
        assert_eq!(f["TITLE"], "Telegram: tg:42");
        assert!(f.get("NAME").is_none());
    }

    fn m(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn update_plans() {
        let desired = m(
            json!({"STATUS_ID": "UC_QUALIFIED", "NAME": "Ann", "PHONE": "+998901234567", UF_SCORE: 90}),
        );
        let sent = m(
            json!({"STATUS_ID": "IN_PROCESS", "NAME": "Ann", "PHONE": "+998901234567", UF_SCORE: 82}),
        );
        struct Row {
            why: &'static str,
            sent: Map<String, Value>,
            crm: Option<Map<String, Value>>,
            older: bool,
            link_phone: Option<&'static str>,
            foreign: bool,
            fields: Value,
        }
        let rows = [
            Row {
                why: "only changed fields",
                sent: sent.clone(),
                crm: None,
                older: false,
                link_phone: Some("+998901234567"),
                foreign: false,
                fields: json!({"STATUS_ID": "UC_QUALIFIED", UF_SCORE: 90}),
            },
            Row {
                why: "older event: nothing",
                sent: sent.clone(),
                crm: None,
                older: true,
                link_phone: None,
                foreign: false,
                fields: json!({}),
            },
            Row {
                why: "final status in CRM: nothing",
                sent: sent.clone(),
                crm: Some(m(json!({"STATUS_ID": "CONVERTED"}))),
                older: false,
                link_phone: None,
                foreign: false,
                fields: json!({}),
            },
            Row {
                why: "manager moved the score: kept",
                sent: sent.clone(),
                crm: Some(m(
                    json!({"STATUS_ID": "IN_PROCESS", UF_SCORE: "50", "NAME": "Ann"}),
                )),
                older: false,
                link_phone: None,
                foreign: false,
                fields: json!({"STATUS_ID": "UC_QUALIFIED"}),
            },
            Row {
                why: "manager moved status past ours: not back",
                sent: sent.clone(),
                crm: Some(m(json!({"STATUS_ID": "PROCESSED", UF_SCORE: "82.0"}))),
                older: false,
                link_phone: None,
                foreign: false,
                fields: json!({UF_SCORE: 90}),
            },
            Row {
                why: "phone newly known is sent once",
                sent: m(json!({"STATUS_ID": "UC_QUALIFIED", "NAME": "Ann", UF_SCORE: 90})),
                crm: None,
                older: false,
                link_phone: None,
                foreign: false,
                fields: json!({"PHONE": [{"VALUE": "+998901234567", "VALUE_TYPE": "WORK"}]}),
            },
            Row {
                why: "phone the lead already has is not re-sent",
                sent: m(json!({"STATUS_ID": "UC_QUALIFIED", "NAME": "Ann", UF_SCORE: 90})),
                crm: Some(m(
                    json!({"STATUS_ID": "UC_QUALIFIED", "NAME": "Ann", UF_SCORE: 90, "PHONE": [{"ID": "3", "VALUE": "+998 (90) 123-45-67"}]}),
                )),
                older: false,
                link_phone: None,
                foreign: false,
                fields: json!({}),
            },
            Row {
                why: "foreign lead: our fields and status only",
                sent: Map::new(),
                crm: Some(m(json!({"STATUS_ID": "NEW", "NAME": "Anna"}))),
                older: false,
                link_phone: None,
                foreign: true,
                fields: json!({"STATUS_ID": "UC_QUALIFIED", UF_SCORE: 90}),
            },
        ];
        for r in rows {
            let plan = plan_update(UpdateInput {
                desired: &desired,
                sent: &r.sent,
                crm: r.crm.as_ref(),
                older: r.older,
                link_phone: r.link_phone,
                foreign: r.foreign,
                held: &Map::new(),
            });
            assert_eq!(Value::Object(plan.fields), r.fields, "{}", r.why);
        }
    }

    /// An update decided without a read, with change watching's `held` values.
    fn trusted_input<'a>(
        desired: &'a Map<String, Value>,
        sent: &'a Map<String, Value>,
        held: &'a Map<String, Value>,
    ) -> UpdateInput<'a> {
        UpdateInput {
            desired,
            sent,
            crm: None,
            older: false,
            link_phone: None,
            foreign: false,
            held,
        }
    }

    #[test]
    fn text_only_score_goes_to_comment_lines() {
        let desired = m(json!({TEXT_SCORE: 90, TEXT_HOTNESS: "hot"}));
        let sent = m(json!({TEXT_SCORE: 82, TEXT_HOTNESS: "hot"}));
        let plan = plan_update(trusted_input(&desired, &sent, &Map::new()));
        assert!(plan.fields.is_empty());
        assert_eq!(plan.text_lines, vec!["Score: 90".to_owned()]);
        assert_eq!(plan.sent[TEXT_SCORE], 90);
    }

    #[test]
    fn fields_a_manager_holds_per_watching_are_left_without_a_read() {
        let sent = m(json!({"STATUS_ID": "IN_PROCESS", "NAME": "Ann", UF_SCORE: 82}));
        let seen = m(
            json!({"STATUS_ID": "IN_PROCESS", "NAME": "Anna", "ASSIGNED_BY_ID": "7", UF_SCORE: "82"}),
        );
        let held = held_by_manager(&sent, &seen);
        assert_eq!(
            Value::Object(held.clone()),
            json!({"NAME": "Anna"}),
            "only values that differ from what was sent; the responsible user was never ours"
        );
        let desired = m(json!({"STATUS_ID": "UC_QUALIFIED", "NAME": "Ann B", UF_SCORE: 90}));
        let input = |held| trusted_input(&desired, &sent, held);
        let plan = plan_update(input(&held));
        assert_eq!(
            Value::Object(plan.fields),
            json!({"STATUS_ID": "UC_QUALIFIED", UF_SCORE: 90}),
            "the renamed lead keeps the manager's name"
        );
        let junked = held_by_manager(&sent, &m(json!({"STATUS_ID": "JUNK"})));
        let plan = plan_update(input(&junked));
        assert!(
            plan.fields.is_empty(),
            "a lead the manager junked gets notes only: {:?}",
            plan.fields
        );
        let plan = plan_update(input(&Map::new()));
        assert!(
            plan.fields.contains_key("NAME"),
            "without watching, the name goes to the read-and-compare path"
        );
    }

    #[test]
    fn notes_are_history() {
        let e = event();
        assert_eq!(new_notes(&e, None), Some("wants delivery"));
        assert_eq!(new_notes(&e, Some("wants delivery")), None);
        assert_eq!(new_notes(&e, Some("older note")), Some("wants delivery"));
        let at = time::macros::datetime!(2025-03-01 10:00 UTC);
        assert_eq!(comment_text(at, None, &[]), None);
        let text = comment_text(at, Some("n2"), &["Score: 9".into()]).unwrap();
        assert_eq!(text, "TeleAgent, 2025-03-01T10:00:00Z:\nn2\nScore: 9");
        let lead = m(json!({"COMMENTS": "first"}));
        assert_eq!(appended_comments(Some(&lead), "second"), "first\n\nsecond");
        assert_eq!(appended_comments(None, "second"), "second");
    }

    #[test]
    fn values_compare_across_bitrix_spellings() {
        let rows = [
            (json!(82), json!("82"), true),
            (json!(82), json!("82.0"), true),
            (json!("hot"), json!("hot"), true),
            (json!("hot"), json!("warm"), false),
            (json!(null), json!(""), false),
        ];
        for (a, b, want) in rows {
            assert_eq!(same_value(&a, &b), want, "{a} vs {b}");
        }
    }
}
