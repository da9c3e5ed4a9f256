//! Real git repositories on disk, driven through the stock `git` CLI.
//!
//! Flow: a repository is created with `git init --bare`; admin pushes go through one
//! `git fast-import` process per push (a real commit with the given author, so SHAs are real
//! and stable); merges use `git merge-tree --write-tree` + `git commit-tree` (no work tree);
//! every read (branch heads, commits, diffs) is answered from the repository itself. The user's
//! own git configuration is ignored so results do not depend on the machine.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

/// The SHA of the empty tree, used to diff a root commit.
pub const EMPTY_TREE: &str = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";

/// A commit as read back from git.
#[derive(Debug, Clone)]
pub struct CommitInfo {
    pub sha: String,
    pub tree: String,
    pub parents: Vec<String>,
    pub author_name: String,
    pub author_email: String,
    pub author_time: i64,
    pub committer_name: String,
    pub committer_email: String,
    pub committer_time: i64,
    pub message: String,
}

impl CommitInfo {
    /// First line of the message.
    pub fn title(&self) -> &str {
        self.message.lines().next().unwrap_or("")
    }
}

/// One changed file between two commits.
#[derive(Debug, Clone)]
pub struct FileDiff {
    pub filename: String,
    pub previous_filename: Option<String>,
    /// GitHub vocabulary: `added`, `removed`, `modified`, `renamed`, `copied`, `changed`.
    pub status: String,
    pub additions: u64,
    pub deletions: u64,
    pub patch: Option<String>,
    pub old_sha: String,
    pub new_sha: String,
    pub old_mode: String,
    pub new_mode: String,
}

/// Who a commit is attributed to.
#[derive(Debug, Clone)]
pub struct Signature {
    pub name: String,
    pub email: String,
    pub time: i64,
}

/// Runs git against one bare repository.
#[derive(Debug, Clone)]
pub struct Git {
    dir: PathBuf,
}

fn base_command() -> Command {
    let mut c = Command::new("git");
    // Isolate from the machine's configuration (signing, hooks, templates, aliases).
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    c
}

