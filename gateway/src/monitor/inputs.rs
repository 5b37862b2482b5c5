//! Input drift: the population stability index (PSI) of each numeric input feature of a version's
//! recent traffic against the training distribution of that feature.
//!
//! A feature is one position of the last dimension of a numeric input (`[batch, 12]` has 12;
//! `[batch]` has one), counted in input order up to `monitor.max_features`, which bounds the
//! `feature` label. Every other dimension is rows.
//!
//! The baseline is `monitor.input_baseline` when given (JSON, keyed by input name:
//! `{"inputs": {"features": {"edges": [[e0, .., eN] per feature], "proportions": [[p0, .., pN-1]
//! per feature]}}}`; the end bins are open-ended, so a value below `e0` counts in the first bin),
//! else the model's first 1,000 sampled primary rows, binned at their deciles. Either is read or
//! captured once per process (a reload keeps it, as it keeps the windows). A version's window is
//! its last 1,000 sampled rows; its PSI is published once the window holds 100.
//!
//! Cost on the request path: one random draw per answer, and for one answer in `SAMPLE_ONE_IN`
//! a `try_send` of the `Arc`'d inputs to a bounded queue (full: the sample is skipped and
//! counted). Binning, windows and PSI are the worker thread's.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender};
use metrics::Gauge;

use super::drift::psi;
use crate::registry::ServingSnapshot;
use crate::telemetry::{self, Role};
use crate::tensor::Tensor;

/// One answered request in this many is sampled for input drift.
pub const SAMPLE_ONE_IN: u32 = 8;
/// Samples waiting for the worker; beyond it they are skipped (and counted).
pub const QUEUE: usize = 256;
pub const BASELINE_ROWS: usize = 1000;
pub const WINDOW_ROWS: usize = 1000;
pub const MIN_WINDOW_ROWS: usize = 100;
/// Bins of a baseline captured from traffic (deciles).
pub const CAPTURED_BINS: usize = 10;
/// The most bins a baseline file may give a feature (a window keeps bins as bytes).
pub const MAX_BINS: usize = 100;

/// A sampled request, as the worker gets it.
pub struct Sample {
    pub model: String,
    pub version: u64,
    /// The primary's rows are the baseline while it is being captured.
    pub primary: bool,
    pub baseline_file: Option<PathBuf>,
    pub max_features: usize,
    pub inputs: Arc<Vec<Tensor>>,
}

/// One feature's reference: bin edges (N+1, end bins open-ended) and N proportions.
#[derive(Debug, Clone, PartialEq)]
pub struct Feature {
    pub edges: Vec<f64>,
    pub proportions: Vec<f64>,
}

impl Feature {
    pub fn bins(&self) -> usize {
        self.proportions.len()
    }

    /// The bin of `v`; `None` for NaN.
    pub fn bin(&self, v: f64) -> Option<usize> {
        if v.is_nan() {
            return None;
        }
        let inner = self.edges.get(1..self.edges.len().saturating_sub(1)).unwrap_or(&[]);
        Some(inner.partition_point(|e| *e <= v).min(self.bins().saturating_sub(1)))
    }

    /// Edges at the deciles of `values` (repeated edges merged), proportions as they fall.
    pub fn from_values(values: &[f64]) -> Option<Feature> {
        let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        if sorted.is_empty() {
            return None;
        }
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        let mut edges: Vec<f64> = (0..=CAPTURED_BINS).map(|i| at(i as f64 / CAPTURED_BINS as f64)).collect();
        edges.dedup();
        if edges.len() < 2 {
            // A constant feature: one bin either side of its value, so a move either way shows.
            edges = vec![edges[0] - 1.0, edges[0], edges[0] + 1.0];
        }
        let mut f = Feature { proportions: vec![0.0; edges.len() - 1], edges };
        let mut counts = vec![0u64; f.bins()];
        for v in &sorted {
            if let Some(b) = f.bin(*v) {
                counts[b] += 1;
            }
        }
        f.proportions = proportions(&counts);
        Some(f)
    }
}

pub fn proportions(counts: &[u64]) -> Vec<f64> {
    let total: u64 = counts.iter().sum();
    counts.iter().map(|c| if total > 0 { *c as f64 / total as f64 } else { 0.0 }).collect()
}

/// Per input name, its watched features in order.
pub type Baseline = BTreeMap<String, Vec<Feature>>;

