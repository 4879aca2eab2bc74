//! Tool binding: which of the MCP server's tools performs each CRM operation, and how its
//! arguments are shaped (design.md §5). Bitrix24 does not document its MCP tools (facts §1), so
//! tools are matched on names, input schemas and descriptions (English or Russian), by three
//! built-in profiles, and an explicit `MCP_TOOL_MAP` wins over discovery.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ops::Operation;
use crate::mcp::ToolInfo;

/// How a tool's arguments are built from a REST call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToolKind {
    /// One generic tool that runs any REST method: `{<method_arg>: "crm.lead.add", <params_arg>: {...}}`.
    Rest {
        method_arg: String,
        params_arg: String,
    },
    /// Entity-generic CRM tools: `crm_add {entity: "lead", fields}`; the entity argument may be a
    /// name (`"lead"`) or Bitrix24's numeric `entityTypeId` (1 for leads).
    Entity { entity_arg: String, numeric: bool },
    /// A tool for this one operation; arguments are matched to its schema's property names.
    Direct {
        properties: Vec<String>,
        required: Vec<String>,
    },
}

/// How a tool came to be bound, reported by connect/test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    LeadTools,
    CrmEntity,
    RestMethod,
    Config,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundTool {
    pub tool: String,
    pub profile: Profile,
    #[serde(flatten)]
    pub kind: ToolKind,
}

/// What the portal has, read once at connect through the bound operations (design.md §4.5).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortalCaps {
    pub has_telegram_source: bool,
    pub has_qualified_status: bool,
    /// `UF_CRM_TELEAGENT_SCORE` and `UF_CRM_TELEAGENT_HOTNESS` both exist.
    pub has_teleagent_user_fields: bool,
    /// False when the portal's statuses could not be read (no tool): defaults are assumed.
    pub read: bool,
}

/// The binding kept with the integration record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Binding {
    pub ops: BTreeMap<Operation, BoundTool>,
    #[serde(default)]
    pub caps: PortalCaps,
}

impl Binding {
    pub fn get(&self, op: Operation) -> Option<&BoundTool> {
        self.ops.get(&op)
    }

    /// Required operations nothing is bound to. `FindByPhone` is also satisfied by a lead list
    /// tool (a `PHONE` filter), which costs one call per search just the same.
    pub fn missing_required(&self) -> Vec<Operation> {
        Operation::REQUIRED
            .into_iter()
            .filter(|op| {
                let list_can_search =
                    *op == Operation::FindByPhone && self.ops.contains_key(&Operation::ListLeads);
                !self.ops.contains_key(op) && !list_can_search
            })
            .collect()
    }

    pub fn missing_optional(&self) -> Vec<Operation> {
        Operation::ALL
            .into_iter()
            .filter(|op| !Operation::REQUIRED.contains(op) && !self.ops.contains_key(op))
            .collect()
    }

