//! The outbound contract, version 1: a `lead.changed` event tells TeleAgent's chat pipeline what
//! a manager changed on a lead in Bitrix24 (status with its stage in TeleAgent's words, name,
//! responsible user, the connector's score and hotness fields), each with the value before and
//! after. `events/lead-changed.v1.schema.json` states the same shape for the Python consumer;
//! the integration tests hold the two in agreement.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The `type` of every outbound event of this contract.
pub const LEAD_CHANGED: &str = "lead.changed";

/// One lead's changes seen in one watch round.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeadChanged {
    pub version: u8,
    #[serde(rename = "type")]
    pub kind: String,
    /// A fresh UUID per publication (the queue's deduplication id is what repeats).
    pub event_id: String,
    pub tenant_id: String,
    pub customer_id: String,
    pub lead_id: i64,
    /// The lead's `DATE_MODIFY`: when the portal last changed it.
    #[serde(with = "time::serde::rfc3339")]
    pub modified_at: OffsetDateTime,
    /// When the connector read the change.
    #[serde(with = "time::serde::rfc3339")]
    pub observed_at: OffsetDateTime,
    pub changes: Changes,
}

/// What changed; absent keys did not change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<StatusChange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Change>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assigned_by_id: Option<Change>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub score: Option<Change>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hotness: Option<Change>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self == &Changes::default()
    }
}

/// A value before and after (Bitrix24's text; `None` for an empty field).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub from: Option<String>,
    pub to: Option<String>,
}

/// A status change, with what the new status means for TeleAgent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    pub from: Option<String>,
    pub to: Option<String>,
    pub stage: Stage,
}

/// A lead status in TeleAgent's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    New,
    InWork,
    Won,
    Lost,
}

impl Stage {
    /// Bitrix24's status semantics (`STATUS_SEMANTIC_ID`: `S` success, `F` failure, `P` in
    /// progress) decide when the portal reports them, so a manager's own failure status
    /// (`UC_SPAM`) is `lost`; else the default statuses: `CONVERTED` won, `JUNK` lost, `NEW`
    /// new, anything else in work.
    pub fn of(status: Option<&str>, semantic: Option<&str>) -> Stage {
        match (semantic, status) {
            (Some("S"), _) | (_, Some("CONVERTED")) => Stage::Won,
            (Some("F"), _) | (_, Some("JUNK")) => Stage::Lost,
            (_, Some("NEW") | None) => Stage::New,
            _ => Stage::InWork,
        }
    }
}
