//! permessage-deflate (RFC 7692) with no compression state per connection.
//!
//! The server always agrees to `server_no_context_takeover` and `client_no_context_takeover`:
//! every message, in both directions, is compressed on its own. That is what lets a broadcast
//! be compressed once per node and the same bytes go to every subscriber, and it keeps an idle
//! connection free of the 32 KiB windows (and 256 KiB compressor) a context would hold. The
//! compressor and decompressor are per thread and reset for each message.
//!
//! A client that limits the server's window (`server_max_window_bits=N`) is sent compressed
//! only the messages of at most 2^N bytes: a back reference inside one message can never
//! reach further back than its length, so such a message fits any window of that size.

use std::cell::RefCell;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::Violation;

/// The extension's registered name.
pub const EXTENSION: &str = "permessage-deflate";
/// What a deflate stream flushed with `Z_SYNC_FLUSH` ends with; RFC 7692 §7.2.1 removes it
/// from each message and the receiver appends it again.
const SYNC_TAIL: [u8; 4] = [0x00, 0x00, 0xFF, 0xFF];
/// Largest window (RFC 7692 §7.1.2: 8 to 15 bits).
const MAX_WINDOW_BITS: u8 = 15;
/// Output grows in steps of at most this much while inflating.
const INFLATE_STEP: usize = 16 * 1024;

/// What was agreed with one client: how large the client lets the server's window be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Agreement {
    /// `server_max_window_bits` the client asked for (15 when it did not).
    pub server_window_bits: u8,
}

impl Agreement {
    /// Whether a message of `len` bytes may be sent compressed to this client: it must fit
    /// the window the client allows (see the module documentation).
    pub fn fits(self, len: usize) -> bool {
        self.server_window_bits >= MAX_WINDOW_BITS || len <= 1 << self.server_window_bits
    }

    /// The `Sec-WebSocket-Extensions` response value for this agreement.
    pub fn response(self) -> String {
        let mut value = format!("{EXTENSION}; server_no_context_takeover; client_no_context_takeover");
        if self.server_window_bits < MAX_WINDOW_BITS {
            value.push_str(&format!("; server_max_window_bits={}", self.server_window_bits));
        }
        value
    }
}

/// Picks the first acceptable permessage-deflate offer from the `Sec-WebSocket-Extensions`
/// request header values (RFC 7692 §5, §7.1); `None` when there is none. An offer with an
/// unknown, repeated or invalid parameter is declined, as the RFC requires.
pub fn negotiate<'a>(header_values: impl IntoIterator<Item = &'a str>) -> Option<Agreement> {
    header_values.into_iter().flat_map(|v| v.split(',')).find_map(accept_offer)
}

/// One offer (`permessage-deflate; client_max_window_bits; server_max_window_bits=10`).
fn accept_offer(offer: &str) -> Option<Agreement> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case(EXTENSION) {
        return None;
    }
    let mut seen = [false; 4];
    let mut agreement = Agreement { server_window_bits: MAX_WINDOW_BITS };
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        let index = match name.to_ascii_lowercase().as_str() {
            "server_no_context_takeover" if value.is_none() => 0,
            "client_no_context_takeover" if value.is_none() => 1,
            "server_max_window_bits" => {
                agreement.server_window_bits = window_bits(value?)?;
                2
            }
            "client_max_window_bits" => {
                // The client may use a smaller window; inflating with the largest reads it.
                if let Some(v) = value {
                    window_bits(v)?;
                }
                3
            }
            _ => return None,
        };
        if std::mem::replace(&mut seen[index], true) {
            return None;
        }
    }
    Some(agreement)
}

fn window_bits(value: &str) -> Option<u8> {
    // Digits only: "+9" or "09" are not valid tokens here.
    if value.is_empty() || value.len() > 2 || !value.bytes().all(|b| b.is_ascii_digit()) || value.starts_with('0') {
        return None;
    }
    value.parse().ok().filter(|b| (8..=MAX_WINDOW_BITS).contains(b))
}

thread_local! {
    /// The thread's compressor and its level; reset for each message.
    static COMPRESSOR: RefCell<Option<(u32, Compress)>> = const { RefCell::new(None) };
    /// The thread's decompressor; reset for each message.
    static DECOMPRESSOR: RefCell<Option<Decompress>> = const { RefCell::new(None) };
}

/// Compresses one message for a frame with RSV1 set, at `level` (0–9); `None` when that
/// would not make it smaller (the message then goes out as it is).
pub fn deflate(message: &[u8], level: u32) -> Option<Vec<u8>> {
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compress = match slot.as_mut() {
            Some((l, c)) if *l == level => {
                c.reset();
                c
            }
            _ => &mut slot.insert((level, Compress::new(Compression::new(level.min(9)), false))).1,
        };
        // Worth it only if it ends up smaller; the tail is removed below.
        let mut out = Vec::with_capacity(message.len() + SYNC_TAIL.len());
        let mut input = message;
        loop {
            let before = compress.total_in();
            let status = compress.compress_vec(input, &mut out, FlushCompress::Sync).ok()?;
            input = &input[(compress.total_in() - before) as usize..];
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
            if out.len() >= message.len() + SYNC_TAIL.len() || status == Status::StreamEnd {
                return None;
            }
            out.reserve(64);
        }
        if !out.ends_with(&SYNC_TAIL) {
            return None;
        }
        out.truncate(out.len() - SYNC_TAIL.len());
        (out.len() < message.len()).then_some(out)
    })
}

