//! A WebSocket's socket: plain TCP, or TCP carrying a TLS session (`wss://` on a listener with
//! `tls_cert`). The connection reads it and everyone else writes to it without blocking, in
//! plain bytes either way: for TLS, reads decrypt what arrived and writes encrypt into the
//! session, which sends the records at once as far as the socket takes them and keeps the
//! rest for [`FrameSink::flush_pending`].
//!
//! A plain connection pays one word for the choice: the TLS session sits behind a box.

use std::io::{self, IoSlice, Read, Write};
use std::task::{Context, Poll};

use parking_lot::Mutex;
use rustls::ServerConnection;
use tokio::net::TcpStream;

use super::outbox::FrameSink;

/// Most plaintext one [`Socket::try_read_buf`] of a TLS socket takes in: what the plain
/// reader would take in one read at most, so one busy client cannot hold its task long.
const MAX_TLS_READ: usize = 1 << 20;

/// A connection's socket.
pub enum Socket {
    /// Plain TCP (`ws://`).
    Plain(TcpStream),
    /// TLS over TCP (`wss://`).
    Tls(Box<TlsSocket>),
}

/// A TCP socket and the TLS session over it, after the handshake.
pub struct TlsSocket {
    tcp: TcpStream,
    session: Mutex<ServerConnection>,
}

/// `io::Read` over a non-blocking socket (`WouldBlock` when nothing has arrived).
struct TryRead<'a>(&'a TcpStream);

impl Read for TryRead<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.try_read(buf)
    }
}

/// `io::Write` over a non-blocking socket (`WouldBlock` when it takes nothing).
struct TryWrite<'a>(&'a TcpStream);

impl Write for TryWrite<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.try_write(buf)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.0.try_write_vectored(bufs)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl TlsSocket {
    /// Sends the session's pending records as far as the socket takes them; true when none is
    /// left.
    fn send_records(&self, session: &mut ServerConnection) -> io::Result<bool> {
        while session.wants_write() {
            match session.write_tls(&mut TryWrite(&self.tcp)) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn try_read_buf(&self, buf: &mut Vec<u8>) -> io::Result<usize> {
        let mut session = self.session.lock();
        let mut taken = 0;
        let mut closed = false;
        while taken < MAX_TLS_READ {
            match session.read_tls(&mut TryRead(&self.tcp)) {
                Ok(0) => closed = true,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let state = match session.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    // Tell the peer why (the alert rustls queued), then fail.
                    let _ = self.send_records(&mut session);
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            };
            let ready = state.plaintext_bytes_to_read();
            let peer_closed = state.peer_has_closed();
            if ready > 0 {
                let start = buf.len();
                buf.resize(start + ready, 0);
                let n = session.reader().read(&mut buf[start..])?;
                buf.truncate(start + n);
                taken += n;
            }
            if closed || peer_closed {
                closed = true;
                break;
            }
            if ready == 0 {
                break;
            }
        }
        // Reading can queue records of the session's own (an alert, a key update's answer).
        self.send_records(&mut session)?;
        match (taken, closed) {
            (0, true) => Ok(0),
            (0, false) => Err(io::ErrorKind::WouldBlock.into()),
            (n, _) => Ok(n),
        }
    }
}

impl Socket {
    /// A TLS socket from the parts of a finished handshake.
    pub fn tls(tcp: TcpStream, session: ServerConnection) -> Socket {
        Socket::Tls(Box::new(TlsSocket { tcp, session: Mutex::new(session) }))
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
                let mut session = tls.session.lock();
                // Earlier records first: frames must not overtake each other.
                if !tls.send_records(&mut session)? {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let taken = session.writer().write_vectored(bufs)?;
                if taken == 0 && bufs.iter().any(|b| !b.is_empty()) {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                tls.send_records(&mut session)?;
                Ok(taken)
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
            Socket::Tls(tls) => tls.send_records(&mut tls.session.lock()),
        }
    }
}
