//! Native TLS on the listener: with `tls_cert` and `tls_key` (PEM files) every role's port
//! speaks TLS 1.2/1.3 (rustls, no OpenSSL) with HTTP/1.1 over ALPN, so `wss://` endpoints, the
//! publish and admin API, `/metrics` and the playground are all on the one port.
//!
//! The certificate is read again when its files change (cert-manager rewrites them in
//! place), checked every [`RELOAD_EVERY`]: new handshakes get the new one, open connections
//! keep their sessions. A pair that does not load keeps the old one in service, with a warning.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use parking_lot::{Mutex, RwLock};
use rustls::crypto::ring as provider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

/// How often the certificate files are looked at for changes.
pub const RELOAD_EVERY: Duration = Duration::from_secs(2);

/// Why the certificate and key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file is missing or unreadable.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        source: io::Error,
    },
    /// A file holds no usable PEM of the kind wanted.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: String,
        /// What is wrong with it.
        what: String,
    },
    /// rustls refused the pair (a key that does not match, an unsupported key type).
    #[error("tls_cert / tls_key: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Loads a certificate chain and its private key.
pub fn load_pair(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let read =
        |path: &Path| std::fs::read(path).map_err(|source| TlsError::Read { path: path.display().to_string(), source });
    let pem_error = |path: &Path, what: String| TlsError::Pem { path: path.display().to_string(), what };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(cert)?)
        .collect::<Result<_, _>>()
        .map_err(|e| pem_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(pem_error(cert, "no CERTIFICATE in the file".into()));
    }
    let key_der = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| pem_error(key, e.to_string()))?;
    let signing = provider::default_provider().key_provider.load_private_key(key_der)?;
    let pair = CertifiedKey::new(chain, signing);
    pair.keys_match()?;
    Ok(pair)
}

/// The served certificate, swapped when its files change.
#[derive(Debug)]
struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The files' modification times and lengths when last loaded.
    seen: Mutex<FileStamp>,
}

type FileStamp = [(Option<SystemTime>, u64); 2];

fn stamp(cert: &Path, key: &Path) -> FileStamp {
    [cert, key].map(|p| match std::fs::metadata(p) {
        Ok(m) => (m.modified().ok(), m.len()),
        Err(_) => (None, 0),
    })
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().clone())
    }
}

impl CertStore {
    /// Loads the files again if they changed since the last look; true if a new pair is in
    /// service.
    fn reload_if_changed(&self) -> bool {
        let now = stamp(&self.cert, &self.key);
        if *self.seen.lock() == now {
            return false;
        }
        match load_pair(&self.cert, &self.key) {
            Ok(pair) => {
                *self.current.write() = Arc::new(pair);
                *self.seen.lock() = now;
                tracing::info!(cert = %self.cert.display(), "TLS certificate reloaded");
                true
            }
            Err(e) => {
                // Half-written files (the cert renewed, the key not yet) load on a later look.
                tracing::warn!(error = %e, "TLS certificate changed but does not load; the previous one stays in service");
                false
            }
        }
    }
}

/// What became of a TLS handshake (the `result` label of `tls_handshakes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handshake {
    /// Done, with a key exchange and the certificate's signature.
    Full,
    /// Done, resumed from a session ticket (no signature).
    Resumed,
    /// The client spoke plain HTTP to the TLS port; it was told so.
    NotTls,
    /// Not finished within the handshake timeout.
    Timeout,
    /// The client went away or the handshake failed (bad version, no shared cipher, an alert).
    Failed,
}

impl Handshake {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Handshake::Full => "full",
            Handshake::Resumed => "resumed",
            Handshake::NotTls => "not_tls",
            Handshake::Timeout => "timeout",
            Handshake::Failed => "failed",
        }
    }
}

/// A listener's TLS: the acceptor and the certificate it serves.
pub struct Tls {
    acceptor: tokio_rustls::TlsAcceptor,
    store: Arc<CertStore>,
}

/// What a plain-HTTP client on the TLS port is told before the socket closes.
const PLAIN_ON_TLS_PORT: &str = r#"{"error":"tls_required","status":400,"message":"this port speaks TLS: use https:// or wss://, not http:// or ws://"}"#;

impl Tls {
    /// TLS with the certificate and key in these PEM files.
    pub fn new(cert: &Path, key: &Path) -> Result<Tls, TlsError> {
        let pair = load_pair(cert, key)?;
        let store = Arc::new(CertStore {
            cert: cert.to_owned(),
            key: key.to_owned(),
            current: RwLock::new(Arc::new(pair)),
            seen: Mutex::new(stamp(cert, key)),
        });
        let mut config = ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(store.clone());
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        // A WebSocket keeps only its session's keys after the upgrade (see `connection::socket`).
        config.enable_secret_extraction = true;
        // Resumption by ticket: a reconnecting client skips the key exchange and the
        // signature, and the node keeps no per-session state for it.
        config.ticketer = provider::Ticketer::new()?;
        Ok(Tls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)), store })
    }

    /// Looks at the certificate files every [`RELOAD_EVERY`] for as long as the returned
    /// task runs.
    pub fn spawn_reload(&self) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RELOAD_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let store = store.clone();
                // File IO off the async threads.
                let _ = tokio::task::spawn_blocking(move || store.reload_if_changed()).await;
            }
        })
    }

    /// The handshake on an accepted socket, within `timeout`, and whether it was a full or a
    /// resumed one. A client that opens with plain HTTP instead of a TLS ClientHello gets a 400
    /// saying so.
    pub async fn accept(
        &self,
        mut tcp: TcpStream,
        timeout: Duration,
    ) -> Result<(TlsStream<TcpStream>, Handshake), Handshake> {
        let handshake = async {
            let mut first = [0u8; 1];
            // A TLS record of type handshake (22) opens every TLS connection.
            match tcp.peek(&mut first).await {
                Ok(1) if first[0] == 22 => {}
                Ok(1) => {
                    let answer = format!(
                        "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{PLAIN_ON_TLS_PORT}",
                        PLAIN_ON_TLS_PORT.len()
                    );
                    let _ = tcp.write_all(answer.as_bytes()).await;
                    let _ = tcp.shutdown().await;
                    return Err(Handshake::NotTls);
                }
                _ => return Err(Handshake::Failed),
            }
            let stream = self.acceptor.accept(tcp).await.map_err(|e| {
                tracing::debug!(error = %e, "TLS handshake failed");
                Handshake::Failed
            })?;
            let kind = match stream.get_ref().1.handshake_kind() {
                Some(rustls::HandshakeKind::Resumed) => Handshake::Resumed,
                _ => Handshake::Full,
            };
            Ok((stream, kind))
        };
        match tokio::time::timeout(timeout, handshake).await {
            Ok(done) => done,
            Err(_) => Err(Handshake::Timeout),
        }
    }
}
