//! gRPC unary calls through the gateway and through NGINX `grpc_pass`,
//! interleaved in one run, against the same tonic server (the gRPC origin:
//! `gw-bench --grpc-origin PORT`, pinned to the load core beside the load
//! generator). The load generator is h2load (nghttp2): HTTP/2 with prior
//! knowledge, one thread on the load core, `CONNS` connections with up to
//! `STREAMS` calls in flight on each, every call the same 12-byte gRPC
//! message (`bench.Echo/Unary`, answered with the same message). h2load
//! counts a call as succeeded on HTTP 200; it does not read `grpc-status`,
//! so the origin's answer is checked once with a real call before the runs.

use std::{
    convert::Infallible,
    net::SocketAddr,
    task::{Context, Poll},
};

use serde_json::{Value, json};
use tonic::{
    Status,
    codegen::{BoxFuture, Service},
    server::{Grpc, UnaryService},
};
use tonic_prost::ProstCodec;

use super::{
    Opts, Progress, median,
    servers::{LOAD_CPU, Proxy, Stack, spawn_pinned, tree_cpu_ns, wait_port, which},
};

/// Number of progress steps `run` reports.
pub const STEPS: usize = 1;
/// Connections h2load opens to each proxy.
const CONNS: usize = 16;
/// Calls in flight per connection.
const STREAMS: usize = 8;

#[derive(Clone, PartialEq, prost::Message)]
struct Msg {
    #[prost(string, tag = "1")]
    text: String,
}

struct Echo;

impl UnaryService<Msg> for Echo {
    type Response = Msg;
    type Future = BoxFuture<tonic::Response<Msg>, Status>;
    fn call(&mut self, req: tonic::Request<Msg>) -> Self::Future {
        Box::pin(async move { Ok(tonic::Response::new(req.into_inner())) })
    }
}

/// `bench.Echo` with one method, `Unary`, that answers with its request.
#[derive(Clone)]
struct EchoService;

impl Service<http::Request<tonic::body::Body>> for EchoService {
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Infallible>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(async move {
            Ok(if req.uri().path() == "/bench.Echo/Unary" {
                Grpc::new(ProstCodec::<Msg, Msg>::default())
                    .unary(Echo, req)
                    .await
            } else {
                Status::unimplemented("no such method").into_http()
            })
        })
    }
}

/// The gRPC origin: serves `bench.Echo` on `127.0.0.1:port` until killed
/// (one thread: it shares the load core).
pub fn serve_origin(port: u16) -> ! {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port)))
            .await
            .expect("bind the gRPC origin");
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tonic::transport::Server::builder()
            .serve_with_incoming(EchoService, incoming)
            .await
            .expect("the gRPC origin serves");
    });
    std::process::exit(0)
}

