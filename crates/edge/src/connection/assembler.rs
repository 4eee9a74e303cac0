//! Reassembles fragmented client messages with a size limit.
//!
//! The frame decoder limits the size of one frame; a client could still send an endless run of
//! continuation frames. This assembler bounds the whole message, rejects continuation frames
//! without a start (and starts inside a message), and validates UTF-8 of fragmented text
//! messages when they complete (unfragmented text frames are validated by the decoder).

use std::borrow::Cow;

use switchboard_protocol::CloseReason;

use super::frames::{Frame, FrameOp};

/// One complete client message.
pub struct Message<'a> {
    /// Whether it arrived as text.
    pub is_text: bool,
    /// Its bytes.
    pub data: Cow<'a, [u8]>,
}

/// Collects data frames into messages.
pub struct MessageAssembler {
    max_bytes: usize,
    partial: Option<(bool, Vec<u8>)>,
}

impl MessageAssembler {
    /// An assembler that refuses messages over `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        MessageAssembler { max_bytes, partial: None }
    }

    /// Feeds a data frame (text, binary or continuation); returns a message when one completes,
    /// or the reason to close the connection.
    pub fn push<'f>(&mut self, frame: Frame<'f>) -> Result<Option<Message<'f>>, CloseReason> {
        let is_start = matches!(frame.op, FrameOp::Text | FrameOp::Binary);
        match (is_start, self.partial.as_mut()) {
            (true, Some(_)) => Err(CloseReason::ProtocolError),
            (false, None) => Err(CloseReason::ProtocolError),
            (true, None) => {
                let is_text = frame.op == FrameOp::Text;
                if frame.payload.len() > self.max_bytes {
                    return Err(CloseReason::MessageTooBig);
                }
                if frame.fin {
                    return Ok(Some(Message { is_text, data: Cow::Borrowed(frame.payload) }));
                }
                self.partial = Some((is_text, frame.payload.to_vec()));
                Ok(None)
            }
            (false, Some((_, buf))) => {
                if buf.len() + frame.payload.len() > self.max_bytes {
                    return Err(CloseReason::MessageTooBig);
                }
                buf.extend_from_slice(frame.payload);
                if !frame.fin {
                    return Ok(None);
                }
                let Some((is_text, data)) = self.partial.take() else {
                    return Err(CloseReason::ProtocolError);
                };
                if is_text && std::str::from_utf8(&data).is_err() {
                    return Err(CloseReason::InvalidPayload);
                }
                Ok(Some(Message { is_text, data: Cow::Owned(data) }))
            }
        }
    }
}
