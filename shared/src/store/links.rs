//! `TENANT#<id> / LEAD#<customer_id>`: which Bitrix24 lead a TeleAgent customer is, and the field
//! values last sent, so an update sends only what changed without reading the lead first
//! (see [`crate::sync::resolution`]).

use std::time::Duration;

use aws_sdk_dynamodb::types::ReturnValue;
use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::Store;
use super::claims::done_item;
use super::error::{StoreError, from_sdk};
use super::item::{Item, Reader, epoch, json_av, key, n, s, time_av};
use crate::tenant::TenantId;

/// The link from a customer to their lead in one portal.
#[derive(Clone, Debug, PartialEq)]
pub struct LeadLink {
    pub customer_id: String,
    pub lead_id: i64,
    /// The portal the lead lives in: a link from a previously connected portal is ignored.
    pub portal_id: String,
    pub phone_e164: Option<String>,
    /// The newest event applied; an older event adds notes but changes no field.
    pub last_event_at: OffsetDateTime,
    /// Field values last sent, by Bitrix24 field name.
    pub sent: Map<String, Value>,
}

/// Sync's bookkeeping kept on the link item beside [`LeadLink`] (added for the sync engine;
/// [`Store::get_link`]/[`Store::put_link`] ignore it).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LinkMeta {
    /// When the lead was last seen as we believe it is: a `get`, or our own create/update.
    pub verified_at: Option<OffsetDateTime>,
    /// The notes last written to the lead (notes are history: only new notes are added).
    pub notes_sent: Option<String>,
    /// Field values an interrupted event sent to the lead without recording them in `sent`
    /// (its answer was lost, or a later step failed). The next event reads the lead and takes
    /// those the CRM shows as its own ([`crate::sync::fields::reconcile_pending`]), so neither
    /// a stale `sent` nor our own landed write passes for a manager's edit.
    pub pending: Map<String, Value>,
    /// What change watching last saw in the CRM, by Bitrix24 field name, for the fields it
    /// reports (status, name, responsible user, the connector's user fields). A value here that
    /// differs from `sent` is a manager's: the next update leaves that field alone. A field the
    /// connector writes again leaves this map (the CRM then shows what was sent).
    pub seen: Map<String, Value>,
}

/// An event finished with its link write ([`Store::put_link_done`]).
#[derive(Clone, Copy, Debug)]
pub struct EventDone<'a> {
    pub event_id: &'a str,
    /// How long the done record lives (longer than the queue's retention plus parking).
    pub ttl: Duration,
    /// What the sync did (kind, customer, lead): the event's audit line.
    pub outcome: &'a Value,
}

/// The `LEAD#` item of a link with sync's bookkeeping.
fn link_item(t: &TenantId, link: &LeadLink, meta: &LinkMeta) -> Result<Item, StoreError> {
    let mut item = key(t.partition_key(), sort_key(&link.customer_id));
    item.insert("customer_id".into(), s(link.customer_id.as_str()));
    item.insert("lead_id".into(), n(link.lead_id));
    item.insert("portal_id".into(), s(link.portal_id.as_str()));
    if let Some(p) = &link.phone_e164 {
        item.insert("phone_e164".into(), s(p.as_str()));
    }
    item.insert("last_event_at".into(), time_av(link.last_event_at)?);
    item.insert("sent".into(), json_av(&Value::Object(link.sent.clone())));
    if let Some(v) = meta.verified_at {
        item.insert("verified_at".into(), time_av(v)?);
    }
    if let Some(notes) = &meta.notes_sent {
        item.insert("notes_sent".into(), s(notes.as_str()));
    }
    if !meta.pending.is_empty() {
        item.insert(
            PENDING.into(),
            json_av(&Value::Object(meta.pending.clone())),
        );
    }
    if !meta.seen.is_empty() {
        item.insert("seen".into(), json_av(&Value::Object(meta.seen.clone())));
    }
    Ok(item)
}

/// What the `LEAD#` item holds: a link, or a create lock ("creating" state) of a consumer that
/// is creating the lead (or crashed while doing so).
#[derive(Clone, Debug, PartialEq)]
pub enum LinkState {
    Linked(LeadLink, LinkMeta),
    Creating {
        portal_id: String,
        until: OffsetDateTime,
    },
}

/// The result of [`Store::claim_lead_create`].
#[derive(Clone, Debug, PartialEq)]
pub enum CreateClaim {
    /// This consumer may search and create. `resumed`: the item was already in the creating
    /// state (an earlier attempt may have created the lead before failing to link it).
    Claimed { resumed: bool },
    /// Another consumer holds the create lock until `until`.
    Held { until: OffsetDateTime },
    /// The lead got linked (same portal) since the caller last read the item.
    Linked(LeadLink, LinkMeta),
}

