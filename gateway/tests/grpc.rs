//! The gRPC front end (`inference.GRPCInferenceService`) over real sockets and real models:
//! every RPC, typed and raw encodings of every datatype, Python onnxruntime's reference
//! answers, error codes with HTTP's messages, routing parity with HTTP (split, pins, sticky
//! keys, shadows, metrics), client deadlines in the queue, the shared in-flight limit, message
//! size limits, streaming, and a graceful drain.
//!
//! Every test holds `common::exclusive()`: the in-flight gauge several of them wait on is one
//! process-wide series that every gateway in this binary writes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::grpc::{request, to_json, want_outputs};
use common::{GrpcClient, TestGateway, assert_outputs, metric, test_model};
use gateway::grpc::proto::*;
use serde_json::{Value, json};
use tonic::{Code, Status};

const GRPC: &str = "grpc_listen = \"127.0.0.1:0\"";

/// Every model the reference file names (credit-scoring 1 primary, 2 and 3 pin-only, batched).
fn all_models() -> String {
    let mut toml = String::from(
        "[models.credit-scoring]\nrepository = \"REPO\"\n\
         batching = { max_batch_size = 8, max_queue_delay_us = 200 }\n\
         routing = { primary = 1, versions = [2, 3] }\n\
         [models.dense]\nrepository = \"REPO\"\nrouting = { primary = 1 }\n",
    );
    for m in ["multi_io", "scalar", "strings", "dtypes", "control_flow", "slow", "fixed", "norank", "embed"] {
        toml.push_str(&test_model(m));
    }
    toml
}

async fn start(models: &str, server_extra: &str) -> (TestGateway, GrpcClient) {
    let gw = common::start_with_server(models, &format!("{GRPC}\n{server_extra}")).await;
    let client = gw.grpc_client().await;
    (gw, client)
}

/// The error a call ended with; panics if it succeeded.
fn refused<T: std::fmt::Debug>(result: Result<tonic::Response<T>, Status>) -> Status {
    result.expect_err("the call should fail")
}

