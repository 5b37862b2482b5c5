//! What a replay measured: per worker a [`Tally`] (answers, errors, agreement per output,
//! latency, how far behind the recorded pace), merged into one [`Report`] printed as text or
//! JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use gateway::capture::ReadProblems;
use gateway::shadow::Comparison;
use hdrhistogram::Histogram;
use serde::Serialize;

use super::Plan;
use crate::stats::truncate;

/// Highest latency tracked exactly (larger values are clamped): one hour, in µs.
const MAX_US: u64 = 3_600_000_000;
/// Distinct error texts kept; beyond them counts go to `(other)`.
const MAX_ERRORS: usize = 32;

/// One worker's counts, or all of them merged.
#[derive(Debug, Clone)]
pub struct Tally {
    pub answered: u64,
    /// Answers whose every output agreed with the captured one.
    pub agreed: u64,
    /// Per output: (agreeing, compared).
    pub outputs: BTreeMap<String, (u64, u64)>,
    /// `status: text` → count (status 0: transport failure or timeout).
    pub errors: BTreeMap<String, u64>,
    /// Answers per `model_version` (header or body).
    pub versions: BTreeMap<String, u64>,
    pub latency_us: Histogram<u64>,
    /// The captured latencies of the same records, for comparison.
    pub captured_us: Histogram<u64>,
    /// The most a request was sent after its paced time.
    pub max_lag: Duration,
}

impl Tally {
    pub fn new() -> Result<Tally, String> {
        let h = || Histogram::new_with_bounds(1, MAX_US, 3).map_err(|e| e.to_string());
        Ok(Tally {
            answered: 0,
            agreed: 0,
            outputs: BTreeMap::new(),
            errors: BTreeMap::new(),
            versions: BTreeMap::new(),
            latency_us: h()?,
            captured_us: h()?,
            max_lag: Duration::ZERO,
        })
    }

    pub fn requests(&self) -> u64 {
        self.answered + self.errors.values().sum::<u64>()
    }

    pub fn lagged(&mut self, lag: Duration) {
        self.max_lag = self.max_lag.max(lag);
    }

    pub fn captured(&mut self, latency_us: u64) {
        self.captured_us.saturating_record(latency_us.max(1));
    }

    pub fn answered(&mut self, latency: Duration, version: Option<String>, comparisons: &[Comparison]) {
        self.latency_us.saturating_record(micros(latency));
        self.answered += 1;
        *self.versions.entry(version.unwrap_or_else(|| "(unknown)".into())).or_default() += 1;
        let mut all = true;
        for c in comparisons {
            let entry = self.outputs.entry(c.output.clone()).or_default();
            entry.0 += u64::from(c.matched);
            entry.1 += 1;
            all &= c.matched;
        }
        self.agreed += u64::from(all);
    }

    pub fn failed(&mut self, latency: Duration, status: u16, text: &str) {
        self.latency_us.saturating_record(micros(latency));
        let mut key = format!("{status}: {}", truncate(text));
        if self.errors.len() >= MAX_ERRORS && !self.errors.contains_key(&key) {
            key = "(other)".into();
        }
        *self.errors.entry(key).or_default() += 1;
    }

    pub fn merge(&mut self, other: &Tally) -> Result<(), String> {
        self.answered += other.answered;
        self.agreed += other.agreed;
        for (name, (a, n)) in &other.outputs {
            let e = self.outputs.entry(name.clone()).or_default();
            e.0 += a;
            e.1 += n;
        }
        for (k, n) in &other.errors {
            *self.errors.entry(k.clone()).or_default() += n;
        }
        for (k, n) in &other.versions {
            *self.versions.entry(k.clone()).or_default() += n;
        }
        self.latency_us.add(&other.latency_us).map_err(|e| e.to_string())?;
        self.captured_us.add(&other.captured_us).map_err(|e| e.to_string())?;
        self.max_lag = self.max_lag.max(other.max_lag);
        Ok(())
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

#[derive(Debug, Clone, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        Latency { p50: h.value_at_quantile(0.5), p99: h.value_at_quantile(0.99), max: h.max() }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct OutputAgreement {
    pub output: String,
    pub agreed: u64,
    pub compared: u64,
    pub percent: f64,
}

/// Everything a replay measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub source: String,
    pub files: usize,
    pub cut_files: u64,
    pub bad_lines: u64,
    pub unopened: Vec<String>,
    pub target: String,
    /// The pinned version, when one was.
    pub version: Option<u64>,
    pub pace: String,
    pub requests: u64,
    pub answered: u64,
    pub errors: u64,
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Answers that agreed on every output, in percent of the answers (0 with none).
    pub agreement_percent: f64,
    pub agreed: u64,
    pub outputs: Vec<OutputAgreement>,
    pub versions: BTreeMap<String, u64>,
    pub latency_us: Latency,
    pub captured_latency_us: Latency,
    pub elapsed_s: f64,
    /// First to last captured record.
    pub recorded_span_s: f64,
    pub max_lag_ms: f64,
}

