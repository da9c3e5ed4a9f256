//! Per-commit approval of fork pull requests (`forks: requireApproval`). Pure: no I/O.
//!
//! A fork's author controls its head, so an approval is bound to the head it was given on:
//! - the command `/ok-to-preview` counts only on a line of its own, outside fenced or indented
//!   code, block quotes and HTML comments ([`find_command`]) — quoting someone's approval, or
//!   a template that shows the command, is not an approval;
//! - a comment or the trust label counts only when the forge created it *after* the head was
//!   pushed: after the forge's own record of the push where it has one (GitLab merge request
//!   versions, Gitea timeline), else after the time Pullwarden first observed the head, recorded
//!   in `status.forkApprovals[].headObservedTime` before any approval is read against it
//!   ([`HeadTimes`]). Commit dates never count (whoever makes the commit sets them), nor do
//!   comment edits (the creation time stays);
//! - who approved is checked by the caller (`trustedUsers` by id or login, `trustedTeams`
//!   through the forge), newest attempt first, at most [`MAX_TRUST_LOOKUPS`] accounts per pull
//!   request and sync so that a flood of comments cannot spend the API budget.
//!
//! A head once approved stays approved (the record keeps its SHA): a newer, unapproved head
//! waits while the approved one stays deployed.

use crate::api::{ForkApprovalState, ForkApprovalStatus};
use crate::forge::{Actor, Comment, LabelEvent};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// The comment that approves a fork pull request's current head.
pub const OK_TO_PREVIEW: &str = "/ok-to-preview";
/// At most this many distinct accounts are checked for trust per pull request and sync.
pub const MAX_TRUST_LOOKUPS: usize = 10;
/// At most this many ignored attempts are kept in status.
pub const MAX_IGNORED: usize = 10;

/// Where a comment carries the approval command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// On a line of its own in the comment's prose.
    Given,
    /// Only inside a code block, a block quote or an HTML comment: not an approval.
    OnlyQuoted,
    Absent,
}

/// A fence opener/closer: at most three spaces, then three or more backticks or tildes.
fn fence(line: &str) -> Option<(char, usize)> {
    let indent = line.len() - line.trim_start_matches(' ').len();
    if indent > 3 {
        return None;
    }
    let rest = &line[indent..];
    let ch = rest.chars().next().filter(|c| *c == '`' || *c == '~')?;
    let n = rest.chars().take_while(|c| *c == ch).count();
    (n >= 3).then_some((ch, n))
}

/// Whether `body` gives the approval command, quotes it, or does not mention it.
///
/// Markdown is read conservatively: fenced code (```` ``` ```` / `~~~`, closed by a fence of the
/// same character at least as long, or the end of the comment), indented code (four spaces or
/// a tab), block quotes (`>` after up to three spaces) and HTML comments are not prose.
pub fn find_command(body: &str) -> Command {
    let mut open_fence: Option<(char, usize)> = None;
    let mut in_html_comment = false;
    let mut quoted = false;
    for raw in body.lines() {
        let line = raw.trim_end_matches('\r');
        let mentions = line.contains(OK_TO_PREVIEW);
        if let Some((ch, n)) = open_fence {
            if fence(line).is_some_and(|(c, m)| c == ch && m >= n && line.trim()[m..].is_empty()) {
                open_fence = None;
            }
            quoted |= mentions;
            continue;
        }
        if in_html_comment {
            if line.contains("-->") {
                in_html_comment = false;
            }
            quoted |= mentions;
            continue;
        }
        if let Some(f) = fence(line) {
            open_fence = Some(f);
            quoted |= mentions;
            continue;
        }
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        if line.starts_with('\t') || indent >= 4 || trimmed.starts_with('>') {
            quoted |= mentions;
            continue;
        }
        if let Some(start) = trimmed.find("<!--") {
            quoted |= mentions;
            if !trimmed[start..].contains("-->") {
                in_html_comment = true;
            }
            continue;
        }
        if line.trim() == OK_TO_PREVIEW {
            return Command::Given;
        }
    }
    if quoted {
        Command::OnlyQuoted
    } else {
        Command::Absent
    }
}

/// `t` rounded up to the next whole second. Forges report creation times in whole seconds (or
/// finer); a comment counts only when created strictly after the mark, so rounding the mark up
/// never lets a comment from before the observation through.
pub fn observed_mark(t: Timestamp) -> Timestamp {
    let s = t.as_second();
    let whole = Timestamp::from_second(s).unwrap_or(t);
    if whole == t {
        t
    } else {
        Timestamp::from_second(s + 1).unwrap_or(t)
    }
}

