//! Triton's binary tensor data extension: raw little-endian elements, BOOL as one byte, BYTES
//! as a 4-byte little-endian length before each element.

use half::{bf16, f16};

use super::ApiError;
use crate::tensor::{DataType, TensorData};

/// Decodes one input's binary data, which must hold exactly `count` elements.
pub fn decode(name: &str, datatype: DataType, count: usize, bytes: &[u8]) -> Result<TensorData, ApiError> {
    if let Some(size) = datatype.element_size() {
        let expected = count.saturating_mul(size);
        if bytes.len() != expected {
            return Err(ApiError::Malformed(format!(
                "input '{name}' needs {expected} bytes of binary data ({count} x {size}-byte {datatype}) but has {}",
                bytes.len()
            )));
        }
    }
    macro_rules! le {
        ($t:ty, $variant:ident) => {
            TensorData::$variant(
                bytes
                    .chunks_exact(size_of::<$t>())
                    .map(|c| <$t>::from_le_bytes(c.try_into().unwrap_or_default()))
                    .collect(),
            )
        };
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DataType::U8 => TensorData::U8(bytes.to_vec()),
        DataType::I8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
        DataType::U16 => le!(u16, U16),
        DataType::U32 => le!(u32, U32),
        DataType::U64 => le!(u64, U64),
        DataType::I16 => le!(i16, I16),
        DataType::I32 => le!(i32, I32),
        DataType::I64 => le!(i64, I64),
        DataType::F32 => le!(f32, F32),
        DataType::F64 => le!(f64, F64),
        DataType::F16 => {
            TensorData::F16(bytes.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect())
        }
        DataType::Bf16 => {
            TensorData::Bf16(bytes.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect())
        }
        DataType::Bytes => TensorData::Bytes(decode_bytes(name, count, bytes)?),
    })
}

fn decode_bytes(name: &str, count: usize, mut bytes: &[u8]) -> Result<Vec<Vec<u8>>, ApiError> {
    // Each element needs at least its 4-byte length: a larger count cannot fit.
    if count > bytes.len() / 4 {
        return Err(ApiError::Malformed(format!(
            "input '{name}' declares {count} BYTES elements but its {} bytes of binary data cannot hold them",
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    while !bytes.is_empty() {
        let Some((len, rest)) = bytes.split_first_chunk::<4>() else {
            return Err(ApiError::Malformed(format!("input '{name}': truncated BYTES length prefix")));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(ApiError::Malformed(format!(
                "input '{name}': BYTES element {} claims {len} bytes but only {} remain",
                out.len(),
                rest.len()
            )));
        }
        let (element, rest) = rest.split_at(len);
        out.push(element.to_vec());
        bytes = rest;
    }
    if out.len() != count {
        return Err(ApiError::Malformed(format!(
            "input '{name}' declares {count} BYTES elements but its binary data holds {}",
            out.len()
        )));
    }
    Ok(out)
}

/// Bytes `encode` will write for `data`.
pub fn encoded_len(data: &TensorData) -> usize {
    match data {
        TensorData::Bytes(v) => v.iter().fold(0usize, |acc, e| acc.saturating_add(4 + e.len())),
        other => other.len().saturating_mul(other.datatype().element_size().unwrap_or(0)),
    }
}

/// Appends `data` in the binary encoding.
pub fn encode(data: &TensorData, out: &mut Vec<u8>) {
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::U8(v) => out.extend_from_slice(v),
        TensorData::I8(v) => out.extend(v.iter().map(|&b| b as u8)),
        TensorData::U16(v) => le!(v),
        TensorData::U32(v) => le!(v),
        TensorData::U64(v) => le!(v),
        TensorData::I16(v) => le!(v),
        TensorData::I32(v) => le!(v),
        TensorData::I64(v) => le!(v),
        TensorData::F16(v) => le!(v),
        TensorData::Bf16(v) => le!(v),
        TensorData::F32(v) => le!(v),
        TensorData::F64(v) => le!(v),
        TensorData::Bytes(v) => {
            for e in v {
                out.extend_from_slice(&(e.len() as u32).to_le_bytes());
                out.extend_from_slice(e);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_datatype_round_trips() {
        let samples = [
            TensorData::Bool(vec![true, false]),
            TensorData::U8(vec![1, 255]),
            TensorData::U16(vec![1, 65535]),
            TensorData::U32(vec![7]),
            TensorData::U64(vec![u64::MAX]),
            TensorData::I8(vec![-1, 5]),
            TensorData::I16(vec![-300]),
            TensorData::I32(vec![-70000]),
            TensorData::I64(vec![i64::MIN]),
            TensorData::F16(vec![f16::from_f32(1.5)]),
            TensorData::Bf16(vec![bf16::from_f32(-2.0)]),
            TensorData::F32(vec![0.1, f32::NAN]),
            TensorData::F64(vec![1e300]),
            TensorData::Bytes(vec![b"ab".to_vec(), vec![], vec![0, 255]]),
        ];
        for data in samples {
            let mut bytes = Vec::new();
            encode(&data, &mut bytes);
            assert_eq!(bytes.len(), encoded_len(&data));
            let back = decode("x", data.datatype(), data.len(), &bytes).unwrap();
            // NaN != NaN: compare the encodings instead.
            let mut again = Vec::new();
            encode(&back, &mut again);
            assert_eq!(bytes, again, "{:?}", data.datatype());
        }
    }

    #[test]
    fn bytes_with_bad_lengths_are_refused() {
        let mut bytes = 10u32.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"short");
        assert!(decode("s", DataType::Bytes, 1, &bytes).unwrap_err().to_string().contains("claims 10 bytes"));
        assert!(decode("s", DataType::Bytes, 1_000_000, &bytes).is_err());
        assert!(decode("f", DataType::F32, 2, &[0; 7]).unwrap_err().to_string().contains("needs 8 bytes"));
    }
}
