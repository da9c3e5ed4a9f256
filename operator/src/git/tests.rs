//! Tests against real repositories built with git2 in temp dirs, served over `file://` (libgit2's
//! local transport) and over `git://` by a stock `git daemon` (the smart protocol, where shallow
//! fetches and SHA wants are exercised).

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};

use git2::{IndexAddOption, RepositoryInitOptions, Signature};

use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    repo: Repository,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.git");
        let mut opts = RepositoryInitOptions::new();
        opts.initial_head("main");
        let repo = Repository::init_opts(&path, &opts).unwrap();
        Fixture {
            _dir: dir,
            path,
            repo,
        }
    }

    fn url(&self) -> String {
        format!("file://{}", self.path.display())
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let p = self.path.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    fn link(&self, rel: &str, target: &str) {
        let p = self.path.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }

    fn commit(&self, msg: &str) -> Oid {
        let mut index = self.repo.index().unwrap();
        index
            .add_all(["*"].iter(), IndexAddOption::DEFAULT, None)
            .unwrap();
        index.write().unwrap();
        let tree = self.repo.find_tree(index.write_tree().unwrap()).unwrap();
        let sig = Signature::now("t", "t@example.com").unwrap();
        let parent = self
            .repo
            .head()
            .ok()
            .and_then(|h| h.target())
            .map(|o| self.repo.find_commit(o).unwrap());
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        self.repo
            .commit(Some("HEAD"), &sig, &sig, msg, &tree, &parents)
            .unwrap()
    }

    /// A repository with a deploy/ template and the nasty cases next to it.
    fn template() -> (Self, Oid) {
        let f = Fixture::new();
        f.write("README.md", b"# app\n");
        f.write("deploy/deployment.yaml", b"kind: Deployment\n");
        f.write("deploy/nested/service.yaml", b"kind: Service\n");
        f.write("deploy/run.sh", b"#!/bin/sh\n");
        let mut perm = fs::metadata(f.path.join("deploy/run.sh"))
            .unwrap()
            .permissions();
        perm.set_mode(0o755);
        fs::set_permissions(f.path.join("deploy/run.sh"), perm).unwrap();
        f.link("deploy/alias.yaml", "nested/service.yaml");
        f.write("evil/ok.yaml", b"kind: ConfigMap\n");
        f.link("evil/escape.yaml", "../README.md");
        f.link("abs/passwd", "/etc/passwd");
        let sha = f.commit("initial");
        (f, sha)
    }
}

fn files_by_path(files: &[TreeFile]) -> Vec<(&str, &[u8])> {
    let mut v: Vec<(&str, &[u8])> = files
        .iter()
        .map(|f| (f.path.as_str(), f.bytes.as_slice()))
        .collect();
    v.sort();
    v
}

#[test]
fn pure_helpers() {
    assert_eq!(
        normalize_subpath("./deploy//x/").unwrap(),
        vec!["deploy", "x"]
    );
    assert!(normalize_subpath("").unwrap().is_empty());
    for bad in ["/etc", "a/../b", "..", "a\\b"] {
        assert_eq!(
            normalize_subpath(bad).unwrap_err().category(),
            "InvalidConfig",
            "{bad}"
        );
    }
    let dir = vec!["a".to_string(), "b".to_string()];
    assert_eq!(
        resolve_link(&dir, "../c.yaml").unwrap(),
        vec!["a", "c.yaml"]
    );
    assert_eq!(
        resolve_link(&dir, "./d/e").unwrap(),
        vec!["a", "b", "d", "e"]
    );
    assert!(resolve_link(&dir, "../../../x").is_none());
    assert!(resolve_link(&dir, "/etc/passwd").is_none());
    assert!(resolve_link(&[], "..").is_none());

    let refs = RemoteRefs {
        head: None,
        refs: vec![
            ("HEAD".into(), "1".into()),
            ("refs/heads/main".into(), "1".into()),
            ("refs/heads/dev".into(), "2".into()),
            ("refs/tags/v1".into(), "1".into()),
        ],
    };
    assert_eq!(default_branch_of(&refs).as_deref(), Some("main"));
    let ambiguous = RemoteRefs {
        head: None,
        refs: vec![
            ("HEAD".into(), "1".into()),
            ("refs/heads/a".into(), "1".into()),
            ("refs/heads/b".into(), "1".into()),
        ],
    };
    assert_eq!(default_branch_of(&ambiguous), None);
    assert_eq!(
        branches(&refs.refs),
        vec![
            Branch {
                name: "main".into(),
                sha: "1".into()
            },
            Branch {
                name: "dev".into(),
                sha: "2".into()
            }
        ]
    );
    assert_eq!(
        sanitize_url("https://user:tok@h/o/r.git"),
        "https://h/o/r.git"
    );
    assert!(valid_sha(&"a".repeat(40)) && !valid_sha("main") && !valid_sha(&"g".repeat(40)));
}

