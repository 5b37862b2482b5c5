//! Rollout analysis, pure: one window of a candidate's numbers → pass, fail or insufficient data.
//!
//! Gates are absolute values measured on the candidate. Fewer than `min_requests` candidate
//! requests: insufficient data (no gate is judged). Otherwise any gate over its limit fails; a
//! false-positive gate with fewer than `min_labelled_negatives` labelled negatives holds
//! (insufficient data) unless another gate already failed; else pass.
//!
//! - error rate: (server errors + timeouts) / requests; client errors are the client's fault.
//! - p99 latency: from the window's latency buckets (log-spaced, 10% wide).
//! - shadow disagreement: of the candidate's answers compared with the primary's answer on the
//!   same inputs (a mirrored copy run on the primary during the rollout), the fraction that
//!   disagree (argmax or tolerance, as shadow comparisons do).
//! - false-positive rate: FP / (FP + TN) over labels that arrived for candidate predictions.
//! - segment disparity: the candidate's spread of positive rates between segments minus the
//!   primary's (see `segments`); a segment short of `min_segment_requests` holds it.
//! - input drift: while the traffic's largest input feature PSI (primary's or candidate's, see
//!   `inputs`) is over `max_input_drift_psi`, a window that would pass holds instead: a verdict
//!   on shifted data is not a verdict on the model. It never fails a candidate.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::segments::{self, Disparity, SegmentCount};
use crate::config::RolloutConfig;

const LATENCY_BUCKETS: usize = 240;
const GROWTH: f64 = 1.1;

/// Log-spaced latency buckets: bucket i holds [1.1^i, 1.1^(i+1)) microseconds.
#[derive(Debug, Clone)]
pub struct Latencies {
    counts: Vec<u64>,
}

impl Default for Latencies {
    fn default() -> Latencies {
        Latencies { counts: vec![0; LATENCY_BUCKETS] }
    }
}

impl Latencies {
    /// The non-empty buckets: (index, count).
    pub fn buckets(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        self.counts.iter().copied().enumerate().filter(|(_, c)| *c > 0)
    }

    /// Adds `n` to bucket `i` (ignored beyond the last).
    pub fn add(&mut self, i: usize, n: u64) {
        if let Some(c) = self.counts.get_mut(i) {
            *c += n;
        }
    }

    pub fn record(&mut self, d: Duration) {
        let us = d.as_secs_f64() * 1e6;
        let i = if us < 1.0 { 0 } else { (us.ln() / GROWTH.ln()).floor() as usize };
        if let Some(c) = self.counts.get_mut(i.min(LATENCY_BUCKETS - 1)) {
            *c += 1;
        }
    }

    /// The upper bound (ms) of the bucket holding the 99th percentile.
    pub fn p99_ms(&self) -> Option<f64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (total as f64 * 0.99).ceil() as u64;
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(GROWTH.powi(i as i32 + 1) / 1000.0);
            }
        }
        None
    }
}

/// A candidate's numbers since its current step began (or since the last verdict).
#[derive(Debug, Clone, Default)]
pub struct WindowStats {
    pub requests: u64,
    pub errors: u64,
    pub latencies: Latencies,
    pub compared: u64,
    pub disagreed: u64,
    pub fp: u64,
    pub tn: u64,
    /// Per segment (fairness gate): the primary's and the candidate's rows and positive rows.
    pub segments: BTreeMap<String, SegmentCount>,
    /// The traffic's input drift when judged (this replica's measurement; never counted).
    pub input_drift: Option<super::inputs::Drift>,
}

impl WindowStats {
    pub fn is_empty(&self) -> bool {
        self.requests == 0 && self.compared == 0 && self.fp == 0 && self.tn == 0 && self.segments.is_empty()
    }

