//! The version-1 rules, in two passes: `from_value` reads the JSON shape (types, required and
//! unknown fields, enums, id and time spellings) into the typed event, and `check` holds the typed
//! event to the bounds, so a parsed event and a producer-built one meet the same rules. Every rule
//! here has its twin in `events/lead-event.v1.schema.json`.

use std::collections::BTreeMap;

use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::shape::{
    field_path, is_hyphenated_uuid, is_rfc3339_shape, object, only_known, opt_string, optional,
    required, string,
};
use super::{
    Customer, EventError, FieldsCollected, Hotness, LeadData, LeadEvent, LeadStatus,
    format_occurred_at,
};
use crate::tenant::TenantId;

/// Largest SQS body we accept, in bytes; a JSON Schema cannot state it, so the schema's
/// `$comment` does.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
pub const MAX_CUSTOMER_ID_CHARS: usize = 64;
/// Shorter than a `TenantId` may be (128) so that `<tenant>:<customer>` fits SQS's 128-character
/// `MessageGroupId` (63 + 1 + 64); TeleAgent's tenant ids are 36-character UUIDs.
pub const MAX_EVENT_TENANT_ID_CHARS: usize = 63;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_PHONE_CHARS: usize = 64;
pub const MAX_USERNAME_CHARS: usize = 64;
pub const MAX_INTENT_CHARS: usize = 200;
pub const MAX_FIELD_VALUE_CHARS: usize = 1000;
pub const MAX_NOTES_CHARS: usize = 4000;
/// Keys in `fields_collected`, the five named ones included (JSON Schema's `maxProperties`).
pub const MAX_FIELD_KEYS: usize = 20;
pub const MAX_FIELD_KEY_CHARS: usize = 64;

/// The five keys with their own field in [`FieldsCollected`].
pub(super) const NAMED_FIELDS: [&str; 5] = ["name", "phone", "product", "budget", "timeline"];

// ---------------------------------------------------------------------------------------------
// Pass 1: JSON shape -> typed event.

pub(super) fn from_value(value: &Value) -> Result<LeadEvent, EventError> {
    let top = object(value, "body")?;
    only_known(
        top,
        "body",
        &[
            "version",
            "event_id",
            "tenant_id",
            "occurred_at",
            "customer",
            "lead",
        ],
    )?;
    let version = version(required(top, "version", "version")?)?;
    let event_id = event_id(required(top, "event_id", "event_id")?)?;
    let tenant_id = tenant_id(required(top, "tenant_id", "tenant_id")?)?;
    let occurred_at = occurred_at(required(top, "occurred_at", "occurred_at")?)?;
    let customer = customer(required(top, "customer", "customer")?)?;
    let lead = lead(required(top, "lead", "lead")?)?;
    Ok(LeadEvent {
        version,
        event_id,
        tenant_id,
        occurred_at,
        customer,
        lead,
    })
}

fn customer(value: &Value) -> Result<Customer, EventError> {
    let map = object(value, "customer")?;
    only_known(map, "customer", &["id", "name", "phone", "username"])?;
    Ok(Customer {
        id: string(required(map, "id", "customer.id")?, "customer.id")?,
        name: opt_string(map, "name", "customer.name")?,
        phone: opt_string(map, "phone", "customer.phone")?,
        username: opt_string(map, "username", "customer.username")?,
    })
}

fn lead(value: &Value) -> Result<LeadData, EventError> {
    let map = object(value, "lead")?;
    only_known(
        map,
        "lead",
        &[
            "intent",
            "score",
            "hotness",
            "status",
            "fields_collected",
            "notes",
        ],
    )?;
    let intent = opt_string(map, "intent", "lead.intent")?;
    let score = score(required(map, "score", "lead.score")?)?;
    let hotness = match optional(map, "hotness") {
        None => None,
        Some(v) => Some(
            Hotness::from_wire(&string(v, "lead.hotness")?)
                .ok_or_else(|| EventError::invalid("lead.hotness", "must be cold, warm or hot"))?,
        ),
    };
    let status = match optional(map, "status") {
        None => None,
        Some(v) => Some(
            LeadStatus::from_wire(&string(v, "lead.status")?).ok_or_else(|| {
                EventError::invalid(
                    "lead.status",
                    "must be new, contacted, qualified, won or lost",
                )
            })?,
        ),
    };
    let fields_collected = match optional(map, "fields_collected") {
        None => FieldsCollected::default(),
        Some(v) => fields_collected(v)?,
    };
    let notes = opt_string(map, "notes", "lead.notes")?;
    Ok(LeadData {
        intent,
        score,
        hotness,
        status,
        fields_collected,
        notes,
    })
}

