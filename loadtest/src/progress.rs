//! The live progress line on stderr, rewritten once a second: phase, elapsed time, requests
//! done, the last second's rate, errors, and the open loop's backlog.

use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::run::Shared;

/// Prints the line every second until aborted.
pub async fn show(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let mut previous = 0;
    loop {
        tick.tick().await;
        let done = shared.live.done.load(Ordering::Relaxed);
        let line = line(&shared, Instant::now(), done, done.saturating_sub(previous));
        previous = done;
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{line:<90}");
        let _ = err.flush();
    }
}

/// Ends the progress line so the report starts on a fresh one.
pub fn clear() {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "\r{:<90}\r", "");
    let _ = err.flush();
}

fn line(shared: &Shared, now: Instant, done: u64, last_second: u64) -> String {
    let phase = if now < shared.measure_start { "warmup" } else { "run" };
    let elapsed = now.saturating_duration_since(shared.start).as_secs_f64();
    let errors = shared.live.errors.load(Ordering::Relaxed);
    let mut text = format!("[{elapsed:6.1}s {phase}] {done} done, {last_second} req/s, {errors} errors");
    if let Some(total) = shared.total {
        text.push_str(&format!(" (of {total} measured)"));
    }
    if let Some(schedule) = &shared.schedule {
        text.push_str(&format!(", backlog {}", schedule.backlog()));
    }
    text
}