fn infer_request(r: ModelInferRequest) -> tonic::Request<ModelInferRequest> {
    tonic::Request::new(r)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_server_metadata_rpcs_answer_like_http() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(&all_models(), "").await;
    assert!(c.server_live(ServerLiveRequest {}).await.unwrap().into_inner().live);
    assert!(c.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let meta = c.server_metadata(ServerMetadataRequest {}).await.unwrap().into_inner();
    let http = gw.get("/v2").await.json();
    assert_eq!(json!({"name": meta.name, "version": meta.version, "extensions": meta.extensions}), http);

    let ready = |name: &str, version: &str| ModelReadyRequest { name: name.into(), version: version.into() };
    assert!(c.model_ready(ready("scalar", "")).await.unwrap().into_inner().ready);
    assert!(c.model_ready(ready("credit-scoring", "3")).await.unwrap().into_inner().ready);
    assert!(!c.model_ready(ready("credit-scoring", "4")).await.unwrap().into_inner().ready);
    let missing = refused(c.model_ready(ready("nope", "")).await);
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), gw.get("/v2/models/nope/ready").await.error());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_failed_to_load_is_not_ready_and_refuses_with_unavailable() {
    let _serial = common::exclusive().await;
    let models = format!("{}{}", test_model("broken"), test_model("scalar"));
    let (gw, mut c) = start(&models, "").await;
    assert!(!c.server_ready(ServerReadyRequest {}).await.unwrap().into_inner().ready);
    let ready = ModelReadyRequest { name: "broken".into(), version: String::new() };
    assert!(!c.model_ready(ready).await.unwrap().into_inner().ready);
    let body = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1], "data": [1.0]}]});
    let status = refused(c.model_infer(request("broken", &body, true)).await);
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(status.message(), gw.infer("broken", &body).await.error());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_metadata_and_config_are_the_http_documents() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(&all_models(), "").await;
    for (model, version) in
        [("credit-scoring", ""), ("credit-scoring", "2"), ("multi_io", ""), ("scalar", "1")]
    {
        let req = ModelMetadataRequest { name: model.into(), version: version.into() };
        let m = c.model_metadata(req).await.unwrap().into_inner();
        let tensors = |ts: &[model_metadata_response::TensorMetadata]| -> Vec<Value> {
            ts.iter().map(|t| json!({"name": t.name, "datatype": t.datatype, "shape": t.shape})).collect()
        };
        let got = json!({"name": m.name, "versions": m.versions, "platform": m.platform,
            "inputs": tensors(&m.inputs), "outputs": tensors(&m.outputs)});
        let path = if version.is_empty() {
            format!("/v2/models/{model}")
        } else {
            format!("/v2/models/{model}/versions/{version}")
        };
        assert_eq!(got, gw.get(&path).await.json(), "{path}");

        let req = ModelConfigRequest { name: model.into(), version: version.into() };
        let config = c.model_config(req).await.unwrap().into_inner().config.unwrap();
        let http = gw.get(&format!("/v2/models/{model}/config")).await.json();
        assert_eq!(config.name, http["name"]);
        assert_eq!(config.platform, http["platform"]);
        assert_eq!(config.backend, http["backend"]);
        assert_eq!(config.max_batch_size, http["max_batch_size"].as_i64().unwrap() as i32);
        for (got, want) in config.input.iter().zip(http["input"].as_array().unwrap()) {
            assert_eq!(
                json!({"name": got.name, "data_type": got.data_type().as_str_name(), "dims": got.dims}),
                *want
            );
        }
        for (got, want) in config.output.iter().zip(http["output"].as_array().unwrap()) {
            assert_eq!(
                json!({"name": got.name, "data_type": got.data_type().as_str_name(), "dims": got.dims}),
                *want
            );
        }
        let group = &config.instance_group[0];
        assert_eq!((group.count as u64, group.kind().as_str_name()), (1, "KIND_CPU"));
        let delay = match config.scheduling_choice {
            Some(model_config::SchedulingChoice::DynamicBatching(b)) => json!(b.max_queue_delay_microseconds),
            None => Value::Null,
        };
        assert_eq!(delay, http["dynamic_batching"]["max_queue_delay_microseconds"], "{model}");
    }
    let missing = refused(
        c.model_metadata(ModelMetadataRequest { name: "credit-scoring".into(), version: "4".into() }).await,
    );
    assert_eq!(missing.code(), Code::NotFound);
    assert_eq!(missing.message(), gw.get("/v2/models/credit-scoring/versions/4").await.error());
    let bad = refused(c.model_config(ModelConfigRequest { name: "dense".into(), version: "x".into() }).await);
    assert_eq!(bad.code(), Code::InvalidArgument);
    assert_eq!(bad.message(), gw.get("/v2/models/dense/versions/x/config").await.error());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_reference_entry_matches_over_raw_and_typed_and_equals_http() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(&all_models(), "").await;
    for entry in common::reference() {
        let model = entry["model"].as_str().unwrap();
        let version = entry["version"].as_u64().unwrap();
        let v2 = json!({"inputs": entry["inputs"]});
        let expected = entry["outputs"].as_array().unwrap();
        let http = gw.post_json(&format!("/v2/models/{model}/versions/{version}/infer"), &v2).await.json();
        let has_16_bit = v2["inputs"].as_array().unwrap().iter().any(|i| i["datatype"] == "FP16");
        for raw in [true, false] {
            if !raw && has_16_bit {
                continue; // FP16 travels only raw
            }
            let mut r = request(model, &v2, raw);
            r.model_version = version.to_string();
            r.id = format!("{model}-{raw}");
            let reply = c.model_infer(r).await.unwrap_or_else(|s| panic!("{model} v{version}: {s:?}"));
            let reply = reply.into_inner();
            assert_eq!(reply.raw_output_contents.is_empty(), !raw && !is_16_bit(&reply), "{model} raw={raw}");
            let got = to_json(&reply);
            assert_eq!(got["model_version"], version.to_string());
            assert_eq!(got["id"], format!("{model}-{raw}"));
            assert_outputs(&got, expected);
            assert_outputs(&got, http["outputs"].as_array().unwrap());
        }
    }
    gw.stop().await;
}

