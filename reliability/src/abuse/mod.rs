//! The abuse run: each scenario attacks a gateway while the well-behaved [`probe`] measures it,
//! with an unloaded baseline taken right before, in the same run. Owns the gateways under test,
//! the scenario framework (baseline → probe connected → attack → probe finishes) and the
//! latency checks every attacked scenario shares; each attack and its own checks live in a file
//! of its own.
//!
//! Two gateways, started by the script: `limits` (the connection limit, default timeouts, a
//! gRPC listener) for the flood, the rapid reset and the gRPC stream; `timeouts` (short
//! header-read and idle timeouts) for slowloris and idle HTTP/2 connections.

pub mod flood;
pub mod h2c;
pub mod idle;
pub mod rapid_reset;
pub mod slowloris;
pub mod stream;

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::admin::{self, Metrics};
use crate::probe::{self, ProbeResult, ProbeSpec};
use crate::process::Process;
use crate::verdict::{Check, ratio};

/// One gateway under test: `data=ADDR,admin=ADDR,grpc=ADDR,pid=PID`.
#[derive(Debug, Clone, Copy)]
pub struct Gateway {
    pub data: SocketAddr,
    pub admin: SocketAddr,
    pub grpc: SocketAddr,
    pub process: Process,
}

impl FromStr for Gateway {
    type Err = String;

    fn from_str(text: &str) -> Result<Gateway, String> {
        let mut fields = std::collections::HashMap::new();
        for part in text.split(',') {
            let (k, v) = part.split_once('=').ok_or_else(|| format!("{part:?} is not key=value"))?;
            fields.insert(k.trim(), v.trim());
        }
        let get = |k: &str| fields.get(k).copied().ok_or_else(|| format!("{text:?} lacks {k}="));
        let addr =
            |k: &str| -> Result<SocketAddr, String> { get(k)?.parse().map_err(|e| format!("{k}: {e}")) };
        let pid = get("pid")?.parse().map_err(|e| format!("pid: {e}"))?;
        Ok(Gateway {
            data: addr("data")?,
            admin: addr("admin")?,
            grpc: addr("grpc")?,
            process: Process { pid },
        })
    }
}

/// Everything the scenarios need to know.
#[derive(Debug, Clone)]
pub struct AbuseOptions {
    pub limits: Gateway,
    pub timeouts: Gateway,
    /// `server.max_connections` of the `limits` gateway.
    pub max_connections: usize,
    /// `server.header_read_timeout_ms` and `idle_timeout_ms` of the `timeouts` gateway.
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub strict: bool,
    pub max_p99_ratio: f64,
    pub probe_connections: usize,
    pub baseline: Duration,
    pub measure: Duration,
    pub flood_connections: usize,
    pub slowloris_connections: usize,
    pub max_resets: u64,
    pub max_stream_messages: u64,
}

/// One scenario's outcome.
#[derive(Debug)]
pub struct ScenarioReport {
    pub name: &'static str,
    pub baseline: Option<ProbeResult>,
    pub attacked: Option<ProbeResult>,
    pub figures: Value,
    pub checks: Vec<Check>,
}

impl ScenarioReport {
    /// A scenario that could not run: one FAIL saying why.
    pub fn broken(name: &'static str, why: String) -> ScenarioReport {
        ScenarioReport {
            name,
            baseline: None,
            attacked: None,
            figures: json!({ "error": why }),
            checks: vec![Check::broken(format!("{name}.ran"), why)],
        }
    }

    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "baseline": self.baseline.as_ref().map(ProbeResult::to_json),
            "attacked": self.attacked.as_ref().map(ProbeResult::to_json),
            "p99_ratio": self.p99_ratio(),
            "figures": self.figures,
            "checks": self.checks.iter().map(Check::to_json).collect::<Vec<_>>(),
        })
    }

    pub fn p99_ratio(&self) -> Option<f64> {
        let (b, a) = (self.baseline.as_ref()?, self.attacked.as_ref()?);
        Some(ratio(a.p99_us as f64, b.p99_us as f64))
    }
}

/// What an attack hands back: its figures and its own checks.
#[derive(Debug)]
pub struct AttackOutcome {
    pub figures: Value,
    pub checks: Vec<Check>,
}

/// Runs `attack` against `gateway` between an unloaded baseline and the end of a probe that
/// connected before the attack began. The attack gets the moment the probe stops measuring
/// and must keep attacking until then; `ramp` is the probe's unrecorded head start (the
/// attack's build-up).
pub async fn with_probe<F, Fut>(
    name: &'static str,
    gateway: &Gateway,
    o: &AbuseOptions,
    ramp: Duration,
    attack: F,
) -> ScenarioReport
where
    F: FnOnce(Instant) -> Fut,
    Fut: Future<Output = Result<AttackOutcome, String>>,
{
    match probed(name, gateway, o, ramp, attack).await {
        Ok(report) => report,
        Err(e) => ScenarioReport::broken(name, e),
    }
}

