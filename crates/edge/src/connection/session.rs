//! A connection's state machine: what it is subscribed to and how it answers each command.
//! Dialect-neutral: the codec decodes commands and encodes replies; this file decides.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::{
    ClientError, CloseReason, Command, ErrorKind, Event, FieldFilter, FrameKind, Reply, SubscriptionTarget,
};
use wildmatch::WildMatch;

use super::handle::ConnHandle;
use super::MessageHandler;
use crate::auth::Principal;
use crate::endpoint::{channel_topic, members_key, user_topic};
use crate::ids::{event_id, session_id};
use crate::node::Node;
use crate::persistence::replay;
use crate::quota::QuotaSlot;
use crate::short_set::ShortSet;

/// One connection's subscriptions and command handling.
pub struct Session {
    node: Arc<Node>,
    conn: Arc<ConnHandle>,
    principal: Principal,
    /// Every broker topic this connection is registered on.
    topics: ShortSet,
    /// Channels the client subscribed to by name.
    channels: ShortSet,
    /// The client's `last_event_id`, for replay.
    resume: Option<String>,
    /// Where this connection's replay started.
    replay_start: Option<switchboard_broker::LogId>,
    /// Whether a subscribe command succeeded on this connection.
    subscribed: bool,
}

impl Session {
    /// A session for an accepted connection.
    pub fn new(node: Arc<Node>, conn: Arc<ConnHandle>, principal: Principal, resume: Option<String>) -> Self {
        Session {
            node,
            conn,
            principal,
            topics: ShortSet::default(),
            channels: ShortSet::default(),
            resume,
            replay_start: None,
            subscribed: false,
        }
    }

    /// Per-user limits on client-sent events, cluster-wide: typing at most once per
    /// `typing_interval` per channel (false: drop it), other events at most
    /// `publish_rate_per_user` per second (error).
    async fn within_publish_limits(&self, user: &str, channel: &str, ephemeral: bool) -> Result<bool, ClientError> {
        let ep = &self.conn.endpoint.config;
        let broker = &self.node.broker;
        let failed = |e: switchboard_broker::BrokerError| {
            tracing::warn!(error = %e, "rate limit check failed");
            ClientError::new(ErrorKind::Internal, "message could not be sent; retry")
        };
        if ephemeral {
            let key = format!("throttle:typing:{user}:{channel}");
            return broker.set_if_absent(&key, Bytes::from_static(b"1"), ep.typing_interval).await.map_err(failed);
        }
        if ep.publish_rate_per_user > 0 {
            let key = format!("rate:publish:{user}");
            let n = broker.incr_in_window(&key, std::time::Duration::from_secs(1)).await.map_err(failed)?;
            if n > u64::from(ep.publish_rate_per_user) {
                return Err(ClientError::new(
                    ErrorKind::RateLimited,
                    format!("at most {} messages per second; retry in 1 s", ep.publish_rate_per_user),
                ));
            }
        }
        Ok(true)
    }

    /// The quotas this connection must fit in.
    fn quota_slots(&self) -> Vec<QuotaSlot> {
        let ep = &self.conn.endpoint.config;
        let mut slots = Vec::new();
        match &self.principal {
            Principal::User(claims) => {
                if ep.max_connections_per_user > 0 {
                    slots.push(QuotaSlot {
                        key: format!("quota:{{{}}}:{}", claims.sub, ep.path),
                        limit: ep.max_connections_per_user,
                    });
                }
                let total = self.node.config.max_connections_per_user;
                if total > 0 {
                    slots.push(QuotaSlot { key: format!("quota:{{{}}}:total", claims.sub), limit: total });
                }
            }
            Principal::ApiKey(key) => {
                slots.push(QuotaSlot { key: format!("quota:{{key:{}}}", key.name), limit: key.max_connections });
            }
        }
        slots
    }

    fn reply(&self, reply: &Reply<'_>) {
        if let Some(bytes) = self.conn.endpoint.codec.encode_reply(reply) {
            self.conn.send(bytes);
        }
    }

    async fn register(&mut self, topics: &[String]) -> Result<(), ClientError> {
        let fresh: Vec<String> = topics.iter().filter(|t| !self.topics.contains(t)).cloned().collect();
        for t in &fresh {
            self.node.registry.add(t, &self.conn);
            self.topics.insert(t.clone());
        }
        self.node.metrics.topics.set(self.node.registry.topic_count() as i64);
        if let Err(e) = self.node.topics.reconcile(&fresh).await {
            self.node.metrics.broker_errors.with_label_values(&["subscribe"]).inc();
            tracing::warn!(error = %e, "broker subscribe failed");
            // Leave no local registration behind that the broker does not back.
            self.unregister(&fresh).await;
            return Err(ClientError::new(ErrorKind::SubscriptionFailed, "subscription temporarily unavailable; retry"));
        }
        Ok(())
    }

