//! Execution providers: registered on each session in the configured order, CPU always last.
//! A provider this build or this machine lacks is skipped with a logged warning, so a config
//! written for a GPU host still serves (on CPU) elsewhere.

use ort::session::builder::SessionBuilder;

use super::Provider;

pub(super) fn register(
    builder: SessionBuilder,
    providers: &[Provider],
) -> Result<SessionBuilder, ort::Error> {
    let mut dispatch = Vec::new();
    for provider in providers {
        match provider {
            Provider::Cpu => {}
            Provider::Cuda => match cuda() {
                Ok(ep) => dispatch.push(ep),
                Err(why) => tracing::warn!(
                    "execution provider cuda unavailable ({why}); falling back to the next one"
                ),
            },
        }
    }
    if dispatch.is_empty() {
        return Ok(builder);
    }
    Ok(builder.with_execution_providers(dispatch)?)
}

#[cfg(feature = "cuda")]
fn cuda() -> Result<ort::ep::ExecutionProviderDispatch, String> {
    use ort::ep::ExecutionProvider;
    let ep = ort::ep::CUDA::default();
    match ep.is_available() {
        Ok(true) => Ok(ep.build()),
        Ok(false) => Err("ONNX Runtime reports no CUDA support on this machine".to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda() -> Result<ort::ep::ExecutionProviderDispatch, String> {
    Err("this build has no CUDA support; build with `--features cuda`".to_string())
}
