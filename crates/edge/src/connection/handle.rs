//! The shared half of a connection: what the dispatcher and the node may touch while the
//! connection's own tasks run. It is small on purpose (one per connection, 100k per node).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
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
