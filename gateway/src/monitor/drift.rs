//! Drift: the population stability index (PSI) of a version's recent monitored scores against a
//! baseline distribution.
//!
//! Fixed bins: 10 equal-width bins over `monitor.range` (default [0, 1]); values below or above
//! go to the first or last bin; NaN is skipped. PSI = Σ (aᵢ − eᵢ) · ln(aᵢ / eᵢ) over the bins'
//! proportions, each floored at 0.0001 so an empty bin does not make it infinite. Common reading:
//! under 0.1 stable, 0.1–0.25 moderate shift, over 0.25 significant.
//!
//! The baseline is the `monitor.baseline` file when given (JSON: `{"proportions": [10 numbers]}`,
//! `{"counts": [10 numbers]}` or `{"values": [raw scores]}`), else the model's first 1,000 primary
//! predictions. The window is a version's last 1,000 scores; its PSI is published once it holds 100.

use std::collections::VecDeque;
use std::path::Path;

pub const BINS: usize = 10;
pub const BASELINE_SIZE: u64 = 1000;
pub const WINDOW_SIZE: usize = 1000;
pub const MIN_WINDOW: usize = 100;
const FLOOR: f64 = 1e-4;

/// Bin index of `v` over `[lo, hi)`, end bins open-ended; `None` for NaN.
pub fn bin(v: f64, (lo, hi): (f64, f64)) -> Option<usize> {
    if v.is_nan() {
        return None;
    }
    let i = ((v - lo) / (hi - lo) * BINS as f64).floor();
    Some(i.clamp(0.0, (BINS - 1) as f64) as usize)
}

pub fn proportions(counts: &[u64; BINS]) -> [f64; BINS] {
    let total: u64 = counts.iter().sum();
    let mut out = [0.0; BINS];
    if total > 0 {
        for (o, c) in out.iter_mut().zip(counts) {
            *o = *c as f64 / total as f64;
        }
    }
    out
}

/// PSI of `actual` against `expected` (same length), each proportion floored at `FLOOR`.
/// Output drift and input drift (`inputs`) both use it.
pub fn psi(expected: &[f64], actual: &[f64]) -> f64 {
    expected
        .iter()
        .zip(actual)
        .map(|(e, a)| {
            let (e, a) = (e.max(FLOOR), a.max(FLOOR));
            (a - e) * (a / e).ln()
        })
        .sum()
}

/// A version's last `WINDOW_SIZE` bin indices and their counts.
#[derive(Debug, Default)]
pub struct Window {
    ring: VecDeque<u8>,
    counts: [u64; BINS],
}

impl Window {
    pub fn push(&mut self, bin: usize) {
        if self.ring.len() == WINDOW_SIZE
            && let Some(old) = self.ring.pop_front()
        {
            self.counts[old as usize] -= 1;
        }
        self.ring.push_back(bin as u8);
        self.counts[bin] += 1;
    }

    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn proportions(&self) -> [f64; BINS] {
        proportions(&self.counts)
    }
}

/// A model's reference distribution.
#[derive(Debug, Clone)]
pub enum Baseline {
    /// Still collecting the primary's first predictions.
    Capturing {
        counts: [u64; BINS],
    },
    Ready([f64; BINS]),
}

impl Baseline {
    pub fn ready(&self) -> Option<&[f64; BINS]> {
        match self {
            Baseline::Ready(p) => Some(p),
            Baseline::Capturing { .. } => None,
        }
    }

    /// Adds a primary prediction while capturing; becomes ready at `BASELINE_SIZE`.
    pub fn capture(&mut self, bin: usize) {
        if let Baseline::Capturing { counts } = self {
            counts[bin] += 1;
            if counts.iter().sum::<u64>() >= BASELINE_SIZE {
                *self = Baseline::Ready(proportions(counts));
            }
        }
    }
}

/// Reads a baseline file (see the module docs for the formats).
pub fn load_baseline(path: &Path, range: (f64, f64)) -> Result<[f64; BINS], String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let numbers = |key: &str| -> Option<Vec<f64>> {
        value.get(key)?.as_array()?.iter().map(serde_json::Value::as_f64).collect()
    };
    let mut counts = [0u64; BINS];
    if let Some(values) = numbers("values") {
        for v in values {
            if let Some(b) = bin(v, range) {
                counts[b] += 1;
            }
        }
        return nonempty(proportions(&counts), path);
    }
    let Some(given) = numbers("proportions").or_else(|| numbers("counts")) else {
        return Err(format!("{} needs \"proportions\", \"counts\" or \"values\"", path.display()));
    };
    if given.len() != BINS || given.iter().any(|v| *v < 0.0 || !v.is_finite()) {
        return Err(format!("{}: expected {BINS} non-negative numbers, got {given:?}", path.display()));
    }
    let total: f64 = given.iter().sum();
    let mut out = [0.0; BINS];
    for (o, g) in out.iter_mut().zip(&given) {
        *o = if total > 0.0 { g / total } else { 0.0 };
    }
    nonempty(out, path)
}

fn nonempty(p: [f64; BINS], path: &Path) -> Result<[f64; BINS], String> {
    if p.iter().sum::<f64>() > 0.0 {
        Ok(p)
    } else {
        Err(format!("{}: the baseline is empty", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_equal_width_with_open_ends() {
        let r = (0.0, 1.0);
        assert_eq!(bin(0.0, r), Some(0));
        assert_eq!(bin(0.05, r), Some(0));
        assert_eq!(bin(0.15, r), Some(1));
        assert_eq!(bin(0.999, r), Some(9));
        assert_eq!(bin(1.0, r), Some(9));
        assert_eq!(bin(-5.0, r), Some(0));
        assert_eq!(bin(f64::NAN, r), None);
    }

    #[test]
    fn psi_matches_a_hand_computed_value() {
        // Half the mass moves from bin 0 to bin 1:
        // (0.25-0.5)ln(0.25/0.5) + (0.75-0.5)ln(0.75/0.5) = 0.25 ln 2 + 0.25 ln 1.5 = 0.274653...
        let mut e = [0.0; BINS];
        let mut a = [0.0; BINS];
        e[0] = 0.5;
        e[1] = 0.5;
        a[0] = 0.25;
        a[1] = 0.75;
        let expected = 0.25 * 2f64.ln() + 0.25 * 1.5f64.ln();
        assert!((psi(&e, &a) - expected).abs() < 1e-12, "{}", psi(&e, &a));
        assert_eq!(psi(&e, &e), 0.0);
    }

    #[test]
    fn window_forgets_the_oldest() {
        let mut w = Window::default();
        for _ in 0..WINDOW_SIZE {
            w.push(0);
        }
        w.push(9);
        assert_eq!(w.len(), WINDOW_SIZE);
        let p = w.proportions();
        assert!((p[9] - 1.0 / WINDOW_SIZE as f64).abs() < 1e-12);
    }

    #[test]
    fn baseline_becomes_ready_after_capture() {
        let mut b = Baseline::Capturing { counts: [0; BINS] };
        for i in 0..BASELINE_SIZE {
            assert!(b.ready().is_none());
            b.capture((i % 2) as usize);
        }
        let p = b.ready().unwrap();
        assert_eq!((p[0], p[1]), (0.5, 0.5));
    }
}
