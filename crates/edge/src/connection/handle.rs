//! The shared half of a connection: what the dispatcher and the node may touch while the
//! connection's task runs. It is small on purpose (one per connection, 100k per node).
//!
//! Output goes through the [`Outbox`]: whoever sends (the dispatcher on the fan-out path, the
//! session answering a command) writes straight to the socket when nothing is pending, so a
//! delivery to a reading client costs one non-blocking `write` and wakes no task. Only what the
//! socket does not take at once is queued, and the connection's task finishes it when the
//! socket becomes writable.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use switchboard_broker::LogId;
use switchboard_protocol::keyspace::is_user_topic;
use switchboard_protocol::{CloseReason, Event, FrameKind};
use switchboard_wsframe::deflate::Agreement;
use switchboard_wsframe::Opcode;

use super::outbox::{Flush, FrameSink, Outbound, Outbox, Payload, Push, QueueBound};
use super::subscriptions::{LazyPayload, Subscriptions};
use crate::auth::Principal;
use crate::endpoint::EndpointRuntime;

/// What happened to a message handed to [`ConnHandle::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// It is on the socket or queued behind what is.
    Queued,
    /// Too much was pending; the connection is being closed as a slow consumer.
    SlowConsumer,
    /// The connection is already gone.
    Gone,
    /// The connection already has this event (same or later log position).
    Duplicate,
}

/// Ordering state for persisted events: the last log position queued, and the live events
/// held back while missed ones are sent from the log (a replay, or a gap-fill).
#[derive(Default)]
struct Positions {
    /// The newest log position the connection has, or has passed over because it was not for
    /// it: everything at or before it is done. After the replay on connect it is at least
    /// where the replay started.
    last_queued: Option<LogId>,
    /// Boxed: only a connection that is replaying has one, and a box is a word where a
    /// `Vec` is three.
    #[allow(clippy::box_collection)]
    held: Option<Box<HeldEvents>>,
}

/// Live events held back while missed ones are sent from the log.
type HeldEvents = Vec<Held>;

/// One live event held back.
struct Held {
    /// Its log position, for persisted events.
    position: Option<LogId>,
    /// The position before it in the user's log, for persisted events (see [`Event::prev`]).
    prev: Option<LogId>,
    /// What goes to the client; `None` for a persisted event that is not for this connection
    /// (its type or the connection's subscriptions): only its position counts.
    frame: Option<Payload>,
}

impl Positions {
    /// Whether a persisted event whose predecessor in the log is `prev` shows that the
    /// connection missed something: the predecessor is newer than anything it has.
    fn gap_before(&self, prev: Option<LogId>) -> bool {
        matches!((prev, self.last_queued), (Some(prev), Some(last)) if prev > last)
    }

    /// Counts `position` as done without sending anything.
    fn pass(&mut self, position: LogId) {
        self.last_queued = Some(self.last_queued.map_or(position, |last| last.max(position)));
    }
}

/// How the connection ends, decided once by whoever ends it first.
#[derive(Debug, Clone)]
pub enum ClosePlan {
    /// The server closes with this reason (code from the endpoint's map) and text.
    Server(CloseReason, String),
    /// The client sent a close frame; echo its payload.
    Echo(Vec<u8>),
    /// The socket is gone; send nothing.
    Silent,
}

/// The shared part of one connection.
pub struct ConnHandle {
    /// Node-unique connection id.
    pub id: u64,
    /// The endpoint it connected to.
    pub endpoint: Arc<EndpointRuntime>,
    /// Who connected (none on the diagnostic echo endpoint): what cluster-wide control
    /// messages (revocation, membership) are checked against.
    pub principal: Option<Arc<Principal>>,
    /// What it subscribed to (the session writes, the fan-out reads).
    subscriptions: RwLock<Subscriptions>,
    /// The subscriptions filter nothing: every event on a registered topic is for the
    /// connection (the fan-out then skips reading them; see [`ConnHandle::selects`]).
    plain: AtomicBool,
    sink: Arc<dyn FrameSink>,
    outbox: Mutex<Outbox>,
    /// The connection's task, woken when there is output to finish or the connection ends.
    task: AtomicWaker,
    /// Set with every wake, cleared by the task when it wakes.
    wake_pending: AtomicBool,
    /// Set once a close plan exists: an atomic load for the fan-out path.
    closing: AtomicBool,
    /// Boxed: a connection has one only once it is closing.
    plan: Mutex<Option<Box<ClosePlan>>>,
    last_pong_ms: AtomicU64,
    /// Mirrors `positions.held.is_some()` for the fan-out fast path.
    holding: AtomicBool,
    /// A gap-fill is due: the connection may have missed persisted events (see
    /// [`ConnHandle::request_catch_up`]); the task runs it.
    catch_up: AtomicBool,
    /// The node started draining: the task picks the connection's point in the drain window.
    drain_requested: AtomicBool,
    /// permessage-deflate, when the client negotiated it: broadcasts go out compressed.
    deflate: Option<Agreement>,
    positions: Mutex<Positions>,
}

