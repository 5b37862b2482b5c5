//! One captured exchange (`Record`) and its JSON form: one line per record in the capture
//! files, read back by `loadtest replay`. Tensors are written as the Open Inference Protocol's
//! JSON tensors (`name`, `datatype`, `shape`, flat `data`), so a record's `inputs` are a V2
//! request's inputs as they are and its `outputs` a V2 answer's outputs.
//!
//! Values follow the gateway's wire conventions: non-finite floats as the strings `"NaN"`,
//! `"Infinity"`, `"-Infinity"`; FP16/BF16 as their `f32` value; BYTES as strings (bytes that are
//! not UTF-8 are replaced, as in JSON answers). Reading accepts nested `data` too, as other
//! servers answer.

use std::borrow::Cow;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::tensor::Tensor;

/// One answered request, as captured.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// When the answer was ready, in microseconds since the Unix epoch (replay paces by it).
    pub time_us: u64,
    pub model: String,
    /// The version that answered.
    pub version: u64,
    /// The version's role for this request: `primary`, `candidate` or `pinned`.
    pub role: Cow<'static, str>,
    /// Why that version: `primary`, `candidate` (weighted draw), `sticky` or `pinned`.
    pub reason: Cow<'static, str>,
    /// The routing generation that served it (`x-gateway-generation`).
    pub generation: u64,
    /// The request's `id`, else its `x-request-id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The tenant the request was admitted as (`[auth]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// From picking the version to the encoded answer, in microseconds.
    pub latency_us: u64,
    /// The decoded inputs, in the version's signature order.
    #[serde(with = "tensors")]
    pub inputs: Arc<Vec<Tensor>>,
    /// Every output the version produced (not only those the client asked for).
    #[serde(with = "tensors")]
    pub outputs: Arc<Vec<Tensor>>,
}

/// Serde for lists of V2 JSON tensors: `#[serde(with = "tensors")]` on an `Arc<Vec<Tensor>>`,
/// `deserialize_with = "tensors::deserialize_vec"` on a `Vec<Tensor>` (an answer's outputs),
/// `serialize_with = "tensors::serialize_slice"` on a `&[Tensor]`.
pub mod tensors {
    use std::sync::Arc;

    use serde::de::Error as _;
    use serde::ser::SerializeMap;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use serde_json::Value;

    use crate::tensor::{DataType, Tensor, TensorData, element_count};

    pub fn serialize<S: Serializer>(tensors: &Arc<Vec<Tensor>>, s: S) -> Result<S::Ok, S::Error> {
        serialize_slice(tensors, s)
    }

    pub fn serialize_slice<S: Serializer>(tensors: &[Tensor], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(tensors.iter().map(Wire))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Arc<Vec<Tensor>>, D::Error> {
        deserialize_vec(d).map(Arc::new)
    }

    pub fn deserialize_vec<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Tensor>, D::Error> {
        let raw: Vec<RawTensor> = Vec::deserialize(d)?;
        raw.into_iter().map(|t| t.into_tensor().map_err(D::Error::custom)).collect()
    }

    /// A tensor as V2 JSON.
    struct Wire<'a>(&'a Tensor);

