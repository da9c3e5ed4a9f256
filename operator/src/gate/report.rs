//! The one rendering of a [`GateVerdict`] for people: the check run's title and per-rule
//! Markdown table (also the PolicyGate section of the sticky comment on GitLab and Gitea), and
//! the aligned terminal table of `pullwarden gate test`. Pure.
//!
//! Everything shown comes from the verdict: rule names and reasons, which never hold secret text
//! (`secretScan` names `path:line (pattern)` only). Text from the gate or the pull request can
//! still carry Markdown or terminal control characters (a CEL `message`, a branch name, a
//! label), so every cell is escaped for its medium and bounded:
//! - Markdown: ASCII punctuation with a meaning in GitHub Flavored Markdown (`|`, `` ` ``, `*`,
//!   `_`, `[`, `]`, `<`, `>`, `~`, `&`, `\`) is backslash-escaped, `@` cannot mention (a word
//!   joiner follows it), newlines become spaces, a
//!   reason shows at most [`REASON_MAX_CHARS`] characters and the whole table at most
//!   [`CHECK_RUN_TEXT_MAX_CHARS`] (whole rows are cut, then a `… N more rules` line).
//! - Terminal: control characters (newlines, escape sequences) become spaces.

use super::evaluate::{GateVerdict, Outcome, RuleVerdict, reason_head};
use crate::forge::{CHECK_RUN_TEXT_MAX_CHARS, truncate_chars};

/// Characters of a reason shown in one Markdown cell (before escaping).
pub const REASON_MAX_CHARS: usize = 300;
/// Characters of a rule name shown in one cell (names are at most 63 by the schema).
const NAME_MAX_CHARS: usize = 100;
/// Characters of a gate-level error shown above the table.
const GATE_ERROR_MAX_CHARS: usize = 1000;
/// GitHub's limit on a check run's title.
const CHECK_RUN_TITLE_MAX_CHARS: usize = 255;
/// Characters of a reason in the terminal table without `--explain`.
const TERMINAL_REASON_MAX_CHARS: usize = 120;

/// The icon of a rule's verdict.
fn icon(r: &RuleVerdict) -> &'static str {
    match r.outcome {
        Outcome::Pass => "✅",
        Outcome::Fail if r.pending => "⏳",
        Outcome::Fail => "❌",
        Outcome::Skipped => "⏭",
        Outcome::Error | Outcome::Unsupported => "⚠️",
    }
}

/// The word for a rule's verdict.
fn word(r: &RuleVerdict) -> &'static str {
    match r.outcome {
        Outcome::Pass => "pass",
        Outcome::Fail if r.pending => "pending",
        Outcome::Fail => "fail",
        Outcome::Skipped => "skipped",
        Outcome::Error => "error",
        Outcome::Unsupported => "unsupported",
    }
}

/// Text for one Markdown table cell: on one line, punctuation escaped, so it can neither end the
/// cell, open a code span, emphasis, a link or HTML, nor start a new row.
fn md_cell(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last_space = false;
    for c in text.chars() {
        if c.is_control() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
            continue;
        }
        last_space = c == ' ';
        if matches!(
            c,
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '~' | '&'
        ) {
            out.push('\\');
        }
        out.push(c);
        if c == '@' {
            // A word joiner after `@`: a login, a branch or a label never notifies anyone.
            out.push('\u{2060}');
        }
    }
    out.trim().to_string()
}