impl ConnHandle {
    /// A handle writing to `sink`, with at most the endpoint's `outbound_queue` messages
    /// pending behind a socket that does not take them; `deflate` is what the handshake agreed
    /// on compression.
    pub fn new(
        id: u64,
        endpoint: Arc<EndpointRuntime>,
        principal: Option<Arc<Principal>>,
        subscriptions: Subscriptions,
        sink: Arc<dyn FrameSink>,
        deflate: Option<Agreement>,
    ) -> Self {
        let opcode = match endpoint.codec.frame_kind() {
            FrameKind::Text => Opcode::Text,
            FrameKind::Binary => Opcode::Binary,
        };
        let outbox = Outbox::new(opcode);
        ConnHandle {
            id,
            endpoint,
            principal,
            plain: AtomicBool::new(subscriptions.is_plain()),
            subscriptions: RwLock::new(subscriptions),
            sink,
            outbox: Mutex::new(outbox),
            task: AtomicWaker::new(),
            wake_pending: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            plan: Mutex::new(None),
            last_pong_ms: AtomicU64::new(0),
            holding: AtomicBool::new(false),
            catch_up: AtomicBool::new(false),
            drain_requested: AtomicBool::new(false),
            positions: Mutex::default(),
            deflate,
        }
    }

    /// The deflate level to compress a message of `len` bytes with for this connection, or
    /// `None` to send it as it is: permessage-deflate was agreed, the message is at least the
    /// endpoint's `compression.min_bytes` and fits the window the client allows.
    pub fn deflate_level_for(&self, len: usize) -> Option<u32> {
        let compression = &self.endpoint.config.compression;
        let agreed = self.deflate?;
        (len >= compression.min_bytes && agreed.fits(len)).then_some(compression.level)
    }

    /// Whether this connection's subscriptions let `event`, which arrived on `topic`, through;
    /// the endpoint's own type list is checked by the caller, once per endpoint. `payload`
    /// caches the parsed payload across the subscribers of one event.
    pub fn selects(&self, topic: &str, event: &Event, payload: &mut LazyPayload) -> bool {
        // A channel's event on a user's stream was routed there by membership (chat): only
        // endpoints that deliver channels by membership show it; the others get a channel's
        // events by subscribing to it.
        if event.channel.is_some() && !self.endpoint.delivers_member_events() && is_user_topic(topic) {
            return false;
        }
        if self.plain.load(Ordering::Acquire) {
            // Nothing is filtered: a connection is registered on a topic only for a stream of
            // its own or a channel it subscribed to, so every event there is for it (except on
            // its user's topic where the endpoint delivers no user events). This skips the
            // subscription table, which on a large fan-out costs a cache miss per connection.
            return self.endpoint.config.user_events || !is_user_topic(topic);
        }
        self.subscriptions.read().selects(topic, self.endpoint.is_own_stream(topic), event, payload)
    }

