//! Template parameters of one preview: [`PreviewParams::build`] turns the pull request (or
//! branch), the repository and the `template` of a PreviewEnvironment into the values that
//! `{{name}}` placeholders stand for.
//!
//! Exact rules (they decide namespace and host names, so they are part of the API):
//! - [`slug`] (used for `branch_slug` with max 50 and `repo` with max 63): lowercase; every
//!   character outside `[a-z0-9]` becomes `-`; runs of `-` collapse to one; leading and trailing
//!   `-` are trimmed. If the result is empty it is replaced by an 8-hex-digit hash of the input;
//!   if it is longer than the maximum it is cut to `max - 9` characters (trailing `-` trimmed)
//!   and `-<hash>` is appended. The hash is the first 8 hex digits of SHA-256 of the *original*
//!   input, so two long branches sharing a prefix never collide. Short names are left readable
//!   and compatible with the `branch_slug` of Argo CD's pull-request generator and GitLab's
//!   `CI_COMMIT_REF_SLUG` (image tags computed by CI keep matching); the price is that
//!   `feature/x` and `feature-x` share a slug.
//! - Namespace: `template.namespace` (default `{{repo}}-pr-{{number}}`, branch previews
//!   `{{repo}}-{{branch_slug}}`) is rendered, then forced into an RFC 1123 label by
//!   [`force_namespace`]: lowercase, characters outside `[a-z0-9-]` become `-`, leading/trailing
//!   `-` trimmed (runs are kept: the template author may want them); longer than 63 → cut to 54,
//!   trailing `-` trimmed, `-<hash of the rendered name>` appended. `default` and `kube-*` are
//!   refused: a branch called `kube-system` must never become a preview namespace, because the
//!   preview's ServiceAccount is granted write access in its namespace.
//! - Host: `template.host` is rendered, lowercased and must then be a valid DNS name (labels of
//!   1–63 `[a-z0-9-]` not starting or ending with `-`, ≤ 253 in total) — an error otherwise, as
//!   silently changing a host name would publish the preview somewhere nobody expects.
//!   `url` is `https://<host>` (both empty without a host).
//! - `namespace`, `host` and `url` are not available inside the namespace template; `host` and
//!   `url` are not available inside the host template.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::error::{Problem, RenderError};
use super::template::{self, Lookup};
use crate::api::PreviewTemplate;

/// Maximum length of `branch_slug`.
pub const BRANCH_SLUG_MAX: usize = 50;
/// Maximum length of an RFC 1123 label (namespaces, `repo`).
pub const LABEL_MAX: usize = 63;
/// Hex digits of the disambiguating hash appended to cut names.
const HASH_HEX: usize = 8;

/// Top-level parameter names, in the order error messages list them.
pub const PARAM_NAMES: &[&str] = &[
    "number",
    "title",
    "author",
    "branch",
    "branch_slug",
    "target_branch",
    "head_sha",
    "short_sha",
    "namespace",
    "host",
    "url",
    "repo",
    "owner",
];

/// Namespaces a preview may never use, whatever the template says.
const RESERVED_NAMESPACES: &[&str] = &["default", "kube-system", "kube-public", "kube-node-lease"];

/// What is previewed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviewSource<'a> {
    PullRequest {
        number: u64,
        title: &'a str,
        author: &'a str,
        /// Head branch name.
        head_ref: &'a str,
        /// Target (base) branch name.
        base_ref: &'a str,
    },
    Branch {
        name: &'a str,
        /// Usually the repository's default branch; may be empty.
        target_branch: &'a str,
    },
}

/// Everything [`PreviewParams::build`] needs.
#[derive(Clone, Copy, Debug)]
pub struct ParamsInput<'a> {
    pub source: PreviewSource<'a>,
    /// The revision deployed (40 or 64 hex digits).
    pub head_sha: &'a str,
    /// Repository owner (user, organisation or GitLab group path), as the forge spells it.
    pub owner: &'a str,
    /// Repository name, as the forge spells it (slugged into the `repo` parameter).
    pub repo: &'a str,
    pub template: &'a PreviewTemplate,
}

