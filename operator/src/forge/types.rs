//! Provider-neutral data exchanged with forges.
//!
//! Every provider maps its own JSON into these types (see the `parse_*` functions of each
//! provider module), so controllers, gates and plugins see one vocabulary. The small pure helpers
//! here encode forge limits that callers must not have to remember (GitHub's 140-character status
//! description, check-run output sizes) and the sticky-comment marker rules.

use std::fmt;
use std::str::FromStr;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::error::ForgeError;

/// Which forge API a Repository talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForgeKind {
    Github,
    Gitlab,
    Gitea,
    /// Generic git: branches only, through `git ls-remote`.
    Git,
}

impl ForgeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ForgeKind::Github => "github",
            ForgeKind::Gitlab => "gitlab",
            ForgeKind::Gitea => "gitea",
            ForgeKind::Git => "git",
        }
    }
}

impl fmt::Display for ForgeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ForgeKind {
    type Err = ForgeError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "github" => Ok(ForgeKind::Github),
            "gitlab" => Ok(ForgeKind::Gitlab),
            "gitea" => Ok(ForgeKind::Gitea),
            "git" => Ok(ForgeKind::Git),
            other => Err(ForgeError::invalid_config(format!(
                "unknown provider {other:?} (expected github, gitlab, gitea or git)"
            ))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PullRequestState {
    Open,
    Closed,
    Merged,
}

/// A pull request (GitHub, Gitea) or merge request (GitLab; `number` is the MR `iid`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PullRequest {
    pub number: u64,
    pub title: String,
    /// The description as written (Markdown; empty when there is none). Not kept in Repository
    /// status; gates read it (`linkedIssue`, CEL `pr.body`).
    #[serde(default)]
    pub body: String,
    pub author: String,
    pub head_sha: String,
    pub head_ref: String,
    pub base_ref: String,
    pub labels: Vec<String>,
    pub draft: bool,
    /// The head lives in another repository (or its repository was deleted).
    pub fork: bool,
    pub url: String,
    pub updated_at: Timestamp,
    pub state: PullRequestState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branch {
    pub name: String,
    pub sha: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileStatus {
    Added,
    Modified,
    Removed,
    Renamed,
    /// Copied, type changes, unchanged entries: counted, never guessed at.
    Other,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangedFile {
    pub path: String,
    pub previous_path: Option<String>,
    pub additions: u64,
    pub deletions: u64,
    pub status: FileStatus,
    /// The file's unified diff hunks as the forge sent them (GitHub `patch`, GitLab `diff`);
    /// `None` when it sent none (binary, too large, or a forge without per-file diffs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// The forge has a diff but did not send it (GitLab `too_large`/`collapsed`): the added
    /// lines and the line counts are unknown, not zero.
    #[serde(default)]
    pub diff_withheld: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ReviewState {
    Approved,
    ChangesRequested,
    Commented,
    Dismissed,
    Pending,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Review {
    pub user: String,
    pub state: ReviewState,
    /// The head the review was given on (GitHub, Gitea). GitLab approvals carry no SHA.
    pub commit_sha: Option<String>,
    pub submitted_at: Option<Timestamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    pub sha: String,
    /// Forge login when the commit is linked to an account, else the git author name.
    pub author: String,
    pub message: String,
    /// The forge's own signature verification verdict.
    pub verified: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CommentId(pub u64);

impl fmt::Display for CommentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Comment {
    pub id: CommentId,
    pub author: String,
    /// The author's stable numeric account id (GitHub `user.id`, GitLab `author.id`, Gitea
    /// `user.id`). Logins can be renamed and then registered by someone else; ids cannot.
    pub author_id: Option<u64>,
    pub body: String,
    /// Set by the forge when the comment was posted; edits do not move it.
    pub created_at: Timestamp,
}

impl Comment {
    /// Who wrote it.
    pub fn actor(&self) -> Actor {
        Actor {
            login: self.author.clone(),
            id: self.author_id,
        }
    }
}

/// A forge account as an event names it: its login and, where the forge has one, its stable
/// numeric id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Actor {
    pub login: String,
    pub id: Option<u64>,
}

impl Actor {
    pub fn login(login: impl Into<String>) -> Self {
        Actor {
            login: login.into(),
            id: None,
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.id {
            Some(id) => write!(f, "{} (id {id})", self.login),
            None => f.write_str(&self.login),
        }
    }
}

/// Whether `actor` is named in a `trustedUsers` list. An entry `id:<n>` matches the account
/// with that numeric id (stable across renames); any other entry matches the login,
/// case-insensitively, which is weaker: a renamed login can be registered by someone else.
pub fn listed_user(entries: &[String], actor: &Actor) -> bool {
    entries
        .iter()
        .any(|entry| match entry.trim().strip_prefix("id:") {
            Some(id) => id.trim().parse::<u64>().is_ok_and(|n| actor.id == Some(n)),
            None => !actor.login.is_empty() && entry.trim().eq_ignore_ascii_case(&actor.login),
        })
}

/// A label added to or removed from a pull request, from the forge's own event log (GitHub issue
/// events, GitLab resource label events, Gitea timeline). `created_at` is the forge's time of
/// the change, so "applied after the head was pushed" can be decided without trusting anyone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LabelEvent {
    pub label: String,
    pub actor: Actor,
    /// `true` for added, `false` for removed.
    pub added: bool,
    pub created_at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckState {
    Pending,
    Success,
    Failure,
    Error,
    Neutral,
    Skipped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckSource {
    /// A commit status (all forges).
    Status,
    /// A GitHub check run.
    CheckRun,
}

/// The latest result of one check context on one commit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// Status `context` or check-run `name`.
    pub name: String,
    pub state: CheckState,
    pub source: CheckSource,
    pub url: Option<String>,
    pub updated_at: Option<Timestamp>,
    /// The status description or the check run's output title, as written. Lets a writer see
    /// that its own latest status already says what it would write (no duplicate after a
    /// restart).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StatusState {
    Pending,
    Success,
    Failure,
    Error,
}

/// GitHub's limit on a commit status description, in characters.
pub const STATUS_DESCRIPTION_MAX_CHARS: usize = 140;

/// A commit status to write. Build it with [`CommitStatus::new`] so the description fits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommitStatus {
    pub context: String,
    pub state: StatusState,
    pub description: String,
    pub target_url: Option<String>,
}

impl CommitStatus {
    pub fn new(
        context: impl Into<String>,
        state: StatusState,
        description: &str,
        target_url: Option<String>,
    ) -> Self {
        CommitStatus {
            context: context.into(),
            state,
            description: truncate_chars(description, STATUS_DESCRIPTION_MAX_CHARS),
            target_url,
        }
    }
}

/// Truncate to at most `max` characters (never splitting a UTF-8 sequence), marking the cut
/// with an ellipsis so readers know text is missing.
pub fn truncate_chars(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = s.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckRunStatus {
    Queued,
    InProgress,
    Completed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CheckConclusion {
    Success,
    Failure,
    Neutral,
    Cancelled,
    Skipped,
    TimedOut,
    ActionRequired,
}

/// GitHub caps check-run `output.summary` and `output.text` at 65535 characters.
pub const CHECK_RUN_TEXT_MAX_CHARS: usize = 65_535;

/// A check run to create or update (GitHub App credentials only).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckRunOutput {
    pub name: String,
    pub head_sha: String,
    pub status: CheckRunStatus,
    /// Required when `status` is `Completed`, ignored otherwise.
    pub conclusion: Option<CheckConclusion>,
    pub title: String,
    pub summary: String,
    pub text: Option<String>,
    pub details_url: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CheckRunId(pub u64);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentRequest {
    /// Branch name (GitLab needs it next to the SHA); GitHub deployments are pinned to `sha`.
    pub git_ref: String,
    pub sha: String,
    pub environment: String,
    pub description: String,
    pub transient: bool,
    pub production: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeploymentId(pub u64);

impl fmt::Display for DeploymentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DeploymentState {
    Pending,
    InProgress,
    Success,
    Failure,
    Error,
    Inactive,
}

#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploymentStatusUpdate {
    pub environment_url: Option<String>,
    pub log_url: Option<String>,
    pub description: Option<String>,
}

/// The last rate-limit state a forge reported for one credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub remaining: u64,
    pub limit: u64,
    pub reset: Timestamp,
}

/// Whether `marker` is usable as a sticky-comment marker: a single HTML comment, invisible in
/// rendered Markdown, on one line.
pub fn validate_marker(marker: &str) -> Result<(), ForgeError> {
    let ok = marker.starts_with("<!--")
        && marker.ends_with("-->")
        && marker.len() > 7
        && !marker.contains('\n')
        && !marker[4..marker.len() - 3].contains("--");
    if ok {
        Ok(())
    } else {
        Err(ForgeError::invalid_config(format!(
            "sticky comment marker {marker:?} must be a one-line HTML comment like \
             <!-- pullwarden:preview -->"
        )))
    }
}

/// The sticky comment is shared: each writer (the preview, each gate) owns one section of it,
/// delimited by these hidden lines, and replaces only its own.
fn section_open(id: &str) -> String {
    format!("<!-- pullwarden:section {id} -->")
}

fn section_close(id: &str) -> String {
    format!("<!-- pullwarden:end {id} -->")
}

/// Whether `id` can name a sticky-comment section (`preview`, `gate/<name>`).
pub fn validate_section(id: &str) -> Result<(), ForgeError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && !id.contains("--")
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(ForgeError::invalid_config(format!(
            "sticky comment section {id:?} must be lower-case letters, digits and /_.-"
        )))
    }
}

/// The sections of a sticky comment body, in order. Text outside any section (a comment
/// written before sections existed) is not kept: its writer rewrites its section at its next
/// state change.
fn sections(body: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = body;
    while let Some(start) = rest.find("<!-- pullwarden:section ") {
        let after = &rest[start + "<!-- pullwarden:section ".len()..];
        let Some(end) = after.find(" -->") else { break };
        let id = after[..end].to_string();
        let content_start = &after[end + " -->".len()..];
        let close = section_close(&id);
        let Some(close_at) = content_start.find(&close) else {
            break;
        };
        let text = content_start[..close_at].trim_matches('\n').to_string();
        out.push((id, text));
        rest = &content_start[close_at + close.len()..];
    }
    out
}

/// The sticky comment body with section `id` set to `text` (removed when `text` is empty),
/// every other section as it was in `existing`, in their order; a new section goes last.
pub fn splice_section(marker: &str, existing: Option<&str>, id: &str, text: &str) -> String {
    let mut parts = existing.map(sections).unwrap_or_default();
    let text = text.trim_matches('\n');
    match parts.iter_mut().find(|(s, _)| s == id) {
        Some(part) => part.1 = text.to_string(),
        None => parts.push((id.to_string(), text.to_string())),
    }
    let mut out = marker.to_string();
    for (sid, stext) in parts.iter().filter(|(_, t)| !t.is_empty()) {
        out.push_str(&format!(
            "\n{}\n{stext}\n{}",
            section_open(sid),
            section_close(sid)
        ));
    }
    out.push('\n');
    out
}

/// Find the sticky comment among a PR's comments: ours (by `is_ours`) and containing the marker.
/// When several exist (a race before this code, or a copy), the oldest wins so we keep updating
/// the same one.
pub fn find_sticky<'a>(
    comments: &'a [Comment],
    marker: &str,
    is_ours: impl Fn(&Comment) -> bool,
) -> Option<&'a Comment> {
    comments
        .iter()
        .filter(|c| c.body.contains(marker) && is_ours(c))
        .min_by_key(|c| (c.created_at, c.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_truncation_is_char_safe() {
        let short = CommitStatus::new("ctx", StatusState::Success, "all good", None);
        assert_eq!(short.description, "all good");
        let exact: String = "a".repeat(140);
        assert_eq!(truncate_chars(&exact, 140), exact);
        let long = "é".repeat(200);
        let t = CommitStatus::new("ctx", StatusState::Failure, &long, None).description;
        assert_eq!(t.chars().count(), 140);
        assert!(t.ends_with('…'));
        assert!(t.starts_with("éé"));
        // Multi-byte characters at the cut never split.
        let mixed = format!("{}🚀🚀🚀", "x".repeat(138));
        let t = truncate_chars(&mixed, 140);
        assert_eq!(t.chars().count(), 140);
        assert_eq!(t, format!("{}🚀…", "x".repeat(138)));
        assert_eq!(truncate_chars("abc", 0), "");
    }

    #[test]
    fn forge_kind_round_trip() {
        for k in [
            ForgeKind::Github,
            ForgeKind::Gitlab,
            ForgeKind::Gitea,
            ForgeKind::Git,
        ] {
            assert_eq!(k.to_string().parse::<ForgeKind>().unwrap(), k);
        }
        assert_eq!("GitHub".parse::<ForgeKind>().unwrap(), ForgeKind::Github);
        assert_eq!(
            "bitbucket".parse::<ForgeKind>().unwrap_err().category(),
            "InvalidConfig"
        );
    }

    fn comment(id: u64, author: &str, body: &str, at: i64) -> Comment {
        Comment {
            id: CommentId(id),
            author: author.into(),
            author_id: None,
            body: body.into(),
            created_at: Timestamp::from_second(at).unwrap(),
        }
    }

    #[test]
    fn sticky_marker_detection() {
        let m = "<!-- pullwarden:preview -->";
        validate_marker(m).unwrap();
        for bad in ["pullwarden", "<!-- a -- b -->", "<!--\n-->", "<!---->"] {
            assert!(validate_marker(bad).is_err(), "{bad}");
        }
        let comments = vec![
            comment(1, "alice", "LGTM", 10),
            comment(2, "mallory", &format!("{m}\nfake"), 20),
            comment(5, "bot", &format!("{m}\nsecond copy"), 40),
            comment(3, "bot", &format!("{m}\nPreview ready"), 30),
            comment(4, "bot", "<!-- pullwarden:gate -->\nother sticky", 35),
        ];
        let found = find_sticky(&comments, m, |c| c.author == "bot").unwrap();
        assert_eq!(found.id, CommentId(3));
        assert!(find_sticky(&comments, "<!-- pullwarden:none -->", |_| true).is_none());
        // Somebody else's comment carrying our marker is never taken over.
        assert!(find_sticky(&comments[..2], m, |c| c.author == "bot").is_none());
    }

    #[test]
    fn sticky_sections_are_replaced_in_place_and_others_kept() {
        let m = "<!-- pullwarden:preview -->";
        let one = splice_section(m, None, "preview", "Preview ready");
        assert!(one.starts_with(m));
        let two = splice_section(m, Some(&one), "gate/policy", "| rule | ok |\n| a | b |");
        let three = splice_section(m, Some(&two), "preview", "Preview deploying");
        assert_eq!(
            sections(&three),
            vec![
                ("preview".to_string(), "Preview deploying".to_string()),
                (
                    "gate/policy".to_string(),
                    "| rule | ok |\n| a | b |".to_string()
                ),
            ]
        );
        // Idempotent: the same write gives the same body (no edit on the forge).
        assert_eq!(
            splice_section(m, Some(&three), "preview", "Preview deploying"),
            three
        );
        // An empty text removes the section.
        let gone = splice_section(m, Some(&three), "gate/policy", "");
        assert_eq!(sections(&gone).len(), 1);
        // Text from before sections, or forged lookalikes inside a section, never break parsing.
        let legacy = format!("{m}\nPreview ready (old format)");
        assert_eq!(
            splice_section(m, Some(&legacy), "gate/g", "x"),
            format!("{m}\n<!-- pullwarden:section gate/g -->\nx\n<!-- pullwarden:end gate/g -->\n")
        );
        let unterminated = format!("{m}\n<!-- pullwarden:section preview -->\nhalf");
        assert_eq!(sections(&unterminated), vec![]);
        for bad in ["", "Gate", "a--b", "a b", "x>"] {
            assert!(validate_section(bad).is_err(), "{bad}");
        }
        validate_section("gate/no_secrets-2").unwrap();
    }

    #[test]
    fn trusted_users_match_ids_or_logins() {
        let alice = Actor {
            login: "Alice".into(),
            id: Some(42),
        };
        assert!(listed_user(&["alice".into()], &alice));
        assert!(listed_user(&["id:42".into()], &alice));
        assert!(listed_user(&[" id: 42 ".into()], &alice));
        assert!(!listed_user(&["id:43".into()], &alice));
        // An id entry never matches by login, and a login entry never by id.
        let renamed = Actor {
            login: "alice".into(),
            id: Some(7),
        };
        assert!(!listed_user(&["id:42".into()], &renamed));
        assert!(!listed_user(&["42".into()], &alice));
        // Without an id from the forge, only logins can match.
        assert!(!listed_user(&["id:42".into()], &Actor::login("alice")));
        assert!(!listed_user(&["id:".into(), "".into()], &Actor::login("")));
        assert_eq!(alice.to_string(), "Alice (id 42)");
    }
}
