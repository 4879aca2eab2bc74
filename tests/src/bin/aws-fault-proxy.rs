//! `aws-fault-proxy`: the AWS fault-injecting proxy as a process, for benchmark runs and for
//! humans. Prints `AWS_FAULT_PROXY_URL=http://127.0.0.1:PORT` on stdout once it accepts
//! connections (the only stdout line, so scripts can read it), logs to stderr, and runs until
//! SIGINT or SIGTERM. Point the SDK (`AWS_ENDPOINT_URL`) at that URL; change the faults with
//! `curl -X POST $AWS_FAULT_PROXY_URL/__faults -d @plan.json`, read counters at `/__faults/stats`.
//!
//! Usage: `aws-fault-proxy [--upstream URL] [--port N] [--plan JSON|@FILE]`
//! `--upstream` defaults to `AWS_ENDPOINT_URL` (source `.local/stack.env` first).

use std::io::Write;
use std::process::ExitCode;

use teleagent_tests::aws_faults::{AwsFaultProxy, FaultPlan};

#[derive(Debug, thiserror::Error)]
enum ArgError {
    #[error("{0} needs a value")]
    Missing(String),
    #[error("bad value {value:?} for {flag}")]
    Bad { flag: String, value: String },
    #[error("bad fault plan: {0}")]
    Plan(String),
    #[error("no --upstream and no AWS_ENDPOINT_URL")]
    NoUpstream,
    #[error("unknown argument {0:?} (see the usage in the source header)")]
    Unknown(String),
}

#[derive(Debug)]
struct Args {
    upstream: String,
    port: u16,
    plan: FaultPlan,
}

fn parse_plan(v: &str) -> Result<FaultPlan, ArgError> {
    let text = match v.strip_prefix('@') {
        Some(path) => {
            std::fs::read_to_string(path).map_err(|e| ArgError::Plan(format!("{path}: {e}")))?
        }
        None => v.to_owned(),
    };
    serde_json::from_str(&text).map_err(|e| ArgError::Plan(e.to_string()))
}

fn parse_args(
    mut it: impl Iterator<Item = String>,
    env_upstream: Option<String>,
) -> Result<Args, ArgError> {
    let (mut upstream, mut port, mut plan) = (env_upstream, 0, FaultPlan::none());
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| ArgError::Missing(flag.clone()));
        match flag.as_str() {
            "--upstream" => upstream = Some(value()?),
            "--port" => {
                let v = value()?;
                port = v.parse().map_err(|_| ArgError::Bad {
                    flag: flag.clone(),
                    value: v.clone(),
                })?;
            }
            "--plan" => plan = parse_plan(&value()?)?,
            _ => return Err(ArgError::Unknown(flag)),
        }
    }
    Ok(Args {
        upstream: upstream.ok_or(ArgError::NoUpstream)?,
        port,
        plan,
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = match parse_args(
        std::env::args().skip(1),
        std::env::var("AWS_ENDPOINT_URL").ok(),
    ) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("aws-fault-proxy: {e}");
            return ExitCode::from(2);
        }
    };
    let proxy = match AwsFaultProxy::start_on(&args.upstream, args.port).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("aws-fault-proxy: {e}");
            return ExitCode::FAILURE;
        }
    };
    proxy.set_plan(args.plan);
    let mut out = std::io::stdout().lock();
    if writeln!(out, "AWS_FAULT_PROXY_URL={}", proxy.endpoint())
        .and_then(|()| out.flush())
        .is_err()
    {
        // Whoever started us can no longer read the URL; nothing useful left to do.
        return ExitCode::FAILURE;
    }
    drop(out);
    teleagent_tests::local::run::shutdown_signal().await;
    let stats = proxy.stats();
    tracing::info!(
        requests = stats.requests,
        forwarded = stats.forwarded,
        injected = stats.injected,
        "aws fault proxy stopping"
    );
    drop(proxy);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &str, env: Option<&str>) -> Result<Args, ArgError> {
        parse_args(
            args.split_whitespace().map(str::to_owned),
            env.map(str::to_owned),
        )
    }

    #[test]
    fn parses_flags_and_falls_back_to_the_environment() {
        let a = parse(
            r#"--port 9001 --plan {"rules":[{"fault":"throttle","share":0.2}],"seed":1}"#,
            Some("http://127.0.0.1:5000"),
        )
        .unwrap();
        assert_eq!(
            (a.upstream.as_str(), a.port),
            ("http://127.0.0.1:5000", 9001)
        );
        assert_eq!(a.plan.rules.len(), 1);
        assert_eq!(a.plan.rules[0].service, "*");
        let a = parse("--upstream http://127.0.0.1:1", Some("http://x:2")).unwrap();
        assert_eq!(a.upstream, "http://127.0.0.1:1");
        assert!(matches!(parse("", None), Err(ArgError::NoUpstream)));
        assert!(matches!(
            parse("--port x", Some("http://a:1")),
            Err(ArgError::Bad { .. })
        ));
        assert!(matches!(
            parse("--bogus", Some("http://a:1")),
            Err(ArgError::Unknown(_))
        ));
    }
}
