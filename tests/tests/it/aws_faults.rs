//! The AWS fault proxy against the real moto_server through the real SDK clients: pass-through,
//! each injected fault as the SDK classifies it, seeded shares, the admin endpoint, and which
//! faults the SDK's default (standard, 3 attempts) retries absorb.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a failure is the assertion

use std::time::{Duration, Instant};

use aws_config::SdkConfig;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use teleagent_tests::aws_faults::{AfterDelay, AwsFaultProxy, FaultKind, FaultPlan, FaultRule};
use teleagent_tests::harness::{self, TestEnv};

struct Clients {
    ddb: aws_sdk_dynamodb::Client,
    kms: aws_sdk_kms::Client,
    sqs: aws_sdk_sqs::Client,
}

/// How the SDK clients behind the proxy retry and time out.
#[derive(Clone, Copy)]
enum Retries {
    /// One attempt: the injected error is exactly what the caller sees.
    Off,
    /// The SDK default (standard, 3 attempts) with a short backoff so tests stay quick.
    Standard,
}

async fn clients_via(
    proxy: &AwsFaultProxy,
    retries: Retries,
    attempt_timeout: Option<Duration>,
) -> Clients {
    let base: SdkConfig = harness::sdk_config().await;
    let retry = match retries {
        Retries::Off => RetryConfig::disabled(),
        Retries::Standard => RetryConfig::standard()
            .with_initial_backoff(Duration::from_millis(5))
            .with_max_backoff(Duration::from_millis(50)),
    };
    let mut timeouts = TimeoutConfig::builder().connect_timeout(Duration::from_secs(3));
    if let Some(t) = attempt_timeout {
        timeouts = timeouts.operation_attempt_timeout(t);
    }
    let sdk = base
        .into_builder()
        .endpoint_url(proxy.endpoint())
        .retry_config(retry)
        .timeout_config(timeouts.build())
        .build();
    Clients {
        ddb: aws_sdk_dynamodb::Client::new(&sdk),
        kms: aws_sdk_kms::Client::new(&sdk),
        sqs: aws_sdk_sqs::Client::new(&sdk),
    }
}

async fn start_proxy() -> AwsFaultProxy {
    AwsFaultProxy::start(harness::moto_endpoint())
        .await
        .expect("start the aws fault proxy")
}

fn only(service: &str, operation: &str, fault: FaultKind) -> FaultPlan {
    FaultPlan::none().rule(FaultRule::new(service, operation, fault, 1.0))
}

fn key(pk: &str) -> [(String, AttributeValue); 2] {
    [
        ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
        ("sk".to_owned(), AttributeValue::S("item".to_owned())),
    ]
}

async fn put(
    c: &Clients,
    env: &TestEnv,
    pk: &str,
) -> Result<(), SdkError<aws_sdk_dynamodb::operation::put_item::PutItemError>> {
    let [(a, av), (b, bv)] = key(pk);
    c.ddb
        .put_item()
        .table_name(&env.table)
        .item(a, av)
        .item(b, bv)
        .item("v", AttributeValue::S("x".to_owned()))
        .send()
        .await
        .map(|_| ())
}

async fn get(
    c: &Clients,
    env: &TestEnv,
    pk: &str,
) -> Result<bool, SdkError<aws_sdk_dynamodb::operation::get_item::GetItemError>> {
    let [(a, av), (b, bv)] = key(pk);
    c.ddb
        .get_item()
        .table_name(&env.table)
        .key(a, av)
        .key(b, bv)
        .consistent_read(true)
        .send()
        .await
        .map(|o| o.item.is_some())
}

async fn send(
    c: &Clients,
    env: &TestEnv,
    body: &str,
) -> Result<(), SdkError<aws_sdk_sqs::operation::send_message::SendMessageError>> {
    c.sqs
        .send_message()
        .queue_url(&env.queue_url)
        .message_body(body)
        .message_group_id("g")
        .message_deduplication_id(uuid::Uuid::new_v4().to_string())
        .send()
        .await
        .map(|_| ())
}

