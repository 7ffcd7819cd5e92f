//! Heap allocations per proxied GET, counted (never timed): a counting
//! global allocator counts only the allocations made on the proxy's own
//! runtime threads, while the mock origin runs on another runtime and the
//! client is a blocking socket on the test thread. The budget is the count
//! the request path has today; lowering it is the L7 performance work's
//! job, raising it needs a reason in the commit.

mod proxy_common;

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use proxy_common::{Origin, PLAIN, proxy, upstream};

/// Allocations (including reallocations) per proxied keep-alive GET:
/// 121 before trace ids became integers, 90 after; 103 with the edge
/// hardening (strict authority, header-family stripping, request
/// buffering bookkeeping); 53 with the gateway's own upstream connection
/// pool (no hyper-util legacy client: no header copy per attempt, no task
/// or channels per request), security header values made once per config
/// and forwarding headers formatted on the stack; with metric labels
/// shared instead of copied, no access-log copies while the log is off, no
/// boxed future for phases that allow everything, and already-normal paths
/// copied as they are: 39; 40 with the pipeline future boxed per request
/// (one allocation that lives only while the request does, instead of
/// ~4 KiB held by every idle keep-alive connection in hyper's slot for it).
/// 20 with the per-request state owned by the request and lent to the
/// phases by `&mut` (no shared, locked extras), the request id, client
/// address, `Host` and path shared with the request instead of copied, no
/// body wrapper for a request without a body, and `Connection` options
/// removed without collecting them. What is left: hyper's own (head
/// buffers, custom header names, the client's response channel), the
/// pipeline future, the response body's timeout wrapper, and the values
/// that differ per request (request id, `traceparent`, `Forwarded`).
const BUDGET: u64 = 20;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Bytes allocated minus bytes freed on the proxy's threads.
static LIVE_BYTES: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);

/// The two tests share the counters: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn counted() -> bool {
    COUNTED.try_with(Cell::get).unwrap_or(false)
}

fn bytes(delta: i64) {
    if counted() {
        LIVE_BYTES.fetch_add(delta, Ordering::Relaxed);
    }
}

thread_local! {
    /// Set on the proxy runtime's threads only.
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn count() {
    // `try_with`: the thread-local may be gone while a thread exits.
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if PROFILING.load(Ordering::Relaxed) {
            record_site();
        }
    }
}

/// `ALLOC_SITES=1`: after the measurement, a few more requests are run
/// with every counted allocation's call site recorded (first frame outside
/// the allocator and std, and the first frame in the gateway) and the
/// sites are printed by count. A diagnosis aid for the performance work;
/// the budget check does not depend on it.
static PROFILING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static SITES: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

thread_local! {
    static IN_PROFILER: Cell<bool> = const { Cell::new(false) };
}

/// `LIVE_SITES=1` (idle-connection test): every counted allocation made
/// while the connections are opened is kept with its size and call site
/// until it is freed; the live ones are printed by site afterwards.
static TRACKING_LIVE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
static LIVE: std::sync::Mutex<Option<std::collections::HashMap<usize, (usize, String)>>> =
    std::sync::Mutex::new(None);

fn track_alloc(ptr: *mut u8, size: usize) {
    if !TRACKING_LIVE.load(Ordering::Relaxed) || !counted() {
        return;
    }
    if IN_PROFILER.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    IN_PROFILER.with(|c| c.set(true));
    let site = site();
    if let Some(map) = LIVE.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        map.insert(ptr as usize, (size, site));
    }
    IN_PROFILER.with(|c| c.set(false));
}

fn track_free(ptr: *mut u8) {
    if !TRACKING_LIVE.load(Ordering::Relaxed) {
        return;
    }
    if IN_PROFILER.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    IN_PROFILER.with(|c| c.set(true));
    if let Some(map) = LIVE.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        map.remove(&(ptr as usize));
    }
    IN_PROFILER.with(|c| c.set(false));
}

