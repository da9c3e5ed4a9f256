//! State-changing operations shared by the admin API and the forges' write endpoints.
//!
//! Flow of every operation: lock the state, change git (real commits / refs) and the
//! in-memory records, re-read the branch heads from the real refs, keep each pull request's
//! `refs/pull/N/head` (GitLab: `refs/merge-requests/N/head`) pointing at its head, and hand
//! the resulting [`Event`]s to [`super::webhooks::emit`], which queues signed deliveries. The
//! lock is held for the whole operation so events leave in the order the changes happened.
use std::collections::BTreeMap;

use anyhow::{Context, Result, anyhow, bail};
use tokio::sync::mpsc;

use super::data::{self, pr_base_sha};
use super::git::{Git, Signature};
use super::model::{
    BranchSpec, CheckRunInfo, CheckRunSpec, CommentInfo, DeploymentInfo, DeploymentStatusInfo,
    EnvironmentInfo, Forge, HookInfo, HookSpec, LabelSpec, PullInfo, PullSpec, PullUpdate,
    PushResult, PushSpec, RepoInfo, RepoSpec, ReviewInfo, ReviewSpec, StatusInfo, StatusSpec,
};
use super::state::{
    CheckRun, Comment, CommitMeta, Hook, Label, LabelChange, Pull, Repo, Review, Shared, State,
    Status, ZERO_SHA, iso, now,
};
use super::webhooks::{self, Event};

/// Default acting user when a spec names none.
pub const DEFAULT_USER: &str = "emulator";

fn valid_segment(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && !s.ends_with(".git")
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Creates a repository with a real bare git repository and (unless `empty`) a first commit;
/// with `fork_of`, the repository starts as a copy of the parent's branches instead.
pub async fn create_repo(
    shared: &Shared,
    spec: RepoSpec,
    fork_of: Option<String>,
) -> Result<RepoInfo> {
    let path = spec.path.trim_matches('/').to_string();
    let segs: Vec<&str> = path.split('/').collect();
    let ok_depth = match spec.forge {
        Forge::Gitlab => segs.len() >= 2,
        _ => segs.len() == 2,
    };
    if !ok_depth || !segs.iter().all(|s| valid_segment(s)) {
        bail!("invalid repository path {path:?} (owner/name; GitLab: group/.../project)");
    }
    let mut st = shared.state.lock().await;
    if st.repos.contains_key(&path) {
        bail!("repository {path} already exists");
    }
    let parent = match &fork_of {
        Some(p) => {
            let parent = repo_ref(&st, p)?;
            if parent.forge != spec.forge {
                bail!("cannot fork {p} across forges");
            }
            Some((parent.git_dir.clone(), parent.default_branch.clone()))
        }
        None => None,
    };
    let default_branch = spec
        .default_branch
        .clone()
        .or_else(|| parent.as_ref().map(|(_, b)| b.clone()))
        .unwrap_or_else(|| "main".into());
    let git_dir = shared.repo_root.join(format!("{path}.git"));
    let git = Git::init_bare(&git_dir, &default_branch).await?;
    let owner = segs[0].to_string();
    let owner_user = st.user(&owner);
    let id = st.id();
    let t = now();
    let mut repo = Repo {
        id,
        forge: spec.forge,
        path: path.clone(),
        owner: owner.clone(),
        name: segs[segs.len() - 1].to_string(),
        default_branch: default_branch.clone(),
        private: spec.private,
        description: spec.description.clone(),
        fork_of: fork_of.clone(),
        created_at: t,
        updated_at: t,
        pushed_at: t,
        branches: BTreeMap::new(),
        pulls: BTreeMap::new(),
        next_number: 1,
        comments: Vec::new(),
        label_changes: Vec::new(),
        statuses: Vec::new(),
        check_runs: Vec::new(),
        deployments: Vec::new(),
        stopped_environments: Default::default(),
        hooks: Vec::new(),
        collaborators: BTreeMap::new(),
        labels: BTreeMap::new(),
        commit_meta: Default::default(),
        git_dir: git_dir.clone(),
    };
    if let Some((parent_dir, _)) = &parent {
        git.fetch_branches_from(parent_dir).await?;
        repo.branches = git.branches().await?;
    } else if !spec.empty {
        let mut files = BTreeMap::new();
        files.insert("README.md".to_string(), Some(format!("# {}\n", repo.name)));
        let sig = Signature {
            name: owner_user.name.clone(),
            email: owner_user.email.clone(),
            time: t,
        };
        let sha = git
            .commit(&default_branch, None, &files, "Initial commit", &sig)
            .await?;
        repo.commit_meta.insert(
            sha,
            CommitMeta {
                author_login: Some(owner.clone()),
                verified: false,
            },
        );
        repo.branches = git.branches().await?;
    }
    st.repos.insert(path.clone(), repo);
    Ok(repo_info(shared, &st.repos[&path]))
}

/// Admin view of a repository.
pub fn repo_info(shared: &Shared, r: &Repo) -> RepoInfo {
    let api = match r.forge {
        Forge::Github => shared.public_url.clone(),
        Forge::Gitlab => format!("{}/api/v4", shared.public_url),
        Forge::Gitea => format!("{}/api/v1", shared.public_url),
    };
    RepoInfo {
        id: r.id,
        forge: r.forge,
        path: r.path.clone(),
        default_branch: r.default_branch.clone(),
        private: r.private,
        clone_url: format!("{}/{}.git", shared.public_url, r.path),
        api_url: api,
        git_dir: r.git_dir.to_string_lossy().into_owned(),
        branches: r.branches.clone(),
    }
}

fn repo_mut<'a>(st: &'a mut State, path: &str) -> Result<&'a mut Repo> {
    st.repos
        .get_mut(path)
        .ok_or_else(|| anyhow!("no repository {path}"))
}

