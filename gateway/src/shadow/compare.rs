//! Comparing a shadow's outputs with the answer the client got: argmax agreement for
//! class-score outputs (floating point, shape `[batch, classes]` with at least two classes),
//! element-wise absolute difference within a tolerance for every other numeric output, exact
//! equality for BYTES.

use crate::tensor::{Tensor, TensorData};

/// Differences at or under this count as agreement for non-class outputs.
pub const TOLERANCE: f64 = 1e-4;

#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub output: String,
    pub matched: bool,
    /// |shadow - primary| per element (numeric outputs of equal shape).
    pub abs_diffs: Vec<f64>,
}

/// One comparison per output the answer carries (an output the shadow lacks is a mismatch).
pub fn compare(answer: &[Tensor], shadow: &[Tensor]) -> Vec<Comparison> {
    answer
        .iter()
        .map(|a| match shadow.iter().find(|s| s.name == a.name) {
            Some(s) => compare_one(a, s),
            None => Comparison { output: a.name.clone(), matched: false, abs_diffs: Vec::new() },
        })
        .collect()
}

fn compare_one(a: &Tensor, s: &Tensor) -> Comparison {
    let output = a.name.clone();
    if a.shape != s.shape || a.datatype() != s.datatype() {
        return Comparison { output, matched: false, abs_diffs: Vec::new() };
    }
    if let (TensorData::Bytes(x), TensorData::Bytes(y)) = (&a.data, &s.data) {
        return Comparison { output, matched: x == y, abs_diffs: Vec::new() };
    }
    let (Some(x), Some(y)) = (a.data.to_f64_vec(), s.data.to_f64_vec()) else {
        return Comparison { output, matched: false, abs_diffs: Vec::new() };
    };
    let abs_diffs: Vec<f64> = x.iter().zip(&y).map(|(p, q)| (p - q).abs()).collect();
    let matched = if is_class_scores(a) {
        let classes = a.shape[1];
        x.chunks(classes).zip(y.chunks(classes)).all(|(p, q)| argmax(p) == argmax(q))
    } else {
        // NaN differences are not agreement.
        abs_diffs.iter().all(|d| *d <= TOLERANCE)
    };
    Comparison { output, matched, abs_diffs }
}

/// Floating point `[batch, classes]` with at least two classes.
pub fn is_class_scores(t: &Tensor) -> bool {
    t.datatype().is_float() && t.shape.len() == 2 && t.shape[1] >= 2
}

/// Index of the largest value (the first one on ties; NaN never wins).
pub fn argmax(row: &[f64]) -> Option<usize> {
    row.iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .fold(None, |best: Option<(usize, f64)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(name: &str, shape: &[usize], v: &[f32]) -> Tensor {
        Tensor { name: name.into(), shape: shape.to_vec(), data: TensorData::F32(v.to_vec()) }
    }

    #[test]
    fn class_scores_compare_by_argmax() {
        let a = f32s("p", &[2, 2], &[0.9, 0.1, 0.4, 0.6]);
        let close = f32s("p", &[2, 2], &[0.6, 0.4, 0.3, 0.7]);
        let flipped = f32s("p", &[2, 2], &[0.6, 0.4, 0.7, 0.3]);
        assert!(compare(std::slice::from_ref(&a), &[close])[0].matched);
        let c = &compare(&[a], &[flipped])[0];
        assert!(!c.matched);
        assert_eq!(c.abs_diffs.len(), 4);
    }

    #[test]
    fn other_outputs_compare_within_tolerance() {
        let a = Tensor { name: "l".into(), shape: vec![3], data: TensorData::I64(vec![1, 0, 1]) };
        let same = a.clone();
        let off = Tensor { data: TensorData::I64(vec![1, 1, 1]), ..a.clone() };
        assert!(compare(std::slice::from_ref(&a), &[same])[0].matched);
        let c = &compare(&[a], &[off])[0];
        assert!(!c.matched);
        assert_eq!(c.abs_diffs, vec![0.0, 1.0, 0.0]);
    }

    #[test]
    fn missing_or_reshaped_outputs_mismatch() {
        let a = f32s("y", &[2], &[1.0, 2.0]);
        assert!(!compare(std::slice::from_ref(&a), &[])[0].matched);
        assert!(!compare(&[a], &[f32s("y", &[1, 2], &[1.0, 2.0])])[0].matched);
    }

    #[test]
    fn argmax_ignores_nan_and_prefers_the_first_tie() {
        assert_eq!(argmax(&[0.5, f64::NAN, 0.5]), Some(0));
        assert_eq!(argmax(&[f64::NAN]), None);
        assert_eq!(argmax(&[0.1, 0.7, 0.2]), Some(1));
    }
}
