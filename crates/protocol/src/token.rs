//! The user token: the JWT claims Switchboard reads, and minting of development tokens.
//!
//! The claims are part of the contract between a back end (which signs tokens for its users)
//! and the gateway (which verifies them), so they are defined here once for the verifier in the
//! edge and for everything that mints tokens: `switchboard token`, the tests and the load tool.
//! Verification (keys, algorithms, required claims) lives in the edge.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Deserializer, Serialize};

/// The HS256 secret a node uses when none is configured. A node refuses to listen on anything
/// but loopback with it; tools use it to talk to such a node.
pub const DEV_JWT_SECRET: &str = "switchboard-dev-secret-do-not-use-in-production";
/// The admin key a node uses when none is configured (loopback only, like [`DEV_JWT_SECRET`]).
pub const DEV_ADMIN_KEY: &str = "switchboard-dev-admin-key";

/// The claims Switchboard reads from a user token. Strings and lists are boxed (two words
/// where a `String` or `Vec` takes three): every open connection keeps its claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id. A number in the token is kept as its decimal text.
    #[serde(deserialize_with = "string_or_number")]
    pub sub: Box<str>,
    /// Expiry, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Session id (revocation by session).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Box<str>>,
    /// Display name (shown to other users, e.g. in typing indicators).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Box<str>>,
    /// Channel patterns this user may use without being a listed member (glob: `conversation:*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Box<[String]>>,
    /// Which token these claims came from (128 bits of its SHA-256, set by the verifier,
    /// never read from the token): per-token connection limits count by it. Bytes, not hex:
    /// every connection keeps its claims.
    #[serde(skip)]
    pub token_digest: Option<[u8; 16]>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Box<str>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Sub {
        Text(String),
        Number(serde_json::Number),
    }
    Ok(match Sub::deserialize(d)? {
        Sub::Text(s) => s.into_boxed_str(),
        Sub::Number(n) => n.to_string().into_boxed_str(),
    })
}

/// Mints an HS256 token for `sub` valid for `ttl_secs`, with `iat`, `exp` and `extra` claims
/// (an `exp` in `extra` wins). For development, tests and load runs; production tokens come
/// from the application's own auth service.
pub fn mint_hs256(
    secret: &str,
    sub: &str,
    ttl_secs: u64,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = extra;
    claims.insert("sub".into(), sub.into());
    claims.insert("iat".into(), now.into());
    claims.entry("exp").or_insert_with(|| now.saturating_add(ttl_secs).into());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_numeric_subject_is_read_as_its_decimal_text() {
        let c: Claims = serde_json::from_str(r#"{"sub":12345,"exp":5}"#).expect("claims");
        assert_eq!((&*c.sub, c.exp), ("12345", Some(5)));
        let c: Claims = serde_json::from_str(r#"{"sub":"alice","channels":["conversation:*"]}"#).expect("claims");
        assert_eq!(c.channels.as_deref(), Some(&["conversation:*".to_string()][..]));
        assert!(serde_json::from_str::<Claims>(r#"{"sub":{"x":1}}"#).is_err());
    }

    #[test]
    fn minted_tokens_carry_sub_iat_exp_and_extras() {
        let mut extra = serde_json::Map::new();
        extra.insert("name".into(), "Alice".into());
        let token = mint_hs256("k", "alice", 60, extra).expect("mint");
        let mut validation = jsonwebtoken::Validation::new(Algorithm::HS256);
        validation.validate_aud = false;
        let data = jsonwebtoken::decode::<Claims>(&token, &jsonwebtoken::DecodingKey::from_secret(b"k"), &validation)
            .expect("valid");
        assert_eq!(&*data.claims.sub, "alice");
        assert_eq!(data.claims.name.as_deref(), Some("Alice"));
        assert!(data.claims.exp.is_some_and(|e| e >= jsonwebtoken::get_current_timestamp() + 59));
    }
}
