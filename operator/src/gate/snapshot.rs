//! [`PrSnapshot`]: everything a PolicyGate needs to know about one pull request at one head SHA,
//! gathered once (by the controller, or read from a file by the offline `gate test`) and then
//! evaluated without I/O.
//!
//! Reviews, commits and checks are the forge layer's own neutral types
//! ([`Review`], [`Commit`], [`CheckResult`]); files carry their added lines (with new-file line
//! numbers, for `secretScan`), parsed from the unified diff the forge returns
//! ([`added_lines_from_patch`]). Team membership is resolved up front into a map team → logins:
//! a rule naming a team that is not in the map cannot decide and reports an error.
//!
//! Added lines may hold credentials, so [`AddedLine`]'s `Debug` prints the length of the text,
//! never the text: logging a snapshot with `?` cannot leak a secret.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::forge::{ChangedFile, CheckResult, Commit, FileStatus, PullRequest, Review};

/// One pull request at one head SHA.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PrSnapshot {
    /// GitHub/Gitea number, GitLab merge-request `iid`.
    pub number: u64,
    pub title: String,
    /// The description, Markdown as written.
    #[serde(default)]
    pub body: String,
    /// Login of the author.
    pub author: String,
    /// Head branch.
    pub source_branch: String,
    /// Base branch.
    pub target_branch: String,
    #[serde(default)]
    pub labels: Vec<String>,
    pub head_sha: String,
    #[serde(default)]
    pub draft: bool,
    /// The head lives in another repository.
    #[serde(default)]
    pub fork: bool,
    /// When the head SHA was pushed, by the forge's clock. Decides `invalidateOnPush` for reviews
    /// that carry no commit SHA (GitLab approvals).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_pushed_at: Option<Timestamp>,
    #[serde(default)]
    pub files: Vec<SnapshotFile>,
    /// The forge stopped listing files before the end (GitHub lists at most 3000): rules that need
    /// every file report an error unless what was listed already decides.
    #[serde(default)]
    pub files_truncated: bool,
    /// Reviews in the order the forge returned them (oldest first).
    #[serde(default)]
    pub reviews: Vec<Review>,
    #[serde(default)]
    pub commits: Vec<Commit>,
    /// The forge stopped listing commits before the end (GitHub lists at most 250).
    #[serde(default)]
    pub commits_truncated: bool,
    /// Commit statuses and check runs of the head SHA.
    #[serde(default)]
    pub checks: Vec<CheckResult>,
    /// The pull request's PreviewEnvironment, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preview: Option<PreviewState>,
    /// Members (logins) of every team the gate's rules name, resolved by the caller. Keys are
    /// the team names exactly as the rules write them.
    #[serde(default)]
    pub teams: BTreeMap<String, BTreeSet<String>>,
}

/// One changed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotFile {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_path: Option<String>,
    pub status: FileStatus,
    #[serde(default)]
    pub additions: u64,
    #[serde(default)]
    pub deletions: u64,
    /// The added lines, or `None` when the forge sent no diff for the file (too large, binary):
    /// `secretScan` then cannot vouch for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub added_lines: Option<Vec<AddedLine>>,
    /// The forge withheld this file's diff (too large): `additions`/`deletions` are unknown,
    /// so rules counting lines or scanning them cannot decide.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub diff_withheld: bool,
}

/// One added line and its number in the new version of the file (1-based).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddedLine {
    pub line: u32,
    pub text: String,
}

impl fmt::Debug for AddedLine {
    // Added lines are what secretScan looks at: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AddedLine {{ line: {}, text: <{} bytes> }}",
            self.line,
            self.text.len()
        )
    }
}

/// The pull request's preview, as the Preview controller last saw it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PreviewState {
    /// The PreviewEnvironment's `Ready` condition is true.
    pub ready: bool,
    /// Its HealthChecks: `Some(true)` all OK, `Some(false)` one is not, `None` it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy: Option<bool>,
    /// Short reason when not ready or not healthy (the condition's reason, a check's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl PrSnapshot {
    /// The metadata of `pr` (no files, reviews, commits or checks yet). The forge type carries
    /// no description, so the caller passes it.
    pub fn from_pull_request(pr: &PullRequest, body: impl Into<String>) -> Self {
        PrSnapshot {
            number: pr.number,
            title: pr.title.clone(),
            body: body.into(),
            author: pr.author.clone(),
            source_branch: pr.head_ref.clone(),
            target_branch: pr.base_ref.clone(),
            labels: pr.labels.clone(),
            head_sha: pr.head_sha.clone(),
            draft: pr.draft,
            fork: pr.fork,
            ..PrSnapshot::default()
        }
    }

    /// Members of `team`, or `None` when the caller did not resolve it.
    pub fn team(&self, team: &str) -> Option<&BTreeSet<String>> {
        self.teams.get(team)
    }

    /// Total added and deleted lines over all listed files.
    pub fn modified_lines(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.additions.saturating_add(f.deletions))
            .fold(0, u64::saturating_add)
    }
}

