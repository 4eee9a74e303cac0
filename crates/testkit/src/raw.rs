//! A WebSocket client over a raw TCP socket, for what a client library will not do: send
//! frames that break the rules, or stay silent (a library answers pings as soon as it reads;
//! this one never does, so a test can read what the server sends to a dead client).

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::{TestNode, WAIT};

/// A client frame, masked (or not, to break the rules).
pub fn client_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let bit = if masked { 0x80 } else { 0 };
    let mut out = vec![first];
    match payload.len() {
        n @ 0..=125 => out.push(n as u8 | bit),
        n @ 126..=65_535 => {
            out.push(126 | bit);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127 | bit);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Sends the upgrade request for `path` as user `user` with `then` right behind it in the
/// same write, and reads the response head (and nothing after it).
pub async fn upgrade(node: &TestNode, path: &str, user: &str, then: &[u8]) -> TcpStream {
    upgrade_with(node, path, user, "", then).await.0
}

/// [`upgrade`] with extra request header lines (each ending in `\r\n`); also returns the
/// response head.
pub async fn upgrade_with(node: &TestNode, path: &str, user: &str, headers: &str, then: &[u8]) -> (TcpStream, String) {
    let mut socket = TcpStream::connect(node.addr).await.expect("connect");
    let request = format!(
        "GET {path}?token={} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n",
        node.token(user),
        node.addr
    );
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(then);
    socket.write_all(&bytes).await.expect("send");
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(WAIT, socket.read_u8()).await.expect("response in time").expect("read");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    (socket, head)
}

/// The next server frame that is not a text message: opcode and payload; `None` at the end of
/// the stream.
pub async fn next_control(socket: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    loop {
        let (first, payload) = next_frame(socket).await?;
        if first & 0x0f != 0x1 {
            return Some((first & 0x0f, payload));
        }
    }
}

/// The next server frame: its first byte (FIN, RSV bits, opcode) and payload; `None` at the
/// end of the stream.
pub async fn next_frame(socket: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 2];
    match tokio::time::timeout(WAIT, socket.read_exact(&mut head)).await.expect("frame in time") {
        Ok(_) => {}
        Err(_) => return None,
    }
    assert_eq!(head[1] & 0x80, 0, "server frames are never masked");
    let len = match head[1] & 0x7f {
        126 => socket.read_u16().await.expect("length") as usize,
        127 => socket.read_u64().await.expect("length") as usize,
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    socket.read_exact(&mut payload).await.expect("payload");
    Some((head[0], payload))
}
