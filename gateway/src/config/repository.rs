//! The model repository layout, `<repository>/<model>/<version>/model.onnx` (Triton's), and the
//! scan behind `--model-repository DIR`. Anything else in the folder is ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::{ConfigError, Problem, RawConfig, RawModel, RawRouting};

pub fn model_file(repository: &Path, model: &str, version: u64) -> PathBuf {
    repository.join(model).join(version.to_string()).join("model.onnx")
}

/// Model names are single path segments: `[A-Za-z0-9_.-]+`, never `.` or `..`.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The versions of `model` present on disk (folders named by a positive integer holding a
/// `model.onnx`), ascending.
pub fn versions_on_disk(repository: &Path, model: &str) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(repository.join(model)) else {
        return Vec::new();
    };
    let mut versions: Vec<u64> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&v| v > 0 && model_file(repository, model, v).is_file())
        .collect();
    versions.sort_unstable();
    versions
}

/// One model per sub-folder of `dir` that has at least one version; its highest version is
/// the primary with all the traffic.
pub fn scan_repository(dir: &Path) -> Result<RawConfig, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Problem::new("--model-repository", format!("cannot read {}: {e}", dir.display())))?;
    let mut models = BTreeMap::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        if !entry.path().is_dir() {
            continue;
        }
        if !valid_model_name(&name) {
            tracing::warn!(folder = %entry.path().display(), "not served: model names match [A-Za-z0-9_.-]+");
            continue;
        }
        let Some(&highest) = versions_on_disk(dir, &name).last() else {
            tracing::warn!(
                folder = %entry.path().display(),
                "not served: no version folder (a positive integer without leading zeros) holding model.onnx"
            );
            continue;
        };
        let routing = RawRouting { primary: Some(highest), ..RawRouting::default() };
        let model = RawModel {
            repository: Some(dir.display().to_string()),
            routing: Some(routing),
            ..RawModel::default()
        };
        models.insert(name, model);
    }
    if models.is_empty() {
        return Err(Problem::new(
            "--model-repository",
            format!("{} holds no model (expected <model>/<version>/model.onnx)", dir.display()),
        )
        .into());
    }
    Ok(RawConfig { models, ..RawConfig::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_names_are_single_safe_segments() {
        for good in ["credit-scoring", "a.b_c-1", "X"] {
            assert!(valid_model_name(good), "{good}");
        }
        for bad in ["", ".", "..", "a/b", "a b", "ü", "a\\b"] {
            assert!(!valid_model_name(bad), "{bad}");
        }
    }
}