fn is_16_bit(r: &ModelInferResponse) -> bool {
    r.outputs.iter().any(|o| o.datatype == "FP16" || o.datatype == "BF16")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strings_travel_as_bytes_contents_or_length_prefixed_raw_and_must_be_utf8() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(&test_model("strings"), "").await;
    let v2 =
        json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": ["a", "", "Grüße"]}]});
    let http = gw.infer("strings", &v2).await.json();
    for raw in [true, false] {
        let reply = c.model_infer(request("strings", &v2, raw)).await.unwrap().into_inner();
        assert_outputs(&to_json(&reply), http["outputs"].as_array().unwrap());
    }
    let mut bad = request("strings", &v2, true);
    bad.raw_input_contents[0] = common::length_prefixed(&[b"ok", b"\xff", b"x"]).into();
    let status = refused(c.model_infer(bad).await);
    assert_eq!(status.code(), Code::InvalidArgument);
    let http_bad = gw
        .post_binary(
            "/v2/models/strings/infer",
            &json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "parameters": {"binary_data_size": 16}}]}),
            &common::length_prefixed(&[b"ok", b"\xff", b"x"]),
        )
        .await;
    assert_eq!(status.message(), http_bad.error());
    let mut nul = request("strings", &v2, false);
    nul.inputs[0].contents.as_mut().unwrap().bytes_contents[0] = bytes::Bytes::from_static(b"a\0b");
    let status = refused(c.model_infer(nul).await);
    assert!(status.message().contains("NUL"), "{status:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requested_outputs_come_in_the_order_asked_with_the_id_and_route_metadata() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(&all_models(), "").await;
    let entry = common::reference_for("multi_io");
    let v2 = json!({"inputs": entry["inputs"]});
    let r = want_outputs(request("multi_io", &v2, false), &["n_plus_one", "sum.out"]);
    let reply = c.model_infer(r).await.unwrap();
    assert_eq!(reply.metadata().get("x-model-version").unwrap(), "1");
    assert_eq!(reply.metadata().get("x-route-reason").unwrap(), "primary");
    assert_eq!(reply.metadata().get("x-gateway-generation").unwrap(), "1");
    let got = to_json(&reply.into_inner());
    let names: Vec<&str> =
        got["outputs"].as_array().unwrap().iter().map(|o| o["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["n_plus_one", "sum.out"]);
    assert_eq!(got["id"], "");

    let unknown = refused(c.model_infer(want_outputs(request("multi_io", &v2, true), &["nope"])).await);
    assert_eq!(unknown.code(), Code::InvalidArgument);
    assert!(unknown.message().starts_with("unknown requested output 'nope'"), "{unknown:?}");
    let twice =
        refused(c.model_infer(want_outputs(request("multi_io", &v2, true), &["sum.out", "sum.out"])).await);
    assert_eq!(twice.message(), "output 'sum.out' is requested twice");
    gw.stop().await;
}

/// The HTTP equivalents of a gRPC call: the same inputs to the same path as JSON (typed's
/// twin) and as binary data (raw's twin); their statuses and `error` messages.
async fn http_errors(gw: &TestGateway, path: &str, body: &Value) -> [(u16, String); 2] {
    let json = gw.post_json(path, body).await;
    let mut header = body.clone();
    let mut raw = Vec::new();
    for input in header["inputs"].as_array_mut().unwrap() {
        let data: Vec<Value> = input["data"].as_array().unwrap().clone();
        let bytes = common::grpc::raw_of(input["datatype"].as_str().unwrap_or("FP32"), &data);
        input.as_object_mut().unwrap().remove("data");
        input["parameters"] = json!({"binary_data_size": bytes.len()});
        raw.extend(bytes);
    }
    let binary = gw.post_binary(path, &header, &raw).await;
    [(binary.status.as_u16(), binary.error()), (json.status.as_u16(), json.error())]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_get_their_codes_with_the_http_messages() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(&all_models(), "").await;
    let good = json!({"inputs": common::reference_for("multi_io")["inputs"]});
    let with = |f: &dyn Fn(&mut Value)| {
        let mut v = good.clone();
        f(&mut v);
        v
    };
    let cases: Vec<(&str, &str, Value, Code, u16)> = vec![
        ("nope", "", good.clone(), Code::NotFound, 404),
        ("multi_io", "7", good.clone(), Code::NotFound, 404),
        ("multi_io", "0", good.clone(), Code::InvalidArgument, 400),
        ("..", "", good.clone(), Code::InvalidArgument, 400),
        ("multi_io", "", with(&|v| v["inputs"][0]["name"] = json!("q")), Code::InvalidArgument, 422),
        ("multi_io", "", with(&|v| v["inputs"][2]["datatype"] = json!("INT32")), Code::InvalidArgument, 422),
        ("multi_io", "", with(&|v| v["inputs"][0]["shape"] = json!([6])), Code::InvalidArgument, 422),
        ("multi_io", "", with(&|v| v["inputs"][0]["shape"] = json!([-1, 3])), Code::InvalidArgument, 400),
        ("multi_io", "", with(&|v| v["inputs"][0]["shape"] = json!([3, 3])), Code::InvalidArgument, 400),
        (
            "multi_io",
            "",
            with(&|v| drop(v["inputs"].as_array_mut().unwrap().pop())),
            Code::InvalidArgument,
            422,
        ),
        ("multi_io", "", with(&|v| v["inputs"][1] = v["inputs"][0].clone()), Code::InvalidArgument, 400),
    ];
    for (model, version, body, code, http_status) in cases {
        let path = if version.is_empty() {
            format!("/v2/models/{model}/infer")
        } else {
            format!("/v2/models/{model}/versions/{version}/infer")
        };
        let twins = http_errors(&gw, &path, &body).await;
        for (raw, (status, message)) in [true, false].into_iter().zip(twins) {
            assert_eq!(status, http_status, "{path} {body}: {message}");
            let mut r = request(model, &body, raw);
            r.model_version = version.to_string();
            let s = refused(c.model_infer(r).await);
            assert_eq!((s.code(), s.message()), (code, message.as_str()), "{path} raw={raw} {body}");
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoding_mistakes_are_invalid_argument() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(&all_models(), "").await;
    let v2 = json!({"inputs": common::reference_for("multi_io")["inputs"]});
    let mut mixed = request("multi_io", &v2, true);
    mixed.inputs[1].contents = request("multi_io", &v2, false).inputs[1].contents.clone();
    let s = refused(c.model_infer(mixed).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("also has raw_input_contents"), "{s:?}");

    let mut short = request("multi_io", &v2, true);
    short.raw_input_contents.pop();
    let s = refused(c.model_infer(short).await);
    assert_eq!(
        s.message(),
        "the request has 3 inputs but 2 raw_input_contents; give one per input, in the same order"
    );

    let mut truncated = request("multi_io", &v2, true);
    truncated.raw_input_contents[0] = truncated.raw_input_contents[0].slice(..23);
    let s = refused(c.model_infer(truncated).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    assert!(s.message().contains("needs 24 bytes"), "{s:?}");

    let dtypes = json!({"inputs": common::reference_for("dtypes")["inputs"]});
    let mut fp16_typed = request("dtypes", &dtypes, true);
    fp16_typed.raw_input_contents.clear();
    for input in &mut fp16_typed.inputs {
        input.contents = Some(InferTensorContents::default());
    }
    let s = refused(c.model_infer(fp16_typed).await);
    assert_eq!(s.code(), Code::InvalidArgument);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_max_request_bytes_are_resource_exhausted_both_ways() {
    let _serial = common::exclusive().await;
    let models = format!("{}{}", test_model("fixed"), test_model("strings"));
    let (gw, mut c) = start(&models, "max_request_bytes = 1024").await;
    let fixed = json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": vec![0.0; 6]}]});
    let mut r = request("fixed", &fixed, true);
    r.id = "x".repeat(2000);
    let s = refused(c.model_infer(r.clone()).await);
    assert_eq!(s.code(), Code::ResourceExhausted);
    let (body, json_length) = common::binary_body(&json!({"id": "x".repeat(2000)}), &[]);
    let http = gw
        .post(
            "/v2/models/fixed/infer",
            body,
            &[("inference-header-content-length", &json_length.to_string())],
        )
        .await;
    assert_eq!((http.status.as_u16(), s.message()), (413, http.error().as_str()));
    // The connection still serves; a request that fits passes.
    r.id = "ok".into();
    assert_eq!(c.model_infer(r).await.unwrap().into_inner().id, "ok");

    // A reply bigger than the limit (strings: two outputs as long as the input) is refused too.
    let text = "y".repeat(200);
    let strings = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [4], "data": [text, text, text, text]}]});
    let s = refused(c.model_infer(request("strings", &strings, true)).await);
    assert_eq!(s.code(), Code::ResourceExhausted);
    assert!(s.message().starts_with("the reply would be"), "{s:?}");
    let fits = json!({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["z"]}]});
    assert!(c.model_infer(request("strings", &fits, true)).await.is_ok());
    gw.stop().await;
}

