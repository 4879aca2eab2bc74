//! Corpus mode: the sandbox serves the `tools/list` catalogue of one real, public Bitrix24 MCP
//! server (`tests/fixtures/catalogues`, saved verbatim) and executes its lead tools the way THAT
//! server does: the same translation of arguments into Bitrix24 REST calls and the same answer
//! format, per the notes in `tests/fixtures/catalogues/README.md`. The REST calls themselves run
//! on the sandbox portal, so the Bitrix24 semantics (multifields, filters, statuses) are the
//! portal's. Tools of a catalogue that are not about leads answer a generic tool error in that
//! server's error format; unknown tool names answer as that server's MCP SDK does.
//!
//! Per server:
//! - `leosozza-bitrix24-mcp-server` (TS SDK 0.4, low-level `Server`): flat camelCase arguments;
//!   the REST body is form-encoded, so field values reach Bitrix24 as strings and a filter value
//!   is `String(v)` (an array of phone spellings becomes ONE comma-joined string and matches
//!   nothing); answers are `JSON.stringify(result, null, 2)`; every failure is a JSON-RPC error
//!   -32603 `Tool execution failed: ...` (a REST error is the client's `HTTP <status>: <text>`).
//! - `yzel-bitrix24` (Python, low-level server): `entity` + raw `fields`; the answer is the whole
//!   REST envelope as `json.dumps(indent=2)`; a Bitrix24 error is the plain text
//!   `Ошибка Bitrix24: <description>` WITHOUT `isError`.
//! - `aa-blinov-bitrix-mcp` (FastMCP): `fields`/`filter_params` are JSON strings; `get_leads`
//!   reads every page and cuts to `limit`; answers are JSON strings as text plus
//!   `structuredContent {"result": <the text>}`; failures are `{"success": false, "error": ..}`
//!   (compact Python JSON), never `isError`.
//! - `bit2beat-bitrix24-mcp` (TS SDK 1.29, `McpServer`): `entity` or `entity_type_id`, raw
//!   `fields`; `{entity, portal, created_id}`-style answers; `b24_call {method, params}` and
//!   `b24_crm_timeline_add` (ENTITY_TYPE `CRM_LEAD`, which the portal rejects like the
//!   documented API would); failures `isError` `Error: <msg>`.
//! - `kostikpenzin-mcp_b24` (TS, one tool transcribed): `bx24_crm_leads {action, ...}`; the
//!   bare REST result as pretty JSON; `list` reads every page; failures `isError` `Error: ...`.

use std::io;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::portal::{RestError, RestOk};
use super::tools::RestCall;

/// One corpus catalogue (serde name = the fixture's file stem).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Catalogue {
    #[serde(rename = "leosozza-bitrix24-mcp-server", alias = "leosozza")]
    Leosozza,
    #[serde(rename = "yzel-bitrix24", alias = "yzel")]
    Yzel,
    #[serde(rename = "aa-blinov-bitrix-mcp", alias = "aa-blinov")]
    AaBlinov,
    #[serde(rename = "bit2beat-bitrix24-mcp", alias = "bit2beat")]
    Bit2beat,
    #[serde(rename = "kostikpenzin-mcp_b24", alias = "kostikpenzin")]
    Kostikpenzin,
}

/// The MCP SDK behind a server: decides how an unknown tool name is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sdk {
    /// Python (`mcp.server`, FastMCP): an `isError` result `Unknown tool: <name>`.
    Python,
    /// TypeScript low-level `Server` whose handler wraps every throw in an InternalError.
    TsLowLevel,
    /// TypeScript `McpServer`: JSON-RPC -32602 `MCP error -32602: Tool <name> not found`.
    TsMcpServer,
}

/// The host name servers that report their portal (bit2beat) put in answers.
const PORTAL_HOST: &str = "b24-sandbox.bitrix24.com";
/// Pages an all-pages client reads at most (50 leads each).
pub(crate) const MAX_PAGES: usize = 200;

impl Catalogue {
    pub const ALL: [Catalogue; 5] = [
        Catalogue::Leosozza,
        Catalogue::Yzel,
        Catalogue::AaBlinov,
        Catalogue::Bit2beat,
        Catalogue::Kostikpenzin,
    ];

    /// The fixture's file stem, which is also the serde name.
    pub fn name(self) -> &'static str {
        match self {
            Catalogue::Leosozza => "leosozza-bitrix24-mcp-server",
            Catalogue::Yzel => "yzel-bitrix24",
            Catalogue::AaBlinov => "aa-blinov-bitrix-mcp",
            Catalogue::Bit2beat => "bit2beat-bitrix24-mcp",
            Catalogue::Kostikpenzin => "kostikpenzin-mcp_b24",
        }
    }

    /// By file stem or short name (`yzel`, `aa-blinov`, ...).
    pub fn parse(s: &str) -> Option<Catalogue> {
        serde_json::from_value(Value::String(s.trim().to_owned())).ok()
    }

    fn fixture_text(self) -> &'static str {
        match self {
            Catalogue::Leosozza => {
                include_str!("../../fixtures/catalogues/leosozza-bitrix24-mcp-server.json")
            }
            Catalogue::Yzel => include_str!("../../fixtures/catalogues/yzel-bitrix24.json"),
            Catalogue::AaBlinov => {
                include_str!("../../fixtures/catalogues/aa-blinov-bitrix-mcp.json")
            }
            Catalogue::Bit2beat => {
                include_str!("../../fixtures/catalogues/bit2beat-bitrix24-mcp.json")
            }
            Catalogue::Kostikpenzin => {
                include_str!("../../fixtures/catalogues/partial/kostikpenzin-mcp_b24.json")
            }
        }
    }

    /// The whole fixture, parsed once (`Null` if it is not JSON: the unit tests catch that).
    fn fixture(self) -> &'static Value {
        static CACHE: [OnceLock<Value>; 5] = [const { OnceLock::new() }; 5];
        let i = Catalogue::ALL.iter().position(|c| *c == self).unwrap_or(0);
        CACHE[i].get_or_init(|| serde_json::from_str(self.fixture_text()).unwrap_or(Value::Null))
    }

    /// The fixture's `tools` array, verbatim.
    pub fn tools(self) -> Vec<Value> {
        self.fixture()["tools"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The `serverInfo` the server answered `initialize` with (not in the partial fixture).
    pub(crate) fn server_info(self) -> Option<Value> {
        let info = &self.fixture()["serverInfo"];
        info.get("name").map(|name| {
            json!({"name": name, "version": info.get("version").cloned().unwrap_or(json!("0"))})
        })
    }

    fn sdk(self) -> Sdk {
        match self {
            Catalogue::Yzel | Catalogue::AaBlinov => Sdk::Python,
            Catalogue::Leosozza => Sdk::TsLowLevel,
            Catalogue::Bit2beat | Catalogue::Kostikpenzin => Sdk::TsMcpServer,
        }
    }

    pub(crate) fn is_known(self, name: &str) -> bool {
        self.fixture()["tools"]
            .as_array()
            .is_some_and(|t| t.iter().any(|t| t["name"] == name))
    }
}

/// What a known tool call turns into before any REST method runs.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Plan {
    pub call: RestCall,
    /// Read every page (`start` = 0, 50, ...) and concatenate them, as `get_all`-style clients do.
    pub all_pages: bool,
}

