//! The portal's data and REST semantics behind every tool shape: leads with multifields,
//! statuses and sources, lead user fields, timeline comments, duplicate search. Each rule here is
//! one of Bitrix24's REST rules (multifield append-vs-overwrite, `[]` when findbycomm finds
//! nothing, digits-only phone matching, PHONE only when selected, admin-only user fields).

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::SandboxConfig;

/// Fixed page size of `crm.lead.list` (there is no `limit` parameter).
const PAGE: usize = 50;
/// `crm.duplicate.findbycomm` accepts at most this many values.
const MAX_DUPLICATE_VALUES: usize = 20;
/// The id the sandbox acts as (the connecting user).
const USER_ID: &str = "1";

/// A REST error as Bitrix24 reports it: `{"error": code, "error_description": description}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RestError {
    pub code: String,
    pub description: String,
}

impl RestError {
    pub(crate) fn new(code: &str, description: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            description: description.into(),
        }
    }

    fn not_found() -> Self {
        Self::new("NOT_FOUND", "Not found")
    }

    fn bad_id() -> Self {
        Self::new("INVALID_ARG_VALUE", "ID is not defined or invalid.")
    }

    fn access_denied() -> Self {
        Self::new("ACCESS_DENIED", "Access denied.")
    }

    pub(crate) fn body(&self) -> Value {
        json!({"error": self.code, "error_description": self.description})
    }
}

/// A successful REST answer: `result` plus the list envelope's `next`/`total`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RestOk {
    pub result: Value,
    pub next: Option<u64>,
    pub total: Option<u64>,
}

impl RestOk {
    fn of(result: Value) -> Self {
        Self {
            result,
            next: None,
            total: None,
        }
    }
}

/// Standard scalar lead fields: (name, type, title, writable).
const LEAD_FIELDS: &[(&str, &str, &str, bool)] = &[
    ("ID", "integer", "ID", false),
    ("TITLE", "string", "Lead name", true),
    ("HONORIFIC", "crm_status", "Salutation", true),
    ("NAME", "string", "First name", true),
    ("SECOND_NAME", "string", "Middle name", true),
    ("LAST_NAME", "string", "Last name", true),
    ("BIRTHDATE", "date", "Date of birth", true),
    ("COMPANY_TITLE", "string", "Company name", true),
    ("SOURCE_ID", "crm_status", "Source", true),
    ("SOURCE_DESCRIPTION", "text", "Source information", true),
    ("STATUS_ID", "crm_status", "Stage", true),
    ("STATUS_DESCRIPTION", "text", "Stage information", true),
    ("STATUS_SEMANTIC_ID", "string", "Status semantics", false),
    ("POST", "string", "Position", true),
    ("ADDRESS", "string", "Address", true),
    ("CURRENCY_ID", "crm_currency", "Currency", true),
    ("OPPORTUNITY", "double", "Amount", true),
    (
        "IS_MANUAL_OPPORTUNITY",
        "char",
        "IS_MANUAL_OPPORTUNITY",
        true,
    ),
    ("OPENED", "char", "Available to everyone", true),
    ("COMMENTS", "string", "Comment", true),
    ("HAS_PHONE", "char", "Has phone", false),
    ("HAS_EMAIL", "char", "Has email", false),
    ("ASSIGNED_BY_ID", "user", "Responsible person", true),
    ("CREATED_BY_ID", "user", "Created by", false),
    ("MODIFY_BY_ID", "user", "Modified by", false),
    ("DATE_CREATE", "datetime", "Created on", false),
    ("DATE_MODIFY", "datetime", "Modified on", false),
    ("DATE_CLOSED", "datetime", "Completed on", false),
    ("ORIGINATOR_ID", "string", "External source", true),
    ("ORIGIN_ID", "string", "Item ID in data source", true),
    ("UTM_SOURCE", "string", "Ad system", true),
    ("UTM_MEDIUM", "string", "Traffic type", true),
    ("UTM_CAMPAIGN", "string", "Ad campaign UTM", true),
];

/// Multifields (PHONE, EMAIL): lists of `{ID, VALUE_TYPE, VALUE, TYPE_ID}`.
const MULTIFIELDS: &[(&str, &str)] = &[("PHONE", "Phone"), ("EMAIL", "E-mail")];

const USER_TYPES: &[&str] = &[
    "string",
    "integer",
    "double",
    "boolean",
    "date",
    "datetime",
    "enumeration",
    "money",
    "url",
    "address",
    "file",
    "employee",
    "crm",
    "crm_status",
];

#[derive(Clone, Debug)]
struct MultiValue {
    id: i64,
    value_type: String,
    value: String,
}

#[derive(Clone, Debug)]
struct Lead {
    id: i64,
    /// Standard scalar fields (strings or null), keyed by name.
    fields: BTreeMap<String, Value>,
    /// User-field values (only fields the portal has).
    uf: BTreeMap<String, Value>,
    /// PHONE and EMAIL items, keyed by multifield name.
    multi: BTreeMap<String, Vec<MultiValue>>,
}

#[derive(Clone, Debug)]
struct Status {
    id: i64,
    entity_id: String,
    status_id: String,
    name: String,
    sort: i64,
    system: bool,
    semantics: Option<&'static str>,
}

#[derive(Clone, Debug)]
struct UserField {
    id: i64,
    field_name: String,
    user_type_id: String,
    label: String,
}

#[derive(Clone, Debug)]
struct Comment {
    lead_id: i64,
    text: String,
}

/// The portal's in-memory data.
#[derive(Debug)]
pub(crate) struct Portal {
    leads: BTreeMap<i64, Lead>,
    next_lead_id: i64,
    next_multi_id: i64,
    statuses: Vec<Status>,
    next_status_id: i64,
    user_fields: Vec<UserField>,
    next_user_field_id: i64,
    comments: Vec<Comment>,
    /// Every successful lead write (create, update, timeline comment), in order, with its time.
    writes: Vec<LeadWrite>,
}

/// One write that changed a lead, as the portal saw it: when (milliseconds since the Unix epoch),
/// which REST method, which lead, and the `fields` it carried (a comment's `fields` include its
/// `COMMENT`). Benchmarks match these to events to time event-to-lead latency on the portal side.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LeadWrite {
    pub at_ms: u64,
    pub method: String,
    pub lead_id: i64,
    pub fields: Value,
}

