//! A minimal HTTPS client for the auth providers (JWKS and introspection):
//! one request per connection over rustls (ring provider), hyper HTTP/1.1,
//! a deadline on the whole exchange and a cap on the response body. It
//! trusts either the system roots or, when configured, only the CAs in a
//! PEM file. Plain HTTP is never used.

#![forbid(unsafe_code)]

use std::{path::Path, sync::Arc, time::Duration};

use http::{Request, StatusCode, Uri};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore, pki_types::ServerName};
use rustls_pki_types::{CertificateDer, pem::PemObject as _};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Largest response body read unless [`HttpsClient::with_max_body`] says
/// otherwise (JWK Sets; introspection sets its own cap).
const MAX_BODY: usize = 1 << 20;

/// Why a fetch failed (for logs; never contains credentials).
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The exchange did not finish within the timeout.
    #[error("timed out")]
    Timeout,
    /// TCP connect, TLS handshake or HTTP exchange failed.
    #[error("{0}")]
    Io(String),
    /// The server answered with a non-success status.
    #[error("status {0}")]
    Status(StatusCode),
    /// The response body is longer than the client's cap (in bytes).
    #[error("response larger than {0} bytes")]
    TooLarge(usize),
}

/// Why the TLS client for an identity provider could not be built (the
/// config's `ca_file`, or the system's roots).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The CA file cannot be read or is not PEM.
    #[error("{}: {error}", .path.display())]
    CaFile {
        /// The configured `ca_file`.
        path: std::path::PathBuf,
        /// The reader's error.
        error: rustls_pki_types::pem::Error,
    },
    /// The CA file holds no certificate rustls accepts.
    #[error("{}: no usable CA certificate", .0.display())]
    NoUsableCa(std::path::PathBuf),
    /// No `ca_file` and the system has no CA certificates.
    #[error("no system CA certificates found; set ca_file")]
    NoSystemRoots,
    /// rustls refused the protocol versions.
    #[error(transparent)]
    Tls(#[from] rustls::Error),
}

/// Clones share the TLS config.
#[derive(Clone)]
pub struct HttpsClient {
    tls: TlsConnector,
    timeout: Duration,
    max_body: usize,
}

impl std::fmt::Debug for HttpsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpsClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl HttpsClient {
    /// Trusts only the certificates in `ca_file` if given, else the system roots.
    pub fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let ca_file = |error| TlsSetupError::CaFile {
                    path: path.to_owned(),
                    error,
                };
                let certs = CertificateDer::pem_file_iter(path)
                    .map_err(ca_file)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ca_file)?;
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(TlsSetupError::NoUsableCa(path.to_owned()));
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                if roots.is_empty() {
                    return Err(TlsSetupError::NoSystemRoots);
                }
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: TlsConnector::from(Arc::new(config)),
            timeout,
            max_body: MAX_BODY,
        })
    }

    /// Caps response bodies at `max_body` bytes: a longer one is
    /// [`FetchError::TooLarge`] (read no further than the cap).
    pub fn with_max_body(mut self, max_body: usize) -> Self {
        self.max_body = max_body;
        self
    }

    /// Sends `req` (its URI must be absolute https) and returns the body of a
    /// 2xx answer.
    pub async fn send(&self, req: Request<Bytes>) -> Result<Bytes, FetchError> {
        tokio::time::timeout(self.timeout, self.exchange(req))
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn exchange(&self, req: Request<Bytes>) -> Result<Bytes, FetchError> {
        let io = |e: &dyn std::fmt::Display| FetchError::Io(e.to_string());
        let uri: Uri = req.uri().clone();
        let host = uri.host().ok_or_else(|| io(&"URL without host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = uri.port_u16().unwrap_or(443);
        let server_name = ServerName::try_from(host.clone()).map_err(|e| io(&e))?;
        let tcp = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| io(&e))?;
        let tls = self
            .tls
            .connect(server_name, tcp)
            .await
            .map_err(|e| io(&e))?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .map_err(|e| io(&e))?;
        let driver = tokio::spawn(conn);

        let (mut parts, body) = req.into_parts();
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or(&host);
        parts.headers.insert(
            http::header::HOST,
            http::HeaderValue::from_str(authority).map_err(|e| io(&e))?,
        );
        parts.uri = uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|e| io(&e))?;
        let resp = sender
            .send_request(Request::from_parts(parts, Full::new(body)))
            .await
            .map_err(|e| io(&e))?;
        let status = resp.status();
        let max_body = self.max_body;
        let body = Limited::new(resp.into_body(), max_body).collect().await;
        // The connection is not reused: stop it whether or not the body was read.
        driver.abort();
        let body = body
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    FetchError::TooLarge(max_body)
                } else {
                    io(&e)
                }
            })?
            .to_bytes();
        if !status.is_success() {
            return Err(FetchError::Status(status));
        }
        Ok(body)
    }
}
