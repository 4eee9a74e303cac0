//! Unit tests of [`ConnHandle`]: ordering, holds and gap-fills of persisted events, output
//! bounds and close plans, on a recording socket.

use bytes::Bytes;
use switchboard_broker::LogId;
use switchboard_protocol::CloseReason;

use super::super::testing::{connection, connection_of, endpoint_with, user};
use super::*;

fn at(ms: u64) -> Option<LogId> {
    Some(LogId { ms, seq: 0 })
}

fn texts(frames: Vec<(u8, Vec<u8>)>) -> Vec<String> {
    frames.into_iter().map(|(_, p)| String::from_utf8(p).expect("text")).collect()
}

#[test]
fn live_events_wait_behind_a_replay_and_what_it_covered_is_not_sent_twice() {
    let (conn, socket) = connection(1, endpoint_with("/ws/notifications", |_| {}));
    conn.begin_hold();
    // Live events arrive while the log is being read: persisted 5 and 6, an ephemeral one.
    assert_eq!(conn.send_event(Bytes::from_static(b"live-5"), at(5), None), SendOutcome::Queued);
    assert_eq!(conn.send_event(Bytes::from_static(b"ephemeral"), None, None), SendOutcome::Queued);
    assert_eq!(conn.send_event(Bytes::from_static(b"live-6"), at(6), None), SendOutcome::Queued);
    assert!(socket.take_frames().is_empty(), "held while replaying");
    // The replay read up to 5.
    conn.send_replayed(Bytes::from_static(b"replay-4"), LogId { ms: 4, seq: 0 });
    conn.send_replayed(Bytes::from_static(b"replay-5"), LogId { ms: 5, seq: 0 });
    conn.send(Bytes::from_static(b"replay_complete"));
    conn.end_hold(0);
    assert_eq!(texts(socket.take_frames()), ["replay-4", "replay-5", "replay_complete", "ephemeral", "live-6"]);
    // After the replay events flow directly, and an old position is a duplicate.
    assert_eq!(conn.send_event(Bytes::from_static(b"live-6-again"), at(6), None), SendOutcome::Duplicate);
    assert_eq!(conn.send_event(Bytes::from_static(b"live-7"), at(7), None), SendOutcome::Queued);
    assert_eq!(texts(socket.take_frames()), ["live-7"]);
    assert_eq!(conn.last_written(), at(7));
}

#[test]
fn a_worker_redoing_a_batch_cannot_double_or_reorder_what_a_connection_got() {
    // A successor redoes a dead worker's uncommitted batch: positions 2..=4 come again,
    // interleaved with ephemeral events and new positions.
    let (conn, socket) = connection(1, endpoint_with("/ws/notifications", |_| {}));
    for ms in 1..=4 {
        assert_eq!(conn.send_event(Bytes::from(format!("e{ms}")), at(ms), None), SendOutcome::Queued);
    }
    let redone = [(2, SendOutcome::Duplicate), (3, SendOutcome::Duplicate), (4, SendOutcome::Duplicate)];
    for (ms, outcome) in redone {
        assert_eq!(conn.send_event(Bytes::from(format!("again{ms}")), at(ms), None), outcome);
    }
    assert_eq!(conn.send_event(Bytes::from_static(b"ephemeral"), None, None), SendOutcome::Queued);
    assert_eq!(conn.send_event(Bytes::from_static(b"e5"), at(5), None), SendOutcome::Queued);
    // An older position arriving late (a stalled worker's publish) is not sent either.
    assert_eq!(conn.send_event(Bytes::from_static(b"late3"), at(3), None), SendOutcome::Duplicate);
    let same_ms_next_seq = Some(LogId { ms: 5, seq: 1 });
    assert_eq!(conn.send_event(Bytes::from_static(b"e5.1"), same_ms_next_seq, None), SendOutcome::Queued);
    assert_eq!(texts(socket.take_frames()), ["e1", "e2", "e3", "e4", "ephemeral", "e5", "e5.1"]);
    assert_eq!(conn.last_written(), same_ms_next_seq);
}

fn ev(name: &'static str) -> Bytes {
    Bytes::from_static(name.as_bytes())
}

/// A connection of user alice: what fills gaps from a log.
fn alices(endpoint: Arc<EndpointRuntime>) -> (Arc<ConnHandle>, Arc<super::super::testing::Recorder>) {
    connection_of(1, endpoint, user("alice", None))
}

