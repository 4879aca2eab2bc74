//! `TENANT#<id> / BITRIX#MCP`: the tenant's connection. Its `version` moves on every connection
//! change so warm containers can tell a cached token is stale, and guards the writes that must
//! not undo a newer connect.

use aws_sdk_dynamodb::types::ReturnValue;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use super::Store;
use super::error::{StoreError, from_sdk};
use super::item::{Item, Reader, b, json_av, key, n, s, time_av};
use crate::tenant::TenantId;

pub(super) const SK: &str = "BITRIX#MCP";

/// Sync health of a connected integration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncStatus {
    Active,
    /// Integration-wide failure (revoked token, missing scope, changed tools): events are parked
    /// until a connect or test succeeds.
    Error,
    Paused,
}

impl SyncStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Error => "error",
            Self::Paused => "paused",
        }
    }

    fn parse(raw: &str) -> Option<Self> {
        match raw {
            "active" => Some(Self::Active),
            "error" => Some(Self::Error),
            "paused" => Some(Self::Paused),
            _ => None,
        }
    }
}

/// The portal's request budget: Bitrix24 allows 2 req/s with a burst of 50 by default
/// (Enterprise: 5/s, 250), so the bucket is a per-portal parameter, not a constant. It lives in
/// the integration item (`rate_per_sec`, `rate_burst`): an operator raises it for an Enterprise
/// portal by changing those two attributes, without a deploy, and a reconnect keeps them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateParams {
    pub per_sec: f64,
    pub burst: f64,
}

impl Default for RateParams {
    fn default() -> Self {
        Self {
            per_sec: 2.0,
            burst: 50.0,
        }
    }
}

/// The stored connection. `token_ciphertext` is `None` after a disconnect; the item stays so
/// `last_sync_at` and `disconnected_at` can be shown.
#[derive(Clone, Debug, PartialEq)]
pub struct Integration {
    pub token_ciphertext: Option<Vec<u8>>,
    pub mcp_url: Option<String>,
    pub portal_id: Option<String>,
    pub connected_at: Option<OffsetDateTime>,
    pub last_sync_at: Option<OffsetDateTime>,
    pub sync_status: Option<SyncStatus>,
    pub last_error: Option<String>,
    /// The bound tools (the crm layer's own JSON).
    pub binding: Option<Value>,
    pub portal_info: Option<Value>,
    pub rate: RateParams,
    pub disconnected_at: Option<OffsetDateTime>,
    /// Connection version: bumped by every connection change (connect, disconnect, status,
    /// binding), NOT by `last_sync_at` updates: warm containers cache the decrypted token keyed
    /// by it, and a sync must not invalidate every other container's cache.
    pub version: u64,
    /// How many events are parked (see [`Store::park_event`]); 0 when none.
    pub parked_count: u64,
    /// When change watching last finished a round for this tenant.
    pub last_watch_at: Option<OffsetDateTime>,
    /// Where change watching goes on from (see [`super::watch`]).
    pub watch_cursor: Option<super::watch::WatchCursor>,
}

impl Integration {
    /// Connected means a token is stored; the status says whether it currently works.
    pub fn is_connected(&self) -> bool {
        self.token_ciphertext.is_some()
    }
}

/// What a successful connect stores.
#[derive(Clone, Debug, PartialEq)]
pub struct NewConnection {
    pub token_ciphertext: Vec<u8>,
    pub mcp_url: String,
    pub portal_id: String,
    pub binding: Value,
    pub portal_info: Value,
    pub rate: RateParams,
    pub connected_at: OffsetDateTime,
}

impl TryFrom<&Item> for Integration {
    type Error = StoreError;

    fn try_from(item: &Item) -> Result<Self, StoreError> {
        let r = Reader::new(item, "integration");
        let sync_status = r
            .opt_s("sync_status")?
            .map(|v| {
                SyncStatus::parse(v).ok_or_else(|| {
                    StoreError::corrupt(format!("integration sync_status {v:?} is unknown"))
                })
            })
            .transpose()?;
        let defaults = RateParams::default();
        Ok(Self {
            token_ciphertext: r.opt_b("token_ciphertext")?,
            mcp_url: r.opt_s("mcp_url")?.map(str::to_owned),
            portal_id: r.opt_s("portal_id")?.map(str::to_owned),
            connected_at: r.opt_time("connected_at")?,
            last_sync_at: r.opt_time("last_sync_at")?,
            sync_status,
            last_error: r.opt_s("last_error")?.map(str::to_owned),
            binding: r.opt_json("binding")?,
            portal_info: r.opt_json("portal_info")?,
            rate: RateParams {
                per_sec: r.opt_n("rate_per_sec")?.unwrap_or(defaults.per_sec),
                burst: r.opt_n("rate_burst")?.unwrap_or(defaults.burst),
            },
            disconnected_at: r.opt_time("disconnected_at")?,
            version: r.n("version")?,
            parked_count: r.opt_n::<i64>("parked_count")?.unwrap_or(0).max(0) as u64,
            last_watch_at: r.opt_time("last_watch_at")?,
            watch_cursor: match (r.opt_s("watch_portal_id")?, r.opt_s("watch_cursor")?) {
                (Some(portal_id), Some(modified)) => Some(super::watch::WatchCursor {
                    portal_id: portal_id.to_owned(),
                    modified: modified.to_owned(),
                }),
                _ => None,
            },
        })
    }
}

