//! `TENANT#<id> / PARKED#<occurred_at>#<event_id>`: events kept while the integration is in
//! `error`, re-sent in `occurred_at` order after a successful connect or test. The fixed-width
//! UTC time in the sort key makes a key-ordered query return them in that order.

use time::{Duration as TimeDuration, OffsetDateTime};

use super::Store;
use super::error::{StoreError, from_sdk};
use super::item::{Item, Reader, epoch, fmt_time, key, s, time_av};
use crate::tenant::TenantId;

/// Parked events expire after this (design.md §3); the `done` idempotency TTL is longer.
pub const PARKED_TTL: TimeDuration = TimeDuration::days(14);
const PREFIX: &str = "PARKED#";

/// One parked event: its original body, re-sent unchanged.
#[derive(Clone, Debug, PartialEq)]
pub struct ParkedEvent {
    pub occurred_at: OffsetDateTime,
    pub event_id: String,
    pub body: String,
    /// Why it was parked (safe text).
    pub reason: String,
}

fn sort_key(occurred_at: OffsetDateTime, event_id: &str) -> Result<String, StoreError> {
    Ok(format!("{PREFIX}{}#{event_id}", fmt_time(occurred_at)?))
}

impl TryFrom<&Item> for ParkedEvent {
    type Error = StoreError;

    fn try_from(item: &Item) -> Result<Self, StoreError> {
        let r = Reader::new(item, "parked event");
        Ok(Self {
            occurred_at: r.time("occurred_at")?,
            event_id: r.s("event_id")?.to_owned(),
            body: r.s("body")?.to_owned(),
            reason: r.s("reason")?.to_owned(),
        })
    }
}

impl Store {
    /// Keeps an event for later; parking the same event twice keeps one copy.
    pub async fn park_event(
        &self,
        t: &TenantId,
        occurred_at: OffsetDateTime,
        event_id: &str,
        body: &str,
        reason: &str,
    ) -> Result<(), StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut item = key(t.partition_key(), sort_key(occurred_at, event_id)?);
        item.insert("occurred_at".into(), time_av(occurred_at)?);
        item.insert("event_id".into(), s(event_id));
        item.insert("body".into(), s(body));
        item.insert("reason".into(), s(reason));
        item.insert("parked_at".into(), time_av(now)?);
        item.insert("expires_at".into(), epoch(now + PARKED_TTL));
        self.put(item).await
    }

    /// All parked events of the tenant, oldest `occurred_at` first (every page is read).
    pub async fn list_parked(&self, t: &TenantId) -> Result<Vec<ParkedEvent>, StoreError> {
        self.query_prefix(t, PREFIX)
            .await?
            .iter()
            .map(ParkedEvent::try_from)
            .collect()
    }

    /// Removes one parked event (after it was re-sent).
    pub async fn delete_parked(&self, t: &TenantId, ev: &ParkedEvent) -> Result<(), StoreError> {
        self.ddb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(
                t.partition_key(),
                sort_key(ev.occurred_at, &ev.event_id)?,
            )))
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(())
    }

    /// Every item of the tenant whose sort key starts with `prefix`, in sort-key order, across
    /// all pages (consistent: a park just written is listed).
    pub(super) async fn query_prefix(
        &self,
        t: &TenantId,
        prefix: &str,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let out = self
                .ddb
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk AND begins_with(sk, :prefix)")
                .expression_attribute_values(":pk", s(t.partition_key()))
                .expression_attribute_values(":prefix", s(prefix))
                .consistent_read(true)
                .set_exclusive_start_key(start)
                .send()
                .await
                .map_err(from_sdk)?;
            items.extend(out.items.unwrap_or_default());
            match out.last_evaluated_key {
                Some(k) if !k.is_empty() => start = Some(k),
                _ => return Ok(items),
            }
        }
    }
}
