//! Sessions without sockets: a node on the in-process broker, connections writing to a
//! recording sink, and commands fed in as the connection task would.

use std::sync::Arc;

use serde_json::{json, Value};
use switchboard_protocol::CloseReason;

use super::*;
use crate::config::Config;
use crate::connection::testing::{connection_of, default_config, Recorder};
use crate::connection::ClosePlan;
use crate::control::ControlMessage;
use crate::node::Node;
use crate::publish::{Audience, Outgoing, Publication};

struct Harness {
    node: Arc<Node>,
    next_id: u64,
}

struct Client {
    session: Session,
    conn: Arc<ConnHandle>,
    socket: Arc<Recorder>,
}

impl Harness {
    async fn new(edit: impl FnOnce(&mut Config)) -> Harness {
        let mut config = default_config();
        edit(&mut config);
        let node = Node::embedded(config).expect("node");
        node.join_cluster().await.expect("control topic");
        Harness { node, next_id: 1 }
    }

    fn user(sub: &str, extra: Value) -> Arc<Principal> {
        let mut claims = json!({"sub": sub});
        claims.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        Arc::new(Principal::User(serde_json::from_value(claims).expect("claims")))
    }

    /// A started session of `principal` on `path`.
    async fn connect(&mut self, path: &str, principal: Arc<Principal>) -> Result<Client, CloseReason> {
        let endpoint = self.node.endpoints().iter().find(|e| e.path() == path).expect("endpoint").clone();
        let (conn, socket) = connection_of(self.next_id, endpoint.clone(), principal.clone());
        self.next_id += 1;
        conn.update_subscriptions(|s| *s = Session::initial_subscriptions(&endpoint));
        let mut session = Session::new(self.node.sessions().clone(), conn.clone(), principal, None);
        session.start().await?;
        Ok(Client { session, conn, socket })
    }

    async fn publish(&self, audience: Audience, kind: &str, payload: Value) {
        let publisher = self.node.publisher();
        let mut out = Outgoing::default();
        let publication = Publication {
            audience,
            kind: kind.into(),
            payload: serde_json::value::to_raw_value(&payload).expect("json"),
            id: None,
            persist: Some(false),
            sender: None,
            echo: false,
            binary: false,
            traceparent: None,
        };
        publisher.prepare(publication, &mut out).expect("valid");
        publisher.send(out).await.expect("sent");
    }
}

impl Client {
    async fn send(&mut self, message: Value) {
        self.session.handle(message.to_string().as_bytes(), true).await;
    }

    fn received(&self) -> Vec<Value> {
        self.socket.take_json()
    }
}

#[tokio::test]
async fn a_basic_client_subscribes_receives_and_leaves_nothing_behind() {
    let mut h = Harness::new(|_| {}).await;
    let mut alice = h.connect("/ws", Harness::user("alice", json!({}))).await.expect("admitted");
    assert!(alice.received().is_empty(), "basic sends no greeting");
    alice.send(json!({"type": "subscribe", "data": {"channel": "status"}})).await;
    assert!(alice.received().is_empty(), "basic acknowledges nothing");
    assert!(alice.session.is_subscribed());
    h.publish(Audience::Channel("status".into()), "status_update", json!({"n": 1})).await;
    h.publish(Audience::Channel("status:other".into()), "status_update", json!({"n": 2})).await;
    h.publish(Audience::Users(vec!["alice".into()]), "notification", json!({"n": 3})).await;
    let got = alice.received();
    assert_eq!(got.iter().map(|m| m["data"]["n"].clone()).collect::<Vec<_>>(), [json!(1), json!(3)]);
    assert_eq!(got[0]["channel"], "status");

    alice.send(json!({"type": "unsubscribe", "data": {"channel": "status"}})).await;
    h.publish(Audience::Channel("status".into()), "status_update", json!({"n": 4})).await;
    assert!(alice.received().is_empty(), "unsubscribed");
    alice.session.finish().await;
    assert!(!h.node.has_local_subscribers("u:alice") && !h.node.has_local_subscribers("c:status"));
}

