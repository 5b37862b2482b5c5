//! Finding and loading ONNX Runtime's shared library once per process, and the environment
//! every session is created in.
//!
//! Where the library is looked for, in order: `ORT_DYLIB_PATH`; `libonnxruntime.so` beside the
//! executable (the build script puts it there); the copy the build script cached (its path is
//! compiled in). A library that is missing, unloadable or too old is one clear error naming
//! the fix.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;

use super::OnnxError;

const LIBRARY_NAME: &str = "libonnxruntime.so";
const REQUIRED_VERSION: &str = "1.31";

static ENVIRONMENT: OnceLock<Result<Environment, OnnxError>> = OnceLock::new();

/// The process-wide ONNX Runtime environment, loading the library on first use.
pub fn environment() -> Result<&'static Environment, OnnxError> {
    ENVIRONMENT.get_or_init(init).as_ref().map_err(Clone::clone)
}

fn init() -> Result<Environment, OnnxError> {
    let path = locate()?;
    let builder = ort::init_from(&path).map_err(|e| OnnxError::Library {
        message: format!("could not load ONNX Runtime from {}: {e}", path.display()),
    })?;
    let env = builder
        .with_name("gateway")
        .with_telemetry(false)
        .with_logger(std::sync::Arc::new(forward_log))
        .build()
        .map_err(|e| OnnxError::Library { message: format!("could not start ONNX Runtime: {e}") })?;
    tracing::info!(library = %path.display(), "loaded ONNX Runtime");
    Ok(env)
}

/// ONNX Runtime's own log lines, into ours. Its errors are about runs and loads that fail, and
/// those failures reach the caller (and our logs) as errors already: keep them at debug so a
/// client sending bad data cannot flood the log.
fn forward_log(level: ort::logging::LogLevel, _category: &str, _id: &str, location: &str, message: &str) {
    use ort::logging::LogLevel;
    match level {
        LogLevel::Warning => tracing::warn!(target: "onnxruntime", location, "{message}"),
        LogLevel::Error | LogLevel::Fatal | LogLevel::Info => {
            tracing::debug!(target: "onnxruntime", location, "{message}")
        }
        LogLevel::Verbose => tracing::trace!(target: "onnxruntime", location, "{message}"),
    }
}

/// The candidate library paths, in the order they are tried.
fn candidates() -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        // When set, it is the only place looked: an operator who points somewhere means it.
        return vec![PathBuf::from(p)];
    }
    if let Some(dir) = std::env::current_exe().ok().and_then(|e| e.parent().map(PathBuf::from)) {
        paths.push(dir.join(LIBRARY_NAME));
    }
    if let Some(built) = option_env!("GATEWAY_ORT_DYLIB") {
        paths.push(PathBuf::from(built));
    }
    paths
}

fn locate() -> Result<PathBuf, OnnxError> {
    let paths = candidates();
    if let Some(found) = paths.iter().find(|p| p.is_file()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    Err(OnnxError::Library {
        message: format!(
            "ONNX Runtime {REQUIRED_VERSION} shared library not found (looked at: {}). Fix: rebuild with \
             access to PyPI so the build script can fetch it (`cargo build`), or set ORT_DYLIB_PATH to a \
             libonnxruntime.so {REQUIRED_VERSION}.x, e.g. from `python3 -m pip download --no-deps \
             onnxruntime==1.31.1` (the file is onnxruntime/capi/libonnxruntime.so.1.31.1 inside the wheel)",
            if tried.is_empty() { "nowhere".to_string() } else { tried.join(", ") }
        ),
    })
}
