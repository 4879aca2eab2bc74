//! The failure plan: the one place that says what a failed event leads to. [`plan`] maps a
//! [`SyncError`] (with the receive count) to a complete [`Plan`]: what happens to the tenant's
//! cached connection, to the integration, and to the event. The engine carries a plan out and
//! the batch turns the event part into the SQS answer; neither decides anything itself.
//!
//! The rules, in words (the README's "What happens when ..." table is checked against
//! [`cases`]):
//! - waiting is normal: a rate limit, the shared budget, another consumer's claim or create
//!   lock retries after the wait, and on the last receive before the dead-letter queue the event
//!   goes to the back of its group instead (the integration is healthy; parking would strand it);
//! - a portal that keeps failing (timeouts, 5xx, answers that are not MCP) retries with growing
//!   delays, and is parked on the last receive, so retries never become dead letters;
//! - the token or the tools stop working (401/403, an unknown tool after binding again, a
//!   required operation gone, a ciphertext KMS refuses): the integration goes to `error`, the
//!   cached connection is forgotten, and the event is parked until the tenant reconnects;
//! - this event's own data is refused (a field Bitrix24 rejects, JSON-RPC -32602 with an
//!   unchanged binding, an answer that is not what the operation returns): the dead-letter
//!   queue, with the reason; never `error`;
//! - the operator's side fails (KMS key disabled or access denied, DynamoDB throttling or a
//!   missing permission): retried with back-off and alarmed in the log, never blamed on the
//!   tenant; on the last receive parked, and replayed by the tenant's next successful sync.

use std::time::Duration;

use crate::crm::CrmError;
use crate::mcp::{McpError, UrlError};
use crate::store::StoreError;
use crate::vault::VaultError;

/// What the batch does with one event.
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
    /// The stored connection cannot be used (portal unknown).
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
    /// The invocation's deadline is too close to finish this event.
    #[error("not enough time left in this invocation")]
    Deadline,
    #[error(transparent)]
    Crm(#[from] CrmError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
}

impl SyncError {
    /// A rate limit held the event back: Bitrix24's (503 `QUERY_LIMIT_EXCEEDED`, 429
    /// `OPERATION_TIME_LIMIT`) or the portal's shared budget. Its retry delay is a rate-limit
    /// wait (`RateLimitWaitMs`).
    pub fn is_rate_limit(&self) -> bool {
        matches!(
            self,
            SyncError::RateBudget { .. }
                | SyncError::Crm(CrmError::Mcp(McpError::RateLimited { .. }))
        )
    }
}

/// What happens to the tenant's cached token, binding and MCP session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CachePlan {
    Keep,
    /// The session may be broken: the next event opens a new one (token and binding kept).
    ResetSession,
    /// The token or the binding no longer work: forget them all.
    Forget,
}

/// What happens to the integration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntegrationPlan {
    Keep,
    /// Status `error` with this safe text (only against the connection version that failed).
    Error(String),
}

/// What happens to the event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventPlan {
    /// Acknowledged with an audit line, not kept.
    Skip(String),
    /// Kept in `PARKED#`, acknowledged; replayed when the portal is usable again.
    Park(String),
    DeadLetter(String),
    Retry {
        delay: Duration,
        reason: String,
    },
    /// Sent again to the end of its group, acknowledged.
    Requeue(String),
}

impl EventPlan {
    /// What happens to the event, as its log line's `outcome` says it.
    pub fn name(&self) -> &'static str {
        match self {
            EventPlan::Skip(_) => "skipped_not_connected",
            EventPlan::Park(_) => "parked",
            EventPlan::DeadLetter(_) => "dead_lettered",
            EventPlan::Retry { .. } => "retried",
            EventPlan::Requeue(_) => "requeued",
        }
    }
}

/// The complete plan for one failed event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub cache: CachePlan,
    pub integration: IntegrationPlan,
    pub event: EventPlan,
    /// An operator-side failure: logged at error level with `operator_alarm = true` (what the
    /// alarms watch), never shown to the tenant as their problem.
    pub operator_alarm: bool,
    /// The failure's class, as log lines and metrics name it ([`Class::name`]).
    pub class: &'static str,
}

