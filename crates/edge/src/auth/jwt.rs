//! JWT verification (HS256 with a secret, RS256/ES256 with a PEM public key) and minting for
//! `switchboard token`.

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The claims Switchboard reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// Expiry, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    /// Session id, for revocation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Display name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Channel patterns this user may use (glob, `conversation:*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channels: Option<Vec<String>>,
}

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// Bad signature, wrong algorithm, wrong issuer or audience, not yet valid, malformed.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Verifies tokens with the configured key and rules.
#[derive(Clone)]
pub struct JwtVerifier {
    key: DecodingKey,
    validation: Validation,
}

/// A config problem with the JWT key.
#[derive(Debug, thiserror::Error)]
#[error("jwt: {0}")]
pub struct JwtConfigError(String);

fn algorithm(name: &str) -> Result<Algorithm, JwtConfigError> {
    match name {
        "HS256" => Ok(Algorithm::HS256),
        "RS256" => Ok(Algorithm::RS256),
        "ES256" => Ok(Algorithm::ES256),
        other => Err(JwtConfigError(format!("unsupported algorithm {other}"))),
    }
}

impl JwtVerifier {
    /// Builds the verifier from the config.
    pub fn from_config(config: &Config) -> Result<Self, JwtConfigError> {
        let jwt = &config.jwt;
        let alg = algorithm(&jwt.algorithm)?;
        let pem = jwt.public_key_pem.as_bytes();
        let key = match alg {
            Algorithm::HS256 => DecodingKey::from_secret(config.jwt_secret().as_bytes()),
            Algorithm::RS256 => {
                DecodingKey::from_rsa_pem(pem).map_err(|e| JwtConfigError(format!("public_key_pem: {e}")))?
            }
            _ => DecodingKey::from_ec_pem(pem).map_err(|e| JwtConfigError(format!("public_key_pem: {e}")))?,
        };
        let mut validation = Validation::new(alg);
        validation.leeway = jwt.leeway.as_secs();
        validation.validate_nbf = true;
        validation.required_spec_claims = ["sub".to_string()].into_iter().collect();
        if !jwt.issuer.is_empty() {
            validation.set_issuer(&[jwt.issuer.as_str()]);
        }
        if jwt.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[jwt.audience.as_str()]);
        }
        Ok(JwtVerifier { key, validation })
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) if data.claims.sub.is_empty() => Err(TokenError::Invalid("empty `sub`".into())),
            Ok(data) => Ok(data.claims),
            Err(e) if matches!(e.kind(), JwtErrorKind::ExpiredSignature) => Err(TokenError::Expired),
            Err(e) => Err(TokenError::Invalid(e.to_string())),
        }
    }
}

/// Mints an HS256 token with `sub`, `iat`, `exp` and extra claims (for `switchboard token`
/// and tests).
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
    claims.entry("exp").or_insert_with(|| (now + ttl_secs).into());
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!("[jwt]\nsecret = \"k\"\nleeway = \"0s\"\n{extra}")).unwrap()
    }

    #[test]
    fn verifies_good_tokens_and_rejects_bad_ones() {
        let v = JwtVerifier::from_config(&config("")).unwrap();
        let good = mint_hs256("k", "alice", 60, Default::default()).unwrap();
        assert_eq!(v.verify(&good).unwrap().sub, "alice");
        let wrong_key = mint_hs256("other", "alice", 60, Default::default()).unwrap();
        assert!(matches!(v.verify(&wrong_key), Err(TokenError::Invalid(_))));
        let mut past = serde_json::Map::new();
        past.insert("exp".into(), (jsonwebtoken::get_current_timestamp() - 100).into());
        let expired = mint_hs256("k", "alice", 0, past).unwrap();
        assert!(matches!(v.verify(&expired), Err(TokenError::Expired)));
        assert!(v.verify("not.a.jwt").is_err());
    }

    fn sign(alg: Algorithm, private_pem: &str, sub: &str) -> String {
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private_pem.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(private_pem.as_bytes()).unwrap(),
        };
        let claims = serde_json::json!({"sub": sub, "exp": jsonwebtoken::get_current_timestamp() + 60});
        jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
    }

    #[test]
    fn rs256_and_es256_tokens_verify_with_the_configured_public_key() {
        let keys = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys");
        for (alg, name) in [(Algorithm::RS256, "rs256"), (Algorithm::ES256, "es256")] {
            let private = std::fs::read_to_string(format!("{keys}/{name}_private.pem")).unwrap();
            let public = std::fs::read_to_string(format!("{keys}/{name}_public.pem")).unwrap();
            let toml = format!("[jwt]\nalgorithm = \"{alg:?}\"\npublic_key_pem = \"\"\"\n{public}\"\"\"\n");
            let v = JwtVerifier::from_config(&Config::from_toml(&toml).unwrap()).unwrap();
            assert_eq!(v.verify(&sign(alg, &private, "alice")).unwrap().sub, "alice", "{alg:?}");
            let hs = mint_hs256("k", "alice", 60, Default::default()).unwrap();
            assert!(v.verify(&hs).is_err(), "{alg:?} verifier must refuse an HS256 token");
        }
    }

    #[test]
    fn issuer_and_audience_are_enforced_when_configured() {
        let v = JwtVerifier::from_config(&config("issuer = \"me\"\naudience = \"ws\"\n")).unwrap();
        let mut claims = serde_json::Map::new();
        claims.insert("iss".into(), "me".into());
        claims.insert("aud".into(), "ws".into());
        assert!(v.verify(&mint_hs256("k", "a", 60, claims.clone()).unwrap()).is_ok());
        claims.insert("iss".into(), "you".into());
        assert!(v.verify(&mint_hs256("k", "a", 60, claims).unwrap()).is_err());
    }
}
