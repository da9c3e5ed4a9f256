//! End-to-end tests of [`render`]: fixtures, injection attempts, limits, refusals, ordering.

use super::*;
use crate::settings::PreviewSettings;
use serde_json::json;

/// [`super::render`] with the settings of `pullwarden run` without safety flags.
fn render(
    files: &[TreeFile],
    params: &PreviewParams,
    preview_name: &str,
) -> Result<Vec<RenderedObject>, RenderError> {
    super::render(files, params, preview_name, &PreviewSettings::default())
}

/// [`super::render_with_limits`] with the default settings.
fn render_with_limits(
    files: &[TreeFile],
    params: &PreviewParams,
    preview_name: &str,
    limits: &Limits,
) -> Result<Vec<RenderedObject>, RenderError> {
    super::render_with_limits(
        files,
        params,
        preview_name,
        &PreviewSettings::default(),
        limits,
    )
}

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn file(path: &str, text: &str) -> TreeFile {
    TreeFile {
        path: path.into(),
        bytes: text.as_bytes().to_vec(),
        executable: false,
    }
}

fn template(host: Option<&str>) -> crate::api::PreviewTemplate {
    let mut t: crate::api::PreviewTemplate =
        serde_json::from_value(json!({"path": "deploy/preview"})).unwrap();
    t.host = host.map(str::to_string);
    t.vars.insert("image".into(), "ghcr.io/acme/shop".into());
    t.vars.insert("replicas".into(), "3".into());
    t
}

fn params_with(title: &str, branch: &str, author: &str) -> PreviewParams {
    let t = template(Some("pr-{{number}}.preview.example.com"));
    PreviewParams::build(&ParamsInput {
        source: PreviewSource::PullRequest {
            number: 42,
            title,
            author,
            head_ref: branch,
            base_ref: "main",
        },
        head_sha: SHA,
        owner: "acme",
        repo: "shop",
        template: &t,
    })
    .unwrap()
}

fn params() -> PreviewParams {
    params_with("Add login", "feature/login", "octocat")
}

fn fixture_app() -> Vec<TreeFile> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preview/app");
    let mut files: Vec<TreeFile> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| {
            let path = e.unwrap().path();
            TreeFile {
                path: path.file_name().unwrap().to_str().unwrap().to_string(),
                bytes: std::fs::read(&path).unwrap(),
                executable: false,
            }
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    files
}

fn refusals(err: RenderError) -> Vec<Refusal> {
    match err {
        RenderError::Refused(r) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn cm(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n")
}

#[test]
fn fixture_app_renders_ten_objects_in_apply_order() {
    let objects = render(&fixture_app(), &params(), "shop-pr-42").unwrap();
    let order: Vec<String> = objects
        .iter()
        .map(|o| format!("{}/{}", o.kind, o.name))
        .collect();
    assert_eq!(
        order,
        [
            "ServiceAccount/web",
            "NetworkPolicy/web",
            "ConfigMap/web-config",
            "Secret/web-secrets",
            "Service/web",
            "Deployment/web",
            "Job/migrate-0123456",
            "HorizontalPodAutoscaler/web",
            "PodDisruptionBudget/web",
            "Ingress/web",
        ]
    );
    for o in &objects {
        assert_eq!(o.namespace, "shop-pr-42");
        assert_eq!(o.body["metadata"]["namespace"], "shop-pr-42");
        assert_eq!(o.body["metadata"]["labels"][PREVIEW_LABEL], "shop-pr-42");
        assert_eq!(o.body["metadata"]["labels"][MANAGED_BY_LABEL], "pullwarden");
        assert_eq!(o.body["apiVersion"], o.api_version.as_str());
    }
    let deploy = &objects[5].body;
    let container = &deploy["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "ghcr.io/acme/shop:sha-0123456");
    assert_eq!(
        container["args"],
        json!([
            "--listen=:8080",
            "--public-url=https://pr-42.preview.example.com"
        ])
    );
    assert_eq!(
        deploy["metadata"]["labels"]["app.kubernetes.io/version"],
        "0123456"
    );
    assert_eq!(
        deploy["metadata"]["annotations"]["pullwarden.dev/pull-request"],
        "42"
    );
    assert_eq!(deploy["spec"]["replicas"], 2);

    let config = &objects[2].body["data"];
    assert_eq!(config["PREVIEW_TITLE"], "Add login");
    assert_eq!(config["GIT_BRANCH"], "feature/login");
    assert_eq!(
        config["app.properties"],
        "server.port=8080\npreview.pr=42\npreview.namespace=shop-pr-42\n"
    );
    assert_eq!(
        objects[9].body["spec"]["rules"][0]["host"],
        "pr-42.preview.example.com"
    );
    assert_eq!(inventory_entries(&objects).len(), 10);
    assert_eq!(objects[3].file, "config.yaml");
    assert_eq!(objects[3].document, 2);
}

/// The Deployment and Job pods satisfy Pod Security `restricted` (the fixture is reused by
/// end-to-end tests in a namespace that enforces it).
#[test]
fn fixture_pods_are_restricted() {
    let objects = render(&fixture_app(), &params(), "shop-pr-42").unwrap();
    let pods: Vec<&Value> = objects
        .iter()
        .filter(|o| matches!(o.kind.as_str(), "Deployment" | "Job"))
        .map(|o| &o.body["spec"]["template"]["spec"])
        .collect();
    assert_eq!(pods.len(), 2);
    for pod in pods {
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        assert_eq!(
            pod["securityContext"]["seccompProfile"]["type"],
            "RuntimeDefault"
        );
        for c in pod["containers"].as_array().unwrap() {
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false);
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
            assert!(c["resources"]["requests"]["cpu"].is_string());
            assert!(c["resources"]["requests"]["memory"].is_string());
            assert!(c["resources"]["limits"]["cpu"].is_string());
            assert!(c["resources"]["limits"]["memory"].is_string());
        }
    }
}

#[test]
fn order_does_not_depend_on_input_order() {
    let mut files = fixture_app();
    let a = render(&files, &params(), "p").unwrap();
    files.reverse();
    files.rotate_left(3);
    let b = render(&files, &params(), "p").unwrap();
    assert_eq!(a, b);
}

#[test]
fn same_kind_objects_are_ordered_by_name() {
    let files = [file(
        "a.yaml",
        &format!("{}---\n{}---\n{}", cm("zeta"), cm("alpha"), cm("mid")),
    )];
    let names: Vec<String> = render(&files, &params(), "p")
        .unwrap()
        .into_iter()
        .map(|o| o.name)
        .collect();
    assert_eq!(names, ["alpha", "mid", "zeta"]);
}

/// A template quoting the untrusted values in every syntactic position.
const POSITIONS: &str = r#"apiVersion: v1
kind: ConfigMap
metadata:
  name: probe
  annotations:
    plain: {{title}}
    partial: pre-{{title}}-post
    double: "{{title}}"
    single: '{{title}}'
    branch: {{branch}}
    author: {{ author }}
    flow: {a: {{title}}, b: "{{author}}"}
data:
  block: |
    title={{title}}
    branch={{branch}}
  folded: >-
    {{title}}
  list: "x"
  seq_plain: ok
extra:
  - {{title}}
  - [{{branch}}, {{author}}]
"#;

fn leaves(v: &Value, path: String, out: &mut Vec<(String, Value)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                leaves(v, format!("{path}/{k}"), out);
            }
        }
        Value::Array(a) => {
            for (i, v) in a.iter().enumerate() {
                leaves(v, format!("{path}/{i}"), out);
            }
        }
        other => out.push((path, other.clone())),
    }
}

