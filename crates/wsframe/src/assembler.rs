//! Reassembles fragmented client messages with a size limit.
//!
//! The frame decoder limits the size of one frame; a client could still send an endless run of
//! continuation frames. This assembler bounds the whole message, rejects continuation frames
//! without a start (and starts inside a message), and validates the UTF-8 of a fragmented text
//! message as each fragment arrives: a message is failed at the first fragment that cannot be
//! part of valid UTF-8, not when it completes (RFC 6455 §8.1, "fail fast"). Unfragmented text
//! frames are validated by the decoder. A compressed message (permessage-deflate) is bounded
//! as it arrives, then inflated with the same bound (never in full first) and its text
//! validated once inflated.

use std::borrow::Cow;

use crate::decode::{Frame, FrameOp};
use crate::Violation;

/// One complete client message.
#[derive(Debug, PartialEq, Eq)]
pub struct Message<'a> {
    /// Whether it arrived as text.
    pub is_text: bool,
    /// Its bytes.
    pub data: Cow<'a, [u8]>,
}

/// A fragmented message being collected.
struct Partial {
    is_text: bool,
    /// Compressed: the bytes are deflate data, inflated when the message completes.
    compressed: bool,
    data: Vec<u8>,
    /// How much of `data` is known to be valid UTF-8 (text messages); the rest is at most the
    /// start of one character cut by a fragment boundary.
    valid: usize,
}

impl Partial {
    /// Checks the bytes added since the last check; `fin` means no more will come.
    fn check_utf8(&mut self, fin: bool) -> Result<(), Violation> {
        if !self.is_text || self.compressed {
            return Ok(());
        }
        match std::str::from_utf8(&self.data[self.valid..]) {
            Ok(_) => {
                self.valid = self.data.len();
                Ok(())
            }
            // A character cut at the end may be completed by the next fragment.
            Err(e) if e.error_len().is_none() && !fin => {
                self.valid += e.valid_up_to();
                Ok(())
            }
            Err(_) => Err(Violation::InvalidUtf8),
        }
    }
}

/// Collects data frames into messages.
#[derive(Default)]
pub struct MessageAssembler {
    /// Boxed: fragmented messages are rare, and an assembler lives as long as its connection.
    partial: Option<Box<Partial>>,
}

impl MessageAssembler {
    /// Feeds a data frame (text, binary or continuation); returns a message when one completes,
    /// or the violation that must close the connection (among them a message over
    /// `max_bytes`, which is the caller's to pass rather than stored in every assembler).
    pub fn push<'f>(&mut self, frame: Frame<'f>, max_bytes: usize) -> Result<Option<Message<'f>>, Violation> {
        let is_start = matches!(frame.op, FrameOp::Text | FrameOp::Binary);
        match (is_start, self.partial.as_mut()) {
            (true, Some(_)) | (false, None) => Err(Violation::Protocol),
            (true, None) => {
                let is_text = frame.op == FrameOp::Text;
                if frame.payload.len() > max_bytes {
                    return Err(Violation::TooBig);
                }
                if frame.fin && frame.compressed {
                    return inflated(is_text, frame.payload, max_bytes).map(Some);
                }
                if frame.fin {
                    return Ok(Some(Message { is_text, data: Cow::Borrowed(frame.payload) }));
                }
                let compressed = frame.compressed;
                let mut partial = Partial { is_text, compressed, data: frame.payload.to_vec(), valid: 0 };
                partial.check_utf8(false)?;
                self.partial = Some(Box::new(partial));
                Ok(None)
            }
            (false, Some(partial)) => {
                if partial.data.len() + frame.payload.len() > max_bytes {
                    return Err(Violation::TooBig);
                }
                partial.data.extend_from_slice(frame.payload);
                partial.check_utf8(frame.fin)?;
                if !frame.fin {
                    return Ok(None);
                }
                let Some(done) = self.partial.take() else { return Err(Violation::Protocol) };
                if done.compressed {
                    return inflated(done.is_text, &done.data, max_bytes).map(Some);
                }
                Ok(Some(Message { is_text: done.is_text, data: Cow::Owned(done.data) }))
            }
        }
    }
}

