//! The thinnest end-to-end path: start, infer, read metadata, stop.
#![allow(clippy::unwrap_used)]

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credit_model_answers_over_http() {
    let gw = common::start(common::CREDIT).await;
    let reply = gw.infer("credit-scoring", &common::credit_request(3)).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    let v = reply.json();
    assert_eq!(v["model_name"], "credit-scoring");
    assert_eq!(v["model_version"], "1");
    assert_eq!(v["outputs"][0]["name"], "label");
    assert_eq!(v["outputs"][1]["shape"], serde_json::json!([3, 2]));
    assert_eq!(reply.header("x-model-version"), Some("1"));
    assert_eq!(reply.header("x-route-reason"), Some("primary"));
    assert!(reply.header("x-request-id").is_some());
    gw.stop().await;
}