/// Names of the classes that turn an integration to `error`: they are the `Class` dimension of
/// the `IntegrationsErrored` metric (connect's test uses them too).
pub mod errored {
    /// Bitrix24 refused the token (401, 403, `ACCESS_DENIED`, `insufficient_scope`).
    pub const TOKEN_REJECTED: &str = "token_rejected";
    /// The portal's MCP server no longer offers a bound operation (after binding again).
    pub const TOOLS_GONE: &str = "tools_gone";
    /// What our side stores or configures for the tenant is unusable: KMS refuses the stored
    /// ciphertext, the allow-list now refuses the stored URL, the tool map or the stored
    /// portal identity is invalid. Not the tenant's doing: an operator-side failure.
    pub const STORED_CONNECTION: &str = "stored_connection";
}

/// Which delivery of the event this is, and the queue's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// SQS `ApproximateReceiveCount` (1 on the first delivery).
    pub receive_count: u32,
    /// The lead queue's redrive `maxReceiveCount`.
    pub max_receive_count: u32,
    /// A random 0..1000 ms added to back-off delays so a burst does not come back at once.
    pub jitter_ms: u64,
}

/// Base of the retry backoff: 10 s, doubling per receive.
const BACKOFF_BASE: Duration = Duration::from_secs(10);
/// SQS visibility changes are cheap, but a 15-minute cap keeps a recovered portal busy soon.
const BACKOFF_MAX: Duration = Duration::from_secs(900);
/// A create lock or claim held by another consumer is usually released within seconds.
pub const HELD_RETRY: Duration = Duration::from_secs(5);
/// No retry comes back sooner: a shorter wait would burn the message's receives in seconds.
pub const MIN_RETRY: Duration = Duration::from_secs(2);

/// `10 s * 2^(n-1)`, at most 900 s, plus the jitter.
pub fn backoff(receive_count: u32, jitter_ms: u64) -> Duration {
    let exp = receive_count.saturating_sub(1).min(16);
    let base = BACKOFF_BASE.saturating_mul(1u32 << exp).min(BACKOFF_MAX);
    base + Duration::from_millis(jitter_ms)
}

/// Attempts of a bookkeeping write that follows a CRM write (the link, the done mark, an
/// interrupted write's note), 100, 200, 400 ms apart: failing it would make a retry write the
/// CRM again, so it is tried in place before its failure counts.
pub const IN_PLACE_ATTEMPTS: u32 = 4;

/// Runs `op` up to [`IN_PLACE_ATTEMPTS`] times, pausing 100 ms and doubling; each failure but
/// the last is logged. The last error is returned.
pub async fn retry_in_place<T, E, F, Fut>(what: &str, mut op: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut pause = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt >= IN_PLACE_ATTEMPTS => return Err(e),
            Err(e) => tracing::warn!(error = %e, what, "write failed; trying again"),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
        attempt += 1;
    }
}

/// Retries are over once SQS would deliver the event `maxReceiveCount` times: one receive before
/// that the event is parked (or re-queued) instead, so a retryable failure never becomes a dead
/// letter.
pub fn retries_exhausted(receive_count: u32, max_receive_count: u32) -> bool {
    receive_count >= max_receive_count.saturating_sub(1)
}

/// How a failure is classed; each class has one line of the plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    NotConnected,
    KeptForReconnect,
    Waiting(Duration),
    PortalFailing {
        reset_session: bool,
    },
    /// The integration goes to `error`; the name is one of [`errored`]'s.
    IntegrationBroken(&'static str),
    EventData,
    Operator,
    Kept,
}

