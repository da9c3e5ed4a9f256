//! Table tests of every rule kind, the combination semantics and the summary, and one
//! evaluation per forge built from the real payloads in `test-data/` through the operator's own
//! forge JSON types.

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;

use super::evaluate::cel_pr;
use super::secrets::tests::fake_secrets;
use super::*;
use crate::api::PolicyGateSpec;
use crate::forge::{
    ChangedFile, CheckResult, CheckSource, CheckState, Commit, FileStatus, Review, ReviewState,
};

const HEAD: &str = "headheadheadheadheadheadheadheadheadhead";
const OLD: &str = "oldoldoldoldoldoldoldoldoldoldoldoldoldo";

fn gate(rules: &str, expression: Option<&str>) -> PolicyGateSpec {
    let mut yaml = format!("repositoryRef: {{name: web}}\nrules:\n{rules}");
    if let Some(e) = expression {
        yaml.push_str(&format!("expression: \"{e}\"\n"));
    }
    serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

/// One rule named `r` with this kind (YAML flow mapping), e.g. `approvals: {count: 2}`.
fn one(kind: &str) -> PolicyGateSpec {
    gate(&format!("- name: r\n  {kind}\n"), None)
}

fn at(s: i64) -> Option<Timestamp> {
    Some(Timestamp::from_second(1_700_000_000 + s).unwrap())
}

fn review(user: &str, state: ReviewState, sha: Option<&str>, t: i64) -> Review {
    Review {
        user: user.into(),
        state,
        commit_sha: sha.map(str::to_string),
        submitted_at: at(t),
    }
}

fn file(path: &str, status: FileStatus, additions: u64, deletions: u64) -> SnapshotFile {
    SnapshotFile {
        diff_withheld: false,
        path: path.into(),
        previous_path: None,
        status,
        additions,
        deletions,
        added_lines: Some(
            (1..=additions)
                .map(|i| AddedLine {
                    line: u32::try_from(i).unwrap(),
                    text: format!("let x{i} = {i};"),
                })
                .collect(),
        ),
    }
}

fn check(name: &str, state: CheckState, t: i64) -> CheckResult {
    CheckResult {
        description: None,
        name: name.into(),
        state,
        source: CheckSource::Status,
        url: None,
        updated_at: at(t),
    }
}

fn commit(sha: &str, verified: bool) -> Commit {
    Commit {
        sha: sha.into(),
        author: "dev".into(),
        message: "change".into(),
        verified,
    }
}

/// A typical PR: alice opens `feature/login` → `main`, two files, one verified commit.
fn pr() -> PrSnapshot {
    PrSnapshot {
        number: 12,
        title: "feat: login page".into(),
        body: "Implements the login page.\n\nFixes #34".into(),
        author: "alice".into(),
        source_branch: "feature/login".into(),
        target_branch: "main".into(),
        labels: vec!["ready".into()],
        head_sha: HEAD.into(),
        head_pushed_at: at(100),
        files: vec![
            file("src/login.rs", FileStatus::Added, 40, 0),
            file("docs/login.md", FileStatus::Modified, 5, 2),
        ],
        commits: vec![commit(HEAD, true)],
        checks: vec![check("ci", CheckState::Success, 10)],
        teams: BTreeMap::from([(
            "org/security".to_string(),
            BTreeSet::from(["Sam".to_string(), "sue".to_string()]),
        )]),
        ..PrSnapshot::default()
    }
}

fn verdict_of(kind: &str, pr: &PrSnapshot) -> RuleVerdict {
    evaluate(&one(kind), pr).rules.remove(0)
}

/// (what, rule kind, change to the base PR, expected outcome, text the reason contains)
type Case = (
    &'static str,
    &'static str,
    fn(&mut PrSnapshot),
    Outcome,
    &'static str,
);

fn run_table(cases: &[Case]) {
    for (what, kind, change, outcome, reason) in cases {
        let mut p = pr();
        change(&mut p);
        let v = verdict_of(kind, &p);
        assert_eq!(v.outcome, *outcome, "{what}: {kind}: {}", v.reason);
        assert!(
            v.reason.contains(reason),
            "{what}: reason {:?} lacks {reason:?}",
            v.reason
        );
    }
}

#[test]
fn approvals_table() {
    use ReviewState::*;
    run_table(&[
        (
            "no reviews",
            "approvals: {count: 1}",
            |_| {},
            Outcome::Fail,
            "approvals 0/1",
        ),
        (
            "one approval on the head",
            "approvals: {count: 1}",
            |p| p.reviews = vec![review("bob", Approved, Some(HEAD), 1)],
            Outcome::Pass,
            "approvals 1/1 (bob)",
        ),
        (
            "invalidateOnPush: an approval on an older commit does not count",
            "approvals: {count: 2}",
            |p| {
                p.reviews = vec![
                    review("alice2", Approved, Some(HEAD), 1),
                    review("bob", Approved, Some(OLD), 2),
                ]
            },
            Outcome::Fail,
            "approvals 1/2 (alice2; bob's approval is on an older commit)",
        ),
        (
            "without invalidateOnPush it counts",
            "approvals: {count: 2, invalidateOnPush: false}",
            |p| {
                p.reviews = vec![
                    review("carol", Approved, Some(HEAD), 1),
                    review("bob", Approved, Some(OLD), 2),
                ]
            },
            Outcome::Pass,
            "approvals 2/2",
        ),
        (
            "the head SHA compares case-insensitively",
            "approvals: {count: 1}",
            |p| p.reviews = vec![review("bob", Approved, Some(&HEAD.to_uppercase()), 1)],
            Outcome::Pass,
            "1/1",
        ),
        (
            "a later change request replaces an approval",
            "approvals: {count: 1}",
            |p| {
                p.reviews = vec![
                    review("bob", Approved, Some(HEAD), 1),
                    review("bob", ChangesRequested, Some(HEAD), 2),
                ]
            },
            Outcome::Fail,
            "approvals 0/1",
        ),
        (
            "a later dismissal replaces an approval",
            "approvals: {count: 1}",
            |p| {
                p.reviews = vec![
                    review("bob", Approved, Some(HEAD), 1),
                    review("bob", Dismissed, Some(HEAD), 2),
                ]
            },
            Outcome::Fail,
            "0/1",
        ),
        (
            "a later comment does not withdraw an approval",
            "approvals: {count: 1}",
            |p| {
                p.reviews = vec![
                    review("bob", Approved, Some(HEAD), 1),
                    review("bob", Commented, Some(HEAD), 2),
                ]
            },
            Outcome::Pass,
            "1/1",
        ),
        (
            "the latest review per user wins even if listed out of order",
            "approvals: {count: 1}",
            |p| {
                p.reviews = vec![
                    review("Bob", Approved, Some(HEAD), 5),
                    review("bob", ChangesRequested, Some(HEAD), 2),
                ]
            },
            Outcome::Pass,
            "1/1",
        ),
        (
            "the same user twice counts once",
            "approvals: {count: 2}",
            |p| {
                p.reviews = vec![
                    review("bob", Approved, Some(HEAD), 1),
                    review("BOB", Approved, Some(HEAD), 2),
                ]
            },
            Outcome::Fail,
            "1/2",
        ),
        (
            "the author's own approval does not count",
            "approvals: {count: 1}",
            |p| p.reviews = vec![review("Alice", Approved, Some(HEAD), 1)],
            Outcome::Fail,
            "Alice is the author",
        ),
        (
            "unless allowAuthor",
            "approvals: {count: 1, allowAuthor: true}",
            |p| p.reviews = vec![review("alice", Approved, Some(HEAD), 1)],
            Outcome::Pass,
            "1/1 (alice)",
        ),
        (
            "users restrict who counts",
            "approvals: {count: 1, users: [carol]}",
            |p| p.reviews = vec![review("bob", Approved, Some(HEAD), 1)],
            Outcome::Fail,
            "bob is not an allowed approver",
        ),
        (
            "team members count",
            "approvals: {count: 1, teams: [org/security]}",
            |p| p.reviews = vec![review("sam", Approved, Some(HEAD), 1)],
            Outcome::Pass,
            "1/1 (sam)",
        ),
        (
            "non-members do not",
            "approvals: {count: 1, teams: [org/security]}",
            |p| p.reviews = vec![review("bob", Approved, Some(HEAD), 1)],
            Outcome::Fail,
            "bob is not an allowed approver",
        ),
        (
            "users or teams",
            "approvals: {count: 2, users: [bob], teams: [org/security]}",
            |p| {
                p.reviews = vec![
                    review("bob", Approved, Some(HEAD), 1),
                    review("sue", Approved, Some(HEAD), 2),
                ]
            },
            Outcome::Pass,
            "2/2 (bob, sue)",
        ),
        (
            "an unresolved team is an error, not a fail",
            "approvals: {count: 1, teams: [org/unknown]}",
            |p| p.reviews = vec![review("bob", Approved, Some(HEAD), 1)],
            Outcome::Error,
            "membership of team org/unknown is not known",
        ),
        (
            "GitLab: no SHA, approved after the push counts",
            "approvals: {count: 1}",
            |p| p.reviews = vec![review("bob", Approved, None, 150)],
            Outcome::Pass,
            "1/1",
        ),
        (
            "GitLab: no SHA, approved before the push does not",
            "approvals: {count: 1}",
            |p| p.reviews = vec![review("bob", Approved, None, 50)],
            Outcome::Fail,
            "bob's approval is on an older commit",
        ),
        (
            "no SHA and no push time: not counted",
            "approvals: {count: 1}",
            |p| {
                p.head_pushed_at = None;
                p.reviews = vec![review("bob", Approved, None, 50)]
            },
            Outcome::Fail,
            "names no commit and the push time is unknown",
        ),
        (
            "pending reviews are not decisive",
            "approvals: {count: 1}",
            |p| p.reviews = vec![review("bob", Pending, Some(HEAD), 1)],
            Outcome::Fail,
            "0/1",
        ),
    ]);
}

#[test]
fn disapproval_table() {
    use ReviewState::*;
    run_table(&[
        (
            "nobody objects",
            "disapproval: {users: [bob]}",
            |_| {},
            Outcome::Pass,
            "no changes requested",
        ),
        (
            "a veto holder requests changes",
            "disapproval: {users: [bob]}",
            |p| p.reviews = vec![review("Bob", ChangesRequested, Some(OLD), 1)],
            Outcome::Fail,
            "changes requested by Bob",
        ),
        (
            "someone else's change request is no veto",
            "disapproval: {users: [bob]}",
            |p| p.reviews = vec![review("carol", ChangesRequested, Some(HEAD), 1)],
            Outcome::Pass,
            "no changes requested",
        ),
        (
            "a team member's veto",
            "disapproval: {teams: [org/security]}",
            |p| p.reviews = vec![review("sue", ChangesRequested, Some(HEAD), 1)],
            Outcome::Fail,
            "changes requested by sue",
        ),
        (
            "a later approval lifts the veto",
            "disapproval: {users: [bob]}",
            |p| {
                p.reviews = vec![
                    review("bob", ChangesRequested, Some(OLD), 1),
                    review("bob", Approved, Some(HEAD), 2),
                ]
            },
            Outcome::Pass,
            "no changes",
        ),
        (
            "a dismissal lifts it too",
            "disapproval: {users: [bob]}",
            |p| {
                p.reviews = vec![
                    review("bob", ChangesRequested, Some(OLD), 1),
                    review("bob", Dismissed, Some(OLD), 2),
                ]
            },
            Outcome::Pass,
            "no changes",
        ),
        (
            "an unresolved team is an error",
            "disapproval: {teams: [org/nobody]}",
            |_| {},
            Outcome::Error,
            "org/nobody",
        ),
    ]);
}

#[test]
fn file_rules_table() {
    run_table(&[
        (
            "every file inside paths",
            "changedFiles: {paths: ['src/**', 'docs/**']}",
            |_| {},
            Outcome::Pass,
            "all 2 files within",
        ),
        (
            "a file outside",
            "changedFiles: {paths: ['docs/**']}",
            |_| {},
            Outcome::Fail,
            "1 file outside docs/** (src/login.rs)",
        ),
        (
            "ignored files do not count",
            "changedFiles: {paths: ['docs/**'], ignore: ['src/*.rs']}",
            |_| {},
            Outcome::Pass,
            "(1 ignored)",
        ),
        (
            "globs do not cross directories (literal separator)",
            "changedFiles: {paths: ['docs/*', 'src/*']}",
            |p| p.files.push(file("src/deep/x.rs", FileStatus::Added, 1, 0)),
            Outcome::Fail,
            "src/deep/x.rs",
        ),
        (
            "a rename out of a directory touches it",
            "changedFiles: {paths: ['docs/**']}",
            |p| {
                let mut f = file("docs/moved.rs", FileStatus::Renamed, 0, 0);
                f.previous_path = Some("src/moved.rs".into());
                p.files = vec![f];
            },
            Outcome::Fail,
            "src/moved.rs",
        ),
        (
            "a truncated listing cannot prove a pass",
            "changedFiles: {paths: ['src/**', 'docs/**']}",
            |p| p.files_truncated = true,
            Outcome::Error,
            "listed only the first 2 files",
        ),
        (
            "but can prove a fail",
            "changedFiles: {paths: ['docs/**']}",
            |p| p.files_truncated = true,
            Outcome::Fail,
            "outside",
        ),
        (
            "modified lines within max",
            "modifiedLines: {max: 47}",
            |_| {},
            Outcome::Pass,
            "47 lines modified (max 47)",
        ),
        (
            "modified lines over max",
            "modifiedLines: {max: 46}",
            |_| {},
            Outcome::Fail,
            "47 lines modified (max 46)",
        ),
        (
            "modified lines, truncated",
            "modifiedLines: {max: 1000}",
            |p| p.files_truncated = true,
            Outcome::Error,
            "listed only",
        ),
        (
            "files within max",
            "maxFiles: {max: 2}",
            |_| {},
            Outcome::Pass,
            "2 files changed",
        ),
        (
            "files over max",
            "maxFiles: {max: 1}",
            |_| {},
            Outcome::Fail,
            "2 files changed (max 1)",
        ),
        (
            "truncated over max is still a fail",
            "maxFiles: {max: 1}",
            |p| p.files_truncated = true,
            Outcome::Fail,
            "max 1",
        ),
    ]);
}

#[test]
fn metadata_rules_table() {
    run_table(&[
        (
            "branches match",
            "branches: {source: ['feature/*'], target: [main]}",
            |_| {},
            Outcome::Pass,
            "feature/login → main",
        ),
        (
            "target does not match",
            "branches: {target: ['release/*']}",
            |_| {},
            Outcome::Fail,
            "target main does not match release/*",
        ),
        (
            "source does not match",
            "branches: {source: ['hotfix/*']}",
            |_| {},
            Outcome::Fail,
            "source feature/login",
        ),
        (
            "required label present (case-insensitive)",
            "labels: {require: [Ready]}",
            |_| {},
            Outcome::Pass,
            "labels ok",
        ),
        (
            "required label missing",
            "labels: {require: [approved-by-qa]}",
            |_| {},
            Outcome::Fail,
            "missing label approved-by-qa",
        ),
        (
            "forbidden label present",
            "labels: {forbid: [do-not-merge]}",
            |p| p.labels.push("do-not-merge".into()),
            Outcome::Fail,
            "forbidden label do-not-merge",
        ),
        (
            "title matches",
            "title: {matches: '^(feat|fix)(\\(.+\\))?: '}",
            |_| {},
            Outcome::Pass,
            "title ok",
        ),
        (
            "title does not match",
            "title: {matches: '^fix: '}",
            |_| {},
            Outcome::Fail,
            "title does not match ^fix: ",
        ),
        (
            "title matches notMatches",
            "title: {notMatches: '(?i)^wip'}",
            |p| p.title = "WIP login".into(),
            Outcome::Fail,
            "title matches (?i)^wip",
        ),
        (
            "linked issue in the body (default pattern #n)",
            "linkedIssue: {}",
            |_| {},
            Outcome::Pass,
            "references #34",
        ),
        (
            "linked issue in the title",
            "linkedIssue: {pattern: '[A-Z]+-[0-9]+'}",
            |p| p.title = "PW-7 login".into(),
            Outcome::Pass,
            "references PW-7",
        ),
        (
            "no linked issue",
            "linkedIssue: {pattern: '[A-Z]+-[0-9]+'}",
            |_| {},
            Outcome::Fail,
            "no issue reference",
        ),
        (
            "all commits verified",
            "signedCommits: {}",
            |_| {},
            Outcome::Pass,
            "all 1 commits verified",
        ),
        (
            "an unverified commit",
            "signedCommits: {}",
            |p| p.commits.push(commit("abcdef0123", false)),
            Outcome::Fail,
            "1 of 2 commits unverified (abcdef0)",
        ),
        (
            "no commits listed is an error",
            "signedCommits: {}",
            |p| p.commits.clear(),
            Outcome::Error,
            "no commits",
        ),
        (
            "commits truncated",
            "signedCommits: {}",
            |p| p.commits_truncated = true,
            Outcome::Error,
            "listed only the first 1 commits",
        ),
    ]);
}

#[test]
fn checks_table() {
    run_table(&[
        (
            "required check succeeded",
            "checks: {require: [ci]}",
            |_| {},
            Outcome::Pass,
            "1/1",
        ),
        (
            "neutral and skipped satisfy it",
            "checks: {require: [ci, lint, docs]}",
            |p| {
                p.checks.push(check("lint", CheckState::Neutral, 1));
                p.checks.push(check("docs", CheckState::Skipped, 1));
            },
            Outcome::Pass,
            "3/3",
        ),
        (
            "pending is a fail saying pending",
            "checks: {require: [ci]}",
            |p| p.checks = vec![check("ci", CheckState::Pending, 1)],
            Outcome::Fail,
            "ci pending",
        ),
        (
            "not reported yet is pending too",
            "checks: {require: [e2e]}",
            |_| {},
            Outcome::Fail,
            "e2e pending (not reported)",
        ),
        (
            "failed",
            "checks: {require: [ci]}",
            |p| p.checks = vec![check("ci", CheckState::Failure, 1)],
            Outcome::Fail,
            "ci failed",
        ),
        (
            "the latest result per name wins",
            "checks: {require: [ci]}",
            |p| {
                p.checks = vec![
                    check("ci", CheckState::Success, 50),
                    check("ci", CheckState::Failure, 20),
                ]
            },
            Outcome::Pass,
            "1/1",
        ),
        (
            "a newer failure beats an older success",
            "checks: {require: [ci]}",
            |p| {
                p.checks = vec![
                    check("ci", CheckState::Success, 20),
                    check("ci", CheckState::Error, 50),
                ]
            },
            Outcome::Fail,
            "ci errored",
        ),
    ]);
    let mut p = pr();
    p.checks = vec![check("ci", CheckState::Pending, 1)];
    assert!(verdict_of("checks: {require: [ci]}", &p).pending);
    p.checks = vec![check("ci", CheckState::Failure, 1)];
    assert!(!verdict_of("checks: {require: [ci, e2e]}", &p).pending);
    // CEL's `pr.checks` picks the same latest result per name.
    p.checks = vec![
        check("ci", CheckState::Success, 50),
        check("ci", CheckState::Failure, 20),
        check("lint", CheckState::Pending, 1),
        check("lint", CheckState::Error, 1),
    ];
    let view = cel_pr(&p);
    assert_eq!(view.checks["ci"], "success");
    assert_eq!(
        view.checks["lint"], "error",
        "the later listed among equals"
    );
    assert_eq!(
        verdict_of("checks: {require: [lint]}", &p).reason,
        "lint errored"
    );
}

#[test]
fn preview_plugin_and_cel_table() {
    run_table(&[
        (
            "no preview",
            "previewHealthy: {}",
            |_| {},
            Outcome::Fail,
            "no preview environment",
        ),
        (
            "preview deploying",
            "previewHealthy: {}",
            |p| {
                p.preview = Some(PreviewState {
                    ready: false,
                    healthy: None,
                    message: Some("Deploying".into()),
                })
            },
            Outcome::Fail,
            "preview not ready (Deploying)",
        ),
        (
            "preview unhealthy",
            "previewHealthy: {}",
            |p| {
                p.preview = Some(PreviewState {
                    ready: true,
                    healthy: Some(false),
                    message: Some("http-200 Degraded".into()),
                })
            },
            Outcome::Fail,
            "preview unhealthy (http-200 Degraded)",
        ),
        (
            "preview ready and healthy",
            "previewHealthy: {}",
            |p| {
                p.preview = Some(PreviewState {
                    ready: true,
                    healthy: Some(true),
                    message: None,
                })
            },
            Outcome::Pass,
            "ready and healthy",
        ),
        (
            "preview ready without checks",
            "previewHealthy: {}",
            |p| {
                p.preview = Some(PreviewState {
                    ready: true,
                    ..PreviewState::default()
                })
            },
            Outcome::Pass,
            "no health checks",
        ),
        (
            "plugins are unsupported, never a pass",
            "plugin: {ref: {name: license}}",
            |_| {},
            Outcome::Unsupported,
            "plugin license: plugin rules are not implemented yet",
        ),
        (
            "cel true",
            "cel: {expression: \"pr.files.all(f, f.additions < 100) && 'ready' in pr.labels\"}",
            |_| {},
            Outcome::Pass,
            "expression is true",
        ),
        (
            "cel false with the author's message",
            "cel: {expression: 'pr.additions < 10', message: 'keep PRs small'}",
            |_| {},
            Outcome::Fail,
            "keep PRs small",
        ),
        (
            "cel false without a message",
            "cel: {expression: 'pr.draft'}",
            |_| {},
            Outcome::Fail,
            "expression is false",
        ),
        (
            "cel runtime error is an error",
            "cel: {expression: \"pr.checks['e2e'] == 'success'\"}",
            |_| {},
            Outcome::Error,
            "cel: ",
        ),
        (
            "cel sees approvals counted for the head",
            "cel: {expression: \"pr.approvals == ['sam'] && pr.author in pr.teams['org/security'] == false\"}",
            |p| {
                p.reviews = vec![
                    review("sam", ReviewState::Approved, Some(HEAD), 1),
                    review("bob", ReviewState::Approved, Some(OLD), 2),
                ]
            },
            Outcome::Pass,
            "true",
        ),
        (
            "cel sees checks, commits and the preview",
            "cel: {expression: \"pr.checks['ci'] == 'success' && pr.commits.all(c, c.verified) && !pr.preview.exists\"}",
            |_| {},
            Outcome::Pass,
            "true",
        ),
    ]);
}

#[test]
fn if_scopes_skip_or_error() {
    let scoped = |cond: &str| {
        gate(
            &format!("- name: r\n  if: \"{cond}\"\n  maxFiles: {{max: 0}}\n"),
            None,
        )
    };
    let v = evaluate(&scoped("pr.target == 'release'"), &pr());
    assert_eq!(v.rules[0].outcome, Outcome::Skipped);
    assert_eq!(v.rules[0].reason, "skipped (if is false)");
    assert_eq!(v.result, GateResult::Passed, "all rules skipped passes");
    assert_eq!(v.summary(), "all 1 rules skipped");
    let v = evaluate(&scoped("pr.target == 'main'"), &pr());
    assert_eq!(v.rules[0].outcome, Outcome::Fail);
    // An `if` that errors is an error, not a skip.
    let v = evaluate(&scoped("pr.checks['nope'] == 'x'"), &pr());
    assert_eq!(v.rules[0].outcome, Outcome::Error, "{}", v.rules[0].reason);
    assert!(v.rules[0].reason.starts_with("if: "));
    assert_eq!(v.result, GateResult::Error);
    // A non-boolean `if` too.
    let v = evaluate(&scoped("pr.number"), &pr());
    assert_eq!(v.rules[0].outcome, Outcome::Error);
    // A bad `if` compiled through `evaluate` is an error for that rule only.
    let spec = gate(
        "- name: bad\n  if: 'pr.nope'\n  maxFiles: {max: 0}\n- name: good\n  maxFiles: {max: 9}\n",
        None,
    );
    let v = evaluate(&spec, &pr());
    assert_eq!(v.rules[0].outcome, Outcome::Error);
    assert!(
        v.rules[0].reason.contains("no field `nope`"),
        "{}",
        v.rules[0].reason
    );
    assert_eq!(v.rules[1].outcome, Outcome::Pass);
}

/// Rules named by outcome: `p` passes, `f` fails, `s` is skipped, `e` errors, `u` is
/// unsupported, `w` fails while waiting on a check.
fn combo(expression: Option<&str>) -> GateVerdict {
    let rules = "- name: p\n  maxFiles: {max: 10}\n\
                 - name: f\n  maxFiles: {max: 0}\n\
                 - name: s\n  if: 'false'\n  maxFiles: {max: 0}\n\
                 - name: e\n  disapproval: {teams: [org/unresolved]}\n\
                 - name: u\n  plugin: {ref: {name: x}}\n\
                 - name: w\n  checks: {require: [slow]}\n";
    evaluate(&gate(rules, expression), &pr())
}

#[test]
fn combination_semantics() {
    let v = combo(None);
    let outcomes: Vec<Outcome> = v.rules.iter().map(|r| r.outcome).collect();
    use Outcome::*;
    assert_eq!(
        outcomes,
        vec![Pass, Fail, Skipped, Error, Unsupported, Fail]
    );
    use GateResult as G;
    for (expr, want) in [
        ("p", G::Passed),
        ("f", G::Failed),
        ("e", G::Error),
        ("u", G::Error),
        ("w", G::Pending),
        // Skipped is left out of && and ||.
        ("p && s", G::Passed),
        ("f && s", G::Failed),
        ("p || s", G::Passed),
        ("f || s", G::Failed),
        ("s || s", G::Passed),
        ("!s", G::Passed),
        ("!s && f", G::Failed),
        ("s && e", G::Error),
        // Errors count exactly when they could change the result.
        ("p || e", G::Passed),
        ("f || e", G::Error),
        ("f && e", G::Failed),
        ("p && e", G::Error),
        // Unsupported and errors are never a pass, also negated.
        ("!u", G::Error),
        ("!e", G::Error),
        ("p || u", G::Passed),
        ("!f", G::Passed),
        ("!p", G::Failed),
        ("(p && !f) || u", G::Passed),
        // Pending only when every failing rule waits on automation.
        ("p && w", G::Pending),
        ("f || w", G::Failed),
    ] {
        assert_eq!(combo(Some(expr)).result, want, "{expr}");
    }
    // Default: every rule must pass; a fail beside an error is a fail.
    assert_eq!(v.result, G::Failed);
    let only_p_s = evaluate(
        &gate(
            "- name: p\n  maxFiles: {max: 10}\n- name: s\n  if: 'false'\n  maxFiles: {max: 0}\n",
            None,
        ),
        &pr(),
    );
    assert_eq!(only_p_s.result, G::Passed);
    // A bad expression makes the gate an error.
    let bad = evaluate(
        &gate("- name: p\n  maxFiles: {max: 10}\n", Some("p && q")),
        &pr(),
    );
    assert_eq!(bad.result, G::Error);
    assert!(bad.summary().contains("\"q\""), "{}", bad.summary());
    assert_eq!(G::Pending.as_str(), "pending");
}

#[test]
fn summaries_fit_a_commit_status() {
    let v = combo(None);
    let s = v.summary();
    assert!(s.starts_with("1/5 rules passed: f: 2 files changed"), "{s}");
    assert!(s.chars().count() <= 140, "{s}");
    assert_eq!(v.failed_rules(), vec!["f", "e", "u", "w"]);

    // The example from the issue.
    let spec = gate(
        "- name: approvals\n  approvals: {count: 2}\n- name: ci\n  checks: {require: [ci]}\n\
         - name: size\n  maxFiles: {max: 5}\n- name: signed\n  signedCommits: {}\n",
        None,
    );
    let mut p = pr();
    p.reviews = vec![review("bob", ReviewState::Approved, Some(HEAD), 1)];
    assert_eq!(
        evaluate(&spec, &p).summary(),
        "3/4 rules passed: approvals 1/2"
    );
    p.reviews
        .push(review("carol", ReviewState::Approved, Some(HEAD), 2));
    assert_eq!(evaluate(&spec, &p).summary(), "4/4 rules passed");

    // Long names and reasons: cut to 140 characters, naming how many more.
    let mut rules = String::new();
    for i in 0..30 {
        rules.push_str(&format!(
            "- name: a_rather_long_rule_name_number_{i}_{}\n  labels: {{require: [{}]}}\n",
            "x".repeat(20),
            "l".repeat(60)
        ));
    }
    let v = evaluate(&gate(&rules, None), &pr());
    let s = v.summary();
    assert_eq!(v.result, GateResult::Failed);
    assert!(s.chars().count() <= 140, "{} chars: {s}", s.chars().count());
    assert!(s.starts_with("0/30 rules passed: "), "{s}");
    assert!(s.contains("more"), "{s}");
    // One rule whose reason alone is longer than a status.
    let long = gate(
        &format!("- name: r\n  labels: {{require: [{}]}}\n", "é".repeat(300)),
        None,
    );
    let s = evaluate(&long, &pr()).summary();
    assert!(s.chars().count() <= 140, "{s}");
    assert!(s.ends_with('…'), "{s}");
}

#[test]
fn secrets_are_found_and_never_echoed() {
    let spec = one("secretScan: {extraPatterns: [{name: acme, regex: 'acme_[0-9a-f]{12}'}]}");
    let mut p = pr();
    let mut texts: Vec<String> = fake_secrets().into_iter().map(|(_, l)| l).collect();
    texts.push("ACME = acme_0123456789ab".into());
    p.files.push(SnapshotFile {
        diff_withheld: false,
        path: "config/prod.env".into(),
        previous_path: None,
        status: FileStatus::Added,
        additions: texts.len() as u64,
        deletions: 0,
        added_lines: Some(
            texts
                .iter()
                .enumerate()
                .map(|(i, t)| AddedLine {
                    line: u32::try_from(i).unwrap() + 10,
                    text: t.clone(),
                })
                .collect(),
        ),
    });
    let v = evaluate(&spec, &p);
    let r = &v.rules[0];
    assert_eq!(r.outcome, Outcome::Fail, "{}", r.reason);
    assert!(r.reason.contains("config/prod.env:10 ("), "{}", r.reason);
    // Every rendering of the verdict is free of every secret's distinctive part.
    let rendered = format!(
        "{v:?}\n{}\n{}\n{p:?}",
        v.summary(),
        serde_json::to_string(&v).unwrap()
    );
    for t in &texts {
        // The longest run of token characters in the line is the secret material.
        let secret = t
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .max_by_key(|s| s.len())
            .unwrap();
        assert!(secret.len() >= 12, "{t}");
        assert!(!rendered.contains(secret), "{secret} leaked");
    }
    // Removed files are not scanned; a file without a diff cannot be vouched for.
    let mut p = pr();
    p.files.push(SnapshotFile {
        added_lines: None,
        ..file("blob.bin", FileStatus::Modified, 3, 0)
    });
    let r = verdict_of("secretScan: {}", &p);
    assert_eq!(r.outcome, Outcome::Error);
    assert!(
        r.reason.contains("blob.bin (the forge sent no diff)"),
        "{}",
        r.reason
    );
    let mut p = pr();
    p.files.push(SnapshotFile {
        added_lines: None,
        ..file("gone.txt", FileStatus::Removed, 0, 9)
    });
    let r = verdict_of("secretScan: {}", &p);
    assert_eq!(r.outcome, Outcome::Pass, "{}", r.reason);
    assert_eq!(r.reason, "no secrets in 45 added lines");
    // A diff the forge withheld (GitLab `too_large`) counts no lines but is not clean: neither
    // secretScan nor modifiedLines can decide on it.
    let mut p = pr();
    p.files.push(SnapshotFile {
        added_lines: None,
        diff_withheld: true,
        ..file("huge.sql", FileStatus::Modified, 0, 0)
    });
    let r = verdict_of("secretScan: {}", &p);
    assert_eq!(r.outcome, Outcome::Error);
    assert!(
        r.reason
            .contains("huge.sql (the forge withheld its diff: too large)"),
        "{}",
        r.reason
    );
    let r = verdict_of("modifiedLines: {max: 100000}", &p);
    assert_eq!(r.outcome, Outcome::Error, "{}", r.reason);
    assert!(
        r.reason.contains("withheld the diff of huge.sql"),
        "{}",
        r.reason
    );
    let r = verdict_of("modifiedLines: {max: 1}", &p);
    assert_eq!(
        r.outcome,
        Outcome::Fail,
        "already over the bound: {}",
        r.reason
    );
}

#[test]
fn compiled_gates_evaluate_like_evaluate() {
    let spec = gate(
        "- name: a\n  approvals: {count: 1}\n- name: docs\n  if: \"pr.target == 'main'\"\n  changedFiles: {paths: ['docs/**']}\n",
        Some("a || docs"),
    );
    let compiled = CompiledGate::compile(&spec).unwrap();
    let p = pr();
    assert_eq!(compiled.evaluate(&p), evaluate(&spec, &p));
    assert_eq!(compiled.evaluate(&p).result, GateResult::Failed);
}

// ---------------------------------------------------------------------------------------------
// Real payloads
// ---------------------------------------------------------------------------------------------

macro_rules! data {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../test-data/", $path))
    };
}

