//! One model's capture writer: an OS thread that takes records from the model's bounded buffer,
//! encodes each as a JSON line, compresses it into the current `capture-<unix ms>.jsonl.gz`,
//! rotates files and keeps the folder under its byte budget, and hands each record to the
//! CloudEvents sender when there is one. All the encoding and compression happens here, never
//! on the request path.
//!
//! Under load the writer drains its buffer in batches every `drain_every` instead of being
//! woken per record, so a captured request costs its sender no wake-up; the lines of a batch
//! reach the compressor in one write (flate2 zero-fills its 32 KiB output buffer on every
//! write, which per record cost as much as compressing it). It flushes the gzip stream every
//! `flush_every` (readers see records that recent), and finishes the stream when the buffer's
//! last sender is gone (a reload that changed the capture, or shutdown).

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, TryRecvError};
use flate2::Compression;
use flate2::write::GzEncoder;
use metrics::Counter;

use super::Pause;
use super::cloudevents::Events;
use super::files;
use super::record::Record;

/// After a file could not be created or written, the writer tries again this much later; the
/// records meanwhile are counted as failed without touching the disk.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Encoded lines gathered before they go to the compressor in one write (a quarter of the
/// rotation size at most, so that a batch cannot carry a file far past it).
const BATCH_BYTES: u64 = 64 << 10;

/// Where and how one model's records are written.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub model: String,
    pub dir: PathBuf,
    pub max_bytes: u64,
    pub flush_every: Duration,
    pub drain_every: Duration,
}

/// `gateway_capture_records_total{outcome}` for what the writer decides.
pub(super) struct Counters {
    pub written: Counter,
    pub failed: Counter,
}

/// Starts the writer thread; it ends when every sender of `records` is gone and what they sent
/// is written.
pub(super) fn spawn(
    settings: Settings,
    records: Receiver<Record>,
    events: Option<Events>,
    counters: Counters,
    pause: Arc<Pause>,
) -> io::Result<JoinHandle<()>> {
    let name = format!("capture-{}", settings.model);
    let rotate_at = files::rotate_at(settings.max_bytes);
    let writer = Writer {
        settings,
        rotate_at,
        records,
        events,
        counters,
        pause,
        batch: Vec::new(),
        batched: 0,
        batch_bytes: BATCH_BYTES.min(rotate_at / 4).max(1) as usize,
        file: None,
        retry_at: None,
        budget_checked: false,
    };
    // Thread names are limited to 15 bytes on Linux; the rest is cut, which is fine.
    std::thread::Builder::new().name(name).spawn(move || writer.run())
}

struct Writer {
    settings: Settings,
    rotate_at: u64,
    records: Receiver<Record>,
    events: Option<Events>,
    counters: Counters,
    pause: Arc<Pause>,
    /// Encoded lines not yet handed to the compressor, and how many records they hold.
    batch: Vec<u8>,
    batched: u64,
    batch_bytes: usize,
    file: Option<Open>,
    /// Set after an I/O failure: no file is tried before then.
    retry_at: Option<Instant>,
    /// Whether files left by an earlier run have been held to the budget.
    budget_checked: bool,
}

/// The file being written.
struct Open {
    path: PathBuf,
    gz: GzEncoder<Counting>,
    /// Records written since the last flush.
    dirty: bool,
    flushed_at: Instant,
}

/// Counts the compressed bytes that reached the file.
struct Counting {
    file: File,
    bytes: u64,
}

