//! `crds/` is generated from the Rust types; this fails when the two drift apart.

use pullwarden::api::{all_crds, crd_files};
use std::path::PathBuf;

fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

#[test]
fn crds_directory_matches_the_types() {
    let dir = crds_dir();
    let mut expected = Vec::new();
    for (name, content) in crd_files() {
        let path = dir.join(&name);
        let on_disk = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e}; run `just crds`", path.display()));
        assert!(
            on_disk == content,
            "{} is out of date with operator/src/api; run `just crds` and commit the result",
            path.display()
        );
        expected.push(name);
    }
    let mut actual: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    actual.sort();
    expected.sort();
    assert_eq!(
        actual, expected,
        "crds/ holds files that the types do not generate"
    );
}

#[test]
fn every_kind_has_the_shared_names_and_subresources() {
    for crd in all_crds() {
        let names = &crd.spec.names;
        assert_eq!(
            names.categories.as_deref(),
            Some(&["pullwarden".to_string()][..]),
            "{}",
            names.kind
        );
        let short = names.short_names.clone().unwrap_or_default();
        assert!(!short.is_empty(), "{} has no short name", names.kind);
        // Kuberhealthy owns `hc`/`healthcheck`, Tekton Pipelines-as-Code owns `repo`, core owns `pv`.
        for forbidden in ["hc", "healthcheck", "repo", "pv", "pr"] {
            assert!(
                !short.iter().any(|s| s == forbidden),
                "{} uses short name {forbidden}",
                names.kind
            );
        }
        assert_eq!(crd.spec.scope, "Namespaced");
        let version = &crd.spec.versions[0];
        assert!(
            version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some(),
            "{}",
            names.kind
        );
        assert!(
            version
                .additional_printer_columns
                .as_ref()
                .is_some_and(|c| c.len() >= 3),
            "{}",
            names.kind
        );
    }
}
