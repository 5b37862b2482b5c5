//! Getting finished spans to the collector without ever making a request wait: a bounded
//! channel (`Sink::send` is a `try_send`; a full or closed channel drops the span and counts it)
//! and one task on the gateway's runtime that takes up to `max_batch` spans, or what arrived
//! within `interval` of a batch's first span, and POSTs them as OTLP/HTTP JSON to
//! `{otlp_endpoint}/v1/traces`, one export at a time, each within `timeout`. While an export is
//! running nothing is taken from the channel, so a slow or absent collector fills it and later
//! spans are dropped (counted), never buffered without bound.
//!
//! `gateway_trace_spans_total{outcome}`: `exported` (the collector answered 2xx), `failed`
//! (refused, unreachable or too slow: the batch is lost), `dropped` (the buffer was full or the
//! exporter had stopped).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics::Counter;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::otlp;
use super::span::SpanRecord;
use crate::telemetry;

/// Internal knobs (not in the config file): the buffer, the batches and the export timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Spans waiting for export; beyond it new spans are dropped.
    pub buffer: usize,
    /// Spans per export at most.
    pub max_batch: usize,
    /// How long a batch waits for more spans after its first.
    pub interval: Duration,
    /// One export, connect to answer; beyond it the batch is lost (`failed`).
    pub timeout: Duration,
}