#[test]
fn injection_through_title_branch_and_author_cannot_change_structure() {
    let files = [file("probe.yaml", POSITIONS)];
    let benign = render(&files, &params_with("t", "b", "a"), "p").unwrap();
    let mut benign_leaves = Vec::new();
    leaves(&benign[0].body, String::new(), &mut benign_leaves);

    let prefix = template::prepare_yaml(POSITIONS, "probe.yaml", &params())
        .unwrap()
        .prefix;
    let attacks = [
        "foo\n  kind: ClusterRole",
        "x\nmetadata:\n  namespace: kube-system",
        "\"; rm -rf / #",
        "' ]}\n---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: evil",
        "{{namespace}}",
        "{{\"{{\"}}",
        "*alias",
        "&anchor value",
        "!!binary AA==",
        "# comment",
        "- item",
        "key: value",
        "|",
        ">-",
        "%YAML 1.2",
        "@`\t\\",
        "true",
        "12",
        "",
        "\u{0}\u{1b}[31m\u{2028}",
        &format!("{prefix}0x{prefix}1x"),
    ];
    for attack in attacks {
        for (title, branch, author) in [(attack, "b", "a"), ("t", attack, "a"), ("t", "b", attack)]
        {
            let objs = render(&files, &params_with(title, branch, author), "p")
                .unwrap_or_else(|e| panic!("{attack:?}: {e}"));
            assert_eq!(objs.len(), 1, "{attack:?}");
            let o = &objs[0];
            assert_eq!((o.kind.as_str(), o.name.as_str()), ("ConfigMap", "probe"));
            assert_eq!(o.body["metadata"]["namespace"], "shop-pr-42");
            let mut got = Vec::new();
            leaves(&o.body, String::new(), &mut got);
            // Same paths, same order; only the string values that quote a parameter differ,
            // and they differ by exactly the value.
            let paths =
                |v: &[(String, Value)]| v.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>();
            assert_eq!(paths(&got), paths(&benign_leaves), "{attack:?}");
            let ann = &o.body["metadata"]["annotations"];
            let expect_title = title.to_string();
            assert_eq!(
                ann["double"],
                Value::String(expect_title.clone()),
                "{attack:?}"
            );
            assert_eq!(ann["single"], Value::String(expect_title.clone()));
            assert_eq!(ann["partial"], Value::String(format!("pre-{title}-post")));
            assert_eq!(ann["flow"]["b"], Value::String(author.to_string()));
            assert_eq!(
                o.body["data"]["block"],
                Value::String(format!("title={title}\nbranch={branch}\n"))
            );
            // Whole unquoted scalars: a string, or the integer/boolean the value spells.
            let plain_expect = match title {
                "true" => json!(true),
                "12" => json!(12),
                t => json!(t),
            };
            assert_eq!(ann["plain"], plain_expect, "{attack:?}");
            assert_eq!(o.body["extra"][0], plain_expect);
        }
    }
}

#[test]
fn values_in_keys_stay_keys() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: k\ndata:\n  {{title}}: v\n  \"{{branch}}\": w\n";
    let objs = render(
        &[file("k.yaml", text)],
        &params_with("a: b\nc", "x: [1]", "a"),
        "p",
    )
    .unwrap();
    assert_eq!(objs[0].body["data"], json!({"a: b\nc": "v", "x: [1]": "w"}));
    // Two keys that become equal are a parse error, not a silent overwrite.
    let err = render(
        &[file("k.yaml", text)],
        &params_with("same", "same", "a"),
        "p",
    )
    .unwrap_err();
    let RenderError::Parse(problems) = err else {
        panic!("{err:?}")
    };
    assert!(
        problems[0].message.contains("duplicate mapping key"),
        "{problems:?}"
    );
}

#[test]
fn typed_placeholders_are_checked_after_substitution() {
    let text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: {{vars.replicas}}\n  template:\n    spec:\n      hostNetwork: {{vars.net}}\n      containers: []\n";
    let mut p = params();
    p.vars.insert("net".into(), "false".into());
    let objs = render(&[file("d.yaml", text)], &p, "p").unwrap();
    assert_eq!(objs[0].body["spec"]["replicas"], 3);
    assert_eq!(
        objs[0].body["spec"]["template"]["spec"]["hostNetwork"],
        false
    );
    p.vars.insert("net".into(), "true".into());
    let r = refusals(render(&[file("d.yaml", text)], &p, "p").unwrap_err());
    assert_eq!(
        r[0].reasons,
        [RefusalReason::PodSpec {
            field: "hostNetwork".into()
        }]
    );
}

