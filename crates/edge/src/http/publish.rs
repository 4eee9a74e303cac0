//! `POST /v1/publish` and `POST /v1/publish/batch`: the back end's way in, through the node's
//! publish service.
//!
//! An event is accepted only once the broker has taken it: if shared state is unreachable the
//! caller gets `503` and knows to retry, never a `200` for an event that was dropped.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;

use super::admin::AdminAuth;
use super::ApiError;
use crate::idempotency::Claim;
use crate::node::Node;
use crate::publish::{Audience, Outgoing, Publication, PublishError};
use crate::reach::unreachable;

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
    #[serde(default)]
    payload: Option<Box<RawValue>>,
    /// Raw bytes instead of a JSON payload, base64: binary dialects send them as they are.
    #[serde(default)]
    payload_base64: Option<String>,
    #[serde(default)]
    id: Option<String>,
    /// Whether to keep the event for replay (user-addressed events only); by default the
    /// types listed in `persistence.types` are kept.
    #[serde(default)]
    persist: Option<bool>,
}

impl PublishRequest {
    /// The publication, if it is well formed (`400` otherwise) and some endpoint of `node`
    /// would deliver it (`422` otherwise); `traceparent` is the publishing span's.
    fn into_publication(self, node: &Node, traceparent: Option<String>) -> Result<Publication, ApiError> {
        let audience = match (self.channel, self.user, self.users) {
            (Some(channel), None, None) => Audience::Channel(channel),
            (None, Some(user), None) => Audience::Users(vec![user]),
            (None, None, Some(users)) => Audience::Users(users),
            _ => return Err(ApiError::bad_request("give exactly one of `channel`, `user` or `users`")),
        };
        let (payload, binary) = match (self.payload, self.payload_base64) {
            (Some(payload), None) => {
                if !payload.get().starts_with('{') {
                    return Err(unprocessable("`payload` must be a JSON object".to_owned()));
                }
                (payload, false)
            }
            (None, Some(encoded)) => {
                use base64::Engine;
                if base64::engine::general_purpose::STANDARD.decode(&encoded).is_err() {
                    return Err(ApiError::bad_request("`payload_base64` is not valid base64"));
                }
                let raw =
                    serde_json::value::to_raw_value(&encoded).map_err(|e| ApiError::bad_request(e.to_string()))?;
                (raw, true)
            }
            _ => return Err(ApiError::bad_request("give exactly one of `payload` or `payload_base64`")),
        };
        if let Some(why) = unreachable(node.endpoints(), &audience, &self.kind) {
            return Err(unprocessable(why));
        }
        Ok(Publication {
            audience,
            kind: self.kind,
            payload,
            id: self.id,
            persist: self.persist,
            sender: None,
            echo: false,
            binary,
            traceparent,
        })
    }
}

impl From<PublishError> for ApiError {
    fn from(e: PublishError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

/// The span of a publish request, a child of the caller's `traceparent` header when it sent
/// one; `None` while tracing is off.
fn publish_span(headers: &HeaderMap, name: &'static str) -> Option<switchboard_telemetry::Span> {
    let parent = headers.get(switchboard_telemetry::TRACEPARENT).and_then(|v| v.to_str().ok());
    let mut span = switchboard_telemetry::start(name, switchboard_telemetry::Kind::Server, parent)?;
    span.set("messaging.system", "switchboard");
    Some(span)
}

fn unprocessable(message: String) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unroutable", message)
}

fn parse<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

/// The answer to a published event: its id and, for persistent events, its log positions.
fn answer(id: &str, positions: &[String]) -> serde_json::Value {
    if positions.is_empty() {
        json!({ "id": id })
    } else {
        json!({ "id": id, "stream_ids": positions })
    }
}

fn in_progress(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "publish_in_progress",
        format!("an event with id `{id}` is being published by another request; retry shortly"),
    )
}

/// Stores the answers of published keyed events; a failure is logged, not answered: the events
/// are out, and a retry after the claims' lease would publish them again (at least once).
async fn remember(node: &Node, answers: &[(&str, &serde_json::Value)]) {
    if answers.is_empty() {
        return;
    }
    if let Err(e) = node.publisher().published_ids().complete(answers).await {
        tracing::warn!(error = %e, events = answers.len(), "could not store publish answers; a retry may deliver again");
    }
}