/// The values of every template parameter. Fields are the parameters of the same name;
/// `number`, `title` and `author` are empty for branch previews, `host` and `url` without a
/// host template.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PreviewParams {
    pub number: String,
    pub title: String,
    pub author: String,
    pub branch: String,
    pub branch_slug: String,
    pub target_branch: String,
    pub head_sha: String,
    pub short_sha: String,
    pub namespace: String,
    pub host: String,
    pub url: String,
    pub repo: String,
    pub owner: String,
    /// `template.vars`, available as `{{vars.NAME}}`.
    pub vars: BTreeMap<String, String>,
}

impl PreviewParams {
    /// Builds the parameters, rendering and checking the namespace and host templates.
    /// Errors: [`RenderError::Template`] for bad placeholders in those templates,
    /// [`RenderError::Params`] for an invalid head SHA, variable name, namespace or host.
    pub fn build(input: &ParamsInput<'_>) -> Result<PreviewParams, RenderError> {
        Self::build_in(input, "")
    }

    /// [`PreviewParams::build`] with the operator's enforced namespace prefix (already rendered,
    /// e.g. `team-shop-`): a rendered namespace that does not start with it gets it prepended,
    /// before `host`, `url` and the manifests see the name, so the template chooses only the
    /// rest of the name.
    pub fn build_in(
        input: &ParamsInput<'_>,
        namespace_prefix: &str,
    ) -> Result<PreviewParams, RenderError> {
        let mut problems = Vec::new();
        let head_sha = input.head_sha.to_ascii_lowercase();
        if !is_sha(&head_sha) {
            problems.push(format!(
                "head SHA {:?} is not a 40 or 64 digit hex commit id",
                input.head_sha
            ));
        }
        for name in input.template.vars.keys() {
            if !template::is_var_name(name) {
                problems.push(format!(
                    "template.vars key {name:?} is not a valid parameter name \
                     (letters, digits, `_` and `-`, starting with a letter or `_`, at most 63)"
                ));
            }
        }
        let (number, title, author, branch, target_branch, default_ns) = match input.source {
            PreviewSource::PullRequest {
                number,
                title,
                author,
                head_ref,
                base_ref,
            } => (
                number.to_string(),
                title,
                author,
                head_ref,
                base_ref,
                "{{repo}}-pr-{{number}}",
            ),
            PreviewSource::Branch {
                name,
                target_branch,
            } => (
                String::new(),
                "",
                "",
                name,
                target_branch,
                "{{repo}}-{{branch_slug}}",
            ),
        };
        let mut params = PreviewParams {
            number,
            title: title.to_string(),
            author: author.to_string(),
            branch: branch.to_string(),
            branch_slug: slug(branch, BRANCH_SLUG_MAX),
            target_branch: target_branch.to_string(),
            short_sha: head_sha.chars().take(7).collect(),
            head_sha,
            namespace: String::new(),
            host: String::new(),
            url: String::new(),
            repo: slug(input.repo, LABEL_MAX),
            owner: input.owner.to_string(),
            vars: input.template.vars.clone(),
        };
        if !problems.is_empty() {
            return Err(RenderError::Params(problems));
        }

        let ns_template = input.template.namespace.as_deref().unwrap_or(default_ns);
        let ns_scope = Partial {
            params: &params,
            hidden: &["namespace", "host", "url"],
        };
        let rendered_ns = template::render_string(ns_template, "template.namespace", &ns_scope)
            .map_err(RenderError::Template)?;
        let forced = sanitize_namespace(&rendered_ns).map_err(|e| RenderError::Params(vec![e]))?;
        params.namespace = if forced.starts_with(namespace_prefix) {
            check_namespace(&forced).map_err(|e| RenderError::Params(vec![e]))?;
            forced
        } else {
            let prefixed = format!("{namespace_prefix}{forced}");
            check_namespace(&prefixed).map_err(|e| {
                RenderError::Params(vec![format!(
                    "{e} (the operator's namespace prefix {namespace_prefix:?} was prepended to {forced:?}; shorten template.namespace)"
                )])
            })?;
            prefixed
        };

        if let Some(host_template) = input.template.host.as_deref() {
            let host_scope = Partial {
                params: &params,
                hidden: &["host", "url"],
            };
            let rendered = template::render_string(host_template, "template.host", &host_scope)
                .map_err(RenderError::Template)?;
            let host = rendered.to_ascii_lowercase();
            if let Err(why) = check_dns_name(&host) {
                return Err(RenderError::Params(vec![format!(
                    "template.host rendered to {rendered:?}, which is not a valid DNS name: {why}"
                )]));
            }
            params.url = format!("https://{host}");
            params.host = host;
        }
        Ok(params)
    }