#[test]
fn github_payloads() {
    use crate::forge::github;
    let raw: serde_json::Value = serde_json::from_str(data!("github/rest/pulls-get.json")).unwrap();
    let pull = github::to_pull(serde_json::from_value(raw.clone()).unwrap());
    let mut p = PrSnapshot::from_pull_request(&pull, raw["body"].as_str().unwrap_or_default());
    let files_raw: Vec<serde_json::Value> =
        serde_json::from_str(data!("github/rest/pulls-list-files.json")).unwrap();
    p.files = files_raw
        .iter()
        .map(|f| {
            let changed: ChangedFile = github::to_file(serde_json::from_value(f.clone()).unwrap());
            SnapshotFile::from_changed_file(&changed, f["patch"].as_str())
        })
        .collect();
    let reviews: Vec<github::ReviewJson> =
        serde_json::from_str(data!("github/rest/pulls-list-reviews.json")).unwrap();
    p.reviews = reviews.into_iter().map(github::to_review).collect();
    let commits: Vec<github::CommitJson> =
        serde_json::from_str(data!("github/rest/pulls-list-commits.json")).unwrap();
    p.commits = commits.into_iter().map(github::to_commit).collect();
    let combined: github::CombinedStatus =
        serde_json::from_str(data!("github/rest/repos-get-combined-status-for-ref.json")).unwrap();
    p.checks = combined
        .statuses
        .into_iter()
        .map(github::to_status_check)
        .collect();
    let runs: github::CheckRunList =
        serde_json::from_str(data!("github/rest/checks-list-for-ref.json")).unwrap();
    p.checks
        .extend(runs.check_runs.into_iter().map(github::to_check_run));

    assert_eq!((p.number, p.author.as_str()), (1347, "octocat"));
    assert_eq!(p.body, "Please pull these awesome changes in!");
    // octocat approved an older commit (ecdd80b…) of its own PR (head 6dcb09b…).
    let v = |kind: &str| verdict_of(kind, &p);
    let r = v("approvals: {count: 1, allowAuthor: true}");
    assert_eq!(r.outcome, Outcome::Fail);
    assert_eq!(
        r.reason,
        "approvals 0/1 (octocat's approval is on an older commit)"
    );
    let r = v("approvals: {count: 1}");
    assert_eq!(r.reason, "approvals 0/1 (octocat is the author)");
    let r = v("approvals: {count: 1, allowAuthor: true, invalidateOnPush: false}");
    assert_eq!(r.outcome, Outcome::Pass, "{}", r.reason);
    // Statuses succeeded, the check run is neutral.
    let r =
        v("checks: {require: [continuous-integration/jenkins, security/brakeman, mighty_readme]}");
    assert_eq!(r.outcome, Outcome::Pass, "{}", r.reason);
    assert_eq!(
        v("checks: {require: [e2e]}").reason,
        "e2e pending (not reported)"
    );
    // The one commit is unsigned.
    assert_eq!(
        v("signedCommits: {}").reason,
        "1 of 1 commits unverified (6dcb09b)"
    );
    // file1.txt: 103 additions, but the example's patch holds only hunk headers.
    let r = v("secretScan: {}");
    assert_eq!(r.outcome, Outcome::Error);
    assert!(
        r.reason
            .contains("file1.txt (0 of 103 added lines in the diff)"),
        "{}",
        r.reason
    );
    assert_eq!(v("changedFiles: {paths: ['*.txt']}").outcome, Outcome::Pass);
    assert_eq!(v("labels: {require: [bug]}").outcome, Outcome::Pass);
    assert_eq!(
        v("branches: {source: ['new-*'], target: [master]}").outcome,
        Outcome::Pass
    );
    // The dismissed-review webhook: a dismissal on the head replaces nothing but counts as
    // decisive, so the approval count stays 0.
    let hook: serde_json::Value =
        serde_json::from_str(data!("github/webhooks/pull_request_review.dismissed.json")).unwrap();
    let dismissed = github::to_review(serde_json::from_value(hook["review"].clone()).unwrap());
    assert_eq!(dismissed.state, ReviewState::Dismissed);
    let approval = Review {
        state: ReviewState::Approved,
        commit_sha: Some(HEAD.into()),
        submitted_at: dismissed
            .submitted_at
            .map(|t| t - jiff::SignedDuration::from_secs(60)),
        ..dismissed.clone()
    };
    let mut q = p.clone();
    q.head_sha = HEAD.into();
    q.reviews = vec![approval.clone()];
    assert_eq!(
        verdict_of("approvals: {count: 1}", &q).reason,
        "approvals 1/1 (Codertocat)"
    );
    q.reviews = vec![approval, dismissed];
    assert_eq!(
        verdict_of("approvals: {count: 1}", &q).reason,
        "approvals 0/1"
    );
}

