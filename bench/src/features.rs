//! Scenario 5: cost of features. JWT verification per algorithm on one core
//! (`jsonwebtoken`, the library the gateway's `auth` module uses, with the
//! keys from `test-support/data/` and a generated Ed25519 key),
//! and TLS handshakes per second with and without session resumption
//! (a rustls client on the load core against our listener, NGINX and HAProxy,
//! all on the SUT core; each handshake is followed by one small request
//! the server answers itself, so the client reads the session tickets).

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    sync::Arc,
    time::{Duration, Instant},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Value, json};
use test_support::jwt::read_data;

use super::{
    Opts, Progress,
    cpu::pin_current_thread,
    servers::{LOAD_CPU, Proxy, SUT_CPU, Stack},
};

/// Number of progress steps `run` reports.
pub const STEPS: usize = 2;

fn keys(alg: Algorithm) -> (EncodingKey, DecodingKey) {
    match alg {
        Algorithm::HS256 => {
            let secret = b"0123456789abcdef0123456789abcdef";
            (
                EncodingKey::from_secret(secret),
                DecodingKey::from_secret(secret),
            )
        }
        Algorithm::RS256 => (
            EncodingKey::from_rsa_pem(&read_data("rsa_private.pem")).unwrap(),
            DecodingKey::from_rsa_pem(&read_data("rsa_public.pem")).unwrap(),
        ),
        Algorithm::ES256 => (
            EncodingKey::from_ec_pem(&read_data("ec_private.pem")).unwrap(),
            DecodingKey::from_ec_pem(&read_data("ec_public.pem")).unwrap(),
        ),
        Algorithm::EdDSA => {
            let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).expect("Ed25519 key");
            (
                EncodingKey::from_ed_pem(kp.serialize_pem().as_bytes()).unwrap(),
                DecodingKey::from_ed_pem(kp.public_key_pem().as_bytes()).unwrap(),
            )
        }
        other => panic!("no key for {other:?}"),
    }
}

/// Verifications per second of one token on this (pinned) thread.
fn jwt_rate(alg: Algorithm, secs: f64) -> (f64, u64) {
    let (enc, dec) = keys(alg);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({"iss": "https://bench.invalid/", "aud": "bench", "sub": "u", "exp": now + 3600, "iat": now});
    let token = jsonwebtoken::encode(&Header::new(alg), &claims, &enc).expect("sign");
    let mut v = Validation::new(alg);
    v.set_audience(&["bench"]);
    v.set_issuer(&["https://bench.invalid/"]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let mut n = 0u64;
    while Instant::now() < deadline && n < 50_000_000 {
        for _ in 0..16 {
            jsonwebtoken::decode::<Value>(&token, &dec, &v).expect("verify");
            n += 1;
        }
    }
    (n as f64 / start.elapsed().as_secs_f64(), n)
}

/// A TLS client trusting the bench certificate; session resumption only when
/// `resume` (the memory scenario opens fresh sessions).
pub(crate) fn tls_client(cert_der: &[u8], resume: bool) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(cert_der.to_vec()))
        .expect("trust bench certificate");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if !resume {
        cfg.resumption = rustls::client::Resumption::disabled();
    }
    Arc::new(cfg)
}

struct Handshakes {
    per_sec: f64,
    total: u64,
    resumed: u64,
    failed: u64,
}

/// Handshake + `GET /nothing-here` (answered 404 by the proxy itself) in a
/// loop on fresh TCP connections, for `secs`.
fn handshakes(port: u16, cfg: &Arc<rustls::ClientConfig>, secs: f64) -> Handshakes {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let (mut total, mut resumed, mut failed) = (0u64, 0u64, 0u64);
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline && total + failed < 1_000_000 {
        let ok = (|| -> std::io::Result<bool> {
            let mut tcp = TcpStream::connect(("127.0.0.1", port))?;
            tcp.set_nodelay(true)?;
            tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut conn = rustls::ClientConnection::new(cfg.clone(), name.clone())
                .map_err(std::io::Error::other)?;
            let mut s = rustls::Stream::new(&mut conn, &mut tcp);
            s.write_all(
                b"GET /nothing-here HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
            )?;
            // Read until the status line arrived (tickets come before it).
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            let is_resumed = conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            conn.send_close_notify();
            conn.complete_io(&mut tcp).ok();
            if !got.starts_with(b"HTTP/1.1 404") {
                return Err(std::io::Error::other("unexpected answer"));
            }
            Ok(is_resumed)
        })();
        match ok {
            Ok(r) => {
                total += 1;
                resumed += r as u64;
            }
            Err(_) => failed += 1,
        }
    }
    Handshakes {
        per_sec: total as f64 / start.elapsed().as_secs_f64(),
        total,
        resumed,
        failed,
    }
}

