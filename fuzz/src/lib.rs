//! What the fuzz targets share: the model signatures a fuzz input is decoded against (the
//! committed models' shapes, picked by the input's first byte), the decode limits, and the
//! invariants every successfully decoded request must hold whatever the wire format.
//!
//! No ONNX Runtime here: signatures are built in code, as `onnx::session` would report them.
//! Each target's harness is a module here (`http`, `grpc`, `config`); `fuzz_targets/` only
//! hands it the bytes.

pub mod config;
pub mod grpc;
pub mod http;

use std::sync::OnceLock;

use gateway::protocol::{DecodeLimits, InferRequest};
use gateway::tensor::{DataType, ModelSignature, Tensor, TensorData, TensorSpec, element_count};

/// A spec whose dynamic dims carry the model's symbol names (`None` for a fixed dim).
fn spec(name: &str, datatype: DataType, dims: &[(i64, Option<&str>)]) -> TensorSpec {
    let mut s = TensorSpec::new(name, datatype, dims.iter().map(|(d, _)| *d).collect());
    s.symbols = dims.iter().map(|(_, sym)| sym.unwrap_or_default().to_string()).collect();
    s
}

const BATCH: (i64, Option<&str>) = (-1, Some("batch"));
const N: (i64, Option<&str>) = (-1, Some("n"));

fn fixed(d: i64) -> (i64, Option<&'static str>) {
    (d, None)
}

fn all_signatures() -> Vec<ModelSignature> {
    use DataType::*;
    let sig = |inputs: Vec<TensorSpec>, outputs: Vec<TensorSpec>| ModelSignature { inputs, outputs };
    let mut norank_x = TensorSpec::new("x", F32, vec![]);
    norank_x.any_rank = true;
    let mut norank_y = TensorSpec::new("y", F32, vec![]);
    norank_y.any_rank = true;
    let dtypes = [
        ("bool", Bool),
        ("u8", U8),
        ("u16", U16),
        ("u32", U32),
        ("u64", U64),
        ("i8", I8),
        ("i16", I16),
        ("i32", I32),
        ("i64", I64),
        ("f16", F16),
        ("f32", F32),
        ("f64", F64),
    ];
    vec![
        // 0: models/credit-scoring (and mirror)
        sig(
            vec![spec("features", F32, &[BATCH, fixed(8)])],
            vec![spec("label", I64, &[BATCH]), spec("probabilities", F32, &[BATCH, fixed(2)])],
        ),
        // 1: models/tests/multi_io: x and y share both named dims
        sig(
            vec![
                spec("x", F32, &[(-1, Some("a")), (-1, Some("b"))]),
                spec("y", F32, &[(-1, Some("a")), (-1, Some("b"))]),
                spec("n", I64, &[(-1, Some("c"))]),
            ],
            vec![
                spec("sum.out", F32, &[(-1, Some("a")), (-1, Some("b"))]),
                spec("scaled.out", F32, &[(-1, Some("a")), (-1, Some("b"))]),
                spec("n_plus_one", I64, &[(-1, Some("c"))]),
            ],
        ),
        // 2: models/tests/strings
        sig(vec![spec("text", Bytes, &[N])], vec![spec("same", Bytes, &[N]), spec("tagged", Bytes, &[N])]),
        // 3: models/tests/scalar: 0-d tensors
        sig(vec![spec("x", F32, &[]), spec("k", I64, &[])], vec![spec("y", F32, &[]), spec("k2", I64, &[])]),
        // 4: models/tests/dtypes: every numeric datatype but BF16, all sharing dim "n"
        sig(
            dtypes.iter().map(|(name, d)| spec(name, *d, &[N])).collect(),
            dtypes.iter().map(|(name, d)| spec(&format!("{name}_out"), *d, &[N])).collect(),
        ),
        // 5: models/tests/fixed
        sig(vec![spec("x", F32, &[fixed(2), fixed(3)])], vec![spec("y", F32, &[fixed(2), fixed(3)])]),
        // 6: models/tests/norank: no declared shape, any rank accepted
        sig(vec![norank_x], vec![norank_y]),
        // 7: models/tests/control_flow: a 0-d BOOL beside a vector
        sig(vec![spec("cond", Bool, &[]), spec("x", F32, &[N])], vec![spec("y", F32, &[N])]),
        // 8: every datatype (BF16 and BYTES included) at a fixed shape [2], unnamed dims
        sig(
            DataType::ALL.iter().map(|d| spec(&d.as_str().to_lowercase(), *d, &[fixed(2)])).collect(),
            DataType::ALL.iter().map(|d| spec(&d.as_str().to_lowercase(), *d, &[fixed(2)])).collect(),
        ),
        // 9: models/dense
        sig(vec![spec("input", F32, &[BATCH, fixed(256)])], vec![spec("output", F32, &[BATCH, fixed(16)])]),
        // 10: a model with no inputs at all
        sig(vec![], vec![spec("constant", I64, &[fixed(1)])]),
        // 11: an unnamed dynamic dim between fixed ones, and a 16-bit float
        sig(
            vec![
                spec("h", F16, &[fixed(1), (-1, None), fixed(2)]),
                spec("s", Bytes, &[(-1, None), fixed(1)]),
            ],
            vec![spec("out", Bf16, &[(-1, None)])],
        ),
        // 12: a lone FP64 vector
        sig(vec![spec("v", F64, &[N])], vec![spec("w", F64, &[N])]),
    ]
}

/// The signatures, built once.
pub fn signatures() -> &'static [ModelSignature] {
    static ALL: OnceLock<Vec<ModelSignature>> = OnceLock::new();
    ALL.get_or_init(all_signatures)
}

