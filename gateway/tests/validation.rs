//! The validation gate (`[models.X.validation]`): a version below its hold-out set's threshold is
//! refused with the figures and never receives a routed request, a passing one is admitted, a
//! failing primary leaves the model not ready at start-up, `check-config --load-models` fails
//! with the figures, `max_abs_diff` judges numeric outputs, every run is counted in
//! `gateway_validation_runs_total{model,outcome}`, and a version keeps its verdict while it and
//! the set are unchanged.
//!
//! The sets are built here from what the real credit-scoring versions answer (v1's labels and
//! probabilities as the expected values, v2 disagreeing with v1 on half the rows, v3 agreeing on
//! all of them); each test serves its own copy of the model under its own name, so the metric
//! series of concurrent tests never mix.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{TestGateway, credit_request, metric_present, scratch, start_file, write_config};
use serde_json::{Value, json};
use tokio::sync::OnceCell;

/// Rows whose answers build the sets (v1, v2 and v3 answer every one).
const PROBE_ROWS: usize = 600;
/// Rows per line of a set: each line is one request to the version.
const LINE_ROWS: usize = 8;

/// What the three versions answer on the probe rows.
struct Answers {
    features: Vec<[f32; 8]>,
    labels: [Vec<i64>; 3],
    probabilities: [Vec<[f64; 2]>; 3],
}

static ANSWERS: OnceCell<Answers> = OnceCell::const_new();

/// Asks a gateway serving the stock credit-scoring versions (pinned calls) once per test binary.
async fn answers() -> &'static Answers {
    ANSWERS
        .get_or_init(|| async {
            let gw = common::start(
                "[models.credit-scoring]\nrepository = \"REPO\"\nrouting = { primary = 1, versions = [2, 3] }\n",
            )
            .await;
            let mut rng = fastrand::Rng::with_seed(14);
            let features: Vec<[f32; 8]> =
                (0..PROBE_ROWS).map(|_| std::array::from_fn(|_| rng.f32() * 4.0 - 2.0)).collect();
            let mut labels: [Vec<i64>; 3] = Default::default();
            let mut probabilities: [Vec<[f64; 2]>; 3] = Default::default();
            for v in 1..=3 {
                for chunk in features.chunks(LINE_ROWS) {
                    let reply =
                        gw.post_json(&format!("/v2/models/credit-scoring/versions/{v}/infer"), &request(chunk)).await;
                    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
                    let label = reply.output("label")["data"].as_array().unwrap().clone();
                    labels[v - 1].extend(label.iter().map(|l| l.as_i64().unwrap()));
                    let p: Vec<f64> =
                        reply.output("probabilities")["data"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect();
                    probabilities[v - 1].extend(p.chunks(2).map(|r| [r[0], r[1]]));
                }
            }
            gw.stop().await;
            Answers { features, labels, probabilities }
        })
        .await
}

fn request(rows: &[[f32; 8]]) -> Value {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({"inputs": [{"name": "features", "datatype": "FP32", "shape": [rows.len(), 8], "data": data}]})
}

/// The accuracy set: rows where v3 agrees with v1, half of them where v2 does not; expected is
/// v1's label. v1 and v3 score 1.0 on it, v2 0.5.
fn accuracy_rows(a: &Answers) -> Vec<usize> {
    let agree_13: Vec<usize> = (0..PROBE_ROWS).filter(|&i| a.labels[0][i] == a.labels[2][i]).collect();
    let differ_2: Vec<usize> =
        agree_13.iter().copied().filter(|&i| a.labels[0][i] != a.labels[1][i]).take(40).collect();
    let same_2: Vec<usize> =
        agree_13.iter().copied().filter(|&i| a.labels[0][i] == a.labels[1][i]).take(40).collect();
    assert!(
        differ_2.len() == 40 && same_2.len() == 40,
        "the probe rows must hold 40 rows where v2 disagrees with v1 (got {}) and 40 where it agrees (got {})",
        differ_2.len(),
        same_2.len()
    );
    differ_2.into_iter().zip(same_2).flat_map(|(d, s)| [d, s]).collect()
}

