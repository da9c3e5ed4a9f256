//! Compile-time checks of a PolicyGate, which are also its compilation: every rule has exactly
//! one kind, every regular expression and glob compiles, every `if` and `cel` expression parses
//! and passes the CEL checks of [`super::cel`], the secret patterns compile, and the gate
//! expression parses and references only defined rules. [`CompiledGate`] is what
//! [`super::evaluate`] runs, so a gate that validates is exactly a gate that can be evaluated.
//!
//! A failure is a [`SpecError`] whose `reason` tells the controller which condition reason to
//! report: `InvalidExpression` for CEL and gate-expression errors (with the position), else
//! `InvalidSpec`.

use std::fmt;

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};
use regex::Regex;

use super::Expr;
use super::cel::CelProgram;
use super::secrets::SecretScanner;
use crate::api::{ApprovalsRule, DisapprovalRule, GateRule, LabelsRule, PolicyGateSpec};
use std::collections::BTreeSet;

/// Condition reason for an expression (CEL or the gate's `expression`) that does not compile.
pub const REASON_INVALID_EXPRESSION: &str = "InvalidExpression";
/// Condition reason for any other invalid rule.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";

/// Why a gate does not compile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    /// [`REASON_INVALID_EXPRESSION`] or [`REASON_INVALID_SPEC`].
    pub reason: &'static str,
    pub message: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SpecError {}

impl SpecError {
    fn spec(message: String) -> Self {
        SpecError {
            reason: REASON_INVALID_SPEC,
            message,
        }
    }
    fn expression(message: String) -> Self {
        SpecError {
            reason: REASON_INVALID_EXPRESSION,
            message,
        }
    }
}

/// Globs compiled together, with their source for messages.
#[derive(Clone, Debug)]
pub struct Globs {
    pub set: GlobSet,
    pub source: Vec<String>,
}

impl Globs {
    pub fn is_match(&self, path: &str) -> bool {
        self.set.is_match(path)
    }
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }
}

/// One rule kind, compiled.
#[derive(Debug)]
pub enum RuleKind {
    Approvals(ApprovalsRule),
    Disapproval(DisapprovalRule),
    ChangedFiles {
        paths: Globs,
        ignore: Globs,
    },
    ModifiedLines(u32),
    MaxFiles(u32),
    Branches {
        source: Globs,
        target: Globs,
    },
    Labels(LabelsRule),
    Title {
        matches: Option<Regex>,
        not_matches: Option<Regex>,
    },
    LinkedIssue(Regex),
    SignedCommits,
    Checks(Vec<String>),
    SecretScan(Box<SecretScanner>),
    PreviewHealthy,
    Cel {
        program: CelProgram,
        message: Option<String>,
    },
    Plugin(String),
}

/// One rule, compiled.
#[derive(Debug)]
pub struct CompiledRule {
    pub name: String,
    /// The `if` scope.
    pub scope: Option<CelProgram>,
    pub kind: RuleKind,
}

/// A whole gate, compiled.
#[derive(Debug)]
pub struct CompiledGate {
    pub rules: Vec<CompiledRule>,
    /// The parsed `expression`; `None`: every rule must pass.
    pub expression: Option<Expr>,
}

fn regex(rule: &str, field: &str, pattern: &str) -> Result<Regex, SpecError> {
    Regex::new(pattern).map_err(|e| {
        SpecError::spec(format!(
            "rule {rule}: {field}: invalid regular expression: {e}"
        ))
    })
}

fn globs(rule: &str, field: &str, globs: &[String]) -> Result<Globs, SpecError> {
    let mut set = GlobSetBuilder::new();
    for g in globs {
        set.add(
            GlobBuilder::new(g)
                .literal_separator(true)
                .build()
                .map_err(|e| {
                    SpecError::spec(format!("rule {rule}: {field}: invalid glob {g:?}: {e}"))
                })?,
        );
    }
    Ok(Globs {
        set: set
            .build()
            .map_err(|e| SpecError::spec(format!("rule {rule}: {field}: {e}")))?,
        source: globs.to_vec(),
    })
}

fn cel(rule: &str, field: &str, source: &str) -> Result<CelProgram, SpecError> {
    CelProgram::compile(source)
        .map_err(|e| SpecError::expression(format!("rule {rule}: {field}: {e}")))
}

