//! A connection's state machine for the real endpoints: what it is subscribed to and how it
//! answers each command. Dialect-neutral: the codec decodes commands and encodes replies; this
//! module decides, through the node's [`SessionServices`] (a narrow context: no node, no
//! sockets), so a session is unit-tested with a recording sink.

mod services;
mod subscribe;

#[cfg(test)]
mod tests;

use std::sync::Arc;

use switchboard_broker::{LogId, Topic};
use switchboard_protocol::keyspace::{channel_topic, user_topic};
use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::{ClientError, CloseReason, Command, ErrorKind, FrameKind, Reply};

pub use services::SessionServices;

use crate::auth::Principal;
use crate::connection::{ConnHandle, MessageHandler, Subscriptions};
use crate::endpoint::EndpointRuntime;
use crate::ids::session_id;
use crate::publish::ClientSend;
use crate::quota;
use crate::topic_set::TopicSet;

/// Where a connection's replay stands (one field: a session lives as long as its connection).
enum Replay {
    /// Not started: the `last_event_id` the client gave, if any.
    NotStarted(Option<Box<str>>),
    /// Replayed from this position; the cursor saved at the end counts from here.
    From(LogId),
}

/// One connection's subscriptions and command handling.
pub struct Session {
    services: Arc<SessionServices>,
    conn: Arc<ConnHandle>,
    principal: Arc<Principal>,
    /// Every broker topic this connection is registered on.
    topics: TopicSet,
    /// Where the connection's replay stands.
    replay: Replay,
    /// Whether a subscribe command succeeded on this connection.
    subscribed: bool,
}

impl Session {
    /// A session for an accepted connection.
    pub fn new(
        services: Arc<SessionServices>,
        conn: Arc<ConnHandle>,
        principal: Arc<Principal>,
        resume: Option<String>,
    ) -> Self {
        Session {
            services,
            conn,
            principal,
            topics: TopicSet::default(),
            replay: Replay::NotStarted(resume.map(String::into_boxed_str)),
            subscribed: false,
        }
    }

    /// The subscriptions a connection to `endpoint` starts with. Where clients pick event
    /// types, nothing flows until they do; on a replaying endpoint every type flows until the
    /// first subscribe narrows it: the replay sends every type too, and a persisted event dropped
    /// in between would be skipped by the saved cursor for good.
    pub fn initial_subscriptions(endpoint: &EndpointRuntime) -> Subscriptions {
        if endpoint.codec.opt_in_event_types() && !endpoint.config.replay.enabled {
            Subscriptions::opt_in()
        } else {
            Subscriptions::default()
        }
    }

    fn reply(&self, reply: &Reply<'_>) {
        if let Some(bytes) = self.conn.endpoint.codec.encode_reply(reply) {
            self.conn.send(bytes);
        }
    }

    /// Reports a failed request; where the dialect ends connections on this failure (a
    /// subscription over the limit), closes the connection after the report.
    fn error(&self, error: &ClientError, request_id: Option<&str>) {
        self.reply(&Reply::Error { error, request_id });
        if let Some(reason) = self.conn.endpoint.codec.closes_after(error.kind) {
            self.conn.close(reason);
        }
    }

    /// Registers the connection on `topics` and makes sure this node's broker subscriptions
    /// cover them before returning. Registration is idempotent, so a topic dropped behind the
    /// session's back (a membership revoked cluster-wide) is simply registered again.
    async fn register(&mut self, topics: &[Topic]) -> Result<(), ClientError> {
        let s = &self.services;
        let topics: Vec<Topic> = topics.iter().map(|t| s.registry.add(t.clone(), &self.conn)).collect();
        for t in &topics {
            self.topics.insert(t.clone());
        }
        s.metrics.topics.set(s.registry.topic_count() as i64);
        if let Err(e) = s.topics.reconcile(&topics).await {
            s.metrics.broker_errors.with_label_values(&["subscribe"]).inc();
            tracing::warn!(error = %e, "broker subscribe failed");
            // Leave no local registration behind that the broker does not back.
            self.unregister(&topics).await;
            return Err(ClientError::new(ErrorKind::SubscriptionFailed, "subscription temporarily unavailable; retry"));
        }
        Ok(())
    }

    async fn unregister(&mut self, topics: &[impl AsRef<str>]) {
        let s = &self.services;
        let gone: Vec<Topic> = topics.iter().filter_map(|t| self.topics.remove(t.as_ref())).collect();
        for t in &gone {
            s.registry.remove(t, self.conn.id);
        }
        if s.topics.reconcile(&gone).await.is_err() {
            s.metrics.broker_errors.with_label_values(&["unsubscribe"]).inc();
        }
        s.metrics.topics.set(s.registry.topic_count() as i64);
    }
}

impl Session {
    /// Carries out one decoded command and answers it.
    async fn execute(&mut self, command: Command) {
        let (request_id, result) = match command {
            Command::Subscribe { targets, filter, request_id } => {
                let result = self.subscribe(targets, filter).await;
                self.subscribed |= result.is_ok();
                (request_id, result)
            }
            Command::Unsubscribe { targets, request_id } => (request_id, self.unsubscribe(targets).await),
            Command::Ping { request_id, echo } => {
                let request_id = request_id.as_deref();
                return self.reply(&Reply::Pong { request_id, echo: &echo, now_ms: now_millis() });
            }
            Command::Pong { .. } => return self.conn.pong_received(now_millis()),
            Command::Publish { channel, kind, payload, ephemeral, request_id } => {
                let ep = &self.conn.endpoint;
                let subscribed = self.conn.subscriptions().has_channel(&channel_topic(&channel));
                if ep.config.publish.require_subscription && !subscribed {
                    let error =
                        ClientError::new(ErrorKind::NotSubscribed, format!("subscribe to `{channel}` before sending"));
                    (request_id, Err(error))
                } else {
                    let send = ClientSend { channel, kind, payload, ephemeral };
                    let sent = self.services.publisher.client_send(&self.principal, ep, send, subscribed);
                    (request_id, sent.await)
                }
            }
        };
        let request_id = request_id.as_deref();
        match result {
            Ok(()) => self.reply(&Reply::Ack { request_id }),
            Err(error) => self.error(&error, request_id),
        }
    }
}

