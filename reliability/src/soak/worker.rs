//! One soak connection: draw a kind from the mix, send its request(s) on the connection
//! (HTTP/1.1 or h2c, reopened after a transport failure), classify each answer, and tally it.
//! Workers share only the request budget and the done counter; each returns its own [`Tally`].

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use loadtest::client::{self, Sender};

use super::mix::{self, Bodies, Kind, Step, USERS, VERSIONS};

/// Unexpected answers kept as examples (all are counted).
const MAX_EXAMPLES: usize = 20;
/// Failure times kept for the reload correlation.
const MAX_FAILURE_TIMES: usize = 10_000;

/// What every worker reads.
#[derive(Debug)]
pub struct Context {
    pub addr: SocketAddr,
    pub model: String,
    pub bodies: Bodies,
    pub sticky_header: HeaderName,
    pub pin_header: HeaderName,
    pub timeout: Duration,
    /// The candidate percents the reloads alternate between (low, high), for the sticky check.
    pub sticky_percents: Option<(f64, f64)>,
    pub seed: u64,
    pub start: Instant,
    /// Requests still to send (claimed one by one).
    pub remaining: AtomicU64,
    /// Requests answered (or failed), read by the RSS sampler.
    pub done: AtomicU64,
}

impl Context {
    fn claim(&self) -> bool {
        self.remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1)).is_ok()
    }
}

/// One unexpected answer, kept as an example.
#[derive(Debug, Clone)]
pub struct Failure {
    pub at: Duration,
    pub step: &'static str,
    pub why: String,
    pub text: String,
}

/// A worker's results; [`Tally::merge`] folds them together.
#[derive(Debug, Clone)]
pub struct Tally {
    /// `(kind, step, status)` → answers.
    pub answers: BTreeMap<(&'static str, &'static str, u16), u64>,
    /// Routed infer answers by the version that gave them.
    pub routed_versions: BTreeMap<u64, u64>,
    /// Pinned infer answers (the right version) by version.
    pub pinned_versions: BTreeMap<u64, u64>,
    /// `(step, why)` → unexpected answers.
    pub unexpected: BTreeMap<(&'static str, String), u64>,
    pub examples: Vec<Failure>,
    /// When unexpected answers happened (since the start), for the reload correlation.
    pub failure_times: Vec<Duration>,
    pub latency_us: Histogram<u64>,
}

impl Tally {
    pub fn new() -> Result<Tally, String> {
        Ok(Tally {
            answers: BTreeMap::new(),
            routed_versions: BTreeMap::new(),
            pinned_versions: BTreeMap::new(),
            unexpected: BTreeMap::new(),
            examples: Vec::new(),
            failure_times: Vec::new(),
            latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 3).map_err(|e| e.to_string())?,
        })
    }

    pub fn unexpected_total(&self) -> u64 {
        self.unexpected.values().sum()
    }

    pub fn merge(&mut self, other: Tally) -> Result<(), String> {
        for (k, n) in other.answers {
            *self.answers.entry(k).or_insert(0) += n;
        }
        for (k, n) in other.routed_versions {
            *self.routed_versions.entry(k).or_insert(0) += n;
        }
        for (k, n) in other.pinned_versions {
            *self.pinned_versions.entry(k).or_insert(0) += n;
        }
        for (k, n) in other.unexpected {
            *self.unexpected.entry(k).or_insert(0) += n;
        }
        let room = MAX_EXAMPLES.saturating_sub(self.examples.len());
        self.examples.extend(other.examples.into_iter().take(room));
        let room = MAX_FAILURE_TIMES.saturating_sub(self.failure_times.len());
        self.failure_times.extend(other.failure_times.into_iter().take(room));
        self.latency_us.add(&other.latency_us).map_err(|e| e.to_string())
    }
}

/// One request to send and the step it is.
struct Call {
    step: Step,
    method: Method,
    path: String,
    body: String,
    header: Option<(HeaderName, String)>,
}

/// Runs one connection's loop until the budget is spent.
pub async fn run(id: u64, http2: bool, ctx: Arc<Context>) -> Result<Tally, String> {
    let mut tally = Tally::new()?;
    let mut rng = fastrand::Rng::with_seed(ctx.seed.wrapping_add(id));
    let mut conn: Option<Sender> = None;
    let mut n: u64 = 0;
    'draws: loop {
        n += 1;
        let kind = Kind::pick(rng.f64());
        for call in calls(&ctx, kind, id, n, &mut rng) {
            if !ctx.claim() {
                break 'draws;
            }
            let started = Instant::now();
            let (status, version, text) = exchange(&ctx, &mut conn, http2, &call).await;
            let us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX).max(1);
            tally.latency_us.saturating_record(us);
            ctx.done.fetch_add(1, Ordering::Relaxed);
            *tally.answers.entry((kind.name(), call.step.name(), status)).or_insert(0) += 1;
            if let Err(why) = mix::classify(call.step, status, version) {
                note_failure(&mut tally, &ctx, call.step, why.to_string(), text);
                // The rest of a labelled pair depends on this answer.
                continue 'draws;
            }
            if let (Step::Infer { pinned, .. }, Some(v)) = (call.step, version) {
                let by = if pinned { &mut tally.pinned_versions } else { &mut tally.routed_versions };
                *by.entry(v).or_insert(0) += 1;
            }
        }
    }
    Ok(tally)
}

