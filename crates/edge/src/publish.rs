//! One way in for every event, whoever sends it: the back end's publish API and clients that
//! send on a channel (chat) go through the same checks and the same fan-out.
//!
//! A publication is validated, given an id and a timestamp, stamped with its sender (never
//! trusted from a client), and turned into broker messages: an event for a channel is one
//! message on the channel's topic; an event for users is one message per user topic, the same
//! bytes for all of them (encoded once, however many recipients); persistent events go to the
//! ingest log instead, one entry per user, and reach the users once the worker has stored them.
//! Nothing is acknowledged unless the broker took it.

use bytes::Bytes;
use serde_json::value::RawValue;
use switchboard_broker::{BrokerError, SharedBroker};
use switchboard_protocol::keyspace::{channel_topic, ingest_log, publish_rate, typing_throttle, user_topic};
use switchboard_protocol::timefmt::now_millis;
use switchboard_protocol::{ClientError, ClientSender, ErrorKind, Event};
use switchboard_worker::shard_for;

use crate::auth::Principal;
use crate::config::{ClientPublishAudience, PersistenceConfig};
use crate::endpoint::EndpointRuntime;
use crate::idempotency::PublishedIds;
use crate::ids::event_id;
use crate::membership::Membership;

/// Most users one event may address.
pub const MAX_USERS: usize = 10_000;
/// Longest name (channel, user, type, id).
pub const MAX_NAME: usize = 256;

/// Who an event is for.
#[derive(Debug, Clone)]
pub enum Audience {
    /// A channel's subscribers.
    Channel(String),
    /// These users' connections.
    Users(Vec<String>),
    /// A channel's subscribers, and its members' connections on endpoints that deliver the
    /// channel by membership (a back end's chat message): one event, both ways.
    ChannelAndMembers {
        /// The channel.
        channel: String,
        /// Its members.
        users: Vec<String>,
    },
    /// These users' connections, for an event of a channel they are members of (chat): the
    /// event names the channel.
    Members {
        /// The channel.
        channel: String,
        /// Its members who receive the event.
        users: Vec<String>,
    },
}

/// An event to publish, before it has an id, a time and its broker form.
#[derive(Debug)]
pub struct Publication {
    /// Who it is for.
    pub audience: Audience,
    /// Event type.
    pub kind: String,
    /// Body, raw JSON as given.
    pub payload: Box<RawValue>,
    /// The publisher's id for it (else one is generated).
    pub id: Option<String>,
    /// Keep it for replay (user audiences only); `None`: as `persistence.types` says.
    pub persist: Option<bool>,
    /// The user who sent it, for client-sent events.
    pub sender: Option<String>,
    /// Whether it goes back to the sender's own connections too (see [`Event::echo`]).
    pub echo: bool,
    /// The payload is raw bytes, as a base64 JSON string (see [`Event::binary`]).
    pub binary: bool,
    /// The publishing span's `traceparent`, while tracing is on (see [`Event::traceparent`]).
    pub traceparent: Option<String>,
}

/// Why a publication was refused.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The publication is malformed (the message says how).
    #[error("{0}")]
    Invalid(String),
}

/// What a client sent on a channel (a decoded `Command::Publish`).
#[derive(Debug)]
pub struct ClientSend {
    /// The channel.
    pub channel: String,
    /// Its type, as the client named it (`typing`, `message`).
    pub kind: String,
    /// Its body.
    pub payload: Box<RawValue>,
    /// Never stored (typing indicators).
    pub ephemeral: bool,
}

/// Broker messages of one or more publications, sent together.
#[derive(Default)]
pub struct Outgoing {
    live: Vec<(String, Bytes)>,
    ingest: Vec<(String, Bytes)>,
}

impl Outgoing {
    /// Adds what `other` holds after what this one holds.
    pub fn append(&mut self, other: Outgoing) {
        self.live.extend(other.live);
        self.ingest.extend(other.ingest);
    }

    /// How many ingest entries (persistent events, one per user) were added so far: the
    /// positions [`PublishService::send`] returns are in this order.
    pub fn persisted(&self) -> usize {
        self.ingest.len()
    }
}

/// What publishing a batch produced: the log positions of its persistent events, in order.
pub type Positions = Vec<String>;

/// The publish service of a node.
pub struct PublishService {
    broker: SharedBroker,
    persistence: PersistenceConfig,
    membership: Membership,
    published_ids: PublishedIds,
}