    async fn unregister(&mut self, topics: &[String]) {
        let gone: Vec<String> = topics.iter().filter(|t| self.topics.remove(t)).cloned().collect();
        for t in &gone {
            self.node.registry.remove(t, self.conn.id);
        }
        if self.node.topics.reconcile(&gone).await.is_err() {
            self.node.metrics.broker_errors.with_label_values(&["unsubscribe"]).inc();
        }
    }

    async fn subscribe(
        &mut self,
        targets: Vec<SubscriptionTarget>,
        filter: Option<FieldFilter>,
    ) -> Result<(), ClientError> {
        let ep = self.conn.endpoint.clone();
        let mut types = Vec::new();
        let mut channels = Vec::new();
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
                    channels.push(c);
                }
            }
        }
        let new_channels: Vec<&String> = channels.iter().filter(|c| !self.channels.contains(c)).collect();
        if self.channels.len() + new_channels.len() > ep.config.max_subscriptions {
            return Err(ClientError::new(
                ErrorKind::TooManySubscriptions,
                format!("at most {} subscriptions per connection", ep.config.max_subscriptions),
            ));
        }
        if !channels.is_empty() {
            let topics: Vec<String> = channels.iter().map(|c| channel_topic(c)).collect();
            self.register(&topics).await?;
            self.channels.extend(channels);
        }
        let mut selection = self.conn.selection.write();
        if !types.is_empty() {
            selection.types.get_or_insert_with(ShortSet::default).extend(types);
        }
        if let Some(f) = filter {
            selection.filter = (!f.is_empty()).then_some(f);
        }
        Ok(())
    }

    async fn unsubscribe(&mut self, targets: Vec<SubscriptionTarget>) -> Result<(), ClientError> {
        let mut topics = Vec::new();
        for target in targets {
            match target {
                SubscriptionTarget::EventType(t) => {
                    if let Some(types) = self.conn.selection.write().types.as_mut() {
                        types.remove(&t);
                    }
                }
                SubscriptionTarget::Channel(c) => {
                    if self.channels.remove(&c) {
                        topics.push(channel_topic(&c));
                    }
                }
            }
        }
        self.unregister(&topics).await;
        Ok(())
    }

    /// May this connection use `channel`? Pattern allowed by the endpoint, and for member-only
    /// channels, membership.
    async fn check_channel(&self, channel: &str) -> Result<(), ClientError> {
        let ep = &self.conn.endpoint;
        if !ep.channel_allowed(channel) {
            return Err(ClientError::new(
                ErrorKind::UnknownChannel,
                format!("channel `{channel}` does not exist on this endpoint"),
            ));
        }
        if ep.member_only(channel) && !self.is_member(channel).await? {
            return Err(ClientError::new(ErrorKind::NotMember, format!("not a member of `{channel}`")));
        }
        Ok(())
    }

    /// Membership: a matching JWT `channels` claim, or the channel's member set.
    async fn is_member(&self, channel: &str) -> Result<bool, ClientError> {
        let Principal::User(claims) = &self.principal else {
            return Ok(false);
        };
        if let Some(patterns) = &claims.channels {
            if patterns.iter().any(|p| WildMatch::new(p).matches(channel)) {
                return Ok(true);
            }
        }
        self.node.broker.set_contains(&members_key(channel), &claims.sub).await.map_err(|e| {
            tracing::warn!(error = %e, "membership lookup failed");
            ClientError::new(ErrorKind::Internal, "membership check unavailable; retry")
        })
    }

    /// A client sends an event to a conversation: delivered to the other members' user
    /// streams, stamped with the sender's id by the server.
    async fn publish(
        &mut self,
        channel: String,
        kind: String,
        payload: Box<RawValue>,
        ephemeral: bool,
    ) -> Result<(), ClientError> {
        let ep = self.conn.endpoint.clone();
        if !ep.config.client_publish_types.contains(&kind) {
            return Err(ClientError::new(ErrorKind::Forbidden, format!("`{kind}` cannot be sent on this endpoint")));
        }
        let Some(sender) = self.principal.user().map(str::to_owned) else {
            return Err(ClientError::new(ErrorKind::Forbidden, "only users can send messages"));
        };
        if !self.is_member(&channel).await? {
            return Err(ClientError::new(ErrorKind::NotMember, format!("not a member of `{channel}`")));
        }
        if !self.within_publish_limits(&sender, &channel, ephemeral).await? {
            // An extra typing indicator inside the interval is dropped: it carries nothing new.
            return Ok(());
        }
        let unavailable = |e: switchboard_broker::BrokerError| {
            tracing::warn!(error = %e, "chat publish failed");
            ClientError::new(ErrorKind::Internal, "message could not be delivered; retry")
        };
        let members = self.node.broker.set_members(&members_key(&channel)).await.map_err(unavailable)?;
        let mut event = Event {
            id: event_id(),
            kind,
            channel: Some(channel),
            user: None,
            ts: now_millis(),
            payload,
            sender: Some(sender.clone()),
            sid: None,
        };
        let mut messages = Vec::with_capacity(members.len());
        for member in members.into_iter().filter(|m| *m != sender) {
            event.user = Some(member);
            let body = serde_json::to_vec(&event).map_err(|e| ClientError::new(ErrorKind::Internal, e.to_string()))?;
            messages.push((user_topic(event.user.as_deref().unwrap_or_default()), Bytes::from(body)));
        }
        self.node.broker.publish_many(&messages).await.map_err(unavailable)
    }
}

