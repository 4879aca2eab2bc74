//! The DynamoDB store: one table, every item under `pk = TENANT#<id>` (the integration, lead
//! links, event claims, parked events, audit lines, the rate budget, change watching's cursor). Every method takes the
//! [`TenantId`](crate::tenant::TenantId) and builds the partition key itself, so no call can
//! reach another tenant's items; conditional writes carry the concurrency rules (version guards
//! on the integration, leases on claims and create locks, the shared rate budget).
//!
//! One file per item kind, each with its own mapping (`item.rs` holds the shared helpers); the
//! rest of the crate never sees an `AttributeValue`.

mod audit;
mod batch_read;
mod budget;
mod claims;
mod error;
mod integration;
mod item;
mod links;
mod parked;
mod watch;

pub use audit::AuditEntry;
pub use batch_read::BatchRead;
pub use budget::{BucketDecision, TokenTake, bucket_take};
pub use claims::Claim;
pub use error::StoreError;
pub use integration::{Integration, NewConnection, RateParams, SyncStatus};
pub use links::{CreateClaim, EventDone, LeadLink, LinkMeta, LinkState};
pub use parked::ParkedEvent;
pub use watch::{
    WATCH_INDEX, WATCH_SHARD_ATTR, WATCH_SHARDS, WatchCandidate, WatchCursor, all_watch_shards,
    watch_shard,
};

/// BatchWriteItem rounds before puts DynamoDB keeps leaving unprocessed fail the write.
const BATCH_ATTEMPTS: u32 = 4;

/// The single-table store. Cheap to clone: the client is shared.
#[derive(Clone, Debug)]
pub struct Store {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    /// The rate budget as this container last saw it (see `budget`).
    tat: budget::TatCache,
}

impl Store {
    /// Wraps the container's client. Requests are counted where they are answered (the
    /// benchmark's proxy in front of moto), not here.
    pub fn new(ddb: aws_sdk_dynamodb::Client, table: String) -> Self {
        Self {
            ddb,
            table,
            tat: Default::default(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// A strongly consistent GetItem by key (a write just made is seen).
    pub(super) async fn get(&self, key: item::Item) -> Result<Option<item::Item>, StoreError> {
        let out = self
            .ddb
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key))
            .consistent_read(true)
            .send()
            .await
            .map_err(error::from_sdk)?;
        Ok(out.item)
    }

    /// Unconditional puts of up to 25 items in one BatchWriteItem. Items DynamoDB leaves
    /// unprocessed (throttling) are sent again after a short pause, a few times, then the write
    /// fails as throttled: the caller's retry decides, nothing is half-reported as done.
    pub(super) async fn put_all(&self, items: Vec<item::Item>) -> Result<(), StoreError> {
        use aws_sdk_dynamodb::types::{PutRequest, WriteRequest};
        let mut requests = items
            .into_iter()
            .map(|item| {
                PutRequest::builder()
                    .set_item(Some(item))
                    .build()
                    .map(|put| WriteRequest::builder().put_request(put).build())
                    .map_err(|e| StoreError::corrupt(format!("batch put: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        for attempt in 0..BATCH_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(50 << attempt)).await;
            }
            let out = self
                .ddb
                .batch_write_item()
                .request_items(self.table.clone(), requests)
                .send()
                .await
                .map_err(error::from_sdk)?;
            requests = out
                .unprocessed_items
                .and_then(|mut left| left.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            tracing::warn!(
                left = requests.len(),
                "DynamoDB left batch puts unprocessed"
            );
        }
        Err(StoreError::Unprocessed)
    }

    /// An unconditional PutItem: the item replaces whatever has its key. Every item built by
    /// this module already carries `pk = TENANT#<id>` from the caller's tenant.
    pub(super) async fn put(&self, item: item::Item) -> Result<(), StoreError> {
        self.ddb
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(error::from_sdk)?;
        Ok(())
    }
}