async fn encrypt(c: &Clients, env: &TestEnv) -> Vec<u8> {
    c.kms
        .encrypt()
        .key_id(&env.key_id)
        .plaintext(Blob::new(b"secret".to_vec()))
        .send()
        .await
        .expect("encrypt through the proxy")
        .ciphertext_blob
        .expect("ciphertext")
        .into_inner()
}

async fn decrypt(
    c: &Clients,
    ct: &[u8],
) -> Result<Vec<u8>, SdkError<aws_sdk_kms::operation::decrypt::DecryptError>> {
    c.kms
        .decrypt()
        .ciphertext_blob(Blob::new(ct.to_vec()))
        .send()
        .await
        .map(|o| o.plaintext.expect("plaintext").into_inner())
}

/// The HTTP status of the raw response, if there was one.
fn status<E>(e: &SdkError<E>) -> Option<u16> {
    e.raw_response().map(|r| r.status().as_u16())
}

#[tokio::test]
async fn share_zero_passes_every_request_through() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let mut plan = FaultPlan::none().seed(1);
    for f in [
        FaultKind::Throttle,
        FaultKind::ProvisionedThroughput,
        FaultKind::Http500,
        FaultKind::Reset,
        FaultKind::KmsInvalidState,
        FaultKind::AccessDenied,
    ] {
        plan = plan.rule(FaultRule::new("*", "*", f, 0.0));
    }
    proxy.set_plan(plan);
    let c = clients_via(&proxy, Retries::Off, None).await;

    put(&c, &env, "a").await.expect("put item");
    assert!(get(&c, &env, "a").await.expect("get item"));
    let ct = encrypt(&c, &env).await;
    assert_eq!(decrypt(&c, &ct).await.expect("decrypt"), b"secret");
    send(&c, &env, "hello").await.expect("send message");
    let got = c
        .sqs
        .receive_message()
        .queue_url(&env.queue_url)
        .wait_time_seconds(1)
        .send()
        .await
        .expect("receive message")
        .messages
        .unwrap_or_default();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].body.as_deref(), Some("hello"));

    let stats = proxy.stats();
    assert_eq!(stats.injected, 0, "{stats:#?}");
    assert_eq!(stats.upstream_errors, 0, "{stats:#?}");
    assert_eq!(stats.forwarded, stats.requests, "{stats:#?}");
    for (s, o) in [
        ("dynamodb", "PutItem"),
        ("dynamodb", "GetItem"),
        ("kms", "Encrypt"),
        ("kms", "Decrypt"),
        ("sqs", "SendMessage"),
        ("sqs", "ReceiveMessage"),
    ] {
        assert_eq!(stats.operation(s, o).forwarded, 1, "{s}/{o}: {stats:#?}");
    }
}

#[tokio::test]
async fn dynamodb_faults_reach_the_sdk_with_their_codes() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let c = clients_via(&proxy, Retries::Off, None).await;
    put(&c, &env, "seed").await.expect("put before faults");

    proxy.set_plan(only(
        "dynamodb",
        "PutItem",
        FaultKind::ProvisionedThroughput,
    ));
    let e = put(&c, &env, "p").await.unwrap_err();
    assert_eq!(
        e.code(),
        Some("ProvisionedThroughputExceededException"),
        "{e:?}"
    );
    assert!(
        e.as_service_error()
            .unwrap()
            .is_provisioned_throughput_exceeded_exception()
    );
    assert_eq!(status(&e), Some(400));
    // Other operations still pass, and the throttled write never reached moto.
    assert!(get(&c, &env, "seed").await.expect("get passes"));
    assert!(!get(&c, &env, "p").await.expect("get passes"));

    proxy.set_plan(only("dynamodb", "PutItem", FaultKind::Throttle));
    let e = put(&c, &env, "p").await.unwrap_err();
    assert_eq!(e.code(), Some("ThrottlingException"), "{e:?}");
    assert!(e.as_service_error().unwrap().is_throttling_exception());

    proxy.set_plan(only("dynamodb", "PutItem", FaultKind::Http500));
    let e = put(&c, &env, "p").await.unwrap_err();
    assert!(matches!(e, SdkError::ServiceError(_)), "{e:?}");
    assert_eq!(status(&e), Some(500));
    assert!(e.as_service_error().unwrap().is_internal_server_error());

    proxy.set_plan(only("dynamodb", "PutItem", FaultKind::AccessDenied));
    let e = put(&c, &env, "p").await.unwrap_err();
    assert_eq!(e.code(), Some("AccessDeniedException"), "{e:?}");

    let s = proxy.stats().operation("dynamodb", "PutItem");
    assert_eq!((s.requests, s.injected, s.forwarded), (5, 4, 1), "{s:#?}");
}

