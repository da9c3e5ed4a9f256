//! `bench-gate`: what evaluating a PolicyGate costs the operator's CPU, in process, no I/O.
//!
//! A generated 200-file pull request (seeded: every run sees the same PR): each file a unified
//! diff with about 20 added lines of ordinary code, parsed by the operator's own patch parser;
//! a few reviews, commits and checks. A gate of 13 rules, one of every kind the evaluator runs
//! locally — the cheap ones (`branches`, `labels`, `title`, `maxFiles`, …) and the expensive ones
//! (`changedFiles` globs over every path, `secretScan` over every added line, `cel` with an `if`
//! and a comprehension over every file) — all of which pass, so every rule does all its work.
//!
//! Measured: compile time of the gate (`CompiledGate::compile`: regexes, globs, the secret
//! pattern set, CEL), then `CompiledGate::evaluate` back to back for `--seconds` (evaluations per
//! second, p50/p99 per evaluation), then each rule alone (p50) so the cost can be attributed, and
//! a `cel: {expression: 'true'}` rule alone: the fixed cost of evaluating any CEL on this PR.
//! One thread; times are wall-clock on a shared machine: read them with the `machine` block.
//!
//! Not measured here: forge requests per evaluation (cold, and after a review event). That half
//! needs the controller gathering snapshots through the forge budget and is added with it; this
//! binary prints no request numbers.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::Parser;
use jiff::Timestamp;
use pullwarden::api::PolicyGateSpec;
use pullwarden::forge::{
    ChangedFile, CheckResult, CheckSource, CheckState, Commit, FileStatus, Review, ReviewState,
};
use pullwarden::gate::{CompiledGate, GateResult, Outcome, PrSnapshot, SnapshotFile};
use pullwarden_bench::procfs;
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde_json::{Value, json};

#[derive(Debug, Parser)]
#[command(
    name = "bench-gate",
    about = "PolicyGate evaluation cost: a 200-file pull request, 13 rules"
)]
struct Args {
    /// Changed files in the generated pull request.
    #[arg(long, default_value_t = 200)]
    files: usize,
    /// Added lines per file (about; ±25 %).
    #[arg(long, default_value_t = 20)]
    lines_per_file: usize,
    /// How long the whole gate is evaluated back to back.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// How long each rule alone is evaluated.
    #[arg(long, default_value_t = 0.5)]
    per_rule_seconds: f64,
    /// Compilations of the gate measured.
    #[arg(long, default_value_t = 50)]
    compile_iterations: usize,
    /// Seed of the generated pull request.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Also write the JSON result to this file.
    #[arg(long)]
    output: Option<std::path::PathBuf>,
}

const HEAD: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
const OLD: &str = "9c1185a5c5e9fc54612808977ee8f548b2258d31";

/// One rule of every kind the evaluator decides locally (`previewHealthy` needs a preview and
/// `plugin` is unsupported, so neither is here).
const GATE: &str = r#"
repositoryRef: {name: web}
rules:
- name: approvals
  approvals: {count: 2, teams: [acme/maintainers], invalidateOnPush: true}
- name: veto
  disapproval: {teams: [acme/security]}
- name: paths
  changedFiles: {paths: ["src/**", "tests/**", "docs/**"], ignore: ["src/generated/**"]}
- name: lines
  modifiedLines: {max: 20000}
- name: files
  maxFiles: {max: 1000}
- name: branches
  branches: {source: ["feature/**"], target: [main, "release/*"]}
- name: labels
  labels: {require: [ready], forbid: [do-not-merge, wip]}
- name: title
  title: {matches: '^(feat|fix|chore|docs|refactor)(\([a-z0-9-]+\))?: ', notMatches: '(?i)\bwip\b'}
- name: issue
  linkedIssue: {pattern: '(#|WEB-)[0-9]+'}
- name: signed
  signedCommits: {}
- name: ci
  checks: {require: [build, test, lint]}
- name: secrets
  secretScan: {extraPatterns: [{name: acme-key, regex: 'acme_live_[0-9a-f]{32}'}]}
- name: file_sizes
  if: "pr.target == 'main' && !pr.draft"
  cel: {expression: "pr.files.all(f, f.additions + f.deletions < 400) && size(pr.approvals) >= 2"}
"#;

