//! `ocvr`: chat, presence, typing and notifications, connected with single-use tickets.
//!
//! Every frame is `{"type": T, "data": {...}}`. Client frames: `heartbeat` (answered with
//! `heartbeat_ack` and the server time in unix seconds), `subscribe` / `unsubscribe`
//! `{"channel_id"}`, `typing` `{"channel_id"}`. Server frames: events as `{"type": T, "data":
//! payload}` (`message_create`, `message_update`, `message_delete`, `notification`,
//! `presence_update`, `typing_start`), `session_revoked` `{"reason"}`, and `error` `{"code",
//! "message"}` with the documented codes (`INVALID_TICKET`, `NOT_SUBSCRIBED`,
//! `CHANNEL_NOT_FOUND`, `NOT_MEMBER`). The client keeps the connection alive; the server only
//! watches for silence.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::json::{
    data_string, event_capacity, invalid, push_field_str, push_key, push_raw, push_str, push_u64, server_message,
    to_message, ServerFields, TypeDataFrame,
};
use super::{ClientSender, Codec, DecodeError, DialectKind, FrameKind, HeartbeatStyle};
use crate::command::{Command, Reply, ServerMessage, SubscriptionTarget};
use crate::error::{ClientError, ErrorKind};
use crate::event::Event;

/// Longest channel id a client may send.
const MAX_CHANNEL_ID: usize = 128;

/// The ocvr codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ocvr;

fn channel_id(data: Option<Box<RawValue>>) -> Result<String, ClientError> {
    data_string(data.as_deref(), "channel_id", MAX_CHANNEL_ID)
}

/// A user id as the API shows it: a number when the id is one, else a string.
pub fn user_id_value(user: &str) -> serde_json::Value {
    match user.parse::<u64>() {
        Ok(n) if n.to_string() == user => json!(n),
        _ => json!(user),
    }
}

impl Codec for Ocvr {
    fn kind(&self) -> DialectKind {
        DialectKind::Ocvr
    }

    fn frame_kind(&self) -> FrameKind {
        FrameKind::Text
    }

    fn heartbeat(&self) -> HeartbeatStyle {
        HeartbeatStyle::ClientHeartbeat
    }

    fn decode(&self, message: &[u8]) -> Result<Command, ClientError> {
        let frame: TypeDataFrame =
            serde_json::from_slice(message).map_err(|e| invalid(format!("malformed message: {e}")))?;
        match frame.kind.as_str() {
            "heartbeat" => Ok(Command::Ping { request_id: None, echo: Bytes::new() }),
            "subscribe" => Ok(Command::Subscribe {
                targets: vec![SubscriptionTarget::Channel(channel_id(frame.data)?)],
                filter: None,
                request_id: None,
            }),
            "unsubscribe" => Ok(Command::Unsubscribe {
                targets: vec![SubscriptionTarget::Channel(channel_id(frame.data)?)],
                request_id: None,
            }),
            "typing" => {
                let channel = channel_id(frame.data)?;
                Ok(Command::Publish {
                    payload: RawValue::from_string(json!({"channel_id": channel}).to_string())
                        .map_err(|e| invalid(e.to_string()))?,
                    channel,
                    kind: "typing".into(),
                    ephemeral: true,
                    request_id: None,
                })
            }
            other => Err(ClientError::new(ErrorKind::UnknownType, format!("unknown message type `{other}`"))),
        }
    }

    fn client_event(
        &self,
        kind: &str,
        channel: &str,
        payload: &RawValue,
        sender: &ClientSender<'_>,
    ) -> Result<(String, Box<RawValue>), ClientError> {
        match kind {
            // Others see who is typing, as the server knows them.
            "typing" => {
                let data = json!({
                    "channel_id": channel,
                    "user_id": user_id_value(sender.user),
                    "display_name": sender.display_name.unwrap_or(sender.user),
                });
                let raw = RawValue::from_string(data.to_string()).map_err(|e| invalid(e.to_string()))?;
                Ok(("typing_start".into(), raw))
            }
            other => Ok((other.to_owned(), payload.to_owned())),
        }
    }

    fn presence_event(
        &self,
        user: &str,
        online: bool,
        status_text: Option<&str>,
    ) -> Option<(&'static str, Box<RawValue>)> {
        let mut data = json!({"user_id": user_id_value(user), "presence": if online { "online" } else { "offline" }});
        if let Some(text) = status_text {
            data["status_text"] = json!(text);
        }
        Some(("presence_update", RawValue::from_string(data.to_string()).ok()?))
    }

    fn encode_event(&self, event: &Event, _replayed: bool) -> Bytes {
        let mut buf = Vec::with_capacity(event_capacity(&event.payload, event.kind.len()));
        buf.extend_from_slice(b"{");
        push_key(&mut buf, "type");
        push_str(&mut buf, &event.kind);
        buf.push(b',');
        push_key(&mut buf, "data");
        push_raw(&mut buf, &event.payload);
        buf.push(b'}');
        Bytes::from(buf)
    }

