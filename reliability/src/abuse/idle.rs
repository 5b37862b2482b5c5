//! Idle HTTP/2 connections: after one request, a client that sends nothing more (its
//! connection still answers the server's pings), and one that sends nothing but PINGs of its
//! own, on the data listener (h2c) and on the gRPC listener. Each must be closed
//! `idle_timeout` after its last request, pings or not. Not an attack on latency: no probe.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use h2::Ping;
use serde_json::{Value, json};

use super::h2c::{self, H2};
use super::{AbuseOptions, ScenarioReport};
use crate::verdict::Check;

/// Connections per group.
const PER_GROUP: usize = 3;
/// How often a pinging client pings.
const PING_EVERY: Duration = Duration::from_millis(250);

/// A connection's story: when it closed after its request (`None`: still open at the bound),
/// how, and how many of its pings were answered.
#[derive(Debug, Clone)]
struct Quiet {
    closed_after: Option<Duration>,
    how: String,
    pongs: u64,
}

pub async fn run(o: &AbuseOptions) -> ScenarioReport {
    let g = o.timeouts;
    let live = Some(Bytes::from_static(&[0, 0, 0, 0, 0])); // an empty ServerLiveRequest, framed
    let groups: [(&str, SocketAddr, &str, Option<Bytes>, bool); 4] = [
        ("h2_passive", g.data, "/v2/health/live", None, false),
        ("h2_pinging", g.data, "/v2/health/live", None, true),
        ("grpc_passive", g.grpc, "/inference.GRPCInferenceService/ServerLive", live.clone(), false),
        ("grpc_pinging", g.grpc, "/inference.GRPCInferenceService/ServerLive", live, true),
    ];
    let bound = o.idle_timeout * 3 + Duration::from_secs(2);
    let mut tasks = Vec::new();
    for (group, addr, path, body, pinging) in groups.clone() {
        for _ in 0..PER_GROUP {
            let body = body.clone();
            tasks.push((group, tokio::spawn(quiet_connection(addr, path, body, pinging, bound))));
        }
    }
    let mut results: Vec<(&str, Result<Quiet, String>)> = Vec::new();
    for (group, task) in tasks {
        let r = task.await.map_err(|e| format!("task failed: {e}")).and_then(|r| r);
        results.push((group, r));
    }
    let mut checks = Vec::new();
    let mut figures = serde_json::Map::new();
    for (group, ..) in groups {
        let mine: Vec<&Result<Quiet, String>> =
            results.iter().filter(|(g, _)| *g == group).map(|(_, r)| r).collect();
        let (check, value) = judge(group, &mine, o.idle_timeout, bound);
        checks.push(check);
        figures.insert(group.to_string(), value);
    }
    ScenarioReport { name: "idle", baseline: None, attacked: None, figures: Value::Object(figures), checks }
}

/// One connection: a request, then quiet (or pings) until the gateway closes it or `bound`.
async fn quiet_connection(
    addr: SocketAddr,
    path: &'static str,
    grpc_body: Option<Bytes>,
    pinging: bool,
    bound: Duration,
) -> Result<Quiet, String> {
    let mut h2 = h2c::connect(addr, None).await?;
    let answer = h2c::request(&mut h2, addr, path, grpc_body, Duration::from_secs(5)).await?;
    let grpc_failed = answer.contains("grpc-status") && !answer.ends_with("grpc-status 0");
    if !answer.starts_with("200") || grpc_failed {
        return Err(format!("the first request got {answer}"));
    }
    let quiet_since = Instant::now();
    let deadline = quiet_since + bound;
    let mut pongs = 0;
    if pinging {
        pongs = ping_until_closed(&mut h2, deadline).await;
    } else {
        h2.wait_end(bound).await;
    }
    Ok(match h2.ended() {
        Some((at, how)) => Quiet { closed_after: Some(at - quiet_since), how: how.describe(), pongs },
        None => Quiet { closed_after: None, how: "still open".into(), pongs },
    })
}

/// Pings every [`PING_EVERY`] until the connection ends or `deadline`; the pongs received.
async fn ping_until_closed(h2: &mut H2, deadline: Instant) -> u64 {
    let mut pongs = 0;
    let Some(mut pinger) = h2.ping.take() else { return 0 };
    while Instant::now() < deadline && h2.ended().is_none() {
        let wait = PING_EVERY.min(deadline.saturating_duration_since(Instant::now()));
        tokio::time::sleep(wait).await;
        match tokio::time::timeout(Duration::from_secs(1), pinger.ping(Ping::opaque())).await {
            Ok(Ok(_)) => pongs += 1,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    let left = deadline.saturating_duration_since(Instant::now()).min(Duration::from_secs(1));
    h2.wait_end(left).await;
    pongs
}

/// A group passes when every connection closed between `idle - 250 ms` and `idle + 1.5 s`
/// after its request.
fn judge(group: &str, results: &[&Result<Quiet, String>], idle: Duration, bound: Duration) -> (Check, Value) {
    let name = format!("idle.{group}_closed");
    let errors: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    if let Some(e) = errors.first() {
        return (
            Check::broken(name, format!("{} of {} connections failed: {e}", errors.len(), results.len())),
            json!({ "error": e }),
        );
    }
    let quiet: Vec<&Quiet> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
    let (low, high) = (idle.saturating_sub(Duration::from_millis(250)), idle + Duration::from_millis(1500));
    let times: Vec<Duration> = quiet.iter().filter_map(|q| q.closed_after).collect();
    let in_window = times.iter().filter(|t| **t >= low && **t <= high).count();
    let pongs: u64 = quiet.iter().map(|q| q.pongs).sum();
    let mut endings: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for q in &quiet {
        *endings.entry(q.how.as_str()).or_insert(0) += 1;
    }
    let endings: Vec<String> = endings.iter().map(|(how, n)| format!("{n} x {how}")).collect();
    let closed = match (times.iter().min(), times.iter().max()) {
        (Some(a), Some(b)) => {
            format!("closed {:.2}-{:.2} s after their request", a.as_secs_f64(), b.as_secs_f64())
        }
        _ => "none closed".to_string(),
    };
    let detail = format!(
        "{in_window} of {} in the window ({closed}; idle_timeout {:.1} s, window {:.2}-{:.2} s); {} still open after {:.0} s; {pongs} client pings answered; {}",
        quiet.len(),
        idle.as_secs_f64(),
        low.as_secs_f64(),
        high.as_secs_f64(),
        quiet.len() - times.len(),
        bound.as_secs_f64(),
        endings.join(", "),
    );
    let value = json!({
        "connections": quiet.len(),
        "closed_in_window": in_window,
        "closed_after_s": times.iter().map(|t| t.as_secs_f64()).collect::<Vec<_>>(),
        "still_open": quiet.len() - times.len(),
        "pongs": pongs,
    });
    (Check::functional(name, in_window == quiet.len(), detail), value)
}