/// Inflates one compressed client message, refusing it as soon as it grows past `max` bytes
/// (it is never inflated in full first): [`Violation::TooBig`], or [`Violation::Deflate`]
/// when the data is not a valid deflate stream.
pub fn inflate(compressed: &[u8], max: usize) -> Result<Vec<u8>, Violation> {
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let decompress = match slot.as_mut() {
            Some(d) => {
                d.reset(false);
                d
            }
            None => slot.insert(Decompress::new(false)),
        };
        let mut out = Vec::new();
        for part in [compressed, &SYNC_TAIL[..]] {
            let mut input = part;
            loop {
                if out.len() == out.capacity() {
                    if out.len() > max {
                        return Err(Violation::TooBig);
                    }
                    // One byte past `max` shows that the message is too big.
                    out.reserve((max + 1 - out.len()).clamp(1, INFLATE_STEP));
                }
                let (in_before, out_before) = (decompress.total_in(), decompress.total_out());
                let status = decompress
                    .decompress_vec(input, &mut out, FlushDecompress::Sync)
                    .map_err(|_| Violation::Deflate)?;
                let consumed = (decompress.total_in() - in_before) as usize;
                let produced = decompress.total_out() - out_before;
                input = &input[consumed..];
                if out.len() > max {
                    return Err(Violation::TooBig);
                }
                if status == Status::StreamEnd {
                    // A final block ends the stream; whatever follows it is not deflate data.
                    return if input.is_empty() { Ok(out) } else { Err(Violation::Deflate) };
                }
                if input.is_empty() && out.len() < out.capacity() {
                    break;
                }
                if consumed == 0 && produced == 0 && out.len() < out.capacity() {
                    return Err(Violation::Deflate);
                }
            }
        }
        Ok(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiates_the_first_acceptable_offer() {
        let browser = "permessage-deflate; client_max_window_bits";
        let agreed = negotiate([browser]).expect("browsers' offer is accepted");
        assert_eq!(agreed, Agreement { server_window_bits: 15 });
        assert_eq!(agreed.response(), "permessage-deflate; server_no_context_takeover; client_no_context_takeover");
        let limited = negotiate(["permessage-deflate; server_max_window_bits=10"]).expect("accepted");
        assert_eq!(limited.server_window_bits, 10);
        assert!(limited.response().ends_with("; server_max_window_bits=10"));
        assert!(limited.fits(1024) && !limited.fits(1025));
        // Declined offers are skipped: unknown or repeated parameters, bad window sizes.
        for bad in [
            "permessage-deflate; foo",
            "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; client_max_window_bits=x",
            "permessage-deflate; server_no_context_takeover=1",
            "x-webkit-deflate-frame",
        ] {
            assert_eq!(negotiate([bad]), None, "{bad}");
        }
        let second = negotiate(["permessage-deflate; foo, permessage-deflate; server_max_window_bits=\"9\""]);
        assert_eq!(second, Some(Agreement { server_window_bits: 9 }));
        assert_eq!(negotiate(["foo", "permessage-deflate"]), Some(Agreement { server_window_bits: 15 }));
    }

    #[test]
    fn a_message_round_trips_and_small_or_random_ones_stay_plain() {
        let json = br#"{"type":"event","payload":{"event_type":"task.completed","data":{"id":1}}}"#.repeat(20);
        for level in [1, 6, 9] {
            let packed = deflate(&json, level).expect("JSON compresses");
            assert!(packed.len() < json.len() / 4, "{} of {}", packed.len(), json.len());
            assert_eq!(inflate(&packed, json.len()).expect("valid"), json);
        }
        assert_eq!(deflate(b"", 1), None);
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        assert_eq!(deflate(&noise, 6), None, "no gain, no compression");
    }

    #[test]
    fn inflating_stops_at_the_limit_and_refuses_garbage() {
        let zeros = vec![0u8; 1 << 20];
        let bomb = deflate(&zeros, 9).expect("compresses");
        assert!(bomb.len() < 2048, "a 1 MiB message in {} bytes", bomb.len());
        assert_eq!(inflate(&bomb, 64 * 1024), Err(Violation::TooBig));
        assert_eq!(inflate(&bomb, 1 << 20).map(|v| v.len()), Ok(1 << 20));
        assert_eq!(inflate(&[0xFF, 0xFF, 0xFF], 1024), Err(Violation::Deflate));
        // An empty message is a valid (empty) deflate block.
        assert_eq!(inflate(&[0x02, 0x00], 10), Ok(Vec::new()));
    }
}
