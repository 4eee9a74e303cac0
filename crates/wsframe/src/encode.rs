//! Server-to-client WebSocket frame headers (RFC 6455 §5.2).
//!
//! The edge writes its own frames instead of going through a per-connection frame writer:
//! server frames are never masked, so a frame is a 2–10 byte header followed by the shared
//! payload bytes, and the writer can coalesce many queued frames into one socket write.

/// Frame opcodes the server sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    /// UTF-8 text message.
    Text = 0x1,
    /// Binary message.
    Binary = 0x2,
    /// Close.
    Close = 0x8,
    /// Ping.
    Ping = 0x9,
    /// Pong.
    Pong = 0xA,
}

/// What the first byte of a server frame says besides FIN: the opcode, and whether the
/// payload is a compressed message (permessage-deflate sets RSV1, RFC 7692 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameType {
    /// The opcode.
    pub opcode: Opcode,
    /// The payload is compressed (RSV1).
    pub deflated: bool,
}

impl FrameType {
    /// The frame's first byte: FIN, RSV1 when deflated, the opcode.
    fn first_byte(self) -> u8 {
        0x80 | if self.deflated { 0x40 } else { 0 } | self.opcode as u8
    }
}

impl From<Opcode> for FrameType {
    fn from(opcode: Opcode) -> Self {
        FrameType { opcode, deflated: false }
    }
}

/// Appends the header of a final (unfragmented) frame carrying `len` payload bytes.
pub fn push_header(buf: &mut Vec<u8>, kind: impl Into<FrameType>, len: usize) {
    buf.push(kind.into().first_byte());
    if len < 126 {
        buf.push(len as u8);
    } else if len <= u16::MAX as usize {
        buf.push(126);
        buf.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        buf.push(127);
        buf.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

/// The header of a final frame carrying `len` payload bytes, as a fixed array and its used
/// length (no allocation, for the single-message write path).
pub fn header(kind: impl Into<FrameType>, len: usize) -> ([u8; 10], usize) {
    let mut h = [0u8; 10];
    h[0] = kind.into().first_byte();
    if len < 126 {
        h[1] = len as u8;
        (h, 2)
    } else if len <= u16::MAX as usize {
        h[1] = 126;
        h[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        (h, 4)
    } else {
        h[1] = 127;
        h[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (h, 10)
    }
}

/// How many bytes the header of a frame carrying `len` payload bytes takes.
pub fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65_535 => 4,
        _ => 10,
    }
}

/// Appends a whole frame.
pub fn push_frame(buf: &mut Vec<u8>, kind: impl Into<FrameType>, payload: &[u8]) {
    push_header(buf, kind, payload.len());
    buf.extend_from_slice(payload);
}

/// The payload of a close frame: the code, then the reason cut to fit the 125-byte control
/// frame limit on a character boundary.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut p = Vec::with_capacity(2 + end);
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(&reason.as_bytes()[..end]);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_lengths() {
        let mut b = Vec::new();
        push_header(&mut b, Opcode::Text, 5);
        assert_eq!(b, [0x81, 5]);
        b.clear();
        push_header(&mut b, Opcode::Binary, 300);
        assert_eq!(b, [0x82, 126, 1, 44]);
        b.clear();
        push_header(&mut b, Opcode::Text, 70_000);
        assert_eq!(b, [0x81, 127, 0, 0, 0, 0, 0, 1, 0x11, 0x70]);
        b.clear();
        push_header(&mut b, FrameType { opcode: Opcode::Text, deflated: true }, 5);
        assert_eq!(b, [0xC1, 5], "RSV1 marks a compressed message");
    }

    #[test]
    fn fixed_header_matches_the_appended_one() {
        for len in [0, 125, 126, 65_535, 65_536, 1 << 20] {
            let mut b = Vec::new();
            push_header(&mut b, Opcode::Binary, len);
            let (h, n) = header(Opcode::Binary, len);
            assert_eq!(&h[..n], &b[..], "len {len}");
            assert_eq!(header_len(len), n, "len {len}");
        }
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let long = "é".repeat(100);
        let p = close_payload(4008, &long);
        assert!(p.len() <= 125);
        assert!(std::str::from_utf8(&p[2..]).is_ok());
        assert_eq!(&p[..2], &4008u16.to_be_bytes());
    }
}
