//! The connection actor: one task per WebSocket, the same shape for every dialect.
//!
//! The task owns the [`MessageHandler`] (for the real endpoints a session: subscriptions,
//! command handling), reads and decodes client frames, runs every timer of the connection
//! (heartbeat, idle and unsubscribed timeouts, credential expiry, drain) from one deadline, and
//! finishes output the socket did not take at once. Output itself is written by whoever sends
//! it, straight onto the socket when nothing is pending (see [`ConnHandle`]), so delivering an
//! event wakes no task. Everything else (fan-out, drain, revocation) reaches the connection
//! through its handle. An idle connection holds no read or write buffer.
//!
//! The actor knows nothing of the node: it gets a [`ConnContext`] (metrics, the drain signal)
//! and a handler.

mod echo;
mod handle;
mod input;
mod outbox;
mod rate;
mod reader;
mod refusal;
mod socket;
mod subscriptions;
mod timers;

#[cfg(test)]
pub(crate) mod testing;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use parking_lot::Mutex;
use slab::Slab;
use switchboard_protocol::CloseReason;
use switchboard_wsframe::deflate::Agreement;
use switchboard_wsframe::{close_payload, FrameOp, Message};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use echo::EchoHandler;
pub use handle::{ClosePlan, ConnHandle, SendOutcome};
#[cfg(feature = "internals")]
pub use outbox::Discard;
pub use outbox::{Flush, Payload, MAX_FRAMES_PER_WRITE};
pub use refusal::RefusalHandler;
pub use socket::Socket;
pub use subscriptions::{LazyPayload, Subscriptions};

use crate::auth::Principal;
use crate::endpoint::EndpointRuntime;
use crate::ip_limits::IpSlot;
use crate::metrics::Metrics;
use input::Input;
use reader::{Reader, Step};
use timers::Timers;

/// What a connection does with the messages it receives. The actor shape (reader, output,
/// heartbeats, close handshake) is the same for every handler.
pub trait MessageHandler: Send {
    /// Called once after the upgrade, before any message is read.
    fn start(&mut self) -> impl Future<Output = Result<(), CloseReason>> + Send;
    /// One complete client message.
    fn handle(&mut self, data: &[u8], is_text: bool) -> impl Future<Output = ()> + Send;
    /// Called once when the connection ends.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
    /// Fills a gap in what the connection got live (see [`ConnHandle::request_catch_up`]);
    /// handlers without persisted events have none.
    fn catch_up(&mut self) -> impl Future<Output = ()> + Send {
        std::future::ready(())
    }
    /// Whether the client subscribed to anything (connections that never do are closed after
    /// the endpoint's `unsubscribed_timeout`).
    fn is_subscribed(&self) -> bool;
}

/// What every connection of a node shares: where to count, when to drain, where connection
/// tasks are tracked, and connection ids.
pub struct ConnContext {
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the node starts draining.
    pub draining: CancellationToken,
    /// Connections close at random points of this window when draining.
    pub drain_window: Duration,
    /// Connection tasks, so a drain can wait for them.
    pub tasks: TaskTracker,
    /// The open connections, so a drain reaches each one through its handle: a slot each
    /// instead of a cancellation future in every connection's task.
    open: Mutex<Slab<Arc<ConnHandle>>>,
    next_id: AtomicU64,
}

impl ConnContext {
    /// A context for a node's connections.
    pub fn new(metrics: Arc<Metrics>, drain_window: Duration) -> ConnContext {
        ConnContext {
            metrics,
            draining: CancellationToken::new(),
            drain_window,
            tasks: TaskTracker::new(),
            open: Mutex::new(Slab::new()),
            next_id: AtomicU64::new(1),
        }
    }

    /// A node-unique connection id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Starts the drain: new upgrades are refused (see `draining`) and every open connection
    /// is told to pick its point in the drain window.
    pub fn start_draining(&self) {
        self.draining.cancel();
        for (_, conn) in self.open.lock().iter() {
            conn.request_drain();
        }
    }

