//! The tool catalogues of the three shapes public Bitrix24 MCP servers use, and how
//! each tool call maps to a REST method. The per-operation profile's create/update tools take
//! the shape reported from the field: flat properties (`title`, `name`, `phone`, `comments`,
//! `sourceId`, `statusId`) plus an optional raw `fields` object for everything else (ORIGIN_ID,
//! UF_CRM_*), merged with the flat ones winning; `title` is required in the schema only (a
//! `fields.TITLE` alone, as older callers send, is accepted). Real servers' catalogues are
//! served by `corpus.rs`. Descriptions are written like real servers' so that
//! binding by description and schema is exercised; the entity-generic shape describes its tools
//! in Russian because real descriptions may not be in English. Unrelated tools sit between the
//! lead tools and the catalogue spans several `tools/list` pages.

use serde_json::{Value, json};

use super::ToolShape;
use super::portal::RestError;

/// One REST call a tool call turns into.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RestCall {
    pub method: String,
    pub params: Value,
}

fn tool(name: &str, description: &str, properties: Value, required: &[&str]) -> Value {
    json!({
        "name": name,
        "description": description,
        "inputSchema": {"type": "object", "properties": properties, "required": required},
    })
}

fn filter_schema() -> Value {
    json!({"type": "object", "description": "Filter in Bitrix24 notation, e.g. {\"ORIGIN_ID\": \"abc\", \"PHONE\": \"+15551234567\"}; an array value means any of"})
}

/// The flat lead properties of the per-operation profile (as reported from the field), plus an
/// optional `fields` object for every other raw Bitrix24 field; `extra` comes first (`id`).
fn lead_properties(extra: Value) -> Value {
    let mut props = extra.as_object().cloned().unwrap_or_default();
    let flat = json!({
        "title": {"type": "string", "description": "Lead title (TITLE)"},
        "name": {"type": "string", "description": "Contact first name (NAME)"},
        "phone": {"type": "string", "description": "Phone number; stored as a WORK phone (PHONE)"},
        "comments": {"type": "string", "description": "Comment (COMMENTS)"},
        "sourceId": {"type": "string", "description": "Lead source ID, e.g. CALL, WEB, OTHER (SOURCE_ID)"},
        "statusId": {"type": "string", "description": "Lead stage ID, e.g. NEW, IN_PROCESS (STATUS_ID)"},
        "fields": {"type": "object", "description": "Any other raw Bitrix24 lead fields, e.g. {\"ORIGIN_ID\": \"x\", \"UF_CRM_SCORE\": 5}"},
    });
    if let Value::Object(flat) = flat {
        props.extend(flat);
    }
    Value::Object(props)
}

/// The flat properties and the REST field each one sets.
const FLAT_LEAD_FIELDS: &[(&str, &str)] = &[
    ("title", "TITLE"),
    ("name", "NAME"),
    ("comments", "COMMENTS"),
    ("sourceId", "SOURCE_ID"),
    ("statusId", "STATUS_ID"),
];

/// `fields` merged with the flat properties (the flat ones win); a `phone` becomes one new
/// WORK item, so on update it is appended, as Bitrix24 does for a PHONE item without ID.
fn lead_fields(args: &Value) -> Result<Value, RestError> {
    let mut fields = match args.get("fields") {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(o)) => o.clone(),
        Some(_) => {
            return Err(RestError::new(
                "INVALID_ARG_VALUE",
                "Argument 'fields' must be an object",
            ));
        }
    };
    for (flat, field) in FLAT_LEAD_FIELDS {
        if let Some(v) = args.get(*flat).filter(|v| !v.is_null()) {
            fields.insert((*field).to_owned(), v.clone());
        }
    }
    if let Some(phone) = args.get("phone").filter(|v| !v.is_null()) {
        fields.insert(
            "PHONE".to_owned(),
            json!([{"VALUE": phone, "VALUE_TYPE": "WORK"}]),
        );
    }
    Ok(Value::Object(fields))
}

