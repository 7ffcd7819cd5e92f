//! RAII guards: whatever a test creates is removed in `Drop`, so a failing
//! (panicking) test cleans up too. Temporary directories are
//! [`crate::temp::TempDir`], child processes [`crate::process::ChildGuard`].

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// Runs a command and panics with its output if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A bpffs directory for pinned maps, removed with everything in it.
pub struct PinDir {
    /// The directory (it need not exist yet).
    pub path: PathBuf,
}

impl PinDir {
    /// A fresh directory under /sys/fs/bpf (mounted if needed by the loader).
    pub fn new() -> Self {
        let path = PathBuf::from("/sys/fs/bpf").join(crate::unique_name("gwtest-"));
        Self { path }
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        remove_tree(&self.path);
    }
}

fn remove_tree(path: &Path) {
    // bpffs supports unlink and rmdir but not always remove_dir_all's
    // openat tricks; walk it by hand.
    if let Ok(entries) = std::fs::read_dir(path) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                remove_tree(&p);
            } else {
                std::fs::remove_file(&p).ok();
            }
        }
    }
    std::fs::remove_dir(path).ok();
}

/// A network namespace, deleted on drop.
pub struct Netns {
    /// The namespace's name (`ip netns` name, under /run/netns).
    pub name: String,
}

impl Netns {
    /// A fresh namespace with a unique name.
    pub fn new() -> Self {
        let name = crate::unique_name("gwns");
        sh(&["ip", "netns", "add", &name]);
        Self { name }
    }

    /// A command run inside the namespace.
    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Runs a command inside the namespace and panics if it fails.
    pub fn sh(&self, args: &[&str]) -> String {
        let mut full = vec!["ip", "netns", "exec", &self.name];
        full.extend_from_slice(args);
        sh(&full)
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        Command::new("ip")
            .args(["netns", "del", &self.name])
            .status()
            .ok();
    }
}

/// A veth pair; deleting one end deletes both.
pub struct Veth {
    /// The end in the current namespace.
    pub host: String,
    /// The end moved into the namespace.
    pub peer: String,
}

impl Veth {
    /// Creates `host` in the current namespace and `peer` inside `ns`.
    pub fn new(ns: &Netns) -> Self {
        let host = crate::unique_name("gwh");
        let peer = crate::unique_name("gwp");
        sh(&[
            "ip", "link", "add", &host, "type", "veth", "peer", "name", &peer,
        ]);
        let v = Self { host, peer };
        sh(&["ip", "link", "set", &v.peer, "netns", &ns.name]);
        v
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        Command::new("ip")
            .args(["link", "del", &self.host])
            .stderr(Stdio::null())
            .status()
            .ok();
    }
}

/// A process this test caused to start but is not the parent of (a
/// gateway started by `gateway upgrade`): stopped by its pid on drop
/// (SIGTERM, then SIGKILL after 10 s), only while that pid is still the
/// same process (its start time is checked, so a reused pid is never hit).
pub struct PidGuard {
    /// The process id.
    pub pid: u32,
    started: Option<String>,
}

impl PidGuard {
    /// Guards `pid`, remembering its start time.
    pub fn new(pid: u32) -> Self {
        Self {
            pid,
            started: start_time(pid),
        }
    }

    /// Running (not gone, not a zombie) and still the same process.
    pub fn alive(&self) -> bool {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return false;
        };
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        !rest.starts_with('Z') && start_time(self.pid) == self.started
    }
}

/// Field 22 of `/proc/<pid>/stat`: when the process started.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(") ")?.1;
    rest.split(' ').nth(19).map(str::to_owned)
}

impl Drop for PidGuard {
    fn drop(&mut self) {
        for (signal, wait) in [("-TERM", 100), ("-KILL", 50)] {
            if !self.alive() {
                return;
            }
            Command::new("kill")
                .args([signal, &self.pid.to_string()])
                .stderr(Stdio::null())
                .status()
                .ok();
            for _ in 0..wait {
                if !self.alive() {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }
    }
}

/// A client namespace wired to the host by a veth pair, with addresses in
/// one /24: `host_ip` on the host end, `client_ips` on the namespace end.
/// Dropping it deletes the namespace and the pair.
pub struct Link {
    /// The client namespace.
    pub ns: Netns,
    /// The pair: `host` on the host, `peer` in `ns`.
    pub veth: Veth,
    /// The host end's address (`<prefix>.1`).
    pub host_ip: String,
    /// The namespace end's addresses (`<prefix>.2`, ...).
    pub client_ips: Vec<String>,
}

impl Link {
    /// `prefix` is the /24 without its last octet (`198.18.7`); the host
    /// gets `.1`, the clients `.2`, `.3`, ...
    pub fn new(prefix: &str, clients: usize) -> Self {
        let ns = Netns::new();
        let veth = Veth::new(&ns);
        let host_ip = format!("{prefix}.1");
        let client_ips: Vec<String> = (0..clients)
            .map(|i| format!("{prefix}.{}", i + 2))
            .collect();
        sh(&[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &veth.host,
        ]);
        sh(&["ip", "link", "set", &veth.host, "up"]);
        for ip in &client_ips {
            ns.sh(&["ip", "addr", "add", &format!("{ip}/24"), "dev", &veth.peer]);
        }
        ns.sh(&["ip", "link", "set", &veth.peer, "up"]);
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        Self {
            ns,
            veth,
            host_ip,
            client_ips,
        }
    }
}
