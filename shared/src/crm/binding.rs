//! The binding: which tool performs each CRM operation, how its arguments are built, and what
//! the portal has (read once at connect). It is kept with the integration record as JSON, and
//! [`super::discovery`] makes it from a server's `tools/list`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::args::{ArgPlan, ArgsError};
use super::ops::Operation;

/// How a tool's arguments are built from the REST call an operation stands for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ToolKind {
    /// A generic tool that runs any REST method: `{<method_arg>: "crm.lead.add", <params_arg>: {...}}`.
    Rest {
        method_arg: String,
        params_arg: String,
    },
    /// Any other tool: one source per argument.
    Args(ArgPlan),
}

/// How a tool came to be bound, reported by connect/test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// A tool per lead operation.
    LeadTools,
    /// A shared CRM tool whose entity is an argument.
    CrmEntity,
    /// A tool per entity whose operation is an argument.
    EntityAction,
    /// A generic REST-method tool.
    RestMethod,
    /// Named in `MCP_TOOL_MAP`.
    Config,
}

impl Profile {
    /// Lower is preferred when several tools can serve one operation.
    pub(super) fn rank(self) -> u8 {
        match self {
            Profile::Config => 0,
            Profile::LeadTools => 1,
            Profile::EntityAction => 2,
            Profile::CrmEntity => 3,
            Profile::RestMethod => 4,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundTool {
    pub tool: String,
    pub profile: Profile,
    #[serde(flatten)]
    pub kind: ToolKind,
}

/// What the portal has, read once at connect through the bound operations.
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

    /// Required operations nothing is bound to. Finding by phone is also served by a lead list
    /// that takes a filter (a `PHONE` filter), at one call per search just the same.
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

    /// The report connect/test show: what is bound, by which profile, what is missing, and the
    /// lead fields a bound create or update tool has no argument for.
    pub fn report(&self) -> Value {
        let bound: Map<String, Value> = self
            .ops
            .iter()
            .map(|(op, t)| {
                let mut entry = json!({"tool": t.tool, "profile": t.profile});
                if let ToolKind::Args(plan) = &t.kind
                    && !plan.uncarried(*op).is_empty()
                {
                    entry["cannot_send"] = json!(plan.uncarried(*op));
                }
                (op.key().to_owned(), entry)
            })
            .collect();
        let names = |ops: Vec<Operation>| -> Vec<&'static str> {
            ops.into_iter().map(Operation::key).collect()
        };
        json!({
            "bound": bound,
            "missing_required": names(self.missing_required()),
            "missing_optional": names(self.missing_optional()),
        })
    }

    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The stored binding, or `None` when it is unreadable (written by an older version): the
    /// caller then binds the tools again.
    pub fn from_value(v: &Value) -> Option<Self> {
        serde_json::from_value(v.clone()).ok()
    }
}

impl BoundTool {
    /// The `tools/call` arguments for `op` with REST parameters `params`.
    pub fn arguments(&self, op: Operation, params: Map<String, Value>) -> Result<Value, ArgsError> {
        match &self.kind {
            ToolKind::Rest {
                method_arg,
                params_arg,
            } => {
                let mut args = Map::new();
                args.insert(method_arg.clone(), json!(op.rest_method()));
                args.insert(params_arg.clone(), Value::Object(params));
                Ok(Value::Object(args))
            }
            ToolKind::Args(plan) => {
                plan.fill(&params)
                    .map(Value::Object)
                    .map_err(|argument| ArgsError {
                        tool: self.tool.clone(),
                        op: op.key(),
                        argument,
                    })
            }
        }
    }
}
