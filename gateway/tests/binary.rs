//! Triton's binary tensor data extension in both directions, over real sockets: binary inputs
//! (`Inference-Header-Content-Length`, `binary_data_size`, little-endian raw elements, BYTES
//! with 4-byte length prefixes), binary outputs (`binary_data`, `binary_data_output`, the
//! octet-stream reply and its header), binary and JSON outputs mixed, non-finite floats (JSON
//! strings "NaN"/"Infinity"/"-Infinity", bit-exact in binary), and the size errors (400 naming
//! the input) after which the gateway keeps answering correctly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{TestGateway, length_prefixed, test_model};
use serde_json::{Value, json};

async fn start() -> TestGateway {
    let toml = [
        common::CREDIT.to_string(),
        test_model("multi_io"),
        test_model("scalar"),
        test_model("strings"),
        test_model("dtypes"),
    ]
    .concat();
    common::start(&toml).await
}

const CREDIT_INFER: &str = "/v2/models/credit-scoring/infer";

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect()
}

/// The credit request's features as f32, the same values `common::credit_request` sends.
fn credit_features(rows: usize) -> Vec<f32> {
    serde_json::from_value(common::credit_request(rows)["inputs"][0]["data"].clone()).unwrap()
}

fn binary_credit_header(rows: usize, size: usize) -> Value {
    json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows, 8],
                       "parameters": {"binary_data_size": size}}]})
}

