//! Running the load: connections opened up front, one worker task per virtual connection,
//! closed loop (send, await, repeat) or open loop (take the next ticket from the
//! [`Schedule`]), warm-up requests sent but not recorded, and the recorded [`Shards`] merged
//! at the end.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::{Driver, Sender, connect};
use crate::exchange::{Conn, exchange};
use crate::progress;
use crate::request::Template;
use crate::schedule::{Schedule, Ticket, tickets_in};
use crate::stats::{Live, Outcome, Shards, Stats};

/// How the run is driven.
#[derive(Debug, Clone)]
pub struct Plan {
    pub addr: SocketAddr,
    pub http2: bool,
    /// Answers are gRPC calls (status in trailers), not V2 HTTP replies.
    pub grpc: bool,
    pub h2_connections: usize,
    pub connections: usize,
    pub template: Template,
    pub timeout: Duration,
    pub seed: u64,
    /// Open loop at this many requests per second; closed loop when `None`.
    pub rate: Option<f64>,
    pub warmup: Duration,
    pub measure_for: Option<Duration>,
    pub requests: Option<u64>,
    pub max_backlog: u64,
    pub progress: bool,
    /// Runtime threads (the number of stats shards).
    pub threads: usize,
}

/// What a run leaves behind.
#[derive(Debug)]
pub struct Finished {
    pub stats: Stats,
    /// From the start of measuring to the last recorded completion.
    pub elapsed: Duration,
    /// Open loop: `(target rate, max backlog, dropped)`.
    pub open_loop: Option<(f64, u64, u64)>,
}

/// State every worker reads.
#[derive(Debug)]
pub struct Shared {
    pub start: Instant,
    pub measure_start: Instant,
    /// Closed loop: no request starts at or after it.
    pub deadline: Option<Instant>,
    /// Closed loop with `--requests`: measured requests still to send.
    pub remaining: Option<AtomicU64>,
    pub schedule: Option<Arc<Schedule>>,
    pub live: Live,
    pub stats: Shards,
    pub total: Option<u64>,
}

/// Runs the whole load and merges the results.
pub async fn run(plan: Arc<Plan>) -> Result<Finished, String> {
    let senders = connect_all(&plan).await?;
    let shared = Arc::new(shared_state(&plan, Instant::now())?);
    let pacer = shared.schedule.clone().map(|s| std::thread::spawn(move || s.pace()));
    let progress = plan.progress.then(|| tokio::spawn(progress::show(Arc::clone(&shared))));
    let workers: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, sender)| tokio::spawn(worker(i as u64, Arc::clone(&shared), Arc::clone(&plan), sender)))
        .collect();
    let mut last = shared.measure_start;
    for handle in workers {
        let worker_last = handle.await.map_err(|e| format!("worker failed: {e}"))?;
        last = last.max(worker_last);
    }
    let stats = shared.stats.merged()?;
    if let Some(p) = progress {
        p.abort();
        progress::clear();
    }
    if let Some(p) = pacer {
        p.join().map_err(|_| "the pacer thread panicked".to_string())?;
    }
    let open_loop = shared.schedule.as_ref().zip(plan.rate).map(|(s, rate)| {
        (rate, s.max_seen_backlog.load(Ordering::Relaxed), s.dropped.load(Ordering::Relaxed))
    });
    Ok(Finished { stats, elapsed: last.saturating_duration_since(shared.measure_start), open_loop })
}

/// The run's clock and limits, fixed at `start`.
fn shared_state(plan: &Plan, start: Instant) -> Result<Shared, String> {
    let schedule = plan.rate.map(|rate| {
        let warm = tickets_in(plan.warmup, rate);
        let limit = match (plan.measure_for, plan.requests) {
            (Some(d), _) => tickets_in(plan.warmup + d, rate),
            (None, Some(n)) => warm.saturating_add(n),
            (None, None) => warm,
        };
        Arc::new(Schedule::new(start, rate, limit, plan.max_backlog, plan.connections))
    });
    let measure_start = match (&schedule, plan.rate) {
        (Some(s), Some(rate)) => s.intended(tickets_in(plan.warmup, rate)),
        _ => start + plan.warmup,
    };
    let closed = schedule.is_none();
    Ok(Shared {
        start,
        measure_start,
        deadline: plan.measure_for.filter(|_| closed).map(|d| measure_start + d),
        remaining: plan.requests.filter(|_| closed).map(AtomicU64::new),
        schedule,
        live: Live::default(),
        stats: Shards::new(plan.threads)?,
        total: plan.requests,
    })
}

/// One sender per virtual connection: its own HTTP/1.1 connection, or a share of the HTTP/2
/// connections.
async fn connect_all(plan: &Plan) -> Result<Vec<(Sender, Option<Driver>)>, String> {
    let mut senders = Vec::with_capacity(plan.connections);
    if !plan.http2 {
        for _ in 0..plan.connections {
            senders.push(connect(plan.addr, false).await?);
        }
        return Ok(senders);
    }
    let own = plan.h2_connections.clamp(1, plan.connections);
    let mut opened = Vec::with_capacity(own);
    for _ in 0..own {
        opened.push(connect(plan.addr, true).await?.0);
    }
    Ok((0..plan.connections)
        .filter_map(|i| opened.get(i % own).and_then(Sender::share))
        .map(|sender| (sender, None))
        .collect())
}

