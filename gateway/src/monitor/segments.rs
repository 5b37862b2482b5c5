//! Approval rates by segment, and the fairness gate built on them.
//!
//! A request's segment comes from the header named by `monitor.segment_header` and must be one
//! of `monitor.segments`; any other value, or none, is `other`. Label values are therefore
//! bounded by the config and never copied from a request. Resolving a segment compares bytes
//! with the configured names: nothing is allocated per request.
//!
//! During a rollout with `max_segment_disparity`, the primary's and the candidate's rows and
//! positive-class rows per segment are counted in the candidate's window (one window, so both
//! sides cover the same period and travel through the fleet together). The gate compares the
//! spread (highest minus lowest positive rate between segments) of the candidate with the
//! primary's; `other` is not a segment anyone named, so it is counted but never judged.

use std::collections::{BTreeMap, HashMap};

use metrics::Counter;
use serde::{Deserialize, Serialize};

use super::{Monitor, Row};
use crate::config::MonitorConfig;
use crate::registry::ServingSnapshot;
use crate::telemetry::{self, Role};

/// The label of requests whose segment is missing or not configured.
pub const OTHER: &str = "other";

/// A request's segment: an index into `monitor.segments`; `segments.len()` stands for `other`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Segment(pub usize);

impl Segment {
    /// The segment's label: its configured name, else `other`.
    pub fn name(self, cfg: &MonitorConfig) -> &str {
        cfg.segments.get(self.0).map_or(OTHER, String::as_str)
    }
}

/// The segment `header` names, when the model is configured with segments (`None` otherwise).
pub fn segment_of<'h>(cfg: &MonitorConfig, header: impl Fn(&str) -> Option<&'h [u8]>) -> Option<Segment> {
    let name = cfg.segment_header.as_deref().filter(|_| !cfg.segments.is_empty())?;
    let value = header(name).map(<[u8]>::trim_ascii);
    let index = value.and_then(|v| cfg.segments.iter().position(|s| s.as_bytes() == v));
    Some(Segment(index.unwrap_or(cfg.segments.len())))
}

/// A version's `gateway_segment_predictions_total` handles, made on first use of a (segment,
/// class) pair and dropped when the configured segments change (an index then names another
/// segment).
#[derive(Default)]
pub(super) struct SegmentCounters {
    names: Vec<String>,
    counters: HashMap<(usize, u64), Counter>,
}

impl SegmentCounters {
    /// Forgets the handles when the configured segments changed (call once per answer).
    pub(super) fn follow(&mut self, cfg: &MonitorConfig) {
        if self.names != cfg.segments {
            self.names.clone_from(&cfg.segments);
            self.counters.clear();
        }
    }

    pub(super) fn count(
        &mut self,
        model: &str,
        version: u64,
        segment: Segment,
        class: u64,
        cfg: &MonitorConfig,
    ) {
        self.counters
            .entry((segment.0, class))
            .or_insert_with(|| {
                let class = super::predictions::class_label(class, cfg);
                telemetry::segment_predictions(model, version, segment.name(cfg), &class)
            })
            .increment(1);
    }
}

impl Monitor {
    /// Counts `rows` under `segment`: in `gateway_segment_predictions_total` for any role that
    /// reaches here (not pinned calls), and, during a rollout with a fairness gate, in the
    /// candidate's window for the primary's and the candidate's answers.
    pub(super) fn observe_segment(
        &self,
        snapshot: &ServingSnapshot,
        model: &str,
        version: u64,
        role: Role,
        segment: Segment,
        rows: &[Row],
    ) {
        let Some(m) = snapshot.config.models.get(model) else { return };
        let Some(cfg) = m.monitor.as_ref() else { return };
        let watch = self.watch(model, version);
        if let Ok(mut counters) = watch.segments.lock() {
            counters.follow(cfg);
            for class in rows.iter().filter_map(|r| r.class) {
                counters.count(model, version, segment, class, cfg);
            }
        }
        let gated = m.rollout.as_ref().is_some_and(|r| r.max_segment_disparity.is_some());
        let Some(candidate) = m.routing.candidates.first().map(|c| c.version).filter(|_| gated) else {
            return;
        };
        let is_candidate = match role {
            Role::Candidate if version == candidate => true,
            Role::Primary => false,
            _ => return,
        };
        let positive = rows.iter().filter(|r| r.class == Some(cfg.positive_class)).count() as u64;
        let window = if is_candidate { watch } else { self.watch(model, candidate) };
        if let Ok(mut w) = window.window.lock() {
            record(&mut w.segments, segment.name(cfg), is_candidate, rows.len() as u64, positive);
        }
    }
}

