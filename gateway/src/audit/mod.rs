//! The audit history: one append-only record per change to what serves, and per refused
//! reload. Owns the records' shape, where they are kept and how they are read back
//! (`GET /admin/history`, `POST /admin/revert`).
//!
//! Every applied change goes through `Registry::flip`, which hands this module the snapshot
//! before and after, so no change can skip the history and none is recorded twice. A record
//! says when, which generation, what kind of change (`event`), what triggered it, who (`actor`:
//! for admin calls a fingerprint of the token and the caller's address, never the token), the
//! routing before and after, the numbers behind a rollout verdict, and for a change that applied
//! a config file, that file's text: `POST /admin/revert` writes it back to the file, so the file
//! stays the source of truth and the revert is one more reload.
//!
//! With `[audit] dir`, records are JSON lines in `history.jsonl`, fsync'd one by one (a change
//! is rare; losing its record to a crash is not acceptable), rotated to `history.1.jsonl` at
//! half of `max_bytes`. Without it, the last `MEMORY_RECORDS` are kept in memory. Writing
//! happens on the control path (reloads, rollout steps), never on the request path.

mod log;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::AuditConfig;

pub use log::LogError;

/// Records kept in memory when the history has no folder.
pub const MEMORY_RECORDS: usize = 1000;

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A call to the admin API: which token (a fingerprint) and from where.
    Admin { token: Option<String>, remote: Option<String> },
    /// The config file changed on disk.
    FileWatch,
    /// A signal (SIGHUP).
    Signal { signal: String },
    /// The rollout controller's verdicts.
    Controller,
    /// The fleet's judging replica (this replica applies what it published).
    Fleet,
    /// A model registry's alias moved.
    Registry,
    /// Triton's repository API (a client's load or unload: its tenant, with `[auth]`) or its
    /// poll.
    Repository {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tenant: Option<String>,
    },
    /// The gateway itself: start-up.
    Gateway,
}

impl Actor {
    /// An admin caller: the token reduced to a fingerprint (`sha256:` and 12 hex digits) so the
    /// history can tell tokens apart without ever holding one.
    pub fn admin(token: Option<&str>, remote: Option<SocketAddr>) -> Actor {
        use sha2::Digest;
        let token = token.map(|t| {
            let digest = sha2::Sha256::digest(t.as_bytes());
            let hex: String = digest.iter().take(6).map(|b| format!("{b:02x}")).collect();
            format!("sha256:{hex}")
        });
        Actor::Admin { token, remote: remote.map(|a| a.to_string()) }
    }
}

/// What caused a change, as the code making it knows it.
#[derive(Debug, Clone)]
pub struct Cause {
    /// `reload`, `start`, `revert`, `rollout_start`, `rollout_step`, `promote`, `rollback`,
    /// `abort`, `rollout_end`, `fleet_apply`.
    pub event: &'static str,
    /// Human words: "file change", "SIGHUP", "admin API", "registry: @champion moved to 4".
    pub trigger: String,
    pub actor: Actor,
    /// The numbers behind it (a rollout verdict's analysis, the versions loaded).
    pub details: Value,
}

impl Cause {
    pub fn new(event: &'static str, trigger: impl Into<String>, actor: Actor) -> Cause {
        Cause { event, trigger: trigger.into(), actor, details: Value::Null }
    }

    pub fn with_details(mut self, details: Value) -> Cause {
        self.details = details;
        self
    }
}

/// One line of the history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Increases by one per record, across restarts (paging uses it).
    pub seq: u64,
    /// RFC 3339, UTC, milliseconds.
    pub at: String,
    pub at_unix_ms: u64,
    /// The generation serving after the change (for a refused reload: the one still serving).
    pub generation: u64,
    pub previous_generation: u64,
    /// `applied` or `refused`.
    pub outcome: String,
    pub event: String,
    pub trigger: String,
    pub actor: Actor,
    pub routing_before: Value,
    pub routing_after: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub details: Value,
    /// The config file's text this change applied (reloads and start-up from a file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
}

/// One page of `GET /admin/history`.
#[derive(Debug, Serialize)]
pub struct Page {
    pub records: Vec<Record>,
    /// Pass as `before` for the next (older) page; absent on the last page.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_before: Option<u64>,
}

/// What a record says before it has a number and a time.
pub struct Entry {
    pub generation: u64,
    pub previous_generation: u64,
    pub applied: bool,
    pub cause: Cause,
    pub routing_before: Value,
    pub routing_after: Value,
    pub config: Option<String>,
}

pub struct History {
    inner: Mutex<Inner>,
}

struct Inner {
    next_seq: u64,
    /// The newest records (all of them without a folder; a cache of the newest with one).
    recent: VecDeque<Record>,
    log: Option<log::Log>,
}

impl History {
    /// A history in memory only (tests, and gateways without `[audit] dir`).
    pub fn in_memory() -> History {
        History { inner: Mutex::new(Inner { next_seq: 1, recent: VecDeque::new(), log: None }) }
    }

    /// Opens the configured history, reading back what the files hold.
    pub fn open(config: &AuditConfig) -> Result<History, LogError> {
        let Some(dir) = &config.dir else { return Ok(History::in_memory()) };
        let (log, records) = log::Log::open(dir, config.max_bytes)?;
        let next_seq = records.last().map_or(1, |r| r.seq + 1);
        let skip = records.len().saturating_sub(MEMORY_RECORDS);
        let recent = records.into_iter().skip(skip).collect();
        Ok(History { inner: Mutex::new(Inner { next_seq, recent, log: Some(log) }) })
    }

