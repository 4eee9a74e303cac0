//! The shared half of a connection: what the dispatcher and the node may touch while the
//! connection's own tasks run. It is small on purpose (one per connection, 100k per node).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use switchboard_broker::LogId;
use switchboard_protocol::{CloseReason, Event, FieldFilter};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::endpoint::EndpointRuntime;

/// What the writer task sends.
#[derive(Debug)]
pub enum Outbound {
    /// A complete dialect message (text or binary per the endpoint's dialect).
    Message(Bytes),
    /// A message with an explicit frame type (the diagnostic echo).
    Typed {
        /// Text (true) or binary.
        text: bool,
        /// The message.
        data: Bytes,
    },
    /// A persisted event and its position in the user's log; the writer records the
    /// position once written, which becomes the replay cursor when the connection ends.
    Event {
        /// The encoded event.
        frame: Bytes,
        /// Its log position.
        sid: LogId,
    },
    /// A pong answering a client ping.
    Pong(Vec<u8>),
}

/// What happened to a message handed to [`ConnHandle::send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendOutcome {
    /// It is in the queue.
    Queued,
    /// The queue was full; the connection is being closed as a slow consumer.
    SlowConsumer,
    /// The connection is already gone.
    Gone,
    /// The connection already has this event (same or later log position).
    Duplicate,
}

/// Ordering state for persisted events: the last position queued, and the live events held
/// back while missed ones are replayed.
#[derive(Default)]
struct Positions {
    last_queued: Option<LogId>,
    last_written: Option<LogId>,
    held: Option<Vec<(Option<LogId>, Bytes)>>,
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

/// Which events a connection wants, beyond the topics it is registered on.
#[derive(Debug, Default)]
pub struct Selection {
    /// Event types chosen by the client (orbnet); `None` means every type the endpoint offers.
    pub types: Option<HashSet<String>>,
    /// Payload filter.
    pub filter: Option<FieldFilter>,
}

/// The shared part of one connection.
pub struct ConnHandle {
    /// Node-unique connection id.
    pub id: u64,
    /// The endpoint it connected to.
    pub endpoint: Arc<EndpointRuntime>,
    /// What it selected.
    pub selection: RwLock<Selection>,
    tx: mpsc::Sender<Outbound>,
    cancel: CancellationToken,
    /// Mirrors `cancel` for the fan-out path: an atomic load, where the token takes a lock.
    closing: AtomicBool,
    plan: Mutex<Option<ClosePlan>>,
    last_pong_ms: AtomicU64,
    /// Mirrors `positions.held.is_some()` for the fan-out fast path.
    holding: AtomicBool,
    positions: Mutex<Positions>,
}

impl ConnHandle {
    /// A handle whose writer reads from the other end of `tx`.
    pub fn new(id: u64, endpoint: Arc<EndpointRuntime>, selection: Selection, tx: mpsc::Sender<Outbound>) -> Self {
        ConnHandle {
            id,
            endpoint,
            selection: RwLock::new(selection),
            tx,
            cancel: CancellationToken::new(),
            closing: AtomicBool::new(false),
            plan: Mutex::new(None),
            last_pong_ms: AtomicU64::new(0),
            holding: AtomicBool::new(false),
            positions: Mutex::default(),
        }
    }

    /// Whether this connection's selection (chosen types, filter) accepts `event`; the
    /// endpoint's own type list is checked by the caller, once per endpoint. `payload` caches
    /// the parsed payload across the subscribers of one event.
    pub fn selects(&self, event: &Event, payload: &mut Option<Option<Value>>) -> bool {
        let selection = self.selection.read();
        if let Some(types) = &selection.types {
            if !types.contains(&event.kind) {
                return false;
            }
        }
        match &selection.filter {
            Some(f) if !f.is_empty() => match payload.get_or_insert_with(|| event.payload_value()) {
                Some(v) => f.matches(v),
                None => false,
            },
            _ => true,
        }
    }

