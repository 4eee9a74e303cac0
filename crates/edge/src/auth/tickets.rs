//! Single-use connect tickets (`ocvr`): a client exchanges its user JWT for a short-lived
//! ticket (`POST /v1/auth/ws-ticket`) and connects with `?ticket=`, so the long-lived token
//! never appears in a WebSocket URL (and so in access logs).
//!
//! A ticket is 32 random bytes; the broker keeps the claims it was issued for under the ticket
//! until it is redeemed or expires. Redeeming reads and deletes the key in one step (`GETDEL`),
//! so a ticket opens exactly one connection however many nodes try it at once, and works on
//! any node of the cluster.

use std::time::Duration;

use bytes::Bytes;
use switchboard_broker::{BrokerError, SharedBroker};
use switchboard_protocol::keyspace::{connect_ticket, ticket_rate};
use switchboard_protocol::token::Claims;

use crate::config::TicketsConfig;

/// What every ticket starts with, as in the documents (`wst_abc123...`).
const PREFIX: &str = "wst_";
/// Random bytes in a ticket (hex-encoded after the prefix).
const RANDOM_BYTES: usize = 32;

/// The outcome of asking for a ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Issued {
    /// The ticket to connect with.
    Ticket(String),
    /// The user asked for too many tickets in the last second.
    RateLimited,
}

/// Issues and redeems tickets, in the broker so every node can redeem what any node issued.
pub struct TicketStore {
    broker: SharedBroker,
    config: TicketsConfig,
}

impl TicketStore {
    /// A store in `broker` with `config`'s lifetime and rate.
    pub fn new(broker: SharedBroker, config: TicketsConfig) -> TicketStore {
        TicketStore { broker, config }
    }

    /// Issues a ticket that opens one connection as `claims`' user.
    pub async fn issue(&self, claims: &Claims) -> Result<Issued, BrokerError> {
        if self.config.rate_per_user > 0 {
            let n = self.broker.incr_in_window(&ticket_rate(&claims.sub), Duration::from_secs(1)).await?;
            if n > u64::from(self.config.rate_per_user) {
                return Ok(Issued::RateLimited);
            }
        }
        let random: [u8; RANDOM_BYTES] = rand::random();
        let ticket = format!("{PREFIX}{}", hex::encode(random));
        let body = serde_json::to_vec(claims).map_err(|e| BrokerError::Protocol(e.to_string()))?;
        self.broker.set(&connect_ticket(&ticket), Bytes::from(body), Some(self.config.ttl)).await?;
        Ok(Issued::Ticket(ticket))
    }

    /// Redeems `ticket`: the claims it was issued for, once; `None` for a ticket that is
    /// unknown, used or expired.
    pub async fn redeem(&self, ticket: &str) -> Result<Option<Claims>, BrokerError> {
        if !well_formed(ticket) {
            // Not one of ours: no broker round trip, and no key named by a stranger.
            return Ok(None);
        }
        let Some(body) = self.broker.take(&connect_ticket(ticket)).await? else { return Ok(None) };
        match serde_json::from_slice(&body) {
            Ok(claims) => Ok(Some(claims)),
            Err(e) => {
                tracing::warn!(error = %e, "an unreadable ticket record was refused");
                Ok(None)
            }
        }
    }
}

fn well_formed(ticket: &str) -> bool {
    ticket.len() == PREFIX.len() + 2 * RANDOM_BYTES
        && ticket.starts_with(PREFIX)
        && ticket[PREFIX.len()..].bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use switchboard_broker::clock::OffsetClock;
    use switchboard_broker::memory::MemoryHub;
    use switchboard_broker::DeliverySink;

    use super::*;

    struct Nowhere;
    impl DeliverySink for Nowhere {
        fn deliver(&self, _: &str, _: Bytes) {}
    }

    fn claims(sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            exp: Some(u64::MAX / 2),
            sid: Some("s1".into()),
            name: None,
            channels: None,
            token_digest: None,
        }
    }

    fn issued(i: Issued) -> String {
        match i {
            Issued::Ticket(t) => t,
            Issued::RateLimited => panic!("rate limited"),
        }
    }

    #[tokio::test]
    async fn a_ticket_opens_one_connection_on_any_node_within_its_lifetime() {
        let clock = Arc::new(OffsetClock::default());
        let hub = MemoryHub::with_clock(clock.clone());
        let store = |hub: &MemoryHub| TicketStore::new(Arc::new(hub.node(Arc::new(Nowhere))), TicketsConfig::default());
        let (a, b) = (store(&hub), store(&hub));
        let ticket = issued(a.issue(&claims("12345")).await.expect("issue"));
        assert!(ticket.starts_with("wst_") && well_formed(&ticket), "{ticket}");
        assert_eq!(b.redeem(&ticket).await.expect("redeem"), Some(claims("12345")), "redeemed on another node");
        assert_eq!(a.redeem(&ticket).await.expect("redeem"), None, "single use");

        let late = issued(a.issue(&claims("12345")).await.expect("issue"));
        clock.advance(30_001);
        assert_eq!(b.redeem(&late).await.expect("redeem"), None, "expired after 30 s");
        for junk in ["", "wst_", "wst_zz", "ticket:other", &format!("{late}0"), &late.to_uppercase()] {
            assert_eq!(a.redeem(junk).await.expect("redeem"), None, "{junk}");
        }
    }

    #[tokio::test]
    async fn one_user_gets_a_bounded_number_of_tickets_per_second() {
        let hub = MemoryHub::new();
        let config = TicketsConfig { rate_per_user: 3, ..TicketsConfig::default() };
        let store = TicketStore::new(Arc::new(hub.node(Arc::new(Nowhere))), config);
        for _ in 0..3 {
            issued(store.issue(&claims("alice")).await.expect("issue"));
        }
        assert_eq!(store.issue(&claims("alice")).await.expect("issue"), Issued::RateLimited);
        issued(store.issue(&claims("bob")).await.expect("others are not limited by alice"));
    }
}
