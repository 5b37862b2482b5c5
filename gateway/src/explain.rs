//! Explanations by occlusion (`POST /v2/models/{m}/explain`): each feature of each row is
//! replaced by its baseline value, every variant runs with the original rows as ONE batch
//! through the version's queue, and a feature's attribution is how much the monitored output's
//! score drops when it is occluded (original minus occluded).
//!
//! Only for models whose inputs are feature vectors: every input numeric, `[rows, features]`,
//! on a version with a dynamic batch dimension. The features of all inputs together are bounded
//! by `monitor.max_features`, so one explanation is one queued job of at most
//! `rows × (max_features + 1)` rows. The score is the monitored output's positive-class score
//! (class-score outputs) or its value (one score per row). The same inputs give the same
//! batch, so the same attributions.
//!
//! Occlusion is not SHAP: each feature is judged alone against the baseline, so features that
//! only matter together, or correlated features that stand in for each other, share or lose
//! credit. A feature's baseline value is its mean in `monitor.input_baseline` (see
//! `monitor::input_means`), else 0.
//!
//! Knows nothing of HTTP: the front end decodes, picks the version and encodes.

use std::sync::Arc;

use crate::batching::Expected;
use crate::config::MonitorConfig;
use crate::deadline::Deadline;
use crate::inference::infer_error;
use crate::monitor::input_means;
use crate::protocol::ApiError;
use crate::registry::ServedVersion;
use crate::tensor::{DataType, Tensor, TensorData};

/// What an explanation answers: the outputs for the original rows, and per input a tensor of
/// attributions (FP64) shaped like it.
pub struct Explanation {
    pub outputs: Vec<Tensor>,
    pub attributions: Vec<Tensor>,
}

/// Where each input's features sit among all features.
struct Plan {
    rows: usize,
    /// Per input: its feature count and the index of its first feature.
    inputs: Vec<(usize, usize)>,
    features: usize,
}

/// Explains `inputs` (decoded against `version`'s signature) on `version`.
pub async fn explain(
    version: &ServedVersion,
    inputs: &[Tensor],
    cfg: &MonitorConfig,
    deadline: &Deadline,
    expected: Expected,
) -> Result<Explanation, ApiError> {
    let plan = plan(version, inputs, cfg.max_features)?;
    let means = input_means(cfg);
    let baseline = |input: usize, column: usize| {
        let name = inputs.get(input).map(|t| t.name.as_str());
        let means = means.as_ref().and_then(|m| m.get(name?));
        means.and_then(|m| m.get(column).copied()).filter(|v| v.is_finite()).unwrap_or(0.0)
    };
    let batch = occluded(inputs, &plan, baseline);
    let done = version
        .infer(Arc::new(batch), deadline.at(), expected)
        .await
        .map_err(|e| infer_error(e, version, deadline))?;
    let monitored = done.outputs.iter().find(|t| t.name == cfg.output).ok_or_else(|| {
        ApiError::Internal(format!("version {} gave no monitored output {:?}", version.version, cfg.output))
    })?;
    let scores = scores(monitored, cfg.positive_class, plan.rows * (plan.features + 1))?;
    let outputs = done.outputs.iter().map(|t| first_rows(t, plan.rows)).collect::<Result<_, _>>()?;
    Ok(Explanation { outputs, attributions: attributions(inputs, &plan, &scores) })
}

fn plan(version: &ServedVersion, inputs: &[Tensor], max_features: usize) -> Result<Plan, ApiError> {
    let refuse = |why: String| {
        ApiError::Mismatch(format!(
            "model '{}' version {} cannot be explained: {why}",
            version.model, version.version
        ))
    };
    if !version.signature.is_batchable() {
        return Err(refuse("its inputs and outputs have no dynamic batch dimension".into()));
    }
    let rows = inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(0);
    let mut planned = Vec::with_capacity(inputs.len());
    let mut features = 0;
    for t in inputs {
        if t.shape.len() != 2
            || t.shape[0] != rows
            || matches!(t.datatype(), DataType::Bytes | DataType::Bool)
        {
            return Err(refuse(format!(
                "input {:?} is {} {:?}; explanations take numeric feature vectors [rows, features]",
                t.name,
                t.datatype().as_str(),
                t.shape
            )));
        }
        planned.push((t.shape[1], features));
        features += t.shape[1];
    }
    if rows == 0 || features == 0 {
        return Err(refuse("no rows or no features".into()));
    }
    if features > max_features {
        return Err(refuse(format!(
            "{features} features, more than monitor.max_features ({max_features}) occluded per explanation"
        )));
    }
    Ok(Plan { rows, inputs: planned, features })
}

