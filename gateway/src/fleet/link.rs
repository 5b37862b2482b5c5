//! One multiplexed connection to Redis, made on first use and remade after a failure; every
//! call bounded by `CALL_TIMEOUT`. Whether the last call worked is kept, so callers that must
//! not wait (the feedback endpoint) can skip Redis while it is down.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use metrics::Gauge;
use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;

use super::FleetError;
use crate::telemetry;

/// The longest any one Redis call (or connection attempt) may take.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(500);

pub(super) struct Link {
    client: redis::Client,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    /// Since when Redis has not answered (`None`: up).
    down_since: Mutex<Option<Instant>>,
    gauge: Gauge,
}

impl Link {
    pub fn new(url: &str) -> Result<Link, FleetError> {
        let client = redis::Client::open(url).map_err(|e| FleetError::Redis(e.to_string()))?;
        let gauge = telemetry::fleet_connected();
        gauge.set(0.0);
        Ok(Link {
            client,
            conn: tokio::sync::Mutex::new(None),
            down_since: Mutex::new(Some(Instant::now())),
            gauge,
        })
    }

    pub fn up(&self) -> bool {
        self.down_since().is_none()
    }

    /// Since when Redis has been unreachable (`None` while it answers).
    pub fn down_since(&self) -> Option<Instant> {
        self.down_since.lock().ok().and_then(|d| *d)
    }

    /// Runs `call` on the connection, bounded by `CALL_TIMEOUT`; a failure drops the connection
    /// (the next call reconnects) and marks Redis down.
    pub async fn run<T, F, Fut>(&self, call: F) -> Result<T, FleetError>
    where
        F: FnOnce(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let conn = self.connection().await?;
        match tokio::time::timeout(CALL_TIMEOUT, call(conn)).await {
            Ok(Ok(v)) => {
                self.mark(true);
                Ok(v)
            }
            Ok(Err(e)) if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() => {
                self.broken().await;
                Err(FleetError::Unavailable(e.to_string()))
            }
            // Redis answered with an error (a script's, a wrong type): the link is fine.
            Ok(Err(e)) => Err(FleetError::Redis(e.to_string())),
            Err(_) => {
                self.broken().await;
                Err(FleetError::Timeout(CALL_TIMEOUT))
            }
        }
    }

    async fn connection(&self) -> Result<MultiplexedConnection, FleetError> {
        let mut slot = self.conn.lock().await;
        if let Some(c) = &*slot {
            return Ok(c.clone());
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CALL_TIMEOUT))
            .set_response_timeout(Some(CALL_TIMEOUT));
        let made = tokio::time::timeout(
            CALL_TIMEOUT,
            self.client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        match made {
            Ok(Ok(c)) => {
                *slot = Some(c.clone());
                Ok(c)
            }
            Ok(Err(e)) => {
                drop(slot);
                self.mark(false);
                Err(FleetError::Unavailable(e.to_string()))
            }
            Err(_) => {
                drop(slot);
                self.mark(false);
                Err(FleetError::Timeout(CALL_TIMEOUT))
            }
        }
    }

    async fn broken(&self) {
        *self.conn.lock().await = None;
        self.mark(false);
    }

    fn mark(&self, up: bool) {
        let Ok(mut since) = self.down_since.lock() else { return };
        if since.is_none() == up {
            return;
        }
        *since = if up { None } else { Some(Instant::now()) };
        drop(since);
        self.gauge.set(if up { 1.0 } else { 0.0 });
        if up {
            tracing::info!("fleet: Redis reachable; shared state resumes");
        } else {
            tracing::warn!(
                "fleet: Redis unreachable; serving with the routing in force, shared writes dropped"
            );
        }
    }
}
