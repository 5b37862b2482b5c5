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

impl Shadows {
    /// Hands a copy of the request to every shadow `model` samples for it; returns at once.
    pub fn mirror(
        &self,
        model: &ServedModel,
        inputs: &Arc<Vec<Tensor>>,
        answer: &Arc<Vec<Tensor>>,
        timeout: Duration,
    ) {
        for version in model.routing.sample_shadows(fastrand::f64) {
            let Some(shadow) = model.version(version).cloned() else { continue };
            let Ok(permit) = model.shadow_budget.clone().try_acquire_owned() else {
                telemetry::count_shadow(&model.name, version, ShadowOutcome::Dropped);
                continue;
            };
            let (inputs, answer, guard) = (inputs.clone(), answer.clone(), self.tasks.enter());
            tokio::spawn(async move {
                run_one(&shadow, inputs, &answer, Instant::now() + timeout).await;
                drop(permit);
                drop(guard);
            });
        }
    }

    /// Resolves when no shadow request is running.
    pub async fn idle(&self) {
        self.tasks.idle().await;
    }
}

async fn run_one(shadow: &ServedVersion, inputs: Arc<Vec<Tensor>>, answer: &[Tensor], deadline: Instant) {
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
                    &c.output,
                    c.matched,
                    &c.abs_diffs,
                );
            }
        }
        Err(e) => {
            metrics.finish(Outcome::ServerError, started.elapsed());
            telemetry::count_shadow(&shadow.model, shadow.version, ShadowOutcome::Error);
            tracing::debug!(model = %shadow.model, version = shadow.version, error = %e, "shadow request failed");
        }
    }
}