/// `n` credit requests from 8 concurrent gRPC clients, each with the metadata `meta(i)` gives;
/// counts answers per `model_version` (checked against the `x-model-version` metadata).
async fn grpc_versions(
    gw: &TestGateway,
    n: usize,
    meta: impl Fn(usize) -> Vec<(&'static str, String)>,
) -> HashMap<String, usize> {
    let body = request("credit-scoring", &common::credit_request(1), true);
    let metas: Vec<_> = (0..n).map(meta).collect();
    let mut tasks = Vec::new();
    for k in 0..8 {
        let mut client = gw.grpc_client().await;
        let (body, mine): (_, Vec<_>) = (body.clone(), metas.iter().skip(k).step_by(8).cloned().collect());
        tasks.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            for m in mine {
                let mut req = infer_request(body.clone());
                for (k, v) in m {
                    req.metadata_mut().insert(k, v.parse().unwrap());
                }
                let reply = client.model_infer(req).await.unwrap();
                let header = reply.metadata().get("x-model-version").unwrap().to_str().unwrap().to_string();
                assert_eq!(header, reply.get_ref().model_version);
                seen.push(header);
            }
            seen
        }));
    }
    let mut counts = HashMap::new();
    for t in tasks {
        for v in t.await.unwrap() {
            *counts.entry(v).or_insert(0) += 1;
        }
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_weighted_split_holds_for_grpc_and_is_counted_like_http() {
    let _serial = common::exclusive().await;
    let (gw, _) = start(common::SPLIT, "").await;
    let labels = |role| [("model", "credit-scoring"), ("version", "2"), ("role", role), ("outcome", "ok")];
    let before = gw.metric("gateway_requests_total", &labels("candidate")).await;
    let counts = grpc_versions(&gw, 4000, |_| Vec::new()).await;
    let candidate = counts.get("2").copied().unwrap_or(0) as f64;
    // Binomial(4000, 0.2): mean 800, sd 25.3; the same 5-sd band as the HTTP split test.
    assert!((673.0..=927.0).contains(&candidate), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 4000, "{counts:?}");
    let after = gw.metric("gateway_requests_total", &labels("candidate")).await;
    assert_eq!(after - before, candidate, "every gRPC candidate answer is counted");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pins_and_sticky_keys_route_grpc_exactly_as_http() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(common::SPLIT, "").await;
    let body = common::credit_request(1);
    // model_version pins, like /versions/{v}/infer; a shadow-less pin-only version included.
    for v in ["1", "2", "3"] {
        let mut r = request("credit-scoring", &body, true);
        r.model_version = v.into();
        let reply = c.model_infer(r).await.unwrap();
        assert_eq!(reply.metadata().get("x-route-reason").unwrap(), "pinned");
        assert_eq!(reply.get_ref().model_version, v);
    }
    // The pin header, as metadata.
    let pinned = grpc_versions(&gw, 40, |_| vec![("x-model-version", "3".to_string())]).await;
    assert_eq!(pinned, HashMap::from([("3".to_string(), 40)]));
    let mut bad = infer_request(request("credit-scoring", &body, true));
    bad.metadata_mut().insert("x-model-version", "three".parse().unwrap());
    let s = refused(c.model_infer(bad).await);
    let http = gw
        .post(
            "/v2/models/credit-scoring/infer",
            serde_json::to_vec(&body).unwrap(),
            &[("x-model-version", "three")],
        )
        .await;
    assert_eq!((s.code(), s.message()), (Code::InvalidArgument, http.error().as_str()));

    // Sticky: each user gets the same version over gRPC as over HTTP, every time.
    let bytes = serde_json::to_vec(&body).unwrap();
    for user in 0..60 {
        let key = format!("user-{user}");
        let http = gw.post("/v2/models/credit-scoring/infer", bytes.clone(), &[("x-user-id", &key)]).await;
        let want = http.header("x-model-version").unwrap().to_string();
        for _ in 0..2 {
            let mut r = infer_request(request("credit-scoring", &body, true));
            r.metadata_mut().insert("x-user-id", key.parse().unwrap());
            let reply = c.model_infer(r).await.unwrap();
            assert_eq!(reply.metadata().get("x-route-reason").unwrap(), "sticky");
            assert_eq!(reply.get_ref().model_version, want, "{key}");
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shadows_see_routed_grpc_requests_but_not_pinned_ones() {
    let _serial = common::exclusive().await;
    let toml = "[models.credit-scoring]\nrepository = \"REPO\"\n\
        routing = { primary = 1, shadows = [{ version = 3, percent = 100.0 }] }\n";
    // A long deadline: the shadow's worker runs only on CPU that other tests leave.
    let (gw, mut c) = start(toml, "request_timeout_ms = 120000").await;
    let shadow = [("model", "credit-scoring"), ("version", "3"), ("outcome", "ok")];
    let before = gw.metric("gateway_shadow_requests_total", &shadow).await;
    let body = request("credit-scoring", &common::credit_request(2), false);
    for _ in 0..20 {
        c.model_infer(body.clone()).await.unwrap();
    }
    let mut pinned = body.clone();
    pinned.model_version = "1".into();
    c.model_infer(pinned).await.unwrap();
    gw.wait_for_metric("gateway_shadow_requests_total", &shadow, |v| v >= before + 20.0).await;
    let text = gw.metrics().await;
    let compared =
        metric(&text, "gateway_shadow_comparisons_total", &[("model", "credit-scoring"), ("version", "3")]);
    assert!(compared >= 20.0, "{text}");
    gw.stop().await;
}

const SLOW_MODEL: &str =
    "[models.slow]\nrepository = \"TESTS\"\nbatching = { max_batch_size = 1 }\nrouting = { primary = 1 }\n";

/// About 2 s of work for the slow model on a quiet 2-core machine (see connections.rs).
const SLOW: i64 = 1_000_000;

fn slow(iterations: i64) -> ModelInferRequest {
    let v2 = json!({"inputs": [
        {"name": "iterations", "datatype": "INT64", "shape": [], "data": [iterations]},
        {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": vec![0.0f32; 64]}
    ]});
    request("slow", &v2, true)
}

async fn wait_in_flight(gw: &TestGateway, n: f64) {
    gw.wait_for_metric("gateway_in_flight_requests", &[], |v| v == n).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_deadline_shorter_than_request_timeout_is_honoured_in_the_queue() {
    let _serial = common::exclusive().await;
    let (gw, _) = start(SLOW_MODEL, "").await;
    let timeouts = [("model", "slow"), ("version", "1"), ("outcome", "timeout")];
    let before = gw.metric("gateway_requests_total", &timeouts).await;
    let mut busy = gw.grpc_client().await;
    let running = tokio::spawn(async move { busy.model_infer(slow(SLOW / 2)).await });
    wait_in_flight(&gw, 1.0).await;
    // Queued behind the running request; the client gives it 300 ms. (Sent by hand: tonic's
    // client would cancel at 300 ms itself and hide whether the gateway kept the deadline.)
    let asked = Instant::now();
    let (code, message) =
        common::grpc::raw_call(gw.grpc.unwrap(), "ModelInfer", &slow(1), &[("grpc-timeout", "300m")]).await;
    let took = asked.elapsed();
    assert_eq!(Code::from(code), Code::DeadlineExceeded, "{message}");
    assert!(message.contains("grpc-timeout") || message.contains("before the request deadline"), "{message}");
    assert!(took >= Duration::from_millis(290) && took < Duration::from_millis(1500), "{took:?}");
    assert!(!running.is_finished(), "answered while the first request still ran");
    gw.wait_for_metric("gateway_requests_total", &timeouts, |v| v >= before + 1.0).await;
    assert!(running.await.unwrap().is_ok());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_timeout_bounds_a_grpc_call_with_the_http_message() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(SLOW_MODEL, "request_timeout_ms = 200").await;
    let runs = [("model", "slow"), ("version", "1")];
    let before = gw.metric("gateway_inference_duration_seconds_count", &runs).await;
    let mut r = infer_request(slow(SLOW));
    r.set_timeout(Duration::from_secs(30)); // longer than request_timeout_ms: the server's wins
    let s = refused(c.model_infer(r).await);
    assert_eq!(s.code(), Code::DeadlineExceeded);
    // Whichever notices first, the queue or the handler, with HTTP's words (as HTTP's 504 test).
    let queue = "model 'slow' version 1 did not answer before the request deadline";
    let handler = "the request did not finish within request_timeout_ms (200 ms)";
    assert!(s.message() == queue || s.message() == handler, "{s:?}");
    // The run cannot be interrupted; let it end before the next test.
    gw.wait_for_metric("gateway_inference_duration_seconds_count", &runs, |v| v > before).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_is_shared_with_http_and_refuses_with_unavailable() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(SLOW_MODEL, "max_in_flight = 1").await;
    let http = gw.spawn_infer(
        "slow",
        &json!({"inputs": [
            {"name": "iterations", "datatype": "INT64", "shape": [], "data": [SLOW / 2]},
            {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": vec![0.0f32; 64]}
        ]}),
    );
    wait_in_flight(&gw, 1.0).await;
    let asked = Instant::now();
    let s = refused(c.model_infer(slow(1)).await);
    assert_eq!(s.code(), Code::Unavailable);
    assert_eq!(s.message(), "the gateway is at its limit of 1 requests in progress; retry shortly");
    assert!(asked.elapsed() < Duration::from_millis(500), "refused at once");
    let metadata = refused(c.server_live(ServerLiveRequest {}).await);
    assert_eq!(metadata.code(), Code::Unavailable, "every RPC is admitted, as every HTTP path is");
    assert_eq!(http.await.unwrap().status, 200);
    assert!(c.model_infer(slow(1)).await.is_ok(), "the slot is free again");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_infer_answers_every_request_and_reports_failures_inline() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(&all_models(), "").await;
    let v2 = json!({"inputs": common::reference_for("scalar")["inputs"]});
    let mut requests = Vec::new();
    for k in 0..5 {
        let mut r = request("scalar", &v2, k % 2 == 0);
        r.id = format!("s-{k}");
        requests.push(r);
    }
    let mut bad = request("scalar", &v2, true);
    bad.id = "bad".into();
    bad.inputs[0].name = "nope".into();
    requests.push(bad);
    let mut replies = c.model_stream_infer(tokio_stream_of(requests)).await.unwrap().into_inner();
    let mut seen = HashMap::new();
    while let Some(answer) = replies.message().await.unwrap() {
        let reply = answer.infer_response.unwrap();
        seen.insert(reply.id.clone(), (answer.error_message, reply));
    }
    assert_eq!(seen.len(), 6);
    let expected = common::reference_for("scalar")["outputs"].as_array().unwrap().clone();
    for k in 0..5 {
        let (error, reply) = &seen[&format!("s-{k}")];
        assert_eq!(error, "");
        assert_outputs(&to_json(reply), &expected);
    }
    assert!(seen["bad"].0.starts_with("unknown input 'nope'"), "{:?}", seen["bad"]);
    gw.stop().await;
}

/// A finished client stream of `items`.
fn tokio_stream_of<T: Send + 'static>(items: Vec<T>) -> impl tonic::codegen::tokio_stream::Stream<Item = T> {
    tonic::codegen::tokio_stream::iter(items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_grpc_call_in_progress_finish() {
    let _serial = common::exclusive().await;
    let (mut gw, _) = start(SLOW_MODEL, "").await;
    let mut client = gw.grpc_client().await;
    let running = tokio::spawn(async move { client.model_infer(slow(SLOW / 2)).await });
    wait_in_flight(&gw, 1.0).await;
    let gateway = gw.gateway.take().unwrap();
    gateway.shutdown();
    let reply = running.await.unwrap().expect("the call in progress completes");
    assert_eq!(reply.into_inner().model_name, "slow");
    gateway.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_grpc_listener_without_grpc_listen() {
    let _serial = common::exclusive().await;
    let gw = common::start(&test_model("scalar")).await;
    assert!(gw.grpc.is_none());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_statistics_are_the_http_figures() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(&all_models(), "").await;
    let reply = gw.infer("credit-scoring", &common::credit_request(3)).await;
    assert_eq!(reply.status, 200);
    let req = ModelStatisticsRequest { name: "credit-scoring".into(), version: "1".into() };
    let got = c.model_statistics(req).await.unwrap().into_inner().model_stats;
    let http = gw.get("/v2/models/credit-scoring/versions/1/stats").await.json();
    let want = &http["model_stats"][0];
    assert_eq!(got.len(), 1);
    let s = &got[0];
    assert_eq!((s.name.as_str(), s.version.as_str()), ("credit-scoring", "1"));
    assert_eq!(json!(s.inference_count), want["inference_count"]);
    assert_eq!(json!(s.execution_count), want["execution_count"]);
    assert_eq!(json!(s.last_inference), want["last_inference"]);
    let i = s.inference_stats.as_ref().unwrap();
    let success = i.success.as_ref().unwrap();
    assert_eq!(json!({"count": success.count, "ns": success.ns}), want["inference_stats"]["success"]);
    assert_eq!(success.count, 1);
    assert_eq!(s.batch_stats.len(), want["batch_stats"].as_array().unwrap().len());

    let every = c.model_statistics(ModelStatisticsRequest::default()).await.unwrap().into_inner();
    assert!(every.model_stats.iter().any(|s| s.name == "dense"));
    let missing =
        refused(c.model_statistics(ModelStatisticsRequest { name: "nope".into(), version: "".into() }).await);
    assert_eq!(missing.code(), Code::NotFound);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_never_reads_its_replies_stops_being_read() {
    let _serial = common::exclusive().await;
    let (gw, mut c) = start(SLOW_MODEL, "request_timeout_ms = 120000").await;
    // 1,024 rows of 64 floats: 256 KiB each way, so HTTP/2 flow control holds a few replies only.
    let v2 = json!({"inputs": [
        {"name": "iterations", "datatype": "INT64", "shape": [], "data": [1]},
        {"name": "x", "datatype": "FP32", "shape": [1024, 64], "data": vec![0.0f32; 1024 * 64]}
    ]});
    let message = request("slow", &v2, true);
    let outbound = tonic::codegen::tokio_stream::iter((0..300).map(move |_| message.clone()));
    let replies = c.model_stream_infer(outbound).await.unwrap().into_inner();

    // Never read: the stream's requests keep their admission slots until their replies are
    // handed over, and the gateway stops reading the stream once MAX_IN_FLIGHT wait.
    wait_in_flight(&gw, 32.0).await;
    let ok = [("model", "slow"), ("version", "1"), ("role", "primary"), ("outcome", "ok")];
    let served = gw.metric("gateway_requests_total", &ok).await;
    assert!(served <= 100.0, "{served} of 300 requests were run for a client that reads nothing");

    // The client leaves: everything the stream held is released.
    drop(replies);
    wait_in_flight(&gw, 0.0).await;
    gw.stop().await;
}
