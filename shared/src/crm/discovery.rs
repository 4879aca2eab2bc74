//! Tool discovery: binding a server's tools to the CRM operations, and with which
//! arguments. Bitrix24 does not publish its hosted server's tools, and community servers differ,
//! so tools are read as they are:
//!
//! - a generic tool that runs any REST method (`{method, params}`) serves every operation;
//! - a shared tool whose entity is an argument (`crm_add {entity: "lead" | entityTypeId: 1}`)
//!   serves the operation its name says, with that argument fixed to the lead entity;
//! - a tool per entity whose operation is an argument (`bx24_crm_leads {action: "add"|...}`)
//!   serves each operation its `action` enum offers;
//! - a tool per operation (`bitrix24_create_lead`) serves the operation its name, or failing
//!   that the first sentence of its description, says, when it is about leads.
//!
//! Words only nominate a tool. It is bound only when its input schema can do the job
//! ([`ArgPlan::carries`]): a create needs somewhere to put the fields, an update an id and
//! fields, a get an id, a lead list a filter, a phone search the phone values, and every
//! required argument must be fillable. Report and summary tools are never bound. An explicit
//! `MCP_TOOL_MAP` ([`super::toolmap`]) wins over discovery.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::args::{ArgPlan, sample_params};
use super::binding::{Binding, BoundTool, PortalCaps, Profile, ToolKind};
use super::ops::Operation;
use super::schema::{Prop, find, norm, props};
use super::toolmap::{MapEntry, ToolMap};
use super::words::{self, Verb, has_any, tokens};
use crate::mcp::ToolInfo;

/// A candidate: one tool able to serve one operation.
struct Candidate {
    op: Operation,
    bound: BoundTool,
    /// The tool's own name names this operation (preferred over a description match).
    by_name: bool,
}

/// Binds every operation it can. `map` entries win; among discovered tools a tool per lead
/// operation beats a per-entity action tool, which beats an entity-generic one, which beats the
/// generic REST tool; a tool whose name says the operation beats one whose description does.
pub fn discover(tools: &[ToolInfo], map: Option<&ToolMap>) -> Binding {
    let mut ops: BTreeMap<Operation, (BoundTool, bool)> = BTreeMap::new();
    for tool in tools {
        for c in candidates(tool) {
            let better = match ops.get(&c.op) {
                None => true,
                Some((b, by_name)) => {
                    (c.bound.profile.rank(), !c.by_name) < (b.profile.rank(), !*by_name)
                }
            };
            if better {
                ops.insert(c.op, (c.bound, c.by_name));
            }
        }
    }
    let mut ops: BTreeMap<Operation, BoundTool> =
        ops.into_iter().map(|(k, (b, _))| (k, b)).collect();
    if let Some(map) = map {
        for (op, entry) in map.entries() {
            // A configured tool the server does not offer, or cannot serve: the operation stays
            // unbound, so connect names it missing instead of silently using another tool.
            match tools
                .iter()
                .find(|t| t.name == entry.tool)
                .and_then(|t| configured(t, *op, entry))
            {
                Some(bound) => ops.insert(*op, bound),
                None => ops.remove(op),
            };
        }
    }
    Binding {
        ops,
        caps: PortalCaps::default(),
    }
}

/// A tool's text for reading what it does: its name, and its description's first sentence.
fn name_and_purpose(tool: &ToolInfo) -> (Vec<String>, Vec<String>) {
    let desc = tool
        .description
        .as_deref()
        .map(words::first_sentence)
        .unwrap_or("");
    (tokens(&tool.name), tokens(desc))
}

fn is_report(name: &[String], desc: &[String]) -> bool {
    has_any(name, words::REPORT) || (!has_any(name, words::LEAD) && has_any(desc, words::REPORT))
}

