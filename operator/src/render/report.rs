//! What a preview writes back to the pull request (pure text builders): the one-line commit
//! status description and the sticky comment.
//!
//! - Status descriptions are at most [`STATUS_DESCRIPTION_MAX`] (140) **bytes** — GitHub's limit
//!   is 140 characters, and counting bytes keeps us inside it whatever the forge counts — single
//!   line, cut on a character boundary with `…`.
//! - The sticky comment starts with [`COMMENT_MARKER`] so the controller finds and edits its own
//!   comment instead of adding one per push; the preview owns its `preview` section of it
//!   (gates own theirs, [`crate::forge::splice_section`]). Everything in it that came from the pull request
//!   (file and object names, messages quoting them) is either in a code span or escaped, so a
//!   crafted name cannot inject HTML, links, images or @-mentions, or close the table. Lists
//!   are bounded and the preview's section stays under [`COMMENT_MAX`] bytes (GitHub allows
//!   65,536 characters for the whole comment; gate sections take the rest).

use std::fmt::Write as _;

use super::error::RenderError;
use crate::api::InventoryEntry;

/// GitHub's limit for a commit status description.
pub const STATUS_DESCRIPTION_MAX: usize = 140;
/// First line of the sticky comment; how the controller recognises its own comment.
pub const COMMENT_MARKER: &str = "<!-- pullwarden:preview -->";
/// Upper bound of the preview's section of the sticky comment, in bytes.
pub const COMMENT_MAX: usize = 40_000;
/// Rows of the object table and entries of problem lists shown before "… and N more".
pub const LIST_MAX: usize = 50;
/// Longest name or message shown in a comment, in characters.
const ITEM_MAX: usize = 300;
/// Reasons listed per refused object.
const REASONS_MAX: usize = 10;

/// The preview state a write-back reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportState {
    Pending,
    /// Waiting for the head SHA's required checks (`template.waitFor`).
    Waiting,
    /// A fork's new head waits for a trusted user's approval; it is not deployed.
    WaitingForApproval,
    Deploying,
    Ready,
    Failed,
    /// The manifests were refused (any [`RenderError`]).
    Refused,
    /// Deleted after `template.ttl` without a push.
    Expired,
    /// Scaled to zero after `template.sleepAfter`; the comment says how to wake it.
    Sleeping,
    /// Torn down (pull request closed or merged, label removed, over the cap).
    Deleted,
}

impl ReportState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportState::Pending => "pending",
            ReportState::Waiting => "waiting for checks",
            ReportState::WaitingForApproval => "waiting for approval",
            ReportState::Deploying => "deploying",
            ReportState::Ready => "ready",
            ReportState::Failed => "failed",
            ReportState::Refused => "refused",
            ReportState::Expired => "expired",
            ReportState::Sleeping => "sleeping",
            ReportState::Deleted => "deleted",
        }
    }

    fn icon(self) -> &'static str {
        match self {
            ReportState::Pending | ReportState::Waiting => "⏳",
            ReportState::WaitingForApproval => "✋",
            ReportState::Deploying => "🚀",
            ReportState::Ready => "✅",
            ReportState::Failed => "❌",
            ReportState::Refused => "⛔",
            ReportState::Expired => "⌛",
            ReportState::Sleeping => "💤",
            ReportState::Deleted => "🗑️",
        }
    }
}

/// `s` cut to at most `max` bytes on a character boundary, with `…` when cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let ellipsis = "…";
    let mut end = max.saturating_sub(ellipsis.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{ellipsis}", &s[..end])
}

/// Control characters (newlines included) become spaces: descriptions are one line.
fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `head` followed by as many whole `items` as fit in `max` bytes, then `, +N more`.
fn fit_list(head: &str, items: &[String], max: usize) -> String {
    let mut out = head.to_string();
    for (i, item) in items.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let rest = items.len() - i - 1;
        let more = if rest > 0 {
            format!(", +{rest} more")
        } else {
            String::new()
        };
        if out.len() + sep.len() + item.len() + more.len() <= max {
            out.push_str(sep);
            out.push_str(item);
            continue;
        }
        if i == 0 {
            // Not even the first item fits: show as much of it as possible.
            let cut = truncate(&format!("{out}{item}"), max.saturating_sub(more.len()));
            return truncate(&format!("{cut}{more}"), max);
        }
        // The previous round made sure this fits.
        let _ = write!(out, ", +{} more", items.len() - i);
        return out;
    }
    truncate(&out, max)
}

