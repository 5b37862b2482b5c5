//! A config mounted from a Kubernetes ConfigMap: the kubelet never edits the file in place. It
//! writes the new content into a fresh timestamped folder, points the `..data` symlink at it
//! with one atomic rename, then deletes the old folder; `gateway.toml` itself is a symlink to
//! `..data/gateway.toml`. This reproduces that swap on a real file system and checks the watcher
//! follows it, reloading once per swap, and that answers and metrics name the generation that
//! served them. (Its own test binary, so the process-wide reload counter and generation gauge
//! are this test's alone.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::time::Duration;

use common::{credit_request, metric, scratch, start_file};

fn config(primary: u64) -> String {
    common::with_paths(&format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[models.credit-scoring]\nrepository = \"REPO\"\nrouting = {{ primary = {primary} }}\n"
    ))
}

/// What the kubelet does on a ConfigMap update (atomic_writer.go's order of steps).
fn kubelet_update(dir: &Path, generation: u32, content: &str, old: Option<&str>) -> String {
    let folder = format!("..2026_12_04_00_00_0{generation}.{generation}");
    std::fs::create_dir(dir.join(&folder)).unwrap();
    std::fs::write(dir.join(&folder).join("gateway.toml"), content).unwrap();
    let _ = std::fs::remove_file(dir.join("..data_tmp"));
    symlink(&folder, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join("gateway.toml").exists() {
        symlink("..data/gateway.toml", dir.join("gateway.toml")).unwrap();
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
    folder
}

/// Waits until `version` answers; returns the generation that answer names.
async fn until_served_by(gw: &common::TestGateway, version: &str) -> String {
    for _ in 0..1500 {
        let reply = gw.infer("credit-scoring", &credit_request(1)).await;
        if reply.json()["model_version"] == version {
            return reply.header("x-gateway-generation").unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // polling the file watcher
    }
    panic!("the ConfigMap update to v{version} was not applied");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configmap_symlink_swap_is_followed_and_reloaded_once() {
    let dir = scratch("configmap");
    let first = kubelet_update(&dir, 1, &config(1), None);
    let path = dir.join("gateway.toml");
    assert!(std::fs::symlink_metadata(&path).unwrap().file_type().is_symlink());
    let gw = start_file(&path, true).await;
    let applied = |text: &str| metric(text, "gateway_config_reloads_total", &[("outcome", "applied")]);
    let generation = |text: &str| common::metric_present(text, "gateway_routing_generation", &[]);
    let before = applied(&gw.metrics().await);
    // Every answer names the routing generation that served it, as the metrics do.
    assert_eq!(until_served_by(&gw, "1").await, "1");
    assert_eq!(generation(&gw.metrics().await), Some(1.0));

    let second = kubelet_update(&dir, 2, &config(2), Some(&first));
    assert_eq!(until_served_by(&gw, "2").await, "2");
    assert_eq!(generation(&gw.metrics().await), Some(2.0));
    // A second swap, back: applied as well, and the count says each swap reloaded once (a
    // watcher confused by the symlinks or the deleted folder would reload again, or never).
    kubelet_update(&dir, 3, &config(1), Some(&second));
    assert_eq!(until_served_by(&gw, "1").await, "3");
    assert_eq!(applied(&gw.metrics().await) - before, 2.0);
    let generation = gw.get_at(gw.admin, "/admin/config").await.json()["generation"].clone();
    assert_eq!(generation, 3, "one flip at start and one per swap");
}
