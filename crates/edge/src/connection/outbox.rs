//! A connection's pending output, and the rule that makes fan-out cheap: when nothing is
//! pending, a message goes straight onto the socket with one non-blocking vectored write
//! (frame header plus the shared payload bytes, no copy); only what the socket does not take
//! is kept, and then everything after it queues behind it so frames never interleave. The
//! connection's task finishes pending output when the socket becomes writable, coalescing
//! queued frames into one write of up to [`BATCH_BYTES`].

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::task::{Context, Poll};

use bytes::Bytes;
use switchboard_broker::LogId;
use switchboard_wsframe::{header, header_len, push_frame, push_header, FrameType, Opcode};

/// Most bytes coalesced into one socket write.
const BATCH_BYTES: usize = 64 * 1024;
/// Writes up to this size are copied into one buffer on the stack and written with a plain
/// `write`.
const SMALL_WRITE: usize = 1024;
thread_local! {
    /// Where small frames are assembled for one plain `write`.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(SMALL_WRITE));
}
/// Most frames written with one vectored write by [`Outbox::push_many`].
pub const MAX_FRAMES_PER_WRITE: usize = 32;

/// A message as one frame carries it: the bytes as encoded, or compressed with
/// permessage-deflate (the frame then has RSV1 set). Shared: one broadcast's bytes are the
/// same `Bytes` for every connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The frame's payload.
    pub bytes: Bytes,
    /// Whether `bytes` is a compressed message.
    pub deflated: bool,
}

impl From<Bytes> for Payload {
    fn from(bytes: Bytes) -> Self {
        Payload { bytes, deflated: false }
    }
}

/// What a connection writes: complete WebSocket messages and control frames.
#[derive(Debug)]
pub enum Outbound {
    /// A complete dialect message (text or binary per the endpoint's dialect).
    Message(Payload),
    /// A message with an explicit frame type (the diagnostic echo).
    Typed {
        /// Text (true) or binary.
        text: bool,
        /// The message.
        data: Payload,
    },
    /// A persisted event and its position in the user's log; the position is recorded once
    /// the frame is on the socket, and becomes the replay cursor when the connection ends.
    Event {
        /// The encoded event.
        frame: Payload,
        /// Its log position.
        position: LogId,
    },
    /// A control frame (ping, pong, close) with its payload.
    Control(Opcode, Vec<u8>),
}

/// Where a connection's frames go: a socket that takes bytes without blocking and says when it
/// can take more.
pub trait FrameSink: Send + Sync {
    /// Writes what the socket takes now; `WouldBlock` when it takes nothing.
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize>;
    /// Writes one contiguous buffer (a plain `write`, cheaper in the kernel than `writev`).
    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[IoSlice::new(buf)])
    }
    /// Ready once the socket can take more bytes.
    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
    /// Sends what the sink itself still holds of bytes it took (a TLS session's encrypted
    /// records the socket did not take yet); true when nothing is left. Plain sockets hold
    /// nothing.
    fn flush_pending(&self) -> io::Result<bool> {
        Ok(true)
    }
}

impl FrameSink for tokio::net::TcpStream {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        tokio::net::TcpStream::try_write_vectored(self, bufs)
    }

    fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        tokio::net::TcpStream::try_write(self, buf)
    }

    fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        tokio::net::TcpStream::poll_write_ready(self, cx)
    }
}

/// A sink that takes every byte and keeps none: for measuring the node's own cost of a
/// fan-out without the kernel's (benchmarks).
#[cfg(feature = "internals")]
pub struct Discard;

#[cfg(feature = "internals")]
impl FrameSink for Discard {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        Ok(bufs.iter().map(|b| b.len()).sum())
    }

    fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What became of a pushed frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    /// All of it is on the socket.
    Written,
    /// The socket took part or none of it; the rest waits for the connection's task, which
    /// must be woken.
    Pending,
    /// Queued behind pending output (the task is already at work).
    Queued,
    /// The bound on pending messages was reached.
    Full,
    /// The socket failed.
    Broken,
    /// The connection's output is sealed (closing) or broken.
    Closed,
}

/// What a flush achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// Nothing is pending any more.
    Idle,
    /// The socket is full; wait until it is writable and flush again.
    Blocked,
    /// The socket failed.
    Broken,
}

