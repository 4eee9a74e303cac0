//! The `[jwt]` section: how user tokens are verified (shared by every JWT endpoint).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::duration_str;

/// A signature algorithm the verifier accepts (exactly one per node, so a token signed with
/// another, or with `none`, is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    /// HMAC with SHA-256 and a shared secret.
    HS256,
    /// RSA PKCS#1 v1.5 with SHA-256 and a public key.
    RS256,
    /// ECDSA P-256 with SHA-256 and a public key.
    ES256,
}

/// JWT verification.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The algorithm tokens are signed with.
    #[serde(default = "default_alg")]
    pub algorithm: JwtAlgorithm,
    /// HS256 secret; empty means the development secret.
    #[serde(default)]
    pub secret: String,
    /// PEM public key (inline) for RS256/ES256.
    #[serde(default)]
    pub public_key_pem: String,
    /// Required `iss`, if set (a token without `iss` is refused).
    #[serde(default)]
    pub issuer: String,
    /// Required `aud`, if set (a token without `aud` is refused).
    #[serde(default)]
    pub audience: String,
    /// Clock skew tolerated on `exp` and `nbf`.
    #[serde(default = "default_leeway", with = "duration_str")]
    pub leeway: Duration,
    /// How long a revoked session id stays refused when the revocation does not say (set it
    /// to the longest lifetime of the tokens you issue).
    #[serde(default = "default_revocation", with = "duration_str")]
    pub revocation_ttl: Duration,
}

impl Default for JwtConfig {
    fn default() -> Self {
        JwtConfig {
            algorithm: default_alg(),
            secret: String::new(),
            public_key_pem: String::new(),
            issuer: String::new(),
            audience: String::new(),
            leeway: default_leeway(),
            revocation_ttl: default_revocation(),
        }
    }
}

fn default_alg() -> JwtAlgorithm {
    JwtAlgorithm::HS256
}
fn default_leeway() -> Duration {
    Duration::from_secs(30)
}
fn default_revocation() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