/// One line for a terminal: control characters (newlines, escape sequences) become spaces.
fn plain(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn md_row(r: &RuleVerdict) -> String {
    format!(
        "| {} | {} | {} | {} |\n",
        icon(r),
        md_cell(&truncate_chars(&r.name, NAME_MAX_CHARS)),
        word(r),
        md_cell(&truncate_chars(&r.reason, REASON_MAX_CHARS)),
    )
}

fn more_rules(n: usize) -> String {
    let noun = if n == 1 { "rule" } else { "rules" };
    format!("\n… {n} more {noun}\n")
}

/// The per-rule Markdown table (the check run's summary, the sticky-comment section): one row
/// per rule in spec order, the gate-level error (if any) as a line above it, at most
/// [`CHECK_RUN_TEXT_MAX_CHARS`] characters.
pub fn markdown_table(verdict: &GateVerdict) -> String {
    markdown_table_within(verdict, CHECK_RUN_TEXT_MAX_CHARS)
}

/// [`markdown_table`] within `max` characters: whole rows only, then `… N more rules` (the
/// room for that line is kept free while rows are added).
fn markdown_table_within(verdict: &GateVerdict, max: usize) -> String {
    let mut out = String::new();
    if let Some(e) = &verdict.error {
        out.push_str(&format!(
            "**Gate error:** {}\n\n",
            md_cell(&truncate_chars(e, GATE_ERROR_MAX_CHARS))
        ));
    }
    out.push_str("| | Rule | Result | Reason |\n|---|---|---|---|\n");
    let mut len = out.chars().count();
    let n = verdict.rules.len();
    for (i, r) in verdict.rules.iter().enumerate() {
        let row = md_row(r);
        let after = n - i - 1;
        let reserve = if after == 0 {
            0
        } else {
            more_rules(after).chars().count()
        };
        let row_len = row.chars().count();
        if len + row_len + reserve > max {
            out.push_str(&more_rules(n - i));
            return out;
        }
        out.push_str(&row);
        len += row_len;
    }
    out
}

/// The check run's title: `3/4 rules passed`, `all 2 rules skipped` or `error: …`
/// ([`GateVerdict::headline`]), within GitHub's 255 characters.
pub fn check_run_title(verdict: &GateVerdict) -> String {
    truncate_chars(&verdict.headline(), CHECK_RUN_TITLE_MAX_CHARS)
}

/// A reason's head and, when it ends in one parenthesised group opened by the first ` (`, the
/// items of that group (split at `; `, or at `, ` when there is no `; `; nested parentheses
/// stay whole). `approvals 1/2 (alice; bob's approval is on an older commit)` →
/// (`approvals 1/2`, [`alice`, `bob's approval is on an older commit`]).
fn reason_parts(reason: &str) -> (&str, Vec<&str>) {
    let head = reason_head(reason);
    let Some(inner) = reason
        .get(head.len()..)
        .and_then(|r| r.strip_prefix(" ("))
        .and_then(|r| r.strip_suffix(')'))
    else {
        return (reason, Vec::new());
    };
    // The group must close only at the very end: `a pending (x), b pending (y)` is one list.
    let mut depth = 0i32;
    for c in inner.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        if depth < 0 {
            return (reason, Vec::new());
        }
    }
    if depth != 0 {
        return (reason, Vec::new());
    }
    let split = |sep: &str| top_level_split(inner, sep);
    let items = split("; ");
    let items = if items.len() > 1 { items } else { split(", ") };
    (head, items)
}

/// `s` split at `sep` outside parentheses.
fn top_level_split<'a>(s: &'a str, sep: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut i = 0;
    while i < s.len() {
        let rest = &s[i..];
        if depth == 0 && rest.starts_with(sep) {
            out.push(&s[start..i]);
            i += sep.len();
            start = i;
            continue;
        }
        let c = rest.chars().next().unwrap_or(' ');
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ => {}
        }
        i += c.len_utf8();
    }
    out.push(&s[start..]);
    out
}

/// What a rule's outcome means for the gate, for `--explain`.
fn meaning(r: &RuleVerdict) -> &'static str {
    match r.outcome {
        Outcome::Pass => "passed: counts as true in the gate's combination",
        Outcome::Fail if r.pending => {
            "failed, waiting on automation (a check still running or not reported yet, a \
             preview still deploying): the gate is pending while every failing rule it needs \
             is waiting"
        }
        Outcome::Fail => "failed: fails the gate unless its expression can pass without this rule",
        Outcome::Skipped => {
            "skipped: its `if` is false, so it is left out of && and || (a gate whose rules \
             are all skipped passes)"
        }
        Outcome::Error => {
            "error: the rule could not decide (an expression failed at run time, a team's \
             membership is unknown, or the forge's listing was cut short); an error is never \
             a pass, so the gate is an error unless its result does not depend on this rule"
        }
        Outcome::Unsupported => {
            "unsupported: this rule kind is not implemented yet and never passes; the gate is \
             an error unless its result does not depend on this rule"
        }
    }
}

