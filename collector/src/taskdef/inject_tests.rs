//! Golden tests of `taskdef inject` and `taskdef daemon`, and targeted cases.
//!
//! Each `testdata/<case>.json` is injected with the options in [`CASES`] and compared byte
//! for byte with `testdata/<case>.injected.json`; the output is injected again and must not
//! change (idempotence). `testdata/daemon.json` is `taskdef daemon`'s default output. The
//! expected files are the spec: review them by eye. After a deliberate change, rewrite them
//! with
//!
//! ```sh
//! UPDATE_GOLDEN=1 cargo test -p collector --lib taskdef
//! ```
//!
//! and read the diff before committing it.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use super::*;
use crate::taskdef::{DaemonOptions, Part, daemon, to_pretty_json};

/// A golden case: the input file's stem and the `--logs` arguments.
const CASES: &[(&str, &[&str])] = &[
    (
        "bridge-web",
        &["web=/app/log/*.log", "nginx=/var/log/nginx/*.log"],
    ),
    (
        "awsvpc-batch",
        &["report=/var/log/reports/*.log", "report=/tmp/report-*.txt"],
    ),
    ("awsvpc-multi", &["worker=/var/log/worker/*.log"]),
    // The label already holds this glob: merged without a duplicate.
    ("describe-output", &["ingest=/var/log/ingest/*.log"]),
    ("host-mode", &[]),
];

fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("src/taskdef/testdata")
        .join(name)
}

/// Compares `got` with the golden file, or rewrites it under `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, got: &str) {
    let path = testdata(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, got).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    assert!(
        got == want,
        "{name} differs from the golden file (UPDATE_GOLDEN=1 rewrites it); got:\n{got}"
    );
}

fn options(logs: &[&str]) -> InjectOptions {
    InjectOptions {
        logs: logs.iter().map(|l| l.parse().unwrap()).collect(),
        ..InjectOptions::default()
    }
}

fn inject_value(v: Value, logs: &[&str]) -> Result<Value, TaskdefError> {
    inject(v, &options(logs)).map(|i| i.task_definition)
}

#[test]
fn golden_inject_outputs_and_idempotence() {
    for (case, logs) in CASES {
        let path = testdata(&format!("{case}.json"));
        let input = read_task_definition(&path).unwrap();
        let once = inject_value(input, logs).unwrap();
        let text = to_pretty_json(&once);
        check_golden(&format!("{case}.injected.json"), &text);
        let twice = inject_value(once, logs).unwrap();
        assert_eq!(to_pretty_json(&twice), text, "{case}: not idempotent");
    }
}

#[test]
fn golden_daemon_default() {
    let got = to_pretty_json(&daemon(&DaemonOptions::default(), Part::All));
    check_golden("daemon.json", &got);
}

#[test]
fn every_input_field_survives_in_order() {
    // Injection only adds: removing what it added gives the input back, field order included.
    let input = read_task_definition(&testdata("awsvpc-batch.json")).unwrap();
    let out = inject_value(input.clone(), &[]).unwrap();
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    let mut out_keys = keys(&out);
    out_keys.retain(|k| k != "volumes");
    assert_eq!(out_keys, keys(&input));
    let job_in = &input["containerDefinitions"][0];
    let job_out = &out["containerDefinitions"][0];
    for (k, v) in job_in.as_object().unwrap() {
        assert_eq!(&job_out[k], v, "field {k} changed");
    }
    assert_eq!(job_out["someFutureField"], json!({"x": 1}));
}

#[test]
fn describe_output_is_unwrapped_with_read_only_fields_named() {
    let input = read_task_definition(&testdata("describe-output.json")).unwrap();
    let injected = inject(input, &InjectOptions::default()).unwrap();
    let td = injected.task_definition.as_object().unwrap();
    for f in READ_ONLY_FIELDS {
        assert!(!td.contains_key(f), "{f} kept");
    }
    assert_eq!(td["tags"][0]["key"], "owner");
    assert!(injected.notes[0].contains(
        "taskDefinitionArn, revision, status, requiresAttributes, compatibilities, \
         registeredAt, registeredBy"
    ));
}

