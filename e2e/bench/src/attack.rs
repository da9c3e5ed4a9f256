//! Hostile and honest webhook clients over raw TCP, for the attack scenarios
//! (`tests/suite/webhook_attacks.rs`) and `bench-webhook`: slow headers (slowloris), slow
//! bodies, oversize bodies, failing signatures, and a correctly signed GitHub delivery.
//!
//! Every client connects from a chosen source address: Linux routes all of `127.0.0.0/8` to
//! the loopback interface, so `127.0.0.2`, `127.0.0.3`, ... are distinct clients of an operator
//! listening on `127.0.0.1`, exactly like distinct hosts are to a pod.

use anyhow::{Context as _, Result, anyhow};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// `127.0.0.<n>` (`n` ≥ 2 keeps clear of the address the emulator and the test client use).
pub fn loopback(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A TCP connection to `target` from `source`.
pub async fn connect_from(source: IpAddr, target: SocketAddr) -> Result<TcpStream> {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket
        .bind(SocketAddr::new(source, 0))
        .with_context(|| format!("binding a client socket to {source}"))?;
    socket
        .connect(target)
        .await
        .with_context(|| format!("connecting from {source} to {target}"))
}

/// A well-formed (but wrong) GitHub signature header value.
pub const WRONG_SIGNATURE: &str =
    "sha256=0000000000000000000000000000000000000000000000000000000000000000";

/// A GitHub `pull_request` payload about `repo_url`.
pub fn pull_request_payload(repo_url: &str, number: u64) -> Vec<u8> {
    serde_json::json!({
        "action": "synchronize",
        "number": number,
        "pull_request": {"number": number, "head": {"sha": "0123456789abcdef0123456789abcdef01234567"}},
        "repository": {"clone_url": repo_url, "html_url": repo_url.trim_end_matches(".git")},
        "sender": {"login": "octocat"}
    })
    .to_string()
    .into_bytes()
}

/// The bytes of one `POST /hooks/github` request (with `Connection: close`), signed with
/// `secret` or carrying `signature` verbatim.
pub fn github_request(
    delivery_id: &str,
    body: &[u8],
    signature: Signature<'_>,
    content_length: Option<usize>,
) -> Vec<u8> {
    let signature = match signature {
        Signature::With(secret) => format!(
            "sha256={}",
            pullwarden::webhook::verify::hmac_sha256_hex(secret.as_bytes(), body)
        ),
        Signature::Verbatim(value) => value.to_owned(),
    };
    let length = content_length.unwrap_or(body.len());
    let mut request = format!(
        "POST /hooks/github HTTP/1.1\r\nHost: pullwarden\r\nUser-Agent: GitHub-Hookshot/e2e\r\n\
         Content-Type: application/json\r\nX-GitHub-Event: pull_request\r\n\
         X-GitHub-Delivery: {delivery_id}\r\nX-Hub-Signature-256: {signature}\r\n\
         Content-Length: {length}\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    request.extend_from_slice(body);
    request
}

/// How a request is signed.
#[derive(Clone, Copy, Debug)]
pub enum Signature<'a> {
    /// HMAC-SHA256 of the body with this secret, as the forge does.
    With(&'a str),
    /// This header value as is.
    Verbatim(&'a str),
}

/// What the server answered before closing the connection.
#[derive(Clone, Debug)]
pub struct Answer {
    /// HTTP status, `None` when the connection closed (or reset) without a response.
    pub status: Option<u16>,
    pub text: String,
}

/// Reads until the server closes the connection (or `timeout`, an error).
pub async fn read_answer(stream: &mut TcpStream, timeout: Duration) -> Result<Answer> {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| anyhow!("the server did not close the connection within {timeout:?}"))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    Ok(Answer { status, text })
}

/// Sends `request` on a fresh connection from `source` and reads the answer.
pub async fn send(
    source: IpAddr,
    target: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<Answer> {
    let mut stream = connect_from(source, target).await?;
    // A server that refuses early may close before everything is written: that is an answer.
    let _ = stream.write_all(request).await;
    read_answer(&mut stream, timeout).await
}

/// A slowloris connection: the request line and one header, and never the end of the head.
pub async fn slow_headers(source: IpAddr, target: SocketAddr) -> Result<TcpStream> {
    let mut stream = connect_from(source, target).await?;
    stream
        .write_all(b"POST /hooks/github HTTP/1.1\r\nHost: pullwarden\r\n")
        .await?;
    Ok(stream)
}

/// A slow-body connection: complete headers of a signed-looking delivery declaring
/// `declared` body bytes, and only the first `sent` of them.
pub async fn slow_body(
    source: IpAddr,
    target: SocketAddr,
    declared: usize,
    sent: usize,
) -> Result<TcpStream> {
    let mut stream = connect_from(source, target).await?;
    let head = github_request(
        &uuid::Uuid::new_v4().to_string(),
        b"",
        Signature::Verbatim(WRONG_SIGNATURE),
        Some(declared),
    );
    stream.write_all(&head).await?;
    // A server that refuses the body (503) closes before it is all written: still a stream to
    // read the answer from.
    let _ = stream.write_all(&vec![b' '; sent.min(declared)]).await;
    Ok(stream)
}

/// Whether the server has closed `stream` (reads without blocking).
pub fn closed_by_server(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 512];
    loop {
        match stream.try_read(&mut probe) {
            Ok(0) => return true,
            // A response (408, 503) before the close: keep reading.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}