/// The terminal table of `pullwarden gate test`: aligned columns RULE / RESULT / REASON (the
/// reason cut to 120 characters), then `result: <result> (<summary>)`. With `explain`, every
/// reason in full and, per rule, the parts of its reason (what the rule looked at and counted)
/// and what its outcome means for the gate.
pub fn text_table(verdict: &GateVerdict, explain: bool) -> String {
    let mut out = String::new();
    if let Some(e) = &verdict.error {
        out.push_str(&format!("gate error: {}\n", plain(e)));
    }
    let rows: Vec<[String; 3]> = verdict
        .rules
        .iter()
        .map(|r| {
            let reason = if explain {
                plain(&r.reason)
            } else {
                plain(&truncate_chars(&r.reason, TERMINAL_REASON_MAX_CHARS))
            };
            [plain(&r.name), word(r).to_string(), reason]
        })
        .collect();
    let width = |col: usize, title: &str| {
        rows.iter()
            .map(|r| r[col].chars().count())
            .chain([title.chars().count()])
            .max()
            .unwrap_or(0)
    };
    let (w0, w1) = (width(0, "RULE"), width(1, "RESULT"));
    let line =
        |a: &str, b: &str, c: &str| format!("{a:<w0$}  {b:<w1$}  {c}").trim_end().to_string();
    out.push_str(&line("RULE", "RESULT", "REASON"));
    out.push('\n');
    for r in &rows {
        out.push_str(&line(&r[0], &r[1], &r[2]));
        out.push('\n');
    }
    if explain {
        for r in &verdict.rules {
            let (head, items) = reason_parts(&r.reason);
            out.push_str(&format!("\n{}: {}\n", plain(&r.name), word(r)));
            out.push_str(&format!("  {}\n", plain(head)));
            for item in items {
                out.push_str(&format!("  - {}\n", plain(item)));
            }
            out.push_str(&format!("  {}\n", meaning(r)));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "result: {} ({})\n",
        verdict.result.as_str(),
        plain(&verdict.summary())
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PolicyGateSpec;
    use crate::forge::FileStatus;
    use crate::gate::{AddedLine, GateResult, PrSnapshot, SnapshotFile, evaluate};

    fn rule(name: &str, outcome: Outcome, reason: &str, pending: bool) -> RuleVerdict {
        RuleVerdict {
            name: name.into(),
            outcome,
            reason: reason.into(),
            pending,
        }
    }

    fn every_outcome() -> GateVerdict {
        GateVerdict {
            result: GateResult::Error,
            rules: vec![
                rule(
                    "approvals",
                    Outcome::Fail,
                    "approvals 1/2 (alice; bob's approval is on an older commit)",
                    false,
                ),
                rule("ci", Outcome::Fail, "e2e pending (not reported)", true),
                rule("docs", Outcome::Skipped, "skipped (if is false)", false),
                rule("title", Outcome::Pass, "title ok", false),
                rule(
                    "team",
                    Outcome::Error,
                    "membership of team org/x is not known",
                    false,
                ),
                rule(
                    "wasm",
                    Outcome::Unsupported,
                    "plugin lic: plugin rules are not implemented yet, so this rule never passes",
                    false,
                ),
            ],
            error: None,
        }
    }

    #[test]
    fn markdown_rows_follow_spec_order_with_icons() {
        let md = markdown_table(&every_outcome());
        let lines: Vec<&str> = md.lines().collect();
        assert_eq!(lines[0], "| | Rule | Result | Reason |");
        assert_eq!(lines[1], "|---|---|---|---|");
        assert_eq!(
            &lines[2..],
            &[
                "| ❌ | approvals | fail | approvals 1/2 (alice; bob's approval is on an older commit) |",
                "| ⏳ | ci | pending | e2e pending (not reported) |",
                "| ⏭ | docs | skipped | skipped (if is false) |",
                "| ✅ | title | pass | title ok |",
                "| ⚠️ | team | error | membership of team org/x is not known |",
                "| ⚠️ | wasm | unsupported | plugin lic: plugin rules are not implemented yet, so this rule never passes |",
            ]
        );
        assert!(md.ends_with("|\n"));
        assert_eq!(check_run_title(&every_outcome()), "1/5 rules passed");
    }

    #[test]
    fn markdown_cells_are_escaped_and_bounded() {
        assert_eq!(
            md_cell("ping @acme/everyone"),
            "ping @\u{2060}acme/everyone"
        );
        let mut v = every_outcome();
        v.rules = vec![rule(
            "no_secrets",
            Outcome::Fail,
            "bad | pipe\nnew `code` **bold** [link](x) <b>html</b> a\\b ~~s~~ &amp;",
            false,
        )];
        let md = markdown_table(&v);
        let row = md.lines().nth(2).unwrap();
        assert_eq!(
            row,
            r"| ❌ | no\_secrets | fail | bad \| pipe new \`code\` \*\*bold\*\* \[link\](x) \<b\>html\</b\> a\\b \~\~s\~\~ \&amp; |"
        );
        // Exactly the four cell separators are unescaped pipes: the row has four cells.
        let unescaped = row
            .char_indices()
            .filter(|&(i, c)| c == '|' && !row[..i].ends_with('\\'))
            .count();
        assert_eq!(unescaped, 5);
        assert_eq!(md.lines().count(), 3, "a newline in a reason starts no row");

        // A long reason shows 300 characters, the last an ellipsis.
        v.rules = vec![rule("r", Outcome::Fail, &"x".repeat(1000), false)];
        let md = markdown_table(&v);
        let cell = md.lines().nth(2).unwrap().split(" | ").nth(3).unwrap();
        let cell = cell.trim_end_matches(" |");
        assert_eq!(cell.chars().count(), REASON_MAX_CHARS);
        assert!(cell.ends_with('…'));
    }

    #[test]
    fn gate_errors_show_above_the_table() {
        let mut v = every_outcome();
        v.error = Some("expression references rule \"b\", which is not defined".into());
        let md = markdown_table(&v);
        assert!(
            md.starts_with(
                "**Gate error:** expression references rule \"b\", which is not defined\n\n| | Rule"
            ),
            "{md}"
        );
        assert_eq!(
            check_run_title(&v),
            "error: expression references rule \"b\", which is not defined"
        );
        let text = text_table(&v, false);
        assert!(
            text.starts_with("gate error: expression references"),
            "{text}"
        );
        assert!(
            text.ends_with(
                "result: error (error: expression references rule \"b\", which is not defined)\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn markdown_is_cut_between_rows_within_the_limit() {
        let rules: Vec<RuleVerdict> = (0..400)
            .map(|i| rule(&format!("rule_{i}"), Outcome::Fail, &"y".repeat(290), false))
            .collect();
        let v = GateVerdict {
            result: GateResult::Failed,
            rules,
            error: None,
        };
        let md = markdown_table(&v);
        assert!(md.chars().count() <= CHECK_RUN_TEXT_MAX_CHARS);
        let rows = md.lines().filter(|l| l.starts_with("| ❌ |")).count();
        assert!(rows > 100 && rows < 400, "{rows}");
        assert!(
            md.ends_with(&format!("\n\n… {} more rules\n", 400 - rows)),
            "{}",
            &md[md.len() - 80..]
        );
        // Every row shown is whole, and they are the first ones.
        for (i, l) in md.lines().filter(|l| l.starts_with("| ❌")).enumerate() {
            assert!(l.starts_with(&format!("| ❌ | rule\\_{i} | fail | ")) && l.ends_with(" |"));
        }
        // At the edge: a limit that fits exactly all rows keeps them all; one character less
        // drops the last row for the "… 1 more rule" line.
        let small = GateVerdict {
            result: GateResult::Failed,
            rules: (0..3)
                .map(|i| rule(&format!("r{i}"), Outcome::Pass, "ok", false))
                .collect(),
            error: None,
        };
        let full = markdown_table(&small);
        let n = full.chars().count();
        assert_eq!(markdown_table_within(&small, n), full);
        let cut = markdown_table_within(&small, n - 1);
        assert!(cut.chars().count() < n, "{cut}");
        assert!(cut.contains("more rule"), "{cut}");
        assert!(!cut.contains("| r2 |"));
    }

    #[test]
    fn text_table_aligns_and_ends_with_the_result() {
        let v = every_outcome();
        let t = text_table(&v, false);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "RULE       RESULT       REASON");
        assert_eq!(
            lines[1],
            "approvals  fail         approvals 1/2 (alice; bob's approval is on an older commit)"
        );
        assert_eq!(lines[3], "docs       skipped      skipped (if is false)");
        assert_eq!(lines.len(), 8);
        assert_eq!(lines[7], format!("result: error ({})", v.summary()));
        // Long reasons are cut without --explain, whole with it.
        let mut long = v.clone();
        long.rules[3].reason = format!("title ok {}", "z".repeat(300));
        assert!(!text_table(&long, false).contains(&"z".repeat(200)));
        assert!(text_table(&long, true).contains(&"z".repeat(300)));
        // Control characters from the gate or the PR cannot reach the terminal.
        long.rules[3].reason = "bad\u{1b}[31m red\nline".into();
        let t = text_table(&long, true);
        assert!(
            !t.contains('\u{1b}') && t.contains("bad [31m red line"),
            "{t}"
        );
    }

    #[test]
    fn explain_lists_the_parts_of_each_reason_and_what_it_means() {
        let t = text_table(&every_outcome(), true);
        assert!(
            t.contains(
                "\napprovals: fail\n  approvals 1/2\n  - alice\n  - bob's approval is on an older commit\n  failed: fails the gate"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "\nci: pending\n  e2e pending\n  - not reported\n  failed, waiting on automation"
            ),
            "{t}"
        );
        assert!(
            t.contains("\ndocs: skipped\n  skipped\n  - if is false\n  skipped: its `if` is false"),
            "{t}"
        );
        assert!(t.contains("\nwasm: unsupported\n"), "{t}");
        assert!(
            t.ends_with(&format!(
                "\n\nresult: error ({})\n",
                every_outcome().summary()
            )),
            "{t}"
        );
    }

    #[test]
    fn reasons_split_only_at_their_last_group() {
        assert_eq!(
            reason_parts("2 possible secrets (a.env:3 (aws-access-key-id), b.rs:9 (jwt))"),
            (
                "2 possible secrets",
                vec!["a.env:3 (aws-access-key-id)", "b.rs:9 (jwt)"]
            )
        );
        // A list whose items carry their own parentheses is not one group.
        let list = "a pending (not reported), b pending (not reported)";
        assert_eq!(reason_parts(list), (list, vec![]));
        assert_eq!(reason_parts("labels ok"), ("labels ok", vec![]));
        assert_eq!(
            reason_parts("approvals 2/2 (alice, bob)"),
            ("approvals 2/2", vec!["alice", "bob"])
        );
        assert_eq!(reason_parts("odd (unclosed"), ("odd (unclosed", vec![]));
    }

    #[test]
    fn no_rendering_echoes_a_secret() {
        const KEY: &str = "AKIAFAKEFAKEFAKEFAKE";
        let spec: PolicyGateSpec = serde_yaml::from_str(
            "repositoryRef: {name: web}\nrules:\n- name: no_secrets\n  secretScan: {}\n- name: small\n  maxFiles: {max: 10}\n",
        )
        .unwrap();
        let pr = PrSnapshot {
            number: 1,
            title: "add config".into(),
            author: "dev".into(),
            head_sha: "h".into(),
            files: vec![SnapshotFile {
                diff_withheld: false,
                path: "deploy/prod.env".into(),
                previous_path: None,
                status: FileStatus::Added,
                additions: 2,
                deletions: 0,
                added_lines: Some(vec![
                    AddedLine {
                        line: 1,
                        text: "REGION=eu-west-1".into(),
                    },
                    AddedLine {
                        line: 2,
                        text: format!("AWS_ACCESS_KEY_ID={KEY}"),
                    },
                ]),
            }],
            ..PrSnapshot::default()
        };
        let v = evaluate(&spec, &pr);
        assert_eq!(v.rules[0].outcome, Outcome::Fail, "{}", v.rules[0].reason);
        let outputs = [
            markdown_table(&v),
            check_run_title(&v),
            text_table(&v, false),
            text_table(&v, true),
        ];
        for out in &outputs {
            assert!(!out.contains(KEY), "{out}");
            assert!(!out.contains("FAKEFAKE"), "{out}");
        }
        assert!(
            outputs[0].contains("deploy/prod.env:2 (aws-access-key-id)"),
            "{}",
            outputs[0]
        );
        assert!(
            outputs[3].contains("  - deploy/prod.env:2 (aws-access-key-id)\n"),
            "{}",
            outputs[3]
        );
    }
}