fn note_failure(tally: &mut Tally, ctx: &Context, step: Step, why: String, text: String) {
    let at = ctx.start.elapsed();
    *tally.unexpected.entry((step.name(), why.clone())).or_insert(0) += 1;
    if tally.examples.len() < MAX_EXAMPLES {
        tally.examples.push(Failure { at, step: step.name(), why, text });
    }
    if tally.failure_times.len() < MAX_FAILURE_TIMES {
        tally.failure_times.push(at);
    }
}

/// The request(s) of one draw.
fn calls(ctx: &Context, kind: Kind, worker: u64, n: u64, rng: &mut fastrand::Rng) -> Vec<Call> {
    let model = &ctx.model;
    let routed = format!("/v2/models/{model}/infer");
    let repeated = mix::repeated_id(rng.u32(..));
    let infer = |path: String, body: String, header, pinned: Option<u64>| Call {
        step: Step::Infer { pinned: pinned.is_some(), expect: pinned },
        method: Method::POST,
        path,
        body,
        header,
    };
    let label = |step, id: &str, value| Call {
        step,
        method: Method::POST,
        path: "/v2/feedback".into(),
        body: Bodies::label(id, value),
        header: None,
    };
    let b = &ctx.bodies;
    let version = VERSIONS[rng.usize(..VERSIONS.len())];
    match kind {
        Kind::Routed => vec![infer(routed, b.infer(Some(&repeated)), None, None)],
        Kind::Sticky => {
            let user = rng.u32(..USERS).to_string();
            let expect = ctx
                .sticky_percents
                .and_then(|(low, high)| mix::sticky_stable(mix::sticky_bucket(user.as_bytes()), low, high));
            let mut call =
                infer(routed, b.infer(Some(&repeated)), Some((ctx.sticky_header.clone(), user)), None);
            call.step = Step::Infer { pinned: false, expect };
            vec![call]
        }
        Kind::PinHeader => {
            let pin = (ctx.pin_header.clone(), version.to_string());
            vec![infer(routed, b.infer(Some(&repeated)), Some(pin), Some(version))]
        }
        Kind::PinPath => {
            let path = format!("/v2/models/{model}/versions/{version}/infer");
            vec![infer(path, b.infer(Some(&repeated)), None, Some(version))]
        }
        Kind::NoId => vec![infer(routed, b.infer(None), None, None)],
        Kind::LabelledPair => {
            let id = format!("u-{worker}-{n}");
            let value = rng.u64(0..2);
            vec![
                infer(routed, b.infer(Some(&id)), None, None),
                label(Step::FirstLabel, &id, value),
                label(Step::SecondLabel, &id, value),
            ]
        }
        Kind::FeedbackRepeated => vec![label(Step::RepeatedLabel, &repeated, rng.u64(0..2))],
        Kind::FeedbackUnknown => vec![label(Step::UnknownLabel, &format!("never-{worker}-{n}"), 1)],
    }
}

/// Sends `call` (connecting first when needed): the status (0 when no answer), the answering
/// version (`x-model-version`), and the error text of a non-2xx answer.
async fn exchange(
    ctx: &Context,
    conn: &mut Option<Sender>,
    http2: bool,
    call: &Call,
) -> (u16, Option<u64>, String) {
    if conn.is_none() {
        match client::connect(ctx.addr, http2).await {
            Ok((sender, driver)) => {
                if let Some(driver) = driver {
                    tokio::spawn(driver);
                }
                *conn = Some(sender);
            }
            Err(e) => {
                tokio::time::sleep(Duration::from_millis(50)).await;
                return (0, None, e);
            }
        }
    }
    let Some(sender) = conn.as_mut() else { return (0, None, "no connection".into()) };
    let request = match build(ctx, http2, call) {
        Ok(r) => r,
        Err(e) => return (0, None, e),
    };
    let answer = async {
        let response = sender.send(request).await.map_err(|e| e.to_string())?;
        let status = response.status();
        let version = response
            .headers()
            .get("x-model-version")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        let text = if status.is_success() { String::new() } else { client::error_text(status, &body) };
        Ok::<_, String>((status, version, text))
    };
    match tokio::time::timeout(ctx.timeout, answer).await {
        Ok(Ok((status, version, text))) => (status.as_u16(), version, text),
        Ok(Err(e)) => {
            *conn = None;
            (0, None, e)
        }
        Err(_) => {
            *conn = None;
            (0, None, format!("no answer within {:?}", ctx.timeout))
        }
    }
}

fn build(ctx: &Context, http2: bool, call: &Call) -> Result<Request<Full<Bytes>>, String> {
    let uri = if http2 { format!("http://{}{}", ctx.addr, call.path) } else { call.path.clone() };
    let mut request = Request::builder()
        .method(call.method.clone())
        .uri(uri)
        .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    if !http2 {
        request = request.header(HOST, ctx.addr.to_string());
    }
    if let Some((name, value)) = &call.header {
        request = request.header(name, value.as_str());
    }
    request.body(Full::new(Bytes::from(call.body.clone()))).map_err(|e| format!("building a request: {e}"))
}