/// The first frame outside the allocator and std, and the first in the gateway.
fn site() -> String {
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    let mut symbols = bt
        .lines()
        .map(str::trim)
        .filter_map(|l| l.split_once(": ").map(|(_, s)| s.to_owned()))
        .filter(|s| {
            !s.starts_with("std::")
                && !s.starts_with("alloc::")
                && !s.starts_with("core::")
                && !s.contains("alloc_budget::")
                && !s.starts_with("<alloc::")
                && !s.starts_with("__rust")
        });
    let first = symbols.next().unwrap_or_default();
    let ours = symbols
        .find(|s| s.contains("gateway::"))
        .unwrap_or_default();
    format!("{first}  <=  {ours}")
}

fn record_site() {
    if IN_PROFILER.try_with(Cell::get).unwrap_or(true) {
        return;
    }
    IN_PROFILER.with(|c| c.set(true));
    let site = site();
    SITES.lock().unwrap().push(site);
    IN_PROFILER.with(|c| c.set(false));
}

// SAFETY: every call is forwarded unchanged to the system allocator; the
// counter is an atomic and the thread-local a const-initialized `Cell`
// (neither allocates).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        bytes(layout.size() as i64);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        track_alloc(p, layout.size());
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        bytes(layout.size() as i64);
        // SAFETY: as above.
        let p = unsafe { System.alloc_zeroed(layout) };
        track_alloc(p, layout.size());
        p
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        bytes(new_size as i64 - layout.size() as i64);
        track_free(ptr);
        // SAFETY: as above.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        track_alloc(p, new_size);
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        bytes(-(layout.size() as i64));
        track_free(ptr);
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sends one keep-alive GET and reads exactly one response (by its
/// Content-Length); returns the status.
fn get(conn: &mut TcpStream, buf: &mut Vec<u8>) -> u16 {
    conn.write_all(b"GET /api/items/1?x=1 HTTP/1.1\r\nHost: gw.test\r\nUser-Agent: alloc-budget\r\nAccept: */*\r\n\r\n")
        .unwrap();
    buf.clear();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).unwrap();
        assert!(n > 0, "the proxy closed the connection");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(buf);
        let Some(end) = text.find("\r\n\r\n") else {
            continue;
        };
        let len: usize = text[..end]
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .expect("a Content-Length on the response");
        if buf.len() >= end + 4 + len {
            return text[9..12].parse().unwrap();
        }
    }
}

/// The origin on a runtime of its own, the proxy on one whose threads are
/// counted; both runtimes are returned to keep them alive.
fn start() -> (
    [tokio::runtime::Runtime; 2],
    Origin,
    gateway::proxy::Proxy,
    SocketAddr,
) {
    let origin_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let origin = origin_rt.block_on(Origin::start("a"));
    let proxy_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_start(|| COUNTED.with(|c| c.set(true)))
        .build()
        .unwrap();
    let toml = format!(
        "{PLAIN}{}\n[[routes]]\nid = \"api\"\npath_prefix = \"/api/\"\nupstream = \"a\"\n",
        upstream("a", &[origin.addr], "")
    );
    let (proxy, addr) = proxy_rt.block_on(proxy(&toml));
    ([origin_rt, proxy_rt], origin, proxy, addr)
}

