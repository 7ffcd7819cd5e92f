//! Child processes of a test: started with their output in a log file and
//! waited for until they are ready, and stopped on drop.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long a child may take to become ready.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// Starts `cmd` with stdout and stderr appended to `log` and stdin closed,
/// then polls `ready` every 50 ms until it is true. Panics, with the log,
/// when the child exits first or is not ready within 20 s (the child is
/// killed and reaped first).
pub fn start_ready(cmd: Command, log: &Path, ready: impl FnMut() -> bool) -> Child {
    start_ready_within(cmd, log, READY_WITHIN, ready)
}

/// [`start_ready`] with another limit than 20 s.
pub fn start_ready_within(
    mut cmd: Command,
    log: &Path,
    within: Duration,
    mut ready: impl FnMut() -> bool,
) -> Child {
    let out = std::fs::File::create(log)
        .unwrap_or_else(|e| panic!("create log file {}: {e}", log.display()));
    let mut child = cmd
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let deadline = Instant::now() + within;
    let log_text = || std::fs::read_to_string(log).unwrap_or_default();
    loop {
        if ready() {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{cmd:?} exited with {status} during start:\n{}", log_text());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} was not ready within {within:?}:\n{}", log_text());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed (SIGTERM, then SIGKILL) and reaped on drop.
pub struct ChildGuard {
    /// The child; `None` once terminated.
    pub child: Option<Child>,
}

impl ChildGuard {
    /// Guards `child`.
    pub fn new(child: Child) -> Self {
        Self { child: Some(child) }
    }

    /// The child's pid (0 once terminated).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits up to 5 s; returns the exit status. A child
    /// that already exited (and may have been reaped by a `try_wait`, so
    /// its pid is gone) is not signalled: a failing `kill` here would panic
    /// inside `Drop` during an unwind and abort the whole test binary,
    /// skipping every other test's cleanup.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        // Our own unreaped child, by its pid: it cannot be reused yet.
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .stderr(Stdio::null())
            .status()
            .ok();
        for _ in 0..50 {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        child.kill().ok();
        child.wait().ok()
    }

    /// Kills the child at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.terminate();
    }
}