    /// Adds another window's counts to this one.
    pub fn merge(&mut self, other: &WindowStats) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.compared += other.compared;
        self.disagreed += other.disagreed;
        self.fp += other.fp;
        self.tn += other.tn;
        for (i, n) in other.latencies.buckets() {
            self.latencies.add(i, n);
        }
        for (name, c) in &other.segments {
            self.segments.entry(name.clone()).or_default().add(c);
        }
    }

    /// The counts as named counters (latency bucket i as `l{i}`), empty ones left out.
    pub fn to_counts(&self) -> Vec<(String, i64)> {
        let mut counts: Vec<(String, i64)> = [
            ("requests", self.requests),
            ("errors", self.errors),
            ("compared", self.compared),
            ("disagreed", self.disagreed),
            ("fp", self.fp),
            ("tn", self.tn),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| (name.to_string(), n as i64))
        .collect();
        counts.extend(self.latencies.buckets().map(|(i, n)| (format!("l{i}"), n as i64)));
        for (name, c) in &self.segments {
            let fields = c.fields().into_iter().filter(|(_, n)| *n > 0);
            counts.extend(fields.map(|(f, n)| (format!("{}{name}:{f}", segments::FIELD_PREFIX), n as i64)));
        }
        counts
    }

    /// The inverse of `to_counts` (unknown names and negative counts ignored).
    pub fn from_counts<'a>(counts: impl IntoIterator<Item = (&'a String, &'a i64)>) -> WindowStats {
        let mut w = WindowStats::default();
        for (name, &n) in counts {
            let Ok(n) = u64::try_from(n) else { continue };
            match name.as_str() {
                "requests" => w.requests = n,
                "errors" => w.errors = n,
                "compared" => w.compared = n,
                "disagreed" => w.disagreed = n,
                "fp" => w.fp = n,
                "tn" => w.tn = n,
                other => {
                    if let Some((segment, field)) =
                        other.strip_prefix(segments::FIELD_PREFIX).and_then(|s| s.rsplit_once(':'))
                    {
                        let mut c = SegmentCount::default();
                        if c.set(field, n) {
                            w.segments.entry(segment.to_string()).or_default().add(&c);
                        }
                    } else if let Some(i) = other.strip_prefix('l').and_then(|i| i.parse().ok()) {
                        w.latencies.add(i, n);
                    }
                }
            }
        }
        w
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    InsufficientData,
}

/// A verdict and the numbers behind it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Analysis {
    pub verdict: Verdict,
    pub requests: u64,
    pub error_rate: Option<f64>,
    pub p99_latency_ms: Option<f64>,
    pub compared: u64,
    pub shadow_disagreement: Option<f64>,
    pub labelled_negatives: u64,
    pub false_positive_rate: Option<f64>,
    /// The fairness gate's rates per segment and spreads, once every segment has enough data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segments: Option<Disparity>,
    /// The largest input feature PSI of the traffic (`max_input_drift_psi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_drift_psi: Option<f64>,
    /// One line per gate that failed or held, or that passed when everything passed.
    pub reasons: Vec<String>,
}