    /// The report connect/test show: what is bound, by which profile, what is missing.
    pub fn report(&self) -> Value {
        let bound: Map<String, Value> = self
            .ops
            .iter()
            .map(|(op, t)| {
                (
                    op.key().to_owned(),
                    serde_json::json!({"tool": t.tool, "profile": t.profile}),
                )
            })
            .collect();
        let names = |ops: Vec<Operation>| -> Vec<&'static str> {
            ops.into_iter().map(Operation::key).collect()
        };
        serde_json::json!({
            "bound": bound,
            "missing_required": names(self.missing_required()),
            "missing_optional": names(self.missing_optional()),
        })
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    pub fn from_value(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

/// `MCP_TOOL_MAP`: operation key -> tool name, or -> `{"tool": name, "kind": "rest"|"entity"|"direct"}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolMap {
    entries: BTreeMap<Operation, (String, Option<String>)>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ToolMapError {
    #[error("MCP_TOOL_MAP is not a JSON object")]
    NotAnObject,
    #[error("MCP_TOOL_MAP names an unknown operation {0:?}")]
    UnknownOperation(String),
    #[error("MCP_TOOL_MAP entry for {0} must be a tool name or {{\"tool\": ..., \"kind\": ...}}")]
    BadEntry(String),
}

impl ToolMap {
    pub fn parse(raw: &str) -> Result<Self, ToolMapError> {
        let v: Value = serde_json::from_str(raw).map_err(|_| ToolMapError::NotAnObject)?;
        let obj = v.as_object().ok_or(ToolMapError::NotAnObject)?;
        let mut entries = BTreeMap::new();
        for (k, v) in obj {
            let op =
                Operation::from_key(k).ok_or_else(|| ToolMapError::UnknownOperation(k.clone()))?;
            let entry = match v {
                Value::String(tool) => (tool.clone(), None),
                Value::Object(o) => {
                    let tool = o
                        .get("tool")
                        .and_then(Value::as_str)
                        .ok_or_else(|| ToolMapError::BadEntry(k.clone()))?;
                    let kind = o.get("kind").and_then(Value::as_str).map(str::to_owned);
                    if let Some(kind) = &kind
                        && !matches!(kind.as_str(), "rest" | "entity" | "direct")
                    {
                        return Err(ToolMapError::BadEntry(k.clone()));
                    }
                    (tool.to_owned(), kind)
                }
                _ => return Err(ToolMapError::BadEntry(k.clone())),
            };
            entries.insert(op, entry);
        }
        Ok(Self { entries })
    }
}

/// Lower-case tokens of a tool name or description ("bitrix24_create_lead" -> [bitrix24, create, lead]).
fn tokens(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_alphanumeric() {
            // split camelCase too: createLead -> create, lead
            if c.is_uppercase() && prev_lower && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            prev_lower = c.is_lowercase();
            cur.extend(c.to_lowercase());
        } else {
            prev_lower = false;
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn has_any(tokens: &[String], stems: &[&str]) -> bool {
    tokens
        .iter()
        .any(|t| stems.iter().any(|s| t == s || t.starts_with(s)))
}

const LEAD: &[&str] = &["lead", "лид"];
const CREATE: &[&str] = &["create", "add", "new", "созда", "добав"];
const UPDATE: &[&str] = &["update", "edit", "modify", "change", "обнов", "измен"];
const GET: &[&str] = &["get", "read", "fetch", "show", "details", "получ"];
const LIST: &[&str] = &[
    "list",
    "search",
    "find",
    "query",
    "список",
    "поиск",
    "найти",
    "спис",
];
const COMMENT: &[&str] = &["comment", "timeline", "коммент"];
const DUPLICATE: &[&str] = &["duplicate", "findbycomm", "dupl", "дубл"];
const PHONE: &[&str] = &["phone", "телеф"];
const STATUS: &[&str] = &["status", "source", "stage", "статус"];
const FIELD: &[&str] = &["field", "fields", "поле", "поля"];
const USERFIELD: &[&str] = &["userfield", "userfields"];
const OTHER_ENTITIES: &[&str] = &[
    "deal",
    "contact",
    "company",
    "task",
    "invoice",
    "quote",
    "product",
    "user",
    "сделк",
    "контакт",
    "компан",
    "задач",
];

/// Normalises a property name for matching: lower case, no `_`/`-`.
pub(crate) fn norm(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn schema_props(schema: &Value) -> (Vec<String>, Vec<String>) {
    let props = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let required = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| {
            r.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    (props, required)
}

fn prop_type<'a>(schema: &'a Value, prop: &str) -> Option<&'a str> {
    schema
        .get("properties")?
        .get(prop)?
        .get("type")
        .and_then(Value::as_str)
}

fn find_prop(props: &[String], names: &[&str]) -> Option<String> {
    props
        .iter()
        .find(|p| names.iter().any(|n| norm(p) == *n))
        .cloned()
}

/// A generic "run a REST method" tool: a string `method` argument and an object of parameters.
fn as_rest(tool: &ToolInfo) -> Option<ToolKind> {
    let (props, _) = schema_props(&tool.input_schema);
    let method = find_prop(&props, &["method", "apimethod", "restmethod", "methodname"])?;
    let params = find_prop(
        &props,
        &[
            "params",
            "parameters",
            "args",
            "arguments",
            "data",
            "payload",
            "body",
        ],
    )?;
    if prop_type(&tool.input_schema, &params).is_some_and(|t| t != "object") {
        return None;
    }
    Some(ToolKind::Rest {
        method_arg: method,
        params_arg: params,
    })
}

/// An entity-generic CRM tool (`crm_add {entity, fields}`); returns the operation it performs.
fn as_entity(tool: &ToolInfo) -> Option<(Operation, ToolKind)> {
    let (props, _) = schema_props(&tool.input_schema);
    let entity = find_prop(
        &props,
        &["entity", "entitytype", "entitytypeid", "entityname"],
    )?;
    let numeric = matches!(
        prop_type(&tool.input_schema, &entity),
        Some("integer" | "number")
    ) || norm(&entity) == "entitytypeid";
    let name = tokens(&tool.name);
    if has_any(&name, LEAD) || has_any(&name, COMMENT) || has_any(&name, STATUS) {
        return None; // a lead tool or a helper, not entity-generic
    }
    let op = if has_any(&name, DUPLICATE) {
        return None;
    } else if has_any(&name, CREATE) {
        Operation::CreateLead
    } else if has_any(&name, UPDATE) {
        Operation::UpdateLead
    } else if has_any(&name, &["list", "search", "find", "query"]) {
        Operation::ListLeads
    } else if has_any(&name, GET) {
        Operation::GetLead
    } else {
        return None;
    };
    Some((
        op,
        ToolKind::Entity {
            entity_arg: entity,
            numeric,
        },
    ))
}

/// A per-operation tool: which operation its name (else its description) says it performs.
fn direct_op(tool: &ToolInfo) -> Option<Operation> {
    let by_name = classify_words(&tokens(&tool.name));
    if by_name.is_some() {
        return by_name;
    }
    tool.description
        .as_deref()
        .and_then(|d| classify_words(&tokens(d)))
}

fn classify_words(t: &[String]) -> Option<Operation> {
    if has_any(t, DUPLICATE) {
        return Some(Operation::FindByPhone);
    }
    if has_any(t, OTHER_ENTITIES) && !has_any(t, LEAD) {
        return None;
    }
    if has_any(t, COMMENT) {
        return Some(Operation::AddComment);
    }
    if has_any(t, USERFIELD) || (has_any(t, &["user"]) && has_any(t, FIELD)) {
        return has_any(t, CREATE).then_some(Operation::AddUserField);
    }
    if has_any(t, STATUS) && !has_any(t, LEAD) {
        if has_any(t, CREATE) {
            return Some(Operation::AddStatus);
        }
        if has_any(t, LIST) || has_any(t, GET) {
            return Some(Operation::ListStatuses);
        }
        return None;
    }
    if !has_any(t, LEAD) {
        return None;
    }
    if has_any(t, FIELD) {
        return (!has_any(t, CREATE) && !has_any(t, UPDATE)).then_some(Operation::LeadFields);
    }
    if has_any(t, PHONE) && has_any(t, LIST) {
        return Some(Operation::FindByPhone);
    }
    if has_any(t, CREATE) {
        Some(Operation::CreateLead)
    } else if has_any(t, UPDATE) {
        Some(Operation::UpdateLead)
    } else if has_any(t, LIST) || t.iter().any(|w| w == "leads") {
        Some(Operation::ListLeads)
    } else if has_any(t, GET) {
        Some(Operation::GetLead)
    } else {
        None
    }
}

fn direct_kind(tool: &ToolInfo) -> ToolKind {
    let (properties, required) = schema_props(&tool.input_schema);
    ToolKind::Direct {
        properties,
        required,
    }
}

fn profile_rank(p: Profile) -> u8 {
    match p {
        Profile::Config => 0,
        Profile::LeadTools => 1,
        Profile::CrmEntity => 2,
        Profile::RestMethod => 3,
    }
}

/// Binds every operation it can. Explicit `map` entries win; among discovered tools a
/// per-operation tool beats an entity-generic one, which beats the generic REST tool.
/// A direct tool is only bound when its required arguments can all be filled for its operation.
pub fn discover(tools: &[ToolInfo], map: Option<&ToolMap>) -> Binding {
    let mut ops: BTreeMap<Operation, BoundTool> = BTreeMap::new();
    let mut offer = |op: Operation, bound: BoundTool| match ops.get(&op) {
        Some(existing) if profile_rank(existing.profile) <= profile_rank(bound.profile) => {}
        _ => {
            ops.insert(op, bound);
        }
    };
    for tool in tools {
        if let Some(kind) = as_rest(tool) {
            for op in Operation::ALL {
                offer(
                    op,
                    BoundTool {
                        tool: tool.name.clone(),
                        profile: Profile::RestMethod,
                        kind: kind.clone(),
                    },
                );
            }
            continue;
        }
        if let Some((op, kind)) = as_entity(tool) {
            offer(
                op,
                BoundTool {
                    tool: tool.name.clone(),
                    profile: Profile::CrmEntity,
                    kind,
                },
            );
            continue;
        }
        if let Some(op) = direct_op(tool) {
            let kind = direct_kind(tool);
            if super::args::direct_fits(op, &kind) {
                offer(
                    op,
                    BoundTool {
                        tool: tool.name.clone(),
                        profile: Profile::LeadTools,
                        kind,
                    },
                );
            }
        }
    }
    if let Some(map) = map {
        for (op, (name, kind)) in &map.entries {
            let Some(tool) = tools.iter().find(|t| &t.name == name) else {
                // A configured tool the server does not offer: the operation stays unbound, so
                // connect reports it missing instead of silently using another tool.
                ops.remove(op);
                continue;
            };
            let kind = match kind.as_deref() {
                Some("rest") => as_rest(tool),
                Some("entity") => as_entity(tool).map(|(_, k)| k),
                Some("direct") => Some(direct_kind(tool)),
                _ => as_rest(tool)
                    .or_else(|| as_entity(tool).map(|(_, k)| k))
                    .or_else(|| Some(direct_kind(tool))),
            };
            match kind {
                Some(kind) => {
                    ops.insert(
                        *op,
                        BoundTool {
                            tool: name.clone(),
                            profile: Profile::Config,
                            kind,
                        },
                    );
                }
                None => {
                    ops.remove(op);
                }
            }
        }
    }
    Binding {
        ops,
        caps: PortalCaps::default(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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

    fn lead_tools() -> Vec<ToolInfo> {
        vec![
            tool(
                "bitrix24_create_lead",
                "Create a lead (crm.lead.add)",
                obj(&[("fields", "object")], &["fields"]),
            ),
            tool(
                "bitrix24_update_lead",
                "Update a lead",
                obj(
                    &[("id", "integer"), ("fields", "object")],
                    &["id", "fields"],
                ),
            ),
            tool(
                "bitrix24_get_lead",
                "Get a lead by id",
                obj(&[("id", "integer")], &["id"]),
            ),
            tool(
                "bitrix24_list_leads",
                "List leads",
                obj(&[("filter", "object"), ("select", "array")], &[]),
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
                    &["type", "values"],
                ),
            ),
            tool(
                "bitrix24_add_lead_comment",
                "Add a timeline comment to a lead",
                obj(
                    &[("lead_id", "integer"), ("comment", "string")],
                    &["lead_id", "comment"],
                ),
            ),
            tool(
                "bitrix24_list_statuses",
                "List statuses",
                obj(&[("entity_id", "string")], &["entity_id"]),
            ),
            tool(
                "bitrix24_list_lead_fields",
                "Describe lead fields",
                obj(&[], &[]),
            ),
            tool(
                "bitrix24_list_deals",
                "List deals",
                obj(&[("filter", "object")], &[]),
            ),
            tool(
                "search_tasks",
                "Search tasks",
                obj(&[("query", "string")], &[]),
            ),
        ]
    }

    #[test]
    fn per_operation_lead_tools_bind_every_operation_they_offer() {
        let b = discover(&lead_tools(), None);
        let expect = [
            (Operation::CreateLead, "bitrix24_create_lead"),
            (Operation::UpdateLead, "bitrix24_update_lead"),
            (Operation::GetLead, "bitrix24_get_lead"),
            (Operation::ListLeads, "bitrix24_list_leads"),
            (Operation::FindByPhone, "bitrix24_find_duplicates"),
            (Operation::AddComment, "bitrix24_add_lead_comment"),
            (Operation::ListStatuses, "bitrix24_list_statuses"),
            (Operation::LeadFields, "bitrix24_list_lead_fields"),
        ];
        for (op, name) in expect {
            assert_eq!(b.get(op).map(|t| t.tool.as_str()), Some(name), "{op:?}");
            assert_eq!(b.get(op).unwrap().profile, Profile::LeadTools);
        }
        assert!(b.missing_required().is_empty());
        assert_eq!(
            b.missing_optional(),
            vec![Operation::AddStatus, Operation::AddUserField]
        );
    }

    #[test]
    fn one_generic_rest_tool_binds_everything() {
        let tools = vec![
            tool(
                "bitrix24_call_method",
                "Call any Bitrix24 REST API method",
                obj(&[("method", "string"), ("params", "object")], &["method"]),
            ),
            tool("deal_category_list", "List deal categories", obj(&[], &[])),
        ];
        let b = discover(&tools, None);
        for op in Operation::ALL {
            let t = b.get(op).unwrap_or_else(|| panic!("{op:?} unbound"));
            assert_eq!(t.tool, "bitrix24_call_method");
            assert_eq!(
                t.kind,
                ToolKind::Rest {
                    method_arg: "method".into(),
                    params_arg: "params".into()
                }
            );
        }
    }

    #[test]
    fn entity_generic_tools_bind_lead_crud() {
        let tools = vec![
            tool(
                "crm_get",
                "Get a CRM item",
                obj(
                    &[("entity", "string"), ("id", "integer")],
                    &["entity", "id"],
                ),
            ),
            tool(
                "crm_list",
                "List CRM items",
                obj(
                    &[
                        ("entity", "string"),
                        ("filter", "object"),
                        ("select", "array"),
                    ],
                    &["entity"],
                ),
            ),
            tool(
                "crm_add",
                "Add a CRM item",
                obj(
                    &[("entity", "string"), ("fields", "object")],
                    &["entity", "fields"],
                ),
            ),
            tool(
                "crm_update",
                "Update a CRM item",
                obj(
                    &[
                        ("entity", "string"),
                        ("id", "integer"),
                        ("fields", "object"),
                    ],
                    &["entity", "id", "fields"],
                ),
            ),
        ];
        let b = discover(&tools, None);
        assert_eq!(b.get(Operation::CreateLead).unwrap().tool, "crm_add");
        assert_eq!(b.get(Operation::UpdateLead).unwrap().tool, "crm_update");
        assert_eq!(b.get(Operation::GetLead).unwrap().tool, "crm_get");
        assert_eq!(b.get(Operation::ListLeads).unwrap().tool, "crm_list");
        // no duplicate tool, but the list tool can search by PHONE
        assert!(
            b.missing_required().is_empty(),
            "{:?}",
            b.missing_required()
        );
    }

    #[test]
    fn russian_descriptions_and_camel_case_names_are_read() {
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
            tool("getLead", "", obj(&[("id", "integer")], &["id"])),
        ];
        let b = discover(&tools, None);
        assert_eq!(b.get(Operation::CreateLead).unwrap().tool, "b24Tool1");
        assert_eq!(b.get(Operation::UpdateLead).unwrap().tool, "b24Tool2");
        assert_eq!(b.get(Operation::GetLead).unwrap().tool, "getLead");
        assert_eq!(b.missing_required(), vec![Operation::FindByPhone]);
    }

    #[test]
    fn read_only_servers_report_what_is_missing() {
        let tools = vec![
            tool("deal_category_list", "List deal categories", obj(&[], &[])),
            tool(
                "get_task_by_id",
                "Get a task",
                obj(&[("id", "integer")], &["id"]),
            ),
            tool(
                "bitrix24_get_lead",
                "Get a lead",
                obj(&[("id", "integer")], &["id"]),
            ),
        ];
        let b = discover(&tools, None);
        assert_eq!(
            b.missing_required(),
            vec![
                Operation::FindByPhone,
                Operation::CreateLead,
                Operation::UpdateLead
            ]
        );
        let report = b.report();
        assert_eq!(
            report["missing_required"],
            json!(["find_by_phone", "create_lead", "update_lead"])
        );
        assert_eq!(report["bound"]["get_lead"]["tool"], "bitrix24_get_lead");
    }

    #[test]
    fn configuration_wins_and_names_must_exist() {
        let mut tools = lead_tools();
        tools.push(tool(
            "my_lead_maker",
            "makes things",
            obj(&[("fields", "object")], &["fields"]),
        ));
        let map = ToolMap::parse(
            r#"{"create_lead": "my_lead_maker", "get_lead": {"tool": "nope", "kind": "direct"}}"#,
        )
        .unwrap();
        let b = discover(&tools, Some(&map));
        assert_eq!(b.get(Operation::CreateLead).unwrap().tool, "my_lead_maker");
        assert_eq!(
            b.get(Operation::CreateLead).unwrap().profile,
            Profile::Config
        );
        assert!(
            b.get(Operation::GetLead).is_none(),
            "a configured but absent tool is not replaced"
        );
        for (raw, why) in [
            ("[]", "not an object"),
            (r#"{"make_coffee": "x"}"#, "unknown operation"),
            (r#"{"create_lead": 3}"#, "bad entry"),
            (
                r#"{"create_lead": {"tool": "x", "kind": "magic"}}"#,
                "bad kind",
            ),
        ] {
            assert!(ToolMap::parse(raw).is_err(), "{why}");
        }
    }

    #[test]
    fn binding_round_trips_through_json() {
        let mut b = discover(&lead_tools(), None);
        b.caps.has_telegram_source = true;
        let back = Binding::from_value(&b.to_value()).unwrap();
        assert_eq!(back, b);
    }
}