#[tokio::test]
async fn kms_faults_reach_the_sdk_with_their_codes() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let c = clients_via(&proxy, Retries::Off, None).await;
    let ct = encrypt(&c, &env).await;

    for (fault, code) in [
        (FaultKind::Throttle, "ThrottlingException"),
        (FaultKind::KmsInvalidState, "KMSInvalidStateException"),
        (FaultKind::KmsDisabled, "DisabledException"),
        (FaultKind::AccessDenied, "AccessDeniedException"),
        (FaultKind::Http500, "KMSInternalException"),
    ] {
        proxy.set_plan(only("kms", "Decrypt", fault));
        let e = decrypt(&c, &ct).await.unwrap_err();
        assert_eq!(e.code(), Some(code), "{fault:?}: {e:?}");
        assert!(matches!(e, SdkError::ServiceError(_)), "{e:?}");
        // Encrypt is not in the plan.
        encrypt(&c, &env).await;
    }
    proxy.set_plan(only("kms", "Decrypt", FaultKind::KmsInvalidState));
    let e = decrypt(&c, &ct).await.unwrap_err();
    assert!(
        e.as_service_error()
            .unwrap()
            .is_kms_invalid_state_exception()
    );
    proxy.set_plan(only("kms", "Decrypt", FaultKind::KmsDisabled));
    let e = decrypt(&c, &ct).await.unwrap_err();
    assert!(e.as_service_error().unwrap().is_disabled_exception());
    // Unmodeled for Decrypt: only the code says what it is.
    proxy.set_plan(only("kms", "Decrypt", FaultKind::AccessDenied));
    let e = decrypt(&c, &ct).await.unwrap_err();
    assert!(e.as_service_error().unwrap().meta().code() == Some("AccessDeniedException"));

    proxy.set_plan(FaultPlan::none());
    assert_eq!(
        decrypt(&c, &ct).await.expect("decrypt after faults"),
        b"secret"
    );
}

#[tokio::test]
async fn sqs_faults_reach_the_sdk_with_their_codes() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let c = clients_via(&proxy, Retries::Off, None).await;

    proxy.set_plan(only("sqs", "SendMessage", FaultKind::Throttle));
    let e = send(&c, &env, "x").await.unwrap_err();
    assert_eq!(e.code(), Some("RequestThrottled"), "{e:?}");
    assert!(e.as_service_error().unwrap().is_request_throttled());

    proxy.set_plan(
        FaultPlan::none().rule(
            FaultRule::new("sqs", "SendMessage", FaultKind::Throttle, 1.0)
                .with_code("ThrottlingException"),
        ),
    );
    let e = send(&c, &env, "x").await.unwrap_err();
    assert_eq!(e.code(), Some("ThrottlingException"), "{e:?}");

    proxy.set_plan(only("sqs", "SendMessage", FaultKind::KmsInvalidState));
    let e = send(&c, &env, "x").await.unwrap_err();
    assert_eq!(e.code(), Some("KMS.InvalidStateException"), "{e:?}");
    assert!(e.as_service_error().unwrap().is_kms_invalid_state());

    proxy.set_plan(only("sqs", "SendMessage", FaultKind::KmsDisabled));
    let e = send(&c, &env, "x").await.unwrap_err();
    assert!(e.as_service_error().unwrap().is_kms_disabled(), "{e:?}");

    proxy.set_plan(only("sqs", "SendMessage", FaultKind::Http500));
    let e = send(&c, &env, "x").await.unwrap_err();
    assert_eq!(e.code(), Some("InternalError"), "{e:?}");
    assert!(matches!(&e, SdkError::ServiceError(s) if s.raw().status().as_u16() == 500));

    // ReceiveMessage is not in the plan, and nothing was enqueued by the faulted sends.
    let got = c
        .sqs
        .receive_message()
        .queue_url(&env.queue_url)
        .send()
        .await
        .expect("receive passes")
        .messages
        .unwrap_or_default();
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(proxy.stats().operation("sqs", "SendMessage").forwarded, 0);
}