impl Portal {
    pub(crate) fn new(cfg: &SandboxConfig) -> Self {
        let mut p = Portal {
            leads: BTreeMap::new(),
            next_lead_id: 1,
            next_multi_id: 1,
            statuses: Vec::new(),
            next_status_id: 1,
            user_fields: Vec::new(),
            next_user_field_id: 1,
            comments: Vec::new(),
            writes: Vec::new(),
        };
        let stages: &[(&str, &str, Option<&'static str>)] = &[
            ("NEW", "Unassigned", None),
            ("IN_PROCESS", "In progress", None),
            ("PROCESSED", "Processed", None),
            ("JUNK", "Junk lead", Some("F")),
            ("CONVERTED", "Good lead", Some("S")),
        ];
        for (i, (id, name, sem)) in stages.iter().enumerate() {
            p.push_status("STATUS", id, name, sort_of(i), true, *sem);
        }
        let sources = [
            ("CALL", "Call"),
            ("EMAIL", "E-Mail"),
            ("WEB", "Website"),
            ("ADVERTISING", "Advertising"),
            ("PARTNER", "Existing client"),
            ("RECOMMENDATION", "By recommendation"),
            ("TRADE_SHOW", "Show/Exhibition"),
            ("WEBFORM", "CRM form"),
            ("CALLBACK", "Callback"),
            ("RC_GENERATOR", "Sales boost"),
            ("STORE", "Online Store"),
            ("OTHER", "Other"),
        ];
        for (i, (id, name)) in sources.iter().enumerate() {
            p.push_status("SOURCE", id, name, sort_of(i), true, None);
        }
        p.apply_flags(cfg);
        p
    }

    /// Makes the optional portal features match the configuration (they can change at run time).
    pub(crate) fn apply_flags(&mut self, cfg: &SandboxConfig) {
        self.ensure_status(
            cfg.has_telegram_source,
            "SOURCE",
            "TELEGRAM",
            "Telegram",
            200,
        );
        self.ensure_status(
            cfg.has_qualified_status,
            "STATUS",
            "UC_QUALIFIED",
            "Qualified",
            35,
        );
        for (name, ty, label) in [
            ("UF_CRM_TELEAGENT_SCORE", "double", "TeleAgent score"),
            ("UF_CRM_TELEAGENT_HOTNESS", "string", "TeleAgent hotness"),
        ] {
            let present = self.user_fields.iter().any(|u| u.field_name == name);
            if cfg.has_teleagent_user_fields && !present {
                self.push_user_field(name, ty, label);
            } else if !cfg.has_teleagent_user_fields && present {
                self.user_fields.retain(|u| u.field_name != name);
            }
        }
    }

    fn ensure_status(&mut self, want: bool, entity: &str, id: &str, name: &str, sort: i64) {
        let present = self.find_status(entity, id).is_some();
        if want && !present {
            self.push_status(entity, id, name, sort, false, None);
        } else if !want && present {
            self.statuses
                .retain(|s| !(s.entity_id == entity && s.status_id == id));
        }
    }

    fn push_status(
        &mut self,
        entity: &str,
        id: &str,
        name: &str,
        sort: i64,
        system: bool,
        semantics: Option<&'static str>,
    ) -> i64 {
        let sid = self.next_status_id;
        self.next_status_id += 1;
        self.statuses.push(Status {
            id: sid,
            entity_id: entity.to_owned(),
            status_id: id.to_owned(),
            name: name.to_owned(),
            sort,
            system,
            semantics,
        });
        sid
    }

    fn push_user_field(&mut self, name: &str, ty: &str, label: &str) -> i64 {
        let id = self.next_user_field_id;
        self.next_user_field_id += 1;
        self.user_fields.push(UserField {
            id,
            field_name: name.to_owned(),
            user_type_id: ty.to_owned(),
            label: label.to_owned(),
        });
        id
    }

    fn find_status(&self, entity: &str, id: &str) -> Option<&Status> {
        self.statuses
            .iter()
            .find(|s| s.entity_id == entity && s.status_id == id)
    }

    fn user_field(&self, name: &str) -> Option<&UserField> {
        self.user_fields.iter().find(|u| u.field_name == name)
    }

    // ---- the Rust API's views -------------------------------------------------------------

    pub(crate) fn seed_lead(&mut self, fields: &Value) -> i64 {
        let empty = Map::new();
        let fields = fields.as_object().unwrap_or(&empty);
        self.insert_lead(fields)
    }

    /// A manager's edit in the portal's UI (the admin API's manager console): the fields are
    /// written as `crm.lead.update` would write them (statuses checked against the portal's
    /// list), `DATE_MODIFY` moves and `MODIFY_BY_ID` names the manager. No call is counted: the
    /// edit does not come through the MCP server. `Err` when the lead does not exist or a
    /// status is not in the list.
    pub(crate) fn manager_edit(
        &mut self,
        id: i64,
        manager_id: &str,
        fields: &Value,
    ) -> Result<Value, RestError> {
        let empty = Map::new();
        let fields = fields.as_object().unwrap_or(&empty);
        self.validate_statuses(fields)?;
        let mut lead = self.leads.remove(&id).ok_or_else(RestError::not_found)?;
        self.write_fields(&mut lead, fields);
        lead.fields
            .insert("DATE_MODIFY".to_owned(), Value::String(now_string()));
        lead.fields.insert(
            "MODIFY_BY_ID".to_owned(),
            Value::String(manager_id.to_owned()),
        );
        let out = self.render(&lead);
        self.leads.insert(id, lead);
        Ok(out)
    }

    pub(crate) fn all_leads(&self) -> Vec<Value> {
        self.leads.values().map(|l| self.render(l)).collect()
    }

    pub(crate) fn lead_json(&self, id: i64) -> Option<Value> {
        self.leads.get(&id).map(|l| self.render(l))
    }

    pub(crate) fn comments_of(&self, lead_id: i64) -> Vec<String> {
        self.comments
            .iter()
            .filter(|c| c.lead_id == lead_id)
            .map(|c| c.text.clone())
            .collect()
    }

    // ---- REST ----------------------------------------------------------------------------

    /// [`Portal::execute`] on a server whose lead searches ignore their filter: a lead list
    /// answers every lead, a duplicate search every lead's id.
    pub(crate) fn execute_ignoring_filters(
        &mut self,
        method: &str,
        params: &Value,
        admin: bool,
    ) -> Result<RestOk, RestError> {
        let mut params = params.clone();
        match method.to_ascii_lowercase().as_str() {
            "crm.lead.list" => {
                if let Some(p) = params.as_object_mut() {
                    p.remove("filter");
                }
                self.execute(method, &params, admin)
            }
            "crm.duplicate.findbycomm" => {
                let ids: Vec<Value> = self.leads.keys().map(|id| Value::from(*id)).collect();
                Ok(RestOk::of(serde_json::json!({"LEAD": ids})))
            }
            _ => self.execute(method, &params, admin),
        }
    }

    /// Runs one REST method as the portal would for a user (`admin` = portal administrator).
    /// Method names are case-insensitive, as in Bitrix24.
    pub(crate) fn execute(
        &mut self,
        method: &str,
        params: &Value,
        admin: bool,
    ) -> Result<RestOk, RestError> {
        let empty = Map::new();
        let p = params.as_object().unwrap_or(&empty);
        let method = method.to_ascii_lowercase();
        let out = self.execute_lower(&method, p, admin);
        if let Ok(ok) = &out {
            let fields = p.get("fields").cloned().unwrap_or(Value::Null);
            let lead_id = match method.as_str() {
                "crm.lead.add" => as_id(&ok.result),
                "crm.lead.update" => id_param(p).ok(),
                "crm.timeline.comment.add" => fields.get("ENTITY_ID").and_then(as_id),
                _ => None,
            };
            if let Some(lead_id) = lead_id {
                self.writes.push(LeadWrite {
                    at_ms: now_ms(),
                    method,
                    lead_id,
                    fields,
                });
            }
        }
        out
    }

    /// The lead writes so far, oldest first.
    pub(crate) fn writes(&self) -> &[LeadWrite] {
        &self.writes
    }

    fn execute_lower(
        &mut self,
        method: &str,
        p: &Map<String, Value>,
        admin: bool,
    ) -> Result<RestOk, RestError> {
        match method {
            "crm.lead.add" => self.lead_add(p),
            "crm.lead.update" => self.lead_update(p),
            "crm.lead.get" => {
                let id = id_param(p)?;
                self.lead_json(id)
                    .map(RestOk::of)
                    .ok_or_else(RestError::not_found)
            }
            "crm.lead.list" => self.lead_list(p),
            "crm.lead.fields" => Ok(RestOk::of(self.lead_fields())),
            "crm.duplicate.findbycomm" => self.find_by_comm(p),
            "crm.status.list" => Ok(self.status_list(p)),
            "crm.status.add" => self.status_add(p, admin),
            "crm.lead.userfield.list" => Ok(self.user_field_list()),
            "crm.lead.userfield.add" => self.user_field_add(p, admin),
            "crm.timeline.comment.add" => self.comment_add(p),
            // The unrelated tools' methods: an empty CRM/tasks module is enough.
            "crm.deal.list" | "crm.dealcategory.list" => Ok(RestOk {
                result: json!([]),
                next: None,
                total: Some(0),
            }),
            "tasks.task.list" => Ok(RestOk {
                result: json!({"tasks": []}),
                next: None,
                total: Some(0),
            }),
            "tasks.task.get" => Err(RestError::new(
                "ERROR_CORE",
                "Task not found or not accessible",
            )),
            _ => Err(RestError::new(
                "ERROR_METHOD_NOT_FOUND",
                "Method not found!",
            )),
        }
    }

    fn lead_add(&mut self, p: &Map<String, Value>) -> Result<RestOk, RestError> {
        let fields = fields_param(p)?;
        self.validate_statuses(fields)?;
        Ok(RestOk::of(json!(self.insert_lead(fields))))
    }

    fn insert_lead(&mut self, fields: &Map<String, Value>) -> i64 {
        let id = self.next_lead_id;
        self.next_lead_id += 1;
        let now = now_string();
        let mut lead = Lead {
            id,
            fields: BTreeMap::new(),
            uf: BTreeMap::new(),
            multi: BTreeMap::new(),
        };
        for (name, ..) in LEAD_FIELDS {
            lead.fields.insert((*name).to_owned(), Value::Null);
        }
        let defaults = [
            ("TITLE", format!("Lead #{id}")),
            ("STATUS_ID", "NEW".to_owned()),
            ("CURRENCY_ID", "USD".to_owned()),
            ("OPPORTUNITY", "0.00".to_owned()),
            ("IS_MANUAL_OPPORTUNITY", "N".to_owned()),
            ("OPENED", "Y".to_owned()),
            ("ASSIGNED_BY_ID", USER_ID.to_owned()),
            ("CREATED_BY_ID", USER_ID.to_owned()),
            ("MODIFY_BY_ID", USER_ID.to_owned()),
            ("DATE_CREATE", now.clone()),
            ("DATE_MODIFY", now),
        ];
        for (k, v) in defaults {
            lead.fields.insert(k.to_owned(), Value::String(v));
        }
        // On add every multifield item is new, whatever ID it carries.
        let mut stripped = fields.clone();
        for (mf, _) in MULTIFIELDS {
            if let Some(Value::Array(items)) = stripped.get_mut(*mf) {
                for item in items.iter_mut() {
                    if let Some(o) = item.as_object_mut() {
                        o.remove("ID");
                    }
                }
            }
        }
        self.write_fields(&mut lead, &stripped);
        if lead.fields.get("TITLE").is_none_or(is_blank) {
            lead.fields
                .insert("TITLE".to_owned(), Value::String(format!("Lead #{id}")));
        }
        self.leads.insert(id, lead);
        id
    }

    fn lead_update(&mut self, p: &Map<String, Value>) -> Result<RestOk, RestError> {
        let id = id_param(p)?;
        let fields = fields_param(p)?.clone();
        if !self.leads.contains_key(&id) {
            return Err(RestError::not_found());
        }
        self.validate_statuses(&fields)?;
        let mut lead = self.leads.remove(&id).ok_or_else(RestError::not_found)?;
        self.write_fields(&mut lead, &fields);
        lead.fields
            .insert("DATE_MODIFY".to_owned(), Value::String(now_string()));
        self.leads.insert(id, lead);
        Ok(RestOk::of(Value::Bool(true)))
    }

    /// STATUS_ID and SOURCE_ID must name entries of the portal's lists.
    fn validate_statuses(&self, fields: &Map<String, Value>) -> Result<(), RestError> {
        for (field, entity) in [("STATUS_ID", "STATUS"), ("SOURCE_ID", "SOURCE")] {
            let Some(v) = fields.get(field) else { continue };
            if is_blank(v) {
                continue;
            }
            let s = scalar_string(v);
            if self.find_status(entity, &s).is_none() {
                return Err(RestError::new(
                    "ERROR_CORE",
                    format!("Field \"{field}\": value \"{s}\" is not in the {entity} list"),
                ));
            }
        }
        Ok(())
    }

    /// Writes the writable standard fields, the portal's user fields and multifields; read-only
    /// and unknown fields (unknown `UF_*` too) are ignored silently, as Bitrix24 does.
    fn write_fields(&mut self, lead: &mut Lead, fields: &Map<String, Value>) {
        for (key, v) in fields {
            if let Some((name, ty, _, true)) = LEAD_FIELDS.iter().find(|f| f.0 == key) {
                let value = if v.is_null() {
                    Value::Null
                } else if *ty == "double" {
                    Value::String(money(v))
                } else {
                    Value::String(scalar_string(v))
                };
                lead.fields.insert((*name).to_owned(), value);
            } else if MULTIFIELDS.iter().any(|m| m.0 == key) {
                self.write_multifield(lead, key, v);
            } else if let Some(uf) = self.user_field(key) {
                let value = uf_value(&uf.user_type_id, v);
                lead.uf.insert(key.clone(), value);
            }
        }
        let has = |lead: &Lead, mf: &str| {
            if lead.multi.get(mf).is_some_and(|v| !v.is_empty()) {
                "Y"
            } else {
                "N"
            }
        };
        let (hp, he) = (has(lead, "PHONE"), has(lead, "EMAIL"));
        lead.fields.insert("HAS_PHONE".to_owned(), json!(hp));
        lead.fields.insert("HAS_EMAIL".to_owned(), json!(he));
        let semantic = lead
            .fields
            .get("STATUS_ID")
            .and_then(Value::as_str)
            .and_then(|s| self.find_status("STATUS", s))
            .map(|s| s.semantics.unwrap_or("P"))
            .unwrap_or("P");
        lead.fields
            .insert("STATUS_SEMANTIC_ID".to_owned(), json!(semantic));
    }

    /// Bitrix24 multifield update rules: an item WITHOUT `ID` is appended; `{ID,
    /// VALUE}` overwrites that item; `{ID, DELETE:"Y"}` or an empty VALUE deletes it.
    fn write_multifield(&mut self, lead: &mut Lead, mf: &str, v: &Value) {
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            Value::Object(o) => o.values().collect(), // PHP-style {"n0": {...}} lists
            _ => return,
        };
        let list = lead.multi.entry(mf.to_owned()).or_default();
        for item in items {
            let Some(o) = item.as_object() else { continue };
            let value = o.get("VALUE").map(scalar_string).unwrap_or_default();
            let value_type = o
                .get("VALUE_TYPE")
                .map(scalar_string)
                .filter(|s| !s.is_empty());
            match o.get("ID").and_then(as_id) {
                Some(item_id) => {
                    let delete = o.get("DELETE").is_some_and(|d| scalar_string(d) == "Y");
                    if delete || value.trim().is_empty() {
                        list.retain(|m| m.id != item_id);
                    } else if let Some(m) = list.iter_mut().find(|m| m.id == item_id) {
                        m.value = value;
                        if let Some(t) = value_type {
                            m.value_type = t;
                        }
                    }
                }
                None if !value.trim().is_empty() => {
                    list.push(MultiValue {
                        id: self.next_multi_id,
                        value_type: value_type.unwrap_or_else(|| "WORK".to_owned()),
                        value,
                    });
                    self.next_multi_id += 1;
                }
                None => {}
            }
        }
    }

