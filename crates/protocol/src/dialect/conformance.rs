//! The behavioural suite every codec passes, run over [`DialectKind::ALL`]: what the server
//! encodes, the client side decodes as the same thing; what a client encodes, the server side
//! decodes as the command it meant; nothing a peer sends makes a codec panic.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::{Codec, DialectKind};
use crate::command::{Command, Reply, ServerMessage, SubscriptionTarget};
use crate::error::{ClientError, ErrorKind};
use crate::event::Event;
use crate::filter::{Expression, FieldFilter, Filter};

fn codecs() -> impl Iterator<Item = &'static dyn Codec> {
    DialectKind::ALL.into_iter().map(DialectKind::codec)
}

fn sample_event(replayed_sid: Option<&str>) -> Event {
    Event {
        id: "evt_01HZX".into(),
        kind: "notification".into(),
        channel: None,
        user: Some("alice".into()),
        ts: 1_770_552_000_000,
        // The payload carries the id too, as notifications do in dialects without an envelope.
        payload: RawValue::from_string(r#"{"id":"evt_01HZX","title":"Hi \"there\"","n":[1,2]}"#.into())
            .expect("valid JSON"),
        sender: None,
        echo: false,
        binary: false,
        position: replayed_sid.map(str::to_owned),
        prev: None,
        traceparent: None,
    }
}

/// Commands a client of some dialect may send; each codec encodes those it can express.
fn sample_commands() -> Vec<Command> {
    let filter =
        FieldFilter::from_json(serde_json::json!({"severity": ["critical", "high"]}).as_object().expect("an object"))
            .expect("a valid filter");
    vec![
        Command::Subscribe {
            targets: vec![SubscriptionTarget::EventType("notification".into())],
            filter: None,
            request_id: None,
        },
        Command::Subscribe {
            targets: vec![SubscriptionTarget::EventType("threat_detected".into())],
            filter: Some(Filter::Fields(filter)),
            request_id: None,
        },
        Command::Subscribe {
            targets: vec![SubscriptionTarget::Channel("conversation:conv-123".into())],
            filter: None,
            request_id: None,
        },
        Command::Subscribe {
            targets: vec![SubscriptionTarget::Channel("alerts.eu".into())],
            filter: Some(Filter::Expression(Expression::parse("score >= 80").expect("a valid expression"))),
            request_id: None,
        },
        Command::Unsubscribe { targets: vec![SubscriptionTarget::Channel("status".into())], request_id: None },
        Command::Unsubscribe { targets: vec![SubscriptionTarget::EventType("notification".into())], request_id: None },
        Command::Ping { request_id: None, echo: Bytes::new() },
    ]
}

#[test]
fn what_a_client_encodes_the_server_decodes_as_the_same_command() {
    for codec in codecs() {
        let mut expressible = 0;
        for command in sample_commands() {
            let Ok(messages) = codec.encode_command(&command) else { continue };
            expressible += 1;
            assert_eq!(messages.len(), 1, "{:?}: one target, one message", codec.kind());
            let decoded = codec.decode(&messages[0]).unwrap_or_else(|e| panic!("{:?}: {e:?}", codec.kind()));
            assert_eq!(decoded, command, "{:?} round trip", codec.kind());
        }
        assert!(expressible >= 3, "{:?} can express subscribe, unsubscribe and ping", codec.kind());
    }
}

/// Dialects whose documents have no way to mark a replayed event (the event looks live).
const NO_REPLAY_MARK: [DialectKind; 3] = [DialectKind::Ocvr, DialectKind::Brl, DialectKind::Veriops];
/// Dialects without an event type on the wire: clients tell events by their topic.
const TOPIC_AS_KIND: [DialectKind; 1] = [DialectKind::Brl];

#[test]
fn events_decode_on_the_client_with_their_id_and_replay_mark() {
    for codec in codecs() {
        for replayed in [false, true] {
            let expect_mark = replayed && !NO_REPLAY_MARK.contains(&codec.kind());
            let frame = codec.encode_event(&sample_event(None), replayed);
            let decoded = codec.decode_server(&frame).unwrap_or_else(|e| panic!("{:?}: {e}", codec.kind()));
            let kind = if TOPIC_AS_KIND.contains(&codec.kind()) { "alice" } else { "notification" };
            assert_eq!(
                decoded,
                ServerMessage::Event { id: "evt_01HZX".into(), kind: kind.into(), replayed: expect_mark },
                "{:?}",
                codec.kind()
            );
        }
    }
}

#[test]
fn replies_decode_on_the_client_as_what_they_are() {
    for codec in codecs() {
        let kind = codec.kind();
        let decode = |reply: Reply<'_>| codec.encode_reply(&reply).map(|b| codec.decode_server(&b).expect("decodes"));
        if let Some(welcome) = decode(Reply::Welcome { session_id: "sess_1", now_ms: 0 }) {
            assert!(matches!(welcome, ServerMessage::Welcome { .. }), "{kind:?}: {welcome:?}");
        }
        let pong = decode(Reply::Pong { request_id: None, echo: b"", now_ms: 1 });
        assert_eq!(pong, Some(ServerMessage::Pong), "{kind:?}: every dialect answers a client ping");
        let error = ClientError::new(ErrorKind::UnknownChannel, "no such channel");
        match decode(Reply::Error { error: &error, request_id: None }) {
            Some(ServerMessage::Error { message, code, .. }) => {
                assert_eq!(message, "no such channel", "{kind:?}");
                assert!(!code.is_empty(), "{kind:?}");
            }
            other => panic!("{kind:?}: an error reply decoded as {other:?}"),
        }
        if let Some(done) = decode(Reply::ReplayComplete { count: 3, truncated: true }) {
            assert_eq!(done, ServerMessage::ReplayComplete { count: 3, truncated: true }, "{kind:?}");
        }
    }
}

#[test]
fn every_error_kind_has_a_code_in_every_dialect() {
    for codec in codecs() {
        for kind in ErrorKind::ALL {
            let error = ClientError::new(kind, "m");
            let frame = codec.encode_reply(&Reply::Error { error: &error, request_id: None });
            assert!(frame.is_some(), "{:?} cannot report {kind:?}", codec.kind());
        }
    }
}

#[test]
fn nothing_a_peer_sends_makes_a_codec_panic() {
    let inputs: Vec<&[u8]> = vec![
        b"",
        b"\0",
        b"\xff\xfe\xfd",
        b"{",
        b"[]",
        b"null",
        b"{\"type\":null}",
        b"{\"type\":\"subscribe\",\"channels\":null,\"data\":7}",
        b"{\"type\":\"subscribe\",\"filters\":{\"a\":{\"b\":1}},\"channels\":[\"x\"]}",
        b"{\"type\":\"message\",\"payload\":{\"conversationId\":[]}}",
        b"\x01\x00\x05topic\x00\x00",
        b"\x10\xff",
    ];
    let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
    for codec in codecs() {
        for input in inputs.iter().copied().chain([deep.as_bytes()]) {
            let _ = codec.decode(input);
            let _ = codec.decode_server(input);
        }
    }
}
