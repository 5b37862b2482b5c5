//! One served model version and what it runs on (`Backend`): in-process ONNX Runtime sessions
//! on their worker threads behind a queue, or a remote server (`upstream`). Routing, shadows
//! and monitoring see one interface: `infer` inputs, get outputs or a typed `InferError`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::file::FileId;
use crate::batching::{self, BatchPolicy, Completed, InferError, Queue};
use crate::config::RemoteConfig;
use crate::onnx::{OnnxError, OnnxSession, SessionOptions, WorkerPool, spawn_workers};
use crate::telemetry::VersionMetrics;
use crate::tensor::{ModelSignature, Tensor};
use crate::upstream::{ConnectError, Failure, Remote, RemoteError};
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
    /// Served by a remote server instead (`[models.X.remote]`): then only this and the batch
    /// policy's `max_batch_size` matter.
    pub remote: Option<RemoteConfig>,
}

/// Why a version could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error(transparent)]
    Onnx(#[from] OnnxError),
    #[error(transparent)]
    Remote(#[from] ConnectError),
}

/// What a version runs on.
enum Backend {
    /// Declared before `workers`: dropped first, which closes the queue so the workers drain
    /// what is left and exit before they are joined.
    Local {
        queue: Queue,
        workers: WorkerPool,
    },
    Remote(Arc<Remote>),
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
    backend: Backend,
}

impl ServedVersion {
    /// Loads `instances` sessions, warms each, and starts their worker threads. Blocking: call
    /// from a blocking context.
    pub fn load(model: &str, version: u64, key: VersionKey) -> Result<ServedVersion, LoadError> {
        match key.remote.clone() {
            Some(remote) => ServedVersion::connect(model, version, key, &remote),
            None => Ok(ServedVersion::load_local(model, version, key)?),
        }
    }

    /// A remote version: its client, and its signature from the remote's metadata. Blocking.
    fn connect(
        model: &str,
        version: u64,
        key: VersionKey,
        config: &RemoteConfig,
    ) -> Result<ServedVersion, LoadError> {
        let (remote, signature) = Remote::connect(model, version, config)?;
        let metrics = metrics_for(model, version, &signature);
        tracing::info!(model, version, url = %config.url, remote_model = %config.model, "connected remote version");
        Ok(ServedVersion::assemble(model, version, key, signature, metrics, Backend::Remote(remote)))
    }

    fn assemble(
        model: &str,
        version: u64,
        key: VersionKey,
        signature: ModelSignature,
        metrics: VersionMetrics,
        backend: Backend,
    ) -> ServedVersion {
        ServedVersion {
            model: model.to_string(),
            version,
            key,
            signature,
            loaded_at: SystemTime::now(),
            metrics,
            verdict: VerdictCell::default(),
            backend,
        }
    }

    fn load_local(model: &str, version: u64, key: VersionKey) -> Result<ServedVersion, OnnxError> {
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
        let metrics = metrics_for(model, version, &signature);
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
        Ok(ServedVersion::assemble(
            model,
            version,
            key,
            signature,
            metrics,
            Backend::Local { queue, workers },
        ))
    }

    /// Runs validated inputs (in signature order) through this version's queue. `expected` is
    /// the request's announcement (`expect`); the caller bounds the wait by its deadline.
    pub async fn infer(
        &self,
        inputs: Arc<Vec<Tensor>>,
        deadline: Instant,
        expected: batching::Expected,
    ) -> Result<Completed, InferError> {
        self.infer_traced(inputs, deadline, expected, None).await
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
        match &self.backend {
            Backend::Local { queue, .. } => queue.infer_traced(inputs, deadline, expected, trace).await,
            Backend::Remote(remote) => {
                let started = Instant::now();
                let rows = inputs.first().and_then(|t| t.shape.first().copied()).unwrap_or(1);
                // Boxed: the call's state (a whole HTTP or gRPC exchange) would otherwise make
                // every request's future, local ones included, that much larger to move.
                let outputs = Box::pin(remote.infer(inputs, deadline, trace)).await.map_err(remote_error)?;
                let outputs = self.in_signature_order(outputs)?;
                Ok(Completed {
                    outputs,
                    queue_time: std::time::Duration::ZERO,
                    inference_time: started.elapsed(),
                    batch_rows: rows,
                    run_span: None,
                })
            }
        }
    }

    /// A remote's outputs put in this version's signature order (the order every consumer of
    /// `Completed::outputs` indexes by); a missing one is the remote's failure.
    fn in_signature_order(&self, mut outputs: Vec<Tensor>) -> Result<Vec<Tensor>, InferError> {
        let mut ordered = Vec::with_capacity(self.signature.outputs.len());
        for spec in &self.signature.outputs {
            let Some(i) = outputs.iter().position(|t| t.name == spec.name) else {
                return Err(InferError::Upstream {
                    failure: Failure::Failed,
                    reason: format!("the remote's answer has no output '{}'", spec.name),
                });
            };
            ordered.push(outputs.swap_remove(i));
        }
        Ok(ordered)
    }

    pub fn path(&self) -> &Path {
        &self.key.path
    }

    /// The remote serving this version, when it is one.
    pub fn remote(&self) -> Option<&Arc<Remote>> {
        match &self.backend {
            Backend::Remote(r) => Some(r),
            Backend::Local { .. } => None,
        }
    }

    /// Whether routing may send it traffic now: a remote that was ejected may not.
    pub fn available(&self) -> bool {
        self.remote().is_none_or(|r| r.available())
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
        match &self.backend {
            Backend::Local { queue, .. } => queue.expect(),
            Backend::Remote(_) => batching::Expected::none(),
        }
    }

    /// Requests waiting in its queue (a remote: calls in flight to it).
    pub fn queue_depth(&self) -> usize {
        match &self.backend {
            Backend::Local { queue, .. } => queue.depth(),
            Backend::Remote(r) => r.in_flight(),
        }
    }

    /// Its worker threads (a remote has none).
    pub fn worker_count(&self) -> usize {
        match &self.backend {
            Backend::Local { workers, .. } => workers.len(),
            Backend::Remote(_) => 0,
        }
    }
}

/// A version's metric handles, with a comparison series per output.
fn metrics_for(model: &str, version: u64, signature: &ModelSignature) -> VersionMetrics {
    let outputs: Vec<String> = signature.outputs.iter().map(|o| o.name.clone()).collect();
    VersionMetrics::with_outputs(model, version, &outputs)
}

fn remote_error(e: RemoteError) -> InferError {
    match e {
        RemoteError::Refused(reason) => InferError::Refused { reason },
        RemoteError::Failed { failure, reason } => InferError::Upstream { failure, reason },
    }
}
