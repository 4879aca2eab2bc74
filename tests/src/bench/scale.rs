//! The many-tenant scale run of `make bench` (`--skip-scale` leaves it out): `--scale-portals`
//! tenants (50), each with its own portal in one multi-portal sandbox (own token, leads and
//! leaky bucket at Bitrix24's 2 req/s, burst 50; the portal has the connector's user fields and
//! the custom qualified status) and connected through the release `bitrix-connect` binary as the
//! stream is; `--scale-customers` customers each (20) with `--scale-events` events each (5).
//! Events arrive as conversations do: each customer starts at a point spread over
//! `--scale-window-secs` (300) and writes again `--scale-gap-secs` (20, +-25 %) later; each
//! event's `occurred_at` is the moment it is published. (That is about 17 events/s at the peak:
//! moto on this 2-core machine keeps up with it, while at about 40 events/s a backlog builds and
//! moto's FIFO sends and receives slow down with it, so the run would measure moto.) Every event raises the customer's score
//! (so each one has a visible effect), the status moves forward (new, contacted, qualified) and
//! one in five carries a note. The poller plays the event source mapping with
//! `--scale-concurrency` loops (8) into as many release `lead-sync` processes, whose AWS
//! endpoint is bench's counting proxy. The loops short-poll: moto's long poll spins while the
//! only visible messages belong to FIFO groups with a message in flight (the slow portal's),
//! which slows every request moto serves; real SQS does not, so the run would measure moto.
//!
//! Latency is measured on the portal side: the sandbox records each lead write (create, update,
//! comment) with its time, and an event has landed at the first write to its customer's lead
//! that carries its score or a later one (`UF_CRM_TELEAGENT_SCORE`; scores only grow, so a
//! coalesced update lands every event it covers). Event-to-lead latency = that moment minus
//! `occurred_at`.
//!
//! Then the same schedule again with two portals misbehaving (`--skip-scale-faults` leaves it
//! out): portal 0 answers every MCP request `--scale-slow-ms` (2000) late, portal 1 answers 500
//! to everything for `--scale-outage-secs` (60) from the first publish. The other portals' p95 is
//! printed beside the clean run's p95 of the same portals (target: within 1.25x).
//!
//! Checks (PASS/FAIL; a FAIL makes the bench exit non-zero): no lost event (every event landed;
//! each lead shows the last event's score and status), no duplicate lead, no portal above its
//! rate limit (no refusal by the sandbox's bucket, and every token's `tools/call` times replayed
//! through a 2/s, depth-50 leaky bucket never overflow it).
//!
//! Cost: USD per million events from the requests measured per event, at the published
//! us-east-1 prices named in [`PRICES`].

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::events::{Hotness, LeadEvent, LeadEventProducer, LeadStatus};
use shared::tenant::TenantId;
use teleagent_tests::local::poller::{self, InvokeError, Invoker, Poller, PollerOptions};
use teleagent_tests::local::runtime_api::RuntimeApi;
use teleagent_tests::sandbox::{Faults, Sandbox, SandboxConfig, SandboxPortal, status_id};

use crate::{Ctx, apigw_event, outcome_word};

/// The scale run's sizes (flags of `bench`).
#[derive(Clone, Debug)]
pub struct ScaleArgs {
    pub run: bool,
    pub faults: bool,
    pub portals: usize,
    pub customers: usize,
    pub events: usize,
    pub window_secs: f64,
    pub gap_secs: f64,
    pub concurrency: usize,
    pub slow_ms: u64,
    pub outage_secs: f64,
    pub timeout_secs: u64,
}

impl Default for ScaleArgs {
    fn default() -> Self {
        Self {
            run: true,
            faults: true,
            portals: 50,
            customers: 20,
            events: 5,
            window_secs: 300.0,
            gap_secs: 20.0,
            concurrency: 8,
            slow_ms: 2000,
            outage_secs: 60.0,
            timeout_secs: 900,
        }
    }
}