#[test]
fn a_live_event_after_a_gap_waits_until_the_missed_ones_came_from_the_log() {
    let (conn, socket) = alices(endpoint_with("/ws/notifications", |_| {}));
    conn.done_through(LogId { ms: 1, seq: 0 });
    assert_eq!(conn.send_event(ev("e2"), at(2), at(1)), SendOutcome::Queued);
    assert!(!conn.take_catch_up_request(), "2 follows 1: no gap");
    // 3 and 4 never arrived live: 5 names 4 as the one before it.
    assert_eq!(conn.send_event(ev("e5"), at(5), at(4)), SendOutcome::Queued);
    assert_eq!(conn.send_event(ev("ephemeral"), None, None), SendOutcome::Queued);
    assert_eq!(texts(socket.take_frames()), ["e2"], "held behind the gap");
    assert!(conn.take_catch_up_request(), "a gap-fill is asked for");
    // The gap-fill: the log after 2 holds 3, 4 and 5.
    let covered = conn.begin_hold();
    assert_eq!((covered, conn.done_until()), (2, at(2)));
    for (name, ms) in [("log-3", 3), ("log-4", 4), ("log-5", 5)] {
        conn.send_replayed(ev(name), LogId { ms, seq: 0 });
    }
    assert_eq!(conn.end_hold(covered), 0, "nothing missing for good");
    assert_eq!(texts(socket.take_frames()), ["log-3", "log-4", "log-5", "ephemeral"]);
    assert!(!conn.is_holding() && !conn.take_catch_up_request());
    assert_eq!(conn.last_written(), at(5));
}

#[test]
fn a_gap_the_log_cannot_fill_is_counted_and_what_follows_still_goes_out() {
    let (conn, socket) = alices(endpoint_with("/ws/notifications", |_| {}));
    conn.done_through(LogId { ms: 2, seq: 0 });
    conn.send_event(ev("e9"), at(9), at(8));
    assert!(conn.take_catch_up_request());
    let covered = conn.begin_hold();
    // The log no longer has 3..8 (more was missed than it keeps): it starts at 9.
    conn.send_replayed(ev("log-9"), LogId { ms: 9, seq: 0 });
    assert_eq!(conn.end_hold(covered), 0, "9 itself closed the gap");
    conn.send_event(ev("e12"), at(12), at(11));
    assert!(conn.take_catch_up_request());
    let covered = conn.begin_hold();
    assert_eq!(conn.end_hold(covered), 1, "the log had nothing after 9: 10 and 11 are gone");
    assert_eq!(texts(socket.take_frames()), ["log-9", "e12"]);
    assert!(!conn.take_catch_up_request(), "no fill is asked for again: it cannot do better");
}

#[test]
fn an_event_that_shows_a_new_gap_during_a_fill_waits_for_the_next_one() {
    let (conn, socket) = alices(endpoint_with("/ws/notifications", |_| {}));
    conn.done_through(LogId { ms: 2, seq: 0 });
    conn.send_event(ev("e5"), at(5), at(4));
    assert!(conn.take_catch_up_request());
    let covered = conn.begin_hold();
    // While the log is read, 7 arrives naming 6, which the read may not have seen.
    conn.send_event(ev("e7"), at(7), at(6));
    for ms in 3..=5 {
        conn.send_replayed(Bytes::from(format!("log-{ms}")), LogId { ms, seq: 0 });
    }
    assert_eq!(conn.end_hold(covered), 0);
    assert_eq!(texts(socket.take_frames()), ["log-3", "log-4", "log-5"]);
    assert!(conn.is_holding() && conn.take_catch_up_request(), "7 is held for another fill");
    let covered = conn.begin_hold();
    for ms in 6..=7 {
        conn.send_replayed(Bytes::from(format!("log-{ms}")), LogId { ms, seq: 0 });
    }
    assert_eq!(conn.end_hold(covered), 0);
    assert_eq!(texts(socket.take_frames()), ["log-6", "log-7"]);
    assert!(!conn.is_holding());
}