fn minimal(extra: Value) -> Value {
    let mut td = json!({
        "family": "t",
        "networkMode": "awsvpc",
        "containerDefinitions": [{"name": "job", "image": "job:1", "memory": 128}],
    });
    for (k, v) in extra.as_object().unwrap() {
        td.as_object_mut().unwrap().insert(k.clone(), v.clone());
    }
    td
}

#[test]
fn fargate_is_refused() {
    for requires in [json!(["FARGATE"]), json!(["EC2", "FARGATE"])] {
        let err =
            inject_value(minimal(json!({"requiresCompatibilities": requires})), &[]).unwrap_err();
        assert!(matches!(err, TaskdefError::Fargate { .. }), "{err}");
        assert!(err.to_string().contains("no collector daemon"), "{err}");
        assert!(err.is_usage());
    }
}

#[test]
fn none_network_mode_is_refused() {
    let err = inject_value(minimal(json!({"networkMode": "none"})), &[]).unwrap_err();
    assert!(matches!(err, TaskdefError::UnsupportedNetworkMode { ref mode } if mode == "none"));
}

#[test]
fn unknown_logs_container_lists_the_names() {
    let err = inject_value(minimal(json!({})), &["web=/var/log/*.log"]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, TaskdefError::UnknownLogsContainer { .. }));
    assert!(
        msg.contains("\"web\"") && msg.contains("[\"job\"]"),
        "{msg}"
    );
}

#[test]
fn bad_logs_arguments_are_refused() {
    let cases = [
        ("job", "expected CONTAINER=GLOB"),
        ("=/x", "no container name"),
        ("job=var/log/*.log", "absolute"),
        ("job=/a,/b", "one glob per --logs"),
    ];
    for (arg, want) in cases {
        let err = arg.parse::<LogsRequest>().unwrap_err();
        assert!(err.to_string().contains(want), "{arg}: {err}");
    }
}

#[test]
fn drain_timeout_must_be_under_the_stop_timeout() {
    for secs in [0, 120, 300] {
        let opts = InjectOptions {
            drain_timeout: Duration::from_secs(secs),
            ..InjectOptions::default()
        };
        let err = inject(minimal(json!({})), &opts).unwrap_err();
        assert!(matches!(err, TaskdefError::DrainTimeout { .. }), "{secs}s");
    }
    let opts = InjectOptions {
        drain_timeout: parse_drain_timeout("1m 30s").unwrap(),
        ..InjectOptions::default()
    };
    let out = inject(minimal(json!({})), &opts).unwrap().task_definition;
    let env = &out["containerDefinitions"][1]["environment"];
    assert!(
        env.as_array()
            .unwrap()
            .contains(&json!({"name": "COLLECTOR_DRAIN_TIMEOUT", "value": "90s"}))
    );
    assert!(parse_drain_timeout("soon").is_err());
}

#[test]
fn a_users_graphite_address_is_kept_in_env_or_secrets() {
    let td = json!({
        "networkMode": "bridge",
        "containerDefinitions": [
            {"name": "a", "environment": [{"name": "COLLECTOR_GRAPHITE_ADDR", "value": "relay:2003"}]},
            {"name": "b", "secrets": [{"name": "COLLECTOR_GRAPHITE_ADDR", "valueFrom": "arn:x"}]},
            {"name": "c"},
        ],
    });
    let out = inject_value(td, &[]).unwrap();
    let c = &out["containerDefinitions"];
    assert_eq!(
        c[0]["environment"],
        json!([{"name": "COLLECTOR_GRAPHITE_ADDR", "value": "relay:2003"}])
    );
    assert!(c[1].get("environment").is_none());
    assert_eq!(
        c[2]["environment"],
        json!([{"name": "COLLECTOR_GRAPHITE_ADDR", "value": "collector-companion:13290"}])
    );
}

