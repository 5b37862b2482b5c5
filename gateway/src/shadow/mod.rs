//! Shadow traffic: a sampled copy of a routed request runs on each shadow version, on the same
//! decoded inputs, after the answer is on its way; its outputs are compared with that answer.
//!
//! Off the critical path by construction: a shadow has its own queue and worker threads, and
//! each model its own budget of shadow requests in flight. When the budget is full the copy is
//! dropped and counted, never queued; a shadow that errors, stalls or panics only shows up in
//! `gateway_shadow_requests_total{outcome}`.
//!
//! A sampled request's copies are traced: one `shadow {version}` span each (from the hand-off
//! to the shadow's answer, or a zero-length one saying it was dropped), with the copy's own
//! `queue` and `onnxruntime.run` spans beneath it.

mod compare;

use std::sync::Arc;
use std::time::Duration;

pub use compare::{Comparison, TOLERANCE, argmax, compare, is_class_scores};

use crate::batching::InferError;
use crate::deadline::Deadline;
use crate::registry::{ServedModel, ServedVersion, ShadowPermit};
use crate::tasks::Tracker;
use crate::telemetry::{Outcome, Role, ShadowOutcome};
use crate::tensor::Tensor;
use crate::trace::{ChildSpan, JobTrace, Kind};

/// Runs mirrored requests; tracks them so shutdown can wait for them.
#[derive(Default)]
pub struct Shadows {
    tasks: Arc<Tracker>,
}

/// Called with a shadow's version and outputs when it answers (prediction monitoring).
pub type OnOutputs = Arc<dyn Fn(u64, &[Tensor]) + Send + Sync>;

impl Shadows {
    /// Hands a copy of the request to every shadow `model` samples for it; returns at once.
    /// `trace` (sampled requests only) receives a span per copy.
    #[allow(clippy::too_many_arguments)]
    pub fn mirror(
        &self,
        model: &ServedModel,
        inputs: &Arc<Vec<Tensor>>,
        answer: &Arc<Vec<Tensor>>,
        timeout: Duration,
        answered_by: Role,
        on_outputs: &OnOutputs,
        trace: Option<&JobTrace>,
    ) {
        for version in model.routing.sample_shadows(fastrand::f64) {
            // An ejected remote shadow gets no copies until it is back.
            let Some(shadow) = model.version(version).filter(|v| v.available()).cloned() else { continue };
            let span = trace.map(|t| shadow_span(t, version));
            let Some(permit) = model.shadow_budget.try_acquire() else {
                shadow.metrics.count_shadow(ShadowOutcome::Dropped);
                if let Some(span) = span {
                    span.end(Some("dropped: the model's shadow_max_in_flight copies are running".into()));
                }
                continue;
            };
            let (inputs, answer, on_outputs) = (inputs.clone(), answer.clone(), on_outputs.clone());
            let guard = self.tasks.enter();
            tokio::spawn(async move {
                let deadline = Deadline::after(timeout);
                let job = span.as_ref().map(ChildSpan::job);
                let result = run_one(&shadow, inputs, &answer, answered_by, deadline, permit, job).await;
                if let Some(span) = span {
                    span.end(result.as_ref().err().map(ToString::to_string));
                }
                if let Ok(outputs) = result {
                    on_outputs(shadow.version, &outputs);
                }
                drop(guard);
            });
        }
    }

    /// Runs a copy on `reference` (within `model`'s shadow budget) and reports whether its
    /// `output` (every output, for `None`) agrees with `answer`; false when the budget was full
    /// and nothing ran. Nothing is reported when the copy fails. Rollouts use it to compare a
    /// candidate with its primary.
    #[allow(clippy::too_many_arguments)]
    pub fn compare(
        &self,
        model: &ServedModel,
        reference: Arc<ServedVersion>,
        inputs: &Arc<Vec<Tensor>>,
        answer: &Arc<Vec<Tensor>>,
        output: Option<String>,
        timeout: Duration,
        on_result: impl FnOnce(bool) + Send + 'static,
    ) -> bool {
        let Some(permit) = model.shadow_budget.try_acquire() else { return false };
        let (inputs, answer, guard) = (inputs.clone(), answer.clone(), self.tasks.enter());
        tokio::spawn(async move {
            let deadline = Deadline::after(timeout);
            let run = reference.infer(inputs, deadline.at(), reference.expect());
            if let Ok(done) = deadline.bound(run).await {
                let agreed = compare(&answer, &done.outputs)
                    .iter()
                    .filter(|c| output.as_deref().is_none_or(|o| c.output == o))
                    .all(|c| c.matched);
                on_result(agreed);
            }
            drop(permit);
            drop(guard);
        });
        true
    }

    /// Resolves when no shadow request is running.
    pub async fn idle(&self) {
        self.tasks.idle().await;
    }
}

/// A copy's span, started when it is handed off.
fn shadow_span(trace: &JobTrace, version: u64) -> ChildSpan {
    let mut span = trace.child(format!("shadow {version}"), Kind::Internal);
    span.set("gateway.version", version);
    span.set("gateway.role", Role::Shadow.as_str());
    span
}

/// Runs one mirrored copy (holding its place in the budget until it is done) and records how
/// it went; returns its outputs when it answered.
async fn run_one(
    shadow: &ServedVersion,
    inputs: Arc<Vec<Tensor>>,
    answer: &[Tensor],
    answered_by: Role,
    deadline: Deadline,
    permit: ShadowPermit,
    trace: Option<JobTrace>,
) -> Result<Vec<Tensor>, InferError> {
    let started = std::time::Instant::now();
    let metrics = &shadow.metrics;
    let result = deadline.bound(shadow.infer_traced(inputs, deadline.at(), shadow.expect(), trace)).await;
    drop(permit);
    match result {
        Ok(done) => {
            let role = metrics.role(Role::Shadow);
            role.queue.record(done.queue_time.as_secs_f64());
            role.finish(Outcome::Ok, started.elapsed());
            metrics.count_shadow(ShadowOutcome::Ok);
            for c in compare(answer, &done.outputs) {
                metrics.record_comparison(&c.output, answered_by, c.matched, &c.abs_diffs);
            }
            Ok(done.outputs)
        }
        Err(e) => {
            metrics.role(Role::Shadow).finish(Outcome::ServerError, started.elapsed());
            metrics.count_shadow(ShadowOutcome::Error);
            tracing::debug!(model = %shadow.model, version = shadow.version, error = %e, "shadow request failed");
            Err(e)
        }
    }
}