/// The request body h2load sends: one length-prefixed message.
fn request_frame() -> Vec<u8> {
    let msg = prost::Message::encode_to_vec(&Msg {
        text: "hello grpc".into(),
    });
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u32::try_from(msg.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

/// One h2load run.
struct H2Run {
    calls: u64,
    rps: f64,
    failed: u64,
    mean_us: f64,
}

fn h2load(url: &str, data: &std::path::Path, secs: u64) -> H2Run {
    let out = std::process::Command::new("taskset")
        .arg("-c")
        .arg(LOAD_CPU.to_string())
        .arg(which("h2load"))
        .args(["-t1", "-c"])
        .arg(CONNS.to_string())
        .arg("-m")
        .arg(STREAMS.to_string())
        .arg("-D")
        .arg(secs.to_string())
        .arg("-d")
        .arg(data)
        .args([
            "-H",
            "content-type: application/grpc",
            "-H",
            "te: trailers",
            url,
        ])
        .output()
        .expect("run h2load");
    let text = String::from_utf8_lossy(&out.stdout);
    let fail = || -> ! {
        panic!(
            "h2load printed no summary for {url}:\n{text}{}",
            String::from_utf8_lossy(&out.stderr)
        )
    };
    // "finished in 6.00s, 26497.83 req/s, 2.12MB/s"
    let rps: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("finished in "))
        .and_then(|l| l.split(", ").nth(1))
        .and_then(|s| s.strip_suffix(" req/s"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| fail());
    // "requests: N total, N started, N done, S succeeded, F failed, E errored, T timeout"
    let field = |line: &str, name: &str| -> u64 {
        line.split(", ")
            .find_map(|p| p.trim().strip_suffix(name))
            .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    let req_line = text
        .lines()
        .find(|l| l.starts_with("requests:"))
        .unwrap_or_else(|| fail());
    let calls = field(req_line, "succeeded");
    let failed =
        field(req_line, "failed") + field(req_line, "errored") + field(req_line, "timeout");
    // "time for request:      154us     26.89ms      2.36ms ..." (min max mean sd)
    let mean_us = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("time for request:"))
        .and_then(|l| l.split_whitespace().nth(2))
        .map(parse_duration_us)
        .unwrap_or(0.0);
    H2Run {
        calls,
        rps,
        failed,
        mean_us,
    }
}

/// h2load's `154us`, `2.36ms`, `1.02s` as microseconds.
fn parse_duration_us(s: &str) -> f64 {
    let (num, scale) = if let Some(n) = s.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e6)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().unwrap_or(0.0) * scale
}

pub fn run(opts: Opts, progress: &mut Progress, stack: &Stack) -> Value {
    let secs = if opts.quick { 1 } else { 6 };
    let reps = if opts.quick { 1 } else { super::proxy::REPEATS };
    progress.step(&format!(
        "grpc: unary calls (gateway, nginx grpc_pass interleaved; {reps} x {secs}s each)"
    ));
    let port = stack.ports.origin_grpc;
    let log = stack.dir.0.join("grpc-origin.out");
    let exe = std::env::current_exe().expect("gw-bench path");
    let _origin = spawn_pinned(LOAD_CPU, &exe, &["--grpc-origin", &port.to_string()], &log);
    wait_port(port, "gRPC origin (tonic)", &log);
    let data = stack.dir.0.join("grpc-request.bin");
    std::fs::write(&data, request_frame()).unwrap();

    let targets = [
        (
            Proxy::Gateway,
            format!(
                "http://127.0.0.1:{}/bench.Echo/Unary",
                stack.port(Proxy::Gateway, false)
            ),
        ),
        (
            Proxy::Nginx,
            format!("http://127.0.0.1:{}/bench.Echo/Unary", stack.ports.ngx_grpc),
        ),
    ];
    // Warm-up (connections, pools), then interleaved runs.
    for (_, url) in &targets {
        h2load(url, &data, 1);
    }
    let mut runs: Vec<Vec<(H2Run, f64)>> = vec![Vec::new(), Vec::new()];
    for _ in 0..reps {
        for (i, (p, url)) in targets.iter().enumerate() {
            let pid = stack.pid(*p);
            let before = tree_cpu_ns(pid);
            let r = h2load(url, &data, secs);
            let cpu =
                tree_cpu_ns(pid).saturating_sub(before) as f64 / 1000.0 / r.calls.max(1) as f64;
            runs[i].push((r, cpu));
        }
    }
    let summary = |rs: &[(H2Run, f64)], name: &str| {
        let rps: Vec<f64> = rs.iter().map(|(r, _)| r.rps).collect();
        json!({
            "proxy": name,
            "runs": rs.len(),
            "calls": rs.iter().map(|(r, _)| r.calls).sum::<u64>(),
            "failed": rs.iter().map(|(r, _)| r.failed).sum::<u64>(),
            "rps": median(rps.clone()).round() as u64,
            "rps_min": rps.iter().copied().fold(f64::INFINITY, f64::min).round() as u64,
            "rps_max": rps.iter().copied().fold(0.0, f64::max).round() as u64,
            "mean_us": median(rs.iter().map(|(r, _)| r.mean_us).collect()).round() as u64,
            "cpu_us_per_call": (median(rs.iter().map(|(_, c)| *c).collect()) * 10.0).round() / 10.0,
        })
    };
    let mut gw = summary(&runs[0], "gateway");
    let ngx = summary(&runs[1], "nginx (grpc_pass)");
    let ratio = |a: &Value, b: &Value, k: &str| {
        let (a, b) = (a[k].as_f64().unwrap_or(0.0), b[k].as_f64().unwrap_or(0.0));
        if b > 0.0 {
            ((a / b) * 100.0).round() / 100.0
        } else {
            0.0
        }
    };
    gw["rps_ratio_vs_nginx"] = json!(ratio(&gw, &ngx, "rps"));
    gw["mean_ratio_vs_nginx"] = json!(ratio(&gw, &ngx, "mean_us"));
    gw["cpu_ratio_vs_nginx"] = json!(ratio(&gw, &ngx, "cpu_us_per_call"));
    json!({
        "seconds_per_run": secs,
        "repeats": reps,
        "connections": CONNS,
        "streams_per_connection": STREAMS,
        "load_generator": "h2load (nghttp2), 1 thread, prior-knowledge HTTP/2",
        "rows": [gw, ngx],
    })
}

pub fn markdown(v: &Value) -> String {
    if v.is_null() {
        return String::new();
    }
    let mut out = format!(
        "### gRPC unary calls ({} connections x {} streams, {} runs of {}s, interleaved; h2load and the tonic origin on CPU {}, proxies on CPU {})\n\n\
Both proxies forward over h2c to the same tonic server; the gateway's route has no auth, NGINX's location only `grpc_pass`. Medians of the runs (min–max); mean latency per call as h2load reports it (it has no percentiles); CPU µs/call as in the proxy table. Ratios are ours / NGINX.\n\n\
| proxy | calls/s | mean µs | CPU µs/call | failed | calls/s vs nginx | mean vs nginx | CPU vs nginx |\n|---|---|---|---|---|---|---|---|\n",
        v["connections"],
        v["streams_per_connection"],
        v["repeats"],
        v["seconds_per_run"],
        super::servers::LOAD_CPU,
        super::servers::SUT_CPU,
    );
    let f = super::ratio_cell;
    for r in v["rows"].as_array().into_iter().flatten() {
        let spread = if r["runs"].as_u64().unwrap_or(1) > 1 {
            format!("{} ({}–{})", r["rps"], r["rps_min"], r["rps_max"])
        } else {
            r["rps"].to_string()
        };
        out.push_str(&format!(
            "| {} | {spread} | {} | {} | {} | {} | {} | {} |\n",
            r["proxy"].as_str().unwrap_or(""),
            r["mean_us"],
            r["cpu_us_per_call"],
            r["failed"],
            f(r, "rps_ratio_vs_nginx"),
            f(r, "mean_ratio_vs_nginx"),
            f(r, "cpu_ratio_vs_nginx"),
        ));
    }
    out
}
