//! The dedicated OS threads of one served version: each owns one session and runs the
//! `batching` loop on the version's queue until the queue closes.

use std::thread::JoinHandle;

use super::{OnnxError, OnnxSession};
use crate::batching::{self, BatchPolicy, QueueReceiver, RunError, Runner};
use crate::telemetry::VersionMetrics;
use crate::tensor::Tensor;

impl Runner for OnnxSession {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        OnnxSession::run(self, inputs).map_err(|e| match e {
            OnnxError::Input { reason } | OnnxError::Refused { reason } => RunError::Refused(reason),
            other => RunError::Failed(other.to_string()),
        })
    }
}

/// The threads of a version; joined when dropped (after its queue has been closed).
pub struct WorkerPool {
    threads: Vec<JoinHandle<()>>,
}

/// Starts one thread per session, all serving `receiver`.
pub fn spawn_workers(
    label: &str,
    sessions: Vec<OnnxSession>,
    receiver: QueueReceiver,
    policy: BatchPolicy,
    background: bool,
    metrics: &VersionMetrics,
) -> Result<WorkerPool, OnnxError> {
    let mut threads = Vec::with_capacity(sessions.len());
    for (i, mut session) in sessions.into_iter().enumerate() {
        let receiver = receiver.clone();
        let metrics = metrics.clone();
        let batchable = session.signature().is_batchable();
        let thread = std::thread::Builder::new()
            .name(format!("ort-{label}-{i}"))
            .spawn(move || {
                if background {
                    lower_priority();
                }
                batching::serve(receiver, &mut session, policy, batchable, &metrics)
            })
            .map_err(|e| OnnxError::Run { reason: format!("cannot start a worker thread: {e}") })?;
        threads.push(thread);
    }
    Ok(WorkerPool { threads })
}

/// Moves the calling thread to the idle scheduling class (Linux `SCHED_IDLE`): it runs only on
/// CPU time nothing else wants. ONNX Runtime runs a session with one intra-op thread on the
/// calling thread, so with `intra_op_threads = 1` the whole model run is covered.
fn lower_priority() {
    use thread_priority::{NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy};
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    let native = thread_priority::thread_native_id();
    if let Err(e) = thread_priority::set_thread_priority_and_policy(native, ThreadPriority::Min, idle) {
        tracing::warn!(
            "could not lower a shadow worker's CPU priority ({e:?}); it competes with live traffic"
        );
    }
}

impl WorkerPool {
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }
}

impl Drop for WorkerPool {
    fn drop(&mut self) {
        let threads = std::mem::take(&mut self.threads);
        let join = move || {
            for t in threads {
                let _ = t.join();
            }
        };
        // Never block an async runtime thread while workers finish their queue.
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new().name("ort-join".into()).spawn(join);
        } else {
            join();
        }
    }
}
