//! Reading tool answers. Servers differ: the bare REST `result` or the whole envelope
//! (`{"result", "total", "time"}`), structured content or JSON text, errors with `isError`, as an
//! `{"error": ...}` object, or as plain non-JSON text without `isError`. Ids come as numbers or
//! strings; `crm.duplicate.findbycomm` answers `[]` when nothing matches.

use serde_json::{Map, Value};

use crate::mcp::{
    McpError, ToolOutput, classify_error_body, classify_tool_error, says_unknown_tool,
};

/// Keys of a REST envelope, and of the wrappers servers put around the REST `result` (the
/// method called, the portal): an object of only these keys is read for its `result`.
const ENVELOPE_KEYS: &[&str] = &[
    "result",
    "method",
    "portal",
    "total",
    "next",
    "time",
    "result_error",
    "result_total",
    "result_next",
    "result_time",
];

/// The REST `result` of a tool answer, or the error it carries.
pub fn result_of(out: &ToolOutput) -> Result<Value, McpError> {
    if out.is_error {
        // FastMCP answers a call to a tool it does not have as an error result.
        if says_unknown_tool(&out.text) {
            return Err(McpError::UnknownTool);
        }
        return Err(classify_tool_error(&out.text));
    }
    let value = match structured(out).or_else(|| out.json()) {
        Some(v) => v,
        // Non-JSON text where a JSON result belongs: the plain-text error quirk.
        None => return Err(classify_tool_error(&out.text)),
    };
    if let Some(obj) = value.as_object() {
        if obj
            .get("error")
            .is_some_and(|e| !e.is_null() && e != &Value::Bool(false))
        {
            return Err(classify_error_body(obj, Some(&value)));
        }
        if obj.contains_key("result") && obj.keys().all(|k| ENVELOPE_KEYS.contains(&k.as_str())) {
            return Ok(obj.get("result").cloned().unwrap_or(Value::Null));
        }
    }
    Ok(value)
}

/// Structured content, unless it is only FastMCP's wrapper of the text (`{"result": "<text>"}`,
/// sent for tools declared to return `str`): then the text is the answer.
fn structured(out: &ToolOutput) -> Option<Value> {
    let s = out.structured.as_ref()?;
    match s.as_object() {
        Some(o) if o.len() == 1 && o.get("result").is_some_and(Value::is_string) => None,
        _ => Some(s.clone()),
    }
}

/// A Bitrix24 id given as a number or a numeric string.
pub fn as_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().filter(|i| *i > 0),
        Value::String(s) => s.trim().parse().ok().filter(|i: &i64| *i > 0),
        _ => None,
    }
}

/// Keys under which servers put a created record's id (`{"success": true, "leadId": "5"}`,
/// `{"created_id": 5}`, `{"item": {"id": 5}}`).
const ID_KEYS: &[&str] = &[
    "id",
    "ID",
    "leadId",
    "lead_id",
    "created_id",
    "createdId",
    "result",
];

/// The id a create answered: a bare id, or one under a known key, also one level down
/// (`item`, `lead`). Anything else (a sentence, an object without an id) is no id.
pub fn created_id(v: &Value) -> Option<i64> {
    as_id(v).or_else(|| {
        let o = v.as_object()?;
        if is_failure(o) {
            return None;
        }
        ID_KEYS
            .iter()
            .find_map(|k| o.get(*k).and_then(as_id))
            .or_else(|| {
                ["item", "lead"]
                    .iter()
                    .find_map(|k| o.get(*k).and_then(created_id))
            })
    })
}

/// `{"success": false}` or `{"updated": false}`: a wrapper saying the operation did not happen.
pub fn is_failure(o: &Map<String, Value>) -> bool {
    ["success", "updated", "ok"]
        .iter()
        .any(|k| o.get(*k) == Some(&Value::Bool(false)))
}

/// Whether an update answer says the update happened: `true`, or an object that does not say
/// it failed. `false`, a failure wrapper or an empty answer are not.
pub fn update_done(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Object(o) => !o.is_empty() && !is_failure(o),
        Value::Number(_) => true,
        _ => false,
    }
}