    /// Asks every open connection that fills gaps from its user's log to do so (the node's
    /// broker subscriptions were lost and are back); returns how many were asked.
    pub fn request_catch_ups(&self) -> usize {
        let mut asked = 0;
        for (_, conn) in self.open.lock().iter() {
            if conn.fills_gaps() {
                conn.request_catch_up();
                asked += 1;
            }
        }
        asked
    }

    /// Lists an open connection until the returned registration drops, which also holds its
    /// place in its address's count (`ip_slot`). A connection listed after the drain began
    /// is told at once: either the drain's walk sees it or it sees the drain.
    fn list(self: &Arc<Self>, conn: &Arc<ConnHandle>, ip_slot: Option<Arc<IpSlot>>) -> Open {
        let key = self.open.lock().insert(conn.clone());
        if self.draining.is_cancelled() {
            conn.request_drain();
        }
        Open { ctx: self.clone(), key, _ip_slot: ip_slot }
    }
}

/// A connection's registration while it is open: its place in [`ConnContext`]'s list (given
/// back on drop, also if the connection's task panics) and in its address's count. One value
/// for both, and the task reaches the node's context through it.
struct Open {
    ctx: Arc<ConnContext>,
    key: usize,
    /// Its place in its address's count (per-IP limits): held, never read; dropping it gives
    /// the place back when the connection is over.
    _ip_slot: Option<Arc<IpSlot>>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.ctx.open.lock().try_remove(self.key);
    }
}

/// What the handshake settled for a new connection.
#[derive(Default)]
pub struct Accepted {
    /// Who connected (none on the diagnostic echo endpoint and for refusals).
    pub principal: Option<Arc<Principal>>,
    /// When the credential expires (ms since the epoch).
    pub expires_at: Option<u64>,
    /// The connection's initial subscriptions (the endpoint decides).
    pub subscriptions: Subscriptions,
    /// permessage-deflate, when negotiated.
    pub deflate: Option<Agreement>,
    /// The connection's place in its address's count (per-IP limits on), held until it ends.
    pub ip_slot: Option<Arc<IpSlot>>,
}

