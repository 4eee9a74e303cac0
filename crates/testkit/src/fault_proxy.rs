//! A TCP proxy between the node and a server that can be made to misbehave the ways networks
//! do, without root: forward (the default), delay every chunk, blackhole (keep the sockets
//! open and drop every byte, no FIN: what a dead route or a paused peer looks like), go
//! half-open (the client's bytes still reach the server, nothing comes back), or reset every
//! connection. A blackhole can be limited to the connections that subscribed (a pub/sub
//! connection goes silent while commands keep working). The idea is centrifuge's test proxy.
//!
//! It runs on a runtime of its own, so any test (async or not) can use it.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// How the proxy treats the bytes it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// Pass everything on.
    Forward = 0,
    /// Drop every byte both ways, keeping the sockets open.
    Blackhole = 1,
    /// Drop every byte on connections that sent `SUBSCRIBE` (pub/sub connections); forward
    /// the rest.
    BlackholeSubscribers = 2,
    /// Pass the client's bytes on, drop the server's.
    HalfOpen = 3,
}

struct State {
    mode: AtomicU8,
    delay_ms: AtomicU64,
    /// Bumped by [`FaultProxy::reset_all`]: connections of an older epoch end at once.
    epoch: AtomicU64,
    /// New connections are refused (accepted and closed at once) while set.
    refuse: AtomicBool,
    connections: AtomicU64,
}

/// A running fault proxy, stopped when dropped.
pub struct FaultProxy {
    /// Where clients connect (127.0.0.1).
    pub addr: SocketAddr,
    state: Arc<State>,
    runtime: Mutex<Option<tokio::runtime::Runtime>>,
}

impl FaultProxy {
    /// Starts forwarding from a free loopback port to `upstream`.
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime for the proxy");
        let state = Arc::new(State {
            mode: AtomicU8::new(Mode::Forward as u8),
            delay_ms: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            refuse: AtomicBool::new(false),
            connections: AtomicU64::new(0),
        });
        // Bound here (not with the runtime's `block_on`, which cannot run inside a test's
        // runtime) and handed over.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener.set_nonblocking(true).expect("a non-blocking listener");
        let addr = listener.local_addr().expect("proxy address");
        let accepting = state.clone();
        runtime.spawn(async move {
            let Ok(listener) = TcpListener::from_std(listener) else { return };
            while let Ok((client, _)) = listener.accept().await {
                if accepting.refuse.load(Ordering::Acquire) {
                    drop(client);
                    continue;
                }
                accepting.connections.fetch_add(1, Ordering::Relaxed);
                let state = accepting.clone();
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(upstream).await {
                        carry(client, server, state).await;
                    }
                });
            }
        });
        FaultProxy { addr, state, runtime: Mutex::new(Some(runtime)) }
    }

    /// `redis://127.0.0.1:port` of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Makes the proxy treat bytes as `mode` says, from now on.
    pub fn set(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::Release);
    }

    /// Back to forwarding everything at once (the delay too), and accepting connections.
    pub fn heal(&self) {
        self.set(Mode::Forward);
        self.state.delay_ms.store(0, Ordering::Release);
        self.state.refuse.store(false, Ordering::Release);
    }

    /// Delays every chunk by `delay` (each direction).
    pub fn delay(&self, delay: Duration) {
        self.state.delay_ms.store(delay.as_millis() as u64, Ordering::Release);
    }

    /// Ends every open connection (both sockets closed) and, while `refuse`, refuses new ones.
    pub fn reset_all(&self, refuse: bool) {
        self.state.refuse.store(refuse, Ordering::Release);
        self.state.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.lock().take() {
            runtime.shutdown_background();
        }
    }
}

/// Carries one connection both ways until either side ends or a reset ends it.
async fn carry(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let _ = (client.set_nodelay(true), server.set_nodelay(true));
    let epoch = state.epoch.load(Ordering::Acquire);
    let subscriber = Arc::new(AtomicBool::new(false));
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let up = pump(client_read, server_write, state.clone(), subscriber.clone(), true, epoch);
    let down = pump(server_read, client_write, state.clone(), subscriber, false, epoch);
    tokio::select! {
        () = up => {}
        () = down => {}
    }
}

/// Copies one direction, applying the proxy's mode to every chunk.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    state: Arc<State>,
    subscriber: Arc<AtomicBool>,
    upstream: bool,
    epoch: u64,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buf) => read,
            () = ended(&state, epoch) => return,
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if upstream && !subscriber.load(Ordering::Relaxed) && contains(&buf[..n], b"SUBSCRIBE") {
            subscriber.store(true, Ordering::Relaxed);
        }
        let mode = state.mode.load(Ordering::Acquire);
        let drop_it = mode == Mode::Blackhole as u8
            || (mode == Mode::BlackholeSubscribers as u8 && subscriber.load(Ordering::Relaxed))
            || (mode == Mode::HalfOpen as u8 && !upstream);
        if drop_it {
            continue;
        }
        let delay = state.delay_ms.load(Ordering::Acquire);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Resolves once a reset ended connections of `epoch`.
async fn ended(state: &State, epoch: u64) {
    while state.epoch.load(Ordering::Acquire) == epoch {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};

    use super::*;

    /// An echo server on a free port, on a thread.
    fn echo() -> SocketAddr {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = stream;
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    fn round_trip(s: &mut std::net::TcpStream, what: &[u8]) -> Option<Vec<u8>> {
        s.write_all(what).ok()?;
        let mut buf = vec![0u8; what.len()];
        s.read_exact(&mut buf).ok().map(|()| buf)
    }

    #[test]
    fn it_forwards_blackholes_only_subscribers_and_resets() {
        let proxy = FaultProxy::start(echo());
        let mut plain = std::net::TcpStream::connect(proxy.addr).expect("connect");
        let mut sub = std::net::TcpStream::connect(proxy.addr).expect("connect");
        for s in [&mut plain, &mut sub] {
            s.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        }
        assert_eq!(round_trip(&mut plain, b"PING").as_deref(), Some(&b"PING"[..]));
        assert_eq!(round_trip(&mut sub, b"SUBSCRIBE x").as_deref(), Some(&b"SUBSCRIBE x"[..]));
        proxy.set(Mode::BlackholeSubscribers);
        assert_eq!(round_trip(&mut plain, b"PING").as_deref(), Some(&b"PING"[..]), "commands still work");
        assert_eq!(round_trip(&mut sub, b"ping"), None, "the subscriber hears nothing");
        proxy.heal();
        proxy.reset_all(false);
        let mut buf = [0u8; 8];
        assert!(matches!(plain.read(&mut buf), Ok(0) | Err(_)), "a reset ends open connections");
        let mut again = std::net::TcpStream::connect(proxy.addr).expect("connect again");
        again.set_read_timeout(Some(Duration::from_millis(500))).expect("timeout");
        assert_eq!(round_trip(&mut again, b"PONG").as_deref(), Some(&b"PONG"[..]));
        assert_eq!(proxy.connections(), 3);
    }
}