/// The tools `tools/list` shows for a shape, in page order.
pub(crate) fn catalogue(shape: ToolShape) -> Vec<Value> {
    match shape {
        ToolShape::LeadTools => vec![
            tool(
                "search_tasks",
                "Search tasks by title text (tasks.task.list).",
                json!({"query": {"type": "string", "description": "Text to find in task titles"}}),
                &["query"],
            ),
            tool(
                "bitrix24_list_deals",
                "List deals in Bitrix24 CRM with an optional filter (crm.deal.list).",
                json!({"filter": filter_schema(), "select": {"type": "array", "items": {"type": "string"}},
                       "start": {"type": "integer", "minimum": 0}}),
                &[],
            ),
            tool(
                "bitrix24_get_lead",
                "Get one lead from Bitrix24 CRM by its ID with all fields, phones included (crm.lead.get).",
                json!({"id": {"type": "integer", "description": "Lead ID"}}),
                &["id"],
            ),
            tool(
                "bitrix24_list_statuses",
                "List reference values of the CRM: lead stages (entity_id STATUS) or lead sources (entity_id SOURCE) (crm.status.list).",
                json!({"entity_id": {"type": "string", "description": "STATUS for lead stages, SOURCE for sources"}}),
                &["entity_id"],
            ),
            tool(
                "bitrix24_list_leads",
                "List leads with a filter (crm.lead.list). Returns pages of 50; pass start to get the next page. Multifields such as PHONE are returned only when named in select.",
                json!({"filter": filter_schema(),
                       "select": {"type": "array", "items": {"type": "string"}, "description": "Fields to return, e.g. [\"ID\", \"TITLE\", \"PHONE\"]"},
                       "order": {"type": "object", "description": "e.g. {\"ID\": \"DESC\"}"},
                       "start": {"type": "integer", "minimum": 0, "description": "Offset of the page"}}),
                &[],
            ),
            tool(
                "bitrix24_find_duplicates",
                "Find CRM leads, contacts or companies that have the given phone numbers or e-mails (crm.duplicate.findbycomm). At most 20 values.",
                json!({"type": {"type": "string", "enum": ["PHONE", "EMAIL"]},
                       "values": {"type": "array", "items": {"type": "string"}, "maxItems": 20},
                       "entity_type": {"type": "string", "enum": ["LEAD", "CONTACT", "COMPANY"]}}),
                &["type", "values"],
            ),
            tool(
                "bitrix24_add_lead_comment",
                "Add a comment to a lead's timeline (crm.timeline.comment.add).",
                json!({"lead_id": {"type": "integer"}, "comment": {"type": "string"}}),
                &["lead_id", "comment"],
            ),
            tool(
                "bitrix24_list_lead_fields",
                "Describe lead fields: standard fields and custom UF_CRM_* user fields with their types (crm.lead.fields).",
                json!({}),
                &[],
            ),
            tool(
                "bitrix24_create_lead",
                "Create a new lead in Bitrix24 CRM (crm.lead.add). Returns the new lead ID. Pass any other Bitrix24 field (ORIGIN_ID, ORIGINATOR_ID, ASSIGNED_BY_ID, UF_CRM_*) in fields; the named properties win over the same field in fields.",
                lead_properties(json!({})),
                &["title"],
            ),
            tool(
                "bitrix24_update_lead",
                "Update an existing lead (crm.lead.update). Send only what changes. A phone given here is ADDED to the lead's phones. In fields, PHONE items without ID are added; {ID, VALUE} replaces an item; {ID, DELETE: \"Y\"} removes it.",
                lead_properties(json!({"id": {"type": "integer", "description": "Lead ID"}})),
                &["id"],
            ),
        ],
        ToolShape::RestMethod => vec![
            tool(
                "deal_category_list",
                "List deal pipelines (categories).",
                json!({}),
                &[],
            ),
            tool(
                "get_task_by_id",
                "Get a task by its ID.",
                json!({"taskId": {"type": "integer"}}),
                &["taskId"],
            ),
            tool(
                "bitrix24_call_method",
                "Call any Bitrix24 REST API method (for example crm.lead.add, crm.lead.list, crm.duplicate.findbycomm) with its parameters, and return the method's result.",
                json!({"method": {"type": "string", "description": "REST method name, e.g. crm.lead.get"},
                       "params": {"type": "object", "description": "Method parameters as in the REST API"}}),
                &["method"],
            ),
        ],
        ToolShape::CrmEntity => vec![
            tool(
                "crm_list",
                "Список элементов CRM (лиды, сделки, контакты) с фильтром. Страницы по 50, start — смещение.",
                json!({"entity": {"type": "string", "enum": ["lead", "deal", "contact", "company"]},
                       "filter": filter_schema(), "select": {"type": "array", "items": {"type": "string"}},
                       "order": {"type": "object"}, "start": {"type": "integer"}}),
                &["entity"],
            ),
            tool(
                "crm_get",
                "Получить элемент CRM по ID.",
                json!({"entity": {"type": "string", "enum": ["lead", "deal", "contact", "company"]},
                       "id": {"type": "integer"}}),
                &["entity", "id"],
            ),
            tool(
                "crm_status_list",
                "Справочники CRM: стадии лидов (STATUS) и источники (SOURCE).",
                json!({"entity_id": {"type": "string"}}),
                &["entity_id"],
            ),
            tool(
                "crm_duplicate_find",
                "Поиск дубликатов по телефону или e-mail (не более 20 значений).",
                json!({"type": {"type": "string", "enum": ["PHONE", "EMAIL"]},
                       "values": {"type": "array", "items": {"type": "string"}},
                       "entity_type": {"type": "string", "enum": ["LEAD", "CONTACT", "COMPANY"]}}),
                &["type", "values"],
            ),
            tool(
                "crm_add",
                "Создать элемент CRM (лид, сделку, контакт). Возвращает ID.",
                json!({"entity": {"type": "string", "enum": ["lead", "deal", "contact", "company"]},
                       "fields": {"type": "object"}}),
                &["entity", "fields"],
            ),
            tool(
                "crm_update",
                "Изменить элемент CRM по ID. Передавайте только изменяемые поля.",
                json!({"entity": {"type": "string", "enum": ["lead", "deal", "contact", "company"]},
                       "id": {"type": "integer"}, "fields": {"type": "object"}}),
                &["entity", "id", "fields"],
            ),
        ],
    }
}