/// How long to wait for the client's close frame after the server sent its own.
const CLOSE_LINGER: Duration = Duration::from_secs(3);
/// How long the final frames (pending output, then the close frame) may take to write.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Completes the upgrade of an accepted WebSocket request and starts the connection's task
/// (see [`run`]). The node serves HTTP/1.1 over plain `TcpStream`s (see `server`), so the
/// upgraded IO is the socket itself, which the connection then reads and writes without
/// buffering. The connection runs on a task of its own, so none of the upgrade's state stays
/// with it. `accepted` says who connected, what the handshake agreed and where the
/// connection starts.
pub async fn run_upgraded<H: MessageHandler + 'static>(
    ctx: Arc<ConnContext>,
    endpoint: Arc<EndpointRuntime>,
    accepted: Accepted,
    make_handler: impl FnOnce(Arc<ConnHandle>) -> H,
    upgrade: fastwebsockets::upgrade::UpgradeFut,
) {
    let Accepted { principal, expires_at, subscriptions, deflate, ip_slot } = accepted;
    let upgraded = match upgrade.await {
        Ok(ws) => ws.into_inner().into_inner(),
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    // The node serves plain TCP, or TLS sessions over it: either way the connection gets the
    // socket itself (and the session), not hyper's wrapper and buffers.
    let (socket, early) = match upgraded.downcast::<hyper_util::rt::TokioIo<TcpStream>>() {
        Ok(parts) => {
            let hyper::upgrade::Parts { io, read_buf, .. } = parts;
            // `read_buf` is a view into hyper's whole read buffer: copy what the client sent
            // early (usually nothing) and let the buffer go before the connection starts.
            (Socket::Plain(io.into_inner()), read_buf.to_vec())
        }
        Err(upgraded) => match upgraded.downcast::<hyper_util::rt::TokioIo<TlsStream<TcpStream>>>() {
            Ok(parts) => {
                let hyper::upgrade::Parts { io, read_buf, .. } = parts;
                let mut early = read_buf.to_vec();
                let (tcp, mut session) = io.into_inner().into_inner();
                // And what the session decrypted that hyper had not read yet.
                let _ = std::io::Read::read_to_end(&mut session.reader(), &mut early);
                match Socket::tls(tcp, session) {
                    Ok(socket) => (socket, early),
                    Err(e) => {
                        tracing::warn!(error = %e, "a TLS connection could not continue after its upgrade; it is dropped");
                        return;
                    }
                }
            }
            Err(_) => {
                tracing::error!("upgraded connection is neither TCP nor TLS over TCP; it is dropped");
                return;
            }
        },
    };
    let socket = Arc::new(socket);
    let id = ctx.next_id();
    let conn = Arc::new(ConnHandle::new(id, endpoint.clone(), principal, subscriptions, socket.clone(), deflate));
    let session = make_handler(conn.clone());
    let input = Input::new(early, deflate.is_some());
    ctx.tasks.spawn(task(&ctx, conn, socket, session, expires_at, input, ip_slot));
}

/// The task of a connection whose upgrade is done: it is listed as open from here on, its
/// deadlines count from now (`expires_at`: when its credentials expire), `input` is what the
/// client sent right behind its handshake, `ip_slot` its place in its address's count.
fn task<H: MessageHandler>(
    ctx: &Arc<ConnContext>,
    conn: Arc<ConnHandle>,
    socket: Arc<Socket>,
    session: H,
    expires_at: Option<u64>,
    input: Input,
    ip_slot: Option<Arc<IpSlot>>,
) -> impl Future<Output = ()> + Send {
    let timers = Timers::new(&conn.endpoint, expires_at);
    let reader = Reader::new(input, &conn.endpoint);
    let open = ctx.list(&conn, ip_slot);
    run(open, conn, socket, session, timers, reader)
}

/// Runs one connection to its end; `reader`'s input starts with whatever the client sent right
/// behind its handshake; `open` is its registration as open, held to the end.
/// Everything here lives as long as the connection: keep it small. (An `async` block rather
/// than an `async fn`: an `async fn` keeps its arguments twice in its state, as arguments and as
/// the locals they are moved into, for the connection's whole life.)
#[allow(clippy::manual_async_fn)] // deliberately not an `async fn`: see above
fn run<H: MessageHandler>(
    open: Open,
    conn: Arc<ConnHandle>,
    socket: Arc<Socket>,
    mut session: H,
    mut timers: Timers,
    mut reader: Reader,
) -> impl Future<Output = ()> + Send {
    async move {
        open.ctx.metrics.connections.with_label_values(&[conn.endpoint.path()]).inc();
        // The handler's futures are boxed while they run, so their state is not part of every
        // connection's task for its whole life.
        if let Err(reason) = Box::pin(session.start()).await {
            conn.close(reason);
        }

        // The loop's state (its timer above all) ends with the loop: none of it is held while the
        // connection finishes.
        {
            let sleep = tokio::time::sleep_until(timers.next());
            tokio::pin!(sleep);
            let mut drain_armed = false;
            let mut blocked = false;

            while !conn.is_closing() {
                // Fill a gap in what the connection got live when one is due, and handle every
                // complete frame that has arrived. The work lives in the boxed future (the
                // message with it), not in this task's state.
                while !conn.is_closing() {
                    let work = if conn.take_catch_up_request() {
                        catch_up(&mut session)
                    } else {
                        match reader.step(&conn, &mut timers, &open.ctx.metrics) {
                            Step::Message(message) => handle(&mut session, message),
                            Step::Handled => continue,
                            Step::Drained => break,
                        }
                    };
                    work.await;
                }
                // Nothing pending: hold no read buffer while idle.
                reader.compact();
                if conn.is_closing() {
                    break;
                }

                // Wait for the first of: a wake through the handle, the socket (writable while
                // output is blocked, else readable), the next deadline. Polled by hand, in that
                // order: this wait is what an idle connection's task holds.
                let wake = std::future::poll_fn(|cx| {
                    if conn.poll_woken(cx).is_ready() {
                        return Poll::Ready(Wake::Handle);
                    }
                    let socket_ready = if blocked { conn.poll_writable(cx) } else { socket.poll_read_ready(cx) };
                    if let Poll::Ready(ready) = socket_ready {
                        return Poll::Ready(Wake::Socket(ready));
                    }
                    sleep.as_mut().poll(cx).map(|()| Wake::Deadline)
                })
                .await;
                match wake {
                    Wake::Handle => {
                        blocked = flushed(&conn);
                        if conn.take_drain_request() && !drain_armed {
                            // Each connection closes at a random point of the drain window, so
                            // clients reconnect elsewhere spread out instead of all at once.
                            drain_armed = true;
                            timers.drain_after(open.ctx.drain_window.mul_f64(rand::random::<f64>()));
                            sleep.as_mut().reset(timers.next());
                        }
                    }
                    Wake::Socket(Err(_)) => conn.close_with(ClosePlan::Silent),
                    Wake::Socket(Ok(())) if blocked => blocked = flushed(&conn),
                    Wake::Socket(Ok(())) => {
                        if !reader.read_from(&socket) {
                            conn.close_with(ClosePlan::Silent);
                        }
                    }
                    Wake::Deadline => {
                        timers.fire(&conn, &conn.endpoint, session.is_subscribed());
                        sleep.as_mut().reset(timers.next());
                    }
                }
            }
        }

        Box::pin(session.finish()).await;
        // The closing steps run boxed too: their state is not part of the task while it lives.
        Box::pin(close(&open.ctx, &conn, &socket, reader)).await;
        // The list's and the address's places are given back only now that the connection is over.
        drop(open);
    }
}

/// Ends a connection whose loop is over: seals its output behind the close frame the plan
/// calls for, writes what is pending within a bound, lingers for the client's close frame
/// where that is due, and counts the close.
async fn close(ctx: &ConnContext, conn: &ConnHandle, socket: &Socket, reader: Reader) {
    let endpoint = &conn.endpoint;
    let path = endpoint.path();
    let plan = conn.close_plan();
    let (close, drop_pending) = match &plan {
        Some(ClosePlan::Server(reason, text)) => {
            (Some(close_payload(endpoint.close_code(*reason), text)), *reason == CloseReason::SlowConsumer)
        }
        Some(ClosePlan::Echo(payload)) => (Some(payload.clone()), false),
        Some(ClosePlan::Silent) | None => (None, true),
    };
    let sealed = conn.seal(close, drop_pending);
    if sealed == Flush::Blocked {
        let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, conn.flush_all()).await;
    }
    // After a server-initiated close, read until the client answers (or a bound passes) so
    // the close frame is not lost to a TCP reset on unread data. A connection failed for a
    // protocol violation is dropped at once instead (RFC 6455 §7.1.7).
    let linger = matches!(&plan, Some(ClosePlan::Server(reason, _)) if !reason.fails_connection());
    if linger && sealed != Flush::Broken {
        let (input, max_bytes) = (reader.into_input(), endpoint.limits().max_message_bytes);
        let _ = tokio::time::timeout(CLOSE_LINGER, await_client_close(socket, input, max_bytes)).await;
    }
    let (code, by) = close_labels(endpoint, plan.as_ref());
    tracing::debug!(endpoint = path, code, by, "closed");
    ctx.metrics.disconnects.with_label_values(&[path, &code, by]).inc();
    ctx.metrics.connections.with_label_values(&[path]).dec();
}

