//! The rustls client config for `wss://`: the ring provider (as the
//! server uses), TLS 1.2 and 1.3, ALPN `http/1.1`, and as trust anchors
//! only the CA certificates of `--ca` (the tool talks to test servers on
//! loopback; it carries no public roots).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use crate::client::Tls;

/// The config trusting every certificate in the PEM file at `ca`, for a
/// server whose certificate names `host` (an IP address or a DNS name,
/// IPv6 without brackets).
pub fn client(ca: &Path, host: &str) -> Result<Tls, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    let config = config_trusting(&pem).map_err(|e| format!("--ca {}: {e}", ca.display()))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| format!("{host}: not a name for TLS: {e}"))?;
    Ok(Tls {
        config: Arc::new(config),
        name,
    })
}

fn config_trusting(pem: &[u8]) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("not valid PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("not a usable CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS versions: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_is_required_and_checked() {
        assert!(config_trusting(b"").is_err());
        assert!(config_trusting(b"hello\n").is_err());
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        assert!(config_trusting(ca.cert.pem().as_bytes()).is_ok());
        let dir = std::env::temp_dir().join(format!("wschat-load-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("ca.pem");
        std::fs::write(&path, ca.cert.pem()).unwrap();
        let tls = client(&path, "127.0.0.1").unwrap();
        assert!(matches!(tls.name, ServerName::IpAddress(_)));
        assert!(client(&path, "localhost").is_ok());
        assert!(client(&dir.join("missing.pem"), "localhost").is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
