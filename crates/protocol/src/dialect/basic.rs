//! `basic`: the generic JWT WebSocket service at `/ws`.
//!
//! Frames are `{"type":...,"data":{...}}`. Client commands: `subscribe` / `unsubscribe`
//! `{"channel":"conversation:conv-123"}` and `ping` `{}` (answered with `pong`). Events carry
//! their payload in `data`, plus `id`, `timestamp` and (for channel events) `channel`, so that
//! clients can deduplicate and route. Errors are `{"type":"error","data":{"code","message"}}`
//! with the four documented codes.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::json::{
    data_string, event_capacity, invalid, push_field_str, push_key, push_raw, push_str, push_u64, server_message,
    to_message, ServerFields, TypeDataFrame,
};
use super::{Codec, DecodeError, DialectKind, FrameKind};
use crate::command::{Command, Reply, ServerMessage, SubscriptionTarget};
use crate::error::{ClientError, ErrorKind};
use crate::event::Event;
use crate::timefmt::iso8601_millis;

/// Longest channel name a client may send.
const MAX_CHANNEL_NAME: usize = 256;

/// The basic codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Basic;

fn channel(data: Option<Box<RawValue>>) -> Result<Vec<SubscriptionTarget>, ClientError> {
    Ok(vec![SubscriptionTarget::Channel(data_string(data.as_deref(), "channel", MAX_CHANNEL_NAME)?)])
}

impl Codec for Basic {
    fn kind(&self) -> DialectKind {
        DialectKind::Basic
    }

    fn frame_kind(&self) -> FrameKind {
        FrameKind::Text
    }

    fn decode(&self, message: &[u8]) -> Result<Command, ClientError> {
        let frame: TypeDataFrame =
            serde_json::from_slice(message).map_err(|e| invalid(format!("malformed message: {e}")))?;
        match frame.kind.as_str() {
            "subscribe" => Ok(Command::Subscribe { targets: channel(frame.data)?, filter: None, request_id: None }),
            "unsubscribe" => Ok(Command::Unsubscribe { targets: channel(frame.data)?, request_id: None }),
            "ping" => Ok(Command::Ping { request_id: None, echo: Bytes::new() }),
            other => Err(invalid(format!("unknown command `{other}`"))),
        }
    }

    fn encode_event(&self, event: &Event, replayed: bool) -> Bytes {
        let mut buf = Vec::with_capacity(event_capacity(&event.payload, event.kind.len() + event.id.len()));
        buf.extend_from_slice(b"{");
        push_key(&mut buf, "type");
        push_str(&mut buf, &event.kind);
        buf.push(b',');
        push_key(&mut buf, "data");
        push_raw(&mut buf, &event.payload);
        if let Some(channel) = &event.channel {
            push_field_str(&mut buf, "channel", channel);
        }
        push_field_str(&mut buf, "id", &event.id);
        push_field_str(&mut buf, "timestamp", &iso8601_millis(event.ts));
        if let Some(sender) = &event.sender {
            push_field_str(&mut buf, "sender", sender);
        }
        if replayed {
            buf.extend_from_slice(b",\"replayed\":true");
        }
        buf.push(b'}');
        Bytes::from(buf)
    }

    fn encode_reply(&self, reply: &Reply<'_>) -> Option<Bytes> {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(b"{\"type\":");
        match reply {
            Reply::Welcome { .. } | Reply::Ack { .. } | Reply::Ping { .. } | Reply::SessionRevoked { .. } => {
                return None
            }
            Reply::Pong { .. } => buf.extend_from_slice(b"\"pong\",\"data\":{}"),
            Reply::Error { error, .. } => {
                buf.extend_from_slice(b"\"error\",\"data\":{");
                push_key(&mut buf, "code");
                push_str(&mut buf, error_code(error.kind));
                push_field_str(&mut buf, "message", &error.message);
                buf.push(b'}');
            }
            Reply::ReplayComplete { count, truncated } => {
                buf.extend_from_slice(b"\"replay_complete\",\"data\":{\"count\":");
                push_u64(&mut buf, *count as u64);
                buf.extend_from_slice(if *truncated { b",\"truncated\":true}" } else { b",\"truncated\":false}" });
            }
        }
        buf.push(b'}');
        Some(Bytes::from(buf))
    }

