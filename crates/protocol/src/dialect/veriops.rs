//! `veriops`: project and task events over a request/acknowledge envelope.
//!
//! Every message both ways is `{"type", "request_id", "sent_at", "payload"}`. Client requests:
//! `subscribe` `{"channel", "filters"?}`, `unsubscribe` `{"channel"}`, `publish` `{"channel",
//! "data"}`, `ping`; and `pong` answering the server's `ping`. Each request gets an `ack` with
//! its `request_id`: `{"status":"ok"}`, or `{"status":"error","error":{"code","message"}}` when it
//! failed. Events are `{"type":"event","id","sent_at","payload":{"event_type","channel","data"}}`
//! (`sender_id` added for what a client or presence sent, stamped by the server). The server
//! sends `ping` with a `request_id` every heartbeat interval; the client's `pong` echoes it.

use std::borrow::Cow;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::json::{event_capacity, invalid, push_field_str, push_key, push_raw, push_str};
use super::{Codec, DecodeError, DialectKind, FrameKind, HeartbeatStyle};
use crate::close::CloseReason;
use crate::command::{Command, Reply, ServerMessage, SubscriptionTarget};
use crate::error::{ClientError, ErrorKind};
use crate::event::Event;
use crate::filter::{FieldFilter, Filter};
use crate::timefmt::{iso8601_millis, now_millis};

/// Longest channel name a client may send.
const MAX_CHANNEL: usize = 128;
/// Longest `request_id` a client may send (it is echoed back).
const MAX_REQUEST_ID: usize = 128;
/// The type a client's `publish` has while the server checks it (`publish.types`); the
/// receivers see the channel as its event type.
pub const CLIENT_MESSAGE_TYPE: &str = "message";
/// The event type, and the channel, of presence announcements.
pub const PRESENCE: &str = "presence";

/// The veriops codec.
#[derive(Debug, Clone, Copy, Default)]
pub struct Veriops;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default)]
    request_id: Option<String>,
    #[serde(default)]
    payload: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct ChannelPayload {
    channel: String,
    #[serde(default)]
    filters: Option<Map<String, Value>>,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

fn channel_payload(payload: Option<&RawValue>) -> Result<ChannelPayload, ClientError> {
    let required = || invalid("`payload.channel` (a string) is required");
    let p: ChannelPayload = serde_json::from_str(payload.ok_or_else(required)?.get()).map_err(|_| required())?;
    if p.channel.is_empty() || p.channel.len() > MAX_CHANNEL {
        return Err(invalid(format!("`payload.channel` must be 1 to {MAX_CHANNEL} bytes")));
    }
    Ok(p)
}

fn request_id(id: Option<String>) -> Result<Option<String>, ClientError> {
    match id {
        Some(id) if id.len() > MAX_REQUEST_ID => {
            Err(invalid(format!("`request_id` is at most {MAX_REQUEST_ID} bytes")))
        }
        id => Ok(id),
    }
}

/// `{"type":T,"request_id":R,"sent_at":now` — the start of every non-event server message.
fn start(buf: &mut Vec<u8>, kind: &str, request_id: Option<&str>) {
    buf.extend_from_slice(b"{");
    push_key(buf, "type");
    push_str(buf, kind);
    if let Some(id) = request_id {
        push_field_str(buf, "request_id", id);
    }
    push_field_str(buf, "sent_at", &iso8601_millis(now_millis()));
}

fn error_code(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "invalid_request",
        ErrorKind::InvalidCredentials => "unauthorized",
        ErrorKind::InvalidFilter => "invalid_filter",
        ErrorKind::UnknownType => "unknown_type",
        ErrorKind::UnknownChannel => "channel_not_found",
        ErrorKind::Forbidden => "forbidden",
        ErrorKind::NotMember => "not_member",
        ErrorKind::NotSubscribed => "not_subscribed",
        ErrorKind::SubscriptionFailed => "subscription_failed",
        ErrorKind::TooManySubscriptions => "subscription_limit",
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::Internal => "internal_error",
    }
}

impl Codec for Veriops {
    fn kind(&self) -> DialectKind {
        DialectKind::Veriops
    }