    /// A lead as `crm.lead.get` returns it: every field, ids and numbers as strings, user
    /// fields present (null when unset), multifields only when non-empty.
    fn render(&self, lead: &Lead) -> Value {
        let mut out = Map::new();
        for (name, ..) in LEAD_FIELDS {
            let v = lead.fields.get(*name).cloned().unwrap_or(Value::Null);
            out.insert((*name).to_owned(), v);
        }
        out.insert("ID".to_owned(), Value::String(lead.id.to_string()));
        for uf in &self.user_fields {
            let v = lead.uf.get(&uf.field_name).cloned().unwrap_or(Value::Null);
            out.insert(uf.field_name.clone(), v);
        }
        for (mf, _) in MULTIFIELDS {
            if let Some(items) = lead.multi.get(*mf).filter(|v| !v.is_empty()) {
                let arr = items
                    .iter()
                    .map(|m| {
                        json!({"ID": m.id.to_string(), "VALUE_TYPE": m.value_type,
                               "VALUE": m.value, "TYPE_ID": mf})
                    })
                    .collect();
                out.insert((*mf).to_owned(), Value::Array(arr));
            }
        }
        Value::Object(out)
    }

    fn lead_list(&self, p: &Map<String, Value>) -> Result<RestOk, RestError> {
        let empty = Map::new();
        let filter = match p.get("filter") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(o)) => o,
            Some(Value::Array(a)) if a.is_empty() => &empty,
            Some(_) => {
                return Err(RestError::new(
                    "INVALID_ARG_VALUE",
                    "Parameter 'filter' must be an object",
                ));
            }
        };
        let select: Vec<String> = match p.get("select") {
            Some(Value::Array(a)) => a.iter().map(scalar_string).collect(),
            Some(Value::Object(o)) => o.values().map(scalar_string).collect(),
            _ => Vec::new(),
        };
        let mut rows: Vec<&Lead> = self
            .leads
            .values()
            .filter(|l| self.matches(l, filter))
            .collect();
        if let Some(Value::Object(order)) = p.get("order") {
            // Apply keys last-to-first with a stable sort, so the first key wins.
            for (field, dir) in order.iter().rev() {
                let desc = scalar_string(dir).eq_ignore_ascii_case("DESC");
                rows.sort_by(|a, b| {
                    let (x, y) = (self.field_string(a, field), self.field_string(b, field));
                    let ord = match (x.parse::<f64>(), y.parse::<f64>()) {
                        (Ok(x), Ok(y)) => x.total_cmp(&y),
                        _ => x.cmp(&y),
                    };
                    if desc { ord.reverse() } else { ord }
                });
            }
        }
        let start = p
            .get("start")
            .and_then(as_id)
            .unwrap_or(0)
            .max(0)
            .try_into()
            .unwrap_or(0usize);
        let total = rows.len();
        let page: Vec<Value> = rows
            .iter()
            .skip(start)
            .take(PAGE)
            .map(|l| select_fields(self.render(l), &select))
            .collect();
        let next = (start + PAGE < total).then_some((start + PAGE) as u64);
        Ok(RestOk {
            result: Value::Array(page),
            next,
            total: Some(total as u64),
        })
    }

    fn field_string(&self, lead: &Lead, field: &str) -> String {
        if field == "ID" {
            return lead.id.to_string();
        }
        lead.fields
            .get(field)
            .or_else(|| lead.uf.get(field))
            .map(scalar_string)
            .unwrap_or_default()
    }

    /// Filter keys: `FIELD` or `=FIELD` (equal), `!FIELD` (not equal), `@FIELD` (in),
    /// `>`, `>=`, `<`, `<=` (numeric when both sides are numbers), `%FIELD` (contains). An array
    /// value means "any of". PHONE/EMAIL match a stored VALUE exactly. Unknown fields are ignored.
    fn matches(&self, lead: &Lead, filter: &Map<String, Value>) -> bool {
        filter.iter().all(|(key, want)| {
            let (op, field) = split_op(key);
            let wants: Vec<String> = match want {
                Value::Array(a) => a.iter().map(scalar_string).collect(),
                v => vec![scalar_string(v)],
            };
            let haves: Vec<String> = if MULTIFIELDS.iter().any(|m| m.0 == field) {
                lead.multi
                    .get(field)
                    .map(|v| v.iter().map(|m| m.value.clone()).collect())
                    .unwrap_or_default()
            } else if field == "ID"
                || lead.fields.contains_key(field)
                || self.user_field(field).is_some()
            {
                vec![self.field_string(lead, field)]
            } else {
                return true;
            };
            let is_date = LEAD_FIELDS
                .iter()
                .any(|f| f.0 == field && f.1 == "datetime");
            let hit = |have: &str, w: &str| -> bool {
                // Bitrix24 compares datetimes as instants, whatever offset each side is written
                // in (a portal answers in its own time zone; a client may filter in UTC).
                if is_date && let (Some(h), Some(w)) = (parse_time(have), parse_time(w)) {
                    return match op {
                        "" | "=" | "@" | "!" => h == w,
                        ">" => h > w,
                        ">=" => h >= w,
                        "<" => h < w,
                        "<=" => h <= w,
                        _ => false,
                    };
                }
                let num = || Some((have.parse::<f64>().ok()?, w.parse::<f64>().ok()?));
                match op {
                    "" | "=" | "@" | "!" => have == w,
                    "%" => have.to_lowercase().contains(&w.to_lowercase()),
                    ">" => num().map_or(have > w, |(h, w)| h > w),
                    ">=" => num().map_or(have >= w, |(h, w)| h >= w),
                    "<" => num().map_or(have < w, |(h, w)| h < w),
                    "<=" => num().map_or(have <= w, |(h, w)| h <= w),
                    _ => false,
                }
            };
            let any = haves.iter().any(|h| wants.iter().any(|w| hit(h, w)));
            if op == "!" { !any } else { any }
        })
    }

    fn lead_fields(&self) -> Value {
        let mut out = Map::new();
        for (name, ty, title, writable) in LEAD_FIELDS {
            out.insert(
                (*name).to_owned(),
                json!({"type": ty, "isRequired": false, "isReadOnly": !writable,
                       "isImmutable": false, "isMultiple": false, "isDynamic": false,
                       "title": title}),
            );
        }
        for (mf, title) in MULTIFIELDS {
            out.insert(
                (*mf).to_owned(),
                json!({"type": "crm_multifield", "isRequired": false, "isReadOnly": false,
                       "isImmutable": false, "isMultiple": true, "isDynamic": false,
                       "title": title}),
            );
        }
        for uf in &self.user_fields {
            // Bitrix24 titles a user field by its name; the human label sits in the *Label keys.
            out.insert(
                uf.field_name.clone(),
                json!({"type": uf.user_type_id, "isRequired": false, "isReadOnly": false,
                       "isImmutable": false, "isMultiple": false, "isDynamic": true,
                       "title": uf.field_name, "listLabel": uf.label,
                       "formLabel": uf.label, "filterLabel": uf.label}),
            );
        }
        Value::Object(out)
    }

    /// Digits-only, exact comparison, extension after `#` ignored; so a national-only spelling
    /// does not find an international stored number (clients must search several spellings).
    fn find_by_comm(&self, p: &Map<String, Value>) -> Result<RestOk, RestError> {
        let ty = p
            .get("type")
            .map(scalar_string)
            .unwrap_or_default()
            .to_ascii_uppercase();
        if ty != "PHONE" && ty != "EMAIL" {
            return Err(RestError::new(
                "INVALID_ARG_VALUE",
                "Parameter 'type' must be PHONE or EMAIL",
            ));
        }
        let values: Vec<String> = match p.get("values") {
            Some(Value::Array(a)) if !a.is_empty() => a.iter().map(scalar_string).collect(),
            _ => {
                return Err(RestError::new(
                    "INVALID_ARG_VALUE",
                    "Parameter 'values' must be a non-empty array",
                ));
            }
        };
        if values.len() > MAX_DUPLICATE_VALUES {
            return Err(RestError::new(
                "INVALID_ARG_VALUE",
                format!("Too many values: at most {MAX_DUPLICATE_VALUES} are allowed"),
            ));
        }
        let entity = p
            .get("entity_type")
            .map(scalar_string)
            .unwrap_or_default()
            .to_ascii_uppercase();
        if !entity.is_empty() && entity != "LEAD" {
            // No contacts or companies live in this portal.
            return Ok(RestOk::of(json!([])));
        }
        let norm = |s: &str| -> String {
            if ty == "PHONE" {
                digits(s)
            } else {
                s.trim().to_lowercase()
            }
        };
        let wanted: Vec<String> = values
            .iter()
            .map(|v| norm(v))
            .filter(|v| !v.is_empty())
            .collect();
        let ids: Vec<i64> = self
            .leads
            .values()
            .filter(|l| {
                l.multi.get(&ty).is_some_and(|items| {
                    items.iter().any(|m| {
                        let n = norm(&m.value);
                        !n.is_empty() && wanted.contains(&n)
                    })
                })
            })
            .map(|l| l.id)
            .collect();
        if ids.is_empty() {
            // Real portals answer an empty ARRAY, not {"LEAD": []} (client libraries report it).
            Ok(RestOk::of(json!([])))
        } else {
            Ok(RestOk::of(json!({"LEAD": ids})))
        }
    }

    fn status_list(&self, p: &Map<String, Value>) -> RestOk {
        let empty = Map::new();
        let filter = p.get("filter").and_then(Value::as_object).unwrap_or(&empty);
        let mut rows: Vec<&Status> = self
            .statuses
            .iter()
            .filter(|s| {
                filter.iter().all(|(k, v)| {
                    let want = scalar_string(v);
                    match k.trim_start_matches('=') {
                        "ENTITY_ID" => s.entity_id == want,
                        "STATUS_ID" => s.status_id == want,
                        "ID" => s.id.to_string() == want,
                        _ => true,
                    }
                })
            })
            .collect();
        rows.sort_by_key(|s| (s.entity_id.clone(), s.sort, s.id));
        let result: Vec<Value> = rows
            .iter()
            .map(|s| {
                json!({"ID": s.id.to_string(), "ENTITY_ID": s.entity_id,
                       "STATUS_ID": s.status_id, "NAME": s.name, "NAME_INIT": if s.system { json!(s.name) } else { Value::Null },
                       "SORT": s.sort.to_string(), "SYSTEM": if s.system { "Y" } else { "N" },
                       "CATEGORY_ID": Value::Null, "COLOR": Value::Null,
                       "SEMANTICS": s.semantics})
            })
            .collect();
        let total = result.len() as u64;
        RestOk {
            result: Value::Array(result),
            next: None,
            total: Some(total),
        }
    }

    fn status_add(&mut self, p: &Map<String, Value>, admin: bool) -> Result<RestOk, RestError> {
        if !admin {
            return Err(RestError::access_denied());
        }
        let f = fields_param(p)?;
        let get = |k: &str| f.get(k).map(scalar_string).unwrap_or_default();
        let (entity, status_id, name) = (get("ENTITY_ID"), get("STATUS_ID"), get("NAME"));
        if entity.is_empty() || status_id.is_empty() || name.is_empty() {
            return Err(RestError::new(
                "ERROR_CORE",
                "Required fields: ENTITY_ID, STATUS_ID, NAME",
            ));
        }
        if self.find_status(&entity, &status_id).is_some() {
            return Err(RestError::new(
                "ERROR_CORE",
                format!("Status {status_id} already exists in {entity}"),
            ));
        }
        let sort = f.get("SORT").and_then(as_id).unwrap_or(500);
        let id = self.push_status(&entity, &status_id, &name, sort, false, None);
        Ok(RestOk::of(json!(id)))
    }

    fn user_field_list(&self) -> RestOk {
        let result: Vec<Value> = self
            .user_fields
            .iter()
            .map(|u| {
                json!({"ID": u.id.to_string(), "ENTITY_ID": "CRM_LEAD",
                       "FIELD_NAME": u.field_name, "USER_TYPE_ID": u.user_type_id,
                       "XML_ID": Value::Null, "SORT": "100", "MULTIPLE": "N",
                       "MANDATORY": "N", "SHOW_FILTER": "N", "SHOW_IN_LIST": "Y",
                       "EDIT_IN_LIST": "Y", "IS_SEARCHABLE": "N",
                       "EDIT_FORM_LABEL": u.label, "LIST_COLUMN_LABEL": u.label})
            })
            .collect();
        let total = result.len() as u64;
        RestOk {
            result: Value::Array(result),
            next: None,
            total: Some(total),
        }
    }

    /// Admin-only; `UF_CRM_` is prefixed automatically; the full name is `[A-Z0-9_]`, at most
    /// 50 characters.
    fn user_field_add(&mut self, p: &Map<String, Value>, admin: bool) -> Result<RestOk, RestError> {
        if !admin {
            return Err(RestError::access_denied());
        }
        let f = fields_param(p)?;
        let raw = f.get("FIELD_NAME").map(scalar_string).unwrap_or_default();
        let ty = f.get("USER_TYPE_ID").map(scalar_string).unwrap_or_default();
        if raw.is_empty() || ty.is_empty() {
            return Err(RestError::new(
                "ERROR_CORE",
                "Required fields: FIELD_NAME, USER_TYPE_ID",
            ));
        }
        if !USER_TYPES.contains(&ty.as_str()) {
            return Err(RestError::new(
                "ERROR_CORE",
                format!("Unknown user field type {ty}"),
            ));
        }
        let name = if raw.starts_with("UF_CRM_") {
            raw
        } else {
            format!("UF_CRM_{raw}")
        };
        let valid = name.len() > "UF_CRM_".len()
            && name.len() <= 50
            && name
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(RestError::new(
                "ERROR_CORE",
                "FIELD_NAME may hold only A-Z, 0-9 and _, at most 50 characters with the UF_CRM_ prefix",
            ));
        }
        if self.user_field(&name).is_some() {
            return Err(RestError::new(
                "ERROR_CORE",
                format!("User field {name} already exists"),
            ));
        }
        let label = match f.get("LABEL").or_else(|| f.get("EDIT_FORM_LABEL")) {
            Some(Value::Object(langs)) => langs
                .get("en")
                .or_else(|| langs.values().next())
                .map(scalar_string)
                .unwrap_or_default(),
            Some(v) => scalar_string(v),
            None => String::new(),
        };
        let label = if label.is_empty() {
            name.clone()
        } else {
            label
        };
        let id = self.push_user_field(&name, &ty, &label);
        Ok(RestOk::of(json!(id)))
    }

    fn comment_add(&mut self, p: &Map<String, Value>) -> Result<RestOk, RestError> {
        let f = fields_param(p)?;
        let entity_type = f.get("ENTITY_TYPE").map(scalar_string).unwrap_or_default();
        if !entity_type.eq_ignore_ascii_case("lead") {
            return Err(RestError::new(
                "ERROR_CORE",
                "ENTITY_TYPE must name a supported entity (lead)",
            ));
        }
        let lead_id = f
            .get("ENTITY_ID")
            .and_then(as_id)
            .ok_or_else(RestError::bad_id)?;
        if !self.leads.contains_key(&lead_id) {
            return Err(RestError::not_found());
        }
        let text = f.get("COMMENT").map(scalar_string).unwrap_or_default();
        if text.trim().is_empty() {
            return Err(RestError::new("ERROR_CORE", "COMMENT must not be empty"));
        }
        self.comments.push(Comment { lead_id, text });
        Ok(RestOk::of(json!(self.comments.len())))
    }
}

