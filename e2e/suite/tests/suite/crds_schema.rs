//! The generated CRDs, exercised by the real API server: every example is accepted, printer
//! columns and `kubectl explain` work, and a catalogue of bad objects is rejected with a message
//! that says what is wrong.

use pullwarden_harness::cluster::{self, TestNamespace, apply_crds, repo_root};

/// Examples use the namespace `team-shop`; tests put them into their own namespace.
fn example(file: &str, namespace: &str) -> String {
    let text =
        std::fs::read_to_string(repo_root().join("examples").join(file)).expect("example file");
    text.replace("namespace: team-shop", &format!("namespace: {namespace}"))
}

#[tokio::test]
async fn examples_are_accepted_and_read_back_with_printer_columns() {
    let cluster = cluster::shared();
    let client = cluster.client().await.unwrap();
    apply_crds(&client).await.unwrap();
    let ns = TestNamespace::new(cluster, "examples").await.unwrap();
    for file in [
        "repository.yaml",
        "previewenvironment.yaml",
        "policygate.yaml",
        "healthcheck.yaml",
        "plugin.yaml",
    ] {
        let out = cluster
            .kubectl_with_stdin(["apply", "-f", "-"], &example(file, ns.name()))
            .await
            .unwrap_or_else(|e| panic!("{file} was rejected: {e:#}"));
        assert!(
            out.contains("created") || out.contains("configured"),
            "{file}: {out}"
        );
    }
    // Printer columns and the shared category.
    let table = cluster
        .kubectl(["get", "pullwarden", "-n", ns.name()])
        .await
        .unwrap();
    for needle in [
        "repository.pullwarden.dev/shop",
        "PROVIDER",
        "previewenvironment.pullwarden.dev/shop-demo",
        "PHASE",
        "policygate.pullwarden.dev/shop-merge-policy",
        "MODE",
        "healthcheck.pullwarden.dev/shop-storefront",
        "STATE",
        "plugin.pullwarden.dev/shop-slack",
    ] {
        assert!(
            table.contains(needle),
            "`kubectl get pullwarden` lacks {needle}:\n{table}"
        );
    }
    // Short names.
    for short in ["pwrepo", "preview", "gate", "pwhc", "pwplugin"] {
        cluster
            .kubectl(["get", short, "-n", ns.name()])
            .await
            .unwrap_or_else(|e| panic!("short name {short}: {e:#}"));
    }
    // Defaults were applied by the API server from the schema.
    let interval = cluster
        .kubectl([
            "get",
            "healthcheck",
            "shop-storefront",
            "-n",
            ns.name(),
            "-o",
            "jsonpath={.spec.probe.http.method}",
        ])
        .await
        .unwrap();
    assert_eq!(interval.trim(), "GET");
    let mode = cluster
        .kubectl([
            "get",
            "preview",
            "shop-demo",
            "-n",
            ns.name(),
            "-o",
            "jsonpath={.spec.template.keepLabel}",
        ])
        .await
        .unwrap();
    assert_eq!(mode.trim(), "keep-preview");
}