/// Judges a window; `min_segment_requests` (the model's `monitor.min_segment_requests`) is what
/// the fairness gate needs per segment and side.
pub fn judge(w: &WindowStats, cfg: &RolloutConfig, min_segment_requests: u64) -> Analysis {
    let ratio = |num: u64, den: u64| (den > 0).then(|| num as f64 / den as f64);
    let mut a = Analysis {
        verdict: Verdict::Pass,
        requests: w.requests,
        error_rate: ratio(w.errors, w.requests),
        p99_latency_ms: w.latencies.p99_ms(),
        compared: w.compared,
        shadow_disagreement: ratio(w.disagreed, w.compared),
        labelled_negatives: w.fp + w.tn,
        false_positive_rate: ratio(w.fp, w.fp + w.tn),
        segments: None,
        input_drift_psi: w.input_drift.as_ref().and_then(|d| d.max()),
        reasons: Vec::new(),
    };
    if w.requests < cfg.min_requests {
        a.verdict = Verdict::InsufficientData;
        a.reasons
            .push(format!("{} candidate requests, fewer than min_requests {}", w.requests, cfg.min_requests));
        return a;
    }
    let mut failed = Vec::new();
    let mut held = Vec::new();
    let mut check = |name: &str, value: Option<f64>, limit: Option<f64>, unit: &str| {
        if let (Some(v), Some(l)) = (value, limit)
            && v > l
        {
            failed.push(format!("{name} {v:.4}{unit} over the limit {l}{unit}"));
        }
    };
    check("error rate", a.error_rate, cfg.max_error_rate, "");
    check("p99 latency", a.p99_latency_ms, cfg.max_p99_latency_ms, " ms");
    check("shadow disagreement", a.shadow_disagreement, cfg.max_shadow_disagreement, "");
    if cfg.max_shadow_disagreement.is_some() && w.compared == 0 {
        held.push("no candidate answer was compared with the primary yet".to_string());
    }
    if let Some(limit) = cfg.max_false_positive_rate {
        if a.labelled_negatives < cfg.min_labelled_negatives {
            held.push(format!(
                "{} labelled negatives, fewer than the {} the false-positive gate needs",
                a.labelled_negatives, cfg.min_labelled_negatives
            ));
        } else {
            check("false-positive rate", a.false_positive_rate, Some(limit), "");
        }
    }
    if let Some(limit) = cfg.max_segment_disparity {
        match segments::disparity(&w.segments, min_segment_requests) {
            Ok(d) => {
                if d.excess() > limit {
                    failed.push(d.describe(limit));
                }
                a.segments = Some(d);
            }
            Err(why) => held.push(why),
        }
    }
    if let (Some(limit), Some(drift)) = (cfg.max_input_drift_psi, &w.input_drift) {
        held.extend(drift.hold(limit));
    }
    if !failed.is_empty() {
        a.verdict = Verdict::Fail;
        a.reasons = failed;
    } else if !held.is_empty() {
        a.verdict = Verdict::InsufficientData;
        a.reasons = held;
    } else {
        a.reasons.push("every gate within its limit".to_string());
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RolloutConfig {
        RolloutConfig {
            steps: vec![5.0, 25.0, 50.0, 100.0],
            step_interval: Duration::from_secs(60),
            min_requests: 100,
            max_error_rate: Some(0.01),
            max_p99_latency_ms: Some(50.0),
            max_shadow_disagreement: Some(0.05),
            max_false_positive_rate: Some(0.10),
            min_labelled_negatives: 20,
            max_input_drift_psi: None,
            max_segment_disparity: None,
        }
    }

    fn healthy() -> WindowStats {
        let mut w =
            WindowStats { requests: 200, compared: 150, disagreed: 3, fp: 2, tn: 40, ..Default::default() };
        for _ in 0..200 {
            w.latencies.record(Duration::from_millis(2));
        }
        w
    }

    #[test]
    fn a_healthy_window_passes() {
        let a = judge(&healthy(), &cfg(), 30);
        assert_eq!(a.verdict, Verdict::Pass, "{a:?}");
    }

    #[test]
    fn too_few_requests_is_insufficient_data_whatever_else() {
        let w = WindowStats { requests: 99, errors: 99, ..healthy() };
        assert_eq!(judge(&w, &cfg(), 30).verdict, Verdict::InsufficientData);
    }

    #[test]
    fn each_gate_failing_alone_fails() {
        let cases: Vec<(&str, WindowStats)> = vec![
            ("error rate", WindowStats { errors: 3, ..healthy() }),
            ("shadow disagreement", WindowStats { disagreed: 20, ..healthy() }),
            ("false-positive rate", WindowStats { fp: 10, tn: 30, ..healthy() }),
            ("p99 latency", {
                let mut w = healthy();
                for _ in 0..10 {
                    w.latencies.record(Duration::from_millis(80));
                }
                w
            }),
        ];
        for (gate, w) in cases {
            let a = judge(&w, &cfg(), 30);
            assert_eq!(a.verdict, Verdict::Fail, "{gate}: {a:?}");
            assert_eq!(a.reasons.len(), 1, "{gate}: {a:?}");
            assert!(a.reasons[0].starts_with(gate), "{gate}: {a:?}");
        }
    }

    #[test]
    fn few_labelled_negatives_hold_the_false_positive_gate() {
        let w = WindowStats { fp: 5, tn: 10, ..healthy() };
        let a = judge(&w, &cfg(), 30);
        assert_eq!(a.verdict, Verdict::InsufficientData, "{a:?}");
        // ...but a failing gate still fails.
        let w = WindowStats { fp: 5, tn: 10, errors: 50, ..healthy() };
        assert_eq!(judge(&w, &cfg(), 30).verdict, Verdict::Fail);
    }

    #[test]
    fn a_window_survives_the_trip_through_shared_counters() {
        let w = WindowStats { errors: 7, ..healthy() };
        let counts: std::collections::HashMap<String, i64> = w.to_counts().into_iter().collect();
        let back = WindowStats::from_counts(&counts);
        let (a, b) = (judge(&w, &cfg(), 30), judge(&back, &cfg(), 30));
        assert_eq!(
            (back.requests, back.errors, back.compared, back.disagreed, back.fp, back.tn),
            (200, 7, 150, 3, 2, 40)
        );
        assert_eq!(a.p99_latency_ms, b.p99_latency_ms);
        let mut twice = back.clone();
        twice.merge(&back);
        assert_eq!(twice.requests, 400);
        assert_eq!(twice.latencies.p99_ms(), w.latencies.p99_ms());
    }

    #[test]
    fn a_candidate_approving_one_segment_far_less_fails_naming_the_segments() {
        let c = RolloutConfig { max_segment_disparity: Some(0.1), ..cfg() };
        let mut w = healthy();
        segments::record(&mut w.segments, "a", false, 100, 80);
        segments::record(&mut w.segments, "b", false, 100, 78);
        segments::record(&mut w.segments, "a", true, 50, 40);
        segments::record(&mut w.segments, "b", true, 50, 10);
        // The same counts after the fleet's shared counters.
        let counts: std::collections::HashMap<String, i64> = w.to_counts().into_iter().collect();
        let back = WindowStats::from_counts(&counts);
        assert_eq!(back.segments, w.segments);
        let a = judge(&back, &c, 30);
        assert_eq!(a.verdict, Verdict::Fail, "{a:?}");
        assert!(a.reasons[0].contains("a 0.8000") && a.reasons[0].contains("b 0.2000"), "{a:?}");
        // Too few candidate requests in a segment: the gate holds.
        assert_eq!(judge(&back, &c, 51).verdict, Verdict::InsufficientData);
    }

    #[test]
    fn drifted_traffic_holds_a_passing_window_but_never_fails_it() {
        let c = RolloutConfig { max_input_drift_psi: Some(0.25), ..cfg() };
        let drift = super::super::inputs::Drift {
            features: vec![("x".into(), 3, 0.9), ("x".into(), 0, 0.3), ("x".into(), 1, 0.01)],
        };
        let w = WindowStats { input_drift: Some(drift.clone()), ..healthy() };
        let a = judge(&w, &c, 30);
        assert_eq!(a.verdict, Verdict::InsufficientData, "{a:?}");
        assert_eq!(a.input_drift_psi, Some(0.9));
        assert!(a.reasons[0].contains("x[3] 0.9000, x[0] 0.3000"), "{a:?}");
        assert!(!a.reasons[0].contains("x[1]"), "{a:?}");
        // Under the limit, or without the gate: passes, the figure still shown.
        let calm = RolloutConfig { max_input_drift_psi: Some(1.0), ..cfg() };
        assert_eq!(judge(&w, &calm, 30).verdict, Verdict::Pass);
        assert_eq!(judge(&w, &cfg(), 30).input_drift_psi, Some(0.9));
        // A failing gate still fails: drift holds, it does not excuse.
        let w = WindowStats { errors: 50, input_drift: Some(drift), ..healthy() };
        assert_eq!(judge(&w, &c, 30).verdict, Verdict::Fail);
    }

    #[test]
    fn p99_is_within_ten_percent() {
        let mut l = Latencies::default();
        for i in 1..=1000u64 {
            l.record(Duration::from_micros(i * 10));
        }
        let p99 = l.p99_ms().unwrap();
        assert!((9.9..=11.0).contains(&p99), "{p99}");
    }
}
