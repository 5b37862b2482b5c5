//! Our tensor types: `DataType`, `TensorData`, `Tensor`, `TensorSpec`, `ModelSignature`.
//!
//! Owns the shape arithmetic every layer relies on (checked element counts, dynamic dims as -1).
//! No I/O, and nothing else from this crate.

use std::fmt;

use half::{bf16, f16};

/// The Open Inference Protocol datatypes that ONNX Runtime can also hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    Bool,
    U8,
    U16,
    U32,
    U64,
    I8,
    I16,
    I32,
    I64,
    F16,
    Bf16,
    F32,
    F64,
    Bytes,
}

impl DataType {
    pub const ALL: [DataType; 14] = [
        DataType::Bool,
        DataType::U8,
        DataType::U16,
        DataType::U32,
        DataType::U64,
        DataType::I8,
        DataType::I16,
        DataType::I32,
        DataType::I64,
        DataType::F16,
        DataType::Bf16,
        DataType::F32,
        DataType::F64,
        DataType::Bytes,
    ];

    /// The protocol's name (`"FP32"`, `"BYTES"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::U8 => "UINT8",
            DataType::U16 => "UINT16",
            DataType::U32 => "UINT32",
            DataType::U64 => "UINT64",
            DataType::I8 => "INT8",
            DataType::I16 => "INT16",
            DataType::I32 => "INT32",
            DataType::I64 => "INT64",
            DataType::F16 => "FP16",
            DataType::Bf16 => "BF16",
            DataType::F32 => "FP32",
            DataType::F64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Bytes per element in the binary encoding; `None` for BYTES (length-prefixed).
    pub fn element_size(self) -> Option<usize> {
        match self {
            DataType::Bool | DataType::U8 | DataType::I8 => Some(1),
            DataType::U16 | DataType::I16 | DataType::F16 | DataType::Bf16 => Some(2),
            DataType::U32 | DataType::I32 | DataType::F32 => Some(4),
            DataType::U64 | DataType::I64 | DataType::F64 => Some(8),
            DataType::Bytes => None,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DataType::F16 | DataType::Bf16 | DataType::F32 | DataType::F64)
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tensor's elements, flat, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    Bool(Vec<bool>),
    U8(Vec<u8>),
    U16(Vec<u16>),
    U32(Vec<u32>),
    U64(Vec<u64>),
    I8(Vec<i8>),
    I16(Vec<i16>),
    I32(Vec<i32>),
    I64(Vec<i64>),
    F16(Vec<f16>),
    Bf16(Vec<bf16>),
    F32(Vec<f32>),
    F64(Vec<f64>),
    Bytes(Vec<Vec<u8>>),
}

/// Applies `$body` to the vector inside any variant, binding it as `$v`.
#[macro_export]
macro_rules! for_each_tensor_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::tensor::TensorData::Bool($v) => $body,
            $crate::tensor::TensorData::U8($v) => $body,
            $crate::tensor::TensorData::U16($v) => $body,
            $crate::tensor::TensorData::U32($v) => $body,
            $crate::tensor::TensorData::U64($v) => $body,
            $crate::tensor::TensorData::I8($v) => $body,
            $crate::tensor::TensorData::I16($v) => $body,
            $crate::tensor::TensorData::I32($v) => $body,
            $crate::tensor::TensorData::I64($v) => $body,
            $crate::tensor::TensorData::F16($v) => $body,
            $crate::tensor::TensorData::Bf16($v) => $body,
            $crate::tensor::TensorData::F32($v) => $body,
            $crate::tensor::TensorData::F64($v) => $body,
            $crate::tensor::TensorData::Bytes($v) => $body,
        }
    };
}

