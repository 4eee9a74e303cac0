//! The in-process broker passes the behavioural suite every broker must pass.

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_broker::conformance::{self, NodeFactory};
use switchboard_broker::memory::MemoryHub;
use switchboard_broker::{DeliverySink, SharedBroker};

struct Memory(MemoryHub);

#[async_trait]
impl NodeFactory for Memory {
    async fn node(&self, sink: Arc<dyn DeliverySink>) -> SharedBroker {
        Arc::new(self.0.node(sink))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_broker_passes_the_behavioural_suite() {
    conformance::run_all(&Memory(MemoryHub::new())).await;
}
