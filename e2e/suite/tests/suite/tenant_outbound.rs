//! Tenants cannot reach beyond their namespace through Pullwarden's outbound traffic (issue 9,
//! item 6 "Credentials", "SSRF", "git cache"): each test plays a tenant with rights on
//! Pullwarden objects in one namespace against the operator binary under its shipped RBAC, the
//! local control plane and the forge emulator, and checks the refusal (a clear Repository or
//! PreviewEnvironment condition) and, in the emulator's request log, that nothing was sent
//! where it should not go.

use crate::support::*;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Api;
use kube::api::PostParams;
use pullwarden::api::{PreviewEnvironment, PreviewPhase, Repository};
use pullwarden_emulator::{
    Emulator, EmulatorConfig, EmulatorHandle, FaultAction, FaultSpec, PullSpec, PushSpec, RepoSpec,
};
use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, wait_for, wait_until_gone};
use pullwarden_harness::operator::{Operator, OperatorOptions};
use serde_json::{Value, json};
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(90);

async fn start(prefix: &str) -> (kube::Client, TestNamespace, EmulatorHandle) {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, prefix).await.unwrap();
    let emu = Emulator::start(EmulatorConfig::default()).await.unwrap();
    (client, ns, emu)
}

/// Every request the emulator saw, by client (the token, `anonymous`, `invalid`, ...).
async fn total_requests(emu: &EmulatorHandle) -> u64 {
    let counts = emu.request_counts().await.unwrap();
    counts.clients.values().map(|c| c.total).sum()
}

/// Waits for Ready=False with `reason` and returns the message.
async fn refused(repos: &Api<Repository>, name: &str, reason: &str) -> String {
    let repo = wait_for(
        repos,
        name,
        TIMEOUT,
        &format!("Repository Ready=False {reason}"),
        |r: &Repository| has_reason(r, "False", reason),
    )
    .await
    .unwrap();
    ready_message(&repo)
}

async fn raw_secret(client: &kube::Client, ns: &str, body: Value) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let s: Secret = serde_json::from_value(body).unwrap();
    api.create(&PostParams::default(), &s).await.unwrap();
}

#[tokio::test]
async fn unlabelled_and_service_account_token_secrets_are_not_credentials() {
    let (client, ns, emu) = start("optin").await;
    let n = ns.name().to_string();
    let info = github_repo(&emu, "acme/app", &[("README.md", "hi\n")]).await;
    emu.token("ghp_unlabelled", "tenant").await.unwrap();
    emu.token("ghp_in_sa_secret", "tenant").await.unwrap();
    let op = operator_for(cluster::shared(), &n).await;

    // Another application's Secret in the tenant's namespace, never meant for Pullwarden.
    raw_secret(
        &client,
        &n,
        json!({"metadata": {"name": "db-password"}, "stringData": {"token": "ghp_unlabelled"}}),
    )
    .await;
    // A service-account token Secret, even one carrying the opt-in label.
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &n);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "victim"}})).unwrap(),
    )
    .await
    .unwrap();
    raw_secret(
        &client,
        &n,
        json!({
            "metadata": {"name": "victim-token",
                         "labels": {"pullwarden.dev/credentials": "true"},
                         "annotations": {"kubernetes.io/service-account.name": "victim"}},
            "type": "kubernetes.io/service-account-token",
            "stringData": {"token": "ghp_in_sa_secret"},
        }),
    )
    .await;

    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    apply(
        &repos,
        "plain",
        &repository("plain", &emu, &info, "db-password", json!({})),
    )
    .await;
    apply(
        &repos,
        "sa",
        &repository("sa", &emu, &info, "victim-token", json!({})),
    )
    .await;
    let m = refused(&repos, "plain", "CredentialsNotOptedIn").await;
    assert!(
        m.contains(&format!("Secret {n}/db-password"))
            && m.contains("pullwarden.dev/credentials: \"true\""),
        "names the Secret and the label to add: {m}"
    );
    let m = refused(&repos, "sa", "ServiceAccountTokenRefused").await;
    assert!(
        m.contains(&format!("Secret {n}/victim-token")) && m.contains("service-account token"),
        "{m}"
    );
    assert_eq!(
        total_requests(&emu).await,
        0,
        "no request reached the forge: {:?}",
        emu.request_counts().await.unwrap()
    );

    // Opting in is all it takes: the same Secret, labelled, is used.
    secret(&client, &n, "db-password", &[("token", "ghp_unlabelled")]).await;
    request_reconcile(&repos, "plain", "labelled").await;
    wait_for(&repos, "plain", TIMEOUT, "synced once opted in", |r| {
        has_reason(r, "True", "Synced")
    })
    .await
    .unwrap();
    assert!(emu.request_counts().await.unwrap().total("ghp_unlabelled") > 0);
    drop(op);
}

