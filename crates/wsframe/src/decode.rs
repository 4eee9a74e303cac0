//! Client-to-server WebSocket frames (RFC 6455 §5), decoded in place from a connection's
//! input buffer with no IO.
//!
//! The edge reads its own frames so that an idle connection holds no read buffer at all: the
//! connection task waits for the socket to become readable, reads what is there, decodes the
//! complete frames in place (unmasking them where they lie) and frees the buffer once it is
//! empty. Every violation is reported as the [`Violation`] RFC 6455 names.

use crate::Violation;

/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
const MAX_HEADER: usize = 14;

/// What a client frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameOp {
    /// Continues a fragmented message.
    Continuation,
    /// Starts a text message.
    Text,
    /// Starts a binary message.
    Binary,
    /// Close.
    Close,
    /// Ping.
    Ping,
    /// Pong.
    Pong,
}

impl FrameOp {
    fn from_bits(bits: u8) -> Option<FrameOp> {
        Some(match bits {
            0x0 => FrameOp::Continuation,
            0x1 => FrameOp::Text,
            0x2 => FrameOp::Binary,
            0x8 => FrameOp::Close,
            0x9 => FrameOp::Ping,
            0xA => FrameOp::Pong,
            _ => return None,
        })
    }

    /// Whether this is a control frame (close, ping, pong).
    pub fn is_control(self) -> bool {
        matches!(self, FrameOp::Close | FrameOp::Ping | FrameOp::Pong)
    }
}

/// One decoded, unmasked client frame, borrowed from the input buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame<'a> {
    /// Whether this is the last frame of its message.
    pub fin: bool,
    /// Its kind.
    pub op: FrameOp,
    /// The unmasked payload.
    pub payload: &'a [u8],
    /// RSV1: the first frame of a message compressed with permessage-deflate (only when the
    /// connection negotiated it).
    pub compressed: bool,
}

/// A frame header as far as it has arrived.
enum Head {
    /// More bytes are needed before the header can be read (`want`: a lower bound).
    Incomplete { want: usize },
    /// The fixed part and the length have arrived; the mask starts at `mask_at`.
    Ready { fin: bool, rsv1: bool, op: FrameOp, len: u64, mask_at: usize },
}

/// Reads the start of a client frame header: the bits RFC 6455 fixes (no reserved bits but
/// RSV1, which only [`decode`] can judge, a known opcode, a mask) and the payload length; the
/// one place both [`decode`] and [`check_arrived_text`] read headers.
fn head(buf: &[u8]) -> Result<Head, Violation> {
    if buf.len() < 2 {
        return Ok(Head::Incomplete { want: 2 });
    }
    let (b0, b1) = (buf[0], buf[1]);
    // No extension defines RSV2 or RSV3.
    if b0 & 0x30 != 0 {
        return Err(Violation::Protocol);
    }
    let op = FrameOp::from_bits(b0 & 0x0F).ok_or(Violation::Protocol)?;
    // Client frames must be masked (§5.1).
    if b1 & 0x80 == 0 {
        return Err(Violation::Protocol);
    }
    let (len, mask_at) = match b1 & 0x7F {
        126 if buf.len() >= 4 => (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4),
        127 if buf.len() >= 10 => {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[2..10]);
            (u64::from_be_bytes(b), 10)
        }
        126 | 127 => return Ok(Head::Incomplete { want: MAX_HEADER }),
        n => (u64::from(n), 2),
    };
    Ok(Head::Ready { fin: b0 & 0x80 != 0, rsv1: b0 & 0x40 != 0, op, len, mask_at })
}

/// Decodes the first frame in `buf` if all of it has arrived: the frame and the bytes it
/// took, `None` when more input is needed (`want` then says how many bytes in all the frame
/// needs, when known), or the violation. Frames longer than `max_payload` are refused
/// as soon as their header arrives, so a client cannot make the server buffer them.
/// `deflate` says whether the connection negotiated permessage-deflate: only then may the
/// first frame of a data message carry RSV1 (RFC 7692 §6.1).
pub fn decode(buf: &mut [u8], max_payload: usize, deflate: bool) -> Result<Decoded<'_>, Violation> {
    let (fin, compressed, op, len, at) = match head(buf)? {
        Head::Incomplete { want } => return Ok(Decoded::Incomplete { want }),
        Head::Ready { fin, rsv1, op, len, mask_at } => (fin, rsv1, op, len, mask_at),
    };
    if op.is_control() && (!fin || len > 125) {
        return Err(Violation::Protocol);
    }
    if compressed && (!deflate || !matches!(op, FrameOp::Text | FrameOp::Binary)) {
        return Err(Violation::Protocol);
    }
    if len >> 63 != 0 {
        return Err(Violation::Protocol);
    }
    if len > max_payload as u64 {
        return Err(Violation::TooBig);
    }
    let len = len as usize;
    let start = at + 4;
    let total = start + len;
    if buf.len() < total {
        return Ok(Decoded::Incomplete { want: total });
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    let payload = &mut buf[start..total];
    fastwebsockets::unmask(payload, mask);
    let payload = &*payload;
    match op {
        // A compressed message is validated once inflated.
        FrameOp::Text if fin && !compressed && std::str::from_utf8(payload).is_err() => {
            return Err(Violation::InvalidUtf8)
        }
        FrameOp::Close => check_close(payload)?,
        _ => {}
    }
    Ok(Decoded::Frame(Frame { fin, op, payload, compressed }, total))
}

