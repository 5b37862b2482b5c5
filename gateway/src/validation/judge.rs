//! Judging a version's answers on the hold-out set, row by row, and the verdict with its figures.
//!
//! What a row's prediction is, for `min_accuracy` (the same reading as the monitor's classes):
//!
//! | judged output | prediction |
//! | --- | --- |
//! | float `[batch, classes]`, classes ≥ 2 | the argmax |
//! | float `[batch]` or `[batch, 1]` | 1 when the score ≥ `monitor.threshold` (0.5 without a monitor), else 0 |
//! | integer or bool `[batch]` or `[batch, 1]` | the value itself |
//!
//! For `max_abs_diff`, every value of the row is compared with the expected row (nested or
//! flat): the largest |output − expected| over the whole set is the figure.

use serde_json::Value;

use super::ValidationError;
use super::dataset::Line;
use crate::config::ValidationRule;
use crate::tensor::Tensor;

/// What a version achieved, and whether that meets the rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub passed: bool,
    /// `accuracy 0.6200 (124 of 200 rows), below min_accuracy 0.9`.
    pub figures: String,
}

/// The running count over the lines of the set.
#[derive(Debug)]
pub enum Tally {
    Accuracy { correct: usize, rows: usize },
    MaxAbsDiff { rows: usize, worst: Option<Worst> },
}

/// Where the largest difference was seen.
#[derive(Debug, Clone, Copy)]
pub struct Worst {
    diff: f64,
    /// 1-based over the whole set.
    row: usize,
    line: usize,
}

impl Tally {
    pub fn new(rule: ValidationRule) -> Tally {
        match rule {
            ValidationRule::MinAccuracy(_) => Tally::Accuracy { correct: 0, rows: 0 },
            ValidationRule::MaxAbsDiff(_) => Tally::MaxAbsDiff { rows: 0, worst: None },
        }
    }

    /// Counts one line's rows: `output` is the judged output of the version's answer to it.
    pub fn add(&mut self, line: &Line, output: &Tensor, threshold: f64) -> Result<(), ValidationError> {
        let bad = |reason: String| ValidationError::Line { line: line.number, reason };
        match self {
            Tally::Accuracy { correct, rows } => {
                let predicted = predictions(output, threshold).map_err(ValidationError::Output)?;
                check_rows(line, predicted.len(), &output.name)?;
                for (i, (p, e)) in predicted.iter().zip(&line.expected).enumerate() {
                    let want = label(e).ok_or_else(|| {
                        bad(format!("expected[{i}] must be a class label (an integer or a boolean), got {e}"))
                    })?;
                    *correct += usize::from(*p == want);
                }
                *rows += predicted.len();
            }
            Tally::MaxAbsDiff { rows, worst } => {
                let (count, values) = row_values(output).map_err(ValidationError::Output)?;
                check_rows(line, count, &output.name)?;
                let width = values.len().checked_div(count).unwrap_or(0);
                for (i, e) in line.expected.iter().enumerate() {
                    let mut want = Vec::with_capacity(width);
                    let row = values.get(i * width..(i + 1) * width).unwrap_or_default();
                    if !flatten(e, &mut want) || want.len() != row.len() {
                        return Err(bad(format!(
                            "expected[{i}] must hold the row's {} number(s) of output '{}', got {e}",
                            row.len(),
                            output.name
                        )));
                    }
                    let diff = row.iter().zip(&want).map(|(a, b)| abs_diff(*a, *b)).fold(0.0, f64::max);
                    if worst.is_none_or(|w| diff > w.diff) {
                        *worst = Some(Worst { diff, row: *rows + i + 1, line: line.number });
                    }
                }
                *rows += count;
            }
        }
        Ok(())
    }