/// Reads an input baseline file (see the module docs for the format).
pub fn load_baseline(path: &Path) -> Result<Baseline, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let inputs = value
        .get("inputs")
        .and_then(|v| v.as_object())
        .ok_or_else(|| format!("{}: needs an \"inputs\" object keyed by input name", path.display()))?;
    let rows = |v: Option<&serde_json::Value>| -> Option<Vec<Vec<f64>>> {
        v?.as_array()?.iter().map(|r| r.as_array()?.iter().map(serde_json::Value::as_f64).collect()).collect()
    };
    let mut out = Baseline::new();
    for (name, spec) in inputs {
        let bad = |why: &str| format!("{}: input {name:?}: {why}", path.display());
        let edges = rows(spec.get("edges")).ok_or_else(|| bad("\"edges\" must be arrays of numbers"))?;
        let props =
            rows(spec.get("proportions")).ok_or_else(|| bad("\"proportions\" must be arrays of numbers"))?;
        if edges.len() != props.len() {
            return Err(bad("one \"edges\" and one \"proportions\" array per feature"));
        }
        let mut features = Vec::with_capacity(edges.len());
        for (i, (e, p)) in edges.into_iter().zip(props).enumerate() {
            let ordered = e.windows(2).all(|w| w[0] < w[1]) && e.iter().all(|v| v.is_finite());
            if e.len() < 2 || e.len() > MAX_BINS + 1 || !ordered || p.len() != e.len() - 1 {
                return Err(bad(&format!(
                    "feature {i}: needs 2 to {} increasing finite edges and one proportion per bin (edges - 1)",
                    MAX_BINS + 1
                )));
            }
            let total: f64 = p.iter().sum();
            if p.iter().any(|v| *v < 0.0 || !v.is_finite()) || total <= 0.0 {
                return Err(bad(&format!("feature {i}: proportions must be non-negative, not all 0")));
            }
            features.push(Feature { edges: e, proportions: p.iter().map(|v| v / total).collect() });
        }
        out.insert(name.clone(), features);
    }
    Ok(out)
}

/// A numeric input of a sample: its values, rows, row width and the features watched (the
/// first ones of each row).
struct Numeric<'a> {
    name: &'a str,
    values: Vec<f64>,
    rows: usize,
    width: usize,
    watched: usize,
}

/// The numeric inputs, watched features capped so that all inputs together have at most
/// `max_features` (the bound of the `feature` label).
fn numeric(inputs: &[Tensor], max_features: usize) -> Vec<Numeric<'_>> {
    let mut left = max_features;
    let mut out = Vec::new();
    for t in inputs {
        if left == 0 {
            break;
        }
        let Some(values) = t.data.to_f64_vec() else { continue };
        let width = t.shape.last().copied().filter(|_| t.shape.len() >= 2).unwrap_or(1);
        if width == 0 || values.is_empty() {
            continue;
        }
        let watched = width.min(left);
        left -= watched;
        out.push(Numeric { name: t.name.as_str(), rows: values.len() / width, values, width, watched });
    }
    out
}

/// A model's reference: being captured from the primary's rows, or ready.
enum Reference {
    Capturing { values: BTreeMap<String, Vec<Vec<f64>>>, rows: usize },
    Ready(Baseline),
}

/// One feature's recent bins.
struct Window {
    ring: VecDeque<u8>,
    counts: Vec<u64>,
    gauge: Option<Gauge>,
}

impl Window {
    fn push(&mut self, bin: usize) {
        if self.ring.len() == WINDOW_ROWS
            && let Some(old) = self.ring.pop_front()
        {
            self.counts[old as usize] -= 1;
        }
        self.ring.push_back(bin as u8);
        self.counts[bin] += 1;
    }
}

/// A version's windows and the last PSI of each feature.
#[derive(Default)]
struct Version {
    windows: BTreeMap<(String, usize), Window>,
    max: Option<Gauge>,
    /// (input, feature, PSI) as last computed, largest first.
    psis: Vec<(String, usize, f64)>,
}

#[derive(Default)]
struct State {
    references: HashMap<String, Reference>,
    versions: HashMap<(String, u64), Version>,
}

/// The drift of a version's traffic as last computed: its features, largest PSI first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Drift {
    pub features: Vec<(String, usize, f64)>,
}

impl Drift {
    pub fn max(&self) -> Option<f64> {
        self.features.first().map(|f| f.2)
    }

