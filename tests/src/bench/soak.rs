//! `soak` (`make soak`): a long run of the real lead-sync binary under faults, checking that every
//! event's effect lands exactly once. Not a test (the short version is `tests/tests/it/soak.rs`,
//! part of `make test`); it prints a table and writes `target/soak.json`, and exits non-zero if a
//! check fails.
//!
//! The run: `--tenants` tenants, each with its own sandbox portal (own token, leads, rate bucket),
//! connected through the real `bitrix-connect` binary (live check included) on a local Lambda
//! Runtime API; `--customers` customers spread over them, `--events` events in each customer's
//! order (FIFO group `<tenant>:<customer>`) published over `--publish-secs`, with a few delivered
//! twice and `--invalid` invalid ones (bad JSON, a schema break) in real customers' groups. The
//! poller plays the SQS event source mapping into `--concurrency` `lead-sync` processes, whose
//! `AWS_ENDPOINT_URL` is an [`AwsFaultProxy`] that faults `--aws-fault` of their DynamoDB, KMS and
//! SQS requests (throttles, 500s, resets and delays the SDK retries, plus access denied / key
//! disabled it does not); the poller's own SQS client and the connect function talk to moto
//! directly. Each portal answers `--bitrix-fault` of its MCP requests with a 500 or a dropped
//! connection. One portal is fully down for `--outage-secs`, then back; one tenant's token is
//! revoked (its integration goes to `error`, its events park) and, at least `--revoke-secs` later
//! and once status shows the error (at most 30 s more), the tenant reconnects with a new token
//! through the connect function (which asks for the replay).
//!
//! At the end (queue drained and nothing in flight, or `--timeout-secs`): per tenant and customer,
//! exactly one lead; the last event's score and status on it; every event's note exactly once in
//! the lead's comments and timeline; one phone per lead; no parked event left; the lead queue
//! empty; the dead-letter queue holding exactly the invalid events sent; every integration active.
//!
//! Usage: soak [--events 1000] [--tenants 5] [--customers 50] [--aws-fault 0.1]
//!   [--bitrix-fault 0.1] [--invalid 10] [--twice-every 50] [--concurrency 2]
//!   [--bin-dir target/release | --bin target/release/lead-sync] [--max-receive 3]
//!   [--publish-secs 120] [--outage-secs 25] [--revoke-secs 20] [--portal-rate 2]
//!   [--timeout-secs 1800] [--seed 1] [--log-level info] [--out target/soak.json]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::{Value, json};
use shared::events::{LeadEvent, LeadEventProducer, LeadStatus};
use shared::store::{Store, SyncStatus};
use shared::tenant::TenantId;
use teleagent_tests::aws_faults::{AfterDelay, AwsFaultProxy, FaultKind, FaultPlan, FaultRule};
use teleagent_tests::harness;
use teleagent_tests::local::function::{self, FunctionEnv, lambda_env, spawn_function};
use teleagent_tests::local::poller::{self, Poller, PollerOptions};
use teleagent_tests::local::runtime_api::{InvocationResult, RuntimeApi};
use teleagent_tests::sandbox::{Faults, Sandbox, SandboxConfig, status_id};

#[derive(Clone, Debug)]
struct Args {
    events: usize,
    tenants: usize,
    customers: usize,
    aws_fault: f64,
    bitrix_fault: f64,
    invalid: usize,
    twice_every: usize,
    concurrency: usize,
    bin_dir: PathBuf,
    max_receive: u32,
    publish_secs: f64,
    outage_secs: f64,
    revoke_secs: f64,
    portal_rate: f64,
    timeout_secs: u64,
    seed: u64,
    log_level: String,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let root = harness::workspace_root();
    let mut a = Args {
        events: 1000,
        tenants: 5,
        customers: 50,
        aws_fault: 0.1,
        bitrix_fault: 0.1,
        invalid: 10,
        twice_every: 50,
        concurrency: 2,
        bin_dir: root.join("target/release"),
        max_receive: 3,
        publish_secs: 120.0,
        outage_secs: 25.0,
        revoke_secs: 20.0,
        portal_rate: 2.0,
        timeout_secs: 1800,
        seed: 1,
        log_level: "info".into(),
        out: root.join("target/soak.json"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|_| format!("bad number {v:?}"));
        let float = |v: String| v.parse::<f64>().map_err(|_| format!("bad number {v:?}"));
        match flag.as_str() {
            "--events" => a.events = num(value()?)?,
            "--tenants" => a.tenants = num(value()?)?.max(1),
            "--customers" => a.customers = num(value()?)?.max(1),
            "--aws-fault" => a.aws_fault = float(value()?)?.clamp(0.0, 1.0),
            "--bitrix-fault" => a.bitrix_fault = float(value()?)?.clamp(0.0, 1.0),
            "--invalid" => a.invalid = num(value()?)?,
            "--twice-every" => a.twice_every = num(value()?)?,
            "--concurrency" => a.concurrency = num(value()?)?.max(1),
            "--bin-dir" => a.bin_dir = PathBuf::from(value()?),
            "--bin" => {
                let p = PathBuf::from(value()?);
                a.bin_dir = p.parent().map(Path::to_path_buf).unwrap_or_default();
            }
            "--max-receive" => {
                a.max_receive = u32::try_from(num(value()?)?.max(2)).unwrap_or(3);
            }
            "--publish-secs" => a.publish_secs = float(value()?)?.max(0.0),
            "--outage-secs" => a.outage_secs = float(value()?)?.max(0.0),
            "--revoke-secs" => a.revoke_secs = float(value()?)?.max(0.0),
            "--portal-rate" => a.portal_rate = float(value()?)?.max(0.1),
            "--timeout-secs" => a.timeout_secs = num(value()?)? as u64,
            "--seed" => a.seed = num(value()?)? as u64,
            "--log-level" => a.log_level = value()?,
            "--out" => a.out = PathBuf::from(value()?),
            other => {
                return Err(format!(
                    "unknown argument {other:?} (see the source header)"
                ));
            }
        }
    }
    if a.customers < a.tenants {
        a.customers = a.tenants;
    }
    Ok(a)
}

