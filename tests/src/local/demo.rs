//! `demo` (`make demo` / `make dev`, through `infra/local.sh`): the whole product on this machine.
//! Starts the Bitrix24 sandbox, `cargo lambda watch` serving the six functions and the SQS poller
//! (the stand-in event source mapping) next to the already running moto_server
//! (`.local/stack.env`); connects a demo tenant through the HTTP API with a locally signed JWT;
//! publishes a realistic stream of lead events with the typed producer; waits until they are
//! synced and prints what happened; then a manager changes a lead in the sandbox and one
//! lead-watch round shows the `lead.changed` event that reaches TeleAgent. Every process it starts runs in its own process group, is
//! listed in `.local/demo.pids`, and is stopped on exit, on Ctrl-C and on SIGTERM.
//!
//! Usage: demo [demo|dev]. `dev` does the same set-up and connect, prints ready-to-paste curl
//! and `cargo lambda invoke` lines, and keeps everything running until Ctrl-C.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shared::events::{Hotness, LeadEvent, LeadEventProducer, LeadStatus};
use shared::tenant::TenantId;
use teleagent_tests::harness::workspace_root;
use teleagent_tests::local::poller;
use teleagent_tests::local::run::{self as local_run, ApiClient};
use teleagent_tests::local::watch_round::{take_changes, watch_round};
use tokio::io::AsyncBufReadExt;

/// A started child and how to find it again.
struct Proc {
    name: &'static str,
    child: tokio::process::Child,
}

/// Every process the demo started, stopped in reverse order.
struct Procs {
    list: Vec<Proc>,
    pid_file: PathBuf,
    /// Files that hold secrets for the children (watch's env file with the JWT secret).
    files: Vec<PathBuf>,
}

impl Procs {
    fn add(&mut self, name: &'static str, child: tokio::process::Child) {
        self.list.push(Proc { name, child });
        let text: String = self
            .list
            .iter()
            .filter_map(|p| p.child.id().map(|id| format!("{} {id}\n", p.name)))
            .collect();
        if let Err(e) = std::fs::write(&self.pid_file, text) {
            eprintln!("demo: cannot write {}: {e}", self.pid_file.display());
        }
    }

