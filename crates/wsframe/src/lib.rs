//! RFC 6455 framing without IO, shared by the edge, the load tool and the bare-writer baseline.
//!
//! [`decode`] reads client frames in place from a connection's input buffer (unmasking them
//! where they lie); [`encode`] writes server frame headers, so a frame is a header followed by
//! shared payload bytes; [`assembler`] joins fragments into messages with a size bound and
//! validates UTF-8 as fragments arrive; [`deflate`] is permessage-deflate (RFC 7692) without
//! per-connection state. Every protocol violation is a [`Violation`], which the
//! caller turns into its close code.

pub mod assembler;
pub mod decode;
pub mod deflate;
pub mod encode;

pub use assembler::{Message, MessageAssembler};
pub use decode::{check_arrived_text, decode, is_valid_close_code, Decoded, Frame, FrameOp};
pub use encode::{close_payload, header, header_len, push_frame, push_header, FrameType, Opcode};

/// A peer broke the protocol; the connection must be closed with [`Violation::close_code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    /// A frame that RFC 6455 forbids (reserved bits or opcodes, unmasked, bad control frame,
    /// fragments out of order, an invalid close code).
    #[error("protocol error")]
    Protocol,
    /// A text message (or close reason) that is not UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// A frame or message longer than allowed (for a compressed message: once inflated).
    #[error("message too big")]
    TooBig,
    /// A compressed message (permessage-deflate) that is not a valid deflate stream.
    #[error("invalid compressed data")]
    Deflate,
}

impl Violation {
    /// The close code RFC 6455 prescribes (1002, 1007, 1009); undecodable compressed data is
    /// invalid payload data (1007), as zlib-based peers answer it.
    pub fn close_code(self) -> u16 {
        match self {
            Violation::Protocol => 1002,
            Violation::InvalidUtf8 | Violation::Deflate => 1007,
            Violation::TooBig => 1009,
        }
    }
}
