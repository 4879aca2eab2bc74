//! How a bound tool's arguments are built. Every operation is first written as the parameters of
//! the Bitrix24 REST method it stands for (`crm.lead.add {fields}`, `crm.lead.update {id,
//! fields}`, ...). A generic REST tool takes those as they are; every other tool gets an
//! [`ArgPlan`]: one [`Source`] per property of its input schema, worked out once at binding
//! time from the schema as a whole. That is how one tool can mix flat properties (`title`,
//! `phone`, `sourceId`) with a `fields` object for everything else (`ORIGIN_ID`, `UF_CRM_*`):
//! the flat ones take their REST field, the object takes the rest.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::ops::Operation;
use super::schema::{Prop, norm};

/// Where one argument's value comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "from", rename_all = "snake_case")]
pub enum Source {
    /// A fixed value: the entity (`"lead"`, `1`) or the action (`"add"`) of a shared tool.
    Const { value: Value },
    /// A REST parameter as it is (`id`, `filter`, `select`, `order`, `values`, `type`, `params`).
    Param { name: String },
    /// The first element of an array parameter (one `phone` where the method takes `values`).
    First { name: String },
    /// One REST field of `fields` (a flat `title` takes `TITLE`).
    Field { name: String },
    /// One key of the `filter` parameter (a status list tool's `entity_id`).
    Filter { name: String },
    /// `fields` without the ones flat properties took.
    OtherFields,
}

/// One argument of a tool call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arg {
    pub prop: String,
    #[serde(flatten)]
    pub source: Source,
    /// The schema wants a string here: a multifield gives its first `VALUE`, an object is sent
    /// as JSON text.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub text: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub required: bool,
}

/// The arguments of one tool for one operation.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArgPlan {
    pub args: Vec<Arg>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the tool {tool} needs an argument {argument} that the {op} operation cannot fill")]
pub struct ArgsError {
    pub tool: String,
    pub op: &'static str,
    pub argument: String,
}

/// REST fields a lead create or update may send, by normalised name, plus the spellings flat
/// properties use for them.
const LEAD_FIELDS: &[(&str, &[&str])] = &[
    ("TITLE", &["title", "leadtitle", "leadname"]),
    ("NAME", &["name", "firstname"]),
    ("LAST_NAME", &["lastname", "surname"]),
    ("SECOND_NAME", &["secondname", "middlename"]),
    ("PHONE", &["phone", "phonenumber", "phones"]),
    ("EMAIL", &["email", "emails"]),
    ("COMMENTS", &["comments", "comment"]),
    ("SOURCE_ID", &["sourceid", "source"]),
    ("SOURCE_DESCRIPTION", &["sourcedescription"]),
    ("STATUS_ID", &["statusid", "status", "stageid"]),
    ("ORIGINATOR_ID", &["originatorid"]),
    ("ORIGIN_ID", &["originid"]),
    ("ASSIGNED_BY_ID", &["assignedbyid", "responsibleid"]),
    ("OPPORTUNITY", &["opportunity", "amount"]),
    ("UF_CRM_TELEAGENT_SCORE", &["ufcrmteleagentscore"]),
    ("UF_CRM_TELEAGENT_HOTNESS", &["ufcrmteleagenthotness"]),
];

const STATUS_FIELDS: &[(&str, &[&str])] = &[
    ("ENTITY_ID", &["entityid"]),
    ("STATUS_ID", &["statusid"]),
    ("NAME", &["name"]),
];

const USER_FIELD_FIELDS: &[(&str, &[&str])] = &[
    ("USER_TYPE_ID", &["usertypeid", "type"]),
    ("FIELD_NAME", &["fieldname", "name"]),
    ("LABEL", &["label", "editformlabel"]),
];

/// Property names of an object that carries a record's fields.
const FIELDS_OBJECT: &[&str] = &["fields", "data", "lead", "item", "leaddata"];
const ID: &[&str] = &["id", "leadid", "entityid", "itemid", "recordid"];

fn flat_field(op: Operation, key: &str) -> Option<&'static str> {
    let table = match op {
        Operation::CreateLead | Operation::UpdateLead => LEAD_FIELDS,
        Operation::AddStatus => STATUS_FIELDS,
        Operation::AddUserField => USER_FIELD_FIELDS,
        _ => return None,
    };
    table
        .iter()
        .find(|(field, names)| names.contains(&key) || norm(field) == key)
        .map(|(field, _)| *field)
}

