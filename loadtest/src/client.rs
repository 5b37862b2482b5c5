//! The HTTP side: one hyper 1.x low-level client connection per virtual connection (HTTP/1.1,
//! or h2c with prior knowledge), sending a request and reading its answer into an [`Outcome`]
//! as cheaply as possible (the `x-model-version` header when present, else a scan of the body;
//! errors parsed for their `error` text).
//!
//! An HTTP/1.1 connection's [`Driver`] is handed back to the caller, which polls it in the same
//! task as the request (one task wake-up per exchange instead of two); HTTP/2 connections are
//! shared, so theirs run as tasks of their own.

use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use crate::stats::{Outcome, truncate};

/// An HTTP/1.1 connection's I/O half: it must be polled for the [`Sender`] to make progress.
pub type Driver = Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>;

/// A connection's request half.
#[derive(Debug)]
pub enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// Opens a TCP connection (no Nagle) and performs the HTTP handshake. HTTP/1.1 returns the
/// connection's driver for the caller to poll; HTTP/2 spawns it on the current runtime (it ends
/// when every sender is dropped).
pub async fn connect(addr: SocketAddr, http2: bool) -> Result<(Sender, Option<Driver>), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    stream.set_nodelay(true).map_err(|e| format!("set_nodelay: {e}"))?;
    let io = TokioIo::new(stream);
    if http2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake with {addr}: {e}"))?;
        tokio::spawn(conn);
        Ok((Sender::H2(sender), None))
    } else {
        let (sender, conn) = http1::handshake(io).await.map_err(|e| format!("handshake with {addr}: {e}"))?;
        Ok((Sender::H1(sender), Some(Box::pin(conn))))
    }
}

impl Sender {
    /// Another handle on the same connection (HTTP/2 multiplexes; HTTP/1.1 cannot).
    pub fn share(&self) -> Option<Sender> {
        match self {
            Sender::H1(_) => None,
            Sender::H2(s) => Some(Sender::H2(s.clone())),
        }
    }

    /// Sends one request once the connection can take it.
    pub async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, hyper::Error> {
        match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(request).await
            }
        }
    }
}

/// Reads the whole response and classifies it.
pub async fn read_outcome(response: Response<Incoming>) -> Result<Outcome, hyper::Error> {
    let status = response.status();
    let header_version =
        response.headers().get("x-model-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut body = response.into_body();
    if status.is_success() && header_version.is_some() {
        while let Some(frame) = body.frame().await {
            frame?;
        }
        return Ok(Outcome::Ok { version: header_version });
    }
    let bytes = body.collect().await?.to_bytes();
    Ok(if status.is_success() {
        Outcome::Ok { version: scan_version(&bytes) }
    } else {
        Outcome::Failed { status: status.as_u16(), error: error_text(status, &bytes) }
    })
}

/// The value of the first `"model_version":"..."` in a body, without parsing the JSON.
pub fn scan_version(body: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"\"model_version\"";
    let at = body.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let rest = body[at..].trim_ascii_start().strip_prefix(b":")?.trim_ascii_start();
    let rest = rest.strip_prefix(b"\"")?;
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok().map(str::to_owned)
}

/// The `error` text of an error body, else the body itself, else the status's reason.
pub fn error_text(status: http::StatusCode, body: &[u8]) -> String {
    let parsed = serde_json::from_slice::<serde_json::Value>(body).ok();
    if let Some(text) = parsed.as_ref().and_then(|v| v.get("error")?.as_str()) {
        return truncate(text);
    }
    let text = String::from_utf8_lossy(body);
    if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("").to_string()
    } else {
        truncate(text.trim())
    }
}

/// `GET path` on a fresh connection: the status and body.
pub async fn get(addr: SocketAddr, authority: &str, path: &str) -> Result<(u16, Bytes), String> {
    let stream = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let (mut sender, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake with {addr}: {e}"))?;
    tokio::spawn(conn);
    let request = Request::get(path)
        .header(http::header::HOST, authority)
        .body(Empty::new())
        .map_err(|e| format!("GET {path}: {e}"))?;
    let response = sender.send_request(request).await.map_err(|e| format!("GET {path}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| format!("GET {path}: {e}"))?;
    Ok((status, body.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn version_scan() {
        let body = br#"{"model_name":"m","model_version": "2","outputs":[]}"#;
        assert_eq!(scan_version(body).as_deref(), Some("2"));
        assert_eq!(scan_version(b"{}"), None);
        assert_eq!(scan_version(br#"{"model_version":"#), None);
    }

    #[test]
    fn error_texts() {
        let e = error_text(StatusCode::UNPROCESSABLE_ENTITY, br#"{"error":"bad shape"}"#);
        assert_eq!(e, "bad shape");
        assert_eq!(error_text(StatusCode::BAD_GATEWAY, b"upstream down\n"), "upstream down");
        assert_eq!(error_text(StatusCode::SERVICE_UNAVAILABLE, b""), "Service Unavailable");
    }
}
