//! `brl`: binary frames, topics with server-side filter expressions.
//!
//! Every message is one binary WebSocket frame whose first byte is its kind. Integers are
//! big-endian; `str16` is a u16 byte length and that many bytes of UTF-8.
//!
//! | kind | layout |
//! |---|---|
//! | `0x01` SUBSCRIBE | `0x01, str16 topic, str16 filter` (filter length 0: none) |
//! | `0x02` UNSUBSCRIBE | `0x02, str16 topic` |
//! | `0x10` EVENT | `0x10, str16 topic, str16 event_id, u64 unix_ms, payload bytes (rest of frame)` |
//! | `0x20` PING / `0x21` PONG | kind byte, then up to 125 opaque bytes the answer echoes |
//! | `0xFF` ERROR | `0xFF, str16 code, str16 message` |
//!
//! Topics are `[a-z0-9._-]{1,128}`; a filter is an [`Expression`] compiled when the client
//! subscribes. The server pings with `0x20` after the endpoint's idle interval; the client's
//! `0x21` answers. Close codes as the document lists them: 1008 for quota and abuse, 4401 when
//! the token expires mid-session.

use bytes::{BufMut, Bytes, BytesMut};

use super::{Codec, DecodeError, DialectKind, FrameKind, HeartbeatStyle};
use crate::close::CloseReason;
use crate::command::{Command, Reply, ServerMessage, SubscriptionTarget};
use crate::error::{ClientError, ErrorKind};
use crate::event::Event;
use crate::filter::{Expression, Filter};

/// SUBSCRIBE.
pub const SUBSCRIBE: u8 = 0x01;
/// UNSUBSCRIBE.
pub const UNSUBSCRIBE: u8 = 0x02;
/// EVENT.
pub const EVENT: u8 = 0x10;
/// PING.
pub const PING: u8 = 0x20;
/// PONG.
pub const PONG: u8 = 0x21;
/// ERROR.
pub const ERROR: u8 = 0xFF;

/// Longest topic name, in bytes.
pub const MAX_TOPIC: usize = 128;
/// Most opaque bytes a PING or PONG carries.
pub const MAX_PING_BYTES: usize = 125;

/// The brl codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Brl;

/// Whether `topic` is a valid topic name: `[a-z0-9._-]`, 1 to [`MAX_TOPIC`] bytes.
pub fn valid_topic(topic: &str) -> bool {
    (1..=MAX_TOPIC).contains(&topic.len())
        && topic.bytes().all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'-'))
}

/// Reads a frame's fields in order; every read checks the length first.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let (head, rest) = self.rest.split_first_chunk::<2>().ok_or_else(|| format!("truncated frame: no {what}"))?;
        self.rest = rest;
        Ok(u16::from_be_bytes(*head))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        let (head, rest) = self.rest.split_first_chunk::<8>().ok_or_else(|| format!("truncated frame: no {what}"))?;
        self.rest = rest;
        Ok(u64::from_be_bytes(*head))
    }

    fn str16(&mut self, what: &str) -> Result<&'a str, String> {
        let len = usize::from(self.u16(what)?);
        if self.rest.len() < len {
            return Err(format!("truncated frame: {what} is {len} bytes, {} left", self.rest.len()));
        }
        let (bytes, rest) = self.rest.split_at(len);
        self.rest = rest;
        std::str::from_utf8(bytes).map_err(|_| format!("{what} is not UTF-8"))
    }

    fn end(&self) -> Result<(), String> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(format!("{} unexpected bytes after the frame's fields", self.rest.len()))
        }
    }
}

fn invalid_frame(message: String) -> ClientError {
    ClientError::new(ErrorKind::InvalidRequest, message)
}

fn topic(reader: &mut Reader<'_>) -> Result<String, ClientError> {
    let topic = reader.str16("topic").map_err(invalid_frame)?;
    if !valid_topic(topic) {
        return Err(ClientError::new(
            ErrorKind::UnknownChannel,
            format!("topic names are 1 to {MAX_TOPIC} bytes of [a-z0-9._-]"),
        ));
    }
    Ok(topic.to_owned())
}