/// Lines of ordinary code (Rust, TypeScript, YAML, config) with the shapes that come near the
/// secret patterns without being secrets: `token_url`, `password_field`, URLs, hashes.
const LINES: &[&str] = &[
    "    let total = items.iter().map(|x| x.price * x.qty as u64).sum::<u64>();",
    "    pub fn handle_{n}(&self, req: &Request) -> Result<Response, Error> {",
    "        return Err(Error::invalid(format!(\"missing field {}\", name)));",
    "// Keep the cart in memory until the session ends; see docs/checkout.md.",
    "import { loadCart, saveCart } from './cart-store';",
    "export const TIMEOUT_MS = {n}00;",
    "  const token_url = `${BASE_URL}/oauth/token`;",
    "    password_field: \"password\",",
    "        assert_eq!(parse_{n}(\"a,b,c\"), vec![\"a\", \"b\", \"c\"]);",
    "  retries: {n}",
    "  image: registry.example.com/web/api:1.{n}.0",
    "    let digest = \"sha256:0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c\";",
    "      if (!user.isAdmin && order.total > LIMIT) { throw new Forbidden('limit'); }",
    "#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]",
    "    match state { State::Open => 1, State::Closed => 2, _ => {n} }",
    "    url = \"https://api.internal.example/v2/items?page={n}\"",
    "    tracing::debug!(items = cart.len(), \"cart restored\");",
    "  - name: api_key_header",
    "    value: X-Api-Key",
    "        .with_context(|| format!(\"reading {}\", path.display()))?;",
    "}",
    "",
];

fn generated_pr(args: &Args) -> PrSnapshot {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let at = |s: i64| Some(Timestamp::from_second(1_740_000_000 + s).expect("valid time"));
    let dirs = ["src/checkout", "src/cart", "src/api", "tests", "docs"];
    let files: Vec<SnapshotFile> = (0..args.files)
        .map(|i| {
            let dir = dirs[i % dirs.len()];
            let ext = if dir == "docs" { "md" } else { "rs" };
            let path = format!("{dir}/module_{}/file_{i}.{ext}", i % 17);
            let spread = (args.lines_per_file / 4).max(1);
            let added = args.lines_per_file - spread + rng.random_range(0..=2 * spread);
            let removed = rng.random_range(0..=3usize);
            let start = rng.random_range(1..400u32);
            let mut patch = format!(
                "@@ -{start},{} +{start},{} @@ impl Handler {{\n",
                removed + 3,
                added + 3
            );
            patch.push_str(" use std::collections::BTreeMap;\n");
            for _ in 0..removed {
                patch.push_str("-    let old = legacy::compute(&items);\n");
            }
            for k in 0..added {
                let line = LINES[rng.random_range(0..LINES.len())]
                    .replace("{n}", &(i * 31 + k).to_string());
                patch.push('+');
                patch.push_str(&line);
                patch.push('\n');
                if k == added / 2 {
                    patch.push_str(" \n");
                }
            }
            patch.push_str("     Ok(())\n }");
            let changed = ChangedFile {
                diff_withheld: false,
                path,
                previous_path: None,
                additions: added as u64,
                deletions: removed as u64,
                status: if i % 9 == 0 {
                    FileStatus::Added
                } else {
                    FileStatus::Modified
                },
                patch: None,
            };
            SnapshotFile::from_changed_file(&changed, Some(&patch))
        })
        .collect();
    let review = |user: &str, state, sha: &str, t| Review {
        user: user.into(),
        state,
        commit_sha: Some(sha.into()),
        submitted_at: at(t),
    };
    let check = |name: &str, state, source, t| CheckResult {
        name: name.into(),
        state,
        source,
        url: None,
        updated_at: at(t),
        description: None,
    };
    PrSnapshot {
        number: 4821,
        title: "feat(checkout): keep the cart across sessions".into(),
        body: "Stores the cart and restores it on load.\n\nCloses WEB-1234".into(),
        author: "dana".into(),
        source_branch: "feature/persistent-cart".into(),
        target_branch: "main".into(),
        labels: vec!["ready".into(), "checkout".into()],
        head_sha: HEAD.into(),
        files,
        reviews: vec![
            review("lee", ReviewState::Approved, OLD, 10),
            review("sam", ReviewState::ChangesRequested, OLD, 20),
            review("kim", ReviewState::Commented, HEAD, 30),
            review("sam", ReviewState::Approved, HEAD, 40),
            review("lee", ReviewState::Approved, HEAD, 50),
            review("mo", ReviewState::Approved, HEAD, 60),
        ],
        commits: (0..8)
            .map(|i| Commit {
                sha: if i == 7 {
                    HEAD.into()
                } else {
                    format!("{i:040x}")
                },
                author: "dana".into(),
                message: format!("checkout: step {i}"),
                verified: true,
            })
            .collect(),
        checks: vec![
            check("build", CheckState::Pending, CheckSource::CheckRun, 5),
            check("build", CheckState::Success, CheckSource::CheckRun, 70),
            check("test", CheckState::Success, CheckSource::Status, 80),
            check("lint", CheckState::Success, CheckSource::CheckRun, 75),
            check("coverage", CheckState::Neutral, CheckSource::Status, 78),
            check(
                "deploy-preview",
                CheckState::Success,
                CheckSource::Status,
                90,
            ),
        ],
        teams: [
            ("acme/maintainers", &["lee", "mo", "priya"][..]),
            ("acme/security", &["sam", "yuki"][..]),
        ]
        .into_iter()
        .map(|(t, m)| (t.to_string(), m.iter().map(|s| s.to_string()).collect()))
        .collect(),
        ..PrSnapshot::default()
    }
}

