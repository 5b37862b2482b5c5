//! The hold-out set on disk: JSON lines, each `{"inputs": [V2 input tensors], "expected": [one
//! value per row]}`. Read and split into lines once per model (with a digest of the whole
//! content, which keys the verdicts kept on versions); each line's inputs are decoded against a
//! version's signature by the same code that decodes an infer request, so a set that a version
//! accepts is exactly what a client of that version could send.

use std::hash::Hasher;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use super::ValidationError;
use crate::protocol::{DecodeLimits, decode_infer};
use crate::tensor::{ModelSignature, Tensor};

/// A hold-out set, parsed as far as it can be without a version.
#[derive(Debug)]
pub struct Dataset {
    /// SipHash of the whole file: a set edited in place is a new set (not stable across builds;
    /// only compared within one process).
    pub digest: u64,
    pub lines: Vec<Line>,
}

/// One non-blank line of the set.
#[derive(Debug)]
pub struct Line {
    /// 1-based, as an editor shows it.
    pub number: usize,
    inputs: Box<RawValue>,
    pub expected: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLine {
    inputs: Box<RawValue>,
    expected: Vec<Value>,
}

impl Dataset {
    /// Reads and splits `path`. Blocking.
    pub fn read(path: &Path) -> Result<Dataset, ValidationError> {
        let bytes = std::fs::read(path).map_err(|e| ValidationError::Unreadable {
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        Dataset::parse(&bytes)
    }

    pub fn parse(bytes: &[u8]) -> Result<Dataset, ValidationError> {
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write(bytes);
        let mut lines = Vec::new();
        for (i, text) in bytes.split(|b| *b == b'\n').enumerate() {
            let number = i + 1;
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let raw: RawLine = serde_json::from_slice(text).map_err(|e| ValidationError::Line {
                line: number,
                reason: format!("not a {{\"inputs\": [...], \"expected\": [...]}} object: {e}"),
            })?;
            if raw.expected.is_empty() {
                return Err(ValidationError::Line {
                    line: number,
                    reason: "'expected' is empty".to_string(),
                });
            }
            lines.push(Line { number, inputs: raw.inputs, expected: raw.expected });
        }
        if lines.is_empty() {
            return Err(ValidationError::Unreadable { reason: "the hold-out set has no lines".to_string() });
        }
        Ok(Dataset { digest: hasher.finish(), lines })
    }

    /// Rows in the whole set (one expected value per row).
    pub fn rows(&self) -> usize {
        self.lines.iter().map(|l| l.expected.len()).sum()
    }
}

impl Line {
    /// The line's inputs as an infer request to a version with `signature` would carry them (in
    /// the signature's order). Rows are not capped by `max_batch_size`: a line may be larger
    /// than one batch, and the queue runs it alone.
    pub fn inputs(&self, signature: &ModelSignature) -> Result<Vec<Tensor>, ValidationError> {
        let body = format!("{{\"inputs\":{}}}", self.inputs.get());
        decode_infer(body.as_bytes(), None, signature, &DecodeLimits::default())
            .map(|request| request.inputs)
            .map_err(|e| ValidationError::Line { line: self.number, reason: format!("inputs: {e}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, TensorSpec};

    fn signature() -> ModelSignature {
        ModelSignature {
            inputs: vec![TensorSpec::new("x", DataType::F32, vec![-1, 2])],
            outputs: vec![TensorSpec::new("y", DataType::F32, vec![-1])],
        }
    }

    #[test]
    fn lines_are_numbered_as_an_editor_shows_them_and_blank_ones_skipped() {
        let text = b"\n{\"inputs\": [{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [1, 2], \"data\": [1, 2]}], \"expected\": [1]}\n\n";
        let set = Dataset::parse(text).unwrap();
        assert_eq!(set.lines.len(), 1);
        assert_eq!(set.lines[0].number, 2);
        assert_eq!(set.rows(), 1);
        let inputs = set.lines[0].inputs(&signature()).unwrap();
        assert_eq!(inputs[0].shape, vec![1, 2]);
    }

    #[test]
    fn bad_json_names_its_line() {
        let text = b"{\"inputs\": [], \"expected\": [1]}\n{\"inputs\": [\n";
        let e = Dataset::parse(text).unwrap_err();
        assert!(matches!(e, ValidationError::Line { line: 2, .. }), "{e}");
    }

    #[test]
    fn inputs_the_version_does_not_take_name_their_line() {
        let text = b"{\"inputs\": [{\"name\": \"z\", \"datatype\": \"FP32\", \"shape\": [1, 2], \"data\": [1, 2]}], \"expected\": [1]}";
        let set = Dataset::parse(text).unwrap();
        let e = set.lines[0].inputs(&signature()).unwrap_err();
        assert!(matches!(e, ValidationError::Line { line: 1, .. }), "{e}");
        assert!(e.to_string().contains("'z'"), "{e}");
    }

    #[test]
    fn an_empty_set_and_unknown_keys_are_refused() {
        assert!(matches!(Dataset::parse(b"\n \n"), Err(ValidationError::Unreadable { .. })));
        let e = Dataset::parse(b"{\"inputs\": [], \"expected\": [1], \"label\": 1}").unwrap_err();
        assert!(e.to_string().contains("label"), "{e}");
    }

    #[test]
    fn the_digest_follows_the_content() {
        let a = Dataset::parse(b"{\"inputs\": [], \"expected\": [1]}").unwrap();
        let b = Dataset::parse(b"{\"inputs\": [], \"expected\": [0]}").unwrap();
        assert_ne!(a.digest, b.digest);
    }
}
