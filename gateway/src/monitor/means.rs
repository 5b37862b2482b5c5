//! Per-feature baseline values for explanations: the mean of each feature's training
//! distribution in `monitor.input_baseline` (each bin's proportion times its midpoint), read
//! once per file and kept (the file is read at start like the drift baseline).
//!
//! A model without a baseline file, an unreadable file, or an input or feature the file does not
//! describe: 0 (the captured-from-traffic drift baseline is not used: it lives on the drift
//! worker and keeps no means).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use super::inputs::{Feature, load_baseline};
use crate::config::MonitorConfig;

/// Per input name, the mean of each described feature.
pub type Means = BTreeMap<String, Vec<f64>>;

static READ: OnceLock<Mutex<HashMap<PathBuf, Arc<Means>>>> = OnceLock::new();

/// The feature means of `cfg.input_baseline`, or `None` without a usable file.
pub fn input_means(cfg: &MonitorConfig) -> Option<Arc<Means>> {
    let path = cfg.input_baseline.as_ref()?;
    let read = READ.get_or_init(Mutex::default);
    if let Some(m) = read.lock().ok()?.get(path) {
        return Some(m.clone());
    }
    let baseline = match load_baseline(path) {
        Ok(b) => b,
        Err(e) => {
            tracing::warn!("explanations occlude with 0: input baseline unusable ({e})");
            return None;
        }
    };
    let means: Means = baseline.into_iter().map(|(name, f)| (name, f.iter().map(mean).collect())).collect();
    let means = Arc::new(means);
    read.lock().ok()?.insert(path.clone(), means.clone());
    Some(means)
}

/// Σ proportion × bin midpoint (the end bins' given edges stand for their open ends).
fn mean(f: &Feature) -> f64 {
    f.proportions.iter().zip(f.edges.windows(2)).map(|(p, e)| p * (e[0] + e[1]) / 2.0).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_feature_mean_weighs_bin_midpoints_by_proportion() {
        let f = Feature { edges: vec![0.0, 1.0, 3.0], proportions: vec![0.25, 0.75] };
        assert!((mean(&f) - (0.25 * 0.5 + 0.75 * 2.0)).abs() < 1e-12);
    }
}