/// A compressed message, inflated within the bound and validated.
fn inflated(is_text: bool, compressed: &[u8], max_bytes: usize) -> Result<Message<'static>, Violation> {
    let data = crate::deflate::inflate(compressed, max_bytes)?;
    if is_text && std::str::from_utf8(&data).is_err() {
        return Err(Violation::InvalidUtf8);
    }
    Ok(Message { is_text, data: Cow::Owned(data) })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An assembler and its bound, as a connection holds them.
    struct Bounded(MessageAssembler, usize);

    impl Bounded {
        fn new(max_bytes: usize) -> Bounded {
            Bounded(MessageAssembler::default(), max_bytes)
        }

        fn push<'f>(&mut self, frame: Frame<'f>) -> Result<Option<Message<'f>>, Violation> {
            self.0.push(frame, self.1)
        }
    }

    fn frame(op: FrameOp, fin: bool, payload: &[u8]) -> Frame<'_> {
        Frame { fin, op, payload, compressed: false }
    }

    #[test]
    fn compressed_messages_are_inflated_within_the_bound_and_validated() {
        let text = "a compressed message, a compressed message, a compressed message".as_bytes();
        let packed = crate::deflate::deflate(text, 6).expect("compresses");
        let mut a = Bounded::new(100);
        let whole = Frame { fin: true, op: FrameOp::Text, payload: &packed, compressed: true };
        assert_eq!(a.push(whole).expect("valid").expect("complete").data, text);
        // Fragmented: the first frame carries RSV1, the continuations do not.
        let (head, tail) = packed.split_at(5);
        assert_eq!(a.push(Frame { fin: false, op: FrameOp::Text, payload: head, compressed: true }), Ok(None));
        let done = a.push(frame(FrameOp::Continuation, true, tail)).expect("valid").expect("complete");
        assert_eq!(done.data, text);
        // Inflated past the bound: too big, although the compressed bytes are few.
        let mut small = Bounded::new(32);
        assert_eq!(small.push(whole), Err(Violation::TooBig));
        // Not UTF-8 once inflated.
        let bad = crate::deflate::deflate(&[0xC0; 64], 6).expect("compresses");
        let bad = Frame { fin: true, op: FrameOp::Text, payload: &bad, compressed: true };
        assert_eq!(Bounded::new(100).push(bad), Err(Violation::InvalidUtf8));
    }

    #[test]
    fn joins_fragments_and_passes_whole_frames_through_without_copying() {
        let mut a = Bounded::new(100);
        let whole = a.push(frame(FrameOp::Text, true, b"hi")).expect("valid").expect("complete");
        assert!(matches!(whole.data, Cow::Borrowed(b"hi")));
        assert_eq!(a.push(frame(FrameOp::Binary, false, b"ab")), Ok(None));
        assert_eq!(a.push(frame(FrameOp::Continuation, false, b"cd")), Ok(None));
        let m = a.push(frame(FrameOp::Continuation, true, b"e")).expect("valid").expect("complete");
        assert_eq!((m.is_text, &m.data[..]), (false, &b"abcde"[..]));
    }

    #[test]
    fn a_character_split_across_fragments_is_valid() {
        let euro = "€".as_bytes(); // three bytes
        let mut a = Bounded::new(100);
        assert_eq!(a.push(frame(FrameOp::Text, false, &euro[..1])), Ok(None));
        assert_eq!(a.push(frame(FrameOp::Continuation, false, &euro[1..2])), Ok(None));
        let m = a.push(frame(FrameOp::Continuation, true, &euro[2..])).expect("valid").expect("complete");
        assert_eq!(&m.data[..], euro);
    }

    #[test]
    fn invalid_utf8_fails_at_the_first_bad_fragment_not_at_the_end() {
        let mut a = Bounded::new(100);
        assert_eq!(a.push(frame(FrameOp::Text, false, b"ok ")), Ok(None));
        // 0xC0 can never start a valid sequence: fail now, although the message is unfinished.
        assert_eq!(a.push(frame(FrameOp::Continuation, false, &[0xC0, 0x80])), Err(Violation::InvalidUtf8));
        let mut b = Bounded::new(100);
        assert_eq!(b.push(frame(FrameOp::Text, false, &[0xF4, 0x90])), Err(Violation::InvalidUtf8));
        // A character still cut when the message ends is invalid.
        let mut c = Bounded::new(100);
        assert_eq!(c.push(frame(FrameOp::Text, false, &[0xE2, 0x82])), Ok(None));
        assert_eq!(c.push(frame(FrameOp::Continuation, true, b"")), Err(Violation::InvalidUtf8));
        // Binary messages are not text.
        let mut d = Bounded::new(100);
        assert_eq!(d.push(frame(FrameOp::Binary, false, &[0xC0])), Ok(None));
        assert!(d.push(frame(FrameOp::Continuation, true, &[0x80])).is_ok());
    }

    #[test]
    fn out_of_order_fragments_and_oversized_messages_are_refused() {
        let mut a = Bounded::new(4);
        assert_eq!(a.push(frame(FrameOp::Continuation, true, b"x")), Err(Violation::Protocol));
        assert_eq!(a.push(frame(FrameOp::Text, false, b"ab")), Ok(None));
        assert_eq!(a.push(frame(FrameOp::Text, true, b"c")), Err(Violation::Protocol));
        let mut b = Bounded::new(4);
        assert_eq!(b.push(frame(FrameOp::Binary, false, b"abc")), Ok(None));
        assert_eq!(b.push(frame(FrameOp::Continuation, false, b"de")), Err(Violation::TooBig));
        assert_eq!(Bounded::new(4).push(frame(FrameOp::Binary, true, b"abcde")), Err(Violation::TooBig));
    }
}
