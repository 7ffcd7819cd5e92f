//! TLS termination: rustls with TLS 1.2 and 1.3 only (ring provider), ALPN
//! `h2` and `http/1.1`, and a certificate per SNI name (exact first, then
//! one-label wildcard, else the first certificate). Certificates are loaded
//! from PEM files when the config is (re)loaded, so a reload swaps them;
//! with `[tls] self_signed = true` and none configured, one is generated.

#![forbid(unsafe_code)]

use std::{collections::HashMap, path::Path, sync::Arc};

use rustls::{
    ServerConfig,
    crypto::ring,
    server::{ClientHello, ResolvesServerCert},
    sign::CertifiedKey,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use tokio_rustls::TlsAcceptor;

use super::config::TlsSection;

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is missing, unreadable or holds nothing usable.
    #[error("{path}: {message}")]
    Pem {
        /// The file as configured.
        path: String,
        /// What is wrong with it (unreadable, no certificate, no private key...).
        message: String,
    },
    /// The key type is not supported or does not fit (the reason is in the
    /// message, not a separate source, so it is printed once).
    #[error("{path}: unusable private key: {error}")]
    Key {
        /// The key file as configured.
        path: String,
        /// rustls's reason (unsupported algorithm, key and certificate mismatch).
        error: rustls::Error,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    SelfSigned(#[from] rcgen::Error),
    /// rustls refused the configuration.
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    /// An upstream's `tls` settings cannot be used.
    #[error("upstream '{upstream}': {error}")]
    Upstream {
        /// The upstream's name.
        upstream: String,
        /// What is wrong with its CA, client certificate or key.
        error: Box<TlsError>,
    },
}

/// Picks a certificate by SNI.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*.` (`example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name().map(str::to_ascii_lowercase) else {
            return Some(self.default.clone());
        };
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(k) = self.wildcard.get(parent)
        {
            return Some(k.clone());
        }
        Some(self.default.clone())
    }
}

/// Builds the acceptor for TLS listeners from `[tls]`.
pub fn acceptor(cfg: &TlsSection) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for c in &cfg.certificates {
        let key = Arc::new(load(&provider, &c.chain, &c.key)?);
        for name in &c.server_names {
            match name.0.strip_prefix("*.") {
                Some(suffix) => wildcard.insert(suffix.to_owned(), key.clone()),
                None => exact.insert(name.0.clone(), key.clone()),
            };
        }
        default.get_or_insert(key);
    }
    let default = match default {
        Some(d) => d,
        None => {
            let names = vec![
                "localhost".to_owned(),
                "127.0.0.1".to_owned(),
                "::1".to_owned(),
            ];
            let generated = rcgen::generate_simple_self_signed(names)?;
            tracing::warn!(
                "no TLS certificate configured: generated a self-signed certificate for \
                 localhost, 127.0.0.1 and ::1 (clients will not trust it; for demos only)"
            );
            let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
            let signing = provider
                .key_provider
                .load_private_key(key)
                .map_err(TlsError::Config)?;
            Arc::new(CertifiedKey::new(
                vec![generated.cert.der().clone()],
                signing,
            ))
        }
    };
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(SniResolver {
            exact,
            wildcard,
            default,
        }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

fn load(
    provider: &rustls::crypto::CryptoProvider,
    chain: &Path,
    key: &Path,
) -> Result<CertifiedKey, TlsError> {
    let certs = load_certs(chain)?;
    let signing = provider
        .key_provider
        .load_private_key(load_key(key)?)
        .map_err(|error| TlsError::Key {
            path: key.display().to_string(),
            error,
        })?;
    let certified = CertifiedKey::new(certs, signing);
    certified.keys_match().map_err(|error| TlsError::Key {
        path: key.display().to_string(),
        error,
    })?;
    Ok(certified)
}

fn pem_err(path: &Path, message: String) -> TlsError {
    TlsError::Pem {
        path: path.display().to_string(),
        message,
    }
}

/// Every `CERTIFICATE` of a PEM file, in order (a chain or a CA bundle).
///
/// # Errors
/// [`TlsError::Pem`] when the file is unreadable, malformed or has none.
pub(crate) fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_err(path, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| pem_err(path, e.to_string()))?;
    if certs.is_empty() {
        return Err(pem_err(path, "no CERTIFICATE in the file".into()));
    }
    Ok(certs)
}

/// The first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
///
/// # Errors
/// [`TlsError::Pem`] when the file is unreadable or holds no key.
pub(crate) fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| pem_err(path, e.to_string()))
}
