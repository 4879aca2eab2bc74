//! The short soak (`make test`): the `soak` command scaled down (2 tenants, 10 customers, 40 events
//! and 2 invalid ones, 10 % AWS and Bitrix24 faults, one short portal outage, one token revoked
//! and reconnected) through the real debug `lead-sync` and `bitrix-connect` binaries. The full run
//! is `make soak`. The command does the checking; this test asserts its exit status and the
//! figures of its report.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use teleagent_tests::harness::{self, workspace_root};

/// Builds the two function binaries the soak starts (a no-op when they are up to date). The test
/// build does not make other packages' binaries, so this runs cargo as cargo lambda watch does
/// for the e2e tests.
fn build_functions() {
    let root = workspace_root();
    let out = std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--locked",
            "-p",
            "lead-sync",
            "-p",
            "bitrix-connect",
        ])
        .current_dir(&root)
        .stdin(Stdio::null())
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "cargo build of lead-sync and bitrix-connect failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_lands_every_event_exactly_once() {
    let moto = harness::moto_endpoint().to_owned();
    tokio::task::spawn_blocking(build_functions).await.unwrap();
    let root = workspace_root();
    let out = root.join(format!(
        "target/soak-test-{}.json",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    let started = Instant::now();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_soak"))
        .args([
            "--events",
            "40",
            "--tenants",
            "2",
            "--customers",
            "10",
            "--invalid",
            "2",
            "--twice-every",
            "10",
            "--aws-fault",
            "0.1",
            "--bitrix-fault",
            "0.1",
            "--concurrency",
            "2",
            "--max-receive",
            "3",
            "--publish-secs",
            "12",
            "--outage-secs",
            "7",
            "--revoke-secs",
            "5",
            "--portal-rate",
            "5",
            "--timeout-secs",
            "300",
        ])
        .arg("--bin-dir")
        .arg(root.join("target/debug"))
        .arg("--out")
        .arg(&out)
        .env("TELEAGENT_TEST_AWS_ENDPOINT", &moto)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let res = tokio::time::timeout(Duration::from_secs(420), child)
        .await
        .expect("the short soak finished in time")
        .expect("the soak command ran");
    let stdout = String::from_utf8_lossy(&res.stdout);
    let stderr = String::from_utf8_lossy(&res.stderr);
    eprintln!("{stderr}\n{stdout}");
    let text = std::fs::read_to_string(&out);
    let _ = std::fs::remove_file(&out);
    assert!(
        res.status.success(),
        "the short soak failed ({}); see its table above",
        res.status
    );
    let report: Value = serde_json::from_str(&text.expect("the soak report")).unwrap();
    let t = &report["totals"];
    assert_eq!(report["ok"], true);
    assert_eq!(report["events_valid"], 40);
    assert_eq!(t["leads"], 10, "one lead per customer: {t}");
    for k in [
        "lost_leads",
        "duplicate_leads",
        "duplicate_phones",
        "notes_missing",
        "notes_duplicated",
        "wrong_final_state",
        "parked_left",
    ] {
        assert_eq!(t[k], 0, "{k}: {t}");
    }
    assert_eq!(report["queue_left"], 0);
    assert_eq!(
        report["dlq"]["depth"], 2,
        "only the invalid events dead-lettered"
    );
    assert_eq!(report["dlq"]["valid_events"], Value::Array(vec![]));
    assert_eq!(
        report["dlq"]["unexpected"],
        Value::Array(vec![]),
        "nothing but the invalid events in the DLQ"
    );
    assert_eq!(report["revoke"]["error_seen"], true, "the revoke happened");
    assert!(
        report["aws"]["injected"].as_u64().unwrap_or(0) > 0,
        "AWS faults were injected: {}",
        report["aws"]
    );
    assert!(
        t["bitrix_faults_injected"].as_u64().unwrap_or(0) > 0,
        "Bitrix24 faults were injected: {t}"
    );
    eprintln!(
        "short soak: {:.0} s in all",
        started.elapsed().as_secs_f64()
    );
}