    impl Serialize for Wire<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            let t = self.0;
            let mut map = s.serialize_map(Some(4))?;
            map.serialize_entry("name", &t.name)?;
            map.serialize_entry("datatype", t.datatype().as_str())?;
            map.serialize_entry("shape", &t.shape)?;
            map.serialize_entry("data", &Data(&t.data))?;
            map.end()
        }
    }

    struct Data<'a>(&'a TensorData);

    impl Serialize for Data<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            match self.0 {
                TensorData::Bool(v) => s.collect_seq(v),
                TensorData::U8(v) => s.collect_seq(v),
                TensorData::U16(v) => s.collect_seq(v),
                TensorData::U32(v) => s.collect_seq(v),
                TensorData::U64(v) => s.collect_seq(v),
                TensorData::I8(v) => s.collect_seq(v),
                TensorData::I16(v) => s.collect_seq(v),
                TensorData::I32(v) => s.collect_seq(v),
                TensorData::I64(v) => s.collect_seq(v),
                TensorData::F16(v) => s.collect_seq(v.iter().map(|x| F32(x.to_f32()))),
                TensorData::Bf16(v) => s.collect_seq(v.iter().map(|x| F32(x.to_f32()))),
                TensorData::F32(v) => s.collect_seq(v.iter().map(|x| F32(*x))),
                TensorData::F64(v) => s.collect_seq(v.iter().map(|x| F64(*x))),
                TensorData::Bytes(v) => s.collect_seq(v.iter().map(|b| String::from_utf8_lossy(b))),
            }
        }
    }

    /// `f32` written as `f32` (the shortest text that reads back to the same value).
    struct F32(f32);
    struct F64(f64);

    impl Serialize for F32 {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0.is_finite() {
                s.serialize_f32(self.0)
            } else {
                s.serialize_str(non_finite(self.0.into()))
            }
        }
    }

    impl Serialize for F64 {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            if self.0.is_finite() { s.serialize_f64(self.0) } else { s.serialize_str(non_finite(self.0)) }
        }
    }

    fn non_finite(x: f64) -> &'static str {
        if x.is_nan() {
            "NaN"
        } else if x < 0.0 {
            "-Infinity"
        } else {
            "Infinity"
        }
    }

    #[derive(Deserialize)]
    struct RawTensor {
        name: String,
        datatype: String,
        shape: Vec<usize>,
        data: Value,
    }

    impl RawTensor {
        fn into_tensor(self) -> Result<Tensor, String> {
            let name = self.name;
            let datatype = DataType::parse(&self.datatype)
                .ok_or_else(|| format!("tensor {name}: unknown datatype {:?}", self.datatype))?;
            let mut flat = Vec::new();
            flatten(self.data, &mut flat);
            let count =
                element_count(&self.shape).ok_or_else(|| format!("tensor {name}: shape overflows"))?;
            if flat.len() != count {
                return Err(format!(
                    "tensor {name}: shape {:?} needs {count} values, got {}",
                    self.shape,
                    flat.len()
                ));
            }
            let data =
                values(datatype, &flat).ok_or_else(|| format!("tensor {name}: a value is not {datatype}"))?;
            Ok(Tensor { name, shape: self.shape, data })
        }
    }

    fn flatten(value: Value, out: &mut Vec<Value>) {
        match value {
            Value::Array(items) => items.into_iter().for_each(|v| flatten(v, out)),
            other => out.push(other),
        }
    }

    /// The elements as `datatype`; `None` when one does not fit.
    fn values(datatype: DataType, flat: &[Value]) -> Option<TensorData> {
        fn all<T>(flat: &[Value], f: impl Fn(&Value) -> Option<T>) -> Option<Vec<T>> {
            flat.iter().map(f).collect()
        }
        let unsigned = |v: &Value| v.as_u64();
        let signed = |v: &Value| v.as_i64();
        Some(match datatype {
            DataType::Bool => TensorData::Bool(all(flat, Value::as_bool)?),
            DataType::U8 => TensorData::U8(all(flat, |v| unsigned(v)?.try_into().ok())?),
            DataType::U16 => TensorData::U16(all(flat, |v| unsigned(v)?.try_into().ok())?),
            DataType::U32 => TensorData::U32(all(flat, |v| unsigned(v)?.try_into().ok())?),
            DataType::U64 => TensorData::U64(all(flat, unsigned)?),
            DataType::I8 => TensorData::I8(all(flat, |v| signed(v)?.try_into().ok())?),
            DataType::I16 => TensorData::I16(all(flat, |v| signed(v)?.try_into().ok())?),
            DataType::I32 => TensorData::I32(all(flat, |v| signed(v)?.try_into().ok())?),
            DataType::I64 => TensorData::I64(all(flat, signed)?),
            DataType::F16 => TensorData::F16(all(flat, |v| Some(half::f16::from_f64(float(v)?)))?),
            DataType::Bf16 => TensorData::Bf16(all(flat, |v| Some(half::bf16::from_f64(float(v)?)))?),
            DataType::F32 => TensorData::F32(all(flat, |v| Some(float(v)? as f32))?),
            DataType::F64 => TensorData::F64(all(flat, float)?),
            DataType::Bytes => TensorData::Bytes(all(flat, |v| Some(v.as_str()?.as_bytes().to_vec()))?),
        })
    }

    /// A JSON number, or one of the strings non-finite floats are written as.
    fn float(v: &Value) -> Option<f64> {
        match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.as_str() {
                "NaN" | "nan" => Some(f64::NAN),
                "Infinity" | "inf" => Some(f64::INFINITY),
                "-Infinity" | "-inf" => Some(f64::NEG_INFINITY),
                _ => None,
            },
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::TensorData;

    fn record() -> Record {
        let t = |name: &str, shape: &[usize], data| Tensor { name: name.into(), shape: shape.to_vec(), data };
        Record {
            time_us: 1_700_000_000_123_456,
            model: "m".into(),
            version: 2,
            role: "candidate".into(),
            reason: "sticky".into(),
            generation: 7,
            request_id: Some("r-1".into()),
            tenant: Some("scoring-app".into()),
            latency_us: 850,
            inputs: Arc::new(vec![
                t("x", &[1, 3], TensorData::F32(vec![0.1, f32::NAN, f32::NEG_INFINITY])),
                t("s", &[2], TensorData::Bytes(vec![b"a\"b".to_vec(), Vec::new()])),
                t("h", &[1], TensorData::F16(vec![half::f16::from_f32(0.5)])),
            ]),
            outputs: Arc::new(vec![
                t("label", &[1], TensorData::I64(vec![-3])),
                t("ok", &[2], TensorData::Bool(vec![true, false])),
                t("u", &[1], TensorData::U8(vec![255])),
            ]),
        }
    }

    #[test]
    fn records_read_back_as_written() {
        let r = record();
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""data":[0.1,"NaN","-Infinity"]"#), "{line}");
        let back: Record = serde_json::from_str(&line).unwrap();
        // NaN != NaN: compare the text of the re-encoded record instead.
        assert_eq!(serde_json::to_string(&back).unwrap(), line);
        assert_eq!(back.outputs, r.outputs);
        assert_eq!(back.role, "candidate");
    }

    #[test]
    fn nested_data_and_bad_values() {
        #[derive(Deserialize)]
        struct Answer {
            #[serde(deserialize_with = "tensors::deserialize_vec")]
            outputs: Vec<Tensor>,
        }
        let ok =
            r#"{"outputs":[{"name":"p","datatype":"FP32","shape":[2,2],"data":[[1,2],[3,"Infinity"]]}]}"#;
        let a: Answer = serde_json::from_str(ok).unwrap();
        assert_eq!(a.outputs[0].data, TensorData::F32(vec![1.0, 2.0, 3.0, f32::INFINITY]));
        let short = r#"{"outputs":[{"name":"p","datatype":"FP32","shape":[2,2],"data":[1,2,3]}]}"#;
        assert!(serde_json::from_str::<Answer>(short).is_err());
        let wide = r#"{"outputs":[{"name":"p","datatype":"UINT8","shape":[1],"data":[256]}]}"#;
        assert!(serde_json::from_str::<Answer>(wide).is_err());
    }
}
