//! Facts read from git that every forge needs (a PR's commits and files, one commit with its
//! diff), cached by SHA. Git objects are immutable, so a cache keyed by SHAs never goes stale;
//! it keeps polling clients from spawning git for every request.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::git::{CommitInfo, EMPTY_TREE, FileDiff, Git};
use super::state::{Pull, Repo, Shared, State};

/// Shared cache of git facts.
#[derive(Debug, Default)]
pub struct GitCache {
    commits: HashMap<(PathBuf, String), CommitInfo>,
    prs: HashMap<(PathBuf, String, String), Arc<PrFacts>>,
    commit_files: HashMap<(PathBuf, String), Arc<Vec<FileDiff>>>,
}

/// Cache handle stored in [`Shared`].
pub type CacheHandle = Arc<Mutex<GitCache>>;

/// What a pull request looks like in git.
#[derive(Debug, Clone, Default)]
pub struct PrFacts {
    pub base_sha: String,
    pub head_sha: String,
    pub merge_base: String,
    /// Commits on the head not on the base, oldest first.
    pub commits: Vec<CommitInfo>,
    /// Files changed from the merge base to the head.
    pub files: Vec<FileDiff>,
    pub additions: u64,
    pub deletions: u64,
}

/// Facts of `base_sha...head_sha` in `git_dir`.
pub async fn pr_facts(
    shared: &Shared,
    git_dir: &Path,
    base_sha: &str,
    head_sha: &str,
) -> Arc<PrFacts> {
    let key = (
        git_dir.to_path_buf(),
        base_sha.to_string(),
        head_sha.to_string(),
    );
    if let Some(f) = shared
        .cache
        .lock()
        .ok()
        .and_then(|c| c.prs.get(&key).cloned())
    {
        return f;
    }
    let git = Git::new(git_dir);
    let merge_base = git
        .merge_base(base_sha, head_sha)
        .await
        .unwrap_or_else(|| base_sha.to_string());
    let commits = git
        .commits_between(base_sha, head_sha)
        .await
        .unwrap_or_default();
    let files = git.diff(&merge_base, head_sha).await.unwrap_or_default();
    let facts = Arc::new(PrFacts {
        base_sha: base_sha.to_string(),
        head_sha: head_sha.to_string(),
        merge_base,
        additions: files.iter().map(|f| f.additions).sum(),
        deletions: files.iter().map(|f| f.deletions).sum(),
        commits,
        files,
    });
    if let Ok(mut c) = shared.cache.lock() {
        c.prs.insert(key, facts.clone());
    }
    facts
}

/// One commit (any revision), cached once resolved to a SHA.
pub async fn commit(shared: &Shared, git_dir: &Path, rev: &str) -> Option<CommitInfo> {
    let key = (git_dir.to_path_buf(), rev.to_string());
    if rev.len() == 40
        && let Some(c) = shared
            .cache
            .lock()
            .ok()
            .and_then(|c| c.commits.get(&key).cloned())
    {
        return Some(c);
    }
    let info = Git::new(git_dir).commit_info(rev).await?;
    if let Ok(mut c) = shared.cache.lock() {
        c.commits
            .insert((git_dir.to_path_buf(), info.sha.clone()), info.clone());
    }
    Some(info)
}

/// Files a commit changed relative to its first parent.
pub async fn commit_files(shared: &Shared, git_dir: &Path, ci: &CommitInfo) -> Arc<Vec<FileDiff>> {
    let key = (git_dir.to_path_buf(), ci.sha.clone());
    if let Some(f) = shared
        .cache
        .lock()
        .ok()
        .and_then(|c| c.commit_files.get(&key).cloned())
    {
        return f;
    }
    let parent = ci.parents.first().map_or(EMPTY_TREE, String::as_str);
    let files = Arc::new(
        Git::new(git_dir)
            .diff(parent, &ci.sha)
            .await
            .unwrap_or_default(),
    );
    if let Ok(mut c) = shared.cache.lock() {
        c.commit_files.insert(key, files.clone());
    }
    files
}

/// The base SHA a pull request is compared against: the live tip of the base branch while
/// open, the tip at close/merge time afterwards.
pub fn pr_base_sha(repo: &Repo, pr: &Pull) -> String {
    pr.base_sha_at_close
        .clone()
        .or_else(|| repo.branches.get(&pr.base_ref).cloned())
        .unwrap_or_else(|| pr.head_sha.clone())
}

/// Facts of a pull request of `repo` (computed in the base repository, which holds the head
/// commits under `refs/pull/N/head` even for forks).
pub async fn facts_for(shared: &Shared, repo: &Repo, pr: &Pull) -> Arc<PrFacts> {
    pr_facts(shared, &repo.git_dir, &pr_base_sha(repo, pr), &pr.head_sha).await
}

/// Just the base SHA, for list endpoints whose items carry no diff statistics (avoids running
/// git for every pull request of a long list).
pub fn light_facts(repo: &Repo, pr: &Pull) -> Arc<PrFacts> {
    Arc::new(PrFacts {
        base_sha: pr_base_sha(repo, pr),
        head_sha: pr.head_sha.clone(),
        ..Default::default()
    })
}

/// Resolves a ref or SHA in a repository.
pub async fn resolve(repo: &Repo, rev: &str) -> Option<String> {
    if let Some(sha) = repo.branches.get(rev) {
        return Some(sha.clone());
    }
    Git::new(&repo.git_dir).rev_parse(rev).await
}

/// The emulator's notion of who authored a commit: the admin push's author login, else a
/// user whose email matches.
pub fn commit_author_login(st: &State, repo: &Repo, ci: &CommitInfo) -> Option<String> {
    if let Some(l) = repo
        .commit_meta
        .get(&ci.sha)
        .and_then(|m| m.author_login.clone())
    {
        return Some(l);
    }
    st.users
        .values()
        .find(|u| u.email == ci.author_email)
        .map(|u| u.login.clone())
}
