//! A gRPC `ModelStreamInfer` client that writes requests as fast as flow control lets it and
//! never reads a reply. The gateway must push back (stop granting HTTP/2 window, because it
//! stops reading the stream) rather than take every message and buffer the replies: the
//! attack reports how many messages it got in before a 2 s stall, how many the gateway ran
//! (`gateway_requests_total` of the version the messages pin, which nothing else uses), and
//! the gateway's RSS before, at its peak during the stream, and after the stream is reset.

use std::future::poll_fn;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Reason;
use serde_json::json;

use super::h2c;
use super::{AbuseOptions, AttackOutcome, Gateway, ScenarioReport, delta, with_probe};
use crate::admin;
use crate::probe::MODEL;
use crate::verdict::{Check, mib};

const PATH: &str = "/inference.GRPCInferenceService/ModelStreamInfer";
/// The version every stream message pins (pin-only in the `limits` config).
pub const PINNED_VERSION: u64 = 2;
/// No window granted for this long: the gateway pushed back.
const STALL: Duration = Duration::from_secs(2);
/// The receive window this client offers: the gateway's replies fill it quickly, and as the
/// client never reads, it is never reopened.
const CLIENT_WINDOW: u32 = 65_535;
/// Messages per HTTP/2 DATA frame. A fast client's frames carry several messages (tonic
/// coalesces what it has buffered); one ~80-byte message per frame would instead trip h2's
/// budget for small unread DATA frames (GOAWAY ENHANCE_YOUR_CALM) before flow control.
const MESSAGES_PER_FRAME: u64 = 16;
/// The attack stops when the gateway has grown by this much (a safety bound for the machine;
/// far past the check's limit).
const SAFETY_GROWTH_KIB: u64 = 768 * 1024;
/// RSS the gateway may gain while the stream is held.
const MAX_GROWTH_KIB: u64 = 32 * 1024;

pub async fn run(o: &AbuseOptions) -> ScenarioReport {
    let g = o.limits;
    let frame = match message(&g).await {
        Ok(f) => f,
        Err(e) => return ScenarioReport::broken("grpc_stream", e),
    };
    let before = admin::metrics(g.admin).await.unwrap_or_default();
    let rss_before = g.process.rss_kib().unwrap_or(0);
    let max = o.max_stream_messages;
    let mut report =
        with_probe("grpc_stream", &g, o, Duration::from_millis(500), |until| attack(g, frame, max, until))
            .await;
    let after = admin::metrics(g.admin).await.unwrap_or_default();
    let version = PINNED_VERSION.to_string();
    let ran = delta(&before, &after, "gateway_requests_total", &[("model", MODEL), ("version", &version)]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = g.process.rss_kib().unwrap_or(0);
    let peak = report.figures["rss_peak_kib"].as_u64().unwrap_or(0);
    let growth = peak.saturating_sub(rss_before);
    report.checks.push(Check::functional(
        "grpc_stream.rss_bounded",
        peak > 0 && growth <= MAX_GROWTH_KIB,
        format!(
            "gateway RSS {} before, peak {} while the stream was held (+{}, limit +{}), {} two seconds after the client reset it; the gateway ran {} of the stream's messages",
            mib(rss_before),
            mib(peak),
            mib(growth),
            mib(MAX_GROWTH_KIB),
            mib(rss_after),
            ran.map_or("?".into(), |r| format!("{r:.0}")),
        ),
    ));
    if let Some(map) = report.figures.as_object_mut() {
        map.insert("rss_before_kib".into(), json!(rss_before));
        map.insert("rss_after_release_kib".into(), json!(rss_after));
        map.insert("gateway_ran".into(), json!(ran));
    }
    report
}

/// [`MESSAGES_PER_FRAME`] framed `ModelInferRequest`s pinned to [`PINNED_VERSION`], built with
/// the gateway's generated messages (through loadtest's gRPC payload).
async fn message(g: &Gateway) -> Result<Bytes, String> {
    let url = format!("http://{}", g.grpc);
    let meta = loadtest::grpc::metadata(&url, MODEL, Some(PINNED_VERSION)).await?;
    let tensors = loadtest::payload::generate(&meta, 1, 5)?;
    let one = loadtest::grpc::encode(&tensors, MODEL, Some(PINNED_VERSION), false)?.body;
    Ok(Bytes::from(one.repeat(MESSAGES_PER_FRAME as usize)))
}

/// How the writing ended.
#[derive(Debug)]
enum Stop {
    /// No window for [`STALL`] after this many messages.
    PushedBack { sent: u64, after: Duration },
    /// The window ran out (`until`) or the count bound was reached, never pushed back.
    Bound,
    /// The gateway grew past [`SAFETY_GROWTH_KIB`]; the attack stopped writing.
    Safety,
    /// The stream or connection failed.
    Failed(String),
}

async fn attack(g: Gateway, frame: Bytes, max: u64, until: Instant) -> Result<AttackOutcome, String> {
    let mut h2 = h2c::connect(g.grpc, Some(CLIENT_WINDOW)).await?;
    let request = http::Request::post(format!("http://{}{PATH}", g.grpc))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| format!("building the request: {e}"))?;
    poll_fn(|cx| h2.send.poll_ready(cx)).await.map_err(|e| format!("h2 not ready: {e}"))?;
    // The answer is not read while the attack runs: its future only keeps the stream open.
    let (answer, mut stream) =
        h2.send.send_request(request, false).map_err(|e| format!("opening the stream: {e}"))?;
    let rss = tokio::spawn(peak_rss(g, until));
    let rss_start = g.process.rss_kib()?;
    let started = Instant::now();
    let mut sent = 0u64;
    let stop = loop {
        if sent >= max || Instant::now() >= until {
            break Stop::Bound;
        }
        stream.reserve_capacity(frame.len());
        let wait = STALL.min(until.saturating_duration_since(Instant::now()));
        match capacity(&mut stream, frame.len(), wait).await {
            Ok(true) => {}
            Ok(false) if wait < STALL => break Stop::Bound,
            Ok(false) => break Stop::PushedBack { sent, after: started.elapsed() - STALL },
            Err(e) => break Stop::Failed(format!("{e} after {:.2} s", started.elapsed().as_secs_f64())),
        }
        if let Err(e) = stream.send_data(frame.clone(), false) {
            break Stop::Failed(format!("sending: {e}"));
        }
        sent += MESSAGES_PER_FRAME;
        if sent.is_multiple_of(64 * MESSAGES_PER_FRAME) {
            if g.process.rss_kib()?.saturating_sub(rss_start) > SAFETY_GROWTH_KIB {
                break Stop::Safety;
            }
            tokio::task::yield_now().await;
        }
    };
    // Hold the stream to the end of the window, so the RSS peak is measured with it held.
    tokio::time::sleep_until(until.into()).await;
    let peak = rss.await.map_err(|e| format!("RSS sampler failed: {e}"))?;
    let elapsed = started.elapsed();
    // When the gateway ended the stream itself, say how (its status is in the answer).
    let stop = match stop {
        Stop::Failed(e) => {
            let connection = h2
                .wait_end(Duration::from_millis(500))
                .await
                .map_or("open".into(), |(_, how)| how.describe());
            Stop::Failed(format!("{e}; {}; the connection: {connection}", ending(answer).await))
        }
        other => other,
    };
    stream.send_reset(Reason::CANCEL);
    let message_len = frame.len() / MESSAGES_PER_FRAME as usize;
    Ok(judge(&stop, sent, message_len, elapsed, peak))
}