    fn frame_kind(&self) -> FrameKind {
        FrameKind::Text
    }

    fn heartbeat(&self) -> HeartbeatStyle {
        HeartbeatStyle::DialectPing
    }

    /// The document's codes: 4001 authentication, 4002 subscription limit, 4008 rate limited
    /// (also the connection limit: the same "wait before reconnecting"), 4009 message too large.
    fn close_code(&self, reason: CloseReason) -> u16 {
        match reason {
            CloseReason::TooManySubscriptions => 4002,
            CloseReason::RateLimited | CloseReason::ConnectionLimit => 4008,
            CloseReason::MessageTooBig => 4009,
            other => other.standard_code(),
        }
    }

    /// The 51st subscription and a rate-limited publish end the connection (4002, 4008) after
    /// their failed `ack`, as the document's close codes say.
    fn closes_after(&self, error: ErrorKind) -> Option<CloseReason> {
        match error {
            ErrorKind::TooManySubscriptions => Some(CloseReason::TooManySubscriptions),
            ErrorKind::RateLimited => Some(CloseReason::RateLimited),
            _ => None,
        }
    }

    fn request_id_of(&self, message: &[u8]) -> Option<String> {
        #[derive(Deserialize)]
        struct Id {
            #[serde(default)]
            request_id: Option<String>,
        }
        let id = serde_json::from_slice::<Id>(message).ok()?.request_id?;
        (id.len() <= MAX_REQUEST_ID).then_some(id)
    }

    fn decode(&self, message: &[u8]) -> Result<Command, ClientError> {
        let frame: Envelope<'_> =
            serde_json::from_slice(message).map_err(|e| invalid(format!("malformed message: {e}")))?;
        let request_id = request_id(frame.request_id)?;
        match frame.kind.as_ref() {
            "subscribe" => {
                let p = channel_payload(frame.payload.as_deref())?;
                let filter = match p.filters {
                    Some(obj) if !obj.is_empty() => Some(Filter::Fields(FieldFilter::from_json(&obj)?)),
                    _ => None,
                };
                Ok(Command::Subscribe { targets: vec![SubscriptionTarget::Channel(p.channel)], filter, request_id })
            }
            "unsubscribe" => {
                let p = channel_payload(frame.payload.as_deref())?;
                Ok(Command::Unsubscribe { targets: vec![SubscriptionTarget::Channel(p.channel)], request_id })
            }
            "publish" => {
                let p = channel_payload(frame.payload.as_deref())?;
                let data = p.data.ok_or_else(|| invalid("`payload.data` is required"))?;
                Ok(Command::Publish {
                    channel: p.channel,
                    kind: CLIENT_MESSAGE_TYPE.to_owned(),
                    payload: data,
                    ephemeral: false,
                    request_id,
                })
            }
            "ping" => Ok(Command::Ping { request_id, echo: Bytes::new() }),
            "pong" => Ok(Command::Pong { request_id }),
            other => Err(ClientError::new(
                ErrorKind::UnknownType,
                format!("unknown message type `{other}`; send subscribe, unsubscribe, publish, ping or pong"),
            )),
        }
    }

    /// What a client publishes reaches others with the channel as its event type, as the
    /// server's own events on a channel have (`presence`, `project.updated`).
    fn client_event(
        &self,
        kind: &str,
        channel: &str,
        payload: &RawValue,
        sender: &super::ClientSender<'_>,
    ) -> Result<(String, Box<RawValue>), ClientError> {
        let _ = (kind, sender);
        Ok((channel.to_owned(), payload.to_owned()))
    }

    fn presence_event(
        &self,
        user: &str,
        online: bool,
        status_text: Option<&str>,
    ) -> Option<(&'static str, Box<RawValue>)> {
        let mut data = json!({"user_id": user, "status": if online { "online" } else { "offline" }});
        if let Some(text) = status_text {
            data["status_text"] = json!(text);
        }
        Some((PRESENCE, RawValue::from_string(data.to_string()).ok()?))
    }

