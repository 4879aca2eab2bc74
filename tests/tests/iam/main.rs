//! Permissions checked by execution: the six real function binaries (and the chat pipeline's
//! producer, and the SQS event source mapping played by the poller) run against a moto_server
//! of their own that enforces IAM, each with an IAM user whose only policy is that function's
//! statements from `infra/template.yaml` (AuthMode hs256, so the sign-in secret's SSM grant is
//! exercised too), resolved to this stack's ARNs. What moto evaluates and what it cannot see is
//! in `teleagent_tests::iam`; what it cannot see (resources of DynamoDB/KMS/SSM, KMS
//! encryption-context conditions) is checked here from moto's request recording.
//!
//! Least privilege both ways: a call a function needs and its statements lack fails the path
//! that makes it (and the recording check); a statement no path used fails
//! `each_function_uses_exactly_its_template_permissions`.
//!
//! The stack (moto, the users, one process per function, the poller) is started once per test
//! binary on a thread of its own whose runtime keeps serving the functions' Runtime APIs.
//!
//! A test binary of its own (not a module of `it`): cargo runs test binaries one after the
//! other, so this suite's six processes and its burst never compete for the CPU with `it`'s
//! timing-sensitive tests (the shared rate bucket's concurrent takers failed when they did).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure is the assertion

use std::collections::{BTreeSet, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use serde_yaml::Value as Yaml;
use shared::events::{LeadEvent, LeadEventProducer};
use shared::tenant::TenantId;
use teleagent_tests::cfn::{self, Physical, Resolver};
use teleagent_tests::iam::{self, Arns, FunctionProcess, IamMoto, Keys};
use teleagent_tests::local::poller::{self, Poller, PollerOptions};
use teleagent_tests::local::run::FUNCTIONS;
use teleagent_tests::local::runtime_api::InvocationResult;
use teleagent_tests::sandbox::{Sandbox, SandboxConfig};

/// The test lead queue's redrive `maxReceiveCount` (and the functions' setting): low, so the
/// re-queue on the receive before it comes after one retry.
const MAX_RECEIVE: u32 = 3;
const ISSUER: &str = "https://iam-test.supabase.co/auth/v1";
const AUDIENCE: &str = "authenticated";
/// The chat pipeline's producer, with the template's ChatPipelineSendPolicy.
const PRODUCER: &str = "chat-pipeline";
/// Statements the function's code never uses because the Lambda service does, with the role.
const USED_BY_THE_SERVICE: [&str; 1] = ["Logs"];

struct Stack {
    moto: IamMoto,
    queue_url: String,
    dlq_url: String,
    /// lead-watch's work queue and the outbound lead changes queue.
    watch_url: String,
    changes_url: String,
    secret: String,
    arns: Arns,
    /// Per principal (function binary or the producer): its keys and resolved statements.
    users: HashMap<String, (Keys, Vec<Value>)>,
    functions: HashMap<String, FunctionProcess>,
}

fn stack() -> &'static Stack {
    static STACK: OnceLock<Result<Stack, String>> = OnceLock::new();
    let s = STACK.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = match tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return;
                }
            };
            rt.block_on(async move {
                let started = start_stack().await;
                let poller = started.as_ref().ok().map(|(_, p)| p.clone());
                let _ = tx.send(started.map(|(s, _)| s));
                // Serve the function processes and run the event source mapping forever.
                if let Some(p) = poller {
                    p.run(std::future::pending()).await;
                }
                std::future::pending::<()>().await;
            });
        });
        rx.recv()
            .unwrap_or_else(|_| Err("the IAM stack thread died".into()))
    });
    match s {
        Ok(s) => s,
        Err(e) => panic!("IAM stack did not start: {e}"),
    }
}

fn physical(reference: &str, arn: &str) -> Physical {
    Physical {
        reference: reference.to_owned(),
        arn: arn.to_owned(),
    }
}