/// How much may wait behind a socket that does not take it: the endpoint's `outbound_queue`
/// messages and `outbound_queue_bytes` payload bytes (shared frames counted in full: a client
/// that does not read must not keep a node's memory alive either way). Passed with each push
/// rather than stored per connection: it is the endpoint's.
#[derive(Debug, Clone, Copy)]
pub struct QueueBound {
    /// Most queued messages.
    pub messages: usize,
    /// Most queued payload bytes.
    pub bytes: usize,
}

impl QueueBound {
    fn refuses(self, messages: usize, bytes: usize) -> bool {
        messages > self.messages || bytes > self.bytes
    }
}

/// Pending output of one connection. While nothing is pending it holds no allocation and
/// little else: a connection's outbox lives as long as the connection, and most connections
/// are idle.
pub struct Outbox {
    opcode: Opcode,
    /// Output waiting for the socket; present exactly while output is pending (new frames
    /// must then queue behind it).
    pending: Option<Box<Pending>>,
    /// The newest persisted event fully written.
    last_written: Option<LogId>,
    /// Frames are held back until uncorked (see [`Outbox::cork`]).
    corked: bool,
    sealed: bool,
    broken: bool,
}

/// What waits for the socket: the batch being written and the frames behind it.
#[derive(Default)]
struct Pending {
    /// Payload bytes in `queue`.
    queued_bytes: usize,
    /// Frames not yet in a batch.
    queue: VecDeque<Outbound>,
    /// The batch being written, and how much of it the socket took.
    batch: Vec<u8>,
    sent: usize,
    /// The newest persisted event in the batch.
    batch_position: Option<LogId>,
}

impl Outbox {
    /// An empty outbox for an endpoint sending `opcode` messages.
    pub fn new(opcode: Opcode) -> Outbox {
        Outbox { opcode, pending: None, last_written: None, corked: false, sealed: false, broken: false }
    }

    /// The newest persisted event the socket took.
    pub fn last_written(&self) -> Option<LogId> {
        self.last_written
    }

    /// The pending output, begun now if there was none: output is pending from here on.
    fn pending_or_new(&mut self) -> &mut Pending {
        self.pending.get_or_insert_with(Box::default)
    }

    /// Holds frames back until [`Outbox::uncork`], so frames sent together (a replay, its end
    /// and the live events held meanwhile) leave in one write rather than one each; a write's
    /// worth ([`BATCH_BYTES`]) goes as soon as it is held. Nothing to do if output is already
    /// pending.
    pub fn cork(&mut self) {
        if self.pending.is_none() {
            self.pending_or_new();
            self.corked = true;
        }
    }

    /// Ends [`Outbox::cork`]: writes what was held back, as far as the socket takes it.
    pub fn uncork(&mut self, sink: &dyn FrameSink) -> Flush {
        if !self.corked {
            return Flush::Idle;
        }
        self.flush(sink)
    }

    /// After frames were queued: a cork that holds a write's worth writes it and holds on.
    fn after_queued(&mut self, sink: &dyn FrameSink) -> Push {
        let held = self.pending.as_ref().map_or(0, |p| p.queued_bytes);
        if !self.corked || held < BATCH_BYTES {
            return Push::Queued;
        }
        match self.flush(sink) {
            Flush::Idle => {
                self.cork();
                Push::Queued
            }
            Flush::Blocked => Push::Pending,
            Flush::Broken => Push::Broken,
        }
    }

    /// Writes `item` now if nothing is pending, else queues it (refused past `bound`, when
    /// given).
    pub fn push(&mut self, sink: &dyn FrameSink, item: Outbound, bound: Option<QueueBound>) -> Push {
        if self.sealed || self.broken {
            return Push::Closed;
        }
        if let Some(pending) = &mut self.pending {
            let len = parts(self.opcode, &item).1.len();
            if bound.is_some_and(|b| b.refuses(pending.queue.len() + 1, pending.queued_bytes + len)) {
                return Push::Full;
            }
            pending.queued_bytes += len;
            pending.queue.push_back(item);
            return self.after_queued(sink);
        }
        let (opcode, payload, position) = parts(self.opcode, &item);
        let mut pushed = self.write_now(sink, std::iter::once((opcode, payload)));
        if pushed == Push::Written {
            pushed = self.after_written(sink);
        }
        match pushed {
            Push::Written => {
                if let Some(position) = position {
                    advance(&mut self.last_written, position);
                }
            }
            Push::Pending => self.pending_or_new().batch_position = position,
            _ => {}
        }
        pushed
    }

