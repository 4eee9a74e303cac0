//! Any token a client presents, and any claims a token signed with the node's secret carries:
//! verification never panics, and an accepted token has a non-empty subject and a digest.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use switchboard_edge::auth::jwt::JwtVerifier;
use switchboard_edge::config::Config;
use switchboard_protocol::token::mint_hs256;

const SECRET: &str = "fuzz-secret";

fn verifier() -> &'static JwtVerifier {
    static V: OnceLock<JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let config = Config::from_toml(&format!(
            "[jwt]\nsecret = \"{SECRET}\"\nissuer = \"https://auth.example\"\naudience = \"switchboard\"\nleeway = \"30s\"\n"
        ))
        .expect("a valid config");
        JwtVerifier::from_config(&config).expect("a verifier")
    })
}

fn check(token: &str) {
    if let Ok(claims) = verifier().verify(token) {
        assert!(!claims.sub.is_empty(), "accepted with an empty sub");
        assert!(claims.token_digest.is_some(), "accepted without a digest");
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    if mode % 2 == 0 {
        // What a client sends as `?token=`: any text.
        check(text);
    } else if let Ok(serde_json::Value::Object(claims)) = serde_json::from_str(text) {
        // Validly signed, so the claims themselves are what is tested: types, exp/nbf/iss/aud.
        let sub = claims.get("sub").and_then(|s| s.as_str()).unwrap_or("fuzz").to_owned();
        if let Ok(token) = mint_hs256(SECRET, &sub, 60, claims) {
            check(&token);
        }
    }
});
