//! `TENANT#<id> / LEAD#<customer_id>`: which Bitrix24 lead a TeleAgent customer is, and the field
//! values last sent, so an update sends only what changed without reading the lead first
//! (design.md §4 steps 4-6).

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::Store;
use super::error::{StoreError, from_sdk};
use super::item::{Item, Reader, json_av, key, n, s, time_av};
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

fn sort_key(customer_id: &str) -> String {
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
    pub async fn get_link(
        &self,
        t: &TenantId,
        customer_id: &str,
    ) -> Result<Option<LeadLink>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(t.partition_key(), sort_key(customer_id))))
            .consistent_read(true)
            .send()
            .await
            .map_err(from_sdk)?;
        out.item.as_ref().map(LeadLink::try_from).transpose()
    }

    /// Writes the link whole. Unconditional: events of one customer are one FIFO group, so only
    /// one consumer writes a given link at a time.
    pub async fn put_link(&self, t: &TenantId, link: &LeadLink) -> Result<(), StoreError> {
        let mut item = key(t.partition_key(), sort_key(&link.customer_id));
        item.insert("customer_id".into(), s(link.customer_id.as_str()));
        item.insert("lead_id".into(), n(link.lead_id));
        item.insert("portal_id".into(), s(link.portal_id.as_str()));
        if let Some(p) = &link.phone_e164 {
            item.insert("phone_e164".into(), s(p.as_str()));
        }
        item.insert("last_event_at".into(), time_av(link.last_event_at)?);
        item.insert("sent".into(), json_av(&Value::Object(link.sent.clone())));
        self.ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(from_sdk)?;
        Ok(())
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
}
