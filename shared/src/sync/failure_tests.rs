use super::*;
use crate::crm::Operation;
use crate::mcp::TransientReason;

const MAX: u32 = 5;

fn at(receive_count: u32) -> Attempt {
    Attempt {
        receive_count,
        max_receive_count: MAX,
        jitter_ms: 0,
    }
}

fn mcp(e: McpError) -> SyncError {
    SyncError::Crm(CrmError::Mcp(e))
}

fn transient() -> SyncError {
    mcp(McpError::Transient {
        reason: TransientReason::Timeout,
    })
}

fn kms(e: aws_sdk_kms::Error) -> Box<aws_sdk_kms::Error> {
    Box::new(e)
}

fn ddb_throttle() -> SyncError {
    SyncError::Store(StoreError::Unavailable(Box::new(
        aws_sdk_dynamodb::Error::ProvisionedThroughputExceededException(
            aws_sdk_dynamodb::types::error::ProvisionedThroughputExceededException::builder()
                .build(),
        ),
    )))
}

fn retry(d: Duration) -> impl Fn(&Plan) -> bool {
    move |p| matches!(&p.event, EventPlan::Retry { delay, .. } if *delay == d)
}

/// Every class of failure, on a first and on a last receive: the whole plan, and why.
#[test]
fn every_failure_has_one_complete_plan() {
    type Check = Box<dyn Fn(&Plan) -> bool>;
    fn keep_all(p: &Plan) -> bool {
        p.cache == CachePlan::Keep && p.integration == IntegrationPlan::Keep && !p.operator_alarm
    }
    fn parked(p: &Plan) -> bool {
        matches!(p.event, EventPlan::Park(_))
    }
    fn exhausted(p: &Plan) -> bool {
        matches!(&p.event, EventPlan::Park(r) if r.starts_with("retries exhausted"))
    }
    let requeued = |p: &Plan| matches!(&p.event, EventPlan::Requeue(r) if r.starts_with("still waiting after 4 receives"));
    let dead = |p: &Plan| matches!(p.event, EventPlan::DeadLetter(_)) && keep_all(p);
    let broken = |p: &Plan| {
        p.cache == CachePlan::Forget
            && matches!(p.integration, IntegrationPlan::Error(_))
            && matches!(p.event, EventPlan::Park(_))
    };
    let operator = |p: &Plan| {
        p.operator_alarm
            && p.integration == IntegrationPlan::Keep
            && p.cache == CachePlan::Keep
            && matches!(p.event, EventPlan::Retry { delay, .. } if delay == Duration::from_secs(10))
    };
    let operator_last =
        |p: &Plan| p.operator_alarm && p.integration == IntegrationPlan::Keep && exhausted(p);
    let b = |f: fn(&Plan) -> bool| -> Check { Box::new(f) };
    let rows: Vec<(SyncError, u32, Check, &str)> = vec![
        (
            SyncError::NotConnected,
            1,
            b(|p| matches!(p.event, EventPlan::Skip(_))),
            "never connected: acknowledged, not kept",
        ),
        (
            SyncError::IntegrationInError,
            1,
            Box::new(move |p| parked(p) && keep_all(p)),
            "integration in error: kept for the reconnect",
        ),
        (SyncError::Paused, 1, Box::new(parked), "paused: kept"),
        (
            mcp(McpError::RateLimited {
                retry_after: Some(Duration::from_secs(7)),
            }),
            1,
            Box::new(retry(Duration::from_secs(7))),
            "rate limit waits as told",
        ),
        (
            mcp(McpError::RateLimited { retry_after: None }),
            2,
            Box::new(retry(Duration::from_secs(20))),
            "rate limit without a reset time backs off",
        ),
        (
            mcp(McpError::RateLimited {
                retry_after: Some(Duration::ZERO),
            }),
            1,
            Box::new(retry(Duration::from_secs(10))),
            "a reset already passed: back off, not a busy loop",
        ),
        (
            mcp(McpError::RateLimited { retry_after: None }),
            4,
            Box::new(requeued),
            "rate limit on the last receive: back of the group, not parked",
        ),
        (
            SyncError::RateBudget {
                wait: Duration::from_secs(3),
            },
            1,
            Box::new(retry(Duration::from_secs(3))),
            "our shared budget: wait",
        ),
        (
            SyncError::RateBudget {
                wait: Duration::from_secs(3),
            },
            4,
            Box::new(requeued),
            "our shared budget on the last receive: re-queued",
        ),
        (
            SyncError::EventHeld {
                wait: Duration::from_secs(1),
            },
            1,
            Box::new(retry(HELD_RETRY)),
            "another consumer's claim: at least the held delay",
        ),
        (
            SyncError::CreateLockHeld,
            1,
            Box::new(retry(HELD_RETRY)),
            "another consumer creates the lead",
        ),
        (
            SyncError::LeadGone,
            1,
            Box::new(retry(HELD_RETRY)),
            "the lead vanished mid-update: search again soon",
        ),
        (
            SyncError::Deadline,
            1,
            Box::new(retry(MIN_RETRY)),
            "not enough time left: back soon, no penalty",
        ),
        (
            transient(),
            1,
            Box::new(|p: &Plan| {
                p.cache == CachePlan::ResetSession && retry(Duration::from_secs(10))(p)
            }),
            "timeout: new session, back off",
        ),
        (
            transient(),
            3,
            Box::new(retry(Duration::from_secs(40))),
            "timeout again: longer",
        ),
        (
            transient(),
            4,
            Box::new(move |p| exhausted(p) && p.integration == IntegrationPlan::Keep),
            "a portal failing on the last receive: parked, never a dead letter",
        ),
        (
            mcp(McpError::Protocol { detail: "x".into() }),
            1,
            Box::new(|p: &Plan| p.cache == CachePlan::ResetSession),
            "an answer that is not MCP: the server's problem, retried",
        ),
        (
            mcp(McpError::Unauthorized {
                status: Some(401),
                code: None,
            }),
            1,
            Box::new(broken),
            "401: error, forget the token, park",
        ),
        (
            mcp(McpError::Unauthorized {
                status: Some(403),
                code: Some("ACCESS_DENIED".into()),
            }),
            1,
            Box::new(broken),
            "403: the same",
        ),
        (
            mcp(McpError::UnknownTool),
            1,
            Box::new(broken),
            "unknown tool after binding again",
        ),
        (
            SyncError::Crm(CrmError::BindingStale { op: "get_lead" }),
            1,
            Box::new(broken),
            "stale binding after binding again",
        ),
        (
            SyncError::Crm(CrmError::Unsupported(Operation::UpdateLead)),
            1,
            Box::new(broken),
            "a required operation is gone",
        ),
        (
            SyncError::BadUrl(UrlError::NoHost),
            1,
            Box::new(broken),
            "the stored URL is no longer allowed",
        ),
        (
            SyncError::BadConnection("no portal identity"),
            1,
            Box::new(broken),
            "the stored connection is incomplete",
        ),
        (
            SyncError::Vault(VaultError::Refused {
                source: kms(aws_sdk_kms::Error::InvalidCiphertextException(
                    aws_sdk_kms::types::error::InvalidCiphertextException::builder().build(),
                )),
            }),
            1,
            Box::new(broken),
            "KMS refuses this tenant's ciphertext: reconnect",
        ),
        (
            mcp(McpError::Permanent {
                code: Some("ERROR_CORE".into()),
            }),
            1,
            Box::new(dead),
            "a field Bitrix24 refuses: this event's data",
        ),
        (
            mcp(McpError::NotFound),
            1,
            Box::new(dead),
            "not found outside a get",
        ),
        (
            SyncError::Crm(CrmError::Rejected { op: "update_lead" }),
            1,
            Box::new(dead),
            "-32602 with an unchanged binding: the event's data, never error",
        ),
        (
            mcp(McpError::InvalidArguments),
            1,
            Box::new(dead),
            "invalid arguments",
        ),
        (
            SyncError::Crm(CrmError::UnexpectedAnswer { op: "create_lead" }),
            1,
            Box::new(dead),
            "text where an id belongs",
        ),
        (
            SyncError::Vault(VaultError::KeyUnusable {
                source: kms(aws_sdk_kms::Error::DisabledException(
                    aws_sdk_kms::types::error::DisabledException::builder().build(),
                )),
            }),
            1,
            Box::new(operator),
            "a disabled KMS key: the operator's, retried and alarmed, tenant stays active",
        ),
        (
            SyncError::Vault(VaultError::KeyUnusable {
                source: kms(aws_sdk_kms::Error::KmsInvalidStateException(
                    aws_sdk_kms::types::error::KmsInvalidStateException::builder().build(),
                )),
            }),
            4,
            Box::new(operator_last),
            "a key pending deletion on the last receive: parked, still not the tenant's",
        ),
        (
            SyncError::Vault(VaultError::NoKey),
            1,
            Box::new(operator),
            "no key configured",
        ),
        (
            SyncError::Vault(VaultError::Unavailable {
                source: kms(aws_sdk_kms::Error::KmsInternalException(
                    aws_sdk_kms::types::error::KmsInternalException::builder().build(),
                )),
            }),
            1,
            Box::new(operator),
            "KMS unavailable",
        ),
        (ddb_throttle(), 1, Box::new(operator), "DynamoDB throttling"),
        (
            ddb_throttle(),
            4,
            Box::new(operator_last),
            "DynamoDB throttling to the end: parked",
        ),
        (
            SyncError::Store(StoreError::Conflict),
            1,
            Box::new(retry(HELD_RETRY)),
            "a lost race: read again soon",
        ),
        (
            SyncError::Store(StoreError::Corrupt { what: "x".into() }),
            1,
            Box::new(move |p| parked(p) && keep_all(p)),
            "a row that does not map: kept for a person",
        ),
    ];
    assert!(rows.len() >= 25);
    for (err, n, ok, why) in &rows {
        let p = plan(err, at(*n));
        assert!(ok(&p), "{why}: {err:?} on receive {n} -> {p:?}");
    }
}