    async fn stop_all(&mut self) {
        while let Some(mut p) = self.list.pop() {
            eprintln!("demo: stopping {}", p.name);
            local_run::stop_group(&mut p.child, Duration::from_secs(5)).await;
        }
        let _ = std::fs::remove_file(&self.pid_file);
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum DemoError {
    #[error("{0}")]
    Msg(String),
}

fn err(m: impl std::fmt::Display) -> DemoError {
    DemoError::Msg(m.to_string())
}

fn step(t0: Instant, msg: &str) {
    eprintln!("[{:>6.1}s] {msg}", t0.elapsed().as_secs_f64());
}

/// Starts the sandbox binary and reads its `SANDBOX_URL=` line.
async fn start_sandbox(root: &Path, token: &str, procs: &mut Procs) -> Result<String, DemoError> {
    let bin = root.join("target/debug/bitrix-sandbox");
    let log = std::fs::File::create(root.join(".local/sandbox.log")).map_err(err)?;
    let mut child = tokio::process::Command::new(&bin)
        .args(["--port", "0", "--token", token])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(format!("cannot start {}: {e}", bin.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| err("sandbox: no stdout"))?;
    procs.add("bitrix-sandbox", child);
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .map_err(|_| err("the sandbox did not start within 30 s (see .local/sandbox.log)"))?
        .map_err(err)?
        .ok_or_else(|| err("the sandbox exited (see .local/sandbox.log)"))?;
    line.strip_prefix("SANDBOX_URL=")
        .map(str::to_owned)
        .ok_or_else(|| err(format!("unexpected sandbox output {line:?}")))
}

struct Demo {
    t0: Instant,
    root: PathBuf,
    stack: HashMap<String, String>,
    api: ApiClient,
    sandbox_url: String,
    tenant: String,
    jwt: String,
    port: u16,
    http: reqwest::Client,
}

async fn setup(procs: &mut Procs, t0: Instant) -> Result<Demo, DemoError> {
    let root = workspace_root();
    let stack = local_run::read_env_file(&root.join(".local/stack.env")).map_err(|e| {
        err(format!(
            "no local stack (.local/stack.env: {e}); run infra/local.sh"
        ))
    })?;
    step(
        t0,
        &format!(
            "moto_server at {}",
            stack.get("AWS_ENDPOINT_URL").map_or("?", |s| s)
        ),
    );

    let token = format!("demo-mcp-{}", uuid::Uuid::new_v4().simple());
    let sandbox_url = start_sandbox(&root, &token, procs).await?;
    step(
        t0,
        &format!("Bitrix24 sandbox portal at {sandbox_url} (2 req/s, depth 50)"),
    );

    let secret = format!("local-demo-secret-{}", uuid::Uuid::new_v4().simple());
    let port = local_run::free_port().map_err(err)?;
    let mut env = stack.clone();
    env.insert("JWT_HS256_SECRET".into(), secret.clone());
    env.insert("MCP_ALLOW_LOOPBACK".into(), "true".into());
    env.insert("RUST_LOG".into(), "info".into());
    let watch_log = root.join(".local/watch.log");
    let _ = std::fs::write(&watch_log, "");
    let watch = local_run::spawn_watch(&root, port, &env, &watch_log)
        .map_err(|e| err(format!("cannot start cargo lambda watch: {e}")))?;
    procs.add("cargo-lambda-watch", watch);
    procs
        .files
        .push(root.join(format!(".local/watch-{port}.env")));
    step(
        t0,
        &format!(
            "cargo lambda watch on http://127.0.0.1:{port}: compiling the six functions \
             (the first time takes minutes on 2 cores; log: .local/watch.log)"
        ),
    );
    let api = ApiClient::new(&format!("http://127.0.0.1:{port}"));
    api.wait_ready(Duration::from_secs(1200), |f, took| {
        step(t0, &format!("  {f} is up ({:.0} s)", took.as_secs_f64()));
    })
    .await
    .map_err(|e| err(format!("{e} (see .local/watch.log)")))?;

    let poller_log = std::fs::File::create(root.join(".local/poller.log")).map_err(err)?;
    let poller = tokio::process::Command::new(root.join("target/debug/sqs-poller"))
        .args(["--invoke", &format!("http://127.0.0.1:{port}")])
        .envs(&stack)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(poller_log)
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| err(format!("cannot start sqs-poller: {e}")))?;
    procs.add("sqs-poller", poller);
    step(
        t0,
        "SQS poller feeding lead-sync (batches of 10; log: .local/poller.log)",
    );

    let tenant = format!("demo-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let jwt = local_run::sign_jwt(&secret, &tenant, Duration::from_secs(12 * 3600)).map_err(err)?;
    let demo = Demo {
        t0,
        root,
        stack,
        api,
        sandbox_url,
        tenant,
        jwt,
        port,
        http: reqwest::Client::new(),
    };

    // A customer the portal already knows (a website form), under another spelling of the phone.
    demo.admin_post(
        "leads",
        json!({"fields": {"TITLE": "Website form: Dilnoza", "NAME": "Dilnoza", "SOURCE_ID": "WEB",
                          "PHONE": [{"VALUE": "+998 (93) 555-12-34", "VALUE_TYPE": "WORK"}]}}),
    )
    .await?;
    step(
        t0,
        "portal seeded with one lead made elsewhere: Dilnoza, +998 (93) 555-12-34",
    );

    let (code, answer) = demo
        .api
        .call(
            "connect",
            Some(&demo.jwt),
            Some(json!({"mcp_token": token, "mcp_url": format!("{}/mcp/", demo.sandbox_url)})),
        )
        .await
        .map_err(err)?;
    step(
        t0,
        &format!("POST connect as tenant {} -> {code} {answer}", demo.tenant),
    );
    if code != 200 {
        return Err(err("connect failed; see .local/watch.log"));
    }
    Ok(demo)
}

impl Demo {
    async fn admin_post(&self, path: &str, body: Value) -> Result<Value, DemoError> {
        let r = self
            .http
            .post(format!("{}/admin/{path}", self.sandbox_url))
            .json(&body)
            .send()
            .await
            .map_err(err)?;
        r.json().await.map_err(err)
    }

    async fn admin_get(&self, path: &str) -> Result<Value, DemoError> {
        let r = self
            .http
            .get(format!("{}/admin/{path}", self.sandbox_url))
            .send()
            .await
            .map_err(err)?;
        r.json().await.map_err(err)
    }

    fn sqs(&self) -> aws_sdk_sqs::Client {
        let creds = aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "demo");
        let conf = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new("us-east-1"))
            .endpoint_url(
                self.stack
                    .get("AWS_ENDPOINT_URL")
                    .cloned()
                    .unwrap_or_default(),
            )
            .credentials_provider(creds)
            .build();
        aws_sdk_sqs::Client::from_conf(conf)
    }

    fn queue(&self, key: &str) -> Result<String, DemoError> {
        self.stack
            .get(key)
            .cloned()
            .ok_or_else(|| err(format!("{key} missing from .local/stack.env")))
    }

    /// The stream: a new customer who warms up over a conversation, a returning customer, the
    /// customer the portal already had (phone shared the Telegram way: no '+'), and one invalid
    /// event (score 150) that must go to the dead-letter queue.
    async fn publish(&self) -> Result<usize, DemoError> {
        let sqs = self.sqs();
        let queue = self.queue("LEAD_QUEUE_URL")?;
        let producer = LeadEventProducer::new(sqs.clone(), queue.clone());
        let tenant = TenantId::parse(&self.tenant).map_err(err)?;
        let base = time::OffsetDateTime::now_utc() - time::Duration::minutes(30);
        let mut events = Vec::new();
        let mut ev = |cust: &str,
                      name: &str,
                      phone: Option<&str>,
                      mins: i64,
                      score: u8,
                      hot: Hotness,
                      status: LeadStatus,
                      notes: Option<&str>,
                      product: &str| {
            let mut e = LeadEvent::new(tenant.clone(), cust, score);
            e.occurred_at = base + time::Duration::minutes(mins);
            e.customer.name = Some(name.into());
            e.customer.phone = phone.map(Into::into);
            e.customer.username = Some(name.to_lowercase());
            e.lead.intent = Some("buy".into());
            e.lead.hotness = Some(hot);
            e.lead.status = Some(status);
            e.lead.fields_collected.product = Some(product.into());
            e.lead.fields_collected.budget = Some("$1500".into());
            e.lead.fields_collected.timeline = Some("this month".into());
            e.lead.notes = notes.map(Into::into);
            events.push(e);
        };
        ev(
            "tg:1001",
            "Ann",
            Some("+998901234567"),
            0,
            35,
            Hotness::Cold,
            LeadStatus::New,
            Some("Asked about prices"),
            "solar panels 5 kW",
        );
        ev(
            "tg:1002",
            "Bekzod",
            Some("998935550000"),
            1,
            60,
            Hotness::Warm,
            LeadStatus::Contacted,
            Some("Returning customer, bought an inverter last year"),
            "battery pack",
        );
        ev(
            "tg:1003",
            "Dilnoza",
            Some("998935551234"),
            2,
            70,
            Hotness::Warm,
            LeadStatus::Contacted,
            Some("Filled the website form last week"),
            "solar panels 3 kW",
        );
        ev(
            "tg:1001",
            "Ann",
            Some("+998901234567"),
            5,
            62,
            Hotness::Warm,
            LeadStatus::Contacted,
            Some("Wants installation in May"),
            "solar panels 5 kW",
        );
        ev(
            "tg:1002",
            "Bekzod",
            Some("998935550000"),
            6,
            60,
            Hotness::Warm,
            LeadStatus::Contacted,
            Some("Returning customer, bought an inverter last year"),
            "battery pack",
        );
        ev(
            "tg:1001",
            "Ann",
            Some("+998901234567"),
            9,
            88,
            Hotness::Hot,
            LeadStatus::Qualified,
            Some("Budget confirmed; call her tomorrow"),
            "solar panels 5 kW",
        );
        ev(
            "tg:1003",
            "Dilnoza",
            Some("998935551234"),
            10,
            85,
            Hotness::Hot,
            LeadStatus::Qualified,
            None,
            "solar panels 3 kW",
        );
        for e in &events {
            producer.send(e).await.map_err(err)?;
            step(
                self.t0,
                &format!(
                    "  published {} {:<8} score {:>3} {:<5} {:<9} {}",
                    e.customer.id,
                    e.customer.name.as_deref().unwrap_or(""),
                    e.lead.score,
                    e.lead.hotness.map_or("", |h| h.as_str()),
                    e.lead.status.map_or("", |s| s.as_str()),
                    e.lead
                        .notes
                        .as_deref()
                        .map(|n| format!("\"{n}\""))
                        .unwrap_or_default()
                ),
            );
        }
        // The invalid one is sent raw (the typed producer refuses to build it).
        let mut bad = events[0].to_value();
        bad["event_id"] = json!(uuid::Uuid::new_v4().to_string());
        bad["customer"]["id"] = json!("tg:1004");
        bad["lead"]["score"] = json!(150);
        sqs.send_message()
            .queue_url(&queue)
            .message_body(bad.to_string())
            .message_group_id(format!("{}:tg:1004", self.tenant))
            .message_deduplication_id(bad["event_id"].as_str().unwrap_or("bad"))
            .send()
            .await
            .map_err(|e| err(format!("{e:?}")))?;
        step(
            self.t0,
            "  published tg:1004 with score 150 (invalid: expect the dead-letter queue)",
        );
        Ok(events.len() + 1)
    }

    async fn wait_synced(&self) -> Result<(), DemoError> {
        let sqs = self.sqs();
        let queue = self.queue("LEAD_QUEUE_URL")?;
        let t0 = self.t0;
        let mut last = u64::MAX;
        let drained = poller::wait_drained(
            &sqs,
            &queue,
            Duration::from_secs(3),
            Duration::from_secs(600),
            |left| {
                if left != last {
                    step(
                        t0,
                        &format!("  waiting: {left} message(s) in the lead queue"),
                    );
                    last = left;
                }
            },
        )
        .await
        .map_err(err)?;
        if !drained {
            return Err(err(
                "events still queued after 10 minutes; see .local/poller.log",
            ));
        }
        step(
            self.t0,
            "lead queue drained: every event synced, parked or dead-lettered",
        );
        Ok(())
    }

    async fn report(&self) -> Result<(), DemoError> {
        println!("\n=== Bitrix24 portal (sandbox): leads ===");
        let leads = self.admin_get("leads").await?;
        for l in leads.as_array().into_iter().flatten() {
            let phones: Vec<&str> = l["PHONE"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["VALUE"].as_str())
                .collect();
            println!(
                "#{:<3} {:<28} status {:<12} source {:<9} phone {:<22} origin {}",
                l["ID"].as_str().unwrap_or("?"),
                l["TITLE"].as_str().unwrap_or(""),
                l["STATUS_ID"].as_str().unwrap_or(""),
                l["SOURCE_ID"].as_str().unwrap_or(""),
                phones.join(", "),
                l["ORIGIN_ID"].as_str().unwrap_or("-"),
            );
            if let Some(c) = l["COMMENTS"].as_str().filter(|c| !c.is_empty()) {
                for line in c.lines().take(8) {
                    println!("      | {line}");
                }
            }
            if let Some(id) = l["ID"].as_str()
                && let Ok(comments) = self.admin_get(&format!("leads/{id}/comments")).await
            {
                for c in comments.as_array().into_iter().flatten() {
                    println!("      timeline: {}", c.as_str().unwrap_or(&c.to_string()));
                }
            }
        }
        println!("\n=== GET /api/bitrix-mcp/status ===");
        let (code, status) = self
            .api
            .call("status", Some(&self.jwt), None)
            .await
            .map_err(err)?;
        println!(
            "{code} {}",
            serde_json::to_string_pretty(&status).unwrap_or_default()
        );
        println!("\n=== Bitrix24 calls (sandbox counters) ===");
        let calls = self.admin_get("calls").await?;
        println!(
            "tools/call {}  initialize {}  tools/list {}  HTTP requests {}",
            calls["tools_call"], calls["initialize"], calls["tools_list"], calls["total_http"]
        );
        println!("by REST method: {}", calls["by_method"]);
        println!("by outcome:     {}", calls["by_outcome"]);
        println!("\n=== dead-letter queue (this tenant) ===");
        let dlq = self.queue("DEAD_LETTER_QUEUE_URL")?;
        let bodies = poller::peek_all(&self.sqs(), &dlq).await.map_err(err)?;
        let ours: Vec<&poller::Peeked> = bodies
            .iter()
            .filter(|p| p.body.contains(&self.tenant))
            .collect();
        if ours.is_empty() {
            println!("(empty)");
        }
        for p in ours {
            let short: String = p.body.chars().take(120).collect();
            println!(
                "- reason: {}",
                p.reason
                    .as_deref()
                    .unwrap_or("(moved by the redrive policy)")
            );
            println!("  body:   {short}...");
        }
        self.print_metric_totals();
        Ok(())
    }

    /// The EMF metric lines the functions wrote during this run (in watch's log), added up per
    /// function: what CloudWatch would show for it.
    fn print_metric_totals(&self) {
        println!("\n=== metrics the functions wrote (EMF lines in .local/watch.log, totals) ===");
        let text = std::fs::read_to_string(self.root.join(".local/watch.log")).unwrap_or_default();
        for f in shared::metrics::function::ALL {
            let mut t = shared::metrics::Totals::default();
            t.add_lines(&text, Some(f));
            if t.sums.is_empty() {
                continue;
            }
            let line: Vec<String> = t
                .sums
                .iter()
                .map(|(k, v)| match t.max.get(k) {
                    Some(max) => format!("{k} {v} samples (max {max:.0} ms)"),
                    None => format!("{k} {v}"),
                })
                .collect();
            println!("{f}: {}", line.join(", "));
        }
        println!(
            "(ConnectResults.unauthenticated: the start-up readiness probes, which call each route \
             without a JWT)"
        );
    }

    /// API Gateway events for this tenant (its claims) and, for connect, this sandbox's URL and
    /// a token it knows, so `cargo lambda invoke` answers as the curl lines do. Written next to
    /// the stack's state; returns each route's file.
    fn write_dev_events(&self, token: &str) -> Result<Vec<(&'static str, PathBuf)>, DemoError> {
        let mut out = Vec::new();
        for f in ["status", "test", "connect", "disconnect"] {
            let sample = self.root.join(format!("events/{f}.json"));
            let text = std::fs::read_to_string(&sample).map_err(err)?;
            let mut ev: Value = serde_json::from_str(&text).map_err(err)?;
            ev["requestContext"]["authorizer"]["jwt"]["claims"]["tenant_id"] = json!(self.tenant);
            if f == "connect" {
                let body =
                    json!({"mcp_token": token, "mcp_url": format!("{}/mcp/", self.sandbox_url)});
                ev["body"] = json!(body.to_string());
            }
            let file = self.root.join(format!(".local/dev-{f}.json"));
            std::fs::write(&file, ev.to_string()).map_err(err)?;
            out.push((f, file));
        }
        Ok(out)
    }

    /// Change watching: a manager junks one of the tenant's leads and takes it over in the
    /// sandbox's manager console; one lead-watch round (the schedule's invocation, then the
    /// watch queue's mapping, both through cargo lambda watch) puts the change on the
    /// `lead.changed` queue, where TeleAgent's chat pipeline would read it.
    async fn managers_change(&self) -> Result<(), DemoError> {
        let base = format!("http://127.0.0.1:{}", self.port);
        let sqs = self.sqs();
        let watch = self.queue("WATCH_QUEUE_URL")?;
        let changes = self.queue("LEAD_CHANGES_QUEUE_URL")?;
        let ours = |all: Vec<(Value, String)>| -> Vec<Value> {
            all.into_iter()
                .map(|(e, _)| e)
                .filter(|e| e["tenant_id"] == self.tenant.as_str())
                .collect()
        };
        watch_round(&base, &sqs, &watch).await.map_err(err)?;
        let first = ours(take_changes(&sqs, &changes).await.map_err(err)?);
        step(
            self.t0,
            &format!(
                "lead-watch round 1: {} change(s) (the connector's own writes are not echoed)",
                first.len()
            ),
        );
        let prefix = format!("{}:", self.tenant);
        let leads = self.admin_get("leads").await?;
        let Some(lead) = leads.as_array().into_iter().flatten().find(|l| {
            l["ORIGIN_ID"]
                .as_str()
                .is_some_and(|o| o.starts_with(&prefix))
        }) else {
            return Err(err("no lead of the demo tenant to change"));
        };
        let id = lead["ID"].as_str().unwrap_or_default().to_owned();
        self.admin_post(
            &format!("leads/{id}/manager"),
            json!({"fields": {"STATUS_ID": "JUNK", "ASSIGNED_BY_ID": "7"}}),
        )
        .await?;
        step(
            self.t0,
            &format!(
                "a manager junks lead #{id} ({}) and takes it over (sandbox manager console)",
                lead["TITLE"].as_str().unwrap_or_default()
            ),
        );
        watch_round(&base, &sqs, &watch).await.map_err(err)?;
        let got = ours(take_changes(&sqs, &changes).await.map_err(err)?);
        println!("\n=== lead.changed events (the outbound queue TeleAgent reads) ===");
        if got.is_empty() {
            println!("(none: see .local/watch.log)");
        }
        for e in &got {
            println!("{}", serde_json::to_string_pretty(e).unwrap_or_default());
        }
        if got.len() != 1 {
            return Err(err(format!(
                "expected one lead.changed event, got {}",
                got.len()
            )));
        }
        Ok(())
    }

    /// `make dev`: everything a developer pastes next. A second sandbox token is issued so the
    /// connect line works as printed; lead-sync gets a ready SQS event for this tenant.
    async fn print_dev_lines(&self) -> Result<(), DemoError> {
        let base = format!("http://127.0.0.1:{}", self.port);
        let token = self.admin_post("tokens", json!({"admin": true})).await?;
        let token = token["token"].as_str().unwrap_or_default().to_owned();
        let tenant = TenantId::parse(&self.tenant).map_err(err)?;
        let mut e = LeadEvent::new(tenant, "tg:2001", 77);
        e.customer.name = Some("Jamshid".into());
        e.customer.phone = Some("998946667788".into());
        e.lead.notes = Some("Sent from make dev".into());
        let sqs_event = json!({"Records": [{
            "messageId": uuid::Uuid::new_v4().to_string(),
            "receiptHandle": "dev-receipt-handle",
            "body": e.to_json(),
            "attributes": {"ApproximateReceiveCount": "1", "MessageGroupId": e.group_id(),
                           "SentTimestamp": "0", "SenderId": "dev", "ApproximateFirstReceiveTimestamp": "0"},
            "messageAttributes": {}, "md5OfBody": "", "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:teleagent-leads-local.fifo",
            "awsRegion": "us-east-1"}]});
        let event_file = self.root.join(".local/dev-sqs-event.json");
        std::fs::write(&event_file, sqs_event.to_string()).map_err(err)?;
        let venv = self.root.join(".venv/bin");
        println!("\n=== the stack is running; paste these in another terminal ===");
        println!("cd {} && source .local/stack.env", self.root.display());
        println!(
            "export JWT='{}'   # tenant {}, valid 12 h",
            self.jwt, self.tenant
        );
        println!(
            "curl -s -H \"Authorization: Bearer $JWT\" {base}/lambda-url/bitrix-status/api/bitrix-mcp/status"
        );
        println!(
            "curl -s -X POST -H \"Authorization: Bearer $JWT\" {base}/lambda-url/bitrix-test/api/bitrix-mcp/test"
        );
        println!(
            "curl -s -X POST -H \"Authorization: Bearer $JWT\" -H 'content-type: application/json' \\\n  -d '{{\"mcp_token\":\"{token}\",\"mcp_url\":\"{}/mcp/\"}}' \\\n  {base}/lambda-url/bitrix-connect/api/bitrix-mcp/connect",
            self.sandbox_url
        );
        let invoke = |function: &str, file: &Path| {
            println!(
                "PATH=\"{}:$PATH\" cargo lambda invoke --invoke-address 127.0.0.1 --invoke-port {} {function} --data-file {}",
                venv.display(),
                self.port,
                file.display()
            );
        };
        println!(
            "# the same routes as API Gateway events for this tenant (its claims in the file; connect with this sandbox):"
        );
        let events = self.write_dev_events(&token)?;
        for (f, file) in events.iter().filter(|(f, _)| *f != "disconnect") {
            invoke(&format!("bitrix-{f}"), file);
        }
        println!("# one lead event straight into lead-sync (an SQS event for this tenant):");
        invoke("lead-sync", &event_file);
        println!("# a manager's change in the portal, then lead-watch's scheduled run (fan-out):");
        println!(
            "curl -s -X POST -H 'content-type: application/json' -d '{{\"fields\":{{\"STATUS_ID\":\"JUNK\"}}}}' {}/admin/leads/1/manager",
            self.sandbox_url
        );
        invoke("lead-watch", &self.root.join("events/watch.json"));
        println!(
            "# (the work items wait on $WATCH_QUEUE_URL; `target/debug/sqs-poller --queue-url $WATCH_QUEUE_URL --function lead-watch --invoke {base}` delivers them; the changes arrive on $LEAD_CHANGES_QUEUE_URL)"
        );
        println!(
            "curl -s {}/admin/leads   # the portal's leads",
            self.sandbox_url
        );
        println!(
            "curl -s {}/admin/calls   # Bitrix24 calls made",
            self.sandbox_url
        );
        println!(
            "# last: forget the token (lead-sync then skips this tenant's events; the connect lines above connect again)"
        );
        println!(
            "curl -s -X POST -H \"Authorization: Bearer $JWT\" {base}/lambda-url/bitrix-disconnect/api/bitrix-mcp/disconnect"
        );
        for (f, file) in events.iter().filter(|(f, _)| *f == "disconnect") {
            invoke(&format!("bitrix-{f}"), file);
        }
        println!(
            "\nlogs: .local/watch.log (functions), .local/poller.log, .local/sandbox.log. Ctrl-C stops everything."
        );
        Ok(())
    }
}

async fn run(mode: &str, procs: &mut Procs) -> Result<(), DemoError> {
    let t0 = Instant::now();
    let demo = setup(procs, t0).await?;
    if mode == "dev" {
        demo.print_dev_lines().await?;
        std::future::pending::<()>().await;
        return Ok(());
    }
    step(t0, "publishing lead events with the producer:");
    let n = demo.publish().await?;
    step(
        t0,
        &format!("{n} events published; lead-sync is syncing them"),
    );
    demo.wait_synced().await?;
    demo.report().await?;
    demo.managers_change().await?;
    println!(
        "\n(done in {:.0} s; stopping everything)",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "demo".into());
    if mode != "demo" && mode != "dev" {
        eprintln!("usage: demo [demo|dev]");
        return ExitCode::from(2);
    }
    let mut procs = Procs {
        list: Vec::new(),
        pid_file: workspace_root().join(".local/demo.pids"),
        files: Vec::new(),
    };
    let result = tokio::select! {
        r = run(&mode, &mut procs) => Some(r),
        () = teleagent_tests::local::run::shutdown_signal() => None,
    };
    procs.stop_all().await;
    match result {
        Some(Ok(())) => ExitCode::SUCCESS,
        Some(Err(e)) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
        None => {
            eprintln!("demo: interrupted; everything it started is stopped");
            ExitCode::from(130)
        }
    }
}