fn sort_of(i: usize) -> i64 {
    i64::try_from(i).map_or(i64::MAX, |i| (i + 1) * 10)
}

/// Drops the fields `select` does not ask for: empty or `*` = standard scalar fields;
/// `UF_*` = user fields; multifields only when named. `ID` is always kept.
fn select_fields(full: Value, select: &[String]) -> Value {
    let Value::Object(map) = full else {
        return full;
    };
    let all_std = select.is_empty() || select.iter().any(|s| s == "*");
    let all_uf = select.iter().any(|s| s == "UF_*");
    let kept = map
        .into_iter()
        .filter(|(k, _)| {
            k == "ID"
                || select.iter().any(|s| s == k)
                || (all_uf && k.starts_with("UF_"))
                || (all_std && !k.starts_with("UF_") && !MULTIFIELDS.iter().any(|m| m.0 == k))
        })
        .collect();
    Value::Object(kept)
}

fn split_op(key: &str) -> (&str, &str) {
    for op in [">=", "<=", "!=", "=", "!", "@", "%", ">", "<"] {
        if let Some(rest) = key.strip_prefix(op) {
            return (if op == "!=" { "!" } else { op }, rest);
        }
    }
    ("", key)
}

fn fields_param(p: &Map<String, Value>) -> Result<&Map<String, Value>, RestError> {
    p.get("fields")
        .or_else(|| p.get("FIELDS"))
        .and_then(Value::as_object)
        .ok_or_else(|| RestError::new("INVALID_ARG_VALUE", "Parameter 'fields' must be an object"))
}