impl MessageHandler for Session {
    fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    /// Greets the client and registers the topics every connection of the endpoint has (its
    /// user stream, the endpoint's broadcast channel).
    async fn start(&mut self) -> Result<(), CloseReason> {
        let ep = self.conn.endpoint.clone();
        let slots = self.quota_slots();
        match self.node.quotas.admit(slots, self.conn.id).await {
            Ok(true) => {}
            Ok(false) => return Err(CloseReason::ConnectionLimit),
            Err(e) => {
                tracing::warn!(error = %e, "quota check failed");
                return Err(CloseReason::Internal);
            }
        }
        if ep.codec.opt_in_event_types() && !ep.config.replay {
            // Until the client subscribes to event types it receives nothing. On a replaying
            // endpoint every type flows until the first subscribe narrows it: the replay
            // sends every type too, and a persisted event dropped in between would be
            // skipped by the saved cursor for good.
            self.conn.selection.write().types = Some(ShortSet::default());
        }
        let sid = session_id();
        self.reply(&Reply::Welcome { session_id: &sid, now_ms: now_millis() });
        let mut base = Vec::new();
        if ep.config.user_events {
            if let Some(user) = self.principal.user() {
                base.push(user_topic(user));
            }
        }
        if !ep.config.broadcast_channel.is_empty() {
            base.push(channel_topic(&ep.config.broadcast_channel));
        }
        let replay_for = self.principal.user().filter(|_| ep.config.replay).map(str::to_owned);
        if replay_for.is_some() {
            // Live events that arrive from here on wait until the missed ones are sent.
            self.conn.begin_hold();
        }
        self.register(&base).await.map_err(|_| CloseReason::Internal)?;
        if let Some(user) = replay_for {
            let node = &self.node;
            let after = replay::resume_point(node, &ep.config.path, &user, self.resume.as_deref()).await;
            let done = match after {
                Ok(after) => {
                    self.replay_start = Some(after);
                    replay::replay(node, &self.conn, &user, after).await
                }
                Err(e) => Err(e),
            };
            if let Err(e) = done {
                tracing::warn!(error = %e, "replay failed");
                return Err(CloseReason::Internal);
            }
        }
        Ok(())
    }

    /// Handles one complete client message.
    async fn handle(&mut self, message: &[u8], is_text: bool) {
        let codec = self.conn.endpoint.codec;
        if is_text != (codec.frame_kind() == FrameKind::Text) {
            let kind = if is_text { "binary" } else { "text" };
            let error = ClientError::new(ErrorKind::InvalidRequest, format!("this endpoint expects {kind} frames"));
            return self.reply(&Reply::Error { error: &error, request_id: None });
        }
        let command = match codec.decode(message) {
            Ok(c) => c,
            Err(error) => return self.reply(&Reply::Error { error: &error, request_id: None }),
        };
        let (request_id, result) = match command {
            Command::Subscribe { targets, filter, request_id } => {
                let result = self.subscribe(targets, filter).await;
                self.subscribed |= result.is_ok();
                (request_id, result)
            }
            Command::Unsubscribe { targets, request_id } => (request_id, self.unsubscribe(targets).await),
            Command::Ping { request_id } => {
                self.reply(&Reply::Pong { request_id: request_id.as_deref() });
                return;
            }
            Command::Publish { channel, kind, payload, ephemeral, request_id } => {
                (request_id, self.publish(channel, kind, payload, ephemeral).await)
            }
        };
        let request_id = request_id.as_deref();
        match result {
            Ok(()) => self.reply(&Reply::Ack { request_id }),
            Err(error) => self.reply(&Reply::Error { error: &error, request_id }),
        }
    }

    /// Unregisters everything; called once when the connection ends.
    async fn finish(&mut self) {
        if let (Some(start), Some(user)) = (self.replay_start, self.principal.user()) {
            replay::save_cursor(&self.node, &self.conn, user, start).await;
        }
        self.node.quotas.release(self.conn.id).await;
        let topics: Vec<String> = self.topics.take();
        for t in &topics {
            self.node.registry.remove(t, self.conn.id);
        }
        if let Err(e) = self.node.topics.reconcile(&topics).await {
            self.node.metrics.broker_errors.with_label_values(&["unsubscribe"]).inc();
            tracing::warn!(error = %e, "could not release broker subscriptions");
        }
        self.node.metrics.topics.set(self.node.registry.topic_count() as i64);
    }
}
