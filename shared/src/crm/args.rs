//! Building a bound tool's arguments from the REST call an operation stands for.
//! Every operation is first written as Bitrix24 REST parameters (facts §3); a `Rest` tool takes
//! them as they are, an `Entity` tool with the entity added, a `Direct` tool matched to its own
//! property names (`lead_id`, `comment`, flat `title`/`sourceId` ...).

use serde_json::{Map, Value, json};

use super::binding::{BoundTool, ToolKind, norm};
use super::ops::Operation;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the tool {tool} needs an argument {argument} that the {op} operation cannot fill")]
pub struct ArgsError {
    pub tool: String,
    pub op: &'static str,
    pub argument: String,
}

/// Canonical parameter name -> normalised property names that mean it.
fn aliases(canonical: &str) -> &'static [&'static str] {
    match canonical {
        "id" => &["id", "leadid", "entityid", "itemid"],
        "fields" => &["fields", "data", "lead", "item"],
        "filter" => &["filter", "where"],
        "select" => &["select", "columns"],
        "order" => &["order", "sort"],
        "start" => &["start", "offset"],
        "type" => &["type", "commtype"],
        "values" => &["values", "phones", "phonenumbers", "numbers", "phone"],
        "entity_type" => &["entitytype"],
        "comment" => &["comment", "text", "message"],
        "status_entity" => &["entityid", "type", "entity"],
        _ => &[],
    }
}

/// The candidate values a direct tool's properties are filled from, by canonical name.
fn candidates(op: Operation, params: &Map<String, Value>) -> Vec<(String, Value)> {
    let mut out: Vec<(String, Value)> = Vec::new();
    match op {
        Operation::AddComment => {
            let f = params.get("fields").and_then(Value::as_object);
            if let Some(id) = f.and_then(|f| f.get("ENTITY_ID")) {
                out.push(("id".into(), id.clone()));
            }
            if let Some(c) = f.and_then(|f| f.get("COMMENT")) {
                out.push(("comment".into(), c.clone()));
            }
            out.push(("entity_type".into(), json!("lead")));
        }
        Operation::ListStatuses => {
            if let Some(e) = params
                .get("filter")
                .and_then(|f| f.get("ENTITY_ID"))
                .cloned()
            {
                out.push(("status_entity".into(), e));
            }
        }
        _ => {
            for (k, v) in params {
                out.push((k.clone(), v.clone()));
            }
        }
    }
    out
}

fn single_phone(v: &Value) -> Value {
    match v {
        Value::Array(items) => items
            .iter()
            .find_map(|i| i.get("VALUE").cloned())
            .unwrap_or(Value::Null),
        other => other.clone(),
    }
}

/// Fills a direct tool's properties. Returns the arguments, or the first required property no
/// candidate fills.
fn fill_direct(
    op: Operation,
    properties: &[String],
    required: &[String],
    params: &Map<String, Value>,
) -> Result<Map<String, Value>, String> {
    let cands = candidates(op, params);
    let mut args = Map::new();
    let mut used_fields = false;
    for prop in properties {
        let n = norm(prop);
        if let Some((canonical, v)) = cands
            .iter()
            .find(|(c, _)| aliases(c).contains(&n.as_str()) || norm(c) == n)
        {
            if canonical == "fields" {
                used_fields = true;
            }
            args.insert(prop.clone(), v.clone());
        }
    }
    // A tool with flat properties (`title`, `name`, `sourceId`, `phone`) instead of `fields`.
    if !used_fields && let Some(fields) = params.get("fields").and_then(Value::as_object) {
        for prop in properties {
            if args.contains_key(prop) {
                continue;
            }
            let n = norm(prop);
            if let Some((k, v)) = fields.iter().find(|(k, _)| norm(k) == n) {
                let v = if k == "PHONE" {
                    single_phone(v)
                } else {
                    v.clone()
                };
                args.insert(prop.clone(), v);
            }
        }
    }
    if let Some(missing) = required.iter().find(|r| !args.contains_key(*r)) {
        return Err(missing.clone());
    }
    Ok(args)
}