/// `POST /v1/publish`. With an `id`, a repeat within the retention window answers the first
/// publish's answer with `"duplicate": true` and delivers nothing.
pub async fn publish(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let timer = node.metrics().publish_seconds.with_label_values(&["publish"]).start_timer();
    let mut span = publish_span(&headers, "POST /v1/publish");
    let request: PublishRequest = parse(&body)?;
    let keyed = request.id.is_some();
    let publisher = node.publisher();
    let mut out = Outgoing::default();
    let publication = request.into_publication(&node, span.as_ref().map(|s| s.traceparent()))?;
    let publication = publisher.route_members(node.endpoints(), publication).await.map_err(ApiError::unavailable)?;
    let id = publisher.prepare(publication, &mut out)?;
    if keyed {
        match publisher.published_ids().claim(&[&id]).await.map_err(ApiError::unavailable)?.pop() {
            Some(Claim::Done(mut first)) => {
                first["duplicate"] = json!(true);
                return Ok((StatusCode::OK, Json(first)).into_response());
            }
            Some(Claim::InProgress) => return Err(in_progress(&id)),
            Some(Claim::Fresh) | None => {}
        }
    }
    let positions = match publisher.send(out).await {
        Ok(positions) => positions,
        Err(e) => {
            if keyed {
                publisher.published_ids().abandon(&[&id]).await;
            }
            return Err(ApiError::publish_failed(&e));
        }
    };
    node.metrics().published.inc();
    tracing::debug!(id, persisted = positions.len(), "published");
    if let Some(span) = span.as_mut() {
        span.set("switchboard.event_id", id.clone());
        span.set("switchboard.persisted", !positions.is_empty());
    }
    let body = answer(&id, &positions);
    if keyed {
        remember(&node, &[(&id, &body)]).await;
    }
    timer.observe_duration();
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `POST /v1/publish/batch`: `{"events": [...]}`, all validated before any is published (an
/// error names the event's index). Keyed events already published are not published again:
/// their first answers come back in place and their indexes in `duplicates`.
pub async fn publish_batch(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Batch<'a> {
        #[serde(borrow)]
        events: Vec<&'a RawValue>,
    }
    let timer = node.metrics().publish_seconds.with_label_values(&["batch"]).start_timer();
    let batch: Batch =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if batch.events.is_empty() || batch.events.len() > MAX_BATCH {
        return Err(ApiError::bad_request(format!("`events` must hold 1 to {MAX_BATCH} events")));
    }
    let n = batch.events.len();
    let mut span = publish_span(&headers, "POST /v1/publish/batch");
    if let Some(span) = span.as_mut() {
        span.set("switchboard.events", n as i64);
    }
    let traceparent = span.as_ref().map(|s| s.traceparent());
    let publisher = node.publisher();
    let (mut ids, mut outs, mut keyed) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::new());
    let mut keyed_at = std::collections::HashMap::new();
    for (i, raw) in batch.events.iter().enumerate() {
        let at = |message: &str| ApiError::bad_request(format!("events[{i}]: {message}"));
        let request: PublishRequest = serde_json::from_str(raw.get()).map_err(|e| at(&e.to_string()))?;
        let is_keyed = request.id.is_some();
        let mut out = Outgoing::default();
        let publication = request
            .into_publication(&node, traceparent.clone())
            .map_err(|e| ApiError { message: format!("events[{i}]: {}", e.message), ..e })?;
        let publication =
            publisher.route_members(node.endpoints(), publication).await.map_err(ApiError::unavailable)?;
        let id = publisher.prepare(publication, &mut out);
        let id = id.map_err(|e| at(&e.to_string()))?;
        if is_keyed {
            if let Some(first) = keyed_at.insert(id.clone(), i) {
                return Err(at(&format!("id `{id}` repeats events[{first}]")));
            }
            keyed.push(i);
        }
        ids.push(id);
        outs.push(out);
    }
    let keyed_ids: Vec<&str> = keyed.iter().map(|i| ids[*i].as_str()).collect();
    let claims = if keyed.is_empty() {
        Vec::new()
    } else {
        publisher.published_ids().claim(&keyed_ids).await.map_err(ApiError::unavailable)?
    };
    let fresh: Vec<&str> =
        keyed_ids.iter().zip(&claims).filter(|(_, c)| **c == Claim::Fresh).map(|(id, _)| *id).collect();
    if let Some((id, _)) = keyed_ids.iter().zip(&claims).find(|(_, c)| **c == Claim::InProgress) {
        publisher.published_ids().abandon(&fresh).await;
        return Err(in_progress(id));
    }
    // The first answers of events published before, by index.
    let mut earlier: std::collections::HashMap<usize, serde_json::Value> = keyed
        .iter()
        .zip(claims)
        .filter_map(|(i, c)| match c {
            Claim::Done(first) => Some((*i, first)),
            _ => None,
        })
        .collect();
    // The range of each new event's ingest entries among the positions `send` returns.
    let mut all = Outgoing::default();
    let mut ranges = Vec::with_capacity(n);
    for (i, out) in outs.into_iter().enumerate() {
        if earlier.contains_key(&i) {
            ranges.push(None);
        } else {
            let start = all.persisted();
            all.append(out);
            ranges.push(Some(start..all.persisted()));
        }
    }
    let positions = match publisher.send(all).await {
        Ok(positions) => positions,
        Err(e) => {
            publisher.published_ids().abandon(&fresh).await;
            return Err(ApiError::publish_failed(&e));
        }
    };
    let mut duplicates = Vec::new();
    let stream_ids: Vec<serde_json::Value> = ranges
        .into_iter()
        .enumerate()
        .map(|(i, range)| match range {
            Some(range) => json!(&positions[range]),
            None => {
                duplicates.push(i);
                let first =
                    earlier.remove(&i).and_then(|mut first| first.get_mut("stream_ids").map(serde_json::Value::take));
                first.unwrap_or_else(|| json!([]))
            }
        })
        .collect();
    node.metrics().published.inc_by((n - duplicates.len()) as u64);
    tracing::debug!(events = n, duplicates = duplicates.len(), persisted = positions.len(), "published a batch");
    let answers: Vec<serde_json::Value> = fresh
        .iter()
        .map(|id| {
            let positions = stream_ids[keyed_at[*id]].as_array().cloned().unwrap_or_default();
            answer(id, &positions.iter().filter_map(|p| p.as_str().map(str::to_owned)).collect::<Vec<_>>())
        })
        .collect();
    let answers: Vec<(&str, &serde_json::Value)> = fresh.iter().copied().zip(&answers).collect();
    remember(&node, &answers).await;
    timer.observe_duration();
    let mut body = json!({ "ids": ids });
    if stream_ids.iter().any(|s| s.as_array().is_some_and(|a| !a.is_empty())) {
        body["stream_ids"] = json!(stream_ids);
    }
    if !duplicates.is_empty() {
        body["duplicates"] = json!(duplicates);
    }
    Ok((StatusCode::OK, Json(body)).into_response())
}