fn fields_collected(value: &Value) -> Result<FieldsCollected, EventError> {
    const PATH: &str = "lead.fields_collected";
    let map = object(value, PATH)?;
    // Counted before nulls are dropped, as the schema's maxProperties counts them.
    if map.len() > MAX_FIELD_KEYS {
        return Err(EventError::invalid(
            PATH,
            format!("more than {MAX_FIELD_KEYS} keys"),
        ));
    }
    let mut fields = FieldsCollected::default();
    let mut extra = BTreeMap::new();
    for (key, v) in map {
        check_key(key)?;
        let path = field_path(key);
        if v.is_null() {
            continue;
        }
        let text = string(v, &path)?;
        match key.as_str() {
            "name" => fields.name = Some(text),
            "phone" => fields.phone = Some(text),
            "product" => fields.product = Some(text),
            "budget" => fields.budget = Some(text),
            "timeline" => fields.timeline = Some(text),
            _ => {
                extra.insert(key.clone(), text);
            }
        }
    }
    fields.extra = extra;
    Ok(fields)
}

/// `version` must equal 1; like JSON Schema's `const`, `1.0` is the same number.
fn version(value: &Value) -> Result<u8, EventError> {
    match integer(value) {
        Some(1) => Ok(1),
        _ => Err(EventError::invalid("version", "must be 1")),
    }
}

fn score(value: &Value) -> Result<u8, EventError> {
    const PATH: &str = "lead.score";
    if !value.is_number() {
        return Err(EventError::invalid(PATH, "must be an integer"));
    }
    match integer(value) {
        None => Err(EventError::invalid(PATH, "must be an integer")),
        Some(n) => u8::try_from(n)
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| EventError::invalid(PATH, "must be between 0 and 100")),
    }
}

/// A JSON number with no fractional part, as JSON Schema's `integer` sees it (`82.0` and `1e2`
/// count); anything beyond i128 is out of every range here anyway and saturates.
fn integer(value: &Value) -> Option<i128> {
    let n = value.as_number()?;
    if let Some(u) = n.as_u64() {
        return Some(i128::from(u));
    }
    if let Some(i) = n.as_i64() {
        return Some(i128::from(i));
    }
    let f = n.as_f64()?;
    // `as` saturates for floats past i128; the fraction test above makes the cast exact otherwise.
    (f.is_finite() && f.fract() == 0.0).then_some(f as i128)
}

fn event_id(value: &Value) -> Result<String, EventError> {
    let raw = string(value, "event_id")?;
    if !is_hyphenated_uuid(&raw) {
        return Err(EventError::invalid(
            "event_id",
            "must be a UUID (8-4-4-4-12 hex digits)",
        ));
    }
    Ok(raw)
}

fn tenant_id(value: &Value) -> Result<TenantId, EventError> {
    let raw = string(value, "tenant_id")?;
    // TenantId::parse trims; an event's id must already be exact, as the schema's pattern says.
    if raw.trim() != raw {
        return Err(EventError::invalid(
            "tenant_id",
            "must not start or end with whitespace",
        ));
    }
    TenantId::parse(&raw).map_err(|e| EventError::invalid("tenant_id", e))
}

fn occurred_at(value: &Value) -> Result<OffsetDateTime, EventError> {
    const PATH: &str = "occurred_at";
    let raw = string(value, PATH)?;
    if !is_rfc3339_shape(&raw) {
        return Err(EventError::invalid(
            PATH,
            "must be an RFC 3339 date-time like 2025-01-31T09:30:00Z (offset required)",
        ));
    }
    OffsetDateTime::parse(&raw, &Rfc3339)
        .map_err(|_| EventError::invalid(PATH, "is not a real date and time"))
}

// ---------------------------------------------------------------------------------------------
// Pass 2: bounds on the typed event.

