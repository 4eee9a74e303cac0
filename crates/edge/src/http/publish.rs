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
    /// Whether to keep the event for replay; user-addressed events are kept by default once
    /// the persistence worker is configured.
    #[serde(default)]
    #[allow(dead_code)]
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

/// Validates a request and turns it into broker messages; returns the event id.
fn prepare(req: PublishRequest, out: &mut Vec<(String, bytes::Bytes)>) -> Result<String, ApiError> {
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
    };
    let encode =
        |e: &Event| serde_json::to_vec(e).map(bytes::Bytes::from).map_err(|e| ApiError::bad_request(e.to_string()));
    if let Some(channel) = req.channel {
        check_name("channel", &channel)?;
        let topic = channel_topic(&channel);
        event.channel = Some(channel);
        out.push((topic, encode(&event)?));
    } else {
        let users = req.users.or(req.user.map(|u| vec![u])).unwrap_or_default();
        if users.is_empty() || users.len() > MAX_USERS {
            return Err(ApiError::bad_request(format!("`users` must list 1 to {MAX_USERS} users")));
        }
        for user in users {
            check_name("user", &user)?;
            let topic = user_topic(&user);
            event.user = Some(user);
            out.push((topic, encode(&event)?));
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
    let mut messages = Vec::with_capacity(1);
    let id = prepare(parse(&body)?, &mut messages)?;
    node.broker.publish_many(&messages).await.map_err(ApiError::unavailable)?;
    node.metrics.published.inc();
    timer.observe_duration();
    Ok((StatusCode::OK, Json(json!({ "id": id }))).into_response())
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
    let mut messages = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for (i, req) in batch.events.into_iter().enumerate() {
        let id =
            prepare(req, &mut messages).map_err(|e| ApiError::bad_request(format!("events[{i}]: {}", e.message)))?;
        ids.push(id);
    }
    node.broker.publish_many(&messages).await.map_err(ApiError::unavailable)?;
    node.metrics.published.inc_by(n as u64);
    timer.observe_duration();
    Ok((StatusCode::OK, Json(json!({ "ids": ids }))).into_response())
}