fn kinds_set(rule: &GateRule) -> Vec<&'static str> {
    [
        ("approvals", rule.approvals.is_some()),
        ("disapproval", rule.disapproval.is_some()),
        ("changedFiles", rule.changed_files.is_some()),
        ("modifiedLines", rule.modified_lines.is_some()),
        ("maxFiles", rule.max_files.is_some()),
        ("branches", rule.branches.is_some()),
        ("labels", rule.labels.is_some()),
        ("title", rule.title.is_some()),
        ("linkedIssue", rule.linked_issue.is_some()),
        ("signedCommits", rule.signed_commits.is_some()),
        ("checks", rule.checks.is_some()),
        ("secretScan", rule.secret_scan.is_some()),
        ("previewHealthy", rule.preview_healthy.is_some()),
        ("cel", rule.cel.is_some()),
        ("plugin", rule.plugin.is_some()),
    ]
    .into_iter()
    .filter_map(|(k, set)| set.then_some(k))
    .collect()
}

impl CompiledRule {
    /// Compiles one rule.
    pub fn compile(rule: &GateRule) -> Result<Self, SpecError> {
        let n = &rule.name;
        let kinds = kinds_set(rule);
        if kinds.len() != 1 {
            return Err(SpecError::spec(format!(
                "rule {n}: needs exactly one rule kind, has {}",
                if kinds.is_empty() {
                    "none".to_string()
                } else {
                    kinds.join(", ")
                }
            )));
        }
        let scope = rule.if_.as_deref().map(|s| cel(n, "if", s)).transpose()?;
        let kind = if let Some(a) = &rule.approvals {
            RuleKind::Approvals(a.clone())
        } else if let Some(d) = &rule.disapproval {
            if d.users.is_empty() && d.teams.is_empty() {
                return Err(SpecError::spec(format!(
                    "rule {n}: disapproval needs users or teams"
                )));
            }
            RuleKind::Disapproval(d.clone())
        } else if let Some(f) = &rule.changed_files {
            RuleKind::ChangedFiles {
                paths: globs(n, "changedFiles.paths", &f.paths)?,
                ignore: globs(n, "changedFiles.ignore", &f.ignore)?,
            }
        } else if let Some(m) = &rule.modified_lines {
            RuleKind::ModifiedLines(m.max)
        } else if let Some(m) = &rule.max_files {
            RuleKind::MaxFiles(m.max)
        } else if let Some(b) = &rule.branches {
            RuleKind::Branches {
                source: globs(n, "branches.source", &b.source)?,
                target: globs(n, "branches.target", &b.target)?,
            }
        } else if let Some(l) = &rule.labels {
            RuleKind::Labels(l.clone())
        } else if let Some(t) = &rule.title {
            RuleKind::Title {
                matches: t
                    .matches
                    .as_deref()
                    .map(|p| regex(n, "title.matches", p))
                    .transpose()?,
                not_matches: t
                    .not_matches
                    .as_deref()
                    .map(|p| regex(n, "title.notMatches", p))
                    .transpose()?,
            }
        } else if let Some(l) = &rule.linked_issue {
            RuleKind::LinkedIssue(regex(n, "linkedIssue.pattern", &l.pattern)?)
        } else if rule.signed_commits.is_some() {
            RuleKind::SignedCommits
        } else if let Some(c) = &rule.checks {
            RuleKind::Checks(c.require.clone())
        } else if let Some(s) = &rule.secret_scan {
            RuleKind::SecretScan(Box::new(
                SecretScanner::new(&s.extra_patterns)
                    .map_err(|e| SpecError::spec(format!("rule {n}: secretScan: {e}")))?,
            ))
        } else if rule.preview_healthy.is_some() {
            RuleKind::PreviewHealthy
        } else if let Some(c) = &rule.cel {
            RuleKind::Cel {
                program: cel(n, "cel.expression", &c.expression)?,
                message: c.message.clone(),
            }
        } else if let Some(p) = &rule.plugin {
            RuleKind::Plugin(p.ref_.name.clone())
        } else {
            unreachable!("exactly one kind is set")
        };
        Ok(CompiledRule {
            name: n.clone(),
            scope,
            kind,
        })
    }
}

/// Parses the gate expression and checks it names only `names`.
pub fn compile_expression(expr: &str, names: &BTreeSet<&str>) -> Result<Expr, SpecError> {
    let parsed =
        Expr::parse(expr).map_err(|e| SpecError::expression(format!("expression: {e}")))?;
    if let Some(unknown) = parsed.rule_names().into_iter().find(|n| !names.contains(n)) {
        return Err(SpecError::expression(format!(
            "expression references rule {unknown:?}, which is not defined"
        )));
    }
    Ok(parsed)
}

impl CompiledGate {
    /// Compiles every rule and the expression; the first error wins.
    pub fn compile(spec: &PolicyGateSpec) -> Result<Self, SpecError> {
        let mut seen = BTreeSet::new();
        for r in &spec.rules {
            if !seen.insert(r.name.as_str()) {
                return Err(SpecError::spec(format!(
                    "rule name {:?} is used twice",
                    r.name
                )));
            }
        }
        let rules = spec
            .rules
            .iter()
            .map(CompiledRule::compile)
            .collect::<Result<Vec<_>, _>>()?;
        let expression = spec
            .expression
            .as_deref()
            .map(|e| compile_expression(e, &seen))
            .transpose()?;
        Ok(CompiledGate { rules, expression })
    }

