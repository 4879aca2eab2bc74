//! The DynamoDB store: one table, every item under `pk = TENANT#<id>` (design.md §3). Every
//! method takes the [`TenantId`] and builds the partition key itself, so no call can reach
//! another tenant's items; conditional writes carry the concurrency rules of design.md §4.
//!
//! One file per item kind, each with its own mapping (`item.rs` holds the shared helpers); the
//! rest of the crate never sees an `AttributeValue`.

mod audit;
mod budget;
mod error;
mod events;
mod integration;
mod item;
mod links;
mod parked;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};

pub use audit::AuditEntry;
pub use budget::{BucketDecision, bucket_take};
pub use error::StoreError;
pub use events::Claim;
pub use integration::{Integration, NewConnection, RateParams, SyncStatus};
pub use links::{CreateClaim, LeadLink, LinkMeta, LinkState};
pub use parked::ParkedEvent;

/// The single-table store. Cheap to clone: the client and the request counter are shared.
#[derive(Clone, Debug)]
pub struct Store {
    ddb: aws_sdk_dynamodb::Client,
    table: String,
    calls: Arc<AtomicU64>,
}

/// Counts every request attempt the SDK transmits (retries included), for the benchmark's
/// "DynamoDB requests per event"; counting in an interceptor keeps it out of every method.
#[derive(Debug)]
struct RequestCounter(Arc<AtomicU64>);

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "teleagent-request-counter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

impl Store {
    /// Wraps the container's client (its config is reused, plus a request counter).
    pub fn new(ddb: aws_sdk_dynamodb::Client, table: String) -> Self {
        let calls = Arc::new(AtomicU64::new(0));
        let conf = ddb
            .config()
            .to_builder()
            .interceptor(RequestCounter(calls.clone()))
            .build();
        Self {
            ddb: aws_sdk_dynamodb::Client::from_conf(conf),
            table,
            calls,
        }
    }

    /// DynamoDB requests sent by this store and its clones (each retry attempt counts).
    pub fn ddb_calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
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
