//! Whether an event a back end publishes can reach anyone, so that the publish API refuses
//! what no endpoint of the deployment would ever deliver (a type no endpoint carries, a
//! channel no endpoint allows) with a `422` naming what is allowed, instead of a `200` for an
//! event that goes nowhere.
//!
//! The check is on the configuration, not on who is connected now: an event for a channel
//! nobody subscribes to at the moment is still accepted.

use std::sync::Arc;

use crate::endpoint::EndpointRuntime;
use crate::publish::Audience;

/// Why no endpoint would deliver an event of type `kind` to `audience`, with what would be
/// delivered instead; `None` when some endpoint does.
pub fn unreachable(endpoints: &[Arc<EndpointRuntime>], audience: &Audience, kind: &str) -> Option<String> {
    match audience {
        Audience::Channel(channel) => {
            let carries = |e: &EndpointRuntime| {
                (e.channel_allowed(channel) || e.config.broadcast_channel == *channel || e.member_routed(channel))
                    && e.allows_type(kind)
            };
            if endpoints.iter().any(|e| carries(e)) {
                return None;
            }
            let offers: Vec<String> = endpoints
                .iter()
                .filter(|e| {
                    !e.config.channels.allowed.is_empty()
                        || !e.config.broadcast_channel.is_empty()
                        || e.delivers_member_events()
                })
                .map(|e| {
                    let mut channels = e.config.channels.allowed.clone();
                    if !e.config.broadcast_channel.is_empty() {
                        channels.push(format!("{} (broadcast)", e.config.broadcast_channel));
                    }
                    if e.delivers_member_events() {
                        channels.extend(e.config.channels.member_only.iter().map(|c| format!("{c} (to members)")));
                    }
                    format!("{}: channels {}; types {}", e.path(), channels.join(", "), types(e))
                })
                .collect();
            Some(format!(
                "no endpoint delivers `{kind}` events on channel `{channel}`; what they deliver: {}",
                list(offers)
            ))
        }
        Audience::Users(_) | Audience::Members { .. } | Audience::ChannelAndMembers { .. } => {
            let to_users = |e: &EndpointRuntime| e.config.user_events && e.has_users();
            if endpoints.iter().any(|e| to_users(e) && e.allows_type(kind)) {
                return None;
            }
            let offers: Vec<String> =
                endpoints.iter().filter(|e| to_users(e)).map(|e| format!("{}: types {}", e.path(), types(e))).collect();
            Some(format!("no endpoint delivers `{kind}` events to users; what they deliver: {}", list(offers)))
        }
    }
}

fn types(e: &EndpointRuntime) -> String {
    if e.config.event_types.is_empty() {
        "any".to_owned()
    } else {
        e.type_list()
    }
}

fn list(offers: Vec<String>) -> String {
    if offers.is_empty() {
        "nothing".to_owned()
    } else {
        offers.join(" | ")
    }
}
