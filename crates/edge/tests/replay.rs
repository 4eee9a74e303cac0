//! The notifications endpoint's promise: missed notifications are delivered as a batch on
//! reconnection (up to 100 events, last 24 hours), before live events, with no gap and no
//! reordering.

use std::sync::Arc;

use serde_json::{json, Value};
use switchboard_broker::clock::OffsetClock;
use switchboard_testkit::{test_config, TestNode, WsClient};

async fn subscribed(node: &TestNode, query: &str) -> (WsClient, Vec<Value>) {
    let mut c = node.connect(&format!("/ws/notifications?token={}{query}", node.token("alice")), &[]).await.unwrap();
    assert_eq!(c.json().await["type"], "connection_ack");
    let mut replayed = Vec::new();
    loop {
        let m = c.json().await;
        if m["type"] == "replay_complete" {
            replayed.push(m);
            break;
        }
        replayed.push(m);
    }
    c.send_json(json!({"type": "subscribe", "channels": ["notification"]})).await;
    c.barrier().await;
    (c, replayed)
}

async fn publish_n(node: &TestNode, from: u32, to: u32) -> Vec<String> {
    let mut ids = Vec::new();
    for n in from..to {
        ids.push(node.publish(json!({"user": "alice", "type": "notification", "payload": {"n": n}})).await);
    }
    ids
}

/// Waits until the persistence worker has stored `n` events in total.
async fn persisted(node: &TestNode, n: u64) {
    node.await_metric("switchboard_persisted_total", n as f64).await;
}

/// Receives live events until `n` arrives (so everything before it has been written).
async fn receive_through(c: &mut WsClient, n: u32) {
    loop {
        if c.json().await["payload"]["n"] == n {
            return;
        }
    }
}

fn numbers(batch: &[Value]) -> Vec<u64> {
    batch.iter().filter(|m| m["type"] == "notification").map(|m| m["payload"]["n"].as_u64().unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missed_notifications_are_replayed_in_order_before_live_ones() {
    let node = TestNode::default().await;
    let (mut first, replayed) = subscribed(&node, "").await;
    assert_eq!(replayed, [json!({"type": "replay_complete", "count": 0, "truncated": false})]);
    publish_n(&node, 0, 2).await;
    receive_through(&mut first, 1).await;
    first.close().await;

    // Wait until the first connection's cursor is saved (its close was processed).
    let deadline = tokio::time::Instant::now() + switchboard_testkit::WAIT;
    while node.node.has_local_subscribers("u:alice") {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let ids = publish_n(&node, 2, 7).await;
    persisted(&node, 7).await;
    let (mut second, replayed) = subscribed(&node, "").await;
    assert_eq!(numbers(&replayed), [2, 3, 4, 5, 6], "exactly the five missed, oldest first");
    for (m, id) in replayed.iter().zip(&ids) {
        assert_eq!((&m["id"], &m["replayed"]), (&json!(id), &json!(true)));
    }
    assert_eq!(replayed.last().unwrap(), &json!({"type": "replay_complete", "count": 5, "truncated": false}));
    publish_n(&node, 7, 8).await;
    let live = second.json().await;
    assert_eq!(live["payload"]["n"], 7);
    assert!(live.get("replayed").is_none(), "live events are not marked replayed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_right_after_that_event() {
    let node = TestNode::default().await;
    let (first, _) = subscribed(&node, "").await;
    let ids = publish_n(&node, 0, 6).await;
    persisted(&node, 6).await;
    drop(first);
    let (_, replayed) = subscribed(&node, &format!("&last_event_id={}", ids[2])).await;
    assert_eq!(numbers(&replayed), [3, 4, 5]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_the_limit_missed_replays_the_newest_hundred_and_says_truncated() {
    let node = TestNode::default().await;
    let (first, _) = subscribed(&node, "").await;
    let ids = publish_n(&node, 0, 1).await;
    drop(first);
    let events: Vec<Value> =
        (1..131).map(|n| json!({"user": "alice", "type": "notification", "payload": {"n": n}})).collect();
    let resp =
        node.admin(reqwest::Method::POST, "/v1/publish/batch").json(&json!({"events": events})).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    persisted(&node, 131).await;
    let (_, replayed) = subscribed(&node, &format!("&last_event_id={}", ids[0])).await;
    assert_eq!(numbers(&replayed), (31..131).collect::<Vec<u64>>(), "the newest 100, in order");
    assert_eq!(replayed.last().unwrap(), &json!({"type": "replay_complete", "count": 100, "truncated": true}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_older_than_the_retention_are_not_replayed() {
    let clock = Arc::new(OffsetClock::default());
    let node = TestNode::start_with_clock(test_config(|_| {}), clock.clone()).await;
    let (first, _) = subscribed(&node, "").await;
    // Resume by log position (the `stream_ids` of the publish answer): the id index expires
    // with the retention too.
    let resp = node
        .admin(reqwest::Method::POST, "/v1/publish")
        .json(&json!({"user": "alice", "type": "notification", "payload": {"n": 0}}))
        .send()
        .await
        .unwrap();
    let answer: Value = resp.json().await.unwrap();
    let position = answer["stream_ids"][0].as_str().expect("a persisted event has a stream id").to_owned();
    publish_n(&node, 1, 4).await;
    persisted(&node, 4).await;
    drop(first);
    clock.advance(25 * 3600 * 1000);
    publish_n(&node, 4, 6).await;
    persisted(&node, 6).await;
    let (_, replayed) = subscribed(&node, &format!("&last_event_id={position}")).await;
    assert_eq!(numbers(&replayed), [4, 5], "events from 25 h ago are gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_connection_gets_what_was_persisted_for_the_user_before_it_ever_connected() {
    let node = TestNode::default().await;
    let ids = publish_n(&node, 0, 3).await;
    persisted(&node, 3).await;
    let (mut c, replayed) = subscribed(&node, "").await;
    assert_eq!(numbers(&replayed), [0, 1, 2], "the user's persisted notifications, oldest first");
    let replayed_ids: Vec<&Value> = replayed.iter().filter(|m| m["type"] == "notification").map(|m| &m["id"]).collect();
    assert_eq!(replayed_ids, ids.iter().map(|id| json!(id)).collect::<Vec<_>>().iter().collect::<Vec<_>>());
    publish_n(&node, 3, 4).await;
    assert_eq!(c.json().await["payload"]["n"], 3, "then live ones");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bogus_or_future_last_event_id_neither_fails_nor_poisons_later_replays() {
    let node = TestNode::default().await;
    publish_n(&node, 0, 2).await;
    persisted(&node, 2).await;
    for bogus in ["18446744073709551615-18446744073709551615", "99999999999999-0", "1700000000", "nope"] {
        let (c, replayed) = subscribed(&node, &format!("&last_event_id={bogus}")).await;
        let done = replayed.last().expect("replay_complete");
        assert_eq!(done["type"], "replay_complete", "{bogus}");
        drop(c);
        node.await_no_local_subscribers("u:alice").await;
    }
    // Whatever was given before, the next connection still gets what it missed since.
    publish_n(&node, 2, 3).await;
    persisted(&node, 3).await;
    let (_, replayed) = subscribed(&node, "").await;
    assert_eq!(numbers(&replayed), [2], "the saved position is real, not the bogus one");
}
