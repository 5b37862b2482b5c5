//! The model repository layout, `<repository>/<model>/<version>/<file>` (Triton's; the file is
//! `model.onnx` unless the model says otherwise). Reading a whole Triton repository, its
//! `config.pbtxt` files included, is `source::triton`.

use std::path::{Path, PathBuf};

pub fn model_file(repository: &Path, model: &str, version: u64, file: &str) -> PathBuf {
    repository.join(model).join(version.to_string()).join(file)
}

/// Model names are single path segments: `[A-Za-z0-9_.-]+`, never `.` or `..`.
pub fn valid_model_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// The versions of `model` present on disk (folders named by a positive integer holding
/// `file`), ascending.
pub fn versions_on_disk(repository: &Path, model: &str, file: &str) -> Vec<u64> {
    let Ok(entries) = std::fs::read_dir(repository.join(model)) else {
        return Vec::new();
    };
    let mut versions: Vec<u64> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|&v| v > 0 && model_file(repository, model, v, file).is_file())
        .collect();
    versions.sort_unstable();
    versions
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