/// Durations in microseconds: count, p50, p99, max, mean.
fn stats(mut d: Vec<Duration>) -> Value {
    d.sort_unstable();
    let us = |x: Duration| (x.as_secs_f64() * 1e6 * 10.0).round() / 10.0;
    let at = |q: f64| us(d[((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1]);
    let total: Duration = d.iter().sum();
    json!({
        "count": d.len(),
        "p50_us": at(0.50),
        "p99_us": at(0.99),
        "max_us": us(*d.last().expect("at least one sample")),
        "mean_us": us(total / d.len() as u32),
    })
}

/// Evaluates `gate` on `pr` back to back for `seconds` (after a short warm-up).
fn run(gate: &CompiledGate, pr: &PrSnapshot, seconds: f64) -> (Vec<Duration>, Duration) {
    for _ in 0..5 {
        std::hint::black_box(gate.evaluate(pr));
    }
    let budget = Duration::from_secs_f64(seconds);
    let mut samples = Vec::new();
    let start = Instant::now();
    while start.elapsed() < budget || samples.is_empty() {
        let t = Instant::now();
        std::hint::black_box(gate.evaluate(std::hint::black_box(pr)));
        samples.push(t.elapsed());
    }
    (samples, start.elapsed())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let machine = procfs::machine();
    let spec: PolicyGateSpec = serde_yaml::from_str(GATE)?;
    let pr = generated_pr(&args);
    let added_lines: usize = pr
        .files
        .iter()
        .map(|f| f.added_lines.as_ref().map_or(0, Vec::len))
        .sum();

    eprintln!("compiling the gate {} times", args.compile_iterations);
    let mut compile = Vec::new();
    for _ in 0..args.compile_iterations.max(1) {
        let t = Instant::now();
        std::hint::black_box(CompiledGate::compile(std::hint::black_box(&spec))?);
        compile.push(t.elapsed());
    }
    let gate = CompiledGate::compile(&spec)?;

    // Every rule must pass, so every rule did all its work (a fail can stop early).
    let verdict = gate.evaluate(&pr);
    let not_passing: Vec<String> = verdict
        .rules
        .iter()
        .filter(|r| r.outcome != Outcome::Pass)
        .map(|r| format!("{}: {:?} {}", r.name, r.outcome, r.reason))
        .collect();
    if verdict.result != GateResult::Passed || !not_passing.is_empty() {
        bail!("the generated pull request must pass every rule: {not_passing:?}");
    }

    eprintln!("evaluating the gate for {} s", args.seconds);
    let (samples, elapsed) = run(&gate, &pr, args.seconds);
    let evaluations = samples.len();

    let mut per_rule = serde_json::Map::new();
    for rule in &spec.rules {
        eprintln!("rule {} alone for {} s", rule.name, args.per_rule_seconds);
        let one = PolicyGateSpec {
            rules: vec![rule.clone()],
            expression: None,
            ..spec.clone()
        };
        let compiled = CompiledGate::compile(&one)?;
        let (s, _) = run(&compiled, &pr, args.per_rule_seconds);
        per_rule.insert(rule.name.clone(), stats(s)["p50_us"].clone());
    }

    // The fixed cost of any CEL evaluation (its thread, converting `pr`), whatever it computes.
    let trivial: PolicyGateSpec = serde_yaml::from_str(
        "repositoryRef: {name: web}\nrules:\n- name: t\n  cel: {expression: 'true'}\n",
    )?;
    eprintln!("a trivial cel rule alone for {} s", args.per_rule_seconds);
    let (s, _) = run(
        &CompiledGate::compile(&trivial)?,
        &pr,
        args.per_rule_seconds,
    );
    let cel_fixed = stats(s)["p50_us"].clone();

    let result = json!({
        "benchmark": "bench-gate",
        "build": if cfg!(debug_assertions) { "debug" } else { "release" },
        "pull_request": {
            "files": pr.files.len(),
            "added_lines": added_lines,
            "modified_lines": pr.modified_lines(),
            "reviews": pr.reviews.len(),
            "commits": pr.commits.len(),
            "checks": pr.checks.len(),
            "seed": args.seed,
        },
        "gate": {
            "rules": spec.rules.len(),
            "names": spec.rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>(),
            "result": verdict.result.as_str(),
            "summary": verdict.summary(),
        },
        "compile": stats(compile),
        "evaluate": {
            "evaluations": evaluations,
            "seconds": (elapsed.as_secs_f64() * 1000.0).round() / 1000.0,
            "evaluations_per_second": (evaluations as f64 / elapsed.as_secs_f64()).round(),
            "per_evaluation": stats(samples),
        },
        "per_rule_p50_us": per_rule,
        "cel_true_alone_p50_us": cel_fixed,
        "machine": machine,
    });
    let text = serde_json::to_string_pretty(&result)?;
    println!("{text}");
    if let Some(path) = &args.output {
        std::fs::write(path, format!("{text}\n"))?;
    }
    Ok(())
}