fn class(err: &SyncError, backoff: Duration) -> Class {
    use Class::*;
    match err {
        SyncError::NotConnected => NotConnected,
        SyncError::IntegrationInError | SyncError::Paused => KeptForReconnect,
        SyncError::RateBudget { wait } => Waiting(*wait),
        SyncError::EventHeld { wait } => Waiting((*wait).max(HELD_RETRY)),
        SyncError::CreateLockHeld | SyncError::LeadGone => Waiting(HELD_RETRY),
        SyncError::Deadline => Waiting(MIN_RETRY),
        SyncError::Crm(CrmError::Mcp(McpError::RateLimited { retry_after })) => {
            Waiting(retry_after.filter(|d| !d.is_zero()).unwrap_or(backoff))
        }
        // An answer we could not read as MCP is the server's problem, not the event's.
        SyncError::Crm(CrmError::Mcp(McpError::Transient { .. } | McpError::Protocol { .. })) => {
            PortalFailing {
                reset_session: true,
            }
        }
        SyncError::Crm(CrmError::Mcp(McpError::Unauthorized { .. })) => {
            IntegrationBroken(errored::TOKEN_REJECTED)
        }
        SyncError::Crm(CrmError::Mcp(McpError::UrlRejected(_) | McpError::UnknownTool))
        | SyncError::Crm(CrmError::Unsupported(_) | CrmError::BindingStale { .. }) => {
            IntegrationBroken(errored::TOOLS_GONE)
        }
        SyncError::BadUrl(_)
        | SyncError::BadConnection(_)
        | SyncError::Vault(VaultError::Refused { .. } | VaultError::BadResponse { .. }) => {
            IntegrationBroken(errored::STORED_CONNECTION)
        }
        SyncError::Crm(CrmError::Mcp(
            McpError::Permanent { .. } | McpError::NotFound | McpError::InvalidArguments,
        ))
        | SyncError::Crm(CrmError::Rejected { .. } | CrmError::UnexpectedAnswer { .. }) => {
            EventData
        }
        SyncError::Vault(
            VaultError::KeyUnusable { .. } | VaultError::NoKey | VaultError::Unavailable { .. },
        )
        | SyncError::Store(
            StoreError::Unavailable(_) | StoreError::Denied(_) | StoreError::Unprocessed,
        ) => Operator,
        // A lost race with another writer: read again soon.
        SyncError::Store(StoreError::Conflict) => Waiting(HELD_RETRY),
        // A stored row that does not map: keep the event for a person, never drop it.
        SyncError::Store(StoreError::Corrupt { .. } | StoreError::NotFound) => Kept,
    }
}

impl Class {
    /// The class as log lines show it (`failure_class`).
    fn name(self) -> &'static str {
        match self {
            Class::NotConnected => "not_connected",
            Class::KeptForReconnect => "kept_for_reconnect",
            Class::Waiting(_) => "waiting",
            Class::PortalFailing { .. } => "portal_failing",
            Class::IntegrationBroken(name) => name,
            Class::EventData => "event_data",
            Class::Operator => "operator",
            Class::Kept => "kept",
        }
    }
}

/// The one `match` from a failure to everything that follows from it.
pub fn plan(err: &SyncError, at: Attempt) -> Plan {
    let reason = err.to_string();
    let last = retries_exhausted(at.receive_count, at.max_receive_count);
    let backoff = backoff(at.receive_count, at.jitter_ms);
    let class = class(err, backoff);
    let keep = |event| Plan {
        cache: CachePlan::Keep,
        integration: IntegrationPlan::Keep,
        event,
        operator_alarm: false,
        class: class.name(),
    };
    let retry_or_park = |delay: Duration| {
        if last {
            EventPlan::Park(format!("retries exhausted: {reason}"))
        } else {
            EventPlan::Retry {
                delay,
                reason: reason.clone(),
            }
        }
    };
    match class {
        Class::NotConnected => keep(EventPlan::Skip(reason)),
        Class::KeptForReconnect | Class::Kept => keep(EventPlan::Park(reason)),
        Class::Waiting(_) if last => keep(EventPlan::Requeue(format!(
            "still waiting after {} receives: {reason}",
            at.receive_count
        ))),
        Class::Waiting(wait) => keep(EventPlan::Retry {
            delay: wait,
            reason,
        }),
        Class::PortalFailing { reset_session } => Plan {
            cache: if reset_session {
                CachePlan::ResetSession
            } else {
                CachePlan::Keep
            },
            ..keep(retry_or_park(backoff))
        },
        Class::IntegrationBroken(_) => Plan {
            cache: CachePlan::Forget,
            integration: IntegrationPlan::Error(reason.clone()),
            event: EventPlan::Park(reason),
            operator_alarm: false,
            class: class.name(),
        },
        Class::EventData => keep(EventPlan::DeadLetter(reason)),
        Class::Operator => Plan {
            operator_alarm: true,
            ..keep(retry_or_park(backoff))
        },
    }
}