fn repo_ref<'a>(st: &'a State, path: &str) -> Result<&'a Repo> {
    st.repos
        .get(path)
        .ok_or_else(|| anyhow!("no repository {path}"))
}

/// The pull-request head ref each forge keeps in the base repository.
fn pull_ref(forge: Forge, n: u64) -> String {
    match forge {
        Forge::Gitlab => format!("refs/merge-requests/{n}/head"),
        _ => format!("refs/pull/{n}/head"),
    }
}

/// Points the PR's head ref in the base repository at `sha`, fetching the objects from the
/// fork first when the head lives elsewhere.
async fn sync_pull_ref(st: &State, base_path: &str, n: u64, sha: &str) -> Result<()> {
    let base = repo_ref(st, base_path)?;
    let pr = base.pulls.get(&n).context("no such pull request")?;
    let git = Git::new(&base.git_dir);
    let refname = pull_ref(base.forge, n);
    if pr.head_repo != base.path {
        let head = repo_ref(st, &pr.head_repo)?;
        git.fetch_from(&head.git_dir, sha, &refname).await
    } else {
        git.update_ref(&refname, sha).await
    }
}

async fn refresh_branches(st: &mut State, path: &str) -> Result<()> {
    let repo = repo_mut(st, path)?;
    repo.branches = Git::new(&repo.git_dir).branches().await?;
    Ok(())
}

/// Pushes one commit to a branch; open PRs whose head is that branch get `synchronize`.
pub async fn push(shared: &Shared, path: &str, spec: PushSpec) -> Result<PushResult> {
    let mut st = shared.state.lock().await;
    push_locked(shared, &mut st, path, spec).await
}

async fn push_locked(
    shared: &Shared,
    st: &mut State,
    path: &str,
    spec: PushSpec,
) -> Result<PushResult> {
    let author_login = spec.author.clone().unwrap_or_else(|| DEFAULT_USER.into());
    let author = st.user(&author_login);
    let repo = repo_ref(st, path)?;
    let branch = if spec.branch.is_empty() {
        repo.default_branch.clone()
    } else {
        spec.branch.clone()
    };
    let before = repo.branches.get(&branch).cloned();
    let git = Git::new(&repo.git_dir);
    let parent = match &before {
        Some(b) => Some(b.clone()),
        None => {
            let from = spec
                .from
                .clone()
                .unwrap_or_else(|| repo.default_branch.clone());
            match data::resolve(repo, &from).await {
                Some(sha) => Some(sha),
                None if repo.branches.is_empty() => None,
                None => bail!("cannot start branch {branch} from {from}: no such ref"),
            }
        }
    };
    let message = spec
        .message
        .clone()
        .unwrap_or_else(|| "Update files".into());
    let sig = Signature {
        name: author.name.clone(),
        email: author.email.clone(),
        time: spec.date.unwrap_or_else(now),
    };
    let sha = git
        .commit(&branch, parent.as_deref(), &spec.files, &message, &sig)
        .await?;
    {
        let repo = repo_mut(st, path)?;
        repo.commit_meta.insert(
            sha.clone(),
            CommitMeta {
                author_login: Some(author_login.clone()),
                verified: spec.verified,
            },
        );
        repo.pushed_at = now();
    }
    refresh_branches(st, path).await?;
    let ci = data::commit(shared, &git_dir(st, path)?, &sha)
        .await
        .context("reading new commit")?;
    let commits = vec![ci];
    let event = Event::Push {
        git_ref: format!("refs/heads/{branch}"),
        before: before.clone().unwrap_or_else(|| ZERO_SHA.into()),
        after: sha.clone(),
        pusher: author_login.clone(),
        created: before.is_none(),
        deleted: false,
        commits,
    };
    webhooks::emit(shared, st, path, vec![event]).await;
    head_moved(shared, st, path, &branch, &sha, &author_login).await?;
    Ok(PushResult {
        branch,
        before: before.unwrap_or_else(|| ZERO_SHA.into()),
        after: sha,
    })
}