#[test]
fn unknown_parameters_in_every_file_are_reported_with_file_and_line() {
    let files = [
        file("a.yaml", &(cm("a") + "data:\n  x: {{nope}}\n")),
        file(
            "b.yaml",
            &(cm("b") + "data:\n  x: \"{{vars.missing}}\"\n  y: {{ title }}\n"),
        ),
    ];
    let err = render(&files, &params(), "p").unwrap_err();
    let RenderError::Template(problems) = &err else {
        panic!("{err:?}")
    };
    let locs: Vec<String> = problems.iter().map(Problem::location).collect();
    assert_eq!(locs, ["a.yaml:6", "b.yaml:6"]);
    assert!(problems[0].message.contains("unknown parameter `nope`"));
    assert!(problems[1].message.contains("unknown variable `missing`"));
    assert!(
        err.summary()
            .starts_with("2 template errors: a.yaml:6: unknown parameter `nope`")
    );
}

#[test]
fn literal_braces_in_yaml() {
    let text = cm("lit")
        + "data:\n  tpl: '{{\"{{\"}} .Values.x }}'\n  go: \"{{\"{{\"}}range}}{{number}}\"\n";
    let objs = render(&[file("l.yaml", &text)], &params(), "p").unwrap();
    assert_eq!(
        objs[0].body["data"],
        json!({"tpl": "{{ .Values.x }}", "go": "{{range}}42"})
    );
}

#[test]
fn file_selection() {
    let files = [
        file("b.yml", &cm("b")),
        file("a.YAML", &cm("a")),
        file(".hidden.yaml", "not: [valid"),
        file(".github/workflows/ci.yaml", "not: [valid"),
        file("README.md", "# docs"),
        file("nested/c.yaml", &cm("c")),
        file("script.sh", "echo"),
    ];
    let objs = render(&files, &params(), "p").unwrap();
    let mut sources: Vec<&str> = objs.iter().map(|o| o.file.as_str()).collect();
    sources.sort();
    assert_eq!(sources, ["a.YAML", "b.yml", "nested/c.yaml"]);
}

#[test]
fn a_template_without_objects_is_an_error() {
    for files in [
        vec![],
        vec![file("README.md", "# nothing")],
        vec![file("empty.yaml", "---\n# only comments\n---\n")],
    ] {
        let err = render(&files, &params(), "p").unwrap_err();
        assert!(
            matches!(&err, RenderError::Parse(p) if p[0].message.contains("no Kubernetes objects")),
            "{err:?}"
        );
    }
}

#[test]
fn kustomize_and_helm_are_refused_with_a_pointer_to_argocd() {
    let files = [
        file("deployment.yaml", &cm("a")),
        file("overlays/kustomization.yaml", "resources: []"),
        file("Chart.yaml", "apiVersion: v2\nname: x\n"),
    ];
    let err = render(&files, &params(), "p").unwrap_err();
    let RenderError::Unsupported(problems) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(problems.len(), 2);
    assert!(problems[0].message.contains("Helm"));
    assert!(problems[1].message.contains("kustomize is not supported"));
    assert!(problems[1].message.contains("delivery: argocd"));
    assert!(err.summary().len() <= 140);
}

#[test]
fn parse_problems_of_every_file_are_collected() {
    let files = [
        file("1.yaml", "- just\n- a list\n"),
        file("2.yaml", "apiVersion: v1\nmetadata:\n  name: x\n"),
        file(
            "3.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  generateName: x-\n",
        ),
        file("4.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: [1]\n"),
        file("5.yaml", "a: [unclosed\n"),
        file("6.yaml", &cm("fine")),
        TreeFile {
            path: "7.yaml".into(),
            bytes: vec![0xff, 0xfe],
            executable: false,
        },
        file(
            "8.yaml",
            "apiVersion: 1\nkind: ConfigMap\nmetadata:\n  name: x\n",
        ),
    ];
    let err = render(&files, &params(), "p").unwrap_err();
    let RenderError::Parse(problems) = &err else {
        panic!("{err:?}")
    };
    let got: Vec<String> = problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 7, "{got:#?}");
    assert!(got[0].starts_with("7.yaml: not valid UTF-8"), "{got:#?}");
    assert!(got[1].contains("1.yaml (document 1): a document must be a mapping"));
    assert!(got[2].contains("2.yaml (document 1): missing kind"));
    assert!(got[3].contains("missing metadata.name (generateName is not supported"));
    assert!(got[4].contains("metadata must be a mapping"));
    assert!(got[5].starts_with("5.yaml (document 1): "));
    assert!(got[6].contains("apiVersion must be a string"));
}

