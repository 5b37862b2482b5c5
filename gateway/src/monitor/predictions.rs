//! Reading predictions out of the monitored output: one score per row and, where the output
//! has one, a class. What is recorded for which output shape:
//!
//! | monitored output | score (`gateway_prediction_value`, drift) | class (`gateway_prediction_class_total`) |
//! | --- | --- | --- |
//! | float `[batch, classes]`, classes ≥ 2 | the top class's score (or, with `score = "positive_class"`, that class's) | the argmax (0..classes) |
//! | float `[batch]` or `[batch, 1]` | the value | 1 when value ≥ `threshold`, else 0 |
//! | integer or bool `[batch]` or `[batch, 1]` | the value | the value, or `other` at ≥ `max_classes` |
//! | anything else numeric | every element | none |
//!
//! Class label values are therefore bounded by the output's width (or `max_classes`), never
//! taken from a request.

use crate::config::{MonitorConfig, ScoreOf};
use crate::shadow::argmax;
use crate::tensor::Tensor;

/// One row's prediction. `class == Some(max_classes)` stands for "other".
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Row {
    pub score: f64,
    pub class: Option<u64>,
}

/// The rows of `t` as the table above reads them; empty for BYTES outputs.
pub fn rows(t: &Tensor, cfg: &MonitorConfig) -> Vec<Row> {
    let Some(values) = t.data.to_f64_vec() else { return Vec::new() };
    let single_column = t.shape.len() == 1 || (t.shape.len() == 2 && t.shape[1] == 1);
    if t.datatype().is_float() && t.shape.len() == 2 && t.shape[1] >= 2 {
        let width = t.shape[1];
        return values
            .chunks(width)
            .map(|row| {
                let best = argmax(row);
                let scored = match cfg.score {
                    ScoreOf::Top => best,
                    ScoreOf::PositiveClass => Some(cfg.positive_class as usize),
                };
                let score = scored.and_then(|i| row.get(i)).copied().unwrap_or(f64::NAN);
                Row { score, class: best.map(|i| i as u64) }
            })
            .collect();
    }
    if single_column && t.datatype().is_float() {
        return values
            .iter()
            .map(|&v| Row { score: v, class: Some(u64::from(v >= cfg.threshold)) })
            .collect();
    }
    if single_column {
        let class = |v: f64| if v >= 0.0 && v < cfg.max_classes as f64 { v as u64 } else { cfg.max_classes };
        return values.iter().map(|&v| Row { score: v, class: Some(class(v)) }).collect();
    }
    values.iter().map(|&v| Row { score: v, class: None }).collect()
}

/// The label of class `c` in metrics.
pub fn class_label(c: u64, cfg: &MonitorConfig) -> String {
    if c >= cfg.max_classes { "other".to_string() } else { c.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn cfg() -> MonitorConfig {
        MonitorConfig {
            output: "y".into(),
            baseline: None,
            range: (0.0, 1.0),
            threshold: 0.5,
            score: ScoreOf::Top,
            positive_class: 1,
            max_classes: 10,
            feedback_ttl: std::time::Duration::from_secs(60),
            feedback_capacity: 10,
            input_baseline: None,
            max_features: 64,
            segment_header: None,
            segments: Vec::new(),
            min_segment_requests: 30,
        }
    }

    #[test]
    fn class_scores_give_the_top_score_and_the_argmax() {
        let t = Tensor {
            name: "p".into(),
            shape: vec![2, 3],
            data: TensorData::F32(vec![0.1, 0.7, 0.2, 0.5, 0.3, 0.2]),
        };
        let r = rows(&t, &cfg());
        assert_eq!(r.iter().map(|r| r.class).collect::<Vec<_>>(), vec![Some(1), Some(0)]);
        assert!((r[0].score - 0.7).abs() < 1e-6 && (r[1].score - 0.5).abs() < 1e-6);
    }

    #[test]
    fn positive_class_scoring_follows_that_class() {
        let t =
            Tensor { name: "p".into(), shape: vec![2, 2], data: TensorData::F32(vec![0.9, 0.1, 0.3, 0.7]) };
        let c = MonitorConfig { score: ScoreOf::PositiveClass, ..cfg() };
        let scores: Vec<f64> = rows(&t, &c).iter().map(|r| (r.score * 10.0).round() / 10.0).collect();
        assert_eq!(scores, vec![0.1, 0.7]);
    }

    #[test]
    fn single_scores_are_thresholded() {
        let t = Tensor { name: "s".into(), shape: vec![3, 1], data: TensorData::F64(vec![0.2, 0.5, 0.9]) };
        let classes: Vec<_> = rows(&t, &cfg()).iter().map(|r| r.class).collect();
        assert_eq!(classes, vec![Some(0), Some(1), Some(1)]);
    }

    #[test]
    fn integer_classes_past_the_bound_are_other() {
        let t = Tensor { name: "l".into(), shape: vec![3], data: TensorData::I64(vec![3, -1, 12]) };
        let classes: Vec<_> = rows(&t, &cfg()).iter().map(|r| r.class).collect();
        assert_eq!(classes, vec![Some(3), Some(10), Some(10)]);
        assert_eq!(class_label(10, &cfg()), "other");
    }
}
