//! Small helpers the JSON dialects share: reading `{"type": T, "data": {...}}` client frames,
//! and writing frames without an intermediate tree.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{ClientError, ErrorKind};

/// A client frame of the dialects that spell commands `{"type": T, "data": {...}}`.
#[derive(Deserialize)]
pub(crate) struct TypeDataFrame {
    /// The command.
    #[serde(rename = "type")]
    pub kind: String,
    /// Its arguments, read by the command.
    #[serde(default)]
    pub data: Option<Box<RawValue>>,
}

/// An `invalid_request` error saying what is wrong.
pub(crate) fn invalid(message: impl Into<String>) -> ClientError {
    ClientError::new(ErrorKind::InvalidRequest, message)
}

/// The string `data.<field>` of a frame (a channel name), 1 to `max` bytes.
pub(crate) fn data_string(data: Option<&RawValue>, field: &str, max: usize) -> Result<String, ClientError> {
    let required = || invalid(format!("`data.{field}` (a string) is required"));
    let data = data.ok_or_else(required)?;
    let mut fields: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(data.get()).map_err(|_| required())?;
    let Some(serde_json::Value::String(value)) = fields.remove(field) else { return Err(required()) };
    if value.is_empty() || value.len() > max {
        return Err(invalid(format!("`data.{field}` must be 1 to {max} bytes")));
    }
    Ok(value)
}

/// Appends `s` as a JSON string literal (quoted and escaped).
pub(crate) fn push_str(buf: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail: serde_json only errors on IO or non-string keys.
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Appends `"key":` (keys are our own constants and never need escaping).
pub(crate) fn push_key(buf: &mut Vec<u8>, key: &str) {
    buf.push(b'"');
    buf.extend_from_slice(key.as_bytes());
    buf.extend_from_slice(b"\":");
}

/// Appends `,"key":"value"`.
pub(crate) fn push_field_str(buf: &mut Vec<u8>, key: &str, value: &str) {
    buf.push(b',');
    push_key(buf, key);
    push_str(buf, value);
}

/// Appends a raw JSON value as it is.
pub(crate) fn push_raw(buf: &mut Vec<u8>, raw: &RawValue) {
    buf.extend_from_slice(raw.get().as_bytes());
}

/// Appends a decimal integer.
pub(crate) fn push_u64(buf: &mut Vec<u8>, n: u64) {
    buf.extend_from_slice(n.to_string().as_bytes());
}

/// Capacity to reserve for an event frame: payload plus envelope.
pub(crate) fn event_capacity(payload: &RawValue, extra: usize) -> usize {
    payload.get().len() + extra + 128
}

/// A client message as its bytes (client side: commands are built as JSON values).
pub(crate) fn to_message(value: &serde_json::Value) -> bytes::Bytes {
    bytes::Bytes::from(value.to_string())
}

/// What a client tells a JSON dialect's server messages apart by, wherever the dialect puts
/// it (top level or under `data`).
#[derive(Default)]
pub(crate) struct ServerFields {
    pub kind: String,
    pub id: Option<String>,
    pub session_id: Option<String>,
    pub code: Option<String>,
    pub message: Option<String>,
    pub count: Option<u64>,
    pub truncated: Option<bool>,
    pub replayed: Option<bool>,
}

/// The JSON dialects' shared vocabulary of server messages: `connection_ack`, `error`,
/// `pong`, `replay_complete`; anything else with an `id` is an event.
pub(crate) fn server_message(f: ServerFields) -> crate::command::ServerMessage {
    use crate::command::ServerMessage;
    match (f.kind.as_str(), f.id) {
        ("connection_ack", _) => ServerMessage::Welcome { session_id: f.session_id },
        ("error", _) => ServerMessage::Error {
            code: f.code.unwrap_or_default(),
            message: f.message.unwrap_or_default(),
            request_id: None,
        },
        ("pong", _) => ServerMessage::Pong,
        ("replay_complete", _) => {
            ServerMessage::ReplayComplete { count: f.count.unwrap_or(0), truncated: f.truncated.unwrap_or(false) }
        }
        (_, Some(id)) => ServerMessage::Event { id, kind: f.kind, replayed: f.replayed.unwrap_or(false) },
        (_, None) => ServerMessage::Other(f.kind),
    }
}
