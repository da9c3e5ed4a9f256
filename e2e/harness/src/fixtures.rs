//! Test data shared by the end-to-end suite, the benchmarks and the demo.

use crate::cluster::repo_root;
use std::collections::BTreeMap;

/// The realistic ten-object preview app (`operator/tests/fixtures/preview/app`) as a push's file
/// map, under `prefix` (e.g. `deploy/preview`). It needs `template.vars.image`.
pub fn preview_app(prefix: &str) -> std::io::Result<BTreeMap<String, Option<String>>> {
    let dir = repo_root().join("operator/tests/fixtures/preview/app");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            let name = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            out.insert(
                format!("{prefix}/{name}"),
                Some(std::fs::read_to_string(&path)?),
            );
        }
    }
    Ok(out)
}
