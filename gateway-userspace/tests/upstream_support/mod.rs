//! Backends for the upstream tests: a private CA (rcgen) that signs leaf
//! certificates, and a recording backend that speaks HTTP/1.1 or HTTP/2
//! over plaintext or TLS (ALPN), with what each request looked like.

#![allow(
    dead_code,
    unused_imports,
    reason = "each test binary that includes this module uses a different subset"
)]

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::Full;
use hyper::{body::Incoming, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

// ---------------------------------------------------------------------------
// PKI made in the test.

/// A temp dir for certificates and keys.
pub use test_support::temp::TempDir as Dir;

/// A private CA that signs leaf certificates.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// A leaf for `names`: (chain PEM, key PEM).
    pub fn leaf(&self, names: &[&str]) -> (String, String) {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let params = CertificateParams::new(names).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

// ---------------------------------------------------------------------------
// A recording backend: HTTP/1.1 or HTTP/2, plaintext or TLS.

/// One request as a backend saw it.
pub use test_support::origin::Seen as Got;

#[derive(Clone, Copy, PartialEq)]
pub enum Speaks {
    Http1,
    /// HTTP/2 with prior knowledge (h2c) on plaintext; over TLS, whatever
    /// ALPN chose.
    H2c,
}

pub struct Backend {
    pub addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
}

impl Backend {
    /// `tls`: server config (ALPN set by the caller); `speaks`: the
    /// protocol on plaintext.
    pub async fn start(tls: Option<rustls::ServerConfig>, speaks: Speaks) -> Self {
        Self::on("127.0.0.1:0", tls, speaks).await
    }

    /// Like [`Backend::start`] on a given address (`ip:0` for any port).
    pub async fn on(bind: &str, tls: Option<rustls::ServerConfig>, speaks: Speaks) -> Self {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let got2 = got.clone();
        let acceptor = tls.map(|c| TlsAcceptor::from(Arc::new(c)));
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (got, acceptor) = (got2.clone(), acceptor.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |req| record(req, got.clone()));
                    match acceptor {
                        Some(a) => {
                            let Ok(tls) = a.accept(tcp).await else {
                                return;
                            };
                            let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
                            serve(TokioIo::new(tls), svc, h2).await;
                        }
                        None => serve(TokioIo::new(tcp), svc, speaks == Speaks::H2c).await,
                    }
                });
            }
        });
        Self { addr, got }
    }

    pub fn got(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }
}

async fn serve<I, S>(io: I, svc: S, h2: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Full<Bytes>>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    if h2 {
        let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .serve_connection(io, svc)
            .await;
    } else {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, svc)
            .await;
    }
}

async fn record(
    req: Request<Incoming>,
    got: Arc<Mutex<Vec<Got>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (seen, parts) = Got::read(req).await;
    got.lock().unwrap().push(seen);
    Ok(Response::new(Full::from(format!(
        "backend saw {:?}",
        parts.version
    ))))
}

pub fn server_tls(
    ca: &Ca,
    names: &[&str],
    alpn: &[&[u8]],
    client_ca: Option<&Ca>,
) -> rustls::ServerConfig {
    let (chain, key) = ca.leaf(names);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain.as_bytes())
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(c) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(c.der()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(chain, key).unwrap();
    config.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    config
}

/// A private CA named `tag`, its PEM written to a fresh temp dir (kept
/// alive by the returned [`Dir`]): (CA, dir, path of `ca.pem`).
pub fn ca_in_dir(tag: &str) -> (Ca, Dir, PathBuf) {
    let ca = Ca::new(&format!("{tag} CA"));
    let dir = Dir::tagged(&format!("upstream-{tag}"));
    let ca_file = dir.write("ca.pem", &ca.pem());
    (ca, dir, ca_file)
}

/// A TLS backend on loopback with a certificate for `name` signed by
/// `ca`, offering `alpn` (HTTP/2 when it chooses `h2`).
pub async fn tls_backend(ca: &Ca, name: &str, alpn: &[&[u8]]) -> Backend {
    Backend::start(Some(server_tls(ca, &[name], alpn, None)), Speaks::Http1).await
}

/// The `tls = { ... }` line that trusts `ca_file` and checks `server_name`.
pub fn tls_line(ca_file: &std::path::Path, server_name: &str) -> String {
    format!(
        "tls = {{ ca_file = \"{}\", server_name = \"{server_name}\" }}",
        ca_file.display()
    )
}