impl Report {
    pub fn new(
        plan: &Plan,
        files: usize,
        read: ReadProblems,
        t: &Tally,
        elapsed: Duration,
        recorded: Duration,
    ) -> Report {
        let percent = |a: u64, n: u64| if n == 0 { 0.0 } else { 100.0 * a as f64 / n as f64 };
        Report {
            source: plan.source.display().to_string(),
            files,
            cut_files: read.cut_files,
            bad_lines: read.bad_lines,
            unopened: read.unopened,
            target: plan.target.clone(),
            version: plan.version,
            pace: plan.pace.to_string(),
            requests: t.requests(),
            answered: t.answered,
            errors: t.requests() - t.answered,
            errors_by_kind: t.errors.clone(),
            agreement_percent: percent(t.agreed, t.answered),
            agreed: t.agreed,
            outputs: t
                .outputs
                .iter()
                .map(|(output, &(agreed, compared))| OutputAgreement {
                    output: output.clone(),
                    agreed,
                    compared,
                    percent: percent(agreed, compared),
                })
                .collect(),
            versions: t.versions.clone(),
            latency_us: Latency::of(&t.latency_us),
            captured_latency_us: Latency::of(&t.captured_us),
            elapsed_s: elapsed.as_secs_f64(),
            recorded_span_s: recorded.as_secs_f64(),
            max_lag_ms: t.max_lag.as_secs_f64() * 1e3,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let against = self.version.map_or_else(|| "routed".to_string(), |v| format!("version {v}"));
        let _ = writeln!(
            out,
            "replay of {} ({} files) against {} ({against}), pace {}",
            self.source, self.files, self.target, self.pace
        );
        if self.cut_files + self.bad_lines > 0 || !self.unopened.is_empty() {
            let _ = writeln!(
                out,
                "  read: {} files ended early (still being written?), {} unreadable lines, {} unopened",
                self.cut_files,
                self.bad_lines,
                self.unopened.len()
            );
        }
        let _ = writeln!(
            out,
            "  {} requests in {:.2} s (recorded over {:.2} s; at most {:.1} ms behind the pace): {} answered, {} errors",
            self.requests, self.elapsed_s, self.recorded_span_s, self.max_lag_ms, self.answered, self.errors
        );
        let _ = writeln!(
            out,
            "agreement {:.2}% ({} of {} answers agree with the captured ones on every output)",
            self.agreement_percent, self.agreed, self.answered
        );
        for o in &self.outputs {
            let _ = writeln!(out, "  {:<24} {:>7.2}%  ({} / {})", o.output, o.percent, o.agreed, o.compared);
        }
        let versions: Vec<String> = self.versions.iter().map(|(v, n)| format!("{v}: {n}")).collect();
        let _ = writeln!(out, "answered by version  {}", versions.join(", "));
        let l = |l: &Latency| format!("p50 {} µs  p99 {} µs  max {} µs", l.p50, l.p99, l.max);
        let _ = writeln!(out, "latency (replay)     {}", l(&self.latency_us));
        let _ = writeln!(out, "latency (captured)   {}", l(&self.captured_latency_us));
        for (kind, n) in &self.errors_by_kind {
            let _ = writeln!(out, "error {kind}  × {n}");
        }
        out
    }
}
