//! Binding against the tool catalogues of real, public Bitrix24 MCP servers
//! (`tests/fixtures/catalogues`, each saved verbatim from the server's own `tools/list`, its
//! source named in the file). Per catalogue: which tool each operation binds to, and the exact
//! arguments built for create, update, find and get from one sample lead; or, for a server
//! without lead tools, the exact operations connect names as missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use serde_json::{Map, Value, json};
use shared::crm::client::request;
use shared::crm::discovery::discover;
use shared::crm::{Binding, CheckError, Operation};
use shared::mcp::ToolInfo;

fn catalogue_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/catalogues")
}

fn load(file: &str) -> Vec<ToolInfo> {
    let text = std::fs::read_to_string(catalogue_dir().join(file)).expect(file);
    let v: Value = serde_json::from_str(&text).expect(file);
    v["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| ToolInfo {
            name: t["name"].as_str().expect("name").to_owned(),
            description: t["description"].as_str().map(str::to_owned),
            input_schema: t["inputSchema"].clone(),
        })
        .collect()
}

fn sample_fields() -> Map<String, Value> {
    json!({"TITLE": "Telegram: Ann", "NAME": "Ann",
           "PHONE": [{"VALUE": "+998901234567", "VALUE_TYPE": "WORK"}],
           "SOURCE_ID": "OTHER", "STATUS_ID": "IN_PROCESS",
           "ORIGINATOR_ID": "teleagent", "ORIGIN_ID": "t1:tg:1",
           "COMMENTS": "Product: tour", "UF_CRM_TELEAGENT_SCORE": 82})
    .as_object()
    .cloned()
    .unwrap_or_default()
}

/// (tool, arguments) per operation for the sample lead, as the connector would call them.
fn calls(b: &Binding) -> Map<String, Value> {
    let spellings = ["+998901234567", "998901234567"];
    let mut out = Map::new();
    let mut put = |key: &str, op: Operation, params: Value| {
        if let Some(t) = b.get(op) {
            let args = t
                .arguments(op, params.as_object().cloned().unwrap_or_default())
                .map_err(|e| e.to_string());
            out.insert(
                key.into(),
                json!([t.tool, args.unwrap_or_else(Value::String)]),
            );
        }
    };
    put(
        "create",
        Operation::CreateLead,
        request::create(sample_fields()),
    );
    let update: Map<String, Value> =
        json!({"STATUS_ID": "IN_PROCESS", "UF_CRM_TELEAGENT_SCORE": 90})
            .as_object()
            .cloned()
            .unwrap_or_default();
    put("update", Operation::UpdateLead, request::update(42, update));
    put("get", Operation::GetLead, request::get(42));
    if b.get(Operation::FindByPhone).is_some() {
        put(
            "find",
            Operation::FindByPhone,
            request::find_by_phone(&spellings),
        );
    } else {
        put(
            "find",
            Operation::ListLeads,
            request::list_by_phone(&spellings),
        );
    }
    if b.watch_gap().is_none() {
        put(
            "watch",
            Operation::ListLeads,
            request::list_changed("teleagent", "2026-12-01T10:00:00Z", 0),
        );
    }
    out
}

/// What binding one catalogue gives: the tool per operation, what connect names as missing,
/// and the calls for the sample lead.
fn outcome(file: &str) -> Value {
    let b = discover(&load(file), None);
    let bound: Map<String, Value> = b
        .ops
        .iter()
        .map(|(op, t)| (op.key().to_owned(), json!(t.tool)))
        .collect();
    let missing = b.missing_required();
    let reason = (!missing.is_empty()).then(|| CheckError::Missing(missing.clone()).to_string());
    json!({
        "bound": bound,
        "missing_required": missing.iter().map(|op| op.key()).collect::<Vec<_>>(),
        "reason": reason,
        "change_watch": b.change_watch(),
        "calls": calls(&b),
    })
}

fn catalogue_files() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(catalogue_dir())
        .expect("catalogue dir")
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|f| f.ends_with(".json") && f != "expected.json")
        .collect();
    files.push("partial/kostikpenzin-mcp_b24.json".into());
    files.sort();
    files
}

/// Every catalogue binds exactly as `expected.json` says (reviewed by hand against each
/// server's source, see the catalogue README): per catalogue the bound tools, the missing
/// operations with connect's reason, whether managers' changes can be watched (and the exact
/// change-list call when they can), and the exact arguments of create, update, find and get.
/// `CORPUS_PRINT=1` prints what binding gives, for reviewing a new fixture.
#[test]
fn every_catalogue_binds_as_expected() {
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(catalogue_dir().join("expected.json")).expect("expected.json"),
    )
    .expect("expected.json is JSON");
    let files = catalogue_files();
    assert!(
        files.len() >= 8,
        "the corpus has {} catalogues",
        files.len()
    );
    let mut all = Map::new();
    for f in &files {
        let got = outcome(f);
        if std::env::var_os("CORPUS_PRINT").is_some() {
            all.insert(f.clone(), got.clone());
            continue;
        }
        assert_eq!(
            &got,
            expected.get(f).unwrap_or(&Value::Null),
            "{f}: binding differs from expected.json\n{}",
            serde_json::to_string_pretty(&got).unwrap_or_default()
        );
    }
    if std::env::var_os("CORPUS_PRINT").is_some() {
        println!(
            "{}",
            serde_json::to_string_pretty(&Value::Object(all)).unwrap_or_default()
        );
    }
    let names: Vec<&String> = expected
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(names.len(), files.len(), "expected.json lists {names:?}");
}

/// Each catalogue either binds the four required operations, or names exactly what is missing;
/// a catalogue of read-only and report tools binds no write operation.
#[test]
fn read_only_servers_bind_no_write_operation() {
    for f in catalogue_files() {
        let b = discover(&load(&f), None);
        let missing = b.missing_required();
        let required_bound = Operation::REQUIRED
            .iter()
            .filter(|op| {
                b.get(**op).is_some()
                    || (**op == Operation::FindByPhone && b.get(Operation::ListLeads).is_some())
            })
            .count();
        assert_eq!(required_bound + missing.len(), 4, "{f}");
    }
    // 28 read-only analytics tools, among them daily summaries that mention new leads
    let b = discover(&load("fast-bitrix24-mcp.json"), None);
    for op in [
        Operation::CreateLead,
        Operation::UpdateLead,
        Operation::GetLead,
        Operation::AddComment,
    ] {
        assert!(
            b.get(op).is_none(),
            "fast-bitrix24-mcp must not bind {op:?}"
        );
    }
    assert_eq!(
        CheckError::Missing(b.missing_required()).to_string(),
        "this Bitrix24 MCP server offers no tool to create leads, update leads or read a lead"
    );
}