impl SnapshotFile {
    /// A changed file from the forge's listing, with the added lines of its diff (`patch`:
    /// GitHub's `patch`, GitLab's `diff`, a Gitea `.diff` section; `None` when the forge sent
    /// none).
    pub fn from_changed_file(file: &ChangedFile, patch: Option<&str>) -> Self {
        SnapshotFile {
            path: file.path.clone(),
            previous_path: file.previous_path.clone(),
            status: file.status,
            additions: file.additions,
            deletions: file.deletions,
            added_lines: patch.map(added_lines_from_patch),
            diff_withheld: file.diff_withheld,
        }
    }

    /// The paths this change touches: the path and, for a rename, the old path too (moving a
    /// file out of `src/` changes `src/`).
    pub fn touched_paths(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.path.as_str()).chain(
            self.previous_path
                .as_deref()
                .filter(|p| *p != self.path.as_str()),
        )
    }
}

/// The added lines of a unified diff, numbered as in the new file. File headers (`--- a/x`,
/// `+++ b/x`) before the first hunk are skipped; so are `\ No newline at end of file` markers.
/// Text outside any hunk is ignored rather than guessed at.
pub fn added_lines_from_patch(patch: &str) -> Vec<AddedLine> {
    let mut out = Vec::new();
    let mut next: Option<u32> = None;
    for raw in patch.split('\n') {
        let line = raw.strip_suffix('\r').unwrap_or(raw);
        if let Some(rest) = line.strip_prefix("@@ ") {
            next = hunk_new_start(rest);
            continue;
        }
        let Some(n) = next else { continue };
        match line.as_bytes().first() {
            Some(b'+') => {
                out.push(AddedLine {
                    line: n,
                    text: line[1..].to_string(),
                });
                next = Some(n.saturating_add(1));
            }
            Some(b' ') => next = Some(n.saturating_add(1)),
            // Removed lines and "\ No newline at end of file" do not move the new-file counter.
            Some(b'-') | Some(b'\\') => {}
            // An empty context line (some tools strip the leading space).
            None => next = Some(n.saturating_add(1)),
            _ => {}
        }
    }
    out
}

/// `-a,b +c,d @@ …` → `c`.
fn hunk_new_start(rest: &str) -> Option<u32> {
    let plus = rest.split_whitespace().find(|t| t.starts_with('+'))?;
    plus[1..].split(',').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patches_number_added_lines_as_in_the_new_file() {
        let patch = "@@ -1,3 +1,4 @@\n line one\n-old two\n+new two\n+new three\n line four\n@@ -10,2 +11,3 @@ fn x() {\n ctx\n+added at 12\n\\ No newline at end of file";
        let lines = added_lines_from_patch(patch);
        let got: Vec<(u32, &str)> = lines.iter().map(|l| (l.line, l.text.as_str())).collect();
        assert_eq!(
            got,
            vec![(2, "new two"), (3, "new three"), (12, "added at 12")]
        );
        // File headers before the first hunk are not added lines; `+++` inside a hunk is.
        let with_headers = "--- a/x\n+++ b/x\n@@ -0,0 +1,2 @@\n+++counter;\n+b\r\n";
        let got: Vec<(u32, String)> = added_lines_from_patch(with_headers)
            .into_iter()
            .map(|l| (l.line, l.text))
            .collect();
        assert_eq!(got, vec![(1, "++counter;".into()), (2, "b".into())]);
        assert!(added_lines_from_patch("not a diff\n+no hunk yet").is_empty());
        assert_eq!(hunk_new_start("-1 +7 @@"), Some(7));
    }

    #[test]
    fn debug_never_prints_added_text() {
        let l = AddedLine {
            line: 3,
            text: "password = \"hunter2hunter2\"".into(),
        };
        let shown = format!("{l:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("line: 3"));
    }

    #[test]
    fn snapshots_round_trip_through_json() {
        let s = PrSnapshot {
            number: 7,
            title: "t".into(),
            author: "a".into(),
            head_sha: "abc".into(),
            files: vec![SnapshotFile {
                diff_withheld: false,
                path: "docs/new.md".into(),
                previous_path: Some("docs/old.md".into()),
                status: FileStatus::Renamed,
                additions: 1,
                deletions: 0,
                added_lines: Some(vec![AddedLine {
                    line: 1,
                    text: "x".into(),
                }]),
            }],
            teams: BTreeMap::from([("org/a".to_string(), BTreeSet::from(["al".to_string()]))]),
            ..PrSnapshot::default()
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<PrSnapshot>(&json).unwrap(), s);
        // A hand-written snapshot needs only the essentials.
        let minimal: PrSnapshot = serde_json::from_str(
            r#"{"number":1,"title":"x","author":"a","sourceBranch":"f","targetBranch":"main","headSha":"h"}"#,
        )
        .unwrap();
        assert!(minimal.files.is_empty() && minimal.preview.is_none());
        assert_eq!(
            s.files[0].touched_paths().collect::<Vec<_>>(),
            vec!["docs/new.md", "docs/old.md"]
        );
    }
}
