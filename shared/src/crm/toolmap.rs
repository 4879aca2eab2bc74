//! `MCP_TOOL_MAP`: the operator's explicit binding, which wins over discovery. Each entry maps an
//! operation key to a tool name, or to an object that can express every tool shape:
//!
//! ```json
//! {"create_lead": "bitrix24_create_lead",
//!  "update_lead": {"tool": "crm_update", "kind": "entity", "set": {"entityTypeId": 1}},
//!  "get_lead":    {"tool": "bx24_crm_leads", "kind": "action", "set": {"action": "get"}},
//!  "list_leads":  {"tool": "call", "kind": "rest"},
//!  "find_by_phone": {"tool": "lead_search", "kind": "direct", "args": {"q": "values.0"}}}
//! ```
//!
//! `set` fixes arguments (entity or action selectors); `args` names, per tool argument, where its
//! value comes from: a REST parameter (`id`, `filter`, `values.0` for the first phone),
//! `fields.NAME` for one field, `fields.*` for the fields no other argument took, or `filter.KEY`.

use std::collections::BTreeMap;

use serde_json::Value;

use super::args::{Arg, ArgPlan, Source};
use super::ops::Operation;

/// One operation's entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub tool: String,
    /// `rest`, `entity`, `action` or `direct`; `None` lets discovery read the schema.
    pub kind: Option<String>,
    /// Arguments fixed to a value.
    pub fixed: Vec<(String, Value)>,
    /// Argument -> where its value comes from.
    pub args: Vec<(String, Source)>,
}

impl MapEntry {
    /// Puts the entry's explicit argument sources into a plan built from the schema.
    pub fn apply_overrides(&self, plan: &mut ArgPlan) {
        for (prop, source) in &self.args {
            plan.args.retain(|a| &a.prop != prop);
            plan.args.push(Arg {
                prop: prop.clone(),
                source: source.clone(),
                text: false,
                required: false,
            });
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolMap {
    entries: BTreeMap<Operation, MapEntry>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ToolMapError {
    #[error("MCP_TOOL_MAP is not a JSON object")]
    NotAnObject,
    #[error("MCP_TOOL_MAP names an unknown operation {0:?}")]
    UnknownOperation(String),
    #[error(
        "MCP_TOOL_MAP entry for {0} must be a tool name or {{\"tool\", \"kind\"?, \"set\"?, \"args\"?}}"
    )]
    BadEntry(String),
}

/// `fields.NAME`, `fields.*`, `filter.KEY`, `values.0`, or a REST parameter name.
fn source_of(spec: &str) -> Option<Source> {
    let spec = spec.trim();
    if spec.is_empty() {
        return None;
    }
    Some(match spec.split_once('.') {
        Some(("fields", "*")) => Source::OtherFields,
        Some(("fields", name)) => Source::Field { name: name.into() },
        Some(("filter", name)) => Source::Filter { name: name.into() },
        Some((name, "0")) => Source::First { name: name.into() },
        Some(_) => return None,
        None => Source::Param { name: spec.into() },
    })
}

fn entry(op_key: &str, v: &Value) -> Result<MapEntry, ToolMapError> {
    let bad = || ToolMapError::BadEntry(op_key.to_owned());
    match v {
        Value::String(tool) => Ok(MapEntry {
            tool: tool.clone(),
            kind: None,
            fixed: Vec::new(),
            args: Vec::new(),
        }),
        Value::Object(o) => {
            let tool = o.get("tool").and_then(Value::as_str).ok_or_else(bad)?;
            let kind = match o.get("kind") {
                None => None,
                Some(Value::String(k))
                    if matches!(k.as_str(), "rest" | "entity" | "action" | "direct") =>
                {
                    Some(k.clone())
                }
                Some(_) => return Err(bad()),
            };
            let fixed = match o.get("set") {
                None => Vec::new(),
                Some(Value::Object(set)) => {
                    set.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
                }
                Some(_) => return Err(bad()),
            };
            let args = match o.get("args") {
                None => Vec::new(),
                Some(Value::Object(args)) => args
                    .iter()
                    .map(|(k, v)| {
                        v.as_str()
                            .and_then(source_of)
                            .map(|s| (k.clone(), s))
                            .ok_or_else(bad)
                    })
                    .collect::<Result<_, _>>()?,
                Some(_) => return Err(bad()),
            };
            if o.keys()
                .any(|k| !matches!(k.as_str(), "tool" | "kind" | "set" | "args"))
            {
                return Err(bad());
            }
            Ok(MapEntry {
                tool: tool.to_owned(),
                kind,
                fixed,
                args,
            })
        }
        _ => Err(bad()),
    }
}

impl ToolMap {
    pub fn parse(raw: &str) -> Result<Self, ToolMapError> {
        let v: Value = serde_json::from_str(raw).map_err(|_| ToolMapError::NotAnObject)?;
        let obj = v.as_object().ok_or(ToolMapError::NotAnObject)?;
        let mut entries = BTreeMap::new();
        for (k, v) in obj {
            let op =
                Operation::from_key(k).ok_or_else(|| ToolMapError::UnknownOperation(k.clone()))?;
            entries.insert(op, entry(k, v)?);
        }
        Ok(Self { entries })
    }

    pub fn entries(&self) -> impl Iterator<Item = (&Operation, &MapEntry)> {
        self.entries.iter()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn entries_express_every_shape() {
        let map = ToolMap::parse(
            r#"{"create_lead": "make",
                "update_lead": {"tool": "crm_update", "kind": "entity", "set": {"entityTypeId": 1}},
                "get_lead": {"tool": "leads", "kind": "action", "set": {"action": "get"}},
                "find_by_phone": {"tool": "s", "kind": "direct", "args": {"q": "values.0", "x": "fields.*", "t": "fields.TITLE", "e": "filter.ENTITY_ID", "i": "id"}}}"#,
        )
        .unwrap();
        let e: Vec<_> = map.entries().collect();
        assert_eq!(e.len(), 4);
        let (_, find) = e
            .iter()
            .find(|(op, _)| **op == Operation::FindByPhone)
            .unwrap();
        assert_eq!(
            find.args,
            vec![
                (
                    "e".to_owned(),
                    Source::Filter {
                        name: "ENTITY_ID".into()
                    }
                ),
                ("i".to_owned(), Source::Param { name: "id".into() }),
                (
                    "q".to_owned(),
                    Source::First {
                        name: "values".into()
                    }
                ),
                (
                    "t".to_owned(),
                    Source::Field {
                        name: "TITLE".into()
                    }
                ),
                ("x".to_owned(), Source::OtherFields),
            ]
        );
        let (_, update) = e
            .iter()
            .find(|(op, _)| **op == Operation::UpdateLead)
            .unwrap();
        assert_eq!(update.fixed, vec![("entityTypeId".to_owned(), json!(1))]);
    }

    #[test]
    fn bad_entries_are_refused() {
        for (raw, why) in [
            ("[]", "not an object"),
            (r#"{"make_coffee": "x"}"#, "unknown operation"),
            (r#"{"create_lead": 3}"#, "bad entry"),
            (
                r#"{"create_lead": {"tool": "x", "kind": "magic"}}"#,
                "bad kind",
            ),
            (
                r#"{"create_lead": {"tool": "x", "args": {"a": "what.ever"}}}"#,
                "bad source",
            ),
            (
                r#"{"create_lead": {"tool": "x", "colour": "red"}}"#,
                "unknown key",
            ),
        ] {
            assert!(ToolMap::parse(raw).is_err(), "{why}");
        }
    }
}
