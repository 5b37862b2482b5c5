//! Connection flood: thousands of TCP connections that send nothing, against
//! `server.max_connections`. The connections beyond the limit must be closed at once (and
//! counted in `gateway_connections_refused_total`), the gateway must never hold more than the
//! limit (its open descriptors, read from /proc), and the well-behaved client must be served:
//! both the probe, connected before the flood, and newcomers that connect during it (one fresh
//! connection and request every 250 ms).
//!
//! The flood holds what it gets: a connection the gateway closes is not reopened, so the
//! slots the flood won stay taken for the whole window (the default header-read timeout, 10 s,
//! is longer than the window). Refusing connections beyond the limit is the contract, so a
//! newcomer gets in only when the gateway makes room: `flood.newcomer_served` is reported (WARN
//! when missed), never a failure.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use serde_json::json;
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::{AbuseOptions, AttackOutcome, Gateway, ScenarioReport, delta, with_probe};
use crate::admin;
use crate::verdict::{Check, quantile};

/// Connects in flight at once.
const CONNECT_CONCURRENCY: usize = 256;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Closed within this long of connecting, having sent nothing: refused.
const AT_ONCE: Duration = Duration::from_millis(500);
/// The probe's unrecorded head start, covering the flood's build-up.
const RAMP: Duration = Duration::from_secs(3);
/// Descriptors the gateway may hold beyond the limit (listeners, model files, its own pipes).
const FD_SLACK: usize = 64;
const NEWCOMER_EVERY: Duration = Duration::from_millis(250);

pub const METRIC: &str = "gateway_connections_refused_total";

pub async fn run(o: &AbuseOptions) -> ScenarioReport {
    let g = o.limits;
    let fds_before = match g.process.open_fds() {
        Ok(n) => n,
        Err(e) => return ScenarioReport::broken("flood", e),
    };
    let before = admin::metrics(g.admin).await.unwrap_or_default();
    let report = with_probe("flood", &g, o, RAMP, |until| attack(g, o, until)).await;
    let mut report = report;
    // After the flood: counted refusals, and the descriptors given back.
    let after = admin::metrics(g.admin).await.unwrap_or_default();
    let refused_metric = delta(&before, &after, METRIC, &[]);
    let recovered = recovery(&g, fds_before).await;
    let refused_seen = report.figures["refused_at_once"].as_u64().unwrap_or(0);
    report.checks.push(match refused_metric {
        None => Check::functional(
            "flood.refused_counted",
            false,
            format!("{METRIC} is not exported by the gateway ({refused_seen} connections were seen refused)"),
        ),
        Some(d) => Check::functional(
            "flood.refused_counted",
            d >= refused_seen as f64,
            format!("{METRIC} +{d:.0}; the flood saw {refused_seen} closed at once"),
        ),
    });
    report.checks.push(recovered);
    if let Some(map) = report.figures.as_object_mut() {
        map.insert("fds_before".into(), json!(fds_before));
        map.insert("refused_metric_delta".into(), json!(refused_metric));
    }
    report
}

/// What one flood connection saw.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fate {
    ConnectFailed,
    /// Closed by the gateway this long after connecting.
    Closed(Duration),
    /// Still open when the flood ended.
    Held,
}

async fn attack(g: Gateway, o: &AbuseOptions, until: Instant) -> Result<AttackOutcome, String> {
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(CONNECT_CONCURRENCY));
    let tasks: Vec<_> =
        (0..o.flood_connections).map(|_| tokio::spawn(hold(g.data, gate.clone(), until))).collect();
    let fds = tokio::spawn(watch_fds(g, until));
    // Newcomers start once every flood connection has been attempted.
    let ramp_done = wait_for_ramp(&gate, until).await;
    let ramp = ramp_done.duration_since(started);
    let newcomers = tokio::spawn(newcomers(g.data, until));
    let mut fates = Vec::with_capacity(tasks.len());
    for t in tasks {
        fates.push(t.await.map_err(|e| format!("flood task failed: {e}"))?);
    }
    let max_fds = fds.await.map_err(|e| format!("fd watcher failed: {e}"))??;
    let newcomers = newcomers.await.map_err(|e| format!("newcomer task failed: {e}"))?;
    Ok(judge(o, &fates, max_fds, ramp, &newcomers))
}

/// Connects (bounded by the semaphore), then holds the connection without a byte until the
/// gateway closes it or `until`.
async fn hold(addr: SocketAddr, gate: Arc<Semaphore>, until: Instant) -> Fate {
    let Ok(permit) = gate.acquire().await else { return Fate::ConnectFailed };
    let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await;
    drop(permit);
    let Ok(Ok(mut tcp)) = tcp else { return Fate::ConnectFailed };
    let connected = Instant::now();
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at(until.into(), tcp.read(&mut buf)).await {
            Err(_) => return Fate::Held,
            // Whatever the gateway says, only the close matters.
            Ok(Ok(n)) if n > 0 => continue,
            Ok(_) => return Fate::Closed(connected.elapsed()),
        }
    }
}

/// When every flood connection has at least been attempted (all permits free again).
async fn wait_for_ramp(gate: &Semaphore, until: Instant) -> Instant {
    tokio::time::sleep(Duration::from_millis(50)).await;
    while gate.available_permits() < CONNECT_CONCURRENCY && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Instant::now()
}