/// Marks the creating state: the create lock's lease end, epoch milliseconds.
const CREATE_LEASE: &str = "create_lease_until_ms";
/// A creating marker left by a crash outlives retries and parking, then vanishes.
const CREATING_TTL: time::Duration = time::Duration::days(30);
/// Field values an interrupted event may have written ([`LinkMeta::pending`]).
const PENDING: &str = "pending";
/// Claim attempts when the item changes between the failed put and the read that explains it.
const CREATE_CLAIM_ATTEMPTS: usize = 3;

fn epoch_ms(t: OffsetDateTime) -> i128 {
    t.unix_timestamp_nanos() / 1_000_000
}

pub(super) fn link_state(item: &Item) -> Result<LinkState, StoreError> {
    let r = Reader::new(item, "lead link");
    if item.contains_key(CREATE_LEASE) {
        let ms: i128 = r.n(CREATE_LEASE)?;
        let until = OffsetDateTime::from_unix_timestamp_nanos(ms * 1_000_000)
            .map_err(|_| StoreError::corrupt("lead link create lease out of range"))?;
        return Ok(LinkState::Creating {
            portal_id: r.s("portal_id")?.to_owned(),
            until,
        });
    }
    let meta = LinkMeta {
        verified_at: r.opt_time("verified_at")?,
        notes_sent: r.opt_s("notes_sent")?.map(str::to_owned),
        pending: match r.opt_json(PENDING)? {
            Some(Value::Object(m)) => m,
            None => Map::new(),
            Some(_) => {
                return Err(StoreError::corrupt(
                    "lead link attribute pending: not an object",
                ));
            }
        },
        seen: match r.opt_json("seen")? {
            Some(Value::Object(m)) => m,
            _ => Map::new(),
        },
    };
    Ok(LinkState::Linked(LeadLink::try_from(item)?, meta))
}

pub(super) fn sort_key(customer_id: &str) -> String {
    format!("LEAD#{customer_id}")
}

impl TryFrom<&Item> for LeadLink {
    type Error = StoreError;

    fn try_from(item: &Item) -> Result<Self, StoreError> {
        let r = Reader::new(item, "lead link");
        let sent = match r.json("sent")? {
            Value::Object(m) => m,
            _ => {
                return Err(StoreError::corrupt(
                    "lead link attribute sent: not an object",
                ));
            }
        };
        Ok(Self {
            customer_id: r.s("customer_id")?.to_owned(),
            lead_id: r.n("lead_id")?,
            portal_id: r.s("portal_id")?.to_owned(),
            phone_e164: r.opt_s("phone_e164")?.map(str::to_owned),
            last_event_at: r.time("last_event_at")?,
            sent,
        })
    }
}

impl Store {
    /// The link, or `None` when there is none or only a create lock.
    pub async fn get_link(
        &self,
        t: &TenantId,
        customer_id: &str,
    ) -> Result<Option<LeadLink>, StoreError> {
        Ok(match self.get_link_state(t, customer_id).await? {
            Some(LinkState::Linked(link, _)) => Some(link),
            _ => None,
        })
    }

    /// The `LEAD#` item whole: link with its sync bookkeeping, or a create lock.
    pub async fn get_link_state(
        &self,
        t: &TenantId,
        customer_id: &str,
    ) -> Result<Option<LinkState>, StoreError> {
        let item = self
            .get(key(t.partition_key(), sort_key(customer_id)))
            .await?;
        item.as_ref().map(link_state).transpose()
    }

    /// Writes the link whole. Unconditional: events of one customer are one FIFO group, so only
    /// one consumer writes a given link at a time.
    pub async fn put_link(&self, t: &TenantId, link: &LeadLink) -> Result<(), StoreError> {
        self.put_link_with(t, link, &LinkMeta::default()).await
    }

    /// Writes the link whole with sync's bookkeeping; a create lock on the item is replaced.
    pub async fn put_link_with(
        &self,
        t: &TenantId,
        link: &LeadLink,
        meta: &LinkMeta,
    ) -> Result<(), StoreError> {
        self.put(link_item(t, link, meta)?).await
    }

    /// Writes the link whole and marks `done.event_id` done, in ONE request (BatchWriteItem: two
    /// unconditional puts, each at a put's price). This is how sync ends an event: the done
    /// mark is also its audit line. Both puts are unconditional, as [`Store::put_link_with`]
    /// and [`Store::complete_event`] are; a put DynamoDB leaves unprocessed is sent again.
    pub async fn put_link_done(
        &self,
        t: &TenantId,
        link: &LeadLink,
        meta: &LinkMeta,
        done: &EventDone<'_>,
    ) -> Result<(), StoreError> {
        let items = vec![
            link_item(t, link, meta)?,
            done_item(t, done.event_id, done.ttl, Some(done.outcome))?,
        ];
        self.put_all(items).await
    }