    /// The rollout hold this drift calls for at `limit`: a reason naming the features over it
    /// (the five largest), or nothing.
    pub fn hold(&self, limit: f64) -> Option<String> {
        let over: Vec<String> = self
            .features
            .iter()
            .filter(|f| f.2 > limit)
            .map(|(input, i, psi)| format!("{input}[{i}] {psi:.4}"))
            .collect();
        if over.is_empty() {
            return None;
        }
        let more = if over.len() > 5 { format!(" and {} more", over.len() - 5) } else { String::new() };
        Some(format!(
            "input drift: the traffic moved from the baseline (PSI over max_input_drift_psi {limit} on {}{more}); \
             a verdict on shifted data is not a verdict on the model",
            over[..over.len().min(5)].join(", ")
        ))
    }
}

/// What became of an offered answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offered {
    NotSampled,
    Queued,
    /// Sampled, but the worker's queue was full.
    Skipped,
}

/// The sampler (request path) and the worker's state (read by rollouts).
#[derive(Default)]
pub struct Inputs {
    queue: std::sync::OnceLock<Sender<Sample>>,
    state: Arc<Mutex<State>>,
}

impl Inputs {
    /// Samples one call in `SAMPLE_ONE_IN`; `make` builds the sample only then (`None`: nothing
    /// to watch). Never blocks.
    pub fn offer(&self, model: &str, make: impl FnOnce() -> Option<Sample>) -> Offered {
        if fastrand::u32(..SAMPLE_ONE_IN) != 0 {
            return Offered::NotSampled;
        }
        let Some(sample) = make() else { return Offered::NotSampled };
        let queue = self.queue.get_or_init(|| self.spawn());
        if queue.try_send(sample).is_err() {
            // Full (or, were the worker gone, disconnected): this sample is not binned.
            telemetry::count_input_drift_sample(model, false);
            return Offered::Skipped;
        }
        Offered::Queued
    }

    fn spawn(&self) -> Sender<Sample> {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let state = self.state.clone();
        let spawned = std::thread::Builder::new().name("input-drift".into()).spawn(move || work(&rx, &state));
        if let Err(e) = spawned {
            // Without the worker the queue fills and every sample is counted skipped.
            tracing::error!("input drift worker not started: {e}");
        }
        tx
    }

    /// The largest recent drift among `versions` of `model` (the traffic a rollout splits).
    pub fn drift(&self, model: &str, versions: &[u64]) -> Option<Drift> {
        let state = self.state.lock().ok()?;
        versions
            .iter()
            .filter_map(|v| state.versions.get(&(model.to_string(), *v)))
            .filter(|v| !v.psis.is_empty())
            .map(|v| Drift { features: v.psis.clone() })
            .max_by(|a, b| a.max().unwrap_or(0.0).total_cmp(&b.max().unwrap_or(0.0)))
    }

    /// Processes one sample now (the worker's step; tests call it directly).
    #[cfg(test)]
    fn take(&self, sample: Sample) {
        if let Ok(mut state) = self.state.lock() {
            state.take(sample);
        }
    }
}

impl super::Monitor {
    /// Offers an answer's inputs to input drift: the primary's and a candidate's (pinned calls
    /// and shadows see the same traffic, or traffic chosen on purpose). Sampled; binned on the
    /// worker thread.
    pub fn observe_inputs(
        &self,
        snapshot: &ServingSnapshot,
        model: &str,
        version: u64,
        role: Role,
        inputs: &Arc<Vec<Tensor>>,
    ) {
        if !matches!(role, Role::Primary | Role::Candidate) {
            return;
        }
        let _ = self.inputs.offer(model, || {
            let cfg = snapshot.config.models.get(model)?.monitor.as_ref()?;
            Some(Sample {
                model: model.to_string(),
                version,
                primary: role == Role::Primary,
                baseline_file: cfg.input_baseline.clone(),
                max_features: cfg.max_features,
                inputs: inputs.clone(),
            })
        });
    }

    /// The input drift a rollout of `candidate` against `primary` is judged with.
    pub(super) fn input_drift(&self, model: &str, primary: u64, candidate: u64) -> Option<Drift> {
        self.inputs.drift(model, &[primary, candidate])
    }
}

fn work(rx: &Receiver<Sample>, state: &Mutex<State>) {
    while let Ok(sample) = rx.recv() {
        let Ok(mut state) = state.lock() else { return };
        state.take(sample);
    }
}

impl State {
    /// Bins one sample (counted `used` once done, so a count seen means a window updated).
    fn take(&mut self, s: Sample) {
        let model = s.model.clone();
        self.bin(s);
        telemetry::count_input_drift_sample(&model, true);
    }