impl MessageHandler for Session {
    fn is_subscribed(&self) -> bool {
        self.subscribed
    }

    /// Admits the connection (cluster-wide quotas), greets the client, registers the topics
    /// every connection of the endpoint has (its user stream, the endpoint's broadcast
    /// channel) and replays what the user missed where the endpoint replays. The admission
    /// and the lookup of where the replay resumes are independent, so they are asked at once
    /// rather than one round trip after the other.
    async fn start(&mut self) -> Result<(), CloseReason> {
        let ep = self.conn.endpoint.clone();
        let services = self.services.clone();
        let quotas = quota::ConnQuotas::new(self.principal.clone(), ep.clone(), services.total_per_user);
        let replay_for = self.principal.user().filter(|_| ep.config.replay.enabled).map(str::to_owned);
        let resume = match &self.replay {
            Replay::NotStarted(resume) => resume.as_deref(),
            Replay::From(_) => None,
        };
        let resume_point = async {
            match &replay_for {
                Some(user) => services.replayer.resume_point(ep.path(), user, resume).await.map(Some),
                None => Ok(None),
            }
        };
        let (admitted, resume_point) = tokio::join!(services.quotas.admit(quotas, self.conn.id), resume_point);
        match admitted {
            Ok(true) => {}
            Ok(false) => return Err(CloseReason::ConnectionLimit),
            Err(e) => {
                tracing::warn!(error = %e, "quota check failed");
                return Err(CloseReason::Internal);
            }
        }
        if let Some(sid) = self.principal.session() {
            services.index.add_session(sid, &self.conn);
        }
        if ep.config.presence.enabled {
            if let Err(e) = services.presence.joined(&self.principal, self.conn.id).await {
                services.metrics.broker_errors.with_label_values(&["presence_join"]).inc();
                tracing::warn!(error = %e, "could not record presence");
            }
        }
        let sid = session_id();
        self.reply(&Reply::Welcome { session_id: &sid, now_ms: now_millis() });
        // Every user connection is on its user's topic: it is how control messages find it;
        // the endpoint decides whether events published there reach the client.
        let mut base = Vec::new();
        if let Some(user) = self.principal.user() {
            base.push(Topic::from(user_topic(user)));
        }
        if let Some(topic) = ep.broadcast_topic() {
            base.push(services.registry.intern(topic));
        }
        if replay_for.is_some() {
            // Live events that arrive from here on wait until the missed ones are sent.
            self.conn.begin_hold();
        }
        self.register(&base).await.map_err(|_| CloseReason::Internal)?;
        if let Some(user) = replay_for {
            let replayed = match resume_point {
                Ok(after) => services.replayer.replay(&self.conn, &user, after.flatten()).await,
                Err(e) => Err(e),
            };
            match replayed {
                Ok(start) => self.replay = Replay::From(start),
                Err(e) => {
                    tracing::warn!(error = %e, "replay failed");
                    return Err(CloseReason::Internal);
                }
            }
        }
        Ok(())
    }

    /// Sends what the connection missed live from the user's log, on endpoints that replay
    /// (the task asks only once `start`, and with it the replay on connect, is done).
    async fn catch_up(&mut self) {
        if let (Replay::From(_), Some(user)) = (&self.replay, self.principal.user()) {
            self.services.replayer.catch_up(&self.conn, user).await;
        }
    }

    /// Handles one complete client message.
    async fn handle(&mut self, message: &[u8], is_text: bool) {
        let codec = self.conn.endpoint.codec;
        if is_text != (codec.frame_kind() == FrameKind::Text) {
            let kind = if is_text { "binary" } else { "text" };
            let error = ClientError::new(ErrorKind::InvalidRequest, format!("this endpoint expects {kind} frames"));
            return self.error(&error, None);
        }
        match codec.decode(message) {
            Ok(command) => self.execute(command).await,
            Err(error) => self.error(&error, codec.request_id_of(message).as_deref()),
        }
    }

    /// Gives back everything the connection held; called once when it ends. The cursor, the
    /// quota slots and the presence entry are written at once (pipelined on the broker
    /// connection, in that order), not one round trip after the other.
    async fn finish(&mut self) {
        let services = self.services.clone();
        let save_cursor = async {
            if let (Replay::From(start), Some(user)) = (&self.replay, self.principal.user()) {
                services.replayer.save_cursor(&self.conn, user, *start).await;
            }
        };
        tokio::join!(save_cursor, services.quotas.release(self.conn.id), services.presence.left(self.conn.id));
        if let Some(sid) = self.principal.session() {
            services.index.remove_session(sid, self.conn.id);
        }
        let topics: Vec<Topic> = self.topics.take();
        for t in &topics {
            services.registry.remove(t, self.conn.id);
        }
        if let Err(e) = services.topics.reconcile(&topics).await {
            services.metrics.broker_errors.with_label_values(&["unsubscribe"]).inc();
            tracing::warn!(error = %e, "could not release broker subscriptions");
        }
        services.metrics.topics.set(services.registry.topic_count() as i64);
    }
}