#[test]
fn proxied_get_stays_within_its_allocation_budget() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (_rts, origin, _proxy, addr) = start();

    let mut conn = TcpStream::connect(addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = Vec::with_capacity(8192);
    // Warm up: upstream connection pooled, lazily built state in place.
    for _ in 0..200 {
        assert_eq!(get(&mut conn, &mut buf), 200);
    }
    const N: u64 = 1000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for _ in 0..N {
        assert_eq!(get(&mut conn, &mut buf), 200);
    }
    let per_request = (ALLOCATIONS.load(Ordering::Relaxed) - before) / N;
    eprintln!("heap allocations per proxied GET: {per_request} (budget {BUDGET})");
    assert!(
        per_request <= BUDGET,
        "{per_request} heap allocations per proxied GET, over the budget of {BUDGET}"
    );
    assert!(
        origin.requests().len() as u64 >= N,
        "the origin saw the requests"
    );
    if std::env::var_os("ALLOC_SITES").is_some() {
        const P: usize = 5;
        PROFILING.store(true, Ordering::Relaxed);
        for _ in 0..P {
            assert_eq!(get(&mut conn, &mut buf), 200);
        }
        PROFILING.store(false, Ordering::Relaxed);
        let sites = std::mem::take(&mut *SITES.lock().unwrap());
        let mut counts = std::collections::HashMap::<String, usize>::new();
        for s in sites {
            *counts.entry(s).or_default() += 1;
        }
        let mut counts: Vec<_> = counts.into_iter().collect();
        counts.sort_by_key(|c| std::cmp::Reverse(c.1));
        for (site, n) in counts {
            eprintln!("{:5.1}  {site}", n as f64 / P as f64);
        }
    }
}

/// Heap bytes an idle keep-alive connection may hold on the proxy's side
/// (issue 15's target: at most 4 KiB per idle connection; hyper's HTTP/1
/// read and write buffers alone are 16 KiB).
const IDLE_CONNECTION_BYTES: i64 = 4096;

#[test]
fn idle_keep_alive_connections_are_parked_with_little_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let (_rts, _origin, _proxy, addr) = start();
    let mut buf = Vec::with_capacity(8192);
    // Warm up on a connection of its own (upstream connection pooled,
    // lazily built state in place), then close it and let it go.
    {
        let mut warm = TcpStream::connect(addr).unwrap();
        warm.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        for _ in 0..50 {
            assert_eq!(get(&mut warm, &mut buf), 200);
        }
    }
    std::thread::sleep(Duration::from_millis(300));

    const CONNS: i64 = 50;
    let live_sites = std::env::var_os("LIVE_SITES").is_some();
    if live_sites {
        *LIVE.lock().unwrap() = Some(Default::default());
        TRACKING_LIVE.store(true, Ordering::Relaxed);
    }
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let mut conns: Vec<TcpStream> = (0..CONNS)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            assert_eq!(get(&mut c, &mut buf), 200);
            c
        })
        .collect();
    // Idle for longer than the proxy's park delay (100 ms).
    std::thread::sleep(Duration::from_millis(600));
    let per_conn = (LIVE_BYTES.load(Ordering::Relaxed) - before) / CONNS;
    eprintln!(
        "heap bytes per idle keep-alive connection: {per_conn} (at most {IDLE_CONNECTION_BYTES})"
    );
    if live_sites {
        TRACKING_LIVE.store(false, Ordering::Relaxed);
        let live = LIVE.lock().unwrap().take().unwrap_or_default();
        let mut by_site = std::collections::HashMap::<String, (usize, usize)>::new();
        for (size, site) in live.into_values() {
            let e = by_site.entry(site).or_default();
            e.0 += 1;
            e.1 += size;
        }
        let mut by_site: Vec<_> = by_site.into_iter().collect();
        by_site.sort_by_key(|(_, (_, b))| std::cmp::Reverse(*b));
        for (site, (n, b)) in by_site.iter().take(25) {
            eprintln!(
                "{:7.0} B/conn {:5.1} allocs/conn  {site}",
                *b as f64 / CONNS as f64,
                *n as f64 / CONNS as f64
            );
        }
    }
    // Each parked connection still serves its next request.
    for c in &mut conns {
        assert_eq!(get(c, &mut buf), 200);
    }
    assert!(
        per_conn <= IDLE_CONNECTION_BYTES,
        "{per_conn} heap bytes per idle keep-alive connection, over {IDLE_CONNECTION_BYTES}"
    );
}