/// Every operation one tool can serve.
fn candidates(tool: &ToolInfo) -> Vec<Candidate> {
    let props = props(&tool.input_schema);
    let (name, desc) = name_and_purpose(tool);
    if is_report(&name, &desc) {
        return Vec::new();
    }
    if let Some(kind) = as_rest(&props) {
        let methods = find(&props, METHOD_ARGS)
            .map(|p| p.enum_values.clone())
            .unwrap_or_default();
        return Operation::ALL
            .into_iter()
            .filter(|op| methods.is_empty() || methods.contains(&json!(op.rest_method())))
            .map(|op| Candidate {
                op,
                bound: BoundTool {
                    tool: tool.name.clone(),
                    profile: Profile::RestMethod,
                    kind: kind.clone(),
                },
                by_name: false,
            })
            .collect();
    }
    let entity = entity_selector(&props);
    if let Some(Err(())) = entity {
        return Vec::new(); // an entity argument that cannot name a lead
    }
    let entity = entity.and_then(Result::ok);
    let about_leads = entity.is_some() || about_leads(&name, &desc);
    if let Some(action) = find(&props, ACTION_ARGS).filter(|p| !p.enum_values.is_empty()) {
        if !about_leads {
            return Vec::new();
        }
        return action_candidates(tool, &props, action, entity);
    }
    let ops = match &entity {
        Some(_) => entity_ops(&name),
        None if about_leads => lead_ops(&name, &desc, &props),
        None => Vec::new(),
    };
    let profile = if entity.is_some() {
        Profile::CrmEntity
    } else {
        Profile::LeadTools
    };
    let fixed: Vec<(String, Value)> = entity.into_iter().collect();
    ops.into_iter()
        .filter_map(|(op, by_name)| {
            plan_for(op, &props, &fixed).map(|plan| Candidate {
                op,
                bound: BoundTool {
                    tool: tool.name.clone(),
                    profile,
                    kind: ToolKind::Args(plan),
                },
                by_name,
            })
        })
        .collect()
}

const METHOD_ARGS: &[&str] = &["method", "apimethod", "restmethod", "methodname"];
const PARAMS_ARGS: &[&str] = &[
    "params",
    "parameters",
    "args",
    "arguments",
    "payload",
    "body",
    "data",
];
const ENTITY_ARGS: &[&str] = &[
    "entity",
    "entitytype",
    "entitytypeid",
    "entityname",
    "entitytypename",
    "crmentity",
];
const ACTION_ARGS: &[&str] = &["action", "operation", "op", "mode", "command"];

/// A generic "run a REST method" tool: a `method` string and an object of parameters.
fn as_rest(props: &[Prop]) -> Option<ToolKind> {
    let method = find(props, METHOD_ARGS).filter(|p| p.accepts("string"))?;
    let params = find(props, PARAMS_ARGS).filter(|p| p.is_object())?;
    Some(ToolKind::Rest {
        method_arg: method.name.clone(),
        params_arg: params.name.clone(),
    })
}

/// The entity argument fixed to the lead entity: `Some(Ok)` when the tool has one that can name
/// a lead, `Some(Err)` when it has one that cannot (its enum lists no lead), `None` without one.
/// A phone search's `entity_type` (with `values`) is a search parameter, not a selector.
fn entity_selector(props: &[Prop]) -> Option<Result<(String, Value), ()>> {
    let p = find(props, ENTITY_ARGS)?;
    if p.key() == "entitytype" && find(props, &["values", "type", "phones"]).is_some() {
        return None;
    }
    let numeric_name = p.key() == "entitytypeid";
    let lead = |v: &Value| match v {
        Value::Number(n) => n.as_i64() == Some(1),
        Value::String(s) => {
            matches!(norm(s).as_str(), "lead" | "leads" | "crmlead") || (numeric_name && s == "1")
        }
        _ => false,
    };
    let value = if p.enum_values.is_empty() {
        if p.is_numeric() || (numeric_name && !p.accepts("string")) {
            json!(1)
        } else if numeric_name {
            json!("1")
        } else {
            json!("lead")
        }
    } else {
        match p.enum_values.iter().find(|v| lead(v)) {
            Some(v) => v.clone(),
            None => return Some(Err(())),
        }
    };
    Some(Ok((p.name.clone(), value)))
}