#[tokio::test]
async fn kubectl_explain_shows_field_documentation() {
    let cluster = cluster::shared();
    apply_crds(&cluster.client().await.unwrap()).await.unwrap();
    // The OpenAPI document can lag the Established condition by a moment.
    let mut last = String::new();
    for _ in 0..50 {
        match cluster
            .kubectl(["explain", "repository.spec.pullRequests.forks"])
            .await
        {
            Ok(out) if out.contains("requireApproval") => {
                assert!(out.contains("trusted user"), "{out}");
                return;
            }
            Ok(out) => last = out,
            Err(e) => last = format!("{e:#}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("kubectl explain never showed the field documentation; last output:\n{last}");
}

struct Bad {
    what: &'static str,
    yaml: &'static str,
    expect: &'static str,
}

const BAD_OBJECTS: &[Bad] = &[
    Bad {
        what: "unknown provider (enum)",
        yaml: "kind: Repository\nmetadata: {name: bad}\nspec: {provider: bitbucket, url: 'https://x/y/z'}",
        expect: "Unsupported value: \"bitbucket\"",
    },
    Bad {
        what: "plain http without opt-in",
        yaml: "kind: Repository\nmetadata: {name: bad}\nspec: {provider: github, url: 'http://github.com/a/b'}",
        expect: "allowInsecureHTTP",
    },
    Bad {
        what: "bad duration",
        yaml: "kind: Repository\nmetadata: {name: bad}\nspec: {provider: github, url: 'https://github.com/a/b', interval: 5minutes}",
        expect: "spec.interval",
    },
    Bad {
        what: "interval below the floor",
        yaml: "kind: Repository\nmetadata: {name: bad}\nspec: {provider: github, url: 'https://github.com/a/b', interval: 1s}",
        expect: "interval must be at least 10s",
    },
    Bad {
        what: "maxInterval shorter than interval",
        yaml: "kind: Repository\nmetadata: {name: bad}\nspec: {provider: github, url: 'https://github.com/a/b', interval: 10m, maxInterval: 1m}",
        expect: "maxInterval must not be shorter than interval",
    },
    Bad {
        what: "pull requests on plain git",
        yaml: "kind: Repository\nmetadata: {name: bad}\nspec: {provider: git, url: 'https://git.example.com/a/b', pullRequests: {labels: [x]}}",
        expect: "provider git follows branches only",
    },
    Bad {
        what: "requireApproval without anyone to approve",
        yaml: "kind: Repository\nmetadata: {name: bad}\nspec: {provider: github, url: 'https://github.com/a/b', pullRequests: {forks: requireApproval}}",
        expect: "needs trustedUsers or trustedTeams",
    },
    Bad {
        what: "preview with both pullRequest and branch",
        yaml: "kind: PreviewEnvironment\nmetadata: {name: bad}\nspec: {repositoryRef: {name: r}, pullRequest: 1, branch: main, template: {path: deploy}}",
        expect: "set exactly one of pullRequest or branch",
    },
    Bad {
        what: "preview with neither pullRequest nor branch",
        yaml: "kind: PreviewEnvironment\nmetadata: {name: bad}\nspec: {repositoryRef: {name: r}, template: {path: deploy}}",
        expect: "set exactly one of pullRequest or branch",
    },
    Bad {
        what: "preview with a malformed SHA",
        yaml: "kind: PreviewEnvironment\nmetadata: {name: bad}\nspec: {repositoryRef: {name: r}, pullRequest: 1, headSha: abc, template: {path: deploy}}",
        expect: "spec.headSha",
    },
    Bad {
        what: "preview with a negative pull request number",
        yaml: "kind: PreviewEnvironment\nmetadata: {name: bad}\nspec: {repositoryRef: {name: r}, pullRequest: -3, template: {path: deploy}}",
        expect: "spec.pullRequest",
    },
    Bad {
        what: "unknown delivery",
        yaml: "kind: PreviewEnvironment\nmetadata: {name: bad}\nspec: {repositoryRef: {name: r}, branch: main, template: {path: deploy, delivery: flux}}",
        expect: "Unsupported value: \"flux\"",
    },
    Bad {
        what: "gate rule with two kinds",
        yaml: "kind: PolicyGate\nmetadata: {name: bad}\nspec: {repositoryRef: {name: r}, rules: [{name: two, approvals: {count: 1}, labels: {require: [x]}}]}",
        expect: "each rule needs exactly one rule kind",
    },
    Bad {
        what: "gate rule without a kind",
        yaml: "kind: PolicyGate\nmetadata: {name: bad}\nspec: {repositoryRef: {name: r}, rules: [{name: none}]}",
        expect: "each rule needs exactly one rule kind",
    },
    Bad {
        what: "gate with both selector and ref",
        yaml: "kind: PolicyGate\nmetadata: {name: bad}\nspec: {repositoryRef: {name: r}, repositorySelector: {matchLabels: {a: b}}, rules: [{name: a, signedCommits: {}}]}",
        expect: "set exactly one of repositorySelector or repositoryRef",
    },
    Bad {
        what: "gate with duplicate rule names",
        yaml: "kind: PolicyGate\nmetadata: {name: bad}\nspec: {repositoryRef: {name: r}, rules: [{name: a, signedCommits: {}}, {name: a, secretScan: {}}]}",
        expect: "rule names must be unique",
    },
    Bad {
        what: "gate rule name that cannot be used in an expression",
        yaml: "kind: PolicyGate\nmetadata: {name: bad}\nspec: {repositoryRef: {name: r}, rules: [{name: 'Has Space', signedCommits: {}}]}",
        expect: "spec.rules[0].name",
    },
    Bad {
        what: "negative failure threshold",
        yaml: "kind: HealthCheck\nmetadata: {name: bad}\nspec: {target: {url: 'https://x.example.com'}, probe: {tcp: {}}, failureThreshold: -1}",
        expect: "spec.failureThreshold",
    },
    Bad {
        what: "zero success threshold",
        yaml: "kind: HealthCheck\nmetadata: {name: bad}\nspec: {target: {url: 'https://x.example.com'}, probe: {http: {}}, successThreshold: 0}",
        expect: "spec.successThreshold",
    },
    Bad {
        what: "timeout longer than interval",
        yaml: "kind: HealthCheck\nmetadata: {name: bad}\nspec: {target: {url: 'https://x.example.com'}, probe: {http: {}}, interval: 5s, timeout: 10s}",
        expect: "timeout must not exceed interval",
    },
    Bad {
        what: "two probe targets",
        yaml: "kind: HealthCheck\nmetadata: {name: bad}\nspec: {target: {url: 'https://x.example.com', previewRef: {name: p}}, probe: {http: {}}}",
        expect: "set exactly one of url, previewRef or service",
    },
    Bad {
        what: "bad expected status",
        yaml: "kind: HealthCheck\nmetadata: {name: bad}\nspec: {target: {url: 'https://x.example.com'}, probe: {http: {expectStatus: ['2xx']}}}",
        expect: "expectStatus",
    },
    Bad {
        what: "plugin with two kinds",
        yaml: "kind: Plugin\nmetadata: {name: bad}\nspec: {events: [push], webhook: {url: 'https://x.example.com'}, slack: {webhookSecretRef: {name: s, key: k}}}",
        expect: "set exactly one of webhook, slack or wasm",
    },
    Bad {
        what: "unknown plugin event",
        yaml: "kind: Plugin\nmetadata: {name: bad}\nspec: {events: [pullRequest.reopenedd], webhook: {url: 'https://x.example.com'}}",
        expect: "Unsupported value: \"pullRequest.reopenedd\"",
    },
    Bad {
        what: "wasm url without sha256",
        yaml: "kind: Plugin\nmetadata: {name: bad}\nspec: {wasm: {source: {url: 'https://x.example.com/m.wasm'}}}",
        expect: "a url source needs sha256",
    },
];

#[tokio::test]
async fn bad_objects_are_rejected_with_a_clear_message() {
    let cluster = cluster::shared();
    apply_crds(&cluster.client().await.unwrap()).await.unwrap();
    let ns = TestNamespace::new(cluster, "bad-objects").await.unwrap();
    let mut failures = Vec::new();
    for bad in BAD_OBJECTS {
        let doc = format!(
            "apiVersion: pullwarden.dev/v1alpha1\n{}",
            bad.yaml.replacen(
                "metadata: {name: bad}",
                &format!("metadata: {{name: bad, namespace: {}}}", ns.name()),
                1
            )
        );
        match cluster
            .kubectl_with_stdin(["apply", "--dry-run=server", "-f", "-"], &doc)
            .await
        {
            Ok(out) => failures.push(format!("{}: accepted ({out})", bad.what)),
            Err(e) => {
                let msg = format!("{e:#}");
                if !msg.contains(bad.expect) {
                    failures.push(format!(
                        "{}: rejected, but the message lacks {:?}:\n{msg}",
                        bad.what, bad.expect
                    ));
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} bad objects misbehaved:\n{}",
        failures.len(),
        BAD_OBJECTS.len(),
        failures.join("\n\n")
    );
}