fn put_str16(buf: &mut BytesMut, s: &str) {
    // Every string the server writes is bounded far below 64 KiB (topics, ids, codes,
    // messages); a longer one is cut at a character boundary rather than mis-framed.
    let mut end = s.len().min(usize::from(u16::MAX));
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    buf.put_u16(end as u16);
    buf.put_slice(&s.as_bytes()[..end]);
}

fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_frame",
        ErrorKind::InvalidCredentials => "unauthorized",
        ErrorKind::InvalidFilter => "invalid_filter",
        ErrorKind::UnknownType => "unknown_kind",
        ErrorKind::UnknownChannel => "invalid_topic",
        ErrorKind::Forbidden | ErrorKind::NotMember => "forbidden",
        ErrorKind::NotSubscribed => "not_subscribed",
        ErrorKind::TooManySubscriptions => "too_many_subscriptions",
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::SubscriptionFailed | ErrorKind::Internal => "internal_error",
    }
}

/// The topic an event goes out under: its channel (brl connections see channel events only).
fn event_topic(event: &Event) -> &str {
    event.channel.as_deref().or(event.user.as_deref()).unwrap_or("")
}

impl Codec for Brl {
    fn kind(&self) -> DialectKind {
        DialectKind::Brl
    }

    fn frame_kind(&self) -> FrameKind {
        FrameKind::Binary
    }

    fn heartbeat(&self) -> HeartbeatStyle {
        HeartbeatStyle::DialectPing
    }

    fn close_code(&self, reason: CloseReason) -> u16 {
        match reason {
            CloseReason::AuthExpired | CloseReason::AuthFailed | CloseReason::SessionRevoked => 4401,
            CloseReason::Forbidden | CloseReason::ConnectionLimit | CloseReason::RateLimited => 1008,
            other => other.standard_code(),
        }
    }

    fn decode(&self, message: &[u8]) -> Result<Command, ClientError> {
        let Some((&kind, rest)) = message.split_first() else {
            return Err(invalid_frame("empty frame".into()));
        };
        let mut reader = Reader { rest };
        match kind {
            SUBSCRIBE => {
                let topic = topic(&mut reader)?;
                let text = reader.str16("filter").map_err(invalid_frame)?;
                reader.end().map_err(invalid_frame)?;
                let filter = if text.is_empty() {
                    None
                } else {
                    let expression = Expression::parse(text).map_err(|e| {
                        ClientError::new(ErrorKind::InvalidFilter, format!("at byte {}: {}", e.position, e.message))
                    })?;
                    Some(Filter::Expression(expression))
                };
                Ok(Command::Subscribe { targets: vec![SubscriptionTarget::Channel(topic)], filter, request_id: None })
            }
            UNSUBSCRIBE => {
                let topic = topic(&mut reader)?;
                reader.end().map_err(invalid_frame)?;
                Ok(Command::Unsubscribe { targets: vec![SubscriptionTarget::Channel(topic)], request_id: None })
            }
            PING | PONG if rest.len() > MAX_PING_BYTES => {
                Err(invalid_frame(format!("a ping or pong carries at most {MAX_PING_BYTES} bytes")))
            }
            PING => Ok(Command::Ping { request_id: None, echo: Bytes::copy_from_slice(rest) }),
            // The server's pings carry text (`ping_7`); bytes that are not text carry no id
            // worth keeping (the pong counts as an answer either way).
            PONG => Ok(Command::Pong {
                request_id: std::str::from_utf8(rest).ok().filter(|s| !s.is_empty()).map(str::to_owned),
            }),
            other => Err(ClientError::new(ErrorKind::UnknownType, format!("unknown frame kind 0x{other:02X}"))),
        }
    }

    fn encode_event(&self, event: &Event, _replayed: bool) -> Bytes {
        let topic = event_topic(event);
        let payload = event.payload_bytes();
        let mut buf = BytesMut::with_capacity(1 + 2 + topic.len() + 2 + event.id.len() + 8 + payload.len());
        buf.put_u8(EVENT);
        put_str16(&mut buf, topic);
        put_str16(&mut buf, &event.id);
        buf.put_u64(event.ts);
        buf.put_slice(&payload);
        buf.freeze()
    }