/// The source of one property for `op`, or `None` when the operation has nothing for it.
fn source_for(op: Operation, p: &Prop) -> Option<(Source, bool)> {
    let key = p.key();
    let k = key.as_str();
    let param = |name: &str| Source::Param { name: name.into() };
    let wants_text = |p: &Prop| p.accepts("string") && !p.is_object() && !p.accepts("array");
    let s = match op {
        Operation::CreateLead
        | Operation::UpdateLead
        | Operation::AddStatus
        | Operation::AddUserField => {
            if op == Operation::UpdateLead && ID.contains(&k) && k != "entityid" {
                param("id")
            } else if FIELDS_OBJECT.contains(&k) && (p.is_object() || p.accepts("string")) {
                return Some((Source::OtherFields, !p.is_object()));
            } else if let Some(field) = flat_field(op, k) {
                return Some((Source::Field { name: field.into() }, wants_text(p)));
            } else if k == "params" && p.is_object() && op == Operation::CreateLead {
                param("params")
            } else {
                return None;
            }
        }
        Operation::GetLead if ID.contains(&k) && k != "entityid" => param("id"),
        Operation::GetLead => return None,
        Operation::ListLeads | Operation::ListStatuses => match k {
            "filter" | "where" | "filters" | "criteria" | "filterfields" | "filterparams"
                if p.is_object() =>
            {
                param("filter")
            }
            "filter" | "where" | "filters" | "filterfields" | "filterparams"
                if p.accepts("string") =>
            {
                return Some((param("filter"), true));
            }
            "select" | "columns" => param("select"),
            "fields" if op == Operation::ListLeads && p.accepts("array") && !p.is_object() => {
                param("select")
            }
            "order" | "sort" | "orderby" if p.is_object() => param("order"),
            "start" | "offset" if op == Operation::ListLeads => param("start"),
            "entityid" | "entity" | "type" | "dictionary" if op == Operation::ListStatuses => {
                Source::Filter {
                    name: "ENTITY_ID".into(),
                }
            }
            _ => return None,
        },
        Operation::FindByPhone => match k {
            "values" | "phones" | "phonenumbers" | "numbers" if p.accepts("array") => {
                param("values")
            }
            "phone" | "phonenumber" | "value" | "values" if p.accepts("string") => Source::First {
                name: "values".into(),
            },
            "type" | "commtype" => param("type"),
            "entitytype" => param("entity_type"),
            _ => return None,
        },
        Operation::AddComment => match k {
            "id" | "leadid" | "entityid" | "ownerid" | "itemid" => Source::Field {
                name: "ENTITY_ID".into(),
            },
            "comment" | "text" | "message" | "body" | "content" => Source::Field {
                name: "COMMENT".into(),
            },
            "entitytype" | "ownertype" => Source::Field {
                name: "ENTITY_TYPE".into(),
            },
            "fields" if p.is_object() => param("fields"),
            _ => return None,
        },
        Operation::LeadFields => return None,
    };
    Some((s, false))
}

impl ArgPlan {
    /// The plan for calling a tool with these properties as `op`. `fixed` are the selector
    /// arguments a shared tool needs (entity, action). A required property the operation cannot
    /// fill makes the tool unfit: the error names it.
    pub fn build(op: Operation, props: &[Prop], fixed: &[(String, Value)]) -> Result<Self, String> {
        let mut args: Vec<Arg> = fixed
            .iter()
            .map(|(prop, value)| Arg {
                prop: prop.clone(),
                source: Source::Const {
                    value: value.clone(),
                },
                text: false,
                required: true,
            })
            .collect();
        for p in props {
            if fixed.iter().any(|(f, _)| f == &p.name) {
                continue;
            }
            match source_for(op, p) {
                Some((source, text)) => args.push(Arg {
                    prop: p.name.clone(),
                    source,
                    text: text || string_only(p),
                    required: p.required,
                }),
                None if p.required => return Err(p.name.clone()),
                None => {}
            }
        }
        Ok(Self { args })
    }

    pub fn has(&self, f: impl Fn(&Source) -> bool) -> bool {
        self.args.iter().any(|a| f(&a.source))
    }

    /// Whether the plan can carry what `op` must send: fields for a create, an id and fields for
    /// an update, an id for a get, a filter for a list, phone values for a search.
    pub fn carries(&self, op: Operation) -> bool {
        let param =
            |n: &'static str| move |s: &Source| matches!(s, Source::Param { name } if name == n);
        let fields = |s: &Source| matches!(s, Source::OtherFields | Source::Field { .. });
        let field =
            |n: &'static str| move |s: &Source| matches!(s, Source::Field { name } if name == n);
        match op {
            Operation::CreateLead => {
                self.has(|s| matches!(s, Source::OtherFields))
                    || self.has(field("TITLE"))
                    || self.has(field("NAME"))
            }
            Operation::UpdateLead => self.has(param("id")) && self.has(fields),
            Operation::GetLead => self.has(param("id")),
            Operation::ListLeads => self.has(param("filter")),
            Operation::FindByPhone => {
                self.has(param("values")) || self.has(|s| matches!(s, Source::First { .. }))
            }
            Operation::AddComment => {
                (self.has(field("ENTITY_ID")) && self.has(field("COMMENT")))
                    || self.has(param("fields"))
            }
            Operation::ListStatuses => {
                self.has(param("filter")) || self.has(|s| matches!(s, Source::Filter { .. }))
            }
            Operation::LeadFields => true,
            Operation::AddStatus | Operation::AddUserField => self.has(fields),
        }
    }

