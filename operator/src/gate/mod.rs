//! PolicyGate rule logic, pure (no I/O, no kube, no forge calls):
//! - [`snapshot`]: [`PrSnapshot`], everything a gate needs about one PR at one head SHA;
//! - [`validate`]: compiling a gate (regexes, globs, CEL, secret patterns, the expression) —
//!   validation when the PolicyGate is applied and the input of evaluation;
//! - [`evaluate`]: per-rule verdicts, their combination and the commit-status summary;
//! - [`report`]: the verdict for people — check-run title, Markdown table, terminal table;
//! - [`expression`]: the rule-combining expression (`a && (b || !c)`);
//! - [`cel`]: `cel` rules and `if` scopes (typed `pr` variable, compile checks, cost limit);
//! - [`secrets`]: the credential patterns of `secretScan`;
//! - [`offline`]: `pullwarden gate test` — a gate manifest and a PR file (snapshot or the
//!   forge's own JSON) in, the printed verdict and exit code out.

pub mod cel;
pub mod evaluate;
pub mod expression;
pub mod offline;
pub mod report;
pub mod secrets;
pub mod snapshot;
pub mod validate;

#[cfg(test)]
mod tests;

pub use evaluate::{GateResult, GateVerdict, Outcome, RuleVerdict, evaluate};
pub use expression::Expr;
pub use report::{check_run_title, markdown_table, text_table};
pub use snapshot::{AddedLine, PrSnapshot, PreviewState, SnapshotFile};
pub use validate::{CompiledGate, SpecError, validate_gate};