    fn bin(&mut self, s: Sample) {
        let features = numeric(&s.inputs, s.max_features);
        let reference = self.references.entry(s.model.clone()).or_insert_with(|| {
            // Both outcomes exist from the first sample on, so a rate of skips reads 0, not
            // nothing.
            telemetry::register_input_drift_samples(&s.model);
            initial_reference(&s.model, s.baseline_file.as_deref())
        });
        if let Reference::Capturing { values, rows } = reference {
            if s.primary {
                capture(values, rows, &features);
            }
            if *rows >= BASELINE_ROWS {
                let baseline = values
                    .iter()
                    .map(|(name, fs)| {
                        (name.clone(), fs.iter().filter_map(|v| Feature::from_values(v)).collect())
                    })
                    .collect();
                *reference = Reference::Ready(baseline);
            }
            return;
        }
        let Reference::Ready(baseline) = reference else { return };
        let version = self.versions.entry((s.model.clone(), s.version)).or_default();
        for n in &features {
            let Some(reference) = baseline.get(n.name) else { continue };
            let watched = reference.len().min(n.watched);
            for row in n.values.chunks(n.width) {
                for (i, f) in reference.iter().enumerate().take(watched) {
                    let Some(b) = row.get(i).and_then(|v| f.bin(*v)) else { continue };
                    version
                        .windows
                        .entry((n.name.to_string(), i))
                        .or_insert_with(|| Window {
                            ring: VecDeque::new(),
                            counts: vec![0; f.bins()],
                            gauge: None,
                        })
                        .push(b);
                }
            }
        }
        version.psis.clear();
        for ((name, i), w) in &mut version.windows {
            let Some(f) = baseline.get(name).and_then(|fs| fs.get(*i)) else { continue };
            if w.ring.len() < MIN_WINDOW_ROWS {
                continue;
            }
            let value = psi(&f.proportions, &proportions(&w.counts));
            w.gauge
                .get_or_insert_with(|| telemetry::input_drift_psi(&s.model, s.version, name, *i))
                .set(value);
            version.psis.push((name.clone(), *i, value));
        }
        version.psis.sort_by(|a, b| b.2.total_cmp(&a.2));
        if let Some(max) = version.psis.first().map(|p| p.2) {
            version.max.get_or_insert_with(|| telemetry::input_drift_psi_max(&s.model, s.version)).set(max);
        }
    }
}

