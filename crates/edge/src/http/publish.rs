//! `POST /v1/publish` and `POST /v1/publish/batch`: the back end's way in, through the node's
//! publish service.
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

use super::admin::AdminAuth;
use super::ApiError;
use crate::node::Node;
use crate::publish::{Audience, Outgoing, Publication, PublishError};

/// Most events in one batch.
const MAX_BATCH: usize = 1000;

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

impl PublishRequest {
    fn into_publication(self) -> Result<Publication, ApiError> {
        let audience = match (self.channel, self.user, self.users) {
            (Some(channel), None, None) => Audience::Channel(channel),
            (None, Some(user), None) => Audience::Users(vec![user]),
            (None, None, Some(users)) => Audience::Users(users),
            _ => return Err(ApiError::bad_request("give exactly one of `channel`, `user` or `users`")),
        };
        Ok(Publication {
            audience,
            kind: self.kind,
            payload: self.payload,
            id: self.id,
            persist: self.persist,
            sender: None,
        })
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// `POST /v1/publish`.
pub async fn publish(State(node): State<Arc<Node>>, _: AdminAuth, body: Bytes) -> Result<Response, ApiError> {
    let timer = node.metrics().publish_seconds.with_label_values(&["publish"]).start_timer();
    let request: PublishRequest = parse(&body)?;
    let publisher = node.publisher();
    let mut out = Outgoing::default();
    let id = publisher.prepare(request.into_publication()?, &mut out)?;
    let positions = publisher.send(out).await.map_err(ApiError::unavailable)?;
    node.metrics().published.inc();
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
    let timer = node.metrics().publish_seconds.with_label_values(&["batch"]).start_timer();
    let batch: Batch = parse(&body)?;
    if batch.events.is_empty() || batch.events.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!("`events` must hold 1 to {MAX_BATCH} events")));
    }
    let n = batch.events.len();
    let publisher = node.publisher();
    let mut out = Outgoing::default();
    let mut ids = Vec::with_capacity(n);
    // Where each event's ingest entries start among the positions `send` returns.
    let mut starts = Vec::with_capacity(n + 1);
    for (i, req) in batch.events.into_iter().enumerate() {
        let at = |e: ApiError| ApiError::bad_request(format!("events[{i}]: {}", e.message));
        let publication = req.into_publication().map_err(at)?;
        starts.push(out.persisted());
        ids.push(publisher.prepare(publication, &mut out).map_err(|e| at(e.into()))?);
    }
    starts.push(out.persisted());
    let positions = publisher.send(out).await.map_err(ApiError::unavailable)?;
    node.metrics().published.inc_by(n as u64);
    timer.observe_duration();
    if positions.is_empty() {
        return Ok((StatusCode::OK, Json(json!({ "ids": ids }))).into_response());
    }
    let per_event: Vec<&[String]> = starts.windows(2).map(|w| &positions[w[0]..w[1]]).collect();
    Ok((StatusCode::OK, Json(json!({ "ids": ids, "stream_ids": per_event }))).into_response())
}
