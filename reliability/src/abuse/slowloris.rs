//! Slowloris: many HTTP/1.1 connections sending a request head one byte at a time, never
//! finishing it. Most start trickling as soon as they connect (the first head); a fifth first
//! complete one request on the connection and then trickle the second head (keep-alive). The
//! header-read timeout must close each within `header_read_timeout` (+1 s of slack) of its
//! first trickled byte. A closed connection is reopened and trickles again, so the pressure
//! lasts the whole measured window; the check reads every cycle.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{AbuseOptions, AttackOutcome, ScenarioReport, with_probe};
use crate::verdict::{Check, quantile};

/// One byte every this long.
const BYTE_EVERY: Duration = Duration::from_millis(100);
/// Slack over the header-read timeout before a connection counts as not closed in time.
const SLACK: Duration = Duration::from_secs(1);

pub async fn run(o: &AbuseOptions) -> ScenarioReport {
    let g = o.timeouts;
    let (n, hrt) = (o.slowloris_connections, o.header_read_timeout);
    with_probe("slowloris", &g, o, Duration::from_millis(500), |until| attack(g.data, n, hrt, until)).await
}

/// One trickle cycle: when the gateway closed the connection after its first trickled byte
/// (`None`: still open when the attack ended), the bytes sent, and what it sent back if
/// anything.
#[derive(Debug, Clone)]
struct Cycle {
    second_head: bool,
    closed_after: Option<Duration>,
    bytes: usize,
    answer: Option<String>,
}

async fn attack(addr: SocketAddr, n: usize, hrt: Duration, until: Instant) -> Result<AttackOutcome, String> {
    // Long enough that every cycle is cut by the gateway, not by the attack's end.
    let until = until.max(Instant::now() + hrt + SLACK * 2);
    let tasks: Vec<_> = (0..n).map(|i| tokio::spawn(attacker(addr, i % 5 == 4, until, hrt))).collect();
    let mut cycles = Vec::new();
    let mut errors = Vec::new();
    for t in tasks {
        match t.await {
            Ok((mine, err)) => {
                cycles.extend(mine);
                errors.extend(err);
            }
            Err(e) => errors.push(format!("task failed: {e}")),
        }
    }
    Ok(judge(&cycles, &errors, hrt))
}

/// One attacker: trickle cycles until `until`.
async fn attacker(
    addr: SocketAddr,
    second_head: bool,
    until: Instant,
    hrt: Duration,
) -> (Vec<Cycle>, Option<String>) {
    let mut cycles = Vec::new();
    // A cycle that cannot end before `until` is not started (it would be cut by the attack's
    // end, not the gateway).
    while Instant::now() + hrt + SLACK < until || cycles.is_empty() {
        match cycle(addr, second_head, until).await {
            Ok(c) => cycles.push(c),
            Err(e) => return (cycles, Some(e)),
        }
    }
    (cycles, None)
}

async fn cycle(addr: SocketAddr, second_head: bool, until: Instant) -> Result<Cycle, String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let mut buf = [0u8; 4096];
    if second_head {
        let head = format!("GET /v2/health/live HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        tcp.write_all(head.as_bytes()).await.map_err(|e| format!("first request: {e}"))?;
        let n = tokio::time::timeout(Duration::from_secs(2), tcp.read(&mut buf))
            .await
            .map_err(|_| "first request: no answer within 2 s".to_string())?
            .map_err(|e| format!("first request: {e}"))?;
        let answer = String::from_utf8_lossy(&buf[..n]);
        if !answer.starts_with("HTTP/1.1 200") {
            return Err(format!("first request answered {:?}", answer.lines().next().unwrap_or("")));
        }
    }
    let slow = slow_head(addr);
    let started = Instant::now();
    let mut sent = 0;
    let mut tick = tokio::time::interval(BYTE_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(byte) = slow.get(sent..=sent) else { break };
                if tcp.write_all(byte).await.is_err() {
                    return Ok(Cycle { second_head, closed_after: Some(started.elapsed()), bytes: sent, answer: None });
                }
                sent += 1;
            }
            read = tcp.read(&mut buf) => {
                let closed_after = Some(started.elapsed());
                let answer = match read {
                    Ok(n) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).lines().next().unwrap_or("").to_string()),
                    _ => None,
                };
                return Ok(Cycle { second_head, closed_after, bytes: sent, answer });
            }
            _ = tokio::time::sleep_until(until.into()) => break,
        }
    }
    Ok(Cycle { second_head, closed_after: None, bytes: sent, answer: None })
}

/// A request head that never ends (a header value of thousands of bytes).
fn slow_head(addr: SocketAddr) -> Vec<u8> {
    let mut head =
        format!("POST /v2/models/credit-scoring/infer HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nX-Slow: ")
            .into_bytes();
    head.extend(std::iter::repeat_n(b'a', 8192));
    head
}

fn judge(cycles: &[Cycle], errors: &[String], hrt: Duration) -> AttackOutcome {
    let mut checks = Vec::new();
    let mut figures = serde_json::Map::new();
    for (second_head, key) in [(false, "first_head"), (true, "second_head")] {
        let mine: Vec<&Cycle> = cycles.iter().filter(|c| c.second_head == second_head).collect();
        let mut times: Vec<Duration> = mine.iter().filter_map(|c| c.closed_after).collect();
        times.sort();
        let late = mine.iter().filter(|c| c.closed_after.is_none_or(|t| t > hrt + SLACK)).count();
        let answered: Vec<&str> = mine.iter().filter_map(|c| c.answer.as_deref()).collect();
        let bytes = quantile(
            &{
                let mut b: Vec<usize> = mine.iter().map(|c| c.bytes).collect();
                b.sort();
                b
            },
            0.5,
        );
        let s = |q| quantile(&times, q).map_or("-".into(), |t: Duration| format!("{:.2}", t.as_secs_f64()));
        let detail = format!(
            "{} cycles: closed after min {} / p50 {} / max {} s of trickling (header_read_timeout {:.1} s, limit {:.1} s); {late} not closed in time; median {} bytes sent; {} answered before closing{}",
            mine.len(),
            s(0.0),
            s(0.5),
            s(1.0),
            hrt.as_secs_f64(),
            (hrt + SLACK).as_secs_f64(),
            bytes.unwrap_or(0),
            answered.len(),
            answered.first().map_or(String::new(), |a| format!(" (e.g. {a:?})")),
        );
        let ok = !mine.is_empty() && late == 0;
        checks.push(Check::functional(format!("slowloris.{key}_closed"), ok, detail));
        figures.insert(
            key.into(),
            json!({
                "cycles": mine.len(),
                "late_or_open": late,
                "closed_after_s": { "min": quantile(&times, 0.0).map(|t| t.as_secs_f64()), "p50": quantile(&times, 0.5).map(|t| t.as_secs_f64()), "max": quantile(&times, 1.0).map(|t| t.as_secs_f64()) },
                "answered": answered.len(),
            }),
        );
    }
    if let Some(e) = errors.first() {
        checks.push(Check::broken("slowloris.attackers", format!("{} attackers failed: {e}", errors.len())));
    }
    AttackOutcome { figures: serde_json::Value::Object(figures), checks }
}