    /// Like [`Outbox::push`] for several messages of the endpoint's type at once: one vectored
    /// write of (up to [`MAX_FRAMES_PER_WRITE`] of) them when nothing is pending.
    pub fn push_many(&mut self, sink: &dyn FrameSink, frames: &[Payload], bound: QueueBound) -> Push {
        if self.sealed || self.broken {
            return Push::Closed;
        }
        let len = |f: &Payload| f.bytes.len();
        if let Some(pending) = &mut self.pending {
            let bytes: usize = frames.iter().map(len).sum();
            if bound.refuses(pending.queue.len() + frames.len(), pending.queued_bytes + bytes) {
                return Push::Full;
            }
            pending.queued_bytes += bytes;
            pending.queue.extend(frames.iter().cloned().map(Outbound::Message));
            return self.after_queued(sink);
        }
        let (now, later) = frames.split_at(frames.len().min(MAX_FRAMES_PER_WRITE));
        let opcode = self.opcode;
        let mut pushed =
            self.write_now(sink, now.iter().map(|f| (FrameType { opcode, deflated: f.deflated }, &f.bytes[..])));
        if pushed == Push::Written {
            pushed = self.after_written(sink);
        }
        if matches!(pushed, Push::Written | Push::Pending) && !later.is_empty() {
            let pending = self.pending_or_new();
            pending.queued_bytes += later.iter().map(len).sum::<usize>();
            pending.queue.extend(later.iter().cloned().map(Outbound::Message));
            return Push::Pending;
        }
        pushed
    }

    /// Writes up to [`MAX_FRAMES_PER_WRITE`] frames with one socket write. What the socket does
    /// not take is copied into the batch and output becomes pending (`Pending`): everything
    /// after it waits behind it.
    fn write_now<'a, I>(&mut self, sink: &dyn FrameSink, frames: I) -> Push
    where
        I: Iterator<Item = (FrameType, &'a [u8])> + Clone,
    {
        let frames = frames.take(MAX_FRAMES_PER_WRITE);
        let total: usize = frames.clone().map(|(_, p)| header_len(p.len()) + p.len()).sum();
        if total <= SMALL_WRITE {
            // Small frames (the common event) go out as one contiguous buffer: a plain write
            // costs the kernel less than gathering the pieces. The buffer is per thread, so
            // this neither allocates nor zeroes anything per write.
            return SCRATCH.with(|scratch| {
                let mut buf = scratch.borrow_mut();
                buf.clear();
                for (opcode, payload) in frames {
                    push_frame(&mut buf, opcode, payload);
                }
                let result = sink.try_write(&buf);
                self.keep_unwritten(result, total, std::iter::once(&buf[..]))
            });
        }
        let mut heads = [([0u8; 10], 0usize); MAX_FRAMES_PER_WRITE];
        let mut payloads: [&[u8]; MAX_FRAMES_PER_WRITE] = [&[]; MAX_FRAMES_PER_WRITE];
        let mut n = 0;
        for (opcode, payload) in frames {
            heads[n] = header(opcode, payload.len());
            payloads[n] = payload;
            n += 1;
        }
        let mut iov = [IoSlice::new(&[]); 2 * MAX_FRAMES_PER_WRITE];
        for i in 0..n {
            iov[2 * i] = IoSlice::new(&heads[i].0[..heads[i].1]);
            iov[2 * i + 1] = IoSlice::new(payloads[i]);
        }
        let parts = &iov[..2 * n];
        let result = sink.try_write_vectored(parts);
        self.keep_unwritten(result, total, parts.iter().map(|p| &p[..]))
    }

    /// After a frame went whole into the sink: whether the sink sent it on, or holds some of
    /// it (TLS records the socket did not take), which the connection's task then finishes.
    fn after_written(&mut self, sink: &dyn FrameSink) -> Push {
        match sink.flush_pending() {
            Ok(true) => Push::Written,
            Ok(false) => {
                self.pending_or_new();
                Push::Pending
            }
            Err(_) => {
                self.broken = true;
                Push::Broken
            }
        }
    }

    /// After a write of `total` bytes made of `parts`: keeps what the socket did not take.
    fn keep_unwritten<'p>(
        &mut self,
        result: io::Result<usize>,
        total: usize,
        parts: impl Iterator<Item = &'p [u8]>,
    ) -> Push {
        let mut written = match result {
            Ok(w) if w == total => return Push::Written,
            Ok(w) => w,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted => 0,
            Err(_) => {
                self.broken = true;
                return Push::Broken;
            }
        };
        let pending = self.pending_or_new();
        for part in parts {
            let skip = written.min(part.len());
            written -= skip;
            pending.batch.extend_from_slice(&part[skip..]);
        }
        pending.sent = 0;
        Push::Pending
    }