async fn probed<F, Fut>(
    name: &'static str,
    gateway: &Gateway,
    o: &AbuseOptions,
    ramp: Duration,
    attack: F,
) -> Result<ScenarioReport, String>
where
    F: FnOnce(Instant) -> Fut,
    Fut: Future<Output = Result<AttackOutcome, String>>,
{
    let template = probe::template(gateway.data).await?;
    let spec = |warmup, measure| ProbeSpec {
        addr: gateway.data,
        connections: o.probe_connections,
        warmup,
        measure,
        timeout: Duration::from_secs(2),
    };
    let baseline = probe::measure(&spec(Duration::from_millis(500), o.baseline), template.clone()).await?;
    let running = probe::start(&spec(ramp, o.measure), template)?;
    // The probe's connections are up before the first attack byte.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let until = Instant::now() + ramp + o.measure;
    let outcome = attack(until).await;
    let attacked = running.finish().await?;
    let outcome = outcome?;
    let mut checks = latency_checks(name, &baseline, &attacked, o);
    checks.extend(outcome.checks);
    Ok(ScenarioReport {
        name,
        baseline: Some(baseline),
        attacked: Some(attacked),
        figures: outcome.figures,
        checks,
    })
}

/// The checks every attacked scenario shares: the probe was served throughout, and its p99
/// stayed within `max_p99_ratio` of the unloaded one (strict only with `--strict`).
fn latency_checks(
    name: &str,
    baseline: &ProbeResult,
    attacked: &ProbeResult,
    o: &AbuseOptions,
) -> Vec<Check> {
    let served = attacked.errors == 0 && attacked.ok > 0;
    let r = ratio(attacked.p99_us as f64, baseline.p99_us as f64);
    vec![
        Check::functional(
            format!("{name}.well_behaved_served"),
            served,
            format!("during the attack: {}", attacked.summary()),
        ),
        Check::target(
            format!("{name}.p99_ratio"),
            served && r <= o.max_p99_ratio,
            o.strict,
            format!(
                "p99 {} us unloaded -> {} us attacked = {r:.2}x (target <= {:.0}x); p50 {} -> {} us{}",
                baseline.p99_us,
                attacked.p99_us,
                o.max_p99_ratio,
                baseline.p50_us,
                attacked.p50_us,
                if served { "" } else { "; latencies of the served requests only: some were refused" },
            ),
        ),
    ]
}

/// `after - before` of a counter summed over `filter`; `None` when the gateway does not export it.
pub fn delta(before: &Metrics, after: &Metrics, name: &str, filter: &[(&str, &str)]) -> Option<f64> {
    Some(after.sum(name, filter)? - before.sum(name, filter).unwrap_or(0.0))
}

/// Both gateways answer `/v2/health/ready` before anything starts.
pub async fn preflight(o: &AbuseOptions) -> Result<(), String> {
    for (name, g) in [("limits", &o.limits), ("timeouts", &o.timeouts)] {
        if !g.process.alive() {
            return Err(format!("the {name} gateway (pid {}) is not running", g.process.pid));
        }
        let (status, body) =
            admin::call(g.data, http::Method::GET, "/v2/health/ready", bytes::Bytes::new()).await?;
        if status != 200 {
            return Err(format!(
                "the {name} gateway is not ready: {status} {}",
                String::from_utf8_lossy(&body)
            ));
        }
    }
    Ok(())
}

/// Every scenario, in order (the gRPC stream last: what it leaves behind is the gateway's
/// memory).
pub const SCENARIOS: [&str; 5] = ["idle", "slowloris", "flood", "rapid_reset", "grpc_stream"];

/// Runs the scenarios named in `only` (all when empty), in [`SCENARIOS`] order.
pub async fn run(o: &AbuseOptions, only: &[String]) -> Vec<ScenarioReport> {
    let mut reports = Vec::new();
    for name in SCENARIOS {
        if !only.is_empty() && !only.iter().any(|s| s == name) {
            continue;
        }
        eprintln!("abuse: scenario {name}");
        let report = match name {
            "idle" => idle::run(o).await,
            "slowloris" => slowloris::run(o).await,
            "flood" => flood::run(o).await,
            "rapid_reset" => rapid_reset::run(o).await,
            _ => stream::run(o).await,
        };
        for c in &report.checks {
            println!("{c}");
        }
        reports.push(report);
        // Let the gateway settle (closing sockets, freeing tasks) before the next baseline.
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    reports
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_argument() {
        let g: Gateway = "data=127.0.0.1:1,admin=127.0.0.1:2,grpc=127.0.0.1:3,pid=42".parse().unwrap();
        assert_eq!(g.data.port(), 1);
        assert_eq!(g.grpc.port(), 3);
        assert_eq!(g.process.pid, 42);
        assert!("data=127.0.0.1:1,pid=4".parse::<Gateway>().is_err());
        assert!("data".parse::<Gateway>().is_err());
    }
}
