//! `sqs-poller`: the local stand-in for Lambda's SQS event source mapping, as a process (the demo
//! and `make dev` run it next to `cargo lambda watch`). The logic is `teleagent_tests::local::poller`.
//!
//! Usage: sqs-poller [--queue-url URL] [--invoke http://127.0.0.1:9000] [--function lead-sync]
//!   [--batch-size 10] [--concurrency 1] [--wait 1]
//! The queue defaults to `LEAD_QUEUE_URL`; AWS settings come from the usual environment
//! (`AWS_ENDPOINT_URL` etc., e.g. `source .local/stack.env`). Logs progress to stderr once a few
//! seconds when something changed; runs until SIGINT or SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use teleagent_tests::local::poller::{HttpInvoker, Poller, PollerOptions};

struct Args {
    queue_url: Option<String>,
    invoke: String,
    function: String,
    opts: PollerOptions,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut a = Args {
        queue_url: std::env::var("LEAD_QUEUE_URL").ok(),
        invoke: "http://127.0.0.1:9000".into(),
        function: "lead-sync".into(),
        opts: PollerOptions {
            region: std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".into()),
            ..PollerOptions::default()
        },
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let num = |v: String| v.parse::<i32>().map_err(|_| format!("bad number {v:?}"));
        match flag.as_str() {
            "--queue-url" => a.queue_url = Some(value()?),
            "--invoke" => a.invoke = value()?,
            "--function" => a.function = value()?,
            "--batch-size" => a.opts.batch_size = num(value()?)?,
            "--wait" => a.opts.wait_time_secs = num(value()?)?,
            "--concurrency" => {
                a.opts.concurrency = usize::try_from(num(value()?)?).map_err(|e| e.to_string())?
            }
            other => {
                return Err(format!(
                    "unknown argument {other:?} (see the source header)"
                ));
            }
        }
    }
    Ok(a)
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sqs-poller: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(queue_url) = args.queue_url else {
        eprintln!("sqs-poller: no queue: pass --queue-url or set LEAD_QUEUE_URL");
        return ExitCode::from(2);
    };
    let sdk = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let invoker = HttpInvoker::new(&args.invoke, &args.function, Duration::from_secs(900));
    let poller = match Poller::new(sqs, queue_url.clone(), invoker, args.opts).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sqs-poller: {e}");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        queue = %queue_url,
        function = %args.function,
        dlq = poller.dead_letter_queue_url().unwrap_or("-"),
        "polling"
    );
    let stats = poller.stats();
    let progress = async {
        let mut last = stats.snapshot();
        loop {
            tokio::time::sleep(Duration::from_secs(3)).await;
            let now = stats.snapshot();
            if now.messages != last.messages || now.redriven != last.redriven {
                tracing::info!(
                    received = now.messages,
                    deleted = now.deleted,
                    failed_items = now.items_failed,
                    invoke_errors = now.invoke_errors,
                    redriven = now.redriven,
                    "poller progress"
                );
                last = now;
            }
        }
    };
    tokio::select! {
        () = poller.run(teleagent_tests::local::run::shutdown_signal()) => {}
        () = progress => {}
    }
    tracing::info!(stats = ?stats.snapshot(), "poller stopped");
    ExitCode::SUCCESS
}