#[tokio::test]
async fn sqs_query_protocol_requests_are_named_by_action() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let http = reqwest::Client::new();
    let path = env
        .queue_url
        .split_once("://")
        .and_then(|(_, rest)| rest.split_once('/'))
        .map(|(_, p)| p.to_owned())
        .unwrap();
    let url = format!("{}/{path}", proxy.endpoint());
    let auth = "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sqs/aws4_request, \
                SignedHeaders=content-type;host;x-amz-date, Signature=00";
    let call = |action: &'static str| {
        http.post(&url)
            .header(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )
            .header("authorization", auth)
            .header("x-amz-date", "20260101T000000Z")
            .body(format!(
                "Action={action}&Version=2012-11-05&QueueUrl={}",
                env.queue_url
            ))
            .send()
    };
    let r = call("GetQueueAttributes").await.unwrap();
    assert_eq!(r.status(), 200, "{:?}", r.text().await);

    proxy.set_plan(only("sqs", "GetQueueAttributes", FaultKind::Throttle));
    let r = call("GetQueueAttributes").await.unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "text/xml");
    let body = r.text().await.unwrap();
    assert!(body.contains("<Code>RequestThrottled</Code>"), "{body}");
    assert!(body.contains("<Type>Sender</Type>"), "{body}");
    let s = proxy.stats().operation("sqs", "GetQueueAttributes");
    assert_eq!((s.requests, s.forwarded, s.injected), (2, 1, 1), "{s:#?}");
}

#[tokio::test]
async fn reset_is_a_dispatch_io_error() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let c = clients_via(&proxy, Retries::Off, None).await;
    put(&c, &env, "r").await.expect("put before faults");
    proxy.set_plan(only("dynamodb", "GetItem", FaultKind::Reset));
    for _ in 0..3 {
        let e = get(&c, &env, "r").await.unwrap_err();
        match &e {
            SdkError::DispatchFailure(d) => {
                assert!(d.is_io(), "not io: {e:?}");
                // A real RST (SO_LINGER 0), not a FIN: hyper reports a FIN before the answer as
                // an "incomplete message", which the SDK files under `other`, not `io`.
                let chain = format!("{e:?}");
                assert!(chain.contains("ConnectionReset"), "{chain}");
            }
            other => panic!("expected a dispatch failure, got {other:?}"),
        }
        // The next request opens a new connection and passes.
        put(&c, &env, "r2").await.expect("put passes after a reset");
    }
    let s = proxy.stats().operation("dynamodb", "GetItem");
    assert_eq!((s.injected, s.forwarded), (3, 0));
}

#[tokio::test]
async fn delay_past_the_attempt_timeout_is_a_timeout_error() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let c = clients_via(&proxy, Retries::Off, Some(Duration::from_millis(300))).await;
    put(&c, &env, "warm").await.expect("put before faults");

    // Delay, then forward: the caller times out, but the write still lands (an ambiguous write).
    proxy.set_plan(FaultPlan::none().rule(FaultRule::delay(
        "dynamodb",
        "PutItem",
        1.0,
        800,
        AfterDelay::Forward,
    )));
    let t0 = Instant::now();
    let e = put(&c, &env, "late").await.unwrap_err();
    assert!(matches!(e, SdkError::TimeoutError(_)), "{e:?}");
    assert!(
        t0.elapsed() < Duration::from_millis(700),
        "{:?}",
        t0.elapsed()
    );
    assert!(!get(&c, &env, "late").await.expect("get passes"));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        get(&c, &env, "late").await.expect("get passes"),
        "the delayed write landed"
    );

    // Delay, then reset: the write never lands.
    proxy.set_plan(FaultPlan::none().rule(FaultRule::delay(
        "dynamodb",
        "PutItem",
        1.0,
        500,
        AfterDelay::Reset,
    )));
    let e = put(&c, &env, "lost").await.unwrap_err();
    assert!(matches!(e, SdkError::TimeoutError(_)), "{e:?}");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!get(&c, &env, "lost").await.expect("get passes"));
    let s = proxy.stats().operation("dynamodb", "PutItem");
    assert_eq!(s.by_fault.get("delay"), Some(&2), "{s:#?}");
}

