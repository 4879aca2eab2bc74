//! What happens to an event when its sync fails: the ONE place where errors become outcomes
//! (design.md §4 "Failures, decided in one place").

use std::time::Duration;

use crate::crm::CrmError;
use crate::mcp::{McpError, UrlError};
use crate::store::StoreError;
use crate::vault::VaultError;

/// What the batch handler does with one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: synced (or a duplicate already done).
    Done,
    /// Acknowledged, not kept: the tenant never connected or disconnected on purpose.
    Skipped { reason: String },
    /// Acknowledged, kept in `PARKED#` (integration in error, or retries exhausted).
    Parked { reason: String },
    /// This event's own data was refused by Bitrix24: the batch sends it to the DLQ.
    DeadLetter { reason: String },
    /// Report the item failed; the batch sets the message's visibility to `delay`.
    Retry { delay: Duration, reason: String },
    /// Acknowledged after the batch sent the same body to the lead queue again (a fresh
    /// message at the end of its group, receive count back to 1).
    Requeue { reason: String },
}

/// Why one event's sync stopped. Display is safe to store and show (no token, no upstream text).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("the tenant has no Bitrix24 connection")]
    NotConnected,
    #[error("the Bitrix24 integration is in error; waiting for a reconnect")]
    IntegrationInError,
    #[error("the Bitrix24 integration is paused")]
    Paused,
    /// The stored connection cannot be used (binding unreadable, portal unknown).
    #[error("the stored Bitrix24 connection is incomplete: {0}")]
    BadConnection(&'static str),
    #[error("the stored Bitrix24 MCP address is not allowed: {0}")]
    BadUrl(#[from] UrlError),
    /// The portal's shared request budget is empty for longer than we sleep.
    #[error("the portal's request budget is used up for now")]
    RateBudget { wait: Duration },
    /// Another consumer holds this event's claim (its lease has not ended).
    #[error("another consumer is handling this event")]
    EventHeld { wait: Duration },
    /// Another consumer is creating this customer's lead.
    #[error("another consumer is creating this customer's lead")]
    CreateLockHeld,
    /// The linked lead disappeared during the update; the link was dropped.
    #[error("the linked lead was deleted in Bitrix24")]
    LeadGone,
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

/// The decision for a failed event; side effects are carried out by the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Outcome(Outcome),
    /// Keep the event (`PARKED#`) and acknowledge it.
    Park {
        reason: String,
    },
    /// Integration-wide failure: status `error` with this safe text, drop the cache, park.
    IntegrationFailure {
        reason: String,
    },
}

/// Base of the retry backoff: 10 s, doubling per receive.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// SQS visibility changes are cheap, but a 15-minute cap keeps a recovered portal busy soon.
const BACKOFF_MAX: Duration = Duration::from_secs(900);
/// A create lock or claim held by another consumer is usually released within seconds.
pub const HELD_RETRY: Duration = Duration::from_secs(5);

/// `10 s * 2^(n-1)`, at most 900 s, plus `jitter_ms` (callers pass a random 0..1000) so a burst
/// of failed events does not come back at the same instant.
pub fn backoff(receive_count: u32, jitter_ms: u64) -> Duration {
    let exp = receive_count.saturating_sub(1).min(16);
    let base = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_MAX);
    base + Duration::from_millis(jitter_ms)
}

/// Retries are over once SQS would deliver the event `maxReceiveCount` times: one receive before
/// that the event is parked instead, so a retryable failure never becomes a dead letter.
pub fn retries_exhausted(receive_count: u32, max_receive_count: u32) -> bool {
    receive_count >= max_receive_count.saturating_sub(1)
}

