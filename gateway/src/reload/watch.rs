//! Watching the config file: polled (robust against editors that replace the file, network
//! file systems and missed inotify events), debounced until its content stops changing, and
//! reloaded only when the content really differs from what was last seen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Reloader;

const POLL: Duration = Duration::from_millis(500);
const SETTLE: Duration = Duration::from_millis(300);

/// Reloads through `reloader` whenever `path`'s content differs from `seen` (the content the
/// running config came from), until `shutdown` turns true.
pub async fn watch_file(
    reloader: Arc<Reloader>,
    path: PathBuf,
    mut seen: Option<Vec<u8>>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = shutdown.changed() => return,
        }
        let now = tokio::fs::read(&path).await.ok();
        if now.is_none() || now == seen {
            continue; // missing (mid-replace) or unchanged
        }
        let settled = settle(&path, now).await;
        if settled.is_some() && settled != seen {
            seen = settled;
            let _ = reloader.reload("file change").await;
        }
    }
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
