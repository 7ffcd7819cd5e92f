//! Shared helpers for the auth tests: a loopback HTTPS server with a fresh
//! CA (rcgen) that records requests and answers with a switchable handler,
//! request builders, and (from test-support) token signing with the test
//! keys in `test-support/data/` and temp dirs.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary that includes this module uses a different subset"
)]

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use gateway::{
    auth::{AuthSection, Authenticator},
    config::Config,
};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use serde_json::Value;
pub use test_support::{
    jwt::{data, jwks, now, rs256, rsa_key, rsa2_key, sign},
    temp::TempDir,
};

/// Standard valid claims for issuer `https://issuer.test` and audience `api`.
pub fn claims() -> Value {
    serde_json::json!({
        "iss": "https://issuer.test",
        "aud": "api",
        "sub": "user-42",
        "exp": now() + 300,
        "iat": now(),
        "scope": "read write",
        "email": "u42@example.test",
    })
}

pub fn parse_auth(toml: &str) -> AuthSection {
    match Config::parse(toml, "test.toml") {
        Ok(c) => c.auth,
        Err(e) => panic!("config does not parse: {e}"),
    }
}

pub fn authenticator(toml: &str) -> Authenticator {
    Authenticator::from_config(&parse_auth(toml)).unwrap_or_else(|e| panic!("{e}"))
}

pub fn request(uri: &str, headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::get(uri);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

pub fn bearer(token: &str) -> http::request::Parts {
    request("/", &[("authorization", &format!("Bearer {token}"))])
}

pub const CLIENT: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 10));

/// What the mock answers: status and body, given the request body.
pub type Handler = Arc<dyn Fn(&[u8]) -> (u16, String) + Send + Sync>;

/// Requests the mock received: headers and body.
pub type Recorded = Arc<Mutex<Vec<(http::HeaderMap, Vec<u8>)>>>;

/// An HTTPS server on 127.0.0.1 with its own CA.
pub struct MockServer {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    pub handler: Arc<Mutex<Handler>>,
    pub requests: Recorded,
    pub ca_file: PathBuf,
    _dir: TempDir,
}

impl MockServer {
    pub async fn start(handler: Handler) -> Self {
        let dir = TempDir::new();
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca)
            .unwrap();
        let ca_file = dir.0.join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls_pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let handler = Arc::new(Mutex::new(handler));
        let requests: Recorded = Arc::new(Mutex::new(Vec::new()));
        let (h, hd, rq) = (hits.clone(), handler.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let Ok(tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let (h, hd, rq) = (h.clone(), hd.clone(), rq.clone());
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let (h, hd, rq) = (h.clone(), hd.clone(), rq.clone());
                            async move {
                                let (parts, body) = req.into_parts();
                                let body = body.collect().await.unwrap().to_bytes().to_vec();
                                h.fetch_add(1, Ordering::SeqCst);
                                let handler = hd.lock().unwrap().clone();
                                let (status, text) = handler(&body);
                                rq.lock().unwrap().push((parts.headers, body));
                                Ok::<_, std::convert::Infallible>(
                                    http::Response::builder()
                                        .status(status)
                                        .header("content-type", "application/json")
                                        .body(Full::new(Bytes::from(text)))
                                        .unwrap(),
                                )
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Self {
            addr,
            hits,
            handler,
            requests,
            ca_file,
            _dir: dir,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn set(&self, handler: Handler) {
        *self.handler.lock().unwrap() = handler;
    }
}

pub fn fixed(status: u16, body: impl Into<String>) -> Handler {
    let body = body.into();
    Arc::new(move |_| (status, body.clone()))
}

/// Asserts a failure's body is problem+json and does not contain `secret`.
pub fn assert_problem_without(f: &gateway::auth::AuthFailure, secret: &str) {
    let body = f.problem_json();
    let text = String::from_utf8(body.clone()).unwrap();
    assert!(!text.contains(secret), "body echoes the credential: {text}");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], f.status().as_u16());
    let dbg = format!("{f:?}");
    assert!(!dbg.contains(secret), "Debug echoes the credential: {dbg}");
}