impl Write for Counting {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Writer {
    fn run(mut self) {
        loop {
            self.pause.wait();
            match self.records.recv_timeout(self.settings.flush_every) {
                Ok(record) => self.take(record),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            // Busy: drain in batches, sleeping in between, until a batch finds nothing.
            while self.drain() > 0 {
                self.write_batch();
                self.flush_if_due();
                std::thread::sleep(self.settings.drain_every);
                self.pause.wait();
            }
            self.write_batch();
            self.flush_if_due();
        }
        self.write_batch();
        self.close();
    }

    /// Takes what the buffer holds now (at most its capacity, so a busy buffer cannot keep the
    /// writer from flushing); returns how many.
    fn drain(&mut self) -> usize {
        let mut taken = 0;
        while taken < self.records.capacity().unwrap_or(usize::MAX).max(1) {
            match self.records.try_recv() {
                Ok(record) => self.take(record),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
            taken += 1;
        }
        taken
    }

    fn take(&mut self, record: Record) {
        let mark = self.batch.len();
        if let Err(e) = serde_json::to_writer(&mut self.batch, &record) {
            tracing::warn!(model = %self.settings.model, error = %e, "a capture record could not be encoded");
            self.batch.truncate(mark);
            self.counters.failed.increment(1);
            return;
        }
        self.batch.push(b'\n');
        self.batched += 1;
        if let Some(events) = &self.events {
            events.offer(&record);
        }
        drop(record); // the tensors go back as soon as they are encoded
        if self.batch.len() >= self.batch_bytes {
            self.write_batch();
        }
    }

    /// Hands the gathered lines to the compressor (rotating when the file is full) and counts
    /// them written, or failed.
    fn write_batch(&mut self) {
        if self.batched == 0 {
            return;
        }
        let records = std::mem::take(&mut self.batched);
        match self.write_lines() {
            Ok(()) => self.counters.written.increment(records),
            Err(e) => {
                self.counters.failed.increment(records);
                self.failed(e);
            }
        }
        self.batch.clear();
    }

    fn write_lines(&mut self) -> io::Result<()> {
        if self.file.is_none() {
            self.file = Some(self.open()?);
        }
        let Some(open) = self.file.as_mut() else { return Err(io::Error::other("no capture file")) };
        open.gz.write_all(&self.batch)?;
        open.dirty = true;
        if open.gz.get_ref().bytes >= self.rotate_at {
            self.rotate()?;
        }
        Ok(())
    }

    fn open(&mut self) -> io::Result<Open> {
        if self.retry_at.is_some_and(|at| Instant::now() < at) {
            return Err(io::Error::other("the capture folder failed recently; retrying later"));
        }
        let (path, file) = files::create(&self.settings.dir)?;
        if !self.budget_checked {
            // Files an earlier run left count toward the budget too.
            self.enforce_budget(Some(&path));
            self.budget_checked = true;
        }
        if self.retry_at.take().is_some() {
            tracing::info!(model = %self.settings.model, path = %path.display(), "capture writing again");
        }
        let gz = GzEncoder::new(Counting { file, bytes: 0 }, Compression::fast());
        Ok(Open { path, gz, dirty: false, flushed_at: Instant::now() })
    }

    /// Finishes the current file (its gzip trailer) and deletes the oldest files beyond the
    /// budget; the next record starts a new file.
    fn rotate(&mut self) -> io::Result<()> {
        let Some(open) = self.file.take() else { return Ok(()) };
        open.gz.finish()?;
        self.enforce_budget(None);
        Ok(())
    }

    fn enforce_budget(&self, keep: Option<&Path>) {
        let budget = files::closed_budget(self.settings.max_bytes);
        if let Err(e) = files::enforce_budget(&self.settings.dir, budget, keep) {
            tracing::warn!(model = %self.settings.model, error = %e, "old capture files could not be deleted");
        }
    }

    /// Flushes the compressed stream when records were written a while ago, so that readers
    /// (and `loadtest replay`) see them before the file is finished.
    fn flush_if_due(&mut self) {
        let Some(open) = self.file.as_mut() else { return };
        if !open.dirty || open.flushed_at.elapsed() < self.settings.flush_every {
            return;
        }
        open.dirty = false;
        open.flushed_at = Instant::now();
        if let Err(e) = open.gz.flush() {
            self.failed(e);
        }
    }

    fn failed(&mut self, e: io::Error) {
        if self.retry_at.is_none() {
            tracing::warn!(
                model = %self.settings.model, dir = %self.settings.dir.display(), error = %e,
                "capture records cannot be written; counting them as failed and retrying every {RETRY_AFTER:?}"
            );
        }
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        if let Some(open) = self.file.take() {
            // Whatever can still be finished is kept; the file may be cut (readers cope).
            let _ = open.gz.finish();
            tracing::debug!(path = %open.path.display(), "capture file closed after a failure");
        }
    }

    fn close(mut self) {
        if let Some(open) = self.file.take()
            && let Err(e) = open.gz.finish().and_then(|mut c| c.flush())
        {
            tracing::warn!(model = %self.settings.model, path = %open.path.display(), error = %e, "capture file not finished");
        }
    }
}