    /// Appends a record (written and fsync'd before this returns, when on disk). A write that
    /// fails is logged and the record kept in memory: the change itself has happened.
    pub fn append(&self, entry: Entry) -> Option<Record> {
        let Ok(mut inner) = self.inner.lock() else { return None };
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let record = Record {
            seq: inner.next_seq,
            at: rfc3339(now.as_millis() as u64),
            at_unix_ms: now.as_millis() as u64,
            generation: entry.generation,
            previous_generation: entry.previous_generation,
            outcome: if entry.applied { "applied" } else { "refused" }.to_string(),
            event: entry.cause.event.to_string(),
            trigger: entry.cause.trigger,
            actor: entry.cause.actor,
            routing_before: entry.routing_before,
            routing_after: entry.routing_after,
            details: entry.cause.details,
            config: entry.config,
        };
        inner.next_seq += 1;
        if let Some(log) = inner.log.as_mut() {
            let written = log.append(&record);
            if let Err(e) = &written {
                tracing::error!(error = %e, seq = record.seq, "audit history: the record could not be written");
            }
            crate::telemetry::count_audit_record(written.is_ok());
        }
        inner.recent.push_back(record.clone());
        while inner.recent.len() > MEMORY_RECORDS {
            inner.recent.pop_front();
        }
        Some(record)
    }

    /// The newest generation recorded (0 for an empty history): a restarted gateway numbers
    /// its generations on from it, so a generation names one routing across restarts.
    pub fn last_generation(&self) -> u64 {
        let Ok(inner) = self.inner.lock() else { return 0 };
        inner.recent.iter().map(|r| r.generation).max().unwrap_or(0)
    }

    /// Up to `limit` records older than `before` (all, for `None`), newest first.
    pub fn page(&self, before: Option<u64>, limit: usize) -> Result<Page, LogError> {
        let all = self.all()?;
        let older: Vec<Record> =
            all.into_iter().rev().filter(|r| before.is_none_or(|b| r.seq < b)).take(limit + 1).collect();
        let more = older.len() > limit;
        let records: Vec<Record> = older.into_iter().take(limit).collect();
        let next_before = if more { records.last().map(|r| r.seq) } else { None };
        Ok(Page { records, next_before })
    }

    /// The config text that was in force at `generation`: the newest applied record at or
    /// before it that carries a config.
    pub fn config_at(&self, generation: u64) -> Result<Option<String>, LogError> {
        let all = self.all()?;
        let Some(at) = all.iter().rposition(|r| r.outcome == "applied" && r.generation == generation) else {
            return Ok(None);
        };
        Ok(all[..=at].iter().rev().find_map(|r| r.config.clone()))
    }

    /// Every record still kept, oldest first.
    fn all(&self) -> Result<Vec<Record>, LogError> {
        let Ok(inner) = self.inner.lock() else { return Ok(Vec::new()) };
        match &inner.log {
            // The files hold more than the cache; read them (admin calls only).
            Some(log) => log.read_all(),
            None => Ok(inner.recent.iter().cloned().collect()),
        }
    }
}

/// `2026-12-04T22:13:59.902Z` from milliseconds since the epoch (UTC, proleptic Gregorian).
fn rfc3339(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(generation: u64, config: Option<&str>) -> Entry {
        Entry {
            generation,
            previous_generation: generation.saturating_sub(1),
            applied: true,
            cause: Cause::new("reload", "test", Actor::Gateway),
            routing_before: Value::Null,
            routing_after: Value::Null,
            config: config.map(str::to_string),
        }
    }

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_796_425_239_902), "2026-12-04T23:00:39.902Z");
    }

    #[test]
    fn pages_go_newest_first_and_end() {
        let h = History::in_memory();
        for g in 1..=5 {
            h.append(entry(g, None));
        }
        let first = h.page(None, 2).unwrap();
        assert_eq!(first.records.iter().map(|r| r.generation).collect::<Vec<_>>(), [5, 4]);
        let second = h.page(first.next_before, 2).unwrap();
        assert_eq!(second.records.iter().map(|r| r.generation).collect::<Vec<_>>(), [3, 2]);
        let last = h.page(second.next_before, 2).unwrap();
        assert_eq!(last.records.iter().map(|r| r.generation).collect::<Vec<_>>(), [1]);
        assert_eq!(last.next_before, None);
    }

    #[test]
    fn config_at_a_generation_is_the_newest_config_applied_by_then() {
        let h = History::in_memory();
        h.append(entry(1, Some("one")));
        h.append(entry(2, None)); // a rollout step: same config
        h.append(entry(3, Some("three")));
        assert_eq!(h.config_at(2).unwrap().as_deref(), Some("one"));
        assert_eq!(h.config_at(3).unwrap().as_deref(), Some("three"));
        assert_eq!(h.config_at(9).unwrap(), None);
    }

    #[test]
    fn memory_keeps_only_the_newest_records() {
        let h = History::in_memory();
        for g in 0..(MEMORY_RECORDS as u64 + 10) {
            h.append(entry(g, None));
        }
        let page = h.page(None, usize::MAX - 1).unwrap();
        assert_eq!(page.records.len(), MEMORY_RECORDS);
        assert_eq!(page.records.last().map(|r| r.generation), Some(10));
    }

    #[test]
    fn admin_actor_never_holds_the_token() {
        let a = Actor::admin(Some("s3cret-token"), Some(([127, 0, 0, 1], 4000).into()));
        let json = serde_json::to_string(&a).unwrap();
        assert!(!json.contains("s3cret"), "{json}");
        assert!(json.contains("sha256:") && json.contains("127.0.0.1:4000"), "{json}");
        assert_ne!(Actor::admin(Some("other"), None), Actor::admin(Some("s3cret-token"), None));
    }
}