#[test]
fn gitlab_payloads() {
    use crate::forge::gitlab;
    let raw: serde_json::Value =
        serde_json::from_str(data!("gitlab/rest/get-single-merge-request.json")).unwrap();
    let mr = gitlab::to_pull(serde_json::from_value(raw.clone()).unwrap());
    let mut p = PrSnapshot::from_pull_request(&mr, raw["description"].as_str().unwrap_or_default());
    let diffs: Vec<serde_json::Value> =
        serde_json::from_str(data!("gitlab/rest/list-merge-request-diffs.json")).unwrap();
    p.files = diffs
        .iter()
        .map(|d| {
            let changed = gitlab::to_file(serde_json::from_value(d.clone()).unwrap());
            SnapshotFile::from_changed_file(&changed, d["diff"].as_str())
        })
        .collect();
    let approvals: gitlab::ApprovalsJson =
        serde_json::from_str(data!("gitlab/rest/get-merge-request-approvals.json")).unwrap();
    p.reviews = gitlab::to_reviews(approvals);
    let statuses: Vec<gitlab::StatusJson> =
        serde_json::from_str(data!("gitlab/rest/list-commit-statuses.json")).unwrap();
    p.checks = statuses.into_iter().map(gitlab::to_check).collect();

    assert_eq!((p.number, p.target_branch.as_str()), (133, "main"));
    assert_eq!(
        p.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        vec!["README", "VERSION"]
    );
    // root approved at 2016-06-09T01:45:21Z; GitLab names no commit, so the push time decides.
    let approved_at: Timestamp = "2016-06-09T01:45:21.720Z".parse().unwrap();
    let spec = one("approvals: {count: 1}");
    p.head_pushed_at = Some(approved_at - jiff::SignedDuration::from_secs(60));
    assert_eq!(evaluate(&spec, &p).rules[0].reason, "approvals 1/1 (root)");
    p.head_pushed_at = Some(approved_at + jiff::SignedDuration::from_secs(60));
    assert_eq!(
        evaluate(&spec, &p).rules[0].reason,
        "approvals 0/1 (root's approval is on an older commit)"
    );
    // Both pipeline statuses are pending: the gate waits.
    let v = evaluate(
        &gate(
            "- name: ci\n  checks: {require: [test, 'bundler:audit']}\n- name: root_only\n  approvals: {count: 1, users: [root], invalidateOnPush: false}\n",
            None,
        ),
        &p,
    );
    assert_eq!(v.rules[0].reason, "test pending, bundler:audit pending");
    assert_eq!(v.rules[1].outcome, Outcome::Pass);
    assert_eq!(v.result, GateResult::Pending);
    assert_eq!(
        v.summary(),
        "1/2 rules passed: ci: test pending, bundler:audit pending"
    );
    // CEL over the same MR.
    let c = verdict_of(
        "cel: {expression: \"pr.author == 'marcel.amirault' && pr.files.exists(f, f.path == 'VERSION') && !pr.fork\"}",
        &p,
    );
    assert_eq!(c.outcome, Outcome::Pass, "{}", c.reason);
}