/// One segment's counts in a rollout window: rows answered and positive-class rows, for the
/// primary and for the candidate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SegmentCount {
    pub primary: u64,
    pub primary_positive: u64,
    pub candidate: u64,
    pub candidate_positive: u64,
}

impl SegmentCount {
    pub fn add(&mut self, other: &SegmentCount) {
        self.primary += other.primary;
        self.primary_positive += other.primary_positive;
        self.candidate += other.candidate;
        self.candidate_positive += other.candidate_positive;
    }

    /// The counts as `(field suffix, count)`, for the fleet's shared counters.
    pub fn fields(&self) -> [(&'static str, u64); 4] {
        [
            ("pn", self.primary),
            ("pp", self.primary_positive),
            ("cn", self.candidate),
            ("cp", self.candidate_positive),
        ]
    }

    /// Sets the count a `fields` suffix names; false for an unknown suffix.
    pub fn set(&mut self, field: &str, n: u64) -> bool {
        match field {
            "pn" => self.primary = n,
            "pp" => self.primary_positive = n,
            "cn" => self.candidate = n,
            "cp" => self.candidate_positive = n,
            _ => return false,
        }
        true
    }
}

/// The field prefix of segment counts among a window's shared counters (`seg:{name}:{field}`;
/// segment names hold no `:`).
pub const FIELD_PREFIX: &str = "seg:";

/// Adds `rows` answered rows, `positive` of them positive, to `segment`'s counts.
pub fn record(
    window: &mut BTreeMap<String, SegmentCount>,
    segment: &str,
    candidate: bool,
    rows: u64,
    positive: u64,
) {
    let count = match window.get_mut(segment) {
        Some(c) => c,
        None => window.entry(segment.to_string()).or_default(),
    };
    if candidate {
        count.candidate += rows;
        count.candidate_positive += positive;
    } else {
        count.primary += rows;
        count.primary_positive += positive;
    }
}

/// One segment's positive rates, as a verdict shows them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    pub primary: f64,
    pub candidate: f64,
    pub primary_requests: u64,
    pub candidate_requests: u64,
}

/// The fairness gate's numbers: per segment judged, its rates; and the two spreads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Disparity {
    pub primary_spread: f64,
    pub candidate_spread: f64,
    pub rates: BTreeMap<String, Rates>,
}

impl Disparity {
    /// How much more the candidate's spread is than the primary's (the gated number).
    pub fn excess(&self) -> f64 {
        self.candidate_spread - self.primary_spread
    }

    /// Names the segments at each end of the candidate's spread, with their rates.
    pub fn describe(&self, limit: f64) -> String {
        let by_candidate =
            |a: &&(&String, &Rates), b: &&(&String, &Rates)| a.1.candidate.total_cmp(&b.1.candidate);
        let all: Vec<(&String, &Rates)> = self.rates.iter().collect();
        let (Some(low), Some(high)) = (all.iter().min_by(by_candidate), all.iter().max_by(by_candidate))
        else {
            return "segment disparity: no segment".to_string();
        };
        let shown =
            |(name, r): &(&String, &Rates)| format!("{name} {:.4} (primary {:.4})", r.candidate, r.primary);
        format!(
            "segment disparity {:.4} over the limit {limit}: the candidate's positive rates spread {:.4} \
             between segments, the primary's {:.4}; candidate {} vs {}",
            self.excess(),
            self.candidate_spread,
            self.primary_spread,
            shown(high),
            shown(low),
        )
    }
}