#[tokio::test]
async fn ls_remote_and_default_branch_over_file() {
    let (f, sha) = Fixture::template();
    let branch = f.repo.find_commit(sha).unwrap();
    f.repo.branch("feature/x", &branch, false).unwrap();
    let refs = ls_remote_full(&f.url(), &Credentials::Anonymous, None)
        .await
        .unwrap();
    assert!(
        refs.refs
            .contains(&("refs/heads/main".to_string(), sha.to_string()))
    );
    assert!(
        refs.refs
            .contains(&("refs/heads/feature/x".to_string(), sha.to_string()))
    );
    assert_eq!(
        default_branch(&f.url(), &Credentials::Anonymous, None)
            .await
            .unwrap(),
        "main"
    );
    let missing = ls_remote(
        "file:///nonexistent/repo.git",
        &Credentials::Anonymous,
        None,
    )
    .await
    .unwrap_err();
    assert_eq!(missing.category(), "NotFound", "{missing}");
}

#[tokio::test]
async fn fetch_tree_reads_subtree_and_reuses_cache() {
    let (f, sha) = Fixture::template();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(cache_dir.path());
    let files = cache
        .fetch_tree(
            &f.url(),
            &sha.to_string(),
            "deploy",
            &Credentials::Anonymous,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        files_by_path(&files),
        vec![
            ("alias.yaml", b"kind: Service\n".as_slice()),
            ("deployment.yaml", b"kind: Deployment\n".as_slice()),
            ("nested/service.yaml", b"kind: Service\n".as_slice()),
            ("run.sh", b"#!/bin/sh\n".as_slice()),
        ]
    );
    assert!(
        files
            .iter()
            .find(|f| f.path == "run.sh")
            .unwrap()
            .executable
    );

    // A single file as subpath.
    let one = cache
        .fetch_tree(
            &f.url(),
            &sha.to_string(),
            "README.md",
            &Credentials::Anonymous,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        files_by_path(&one),
        vec![("README.md", b"# app\n".as_slice())]
    );

    // The commit is cached: the remote can disappear and the same SHA is still served.
    let url = f.url();
    drop(f);
    let again = cache
        .fetch_tree(
            &url,
            &sha.to_string(),
            "./deploy/",
            &Credentials::Anonymous,
            None,
        )
        .await
        .unwrap();
    assert_eq!(again.len(), 4);
    // Exactly one repository directory, no temp leftovers.
    let entries: Vec<String> = fs::read_dir(cache_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert!(!entries[0].starts_with(TMP_PREFIX));
}

#[tokio::test]
async fn fetch_tree_refuses_unsafe_trees_and_reports_missing() {
    let (f, sha) = Fixture::template();
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(cache_dir.path());
    let sha = sha.to_string();
    let anon = Credentials::Anonymous;

    let e = cache
        .fetch_tree(&f.url(), &sha, "evil", &anon, None)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "InvalidConfig");
    assert!(e.to_string().contains("points outside"), "{e}");
    let e = cache
        .fetch_tree(&f.url(), &sha, "abs", &anon, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("points outside"), "{e}");
    let e = cache
        .fetch_tree(&f.url(), &sha, "../x", &anon, None)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "InvalidConfig");
    let e = cache
        .fetch_tree(&f.url(), &sha, "/deploy", &anon, None)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "InvalidConfig");
    let e = cache
        .fetch_tree(&f.url(), &sha, "nope", &anon, None)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "NotFound", "{e}");
    let e = cache
        .fetch_tree(&f.url(), "main", "deploy", &anon, None)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "InvalidConfig");
    let e = cache
        .fetch_tree(&f.url(), &"0".repeat(40), "deploy", &anon, None)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "NotFound", "{e}");

    // Caps.
    let tight = GitCache::with_limits(
        cache_dir.path(),
        CacheLimits::default(),
        FetchLimits {
            max_files: 2,
            ..FetchLimits::default()
        },
    );
    let e = tight
        .fetch_tree(&f.url(), &sha, "deploy", &anon, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than 2 files"), "{e}");
    let tight = GitCache::with_limits(
        cache_dir.path(),
        CacheLimits::default(),
        FetchLimits {
            max_total_bytes: 20,
            ..FetchLimits::default()
        },
    );
    let e = tight
        .fetch_tree(&f.url(), &sha, "deploy", &anon, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than 20 bytes"), "{e}");
}

#[tokio::test]
async fn failed_fetch_leaves_no_temp_dirs_and_cache_is_evicted() {
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = GitCache::with_limits(
        cache_dir.path(),
        CacheLimits {
            max_repos: 1,
            max_bytes: u64::MAX,
        },
        FetchLimits::default(),
    );
    let e = cache
        .fetch_tree(
            "file:///nonexistent/x.git",
            &"a".repeat(40),
            "",
            &Credentials::Anonymous,
            None,
        )
        .await
        .unwrap_err();
    assert_ne!(e.category(), "Unsupported");
    assert_eq!(
        fs::read_dir(cache_dir.path()).unwrap().count(),
        0,
        "temp dir cleaned"
    );

    let (a, sha_a) = Fixture::template();
    let (b, sha_b) = Fixture::template();
    cache
        .fetch_tree(
            &a.url(),
            &sha_a.to_string(),
            "deploy",
            &Credentials::Anonymous,
            None,
        )
        .await
        .unwrap();
    let dir_a = cache.repo_dir(&CacheScope::new("", &Credentials::Anonymous), &a.url());
    assert!(dir_a.exists());
    cache
        .fetch_tree(
            &b.url(),
            &sha_b.to_string(),
            "deploy",
            &Credentials::Anonymous,
            None,
        )
        .await
        .unwrap();
    assert!(!dir_a.exists(), "least recently used repository evicted");
    assert!(
        cache
            .repo_dir(&CacheScope::new("", &Credentials::Anonymous), &b.url())
            .exists()
    );
}

#[tokio::test]
async fn ssh_credentials_require_known_hosts_before_connecting() {
    let creds = Credentials::Ssh {
        identity: secrecy::SecretString::from("-----BEGIN OPENSSH PRIVATE KEY-----\n".to_string()),
        known_hosts: "# nothing pinned\n".into(),
    };
    let e = ls_remote("ssh://git@127.0.0.1:1/o/r.git", &creds, None)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "InvalidConfig");
}

