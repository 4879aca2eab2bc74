//! Typed lead operations over a bound MCP session. Each method performs exactly one `tools/call`
//! (the unit of the portal's rate budget), except [`Crm::capabilities`], which connect runs once.

use serde_json::{Map, Value, json};

use super::answer::{
    as_id, created_id, duplicate_ids, lead_of, result_of, row_id, rows, update_done,
};
use super::binding::{Binding, PortalCaps};
use super::ops::Operation;
use crate::mcp::{McpError, McpSession};

/// Bitrix24's limit of values in one `crm.duplicate.findbycomm` call (at most 20 per call).
pub const MAX_SEARCH_VALUES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrmError {
    #[error(transparent)]
    Mcp(#[from] McpError),
    #[error("this Bitrix24 MCP server offers no tool to {}", .0.purpose())]
    Unsupported(Operation),
    /// The bound tool is gone (unknown tool), or its schema no longer fits: the server's tools
    /// changed since binding.
    #[error("the Bitrix24 MCP tool bound to {op} changed (unknown tool or new arguments)")]
    BindingStale { op: &'static str },
    /// The server refused this call's arguments (JSON-RPC -32602). Unless binding the tools
    /// again changes the binding, that is this event's data, not the connection.
    #[error("the Bitrix24 MCP server refused the data sent to {op} (invalid arguments)")]
    Rejected { op: &'static str },
    #[error("Bitrix24 answered {op} in a form the connector does not understand")]
    UnexpectedAnswer { op: &'static str },
}

impl CrmError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, CrmError::Mcp(e) if e.is_retryable())
    }
}

/// The structural classes of a failed call that say something about the binding: an unknown
/// tool means the binding is stale; refused arguments are for the caller to judge.
fn call_error(op: Operation, e: McpError) -> CrmError {
    match e {
        McpError::UnknownTool => CrmError::BindingStale { op: op.key() },
        McpError::InvalidArguments => CrmError::Rejected { op: op.key() },
        e => CrmError::Mcp(e),
    }
}

/// The REST parameters of each lead operation, as [`Crm`] sends them (through whatever tool is
/// bound). Public so that binding tests can show the exact arguments a catalogue's tools get.
pub mod request {
    use serde_json::{Map, Value, json};

    pub fn find_by_phone(values: &[&str]) -> Value {
        json!({"type": "PHONE", "values": values, "entity_type": "LEAD"})
    }

    /// The same search as a lead list filtered on `PHONE` (any of the values).
    pub fn list_by_phone(values: &[&str]) -> Value {
        json!({"filter": {"PHONE": values}, "select": ["ID"], "order": {"ID": "ASC"}})
    }

    pub fn list_by_origin(originator: &str, origin_id: &str) -> Value {
        json!({"filter": {"ORIGINATOR_ID": originator, "ORIGIN_ID": origin_id},
               "select": ["ID", "ORIGIN_ID"], "order": {"ID": "ASC"}})
    }

    /// The connector's leads changed at or after `since` (Bitrix24 datetime text), oldest
    /// change first, with the fields change watching compares. `start` skips rows of the same
    /// filter (only when a page's rows all share one `DATE_MODIFY`).
    pub fn list_changed(originator: &str, since: &str, start: u64) -> Value {
        let mut p = json!({"filter": {">=DATE_MODIFY": since, "ORIGINATOR_ID": originator},
               "select": super::WATCHED_SELECT, "order": {"DATE_MODIFY": "ASC", "ID": "ASC"}});
        if start > 0 {
            p["start"] = json!(start);
        }
        p
    }

    pub fn create(fields: Map<String, Value>) -> Value {
        json!({"fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}})
    }

    pub fn update(id: i64, fields: Map<String, Value>) -> Value {
        json!({"id": id, "fields": fields})
    }

    pub fn get(id: i64) -> Value {
        json!({"id": id})
    }

    pub fn comment(lead_id: i64, comment: &str) -> Value {
        json!({"fields": {"ENTITY_ID": lead_id, "ENTITY_TYPE": "lead", "COMMENT": comment}})
    }
}

/// The fields a change-watching list asks for: the lead's identity, its change time, and what
/// a manager's change is reported for (status, name, responsible user, the connector's fields).
pub const WATCHED_SELECT: [&str; 11] = [
    "ID",
    "ORIGINATOR_ID",
    "ORIGIN_ID",
    "DATE_MODIFY",
    "STATUS_ID",
    "STATUS_SEMANTIC_ID",
    "NAME",
    "ASSIGNED_BY_ID",
    "MODIFY_BY_ID",
    "UF_CRM_TELEAGENT_SCORE",
    "UF_CRM_TELEAGENT_HOTNESS",
];

/// Bitrix24's fixed list page: a full page means there may be more.
pub const LIST_PAGE: usize = 50;

pub struct Crm<'a> {
    session: &'a mut McpSession,
    binding: &'a Binding,
}

impl<'a> Crm<'a> {
    pub fn new(session: &'a mut McpSession, binding: &'a Binding) -> Self {
        Self { session, binding }
    }

    pub fn has(&self, op: Operation) -> bool {
        self.binding.get(op).is_some()
    }

    pub fn binding(&self) -> &Binding {
        self.binding
    }

    async fn call(&mut self, op: Operation, params: Value) -> Result<Value, CrmError> {
        let bound = self.binding.get(op).ok_or(CrmError::Unsupported(op))?;
        let params = match params {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        let args = bound
            .arguments(op, params)
            .map_err(|_| CrmError::BindingStale { op: op.key() })?;
        let out = self
            .session
            .call_tool(&bound.tool, args)
            .await
            .map_err(|e| call_error(op, e))?;
        result_of(&out).map_err(|e| call_error(op, e))
    }

    /// Leads having any of these phone spellings (at most 20 are sent). Uses the duplicate search
    /// when bound, else a lead list filtered on `PHONE`.
    pub async fn find_by_phones(&mut self, spellings: &[String]) -> Result<Vec<i64>, CrmError> {
        let values: Vec<&str> = spellings
            .iter()
            .take(MAX_SEARCH_VALUES)
            .map(String::as_str)
            .collect();
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = if self.has(Operation::FindByPhone) {
            let r = self
                .call(Operation::FindByPhone, request::find_by_phone(&values))
                .await?;
            duplicate_ids(&r)
        } else if self.has(Operation::ListLeads) {
            let r = self
                .call(Operation::ListLeads, request::list_by_phone(&values))
                .await?;
            rows(&r).iter().filter_map(row_id).collect()
        } else {
            return Err(CrmError::Unsupported(Operation::FindByPhone));
        };
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    /// Leads this connector created for one customer (`ORIGINATOR_ID`/`ORIGIN_ID`), oldest first.
    pub async fn find_by_origin(
        &mut self,
        originator: &str,
        origin_id: &str,
    ) -> Result<Vec<i64>, CrmError> {
        let r = self
            .call(
                Operation::ListLeads,
                request::list_by_origin(originator, origin_id),
            )
            .await?;
        // A row showing another ORIGIN_ID is not ours whatever the server's filter did.
        Ok(rows(&r)
            .iter()
            .filter(|row| {
                row.get("ORIGIN_ID")
                    .and_then(Value::as_str)
                    .is_none_or(|o| o == origin_id)
            })
            .filter_map(row_id)
            .collect())
    }

    /// One page of the connector's leads changed at or after `since` (see
    /// [`request::list_changed`]), as rows. Rows whose `ORIGINATOR_ID` shows another source
    /// are dropped whatever the server's filter did.
    pub async fn list_changed(
        &mut self,
        originator: &str,
        since: &str,
        start: u64,
    ) -> Result<Vec<Map<String, Value>>, CrmError> {
        let r = self
            .call(
                Operation::ListLeads,
                request::list_changed(originator, since, start),
            )
            .await?;
        Ok(rows(&r)
            .into_iter()
            .filter(|row| {
                row.get("ORIGINATOR_ID")
                    .and_then(Value::as_str)
                    .is_none_or(|o| o == originator)
            })
            .collect())
    }

    pub async fn create_lead(&mut self, fields: Map<String, Value>) -> Result<i64, CrmError> {
        let r = self
            .call(Operation::CreateLead, request::create(fields))
            .await?;
        created_id(&r).ok_or(CrmError::UnexpectedAnswer {
            op: Operation::CreateLead.key(),
        })
    }

    pub async fn update_lead(
        &mut self,
        id: i64,
        fields: Map<String, Value>,
    ) -> Result<(), CrmError> {
        let r = self
            .call(Operation::UpdateLead, request::update(id, fields))
            .await?;
        if !update_done(&r) {
            return Err(CrmError::UnexpectedAnswer {
                op: Operation::UpdateLead.key(),
            });
        }
        Ok(())
    }

    /// The lead, or `None` when Bitrix24 says it does not exist (deleted by a manager).
    pub async fn get_lead(&mut self, id: i64) -> Result<Option<Map<String, Value>>, CrmError> {
        match self.call(Operation::GetLead, request::get(id)).await {
            Ok(v) => lead_of(v).map(Some).ok_or(CrmError::UnexpectedAnswer {
                op: Operation::GetLead.key(),
            }),
            Err(CrmError::Mcp(McpError::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn add_comment(&mut self, lead_id: i64, comment: &str) -> Result<(), CrmError> {
        self.call(Operation::AddComment, request::comment(lead_id, comment))
            .await
            .map(|_| ())
    }

    /// `STATUS_ID`s of a status list (`STATUS` for lead statuses, `SOURCE` for sources).
    pub async fn status_ids(&mut self, entity: &str) -> Result<Vec<String>, CrmError> {
        let r = self
            .call(
                Operation::ListStatuses,
                json!({"filter": {"ENTITY_ID": entity}, "order": {"SORT": "ASC"}}),
            )
            .await?;
        Ok(rows(&r)
            .iter()
            .filter(|row| {
                row.get("ENTITY_ID")
                    .and_then(Value::as_str)
                    .is_none_or(|e| e == entity)
            })
            .filter_map(|row| {
                row.get("STATUS_ID")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .collect())
    }

    /// Names of the lead's fields (user fields included), from `crm.lead.fields`.
    pub async fn lead_field_names(&mut self) -> Result<Vec<String>, CrmError> {
        let r = self.call(Operation::LeadFields, json!({})).await?;
        Ok(field_names(&r))
    }

    /// What the portal has (sources, statuses, user fields), through whatever is bound.
    /// Unbound or refused reads leave the defaults (no TELEGRAM, no UC_QUALIFIED, no user fields),
    /// which only send more into the text. An auth failure, a rate limit or a transient failure
    /// is returned instead: storing defaults because of a passing 500 would downgrade every
    /// lead of the tenant until the next connect.
    pub async fn capabilities(&mut self) -> Result<PortalCaps, CrmError> {
        let mut caps = PortalCaps::default();
        if self.has(Operation::ListStatuses) {
            match self.status_ids("SOURCE").await {
                Ok(ids) => caps.has_telegram_source = ids.iter().any(|s| s == "TELEGRAM"),
                Err(CrmError::Mcp(e)) if stops_the_check(&e) => return Err(e.into()),
                Err(_) => {}
            }
            match self.status_ids("STATUS").await {
                Ok(ids) => {
                    caps.has_qualified_status = ids.iter().any(|s| s == "UC_QUALIFIED");
                    caps.read = true;
                }
                Err(CrmError::Mcp(e)) if stops_the_check(&e) => return Err(e.into()),
                Err(_) => {}
            }
        }
        if self.has(Operation::LeadFields) {
            match self.lead_field_names().await {
                Ok(names) => {
                    caps.has_teleagent_user_fields =
                        ["UF_CRM_TELEAGENT_SCORE", "UF_CRM_TELEAGENT_HOTNESS"]
                            .iter()
                            .all(|f| names.iter().any(|n| n == f));
                }
                Err(CrmError::Mcp(e)) if stops_the_check(&e) => return Err(e.into()),
                Err(_) => {}
            }
        }
        Ok(caps)
    }
}

/// The failures that end the capability reads (and the live check with them).
fn stops_the_check(e: &McpError) -> bool {
    e.is_retryable() || matches!(e, McpError::Unauthorized { .. })
}

/// Field names from a `crm.lead.fields` answer: the REST map `{NAME: {...}}`, a list of
/// `{FIELD_NAME}`/`{code}` rows, or either one inside a server's wrapper
/// (`{"success": true, "fields": {...}}`, `{"entity": .., "total_fields": .., "fields": [...]}`).
pub fn field_names(v: &Value) -> Vec<String> {
    match v {
        Value::Object(o) => match o.get("fields") {
            Some(inner @ (Value::Object(_) | Value::Array(_))) => field_names(inner),
            _ => o.keys().cloned().collect(),
        },
        Value::Array(items) => items
            .iter()
            .filter_map(|row| {
                ["FIELD_NAME", "code", "name"]
                    .iter()
                    .find_map(|k| row.get(*k).and_then(Value::as_str))
                    .map(str::to_owned)
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// A lead's `STATUS_ID`, if present.
pub fn lead_status(lead: &Map<String, Value>) -> Option<&str> {
    lead.get("STATUS_ID").and_then(Value::as_str)
}

/// A lead's id from its own record.
pub fn lead_id(lead: &Map<String, Value>) -> Option<i64> {
    lead.get("ID").or_else(|| lead.get("id")).and_then(as_id)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn field_names_in_every_answer_shape() {
        for (answer, why) in [
            (
                json!({"ID": {}, "UF_CRM_TELEAGENT_SCORE": {}}),
                "the REST map",
            ),
            (
                json!([{"FIELD_NAME": "ID"}, {"FIELD_NAME": "UF_CRM_TELEAGENT_SCORE"}]),
                "rows",
            ),
            (
                json!({"success": true, "fields": {"ID": {}, "UF_CRM_TELEAGENT_SCORE": {}}}),
                "a success wrapper",
            ),
            (
                json!({"entity": "lead", "total_fields": 2, "fields": [{"code": "ID"}, {"code": "UF_CRM_TELEAGENT_SCORE"}]}),
                "an entity wrapper of rows",
            ),
        ] {
            let mut names = field_names(&answer);
            names.sort();
            assert_eq!(names, ["ID", "UF_CRM_TELEAGENT_SCORE"], "{why}");
        }
    }
}