#[test]
fn refusals_name_file_document_and_object() {
    let files = [
        file(
            "rbac.yaml",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: admin\nroleRef: {}\n",
        ),
        file(
            "web.yaml",
            &(cm("ok")
                + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: x\n  namespace: kube-system\nspec: {}\n"),
        ),
    ];
    let err = render(&files, &params(), "p").unwrap_err();
    assert_eq!(
        err.summary(),
        "refused 2 objects: ClusterRoleBinding/admin (cluster-scoped), Deployment/x (in kube-system)"
    );
    let r = refusals(err);
    assert_eq!((r[0].file.as_str(), r[0].document), ("rbac.yaml", 1));
    assert_eq!(
        (r[1].file.as_str(), r[1].document, r[1].object()),
        ("web.yaml", 2, "Deployment/x".into())
    );
    assert!(r[1].to_string().contains("kube-system"));
}

#[test]
fn every_disallowed_kind_refuses_the_whole_render() {
    for (api, kind) in [
        ("rbac.authorization.k8s.io/v1", "ClusterRole"),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"),
        ("rbac.authorization.k8s.io/v1", "Role"),
        ("rbac.authorization.k8s.io/v1", "RoleBinding"),
        ("v1", "Namespace"),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
        (
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
        ),
        (
            "admissionregistration.k8s.io/v1",
            "ValidatingWebhookConfiguration",
        ),
        ("policy/v1beta1", "PodSecurityPolicy"),
        ("apps/v1", "DaemonSet"),
        ("v1", "Pod"),
        ("argoproj.io/v1alpha1", "Application"),
        ("pullwarden.dev/v1alpha1", "PreviewEnvironment"),
    ] {
        let bad = format!("apiVersion: {api}\nkind: {kind}\nmetadata:\n  name: x\n");
        let files = [file("good.yaml", &cm("good")), file("bad.yaml", &bad)];
        let r = refusals(render(&files, &params(), "p").unwrap_err());
        assert_eq!(r.len(), 1, "{kind}");
        assert_eq!(r[0].kind, kind);
        assert!(
            matches!(r[0].reasons[0], RefusalReason::KindNotAllowed { .. }),
            "{kind}"
        );
    }
}

#[test]
fn every_allowed_kind_renders() {
    let mut text = String::new();
    for k in ALLOWED_KINDS {
        text.push_str(&format!(
            "---\napiVersion: {}\nkind: {}\nmetadata:\n  name: x\n",
            k.api_version, k.kind
        ));
    }
    let objs = render(&[file("all.yaml", &text)], &params(), "p").unwrap();
    let kinds: Vec<&str> = objs.iter().map(|o| o.kind.as_str()).collect();
    let expected: Vec<&str> = ALLOWED_KINDS.iter().map(|k| k.kind).collect();
    assert_eq!(kinds, expected);
}

#[test]
fn duplicates_are_refused_naming_the_first() {
    let files = [
        file("a.yaml", &cm("same")),
        file("b.yaml", &format!("{}---\n{}", cm("other"), cm("same"))),
    ];
    let r = refusals(render(&files, &params(), "p").unwrap_err());
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].file.as_str(), r[0].document), ("b.yaml", 2));
    assert_eq!(
        r[0].reasons,
        [RefusalReason::Duplicate {
            file: "a.yaml".into(),
            document: 1
        }]
    );
    // Same name, different kinds: fine.
    let svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: same\n";
    assert!(
        render(
            &[file("a.yaml", &cm("same")), file("s.yaml", svc)],
            &params(),
            "p"
        )
        .is_ok()
    );
}

#[test]
fn namespace_is_set_or_must_match() {
    let text = format!("{}  namespace: shop-pr-42\n---\n{}", cm("a"), cm("b"));
    let objs = render(&[file("a.yaml", &text)], &params(), "p").unwrap();
    assert!(
        objs.iter()
            .all(|o| o.body["metadata"]["namespace"] == "shop-pr-42")
    );
    let other = format!("{}  namespace: shop-pr-43\n", cm("a"));
    let r = refusals(render(&[file("a.yaml", &other)], &params(), "p").unwrap_err());
    assert_eq!(r[0].reasons[0].short(), "in shop-pr-43");
}

#[test]
fn hand_made_params_with_a_reserved_namespace_are_rejected() {
    let mut p = params();
    p.namespace = "kube-system".into();
    assert!(matches!(
        render(&[file("a.yaml", &cm("a"))], &p, "x"),
        Err(RenderError::Params(_))
    ));
}

#[test]
fn labels_are_merged_and_server_fields_removed() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  uid: 123\n  resourceVersion: \"9\"\n  managedFields: []\n  creationTimestamp: null\n  labels:\n    team: web\n    pullwarden.dev/preview: someone-else\nstatus: {}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: b\n  labels: null\n";
    let objs = render(&[file("a.yaml", text)], &params(), "shop-pr-42").unwrap();
    assert_eq!(
        objs[0].body,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": "a", "namespace": "shop-pr-42",
            "labels": {"team": "web", "pullwarden.dev/preview": "shop-pr-42",
                       "app.kubernetes.io/managed-by": "pullwarden"}}})
    );
    assert_eq!(
        objs[1].body["metadata"]["labels"][PREVIEW_LABEL],
        "shop-pr-42"
    );
}

#[test]
fn nothing_is_partially_accepted() {
    let files = [
        file("a.yaml", &cm("a")),
        file(
            "b.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: b\nspec:\n  type: NodePort\n",
        ),
    ];
    let r = refusals(render(&files, &params(), "p").unwrap_err());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].reasons[0].short(), "NodePort");
}

#[test]
fn limits() {
    let small = Limits {
        max_files: 2,
        max_bytes: 200,
        max_objects: 3,
        max_rendered_bytes: 4096,
    };
    let p = params();
    let three = [
        file("a.yaml", &cm("a")),
        file("b.yaml", &cm("b")),
        file("c.yaml", &cm("c")),
    ];
    assert!(
        matches!(render_with_limits(&three, &p, "p", &small), Err(RenderError::Limit(m)) if m.contains("3 manifest files"))
    );
    // Ignored files do not count.
    let with_docs = [
        file("a.yaml", &cm("a")),
        file("README.md", &"x".repeat(1000)),
    ];
    assert!(render_with_limits(&with_docs, &p, "p", &small).is_ok());
    let big = [file(
        "a.yaml",
        &(cm("a") + &format!("data:\n  x: {}\n", "y".repeat(200))),
    )];
    assert!(
        matches!(render_with_limits(&big, &p, "p", &small), Err(RenderError::Limit(m)) if m.contains("bytes"))
    );
    let four = [file(
        "a.yaml",
        &format!(
            "{}---\n{}---\n{}---\n{}",
            cm("a"),
            cm("b"),
            cm("c"),
            cm("d")
        ),
    )];
    let small_objects = Limits {
        max_bytes: 10_000,
        ..small
    };
    assert!(
        matches!(render_with_limits(&four, &p, "p", &small_objects), Err(RenderError::Limit(m)) if m.contains("more than 3 objects"))
    );
    // Substituted values count toward the expansion limit.
    let long = params_with(&"t".repeat(3000), "b", "a");
    let quoting = [file(
        "a.yaml",
        &(cm("a") + "data:\n  a: \"{{title}}\"\n  b: \"{{title}}\"\n"),
    )];
    let err = render_with_limits(&quoting, &long, "p", &small_objects).unwrap_err();
    assert!(
        matches!(&err, RenderError::Limit(m) if m.contains("expand")),
        "{err:?}"
    );
}