fn check_name(what: &str, s: &str) -> Result<(), PublishError> {
    if s.is_empty() || s.len() > MAX_NAME || s.chars().any(char::is_control) {
        return Err(PublishError::Invalid(format!(
            "`{what}` must be 1 to {MAX_NAME} characters without control characters"
        )));
    }
    Ok(())
}

fn encode(event: &Event) -> Bytes {
    // An event of strings and raw JSON always serializes.
    Bytes::from(serde_json::to_vec(event).unwrap_or_default())
}

impl PublishService {
    /// A service publishing through `broker`.
    pub fn new(broker: SharedBroker, persistence: PersistenceConfig, membership: Membership) -> PublishService {
        let published_ids = PublishedIds::new(broker.clone(), persistence.retention);
        PublishService { broker, persistence, membership, published_ids }
    }

    /// The idempotency keys of back ends' event ids.
    pub fn published_ids(&self) -> &PublishedIds {
        &self.published_ids
    }

    /// Validates `publication` and adds its broker messages to `out`; returns the event id. Its
    /// log positions are those of the ingest entries it added (see [`Outgoing::persisted`]).
    pub fn prepare(&self, publication: Publication, out: &mut Outgoing) -> Result<String, PublishError> {
        let Publication { audience, kind, payload, id, persist, sender, echo, binary, traceparent } = publication;
        check_name("type", &kind)?;
        if let Some(id) = &id {
            check_name("id", id)?;
        }
        let mut event = Event {
            id: id.unwrap_or_else(event_id),
            kind,
            channel: None,
            user: None,
            ts: now_millis(),
            payload,
            sender,
            echo,
            binary,
            position: None,
            prev: None,
            traceparent,
        };
        let event_id = event.id.clone();
        match audience {
            Audience::Channel(channel) => {
                check_name("channel", &channel)?;
                let topic = channel_topic(&channel);
                event.channel = Some(channel);
                out.live.push((topic, encode(&event)));
            }
            Audience::Members { channel, users } => {
                check_name("channel", &channel)?;
                event.channel = Some(channel);
                self.to_users(event, users, persist, out)?;
            }
            Audience::ChannelAndMembers { channel, users } => {
                check_name("channel", &channel)?;
                let topic = channel_topic(&channel);
                event.channel = Some(channel);
                out.live.push((topic, encode(&event)));
                self.to_users(event, users, persist, out)?;
            }
            Audience::Users(users) => self.to_users(event, users, persist, out)?,
        }
        Ok(event_id)
    }

    /// Adds the messages of `event` for `users` to `out`.
    fn to_users(
        &self,
        mut event: Event,
        users: Vec<String>,
        persist: Option<bool>,
        out: &mut Outgoing,
    ) -> Result<(), PublishError> {
        if users.is_empty() || users.len() > MAX_USERS {
            return Err(PublishError::Invalid(format!("`users` must list 1 to {MAX_USERS} users")));
        }
        for user in &users {
            check_name("user", user)?;
        }
        if persist.unwrap_or_else(|| self.persistence.types.contains(&event.kind)) {
            // Each user's entry names the user: the worker routes by it.
            for user in users {
                let log = ingest_log(shard_for(&user, self.persistence.shards));
                event.user = Some(user);
                out.ingest.push((log, encode(&event)));
            }
        } else {
            // One encoding for every recipient: the same bytes on each user topic.
            let bytes = encode(&event);
            out.live.extend(users.iter().map(|u| (user_topic(u), bytes.clone())));
        }
        Ok(())
    }

    /// A back end's event for a channel that some endpoint delivers by membership (a chat
    /// conversation) goes to the members' connections there too, besides the channel's
    /// subscribers; other publications are returned as they are.
    pub async fn route_members(
        &self,
        endpoints: &[std::sync::Arc<EndpointRuntime>],
        mut publication: Publication,
    ) -> Result<Publication, BrokerError> {
        if let Audience::Channel(channel) = &publication.audience {
            if endpoints.iter().any(|e| e.member_routed(channel) && e.allows_type(&publication.kind)) {
                let users = self.membership.members(channel).await?;
                if !users.is_empty() {
                    publication.audience = Audience::ChannelAndMembers { channel: channel.clone(), users };
                }
            }
        }
        Ok(publication)
    }

