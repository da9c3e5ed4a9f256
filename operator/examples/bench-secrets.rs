//! Benchmark of the `secretScan` rule's patterns (issue 12 item 4), printed as JSON:
//!
//! - **False positives**: every line of up to `--max-files` real Rust source files (default: the
//!   crates in the local cargo registry, `~/.cargo/registry/src`) is scanned as if a pull request
//!   had added it. Crates ship test credentials on purpose (PEM samples, JWTs in tests), so every
//!   finding is listed by pattern with its file and line — never the matched text — for a human
//!   to classify; the rate reported is an upper bound.
//! - **Detection**: `--fakes` format-correct fake credentials per built-in pattern family
//!   (random, never valid), each embedded in a realistic added line; the share found per family.
//!
//! Run: `just bench-secrets` (`cargo run --release -p pullwarden --example bench-secrets`).

use pullwarden::gate::secrets::SecretScanner;
use pullwarden::gate::snapshot::AddedLine;
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

const BASE32: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
const BASE64: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

fn from(rng: &mut impl Rng, alphabet: &[u8], n: usize) -> String {
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())] as char)
        .collect()
}

fn digits(rng: &mut impl Rng, n: usize) -> String {
    from(rng, b"0123456789", n)
}

/// One fake credential of `family`, as the line (or lines) a pull request would add.
fn fake(rng: &mut impl Rng, family: &str) -> Vec<String> {
    match family {
        "aws-access-key-id" => vec![format!(
            "    let key_id = \"AKIA{}\";",
            from(rng, BASE32, 16)
        )],
        "aws-secret-access-key" => vec![format!(
            "aws_secret_access_key = {}",
            from(rng, BASE64, 40)
        )],
        "gcp-service-account-key" => vec![
            "  \"private_key\": \"-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n\","
                .to_string(),
        ],
        "azure-storage-key" => vec![format!(
            "STORAGE=DefaultEndpointsProtocol=https;AccountName=acme;AccountKey={}==;EndpointSuffix=core.windows.net",
            from(rng, BASE64, 86)
        )],
        "azure-shared-access-key" => vec![format!(
            "BUS=Endpoint=sb://acme.servicebus.windows.net/;SharedAccessKeyName=send;SharedAccessKey={}=",
            from(rng, BASE64, 43)
        )],
        "github-token" => {
            let prefix = ["ghp_", "gho_", "ghu_", "ghs_", "ghr_"][rng.random_range(0..5)];
            vec![format!("GITHUB_TOKEN={prefix}{}", from(rng, ALNUM, 36))]
        }
        "github-fine-grained-token" => vec![format!(
            "token: github_pat_{}",
            from(rng, ALNUM, 82)
        )],
        "gitlab-token" => vec![format!(
            "    headers.insert(\"PRIVATE-TOKEN\", \"glpat-{}\");",
            from(rng, ALNUM, 20)
        )],
        "slack-token" => vec![format!(
            "slack_bot = \"xoxb-{}-{}-{}\"",
            digits(rng, 12),
            digits(rng, 13),
            from(rng, ALNUM, 24)
        )],
        "slack-webhook" => vec![format!(
            "url = \"https://hooks.slack.com/services/T{}/B{}/{}\"",
            from(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 9),
            from(rng, b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 9),
            from(rng, ALNUM, 24)
        )],
        "stripe-live-key" => vec![format!(
            "const STRIPE: &str = \"sk_live_{}\";",
            from(rng, ALNUM, 24)
        )],
        "private-key" => vec![
            "-----BEGIN RSA PRIVATE KEY-----".to_string(),
            from(rng, BASE64, 64),
        ],
        "jwt" => vec![format!(
            "Authorization: Bearer eyJ{}.eyJ{}.{}",
            from(rng, BASE64URL, 20),
            from(rng, BASE64URL, 40),
            from(rng, BASE64URL, 43)
        )],
        "generic-secret-assignment" => {
            let value: String = rng
                .sample_iter(&Alphanumeric)
                .take(24)
                .map(char::from)
                .collect();
            // Guarantee a letter and a digit, as real generated secrets have.
            vec![format!("    db_password: \"{value}7q\"")]
        }
        other => panic!("no generator for {other}"),
    }
}