/// The statements of every `AWS::IAM::Policy` or `AWS::IAM::ManagedPolicy` attached to `role`
/// (or, for the chat pipeline's managed policy, of that policy), resolved.
fn statements_of(t: &Yaml, r: &Resolver, pick: impl Fn(&str, &Yaml) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    for (id, res) in t["Resources"].as_mapping().expect("Resources") {
        let id = id.as_str().unwrap_or_default();
        let ty = res["Type"].as_str().unwrap_or_default();
        if !matches!(ty, "AWS::IAM::Policy" | "AWS::IAM::ManagedPolicy") || !pick(id, res) {
            continue;
        }
        let doc = r.resolve(&res["Properties"]["PolicyDocument"]);
        let doc: Value = serde_json::to_value(&doc).expect("policy as JSON");
        match &doc["Statement"] {
            Value::Array(a) => out.extend(a.iter().cloned()),
            s @ Value::Object(_) => out.push(s.clone()),
            _ => {}
        }
    }
    out
}

async fn start_stack() -> Result<
    (
        Stack,
        std::sync::Arc<Poller<std::sync::Arc<teleagent_tests::local::runtime_api::RuntimeApi>>>,
    ),
    String,
> {
    let root = teleagent_tests::harness::workspace_root();
    iam::function_binaries()?;
    let moto = iam::start_moto().await?;
    let admin = iam::sdk_config(&moto.endpoint, &moto.admin).await;
    let aws = shared::aws::AwsClients::from_sdk_config(&admin);
    let iam_client = aws_sdk_iam::Client::new(&admin);
    let ssm = aws_sdk_ssm::Client::new(&admin);
    let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();

    let table = format!("iam-{suffix}");
    teleagent_tests::harness::create_table(&aws.dynamodb, &table).await;
    let key = aws
        .kms
        .create_key()
        .send()
        .await
        .map_err(|e| format!("CreateKey: {e:?}"))?
        .key_metadata
        .ok_or("no key")?;
    let key_arn = key.arn.clone().ok_or("key without arn")?;
    let (queue_url, dlq_url) =
        poller::create_queue_pair(&aws.sqs, &format!("iam-{suffix}"), MAX_RECEIVE, 30).await?;
    let watch_url =
        teleagent_tests::harness::create_queue(&aws.sqs, &format!("iam-{suffix}-watch"), false)
            .await?;
    let changes_url = teleagent_tests::harness::create_queue(
        &aws.sqs,
        &format!("iam-{suffix}-changes.fifo"),
        true,
    )
    .await?;
    let queue_arn = |url: &str| {
        format!(
            "arn:aws:sqs:{}:{}:{}",
            iam::REGION,
            iam::ACCOUNT,
            url.rsplit('/').next().unwrap_or_default()
        )
    };
    let parameter = format!("/teleagent-iam/{suffix}/jwt-hs256-secret");
    let secret = format!("iam-test-hs256-secret-{}", uuid::Uuid::new_v4().simple());
    ssm.put_parameter()
        .name(&parameter)
        .value(&secret)
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .send()
        .await
        .map_err(|e| format!("PutParameter: {:?}", aws_sdk_ssm::Error::from(e)))?;

    let given = [
        ("AuthMode", "hs256"),
        ("JwtHs256SecretParameterName", parameter.as_str()),
        ("JwtIssuer", ISSUER),
        ("JwtAudience", AUDIENCE),
    ];
    let t = cfn::template_for(&given);
    let mut resources: HashMap<String, Physical> = HashMap::from([
        (
            "Table".to_owned(),
            physical(
                &table,
                &format!(
                    "arn:aws:dynamodb:{}:{}:table/{table}",
                    iam::REGION,
                    iam::ACCOUNT
                ),
            ),
        ),
        ("TokenKey".to_owned(), physical(&key.key_id, &key_arn)),
        (
            "LeadQueue".to_owned(),
            physical(&queue_url, &queue_arn(&queue_url)),
        ),
        (
            "DeadLetterQueue".to_owned(),
            physical(&dlq_url, &queue_arn(&dlq_url)),
        ),
        (
            "WatchQueue".to_owned(),
            physical(&watch_url, &queue_arn(&watch_url)),
        ),
        (
            "LeadChangesQueue".to_owned(),
            physical(&changes_url, &queue_arn(&changes_url)),
        ),
    ]);
    for (id, res) in t["Resources"].as_mapping().expect("Resources") {
        let id = id.as_str().unwrap_or_default();
        if res["Type"].as_str() == Some("AWS::Logs::LogGroup") {
            let name = format!("/aws/lambda/iam-{suffix}-{id}");
            let arn = format!(
                "arn:aws:logs:{}:{}:log-group:{name}:*",
                iam::REGION,
                iam::ACCOUNT
            );
            resources.insert(id.to_owned(), physical(&name, &arn));
        }
    }
    let resolver = Resolver {
        partition: "aws".into(),
        region: iam::REGION.into(),
        account: iam::ACCOUNT.into(),
        stack_name: format!("iam-{suffix}"),
        params: cfn::parameters(&cfn::load(), &given),
        resources,
    };
    let arns = Arns {
        tables: HashMap::from([(table.clone(), resolver.resources["Table"].arn.clone())]),
        keys: HashMap::from([
            (key.key_id.clone(), key_arn.clone()),
            (key_arn.clone(), key_arn.clone()),
        ]),
        queues: HashMap::from([
            (queue_url.clone(), queue_arn(&queue_url)),
            (dlq_url.clone(), queue_arn(&dlq_url)),
            (watch_url.clone(), queue_arn(&watch_url)),
            (changes_url.clone(), queue_arn(&changes_url)),
        ]),
    };

    // One IAM user per function with its role's statements, and one for the chat pipeline.
    let mut users = HashMap::new();
    let mut functions = HashMap::new();
    for (id, res) in t["Resources"].as_mapping().expect("Resources") {
        if res["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let bin = res["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .ok_or_else(|| format!("{id:?} has no Binary"))?
            .to_owned();
        let role = res["Properties"]["Role"]["Fn::GetAtt"][0]
            .as_str()
            .ok_or_else(|| format!("{bin}: Role is not a GetAtt"))?
            .to_owned();
        let statements = statements_of(&t, &resolver, |_, p| {
            p["Properties"]["Roles"]
                .as_sequence()
                .is_some_and(|rs| rs.iter().any(|r| r["Ref"].as_str() == Some(role.as_str())))
        });
        let keys = iam::create_user(
            &iam_client,
            &format!("{bin}-{suffix}"),
            &iam::moto_policy(&statements),
        )
        .await?;
        let vars = resolver.resolve(&res["Properties"]["Environment"]["Variables"]);
        let mut env: HashMap<String, String> = vars
            .as_mapping()
            .into_iter()
            .flatten()
            .map(|(k, v)| {
                let v = match v {
                    Yaml::String(s) => s.clone(),
                    other => serde_yaml::to_string(other)
                        .unwrap_or_default()
                        .trim()
                        .to_owned(),
                };
                (k.as_str().unwrap_or_default().to_owned(), v)
            })
            .collect();
        // Local-only settings on top of the template's: the stack's endpoint and the function's
        // own keys, the sandbox on loopback, and this queue's redrive.
        env.insert("AWS_ENDPOINT_URL".into(), moto.endpoint.clone());
        env.insert("AWS_ACCESS_KEY_ID".into(), keys.access_key_id.clone());
        env.insert(
            "AWS_SECRET_ACCESS_KEY".into(),
            keys.secret_access_key.clone(),
        );
        env.insert("MCP_ALLOW_LOOPBACK".into(), "true".into());
        env.insert(
            "LEAD_QUEUE_MAX_RECEIVE_COUNT".into(),
            MAX_RECEIVE.to_string(),
        );
        // The most verbose setting: even so, no raw event and no secret may reach the output.
        env.insert("RUST_LOG".into(), "trace".into());
        let log = root.join(format!(".local/iam-{suffix}-{bin}.log"));
        let process = FunctionProcess::start(&bin, &env, log).await?;
        functions.insert(bin.clone(), process);
        users.insert(bin, (keys, statements));
    }
    let chat = statements_of(&t, &resolver, |id, _| id == "ChatPipelineSendPolicy");
    let keys = iam::create_user(
        &iam_client,
        &format!("{PRODUCER}-{suffix}"),
        &iam::moto_policy(&chat),
    )
    .await?;
    users.insert(PRODUCER.to_owned(), (keys, chat));
    if functions.len() != FUNCTIONS.len() {
        return Err(format!(
            "expected the six functions, got {:?}",
            functions.keys()
        ));
    }

    // The event source mapping runs with lead-sync's role (receive, delete, attributes).
    let (sync_keys, _) = &users["lead-sync"];
    let sync_sqs = aws_sdk_sqs::Client::new(&iam::sdk_config(&moto.endpoint, sync_keys).await);
    let poller = Poller::new(
        sync_sqs,
        queue_url.clone(),
        functions["lead-sync"].api.clone(),
        PollerOptions {
            concurrency: 2,
            dead_letter_queue_url: Some(dlq_url.clone()),
            ..PollerOptions::default()
        },
    )
    .await
    .map_err(|e| format!("poller with lead-sync's credentials: {e}"))?;
    Ok((
        Stack {
            moto,
            queue_url,
            dlq_url,
            watch_url,
            changes_url,
            secret,
            arns,
            users,
            functions,
        },
        std::sync::Arc::new(poller),
    ))
}

/// Invokes lead-watch's real binary; its JSON answer.
async fn invoke_lead_watch(event: Value) -> Value {
    let r = stack().functions["lead-watch"]
        .api
        .invoke(event, Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("lead-watch: {e}"));
    let InvocationResult::Response(resp) = r else {
        panic!("lead-watch failed as a whole: {r:?}");
    };
    resp
}

/// One round of lead-watch as AWS runs it: the schedule's invocation fans out; the watch
/// queue's event source mapping (with lead-watch's own role: receive, attributes, delete)
/// hands the work items to the function. Returns this tenant's lead.changed events.
async fn watch_round(w: &World) -> Vec<Value> {
    let st = stack();
    let fanned = invoke_lead_watch(json!({})).await;
    assert!(
        fanned["due"].as_u64().unwrap_or(0) >= 1,
        "the tenant is due: {fanned}"
    );
    let esm = aws_sdk_sqs::Client::new(
        &iam::sdk_config(&st.moto.endpoint, &st.users["lead-watch"].0).await,
    );
    esm.get_queue_attributes()
        .queue_url(&st.watch_url)
        .attribute_names(aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout)
        .send()
        .await
        .unwrap();
    loop {
        let batch = teleagent_tests::harness::receive_as_event(&esm, &st.watch_url).await;
        if batch.records.is_empty() {
            break;
        }
        let answer = invoke_lead_watch(serde_json::to_value(&batch).unwrap()).await;
        assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
        for r in batch.records {
            teleagent_tests::harness::delete_message(&esm, &st.watch_url, r.receipt_handle).await;
        }
    }
    let mut mine = Vec::new();
    loop {
        let got = teleagent_tests::harness::receive_as_event(&w.admin_sqs, &st.changes_url).await;
        if got.records.is_empty() {
            return mine;
        }
        for r in got.records {
            let ev: Value = serde_json::from_str(r.body.as_deref().unwrap_or("{}")).unwrap();
            if ev["tenant_id"] == w.tenant.as_str() {
                mine.push(ev);
            }
            teleagent_tests::harness::delete_message(
                &w.admin_sqs,
                &st.changes_url,
                r.receipt_handle,
            )
            .await;
        }
    }
}

/// One test's tenant, sandbox portal and clients (the producer with the chat pipeline's keys).
struct World {
    tenant: TenantId,
    jwt: String,
    sandbox: Sandbox,
    producer: LeadEventProducer,
    admin_sqs: aws_sdk_sqs::Client,
    producer_sqs: aws_sdk_sqs::Client,
}

async fn world(cfg: SandboxConfig) -> World {
    let st = stack();
    let tenant = TenantId::parse(&format!(
        "iam-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    ))
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let jwt = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": "u", "tenant_id": tenant.as_str(), "iss": ISSUER, "aud": AUDIENCE,
                "iat": now, "exp": now + 3600}),
        &jsonwebtoken::EncodingKey::from_secret(st.secret.as_bytes()),
    )
    .unwrap();
    let producer_sqs =
        aws_sdk_sqs::Client::new(&iam::sdk_config(&st.moto.endpoint, &st.users[PRODUCER].0).await);
    World {
        jwt,
        sandbox: Sandbox::start(cfg).await,
        producer: LeadEventProducer::new(producer_sqs.clone(), st.queue_url.clone()),
        admin_sqs: aws_sdk_sqs::Client::new(
            &iam::sdk_config(&st.moto.endpoint, &st.moto.admin).await,
        ),
        producer_sqs,
        tenant,
    }
}

