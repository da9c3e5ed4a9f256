//! Server processes a test starts (operators, Gitea, Argo CD, redis): killed on drop, and, when the
//! control plane was started by this test process, recorded in the plane's pid directory as
//! `extra-<name>-<pid>.pid` so that the plane's watchdog stops them when the test process dies,
//! even by SIGKILL (cluster-down.sh stops every `extra-*` before the API server).

use anyhow::{Context as _, Result, bail};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A child process that cannot outlive the test that started it.
///
/// [`Cluster::state_dir`]: crate::cluster::Cluster::state_dir
#[derive(Debug)]
pub struct Supervised {
    child: Option<Child>,
    pid_file: Option<PathBuf>,
    name: String,
}

impl Supervised {
    /// Spawns `cmd` (the caller sets its arguments, environment and log files) as `name`.
    /// `plane_state` is [`Cluster::state_dir`] of the plane the process belongs to.
    pub fn spawn(plane_state: Option<&Path>, name: &str, cmd: &mut Command) -> Result<Supervised> {
        let child = cmd.spawn().with_context(|| format!("starting {name}"))?;
        let pid_file = plane_state.map(|dir| {
            dir.join("pids")
                .join(format!("extra-{name}-{}.pid", child.id()))
        });
        if let Some(pid_file) = &pid_file {
            // Same format as cluster-lib.sh: "<pid> <start time>", so cluster-down can tell a
            // recycled pid from ours.
            if let Some(start) = proc_start_time(child.id()) {
                std::fs::write(pid_file, format!("{} {start}\n", child.id()))?;
            }
        }
        Ok(Supervised {
            child: Some(child),
            pid_file,
            name: name.to_owned(),
        })
    }

    /// Pid of the process while it has not been stopped.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process has exited on its own (its status, if so).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.forget_pid();
    }

    /// SIGTERM and wait for the exit (SIGKILL after `timeout`); returns the exit code.
    pub fn terminate(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let Some(mut child) = self.child.take() else {
            return Ok(None);
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.forget_pid();
                return Ok(status.code());
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                self.forget_pid();
                bail!("{} did not exit within {timeout:?} of SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn forget_pid(&mut self) {
        if let Some(p) = self.pid_file.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Field 22 of /proc/<pid>/stat (start time in clock ticks), as cluster-lib.sh records it.
fn proc_start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(") ")?.1;
    after.split_whitespace().nth(19).map(str::to_owned)
}

/// A free loopback address (bound and released; racy only against other processes).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}