#[test]
fn default_limits_allow_256_objects_and_no_more() {
    let text: String = (0..256)
        .map(|i| format!("---\n{}", cm(&format!("cm-{i}"))))
        .collect();
    assert_eq!(
        render(&[file("a.yaml", &text)], &params(), "p")
            .unwrap()
            .len(),
        256
    );
    let text = text + "---\n" + &cm("one-more");
    assert!(matches!(
        render(&[file("a.yaml", &text)], &params(), "p"),
        Err(RenderError::Limit(_))
    ));
    let huge = [file(
        "a.yaml",
        &(cm("a") + &format!("data:\n  x: {}\n", "y".repeat(4 << 20))),
    )];
    assert!(
        matches!(render(&huge, &params(), "p"), Err(RenderError::Limit(m)) if m.contains("bytes"))
    );
}

#[test]
fn alias_bomb_is_a_limit_error() {
    let mut text = cm("bomb") + "data:\n  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n";
    for i in 1..10 {
        let p = i - 1;
        text.push_str(&format!(
            "  a{i}: &a{i} [{}]\n",
            vec![format!("*a{p}"); 10].join(", ")
        ));
    }
    // Caught by serde_yaml's repetition guard or by the expansion budget, whichever trips
    // first; either way a limit error.
    let err = render(&[file("bomb.yaml", &text)], &params(), "p").unwrap_err();
    assert!(
        matches!(&err, RenderError::Limit(m) if m.contains("aliases")),
        "{err:?}"
    );
    // Few jumps, large strings: under serde_yaml's guard, over the 16 MiB budget, although
    // the file is well under the 4 MiB input limit.
    let mut wide = cm("wide") + &format!("data:\n  s: &s {}\n  list: [", "y".repeat(1 << 20));
    wide.push_str(&vec!["*s"; 20].join(", "));
    wide.push_str("]\n");
    let err = render(&[file("wide.yaml", &wide)], &params(), "p").unwrap_err();
    assert!(
        matches!(&err, RenderError::Limit(m) if m.contains("expand")),
        "{err:?}"
    );
}

fn entry(api: &str, kind: &str, name: &str, ns: Option<&str>) -> InventoryEntry {
    InventoryEntry {
        api_version: api.into(),
        kind: kind.into(),
        name: name.into(),
        namespace: ns.map(str::to_string),
    }
}

#[test]
fn prune_set_returns_what_disappeared_in_reverse_apply_order() {
    let ns = Some("pv");
    let previous = vec![
        entry("v1", "ConfigMap", "old", ns),
        entry("networking.k8s.io/v1", "Ingress", "web", ns),
        entry("apps/v1", "Deployment", "web", ns),
        entry("batch/v1", "Job", "migrate-aaaaaaa", ns),
        entry("autoscaling/v2beta2", "HorizontalPodAutoscaler", "web", ns),
        entry("v1", "ConfigMap", "old", ns),
        entry("v1", "ServiceAccount", "web", ns),
    ];
    let current = vec![
        entry("apps/v1", "Deployment", "web", ns),
        entry("batch/v1", "Job", "migrate-bbbbbbb", ns),
        entry("autoscaling/v2", "HorizontalPodAutoscaler", "web", ns),
        entry("v1", "ServiceAccount", "web", ns),
    ];
    let prune = prune_set(&previous, &current);
    let got: Vec<String> = prune
        .iter()
        .map(|e| format!("{}/{}", e.kind, e.name))
        .collect();
    assert_eq!(got, ["Ingress/web", "Job/migrate-aaaaaaa", "ConfigMap/old"]);
    assert!(prune_set(&current, &current).is_empty());
    assert!(prune_set(&[], &current).is_empty());
}

#[test]
fn prune_set_never_returns_foreign_or_cluster_scoped_entries() {
    let previous = vec![
        entry("rbac.authorization.k8s.io/v1", "ClusterRole", "admin", None),
        entry("v1", "Namespace", "kube-system", None),
        entry("v1", "ConfigMap", "no-namespace", None),
        entry("v1", "ConfigMap", "empty-namespace", Some("")),
        entry("example.com/v1", "Widget", "w", Some("pv")),
        entry("v1", "ConfigMap", "kept", Some("pv")),
    ];
    let got = prune_set(&previous, &[]);
    assert_eq!(got, [entry("v1", "ConfigMap", "kept", Some("pv"))]);
}

#[test]
fn inventory_then_prune_round_trip() {
    let objs = render(&fixture_app(), &params(), "p").unwrap();
    let first = inventory_entries(&objs);
    let mut next = params();
    next.short_sha = "fedcba9".into();
    let objs2 = render(&fixture_app(), &next, "p").unwrap();
    let second = inventory_entries(&objs2);
    assert_eq!(
        prune_set(&first, &second),
        [entry(
            "batch/v1",
            "Job",
            "migrate-0123456",
            Some("shop-pr-42")
        )]
    );
}

#[test]
fn preview_label_values() {
    assert_eq!(preview_label_value("shop-pr-42"), "shop-pr-42");
    let long = format!("{}-pr-1", "a".repeat(70));
    let v = preview_label_value(&long);
    assert_eq!(v.len(), 63);
    assert!(v.starts_with(&"a".repeat(54)));
    assert_ne!(v, preview_label_value(&format!("{}-pr-2", "a".repeat(70))));
    assert_eq!(preview_label_value("a.b"), "a.b");
    assert_eq!(preview_label_value("..."), params::short_hash("..."));
}

