//! The `gateway` binary's lifecycle, unprivileged (XDP off): `gateway
//! reload` under continuous load loses no request, a broken file is refused
//! with file:line and the old config keeps serving, listeners are added and
//! removed by `gateway reload` (one that cannot bind fails the reload, the
//! old listeners keep serving), an escalation outlives a restart, and
//! SIGTERM lets an
//! in-flight request finish before the process exits 0.

mod proxy_common;

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use proxy_common::*;
use test_support::{free_port, process::start_ready};

struct Gw {
    child: Child,
    socket: PathBuf,
    dir: PathBuf,
}

impl Drop for Gw {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write_config(path: &Path, port: u16, socket: &Path, origin: std::net::SocketAddr, prefix: &str) {
    write_config_with(path, port, socket, origin, prefix, "");
}

/// `write_config` with more `[[listeners]]` entries after `main`.
fn write_config_with(
    path: &Path,
    port: u16,
    socket: &Path,
    origin: std::net::SocketAddr,
    prefix: &str,
    listeners: &str,
) {
    std::fs::write(
        path,
        format!(
            "[xdp]\nenabled = false\n[admin]\nsocket = \"{}\"\n[demo]\nenabled = false\n\
             [[listeners]]\nname = \"main\"\naddress = \"127.0.0.1:{port}\"\n{listeners}\n\
             {}\n[[routes]]\nid = \"r\"\npath_prefix = \"/\"\nupstream = \"o\"\nrewrite_prefix = \"{prefix}\"\n",
            socket.display(),
            upstream("o", &[origin], "")
        ),
    )
    .unwrap();
}

fn start(origin: std::net::SocketAddr) -> (Gw, u16, PathBuf) {
    start_with(origin, "")
}

/// [`start`] with `extra` appended to the config (top-level sections).
fn start_with(origin: std::net::SocketAddr, extra: &str) -> (Gw, u16, PathBuf) {
    let (dir, port, socket, config) = fresh_dir();
    write_config(&config, port, &socket, origin, "/first/");
    if !extra.is_empty() {
        let text = std::fs::read_to_string(&config).unwrap();
        std::fs::write(&config, format!("{text}\n{extra}\n")).unwrap();
    }
    let gw = spawn(dir, socket, &config, port);
    (gw, port, config)
}

/// A new directory for one gateway: (directory, listener port, admin
/// socket path, config path); removed when its `Gw` is dropped.
fn fresh_dir() -> (PathBuf, u16, PathBuf, PathBuf) {
    let dir = std::env::temp_dir().join(format!("gw-life-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    let (port, socket, config) = (free_port(), dir.join("admin.sock"), dir.join("gw.toml"));
    (dir, port, socket, config)
}

/// Runs `gateway run --config config` and waits until `port` listens.
fn spawn(dir: PathBuf, socket: PathBuf, config: &Path, port: u16) -> Gw {
    spawn_program(
        env!("CARGO_BIN_EXE_gateway").as_ref(),
        dir,
        socket,
        config,
        port,
    )
}

/// [`spawn`] with the binary started as `program` (a path or symlink).
fn spawn_program(program: &Path, dir: PathBuf, socket: PathBuf, config: &Path, port: u16) -> Gw {
    let mut cmd = Command::new(program);
    cmd.args(["run", "--config"]).arg(config);
    // Ready once the admin socket answers and the proxy port accepts. A
    // connection to a port nothing listens on yet can succeed by itself
    // (TCP self-connect, when the kernel picks that very port as the
    // source): such a connection does not count.
    let ready = || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", port))
                .is_ok_and(|s| s.local_addr().ok() != s.peer_addr().ok())
    };
    let child = start_ready(cmd, &dir.join("gateway.log"), ready);
    Gw { child, socket, dir }
}

/// SIGTERM, then waits (at most 10 s) for the exit status.
fn stop(gw: &mut Gw) -> std::process::ExitStatus {
    let pid = gw.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    wait_exit(gw, Duration::from_secs(10))
}

/// Waits up to `within` for the gateway to exit; its exit status.
fn wait_exit(gw: &mut Gw, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(s) = gw.child.try_wait().unwrap() {
            return s;
        }
        assert!(Instant::now() < deadline, "gateway did not exit");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn cli(socket: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("--socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_nothing_and_a_broken_file_is_refused() {
    let origin = Origin::start("o").await;
    let (gw, port, config) = start(origin.addr);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // Continuous load: at most 3,000 requests or 30 s.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = tokio::spawn({
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(30);
            for _ in 0..3000 {
                if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                    break;
                }
                if get(addr, "/x", "").await.status == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    write_config(&config, port, &gw.socket, origin.addr, "/second/");
    let out = cli(&gw.socket, &["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(&config, "[[routes]]\nid = 5\n").unwrap();
    let out = cli(&gw.socket, &["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains(&format!("{}:2:", config.display())), "{err}");
    assert!(err.contains("running config is unchanged"), "{err}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(ok.load(Ordering::Relaxed) > 10);
    let paths: Vec<String> = origin.seen().iter().map(|s| s.uri.clone()).collect();
    assert!(
        paths.iter().any(|p| p.starts_with("/first/")),
        "before the reload"
    );
    assert_eq!(
        paths.last().map(|p| p.starts_with("/second/")),
        Some(true),
        "after it, and after the refused one"
    );
}

/// With one worker (tokio's single-threaded scheduler) a reload runs off
/// the serving thread: while the reload is stuck reading its file (here a
/// FIFO nobody writes yet), requests are still answered; once the file
/// arrives the reload applies. Before, the reload ran on the one serving
/// thread and every connection waited for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reload_does_not_stall_a_one_worker_gateway() {
    let origin = Origin::start("o").await;
    let (gw, port, config) = start_with(origin.addr, "[runtime]\nworker_threads = 1");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(addr, "/a", "").await.status, 200);

    // The config becomes a FIFO: the reload blocks in open(2) until we write.
    std::fs::remove_file(&config).unwrap();
    assert!(
        Command::new("mkfifo")
            .arg(&config)
            .status()
            .unwrap()
            .success()
    );
    let socket = gw.socket.clone();
    let reload = std::thread::spawn(move || cli(&socket, &["reload"]));
    // The reload is under way once the FIFO has a reader. Our end stays
    // open, so the reader waits in read(2) for the text.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut writer = loop {
        if let Some(w) = fifo_writer(&config) {
            break w;
        }
        assert!(
            Instant::now() < deadline,
            "the reload never opened the config"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let during = tokio::time::timeout(Duration::from_secs(10), get(addr, "/b", "")).await;
    let during = during.expect("a request waited for the reload: it ran on the serving thread");
    assert_eq!(during.status, 200, "{}", during.head);
    assert!(
        !reload.is_finished(),
        "the reload was still waiting for its file"
    );

    // Feed the file: the reload completes and applies.
    let text = {
        let tmp = config.with_extension("next");
        write_config(&tmp, port, &gw.socket, origin.addr, "/second/");
        let t = std::fs::read_to_string(&tmp).unwrap();
        format!("{t}\n[runtime]\nworker_threads = 1\n")
    };
    writer.write_all(text.as_bytes()).unwrap();
    drop(writer);
    let out = reload.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(addr, "/c", "").await.status, 200);
    let paths: Vec<String> = origin.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, ["/first/a", "/first/b", "/second/c"]);
}

/// The write end of `fifo` once a process has it open for reading: a
/// non-blocking open for writing succeeds only then (ENXIO otherwise).
fn fifo_writer(fifo: &Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo)
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_then_exits_zero() {
    let origin = Origin::with(
        "slow",
        Behaviour {
            delay: Some(Duration::from_millis(1500)),
            ..Default::default()
        },
    )
    .await;
    let (mut gw, port, _) = start(origin.addr);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let in_flight = tokio::spawn(async move { get(addr, "/slow", "").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = gw.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let r = in_flight.await.unwrap();
    assert_eq!(r.status, 200, "the in-flight request was cut: {}", r.head);
    let status = wait_exit(&mut gw, Duration::from_secs(10));
    assert!(status.success(), "exit status {status}");
    assert!(
        std::net::TcpStream::connect(addr).is_err(),
        "still accepting after exit"
    );
}

/// A CLI command whose reader goes away (`gateway print-default-config |
/// head -1`) ends by SIGPIPE like any Unix tool, never with a panic.
#[test]
fn cli_output_to_a_closed_pipe_is_not_a_panic() {
    use std::os::unix::process::ExitStatusExt as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_gateway"))
        .arg("print-default-config")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the child writes (the config is ~10 KiB,
    // more than one write may need, so at least one write meets EPIPE).
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?} {stderr}",
        out.status
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_and_removes_listeners_and_a_bind_failure_keeps_the_old_ones() {
    let origin = Origin::start("o").await;
    let (gw, port, config) = start(origin.addr);
    let main: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let extra_port = free_port();
    let extra: std::net::SocketAddr = format!("127.0.0.1:{extra_port}").parse().unwrap();
    assert!(std::net::TcpStream::connect(extra).is_err());

    // Add a listener.
    let add = format!("[[listeners]]\nname = \"extra\"\naddress = \"{extra}\"\n");
    write_config_with(&config, port, &gw.socket, origin.addr, "/first/", &add);
    let out = cli(&gw.socket, &["reload"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(get(extra, "/x", "").await.status, 200);
    assert_eq!(origin.seen().last().unwrap().uri, "/first/x");

    // A listener whose address is taken: refused, nothing changes (the
    // route prefix stays, `extra` keeps serving).
    let squatter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = squatter.local_addr().unwrap();
    let bad = format!("[[listeners]]\nname = \"taken\"\naddress = \"{taken}\"\n");
    write_config_with(&config, port, &gw.socket, origin.addr, "/second/", &bad);
    let out = cli(&gw.socket, &["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a reload with an unbindable listener succeeded"
    );
    assert!(err.contains("listener 'taken'"), "{err}");
    assert!(err.contains(&taken.to_string()), "{err}");
    assert!(err.contains("running config is unchanged"), "{err}");
    assert_eq!(get(extra, "/y", "").await.status, 200);
    assert_eq!(get(main, "/z", "").await.status, 200);
    let paths: Vec<String> = origin.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(paths, ["/first/x", "/first/y", "/first/z"]);

    // Remove it again (SIGHUP this time).
    drop(squatter);
    write_config(&config, port, &gw.socket, origin.addr, "/third/");
    let pid = gw.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(extra).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the removed listener still accepts"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(get(main, "/w", "").await.status, 200);
    assert_eq!(origin.seen().last().unwrap().uri, "/third/w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_survives_a_restart() {
    let origin = Origin::start("o").await;
    let (dir, port, socket, config) = fresh_dir();
    // Two malformed requests (20 points each) escalate; XDP is off, so the
    // block is enforced at L7 (429) and lives only in the escalator.
    let escalation = "[escalation]\nthreshold = 40\nttl_ladder = [\"1h\"]\n";
    write_config_with(&config, port, &socket, origin.addr, "/", escalation);
    let mut gw = spawn(dir.clone(), socket.clone(), &config, port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let smuggle = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    for _ in 0..2 {
        assert_eq!(raw(addr, smuggle).await.status, 400);
    }
    assert_eq!(get(addr, "/blocked", "").await.status, 429);
    assert!(stop(&mut gw).success());
    assert!(
        dir.join("escalation.state").exists(),
        "no state file beside the admin socket"
    );

    // Same config, new process: still blocked, with the time left.
    let gw = spawn(dir, socket, &config, port);
    let r = get(addr, "/after-restart", "").await;
    assert_eq!(r.status, 429, "the escalation was forgotten: {}", r.head);
    let left: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(left > 3000 && left <= 3600, "Retry-After {left}");
    assert!(
        origin.seen().is_empty(),
        "a blocked source reached the origin"
    );
    drop(gw);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_ladder_position_survives_a_restart_and_blocks_expire_meanwhile() {
    let origin = Origin::start("o").await;
    let (dir, port, socket, config) = fresh_dir();
    let escalation = "[escalation]\nthreshold = 40\nttl_ladder = [\"2s\", \"1h\"]\n";
    write_config_with(&config, port, &socket, origin.addr, "/", escalation);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let smuggle = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    let offend = || async {
        for _ in 0..2 {
            assert_eq!(raw(addr, smuggle).await.status, 400);
        }
        let r = get(addr, "/blocked", "").await;
        assert_eq!(r.status, 429, "{}", r.head);
        r.header("retry-after").unwrap().parse::<u64>().unwrap()
    };

    let mut gw = spawn(dir.clone(), socket.clone(), &config, port);
    assert!(offend().await <= 2, "first rung: 2 s");
    assert!(stop(&mut gw).success());
    // The 2 s block runs out while no gateway runs.
    std::thread::sleep(Duration::from_millis(2500));

    let gw = spawn(dir, socket, &config, port);
    assert_eq!(get(addr, "/free-again", "").await.status, 200);
    let left = offend().await;
    assert!(
        left > 60,
        "second rung (1 h) expected, got Retry-After {left}"
    );
    assert_eq!(origin.seen().len(), 1);
    drop(gw);
}

/// A process started by `gateway upgrade` (a successor, not our child):
/// stopped by its pid on drop.
struct Successor(u32);

impl Successor {
    fn alive(pid: u32) -> bool {
        // Gone, or a zombie waiting for its parent.
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
            .unwrap_or(false)
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        let pid = self.0.to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Self::alive(self.0) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        if Self::alive(self.0) {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
        }
    }
}

/// `gateway upgrade`, checked: returns the new pid.
fn upgrade(socket: &Path, old: u32) -> u32 {
    let out = cli(socket, &["upgrade"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // "upgraded: pid A -> B (...)"
    let pids: Vec<u32> = text
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .take(2)
        .collect();
    assert_eq!(pids.first(), Some(&old), "{text}");
    pids[1]
}

/// Bounded load on `addr` (at most 4,000 requests or 40 s, until `stop`):
/// with `keep_alive` one connection is reused until a response says
/// `Connection: close`. Returns the 200s and every failure.
fn load(addr: std::net::SocketAddr, keep_alive: bool, stop: Arc<AtomicBool>) -> (u64, Vec<String>) {
    use std::io::{BufRead as _, BufReader, Read as _, Write as _};
    let (mut ok, mut failed) = (0, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut conn: Option<BufReader<std::net::TcpStream>> = None;
    for i in 0..4000 {
        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
            break;
        }
        let result = (|| -> std::io::Result<(u16, bool)> {
            if conn.is_none() {
                let s = std::net::TcpStream::connect(addr)?;
                s.set_read_timeout(Some(Duration::from_secs(5)))?;
                conn = Some(BufReader::new(s));
            }
            let c = conn.as_mut().expect("connected");
            let close = if keep_alive {
                ""
            } else {
                "Connection: close\r\n"
            };
            write!(
                c.get_mut(),
                "GET /load/{i} HTTP/1.1\r\nHost: t\r\n{close}\r\n"
            )?;
            let mut line = String::new();
            c.read_line(&mut line)?;
            let status: u16 = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| std::io::Error::other(format!("status line {line:?}")))?;
            let (mut length, mut closes) = (0usize, !keep_alive);
            loop {
                line.clear();
                c.read_line(&mut line)?;
                let l = line.trim_end().to_ascii_lowercase();
                if l.is_empty() {
                    break;
                }
                if let Some(v) = l.strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                if l == "connection: close" {
                    closes = true;
                }
            }
            let mut body = vec![0; length];
            c.read_exact(&mut body)?;
            Ok((status, closes))
        })();
        match result {
            Ok((200, closes)) => {
                ok += 1;
                if closes {
                    conn = None;
                }
            }
            Ok((status, _)) => {
                failed.push(format!("request {i}: status {status}"));
                conn = None;
            }
            Err(e) => {
                failed.push(format!("request {i}: {e}"));
                conn = None;
            }
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_upgrades_under_load_lose_no_request() {
    three_upgrades_under_load("").await;
}

/// The same on one worker thread: tokio's single-threaded scheduler, where
/// the successor's blocking hand-over must not use `block_in_place`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_upgrades_under_load_on_one_worker_lose_no_request() {
    three_upgrades_under_load("[runtime]\nworker_threads = 1").await;
}

async fn three_upgrades_under_load(extra: &str) {
    let origin = Origin::start("o").await;
    let (mut gw, port, _config) = start_with(origin.addr, extra);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = [true, false, true, false]
        .into_iter()
        .map(|keep_alive| {
            let stop = stop.clone();
            std::thread::spawn(move || load(addr, keep_alive, stop))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    let mut pids = vec![gw.child.id()];
    let mut successors = Vec::new();
    for _ in 0..3 {
        let new = upgrade(&gw.socket, *pids.last().unwrap());
        successors.push(Successor(new));
        pids.push(new);
        std::thread::sleep(Duration::from_millis(400));
    }
    stop.store(true, Ordering::Relaxed);
    let (mut ok, mut failed) = (0, Vec::new());
    for c in clients {
        let (o, f) = c.join().unwrap();
        ok += o;
        failed.extend(f);
    }
    assert!(failed.is_empty(), "{} failed: {failed:?}", failed.len());
    assert!(ok > 200, "only {ok} requests");

    // The last process serves; the three before it finished and exited.
    assert_eq!(get(addr, "/after", "").await.status, 200);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = wait_exit(&mut gw, Duration::from_secs(15));
    assert!(status.success(), "the first process exited with {status}");
    for &pid in &pids[1..3] {
        while Successor::alive(pid) {
            assert!(Instant::now() < deadline, "process {pid} did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(Successor::alive(pids[3]));
    let out = cli(&gw.socket, &["reload"]);
    assert!(
        out.status.success(),
        "the admin socket is not the new process's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upgrade_that_cannot_start_leaves_the_running_gateway_serving() {
    let origin = Origin::start("o").await;
    let (mut gw, port, config) = start(origin.addr);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let good = std::fs::read_to_string(&config).unwrap();

    // The successor reads the config file again: a broken one stops it.
    std::fs::write(&config, "[[routes]]\nid = 5\n").unwrap();
    let out = cli(&gw.socket, &["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("goes on serving"), "{err}");
    assert!(err.contains(&format!("{}:2:", config.display())), "{err}");
    assert!(err.contains("exit status: 64"), "{err}");
    assert_eq!(get(addr, "/still", "").await.status, 200);
    assert!(gw.child.try_wait().unwrap().is_none());

    // Fixed: the next upgrade goes through.
    std::fs::write(&config, good).unwrap();
    let new = Successor(upgrade(&gw.socket, gw.child.id()));
    assert_eq!(get(addr, "/upgraded", "").await.status, 200);
    assert!(Successor::alive(new.0));
    // The successor owns the admin socket it moved into place: it removes
    // it when it stops (and the old process did not).
    assert!(gw.socket.exists());
    drop(new);
    assert!(!gw.socket.exists(), "the admin socket outlived the gateway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_survives_an_upgrade() {
    let origin = Origin::start("o").await;
    let (dir, port, socket, config) = fresh_dir();
    let escalation = "[escalation]\nthreshold = 40\nttl_ladder = [\"1h\"]\n";
    write_config_with(&config, port, &socket, origin.addr, "/", escalation);
    let gw = spawn(dir.clone(), socket.clone(), &config, port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let smuggle = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
    // One offence before the upgrade, one after: the count carried over.
    assert_eq!(raw(addr, smuggle).await.status, 400);
    let _new = Successor(upgrade(&socket, gw.child.id()));
    assert_eq!(get(addr, "/not-yet", "").await.status, 200);
    assert_eq!(raw(addr, smuggle).await.status, 400);
    let r = get(addr, "/blocked", "").await;
    assert_eq!(r.status, 429, "the first offence was forgotten: {}", r.head);
}

/// A successor that exits at once while something it started holds the
/// handover channel (a wrapper script at the binary's path): the upgrade
/// fails without waiting out its timeout, what the wrapper started is
/// stopped with it (it held the offered listening sockets), and once the
/// old gateway stops, its port is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrapper_that_exits_leaves_no_process_holding_the_sockets() {
    let origin = Origin::start("o").await;
    let (dir, port, socket, config) = fresh_dir();
    write_config(&config, port, &socket, origin.addr, "/");
    // Started through a symlink, which the upgrade follows again.
    let link = dir.join("gateway");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_gateway"), &link).unwrap();
    let mut gw = spawn_program(&link, dir.clone(), socket.clone(), &config, port);
    let script = dir.join("wrapper.sh");
    std::fs::write(&script, "#!/bin/sh\nsleep 60 &\nexit 3\n").unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::remove_file(&link).unwrap();
    std::os::unix::fs::symlink(&script, &link).unwrap();

    let started = Instant::now();
    let out = cli(&socket, &["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("exit status: 3"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited {:?} for a successor that had exited",
        started.elapsed()
    );
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert_eq!(get(addr, "/still", "").await.status, 200);
    assert!(
        !std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .any(|e| e.file_name().to_string_lossy().contains(".new-")),
        "the failed successor's admin socket was left behind"
    );
    assert!(stop(&mut gw).success());
    // Nothing holds the listening socket any more.
    std::net::TcpListener::bind(addr).expect("the port is still held after the gateway stopped");
}