/// What a fuzz input's first byte selects. Bits 0-4: the signature (modulo their number);
/// bits 5-6: how the round trip re-encodes the outputs; bit 7: a tiny element cap instead of
/// the default one.
#[derive(Debug, Clone, Copy)]
pub struct Selector {
    pub signature: &'static ModelSignature,
    pub limits: DecodeLimits,
    /// For each tensor index, whether the round trip sends it binary / raw.
    mode: u8,
}

impl Selector {
    pub fn new(byte: u8) -> Selector {
        let all = signatures();
        let signature = &all[usize::from(byte & 0x1f) % all.len()];
        let limits = if byte & 0x80 != 0 {
            DecodeLimits { max_elements: 6, max_batch: Some(2) }
        } else {
            DecodeLimits::default()
        };
        Selector { signature, limits, mode: (byte >> 5) & 0b11 }
    }

    /// Whether the round trip encodes tensor `i` in binary (HTTP) or raw (gRPC) form.
    pub fn binary(&self, i: usize) -> bool {
        match self.mode {
            0 => false,
            1 => true,
            2 => i.is_multiple_of(2),
            _ => !i.is_multiple_of(2),
        }
    }
}

/// The invariants of a decoded request, true by design whatever the wire format: one tensor
/// per signature input, in signature order, named and typed as the spec says, with a shape the
/// spec accepts, as many elements as the shape holds (and no more than the cap), BYTES as UTF-8
/// without NUL, named dims agreeing; requested outputs exist and are distinct.
pub fn check_request(request: &InferRequest, signature: &ModelSignature, limits: &DecodeLimits) {
    assert_eq!(request.inputs.len(), signature.inputs.len(), "one tensor per input");
    for (tensor, spec) in request.inputs.iter().zip(&signature.inputs) {
        assert_eq!(tensor.name, spec.name, "inputs in signature order");
        assert_eq!(tensor.datatype(), spec.datatype, "input '{}' datatype", spec.name);
        assert_eq!(spec.shape_mismatch(&tensor.shape), None, "input '{}' shape", spec.name);
        let count = element_count(&tensor.shape);
        assert_eq!(count, Some(tensor.data.len()), "input '{}': elements == product of shape", spec.name);
        assert!(tensor.data.len() <= limits.max_elements, "input '{}' over the element cap", spec.name);
        if let TensorData::Bytes(elements) = &tensor.data {
            for e in elements {
                assert!(std::str::from_utf8(e).is_ok() && !e.contains(&0), "input '{}' BYTES", spec.name);
            }
        }
    }
    assert_eq!(signature.symbol_conflict(&request.inputs), None, "named dims agree");
    let mut seen = vec![false; signature.outputs.len()];
    for choice in &request.outputs {
        assert!(choice.index < signature.outputs.len(), "output index in range");
        assert!(!std::mem::replace(&mut seen[choice.index], true), "output chosen twice");
    }
}

/// The signature of a model that returns its inputs unchanged: what a round trip decodes its
/// own reply against.
pub fn identity(signature: &ModelSignature) -> ModelSignature {
    ModelSignature { inputs: signature.inputs.clone(), outputs: signature.inputs.clone() }
}

/// Asserts two tensor lists are the same, element for element: floats compared by bits, except
/// that any NaN equals any NaN (JSON carries NaN as the string "NaN", without sign or payload).
/// `ulps(i)`: how many units in the last place tensor `i`'s floats may be off (0: none).
pub fn assert_same_tensors(before: &[Tensor], after: &[Tensor], what: &str, ulps: impl Fn(usize) -> u64) {
    assert_eq!(before.len(), after.len(), "{what}: tensor count");
    for (i, (a, b)) in before.iter().zip(after).enumerate() {
        assert_eq!((&a.name, &a.shape), (&b.name, &b.shape), "{what}: name and shape");
        assert!(
            same_data(&a.data, &b.data, ulps(i)),
            "{what}: tensor '{}' data\n{:?}\n{:?}",
            a.name,
            a.data,
            b.data
        );
    }
}

fn same_data(a: &TensorData, b: &TensorData, ulps: u64) -> bool {
    // Same sign: the bit patterns order like the magnitudes, so their distance counts ulps.
    let near = |x: u64, y: u64, sign: u64| x == y || ((x ^ y) & sign == 0 && x.abs_diff(y) <= ulps);
    fn floats<T: Copy>(a: &[T], b: &[T], nan: impl Fn(T) -> bool, near: impl Fn(T, T) -> bool) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(&x, &y)| (nan(x) && nan(y)) || near(x, y))
    }
    match (a, b) {
        (TensorData::F16(a), TensorData::F16(b)) => {
            floats(a, b, |x| x.is_nan(), |x, y| x.to_bits() == y.to_bits())
        }
        (TensorData::Bf16(a), TensorData::Bf16(b)) => {
            floats(a, b, |x| x.is_nan(), |x, y| x.to_bits() == y.to_bits())
        }
        (TensorData::F32(a), TensorData::F32(b)) => {
            floats(a, b, f32::is_nan, |x, y| near(x.to_bits().into(), y.to_bits().into(), 1 << 31))
        }
        (TensorData::F64(a), TensorData::F64(b)) => {
            floats(a, b, f64::is_nan, |x, y| near(x.to_bits(), y.to_bits(), 1 << 63))
        }
        (a, b) => a == b,
    }
}

/// `FUZZ_STRICT=1` turns off every `KNOWN CRASH` allowance in the harnesses (to check a fix).
pub fn strict() -> bool {
    static STRICT: OnceLock<bool> = OnceLock::new();
    *STRICT.get_or_init(|| std::env::var_os("FUZZ_STRICT").is_some_and(|v| v == "1"))
}