    /// Queues a message without waiting. A full queue means the client is not reading: it is
    /// closed as a slow consumer rather than allowed to grow memory or stall the sender.
    pub fn send(&self, message: Bytes) -> SendOutcome {
        match self.tx.try_send(Outbound::Message(message)) {
            Ok(()) => SendOutcome::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CloseReason::SlowConsumer);
                SendOutcome::SlowConsumer
            }
            Err(mpsc::error::TrySendError::Closed(_)) => SendOutcome::Gone,
        }
    }

    /// Queues a message with an explicit frame type, waiting for room in the queue.
    pub async fn send_wait(&self, data: Bytes, text: bool) {
        let _ = self.tx.send(Outbound::Typed { text, data }).await;
    }

    /// Queues an event from the broker: live events are held back while a replay runs, and
    /// persisted events (`sid`) the connection already has are dropped, so replayed and live
    /// events never overlap or go backwards.
    pub fn send_event(&self, frame: Bytes, sid: Option<LogId>) -> SendOutcome {
        if sid.is_none() && !self.holding.load(Ordering::Acquire) {
            return self.send(frame);
        }
        let mut pos = self.positions.lock();
        if let Some(held) = pos.held.as_mut() {
            if held.len() >= self.tx.max_capacity() {
                drop(pos);
                self.close(CloseReason::SlowConsumer);
                return SendOutcome::SlowConsumer;
            }
            held.push((sid, frame));
            return SendOutcome::Queued;
        }
        self.queue_in_order(&mut pos, frame, sid)
    }

    fn queue_in_order(&self, pos: &mut Positions, frame: Bytes, sid: Option<LogId>) -> SendOutcome {
        let Some(sid) = sid else { return self.send(frame) };
        if pos.last_queued.is_some_and(|last| sid <= last) {
            return SendOutcome::Duplicate;
        }
        pos.last_queued = Some(sid);
        match self.tx.try_send(Outbound::Event { frame, sid }) {
            Ok(()) => SendOutcome::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.close(CloseReason::SlowConsumer);
                SendOutcome::SlowConsumer
            }
            Err(mpsc::error::TrySendError::Closed(_)) => SendOutcome::Gone,
        }
    }

    /// Starts holding live events back (before the connection subscribes, when it will
    /// replay missed ones).
    pub fn begin_hold(&self) {
        self.positions.lock().held = Some(Vec::new());
        self.holding.store(true, Ordering::Release);
    }

    /// Queues a replayed event, ahead of any held live event.
    pub fn send_replayed(&self, frame: Bytes, sid: LogId) -> SendOutcome {
        let mut pos = self.positions.lock();
        self.queue_in_order(&mut pos, frame, Some(sid))
    }

    /// Ends the replay: queues the held live events the replay did not already cover, in
    /// arrival order, and lets later events through directly.
    pub fn end_hold(&self) {
        let mut pos = self.positions.lock();
        for (sid, frame) in pos.held.take().unwrap_or_default() {
            self.queue_in_order(&mut pos, frame, sid);
        }
        self.holding.store(false, Ordering::Release);
    }

    /// Records that the writer put a persisted event on the socket.
    pub fn written(&self, sid: LogId) {
        let mut pos = self.positions.lock();
        if pos.last_written.is_none_or(|w| sid > w) {
            pos.last_written = Some(sid);
        }
    }

    /// The last persisted event written to the socket: where a later replay starts.
    pub fn last_written(&self) -> Option<LogId> {
        self.positions.lock().last_written
    }

    /// Queues a pong; dropped if the queue is full (the client is being closed anyway).
    pub fn send_pong(&self, payload: Vec<u8>) {
        let _ = self.tx.try_send(Outbound::Pong(payload));
    }

    /// Ends the connection with `reason` (first caller wins).
    pub fn close(&self, reason: CloseReason) {
        self.close_with(ClosePlan::Server(reason, reason.default_text().to_owned()));
    }

    /// Ends the connection with a specific plan (first caller wins).
    pub fn close_with(&self, plan: ClosePlan) {
        let mut current = self.plan.lock();
        if current.is_none() {
            *current = Some(plan);
        }
        drop(current);
        self.closing.store(true, Ordering::Release);
        self.cancel.cancel();
    }

    /// How the connection is ending, if it is.
    pub fn close_plan(&self) -> Option<ClosePlan> {
        self.plan.lock().clone()
    }

    /// Resolves once the connection is ending.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.cancel.cancelled()
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
