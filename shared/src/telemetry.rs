//! Log setup for every function: Lambda's log controls (`AWS_LAMBDA_LOG_LEVEL`, else `RUST_LOG`;
//! JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`), as `lambda_runtime`'s default subscriber reads them
//! (`RUST_LOG`'s `target=level` directives: [`directives`]), plus a floor no setting can lower.
//!
//! The floor: the runtime, HTTP and AWS SDK crates log whole payloads below INFO
//! (`lambda_runtime` prints every raw invocation event at TRACE; the SDK's wire logs carry
//! request and response bodies, which for SQS and DynamoDB are lead events with names and
//! phone numbers). Their events above INFO are dropped by a filter that sits in front of the
//! environment's directives, so `RUST_LOG=trace` or a more specific
//! `lambda_runtime::layers::api_response=trace` still cannot print a raw event.

use lambda_runtime::tracing::subscriber;
use subscriber::filter::{LevelFilter, Targets, filter_fn};
use subscriber::layer::SubscriberExt;
use subscriber::util::SubscriberInitExt;
use subscriber::{Layer, fmt};
use tracing::{Level, Metadata};

/// Crates (by target prefix) whose DEBUG/TRACE output may contain raw events or bodies.
pub const PAYLOAD_TARGETS: &[&str] = &[
    "lambda_runtime",
    "lambda_http",
    // Every AWS SDK crate: aws_smithy_*, aws_sdk_*, aws_sigv4 (signs requests), aws_runtime,
    // aws_config (credentials).
    "aws_",
    "hyper",
    "h2",
    "reqwest",
    "rustls",
    "tower",
];

/// Whether an event or span may be logged at all, whatever the configured level: nothing
/// below INFO from [`PAYLOAD_TARGETS`].
pub fn allowed(meta: &Metadata<'_>) -> bool {
    *meta.level() <= Level::INFO || !PAYLOAD_TARGETS.iter().any(|p| meta.target().starts_with(p))
}

/// Installs the global subscriber: stdout, no timestamps (CloudWatch adds them), the Lambda log
/// controls' level and format, and the [`allowed`] floor.
pub fn init() {
    let format = std::env::var("AWS_LAMBDA_LOG_FORMAT").unwrap_or_default();
    let level = std::env::var("AWS_LAMBDA_LOG_LEVEL")
        .or_else(|_| std::env::var("RUST_LOG"))
        .ok()
        .and_then(|l| l.parse::<LevelFilter>().ok())
        .unwrap_or(LevelFilter::INFO);
    let filter = directives(&std::env::var("RUST_LOG").unwrap_or_default(), level);
    let base = fmt::layer().with_target(false).without_time();
    let layer = if format.eq_ignore_ascii_case("json") {
        base.json().boxed()
    } else {
        base.boxed()
    };
    let _ = subscriber::registry()
        .with(layer.with_filter(filter).with_filter(filter_fn(allowed)))
        .try_init();
}

/// `RUST_LOG`'s `target=level` directives (and a bare level for everything), each invalid one
/// skipped with a note on stderr; `default` applies when there is none. These are the directives
/// of `tracing_subscriber`'s `EnvFilter` without its span and field filters (`[span{f=v}]`),
/// whose regular-expression engine would be linked into every function for a filter Lambda's
/// log controls never set.
pub fn directives(rust_log: &str, default: LevelFilter) -> Targets {
    let mut targets = Targets::new();
    let mut any = false;
    for d in rust_log.split(',').map(str::trim).filter(|d| !d.is_empty()) {
        match d.parse::<Targets>() {
            Ok(t) => {
                any = true;
                if let Some(level) = t.default_level() {
                    targets = targets.with_default(level);
                }
                targets = targets.with_targets(t);
            }
            Err(e) => eprintln!("ignoring `{d}`: {e}"),
        }
    }
    if !any {
        targets = targets.with_default(default);
    }
    targets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_targets_are_capped_at_info_and_ours_are_not() {
        use subscriber::Registry;
        use tracing::subscriber::with_default;
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let sink = seen.clone();
        let layer = fmt::layer()
            .with_writer(move || TestWriter(sink.clone()))
            .with_filter(directives("trace", LevelFilter::OFF))
            .with_filter(filter_fn(allowed));
        with_default(Registry::default().with(layer), || {
            tracing::trace!(target: "lambda_runtime::layers::api_response", body = "RAW-EVENT", "raw JSON event received from Lambda");
            tracing::debug!(target: "aws_smithy_runtime::client::orchestrator", body = "RAW-BODY", "response");
            tracing::info!(target: "lambda_runtime", "runtime info stays");
            tracing::trace!(target: "teleagent_bitrix::sync", "our trace stays");
        });
        let text = seen.lock().map(|v| v.concat()).unwrap_or_default();
        assert!(!text.contains("RAW-EVENT"), "{text}");
        assert!(!text.contains("RAW-BODY"), "{text}");
        assert!(text.contains("runtime info stays"), "{text}");
        assert!(text.contains("our trace stays"), "{text}");
    }

    #[test]
    fn rust_log_directives_read_like_env_filter() {
        use tracing::Level;
        let on = |t: &Targets, target: &str, level: Level| t.would_enable(target, &level);
        let t = directives("", LevelFilter::WARN);
        assert!(
            on(&t, "teleagent_bitrix", Level::WARN) && !on(&t, "teleagent_bitrix", Level::INFO)
        );
        let t = directives(
            "info,teleagent_bitrix::sync=trace, bad=loud",
            LevelFilter::WARN,
        );
        assert!(on(&t, "teleagent_bitrix::sync::engine", Level::TRACE));
        assert!(on(&t, "lambda_http", Level::INFO) && !on(&t, "lambda_http", Level::DEBUG));
        let t = directives("aws_config=debug", LevelFilter::WARN);
        assert!(on(&t, "aws_config::x", Level::DEBUG));
        assert!(
            !on(&t, "teleagent_bitrix", Level::ERROR),
            "only the named target, as EnvFilter"
        );
        let t = directives("bad=loud", LevelFilter::WARN);
        assert!(
            on(&t, "x", Level::WARN) && !on(&t, "x", Level::INFO),
            "nothing valid: the default"
        );
    }

    struct TestWriter(std::sync::Arc<std::sync::Mutex<Vec<String>>>);
    impl std::io::Write for TestWriter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if let Ok(mut v) = self.0.lock() {
                v.push(String::from_utf8_lossy(buf).into_owned());
            }
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
}