/// The fields a disconnect removes (everything that describes the connection).
const CONNECTION_FIELDS: &str = "token_ciphertext, mcp_url, portal_id, binding, portal_info, \
     connected_at, sync_status, last_error, rate_per_sec, rate_burst, watch_shard";

impl Store {
    fn integration_key(&self, t: &TenantId) -> Item {
        key(t.partition_key(), SK.to_owned())
    }

    fn map_returned(attrs: Option<Item>) -> Result<Integration, StoreError> {
        attrs
            .as_ref()
            .ok_or_else(|| StoreError::corrupt("update returned no attributes"))
            .and_then(Integration::try_from)
    }

    /// The tenant's integration, read consistently (a connect just made must be visible).
    pub async fn get_integration(&self, t: &TenantId) -> Result<Option<Integration>, StoreError> {
        let item = self.get(self.integration_key(t)).await?;
        item.as_ref().map(Integration::try_from).transpose()
    }

    /// Replaces the connection fields (status `active`, `last_error` and `disconnected_at`
    /// cleared, `last_sync_at` kept), version + 1. `expected_version` is the version the caller
    /// read (0 = no item): a concurrent connect that got in between makes this one
    /// [`StoreError::Conflict`] instead of being silently overwritten.
    #[tracing::instrument(skip_all, fields(tenant_id = %t))]
    pub async fn save_connection(
        &self,
        t: &TenantId,
        conn: NewConnection,
        expected_version: u64,
    ) -> Result<Integration, StoreError> {
        let req = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.integration_key(t)))
            .update_expression(
                "SET token_ciphertext = :tok, mcp_url = :url, portal_id = :portal, \
                 binding = :binding, portal_info = :info, connected_at = :at, \
                 sync_status = :active, rate_per_sec = if_not_exists(rate_per_sec, :rps), \
                 rate_burst = if_not_exists(rate_burst, :burst), \
                 watch_shard = :shard, version = :next REMOVE last_error, disconnected_at",
            )
            .expression_attribute_values(":shard", s(super::watch::watch_shard(t)))
            .expression_attribute_values(":tok", b(&conn.token_ciphertext))
            .expression_attribute_values(":url", s(conn.mcp_url))
            .expression_attribute_values(":portal", s(conn.portal_id))
            .expression_attribute_values(":binding", json_av(&conn.binding))
            .expression_attribute_values(":info", json_av(&conn.portal_info))
            .expression_attribute_values(":at", time_av(conn.connected_at)?)
            .expression_attribute_values(":active", s(SyncStatus::Active.as_str()))
            .expression_attribute_values(":rps", n(conn.rate.per_sec))
            .expression_attribute_values(":burst", n(conn.rate.burst))
            .expression_attribute_values(":next", n(expected_version + 1))
            .return_values(ReturnValue::AllNew);
        let req = if expected_version == 0 {
            req.condition_expression("attribute_not_exists(pk)")
        } else {
            req.condition_expression("version = :expected")
                .expression_attribute_values(":expected", n(expected_version))
        };
        let out = req.send().await.map_err(from_sdk)?;
        Self::map_returned(out.attributes)
    }

    /// Disconnect: removes the token and every connection field, keeps `last_sync_at`, sets
    /// `disconnected_at`, version + 1. Idempotent: an absent item is `Ok(None)`; an item already
    /// disconnected is returned unchanged (its version does not move again).
    #[tracing::instrument(skip_all, fields(tenant_id = %t))]
    pub async fn clear_connection(&self, t: &TenantId) -> Result<Option<Integration>, StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.integration_key(t)))
            .update_expression(format!(
                "SET disconnected_at = :now, version = version + :one REMOVE {CONNECTION_FIELDS}"
            ))
            .condition_expression("attribute_exists(token_ciphertext)")
            .expression_attribute_values(":now", time_av(OffsetDateTime::now_utc())?)
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(from_sdk);
        match res {
            Ok(out) => Self::map_returned(out.attributes).map(Some),
            // No token: never connected, or already disconnected. Nothing to change.
            Err(StoreError::Conflict) => self.get_integration(t).await,
            Err(e) => Err(e),
        }
    }

    /// Sets the status only if the version is still `expected_version`, so an error seen with
    /// an OLD token cannot overwrite a fresh connect; version + 1. [`StoreError::Conflict`] when
    /// the version moved (or the item is gone).
    #[tracing::instrument(skip_all, fields(tenant_id = %t, status = status.as_str()))]
    pub async fn set_status(
        &self,
        t: &TenantId,
        expected_version: u64,
        status: SyncStatus,
        last_error: Option<String>,
    ) -> Result<Integration, StoreError> {
        let req = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.integration_key(t)))
            .condition_expression("version = :expected")
            .expression_attribute_values(":expected", n(expected_version))
            .expression_attribute_values(":next", n(expected_version + 1))
            .expression_attribute_values(":status", s(status.as_str()))
            .return_values(ReturnValue::AllNew);
        let req = match last_error {
            Some(err) => req
                .update_expression("SET sync_status = :status, last_error = :err, version = :next")
                .expression_attribute_values(":err", s(err)),
            None => req
                .update_expression("SET sync_status = :status, version = :next REMOVE last_error"),
        };
        let out = req.send().await.map_err(from_sdk)?;
        Self::map_returned(out.attributes)
    }

    /// Records a successful sync. No version change (see [`Integration::version`]); the only
    /// condition is that a connection still exists, else [`StoreError::NotFound`] (a disconnect
    /// won the race and must not be undone).
    pub async fn touch_last_sync(
        &self,
        t: &TenantId,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let res = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.integration_key(t)))
            .update_expression("SET last_sync_at = :at, watch_shard = :shard")
            .condition_expression("attribute_exists(token_ciphertext)")
            .expression_attribute_values(":at", time_av(at)?)
            .expression_attribute_values(":shard", s(super::watch::watch_shard(t)))
            .send()
            .await
            .map_err(from_sdk);
        match res {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict) => Err(StoreError::NotFound),
            Err(e) => Err(e),
        }
    }

    /// Replaces the binding and portal info after a re-discovery, keeping the token; version + 1,
    /// guarded like [`Store::set_status`] and refused ([`StoreError::Conflict`]) once
    /// disconnected.
    #[tracing::instrument(skip_all, fields(tenant_id = %t))]
    pub async fn set_binding(
        &self,
        t: &TenantId,
        expected_version: u64,
        binding: Value,
        portal_info: Value,
    ) -> Result<Integration, StoreError> {
        let out = self
            .ddb
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.integration_key(t)))
            .update_expression("SET binding = :binding, portal_info = :info, version = :next")
            .condition_expression("version = :expected AND attribute_exists(token_ciphertext)")
            .expression_attribute_values(":binding", json_av(&binding))
            .expression_attribute_values(":info", json_av(&portal_info))
            .expression_attribute_values(":expected", n(expected_version))
            .expression_attribute_values(":next", n(expected_version + 1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(from_sdk)?;
        Self::map_returned(out.attributes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::types::AttributeValue;

    #[test]
    fn status_names_match_serde() {
        for st in [SyncStatus::Active, SyncStatus::Error, SyncStatus::Paused] {
            let json = serde_json::to_string(&st).unwrap();
            assert_eq!(json, format!("\"{}\"", st.as_str()));
            assert_eq!(SyncStatus::parse(st.as_str()), Some(st));
        }
        assert_eq!(SyncStatus::parse("Active"), None);
    }

    #[test]
    fn item_without_version_is_corrupt() {
        let item = key("TENANT#a".into(), SK.into());
        assert!(matches!(
            Integration::try_from(&item),
            Err(StoreError::Corrupt { .. })
        ));
        let mut item = item;
        item.insert("version".into(), AttributeValue::N("3".into()));
        item.insert("sync_status".into(), s("weird"));
        assert!(matches!(
            Integration::try_from(&item),
            Err(StoreError::Corrupt { .. })
        ));
        item.insert("sync_status".into(), s("error"));
        let i = Integration::try_from(&item).unwrap();
        assert_eq!(
            (i.version, i.sync_status, i.rate),
            (3, Some(SyncStatus::Error), RateParams::default())
        );
        assert!(!i.is_connected());
    }
}
