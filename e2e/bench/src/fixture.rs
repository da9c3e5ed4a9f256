//! The forge side of a polling benchmark: N GitHub repositories in the emulator, each with a main
//! branch, a few feature branches (each a real commit) and 0–3 open pull requests, drawn from a
//! fixed seed so every run (and every machine) polls the same data.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context as _, Result};
use futures::{StreamExt as _, TryStreamExt as _};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};
use serde::Serialize;

use pullwarden_emulator::{AdminClient, Forge, PullSpec, PushSpec, RepoSpec};

/// Owner of every benchmark repository.
pub const OWNER: &str = "bench";
const AUTHORS: [&str; 4] = ["alice", "bob", "carol", "dependabot"];

/// One repository to create.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoPlan {
    /// `bench/repo-0042`.
    pub path: String,
    /// Kubernetes-friendly name (`repo-0042`).
    pub name: String,
    /// Feature branches besides `main`.
    pub branches: Vec<String>,
    /// Open pull requests, one per head branch (the first `pulls.len()` feature branches).
    pub pulls: Vec<PullPlan>,
}

/// One open pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullPlan {
    pub head: String,
    pub title: String,
    pub author: String,
    pub draft: bool,
    pub labels: Vec<String>,
}

/// What was created.
#[derive(Clone, Debug, Default, Serialize)]
pub struct FixtureStats {
    pub repositories: usize,
    /// All branches, `main` included.
    pub branches: usize,
    pub open_pull_requests: usize,
    pub seed: u64,
    pub setup_s: f64,
}

/// The deterministic plan for `n` repositories: 2–4 feature branches each and 0–3 open pull
/// requests (never more than branches).
pub fn plan(n: usize, seed: u64) -> Vec<RepoPlan> {
    let mut rng = StdRng::seed_from_u64(seed);
    let width = n.saturating_sub(1).to_string().len().max(4);
    (0..n)
        .map(|i| {
            let name = format!("repo-{i:0width$}");
            let branch_count = rng.random_range(2..=4usize);
            let branches: Vec<String> = (0..branch_count).map(|b| format!("feature-{b}")).collect();
            let pull_count = rng.random_range(0..=3usize).min(branch_count);
            let pulls = branches[..pull_count]
                .iter()
                .enumerate()
                .map(|(k, head)| PullPlan {
                    head: head.clone(),
                    title: format!("Change {k} of {name}"),
                    author: AUTHORS[rng.random_range(0..AUTHORS.len())].to_owned(),
                    draft: rng.random_bool(0.15),
                    labels: if rng.random_bool(0.5) {
                        vec!["preview".to_owned()]
                    } else {
                        Vec::new()
                    },
                })
                .collect();
            RepoPlan {
                path: format!("{OWNER}/{name}"),
                name,
                branches,
                pulls,
            }
        })
        .collect()
}

/// Totals of a plan (without creating anything).
pub fn stats(plans: &[RepoPlan], seed: u64) -> FixtureStats {
    FixtureStats {
        repositories: plans.len(),
        branches: plans.iter().map(|p| p.branches.len() + 1).sum(),
        open_pull_requests: plans.iter().map(|p| p.pulls.len()).sum(),
        seed,
        setup_s: 0.0,
    }
}

/// Creates the planned repositories through the admin API, `concurrency` repositories at a time
/// (the emulator serialises git writes, so more than a few does not help), reporting progress on
/// stderr.
pub async fn create(
    admin: &AdminClient,
    plans: &[RepoPlan],
    seed: u64,
    concurrency: usize,
) -> Result<FixtureStats> {
    let started = Instant::now();
    let done = std::sync::atomic::AtomicUsize::new(0);
    futures::stream::iter(plans)
        .map(|p| {
            let done = &done;
            async move {
                create_one(admin, p)
                    .await
                    .with_context(|| format!("creating {} in the emulator", p.path))?;
                let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if n.is_multiple_of(250) || n == plans.len() {
                    eprintln!(
                        "bench-poll: {n}/{} repositories created in the emulator ({:.0}s)",
                        plans.len(),
                        started.elapsed().as_secs_f64()
                    );
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let mut s = stats(plans, seed);
    s.setup_s = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    Ok(s)
}

async fn create_one(admin: &AdminClient, p: &RepoPlan) -> Result<()> {
    admin
        .create_repo(RepoSpec {
            forge: Forge::Github,
            path: p.path.clone(),
            description: Some("pullwarden poll benchmark".into()),
            ..Default::default()
        })
        .await?;
    for (i, branch) in p.branches.iter().enumerate() {
        let files: BTreeMap<String, Option<String>> = [(
            format!("src/{branch}.txt"),
            Some(format!("{} change {i}\n", p.name)),
        )]
        .into();
        admin
            .push(
                &p.path,
                PushSpec {
                    branch: branch.clone(),
                    files,
                    message: Some(format!("Work on {branch}")),
                    author: Some(AUTHORS[i % AUTHORS.len()].to_owned()),
                    ..Default::default()
                },
            )
            .await?;
    }
    for pull in &p.pulls {
        admin
            .open_pull(
                &p.path,
                PullSpec {
                    head: pull.head.clone(),
                    title: pull.title.clone(),
                    author: Some(pull.author.clone()),
                    draft: pull.draft,
                    labels: pull.labels.clone(),
                    ..Default::default()
                },
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_deterministic_and_bounded() {
        let a = plan(200, 7);
        assert_eq!(a, plan(200, 7));
        assert_ne!(a, plan(200, 8));
        assert_eq!(a[0].name, "repo-0000");
        assert_eq!(a[199].path, "bench/repo-0199");
        for p in &a {
            assert!((2..=4).contains(&p.branches.len()));
            assert!(p.pulls.len() <= 3 && p.pulls.len() <= p.branches.len());
        }
        let s = stats(&a, 7);
        assert!(s.open_pull_requests > 0 && s.branches >= 600);
        assert_eq!(plan(12_345, 1)[0].name, "repo-00000");
    }
}
