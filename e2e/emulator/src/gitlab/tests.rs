//! The GitLab face against GitLab's documented example responses.
//!
//! Every endpoint listed in `test-data/gitlab/rest/index.json` is called over HTTP on an
//! in-process emulator holding a realistic project (a merge request with two changed files, an
//! approval, notes and commit statuses made through the admin API and the REST API). Each body
//! must have the example's keys (recursively; lists by their first element) and JSON types,
//! carry the live values, and contain no URL, e-mail address or SHA of the example. The
//! examples are read from the files here, not from the emulator's embedded copies.
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use http::StatusCode;
use serde_json::{Value, json};

use super::{NEUTRAL, Pipeline, conform, nullable, shape};
use crate::state::Status;
use crate::{
    Emulator, EmulatorConfig, EmulatorHandle, Forge, PullSpec, PushSpec, RepoSpec, StatusSpec,
};

const TOKEN: &str = "glpat-emulator-alice";
const PROJECT: &str = "grp/sub/proj";
const TITLE: &str = "Preview the payments service";
const NOTE: &str = "Preview: deploying";
const PREVIEW_URL: &str = "https://pr-1.preview.test/";

fn rest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../test-data/gitlab/rest")
}

fn read_json(name: &str) -> Value {
    let path = rest_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path:?}: {e}"))
}

/// `index.json`: example file → method, path, status.
fn index() -> BTreeMap<String, Value> {
    serde_json::from_value(read_json("index.json")).expect("index.json is an object")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// How `live` departs from the documented `example`: keys missing or extra in every object both
/// have, and JSON types that differ (a `null` example admits any type; a `null` live value is
/// admitted where [`nullable`] says GitLab sends one). Lists compare by their first elements.
fn differences(example: &Value, live: &Value, path: &str, nulls: &[&str], out: &mut Vec<String>) {
    match (example, live) {
        (Value::Object(ex), Value::Object(lv)) => {
            let ek: BTreeSet<&String> = ex.keys().collect();
            let lk: BTreeSet<&String> = lv.keys().collect();
            for k in ek.difference(&lk) {
                out.push(format!("missing key {path}{}{k}", dot(path)));
            }
            for k in lk.difference(&ek) {
                out.push(format!("extra key {path}{}{k}", dot(path)));
            }
            for k in ek.intersection(&lk) {
                let p = format!("{path}{}{k}", dot(path));
                differences(&ex[*k], &lv[*k], &p, nulls, out);
            }
        }
        (Value::Array(ex), Value::Array(lv)) => {
            if let (Some(e), Some(l)) = (ex.first(), lv.first()) {
                differences(e, l, path, nulls, out);
            }
        }
        (Value::Null, _) => {}
        (_, Value::Null) if nulls.contains(&path) => {}
        (e, l) if kind(e) != kind(l) => {
            out.push(format!(
                "{path}: {} in the docs, {} served",
                kind(e),
                kind(l)
            ));
        }
        _ => {}
    }
}

fn dot(path: &str) -> &'static str {
    if path.is_empty() { "" } else { "." }
}

fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
        Value::Object(m) => m.values().for_each(|x| strings(x, out)),
        _ => {}
    }
}

/// URLs, hosts, e-mail addresses and SHAs of the example that appear in the served body.
fn leaked(example: &Value, live: &Value) -> Vec<String> {
    let served = live.to_string();
    let mut ex = Vec::new();
    strings(example, &mut ex);
    let mut needles = BTreeSet::new();
    for s in ex {
        let is_sha = s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit());
        if let Some((_, rest)) = s.split_once("://") {
            needles.insert(s.to_string());
            needles.insert(rest.split('/').next().unwrap_or(rest).to_string());
        } else if is_sha || s.contains('@') {
            needles.insert(s.to_string());
        }
    }
    needles
        .into_iter()
        .filter(|n| !n.is_empty() && served.contains(n.as_str()))
        .collect()
}

/// What the test made, to compare the served values with.
struct World {
    emu: EmulatorHandle,
    project_id: u64,
    head_sha: String,
    main_sha: String,
    /// Id of the first status of the head commit (so of its pipeline).
    pipeline_id: u64,
}

impl World {
    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.emu.gitlab_api_url())
    }
}