/// When a head came into being, as far as anyone trustworthy can tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeadTimes {
    /// Pullwarden's first observation, once persisted in status (`None` on the sync that sees
    /// the head for the first time: nothing can be after an observation not yet recorded).
    pub observed: Option<Timestamp>,
    /// The forge's own record of the push (same clock as the comment times).
    pub pushed: Option<Timestamp>,
}

impl HeadTimes {
    /// Whether something the forge stamped `at` followed the head. The forge's push record wins
    /// when there is one (one clock for both times); else Pullwarden's observation.
    pub fn after_head(&self, at: Timestamp) -> bool {
        match (self.pushed, self.observed) {
            (Some(pushed), _) => at > pushed,
            (None, Some(observed)) => at > observed,
            (None, None) => false,
        }
    }

    fn describe(&self, head: &str) -> String {
        match (self.pushed, self.observed) {
            (Some(p), _) => format!("before head {} was pushed ({p})", short(head)),
            (None, Some(o)) => format!("before head {} was first observed ({o})", short(head)),
            (None, None) => format!("before head {} was first observed (just now)", short(head)),
        }
    }
}

/// One attempt to approve the head that passed every check but trust.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    pub actor: Actor,
    pub at: Timestamp,
    /// `comment 12 by alice (id 7)` / `label ok-to-preview by alice (id 7)`.
    pub what: String,
}

/// Approval attempts for one head: the ones to check for trust (newest first) and the ones
/// that do not count, with why (newest first).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attempts {
    pub candidates: Vec<Attempt>,
    pub ignored: Vec<String>,
}

/// The trust label as the pull request carries it now.
#[derive(Clone, Copy, Debug)]
pub struct TrustLabel<'a> {
    pub name: &'a str,
    /// The label's add/remove history (oldest first), from the forge.
    pub events: &'a [LabelEvent],
}

/// Sorts the comments and the trust label (when the pull request carries it) into attempts
/// that may approve `head` and attempts that do not count.
pub fn classify(
    head: &str,
    times: &HeadTimes,
    comments: &[Comment],
    label: Option<TrustLabel<'_>>,
) -> Attempts {
    // (time, tie-breaker, outcome): newest first in the end.
    let mut all: Vec<(Timestamp, u64, Result<Attempt, String>)> = Vec::new();
    for c in comments {
        let what = format!("comment {} by {}", c.id, c.actor());
        match find_command(&c.body) {
            Command::Absent => {}
            Command::OnlyQuoted => all.push((
                c.created_at,
                c.id.0,
                Err(format!(
                    "{what}: {OK_TO_PREVIEW} only inside a code block, quote or HTML comment"
                )),
            )),
            Command::Given if !times.after_head(c.created_at) => all.push((
                c.created_at,
                c.id.0,
                Err(format!(
                    "{what}: created {}, {}",
                    c.created_at,
                    times.describe(head)
                )),
            )),
            Command::Given => all.push((
                c.created_at,
                c.id.0,
                Ok(Attempt {
                    actor: c.actor(),
                    at: c.created_at,
                    what,
                }),
            )),
        }
    }
    if let Some(label) = label {
        // The event that put the label where it is now: the newest change of it.
        let last = label
            .events
            .iter()
            .filter(|e| e.label == label.name)
            .max_by_key(|e| e.created_at);
        match last {
            Some(e) if e.added => {
                let what = format!("label {} added by {}", label.name, e.actor);
                let outcome = if times.after_head(e.created_at) {
                    Ok(Attempt {
                        actor: e.actor.clone(),
                        at: e.created_at,
                        what,
                    })
                } else {
                    Err(format!(
                        "{what} at {}, {}: remove it and add it again",
                        e.created_at,
                        times.describe(head)
                    ))
                };
                all.push((e.created_at, u64::MAX, outcome));
            }
            _ => all.push((
                Timestamp::MIN,
                0,
                Err(format!(
                    "label {}: the forge has no record of when it was added; remove it and add it again",
                    label.name
                )),
            )),
        }
    }
    all.sort_by_key(|a| std::cmp::Reverse((a.0, a.1)));
    let mut out = Attempts::default();
    for (_, _, outcome) in all {
        match outcome {
            Ok(a) => out.candidates.push(a),
            Err(why) => out.ignored.push(why),
        }
    }
    out
}

/// What the previous sync recorded about a pull request, and the head its preview deploys.
#[derive(Clone, Copy, Debug, Default)]
pub struct Known<'a> {
    pub previous: Option<&'a ForkApprovalStatus>,
    /// `spec.headSha` of the preview this Repository owns for the pull request: only approved
    /// heads are ever put there, so it counts as approved even if status was lost.
    pub deployed: Option<&'a str>,
}

