//! `loadtest replay`: captured traffic (the gateway's `capture-*.jsonl.gz` files) sent again to
//! any Open Inference Protocol server over HTTP/1.1, at the recorded pace, scaled, or as fast as
//! `connections` allow; each answer is compared with the captured one by the shadows' rules
//! (`gateway::shadow::compare`: argmax for class scores, |difference| ≤ 1e-4 for other numbers,
//! equality for BYTES), and the report gives agreement per output and overall, errors, and
//! latency.
//!
//! A reader thread streams the records (a day of traffic need not fit in memory) into a bounded
//! queue; the pacer releases each at its recorded offset from the first, divided by the rate;
//! `connections` workers, each on its own connection, send them. When every worker is busy the
//! pace slips, and the report says by how much.

mod tally;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use gateway::capture::{Record, Records, tensors};
use gateway::tensor::Tensor;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

pub use tally::{Report, Tally};

use crate::client::{self, Sender};
use crate::target::Target;

/// Records read ahead of the pacer.
const READ_AHEAD: usize = 1024;

/// How fast to replay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pace {
    /// The recorded gaps divided by this factor (`x2` is twice as fast).
    Scaled(f64),
    /// No pacing: as fast as the connections allow.
    Max,
}

impl std::fmt::Display for Pace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Pace::Scaled(x) => write!(f, "x{x}"),
            Pace::Max => f.write_str("max"),
        }
    }
}

/// What to replay, against what.
#[derive(Debug, Clone)]
pub struct Plan {
    /// A capture file, or a folder of them.
    pub source: PathBuf,
    /// Base URL of the server (`http://host:port[/prefix]`).
    pub target: String,
    pub pace: Pace,
    /// Pin this version (`/v2/models/{m}/versions/{v}/infer`); else the routed path.
    pub version: Option<u64>,
    pub connections: usize,
    pub timeout: Duration,
    /// Replay at most this many records.
    pub limit: Option<u64>,
}

/// One record released by the pacer, with when it was due.
struct Job {
    record: Record,
    due: Instant,
}

/// Replays `plan.source` against `plan.target` and reports how the answers compare.
pub async fn replay(plan: Plan) -> Result<Report, String> {
    let target = Arc::new(Target::resolve(&plan.target).await?);
    let records = Records::open(&plan.source).map_err(|e| format!("{}: {e}", plan.source.display()))?;
    let files = records.files();
    let (read_tx, mut read_rx) = mpsc::channel(READ_AHEAD);
    let limit = plan.limit.unwrap_or(u64::MAX);
    let reader = std::thread::spawn(move || {
        let mut records = records;
        for record in records.by_ref().take(usize::try_from(limit).unwrap_or(usize::MAX)) {
            if read_tx.blocking_send(record).is_err() {
                break;
            }
        }
        records.problems().clone()
    });

    let (jobs_tx, jobs_rx) = mpsc::channel::<Job>(plan.connections.max(1));
    let jobs_rx = Arc::new(Mutex::new(jobs_rx));
    let workers: Vec<_> = (0..plan.connections.max(1))
        .map(|_| tokio::spawn(work(jobs_rx.clone(), target.clone(), plan.version, plan.timeout)))
        .collect();

    let started = Instant::now();
    // The first record's time is the origin; the recorded span is first to last seen.
    let (mut first, mut last) = (None, 0u64);
    while let Some(record) = read_rx.recv().await {
        let origin = *first.get_or_insert(record.time_us);
        last = last.max(record.time_us);
        let due = match plan.pace {
            Pace::Max => Instant::now(),
            Pace::Scaled(x) => {
                let offset = record.time_us.saturating_sub(origin) as f64 / 1e6 / x;
                let due = started + Duration::try_from_secs_f64(offset).unwrap_or(Duration::MAX / 4);
                tokio::time::sleep_until(due).await;
                due
            }
        };
        if jobs_tx.send(Job { record, due }).await.is_err() {
            break;
        }
    }
    drop(jobs_tx);
    let mut tally = Tally::new()?;
    for worker in workers {
        let done = worker.await.map_err(|e| format!("a replay worker failed: {e}"))??;
        tally.merge(&done)?;
    }
    let elapsed = started.elapsed();
    let problems = reader.join().map_err(|_| "the capture reader failed".to_string())?;
    let recorded = Duration::from_micros(first.map_or(0, |f| last.saturating_sub(f)));
    Ok(Report::new(&plan, files, problems, &tally, elapsed, recorded))
}