#[tokio::test]
async fn api_url_on_another_host_is_refused() {
    let (client, ns, emu) = start("apihost").await;
    let n = ns.name().to_string();
    let info = github_repo(&emu, "acme/app", &[("README.md", "hi\n")]).await;
    emu.token("ghp_apihost", "tenant").await.unwrap();
    let op = operator_for(cluster::shared(), &n).await;
    secret(&client, &n, "token", &[("token", "ghp_apihost")]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    // The same emulator under another host name: reachable, but not the url's host.
    let other_host = emu.github_api_url().replace("127.0.0.1", "localhost");
    apply(
        &repos,
        "cross",
        &repository("cross", &emu, &info, "token", json!({"apiUrl": other_host})),
    )
    .await;
    let m = refused(&repos, "cross", "InvalidSpec").await;
    assert!(
        m.contains("apiUrl host localhost differs from the url host 127.0.0.1")
            && m.contains("--allow-cross-host-api-url"),
        "{m}"
    );
    // allowInsecureHTTP governs apiUrl too.
    let https_url = info.clone_url.replace("http://", "https://");
    apply(
        &repos,
        "plainapi",
        &repository(
            "plainapi",
            &emu,
            &info,
            "token",
            json!({"url": https_url, "allowInsecureHTTP": false}),
        ),
    )
    .await;
    let m = refused(&repos, "plainapi", "InvalidSpec").await;
    assert!(m.contains("apiUrl is plain http://"), "{m}");
    assert_eq!(total_requests(&emu).await, 0, "the token went nowhere");
    drop(op);
}

#[tokio::test]
async fn a_loopback_forge_is_refused_by_the_outbound_guard() {
    let (client, ns, emu) = start("ssrf").await;
    let n = ns.name().to_string();
    let info = github_repo(&emu, "acme/app", &[("README.md", "hi\n")]).await;
    emu.token("ghp_ssrf", "tenant").await.unwrap();
    // The operator as shipped: no loopback allowance.
    let op = Operator::start(
        cluster::shared(),
        OperatorOptions {
            namespace: Some(n.clone()),
            refuse_loopback_forge: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    op.wait_ready(TIMEOUT).await.unwrap();
    secret(&client, &n, "token", &[("token", "ghp_ssrf")]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    // An IP literal (checked before any client is built) ...
    apply(
        &repos,
        "literal",
        &repository("literal", &emu, &info, "token", json!({})),
    )
    .await;
    // ... a name that resolves to loopback (checked by the guarded resolver) ...
    let by_name = emu.github_api_url().replace("127.0.0.1", "localhost");
    apply(
        &repos,
        "name",
        &repository(
            "name",
            &emu,
            &info,
            "token",
            json!({"url": info.clone_url.replace("127.0.0.1", "localhost"), "apiUrl": by_name}),
        ),
    )
    .await;
    // ... and plain git, whose traffic goes through the guarded proxy.
    apply(
        &repos,
        "git",
        &repository(
            "git",
            &emu,
            &info,
            "token",
            json!({"provider": "git", "apiUrl": null}),
        ),
    )
    .await;
    for name in ["literal", "name", "git"] {
        let m = refused(&repos, name, "OutboundRefused").await;
        assert!(
            m.contains("loopback") && m.contains("refused"),
            "{name}: the guard says what and why: {m}"
        );
    }
    let m = refused(&repos, "literal", "OutboundRefused").await;
    assert!(m.contains("--outbound-allow-cidrs=127.0.0.1/32"), "{m}");
    assert_eq!(
        total_requests(&emu).await,
        0,
        "no request reached the loopback forge: {:?}",
        emu.request_counts().await.unwrap()
    );
    drop(op);
}

#[tokio::test]
async fn a_cross_origin_redirect_is_not_followed_and_the_token_stays_home() {
    let (client, ns, forge) = start("redirect").await;
    let n = ns.name().to_string();
    // The other origin records whatever reaches it; it knows the token, so a leak would show
    // under the token's name (and anything else under `invalid`/`anonymous`).
    let other = Emulator::start(EmulatorConfig::default()).await.unwrap();
    for emu in [&forge, &other] {
        emu.token("ghp_redirect", "tenant").await.unwrap();
    }
    let info = github_repo(&forge, "acme/app", &[("README.md", "hi\n")]).await;
    for path in ["/repos/*", "/acme/app.git/*"] {
        forge
            .add_fault(FaultSpec {
                method: None,
                path: path.into(),
                forge: None,
                token: None,
                action: FaultAction::Redirect {
                    location: other.url().to_string(),
                },
                times: None,
            })
            .await
            .unwrap();
    }
    let op = operator_for(cluster::shared(), &n).await;
    secret(&client, &n, "token", &[("token", "ghp_redirect")]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    apply(
        &repos,
        "api",
        &repository("api", &forge, &info, "token", json!({})),
    )
    .await;
    apply(
        &repos,
        "git",
        &repository(
            "git",
            &forge,
            &info,
            "token",
            json!({"provider": "git", "apiUrl": null}),
        ),
    )
    .await;
    let m = refused(&repos, "api", "OutboundRefused").await;
    assert!(
        m.contains("302") && m.contains(other.url().trim_end_matches('/')),
        "names the redirect and the other origin: {m}"
    );
    // git: the proxy sees the redirect answer and refuses it before libgit2 can follow.
    let m = refused(&repos, "git", "OutboundRefused").await;
    assert!(
        m.contains("redirected to") && m.contains(other.url().trim_end_matches('/')),
        "{m}"
    );
    assert!(
        forge.request_counts().await.unwrap().total("ghp_redirect") > 0,
        "the forge itself was asked"
    );
    assert_eq!(
        total_requests(&other).await,
        0,
        "nothing reached the other origin: {:?}",
        other.request_counts().await.unwrap()
    );
    drop(op);
}

#[tokio::test]
async fn a_tenant_that_cannot_fetch_does_not_get_another_tenants_cached_tree() {
    let (client, ns, emu) = start("gitcache").await;
    let n = ns.name().to_string();
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
    emu.create_branch(&repo_path, "feature", Some("main"))
        .await
        .unwrap();
    emu.token("ghp_fetcher", "alpha-bot").await.unwrap();
    emu.token("ghp_api_only", "beta-bot").await.unwrap();
    // beta's token may use the API but not read the code (a fine-grained token without
    // "Contents: read"): the forge answers its git requests 404, as GitHub does.
    let denied = emu
        .add_fault(FaultSpec {
            method: None,
            path: format!("/{repo_path}.git/*"),
            forge: None,
            token: Some("ghp_api_only".into()),
            action: FaultAction::Status { status: 404 },
            times: None,
        })
        .await
        .unwrap();
    let op = operator_for(cluster::shared(), &n).await;
    secret(&client, &n, "alpha-token", &[("token", "ghp_fetcher")]).await;
    secret(&client, &n, "beta-token", &[("token", "ghp_api_only")]).await;
    let repos: Api<Repository> = Api::namespaced(client.clone(), &n);
    let previews: Api<PreviewEnvironment> = Api::namespaced(client.clone(), &n);
    let with_preview = |ns_suffix: &str| {
        json!({
            "interval": "10s",
            "pullRequests": {"labels": ["preview"]},
            "preview": preview_spec(json!({"namespace": format!("{n}-{ns_suffix}-pr-{{{{number}}}}")})),
        })
    };
    apply(
        &repos,
        "alpha",
        &repository("alpha", &emu, &info, "alpha-token", with_preview("a")),
    )
    .await;
    let pr = emu
        .open_pull(
            &repo_path,
            PullSpec {
                head: "feature".into(),
                title: "Shared template".into(),
                labels: vec!["preview".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // alpha fetches the tree into the operator's git cache and deploys it.
    let alpha = wait_for(&previews, "alpha-pr-1", TIMEOUT, "alpha Ready", |p| {
        p.status.as_ref().is_some_and(|s| {
            s.phase == PreviewPhase::Ready && s.deployed_sha.as_deref() == Some(&pr.head_sha)
        })
    })
    .await
    .unwrap();
    let alpha_ns = alpha.status.unwrap().namespace.unwrap();

    // beta follows the same repository and PR with its own credential.
    apply(
        &repos,
        "beta",
        &repository("beta", &emu, &info, "beta-token", with_preview("b")),
    )
    .await;
    let beta = wait_for(&previews, "beta-pr-1", TIMEOUT, "beta refused", |p| {
        p.status
            .as_ref()
            .and_then(|s| ready(&s.common.conditions))
            .is_some_and(|c| c.status == "False" && c.reason == "NotFound")
    })
    .await
    .unwrap();
    let st = beta.status.clone().unwrap();
    assert_ne!(st.phase, PreviewPhase::Ready);
    assert_eq!(st.deployed_sha, None, "nothing deployed for beta");
    assert!(st.inventory.is_empty(), "{:?}", st.inventory);
    eprintln!("beta: {}", ready_message(&beta));
    // beta really asked the forge with its own token (and was refused) ...
    let faults = emu.faults().await.unwrap();
    let hits = faults
        .iter()
        .find(|f| f.id == denied.id)
        .map_or(0, |f| f.hits);
    assert!(hits > 0, "beta's own git request was made: {faults:?}");
    // ... and no preview namespace of beta exists.
    let namespaces: Api<Namespace> = Api::all(client.clone());
    assert!(
        namespaces
            .get_opt(&format!("{n}-b-pr-{}", pr.number))
            .await
            .unwrap()
            .is_none()
    );

    // Tear down while the operator runs, so the preview namespace goes too.
    emu.close_pull(&repo_path, pr.number).await.unwrap();
    wait_until_gone(&namespaces, &alpha_ns, TIMEOUT, "alpha's preview namespace")
        .await
        .unwrap();
    drop(op);
}