#[test]
fn an_existing_companion_is_updated_in_place() {
    // One named as the contract says, one found by its label under another name: either way
    // one companion, where it was, with the user's extra fields and a pinned image kept.
    for name in ["collector-companion", "shim"] {
        let td = json!({
            "networkMode": "bridge",
            "containerDefinitions": [
                {"name": name, "image": "1234.dkr.ecr.eu-west-1.amazonaws.com/companion:7",
                 "essential": true, "memoryReservation": 32,
                 "dockerLabels": {"collector.role": "companion", "team": "infra"},
                 "environment": [{"name": "COLLECTOR_DRAIN_TIMEOUT", "value": "30s"},
                                 {"name": "RUST_LOG", "value": "debug"}]},
                {"name": "job", "links": [name], "dependsOn": [{"containerName": name, "condition": "START"}]},
            ],
        });
        let out = inject_value(td, &[]).unwrap();
        let c = out["containerDefinitions"].as_array().unwrap();
        assert_eq!(c.len(), 2, "{name}: duplicated");
        let companion = &c[0];
        assert_eq!(companion["name"], "collector-companion");
        assert_eq!(
            companion["image"],
            "1234.dkr.ecr.eu-west-1.amazonaws.com/companion:7"
        );
        assert_eq!(companion["essential"], false);
        assert_eq!(companion["memoryReservation"], 32);
        assert_eq!(companion["dockerLabels"]["team"], "infra");
        assert_eq!(
            companion["environment"],
            json!([
                {"name": "COLLECTOR_DRAIN_TIMEOUT", "value": "110s"},
                {"name": "RUST_LOG", "value": "debug"},
                {"name": "COLLECTOR_SOCKET_DIR", "value": "/run/collector"},
                {"name": "COLLECTOR_RELAY", "value": "on"},
            ])
        );
        assert_eq!(
            c[1]["dependsOn"],
            json!([{"containerName": "collector-companion", "condition": "HEALTHY"}])
        );
        let want_links = if name == "shim" {
            json!(["collector-companion:shim", "collector-companion"])
        } else {
            json!(["collector-companion"])
        };
        assert_eq!(c[1]["links"], want_links, "{name}");
        let volumes = out["volumes"].as_array().unwrap();
        assert_eq!(volumes.len(), 1);

        let opts = InjectOptions {
            companion_image: Some("companion:8".to_owned()),
            ..InjectOptions::default()
        };
        let again = inject(out, &opts).unwrap().task_definition;
        assert_eq!(again["containerDefinitions"][0]["image"], "companion:8");
    }
}

#[test]
fn two_companions_are_refused() {
    let td = json!({"containerDefinitions": [
        {"name": "collector-companion"},
        {"name": "other", "dockerLabels": {"collector.role": "companion"}},
        {"name": "job"},
    ]});
    let err = inject_value(td, &[]).unwrap_err();
    assert!(
        matches!(err, TaskdefError::SeveralCompanions { ref names } if names == &["collector-companion", "other"])
    );
}

#[test]
fn not_task_definitions_are_refused_clearly() {
    let cases = [
        (json!([1]), "a JSON array"),
        (json!({"family": "x"}), "keys [\"family\"]"),
        (
            json!({"taskDefinition": {"family": "x"}}),
            "no `containerDefinitions`",
        ),
        (
            json!({"containerDefinitions": {}}),
            "`containerDefinitions` is not an array",
        ),
    ];
    for (v, want) in cases {
        let err = inject_value(v, &[]).unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }
    let err = inject_value(json!({"containerDefinitions": [{"image": "x"}]}), &[]).unwrap_err();
    assert!(matches!(
        err,
        TaskdefError::ContainerWithoutName { index: 0 }
    ));
    let err = parse_task_definition("{", "t.json").unwrap_err();
    assert!(err.to_string().contains("t.json is not JSON"));
    let err = read_task_definition(&testdata("absent.json")).unwrap_err();
    assert!(!err.is_usage());
}
