//! `TENANT#<id> / AUDIT#<time>#<uuid>`: one line per sync operation and connection change,
//! expiring after 90 days. Details are written by our code only and must never hold a token.

use serde_json::Value;
use time::{Duration as TimeDuration, OffsetDateTime};

use super::Store;
use super::error::StoreError;
use super::item::{Item, Reader, epoch, fmt_time, json_av, key, s, time_av};
use crate::tenant::TenantId;

pub const AUDIT_TTL: TimeDuration = TimeDuration::days(90);
const PREFIX: &str = "AUDIT#";

/// One audit line.
#[derive(Clone, Debug, PartialEq)]
pub struct AuditEntry {
    pub at: OffsetDateTime,
    /// What happened (`connect`, `disconnect`, `lead_created`, ...).
    pub kind: String,
    pub detail: Value,
}

impl TryFrom<&Item> for AuditEntry {
    type Error = StoreError;

    fn try_from(item: &Item) -> Result<Self, StoreError> {
        let r = Reader::new(item, "audit entry");
        Ok(Self {
            at: r.time("at")?,
            kind: r.s("kind")?.to_owned(),
            detail: r.json("detail")?,
        })
    }
}

impl Store {
    /// Appends an audit line stamped now; the uuid keeps lines of the same instant apart.
    pub async fn audit(&self, t: &TenantId, kind: &str, detail: Value) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let sk = format!("{PREFIX}{}#{}", fmt_time(now)?, uuid::Uuid::new_v4());
        let mut item = key(t.partition_key(), sk);
        item.insert("at".into(), time_av(now)?);
        item.insert("kind".into(), s(kind));
        item.insert("detail".into(), json_av(&detail));
        item.insert("expires_at".into(), epoch(now + AUDIT_TTL));
        self.put(item).await
    }

    /// The tenant's audit lines, oldest first (for tests and status tooling).
    pub async fn list_audit(&self, t: &TenantId) -> Result<Vec<AuditEntry>, StoreError> {
        self.query_prefix(t, PREFIX)
            .await?
            .iter()
            .map(AuditEntry::try_from)
            .collect()
    }
}
