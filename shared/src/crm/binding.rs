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

    /// Why changes managers make in the portal cannot flow back, or `None` when they can.
    /// Watching lists the connector's leads by `ORIGINATOR_ID` changed since a time
    /// (`>=DATE_MODIFY`), oldest change first: that takes a lead list whose filter is a
    /// Bitrix24 filter (any field, operators in the key) and that takes an order. A generic REST
    /// tool passes both as they are.
    pub fn watch_gap(&self) -> Option<&'static str> {
        let Some(list) = self.get(Operation::ListLeads) else {
            return Some("offers no tool to list leads with a filter");
        };
        match &list.kind {
            ToolKind::Rest { .. } => None,
            ToolKind::Args(plan) => {
                let param = |n: &'static str| move |s: &super::args::Source| matches!(s, super::args::Source::Param { name } if name == n);
                if !plan.has(param("filter")) {
                    Some("has a lead list that cannot filter by change time")
                } else if !plan.has(param("order")) {
                    Some("has a lead list that cannot sort leads by change time")
                } else {
                    None
                }
            }
        }
    }

    /// What `portal_info.change_watch` shows: whether managers' changes can flow back, and in
    /// words why not.
    pub fn change_watch(&self) -> Value {
        match self.watch_gap() {
            None => json!({"possible": true}),
            Some(why) => json!({"possible": false, "reason": watch_words(why)}),
        }
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

/// The sentence a tenant reads when changes cannot be watched.
pub fn watch_words(why: &str) -> String {
    format!(
        "changes managers make in Bitrix24 (status, name, responsible user) will not reach \
         TeleAgent: this Bitrix24 MCP server {why}; leads still sync from TeleAgent to Bitrix24"
    )
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::schema::props;

    fn with_list(kind: ToolKind) -> Binding {
        let mut b = Binding::default();
        b.ops.insert(
            Operation::ListLeads,
            BoundTool {
                tool: "list".into(),
                profile: Profile::LeadTools,
                kind,
            },
        );
        b
    }

    fn args(schema: Value) -> ToolKind {
        let plan = ArgPlan::build(Operation::ListLeads, &props(&schema), &[]).unwrap();
        ToolKind::Args(plan)
    }

    #[test]
    fn change_watching_needs_a_list_that_filters_and_orders() {
        let full = json!({"type": "object", "properties": {"filter": {"type": "object"},
            "order": {"type": "object"}, "select": {"type": "array"}, "start": {"type": "integer"}}});
        let no_order = json!({"type": "object", "properties": {"filter": {"type": "object"}}});
        let rest = ToolKind::Rest {
            method_arg: "method".into(),
            params_arg: "params".into(),
        };
        for (b, possible, why) in [
            (Binding::default(), false, "no list tool"),
            (with_list(args(full.clone())), true, "filter and order"),
            (with_list(args(no_order)), false, "no order argument"),
            (with_list(rest), true, "a generic REST tool"),
        ] {
            assert_eq!(b.change_watch()["possible"], possible, "{why}");
            assert_eq!(b.watch_gap().is_none(), possible, "{why}");
        }
        let ToolKind::Args(plan) = args(full) else {
            unreachable!()
        };
        let filled = plan
            .fill(
                crate::crm::client::request::list_changed("teleagent", "2026-01-01T00:00:00Z", 50)
                    .as_object()
                    .unwrap(),
            )
            .unwrap();
        assert_eq!(filled["start"], 50, "the page offset reaches the tool");
        assert_eq!(
            filled["filter"],
            json!({">=DATE_MODIFY": "2026-01-01T00:00:00Z", "ORIGINATOR_ID": "teleagent"})
        );
        assert_eq!(filled["order"], json!({"DATE_MODIFY": "ASC", "ID": "ASC"}));
        let reason = with_list(args(
            json!({"type": "object", "properties": {"filter": {"type": "object"}}}),
        ))
        .change_watch()["reason"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(reason.contains("will not reach TeleAgent"), "{reason}");
    }
}
