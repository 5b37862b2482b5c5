//! The V2 (Open Inference Protocol) REST surface over real sockets and real ONNX models:
//! server metadata and health, model metadata, readiness and Triton's model configuration,
//! routed and pinned inference with their headers, request ids, output selection, nested and
//! flat JSON data, 0-d, BYTES and every numeric datatype, several inputs and outputs, a
//! control-flow model, Triton's statistics extension, and every entry of `models/tests/reference.json` (Python onnxruntime's
//! answers) reproduced by the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Reply, TestGateway, assert_data_close, test_model};
use serde_json::{Value, json};

/// Every model the reference file names, credit-scoring with all three versions loaded
/// (1 primary, 2 and 3 pin-only) and batching on, so its Triton config drops the batch dim.
fn all_models() -> String {
    let mut toml = String::from(
        "[models.credit-scoring]\nrepository = \"REPO\"\n\
         batching = { max_batch_size = 8, max_queue_delay_us = 200 }\n\
         routing = { primary = 1, versions = [2, 3], pin_header = \"x-pin-version\" }\n\
         [models.dense]\nrepository = \"REPO\"\nrouting = { primary = 1 }\n",
    );
    for m in ["multi_io", "scalar", "strings", "dtypes", "control_flow", "slow", "fixed", "norank", "embed"] {
        toml.push_str(&test_model(m));
    }
    toml
}

async fn start_all() -> TestGateway {
    common::start(&all_models()).await
}