    /// Keeps on the link what an event sent to `lead_id` before it failed, unrecorded
    /// ([`LinkMeta::pending`]). Only while the item still links that lead: a link dropped or
    /// replaced meanwhile is left alone (`Ok(false)`).
    pub async fn mark_link_pending(
        &self,
        t: &TenantId,
        customer_id: &str,
        lead_id: i64,
        pending: &Map<String, Value>,
    ) -> Result<bool, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(t.partition_key(), sort_key(customer_id))))
            .update_expression("SET #p = :p")
            .condition_expression("lead_id = :id AND attribute_not_exists(#lock)")
            .expression_attribute_names("#p", PENDING)
            .expression_attribute_names("#lock", CREATE_LEASE)
            .expression_attribute_values(":p", json_av(&Value::Object(pending.clone())))
            .expression_attribute_values(":id", n(lead_id))
            .send()
            .await
            .map_err(from_sdk);
        match res {
            Ok(_) => Ok(true),
            Err(StoreError::Conflict) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Drops a link (its lead was deleted in the CRM); absent is fine.
    pub async fn delete_link(&self, t: &TenantId, customer_id: &str) -> Result<(), StoreError> {
        self.ddb
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(t.partition_key(), sort_key(customer_id))))
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(())
    }

    /// Takes the per-customer create lock: a conditional put of the `LEAD#` item in the creating
    /// state, allowed when the item is absent, is a create lock whose lease ended, or links a
    /// lead of another portal. Two consumers of one customer therefore never both create.
    #[tracing::instrument(skip_all, fields(tenant_id = %t, customer_id = %customer_id))]
    pub async fn claim_lead_create(
        &self,
        t: &TenantId,
        customer_id: &str,
        portal_id: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> Result<CreateClaim, StoreError> {
        for _ in 0..CREATE_CLAIM_ATTEMPTS {
            let mut item = key(t.partition_key(), sort_key(customer_id));
            item.insert("customer_id".into(), s(customer_id));
            item.insert("portal_id".into(), s(portal_id));
            item.insert(CREATE_LEASE.into(), n(epoch_ms(now + lease)));
            item.insert("expires_at".into(), epoch(now + CREATING_TTL));
            let res = self
                .ddb
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item))
                .condition_expression(
                    "attribute_not_exists(pk) OR (attribute_exists(#cl) AND #cl < :now) \
                     OR (attribute_not_exists(#cl) AND portal_id <> :portal)",
                )
                .expression_attribute_names("#cl", CREATE_LEASE)
                .expression_attribute_values(":now", n(epoch_ms(now)))
                .expression_attribute_values(":portal", s(portal_id))
                .return_values(ReturnValue::AllOld)
                .send()
                .await
                .map_err(from_sdk);
            match res {
                Ok(out) => {
                    let resumed = out
                        .attributes
                        .is_some_and(|old| old.contains_key(CREATE_LEASE));
                    return Ok(CreateClaim::Claimed { resumed });
                }
                Err(StoreError::Conflict) => {}
                Err(e) => return Err(e),
            }
            match self.get_link_state(t, customer_id).await? {
                Some(LinkState::Creating { until, .. }) if until >= now => {
                    return Ok(CreateClaim::Held { until });
                }
                Some(LinkState::Linked(link, meta)) if link.portal_id == portal_id => {
                    return Ok(CreateClaim::Linked(link, meta));
                }
                // Changed between the put and the read: try again.
                _ => {}
            }
        }
        Err(StoreError::Conflict)
    }

    /// Gives the create lock back. `keep_marker`: a create call was attempted, so the item stays
    /// in the creating state with an ended lease (the next attempt resumes by searching
    /// `ORIGIN_ID` first); otherwise the lock item is deleted. A link written meanwhile is kept.
    pub async fn release_lead_create(
        &self,
        t: &TenantId,
        customer_id: &str,
        keep_marker: bool,
    ) -> Result<(), StoreError> {
        let k = key(t.partition_key(), sort_key(customer_id));
        let res = if keep_marker {
            self.ddb
                .update_item()
                .table_name(&self.table)
                .set_key(Some(k))
                .update_expression("SET #cl = :zero")
                .condition_expression("attribute_exists(#cl)")
                .expression_attribute_names("#cl", CREATE_LEASE)
                .expression_attribute_values(":zero", n(0))
                .send()
                .await
                .map(|_| ())
                .map_err(from_sdk)
        } else {
            self.ddb
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(k))
                .condition_expression("attribute_exists(#cl)")
                .expression_attribute_names("#cl", CREATE_LEASE)
                .send()
                .await
                .map(|_| ())
                .map_err(from_sdk)
        };
        match res {
            Ok(()) | Err(StoreError::Conflict) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
