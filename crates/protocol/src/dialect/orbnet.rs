//! `orbnet`: OrbNET notifications and chat, OrbGuard threat stream.
//!
//! Server frames: `{"type":"connection_ack","sessionId":..,"timestamp":..}`, events
//! `{"type":T,"id":..,"timestamp":..,"payload":{..}}`, `{"type":"error","code":..,"message":..}`,
//! `{"type":"replay_complete","count":N,"truncated":b}`, `{"type":"pong","timestamp":..}`.
//! Client frames: `subscribe` / `unsubscribe` with `channels` (event types) and optional
//! `filters`, chat sends (`message`, `typing`, `read_receipt` with `payload.conversationId`),
//! and `ping`. Heartbeats are WebSocket ping frames.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::json::{
    event_capacity, invalid, push_field_str, push_key, push_raw, push_str, push_u64, server_message, to_message,
    ServerFields,
};
use super::{Codec, DecodeError, DialectKind, FrameKind};
use crate::command::{Command, Reply, ServerMessage, SubscriptionTarget};
use crate::error::{ClientError, ErrorKind};
use crate::event::Event;
use crate::filter::{FieldFilter, Filter};
use crate::timefmt::iso8601_millis;

/// Most channels one subscribe frame may name.
const MAX_CHANNELS_PER_FRAME: usize = 64;
/// Longest event type name a client may send.
const MAX_TYPE_NAME: usize = 128;
/// The channel prefix of a chat conversation (`conversationId` `c1` is channel `conversation:c1`).
pub const CONVERSATION_PREFIX: &str = "conversation:";

/// The orbnet codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Orbnet;

#[derive(Deserialize)]
struct ClientFrame {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    channels: Option<Vec<String>>,
    #[serde(default)]
    filters: Option<Map<String, Value>>,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct ChatPayload {
    #[serde(rename = "conversationId")]
    conversation_id: String,
}

fn event_types(channels: Option<Vec<String>>) -> Result<Vec<SubscriptionTarget>, ClientError> {
    let channels = channels.ok_or_else(|| invalid("`channels` (a list of event types) is required"))?;
    if channels.is_empty() || channels.len() > MAX_CHANNELS_PER_FRAME {
        return Err(invalid(format!("`channels` must list 1 to {MAX_CHANNELS_PER_FRAME} event types")));
    }
    if channels.iter().any(|c| c.is_empty() || c.len() > MAX_TYPE_NAME) {
        return Err(invalid(format!("event type names are 1 to {MAX_TYPE_NAME} bytes")));
    }
    Ok(channels.into_iter().map(SubscriptionTarget::EventType).collect())
}

impl Codec for Orbnet {
    fn kind(&self) -> DialectKind {
        DialectKind::Orbnet
    }

    fn frame_kind(&self) -> FrameKind {
        FrameKind::Text
    }

    fn opt_in_event_types(&self) -> bool {
        true
    }

    fn decode(&self, message: &[u8]) -> Result<Command, ClientError> {
        let frame: ClientFrame =
            serde_json::from_slice(message).map_err(|e| invalid(format!("malformed message: {e}")))?;
        match frame.kind.as_str() {
            "subscribe" => {
                let filter = match frame.filters {
                    Some(obj) if !obj.is_empty() => Some(Filter::Fields(FieldFilter::from_json(&obj)?)),
                    _ => None,
                };
                Ok(Command::Subscribe { targets: event_types(frame.channels)?, filter, request_id: None })
            }
            "unsubscribe" => Ok(Command::Unsubscribe { targets: event_types(frame.channels)?, request_id: None }),
            "ping" => Ok(Command::Ping { request_id: None, echo: Bytes::new() }),
            "message" | "typing" | "read_receipt" => {
                let payload = frame.payload.ok_or_else(|| invalid("`payload` is required"))?;
                let chat: ChatPayload = serde_json::from_str(payload.get())
                    .map_err(|_| invalid("`payload.conversationId` (a string) is required"))?;
                if chat.conversation_id.is_empty() {
                    return Err(invalid("`payload.conversationId` must not be empty"));
                }
                Ok(Command::Publish {
                    channel: format!("{CONVERSATION_PREFIX}{}", chat.conversation_id),
                    ephemeral: frame.kind == "typing",
                    kind: frame.kind,
                    payload,
                    request_id: None,
                })
            }
            other => Err(ClientError::new(ErrorKind::UnknownType, format!("unknown message type `{other}`"))),
        }
    }