impl RenderError {
    /// One line of at most 140 bytes for a commit status, e.g. `refused 2 objects:
    /// ClusterRoleBinding/admin (cluster-scoped), Deployment/x (in kube-system)`.
    pub fn summary(&self) -> String {
        let text = match self {
            RenderError::Refused(refusals) => {
                let items: Vec<String> = refusals
                    .iter()
                    .map(|r| format!("{} ({})", r.object(), r.reasons[0].short()))
                    .collect();
                let head = if refusals.len() == 1 {
                    "refused 1 object: ".to_string()
                } else {
                    format!("refused {} objects: ", refusals.len())
                };
                fit_list(
                    &one_line(&head),
                    &items.iter().map(|i| one_line(i)).collect::<Vec<_>>(),
                    STATUS_DESCRIPTION_MAX,
                )
            }
            other => {
                let lines = other.lines();
                let first = lines.first().map(String::as_str).unwrap_or_default();
                let more = if lines.len() > 1 { " (and more)" } else { "" };
                let head = format!("{}: ", other.heading());
                let room = STATUS_DESCRIPTION_MAX.saturating_sub(head.len() + more.len());
                format!("{head}{}{more}", truncate(&one_line(first), room))
            }
        };
        truncate(&text, STATUS_DESCRIPTION_MAX)
    }

    /// Markdown for the PR comment: a bold heading and a bounded bullet list of every problem
    /// with its location.
    pub fn markdown(&self) -> String {
        let mut items: Vec<String> = match self {
            RenderError::Params(v) => v.iter().map(|m| format!("- {}", text(m))).collect(),
            RenderError::Limit(m) | RenderError::Applied(m) => vec![format!("- {}", text(m))],
            RenderError::Unsupported(v) | RenderError::Template(v) | RenderError::Parse(v) => v
                .iter()
                .map(|p| format!("- {}: {}", code(&p.location()), text(&p.message)))
                .collect(),
            // One reason inline; several as a nested list, each bounded on its own (joined, the
            // later ones would be cut off).
            RenderError::Refused(v) => v
                .iter()
                .map(|r| {
                    let head = format!(
                        "- {} (document {}): {}:",
                        code(&r.file),
                        r.document,
                        code(&format!("{} {}", r.api_version, r.object())),
                    );
                    if let [reason] = r.reasons.as_slice() {
                        return format!("{head} {}", text(&reason.to_string()));
                    }
                    let mut lines = vec![head];
                    for reason in r.reasons.iter().take(REASONS_MAX) {
                        lines.push(format!("  - {}", text(&reason.to_string())));
                    }
                    if r.reasons.len() > REASONS_MAX {
                        lines.push(format!("  - … and {} more", r.reasons.len() - REASONS_MAX));
                    }
                    lines.join("\n")
                })
                .collect(),
        };
        let hidden = items.len().saturating_sub(LIST_MAX);
        items.truncate(LIST_MAX);
        if hidden > 0 {
            items.push(format!("- … and {hidden} more"));
        }
        let mut heading = self.heading();
        if let Some(first) = heading.get(..1) {
            heading = first.to_uppercase() + &heading[1..];
        }
        let consequence = match self {
            RenderError::Applied(_) => "the apply stopped here",
            _ => "nothing was applied",
        };
        format!("**{heading}** — {consequence}.\n\n{}\n", items.join("\n"))
    }
}

