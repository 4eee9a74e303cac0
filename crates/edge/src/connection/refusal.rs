//! The handler of a connection whose credentials were refused on an endpoint that answers
//! refusals after the upgrade (`auth.refusal = "close"`): browsers cannot read the body of a
//! refused handshake, so the client gets the dialect's error message (`INVALID_TICKET`) and a
//! close with the endpoint's `auth_failed` code instead.

use std::sync::Arc;

use switchboard_protocol::{ClientError, CloseReason, ErrorKind, Reply};

use super::handle::ConnHandle;
use super::MessageHandler;

/// Tells the client why, then closes.
pub struct RefusalHandler {
    conn: Arc<ConnHandle>,
    message: &'static str,
}

impl RefusalHandler {
    /// A refusal of `conn` saying `message`.
    pub fn new(conn: Arc<ConnHandle>, message: &'static str) -> Self {
        RefusalHandler { conn, message }
    }
}

impl MessageHandler for RefusalHandler {
    fn is_subscribed(&self) -> bool {
        true
    }

    async fn start(&mut self) -> Result<(), CloseReason> {
        let error = ClientError::new(ErrorKind::InvalidCredentials, self.message);
        if let Some(frame) = self.conn.endpoint.codec.encode_reply(&Reply::Error { error: &error, request_id: None }) {
            self.conn.send(frame);
        }
        Err(CloseReason::AuthFailed)
    }

    async fn handle(&mut self, _: &[u8], _: bool) {}

    async fn finish(&mut self) {}
}