/// The `code` and `by` labels of a close: the server's codes come from the endpoint's map (a
/// bounded set); a client's code is kept only when it is one of the standard ones, so clients
/// cannot grow the metric's label set.
fn close_labels(endpoint: &EndpointRuntime, plan: Option<&ClosePlan>) -> (String, &'static str) {
    match plan {
        Some(ClosePlan::Server(reason, _)) => (endpoint.close_code(*reason).to_string(), "server"),
        Some(ClosePlan::Echo(p)) if p.len() >= 2 => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            let label = if matches!(code, 1000..=1003 | 1007..=1014) { code.to_string() } else { "other".into() };
            (label, "client")
        }
        Some(ClosePlan::Echo(_)) => ("1005".into(), "client"),
        Some(ClosePlan::Silent) | None => ("1006".into(), "network"),
    }
}

/// The bytes of a connection task's state with `session` as its handler, over a real socket:
/// what every open connection holds in its task (tests keep it within tokio's task cell).
#[cfg(test)]
pub(crate) async fn task_state_bytes<H: MessageHandler>(
    ctx: &Arc<ConnContext>,
    conn: Arc<ConnHandle>,
    session: H,
) -> usize {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let _client = TcpStream::connect(listener.local_addr().expect("address")).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    let future = task(ctx, conn, Arc::new(Socket::Plain(server)), session, None, Input::new(Vec::new(), false), None);
    std::mem::size_of_val(&future)
}

