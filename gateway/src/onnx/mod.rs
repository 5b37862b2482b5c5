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
    /// ONNX Runtime refused the inputs of a run (see `refused_by_inputs`): the request's fault.
    #[error("{reason}")]
    Refused { reason: String },
    #[error("inference failed: {reason}")]
    Run { reason: String },
}

/// Shape failures ONNX Runtime's CPU kernels report with its generic FAIL code: inputs that
/// agree with the model's declared signature but not with each other inside its graph.
const SHAPE_FAILURES: [&str; 6] = [
    "attempting to broadcast",
    "cannot be reshaped",
    "dimension mismatch",
    "mismatched dimensions",
    "invalid dimensions",
    "shape mismatch",
];

/// Whether a failed run was caused by what the request carried: ONNX Runtime's
/// INVALID_ARGUMENT (an index out of range, a dimension the model does not take), or one of
/// its shape failures. Everything else (allocation, execution provider, a model that cannot
/// run at all) is the server's.
pub fn refused_by_inputs(code: ort::error::ErrorCode, message: &str) -> bool {
    use ort::error::ErrorCode;
    match code {
        ErrorCode::InvalidArgument => true,
        ErrorCode::GenericFailure => {
            let message = message.to_ascii_lowercase();
            SHAPE_FAILURES.iter().any(|marker| message.contains(marker))
        }
        _ => false,
    }
}