    /// Sends what [`Self::prepare`] made: the ingest entries in one round trip (a user's events
    /// keep their order; the workers' blocking reads of the ingest shards return at once), then
    /// the live messages; returns the ingest positions.
    pub async fn send(&self, out: Outgoing) -> Result<Positions, BrokerError> {
        let ids = self.broker.append_many(&out.ingest, self.persistence.retention).await?;
        let positions: Positions = ids.iter().map(ToString::to_string).collect();
        self.broker.publish_many(&out.live).await?;
        Ok(positions)
    }

    /// A client's event to a channel: allowed on the endpoint, sent by a member, within the
    /// per-user limits, shaped by the dialect (typing becomes who is typing), delivered to the
    /// channel's other members or subscribers, never back to the sender. Typing indicators over
    /// the limit are dropped silently (they carry nothing new). `subscribed`: the sender holds
    /// a live subscription to the channel (its membership was checked when it was made, and it
    /// ends when the membership does).
    pub async fn client_send(
        &self,
        principal: &Principal,
        endpoint: &EndpointRuntime,
        send: ClientSend,
        subscribed: bool,
    ) -> Result<(), ClientError> {
        let ClientSend { channel, kind, payload, ephemeral } = send;
        let rules = &endpoint.config.publish;
        if !rules.types.contains(&kind) {
            return Err(ClientError::new(ErrorKind::Forbidden, format!("`{kind}` cannot be sent on this endpoint")));
        }
        if !endpoint.client_publish_allowed(&channel) {
            return Err(ClientError::new(
                ErrorKind::Forbidden,
                format!(
                    "clients cannot publish on `{channel}` here; allowed: {}",
                    endpoint.config.publish.channels.join(", ")
                ),
            ));
        }
        let Some(sender) = principal.user() else {
            return Err(ClientError::new(ErrorKind::Forbidden, "only users can send messages"));
        };
        let unavailable = |what: &'static str| {
            move |e: BrokerError| {
                tracing::warn!(error = %e, "{what} failed");
                ClientError::new(ErrorKind::Internal, "message could not be sent; retry")
            }
        };
        let to_members = rules.to == ClientPublishAudience::Members;
        let check_membership = to_members || (endpoint.member_only(&channel) && !subscribed);
        if check_membership
            && !self.membership.is_member(principal, &channel).await.map_err(unavailable("membership check"))?
        {
            return Err(ClientError::new(ErrorKind::NotMember, format!("not a member of `{channel}`")));
        }
        if ephemeral {
            let key = typing_throttle(sender, &channel);
            let fresh =
                self.broker.set_if_absent_lossy(&key, Bytes::from_static(b"1"), Some(rules.typing_interval)).await;
            if !fresh.map_err(unavailable("typing throttle"))? {
                return Ok(());
            }
        } else if rules.rate_per_user > 0 {
            let window = std::time::Duration::from_secs(1);
            let n =
                self.broker.incr_in_window(&publish_rate(sender), window).await.map_err(unavailable("rate limit"))?;
            if n > u64::from(rules.rate_per_user) {
                return Err(ClientError::new(
                    ErrorKind::RateLimited,
                    format!("at most {} messages per second; retry in 1 s", rules.rate_per_user),
                ));
            }
        }
        let who = ClientSender { user: sender, display_name: principal.display_name() };
        let (kind, payload) = endpoint.codec.client_event(&kind, &channel, &payload, &who)?;
        let audience = if to_members {
            let members = self.membership.members(&channel).await.map_err(unavailable("member lookup"))?;
            // The sender's own connections get what they sent (not what is ephemeral): the
            // confirmation on the sending one, the copy on their other devices.
            let recipients: Vec<String> = members.into_iter().filter(|m| !ephemeral || m != sender).collect();
            if recipients.is_empty() {
                return Ok(());
            }
            Audience::Members { channel, users: recipients }
        } else {
            Audience::Channel(channel)
        };
        let publication = Publication {
            audience,
            kind,
            payload,
            id: None,
            persist: ephemeral.then_some(false),
            sender: Some(sender.to_owned()),
            echo: !ephemeral && rules.echo,
            binary: false,
            traceparent: None,
        };
        let mut out = Outgoing::default();
        self.prepare(publication, &mut out).map_err(|e| ClientError::new(ErrorKind::InvalidRequest, e.to_string()))?;
        self.send(out).await.map_err(unavailable("chat publish"))?;
        Ok(())
    }
}
