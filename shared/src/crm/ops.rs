//! The CRM operations the connector needs, named once, with the Bitrix24 REST method each wraps.

use serde::{Deserialize, Serialize};

/// One lead operation. The first four are required (no sync without them); the rest make the sync
/// better when the server offers them (ORIGIN_ID recovery, timeline history, portal capabilities).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    FindByPhone,
    CreateLead,
    UpdateLead,
    GetLead,
    ListLeads,
    AddComment,
    ListStatuses,
    LeadFields,
    AddStatus,
    AddUserField,
}

impl Operation {
    pub const ALL: [Operation; 10] = [
        Operation::FindByPhone,
        Operation::CreateLead,
        Operation::UpdateLead,
        Operation::GetLead,
        Operation::ListLeads,
        Operation::AddComment,
        Operation::ListStatuses,
        Operation::LeadFields,
        Operation::AddStatus,
        Operation::AddUserField,
    ];

    pub const REQUIRED: [Operation; 4] = [
        Operation::FindByPhone,
        Operation::CreateLead,
        Operation::UpdateLead,
        Operation::GetLead,
    ];

    /// The Bitrix24 REST method behind the operation (the `crm.lead.*` family and its helpers).
    pub fn rest_method(self) -> &'static str {
        match self {
            Operation::FindByPhone => "crm.duplicate.findbycomm",
            Operation::CreateLead => "crm.lead.add",
            Operation::UpdateLead => "crm.lead.update",
            Operation::GetLead => "crm.lead.get",
            Operation::ListLeads => "crm.lead.list",
            Operation::AddComment => "crm.timeline.comment.add",
            Operation::ListStatuses => "crm.status.list",
            Operation::LeadFields => "crm.lead.fields",
            Operation::AddStatus => "crm.status.add",
            Operation::AddUserField => "crm.lead.userfield.add",
        }
    }

    /// The config/serde name, e.g. `create_lead`.
    pub fn key(self) -> &'static str {
        match self {
            Operation::FindByPhone => "find_by_phone",
            Operation::CreateLead => "create_lead",
            Operation::UpdateLead => "update_lead",
            Operation::GetLead => "get_lead",
            Operation::ListLeads => "list_leads",
            Operation::AddComment => "add_comment",
            Operation::ListStatuses => "list_statuses",
            Operation::LeadFields => "lead_fields",
            Operation::AddStatus => "add_status",
            Operation::AddUserField => "add_user_field",
        }
    }

    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|op| op.key() == key)
    }

    /// Words a tenant can act on: "this Bitrix24 MCP server offers no tool to `purpose`".
    pub fn purpose(self) -> &'static str {
        match self {
            Operation::FindByPhone => "find leads by phone",
            Operation::CreateLead => "create leads",
            Operation::UpdateLead => "update leads",
            Operation::GetLead => "read a lead",
            Operation::ListLeads => "list leads with a filter",
            Operation::AddComment => "add timeline comments",
            Operation::ListStatuses => "list lead statuses and sources",
            Operation::LeadFields => "describe lead fields",
            Operation::AddStatus => "add lead statuses or sources",
            Operation::AddUserField => "add lead user fields",
        }
    }
}
