//! One served model version: its sessions on their worker threads, its queue, its signature.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::file::FileId;
use crate::batching::{self, BatchPolicy, Completed, InferError, Queue};
use crate::onnx::{OnnxError, OnnxSession, SessionOptions, WorkerPool, spawn_workers};
use crate::telemetry::VersionMetrics;
use crate::tensor::{ModelSignature, Tensor};
use crate::validation::VerdictCell;

/// Everything that decides how a version is built: when a reload leaves it unchanged, the
/// running version is kept as it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VersionKey {
    pub path: PathBuf,
    /// The file's size, time and content digest: a file replaced in place is a new version.
    pub file: FileId,
    pub instances: usize,
    pub policy: BatchPolicy,
    pub options: SessionOptions,
    /// Only a shadow: its worker threads run at idle CPU priority, so they use what live
    /// traffic leaves and never take a core from it. A version that becomes live is rebuilt.
    pub background: bool,
}

pub struct ServedVersion {
    pub model: String,
    pub version: u64,
    pub key: VersionKey,
    pub signature: ModelSignature,
    pub loaded_at: SystemTime,
    pub metrics: VersionMetrics,
    /// The validation gate's last verdict on this version (`registry::gate`): a reload that
    /// keeps the version and its hold-out set does not run the set again.
    pub verdict: VerdictCell,
    /// Declared before `workers`: dropped first, which closes the queue so the workers drain
    /// what is left and exit before they are joined.
    queue: Queue,
    workers: WorkerPool,
}

impl ServedVersion {
    /// Loads `instances` sessions, warms each, and starts their worker threads. Blocking: call
    /// from a blocking context.
    pub fn load(model: &str, version: u64, key: VersionKey) -> Result<ServedVersion, OnnxError> {
        let started = Instant::now();
        let mut sessions = Vec::with_capacity(key.instances);
        for _ in 0..key.instances.max(1) {
            let mut session = OnnxSession::load(&key.path, &key.options)?;
            if let Err(e) = session.warm_up() {
                // Some models cannot run on zeros (a shape taken from an input, say); they still serve.
                tracing::warn!(model, version, error = %e, "warm-up run failed; the first request pays for initialisation");
            }
            sessions.push(session);
        }
        let signature = sessions
            .first()
            .map(|s| s.signature().clone())
            .ok_or_else(|| OnnxError::Load { path: key.path.clone(), reason: "no session".to_string() })?;
        let outputs: Vec<String> = signature.outputs.iter().map(|o| o.name.clone()).collect();
        let metrics = VersionMetrics::with_outputs(model, version, &outputs);
        let (queue, receiver) = batching::queue(&key.policy);
        let workers = spawn_workers(
            &format!("{model}-v{version}"),
            sessions,
            receiver,
            key.policy,
            key.background,
            &metrics,
        )?;
        tracing::info!(
            model,
            version,
            path = %key.path.display(),
            instances = key.instances,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded model version"
        );
        Ok(ServedVersion {
            model: model.to_string(),
            version,
            key,
            signature,
            loaded_at: SystemTime::now(),
            metrics,
            verdict: VerdictCell::default(),
            queue,
            workers,
        })
    }

    /// Runs validated inputs (in signature order) through this version's queue. `expected` is
    /// the request's announcement (`expect`); the caller bounds the wait by its deadline.
    pub async fn infer(
        &self,
        inputs: Arc<Vec<Tensor>>,
        deadline: Instant,
        expected: batching::Expected,
    ) -> Result<Completed, InferError> {
        self.queue.infer(inputs, deadline, expected).await
    }

    /// `infer` for a request that may be sampled: its `queue` and `onnxruntime.run` spans go
    /// to `trace` (`None`: not sampled).
    pub async fn infer_traced(
        &self,
        inputs: Arc<Vec<Tensor>>,
        deadline: Instant,
        expected: batching::Expected,
        trace: Option<crate::trace::JobTrace>,
    ) -> Result<Completed, InferError> {
        self.queue.infer_traced(inputs, deadline, expected, trace).await
    }

    pub fn path(&self) -> &Path {
        &self.key.path
    }

    /// Rows per run the queue may form; 0 when the model cannot be batched (Triton's
    /// `max_batch_size` convention).
    pub fn max_batch_size(&self) -> usize {
        if self.signature.is_batchable() && self.key.policy.max_batch_size > 1 {
            self.key.policy.max_batch_size
        } else {
            0
        }
    }

    /// Announces a request routed here (see `batching`: batch-mates are waited for only while
    /// some are coming); hand the guard to `infer`, which withdraws it when the request is
    /// answered.
    pub fn expect(&self) -> batching::Expected {
        self.queue.expect()
    }

    pub fn queue_depth(&self) -> usize {
        self.queue.depth()
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }
}
