//! Memory across hot swaps: reloads a gateway 500 times, alternating configs that load and
//! unload model versions (the 9.5 MB dense model among them), and prints the process's resident
//! memory every 50 reloads. Freed versions must give their memory back: the numbers stay flat.
//!
//! `cargo run --release -p gateway --example reload_memory [reloads]`

use std::time::Instant;

use gateway::Gateway;
use gateway::config::{self, Overrides};
use gateway::reload::ConfigSource;

const CONFIGS: [&str; 4] = [
    "[models.credit-scoring.routing]\nprimary = 1\n",
    "[models.credit-scoring.routing]\nprimary = 2\ncandidates = [{ version = 3, percent = 10.0 }]\n[models.dense]\nrepository = \"REPO\"\nrouting = { primary = 1 }\n",
    "[models.credit-scoring.routing]\nprimary = 3\nshadows = [{ version = 1, percent = 100.0 }]\n",
    "[models.credit-scoring.routing]\nprimary = 1\nversions = [2]\n[models.dense]\nrepository = \"REPO\"\ninstances = 2\nrouting = { primary = 1 }\n",
];

fn write(path: &std::path::Path, repo: &str, body: &str) -> std::io::Result<()> {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n[models.credit-scoring]\nrepository = \"REPO\"\n{body}"
    )
    .replace("REPO", repo);
    std::fs::write(path, text)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).map(str::to_string))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let reloads: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(500);
    let repo = format!("{}/../models", env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("reload-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("gateway.toml");
    write(&path, &repo, CONFIGS[0])?;
    let overrides = Overrides::default();
    let cfg = config::load_file(&path, &overrides)?;
    let source = ConfigSource::File { path: path.clone(), overrides };
    let gw = Gateway::start_with(cfg, source, false).await?;
    let started = Instant::now();
    println!("reloads  rss_mib");
    for i in 1..=reloads {
        write(&path, &repo, CONFIGS[i % CONFIGS.len()])?;
        let cause = gateway::audit::Cause::new("reload", "memory test", gateway::audit::Actor::Gateway);
        gw.reloader.reload(cause).await.map_err(|e| format!("reload {i}: {e:?}"))?;
        if i % 50 == 0 || i == 1 {
            // Freed versions' worker threads finish in the background; give them a moment.
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            println!("{i:>7}  {:>7.1}", rss_kib() as f64 / 1024.0);
        }
    }
    println!("{reloads} reloads in {:.1} s", started.elapsed().as_secs_f64());
    gw.shutdown();
    gw.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