    /// REST fields of a create or update that no argument can carry (a tool with flat
    /// properties only and no object for the rest).
    pub fn uncarried(&self, op: Operation) -> Vec<&'static str> {
        if !matches!(op, Operation::CreateLead | Operation::UpdateLead)
            || self.has(|s| matches!(s, Source::OtherFields))
        {
            return Vec::new();
        }
        [
            "ORIGINATOR_ID",
            "ORIGIN_ID",
            "STATUS_ID",
            "SOURCE_ID",
            "COMMENTS",
            "PHONE",
        ]
        .into_iter()
        .filter(|f| !self.has(|s| matches!(s, Source::Field { name } if name == f)))
        .collect()
    }

    /// The arguments for REST parameters `params`; a required argument left without a value is
    /// an error naming it.
    pub fn fill(&self, params: &Map<String, Value>) -> Result<Map<String, Value>, String> {
        let fields = params.get("fields").and_then(Value::as_object);
        let flat: Vec<&str> = self
            .args
            .iter()
            .filter_map(|a| match &a.source {
                Source::Field { name } => Some(name.as_str()),
                _ => None,
            })
            .collect();
        let mut out = Map::new();
        for a in &self.args {
            let v = match &a.source {
                Source::Const { value } => Some(value.clone()),
                Source::Param { name } => params.get(name).cloned(),
                Source::First { name } => params.get(name).and_then(|v| {
                    v.as_array()
                        .and_then(|a| a.first())
                        .cloned()
                        .or(Some(v.clone()))
                }),
                Source::Field { name } => fields.and_then(|f| f.get(name)).cloned(),
                Source::Filter { name } => params.get("filter").and_then(|f| f.get(name)).cloned(),
                Source::OtherFields => {
                    let rest: Map<String, Value> = fields
                        .map(|f| {
                            f.iter()
                                .filter(|(k, _)| !flat.contains(&k.as_str()))
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    (!rest.is_empty() || a.required).then_some(Value::Object(rest))
                }
            };
            let Some(v) = v.filter(|v| !v.is_null()) else {
                if a.required {
                    return Err(a.prop.clone());
                }
                continue;
            };
            out.insert(a.prop.clone(), if a.text { as_text(v) } else { v });
        }
        Ok(out)
    }
}

/// The property takes a string and nothing else: ids go as `"5"` (FastMCP validates `str`
/// arguments strictly and refuses the number 5).
fn string_only(p: &Prop) -> bool {
    !p.types.is_empty() && p.types.iter().all(|t| t == "string")
}

/// A value for a string property: a multifield's first `VALUE`, a number as its digits, an
/// object or array as JSON text.
fn as_text(v: Value) -> Value {
    match v {
        Value::Number(n) => json!(n.to_string()),
        Value::Array(items) => match items.iter().find_map(|i| i.get("VALUE").cloned()) {
            Some(first) => first,
            None => json!(Value::Array(items).to_string()),
        },
        Value::Object(_) => json!(v.to_string()),
        other => other,
    }
}

/// Representative REST parameters of each operation, for checking at binding time that a tool's
/// plan fills every required argument.
pub fn sample_params(op: Operation) -> Map<String, Value> {
    let v = match op {
        Operation::FindByPhone => {
            json!({"type": "PHONE", "values": ["+10000000000"], "entity_type": "LEAD"})
        }
        Operation::CreateLead => {
            json!({"fields": {"TITLE": "t", "NAME": "n", "PHONE": [{"VALUE": "+1", "VALUE_TYPE": "WORK"}], "COMMENTS": "c", "SOURCE_ID": "OTHER", "STATUS_ID": "NEW", "ORIGINATOR_ID": "teleagent", "ORIGIN_ID": "t:c"}, "params": {"REGISTER_SONET_EVENT": "N"}})
        }
        Operation::UpdateLead => json!({"id": 1, "fields": {"STATUS_ID": "NEW"}}),
        Operation::GetLead => json!({"id": 1}),
        Operation::ListLeads => {
            json!({"filter": {"ORIGIN_ID": "x"}, "select": ["ID"], "order": {"ID": "ASC"}})
        }
        Operation::AddComment => {
            json!({"fields": {"ENTITY_ID": 1, "ENTITY_TYPE": "lead", "COMMENT": "c"}})
        }
        Operation::ListStatuses => {
            json!({"filter": {"ENTITY_ID": "STATUS"}, "order": {"SORT": "ASC"}})
        }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::crm::schema::props;

    fn plan(op: Operation, schema: Value) -> ArgPlan {
        ArgPlan::build(op, &props(&schema), &[]).unwrap()
    }

    fn params(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn flat_properties_take_their_fields_and_the_object_takes_the_rest() {
        let schema = json!({"type": "object", "required": ["title"], "properties": {
            "title": {"type": "string"}, "name": {"type": "string"}, "phone": {"type": "string"},
            "comments": {"type": "string"}, "sourceId": {"type": "string"}, "statusId": {"type": "string"},
            "fields": {"type": "object", "description": "Extra raw Bitrix24 fields (UF_CRM_*)"}}});
        let p = plan(Operation::CreateLead, schema);
        assert!(p.carries(Operation::CreateLead));
        assert!(p.uncarried(Operation::CreateLead).is_empty());
        let args = p
            .fill(&params(
                json!({"fields": {"TITLE": "Telegram: Ann", "NAME": "Ann",
                "PHONE": [{"VALUE": "+998901234567", "VALUE_TYPE": "WORK"}], "COMMENTS": "c",
                "SOURCE_ID": "OTHER", "STATUS_ID": "NEW", "ORIGINATOR_ID": "teleagent",
                "ORIGIN_ID": "t1:tg:1", "UF_CRM_TELEAGENT_SCORE": 82}}),
            ))
            .unwrap();
        assert_eq!(
            Value::Object(args),
            json!({"title": "Telegram: Ann", "name": "Ann", "phone": "+998901234567", "comments": "c",
                   "sourceId": "OTHER", "statusId": "NEW",
                   "fields": {"ORIGINATOR_ID": "teleagent", "ORIGIN_ID": "t1:tg:1", "UF_CRM_TELEAGENT_SCORE": 82}})
        );
    }

    #[test]
    fn flat_only_tools_report_what_they_cannot_carry() {
        let p = plan(
            Operation::CreateLead,
            json!({"type": "object", "properties": {"title": {"type": "string"}, "phone": {"type": "string"}}}),
        );
        assert!(p.carries(Operation::CreateLead));
        assert_eq!(
            p.uncarried(Operation::CreateLead),
            [
                "ORIGINATOR_ID",
                "ORIGIN_ID",
                "STATUS_ID",
                "SOURCE_ID",
                "COMMENTS"
            ]
        );
    }

    #[test]
    fn required_arguments_the_operation_cannot_fill_make_the_tool_unfit() {
        let schema = json!({"type": "object", "required": ["date"], "properties": {"date": {"type": "string"}}});
        assert_eq!(
            ArgPlan::build(Operation::CreateLead, &props(&schema), &[]),
            Err("date".to_owned())
        );
        let list_without_filter = plan(
            Operation::ListLeads,
            json!({"type": "object", "properties": {"limit": {"type": "integer"}}}),
        );
        assert!(!list_without_filter.carries(Operation::ListLeads));
    }

    #[test]
    fn selectors_ids_phones_and_comments() {
        let p = ArgPlan::build(
            Operation::UpdateLead,
            &props(
                &json!({"type": "object", "properties": {"entityTypeId": {"type": "integer"},
                "id": {"type": "integer"}, "fields": {"type": "object"}}}),
            ),
            &[("entityTypeId".into(), json!(1))],
        )
        .unwrap();
        assert_eq!(
            Value::Object(
                p.fill(&params(json!({"id": 7, "fields": {"NAME": "A"}})))
                    .unwrap()
            ),
            json!({"entityTypeId": 1, "id": 7, "fields": {"NAME": "A"}})
        );
        let find = plan(
            Operation::FindByPhone,
            json!({"type": "object", "properties": {"phone": {"type": "string"}}}),
        );
        assert_eq!(
            Value::Object(
                find.fill(&params(json!({"type": "PHONE", "values": ["+1", "1"]})))
                    .unwrap()
            ),
            json!({"phone": "+1"})
        );
        let comment = plan(
            Operation::AddComment,
            json!({"type": "object", "properties": {"lead_id": {"type": "integer"}, "comment": {"type": "string"}}}),
        );
        assert_eq!(
            Value::Object(
                comment
                    .fill(&params(
                        json!({"fields": {"ENTITY_ID": 5, "ENTITY_TYPE": "lead", "COMMENT": "hi"}})
                    ))
                    .unwrap()
            ),
            json!({"lead_id": 5, "comment": "hi"})
        );
        let json_text = plan(
            Operation::UpdateLead,
            json!({"type": "object", "properties": {"id": {"type": "integer"}, "fields": {"type": "string"}}}),
        );
        assert_eq!(
            json_text
                .fill(&params(json!({"id": 1, "fields": {"NAME": "A"}})))
                .unwrap()["fields"],
            json!(r#"{"NAME":"A"}"#)
        );
    }
}
