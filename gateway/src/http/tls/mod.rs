//! TLS on the data-plane listeners (`[server.tls]`): the rustls configuration serving now,
//! swapped whole when the certificate files change, and the per-connection handshake.
//!
//! - **Swap.** One `ArcSwap<ServerConfig>`: a handshake takes the configuration current when
//!   it starts (one `Arc` clone per connection), so a re-read certificate (or client CA set)
//!   applies to new connections while open ones keep the session they negotiated. Nothing is
//!   done per request: after the handshake a connection costs only the record layer.
//! - **Re-read.** After every reload (the `Reloader` calls `reload`) and every `POLL` (the
//!   files' content, so an in-place rewrite, a rename over them or a Kubernetes secret update
//!   all count). Files that do not load are logged and counted, and the configuration serving
//!   keeps serving. A poll reports them only once they stay the same for a second poll: a
//!   certificate and its key replaced one after the other are a moment of mismatch, not an
//!   error.
//! - **Handshake.** Bounded by the header-read timeout (a client that connects and stalls
//!   cannot hold a connection slot), counted when it fails.
//!
//! Knows nothing of HTTP: `server` hands it a TCP stream and serves what comes back.

mod load;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

pub use load::TlsError;
use load::{Contents, server_config};

use crate::config::TlsConfig;
use crate::telemetry;

/// How often the files are read for a change (three small reads and a hash).
const POLL: Duration = Duration::from_secs(2);

/// The TLS side of the data-plane listeners.
pub struct Tls {
    files: TlsConfig,
    provider: Arc<CryptoProvider>,
    current: ArcSwap<ServerConfig>,
    seen: Mutex<Seen>,
}

/// Digests of the files' content: the one serving, the last one read, and the last one
/// reported as not loading (a poll reports a bad state once, not every `POLL`).
struct Seen {
    serving: [u8; 32],
    last_read: [u8; 32],
    reported: Option<[u8; 32]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    Reload,
    Poll,
}

/// What a `refresh` found.
#[derive(Debug)]
pub enum Refresh {
    /// The files hold what is serving (or, when polled, what was already tried).
    Unchanged,
    /// New handshakes use the files' new content.
    Applied,
    /// The files do not load; the configuration serving keeps serving.
    Failed(TlsError),
    /// A poll found files that do not load, first seen now (perhaps half replaced): tried
    /// again at the next poll, reported if they are still the same then.
    Unsettled,
}

/// Why a handshake did not complete (counted by `reason` in `gateway_tls_handshake_failures_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not done within the header-read timeout.
    Timeout,
    /// Refused by either side: no or an untrusted client certificate, no common protocol,
    /// not TLS at all, the connection closed.
    Refused,
}

impl Tls {
    /// Loads the files; a gateway whose certificate does not load does not start.
    pub fn load(files: &TlsConfig) -> Result<Arc<Tls>, TlsError> {
        let provider = Arc::new(ring_provider());
        let contents = Contents::read(files)?;
        let config = server_config(files, &contents, &provider)?;
        let digest = contents.digest();
        telemetry::register_tls();
        Ok(Arc::new(Tls {
            files: files.clone(),
            provider,
            current: ArcSwap::from_pointee(config),
            seen: Mutex::new(Seen { serving: digest, last_read: digest, reported: None }),
        }))
    }

    /// Re-reads the files after a reload: a change is applied, files that do not load are
    /// logged (every time: an operator asked) and counted.
    pub fn reload(&self) -> Refresh {
        self.refresh(Trigger::Reload)
    }

    fn refresh(&self, trigger: Trigger) -> Refresh {
        // Held across the read and the swap, so a poll and a reload cannot apply in the wrong order.
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let read = Contents::read(&self.files);
        let digest = match &read {
            Ok(contents) => contents.digest(),
            Err(e) => error_digest(e),
        };
        let settled = digest == seen.last_read;
        seen.last_read = digest;
        if digest == seen.serving || (trigger == Trigger::Poll && seen.reported == Some(digest)) {
            return Refresh::Unchanged;
        }
        match read.and_then(|contents| server_config(&self.files, &contents, &self.provider)) {
            Ok(config) => {
                self.current.store(Arc::new(config));
                seen.serving = digest;
                seen.reported = None;
                telemetry::count_tls_reload(true);
                tracing::info!(cert = %self.files.cert.display(), "TLS certificate re-read; new connections use it");
                Refresh::Applied
            }
            Err(e) if trigger == Trigger::Poll && !settled => {
                tracing::debug!(error = %e, "TLS files changing; trying again at the next poll");
                Refresh::Unsettled
            }
            Err(e) => {
                seen.reported = Some(digest);
                telemetry::count_tls_reload(false);
                tracing::error!(error = %e, "TLS files not loaded; the certificate serving keeps serving");
                Refresh::Failed(e)
            }
        }
    }

    /// Polls the files every `POLL` until `shutdown` turns true.
    pub async fn watch(self: Arc<Tls>, mut shutdown: watch::Receiver<bool>) {
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks.tick().await; // the first tick is immediate: the files were just loaded
        loop {
            tokio::select! {
                _ = ticks.tick() => {
                    // Blocking reads, but of three small files, once every `POLL`.
                    let _ = self.refresh(Trigger::Poll);
                }
                _ = shutdown.changed() => return,
            }
        }
    }

    /// The server side of a handshake on `stream`, with the configuration current now, within
    /// `limit`.
    pub async fn handshake(
        &self,
        stream: TcpStream,
        limit: Duration,
    ) -> Result<TlsStream<TcpStream>, HandshakeFailure> {
        let acceptor = TlsAcceptor::from(self.current.load_full());
        let failure = match tokio::time::timeout(limit, acceptor.accept(stream)).await {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => {
                // The client's doing (or a scanner's): debug, never an error.
                tracing::debug!(error = %e, "TLS handshake refused");
                HandshakeFailure::Refused
            }
            Err(_) => HandshakeFailure::Timeout,
        };
        telemetry::count_tls_handshake_failure(failure.as_str());
        Err(failure)
    }
}

impl HandshakeFailure {
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::Refused => "refused",
        }
    }
}

/// A read error stands for the files' state, so the same error is reported once per poll run.
fn error_digest(e: &TlsError) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(e.to_string().as_bytes()).into()
}

/// rustls's *ring* provider (X25519, P-256, P-384 key exchange; AES-GCM and ChaCha20 suites).
/// rustls 0.23.48 deprecates it for having no post-quantum key exchange (X25519MLKEM768 is in
/// the aws-lc-rs provider only); that provider needs cmake and nasm and doubles the build, so
/// we keep *ring* until post-quantum key exchange is asked for.
#[allow(deprecated)]
fn ring_provider() -> CryptoProvider {
    rustls::crypto::ring::default_provider()
}

/// A data-plane listener reachable from other machines in plain text (warned about at start).
pub fn exposed_in_plain_text(addr: std::net::SocketAddr, tls_on: bool) -> bool {
    !tls_on && !addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_non_loopback_listener_without_tls_is_exposed() {
        let addr = |s: &str| s.parse::<std::net::SocketAddr>().unwrap();
        assert!(exposed_in_plain_text(addr("0.0.0.0:8080"), false));
        assert!(exposed_in_plain_text(addr("10.1.2.3:8001"), false));
        assert!(!exposed_in_plain_text(addr("0.0.0.0:8080"), true));
        assert!(!exposed_in_plain_text(addr("127.0.0.1:8080"), false));
        assert!(!exposed_in_plain_text(addr("[::1]:8080"), false));
    }
}