impl ScaleArgs {
    /// Takes one `--scale-*` flag; `Ok(false)` when the flag is not one of them.
    pub fn flag(
        &mut self,
        flag: &str,
        value: &mut dyn FnMut() -> Result<String, String>,
    ) -> Result<bool, String> {
        let num = |v: String| v.parse::<usize>().map_err(|_| format!("bad number {v:?}"));
        let float = |v: String| v.parse::<f64>().map_err(|_| format!("bad number {v:?}"));
        match flag {
            "--skip-scale" => self.run = false,
            "--skip-scale-faults" => self.faults = false,
            "--scale-portals" => self.portals = num(value()?)?.max(1),
            "--scale-customers" => self.customers = num(value()?)?.max(1),
            "--scale-events" => self.events = num(value()?)?.max(1),
            "--scale-window-secs" => self.window_secs = float(value()?)?.max(0.0),
            "--scale-gap-secs" => self.gap_secs = float(value()?)?.max(0.0),
            "--scale-concurrency" => self.concurrency = num(value()?)?.max(1),
            "--scale-slow-ms" => self.slow_ms = num(value()?)? as u64,
            "--scale-outage-secs" => self.outage_secs = float(value()?)?.max(0.0),
            "--scale-timeout-secs" => self.timeout_secs = num(value()?)? as u64,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

/// Bitrix24's standard plan: 2 requests/s, burst 50.
const PORTAL_RATE: f64 = 2.0;
const PORTAL_DEPTH: u32 = 50;

// ---------------------------------------------------------------------------------------------
// Prices (us-east-1, on-demand, USD), as AWS publishes them; the date says when they were read.

/// One published price.
pub struct Price {
    pub name: &'static str,
    pub usd: f64,
    pub per: &'static str,
}

/// Where and when the prices are from.
pub const PRICES_AS_OF: &str = "AWS price pages for us-east-1 as published in 2025 (DynamoDB \
     on-demand after its 2024-11-01 reduction); not re-read for this run";

pub const LAMBDA_ARM_GB_S: Price = Price {
    name: "Lambda arm64 duration (first 7.5 billion GB-s a month)",
    usd: 0.000_013_333_4,
    per: "GB-second",
};
pub const LAMBDA_REQUEST: Price = Price {
    name: "Lambda requests",
    usd: 0.20,
    per: "million requests",
};
pub const DDB_WRU: Price = Price {
    name: "DynamoDB on-demand write request unit",
    usd: 0.625,
    per: "million WRU",
};
pub const DDB_RRU: Price = Price {
    name: "DynamoDB on-demand read request unit",
    usd: 0.125,
    per: "million RRU",
};
pub const SQS_FIFO: Price = Price {
    name: "SQS FIFO requests (each 64 KB chunk one request)",
    usd: 0.50,
    per: "million requests",
};
pub const KMS_REQUEST: Price = Price {
    name: "KMS symmetric requests ($0.03 per 10,000)",
    usd: 3.00,
    per: "million requests",
};
pub const PRICES: [&Price; 6] = [
    &LAMBDA_ARM_GB_S,
    &LAMBDA_REQUEST,
    &DDB_WRU,
    &DDB_RRU,
    &SQS_FIFO,
    &KMS_REQUEST,
];

/// lead-sync's `MemorySize` in infra/template.yaml (the function's, else the Globals').
fn lead_sync_memory_mb() -> Result<u64, String> {
    let path = teleagent_tests::harness::workspace_root().join("infra/template.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let t: serde_yaml::Value =
        serde_yaml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    t["Resources"]["LeadSyncFunction"]["Properties"]["MemorySize"]
        .as_u64()
        .or_else(|| t["Globals"]["Function"]["MemorySize"].as_u64())
        .ok_or_else(|| "no MemorySize for LeadSyncFunction in infra/template.yaml".into())
}

// ---------------------------------------------------------------------------------------------
// The schedule.

struct Planned {
    portal: usize,
    customer: usize,
    k: usize,
    /// From the first publish.
    at: Duration,
    score: u8,
    status: LeadStatus,
    hotness: Hotness,
    note: Option<String>,
}

fn frac(x: f64) -> f64 {
    x - x.floor()
}

fn customer_id(p: usize, c: usize) -> String {
    format!("tg:{}", 8_000_000 + p * 1000 + c)
}

/// Score of a customer's k-th event: strictly growing, so each event's effect is visible.
fn score_of(k: usize, n: usize) -> u8 {
    let step = 80 / n.max(1);
    u8::try_from((10 + step * k).min(100)).unwrap_or(100)
}

fn status_of(k: usize, n: usize) -> LeadStatus {
    match 3 * k / n.max(1) {
        0 => LeadStatus::New,
        1 => LeadStatus::Contacted,
        _ => LeadStatus::Qualified,
    }
}

fn build_plan(a: &ScaleArgs) -> Vec<Planned> {
    let hot = [Hotness::Cold, Hotness::Warm, Hotness::Hot];
    let mut out = Vec::new();
    for p in 0..a.portals {
        for c in 0..a.customers {
            let idx = (p * a.customers + c) as f64;
            // Starts spread evenly (golden-ratio sequence) over the window.
            let start = frac(idx * 0.618_033_988_75) * a.window_secs;
            let mut t = start;
            for k in 0..a.events {
                if k > 0 {
                    let jitter = frac((idx * 7.0 + k as f64) * 0.414_213_562_37);
                    t += a.gap_secs * (0.75 + 0.5 * jitter);
                }
                out.push(Planned {
                    portal: p,
                    customer: c,
                    k,
                    at: Duration::from_secs_f64(t),
                    score: score_of(k, a.events),
                    status: status_of(k, a.events),
                    hotness: hot[(3 * k / a.events.max(1)).min(2)],
                    note: ((p + c + k) % 5 == 2)
                        .then(|| format!("scale note p{p} c{c} k{k}: asked about delivery")),
                });
            }
        }
    }
    out.sort_by_key(|e| e.at);
    out
}

fn event_for(tenant: &TenantId, e: &Planned) -> LeadEvent {
    let mut ev = LeadEvent::new(tenant.clone(), customer_id(e.portal, e.customer), e.score);
    ev.customer.name = Some(format!("Scale Customer {:02}-{:02}", e.portal, e.customer));
    ev.customer.phone = Some(format!(
        "99891{:07}",
        1_000_000 + e.portal * 1000 + e.customer
    ));
    ev.customer.username = Some(format!("scale{}_{}", e.portal, e.customer));
    ev.lead.intent = Some("buy".into());
    ev.lead.hotness = Some(e.hotness);
    ev.lead.status = Some(e.status);
    ev.lead.fields_collected.product = Some("solar panels".into());
    ev.lead.notes = e.note.clone();
    ev
}

fn unix_ms(t: time::OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

fn now_ms() -> u64 {
    unix_ms(time::OffsetDateTime::now_utc())
}

// ---------------------------------------------------------------------------------------------
// lead-sync invocations, timed as Lambda bills them (handler start to answer).

/// One lead-sync invocation: when it started (ms since the Unix epoch), how long it took, and
/// the tenants and event ids of its batch.
#[derive(Clone)]
struct Invocation {
    start_ms: u64,
    ms: f64,
    tenants: Vec<String>,
    event_ids: Vec<String>,
}

struct TimedInvoker {
    api: Arc<RuntimeApi>,
    log: Arc<Mutex<Vec<Invocation>>>,
}

impl Invoker for TimedInvoker {
    async fn invoke(&self, event: Value) -> Result<Value, InvokeError> {
        let mut tenants = Vec::new();
        let mut event_ids = Vec::new();
        for r in event["Records"].as_array().into_iter().flatten() {
            if let Some(g) = r["attributes"]["MessageGroupId"].as_str() {
                tenants.push(g.split(':').next().unwrap_or_default().to_owned());
            }
            let body: Value = r["body"]
                .as_str()
                .and_then(|b| serde_json::from_str(b).ok())
                .unwrap_or(Value::Null);
            if let Some(id) = body["event_id"].as_str() {
                event_ids.push(id.to_owned());
            }
        }
        let start_ms = now_ms();
        let t = Instant::now();
        let r = Invoker::invoke(&self.api, event).await;
        self.log
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(Invocation {
                start_ms,
                ms: t.elapsed().as_secs_f64() * 1000.0,
                tenants,
                event_ids,
            });
        r
    }
}

// ---------------------------------------------------------------------------------------------
// One run.

/// What makes a run misbehave: portal index -> (label, faults set before the first publish).
type Misbehaving = Vec<(usize, &'static str)>;

fn num_of(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn pct(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// A leaky bucket (rate/s, depth) replayed over call times (ms): the highest level reached.
/// Over `depth` means the caller sent more than the portal admits.
fn replay_bucket(times_ms: &[u64], rate: f64, _depth: u32) -> f64 {
    let mut level = 0.0f64;
    let mut last: Option<u64> = None;
    let mut max = 0.0f64;
    let mut ts = times_ms.to_vec();
    ts.sort_unstable();
    for t in ts {
        if let Some(l) = last {
            level = (level - (t.saturating_sub(l)) as f64 / 1000.0 * rate).max(0.0);
        }
        level += 1.0;
        max = max.max(level);
        last = Some(t);
    }
    max
}

struct RunOut {
    report: Value,
    /// Event-to-lead latency (s) per portal.
    latency_by_portal: Vec<Vec<f64>>,
    checks_pass: bool,
}

#[allow(clippy::too_many_lines)]
async fn run_once(
    ctx: &Ctx,
    bin_dir: &Path,
    a: &ScaleArgs,
    label: &str,
    misbehaving: &Misbehaving,
) -> Result<RunOut, String> {
    let t_setup = Instant::now();
    let sqs = &ctx.env.clients.sqs;
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let run_id = &suffix[..8];
    let (queue_url, dlq_url) =
        poller::create_queue_pair(sqs, &format!("scale-{run_id}"), 5, 360).await?;

    // The portals: one sandbox, one portal per tenant (its first portal stays idle).
    let sandbox = Sandbox::start(SandboxConfig::default()).await;
    let portal_cfg = SandboxConfig {
        bucket_rate_per_sec: PORTAL_RATE,
        bucket_depth: PORTAL_DEPTH,
        has_teleagent_user_fields: true,
        has_qualified_status: true,
        ..SandboxConfig::default()
    };
    let mut tenants: Vec<TenantId> = Vec::new();
    let mut portals: Vec<SandboxPortal> = Vec::new();
    for p in 0..a.portals {
        tenants
            .push(TenantId::parse(&format!("scale-{run_id}-p{p:02}")).map_err(|e| e.to_string())?);
        portals.push(sandbox.add_portal(portal_cfg.clone()));
    }

    // Connect every tenant through the release connect binary, as the stream does.
    let (api, children) =
        crate::start_function(ctx, bin_dir, "bitrix-connect", &queue_url, &dlq_url, 1).await?;
    let mut tokens = Vec::new();
    for (t, portal) in tenants.iter().zip(&portals) {
        let token = portal.issue_token(true);
        let res = RuntimeApi::invoke(
            &api,
            apigw_event(
                "POST",
                "connect",
                t.as_str(),
                Some(json!({"mcp_token": token, "mcp_url": portal.mcp_url()})),
            ),
            Duration::from_secs(60),
        )
        .await
        .map_err(|e| format!("connect {t}: {e}"))?;
        let answer = outcome_word(&res);
        if answer != "http 200" {
            for mut c in children {
                let _ = c.kill().await;
            }
            return Err(format!("connect {t} answered {answer}: {res:?}"));
        }
        tokens.push(token);
    }
    for mut c in children {
        let _ = c.kill().await;
    }
    // The live checks used a few calls of each bucket; start on drained buckets.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for p in &portals {
        p.reset_calls();
    }
    let connect_secs = t_setup.elapsed().as_secs_f64();
    eprintln!(
        "scale[{label}]: {} tenants connected through bitrix-connect in {connect_secs:.0} s",
        tenants.len()
    );

    // lead-sync processes and the poller.
    let _ = ctx.proxy_counts();
    let (api, children) = crate::start_function(
        ctx,
        bin_dir,
        "lead-sync",
        &queue_url,
        &dlq_url,
        a.concurrency,
    )
    .await?;
    let invocations_log = Arc::new(Mutex::new(Vec::new()));
    let poller = Poller::new(
        sqs.clone(),
        queue_url.clone(),
        TimedInvoker {
            api: api.clone(),
            log: invocations_log.clone(),
        },
        PollerOptions {
            concurrency: a.concurrency,
            dead_letter_queue_url: Some(dlq_url.clone()),
            // Short polls: moto's long poll spins while a slow portal's FIFO groups hold the
            // only visible messages, slowing every tenant's requests (see `idle_pause`).
            wait_time_secs: 0,
            idle_pause: Duration::from_millis(20),
            ..PollerOptions::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let stats = poller.stats();

    let plan = Arc::new(build_plan(a));
    let n_events = plan.len();
    let occurred: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(vec![0; n_events]));
    let event_ids: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(vec![String::new(); n_events]));
    let publish_errors: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let published = Arc::new(AtomicUsize::new(0));
    let publish_done: Arc<Mutex<Option<Duration>>> = Arc::new(Mutex::new(None));
    let producer = LeadEventProducer::new(sqs.clone(), queue_url.clone());

    // Misbehaviour starts with the first publish.
    let t0 = Instant::now();
    let t0_ms = now_ms();
    let mut outage_end_ms = None;
    for (i, what) in misbehaving {
        if let Some(p) = portals.get(*i) {
            match *what {
                "slow" => p.set_faults(Faults {
                    latency_ms: a.slow_ms,
                    ..Faults::default()
                }),
                _ => {
                    let f = Faults::error_5xx_for(Duration::from_secs_f64(a.outage_secs));
                    outage_end_ms = Some(f.error_5xx_until_unix_ms);
                    p.set_faults(f);
                }
            }
        }
    }

    let publisher = {
        let plan = plan.clone();
        let occurred = occurred.clone();
        let event_ids = event_ids.clone();
        let errors = publish_errors.clone();
        let tenants = tenants.clone();
        let published = published.clone();
        let publish_done = publish_done.clone();
        async move {
            let mut sends = Vec::new();
            for i in 0..plan.len() {
                let e = &plan[i];
                tokio::time::sleep_until(tokio::time::Instant::from_std(t0 + e.at)).await;
                let ev = event_for(&tenants[e.portal], e);
                event_ids.lock().unwrap_or_else(|p| p.into_inner())[i] = ev.event_id.clone();
                let producer = producer.clone();
                let occurred = occurred.clone();
                let errors = errors.clone();
                let published = published.clone();
                sends.push(tokio::spawn(async move {
                    let mut last = String::new();
                    for _ in 0..5 {
                        match producer.send(&ev).await {
                            Ok(()) => {
                                occurred.lock().unwrap_or_else(|p| p.into_inner())[i] =
                                    unix_ms(ev.occurred_at);
                                published.fetch_add(1, Ordering::Relaxed);
                                return;
                            }
                            Err(err) => last = err.to_string(),
                        }
                        tokio::time::sleep(Duration::from_millis(300)).await;
                    }
                    errors
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(format!("publish {}: {last}", ev.event_id));
                }));
            }
            for s in sends {
                let _ = s.await;
            }
            *publish_done.lock().unwrap_or_else(|p| p.into_inner()) = Some(t0.elapsed());
        }
    };

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let run = poller.run(async {
        let _ = stop_rx.await;
    });
    let deadline = Duration::from_secs(a.timeout_secs);
    let mut max_depth = 0u64;
    let watch = async {
        // Until every customer's lead shows its last event, everything is published and the
        // queue is empty.
        let last_of: HashMap<(usize, usize), &Planned> = plan
            .iter()
            .filter(|e| e.k + 1 == a.events)
            .map(|e| ((e.portal, e.customer), e))
            .collect();
        let mut last_print = Instant::now();
        let finished = loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let mut done = 0usize;
            for (p, portal) in portals.iter().enumerate() {
                for l in portal.leads() {
                    let Some(origin) = l["ORIGIN_ID"].as_str() else {
                        continue;
                    };
                    let Some(c) = origin
                        .rsplit_once(":tg:")
                        .and_then(|(_, n)| n.parse::<usize>().ok())
                        .and_then(|n| n.checked_sub(8_000_000 + p * 1000))
                    else {
                        continue;
                    };
                    if let Some(e) = last_of.get(&(p, c))
                        && num_of(&l["UF_CRM_TELEAGENT_SCORE"]) == Some(f64::from(e.score))
                        && l["STATUS_ID"] == status_id(e.status)
                    {
                        done += 1;
                    }
                }
            }
            let depth = poller::queue_depth(sqs, &queue_url)
                .await
                .unwrap_or(u64::MAX);
            if depth != u64::MAX {
                max_depth = max_depth.max(depth);
            }
            let all_published = publish_done
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_some();
            if last_print.elapsed() > Duration::from_secs(15) {
                let s = stats.snapshot();
                eprintln!(
                    "scale[{label}]: {:>4.0} s  published {}/{n_events}  customers done {done}/{}  queue {depth}  invocations {}  failed items {}",
                    t0.elapsed().as_secs_f64(),
                    published.load(Ordering::Relaxed),
                    last_of.len(),
                    s.invocations,
                    s.items_failed
                );
                last_print = Instant::now();
            }
            if all_published && done >= last_of.len() && depth == 0 {
                break true;
            }
            if t0.elapsed() > deadline {
                break false;
            }
        };
        let _ = stop_tx.send(());
        finished
    };
    let (_, (), finished) = tokio::join!(run, publisher, watch);
    let published_at = publish_done
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .unwrap_or_default();
    let wall = t0.elapsed();
    for mut c in children {
        let _ = c.kill().await;
    }
    let aws = ctx.proxy_counts();

    // ---- Figures.
    let occurred = occurred.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let event_ids = event_ids.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let inv_log = invocations_log
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut first_invoked: HashMap<&str, u64> = HashMap::new();
    for inv in &inv_log {
        for id in &inv.event_ids {
            let e = first_invoked.entry(id.as_str()).or_insert(inv.start_ms);
            *e = (*e).min(inv.start_ms);
        }
    }
    // Per portal: (queue wait = first invocation - occurred_at, in lead-sync = landed - first
    // invocation), seconds.
    let mut split_by_portal: Vec<Vec<(f64, f64)>> = vec![Vec::new(); a.portals];
    let mut latency_by_portal: Vec<Vec<f64>> = vec![Vec::new(); a.portals];
    let mut lost = 0usize;
    let mut lost_examples = Vec::new();
    let mut wrong_final = 0usize;
    let mut duplicates = 0usize;
    let mut last_landing_ms = t0_ms;
    let mut per_portal = Vec::new();
    let mut refusals_total = 0u64;
    let mut over_bucket = 0usize;
    let mut tools_call_total = 0u64;
    let secs = wall.as_secs_f64().max(0.001);
    // Plan index by (portal, customer), in k order.
    let mut by_customer: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
    for (i, e) in plan.iter().enumerate() {
        by_customer
            .entry((e.portal, e.customer))
            .or_default()
            .push(i);
    }
    for v in by_customer.values_mut() {
        v.sort_by_key(|i| plan[*i].k);
    }
    for (p, portal) in portals.iter().enumerate() {
        let leads = portal.leads();
        let writes = portal.lead_writes();
        let mut lead_of: HashMap<usize, Vec<&Value>> = HashMap::new();
        for l in &leads {
            let c = l["ORIGIN_ID"]
                .as_str()
                .and_then(|o| o.rsplit_once(":tg:"))
                .and_then(|(_, n)| n.parse::<usize>().ok())
                .and_then(|n| n.checked_sub(8_000_000 + p * 1000));
            if let Some(c) = c {
                lead_of.entry(c).or_default().push(l);
            }
        }
        duplicates += lead_of
            .values()
            .map(|v| v.len().saturating_sub(1))
            .sum::<usize>();
        for c in 0..a.customers {
            let idxs = by_customer.get(&(p, c)).cloned().unwrap_or_default();
            let Some(lead) = lead_of.get(&c).and_then(|v| v.first()) else {
                lost += idxs.len();
                if lost_examples.len() < 5 {
                    lost_examples.push(format!("p{p} c{c}: no lead"));
                }
                continue;
            };
            let id = num_of(&lead["ID"]).map(|x| x as i64).unwrap_or(-1);
            if let Some(last) = idxs.last().map(|i| &plan[*i])
                && (num_of(&lead["UF_CRM_TELEAGENT_SCORE"]) != Some(f64::from(last.score))
                    || lead["STATUS_ID"] != status_id(last.status))
            {
                wrong_final += 1;
                if lost_examples.len() < 5 {
                    lost_examples.push(format!(
                        "p{p} c{c}: lead shows score {} status {}, last event {} {}",
                        lead["UF_CRM_TELEAGENT_SCORE"],
                        lead["STATUS_ID"],
                        last.score,
                        status_id(last.status)
                    ));
                }
            }
            let lead_writes: Vec<_> = writes.iter().filter(|w| w.lead_id == id).collect();
            for i in idxs {
                let e = &plan[i];
                let landed = lead_writes.iter().find(|w| {
                    w.method != "crm.timeline.comment.add"
                        && num_of(&w.fields["UF_CRM_TELEAGENT_SCORE"])
                            .is_some_and(|s| s >= f64::from(e.score))
                });
                match landed {
                    Some(w) if occurred[i] > 0 => {
                        last_landing_ms = last_landing_ms.max(w.at_ms);
                        if let Some(inv) = first_invoked.get(event_ids[i].as_str()) {
                            split_by_portal[p].push((
                                inv.saturating_sub(occurred[i]) as f64 / 1000.0,
                                w.at_ms.saturating_sub(*inv) as f64 / 1000.0,
                            ));
                        }
                        latency_by_portal[p]
                            .push(w.at_ms.saturating_sub(occurred[i]) as f64 / 1000.0);
                    }
                    _ => {
                        lost += 1;
                        if lost_examples.len() < 5 {
                            lost_examples
                                .push(format!("p{p} c{c} k{}: no write with its score", e.k));
                        }
                    }
                }
            }
        }
        let calls = portal.calls();
        let refused = calls.by_outcome.get("rate_limited").copied().unwrap_or(0);
        refusals_total += refused;
        tools_call_total += calls.tools_call;
        let max_level = calls
            .tools_call_ms_by_token
            .values()
            .map(|t| replay_bucket(t, PORTAL_RATE, PORTAL_DEPTH))
            .fold(0.0f64, f64::max);
        // Millisecond timestamps: allow half a call of rounding.
        let over = refused > 0 || max_level > f64::from(PORTAL_DEPTH) + 0.5;
        if over {
            over_bucket += 1;
        }
        let lat = sorted(latency_by_portal[p].clone());
        per_portal.push(json!({
            "portal": p,
            "tenant": tenants[p].as_str(),
            "misbehaving": misbehaving.iter().find(|(i, _)| *i == p).map(|(_, w)| *w),
            "tools_call": calls.tools_call,
            "calls_per_s": Value::Null,
            "rate_share": Value::Null,
            "bucket_refusals": refused,
            "replayed_bucket_max_level": max_level,
            "over_limit": over,
            "fault_5xx": calls.by_outcome.get("fault_5xx").copied().unwrap_or(0),
            "initialize": calls.initialize,
            "latency_p50_s": pct(&lat, 50.0),
            "latency_p95_s": pct(&lat, 95.0),
            "latency_max_s": lat.last().copied(),
            "events_landed": lat.len(),
        }));
    }
    let all_lat = sorted(latency_by_portal.iter().flatten().copied().collect());
    let run_secs = (last_landing_ms.saturating_sub(t0_ms) as f64 / 1000.0).max(0.001);
    // Calls/s over the run (first publish to last landing write) against the portal's rate.
    for row in &mut per_portal {
        let calls = row["tools_call"].as_f64().unwrap_or(0.0);
        row["calls_per_s"] = json!(calls / run_secs);
        row["rate_share"] = json!(calls / run_secs / PORTAL_RATE);
    }
    let shares = sorted(
        per_portal
            .iter()
            .filter_map(|p| p["rate_share"].as_f64())
            .collect(),
    );
    let dlq = poller::queue_depth(sqs, &dlq_url).await.unwrap_or(0);
    let s = stats.snapshot();
    let durs: Vec<f64> = inv_log.iter().map(|i| i.ms).collect();
    // Where the consumers' time went: invocations whose batch held a misbehaving portal's event.
    let bad_tenants: Vec<&str> = misbehaving
        .iter()
        .filter_map(|(i, _)| tenants.get(*i).map(TenantId::as_str))
        .collect();
    let (mut bad_n, mut bad_ms, mut bad_others) = (0usize, 0.0f64, 0usize);
    for inv in &inv_log {
        if inv
            .tenants
            .iter()
            .any(|t| bad_tenants.contains(&t.as_str()))
        {
            bad_n += 1;
            bad_ms += inv.ms;
            bad_others += inv
                .tenants
                .iter()
                .filter(|t| !bad_tenants.contains(&t.as_str()))
                .count();
        }
    }
    let all_ms: f64 = durs.iter().sum();
    let batch_sizes: f64 = inv_log.iter().map(|i| i.tenants.len() as f64).sum();
    let others_split: Vec<(f64, f64)> = split_by_portal
        .iter()
        .enumerate()
        .filter(|(i, _)| !misbehaving.iter().any(|(m, _)| m == i))
        .flat_map(|(_, v)| v.iter().copied())
        .collect();
    let waits = sorted(others_split.iter().map(|x| x.0).collect());
    let inside = sorted(others_split.iter().map(|x| x.1).collect());
    let consumers = json!({
        "invocations": inv_log.len(),
        "mean_batch_size": if inv_log.is_empty() { 0.0 } else { batch_sizes / inv_log.len() as f64 },
        "busy_share_of_consumer_time": all_ms / 1000.0 / (a.concurrency as f64 * secs),
        "with_misbehaving_portal": {"invocations": bad_n, "busy_s": bad_ms / 1000.0,
            "share_of_consumer_time": bad_ms / 1000.0 / (a.concurrency as f64 * secs),
            "mean_ms": if bad_n == 0 { 0.0 } else { bad_ms / bad_n as f64 },
            "other_tenants_events_in_those_batches": bad_others},
        "without": {"invocations": inv_log.len() - bad_n, "busy_s": (all_ms - bad_ms) / 1000.0,
            "mean_ms": if inv_log.len() == bad_n { 0.0 } else { (all_ms - bad_ms) / (inv_log.len() - bad_n) as f64 }},
        "well_behaved_portals_latency_split_s": {
            "queue_wait_p50": pct(&waits, 50.0), "queue_wait_p95": pct(&waits, 95.0),
            "in_lead_sync_p50": pct(&inside, 50.0), "in_lead_sync_p95": pct(&inside, 95.0),
            "what": "queue wait = first lead-sync invocation holding the event - occurred_at; in lead-sync = landing write - that invocation's start"},
    });
    let parked: u64 = {
        let mut n = 0;
        for t in &tenants {
            n += crate::count_items(
                &ctx.env.clients.dynamodb,
                &ctx.env.table,
                t.as_str(),
                "PARKED#",
            )
            .await;
        }
        n
    };

    // ---- Cost.
    let n = n_events as f64;
    let sum = |pred: &dyn Fn(&str) -> bool| -> u64 {
        aws.iter().filter(|(k, _)| pred(k)).map(|(_, v)| *v).sum()
    };
    let ddb_ops: BTreeMap<String, u64> = aws
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("DynamoDB_20120810.")
                .map(|o| (o.to_owned(), *v))
        })
        .collect();
    let (mut rru, mut wru) = (0.0f64, 0.0f64);
    for (op, c) in &ddb_ops {
        match op.as_str() {
            // Strongly consistent reads of items under 4 KB: 1 RRU each (a query of a few
            // small items: 1).
            "GetItem" | "Query" | "Scan" | "BatchGetItem" => rru += *c as f64,
            "TransactGetItems" => rru += 2.0 * *c as f64,
            // Writes of items under 1 KB: 1 WRU each (a failed conditional write is billed too).
            "PutItem" | "UpdateItem" | "DeleteItem" | "BatchWriteItem" => wru += *c as f64,
            "TransactWriteItems" => wru += 2.0 * *c as f64,
            _ => {}
        }
    }
    let kms = sum(&|k: &str| k.starts_with("TrentService."));
    let sqs_fn = sum(&|k: &str| k.starts_with("AmazonSQS."));
    let memory_mb = lead_sync_memory_mb()?;
    let billed_ms: f64 = durs.iter().map(|d| d.ceil()).sum();
    let gb_s = billed_ms / 1000.0 * memory_mb as f64 / 1024.0;
    let invocations = durs.len() as f64;
    // SQS: the producer's SendMessage (1 an event), the mapping's ReceiveMessage that returned
    // the batch and its DeleteMessageBatch (1 each per invocation; empty polls are a cost per
    // hour, not per event), and lead-sync's own requests (visibility changes, replays).
    let sqs_requests = n + 2.0 * invocations + sqs_fn as f64;
    let per_m = 1_000_000.0 / n;
    let lambda_dur_usd = gb_s * per_m * LAMBDA_ARM_GB_S.usd;
    let lambda_req_usd = invocations * per_m / 1e6 * LAMBDA_REQUEST.usd;
    let wru_usd = wru * per_m / 1e6 * DDB_WRU.usd;
    let rru_usd = rru * per_m / 1e6 * DDB_RRU.usd;
    let sqs_usd = sqs_requests * per_m / 1e6 * SQS_FIFO.usd;
    let kms_usd = kms as f64 * per_m / 1e6 * KMS_REQUEST.usd;
    let total_usd = lambda_dur_usd + lambda_req_usd + wru_usd + rru_usd + sqs_usd + kms_usd;
    let dur_sorted = sorted(durs.clone());
    let cost = json!({
        "usd_per_million_events": total_usd,
        "parts_usd_per_million_events": {
            "lambda_duration": lambda_dur_usd,
            "lambda_requests": lambda_req_usd,
            "dynamodb_writes": wru_usd,
            "dynamodb_reads": rru_usd,
            "sqs": sqs_usd,
            "kms": kms_usd,
        },
        "per_event": {
            "lead_sync_invocations": invocations / n,
            "lead_sync_gb_s": gb_s / n,
            "dynamodb_requests": ddb_ops.values().sum::<u64>() as f64 / n,
            "dynamodb_wru": wru / n,
            "dynamodb_rru": rru / n,
            "sqs_requests": sqs_requests / n,
            "kms_requests": kms as f64 / n,
        },
        "dynamodb_requests_by_operation": ddb_ops,
        "lead_sync_memory_mb": memory_mb,
        "lead_sync_invocation_ms": {"count": durs.len(), "mean": if durs.is_empty() { 0.0 } else { durs.iter().sum::<f64>() / invocations },
            "p50": pct(&dur_sorted, 50.0), "p95": pct(&dur_sorted, 95.0)},
        "assumptions": "DynamoDB items under 1 KB written and under 4 KB read, reads strongly consistent (1 RRU a GetItem/Query, 1 WRU a Put/Update/Delete, conditional failures billed); Lambda duration = measured lead-sync invocation time on this machine (moto and the sandbox on loopback, a loaded 2-core machine), billed per ms at the template's MemorySize, arm64 price; SQS = 1 SendMessage an event + 1 ReceiveMessage and 1 DeleteMessageBatch per invocation + lead-sync's own SQS requests; KMS = lead-sync's requests; connect, CloudWatch, data transfer and storage left out",
        "prices": PRICES.iter().map(|p| json!({"name": p.name, "usd": p.usd, "per": p.per})).collect::<Vec<_>>(),
        "prices_as_of": PRICES_AS_OF,
        "region": "us-east-1",
    });

    let publish_errors = publish_errors
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let checks = json!({
        "no_lost_events": {"pass": lost == 0 && wrong_final == 0 && publish_errors.is_empty() && finished,
            "lost_events": lost, "leads_with_wrong_final_state": wrong_final, "examples": lost_examples,
            "publish_errors": publish_errors.len(), "finished_before_timeout": finished},
        "no_duplicate_leads": {"pass": duplicates == 0, "duplicate_leads": duplicates},
        "no_portal_above_rate_limit": {"pass": over_bucket == 0, "portals_over": over_bucket,
            "bucket_refusals": refusals_total},
    });
    let checks_pass = [
        "no_lost_events",
        "no_duplicate_leads",
        "no_portal_above_rate_limit",
    ]
    .iter()
    .all(|k| checks[k]["pass"] == json!(true));
    let misb: Vec<Value> = misbehaving
        .iter()
        .map(|(i, what)| {
            let row = &per_portal[*i];
            let last = latency_by_portal[*i].len();
            json!({"portal": i, "what": what, "events": a.customers * a.events, "events_landed": last,
                   "latency_p95_s": row["latency_p95_s"], "latency_max_s": row["latency_max_s"],
                   "fault_5xx_answers": row["fault_5xx"],
                   "outage_ends_s": outage_end_ms.filter(|_| *what == "5xx").map(|m| m.saturating_sub(t0_ms) as f64 / 1000.0)})
        })
        .collect();
    let report = json!({
        "label": label,
        "portals": a.portals,
        "customers_per_portal": a.customers,
        "events_per_customer": a.events,
        "events": n_events,
        "arrival": {"window_s": a.window_secs, "gap_s": a.gap_secs, "published_in_s": published_at.as_secs_f64(),
                    "occurred_at": "the moment each event is published"},
        "lead_sync_processes": a.concurrency,
        "max_queue_depth": max_depth,
        "poller_loops": a.concurrency,
        "portal_bucket": {"rate_per_s": PORTAL_RATE, "depth": PORTAL_DEPTH},
        "setup_s": connect_secs,
        "run_s": run_secs,
        "wall_s": wall.as_secs_f64(),
        "throughput_events_per_s": n / run_secs,
        "latency_s": {"p50": pct(&all_lat, 50.0), "p95": pct(&all_lat, 95.0), "p99": pct(&all_lat, 99.0),
                      "max": all_lat.last().copied(), "count": all_lat.len(),
                      "measured": "portal side: first lead write carrying the event's score (or a later one) minus occurred_at"},
        "rate_share": {"min": shares.first().copied(), "median": pct(&shares, 50.0), "max": shares.last().copied()},
        "tools_call": tools_call_total,
        "tools_call_per_event": tools_call_total as f64 / n,
        "poller": s,
        "consumers": consumers,
        "parked_left": parked,
        "dead_lettered": dlq,
        "misbehaving": misb,
        "per_portal": per_portal,
        "cost": cost,
        "checks": checks,
    });
    Ok(RunOut {
        report,
        latency_by_portal,
        checks_pass,
    })
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn print_run(r: &Value) {
    eprintln!(
        "  {} events over {} portals x {} customers x {}  (published over {:.0} s; {} lead-sync processes, {} poller loops)",
        r["events"],
        r["portals"],
        r["customers_per_portal"],
        r["events_per_customer"],
        f(&r["arrival"]["published_in_s"]),
        r["lead_sync_processes"],
        r["poller_loops"]
    );
    eprintln!(
        "  run {:.0} s (first publish to last lead write; setup {:.0} s)  throughput {:.2} events/s",
        f(&r["run_s"]),
        f(&r["setup_s"]),
        f(&r["throughput_events_per_s"])
    );
    let l = &r["latency_s"];
    eprintln!(
        "  event-to-lead latency (portal side)  p50 {:.2} s  p95 {:.2} s  p99 {:.2} s  max {:.2} s  ({} events)",
        f(&l["p50"]),
        f(&l["p95"]),
        f(&l["p99"]),
        f(&l["max"]),
        l["count"]
    );
    let s = &r["rate_share"];
    eprintln!(
        "  rate-limit share per portal (calls/s over the run / 2 req/s)  min {:.0}%  median {:.0}%  max {:.0}%;  tools/call per event {:.2}",
        f(&s["min"]) * 100.0,
        f(&s["median"]) * 100.0,
        f(&s["max"]) * 100.0,
        f(&r["tools_call_per_event"])
    );
    let c = &r["cost"];
    let p = &c["parts_usd_per_million_events"];
    let pe = &c["per_event"];
    eprintln!(
        "  cost: ${:.2} per million events = Lambda {:.2} (GB-s {:.5}/event at {} MB, mean invocation {:.0} ms) + Lambda requests {:.2} ({:.3} invocations/event) + DynamoDB writes {:.2} ({:.2} WRU/event) + reads {:.2} ({:.2} RRU/event) + SQS {:.2} ({:.2} requests/event) + KMS {:.2} ({:.4} requests/event)",
        f(&c["usd_per_million_events"]),
        f(&p["lambda_duration"]),
        f(&pe["lead_sync_gb_s"]),
        c["lead_sync_memory_mb"],
        f(&c["lead_sync_invocation_ms"]["mean"]),
        f(&p["lambda_requests"]),
        f(&pe["lead_sync_invocations"]),
        f(&p["dynamodb_writes"]),
        f(&pe["dynamodb_wru"]),
        f(&p["dynamodb_reads"]),
        f(&pe["dynamodb_rru"]),
        f(&p["sqs"]),
        f(&pe["sqs_requests"]),
        f(&p["kms"]),
        f(&pe["kms_requests"])
    );
    eprintln!(
        "  DynamoDB requests by operation: {}",
        c["dynamodb_requests_by_operation"]
    );
    for m in r["misbehaving"].as_array().into_iter().flatten() {
        eprintln!(
            "  misbehaving portal {} ({}): {}/{} events landed, p95 {:.1} s, last {:.1} s after its event{}",
            m["portal"],
            m["what"],
            m["events_landed"],
            m["events"],
            f(&m["latency_p95_s"]),
            f(&m["latency_max_s"]),
            m["outage_ends_s"]
                .as_f64()
                .map(|e| format!(
                    " (5xx stretch ended {e:.0} s after the first publish; {} 500 answers)",
                    m["fault_5xx_answers"]
                ))
                .unwrap_or_default()
        );
    }
    let c = &r["consumers"];
    let w = &c["well_behaved_portals_latency_split_s"];
    eprintln!(
        "  consumers: {} invocations (mean batch {:.2}), busy {:.0}% of {} loops' time; batches holding a misbehaving portal's event: {} ({:.0}% of consumer time, mean {:.0} ms, {} other tenants' events in them); the rest mean {:.0} ms",
        c["invocations"],
        f(&c["mean_batch_size"]),
        f(&c["busy_share_of_consumer_time"]) * 100.0,
        r["poller_loops"],
        c["with_misbehaving_portal"]["invocations"],
        f(&c["with_misbehaving_portal"]["share_of_consumer_time"]) * 100.0,
        f(&c["with_misbehaving_portal"]["mean_ms"]),
        c["with_misbehaving_portal"]["other_tenants_events_in_those_batches"],
        f(&c["without"]["mean_ms"])
    );
    eprintln!(
        "  well-behaved portals' latency split: queue wait p50 {:.2} s p95 {:.2} s; in lead-sync p50 {:.2} s p95 {:.2} s",
        f(&w["queue_wait_p50"]),
        f(&w["queue_wait_p95"]),
        f(&w["in_lead_sync_p50"]),
        f(&w["in_lead_sync_p95"])
    );
    eprintln!(
        "  parked left {}  dead-lettered {}  poller: {}",
        r["parked_left"], r["dead_lettered"], r["poller"]
    );
    for (k, v) in r["checks"].as_object().into_iter().flatten() {
        let pass = v["pass"] == json!(true);
        let mut detail = v.clone();
        if let Some(o) = detail.as_object_mut() {
            o.remove("pass");
        }
        eprintln!("  {:<4} {k}  {detail}", if pass { "PASS" } else { "FAIL" });
    }
}

/// The scale runs; returns their report and whether every check passed.
pub async fn run(ctx: &Ctx, bin_dir: &Path, a: &ScaleArgs) -> (Value, bool) {
    eprintln!("  prices ({PRICES_AS_OF}):");
    for p in PRICES {
        eprintln!("    {:<58} ${} per {}", p.name, p.usd, p.per);
    }
    let mut out = json!({});
    let mut pass = true;
    let t = Instant::now();
    eprintln!(
        "\nbench: scale run, clean ({} portals x {} customers x {} events)",
        a.portals, a.customers, a.events
    );
    let clean = match run_once(ctx, bin_dir, a, "clean", &Vec::new()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("  scale run failed: {e}");
            return (json!({"error": e}), false);
        }
    };
    let clean_s = t.elapsed().as_secs_f64();
    print_run(&clean.report);
    eprintln!("  (this scale run took {clean_s:.0} s in all)");
    pass &= clean.checks_pass;
    out["clean"] = clean.report.clone();
    out["clean"]["took_s"] = json!(clean_s);
    if !a.faults || a.portals < 3 {
        return (out, pass);
    }
    let t = Instant::now();
    let misbehaving: Misbehaving = vec![(0, "slow"), (1, "5xx")];
    eprintln!(
        "\nbench: scale run, portal 0 answering {} ms late, portal 1 answering 500 for {:.0} s",
        a.slow_ms, a.outage_secs
    );
    let faulty = match run_once(ctx, bin_dir, a, "misbehaving", &misbehaving).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("  scale run failed: {e}");
            out["misbehaving"] = json!({"error": e});
            return (out, false);
        }
    };
    let faulty_s = t.elapsed().as_secs_f64();
    print_run(&faulty.report);
    eprintln!("  (this scale run took {faulty_s:.0} s in all)");
    pass &= faulty.checks_pass;
    let others = |r: &RunOut| -> Vec<f64> {
        sorted(
            r.latency_by_portal
                .iter()
                .enumerate()
                .filter(|(i, _)| *i >= 2)
                .flat_map(|(_, v)| v.iter().copied())
                .collect(),
        )
    };
    let (c, m) = (others(&clean), others(&faulty));
    let (cp95, mp95) = (pct(&c, 95.0), pct(&m, 95.0));
    let ratio = cp95.zip(mp95).map(|(c, m)| m / c.max(0.001));
    let verdict = match ratio {
        Some(r) if r <= 1.25 => "met",
        Some(_) => "MISSED",
        None => "not measured",
    };
    eprintln!(
        "\nbench: the other {} portals' event-to-lead p95: {:.2} s with two misbehaving vs {:.2} s clean = {:.2}x  (target <= 1.25x)  {verdict}",
        a.portals - 2,
        mp95.unwrap_or(f64::NAN),
        cp95.unwrap_or(f64::NAN),
        ratio.unwrap_or(f64::NAN)
    );
    eprintln!(
        "       their p50 {:.2} s vs {:.2} s, p99 {:.2} s vs {:.2} s",
        pct(&m, 50.0).unwrap_or(f64::NAN),
        pct(&c, 50.0).unwrap_or(f64::NAN),
        pct(&m, 99.0).unwrap_or(f64::NAN),
        pct(&c, 99.0).unwrap_or(f64::NAN)
    );
    out["misbehaving"] = faulty.report;
    out["misbehaving"]["took_s"] = json!(faulty_s);
    out["other_portals_p95"] = json!({
        "portals": a.portals - 2,
        "clean_p95_s": cp95, "misbehaving_p95_s": mp95, "ratio": ratio,
        "clean_p50_s": pct(&c, 50.0), "misbehaving_p50_s": pct(&m, 50.0),
        "clean_p99_s": pct(&c, 99.0), "misbehaving_p99_s": pct(&m, 99.0),
        "target_max_ratio": 1.25, "verdict": verdict,
    });
    (out, pass)
}
