//! ONNX Runtime: loading, warming and running sessions, each on its own dedicated OS thread
//! (never a tokio worker), and converting between our `Tensor`s and ort values.
//!
//! Knows nothing of HTTP or routing. `worker` connects sessions to a version's queue; the
//! queue and batch forming belong to `batching`.

mod proto;
mod providers;
mod runtime;
mod session;
mod worker;

use std::path::PathBuf;

pub use runtime::environment;
pub use session::OnnxSession;
pub use worker::{WorkerPool, spawn_workers};

/// Execution providers this gateway knows how to register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    Cpu,
    Cuda,
}

/// How every session of a version is built.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionOptions {
    pub intra_op_threads: usize,
    pub intra_op_spinning: bool,
    pub execution_providers: Vec<Provider>,
}

impl Default for SessionOptions {
    fn default() -> SessionOptions {
        SessionOptions {
            intra_op_threads: 1,
            intra_op_spinning: false,
            execution_providers: vec![Provider::Cpu],
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OnnxError {
    /// The shared library could not be found or loaded; the message names the fix.
    #[error("{message}")]
    Library { message: String },
    #[error("cannot load model {path}: {reason}")]
    Load { path: PathBuf, reason: String },
    /// An input ONNX Runtime cannot accept although it matches the signature.
    #[error("{reason}")]
    Input { reason: String },
    #[error("inference failed: {reason}")]
    Run { reason: String },
}