/// The pattern a family's fakes must be reported as.
fn expected_pattern(family: &str) -> &str {
    match family {
        "github-fine-grained-token" => "github-token",
        other => other,
    }
}

const FAMILIES: &[&str] = &[
    "aws-access-key-id",
    "aws-secret-access-key",
    "gcp-service-account-key",
    "azure-storage-key",
    "azure-shared-access-key",
    "github-token",
    "github-fine-grained-token",
    "gitlab-token",
    "slack-token",
    "slack-webhook",
    "stripe-live-key",
    "private-key",
    "jwt",
    "generic-secret-assignment",
];

fn rust_files(root: &Path, max: usize, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if out.len() >= max {
            return;
        }
        if p.is_dir() {
            rust_files(&p, max, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let max_files: usize = arg("--max-files")
        .map(|v| v.parse().expect("--max-files N"))
        .unwrap_or(20_000);
    let fakes: usize = arg("--fakes")
        .map(|v| v.parse().expect("--fakes N"))
        .unwrap_or(1_000);
    let root = arg("--source").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cargo/registry/src")
    });
    let scanner = SecretScanner::new(&[]).expect("built-in patterns compile");

    // False positives on real source.
    let mut files = Vec::new();
    rust_files(&root, max_files, &mut files);
    let started = Instant::now();
    let mut lines_scanned = 0usize;
    let mut bytes_scanned = 0usize;
    let mut files_with_findings = 0usize;
    let mut by_pattern: BTreeMap<String, usize> = BTreeMap::new();
    let mut listed: Vec<Value> = Vec::new();
    for f in &files {
        let Ok(text) = std::fs::read_to_string(f) else {
            continue;
        };
        bytes_scanned += text.len();
        let added: Vec<AddedLine> = text
            .lines()
            .enumerate()
            .map(|(i, l)| AddedLine {
                line: u32::try_from(i + 1).unwrap_or(u32::MAX),
                text: l.to_string(),
            })
            .collect();
        lines_scanned += added.len();
        let rel = f.strip_prefix(&root).unwrap_or(f).display().to_string();
        let found = scanner.scan_file(&rel, &added);
        if !found.is_empty() {
            files_with_findings += 1;
        }
        for finding in found {
            *by_pattern.entry(finding.pattern.clone()).or_default() += 1;
            if listed.len() < 200 {
                listed.push(
                    json!({"file": finding.path, "line": finding.line, "pattern": finding.pattern}),
                );
            }
        }
    }
    let scan_seconds = started.elapsed().as_secs_f64();
    let findings: usize = by_pattern.values().sum();

    // Detection on generated fakes.
    let mut rng = rand::rng();
    let mut detection = Map::new();
    let mut found_total = 0usize;
    for family in FAMILIES {
        let mut found = 0usize;
        for _ in 0..fakes {
            let added: Vec<AddedLine> = fake(&mut rng, family)
                .into_iter()
                .enumerate()
                .map(|(i, text)| AddedLine {
                    line: u32::try_from(i + 1).unwrap_or(u32::MAX),
                    text,
                })
                .collect();
            let hits = scanner.scan_file("fake.txt", &added);
            if hits.iter().any(|h| h.pattern == expected_pattern(family)) {
                found += 1;
            }
        }
        found_total += found;
        detection.insert(
            (*family).to_string(),
            json!({"generated": fakes, "found": found, "rate": found as f64 / fakes as f64}),
        );
    }
    let generated = fakes * FAMILIES.len();

    let out = json!({
        "false_positives": {
            "source": root.display().to_string(),
            "files": files.len(),
            "lines": lines_scanned,
            "bytes": bytes_scanned,
            "files_with_findings": files_with_findings,
            "file_rate": files_with_findings as f64 / files.len().max(1) as f64,
            "findings": findings,
            "findings_per_million_lines": findings as f64 * 1e6 / lines_scanned.max(1) as f64,
            "by_pattern": by_pattern,
            "findings_listed": listed,
            "scan_seconds": scan_seconds,
            "lines_per_second": lines_scanned as f64 / scan_seconds.max(1e-9),
        },
        "detection": {
            "generated": generated,
            "found": found_total,
            "rate": found_total as f64 / generated.max(1) as f64,
            "by_family": detection,
        },
    });
    println!("{}", serde_json::to_string_pretty(&out).expect("JSON"));
}
