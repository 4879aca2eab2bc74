//! The lead event contract (version 1, the README's "Lead events"): the typed event, the one parser that turns
//! an SQS body into it, and the typed producer. `events/lead-event.v1.schema.json` states the same
//! rules for the Python chat pipeline; the integration tests hold the two in agreement.

pub mod changed;
mod producer;
mod shape;
mod validate;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::tenant::TenantId;

pub use changed::{Change, Changes, LEAD_CHANGED, LeadChanged, Stage, StatusChange};
pub use producer::{LeadEventProducer, ProducerError};
pub use validate::{
    MAX_BODY_BYTES, MAX_CUSTOMER_ID_CHARS, MAX_EVENT_TENANT_ID_CHARS, MAX_FIELD_KEY_CHARS,
    MAX_FIELD_KEYS, MAX_FIELD_VALUE_CHARS, MAX_INTENT_CHARS, MAX_NAME_CHARS, MAX_NOTES_CHARS,
    MAX_PHONE_CHARS, MAX_USERNAME_CHARS,
};

/// The only contract version this code reads or writes; a new shape gets a new number and a new
/// schema file, so an old consumer dead-letters a new event instead of misreading it.
pub const EVENT_VERSION: u8 = 1;

/// One qualified-lead update from the chat pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadEvent {
    pub version: u8,
    /// A hyphenated UUID; also the FIFO `MessageDeduplicationId` and the idempotency key.
    pub event_id: String,
    pub tenant_id: TenantId,
    /// When the chat pipeline saw the change; orders updates of one lead (an older event adds
    /// its notes but changes no field).
    pub occurred_at: OffsetDateTime,
    pub customer: Customer,
    pub lead: LeadData,
}

/// The TeleAgent customer: one customer is one lead in one portal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Customer {
    /// Stable chat-side id such as `tg:123`; part of the FIFO group id and of `ORIGIN_ID`.
    pub id: String,
    pub name: Option<String>,
    pub phone: Option<String>,
    pub username: Option<String>,
}

/// What the agent concluded about the lead.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeadData {
    pub intent: Option<String>,
    /// 0..=100.
    pub score: u8,
    pub hotness: Option<Hotness>,
    pub status: Option<LeadStatus>,
    pub fields_collected: FieldsCollected,
    pub notes: Option<String>,
}

/// What the agent collected in the chat. The five named keys are the ones the CRM mapping knows;
/// the chat pipeline collects more, so other string keys are kept in `extra` (they end up in the
/// lead's text) instead of being refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FieldsCollected {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub product: Option<String>,
    pub budget: Option<String>,
    pub timeline: Option<String>,
    /// Keys other than the five named ones; never one of those five.
    pub extra: BTreeMap<String, String>,
}

/// How warm the agent judged the customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hotness {
    Cold,
    Warm,
    Hot,
}

/// Where the chat pipeline thinks the lead stands; mapped to Bitrix24 statuses by the sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LeadStatus {
    New,
    Contacted,
    Qualified,
    Won,
    Lost,
}

impl Hotness {
    pub const ALL: [Hotness; 3] = [Hotness::Cold, Hotness::Warm, Hotness::Hot];