#[tokio::test]
async fn seeded_half_share_injects_about_half_and_repeats() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let c = clients_via(&proxy, Retries::Off, None).await;
    put(&c, &env, "h").await.expect("put before faults");
    let plan = FaultPlan::none()
        .rule(FaultRule::new(
            "dynamodb",
            "GetItem",
            FaultKind::Throttle,
            0.5,
        ))
        .seed(2026);
    let mut runs = Vec::new();
    for _ in 0..2 {
        proxy.set_plan(plan.clone());
        proxy.reset_stats();
        let mut pattern = Vec::with_capacity(200);
        for _ in 0..200 {
            match get(&c, &env, "h").await {
                Ok(found) => {
                    assert!(found);
                    pattern.push(false);
                }
                Err(e) => {
                    assert_eq!(e.code(), Some("ThrottlingException"), "{e:?}");
                    pattern.push(true);
                }
            }
        }
        let injected = pattern.iter().filter(|t| **t).count() as u64;
        assert!((80..=120).contains(&injected), "{injected} of 200");
        let s = proxy.stats().operation("dynamodb", "GetItem");
        assert_eq!(
            (s.requests, s.injected, s.forwarded),
            (200, injected, 200 - injected)
        );
        assert_eq!(s.by_fault.get("throttle"), Some(&injected));
        runs.push(pattern);
    }
    assert_eq!(runs[0], runs[1], "the same seed gives the same faults");
}