/// The most descriptors the gateway held while the flood ran.
async fn watch_fds(g: Gateway, until: Instant) -> Result<usize, String> {
    let mut max = 0;
    while Instant::now() < until {
        max = max.max(g.process.open_fds()?);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(max)
}

/// A newcomer every [`NEWCOMER_EVERY`]: a fresh connection and one `GET /v2/health/ready`.
/// Each attempt's result, in order.
async fn newcomers(addr: SocketAddr, until: Instant) -> Vec<(Instant, bool)> {
    let mut results = Vec::new();
    while Instant::now() + NEWCOMER_EVERY < until {
        let at = Instant::now();
        let attempt = tokio::time::timeout(
            Duration::from_secs(1),
            admin::call(addr, Method::GET, "/v2/health/ready", Bytes::new()),
        );
        let ok = matches!(attempt.await, Ok(Ok((200, _))));
        results.push((at, ok));
        tokio::time::sleep_until((at + NEWCOMER_EVERY).into()).await;
    }
    results
}

/// The longest run of refused newcomer attempts, from its first to the next success (or the
/// last attempt).
fn longest_lockout(results: &[(Instant, bool)]) -> Duration {
    let mut longest = Duration::ZERO;
    let mut since: Option<Instant> = None;
    for &(at, ok) in results {
        match (ok, since) {
            (false, None) => since = Some(at),
            (true, Some(s)) => {
                longest = longest.max(at - s);
                since = None;
            }
            _ => {}
        }
    }
    if let (Some(s), Some(&(last, _))) = (since, results.last()) {
        longest = longest.max(last - s + NEWCOMER_EVERY);
    }
    longest
}

fn judge(
    o: &AbuseOptions,
    fates: &[Fate],
    max_fds: usize,
    ramp: Duration,
    newcomers: &[(Instant, bool)],
) -> AttackOutcome {
    let attempted = fates.len();
    let connect_failed = fates.iter().filter(|f| **f == Fate::ConnectFailed).count();
    let held = fates.iter().filter(|f| **f == Fate::Held).count();
    let mut closed: Vec<Duration> =
        fates.iter().filter_map(|f| if let Fate::Closed(d) = f { Some(*d) } else { None }).collect();
    closed.sort();
    let at_once = closed.iter().filter(|d| **d <= AT_ONCE).count();
    let later = closed.len() - at_once;
    let limit = o.max_connections;
    // The probe holds a few of the limit's slots.
    let beyond = attempted.saturating_sub(limit.saturating_sub(o.probe_connections));
    let q = |x| {
        quantile(&closed[..at_once], x)
            .map_or("-".into(), |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0))
    };
    let refused_ok = at_once + connect_failed >= beyond && at_once > 0 && held <= limit;
    let mut checks = vec![Check::functional(
        "flood.refused_at_once",
        refused_ok,
        format!(
            "{attempted} idle connections in {:.2} s against max_connections {limit}: {at_once} closed within {} ms (p50 {} ms, max {} ms), {later} closed later, {held} held to the end, {connect_failed} could not connect; expected >= {beyond} refused at once",
            ramp.as_secs_f64(),
            AT_ONCE.as_millis(),
            q(0.5),
            q(1.0),
        ),
    )];
    checks.push(Check::functional(
        "flood.limit_held",
        max_fds <= limit + FD_SLACK,
        format!("the gateway held at most {max_fds} descriptors during the flood (limit {limit} connections + {FD_SLACK} for listeners and files)"),
    ));
    let served = newcomers.iter().filter(|(_, ok)| *ok).count();
    let lockout = longest_lockout(newcomers);
    // Informational: at the limit the gateway refuses new connections (the contract), so a
    // newcomer gets in only once the flood's silent connections reach the header-read timeout.
    checks.push(Check::target(
        "flood.newcomer_served",
        !newcomers.is_empty() && served * 10 >= newcomers.len() * 9,
        false,
        format!(
            "clients connecting during the flood: {served} of {} fresh connections served (GET /v2/health/ready within 1 s), longest lockout {:.2} s",
            newcomers.len(),
            lockout.as_secs_f64()
        ),
    ));
    let figures = json!({
        "attempted": attempted,
        "ramp_s": ramp.as_secs_f64(),
        "refused_at_once": at_once,
        "closed_later": later,
        "held": held,
        "connect_failed": connect_failed,
        "max_gateway_fds": max_fds,
        "newcomers": { "attempts": newcomers.len(), "served": served, "longest_lockout_s": lockout.as_secs_f64() },
    });
    AttackOutcome { figures, checks }
}

/// Two seconds after the flood let go, the gateway's descriptors are back near where they were.
async fn recovery(g: &Gateway, fds_before: usize) -> Check {
    tokio::time::sleep(Duration::from_secs(2)).await;
    match g.process.open_fds() {
        Ok(now) => Check::functional(
            "flood.recovered",
            now <= fds_before + 16,
            format!("gateway descriptors: {fds_before} before the flood, {now} two seconds after it ended"),
        ),
        Err(e) => Check::broken("flood.recovered", e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockout_is_the_longest_refused_run() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let r = [(at(0), true), (at(250), false), (at(500), false), (at(750), true), (at(1000), false)];
        assert_eq!(longest_lockout(&r), Duration::from_millis(500));
        assert_eq!(longest_lockout(&[(at(0), true)]), Duration::ZERO);
        let all_refused = [(at(0), false), (at(250), false)];
        assert_eq!(longest_lockout(&all_refused), Duration::from_millis(500));
    }
}