    /// The verdict on the whole set under `rule`; `output` names the judged output.
    pub fn verdict(&self, rule: ValidationRule, output: &str) -> Verdict {
        match (self, rule) {
            (Tally::Accuracy { correct, rows }, ValidationRule::MinAccuracy(min)) => {
                let accuracy = if *rows == 0 { 0.0 } else { *correct as f64 / *rows as f64 };
                let passed = *rows > 0 && accuracy >= min;
                let judged = if passed { "meets" } else { "below" };
                Verdict {
                    passed,
                    figures: format!(
                        "accuracy {accuracy:.4} ({correct} of {rows} rows) on output '{output}', {judged} min_accuracy {min}"
                    ),
                }
            }
            (Tally::MaxAbsDiff { rows, worst }, ValidationRule::MaxAbsDiff(max)) => {
                let w = worst.unwrap_or(Worst { diff: f64::INFINITY, row: 0, line: 0 });
                let passed = *rows > 0 && w.diff <= max;
                let judged = if passed { "within" } else { "above" };
                Verdict {
                    passed,
                    figures: format!(
                        "max abs diff {} at row {} (line {}) of output '{output}' over {rows} rows, {judged} max_abs_diff {max}",
                        number(w.diff),
                        w.row,
                        w.line
                    ),
                }
            }
            // `Tally::new` pairs them; a mismatch is a bug, judged as a failure rather than a panic.
            _ => Verdict {
                passed: false,
                figures: "internal error: the tally does not match the rule".to_string(),
            },
        }
    }
}

fn check_rows(line: &Line, rows: usize, output: &str) -> Result<(), ValidationError> {
    if rows == line.expected.len() {
        return Ok(());
    }
    Err(ValidationError::Line {
        line: line.number,
        reason: format!(
            "'expected' has {} value(s) but output '{output}' has {rows} row(s)",
            line.expected.len()
        ),
    })
}

/// One class per row (see the module docs).
fn predictions(t: &Tensor, threshold: f64) -> Result<Vec<f64>, String> {
    let values =
        t.data.to_f64_vec().ok_or_else(|| format!("output '{}' is BYTES; it has no classes", t.name))?;
    let float = t.datatype().is_float();
    match t.shape.as_slice() {
        [_, classes] if float && *classes >= 2 => {
            Ok(values.chunks(*classes).map(|row| argmax(row).map_or(f64::NAN, |i| i as f64)).collect())
        }
        [] | [_] | [_, 1] if float => {
            Ok(values.iter().map(|&v| if v >= threshold { 1.0 } else { 0.0 }).collect())
        }
        [] | [_] | [_, 1] => Ok(values),
        shape => Err(format!(
            "output '{}' ({} {shape:?}) has no class per row: min_accuracy needs class scores [batch, classes], one score [batch] or an integer class [batch]; judge it with max_abs_diff",
            t.name,
            t.datatype()
        )),
    }
}

/// The output's rows (a 0-d tensor is one row) and all its values.
fn row_values(t: &Tensor) -> Result<(usize, Vec<f64>), String> {
    let values = t
        .data
        .to_f64_vec()
        .ok_or_else(|| format!("output '{}' is BYTES; max_abs_diff needs numbers", t.name))?;
    Ok((t.shape.first().copied().unwrap_or(1), values))
}

/// The index of the largest value (NaN never wins; the first of equals does).
fn argmax(row: &[f64]) -> Option<usize> {
    row.iter()
        .enumerate()
        .filter(|(_, v)| !v.is_nan())
        .fold(None, |best: Option<(usize, f64)>, (i, &v)| match best {
            Some((_, b)) if b >= v => best,
            _ => Some((i, v)),
        })
        .map(|(i, _)| i)
}

/// An expected class label: an integral number, or a boolean (1/0).
fn label(v: &Value) -> Option<f64> {
    match v {
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::Number(n) => n.as_f64().filter(|x| x.fract() == 0.0),
        _ => None,
    }
}

/// Every number of `v`, nested arrays flattened; false when something else is in it.
fn flatten(v: &Value, out: &mut Vec<f64>) -> bool {
    match v {
        Value::Number(n) => n.as_f64().map(|x| out.push(x)).is_some(),
        Value::Bool(b) => {
            out.push(if *b { 1.0 } else { 0.0 });
            true
        }
        Value::Array(items) => items.iter().all(|i| flatten(i, out)),
        _ => false,
    }
}

/// |a − b|, where equal values (infinities included) differ by 0 and a NaN on one side only
/// differs by infinity.
fn abs_diff(a: f64, b: f64) -> f64 {
    if a == b || (a.is_nan() && b.is_nan()) {
        0.0
    } else if a.is_nan() || b.is_nan() {
        f64::INFINITY
    } else {
        (a - b).abs()
    }
}

