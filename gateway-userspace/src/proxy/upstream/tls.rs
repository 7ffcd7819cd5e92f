//! TLS to upstream targets (HTTPS and mTLS backends) with rustls: TLS 1.2
//! and 1.3 (ring), the CA from `tls.ca_file` or the system's roots, an
//! optional client certificate, ALPN from the upstream's `protocol`. The
//! files are read when a config generation is built, so a reload (SIGHUP)
//! picks up renewed certificates; a file that cannot be used fails the
//! start or the reload (the running generation stays).
//!
//! `verify = false` swaps the certificate check for one that accepts any
//! chain and name (the handshake signature is still checked, so the peer
//! proves it holds the key of the certificate it sent); it logs a warning
//! each time a generation is built.

#![forbid(unsafe_code)]

use std::sync::Arc;

use rustls::{
    ClientConfig, DigitallySignedStruct, SignatureScheme,
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{CryptoProvider, ring},
};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio_rustls::TlsConnector;

use crate::proxy::{
    config::upstream::{UpstreamProtocol, UpstreamTls},
    tls::{TlsError, load_certs, load_key},
};

/// ALPN identifiers offered for a protocol (RFC 7301; `h2` per RFC 9113 §3.2).
fn alpn(protocol: UpstreamProtocol) -> Vec<Vec<u8>> {
    match protocol {
        UpstreamProtocol::H2 => vec![b"h2".to_vec()],
        UpstreamProtocol::Auto => vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        UpstreamProtocol::Http1 | UpstreamProtocol::H2c => vec![b"http/1.1".to_vec()],
    }
}

/// Builds the connector of one upstream. `upstream` names it in warnings.
///
/// # Errors
/// A [`TlsError`] naming the file that is missing, unreadable or unusable,
/// or "no system root certificates" when `ca_file` is absent and the host
/// has none.
pub fn connector(
    upstream: &str,
    cfg: &UpstreamTls,
    protocol: UpstreamProtocol,
) -> Result<TlsConnector, TlsError> {
    let provider = Arc::new(ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = if cfg.verify {
        let mut roots = rustls::RootCertStore::empty();
        match &cfg.ca_file {
            Some(path) => {
                for cert in load_certs(path)? {
                    roots.add(cert).map_err(|e| TlsError::Pem {
                        path: path.display().to_string(),
                        message: format!("not a usable CA certificate: {e}"),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let (added, _) = roots.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(TlsError::Pem {
                        path: "the system's root certificates".into(),
                        message: "none found; set tls.ca_file for this upstream".into(),
                    });
                }
            }
        }
        builder.with_root_certificates(roots)
    } else {
        tracing::warn!(
            upstream,
            "tls.verify = false: the certificates of this upstream's targets are NOT checked; \
             anyone on the path can impersonate them"
        );
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
    };
    let mut config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(chain), Some(key)) => builder
            .with_client_auth_cert(load_certs(chain)?, load_key(key)?)
            .map_err(|error| TlsError::Key {
                path: key.display().to_string(),
                error,
            })?,
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn(protocol);
    Ok(TlsConnector::from(Arc::new(config)))
}

/// A `tls.server_name` that is neither a DNS name nor an IP address (the
/// config's to fix; quoted as written).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a DNS name or an IP address")]
pub struct UpstreamServerNameError(pub String);

/// The name a target's certificate is checked against, and sent as SNI
/// unless it is an IP address (RFC 6066 §3 forbids IP literals in SNI).
///
/// # Errors
/// When `name` is neither a DNS name nor an IP address.
pub fn server_name(name: &str) -> Result<ServerName<'static>, UpstreamServerNameError> {
    let bare = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    ServerName::try_from(bare.to_owned()).map_err(|_| UpstreamServerNameError(name.to_owned()))
}

/// `verify = false`: any chain and name are accepted; signatures are still
/// checked with the provider's algorithms.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
