//! The final report: built from the merged [`Stats`] and the run's facts, printed as text for
//! people or as JSON (`--json`) for scripts.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::stats::Stats;

/// What was run, for the report's header.
#[derive(Debug, Clone, Serialize)]
pub struct Setup {
    pub url: String,
    pub model: String,
    pub mode: &'static str,
    pub connections: usize,
    pub batch_rows: usize,
    pub encoding: &'static str,
    pub protocol: &'static str,
}

/// Open-loop facts.
#[derive(Debug, Clone, Serialize)]
pub struct OpenLoop {
    pub target_rps: f64,
    pub achieved_rps: f64,
    pub max_backlog: u64,
    pub dropped: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

impl Latency {
    fn of(h: &hdrhistogram::Histogram<u64>) -> Latency {
        Latency {
            p50: h.value_at_quantile(0.5),
            p90: h.value_at_quantile(0.9),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub status: u16,
    pub error: String,
    pub count: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub setup: Setup,
    pub elapsed_s: f64,
    pub requests: u64,
    pub ok: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub rows_per_s: f64,
    pub latency_us: Latency,
    /// Only when some requests failed: latency of the successful ones and of the failed ones.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ok_us: Option<Latency>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_errors_us: Option<Latency>,
    pub errors_by_kind: Vec<ErrorCount>,
    pub versions: BTreeMap<String, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open_loop: Option<OpenLoop>,
}

impl Report {
    /// Builds the report; `open_loop` is `(target rate, max backlog, dropped)`.
    pub fn new(setup: Setup, stats: &Stats, elapsed: Duration, open_loop: Option<(f64, u64, u64)>) -> Self {
        let secs = elapsed.as_secs_f64().max(1e-9);
        let requests = stats.requests();
        let throughput = requests as f64 / secs;
        let latency_us = Latency::of(&stats.latency_us);
        let split = requests > stats.ok;
        let latency_ok_us = split.then(|| Latency::of(&stats.ok_latency_us));
        let latency_errors_us = split.then(|| Latency::of(&stats.error_latency_us));
        let mut errors_by_kind: Vec<ErrorCount> = stats
            .errors
            .iter()
            .map(|((status, error), count)| ErrorCount {
                status: *status,
                error: error.clone(),
                count: *count,
            })
            .collect();
        errors_by_kind.sort_by(|a, b| b.count.cmp(&a.count).then(a.status.cmp(&b.status)));
        let versions = stats.versions.iter().map(|(v, n)| (v.clone(), *n)).collect();
        Self {
            rows_per_s: throughput * setup.batch_rows as f64,
            setup,
            elapsed_s: secs,
            requests,
            ok: stats.ok,
            errors: requests - stats.ok,
            throughput_rps: throughput,
            latency_us,
            latency_ok_us,
            latency_errors_us,
            errors_by_kind,
            versions,
            open_loop: open_loop.map(|(target_rps, max_backlog, dropped)| OpenLoop {
                target_rps,
                achieved_rps: throughput,
                max_backlog,
                dropped,
            }),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let s = &self.setup;
        let _ = writeln!(
            out,
            "{} loop, {} connections, {} {}, batch {}, {} -> {}",
            s.mode, s.connections, s.protocol, s.encoding, s.batch_rows, s.url, s.model
        );
        let _ = writeln!(
            out,
            "  requests    {} in {:.2} s (ok {}, errors {})",
            self.requests, self.elapsed_s, self.ok, self.errors
        );
        let _ =
            writeln!(out, "  throughput  {:.1} req/s, {:.1} rows/s", self.throughput_rps, self.rows_per_s);
        let l = &self.latency_us;
        let _ = writeln!(
            out,
            "  latency us  p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.1}",
            l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
        );
        for (label, split) in [("ok", &self.latency_ok_us), ("errors", &self.latency_errors_us)] {
            if let Some(l) = split {
                let _ = writeln!(
                    out,
                    "    {label:<9} p50 {}  p90 {}  p99 {}  p99.9 {}  max {}  mean {:.1}",
                    l.p50, l.p90, l.p99, l.p99_9, l.max, l.mean
                );
            }
        }
        self.write_open_loop(&mut out);
        self.write_versions(&mut out);
        for e in &self.errors_by_kind {
            let _ = writeln!(out, "  error       {} x {}: {}", e.count, status_text(e.status), e.error);
        }
        out
    }

    fn write_open_loop(&self, out: &mut String) {
        if let Some(o) = &self.open_loop {
            let _ = writeln!(
                out,
                "  open loop   target {:.1} req/s, achieved {:.1} req/s, max backlog {}, dropped {}",
                o.target_rps, o.achieved_rps, o.max_backlog, o.dropped
            );
        }
    }

    fn write_versions(&self, out: &mut String) {
        if self.versions.is_empty() {
            return;
        }
        let parts: Vec<String> = self
            .versions
            .iter()
            .map(|(v, n)| format!("{v}: {n} ({:.2}%)", 100.0 * *n as f64 / self.ok.max(1) as f64))
            .collect();
        let _ = writeln!(out, "  versions    {}", parts.join(", "));
    }
}

fn status_text(status: u16) -> String {
    if status == 0 { "transport".into() } else { status.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Outcome;

    fn setup() -> Setup {
        Setup {
            url: "http://x".into(),
            model: "m".into(),
            mode: "closed",
            connections: 2,
            batch_rows: 4,
            encoding: "JSON",
            protocol: "HTTP/1.1",
        }
    }

    #[test]
    fn numbers_and_both_formats() {
        let mut s = Stats::new().unwrap();
        for us in 1..=1000 {
            s.record(Duration::from_micros(us), Outcome::Ok { version: Some("1".into()) });
        }
        s.record(Duration::from_micros(50), Outcome::Failed { status: 503, error: "full".into() });
        let r = Report::new(setup(), &s, Duration::from_secs(2), Some((600.0, 3, 0)));
        assert_eq!(r.requests, 1001);
        assert_eq!(r.errors, 1);
        assert!((r.throughput_rps - 500.5).abs() < 1e-9);
        assert!((r.rows_per_s - 2002.0).abs() < 1e-9);
        assert!((499..=501).contains(&r.latency_us.p50));
        assert!(r.latency_us.p99 >= 989 && r.latency_us.max >= 1000);
        let text = r.to_text();
        assert!(text.contains("1 x 503: full"), "{text}");
        assert!(text.contains("1: 1000 (100.00%)"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert_eq!(json["open_loop"]["target_rps"], 600.0);
        assert_eq!(json["errors_by_kind"][0]["status"], 503);
        assert_eq!(json["versions"]["1"], 1000);
        // Some failed: the latency is also given split by outcome.
        assert_eq!(json["latency_errors_us"]["max"], 50);
        assert!((499..=501).contains(&r.latency_ok_us.as_ref().unwrap().p50));
    }

    #[test]
    fn no_split_latency_when_nothing_failed() {
        let mut s = Stats::new().unwrap();
        s.record(Duration::from_micros(10), Outcome::Ok { version: None });
        let r = Report::new(setup(), &s, Duration::from_secs(1), None);
        let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
        assert!(json.get("latency_ok_us").is_none() && json.get("latency_errors_us").is_none());
    }
}