/// The fairness numbers of a window: every configured segment the window saw needs `min`
/// requests on both sides, and at least two segments are needed for a spread; otherwise the
/// reason the gate holds.
pub fn disparity(window: &BTreeMap<String, SegmentCount>, min: u64) -> Result<Disparity, String> {
    let mut rates = BTreeMap::new();
    let mut short = Vec::new();
    for (name, c) in window.iter().filter(|(name, _)| name.as_str() != OTHER) {
        if c.primary < min || c.candidate < min {
            short.push(format!("{name} ({} primary, {} candidate)", c.primary, c.candidate));
            continue;
        }
        let rate = |positive: u64, n: u64| positive as f64 / n as f64;
        let r = Rates {
            primary: rate(c.primary_positive, c.primary),
            candidate: rate(c.candidate_positive, c.candidate),
            primary_requests: c.primary,
            candidate_requests: c.candidate,
        };
        rates.insert(name.clone(), r);
    }
    if !short.is_empty() {
        return Err(format!(
            "segments with fewer than min_segment_requests {min} requests: {}",
            short.join(", ")
        ));
    }
    if rates.len() < 2 {
        return Err(format!("{} segment(s) seen in the window; a disparity needs two", rates.len()));
    }
    let spread = |f: fn(&Rates) -> f64| {
        let values = rates.values().map(f);
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        hi - lo
    };
    Ok(Disparity { primary_spread: spread(|r| r.primary), candidate_spread: spread(|r| r.candidate), rates })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> MonitorConfig {
        MonitorConfig {
            output: "y".into(),
            baseline: None,
            range: (0.0, 1.0),
            threshold: 0.5,
            score: crate::config::ScoreOf::Top,
            positive_class: 1,
            max_classes: 10,
            feedback_ttl: std::time::Duration::from_secs(60),
            feedback_capacity: 10,
            input_baseline: None,
            max_features: 64,
            segment_header: Some("x-segment".into()),
            segments: vec!["a".into(), "b".into()],
            min_segment_requests: 30,
        }
    }

    fn header<'h>(value: Option<&'h str>) -> impl Fn(&str) -> Option<&'h [u8]> {
        move |name| (name == "x-segment").then_some(value?.as_bytes())
    }

    #[test]
    fn configured_values_name_their_segment_and_anything_else_is_other() {
        let c = cfg();
        assert_eq!(segment_of(&c, header(Some("b"))).map(|s| s.name(&c)), Some("b"));
        assert_eq!(segment_of(&c, header(Some("zz"))).map(|s| s.name(&c)), Some(OTHER));
        assert_eq!(segment_of(&c, header(None)).map(|s| s.name(&c)), Some(OTHER));
        let none = MonitorConfig { segment_header: None, segments: Vec::new(), ..cfg() };
        assert_eq!(segment_of(&none, header(Some("a"))), None);
    }

    fn window(rates: &[(&str, u64, u64, u64, u64)]) -> BTreeMap<String, SegmentCount> {
        rates
            .iter()
            .map(|&(name, pn, pp, cn, cp)| {
                let c =
                    SegmentCount { primary: pn, primary_positive: pp, candidate: cn, candidate_positive: cp };
                (name.to_string(), c)
            })
            .collect()
    }

    #[test]
    fn the_spreads_are_highest_minus_lowest_rate() {
        let d = disparity(&window(&[("a", 100, 80, 50, 40), ("b", 100, 70, 50, 10)]), 30).unwrap();
        assert!((d.primary_spread - 0.1).abs() < 1e-9, "{d:?}");
        assert!((d.candidate_spread - 0.6).abs() < 1e-9, "{d:?}");
        let said = d.describe(0.1);
        assert!(said.contains("a 0.8000") && said.contains("b 0.2000"), "{said}");
    }

    #[test]
    fn a_segment_short_of_requests_holds_and_other_is_not_judged() {
        let short = disparity(&window(&[("a", 100, 80, 50, 40), ("b", 100, 70, 29, 10)]), 30);
        assert!(short.unwrap_err().contains("b (100 primary, 29 candidate)"));
        let only_other = disparity(&window(&[("a", 100, 80, 50, 40), (OTHER, 1, 0, 1, 1)]), 30);
        assert!(only_other.unwrap_err().contains("needs two"));
    }
}
