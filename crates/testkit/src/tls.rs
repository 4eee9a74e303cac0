//! Certificates for TLS tests: self-signed for `localhost` and 127.0.0.1, written where a
//! node's `tls_cert` / `tls_key` point, and client settings that trust them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::CertificateDer;

/// A self-signed certificate and its key.
pub struct TestCert {
    /// The certificate, for trust stores and comparisons.
    pub der: CertificateDer<'static>,
    /// The certificate as PEM.
    pub cert_pem: String,
    /// The private key as PEM (PKCS#8, ECDSA P-256).
    pub key_pem: String,
}

impl TestCert {
    /// A new certificate for `localhost` and 127.0.0.1.
    pub fn new() -> TestCert {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .expect("generate a certificate");
        TestCert { der: made.cert.der().clone(), cert_pem: made.cert.pem(), key_pem: made.signing_key.serialize_pem() }
    }

    /// Writes `tls.key`, then `tls.crt` (the order of a renewal) into `dir`; returns their
    /// paths (certificate, key).
    pub fn write_to(&self, dir: &Path) -> (String, String) {
        std::fs::create_dir_all(dir).expect("certificate dir");
        let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
        std::fs::write(&key, &self.key_pem).expect("write key");
        std::fs::write(&cert, &self.cert_pem).expect("write cert");
        (cert.display().to_string(), key.display().to_string())
    }

    /// TLS client settings (ring) trusting `certs`.
    pub fn client_config(certs: &[&TestCert]) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs {
            roots.add(cert.der.clone()).expect("trust the test certificate");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    }
}

impl Default for TestCert {
    fn default() -> Self {
        Self::new()
    }
}

/// A directory of its own for one test's files (`name` and this process).
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
