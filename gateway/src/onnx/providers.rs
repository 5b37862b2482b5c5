//! Execution providers: registered on each session in the configured order, CPU always last.
//! A provider this build or this machine lacks is skipped with a logged warning, so a config
//! written for a GPU host still serves (on CPU) elsewhere.

use ort::session::builder::SessionBuilder;

use super::Provider;

pub(super) fn register(
    mut builder: SessionBuilder,
    providers: &[Provider],
) -> Result<SessionBuilder, ort::Error> {
    for provider in providers {
        match provider {
            // ONNX Runtime's CPU provider is always there, after every other.
            Provider::Cpu => {}
            Provider::Cuda => builder = cuda(builder),
        }
    }
    Ok(builder)
}

/// Registers CUDA, or explains why not and leaves the builder as it was.
#[cfg(feature = "cuda")]
fn cuda(builder: SessionBuilder) -> SessionBuilder {
    use ort::ep::ExecutionProvider;
    let ep = ort::ep::CUDA::default();
    match ort::ep::CUDA::is_available() {
        Ok(true) => {}
        Ok(false) => {
            tracing::warn!(
                "execution provider cuda: this ONNX Runtime has no CUDA support; using the next provider"
            );
            return builder;
        }
        Err(e) => {
            tracing::warn!("execution provider cuda unavailable ({e}); using the next provider");
            return builder;
        }
    }
    // Fail loudly here instead of ONNX Runtime's silent fallback, so the fallback is logged.
    match builder.with_execution_providers([ep.build().error_on_failure()]) {
        Ok(b) => {
            tracing::info!("execution provider cuda registered");
            b
        }
        Err(e) => {
            tracing::warn!(
                "execution provider cuda could not be registered ({e}); using the next provider. \\
                 It needs the CUDA 12 and cuDNN 9 libraries on the library path"
            );
            e.recover()
        }
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda(builder: SessionBuilder) -> SessionBuilder {
    tracing::warn!(
        "execution provider cuda: this build has no CUDA support (build with `--features cuda`); using the next provider"
    );
    builder
}
