//! The SAM template (`infra/template.yaml`) read as data: the promises a linter cannot check.
//!
//! cfn-lint and checkov (`infra/lint.sh`) prove the template is valid and hardened in general;
//! these tests pin what this product needs: each function's exact permissions (least privilege),
//! the KMS encryption-context conditions that bind a token to its tenant,
//! the FIFO queue's visibility versus the consumer's timeout, partial batch responses, and the
//! build settings SAM needs for cargo-lambda, and the two sign-in modes (`AuthMode`): every
//! test runs on the template as CloudFormation would see it in each mode (conditions and
//! `Fn::If` applied, `teleagent_tests::cfn`). The template uses long-form intrinsics (`Ref:`,
//! `Fn::GetAtt:`), so it parses as plain YAML maps.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;
use teleagent_tests::cfn;

/// API Gateway's integration timeout: an HTTP function must give up before the gateway does.
const API_GATEWAY_TIMEOUT_SECS: i64 = 29;
const PURPOSE: &str = "bitrix-mcp-token";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The two sign-in modes, with the parameters each needs.
const MODES: [(&str, &[(&str, &str)]); 2] = [
    (
        "jwt-authorizer",
        &[
            ("AuthMode", "jwt-authorizer"),
            ("JwtIssuer", "https://example.supabase.co/auth/v1"),
        ],
    ),
    (
        "hs256",
        &[
            ("AuthMode", "hs256"),
            ("JwtHs256SecretParameterName", "/teleagent/jwt-hs256-secret"),
        ],
    ),
];

/// The default mode's template (what most tests read; `MODES` for the rest).
fn template() -> Value {
    cfn::template_for(MODES[0].1)
}

/// The ARN pattern of the HS256 secret's parameter, as the policies write it.
const SECRET_PARAMETER_ARN: &str = "arn:${AWS::Partition}:ssm:${AWS::Region}:${AWS::AccountId}:parameter${JwtHs256SecretParameterName}";

fn resources(t: &Value) -> &serde_yaml::Mapping {
    t["Resources"].as_mapping().expect("Resources is a map")
}

fn resource<'a>(t: &'a Value, id: &str) -> &'a Value {
    let r = &t["Resources"][id];
    assert!(!r.is_null(), "resource {id} is missing");
    r
}

fn resource_ids_of_type(t: &Value, ty: &str) -> Vec<String> {
    resources(t)
        .iter()
        .filter(|(_, r)| r["Type"].as_str() == Some(ty))
        .map(|(k, _)| k.as_str().expect("logical ids are strings").to_owned())
        .collect()
}

/// The logical id a `Ref: X` or `Fn::GetAtt: [X, attr]` points at.
fn target(v: &Value) -> Option<String> {
    if let Some(r) = v.get("Ref").and_then(Value::as_str) {
        return Some(r.to_owned());
    }
    let g = v.get("Fn::GetAtt")?;
    match g {
        Value::Sequence(s) => s.first().and_then(Value::as_str).map(str::to_owned),
        Value::String(s) => s.split('.').next().map(str::to_owned),
        _ => None,
    }
}

/// A scalar or a list of scalars (IAM allows both for Action and Resource).
fn list(v: &Value) -> Vec<Value> {
    match v {
        Value::Sequence(s) => s.clone(),
        Value::Null => Vec::new(),
        other => vec![other.clone()],
    }
}

fn strings(v: &Value) -> BTreeSet<String> {
    list(v)
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// The six Lambda functions, by the cargo binary each one is built from.
fn functions(t: &Value) -> BTreeMap<String, String> {
    resource_ids_of_type(t, "AWS::Serverless::Function")
        .into_iter()
        .map(|id| {
            let bin = resource(t, &id)["Metadata"]["BuildProperties"]["Binary"]
                .as_str()
                .unwrap_or_else(|| panic!("{id} has no Metadata.BuildProperties.Binary"))
                .to_owned();
            (bin, id)
        })
        .collect()
}

fn function<'a>(t: &'a Value, bin: &str) -> &'a Value {
    let id = functions(t)
        .remove(bin)
        .unwrap_or_else(|| panic!("no function built from binary {bin}"));
    &t["Resources"][id.as_str()]
}

const HTTP_FUNCTIONS: [&str; 4] = [
    "bitrix-connect",
    "bitrix-test",
    "bitrix-disconnect",
    "bitrix-status",
];
const ALL_FUNCTIONS: [&str; 6] = [
    "bitrix-connect",
    "bitrix-test",
    "bitrix-disconnect",
    "bitrix-status",
    "lead-sync",
    "lead-watch",
];

/// Every allowed statement in the policies attached to the function's role (its inline
/// policies and every `AWS::IAM::Policy` naming the role).
fn role_statements(t: &Value, bin: &str) -> Vec<Value> {
    let f = function(t, bin);
    let role = target(&f["Properties"]["Role"])
        .unwrap_or_else(|| panic!("{bin}: Role is not a reference"));
    assert_eq!(
        resource(t, &role)["Type"].as_str(),
        Some("AWS::IAM::Role"),
        "{bin}: its Role must be a role of this template"
    );
    let mut docs: Vec<Value> = list(&resource(t, &role)["Properties"]["Policies"])
        .iter()
        .map(|p| p["PolicyDocument"].clone())
        .collect();
    assert!(
        list(&resource(t, &role)["Properties"]["ManagedPolicyArns"]).is_empty(),
        "{bin}: managed policies would hide permissions from this test"
    );
    for id in resource_ids_of_type(t, "AWS::IAM::Policy") {
        let p = &resource(t, &id)["Properties"];
        if list(&p["Roles"])
            .iter()
            .any(|r| target(r).as_deref() == Some(role.as_str()))
        {
            docs.push(p["PolicyDocument"].clone());
        }
    }
    let statements: Vec<Value> = docs.iter().flat_map(|d| list(&d["Statement"])).collect();
    for s in &statements {
        assert_eq!(
            s["Effect"].as_str(),
            Some("Allow"),
            "{bin}: unexpected statement {s:?}"
        );
    }
    statements
}

