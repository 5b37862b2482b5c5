//! Watching the config file: polled (robust against editors that replace the file, network
//! file systems and missed inotify events), debounced until its content stops changing, and
//! reloaded only when the content really differs from what was last seen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Reloader;
use crate::audit::{Actor, Cause};

const POLL: Duration = Duration::from_millis(500);
const SETTLE: Duration = Duration::from_millis(300);

/// Reloads through `reloader` whenever `path`'s content differs from `seen` (the content the
/// running config came from), or the keys file's (`[auth] keys_file`) from what was last read,
/// until `shutdown` turns true.
pub async fn watch_file(
    reloader: Arc<Reloader>,
    path: PathBuf,
    mut seen: Option<Vec<u8>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen_keys = match reloader.keys_file() {
        Some(keys) => tokio::fs::read(keys).await.ok(),
        None => None,
    };
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
        if let Some(settled) = new_content(&path, seen.as_deref()).await {
            if changed(Some(&settled), seen.as_deref(), reloader.serving_text().as_deref()) {
                let _ = reloader.reload(Cause::new("reload", "file change", Actor::FileWatch)).await;
            }
            seen = Some(settled);
        }
        if let Some(keys) = reloader.keys_file()
            && let Some(settled) = new_content(&keys, seen_keys.as_deref()).await
        {
            seen_keys = Some(settled);
            let _ = reloader.reload(Cause::new("reload", "keys file change", Actor::FileWatch)).await;
        }
    }
}

/// `path`'s content once settled, when it differs from `seen` (`None`: unchanged, or missing
/// mid-replace).
async fn new_content(path: &PathBuf, seen: Option<&[u8]>) -> Option<Vec<u8>> {
    let now = tokio::fs::read(path).await.ok();
    if now.is_none() || now.as_deref() == seen {
        return None;
    }
    settle(path, now).await.filter(|s| Some(s.as_slice()) != seen)
}

/// Whether the settled content calls for a reload: it differs from what was last seen and
/// from the text serving now (a revert writes the file and reloads it itself).
fn changed(settled: Option<&[u8]>, seen: Option<&[u8]>, serving: Option<&str>) -> bool {
    settled.is_some() && settled != seen && settled != serving.map(str::as_bytes)
}

/// Waits until two reads `SETTLE` apart agree, so a half-written file is never loaded.
async fn settle(path: &PathBuf, mut last: Option<Vec<u8>>) -> Option<Vec<u8>> {
    for _ in 0..20 {
        tokio::time::sleep(SETTLE).await;
        let now = tokio::fs::read(path).await.ok();
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

#[cfg(test)]
mod tests {
    use super::changed;

    #[test]
    fn only_new_content_that_is_not_already_serving_reloads() {
        let (a, b): (&[u8], &[u8]) = (b"a", b"b");
        assert!(changed(Some(b), Some(a), Some("a")), "an edit");
        assert!(!changed(Some(a), Some(a), Some("a")), "unchanged");
        assert!(!changed(None, Some(a), Some("a")), "missing mid-replace");
        // A revert wrote `b` and reloaded it: the watcher must not reload it again.
        assert!(!changed(Some(b), Some(a), Some("b")), "already serving");
        // A refused edit (`b` seen, `a` still serving) is not retried until the file changes.
        assert!(!changed(Some(b), Some(b), Some("a")));
    }
}