    fn encode_reply(&self, reply: &Reply<'_>) -> Option<Bytes> {
        let mut buf = BytesMut::with_capacity(128);
        match reply {
            Reply::Pong { echo, .. } => {
                buf.put_u8(PONG);
                buf.put_slice(&echo[..echo.len().min(MAX_PING_BYTES)]);
            }
            Reply::Ping { request_id } => {
                buf.put_u8(PING);
                buf.put_slice(&request_id.as_bytes()[..request_id.len().min(MAX_PING_BYTES)]);
            }
            Reply::Error { error, .. } => {
                buf.put_u8(ERROR);
                put_str16(&mut buf, error_code(error.kind));
                put_str16(&mut buf, &error.message);
            }
            Reply::Welcome { .. } | Reply::Ack { .. } | Reply::SessionRevoked { .. } | Reply::ReplayComplete { .. } => {
                return None
            }
        }
        Some(buf.freeze())
    }

    fn encode_command(&self, command: &Command) -> Result<Vec<Bytes>, ClientError> {
        let one_topic = |targets: &[SubscriptionTarget]| match targets {
            [SubscriptionTarget::Channel(t)] if valid_topic(t) => Ok(t.clone()),
            _ => Err(invalid_frame("brl subscribes to one valid topic per frame".into())),
        };
        let mut buf = BytesMut::with_capacity(64);
        match command {
            Command::Subscribe { targets, filter, .. } => {
                let filter = match filter {
                    None => "",
                    Some(Filter::Expression(e)) => e.source(),
                    Some(Filter::Fields(_)) => return Err(invalid_frame("brl filters are expressions".into())),
                };
                buf.put_u8(SUBSCRIBE);
                put_str16(&mut buf, &one_topic(targets)?);
                put_str16(&mut buf, filter);
            }
            Command::Unsubscribe { targets, .. } => {
                buf.put_u8(UNSUBSCRIBE);
                put_str16(&mut buf, &one_topic(targets)?);
            }
            Command::Ping { echo, .. } => {
                buf.put_u8(PING);
                buf.put_slice(&echo[..echo.len().min(MAX_PING_BYTES)]);
            }
            Command::Pong { request_id } => {
                let echo = request_id.as_deref().unwrap_or("").as_bytes();
                buf.put_u8(PONG);
                buf.put_slice(&echo[..echo.len().min(MAX_PING_BYTES)]);
            }
            Command::Publish { .. } => return Err(invalid_frame("brl clients do not publish".into())),
        }
        Ok(vec![buf.freeze()])
    }

    fn answer_to_ping(&self, message: &[u8]) -> Option<Bytes> {
        match message.split_first() {
            Some((&PING, echo)) if echo.len() <= MAX_PING_BYTES => {
                let mut pong = Vec::with_capacity(1 + echo.len());
                pong.push(PONG);
                pong.extend_from_slice(echo);
                Some(Bytes::from(pong))
            }
            _ => None,
        }
    }