    fn encode_command(&self, command: &Command) -> Result<Vec<Bytes>, ClientError> {
        let per_channel = |kind: &str, targets: &[SubscriptionTarget]| -> Result<Vec<Bytes>, ClientError> {
            targets
                .iter()
                .map(|t| match t {
                    SubscriptionTarget::Channel(c) => Ok(to_message(&json!({"type": kind, "data": {"channel": c}}))),
                    SubscriptionTarget::EventType(t) => {
                        Err(invalid(format!("basic subscribes to channels, not `{t}`")))
                    }
                })
                .collect()
        };
        match command {
            Command::Subscribe { filter: Some(_), .. } => Err(invalid("basic has no subscription filters")),
            Command::Subscribe { targets, .. } => per_channel("subscribe", targets),
            Command::Unsubscribe { targets, .. } => per_channel("unsubscribe", targets),
            Command::Ping { .. } => Ok(vec![to_message(&json!({"type": "ping", "data": {}}))]),
            Command::Pong { .. } | Command::Publish { .. } => Err(invalid("basic clients only subscribe and ping")),
        }
    }

    fn decode_server(&self, message: &[u8]) -> Result<ServerMessage, DecodeError> {
        #[derive(Deserialize)]
        struct ServerFrame<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            data: Option<Data>,
            #[serde(default)]
            replayed: Option<bool>,
        }
        /// The fields of `data` a client needs from control messages (events carry anything).
        #[derive(Deserialize, Default)]
        struct Data {
            #[serde(default)]
            code: Option<String>,
            #[serde(default)]
            message: Option<serde_json::Value>,
            #[serde(default)]
            count: Option<u64>,
            #[serde(default)]
            truncated: Option<bool>,
        }
        let f: ServerFrame<'_> = serde_json::from_slice(message).map_err(|e| DecodeError(e.to_string()))?;
        let data = f.data.unwrap_or_default();
        Ok(server_message(ServerFields {
            kind: f.kind.into_owned(),
            id: f.id,
            code: data.code,
            message: data.message.and_then(|m| m.as_str().map(str::to_owned)),
            count: data.count,
            truncated: data.truncated,
            replayed: f.replayed,
            ..ServerFields::default()
        }))
    }
}

/// Maps every error onto the document's four codes.
fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest
        | ErrorKind::InvalidFilter
        | ErrorKind::UnknownType
        | ErrorKind::RateLimited
        | ErrorKind::NotSubscribed => "invalid_request",
        ErrorKind::Forbidden | ErrorKind::NotMember | ErrorKind::InvalidCredentials => "unauthorized",
        ErrorKind::UnknownChannel | ErrorKind::SubscriptionFailed | ErrorKind::TooManySubscriptions => {
            "subscription_failed"
        }
        ErrorKind::Internal => "internal_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn subscribe_unsubscribe_ping() {
        let Command::Subscribe { targets, .. } =
            Basic.decode(br#"{"type":"subscribe","data":{"channel":"conversation:conv-123"}}"#).unwrap()
        else {
            panic!("not a subscribe")
        };
        assert_eq!(targets, vec![SubscriptionTarget::Channel("conversation:conv-123".into())]);
        assert!(matches!(Basic.decode(br#"{"type":"ping","data":{}}"#).unwrap(), Command::Ping { .. }));
        assert!(matches!(Basic.decode(br#"{"type":"ping"}"#).unwrap(), Command::Ping { .. }));
        let pong: Value = serde_json::from_slice(
            &Basic.encode_reply(&Reply::Pong { request_id: None, echo: &[], now_ms: 0 }).unwrap(),
        )
        .unwrap();
        assert_eq!(pong, json!({"type": "pong", "data": {}}));
    }

    #[test]
    fn malformed_frames_are_invalid_request() {
        for bad in [
            &b"nope"[..],
            b"{\"type\":\"subscribe\"}",
            b"{\"type\":\"subscribe\",\"data\":{\"channel\":1}}",
            b"{\"type\":\"x\"}",
        ] {
            let err = Basic.decode(bad).unwrap_err();
            let v: Value =
                serde_json::from_slice(&Basic.encode_reply(&Reply::Error { error: &err, request_id: None }).unwrap())
                    .unwrap();
            assert_eq!(v["type"], "error");
            assert_eq!(v["data"]["code"], "invalid_request");
        }
    }

    #[test]
    fn chat_message_event_shape() {
        let ev: Event = serde_json::from_value(json!({
            "id": "evt_1", "type": "chat_message", "channel": "conversation:conv-123", "ts": 0,
            "payload": {"conversation_id": "conv-123", "sender_id": "user-456", "content": "Hello there!"}
        }))
        .unwrap();
        let v: Value = serde_json::from_slice(&Basic.encode_event(&ev, false)).unwrap();
        assert_eq!(v["type"], "chat_message");
        assert_eq!(v["data"]["content"], "Hello there!");
        assert_eq!(v["channel"], "conversation:conv-123");
        assert_eq!(v["id"], "evt_1");
    }
}