/// Why a tool call produced no REST result.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Failure {
    /// Bitrix24 answered an error.
    Rest(RestError),
    /// The server itself refused before calling Bitrix24 (bad argument, tool not emulated).
    Local(String),
}

impl From<RestError> for Failure {
    fn from(e: RestError) -> Self {
        Failure::Rest(e)
    }
}

/// How a `tools/call` is answered.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Answer {
    /// A `tools/call` result object.
    Result(Value),
    /// A JSON-RPC error.
    RpcError { code: i64, message: String },
}

/// The answer to a tool name the catalogue does not have, as the server's SDK gives it.
pub(crate) fn unknown_tool(c: Catalogue, name: &str) -> Answer {
    match c.sdk() {
        Sdk::Python => Answer::Result(
            json!({"content": [{"type": "text", "text": format!("Unknown tool: {name}")}], "isError": true}),
        ),
        Sdk::TsLowLevel => Answer::RpcError {
            code: -32603,
            message: format!("MCP error -32603: Tool execution failed: Unknown tool: {name}"),
        },
        Sdk::TsMcpServer => Answer::RpcError {
            code: -32602,
            message: format!("MCP error -32602: Tool {name} not found"),
        },
    }
}

fn plan(method: &str, params: Value) -> Result<Plan, Failure> {
    Ok(Plan {
        call: RestCall {
            method: method.to_owned(),
            params,
        },
        all_pages: false,
    })
}

fn all_pages(method: &str, params: Value) -> Result<Plan, Failure> {
    plan(method, params).map(|p| Plan {
        all_pages: true,
        ..p
    })
}

fn not_emulated(name: &str) -> Failure {
    Failure::Local(format!(
        "tool {name} is not emulated by the Bitrix24 sandbox (only its lead tools are)"
    ))
}

fn arg<'a>(args: &'a Value, key: &str) -> Option<&'a Value> {
    args.get(key).filter(|v| !v.is_null())
}

/// JavaScript truthiness.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// JavaScript `String(v)`.
fn js_string(v: &Value) -> String {
    match v {
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 && !n.is_i64() && !n.is_u64() => {
                format!("{f:.0}")
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                if x.is_null() {
                    String::new()
                } else {
                    js_string(x)
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        Value::Object(_) => "[object Object]".to_owned(),
    }
}

/// What Bitrix24 receives from leosozza's form encoding, as JSON: `fields[K]=String(v)`
/// (arrays of objects item by item), `filter[K]`/`order[K]` = `String(v)`, other objects as
/// one JSON string, scalars as strings; null/undefined left out.
fn leosozza_form(params: &Map<String, Value>) -> Value {
    let mut out = Map::new();
    for (key, value) in params {
        match (key.as_str(), value) {
            (_, Value::Null) => {}
            ("fields", Value::Object(fields)) => {
                let mut f = Map::new();
                for (k, v) in fields {
                    let sent = match v {
                        Value::Null => continue,
                        Value::Array(items) => Value::Array(
                            items
                                .iter()
                                .map(|item| match item {
                                    Value::Object(o) => Value::Object(
                                        o.iter()
                                            .map(|(sk, sv)| (sk.clone(), json!(js_string(sv))))
                                            .collect(),
                                    ),
                                    other => json!(js_string(other)),
                                })
                                .collect(),
                        ),
                        Value::Object(o) => Value::Object(
                            o.iter()
                                .map(|(sk, sv)| (sk.clone(), json!(js_string(sv))))
                                .collect(),
                        ),
                        other => json!(js_string(other)),
                    };
                    f.insert(k.clone(), sent);
                }
                out.insert(key.clone(), Value::Object(f));
            }
            ("filter" | "order", Value::Object(o)) => {
                let m: Map<String, Value> = o
                    .iter()
                    .map(|(k, v)| (k.clone(), json!(js_string(v))))
                    .collect();
                out.insert(key.clone(), Value::Object(m));
            }
            (_, v @ (Value::Object(_) | Value::Array(_))) => {
                out.insert(key.clone(), json!(v.to_string()));
            }
            (_, v) => {
                out.insert(key.clone(), json!(js_string(v)));
            }
        }
    }
    Value::Object(out)
}

/// leosozza's flat lead arguments as Bitrix24 fields; `update` keeps only truthy ones.
fn leosozza_lead_fields(args: &Value, update: bool) -> Map<String, Value> {
    let keep = |v: &Value| if update { truthy(v) } else { !v.is_null() };
    let mut f = Map::new();
    for (flat, field) in [
        ("title", "TITLE"),
        ("name", "NAME"),
        ("lastName", "LAST_NAME"),
        ("company", "COMPANY_TITLE"),
        ("sourceId", "SOURCE_ID"),
        ("statusId", "STATUS_ID"),
        ("opportunity", "OPPORTUNITY"),
        ("comments", "COMMENTS"),
    ] {
        if let Some(v) = args.get(flat).filter(|v| keep(v)) {
            f.insert(field.to_owned(), v.clone());
        }
    }
    for (flat, field) in [("phone", "PHONE"), ("email", "EMAIL")] {
        if let Some(v) = args.get(flat).filter(|v| keep(v)) {
            f.insert(
                field.to_owned(),
                json!([{"VALUE": v, "VALUE_TYPE": "WORK"}]),
            );
        }
    }
    if update {
        if let Some(v) = args.get("currency").filter(|v| truthy(v)) {
            f.insert("CURRENCY_ID".to_owned(), v.clone());
        }
    } else {
        let cur = args
            .get("currency")
            .filter(|v| truthy(v))
            .cloned()
            .unwrap_or(json!("EUR"));
        f.insert("CURRENCY_ID".to_owned(), cur);
    }
    f
}

/// A leosozza REST call, form-encoded on the way.
fn leosozza_plan(method: &str, params: Value) -> Result<Plan, Failure> {
    let p = params.as_object().cloned().unwrap_or_default();
    plan(method, leosozza_form(&p))
}

/// The REST entity a yzel/bit2beat `entity` names.
fn crm_entity(entity: &str) -> Option<String> {
    let e = entity.trim().to_ascii_lowercase();
    match e.as_str() {
        "deal" | "contact" | "company" | "lead" | "quote" | "invoice" => Some(format!("crm.{e}")),
        "order" => Some("sale.order".to_owned()),
        _ => None,
    }
}

/// bit2beat's entity resolution: `entity_type_id` wins (`crm.item.*`), else `entity`.
/// Returns the method prefix and the extra params (`entityTypeId`).
fn bit2beat_entity(args: &Value) -> Result<(String, Map<String, Value>), Failure> {
    if let Some(id) = arg(args, "entity_type_id") {
        let mut extra = Map::new();
        extra.insert("entityTypeId".to_owned(), id.clone());
        return Ok(("crm.item".to_owned(), extra));
    }
    let entity = arg(args, "entity").map(js_string);
    entity
        .as_deref()
        .and_then(crm_entity)
        .map(|p| (p, Map::new()))
        .ok_or_else(|| {
            Failure::Local(format!(
                "Неизвестная сущность: {}",
                entity.as_deref().unwrap_or("undefined")
            ))
        })
}

/// Parses an aa-blinov JSON-string argument (`""` = absent); a non-string is FastMCP's
/// argument validation error.
fn json_string_arg(tool: &str, args: &Value, key: &str) -> Result<Option<Value>, Failure> {
    match args.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => serde_json::from_str(s)
            .map(Some)
            .map_err(|e| Failure::Local(format!("Invalid JSON in {key}: {e}"))),
        Some(_) => Err(Failure::Local(format!(
            "Error executing tool {tool}: 1 validation error for {tool}Arguments\n{key}\n  Input should be a valid string"
        ))),
    }
}

fn required<'a>(args: &'a Value, key: &str) -> Result<&'a Value, Failure> {
    arg(args, key).ok_or_else(|| Failure::Local(format!("'{key}' param required")))
}

