//! Local fan-out: which connections of this node want which broker topic ([`registry`]),
//! keeping the node's broker subscriptions equal to that ([`topics`]), and delivering each event
//! from the broker to them, encoded once per dialect ([`dispatch`]).

pub mod dispatch;
pub mod registry;
pub mod topics;

pub use dispatch::Dispatcher;
pub use registry::TopicRegistry;
pub use topics::TopicSync;
