//! Fork approval is per commit, end to end: the operator binary (as its least-privilege
//! ServiceAccount), the local control plane and the forge emulator (GitHub).
//!
//! The attack: a fork's author gets one harmless head approved, then pushes another and
//! expects the old approval (or a quoted, untrusted or stale one, or a backdated commit) to
//! deploy it. Pullwarden keeps the approved head running, deploys nothing of the new one, says
//! so on the pull request, and lists why each attempt did not count, until a trusted user
//! approves the new head after it was pushed.

use crate::support::*;
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use pullwarden::api::{
    ForkApprovalState, ForkApprovalStatus, PreviewEnvironment, PreviewPhase, Repository,
};
use pullwarden_emulator::{Emulator, EmulatorConfig, PullSpec, PushSpec, RepoSpec, UserSpec};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for};
use serde_json::json;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);
const TOKEN: &str = "ghp_fork_approval";

fn record(r: &Repository, number: u64) -> Option<ForkApprovalStatus> {
    r.status
        .as_ref()?
        .fork_approvals
        .iter()
        .find(|a| a.number == number)
        .cloned()
}

fn deployed(p: &PreviewEnvironment) -> Option<&str> {
    p.status.as_ref().and_then(|s| s.deployed_sha.as_deref())
}

#[tokio::test]
async fn a_new_fork_head_waits_for_a_fresh_trusted_approval() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "forkappr").await.unwrap();
    let n = ns.name().to_string();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.token(TOKEN, "pullwarden-bot").await.unwrap();
    // The maintainer is trusted by numeric id, the stable form.
    let maintainer = emu
        .add_user(UserSpec {
            login: "maintainer".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let mallory = emu
        .add_user(UserSpec {
            login: "mallory".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let repo_path = format!("acme/{n}");
    let info = emu
        .create_repo(RepoSpec {
            path: repo_path.clone(),
            private: true,
            ..Default::default()
        })
        .await
        .unwrap();
    emu.push(
        &repo_path,
        PushSpec {
            branch: "main".into(),
            files: preview_app("deploy/preview"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let fork = format!("mallory/{n}");
    emu.fork_repo(&repo_path, &fork).await.unwrap();
    emu.push(
        &fork,
        PushSpec {
            branch: "evil".into(),
            files: files(&[("src/x.txt", "harmless\n")]),
            author: Some("mallory".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let previews: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &n);
    let manifest = repository(
        &n,
        &emu,
        &info,
        "forge-token",
        json!({
            "interval": "10s",
            "pullRequests": {
                "labels": ["preview"],
                "forks": "requireApproval",
                "trustedUsers": [format!("id:{}", maintainer.id)],
            },
            "preview": preview_spec(json!({})),
        }),
    );
    apply(&repos, &n, &manifest).await;

    let pr = emu
        .open_pull(
            &repo_path,
            PullSpec {
                head: "evil".into(),
                head_repo: Some(fork.clone()),
                title: "From a fork".into(),
                author: Some("mallory".into()),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let head_a = pr.head_sha.clone();
    let name = format!("{n}-pr-{}", pr.number);
    let mut token = 0;

    // 1. Seen and recorded, never approved: no preview at all.
    resync(&repos, &n, &mut token).await;
    let seen = wait_for(&repos, &n, TIMEOUT, "the fork head observed", |r| {
        record(r, pr.number).is_some_and(|a| {
            a.head_sha == head_a && a.state == ForkApprovalState::WaitingForApproval
        })
    })
    .await
    .unwrap();
    assert!(record(&seen, pr.number).unwrap().approved_sha.is_none());
    assert!(
        previews.get_opt(&name).await.unwrap().is_none(),
        "an unapproved fork PR got a preview"
    );

    // 2. The maintainer approves head A after it was observed: it deploys.
    let observed_a = record(&seen, pr.number).unwrap().head_observed_time.0;
    wait_past(observed_a).await;
    let ok_a = emu
        .add_comment(
            &repo_path,
            pr.number,
            "maintainer",
            "Looks safe.\n/ok-to-preview\n",
        )
        .await
        .unwrap();
    resync(&repos, &n, &mut token).await;
    wait_for(&previews, &name, TIMEOUT, "preview Ready at head A", |p| {
        phase(p) == Some(PreviewPhase::Ready) && deployed(p) == Some(head_a.as_str())
    })
    .await
    .unwrap();
    let r = repos.get(&n).await.unwrap();
    let rec = record(&r, pr.number).unwrap();
    assert_eq!(rec.state, ForkApprovalState::Approved);
    assert_eq!(rec.approved_sha.as_deref(), Some(head_a.as_str()));
    assert_eq!(
        rec.approved_by.as_deref(),
        Some(format!("comment {} by maintainer (id {})", ok_a.id, maintainer.id).as_str())
    );
    // The trust label, applied by the maintainer while A is the head.
    emu.add_label_by(&repo_path, pr.number, "ok-to-preview", "maintainer")
        .await
        .unwrap();

    // 3. The fork's author pushes head B, its commit backdated to 2001 (before every approval).
    let pushed = emu
        .push_to_pull(
            &repo_path,
            pr.number,
            PushSpec {
                files: files(&[("src/x.txt", "now something else\n")]),
                author: Some("mallory".into()),
                date: Some(978_307_200),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let head_b = pushed.after.clone();
    resync(&repos, &n, &mut token).await;
    let waiting = wait_for(
        &previews,
        &name,
        TIMEOUT,
        "WaitingForApproval with A still deployed",
        |p| {
            phase(p) == Some(PreviewPhase::WaitingForApproval)
                && p.spec.unapproved_head_sha.as_deref() == Some(head_b.as_str())
        },
    )
    .await
    .unwrap();
    assert_eq!(waiting.spec.head_sha.as_deref(), Some(head_a.as_str()));
    assert_eq!(deployed(&waiting), Some(head_a.as_str()));
    let st = waiting.status.clone().unwrap();
    assert!(st.inventory_count > 0, "the approved deployment stays");
    let preview_ns = st.namespace.clone().unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(namespaces.get_opt(&preview_ns).await.unwrap().is_some());
    let message = st.message.clone().unwrap_or_default();
    assert!(
        message.contains(&format!(
            "new head {} from the fork is not deployed",
            &head_b[..7]
        )),
        "{message}"
    );
    // The pull request says so: the sticky comment and a pending status on the new head.
    let comments = emu.comments(&repo_path, pr.number).await.unwrap();
    let sticky = comments
        .iter()
        .find(|c| c.body.contains("<!-- pullwarden:preview -->"))
        .expect("the sticky comment");
    assert!(
        sticky.body.contains("Preview waiting for approval"),
        "{}",
        sticky.body
    );
    assert!(sticky.body.contains(&head_b), "{}", sticky.body);
    let statuses = emu.statuses(&repo_path, Some(&head_b)).await.unwrap();
    let status = statuses
        .iter()
        .find(|s| s.context == "pullwarden/preview")
        .expect("a status on the new head");
    assert_eq!(status.state, "pending");
    assert!(
        status
            .description
            .as_deref()
            .unwrap_or_default()
            .starts_with("Preview waiting for approval"),
        "{status:?}"
    );
    // Neither the old comment nor the old label counts for B; the backdated commit changes
    // nothing.
    let r = wait_for(&repos, &n, TIMEOUT, "B recorded as waiting", |r| {
        record(r, pr.number).is_some_and(|a| a.head_sha == head_b && !a.ignored.is_empty())
    })
    .await
    .unwrap();
    let rec = record(&r, pr.number).unwrap();
    assert_eq!(rec.state, ForkApprovalState::WaitingForApproval);
    assert_eq!(rec.approved_sha.as_deref(), Some(head_a.as_str()));
    let ignored = rec.ignored.join("\n");
    assert!(
        ignored.contains(&format!("comment {} by maintainer", ok_a.id))
            && ignored.contains(&format!("before head {}", &head_b[..7])),
        "{ignored}"
    );
    assert!(
        ignored.contains("label ok-to-preview added by maintainer")
            && ignored.contains("remove it and add it again"),
        "{ignored}"
    );

    // 4. Attempts that must not approve B: an untrusted user, the command in a code block and
    //    in a quote (by the trusted maintainer).
    let observed_b = rec.head_observed_time.0;
    wait_past(observed_b).await;
    let by_mallory = emu
        .add_comment(&repo_path, pr.number, "mallory", "/ok-to-preview")
        .await
        .unwrap();
    let in_code = emu
        .add_comment(
            &repo_path,
            pr.number,
            "maintainer",
            "To approve, type:\n```\n/ok-to-preview\n```",
        )
        .await
        .unwrap();
    let in_quote = emu
        .add_comment(
            &repo_path,
            pr.number,
            "maintainer",
            "> /ok-to-preview\n\nThat is what you asked for.",
        )
        .await
        .unwrap();
    resync(&repos, &n, &mut token).await;
    let r = wait_for(&repos, &n, TIMEOUT, "three more attempts refused", |r| {
        record(r, pr.number).is_some_and(|a| {
            let all = a.ignored.join("\n");
            all.contains(&format!("comment {} by mallory", by_mallory.id))
                && all.contains(&format!("comment {} by maintainer", in_code.id))
                && all.contains(&format!("comment {} by maintainer", in_quote.id))
        })
    })
    .await
    .unwrap();
    let rec = record(&r, pr.number).unwrap();
    assert_eq!(rec.state, ForkApprovalState::WaitingForApproval);
    let ignored = rec.ignored.join("\n");
    assert!(
        ignored.contains(&format!(
            "comment {} by mallory (id {}): not a trusted user",
            by_mallory.id, mallory.id
        )),
        "{ignored}"
    );
    for c in [&in_code, &in_quote] {
        assert!(
            ignored.contains(&format!(
                "comment {} by maintainer (id {}): /ok-to-preview only inside a code block, quote or HTML comment",
                c.id, maintainer.id
            )),
            "{ignored}"
        );
    }
    let still = previews.get(&name).await.unwrap();
    assert_eq!(phase(&still), Some(PreviewPhase::WaitingForApproval));
    assert_eq!(still.spec.head_sha.as_deref(), Some(head_a.as_str()));
    assert_eq!(deployed(&still), Some(head_a.as_str()));

    // 5. A fresh trusted approval after the push deploys B.
    let ok_b = emu
        .add_comment(&repo_path, pr.number, "maintainer", "/ok-to-preview")
        .await
        .unwrap();
    resync(&repos, &n, &mut token).await;
    let ready = wait_for(&previews, &name, TIMEOUT, "preview Ready at head B", |p| {
        phase(p) == Some(PreviewPhase::Ready) && deployed(p) == Some(head_b.as_str())
    })
    .await
    .unwrap();
    assert!(ready.spec.unapproved_head_sha.is_none());
    let rec = record(&repos.get(&n).await.unwrap(), pr.number).unwrap();
    assert_eq!(rec.state, ForkApprovalState::Approved);
    assert_eq!(
        rec.approved_by.as_deref(),
        Some(format!("comment {} by maintainer (id {})", ok_b.id, maintainer.id).as_str())
    );
    drop(op);
}

/// Asks the Repository controller for a sync now (instead of the next poll).
async fn resync(repos: &Api<Repository>, name: &str, token: &mut u32) {
    *token += 1;
    request_reconcile(repos, name, &format!("fork-{token}")).await;
}

/// Returns once the wall clock is a whole second past `t`: forges stamp comments in whole
/// seconds, and only a comment created after the recorded observation counts. A precondition
/// of the next step, not a timed assertion.
async fn wait_past(t: jiff::Timestamp) {
    let target = t + jiff::SignedDuration::from_secs(1);
    while jiff::Timestamp::now() <= target {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// GitLab: group members count only from Developer up, and the forge's own record of the push
/// (merge request versions) dates the head, so an approval between the push and Pullwarden's
/// first look at it counts.
#[tokio::test]
async fn gitlab_reporters_cannot_approve_and_versions_date_the_head() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "forkgl").await.unwrap();
    let n = ns.name().to_string();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    emu.token(TOKEN, "pullwarden-bot").await.unwrap();
    emu.set_team_membership("acme", "devs", "dev", "developer")
        .await
        .unwrap();
    emu.set_team_membership("acme", "devs", "rep", "reporter")
        .await
        .unwrap();
    let repo_path = format!("acme/{n}");
    let info = emu
        .create_repo(RepoSpec {
            forge: pullwarden_emulator::Forge::Gitlab,
            path: repo_path.clone(),
            private: true,
            ..Default::default()
        })
        .await
        .unwrap();
    emu.push(
        &repo_path,
        PushSpec {
            branch: "main".into(),
            files: preview_app("deploy/preview"),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let fork = format!("mallory/{n}");
    emu.fork_repo(&repo_path, &fork).await.unwrap();
    emu.push(
        &fork,
        PushSpec {
            branch: "evil".into(),
            files: files(&[("src/x.txt", "harmless\n")]),
            author: Some("mallory".into()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let op = operator_for(cluster, &n).await;
    secret(&client, &n, "forge-token", &[("token", TOKEN)]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let previews: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &n);
    let manifest = repository(
        &n,
        &emu,
        &info,
        "forge-token",
        json!({
            "provider": "gitlab",
            "apiUrl": emu.gitlab_api_url(),
            "interval": "10s",
            "pullRequests": {
                "labels": ["preview"],
                "forks": "requireApproval",
                "trustedTeams": ["acme/devs"],
            },
            "preview": preview_spec(json!({})),
        }),
    );
    apply(&repos, &n, &manifest).await;
    let mr = emu
        .open_pull(
            &repo_path,
            PullSpec {
                head: "evil".into(),
                head_repo: Some(fork.clone()),
                title: "From a fork".into(),
                author: Some("mallory".into()),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let opened = jiff::Timestamp::now();
    let head_a = mr.head_sha.clone();
    let name = format!("{n}-pr-{}", mr.number);
    let mut token = 0;

    // A Reporter of the trusted group is a member, but not trusted.
    wait_past(opened).await;
    let by_reporter = emu
        .add_comment(&repo_path, mr.number, "rep", "/ok-to-preview")
        .await
        .unwrap();
    resync(&repos, &n, &mut token).await;
    let r = wait_for(
        &repos,
        &n,
        TIMEOUT,
        "the Reporter's approval refused",
        |r| {
            record(r, mr.number).is_some_and(|a| {
                a.ignored.iter().any(|i| {
                    i.starts_with(&format!("comment {} by rep (id ", by_reporter.id))
                        && i.ends_with("not a trusted user")
                })
            })
        },
    )
    .await
    .unwrap();
    let rec = record(&r, mr.number).unwrap();
    assert!(
        rec.head_pushed_time.is_some(),
        "merge request versions date the head"
    );
    assert!(previews.get_opt(&name).await.unwrap().is_none());

    // A Developer approves: head A deploys.
    emu.add_comment(&repo_path, mr.number, "dev", "/ok-to-preview")
        .await
        .unwrap();
    resync(&repos, &n, &mut token).await;
    wait_for(&previews, &name, TIMEOUT, "preview Ready at head A", |p| {
        phase(p) == Some(PreviewPhase::Ready) && deployed(p) == Some(head_a.as_str())
    })
    .await
    .unwrap();

    // Head B is pushed while the Repository is suspended, and the Developer approves it before
    // Pullwarden has seen B at all. GitLab's version of B is older than the comment (one clock),
    // so the approval counts although it precedes Pullwarden's observation.
    suspend(&repos, &n, true).await;
    wait_for(&repos, &n, TIMEOUT, "suspended", |r| {
        has_reason(r, "False", "Suspended")
    })
    .await
    .unwrap();
    let pushed = emu
        .push_to_pull(
            &repo_path,
            mr.number,
            PushSpec {
                files: files(&[("src/x.txt", "changed\n")]),
                author: Some("mallory".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let pushed_at = jiff::Timestamp::now();
    wait_past(pushed_at).await;
    let ok_b = emu
        .add_comment(&repo_path, mr.number, "dev", "LGTM\n/ok-to-preview")
        .await
        .unwrap();
    suspend(&repos, &n, false).await;
    wait_for(&previews, &name, TIMEOUT, "preview Ready at head B", |p| {
        phase(p) == Some(PreviewPhase::Ready) && deployed(p) == Some(pushed.after.as_str())
    })
    .await
    .unwrap();
    let rec = record(&repos.get(&n).await.unwrap(), mr.number).unwrap();
    assert_eq!(rec.state, ForkApprovalState::Approved);
    assert!(
        rec.approved_by
            .as_deref()
            .unwrap_or_default()
            .starts_with(&format!("comment {} by dev (id ", ok_b.id)),
        "{rec:?}"
    );
    let commented: jiff::Timestamp = ok_b.created_at.parse().unwrap();
    assert!(
        rec.head_observed_time.0 > commented,
        "the approval preceded Pullwarden's first observation of B: {rec:?}"
    );
    assert!(
        rec.head_pushed_time.as_ref().unwrap().0 < commented,
        "{rec:?}"
    );
    drop(op);
}

/// Suspends or resumes syncing (`spec.suspend`, a merge patch: the rest of the spec stays).
async fn suspend(repos: &Api<Repository>, name: &str, on: bool) {
    repos
        .patch(
            name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&json!({"spec": {"suspend": on}})),
        )
        .await
        .unwrap();
}
