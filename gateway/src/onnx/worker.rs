//! The dedicated OS threads of one served version: each owns one session and runs the
//! `batching` loop on the version's queue until the queue closes.

use std::thread::JoinHandle;
use std::time::Duration;

use super::priority::{self, Courtesy};
use super::{OnnxError, OnnxSession};
use crate::batching::{self, BatchPolicy, QueueReceiver, RunError, Runner};
use crate::telemetry::VersionMetrics;
use crate::tensor::Tensor;

/// A worker thread's session, and its CPU priority (`priority`) where it serves live traffic.
struct Worker {
    session: OnnxSession,
    /// `None` for a shadow-only version's threads: they stay in the idle class.
    courtesy: Option<Courtesy>,
}

impl Runner for Worker {
    fn run(&mut self, inputs: &[Tensor]) -> Result<Vec<Tensor>, RunError> {
        self.session.run(inputs).map_err(|e| match e {
            OnnxError::Input { reason } | OnnxError::Refused { reason } => RunError::Refused(reason),
            other => RunError::Failed(other.to_string()),
        })
    }

    fn after_run(&mut self, took: Duration) {
        if let Some(courtesy) = &mut self.courtesy {
            courtesy.after_run(took);
        }
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
    for (i, session) in sessions.into_iter().enumerate() {
        let receiver = receiver.clone();
        let metrics = metrics.clone();
        let batchable = session.signature().is_batchable();
        let thread = std::thread::Builder::new()
            .name(format!("ort-{label}-{i}"))
            .spawn(move || {
                if background {
                    priority::idle_class();
                }
                let mut worker = Worker { session, courtesy: (!background).then(Courtesy::default) };
                batching::serve(receiver, &mut worker, policy, batchable, &metrics)
            })
            .map_err(|e| OnnxError::Run { reason: format!("cannot start a worker thread: {e}") })?;
        threads.push(thread);
    }
    Ok(WorkerPool { threads })
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