impl World {
    /// Calls a route through its function's real binary; returns status and JSON body.
    async fn call(&self, route: &str, body: Option<Value>) -> (u16, Value) {
        let (method, function) = match route {
            "status" => ("GET", "bitrix-status"),
            "connect" => ("POST", "bitrix-connect"),
            "test" => ("POST", "bitrix-test"),
            _ => ("POST", "bitrix-disconnect"),
        };
        let ev = iam::http_event(method, route, Some(&self.jwt), body.as_ref());
        let r = stack().functions[function]
            .api
            .invoke(ev, Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{function}: {e}"));
        let InvocationResult::Response(resp) = r else {
            panic!("{function} failed as a whole: {r:?}");
        };
        let status = resp["statusCode"].as_u64().unwrap_or(0) as u16;
        let body = resp["body"]
            .as_str()
            .and_then(|b| serde_json::from_str(b).ok())
            .unwrap_or(Value::Null);
        (status, body)
    }

    async fn connect(&self, token: &str) -> (u16, Value) {
        self.call(
            "connect",
            Some(json!({"mcp_token": token, "mcp_url": self.sandbox.mcp_url()})),
        )
        .await
    }

    fn event(&self, customer: &str, k: i64, note: &str) -> LeadEvent {
        let mut e = LeadEvent::new(self.tenant.clone(), customer, 40 + (k as u8 % 50));
        e.occurred_at = time::OffsetDateTime::now_utc() - time::Duration::minutes(30)
            + time::Duration::seconds(k);
        e.customer.name = Some(format!("Name {customer}"));
        let digits: String = customer.chars().filter(char::is_ascii_digit).collect();
        e.customer.phone = Some(format!("+99893{:0>7}", digits));
        e.lead.notes = Some(note.to_owned());
        e
    }

    /// Everything a person reads in the portal: COMMENTS and timeline comments of every lead.
    fn portal_text(&self) -> String {
        let mut t = String::new();
        for l in self.sandbox.leads() {
            t.push_str(l["COMMENTS"].as_str().unwrap_or_default());
            let id = l["ID"].as_str().and_then(|s| s.parse().ok()).unwrap_or(0);
            for c in self.sandbox.timeline_comments(id) {
                t.push('\n');
                t.push_str(&c);
            }
            t.push('\n');
        }
        t
    }

    /// Dead letters of this tenant.
    async fn dead_letters(&self) -> Vec<poller::Peeked> {
        poller::peek_all(&self.admin_sqs, &stack().dlq_url)
            .await
            .unwrap()
            .into_iter()
            .filter(|p| p.body.contains(self.tenant.as_str()))
            .collect()
    }
}

async fn wait_until<F: FnMut() -> bool>(what: &str, timeout: Duration, mut f: F) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn function_output(name: &str) -> String {
    stack().functions[name].output()
}

/// Every path of every function, each with only its own permissions; then the recording must
/// show that each function used every statement it has and nothing it lacks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_function_uses_exactly_its_template_permissions() {
    let w = world(SandboxConfig::default()).await;
    let st = stack();