fn ok(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-type"), Some("application/json"));
    reply.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_metadata_names_the_gateway_and_its_extensions() {
    let gw = start_all().await;
    let v = ok(&gw.get("/v2").await);
    assert_eq!(v["name"], "gateway");
    assert!(!v["version"].as_str().unwrap().is_empty(), "{v}");
    let extensions = v["extensions"].as_array().unwrap();
    for e in ["binary_tensor_data", "model_configuration", "statistics"] {
        assert!(extensions.contains(&json!(e)), "{v}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_live_and_ready_are_200_with_json_bodies() {
    let gw = start_all().await;
    assert_eq!(ok(&gw.get("/v2/health/live").await), json!({"live": true}));
    assert_eq!(ok(&gw.get("/v2/health/ready").await), json!({"ready": true}));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_failed_to_load_makes_readiness_503_and_names_it() {
    let gw = common::start(&format!("{}{}", test_model("broken"), test_model("scalar"))).await;
    let server = gw.get("/v2/health/ready").await;
    assert_eq!(server.status, 503);
    assert_eq!(server.json(), json!({"ready": false, "not_ready": ["broken"]}));

    let model = gw.get("/v2/models/broken/ready").await;
    assert_eq!(model.status, 503);
    assert_eq!(model.json(), json!({"name": "broken", "ready": false}));
    let healthy = ok(&gw.get("/v2/models/scalar/ready").await);
    assert_eq!(healthy, json!({"name": "scalar", "ready": true}));

    let infer = gw
        .infer("broken", &json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1]}]}))
        .await;
    assert_eq!(infer.status, 503);
    assert!(infer.header("retry-after").is_some());
    assert!(infer.error().contains("'broken' is not ready"), "{}", infer.error());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metadata_lists_versions_platform_and_dynamic_dims_as_minus_one() {
    let gw = start_all().await;
    let v = ok(&gw.get("/v2/models/credit-scoring").await);
    assert_eq!(
        v,
        json!({
            "name": "credit-scoring",
            "versions": ["1", "2", "3"],
            "platform": "onnx_onnxv1",
            "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, 8]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]},
            ],
        })
    );
    let v2 = ok(&gw.get("/v2/models/credit-scoring/versions/2").await);
    assert_eq!(v2["name"], "credit-scoring");
    assert_eq!(v2["versions"], json!(["2"]));
    assert_eq!(v2["inputs"], v["inputs"]);

    let multi = ok(&gw.get("/v2/models/multi_io").await);
    assert_eq!(multi["inputs"][2], json!({"name": "n", "datatype": "INT64", "shape": [-1]}));
    let outputs: Vec<&Value> = multi["outputs"].as_array().unwrap().iter().collect();
    assert_eq!(outputs[0], &json!({"name": "sum.out", "datatype": "FP32", "shape": [-1, -1]}));
    assert_eq!(outputs[1]["name"], "scaled.out");

    let scalar = ok(&gw.get("/v2/models/scalar/versions/1").await);
    assert_eq!(scalar["inputs"][0], json!({"name": "x", "datatype": "FP32", "shape": []}));
    let fixed = ok(&gw.get("/v2/models/fixed").await);
    assert_eq!(fixed["inputs"][0]["shape"], json!([2, 3]));
    let strings = ok(&gw.get("/v2/models/strings").await);
    assert_eq!(strings["inputs"][0]["datatype"], "BYTES");

    let missing = gw.get("/v2/models/credit-scoring/versions/4").await;
    assert_eq!(missing.status, 404);
    assert!(missing.error().contains("no served version 4"), "{}", missing.error());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_ready_is_200_per_served_version_and_503_for_others() {
    let gw = start_all().await;
    assert_eq!(
        ok(&gw.get("/v2/models/credit-scoring/ready").await),
        json!({"name": "credit-scoring", "ready": true})
    );
    assert_eq!(
        ok(&gw.get("/v2/models/credit-scoring/versions/3/ready").await),
        json!({"name": "credit-scoring", "ready": true, "version": "3"})
    );
    let not_served = gw.get("/v2/models/credit-scoring/versions/9/ready").await;
    assert_eq!(not_served.status, 503);
    assert_eq!(not_served.json(), json!({"name": "credit-scoring", "ready": false, "version": "9"}));
    let unknown = gw.get("/v2/models/nope/ready").await;
    assert_eq!(unknown.status, 404);
    assert!(unknown.error().contains("'nope'"), "{}", unknown.error());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triton_config_leaves_out_the_batch_dim_only_when_batching() {
    let gw = start_all().await;
    let c = ok(&gw.get("/v2/models/credit-scoring/config").await);
    assert_eq!(c["name"], "credit-scoring");
    assert_eq!(c["platform"], "onnxruntime_onnx");
    assert_eq!(c["max_batch_size"], 8);
    assert_eq!(c["input"], json!([{"name": "features", "data_type": "TYPE_FP32", "dims": [8]}]));
    assert_eq!(
        c["output"],
        json!([
            {"name": "label", "data_type": "TYPE_INT64", "dims": []},
            {"name": "probabilities", "data_type": "TYPE_FP32", "dims": [2]},
        ])
    );
    assert_eq!(c["dynamic_batching"]["max_queue_delay_microseconds"], 200);
    assert_eq!(c["instance_group"][0]["count"], 1);

    // No batching configured: max_batch_size 0, full dims, no dynamic_batching.
    let fixed = ok(&gw.get("/v2/models/fixed/versions/1/config").await);
    assert_eq!(fixed["max_batch_size"], 0);
    assert_eq!(fixed["input"][0]["dims"], json!([2, 3]));
    assert!(fixed.get("dynamic_batching").is_none(), "{fixed}");

    let dtypes = ok(&gw.get("/v2/models/dtypes/config").await);
    let types: Vec<&str> =
        dtypes["input"].as_array().unwrap().iter().map(|t| t["data_type"].as_str().unwrap()).collect();
    let want = [
        "TYPE_BOOL",
        "TYPE_UINT8",
        "TYPE_UINT16",
        "TYPE_UINT32",
        "TYPE_UINT64",
        "TYPE_INT8",
        "TYPE_INT16",
        "TYPE_INT32",
        "TYPE_INT64",
        "TYPE_FP16",
        "TYPE_FP32",
        "TYPE_FP64",
    ];
    assert_eq!(types, want);
    assert_eq!(dtypes["input"][0]["dims"], json!([-1]));
    let strings = ok(&gw.get("/v2/models/strings/config").await);
    assert_eq!(strings["input"][0]["data_type"], "TYPE_STRING");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routed_infer_is_answered_by_the_primary_and_says_so() {
    let gw = start_all().await;
    let reply = gw.infer("credit-scoring", &common::credit_request(2)).await;
    let v = ok(&reply);
    assert_eq!(v["model_name"], "credit-scoring");
    assert_eq!(v["model_version"], "1");
    assert_eq!(reply.header("x-model-version"), Some("1"));
    assert_eq!(reply.header("x-route-reason"), Some("primary"));
    assert!(v.get("id").is_none(), "no id was sent: {v}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pinned_infer_is_answered_by_the_named_version_by_path_or_header() {
    let gw = start_all().await;
    let body = common::credit_request(4);
    let mut probabilities = Vec::new();
    for version in ["1", "2", "3"] {
        let path = format!("/v2/models/credit-scoring/versions/{version}/infer");
        let reply = gw.post_json(&path, &body).await;
        let v = ok(&reply);
        assert_eq!(v["model_version"], version);
        assert_eq!(reply.header("x-model-version"), Some(version));
        assert_eq!(reply.header("x-route-reason"), Some("pinned"));
        probabilities.push(reply.output("probabilities")["data"].clone());
    }
    // Version 2's bias shifts every score: a pin that reached version 1 would not differ.
    assert_ne!(probabilities[0], probabilities[1]);

    let bytes = serde_json::to_vec(&body).unwrap();
    let by_header = gw
        .post(
            "/v2/models/credit-scoring/infer",
            bytes,
            &[("content-type", "application/json"), ("x-pin-version", "2")],
        )
        .await;
    assert_eq!(ok(&by_header)["model_version"], "2");
    assert_eq!(by_header.header("x-route-reason"), Some("pinned"));
    assert_eq!(by_header.output("probabilities")["data"], probabilities[1]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_is_echoed_with_the_model_version() {
    let gw = start_all().await;
    let mut body = common::credit_request(1);
    body["id"] = json!("req-\"42\"-ü");
    let v = ok(&gw.infer("credit-scoring", &body).await);
    assert_eq!(v["id"], "req-\"42\"-ü");
    assert_eq!(v["model_version"], "1");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_outputs_come_back_alone_and_in_the_requested_order() {
    let gw = start_all().await;
    let body = json!({
        "inputs": [
            {"name": "x", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]},
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [10, 20]},
            {"name": "n", "datatype": "INT64", "shape": [3], "data": [1, 2, 3]},
        ],
        "outputs": [{"name": "n_plus_one"}, {"name": "sum.out"}],
    });
    let v = ok(&gw.infer("multi_io", &body).await);
    let outputs = v["outputs"].as_array().unwrap();
    let names: Vec<&str> = outputs.iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n_plus_one", "sum.out"]);
    assert_eq!(outputs[0]["data"], json!([2, 3, 4]));
    assert_eq!(outputs[1]["data"], json!([11.0, 22.0]));

    let mut only = common::credit_request(2);
    only["outputs"] = json!([{"name": "probabilities"}]);
    let v = ok(&gw.infer("credit-scoring", &only).await);
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(v["outputs"][0]["name"], "probabilities");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_and_flat_json_data_give_the_same_answer() {
    let gw = start_all().await;
    let flat = common::credit_request(3);
    let values: Vec<f64> = serde_json::from_value(flat["inputs"][0]["data"].clone()).unwrap();
    let rows: Vec<&[f64]> = values.chunks(8).collect();
    let mut nested = flat.clone();
    nested["inputs"][0]["data"] = json!(rows);
    let a = ok(&gw.infer("credit-scoring", &flat).await);
    let b = ok(&gw.infer("credit-scoring", &nested).await);
    assert_eq!(a["outputs"], b["outputs"]);
    assert_eq!(a["outputs"][1]["shape"], json!([3, 2]));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_dimensional_tensors_go_in_and_come_out_with_shape_empty() {
    let gw = start_all().await;
    let body = json!({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [], "data": [2.5]},
        {"name": "k", "datatype": "INT64", "shape": [], "data": [-9]},
    ]});
    let reply = gw.infer("scalar", &body).await;
    ok(&reply);
    assert_eq!(reply.output("y"), json!({"name": "y", "datatype": "FP32", "shape": [], "data": [8.5]}));
    assert_eq!(reply.output("k2"), json!({"name": "k2", "datatype": "INT64", "shape": [], "data": [81]}));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_tensors_carry_utf8_strings_through_the_model() {
    let gw = start_all().await;
    let text = ["plain", "", "Grüße 🙂", "quote \" and \\ backslash", "tab\tnew\nline"];
    let body = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [5], "data": text}]});
    let reply = gw.infer("strings", &body).await;
    ok(&reply);
    assert_eq!(reply.output("same")["datatype"], "BYTES");
    assert_eq!(reply.output("same")["data"], json!(text));
    let tagged: Vec<String> = text.iter().map(|t| format!("{t}!")).collect();
    assert_eq!(reply.output("tagged")["data"], json!(tagged));
    assert_eq!(reply.output("tagged")["shape"], json!([5]));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_datatype_goes_in_and_comes_out_computed_and_exact() {
    let gw = start_all().await;
    // (input, datatype, values, expected output): numbers doubled, booleans negated. The
    // 64-bit values are past 2^53, so an f64 detour anywhere would change them.
    let cases = [
        ("bool", "BOOL", json!([true, false]), json!([false, true])),
        ("u8", "UINT8", json!([0, 127]), json!([0, 254])),
        ("u16", "UINT16", json!([1, 32767]), json!([2, 65534])),
        ("u32", "UINT32", json!([3, 2147483647]), json!([6, 4294967294u64])),
        ("u64", "UINT64", json!([5, 4611686018427387907u64]), json!([10, 9223372036854775814u64])),
        ("i8", "INT8", json!([-64, 63]), json!([-128, 126])),
        ("i16", "INT16", json!([-16384, 7]), json!([-32768, 14])),
        ("i32", "INT32", json!([-1073741824, 9]), json!([-2147483648i64, 18])),
        (
            "i64",
            "INT64",
            json!([-4611686018427387903i64, 2305843009213693953i64]),
            json!([-9223372036854775806i64, 4611686018427387906i64]),
        ),
        ("f16", "FP16", json!([1.5, 32752]), json!([3.0, 65504.0])),
        ("f32", "FP32", json!([0.25, -3.5e30]), json!([0.5, -7e30])),
        ("f64", "FP64", json!([0.1, -1e300]), json!([0.2, -2e300])),
    ];
    let inputs: Vec<Value> = cases
        .iter()
        .map(|(name, dt, data, _)| json!({"name": name, "datatype": dt, "shape": [2], "data": data}))
        .collect();
    let reply = gw.infer("dtypes", &json!({ "inputs": inputs })).await;
    ok(&reply);
    assert_eq!(reply.json()["outputs"].as_array().unwrap().len(), cases.len());
    for (name, dt, _, want) in &cases {
        let out = reply.output(&format!("{name}_out"));
        assert_eq!(out["datatype"], *dt, "{out}");
        assert_eq!(out["shape"], json!([2]), "{out}");
        if dt.starts_with("FP") {
            assert_data_close(name, want, &out["data"]);
        } else {
            assert_eq!(out["data"], *want, "{name}");
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_inputs_and_outputs_with_independent_dynamic_dims() {
    let gw = start_all().await;
    let body = json!({"inputs": [
        {"name": "n", "datatype": "INT64", "shape": [5], "data": [0, -1, 1, 41, -9000000000000i64]},
        {"name": "y", "datatype": "FP32", "shape": [3, 1], "data": [[0.5], [1.5], [-1]]},
        {"name": "x", "datatype": "FP32", "shape": [3, 1], "data": [1, 2, 3]},
    ]});
    let reply = gw.infer("multi_io", &body).await;
    let v = ok(&reply);
    let names: Vec<&str> =
        v["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sum.out", "scaled.out", "n_plus_one"]);
    assert_eq!(reply.output("sum.out")["shape"], json!([3, 1]));
    assert_eq!(reply.output("sum.out")["data"], json!([1.5, 3.5, 2.0]));
    assert_eq!(reply.output("scaled.out")["data"], json!([2.0, 4.0, 6.0]));
    assert_eq!(reply.output("n_plus_one")["data"], json!([1, 0, 2, 42, -8999999999999i64]));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_flow_model_takes_the_branch_its_input_chooses() {
    let gw = start_all().await;
    for (cond, want) in [(true, json!([2.0, 5.0, -6.0])), (false, json!([0.0, 1.5, -4.0]))] {
        let body = json!({"inputs": [
            {"name": "cond", "datatype": "BOOL", "shape": [], "data": [cond]},
            {"name": "x", "datatype": "FP32", "shape": [3], "data": [1, 2.5, -3]},
        ]});
        let reply = gw.infer("control_flow", &body).await;
        ok(&reply);
        assert_eq!(reply.output("y")["data"], want, "cond = {cond}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reference_entry_matches_python_onnxruntime() {
    let gw = start_all().await;
    let entries = common::reference();
    assert!(entries.len() >= 12, "reference.json has {} entries", entries.len());
    for entry in &entries {
        let model = entry["model"].as_str().unwrap();
        let version = entry["version"].as_u64().unwrap();
        let what = format!("{model} v{version}");
        let path = format!("/v2/models/{model}/versions/{version}/infer");
        let reply = gw.post_json(&path, &json!({"inputs": entry["inputs"]})).await;
        assert_eq!(reply.status, 200, "{what}: {}", String::from_utf8_lossy(&reply.body));
        let v = reply.json();
        assert_eq!(v["model_name"], model);
        assert_eq!(v["model_version"], version.to_string());
        let expected = entry["outputs"].as_array().unwrap();
        assert_eq!(v["outputs"].as_array().unwrap().len(), expected.len(), "{what}");
        for want in expected {
            let name = want["name"].as_str().unwrap();
            let got = reply.output(name);
            assert_eq!(got["datatype"], want["datatype"], "{what} {name}");
            assert_eq!(got["shape"], want["shape"], "{what} {name}");
            assert_data_close(&format!("{what} {name}"), &want["data"], &got["data"]);
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compressed_requests_are_decoded_and_bombs_refused() {
    use std::io::Write;
    let gw = common::start_with_server(common::CREDIT, "max_request_bytes = 100000").await;
    let body = serde_json::to_vec(&common::credit_request(2)).unwrap();
    let plain = gw.infer("credit-scoring", &common::credit_request(2)).await.json()["outputs"].clone();
    for (encoding, compressed) in [
        ("gzip", {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&body).unwrap();
            e.finish().unwrap()
        }),
        ("deflate", {
            let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(&body).unwrap();
            e.finish().unwrap()
        }),
    ] {
        let reply =
            gw.post("/v2/models/credit-scoring/infer", compressed, &[("content-encoding", encoding)]).await;
        assert_eq!(reply.status, 200, "{encoding}: {}", String::from_utf8_lossy(&reply.body));
        assert_eq!(reply.json()["outputs"], plain, "{encoding}");
    }
    // 10 MB of zeros compress to a few KB: the decompressed size is bounded too.
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(&vec![b' '; 10_000_000]).unwrap();
    let bomb = gw
        .post("/v2/models/credit-scoring/infer", e.finish().unwrap(), &[("content-encoding", "gzip")])
        .await;
    assert_eq!(bomb.status, 413);
    let br = gw.post("/v2/models/credit-scoring/infer", body, &[("content-encoding", "br")]).await;
    assert_eq!(br.status, 415, "{}", br.error());
}

/// The one entry of `model_stats` for `version`.
fn stats_of(v: &Value, version: &str) -> Value {
    let all = v["model_stats"].as_array().unwrap();
    all.iter().find(|s| s["version"] == version).cloned().unwrap_or_else(|| panic!("no v{version} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statistics_count_requests_runs_and_rows_per_version() {
    let gw = start_all().await;
    ok(&gw.infer("credit-scoring", &common::credit_request(2)).await);
    ok(&gw.infer("credit-scoring", &common::credit_request(3)).await);
    ok(&gw.post_json("/v2/models/credit-scoring/versions/2/infer", &common::credit_request(1)).await);

    let v = ok(&gw.get("/v2/models/credit-scoring/stats").await);
    assert_eq!(v["model_stats"].as_array().unwrap().len(), 3, "every served version: {v}");
    let v1 = stats_of(&v, "1");
    assert_eq!(v1["name"], "credit-scoring");
    let inference = &v1["inference_stats"];
    assert_eq!(inference["success"]["count"], 2, "{v1}");
    assert!(inference["success"]["ns"].as_u64().unwrap() > 0, "{v1}");
    assert_eq!(inference["fail"]["count"], 0);
    assert_eq!(inference["queue"]["count"], 2);
    assert_eq!(inference["compute_infer"]["count"], 2);
    assert!(inference["compute_infer"]["ns"].as_u64().unwrap() > 0);
    // The success time covers the queue and the run.
    assert!(
        inference["success"]["ns"].as_u64().unwrap()
            >= inference["queue"]["ns"].as_u64().unwrap()
                + inference["compute_infer"]["ns"].as_u64().unwrap() / 2,
        "{v1}"
    );
    assert_eq!(v1["inference_count"], 5, "rows: {v1}");
    let runs = v1["execution_count"].as_u64().unwrap();
    assert!((1..=2).contains(&runs), "{v1}");
    let batches = v1["batch_stats"].as_array().unwrap();
    let rows: u64 = batches
        .iter()
        .map(|b| b["batch_size"].as_u64().unwrap() * b["compute_infer"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 5, "{v1}");
    assert!(v1["last_inference"].as_u64().unwrap() > 1_700_000_000_000, "ms since the epoch: {v1}");

    let v2 = stats_of(&v, "2");
    assert_eq!(
        (v2["inference_stats"]["success"]["count"].clone(), v2["inference_count"].clone()),
        (json!(1), json!(1))
    );
    let v3 = stats_of(&v, "3");
    assert_eq!((v3["execution_count"].clone(), v3["last_inference"].clone()), (json!(0), json!(0)));

    let one = ok(&gw.get("/v2/models/credit-scoring/versions/2/stats").await);
    assert_eq!(one["model_stats"].as_array().unwrap().len(), 1);
    assert_eq!(stats_of(&one, "2")["inference_count"], 1);

    let all = ok(&gw.get("/v2/models/stats").await);
    let names: std::collections::BTreeSet<&str> =
        all["model_stats"].as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert!(
        names.contains("credit-scoring") && names.contains("dense") && names.contains("strings"),
        "{all}"
    );

    assert_eq!(gw.get("/v2/models/nope/stats").await.status, 404);
    assert_eq!(gw.get("/v2/models/credit-scoring/versions/9/stats").await.status, 404);
    assert_eq!(gw.post_json("/v2/models/stats", &json!({})).await.status, 405);
    gw.stop().await;
}
