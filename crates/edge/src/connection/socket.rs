//! A WebSocket's socket: plain TCP, or TCP carrying TLS records (`wss://` on a listener with
//! `tls_cert`). The connection reads it and everyone else writes to it without blocking, in
//! plain bytes either way.
//!
//! For TLS, the handshake and the HTTP upgrade run through a full rustls session; at the
//! upgrade its traffic keys and sequence numbers are taken out of it (as kernel TLS offload
//! does) and the session is dropped. What a TLS connection then keeps is its two keys (in
//! rustls's own record encrypter and decrypter) and, only while records are incomplete or
//! unsent, a buffer: an idle one holds no buffer at all, like a plain one. A message is
//! encrypted as it is written, into as few records as its size allows.
//!
//! Not supported after the handshake (the connection fails, the client reconnects): a
//! TLS 1.3 `KeyUpdate` from the client and renegotiation. Clients send neither in practice; the
//! server sends fresh tickets before the upgrade.

use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use rustls::crypto::cipher::{
    InboundOpaqueMessage, MessageDecrypter, MessageEncrypter, OutboundChunks, OutboundPlainMessage,
};
use rustls::{ConnectionTrafficSecrets, ContentType, ProtocolVersion, ServerConnection, SupportedCipherSuite};
use tokio::net::TcpStream;

use super::outbox::FrameSink;

/// Most plaintext in one record (2^14).
const MAX_PLAINTEXT: usize = 16 * 1024;
/// Most bytes of a record after its header: the plaintext, the inner type, padding and the
/// AEAD tag (TLS 1.3 allows 2^14 + 256; TLS 1.2 2^14 + 2048).
const MAX_CIPHERTEXT: usize = MAX_PLAINTEXT + 2048;
/// A record's header: type, version, length.
const HEADER: usize = 5;
/// Most plaintext one write takes (the outbox's largest batch).
const MAX_WRITE: usize = 64 * 1024;
/// Most slices of one vectored write encrypted together (the outbox's largest write: a
/// header and a payload for each of 32 frames).
const MAX_SLICES: usize = 64;
/// Most ciphertext one read takes in before decrypting.
const MAX_READ: usize = 64 * 1024;
/// The sequence number at which a connection is closed rather than risk the AEAD's limits
/// (a key is good for 2^24.5 records in TLS 1.3 with AES-GCM; a client reconnects long before).
const MAX_RECORDS: u64 = 1 << 24;

/// A connection's socket.
pub enum Socket {
    /// Plain TCP (`ws://`).
    Plain(TcpStream),
    /// TLS records over TCP (`wss://`); boxed, so a plain connection carries one word for it.
    Tls(Box<TlsSocket>),
}

/// A TCP socket and the record layer of the TLS session over it.
pub struct TlsSocket {
    tcp: TcpStream,
    tx: Mutex<Sealer>,
    rx: Mutex<Opener>,
}

/// The sending half: the encrypter, the next record's sequence number, and what the socket
/// did not take yet of records already made.
struct Sealer {
    encrypter: Box<dyn MessageEncrypter>,
    seq: u64,
    unsent: Vec<u8>,
}

/// The receiving half: the decrypter, the next record's sequence number, and what has
/// arrived of records not yet complete.
struct Opener {
    decrypter: Box<dyn MessageDecrypter>,
    seq: u64,
    received: Vec<u8>,
    /// The peer sent `close_notify`.
    closed: bool,
}