/// A JSON credit request answers as it should: the gateway is still healthy.
async fn assert_still_serves(gw: &TestGateway, expected_outputs: &Value) {
    let reply = gw.infer("credit-scoring", &common::credit_request(3)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(&reply.json()["outputs"], expected_outputs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_input_gives_the_same_answer_as_json() {
    let gw = start().await;
    let json_reply = gw.infer("credit-scoring", &common::credit_request(3)).await;
    assert_eq!(json_reply.status, 200);
    let raw = f32_bytes(&credit_features(3));
    let reply = gw.post_binary(CREDIT_INFER, &binary_credit_header(3, raw.len()), &raw).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    // No binary output asked for: a plain JSON reply.
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert!(reply.header("inference-header-content-length").is_none());
    assert_eq!(reply.json()["outputs"], json_reply.json()["outputs"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_data_output_makes_every_output_binary() {
    let gw = start().await;
    let json_reply = gw.infer("credit-scoring", &common::credit_request(3)).await;
    let mut body = common::credit_request(3);
    body["parameters"] = json!({"binary_data_output": true});
    body["id"] = json!("bin-1");
    let reply = gw.post_json(CREDIT_INFER, &body).await;
    let binary = reply.binary();
    assert_eq!(binary.json["id"], "bin-1");
    assert_eq!(binary.json["model_version"], "1");
    let outs = binary.json["outputs"].as_array().unwrap();
    assert_eq!(outs[0]["parameters"]["binary_data_size"], 3 * 8);
    assert_eq!(outs[1]["parameters"]["binary_data_size"], 3 * 2 * 4);
    assert_eq!(outs[1]["shape"], json!([3, 2]));
    let labels: Vec<i64> =
        binary.part("label").chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().unwrap())).collect();
    assert_eq!(json!(labels), json_reply.output("label")["data"]);
    let probabilities: Vec<f64> = f32s(binary.part("probabilities")).into_iter().map(f64::from).collect();
    let from_json: Vec<f64> =
        serde_json::from_value(json_reply.output("probabilities")["data"].clone()).unwrap();
    // The JSON reply carries each f32 in its shortest exact form: the same bits either way.
    let from_json: Vec<f64> = from_json.into_iter().map(|x| f64::from(x as f32)).collect();
    assert_eq!(probabilities, from_json);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_and_json_outputs_mix_in_the_requested_order() {
    let gw = start().await;
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let y = [0.5f32, 0.5, -1.0, 10.0];
    let n = [7i64, -8];
    let mut raw = f32_bytes(&x);
    raw.extend(f32_bytes(&y));
    let header = json!({
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}},
            {"name": "y", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}},
            {"name": "n", "datatype": "INT64", "shape": [2], "data": n},
        ],
        "parameters": {"binary_data_output": true},
        "outputs": [
            {"name": "n_plus_one", "parameters": {"binary_data": false}},
            {"name": "sum.out"},
            {"name": "scaled.out", "parameters": {"binary_data": true}},
        ],
    });
    let binary = gw.post_binary("/v2/models/multi_io/infer", &header, &raw).await.binary();
    let outs = binary.json["outputs"].as_array().unwrap();
    let names: Vec<&str> = outs.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n_plus_one", "sum.out", "scaled.out"]);
    assert_eq!(outs[0]["data"], json!([8, -7]));
    assert!(outs[0].get("parameters").is_none(), "{}", outs[0]);
    assert_eq!(f32s(binary.part("sum.out")), [1.5, 2.5, 2.0, 14.0]);
    assert_eq!(f32s(binary.part("scaled.out")), [2.0, 4.0, 6.0, 8.0]);
    // Only the binary outputs follow the JSON, in the order they are listed.
    assert_eq!(binary.parts[0].0, "sum.out");

    // One binary output asked for by name, the rest as JSON.
    let body = json!({
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [3]},
            {"name": "y", "datatype": "FP32", "shape": [1, 1], "data": [4]},
            {"name": "n", "datatype": "INT64", "shape": [1], "data": [0]},
        ],
        "outputs": [{"name": "sum.out", "parameters": {"binary_data": true}}, {"name": "n_plus_one"}],
    });
    let binary = gw.infer("multi_io", &body).await.binary();
    assert_eq!(f32s(binary.part("sum.out")), [7.0]);
    assert_eq!(binary.json["outputs"][1]["data"], json!([1]));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_travel_with_length_prefixes_both_ways() {
    let gw = start().await;
    let elements: [&[u8]; 4] = [b"hello", b"", "Grüße 🙂".as_bytes(), b"a\"b"];
    let raw = length_prefixed(&elements);
    let header = json!({
        "inputs": [{"name": "text", "datatype": "BYTES", "shape": [4],
                    "parameters": {"binary_data_size": raw.len()}}],
        "outputs": [{"name": "tagged", "parameters": {"binary_data": true}}, {"name": "same"}],
    });
    let binary = gw.post_binary("/v2/models/strings/infer", &header, &raw).await.binary();
    assert_eq!(binary.json["outputs"][1]["data"], json!(["hello", "", "Grüße 🙂", "a\"b"]));
    let tagged: Vec<Vec<u8>> = elements.iter().map(|e| [*e, b"!"].concat()).collect();
    let tagged: Vec<&[u8]> = tagged.iter().map(Vec::as_slice).collect();
    assert_eq!(binary.part("tagged"), length_prefixed(&tagged));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datatype_travels_binary_both_ways_little_endian() {
    let gw = start().await;
    // (input, datatype, input bytes, expected output bytes): numbers doubled, BOOL negated.
    let h = |v: f32| half::f16::from_f32(v).to_le_bytes().to_vec();
    let cases: Vec<(&str, &str, Vec<u8>, Vec<u8>)> = vec![
        ("bool", "BOOL", vec![1, 0], vec![0, 1]),
        ("u8", "UINT8", vec![3, 127], vec![6, 254]),
        ("u16", "UINT16", le(&[1u16, 30000]), le(&[2u16, 60000])),
        ("u32", "UINT32", le(&[7u32, 2_000_000_000]), le(&[14u32, 4_000_000_000])),
        ("u64", "UINT64", le(&[1u64 << 62, 3]), le(&[1u64 << 63, 6])),
        ("i8", "INT8", vec![(-5i8) as u8, 60], vec![(-10i8) as u8, 120]),
        ("i16", "INT16", le(&[-300i16, 3]), le(&[-600i16, 6])),
        ("i32", "INT32", le(&[-70000i32, 1]), le(&[-140000i32, 2])),
        ("i64", "INT64", le(&[i64::MIN / 2, 5]), le(&[i64::MIN, 10])),
        ("f16", "FP16", [h(1.5), h(-0.25)].concat(), [h(3.0), h(-0.5)].concat()),
        ("f32", "FP32", f32_bytes(&[0.1, -2.5]), f32_bytes(&[0.2, -5.0])),
        ("f64", "FP64", le(&[0.1f64, 1e300]), le(&[0.2f64, 2e300])),
    ];
    let inputs: Vec<Value> = cases
        .iter()
        .map(|(name, dt, bytes, _)| {
            json!({"name": name, "datatype": dt, "shape": [2],
                   "parameters": {"binary_data_size": bytes.len()}})
        })
        .collect();
    let raw: Vec<u8> = cases.iter().flat_map(|c| c.2.clone()).collect();
    let header = json!({"inputs": inputs, "parameters": {"binary_data_output": true}});
    let binary = gw.post_binary("/v2/models/dtypes/infer", &header, &raw).await.binary();
    assert_eq!(binary.parts.len(), cases.len());
    for (name, dt, _, want) in &cases {
        let out_name = format!("{name}_out");
        let out = binary.json["outputs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == out_name.as_str())
            .unwrap();
        assert_eq!(out["datatype"], *dt);
        assert_eq!(binary.part(&out_name), want.as_slice(), "{name}");
    }
    gw.stop().await;
}

/// Little-endian bytes of any primitive slice.
fn le<T: ToLe>(values: &[T]) -> Vec<u8> {
    values.iter().flat_map(ToLe::le).collect()
}

trait ToLe {
    fn le(&self) -> Vec<u8>;
}

macro_rules! to_le {
    ($($t:ty),*) => {$(impl ToLe for $t { fn le(&self) -> Vec<u8> { self.to_le_bytes().to_vec() } })*};
}
to_le!(u16, u32, u64, i16, i32, i64, f64);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_finite_floats_are_strings_in_json_and_bit_exact_in_binary() {
    let gw = start().await;
    // y = 3x + 1 on a 0-d input given as a JSON string.
    for (x, y) in [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity")] {
        let body = json!({"inputs": [
            {"name": "x", "datatype": "FP32", "shape": [], "data": [x]},
            {"name": "k", "datatype": "INT64", "shape": [], "data": [2]},
        ]});
        let reply = gw.infer("scalar", &body).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.output("y")["data"], json!([y]), "x = {x}");
    }

    // sum.out = x + y: NaN, +Inf, -Inf, -0.0 and a plain number, as JSON and as binary.
    let x = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -0.0, 1.25];
    let y = [0.0f32, 1.0, 1.0, -0.0, 1.0];
    let header = json!({
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 5], "parameters": {"binary_data_size": 20}},
            {"name": "y", "datatype": "FP32", "shape": [1, 5], "parameters": {"binary_data_size": 20}},
            {"name": "n", "datatype": "INT64", "shape": [1], "data": [0]},
        ],
        "outputs": [{"name": "sum.out"}, {"name": "scaled.out", "parameters": {"binary_data": true}}],
    });
    let raw = [f32_bytes(&x), f32_bytes(&y)].concat();
    let binary = gw.post_binary("/v2/models/multi_io/infer", &header, &raw).await.binary();
    let sum = &binary.json["outputs"][0]["data"];
    assert_eq!(sum, &json!(["NaN", "Infinity", "-Infinity", -0.0, 2.25]));
    assert!(sum[3].as_f64().unwrap().is_sign_negative(), "-0.0 lost its sign: {sum}");
    let scaled = f32s(binary.part("scaled.out"));
    assert!(scaled[0].is_nan());
    let bits: Vec<u32> = scaled[1..].iter().map(|v| v.to_bits()).collect();
    let want: Vec<u32> = [f32::INFINITY, f32::NEG_INFINITY, -0.0, 2.5].iter().map(|v| v.to_bits()).collect();
    assert_eq!(bits, want);

    // FP64 and FP16 too (dtypes doubles them), JSON strings in, JSON strings out.
    let inputs: Vec<Value> =
        ["bool", "u8", "u16", "u32", "u64", "i8", "i16", "i32", "i64", "f16", "f32", "f64"]
            .iter()
            .map(|name| {
                let (dt, data) = match *name {
                    "bool" => ("BOOL", json!([true, true, true])),
                    "f16" => ("FP16", json!(["NaN", "Infinity", "-Infinity"])),
                    "f32" => ("FP32", json!(["-Infinity", "NaN", "Infinity"])),
                    "f64" => ("FP64", json!(["Infinity", "-Infinity", "NaN"])),
                    "u8" => ("UINT8", json!([1, 2, 3])),
                    "u16" => ("UINT16", json!([1, 2, 3])),
                    "u32" => ("UINT32", json!([1, 2, 3])),
                    "u64" => ("UINT64", json!([1, 2, 3])),
                    "i8" => ("INT8", json!([1, 2, 3])),
                    "i16" => ("INT16", json!([1, 2, 3])),
                    "i32" => ("INT32", json!([1, 2, 3])),
                    _ => ("INT64", json!([1, 2, 3])),
                };
                json!({"name": name, "datatype": dt, "shape": [3], "data": data})
            })
            .collect();
    let body = json!({ "inputs": inputs });
    let reply = gw.infer("dtypes", &body).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.output("f16_out")["data"], json!(["NaN", "Infinity", "-Infinity"]));
    assert_eq!(reply.output("f32_out")["data"], json!(["-Infinity", "NaN", "Infinity"]));
    assert_eq!(reply.output("f64_out")["data"], json!(["Infinity", "-Infinity", "NaN"]));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_size_errors_are_400_naming_the_input_and_the_gateway_carries_on() {
    let gw = start().await;
    let good = gw.infer("credit-scoring", &common::credit_request(3)).await.json()["outputs"].clone();
    let raw = f32_bytes(&credit_features(2));
    let two_rows = |size: usize| binary_credit_header(2, size);

    // (header, raw bytes, Inference-Header-Content-Length override, what the error must say)
    let short = &raw[..raw.len() - 4];
    let too_long = [raw.as_slice(), &[0, 0, 0, 0]].concat();
    let cases: Vec<(Value, &[u8], Option<&str>, &str)> = vec![
        // binary_data_size larger than what follows the JSON
        (two_rows(64), short, None, "binary_data_size 64"),
        // more bytes than any input claims
        (two_rows(64), &too_long, None, "no input claims"),
        // a size that is not rows x 8 x 4 bytes
        (two_rows(60), short, None, "needs 64 bytes"),
        (two_rows(68), &too_long, None, "needs 64 bytes"),
        // the header's JSON length is past the end of the body
        (two_rows(64), &raw, Some("100000"), "Inference-Header-Content-Length"),
        (two_rows(64), &raw, Some("twelve"), "Inference-Header-Content-Length"),
    ];
    for (header, bytes, length, expected) in cases {
        let reply = match length {
            None => gw.post_binary(CREDIT_INFER, &header, bytes).await,
            Some(n) => {
                let (body, _) = common::binary_body(&header, bytes);
                gw.post(CREDIT_INFER, body, &[("inference-header-content-length", n)]).await
            }
        };
        assert_eq!(reply.status, 400, "{header} {length:?}");
        assert_eq!(reply.header("content-type"), Some("application/json"));
        let error = reply.error();
        assert!(error.contains(expected), "wanted {expected:?} in {error:?}");
        if length.is_none() {
            assert!(error.contains("features") || error.contains("no input claims"), "{error}");
        }
        assert_still_serves(&gw, &good).await;
    }

    // binary_data_size in a plain JSON body (no Inference-Header-Content-Length): no binary
    // part to take it from.
    let reply = gw.post_json(CREDIT_INFER, &two_rows(64)).await;
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
    assert!(reply.error().contains("'features'"), "{}", reply.error());
    assert_still_serves(&gw, &good).await;

    // BYTES: a length prefix claiming more than remains, and a count that does not match.
    let mut lying = 50u32.to_le_bytes().to_vec();
    lying.extend_from_slice(b"short");
    let two = length_prefixed(&[b"a", b"b"]);
    for (raw, shape, expected) in [
        (lying, 1, "claims 50 bytes"),
        (two.clone(), 3, "declares 3 BYTES elements"),
        (two, 1, "declares 1 BYTES elements"),
    ] {
        let header = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [shape],
                                        "parameters": {"binary_data_size": raw.len()}}]});
        let reply = gw.post_binary("/v2/models/strings/infer", &header, &raw).await;
        assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
        let error = reply.error();
        assert!(error.contains("'text'") && error.contains(expected), "{error}");
        assert_still_serves(&gw, &good).await;
    }
    gw.stop().await;
}
