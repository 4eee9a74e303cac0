//! JWT verification: HS256 with a secret, RS256/ES256 with a PEM public key; exactly one
//! algorithm per node, so `alg: none` or a token signed another way is refused. A configured
//! issuer or audience must be present in the token, not merely match when present.

use jsonwebtoken::errors::ErrorKind as JwtErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use switchboard_protocol::token::Claims;

use crate::config::{Config, JwtAlgorithm};

/// Why a token was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// Bad signature, wrong algorithm, issuer or audience, not yet valid, malformed; the text
    /// says which, in words safe to show the client.
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

impl JwtVerifier {
    /// Builds the verifier from the config.
    pub fn from_config(config: &Config) -> Result<Self, JwtConfigError> {
        let jwt = &config.jwt;
        let pem = jwt.public_key_pem.as_bytes();
        let (alg, key) = match jwt.algorithm {
            JwtAlgorithm::HS256 => (Algorithm::HS256, DecodingKey::from_secret(config.jwt_secret().as_bytes())),
            JwtAlgorithm::RS256 => (
                Algorithm::RS256,
                DecodingKey::from_rsa_pem(pem).map_err(|e| JwtConfigError(format!("public_key_pem: {e}")))?,
            ),
            JwtAlgorithm::ES256 => (
                Algorithm::ES256,
                DecodingKey::from_ec_pem(pem).map_err(|e| JwtConfigError(format!("public_key_pem: {e}")))?,
            ),
        };
        let mut validation = Validation::new(alg);
        validation.leeway = jwt.leeway.as_secs();
        validation.validate_nbf = true;
        // `exp` is checked when present; whether it must be present is the endpoint's choice.
        let mut required = vec!["sub"];
        if !jwt.issuer.is_empty() {
            validation.set_issuer(&[jwt.issuer.as_str()]);
            required.push("iss");
        }
        if jwt.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[jwt.audience.as_str()]);
            required.push("aud");
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier { key, validation })
    }

    /// Verifies a token and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        match jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation) {
            Ok(data) if data.claims.sub.is_empty() => Err(TokenError::Invalid("empty `sub`".into())),
            Ok(mut data) => {
                use sha2::Digest;
                // 128 bits of SHA-256 name a token without storing it.
                let digest = sha2::Sha256::digest(token.as_bytes());
                data.claims.token_digest = digest[..16].try_into().ok();
                Ok(data.claims)
            }
            Err(e) => Err(match e.kind() {
                JwtErrorKind::ExpiredSignature => TokenError::Expired,
                kind => TokenError::Invalid(explain(kind)),
            }),
        }
    }
}

/// Why a token failed, for the person who minted it.
fn explain(kind: &JwtErrorKind) -> String {
    match kind {
        JwtErrorKind::InvalidSignature => "the signature does not match this server's key or secret".into(),
        JwtErrorKind::InvalidAlgorithm => "the token is signed with another algorithm than the server's".into(),
        JwtErrorKind::InvalidIssuer => "wrong `iss`".into(),
        JwtErrorKind::InvalidAudience => "wrong `aud`".into(),
        JwtErrorKind::ImmatureSignature => "not valid yet (`nbf`)".into(),
        JwtErrorKind::MissingRequiredClaim(claim) => format!("the `{claim}` claim is required"),
        JwtErrorKind::InvalidToken | JwtErrorKind::Base64(_) | JwtErrorKind::Json(_) | JwtErrorKind::Utf8(_) => {
            "not a well-formed JWT".into()
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use switchboard_protocol::token::mint_hs256;

    use super::*;

    fn config(extra: &str) -> Config {
        Config::from_toml(&format!("[jwt]\nsecret = \"k\"\nleeway = \"0s\"\n{extra}")).unwrap()
    }

    fn claims(pairs: &[(&str, serde_json::Value)]) -> serde_json::Map<String, serde_json::Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn verifies_good_tokens_and_rejects_bad_ones() {
        let v = JwtVerifier::from_config(&config("")).unwrap();
        let good = mint_hs256("k", "alice", 60, Default::default()).unwrap();
        assert_eq!(&*v.verify(&good).unwrap().sub, "alice");
        let wrong_key = mint_hs256("other", "alice", 60, Default::default()).unwrap();
        match v.verify(&wrong_key) {
            Err(TokenError::Invalid(why)) => assert!(why.contains("signature"), "{why}"),
            other => panic!("{other:?}"),
        }
        let past = claims(&[("exp", (jsonwebtoken::get_current_timestamp() - 100).into())]);
        assert!(matches!(v.verify(&mint_hs256("k", "alice", 0, past).unwrap()), Err(TokenError::Expired)));
        assert!(v.verify("not.a.jwt").is_err());
        let far = claims(&[("exp", (i64::MAX as u64).into())]);
        assert!(v.verify(&mint_hs256("k", "alice", 0, far).unwrap()).is_ok(), "a far expiry verifies (bounded later)");
    }

    #[test]
    fn alg_none_and_other_algorithms_are_refused() {
        let v = JwtVerifier::from_config(&config("")).unwrap();
        let good = mint_hs256("k", "alice", 60, Default::default()).unwrap();
        let parts: Vec<&str> = good.split('.').collect();
        // `{"alg":"none","typ":"JWT"}` and `{"alg":"HS512","typ":"JWT"}`, base64url.
        for header in ["eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0", "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9"] {
            for signature in ["", parts[2]] {
                let forged = format!("{header}.{}.{signature}", parts[1]);
                assert!(v.verify(&forged).is_err(), "{header} with signature {signature:?}");
            }
        }
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
            assert_eq!(&*v.verify(&sign(alg, &private, "alice")).unwrap().sub, "alice", "{alg:?}");
            let hs = mint_hs256("k", "alice", 60, Default::default()).unwrap();
            assert!(v.verify(&hs).is_err(), "{alg:?} verifier must refuse an HS256 token");
        }
    }

    #[test]
    fn issuer_and_audience_are_required_when_configured() {
        let v = JwtVerifier::from_config(&config("issuer = \"me\"\naudience = \"ws\"\n")).unwrap();
        let both = claims(&[("iss", "me".into()), ("aud", "ws".into())]);
        assert!(v.verify(&mint_hs256("k", "a", 60, both).unwrap()).is_ok());
        for bad in [
            claims(&[("iss", "you".into()), ("aud", "ws".into())]),
            claims(&[("iss", "me".into()), ("aud", "them".into())]),
            claims(&[("aud", "ws".into())]),
            claims(&[("iss", "me".into())]),
            claims(&[]),
        ] {
            let token = mint_hs256("k", "a", 60, bad.clone()).unwrap();
            assert!(matches!(v.verify(&token), Err(TokenError::Invalid(_))), "{bad:?}");
        }
    }
}