    /// The preview URL, `None` without a host template.
    pub fn url(&self) -> Option<String> {
        (!self.url.is_empty()).then(|| self.url.clone())
    }

    /// The value of parameter `name` (`vars.X` included), `None` when there is no such
    /// parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        if let Some(var) = name.strip_prefix("vars.") {
            return self.vars.get(var).map(String::as_str);
        }
        Some(match name {
            "number" => &self.number,
            "title" => &self.title,
            "author" => &self.author,
            "branch" => &self.branch,
            "branch_slug" => &self.branch_slug,
            "target_branch" => &self.target_branch,
            "head_sha" => &self.head_sha,
            "short_sha" => &self.short_sha,
            "namespace" => &self.namespace,
            "host" => &self.host,
            "url" => &self.url,
            "repo" => &self.repo,
            "owner" => &self.owner,
            _ => return None,
        })
    }

    fn unknown_message(&self, name: &str) -> String {
        if let Some(var) = name.strip_prefix("vars.") {
            let known: Vec<&str> = self.vars.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "none are defined".to_string()
            } else {
                format!("defined: {}", known.join(", "))
            };
            return format!("unknown variable `{var}` (template.vars: {known})");
        }
        format!(
            "unknown parameter `{name}` (known: {}, vars.NAME)",
            PARAM_NAMES.join(", ")
        )
    }
}

impl Lookup for PreviewParams {
    fn lookup(&self, name: &str) -> Result<&str, String> {
        self.get(name).ok_or_else(|| self.unknown_message(name))
    }
}

/// The parameters with some names not yet available (while rendering the namespace and host).
struct Partial<'a> {
    params: &'a PreviewParams,
    hidden: &'static [&'static str],
}

impl Lookup for Partial<'_> {
    fn lookup(&self, name: &str) -> Result<&str, String> {
        if self.hidden.contains(&name) {
            return Err(format!("parameter `{name}` is not available here"));
        }
        self.params.lookup(name)
    }
}

/// First 8 hex digits of SHA-256 of `input`.
pub(crate) fn short_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    hex::encode(digest)[..HASH_HEX].to_string()
}

/// Slug of `input` of at most `max` (≥ 10) characters: see the module docs for the exact rule.
pub fn slug(input: &str, max: usize) -> String {
    let mut out = String::with_capacity(input.len());
    for c in input.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if c == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.is_empty() {
        return short_hash(input);
    }
    if out.len() > max {
        cut_with_hash(&out, max, input)
    } else {
        out
    }
}

/// `s` (ASCII) cut so that `-<hash of hash_input>` fits in `max`.
fn cut_with_hash(s: &str, max: usize, hash_input: &str) -> String {
    let mut head = s[..max.saturating_sub(HASH_HEX + 1).min(s.len())].to_string();
    while head.ends_with('-') {
        head.pop();
    }
    let hash = short_hash(hash_input);
    if head.is_empty() {
        hash
    } else {
        format!("{head}-{hash}")
    }
}

/// Forces a rendered namespace into a valid, non-reserved RFC 1123 label (rule in the module
/// docs). The error explains why no valid name could be made.
pub fn force_namespace(rendered: &str) -> Result<String, String> {
    let s = sanitize_namespace(rendered)?;
    check_namespace(&s)?;
    Ok(s)
}

