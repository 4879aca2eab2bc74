//! The container's trusted root certificates, read once and shared by both HTTPS stacks: the
//! AWS SDK's client ([`crate::aws`]) and the MCP client's reqwest ([`crate::mcp`]).
//!
//! Left to themselves, each stack reads the platform's store on its own (`rustls-native-certs`:
//! the bundle file and every file of the certificate directory, then PEM decoding; 0.45 ms for
//! the bundle alone, 2.4 ms on a Debian-style store whose directory repeats it), and the SDK
//! parses the result again for every client it builds. Here
//! the store is read once, on first use, with the same rules (`rustls_native_certs`, the
//! certificates webpki cannot use skipped, as both stacks skip them) and the same verifier
//! (webpki over those roots, which is what `rustls-platform-verifier` is on Linux).

use std::sync::{Arc, LazyLock};

use aws_smithy_http_client::tls::{TlsContext, TrustStore};
use base64::Engine;
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;

/// The roots in the two shapes the stacks take: a rustls store (reqwest) and PEM text (the
/// SDK's `TrustStore` takes certificates as PEM only).
struct Roots {
    store: Arc<RootCertStore>,
    pem: Vec<u8>,
}

static ROOTS: LazyLock<Roots> = LazyLock::new(Roots::load);

impl Roots {
    fn load() -> Self {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "a root CA certificate could not be loaded");
        }
        let mut store = RootCertStore::empty();
        let mut pem = Vec::new();
        for cert in found.certs {
            if store.add(cert.clone()).is_ok() {
                push_pem(&mut pem, &cert);
            }
        }
        if store.is_empty() {
            tracing::warn!("no root CA certificates found");
        }
        Self {
            store: Arc::new(store),
            pem,
        }
    }
}

/// Appends one certificate as a PEM block (64-character base64 lines).
fn push_pem(out: &mut Vec<u8>, cert: &CertificateDer<'_>) {
    let b64 = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
    out.extend_from_slice(b"-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.extend_from_slice(line);
        out.push(b'\n');
    }
    out.extend_from_slice(b"-----END CERTIFICATE-----\n");
}

/// The rustls client configuration of the MCP client: aws-lc (the one crypto stack), TLS 1.2
/// and 1.3, HTTP/1.1 by ALPN (reqwest is built without HTTP/2), the container's roots.
pub fn rustls_client_config() -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(ROOTS.store.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// The SDK's TLS context: the container's roots instead of its own read of the platform store.
pub fn sdk_tls_context() -> TlsContext {
    let roots = &*ROOTS;
    let mut trust = TrustStore::empty().with_native_roots(false);
    if !roots.pem.is_empty() {
        trust = trust.with_pem_certificate(roots.pem.clone());
    }
    TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    #[test]
    fn pem_round_trips_every_root() {
        let roots = &*ROOTS;
        let back: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&roots.pem)
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(back.len(), roots.store.len());
        let mut again = RootCertStore::empty();
        let (added, ignored) = again.add_parsable_certificates(back);
        assert_eq!((added, ignored), (roots.store.len(), 0));
    }

    #[test]
    fn the_mcp_config_speaks_http1_over_aws_lc() {
        let c = rustls_client_config().unwrap();
        assert_eq!(c.alpn_protocols, [b"http/1.1".to_vec()]);
    }
}
