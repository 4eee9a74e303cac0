//! Presence over real sockets: a member of a channel is listed online while a connection of
//! theirs to a presence-enabled endpoint is open.

use reqwest::Method;
use serde_json::{json, Value};
use switchboard_testkit::{test_config, TestNode, WAIT};

async fn online(node: &TestNode, channel: &str) -> Value {
    let resp = node.admin(Method::GET, &format!("/v1/presence/{channel}")).send().await.expect("request");
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.expect("JSON")["online"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_members_are_listed_online_while_connected() {
    let node = TestNode::start(test_config(|c| c.endpoint_mut("/ws").expect("/ws").presence.enabled = true)).await;
    for user in ["alice", "bob"] {
        node.add_member("conversation:c1", user).await;
    }
    assert_eq!(online(&node, "conversation:c1").await, json!([]));
    let mut alice = node.connect_user("/ws", "alice").await;
    alice.barrier().await;
    assert_eq!(online(&node, "conversation:c1").await, json!(["alice"]));
    let mut carol = node.connect_user("/ws", "carol").await;
    carol.barrier().await;
    assert_eq!(online(&node, "conversation:c1").await, json!(["alice"]), "only members are listed");
    alice.close().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while online(&node, "conversation:c1").await != json!([]) {
        assert!(tokio::time::Instant::now() < deadline, "alice still online after closing");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(node.metric("switchboard_presence_changes_total{to=\"offline\"}").await, 1.0);
}
