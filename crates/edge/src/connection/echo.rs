//! The diagnostic echo handler: sends every message back unchanged, through the same frame
//! decoder, assembler and output path as the real endpoints, so an RFC 6455 conformance run (Autobahn)
//! checks the code clients actually meet, permessage-deflate included.

use std::sync::Arc;

use bytes::Bytes;
use switchboard_protocol::CloseReason;

use switchboard_wsframe::deflate;

use super::handle::ConnHandle;
use super::outbox::Payload;
use super::MessageHandler;

/// Echoes messages.
pub struct EchoHandler {
    conn: Arc<ConnHandle>,
}

impl EchoHandler {
    /// An echo handler for a connection.
    pub fn new(conn: Arc<ConnHandle>) -> Self {
        EchoHandler { conn }
    }
}

impl MessageHandler for EchoHandler {
    fn is_subscribed(&self) -> bool {
        true
    }

    async fn start(&mut self) -> Result<(), CloseReason> {
        Ok(())
    }

    async fn handle(&mut self, data: &[u8], is_text: bool) {
        // Compressed back when the client negotiated it, as the endpoint's broadcasts are, so
        // a conformance run checks the compressor too.
        let packed = self.conn.deflate_level_for(data.len()).and_then(|level| deflate::deflate(data, level));
        let payload = match packed {
            Some(packed) => Payload { bytes: Bytes::from(packed), deflated: true },
            None => Bytes::copy_from_slice(data).into(),
        };
        // Waits until the socket took it instead of dropping: an echo client is its own
        // backpressure (the connection reads nothing more meanwhile).
        self.conn.send_flushed(payload, is_text).await;
    }

    async fn finish(&mut self) {}
}