/// The tool acts on leads: its name says so, or names a lead helper (statuses, duplicates,
/// comments, fields) and no other entity, or its description's first sentence is about leads
/// and no other entity.
fn about_leads(name: &[String], desc: &[String]) -> bool {
    if has_any(name, words::LEAD) {
        return true;
    }
    if has_any(name, words::OTHER_ENTITIES) {
        return false;
    }
    if [
        words::STATUS,
        words::DUPLICATE,
        words::COMMENT,
        words::FIELD,
    ]
    .iter()
    .any(|stems| has_any(name, stems))
    {
        return true;
    }
    (has_any(desc, words::LEAD) && !has_any(desc, words::OTHER_ENTITIES))
        || has_any(desc, words::DUPLICATE)
}

/// Operations of a shared entity tool, from its name (`crm_add`, `crm_item_list`).
fn entity_ops(name: &[String]) -> Vec<(Operation, bool)> {
    let op = match words::verb(name) {
        Some(Verb::Create) => Operation::CreateLead,
        Some(Verb::Update) => Operation::UpdateLead,
        Some(Verb::Get) => Operation::GetLead,
        Some(Verb::List) => Operation::ListLeads,
        _ if has_any(name, words::FIELD) => Operation::LeadFields,
        _ => return Vec::new(),
    };
    if has_any(name, words::COMMENT) {
        return if op == Operation::CreateLead {
            vec![(Operation::AddComment, true)]
        } else {
            Vec::new()
        };
    }
    if has_any(name, words::STATUS) || has_any(name, words::DUPLICATE) {
        return Vec::new();
    }
    vec![(op, true)]
}

/// Operations of a tool per operation: from its name, else from its description's first
/// sentence when that agrees with the verb the name has (if any).
fn lead_ops(name: &[String], desc: &[String], props: &[Prop]) -> Vec<(Operation, bool)> {
    if let Some(op) = op_of_words(name, props) {
        return vec![(op, true)];
    }
    if !words::is_opaque(name) {
        return Vec::new(); // the name says what it does, and it is none of ours
    }
    let Some(op) = op_of_words(desc, props) else {
        return Vec::new();
    };
    let agrees = match words::verb(name) {
        None => true,
        Some(Verb::Create) => matches!(
            op,
            Operation::CreateLead
                | Operation::AddComment
                | Operation::AddStatus
                | Operation::AddUserField
        ),
        Some(Verb::Update) => op == Operation::UpdateLead,
        Some(Verb::Get) => matches!(
            op,
            Operation::GetLead | Operation::LeadFields | Operation::ListStatuses
        ),
        Some(Verb::List) => matches!(
            op,
            Operation::ListLeads | Operation::FindByPhone | Operation::ListStatuses
        ),
        Some(Verb::Delete) => false,
    };
    if agrees {
        vec![(op, false)]
    } else {
        Vec::new()
    }
}

