//! The admin API (`Authorization: Bearer <admin key>`): API keys, channels and their members,
//! revocation, presence.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::credentials::bearer;
use super::ApiError;
use crate::auth::api_keys::CreateKeyError;
use crate::auth::ApiKeyRecord;
use crate::control::ControlMessage;
use crate::node::Node;

/// Proof that the request carries the admin key.
pub struct AdminAuth;

impl FromRequestParts<Arc<Node>> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, node: &Arc<Node>) -> Result<Self, Self::Rejection> {
        let Some(given) = bearer(&parts.headers) else {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_token",
                "send `Authorization: Bearer <admin key>`",
            ));
        };
        // Compare digests so the comparison time does not depend on how much of the key matched.
        if Sha256::digest(given.as_bytes()) != Sha256::digest(node.config().admin_key().as_bytes()) {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "invalid_token", "the admin key is wrong"));
        }
        Ok(AdminAuth)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewApiKey {
    name: String,
    #[serde(default)]
    endpoints: Vec<String>,
    #[serde(default = "default_max_connections")]
    max_connections: u32,
}

fn default_max_connections() -> u32 {
    2
}

/// `POST /v1/api-keys` → `{"key": ...}`, shown once; only its hash is stored.
pub async fn create_api_key(State(node): State<Arc<Node>>, _: AdminAuth, body: Bytes) -> Result<Response, ApiError> {
    let req: NewApiKey =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if req.name.is_empty() || req.name.len() > 128 {
        return Err(ApiError::bad_request("`name` must be 1 to 128 characters"));
    }
    if req.max_connections == 0 {
        return Err(ApiError::bad_request("`max_connections` must be at least 1"));
    }
    for path in &req.endpoints {
        let known = node.endpoints().iter().any(|e| e.path() == path && e.auth().method.accepts_api_keys());
        if !known {
            return Err(ApiError::bad_request(format!("`{path}` is not an API-key endpoint of this node")));
        }
    }
    let record = ApiKeyRecord { name: req.name, endpoints: req.endpoints, max_connections: req.max_connections };
    let key = node.authenticator().api_keys().create(&record).await.map_err(|e| match e {
        CreateKeyError::NameTaken => ApiError::new(
            StatusCode::CONFLICT,
            "api_key_exists",
            format!(
                "an API key named `{}` exists; DELETE /v1/api-keys/{} first to replace it",
                record.name, record.name
            ),
        ),
        CreateKeyError::Broker(e) => ApiError::unavailable(e),
    })?;
    let body = json!({"key": key, "name": record.name, "endpoints": record.endpoints, "max_connections": record.max_connections});
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

/// `GET /v1/api-keys`: every key's name, endpoints, limit and source; never a secret.
pub async fn list_api_keys(State(node): State<Arc<Node>>, _: AdminAuth) -> Result<Response, ApiError> {
    let keys = node.authenticator().api_keys().list().await.map_err(ApiError::unavailable)?;
    Ok(Json(json!({ "api_keys": keys })).into_response())
}

/// `GET /v1/connections`: open connections per endpoint on every edge and in total;
/// `?user=U`: that user's connections anywhere (node, connection id, endpoint).
pub async fn connections(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Response, ApiError> {
    if let Some(user) = query.get("user") {
        let found = crate::census::user_connections(&node, user).await.map_err(ApiError::unavailable)?;
        return Ok(Json(json!({ "user": user, "connections": found })).into_response());
    }
    let nodes = crate::census::cluster(&node).await.map_err(ApiError::unavailable)?;
    let mut total: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for census in &nodes {
        for (path, n) in &census.connections {
            *total.entry(path.as_str()).or_default() += n;
        }
    }
    let all: i64 = total.values().sum();
    Ok(Json(json!({ "connections": all, "per_endpoint": total, "nodes": nodes })).into_response())
}

/// `DELETE /v1/api-keys/{name}`.
pub async fn delete_api_key(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    if node.authenticator().api_keys().delete(&name).await.map_err(ApiError::unavailable)? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no API key named `{name}`")))
    }
}

/// `PUT /v1/channels/{id}`: the channel exists (endpoints with `channels.must_exist` accept
/// subscriptions to it).
pub async fn create_channel(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    check_channel_name(&channel)?;
    node.membership().create(&channel).await.map_err(ApiError::unavailable)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET /v1/channels/{id}` → `{"channel", "members"}`; 404 for a channel that was never
/// created and has no members.
pub async fn get_channel(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let membership = node.membership();
    let mut members = membership.members(&channel).await.map_err(ApiError::unavailable)?;
    if members.is_empty() && !membership.exists(&channel).await.map_err(ApiError::unavailable)? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no channel `{channel}`")));
    }
    members.sort();
    Ok(Json(json!({"channel": channel, "members": members})).into_response())
}

/// `DELETE /v1/channels/{id}`: the channel and its member list are gone, and every live
/// subscription to it that needed either ends, on every edge.
pub async fn delete_channel(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    if !node.membership().delete(&channel).await.map_err(ApiError::unavailable)? {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no channel `{channel}`")));
    }
    ControlMessage::ChannelDeleted { channel }.broadcast(node.broker()).await.map_err(ApiError::unavailable)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

fn check_channel_name(channel: &str) -> Result<(), ApiError> {
    if channel.is_empty() || channel.len() > crate::publish::MAX_NAME || channel.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "a channel id is 1 to {} characters without control characters",
            crate::publish::MAX_NAME
        )));
    }
    Ok(())
}

/// `PUT /v1/channels/{id}/members/{user}`.
pub async fn add_member(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    Path((channel, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    check_channel_name(&channel)?;
    if user.is_empty() || user.len() > crate::publish::MAX_NAME {
        return Err(ApiError::bad_request(format!("a user id is 1 to {} characters", crate::publish::MAX_NAME)));
    }
    node.membership().add(&channel, &user).await.map_err(ApiError::unavailable)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/channels/{id}/members/{user}`: the user's live subscriptions to the channel end,
/// on every edge.
pub async fn remove_member(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    Path((channel, user)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    if node.membership().remove(&channel, &user).await.map_err(ApiError::unavailable)? {
        let removed = ControlMessage::MemberRemoved { channel, user };
        removed.broadcast(node.broker()).await.map_err(ApiError::unavailable)?;
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("`{user}` is not a member of `{channel}`")))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Revocation {
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    session: Option<String>,
    #[serde(default = "default_reason")]
    reason: String,
    /// When the session's tokens expire (unix seconds): it stays refused until then.
    #[serde(default)]
    expires_at: Option<u64>,
}

fn default_reason() -> String {
    "revoked".into()
}

/// `POST /v1/sessions/revoke` `{"user": U}` or `{"session": S}` (optional `reason`,
/// `expires_at`): every matching connection, on every edge, is told and closed; a revoked
/// session id cannot connect again until its tokens expire.
pub async fn revoke_sessions(State(node): State<Arc<Node>>, _: AdminAuth, body: Bytes) -> Result<Response, ApiError> {
    let req: Revocation =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if req.user.is_none() == req.session.is_none() {
        return Err(ApiError::bad_request("give exactly one of `user` or `session`"));
    }
    if req.reason.is_empty() || req.reason.len() > 64 {
        return Err(ApiError::bad_request("`reason` must be 1 to 64 characters"));
    }
    if let Some(session) = &req.session {
        let now = switchboard_protocol::timefmt::now_millis() / 1000;
        let ttl = match req.expires_at {
            Some(exp) if exp > now => std::time::Duration::from_secs(exp - now),
            Some(_) => std::time::Duration::from_secs(1),
            None => node.config().jwt.revocation_ttl,
        };
        let key = switchboard_protocol::keyspace::revoked_session(session);
        node.broker().set(&key, Bytes::from_static(b"1"), Some(ttl)).await.map_err(ApiError::unavailable)?;
    }
    let message = ControlMessage::Revoke { user: req.user, session: req.session, reason: req.reason };
    message.broadcast(node.broker()).await.map_err(ApiError::unavailable)?;
    Ok((StatusCode::OK, Json(json!({"status": "revoked"}))).into_response())
}

/// `GET /v1/presence/{channel}`: the channel's listed members who are online anywhere in the
/// cluster.
pub async fn channel_presence(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    Path(channel): Path<String>,
) -> Result<Response, ApiError> {
    let mut members = node.membership().members(&channel).await.map_err(ApiError::unavailable)?;
    members.sort();
    let flags = node.presence().online(&members).await.map_err(ApiError::unavailable)?;
    let online: Vec<&String> = members.iter().zip(flags).filter(|(_, on)| *on).map(|(m, _)| m).collect();
    Ok(Json(json!({"channel": channel, "online": online})).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Status {
    status_text: String,
}

/// Longest status text.
const MAX_STATUS: usize = 128;

/// `PUT /v1/users/{user}/status` `{"status_text": "Playing OCVR"}`: shown with the user's
/// presence; announced at once if they are online.
pub async fn set_status(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    Path(user): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: Status =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    if req.status_text.is_empty() || req.status_text.len() > MAX_STATUS || req.status_text.chars().any(char::is_control)
    {
        return Err(ApiError::bad_request(format!(
            "`status_text` must be 1 to {MAX_STATUS} bytes without control characters"
        )));
    }
    let key = switchboard_protocol::keyspace::presence_status(&user);
    node.broker().set(&key, Bytes::from(req.status_text), None).await.map_err(ApiError::unavailable)?;
    reannounce_if_online(&node, &user).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /v1/users/{user}/status`: the user's presence shows no status text.
pub async fn clear_status(
    State(node): State<Arc<Node>>,
    _: AdminAuth,
    Path(user): Path<String>,
) -> Result<Response, ApiError> {
    let key = switchboard_protocol::keyspace::presence_status(&user);
    node.broker().delete(&key).await.map_err(ApiError::unavailable)?;
    reannounce_if_online(&node, &user).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn reannounce_if_online(node: &Node, user: &str) -> Result<(), ApiError> {
    let online = node.presence().online(&[user.to_owned()]).await.map_err(ApiError::unavailable)?;
    if online.first() == Some(&true) {
        node.reannounce_online(user);
    }
    Ok(())
}