    /// The connection's subscriptions, to read.
    pub fn subscriptions(&self) -> RwLockReadGuard<'_, Subscriptions> {
        self.subscriptions.read()
    }

    /// Changes the connection's subscriptions (the session does, and control messages).
    pub fn update_subscriptions<R>(&self, change: impl FnOnce(&mut Subscriptions) -> R) -> R {
        let mut subscriptions = self.subscriptions.write();
        let result = change(&mut subscriptions);
        self.plain.store(subscriptions.is_plain(), Ordering::Release);
        result
    }

    /// Sends a message without waiting: onto the socket if nothing is pending, else behind
    /// what is. Too much pending means the client is not reading: it is closed as a slow
    /// consumer rather than allowed to grow memory or stall the sender.
    pub fn send(&self, message: impl Into<Payload>) -> SendOutcome {
        self.push(Outbound::Message(message.into()), true)
    }

    /// Sends several messages of the endpoint's type: one vectored write when nothing is
    /// pending (the dispatcher's path when events for a topic arrive faster than a fan-out
    /// pass takes).
    pub fn send_many(&self, messages: &[Payload]) -> SendOutcome {
        let pushed = self.outbox.lock().push_many(&*self.sink, messages, self.queue_bound());
        self.outcome(pushed)
    }

    fn push(&self, item: Outbound, bounded: bool) -> SendOutcome {
        let bound = bounded.then(|| self.queue_bound());
        let pushed = self.outbox.lock().push(&*self.sink, item, bound);
        self.outcome(pushed)
    }

    /// The endpoint's bound on what may wait behind this connection's socket.
    fn queue_bound(&self) -> QueueBound {
        let limits = self.endpoint.limits();
        QueueBound { messages: limits.outbound_queue, bytes: limits.outbound_queue_bytes }
    }

    fn outcome(&self, pushed: Push) -> SendOutcome {
        match pushed {
            Push::Written | Push::Queued => SendOutcome::Queued,
            Push::Pending => {
                self.wake();
                SendOutcome::Queued
            }
            Push::Full => {
                self.close(CloseReason::SlowConsumer);
                SendOutcome::SlowConsumer
            }
            Push::Broken => {
                self.close_with(ClosePlan::Silent);
                SendOutcome::Gone
            }
            Push::Closed => SendOutcome::Gone,
        }
    }

    /// Sends a message with an explicit frame type, then waits until the socket has taken
    /// everything pending: the echo handler's backpressure (it runs on the connection's own
    /// task, which stops reading meanwhile).
    pub async fn send_flushed(&self, data: Payload, text: bool) {
        if self.push(Outbound::Typed { text, data }, false) == SendOutcome::Queued && !self.flush_all().await {
            self.close_with(ClosePlan::Silent);
        }
    }

    /// Sends an event from the broker: live events are held back while a replay runs, and
    /// persisted events (with a log `position`) the connection already has are dropped, so
    /// replayed and live events never overlap or go backwards. A persisted event whose `prev`
    /// (the entry before it in the user's log) the connection never got means that it missed
    /// something live: on an endpoint that replays, the event is held and a gap-fill is asked
    /// for, which sends the missed ones from the log first.
    pub fn send_event(&self, frame: impl Into<Payload>, position: Option<LogId>, prev: Option<LogId>) -> SendOutcome {
        let frame = frame.into();
        if position.is_none() && !self.holding.load(Ordering::Acquire) {
            return self.send(frame);
        }
        let mut pos = self.positions.lock();
        if pos.held.is_some() {
            return self.hold(pos, Held { position, prev, frame: Some(frame) });
        }
        if let Some(p) = position {
            if pos.last_queued.is_some_and(|last| p <= last) {
                return SendOutcome::Duplicate;
            }
            if self.fills_gaps() && pos.gap_before(prev) {
                return self.hold_for_gap(pos, Held { position, prev, frame: Some(frame) });
            }
        }
        self.send_in_order(&mut pos, frame, position)
    }

    /// A persisted live event that is not for this connection (its type, its subscriptions):
    /// nothing is sent, but its position counts as done, in its place among the events held,
    /// and a gap before it is filled as for [`ConnHandle::send_event`].
    pub fn pass_over(&self, position: LogId, prev: Option<LogId>) {
        let mut pos = self.positions.lock();
        let held = Held { position: Some(position), prev, frame: None };
        if pos.held.is_some() {
            self.hold(pos, held);
        } else if pos.last_queued.is_some_and(|last| position <= last) {
        } else if self.fills_gaps() && pos.gap_before(prev) {
            self.hold_for_gap(pos, held);
        } else {
            pos.pass(position);
        }
    }

    /// Whether gaps in this connection's persisted events are filled from the log: a user's
    /// connection on an endpoint that replays (the user's log is what it resumes from).
    pub(super) fn fills_gaps(&self) -> bool {
        self.endpoint.config.replay.enabled && self.principal.as_deref().is_some_and(|p| p.user().is_some())
    }

    /// Adds an event to those held; too many held closes the connection as a slow consumer.
    fn hold(&self, mut pos: parking_lot::MutexGuard<'_, Positions>, held: Held) -> SendOutcome {
        let queue = pos.held.as_mut().expect("holding");
        if queue.len() >= self.endpoint.limits().outbound_queue {
            drop(pos);
            self.close(CloseReason::SlowConsumer);
            return SendOutcome::SlowConsumer;
        }
        queue.push(held);
        SendOutcome::Queued
    }

    /// Starts holding live events behind a gap, with `first` the event that showed it, and
    /// asks for the gap-fill.
    fn hold_for_gap(&self, mut pos: parking_lot::MutexGuard<'_, Positions>, first: Held) -> SendOutcome {
        pos.held = Some(Box::new(vec![first]));
        self.holding.store(true, Ordering::Release);
        drop(pos);
        self.request_catch_up();
        SendOutcome::Queued
    }

    fn send_in_order(&self, pos: &mut Positions, frame: Payload, position: Option<LogId>) -> SendOutcome {
        let Some(position) = position else { return self.send(frame) };
        if pos.last_queued.is_some_and(|last| position <= last) {
            return SendOutcome::Duplicate;
        }
        pos.last_queued = Some(position);
        self.push(Outbound::Event { frame, position }, true)
    }

    /// Starts holding live events back (before the connection subscribes, when it will
    /// replay missed ones; before a gap-fill reads the log) unless they are held already;
    /// returns how many are held now. The log read that follows covers those (they were
    /// stored before they were published, and published before the read): see
    /// [`ConnHandle::end_hold`].
    pub fn begin_hold(&self) -> usize {
        let mut pos = self.positions.lock();
        let held = pos.held.get_or_insert_with(Box::default).len();
        self.holding.store(true, Ordering::Release);
        held
    }

    /// Sends a replayed event, ahead of any held live event.
    pub fn send_replayed(&self, frame: Bytes, position: LogId) -> SendOutcome {
        let mut pos = self.positions.lock();
        self.send_in_order(&mut pos, frame.into(), Some(position))
    }

    /// Counts a logged event that is not for this connection as done (a replay or gap-fill
    /// passing over it), so that it does not look missing later.
    pub fn pass_replayed(&self, position: LogId) {
        self.positions.lock().pass(position);
    }

    /// Counts everything up to `start` as done: where a replay started, the client had
    /// everything before (or it is older than what is kept).
    pub fn done_through(&self, start: LogId) {
        self.positions.lock().pass(start);
    }

    /// The newest position the connection has (see [`ConnHandle::done_through`]): a
    /// gap-fill reads the log after it.
    pub fn done_until(&self) -> Option<LogId> {
        self.positions.lock().last_queued
    }

    /// Ends a replay or gap-fill: sends the held live events it did not already cover, in
    /// arrival order, and lets later events through directly. The first `covered` held events
    /// were held before the log was read, so the read saw whatever the log had before them: a
    /// gap still in front of one of those is gone from the log for good (more was missed than
    /// the log keeps). A later one that shows a gap is held again, with the rest, for another
    /// gap-fill. Returns how many gaps the log could not fill.
    pub fn end_hold(&self, covered: usize) -> usize {
        let mut pos = self.positions.lock();
        let Some(held) = pos.held.take() else { return 0 };
        let mut unrecoverable = 0;
        let mut rest = held.into_iter().enumerate();
        while let Some((n, event)) = rest.next() {
            if let Some(position) = event.position.filter(|_| self.fills_gaps() && pos.gap_before(event.prev)) {
                if pos.last_queued.is_some_and(|last| position <= last) {
                    continue;
                }
                if n >= covered {
                    let mut again: HeldEvents = vec![event];
                    again.extend(rest.map(|(_, e)| e));
                    pos.held = Some(Box::new(again));
                    drop(pos);
                    self.request_catch_up();
                    return unrecoverable;
                }
                unrecoverable += 1;
            }
            match event.frame {
                Some(frame) => {
                    self.send_in_order(&mut pos, frame, event.position);
                }
                None => {
                    if let Some(position) = event.position {
                        pos.pass(position);
                    }
                }
            }
        }
        self.holding.store(false, Ordering::Release);
        unrecoverable
    }

    /// Asks the connection's task for a gap-fill (its subscription may have missed persisted
    /// events: the node's broker subscriptions were restored after a loss, or a live event
    /// showed a gap). Several requests before it runs make one.
    pub fn request_catch_up(&self) {
        self.catch_up.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether a gap-fill was asked for since the last call.
    pub fn take_catch_up_request(&self) -> bool {
        // A load first: the task asks before every message, and a request is rare.
        self.catch_up.load(Ordering::Acquire) && self.catch_up.swap(false, Ordering::AcqRel)
    }

    /// The last persisted event written to the socket: where a later replay starts.
    pub fn last_written(&self) -> Option<LogId> {
        self.outbox.lock().last_written()
    }

    /// Sends a control frame (ping, pong); dropped with the connection if too much is pending.
    pub fn send_control(&self, opcode: Opcode, payload: Vec<u8>) {
        self.push(Outbound::Control(opcode, payload), true);
    }

    /// Holds output back until [`ConnHandle::uncork`], so frames sent together (a replay, its
    /// end and the live events held meanwhile) leave in one write (see [`Outbox::cork`]).
    pub fn cork(&self) {
        self.outbox.lock().cork();
    }

    /// Lets output held by [`ConnHandle::cork`] go, as far as the socket takes it; the
    /// connection's task finishes the rest.
    pub fn uncork(&self) {
        let flushed = self.outbox.lock().uncork(&*self.sink);
        match flushed {
            Flush::Idle => {}
            Flush::Blocked => self.wake(),
            Flush::Broken => self.close_with(ClosePlan::Silent),
        }
    }

    /// Writes what is pending as far as the socket takes it (the connection's task calls
    /// this when woken or when the socket becomes writable).
    pub fn flush(&self) -> Flush {
        self.outbox.lock().flush(&*self.sink)
    }

    /// Writes everything pending, waiting for the socket as long as it takes; false if the
    /// socket failed.
    pub async fn flush_all(&self) -> bool {
        loop {
            match self.flush() {
                Flush::Idle => return true,
                Flush::Broken => return false,
                Flush::Blocked if self.writable().await.is_err() => return false,
                Flush::Blocked => {}
            }
        }
    }

    /// Resolves when the socket can take more bytes.
    pub async fn writable(&self) -> std::io::Result<()> {
        std::future::poll_fn(|cx| self.poll_writable(cx)).await
    }

    /// Ready when the socket can take more bytes.
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.sink.poll_write_ready(cx)
    }

    fn wake(&self) {
        self.wake_pending.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Ready when the connection's task has something to do: output to finish, a close, or a
    /// drain to begin. Only the connection's own task polls it.
    pub fn poll_woken(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.wake_pending.swap(false, Ordering::AcqRel) {
            return Poll::Ready(());
        }
        self.task.register(cx.waker());
        if self.wake_pending.swap(false, Ordering::AcqRel) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Tells the connection's task that the node drains (see [`ConnContext::start_draining`]).
    ///
    /// [`ConnContext::start_draining`]: super::ConnContext::start_draining
    pub fn request_drain(&self) {
        self.drain_requested.store(true, Ordering::Release);
        self.wake();
    }

    /// Whether a drain was requested since the last call.
    pub fn take_drain_request(&self) -> bool {
        self.drain_requested.swap(false, Ordering::AcqRel)
    }

    /// Queues the final frames: everything pending stays (except for a slow consumer, which is
    /// closed precisely because it does not read it), then the close frame if there is one.
    /// Nothing is accepted after this.
    pub fn seal(&self, close: Option<Vec<u8>>, drop_pending: bool) -> Flush {
        let mut outbox = self.outbox.lock();
        outbox.seal(close, drop_pending);
        outbox.flush(&*self.sink)
    }

    /// Ends the connection with `reason` (first caller wins).
    pub fn close(&self, reason: CloseReason) {
        self.close_with(ClosePlan::Server(reason, reason.default_text().to_owned()));
    }

    /// Ends the connection with a specific plan (first caller wins).
    pub fn close_with(&self, plan: ClosePlan) {
        let mut current = self.plan.lock();
        if current.is_none() {
            *current = Some(Box::new(plan));
        }
        drop(current);
        self.closing.store(true, Ordering::Release);
        self.wake();
    }

    /// How the connection is ending, if it is.
    pub fn close_plan(&self) -> Option<ClosePlan> {
        self.plan.lock().as_deref().cloned()
    }

    /// Whether live events are held back while a replay runs.
    pub fn is_holding(&self) -> bool {
        self.holding.load(Ordering::Acquire)
    }

    /// Whether the connection is ending.
    pub fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Records a pong (heartbeat liveness).
    pub fn pong_received(&self, now_ms: u64) {
        self.last_pong_ms.store(now_ms, Ordering::Relaxed);
    }

    /// When the last pong arrived, unix ms (0: never).
    pub fn last_pong_ms(&self) -> u64 {
        self.last_pong_ms.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[path = "handle_tests.rs"]
mod tests;