    /// Writes pending output until the socket is full or nothing is left.
    pub fn flush(&mut self, sink: &dyn FrameSink) -> Flush {
        self.corked = false;
        let opcode = self.opcode;
        loop {
            if self.broken {
                return Flush::Broken;
            }
            let Some(pending) = &mut self.pending else {
                return self.flush_sink(sink);
            };
            if pending.sent == pending.batch.len() {
                if let Some(done) = pending.batch_position.take() {
                    advance(&mut self.last_written, done);
                }
                pending.batch.clear();
                pending.sent = 0;
                if pending.queue.is_empty() {
                    // Idle connections hold no output buffer, and no queue.
                    self.pending = None;
                    return self.flush_sink(sink);
                }
                while let Some(item) = pending.queue.pop_front() {
                    let (kind, payload, position) = parts(opcode, &item);
                    pending.queued_bytes -= payload.len();
                    push_header(&mut pending.batch, kind, payload.len());
                    pending.batch.extend_from_slice(payload);
                    if position.is_some() {
                        pending.batch_position = position;
                    }
                    if pending.batch.len() >= BATCH_BYTES {
                        break;
                    }
                }
            }
            match sink.try_write_vectored(&[IoSlice::new(&pending.batch[pending.sent..])]) {
                Ok(0) => self.broken = true,
                Ok(n) => pending.sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flush::Blocked,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => self.broken = true,
            }
        }
    }

    /// With nothing of its own pending: what the sink itself still holds (TLS records).
    fn flush_sink(&mut self, sink: &dyn FrameSink) -> Flush {
        match sink.flush_pending() {
            Ok(true) => Flush::Idle,
            Ok(false) => {
                self.pending_or_new();
                Flush::Blocked
            }
            Err(_) => {
                self.broken = true;
                Flush::Broken
            }
        }
    }

    /// Accepts nothing more; drops queued frames when `drop_pending` (a batch already begun
    /// is finished so the close frame stays well-formed), then queues `close`.
    pub fn seal(&mut self, close: Option<Vec<u8>>, drop_pending: bool) {
        if drop_pending {
            if let Some(pending) = &mut self.pending {
                pending.queue.clear();
                pending.queued_bytes = 0;
            }
        }
        if let Some(payload) = close {
            let pending = self.pending_or_new();
            pending.queued_bytes += payload.len();
            pending.queue.push_back(Outbound::Control(Opcode::Close, payload));
        }
        self.sealed = true;
    }
}

/// Moves `last_written` on to `position` if it is newer.
fn advance(last_written: &mut Option<LogId>, position: LogId) {
    if last_written.is_none_or(|w| position > w) {
        *last_written = Some(position);
    }
}

/// A queued item's frame type, payload and log position, for an endpoint sending `opcode`
/// messages.
fn parts(opcode: Opcode, item: &Outbound) -> (FrameType, &[u8], Option<LogId>) {
    fn message(opcode: Opcode, p: &Payload) -> (FrameType, &[u8]) {
        (FrameType { opcode, deflated: p.deflated }, &p.bytes[..])
    }
    let ((kind, bytes), position) = match item {
        Outbound::Message(p) => (message(opcode, p), None),
        Outbound::Event { frame, position } => (message(opcode, frame), Some(*position)),
        Outbound::Typed { text: true, data } => (message(Opcode::Text, data), None),
        Outbound::Typed { text: false, data } => (message(Opcode::Binary, data), None),
        Outbound::Control(control, payload) => ((FrameType::from(*control), &payload[..]), None),
    };
    (kind, bytes, position)
}

#[cfg(test)]
mod tests {
    use super::*;
    use parking_lot::Mutex;

    /// A socket that takes at most `room` bytes, then would block.
    struct Tight {
        room: Mutex<usize>,
        taken: Mutex<Vec<u8>>,
    }

    impl FrameSink for Tight {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let mut room = self.room.lock();
            if *room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let mut n = 0;
            for b in bufs {
                let take = b.len().min(*room);
                self.taken.lock().extend_from_slice(&b[..take]);
                *room -= take;
                n += take;
            }
            Ok(n)
        }

        fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    fn frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0x81, payload.len() as u8];
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_as_well_as_messages() {
        let sink = Tight { room: Mutex::new(0), taken: Mutex::default() };
        let mut outbox = Outbox::new(Opcode::Binary);
        let bound = QueueBound { messages: 100, bytes: 1000 };
        let msg = |n: usize| Outbound::Message(Bytes::from(vec![7u8; n]).into());
        assert_eq!(outbox.push(&sink, msg(10), Some(bound)), Push::Pending, "the socket takes nothing");
        assert_eq!(outbox.push(&sink, msg(600), Some(bound)), Push::Queued);
        assert_eq!(outbox.push(&sink, msg(401), Some(bound)), Push::Full, "1,001 bytes would wait");
        assert_eq!(outbox.push(&sink, msg(400), Some(bound)), Push::Queued, "1,000 bytes may");
        assert_eq!(outbox.push_many(&sink, &[Bytes::from_static(b"x").into()], bound), Push::Full);
        // Once written, the bytes no longer count.
        *sink.room.lock() = usize::MAX;
        assert_eq!(outbox.flush(&sink), Flush::Idle);
        assert!(outbox.pending.is_none(), "nothing pending, nothing held");
        *sink.room.lock() = 0;
        assert_eq!(outbox.push(&sink, msg(10), Some(bound)), Push::Pending);
        assert_eq!(outbox.push(&sink, msg(1000), Some(bound)), Push::Queued);
    }

    #[test]
    fn writes_directly_then_queues_behind_a_partial_write() {
        let sink = Tight { room: Mutex::new(10), taken: Mutex::default() };
        let mut outbox = Outbox::new(Opcode::Text);
        let bound = QueueBound { messages: 2, bytes: usize::MAX };
        let msg = |s: &str| Outbound::Message(Bytes::copy_from_slice(s.as_bytes()).into());
        assert_eq!(outbox.push(&sink, msg("abc"), Some(bound)), Push::Written);
        assert_eq!(outbox.push(&sink, msg("defghij"), Some(bound)), Push::Pending);
        assert_eq!(outbox.push(&sink, msg("k"), Some(bound)), Push::Queued);
        assert_eq!(outbox.push(&sink, msg("l"), Some(bound)), Push::Queued);
        assert_eq!(outbox.push(&sink, msg("m"), Some(bound)), Push::Full);
        assert_eq!(outbox.flush(&sink), Flush::Blocked);
        *sink.room.lock() = 1_000;
        assert_eq!(outbox.flush(&sink), Flush::Idle);
        let expected = [frame(b"abc"), frame(b"defghij"), frame(b"k"), frame(b"l")].concat();
        assert_eq!(*sink.taken.lock(), expected);
        assert_eq!(outbox.push(&sink, msg("n"), Some(bound)), Push::Written);
    }

    #[test]
    fn a_cork_holds_frames_back_until_uncorked_or_a_write_is_full() {
        let sink = Tight { room: Mutex::new(10_000), taken: Mutex::default() };
        let mut outbox = Outbox::new(Opcode::Text);
        let bound = QueueBound { messages: 100, bytes: usize::MAX };
        let msg = |s: &str| Outbound::Message(Bytes::copy_from_slice(s.as_bytes()).into());
        outbox.cork();
        assert_eq!(outbox.push(&sink, msg("hello"), Some(bound)), Push::Queued);
        let position = LogId { ms: 7, seq: 1 };
        let event = Outbound::Event { frame: Bytes::from_static(b"ev").into(), position };
        assert_eq!(outbox.push(&sink, event, Some(bound)), Push::Queued);
        assert_eq!(outbox.push_many(&sink, &[Bytes::from_static(b"end").into()], bound), Push::Queued);
        assert!(sink.taken.lock().is_empty(), "nothing leaves while corked");
        assert_eq!(outbox.uncork(&sink), Flush::Idle);
        assert_eq!(*sink.taken.lock(), [frame(b"hello"), frame(b"ev"), frame(b"end")].concat());
        assert_eq!(outbox.last_written(), Some(position));
        // Uncorked, frames go straight out again; a second uncork has nothing to do.
        assert_eq!(outbox.push(&sink, msg("x"), Some(bound)), Push::Written);
        assert_eq!(outbox.uncork(&sink), Flush::Idle);
        // A cork holding a write's worth writes it at once and holds on.
        let full = Tight { room: Mutex::new(1 << 20), taken: Mutex::default() };
        let big = |c: u8| Outbound::Message(Bytes::from(vec![c; BATCH_BYTES / 2]).into());
        outbox.cork();
        assert_eq!(outbox.push(&full, big(b'a'), Some(bound)), Push::Queued);
        assert!(full.taken.lock().is_empty());
        assert_eq!(outbox.push(&full, big(b'b'), Some(bound)), Push::Queued);
        let held = full.taken.lock().len();
        assert_eq!(held, 2 * (4 + BATCH_BYTES / 2), "both frames, with their 4-byte headers");
        assert_eq!(outbox.push(&full, msg("tail"), Some(bound)), Push::Queued, "still corked");
        assert_eq!(full.taken.lock().len(), held);
        assert_eq!(outbox.uncork(&full), Flush::Idle);
        assert_eq!(full.taken.lock()[held..], frame(b"tail"));
        assert_eq!(outbox.push(&full, msg("after"), Some(bound)), Push::Written);
    }

    #[test]
    fn writes_many_frames_in_one_go_and_keeps_the_rest_in_order() {
        let sink = Tight { room: Mutex::new(7), taken: Mutex::default() };
        let mut outbox = Outbox::new(Opcode::Text);
        let bound = QueueBound { messages: 100, bytes: usize::MAX };
        let frames: Vec<Payload> = (0..40).map(|i| Payload::from(Bytes::from(format!("m{i}")))).collect();
        assert_eq!(outbox.push_many(&sink, &frames, bound), Push::Pending);
        *sink.room.lock() = 10_000;
        assert_eq!(outbox.flush(&sink), Flush::Idle);
        let expected: Vec<u8> = frames.iter().flat_map(|f| frame(&f.bytes)).collect();
        assert_eq!(*sink.taken.lock(), expected);
        let all = Tight { room: Mutex::new(10_000), taken: Mutex::default() };
        assert_eq!(outbox.push_many(&all, &frames[..3], bound), Push::Written);
        assert_eq!(*all.taken.lock(), [frame(b"m0"), frame(b"m1"), frame(b"m2")].concat());
        // More than one write's worth: the first 32 go at once, the rest through the task.
        let roomy = Tight { room: Mutex::new(10_000), taken: Mutex::default() };
        assert_eq!(outbox.push_many(&roomy, &frames, bound), Push::Pending);
        assert_eq!(
            roomy.taken.lock().len(),
            frames[..MAX_FRAMES_PER_WRITE].iter().map(|f| f.bytes.len() + 2).sum::<usize>()
        );
        assert_eq!(outbox.flush(&roomy), Flush::Idle);
        assert_eq!(*roomy.taken.lock(), expected);
    }

    #[test]
    fn a_compressed_message_goes_out_with_rsv1_and_a_plain_one_without() {
        let sink = Tight { room: Mutex::new(1_000), taken: Mutex::default() };
        let mut outbox = Outbox::new(Opcode::Text);
        let bound = QueueBound { messages: 8, bytes: usize::MAX };
        let deflated = Payload { bytes: Bytes::from_static(b"zz"), deflated: true };
        assert_eq!(outbox.push_many(&sink, &[deflated.clone(), Bytes::from_static(b"p").into()], bound), Push::Written);
        assert_eq!(outbox.push(&sink, Outbound::Message(deflated), Some(bound)), Push::Written);
        assert_eq!(*sink.taken.lock(), [0xC1, 2, b'z', b'z', 0x81, 1, b'p', 0xC1, 2, b'z', b'z']);
    }

    #[test]
    fn records_persisted_positions_once_written_and_seals_with_close() {
        let sink = Tight { room: Mutex::new(3), taken: Mutex::default() };
        let mut outbox = Outbox::new(Opcode::Text);
        let bound = QueueBound { messages: 8, bytes: usize::MAX };
        let position = LogId { ms: 5, seq: 0 };
        assert_eq!(
            outbox.push(&sink, Outbound::Event { frame: Bytes::from_static(b"xyz").into(), position }, Some(bound)),
            Push::Pending
        );
        assert_eq!(outbox.last_written(), None);
        outbox.seal(Some(vec![0x03, 0xE8]), true);
        assert_eq!(
            outbox.push(&sink, Outbound::Message(Bytes::from_static(b"late").into()), Some(bound)),
            Push::Closed
        );
        *sink.room.lock() = 100;
        assert_eq!(outbox.flush(&sink), Flush::Idle);
        assert_eq!(outbox.last_written(), Some(position));
        assert_eq!(*sink.taken.lock(), [frame(b"xyz"), vec![0x88, 2, 0x03, 0xE8]].concat());
    }
}