impl Known<'_> {
    /// The observation times of `head` kept from before (only for the same head).
    pub fn times(&self, head: &str, pushed: Option<Timestamp>) -> HeadTimes {
        HeadTimes {
            observed: self
                .previous
                .filter(|p| p.head_sha == head)
                .map(|p| p.head_observed_time.0),
            pushed,
        }
    }

    /// Whether `head` was approved before (by a recorded approval or by being deployed).
    pub fn approved_before(&self, head: &str) -> bool {
        self.previous
            .and_then(|p| p.approved_sha.as_deref())
            .is_some_and(|a| a == head)
            || self.deployed == Some(head)
    }

    /// The last approved head, if any.
    pub fn last_approved(&self) -> Option<String> {
        self.previous
            .and_then(|p| p.approved_sha.clone())
            .or_else(|| self.deployed.map(str::to_owned))
    }
}

/// The new record for a pull request whose head is `head`: approved by `approval` (the first
/// trusted attempt), approved before, or waiting; `ignored` says why the rest did not count.
pub fn record(
    number: u64,
    head: &str,
    known: &Known<'_>,
    times: &HeadTimes,
    now: Timestamp,
    approval: Option<&Attempt>,
    mut ignored: Vec<String>,
) -> ForkApprovalStatus {
    ignored.truncate(MAX_IGNORED);
    let same_head = known.previous.filter(|p| p.head_sha == head);
    let mut out = ForkApprovalStatus {
        number,
        head_sha: head.to_owned(),
        head_observed_time: same_head
            .map(|p| p.head_observed_time.clone())
            .unwrap_or_else(|| Time(observed_mark(now))),
        head_pushed_time: times.pushed.map(Time),
        state: ForkApprovalState::WaitingForApproval,
        approved_sha: known.last_approved(),
        approved_by: known.previous.and_then(|p| p.approved_by.clone()),
        approved_time: known.previous.and_then(|p| p.approved_time.clone()),
        ignored,
    };
    if let Some(a) = approval {
        out.state = ForkApprovalState::Approved;
        out.approved_sha = Some(head.to_owned());
        out.approved_by = Some(a.what.clone());
        out.approved_time = Some(Time(a.at));
        out.ignored.clear();
    } else if known.approved_before(head) {
        out.state = ForkApprovalState::Approved;
        if known.previous.and_then(|p| p.approved_sha.as_deref()) != Some(head) {
            // Known only from the deployed preview (status was lost).
            out.approved_sha = Some(head.to_owned());
            out.approved_by = Some("deployed by this Repository's preview".into());
            out.approved_time = None;
        }
        out.ignored.clear();
    }
    out
}