/// `action@Target` for every (action, resource) pair the function's role is allowed.
fn grants(t: &Value, bin: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for s in role_statements(t, bin) {
        let resources = list(&s["Resource"]);
        assert!(
            !resources.is_empty(),
            "{bin}: statement without Resource {s:?}"
        );
        for a in strings(&s["Action"]) {
            assert!(!a.contains('*'), "{bin}: wildcard action {a}");
            for r in &resources {
                // A template resource by its logical id, else an ARN built with Fn::Sub.
                let tgt = target(r)
                    .or_else(|| r.get("Fn::Sub").and_then(Value::as_str).map(str::to_owned))
                    .unwrap_or_else(|| panic!("{bin}: {a} on a non-template resource {r:?}"));
                out.insert(format!("{a}@{tgt}"));
            }
        }
    }
    out
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn every_function_is_arm64_al2023_built_by_cargo_lambda_from_a_workspace_binary() {
    let t = template();
    let fns = functions(&t);
    assert_eq!(
        fns.keys().cloned().collect::<BTreeSet<_>>(),
        set(&ALL_FUNCTIONS)
    );
    let root = workspace_root();
    for (bin, id) in &fns {
        let f = resource(&t, id);
        let p = &f["Properties"];
        assert_eq!(
            f["Metadata"]["BuildMethod"].as_str(),
            Some("rust-cargolambda"),
            "{bin}"
        );
        assert_eq!(p["Runtime"].as_str(), Some("provided.al2023"), "{bin}");
        assert_eq!(p["Handler"].as_str(), Some("bootstrap"), "{bin}");
        assert_eq!(strings(&p["Architectures"]), set(&["arm64"]), "{bin}");
        // CodeUri is relative to infra/: it must be the workspace root, where SAM runs
        // `cargo lambda build --bin <Binary>`, and that binary's package must exist.
        let code_uri = p["CodeUri"]
            .as_str()
            .unwrap_or_else(|| panic!("{bin}: CodeUri"));
        let code_dir = root.join("infra").join(code_uri);
        let manifest =
            std::fs::read_to_string(code_dir.join("Cargo.toml")).expect("CodeUri has a Cargo.toml");
        assert!(
            manifest.contains("[workspace]"),
            "{bin}: CodeUri must be the workspace root"
        );
        let pkg = std::fs::read_to_string(root.join("functions").join(bin).join("Cargo.toml"))
            .unwrap_or_else(|e| panic!("{bin}: functions/{bin}/Cargo.toml: {e}"));
        assert!(
            pkg.contains(&format!("name = \"{bin}\"")),
            "{bin}: package name"
        );
    }
}

#[test]
fn each_role_has_exactly_the_actions_its_function_needs() {
    for (mode, params) in MODES {
        each_role_has_exactly_the_actions_its_function_needs_in(mode, &cfn::template_for(params));
    }
}

fn each_role_has_exactly_the_actions_its_function_needs_in(mode: &str, t: &Value) {
    // With hs256 each HTTP function reads the sign-in secret's parameter, and nothing more.
    let secret: Vec<String> = if mode == "hs256" {
        vec![format!("ssm:GetParameter@{SECRET_PARAMETER_ARN}")]
    } else {
        Vec::new()
    };
    let http = |mut s: BTreeSet<String>| {
        s.extend(secret.iter().cloned());
        s
    };
    let table_rw = |log: &str, extra: &[&str]| {
        let mut s = set(&[
            "dynamodb:GetItem@Table",
            "dynamodb:PutItem@Table",
            "dynamodb:UpdateItem@Table",
        ]);
        s.insert(format!("logs:CreateLogStream@{log}"));
        s.insert(format!("logs:PutLogEvents@{log}"));
        s.extend(extra.iter().map(|e| (*e).to_owned()));
        s
    };
    let rows: [(&str, BTreeSet<String>, &str); 6] = [
        (
            "bitrix-connect",
            http(table_rw(
                "ConnectLogGroup",
                &["kms:Encrypt@TokenKey", "sqs:SendMessage@LeadQueue"],
            )),
            "stores the encrypted token, asks for the replay of parked events; never decrypts",
        ),
        (
            "bitrix-test",
            http(table_rw(
                "TestLogGroup",
                &["kms:Decrypt@TokenKey", "sqs:SendMessage@LeadQueue"],
            )),
            "decrypts, may set status, asks for the replay of parked events; never encrypts",
        ),
        (
            "bitrix-disconnect",
            http(set(&[
                "dynamodb:PutItem@Table",
                "dynamodb:UpdateItem@Table",
                "logs:CreateLogStream@DisconnectLogGroup",
                "logs:PutLogEvents@DisconnectLogGroup",
            ])),
            "clears the connection with one update (no read), audits: no key, no queue",
        ),
        (
            "bitrix-status",
            http(set(&[
                "dynamodb:GetItem@Table",
                "logs:CreateLogStream@StatusLogGroup",
                "logs:PutLogEvents@StatusLogGroup",
            ])),
            "one read, no key",
        ),
        (
            "lead-sync",
            set(&[
                "dynamodb:GetItem@Table",
                "dynamodb:PutItem@Table",
                "dynamodb:UpdateItem@Table",
                "dynamodb:DeleteItem@Table",
                "dynamodb:BatchGetItem@Table",
                "dynamodb:BatchWriteItem@Table",
                "dynamodb:Query@Table",
                "kms:Decrypt@TokenKey",
                "sqs:ReceiveMessage@LeadQueue",
                "sqs:DeleteMessage@LeadQueue",
                "sqs:GetQueueAttributes@LeadQueue",
                "sqs:ChangeMessageVisibility@LeadQueue",
                "sqs:SendMessage@LeadQueue",
                "sqs:SendMessage@DeadLetterQueue",
                "logs:CreateLogStream@LeadSyncLogGroup",
                "logs:PutLogEvents@LeadSyncLogGroup",
            ]),
            "consumes the lead queue, re-queues waiting events, replays parked ones, dead-letters invalid ones, decrypts; reads a batch's integrations and links at once, writes a link with its done mark at once",
        ),
        (
            "lead-watch",
            set(&[
                "dynamodb:GetItem@Table",
                "dynamodb:UpdateItem@Table",
                "dynamodb:Query@${Table.Arn}/index/watch",
                "kms:Decrypt@TokenKey",
                "sqs:SendMessage@WatchQueue",
                "sqs:ReceiveMessage@WatchQueue",
                "sqs:DeleteMessage@WatchQueue",
                "sqs:GetQueueAttributes@WatchQueue",
                "sqs:SendMessage@LeadChangesQueue",
                "logs:CreateLogStream@LeadWatchLogGroup",
                "logs:PutLogEvents@LeadWatchLogGroup",
            ]),
            "queries the watch index, feeds and consumes its work queue, reads links and moves cursors, decrypts, publishes changes; never puts or deletes an item",
        ),
    ];
    for (bin, want, why) in rows {
        assert_eq!(grants(t, bin), want, "{mode}: {bin} ({why})");
    }
}

#[test]
fn least_privilege_invariants_hold_across_functions() {
    let t = template();
    let g: BTreeMap<&str, BTreeSet<String>> =
        ALL_FUNCTIONS.iter().map(|b| (*b, grants(&t, b))).collect();
    let has = |bin: &str, pred: &dyn Fn(&str) -> bool| g[bin].iter().any(|a| pred(a));

    assert!(
        !has("bitrix-status", &|a| a.starts_with("kms:")),
        "status must not use the key"
    );
    assert!(
        !has("bitrix-status", &|a| {
            [
                "PutItem",
                "UpdateItem",
                "DeleteItem",
                "BatchWriteItem",
                "Query",
                "Scan",
            ]
            .iter()
            .any(|w| a.starts_with(&format!("dynamodb:{w}@")))
        }),
        "status reads one item and writes nothing"
    );
    assert!(
        has("bitrix-connect", &|a| a == "kms:Encrypt@TokenKey"),
        "connect encrypts"
    );
    assert!(
        !has("bitrix-connect", &|a| a.starts_with("kms:Decrypt")),
        "connect never decrypts"
    );
    assert!(
        !has("bitrix-test", &|a| a.starts_with("kms:Encrypt")),
        "test never encrypts"
    );
    assert!(
        !has("bitrix-disconnect", &|a| a.starts_with("kms:")),
        "disconnect needs no key"
    );
    assert!(
        !has("bitrix-disconnect", &|a| a.starts_with("sqs:")),
        "disconnect needs no queue"
    );

    for bin in ALL_FUNCTIONS {
        let consumer = bin == "lead-sync";
        for a in [
            "sqs:ReceiveMessage@LeadQueue",
            "sqs:ChangeMessageVisibility@LeadQueue",
            "sqs:DeleteMessage@LeadQueue",
            "sqs:SendMessage@DeadLetterQueue",
        ] {
            assert_eq!(
                g[bin].contains(a),
                consumer,
                "{bin}: {a} is lead-sync's alone"
            );
        }
        // connect/test re-send parked events; lead-sync re-queues an event still waiting on a
        // rate limit on the receive before maxReceiveCount (else SQS would dead-letter it).
        let sends_to_lead_queue = g[bin].contains("sqs:SendMessage@LeadQueue");
        let replays = matches!(bin, "bitrix-connect" | "bitrix-test");
        assert_eq!(
            sends_to_lead_queue,
            replays || consumer,
            "{bin}: only connect/test (replay) and lead-sync (re-queue) send to the lead queue"
        );
        if replays {
            let sqs: Vec<_> = g[bin].iter().filter(|a| a.starts_with("sqs:")).collect();
            assert_eq!(
                sqs,
                vec!["sqs:SendMessage@LeadQueue"],
                "{bin}: SendMessage on the lead queue only"
            );
        }
    }
}

/// The conditions every use of the token key must carry: purpose pinned, and no context keys
/// but tenant_id and purpose (so the tenant id is always part of what is authenticated).
fn assert_token_context(cond: &Value, who: &str) {
    assert_eq!(
        cond["StringEquals"]["kms:EncryptionContext:purpose"].as_str(),
        Some(PURPOSE),
        "{who}: purpose condition"
    );
    assert_eq!(
        strings(&cond["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"]),
        set(&["tenant_id", "purpose"]),
        "{who}: encryption-context keys condition"
    );
}

#[test]
fn function_kms_statements_carry_the_encryption_context_conditions() {
    let t = template();
    for bin in ALL_FUNCTIONS {
        for s in role_statements(&t, bin) {
            if strings(&s["Action"]).iter().any(|a| a.starts_with("kms:")) {
                assert_token_context(&s["Condition"], bin);
            }
        }
    }
}

#[test]
fn key_policy_keeps_an_administrator_and_grants_use_only_to_the_right_roles_with_context() {
    let t = template();
    let key = resource(&t, "TokenKey");
    assert_eq!(key["Type"].as_str(), Some("AWS::KMS::Key"));
    let p = &key["Properties"];
    assert_eq!(p["EnableKeyRotation"].as_bool(), Some(true), "rotation on");
    let statements = list(&p["KeyPolicy"]["Statement"]);
    const CRYPTO: [&str; 5] = [
        "kms:Encrypt",
        "kms:Decrypt",
        "kms:ReEncrypt",
        "kms:GenerateDataKey",
        "kms:*",
    ];
    let is_crypto = |a: &str| CRYPTO.iter().any(|c| a.starts_with(c)) || a == "kms:CreateGrant";

    let mut admin = false;
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for s in &statements {
        assert_eq!(s["Effect"].as_str(), Some("Allow"), "{s:?}");
        let actions = strings(&s["Action"]);
        let principal = &s["Principal"]["AWS"];
        let root = principal
            .get("Fn::Sub")
            .and_then(Value::as_str)
            .is_some_and(|a| a.ends_with(":root"));
        if root {
            // The creator must keep the key manageable, or CreateKey refuses the policy.
            assert!(
                actions.contains("kms:PutKeyPolicy"),
                "admin can update the policy"
            );
            assert!(
                actions.contains("kms:ScheduleKeyDeletion"),
                "admin can retire the key"
            );
            assert!(
                !actions.iter().any(|a| is_crypto(a)),
                "the admin statement must not open the key to IAM policies or grants: {actions:?}"
            );
            admin = true;
            continue;
        }
        assert!(
            actions
                .iter()
                .all(|a| is_crypto(a) && a != "kms:*" && a != "kms:CreateGrant"),
            "non-admin statements only use the key: {actions:?}"
        );
        assert_token_context(&s["Condition"], s["Sid"].as_str().unwrap_or("key policy"));
        assert_eq!(
            s["Condition"]["Null"]["kms:EncryptionContext:tenant_id"].as_str(),
            Some("false"),
            "tenant_id must be present in the context"
        );
        for r in list(principal) {
            let role = target(&r).unwrap_or_else(|| panic!("key users are template roles: {r:?}"));
            users
                .entry(role)
                .or_default()
                .extend(actions.iter().cloned());
        }
    }
    assert!(admin, "the key policy keeps an administrator statement");
    let want: BTreeMap<String, BTreeSet<String>> = [
        ("ConnectRole", set(&["kms:Encrypt"])),
        ("TestRole", set(&["kms:Decrypt"])),
        ("LeadSyncRole", set(&["kms:Decrypt"])),
        ("LeadWatchRole", set(&["kms:Decrypt"])),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    assert_eq!(users, want, "who may use the key, and for what");
}

#[test]
fn lead_queue_visibility_redrive_and_event_source_fit_the_consumer() {
    let t = template();
    let sync = &function(&t, "lead-sync")["Properties"];
    let timeout = sync["Timeout"].as_i64().expect("lead-sync Timeout");
    let q = &resource(&t, "LeadQueue")["Properties"];
    let dlq = &resource(&t, "DeadLetterQueue")["Properties"];
    assert_eq!(q["FifoQueue"].as_bool(), Some(true));
    assert_eq!(
        dlq["FifoQueue"].as_bool(),
        Some(true),
        "a FIFO queue needs a FIFO dead-letter queue"
    );
    let visibility = q["VisibilityTimeout"].as_i64().expect("VisibilityTimeout");
    assert!(
        visibility >= 6 * timeout,
        "visibility {visibility}s must be at least 6 x lead-sync's timeout {timeout}s"
    );
    assert_eq!(
        target(&q["RedrivePolicy"]["deadLetterTargetArn"]).as_deref(),
        Some("DeadLetterQueue")
    );
    let max_receive = q["RedrivePolicy"]["maxReceiveCount"]
        .as_i64()
        .expect("maxReceiveCount");
    assert!(
        max_receive >= 2,
        "parking happens after maxReceiveCount - 1 attempts"
    );
    let env_count = sync["Environment"]["Variables"]["LEAD_QUEUE_MAX_RECEIVE_COUNT"]
        .as_str()
        .and_then(|s| s.parse::<i64>().ok());
    assert_eq!(
        env_count,
        Some(max_receive),
        "LEAD_QUEUE_MAX_RECEIVE_COUNT matches the redrive"
    );
    assert_eq!(
        dlq["MessageRetentionPeriod"].as_i64(),
        Some(14 * 24 * 3600),
        "DLQ keeps 14 days"
    );
    for (name, props) in [("LeadQueue", q), ("DeadLetterQueue", dlq)] {
        let sse = props["SqsManagedSseEnabled"].as_bool() == Some(true)
            || !props["KmsMasterKeyId"].is_null();
        assert!(sse, "{name} is encrypted at rest");
    }

    let esms: Vec<String> = resource_ids_of_type(&t, "AWS::Lambda::EventSourceMapping")
        .into_iter()
        .filter(|m| {
            target(&t["Resources"][m.as_str()]["Properties"]["EventSourceArn"]).as_deref()
                == Some("LeadQueue")
        })
        .collect();
    assert_eq!(esms.len(), 1, "one event source mapping on the lead queue");
    let esm = resource(&t, &esms[0]);
    let e = &esm["Properties"];
    assert_eq!(target(&e["EventSourceArn"]).as_deref(), Some("LeadQueue"));
    assert_eq!(
        target(&e["FunctionName"]),
        functions(&t).remove("lead-sync"),
        "the mapping drives lead-sync"
    );
    assert!(
        strings(&e["FunctionResponseTypes"]).contains("ReportBatchItemFailures"),
        "partial batch responses are only honoured with ReportBatchItemFailures"
    );
    let batch = e["BatchSize"].as_i64().expect("BatchSize");
    assert!(
        (1..=10).contains(&batch),
        "FIFO batch size is at most 10, got {batch}"
    );
    // A parameter sized for total throughput across tenants, with room for slow portals.
    assert_eq!(
        e["ScalingConfig"]["MaximumConcurrency"]["Ref"].as_str(),
        Some("LeadSyncMaxConcurrency")
    );
    let p = &t["Parameters"]["LeadSyncMaxConcurrency"];
    assert_eq!(p["Default"].as_i64(), Some(10));
    assert_eq!(
        p["MinValue"].as_i64(),
        Some(2),
        "SQS mappings take at least 2"
    );
    // Lambda validates the role's SQS permissions when it creates the mapping.
    let depends: BTreeSet<String> = strings(&esm["DependsOn"]);
    assert!(
        depends.contains("LeadSyncPolicy"),
        "mapping waits for lead-sync's policy"
    );
}

#[test]
fn http_routes_answer_before_api_gateway_gives_up_and_follow_the_sign_in_mode() {
    for (mode, params) in MODES {
        let t = &cfn::template_for(params);
        let mut routes = BTreeSet::new();
        let jwt = mode == "jwt-authorizer";
        for id in resource_ids_of_type(t, "AWS::ApiGatewayV2::Route") {
            let r = &resource(t, &id)["Properties"];
            assert_eq!(
                target(&r["ApiId"]).as_deref(),
                Some("HttpApi"),
                "{mode}: {id}"
            );
            // Route -> integration -> function, and that function may be invoked by the API.
            let integ = r["Target"]["Fn::Sub"]
                .as_str()
                .and_then(|s| s.strip_prefix("integrations/${"))
                .and_then(|s| s.strip_suffix('}'))
                .unwrap_or_else(|| panic!("{mode}: {id} targets an integration"));
            let ip = &resource(t, integ)["Properties"];
            assert_eq!(ip["IntegrationType"].as_str(), Some("AWS_PROXY"), "{id}");
            assert_eq!(ip["PayloadFormatVersion"].as_str(), Some("2.0"), "{id}");
            let func = target(&ip["IntegrationUri"]).expect("integration names a function");
            let bin = functions(t)
                .into_iter()
                .find(|(_, f)| *f == func)
                .map(|(b, _)| b)
                .unwrap_or_else(|| panic!("{id}: {func} is not one of the functions"));
            assert!(HTTP_FUNCTIONS.contains(&bin.as_str()), "{id}: {bin}");
            let timeout = resource(t, &func)["Properties"]["Timeout"]
                .as_i64()
                .expect("Timeout");
            assert!(
                timeout < API_GATEWAY_TIMEOUT_SECS,
                "{bin}: timeout {timeout}s"
            );
            let key = r["RouteKey"].as_str().expect("RouteKey").to_owned();
            let permitted = resource_ids_of_type(t, "AWS::Lambda::Permission")
                .into_iter()
                .map(|p| resource(t, &p)["Properties"].clone())
                .any(|p| {
                    target(&p["FunctionName"]).as_deref() == Some(func.as_str())
                        && p["Principal"].as_str() == Some("apigateway.amazonaws.com")
                        && p["SourceArn"]["Fn::Sub"].as_str().is_some_and(|a| {
                            a.contains("${HttpApi}/*/") && a.ends_with(&key.replacen(' ', "", 1))
                        })
                });
            assert!(permitted, "{mode}: API Gateway may invoke {bin} for {key}");
            // The sign-in mode decides who verifies the JWT.
            if jwt {
                assert_eq!(
                    r["AuthorizationType"].as_str(),
                    Some("JWT"),
                    "{mode}: {key}"
                );
                assert_eq!(
                    target(&r["AuthorizerId"]).as_deref(),
                    Some("JwtAuthorizer"),
                    "{key}"
                );
            } else {
                assert_eq!(
                    r["AuthorizationType"].as_str(),
                    Some("NONE"),
                    "{mode}: {key}: no gateway authorizer, the function verifies HS256"
                );
                assert!(r["AuthorizerId"].is_null(), "{mode}: {key}");
            }
            routes.insert(key);
        }
        assert_eq!(
            routes,
            set(&[
                "POST /api/bitrix-mcp/connect",
                "POST /api/bitrix-mcp/test",
                "POST /api/bitrix-mcp/disconnect",
                "GET /api/bitrix-mcp/status",
            ]),
            "{mode}"
        );
        assert!(
            function(t, "lead-sync")["Properties"]["Events"].is_null(),
            "lead-sync is reached only through the event source mapping"
        );
        let authorizers = resource_ids_of_type(t, "AWS::ApiGatewayV2::Authorizer");
        if jwt {
            assert_eq!(authorizers, ["JwtAuthorizer"], "{mode}");
            let a = &resource(t, "JwtAuthorizer")["Properties"];
            assert_eq!(a["AuthorizerType"].as_str(), Some("JWT"));
            assert_eq!(
                strings(&a["IdentitySource"]),
                set(&["$request.header.Authorization"])
            );
            assert_eq!(
                target(&a["JwtConfiguration"]["Issuer"]).as_deref(),
                Some("JwtIssuer")
            );
            assert_eq!(
                target(&a["JwtConfiguration"]["Audience"]).as_deref(),
                Some("JwtAudience")
            );
        } else {
            assert!(authorizers.is_empty(), "{mode}: no gateway authorizer");
        }
        assert_eq!(
            t["Parameters"]["JwtAudience"]["Type"].as_str(),
            Some("CommaDelimitedList"),
            "audience is a list"
        );
        let api = &resource(t, "HttpApi")["Properties"];
        assert_eq!(api["ProtocolType"].as_str(), Some("HTTP"));
        assert_eq!(
            target(&api["CorsConfiguration"]["AllowOrigins"]).as_deref(),
            Some("CorsAllowedOrigins")
        );
    }
    // CloudFormation refuses a stack whose mode lacks what it needs.
    let rules = &cfn::load()["Rules"];
    for (rule, param) in [
        ("JwtAuthorizerNeedsAnIssuer", "JwtIssuer"),
        ("Hs256NeedsASecretParameter", "JwtHs256SecretParameterName"),
    ] {
        let assert = &rules[rule]["Assertions"][0]["Assert"]["Fn::Not"][0]["Fn::Equals"][0];
        assert_eq!(target(assert).as_deref(), Some(param), "{rule}");
    }
}

#[test]
fn functions_get_the_configuration_their_code_requires() {
    for (mode, params) in MODES {
        functions_get_the_configuration_their_code_requires_in(mode, &cfn::template_for(params));
    }
}

/// Whether a template value names or embeds a secret: an SSM or Secrets Manager dynamic
/// reference (`{{resolve:...}}`) puts the resolved secret into the function's configuration.
fn embeds_a_secret(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains("{{resolve:"),
        Value::Sequence(s) => s.iter().any(embeds_a_secret),
        Value::Mapping(m) => m.values().any(embeds_a_secret),
        _ => false,
    }
}

/// The HS256 secret is never a function's environment value, in either mode (anyone allowed
/// `lambda:GetFunctionConfiguration` could read it and mint a token for any tenant): only the
/// parameter's name is there, for the HTTP functions, in hs256 mode.
#[test]
fn the_hs256_secret_is_in_no_function_environment() {
    for (mode, params) in MODES {
        let t = &cfn::template_for(params);
        for (bin, id) in functions(t) {
            let vars = &resource(t, &id)["Properties"]["Environment"]["Variables"];
            assert!(
                vars["JWT_HS256_SECRET"].is_null(),
                "{mode}: {bin} gets no secret value"
            );
            assert!(
                !embeds_a_secret(vars),
                "{mode}: {bin}: dynamic reference in {vars:?}"
            );
            let p = &vars["JWT_HS256_SECRET_PARAMETER"];
            if mode == "hs256" && HTTP_FUNCTIONS.contains(&bin.as_str()) {
                assert_eq!(
                    target(p).as_deref(),
                    Some("JwtHs256SecretParameterName"),
                    "{bin}"
                );
            } else {
                assert!(p.is_null(), "{mode}: {bin} reads no secret parameter");
            }
        }
    }
}

fn functions_get_the_configuration_their_code_requires_in(mode: &str, t: &Value) {
    let rows: [(&str, &[&str]); 5] = [
        (
            "bitrix-connect",
            &[
                "TABLE_NAME",
                "KMS_KEY_ID",
                "LEAD_QUEUE_URL",
                "TENANT_CLAIM",
                "MCP_ALLOWED_HOSTS",
            ],
        ),
        (
            "bitrix-test",
            &[
                "TABLE_NAME",
                "KMS_KEY_ID",
                "LEAD_QUEUE_URL",
                "TENANT_CLAIM",
                "MCP_ALLOWED_HOSTS",
                "TOKEN_CACHE_TTL_SECS",
            ],
        ),
        ("bitrix-disconnect", &["TABLE_NAME", "TENANT_CLAIM"]),
        ("bitrix-status", &["TABLE_NAME", "TENANT_CLAIM"]),
        (
            "lead-sync",
            &[
                "TABLE_NAME",
                "KMS_KEY_ID",
                "LEAD_QUEUE_URL",
                "DEAD_LETTER_QUEUE_URL",
                "LEAD_QUEUE_MAX_RECEIVE_COUNT",
                "TOKEN_CACHE_TTL_SECS",
            ],
        ),
    ];
    for (bin, required) in rows {
        let vars = &function(t, bin)["Properties"]["Environment"]["Variables"];
        for v in required {
            assert!(!vars[*v].is_null(), "{bin}: {v} is set");
        }
        assert_eq!(
            target(&vars["TABLE_NAME"]).as_deref(),
            Some("Table"),
            "{bin}"
        );
        for (var, res) in [
            ("KMS_KEY_ID", "TokenKey"),
            ("LEAD_QUEUE_URL", "LeadQueue"),
            ("DEAD_LETTER_QUEUE_URL", "DeadLetterQueue"),
        ] {
            if !vars[var].is_null() {
                assert_eq!(target(&vars[var]).as_deref(), Some(res), "{bin}: {var}");
            }
        }
        // hs256: the function checks iss/aud itself when the parameters are set.
        for v in ["JWT_ISSUER", "JWT_AUDIENCE"] {
            let want = mode == "hs256" && HTTP_FUNCTIONS.contains(&bin);
            assert_eq!(!vars[v].is_null(), want, "{mode}: {bin}: {v}");
        }
    }
}

#[test]
fn table_has_ttl_pitr_and_encryption() {
    let t = template();
    let p = &resource(&t, "Table")["Properties"];
    assert_eq!(p["BillingMode"].as_str(), Some("PAY_PER_REQUEST"));
    let keys: BTreeSet<String> = list(&p["KeySchema"])
        .iter()
        .map(|k| {
            format!(
                "{}:{}",
                k["AttributeName"].as_str().unwrap(),
                k["KeyType"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(keys, set(&["pk:HASH", "sk:RANGE"]));
    assert_eq!(
        p["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some("expires_at")
    );
    assert_eq!(
        p["TimeToLiveSpecification"]["Enabled"].as_bool(),
        Some(true)
    );
    assert_eq!(
        p["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"].as_bool(),
        Some(true)
    );
    assert_eq!(p["SSESpecification"]["SSEEnabled"].as_bool(), Some(true));
}

#[test]
fn logs_alarms_outputs_and_checkov_skips_are_in_place() {
    // As written: the optional alarm topic is an Fn::If the test looks at.
    let t = cfn::load();
    for bin in ALL_FUNCTIONS {
        let f = &function(&t, bin)["Properties"];
        let lg =
            target(&f["LoggingConfig"]["LogGroup"]).unwrap_or_else(|| panic!("{bin}: log group"));
        let lg = resource(&t, &lg);
        assert_eq!(lg["Type"].as_str(), Some("AWS::Logs::LogGroup"), "{bin}");
        assert!(
            !lg["Properties"]["RetentionInDays"].is_null(),
            "{bin}: retention"
        );
    }

    let alarms: Vec<&Value> = resource_ids_of_type(&t, "AWS::CloudWatch::Alarm")
        .into_iter()
        .map(|id| &t["Resources"][id.as_str()])
        .collect();
    let watched = |metric: &str, dim: &str| -> BTreeSet<String> {
        alarms
            .iter()
            .filter(|a| a["Properties"]["MetricName"].as_str() == Some(metric))
            .flat_map(|a| list(&a["Properties"]["Dimensions"]))
            .filter(|d| d["Name"].as_str() == Some(dim))
            .filter_map(|d| target(&d["Value"]))
            .collect()
    };
    assert!(
        watched("ApproximateAgeOfOldestMessage", "QueueName").contains("DeadLetterQueue"),
        "an alarm watches the age of the dead-letter queue's oldest message"
    );
    let fn_ids: BTreeSet<String> = functions(&t).into_values().collect();
    assert_eq!(
        watched("Errors", "FunctionName"),
        fn_ids,
        "every function's errors raise an alarm"
    );
    for a in &alarms {
        let actions = &a["Properties"]["AlarmActions"]["Fn::If"];
        assert_eq!(
            list(actions).first().and_then(Value::as_str),
            Some("HasAlarmTopic"),
            "optional topic"
        );
    }

    let outputs = t["Outputs"].as_mapping().expect("Outputs");
    for o in [
        "ApiUrl",
        "LeadQueueUrl",
        "LeadQueueArn",
        "DeadLetterQueueUrl",
        "TableName",
        "ChatPipelineSendPolicyArn",
    ] {
        assert!(outputs.contains_key(o), "output {o}");
    }
    let chat = &resource(&t, "ChatPipelineSendPolicy")["Properties"]["PolicyDocument"];
    let stmts = list(&chat["Statement"]);
    assert_eq!(stmts.len(), 1);
    assert_eq!(strings(&stmts[0]["Action"]), set(&["sqs:SendMessage"]));
    assert_eq!(target(&stmts[0]["Resource"]).as_deref(), Some("LeadQueue"));

    // Every check skipped for checkov is named with its reason, next to the resource.
    for (id, r) in resources(&t) {
        for skip in list(&r["Metadata"]["checkov"]["skip"]) {
            let check = skip["id"].as_str().unwrap_or_default();
            let why = skip["comment"].as_str().unwrap_or_default();
            assert!(check.starts_with("CKV_"), "{id:?}: skip names a check");
            assert!(why.len() > 20, "{id:?}: {check} is skipped with a reason");
        }
    }
}

/// `(metric name, dimensions)` of every metric an alarm reads in the connector's namespace, also
/// inside metric math.
fn alarm_metrics(t: &Value) -> Vec<(String, String, BTreeMap<String, String>)> {
    let mut out = Vec::new();
    for id in resource_ids_of_type(t, "AWS::CloudWatch::Alarm") {
        let p = &t["Resources"][id.as_str()]["Properties"];
        let math = list(&p["Metrics"]);
        let mut stats = vec![p];
        stats.extend(math.iter().map(|q| &q["MetricStat"]["Metric"]));
        for m in stats {
            if m["Namespace"].as_str() != Some(shared::metrics::NAMESPACE) {
                continue;
            }
            let dims = list(&m["Dimensions"])
                .iter()
                .map(|d| {
                    let v = d["Value"].as_str().unwrap_or("(not a literal)");
                    (
                        d["Name"].as_str().unwrap_or_default().to_owned(),
                        v.to_owned(),
                    )
                })
                .collect();
            let name = m["MetricName"].as_str().unwrap_or_default().to_owned();
            out.push((id.clone(), name, dims));
        }
    }
    out
}

/// The alarms and the dashboard read only metrics the code writes (the names, units' dimensions
/// and `Function` values of `shared::metrics`, not a list kept here), the dashboard shows every
/// one of them, and each alarm the operator relies on exists and says what to do.
#[test]
fn alarms_and_the_dashboard_read_the_metrics_the_code_writes() {
    use shared::metrics::{FUNCTION_DIMENSION, Metric, NAMESPACE, function};
    let t = cfn::load();
    let written: BTreeMap<&str, Metric> = Metric::ALL.iter().map(|m| (m.name(), *m)).collect();
    let read = alarm_metrics(&t);
    for (alarm, name, dims) in &read {
        let m = written
            .get(name.as_str())
            .unwrap_or_else(|| panic!("{alarm}: {name} is not a metric the code writes"));
        let f = dims.get(FUNCTION_DIMENSION).map(String::as_str);
        assert!(
            f.is_some_and(|f| function::ALL.contains(&f)),
            "{alarm}: {name} needs a Function the code writes, not {f:?}"
        );
        let extra: Vec<&String> = dims.keys().filter(|k| *k != FUNCTION_DIMENSION).collect();
        match m.label() {
            None => assert!(
                extra.is_empty(),
                "{alarm}: {name} has no {extra:?} dimension"
            ),
            Some(l) => assert!(
                extra.is_empty() || extra == [l],
                "{alarm}: {name}'s only extra dimension is {l}, not {extra:?}"
            ),
        }
    }
    let by_metric: BTreeSet<&str> = read.iter().map(|(_, n, _)| n.as_str()).collect();
    for (m, why) in [
        (Metric::EventsParked, "parked events growing"),
        (Metric::EventsDeadLettered, "share of failed syncs"),
        (Metric::EventsReceived, "share of failed syncs"),
        (
            Metric::IntegrationsErrored,
            "an integration errored by our side",
        ),
        (Metric::LeadLatencyMs, "lead latency p95"),
    ] {
        assert!(
            by_metric.contains(m.name()),
            "an alarm for {why} reads {m:?}"
        );
    }
    let stored = read
        .iter()
        .filter(|(_, n, _)| n == Metric::IntegrationsErrored.name())
        .flat_map(|(_, _, d)| d.get("Class").cloned())
        .collect::<BTreeSet<_>>();
    assert_eq!(
        stored,
        set(&[shared::sync::failure::errored::STORED_CONNECTION]),
        "the operator's alarm watches the operator-side class only"
    );
    for id in resource_ids_of_type(&t, "AWS::CloudWatch::Alarm") {
        let d = t["Resources"][id.as_str()]["Properties"]["AlarmDescription"]
            .as_str()
            .unwrap_or_default();
        assert!(d.len() > 60, "{id}: the description says what to do: {d:?}");
    }

    // The dashboard: every metric row and SEARCH in our namespace names a written metric, and
    // every written metric is on it.
    let dash = resource_ids_of_type(&t, "AWS::CloudWatch::Dashboard");
    assert_eq!(dash.len(), 1, "one dashboard");
    let body = t["Resources"][dash[0].as_str()]["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .expect("DashboardBody is an Fn::Sub string");
    let body: serde_json::Value = serde_json::from_str(body).expect("the body is JSON");
    let mut shown = BTreeSet::new();
    for w in body["widgets"].as_array().expect("widgets") {
        for row in w["properties"]["metrics"].as_array().into_iter().flatten() {
            if row[0] == NAMESPACE {
                shown.insert(row[1].as_str().unwrap_or_default().to_owned());
            }
            if let Some(e) = row[0]["expression"].as_str()
                && e.contains(NAMESPACE)
                && let Some(rest) = e.split("MetricName=\"").nth(1)
            {
                shown.insert(rest.split('"').next().unwrap_or_default().to_owned());
            }
        }
    }
    let all: BTreeSet<String> = written.keys().map(|n| (*n).to_owned()).collect();
    let unknown: Vec<&String> = shown.difference(&all).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard shows unwritten metrics {unknown:?}"
    );
    let missing: Vec<&String> = all.difference(&shown).collect();
    assert!(missing.is_empty(), "the dashboard lacks {missing:?}");
}

/// lead-watch's triggers: a schedule whose period is the template parameter, invoking the
/// function through a role that may do only that; the watch queue's mapping with partial batch
/// responses; every queue it uses has a dead-letter queue.
#[test]
fn lead_watch_runs_on_a_schedule_and_its_queues_have_dead_letter_queues() {
    let t = template();
    let id = functions(&t).remove("lead-watch").expect("lead-watch");
    let schedules = resource_ids_of_type(&t, "AWS::Scheduler::Schedule");
    assert_eq!(schedules.len(), 1, "one schedule");
    let sched = &resource(&t, &schedules[0])["Properties"];
    assert_eq!(
        target(&sched["Target"]["Arn"]).as_deref(),
        Some(id.as_str())
    );
    let expr = serde_yaml::to_string(&sched["ScheduleExpression"]).unwrap();
    assert!(
        expr.contains("rate(1 minute)"),
        "every minute by default: {expr}"
    );
    let mut five = MODES[0].1.to_vec();
    five.push(("WatchPeriodMinutes", "5"));
    let other = cfn::template_for(&five);
    let sched5 = &other["Resources"][schedules[0].as_str()]["Properties"]["ScheduleExpression"];
    assert!(
        serde_yaml::to_string(sched5)
            .unwrap()
            .contains("rate(${WatchPeriodMinutes} minutes)"),
        "the period is the template parameter: {sched5:?}"
    );
    assert_eq!(
        t["Parameters"]["WatchPeriodMinutes"]["Default"].as_i64(),
        Some(1)
    );
    let role = target(&sched["Target"]["RoleArn"]).expect("the schedule's role");
    let role = resource(&t, &role);
    assert_eq!(
        role["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Principal"]["Service"]
            .as_str(),
        Some("scheduler.amazonaws.com")
    );
    let statements: Vec<Value> = list(&role["Properties"]["Policies"])
        .iter()
        .flat_map(|p| list(&p["PolicyDocument"]["Statement"]))
        .collect();
    assert_eq!(statements.len(), 1, "the scheduler role may do one thing");
    assert_eq!(
        statements[0]["Action"].as_str(),
        Some("lambda:InvokeFunction")
    );
    assert_eq!(
        target(&statements[0]["Resource"]).as_deref(),
        Some(id.as_str())
    );

    let mappings: Vec<&Value> = resource_ids_of_type(&t, "AWS::Lambda::EventSourceMapping")
        .iter()
        .map(|m| &t["Resources"][m.as_str()]["Properties"])
        .filter(|p| target(&p["FunctionName"]).as_deref() == Some(id.as_str()))
        .collect();
    assert_eq!(mappings.len(), 1, "one mapping drives lead-watch");
    assert_eq!(
        target(&mappings[0]["EventSourceArn"]).as_deref(),
        Some("WatchQueue")
    );
    assert_eq!(
        strings(&mappings[0]["FunctionResponseTypes"]),
        set(&["ReportBatchItemFailures"])
    );
    let timeout = resource(&t, &id)["Properties"]["Timeout"].as_i64().unwrap();
    for (queue, dlq, fifo) in [
        ("WatchQueue", "WatchDeadLetterQueue", false),
        ("LeadChangesQueue", "LeadChangesDeadLetterQueue", true),
    ] {
        let q = &resource(&t, queue)["Properties"];
        assert_eq!(
            target(&q["RedrivePolicy"]["deadLetterTargetArn"]).as_deref(),
            Some(dlq),
            "{queue} has a dead-letter queue"
        );
        assert_eq!(q["FifoQueue"].as_bool().unwrap_or(false), fifo, "{queue}");
        assert_eq!(
            resource(&t, dlq)["Properties"]["FifoQueue"]
                .as_bool()
                .unwrap_or(false),
            fifo,
            "{dlq} is of its queue's kind"
        );
    }
    let visibility = resource(&t, "WatchQueue")["Properties"]["VisibilityTimeout"]
        .as_i64()
        .unwrap();
    assert!(
        visibility >= 6 * timeout,
        "watch queue visibility {visibility} vs timeout {timeout}"
    );
    let env = &resource(&t, &id)["Properties"]["Environment"]["Variables"];
    assert_eq!(
        target(&env["WATCH_QUEUE_URL"]).as_deref(),
        Some("WatchQueue")
    );
    assert_eq!(
        target(&env["LEAD_CHANGES_QUEUE_URL"]).as_deref(),
        Some("LeadChangesQueue")
    );
}
