//! `TENANT#<id> / PARKED#<occurred_at>#<event_id>`: events kept while the integration is in
//! `error` (or after their retries ran out), re-sent in `occurred_at` order once the portal is
//! usable again (see [`crate::sync::replay`]). The fixed-width UTC time in the sort key makes a
//! key-ordered query return them in that order.
//!
//! Each parked copy has its own `parked_id`: a replay deletes a parked event only if it is still
//! the copy that was sent, so an event parked again in between is kept. The integration item
//! counts them (`parked_count`, added to on park and taken from on delete) so that lead-sync,
//! which reads that item for every event anyway, knows without another read when a replay is
//! due, and `status` can show the number.

use time::{Duration as TimeDuration, OffsetDateTime};

use super::Store;
use super::error::{StoreError, conflict_is_done, from_sdk};
use super::integration::SK as INTEGRATION_SK;
use super::item::{Item, Reader, epoch, fmt_time, key, n, s, time_av};
use crate::tenant::TenantId;

/// Parked events expire after this; the `done` idempotency TTL is longer.
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
    /// This copy's id (absent on copies parked by an older version).
    pub parked_id: Option<String>,
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
            parked_id: r.opt_s("parked_id")?.map(str::to_owned),
        })
    }
}

impl Store {
    /// Keeps an event for later; parking the same event twice keeps one copy (the newer). The
    /// integration's `parked_count` goes up by one (a second park of one event counts twice;
    /// a replay that finds nothing left sets the count right again).
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
        item.insert("parked_id".into(), s(uuid::Uuid::new_v4().to_string()));
        item.insert("parked_at".into(), time_av(now)?);
        item.insert("expires_at".into(), epoch(now + PARKED_TTL));
        self.put(item).await?;
        self.add_parked_count(t, 1).await
    }

    /// `parked_count += delta` on an existing integration item (none: nothing to count).
    async fn add_parked_count(&self, t: &TenantId, delta: i64) -> Result<(), StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(t.partition_key(), INTEGRATION_SK.to_owned())))
            .update_expression("ADD parked_count :d")
            .condition_expression("attribute_exists(version)")
            .expression_attribute_values(":d", n(delta))
            .send()
            .await
            .map_err(from_sdk);
        conflict_is_done(res)
    }

    /// Sets `parked_count` to 0 if it still is `seen` (a replay found nothing left parked; a
    /// park in between keeps its count).
    pub async fn reset_parked_count(&self, t: &TenantId, seen: u64) -> Result<(), StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(t.partition_key(), INTEGRATION_SK.to_owned())))
            .update_expression("SET parked_count = :zero")
            .condition_expression("attribute_exists(version) AND (parked_count = :seen OR attribute_not_exists(parked_count))")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":seen", n(seen))
            .send()
            .await
            .map_err(from_sdk);
        conflict_is_done(res)
    }

    /// All parked events of the tenant, oldest `occurred_at` first (every page is read).
    pub async fn list_parked(&self, t: &TenantId) -> Result<Vec<ParkedEvent>, StoreError> {
        self.query_prefix(t, PREFIX)
            .await?
            .iter()
            .map(ParkedEvent::try_from)
            .collect()
    }

    /// Removes one parked event after it was re-sent, only if it is still the copy that was
    /// sent: [`StoreError::Conflict`] when it was parked again in between (that copy stays).
    pub async fn delete_parked(&self, t: &TenantId, ev: &ParkedEvent) -> Result<(), StoreError> {
        let req = self
            .ddb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(
                t.partition_key(),
                sort_key(ev.occurred_at, &ev.event_id)?,
            )));
        let req = match &ev.parked_id {
            Some(id) => req
                .condition_expression("parked_id = :id")
                .expression_attribute_values(":id", s(id.as_str())),
            None => {
                req.condition_expression("attribute_exists(pk) AND attribute_not_exists(parked_id)")
            }
        };
        req.send().await.map_err(from_sdk)?;
        if let Err(e) = self.add_parked_count(t, -1).await {
            tracing::warn!(error = %e, "could not count the replayed event off");
        }
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
