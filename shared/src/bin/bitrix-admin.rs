//! `bitrix-admin`: the operator's command. Wiring only; the logic is `shared::admin`.
//!
//! ```text
//! bitrix-admin status --tenant ID            integration, parked events, recent audit lines
//! bitrix-admin redrive [--tenant ID] [--reason TEXT] [--dry-run]
//!                                            dead-letter queue -> lead queue
//! bitrix-admin replay --tenant ID            parked events -> lead queue
//! ```
//! Configured by the functions' environment: `TABLE_NAME`, `LEAD_QUEUE_URL`,
//! `DEAD_LETTER_QUEUE_URL`, and `AWS_ENDPOINT_URL` for the local stack. Exits 1 when something
//! could not be moved, 2 on a usage or configuration error.

use std::process::ExitCode;

use shared::admin::{self, RedriveFilter};
use shared::config::Config;
use shared::store::Store;
use shared::tenant::TenantId;

const USAGE: &str = "usage: bitrix-admin status --tenant ID | redrive [--tenant ID] [--reason TEXT] [--dry-run] | replay --tenant ID";

struct Args {
    verb: String,
    tenant: Option<TenantId>,
    reason: Option<String>,
    dry_run: bool,
}

fn parse(args: &[String]) -> Result<Args, String> {
    let mut it = args.iter();
    let verb = it.next().ok_or(USAGE)?.clone();
    let mut a = Args {
        verb,
        tenant: None,
        reason: None,
        dry_run: false,
    };
    while let Some(flag) = it.next() {
        match flag.as_str() {
            "--tenant" => {
                let v = it.next().ok_or("--tenant needs a value")?;
                a.tenant = Some(TenantId::parse(v).map_err(|e| e.to_string())?);
            }
            "--reason" => a.reason = Some(it.next().ok_or("--reason needs a value")?.clone()),
            "--dry-run" => a.dry_run = true,
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn need<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, String> {
    v.as_deref().ok_or_else(|| format!("{name} is not set"))
}

async fn run(a: Args, cfg: Config) -> Result<bool, String> {
    // A workstation tool: the SDK's full default chain (profiles, assume-role, web identity).
    let aws = shared::aws::AwsClients::from_sdk_config(&shared::aws::sdk_config().await);
    let store = Store::new(aws.dynamodb.clone(), cfg.table_name.clone());
    match a.verb.as_str() {
        "status" => {
            let t = a.tenant.ok_or("status needs --tenant")?;
            let v = admin::tenant_status(&store, &t, 20)
                .await
                .map_err(|e| e.to_string())?;
            println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
            Ok(true)
        }
        "redrive" => {
            let dlq = need(&cfg.dead_letter_queue_url, "DEAD_LETTER_QUEUE_URL")?;
            let queue = need(&cfg.lead_queue_url, "LEAD_QUEUE_URL")?;
            let filter = RedriveFilter {
                tenant: a.tenant,
                reason: a.reason,
                dry_run: a.dry_run,
            };
            let r = admin::redrive(&aws.sqs, dlq, queue, &filter)
                .await
                .map_err(|e| e.to_string())?;
            for line in &r.lines {
                println!("{line}");
            }
            let verb = if filter.dry_run {
                "would move"
            } else {
                "moved"
            };
            println!(
                "{verb} {}, left (not matching) {}, failed {}",
                r.moved, r.skipped, r.failed
            );
            Ok(r.failed == 0)
        }
        "replay" => {
            let t = a.tenant.ok_or("replay needs --tenant")?;
            let queue = need(&cfg.lead_queue_url, "LEAD_QUEUE_URL")?;
            let n = admin::replay_tenant(&store, &aws.sqs, queue, &t)
                .await
                .map_err(|e| e.to_string())?;
            println!("replayed {n} parked events of {t}");
            Ok(true)
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a = match parse(&args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let cfg = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match run(a, cfg).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    }
}