#[test]
fn refused_render_makes_a_comment_and_status() {
    let files = [file(
        "rbac.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata:\n  name: admin\n",
    )];
    let err = render(&files, &params(), "shop-pr-42").unwrap_err();
    let status = status_description(ReportState::Refused, &err.summary());
    assert!(status.len() <= 140);
    assert!(status.starts_with("Preview refused: refused 1 object: ClusterRoleBinding/admin"));
    let body = refusal_comment("shop-pr-42", SHA, "shop-pr-42", &err);
    assert!(body.starts_with("### "), "{body}");
    assert!(body.contains("`rbac.yaml` (document 1)"));
}

// --- Operator safety settings: Ingress, Service, pod and ownership rules -------------------

/// Settings with a preview domain, an ingress class, an annotation allow-list, NodePort and a
/// runtime class allowed.
fn configured() -> PreviewSettings {
    PreviewSettings {
        domain: Some("preview.example.com".into()),
        ingress_class: Some("nginx".into()),
        ingress_annotations: vec![
            "nginx.ingress.kubernetes.io/proxy-body-size".into(),
            "example.com/*".into(),
        ],
        service_types: vec!["NodePort".into()],
        runtime_classes: vec!["gvisor".into()],
        ..PreviewSettings::default()
    }
}

/// The rendered host of [`params`].
const HOST: &str = "pr-42.preview.example.com";

fn ingress(extra_meta: &str, spec: &str) -> String {
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: web\n{extra_meta}spec:\n{spec}"
    )
}

fn rule(host: &str) -> String {
    format!(
        "  - host: \"{host}\"\n    http:\n      paths:\n      - path: /\n        pathType: Prefix\n        backend:\n          service: {{name: web, port: {{number: 80}}}}\n"
    )
}

/// The short reasons of a one-object render, `[]` when it renders.
fn outcome(text: &str, settings: &PreviewSettings) -> Vec<String> {
    match super::render(&[file("o.yaml", text)], &params(), "p", settings) {
        Ok(_) => Vec::new(),
        Err(RenderError::Refused(r)) => r[0].reasons.iter().map(RefusalReason::short).collect(),
        Err(other) => panic!("{other:?}"),
    }
}

#[test]
fn ingress_rules_table() {
    let default = PreviewSettings::default();
    let conf = configured();
    let rules = |hosts: &[&str]| {
        format!(
            "  rules:\n{}",
            hosts.iter().map(|h| rule(h)).collect::<String>()
        )
    };
    let cases: Vec<(&str, String, &PreviewSettings, Vec<&str>)> = vec![
        (
            "the rendered host",
            ingress("", &rules(&[HOST])),
            &default,
            vec![],
        ),
        (
            "the rendered host, any case",
            ingress("", &rules(&["PR-42.preview.example.com"])),
            &default,
            vec![],
        ),
        (
            "a production host",
            ingress("", &rules(&["shop.example.com"])),
            &default,
            vec!["host shop.example.com"],
        ),
        (
            "another preview's host, no domain configured",
            ingress("", &rules(&["pr-7.preview.example.com"])),
            &default,
            vec!["host pr-7.preview.example.com"],
        ),
        (
            "under the configured domain",
            ingress("", &rules(&[HOST, "api-42.preview.example.com"])),
            &conf,
            vec![],
        ),
        (
            "the domain itself",
            ingress("", &rules(&["preview.example.com"])),
            &conf,
            vec!["host preview.example.com"],
        ),
        (
            "a suffix that is not a subdomain",
            ingress("", &rules(&["evilpreview.example.com"])),
            &conf,
            vec!["host evilpreview.example.com"],
        ),
        (
            "a wildcard, even under the domain",
            ingress("", &rules(&["*.preview.example.com"])),
            &conf,
            vec!["wildcard host *.preview.example.com"],
        ),
        (
            "a host-less rule",
            ingress("", "  rules:\n  - http:\n      paths: []\n"),
            &default,
            vec!["Ingress without host"],
        ),
        (
            "a defaultBackend",
            ingress(
                "",
                "  defaultBackend:\n    service: {name: web, port: {number: 80}}\n",
            ),
            &default,
            vec!["defaultBackend"],
        ),
        (
            "a TLS host that is not the preview's",
            ingress(
                "",
                &format!(
                    "  tls:\n  - hosts: [\"{HOST}\", \"shop.example.com\"]\n{}",
                    rules(&[HOST])
                ),
            ),
            &default,
            vec!["host shop.example.com"],
        ),
        (
            "a class without a configured one",
            ingress(
                "",
                &format!("  ingressClassName: nginx\n{}", rules(&[HOST])),
            ),
            &default,
            vec!["ingress class nginx"],
        ),
        (
            "the configured class",
            ingress(
                "",
                &format!("  ingressClassName: nginx\n{}", rules(&[HOST])),
            ),
            &conf,
            vec![],
        ),
        (
            "another class than the configured one",
            ingress(
                "",
                &format!("  ingressClassName: public\n{}", rules(&[HOST])),
            ),
            &conf,
            vec!["ingress class public"],
        ),
        (
            "any annotation by default (cert-manager)",
            ingress(
                "  annotations:\n    cert-manager.io/cluster-issuer: letsencrypt-prod\n",
                &rules(&[HOST]),
            ),
            &default,
            vec!["annotation cert-manager.io/cluster-issuer"],
        ),
        (
            "the legacy class annotation",
            ingress(
                "  annotations:\n    kubernetes.io/ingress.class: public\n",
                &rules(&[HOST]),
            ),
            &conf,
            vec!["annotation kubernetes.io/ingress.class"],
        ),
        (
            "a snippet next to an allowed annotation",
            ingress(
                "  annotations:\n    nginx.ingress.kubernetes.io/proxy-body-size: 8m\n    nginx.ingress.kubernetes.io/server-snippet: x\n",
                &rules(&[HOST]),
            ),
            &conf,
            vec!["annotation nginx.ingress.kubernetes.io/server-snippet"],
        ),
        (
            "allowed exactly and by prefix, and tool bookkeeping",
            ingress(
                "  annotations:\n    nginx.ingress.kubernetes.io/proxy-body-size: 8m\n    example.com/team: shop\n    argocd.argoproj.io/tracking-id: x\n",
                &rules(&[HOST]),
            ),
            &conf,
            vec![],
        ),
    ];
    for (what, text, settings, expected) in cases {
        assert_eq!(outcome(&text, settings), expected, "{what}");
    }
}

