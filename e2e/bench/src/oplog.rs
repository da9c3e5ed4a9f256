//! What the operator says it did, counted from its own log (run with `--log-format json` and
//! `RUST_LOG=pullwarden=debug`): renders, deploys, confinements, Repository syncs, webhooks.
//!
//! The operator's log messages are not an interface; [`COUNTERS`] is the one place that names
//! the messages a benchmark relies on. When the operator renames a message, update the table
//! (a counter that stays 0 for a whole run is the sign).

use std::collections::BTreeMap;

use jiff::Timestamp;
use serde_json::Value;

/// Which lines of a message count for a subject.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subject {
    /// Lines whose `preview` field is the PreviewEnvironment of the iteration.
    Preview,
    /// Lines whose `repository` field is the benchmark's Repository.
    Repository,
    /// Every line with the message.
    Any,
}

/// One counter: lines whose `message` is exactly `message`.
#[derive(Clone, Copy, Debug)]
pub struct Counter {
    pub name: &'static str,
    pub message: &'static str,
    pub subject: Subject,
}

/// The counted messages (of `operator/src/controller/preview/mod.rs`,
/// `controller/repository/mod.rs` and `webhook/handler.rs` as of issue 10's driver over a pure plan).
pub const COUNTERS: &[Counter] = &[
    // A preview reconcile that reached a final step of its plan.
    Counter {
        name: "reconciles",
        message: "planned",
        subject: Subject::Preview,
    },
    // A revision (head SHA × generation) rendered and applied.
    Counter {
        name: "deploys",
        message: "applied",
        subject: Subject::Preview,
    },
    Counter {
        name: "renders",
        message: "rendered",
        subject: Subject::Preview,
    },
    Counter {
        name: "confinements",
        message: "namespace confined",
        subject: Subject::Preview,
    },
    Counter {
        name: "ready",
        message: "preview ready",
        subject: Subject::Preview,
    },
    Counter {
        name: "torn_down",
        message: "preview torn down",
        subject: Subject::Preview,
    },
    Counter {
        name: "repository_syncs_changed",
        message: "repository changed",
        subject: Subject::Repository,
    },
    Counter {
        name: "repository_syncs_unchanged",
        message: "repository unchanged",
        subject: Subject::Repository,
    },
    Counter {
        name: "webhooks_accepted",
        message: "webhook accepted",
        subject: Subject::Any,
    },
    Counter {
        name: "webhooks_ignored",
        message: "webhook ignored",
        subject: Subject::Any,
    },
];

/// One JSON log line, the fields the counters look at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Line {
    pub at: Timestamp,
    pub message: String,
    pub preview: Option<String>,
    pub repository: Option<String>,
}

/// Parses the operator's JSON log (`tracing` with flattened fields); other lines are skipped.
pub fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| {
            let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            Some(Line {
                at: field("timestamp")?.parse().ok()?,
                message: field("message")?,
                preview: field("preview"),
                repository: field("repository"),
            })
        })
        .collect()
}

/// Counts per [`COUNTERS`] name (every counter present, 0 when none matched) of `lines` about
/// `preview` and `repository`.
pub fn count<'a>(
    lines: impl IntoIterator<Item = &'a Line>,
    preview: &str,
    repository: &str,
) -> BTreeMap<&'static str, u64> {
    let mut out: BTreeMap<&'static str, u64> = COUNTERS.iter().map(|c| (c.name, 0)).collect();
    for line in lines {
        for c in COUNTERS.iter().filter(|c| c.message == line.message) {
            let about = match c.subject {
                Subject::Preview => line.preview.as_deref() == Some(preview),
                Subject::Repository => line.repository.as_deref() == Some(repository),
                Subject::Any => true,
            };
            if about {
                *out.entry(c.name).or_default() += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_messages_about_the_subject() {
        let log = r#"{"timestamp":"2026-12-02T11:40:01.000001Z","level":"DEBUG","message":"rendered","preview":"t-pr-1","objects":10,"target":"pullwarden::controller::preview"}
{"timestamp":"2026-12-02T11:40:02.000001Z","level":"DEBUG","message":"rendered","preview":"t-pr-2","objects":10}
{"timestamp":"2026-12-02T11:40:03.000001Z","level":"INFO","message":"repository changed","repository":"t","namespace":"t","prs":1}
{"timestamp":"2026-12-02T11:40:03.500001Z","level":"INFO","message":"webhook accepted","forge":"github"}
2026-12-02T11:40:04Z  INFO a text line is skipped
{"timestamp":"2026-12-02T11:40:04.000001Z","level":"DEBUG","message":"rendered","preview":"t-pr-1"}"#;
        let lines = parse(log);
        assert_eq!(lines.len(), 5);
        let c = count(&lines, "t-pr-1", "t");
        assert_eq!(c["renders"], 2);
        assert_eq!(c["repository_syncs_changed"], 1);
        assert_eq!(c["webhooks_accepted"], 1);
        assert_eq!(c["deploys"], 0);
        assert_eq!(c.len(), COUNTERS.len());
        let after: Timestamp = "2026-12-02T11:40:03Z".parse().unwrap();
        let late = count(lines.iter().filter(|l| l.at >= after), "t-pr-1", "t");
        assert_eq!(late["renders"], 1);
    }
}
