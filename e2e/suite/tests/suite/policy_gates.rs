//! PolicyGate end to end against the forge emulator: approvals by a team, dismissed by a push;
//! a veto; secretScan failing a PR that adds a fake key without the key appearing anywhere;
//! CEL; `evaluate` mode; one status per (gate, head SHA, verdict) also across a SIGKILL; the
//! per-rule table as a check run with GitHub App credentials and as the gate's section of the
//! sticky comment otherwise (GitHub with a token, GitLab, Gitea).

use crate::support::*;
use kube::Api;
use pullwarden::api::{PolicyGate, Repository};
use pullwarden_emulator::{
    AppSpec, EmulatorHandle, Forge as EmuForge, HookSpec, InstallationSpec, PullSpec, PushSpec,
    StatusInfo,
};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(60);
const CONTEXT: &str = "pullwarden/gate/policy";
const ADVISORY: &str = "pullwarden/gate/advisory";

/// A format-correct AWS access key id that belongs to nobody (not one of AWS's documented
/// `…EXAMPLE` ids, which the scanner lets through), assembled so this file holds no key.
fn fake_key() -> String {
    format!("{}{}", "AKIA", "Q4ZT7XW2MPLN6KRB")
}

/// The statuses of `context` on `sha`, oldest first.
async fn statuses_of(
    emu: &EmulatorHandle,
    repo: &str,
    sha: &str,
    context: &str,
) -> Vec<StatusInfo> {
    let mut all: Vec<StatusInfo> = emu
        .statuses(repo, Some(sha))
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s.context == context)
        .collect();
    all.sort_by_key(|s| s.id);
    all
}

