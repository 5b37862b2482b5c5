//! The validation gate in `prepare`: which versions of a model must pass its hold-out set, the
//! verdict each keeps, the metric and the log, and the problems a failure becomes (which refuse a
//! reload, or at start-up leave the model not ready). Reading, running and judging the set
//! belong to `validation`; this file only connects it to served versions.
//!
//! Only `prepare` brings versions into a routing, so this is the one place the gate runs.
//! Rollout steps and promotions (`monitor::controller` through `Registry::reroute`) reuse the
//! snapshot's loaded versions and only move weight between the configured primary and
//! candidate, both gated when the reload that named them was prepared.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use super::ServedVersion;
use crate::batching::InferError;
use crate::config::{ModelConfig, Problem};
use crate::telemetry;
use crate::tensor::{ModelSignature, Tensor};
use crate::validation::{self, Backend, Dataset, ValidationError, VerdictKey};

/// How long one line of the set may take through a version's queue (a new version's queue is
/// empty; a reused one may be serving traffic too).
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// The gate's problems for `model` (none when it has no `validation`): every version its routing
/// sends requests or mirrors to (primary, candidates, shadows; pin-only versions are the
/// operator's own business) that is loaded in `versions` must pass. Blocking.
pub fn problems(model: &ModelConfig, versions: &BTreeMap<u64, Arc<ServedVersion>>) -> Vec<Problem> {
    let Some(config) = &model.validation else { return Vec::new() };
    telemetry::register_validation_runs(&model.name);
    let r = &model.routing;
    let routed: BTreeSet<u64> =
        [r.primary].into_iter().chain(r.candidates.iter().chain(&r.shadows).map(|w| w.version)).collect();
    let gated: Vec<&Arc<ServedVersion>> = routed.iter().filter_map(|v| versions.get(v)).collect();
    if gated.is_empty() {
        return Vec::new();
    }
    let path = format!("models.{}.validation", model.name);
    let set = match Dataset::read(&config.dataset) {
        Ok(set) => set,
        Err(e) => {
            for _ in &gated {
                telemetry::count_validation_run(&model.name, "error");
            }
            return vec![Problem::new(format!("{path}.dataset"), error_message(&e))];
        }
    };
    let threshold = model.monitor.as_ref().map_or(0.5, |m| m.threshold);
    let key = VerdictKey { config: config.clone(), digest: set.digest, threshold };
    gated.into_iter().filter_map(|v| gate(model, v, &set, &key, &path)).collect()
}

/// One version through the gate (or its kept verdict); the problem when it does not pass.
fn gate(
    model: &ModelConfig,
    v: &ServedVersion,
    set: &Dataset,
    key: &VerdictKey,
    path: &str,
) -> Option<Problem> {
    let version = v.version;
    if let Some(kept) = v.verdict.get(key) {
        tracing::debug!(model = %model.name, version, passed = kept.passed, "validation verdict kept: {}", kept.figures);
        return (!kept.passed).then(|| Problem::new(path, format!("version {version}: {}", kept.figures)));
    }
    let started = Instant::now();
    match validation::judge(v, set, &key.config, key.threshold) {
        Ok(verdict) => {
            let outcome = if verdict.passed { "passed" } else { "failed" };
            telemetry::count_validation_run(&model.name, outcome);
            tracing::info!(
                model = %model.name,
                version,
                outcome,
                elapsed_ms = started.elapsed().as_millis() as u64,
                "validation gate: version {version}: {}",
                verdict.figures
            );
            v.verdict.set(key.clone(), verdict.clone());
            (!verdict.passed).then(|| Problem::new(path, format!("version {version}: {}", verdict.figures)))
        }
        Err(e) => {
            // Not kept: a run that could not finish may succeed on the next reload.
            telemetry::count_validation_run(&model.name, "error");
            Some(Problem::new(error_path(path, &e), format!("version {version}: {}", error_message(&e))))
        }
    }
}

fn error_path(path: &str, e: &ValidationError) -> String {
    match e {
        ValidationError::Unreadable { .. } | ValidationError::Line { .. } => format!("{path}.dataset"),
        ValidationError::Output(_) => format!("{path}.output"),
        ValidationError::Run { .. } => path.to_string(),
    }
}

fn error_message(e: &ValidationError) -> String {
    format!("the hold-out set could not be judged: {e}")
}

/// A version runs the set through its own queue, on its own worker threads, exactly as it will
/// run requests; `prepare` runs on a blocking thread (or before any runtime, in
/// `check-config`), so waiting for the answer here blocks nothing else.
impl Backend for ServedVersion {
    fn signature(&self) -> &ModelSignature {
        &self.signature
    }

    fn run_blocking(&self, inputs: Vec<Tensor>) -> Result<Vec<Tensor>, String> {
        let deadline = Instant::now() + LINE_TIMEOUT;
        let inputs = Arc::new(inputs);
        loop {
            match block_on(self.infer(inputs.clone(), deadline, self.expect())) {
                Ok(done) => return Ok(done.outputs),
                // A reused version may be busy serving: wait for room rather than fail the gate.
                Err(InferError::QueueFull { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// Drives `future` to completion on the calling thread, parking it between polls. The queue's
/// reply is a plain channel that needs no runtime, so this works on a blocking thread and
/// without any runtime at all.
fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_waits_for_a_reply_from_another_thread() {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(7).unwrap();
        });
        assert_eq!(block_on(rx), Ok(7));
        sender.join().unwrap();
    }

    #[test]
    fn validation_config_is_part_of_the_key() {
        use crate::config::ValidationConfig;
        let config = |min| ValidationConfig {
            dataset: "set.jsonl".into(),
            output: "label".to_string(),
            rule: crate::config::ValidationRule::MinAccuracy(min),
        };
        let a = VerdictKey { config: config(0.9), digest: 1, threshold: 0.5 };
        assert_ne!(a, VerdictKey { config: config(0.8), ..a.clone() });
    }
}
