//! The node's broker inbox: every message the broker delivers to this node comes here and goes
//! to whoever owns its topic: cluster control messages to the control handler, everything else
//! (events) to the local fan-out. When the broker says that the node's subscriptions are back
//! after a loss, every open connection that may have missed persisted events is asked to fill
//! the gap from its user's log.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use switchboard_broker::DeliverySink;
use switchboard_protocol::keyspace::CONTROL_TOPIC;

use crate::connection::ConnContext;
use crate::control::ControlHandler;
use crate::fanout::Dispatcher;

/// Routes broker deliveries by topic.
pub struct Inbox {
    dispatcher: Arc<Dispatcher>,
    /// Set once the node is assembled (the handler needs the broker this inbox is given to).
    control: OnceLock<ControlHandler>,
    /// The node's open connections, set once the node is assembled.
    connections: OnceLock<Arc<ConnContext>>,
}

impl Inbox {
    /// An inbox fanning events out through `dispatcher`.
    pub fn new(dispatcher: Arc<Dispatcher>) -> Inbox {
        Inbox { dispatcher, control: OnceLock::new(), connections: OnceLock::new() }
    }

    /// Connects the control handler (once).
    pub fn set_control(&self, handler: ControlHandler) {
        let _ = self.control.set(handler);
    }

    /// Connects the node's open connections (once).
    pub fn set_connections(&self, connections: Arc<ConnContext>) {
        let _ = self.connections.set(connections);
    }
}

impl DeliverySink for Inbox {
    fn deliver(&self, topic: &str, message: Bytes) {
        match topic {
            CONTROL_TOPIC => {
                if let Some(control) = self.control.get() {
                    control.handle(&message);
                }
            }
            _ => self.dispatcher.deliver(topic, message),
        }
    }

    fn subscriptions_restored(&self) {
        if let Some(connections) = self.connections.get() {
            let asked = connections.request_catch_ups();
            tracing::info!(connections = asked, "broker subscriptions restored; filling what connections missed");
        }
    }
}
