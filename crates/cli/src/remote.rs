//! `switchboard publish` and `switchboard inspect`: the admin API of a running node from the
//! command line, so that trying and operating the gateway does not need curl recipes.

use anyhow::{bail, Context, Result};
use reqwest::Method;
use serde_json::Value;

/// Where a running node is and the admin key to use.
pub struct Remote {
    /// `http://host:port` (or `https://`) of any node of the cluster.
    pub url: String,
    /// The admin key (`Authorization: Bearer`).
    pub admin_key: String,
    /// PEM certificates to trust for `https://` (the node's own `tls_cert`, so a self-signed
    /// one works); none: plain HTTP only.
    pub trusted_pem: Option<Vec<u8>>,
}

/// What `inspect` can show.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum Inspect {
    /// Open connections per endpoint on every edge, or one user's connections anywhere.
    Connections {
        /// Only this user's connections (node, connection, endpoint).
        #[arg(long)]
        user: Option<String>,
    },
    /// API keys: names, endpoints, limits (never a secret).
    ApiKeys,
    /// A channel's members.
    Channel {
        /// The channel id.
        id: String,
    },
}

impl Remote {
    /// Publishes one event (`{"channel"|"user"|"users", "type", "payload", ...}`) or a batch
    /// (`{"events": [...]}`); prints the node's answer.
    pub async fn publish(&self, body: &str) -> Result<()> {
        let event: Value = serde_json::from_str(body).context("the event is not JSON")?;
        let path = if event.get("events").is_some() { "/v1/publish/batch" } else { "/v1/publish" };
        self.call(Method::POST, path, Some(event)).await
    }

    /// Prints what `what` asks for.
    pub async fn inspect(&self, what: &Inspect) -> Result<()> {
        let path = match what {
            Inspect::Connections { user: None } => "/v1/connections".to_owned(),
            Inspect::Connections { user: Some(u) } => format!("/v1/connections?user={}", encode(u)),
            Inspect::ApiKeys => "/v1/api-keys".to_owned(),
            Inspect::Channel { id } => format!("/v1/channels/{}/members", encode(id)),
        };
        self.call(Method::GET, &path, None).await
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Result<()> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let mut client = reqwest::Client::builder();
        if let Some(pem) = &self.trusted_pem {
            for cert in reqwest::Certificate::from_pem_bundle(pem).context("the node's tls_cert")? {
                client = client.add_root_certificate(cert);
            }
        }
        let client = client.build().context("the HTTP client")?;
        let mut request = client.request(method, &url).bearer_auth(&self.admin_key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response =
            request.send().await.with_context(|| format!("no answer from {url}; is a node running there?"))?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        let shown = serde_json::from_str::<Value>(&text).and_then(|v| serde_json::to_string_pretty(&v)).unwrap_or(text);
        if !status.is_success() {
            bail!("{status}: {shown}");
        }
        println!("{shown}");
        Ok(())
    }
}

/// Percent-encodes a path or query part (ids may hold `:` or `/`).
fn encode(part: &str) -> String {
    part.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
