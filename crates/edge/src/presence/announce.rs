//! Announcing presence: a user's transitions reach the subscribers of every channel the user
//! is a listed member of, as the dialect's presence event (`ocvr`: `presence_update` with
//! `user_id`, `presence` and `status_text` when set), never the user's own connections. An
//! endpoint may name one channel for everyone's transitions instead (veriops `presence`).
//!
//! The tracker reports transitions from inside its broker calls, so the announcer only queues
//! them (bounded: a flood is counted and dropped rather than buffered without limit) and one
//! task announces them in the order they were reported: it looks up the user's channels and
//! status and publishes one event per channel, encoded once.

use std::sync::Arc;

use switchboard_broker::{BrokerError, SharedBroker};
use switchboard_protocol::keyspace::presence_status;
use switchboard_protocol::Codec;
use tokio::sync::mpsc;

use super::PresenceListener;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::publish::{Audience, Outgoing, Publication, PublishService};

/// Transitions waiting to be announced; beyond this they are dropped (and counted).
const QUEUE: usize = 16_384;

/// Announces presence transitions to channels, for one dialect.
pub struct PresenceAnnouncer {
    queue: mpsc::Sender<(String, bool)>,
    metrics: Arc<Metrics>,
}

/// What an announcement needs of the node.
struct Announcing {
    codec: &'static dyn Codec,
    /// The one channel every transition goes to; `None`: the user's member channels.
    channel: Option<String>,
    membership: Membership,
    publisher: Arc<PublishService>,
    broker: SharedBroker,
    metrics: Arc<Metrics>,
}

impl PresenceAnnouncer {
    /// Starts announcing with `codec`'s presence event, on `channel` or else on each user's
    /// member channels (call inside the runtime).
    pub fn spawn(
        codec: &'static dyn Codec,
        channel: Option<String>,
        membership: Membership,
        publisher: Arc<PublishService>,
        broker: SharedBroker,
        metrics: Arc<Metrics>,
    ) -> Arc<PresenceAnnouncer> {
        let (queue, mut rx) = mpsc::channel::<(String, bool)>(QUEUE);
        let announcing = Announcing { codec, channel, membership, publisher, broker, metrics: metrics.clone() };
        tokio::spawn(async move {
            while let Some((user, online)) = rx.recv().await {
                let result = match announcing.announce(&user, online).await {
                    Ok(()) => "sent",
                    Err(e) => {
                        tracing::warn!(error = %e, user, "could not announce a presence change");
                        "failed"
                    }
                };
                announcing.metrics.presence_announcements.with_label_values(&[result]).inc();
            }
        });
        Arc::new(PresenceAnnouncer { queue, metrics })
    }
}

impl PresenceListener for PresenceAnnouncer {
    fn changed(&self, user: &str, online: bool) {
        if self.queue.try_send((user.to_owned(), online)).is_err() {
            self.metrics.presence_announcements.with_label_values(&["dropped"]).inc();
        }
    }
}

impl Announcing {
    async fn announce(&self, user: &str, online: bool) -> Result<(), BrokerError> {
        let channels = match &self.channel {
            Some(channel) => vec![channel.clone()],
            None => self.membership.channels_of(user).await?,
        };
        if channels.is_empty() {
            return Ok(());
        }
        let status = match online {
            true => self.broker.get(&presence_status(user)).await?,
            false => None,
        };
        let status = status.as_deref().and_then(|s| std::str::from_utf8(s).ok());
        let Some((kind, payload)) = self.codec.presence_event(user, online, status) else { return Ok(()) };
        let mut out = Outgoing::default();
        for channel in channels {
            let publication = Publication {
                audience: Audience::Channel(channel),
                kind: kind.to_owned(),
                payload: payload.clone(),
                id: None,
                persist: Some(false),
                sender: Some(user.to_owned()),
                echo: false,
                binary: false,
                traceparent: None,
            };
            if let Err(e) = self.publisher.prepare(publication, &mut out) {
                tracing::debug!(error = %e, user, "a channel name that cannot be published to was skipped");
            }
        }
        self.publisher.send(out).await.map(|_| ())
    }
}