/// The batch: the original rows, then for each feature k (over all inputs, in order) the rows
/// with feature k set to `baseline(input, column)`.
fn occluded(inputs: &[Tensor], plan: &Plan, baseline: impl Fn(usize, usize) -> f64) -> Vec<Tensor> {
    let variants = plan.features + 1;
    inputs
        .iter()
        .zip(&plan.inputs)
        .enumerate()
        .map(|(i, (t, &(width, first)))| {
            let mut data = TensorData::with_capacity(t.datatype(), t.data.len() * variants);
            for _ in 0..variants {
                data.extend_from(&t.data);
            }
            for column in 0..width {
                let block = (first + column + 1) * plan.rows;
                let value = baseline(i, column);
                for r in 0..plan.rows {
                    set(&mut data, (block + r) * width + column, value);
                }
            }
            Tensor { name: t.name.clone(), shape: vec![plan.rows * variants, width], data }
        })
        .collect()
}

/// Sets element `i` to `value`, converted to the tensor's type (integers truncate).
fn set(data: &mut TensorData, i: usize, value: f64) {
    macro_rules! put {
        ($($variant:ident => $convert:expr),* $(,)?) => {
            match data {
                $(TensorData::$variant(v) => if let Some(x) = v.get_mut(i) { *x = $convert(value) },)*
                TensorData::Bool(_) | TensorData::Bytes(_) => {}
            }
        };
    }
    put!(
        U8 => |v: f64| v as u8, U16 => |v: f64| v as u16, U32 => |v: f64| v as u32, U64 => |v: f64| v as u64,
        I8 => |v: f64| v as i8, I16 => |v: f64| v as i16, I32 => |v: f64| v as i32, I64 => |v: f64| v as i64,
        F16 => half::f16::from_f64, Bf16 => half::bf16::from_f64, F32 => |v: f64| v as f32, F64 => |v: f64| v,
    );
}

/// One score per batch row: the `positive` class's score of class scores, or the value of a
/// one-score output.
fn scores(t: &Tensor, positive: u64, rows: usize) -> Result<Vec<f64>, ApiError> {
    let values = t.data.to_f64_vec().unwrap_or_default();
    let width = t.row_len().unwrap_or(0);
    let picked: Vec<f64> = match width {
        1 => values,
        w if w >= 2 && t.shape.len() == 2 => {
            values.chunks(w).filter_map(|r| r.get(positive as usize).copied()).collect()
        }
        _ => Vec::new(),
    };
    if picked.len() != rows {
        return Err(ApiError::Mismatch(format!(
            "the monitored output {:?} ({:?}) is not one score per row; explanations need one",
            t.name, t.shape
        )));
    }
    Ok(picked)
}

/// `t`'s first `rows` rows.
fn first_rows(t: &Tensor, rows: usize) -> Result<Tensor, ApiError> {
    let len = t.row_len().and_then(|w| w.checked_mul(rows));
    let data = len.and_then(|n| t.data.slice(0..n));
    let data =
        data.ok_or_else(|| ApiError::Internal(format!("output {:?} has fewer rows than asked", t.name)))?;
    let mut shape = t.shape.clone();
    if let Some(first) = shape.first_mut() {
        *first = rows;
    }
    Ok(Tensor { name: t.name.clone(), shape, data })
}

/// Per input, per row and feature: the original row's score minus the occluded one's.
fn attributions(inputs: &[Tensor], plan: &Plan, scores: &[f64]) -> Vec<Tensor> {
    inputs
        .iter()
        .zip(&plan.inputs)
        .map(|(t, &(width, first))| {
            let mut data = Vec::with_capacity(plan.rows * width);
            for r in 0..plan.rows {
                for column in 0..width {
                    let occluded =
                        scores.get((first + column + 1) * plan.rows + r).copied().unwrap_or(f64::NAN);
                    data.push(scores.get(r).copied().unwrap_or(f64::NAN) - occluded);
                }
            }
            Tensor { name: t.name.clone(), shape: vec![plan.rows, width], data: TensorData::F64(data) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_batch_holds_the_rows_then_one_block_per_occluded_feature() {
        let x =
            Tensor { name: "x".into(), shape: vec![2, 2], data: TensorData::F32(vec![1.0, 2.0, 3.0, 4.0]) };
        let plan = Plan { rows: 2, inputs: vec![(2, 0)], features: 2 };
        let batch = occluded(std::slice::from_ref(&x), &plan, |_, c| -(c as f64) - 1.0);
        assert_eq!(batch[0].shape, vec![6, 2]);
        let want = vec![1.0, 2.0, 3.0, 4.0, -1.0, 2.0, -1.0, 4.0, 1.0, -2.0, 3.0, -2.0];
        assert_eq!(batch[0].data, TensorData::F32(want));
        // Row r's attribution for feature k: score[r] - score[(k + 1) * rows + r].
        let scores = [0.9, 0.8, 0.1, 0.8, 0.9, 0.2];
        let a = attributions(&[x], &plan, &scores);
        let TensorData::F64(a) = &a[0].data else { panic!() };
        let rounded: Vec<f64> = a.iter().map(|v| (v * 10.0).round() / 10.0).collect();
        assert_eq!(rounded, vec![0.8, 0.0, 0.0, 0.6]);
    }
}
