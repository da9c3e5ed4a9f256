//! Pullwarden against a real Gitea (the pinned release, built by `e2e/scripts/build-gitea.sh`),
//! not the emulator: Repository sync by webhook and by polling, the preview lifecycle with its
//! write-back (commit status + one sticky comment), fork approval by a second user, a forge
//! outage (Gitea stopped), and a PolicyGate (secretScan on Gitea's own diff, previewHealthy
//! following the preview, its section in the same sticky comment).
//!
//! Each test starts its own Gitea on loopback (sqlite, ~2–5 s) so that stopping one cannot touch
//! another test. Everything the forge shows is read back from Gitea's own API.

use crate::support::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use pullwarden::api::{ForkApprovalState, PreviewEnvironment, PreviewPhase, Repository};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for, wait_until_gone};
use pullwarden_harness::gitea::{Gitea, GiteaRepo, GiteaUser};
use pullwarden_harness::operator::Operator;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(120);
const HOOK_SECRET: &str = "gitea-real-hook-secret";
const CONTEXT: &str = "pullwarden/preview";

struct Running {
    gitea: Gitea,
    repo: GiteaRepo,
    op: Operator,
    ns: TestNamespace,
    client: kube::Client,
}

impl Running {
    fn name(&self) -> String {
        self.ns.name().to_owned()
    }

    fn repos(&self) -> Api<Repository> {
        Api::namespaced(self.client.clone(), self.ns.name())
    }

    fn previews(&self) -> Api<PreviewEnvironment> {
        Api::namespaced(self.client.clone(), self.ns.name())
    }

    /// The operator's counter, 0 when the series does not exist yet.
    async fn metric(&self, series: &str) -> f64 {
        self.op.metric(series).await.unwrap().unwrap_or(0.0)
    }
}

/// A Gitea with the preview app on `main` and a `feature` branch, the operator, and a
/// Repository following it (`repo_extra` merged into its spec). With `webhook`, a Gitea webhook
/// to the operator is registered after the first sync.
async fn start(prefix: &str, repo_extra: Value, webhook: bool) -> Running {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, prefix).await.unwrap();
    let n = ns.name().to_string();
    let gitea = Gitea::start(Some(cluster)).await.unwrap();
    let admin = gitea.admin.clone();
    let repo = gitea
        .create_repo(&admin, &n, &preview_app("deploy/preview"))
        .await
        .unwrap();
    gitea
        .push(
            &admin,
            &repo,
            "feature",
            Some("main"),
            &files(&[]),
            "Start feature",
        )
        .unwrap();
    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "forge-token", &[("token", &admin.token)]).await;
    secret(&client, &n, "forge-hook", &[("secret", HOOK_SECRET)]).await;
    let mut spec = json!({
        "provider": "gitea",
        "url": repo.clone_url,
        "apiUrl": gitea.api_url(),
        "allowInsecureHTTP": true,
        "auth": {"secretRef": {"name": "forge-token"}},
        "pullRequests": {"labels": ["preview"]},
        "preview": preview_spec(json!({})),
    });
    if webhook {
        spec["webhook"] = json!({"secretRef": {"name": "forge-hook"}});
    }
    for (k, v) in repo_extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    let manifest = json!({
        "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository",
        "metadata": {"name": n}, "spec": spec,
    });
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    apply(&repos, &n, &manifest).await;
    wait_for(&repos, &n, TIMEOUT, "first sync", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    if webhook {
        gitea
            .add_hook(
                &repo,
                &format!("http://{}/hooks/gitea", op.webhook_addr),
                HOOK_SECRET,
            )
            .await
            .unwrap();
    }
    Running {
        gitea,
        repo,
        op,
        ns,
        client,
    }
}

