//! TLS for runs against a node with native TLS (`--tls-ca`): `wss://` for the clients and
//! `https://` for publishing, trusting the given certificate (a self-signed one for trying).

use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};

/// The run's TLS settings, set once from the command line.
static TLS: OnceLock<Option<RunTls>> = OnceLock::new();

struct RunTls {
    /// For the WebSocket clients.
    client: Arc<rustls::ClientConfig>,
    /// The trusted PEM, for the HTTP client.
    pem: Vec<u8>,
}

/// Sets the run's TLS from `--tls-ca` (none: plain) and `--tls-no-resume` (every handshake a
/// full one, no session tickets).
pub fn init(ca: Option<&std::path::Path>, no_resume: bool) -> Result<()> {
    let tls = match ca {
        None => None,
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
                let cert: rustls::pki_types::CertificateDer<'static> = cert.context("a PEM certificate")?;
                roots.add(cert).context("a usable root certificate")?;
            }
            let mut client = switchboard_client::stream::client_config(roots);
            if no_resume {
                client.resumption = rustls::client::Resumption::disabled();
            }
            Some(RunTls { client: Arc::new(client), pem })
        }
    };
    let _ = TLS.set(tls);
    Ok(())
}

fn get() -> Option<&'static RunTls> {
    TLS.get().and_then(Option::as_ref)
}

/// The WebSocket URL scheme: `wss` with TLS.
pub fn ws() -> &'static str {
    if get().is_some() {
        "wss"
    } else {
        "ws"
    }
}

/// The HTTP URL scheme: `https` with TLS.
pub fn http() -> &'static str {
    if get().is_some() {
        "https"
    } else {
        "http"
    }
}

/// The clients' TLS settings, if any.
pub fn client_config() -> Option<Arc<rustls::ClientConfig>> {
    get().map(|t| t.client.clone())
}

/// A new HTTP client that trusts the run's certificate.
pub fn http_client() -> reqwest::Client {
    let mut builder = reqwest::Client::builder();
    if let Some(tls) = get() {
        for cert in reqwest::Certificate::from_pem_bundle(&tls.pem).unwrap_or_default() {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().unwrap_or_default()
}