/// Adds the primary's rows to the captured baseline, up to `BASELINE_ROWS`.
fn capture(values: &mut BTreeMap<String, Vec<Vec<f64>>>, rows: &mut usize, features: &[Numeric<'_>]) {
    let room = BASELINE_ROWS.saturating_sub(*rows);
    let mut taken = 0;
    for n in features {
        let columns = values.entry(n.name.to_string()).or_insert_with(|| vec![Vec::new(); n.watched]);
        for row in n.values.chunks(n.width).take(room) {
            for (column, v) in columns.iter_mut().zip(row) {
                column.push(*v);
            }
        }
        taken = taken.max(n.rows.min(room));
    }
    *rows += taken;
}

fn initial_reference(model: &str, file: Option<&Path>) -> Reference {
    let capturing = || Reference::Capturing { values: BTreeMap::new(), rows: 0 };
    let Some(path) = file else { return capturing() };
    match load_baseline(path) {
        Ok(b) => Reference::Ready(b),
        Err(e) => {
            tracing::error!(
                model,
                "input baseline unusable ({e}); capturing the primary's first requests instead"
            );
            capturing()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn uniform() -> Feature {
        Feature { edges: (0..=10).map(f64::from).collect(), proportions: vec![0.1; 10] }
    }

    fn batch(rows: &[[f32; 3]]) -> Arc<Vec<Tensor>> {
        Arc::new(vec![Tensor {
            name: "x".into(),
            shape: vec![rows.len(), 3],
            data: TensorData::F32(rows.iter().flatten().copied().collect()),
        }])
    }

    fn sample(version: u64, primary: bool, inputs: Arc<Vec<Tensor>>) -> Sample {
        Sample { model: "m".into(), version, primary, baseline_file: None, max_features: 64, inputs }
    }

    #[test]
    fn bins_follow_the_edges_with_open_ends() {
        let f = uniform();
        assert_eq!(f.bin(-3.0), Some(0));
        assert_eq!(f.bin(0.5), Some(0));
        assert_eq!(f.bin(1.0), Some(1));
        assert_eq!(f.bin(9.99), Some(9));
        assert_eq!(f.bin(42.0), Some(9));
        assert_eq!(f.bin(f64::NAN), None);
    }

    #[test]
    fn psi_is_zero_for_the_same_and_hand_computed_for_a_move() {
        let e = [0.5, 0.5];
        assert_eq!(psi(&e, &e), 0.0);
        let expected = 0.25 * 2f64.ln() + 0.25 * 1.5f64.ln();
        assert!((psi(&e, &[0.25, 0.75]) - expected).abs() < 1e-12);
    }

    #[test]
    fn captured_edges_are_deciles_and_a_constant_still_has_two_sides() {
        let values: Vec<f64> = (0..1000).map(f64::from).collect();
        let f = Feature::from_values(&values).unwrap();
        assert_eq!(f.bins(), 10);
        assert!(f.proportions.iter().all(|p| (p - 0.1).abs() < 0.01), "{f:?}");
        let c = Feature::from_values(&[3.0; 50]).unwrap();
        assert_eq!(c.bin(2.0), Some(0));
        assert_eq!(c.bin(3.0), Some(1));
        assert_eq!(c.bin(4.0), Some(1));
        assert!(psi(&c.proportions, &[1.0, 0.0]) > 1.0);
    }

    #[test]
    fn a_file_baseline_is_checked() {
        let dir = std::env::temp_dir().join(format!("input-baseline-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"inputs": {"x": {"edges": [[0, 1, 2]], "proportions": [[1, 3]]}}}"#)
            .unwrap();
        let b = load_baseline(&good).unwrap();
        assert_eq!(b["x"][0].proportions, vec![0.25, 0.75]);
        for bad in [
            r#"{"x": 1}"#,
            r#"{"inputs": {"x": {"edges": [[0, 1, 2]], "proportions": [[1]]}}}"#,
            r#"{"inputs": {"x": {"edges": [[2, 1]], "proportions": [[1]]}}}"#,
            r#"{"inputs": {"x": {"edges": [[0, 1]], "proportions": [[0]]}}}"#,
        ] {
            let path = dir.join("bad.json");
            std::fs::write(&path, bad).unwrap();
            assert!(load_baseline(&path).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_shifted_feature_drifts_and_the_others_do_not() {
        let inputs = Inputs::default();
        // Baseline: the primary's first rows, every feature over 0..1000.
        let base: Vec<[f32; 3]> = (0..BASELINE_ROWS).map(|i| [i as f32, i as f32, (i % 10) as f32]).collect();
        inputs.take(sample(1, true, batch(&base)));
        assert!(inputs.drift("m", &[1]).is_none(), "no window yet");
        // Traffic: feature 0 moved up by half its range, the others as before.
        let moved: Vec<[f32; 3]> =
            (0..500).map(|i| [(2 * i + 500) as f32, (2 * i) as f32, (i % 10) as f32]).collect();
        inputs.take(sample(1, true, batch(&moved)));
        let d = inputs.drift("m", &[1]).unwrap();
        assert_eq!(d.features[0].0, "x");
        assert_eq!(d.features[0].1, 0, "{d:?}");
        assert!(d.features[0].2 > 1.0, "{d:?}");
        assert!(d.features[1..].iter().all(|f| f.2 < 0.05), "{d:?}");
        // A candidate's rows are binned against the same baseline but never become it.
        assert!(inputs.drift("m", &[2]).is_none());
    }

    #[test]
    fn a_full_queue_skips_the_sample_without_waiting() {
        let inputs = Inputs::default();
        // A queue of one that nobody reads: the first sample waits there, the next are skipped.
        let (tx, _rx) = crossbeam_channel::bounded(1);
        inputs.queue.set(tx).ok();
        let offers: Vec<Offered> = (0..400)
            .map(|_| inputs.offer("m", || Some(sample(1, true, batch(&[[0.0; 3]])))))
            .filter(|o| *o != Offered::NotSampled)
            .collect();
        assert_eq!(offers.first(), Some(&Offered::Queued), "{offers:?}");
        assert!(offers.len() > 10 && offers[1..].iter().all(|o| *o == Offered::Skipped), "{offers:?}");
        // About one in SAMPLE_ONE_IN is sampled at all.
        assert!(offers.len() < 400 / 2, "{}", offers.len());
    }

    #[test]
    fn max_features_bounds_the_watched_features() {
        let inputs = Inputs::default();
        let base: Vec<[f32; 3]> = (0..BASELINE_ROWS).map(|i| [i as f32; 3]).collect();
        let mut s = sample(1, true, batch(&base));
        s.max_features = 2;
        inputs.take(s);
        let mut s = sample(1, true, batch(&base[..200]));
        s.max_features = 2;
        inputs.take(s);
        let d = inputs.drift("m", &[1]).unwrap();
        assert_eq!(d.features.len(), 2, "{d:?}");
        assert!(d.features.iter().all(|f| f.1 < 2));
    }
}