/// [`force_namespace`] without the reserved-name check (the operator's prefix comes first).
fn sanitize_namespace(rendered: &str) -> Result<String, String> {
    let mut s: String = rendered
        .chars()
        .flat_map(char::to_lowercase)
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = s.trim_matches('-');
    if trimmed.len() != s.len() {
        s = trimmed.to_string();
    }
    if s.is_empty() {
        return Err(format!(
            "the namespace template rendered to {rendered:?}, which has no valid character"
        ));
    }
    if s.len() > LABEL_MAX {
        s = cut_with_hash(&s, LABEL_MAX, rendered);
    }
    Ok(s)
}

/// Whether `ns` is a valid, non-reserved preview namespace.
pub(crate) fn check_namespace(ns: &str) -> Result<(), String> {
    if !is_dns_label(ns) {
        return Err(format!(
            "namespace {ns:?} is not a valid RFC 1123 label (lowercase letters, digits and `-`, at most 63)"
        ));
    }
    if RESERVED_NAMESPACES.contains(&ns) || ns.starts_with("kube-") {
        return Err(format!(
            "namespace {ns:?} is reserved; previews may not use `default` or `kube-*`"
        ));
    }
    Ok(())
}

/// RFC 1123 label: 1–63 of `[a-z0-9-]`, alphanumeric at both ends.
pub(crate) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= LABEL_MAX
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain as Kubernetes validates object names: at most 253 in total,
/// dot-separated parts of `[a-z0-9-]` with alphanumeric ends (Kubernetes does not apply DNS's
/// 63-character label limit here).
pub(crate) fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// Why `host` is not a valid DNS name, if it is not.
fn check_dns_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("it is empty".into());
    }
    if host.len() > 253 {
        return Err("it is longer than 253 characters".into());
    }
    for label in host.split('.') {
        if !is_dns_label(label) {
            return Err(format!(
                "label {label:?} must be 1–63 lowercase letters, digits or `-`, not starting or ending with `-`"
            ));
        }
    }
    Ok(())
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Problems of a template string, for callers that validate a template before any pull request
/// exists (e.g. the controller checking `template.namespace`): unknown names and bad syntax.
pub fn check_template_string(
    template: &str,
    origin: &str,
    vars: &BTreeMap<String, String>,
) -> Vec<Problem> {
    let params = PreviewParams {
        vars: vars.clone(),
        ..PreviewParams::default()
    };
    match template::render_string(template, origin, &params) {
        Ok(_) => Vec::new(),
        Err(problems) => problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Delivery;

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    fn template() -> PreviewTemplate {
        serde_json::from_value(serde_json::json!({"path": "deploy/preview"})).unwrap()
    }

    fn pr_input<'a>(t: &'a PreviewTemplate, title: &'a str, head_ref: &'a str) -> ParamsInput<'a> {
        ParamsInput {
            source: PreviewSource::PullRequest {
                number: 42,
                title,
                author: "octocat",
                head_ref,
                base_ref: "main",
            },
            head_sha: SHA,
            owner: "acme",
            repo: "Shop.Web",
            template: t,
        }
    }

    #[test]
    fn slug_keeps_clean_names_readable() {
        assert_eq!(slug("main", 50), "main");
        assert_eq!(slug("feature/Login_Page", 50), "feature-login-page");
        assert_eq!(slug("--a//b__c--", 50), "a-b-c");
        assert_eq!(slug("release/1.2.3", 50), "release-1-2-3");
    }

    #[test]
    fn slug_of_unicode_lowercases_then_replaces() {
        // `É` lowercases to `é`, which is outside [a-z0-9].
        assert_eq!(slug("Émile/Ünïcode", 50), "mile-n-code");
        let s = slug("日本語", 50);
        assert_eq!(s.len(), 8);
        assert!(s.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(is_dns_label(&s));
    }

    #[test]
    fn slug_of_all_invalid_input_is_a_stable_distinct_hash() {
        let a = slug("日本語", 50);
        let b = slug("中文", 50);
        assert_ne!(a, b);
        assert_eq!(a, slug("日本語", 50));
        assert_eq!(slug("///", 50), short_hash("///"));
        assert_eq!(slug("", 50), short_hash(""));
    }

    #[test]
    fn long_slugs_are_cut_with_a_hash_and_never_collide() {
        let base = "feature/".to_string() + &"very-long-branch-name-".repeat(5);
        let a = slug(&(base.clone() + "one"), BRANCH_SLUG_MAX);
        let b = slug(&(base + "two"), BRANCH_SLUG_MAX);
        assert!(
            a.len() <= BRANCH_SLUG_MAX && b.len() <= BRANCH_SLUG_MAX,
            "{a} {b}"
        );
        assert_ne!(a, b);
        assert!(is_dns_label(&a) && is_dns_label(&b));
        assert!(a.starts_with("feature-very-long-branch-name-"));
        // Exactly at the limit: untouched.
        let fifty = "a".repeat(50);
        assert_eq!(slug(&fifty, 50), fifty);
        assert_eq!(slug(&"a".repeat(51), 50).len(), 50);
    }

    #[test]
    fn cut_never_leaves_a_dash_before_the_hash() {
        // Character 41 (the cut point) is a `-`.
        let input = format!("{}-{}", "a".repeat(40), "b".repeat(20));
        let s = slug(&input, 50);
        assert!(!s.contains("--"), "{s}");
        assert_eq!(s, format!("{}-{}", "a".repeat(40), short_hash(&input)));
    }

    #[test]
    fn the_operator_prefix_is_prepended_once_before_host_and_url() {
        let mut t = template();
        t.namespace = Some("victim-{{number}}".into());
        t.host = Some("{{namespace}}.preview.test".into());
        let p = PreviewParams::build_in(&pr_input(&t, "x", "feature"), "team-").unwrap();
        assert_eq!(p.namespace, "team-victim-42");
        assert_eq!(p.host, "team-victim-42.preview.test");
        t.namespace = Some("team-already-{{number}}".into());
        let p = PreviewParams::build_in(&pr_input(&t, "x", "feature"), "team-").unwrap();
        assert_eq!(p.namespace, "team-already-42", "not prefixed twice");
        t.namespace = Some("x".repeat(60));
        let err = PreviewParams::build_in(&pr_input(&t, "x", "feature"), "team-").unwrap_err();
        assert!(err.to_string().contains("prefix"), "{err}");
    }

    #[test]
    fn namespace_is_forced_into_a_label() {
        assert_eq!(force_namespace("Shop_Web-PR-42").unwrap(), "shop-web-pr-42");
        assert_eq!(force_namespace("-a.b-").unwrap(), "a-b");
        let long = format!("{}-pr-1", "x".repeat(80));
        let ns = force_namespace(&long).unwrap();
        assert_eq!(ns.len(), 63);
        assert!(is_dns_label(&ns));
        assert_ne!(
            ns,
            force_namespace(&format!("{}-pr-2", "x".repeat(80))).unwrap()
        );
        assert!(force_namespace("...").is_err());
        assert!(force_namespace("").is_err());
    }

    #[test]
    fn reserved_namespaces_are_refused() {
        for ns in [
            "kube-system",
            "KUBE_SYSTEM",
            "default",
            "kube-public",
            "kube-anything",
        ] {
            let err = force_namespace(ns).unwrap_err();
            assert!(err.contains("reserved"), "{ns}: {err}");
        }
        assert!(force_namespace("kubes").is_ok());
    }

    #[test]
    fn branch_named_kube_system_cannot_become_the_namespace() {
        let mut t = template();
        t.namespace = Some("{{branch_slug}}".into());
        let err = PreviewParams::build(&pr_input(&t, "x", "kube-system")).unwrap_err();
        assert!(matches!(err, RenderError::Params(_)), "{err:?}");
    }

    #[test]
    fn build_for_a_pull_request() {
        let mut t = template();
        t.host = Some("PR-{{number}}.{{repo}}.preview.example.com".into());
        t.vars.insert("image".into(), "ghcr.io/acme/shop".into());
        let p = PreviewParams::build(&pr_input(&t, "Add login", "feature/Login")).unwrap();
        assert_eq!(p.number, "42");
        assert_eq!(p.repo, "shop-web");
        assert_eq!(p.namespace, "shop-web-pr-42");
        assert_eq!(p.branch, "feature/Login");
        assert_eq!(p.branch_slug, "feature-login");
        assert_eq!(p.target_branch, "main");
        assert_eq!(p.short_sha, "0123456");
        assert_eq!(p.host, "pr-42.shop-web.preview.example.com");
        assert_eq!(p.url, "https://pr-42.shop-web.preview.example.com");
        assert_eq!(p.get("vars.image"), Some("ghcr.io/acme/shop"));
        assert_eq!(p.get("vars.nope"), None);
        assert_eq!(p.get("nope"), None);
        assert_eq!(t.delivery, Delivery::Manifests);
    }

    #[test]
    fn build_for_a_branch_uses_the_branch_default_namespace() {
        let t = template();
        let input = ParamsInput {
            source: PreviewSource::Branch {
                name: "demo/Black-Friday",
                target_branch: "main",
            },
            head_sha: &SHA.to_uppercase(),
            owner: "acme",
            repo: "shop",
            template: &t,
        };
        let p = PreviewParams::build(&input).unwrap();
        assert_eq!(p.number, "");
        assert_eq!(p.title, "");
        assert_eq!(p.namespace, "shop-demo-black-friday");
        assert_eq!(p.head_sha, SHA);
        assert_eq!(p.host, "");
        assert_eq!(p.url, "");
    }

    #[test]
    fn invalid_host_is_an_error_not_a_rewrite() {
        let mut t = template();
        t.host = Some("{{title}}.preview.example.com".into());
        let err = PreviewParams::build(&pr_input(&t, "Add login!", "x")).unwrap_err();
        let RenderError::Params(msgs) = err else {
            panic!("{err:?}")
        };
        assert!(msgs[0].contains("not a valid DNS name"), "{msgs:?}");
        t.host = Some("pr-{{number}}.example.com.".into());
        assert!(PreviewParams::build(&pr_input(&t, "x", "x")).is_err());
        t.host = Some(format!("{}.example.com", "a".repeat(64)));
        assert!(PreviewParams::build(&pr_input(&t, "x", "x")).is_err());
    }

    #[test]
    fn namespace_template_cannot_use_itself_or_the_host() {
        let mut t = template();
        t.namespace = Some("{{namespace}}-x".into());
        let err = PreviewParams::build(&pr_input(&t, "x", "x")).unwrap_err();
        assert!(err.to_string().contains("not available"), "{err}");
        t.namespace = None;
        t.host = Some("{{url}}".into());
        assert!(PreviewParams::build(&pr_input(&t, "x", "x")).is_err());
        // The host may use the namespace.
        t.host = Some("{{namespace}}.preview.example.com".into());
        let p = PreviewParams::build(&pr_input(&t, "x", "x")).unwrap();
        assert_eq!(p.host, "shop-web-pr-42.preview.example.com");
    }

    #[test]
    fn unknown_parameter_in_namespace_template_names_the_origin() {
        let mut t = template();
        t.namespace = Some("{{repo}}-{{pr}}".into());
        let RenderError::Template(problems) =
            PreviewParams::build(&pr_input(&t, "x", "x")).unwrap_err()
        else {
            panic!()
        };
        assert_eq!(problems[0].file, "template.namespace");
        assert!(problems[0].message.contains("unknown parameter `pr`"));
    }

    #[test]
    fn invalid_sha_and_var_names_are_reported_together() {
        let mut t = template();
        t.vars.insert("bad name".into(), "v".into());
        let mut input = pr_input(&t, "x", "x");
        input.head_sha = "main";
        let RenderError::Params(msgs) = PreviewParams::build(&input).unwrap_err() else {
            panic!()
        };
        assert_eq!(msgs.len(), 2, "{msgs:?}");
    }

    #[test]
    fn check_template_string_reports_unknown_names_only() {
        let vars = BTreeMap::from([("image".to_string(), "x".to_string())]);
        assert!(check_template_string("{{repo}}-{{vars.image}}", "t", &vars).is_empty());
        assert_eq!(
            check_template_string("{{repo}}-{{vars.tag}}", "t", &vars).len(),
            1
        );
    }
}
