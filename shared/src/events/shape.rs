//! Small readers of the event's JSON (objects, required and unknown keys, strings) and the
//! shapes the schema pins down (hyphenated UUIDs, the RFC 3339 spelling), with error paths that
//! name the field.

use serde_json::{Map, Value};

use super::EventError;
use super::validate::NAMED_FIELDS;

/// `8-4-4-4-12` hex digits, either case: what JSON Schema's `uuid` format accepts. `Uuid::parse_str`
/// also takes braces, `urn:uuid:` and the 32-digit form, which the schema refuses.
pub(super) fn is_hyphenated_uuid(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| match i {
            8 | 13 | 18 | 23 => b == b'-',
            _ => b.is_ascii_hexdigit(),
        })
}

/// `YYYY-MM-DDTHH:MM:SS[.1-9 digits](Z|±HH:MM)`, upper-case `T`/`Z`, seconds 00-59: the schema's
/// `pattern` next to its `date-time` format. It removes the corners where RFC 3339 parsers
/// disagree (lower-case separators, leap seconds, unbounded fractions); ranges are the parser's.
pub(super) fn is_rfc3339_shape(s: &str) -> bool {
    let b = s.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|d| d.iter().all(u8::is_ascii_digit));
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    let head = digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && b.get(17).is_some_and(|d| (b'0'..=b'5').contains(d))
        && digits(18..19);
    if !head {
        return false;
    }
    let mut i = 19;
    if at(i, b'.') {
        let start = i + 1;
        let mut end = start;
        while b.get(end).is_some_and(u8::is_ascii_digit) {
            end += 1;
        }
        if !(1..=9).contains(&(end - start)) {
            return false;
        }
        i = end;
    }
    match b.get(i) {
        Some(b'Z') => i + 1 == b.len(),
        Some(b'+' | b'-') => {
            digits(i + 1..i + 3) && at(i + 3, b':') && digits(i + 4..i + 6) && i + 6 == b.len()
        }
        _ => false,
    }
}

pub(super) fn object<'a>(
    value: &'a Value,
    path: &str,
) -> Result<&'a Map<String, Value>, EventError> {
    value
        .as_object()
        .ok_or_else(|| EventError::invalid(path, "must be a JSON object"))
}

/// Unknown fields are refused, so a typo (`phnoe`) or a field from a newer contract is a visible
/// dead letter instead of data silently lost.
pub(super) fn only_known(
    map: &Map<String, Value>,
    path: &str,
    known: &[&str],
) -> Result<(), EventError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        None => Ok(()),
        Some(k) => Err(EventError::invalid(
            path,
            format!("unknown field {}", shown_key(k)),
        )),
    }
}

/// A required field; `null` counts as missing.
pub(super) fn required<'a>(
    map: &'a Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<&'a Value, EventError> {
    optional(map, key).ok_or_else(|| EventError::invalid(path, "is required"))
}

/// An optional field; `null` is the same as absent (the Python producer writes `None` as null).
pub(super) fn optional<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

pub(super) fn string(value: &Value, path: &str) -> Result<String, EventError> {
    value
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| EventError::invalid(path, "must be a string"))
}

pub(super) fn opt_string(
    map: &Map<String, Value>,
    key: &str,
    path: &str,
) -> Result<Option<String>, EventError> {
    optional(map, key).map(|v| string(v, path)).transpose()
}

pub(super) fn field_path(key: &str) -> String {
    if NAMED_FIELDS.contains(&key) {
        format!("lead.fields_collected.{key}")
    } else {
        format!("lead.fields_collected[{}]", shown_key(key))
    }
}

/// A key as it may appear in a reason: quoted, escaped, cut to 32 characters.
pub(super) fn shown_key(key: &str) -> String {
    const MAX: usize = 32;
    let cut: String = key.chars().take(MAX).collect();
    let more = if key.chars().count() > MAX { "…" } else { "" };
    format!("\"{}{more}\"", cut.escape_debug())
}