    fn encode_reply(&self, reply: &Reply<'_>) -> Option<Bytes> {
        let mut buf = Vec::with_capacity(128);
        buf.extend_from_slice(b"{\"type\":");
        match reply {
            Reply::Pong { now_ms, .. } => {
                buf.extend_from_slice(b"\"heartbeat_ack\",\"data\":{\"server_time\":");
                push_u64(&mut buf, now_ms / 1000);
                buf.push(b'}');
            }
            Reply::Error { error, .. } => {
                buf.extend_from_slice(b"\"error\",\"data\":{");
                push_key(&mut buf, "code");
                push_str(&mut buf, error_code(error.kind));
                push_field_str(&mut buf, "message", &error.message);
                buf.push(b'}');
            }
            Reply::SessionRevoked { reason } => {
                buf.extend_from_slice(b"\"session_revoked\",\"data\":{");
                push_key(&mut buf, "reason");
                push_str(&mut buf, reason);
                buf.push(b'}');
            }
            Reply::Welcome { .. } | Reply::Ack { .. } | Reply::Ping { .. } | Reply::ReplayComplete { .. } => {
                return None
            }
        }
        buf.push(b'}');
        Some(Bytes::from(buf))
    }

    fn encode_command(&self, command: &Command) -> Result<Vec<Bytes>, ClientError> {
        let channel = |targets: &[SubscriptionTarget]| match targets {
            [SubscriptionTarget::Channel(c)] => Ok(c.clone()),
            _ => Err(invalid("ocvr subscribes to one channel per message")),
        };
        let message = match command {
            Command::Ping { .. } => json!({"type": "heartbeat"}),
            Command::Subscribe { filter: Some(_), .. } => return Err(invalid("ocvr has no subscription filters")),
            Command::Subscribe { targets, .. } => {
                json!({"type": "subscribe", "data": {"channel_id": channel(targets)?}})
            }
            Command::Unsubscribe { targets, .. } => {
                json!({"type": "unsubscribe", "data": {"channel_id": channel(targets)?}})
            }
            Command::Publish { kind, channel, .. } if kind == "typing" => {
                json!({"type": "typing", "data": {"channel_id": channel}})
            }
            Command::Publish { .. } | Command::Pong { .. } => {
                return Err(invalid("ocvr clients send heartbeats, subscriptions and typing"))
            }
        };
        Ok(vec![to_message(&message)])
    }

    fn decode_server(&self, message: &[u8]) -> Result<ServerMessage, DecodeError> {
        #[derive(Deserialize)]
        struct ServerFrame<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            #[serde(default)]
            data: Option<Data>,
        }
        #[derive(Deserialize, Default)]
        struct Data {
            #[serde(default)]
            id: Option<serde_json::Value>,
            #[serde(default)]
            code: Option<String>,
            #[serde(default)]
            message: Option<serde_json::Value>,
        }
        let f: ServerFrame<'_> = serde_json::from_slice(message).map_err(|e| DecodeError(e.to_string()))?;
        let data = f.data.unwrap_or_default();
        let kind = match f.kind.as_ref() {
            "heartbeat_ack" => return Ok(ServerMessage::Pong),
            "session_revoked" => return Ok(ServerMessage::Other("session_revoked".into())),
            k => k.to_owned(),
        };
        // Events carry no envelope id; a payload `id` (a message's, a notification's) is the
        // one a client deduplicates by.
        let id = data.id.map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        Ok(server_message(ServerFields {
            kind,
            id,
            code: data.code,
            message: data.message.and_then(|m| m.as_str().map(str::to_owned)),
            ..ServerFields::default()
        }))
    }
}

fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidCredentials => "INVALID_TICKET",
        ErrorKind::NotSubscribed => "NOT_SUBSCRIBED",
        ErrorKind::UnknownChannel => "CHANNEL_NOT_FOUND",
        ErrorKind::NotMember | ErrorKind::Forbidden => "NOT_MEMBER",
        ErrorKind::InvalidRequest | ErrorKind::InvalidFilter | ErrorKind::UnknownType => "INVALID_REQUEST",
        ErrorKind::TooManySubscriptions => "TOO_MANY_SUBSCRIPTIONS",
        ErrorKind::RateLimited => "RATE_LIMITED",
        ErrorKind::SubscriptionFailed | ErrorKind::Internal => "INTERNAL_ERROR",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    fn reply(r: Reply<'_>) -> Value {
        serde_json::from_slice(&Ocvr.encode_reply(&r).expect("a frame")).expect("JSON")
    }

    #[test]
    fn heartbeat_is_acknowledged_with_the_server_time_in_seconds() {
        assert!(matches!(Ocvr.decode(br#"{"type":"heartbeat"}"#).unwrap(), Command::Ping { .. }));
        let ack = reply(Reply::Pong { request_id: None, echo: b"", now_ms: 1_703_523_600_999 });
        assert_eq!(ack, json!({"type": "heartbeat_ack", "data": {"server_time": 1_703_523_600u64}}));
    }

    #[test]
    fn subscribe_and_typing_name_a_channel_id() {
        let Command::Subscribe { targets, .. } =
            Ocvr.decode(br#"{"type":"subscribe","data":{"channel_id":"ch_abc123"}}"#).unwrap()
        else {
            panic!("not a subscribe")
        };
        assert_eq!(targets, [SubscriptionTarget::Channel("ch_abc123".into())]);
        let Command::Publish { channel, kind, ephemeral, .. } =
            Ocvr.decode(br#"{"type":"typing","data":{"channel_id":"ch_abc123"}}"#).unwrap()
        else {
            panic!("not a publish")
        };
        assert_eq!((channel.as_str(), kind.as_str(), ephemeral), ("ch_abc123", "typing", true));
        for bad in [&br#"{"type":"subscribe"}"#[..], br#"{"type":"typing","data":{"channel_id":5}}"#, b"nope"] {
            assert_eq!(Ocvr.decode(bad).unwrap_err().kind, ErrorKind::InvalidRequest);
        }
    }

    #[test]
    fn typing_reaches_others_as_typing_start_with_who_types() {
        let payload = RawValue::from_string("{}".into()).unwrap();
        let sender = ClientSender { user: "12345", display_name: Some("TyperName") };
        let (kind, data) = Ocvr.client_event("typing", "ch_abc123", &payload, &sender).unwrap();
        assert_eq!(kind, "typing_start");
        let data: Value = serde_json::from_str(data.get()).unwrap();
        assert_eq!(data, json!({"channel_id": "ch_abc123", "user_id": 12345, "display_name": "TyperName"}));
        let anonymous = ClientSender { user: "alice", display_name: None };
        let (_, data) = Ocvr.client_event("typing", "c", &payload, &anonymous).unwrap();
        assert_eq!(serde_json::from_str::<Value>(data.get()).unwrap()["user_id"], "alice");
    }

    #[test]
    fn events_errors_and_revocation_have_the_documented_shape() {
        let ev: Event = serde_json::from_value(json!({
            "id": "evt_1", "type": "message_create", "channel": "ch_abc123", "ts": 0,
            "payload": {"id": "msg_xyz789", "channel_id": "ch_abc123", "content": "Hello world!"}
        }))
        .unwrap();
        let v: Value = serde_json::from_slice(&Ocvr.encode_event(&ev, false)).unwrap();
        assert_eq!(
            v,
            json!({"type": "message_create", "data": {"id": "msg_xyz789", "channel_id": "ch_abc123", "content": "Hello world!"}})
        );
        let error = ClientError::new(ErrorKind::InvalidCredentials, "WebSocket ticket is invalid or expired");
        assert_eq!(
            reply(Reply::Error { error: &error, request_id: None }),
            json!({"type": "error", "data": {"code": "INVALID_TICKET", "message": "WebSocket ticket is invalid or expired"}})
        );
        for (kind, code) in [
            (ErrorKind::NotSubscribed, "NOT_SUBSCRIBED"),
            (ErrorKind::UnknownChannel, "CHANNEL_NOT_FOUND"),
            (ErrorKind::NotMember, "NOT_MEMBER"),
        ] {
            let error = ClientError::new(kind, "m");
            assert_eq!(reply(Reply::Error { error: &error, request_id: None })["data"]["code"], code);
        }
        assert_eq!(
            reply(Reply::SessionRevoked { reason: "logout_all" }),
            json!({"type": "session_revoked", "data": {"reason": "logout_all"}})
        );
    }

    #[test]
    fn presence_updates_name_the_user_and_their_status_when_set() {
        let (kind, data) = Ocvr.presence_event("12345", true, Some("Playing OCVR")).expect("ocvr announces presence");
        assert_eq!(kind, "presence_update");
        let data: Value = serde_json::from_str(data.get()).unwrap();
        assert_eq!(data, json!({"user_id": 12345, "presence": "online", "status_text": "Playing OCVR"}));
        let (_, data) = Ocvr.presence_event("bob", false, None).expect("ocvr announces presence");
        assert_eq!(
            serde_json::from_str::<Value>(data.get()).unwrap(),
            json!({"user_id": "bob", "presence": "offline"})
        );
    }

    #[test]
    fn numeric_user_ids_are_numbers_and_others_strings() {
        assert_eq!(user_id_value("12345"), json!(12345));
        assert_eq!(user_id_value("007"), json!("007"), "a leading zero is not a number's spelling");
        assert_eq!(user_id_value("user-1"), json!("user-1"));
        assert_eq!(user_id_value("99999999999999999999999"), json!("99999999999999999999999"));
    }
}