#[test]
fn events_not_for_the_connection_count_as_passed_and_endpoints_without_replay_fill_no_gaps() {
    let (conn, socket) = alices(endpoint_with("/ws/notifications", |_| {}));
    conn.done_through(LogId { ms: 2, seq: 0 });
    conn.pass_over(LogId { ms: 3, seq: 0 }, at(2));
    assert_eq!(conn.send_event(ev("e4"), at(4), at(3)), SendOutcome::Queued, "3 went by: no gap");
    // A gap in front of an event that is not for it is filled too (the missed ones may be).
    conn.pass_over(LogId { ms: 7, seq: 0 }, at(6));
    assert!(conn.take_catch_up_request() && conn.is_holding());
    let covered = conn.begin_hold();
    conn.send_replayed(ev("log-5"), LogId { ms: 5, seq: 0 });
    conn.pass_replayed(LogId { ms: 6, seq: 0 });
    conn.pass_replayed(LogId { ms: 7, seq: 0 });
    assert_eq!(conn.end_hold(covered), 0);
    assert_eq!(conn.send_event(ev("e8"), at(8), at(7)), SendOutcome::Queued);
    assert_eq!(texts(socket.take_frames()), ["e4", "log-5", "e8"]);

    let (plain, socket) = alices(endpoint_with("/ws", |_| {}));
    plain.done_through(LogId { ms: 2, seq: 0 });
    assert_eq!(plain.send_event(ev("e9"), at(9), at(8)), SendOutcome::Queued);
    assert!(!plain.take_catch_up_request() && !plain.is_holding(), "no log to fill from");
    assert_eq!(texts(socket.take_frames()), ["e9"]);
}

#[test]
fn a_hold_that_overflows_closes_the_connection_as_a_slow_consumer() {
    let (conn, _socket) = connection(1, endpoint_with("/ws/notifications", |e| e.limits.outbound_queue = 2));
    conn.begin_hold();
    assert_eq!(conn.send_event(Bytes::from_static(b"a"), None, None), SendOutcome::Queued);
    assert_eq!(conn.send_event(Bytes::from_static(b"b"), None, None), SendOutcome::Queued);
    assert_eq!(conn.send_event(Bytes::from_static(b"c"), None, None), SendOutcome::SlowConsumer);
    assert!(matches!(conn.close_plan(), Some(ClosePlan::Server(CloseReason::SlowConsumer, _))));
}

#[test]
fn a_socket_that_takes_nothing_queues_up_to_the_bound_then_closes() {
    let (conn, socket) = connection(1, endpoint_with("/ws", |e| e.limits.outbound_queue = 2));
    socket.set_full(true);
    assert_eq!(conn.send(Bytes::from_static(b"1")), SendOutcome::Queued, "pending, the task is woken");
    assert_eq!(conn.send(Bytes::from_static(b"2")), SendOutcome::Queued);
    assert_eq!(conn.send(Bytes::from_static(b"3")), SendOutcome::Queued);
    assert_eq!(conn.send(Bytes::from_static(b"4")), SendOutcome::SlowConsumer);
    assert!(conn.is_closing());
    socket.set_full(false);
    assert_eq!(conn.flush(), Flush::Idle);
    assert_eq!(texts(socket.take_frames()), ["1", "2", "3"]);
}

#[test]
fn unfiltered_connections_take_the_fast_path_but_keep_its_rules() {
    use serde_json::json;
    use switchboard_protocol::{FieldFilter, Filter};

    let event: Event = serde_json::from_value(json!({"id": "e", "type": "t", "ts": 0, "payload": {"a": 1}})).unwrap();
    let sel = |conn: &ConnHandle, topic: &str| conn.selects(topic, &event, &mut LazyPayload::default());
    let (quiet, _) = connection(1, endpoint_with("/ws", |e| e.user_events = false));
    assert!(!sel(&quiet, "u:alice"), "registered on its user's topic, but the endpoint delivers no user events");
    assert!(sel(&quiet, "c:status"));
    let (conn, _) = connection(2, endpoint_with("/ws", |_| {}));
    assert!(sel(&conn, "u:alice") && sel(&conn, "c:status"));
    let filter = FieldFilter::from_json(json!({"a": 2}).as_object().unwrap()).unwrap();
    conn.update_subscriptions(|s| s.add_channel("c:status".into(), Some(Arc::new(Filter::Fields(filter)))));
    assert!(!sel(&conn, "c:status"), "a filter takes the connection off the fast path");
    assert!(sel(&conn, "u:alice"));
    conn.update_subscriptions(|s| s.remove_channel("c:status"));
    assert!(sel(&conn, "c:status"), "and back on it once no filter is left");
}

#[test]
fn the_first_close_plan_wins() {
    let (conn, _) = connection(1, endpoint_with("/ws", |_| {}));
    conn.close(CloseReason::RateLimited);
    conn.close(CloseReason::Internal);
    conn.close_with(ClosePlan::Silent);
    assert!(matches!(conn.close_plan(), Some(ClosePlan::Server(CloseReason::RateLimited, _))));
}