/// The REST call(s) behind a call of a tool the catalogue has.
pub(crate) fn resolve(c: Catalogue, name: &str, args: &Value) -> Result<Plan, Failure> {
    match c {
        Catalogue::Leosozza => resolve_leosozza(name, args),
        Catalogue::Yzel => resolve_yzel(name, args),
        Catalogue::AaBlinov => resolve_aa_blinov(name, args),
        Catalogue::Bit2beat => resolve_bit2beat(name, args),
        Catalogue::Kostikpenzin => resolve_kostikpenzin(name, args),
    }
}

fn resolve_leosozza(name: &str, args: &Value) -> Result<Plan, Failure> {
    let id = || arg(args, "id").cloned().unwrap_or(Value::Null);
    match name {
        "bitrix24_create_lead" => leosozza_plan(
            "crm.lead.add",
            json!({"fields": leosozza_lead_fields(args, false)}),
        ),
        "bitrix24_update_lead" => leosozza_plan(
            "crm.lead.update",
            json!({"id": id(), "fields": leosozza_lead_fields(args, true)}),
        ),
        "bitrix24_get_lead" => leosozza_plan("crm.lead.get", json!({"id": id()})),
        "bitrix24_list_leads" => {
            let by = arg(args, "orderBy").map_or("DATE_CREATE".to_owned(), js_string);
            let dir = arg(args, "orderDirection").map_or("DESC".to_owned(), js_string);
            let mut order = Map::new();
            order.insert(by, json!(dir));
            leosozza_plan(
                "crm.lead.list",
                json!({"start": 0, "filter": arg(args, "filter"), "order": order, "select": ["*"]}),
            )
        }
        "bitrix24_get_latest_leads" => leosozza_plan(
            "crm.lead.list",
            json!({"start": 0, "order": {"DATE_CREATE": "DESC"}, "select": ["*"]}),
        ),
        "bitrix24_get_leads_from_date_range" => {
            let mut filter = Map::new();
            filter.insert(
                ">=DATE_CREATE".to_owned(),
                arg(args, "startDate").cloned().unwrap_or(Value::Null),
            );
            if let Some(end) = arg(args, "endDate").filter(|v| truthy(v)) {
                filter.insert("<=DATE_CREATE".to_owned(), end.clone());
            }
            leosozza_plan(
                "crm.lead.list",
                json!({"start": 0, "select": ["*"], "filter": filter}),
            )
        }
        _ => Err(not_emulated(name)),
    }
}

fn resolve_yzel(name: &str, args: &Value) -> Result<Plan, Failure> {
    let entity = || -> Result<String, Failure> {
        let e = required(args, "entity")?;
        Ok(format!("crm.{}", js_string(e)))
    };
    match name {
        "bitrix24_crm_create" => {
            let fields = required(args, "fields")?.clone();
            plan(&format!("{}.add", entity()?), json!({"fields": fields}))
        }
        "bitrix24_crm_update" => {
            let method = format!("{}.update", entity()?);
            let id = required(args, "id")?.clone();
            let fields = required(args, "fields")?.clone();
            plan(&method, json!({"ID": id, "fields": fields}))
        }
        "bitrix24_crm_get" => {
            let method = format!("{}.get", entity()?);
            plan(&method, json!({"ID": required(args, "id")?}))
        }
        "bitrix24_crm_list" => {
            let method = format!("{}.list", entity()?);
            let mut p = Map::new();
            p.insert(
                "start".to_owned(),
                arg(args, "start").cloned().unwrap_or(json!(0)),
            );
            for key in ["select", "filter", "order"] {
                // Python truthiness: empty lists and dicts are left out.
                if let Some(v) = arg(args, key).filter(|v| {
                    !matches!(v, Value::Array(a) if a.is_empty())
                        && !matches!(v, Value::Object(o) if o.is_empty())
                }) {
                    p.insert(key.to_owned(), v.clone());
                }
            }
            plan(&method, Value::Object(p))
        }
        _ => Err(not_emulated(name)),
    }
}

fn resolve_aa_blinov(name: &str, args: &Value) -> Result<Plan, Failure> {
    let id_string = |key: &str| -> Result<Value, Failure> {
        match args.get(key) {
            Some(Value::String(s)) => Ok(json!(s)),
            _ => Err(Failure::Local(format!(
                "Error executing tool {name}: 1 validation error for {name}Arguments\n{key}\n  Input should be a valid string"
            ))),
        }
    };
    match name {
        "create_lead" => {
            let fields = json_string_arg(name, args, "fields")?.ok_or_else(|| {
                Failure::Local("Expecting value: line 1 column 1 (char 0)".into())
            })?;
            plan("crm.lead.add", json!({"fields": fields}))
        }
        "update_lead" => {
            let id = id_string("lead_id")?;
            let fields = json_string_arg(name, args, "fields")?.ok_or_else(|| {
                Failure::Local("Expecting value: line 1 column 1 (char 0)".into())
            })?;
            plan("crm.lead.update", json!({"id": id, "fields": fields}))
        }
        "get_lead" => plan("crm.lead.get", json!({"id": id_string("lead_id")?})),
        "get_leads" => {
            let mut p = Map::new();
            if let Some(f) = json_string_arg(name, args, "filter_params")? {
                p.insert("filter".to_owned(), f);
            }
            if let Some(Value::String(s)) = args.get("select_fields")
                && !s.is_empty()
            {
                let select: Vec<Value> = s.split(',').map(|x| json!(x)).collect();
                p.insert("select".to_owned(), Value::Array(select));
            }
            all_pages("crm.lead.list", Value::Object(p))
        }
        "get_lead_fields" => plan("crm.lead.fields", json!({})),
        _ => Err(not_emulated(name)),
    }
}

