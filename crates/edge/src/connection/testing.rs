//! Test support for the parts of a connection that need no socket: a sink that records what
//! is written, handles on the default endpoints, and a reader of the recorded server frames.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;

use super::outbox::FrameSink;
use super::{ConnHandle, Subscriptions};
use crate::config::{Config, DEFAULT_CONFIG_TOML};
use crate::endpoint::EndpointRuntime;

/// A socket that takes every byte and keeps it, or refuses everything while `full`.
#[derive(Default)]
pub struct Recorder {
    bytes: Mutex<Vec<u8>>,
    full: std::sync::atomic::AtomicBool,
}

impl Recorder {
    /// Makes the socket refuse (or take again) further writes.
    pub fn set_full(&self, full: bool) {
        self.full.store(full, std::sync::atomic::Ordering::SeqCst);
    }

    /// Every frame written so far, as (opcode, payload), and forgets them.
    pub fn take_frames(&self) -> Vec<(u8, Vec<u8>)> {
        let bytes = std::mem::take(&mut *self.bytes.lock());
        let mut frames = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let opcode = bytes[at] & 0x0F;
            let (len, head) = match bytes[at + 1] {
                126 => (usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]])), 4),
                127 => {
                    let mut b = [0u8; 8];
                    b.copy_from_slice(&bytes[at + 2..at + 10]);
                    (u64::from_be_bytes(b) as usize, 10)
                }
                n => (usize::from(n), 2),
            };
            frames.push((opcode, bytes[at + head..at + head + len].to_vec()));
            at += head + len;
        }
        frames
    }

    /// The text messages written so far, parsed as JSON (other frames are skipped).
    pub fn take_json(&self) -> Vec<serde_json::Value> {
        self.take_frames()
            .into_iter()
            .filter(|(op, _)| *op == 0x1)
            .map(|(_, p)| serde_json::from_slice(&p).expect("text frames are JSON"))
            .collect()
    }
}

impl FrameSink for Recorder {
    fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.full.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut bytes = self.bytes.lock();
        let mut n = 0;
        for b in bufs {
            bytes.extend_from_slice(b);
            n += b.len();
        }
        Ok(n)
    }

    fn poll_write_ready(&self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// The default config (valid by construction).
pub fn default_config() -> Config {
    Config::from_toml(DEFAULT_CONFIG_TOML).expect("the default config is valid")
}

/// The default config's endpoint at `path`, adjusted by `edit`.
pub fn endpoint_with(path: &str, edit: impl FnOnce(&mut crate::config::EndpointConfig)) -> Arc<EndpointRuntime> {
    let mut config = default_config().endpoint(path).cloned().expect("a default endpoint");
    edit(&mut config);
    Arc::new(EndpointRuntime::new(config))
}

/// User `sub`, as a verified token (with `token_digest`, if given) makes it.
pub fn user(sub: &str, token_digest: Option<[u8; 16]>) -> Arc<crate::auth::Principal> {
    let claims =
        crate::auth::Claims { sub: sub.into(), exp: None, sid: None, name: None, channels: None, token_digest };
    Arc::new(crate::auth::Principal::User(claims))
}

/// A connection of `principal` to `endpoint` writing to a fresh recorder.
pub fn connection_of(
    id: u64,
    endpoint: Arc<EndpointRuntime>,
    principal: Arc<crate::auth::Principal>,
) -> (Arc<ConnHandle>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let conn =
        Arc::new(ConnHandle::new(id, endpoint, Some(principal), Subscriptions::default(), recorder.clone(), None));
    (conn, recorder)
}

/// An anonymous connection to `endpoint` writing to a fresh recorder.
pub fn connection(id: u64, endpoint: Arc<EndpointRuntime>) -> (Arc<ConnHandle>, Arc<Recorder>) {
    let recorder = Arc::new(Recorder::default());
    let conn = Arc::new(ConnHandle::new(id, endpoint, None, Subscriptions::default(), recorder.clone(), None));
    (conn, recorder)
}