#[tokio::test]
async fn admin_endpoint_reads_and_changes_the_plan() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let c = clients_via(&proxy, Retries::Off, None).await;
    let http = reqwest::Client::new();
    let admin = format!("{}/__faults", proxy.endpoint());

    let plan = serde_json::json!({
        "rules": [{"service": "dynamodb", "operation": "PutItem", "fault": "provisioned_throughput", "share": 1.0}],
        "seed": 3
    });
    let r = http.post(&admin).json(&plan).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let now: FaultPlan = http.get(&admin).send().await.unwrap().json().await.unwrap();
    assert_eq!(now, proxy.plan());
    assert_eq!(now.rules[0].fault, FaultKind::ProvisionedThroughput);

    let e = put(&c, &env, "a").await.unwrap_err();
    assert_eq!(e.code(), Some("ProvisionedThroughputExceededException"));

    let stats: serde_json::Value = http
        .get(format!("{admin}/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats, serde_json::to_value(proxy.stats()).unwrap());
    assert_eq!(
        stats["by_operation"]["dynamodb/PutItem"]["by_fault"]["provisioned_throughput"],
        1
    );

    let r = http
        .post(&admin)
        .body(r#"{"rules":[{"fault":"bogus","share":1}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(proxy.plan(), now, "a bad plan changes nothing");

    let r = http
        .post(&admin)
        .body(r#"{"rules":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    put(&c, &env, "a").await.expect("no faults any more");
    let r = http.delete(format!("{admin}/stats")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(proxy.stats().requests, 0);
}

#[tokio::test]
async fn default_retries_absorb_a_30_percent_throttle_share() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let c = clients_via(&proxy, Retries::Standard, None).await;
    proxy.set_plan(
        FaultPlan::none()
            .rule(FaultRule::new(
                "dynamodb",
                "PutItem",
                FaultKind::ProvisionedThroughput,
                0.3,
            ))
            .seed(11),
    );
    let n = 60;
    let mut failed = 0;
    for i in 0..n {
        if let Err(e) = put(&c, &env, &format!("k{i}")).await {
            assert_eq!(e.code(), Some("ProvisionedThroughputExceededException"));
            failed += 1;
        }
    }
    let s = proxy.stats().operation("dynamodb", "PutItem");
    // 0.3^3 = 2.7% of calls fail all three attempts.
    assert!(failed <= 5, "{failed} of {n} failed: {s:#?}");
    assert!(s.injected >= 10, "{s:#?}");
    assert_eq!(s.forwarded, n - failed, "{s:#?}");
    assert_eq!(s.requests, s.forwarded + s.injected);
}

/// How many attempts the SDK's default retry strategy makes for each fault (proxy-side count):
/// 3 = retried, 1 = surfaced at once.
#[tokio::test]
async fn default_retries_classify_each_fault() {
    let env = TestEnv::new().await;
    let proxy = start_proxy().await;
    let c = clients_via(&proxy, Retries::Standard, Some(Duration::from_millis(300))).await;
    let ct = encrypt(&c, &env).await;
    let delay = |s: &str, o: &str| FaultRule::delay(s, o, 1.0, 600, AfterDelay::Forward);
    let cases: Vec<(&str, FaultRule, u64)> = vec![
        (
            "ddb throttle",
            FaultRule::new("dynamodb", "PutItem", FaultKind::Throttle, 1.0),
            3,
        ),
        (
            "ddb provisioned",
            FaultRule::new("dynamodb", "PutItem", FaultKind::ProvisionedThroughput, 1.0),
            3,
        ),
        (
            "ddb 500",
            FaultRule::new("dynamodb", "PutItem", FaultKind::Http500, 1.0),
            3,
        ),
        (
            "ddb reset",
            FaultRule::new("dynamodb", "PutItem", FaultKind::Reset, 1.0),
            3,
        ),
        ("ddb delay", delay("dynamodb", "PutItem"), 3),
        (
            "ddb access denied",
            FaultRule::new("dynamodb", "PutItem", FaultKind::AccessDenied, 1.0),
            1,
        ),
        (
            "kms throttle",
            FaultRule::new("kms", "Decrypt", FaultKind::Throttle, 1.0),
            3,
        ),
        (
            "kms 500",
            FaultRule::new("kms", "Decrypt", FaultKind::Http500, 1.0),
            3,
        ),
        (
            "kms invalid state",
            FaultRule::new("kms", "Decrypt", FaultKind::KmsInvalidState, 1.0),
            1,
        ),
        (
            "kms disabled",
            FaultRule::new("kms", "Decrypt", FaultKind::KmsDisabled, 1.0),
            1,
        ),
        (
            "kms access denied",
            FaultRule::new("kms", "Decrypt", FaultKind::AccessDenied, 1.0),
            1,
        ),
        (
            "sqs RequestThrottled",
            FaultRule::new("sqs", "SendMessage", FaultKind::Throttle, 1.0),
            3,
        ),
        (
            "sqs ThrottlingException",
            FaultRule::new("sqs", "SendMessage", FaultKind::Throttle, 1.0)
                .with_code("ThrottlingException"),
            3,
        ),
        (
            "sqs KMS.ThrottlingException",
            FaultRule::new("sqs", "SendMessage", FaultKind::Throttle, 1.0)
                .with_code("KMS.ThrottlingException"),
            1,
        ),
        (
            "sqs 500",
            FaultRule::new("sqs", "SendMessage", FaultKind::Http500, 1.0),
            3,
        ),
        (
            "sqs kms invalid state",
            FaultRule::new("sqs", "SendMessage", FaultKind::KmsInvalidState, 1.0),
            1,
        ),
    ];
    let mut table = Vec::new();
    for (name, rule, want) in cases {
        let (service, operation) = (rule.service.clone(), rule.operation.clone());
        proxy.set_plan(FaultPlan::none().rule(rule));
        proxy.reset_stats();
        let t0 = Instant::now();
        let err = match service.as_str() {
            "dynamodb" => put(&c, &env, "x")
                .await
                .err()
                .map(|e| format!("{:?}", e.code())),
            "kms" => decrypt(&c, &ct)
                .await
                .err()
                .map(|e| format!("{:?}", e.code())),
            _ => send(&c, &env, "x")
                .await
                .err()
                .map(|e| format!("{:?}", e.code())),
        };
        let attempts = proxy.stats().operation(&service, &operation).requests;
        table.push(format!(
            "{name:28} attempts={attempts} error={err:?} in {:?}",
            t0.elapsed()
        ));
        assert!(err.is_some(), "{name}: share 1.0 must fail");
        assert_eq!(attempts, want, "{name}: {}", table.join("\n"));
    }
    println!("{}", table.join("\n"));
}