    fn encode_event(&self, event: &Event, _replayed: bool) -> Bytes {
        let channel = event.channel.as_deref().unwrap_or(&event.kind);
        let mut buf = Vec::with_capacity(event_capacity(&event.payload, event.kind.len() + channel.len() + 96));
        buf.extend_from_slice(b"{");
        push_key(&mut buf, "type");
        push_str(&mut buf, "event");
        push_field_str(&mut buf, "id", &event.id);
        push_field_str(&mut buf, "sent_at", &iso8601_millis(event.ts));
        buf.push(b',');
        push_key(&mut buf, "payload");
        buf.push(b'{');
        push_key(&mut buf, "event_type");
        push_str(&mut buf, &event.kind);
        push_field_str(&mut buf, "channel", channel);
        if let Some(sender) = &event.sender {
            push_field_str(&mut buf, "sender_id", sender);
        }
        buf.push(b',');
        push_key(&mut buf, "data");
        push_raw(&mut buf, &event.payload);
        buf.extend_from_slice(b"}}");
        Bytes::from(buf)
    }

    fn encode_reply(&self, reply: &Reply<'_>) -> Option<Bytes> {
        let mut buf = Vec::with_capacity(160);
        match reply {
            Reply::Ack { request_id } => {
                start(&mut buf, "ack", *request_id);
                buf.extend_from_slice(br#","payload":{"status":"ok"}"#);
            }
            Reply::Pong { request_id, now_ms, .. } => {
                start(&mut buf, "ack", *request_id);
                buf.extend_from_slice(br#","payload":{"status":"ok","#);
                push_key(&mut buf, "server_time");
                push_str(&mut buf, &iso8601_millis(*now_ms));
                buf.push(b'}');
            }
            Reply::Error { error, request_id } => {
                start(&mut buf, "ack", *request_id);
                buf.extend_from_slice(br#","payload":{"status":"error","error":{"#);
                push_key(&mut buf, "code");
                push_str(&mut buf, error_code(error.kind));
                push_field_str(&mut buf, "message", &error.message);
                buf.extend_from_slice(b"}}");
            }
            Reply::Ping { request_id } => start(&mut buf, "ping", Some(request_id)),
            Reply::Welcome { .. } | Reply::SessionRevoked { .. } | Reply::ReplayComplete { .. } => return None,
        }
        buf.push(b'}');
        Some(Bytes::from(buf))
    }

    fn encode_command(&self, command: &Command) -> Result<Vec<Bytes>, ClientError> {
        let channel = |targets: &[SubscriptionTarget]| match targets {
            [SubscriptionTarget::Channel(c)] => Ok(c.clone()),
            _ => Err(invalid("veriops names one channel per request")),
        };
        let with_id = |mut m: Value, id: &Option<String>| {
            if let Some(id) = id {
                m["request_id"] = json!(id);
            }
            m
        };
        let message = match command {
            Command::Subscribe { targets, filter, request_id } => {
                let mut payload = json!({"channel": channel(targets)?});
                match filter {
                    None => {}
                    Some(Filter::Fields(f)) => payload["filters"] = Value::Object(f.to_json()),
                    Some(Filter::Expression(_)) => return Err(invalid("veriops filters are field maps")),
                }
                with_id(json!({"type": "subscribe", "payload": payload}), request_id)
            }
            Command::Unsubscribe { targets, request_id } => {
                with_id(json!({"type": "unsubscribe", "payload": {"channel": channel(targets)?}}), request_id)
            }
            Command::Ping { request_id, .. } => with_id(json!({"type": "ping"}), request_id),
            Command::Pong { request_id } => with_id(json!({"type": "pong"}), request_id),
            Command::Publish { channel, payload, request_id, .. } => {
                // Written as text so the data goes out exactly as given.
                let mut buf = Vec::with_capacity(event_capacity(payload, channel.len()));
                buf.extend_from_slice(br#"{"type":"publish""#);
                if let Some(id) = request_id {
                    push_field_str(&mut buf, "request_id", id);
                }
                buf.extend_from_slice(br#","payload":{"#);
                push_key(&mut buf, "channel");
                push_str(&mut buf, channel);
                buf.push(b',');
                push_key(&mut buf, "data");
                push_raw(&mut buf, payload);
                buf.extend_from_slice(b"}}");
                return Ok(vec![Bytes::from(buf)]);
            }
        };
        Ok(vec![Bytes::from(message.to_string())])
    }

    fn answer_to_ping(&self, message: &[u8]) -> Option<Bytes> {
        // The server writes `type` first; anything else is not a ping and costs no parse.
        if !message.starts_with(br#"{"type":"ping""#) {
            return None;
        }
        let ServerMessage::Ping { request_id } = self.decode_server(message).ok()? else { return None };
        self.encode_command(&Command::Pong { request_id }).ok()?.into_iter().next()
    }

    fn decode_server(&self, message: &[u8]) -> Result<ServerMessage, DecodeError> {
        #[derive(Deserialize)]
        struct ServerFrame<'a> {
            #[serde(rename = "type", borrow)]
            kind: Cow<'a, str>,
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            request_id: Option<String>,
            #[serde(default)]
            payload: Option<Payload>,
        }
        #[derive(Deserialize, Default)]
        struct Payload {
            #[serde(default)]
            event_type: Option<String>,
            #[serde(default)]
            status: Option<String>,
            #[serde(default)]
            server_time: Option<String>,
            #[serde(default)]
            error: Option<ErrorBody>,
        }
        #[derive(Deserialize)]
        struct ErrorBody {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let f: ServerFrame<'_> = serde_json::from_slice(message).map_err(|e| DecodeError(e.to_string()))?;
        let payload = f.payload.unwrap_or_default();
        Ok(match f.kind.as_ref() {
            "event" => ServerMessage::Event {
                id: f.id.unwrap_or_default(),
                kind: payload.event_type.unwrap_or_default(),
                replayed: false,
            },
            "ack" => match (payload.status.as_deref(), payload.error, payload.server_time) {
                (Some("error"), error, _) => {
                    let ErrorBody { code, message } =
                        error.unwrap_or(ErrorBody { code: String::new(), message: String::new() });
                    ServerMessage::Error { code, message, request_id: f.request_id }
                }
                (_, _, Some(_)) => ServerMessage::Pong,
                _ => ServerMessage::Ack { request_id: f.request_id },
            },
            "ping" => ServerMessage::Ping { request_id: f.request_id },
            other => ServerMessage::Other(other.to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(r: Reply<'_>) -> Value {
        let mut v: Value = serde_json::from_slice(&Veriops.encode_reply(&r).expect("a frame")).expect("JSON");
        let sent_at = v.as_object_mut().and_then(|o| o.remove("sent_at")).expect("every message has sent_at");
        assert!(sent_at.as_str().is_some_and(|s| s.ends_with('Z') && s.len() == 24), "{sent_at}");
        v
    }

    #[test]
    fn the_documents_subscribe_decodes_with_its_filter_and_request_id() {
        let seed = br#"{"type":"subscribe","request_id":"req_001","sent_at":"2026-03-19T14:30:00Z",
            "payload":{"channel":"project.updated","filters":{"project_id":"prj_abc123"}}}"#;
        let Command::Subscribe { targets, filter, request_id } = Veriops.decode(seed).unwrap() else {
            panic!("not a subscribe")
        };
        assert_eq!(targets, [SubscriptionTarget::Channel("project.updated".into())]);
        assert_eq!(request_id.as_deref(), Some("req_001"));
        let payload = json!({"project_id": "prj_abc123"});
        assert!(filter.expect("a filter").matches(Some(&payload)));
        // The complete client example subscribes without filters.
        let Command::Subscribe { filter, .. } = Veriops
            .decode(br#"{"type":"subscribe","request_id":"req_1","payload":{"channel":"task.completed"}}"#)
            .unwrap()
        else {
            panic!("not a subscribe")
        };
        assert_eq!(filter, None);
    }

    #[test]
    fn pong_publish_and_bad_requests() {
        assert_eq!(
            Veriops.decode(br#"{"type":"pong","request_id":"ping_7"}"#).unwrap(),
            Command::Pong { request_id: Some("ping_7".into()) }
        );
        let Command::Publish { channel, kind, payload, .. } = Veriops
            .decode(br#"{"type":"publish","request_id":"r","payload":{"channel":"presence","data":{"a":1}}}"#)
            .unwrap()
        else {
            panic!("not a publish")
        };
        assert_eq!((channel.as_str(), kind.as_str(), payload.get()), ("presence", "message", r#"{"a":1}"#));
        for bad in [
            &br#"{"type":"subscribe","request_id":"r"}"#[..],
            br#"{"type":"publish","payload":{"channel":"x"}}"#,
            br#"{"type":"subscribe","payload":{"channel":""}}"#,
            br#"{"type":"subscribe","request_id":7,"payload":{"channel":"x"}}"#,
            b"nope",
        ] {
            assert_eq!(
                Veriops.decode(bad).unwrap_err().kind,
                ErrorKind::InvalidRequest,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(Veriops.decode(br#"{"type":"event"}"#).unwrap_err().kind, ErrorKind::UnknownType);
        assert_eq!(Veriops.request_id_of(br#"{"type":"subscribe","request_id":"req_9"}"#).as_deref(), Some("req_9"));
    }

    #[test]
    fn acks_errors_and_pings_have_the_envelope() {
        assert_eq!(
            reply(Reply::Ack { request_id: Some("req_001") }),
            json!({"type": "ack", "request_id": "req_001", "payload": {"status": "ok"}})
        );
        let error = ClientError::new(ErrorKind::TooManySubscriptions, "at most 50 subscriptions per connection");
        assert_eq!(
            reply(Reply::Error { error: &error, request_id: Some("req_051") }),
            json!({"type": "ack", "request_id": "req_051", "payload": {"status": "error",
                "error": {"code": "subscription_limit", "message": "at most 50 subscriptions per connection"}}})
        );
        assert_eq!(reply(Reply::Ping { request_id: "ping_1" }), json!({"type": "ping", "request_id": "ping_1"}));
        let pong = reply(Reply::Pong { request_id: Some("req_2"), echo: b"", now_ms: 1_770_552_000_000 });
        assert_eq!(pong["payload"]["server_time"], "2026-02-08T12:00:00.000Z");
        assert_eq!(Veriops.encode_reply(&Reply::Welcome { session_id: "s", now_ms: 0 }), None);
    }

    #[test]
    fn events_carry_type_channel_data_and_the_server_stamped_sender() {
        let mut ev: Event = serde_json::from_value(json!({
            "id": "evt_1", "type": "project.updated", "channel": "project.updated", "ts": 1_770_552_000_000u64,
            "payload": {"project_id": "prj_abc123", "status": "active"}
        }))
        .unwrap();
        let v: Value = serde_json::from_slice(&Veriops.encode_event(&ev, false)).unwrap();
        assert_eq!(
            v,
            json!({"type": "event", "id": "evt_1", "sent_at": "2026-02-08T12:00:00.000Z", "payload": {
                "event_type": "project.updated", "channel": "project.updated",
                "data": {"project_id": "prj_abc123", "status": "active"}}})
        );
        ev.sender = Some("u\"1".into());
        let v: Value = serde_json::from_slice(&Veriops.encode_event(&ev, false)).unwrap();
        assert_eq!(v["payload"]["sender_id"], "u\"1");
    }

    #[test]
    fn the_documents_close_codes() {
        for (reason, code) in [
            (CloseReason::AuthFailed, 4001),
            (CloseReason::AuthExpired, 4001),
            (CloseReason::TooManySubscriptions, 4002),
            (CloseReason::RateLimited, 4008),
            (CloseReason::MessageTooBig, 4009),
            (CloseReason::PolicyViolation, 1008),
            (CloseReason::GoingAway, 1001),
        ] {
            assert_eq!(Veriops.close_code(reason), code, "{reason:?}");
        }
    }

    #[test]
    fn presence_names_the_user_and_their_status() {
        let (kind, data) = Veriops.presence_event("alice", false, None).expect("veriops announces presence");
        assert_eq!(kind, "presence");
        assert_eq!(
            serde_json::from_str::<Value>(data.get()).unwrap(),
            json!({"user_id": "alice", "status": "offline"})
        );
    }
}