fn resolve_bit2beat(name: &str, args: &Value) -> Result<Plan, Failure> {
    match name {
        "b24_crm_create" => {
            let (prefix, extra) = bit2beat_entity(args)?;
            let mut fields = required(args, "fields")?
                .as_object()
                .cloned()
                .unwrap_or_default();
            fields.extend(extra);
            let mut p = Map::new();
            p.insert("fields".to_owned(), Value::Object(fields));
            if let Some(params) = arg(args, "params") {
                p.insert("params".to_owned(), params.clone());
            }
            plan(&format!("{prefix}.add"), Value::Object(p))
        }
        "b24_crm_update" => {
            let (prefix, extra) = bit2beat_entity(args)?;
            let mut p = Map::new();
            p.insert("id".to_owned(), required(args, "id")?.clone());
            p.insert("fields".to_owned(), required(args, "fields")?.clone());
            if let Some(params) = arg(args, "params") {
                p.insert("params".to_owned(), params.clone());
            }
            p.extend(extra);
            plan(&format!("{prefix}.update"), Value::Object(p))
        }
        "b24_crm_get" => {
            let (prefix, extra) = bit2beat_entity(args)?;
            let mut p = Map::new();
            p.insert("id".to_owned(), required(args, "id")?.clone());
            p.extend(extra);
            plan(&format!("{prefix}.get"), Value::Object(p))
        }
        "b24_crm_list" => {
            let (prefix, extra) = bit2beat_entity(args)?;
            let mut p = Map::new();
            p.insert(
                "filter".to_owned(),
                arg(args, "filter").cloned().unwrap_or(json!({})),
            );
            p.extend(extra);
            for key in ["select", "order"] {
                if let Some(v) = arg(args, key) {
                    p.insert(key.to_owned(), v.clone());
                }
            }
            let every = arg(args, "all_pages").is_some_and(truthy);
            let method = format!("{prefix}.list");
            if every {
                all_pages(&method, Value::Object(p))
            } else {
                plan(&method, Value::Object(p))
            }
        }
        "b24_crm_delete" => {
            let (prefix, extra) = bit2beat_entity(args)?;
            let mut p = Map::new();
            p.insert("id".to_owned(), required(args, "id")?.clone());
            p.extend(extra);
            plan(&format!("{prefix}.delete"), Value::Object(p))
        }
        "b24_crm_fields" => {
            let (prefix, extra) = bit2beat_entity(args)?;
            plan(&format!("{prefix}.fields"), Value::Object(extra))
        }
        "b24_crm_timeline_add" => {
            let entity = js_string(required(args, "entity")?);
            let entity_type = match entity.to_ascii_lowercase().as_str() {
                "lead" => "CRM_LEAD".to_owned(),
                "deal" => "CRM_DEAL".to_owned(),
                "contact" => "CRM_CONTACT".to_owned(),
                "company" => "CRM_COMPANY".to_owned(),
                _ => entity.to_ascii_uppercase(),
            };
            plan(
                "crm.timeline.comment.add",
                json!({"fields": {"ENTITY_ID": required(args, "entity_id")?,
                                  "ENTITY_TYPE": entity_type,
                                  "COMMENT": arg(args, "comment").cloned().unwrap_or(Value::Null)}}),
            )
        }
        "b24_call" => {
            let method = js_string(required(args, "method")?);
            let params = arg(args, "params").cloned().unwrap_or(json!({}));
            plan(&method, params)
        }
        "b24_batch" => {
            let mut cmd = Map::new();
            if let Some(Value::Object(calls)) = arg(args, "calls") {
                for (alias, c) in calls {
                    cmd.insert(alias.clone(), c.clone());
                }
            }
            plan("batch", json!({"cmd": cmd, "halt": 0}))
        }
        _ => Err(not_emulated(name)),
    }
}

fn resolve_kostikpenzin(name: &str, args: &Value) -> Result<Plan, Failure> {
    if name != "bx24_crm_leads" {
        return Err(not_emulated(name));
    }
    let action = arg(args, "action").map(js_string).unwrap_or_default();
    let pick = |keys: &[&str]| -> Value {
        let mut p = Map::new();
        for k in keys {
            if let Some(v) = arg(args, k) {
                p.insert((*k).to_owned(), v.clone());
            }
        }
        Value::Object(p)
    };
    match action.as_str() {
        "add" => {
            required(args, "fields")?;
            plan("crm.lead.add", pick(&["fields"]))
        }
        "get" => {
            required(args, "id")?;
            plan("crm.lead.get", pick(&["id"]))
        }
        "list" => all_pages(
            "crm.lead.list",
            pick(&["filter", "select", "order", "start"]),
        ),
        "update" => {
            required(args, "id")?;
            required(args, "fields")?;
            plan("crm.lead.update", pick(&["id", "fields"]))
        }
        "delete" => {
            required(args, "id")?;
            plan("crm.lead.delete", pick(&["id"]))
        }
        "fields" => plan("crm.lead.fields", json!({})),
        "" => Err(Failure::Local("'action' param required".to_owned())),
        other => Err(Failure::Local(format!(
            "action {other} of bx24_crm_leads is not emulated by the Bitrix24 sandbox"
        ))),
    }
}

// ---- answers ---------------------------------------------------------------------------------

/// `JSON.stringify(v, null, 2)` / `json.dumps(v, indent=2, ensure_ascii=False)`: the same layout
/// (object keys come out sorted here, where the servers keep insertion order; JSON readers
/// cannot tell).
fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// `json.dumps(v, ensure_ascii=False)`: Python's compact form, `", "` and `": "` separators.
fn py_compact(v: &Value) -> String {
    struct Py;
    impl serde_json::ser::Formatter for Py {
        fn begin_array_value<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_key<W: ?Sized + io::Write>(
            &mut self,
            w: &mut W,
            first: bool,
        ) -> io::Result<()> {
            if first { Ok(()) } else { w.write_all(b", ") }
        }
        fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
            w.write_all(b": ")
        }
    }
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Py);
    if v.serialize(&mut ser).is_err() {
        return String::new();
    }
    String::from_utf8(out).unwrap_or_default()
}

fn text(t: String) -> Value {
    json!({"content": [{"type": "text", "text": t}]})
}

/// Python servers send `isError: false` on success too.
fn py_text(t: String) -> Value {
    json!({"content": [{"type": "text", "text": t}], "isError": false})
}

fn error_text(t: String) -> Value {
    json!({"content": [{"type": "text", "text": t}], "isError": true})
}

/// FastMCP's answer for a tool returning `str` with an output schema `{result: string}`.
fn fastmcp(t: String) -> Value {
    json!({"content": [{"type": "text", "text": t}], "structuredContent": {"result": t}, "isError": false})
}

/// The status line a Bitrix24 REST error comes with, as `fetch`-based clients report it.
fn http_status_text(e: &RestError) -> &'static str {
    match e.code.as_str() {
        "ERROR_METHOD_NOT_FOUND" => "HTTP 404: Not Found",
        "ACCESS_DENIED" | "insufficient_scope" => "HTTP 403: Forbidden",
        "QUERY_LIMIT_EXCEEDED" => "HTTP 503: Service Unavailable",
        _ => "HTTP 400: Bad Request",
    }
}

/// The `tools/call` answer of a known tool for the REST outcome (or the local failure).
pub(crate) fn answer(
    c: Catalogue,
    name: &str,
    args: &Value,
    outcome: Result<RestOk, Failure>,
) -> Answer {
    match c {
        Catalogue::Leosozza => answer_leosozza(name, args, outcome),
        Catalogue::Yzel => Answer::Result(match outcome {
            Ok(ok) => py_text(pretty(&super::mcp::envelope(ok))),
            Err(Failure::Rest(e)) => py_text(format!("Ошибка Bitrix24: {}", e.description)),
            Err(Failure::Local(m)) => error_text(m),
        }),
        Catalogue::AaBlinov => Answer::Result(answer_aa_blinov(name, args, outcome)),
        Catalogue::Bit2beat => Answer::Result(answer_bit2beat(name, args, outcome)),
        Catalogue::Kostikpenzin => Answer::Result(match outcome {
            Ok(ok) => text(match ok.result {
                Value::String(s) => s,
                other => pretty(&other),
            }),
            Err(Failure::Rest(e)) => error_text(format!("Error: {}", e.description)),
            Err(Failure::Local(m)) => error_text(format!("Error: {m}")),
        }),
    }
}