impl TensorData {
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::U8(_) => DataType::U8,
            TensorData::U16(_) => DataType::U16,
            TensorData::U32(_) => DataType::U32,
            TensorData::U64(_) => DataType::U64,
            TensorData::I8(_) => DataType::I8,
            TensorData::I16(_) => DataType::I16,
            TensorData::I32(_) => DataType::I32,
            TensorData::I64(_) => DataType::I64,
            TensorData::F16(_) => DataType::F16,
            TensorData::Bf16(_) => DataType::Bf16,
            TensorData::F32(_) => DataType::F32,
            TensorData::F64(_) => DataType::F64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    pub fn len(&self) -> usize {
        for_each_tensor_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `len` elements of `datatype`, all zero (false, empty strings): warm-up inputs.
    pub fn zeros(datatype: DataType, len: usize) -> TensorData {
        match datatype {
            DataType::Bool => TensorData::Bool(vec![false; len]),
            DataType::U8 => TensorData::U8(vec![0; len]),
            DataType::U16 => TensorData::U16(vec![0; len]),
            DataType::U32 => TensorData::U32(vec![0; len]),
            DataType::U64 => TensorData::U64(vec![0; len]),
            DataType::I8 => TensorData::I8(vec![0; len]),
            DataType::I16 => TensorData::I16(vec![0; len]),
            DataType::I32 => TensorData::I32(vec![0; len]),
            DataType::I64 => TensorData::I64(vec![0; len]),
            DataType::F16 => TensorData::F16(vec![f16::ZERO; len]),
            DataType::Bf16 => TensorData::Bf16(vec![bf16::ZERO; len]),
            DataType::F32 => TensorData::F32(vec![0.0; len]),
            DataType::F64 => TensorData::F64(vec![0.0; len]),
            DataType::Bytes => TensorData::Bytes(vec![Vec::new(); len]),
        }
    }

    /// An empty vector of `datatype` with room for `capacity` elements.
    pub fn with_capacity(datatype: DataType, capacity: usize) -> TensorData {
        let mut data = TensorData::zeros(datatype, 0);
        for_each_tensor_data!(&mut data, v => v.reserve_exact(capacity));
        data
    }

    /// Appends `other`'s elements; false (and nothing appended) when the datatypes differ.
    pub fn extend_from(&mut self, other: &TensorData) -> bool {
        macro_rules! ext {
            ($($variant:ident),*) => {
                match (self, other) {
                    $((TensorData::$variant(a), TensorData::$variant(b)) => { a.extend_from_slice(b); true })*
                    _ => false,
                }
            };
        }
        ext!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, Bf16, F32, F64, Bytes)
    }

    /// Elements `range` as a new vector of the same datatype; `None` when out of bounds.
    pub fn slice(&self, range: std::ops::Range<usize>) -> Option<TensorData> {
        macro_rules! sl {
            ($($variant:ident),*) => {
                match self {
                    $(TensorData::$variant(v) => Some(TensorData::$variant(v.get(range)?.to_vec())),)*
                }
            };
        }
        sl!(Bool, U8, U16, U32, U64, I8, I16, I32, I64, F16, Bf16, F32, F64, Bytes)
    }

    /// Every element as `f64` (BYTES: none). Used by monitoring and shadow comparison.
    pub fn to_f64_vec(&self) -> Option<Vec<f64>> {
        Some(match self {
            TensorData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
            TensorData::U8(v) => v.iter().map(|&x| x.into()).collect(),
            TensorData::U16(v) => v.iter().map(|&x| x.into()).collect(),
            TensorData::U32(v) => v.iter().map(|&x| x.into()).collect(),
            TensorData::U64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::I8(v) => v.iter().map(|&x| x.into()).collect(),
            TensorData::I16(v) => v.iter().map(|&x| x.into()).collect(),
            TensorData::I32(v) => v.iter().map(|&x| x.into()).collect(),
            TensorData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            TensorData::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::Bf16(v) => v.iter().map(|&x| x.to_f64()).collect(),
            TensorData::F32(v) => v.iter().map(|&x| x.into()).collect(),
            TensorData::F64(v) => v.clone(),
            TensorData::Bytes(_) => return None,
        })
    }
}

/// A named tensor with a concrete shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

impl Tensor {
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// Elements per row along dim 0 (a 0-d tensor is one row of one element); `None` when the
    /// product overflows (possible for a tensor of zero elements).
    pub fn row_len(&self) -> Option<usize> {
        element_count(self.shape.get(1..).unwrap_or(&[]))
    }
}

/// The product of `dims`, or `None` when it does not fit in `usize`.
pub fn element_count(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// An input or output as the model declares it: dims of -1 are dynamic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: DataType,
    pub shape: Vec<i64>,
    /// The model's name for each dynamic dim ("" when unnamed or fixed): inputs that share a
    /// name must agree on its size.
    pub symbols: Vec<String>,
    /// The model declares no shape at all (unknown rank): any shape is accepted, and `shape`
    /// is empty. ONNX Runtime reports such a tensor exactly like a 0-d one, so this comes from
    /// the ONNX file itself.
    pub any_rank: bool,
}

impl TensorSpec {
    /// A spec with no named dims.
    pub fn new(name: impl Into<String>, datatype: DataType, shape: Vec<i64>) -> TensorSpec {
        let symbols = vec![String::new(); shape.len()];
        TensorSpec { name: name.into(), datatype, shape, symbols, any_rank: false }
    }

    /// Why `shape` cannot be fed to this input, if it cannot.
    pub fn shape_mismatch(&self, shape: &[usize]) -> Option<String> {
        if self.any_rank {
            return None;
        }
        if shape.len() != self.shape.len() {
            return Some(format!(
                "input '{}' has rank {} (shape {:?}) but the model expects rank {} (shape {:?})",
                self.name,
                shape.len(),
                shape,
                self.shape.len(),
                self.shape
            ));
        }
        let bad = shape.iter().zip(&self.shape).position(|(&got, &want)| want >= 0 && got as i64 != want)?;
        Some(format!(
            "input '{}' has shape {:?} but the model expects {:?} (dimension {bad} must be {})",
            self.name, shape, self.shape, self.shape[bad]
        ))
    }