impl Default for Tuning {
    fn default() -> Tuning {
        // OpenTelemetry's batch processor defaults, with a shorter wait: 2048 spans cover ~700
        // sampled requests (3 spans each) between two exports.
        Tuning {
            buffer: 2048,
            max_batch: 512,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// The request path's end of the channel.
pub struct Sink {
    spans: mpsc::Sender<SpanRecord>,
    dropped: Counter,
}

impl Sink {
    /// Queues a finished span, or drops and counts it when the buffer is full. Never waits.
    pub fn send(&self, span: SpanRecord) {
        if self.spans.try_send(span).is_err() {
            self.dropped.increment(1);
        }
    }
}

/// A sink whose spans land in the returned receiver (unit tests of the request path).
#[cfg(test)]
pub fn test_sink(buffer: usize) -> (Arc<Sink>, mpsc::Receiver<SpanRecord>) {
    let (spans, receiver) = mpsc::channel(buffer);
    (Arc::new(Sink { spans, dropped: telemetry::trace_spans()[1].clone() }), receiver)
}

/// A running exporter task.
pub struct Exporter {
    pub sink: Arc<Sink>,
    close: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Where and as whom spans are exported.
pub struct Destination {
    /// `{otlp_endpoint}/v1/traces`.
    pub url: Uri,
    pub service_name: String,
}

impl Destination {
    pub fn new(endpoint: &str, service_name: &str) -> Result<Destination, String> {
        let joined = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        let url = joined.parse().map_err(|e| format!("tracing.otlp_endpoint {endpoint:?}: {e}"))?;
        Ok(Destination { url, service_name: service_name.to_string() })
    }
}

/// Starts the exporter task on `runtime`.
pub fn start(destination: Destination, tuning: Tuning, runtime: &tokio::runtime::Handle) -> Exporter {
    let [exported, dropped, failed] = telemetry::trace_spans();
    let (spans, receiver) = mpsc::channel(tuning.buffer.max(1));
    let (close, closing) = watch::channel(false);
    let counters = Counters { exported, failed };
    let task = runtime.spawn(run(receiver, closing, destination, tuning, counters));
    Exporter { sink: Arc::new(Sink { spans, dropped }), close, task }
}

impl Exporter {
    /// Stops taking spans (later ones are dropped), exports what is buffered, and waits for the
    /// task at most `bound`; past it the task is abandoned (its spans are lost).
    pub async fn close(self, bound: Duration) {
        let _ = self.close.send(true);
        let abort = self.task.abort_handle();
        if tokio::time::timeout(bound, self.task).await.is_err() {
            abort.abort();
            tracing::warn!("trace export did not finish within the drain timeout; its spans are lost");
        }
    }
}

struct Counters {
    exported: Counter,
    failed: Counter,
}

async fn run(
    mut receiver: mpsc::Receiver<SpanRecord>,
    mut closing: watch::Receiver<bool>,
    destination: Destination,
    tuning: Tuning,
    counters: Counters,
) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut exporter =
        Export { client, destination, tuning, counters, last_warning: None, clock: Clock::now() };
    let max = tuning.max_batch.max(1);
    let mut batch = Vec::with_capacity(max);
    let mut stop = false;
    while !stop {
        tokio::select! {
            _ = closing.changed() => break,
            n = receiver.recv_many(&mut batch, max) => if n == 0 { break },
        }
        let flush_at = tokio::time::Instant::now() + tuning.interval;
        while batch.len() < max {
            let room = max - batch.len();
            tokio::select! {
                _ = closing.changed() => { stop = true; break },
                _ = tokio::time::sleep_until(flush_at) => break,
                n = receiver.recv_many(&mut batch, room) => if n == 0 { stop = true; break },
            }
        }
        exporter.export(&mut batch).await;
    }
    // Closing: no more spans are taken; what is buffered goes out, a batch at a time.
    receiver.close();
    while receiver.recv_many(&mut batch, max).await > 0 {
        exporter.export(&mut batch).await;
    }
    exporter.export(&mut batch).await;
}

struct Export {
    client: Client<HttpConnector, Full<Bytes>>,
    destination: Destination,
    tuning: Tuning,
    counters: Counters,
    /// When a failure was last logged (at most one warning a minute).
    last_warning: Option<Instant>,
    /// Dates spans; re-read once a minute, so the spans of one request (often in different
    /// batches) are dated consistently while the wall clock's steps are still followed.
    clock: Clock,
}

impl Export {
    /// Sends `batch` (emptying it) and counts the outcome.
    async fn export(&mut self, batch: &mut Vec<SpanRecord>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        if self.clock.instant.elapsed() > Duration::from_secs(60) {
            self.clock = Clock::now();
        }
        let body = otlp::encode(batch, &self.destination.service_name, &self.clock);
        batch.clear();
        match self.post(body).await {
            Ok(()) => self.counters.exported.increment(n),
            Err(e) => {
                self.counters.failed.increment(n);
                let quiet = self.last_warning.is_some_and(|t| t.elapsed() < Duration::from_secs(60));
                if !quiet {
                    self.last_warning = Some(Instant::now());
                    tracing::warn!(url = %self.destination.url, error = %e, spans = n, "trace export failed; those spans are lost");
                }
            }
        }
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let request = Request::builder()
            .method(Method::POST)
            .uri(self.destination.url.clone())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())?;
        let exchange = async {
            let response = self.client.request(request).await.map_err(|e| e.to_string())?;
            let status = response.status();
            // Read the answer whole so the connection can be reused.
            let _ = response.into_body().collect().await;
            if status.is_success() { Ok(()) } else { Err(format!("the collector answered {status}")) }
        };
        let timeout = self.tuning.timeout;
        tokio::time::timeout(timeout, exchange).await.map_err(|_| format!("no answer within {timeout:?}"))?
    }
}

/// Turns the `Instant`s spans are timed with into Unix nanoseconds: one pair of clock reads per
/// batch, so spans never read the wall clock themselves.
pub struct Clock {
    instant: Instant,
    unix_nanos: u128,
}

impl Clock {
    pub fn now() -> Clock {
        let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        Clock { instant: Instant::now(), unix_nanos: since.as_nanos() }
    }

    pub fn unix_nanos(&self, at: Instant) -> u128 {
        if at >= self.instant {
            self.unix_nanos + (at - self.instant).as_nanos()
        } else {
            self.unix_nanos.saturating_sub((self.instant - at).as_nanos())
        }
    }
}
