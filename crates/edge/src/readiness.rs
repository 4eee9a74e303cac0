//! Whether a process can do its job now: the one decision that `/readyz` answers and the
//! `readiness_check` metric reports, check by check.
//!
//! Ready means: not draining, the broker answers, the server written to is a master (a
//! replica or a demoted master answers PING but refuses writes), every wanted subscription is
//! confirmed, and the node's own probe comes back through them (delivery works end to end).

use switchboard_broker::BrokerHealth;

/// One part of readiness, in the order `/readyz` looks at them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The process is stopping: load balancers should send new clients elsewhere.
    Draining,
    /// The broker answers.
    Broker,
    /// The server written to is a master.
    Writable,
    /// Every wanted subscription is confirmed.
    Subscriptions,
    /// The node's probe comes back through its subscriptions.
    Delivery,
}

impl Check {
    /// Every check, in order.
    pub const ALL: [Check; 5] =
        [Check::Draining, Check::Broker, Check::Writable, Check::Subscriptions, Check::Delivery];

    /// The metric label.
    pub fn name(self) -> &'static str {
        match self {
            Check::Draining => "draining",
            Check::Broker => "broker",
            Check::Writable => "writable",
            Check::Subscriptions => "subscriptions",
            Check::Delivery => "delivery",
        }
    }

    /// The `status` `/readyz` answers while this check fails.
    pub fn status(self) -> &'static str {
        match self {
            Check::Draining => "draining",
            Check::Broker => "broker_unreachable",
            Check::Writable => "broker_read_only",
            Check::Subscriptions => "subscriptions_lost",
            Check::Delivery => "delivery_failing",
        }
    }

    /// Whether this check passes, given whether the process drains, whether the broker
    /// answered, and its health.
    pub fn passes(self, draining: bool, reachable: bool, health: &BrokerHealth) -> bool {
        match self {
            Check::Draining => !draining,
            Check::Broker => reachable,
            Check::Writable => health.writable,
            Check::Subscriptions => health.subscribed,
            Check::Delivery => health.delivering,
        }
    }
}

/// The first check that fails, if any.
pub fn failing(draining: bool, reachable: bool, health: &BrokerHealth) -> Option<Check> {
    Check::ALL.into_iter().find(|c| !c.passes(draining, reachable, health))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_failing_check_is_the_one_reported() {
        let healthy = BrokerHealth::HEALTHY;
        assert_eq!(failing(false, true, &healthy), None);
        assert_eq!(failing(true, false, &healthy), Some(Check::Draining));
        assert_eq!(failing(false, false, &healthy), Some(Check::Broker));
        let replica = BrokerHealth { writable: false, subscribed: false, ..healthy };
        assert_eq!(failing(false, true, &replica), Some(Check::Writable));
        let deaf = BrokerHealth { delivering: false, ..healthy };
        assert_eq!(failing(false, true, &deaf).map(Check::status), Some("delivery_failing"));
    }
}
