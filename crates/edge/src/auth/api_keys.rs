//! API keys for the threat stream: created through the admin API, stored only as SHA-256
//! hashes (in the broker, so every node sees them) or listed hashed in the config file.

use bytes::Bytes;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use switchboard_broker::{BrokerError, SharedBroker};
use switchboard_protocol::keyspace::{api_key_name as name_key, api_key_record as record_key, API_KEY_NAMES};

use crate::config::ConfiguredApiKey;

/// What is stored for a key (never the key itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiKeyRecord {
    /// The key's name.
    pub name: String,
    /// Endpoint paths it may use (empty: every API-key endpoint).
    #[serde(default)]
    pub endpoints: Vec<String>,
    /// Concurrent connections allowed.
    pub max_connections: u32,
}

impl ApiKeyRecord {
    /// Whether the key may connect to `path`.
    pub fn allows(&self, path: &str) -> bool {
        self.endpoints.is_empty() || self.endpoints.iter().any(|p| p == path)
    }
}

/// Why a key was not created.
#[derive(Debug, thiserror::Error)]
pub enum CreateKeyError {
    /// A key of that name exists.
    #[error("an API key of that name exists")]
    NameTaken,
    /// Shared state is unreachable; nothing was created.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// A key as the admin API lists it.
#[derive(Debug, Clone, Serialize)]
pub struct ListedApiKey {
    /// Its name, endpoints and connection limit.
    #[serde(flatten)]
    pub record: ApiKeyRecord,
    /// Where it was made: `config` (the config file) or `api` (the admin API).
    pub source: &'static str,
}

/// Hex SHA-256 of a key, the only form in which keys are stored.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

/// Reads and writes API keys.
#[derive(Clone)]
pub struct ApiKeyStore {
    broker: SharedBroker,
    configured: Vec<ConfiguredApiKey>,
}

impl ApiKeyStore {
    /// A store over the broker plus the keys listed in the config.
    pub fn new(broker: SharedBroker, configured: Vec<ConfiguredApiKey>) -> Self {
        ApiKeyStore { broker, configured }
    }

    /// The broker the keys are kept in (shared state the authenticator also reads).
    pub fn broker(&self) -> &SharedBroker {
        &self.broker
    }

    /// Creates a key; returns the plain key, which is shown once and never stored. A name is
    /// taken once (atomically, cluster-wide): replacing a key means deleting it first.
    pub async fn create(&self, record: &ApiKeyRecord) -> Result<String, CreateKeyError> {
        if self.configured.iter().any(|c| c.name == record.name) {
            return Err(CreateKeyError::NameTaken);
        }
        let mut raw = [0u8; 24];
        rand::rng().fill(&mut raw);
        let key = format!("sbk_{}", hex::encode(raw));
        let hash = hash_key(&key);
        let body = serde_json::to_vec(record).map_err(|e| BrokerError::Protocol(e.to_string()))?;
        let name = name_key(&record.name);
        if !self.broker.set_if_absent(&name, Bytes::from(hash.clone()), None).await? {
            return Err(CreateKeyError::NameTaken);
        }
        let stored = async {
            self.broker.set(&record_key(&hash), Bytes::from(body), None).await?;
            self.broker.set_add(API_KEY_NAMES, &record.name).await
        };
        if let Err(e) = stored.await {
            // Free the name again so that the caller's retry can take it (best effort).
            let _ = self.broker.delete(&name).await;
            return Err(e.into());
        }
        Ok(key)
    }

    /// Deletes a key by name; true if it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, BrokerError> {
        let Some(hash) = self.broker.take(&name_key(name)).await? else {
            return Ok(false);
        };
        self.broker.set_remove(API_KEY_NAMES, name).await?;
        self.broker.delete(&record_key(&String::from_utf8_lossy(&hash))).await
    }

    /// Every key (never a secret): those of the config file, then those created through the
    /// admin API, by name.
    pub async fn list(&self) -> Result<Vec<ListedApiKey>, BrokerError> {
        let mut keys: Vec<ListedApiKey> = self
            .configured
            .iter()
            .map(|c| ListedApiKey {
                record: ApiKeyRecord {
                    name: c.name.clone(),
                    endpoints: c.endpoints.clone(),
                    max_connections: c.max_connections,
                },
                source: "config",
            })
            .collect();
        let mut names = self.broker.set_members(API_KEY_NAMES).await?;
        names.sort();
        for name in names {
            let Some(hash) = self.broker.get(&name_key(&name)).await? else { continue };
            let Some(body) = self.broker.get(&record_key(&String::from_utf8_lossy(&hash))).await? else { continue };
            if let Ok(record) = serde_json::from_slice(&body) {
                keys.push(ListedApiKey { record, source: "api" });
            }
        }
        Ok(keys)
    }

    /// Looks a presented key up.
    pub async fn lookup(&self, key: &str) -> Result<Option<ApiKeyRecord>, BrokerError> {
        let hash = hash_key(key);
        if let Some(c) = self.configured.iter().find(|c| c.sha256.eq_ignore_ascii_case(&hash)) {
            return Ok(Some(ApiKeyRecord {
                name: c.name.clone(),
                endpoints: c.endpoints.clone(),
                max_connections: c.max_connections,
            }));
        }
        match self.broker.get(&record_key(&hash)).await? {
            Some(body) => Ok(serde_json::from_slice(&body).ok()),
            None => Ok(None),
        }
    }
}