    pub fn as_str(self) -> &'static str {
        match self {
            Hotness::Cold => "cold",
            Hotness::Warm => "warm",
            Hotness::Hot => "hot",
        }
    }

    /// The wire spelling only (lowercase), as the schema's enum.
    pub fn from_wire(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

impl LeadStatus {
    pub const ALL: [LeadStatus; 5] = [
        LeadStatus::New,
        LeadStatus::Contacted,
        LeadStatus::Qualified,
        LeadStatus::Won,
        LeadStatus::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            LeadStatus::New => "new",
            LeadStatus::Contacted => "contacted",
            LeadStatus::Qualified => "qualified",
            LeadStatus::Won => "won",
            LeadStatus::Lost => "lost",
        }
    }

    /// The wire spelling only (lowercase), as the schema's enum.
    pub fn from_wire(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Hotness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for LeadStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of problem a body has; all of them mean "dead-letter, do not retry".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventErrorKind {
    /// Larger than [`MAX_BODY_BYTES`].
    TooLarge,
    /// Not JSON at all.
    NotJson,
    /// JSON, but not a valid version-1 lead event.
    Invalid,
}

/// Why an event was refused: a short sentence naming the field path and the rule, safe to put in
/// a dead-letter reason or a log (bounded, and never echoing a value, only key names cut short).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct EventError {
    kind: EventErrorKind,
    reason: String,
}

/// Longest reason text; dead-letter attributes and log lines stay small whatever the input.
const MAX_REASON_CHARS: usize = 240;

impl EventError {
    fn new(kind: EventErrorKind, reason: String) -> Self {
        let reason = if reason.chars().count() > MAX_REASON_CHARS {
            let mut cut: String = reason.chars().take(MAX_REASON_CHARS - 1).collect();
            cut.push('…');
            cut
        } else {
            reason
        };
        Self { kind, reason }
    }

    /// A rule broken at `path` (`customer.id`, `lead.fields_collected["color"]`, or `body`).
    pub(crate) fn invalid(path: &str, rule: impl fmt::Display) -> Self {
        Self::new(EventErrorKind::Invalid, format!("{path}: {rule}"))
    }

    pub fn kind(&self) -> EventErrorKind {
        self.kind
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl LeadEvent {
    /// A version-1 event with a fresh UUID v4 id, stamped now (UTC, whole milliseconds so the
    /// JSON form is short and round-trips exactly); everything optional left empty.
    pub fn new(tenant_id: TenantId, customer_id: impl Into<String>, score: u8) -> Self {
        let now = OffsetDateTime::now_utc();
        let sub_ms = i64::from(now.nanosecond() % 1_000_000);
        Self {
            version: EVENT_VERSION,
            event_id: uuid::Uuid::new_v4().to_string(),
            tenant_id,
            occurred_at: now - time::Duration::nanoseconds(sub_ms),
            customer: Customer {
                id: customer_id.into(),
                ..Customer::default()
            },
            lead: LeadData {
                score,
                ..LeadData::default()
            },
        }
    }

    /// The one boundary where an SQS body becomes domain data. The error says what is wrong in a
    /// short safe sentence (field path + rule), bounded in length, never echoing a long value.
    pub fn parse(body: &str) -> Result<LeadEvent, EventError> {
        if body.len() > MAX_BODY_BYTES {
            return Err(EventError::new(
                EventErrorKind::TooLarge,
                format!("body: larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        let value: Value = serde_json::from_str(body).map_err(|e| {
            // serde_json's syntax errors name a position and what was expected, never the input.
            EventError::new(
                EventErrorKind::NotJson,
                format!("body: not valid JSON ({e})"),
            )
        })?;
        let event = validate::from_value(&value)?;
        event.validate()?;
        Ok(event)
    }

    /// Checks the rules the types cannot hold (bounds, id shapes, the group id's size), so an
    /// event a Rust producer built is held to exactly what [`LeadEvent::parse`] accepts.
    pub fn validate(&self) -> Result<(), EventError> {
        validate::check(self)?;
        let size = self.to_json().len();
        if size > MAX_BODY_BYTES {
            return Err(EventError::new(
                EventErrorKind::TooLarge,
                format!("body: larger than {MAX_BODY_BYTES} bytes"),
            ));
        }
        Ok(())
    }

    /// The wire form: absent options are left out, `occurred_at` keeps its offset.
    pub fn to_json(&self) -> String {
        self.to_value().to_string()
    }

    /// The wire form as a JSON value (what [`LeadEvent::to_json`] prints).
    pub fn to_value(&self) -> Value {
        let mut customer = Map::new();
        customer.insert("id".into(), Value::String(self.customer.id.clone()));
        put(&mut customer, "name", &self.customer.name);
        put(&mut customer, "phone", &self.customer.phone);
        put(&mut customer, "username", &self.customer.username);

        let fc = &self.lead.fields_collected;
        let mut fields = Map::new();
        put(&mut fields, "name", &fc.name);
        put(&mut fields, "phone", &fc.phone);
        put(&mut fields, "product", &fc.product);
        put(&mut fields, "budget", &fc.budget);
        put(&mut fields, "timeline", &fc.timeline);
        for (k, v) in &fc.extra {
            fields.insert(k.clone(), Value::String(v.clone()));
        }

        let mut lead = Map::new();
        put(&mut lead, "intent", &self.lead.intent);
        lead.insert("score".into(), Value::from(self.lead.score));
        if let Some(h) = self.lead.hotness {
            lead.insert("hotness".into(), Value::from(h.as_str()));
        }
        if let Some(s) = self.lead.status {
            lead.insert("status".into(), Value::from(s.as_str()));
        }
        if !fields.is_empty() {
            lead.insert("fields_collected".into(), Value::Object(fields));
        }
        put(&mut lead, "notes", &self.lead.notes);

        let mut event = Map::new();
        event.insert("version".into(), Value::from(self.version));
        event.insert("event_id".into(), Value::String(self.event_id.clone()));
        event.insert("tenant_id".into(), Value::from(self.tenant_id.as_str()));
        event.insert(
            "occurred_at".into(),
            Value::String(format_occurred_at(self.occurred_at)),
        );
        event.insert("customer".into(), Value::Object(customer));
        event.insert("lead".into(), Value::Object(lead));
        Value::Object(event)
    }

    /// The name to show on the lead: `customer.name` wins over `fields_collected.name`
    /// (the contract says so); a blank value counts as absent, so it never hides the other one.
    pub fn display_name(&self) -> Option<&str> {
        first_non_blank(&self.customer.name, &self.lead.fields_collected.name)
    }

    /// The phone as the customer gave it (normalising is the `phone` module's job):
    /// `customer.phone` wins over `fields_collected.phone`; blank counts as absent.
    pub fn raw_phone(&self) -> Option<&str> {
        first_non_blank(&self.customer.phone, &self.lead.fields_collected.phone)
    }

    /// "<tenant_id>:<customer_id>" — the FIFO MessageGroupId (<= 128 chars, SQS rule): events of
    /// one customer are delivered in order, other customers are not held up. A valid event's
    /// parts are bounded (63 + 1 + 64) and printable ASCII, so this is always a legal group id.
    pub fn group_id(&self) -> String {
        format!("{}:{}", self.tenant_id, self.customer.id)
    }
}

fn put(map: &mut Map<String, Value>, key: &str, value: &Option<String>) {
    if let Some(v) = value {
        map.insert(key.to_owned(), Value::String(v.clone()));
    }
}

fn first_non_blank<'a>(first: &'a Option<String>, second: &'a Option<String>) -> Option<&'a str> {
    [first, second]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .find(|s| !s.trim().is_empty())
}

/// RFC 3339 cannot write every `OffsetDateTime` (offsets with seconds, years past 9999). Such a
/// time is written in UTC instead, and one RFC 3339 cannot write at all becomes an empty string,
/// which [`LeadEvent::validate`] refuses before anything is sent.
fn format_occurred_at(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .or_else(|_| at.to_offset(time::UtcOffset::UTC).format(&Rfc3339))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests;