/// Lead ids from a `crm.duplicate.findbycomm` answer: `{"LEAD": [..]}`, `[]`, `{}` or no key.
pub fn duplicate_ids(v: &Value) -> Vec<i64> {
    match v {
        Value::Object(o) => o
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("lead"))
            .and_then(|(_, ids)| ids.as_array())
            .map(|ids| ids.iter().filter_map(as_id).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Rows of a list answer: a bare array, or an object holding one (`items`, `leads`, ...).
pub fn rows(v: &Value) -> Vec<Map<String, Value>> {
    let arr = match v {
        Value::Array(a) => Some(a),
        Value::Object(o) => o.values().find_map(Value::as_array),
        _ => None,
    };
    arr.map(|a| a.iter().filter_map(|r| r.as_object().cloned()).collect())
        .unwrap_or_default()
}

/// The id of a lead row (`ID` or `id`).
pub fn row_id(row: &Map<String, Value>) -> Option<i64> {
    row.get("ID").or_else(|| row.get("id")).and_then(as_id)
}

/// A lead object from a get answer (bare, or wrapped as `{"item": ..}` / `{"lead": ..}`).
pub fn lead_of(v: Value) -> Option<Map<String, Value>> {
    match v {
        Value::Object(mut o) => {
            if o.contains_key("ID") || o.contains_key("id") {
                Some(o)
            } else {
                ["item", "lead"]
                    .iter()
                    .find_map(|k| o.remove(*k))
                    .and_then(lead_of)
            }
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn out(text: &str, is_error: bool) -> ToolOutput {
        ToolOutput {
            text: text.into(),
            structured: None,
            is_error,
        }
    }

    #[test]
    fn bare_and_enveloped_results_read_the_same() {
        assert_eq!(result_of(&out("42", false)).unwrap(), json!(42));
        assert_eq!(
            result_of(&out(r#"{"result": 42, "time": {"start": 1}}"#, false)).unwrap(),
            json!(42)
        );
        // a server's wrapper around the REST result (the method, the portal)
        assert_eq!(
            result_of(&out(
                r#"{"method": "crm.duplicate.findbycomm", "portal": "p", "result": {"LEAD": [1]}}"#,
                false
            ))
            .unwrap(),
            json!({"LEAD": [1]})
        );
        let lead = r#"{"ID": "7", "TITLE": "x", "result": "not an envelope"}"#;
        assert_eq!(result_of(&out(lead, false)).unwrap()["ID"], "7");
    }

    #[test]
    fn every_error_form_is_an_error() {
        assert!(matches!(
            result_of(&out("Ошибка Bitrix24: Not found", false)),
            Err(McpError::NotFound)
        ));
        assert!(matches!(
            result_of(&out(
                r#"{"error": "QUERY_LIMIT_EXCEEDED", "error_description": "Too many"}"#,
                false
            )),
            Err(McpError::RateLimited { .. })
        ));
        assert!(matches!(
            result_of(&out(r#"{"error":"ACCESS_DENIED"}"#, true)),
            Err(McpError::Unauthorized { .. })
        ));
    }

    #[test]
    fn ids_and_duplicate_answers() {
        assert_eq!(as_id(&json!("17")), Some(17));
        assert_eq!(as_id(&json!(17)), Some(17));
        assert_eq!(as_id(&json!("x")), None);
        assert_eq!(created_id(&json!({"item": {"id": 9}})), Some(9));
        for (v, want, why) in [
            (json!([]), vec![], "empty array when nothing matches"),
            (json!({}), vec![], "empty object"),
            (json!({"CONTACT": [1]}), vec![], "no LEAD key"),
            (json!({"LEAD": [3, "4"]}), vec![3, 4], "numbers and strings"),
        ] {
            assert_eq!(duplicate_ids(&v), want, "{why}");
        }
        assert_eq!(rows(&json!({"items": [{"ID": "2"}]})).len(), 1);
        assert_eq!(row_id(&rows(&json!([{"id": 5}]))[0]), Some(5));
        assert_eq!(lead_of(json!({"item": {"id": 5}})).unwrap()["id"], 5);
    }
}