/// Why a finished TLS session could not become a [`TlsSocket`].
#[derive(Debug, thiserror::Error)]
pub enum IntoRecordsError {
    /// rustls would not give the keys out (records still to send, secret extraction off).
    #[error("the TLS session's keys cannot be taken over: {0}")]
    Extract(#[from] rustls::Error),
    /// A cipher suite this record layer does not know.
    #[error("the negotiated cipher suite is not supported after the upgrade")]
    Suite,
    /// Sending the session's last records failed.
    #[error("sending the session's last records: {0}")]
    Io(#[from] io::Error),
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Sealer {
    /// Sends what is left of earlier records; true when nothing is.
    fn send_unsent(&mut self, tcp: &TcpStream) -> io::Result<bool> {
        while !self.unsent.is_empty() {
            match tcp.try_write(&self.unsent) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.unsent.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // Idle connections hold no output buffer.
        self.unsent = Vec::new();
        Ok(true)
    }

    /// Encrypts up to [`MAX_WRITE`] bytes of `bufs` into records and writes them; what the
    /// socket does not take waits in `unsent`. Returns the plaintext bytes taken.
    fn write(&mut self, tcp: &TcpStream, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.seq >= MAX_RECORDS {
            return Err(io::Error::other("the TLS session's key is worn out; reconnect"));
        }
        // The outbox writes at most 64 slices at once; more are taken by a later write.
        let mut slices: [&[u8]; MAX_SLICES] = [&[]; MAX_SLICES];
        let mut n = 0;
        for buf in bufs.iter().filter(|b| !b.is_empty()).take(MAX_SLICES) {
            slices[n] = buf;
            n += 1;
        }
        let chunks = &slices[..n];
        let total = chunks.iter().map(|c| c.len()).sum::<usize>().min(MAX_WRITE);
        let mut start = 0;
        while start < total {
            let end = (start + MAX_PLAINTEXT).min(total);
            let payload = match chunks {
                [only] => OutboundChunks::Single(&only[start..end]),
                many => OutboundChunks::Multiple { chunks: many, start, end },
            };
            let plain =
                OutboundPlainMessage { typ: ContentType::ApplicationData, version: ProtocolVersion::TLSv1_2, payload };
            let record = self.encrypter.encrypt(plain, self.seq).map_err(invalid)?.encode();
            self.seq += 1;
            start = end;
            if !self.unsent.is_empty() {
                self.unsent.extend_from_slice(&record);
                continue;
            }
            match tcp.try_write(&record) {
                Ok(n) if n == record.len() => {}
                Ok(n) => self.unsent.extend_from_slice(&record[n..]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => {
                    self.unsent.extend_from_slice(&record)
                }
                Err(e) => return Err(e),
            }
        }
        Ok(total)
    }
}

impl Opener {
    /// Decrypts every complete record in `received` into `out`; returns the plaintext bytes.
    fn open_records(&mut self, out: &mut Vec<u8>) -> io::Result<usize> {
        let mut at = 0;
        let mut taken = 0;
        while self.received.len() - at >= HEADER && !self.closed {
            let head = &self.received[at..at + HEADER];
            let (typ, version) = (head[0], u16::from_be_bytes([head[1], head[2]]));
            let len = usize::from(u16::from_be_bytes([head[3], head[4]]));
            if len > MAX_CIPHERTEXT {
                return Err(invalid("a TLS record longer than the protocol allows"));
            }
            if self.received.len() - at < HEADER + len {
                break;
            }
            let payload = &mut self.received[at + HEADER..at + HEADER + len];
            let record = InboundOpaqueMessage::new(ContentType::from(typ), ProtocolVersion::from(version), payload);
            let plain = self.decrypter.decrypt(record, self.seq).map_err(invalid)?;
            self.seq += 1;
            match plain.typ {
                ContentType::ApplicationData => {
                    out.extend_from_slice(plain.payload);
                    taken += plain.payload.len();
                }
                // close_notify (level warning, description 0) ends the stream; any other
                // alert fails it.
                ContentType::Alert if plain.payload.get(1) == Some(&0) => self.closed = true,
                ContentType::Alert => return Err(invalid("the client sent a TLS alert")),
                other => return Err(invalid(format!("TLS {other:?} after the handshake is not supported"))),
            }
            at += HEADER + len;
        }
        self.received.drain(..at);
        if self.received.is_empty() {
            // Nothing incomplete: hold no buffer while idle.
            self.received = Vec::new();
        }
        Ok(taken)
    }
}

impl TlsSocket {
    /// Takes over a finished session (its handshake done, its plaintext read): sends any
    /// record it still holds, then keeps only its keys and sequence numbers.
    fn from_session(tcp: TcpStream, mut session: ServerConnection) -> Result<TlsSocket, IntoRecordsError> {
        while session.wants_write() {
            session.write_tls(&mut TryWrite(&tcp))?;
        }
        let suite = session.negotiated_cipher_suite().ok_or(IntoRecordsError::Suite)?;
        let secrets = session.dangerous_extract_secrets()?;
        let ((tx_seq, tx), (rx_seq, rx)) = (secrets.tx, secrets.rx);
        let (encrypter, decrypter) = match suite {
            SupportedCipherSuite::Tls13(suite) => {
                let (tx_key, tx_iv) = key_and_iv(tx)?;
                let (rx_key, rx_iv) = key_and_iv(rx)?;
                (suite.aead_alg.encrypter(tx_key, tx_iv), suite.aead_alg.decrypter(rx_key, rx_iv))
            }
            SupportedCipherSuite::Tls12(suite) => {
                let gcm = matches!(
                    tx,
                    ConnectionTrafficSecrets::Aes128Gcm { .. } | ConnectionTrafficSecrets::Aes256Gcm { .. }
                );
                let (tx_key, tx_iv) = key_and_iv(tx)?;
                let (rx_key, rx_iv) = key_and_iv(rx)?;
                let (tx_iv, rx_iv) = (tx_iv.as_ref(), rx_iv.as_ref());
                if gcm {
                    // AES-GCM in TLS 1.2: a 4-byte salt, then the explicit nonce's start.
                    (
                        suite.aead_alg.encrypter(tx_key, &tx_iv[..4], &tx_iv[4..]),
                        suite.aead_alg.decrypter(rx_key, &rx_iv[..4]),
                    )
                } else {
                    (suite.aead_alg.encrypter(tx_key, tx_iv, &[]), suite.aead_alg.decrypter(rx_key, rx_iv))
                }
            }
        };
        Ok(TlsSocket {
            tcp,
            tx: Mutex::new(Sealer { encrypter, seq: tx_seq, unsent: Vec::new() }),
            rx: Mutex::new(Opener { decrypter, seq: rx_seq, received: Vec::new(), closed: false }),
        })
    }

    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut rx = self.rx.lock();
        let mut eof = rx.closed;
        let mut read = 0;
        while !eof && read < MAX_READ {
            // Room for the record under way (its header tells its size), at least 4 KiB.
            let need = match rx.received.get(..HEADER) {
                Some(h) => (HEADER + usize::from(u16::from_be_bytes([h[3], h[4]]))).saturating_sub(rx.received.len()),
                None => 0,
            };
            rx.received.reserve(need.max(4096));
            match self.tcp.try_read_buf(&mut rx.received) {
                Ok(0) => eof = true,
                Ok(n) => read += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        let taken = rx.open_records(buf)?;
        let closed = eof || rx.closed;
        if closed && taken == 0 {
            return Ok(0);
        }
        if taken == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(taken)
    }
}

fn key_and_iv(
    secrets: ConnectionTrafficSecrets,
) -> Result<(rustls::crypto::cipher::AeadKey, rustls::crypto::cipher::Iv), IntoRecordsError> {
    match secrets {
        ConnectionTrafficSecrets::Aes128Gcm { key, iv }
        | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
        | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => Ok((key, iv)),
        _ => Err(IntoRecordsError::Suite),
    }
}

/// `io::Write` over a non-blocking socket (`WouldBlock` when it takes nothing).
struct TryWrite<'a>(&'a TcpStream);

impl io::Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Socket {
    /// A TLS socket from a session whose handshake (and HTTP upgrade) is done.
    pub fn tls(tcp: TcpStream, session: ServerConnection) -> Result<Socket, IntoRecordsError> {
        Ok(Socket::Tls(Box::new(TlsSocket::from_session(tcp, session)?)))
    }

    fn tcp(&self) -> &TcpStream {
        match self {
            Socket::Plain(tcp) => tcp,
            Socket::Tls(tls) => &tls.tcp,
        }
    }

    /// Ready once bytes have arrived (or the peer is gone).
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_read_ready(cx)
    }

    /// Waits until bytes have arrived (or the peer is gone).
    pub async fn readable(&self) -> io::Result<()> {
        self.tcp().readable().await
    }

    /// Appends what has arrived, in plain bytes, to `buf`: `Ok(0)` once the peer closed,
    /// `WouldBlock` when nothing (whole) has arrived yet.
    pub fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        match self {
            Socket::Plain(tcp) => tcp.try_read_buf(buf),
            Socket::Tls(tls) => tls.try_read_buf(buf),
        }
    }
}

impl FrameSink for Socket {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Socket::Plain(tcp) => tcp.try_write_vectored(bufs),
            Socket::Tls(tls) => {
                let mut tx = tls.tx.lock();
                // Earlier records first: frames must not overtake each other.
                if !tx.send_unsent(&tls.tcp)? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                tx.write(&tls.tcp, bufs)
            }
        }
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Plain(tcp) => tcp.try_write(buf),
            Socket::Tls(_) => self.try_write_vectored(&[IoSlice::new(buf)]),
        }
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_write_ready(cx)
    }

    fn flush_pending(&self) -> io::Result<bool> {
        match self {
            Socket::Plain(_) => Ok(true),
            Socket::Tls(tls) => tls.tx.lock().send_unsent(&tls.tcp),
        }
    }
}