    // status before anything is connected (GetItem only).
    let (code, v) = w.call("status", None).await;
    assert_eq!((code, &v["connected"]), (200, &json!(false)), "status: {v}");
    // test before connect: not configured, answered in the web UI's shape.
    let (code, v) = w.call("test", None).await;
    assert_eq!(code, 400, "test: {v}");
    assert_eq!(
        (&v["ok"], &v["message"]),
        (&json!(false), &v["detail"]),
        "{v}"
    );

    // connect (encrypt, store, audit, rate budget, an empty replay).
    let token = w.sandbox.issue_token(true);
    let (code, v) = w.connect(&token).await;
    assert_eq!(code, 200, "connect: {v}");

    // lead-sync: an event lands (claim, decrypt, link, done, audit).
    w.producer
        .send(&w.event("tg:1", 0, "iam first note"))
        .await
        .unwrap();
    wait_until(
        "the first event in the portal",
        Duration::from_secs(60),
        || w.portal_text().contains("iam first note"),
    )
    .await;

    // lead-watch: a manager renames the lead in the portal; one round later the change is on
    // the changes queue, with the name before and after.
    let lead: i64 = w
        .sandbox
        .leads()
        .iter()
        .find_map(|l| l["ID"].as_str().and_then(|id| id.parse().ok()))
        .expect("the first lead");
    w.sandbox
        .manager_edit(lead, json!({"NAME": "Renamed by a manager"}))
        .expect("the manager's edit");
    let changes = watch_round(&w).await;
    assert_eq!(changes.len(), 1, "one change: {changes:?}");
    assert_eq!(
        changes[0]["changes"]["name"],
        json!({"from": "Name tg:1", "to": "Renamed by a manager"}),
        "{changes:?}"
    );