// ---------------------------------------------------------------------------------------------
// The stream.

/// One valid event as published, with what the portal must show for it.
struct Planned {
    tenant: usize,
    customer: String,
    k: usize,
    event: LeadEvent,
    /// Unique text (`soak note #000123.`): must appear exactly once on the customer's lead.
    note: String,
    /// Published a second time under another deduplication id.
    twice: bool,
}

struct Invalid {
    round: usize,
    group: String,
    body: String,
    kind: &'static str,
}

/// SplitMix64 for the scores (same sequence for a given `--seed` on every machine).
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Events per customer: `events` split as evenly as possible.
fn build_stream(args: &Args, tenants: &[TenantId]) -> (Vec<Planned>, Vec<Invalid>, usize) {
    let n_t = tenants.len();
    let per = args.events / args.customers;
    let extra = args.events % args.customers;
    let rounds = per + usize::from(extra > 0);
    let base = time::OffsetDateTime::now_utc() - time::Duration::hours(2);
    let mut out = Vec::new();
    let mut idx = 0usize;
    for k in 0..rounds {
        for g in 0..args.customers {
            let n = per + usize::from(g < extra);
            if k >= n {
                continue;
            }
            let ti = g % n_t;
            let customer = format!("tg:{}", 5_000_000 + g);
            let score = (mix(args.seed ^ ((g as u64) << 20) ^ k as u64) % 96 + 5) as u8;
            let mut e = LeadEvent::new(tenants[ti].clone(), customer.clone(), score);
            e.occurred_at = base
                + time::Duration::seconds((k * 10) as i64)
                + time::Duration::milliseconds(g as i64);
            e.customer.name = Some(format!("Soak Customer {g:03}"));
            let digits = format!("99890{:07}", 1_000_000 + g * 7919);
            // Telegram shares contacts without '+', a web form with it: the same number.
            e.customer.phone = Some(if k % 2 == 0 {
                format!("+{digits}")
            } else {
                digits
            });
            e.customer.username = Some(format!("soak{g}"));
            e.lead.intent = Some("buy".into());
            // Statuses only move forward in the connector (a manager's later status is kept),
            // so the stream moves forward too: the last event's status is the lead's.
            e.lead.status = Some(if 3 * k < n {
                LeadStatus::New
            } else if 3 * k < 2 * n {
                LeadStatus::Contacted
            } else {
                LeadStatus::Qualified
            });
            e.lead.fields_collected.product = Some("solar panels".into());
            let note = format!("soak note #{idx:06}.");
            e.lead.notes = Some(format!("{note} Asked about delivery, round {k}"));
            let twice = args.twice_every > 0 && idx % args.twice_every == args.twice_every - 1;
            out.push(Planned {
                tenant: ti,
                customer,
                k,
                event: e,
                note,
                twice,
            });
            idx += 1;
        }
    }
    let mut invalid = Vec::new();
    for i in 0..args.invalid {
        let g = (i * 7 + 3) % args.customers;
        let ti = g % n_t;
        let group = format!("{}:tg:{}", tenants[ti], 5_000_000 + g);
        let (body, kind) = if i % 2 == 0 {
            (
                format!(
                    "{{\"version\":1,\"tenant_id\":\"{}\",\"event_id\":\"{}\",\"customer\":",
                    tenants[ti],
                    uuid::Uuid::new_v4()
                ),
                "bad_json",
            )
        } else {
            let mut e = LeadEvent::new(tenants[ti].clone(), format!("tg:{}", 5_000_000 + g), 50);
            e.lead.notes = Some(format!("soak invalid #{i:04}."));
            let mut v = e.to_value();
            v["lead"]["score"] = json!(150);
            (v.to_string(), "schema")
        };
        invalid.push(Invalid {
            round: if rounds == 0 {
                0
            } else {
                (i * rounds / args.invalid.max(1) + 1).min(rounds - 1)
            },
            group,
            body,
            kind,
        });
    }
    (out, invalid, rounds)
}

// ---------------------------------------------------------------------------------------------
// Function processes on a local Lambda Runtime API (`teleagent_tests::local::function`).

/// lead-sync's and connect's environment in this run.
fn soak_env<'a>(
    api: &RuntimeApi,
    aws_endpoint: &'a str,
    r: &'a RunNames,
    args: &'a Args,
) -> FunctionEnv<'a> {
    FunctionEnv {
        runtime_api: api.address(),
        aws_endpoint,
        table: &r.table,
        key_id: &r.key_id,
        queue_url: &r.queue_url,
        dlq_url: &r.dlq_url,
        watch_queue_url: None,
        changes_queue_url: None,
        max_receive: args.max_receive,
        log_level: &args.log_level,
        log_stream: "soak",
        // Parked events on a working integration come back within the run, not in 5 minutes.
        extra: vec![("REPLAY_AFTER_PARK_SECS".into(), "5".into())],
    }
}

/// The run's table, key and queues.
struct RunNames {
    table: String,
    key_id: String,
    queue_url: String,
    dlq_url: String,
}

fn apigw_event(method: &str, route: &str, tenant: &str, body: Option<Value>) -> Value {
    function::apigw_event(method, route, tenant, body, "soak")
}

