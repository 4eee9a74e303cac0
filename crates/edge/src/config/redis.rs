//! Which broker a node uses: the embedded one, one Redis server, a Redis Cluster, or the
//! master of a Redis Sentinel group (`[redis_sentinel]`), and the broker settings each makes.

use serde::{Deserialize, Deserializer, Serialize};
use switchboard_broker::redis::{RedisSettings, SentinelSettings};

use super::Config;

/// The master of a group that Redis Sentinel watches: found through the sentinels at the
/// start, and followed across failovers (re-resolved on errors, on `+switch-master`, and every
/// few seconds). Instead of `redis_url`; off while `master` is empty.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The group's name at the sentinels (`sentinel monitor <master> ...`, Bitnami's
    /// `sentinel.masterSet`, usually `mymaster`).
    #[serde(default)]
    pub master: String,
    /// The sentinels: `host:port`, or `redis://[:password@]host:port` when the sentinels
    /// require a password of their own; a list, or one string separated by commas.
    #[serde(default, deserialize_with = "list_or_commas")]
    pub sentinels: Vec<String>,
    /// The user on the master and replicas, if ACLs are on.
    #[serde(default)]
    pub username: String,
    /// The password of the master and replicas (`requirepass`), if any.
    #[serde(default)]
    pub password: String,
    /// The database number.
    #[serde(default)]
    pub db: i64,
}

impl SentinelConfig {
    /// Whether Sentinel is configured.
    pub fn is_on(&self) -> bool {
        !self.master.is_empty() || !self.sentinels.is_empty()
    }
}

/// A list of strings, or one string of items separated by commas (as an environment variable
/// gives it).
fn list_or_commas<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        One(String),
        Many(Vec<String>),
    }
    let items = match Given::deserialize(d)? {
        Given::One(s) => s.split(',').map(str::to_owned).collect(),
        Given::Many(v) => v,
    };
    Ok(items.into_iter().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect())
}

/// The broker a config names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// In process (`serve` without Redis).
    Embedded,
    /// One Redis server.
    Redis,
    /// A Redis Cluster.
    RedisCluster,
    /// The master of a Sentinel group.
    RedisSentinel,
}

impl BrokerKind {
    /// How the banner and `check-config` name it.
    pub fn describe(self) -> &'static str {
        match self {
            BrokerKind::Embedded => "embedded broker",
            BrokerKind::Redis => "Redis",
            BrokerKind::RedisCluster => "Redis Cluster",
            BrokerKind::RedisSentinel => "Redis through Sentinel",
        }
    }
}

impl Config {
    /// Which broker this config names.
    pub fn broker_kind(&self) -> BrokerKind {
        if self.redis_sentinel.is_on() {
            BrokerKind::RedisSentinel
        } else if self.redis_url.is_empty() {
            BrokerKind::Embedded
        } else if self.redis_cluster {
            BrokerKind::RedisCluster
        } else {
            BrokerKind::Redis
        }
    }

    /// The Redis settings, unless the broker is the embedded one.
    pub fn redis_settings(&self) -> Option<RedisSettings> {
        let p = &self.persistence;
        self.broker_settings().map(|s| s.with_replicas_ack(p.replicas_ack, p.ack_timeout))
    }

    fn broker_settings(&self) -> Option<RedisSettings> {
        match self.broker_kind() {
            BrokerKind::Embedded => None,
            BrokerKind::RedisSentinel => {
                let s = &self.redis_sentinel;
                let given = |v: &str| (!v.is_empty()).then(|| v.to_owned());
                Some(RedisSettings::sentinel(SentinelSettings {
                    master: s.master.clone(),
                    sentinels: s.sentinels.clone(),
                    username: given(&s.username),
                    password: given(&s.password),
                    db: s.db,
                }))
            }
            BrokerKind::Redis | BrokerKind::RedisCluster => {
                Some(RedisSettings::new(&self.redis_url, self.redis_cluster))
            }
        }
    }

    /// What is wrong with the broker settings: several seed URLs without cluster mode (the
    /// node would talk to the first as a single server and fail every command for a slot it
    /// does not own), and a Sentinel group given half, or beside another broker.
    pub(super) fn redis_problems(&self, problems: &mut Vec<String>) {
        let urls = self.redis_url.split(',').filter(|u| !u.trim().is_empty()).count();
        if urls > 1 && !self.redis_cluster {
            problems.push(format!(
                "redis_url: {urls} URLs are the seed nodes of a Redis Cluster: set redis_cluster = true \
                 (SWITCHBOARD_REDIS_CLUSTER=true), or give the one URL of a single server"
            ));
        }
        if self.persistence.replicas_ack > 0 && self.broker_kind() == BrokerKind::Embedded {
            problems.push("persistence.replicas_ack: the embedded broker has no replicas; set it with Redis".into());
        }
        let s = &self.redis_sentinel;
        if !s.is_on() {
            return;
        }
        if s.master.is_empty() {
            problems.push(
                "redis_sentinel.master: the group's name at the sentinels is required (usually `mymaster`)".into(),
            );
        }
        if s.sentinels.is_empty() {
            problems.push("redis_sentinel.sentinels: at least one `host:port` of a sentinel is required".into());
        }
        if !self.redis_url.is_empty() {
            problems.push(
                "redis_url / redis_sentinel: give one: the sentinels find the master (its password is \
                 redis_sentinel.password)"
                    .into(),
            );
        }
        if self.redis_cluster {
            problems.push("redis_cluster / redis_sentinel: a Redis Cluster fails over on its own; give one".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentinels_come_as_a_list_or_as_commas_and_problems_are_named() {
        let from_list: SentinelConfig =
            toml::from_str("master = \"mymaster\"\nsentinels = [\"a:26379\", \" b:26379 \"]").expect("parses");
        let from_commas: SentinelConfig =
            toml::from_str("master = \"mymaster\"\nsentinels = \"a:26379, b:26379,\"").expect("parses");
        assert_eq!(from_list, from_commas);
        assert_eq!(from_list.sentinels, ["a:26379", "b:26379"]);

        let mut c = crate::connection::testing::default_config();
        assert_eq!(c.broker_kind(), BrokerKind::Embedded);
        c.redis_sentinel = from_list;
        assert_eq!(c.broker_kind(), BrokerKind::RedisSentinel);
        assert!(c.problems().is_empty(), "{:?}", c.problems());
        let settings = c.redis_settings().expect("Redis");
        assert_eq!(settings.sentinel.map(|s| s.master), Some("mymaster".into()));
        c.redis_url = "redis://x:6379".into();
        c.redis_sentinel.master.clear();
        let problems = c.problems();
        assert!(problems.iter().any(|p| p.starts_with("redis_sentinel.master")), "{problems:?}");
        assert!(problems.iter().any(|p| p.starts_with("redis_url / redis_sentinel")), "{problems:?}");
    }
}