#[tokio::test]
async fn refused_subscriptions_get_the_dialects_error_and_change_nothing() {
    let mut h = Harness::new(|c| c.endpoint_mut("/ws").expect("/ws").limits.max_subscriptions = 2).await;
    let mut bob = h.connect("/ws", Harness::user("bob", json!({}))).await.expect("admitted");
    let code = |m: &Value| m["data"]["code"].as_str().unwrap_or_default().to_owned();
    bob.send(json!({"type": "subscribe", "data": {"channel": "nope"}})).await;
    bob.send(json!({"type": "subscribe", "data": {"channel": "conversation:c1"}})).await;
    bob.send(json!({"type": "fly"})).await;
    let errors: Vec<String> = bob.received().iter().map(code).collect();
    assert_eq!(errors, ["subscription_failed", "unauthorized", "invalid_request"]);
    bob.session.handle(b"\x01\x02", false).await;
    assert_eq!(code(&bob.received()[0]), "invalid_request", "binary frames on a text dialect");
    for channel in ["status", "status:a"] {
        bob.send(json!({"type": "subscribe", "data": {"channel": channel}})).await;
    }
    bob.send(json!({"type": "subscribe", "data": {"channel": "status:b"}})).await;
    assert_eq!(bob.received().iter().map(code).collect::<Vec<_>>(), ["subscription_failed"], "a third is too many");
    bob.send(json!({"type": "subscribe", "data": {"channel": "status"}})).await;
    assert!(bob.received().is_empty(), "subscribing again to the same channel is not a new subscription");
    assert!(!h.node.has_local_subscribers("c:status:b") && !h.node.has_local_subscribers("c:nope"));
}

#[tokio::test]
async fn an_orbnet_client_receives_only_the_types_it_chose_filtered_as_asked() {
    let mut h = Harness::new(|_| {}).await;
    let mut carol = h.connect("/ws/chat", Harness::user("carol", json!({}))).await.expect("admitted");
    assert_eq!(carol.received()[0]["type"], "connection_ack");
    let to_carol = || Audience::Users(vec!["carol".into()]);
    h.publish(to_carol(), "message", json!({"n": 1})).await;
    assert!(carol.received().is_empty(), "nothing before the client picks types");
    carol.send(json!({"type": "subscribe", "channels": ["message"], "filters": {"urgent": true}})).await;
    carol.send(json!({"type": "subscribe", "channels": ["typing"]})).await;
    h.publish(to_carol(), "message", json!({"n": 2, "urgent": false})).await;
    h.publish(to_carol(), "message", json!({"n": 3, "urgent": true})).await;
    h.publish(to_carol(), "typing", json!({"n": 4})).await;
    h.publish(to_carol(), "read_receipt", json!({"n": 5})).await;
    let got: Vec<Value> = carol.received().iter().map(|m| m["payload"]["n"].clone()).collect();
    assert_eq!(got, [json!(3), json!(4)]);
    carol.send(json!({"type": "subscribe", "channels": ["threat_detected"]})).await;
    assert_eq!(carol.received()[0]["code"], "unknown_channel");
}

#[tokio::test]
async fn pings_are_answered_and_pongs_count_as_liveness() {
    let mut h = Harness::new(|_| {}).await;
    let mut dave = h.connect("/ws", Harness::user("dave", json!({}))).await.expect("admitted");
    dave.send(json!({"type": "ping", "data": {}})).await;
    assert_eq!(dave.received(), [json!({"type": "pong", "data": {}})]);
    let before = dave.conn.last_pong_ms();
    dave.session.execute(Command::Pong { request_id: Some("ping_1".into()) }).await;
    assert!(dave.conn.last_pong_ms() > before);
}

#[tokio::test]
async fn quotas_admit_up_to_the_limit_and_a_finished_session_frees_its_slot() {
    let mut h = Harness::new(|c| c.endpoint_mut("/ws/chat").expect("chat").limits.max_connections_per_user = 1).await;
    let mut first = h.connect("/ws/chat", Harness::user("erin", json!({}))).await.expect("admitted");
    let second = h.connect("/ws/chat", Harness::user("erin", json!({}))).await;
    assert_eq!(second.err(), Some(CloseReason::ConnectionLimit));
    first.session.finish().await;
    assert!(h.connect("/ws/chat", Harness::user("erin", json!({}))).await.is_ok(), "the slot is free again");
}