/// Connects a tenant through the connect function, as a person would: a failed live check (the
/// portal faults some requests) is clicked again. Returns the attempts it took.
async fn connect(
    api: &RuntimeApi,
    tenant: &TenantId,
    token: &str,
    mcp_url: &str,
    attempts: usize,
) -> Result<usize, String> {
    let mut last = String::new();
    for n in 1..=attempts {
        let ev = apigw_event(
            "POST",
            "connect",
            tenant.as_str(),
            Some(json!({"mcp_token": token, "mcp_url": mcp_url})),
        );
        match api.invoke(ev, Duration::from_secs(90)).await {
            Ok(InvocationResult::Response(v)) if v["statusCode"] == 200 => return Ok(n),
            Ok(r) => last = format!("{r:?}"),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    Err(format!(
        "connect of {tenant} failed {attempts} times; last answer {last}"
    ))
}

/// Sets the tenant's stored portal budget (`rate_per_sec`/`rate_burst` on `BITRIX#MCP`, what an
/// operator raises for a bigger plan) to match the sandbox's bucket.
async fn set_budget(ddb: &aws_sdk_dynamodb::Client, table: &str, tenant: &TenantId, rate: f64) {
    let r = ddb
        .update_item()
        .table_name(table)
        .key("pk", AttributeValue::S(format!("TENANT#{tenant}")))
        .key("sk", AttributeValue::S("BITRIX#MCP".into()))
        .update_expression("SET rate_per_sec = :r, rate_burst = :b")
        .condition_expression("attribute_exists(pk)")
        .expression_attribute_values(":r", AttributeValue::N(rate.to_string()))
        .expression_attribute_values(":b", AttributeValue::N("50".into()))
        .send()
        .await;
    if let Err(e) = r {
        eprintln!("soak: could not set the portal budget of {tenant}: {e:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The AWS fault plan for lead-sync.

/// `share` of every service's requests faulted: mostly what the SDK retries (throttles, 500s,
/// resets, a few delays), and a slice it does not (access denied, a disabled key), so the
/// connector's own failure plan runs too.
fn aws_plan(share: f64, seed: u64) -> FaultPlan {
    let s = |f: f64| share * f;
    let mut plan = FaultPlan::none().seed(seed);
    if share <= 0.0 {
        return plan;
    }
    let rules = [
        FaultRule::new("dynamodb", "*", FaultKind::Throttle, s(0.3)),
        FaultRule::new("dynamodb", "*", FaultKind::ProvisionedThroughput, s(0.15)),
        FaultRule::new("dynamodb", "*", FaultKind::Http500, s(0.2)),
        FaultRule::new("dynamodb", "*", FaultKind::Reset, s(0.15)),
        FaultRule::delay("dynamodb", "*", s(0.1), 700, AfterDelay::Forward),
        FaultRule::new("dynamodb", "*", FaultKind::AccessDenied, s(0.1)),
        FaultRule::new("kms", "*", FaultKind::Throttle, s(0.3)),
        FaultRule::new("kms", "*", FaultKind::Http500, s(0.3)),
        FaultRule::new("kms", "*", FaultKind::Reset, s(0.2)),
        FaultRule::new("kms", "*", FaultKind::KmsDisabled, s(0.2)),
        FaultRule::new("sqs", "*", FaultKind::Throttle, s(0.3)),
        FaultRule::new("sqs", "*", FaultKind::Http500, s(0.3)),
        FaultRule::new("sqs", "*", FaultKind::Reset, s(0.2)),
        FaultRule::delay("sqs", "*", s(0.1), 700, AfterDelay::Forward),
        FaultRule::new("sqs", "*", FaultKind::AccessDenied, s(0.1)),
    ];
    for r in rules {
        plan = plan.rule(r);
    }
    plan
}

fn bitrix_faults(share: f64) -> Faults {
    Faults {
        error_5xx_ratio: share / 2.0,
        drop_ratio: share / 2.0,
        ..Faults::default()
    }
}

// ---------------------------------------------------------------------------------------------
// The run.

struct Tenant {
    id: TenantId,
    sandbox: Sandbox,
    role: &'static str,
}

/// What happened while the stream ran (the monitor and the scenario fill it in).
#[derive(Default)]
struct Observed {
    revoked_error_seen: AtomicBool,
    peak_parked: AtomicU64,
    reconnect_attempts: AtomicU64,
    connect_attempts: AtomicU64,
    revoked_parked_peak: AtomicU64,
    timeline: Mutex<Vec<(f64, String)>>,
}

impl Observed {
    fn mark(&self, t0: Instant, what: String) {
        eprintln!("soak: {:>6.1} s  {what}", t0.elapsed().as_secs_f64());
        self.timeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((t0.elapsed().as_secs_f64(), what));
    }
}

async fn count_parked(store: &Store, t: &TenantId) -> Option<u64> {
    store.list_parked(t).await.ok().map(|v| v.len() as u64)
}

fn num_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn lead_text(sandbox: &Sandbox, lead: &Value) -> String {
    let id: i64 = lead["ID"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| lead["ID"].as_i64())
        .unwrap_or(0);
    let mut t = lead["COMMENTS"].as_str().unwrap_or_default().to_owned();
    for c in sandbox.timeline_comments(id) {
        t.push('\n');
        t.push_str(&c);
    }
    t
}

#[derive(Default, Clone, serde::Serialize)]
struct TenantFigures {
    tenant: String,
    role: String,
    customers: usize,
    events: usize,
    delivered_twice: usize,
    invalid_sent: usize,
    leads: usize,
    lost_leads: usize,
    duplicate_leads: usize,
    duplicate_phones: usize,
    notes_missing: usize,
    notes_duplicated: usize,
    wrong_final_state: usize,
    parked_left: u64,
    sync_status: String,
    tools_call: u64,
    mcp_http: u64,
    bitrix_faults_injected: u64,
    rate_limited: u64,
    problems: Vec<String>,
}

async fn run(args: &Args) -> Result<(Value, bool), String> {
    let t_start = Instant::now();
    let root = harness::workspace_root();
    let lead_sync_bin = args.bin_dir.join("lead-sync");
    let connect_bin = args.bin_dir.join("bitrix-connect");
    for b in [&lead_sync_bin, &connect_bin] {
        if !b.exists() {
            return Err(format!("{} not found (build it first)", b.display()));
        }
    }
    let moto = harness::moto_endpoint();
    let sdk = harness::sdk_config().await;
    let clients = shared::aws::AwsClients::from_sdk_config(&sdk);
    let sqs = clients.sqs.clone();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let run_id = &suffix[..8];
    let log_dir = root.join(format!("target/soak-logs/{run_id}"));
    std::fs::create_dir_all(&log_dir).map_err(|e| e.to_string())?;
    let table = format!("soak-{suffix}");
    harness::create_table(&clients.dynamodb, &table).await;
    let key_id = clients
        .kms
        .create_key()
        .description("soak key")
        .send()
        .await
        .map_err(|e| format!("create key: {e:?}"))?
        .key_metadata
        .ok_or("no key metadata")?
        .key_id;
    let (queue_url, dlq_url) =
        poller::create_queue_pair(&sqs, &format!("soak-{run_id}"), args.max_receive, 30).await?;
    let store = Store::new(clients.dynamodb.clone(), table.clone());

    // Tenants and their portals.
    let outage_t = 0usize;
    let revoke_t = args.tenants - 1;
    let mut tenants = Vec::new();
    for i in 0..args.tenants {
        let id = TenantId::parse(&format!("soak-{run_id}-t{i}")).map_err(|e| e.to_string())?;
        let sandbox = Sandbox::start(SandboxConfig {
            bucket_rate_per_sec: args.portal_rate,
            has_teleagent_user_fields: true,
            has_qualified_status: true,
            ..SandboxConfig::default()
        })
        .await;
        let role = match (i == outage_t, i == revoke_t) {
            (true, true) => "outage+revoke",
            (true, false) => "outage",
            (false, true) => "revoke",
            _ => "-",
        };
        tenants.push(Tenant { id, sandbox, role });
    }
    let ids: Vec<TenantId> = tenants.iter().map(|t| t.id.clone()).collect();
    let (planned, invalid, rounds) = build_stream(args, &ids);

    // The connect function (AWS: moto directly), kept running for the reconnect.
    let connect_api = RuntimeApi::start("bitrix-connect")
        .await
        .map_err(|e| e.to_string())?;
    let names = RunNames {
        table: table.clone(),
        key_id: key_id.clone(),
        queue_url: queue_url.clone(),
        dlq_url: dlq_url.clone(),
    };
    let connect_env = lambda_env(
        "bitrix-connect",
        &soak_env(&connect_api, moto, &names, args),
    );
    let mut connect_child = spawn_function(
        &connect_bin,
        &connect_env,
        Some(&log_dir.join("bitrix-connect.log")),
    )?;
    let observed = Arc::new(Observed::default());
    let mut tokens = Vec::new();
    for t in &tenants {
        let token = t.sandbox.issue_token(true);
        let n = connect(&connect_api, &t.id, &token, &t.sandbox.mcp_url(), 5).await?;
        observed
            .connect_attempts
            .fetch_add(n as u64, Ordering::Relaxed);
        if (args.portal_rate - 2.0).abs() > f64::EPSILON {
            set_budget(&clients.dynamodb, &table, &t.id, args.portal_rate).await;
        }
        tokens.push(token);
    }
    eprintln!(
        "soak: {} tenants connected through bitrix-connect (live check); logs in {}",
        tenants.len(),
        log_dir.display()
    );
    // The live checks used some of each bucket; the stream starts on quiet portals.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for t in &tenants {
        t.sandbox.reset_calls();
        t.sandbox.set_faults(bitrix_faults(args.bitrix_fault));
    }

    // lead-sync behind the fault proxy; the poller talks to moto directly.
    let proxy = AwsFaultProxy::start(moto)
        .await
        .map_err(|e| format!("fault proxy: {e}"))?;
    proxy.set_plan(aws_plan(args.aws_fault, args.seed));
    let proxy_url = proxy.endpoint();
    let api = Arc::new(
        RuntimeApi::start("lead-sync")
            .await
            .map_err(|e| e.to_string())?,
    );
    let env = lambda_env("lead-sync", &soak_env(&api, &proxy_url, &names, args));
    let mut children = Vec::new();
    for i in 0..args.concurrency {
        children.push(spawn_function(
            &lead_sync_bin,
            &env,
            Some(&log_dir.join(format!("lead-sync-{i}.log"))),
        )?);
    }
    let poller = Poller::new(
        sqs.clone(),
        queue_url.clone(),
        api.clone(),
        PollerOptions {
            concurrency: args.concurrency,
            ..PollerOptions::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let stats = poller.stats();

    let t0 = Instant::now();
    let publish_done = Arc::new(AtomicBool::new(false));
    let scenario_done = Arc::new(AtomicBool::new(false));
    let producer = LeadEventProducer::new(sqs.clone(), queue_url.clone());
    let round_gap = if rounds > 1 {
        Duration::from_secs_f64(args.publish_secs / rounds as f64)
    } else {
        Duration::ZERO
    };

    // Publisher: round k = every customer's k-th event, spread over --publish-secs.
    let publisher = async {
        let mut sent = 0usize;
        let mut next = Instant::now();
        for k in 0..rounds {
            for p in planned.iter().filter(|p| p.k == k) {
                send_retrying(&producer, &p.event).await?;
                sent += 1;
                if p.twice {
                    sqs.send_message()
                        .queue_url(&queue_url)
                        .message_body(p.event.to_json())
                        .message_group_id(p.event.group_id())
                        .message_deduplication_id(format!("{}-again", p.event.event_id))
                        .send()
                        .await
                        .map_err(|e| format!("second delivery: {e:?}"))?;
                }
            }
            for inv in invalid.iter().filter(|i| i.round == k) {
                sqs.send_message()
                    .queue_url(&queue_url)
                    .message_body(&inv.body)
                    .message_group_id(&inv.group)
                    .message_deduplication_id(uuid::Uuid::new_v4().to_string())
                    .send()
                    .await
                    .map_err(|e| format!("invalid event: {e:?}"))?;
            }
            next += round_gap;
            tokio::time::sleep_until(next.into()).await;
        }
        publish_done.store(true, Ordering::Relaxed);
        observed.mark(t0, format!("published {sent} events"));
        Ok::<(), String>(())
    };

    // The scenario: one portal down for a stretch; one token revoked, then a reconnect.
    let scenario = async {
        let at = |f: f64| t0 + Duration::from_secs_f64(args.publish_secs * f);
        let outage = async {
            let ot = &tenants[outage_t];
            tokio::time::sleep_until(at(0.25).into()).await;
            ot.sandbox.set_faults(Faults {
                error_5xx_ratio: 1.0,
                ..Faults::default()
            });
            observed.mark(t0, format!("portal of {} DOWN (every request 500)", ot.id));
            tokio::time::sleep(Duration::from_secs_f64(args.outage_secs)).await;
            ot.sandbox.set_faults(bitrix_faults(args.bitrix_fault));
            observed.mark(t0, format!("portal of {} back", ot.id));
        };
        let revoke = async {
            let rt = &tenants[revoke_t];
            tokio::time::sleep_until(at(0.45).into()).await;
            rt.sandbox.revoke_token(&tokens[revoke_t]);
            observed.mark(t0, format!("token of {} revoked", rt.id));
            tokio::time::sleep(Duration::from_secs_f64(args.revoke_secs)).await;
            // A tenant reconnects once status shows the error, not before (held-back events may
            // reach the portal only later): at most 30 s more.
            let seen = async {
                while !observed.revoked_error_seen.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(30), seen).await;
            let token = rt.sandbox.issue_token(true);
            let n = connect(&connect_api, &rt.id, &token, &rt.sandbox.mcp_url(), 20).await?;
            observed
                .reconnect_attempts
                .store(n as u64, Ordering::Relaxed);
            observed.mark(
                t0,
                format!(
                    "{} reconnected with a new token (connect attempts: {n})",
                    rt.id
                ),
            );
            Ok::<(), String>(())
        };
        let (_, r) = tokio::join!(outage, revoke);
        scenario_done.store(true, Ordering::Relaxed);
        r
    };

    // Monitor: progress, parked counts, the revoked tenant's status.
    let monitor = async {
        let mut last_print = Instant::now();
        loop {
            let mut parked = 0;
            for t in &tenants {
                parked += count_parked(&store, &t.id).await.unwrap_or(0);
            }
            observed.peak_parked.fetch_max(parked, Ordering::Relaxed);
            let rt = &tenants[revoke_t];
            if let Ok(Some(i)) = store.get_integration(&rt.id).await
                && i.sync_status == Some(SyncStatus::Error)
            {
                if !observed.revoked_error_seen.swap(true, Ordering::Relaxed) {
                    observed.mark(
                        t0,
                        format!("{} integration in `error` ({:?})", rt.id, i.last_error),
                    );
                }
                let p = count_parked(&store, &rt.id).await.unwrap_or(0);
                observed.revoked_parked_peak.fetch_max(p, Ordering::Relaxed);
            }
            if last_print.elapsed() > Duration::from_secs(10) {
                let s = stats.snapshot();
                let depth = poller::queue_depth(&sqs, &queue_url).await.unwrap_or(0);
                let calls: u64 = tenants.iter().map(|t| t.sandbox.calls().tools_call).sum();
                eprintln!(
                    "soak: {:>6.1} s  queue {depth:>4}  deleted {:>5}  failed items {:>4}  parked {parked:>3}  tools/call {calls}  aws faults {}",
                    t0.elapsed().as_secs_f64(),
                    s.deleted,
                    s.items_failed,
                    proxy.stats().injected,
                );
                last_print = Instant::now();
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    };

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run_poller = poller.run(async {
        let _ = stop_rx.await;
    });
    let deadline = Duration::from_secs(args.timeout_secs);
    let drive = async {
        let (p, s) = tokio::join!(publisher, scenario);
        let publish_secs = t0.elapsed().as_secs_f64();
        let result = match (p, s) {
            (Err(e), _) | (_, Err(e)) => Err(e),
            _ => {
                let left = deadline.saturating_sub(t0.elapsed());
                poller::wait_drained(&sqs, &queue_url, Duration::from_secs(5), left, |_| {})
                    .await
                    .map_err(|e| e.to_string())
            }
        };
        let _ = stop_tx.send(());
        (result, publish_secs)
    };
    let ((drained, publish_secs), ()) = tokio::select! {
        r = async { tokio::join!(drive, run_poller) } => r,
        () = monitor => unreachable_monitor(),
    };
    let drained = drained?;
    let stream_secs = t0.elapsed().as_secs_f64() - if drained { 5.0 } else { 0.0 };
    observed.mark(
        t0,
        format!(
            "stream over: drained {drained}, publish {publish_secs:.0} s, sync {stream_secs:.0} s"
        ),
    );
    for mut c in children {
        let _ = c.kill().await;
    }
    let _ = connect_child.kill().await;

    // ----- Verification.
    let mut figures = Vec::new();
    for (ti, t) in tenants.iter().enumerate() {
        let mine: Vec<&Planned> = planned.iter().filter(|p| p.tenant == ti).collect();
        let mut by_customer: BTreeMap<&str, Vec<&Planned>> = BTreeMap::new();
        for p in &mine {
            by_customer.entry(p.customer.as_str()).or_default().push(p);
        }
        let prefix = format!("{}:", t.id);
        let leads = t.sandbox.leads();
        let mut leads_of: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
        for l in &leads {
            if let Some(c) = l["ORIGIN_ID"]
                .as_str()
                .and_then(|o| o.strip_prefix(&prefix))
            {
                leads_of.entry(c.to_owned()).or_default().push(l);
            }
        }
        let portal_text: String = leads
            .iter()
            .map(|l| lead_text(&t.sandbox, l))
            .collect::<Vec<_>>()
            .join("\n");
        let calls = t.sandbox.calls();
        let outcome = |k: &str| calls.by_outcome.get(k).copied().unwrap_or(0);
        let integ = store.get_integration(&t.id).await.ok().flatten();
        let mut parked_left = u64::MAX; // unreadable counts as a failure
        for _ in 0..5 {
            if let Some(n) = count_parked(&store, &t.id).await {
                parked_left = n;
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut f = TenantFigures {
            tenant: t.id.to_string(),
            role: t.role.to_owned(),
            customers: by_customer.len(),
            events: mine.len(),
            delivered_twice: mine.iter().filter(|p| p.twice).count(),
            invalid_sent: invalid
                .iter()
                .filter(|i| i.group.starts_with(&prefix))
                .count(),
            leads: leads_of.values().map(Vec::len).sum(),
            parked_left,
            sync_status: integ
                .as_ref()
                .and_then(|i| i.sync_status)
                .map_or("-".to_owned(), |s| s.as_str().to_owned()),
            tools_call: calls.tools_call,
            mcp_http: calls.total_http,
            bitrix_faults_injected: outcome("fault_5xx") + outcome("dropped"),
            rate_limited: outcome("rate_limited"),
            ..TenantFigures::default()
        };
        for (c, evs) in &by_customer {
            let found = leads_of.get(*c).cloned().unwrap_or_default();
            match found.len() {
                0 => {
                    f.lost_leads += 1;
                    f.problems.push(format!("{c}: no lead"));
                }
                1 => {}
                n => {
                    f.duplicate_leads += n - 1;
                    let ids: Vec<&Value> = found.iter().map(|l| &l["ID"]).collect();
                    f.problems.push(format!("{c}: {n} leads {ids:?}"));
                }
            }
            for l in &found {
                let phones = l["PHONE"].as_array().map_or(0, Vec::len);
                if phones != 1 {
                    f.duplicate_phones += 1;
                    f.problems
                        .push(format!("{c}: lead {} has {phones} phones", l["ID"]));
                }
            }
            for p in evs {
                match portal_text.matches(p.note.as_str()).count() {
                    1 => {}
                    0 => {
                        f.notes_missing += 1;
                        f.problems.push(format!(
                            "{c}: note {:?} (event {}, #{} of the customer) missing",
                            p.note, p.event.event_id, p.k
                        ));
                    }
                    n => {
                        f.notes_duplicated += 1;
                        f.problems.push(format!(
                            "{c}: note {:?} (event {}, #{} of the customer) appears {n} times",
                            p.note, p.event.event_id, p.k
                        ));
                    }
                }
            }
            if let (Some(last), [lead]) = (
                evs.iter().max_by_key(|p| p.event.occurred_at),
                found.as_slice(),
            ) {
                let score = num_of(&lead["UF_CRM_TELEAGENT_SCORE"]);
                let status = lead["STATUS_ID"].as_str().unwrap_or_default();
                let want_status = last.event.lead.status.map(status_id).unwrap_or("");
                if score != Some(f64::from(last.event.lead.score)) || status != want_status {
                    f.wrong_final_state += 1;
                    f.problems.push(format!(
                        "{c}: lead {} shows score {score:?} status {status:?}, the last event {} says {} {want_status:?}",
                        lead["ID"], last.event.event_id, last.event.lead.score
                    ));
                }
            }
        }
        if f.parked_left > 0
            && let Ok(list) = store.list_parked(&t.id).await
        {
            for pe in list {
                f.problems.push(format!(
                    "parked: event {} ({}) reason {:?}",
                    pe.event_id, pe.occurred_at, pe.reason
                ));
            }
        }
        figures.push(f);
    }

    let queue_left = poller::queue_depth(&sqs, &queue_url)
        .await
        .unwrap_or(u64::MAX);
    let dlq_depth = poller::queue_depth(&sqs, &dlq_url)
        .await
        .unwrap_or(u64::MAX);
    let dlq = read_all(&sqs, &dlq_url, dlq_depth).await;
    let valid_in_dlq: Vec<String> = dlq
        .iter()
        .filter_map(|m| LeadEvent::parse(&m.body).ok())
        .map(|e| format!("{} ({}:{})", e.event_id, e.tenant_id, e.customer.id))
        .collect();
    let dlq_without_reason = dlq.iter().filter(|m| m.reason.is_none()).count();
    let invalid_bodies: std::collections::HashSet<&str> =
        invalid.iter().map(|i| i.body.as_str()).collect();
    let invalid_found = dlq
        .iter()
        .filter(|m| invalid_bodies.contains(m.body.as_str()))
        .count();
    let unexpected_in_dlq: Vec<String> = dlq
        .iter()
        .filter(|m| !invalid_bodies.contains(m.body.as_str()))
        .map(|m| {
            format!(
                "{} (reason {:?}; no reason = moved by the redrive policy)",
                m.body.chars().take(160).collect::<String>(),
                m.reason
            )
        })
        .collect();

    let aws = proxy.stats();
    let mut by_service: BTreeMap<String, (u64, u64, BTreeMap<String, u64>)> = BTreeMap::new();
    for (k, s) in &aws.by_operation {
        let service = k.split('/').next().unwrap_or("?").to_owned();
        let e = by_service.entry(service).or_default();
        e.0 += s.requests;
        e.1 += s.injected;
        for (kind, n) in &s.by_fault {
            *e.2.entry(kind.clone()).or_default() += n;
        }
    }
    let total = |f: fn(&TenantFigures) -> u64| figures.iter().map(f).sum::<u64>();
    let events_valid = planned.len();
    let twice = planned.iter().filter(|p| p.twice).count();
    let s = stats.snapshot();

    let checks: Vec<(&str, bool, String)> = vec![
        (
            "queue drained",
            drained && queue_left == 0,
            format!("drained {drained}, {queue_left} left"),
        ),
        (
            "0 lost leads",
            total(|f| f.lost_leads as u64) == 0,
            total(|f| f.lost_leads as u64).to_string(),
        ),
        (
            "0 duplicate leads",
            total(|f| f.duplicate_leads as u64) == 0,
            total(|f| f.duplicate_leads as u64).to_string(),
        ),
        (
            "0 duplicate phones",
            total(|f| f.duplicate_phones as u64) == 0,
            total(|f| f.duplicate_phones as u64).to_string(),
        ),
        (
            "every event's note exactly once (0 lost effects)",
            total(|f| f.notes_missing as u64) == 0,
            format!("{} missing", total(|f| f.notes_missing as u64)),
        ),
        (
            "no event's note twice (0 duplicate effects)",
            total(|f| f.notes_duplicated as u64) == 0,
            format!("{} duplicated", total(|f| f.notes_duplicated as u64)),
        ),
        (
            "last event's score and status on every lead",
            total(|f| f.wrong_final_state as u64) == 0,
            format!("{} wrong", total(|f| f.wrong_final_state as u64)),
        ),
        (
            "0 parked events left",
            total(|f| f.parked_left) == 0,
            total(|f| f.parked_left).to_string(),
        ),
        (
            "DLQ holds exactly the invalid events",
            dlq_depth == args.invalid as u64
                && unexpected_in_dlq.is_empty()
                && invalid_found == args.invalid,
            format!(
                "{dlq_depth} in DLQ, {} invalid sent, {invalid_found} of them found, {} other messages ({} valid events), {dlq_without_reason} without a reason",
                args.invalid,
                unexpected_in_dlq.len(),
                valid_in_dlq.len()
            ),
        ),
        (
            "every integration active at the end",
            figures.iter().all(|f| f.sync_status == "active"),
            figures
                .iter()
                .map(|f| f.sync_status.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "the revoked token put the integration in `error`",
            observed.revoked_error_seen.load(Ordering::Relaxed),
            format!(
                "error seen {}, parked peak {}",
                observed.revoked_error_seen.load(Ordering::Relaxed),
                observed.revoked_parked_peak.load(Ordering::Relaxed)
            ),
        ),
    ];
    let ok = checks.iter().all(|(_, pass, _)| *pass);

    // ----- The table.
    println!(
        "\nsoak: {} events ({} valid + {} second deliveries + {} invalid) over {} customers, {} tenants; {} lead-sync processes ({}), max receive {}; AWS faults {:.0} %, Bitrix24 faults {:.0} %, portal {} req/s",
        events_valid + twice + invalid.len(),
        events_valid,
        twice,
        invalid.len(),
        args.customers,
        args.tenants,
        args.concurrency,
        lead_sync_bin.display(),
        args.max_receive,
        args.aws_fault * 100.0,
        args.bitrix_fault * 100.0,
        args.portal_rate,
    );
    println!(
        "\n{:<22} {:<13} {:>5} {:>6} {:>5} {:>4} {:>8} {:>9} {:>8} {:>8} {:>6} {:>6} {:>7} {:>10} {:>9} {:>8}",
        "tenant",
        "role",
        "cust",
        "events",
        "leads",
        "lost",
        "dup-lead",
        "dup-phone",
        "notes-0",
        "notes-2+",
        "stale",
        "parked",
        "status",
        "tools/call",
        "b24-fault",
        "429/503"
    );
    for f in &figures {
        println!(
            "{:<22} {:<13} {:>5} {:>6} {:>5} {:>4} {:>8} {:>9} {:>8} {:>8} {:>6} {:>6} {:>7} {:>10} {:>9} {:>8}",
            f.tenant,
            f.role,
            f.customers,
            f.events,
            f.leads,
            f.lost_leads,
            f.duplicate_leads,
            f.duplicate_phones,
            f.notes_missing,
            f.notes_duplicated,
            f.wrong_final_state,
            f.parked_left,
            f.sync_status,
            f.tools_call,
            f.bitrix_faults_injected,
            f.rate_limited,
        );
    }
    println!(
        "{:<22} {:<13} {:>5} {:>6} {:>5} {:>4} {:>8} {:>9} {:>8} {:>8} {:>6} {:>6} {:>7} {:>10} {:>9} {:>8}",
        "total",
        "",
        total(|f| f.customers as u64),
        total(|f| f.events as u64),
        total(|f| f.leads as u64),
        total(|f| f.lost_leads as u64),
        total(|f| f.duplicate_leads as u64),
        total(|f| f.duplicate_phones as u64),
        total(|f| f.notes_missing as u64),
        total(|f| f.notes_duplicated as u64),
        total(|f| f.wrong_final_state as u64),
        total(|f| f.parked_left),
        "",
        total(|f| f.tools_call),
        total(|f| f.bitrix_faults_injected),
        total(|f| f.rate_limited),
    );
    println!("\nAWS requests of lead-sync (through the fault proxy):");
    for (service, (req, inj, kinds)) in &by_service {
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!(
            "  {service:<9} {req:>7} requests  {inj:>5} faulted ({:.1} %)  {}",
            if *req > 0 {
                *inj as f64 * 100.0 / *req as f64
            } else {
                0.0
            },
            kinds.join(", ")
        );
    }
    println!(
        "  {:<9} {:>7} requests  {:>5} faulted",
        "all", aws.requests, aws.injected
    );
    println!(
        "\npoller: {} receives, {} invocations ({} failed as a whole), {} messages, {} items failed (retried), {} deleted, {} redriven by it",
        s.receives,
        s.invocations,
        s.invoke_errors,
        s.messages,
        s.items_failed,
        s.deleted,
        s.redriven
    );
    println!(
        "queue: {queue_left} left; DLQ {dlq_depth} (invalid sent {}, other messages {}, valid events {}, without a reason {dlq_without_reason})",
        args.invalid,
        unexpected_in_dlq.len(),
        valid_in_dlq.len()
    );
    println!(
        "parked: {} left, peak {} during the run; revoked tenant: `error` seen {}, peak parked {}, reconnect attempts {}",
        total(|f| f.parked_left),
        observed.peak_parked.load(Ordering::Relaxed),
        observed.revoked_error_seen.load(Ordering::Relaxed),
        observed.revoked_parked_peak.load(Ordering::Relaxed),
        observed.reconnect_attempts.load(Ordering::Relaxed),
    );
    println!(
        "duration: publish {publish_secs:.0} s, sync until drained {stream_secs:.0} s ({:.2} events/s), whole run {:.0} s",
        events_valid as f64 / stream_secs.max(0.001),
        t_start.elapsed().as_secs_f64()
    );
    println!("\nchecks:");
    for (name, pass, detail) in &checks {
        println!(
            "  [{}] {name}: {detail}",
            if *pass { "PASS" } else { "FAIL" }
        );
    }
    let problems: Vec<&String> = figures.iter().flat_map(|f| f.problems.iter()).collect();
    if !problems.is_empty() || !unexpected_in_dlq.is_empty() {
        println!("\nproblems (first 40):");
        for p in problems.iter().take(40) {
            println!("  {p}");
        }
        for v in &unexpected_in_dlq {
            println!("  in the DLQ but not an invalid event sent: {v}");
        }
        println!("  (logs: {})", log_dir.display());
    }
    println!("\nsoak: {}", if ok { "PASS" } else { "FAIL" });

    let timeline = observed
        .timeline
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let report = json!({
        "ok": ok,
        "args": {
            "events": args.events, "tenants": args.tenants, "customers": args.customers,
            "aws_fault": args.aws_fault, "bitrix_fault": args.bitrix_fault,
            "invalid": args.invalid, "twice_every": args.twice_every,
            "concurrency": args.concurrency, "bin": lead_sync_bin.display().to_string(),
            "max_receive": args.max_receive, "publish_secs": args.publish_secs,
            "outage_secs": args.outage_secs, "revoke_secs": args.revoke_secs,
            "portal_rate": args.portal_rate, "seed": args.seed,
        },
        "events_valid": events_valid,
        "delivered_twice": twice,
        "invalid_sent": invalid.len(),
        "invalid_kinds": invalid.iter().map(|i| i.kind).collect::<Vec<_>>(),
        "tenants": figures,
        "totals": {
            "leads": total(|f| f.leads as u64),
            "lost_leads": total(|f| f.lost_leads as u64),
            "duplicate_leads": total(|f| f.duplicate_leads as u64),
            "duplicate_phones": total(|f| f.duplicate_phones as u64),
            "notes_missing": total(|f| f.notes_missing as u64),
            "notes_duplicated": total(|f| f.notes_duplicated as u64),
            "wrong_final_state": total(|f| f.wrong_final_state as u64),
            "parked_left": total(|f| f.parked_left),
            "tools_call": total(|f| f.tools_call),
            "mcp_http": total(|f| f.mcp_http),
            "bitrix_faults_injected": total(|f| f.bitrix_faults_injected),
            "rate_limited": total(|f| f.rate_limited),
        },
        "aws": {
            "requests": aws.requests,
            "injected": aws.injected,
            "by_service": by_service.iter().map(|(k, (r, i, kinds))| {
                (k.clone(), json!({"requests": r, "injected": i, "by_fault": kinds}))
            }).collect::<serde_json::Map<String, Value>>(),
        },
        "poller": s,
        "queue_left": queue_left,
        "dlq": {"depth": dlq_depth, "valid_events": valid_in_dlq, "without_reason": dlq_without_reason, "invalid_seen": invalid_found, "unexpected": unexpected_in_dlq},
        "parked_peak": observed.peak_parked.load(Ordering::Relaxed),
        "revoke": {
            "error_seen": observed.revoked_error_seen.load(Ordering::Relaxed),
            "parked_peak": observed.revoked_parked_peak.load(Ordering::Relaxed),
            "reconnect_attempts": observed.reconnect_attempts.load(Ordering::Relaxed),
        },
        "connect_attempts": observed.connect_attempts.load(Ordering::Relaxed),
        "drained": drained,
        "publish_secs": publish_secs,
        "sync_secs": stream_secs,
        "total_secs": t_start.elapsed().as_secs_f64(),
        "timeline": timeline.iter().map(|(t, w)| json!({"at_s": t, "what": w})).collect::<Vec<_>>(),
        "checks": checks.iter().map(|(n, p, d)| json!({"check": n, "pass": p, "detail": d})).collect::<Vec<_>>(),
        "log_dir": log_dir.display().to_string(),
    });
    Ok((report, ok))
}

/// Every message of a queue nobody consumes any more (the DLQ at the end): received with a long
/// visibility timeout until `expected` are seen or nothing more comes, so FIFO groups do not
/// hide messages the way zero-visibility peeks can.
async fn read_all(
    sqs: &aws_sdk_sqs::Client,
    queue_url: &str,
    expected: u64,
) -> Vec<poller::Peeked> {
    let mut seen: BTreeMap<String, poller::Peeked> = BTreeMap::new();
    let mut empty = 0;
    while (seen.len() as u64) < expected && empty < 3 {
        let out = sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(10)
            .visibility_timeout(300)
            .wait_time_seconds(1)
            .message_attribute_names("All")
            .send()
            .await;
        let msgs = out.ok().and_then(|o| o.messages).unwrap_or_default();
        if msgs.is_empty() {
            empty += 1;
        }
        for m in msgs {
            let reason = m
                .message_attributes
                .as_ref()
                .and_then(|a| a.get("reason"))
                .and_then(|v| v.string_value.clone());
            if let Some(id) = m.message_id {
                seen.entry(id).or_insert(poller::Peeked {
                    body: m.body.unwrap_or_default(),
                    reason,
                });
            }
        }
    }
    seen.into_values().collect()
}

/// The monitor loops forever; `select!` needs a value of the other branch's type.
fn unreachable_monitor() -> ((Result<bool, String>, f64), ()) {
    ((Err("the monitor stopped".into()), 0.0), ())
}

/// The producer's send, retried a few times (moto can be slow under load; a repeat within the
/// deduplication window is harmless).
async fn send_retrying(producer: &LeadEventProducer, e: &LeadEvent) -> Result<(), String> {
    let mut last = String::new();
    for _ in 0..5 {
        match producer.send(e).await {
            Ok(()) => return Ok(()),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Err(format!("publish {}: {last}", e.event_id))
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("soak: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok((report, ok)) => {
            let text = serde_json::to_string_pretty(&report).unwrap_or_default();
            if let Err(e) = std::fs::write(&args.out, text) {
                eprintln!("soak: cannot write {}: {e}", args.out.display());
                return ExitCode::FAILURE;
            }
            eprintln!("soak: wrote {}", args.out.display());
            if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("soak: the run could not complete: {e}");
            ExitCode::FAILURE
        }
    }
}