fn limit_of(args: &Value, default: usize) -> usize {
    arg(args, "limit")
        .and_then(Value::as_f64)
        .filter(|f| f.is_finite() && *f >= 0.0)
        .map_or(default, |f| f as usize)
}

fn answer_leosozza(name: &str, args: &Value, outcome: Result<RestOk, Failure>) -> Answer {
    let ok = match outcome {
        Ok(ok) => ok,
        Err(f) => {
            let msg = match f {
                Failure::Rest(e) => http_status_text(&e).to_owned(),
                Failure::Local(m) => m,
            };
            return Answer::RpcError {
                code: -32603,
                message: format!("MCP error -32603: Tool execution failed: {msg}"),
            };
        }
    };
    let id = arg(args, "id").map(js_string).unwrap_or_default();
    let rows = |v: Value, limit: usize| -> Value {
        match v {
            Value::Array(mut a) => {
                a.truncate(limit);
                Value::Array(a)
            }
            other => other,
        }
    };
    let result = match name {
        "bitrix24_create_lead" => {
            let lead_id = js_string(&ok.result);
            json!({"success": true, "leadId": lead_id, "message": format!("Lead created with ID: {lead_id}")})
        }
        "bitrix24_update_lead" => json!({"success": true, "updated": ok.result == json!(true),
                                         "message": format!("Lead {id} updated successfully")}),
        "bitrix24_get_lead" => json!({"success": true, "lead": ok.result}),
        "bitrix24_list_leads" | "bitrix24_get_latest_leads" => {
            json!({"success": true, "leads": rows(ok.result, limit_of(args, 20))})
        }
        "bitrix24_get_leads_from_date_range" => {
            let mut leads = match ok.result {
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            leads.sort_by(|a, b| {
                let d = |l: &Value| l["DATE_CREATE"].as_str().unwrap_or("").to_owned();
                d(b).cmp(&d(a))
            });
            json!({"success": true, "leads": rows(Value::Array(leads), limit_of(args, 50))})
        }
        _ => ok.result,
    };
    Answer::Result(text(pretty(&result)))
}

fn answer_aa_blinov(name: &str, args: &Value, outcome: Result<RestOk, Failure>) -> Value {
    let lead_id = arg(args, "lead_id").map(js_string).unwrap_or_default();
    // Written out so the keys keep Python's order (serde_json's map sorts them).
    let fail = |m: String| {
        fastmcp(format!(
            "{{\"success\": false, \"error\": {}}}",
            py_compact(&json!(m))
        ))
    };
    let ok = match outcome {
        Ok(ok) => ok,
        // A FastMCP argument validation error is an isError result, raised before the tool runs.
        Err(Failure::Local(m)) if m.starts_with("Error executing tool") => return error_text(m),
        Err(Failure::Local(m)) => return fail(m),
        Err(Failure::Rest(e)) if name == "get_lead" && e.code == "NOT_FOUND" => {
            return fail(format!("Lead with ID {lead_id} not found"));
        }
        Err(Failure::Rest(e)) => return fail(e.description),
    };
    let result = match name {
        "create_lead" => {
            json!({"success": true, "lead_id": ok.result, "message": "Lead created successfully"})
        }
        "update_lead" => {
            let success = ok.result == json!(true);
            json!({"success": success, "lead_id": lead_id,
                   "message": if success { "Lead updated successfully" } else { "Failed to update lead" }})
        }
        "get_lead" => json!({"success": true, "lead": ok.result}),
        "get_leads" => {
            let mut leads = match ok.result {
                Value::Array(a) => a,
                _ => Vec::new(),
            };
            let limit = arg(args, "limit").and_then(Value::as_i64).unwrap_or(50);
            if limit > 0 {
                leads.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
            }
            json!({"success": true, "count": leads.len(), "leads": leads})
        }
        "get_lead_fields" => json!({"success": true, "fields": ok.result}),
        _ => ok.result,
    };
    fastmcp(pretty(&result))
}

fn answer_bit2beat(name: &str, args: &Value, outcome: Result<RestOk, Failure>) -> Value {
    let ok = match outcome {
        Ok(ok) => ok,
        Err(Failure::Rest(e)) => return error_text(format!("Error: {}", e.description)),
        Err(Failure::Local(m)) => return error_text(format!("Error: {m}")),
    };
    let entity = arg(args, "entity_type_id")
        .or_else(|| arg(args, "entity"))
        .cloned()
        .unwrap_or(Value::Null);
    let id = arg(args, "id").cloned().unwrap_or(Value::Null);
    let result = match name {
        "b24_crm_create" => {
            let created = ok.result.pointer("/item/id").cloned().unwrap_or(ok.result);
            json!({"entity": entity, "portal": PORTAL_HOST, "created_id": created})
        }
        "b24_crm_update" => {
            json!({"entity": entity, "portal": PORTAL_HOST, "updated_id": id, "success": true})
        }
        "b24_crm_get" => {
            let item = ok.result.get("item").cloned().unwrap_or(ok.result);
            json!({"entity": entity, "portal": PORTAL_HOST, "item": item})
        }
        "b24_crm_list" => {
            let items = match ok.result {
                Value::Object(mut o) if o.contains_key("items") => {
                    o.remove("items").unwrap_or(json!([]))
                }
                other => other,
            };
            let count = items.as_array().map_or(0, Vec::len);
            json!({"entity": entity, "portal": PORTAL_HOST, "count": count, "items": items})
        }
        "b24_crm_delete" => {
            json!({"entity": entity, "portal": PORTAL_HOST, "deleted_id": id, "success": true})
        }
        "b24_crm_fields" => {
            let fields: Vec<Value> = ok
                .result
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(code, meta)| {
                            let mut m = Map::new();
                            m.insert("code".to_owned(), json!(code));
                            if let Value::Object(meta) = meta {
                                m.extend(meta.clone());
                            }
                            Value::Object(m)
                        })
                        .collect()
                })
                .unwrap_or_default();
            json!({"entity": entity, "portal": PORTAL_HOST, "total_fields": fields.len(), "fields": fields})
        }
        "b24_crm_timeline_add" => json!({"portal": PORTAL_HOST, "entity": entity,
            "entity_id": arg(args, "entity_id").cloned().unwrap_or(Value::Null),
            "comment_id": ok.result, "success": true}),
        "b24_call" => {
            let mut m = Map::new();
            m.insert(
                "method".to_owned(),
                arg(args, "method").cloned().unwrap_or(Value::Null),
            );
            m.insert("portal".to_owned(), json!(PORTAL_HOST));
            m.insert("result".to_owned(), ok.result);
            if let Some(t) = ok.total {
                m.insert("total".to_owned(), json!(t));
            }
            if let Some(n) = ok.next {
                m.insert("next".to_owned(), json!(n));
            }
            Value::Object(m)
        }
        _ => ok.result,
    };
    text(pretty(&result))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(c: Catalogue, name: &str, args: Value) -> (String, Value, bool) {
        let p = resolve(c, name, &args).unwrap();
        (p.call.method, p.call.params, p.all_pages)
    }

    fn result(a: Answer) -> Value {
        match a {
            Answer::Result(v) => v,
            Answer::RpcError { code, message } => panic!("rpc error {code} {message}"),
        }
    }

    fn text_of(a: Answer) -> String {
        result(a)["content"][0]["text"].as_str().unwrap().to_owned()
    }

    fn ok(v: Value) -> Result<RestOk, Failure> {
        Ok(RestOk {
            result: v,
            next: None,
            total: None,
        })
    }

    fn rest_err() -> Result<RestOk, Failure> {
        Err(Failure::Rest(RestError::new(
            "ERROR_CORE",
            "Field \"STATUS_ID\": value \"X\" is not in the STATUS list",
        )))
    }

    #[test]
    fn fixtures_parse_and_names_round_trip() {
        for c in Catalogue::ALL {
            assert!(!c.tools().is_empty(), "{c:?}");
            assert_eq!(Catalogue::parse(c.name()), Some(c));
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.name()));
            for t in c.tools() {
                assert!(c.is_known(t["name"].as_str().unwrap()));
            }
        }
        assert_eq!(Catalogue::parse("aa-blinov"), Some(Catalogue::AaBlinov));
        assert_eq!(Catalogue::parse("nope"), None);
        assert_eq!(Catalogue::Leosozza.tools().len(), 50);
        assert_eq!(
            Catalogue::Yzel.server_info().unwrap()["name"],
            "yzel-bitrix24"
        );
        assert!(Catalogue::Kostikpenzin.server_info().is_none());
    }

    #[test]
    fn unknown_tools_answer_as_each_sdk_does() {
        let py = result(unknown_tool(Catalogue::AaBlinov, "nope"));
        assert_eq!(py["isError"], true);
        assert_eq!(py["content"][0]["text"], "Unknown tool: nope");
        assert_eq!(
            unknown_tool(Catalogue::Bit2beat, "nope"),
            Answer::RpcError {
                code: -32602,
                message: "MCP error -32602: Tool nope not found".into()
            }
        );
        assert!(matches!(
            unknown_tool(Catalogue::Leosozza, "nope"),
            Answer::RpcError { code: -32603, .. }
        ));
    }

    #[test]
    fn leosozza_translates_flat_arguments_and_form_encodes() {
        let c = Catalogue::Leosozza;
        let (m, p, _) = resolved(
            c,
            "bitrix24_create_lead",
            json!({"title": "Telegram: Ann", "name": "Ann", "phone": "+998901234567",
                   "sourceId": "OTHER", "statusId": "IN_PROCESS", "comments": "c", "opportunity": 5}),
        );
        assert_eq!(m, "crm.lead.add");
        assert_eq!(
            p,
            json!({"fields": {"TITLE": "Telegram: Ann", "NAME": "Ann", "SOURCE_ID": "OTHER",
                "STATUS_ID": "IN_PROCESS", "OPPORTUNITY": "5", "COMMENTS": "c", "CURRENCY_ID": "EUR",
                "PHONE": [{"VALUE": "+998901234567", "VALUE_TYPE": "WORK"}]}})
        );
        // Update: only truthy arguments; a phone is a new item again.
        let (m, p, _) = resolved(
            c,
            "bitrix24_update_lead",
            json!({"id": "42", "statusId": "NEW", "name": ""}),
        );
        assert_eq!(m, "crm.lead.update");
        assert_eq!(p, json!({"id": "42", "fields": {"STATUS_ID": "NEW"}}));
        // The filter goes through String(v): an array of spellings becomes one string.
        let (_, p, all) = resolved(
            c,
            "bitrix24_list_leads",
            json!({"filter": {"PHONE": ["+998901234567", "998901234567"]}}),
        );
        assert!(!all);
        assert_eq!(
            p,
            json!({"start": "0", "filter": {"PHONE": "+998901234567,998901234567"},
                   "order": {"DATE_CREATE": "DESC"}, "select": "[\"*\"]"})
        );
        let a = text_of(answer(c, "bitrix24_create_lead", &json!({}), ok(json!(7))));
        assert_eq!(
            serde_json::from_str::<Value>(&a).unwrap(),
            json!({"success": true, "leadId": "7", "message": "Lead created with ID: 7"})
        );
        assert!(a.contains("\n  \"success\": true"), "pretty: {a}");
        let list = text_of(answer(
            c,
            "bitrix24_list_leads",
            &json!({"limit": 1}),
            ok(json!([{"ID": "1"}, {"ID": "2"}])),
        ));
        assert_eq!(
            serde_json::from_str::<Value>(&list).unwrap(),
            json!({"success": true, "leads": [{"ID": "1"}]})
        );
        assert_eq!(
            answer(c, "bitrix24_get_lead", &json!({"id": "9"}), rest_err()),
            Answer::RpcError {
                code: -32603,
                message: "MCP error -32603: Tool execution failed: HTTP 400: Bad Request".into()
            }
        );
        assert!(resolve(c, "bitrix24_create_deal", &json!({})).is_err());
    }

    #[test]
    fn yzel_sends_raw_fields_and_answers_the_envelope() {
        let c = Catalogue::Yzel;
        let (m, p, _) = resolved(
            c,
            "bitrix24_crm_update",
            json!({"entity": "lead", "id": 42, "fields": {"STATUS_ID": "NEW"}}),
        );
        assert_eq!(m, "crm.lead.update");
        assert_eq!(p, json!({"ID": 42, "fields": {"STATUS_ID": "NEW"}}));
        let (m, p, all) = resolved(
            c,
            "bitrix24_crm_list",
            json!({"entity": "lead", "filter": {"PHONE": ["+1"]}, "select": [], "order": {"ID": "ASC"}}),
        );
        assert_eq!((m.as_str(), all), ("crm.lead.list", false), "one page only");
        assert_eq!(
            p,
            json!({"start": 0, "filter": {"PHONE": ["+1"]}, "order": {"ID": "ASC"}})
        );
        let (m, p, _) = resolved(c, "bitrix24_crm_get", json!({"entity": "lead", "id": 3}));
        assert_eq!((m.as_str(), p), ("crm.lead.get", json!({"ID": 3})));
        let env: Value = serde_json::from_str(&text_of(answer(
            c,
            "bitrix24_crm_create",
            &json!({}),
            ok(json!(5)),
        )))
        .unwrap();
        assert_eq!(env["result"], 5);
        assert!(env["time"]["start"].is_number());
        let err = result(answer(c, "bitrix24_crm_update", &json!({}), rest_err()));
        assert_eq!(
            err["content"][0]["text"],
            "Ошибка Bitrix24: Field \"STATUS_ID\": value \"X\" is not in the STATUS list"
        );
        assert_eq!(err["isError"], false, "plain text, not isError");
        let missing = resolve(c, "bitrix24_crm_create", &json!({"entity": "lead"})).unwrap_err();
        assert!(
            result(answer(c, "bitrix24_crm_create", &json!({}), Err(missing)))["isError"] == true
        );
    }

    #[test]
    fn aa_blinov_parses_json_strings_and_answers_structured_text() {
        let c = Catalogue::AaBlinov;
        let (m, p, _) = resolved(
            c,
            "create_lead",
            json!({"fields": "{\"TITLE\":\"x\",\"ORIGIN_ID\":\"t:c\"}"}),
        );
        assert_eq!(m, "crm.lead.add");
        assert_eq!(p, json!({"fields": {"TITLE": "x", "ORIGIN_ID": "t:c"}}));
        let (m, p, all) = resolved(
            c,
            "get_leads",
            json!({"filter_params": "{\"PHONE\":[\"+1\",\"1\"]}", "select_fields": "ID,PHONE"}),
        );
        assert_eq!(m, "crm.lead.list");
        assert!(all, "get_all reads every page");
        assert_eq!(
            p,
            json!({"filter": {"PHONE": ["+1", "1"]}, "select": ["ID", "PHONE"]})
        );
        let (_, p, _) = resolved(
            c,
            "update_lead",
            json!({"lead_id": "42", "fields": "{\"NAME\":\"A\"}"}),
        );
        assert_eq!(p, json!({"id": "42", "fields": {"NAME": "A"}}));

        let r = result(answer(c, "create_lead", &json!({}), ok(json!(5))));
        let t = r["content"][0]["text"].as_str().unwrap();
        assert_eq!(r["structuredContent"]["result"], t);
        assert_eq!(r["isError"], false);
        assert_eq!(
            serde_json::from_str::<Value>(t).unwrap(),
            json!({"success": true, "lead_id": 5, "message": "Lead created successfully"})
        );
        let leads = result(answer(
            c,
            "get_leads",
            &json!({"limit": 2}),
            ok(json!([{"ID": "1"}, {"ID": "2"}, {"ID": "3"}])),
        ));
        let v: Value =
            serde_json::from_str(leads["structuredContent"]["result"].as_str().unwrap()).unwrap();
        assert_eq!(v["count"], 2);
        // A Bitrix24 error: a compact Python JSON text, not isError.
        let e = result(answer(
            c,
            "update_lead",
            &json!({"lead_id": "4"}),
            rest_err(),
        ));
        assert_eq!(e["isError"], false);
        assert_eq!(
            e["content"][0]["text"],
            "{\"success\": false, \"error\": \"Field \\\"STATUS_ID\\\": value \\\"X\\\" is not in the STATUS list\"}"
        );
        let nf = result(answer(
            c,
            "get_lead",
            &json!({"lead_id": "4"}),
            Err(Failure::Rest(RestError::new("NOT_FOUND", "Not found"))),
        ));
        assert_eq!(
            nf["content"][0]["text"],
            "{\"success\": false, \"error\": \"Lead with ID 4 not found\"}"
        );
        // Bad JSON: the error JSON; an object instead of a string: FastMCP's validation error.
        let bad = resolve(c, "create_lead", &json!({"fields": "{nope"})).unwrap_err();
        let bad = result(answer(c, "create_lead", &json!({}), Err(bad)));
        assert!(
            bad["content"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("{\"success\": false, \"error\": \"Invalid JSON in fields")
        );
        let obj = resolve(c, "create_lead", &json!({"fields": {"TITLE": "x"}})).unwrap_err();
        assert_eq!(
            result(answer(c, "create_lead", &json!({}), Err(obj)))["isError"],
            true
        );
    }

    #[test]
    fn bit2beat_resolves_entities_and_wraps_answers() {
        let c = Catalogue::Bit2beat;
        let (m, p, _) = resolved(
            c,
            "b24_crm_create",
            json!({"entity": "Lead", "fields": {"TITLE": "x"}, "params": {"REGISTER_SONET_EVENT": "N"}}),
        );
        assert_eq!(m, "crm.lead.add");
        assert_eq!(
            p,
            json!({"fields": {"TITLE": "x"}, "params": {"REGISTER_SONET_EVENT": "N"}})
        );
        let (m, p, _) = resolved(
            c,
            "b24_crm_create",
            json!({"entity_type_id": 1038, "fields": {"title": "x"}}),
        );
        assert_eq!(m, "crm.item.add");
        assert_eq!(p, json!({"fields": {"title": "x", "entityTypeId": 1038}}));
        assert_eq!(
            resolve(c, "b24_crm_get", &json!({"entity": "thing", "id": 1})).unwrap_err(),
            Failure::Local("Неизвестная сущность: thing".into())
        );
        let (m, p, _) = resolved(
            c,
            "b24_crm_timeline_add",
            json!({"entity": "lead", "entity_id": 5, "comment": "hi"}),
        );
        assert_eq!(m, "crm.timeline.comment.add");
        assert_eq!(
            p,
            json!({"fields": {"ENTITY_ID": 5, "ENTITY_TYPE": "CRM_LEAD", "COMMENT": "hi"}})
        );
        let (m, p, _) = resolved(
            c,
            "b24_call",
            json!({"method": "crm.status.list", "params": {"filter": {"ENTITY_ID": "STATUS"}}}),
        );
        assert_eq!(m, "crm.status.list");
        assert_eq!(p, json!({"filter": {"ENTITY_ID": "STATUS"}}));
        let (_, p, all) = resolved(c, "b24_crm_list", json!({"entity": "lead"}));
        assert_eq!((p, all), (json!({"filter": {}}), false));

        let a: Value = serde_json::from_str(&text_of(answer(
            c,
            "b24_crm_create",
            &json!({"entity": "lead"}),
            ok(json!(9)),
        )))
        .unwrap();
        assert_eq!(
            a,
            json!({"entity": "lead", "portal": PORTAL_HOST, "created_id": 9})
        );
        let l: Value = serde_json::from_str(&text_of(answer(
            c,
            "b24_crm_list",
            &json!({"entity": "lead"}),
            ok(json!([{"ID": "1"}])),
        )))
        .unwrap();
        assert_eq!(l["count"], 1);
        assert_eq!(l["items"][0]["ID"], "1");
        let call: Value = serde_json::from_str(&text_of(answer(
            c,
            "b24_call",
            &json!({"method": "crm.status.list"}),
            Ok(RestOk {
                result: json!([]),
                next: None,
                total: Some(0),
            }),
        )))
        .unwrap();
        assert_eq!(
            call,
            json!({"method": "crm.status.list", "portal": PORTAL_HOST, "result": [], "total": 0})
        );
        let e = result(answer(c, "b24_crm_update", &json!({}), rest_err()));
        assert_eq!(e["isError"], true);
        assert!(
            e["content"][0]["text"]
                .as_str()
                .unwrap()
                .starts_with("Error: ")
        );
    }

    #[test]
    fn kostikpenzin_dispatches_on_action() {
        let c = Catalogue::Kostikpenzin;
        let (m, p, _) = resolved(
            c,
            "bx24_crm_leads",
            json!({"action": "add", "fields": {"TITLE": "x"}}),
        );
        assert_eq!(
            (m.as_str(), p),
            ("crm.lead.add", json!({"fields": {"TITLE": "x"}}))
        );
        let (m, p, all) = resolved(
            c,
            "bx24_crm_leads",
            json!({"action": "list", "filter": {"PHONE": ["+1"]}, "order": {"ID": "ASC"}, "select": ["ID"]}),
        );
        assert_eq!(m, "crm.lead.list");
        assert!(all, "the client's list() pages");
        assert_eq!(
            p,
            json!({"filter": {"PHONE": ["+1"]}, "select": ["ID"], "order": {"ID": "ASC"}})
        );
        let (m, p, _) = resolved(
            c,
            "bx24_crm_leads",
            json!({"action": "update", "id": "42", "fields": {"NAME": "A"}}),
        );
        assert_eq!(
            (m.as_str(), p),
            (
                "crm.lead.update",
                json!({"id": "42", "fields": {"NAME": "A"}})
            )
        );
        let (m, _, _) = resolved(c, "bx24_crm_leads", json!({"action": "get", "id": "4"}));
        assert_eq!(m, "crm.lead.get");
        let missing = resolve(c, "bx24_crm_leads", &json!({"action": "add"})).unwrap_err();
        let e = result(answer(c, "bx24_crm_leads", &json!({}), Err(missing)));
        assert_eq!(e["isError"], true);
        assert_eq!(e["content"][0]["text"], "Error: 'fields' param required");
        assert_eq!(
            text_of(answer(c, "bx24_crm_leads", &json!({}), ok(json!(true)))),
            "true"
        );
        let get = text_of(answer(
            c,
            "bx24_crm_leads",
            &json!({}),
            ok(json!({"ID": "4", "TITLE": "x"})),
        ));
        assert_eq!(get, "{\n  \"ID\": \"4\",\n  \"TITLE\": \"x\"\n}");
        assert!(resolve(c, "bx24_crm_leads", &json!({"action": "convert"})).is_err());
    }

    /// One JSON-RPC exchange with a running sandbox; SSE answers are read from their last event.
    async fn rpc(
        http: &reqwest::Client,
        url: &str,
        token: &str,
        session: Option<&str>,
        body: Value,
    ) -> (Option<String>, Value) {
        let mut req = http
            .post(url)
            .bearer_auth(token)
            .header("accept", "application/json, text/event-stream")
            .header("content-type", "application/json")
            .header("mcp-protocol-version", "2025-06-18")
            .body(body.to_string());
        if let Some(s) = session {
            req = req.header("mcp-session-id", s);
        }
        let resp = req.send().await.unwrap();
        let sid = resp
            .headers()
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        let json = match text.rsplit("data: ").next() {
            Some(last) if text.starts_with("event:") => last.trim(),
            _ => text.trim(),
        };
        (sid, serde_json::from_str(json).unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn corpus_mode_over_http_keeps_the_transport_and_stats() {
        use crate::sandbox::{AnswerMode, Sandbox, SandboxConfig};
        let sb = Sandbox::start(SandboxConfig {
            catalogue: Some(Catalogue::AaBlinov),
            answer_mode: AnswerMode::Sse,
            ..SandboxConfig::default()
        })
        .await;
        let token = sb.issue_token(true);
        let http = reqwest::Client::new();
        let url = sb.mcp_url();
        let (sid, init) = rpc(
            &http,
            &url,
            &token,
            None,
            json!({"jsonrpc": "2.0", "id": 1,
            "method": "initialize", "params": {"protocolVersion": "2025-06-18"}}),
        )
        .await;
        assert_eq!(init["result"]["serverInfo"]["name"], "bitrix24-mcp");
        let sid = sid.unwrap();
        // tools/list: the fixture's tools, verbatim, over several pages.
        let mut tools = Vec::new();
        let mut cursor = Value::Null;
        let mut pages = 0;
        loop {
            let (_, page) = rpc(
                &http,
                &url,
                &token,
                Some(&sid),
                json!({"jsonrpc": "2.0", "id": 2,
                "method": "tools/list", "params": {"cursor": cursor}}),
            )
            .await;
            pages += 1;
            tools.extend(page["result"]["tools"].as_array().unwrap().iter().cloned());
            cursor = page["result"]["nextCursor"].clone();
            if cursor.is_null() {
                break;
            }
        }
        assert!(pages > 1);
        assert_eq!(tools, Catalogue::AaBlinov.tools());
        let call = |name: &str, args: Value| {
            json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call",
                   "params": {"name": name, "arguments": args}})
        };
        let (_, created) = rpc(
            &http,
            &url,
            &token,
            Some(&sid),
            call(
                "create_lead",
                json!({"fields": "{\"TITLE\": \"x\", \"PHONE\": [{\"VALUE\": \"+1 555\"}]}"}),
            ),
        )
        .await;
        let text = created["result"]["structuredContent"]["result"]
            .as_str()
            .unwrap();
        let id = serde_json::from_str::<Value>(text).unwrap()["lead_id"].clone();
        assert_eq!(sb.lead(id.as_i64().unwrap()).unwrap()["TITLE"], "x");
        let (_, unknown) = rpc(&http, &url, &token, Some(&sid), call("nope", json!({}))).await;
        assert_eq!(unknown["result"]["isError"], true);
        let (_, other) = rpc(
            &http,
            &url,
            &token,
            Some(&sid),
            call("get_deals", json!({})),
        )
        .await;
        assert_eq!(
            other["result"]["isError"], false,
            "an error JSON, FastMCP-style"
        );
        let st = sb.calls();
        assert_eq!(st.by_tool.get("create_lead"), Some(&1));
        assert_eq!(st.by_tool.get("get_deals"), Some(&1));
        assert_eq!(
            st.by_tool.get("nope"),
            None,
            "unknown tools are not executed"
        );
        assert_eq!(st.by_method.get("crm.lead.add"), Some(&1));
        assert_eq!(st.by_outcome.get("tool_error"), Some(&2));

        // Switched at run time to a TypeScript server: its unknown-tool JSON-RPC error.
        sb.set_config(|c| {
            c.catalogue = Some(Catalogue::Kostikpenzin);
            c.answer_mode = AnswerMode::Json;
        });
        let (_, ts) = rpc(
            &http,
            &url,
            &token,
            Some(&sid),
            call("create_lead", json!({})),
        )
        .await;
        assert_eq!(ts["error"]["code"], -32602);
        assert_eq!(
            ts["error"]["message"],
            "MCP error -32602: Tool create_lead not found"
        );
        // The admin API: null goes back to the shape catalogues.
        let r = http
            .post(format!("{}/admin/config", sb.base_url()))
            .json(&json!({"catalogue": null}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.json::<Value>().await.unwrap()["catalogue"], Value::Null);
        assert_eq!(sb.config().catalogue, None);
        let r = http
            .post(format!("{}/admin/config", sb.base_url()))
            .json(&json!({"catalogue": "yzel"}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.json::<Value>().await.unwrap()["catalogue"],
            "yzel-bitrix24"
        );
    }

    #[test]
    fn python_compact_json_uses_spaced_separators() {
        assert_eq!(
            py_compact(&json!({"a": [1, 2], "b": "ü"})),
            "{\"a\": [1, 2], \"b\": \"ü\"}"
        );
        assert_eq!(js_string(&json!(["a", null, 3])), "a,,3");
        assert_eq!(js_string(&json!(82.0)), "82");
    }
}