/// What woke an idle connection's task.
enum Wake {
    /// Its handle: output to finish, a close, a drain.
    Handle,
    /// Its socket: readable, or writable while output is blocked.
    Socket(std::io::Result<()>),
    /// Its next deadline.
    Deadline,
}

/// The handler's work on one message, boxed: the message moves in with it, so neither is part of
/// the connection task's state between messages.
fn handle<'a, H: MessageHandler>(
    session: &'a mut H,
    message: Message<'a>,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(async move { session.handle(&message.data, message.is_text).await })
}

/// The handler's gap-fill, boxed like [`handle`].
fn catch_up<'a, H: MessageHandler>(session: &'a mut H) -> Pin<Box<dyn Future<Output = ()> + Send + 'a>> {
    Box::pin(session.catch_up())
}

/// Flushes pending output; true when the socket is full and the task must wait for it.
fn flushed(conn: &ConnHandle) -> bool {
    match conn.flush() {
        Flush::Idle => false,
        Flush::Blocked => true,
        Flush::Broken => {
            conn.close_with(ClosePlan::Silent);
            false
        }
    }
}

/// Reads and discards frames until the client's close frame, an error, or end of stream.
async fn await_client_close(socket: &Socket, mut input: Input, max_bytes: usize) {
    loop {
        loop {
            match input.next_frame(max_bytes) {
                Ok(Some(frame)) if frame.op == FrameOp::Close => return,
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        if socket.readable().await.is_err() || !input.read_from(socket) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{connection, endpoint_with};
    use super::*;

    #[test]
    fn a_drain_reaches_every_listed_connection_and_one_listed_after_it_began() {
        let ctx = Arc::new(ConnContext::new(Arc::new(Metrics::new()), Duration::from_secs(1)));
        let ep = endpoint_with("/ws", |_| {});
        let (early, _) = connection(1, ep.clone());
        let (late, _) = connection(2, ep.clone());
        let (gone, _) = connection(3, ep);
        let listed_early = ctx.list(&early, None);
        drop(ctx.list(&gone, None));
        assert_eq!(ctx.open.lock().len(), 1, "a connection that ended is no longer listed");
        assert!(!early.take_drain_request());
        ctx.start_draining();
        let listed_late = ctx.list(&late, None);
        assert!(early.take_drain_request(), "listed before the drain: reached by its walk");
        assert!(late.take_drain_request(), "listed after the drain began: told when listed");
        assert!(!gone.take_drain_request(), "no longer listed: not reached");
        assert!(!early.take_drain_request(), "a request is taken once");
        drop((listed_early, listed_late));
        assert_eq!(ctx.open.lock().len(), 0);
    }
}