/// Copies the listed keys of `args` that are present into a new object.
fn pick(args: &Value, keys: &[&str]) -> Value {
    let mut out = serde_json::Map::new();
    for k in keys {
        if let Some(v) = args.get(*k).filter(|v| !v.is_null()) {
            out.insert((*k).to_owned(), v.clone());
        }
    }
    Value::Object(out)
}

fn call(method: &str, params: Value) -> Result<RestCall, RestError> {
    Ok(RestCall {
        method: method.to_owned(),
        params,
    })
}

/// The REST call behind a tool call; `None` when the shape has no such tool (a JSON-RPC
/// -32602), `Some(Err)` for a tool error raised before any REST method runs.
pub(crate) fn resolve(
    shape: ToolShape,
    name: &str,
    args: &Value,
) -> Option<Result<RestCall, RestError>> {
    if !catalogue(shape).iter().any(|t| t["name"] == name) {
        return None;
    }
    let r = match name {
        "search_tasks" => call(
            "tasks.task.list",
            json!({"filter": {"%TITLE": args.get("query").cloned().unwrap_or(Value::Null)}}),
        ),
        "bitrix24_list_deals" => call("crm.deal.list", pick(args, &["filter", "select", "start"])),
        "bitrix24_get_lead" => call("crm.lead.get", pick(args, &["id"])),
        "bitrix24_list_statuses" => call(
            "crm.status.list",
            json!({"filter": {"ENTITY_ID": args.get("entity_id").cloned().unwrap_or(Value::Null)}}),
        ),
        "bitrix24_list_leads" => call(
            "crm.lead.list",
            pick(args, &["filter", "select", "order", "start"]),
        ),
        "bitrix24_find_duplicates" | "crm_duplicate_find" => call(
            "crm.duplicate.findbycomm",
            pick(args, &["type", "values", "entity_type"]),
        ),
        "bitrix24_add_lead_comment" => call(
            "crm.timeline.comment.add",
            json!({"fields": {"ENTITY_ID": args.get("lead_id").cloned().unwrap_or(Value::Null),
                              "ENTITY_TYPE": "lead",
                              "COMMENT": args.get("comment").cloned().unwrap_or(Value::Null)}}),
        ),
        "bitrix24_list_lead_fields" => call("crm.lead.fields", json!({})),
        "bitrix24_create_lead" => {
            lead_fields(args).and_then(|fields| call("crm.lead.add", json!({"fields": fields})))
        }
        "bitrix24_update_lead" => lead_fields(args).and_then(|fields| {
            let id = args.get("id").cloned().unwrap_or(Value::Null);
            call("crm.lead.update", json!({"id": id, "fields": fields}))
        }),
        "deal_category_list" => call("crm.dealcategory.list", json!({})),
        "get_task_by_id" => call(
            "tasks.task.get",
            json!({"taskId": args.get("taskId").cloned().unwrap_or(Value::Null)}),
        ),
        "bitrix24_call_method" => match args.get("method").and_then(Value::as_str) {
            Some(m) if !m.trim().is_empty() => {
                let params = args.get("params").cloned().unwrap_or_else(|| json!({}));
                call(m.trim(), params)
            }
            _ => Err(RestError::new(
                "INVALID_ARG_VALUE",
                "Argument 'method' must name a REST method",
            )),
        },
        "crm_status_list" => call(
            "crm.status.list",
            json!({"filter": {"ENTITY_ID": args.get("entity_id").cloned().unwrap_or(Value::Null)}}),
        ),
        "crm_get" | "crm_list" | "crm_add" | "crm_update" => {
            let entity = args.get("entity").and_then(Value::as_str).unwrap_or("");
            if !entity.eq_ignore_ascii_case("lead") {
                Err(RestError::new(
                    "ENTITY_NOT_SUPPORTED",
                    format!("Entity '{entity}' is not supported"),
                ))
            } else {
                match name {
                    "crm_get" => call("crm.lead.get", pick(args, &["id"])),
                    "crm_list" => call(
                        "crm.lead.list",
                        pick(args, &["filter", "select", "order", "start"]),
                    ),
                    "crm_add" => call("crm.lead.add", pick(args, &["fields"])),
                    _ => call("crm.lead.update", pick(args, &["id", "fields"])),
                }
            }
        }
        _ => return None,
    };
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogued_tool_resolves_and_schemas_are_objects() {
        for shape in [
            ToolShape::LeadTools,
            ToolShape::RestMethod,
            ToolShape::CrmEntity,
        ] {
            for t in catalogue(shape) {
                let name = t["name"].as_str().unwrap();
                assert_eq!(t["inputSchema"]["type"], "object", "{name}");
                assert!(
                    resolve(shape, name, &json!({"entity": "lead", "method": "x"})).is_some(),
                    "{name} in {shape:?}"
                );
            }
        }
    }

    #[test]
    fn tools_of_another_shape_are_unknown() {
        assert!(resolve(ToolShape::RestMethod, "bitrix24_create_lead", &json!({})).is_none());
        assert!(resolve(ToolShape::LeadTools, "crm_add", &json!({})).is_none());
    }

    #[test]
    fn lead_tools_merge_flat_properties_over_fields() {
        let r = resolve(
            ToolShape::LeadTools,
            "bitrix24_create_lead",
            &json!({"title": "Telegram: Ann", "name": "Ann", "phone": "+998901234567",
                    "comments": "c", "sourceId": "OTHER", "statusId": "NEW",
                    "fields": {"TITLE": "loses", "ORIGIN_ID": "t1:tg:1", "ORIGINATOR_ID": "teleagent",
                               "UF_CRM_TELEAGENT_SCORE": 82}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(r.method, "crm.lead.add");
        assert_eq!(
            r.params,
            json!({"fields": {"TITLE": "Telegram: Ann", "NAME": "Ann", "COMMENTS": "c",
                "SOURCE_ID": "OTHER", "STATUS_ID": "NEW", "ORIGIN_ID": "t1:tg:1",
                "ORIGINATOR_ID": "teleagent", "UF_CRM_TELEAGENT_SCORE": 82,
                "PHONE": [{"VALUE": "+998901234567", "VALUE_TYPE": "WORK"}]}})
        );
        // Update: only what is given; the old `{fields}`-only call still works.
        let u = resolve(
            ToolShape::LeadTools,
            "bitrix24_update_lead",
            &json!({"id": 7, "statusId": "IN_PROCESS", "fields": {"UF_CRM_TELEAGENT_SCORE": 90}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            u.params,
            json!({"id": 7, "fields": {"STATUS_ID": "IN_PROCESS", "UF_CRM_TELEAGENT_SCORE": 90}})
        );
        let old = resolve(
            ToolShape::LeadTools,
            "bitrix24_create_lead",
            &json!({"fields": {"TITLE": "x"}}),
        )
        .unwrap()
        .unwrap();
        assert_eq!(old.params, json!({"fields": {"TITLE": "x"}}));
        let bad = resolve(
            ToolShape::LeadTools,
            "bitrix24_update_lead",
            &json!({"id": 7, "fields": "NAME=x"}),
        )
        .unwrap();
        assert_eq!(bad.unwrap_err().code, "INVALID_ARG_VALUE");
        let schema = &catalogue(ToolShape::LeadTools)
            .into_iter()
            .find(|t| t["name"] == "bitrix24_update_lead")
            .unwrap()["inputSchema"];
        assert_eq!(schema["required"], json!(["id"]));
        assert_eq!(schema["properties"]["fields"]["type"], "object");
        assert_eq!(schema["properties"]["phone"]["type"], "string");
    }

    #[test]
    fn lead_tools_phone_on_update_is_appended_by_the_portal() {
        let mut portal = super::super::portal::Portal::new(&super::super::SandboxConfig::default());
        let mut run = |name: &str, args: Value| {
            let c = resolve(ToolShape::LeadTools, name, &args).unwrap().unwrap();
            portal.execute(&c.method, &c.params, true).unwrap().result
        };
        let id = run(
            "bitrix24_create_lead",
            json!({"title": "t", "phone": "+998901234567", "fields": {"ORIGIN_ID": "o"}}),
        );
        run(
            "bitrix24_update_lead",
            json!({"id": id, "phone": "+998907654321", "name": "Ann"}),
        );
        let lead = run("bitrix24_get_lead", json!({"id": id}));
        assert_eq!(lead["ORIGIN_ID"], "o");
        assert_eq!(lead["NAME"], "Ann");
        assert_eq!(lead["TITLE"], "t", "not sent on update, kept");
        let phones: Vec<&str> = lead["PHONE"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["VALUE"].as_str().unwrap())
            .collect();
        assert_eq!(phones, ["+998901234567", "+998907654321"]);
    }

    #[test]
    fn crm_entity_rejects_other_entities() {
        let r = resolve(
            ToolShape::CrmEntity,
            "crm_get",
            &json!({"entity": "deal", "id": 1}),
        );
        assert_eq!(r.unwrap().unwrap_err().code, "ENTITY_NOT_SUPPORTED");
    }
}
