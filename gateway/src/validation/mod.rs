//! The validation gate (`[models.X.validation]`): a hold-out set every version must pass before a
//! snapshot routes it. Owns reading the set (`dataset`), running it through a version
//! (`Backend`, the narrow interface a served version offers), judging the answers (`judge`) and
//! the verdict each version keeps (`VerdictCell`), so an unchanged version and set are not run
//! again.
//!
//! Depends on `config`, `protocol` (the set's inputs are decoded exactly as an infer request's)
//! and `tensor`; knows nothing of the registry, routing or the request path. `registry::prepare`
//! decides which versions are gated and turns failures into the reload's problems.

mod dataset;
mod judge;

use std::sync::Mutex;

pub use dataset::Dataset;
pub use judge::Verdict;

use crate::config::ValidationConfig;
use crate::tensor::{ModelSignature, Tensor};

/// What the gate needs of a version: its signature, and a blocking run of one line's inputs
/// (in signature order) returning every output in signature order.
pub trait Backend {
    fn signature(&self) -> &ModelSignature;
    fn run_blocking(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String>;
}

/// Why a version could not be judged (as opposed to judged and failed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValidationError {
    /// The set as a whole: missing, unreadable, empty.
    #[error("{reason}")]
    Unreadable { reason: String },
    /// One line of the set: not JSON, inputs the version does not take, expected values that do
    /// not fit the output.
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    /// The judged output cannot be judged by the rule (absent, BYTES, no class per row).
    #[error("{0}")]
    Output(String),
    /// The version failed to run a line.
    #[error("line {line}: the version failed to run it: {reason}")]
    Run { line: usize, reason: String },
}

/// Everything a verdict depends on besides the version itself: the rule, the output, the set's
/// path and content, and the threshold one-score outputs are read with.
#[derive(Debug, Clone, PartialEq)]
pub struct VerdictKey {
    pub config: ValidationConfig,
    pub digest: u64,
    pub threshold: f64,
}

/// A version's last verdict and what it was reached on: kept on the served version, so a reload
/// that keeps the version and the set reuses it instead of running the set again.
#[derive(Debug, Default)]
pub struct VerdictCell(Mutex<Option<(VerdictKey, Verdict)>>);

impl VerdictCell {
    /// The verdict reached on exactly `key`, if any.
    pub fn get(&self, key: &VerdictKey) -> Option<Verdict> {
        let kept = self.0.lock().ok()?;
        kept.as_ref().filter(|(k, _)| k == key).map(|(_, v)| v.clone())
    }

    /// The last verdict, whatever it was reached on (for `check-config`'s report).
    pub fn last(&self) -> Option<Verdict> {
        self.0.lock().ok()?.as_ref().map(|(_, v)| v.clone())
    }

    pub fn set(&self, key: VerdictKey, verdict: Verdict) {
        if let Ok(mut kept) = self.0.lock() {
            *kept = Some((key, verdict));
        }
    }
}

/// Runs every line of `set` through `version` and judges the judged output under the rule.
/// Blocking: one line at a time through the version's queue.
pub fn judge(
    version: &dyn Backend,
    set: &Dataset,
    config: &ValidationConfig,
    threshold: f64,
) -> Result<Verdict, ValidationError> {
    let signature = version.signature();
    let Some((index, _)) = signature.output(&config.output) else {
        let outputs: Vec<&str> = signature.outputs.iter().map(|o| o.name.as_str()).collect();
        return Err(ValidationError::Output(format!(
            "has no output '{}' (its outputs: {outputs:?})",
            config.output
        )));
    };
    let mut tally = judge::Tally::new(config.rule);
    for line in &set.lines {
        let inputs = line.inputs(signature)?;
        let outputs = version
            .run_blocking(inputs)
            .map_err(|reason| ValidationError::Run { line: line.number, reason })?;
        let output = outputs.get(index).ok_or_else(|| ValidationError::Run {
            line: line.number,
            reason: format!("the answer has no output '{}'", config.output),
        })?;
        tally.add(line, output, threshold)?;
    }
    Ok(tally.verdict(config.rule, &config.output))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::config::ValidationRule;
    use crate::tensor::{DataType, TensorData, TensorSpec};

    /// A version that answers each row with the sum of its two features as a single score.
    struct Sum;

    impl Backend for Sum {
        fn signature(&self) -> &ModelSignature {
            static SIGNATURE: std::sync::OnceLock<ModelSignature> = std::sync::OnceLock::new();
            SIGNATURE.get_or_init(|| ModelSignature {
                inputs: vec![TensorSpec::new("x", DataType::F32, vec![-1, 2])],
                outputs: vec![TensorSpec::new("score", DataType::F32, vec![-1])],
            })
        }

        fn run_blocking(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
            let x = inputs.first().ok_or("no input")?;
            let TensorData::F32(v) = &x.data else { return Err("not FP32".to_string()) };
            let sums: Vec<f32> = v.chunks(2).map(|r| r.iter().sum()).collect();
            Ok(vec![Tensor {
                name: "score".to_string(),
                shape: vec![sums.len()],
                data: TensorData::F32(sums),
            }])
        }
    }

    fn config(rule: ValidationRule) -> ValidationConfig {
        ValidationConfig { dataset: PathBuf::from("set.jsonl"), output: "score".to_string(), rule }
    }

    const SET: &str = r#"{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [0.1, 0.2, 0.4, 0.4]}], "expected": [0, 1]}
{"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 2], "data": [0.3, 0.3, 0.0, 0.1]}], "expected": [0, 0]}
"#;

    #[test]
    fn a_version_is_judged_over_every_line() {
        let set = Dataset::parse(SET.as_bytes()).unwrap();
        // Sums 0.3, 0.8, 0.6, 0.1 against 0.5: classes 0, 1, 1, 0; the third is wrong.
        let v = judge(&Sum, &set, &config(ValidationRule::MinAccuracy(0.7)), 0.5).unwrap();
        assert!(v.passed, "{}", v.figures);
        assert!(v.figures.starts_with("accuracy 0.7500 (3 of 4 rows)"), "{}", v.figures);
        let v = judge(&Sum, &set, &config(ValidationRule::MinAccuracy(0.9)), 0.5).unwrap();
        assert!(!v.passed);
        // A higher threshold reads 0.6 as class 0: every row right.
        let v = judge(&Sum, &set, &config(ValidationRule::MinAccuracy(1.0)), 0.7).unwrap();
        assert!(v.passed, "{}", v.figures);
    }

    #[test]
    fn a_missing_output_is_an_error_not_a_failure() {
        let set = Dataset::parse(SET.as_bytes()).unwrap();
        let mut c = config(ValidationRule::MinAccuracy(0.5));
        c.output = "label".to_string();
        let e = judge(&Sum, &set, &c, 0.5).unwrap_err();
        assert!(matches!(e, ValidationError::Output(_)), "{e}");
        assert!(e.to_string().contains("'label'"), "{e}");
    }

    #[test]
    fn a_verdict_is_kept_only_for_its_own_key() {
        let cell = VerdictCell::default();
        let key = VerdictKey { config: config(ValidationRule::MinAccuracy(0.5)), digest: 1, threshold: 0.5 };
        let verdict = Verdict { passed: true, figures: "fine".to_string() };
        cell.set(key.clone(), verdict.clone());
        assert_eq!(cell.get(&key), Some(verdict));
        assert_eq!(cell.get(&VerdictKey { digest: 2, ..key.clone() }), None);
        assert_eq!(cell.get(&VerdictKey { threshold: 0.6, ..key }), None);
    }
}