/// Waits up to `wait` until the stream may send `need` bytes: `Ok(false)` when it may not.
async fn capacity(stream: &mut h2::SendStream<Bytes>, need: usize, wait: Duration) -> Result<bool, String> {
    let deadline = Instant::now() + wait;
    while stream.capacity() < need {
        match tokio::time::timeout_at(deadline.into(), poll_fn(|cx| stream.poll_capacity(cx))).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(format!("stream failed: {e}")),
            Ok(None) => return Err("the stream was closed".into()),
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}

/// How the gateway ended the stream: its `grpc-status` and message (in the answer's head or
/// trailers), read only once it has ended it.
async fn ending(answer: h2::client::ResponseFuture) -> String {
    let read = async {
        let response = answer.await.map_err(|e| format!("answer: {e}"))?;
        let head = status_of(response.headers());
        let mut body = response.into_body();
        let mut replies = 0usize;
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("reading the replies: {e}"))?;
            replies += chunk.len();
            let _ = body.flow_control().release_capacity(chunk.len());
        }
        let trailers = body.trailers().await.map_err(|e| format!("trailers: {e}"))?;
        let status =
            head.or_else(|| trailers.as_ref().and_then(status_of)).unwrap_or_else(|| "no grpc-status".into());
        Ok::<_, String>(format!(
            "the gateway ended it with {status} ({replies} bytes of replies were waiting)"
        ))
    };
    match tokio::time::timeout(Duration::from_secs(2), read).await {
        Ok(Ok(text)) | Ok(Err(text)) => text,
        Err(_) => "its end could not be read within 2 s".into(),
    }
}

fn status_of(headers: &http::HeaderMap) -> Option<String> {
    let code = headers.get("grpc-status")?.to_str().ok()?;
    let message = headers.get("grpc-message").and_then(|v| v.to_str().ok()).unwrap_or("");
    Some(format!("grpc-status {code} {message:?}"))
}

async fn peak_rss(g: Gateway, until: Instant) -> u64 {
    let mut peak = 0;
    while Instant::now() < until {
        peak = peak.max(g.process.rss_kib().unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak.max(g.process.rss_kib().unwrap_or(0))
}

fn judge(stop: &Stop, sent: u64, message_len: usize, elapsed: Duration, peak: u64) -> AttackOutcome {
    let kib = sent * message_len as u64 / 1024;
    let (ok, detail) = match stop {
        Stop::PushedBack { sent, after } => (
            true,
            format!(
                "the gateway stopped granting window after {sent} messages ({} KiB) in {:.2} s",
                *sent * message_len as u64 / 1024,
                after.as_secs_f64()
            ),
        ),
        Stop::Bound => (
            false,
            format!(
                "the gateway never pushed back: it took all {sent} messages ({kib} KiB) written in {:.1} s by a client that reads nothing",
                elapsed.as_secs_f64()
            ),
        ),
        Stop::Safety => (
            false,
            format!(
                "the gateway never pushed back: it took {sent} messages ({kib} KiB) in {:.1} s, until its RSS grew by {} and the attack stopped (safety bound)",
                elapsed.as_secs_f64(),
                mib(SAFETY_GROWTH_KIB)
            ),
        ),
        Stop::Failed(e) => (false, format!("the stream failed after {sent} messages: {e}")),
    };
    let checks = vec![Check::functional("grpc_stream.pushed_back", ok, detail)];
    let figures = json!({
        "messages_sent": sent,
        "bytes_sent": sent * message_len as u64,
        "messages_per_frame": MESSAGES_PER_FRAME,
        "pushed_back": ok,
        "pushed_back_after": match stop { Stop::PushedBack { sent, .. } => Some(*sent), _ => None },
        "held_s": elapsed.as_secs_f64(),
        "rss_peak_kib": peak,
    });
    AttackOutcome { figures, checks }
}