#[test]
fn backoff_grows_is_capped_and_jittered() {
    assert_eq!(backoff(1, 0), Duration::from_secs(10));
    assert_eq!(backoff(2, 0), Duration::from_secs(20));
    assert_eq!(backoff(4, 0), Duration::from_secs(80));
    assert_eq!(backoff(30, 0), Duration::from_secs(900));
    assert_eq!(backoff(0, 250), Duration::from_millis(10_250));
    assert!(retries_exhausted(4, 5) && !retries_exhausted(3, 5));
}

#[test]
fn reasons_are_safe_text() {
    let p = plan(
        &mcp(McpError::Unauthorized {
            status: Some(401),
            code: Some("expired_token".into()),
        }),
        at(1),
    );
    assert_eq!(
        p.integration,
        IntegrationPlan::Error(
            "Bitrix24 rejected the token (it may be wrong, expired or revoked) (expired_token)"
                .into()
        )
    );
}

/// The README's "What happens when ..." table is this table: every case's line is in it.
#[test]
fn the_readme_says_what_the_plan_does() {
    let readme = include_str!("../../../README.md");
    let lines: Vec<String> = cases()
        .into_iter()
        .map(|(when, err, n)| format!("| {when} | {} |", describe(&plan(&err, at(n)))))
        .collect();
    let missing: Vec<&String> = lines
        .iter()
        .filter(|l| !readme.contains(l.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "README's table must be exactly:\n{}",
        lines.join("\n")
    );
}

/// The `IntegrationsErrored` metric's class says whose side failed; the operator's alarm
/// watches `stored_connection`, so a token the tenant revoked must never land there.
#[test]
fn integration_errors_name_whose_side_failed() {
    let refused = SyncError::Vault(VaultError::Refused {
        source: kms(aws_sdk_kms::Error::InvalidCiphertextException(
            aws_sdk_kms::types::error::InvalidCiphertextException::builder().build(),
        )),
    });
    let rows: Vec<(SyncError, &str, &str)> = vec![
        (
            mcp(McpError::Unauthorized {
                status: Some(401),
                code: None,
            }),
            errored::TOKEN_REJECTED,
            "a revoked token is the tenant's",
        ),
        (
            SyncError::Crm(CrmError::BindingStale { op: "create_lead" }),
            errored::TOOLS_GONE,
            "the portal's server dropped a tool",
        ),
        (
            refused,
            errored::STORED_CONNECTION,
            "KMS refuses what we stored",
        ),
        (
            SyncError::BadConnection("MCP_TOOL_MAP is invalid"),
            errored::STORED_CONNECTION,
            "our configuration",
        ),
    ];
    for (err, class, why) in rows {
        let p = plan(&err, at(1));
        assert!(
            matches!(p.integration, IntegrationPlan::Error(_)),
            "{why}: turns to error"
        );
        assert_eq!(p.class, class, "{why}");
    }
    assert_eq!(plan(&ddb_throttle(), at(1)).class, "operator");
    assert_eq!(plan(&transient(), at(1)).class, "portal_failing");
}

/// What `RateLimitWaitMs` counts besides the budget's sleeps: retries held back by a rate
/// limit, and nothing else that retries.
#[test]
fn rate_limits_are_told_from_other_retries() {
    let rows: Vec<(SyncError, bool)> = vec![
        (mcp(McpError::RateLimited { retry_after: None }), true),
        (
            SyncError::RateBudget {
                wait: Duration::from_secs(3),
            },
            true,
        ),
        (transient(), false),
        (SyncError::CreateLockHeld, false),
        (ddb_throttle(), false),
    ];
    for (err, want) in rows {
        assert_eq!(err.is_rate_limit(), want, "{err:?}");
    }
}
