//! Where the sync core meets the outside, one narrow trait per job: the event claims, the lead
//! links (with the per-customer create lock), the rate budget, opening a stored token, and the
//! lead operations on the portal. The DynamoDB [`Store`], the KMS [`Vault`] and the budgeted
//! CRM client implement them in production; the unit tests implement them in memory, so the
//! rules above them run in milliseconds without moto or the sandbox.

use std::future::Future;
use std::time::Duration;

use serde_json::{Map, Value};
use time::OffsetDateTime;

use super::failure::SyncError;
use crate::crm::Operation;
use crate::secret::SecretToken;
use crate::store::{
    Claim, CreateClaim, EventDone, LeadLink, LinkMeta, LinkState, RateParams, Store, StoreError,
    TokenTake,
};
use crate::tenant::TenantId;
use crate::vault::{Vault, VaultError};

/// A lead as the portal returns it (`ID`, `STATUS_ID`, `PHONE`, ...).
pub type Lead = Map<String, Value>;

/// The `EVENT#` idempotency records: claim and release.
pub trait EventClaims: Sync {
    fn claim(
        &self,
        t: &TenantId,
        event_id: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<Claim, StoreError>> + Send;
    /// Gives an in-progress claim back (the event failed). The done mark is written with the
    /// event's link ([`LeadLinks::put_link_done`]).
    fn release(
        &self,
        t: &TenantId,
        event_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The `LEAD#` links and the create lock that keeps two consumers from creating one customer
/// twice.
pub trait LeadLinks: Sync {
    fn link_state(
        &self,
        t: &TenantId,
        customer_id: &str,
    ) -> impl Future<Output = Result<Option<LinkState>, StoreError>> + Send;
    /// Writes the link and marks the event done, together (one request in DynamoDB).
    fn put_link_done(
        &self,
        t: &TenantId,
        link: &LeadLink,
        meta: &LinkMeta,
        done: &EventDone<'_>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn delete_link(
        &self,
        t: &TenantId,
        customer_id: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    fn claim_create(
        &self,
        t: &TenantId,
        customer_id: &str,
        portal_id: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> impl Future<Output = Result<CreateClaim, StoreError>> + Send;
    /// `attempted`: a create was sent, so the marker stays for the ORIGIN_ID search of a retry.
    fn release_create(
        &self,
        t: &TenantId,
        customer_id: &str,
        attempted: bool,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// The portal's request budget shared by every consumer: a token now, one due within
/// `horizon` (the caller waits for it), or none.
pub trait RateBudget: Sync {
    fn take(
        &self,
        t: &TenantId,
        rate: &RateParams,
        now: OffsetDateTime,
        horizon: Duration,
    ) -> impl Future<Output = Result<TokenTake, StoreError>> + Send;
}

/// Opens a stored token (KMS Decrypt with the tenant's encryption context).
pub trait TokenOpener: Sync {
    fn open(
        &self,
        t: &TenantId,
        ciphertext: &[u8],
    ) -> impl Future<Output = Result<SecretToken, VaultError>> + Send;
}

/// The lead operations one event needs, each one `tools/call` taken from the rate budget.
/// `Ok(false)` / `Ok(None)` mean the lead no longer exists.
pub trait LeadCrm: Send {
    fn has(&self, op: Operation) -> bool;
    fn find_by_phones(
        &mut self,
        spellings: &[String],
    ) -> impl Future<Output = Result<Vec<i64>, SyncError>> + Send;
    fn find_by_origin(
        &mut self,
        origin_id: &str,
    ) -> impl Future<Output = Result<Vec<i64>, SyncError>> + Send;
    fn create_lead(
        &mut self,
        fields: Map<String, Value>,
    ) -> impl Future<Output = Result<i64, SyncError>> + Send;
    fn update_lead(
        &mut self,
        id: i64,
        fields: Map<String, Value>,
    ) -> impl Future<Output = Result<bool, SyncError>> + Send;
    fn get_lead(&mut self, id: i64)
    -> impl Future<Output = Result<Option<Lead>, SyncError>> + Send;
    fn add_comment(
        &mut self,
        id: i64,
        text: &str,
    ) -> impl Future<Output = Result<bool, SyncError>> + Send;
}

impl EventClaims for Store {
    async fn claim(
        &self,
        t: &TenantId,
        event_id: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> Result<Claim, StoreError> {
        self.claim_event(t, event_id, lease, now).await
    }

    async fn release(&self, t: &TenantId, event_id: &str) -> Result<(), StoreError> {
        self.release_event(t, event_id).await
    }
}

impl LeadLinks for Store {
    async fn link_state(
        &self,
        t: &TenantId,
        customer_id: &str,
    ) -> Result<Option<LinkState>, StoreError> {
        self.get_link_state(t, customer_id).await
    }

    async fn put_link_done(
        &self,
        t: &TenantId,
        link: &LeadLink,
        meta: &LinkMeta,
        done: &EventDone<'_>,
    ) -> Result<(), StoreError> {
        Store::put_link_done(self, t, link, meta, done).await
    }

    async fn delete_link(&self, t: &TenantId, customer_id: &str) -> Result<(), StoreError> {
        Store::delete_link(self, t, customer_id).await
    }

    async fn claim_create(
        &self,
        t: &TenantId,
        customer_id: &str,
        portal_id: &str,
        lease: Duration,
        now: OffsetDateTime,
    ) -> Result<CreateClaim, StoreError> {
        self.claim_lead_create(t, customer_id, portal_id, lease, now)
            .await
    }

    async fn release_create(
        &self,
        t: &TenantId,
        customer_id: &str,
        attempted: bool,
    ) -> Result<(), StoreError> {
        self.release_lead_create(t, customer_id, attempted).await
    }
}

impl RateBudget for Store {
    async fn take(
        &self,
        t: &TenantId,
        rate: &RateParams,
        now: OffsetDateTime,
        horizon: Duration,
    ) -> Result<TokenTake, StoreError> {
        self.reserve_rate_token(t, rate, now, horizon).await
    }
}

impl TokenOpener for Vault {
    async fn open(&self, t: &TenantId, ciphertext: &[u8]) -> Result<SecretToken, VaultError> {
        self.decrypt(t, ciphertext).await
    }
}