/// `s` as an inline code span: one line, bounded, fenced with more backticks than it contains
/// (so it cannot close the span), `|` escaped (GitHub tables split on it even inside code).
fn code(s: &str) -> String {
    let s = truncate_chars(&one_line(s), ITEM_MAX).replace('|', "\\|");
    if s.is_empty() {
        return "` `".into();
    }
    let longest = s.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// `s` as Markdown text: one line, bounded, with Markdown and HTML syntax escaped and
/// @-mentions broken by a zero-width space.
fn text(s: &str) -> String {
    let mut out = String::new();
    for c in truncate_chars(&one_line(s), ITEM_MAX).chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '@' => out.push_str("@\u{200B}"),
            '\\' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '|' | '~' | '!' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// A commit status description (≤ 140 bytes, one line), e.g. `Preview ready:
/// https://pr-42.preview.example.com` or `Preview refused: refused 1 object: …`. `detail` may
/// be empty.
pub fn status_description(state: ReportState, detail: &str) -> String {
    let head = match state {
        ReportState::Pending => "Preview pending",
        ReportState::Waiting => "Preview waiting for checks",
        ReportState::WaitingForApproval => "Preview waiting for approval",
        ReportState::Deploying => "Deploying preview",
        ReportState::Ready => "Preview ready",
        ReportState::Failed => "Preview failed",
        ReportState::Refused => "Preview refused",
        ReportState::Expired => "Preview expired",
        ReportState::Sleeping => "Preview sleeping",
        ReportState::Deleted => "Preview deleted",
    };
    let detail = one_line(detail);
    let text = if detail.trim().is_empty() {
        head.to_string()
    } else {
        format!("{head}: {}", detail.trim())
    };
    truncate(&text, STATUS_DESCRIPTION_MAX)
}

/// What the sticky comment shows. Empty strings mean "unknown" / "none".
#[derive(Clone, Copy, Debug)]
pub struct CommentInput<'a> {
    /// The PreviewEnvironment's name.
    pub preview: &'a str,
    pub state: ReportState,
    /// The preview URL (from the validated host).
    pub url: Option<&'a str>,
    /// Full SHA of the revision deployed (or being deployed).
    pub sha: &'a str,
    pub namespace: &'a str,
    /// Free text: the failure (state `Failed`) or what is happening (e.g. the checks waited
    /// for). Escaped; may come from the API server or the forge.
    pub detail: &'a str,
    /// Objects applied (status inventory).
    pub objects: &'a [InventoryEntry],
    /// Why the render was refused (state `Refused`).
    pub error: Option<&'a RenderError>,
}

/// The preview's section of the sticky comment (Markdown; the comment's [`COMMENT_MARKER`] and
/// section lines are added by the forge layer).
pub fn comment_body(input: &CommentInput<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {} Preview {}\n",
        input.state.icon(),
        input.state.as_str()
    );
    let mut rows = Vec::new();
    if let Some(url) = input.url.filter(|u| !u.is_empty()) {
        rows.push(("URL", link(url)));
    }
    if !input.sha.is_empty() {
        let short: String = input.sha.chars().take(7).collect();
        rows.push(("Commit", format!("{} ({})", code(&short), code(input.sha))));
    }
    if !input.namespace.is_empty() {
        rows.push(("Namespace", code(input.namespace)));
    }
    rows.push(("Preview", code(input.preview)));
    out.push_str("| | |\n|---|---|\n");
    for (k, v) in rows {
        let _ = writeln!(out, "| **{k}** | {v} |");
    }
    out.push('\n');

    if let Some(err) = input.error {
        out.push_str(&err.markdown());
        out.push('\n');
    }
    if !input.detail.trim().is_empty() {
        if input.state == ReportState::Failed {
            let _ = writeln!(out, "**Error:** {}\n", text(input.detail));
        } else {
            let _ = writeln!(out, "{}\n", text(input.detail));
        }
    }
    if !input.objects.is_empty() {
        let n = input.objects.len();
        let _ = writeln!(
            out,
            "<details><summary>{n} object{} in the preview namespace</summary>\n",
            if n == 1 { "" } else { "s" }
        );
        out.push_str("| Kind | Name |\n|---|---|\n");
        for o in input.objects.iter().take(LIST_MAX) {
            let _ = writeln!(out, "| {} | {} |", code(&o.kind), code(&o.name));
        }
        if n > LIST_MAX {
            let _ = writeln!(out, "| … | {} more |", n - LIST_MAX);
        }
        out.push_str("\n</details>\n\n");
    }
    out.push_str("<sub>Maintained by Pullwarden; this comment is updated in place.</sub>\n");
    if out.len() > COMMENT_MAX {
        let mut cut = truncate(&out, COMMENT_MAX - 64);
        cut.push_str("\n\n*(comment shortened)*\n");
        return cut;
    }
    out
}

