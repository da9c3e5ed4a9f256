//! `pullwarden gate test` as a user runs it: the built binary on the files in examples/gates/,
//! checked by exit code and output.

use std::path::PathBuf;
use std::process::{Command, Output};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/gates")
}

fn gate_test(pr: &str, extra: &[&str]) -> Output {
    let dir = examples();
    Command::new(env!("CARGO_BIN_EXE_pullwarden"))
        .args(["gate", "test", "--gate"])
        .arg(dir.join("gate.yaml"))
        .arg("--pr")
        .arg(dir.join(pr))
        .args(extra)
        .output()
        .expect("run pullwarden")
}

fn text(b: &[u8]) -> String {
    String::from_utf8(b.to_vec()).expect("UTF-8 output")
}

#[test]
fn passing_snapshot_exits_0_with_the_table() {
    let out = gate_test("pr-passing.json", &[]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0],
        "gate web-merge-policy, pull request #482 at 3f2c9a1 (feature/persistent-cart → main)"
    );
    assert_eq!(lines[2], "RULE                RESULT   REASON");
    assert_eq!(
        lines[6],
        "docs_only           skipped  skipped (if is false)"
    );
    assert_eq!(lines.last(), Some(&"result: passed (7/7 rules passed)"));
}

#[test]
fn failing_github_bundle_exits_1_and_never_prints_the_key() {
    let key = "AKIAFAKEFAKEFAKEFAKE";
    let input = std::fs::read_to_string(examples().join("pr-failing.json")).unwrap();
    assert!(input.contains(key), "the example must hold the fake key");
    for extra in [&[][..], &["--explain"], &["--output", "json"]] {
        let out = gate_test("pr-failing.json", extra);
        let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stdout}{stderr}");
        assert!(
            !stdout.contains(key) && !stderr.contains(key),
            "{extra:?} leaked the key"
        );
        assert!(
            stdout.contains("deploy/staging.env:3 (aws-access-key-id)"),
            "{extra:?}: {stdout}"
        );
    }
    let out = gate_test("pr-failing.json", &["--output", "json"]);
    let verdict: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON verdict");
    assert_eq!(verdict["result"], "Failed");
    assert_eq!(verdict["rules"][1]["name"], "maintainers");
    assert_eq!(verdict["rules"][1]["outcome"], "Fail");
    let explained = text(&gate_test("pr-failing.json", &["--explain"]).stdout);
    assert!(
        explained.contains("\nmaintainers: fail\n  approvals 1/2\n  - mo\n  - lee's approval is on an older commit\n"),
        "{explained}"
    );
}

#[test]
fn unreadable_or_invalid_input_exits_2() {
    let out = gate_test("no-such-file.json", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("--pr: "),
        "{}",
        text(&out.stderr)
    );
    // The gate itself as the pull request: not JSON.
    let out = gate_test("gate.yaml", &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with("--pr: not JSON"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn an_invalid_gate_exits_2_with_the_controllers_reason() {
    let dir = tempfile::tempdir().unwrap();
    let gate = std::fs::read_to_string(examples().join("gate.yaml"))
        .unwrap()
        .replace("'docs' in pr.labels", "'docs' in pr.lables");
    let path = dir.path().join("gate.yaml");
    std::fs::write(&path, gate).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_pullwarden"))
        .args(["gate", "test", "--gate"])
        .arg(&path)
        .arg("--pr")
        .arg(examples().join("pr-passing.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("InvalidExpression: rule docs_only: if: ") && stderr.contains("lables"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}