/// Writes a set: one line per `LINE_ROWS` rows, `expected(row)` per row.
fn write_set(path: &Path, a: &Answers, rows: &[usize], expected: impl Fn(usize) -> Value) {
    let mut text = String::new();
    for chunk in rows.chunks(LINE_ROWS) {
        let features: Vec<[f32; 8]> = chunk.iter().map(|&i| a.features[i]).collect();
        let mut line = request(&features);
        line["expected"] = chunk.iter().map(|&i| expected(i)).collect();
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
}

/// A scratch folder holding `name/{1,2,3}/model.onnx` (copies of credit-scoring) and the
/// accuracy set `set.jsonl` (v1's labels).
async fn setup(name: &str) -> (PathBuf, PathBuf) {
    let a = answers().await;
    let dir = scratch(name);
    for v in 1..=3 {
        let folder = dir.join("repo").join(name).join(v.to_string());
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::copy(format!("{}/credit-scoring/{v}/model.onnx", common::repo()), folder.join("model.onnx"))
            .unwrap();
    }
    let set = dir.join("set.jsonl");
    write_set(&set, a, &accuracy_rows(a), |i| json!(a.labels[0][i]));
    (dir, set)
}

/// The model's tables: `routing` lines under `[models.NAME.routing]`, `validation` lines (the
/// rule) under `[models.NAME.validation]` with `dataset = set`.
fn model_toml(name: &str, dir: &Path, set: &Path, routing: &str, validation: &str) -> String {
    format!(
        "[models.{name}]\nrepository = \"{}\"\n[models.{name}.routing]\n{routing}\n[models.{name}.validation]\ndataset = \"{}\"\n{validation}\n",
        dir.join("repo").display(),
        set.display()
    )
}

async fn runs(gw: &TestGateway, model: &str, outcome: &str) -> Option<f64> {
    metric_present(
        &gw.metrics().await,
        "gateway_validation_runs_total",
        &[("model", model), ("outcome", outcome)],
    )
}

/// Sends `n` routed requests; returns the versions that answered and the generations that served.
async fn route(gw: &TestGateway, model: &str, n: usize) -> (Vec<String>, Vec<String>) {
    let (mut versions, mut generations) = (Vec::new(), Vec::new());
    for i in 0..n {
        let reply = gw.infer(model, &common::credit_request_seeded(1, i as u64)).await;
        assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
        versions.push(reply.json()["model_version"].as_str().unwrap().to_string());
        generations.push(reply.header("x-gateway-generation").expect("x-gateway-generation").to_string());
    }
    (versions, generations)
}

const ACCURACY_90: &str = "output = \"label\"\nmin_accuracy = 0.9";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_adding_a_candidate_below_its_threshold_is_refused_and_it_never_gets_a_request() {
    let name = "vgate-refuse";
    let (dir, set) = setup(name).await;
    let path = write_config(&dir, &model_toml(name, &dir, &set, "primary = 1", ACCURACY_90));
    let gw = start_file(&path, false).await;
    assert_eq!(runs(&gw, name, "passed").await, Some(1.0), "v1 passed the gate at start-up");
    let (_, before) = route(&gw, name, 1).await;

    write_config(
        &dir,
        &model_toml(
            name,
            &dir,
            &set,
            "primary = 1\ncandidates = [{ version = 2, percent = 50.0 }]",
            ACCURACY_90,
        ),
    );
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
    let problems = reply.json()["problems"].as_array().cloned().unwrap_or_default();
    let gate = problems
        .iter()
        .find(|p| p["path"] == format!("models.{name}.validation"))
        .unwrap_or_else(|| panic!("no validation problem in {problems:?}"));
    assert_eq!(
        gate["message"],
        "version 2: accuracy 0.5000 (40 of 80 rows) on output 'label', below min_accuracy 0.9"
    );
    assert_eq!(runs(&gw, name, "failed").await, Some(1.0));

    // The running routing keeps serving: every routed answer is v1's, from the same generation.
    let (versions, generations) = route(&gw, name, 200).await;
    assert!(versions.iter().all(|v| v == "1"), "a refused candidate answered: {versions:?}");
    assert!(
        generations.iter().all(|g| *g == before[0]),
        "the routing changed: {generations:?} vs {before:?}"
    );
    let config = gw.get_at(gw.admin, "/admin/config").await.json();
    assert_eq!(config["models"][name]["candidates"], json!([]), "{config}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_that_passes_is_admitted_and_receives_traffic() {
    let name = "vgate-admit";
    let (dir, set) = setup(name).await;
    // Class scores, judged by their argmax.
    let rule = "output = \"probabilities\"\nmin_accuracy = 0.9";
    let path = write_config(&dir, &model_toml(name, &dir, &set, "primary = 1", rule));
    let gw = start_file(&path, false).await;
    write_config(
        &dir,
        &model_toml(name, &dir, &set, "primary = 1\ncandidates = [{ version = 3, percent = 50.0 }]", rule),
    );
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["loaded"], json!([format!("{name}/3")]));
    assert_eq!(runs(&gw, name, "passed").await, Some(2.0), "v1 at start-up, v3 at the reload");
    assert_eq!(runs(&gw, name, "failed").await, Some(0.0));
    let (versions, _) = route(&gw, name, 200).await;
    let on_3 = versions.iter().filter(|v| *v == "3").count();
    assert!((40..=160).contains(&on_3), "v3 at 50% answered {on_3} of 200");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_below_its_threshold_at_start_up_leaves_the_model_not_ready_with_the_figures() {
    let name = "vgate-start";
    let (dir, set) = setup(name).await;
    let toml = model_toml(name, &dir, &set, "primary = 2", ACCURACY_90) + common::CREDIT;
    let gw = common::start(&toml).await;
    let ready = gw.get(&format!("/v2/models/{name}/ready")).await;
    assert_eq!(ready.status, 503);
    let reply = gw.infer(name, &credit_request(1)).await;
    assert_eq!(reply.status, 503, "{}", String::from_utf8_lossy(&reply.body));
    assert!(
        reply
            .error()
            .contains("version 2: accuracy 0.5000 (40 of 80 rows) on output 'label', below min_accuracy 0.9"),
        "{}",
        reply.error()
    );
    // The other model serves.
    assert_eq!(gw.infer("credit-scoring", &credit_request(1)).await.status, 200);
    assert_eq!(runs(&gw, name, "failed").await, Some(1.0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_load_models_runs_the_gate_and_fails_with_the_figures() {
    let name = "vgate-check";
    let (dir, set) = setup(name).await;
    let check = |path: PathBuf| {
        let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
            .args(["check-config", path.to_str().unwrap(), "--load-models"])
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        (output.status.success(), String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let bad = dir.join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let routing = "primary = 1\ncandidates = [{ version = 2, percent = 5.0 }]";
    let (ok, stdout) = check(write_config(&bad, &model_toml(name, &dir, &set, routing, ACCURACY_90)));
    assert!(!ok, "check-config passed a candidate below its threshold:\n{stdout}");
    assert!(
        stdout.contains(&format!(
            "models.{name}.validation: version 2: accuracy 0.5000 (40 of 80 rows) on output 'label', below min_accuracy 0.9"
        )),
        "{stdout}"
    );
    let good = dir.join("good");
    std::fs::create_dir_all(&good).unwrap();
    let routing = "primary = 1\nshadows = [{ version = 3, percent = 100.0 }]";
    let (ok, stdout) = check(write_config(&good, &model_toml(name, &dir, &set, routing, ACCURACY_90)));
    assert!(ok, "{stdout}");
    for v in [1, 3] {
        let line = format!("{name} v{v}: validation passed: accuracy 1.0000 (80 of 80 rows)");
        assert!(stdout.contains(&line), "no '{line}' in:\n{stdout}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_abs_diff_refuses_a_shadow_whose_outputs_differ() {
    let name = "vgate-diff";
    let a = answers().await;
    let (dir, _) = setup(name).await;
    let rows: Vec<usize> = (0..80).collect();
    let worst_3 = rows
        .iter()
        .flat_map(|&i| (0..2).map(move |k| (a.probabilities[2][i][k] - a.probabilities[0][i][k]).abs()))
        .fold(0.0, f64::max);
    assert!(worst_3 > 1e-3, "v3 must differ from v1 by more than the rule allows (it differs by {worst_3})");
    let set = dir.join("probabilities.jsonl");
    write_set(&set, a, &rows, |i| json!(a.probabilities[0][i]));
    let rule = "output = \"probabilities\"\nmax_abs_diff = 0.0001";
    let path = write_config(&dir, &model_toml(name, &dir, &set, "primary = 1", rule));
    let gw = start_file(&path, false).await;
    assert_eq!(gw.get(&format!("/v2/models/{name}/ready")).await.status, 200);
    assert_eq!(runs(&gw, name, "passed").await, Some(1.0));

    write_config(
        &dir,
        &model_toml(name, &dir, &set, "primary = 1\nshadows = [{ version = 3, percent = 100.0 }]", rule),
    );
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
    let text = reply.json()["problems"].to_string();
    assert!(text.contains(&format!("models.{name}.validation")), "{text}");
    assert!(text.contains("version 3: max abs diff "), "{text}");
    assert!(text.contains("of output 'probabilities' over 80 rows, above max_abs_diff 0.0001"), "{text}");
    assert_eq!(runs(&gw, name, "failed").await, Some(1.0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_keeps_its_verdict_until_the_set_changes() {
    let name = "vgate-cache";
    let a = answers().await;
    let (dir, set) = setup(name).await;
    let path = write_config(&dir, &model_toml(name, &dir, &set, "primary = 1", ACCURACY_90));
    let gw = start_file(&path, false).await;
    assert_eq!(runs(&gw, name, "passed").await, Some(1.0));

    // Same version, same set: the kept verdict, no run.
    write_config(
        &dir,
        &model_toml(name, &dir, &set, "primary = 1\npin_header = \"x-model-version\"", ACCURACY_90),
    );
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.json()["loaded"], json!([]), "v1 is reused");
    assert_eq!(runs(&gw, name, "passed").await, Some(1.0), "the set ran again for an unchanged version");

    // The set edited in place (its first line dropped): run again.
    let rows = accuracy_rows(a);
    write_set(&set, a, &rows[LINE_ROWS..], |i| json!(a.labels[0][i]));
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 200, "{}", String::from_utf8_lossy(&reply.body));
    assert_eq!(runs(&gw, name, "passed").await, Some(2.0), "a changed set must run again");
    assert_eq!(runs(&gw, name, "error").await, Some(0.0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_the_version_cannot_read_refuses_with_its_line() {
    let name = "vgate-broken";
    let (dir, set) = setup(name).await;
    let path = write_config(&dir, &model_toml(name, &dir, &set, "primary = 1", ACCURACY_90));
    let gw = start_file(&path, false).await;
    let mut text = std::fs::read_to_string(&set).unwrap();
    text.push_str("{\"inputs\": [{\"name\": \"features\", \"datatype\": \"FP32\", \"shape\": [1, 3], \"data\": [1, 2, 3]}], \"expected\": [1]}\n");
    std::fs::write(&set, text).unwrap();
    let reply = gw.admin_post("/admin/reload", None).await;
    assert_eq!(reply.status, 400, "{}", String::from_utf8_lossy(&reply.body));
    let problems = reply.json()["problems"].to_string();
    assert!(problems.contains(&format!("models.{name}.validation.dataset")), "{problems}");
    assert!(
        problems.contains("version 1: the hold-out set could not be judged: line 11: inputs:"),
        "{problems}"
    );
    assert_eq!(runs(&gw, name, "error").await, Some(1.0));
    assert_eq!(route(&gw, name, 1).await.0, vec!["1".to_string()], "v1 keeps serving");
    gw.stop().await;
}