fn op_of_words(t: &[String], props: &[Prop]) -> Option<Operation> {
    if has_any(t, words::DUPLICATE) {
        return Some(Operation::FindByPhone);
    }
    if has_any(t, words::OTHER_ENTITIES) && !has_any(t, words::LEAD) {
        return None;
    }
    if has_any(t, words::COMMENT) {
        // Adding a comment; listing, reading or editing comments is not.
        return matches!(words::verb(t), None | Some(Verb::Create))
            .then_some(Operation::AddComment);
    }
    if has_any(t, words::USERFIELD) || (has_any(t, &["user"]) && has_any(t, words::FIELD)) {
        return (words::verb(t) == Some(Verb::Create)).then_some(Operation::AddUserField);
    }
    if has_any(t, words::STATUS) && !has_any(t, words::LEAD) {
        return match words::verb(t) {
            Some(Verb::Create) => Some(Operation::AddStatus),
            Some(Verb::List | Verb::Get) => Some(Operation::ListStatuses),
            _ => None,
        };
    }
    if !has_any(t, words::LEAD) {
        return None;
    }
    if has_any(t, words::FIELD) && !matches!(words::verb(t), Some(Verb::Create | Verb::Update)) {
        return Some(Operation::LeadFields);
    }
    if has_any(t, words::PHONE)
        && words::verb(t) == Some(Verb::List)
        && find(props, &["filter"]).is_none()
    {
        return Some(Operation::FindByPhone);
    }
    match words::verb(t) {
        Some(Verb::Create) => Some(Operation::CreateLead),
        Some(Verb::Update) => Some(Operation::UpdateLead),
        Some(Verb::List) => Some(Operation::ListLeads),
        // "get leads" without an id is a listing
        Some(Verb::Get) if t.iter().any(|w| w == "leads" || w == "лиды") => {
            Some(Operation::ListLeads)
        }
        Some(Verb::Get) => Some(Operation::GetLead),
        _ if t.iter().any(|w| w == "leads") => Some(Operation::ListLeads),
        _ => None,
    }
}

/// Operations of a tool per entity whose `action` argument picks the operation.
fn action_candidates(
    tool: &ToolInfo,
    props: &[Prop],
    action: &Prop,
    entity: Option<(String, Value)>,
) -> Vec<Candidate> {
    let mut out = Vec::new();
    for value in &action.enum_values {
        let Some(v) = value.as_str() else { continue };
        let op = match words::action_verb(v) {
            Some(Verb::Create) => Operation::CreateLead,
            Some(Verb::Update) => Operation::UpdateLead,
            Some(Verb::Get) => Operation::GetLead,
            Some(Verb::List) => Operation::ListLeads,
            _ if tokens(v) == ["fields"] => Operation::LeadFields,
            _ => continue,
        };
        let mut fixed: Vec<(String, Value)> = entity.clone().into_iter().collect();
        fixed.push((action.name.clone(), value.clone()));
        if let Some(plan) = plan_for(op, props, &fixed) {
            out.push(Candidate {
                op,
                bound: BoundTool {
                    tool: tool.name.clone(),
                    profile: Profile::EntityAction,
                    kind: ToolKind::Args(plan),
                },
                by_name: true,
            });
        }
    }
    out
}

/// The plan when the schema can carry what `op` sends and every required argument is filled.
fn plan_for(op: Operation, props: &[Prop], fixed: &[(String, Value)]) -> Option<ArgPlan> {
    let plan = ArgPlan::build(op, props, fixed).ok()?;
    (plan.carries(op) && plan.fill(&sample_params(op)).is_ok()).then_some(plan)
}