/// Representative REST parameters of each operation, for checking at binding time that a direct
/// tool's required arguments can be filled.
fn sample_params(op: Operation) -> Map<String, Value> {
    let v = match op {
        Operation::FindByPhone => {
            json!({"type": "PHONE", "values": ["+10000000000"], "entity_type": "LEAD"})
        }
        Operation::CreateLead => {
            json!({"fields": {"TITLE": "t", "NAME": "n", "PHONE": [{"VALUE": "+1", "VALUE_TYPE": "WORK"}], "COMMENTS": "c", "SOURCE_ID": "OTHER", "STATUS_ID": "NEW"}})
        }
        Operation::UpdateLead => json!({"id": 1, "fields": {"STATUS_ID": "NEW"}}),
        Operation::GetLead => json!({"id": 1}),
        Operation::ListLeads => json!({"filter": {"ORIGIN_ID": "x"}, "select": ["ID"]}),
        Operation::AddComment => {
            json!({"fields": {"ENTITY_ID": 1, "ENTITY_TYPE": "lead", "COMMENT": "c"}})
        }
        Operation::ListStatuses => json!({"filter": {"ENTITY_ID": "STATUS"}}),
        Operation::LeadFields => json!({}),
        Operation::AddStatus => {
            json!({"fields": {"ENTITY_ID": "SOURCE", "STATUS_ID": "TELEGRAM", "NAME": "Telegram"}})
        }
        Operation::AddUserField => {
            json!({"fields": {"USER_TYPE_ID": "string", "FIELD_NAME": "TELEAGENT_HOTNESS", "LABEL": "Hotness"}})
        }
    };
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// Whether a direct tool can serve `op`: every required argument can be filled.
pub fn direct_fits(op: Operation, kind: &ToolKind) -> bool {
    match kind {
        ToolKind::Direct {
            properties,
            required,
        } => fill_direct(op, properties, required, &sample_params(op)).is_ok(),
        _ => true,
    }
}

/// The `tools/call` arguments for `op` with REST parameters `params`.
pub fn tool_arguments(
    bound: &BoundTool,
    op: Operation,
    params: Map<String, Value>,
) -> Result<Value, ArgsError> {
    match &bound.kind {
        ToolKind::Rest {
            method_arg,
            params_arg,
        } => {
            let mut args = Map::new();
            args.insert(method_arg.clone(), json!(op.rest_method()));
            args.insert(params_arg.clone(), Value::Object(params));
            Ok(Value::Object(args))
        }
        ToolKind::Entity {
            entity_arg,
            numeric,
        } => {
            let mut args = params;
            args.remove("params");
            let entity = if *numeric { json!(1) } else { json!("lead") };
            args.insert(entity_arg.clone(), entity);
            Ok(Value::Object(args))
        }
        ToolKind::Direct {
            properties,
            required,
        } => fill_direct(op, properties, required, &params)
            .map(Value::Object)
            .map_err(|argument| ArgsError {
                tool: bound.tool.clone(),
                op: op.key(),
                argument,
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::binding::Profile;

    fn direct(props: &[&str], required: &[&str]) -> BoundTool {
        BoundTool {
            tool: "t".into(),
            profile: Profile::LeadTools,
            kind: ToolKind::Direct {
                properties: props.iter().map(|s| (*s).to_owned()).collect(),
                required: required.iter().map(|s| (*s).to_owned()).collect(),
            },
        }
    }

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn rest_and_entity_shapes() {
        let rest = BoundTool {
            tool: "call".into(),
            profile: Profile::RestMethod,
            kind: ToolKind::Rest {
                method_arg: "method".into(),
                params_arg: "params".into(),
            },
        };
        let a = tool_arguments(&rest, Operation::GetLead, params(json!({"id": 7}))).unwrap();
        assert_eq!(a, json!({"method": "crm.lead.get", "params": {"id": 7}}));
        let ent = BoundTool {
            tool: "crm_update".into(),
            profile: Profile::CrmEntity,
            kind: ToolKind::Entity {
                entity_arg: "entityTypeId".into(),
                numeric: true,
            },
        };
        let a = tool_arguments(
            &ent,
            Operation::UpdateLead,
            params(json!({"id": 7, "fields": {"NAME": "A"}})),
        )
        .unwrap();
        assert_eq!(
            a,
            json!({"entityTypeId": 1, "id": 7, "fields": {"NAME": "A"}})
        );
    }

    #[test]
    fn direct_tools_get_their_own_argument_names() {
        let t = direct(&["lead_id", "comment"], &["lead_id", "comment"]);
        let a = tool_arguments(
            &t,
            Operation::AddComment,
            params(json!({"fields": {"ENTITY_ID": 5, "ENTITY_TYPE": "lead", "COMMENT": "hi"}})),
        )
        .unwrap();
        assert_eq!(a, json!({"lead_id": 5, "comment": "hi"}));

        let flat = direct(
            &["title", "name", "phone", "sourceId", "comments"],
            &["title"],
        );
        let a = tool_arguments(
            &flat,
            Operation::CreateLead,
            params(
                json!({"fields": {"TITLE": "Telegram: Ann", "NAME": "Ann", "SOURCE_ID": "OTHER",
                "PHONE": [{"VALUE": "+998901234567", "VALUE_TYPE": "WORK"}], "COMMENTS": "x"}}),
            ),
        )
        .unwrap();
        assert_eq!(
            a,
            json!({"title": "Telegram: Ann", "name": "Ann", "phone": "+998901234567", "sourceId": "OTHER", "comments": "x"})
        );

        let dup = direct(&["type", "phones"], &["phones"]);
        let a = tool_arguments(
            &dup,
            Operation::FindByPhone,
            params(json!({"type": "PHONE", "values": ["1", "2"], "entity_type": "LEAD"})),
        )
        .unwrap();
        assert_eq!(a, json!({"type": "PHONE", "phones": ["1", "2"]}));

        let statuses = direct(&["entity_id"], &["entity_id"]);
        let a = tool_arguments(
            &statuses,
            Operation::ListStatuses,
            params(json!({"filter": {"ENTITY_ID": "SOURCE"}})),
        )
        .unwrap();
        assert_eq!(a, json!({"entity_id": "SOURCE"}));
    }

    #[test]
    fn unfillable_required_argument_is_refused() {
        let t = direct(&["deal_id"], &["deal_id"]);
        let e = tool_arguments(&t, Operation::GetLead, params(json!({"id": 1}))).unwrap_err();
        assert_eq!(e.argument, "deal_id");
        assert!(!direct_fits(Operation::GetLead, &t.kind));
        assert!(direct_fits(
            Operation::GetLead,
            &direct(&["id"], &["id"]).kind
        ));
    }
}