    // lead-sync: an invalid event goes to the dead-letter queue.
    let mut bad = w.event("tg:2", 1, "invalid").to_value();
    bad["lead"]["score"] = json!(500);
    let bad_id = bad["event_id"].as_str().unwrap().to_owned();
    w.producer_sqs
        .send_message()
        .queue_url(&st.queue_url)
        .message_body(bad.to_string())
        .message_group_id(format!("{}:tg:2", w.tenant))
        .message_deduplication_id(&bad_id)
        .send()
        .await
        .unwrap();

    // lead-sync: a rate-limited event is retried (visibility), then re-queued on the receive
    // before maxReceiveCount (SendMessage to the lead queue), then lands.
    w.sandbox.set_config(|c| c.bucket_depth = 0);
    let e = w.event("tg:3", 2, "iam requeued note");
    w.producer.send(&e).await.unwrap();
    let requeued = Instant::now();
    while !logged(&e, "event sent to the back of its group") {
        assert!(
            requeued.elapsed() < Duration::from_secs(90),
            "no re-queue seen; lead-sync said:\n{}",
            tail(&function_output("lead-sync"))
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    w.sandbox.set_config(|c| c.bucket_depth = 50);
    wait_until(
        "the re-queued event in the portal",
        Duration::from_secs(90),
        || w.portal_text().contains("iam requeued note"),
    )
    .await;
    let mut dead = Vec::new();
    for _ in 0..40 {
        dead = w.dead_letters().await;
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        dead.len(),
        1,
        "only the invalid event is a dead letter: {dead:?}"
    );
    assert!(dead[0].body.contains(&bad_id));

    // lead-sync: a revoked token puts the integration in error and parks the event.
    w.sandbox.revoke_token(&token);
    let e = w.event("tg:1", 3, "iam parked note one");
    w.producer.send(&e).await.unwrap();
    wait_until("the event parked", Duration::from_secs(90), || {
        logged(&e, "event parked")
    })
    .await;
    let (_, s) = w.call("status", None).await;
    assert_eq!(
        (&s["sync_status"], &s["connected"]),
        (&json!("error"), &json!(false)),
        "{s}"
    );
    // connect with parked events: a new token, and the parked event is replayed and lands.
    let token2 = w.sandbox.issue_token(true);
    let (code, v) = w.connect(&token2).await;
    assert_eq!(code, 200, "reconnect: {v}");
    wait_until(
        "the replayed event (connect)",
        Duration::from_secs(60),
        || w.portal_text().contains("iam parked note one"),
    )
    .await;

    // test with parked events: the token is refused, then valid again; a passing test
    // reactivates the integration and replays.
    w.sandbox.revoke_token(&token2);
    let (code, v) = w.call("test", None).await;
    assert_eq!(
        (code, &v["ok"]),
        (200, &json!(false)),
        "test with a revoked token: {v}"
    );
    let e = w.event("tg:1", 4, "iam parked note two");
    w.producer.send(&e).await.unwrap();
    wait_until("the event parked", Duration::from_secs(60), || {
        logged(&e, "event parked")
    })
    .await;
    w.sandbox.register_token(&token2, true);
    let (code, v) = w.call("test", None).await;
    assert_eq!((code, &v["ok"]), (200, &json!(true)), "test: {v}");
    wait_until("the replayed event (test)", Duration::from_secs(60), || {
        w.portal_text().contains("iam parked note two")
    })
    .await;

    // disconnect, then status again.
    let (code, v) = w.call("disconnect", None).await;
    assert_eq!(code, 200, "disconnect: {v}");
    let (code, v) = w.call("status", None).await;
    assert_eq!((code, &v["connected"]), (200, &json!(false)), "{v}");

    // Nobody was refused anything, and nothing secret or raw reached any output.
    for name in FUNCTIONS {
        let out = function_output(name);
        let denied: Vec<&str> = out
            .lines()
            .filter(|l| l.contains("AccessDenied") || l.contains("not authorized"))
            .collect();
        assert!(
            denied.is_empty(),
            "{name} was refused calls by IAM:\n{}",
            denied.join("\n")
        );
        assert!(!out.contains(&st.secret), "{name} printed the HS256 secret");
        assert!(!out.contains(&w.jwt), "{name} printed a bearer JWT");
        assert!(
            !out.contains(&token) && !out.contains(&token2),
            "{name} printed an MCP token"
        );
        assert!(
            !out.contains("+99893"),
            "{name} printed a raw event (a customer's phone) at RUST_LOG=trace"
        );
    }
    assert!(
        function_output("lead-sync").contains("TRACE")
            || function_output("lead-sync").contains("DEBUG"),
        "the functions really ran at a verbose level"
    );

    // The recording: every call allowed by the caller's template statements (resources and
    // KMS conditions included), and every statement used.
    let calls = iam::read_recording(&st.moto.recording, &st.arns).unwrap();
    let mut refused = Vec::new();
    let mut unused = Vec::new();
    for (who, (keys, statements)) in &st.users {
        let mine: Vec<&iam::Call> = calls
            .iter()
            .filter(|c| c.access_key_id == keys.access_key_id)
            .collect();
        for c in &mine {
            if !statements.iter().any(|s| iam::allows(s, c)) {
                refused.push(format!(
                    "{who}: {} on {} {:?}",
                    c.action, c.resource, c.encryption_context
                ));
            }
        }
        for s in statements {
            let sid = s["Sid"].as_str().unwrap_or("(no Sid)");
            if USED_BY_THE_SERVICE.contains(&sid) {
                continue;
            }
            for action in iam::as_list(&s["Action"]) {
                for resource in iam::as_list(&s["Resource"]) {
                    let narrowed = json!({"Effect": "Allow", "Action": action, "Resource": resource,
                                          "Condition": s.get("Condition").cloned().unwrap_or(Value::Null)});
                    let narrowed = match narrowed["Condition"] {
                        Value::Null => {
                            json!({"Effect": "Allow", "Action": action, "Resource": resource})
                        }
                        _ => narrowed,
                    };
                    if !mine.iter().any(|c| iam::allows(&narrowed, c)) {
                        unused.push(format!("{who}: statement {sid}: {action} on {resource}"));
                    }
                }
            }
        }
    }
    refused.sort();
    unused.sort();
    assert!(
        refused.is_empty() && unused.is_empty(),
        "calls the template does not allow (AWS would refuse them):\n{}\n\n\
         permissions no path used (least privilege: remove them, or add the path):\n{}",
        refused.join("\n"),
        unused.join("\n")
    );
    assert!(
        unused.is_empty(),
        "permissions no path used (least privilege: remove them, or add the path):\n{}",
        unused.join("\n")
    );
    let principals: BTreeSet<&String> = st.users.keys().collect();
    assert_eq!(
        principals.len(),
        FUNCTIONS.len() + 1,
        "six functions and the producer"
    );
}

/// More than 50 events for one portal (whose leaky bucket is smaller than our own budget, so
/// most calls of the burst are refused with QUERY_LIMIT_EXCEEDED) through the real lead-sync
/// binary with lead-sync's own permissions: events still waiting on the rate limit on the
/// receive before maxReceiveCount are re-queued, none becomes a dead letter, each lands once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_for_one_portal_lands_once_with_no_dead_letters() {
    let w = world(SandboxConfig::default()).await;
    let (code, v) = w.connect(&w.sandbox.issue_token(true)).await;
    assert_eq!(code, 200, "connect: {v}");
    w.sandbox.set_config(|c| c.bucket_depth = 8);
    let customers = 12;
    let per_customer = 5;
    let mut notes = Vec::new();
    for k in 0..per_customer {
        for c in 1..=customers {
            let note = format!("burst c{c} #{k}");
            w.producer
                .send(&w.event(&format!("tg:b{c}"), k, &note))
                .await
                .unwrap();
            notes.push(note);
        }
    }
    assert!(notes.len() > 50);
    let start = Instant::now();
    loop {
        let text = w.portal_text();
        if notes.iter().all(|n| text.contains(n.as_str())) {
            break;
        }
        let dead = w.dead_letters().await;
        assert!(
            dead.is_empty(),
            "{} of {} events became dead letters (lead-sync could not re-queue them?); \
             lead-sync was refused:\n{}",
            dead.len(),
            notes.len(),
            function_output("lead-sync")
                .lines()
                .filter(|l| l.contains("AccessDenied"))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
        assert!(
            start.elapsed() < Duration::from_secs(420),
            "timed out waiting for every burst event in the portal"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let text = w.portal_text();
    for n in &notes {
        assert_eq!(
            text.matches(n.as_str()).count(),
            1,
            "{n:?} lands exactly once"
        );
    }
    let rate_limited = w
        .sandbox
        .calls()
        .by_outcome
        .get("rate_limited")
        .copied()
        .unwrap_or(0);
    assert!(
        rate_limited > 0,
        "the burst hit the portal's limit: {:?}",
        w.sandbox.calls()
    );
    let leads: Vec<Value> = w
        .sandbox
        .leads()
        .into_iter()
        .filter(|l| {
            l["ORIGIN_ID"]
                .as_str()
                .is_some_and(|o| o.starts_with(w.tenant.as_str()))
        })
        .collect();
    assert_eq!(leads.len(), customers, "one lead per customer");
    let dead = w.dead_letters().await;
    assert!(dead.is_empty(), "no dead letters: {dead:?}");
    eprintln!(
        "burst: {} events, {} rate-limited calls, re-queues seen in lead-sync's log: {}",
        notes.len(),
        rate_limited,
        function_output("lead-sync")
            .matches("event sent to the back of its group")
            .count()
    );
}

/// Whether lead-sync logged `what` for this event (its spans carry the event id).
fn logged(e: &LeadEvent, what: &str) -> bool {
    function_output("lead-sync")
        .lines()
        .any(|l| l.contains(what) && l.contains(e.event_id.as_str()))
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Start-up guards, through the real binary: the local-development loopback switch is refused
/// where AWS is not a local stack (in Lambda, 127.0.0.1:9001 is the Runtime API), and an HS256
/// secret under 32 bytes is refused, both before the first invocation.
#[tokio::test]
async fn unsafe_settings_are_refused_at_start() {
    let root = teleagent_tests::harness::workspace_root();
    let base = [
        ("TABLE_NAME", "t"),
        ("AWS_ACCESS_KEY_ID", "x"),
        ("AWS_SECRET_ACCESS_KEY", "x"),
    ];
    type Row<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let rows: [Row<'_>; 3] = [
        (
            &[("MCP_ALLOW_LOOPBACK", "true")],
            "MCP_ALLOW_LOOPBACK",
            "loopback switch in real AWS",
        ),
        (
            &[
                ("MCP_ALLOW_LOOPBACK", "true"),
                (
                    "AWS_ENDPOINT_URL",
                    "https://dynamodb.us-east-1.amazonaws.com",
                ),
            ],
            "MCP_ALLOW_LOOPBACK",
            "loopback switch with a non-loopback endpoint",
        ),
        (
            &[("JWT_HS256_SECRET", "short-secret-of-25-bytes!")],
            "JWT_HS256_SECRET",
            "short HS256 secret",
        ),
    ];
    for (i, (extra, names, why)) in rows.into_iter().enumerate() {
        let env: HashMap<String, String> = base
            .iter()
            .chain(extra.iter())
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let log = root.join(format!(
            ".local/startup-guard-{}-{i}.log",
            std::process::id()
        ));
        let err = match FunctionProcess::start("bitrix-status", &env, log).await {
            Ok(_) => panic!("{why}: the function started"),
            Err(e) => e,
        };
        assert!(err.contains(names), "{why}: {err}");
        assert!(
            !err.contains("short-secret-of-25-bytes!"),
            "{why}: the secret leaked: {err}"
        );
    }
}
