//! The TLS listener's certificate: loading it from PEM files, checking it,
//! and reloading it on SIGHUP.
//!
//! rustls is sans-IO: a [`rustls::ServerConfig`] made here is shared (an
//! `Arc`) by every TLS connection accepted while it is current, and each
//! connection's `ServerConnection` lives beside its socket in
//! [`super::stream::Stream`]. A reload builds a whole new config; the
//! connections already open keep the one they started with, so rotating a
//! certificate disturbs nobody, and a reload that fails keeps the old one.
//!
//! Keys are read as PKCS#8, PKCS#1 (RSA) or SEC1 (EC) PEM blocks; the
//! chain is every `CERTIFICATE` block of the certificate file, leaf
//! first. Nothing read from the files is trusted to be well formed: each
//! problem is an error naming the file.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConfig;

/// ALPN: the server speaks HTTP/1.1 only (the WebSocket upgrade and the
/// page); RFC 7301 §3.2: a server with no protocol in common "MUST respond
/// with a fatal no_application_protocol alert", which rustls does for a
/// client offering only `h2`.
const ALPN: &[&[u8]] = &[b"http/1.1"];

/// Why the certificate or key could not be used.
#[derive(Debug)]
pub struct TlsError(String);

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsError {}

/// The files a TLS config comes from, and the config now in force.
pub struct TlsIdentity {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: Arc<ServerConfig>,
}

impl TlsIdentity {
    /// Loads and checks the certificate chain and key.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<TlsIdentity, TlsError> {
        Ok(TlsIdentity {
            current: build_config(cert_path, key_path)?,
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
        })
    }

    /// The config new connections start with.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.current)
    }

    /// Reads the files again; on success new connections use them, on
    /// failure the config in force stays and the error is returned.
    pub fn reload(&mut self) -> Result<(), TlsError> {
        self.current = build_config(&self.cert_path, &self.key_path)?;
        Ok(())
    }
}

/// A rustls server config from the two PEM files: TLS 1.2 and 1.3 (the
/// `ring` provider's defaults), no client certificates, ALPN `http/1.1`.
fn build_config(cert_path: &Path, key_path: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = read_chain(cert_path)?;
    let key = read_key(key_path)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError(format!("TLS versions: {e}")))?
        .with_no_client_auth()
        // Checks that the key parses and that it is the leaf's key.
        .with_single_cert(chain, key)
        .map_err(|e| {
            TlsError(format!(
                "{} and {} do not make a certificate and its key: {e}",
                cert_path.display(),
                key_path.display()
            ))
        })?;
    config.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

fn read_file(path: &Path, what: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|e| TlsError(format!("cannot read {what} {}: {e}", path.display())))
}

/// Every `CERTIFICATE` block of the file, in order (leaf first).
fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read_file(path, "certificate file")?;
    parse_chain(&pem).map_err(|e| TlsError(format!("certificate file {}: {e}", path.display())))
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read_file(path, "key file")?;
    parse_key(&pem).map_err(|e| TlsError(format!("key file {}: {e}", path.display())))
}

/// The certificates of a PEM text; an empty chain is an error.
fn parse_chain(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let chain = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not valid PEM: {e}"))?;
    if chain.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    Ok(chain)
}

/// The first private key of a PEM text (PKCS#8, PKCS#1 or SEC1).
fn parse_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            "no PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY block".to_string()
        }
        other => format!("not valid PEM: {other}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_foreign_pem_are_errors() {
        assert!(parse_chain(b"").is_err());
        assert!(parse_chain(b"hello\n").is_err());
        assert!(parse_key(b"").is_err());
        let cert_only = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(parse_key(cert_only).is_err());
    }

    #[test]
    fn truncated_pem_is_an_error() {
        assert!(parse_chain(b"-----BEGIN CERTIFICATE-----\nAAAA\n").is_err());
        assert!(
            parse_key(b"-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n").is_err()
        );
    }

    #[test]
    fn a_chain_keeps_its_order() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAQI=\n-----END CERTIFICATE-----\n\
                    -----BEGIN CERTIFICATE-----\nAwQ=\n-----END CERTIFICATE-----\n";
        let chain = parse_chain(pem).unwrap_or_default();
        let bytes: Vec<&[u8]> = chain.iter().map(|c| c.as_ref()).collect();
        assert_eq!(bytes, [&[0x01, 0x02][..], &[0x03, 0x04][..]]);
    }
}