/// Validates the UTF-8 of the part of an unfinished text frame at the start of `buf` that has
/// arrived, so that a client's bad bytes fail the connection when they arrive rather than when
/// the frame completes (RFC 6455 §8.1, "fail fast"; Autobahn 6.4.3–6.4.4). `checked` is how
/// many payload bytes an earlier call found valid (0 the first time); the result is the new
/// count, always on a character boundary, so each byte is validated once however many reads a
/// frame takes. Anything but an unfinished uncompressed frame starting a text message, its
/// header complete, is left to [`decode`] (and the message assembler) and returns `checked`
/// unchanged.
pub fn check_arrived_text(buf: &[u8], checked: usize) -> Result<usize, Violation> {
    // A header that breaks the rules is `decode`'s to report.
    let (len, at) = match head(buf) {
        Ok(Head::Ready { op: FrameOp::Text, rsv1: false, len, mask_at, .. }) if buf.len() >= mask_at + 4 => {
            (usize::try_from(len).unwrap_or(usize::MAX), mask_at)
        }
        _ => return Ok(checked),
    };
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    let payload = &buf[at + 4..];
    if payload.len() >= len {
        // The whole frame is here: `decode` validates it.
        return Ok(checked);
    }
    let arrived = payload.len();
    // Unmask a chunk at a time on the stack; up to 3 bytes of a character cut by a chunk (or
    // by the end of what arrived) are carried to the next chunk.
    const CHUNK: usize = 256;
    let mut scratch = [0u8; CHUNK + 3];
    let mut carry = 0;
    let mut pos = checked.min(arrived);
    let mut valid = pos;
    while pos < arrived {
        let n = (arrived - pos).min(CHUNK);
        for (i, b) in payload[pos..pos + n].iter().enumerate() {
            scratch[carry + i] = b ^ mask[(pos + i) % 4];
        }
        let end = carry + n;
        match std::str::from_utf8(&scratch[..end]) {
            Ok(_) => carry = 0,
            Err(e) if e.error_len().is_none() => {
                scratch.copy_within(e.valid_up_to()..end, 0);
                carry = end - e.valid_up_to();
            }
            Err(_) => return Err(Violation::InvalidUtf8),
        }
        pos += n;
        valid = pos - carry;
    }
    Ok(valid)
}

/// The result of [`decode`].
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded<'a> {
    /// A whole frame and how many bytes of the buffer it took.
    Frame(Frame<'a>, usize),
    /// More input is needed: the buffer must reach `want` bytes (a lower bound while the
    /// header is incomplete).
    Incomplete {
        /// Bytes needed.
        want: usize,
    },
}

/// A close frame carries nothing, or a valid code and a UTF-8 reason (§5.5.1, §7.4).
fn check_close(payload: &[u8]) -> Result<(), Violation> {
    match payload.len() {
        0 => Ok(()),
        1 => Err(Violation::Protocol),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if std::str::from_utf8(&payload[2..]).is_err() {
                return Err(Violation::InvalidUtf8);
            }
            if is_valid_close_code(code) {
                Ok(())
            } else {
                Err(Violation::Protocol)
            }
        }
    }
}