/// The one `match` from a failure to what happens to the event.
pub fn decide(
    err: &SyncError,
    receive_count: u32,
    max_receive_count: u32,
    jitter_ms: u64,
) -> Decision {
    let reason = err.to_string();
    let retry = |delay: Duration| {
        if retries_exhausted(receive_count, max_receive_count) {
            Decision::Park {
                reason: format!("retries exhausted: {reason}"),
            }
        } else {
            Decision::Outcome(Outcome::Retry {
                delay,
                reason: reason.clone(),
            })
        }
    };
    // Waiting on rate limits (the portal's, or our own budget shared with other consumers) or
    // on another consumer is normal under load, not a failure of the integration. Parking such
    // an event would leave it until the next connect or test, which nobody presses while the
    // status shows everything healthy. So on the last receive it goes back to the queue
    // instead: the older-event rule (notes only, no field changes) keeps a late copy harmless.
    let wait_or_requeue = |delay: Duration| {
        if retries_exhausted(receive_count, max_receive_count) {
            Decision::Outcome(Outcome::Requeue {
                reason: format!("still waiting after {receive_count} receives: {reason}"),
            })
        } else {
            Decision::Outcome(Outcome::Retry {
                delay,
                reason: reason.clone(),
            })
        }
    };
    let backoff = backoff(receive_count, jitter_ms);
    match err {
        SyncError::NotConnected => Decision::Outcome(Outcome::Skipped { reason }),
        SyncError::IntegrationInError | SyncError::Paused => Decision::Park { reason },
        SyncError::RateBudget { wait } => wait_or_requeue(*wait),
        SyncError::EventHeld { wait } => wait_or_requeue((*wait).max(HELD_RETRY)),
        SyncError::CreateLockHeld | SyncError::LeadGone => wait_or_requeue(HELD_RETRY),
        SyncError::Crm(CrmError::Mcp(McpError::RateLimited { retry_after })) => {
            wait_or_requeue(retry_after.filter(|d| !d.is_zero()).unwrap_or(backoff))
        }
        SyncError::Crm(CrmError::Mcp(McpError::Transient { .. }))
        // An answer we could not read as MCP is the server's problem, not the event's: retry
        // (and park once retries are over) rather than dead-letter good data.
        | SyncError::Crm(CrmError::Mcp(McpError::Protocol { .. }))
        | SyncError::Vault(VaultError::Unavailable { .. })
        | SyncError::Store(StoreError::Unavailable(_) | StoreError::Conflict) => retry(backoff),
        SyncError::Crm(CrmError::Mcp(McpError::Unauthorized { .. } | McpError::UrlRejected(_)))
        | SyncError::Crm(CrmError::Unsupported(_) | CrmError::BindingStale { .. })
        | SyncError::Vault(_)
        | SyncError::BadUrl(_)
        | SyncError::BadConnection(_) => Decision::IntegrationFailure { reason },
        SyncError::Crm(CrmError::Mcp(McpError::UnknownTool)) => Decision::IntegrationFailure { reason },
        // Refused arguments reach here only after a re-discovery left the binding unchanged:
        // this event's own data, so the dead-letter queue, never the integration.
        SyncError::Crm(CrmError::Mcp(
            McpError::Permanent { .. } | McpError::NotFound | McpError::InvalidArguments,
        ))
        | SyncError::Crm(CrmError::Rejected { .. } | CrmError::UnexpectedAnswer { .. }) => {
            Decision::Outcome(Outcome::DeadLetter { reason })
        }
        // A stored row that does not map: keep the event for a person, never drop it.
        SyncError::Store(StoreError::Corrupt { .. } | StoreError::NotFound) => Decision::Park { reason },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crm::Operation;
    use crate::mcp::TransientReason;

    #[test]
    fn backoff_grows_and_is_capped() {
        assert_eq!(backoff(1, 0), Duration::from_secs(10));
        assert_eq!(backoff(2, 0), Duration::from_secs(20));
        assert_eq!(backoff(4, 0), Duration::from_secs(80));
        assert_eq!(backoff(30, 0), Duration::from_secs(900));
        assert_eq!(backoff(0, 250), Duration::from_millis(10_250));
    }

    #[test]
    fn every_failure_has_its_outcome() {
        let rate = || {
            SyncError::Crm(CrmError::Mcp(McpError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            }))
        };
        let transient = || {
            SyncError::Crm(CrmError::Mcp(McpError::Transient {
                reason: TransientReason::Timeout,
            }))
        };
        let is_retry = |d: &Decision, want: Option<Duration>| match d {
            Decision::Outcome(Outcome::Retry { delay, .. }) => want.is_none_or(|w| *delay == w),
            _ => false,
        };
        type Check = fn(&Decision) -> bool;
        let rows: Vec<(SyncError, u32, Check, &str)> = vec![
            (
                SyncError::NotConnected,
                1,
                |d| matches!(d, Decision::Outcome(Outcome::Skipped { .. })),
                "never connected: skipped",
            ),
            (
                SyncError::IntegrationInError,
                1,
                |d| matches!(d, Decision::Park { .. }),
                "integration error: parked",
            ),
            (
                rate(),
                1,
                |d| matches!(d, Decision::Outcome(Outcome::Retry { delay, .. }) if *delay == Duration::from_secs(7)),
                "rate limit waits as told",
            ),
            (
                rate(),
                3,
                |d| matches!(d, Decision::Outcome(Outcome::Requeue { reason }) if reason.starts_with("still waiting after 3 receives")),
                "rate limit on the last receive before the DLQ: re-queued, not parked",
            ),
            (
                transient(),
                2,
                |d| matches!(d, Decision::Outcome(Outcome::Retry { delay, .. }) if *delay == Duration::from_secs(20)),
                "transient backs off",
            ),
            (
                SyncError::RateBudget {
                    wait: Duration::from_secs(3),
                },
                1,
                |d| matches!(d, Decision::Outcome(Outcome::Retry { delay, .. }) if *delay == Duration::from_secs(3)),
                "budget wait",
            ),
            (
                SyncError::RateBudget {
                    wait: Duration::from_secs(3),
                },
                3,
                |d| matches!(d, Decision::Outcome(Outcome::Requeue { .. })),
                "our own pacing on the last receive: re-queued, never parked or dead-lettered",
            ),
            (
                transient(),
                3,
                |d| matches!(d, Decision::Park { reason } if reason.starts_with("retries exhausted")),
                "a portal failing on the last receive: parked (design.md: retries never become dead letters)",
            ),
            (
                SyncError::CreateLockHeld,
                1,
                |d| matches!(d, Decision::Outcome(Outcome::Retry { delay, .. }) if *delay == HELD_RETRY),
                "create lock held",
            ),
            (
                SyncError::Crm(CrmError::Mcp(McpError::Unauthorized {
                    status: Some(401),
                    code: None,
                })),
                1,
                |d| matches!(d, Decision::IntegrationFailure { .. }),
                "401",
            ),
            (
                SyncError::Crm(CrmError::Unsupported(Operation::UpdateLead)),
                1,
                |d| matches!(d, Decision::IntegrationFailure { .. }),
                "unsupported op",
            ),
            (
                SyncError::Crm(CrmError::BindingStale { op: "create_lead" }),
                1,
                |d| matches!(d, Decision::IntegrationFailure { .. }),
                "stale after rediscovery",
            ),
            (
                SyncError::Crm(CrmError::Mcp(McpError::Permanent {
                    code: Some("ERROR_CORE".into()),
                })),
                1,
                |d| matches!(d, Decision::Outcome(Outcome::DeadLetter { .. })),
                "data refused",
            ),
            (
                SyncError::Crm(CrmError::UnexpectedAnswer { op: "create_lead" }),
                1,
                |d| matches!(d, Decision::Outcome(Outcome::DeadLetter { .. })),
                "unexpected answer",
            ),
            (
                SyncError::Crm(CrmError::Rejected { op: "update_lead" }),
                1,
                |d| matches!(d, Decision::Outcome(Outcome::DeadLetter { .. })),
                "-32602 with an unchanged binding: this event's data, never the integration",
            ),
            (
                SyncError::Crm(CrmError::Mcp(McpError::InvalidArguments)),
                1,
                |d| matches!(d, Decision::Outcome(Outcome::DeadLetter { .. })),
                "invalid arguments outside a bound call: dead letter",
            ),
            (
                SyncError::Crm(CrmError::Mcp(McpError::UnknownTool)),
                1,
                |d| matches!(d, Decision::IntegrationFailure { .. }),
                "an unknown tool after re-discovery: the binding no longer works",
            ),
            (
                SyncError::Store(StoreError::Conflict),
                1,
                |d| matches!(d, Decision::Outcome(Outcome::Retry { .. })),
                "store conflict retried",
            ),
            (
                SyncError::Store(StoreError::Corrupt { what: "x".into() }),
                1,
                |d| matches!(d, Decision::Park { .. }),
                "corrupt row kept",
            ),
        ];
        for (err, n, ok, why) in rows {
            let d = decide(&err, n, 4, 0);
            assert!(ok(&d), "{why}: {d:?}");
        }
        assert!(is_retry(&decide(&transient(), 1, 5, 0), None));
        assert!(
            !is_retry(&decide(&transient(), 4, 5, 0), None),
            "receive 4 of max 5 parks"
        );
    }

    #[test]
    fn reasons_are_safe_text() {
        let d = decide(
            &SyncError::Crm(CrmError::Mcp(McpError::Unauthorized {
                status: Some(401),
                code: Some("expired_token".into()),
            })),
            1,
            5,
            0,
        );
        let Decision::IntegrationFailure { reason } = d else {
            panic!("{d:?}")
        };
        assert_eq!(
            reason,
            "Bitrix24 rejected the token (it may be wrong, expired or revoked) (expired_token)"
        );
    }
}
