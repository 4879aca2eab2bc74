//! Typed lead operations over a bound MCP session. Each method performs exactly one `tools/call`
//! (the unit of the portal's rate budget), except [`Crm::capabilities`], which connect runs once.

use serde_json::{Map, Value, json};

use super::answer::{as_id, created_id, duplicate_ids, lead_of, result_of, row_id, rows};
use super::args::tool_arguments;
use super::binding::{Binding, PortalCaps};
use super::ops::Operation;
use crate::mcp::{McpError, McpSession};

/// Bitrix24's limit of values in one `crm.duplicate.findbycomm` call (facts §3).
pub const MAX_SEARCH_VALUES: usize = 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CrmError {
    #[error(transparent)]
    Mcp(#[from] McpError),
    #[error("this Bitrix24 MCP server offers no tool to {}", .0.purpose())]
    Unsupported(Operation),
    /// The bound tool refused its arguments or is gone: the server's tools changed since binding.
    #[error("the Bitrix24 MCP tool bound to {op} changed (unknown tool or new arguments)")]
    BindingStale { op: &'static str },
    #[error("Bitrix24 answered {op} in a form the connector does not understand")]
    UnexpectedAnswer { op: &'static str },
}

impl CrmError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, CrmError::Mcp(e) if e.is_retryable())
    }
}

/// A JSON-RPC "unknown tool / invalid params" (-32602) or "method not found" (-32601) answer to a
/// bound tool means the binding no longer matches the server.
fn stale_or(op: Operation, e: McpError) -> CrmError {
    match &e {
        McpError::Protocol { detail }
            if detail.contains("-32602")
                || detail.contains("-32601")
                || detail.contains("unknown tool") =>
        {
            CrmError::BindingStale { op: op.key() }
        }
        _ => CrmError::Mcp(e),
    }
}

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
        let args = tool_arguments(bound, op, params)
            .map_err(|_| CrmError::BindingStale { op: op.key() })?;
        let out = self
            .session
            .call_tool(&bound.tool, args)
            .await
            .map_err(|e| stale_or(op, e))?;
        Ok(result_of(&out)?)
    }

    /// Leads having any of these phone spellings (at most 20 are sent). Uses the duplicate search
    /// when bound, else a lead list filtered on `PHONE`.
    pub async fn find_by_phones(&mut self, spellings: &[String]) -> Result<Vec<i64>, CrmError> {
        let values: Vec<&String> = spellings.iter().take(MAX_SEARCH_VALUES).collect();
        if values.is_empty() {
            return Ok(Vec::new());
        }
        let mut ids = if self.has(Operation::FindByPhone) {
            let r = self
                .call(
                    Operation::FindByPhone,
                    json!({"type": "PHONE", "values": values, "entity_type": "LEAD"}),
                )
                .await?;
            duplicate_ids(&r)
        } else if self.has(Operation::ListLeads) {
            let r = self
                .call(
                    Operation::ListLeads,
                    json!({"filter": {"PHONE": values}, "select": ["ID"], "order": {"ID": "ASC"}}),
                )
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
                json!({"filter": {"ORIGINATOR_ID": originator, "ORIGIN_ID": origin_id},
                       "select": ["ID"], "order": {"ID": "ASC"}}),
            )
            .await?;
        Ok(rows(&r).iter().filter_map(row_id).collect())
    }

    pub async fn create_lead(&mut self, fields: Map<String, Value>) -> Result<i64, CrmError> {
        let r = self
            .call(
                Operation::CreateLead,
                json!({"fields": fields, "params": {"REGISTER_SONET_EVENT": "N"}}),
            )
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
            .call(Operation::UpdateLead, json!({"id": id, "fields": fields}))
            .await?;
        if r == Value::Bool(false) {
            return Err(CrmError::UnexpectedAnswer {
                op: Operation::UpdateLead.key(),
            });
        }
        Ok(())
    }

    /// The lead, or `None` when Bitrix24 says it does not exist (deleted by a manager).
    pub async fn get_lead(&mut self, id: i64) -> Result<Option<Map<String, Value>>, CrmError> {
        match self.call(Operation::GetLead, json!({"id": id})).await {
            Ok(v) => lead_of(v).map(Some).ok_or(CrmError::UnexpectedAnswer {
                op: Operation::GetLead.key(),
            }),
            Err(CrmError::Mcp(McpError::NotFound)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn add_comment(&mut self, lead_id: i64, comment: &str) -> Result<(), CrmError> {
        self.call(
            Operation::AddComment,
            json!({"fields": {"ENTITY_ID": lead_id, "ENTITY_TYPE": "lead", "COMMENT": comment}}),
        )
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
        Ok(match &r {
            Value::Object(o) => o.keys().cloned().collect(),
            Value::Array(_) => rows(&r)
                .iter()
                .filter_map(|row| {
                    row.get("FIELD_NAME")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect(),
            _ => Vec::new(),
        })
    }

    /// What the portal has (sources, statuses, user fields), through whatever is bound.
    /// Unbound or failing reads leave the defaults (no TELEGRAM, no UC_QUALIFIED, no user fields),
    /// which only send more into the text; an auth failure is returned.
    pub async fn capabilities(&mut self) -> Result<PortalCaps, CrmError> {
        let mut caps = PortalCaps::default();
        if self.has(Operation::ListStatuses) {
            match self.status_ids("SOURCE").await {
                Ok(ids) => caps.has_telegram_source = ids.iter().any(|s| s == "TELEGRAM"),
                Err(CrmError::Mcp(e @ McpError::Unauthorized { .. })) => return Err(e.into()),
                Err(_) => {}
            }
            match self.status_ids("STATUS").await {
                Ok(ids) => {
                    caps.has_qualified_status = ids.iter().any(|s| s == "UC_QUALIFIED");
                    caps.read = true;
                }
                Err(CrmError::Mcp(e @ McpError::Unauthorized { .. })) => return Err(e.into()),
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
                Err(CrmError::Mcp(e @ McpError::Unauthorized { .. })) => return Err(e.into()),
                Err(_) => {}
            }
        }
        Ok(caps)
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
