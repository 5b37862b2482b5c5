//! Shadow traffic: a sampled copy of a routed request runs on each shadow version, on the same
//! decoded inputs, after the answer is on its way; its outputs are compared with that answer.
//!
//! Off the critical path by construction: a shadow has its own queue and worker threads, and
//! each model its own budget of shadow requests in flight. When the budget is full the copy is
//! dropped and counted, never queued; a shadow that errors, stalls or panics only shows up in
//! `gateway_shadow_requests_total{outcome}`.

mod compare;

use std::sync::Arc;
use std::time::{Duration, Instant};

pub use compare::{Comparison, TOLERANCE, argmax, compare, is_class_scores};

use crate::registry::{ServedModel, ServedVersion};
use crate::tasks::Tracker;
use crate::telemetry::{self, Outcome, Role, ShadowOutcome};
use crate::tensor::Tensor;

/// Runs mirrored requests; tracks them so shutdown can wait for them.
#[derive(Default)]
pub struct Shadows {
    tasks: Arc<Tracker>,
}

/// Called with a shadow's version and outputs when it answers (prediction monitoring).
pub type OnOutputs = Arc<dyn Fn(u64, &[Tensor]) + Send + Sync>;

impl Shadows {
    /// Hands a copy of the request to every shadow `model` samples for it; returns at once.
    pub fn mirror(
        &self,
        model: &ServedModel,
        inputs: &Arc<Vec<Tensor>>,
        answer: &Arc<Vec<Tensor>>,
        timeout: Duration,
        answered_by: Role,
        on_outputs: &OnOutputs,
    ) {
        for version in model.routing.sample_shadows(fastrand::f64) {
            let Some(shadow) = model.version(version).cloned() else { continue };
            let Ok(permit) = model.shadow_budget.clone().try_acquire_owned() else {
                telemetry::count_shadow(&model.name, version, ShadowOutcome::Dropped);
                continue;
            };
            let (inputs, answer, on_outputs) = (inputs.clone(), answer.clone(), on_outputs.clone());
            let guard = self.tasks.enter();
            tokio::spawn(async move {
                if let Some(outputs) =
                    run_one(&shadow, inputs, &answer, answered_by, Instant::now() + timeout).await
                {
                    on_outputs(shadow.version, &outputs);
                }
                drop(permit);
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
        let Ok(permit) = model.shadow_budget.clone().try_acquire_owned() else { return false };
        let (inputs, answer, guard) = (inputs.clone(), answer.clone(), self.tasks.enter());
        tokio::spawn(async move {
            if let Ok(done) = reference.infer(inputs, Instant::now() + timeout).await {
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

/// Runs one mirrored copy and records how it went; returns its outputs when it answered.
async fn run_one(
    shadow: &ServedVersion,
    inputs: Arc<Vec<Tensor>>,
    answer: &[Tensor],
    answered_by: Role,
    deadline: Instant,
) -> Option<Vec<Tensor>> {
    let started = Instant::now();
    let metrics = shadow.metrics.role(Role::Shadow);
    match shadow.infer(inputs, deadline).await {
        Ok(done) => {
            metrics.queue.record(done.queue_time.as_secs_f64());
            metrics.finish(Outcome::Ok, started.elapsed());
            telemetry::count_shadow(&shadow.model, shadow.version, ShadowOutcome::Ok);
            for c in compare(answer, &done.outputs) {
                telemetry::record_comparison(
                    &shadow.model,
                    shadow.version,
                    answered_by,
                    &c.output,
                    c.matched,
                    &c.abs_diffs,
                );
            }
            Some(done.outputs)
        }
        Err(e) => {
            metrics.finish(Outcome::ServerError, started.elapsed());
            telemetry::count_shadow(&shadow.model, shadow.version, ShadowOutcome::Error);
            tracing::debug!(model = %shadow.model, version = shadow.version, error = %e, "shadow request failed");
            None
        }
    }
}