fn id_param(p: &Map<String, Value>) -> Result<i64, RestError> {
    p.get("id")
        .or_else(|| p.get("ID"))
        .and_then(as_id)
        .filter(|id| *id > 0)
        .ok_or_else(RestError::bad_id)
}

/// An id given as a JSON number or a string of digits.
pub(crate) fn as_id(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Bitrix24 answers scalars as strings; this is the string a scalar is stored as.
fn scalar_string(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "Y" } else { "N" }.to_owned(),
        other => other.to_string(),
    }
}

fn is_blank(v: &Value) -> bool {
    scalar_string(v).trim().is_empty()
}

fn money(v: &Value) -> String {
    let s = scalar_string(v);
    s.trim()
        .parse::<f64>()
        .map_or(s.clone(), |f| format!("{f:.2}"))
}

fn uf_value(user_type: &str, v: &Value) -> Value {
    if v.is_null() || is_blank(v) {
        return Value::Null;
    }
    let s = scalar_string(v);
    match user_type {
        "double" => s.trim().parse::<f64>().map_or(Value::Null, |f| json!(f)),
        "integer" => s.trim().parse::<i64>().map_or(Value::Null, |i| json!(i)),
        _ => Value::String(s),
    }
}

fn digits(s: &str) -> String {
    let main = s.split('#').next().unwrap_or_default();
    main.chars().filter(char::is_ascii_digit).collect()
}

