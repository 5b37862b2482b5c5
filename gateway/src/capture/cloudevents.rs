//! Captured exchanges as CloudEvents over HTTP, the way KServe's payload logger sends them, so
//! its consumers work unchanged: per exchange, two events in binary content mode (a POST whose
//! body is the V2 JSON request or answer and whose `Ce-*` headers carry the attributes), with
//! the same `Ce-Id`, types `org.kubeflow.serving.inference.request` and `...response`, and
//! KServe's extensions (`Ce-Inferenceservicename`, `Ce-Namespace`, `Ce-Component`,
//! `Ce-Endpoint`, `Ce-Metadata`) plus `Ce-Modelversion`.
//!
//! The writer thread builds the bodies and offers them to a bounded queue; a task on the
//! gateway's runtime sends them, a few at a time, each within a timeout. A full queue drops
//! events, a failed send loses its event; both are counted, neither ever waits on a request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use metrics::Counter;
use serde::Serialize;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;

use super::record::{Record, tensors};
use crate::tensor::Tensor;

pub const REQUEST_TYPE: &str = "org.kubeflow.serving.inference.request";
pub const RESPONSE_TYPE: &str = "org.kubeflow.serving.inference.response";
/// Events waiting to be sent, per model; beyond it they are dropped.
const QUEUE: usize = 512;
/// Events being sent at once, per model.
const IN_FLIGHT: usize = 8;
/// One send, connect to answer.
const SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// `gateway_capture_cloudevents_total{outcome}`.
pub(super) struct EventCounters {
    pub sent: Counter,
    pub dropped: Counter,
    pub failed: Counter,
}

/// The writer's side: builds events and offers them to the sender.
pub(super) struct Events {
    queue: mpsc::Sender<Event>,
    dropped: Counter,
}

/// One event, ready to send.
struct Event {
    kind: &'static str,
    id: Arc<str>,
    time: Arc<str>,
    model: Arc<str>,
    version: u64,
    /// KServe's `endpoint`: `canary` for a candidate's answer, else `default`.
    endpoint: &'static str,
    body: Bytes,
}

/// Starts the sender task for `url` on `runtime`; it ends when the returned `Events` is dropped
/// and what was queued is sent.
pub(super) fn start(
    url: &str,
    runtime: &tokio::runtime::Handle,
    counters: EventCounters,
) -> Result<(Events, JoinHandle<()>), String> {
    let url: Uri = url.parse().map_err(|e| format!("cloudevents_url {url:?}: {e}"))?;
    let namespace: Arc<str> = std::env::var("POD_NAMESPACE").unwrap_or_else(|_| "default".into()).into();
    let (queue, receiver) = mpsc::channel(QUEUE);
    let EventCounters { sent, dropped, failed } = counters;
    let task = runtime.spawn(send_all(receiver, url, namespace, sent, failed));
    Ok((Events { queue, dropped }, task))
}

impl Events {
    /// Builds the request and response events of `record` and queues them (or counts them
    /// dropped when the queue is full).
    pub fn offer(&self, record: &Record) {
        let id: Arc<str> = match &record.request_id {
            Some(id) => id.as_str().into(),
            None => uuid().into(),
        };
        let time: Arc<str> = rfc3339(record.time_us).into();
        let model: Arc<str> = record.model.as_str().into();
        let endpoint = if record.role == "candidate" { "canary" } else { "default" };
        let request = RequestBody { id: record.request_id.as_deref(), inputs: &record.inputs };
        let version = record.version.to_string();
        let response = ResponseBody {
            model_name: &record.model,
            model_version: &version,
            id: record.request_id.as_deref(),
            outputs: &record.outputs,
        };
        for (kind, body) in
            [(REQUEST_TYPE, serde_json::to_vec(&request)), (RESPONSE_TYPE, serde_json::to_vec(&response))]
        {
            let Ok(body) = body else {
                self.dropped.increment(1);
                continue;
            };
            let event = Event {
                kind,
                id: id.clone(),
                time: time.clone(),
                model: model.clone(),
                version: record.version,
                endpoint,
                body: Bytes::from(body),
            };
            if self.queue.try_send(event).is_err() {
                self.dropped.increment(1);
            }
        }
    }
}

#[derive(Serialize)]
struct RequestBody<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(serialize_with = "tensors::serialize_slice")]
    inputs: &'a [Tensor],
}

#[derive(Serialize)]
struct ResponseBody<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(serialize_with = "tensors::serialize_slice")]
    outputs: &'a [Tensor],
}

async fn send_all(
    mut receiver: mpsc::Receiver<Event>,
    url: Uri,
    namespace: Arc<str>,
    sent: Counter,
    failed: Counter,
) {
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    while let Some(event) = receiver.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else { break };
        let (client, url, namespace) = (client.clone(), url.clone(), namespace.clone());
        let (sent, failed) = (sent.clone(), failed.clone());
        tokio::spawn(async move {
            match send(&client, url, &namespace, &event).await {
                Ok(()) => sent.increment(1),
                Err(e) => {
                    failed.increment(1);
                    tracing::debug!(model = %event.model, error = %e, "a CloudEvent was not delivered");
                }
            }
            drop(slot);
        });
    }
    // Wait for the sends still running (each bounded by its timeout).
    let _ = slots.acquire_many(IN_FLIGHT as u32).await;
}

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    namespace: &str,
    event: &Event,
) -> Result<(), String> {
    let request = Request::builder()
        .method(Method::POST)
        .uri(url)
        .header("content-type", "application/json")
        .header("ce-specversion", "1.0")
        .header("ce-id", &*event.id)
        .header("ce-type", event.kind)
        .header("ce-source", format!("/v2/models/{}", event.model))
        .header("ce-time", &*event.time)
        .header("ce-inferenceservicename", &*event.model)
        .header("ce-namespace", namespace)
        .header("ce-component", "predictor")
        .header("ce-endpoint", event.endpoint)
        .header("ce-metadata", "{}")
        .header("ce-modelversion", event.version.to_string())
        .body(Full::new(event.body.clone()))
        .map_err(|e| e.to_string())?;
    let exchange = async {
        let response = client.request(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        // Read the answer whole so the connection can be reused.
        let _ = response.into_body().collect().await;
        if status.is_success() { Ok(()) } else { Err(format!("the sink answered {status}")) }
    };
    tokio::time::timeout(SEND_TIMEOUT, exchange)
        .await
        .map_err(|_| format!("no answer within {SEND_TIMEOUT:?}"))?
}

/// A random (version 4) UUID, for exchanges without a request id.
fn uuid() -> String {
    let (a, b) = (fastrand::u64(..), fastrand::u64(..));
    let hi = (a & 0xffff_ffff_ffff_0fff) | 0x4000;
    let lo = (b & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// `time_us` (microseconds since the Unix epoch) as RFC 3339 in UTC.
pub fn rfc3339(time_us: u64) -> String {
    let secs = time_us / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        time_us % 1_000_000
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (Howard Hinnant's method).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(rfc3339(951_782_400_000_001), "2000-02-29T00:00:00.000001Z");
        assert_eq!(rfc3339(1_767_225_599_500_000), "2025-12-31T23:59:59.500000Z");
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"), "{u}");
        assert_ne!(uuid(), u);
    }
}