/// A tool named in `MCP_TOOL_MAP`: bound the way the entry says, else as discovery reads it.
fn configured(tool: &ToolInfo, op: Operation, entry: &MapEntry) -> Option<BoundTool> {
    let props = props(&tool.input_schema);
    let kind = if entry.kind.as_deref() == Some("rest")
        || (entry.kind.is_none() && as_rest(&props).is_some())
    {
        as_rest(&props)?
    } else {
        let mut fixed = entry.fixed.clone();
        if entry.kind.as_deref() == Some("entity")
            && !fixed
                .iter()
                .any(|(k, _)| find(&props, &[&norm(k)]).is_some())
        {
            fixed.extend(entity_selector(&props).and_then(Result::ok));
        }
        if entry.kind.is_none() && fixed.is_empty() {
            fixed.extend(entity_selector(&props).and_then(Result::ok));
        }
        let mut plan = ArgPlan::build(op, &props, &fixed).ok()?;
        entry.apply_overrides(&mut plan);
        // Configured or not, a tool that cannot carry what the operation sends is not bound.
        if !plan.carries(op) || plan.fill(&sample_params(op)).is_err() {
            return None;
        }
        ToolKind::Args(plan)
    };
    Some(BoundTool {
        tool: tool.name.clone(),
        profile: Profile::Config,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use serde_json::Map;

    use super::*;

    fn tool(name: &str, desc: &str, schema: Value) -> ToolInfo {
        ToolInfo {
            name: name.into(),
            description: Some(desc.into()),
            input_schema: schema,
        }
    }

    fn obj(props: &[(&str, &str)], required: &[&str]) -> Value {
        let p: Map<String, Value> = props
            .iter()
            .map(|(k, t)| ((*k).to_owned(), json!({"type": t})))
            .collect();
        json!({"type": "object", "properties": p, "required": required})
    }

    fn bound(b: &Binding, op: Operation) -> Option<&str> {
        b.get(op).map(|t| t.tool.as_str())
    }

    fn args(b: &Binding, op: Operation, params: Value) -> Value {
        b.get(op)
            .and_then(|t| {
                t.arguments(op, params.as_object().cloned().unwrap_or_default())
                    .ok()
            })
            .unwrap_or(Value::Null)
    }

    /// The shape reported from the field: per-operation tools with flat properties AND an
    /// optional `fields` object for raw extra fields.
    fn flat_plus_fields() -> Vec<ToolInfo> {
        let flat = |id: bool| {
            let mut p = json!({"title": {"type": "string"}, "name": {"type": "string"},
                "phone": {"type": "string"}, "comments": {"type": "string"},
                "sourceId": {"type": "string"}, "statusId": {"type": "string"},
                "fields": {"anyOf": [{"type": "object"}, {"type": "null"}], "default": null}});
            if id {
                p["id"] = json!({"type": "integer"});
            }
            json!({"type": "object", "properties": p, "required": if id { json!(["id"]) } else { json!(["title"]) }})
        };
        vec![
            tool("bitrix24_create_lead", "Create a lead", flat(false)),
            tool("bitrix24_update_lead", "Update a lead", flat(true)),
            tool(
                "bitrix24_get_lead",
                "Get a lead",
                obj(&[("id", "integer")], &["id"]),
            ),
            tool(
                "bitrix24_list_leads",
                "List leads",
                obj(&[("filter", "object"), ("limit", "integer")], &[]),
            ),
            tool(
                "bitrix24_find_duplicates",
                "Find duplicates by phone",
                obj(
                    &[
                        ("type", "string"),
                        ("values", "array"),
                        ("entity_type", "string"),
                    ],
                    &["values"],
                ),
            ),
        ]
    }

    #[test]
    fn flat_properties_plus_a_fields_object_bind_create_and_update() {
        let b = discover(&flat_plus_fields(), None);
        assert!(b.missing_required().is_empty(), "{:?}", b.report());
        let create = args(
            &b,
            Operation::CreateLead,
            json!({"fields": {"TITLE": "Telegram: Ann", "NAME": "Ann", "ORIGIN_ID": "t:c",
                   "PHONE": [{"VALUE": "+1", "VALUE_TYPE": "WORK"}], "UF_CRM_TELEAGENT_SCORE": 5}}),
        );
        assert_eq!(
            create,
            json!({"title": "Telegram: Ann", "name": "Ann", "phone": "+1",
                   "fields": {"ORIGIN_ID": "t:c", "UF_CRM_TELEAGENT_SCORE": 5}})
        );
        let update = args(
            &b,
            Operation::UpdateLead,
            json!({"id": 7, "fields": {"STATUS_ID": "JUNK", "UF_CRM_X": 1}}),
        );
        assert_eq!(
            update,
            json!({"id": 7, "statusId": "JUNK", "fields": {"UF_CRM_X": 1}})
        );
        assert_eq!(
            bound(&b, Operation::FindByPhone),
            Some("bitrix24_find_duplicates")
        );
    }

    #[test]
    fn report_tools_are_never_bound_even_when_they_mention_leads() {
        let tools = vec![
            tool(
                "get_daily_summary",
                "Сводка за день: созданные лиды, новые сделки",
                obj(&[("date", "string")], &[]),
            ),
            tool(
                "deal_stages",
                "Получить стадии сделок",
                obj(&[("id", "integer")], &["id"]),
            ),
            tool(
                "leads_report",
                "Report of new leads",
                obj(&[("fields", "object")], &[]),
            ),
            tool(
                "lead_list",
                "Список лидов",
                obj(&[("filter", "object")], &[]),
            ),
        ];
        let b = discover(&tools, None);
        assert_eq!(bound(&b, Operation::ListLeads), Some("lead_list"));
        assert_eq!(
            b.missing_required(),
            vec![
                Operation::CreateLead,
                Operation::UpdateLead,
                Operation::GetLead
            ]
        );
    }

    #[test]
    fn get_binds_only_to_a_lead_tool_that_takes_an_id() {
        let tools = vec![
            tool("get_deal", "Get a deal", obj(&[("id", "integer")], &["id"])),
            tool(
                "get_lead_list",
                "Get leads",
                obj(&[("limit", "integer")], &[]),
            ),
            tool(
                "lead_get",
                "Get a lead",
                obj(&[("query", "string")], &["query"]),
            ),
        ];
        assert_eq!(bound(&discover(&tools, None), Operation::GetLead), None);
    }

    #[test]
    fn a_search_that_cannot_filter_is_not_bound() {
        let tools = vec![tool(
            "bitrix24_list_leads",
            "List leads",
            obj(&[("limit", "integer")], &[]),
        )];
        let b = discover(&tools, None);
        assert_eq!(bound(&b, Operation::ListLeads), None);
        assert!(b.missing_required().contains(&Operation::FindByPhone));
    }

    #[test]
    fn entity_and_action_selectors_are_fixed_from_the_schema() {
        let tools = vec![
            tool(
                "crm_item_add",
                "Add a CRM item",
                obj(
                    &[("entityTypeId", "integer"), ("fields", "object")],
                    &["entityTypeId", "fields"],
                ),
            ),
            tool(
                "crm_update",
                "Update",
                json!({"type": "object", "required": ["entity", "id", "fields"], "properties": {
                    "entity": {"type": "string", "enum": ["DEAL", "LEAD"]}, "id": {"type": "integer"},
                    "fields": {"type": "object"}}}),
            ),
            tool(
                "crm_get",
                "Get",
                json!({"type": "object", "properties": {"entity": {"type": "string", "enum": ["deal", "contact"]}, "id": {"type": "integer"}}}),
            ),
            tool(
                "bx24_crm_leads",
                "Leads: CRUD",
                json!({"type": "object", "required": ["action"], "properties": {
                    "action": {"type": "string", "enum": ["contact_add", "add", "get", "list", "update", "delete"]},
                    "id": {"type": "string"}, "fields": {"type": "object"}, "filter": {"type": "object"}}}),
            ),
        ];
        let b = discover(&tools, None);
        // the action tool beats the entity tools; an entity enum without a lead never binds
        assert_eq!(
            args(&b, Operation::GetLead, json!({"id": 3})),
            json!({"action": "get", "id": "3"})
        );
        assert_eq!(
            args(&b, Operation::CreateLead, json!({"fields": {"TITLE": "x"}})),
            json!({"action": "add", "fields": {"TITLE": "x"}})
        );
        let entity_only = discover(&tools[..3], None);
        assert_eq!(
            args(
                &entity_only,
                Operation::CreateLead,
                json!({"fields": {"TITLE": "x"}})
            ),
            json!({"entityTypeId": 1, "fields": {"TITLE": "x"}})
        );
        assert_eq!(
            args(
                &entity_only,
                Operation::UpdateLead,
                json!({"id": 3, "fields": {}})
            ),
            json!({"entity": "LEAD", "id": 3, "fields": {}})
        );
        assert_eq!(bound(&entity_only, Operation::GetLead), None);
    }

    #[test]
    fn russian_descriptions_name_opaque_tools_only() {
        let tools = vec![
            tool(
                "b24Tool1",
                "Создать лид в CRM",
                obj(&[("fields", "object")], &["fields"]),
            ),
            tool(
                "b24Tool2",
                "Обновить лид",
                obj(
                    &[("id", "integer"), ("fields", "object")],
                    &["id", "fields"],
                ),
            ),
            tool(
                "check_settings",
                "Получить лид по ID",
                obj(&[("id", "integer")], &["id"]),
            ),
        ];
        let b = discover(&tools, None);
        assert_eq!(bound(&b, Operation::CreateLead), Some("b24Tool1"));
        assert_eq!(bound(&b, Operation::UpdateLead), Some("b24Tool2"));
        assert_eq!(
            bound(&b, Operation::GetLead),
            None,
            "a name that says something else wins"
        );
    }

    #[test]
    fn generic_rest_tool_binds_everything_its_method_enum_allows() {
        let tools = vec![tool(
            "call",
            "Call a REST method",
            json!({"type": "object", "properties": {"method": {"type": "string"}, "params": {"type": "object"}}}),
        )];
        let b = discover(&tools, None);
        assert_eq!(
            Operation::ALL
                .iter()
                .filter(|op| b.get(**op).is_some())
                .count(),
            10
        );
        assert_eq!(
            args(&b, Operation::GetLead, json!({"id": 7})),
            json!({"method": "crm.lead.get", "params": {"id": 7}})
        );
        let limited = vec![tool(
            "call",
            "Call",
            json!({"type": "object", "properties": {"method": {"type": "string", "enum": ["crm.lead.get", "crm.lead.add"]}, "params": {"type": "object"}}}),
        )];
        let b = discover(&limited, None);
        assert_eq!(b.ops.len(), 2);
    }

    #[test]
    fn configuration_wins_and_names_must_exist() {
        let mut tools = flat_plus_fields();
        tools.push(tool(
            "my_lead_maker",
            "makes things",
            obj(&[("fields", "object")], &["fields"]),
        ));
        tools.push(tool(
            "leads",
            "x",
            json!({"type": "object", "properties": {"op": {"type": "string"}, "lead_id": {"type": "string"}, "q": {"type": "string"}}}),
        ));
        let map = ToolMap::parse(
            r#"{"create_lead": "my_lead_maker", "get_lead": {"tool": "nope"},
                "update_lead": {"tool": "leads", "kind": "action", "set": {"op": "update"}},
                "list_leads": {"tool": "leads", "kind": "direct", "set": {"op": "list"}, "args": {"q": "filter"}}}"#,
        )
        .unwrap();
        let b = discover(&tools, Some(&map));
        assert_eq!(bound(&b, Operation::CreateLead), Some("my_lead_maker"));
        assert_eq!(
            b.get(Operation::CreateLead).unwrap().profile,
            Profile::Config
        );
        assert_eq!(
            bound(&b, Operation::GetLead),
            None,
            "a configured but absent tool is not replaced"
        );
        assert_eq!(
            args(
                &b,
                Operation::ListLeads,
                json!({"filter": {"ORIGIN_ID": "a"}})
            ),
            json!({"op": "list", "q": {"ORIGIN_ID": "a"}})
        );
        assert_eq!(
            bound(&b, Operation::UpdateLead),
            None,
            "update needs fields: leads has none"
        );
    }

    #[test]
    fn binding_round_trips_through_json_and_old_bindings_are_unreadable() {
        let mut b = discover(&flat_plus_fields(), None);
        b.caps.has_telegram_source = true;
        assert_eq!(Binding::from_value(&b.to_value()).unwrap(), b);
        let old = json!({"ops": {"get_lead": {"tool": "t", "profile": "lead_tools", "kind": "direct", "properties": ["id"], "required": ["id"]}}});
        assert_eq!(Binding::from_value(&old), None);
    }
}