/// A datetime as Bitrix24 writes it (`2026-12-01T10:55:35+03:00`) or as a client may send
/// it (RFC 3339, fractional seconds allowed).
fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339).ok()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn now_string() -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]+00:00");
    time::OffsetDateTime::now_utc()
        .format(&fmt)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn portal() -> Portal {
        Portal::new(&SandboxConfig::default())
    }

    fn run(p: &mut Portal, method: &str, params: Value) -> Result<Value, RestError> {
        p.execute(method, &params, false).map(|ok| ok.result)
    }

    #[test]
    fn add_get_round_trip_with_string_ids_and_defaults() {
        let mut p = portal();
        let id = run(
            &mut p,
            "crm.lead.add",
            json!({"fields": {"TITLE": "T", "PHONE": [{"VALUE": "+1 555", "VALUE_TYPE": "WORK"}],
                             "UF_CRM_UNKNOWN": "x", "OPPORTUNITY": 12}}),
        )
        .unwrap();
        assert_eq!(id, json!(1));
        let lead = run(&mut p, "crm.lead.get", json!({"id": "1"})).unwrap();
        assert_eq!(lead["ID"], "1");
        assert_eq!(lead["STATUS_ID"], "NEW");
        assert_eq!(lead["OPPORTUNITY"], "12.00");
        assert_eq!(lead["HAS_PHONE"], "Y");
        assert_eq!(lead["PHONE"][0]["TYPE_ID"], "PHONE");
        assert!(lead.get("UF_CRM_UNKNOWN").is_none());
        assert!(lead.get("EMAIL").is_none());
    }

    #[test]
    fn bad_status_or_source_is_error_core() {
        let mut p = portal();
        for f in [
            json!({"STATUS_ID": "NOPE"}),
            json!({"SOURCE_ID": "TELEGRAM"}),
        ] {
            let e = run(&mut p, "crm.lead.add", json!({"fields": f})).unwrap_err();
            assert_eq!(e.code, "ERROR_CORE", "{f}");
        }
        assert!(p.leads.is_empty());
    }

    #[test]
    fn findbycomm_matches_digits_only() {
        let mut p = portal();
        p.seed_lead(&json!({"PHONE": [{"VALUE": "+998 90 123-45-67#12"}]}));
        let hit = |p: &mut Portal, v: &str| {
            run(
                p,
                "crm.duplicate.findbycomm",
                json!({"type": "PHONE", "values": [v], "entity_type": "LEAD"}),
            )
            .unwrap()
        };
        assert_eq!(hit(&mut p, "998901234567"), json!({"LEAD": [1]}));
        assert_eq!(hit(&mut p, "+998901234567"), json!({"LEAD": [1]}));
        assert_eq!(hit(&mut p, "901234567"), json!([]));
    }

    #[test]
    fn a_manager_edit_moves_date_modify_and_the_change_filter_finds_it() {
        let mut p = portal();
        let ours =
            p.seed_lead(&json!({"ORIGINATOR_ID": "teleagent", "ORIGIN_ID": "t:c1", "NAME": "Ann"}));
        let theirs = p.seed_lead(&json!({"NAME": "Bob"}));
        for lead in [ours, theirs] {
            p.leads
                .get_mut(&lead)
                .unwrap()
                .fields
                .insert("DATE_MODIFY".into(), json!("2026-01-01T10:00:00+03:00"));
        }
        let changed = |p: &mut Portal, since: &str| -> Vec<String> {
            let ok = p
                .execute(
                    "crm.lead.list",
                    &json!({"filter": {">=DATE_MODIFY": since, "ORIGINATOR_ID": "teleagent"},
                            "order": {"DATE_MODIFY": "ASC", "ID": "ASC"},
                            "select": ["ID", "NAME", "STATUS_ID", "ASSIGNED_BY_ID", "DATE_MODIFY"]}),
                    false,
                )
                .unwrap();
            ok.result
                .as_array()
                .unwrap()
                .iter()
                .map(|l| l["NAME"].as_str().unwrap_or_default().to_owned())
                .collect()
        };
        // 10:00 at +03:00 is 07:00 UTC: compared as instants, not as text.
        assert_eq!(
            changed(&mut p, "2026-01-01T07:00:00Z"),
            ["Ann"],
            "same instant, UTC"
        );
        assert!(
            changed(&mut p, "2026-01-01T07:00:01Z").is_empty(),
            "a second later"
        );
        let edited = p
            .manager_edit(
                ours,
                "7",
                &json!({"STATUS_ID": "JUNK", "NAME": "Anna", "ASSIGNED_BY_ID": 7}),
            )
            .unwrap();
        assert_eq!(edited["STATUS_ID"], "JUNK");
        assert_eq!(edited["ASSIGNED_BY_ID"], "7");
        assert_eq!(edited["MODIFY_BY_ID"], "7");
        assert_eq!(
            edited["STATUS_SEMANTIC_ID"], "F",
            "JUNK is a failure status"
        );
        assert_eq!(
            changed(&mut p, "2026-01-01T07:00:01Z"),
            ["Anna"],
            "DATE_MODIFY moved to now"
        );
        assert!(
            p.manager_edit(ours, "7", &json!({"STATUS_ID": "NOPE"}))
                .is_err(),
            "a status the portal does not have"
        );
        assert!(
            p.manager_edit(999, "7", &json!({"NAME": "x"})).is_err(),
            "no such lead"
        );
    }

    #[test]
    fn list_filters_and_pages() {
        let mut p = portal();
        for i in 0..120 {
            p.seed_lead(&json!({"ORIGIN_ID": format!("o{}", i % 2), "PHONE": [{"VALUE": format!("+1{i}")}]}));
        }
        let ok = p
            .execute(
                "crm.lead.list",
                &json!({"filter": {"ORIGIN_ID": "o1"}}),
                false,
            )
            .unwrap();
        assert_eq!(ok.total, Some(60));
        assert_eq!(ok.next, Some(50));
        assert_eq!(ok.result.as_array().unwrap().len(), 50);
        assert!(
            ok.result[0].get("PHONE").is_none(),
            "PHONE only when selected"
        );
        let ok = p
            .execute(
                "crm.lead.list",
                &json!({"filter": {"PHONE": "+15"}, "select": ["ID", "PHONE"]}),
                false,
            )
            .unwrap();
        assert_eq!(
            ok.result,
            json!([{"ID": "6", "PHONE": [{"ID": "6", "VALUE_TYPE": "WORK", "VALUE": "+15", "TYPE_ID": "PHONE"}]}])
        );
        let ok = p
            .execute(
                "crm.lead.list",
                &json!({"filter": {"ID": [3, "4"]}, "order": {"ID": "DESC"}}),
                false,
            )
            .unwrap();
        let ids: Vec<&str> = ok
            .result
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["ID"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["4", "3"]);
    }

    #[test]
    fn user_field_name_rules() {
        let mut p = portal();
        let add = |p: &mut Portal, name: &str| {
            p.execute(
                "crm.lead.userfield.add",
                &json!({"fields": {"FIELD_NAME": name, "USER_TYPE_ID": "string"}}),
                true,
            )
        };
        assert!(add(&mut p, "SCORE").is_ok());
        assert!(p.user_field("UF_CRM_SCORE").is_some());
        assert!(add(&mut p, "SCORE").is_err(), "duplicate");
        assert!(add(&mut p, "lower").is_err());
        assert!(
            add(&mut p, &"A".repeat(44)).is_err(),
            "51 characters with the prefix"
        );
        assert!(add(&mut p, &"A".repeat(43)).is_ok());
    }
}
