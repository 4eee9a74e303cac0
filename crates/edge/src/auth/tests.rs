//! The authenticator's behavioural suite: every method, with good, missing, wrong and expired
//! credentials, on the in-process broker.

use std::sync::Arc;

use switchboard_broker::memory::MemoryHub;
use switchboard_broker::{DeliverySink, SharedBroker};
use switchboard_protocol::token::mint_hs256;

use super::*;
use crate::config::Config;
use crate::connection::testing::{default_config, endpoint_with};

struct Nowhere;
impl DeliverySink for Nowhere {
    fn deliver(&self, _: &str, _: bytes::Bytes) {}
}

fn authenticator(config: &Config) -> Authenticator {
    authenticator_with_broker(config).0
}

fn authenticator_with_broker(config: &Config) -> (Authenticator, SharedBroker) {
    let broker: SharedBroker = Arc::new(MemoryHub::new().node(Arc::new(Nowhere)));
    let auth = Authenticator::new(
        JwtVerifier::from_config(config).expect("verifier"),
        ApiKeyStore::new(broker.clone(), config.api_keys.clone()),
        TicketStore::new(broker.clone(), config.tickets.clone()),
    );
    (auth, broker)
}

fn refused(result: Result<Authenticated, AuthError>) -> AuthFailure {
    match result {
        Err(AuthError::Refused(failure, _)) => failure,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn token(sub: &str, extra: &[(&str, serde_json::Value)]) -> String {
    let secret = default_config().jwt_secret().to_owned();
    mint_hs256(&secret, sub, 60, extra.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()).expect("mint")
}

fn now() -> u64 {
    now_millis() / 1000
}

#[tokio::test]
async fn user_tokens() {
    let config = default_config();
    let auth = authenticator(&config);
    let ep = endpoint_with("/ws", |_| {});
    fn creds(t: &str) -> Credentials<'_> {
        Credentials { token: Some(t), api_key: None, ticket: None }
    }

    let ok = auth.authenticate(&ep, creds(&token("alice", &[("sid", "s1".into())]))).await.expect("valid");
    assert_eq!((ok.principal.user(), ok.principal.session()), (Some("alice"), Some("s1")));
    assert!(ok.expires_at.is_some_and(|e| e >= now() + 59 && e <= now() + 61));

    assert_eq!(refused(auth.authenticate(&ep, Credentials::default()).await), AuthFailure::MissingToken);
    assert_eq!(refused(auth.authenticate(&ep, creds("nope")).await), AuthFailure::InvalidToken);
    let foreign = mint_hs256("another-secret", "alice", 60, Default::default()).expect("mint");
    assert_eq!(refused(auth.authenticate(&ep, creds(&foreign)).await), AuthFailure::InvalidToken);
    let expired = token("alice", &[("exp", (now() - 3600).into())]);
    assert_eq!(refused(auth.authenticate(&ep, creds(&expired)).await), AuthFailure::ExpiredToken);
    let api_key_only = Credentials { token: None, api_key: Some("sbk_x"), ticket: None };
    assert_eq!(refused(auth.authenticate(&ep, api_key_only).await), AuthFailure::MissingToken);
}

#[tokio::test]
async fn tokens_without_exp_are_refused_by_default_and_lifetimes_are_bounded() {
    let config = default_config();
    let auth = authenticator(&config);
    let secret = config.jwt_secret().to_owned();
    let forever = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({"sub": "alice"}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode");
    let strict = endpoint_with("/ws", |_| {});
    let creds = Credentials { token: Some(&forever), api_key: None, ticket: None };
    assert_eq!(refused(auth.authenticate(&strict, creds).await), AuthFailure::InvalidToken);

    let lax = endpoint_with("/ws", |e| {
        e.auth.require_exp = false;
        e.auth.max_session = std::time::Duration::from_secs(600);
    });
    let ok = auth.authenticate(&lax, creds).await.expect("allowed without exp");
    assert!(ok.expires_at.is_some_and(|e| e <= now() + 601), "bounded by max_session");

    let far = token("alice", &[("exp", (i64::MAX as u64).into())]);
    let ok = auth
        .authenticate(&strict, Credentials { token: Some(&far), api_key: None, ticket: None })
        .await
        .expect("valid");
    assert!(ok.expires_at.is_some_and(|e| e <= now() + 24 * 3600 + 1), "a far expiry is bounded too");
}

#[tokio::test]
async fn api_keys() {
    let mut config = default_config();
    let configured = "sbk_configured_for_tests";
    config.api_keys.push(crate::config::ConfiguredApiKey {
        name: "from-file".into(),
        sha256: api_keys::hash_key(configured),
        endpoints: vec![],
        max_connections: 3,
    });
    let auth = authenticator(&config);
    let threats = endpoint_with("/ws/threats", |_| {});
    let record = ApiKeyRecord { name: "scanner".into(), endpoints: vec!["/ws/threats".into()], max_connections: 2 };
    let key = auth.api_keys().create(&record).await.expect("created");
    fn creds(k: &str) -> Credentials<'_> {
        Credentials { token: None, api_key: Some(k), ticket: None }
    }

    match auth.authenticate(&threats, creds(&key)).await.expect("valid").principal {
        Principal::ApiKey(r) => assert_eq!(r, record),
        other => panic!("{other:?}"),
    }
    match auth.authenticate(&threats, creds(configured)).await.expect("valid").principal {
        Principal::ApiKey(r) => assert_eq!((r.name.as_str(), r.max_connections), ("from-file", 3)),
        other => panic!("{other:?}"),
    }
    assert_eq!(refused(auth.authenticate(&threats, Credentials::default()).await), AuthFailure::MissingApiKey);
    assert_eq!(refused(auth.authenticate(&threats, creds("sbk_unknown")).await), AuthFailure::InvalidApiKey);
    let elsewhere = endpoint_with("/ws/threats", |e| e.path = "/ws/other-keys".into());
    assert_eq!(refused(auth.authenticate(&elsewhere, creds(&key)).await), AuthFailure::InvalidApiKey);
    assert!(auth.api_keys().delete("scanner").await.expect("deleted"));
    assert_eq!(refused(auth.authenticate(&threats, creds(&key)).await), AuthFailure::InvalidApiKey);
}

#[tokio::test]
async fn tickets_are_issued_for_valid_tokens_and_open_one_connection() {
    let config = default_config();
    let (auth, broker) = authenticator_with_broker(&config);
    let ep = endpoint_with("/v1/ws", |_| {});
    fn ticket(t: &str) -> Credentials<'_> {
        Credentials { ticket: Some(t), ..Credentials::default() }
    }
    let issue = |token: String| {
        let auth = &auth;
        async move {
            match auth.issue_ticket(&token, true).await {
                Ok(Issued::Ticket(t)) => t,
                other => panic!("no ticket: {other:?}"),
            }
        }
    };

    let t = issue(token("12345", &[("sid", "s1".into()), ("name", "Typer".into())])).await;
    let ok = auth.authenticate(&ep, ticket(&t)).await.expect("valid");
    let Principal::User(claims) = &ok.principal else { panic!("a user") };
    assert_eq!((&*claims.sub, claims.name.as_deref()), ("12345", Some("Typer")));
    assert!(ok.expires_at.is_some_and(|e| e <= now() + 61), "the token's expiry still ends the connection");
    assert_eq!(refused(auth.authenticate(&ep, ticket(&t)).await), AuthFailure::InvalidTicket, "single use");
    assert_eq!(refused(auth.authenticate(&ep, ticket("wst_nope")).await), AuthFailure::InvalidTicket);
    assert_eq!(refused(auth.authenticate(&ep, Credentials::default()).await), AuthFailure::MissingToken);
    let with_token_only = Credentials { token: Some("x"), ..Credentials::default() };
    assert_eq!(refused(auth.authenticate(&ep, with_token_only).await), AuthFailure::MissingToken);

    // No ticket for a bad token; a ticket whose session is revoked before it is used opens nothing.
    assert!(matches!(auth.issue_ticket("nope", true).await, Err(AuthError::Refused(AuthFailure::InvalidToken, _))));
    let t = issue(token("12345", &[("sid", "s2".into())])).await;
    broker.set(&revoked_session("s2"), bytes::Bytes::from_static(b"1"), None).await.expect("revoke");
    assert_eq!(refused(auth.authenticate(&ep, ticket(&t)).await), AuthFailure::InvalidToken);
    let revoked = token("12345", &[("sid", "s2".into())]);
    assert!(matches!(auth.issue_ticket(&revoked, true).await, Err(AuthError::Refused(AuthFailure::InvalidToken, _))));
}
