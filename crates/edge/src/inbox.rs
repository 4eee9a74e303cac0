//! The node's broker inbox: every message the broker delivers to this node comes here and goes
//! to whoever owns its topic: cluster control messages to the control handler, everything else
//! (events) to the local fan-out.

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use switchboard_broker::DeliverySink;
use switchboard_protocol::keyspace::CONTROL_TOPIC;

use crate::control::ControlHandler;
use crate::fanout::Dispatcher;

/// Routes broker deliveries by topic.
pub struct Inbox {
    dispatcher: Arc<Dispatcher>,
    /// Set once the node is assembled (the handler needs the broker this inbox is given to).
    control: OnceLock<ControlHandler>,
}

impl Inbox {
    /// An inbox fanning events out through `dispatcher`.
    pub fn new(dispatcher: Arc<Dispatcher>) -> Inbox {
        Inbox { dispatcher, control: OnceLock::new() }
    }

    /// Connects the control handler (once).
    pub fn set_control(&self, handler: ControlHandler) {
        let _ = self.control.set(handler);
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
}
