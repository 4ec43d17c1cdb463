//! One `outpost` process the harness started: its command line, its log file, and the ways to
//! end it (SIGKILL, SIGTERM) and start it again with the same arguments (so the same data dir,
//! addresses and node id).
//!
//! Every process is killed and reaped when its [`NodeProcess`] is dropped, on success and on
//! panic alike. As a second line of defence each child asks the kernel for SIGKILL when the
//! thread that started it ends (`PR_SET_PDEATHSIG`), so a test process that is itself killed
//! leaves no cluster behind. That is why processes are started from the test's own thread (the
//! one `#[tokio::test]` runs the test body on), never from a `spawn_blocking` thread, which
//! tokio ends after a while idle.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How to start a process again: everything but the process itself.
#[derive(Clone)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    /// A network namespace (an open `/run/netns/NAME`) to enter before `exec`.
    pub netns: Option<Arc<OwnedFd>>,
}

pub struct NodeProcess {
    name: String,
    launch: Launch,
    log: PathBuf,
    child: Option<Child>,
    starts: u32,
}

impl NodeProcess {
    /// Starts `launch` with stdout and stderr appended to `log`.
    pub fn start(name: &str, launch: Launch, log: PathBuf) -> NodeProcess {
        let mut p = NodeProcess {
            name: name.to_string(),
            launch,
            log,
            child: None,
            starts: 0,
        };
        p.restart();
        p
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The running process's id (None once it was killed or stopped).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the process again with the same arguments. Panics if it is running.
    pub fn restart(&mut self) {
        assert!(
            self.child.is_none(),
            "{} is still running; stop it first",
            self.name
        );
        self.starts += 1;
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap_or_else(|e| panic!("log file {}: {e}", self.log.display()));
        let _ = writeln!(
            log,
            "==== start #{} of {}: outpost {}",
            self.starts,
            self.name,
            self.launch.args.join(" ")
        );
        let err = log.try_clone().expect("log file handle");
        let mut cmd = Command::new(&self.launch.program);
        cmd.args(&self.launch.args)
            .envs(self.launch.env.iter().cloned())
            .env("RUST_LOG", "info,hickory_server=warn,hickory_proto=warn")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        let netns = self.launch.netns.as_ref().map(|fd| fd.as_raw_fd());
        // SAFETY: between fork and exec the closure calls only async-signal-safe functions
        // (prctl, setns, getppid) on values computed before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(fd) = netns
                    && libc::setns(fd, libc::CLONE_NEWNET) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.name));
        self.child = Some(child);
    }

    /// SIGKILL, then reap. Nothing of the process survives; its data dir stays as it was.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `grace` for a clean exit; SIGKILL after that. Returns the exit
    /// status, or None if it had to be killed.
    pub async fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on a child we have not reaped yet, so the pid is still ours.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        for _ in 0..10_000 {
            match child.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await
                }
                _ => break,
            }
        }
        eprintln!(
            "{} did not stop within {grace:?} of SIGTERM: killed",
            self.name
        );
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// If the process has exited on its own, how (and it is reaped).
    pub fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// Panics with the log if the process has exited on its own.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!(
                "{} exited ({status}):\n{}",
                self.name,
                tail(&self.log_text(), 60)
            );
        }
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            use std::io::Read;
            let _ = f.read_to_string(&mut text);
        }
        text
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    lines[from..].join("\n")
}