fn git_dir(st: &State, path: &str) -> Result<std::path::PathBuf> {
    Ok(repo_ref(st, path)?.git_dir.clone())
}

/// A branch of `head_path` moved to `sha`: every open PR with that head gets `synchronize`.
async fn head_moved(
    shared: &Shared,
    st: &mut State,
    head_path: &str,
    branch: &str,
    sha: &str,
    sender: &str,
) -> Result<()> {
    let affected: Vec<(String, u64, String)> = st
        .repos
        .values()
        .flat_map(|r| {
            r.pulls
                .values()
                .filter(|p| {
                    p.open && p.head_repo == head_path && p.head_ref == branch && p.head_sha != sha
                })
                .map(|p| (r.path.clone(), p.number, p.head_sha.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    for (base_path, n, old) in affected {
        {
            let repo = repo_mut(st, &base_path)?;
            if let Some(p) = repo.pulls.get_mut(&n) {
                p.head_sha = sha.to_string();
                p.updated_at = now();
                p.pushes.push((sha.to_string(), now()));
            }
        }
        sync_pull_ref(st, &base_path, n, sha).await?;
        let ev = Event::PullRequest {
            number: n,
            action: "synchronize".into(),
            sender: sender.to_string(),
            label: None,
            before: Some(old),
            after: Some(sha.to_string()),
            changes: None,
        };
        webhooks::emit(shared, st, &base_path, vec![ev]).await;
    }
    Ok(())
}

/// Creates a branch at an existing commit (push event with `created: true`).
pub async fn create_branch(shared: &Shared, path: &str, spec: BranchSpec) -> Result<PushResult> {
    let mut st = shared.state.lock().await;
    let repo = repo_ref(&st, path)?;
    if repo.branches.contains_key(&spec.name) {
        bail!("branch {} already exists", spec.name);
    }
    let from = spec
        .from
        .clone()
        .unwrap_or_else(|| repo.default_branch.clone());
    let sha = data::resolve(repo, &from)
        .await
        .with_context(|| format!("no such ref {from}"))?;
    Git::new(&repo.git_dir)
        .update_ref(&format!("refs/heads/{}", spec.name), &sha)
        .await?;
    refresh_branches(&mut st, path).await?;
    let ev = Event::Push {
        git_ref: format!("refs/heads/{}", spec.name),
        before: ZERO_SHA.into(),
        after: sha.clone(),
        pusher: DEFAULT_USER.into(),
        created: true,
        deleted: false,
        commits: Vec::new(),
    };
    webhooks::emit(shared, &mut st, path, vec![ev]).await;
    Ok(PushResult {
        branch: spec.name,
        before: ZERO_SHA.into(),
        after: sha,
    })
}

/// Deletes a branch (push event with `deleted: true`). Open PRs keep their last head SHA.
pub async fn delete_branch(shared: &Shared, path: &str, name: &str) -> Result<()> {
    let mut st = shared.state.lock().await;
    let repo = repo_ref(&st, path)?;
    let Some(before) = repo.branches.get(name).cloned() else {
        bail!("no branch {name}");
    };
    if name == repo.default_branch {
        bail!("cannot delete the default branch");
    }
    Git::new(&repo.git_dir)
        .delete_ref(&format!("refs/heads/{name}"))
        .await?;
    refresh_branches(&mut st, path).await?;
    let ev = Event::Push {
        git_ref: format!("refs/heads/{name}"),
        before,
        after: ZERO_SHA.into(),
        pusher: DEFAULT_USER.into(),
        created: false,
        deleted: true,
        commits: Vec::new(),
    };
    webhooks::emit(shared, &mut st, path, vec![ev]).await;
    Ok(())
}

/// Admin view of a pull request.
pub fn pull_info(repo: &Repo, p: &Pull) -> PullInfo {
    PullInfo {
        number: p.number,
        id: p.id,
        title: p.title.clone(),
        state: if p.open {
            "open".into()
        } else {
            "closed".into()
        },
        merged: p.merged,
        draft: p.draft,
        head_ref: p.head_ref.clone(),
        head_sha: p.head_sha.clone(),
        head_repo: p.head_repo.clone(),
        base_ref: p.base_ref.clone(),
        base_sha: pr_base_sha(repo, p),
        labels: p.labels.clone(),
        author: p.author.clone(),
        fork: p.fork,
        merge_commit_sha: p.merge_commit_sha.clone(),
    }
}

fn ensure_label(st: &mut State, path: &str, name: &str) -> Result<()> {
    if repo_ref(st, path)?.labels.contains_key(name) {
        return Ok(());
    }
    let id = st.id();
    // A stable colour per name, so payloads are deterministic.
    let color = format!(
        "{:06x}",
        name.bytes().fold(0x5a5a5au32, |h, b| h
            .wrapping_mul(31)
            .wrapping_add(b as u32))
            & 0xffffff
    );
    repo_mut(st, path)?.labels.insert(
        name.to_string(),
        Label {
            id,
            name: name.to_string(),
            color,
            description: None,
        },
    );
    Ok(())
}

/// Opens a pull request (`opened`).
pub async fn open_pull(shared: &Shared, path: &str, spec: PullSpec) -> Result<PullInfo> {
    let mut st = shared.state.lock().await;
    let author = spec.author.clone().unwrap_or_else(|| DEFAULT_USER.into());
    st.user(&author);
    let base_repo = repo_ref(&st, path)?;
    let head_path = spec.head_repo.clone().unwrap_or_else(|| path.to_string());
    let head_repo = repo_ref(&st, &head_path)?;
    if head_repo.forge != base_repo.forge {
        bail!("head repository {head_path} is on another forge");
    }
    let head_sha = head_repo
        .branches
        .get(&spec.head)
        .cloned()
        .with_context(|| format!("no branch {} in {head_path}", spec.head))?;
    let base_ref = spec
        .base
        .clone()
        .unwrap_or_else(|| base_repo.default_branch.clone());
    if !base_repo.branches.contains_key(&base_ref) {
        bail!("no base branch {base_ref}");
    }
    if head_path == path && spec.head == base_ref {
        bail!("head and base are the same branch");
    }
    for l in &spec.labels {
        ensure_label(&mut st, path, l)?;
    }
    let id = st.id();
    let t = now();
    let repo = repo_mut(&mut st, path)?;
    let number = repo.next_number;
    repo.next_number += 1;
    let fork = head_path != path;
    repo.pulls.insert(
        number,
        Pull {
            number,
            id,
            title: spec.title.clone(),
            body: spec.body.clone().unwrap_or_default(),
            author: author.clone(),
            head_repo: head_path,
            head_ref: spec.head.clone(),
            head_sha: head_sha.clone(),
            base_ref,
            base_sha_at_close: None,
            draft: spec.draft,
            labels: spec.labels.clone(),
            open: true,
            merged: false,
            merged_at: None,
            merged_by: None,
            merge_commit_sha: None,
            closed_at: None,
            created_at: t,
            updated_at: t,
            reviews: Vec::new(),
            fork,
            pushes: vec![(head_sha.clone(), t)],
        },
    );
    repo.updated_at = t;
    sync_pull_ref(&st, path, number, &head_sha).await?;
    let ev = pr_event(number, "opened", &author);
    webhooks::emit(shared, &mut st, path, vec![ev]).await;
    let repo = repo_ref(&st, path)?;
    Ok(pull_info(repo, &repo.pulls[&number]))
}

fn pr_event(number: u64, action: &str, sender: &str) -> Event {
    Event::PullRequest {
        number,
        action: action.to_string(),
        sender: sender.to_string(),
        label: None,
        before: None,
        after: None,
        changes: None,
    }
}

fn pull_mut<'a>(st: &'a mut State, path: &str, n: u64) -> Result<&'a mut Pull> {
    repo_mut(st, path)?
        .pulls
        .get_mut(&n)
        .ok_or_else(|| anyhow!("no pull request #{n} in {path}"))
}

/// Edits title/body (`edited`) and draft state (`ready_for_review` / `converted_to_draft`).
pub async fn update_pull(shared: &Shared, path: &str, n: u64, upd: PullUpdate) -> Result<PullInfo> {
    let mut st = shared.state.lock().await;
    let sender = upd.user.clone().unwrap_or_else(|| DEFAULT_USER.into());
    st.user(&sender);
    let mut events = Vec::new();
    let p = pull_mut(&mut st, path, n)?;
    let mut changes = serde_json::Map::new();
    if let Some(t) = &upd.title
        && *t != p.title
    {
        changes.insert("title".into(), serde_json::json!({"from": p.title}));
        p.title = t.clone();
    }
    if let Some(b) = &upd.body
        && *b != p.body
    {
        changes.insert("body".into(), serde_json::json!({"from": p.body}));
        p.body = b.clone();
    }
    p.updated_at = now();
    if !changes.is_empty() {
        events.push(Event::PullRequest {
            number: n,
            action: "edited".into(),
            sender: sender.clone(),
            label: None,
            before: None,
            after: None,
            changes: Some(serde_json::Value::Object(changes)),
        });
    }
    if let Some(d) = upd.draft
        && d != p.draft
    {
        p.draft = d;
        events.push(pr_event(
            n,
            if d {
                "converted_to_draft"
            } else {
                "ready_for_review"
            },
            &sender,
        ));
    }
    webhooks::emit(shared, &mut st, path, events).await;
    let repo = repo_ref(&st, path)?;
    Ok(pull_info(repo, &repo.pulls[&n]))
}

/// Pushes a commit to the PR's head branch (in the fork for fork PRs): `synchronize`.
pub async fn push_to_pull(
    shared: &Shared,
    path: &str,
    n: u64,
    mut spec: PushSpec,
) -> Result<PushResult> {
    let mut st = shared.state.lock().await;
    let p = repo_ref(&st, path)?
        .pulls
        .get(&n)
        .cloned()
        .with_context(|| format!("no pull request #{n}"))?;
    spec.branch = p.head_ref.clone();
    let head_repo = p.head_repo.clone();
    push_locked(shared, &mut st, &head_repo, spec).await
}

/// Adds a label (`labeled`).
pub async fn add_label(shared: &Shared, path: &str, n: u64, spec: LabelSpec) -> Result<PullInfo> {
    let mut st = shared.state.lock().await;
    let sender = spec.user.clone().unwrap_or_else(|| DEFAULT_USER.into());
    st.user(&sender);
    ensure_label(&mut st, path, &spec.name)?;
    let id = st.id();
    let p = pull_mut(&mut st, path, n)?;
    if !p.labels.contains(&spec.name) {
        p.labels.push(spec.name.clone());
        p.updated_at = now();
        record_label_change(&mut st, path, id, n, &sender, &spec.name, true)?;
        let ev = Event::PullRequest {
            number: n,
            action: "labeled".into(),
            sender,
            label: Some(spec.name.clone()),
            before: None,
            after: None,
            changes: None,
        };
        webhooks::emit(shared, &mut st, path, vec![ev]).await;
    }
    let repo = repo_ref(&st, path)?;
    Ok(pull_info(repo, &repo.pulls[&n]))
}

fn record_label_change(
    st: &mut State,
    path: &str,
    id: u64,
    number: u64,
    user: &str,
    label: &str,
    added: bool,
) -> Result<()> {
    repo_mut(st, path)?.label_changes.push(LabelChange {
        id,
        number,
        user: user.to_string(),
        label: label.to_string(),
        added,
        created_at: now(),
    });
    Ok(())
}

/// Removes a label (`unlabeled`).
pub async fn remove_label(
    shared: &Shared,
    path: &str,
    n: u64,
    name: &str,
    user: Option<String>,
) -> Result<PullInfo> {
    let mut st = shared.state.lock().await;
    let sender = user.unwrap_or_else(|| DEFAULT_USER.into());
    st.user(&sender);
    let id = st.id();
    let p = pull_mut(&mut st, path, n)?;
    let Some(pos) = p.labels.iter().position(|l| l == name) else {
        bail!("label {name} is not on #{n}");
    };
    p.labels.remove(pos);
    p.updated_at = now();
    record_label_change(&mut st, path, id, n, &sender, name, false)?;
    let ev = Event::PullRequest {
        number: n,
        action: "unlabeled".into(),
        sender,
        label: Some(name.to_string()),
        before: None,
        after: None,
        changes: None,
    };
    webhooks::emit(shared, &mut st, path, vec![ev]).await;
    let repo = repo_ref(&st, path)?;
    Ok(pull_info(repo, &repo.pulls[&n]))
}

/// Closes without merging (`closed`, `merged: false`).
pub async fn close_pull(
    shared: &Shared,
    path: &str,
    n: u64,
    user: Option<String>,
) -> Result<PullInfo> {
    let mut st = shared.state.lock().await;
    let sender = user.unwrap_or_else(|| DEFAULT_USER.into());
    st.user(&sender);
    let repo = repo_ref(&st, path)?;
    let p = repo
        .pulls
        .get(&n)
        .with_context(|| format!("no pull request #{n}"))?;
    if !p.open {
        bail!("#{n} is already closed");
    }
    let base_sha = pr_base_sha(repo, p);
    let p = pull_mut(&mut st, path, n)?;
    p.open = false;
    p.closed_at = Some(now());
    p.updated_at = now();
    p.base_sha_at_close = Some(base_sha);
    webhooks::emit(shared, &mut st, path, vec![pr_event(n, "closed", &sender)]).await;
    let repo = repo_ref(&st, path)?;
    Ok(pull_info(repo, &repo.pulls[&n]))
}

/// Reopens (`reopened`).
pub async fn reopen_pull(
    shared: &Shared,
    path: &str,
    n: u64,
    user: Option<String>,
) -> Result<PullInfo> {
    let mut st = shared.state.lock().await;
    let sender = user.unwrap_or_else(|| DEFAULT_USER.into());
    st.user(&sender);
    let p = pull_mut(&mut st, path, n)?;
    if p.open || p.merged {
        bail!("#{n} is open or merged");
    }
    p.open = true;
    p.closed_at = None;
    p.base_sha_at_close = None;
    p.updated_at = now();
    webhooks::emit(
        shared,
        &mut st,
        path,
        vec![pr_event(n, "reopened", &sender)],
    )
    .await;
    let repo = repo_ref(&st, path)?;
    Ok(pull_info(repo, &repo.pulls[&n]))
}

/// Merges with a real merge commit on the base branch (push on the base, then `closed` with
/// `merged: true`).
pub async fn merge_pull(
    shared: &Shared,
    path: &str,
    n: u64,
    user: Option<String>,
) -> Result<PullInfo> {
    let mut st = shared.state.lock().await;
    let sender = user.unwrap_or_else(|| DEFAULT_USER.into());
    let who = st.user(&sender);
    let repo = repo_ref(&st, path)?;
    let p = repo
        .pulls
        .get(&n)
        .cloned()
        .with_context(|| format!("no pull request #{n}"))?;
    if !p.open {
        bail!("#{n} is not open");
    }
    if p.draft {
        bail!("Pull Request is still a draft");
    }
    let base_tip = repo
        .branches
        .get(&p.base_ref)
        .cloned()
        .with_context(|| format!("no base branch {}", p.base_ref))?;
    let head_owner = p.head_repo.split('/').next().unwrap_or("").to_string();
    let message = match repo.forge {
        Forge::Gitlab => format!(
            "Merge branch '{}' into '{}'\n\n{}\n\nSee merge request {}!{n}",
            p.head_ref, p.base_ref, p.title, repo.path
        ),
        _ => format!(
            "Merge pull request #{n} from {head_owner}/{}\n\n{}",
            p.head_ref, p.title
        ),
    };
    let git = Git::new(&repo.git_dir);
    let sig = Signature {
        name: who.name.clone(),
        email: who.email.clone(),
        time: now(),
    };
    let merge_sha = git
        .merge_commit(&base_tip, &p.head_sha, &message, &sig)
        .await?;
    git.update_ref(&format!("refs/heads/{}", p.base_ref), &merge_sha)
        .await?;
    {
        let repo = repo_mut(&mut st, path)?;
        repo.commit_meta.insert(
            merge_sha.clone(),
            CommitMeta {
                author_login: Some(sender.clone()),
                verified: true,
            },
        );
        repo.pushed_at = now();
    }
    refresh_branches(&mut st, path).await?;
    let t = now();
    let p = pull_mut(&mut st, path, n)?;
    p.open = false;
    p.merged = true;
    p.merged_at = Some(t);
    p.closed_at = Some(t);
    p.updated_at = t;
    p.merged_by = Some(sender.clone());
    p.merge_commit_sha = Some(merge_sha.clone());
    p.base_sha_at_close = Some(base_tip.clone());
    let base_ref = p.base_ref.clone();
    let ci = data::commit(shared, &git_dir(&st, path)?, &merge_sha)
        .await
        .context("merge commit")?;
    let push = Event::Push {
        git_ref: format!("refs/heads/{base_ref}"),
        before: base_tip,
        after: merge_sha,
        pusher: sender.clone(),
        created: false,
        deleted: false,
        commits: vec![ci],
    };
    webhooks::emit(
        shared,
        &mut st,
        path,
        vec![push, pr_event(n, "closed", &sender)],
    )
    .await;
    let repo = repo_ref(&st, path)?;
    Ok(pull_info(repo, &repo.pulls[&n]))
}

/// Submits a review (`pull_request_review` `submitted`).
pub async fn add_review(
    shared: &Shared,
    path: &str,
    n: u64,
    spec: ReviewSpec,
) -> Result<ReviewInfo> {
    let state = spec.state.to_ascii_uppercase();
    if !["APPROVED", "CHANGES_REQUESTED", "COMMENTED"].contains(&state.as_str()) {
        bail!("review state must be APPROVED, CHANGES_REQUESTED or COMMENTED");
    }
    let mut st = shared.state.lock().await;
    st.user(&spec.user);
    let id = st.id();
    let p = pull_mut(&mut st, path, n)?;
    let r = Review {
        id,
        user: spec.user.clone(),
        state,
        body: spec.body.clone().unwrap_or_default(),
        commit_id: p.head_sha.clone(),
        submitted_at: now(),
    };
    p.reviews.push(r.clone());
    p.updated_at = now();
    let ev = Event::Review {
        number: n,
        review_id: id,
        sender: spec.user.clone(),
    };
    webhooks::emit(shared, &mut st, path, vec![ev]).await;
    Ok(ReviewInfo {
        id,
        user: r.user,
        state: r.state,
        body: r.body,
        commit_id: r.commit_id,
    })
}

/// Admin view of a comment.
pub fn comment_info(c: &Comment) -> CommentInfo {
    CommentInfo {
        id: c.id,
        number: c.number,
        user: c.user.clone(),
        body: c.body.clone(),
        edit_count: c.edit_count,
        created_at: iso(c.created_at),
        updated_at: iso(c.updated_at),
    }
}

/// Adds an issue comment / MR note on a PR (`issue_comment` `created`, GitLab `Note Hook`).
pub async fn add_comment(
    shared: &Shared,
    path: &str,
    n: u64,
    user: &str,
    body: &str,
) -> Result<Comment> {
    let mut st = shared.state.lock().await;
    st.user(user);
    let id = st.id();
    let repo = repo_mut(&mut st, path)?;
    if !repo.pulls.contains_key(&n) {
        bail!("no pull request #{n}");
    }
    let t = now();
    let c = Comment {
        id,
        number: n,
        user: user.to_string(),
        body: body.to_string(),
        created_at: t,
        updated_at: t,
        edit_count: 0,
    };
    repo.comments.push(c.clone());
    let ev = Event::IssueComment {
        number: n,
        comment_id: id,
        action: "created".into(),
        sender: user.to_string(),
    };
    webhooks::emit(shared, &mut st, path, vec![ev]).await;
    Ok(c)
}

/// Edits a comment in place (`issue_comment` `edited`), counting edits.
pub async fn edit_comment(
    shared: &Shared,
    path: &str,
    id: u64,
    user: &str,
    body: &str,
) -> Result<Comment> {
    let mut st = shared.state.lock().await;
    let repo = repo_mut(&mut st, path)?;
    let c = repo
        .comments
        .iter_mut()
        .find(|c| c.id == id)
        .context("no such comment")?;
    c.body = body.to_string();
    c.updated_at = now();
    c.edit_count += 1;
    let c = c.clone();
    let ev = Event::IssueComment {
        number: c.number,
        comment_id: id,
        action: "edited".into(),
        sender: user.to_string(),
    };
    webhooks::emit(shared, &mut st, path, vec![ev]).await;
    Ok(c)
}

/// Deletes a comment.
pub async fn delete_comment(shared: &Shared, path: &str, id: u64) -> Result<()> {
    let mut st = shared.state.lock().await;
    let repo = repo_mut(&mut st, path)?;
    let before = repo.comments.len();
    repo.comments.retain(|c| c.id != id);
    if repo.comments.len() == before {
        bail!("no such comment");
    }
    Ok(())
}

/// Admin view of a status.
pub fn status_info(s: &Status) -> StatusInfo {
    StatusInfo {
        id: s.id,
        sha: s.sha.clone(),
        context: s.context.clone(),
        state: s.state.clone(),
        description: s.description.clone(),
        target_url: s.target_url.clone(),
        creator: s.creator.clone(),
        created_at: iso(s.created_at),
    }
}

/// Records a commit status (the forge's own vocabulary is kept as given), written by CI through
/// the admin API or by a client through REST, and sends the `status` webhook (GitHub, Gitea).
pub async fn set_status(
    shared: &Shared,
    path: &str,
    sha: &str,
    spec: StatusSpec,
) -> Result<Status> {
    let mut st = shared.state.lock().await;
    let creator = spec.user.clone().unwrap_or_else(|| "ci-bot".into());
    st.user(&creator);
    let id = st.id();
    let repo = repo_ref(&st, path)?;
    let full = Git::new(&repo.git_dir)
        .rev_parse(sha)
        .await
        .with_context(|| format!("No commit found for SHA: {sha}"))?;
    let git_ref = repo
        .branches
        .iter()
        .find(|(_, s)| **s == full)
        .map(|(b, _)| b.clone());
    let t = now();
    let s = Status {
        id,
        sha: full,
        context: spec.context,
        state: spec.state,
        description: spec.description,
        target_url: spec.target_url,
        creator,
        git_ref,
        created_at: t,
        updated_at: t,
    };
    repo_mut(&mut st, path)?.statuses.push(s.clone());
    webhooks::emit(shared, &mut st, path, vec![Event::Status { status_id: id }]).await;
    Ok(s)
}

/// Admin view of a check run.
pub fn check_run_info(c: &CheckRun) -> CheckRunInfo {
    CheckRunInfo {
        id: c.id,
        head_sha: c.head_sha.clone(),
        name: c.name.clone(),
        status: c.status.clone(),
        conclusion: c.conclusion.clone(),
        title: c.title.clone(),
        summary: c.summary.clone(),
        text: c.text.clone(),
        app_id: c.app_id,
        update_count: c.update_count,
    }
}

/// Records a check run as another App (external CI) would.
pub async fn add_check_run(
    shared: &Shared,
    path: &str,
    spec: CheckRunSpec,
) -> Result<CheckRunInfo> {
    let mut st = shared.state.lock().await;
    let id = st.id();
    let suite_id = st.id();
    let t = now();
    let status = spec.status.clone().unwrap_or_else(|| "completed".into());
    let conclusion = if status == "completed" {
        Some(spec.conclusion.clone().unwrap_or_else(|| "success".into()))
    } else {
        None
    };
    let c = CheckRun {
        id,
        suite_id,
        head_sha: spec.head_sha.clone(),
        name: spec.name.clone(),
        completed_at: conclusion.as_ref().map(|_| t),
        status,
        conclusion,
        started_at: Some(t),
        external_id: None,
        details_url: None,
        title: None,
        summary: None,
        text: None,
        app_id: spec.app_id.unwrap_or(0),
        update_count: 0,
    };
    repo_mut(&mut st, path)?.check_runs.push(c.clone());
    Ok(check_run_info(&c))
}

/// Admin view of deployments.
pub fn deployment_infos(repo: &Repo) -> Vec<DeploymentInfo> {
    repo.deployments
        .iter()
        .map(|d| DeploymentInfo {
            id: d.id,
            sha: d.sha.clone(),
            r#ref: d.git_ref.clone(),
            environment: d.environment.clone(),
            creator: d.creator.clone(),
            description: d.description.clone(),
            statuses: d
                .statuses
                .iter()
                .map(|s| DeploymentStatusInfo {
                    id: s.id,
                    state: s.state.clone(),
                    description: s.description.clone(),
                    environment_url: s.environment_url.clone(),
                    log_url: s.log_url.clone(),
                    creator: s.creator.clone(),
                })
                .collect(),
        })
        .collect()
}

/// Admin view of the environments the deployments imply, first deployed first.
pub fn environment_infos(repo: &Repo) -> Vec<EnvironmentInfo> {
    repo.environment_names()
        .into_iter()
        .map(|name| EnvironmentInfo {
            name: name.to_string(),
            state: repo.environment_state(name).to_string(),
            external_url: repo.environment_url(name),
            deployment_count: repo
                .deployments
                .iter()
                .filter(|d| d.environment == name)
                .count(),
        })
        .collect()
}

/// Admin view of a hook.
pub fn hook_info(h: &Hook) -> HookInfo {
    HookInfo {
        id: h.id,
        url: h.url.clone(),
        events: h.events.clone(),
        has_secret: h.secret.is_some(),
    }
}

/// Adds a webhook; starts its delivery worker; GitHub sends `ping` right away.
pub async fn add_hook(shared: &Shared, path: &str, spec: HookSpec) -> Result<HookInfo> {
    url::Url::parse(&spec.url).with_context(|| format!("invalid hook URL {}", spec.url))?;
    let mut st = shared.state.lock().await;
    let id = st.id();
    let (tx, rx) = mpsc::unbounded_channel();
    let hook = Hook {
        id,
        url: spec.url.clone(),
        secret: spec.secret.clone(),
        events: spec.events.clone(),
        created_at: now(),
        queue: tx,
    };
    let forge = {
        let repo = repo_mut(&mut st, path)?;
        repo.hooks.push(hook.clone());
        repo.forge
    };
    webhooks::spawn_worker(shared.clone(), rx);
    if forge == Forge::Github {
        webhooks::emit(shared, &mut st, path, vec![Event::Ping { hook_id: id }]).await;
    }
    Ok(hook_info(&hook))
}