/// Pullwarden's commit statuses on `sha` as Gitea lists them, oldest first.
async fn our_states(gitea: &Gitea, repo: &GiteaRepo, sha: &str) -> Vec<(String, String)> {
    gitea
        .statuses(repo, sha)
        .await
        .unwrap()
        .into_iter()
        .filter(|s| s["context"] == CONTEXT)
        .map(|s| {
            (
                s["status"].as_str().unwrap_or_default().to_owned(),
                s["target_url"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Waits until Gitea shows a `success` status with `url` on `sha`, and checks a `pending` came
/// first and there is exactly one success.
async fn assert_reported(gitea: &Gitea, repo: &GiteaRepo, sha: &str, url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let states = loop {
        let states = our_states(gitea, repo, sha).await;
        if states.iter().any(|(s, _)| s == "success") || Instant::now() > deadline {
            break states;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let kinds: Vec<&str> = states.iter().map(|(s, _)| s.as_str()).collect();
    let pending = kinds.iter().position(|s| *s == "pending");
    let success = kinds.iter().position(|s| *s == "success");
    assert!(
        matches!((pending, success), (Some(p), Some(s)) if p < s),
        "pending before success on {sha}: {kinds:?}"
    );
    assert_eq!(
        kinds.iter().filter(|s| **s == "success").count(),
        1,
        "{kinds:?}"
    );
    let (_, target) = states.iter().find(|(s, _)| s == "success").unwrap();
    assert_eq!(target, url);
}

/// Pullwarden's comments on the PR (the bot is the admin user here, so match the marker).
async fn sticky_comments(gitea: &Gitea, repo: &GiteaRepo, number: u64) -> Vec<Value> {
    gitea
        .comments(repo, number)
        .await
        .unwrap()
        .into_iter()
        .filter(|c| c["body"].as_str().is_some_and(|b| b.contains("pullwarden")))
        .collect()
}

/// Waits until the sticky comment satisfies `ok`; there must never be more than one.
async fn wait_comment(
    gitea: &Gitea,
    repo: &GiteaRepo,
    number: u64,
    what: &str,
    ok: impl Fn(&str) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let comments = sticky_comments(gitea, repo, number).await;
        assert!(comments.len() <= 1, "one sticky comment: {comments:#?}");
        if let Some(c) = comments.first()
            && ok(c["body"].as_str().unwrap_or_default())
        {
            return c.clone();
        }
        assert!(
            Instant::now() < deadline,
            "sticky comment {what}: {comments:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// open → Ready → push → Ready → close, driven by Gitea's own webhooks (the poll interval is an
/// hour, so nothing here waits for a poll), with the write-back read from Gitea's API.
#[tokio::test]
async fn gitea_preview_lifecycle_by_webhook_with_status_and_sticky_comment() {
    let s = start("gitea-life", json!({"interval": "1h"}), true).await;
    let n = s.name();
    let previews = s.previews();
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    let admin = s.gitea.admin.clone();

    let t = Instant::now();
    let pr = s
        .gitea
        .open_pull(&admin, &s.repo, "feature", "Add cart", &["preview"])
        .await
        .unwrap();
    let number = pr["number"].as_u64().unwrap();
    let head = pr["head"]["sha"].as_str().unwrap().to_owned();
    let name = format!("{n}-pr-{number}");
    let url = format!("https://pr-{number}.{n}.preview.test");
    let ready = wait_ready(&previews, &name, &head).await;
    eprintln!("gitea: PR open → preview Ready: {:?}", t.elapsed());
    let preview_ns = ready.status.clone().unwrap().namespace.unwrap();
    assert_reported(&s.gitea, &s.repo, &head, &url).await;
    let first = wait_comment(&s.gitea, &s.repo, number, "names the URL and head", |b| {
        b.contains(&url) && b.contains(&head[..7])
    })
    .await;

    // A push to the PR branch arrives as `pull_request_sync` (action `synchronized`).
    let pushed = s
        .gitea
        .push(
            &admin,
            &s.repo,
            "feature",
            None,
            &files(&[("src/cart.rs", "fn cart() {}\n")]),
            "Cart",
        )
        .unwrap();
    let t = Instant::now();
    wait_ready(&previews, &name, &pushed).await;
    eprintln!("gitea: push → new SHA Ready: {:?}", t.elapsed());
    assert_reported(&s.gitea, &s.repo, &pushed, &url).await;
    let edited = wait_comment(&s.gitea, &s.repo, number, "follows the push", |b| {
        b.contains(&pushed[..7])
    })
    .await;
    assert_eq!(edited["id"], first["id"], "the comment is edited in place");

    // Closed: the preview and its namespace go; the comment says so.
    let t = Instant::now();
    s.gitea.close_pull(&s.repo, number).await.unwrap();
    wait_until_gone(&previews, &name, TIMEOUT, "preview deleted")
        .await
        .unwrap();
    wait_until_gone(&namespaces, &preview_ns, TIMEOUT, "namespace deleted")
        .await
        .unwrap();
    eprintln!("gitea: close → torn down: {:?}", t.elapsed());
    wait_comment(&s.gitea, &s.repo, number, "says deleted", |b| {
        b.to_lowercase().contains("deleted")
    })
    .await;
    let accepted = s
        .metric(r#"pullwarden_webhook_requests_total{forge="gitea",result="accepted"}"#)
        .await;
    assert!(
        accepted >= 3.0,
        "Gitea's webhooks were accepted: {accepted}"
    );
}

/// Without a webhook, a short poll interval finds the pull request; the cost of each idle poll
/// on Gitea (no ETags, so every poll is full responses) is visible in the forge metrics.
#[tokio::test]
async fn gitea_repository_syncs_by_polling_and_shows_its_cost() {
    let s = start("gitea-poll", json!({"interval": "10s"}), false).await;
    let n = s.name();
    let repos = s.repos();
    let admin = s.gitea.admin.clone();
    let pr = s
        .gitea
        .open_pull(&admin, &s.repo, "feature", "Polled", &["preview"])
        .await
        .unwrap();
    let number = pr["number"].as_u64().unwrap();
    let head = pr["head"]["sha"].as_str().unwrap().to_owned();
    wait_for(&repos, &n, TIMEOUT, "the PR found by polling", |r| {
        r.status.as_ref().is_some_and(|st| {
            st.pull_requests
                .iter()
                .any(|p| p.number == number && p.head_sha == head)
        })
    })
    .await
    .unwrap();
    wait_ready(&s.previews(), &format!("{n}-pr-{number}"), &head).await;

    // Idle: nothing changes on the forge; count what polling costs.
    let syncs = |r: &Repository| {
        r.status
            .as_ref()
            .and_then(|s| s.last_sync_time.clone())
            .map(|t| t.0)
    };
    tokio::time::sleep(Duration::from_secs(6)).await;
    let before = gitea_requests(&s.op).await;
    let t0 = syncs(&repos.get(&n).await.unwrap());
    let mut polls = 0;
    let mut last = t0;
    // Four polls at a 10 s interval (adaptive up to 20 s): never more than two minutes.
    let deadline = Instant::now() + TIMEOUT;
    while polls < 4 {
        assert!(
            Instant::now() < deadline,
            "only {polls} idle polls in {TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = syncs(&repos.get(&n).await.unwrap());
        if now != last {
            polls += 1;
            last = now;
        }
    }
    let after = gitea_requests(&s.op).await;
    let per_poll = (after - before) / f64::from(polls);
    eprintln!("gitea: {per_poll:.1} forge requests per idle poll ({polls} polls)");
    assert!(per_poll >= 1.0, "an idle poll still reads the forge");
    let hits = s
        .metric(r#"pullwarden_forge_conditional_requests_total{forge="gitea",result="hit"}"#)
        .await;
    assert_eq!(hits, 0.0, "Gitea sends no ETag: no poll is answered 304");
    let full = s
        .metric(r#"pullwarden_forge_conditional_requests_total{forge="gitea",result="no_etag"}"#)
        .await;
    assert!(full >= 3.0 * f64::from(polls), "no_etag series: {full}");
    let cost = repos
        .get(&n)
        .await
        .unwrap()
        .status
        .unwrap()
        .last_sync_cost
        .unwrap();
    eprintln!("gitea: status.lastSyncCost of an idle poll: {cost:?}");
    assert_eq!(cost.not_modified, 0, "{cost:?}");
    assert_eq!(
        f64::from(cost.requests),
        per_poll,
        "the status reports what the metrics counted: {cost:?}"
    );
}

/// A fork pull request from a second Gitea user waits until a trusted maintainer (a third user,
/// trusted by numeric id) comments `/ok-to-preview` after the head was seen.
#[tokio::test]
async fn gitea_fork_pull_request_deploys_after_a_maintainers_approval() {
    let mut s = start("gitea-fork", json!({"interval": "1h"}), true).await;
    let n = s.name();
    let previews = s.previews();
    let repos = s.repos();
    let admin = s.gitea.admin.clone();
    let maintainer = s.gitea.create_user("maintainer").await.unwrap();
    let mallory = s.gitea.create_user("mallory").await.unwrap();
    for (user, permission) in [(&maintainer, "write"), (&mallory, "read")] {
        s.gitea
            .ok(
                &admin,
                Method::PUT,
                &format!("/repos/{}/collaborators/{}", s.repo.full_name(), user.name),
                Some(json!({"permission": permission})),
            )
            .await
            .unwrap();
    }
    let maintainer_id = user_id(&s.gitea, &maintainer).await;
    let mut manifest = repos.get(&n).await.unwrap();
    let spec = &mut manifest.spec;
    let selector = spec.pull_requests.get_or_insert_with(Default::default);
    selector.forks = pullwarden::api::ForkPolicy::RequireApproval;
    selector.trusted_users = vec![format!("id:{maintainer_id}")];
    apply(
        &repos,
        &n,
        &json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "Repository",
            "metadata": {"name": n}, "spec": serde_json::to_value(&manifest.spec).unwrap(),
        }),
    )
    .await;

    // Mallory forks, pushes a branch to her fork and opens a PR from it.
    s.gitea
        .ok(
            &mallory,
            Method::POST,
            &format!("/repos/{}/forks", s.repo.full_name()),
            Some(json!({})),
        )
        .await
        .unwrap();
    let fork = GiteaRepo {
        owner: mallory.name.clone(),
        name: s.repo.name.clone(),
        clone_url: s.repo.clone_url.replace(&admin.name, &mallory.name),
    };
    let fork_head = wait_fork_ready(&s.gitea, &mallory, &fork).await;
    let head = s
        .gitea
        .push(
            &mallory,
            &fork,
            "evil",
            Some(&fork_head),
            &files(&[("src/x.txt", "harmless\n")]),
            "From a fork",
        )
        .unwrap();
    let pr = s
        .gitea
        .ok(
            &mallory,
            Method::POST,
            &format!("/repos/{}/pulls", s.repo.full_name()),
            Some(json!({"head": format!("{}:evil", mallory.name), "base": "main", "title": "From a fork"})),
        )
        .await
        .unwrap();
    let number = pr["number"].as_u64().unwrap();
    assert_eq!(pr["head"]["repo"]["fork"], true, "{pr}");
    let label = s.gitea.label_id(&s.repo, "preview").await.unwrap();
    s.gitea
        .ok(
            &admin,
            Method::POST,
            &format!("/repos/{}/issues/{number}/labels", s.repo.full_name()),
            Some(json!({"labels": [label]})),
        )
        .await
        .unwrap();
    let name = format!("{n}-pr-{number}");
    let seen = wait_for(&repos, &n, TIMEOUT, "the fork head observed", |r| {
        fork_record(r, number).is_some_and(|(sha, state)| {
            sha == head && state == ForkApprovalState::WaitingForApproval
        })
    })
    .await
    .unwrap();
    assert!(
        previews.get_opt(&name).await.unwrap().is_none(),
        "an unapproved fork PR got a preview"
    );
    let observed = seen
        .status
        .unwrap()
        .fork_approvals
        .into_iter()
        .find(|a| a.number == number)
        .unwrap()
        .head_observed_time
        .0;
    while jiff::Timestamp::now() <= observed + jiff::SignedDuration::from_secs(1) {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Mallory's own approval does not count; the maintainer's does.
    s.gitea
        .ok(
            &mallory,
            Method::POST,
            &format!("/repos/{}/issues/{number}/comments", s.repo.full_name()),
            Some(json!({"body": "/ok-to-preview"})),
        )
        .await
        .unwrap();
    let refused = wait_for(&repos, &n, TIMEOUT, "mallory's approval ignored", |r| {
        r.status.as_ref().is_some_and(|st| {
            st.fork_approvals
                .iter()
                .any(|a| a.number == number && a.ignored.iter().any(|i| i.contains("mallory")))
        })
    })
    .await
    .unwrap();
    assert_eq!(
        fork_record(&refused, number).map(|(_, state)| state),
        Some(ForkApprovalState::WaitingForApproval)
    );
    assert!(previews.get_opt(&name).await.unwrap().is_none());
    s.gitea
        .ok(
            &maintainer,
            Method::POST,
            &format!("/repos/{}/issues/{number}/comments", s.repo.full_name()),
            Some(json!({"body": "Looks safe.\n/ok-to-preview\n"})),
        )
        .await
        .unwrap();
    wait_ready(&previews, &name, &head).await;
    let r = repos.get(&n).await.unwrap();
    let rec = r
        .status
        .unwrap()
        .fork_approvals
        .into_iter()
        .find(|a| a.number == number)
        .unwrap();
    assert_eq!(rec.state, ForkApprovalState::Approved);
    assert!(
        rec.approved_by
            .as_deref()
            .is_some_and(|b| b.contains("maintainer")),
        "{rec:?}"
    );
    s.gitea.stop().unwrap();
}

/// Every request the operator sent to Gitea so far (all endpoints and statuses).
async fn gitea_requests(op: &Operator) -> f64 {
    let text = op.metrics().await.unwrap();
    text.lines()
        .filter(|l| l.starts_with("pullwarden_forge_requests_total{forge=\"gitea\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn user_id(gitea: &Gitea, user: &GiteaUser) -> u64 {
    let v = gitea.ok(user, Method::GET, "/user", None).await.unwrap();
    v["id"].as_u64().unwrap()
}

fn fork_record(r: &Repository, number: u64) -> Option<(String, ForkApprovalState)> {
    r.status
        .as_ref()?
        .fork_approvals
        .iter()
        .find(|a| a.number == number)
        .map(|a| (a.head_sha.clone(), a.state))
}

/// Forking is asynchronous (202); waits for the fork's default branch and returns its name.
async fn wait_fork_ready(gitea: &Gitea, user: &GiteaUser, fork: &GiteaRepo) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, v) = gitea
            .call(
                user,
                Method::GET,
                &format!("/repos/{}/branches/main", fork.full_name()),
                None,
            )
            .await
            .unwrap();
        if status == 200 {
            return v["name"].as_str().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "fork not ready: {status} {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Gitea stopped: the preview and its namespace stay, the Repository says its data is stale and
/// when it last synced; when Gitea is back, it syncs again and the preview is still Ready.
#[tokio::test]
async fn gitea_outage_keeps_previews_and_marks_the_repository_stale() {
    let mut s = start("gitea-down", json!({"interval": "10s"}), true).await;
    let n = s.name();
    let repos = s.repos();
    let previews = s.previews();
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    let admin = s.gitea.admin.clone();
    let pr = s
        .gitea
        .open_pull(&admin, &s.repo, "feature", "Stay", &["preview"])
        .await
        .unwrap();
    let number = pr["number"].as_u64().unwrap();
    let head = pr["head"]["sha"].as_str().unwrap().to_owned();
    let name = format!("{n}-pr-{number}");
    let deployed = wait_ready(&previews, &name, &head).await;
    let preview_ns = deployed.status.unwrap().namespace.unwrap();

    s.gitea.stop().unwrap();
    let stale = wait_for(&repos, &n, TIMEOUT, "Repository stale", |r: &Repository| {
        r.status
            .as_ref()
            .is_some_and(|st| ready(&st.common.conditions).is_some_and(|c| c.status == "False"))
    })
    .await
    .unwrap();
    let message = ready_message(&stale);
    assert!(message.contains("last successful sync"), "{message}");
    // Several poll intervals of outage.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let still = previews.get(&name).await.unwrap();
    assert!(
        still.metadata.deletion_timestamp.is_none(),
        "preview deleted during an outage"
    );
    assert_eq!(phase(&still), Some(PreviewPhase::Ready));
    assert!(
        namespaces.get_opt(&preview_ns).await.unwrap().is_some(),
        "namespace deleted during an outage"
    );
    let repo = repos.get(&n).await.unwrap();
    assert_eq!(repo.status.as_ref().unwrap().pull_request_count, 1);

    s.gitea.resume().await.unwrap();
    wait_for(&repos, &n, TIMEOUT, "recovered", |r: &Repository| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    assert_eq!(
        phase(&previews.get(&name).await.unwrap()),
        Some(PreviewPhase::Ready)
    );
}

/// A PolicyGate on a real Gitea: `secretScan` reads Gitea's own `.diff`, `previewHealthy`
/// flips when the pull request gets its preview, and the gate's table shares the one sticky
/// comment with the preview (two sections, one comment).
#[tokio::test]
async fn gitea_gate_scans_the_real_diff_and_follows_the_preview() {
    let s = start("gitea-gate", json!({"interval": "1h"}), true).await;
    let n = s.name();
    let admin = s.gitea.admin.clone();
    let gates: Api<pullwarden::api::PolicyGate> = Api::namespaced(s.client.clone(), &n);
    apply(
        &gates,
        "policy",
        &json!({
            "apiVersion": "pullwarden.dev/v1alpha1", "kind": "PolicyGate", "metadata": {"name": "policy"},
            "spec": {"repositoryRef": {"name": n}, "interval": "1h", "rules": [
                {"name": "no_secrets", "secretScan": {}},
                {"name": "preview", "previewHealthy": {}},
            ]},
        }),
    )
    .await;
    // A format-correct AWS key id that belongs to nobody, assembled so this file holds none.
    let key = format!("{}{}", "AKIA", "Q4ZT7XW2MPLN6KRB");
    let head = s
        .gitea
        .push(
            &admin,
            &s.repo,
            "feature",
            None,
            &files(&[("deploy/app.env", &format!("REGION=eu\nAWS_KEY={key}\n"))]),
            "Config",
        )
        .unwrap();
    // Without the `preview` label the Repository selects no preview for it.
    let pr = s
        .gitea
        .open_pull(&admin, &s.repo, "feature", "feat: config", &[])
        .await
        .unwrap();
    let number = pr["number"].as_u64().unwrap();
    let gate_status = |want: &'static str| {
        let (gitea, repo, head) = (&s.gitea, &s.repo, head.clone());
        async move {
            let deadline = Instant::now() + TIMEOUT;
            loop {
                let statuses = gitea.statuses(repo, &head).await.unwrap();
                let ours: Vec<&Value> = statuses
                    .iter()
                    .filter(|st| st["context"] == "pullwarden/gate/policy")
                    .collect();
                if let Some(last) = ours.last()
                    && last["description"]
                        .as_str()
                        .is_some_and(|d| d.starts_with(want))
                {
                    let descriptions: Vec<String> = ours
                        .iter()
                        .map(|st| st["description"].as_str().unwrap_or_default().to_owned())
                        .collect();
                    return (
                        last["status"].as_str().unwrap_or_default().to_owned(),
                        descriptions,
                    );
                }
                assert!(Instant::now() < deadline, "gate status {want:?}: {ours:#?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    let (state, _) =
        gate_status("0/2 rules passed: no_secrets: 1 possible secret; preview: no preview").await;
    assert_eq!(state, "failure");

    // The label brings the preview; once it is Ready on the head, previewHealthy passes.
    let label = s.gitea.label_id(&s.repo, "preview").await.unwrap();
    s.gitea
        .ok(
            &admin,
            Method::POST,
            &format!("/repos/{}/issues/{number}/labels", s.repo.full_name()),
            Some(json!({"labels": [label]})),
        )
        .await
        .unwrap();
    wait_ready(&s.previews(), &format!("{n}-pr-{number}"), &head).await;
    let (state, written) = gate_status("1/2 rules passed: no_secrets: 1 possible secret").await;
    assert_eq!(state, "failure");
    // One status per verdict: no preview, (possibly) the preview deploying, the preview ready.
    let distinct: std::collections::BTreeSet<&String> = written.iter().collect();
    assert_eq!(
        distinct.len(),
        written.len(),
        "a verdict written twice: {written:#?}"
    );
    assert!(written.len() >= 2, "{written:#?}");
    eprintln!("gitea: gate statuses on the head: {written:?}");

    // One comment, two sections; the key is in no comment and no status.
    let comment = wait_comment(&s.gitea, &s.repo, number, "has both sections", |b| {
        b.contains("<!-- pullwarden:section preview -->")
            && b.contains("<!-- pullwarden:section gate/policy -->")
            && b.contains("1/2 rules passed")
            && b.contains("deploy/app.env:2")
    })
    .await;
    let statuses = s.gitea.statuses(&s.repo, &head).await.unwrap();
    assert!(
        !comment.to_string().contains(&key),
        "the key leaked into the comment"
    );
    assert!(
        !format!("{statuses:?}").contains(&key),
        "the key leaked into a status"
    );
}