pub fn run(opts: Opts, progress: &mut Progress, stack: &Stack) -> Value {
    let secs = if opts.quick { 0.5 } else { 2.0 };
    progress.step(&format!(
        "features: JWT verify per algorithm ({secs}s each, CPU {SUT_CPU})"
    ));
    let jwt: Vec<Value> = std::thread::spawn(move || {
        pin_current_thread(SUT_CPU);
        [
            Algorithm::HS256,
            Algorithm::RS256,
            Algorithm::ES256,
            Algorithm::EdDSA,
        ]
        .iter()
        .map(|alg| {
            let (rate, n) = jwt_rate(*alg, secs);
            json!({ "algorithm": format!("{alg:?}"), "verifications": n, "per_sec_per_core": rate.round() as u64 })
        })
        .collect()
    })
    .join()
    .expect("JWT thread");

    let hs_secs = if opts.quick { 1.0 } else { 3.0 };
    progress.step(&format!(
        "features: TLS handshakes, gateway, nginx and haproxy, with and without resumption ({hs_secs}s each)"
    ));
    let cert = stack.certs.cert_der.clone();
    let targets: Vec<(Proxy, u16)> = [Proxy::Gateway, Proxy::Nginx, Proxy::Haproxy]
        .iter()
        .map(|p| (*p, stack.port(*p, true)))
        .collect();
    let tls: Vec<Value> = std::thread::spawn(move || {
        pin_current_thread(LOAD_CPU);
        let mut rows = Vec::new();
        for resume in [false, true] {
            let cfg = tls_client(&cert, resume);
            let mut per: Vec<f64> = Vec::new();
            for (p, port) in &targets {
                let h = handshakes(*port, &cfg, hs_secs);
                per.push(h.per_sec);
                let mut v = json!({
                    "server": p.name(),
                    "resumption": resume,
                    "handshakes": h.total,
                    "resumed": h.resumed,
                    "failed": h.failed,
                    "per_sec": h.per_sec.round() as u64,
                });
                if *p != Proxy::Gateway && per[0] > 0.0 && h.per_sec > 0.0 {
                    v["gateway_ratio"] = json!(((per[0] / h.per_sec) * 100.0).round() / 100.0);
                }
                rows.push(v);
            }
        }
        rows
    })
    .join()
    .expect("TLS thread");
    json!({ "jwt_seconds": secs, "jwt": jwt, "tls_seconds": hs_secs, "tls": tls })
}

pub fn markdown(v: &Value) -> String {
    let mut out = format!(
        "### JWT verification per core (jsonwebtoken, {}s per algorithm, CPU {SUT_CPU})\n\n| algorithm | verifications/s |\n|---|---|\n",
        v["jwt_seconds"]
    );
    for r in v["jwt"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {} |\n",
            r["algorithm"].as_str().unwrap_or(""),
            r["per_sec_per_core"]
        ));
    }
    out.push_str(&format!(
        "\n### TLS handshakes per second (rustls client on CPU {LOAD_CPU}, one connection at a time, {}s per row; each handshake is followed by one request answered 404 by the server itself)\n\n| server | resumption offered | handshakes/s | resumed | failed | gateway / this server |\n|---|---|---|---|---|---|\n",
        v["tls_seconds"]
    ));
    for r in v["tls"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "| {} | {} | {} | {} / {} | {} | {} |\n",
            r["server"].as_str().unwrap_or(""),
            r["resumption"],
            r["per_sec"],
            r["resumed"],
            r["handshakes"],
            r["failed"],
            super::ratio_cell(r, "gateway_ratio")
        ));
    }
    out
}
