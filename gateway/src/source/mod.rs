//! Where versions come from: plain folders (`config::repository`), Triton model repositories
//! (`triton`: `config.pbtxt`, version policies, auto-completed configs) and an MLflow model
//! registry (`mlflow`, the REST client, with its content-addressed artifact `cache`; `registry`,
//! its place in the reload path: aliases resolved, versions fetched, aliases read for the poll,
//! rollout verdicts reported back). Each yields files and settings that `reload` prepares through
//! the one prepare → flip path; none of them knows about routing or requests.

pub mod cache;
pub mod mlflow;
pub mod pbtxt;
pub mod registry;
pub mod triton;

use std::collections::BTreeSet;
use std::path::Path;

use crate::config::{self, ConfigError, GatewayConfig, Overrides};

/// The config `--model-repository DIR` serves: its models as `triton::scan` reads them (only
/// `selection`, when models are loaded on demand), with the command line's overrides.
pub fn repository_config(
    dir: &Path,
    overrides: &Overrides,
    selection: Option<&BTreeSet<String>>,
) -> Result<GatewayConfig, ConfigError> {
    config::from_scanned(triton::scan(dir, selection)?, overrides, selection.is_some())
}

/// Reads a config file: parsed, registry aliases resolved and their versions fetched
/// (`registry::resolve`), then validated. The one way a config file is loaded.
/// The config keeps the file's text (for the audit history, which a revert restores).
pub async fn load_file(path: &Path, overrides: &Overrides) -> Result<GatewayConfig, ConfigError> {
    let text = config::read_text(path)?;
    let mut raw = config::parse_file(path, &text, overrides)?;
    registry::resolve(&mut raw).await?;
    let mut config = config::from_raw(&raw)?;
    config.text = Some(text.into());
    Ok(config)
}
