//! What change watching keeps in the store: on the integration item, the tenant's watch cursor
//! (the `DATE_MODIFY` of the newest change handled, as the portal wrote it, and the portal it
//! belongs to) and `last_watch_at`; on each `LEAD#` link, the values last seen in the CRM
//! (`seen`); and the sparse index `watch` over integration items (`watch_shard`), through which
//! the scheduled run finds the tenants to watch without scanning the table.
//!
//! `seen` is written by watching alone, with one update; lead-sync carries it along when it
//! rewrites the link (dropping the fields it writes itself). A round that records `seen`
//! between lead-sync's read and write of one link is overwritten, and the next round reports
//! that change again: with the same deduplication id (dropped by the queue within five minutes)
//! unless lead-sync's own write moved `DATE_MODIFY` too. Rare, and a repeat, never a loss.
//!
//! `watch_shard` is set by a connect and by every `last_sync_at` update and removed by a
//! disconnect, so the index holds exactly the integrations that can be due. The shard spreads
//! them over [`WATCH_SHARDS`] partition keys of the index (one hot key would limit a large
//! table's throughput); the scheduled run queries each.

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::Store;
use super::error::{StoreError, conflict_is_done, from_sdk};
use super::item::{Reader, json_av, key, n, s, time_av};
use crate::tenant::TenantId;

/// The sparse index of integrations change watching may be due for.
pub const WATCH_INDEX: &str = "watch";
/// Its partition key attribute.
pub const WATCH_SHARD_ATTR: &str = "watch_shard";
/// Partition keys of the index (`WATCH#00` .. `WATCH#15`).
pub const WATCH_SHARDS: u32 = 16;

/// The shard of a tenant: a stable hash of its id (FNV-1a, so every version agrees).
pub fn watch_shard(t: &TenantId) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in t.as_str().bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("WATCH#{:02}", h % WATCH_SHARDS)
}

/// The shard keys, in order.
pub fn all_watch_shards() -> impl Iterator<Item = String> {
    (0..WATCH_SHARDS).map(|i| format!("WATCH#{i:02}"))
}

/// An integration as the index shows it: enough to decide whether it is due.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchCandidate {
    pub tenant: TenantId,
    pub active: bool,
    pub last_sync_at: Option<OffsetDateTime>,
    /// `watch_opt_in = true` on the integration item: watched even without recent syncs.
    pub opted_in: bool,
}

impl WatchCandidate {
    /// Due: `active`, and synced within `recent` of `now` or opted in.
    pub fn is_due(&self, now: OffsetDateTime, recent: time::Duration) -> bool {
        self.active && (self.opted_in || self.last_sync_at.is_some_and(|t| t >= now - recent))
    }
}

/// The tenant's watch cursor.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchCursor {
    /// The portal the cursor was taken in: a cursor of another portal is ignored.
    pub portal_id: String,
    /// `DATE_MODIFY` of the newest change handled, as the portal wrote it (sent back verbatim).
    pub modified: String,
}

impl Store {
    /// One page of one shard of the watch index. `start`: the page key the last call returned.
    pub async fn watch_candidates(
        &self,
        shard: &str,
        start: Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
    ) -> Result<
        (
            Vec<WatchCandidate>,
            Option<std::collections::HashMap<String, aws_sdk_dynamodb::types::AttributeValue>>,
        ),
        StoreError,
    > {
        let out = self
            .ddb
            .query()
            .table_name(&self.table)
            .index_name(WATCH_INDEX)
            .key_condition_expression("#shard = :shard")
            .expression_attribute_names("#shard", WATCH_SHARD_ATTR)
            .expression_attribute_values(":shard", s(shard))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(from_sdk)?;
        let mut found = Vec::new();
        for item in out.items() {
            let r = Reader::new(item, "watch index entry");
            let Some(tenant) = r
                .s("pk")?
                .strip_prefix("TENANT#")
                .and_then(|id| TenantId::parse(id).ok())
            else {
                continue;
            };
            found.push(WatchCandidate {
                tenant,
                active: r.opt_s("sync_status")? == Some("active"),
                last_sync_at: r.opt_time("last_sync_at")?,
                opted_in: item
                    .get("watch_opt_in")
                    .is_some_and(|v| v.as_bool().is_ok_and(|b| *b)),
            });
        }
        Ok((found, out.last_evaluated_key))
    }

    /// Moves the cursor and `last_watch_at`, on the integration of `portal_id` only (a
    /// reconnect to another portal meanwhile wins). Called only after the round's events were
    /// published. `cursor` None: nothing changed, only `last_watch_at` moves.
    pub async fn advance_watch(
        &self,
        t: &TenantId,
        portal_id: &str,
        cursor: Option<&str>,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let req = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(
                t.partition_key(),
                super::integration::SK.to_owned(),
            )))
            .condition_expression("portal_id = :portal")
            .expression_attribute_values(":portal", s(portal_id))
            .expression_attribute_values(":at", time_av(at)?);
        let req = match cursor {
            Some(c) => req
                .update_expression(
                    "SET last_watch_at = :at, watch_cursor = :cursor, watch_portal_id = :portal",
                )
                .expression_attribute_values(":cursor", s(c)),
            None => req.update_expression("SET last_watch_at = :at"),
        };
        match req.send().await.map_err(from_sdk) {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict) => Err(StoreError::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Records on the link what the CRM shows now (`seen`, by Bitrix24 field name), only while
    /// the link still names `lead_id`. A link re-pointed meanwhile is left alone.
    pub async fn record_seen(
        &self,
        t: &TenantId,
        customer_id: &str,
        lead_id: i64,
        seen: &Map<String, Value>,
    ) -> Result<(), StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(t.partition_key(), format!("LEAD#{customer_id}"))))
            .update_expression("SET seen = :seen")
            .condition_expression("lead_id = :lead")
            .expression_attribute_values(":seen", json_av(&Value::Object(seen.clone())))
            .expression_attribute_values(":lead", n(lead_id))
            .send()
            .await
            .map_err(from_sdk);
        conflict_is_done(res)
    }
}