/// A figure short enough to read: 4 decimals in the usual range, scientific outside it.
fn number(x: f64) -> String {
    if x == 0.0 || (1e-3..1e6).contains(&x.abs()) { format!("{x:.4}") } else { format!("{x:.3e}") }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn line(number: usize, expected: Value) -> Line {
        let text = format!("{{\"inputs\": [], \"expected\": {expected}}}");
        let mut set = super::super::dataset::Dataset::parse(text.as_bytes()).unwrap();
        let mut l = set.lines.remove(0);
        l.number = number;
        l
    }

    fn tensor(shape: Vec<usize>, data: TensorData) -> Tensor {
        Tensor { name: "out".to_string(), shape, data }
    }

    #[test]
    fn class_scores_are_judged_by_their_argmax() {
        let mut t = Tally::new(ValidationRule::MinAccuracy(0.9));
        let scores = tensor(vec![4, 2], TensorData::F32(vec![0.9, 0.1, 0.2, 0.8, 0.6, 0.4, 0.3, 0.7]));
        t.add(&line(1, serde_json::json!([0, 1, 1, true])), &scores, 0.5).unwrap();
        let v = t.verdict(ValidationRule::MinAccuracy(0.9), "out");
        assert!(!v.passed);
        assert_eq!(v.figures, "accuracy 0.7500 (3 of 4 rows) on output 'out', below min_accuracy 0.9");
        assert!(t.verdict(ValidationRule::MinAccuracy(0.75), "out").passed);
    }

    #[test]
    fn single_scores_use_the_threshold_and_integers_are_the_class() {
        let mut t = Tally::new(ValidationRule::MinAccuracy(1.0));
        let scores = tensor(vec![3, 1], TensorData::F32(vec![0.2, 0.55, 0.7]));
        t.add(&line(1, serde_json::json!([0, 0, 1])), &scores, 0.6).unwrap();
        let ints = tensor(vec![2], TensorData::I64(vec![3, 7]));
        t.add(&line(2, serde_json::json!([3, 7])), &ints, 0.6).unwrap();
        assert!(t.verdict(ValidationRule::MinAccuracy(1.0), "out").passed);
    }

    #[test]
    fn a_row_count_or_label_that_does_not_fit_names_its_line() {
        let mut t = Tally::new(ValidationRule::MinAccuracy(0.5));
        let ints = tensor(vec![2], TensorData::I64(vec![1, 0]));
        let e = t.add(&line(7, serde_json::json!([1])), &ints, 0.5).unwrap_err();
        assert!(matches!(e, ValidationError::Line { line: 7, .. }), "{e}");
        let e = t.add(&line(8, serde_json::json!([1, "no"])), &ints, 0.5).unwrap_err();
        assert!(matches!(e, ValidationError::Line { line: 8, .. }), "{e}");
        let wide = tensor(vec![1, 2, 2], TensorData::F32(vec![0.0; 4]));
        assert!(matches!(
            t.add(&line(9, serde_json::json!([1])), &wide, 0.5),
            Err(ValidationError::Output(_))
        ));
    }

    #[test]
    fn max_abs_diff_reports_the_worst_row_over_the_whole_set() {
        let rule = ValidationRule::MaxAbsDiff(1e-3);
        let mut t = Tally::new(rule);
        let first = tensor(vec![2, 2], TensorData::F32(vec![0.5, 0.5, 0.25, 0.75]));
        t.add(&line(1, serde_json::json!([[0.5, 0.5], [0.25, 0.75]])), &first, 0.5).unwrap();
        let second = tensor(vec![1, 2], TensorData::F64(vec![0.2, 0.8]));
        t.add(&line(2, serde_json::json!([[0.5, 0.5]])), &second, 0.5).unwrap();
        let v = t.verdict(rule, "p");
        assert!(!v.passed);
        assert_eq!(
            v.figures,
            "max abs diff 0.3000 at row 3 (line 2) of output 'p' over 3 rows, above max_abs_diff 0.001"
        );
        let e = t.add(&line(3, serde_json::json!([[0.5]])), &second, 0.5).unwrap_err();
        assert!(matches!(e, ValidationError::Line { line: 3, .. }), "{e}");
    }

    #[test]
    fn nan_differs_from_a_number_and_equals_nan() {
        assert_eq!(abs_diff(f64::NAN, f64::NAN), 0.0);
        assert_eq!(abs_diff(f64::NAN, 1.0), f64::INFINITY);
        assert_eq!(abs_diff(f64::INFINITY, f64::INFINITY), 0.0);
        assert_eq!(number(3e-7), "3.000e-7");
    }
}
