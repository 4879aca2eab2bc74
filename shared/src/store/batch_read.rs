//! What one lead batch reads at once: the integration of each tenant in the batch and the
//! `LEAD#` link of each group's first customer, in ONE BatchGetItem (strongly consistent), instead
//! of a GetItem per event for each. Keys DynamoDB leaves unprocessed are simply not prefetched:
//! their events read them on their own, as before.

use std::collections::{HashMap, HashSet};

use aws_sdk_dynamodb::types::KeysAndAttributes;

use super::Store;
use super::error::{StoreError, from_sdk};
use super::integration::{Integration, SK as INTEGRATION_SK};
use super::item::{Item, Reader, key};
use super::links::{LinkState, link_state, sort_key as link_sort_key};
use crate::tenant::TenantId;

/// BatchGetItem takes at most 100 keys per request.
const MAX_KEYS: usize = 100;

/// The batch's prefetched items. A key that was read and found absent is `None` (no
/// integration, no link); a key that was not read at all is missing from the map.
#[derive(Debug, Default)]
pub struct BatchRead {
    /// By tenant id.
    pub integrations: HashMap<String, Option<Integration>>,
    /// By (tenant id, customer id).
    pub links: HashMap<(String, String), Option<LinkState>>,
}

impl Store {
    /// Reads the integrations of `customers`' tenants and those customers' links together.
    /// Up to 100 keys (a lead batch has at most 10 events, so 20); more are left unread.
    pub async fn read_for_batch(
        &self,
        customers: &[(TenantId, String)],
    ) -> Result<BatchRead, StoreError> {
        let mut tenants = HashSet::new();
        let mut keys: Vec<Item> = Vec::new();
        let mut wanted: HashSet<(String, String)> = HashSet::new();
        for (t, customer) in customers {
            if tenants.insert(t.as_str().to_owned()) {
                keys.push(key(t.partition_key(), INTEGRATION_SK.to_owned()));
            }
            if wanted.insert((t.as_str().to_owned(), customer.clone())) {
                keys.push(key(t.partition_key(), link_sort_key(customer)));
            }
        }
        keys.truncate(MAX_KEYS);
        let mut read = BatchRead::default();
        if keys.is_empty() {
            return Ok(read);
        }
        let asked: Vec<(String, String)> = keys.iter().filter_map(key_strings).collect();
        let request = KeysAndAttributes::builder()
            .set_keys(Some(keys))
            .consistent_read(true)
            .build()
            .map_err(|e| StoreError::corrupt(format!("batch get: {e}")))?;
        let out = self
            .ddb
            .batch_get_item()
            .request_items(self.table.clone(), request)
            .send()
            .await
            .map_err(from_sdk)?;
        let unprocessed: HashSet<(String, String)> = out
            .unprocessed_keys
            .as_ref()
            .and_then(|u| u.get(&self.table))
            .map(|k| k.keys().iter().filter_map(key_strings).collect())
            .unwrap_or_default();
        let mut found: HashMap<(String, String), Item> = HashMap::new();
        for item in out
            .responses
            .and_then(|mut r| r.remove(&self.table))
            .unwrap_or_default()
        {
            if let Some(k) = key_strings(&item) {
                found.insert(k, item);
            }
        }
        for (pk, sk) in asked {
            if unprocessed.contains(&(pk.clone(), sk.clone())) {
                continue;
            }
            let Some(tenant) = pk.strip_prefix("TENANT#").map(str::to_owned) else {
                continue;
            };
            let item = found.remove(&(pk, sk.clone()));
            if sk == INTEGRATION_SK {
                let integ = item.as_ref().map(Integration::try_from).transpose()?;
                read.integrations.insert(tenant, integ);
            } else if let Some(customer) = sk.strip_prefix("LEAD#") {
                let link = item.as_ref().map(link_state).transpose()?;
                read.links.insert((tenant, customer.to_owned()), link);
            }
        }
        Ok(read)
    }
}

/// An item's (or key's) `pk` and `sk`.
fn key_strings(item: &Item) -> Option<(String, String)> {
    let r = Reader::new(item, "key");
    Some((r.s("pk").ok()?.to_owned(), r.s("sk").ok()?.to_owned()))
}
