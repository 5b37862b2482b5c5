//! Following a model registry: the poll that reloads when an alias the routing uses moved (the
//! registry side, reading aliases and keeping each model's last poll, is `source::registry`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Reloader;
use crate::registry::Registry;
use crate::source::registry;

/// Reads the aliases of every registry-sourced model every `poll_s` (backing off while its
/// registry fails), and reloads when one the routing uses points elsewhere now. Until shutdown.
pub async fn poll_registries(
    reloader: Arc<Reloader>,
    serving: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tick = Duration::from_secs(1);
    let mut next: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        let snapshot = serving.snapshot();
        let now = tokio::time::Instant::now();
        let mut moved = Vec::new();
        for m in snapshot.config.models.values() {
            let Some(source) = &m.source else { continue };
            if next.get(&m.name).is_some_and(|t| now < *t) {
                continue;
            }
            let (change, failures) = registry::alias_moved(m).await;
            let backoff =
                source.poll.saturating_mul(1 << failures.min(8)).min(registry::MAX_BACKOFF.max(source.poll));
            next.insert(m.name.clone(), now + backoff);
            if let Some(change) = change {
                moved.push((m.name.clone(), change));
            }
        }
        if !moved.is_empty() {
            let what: Vec<&str> = moved.iter().map(|(_, c)| c.as_str()).collect();
            if let Err(refused) = reloader.reload(&format!("registry: {}", what.join(", "))).await {
                let why: Vec<String> = refused.problems.iter().map(ToString::to_string).collect();
                for (model, _) in &moved {
                    registry::set_status(model, "reload_refused", Some(why.join("; ")));
                }
            }
        }
    }
}