    fn encode_event(&self, event: &Event, replayed: bool) -> Bytes {
        let mut buf = Vec::with_capacity(event_capacity(&event.payload, event.kind.len() + event.id.len()));
        buf.extend_from_slice(b"{");
        push_key(&mut buf, "type");
        push_str(&mut buf, &event.kind);
        push_field_str(&mut buf, "id", &event.id);
        push_field_str(&mut buf, "timestamp", &iso8601_millis(event.ts));
        buf.push(b',');
        push_key(&mut buf, "payload");
        push_raw(&mut buf, &event.payload);
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
            Reply::Welcome { session_id, now_ms } => {
                push_str(&mut buf, "connection_ack");
                push_field_str(&mut buf, "sessionId", session_id);
                push_field_str(&mut buf, "timestamp", &iso8601_millis(*now_ms));
            }
            Reply::Pong { now_ms, .. } => {
                push_str(&mut buf, "pong");
                push_field_str(&mut buf, "timestamp", &iso8601_millis(*now_ms));
            }
            Reply::Ack { .. } | Reply::Ping { .. } | Reply::SessionRevoked { .. } => return None,
            Reply::Error { error, .. } => {
                push_str(&mut buf, "error");
                push_field_str(&mut buf, "code", error_code(error.kind));
                push_field_str(&mut buf, "message", &error.message);
            }
            Reply::ReplayComplete { count, truncated } => {
                push_str(&mut buf, "replay_complete");
                buf.extend_from_slice(b",\"count\":");
                push_u64(&mut buf, *count as u64);
                buf.extend_from_slice(if *truncated { b",\"truncated\":true" } else { b",\"truncated\":false" });
            }
        }
        buf.push(b'}');
        Some(Bytes::from(buf))
    }

    fn encode_command(&self, command: &Command) -> Result<Vec<Bytes>, ClientError> {
        let names = |targets: &[SubscriptionTarget]| -> Result<Vec<String>, ClientError> {
            targets
                .iter()
                .map(|t| match t {
                    SubscriptionTarget::EventType(name) => Ok(name.clone()),
                    SubscriptionTarget::Channel(c) => {
                        Err(invalid(format!("orbnet subscribes to event types, not `{c}`")))
                    }
                })
                .collect()
        };
        let message = match command {
            Command::Subscribe { targets, filter, .. } => {
                let mut m = json!({"type": "subscribe", "channels": names(targets)?});
                match filter {
                    None => {}
                    Some(Filter::Fields(f)) => m["filters"] = Value::Object(f.to_json()),
                    Some(Filter::Expression(_)) => return Err(invalid("orbnet filters are field maps")),
                }
                m
            }
            Command::Unsubscribe { targets, .. } => json!({"type": "unsubscribe", "channels": names(targets)?}),
            Command::Ping { .. } => json!({"type": "ping"}),
            Command::Publish { kind, payload, .. } => {
                // Written as text so the payload goes out exactly as given (a JSON tree would
                // reorder its keys).
                let mut buf = Vec::with_capacity(event_capacity(payload, kind.len()));
                buf.extend_from_slice(b"{");
                push_key(&mut buf, "type");
                push_str(&mut buf, kind);
                buf.push(b',');
                push_key(&mut buf, "payload");
                push_raw(&mut buf, payload);
                buf.push(b'}');
                return Ok(vec![Bytes::from(buf)]);
            }
            Command::Pong { .. } => return Err(invalid("orbnet heartbeats are WebSocket pings")),
        };
        Ok(vec![to_message(&message)])
    }

    fn decode_server(&self, message: &[u8]) -> Result<ServerMessage, DecodeError> {
        #[derive(Deserialize)]
        struct ServerFrame<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            #[serde(default)]
            id: Option<String>,
            #[serde(default, rename = "sessionId")]
            session_id: Option<String>,
            #[serde(default)]
            code: Option<String>,
            #[serde(default)]
            message: Option<String>,
            #[serde(default)]
            count: Option<u64>,
            #[serde(default)]
            truncated: Option<bool>,
            #[serde(default)]
            replayed: Option<bool>,
        }
        let f: ServerFrame<'_> = serde_json::from_slice(message).map_err(|e| DecodeError(e.to_string()))?;
        Ok(server_message(ServerFields {
            kind: f.kind.into_owned(),
            id: f.id,
            session_id: f.session_id,
            code: f.code,
            message: f.message,
            count: f.count,
            truncated: f.truncated,
            replayed: f.replayed,
        }))
    }
}

fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_message",
        ErrorKind::InvalidCredentials => "unauthorized",
        ErrorKind::InvalidFilter => "invalid_filter",
        ErrorKind::UnknownType => "unknown_type",
        ErrorKind::UnknownChannel => "unknown_channel",
        ErrorKind::Forbidden => "forbidden",
        ErrorKind::NotMember => "not_member",
        ErrorKind::NotSubscribed => "not_subscribed",
        ErrorKind::SubscriptionFailed => "subscription_failed",
        ErrorKind::TooManySubscriptions => "too_many_subscriptions",
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::Internal => "internal_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(replayed: bool) -> Value {
        let ev: Event = serde_json::from_value(json!({
            "id": "evt_abc123def456", "type": "notification", "user": "alice",
            "ts": 1_770_552_000_000u64, "payload": {"title": "Subscription Renewed", "amount": 99.99}
        }))
        .unwrap();
        serde_json::from_slice(&Orbnet.encode_event(&ev, replayed)).unwrap()
    }

    #[test]
    fn a_client_send_goes_out_with_its_payload_as_given() {
        // Found by the dialect_decode fuzz target: the payload went through a JSON tree, which
        // sorted its keys.
        let sent = br#"{"type":"message","payload":{"conversationId":"c1",",text":"hi"}}"#;
        let command = Orbnet.decode(sent).unwrap();
        let encoded = Orbnet.encode_command(&command).unwrap();
        assert_eq!(encoded, [Bytes::from_static(sent)]);
    }

    #[test]
    fn event_has_the_documented_shape() {
        assert_eq!(
            event(false),
            json!({"type": "notification", "id": "evt_abc123def456", "timestamp": "2026-02-08T12:00:00.000Z",
                   "payload": {"title": "Subscription Renewed", "amount": 99.99}})
        );
        assert_eq!(event(true)["replayed"], json!(true));
    }

    #[test]
    fn subscribe_with_filters_decodes_to_event_types() {
        let cmd = Orbnet
            .decode(
                br#"{"type":"subscribe","channels":["threat_detected","alert"],"filters":{"severity":["critical"]}}"#,
            )
            .unwrap();
        let Command::Subscribe { targets, filter, .. } = cmd else { panic!("not a subscribe") };
        assert_eq!(targets[1], SubscriptionTarget::EventType("alert".into()));
        assert!(filter.unwrap().matches(Some(&json!({"severity": "critical"}))));
        let Command::Subscribe { filter, .. } =
            Orbnet.decode(br#"{"type":"subscribe","channels":["alert"],"filters":{}}"#).unwrap()
        else {
            panic!("not a subscribe")
        };
        assert_eq!(filter, None, "empty filters mean no filter");
    }

    #[test]
    fn chat_message_targets_the_conversation() {
        let cmd = Orbnet.decode(br#"{"type":"typing","payload":{"conversationId":"c1"}}"#).unwrap();
        let Command::Publish { channel, ephemeral, kind, .. } = cmd else { panic!("not a publish") };
        assert_eq!((channel.as_str(), ephemeral, kind.as_str()), ("conversation:c1", true, "typing"));
    }

    #[test]
    fn malformed_and_unknown_frames_are_errors_not_panics() {
        for bad in [
            &b"{"[..],
            b"[]",
            b"{\"type\":5}",
            b"\xff\xfe",
            b"{\"type\":\"subscribe\"}",
            b"{\"type\":\"message\"}",
            b"{\"type\":\"subscribe\",\"channels\":[\"\"]}",
        ] {
            assert_eq!(Orbnet.decode(bad).unwrap_err().kind, ErrorKind::InvalidRequest);
        }
        assert_eq!(Orbnet.decode(br#"{"type":"dance"}"#).unwrap_err().kind, ErrorKind::UnknownType);
    }

    #[test]
    fn connection_ack_and_errors() {
        let ack: Value = serde_json::from_slice(
            &Orbnet.encode_reply(&Reply::Welcome { session_id: "sess_1", now_ms: 1_770_552_000_000 }).unwrap(),
        )
        .unwrap();
        assert_eq!(
            ack,
            json!({"type": "connection_ack", "sessionId": "sess_1", "timestamp": "2026-02-08T12:00:00.000Z"})
        );
        let err = ClientError::new(ErrorKind::UnknownChannel, "no \"such\" channel");
        let v: Value =
            serde_json::from_slice(&Orbnet.encode_reply(&Reply::Error { error: &err, request_id: None }).unwrap())
                .unwrap();
        assert_eq!(v, json!({"type": "error", "code": "unknown_channel", "message": "no \"such\" channel"}));
    }
}