async fn call(
    method: &str,
    url: &str,
    body: Option<Value>,
) -> (StatusCode, http::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .request(method.parse().expect("method"), url)
        .header("private-token", TOKEN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let text = resp.text().await.expect("body");
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, headers, body)
}

/// A project with a merge request `feature` → `main` (one new file, one changed), labelled,
/// approved by carol, with a note by dave and a pending CI status on its head.
async fn world() -> World {
    let emu = Emulator::start(EmulatorConfig::default())
        .await
        .expect("emulator starts");
    emu.token(TOKEN, "alice").await.expect("token");
    let info = emu
        .create_repo(RepoSpec {
            forge: Forge::Gitlab,
            path: PROJECT.into(),
            default_branch: None,
            private: false,
            description: Some("Payments".into()),
            empty: false,
        })
        .await
        .expect("project");
    emu.set_collaborator(PROJECT, "dave", "write")
        .await
        .expect("collaborator");
    let push = emu
        .push(
            PROJECT,
            PushSpec {
                branch: "feature".into(),
                files: [
                    (
                        "deploy/app.yaml".to_string(),
                        Some("replicas: 2\n".to_string()),
                    ),
                    ("README.md".to_string(), Some("# payments\n".to_string())),
                ]
                .into(),
                message: Some("Deploy the payments service".into()),
                author: Some("bob".into()),
                ..Default::default()
            },
        )
        .await
        .expect("push");
    let pr = emu
        .open_pull(
            PROJECT,
            PullSpec {
                head: "feature".into(),
                title: TITLE.into(),
                body: Some("Adds the deployment.".into()),
                author: Some("bob".into()),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .expect("merge request");
    assert_eq!((pr.number, pr.head_sha.as_str()), (1, push.after.as_str()));
    emu.add_review(PROJECT, 1, "carol", "APPROVED")
        .await
        .expect("approval");
    emu.add_comment(PROJECT, 1, "dave", "Looks right")
        .await
        .expect("note");
    let ci = emu
        .set_status(
            PROJECT,
            &pr.head_sha,
            StatusSpec {
                context: "ci/build".into(),
                state: "pending".into(),
                description: Some("queued".into()),
                target_url: None,
                user: Some("ci-bot".into()),
            },
        )
        .await
        .expect("ci status");
    let main_sha = emu.branches(PROJECT).await.expect("branches")["main"].clone();
    World {
        emu,
        project_id: info.id,
        head_sha: pr.head_sha,
        main_sha,
        pipeline_id: ci.id,
    }
}

/// The request for one documented endpoint, from its `index.json` path.
fn request(w: &World, path: &str, file: &str) -> String {
    let p = path
        .replace(":id", &w.project_id.to_string())
        .replace(":merge_request_iid", "1")
        .replace(":sha", &w.head_sha)
        .replace(":branch", "feature");
    assert!(!p.contains(':'), "{file}: unknown parameter in {path}");
    w.api(&p)
}

fn body_for(file: &str) -> Option<Value> {
    match file {
        "post-commit-status.json" => Some(json!({
            "state": "success", "name": "pullwarden/preview", "description": "Ready",
            "target_url": PREVIEW_URL,
        })),
        "create-merge-request-note.json" => Some(json!({ "body": NOTE })),
        _ => None,
    }
}

/// Calls every documented endpoint once, writes first (so the reads see them), and returns
/// file → body.
async fn served(w: &World) -> BTreeMap<String, Value> {
    let mut entries: Vec<(String, Value)> = index().into_iter().collect();
    entries.sort_by_key(|(_, e)| e["method"] != "POST");
    let mut out = BTreeMap::new();
    for (file, entry) in entries {
        let method = entry["method"].as_str().expect("method");
        let url = request(w, entry["path"].as_str().expect("path"), &file);
        let (status, _, body) = call(method, &url, body_for(&file)).await;
        assert_eq!(
            status.as_u16() as u64,
            entry["status"].as_u64().expect("status"),
            "{method} {url}: {body}"
        );
        out.insert(file, body);
    }
    out
}

#[tokio::test]
async fn every_documented_endpoint_answers_with_the_documented_keys_and_types() {
    let w = world().await;
    let bodies = served(&w).await;
    assert_eq!(bodies.len(), 11, "one body per documented example");
    let mut problems = Vec::new();
    for (file, live) in &bodies {
        let example = read_json(file);
        let mut diffs = Vec::new();
        differences(&example, live, "", nullable(file), &mut diffs);
        problems.extend(diffs.into_iter().map(|d| format!("{file}: {d}")));
        problems.extend(
            leaked(&example, live)
                .into_iter()
                .map(|l| format!("{file}: serves the example's {l:?}")),
        );
    }
    // Every documented key that is not a flag or null-able is modelled: none fell back to a
    // neutral value (so dropping a live value from a builder fails here).
    problems.extend(
        NEUTRAL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|p| format!("unmodelled, served neutral: {p}")),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[tokio::test]
async fn documented_bodies_carry_the_live_project_merge_request_notes_and_statuses() {
    let w = world().await;
    let b = served(&w).await;
    let sha = w.head_sha.as_str();
    let web = w.emu.url();
    for (file, v) in &b {
        match file.as_str() {
            "list-project-merge-requests.json" => {
                let m = &v[0];
                assert_eq!(v.as_array().map(Vec::len), Some(1));
                assert_eq!(
                    (&m["iid"], &m["title"], &m["sha"], &m["author"]["username"]),
                    (&json!(1), &json!(TITLE), &json!(sha), &json!("bob"))
                );
                assert_eq!(
                    (&m["labels"], &m["state"]),
                    (&json!(["preview"]), &json!("opened"))
                );
                assert_eq!(
                    (&m["project_id"], &m["user_notes_count"]),
                    (&json!(w.project_id), &json!(2))
                );
                assert_eq!(m["references"]["full"], format!("{PROJECT}!1"));
                assert!(m["web_url"].as_str().is_some_and(|u| u.starts_with(web)));
            }
            "get-single-merge-request.json" => {
                assert_eq!(
                    (&v["iid"], &v["title"], &v["sha"]),
                    (&json!(1), &json!(TITLE), &json!(sha))
                );
                assert_eq!(v["description"], "Adds the deployment.");
                assert_eq!(
                    v["diff_refs"],
                    json!({"base_sha": w.main_sha, "head_sha": sha, "start_sha": w.main_sha})
                );
                assert_eq!(v["changes_count"], "2");
                // The pending CI status and the success posted above: one external pipeline
                // on the source branch, running.
                let p = &v["head_pipeline"];
                assert_eq!(
                    (&p["id"], &p["sha"], &p["ref"], &p["status"], &p["source"]),
                    (
                        &json!(w.pipeline_id),
                        &json!(sha),
                        &json!("feature"),
                        &json!("running"),
                        &json!("external")
                    )
                );
                assert_eq!(p["user"]["username"], "ci-bot");
                assert_eq!(p["detailed_status"]["group"], "running");
                assert_eq!(v["pipeline"]["id"], p["id"]);
                assert_eq!(v["latest_build_started_at"], p["started_at"]);
                assert!(
                    p["finished_at"].is_null(),
                    "a running pipeline has not finished"
                );
            }
            "list-merge-request-diffs.json" => {
                let paths: BTreeSet<&str> = v
                    .as_array()
                    .expect("list")
                    .iter()
                    .filter_map(|d| d["new_path"].as_str())
                    .collect();
                assert_eq!(paths, BTreeSet::from(["README.md", "deploy/app.yaml"]));
                let app = v
                    .as_array()
                    .and_then(|a| a.iter().find(|d| d["new_path"] == "deploy/app.yaml"))
                    .expect("app.yaml");
                assert_eq!(
                    (&app["new_file"], &app["a_mode"]),
                    (&json!(true), &json!("0"))
                );
                assert!(
                    app["diff"]
                        .as_str()
                        .is_some_and(|d| d.contains("+replicas: 2"))
                );
            }
            "get-merge-request-approvals.json" => {
                assert_eq!((&v["iid"], &v["title"]), (&json!(1), &json!(TITLE)));
                assert_eq!(v["approved_by"][0]["user"]["username"], "carol");
                assert_eq!(v["approved_by"].as_array().map(Vec::len), Some(1));
            }
            "get-merge-request-approval-state.json" => {
                let rule = &v["rules"][0];
                assert_eq!(rule["approved_by"][0]["username"], "carol");
                let eligible: BTreeSet<&str> = rule["eligible_approvers"]
                    .as_array()
                    .expect("list")
                    .iter()
                    .filter_map(|u| u["username"].as_str())
                    .collect();
                assert_eq!(eligible, BTreeSet::from(["carol", "dave"]));
                assert_eq!(v["approval_rules_overwritten"], false);
            }
            "post-commit-status.json" => {
                assert_eq!(
                    (&v["name"], &v["status"], &v["sha"], &v["target_url"]),
                    (
                        &json!("pullwarden/preview"),
                        &json!("success"),
                        &json!(sha),
                        &json!(PREVIEW_URL)
                    )
                );
                assert_eq!(
                    (&v["author"]["username"], &v["ref"]),
                    (&json!("alice"), &json!("feature"))
                );
                assert_eq!(v["description"], "Ready");
            }
            "list-commit-statuses.json" => {
                let names: Vec<&str> = v
                    .as_array()
                    .expect("list")
                    .iter()
                    .filter_map(|s| s["name"].as_str())
                    .collect();
                assert_eq!(names, ["pullwarden/preview", "ci/build"], "newest first");
                assert_eq!(
                    (&v[1]["status"], &v[1]["sha"]),
                    (&json!("pending"), &json!(sha))
                );
                assert_eq!(v[1]["id"], json!(w.pipeline_id));
            }
            "get-single-commit.json" => {
                assert_eq!(
                    (&v["id"], &v["title"]),
                    (&json!(sha), &json!("Deploy the payments service"))
                );
                assert_eq!(v["parent_ids"], json!([w.main_sha]));
                let stat = |k: &str| v["stats"][k].as_u64().unwrap_or(u64::MAX);
                assert_eq!(stat("additions"), 2, "one line in each file");
                assert!(stat("deletions") >= 1, "the README's old line");
                assert_eq!(stat("total"), stat("additions") + stat("deletions"));
                assert_eq!(
                    (
                        &v["status"],
                        &v["last_pipeline"]["id"],
                        &v["last_pipeline"]["sha"]
                    ),
                    (&json!("running"), &json!(w.pipeline_id), &json!(sha))
                );
            }
            "create-merge-request-note.json" => {
                assert_eq!(
                    (&v["body"], &v["author"]["username"]),
                    (&json!(NOTE), &json!("alice"))
                );
                assert_eq!(
                    (&v["noteable_iid"], &v["noteable_type"], &v["project_id"]),
                    (&json!(1), &json!("MergeRequest"), &json!(w.project_id))
                );
                assert!(v["id"].as_u64().is_some_and(|id| id > 0));
            }
            "list-branches.json" => {
                let names: Vec<&str> = v
                    .as_array()
                    .expect("list")
                    .iter()
                    .filter_map(|b| b["name"].as_str())
                    .collect();
                assert_eq!(names, ["feature", "main"]);
                assert_eq!(
                    (&v[1]["default"], &v[1]["commit"]["id"]),
                    (&json!(true), &json!(w.main_sha))
                );
            }
            "get-single-branch.json" => {
                assert_eq!(
                    (
                        &v["name"],
                        &v["commit"]["id"],
                        &v["default"],
                        &v["protected"]
                    ),
                    (&json!("feature"), &json!(sha), &json!(false), &json!(false))
                );
                assert_eq!(v["commit"]["author_name"], "Bob");
            }
            other => panic!("{other} is documented but has no live-value check here"),
        }
    }
}

#[tokio::test]
async fn head_pipeline_follows_the_statuses_of_the_head_commit() {
    let w = world().await;
    let set = |name: &'static str, state: &'static str| {
        w.emu.set_status(
            PROJECT,
            &w.head_sha,
            StatusSpec {
                context: name.into(),
                state: state.into(),
                description: None,
                target_url: None,
                user: None,
            },
        )
    };
    assert_eq!(
        get(&w, "/merge_requests/1").await["head_pipeline"]["status"],
        "pending"
    );
    set("ci/build", "success").await.expect("status");
    let v = get(&w, "/merge_requests/1").await;
    let p = &v["head_pipeline"];
    assert_eq!(
        (&p["status"], &p["id"]),
        (&json!("success"), &json!(w.pipeline_id))
    );
    assert_eq!(p["detailed_status"]["label"], "passed");
    assert!(p["finished_at"].is_string() && p["duration"].is_number());
    set("ci/lint", "failed").await.expect("status");
    assert_eq!(
        get(&w, "/merge_requests/1").await["head_pipeline"]["status"],
        "failed"
    );
    // A status on another commit does not touch this merge request's pipeline.
    set_on_main(&w).await;
    assert_eq!(
        get(&w, "/merge_requests/1").await["head_pipeline"]["id"],
        json!(w.pipeline_id)
    );
    // No status at all: no pipeline, as on GitLab.
    let other = w
        .emu
        .push(
            PROJECT,
            PushSpec {
                branch: "feature".into(),
                files: [("README.md".to_string(), Some("# v2\n".to_string()))].into(),
                ..Default::default()
            },
        )
        .await
        .expect("push");
    let v = get(&w, "/merge_requests/1").await;
    assert_eq!(v["sha"], json!(other.after));
    assert_eq!(
        (&v["head_pipeline"], &v["pipeline"]),
        (&Value::Null, &Value::Null)
    );
    let c = get(&w, &format!("/repository/commits/{}", other.after)).await;
    assert_eq!(
        (&c["last_pipeline"], &c["status"]),
        (&Value::Null, &Value::Null)
    );
}

/// `GET /projects/:id{suffix}` of the test project.
async fn get(w: &World, suffix: &str) -> Value {
    let url = w.api(&format!("/projects/{}{suffix}", w.project_id));
    call("GET", &url, None).await.2
}

async fn set_on_main(w: &World) {
    w.emu
        .set_status(
            PROJECT,
            &w.main_sha,
            StatusSpec {
                context: "ci/build".into(),
                state: "running".into(),
                description: None,
                target_url: None,
                user: None,
            },
        )
        .await
        .expect("status on main");
}

#[tokio::test]
async fn documented_lists_still_paginate_and_answer_304() {
    let w = world().await;
    let url = w.api(&format!(
        "/projects/{}/repository/branches?per_page=1",
        w.project_id
    ));
    let (_, h, first) = call("GET", &url, None).await;
    let header = |name: &str| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    assert_eq!(
        (header("x-total"), header("x-next-page")),
        ("2".into(), "2".into())
    );
    assert_eq!(first[0]["name"], "feature");
    let etag = header("etag");
    assert!(!etag.is_empty());
    let again = reqwest::Client::new()
        .get(&url)
        .header("private-token", TOKEN)
        .header("if-none-match", etag)
        .send()
        .await
        .expect("request");
    assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
}

#[tokio::test]
async fn commit_signature_is_404_unless_the_commit_is_verified() {
    let w = world().await;
    let sig = |sha: String| {
        let url = w.api(&format!(
            "/projects/{}/repository/commits/{sha}/signature",
            w.project_id
        ));
        async move { call("GET", &url, None).await }
    };
    let (status, _, body) = sig(w.head_sha.clone()).await;
    assert_eq!(
        (status, body),
        (
            StatusCode::NOT_FOUND,
            json!({"message": "404 Signature Not Found"})
        )
    );
    let signed = w
        .emu
        .push(
            PROJECT,
            PushSpec {
                branch: "signed".into(),
                files: [("a".to_string(), Some("b\n".to_string()))].into(),
                verified: true,
                ..Default::default()
            },
        )
        .await
        .expect("push");
    let (status, _, body) = sig(signed.after).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["verification_status"], "verified");
}

#[test]
fn the_comparison_catches_a_dropped_renamed_or_retyped_field() {
    let example = read_json("get-single-merge-request.json");
    let mut live = example.clone();
    let mut diffs = Vec::new();
    differences(&example, &live, "", &[], &mut diffs);
    assert!(diffs.is_empty(), "{diffs:?}");
    let m = live.as_object_mut().expect("object");
    m.remove("sha");
    let v = m.remove("web_url").expect("web_url");
    m.insert("url".into(), v);
    m["diff_refs"]
        .as_object_mut()
        .expect("object")
        .remove("start_sha");
    m.insert("iid".into(), json!("1"));
    m.insert("head_pipeline".into(), Value::Null);
    differences(&example, &live, "", &[], &mut diffs);
    let found: BTreeSet<&str> = diffs.iter().map(String::as_str).collect();
    assert_eq!(
        found,
        BTreeSet::from([
            "missing key diff_refs.start_sha",
            "head_pipeline: object in the docs, null served",
            "iid: number in the docs, string served",
            "missing key sha",
            "missing key web_url",
            "extra key url",
        ])
    );
    // A null the docs admit is not a difference.
    let mut diffs = Vec::new();
    differences(&example, &live, "", &["head_pipeline"], &mut diffs);
    assert!(
        !diffs.iter().any(|d| d.starts_with("head_pipeline")),
        "{diffs:?}"
    );
}

#[test]
fn conform_keeps_exactly_the_example_keys_and_fills_unmodelled_ones() {
    let example = json!({
        "id": 5, "title": "Docs title", "flag": true, "gone": null, "when": "2016-06-08T00:19:52.638Z",
        "count": 7, "tags": ["a"], "user": {"id": 1, "username": "root", "web_url": "http://localhost/root"},
        "items": [{"name": "x", "ok": false}], "nested": {"on": true, "label": "docs"},
    });
    let live = json!({
        "id": 42, "title": "Live title", "extra": "dropped",
        "user": {"id": 9, "username": "alice", "web_url": "http://127.0.0.1/alice", "email": "a@b"},
        "items": [{"name": "live", "ok": true, "more": 1}, {"name": "two"}],
    });
    let mut neutral = Vec::new();
    let out = shape(&example, Some(live), "", &["when"], &mut neutral);
    assert_eq!(
        out,
        json!({
            "id": 42, "title": "Live title", "flag": true, "gone": null, "when": null,
            "count": 0, "tags": [], "user": {"id": 9, "username": "alice", "web_url": "http://127.0.0.1/alice"},
            "items": [{"name": "live", "ok": true}, {"name": "two", "ok": false}],
            "nested": {"on": true, "label": ""},
        })
    );
    assert_eq!(neutral, ["count", "nested.label", "tags"].map(String::from));
    // The embedded examples are the files (after the documented null → object substitutions).
    for (file, _) in index() {
        let shaped = conform(&file, read_json(&file));
        let mut diffs = Vec::new();
        differences(&read_json(&file), &shaped, "", &[], &mut diffs);
        assert!(diffs.is_empty(), "{file}: {diffs:?}");
    }
}

#[test]
fn pipeline_status_is_gitlabs_composite_of_the_latest_status_per_name() {
    let status = |id: u64, name: &str, state: &str| Status {
        id,
        sha: "a".repeat(40),
        context: name.into(),
        state: state.into(),
        description: None,
        target_url: None,
        creator: "ci".into(),
        git_ref: Some("feature".into()),
        created_at: 0,
        updated_at: 0,
    };
    let composite = |list: &[(&str, &str)]| {
        let owned: Vec<Status> = list
            .iter()
            .enumerate()
            .map(|(i, (n, s))| status(i as u64 + 1, n, s))
            .collect();
        Pipeline {
            id: 1,
            iid: 1,
            sha: "a",
            git_ref: None,
            statuses: owned.iter().collect(),
        }
        .status()
    };
    assert_eq!(composite(&[("a", "success"), ("b", "skipped")]), "success");
    assert_eq!(composite(&[("a", "skipped")]), "skipped");
    assert_eq!(composite(&[("a", "pending"), ("b", "success")]), "running");
    assert_eq!(composite(&[("a", "pending"), ("b", "created")]), "pending");
    assert_eq!(composite(&[("a", "running"), ("b", "failed")]), "running");
    assert_eq!(composite(&[("a", "failed"), ("b", "success")]), "failed");
    assert_eq!(
        composite(&[("a", "canceled"), ("b", "success")]),
        "canceled"
    );
    // A later status of the same name replaces the earlier one (a retried job).
    assert_eq!(composite(&[("a", "failed"), ("a", "success")]), "success");
    assert_eq!(composite(&[("a", "failure")]), "failed");
}