impl Git {
    /// Opens (does not create) the repository at `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The repository directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `git init --bare` with the settings the emulator relies on.
    pub async fn init_bare(dir: &Path, default_branch: &str) -> Result<Self> {
        if let Some(parent) = dir.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let out = base_command()
            .arg("init")
            .arg("--bare")
            .arg("--quiet")
            .arg(format!("--initial-branch={default_branch}"))
            .arg(dir)
            .output()
            .await
            .context("spawning git init")?;
        if !out.status.success() {
            bail!("git init failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        let g = Self::new(dir);
        // Pull refs of forks are fetched by SHA; pushes over HTTP are refused (the admin API is
        // the only writer, so the cached refs and webhooks stay truthful).
        g.run(&["config", "uploadpack.allowAnySHA1InWant", "true"])
            .await?;
        g.run(&["config", "http.receivepack", "false"]).await?;
        g.run(&["config", "http.uploadpack", "true"]).await?;
        Ok(g)
    }

    async fn run(&self, args: &[&str]) -> Result<String> {
        let out = base_command()
            .arg("--git-dir")
            .arg(&self.dir)
            .args(args)
            .output()
            .await
            .with_context(|| format!("spawning git {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    async fn run_env(&self, args: &[&str], env: &[(&str, String)]) -> Result<String> {
        let mut c = base_command();
        c.arg("--git-dir").arg(&self.dir).args(args);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = c
            .output()
            .await
            .with_context(|| format!("spawning git {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "git {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Branch name → head SHA, from the real refs.
    pub async fn branches(&self) -> Result<BTreeMap<String, String>> {
        let out = self
            .run(&[
                "for-each-ref",
                "--format=%(refname)%00%(objectname)",
                "refs/heads/",
            ])
            .await?;
        Ok(out
            .lines()
            .filter_map(|l| {
                let (r, sha) = l.split_once('\0')?;
                Some((r.strip_prefix("refs/heads/")?.to_string(), sha.to_string()))
            })
            .collect())
    }

    /// Resolves a revision (branch, tag, SHA, `refs/...`) to a commit SHA.
    pub async fn rev_parse(&self, rev: &str) -> Option<String> {
        if rev.starts_with('-') {
            return None;
        }
        let spec = format!("{rev}^{{commit}}");
        self.run(&["rev-parse", "--verify", "--quiet", &spec])
            .await
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| s.len() == 40)
    }

    /// Writes one commit on `branch` (child of `parent`) with `files` changed (`None` deletes).
    /// Returns the new SHA.
    pub async fn commit(
        &self,
        branch: &str,
        parent: Option<&str>,
        files: &BTreeMap<String, Option<String>>,
        message: &str,
        author: &Signature,
    ) -> Result<String> {
        let mut stream: Vec<u8> = Vec::new();
        let ident = format!(
            "{} <{}> {} +0000",
            author.name.replace(['<', '>'], ""),
            author.email,
            author.time
        );
        stream.extend_from_slice(format!("commit refs/heads/{branch}\n").as_bytes());
        stream.extend_from_slice(format!("author {ident}\ncommitter {ident}\n").as_bytes());
        let msg = if message.ends_with('\n') {
            message.to_string()
        } else {
            format!("{message}\n")
        };
        stream.extend_from_slice(format!("data {}\n", msg.len()).as_bytes());
        stream.extend_from_slice(msg.as_bytes());
        // Without `from` the commit is a root commit (only used for a repository's first commit).
        if let Some(p) = parent {
            stream.extend_from_slice(format!("from {p}\n").as_bytes());
        }
        for (path, content) in files {
            let path = path.trim_start_matches('/');
            if path.is_empty() || path.contains('\n') {
                bail!("invalid file path {path:?}");
            }
            match content {
                Some(c) => {
                    stream.extend_from_slice(
                        format!("M 100644 inline {path}\ndata {}\n", c.len()).as_bytes(),
                    );
                    stream.extend_from_slice(c.as_bytes());
                    stream.push(b'\n');
                }
                None => stream.extend_from_slice(format!("D {path}\n").as_bytes()),
            }
        }
        stream.extend_from_slice(b"\ndone\n");

        let mut child = base_command()
            .arg("--git-dir")
            .arg(&self.dir)
            .args(["fast-import", "--quiet", "--done", "--force"])
            .stdin(Stdio::piped())
            .spawn()
            .context("spawning git fast-import")?;
        let mut stdin = child.stdin.take().context("fast-import stdin")?;
        stdin.write_all(&stream).await?;
        drop(stdin);
        let out = child.wait_with_output().await?;
        if !out.status.success() {
            bail!(
                "git fast-import failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        self.rev_parse(&format!("refs/heads/{branch}"))
            .await
            .context("branch missing after fast-import")
    }

    /// Points `refname` at `sha` (creating it).
    pub async fn update_ref(&self, refname: &str, sha: &str) -> Result<()> {
        self.run(&["update-ref", refname, sha]).await.map(|_| ())
    }

    /// Deletes `refname`.
    pub async fn delete_ref(&self, refname: &str) -> Result<()> {
        self.run(&["update-ref", "-d", refname]).await.map(|_| ())
    }

    /// Copies `sha` (and its history) from another repository into `refname` here: how a fork
    /// PR's head becomes `refs/pull/N/head` in the base repository, as on GitHub.
    pub async fn fetch_from(&self, other: &Path, sha: &str, refname: &str) -> Result<()> {
        let other = other.to_string_lossy().into_owned();
        let spec = format!("+{sha}:{refname}");
        self.run(&["fetch", "--quiet", "--no-tags", &other, &spec])
            .await
            .map(|_| ())
    }

    /// Copies every branch of another repository (how a fork starts).
    pub async fn fetch_branches_from(&self, other: &Path) -> Result<()> {
        let other = other.to_string_lossy().into_owned();
        self.run(&[
            "fetch",
            "--quiet",
            "--no-tags",
            &other,
            "+refs/heads/*:refs/heads/*",
        ])
        .await
        .map(|_| ())
    }

    /// Merge base of two commits.
    pub async fn merge_base(&self, a: &str, b: &str) -> Option<String> {
        self.run(&["merge-base", a, b])
            .await
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    }

    /// Creates a merge commit of `head` into `base` (no refs are moved). Fails on conflicts.
    pub async fn merge_commit(
        &self,
        base: &str,
        head: &str,
        message: &str,
        who: &Signature,
    ) -> Result<String> {
        let out = self
            .run(&["merge-tree", "--write-tree", base, head])
            .await
            .context("merge conflict")?;
        let tree = out.lines().next().unwrap_or("").trim().to_string();
        if tree.len() != 40 {
            bail!("merge-tree returned no tree");
        }
        let date = format!("{} +0000", who.time);
        let env = [
            ("GIT_AUTHOR_NAME", who.name.clone()),
            ("GIT_AUTHOR_EMAIL", who.email.clone()),
            ("GIT_AUTHOR_DATE", date.clone()),
            ("GIT_COMMITTER_NAME", who.name.clone()),
            ("GIT_COMMITTER_EMAIL", who.email.clone()),
            ("GIT_COMMITTER_DATE", date),
        ];
        let sha = self
            .run_env(
                &["commit-tree", &tree, "-p", base, "-p", head, "-m", message],
                &env,
            )
            .await?;
        Ok(sha.trim().to_string())
    }

    /// One commit.
    pub async fn commit_info(&self, rev: &str) -> Option<CommitInfo> {
        let sha = self.rev_parse(rev).await?;
        self.log(&["-1", &sha]).await.ok()?.into_iter().next()
    }

    /// Commits reachable from `head` but not from `base`, oldest first (a PR's commits).
    pub async fn commits_between(&self, base: &str, head: &str) -> Result<Vec<CommitInfo>> {
        let range = format!("{base}..{head}");
        self.log(&["--reverse", &range]).await
    }

    async fn log(&self, args: &[&str]) -> Result<Vec<CommitInfo>> {
        let mut a = vec![
            "log",
            "--format=%H%x00%T%x00%P%x00%an%x00%ae%x00%at%x00%cn%x00%ce%x00%ct%x00%B%x1e",
        ];
        a.extend_from_slice(args);
        let out = self.run(&a).await?;
        Ok(out
            .split('\x1e')
            .filter_map(|rec| {
                let rec = rec.trim_start_matches('\n');
                if rec.is_empty() {
                    return None;
                }
                let f: Vec<&str> = rec.splitn(10, '\0').collect();
                if f.len() < 10 {
                    return None;
                }
                Some(CommitInfo {
                    sha: f[0].to_string(),
                    tree: f[1].to_string(),
                    parents: f[2].split_whitespace().map(str::to_string).collect(),
                    author_name: f[3].to_string(),
                    author_email: f[4].to_string(),
                    author_time: f[5].parse().unwrap_or(0),
                    committer_name: f[6].to_string(),
                    committer_email: f[7].to_string(),
                    committer_time: f[8].parse().unwrap_or(0),
                    message: f[9].trim_end_matches('\n').to_string(),
                })
            })
            .collect())
    }

    /// Files changed from `from` to `to` with line counts and hunks, renames detected.
    pub async fn diff(&self, from: &str, to: &str) -> Result<Vec<FileDiff>> {
        let raw = self
            .run(&["diff", "--raw", "-z", "-M", "--no-abbrev", from, to])
            .await?;
        let numstat = self
            .run(&["diff", "--numstat", "-z", "-M", from, to])
            .await?;
        let patch = self
            .run(&["diff", "-M", "--no-color", "--no-ext-diff", from, to])
            .await?;

        let mut files = Vec::new();
        let mut it = raw.split('\0').filter(|s| !s.is_empty());
        while let Some(meta) = it.next() {
            let meta = meta.trim_start_matches(':');
            let parts: Vec<&str> = meta.split_whitespace().collect();
            if parts.len() < 5 {
                break;
            }
            let code = parts[4];
            let first = it.next().unwrap_or_default().to_string();
            let (filename, previous) = if code.starts_with('R') || code.starts_with('C') {
                (it.next().unwrap_or_default().to_string(), Some(first))
            } else {
                (first, None)
            };
            let status = match code.chars().next() {
                Some('A') => "added",
                Some('D') => "removed",
                Some('R') => "renamed",
                Some('C') => "copied",
                Some('T') => "changed",
                _ => "modified",
            };
            files.push(FileDiff {
                filename,
                previous_filename: previous,
                status: status.to_string(),
                additions: 0,
                deletions: 0,
                patch: None,
                old_mode: parts[0].to_string(),
                new_mode: parts[1].to_string(),
                old_sha: parts[2].to_string(),
                new_sha: parts[3].to_string(),
            });
        }

        // numstat -z: "add\tdel\tpath\0" or, for renames, "add\tdel\t\0old\0new\0".
        let mut counts = Vec::new();
        let mut it = numstat.split('\0');
        while let Some(rec) = it.next() {
            let rec = rec.trim_start_matches('\n');
            if rec.is_empty() {
                continue;
            }
            let mut p = rec.splitn(3, '\t');
            let add = p.next().unwrap_or("0").parse::<u64>().unwrap_or(0);
            let del = p.next().unwrap_or("0").parse::<u64>().unwrap_or(0);
            let path = p.next().unwrap_or("");
            if path.is_empty() {
                it.next();
                it.next();
            }
            counts.push((add, del));
        }
        for (f, (a, d)) in files.iter_mut().zip(counts) {
            f.additions = a;
            f.deletions = d;
        }

        // The patch lists files in the same order; keep each section's hunks (from the first
        // "@@"), which is what GitHub calls `patch` and GitLab calls `diff`.
        let mut sections: Vec<String> = Vec::new();
        for line in patch.split_inclusive('\n') {
            if line.starts_with("diff --git ") {
                sections.push(String::new());
            } else if let Some(s) = sections.last_mut() {
                s.push_str(line);
            }
        }
        for (f, s) in files.iter_mut().zip(sections) {
            if let Some(pos) = s.find("@@") {
                f.patch = Some(s[pos..].trim_end_matches('\n').to_string());
            }
        }
        Ok(files)
    }
}