/// The rows of the README's "What happens when ..." table: a situation, the error that stands
/// for it, and the receive it happens on.
pub fn cases() -> Vec<(&'static str, SyncError, u32)> {
    use crate::mcp::TransientReason;
    vec![
        (
            "the tenant never connected (or disconnected)",
            SyncError::NotConnected,
            1,
        ),
        (
            "the integration is in `error`",
            SyncError::IntegrationInError,
            1,
        ),
        (
            "Bitrix24 rate-limits (503 QUERY_LIMIT_EXCEEDED, 429 OPERATION_TIME_LIMIT)",
            SyncError::Crm(CrmError::Mcp(McpError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            })),
            1,
        ),
        (
            "... still on the last receive",
            SyncError::Crm(CrmError::Mcp(McpError::RateLimited { retry_after: None })),
            4,
        ),
        (
            "the portal times out or answers 5xx",
            SyncError::Crm(CrmError::Mcp(McpError::Transient {
                reason: TransientReason::Timeout,
            })),
            1,
        ),
        (
            "... still on the last receive",
            SyncError::Crm(CrmError::Mcp(McpError::Transient {
                reason: TransientReason::Timeout,
            })),
            4,
        ),
        (
            "the token is revoked (401/403)",
            SyncError::Crm(CrmError::Mcp(McpError::Unauthorized {
                status: Some(401),
                code: None,
            })),
            1,
        ),
        (
            "a bound tool is gone after binding again",
            SyncError::Crm(CrmError::BindingStale { op: "create_lead" }),
            1,
        ),
        (
            "Bitrix24 refuses this event's data",
            SyncError::Crm(CrmError::Rejected { op: "update_lead" }),
            1,
        ),
        ("KMS refuses the stored ciphertext", kms_refused(), 1),
        (
            "the KMS key is disabled or access is denied",
            kms_disabled(),
            1,
        ),
        ("DynamoDB throttles", ddb_throttled(), 1),
        (
            "another consumer creates the same lead",
            SyncError::CreateLockHeld,
            1,
        ),
        ("the invocation's deadline is near", SyncError::Deadline, 1),
    ]
}

fn kms_refused() -> SyncError {
    use aws_sdk_kms::types::error::InvalidCiphertextException;
    let source = aws_sdk_kms::Error::InvalidCiphertextException(
        InvalidCiphertextException::builder().build(),
    );
    SyncError::Vault(VaultError::Refused {
        source: Box::new(source),
    })
}

fn kms_disabled() -> SyncError {
    use aws_sdk_kms::types::error::DisabledException;
    let source = aws_sdk_kms::Error::DisabledException(DisabledException::builder().build());
    SyncError::Vault(VaultError::KeyUnusable {
        source: Box::new(source),
    })
}

fn ddb_throttled() -> SyncError {
    use aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException as Throttled;
    let source = aws_sdk_dynamodb::Error::ProvisionedThroughputExceededException(
        Throttled::builder().build(),
    );
    SyncError::Store(StoreError::Unavailable(Box::new(source)))
}

/// One line of the "What happens when ..." table for a plan.
pub fn describe(p: &Plan) -> String {
    let event = match &p.event {
        EventPlan::Skip(_) => "acknowledged, not kept".to_owned(),
        EventPlan::Park(_) => "parked (kept 14 days, replayed when the portal works again)".into(),
        EventPlan::DeadLetter(_) => "dead-letter queue with the reason".into(),
        EventPlan::Retry { .. } => "retried after a delay".into(),
        EventPlan::Requeue(_) => "sent to the back of its group".into(),
    };
    let integration = match &p.integration {
        IntegrationPlan::Keep => "",
        IntegrationPlan::Error(_) => "; integration set to `error`",
    };
    let cache = match p.cache {
        CachePlan::Keep => "",
        CachePlan::ResetSession => "; new MCP session",
        CachePlan::Forget => "; cached token forgotten",
    };
    let alarm = if p.operator_alarm {
        "; operator alarm"
    } else {
        ""
    };
    format!("{event}{integration}{cache}{alarm}")
}

#[cfg(test)]
#[path = "failure_tests.rs"]
mod tests;
