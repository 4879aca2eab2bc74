//! `bitrix-sandbox`: the Bitrix24 sandbox portal as a process, for the demo and for humans.
//! Prints `SANDBOX_URL=http://127.0.0.1:PORT` on stdout once it accepts connections (the only
//! stdout line, so scripts can read it), logs to stderr, and runs until SIGINT or SIGTERM.
//!
//! Usage: bitrix-sandbox [--port N] [--shape lead-tools|rest|crm-entity] [--catalogue NAME]
//!   [--answer json|sse]
//!   [--style bare|envelope] [--rate R] [--depth D] [--token T]... [--user-token T]...
//!   [--no-sessions] [--protocol-version V] [--telegram-source] [--qualified-status]
//!   [--teleagent-fields] [--plain-text-errors]
//! `--token` pre-issues an admin token (whoever gets a connection token for a demo portal is its
//! admin); `--user-token` a non-admin one. `--catalogue` serves a real server's catalogue from
//! tests/fixtures/catalogues instead of `--shape` (a file stem such as `yzel-bitrix24`, or a short
//! name: leosozza, yzel, aa-blinov, bit2beat, kostikpenzin).

use std::io::Write;
use std::process::ExitCode;

use teleagent_tests::sandbox::{
    AnswerMode, AnswerStyle, Catalogue, Sandbox, SandboxConfig, ToolShape,
};

#[derive(Debug, thiserror::Error)]
enum ArgError {
    #[error("{0} needs a value")]
    Missing(String),
    #[error("bad value {value:?} for {flag}")]
    Bad { flag: String, value: String },
    #[error("unknown argument {0:?} (see the usage in the source header)")]
    Unknown(String),
}

struct Args {
    port: u16,
    cfg: SandboxConfig,
    admin_tokens: Vec<String>,
    user_tokens: Vec<String>,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, ArgError> {
    let mut a = Args {
        port: 0,
        cfg: SandboxConfig::default(),
        admin_tokens: Vec::new(),
        user_tokens: Vec::new(),
    };
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| ArgError::Missing(flag.clone()));
        let bad = |v: &str| ArgError::Bad {
            flag: flag.clone(),
            value: v.to_owned(),
        };
        match flag.as_str() {
            "--port" => {
                let v = value()?;
                a.port = v.parse().map_err(|_| bad(&v))?;
            }
            "--shape" => {
                let v = value()?;
                a.cfg.shape = match v.as_str() {
                    "lead-tools" => ToolShape::LeadTools,
                    "rest" | "rest-method" => ToolShape::RestMethod,
                    "crm-entity" => ToolShape::CrmEntity,
                    _ => return Err(bad(&v)),
                };
            }
            "--catalogue" => {
                let v = value()?;
                a.cfg.catalogue = Some(Catalogue::parse(&v).ok_or_else(|| bad(&v))?);
            }
            "--answer" => {
                let v = value()?;
                a.cfg.answer_mode = match v.as_str() {
                    "json" => AnswerMode::Json,
                    "sse" => AnswerMode::Sse,
                    _ => return Err(bad(&v)),
                };
            }
            "--style" => {
                let v = value()?;
                a.cfg.answer_style = match v.as_str() {
                    "bare" => AnswerStyle::Bare,
                    "envelope" => AnswerStyle::Envelope,
                    _ => return Err(bad(&v)),
                };
            }
            "--rate" => {
                let v = value()?;
                a.cfg.bucket_rate_per_sec = v
                    .parse()
                    .ok()
                    .filter(|r: &f64| r.is_finite() && *r >= 0.0)
                    .ok_or_else(|| bad(&v))?;
            }
            "--depth" => {
                let v = value()?;
                a.cfg.bucket_depth = v.parse().map_err(|_| bad(&v))?;
            }
            "--token" => a.admin_tokens.push(value()?),
            "--user-token" => a.user_tokens.push(value()?),
            "--protocol-version" => a.cfg.protocol_version = Some(value()?),
            "--no-sessions" => a.cfg.sessions = false,
            "--telegram-source" => a.cfg.has_telegram_source = true,
            "--qualified-status" => a.cfg.has_qualified_status = true,
            "--teleagent-fields" => a.cfg.has_teleagent_user_fields = true,
            "--plain-text-errors" => a.cfg.plain_text_errors = true,
            _ => return Err(ArgError::Unknown(flag)),
        }
    }
    Ok(a)
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
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bitrix-sandbox: {e}");
            return ExitCode::from(2);
        }
    };
    let sandbox = match Sandbox::try_start(args.cfg, args.port).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bitrix-sandbox: {e}");
            return ExitCode::FAILURE;
        }
    };
    for t in &args.admin_tokens {
        sandbox.register_token(t, true);
    }
    for t in &args.user_tokens {
        sandbox.register_token(t, false);
    }
    let mut out = std::io::stdout().lock();
    if writeln!(out, "SANDBOX_URL={}", sandbox.base_url())
        .and_then(|()| out.flush())
        .is_err()
    {
        // Whoever started us can no longer read the URL; nothing useful left to do.
        return ExitCode::FAILURE;
    }
    drop(out);
    teleagent_tests::local::run::shutdown_signal().await;
    tracing::info!("bitrix24 sandbox stopping");
    drop(sandbox);
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, ArgError> {
        parse_args(s.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn parses_flags() {
        let a = parse("--port 0 --shape rest --answer sse --rate 5 --depth 250 --token a --token b --user-token c").unwrap();
        assert_eq!(a.cfg.shape, ToolShape::RestMethod);
        assert_eq!(a.cfg.answer_mode, AnswerMode::Sse);
        assert_eq!(a.cfg.bucket_depth, 250);
        assert_eq!(a.admin_tokens, ["a", "b"]);
        assert_eq!(a.user_tokens, ["c"]);
        assert_eq!(a.cfg.catalogue, None);
        let a = parse("--catalogue yzel").unwrap();
        assert_eq!(a.cfg.catalogue, Some(Catalogue::Yzel));
    }

    #[test]
    fn rejects_bad_input() {
        for (args, why) in [
            ("--shape nope", "unknown shape"),
            ("--catalogue nope", "unknown catalogue"),
            ("--port", "missing value"),
            ("--rate -1", "negative rate"),
            ("--frobnicate", "unknown flag"),
        ] {
            assert!(parse(args).is_err(), "{why}");
        }
    }
}
