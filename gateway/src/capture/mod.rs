//! Sampled capture of answered requests (`[models.X.capture]`), for replay with `loadtest
//! replay`: the inputs, the answer, the version and why it answered, the latency, the routing
//! generation and the request id of a sampled share of each model's requests, written as
//! gzip-compressed JSON lines in rotating files under a byte budget, and optionally sent as
//! CloudEvents in KServe's payload-logger format.
//!
//! Capture never slows or fails a request: the request path draws a random number and, when
//! sampled, `try_send`s a [`Record`] of `Arc`s and small values into the model's bounded
//! buffer. A full buffer drops the record and counts it
//! (`gateway_capture_records_total{model,outcome="dropped"}`). Encoding, compression and file
//! handling run on the model's writer thread (`writer`).
//!
//! Each model's sink follows its config: when a reload changes a model's `capture` table, the
//! next request sees the change (the sinks are rebuilt from the snapshot's config, keeping a
//! writer whose folder, budget and CloudEvents URL did not change); a writer no longer used
//! finishes its file and exits. Shutdown ([`Capture::close`]) finishes every file.
//!
//! Depends on `config`, `registry` (the snapshot's config), `tensor` and `telemetry`; nothing
//! here knows HTTP or gRPC.

mod cloudevents;
pub mod files;
pub mod read;
pub mod record;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwap;
use crossbeam_channel::Sender;
use metrics::Counter;

pub use cloudevents::{REQUEST_TYPE, RESPONSE_TYPE, rfc3339};
pub use read::{ReadProblems, Records};
pub use record::{Record, tensors};

use crate::config::{CaptureConfig, GatewayConfig};
use crate::registry::ServingSnapshot;
use crate::telemetry;

/// Internal knobs (not in the config file): the buffer's size and the writer's pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tuning {
    /// Records a model's buffer holds before new ones are dropped.
    pub buffer: usize,
    /// How often a writer with new records flushes its gzip stream (readers see them then).
    pub flush_every: Duration,
    /// A busy writer's pause between batches (it is not woken per record).
    pub drain_every: Duration,
}

impl Default for Tuning {
    fn default() -> Self {
        // 4096 records cover 200k captured requests/s at a 20 ms drain pace.
        Tuning { buffer: 4096, flush_every: Duration::from_secs(1), drain_every: Duration::from_millis(20) }
    }
}

/// Every model's capture sink, following the serving snapshot's config.
#[derive(Default)]
pub struct Capture {
    state: ArcSwap<State>,
    /// Held while the sinks are rebuilt; the writers started so far, joined at shutdown.
    writers: Mutex<Vec<WriterHandle>>,
    tuning: Mutex<Tuning>,
    pause: Arc<Pause>,
    closed: AtomicBool,
}

/// The sinks built from one config.
#[derive(Default)]
struct State {
    config: Option<Arc<GatewayConfig>>,
    sinks: HashMap<String, Sink>,
}

/// One model's sampling share and the buffer its records go to.
struct Sink {
    percent: f64,
    feed: Arc<Feed>,
}

/// A writer's buffer: when the last `Feed` of a writer is dropped, the writer finishes.
struct Feed {
    records: Sender<Record>,
    dropped: Counter,
    /// What the writer was started for (its `percent` aside).
    config: CaptureConfig,
}

struct WriterHandle {
    thread: std::thread::JoinHandle<()>,
    events: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    /// With the buffer size and writer pace given (tests; the default suits serving).
    pub fn with_tuning(tuning: Tuning) -> Capture {
        Capture { tuning: Mutex::new(tuning), ..Capture::default() }
    }

    /// Changes the tuning; the sinks are rebuilt with it on the next request (or `sync`).
    pub fn retune(&self, tuning: Tuning) {
        *self.tuning.lock().unwrap_or_else(PoisonError::into_inner) = tuning;
        self.state.store(Arc::new(State::default()));
    }