#[test]
fn gitea_payloads() {
    use crate::webhook::{Forge, event};
    let body = data!("gitea/webhooks/push.json");
    let mut headers = http::HeaderMap::new();
    headers.insert("X-Gitea-Event", "push".parse().unwrap());
    headers.insert("X-Gitea-Delivery", "d-1".parse().unwrap());
    let ev = event::parse(Forge::Gitea, &headers, body.as_bytes()).unwrap();
    let raw: serde_json::Value = serde_json::from_str(body).unwrap();
    let mut p = PrSnapshot {
        number: 1,
        title: "Webhooks Yay!".into(),
        author: "gitea".into(),
        source_branch: "develop".into(),
        target_branch: raw["repository"]["default_branch"].as_str().unwrap().into(),
        head_sha: ev.head_sha.clone().unwrap(),
        ..PrSnapshot::default()
    };
    assert_eq!(p.head_sha, "bffeb74224043ba2feb48d137756c8a9331c449a");
    // The push payload's commits carry no verification: signedCommits fails, by commit.
    p.commits = raw["commits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Commit {
            sha: c["id"].as_str().unwrap().into(),
            author: c["author"]["username"].as_str().unwrap().into(),
            message: c["message"].as_str().unwrap().into(),
            verified: c["verification"]["verified"].as_bool().unwrap_or(false),
        })
        .collect();
    assert_eq!(
        verdict_of("signedCommits: {}", &p).reason,
        "1 of 1 commits unverified (bffeb74)"
    );
    // Committing this very payload would leak a webhook secret: its `"secret": "…"` line.
    let lines: Vec<AddedLine> = body
        .lines()
        .enumerate()
        .map(|(i, t)| AddedLine {
            line: u32::try_from(i).unwrap() + 1,
            text: t.to_string(),
        })
        .collect();
    p.files = vec![SnapshotFile {
        diff_withheld: false,
        path: "hooks/sample.json".into(),
        previous_path: None,
        status: FileStatus::Added,
        additions: lines.len() as u64,
        deletions: 0,
        added_lines: Some(lines),
    }];
    let r = verdict_of("secretScan: {}", &p);
    assert_eq!(r.outcome, Outcome::Fail);
    assert_eq!(
        r.reason,
        "1 possible secret (hooks/sample.json:2 (generic-secret-assignment))"
    );
    let secret = raw["secret"].as_str().unwrap();
    assert!(!format!("{r:?}").contains(secret));
    // The rest of the payload (SHAs, URLs, e-mails) is not flagged.
    assert_eq!(
        verdict_of("branches: {target: [master]}", &p).outcome,
        Outcome::Pass
    );
    assert!(cel_pr(&p).commits[0].message.contains("Yay"));
}