/// What a pull request's preview deploys: the head when approved, else the last approved head
/// with the new head waiting; `None` when nothing was ever approved (no preview).
pub fn deploy_target(rec: &ForkApprovalStatus) -> Option<(String, Option<String>)> {
    match rec.state {
        ForkApprovalState::Approved => Some((rec.head_sha.clone(), None)),
        ForkApprovalState::WaitingForApproval => rec
            .approved_sha
            .clone()
            .map(|approved| (approved, Some(rec.head_sha.clone()))),
    }
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(7)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forge::CommentId;

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn comment(id: u64, login: &str, uid: u64, body: &str, at: i64) -> Comment {
        Comment {
            id: CommentId(id),
            author: login.into(),
            author_id: Some(uid),
            body: body.into(),
            created_at: ts(at),
        }
    }

    #[test]
    fn the_command_counts_only_in_prose() {
        use Command::*;
        for (body, want) in [
            ("/ok-to-preview", Given),
            ("looks fine\n  /ok-to-preview  \r\n", Given),
            ("Looks safe.\n/ok-to-preview\n", Given),
            ("please /ok-to-preview this", Absent),
            ("nothing here", Absent),
            ("```\n/ok-to-preview\n```", OnlyQuoted),
            ("```sh\n/ok-to-preview\n", OnlyQuoted), // unclosed: code to the end
            ("~~~~\n/ok-to-preview\n~~~\n/ok-to-preview", OnlyQuoted), // short closer
            ("````\nx\n````\n/ok-to-preview", Given),
            ("> /ok-to-preview", OnlyQuoted),
            ("   > /ok-to-preview", OnlyQuoted),
            (">> nested\n> /ok-to-preview", OnlyQuoted),
            ("    /ok-to-preview", OnlyQuoted),
            ("\t/ok-to-preview", OnlyQuoted),
            ("<!-- /ok-to-preview -->", OnlyQuoted),
            ("<!--\n/ok-to-preview\n-->", OnlyQuoted),
            ("<!--\nhidden\n-->\n/ok-to-preview", Given),
            ("```\ncode\n```\n> quoted\n\n/ok-to-preview", Given),
            ("`/ok-to-preview`", Absent),
        ] {
            assert_eq!(find_command(body), want, "{body:?}");
        }
    }

    #[test]
    fn marks_round_up_to_the_second() {
        let t: Timestamp = "2026-12-02T08:00:00.250Z".parse().unwrap();
        assert_eq!(observed_mark(t).to_string(), "2026-12-02T08:00:01Z");
        assert_eq!(observed_mark(ts(100)), ts(100));
    }

    #[test]
    fn approvals_must_follow_the_head() {
        let observed = HeadTimes {
            observed: Some(ts(100)),
            pushed: None,
        };
        assert!(observed.after_head(ts(101)));
        assert!(!observed.after_head(ts(100)));
        assert!(!observed.after_head(ts(99)));
        // The forge's own push record wins (one clock for push and comment).
        let pushed = HeadTimes {
            observed: Some(ts(100)),
            pushed: Some(ts(90)),
        };
        assert!(pushed.after_head(ts(95)));
        assert!(!pushed.after_head(ts(90)));
        // Not yet persisted and no forge record: nothing counts yet.
        assert!(!HeadTimes::default().after_head(ts(1_000_000)));
    }

    fn label(name: &str, who: &str, added: bool, at: i64) -> LabelEvent {
        LabelEvent {
            label: name.into(),
            actor: Actor {
                login: who.into(),
                id: Some(9),
            },
            added,
            created_at: ts(at),
        }
    }

    #[test]
    fn classification_keeps_only_attempts_after_the_head() {
        let head = "b".repeat(40);
        let times = HeadTimes {
            observed: Some(ts(100)),
            pushed: None,
        };
        let comments = vec![
            comment(1, "maintainer", 7, "/ok-to-preview", 50), // before the push
            comment(2, "mallory", 3, "/ok-to-preview", 110),
            comment(3, "maintainer", 7, "```\n/ok-to-preview\n```", 120),
            comment(4, "maintainer", 7, "> /ok-to-preview", 130),
            comment(5, "maintainer", 7, "LGTM", 140),
            comment(6, "maintainer", 7, "ok\n/ok-to-preview", 150),
        ];
        let a = classify(&head, &times, &comments, None);
        let who: Vec<&str> = a.candidates.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(
            who,
            vec![
                "comment 6 by maintainer (id 7)",
                "comment 2 by mallory (id 3)"
            ]
        );
        assert_eq!(a.ignored.len(), 3, "{:?}", a.ignored);
        assert!(a.ignored[0].starts_with("comment 4 by maintainer (id 7): /ok-to-preview only"));
        assert!(a.ignored[1].starts_with("comment 3 "));
        assert!(
            a.ignored[2].contains("before head bbbbbbb was first observed"),
            "{}",
            a.ignored[2]
        );

        // The label counts when its newest change added it after the head.
        let events = [label("ok-to-preview", "maintainer", true, 120)];
        let l = Some(TrustLabel {
            name: "ok-to-preview",
            events: &events,
        });
        let a = classify(&head, &times, &[], l);
        assert_eq!(
            a.candidates[0].what,
            "label ok-to-preview added by maintainer (id 9)"
        );
        // Added before the push: must be re-applied.
        let events = [label("ok-to-preview", "maintainer", true, 60)];
        let a = classify(
            &head,
            &times,
            &[],
            Some(TrustLabel {
                name: "ok-to-preview",
                events: &events,
            }),
        );
        assert!(a.candidates.is_empty());
        assert!(
            a.ignored[0].contains("remove it and add it again"),
            "{:?}",
            a.ignored
        );
        // Removed and added again after the push: counts.
        let events = [
            label("ok-to-preview", "maintainer", true, 60),
            label("ok-to-preview", "maintainer", false, 101),
            label("other", "mallory", true, 130),
            label("ok-to-preview", "maintainer", true, 102),
        ];
        let a = classify(
            &head,
            &times,
            &[],
            Some(TrustLabel {
                name: "ok-to-preview",
                events: &events,
            }),
        );
        assert_eq!(a.candidates.len(), 1);
        assert_eq!(a.candidates[0].at, ts(102));
        // No record at all: never counts.
        let a = classify(
            &head,
            &times,
            &[],
            Some(TrustLabel {
                name: "ok-to-preview",
                events: &[],
            }),
        );
        assert!(a.candidates.is_empty());
        assert!(a.ignored[0].contains("no record"));
    }

    fn prev(head: &str, approved: Option<&str>, observed: i64) -> ForkApprovalStatus {
        ForkApprovalStatus {
            number: 1,
            head_sha: head.into(),
            head_observed_time: Time(ts(observed)),
            approved_sha: approved.map(str::to_owned),
            approved_by: approved.map(|_| "comment 1 by maintainer".to_owned()),
            ..Default::default()
        }
    }

    #[test]
    fn records_move_only_with_an_approval_of_the_new_head() {
        let (a, b) = ("a".repeat(40), "b".repeat(40));
        // Approved at A, then B is pushed: B is observed now, A stays the deployed target.
        let p = prev(&a, Some(&a), 50);
        let known = Known {
            previous: Some(&p),
            deployed: Some(&a),
        };
        let times = known.times(&b, None);
        assert_eq!(
            times.observed, None,
            "a new head has no persisted observation"
        );
        let r = record(1, &b, &known, &times, ts(200), None, vec!["x".into()]);
        assert_eq!(r.state, ForkApprovalState::WaitingForApproval);
        assert_eq!(r.head_observed_time.0, ts(200));
        assert_eq!(r.approved_sha.as_deref(), Some(a.as_str()));
        assert_eq!(deploy_target(&r), Some((a.clone(), Some(b.clone()))));
        assert_eq!(r.ignored, vec!["x".to_string()]);

        // Next sync: the observation is kept; a fresh approval moves the target to B.
        let known = Known {
            previous: Some(&r),
            deployed: Some(&a),
        };
        let times = known.times(&b, None);
        assert_eq!(times.observed, Some(ts(200)));
        let approval = Attempt {
            actor: Actor::login("maintainer"),
            at: ts(250),
            what: "comment 9 by maintainer".into(),
        };
        let r2 = record(1, &b, &known, &times, ts(300), Some(&approval), vec![]);
        assert_eq!(r2.state, ForkApprovalState::Approved);
        assert_eq!(r2.head_observed_time.0, ts(200));
        assert_eq!(r2.approved_by.as_deref(), Some("comment 9 by maintainer"));
        assert_eq!(deploy_target(&r2), Some((b.clone(), None)));

        // Back to an approved head: approved without a new approval.
        let known = Known {
            previous: Some(&r),
            deployed: Some(&a),
        };
        let r3 = record(1, &a, &known, &known.times(&a, None), ts(400), None, vec![]);
        assert_eq!(r3.state, ForkApprovalState::Approved);
        assert_eq!(deploy_target(&r3), Some((a.clone(), None)));

        // Never approved: no preview.
        let r4 = record(
            1,
            &b,
            &Known::default(),
            &HeadTimes::default(),
            ts(1),
            None,
            vec![],
        );
        assert_eq!(deploy_target(&r4), None);

        // Status lost but the preview deploys A: A is still approved.
        let known = Known {
            previous: None,
            deployed: Some(&a),
        };
        let r5 = record(1, &a, &known, &known.times(&a, None), ts(5), None, vec![]);
        assert_eq!(r5.state, ForkApprovalState::Approved);
        assert!(r5.approved_by.unwrap().contains("deployed"));
    }

    /// The real payloads of the forges' documentation parse into comments whose command, author
    /// id and creation time the decision reads.
    #[test]
    fn real_comment_payloads() {
        use crate::forge::{github, gitlab};
        let gh: Vec<github::CommentJson> = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../test-data/github/rest/issues-list-comments.json"
        )))
        .unwrap();
        let mut c = github::to_comment(&gh[0]);
        assert_eq!(find_command(&c.body), Command::Absent);
        assert!(crate::forge::listed_user(&["id:1".into()], &c.actor()));
        // The same comment, saying the command after the head was observed, is an attempt.
        c.body = "Me too\n/ok-to-preview".into();
        let before = HeadTimes {
            observed: Some(c.created_at - jiff::SignedDuration::from_secs(1)),
            pushed: None,
        };
        let a = classify("abc", &before, std::slice::from_ref(&c), None);
        assert_eq!(a.candidates[0].actor.id, Some(1));
        let after = HeadTimes {
            observed: Some(c.created_at),
            pushed: None,
        };
        assert!(classify("abc", &after, &[c], None).candidates.is_empty());

        let gl: gitlab::NoteJson = serde_json::from_str(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../test-data/gitlab/rest/create-merge-request-note.json"
        )))
        .unwrap();
        let n = gitlab::to_comment(&gl);
        assert_eq!(n.author_id, Some(1));
        assert_eq!(find_command(&n.body), Command::Absent);
    }
}