/// One worker: its own connection, reopened after a failure.
async fn work(
    jobs: Arc<Mutex<mpsc::Receiver<Job>>>,
    target: Arc<Target>,
    version: Option<u64>,
    timeout: Duration,
) -> Result<Tally, String> {
    let mut tally = Tally::new()?;
    let mut sender: Option<Sender> = None;
    loop {
        let Some(job) = jobs.lock().await.recv().await else { break };
        tally.lagged(job.due.elapsed());
        tally.captured(job.record.latency_us);
        let sent = Instant::now();
        let result =
            tokio::time::timeout(timeout, exchange(&mut sender, &target, version, &job.record)).await;
        let latency = sent.elapsed();
        match result {
            Ok(Ok((answer_version, outputs))) => {
                let comparisons = gateway::shadow::compare(&job.record.outputs, &outputs);
                tally.answered(latency, answer_version, &comparisons);
            }
            Ok(Err(e)) => {
                if e.transport {
                    sender = None;
                }
                tally.failed(latency, e.status, &e.text);
            }
            Err(_) => {
                sender = None;
                tally.failed(latency, 0, &format!("timed out after {timeout:?}"));
            }
        }
    }
    Ok(tally)
}

struct Failure {
    status: u16,
    text: String,
    /// The connection is no longer usable.
    transport: bool,
}

impl Failure {
    fn transport(text: impl Into<String>) -> Failure {
        Failure { status: 0, text: text.into(), transport: true }
    }
}

#[derive(Serialize)]
struct InferRequest<'a> {
    #[serde(serialize_with = "tensors::serialize_slice")]
    inputs: &'a [Tensor],
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    model_version: Option<serde_json::Value>,
    #[serde(deserialize_with = "tensors::deserialize_vec")]
    outputs: Vec<Tensor>,
}

/// Sends one record's inputs; the answering version (when said) and the outputs.
async fn exchange(
    sender: &mut Option<Sender>,
    target: &Target,
    version: Option<u64>,
    record: &Record,
) -> Result<(Option<String>, Vec<Tensor>), Failure> {
    if sender.is_none() {
        let (s, driver) = client::connect(target.addr, false).await.map_err(Failure::transport)?;
        if let Some(driver) = driver {
            tokio::spawn(driver);
        }
        *sender = Some(s);
    }
    let Some(conn) = sender.as_mut() else { return Err(Failure::transport("no connection")) };
    let body = serde_json::to_vec(&InferRequest { inputs: &record.inputs }).map_err(|e| Failure {
        status: 0,
        text: format!("encoding the request: {e}"),
        transport: false,
    })?;
    let uri = target.uri(&target.infer_path(&record.model, version), false).map_err(Failure::transport)?;
    let request = Request::post(uri)
        .header(http::header::HOST, &target.authority)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| Failure::transport(e.to_string()))?;
    let response = conn.send(request).await.map_err(|e| Failure::transport(e.to_string()))?;
    let status = response.status();
    let header_version =
        response.headers().get("x-model-version").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let bytes =
        response.into_body().collect().await.map_err(|e| Failure::transport(e.to_string()))?.to_bytes();
    if !status.is_success() {
        let text = client::error_text(status, &bytes);
        return Err(Failure { status: status.as_u16(), text, transport: false });
    }
    let answer: Answer = serde_json::from_slice(&bytes).map_err(|e| Failure {
        status: status.as_u16(),
        text: format!("unreadable answer: {e}"),
        transport: false,
    })?;
    let version = header_version.or_else(|| {
        answer.model_version.map(|v| match v {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        })
    });
    Ok((version, answer.outputs))
}