#[test]
fn ingress_class_is_forced_when_configured_and_left_absent_otherwise() {
    let text = ingress("", &format!("  rules:\n{}", rule(HOST)));
    let objs = super::render(&[file("i.yaml", &text)], &params(), "p", &configured()).unwrap();
    assert_eq!(objs[0].body["spec"]["ingressClassName"], "nginx");
    let objs = render(&[file("i.yaml", &text)], &params(), "p").unwrap();
    assert!(objs[0].body["spec"]["ingressClassName"].is_null());
}

#[test]
fn a_preview_without_host_or_domain_may_not_have_an_ingress_host() {
    let mut t = template(None);
    t.path = "deploy/preview".into();
    let p = PreviewParams::build(&ParamsInput {
        source: PreviewSource::PullRequest {
            number: 42,
            title: "t",
            author: "a",
            head_ref: "b",
            base_ref: "main",
        },
        head_sha: SHA,
        owner: "acme",
        repo: "shop",
        template: &t,
    })
    .unwrap();
    let text = ingress("", &format!("  rules:\n{}", rule(HOST)));
    let r = refusals(render(&[file("i.yaml", &text)], &p, "p").unwrap_err());
    let line = r[0].to_string();
    assert!(line.contains("no host (template.host)"), "{line}");
}

#[test]
fn service_rules_table() {
    let default = PreviewSettings::default();
    let conf = configured();
    let svc = |spec: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  ports: [{{port: 80}}]\n{spec}"
        )
    };
    let cases: Vec<(&str, String, &PreviewSettings, Vec<&str>)> = vec![
        ("ClusterIP", svc("  type: ClusterIP\n"), &default, vec![]),
        ("no type", svc(""), &default, vec![]),
        (
            "NodePort by default",
            svc("  type: NodePort\n"),
            &default,
            vec!["NodePort"],
        ),
        (
            "NodePort when allowed",
            svc("  type: NodePort\n"),
            &conf,
            vec![],
        ),
        (
            "LoadBalancer not allowed",
            svc("  type: LoadBalancer\n"),
            &conf,
            vec!["LoadBalancer"],
        ),
        (
            "ExternalName never",
            svc("  type: ExternalName\n  externalName: db.prod.svc.cluster.local\n"),
            &conf,
            vec!["ExternalName"],
        ),
        (
            "externalIPs never",
            svc("  externalIPs: [10.0.0.1]\n"),
            &conf,
            vec!["externalIPs"],
        ),
    ];
    for (what, text, settings, expected) in cases {
        assert_eq!(outcome(&text, settings), expected, "{what}");
    }
    let r = refusals(
        render(
            &[file("s.yaml", &svc("  type: ExternalName\n"))],
            &params(),
            "p",
        )
        .unwrap_err(),
    );
    assert!(r[0].to_string().contains("never allowed"), "{}", r[0]);
}

#[test]
fn pod_rules_table() {
    let default = PreviewSettings::default();
    let conf = configured();
    let deploy = |pod: &str| {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers: [{{name: app, image: x}}]\n{pod}"
        )
    };
    let cases: Vec<(&str, String, &PreviewSettings, Vec<&str>)> = vec![
        ("a plain pod", deploy(""), &default, vec![]),
        (
            "nodeName",
            deploy("      nodeName: control-plane-1\n"),
            &default,
            vec!["nodeName"],
        ),
        (
            "system-cluster-critical",
            deploy("      priorityClassName: system-cluster-critical\n"),
            &default,
            vec!["priorityClassName system-cluster-critical"],
        ),
        (
            "system-node-critical",
            deploy("      priorityClassName: system-node-critical\n"),
            &default,
            vec!["priorityClassName system-node-critical"],
        ),
        (
            "any system- class",
            deploy("      priorityClassName: system-custom\n"),
            &default,
            vec!["priorityClassName system-custom"],
        ),
        (
            "a tenant priority class",
            deploy("      priorityClassName: preview-low\n"),
            &default,
            vec![],
        ),
        (
            "the control-plane taint",
            deploy(
                "      tolerations: [{key: node-role.kubernetes.io/control-plane, operator: Exists, effect: NoSchedule}]\n",
            ),
            &default,
            vec!["a toleration of node-role.kubernetes.io/control-plane"],
        ),
        (
            "the master taint",
            deploy(
                "      tolerations: [{key: node-role.kubernetes.io/master, operator: Equal, value: \"\"}]\n",
            ),
            &default,
            vec!["a toleration of node-role.kubernetes.io/master"],
        ),
        (
            "every taint",
            deploy("      tolerations: [{operator: Exists}]\n"),
            &default,
            vec!["a toleration of every taint (no key, operator Exists)"],
        ),
        (
            "an ordinary toleration",
            deploy(
                "      tolerations: [{key: dedicated, operator: Equal, value: previews, effect: NoSchedule}]\n",
            ),
            &default,
            vec![],
        ),
        (
            "a runtime class by default",
            deploy("      runtimeClassName: gvisor\n"),
            &default,
            vec!["runtimeClassName gvisor"],
        ),
        (
            "an allowed runtime class",
            deploy("      runtimeClassName: gvisor\n"),
            &conf,
            vec![],
        ),
        (
            "another runtime class",
            deploy("      runtimeClassName: runc-privileged\n"),
            &conf,
            vec!["runtimeClassName runc-privileged"],
        ),
        (
            "a serviceAccountToken projection",
            deploy(
                "      volumes:\n      - name: vault\n        projected:\n          sources:\n          - serviceAccountToken: {audience: vault, path: token}\n",
            ),
            &default,
            vec!["a serviceAccountToken projection (volume vault)"],
        ),
        (
            "a ConfigMap projection",
            deploy(
                "      volumes:\n      - name: cfg\n        projected:\n          sources:\n          - configMap: {name: web-config}\n",
            ),
            &default,
            vec![],
        ),
        (
            "Pullwarden's ServiceAccount",
            deploy("      serviceAccountName: pullwarden-preview\n"),
            &default,
            vec!["serviceAccountName pullwarden-preview (Pullwarden's own)"],
        ),
        (
            "automountServiceAccountToken (allowed: the pod's own ServiceAccount has no rights)",
            deploy("      automountServiceAccountToken: true\n"),
            &default,
            vec![],
        ),
    ];
    for (what, text, settings, expected) in cases {
        assert_eq!(outcome(&text, settings), expected, "{what}");
    }
    // The same rules hold in every pod template.
    let cron = "apiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: c\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          nodeName: n1\n          containers: [{name: a, image: x}]\n";
    assert_eq!(outcome(cron, &default), ["nodeName"]);
    let sts = "apiVersion: apps/v1\nkind: StatefulSet\nmetadata:\n  name: s\nspec:\n  template:\n    spec:\n      tolerations: [{operator: Exists}]\n";
    assert_eq!(
        outcome(sts, &default),
        ["a toleration of every taint (no key, operator Exists)"]
    );
}

