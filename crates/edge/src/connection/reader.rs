//! A connection's client side: frames decoded from its [`Input`], control frames answered,
//! the message rate limit applied, data frames assembled into messages. One frame per
//! [`Reader::step`], and no `async` here: what the connection task keeps across its awaits is
//! only the reader itself, never a frame or a message in flight.

use std::time::Instant;

use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::CloseReason;
use switchboard_wsframe::{FrameOp, Message, MessageAssembler, Opcode};

use super::handle::{ClosePlan, ConnHandle};
use super::input::{self, Input};
use super::rate::{self, Rate, TokenBucket};
use super::socket::Socket;
use super::timers::Timers;
use crate::endpoint::EndpointRuntime;
use crate::metrics::Metrics;

/// What one [`Reader::step`] found.
pub enum Step<'a> {
    /// A complete message for the handler.
    Message(Message<'a>),
    /// A frame was dealt with here (a ping, a pong, a fragment, a close or a violation, after
    /// which the connection is closing); there may be more.
    Handled,
    /// No complete frame is left in what has arrived.
    Drained,
}

/// Decoding, answering and rate limiting of one connection's incoming frames.
pub struct Reader {
    input: Input,
    assembler: MessageAssembler,
    bucket: TokenBucket,
}

impl Reader {
    /// A reader of a connection to `endpoint`, starting with `input`.
    pub fn new(input: Input, endpoint: &EndpointRuntime) -> Reader {
        Reader { input, assembler: MessageAssembler::default(), bucket: TokenBucket::new(rate_of(endpoint)) }
    }

    /// Decodes the next frame that has arrived and acts on it.
    pub fn step(&mut self, conn: &ConnHandle, timers: &mut Timers, metrics: &Metrics) -> Step<'_> {
        let endpoint = &conn.endpoint;
        let rate = rate_of(endpoint);
        let max_bytes = endpoint.limits().max_message_bytes;
        let frame = match self.input.next_frame(max_bytes) {
            Ok(Some(frame)) => frame,
            Ok(None) => return Step::Drained,
            Err(reason) => {
                conn.close(reason);
                return Step::Handled;
            }
        };
        let whole_message = matches!(frame.op, FrameOp::Text | FrameOp::Binary | FrameOp::Continuation if frame.fin);
        if !whole_message && frame.op != FrameOp::Close {
            // Pings, pongs and fragments are bounded too (a flood of them is work for the
            // node), at a fraction of a message each.
            if let Err(wait) = self.bucket.take_cost(Instant::now(), rate, rate::FRAME_COST) {
                rate_limited(conn, wait);
                return Step::Handled;
            }
        }
        match frame.op {
            FrameOp::Ping => {
                // Any frame shows the client is there (the idle timeout is about silence).
                timers.message_received(endpoint);
                conn.send_control(Opcode::Pong, frame.payload.to_vec());
            }
            FrameOp::Pong => conn.pong_received(now_millis()),
            FrameOp::Close => conn.close_with(ClosePlan::Echo(frame.payload.to_vec())),
            FrameOp::Text | FrameOp::Binary | FrameOp::Continuation => match self.assembler.push(frame, max_bytes) {
                Ok(Some(message)) => {
                    metrics.messages_in.with_label_values(&[endpoint.path()]).inc();
                    timers.message_received(endpoint);
                    if let Err(wait) = self.bucket.take(Instant::now(), rate) {
                        rate_limited(conn, wait);
                        return Step::Handled;
                    }
                    return Step::Message(message);
                }
                Ok(None) => {}
                Err(violation) => conn.close(input::close_reason(violation)),
            },
        }
        Step::Handled
    }

    /// Drops what has been decoded; an idle connection holds no read buffer.
    pub fn compact(&mut self) {
        self.input.compact();
    }

    /// Reads what the socket has; false when the client is gone.
    pub fn read_from(&mut self, socket: &Socket) -> bool {
        self.input.read_from(socket)
    }

    /// The undecoded input, for reading on to the client's close frame.
    pub fn into_input(self) -> Input {
        self.input
    }
}

/// The endpoint's message rate limit.
fn rate_of(endpoint: &EndpointRuntime) -> Rate {
    let limits = endpoint.limits();
    Rate { rate: limits.message_rate, burst: limits.message_burst }
}

/// Closes a connection over its message rate, saying when it may try again.
fn rate_limited(conn: &ConnHandle, wait: std::time::Duration) {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    conn.close_with(ClosePlan::Server(CloseReason::RateLimited, format!("Rate limited: retry in {secs} s")));
}
