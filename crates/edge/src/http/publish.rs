//! `POST /v1/publish` and `POST /v1/publish/batch`: the back end's way in.
//!
//! An event is accepted only once the broker has taken it: if shared state is unreachable the
//! caller gets `503` and knows to retry, never a `200` for an event that was dropped.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::Event;

use super::admin::AdminAuth;
use super::ApiError;
use crate::endpoint::{channel_topic, user_topic};
use crate::ids::event_id;
use crate::node::Node;
use crate::persistence::{ingest_log, shard_for, INGEST_WAKE_TOPIC};

/// Most events in one batch.
const MAX_BATCH: usize = 1000;
/// Most users one event may address.
const MAX_USERS: usize = 10_000;
/// Longest name (channel, user, type, id).
const MAX_NAME: usize = 256;

/// One event as a back end publishes it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    users: Option<Vec<String>>,
    #[serde(rename = "type")]
    kind: String,
    payload: Box<RawValue>,
    #[serde(default)]
    id: Option<String>,
    /// Whether to keep the event for replay (user-addressed events only); by default the
    /// types listed in `persistence.types` are kept.
    #[serde(default)]
    persist: Option<bool>,
}

fn check_name(what: &str, s: &str) -> Result<(), ApiError> {
    if s.is_empty() || s.len() > MAX_NAME || s.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "`{what}` must be 1 to {MAX_NAME} characters without control characters"
        )));
    }
    Ok(())
}

/// What one accepted request becomes: live messages to publish now, and entries for the
/// ingest log (persistent events, published by the worker once stored).
#[derive(Default)]
struct Outgoing {
    live: Vec<(String, bytes::Bytes)>,
    ingest: Vec<(String, bytes::Bytes)>,
}

impl Outgoing {
    /// Appends the ingest entries (one round trip; a user's events keep their order) and publishes
    /// the live messages; returns the ingest positions. Nothing is acknowledged unless the
    /// broker took it.
    async fn send(mut self, node: &Node) -> Result<Vec<String>, ApiError> {
        let retention = node.config.persistence.retention;
        let ids = node.broker.append_many(&self.ingest, retention).await.map_err(ApiError::unavailable)?;
        let positions: Vec<String> = ids.iter().map(ToString::to_string).collect();
        if !positions.is_empty() {
            // Wake the workers, wherever they run, in the same round trip as the live events.
            self.live.push((INGEST_WAKE_TOPIC.to_owned(), bytes::Bytes::new()));
        }
        node.broker.publish_many(&self.live).await.map_err(ApiError::unavailable)?;
        Ok(positions)
    }
}

/// Validates a request and turns it into broker messages; returns the event id.
fn prepare(node: &Node, req: PublishRequest, out: &mut Outgoing) -> Result<String, ApiError> {
    check_name("type", &req.kind)?;
    if let Some(id) = &req.id {
        check_name("id", id)?;
    }
    let targets =
        usize::from(req.channel.is_some()) + usize::from(req.user.is_some()) + usize::from(req.users.is_some());
    if targets != 1 {
        return Err(ApiError::bad_request("give exactly one of `channel`, `user` or `users`"));
    }
    let mut event = Event {
        id: req.id.unwrap_or_else(event_id),
        kind: req.kind,
        channel: None,
        user: None,
        ts: now_millis(),
        payload: req.payload,
        sender: None,
        sid: None,
    };
    let encode =
        |e: &Event| serde_json::to_vec(e).map(bytes::Bytes::from).map_err(|e| ApiError::bad_request(e.to_string()));
    if let Some(channel) = req.channel {
        check_name("channel", &channel)?;
        let topic = channel_topic(&channel);
        event.channel = Some(channel);
        out.live.push((topic, encode(&event)?));
    } else {
        let persistence = &node.config.persistence;
        let persist = req.persist.unwrap_or_else(|| persistence.types.contains(&event.kind));
        let users = req.users.or(req.user.map(|u| vec![u])).unwrap_or_default();
        if users.is_empty() || users.len() > MAX_USERS {
            return Err(ApiError::bad_request(format!("`users` must list 1 to {MAX_USERS} users")));
        }
        for user in users {
            check_name("user", &user)?;
            let target = if persist {
                (ingest_log(shard_for(&user, persistence.shards)), &mut out.ingest)
            } else {
                (user_topic(&user), &mut out.live)
            };
            event.user = Some(user);
            target.1.push((target.0, encode(&event)?));
        }
    }
    Ok(event.id)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// `POST /v1/publish`.
pub async fn publish(State(node): State<Arc<Node>>, _: AdminAuth, body: Bytes) -> Result<Response, ApiError> {
    let timer = node.metrics.publish_seconds.with_label_values(&["publish"]).start_timer();
    let mut out = Outgoing::default();
    let id = prepare(&node, parse(&body)?, &mut out)?;
    let positions = out.send(&node).await?;
    node.metrics.published.inc();
    timer.observe_duration();
    let body = if positions.is_empty() { json!({ "id": id }) } else { json!({ "id": id, "stream_ids": positions }) };
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `POST /v1/publish/batch`: `{"events": [...]}`, all validated before any is published.
pub async fn publish_batch(State(node): State<Arc<Node>>, _: AdminAuth, body: Bytes) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch {
        events: Vec<PublishRequest>,
    }
    let timer = node.metrics.publish_seconds.with_label_values(&["batch"]).start_timer();
    let batch: Batch = parse(&body)?;
    if batch.events.is_empty() || batch.events.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!("`events` must hold 1 to {MAX_BATCH} events")));
    }
    let n = batch.events.len();
    let mut out = Outgoing::default();
    let mut ids = Vec::with_capacity(n);
    for (i, req) in batch.events.into_iter().enumerate() {
        let id =
            prepare(&node, req, &mut out).map_err(|e| ApiError::bad_request(format!("events[{i}]: {}", e.message)))?;
        ids.push(id);
    }
    out.send(&node).await?;
    node.metrics.published.inc_by(n as u64);
    timer.observe_duration();
    Ok((StatusCode::OK, Json(json!({ "ids": ids }))).into_response())
}
