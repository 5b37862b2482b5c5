//! The front door for many teams (`[auth]`) over real sockets: 401 without a known key, 403 for
//! a model outside the tenant's list (the same words whether it exists or not) and for pins
//! without `may_pin`, 429 with `Retry-After` over the rate or the concurrency quota, each
//! counted per tenant; the keys file reloaded (and refused whole when invalid); health probes
//! open; gRPC the same as HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use bytes::Bytes;
use common::grpc::request as grpc_request;
use common::{TestGateway, credit_request, metric_present, scratch, start_file, write_config};
use gateway::config::hash_key;
use gateway::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};

/// A keys file with `tenants` (each `name`, its key, and extra TOML lines).
fn write_keys(dir: &Path, tenants: &[(&str, &str, &str)]) -> std::path::PathBuf {
    let text: String = tenants
        .iter()
        .map(|(name, key, extra)| {
            format!("[[tenant]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\n{extra}\n", hash_key(key))
        })
        .collect();
    let path = dir.join("keys.toml");
    let temp = dir.join("keys.toml.tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, &path).unwrap();
    path
}

fn config(keys: &Path, models: &str) -> String {
    format!("[auth]\nkeys_file = \"{}\"\n{models}", keys.display())
}

const MODELS: &str = r#"
[models.credit-scoring]
repository = "REPO"
[models.credit-scoring.routing]
primary = 1
pin_header = "x-model-version"
versions = [2]
"#;

async fn infer_as(
    gw: &TestGateway,
    path: &str,
    key: Option<(&str, &str)>,
    extra: &[(&str, &str)],
) -> common::Reply {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend(key);
    headers.extend(extra);
    gw.post(path, serde_json::to_vec(&credit_request(1)).unwrap(), &headers).await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn tenant_count(gw: &TestGateway, tenant: &str, outcome: &str) -> f64 {
    let text = gw.metrics().await;
    metric_present(&text, "gateway_tenant_requests_total", &[("tenant", tenant), ("outcome", outcome)])
        .unwrap_or_else(|| panic!("no gateway_tenant_requests_total{{tenant={tenant},outcome={outcome}}}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_permissions_and_pins_over_http() {
    let dir = scratch("tenants-http");
    let keys = write_keys(
        &dir,
        &[
            ("scoring-app", "key-app", "models = [\"credit-scoring\"]"),
            ("analyst", "key-analyst", "models = [\"*\"]\nmay_pin = true"),
            ("other-team", "key-other", "models = [\"fraud\"]"),
        ],
    );
    let gw = start_file(&write_config(&dir, &config(&keys, MODELS)), false).await;
    let path = "/v2/models/credit-scoring/infer";

    // No key, an unknown key: 401, with the scheme to use.
    let reply = infer_as(&gw, path, None, &[]).await;
    assert_eq!(reply.status, 401, "{}", reply.error());
    assert_eq!(reply.header("www-authenticate"), Some("Bearer"));
    let b = bearer("nope");
    assert_eq!(infer_as(&gw, path, Some(("authorization", &b)), &[]).await.status, 401);
    // The tenant's key, as a bearer token or as x-api-key.
    let app = bearer("key-app");
    let reply = infer_as(&gw, path, Some(("authorization", &app)), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.error());
    assert_eq!(infer_as(&gw, path, Some(("x-api-key", "key-app")), &[]).await.status, 200);

    // A model outside its list: 403, the same words whether the model exists or not.
    let other = bearer("key-other");
    let existing = infer_as(&gw, path, Some(("authorization", &other)), &[]).await;
    let missing = infer_as(&gw, "/v2/models/no-such-model/infer", Some(("authorization", &other)), &[]).await;
    assert_eq!((existing.status.as_u16(), missing.status.as_u16()), (403, 403));
    assert_eq!(
        existing.error().replace("credit-scoring", "M"),
        missing.error().replace("no-such-model", "M"),
        "the 403 must not tell which models exist"
    );
    // Metadata is a model call too.
    let reply = gw
        .send(
            Request::get(format!("http://{}/v2/models/credit-scoring", gw.data))
                .header("authorization", &other)
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(reply.status, 403);

    // Pins: only with may_pin, by the path or the model's pin header.
    let pinned = "/v2/models/credit-scoring/versions/2/infer";
    assert_eq!(infer_as(&gw, pinned, Some(("authorization", &app)), &[]).await.status, 403);
    let reply = infer_as(&gw, path, Some(("authorization", &app)), &[("x-model-version", "2")]).await;
    assert_eq!(reply.status, 403, "{}", reply.error());
    let analyst = bearer("key-analyst");
    let reply = infer_as(&gw, pinned, Some(("authorization", &analyst)), &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.error());
    assert_eq!(reply.json()["model_version"], "2");
    // The repository API spans every model: only a tenant of every model may use it.
    let reply = gw.post("/v2/repository/index", "", &[("authorization", &app)]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(gw.post("/v2/repository/index", "", &[("authorization", &analyst)]).await.status, 200);

    // Health probes stay open.
    assert_eq!(gw.get("/v2/health/ready").await.status, 200);
    assert_eq!(gw.get("/v2/health/live").await.status, 200);

    // `none` and `unknown` are shared by every test of this binary (one metrics recorder).
    assert!(tenant_count(&gw, "none", "unauthenticated").await >= 1.0);
    assert!(tenant_count(&gw, "unknown", "unauthenticated").await >= 1.0);
    assert_eq!(tenant_count(&gw, "scoring-app", "ok").await, 2.0);
    assert_eq!(tenant_count(&gw, "scoring-app", "forbidden").await, 3.0);
    assert_eq!(tenant_count(&gw, "other-team", "forbidden").await, 3.0);
    assert_eq!(tenant_count(&gw, "analyst", "ok").await, 2.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_the_rate_or_the_concurrency_quota_is_429_with_retry_after() {
    let dir = scratch("tenants-quota");
    let keys = write_keys(
        &dir,
        &[
            ("metered", "key-metered", "models = [\"*\"]\nrps = 0.5\nburst = 2"),
            ("one-at-a-time", "key-one", "models = [\"*\"]\nmax_in_flight = 1"),
        ],
    );
    let slow = "[models.slow]\nrepository = \"TESTS\"\nrouting = { primary = 1 }\n";
    let gw = start_file(&write_config(&dir, &config(&keys, &format!("{MODELS}{slow}"))), false).await;
    let path = "/v2/models/credit-scoring/infer";

    // The burst, then the rate: one token every 2 s.
    let metered = bearer("key-metered");
    for _ in 0..2 {
        assert_eq!(infer_as(&gw, path, Some(("authorization", &metered)), &[]).await.status, 200);
    }
    let reply = infer_as(&gw, path, Some(("authorization", &metered)), &[]).await;
    assert_eq!(reply.status, 429, "{}", reply.error());
    let retry: u64 = reply.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "retry-after {retry}");
    assert!(reply.error().contains("rate"), "{}", reply.error());
    assert_eq!(tenant_count(&gw, "metered", "rate_limited").await, 1.0);

    // Concurrency: one slow request holds the tenant's only place.
    let one = bearer("key-one");
    let body = json!({"inputs": [
        {"name": "iterations", "datatype": "INT64", "shape": [], "data": [1_000_000]},
        {"name": "x", "datatype": "FP32", "shape": [1, 64], "data": vec![0.0f32; 64]}
    ]});
    let request = Request::post(format!("http://{}/v2/models/slow/infer", gw.data))
        .header("authorization", &one)
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let client = gw.client.clone();
    let first = tokio::spawn(async move { common::send_with(&client, request).await });
    gw.wait_for_metrics("the slow request admitted", |text| {
        metric_present(
            text,
            "gateway_tenant_requests_total",
            &[("tenant", "one-at-a-time"), ("outcome", "admitted")],
        ) == Some(1.0)
    })
    .await;
    let reply = infer_as(&gw, path, Some(("authorization", &one)), &[]).await;
    assert_eq!(reply.status, 429, "{}", reply.error());
    assert_eq!(reply.header("retry-after"), Some("1"));
    assert!(!first.is_finished(), "the slow request must still hold the place");
    assert_eq!(first.await.unwrap().status, 200);
    // The place is free again.
    assert_eq!(infer_as(&gw, path, Some(("authorization", &one)), &[]).await.status, 200);
    assert_eq!(tenant_count(&gw, "one-at-a-time", "over_concurrency").await, 1.0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_keys_file_reloads_and_a_bad_one_is_refused_whole() {
    let dir = scratch("tenants-reload");
    let keys = write_keys(&dir, &[("before", "key-before", "models = [\"*\"]")]);
    let gw = start_file(&write_config(&dir, &config(&keys, MODELS)), false).await;
    let path = "/v2/models/credit-scoring/infer";
    let (before, after) = (bearer("key-before"), bearer("key-after"));
    // Several times: every server thread has let this key in last (and remembers it).
    for _ in 0..8 {
        assert_eq!(infer_as(&gw, path, Some(("authorization", &before)), &[]).await.status, 200);
    }

    write_keys(&dir, &[("after", "key-after", "models = [\"*\"]")]);
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 200, "{}", reply.error());
    for _ in 0..8 {
        assert_eq!(infer_as(&gw, path, Some(("authorization", &before)), &[]).await.status, 401);
    }
    assert_eq!(infer_as(&gw, path, Some(("authorization", &after)), &[]).await.status, 200);

    // A broken keys file: the reload is refused, listing its problems; the keys in force stay.
    std::fs::write(
        dir.join("keys.toml"),
        "[[tenant]]\nname = \"x y\"\nkey_sha256 = \"short\"\nmodels = []\n",
    )
    .unwrap();
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 400);
    let problems = reply.json()["problems"].to_string();
    for field in ["tenant[0].name", "tenant[0].key_sha256", "tenant[0].models"] {
        assert!(problems.contains(field), "{field} missing from {problems}");
    }
    assert_eq!(infer_as(&gw, path, Some(("authorization", &after)), &[]).await.status, 200);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_callers_need_a_key_too() {
    let dir = scratch("tenants-grpc");
    let keys = write_keys(&dir, &[("grpc-app", "key-grpc", "models = [\"credit-scoring\"]")]);
    // write_config writes the [server] table: the gRPC listener goes into it.
    let path = write_config(&dir, &config(&keys, MODELS));
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replacen("[server]\n", "[server]\ngrpc_listen = \"127.0.0.1:0\"\n", 1))
        .unwrap();
    let gw = start_file(&path, false).await;
    let mut client =
        GrpcInferenceServiceClient::connect(format!("http://{}", gw.grpc.unwrap())).await.unwrap();
    let v2: Value = credit_request(1);
    let call = |key: Option<&'static str>, model: &str| {
        let mut r = tonic::Request::new(grpc_request(model, &v2, false));
        if let Some(k) = key {
            r.metadata_mut().insert("x-api-key", k.parse().unwrap());
        }
        r
    };
    let status = client.model_infer(call(None, "credit-scoring")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    let reply = client.model_infer(call(Some("key-grpc"), "credit-scoring")).await.unwrap();
    assert_eq!(reply.get_ref().model_name, "credit-scoring");
    let status = client.model_infer(call(Some("key-grpc"), "other")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied);
    // ServerLive is a probe: open.
    client.server_live(gateway::grpc::proto::ServerLiveRequest {}).await.unwrap();
    assert_eq!(tenant_count(&gw, "grpc-app", "ok").await, 1.0);
    assert_eq!(tenant_count(&gw, "grpc-app", "forbidden").await, 1.0);
    gw.stop().await;
}

#[test]
fn hash_key_prints_the_keys_sha256_from_stdin_or_its_argument() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let bin = env!("CARGO_BIN_EXE_gateway");
    let mut child =
        Command::new(bin).arg("hash-key").stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(b"abc\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    // SHA-256("abc"), FIPS 180-2.
    let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), abc);
    let out = Command::new(bin).args(["hash-key", "abc"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), abc);
    let empty = Command::new(bin).arg("hash-key").stdin(Stdio::null()).output().unwrap();
    assert!(!empty.status.success(), "an empty key must be refused");
}