/// Whether a peer may send `code` in a close frame: the defined codes that are not reserved
/// for local use (1005, 1006, 1015), and the registered and private ranges.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1013 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [0x12, 0x34, 0x56, 0x78];
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 65_535 => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    #[test]
    fn decodes_a_masked_text_frame_in_place() {
        let mut buf = masked(0x81, b"hello");
        buf.extend_from_slice(&[0x89]);
        let got = decode(&mut buf, 1024, false).expect("valid");
        assert_eq!(
            got,
            Decoded::Frame(Frame { fin: true, op: FrameOp::Text, payload: b"hello", compressed: false }, 11)
        );
    }

    #[test]
    fn waits_for_the_whole_frame() {
        let whole = masked(0x82, &[7u8; 300]);
        for cut in [0, 1, 2, 3, 7, 8, 100, whole.len() - 1] {
            let mut part = whole[..cut].to_vec();
            assert!(matches!(decode(&mut part, 1024, false), Ok(Decoded::Incomplete { .. })), "cut at {cut}");
        }
        let mut part = whole[..100].to_vec();
        assert_eq!(decode(&mut part, 1024, false), Ok(Decoded::Incomplete { want: whole.len() }));
        let mut long = masked(0x82, &vec![1u8; 70_000]);
        match decode(&mut long, 100_000, false) {
            Ok(Decoded::Frame(f, n)) => assert_eq!((f.payload.len(), n), (70_000, long.len())),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let cases: Vec<(Vec<u8>, Violation)> = vec![
            (masked(0xC1, b"x"), Violation::Protocol),        // RSV1 without an extension
            (masked(0x83, b"x"), Violation::Protocol),        // reserved opcode
            (vec![0x81, 0x01, b'x'], Violation::Protocol),    // unmasked
            (masked(0x09, b"x"), Violation::Protocol),        // fragmented ping
            (masked(0x89, &[0u8; 126]), Violation::Protocol), // control frame over 125
            (masked(0x81, &[0xC3, 0x28]), Violation::InvalidUtf8), // bad UTF-8
            (masked(0x88, &[0x03]), Violation::Protocol),     // one-byte close
            (masked(0x88, &[0x03, 0xED]), Violation::Protocol), // close code 1005
            (masked(0x88, &[0x03, 0xE8, 0xFF]), Violation::InvalidUtf8), // bad reason
            (masked(0x82, &[0u8; 2000]), Violation::TooBig),
        ];
        for (i, (mut bytes, reason)) in cases.into_iter().enumerate() {
            assert_eq!(decode(&mut bytes, 1024, false), Err(reason), "case {i}");
        }
        // Too big is known from the header alone.
        let mut head = masked(0x82, &[0u8; 2000])[..4].to_vec();
        assert_eq!(decode(&mut head, 1024, false), Err(Violation::TooBig));
        let mut huge = vec![0x82, 0xFF, 0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4];
        assert_eq!(decode(&mut huge, usize::MAX, false), Err(Violation::Protocol));
    }

    #[test]
    fn bad_utf8_in_an_unfinished_text_frame_fails_as_it_arrives() {
        // A text frame of 300 bytes whose bytes 150.. are invalid, arriving in pieces.
        let mut text = "é".repeat(75).into_bytes(); // 150 valid bytes
        text.extend_from_slice(&[0xF4, 0x90, 0x80, 0x80]); // beyond U+10FFFF: never valid
        text.resize(300, b'a');
        let frame = masked(0x81, &text);
        let header = 8; // 2 + 2 (extended length) + 4 (mask)
        let mut checked = 0;
        for cut in [1, 3, 8, 9, 60, 151] {
            checked = check_arrived_text(&frame[..cut], checked).expect("valid so far");
            assert!(checked <= cut.saturating_sub(header), "cut {cut}: {checked}");
            assert!(std::str::from_utf8(&text[..checked]).is_ok(), "on a character boundary");
        }
        assert_eq!(checked, 142, "progress is kept: 71 whole characters");
        assert_eq!(check_arrived_text(&frame[..header + 152], checked), Err(Violation::InvalidUtf8));
        // A character cut by the end of what arrived is not an error yet.
        let euro = masked(0x81, "€€".as_bytes());
        assert_eq!(check_arrived_text(&euro[..6 + 4], 0), Ok(3));
        // Binary frames and continuations are not checked here.
        assert_eq!(check_arrived_text(&masked(0x82, &[0xFF; 10])[..8], 0), Ok(0));
        assert_eq!(check_arrived_text(&masked(0x00, &[0xFF; 10])[..8], 0), Ok(0));
    }

    #[test]
    fn rsv1_marks_a_compressed_message_only_where_deflate_was_negotiated() {
        let mut compressed = masked(0xC1, &[0xFF, 0x00]); // not UTF-8: it is checked once inflated
        match decode(&mut compressed, 1024, true) {
            Ok(Decoded::Frame(f, _)) => assert!(f.compressed && f.op == FrameOp::Text),
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(decode(&mut masked(0xC1, b"x"), 1024, false), Err(Violation::Protocol));
        // Not on continuations or control frames; RSV2 and RSV3 never.
        for first in [0xC0, 0xC9, 0xA1, 0x91] {
            assert_eq!(decode(&mut masked(first, b"x"), 1024, true), Err(Violation::Protocol), "{first:#x}");
        }
        // An unfinished compressed text frame is not read as UTF-8.
        let frame = masked(0x41, &[0xFF; 300]);
        assert_eq!(check_arrived_text(&frame[..100], 0), Ok(0));
    }

    #[test]
    fn accepts_fragments_and_valid_closes() {
        let mut start = masked(0x01, &[0xE2, 0x82]); // a text fragment cut inside a character
        assert!(matches!(decode(&mut start, 1024, false), Ok(Decoded::Frame(Frame { fin: false, .. }, _))));
        for code in [1000u16, 1001, 1003, 1007, 1011, 1013, 3000, 4999] {
            let mut close = masked(0x88, &code.to_be_bytes());
            assert!(matches!(decode(&mut close, 1024, false), Ok(Decoded::Frame(_, _))), "code {code}");
        }
        for code in [0u16, 999, 1004, 1005, 1006, 1014, 1015, 1016, 2999, 5000] {
            assert!(!is_valid_close_code(code), "code {code}");
        }
    }
}