#[test]
fn service_account_tokens_and_pullwarden_objects_are_refused() {
    let default = PreviewSettings::default();
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            "a token Secret",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: t\n  annotations: {kubernetes.io/service-account.name: default}\ntype: kubernetes.io/service-account-token\n",
            vec!["service-account token"],
        ),
        (
            "the token annotation on an Opaque Secret",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: t\n  annotations: {kubernetes.io/service-account.name: default}\n",
            vec!["service-account token"],
        ),
        (
            "an Opaque Secret",
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: t\nstringData: {a: b}\n",
            vec![],
        ),
        (
            "Pullwarden's ServiceAccount",
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: pullwarden-preview\n",
            vec!["reserved name"],
        ),
        (
            "Pullwarden's default-deny NetworkPolicy",
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: pullwarden-default-deny\nspec:\n  podSelector: {}\n",
            vec!["reserved name"],
        ),
        (
            "any pullwarden- name",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pullwarden-anything\n",
            vec!["reserved name"],
        ),
        (
            "Pullwarden's quota (a denied kind anyway)",
            "apiVersion: v1\nkind: ResourceQuota\nmetadata:\n  name: pullwarden-preview\n",
            vec!["quota"],
        ),
        (
            "Pullwarden's RoleBinding (a denied kind anyway)",
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: pullwarden-preview\n",
            vec!["RBAC"],
        ),
        (
            "a name that merely contains pullwarden",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: my-pullwarden-notes\n",
            vec![],
        ),
    ];
    for (what, text, expected) in cases {
        assert_eq!(outcome(text, &default), expected, "{what}");
    }
}

/// Every new reason says what to do in words a PR author understands, and the status line stays
/// within the forge's limit.
#[test]
fn refusal_messages_are_clear_and_the_status_line_short() {
    let text = format!(
        "{}---\n{}",
        ingress(
            "  annotations:\n    cert-manager.io/cluster-issuer: letsencrypt-prod\n",
            &format!(
                "  ingressClassName: public\n  rules:\n{}",
                rule("shop.example.com")
            )
        ),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: db\nspec:\n  type: ExternalName\n  externalName: db.prod\n"
    );
    let err = render(&[file("evil.yaml", &text)], &params(), "p").unwrap_err();
    let all = err.to_string();
    for needle in [
        "Ingress host \"shop.example.com\" is not this preview's: use \"pr-42.preview.example.com\" (`{{host}}`)",
        "ingressClassName \"public\" is not allowed; previews use the cluster's default class (omit the field)",
        "Ingress annotation \"cert-manager.io/cluster-issuer\" is not allowed",
        "Service type ExternalName is never allowed",
    ] {
        assert!(all.contains(needle), "{needle:?} not in {all}");
    }
    let status = status_description(ReportState::Refused, &err.summary());
    assert!(status.len() <= report::STATUS_DESCRIPTION_MAX, "{status}");
    assert!(status.contains("Ingress/web"), "{status}");
    let body = refusal_comment("p", SHA, "shop-pr-42", &err);
    // Several reasons of one object are listed one per line, none cut off by the others.
    for needle in [
        "  - Ingress host \"shop.example.com\" is not this preview",
        "  - ingressClassName \"public\" is not allowed",
        "  - Ingress annotation \"cert-manager.io/cluster-issuer\" is not allowed",
    ] {
        assert!(body.contains(needle), "{needle:?} not in {body}");
    }
}

#[test]
fn network_policies_may_narrow_but_not_widen_the_default_deny() {
    let policy = |spec: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np\nspec:\n  podSelector: {{}}\n{spec}"
        )
    };
    let ok = |spec: &str| {
        render(&[file("np.yaml", &policy(spec))], &params(), "p")
            .unwrap_or_else(|e| panic!("{spec}: {e}"));
    };
    let refused = |spec: &str, expect: &str| {
        let err = render(&[file("np.yaml", &policy(spec))], &params(), "p").expect_err(spec);
        let text = err.to_string();
        assert!(
            text.contains("NetworkPolicy peer") && text.contains(expect),
            "{spec}: {text}"
        );
    };
    // The shipped fixture's shape: ingress controller in, DNS and own pods out.
    ok(
        "  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: ingress-nginx}}\n  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}\n    ports: [{port: 53, protocol: UDP}]\n  - to:\n    - podSelector: {}\n",
    );
    ok("  policyTypes: [Ingress, Egress]\n");
    refused(
        "  egress:\n  - to:\n    - ipBlock: {cidr: 0.0.0.0/0}\n",
        "ipBlock",
    );
    refused("  egress:\n  - {}\n", "every address");
    refused("  ingress:\n  - from: []\n", "every address");
    refused(
        "  egress:\n  - to:\n    - namespaceSelector: {}\n",
        "namespaceSelector",
    );
    refused(
        "  egress:\n  - to:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}\n",
        "namespaceSelector",
    );
    refused(
        "  ingress:\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: other-tenant}}\n",
        "other-tenant",
    );
}