    /// True when dim 0 is dynamic, so requests can be stacked along it.
    pub fn has_dynamic_batch_dim(&self) -> bool {
        self.shape.first().is_some_and(|&d| d < 0)
    }
}

/// A model version's inputs and outputs, in the model's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSignature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
}

impl ModelSignature {
    pub fn input(&self, name: &str) -> Option<(usize, &TensorSpec)> {
        self.inputs.iter().enumerate().find(|(_, s)| s.name == name)
    }

    pub fn output(&self, name: &str) -> Option<(usize, &TensorSpec)> {
        self.outputs.iter().enumerate().find(|(_, s)| s.name == name)
    }

    /// True when every input and output has a dynamic dim 0: the model can be batched.
    pub fn is_batchable(&self) -> bool {
        !self.inputs.is_empty()
            && self.inputs.iter().all(TensorSpec::has_dynamic_batch_dim)
            && self.outputs.iter().all(TensorSpec::has_dynamic_batch_dim)
    }

    /// The first named dynamic dim that two of `inputs` (in signature order, shapes already
    /// checked against their specs) give different sizes.
    pub fn symbol_conflict(&self, inputs: &[Tensor]) -> Option<String> {
        let mut seen: Vec<(&str, &str, usize)> = Vec::new();
        for (spec, tensor) in self.inputs.iter().zip(inputs) {
            for (symbol, &size) in spec.symbols.iter().zip(&tensor.shape) {
                if symbol.is_empty() {
                    continue;
                }
                match seen.iter().find(|(s, _, _)| *s == symbol.as_str()) {
                    Some((_, other, was)) if *was != size => {
                        return Some(format!(
                            "inputs '{other}' and '{}' must agree on dimension '{symbol}' ({was} vs {size})",
                            spec.name
                        ));
                    }
                    Some(_) => {}
                    None => seen.push((symbol, &spec.name, size)),
                }
            }
        }
        None
    }

    /// Every way `other`'s inputs differ from ours, one line each (empty when compatible).
    pub fn input_differences(&self, other: &ModelSignature) -> Vec<String> {
        let mut problems = Vec::new();
        for mine in &self.inputs {
            match other.input(&mine.name) {
                None => problems.push(format!("input '{}' is missing", mine.name)),
                Some((_, theirs)) if theirs.datatype != mine.datatype || theirs.shape != mine.shape => {
                    problems.push(format!(
                        "input '{}' is {} {:?}, expected {} {:?}",
                        mine.name, theirs.datatype, theirs.shape, mine.datatype, mine.shape
                    ))
                }
                Some(_) => {}
            }
        }
        for theirs in &other.inputs {
            if self.input(&theirs.name).is_none() {
                problems.push(format!("input '{}' is extra", theirs.name));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datatype_names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.as_str()), Some(d));
        }
        assert_eq!(DataType::parse("FLOAT"), None);
    }

    #[test]
    fn element_count_detects_overflow() {
        assert_eq!(element_count(&[2, 3, 4]), Some(24));
        assert_eq!(element_count(&[]), Some(1));
        assert_eq!(element_count(&[usize::MAX, 2]), None);
    }

    #[test]
    fn shape_mismatch_names_rank_and_fixed_dims() {
        let spec = TensorSpec::new("x", DataType::F32, vec![-1, 8]);
        assert!(spec.shape_mismatch(&[3, 8]).is_none());
        assert!(spec.shape_mismatch(&[3]).unwrap().contains("rank 1"));
        assert!(spec.shape_mismatch(&[3, 7]).unwrap().contains("dimension 1 must be 8"));
    }

    #[test]
    fn extend_and_slice_keep_rows() {
        let mut a = TensorData::F32(vec![1.0, 2.0]);
        assert!(a.extend_from(&TensorData::F32(vec![3.0])));
        assert!(!a.extend_from(&TensorData::I64(vec![3])));
        assert_eq!(a.slice(1..3), Some(TensorData::F32(vec![2.0, 3.0])));
        assert_eq!(a.slice(2..4), None);
    }

    #[test]
    fn input_differences_lists_each_problem() {
        let a = ModelSignature {
            inputs: vec![TensorSpec::new("x", DataType::F32, vec![-1, 8])],
            outputs: vec![],
        };
        let b = ModelSignature {
            inputs: vec![TensorSpec::new("y", DataType::F32, vec![-1, 8])],
            outputs: vec![],
        };
        assert_eq!(a.input_differences(&b), vec!["input 'x' is missing", "input 'y' is extra"]);
        assert!(a.input_differences(&a).is_empty());
    }
}
