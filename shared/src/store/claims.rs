//! `TENANT#<id> / EVENT#<event_id>`: the idempotency record. A consumer claims an event with a
//! lease before touching Bitrix24; `done` records outlive the queue's retention plus the parking
//! period, so a redelivered event is acknowledged without a second CRM write.

use std::time::Duration;

use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValuesOnConditionCheckFailure};
use time::OffsetDateTime;

use super::Store;
use super::error::{StoreError, conflict_is_done, from_sdk};
use super::item::{Item, Reader, epoch, key, n, s, time_av};
use crate::tenant::TenantId;

const IN_PROGRESS: &str = "in_progress";
const DONE: &str = "done";
/// An abandoned claim (crashed consumer) vanishes this long after its lease ends.
const ABANDONED_GRACE: Duration = Duration::from_secs(24 * 3600);
/// Claim attempts when the record that refused a claim was released or its lease ended meanwhile.
const CLAIM_ATTEMPTS: usize = 3;

/// The outcome of [`Store::claim_event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// This consumer holds the event until the lease ends.
    Claimed,
    /// The event was processed: acknowledge without touching Bitrix24.
    AlreadyDone,
    /// Another consumer holds a live lease: report the item failed, never acknowledge it.
    HeldByOther { until: OffsetDateTime },
}

/// What a record that refused a claim says: done, held by a live lease, or `None` when its
/// lease has just expired (the claim is tried again).
fn held_or_done(rec: &Item, now: OffsetDateTime) -> Result<Option<Claim>, StoreError> {
    let r = Reader::new(rec, "event");
    match r.s("status")? {
        DONE => Ok(Some(Claim::AlreadyDone)),
        IN_PROGRESS => {
            let until = from_millis(r.n("lease_until_ms")?)?;
            Ok((until >= now).then_some(Claim::HeldByOther { until }))
        }
        other => Err(StoreError::corrupt(format!(
            "event status {other:?} is unknown"
        ))),
    }
}

/// The `done` record of an event (see [`Store::complete_event`]); also written beside the lead
/// link in one request ([`Store::put_link_done`]).
pub(super) fn done_item(
    t: &TenantId,
    event_id: &str,
    done_ttl: Duration,
    outcome: Option<&serde_json::Value>,
) -> Result<Item, StoreError> {
    let now = OffsetDateTime::now_utc();
    let mut item = key(t.partition_key(), sort_key(event_id));
    item.insert("status".into(), s(DONE));
    item.insert("done_at".into(), time_av(now)?);
    item.insert("expires_at".into(), epoch(now + done_ttl));
    if let Some(outcome) = outcome {
        item.insert("outcome".into(), s(outcome.to_string()));
    }
    Ok(item)
}

fn sort_key(event_id: &str) -> String {
    format!("EVENT#{event_id}")
}

fn millis(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos() / 1_000_000
}

fn from_millis(ms: i128) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
        .map_err(|_| StoreError::corrupt("event lease_until_ms out of range"))
}

impl Store {
    /// Atomically claims the event: a conditional put succeeds if no record exists, or if the
    /// record is `in_progress` with an expired lease (its consumer died). A refused put returns
    /// the record it found (`ReturnValuesOnConditionCheckFailure`), which tells done from held
    /// without a read.
    #[tracing::instrument(skip_all, fields(tenant_id = %t, event_id = %event_id))]
    pub async fn claim_event(
        &self,
        t: &TenantId,
        event_id: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        let until = now + lease;
        for _ in 0..CLAIM_ATTEMPTS {
            let mut item = key(t.partition_key(), sort_key(event_id));
            item.insert("status".into(), s(IN_PROGRESS));
            item.insert("lease_until_ms".into(), n(millis(until)));
            item.insert("claimed_at".into(), time_av(now)?);
            item.insert("expires_at".into(), epoch(until + ABANDONED_GRACE));
            let res = self
                .ddb
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(
                    "attribute_not_exists(pk) OR (#st = :ip AND lease_until_ms < :now)",
                )
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":ip", s(IN_PROGRESS))
                .expression_attribute_values(":now", n(millis(now)))
                .return_values_on_condition_check_failure(
                    ReturnValuesOnConditionCheckFailure::AllOld,
                )
                .send()
                .await;
            let found = match res {
                Ok(_) => return Ok(Claim::Claimed),
                Err(e) => match e.into_service_error() {
                    PutItemError::ConditionalCheckFailedException(c) => match c.item {
                        Some(item) => Some(item),
                        // A service that does not return the item: read it.
                        None => self.read_event(t, event_id).await?,
                    },
                    other => return Err(from_sdk(other)),
                },
            };
            // Released between the put and its refusal: try again.
            let Some(rec) = found else {
                continue;
            };
            if let Some(claim) = held_or_done(&rec, now)? {
                return Ok(claim);
            }
        }
        Err(StoreError::Conflict)
    }

    async fn read_event(&self, t: &TenantId, event_id: &str) -> Result<Option<Item>, StoreError> {
        let item = self.get(key(t.partition_key(), sort_key(event_id))).await?;
        Ok(item)
    }

    /// Marks the event done; the record expires `done_ttl` from now (sync passes 30 days, longer
    /// than the queue's retention plus the parking period). `outcome` is what the sync did (kind,
    /// customer, lead): the done record is the event's audit line, one write for both.
    pub async fn complete_event(
        &self,
        t: &TenantId,
        event_id: &str,
        done_ttl: Duration,
        outcome: Option<&serde_json::Value>,
    ) -> Result<(), StoreError> {
        self.put(done_item(t, event_id, done_ttl, outcome)?).await
    }

    /// Gives an in-progress claim back at once so a retry need not wait for the lease. A `done`
    /// record is never removed (the condition keeps it); an absent record is fine.
    pub async fn release_event(&self, t: &TenantId, event_id: &str) -> Result<(), StoreError> {
        let res = self
            .ddb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(t.partition_key(), sort_key(event_id))))
            .condition_expression("#st = :ip")
            .expression_attribute_names("#st", "status")
            .expression_attribute_values(":ip", AttributeValue::S(IN_PROGRESS.into()))
            .send()
            .await
            .map_err(from_sdk);
        conflict_is_done(res)
    }
}