pub(super) fn check(event: &LeadEvent) -> Result<(), EventError> {
    if event.version != super::EVENT_VERSION {
        return Err(EventError::invalid("version", "must be 1"));
    }
    if !is_hyphenated_uuid(&event.event_id) {
        return Err(EventError::invalid(
            "event_id",
            "must be a UUID (8-4-4-4-12 hex digits)",
        ));
    }
    if event.tenant_id.as_str().chars().count() > MAX_EVENT_TENANT_ID_CHARS {
        return Err(EventError::invalid(
            "tenant_id",
            format!("longer than {MAX_EVENT_TENANT_ID_CHARS} characters"),
        ));
    }
    // What RFC 3339 can write round-trips: anything else would go out as a different time.
    let written = format_occurred_at(event.occurred_at);
    if OffsetDateTime::parse(&written, &Rfc3339).ok() != Some(event.occurred_at) {
        return Err(EventError::invalid(
            "occurred_at",
            "cannot be written as RFC 3339 (year 0000..9999)",
        ));
    }
    check_customer_id(&event.customer.id)?;
    let c = &event.customer;
    bounded(&c.name, "customer.name", MAX_NAME_CHARS)?;
    bounded(&c.phone, "customer.phone", MAX_PHONE_CHARS)?;
    bounded(&c.username, "customer.username", MAX_USERNAME_CHARS)?;
    let l = &event.lead;
    bounded(&l.intent, "lead.intent", MAX_INTENT_CHARS)?;
    if l.score > 100 {
        return Err(EventError::invalid(
            "lead.score",
            "must be between 0 and 100",
        ));
    }
    bounded(&l.notes, "lead.notes", MAX_NOTES_CHARS)?;
    check_fields(&l.fields_collected)
}

fn check_customer_id(id: &str) -> Result<(), EventError> {
    const PATH: &str = "customer.id";
    if id.is_empty() {
        return Err(EventError::invalid(PATH, "must not be empty"));
    }
    if id.chars().count() > MAX_CUSTOMER_ID_CHARS {
        return Err(EventError::invalid(
            PATH,
            format!("longer than {MAX_CUSTOMER_ID_CHARS} characters"),
        ));
    }
    // No whitespace or control characters, and (SQS's MessageGroupId alphabet) ASCII only.
    if !id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(EventError::invalid(
            PATH,
            "may hold only visible ASCII characters (no whitespace or control characters)",
        ));
    }
    Ok(())
}

fn check_fields(fields: &FieldsCollected) -> Result<(), EventError> {
    let named = [
        ("name", &fields.name),
        ("phone", &fields.phone),
        ("product", &fields.product),
        ("budget", &fields.budget),
        ("timeline", &fields.timeline),
    ];
    let count = named.iter().filter(|(_, v)| v.is_some()).count() + fields.extra.len();
    if count > MAX_FIELD_KEYS {
        return Err(EventError::invalid(
            "lead.fields_collected",
            format!("more than {MAX_FIELD_KEYS} keys"),
        ));
    }
    for (key, value) in named {
        bounded(value, &field_path(key), MAX_FIELD_VALUE_CHARS)?;
    }
    for (key, value) in &fields.extra {
        check_key(key)?;
        if NAMED_FIELDS.contains(&key.as_str()) {
            return Err(EventError::invalid(
                &field_path(key),
                "belongs in its named field, not in extra",
            ));
        }
        if value.chars().count() > MAX_FIELD_VALUE_CHARS {
            return Err(EventError::invalid(
                &field_path(key),
                format!("longer than {MAX_FIELD_VALUE_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

fn check_key(key: &str) -> Result<(), EventError> {
    const PATH: &str = "lead.fields_collected";
    if key.is_empty() {
        return Err(EventError::invalid(PATH, "a key is empty"));
    }
    if key.chars().count() > MAX_FIELD_KEY_CHARS {
        return Err(EventError::invalid(
            PATH,
            format!("a key is longer than {MAX_FIELD_KEY_CHARS} characters"),
        ));
    }
    Ok(())
}

fn bounded(value: &Option<String>, path: &str, max: usize) -> Result<(), EventError> {
    match value {
        Some(v) if v.chars().count() > max => Err(EventError::invalid(
            path,
            format!("longer than {max} characters"),
        )),
        _ => Ok(()),
    }
}