    /// Offers one answered request of `model` to its sink: sampled by the model's `percent`,
    /// then `make` builds the record, which is queued, or dropped and counted when the buffer
    /// is full. Call on the request path: it never blocks.
    pub fn offer(&self, snapshot: &Arc<ServingSnapshot>, model: &str, make: impl FnOnce() -> Record) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.state.load();
        if !state.config.as_ref().is_some_and(|c| Arc::ptr_eq(c, &snapshot.config)) {
            self.sync(snapshot);
            state = self.state.load();
        }
        let Some(sink) = state.sinks.get(model) else { return };
        if fastrand::f64() * 100.0 >= sink.percent {
            return;
        }
        if sink.feed.records.try_send(make()).is_err() {
            sink.feed.dropped.increment(1);
        }
    }

    /// Rebuilds the sinks for `snapshot`'s config, unless they already follow it or another
    /// caller is rebuilding them now. Writers whose settings did not change are kept.
    pub fn sync(&self, snapshot: &ServingSnapshot) {
        let Ok(mut writers) = self.writers.try_lock() else { return };
        let current = self.state.load_full();
        if self.closed.load(Ordering::Relaxed)
            || current.config.as_ref().is_some_and(|c| Arc::ptr_eq(c, &snapshot.config))
        {
            return;
        }
        let tuning = *self.tuning.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sinks = HashMap::new();
        let mut folders: HashMap<&std::path::Path, &str> = HashMap::new();
        for (name, model) in &snapshot.config.models {
            let Some(config) = &model.capture else { continue };
            // Each writer holds its folder to the budget by deleting the oldest files in it: two
            // models sharing one would delete each other's files.
            if let Some(owner) = folders.get(config.dir.as_path()) {
                let dir = config.dir.display();
                tracing::warn!(model = %name, %dir, owner, "capture not started: the folder is another model's");
                continue;
            }
            folders.insert(&config.dir, name);
            if let Some(feed) = self.feed(name, config, &current, tuning, &mut writers) {
                sinks.insert(name.clone(), Sink { percent: config.percent, feed });
            }
        }
        writers.retain(|w| !w.thread.is_finished());
        self.state.store(Arc::new(State { config: Some(snapshot.config.clone()), sinks }));
    }

    /// The running writer's feed when it serves `config`, else a new writer's (pushed onto
    /// `writers`); `None` when none could start.
    fn feed(
        &self,
        name: &str,
        config: &CaptureConfig,
        current: &State,
        tuning: Tuning,
        writers: &mut Vec<WriterHandle>,
    ) -> Option<Arc<Feed>> {
        let kept = current.sinks.get(name).map(|s| &s.feed).filter(|f| same_writer(&f.config, config));
        if let Some(feed) = kept {
            return Some(feed.clone());
        }
        match self.start(name, config, tuning) {
            Ok((feed, handle)) => {
                writers.push(handle);
                Some(feed)
            }
            Err(e) => {
                tracing::warn!(model = %name, error = %e, "capture not started");
                None
            }
        }
    }

    fn start(
        &self,
        model: &str,
        config: &CaptureConfig,
        tuning: Tuning,
    ) -> Result<(Arc<Feed>, WriterHandle), String> {
        let [written, dropped, failed] = telemetry::capture_records(model);
        let (events, events_task) = match &config.cloudevents_url {
            Some(url) => {
                let runtime = tokio::runtime::Handle::try_current()
                    .map_err(|_| "CloudEvents need the gateway's runtime".to_string())?;
                let [sent, dropped, failed] = telemetry::capture_cloudevents(model);
                let counters = cloudevents::EventCounters { sent, dropped, failed };
                let (events, task) = cloudevents::start(url, &runtime, counters)?;
                (Some(events), Some(task))
            }
            None => (None, None),
        };
        let (records, receiver) = crossbeam_channel::bounded(tuning.buffer);
        let settings = writer::Settings {
            model: model.to_string(),
            dir: config.dir.clone(),
            max_bytes: config.max_bytes,
            flush_every: tuning.flush_every,
            drain_every: tuning.drain_every,
        };
        let counters = writer::Counters { written, failed };
        let thread = writer::spawn(settings, receiver, events, counters, self.pause.clone())
            .map_err(|e| format!("writer thread: {e}"))?;
        let feed = Arc::new(Feed { records, dropped, config: config.clone() });
        Ok((feed, WriterHandle { thread, events: events_task }))
    }

    /// Holds every writer (nothing is taken from the buffers) until the guard is dropped: a
    /// stand-in for a stalled disk, for tests of what a full buffer does.
    #[doc(hidden)]
    pub fn hold_writers(&self) -> HoldGuard {
        self.pause.set(true);
        HoldGuard(self.pause.clone())
    }

    /// Stops capturing and waits (up to `within`) for every writer to write what its buffer
    /// holds and finish its file, and for queued CloudEvents to be sent.
    pub async fn close(&self, within: Duration) {
        self.closed.store(true, Ordering::Relaxed);
        self.pause.set(false);
        let handles = {
            let mut writers = self.writers.lock().unwrap_or_else(PoisonError::into_inner);
            // Dropping the sinks drops the buffers' senders: each writer drains and finishes.
            self.state.store(Arc::new(State::default()));
            std::mem::take(&mut *writers)
        };
        let (threads, events): (Vec<_>, Vec<_>) = handles.into_iter().map(|h| (h.thread, h.events)).unzip();
        let wait = async {
            let _ =
                tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))).await;
            for task in events.into_iter().flatten() {
                let _ = task.await;
            }
        };
        if tokio::time::timeout(within, wait).await.is_err() {
            tracing::warn!("capture writers still busy at the end of the drain timeout");
        }
    }
}

/// Whether a running writer serves `next` (only `percent` may differ).
fn same_writer(running: &CaptureConfig, next: &CaptureConfig) -> bool {
    running.dir == next.dir
        && running.max_bytes == next.max_bytes
        && running.cloudevents_url == next.cloudevents_url
}

/// Lets writers go on when dropped.
pub struct HoldGuard(Arc<Pause>);

impl Drop for HoldGuard {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// A switch the writers wait on while it is on.
#[derive(Default)]
struct Pause {
    held: AtomicBool,
    lock: Mutex<()>,
    changed: Condvar,
}

impl Pause {
    fn set(&self, held: bool) {
        let _guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        self.held.store(held, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Returns at once unless held; else when released.
    fn wait(&self) {
        if !self.held.load(Ordering::SeqCst) {
            return;
        }
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.held.load(Ordering::SeqCst) {
            guard = match self.changed.wait_timeout(guard, Duration::from_millis(100)) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }
}