    /// The Plugins the rules reference (to be dereferenced by the controller).
    pub fn plugins(&self) -> Vec<String> {
        self.rules
            .iter()
            .filter_map(|r| match &r.kind {
                RuleKind::Plugin(p) => Some(p.clone()),
                _ => None,
            })
            .collect()
    }
}

/// Validates a gate spec; returns the plugin names its rules reference (to be dereferenced).
/// [`CompiledGate::compile`] gives the same verdict with the condition reason.
pub fn validate_gate(spec: &PolicyGateSpec) -> Result<Vec<String>, SpecError> {
    CompiledGate::compile(spec).map(|g| g.plugins())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(yaml: &str) -> PolicyGateSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn accepts_a_valid_gate_and_lists_plugins() {
        let g = gate(
            "repositoryRef: {name: web}\nrules:\n- name: approvals\n  approvals: {count: 2}\n- name: docs_only\n  changedFiles: {paths: ['docs/**']}\n- name: wasm\n  plugin: {ref: {name: license-check}}\nexpression: approvals && (docs_only || wasm)",
        );
        assert_eq!(
            validate_gate(&g).unwrap(),
            vec!["license-check".to_string()]
        );
    }

    #[test]
    fn refuses_bad_regexes_globs_and_unknown_rules() {
        let bad_regex =
            gate("repositoryRef: {name: w}\nrules:\n- name: t\n  title: {matches: '('}");
        assert!(
            validate_gate(&bad_regex)
                .unwrap_err()
                .message
                .contains("title.matches")
        );
        let bad_glob =
            gate("repositoryRef: {name: w}\nrules:\n- name: f\n  changedFiles: {paths: ['[']}");
        assert!(
            validate_gate(&bad_glob)
                .unwrap_err()
                .message
                .contains("changedFiles.paths")
        );
        let unknown = gate(
            "repositoryRef: {name: w}\nrules:\n- name: a\n  labels: {require: [x]}\nexpression: a && b",
        );
        let e = CompiledGate::compile(&unknown).unwrap_err();
        assert!(e.message.contains("\"b\""));
        assert_eq!(e.reason, REASON_INVALID_EXPRESSION);
        let bad_extra = gate(
            "repositoryRef: {name: w}\nrules:\n- name: s\n  secretScan: {extraPatterns: [{name: k, regex: '['}]}",
        );
        assert!(
            validate_gate(&bad_extra)
                .unwrap_err()
                .message
                .contains("\"k\"")
        );
    }

    #[test]
    fn cel_and_if_are_compiled_when_the_gate_is_applied() {
        let bad_cel =
            gate("repositoryRef: {name: w}\nrules:\n- name: c\n  cel: {expression: 'pr.title =='}");
        let e = CompiledGate::compile(&bad_cel).unwrap_err();
        assert_eq!(e.reason, REASON_INVALID_EXPRESSION);
        assert!(
            e.message
                .starts_with("rule c: cel.expression: line 1, column"),
            "{e}"
        );
        let bad_if = gate(
            "repositoryRef: {name: w}\nrules:\n- name: a\n  if: pr.lables.size() > 0\n  approvals: {count: 1}",
        );
        let e = CompiledGate::compile(&bad_if).unwrap_err();
        assert!(
            e.message.contains("rule a: if:") && e.message.contains("lables"),
            "{e}"
        );
        assert_eq!(e.reason, REASON_INVALID_EXPRESSION);
        let ok = gate(
            "repositoryRef: {name: w}\nrules:\n- name: a\n  if: \"pr.target == 'main'\"\n  cel: {expression: 'pr.files.all(f, f.additions < 500)'}",
        );
        CompiledGate::compile(&ok).unwrap();
    }

    #[test]
    fn refuses_rules_without_exactly_one_kind() {
        let none = gate("repositoryRef: {name: w}\nrules:\n- name: a");
        assert!(
            validate_gate(&none)
                .unwrap_err()
                .message
                .contains("has none")
        );
        let two = gate(
            "repositoryRef: {name: w}\nrules:\n- name: a\n  maxFiles: {max: 1}\n  signedCommits: {}",
        );
        assert!(
            validate_gate(&two)
                .unwrap_err()
                .message
                .contains("maxFiles, signedCommits")
        );
        let dup = gate(
            "repositoryRef: {name: w}\nrules:\n- name: a\n  maxFiles: {max: 1}\n- name: a\n  signedCommits: {}",
        );
        assert!(
            validate_gate(&dup)
                .unwrap_err()
                .message
                .contains("used twice")
        );
    }
}
