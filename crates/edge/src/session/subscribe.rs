//! Subscribing and unsubscribing: which targets a connection may have, and keeping the
//! connection's subscription table, its topic registrations and the node's broker subscriptions
//! in step.

use std::sync::Arc;

use switchboard_broker::Topic;
use switchboard_protocol::keyspace::channel_topic;
use switchboard_protocol::{ClientError, ErrorKind, Filter, SubscriptionTarget};

use super::Session;

impl Session {
    /// Subscribes to `targets`, each with `filter`; all or nothing.
    pub(super) async fn subscribe(
        &mut self,
        targets: Vec<SubscriptionTarget>,
        filter: Option<Filter>,
    ) -> Result<(), ClientError> {
        let ep = self.conn.endpoint.clone();
        let filter = filter.map(Arc::new);
        let mut types = Vec::new();
        let mut topics: Vec<Topic> = Vec::new();
        for target in targets {
            match target {
                SubscriptionTarget::EventType(t) if ep.allows_type(&t) => types.push(t),
                SubscriptionTarget::EventType(t) => {
                    return Err(ClientError::new(
                        ErrorKind::UnknownChannel,
                        format!("unknown channel `{t}`; this endpoint offers: {}", ep.type_list()),
                    ))
                }
                SubscriptionTarget::Channel(c) => {
                    self.check_channel(&c).await?;
                    let topic = self.services.registry.intern(&channel_topic(&c));
                    if !topics.contains(&topic) {
                        topics.push(topic);
                    }
                }
            }
        }
        if !topics.is_empty() {
            let max = ep.limits().max_subscriptions;
            let fresh: Vec<Topic> = {
                let subs = self.conn.subscriptions();
                let new = topics.iter().filter(|t| !subs.contains(t, filter.as_deref())).count();
                if subs.channel_count() + new > max {
                    return Err(ClientError::new(
                        ErrorKind::TooManySubscriptions,
                        format!("at most {max} subscriptions per connection"),
                    ));
                }
                topics.iter().filter(|t| !subs.has_channel(t)).cloned().collect()
            };
            self.conn.update_subscriptions(|subs| {
                for t in &topics {
                    subs.add_channel(t.clone(), filter.clone());
                }
            });
            if let Err(e) = self.register(&topics).await {
                // Undo the subscriptions this command made to topics that had none.
                self.conn.update_subscriptions(|subs| {
                    for t in &fresh {
                        subs.remove_channel(t);
                    }
                });
                return Err(e);
            }
        }
        if !types.is_empty() {
            self.conn.update_subscriptions(|subs| subs.choose_types(types, filter));
        }
        Ok(())
    }

    /// Unsubscribes from `targets` (targets not subscribed are ignored).
    pub(super) async fn unsubscribe(&mut self, targets: Vec<SubscriptionTarget>) -> Result<(), ClientError> {
        let gone = self.conn.update_subscriptions(|subs| {
            let mut gone = Vec::new();
            for target in targets {
                match target {
                    SubscriptionTarget::EventType(t) => subs.drop_types(&[t]),
                    SubscriptionTarget::Channel(c) => {
                        let topic = channel_topic(&c);
                        if subs.remove_channel(&topic) > 0 {
                            gone.push(topic);
                        }
                    }
                }
            }
            gone
        });
        self.unregister(&gone).await;
        Ok(())
    }

    /// May this connection use `channel`? Pattern allowed by the endpoint, created where the
    /// endpoint needs channels to exist, and for member-only channels, membership.
    async fn check_channel(&self, channel: &str) -> Result<(), ClientError> {
        let ep = &self.conn.endpoint;
        let unknown = || {
            ClientError::new(ErrorKind::UnknownChannel, format!("channel `{channel}` does not exist on this endpoint"))
        };
        let unavailable = |e: switchboard_broker::BrokerError| {
            tracing::warn!(error = %e, "channel lookup failed");
            ClientError::new(ErrorKind::Internal, "channel check unavailable; retry")
        };
        if !ep.channel_allowed(channel) {
            return Err(unknown());
        }
        if ep.config.channels.must_exist && !self.services.membership.exists(channel).await.map_err(unavailable)? {
            return Err(unknown());
        }
        if ep.member_only(channel) {
            let member = self.services.membership.is_member(&self.principal, channel).await.map_err(unavailable)?;
            if !member {
                return Err(ClientError::new(ErrorKind::NotMember, format!("not a member of `{channel}`")));
            }
        }
        Ok(())
    }
}