    fn decode_server(&self, message: &[u8]) -> Result<ServerMessage, DecodeError> {
        let Some((&kind, rest)) = message.split_first() else {
            return Err(DecodeError("empty frame".into()));
        };
        let mut reader = Reader { rest };
        match kind {
            EVENT => {
                let topic = reader.str16("topic").map_err(DecodeError)?;
                let id = reader.str16("event id").map_err(DecodeError)?;
                reader.u64("timestamp").map_err(DecodeError)?;
                // brl has no event type on the wire: the topic is what a client tells events by.
                Ok(ServerMessage::Event { id: id.to_owned(), kind: topic.to_owned(), replayed: false })
            }
            PONG => Ok(ServerMessage::Pong),
            PING => Ok(ServerMessage::Ping { request_id: Some(String::from_utf8_lossy(rest).into_owned()) }),
            ERROR => {
                let code = reader.str16("code").map_err(DecodeError)?.to_owned();
                let message = reader.str16("message").map_err(DecodeError)?.to_owned();
                Ok(ServerMessage::Error { code, message, request_id: None })
            }
            other => Err(DecodeError(format!("unknown frame kind 0x{other:02X}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subscribe(topic: &str, filter: &str) -> Vec<u8> {
        let mut buf = BytesMut::new();
        buf.put_u8(SUBSCRIBE);
        put_str16(&mut buf, topic);
        put_str16(&mut buf, filter);
        buf.to_vec()
    }

    fn error_of(frame: &[u8]) -> (ErrorKind, String) {
        let e = Brl.decode(frame).expect_err("refused");
        (e.kind, e.message)
    }

    #[test]
    fn a_subscribe_carries_its_topic_and_compiled_filter() {
        let Command::Subscribe { targets, filter: Some(Filter::Expression(e)), .. } =
            Brl.decode(&subscribe("alerts.eu", r#"severity in ["critical","high"] && score >= 80"#)).expect("valid")
        else {
            panic!("a filtered subscribe")
        };
        assert_eq!(targets, [SubscriptionTarget::Channel("alerts.eu".into())]);
        assert!(e.matches(&serde_json::json!({"severity": "high", "score": 91})));
        assert!(!e.matches(&serde_json::json!({"severity": "low", "score": 91})));
        let plain = Brl.decode(&subscribe("alerts.eu", "")).expect("valid");
        assert!(matches!(plain, Command::Subscribe { filter: None, .. }));
    }

    #[test]
    fn bad_frames_get_the_documented_error_codes() {
        assert_eq!(error_of(&subscribe("Alerts", "")).0, ErrorKind::UnknownChannel, "upper case");
        assert_eq!(error_of(&subscribe("", "")).0, ErrorKind::UnknownChannel, "empty");
        assert_eq!(error_of(&subscribe(&"a".repeat(129), "")).0, ErrorKind::UnknownChannel, "too long");
        let (kind, message) = error_of(&subscribe("alerts", "score >= "));
        assert_eq!(kind, ErrorKind::InvalidFilter);
        assert!(message.starts_with("at byte 9"), "{message}");
        assert_eq!(error_of(b"\x01\x00\x05ale").0, ErrorKind::InvalidRequest, "truncated");
        assert_eq!(error_of(b"").0, ErrorKind::InvalidRequest);
        assert_eq!(error_of(b"\x07").0, ErrorKind::UnknownType);
        let mut trailing = subscribe("alerts", "");
        trailing.push(0);
        assert_eq!(error_of(&trailing).0, ErrorKind::InvalidRequest);
        assert_eq!(error_of(&[&[PING][..], &[7u8; 126][..]].concat()).0, ErrorKind::InvalidRequest);
        for kind in ErrorKind::ALL {
            let frame = Brl.encode_reply(&Reply::Error { error: &ClientError::new(kind, "m"), request_id: None });
            let decoded = Brl.decode_server(&frame.expect("every kind")).expect("decodes");
            assert!(matches!(decoded, ServerMessage::Error { ref code, .. } if code == error_code(kind)));
        }
    }

    #[test]
    fn pings_echo_their_bytes_both_ways() {
        let ping = Brl.decode(b"\x20hello").expect("ping");
        let Command::Ping { echo, .. } = ping else { panic!("a ping") };
        let pong = Brl.encode_reply(&Reply::Pong { request_id: None, echo: &echo, now_ms: 0 }).expect("pong");
        assert_eq!(&pong[..], b"\x21hello");
        let server_ping = Brl.encode_reply(&Reply::Ping { request_id: "ping_3" }).expect("ping");
        assert_eq!(&server_ping[..], b"\x20ping_3");
        assert_eq!(Brl.decode(b"\x21ping_3").expect("pong"), Command::Pong { request_id: Some("ping_3".into()) });
        // Found by fuzzing: a pong of bytes that are not text re-encoded to other bytes.
        let odd = Brl.decode(b"\x21\xff\xfe").expect("still a pong");
        assert_eq!(odd, Command::Pong { request_id: None });
        assert_eq!(Brl.decode(&Brl.encode_command(&odd).expect("encodes")[0]).expect("decodes"), odd);
    }

    #[test]
    fn an_event_frame_is_laid_out_as_documented() {
        let event: Event = serde_json::from_value(serde_json::json!({
            "id": "evt_1", "type": "alert", "channel": "alerts.eu", "ts": 258, "payload": {"a": 1}
        }))
        .expect("event");
        let frame = Brl.encode_event(&event, false);
        let mut expected = vec![EVENT, 0, 9];
        expected.extend_from_slice(b"alerts.eu");
        expected.extend_from_slice(&[0, 5]);
        expected.extend_from_slice(b"evt_1");
        expected.extend_from_slice(&258u64.to_be_bytes());
        expected.extend_from_slice(br#"{"a":1}"#);
        assert_eq!(&frame[..], &expected[..]);
    }
}