/// A stock `git daemon` on 127.0.0.1 serving `base`; killed on drop.
struct Daemon {
    child: Child,
    port: u16,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn git_daemon(base: &Path) -> Option<Daemon> {
    let port = TcpListener::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    // Run `git-daemon` itself: `git daemon` would run it as a child process that outlives a
    // kill of the `git` wrapper.
    let exec_path = Command::new("git").arg("--exec-path").output().ok()?;
    let exec_path = String::from_utf8(exec_path.stdout).ok()?;
    let child = Command::new(Path::new(exec_path.trim()).join("git-daemon"))
        .args([
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
            &format!("--base-path={}", base.display()),
        ])
        .arg(base)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let daemon = Daemon { child, port };
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Some(daemon);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test]
async fn smart_protocol_shallow_fetch_via_git_daemon() {
    let (f, first) = Fixture::template();
    f.write("deploy/deployment.yaml", b"kind: Deployment\nspec: {}\n");
    let second = f.commit("second");
    let Some(daemon) = git_daemon(f.path.parent().unwrap()) else {
        panic!("`git daemon` is required for this test (Debian package git)");
    };
    let url = format!("git://127.0.0.1:{}/app.git", daemon.port);
    let refs = ls_remote(&url, &Credentials::Anonymous, None)
        .await
        .unwrap();
    assert!(refs.contains(&("refs/heads/main".to_string(), second.to_string())));

    let cache_dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(cache_dir.path());
    let files = cache
        .fetch_tree(
            &url,
            &second.to_string(),
            "deploy",
            &Credentials::Anonymous,
            None,
        )
        .await
        .unwrap();
    let dep = files.iter().find(|f| f.path == "deployment.yaml").unwrap();
    assert_eq!(dep.bytes, b"kind: Deployment\nspec: {}\n");
    // Depth 1: the parent commit was not transferred.
    let cached =
        Repository::open_bare(cache.repo_dir(&CacheScope::new("", &Credentials::Anonymous), &url))
            .unwrap();
    assert!(cached.find_commit(second).is_ok());
    assert!(
        cached.find_commit(first).is_err(),
        "shallow fetch must not bring history"
    );

    // An older, unadvertised commit: stock git refuses the SHA want and no ref points at it.
    let e = cache
        .fetch_tree(
            &url,
            &first.to_string(),
            "deploy",
            &Credentials::Anonymous,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.category(), "NotFound", "{e}");
}

#[tokio::test]
async fn cache_is_scoped_by_namespace_and_credential() {
    let (f, sha) = Fixture::template();
    let Some(daemon) = git_daemon(f.path.parent().unwrap()) else {
        panic!("`git daemon` is required for this test (Debian package git)");
    };
    let url = format!("git://127.0.0.1:{}/app.git", daemon.port);
    let cache_dir = tempfile::tempdir().unwrap();
    let cache = GitCache::new(cache_dir.path());
    let token_a = Credentials::token("tenant-a");
    let a = CacheScope::new("team-a", &token_a);
    cache
        .fetch_tree_scoped(&a, &url, &sha.to_string(), "deploy", &token_a, None)
        .await
        .expect("tenant A fetches with its own credential");
    // The repository goes away: A is served from its cache, but nobody else is — not another
    // namespace with the same credential, not the same namespace with another credential.
    fs::rename(&f.path, f.path.with_extension("gone")).unwrap();
    cache
        .fetch_tree_scoped(&a, &url, &sha.to_string(), "deploy", &token_a, None)
        .await
        .expect("A's own cache hit");
    let token_b = Credentials::token("tenant-b");
    for (scope, creds) in [
        (CacheScope::new("team-b", &token_a), &token_a),
        (CacheScope::new("team-a", &token_b), &token_b),
        (
            CacheScope::new("team-a", &Credentials::Anonymous),
            &Credentials::Anonymous,
        ),
    ] {
        let e = cache
            .fetch_tree_scoped(&scope, &url, &sha.to_string(), "deploy", creds, None)
            .await
            .expect_err("another scope must fetch for itself");
        assert!(
            matches!(e.category(), "NotFound" | "Transient"),
            "the remote was asked: {e}"
        );
    }
    drop(daemon);
    assert_ne!(
        cache.repo_dir(&CacheScope::new("team-a", &token_a), &url),
        cache.repo_dir(&CacheScope::new("team-b", &token_a), &url)
    );
}

#[tokio::test]
async fn fetch_caps_abort_the_transfer_and_the_walk_stops_at_the_limits() {
    let (f, _) = Fixture::template();
    for i in 0..40 {
        f.write(
            &format!("deploy/many/f{i}.yaml"),
            format!("n: {i}\n").as_bytes(),
        );
    }
    f.write("deploy/big.bin", &vec![7u8; 200_000]);
    let sha = f.commit("many files");
    let Some(daemon) = git_daemon(f.path.parent().unwrap()) else {
        panic!("`git daemon` is required for this test (Debian package git)");
    };
    let url = format!("git://127.0.0.1:{}/app.git", daemon.port);
    let anon = Credentials::Anonymous;
    let cache_dir = tempfile::tempdir().unwrap();
    let few_objects = GitCache::with_limits(
        cache_dir.path(),
        CacheLimits::default(),
        FetchLimits {
            max_fetch_objects: 10,
            ..FetchLimits::default()
        },
    );
    let e = few_objects
        .fetch_tree(&url, &sha.to_string(), "deploy", &anon, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than 10 objects"), "{e}");
    assert_eq!(e.category(), "InvalidConfig");
    let few_bytes = GitCache::with_limits(
        cache_dir.path(),
        CacheLimits::default(),
        FetchLimits {
            max_fetch_bytes: 4_096,
            ..FetchLimits::default()
        },
    );
    let e = few_bytes
        .fetch_tree(&url, &sha.to_string(), "deploy", &anon, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("exceeded 4096 bytes"), "{e}");
    // Nothing half-fetched stays behind.
    assert_eq!(fs::read_dir(cache_dir.path()).unwrap().count(), 0);

    // The render limits: the walk refuses at the first file beyond them.
    let render = FetchLimits::for_render(&crate::render::Limits {
        max_files: 8,
        ..crate::render::Limits::default()
    });
    let walk = GitCache::with_limits(cache_dir.path(), CacheLimits::default(), render);
    let e = walk
        .fetch_tree(&url, &sha.to_string(), "deploy", &anon, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than 8 files"), "{e}");
    let small = GitCache::with_limits(
        cache_dir.path(),
        CacheLimits::default(),
        FetchLimits {
            max_total_bytes: 100_000,
            ..FetchLimits::default()
        },
    );
    let e = small
        .fetch_tree(&url, &sha.to_string(), "deploy", &anon, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("more than 100000 bytes"), "{e}");
}

#[tokio::test]
async fn the_guard_refuses_loopback_and_local_remotes_and_pins_allowed_ones() {
    let (f, sha) = Fixture::template();
    let Some(daemon) = git_daemon(f.path.parent().unwrap()) else {
        panic!("`git daemon` is required for this test (Debian package git)");
    };
    let url = format!("git://localhost:{}/app.git", daemon.port);
    let anon = Credentials::Anonymous;
    let strict = Guard::default();
    let e = ls_remote_guarded(&url, &anon, None, Some(&strict))
        .await
        .unwrap_err();
    assert_eq!(e.category(), "OutboundRefused", "{e}");
    assert!(e.to_string().contains("localhost"), "{e}");
    let e = ls_remote_guarded(&f.url(), &anon, None, Some(&strict))
        .await
        .unwrap_err();
    assert_eq!(e.category(), "OutboundRefused", "{e}");
    let cache_dir = tempfile::tempdir().unwrap();
    let e = GitCache::new(cache_dir.path())
        .with_guard(strict)
        .fetch_tree(&url, &sha.to_string(), "deploy", &anon, None)
        .await
        .unwrap_err();
    assert_eq!(e.category(), "OutboundRefused", "{e}");
    // With loopback allowed the same remote works, through the pinned address.
    let lo = Guard::new(
        vec![],
        vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
    );
    let ip_url = format!("git://127.0.0.1:{}/app.git", daemon.port);
    let refs = ls_remote_guarded(&ip_url, &anon, None, Some(&lo))
        .await
        .unwrap();
    assert!(refs.refs.iter().any(|(n, _)| n == "refs/heads/main"));
    let files = GitCache::new(cache_dir.path())
        .with_guard(lo)
        .fetch_tree(&ip_url, &sha.to_string(), "deploy", &anon, None)
        .await
        .unwrap();
    assert!(!files.is_empty());
}

#[test]
fn pinning_replaces_only_the_host() {
    let v4: std::net::IpAddr = "140.82.112.3".parse().unwrap();
    assert_eq!(
        pin_url("ssh://git@github.com:22/o/r.git", v4).unwrap(),
        "ssh://git@140.82.112.3:22/o/r.git"
    );
    assert_eq!(
        pin_url("git@github.com:o/r.git", v4).unwrap(),
        "git@140.82.112.3:o/r.git"
    );
    let v6: std::net::IpAddr = "2606:50c0::1".parse().unwrap();
    assert_eq!(
        pin_url("git@github.com:o/r.git", v6).unwrap(),
        "git@[2606:50c0::1]:o/r.git"
    );
    assert!(same_host("https://h.example/o/r", "https://h.example/x"));
    assert!(!same_host(
        "https://h.example/o/r",
        "https://evil.example/o/r"
    ));
    assert!(!same_host(
        "https://h.example/o/r",
        "https://h.example:8443/o/r"
    ));
}