#[tokio::test]
async fn a_removed_member_stops_receiving_the_channel_unless_the_token_grants_it() {
    let mut h = Harness::new(|_| {}).await;
    let membership = h.node.membership().clone();
    membership.add("conversation:c1", "frank").await.expect("added");
    membership.add("conversation:c1", "gina").await.expect("added");
    let mut frank = h.connect("/ws", Harness::user("frank", json!({}))).await.expect("admitted");
    let by_claim = Harness::user("gina", json!({"channels": ["conversation:*"]}));
    let mut gina = h.connect("/ws", by_claim).await.expect("admitted");
    for c in [&mut frank, &mut gina] {
        c.send(json!({"type": "subscribe", "data": {"channel": "conversation:c1"}})).await;
        assert!(c.received().is_empty(), "subscribed");
    }
    for user in ["frank", "gina"] {
        membership.remove("conversation:c1", user).await.expect("removed");
        let removed = ControlMessage::MemberRemoved { channel: "conversation:c1".into(), user: user.into() };
        removed.broadcast(h.node.broker()).await.expect("broadcast");
    }
    h.publish(Audience::Channel("conversation:c1".into()), "chat_message", json!({"n": 1})).await;
    assert!(frank.received().is_empty(), "frank's subscription ended with his membership");
    assert_eq!(gina.received().len(), 1, "gina's token grants the channel by pattern");
    // Frank may subscribe again once he is a member again.
    membership.add("conversation:c1", "frank").await.expect("added");
    frank.send(json!({"type": "subscribe", "data": {"channel": "conversation:c1"}})).await;
    h.publish(Audience::Channel("conversation:c1".into()), "chat_message", json!({"n": 2})).await;
    assert_eq!(frank.received().len(), 1);
}

#[tokio::test]
async fn a_revoked_session_is_told_why_and_closed() {
    let mut h = Harness::new(|_| {}).await;
    let one = h.connect("/ws", Harness::user("hana", json!({"sid": "s1"}))).await.expect("admitted");
    let two = h.connect("/ws", Harness::user("hana", json!({"sid": "s2"}))).await.expect("admitted");
    let revoke = ControlMessage::Revoke { user: None, session: Some("s1".into()), reason: "logout_all".into() };
    revoke.broadcast(h.node.broker()).await.expect("broadcast");
    assert!(
        matches!(one.conn.close_plan(), Some(ClosePlan::Server(CloseReason::SessionRevoked, text)) if text.contains("logout_all"))
    );
    assert!(!two.conn.is_closing(), "another session of the same user is untouched");
    let all = ControlMessage::Revoke { user: Some("hana".into()), session: None, reason: "banned".into() };
    all.broadcast(h.node.broker()).await.expect("broadcast");
    assert!(two.conn.is_closing());
}

#[tokio::test]
async fn a_connection_task_fits_a_512_byte_task_cell() {
    // Tokio keeps each task in a 128-byte-aligned cell of its state plus 112 bytes of header,
    // scheduler and trailer: state of 400 bytes or less is a 512-byte cell, one byte more a
    // 640-byte one, for every open connection. (It was 1,280 before the state was trimmed.)
    let h = Harness::new(|_| {}).await;
    let endpoint = h.node.endpoints().iter().find(|e| e.path() == "/ws/notifications").expect("endpoint").clone();
    let principal = Harness::user("alice", json!({}));
    let (conn, _) = connection_of(1, endpoint, principal.clone());
    let session = Session::new(h.node.sessions().clone(), conn.clone(), principal, None);
    let bytes = crate::connection::task_state_bytes(h.node.conns(), conn, session).await;
    assert!(bytes <= 400, "a connection task's state grew to {bytes} bytes: past a 512-byte task cell");
}
