//! Compile-time checks of a PolicyGate's rules: every regular expression and glob compiles, the
//! expression parses and references only defined rules.

use super::Expr;
use crate::api::{GateRule, PolicyGateSpec};
use globset::GlobBuilder;
use std::collections::BTreeSet;

fn check_regex(rule: &str, field: &str, pattern: &str) -> Result<(), String> {
    regex::Regex::new(pattern)
        .map(|_| ())
        .map_err(|e| format!("rule {rule}: {field}: invalid regular expression: {e}"))
}

fn check_globs(rule: &str, field: &str, globs: &[String]) -> Result<(), String> {
    for g in globs {
        GlobBuilder::new(g)
            .literal_separator(true)
            .build()
            .map_err(|e| format!("rule {rule}: {field}: invalid glob {g:?}: {e}"))?;
    }
    Ok(())
}

fn check_rule(rule: &GateRule) -> Result<(), String> {
    let n = &rule.name;
    if let Some(files) = &rule.changed_files {
        check_globs(n, "changedFiles.paths", &files.paths)?;
        check_globs(n, "changedFiles.ignore", &files.ignore)?;
    }
    if let Some(b) = &rule.branches {
        check_globs(n, "branches.source", &b.source)?;
        check_globs(n, "branches.target", &b.target)?;
    }
    if let Some(t) = &rule.title {
        if let Some(p) = &t.matches {
            check_regex(n, "title.matches", p)?;
        }
        if let Some(p) = &t.not_matches {
            check_regex(n, "title.notMatches", p)?;
        }
    }
    if let Some(l) = &rule.linked_issue {
        check_regex(n, "linkedIssue.pattern", &l.pattern)?;
    }
    if let Some(s) = &rule.secret_scan {
        for p in &s.extra_patterns {
            check_regex(
                n,
                &format!("secretScan.extraPatterns[{}]", p.name),
                &p.regex,
            )?;
        }
    }
    Ok(())
}

/// Validates a gate spec; returns the plugin names its rules reference (to be dereferenced).
pub fn validate_gate(spec: &PolicyGateSpec) -> Result<Vec<String>, String> {
    for rule in &spec.rules {
        check_rule(rule)?;
    }
    let names: BTreeSet<&str> = spec.rules.iter().map(|r| r.name.as_str()).collect();
    if let Some(expr) = &spec.expression {
        let parsed = Expr::parse(expr).map_err(|e| format!("expression: {e}"))?;
        if let Some(unknown) = parsed.rule_names().into_iter().find(|n| !names.contains(n)) {
            return Err(format!(
                "expression references rule {unknown:?}, which is not defined"
            ));
        }
    }
    Ok(spec
        .rules
        .iter()
        .filter_map(|r| r.plugin.as_ref().map(|p| p.ref_.name.clone()))
        .collect())
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
                .contains("title.matches")
        );
        let bad_glob =
            gate("repositoryRef: {name: w}\nrules:\n- name: f\n  changedFiles: {paths: ['[']}");
        assert!(
            validate_gate(&bad_glob)
                .unwrap_err()
                .contains("changedFiles.paths")
        );
        let unknown = gate(
            "repositoryRef: {name: w}\nrules:\n- name: a\n  labels: {require: [x]}\nexpression: a && b",
        );
        assert!(validate_gate(&unknown).unwrap_err().contains("\"b\""));
    }
}