/// Waits until the newest status of `context` on `sha` satisfies `ok`.
async fn wait_status(
    log: &std::path::Path,
    emu: &EmulatorHandle,
    repo: &str,
    sha: &str,
    context: &str,
    what: &str,
    ok: impl Fn(&StatusInfo) -> bool,
) -> StatusInfo {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let all = statuses_of(emu, repo, sha, context).await;
        if let Some(last) = all.last()
            && ok(last)
        {
            return last.clone();
        }
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(60).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            panic!(
                "timed out waiting for {what} on {context} of {sha}: {all:?}\noperator log:\n{}",
                tail.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn gate(name: &str, repository: &str, extra: Value) -> Value {
    let mut spec = json!({"repositoryRef": {"name": repository}});
    if let (Some(base), Some(more)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in more {
            base.insert(k.clone(), v.clone());
        }
    }
    json!({"apiVersion": "pullwarden.dev/v1alpha1", "kind": "PolicyGate", "metadata": {"name": name}, "spec": spec})
}

fn policy_rules() -> Value {
    json!([
        {"name": "approvals", "approvals": {"count": 1, "teams": ["acme/reviewers"]}},
        {"name": "veto", "disapproval": {"users": ["carol"]}},
        {"name": "no_secrets", "secretScan": {}},
        {"name": "conventional", "cel": {"expression": "pr.title.startsWith('feat') || pr.title.startsWith('fix')", "message": "title must start with feat or fix"}},
    ])
}

#[tokio::test]
async fn github_gates_follow_reviews_pushes_and_vetoes_with_one_status_per_verdict() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "gates").await.unwrap();
    let n = ns.name().to_string();
    let emu = pullwarden_emulator::Emulator::start(Default::default())
        .await
        .unwrap();
    emu.token("ghp_gates", "pullwarden-bot").await.unwrap();
    let repo = github_repo(&emu, "acme/shop", &[("README.md", "shop\n")]).await;
    emu.set_team_membership("acme", "reviewers", "bob", "member")
        .await
        .unwrap();

    let mut op = operator_for(cluster, &n).await;
    secret(&client, &n, "shop-token", &[("token", "ghp_gates")]).await;
    secret(&client, &n, "shop-hook", &[("secret", "gate-hook")]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let gates: Api<PolicyGate> = Api::namespaced(client.clone(), &n);
    apply(
        &repos,
        "shop",
        &repository(
            "shop",
            &emu,
            &repo,
            "shop-token",
            json!({"interval": "30m", "webhook": {"secretRef": {"name": "shop-hook"}}}),
        ),
    )
    .await;
    emu.add_hook(
        "acme/shop",
        HookSpec {
            url: format!("http://{}/hooks/github", op.webhook_addr),
            secret: Some("gate-hook".into()),
            events: vec![],
        },
    )
    .await
    .unwrap();
    // A long interval: every re-evaluation below is driven by a webhook.
    apply(
        &gates,
        "policy",
        &gate(
            "policy",
            "shop",
            json!({"interval": "30m", "rules": policy_rules()}),
        ),
    )
    .await;
    apply(
        &gates,
        "advisory",
        &gate(
            "advisory",
            "shop",
            json!({"mode": "evaluate", "interval": "30m", "rules": [{"name": "small", "maxFiles": {"max": 0}}]}),
        ),
    )
    .await;

    // A PR adding a fake key, without approvals.
    let key = fake_key();
    let config = format!("REGION=eu\naws_access_key_id = {key}\n");
    let (first, number) = open_pull_with(
        &emu,
        "acme/shop",
        &[
            ("src/cart.rs", "pub fn cart() {}\n"),
            ("deploy/config.env", &config),
        ],
        "feat: cart",
    )
    .await;
    let failing = wait_status(
        &op.log_path,
        &emu,
        "acme/shop",
        &first,
        CONTEXT,
        "a failure",
        |s| s.state == "failure",
    )
    .await;
    let description = failing.description.clone().unwrap_or_default();
    assert!(description.starts_with("2/4 rules passed"), "{description}");
    assert!(description.contains("approvals 0/1"), "{description}");
    assert!(description.contains("no_secrets"), "{description}");
    // Evaluate mode never blocks, and says what it would have decided.
    let advisory = wait_status(
        &op.log_path,
        &emu,
        "acme/shop",
        &first,
        ADVISORY,
        "a report",
        |_| true,
    )
    .await;
    assert_eq!(advisory.state, "success");
    assert!(
        advisory
            .description
            .as_deref()
            .unwrap_or_default()
            .starts_with("evaluate only, would be failed: 0/1 rules passed"),
        "{advisory:?}"
    );
    // The table is the gate's section of the one sticky comment (token credentials: no check run).
    let comment = wait_comment(&emu, "acme/shop", number, "#### Gate `policy`").await;
    assert!(
        comment.contains("<!-- pullwarden:section gate/policy -->"),
        "{comment}"
    );
    assert!(comment.contains("deploy/config.env:2"), "{comment}");

    // bob (in acme/reviewers) approves: approvals passes, the secret still fails.
    emu.add_review("acme/shop", number, "bob", "APPROVED")
        .await
        .unwrap();
    wait_status(
        &op.log_path,
        &emu,
        "acme/shop",
        &first,
        CONTEXT,
        "approvals passing",
        |s| {
            s.description
                .as_deref()
                .is_some_and(|d| d.starts_with("3/4 rules passed"))
        },
    )
    .await;

    // Removing the key is a push: bob's approval is on the older commit and no longer counts.
    let fixed = emu
        .push_to_pull(
            "acme/shop",
            number,
            PushSpec {
                files: files(&[("deploy/config.env", "REGION=eu\n")]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let second = fixed.after.clone();
    let dismissed = wait_status(
        &op.log_path,
        &emu,
        "acme/shop",
        &second,
        CONTEXT,
        "the new head",
        |_| true,
    )
    .await;
    assert_eq!(dismissed.state, "failure");
    let d = dismissed.description.unwrap_or_default();
    assert!(d.starts_with("3/4 rules passed: approvals 0/1"), "{d}");

    // bob approves the new head: everything passes.
    emu.add_review("acme/shop", number, "bob", "APPROVED")
        .await
        .unwrap();
    wait_status(
        &op.log_path,
        &emu,
        "acme/shop",
        &second,
        CONTEXT,
        "success",
        |s| s.state == "success",
    )
    .await;

    // carol's veto fails it again.
    emu.add_review("acme/shop", number, "carol", "CHANGES_REQUESTED")
        .await
        .unwrap();
    let vetoed = wait_status(
        &op.log_path,
        &emu,
        "acme/shop",
        &second,
        CONTEXT,
        "the veto",
        |s| s.state == "failure",
    )
    .await;
    assert!(vetoed.description.unwrap_or_default().contains("veto"));

    // Re-evaluations of an unchanged pull request write nothing, also after a SIGKILL.
    let before = statuses_of(&emu, "acme/shop", &second, CONTEXT).await.len();
    reconcile_gate(&gates, "policy", "again-1").await;
    // Verdicts written are counted (per process: a restart starts from zero).
    let metrics = op.metrics().await.unwrap();
    assert!(
        metrics.contains(&format!(
            "pullwarden_gate_decisions_total{{gate=\"{n}/policy\",result=\"failed\",mode=\"enforce\"}}"
        )),
        "{metrics}"
    );
    let first_log = std::fs::read_to_string(&op.log_path).unwrap_or_default();
    op.kill();
    drop(op);
    let op = operator_for(cluster, &n).await;
    let g = reconcile_gate(&gates, "policy", "again-2").await;
    assert_eq!(
        statuses_of(&emu, "acme/shop", &second, CONTEXT).await.len(),
        before,
        "no duplicate status"
    );
    let st = g.status.unwrap();
    assert_eq!((st.passed_count, st.failed_count), (0, 1));
    let eval = &st.evaluations[0];
    assert_eq!(
        (
            eval.pull_request,
            eval.head_sha.as_str(),
            eval.result.as_str()
        ),
        (number, second.as_str(), "failed")
    );
    assert_eq!(eval.failed_rules, vec!["veto".to_string()]);

    // A spec change is written again though the verdict is the same: here the mode.
    apply(
        &gates,
        "policy",
        &gate(
            "policy",
            "shop",
            json!({"mode": "evaluate", "interval": "30m", "rules": policy_rules()}),
        ),
    )
    .await;
    let evaluated = wait_status(
        &op.log_path,
        &emu,
        "acme/shop",
        &second,
        CONTEXT,
        "the evaluate-mode report",
        |s| s.state == "success",
    )
    .await;
    assert!(
        evaluated
            .description
            .as_deref()
            .unwrap_or_default()
            .starts_with("evaluate only, would be failed: 3/4 rules passed: veto"),
        "{evaluated:?}"
    );

    // The key appears nowhere: not in statuses, comments, the gate's status or the log.
    let all_statuses = format!("{:?}", emu.statuses("acme/shop", None).await.unwrap());
    let comments = format!("{:?}", emu.comments("acme/shop", number).await.unwrap());
    let object = serde_json::to_string(&gates.get("policy").await.unwrap()).unwrap();
    let log = first_log + &std::fs::read_to_string(&op.log_path).unwrap_or_default();
    for (place, text) in [
        ("statuses", &all_statuses),
        ("comments", &comments),
        ("PolicyGate", &object),
        ("operator log", &log),
    ] {
        assert!(!text.contains(&key), "the key leaked into the {place}");
    }
}

/// Asks for a reconcile of gate `name` and waits until it was handled; returns the gate.
async fn reconcile_gate(gates: &Api<PolicyGate>, name: &str, token: &str) -> PolicyGate {
    request_reconcile(gates, name, token).await;
    wait_for(
        gates,
        name,
        TIMEOUT,
        "the requested reconcile",
        |g: &PolicyGate| {
            g.status
                .as_ref()
                .and_then(|s| s.common.last_handled_reconcile_at.as_deref())
                == Some(token)
        },
    )
    .await
    .unwrap()
}

/// Pushes `files` to a new branch `feature` from `main` and opens a pull request of it by
/// alice titled `title`; returns the head SHA and the pull request's number.
async fn open_pull_with(
    emu: &EmulatorHandle,
    repo: &str,
    changes: &[(&str, &str)],
    title: &str,
) -> (String, u64) {
    let pushed = emu
        .push(
            repo,
            PushSpec {
                branch: "feature".into(),
                files: files(changes),
                from: Some("main".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let pr = emu
        .open_pull(
            repo,
            PullSpec {
                head: "feature".into(),
                title: title.into(),
                author: Some("alice".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    (pushed.after, pr.number)
}

/// Waits for a comment on `number` containing `needle`; returns its body.
async fn wait_comment(emu: &EmulatorHandle, repo: &str, number: u64, needle: &str) -> String {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let comments = emu.comments(repo, number).await.unwrap();
        if let Some(c) = comments.iter().find(|c| c.body.contains(needle)) {
            return c.body.clone();
        }
        assert!(
            Instant::now() < deadline,
            "timed out waiting for a comment with {needle:?}: {comments:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn with_a_github_app_the_table_is_a_check_run_updated_in_place() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "gate-app").await.unwrap();
    let n = ns.name().to_string();
    let emu = pullwarden_emulator::Emulator::start(Default::default())
        .await
        .unwrap();
    let repo = github_repo(&emu, "acme/api", &[("README.md", "api\n")]).await;
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = rsa_keypair(dir.path());
    emu.add_app(AppSpec {
        app_id: 4343,
        slug: Some("pullwarden".into()),
        public_key_pem: public,
        owner: Some("acme".into()),
    })
    .await
    .unwrap();
    emu.add_installation(
        4343,
        InstallationSpec {
            installation_id: 88,
            account: "acme".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let _op = operator_for(cluster, &n).await;
    secret(
        &client,
        &n,
        "api-app",
        &[
            ("githubAppID", "4343"),
            ("githubInstallationID", "88"),
            ("githubPrivateKey", &private),
        ],
    )
    .await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let gates: Api<PolicyGate> = Api::namespaced(client.clone(), &n);
    apply(
        &repos,
        "api",
        &repository("api", &emu, &repo, "api-app", json!({"interval": "30m"})),
    )
    .await;
    let (sha, number) = open_pull_with(
        &emu,
        "acme/api",
        &[("docs/guide.md", "# guide\n")],
        "docs: guide",
    )
    .await;
    apply(
        &gates,
        "policy",
        &gate(
            "policy",
            "api",
            json!({"interval": "30m", "rules": [
                {"name": "docs_only", "changedFiles": {"paths": ["docs/**"]}},
                {"name": "conventional", "title": {"matches": "^(feat|fix)"}},
            ]}),
        ),
    )
    .await;
    let deadline = Instant::now() + TIMEOUT;
    let run = loop {
        let runs = emu.check_runs("acme/api", Some(&sha)).await.unwrap();
        if let Some(r) = runs.iter().find(|r| r.name == CONTEXT) {
            break r.clone();
        }
        assert!(Instant::now() < deadline, "no check run: {runs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(run.conclusion.as_deref(), Some("failure"));
    let summary = run.summary.clone().unwrap_or_default();
    assert!(
        summary.contains("docs\\_only") && summary.contains("conventional"),
        "{summary}"
    );
    assert!(
        summary.contains('✅') && summary.contains('❌'),
        "{summary}"
    );
    // The title is fixed: the same check run turns green, no second one.
    emu.update_pull(
        "acme/api",
        number,
        pullwarden_emulator::PullUpdate {
            title: Some("fix: guide".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    request_reconcile(&gates, "policy", "retitled").await;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let runs: Vec<_> = emu
            .check_runs("acme/api", Some(&sha))
            .await
            .unwrap()
            .into_iter()
            .filter(|r| r.name == CONTEXT)
            .collect();
        if runs
            .iter()
            .any(|r| r.conclusion.as_deref() == Some("success"))
        {
            assert_eq!(runs.len(), 1, "updated in place: {runs:?}");
            assert_eq!(runs[0].id, run.id);
            break;
        }
        assert!(Instant::now() < deadline, "check run not updated: {runs:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No sticky comment with App credentials: the check run carries the table.
    let comments = emu.comments("acme/api", number).await.unwrap();
    assert!(
        comments.iter().all(|c| !c.body.contains("gate/policy")),
        "{comments:?}"
    );
}

/// GitLab and Gitea: the same gate, a status and the gate's section of the sticky comment;
/// secretScan from each forge's own diffs.
#[tokio::test]
async fn gitlab_and_gitea_get_a_status_and_a_section_of_the_sticky_comment() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "gate-forges").await.unwrap();
    let n = ns.name().to_string();
    let emu = pullwarden_emulator::Emulator::start(Default::default())
        .await
        .unwrap();
    emu.token("glpat_gates", "pullwarden-bot").await.unwrap();
    emu.set_team_membership("acme", "reviewers", "bob", "member")
        .await
        .unwrap();
    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "token", &[("token", "glpat_gates")]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let gates: Api<PolicyGate> = Api::namespaced(client.clone(), &n);
    for (forge, provider, path, api_url) in [
        (
            EmuForge::Gitlab,
            "gitlab",
            "acme/web-gl",
            emu.gitlab_api_url(),
        ),
        (EmuForge::Gitea, "gitea", "acme/web-gt", emu.gitea_api_url()),
    ] {
        let name = format!("web-{provider}");
        let info = forge_repo(&emu, forge, path, &[("README.md", "web\n")]).await;
        let mut manifest = repository(&name, &emu, &info, "token", json!({"interval": "30m"}));
        manifest["spec"]["provider"] = json!(provider);
        manifest["spec"]["apiUrl"] = json!(api_url);
        apply(&repos, &name, &manifest).await;
        let (sha, number) = open_pull_with(
            &emu,
            path,
            &[("src/app.js", "export const app = 1;\n")],
            "feat: app",
        )
        .await;
        // GitLab: a group (the emulator's teams are GitLab groups); Gitea's face has no team
        // API, so a user list there.
        let approvers = match forge {
            EmuForge::Gitlab => json!({"count": 1, "teams": ["acme/reviewers"]}),
            _ => json!({"count": 1, "users": ["bob"]}),
        };
        let gate_name = format!("policy-{provider}");
        apply(
            &gates,
            &gate_name,
            &gate(
                &gate_name,
                &name,
                json!({"interval": "30m", "rules": [
                    {"name": "approvals", "approvals": approvers},
                    {"name": "conventional", "title": {"matches": "^feat"}},
                    {"name": "no_secrets", "secretScan": {}},
                ]}),
            ),
        )
        .await;
        let context = format!("pullwarden/gate/{gate_name}");
        let failing = wait_status(&op.log_path, &emu, path, &sha, &context, "a failure", |s| {
            s.state == "failure" || s.state == "failed"
        })
        .await;
        assert!(
            failing
                .description
                .unwrap_or_default()
                .starts_with("2/3 rules passed: approvals 0/1"),
            "{provider}"
        );
        let comment = wait_comment(&emu, path, number, &format!("#### Gate `{gate_name}`")).await;
        assert!(
            comment.starts_with("<!-- pullwarden:preview -->"),
            "{provider}: {comment}"
        );
        emu.add_review(path, number, "bob", "APPROVED")
            .await
            .unwrap();
        request_reconcile(&gates, &gate_name, "approved").await;
        wait_status(&op.log_path, &emu, path, &sha, &context, "success", |s| {
            s.state == "success"
        })
        .await;
        let comments = emu.comments(path, number).await.unwrap();
        let ours: Vec<_> = comments
            .iter()
            .filter(|c| c.body.contains("<!-- pullwarden:preview -->"))
            .collect();
        assert_eq!(
            ours.len(),
            1,
            "{provider}: one sticky comment: {comments:?}"
        );
        assert!(ours[0].body.contains("✅"), "{provider}: {}", ours[0].body);

        // A push adding a fake key fails secretScan (read from the forge's diff: GitLab's
        // per-file `diff`, Gitea's `.diff` of the pull request), and the key is nowhere.
        let key = fake_key();
        // The emulator stamps approvals and pushes in whole seconds, and a tie counts for the
        // head: let the push land in a later second than the approval.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let keyed = emu
            .push_to_pull(
                path,
                number,
                PushSpec {
                    files: files(&[("config/app.env", &format!("AWS_KEY={key}\n"))]),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        request_reconcile(&gates, &gate_name, "keyed").await;
        let leaked = wait_status(
            &op.log_path,
            &emu,
            path,
            &keyed.after,
            &context,
            "the secret",
            |s| {
                s.description
                    .as_deref()
                    .is_some_and(|d| d.contains("no_secrets"))
            },
        )
        .await;
        assert!(
            leaked.state == "failure" || leaked.state == "failed",
            "{provider}: {leaked:?}"
        );
        // bob's approval was given before this push: it no longer counts (invalidateOnPush;
        // GitLab approvals carry no commit, so the forge's own push record decides).
        assert!(
            leaked
                .description
                .as_deref()
                .unwrap_or_default()
                .contains("approvals 0/1"),
            "{provider}: {leaked:?}"
        );
        let comment = wait_comment(&emu, path, number, "config/app.env:1").await;
        let statuses = format!("{:?}", emu.statuses(path, None).await.unwrap());
        assert!(
            !comment.contains(&key) && !statuses.contains(&key),
            "{provider}: the key leaked"
        );
    }
}
