//! Raw little-endian element encoding for the binary tensor data extension: BOOL as one byte,
//! BYTES as a 4-byte little-endian length before each element, everything else at its width.

use half::{bf16, f16};
use serde_json::Value;

/// Encodes JSON element values of `datatype` to the extension's raw bytes.
pub fn encode(datatype: &str, data: &[Value]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(data.len() * 8);
    for value in data {
        push(&mut out, datatype, value)?;
    }
    Ok(out)
}

fn push(out: &mut Vec<u8>, datatype: &str, value: &Value) -> Result<(), String> {
    let bad = || format!("{value} is not a valid {datatype} element");
    match datatype {
        "BOOL" => out.push(u8::from(value.as_bool().ok_or_else(bad)?)),
        "BYTES" => {
            let s = value.as_str().ok_or_else(bad)?.as_bytes();
            out.extend_from_slice(&u32::try_from(s.len()).map_err(|_| bad())?.to_le_bytes());
            out.extend_from_slice(s);
        }
        "FP16" => out.extend_from_slice(&f16::from_f64(float(value).ok_or_else(bad)?).to_le_bytes()),
        "BF16" => out.extend_from_slice(&bf16::from_f64(float(value).ok_or_else(bad)?).to_le_bytes()),
        // Narrowing to f32 is what an FP32 tensor means.
        "FP32" => out.extend_from_slice(&(float(value).ok_or_else(bad)? as f32).to_le_bytes()),
        "FP64" => out.extend_from_slice(&float(value).ok_or_else(bad)?.to_le_bytes()),
        _ => push_int(out, datatype, value).ok_or_else(bad)?,
    }
    Ok(())
}

fn float(value: &Value) -> Option<f64> {
    value.as_f64().or_else(|| match value.as_str()? {
        "NaN" => Some(f64::NAN),
        "Infinity" => Some(f64::INFINITY),
        "-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    })
}

fn push_int(out: &mut Vec<u8>, datatype: &str, value: &Value) -> Option<()> {
    let i = value.as_i64().map(i128::from).or(value.as_u64().map(i128::from))?;
    match datatype {
        "UINT8" => out.extend_from_slice(&u8::try_from(i).ok()?.to_le_bytes()),
        "UINT16" => out.extend_from_slice(&u16::try_from(i).ok()?.to_le_bytes()),
        "UINT32" => out.extend_from_slice(&u32::try_from(i).ok()?.to_le_bytes()),
        "UINT64" => out.extend_from_slice(&u64::try_from(i).ok()?.to_le_bytes()),
        "INT8" => out.extend_from_slice(&i8::try_from(i).ok()?.to_le_bytes()),
        "INT16" => out.extend_from_slice(&i16::try_from(i).ok()?.to_le_bytes()),
        "INT32" => out.extend_from_slice(&i32::try_from(i).ok()?.to_le_bytes()),
        "INT64" => out.extend_from_slice(&i64::try_from(i).ok()?.to_le_bytes()),
        _ => return None,
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn widths_and_order() {
        assert_eq!(encode("INT64", &[json!(1)]).unwrap(), 1i64.to_le_bytes());
        assert_eq!(encode("UINT16", &[json!(258)]).unwrap(), vec![2, 1]);
        assert_eq!(encode("INT8", &[json!(-1)]).unwrap(), vec![0xff]);
        assert_eq!(encode("BOOL", &[json!(true), json!(false)]).unwrap(), vec![1, 0]);
        assert_eq!(encode("FP64", &[json!(0.5)]).unwrap(), 0.5f64.to_le_bytes());
        assert_eq!(encode("FP16", &[json!(1.0)]).unwrap(), f16::ONE.to_le_bytes());
        assert_eq!(encode("FP32", &[json!("NaN")]).unwrap(), f32::NAN.to_le_bytes());
    }

    #[test]
    fn bytes_are_length_prefixed() {
        assert_eq!(encode("BYTES", &[json!("ab")]).unwrap(), vec![2, 0, 0, 0, b'a', b'b']);
    }

    #[test]
    fn out_of_range_and_wrong_kinds_fail() {
        assert!(encode("UINT8", &[json!(256)]).is_err());
        assert!(encode("INT32", &[json!(1.5)]).is_err());
        assert!(encode("BOOL", &[json!(1)]).is_err());
        assert!(encode("COMPLEX", &[json!(1)]).is_err());
    }
}