/// The comment for a refused render: state `Refused` with every problem listed.
pub fn refusal_comment(preview: &str, sha: &str, namespace: &str, err: &RenderError) -> String {
    comment_body(&CommentInput {
        preview,
        state: ReportState::Refused,
        url: None,
        sha,
        namespace,
        detail: "",
        objects: &[],
        error: Some(err),
    })
}

/// A link when `url` is a plain `https://` URL (it comes from the validated host), otherwise a
/// code span.
fn link(url: &str) -> String {
    let plain = url.starts_with("https://")
        && url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?=&%".contains(&b));
    if plain { url.to_string() } else { code(url) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::error::{Problem, Refusal, RefusalReason};

    fn refusal(kind: &str, name: &str, reason: RefusalReason) -> Refusal {
        Refusal {
            file: "deploy/a.yaml".into(),
            document: 1,
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            reasons: vec![reason],
        }
    }

    fn cluster_scoped() -> RefusalReason {
        RefusalReason::KindNotAllowed {
            short: "cluster-scoped",
            why: "ClusterRoleBinding is cluster-scoped RBAC and is not allowed",
        }
    }

    #[test]
    fn summary_of_refusals() {
        let err = RenderError::Refused(vec![
            refusal("ClusterRoleBinding", "admin", cluster_scoped()),
            refusal(
                "Deployment",
                "x",
                RefusalReason::Namespace {
                    namespace: "kube-system".into(),
                    preview: "shop-pr-1".into(),
                },
            ),
        ]);
        assert_eq!(
            err.summary(),
            "refused 2 objects: ClusterRoleBinding/admin (cluster-scoped), Deployment/x (in kube-system)"
        );
    }

    #[test]
    fn summary_counts_what_does_not_fit() {
        let many: Vec<Refusal> = (0..30)
            .map(|i| refusal("ClusterRole", &format!("role-{i}"), cluster_scoped()))
            .collect();
        let s = RenderError::Refused(many).summary();
        assert!(s.len() <= STATUS_DESCRIPTION_MAX, "{s}");
        assert!(s.starts_with("refused 30 objects: ClusterRole/role-0 (cluster-scoped), "));
        let shown = s.matches("ClusterRole/").count();
        assert!(s.ends_with(&format!(", +{} more", 30 - shown)), "{s}");
    }

    #[test]
    fn summary_is_bounded_and_char_safe_for_any_length_of_unicode() {
        for n in 0..200 {
            let name = "é".repeat(n) + &"日".repeat(n % 7);
            for err in [
                RenderError::Refused(vec![refusal("ConfigMap", &name, cluster_scoped())]),
                RenderError::Refused(vec![
                    refusal("ConfigMap", &name, cluster_scoped()),
                    refusal("Secret", &name, cluster_scoped()),
                ]),
                RenderError::Template(vec![Problem {
                    file: name.clone(),
                    document: None,
                    line: Some(3),
                    message: format!("unknown parameter `{name}`"),
                }]),
                RenderError::Params(vec![name.clone(), name.clone()]),
                RenderError::Limit(name.clone()),
            ] {
                let s = err.summary();
                // Building the String already proves char-boundary safety; also bounded.
                assert!(s.len() <= STATUS_DESCRIPTION_MAX, "{n}: {} bytes", s.len());
                assert!(!s.contains('\n'));
            }
        }
    }

    #[test]
    fn summary_of_other_errors() {
        let err = RenderError::Template(vec![
            Problem {
                file: "a.yaml".into(),
                document: None,
                line: Some(3),
                message: "unknown parameter `foo`".into(),
            },
            Problem {
                file: "b.yaml".into(),
                document: None,
                line: Some(1),
                message: "x".into(),
            },
        ]);
        assert_eq!(
            err.summary(),
            "2 template errors: a.yaml:3: unknown parameter `foo` (and more)"
        );
        assert_eq!(
            RenderError::Limit("more than 256 objects (the limit)".into()).summary(),
            "limit exceeded: more than 256 objects (the limit)"
        );
    }

    #[test]
    fn apply_rejections_are_reported_like_refusals() {
        let err = RenderError::Applied(
            "Deployment/web: forbidden: User \"system:serviceaccount:p:pullwarden-preview\" cannot patch".into(),
        );
        assert!(
            err.summary()
                .starts_with("rejected by the API server: Deployment/web: forbidden")
        );
        assert!(err.summary().len() <= STATUS_DESCRIPTION_MAX);
        let md = err.markdown();
        assert!(
            md.starts_with("**Rejected by the API server** — the apply stopped here."),
            "{md}"
        );
    }

    #[test]
    fn truncate_cuts_on_char_boundaries() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "…");
        assert_eq!(truncate("ééé", 5), "é…");
        assert_eq!(truncate("ééé", 4), "…");
        assert_eq!(truncate("aééé", 6), "aé…");
        assert_eq!(truncate("日本語です", 9), "日本…");
        for max in 3..20 {
            assert!(truncate("日本語ですé", max).len() <= max);
        }
    }

    #[test]
    fn status_descriptions() {
        assert_eq!(
            status_description(ReportState::Pending, ""),
            "Preview pending"
        );
        assert_eq!(
            status_description(ReportState::Ready, "https://pr-1.example.com"),
            "Preview ready: https://pr-1.example.com"
        );
        let long = "x\ny".repeat(200);
        let s = status_description(ReportState::Failed, &long);
        assert!(s.len() <= STATUS_DESCRIPTION_MAX && !s.contains('\n'));
        assert!(s.starts_with("Preview failed: x y"));
        assert_eq!(
            status_description(ReportState::Refused, "  "),
            "Preview refused"
        );
    }

    #[test]
    fn markdown_escapes_untrusted_text() {
        let err = RenderError::Refused(vec![refusal(
            "ConfigMap",
            "a`|<img src=x>@octocat",
            RefusalReason::Namespace {
                namespace: "<script>@team [x](y)".into(),
                preview: "p".into(),
            },
        )]);
        let md = err.markdown();
        assert!(
            md.starts_with("**Refused object** — nothing was applied."),
            "{md}"
        );
        // Outside code spans HTML is escaped; inside them GitHub shows it verbatim.
        assert!(!md.contains("<script>"), "{md}");
        assert!(md.contains("&lt;script&gt;"), "{md}");
        assert!(md.contains("@\u{200B}team"), "{md}");
        assert!(md.contains("\\[x\\]\\(y\\)"), "{md}");
        // The name is in a code span fenced with two backticks (it contains one).
        assert!(
            md.contains("``v1 ConfigMap/a`\\|<img src=x>@octocat``"),
            "{md}"
        );
    }

    #[test]
    fn markdown_lists_are_bounded() {
        let many: Vec<Problem> = (0..120)
            .map(|i| Problem {
                file: format!("f{i}.yaml"),
                document: Some(1),
                line: None,
                message: "bad".into(),
            })
            .collect();
        let md = RenderError::Parse(many).markdown();
        assert_eq!(md.matches("\n- `f").count(), LIST_MAX);
        assert!(md.contains("- … and 70 more"));
        assert!(md.starts_with("**120 invalid manifests**"));
    }

    #[test]
    fn code_spans_survive_backticks() {
        assert_eq!(code("a"), "`a`");
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`"), "`` ` ``");
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(code(""), "` `");
    }

    fn entry(kind: &str, name: &str) -> InventoryEntry {
        InventoryEntry {
            api_version: "v1".into(),
            kind: kind.into(),
            name: name.into(),
            namespace: Some("shop-pr-42".into()),
        }
    }

    #[test]
    fn ready_comment() {
        let objects = vec![entry("ConfigMap", "web"), entry("Service", "web")];
        let body = comment_body(&CommentInput {
            preview: "shop-pr-42",
            state: ReportState::Ready,
            url: Some("https://pr-42.preview.example.com"),
            sha: "0123456789abcdef0123456789abcdef01234567",
            namespace: "shop-pr-42",
            detail: "",
            objects: &objects,
            error: None,
        });
        assert!(body.starts_with("### ✅ Preview ready\n"), "{body}");
        assert!(body.contains("| **URL** | https://pr-42.preview.example.com |"));
        assert!(body.contains("`0123456` (`0123456789abcdef0123456789abcdef01234567`)"));
        assert!(body.contains("| **Namespace** | `shop-pr-42` |"));
        assert!(body.contains("<summary>2 objects in the preview namespace</summary>"));
        assert!(body.contains("| `Service` | `web` |"));
        assert!(!body.contains("nothing was applied"));
    }

    #[test]
    fn refused_comment_lists_the_reasons() {
        let err = RenderError::Refused(vec![refusal(
            "ClusterRoleBinding",
            "admin",
            cluster_scoped(),
        )]);
        let body = refusal_comment(
            "shop-pr-42",
            "0123456789abcdef0123456789abcdef01234567",
            "",
            &err,
        );
        assert!(body.contains("### ⛔ Preview refused"));
        assert!(body.contains("**Refused object** — nothing was applied."));
        assert!(
            body.contains("`v1 ClusterRoleBinding/admin`: ClusterRoleBinding is cluster-scoped"),
            "{body}"
        );
        assert!(!body.contains("<details>"));
        assert!(!body.contains("**URL**"));
        assert!(!body.contains("**Namespace**"));
    }

    #[test]
    fn every_state_has_a_heading_and_a_description() {
        for (state, heading, desc) in [
            (
                ReportState::Pending,
                "### ⏳ Preview pending",
                "Preview pending",
            ),
            (
                ReportState::Waiting,
                "### ⏳ Preview waiting for checks",
                "Preview waiting for checks",
            ),
            (
                ReportState::WaitingForApproval,
                "### ✋ Preview waiting for approval",
                "Preview waiting for approval",
            ),
            (
                ReportState::Deploying,
                "### 🚀 Preview deploying",
                "Deploying preview",
            ),
            (ReportState::Ready, "### ✅ Preview ready", "Preview ready"),
            (
                ReportState::Failed,
                "### ❌ Preview failed",
                "Preview failed",
            ),
            (
                ReportState::Refused,
                "### ⛔ Preview refused",
                "Preview refused",
            ),
            (
                ReportState::Expired,
                "### ⌛ Preview expired",
                "Preview expired",
            ),
            (
                ReportState::Deleted,
                "### 🗑️ Preview deleted",
                "Preview deleted",
            ),
        ] {
            let body = comment_body(&CommentInput {
                preview: "p",
                state,
                url: None,
                sha: "",
                namespace: "",
                detail: "waiting for ci/build",
                objects: &[],
                error: None,
            });
            assert!(body.starts_with(&format!("{heading}\n")), "{body}");
            let expect_detail = if state == ReportState::Failed {
                "**Error:** waiting for ci/build"
            } else {
                "\nwaiting for ci/build\n"
            };
            assert!(body.contains(expect_detail), "{body}");
            assert_eq!(status_description(state, ""), desc);
        }
    }

    #[test]
    fn comment_is_bounded_and_escapes_failure_text() {
        let objects: Vec<InventoryEntry> = (0..300)
            .map(|i| entry("ConfigMap", &format!("cm-{i}")))
            .collect();
        let body = comment_body(&CommentInput {
            preview: "p",
            state: ReportState::Failed,
            url: Some("https://evil.example.com/\"><img src=x>"),
            sha: "",
            namespace: "",
            detail: "apply failed: <b>@admins</b>\n| x |",
            objects: &objects,
            error: None,
        });
        assert!(body.len() <= COMMENT_MAX);
        assert_eq!(body.matches("| `ConfigMap` |").count(), LIST_MAX);
        assert!(body.contains("| … | 250 more |"));
        assert!(
            body.contains("**Error:** apply failed: &lt;b&gt;@\u{200B}admins&lt;/b&gt; \\| x \\|"),
            "{body}"
        );
        // Not a plain URL: shown as code, never as a link or HTML.
        assert!(
            body.contains("| **URL** | `https://evil.example.com/\"><img src=x>` |"),
            "{body}"
        );
    }
}
