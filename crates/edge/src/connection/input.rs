//! A connection's input: bytes read from the socket and not yet decoded into frames. It holds
//! no allocation while nothing is pending, which is most of an idle connection's life.

use switchboard_protocol::CloseReason;
use switchboard_wsframe::{Decoded, Frame, Violation};

use super::socket::Socket;

/// Smallest read: enough for every client command in one go.
const READ_CHUNK: usize = 4096;
/// Largest single read reservation while a big frame arrives.
const MAX_READ_CHUNK: usize = 1 << 20;

/// Undecoded input of one connection. The positions are 32-bit: the buffer holds at most a
/// frame of the endpoint's `max_message_bytes` (16 MiB at most) and a read, and an `Input`
/// lives as long as its connection.
pub struct Input {
    buf: Vec<u8>,
    /// Bytes of `buf` already decoded.
    used: u32,
    /// Bytes the frame at `used` needs in all, as far as its header tells (saturated).
    want: u32,
    /// Payload bytes of the unfinished text frame at `used` found valid UTF-8 so far.
    text_checked: u32,
    /// permessage-deflate was negotiated: compressed (RSV1) messages are allowed.
    deflate: bool,
}

impl Input {
    /// Input starting with `early`: bytes the client sent right behind its handshake;
    /// `deflate` when the handshake negotiated permessage-deflate.
    pub fn new(early: Vec<u8>, deflate: bool) -> Input {
        Input { buf: early, used: 0, want: READ_CHUNK as u32, text_checked: 0, deflate }
    }

    /// The next complete frame (unmasked in place), `None` when more bytes are needed, or the
    /// reason to close the connection.
    pub fn next_frame(&mut self, max_payload: usize) -> Result<Option<Frame<'_>>, CloseReason> {
        let used = self.used as usize;
        if used == self.buf.len() {
            return Ok(None);
        }
        // Bad bytes in an unfinished text frame fail the connection as they arrive.
        let checked = switchboard_wsframe::check_arrived_text(&self.buf[used..], self.text_checked as usize)
            .map_err(close_reason)?;
        self.text_checked = narrow(checked);
        match switchboard_wsframe::decode(&mut self.buf[used..], max_payload, self.deflate).map_err(close_reason)? {
            Decoded::Frame(frame, n) => {
                self.used = narrow(used + n);
                self.text_checked = 0;
                Ok(Some(frame))
            }
            Decoded::Incomplete { want } => {
                self.want = narrow(want);
                Ok(None)
            }
        }
    }

    /// Drops the decoded bytes; frees the buffer when nothing is left.
    pub fn compact(&mut self) {
        let used = self.used as usize;
        if used == self.buf.len() {
            self.buf = Vec::new();
            self.want = READ_CHUNK as u32;
        } else {
            self.buf.drain(..used);
        }
        self.used = 0;
    }

    /// Reads what the socket has (with room for at least the frame being assembled, up to a
    /// bound); false when the client is gone.
    pub fn read_from(&mut self, socket: &Socket) -> bool {
        self.compact();
        let room = (self.want as usize).saturating_sub(self.buf.len()).clamp(READ_CHUNK, MAX_READ_CHUNK);
        self.buf.reserve(room);
        match socket.try_read_buf(&mut self.buf) {
            Ok(0) => false,
            Ok(_) => true,
            Err(e) => matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted),
        }
    }
}

/// A position in the buffer as stored (saturating; the buffer stays far below 4 GiB).
fn narrow(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The close reason for a protocol violation: the one place where framing errors meet the
/// endpoint's close codes.
pub fn close_reason(violation: Violation) -> CloseReason {
    match violation {
        Violation::Protocol => CloseReason::ProtocolError,
        Violation::InvalidUtf8 | Violation::Deflate => CloseReason::InvalidPayload,
        Violation::TooBig => CloseReason::MessageTooBig,
    }
}