/// One virtual connection's loop; returns its last recorded completion.
async fn worker(id: u64, shared: Arc<Shared>, plan: Arc<Plan>, opened: (Sender, Option<Driver>)) -> Instant {
    let mut rng = fastrand::Rng::with_seed(plan.seed.wrapping_add(id));
    let mut conn = Conn::new(opened, plan.timeout);
    let mut last = shared.measure_start;
    while let Some(intended) = next_start(&shared).await {
        let outcome = exchange(&mut conn, &plan, &mut rng).await;
        let done = Instant::now();
        shared.live.count(matches!(outcome, Outcome::Ok { .. }));
        if intended >= shared.measure_start {
            shared.stats.record(id, done.saturating_duration_since(intended), outcome);
            last = done;
        }
    }
    last
}

/// When the next request is meant to start, or `None` when this worker is done.
async fn next_start(shared: &Shared) -> Option<Instant> {
    if let Some(schedule) = &shared.schedule {
        return match schedule.take().await {
            Ticket::Send { intended } => Some(intended),
            Ticket::Done => None,
        };
    }
    let now = Instant::now();
    if shared.deadline.is_some_and(|d| now >= d) {
        return None;
    }
    if now >= shared.measure_start
        && let Some(remaining) = &shared.remaining
    {
        let claimed = remaining.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1));
        claimed.ok()?;
    }
    Some(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::Payload;
    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use std::sync::atomic::AtomicUsize;

    /// A canned V2 server: every 10th request gets 503, the others 200 from version 1 (in the
    /// header) or version 2 (only in the body).
    async fn canned_server(h2: bool) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let seen = Arc::clone(&seen);
                let service = service_fn(move |_req| {
                    let n = seen.fetch_add(1, Ordering::Relaxed);
                    async move { Ok::<_, std::convert::Infallible>(answer(n)) }
                });
                let io = TokioIo::new(stream);
                if h2 {
                    let builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                    tokio::spawn(builder.serve_connection(io, service));
                } else {
                    tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(io, service));
                }
            }
        });
        addr
    }

    fn answer(n: usize) -> http::Response<Full<Bytes>> {
        let builder = http::Response::builder();
        let (builder, body) = match n % 10 {
            9 => (builder.status(503), r#"{"error":"busy"}"#),
            1 => (builder, r#"{"model_name":"m","model_version":"2","outputs":[]}"#),
            _ => (builder.header("x-model-version", "1"), r#"{"model_version":"1"}"#),
        };
        builder.body(Full::new(Bytes::from_static(body.as_bytes()))).unwrap()
    }

    fn plan(addr: SocketAddr) -> Plan {
        let payload = Payload { body: Bytes::from_static(b"{}"), json_length: None, rows: 2, grpc: false };
        let uri = "/v2/models/m/infer".parse().unwrap();
        Plan {
            addr,
            http2: false,
            grpc: false,
            h2_connections: 1,
            connections: 4,
            template: Template::new(uri, &addr.to_string(), false, &payload, &[], None).unwrap(),
            timeout: Duration::from_secs(5),
            seed: 1,
            rate: None,
            warmup: Duration::ZERO,
            measure_for: None,
            requests: Some(200),
            max_backlog: 1000,
            progress: false,
            threads: 1,
        }
    }

    #[tokio::test]
    async fn closed_loop_counts_exactly() {
        let addr = canned_server(false).await;
        let done = run(Arc::new(plan(addr))).await.unwrap();
        let s = done.stats;
        assert_eq!(s.requests(), 200);
        assert_eq!(s.errors[&(503, "busy".to_string())], 20);
        assert_eq!(s.versions["1"] + s.versions["2"], 180);
        assert_eq!(s.versions["2"], 20);
        assert!(done.open_loop.is_none());
    }

    #[tokio::test]
    async fn open_loop_keeps_the_rate_after_warmup() {
        let addr = canned_server(false).await;
        let mut p = plan(addr);
        p.rate = Some(1000.0);
        p.requests = None;
        p.warmup = Duration::from_millis(100);
        p.measure_for = Some(Duration::from_millis(300));
        let done = run(Arc::new(p)).await.unwrap();
        assert_eq!(done.stats.requests(), 300, "warm-up tickets are not recorded");
        let (rate, _, dropped) = done.open_loop.unwrap();
        assert_eq!((rate, dropped), (1000.0, 0));
        assert!(done.elapsed >= Duration::from_millis(299), "{:?}", done.elapsed);
    }

    #[tokio::test]
    async fn http2_streams_share_connections() {
        let addr = canned_server(true).await;
        let mut p = plan(addr);
        p.http2 = true;
        p.h2_connections = 2;
        p.connections = 8;
        p.template = Template::new(
            "http://x/v2/models/m/infer".parse().unwrap(),
            "x",
            true,
            &Payload { body: Bytes::from_static(b"{}"), json_length: None, rows: 1, grpc: false },
            &[],
            None,
        )
        .unwrap();
        let done = run(Arc::new(p)).await.unwrap();
        assert_eq!(done.stats.requests(), 200);
        assert_eq!(done.stats.ok, 180);
    }
}
