//! State shared by the replicas of one fleet, kept in Redis: predictions waiting for a label,
//! counters the replicas add up (rollout windows), the judging lease, and published documents
//! (rollout state). It stores what `monitor` hands it and knows nothing of models or rollouts.
//!
//! Nothing here is awaited on the request path. Request-path writes (`enqueue`) go into a
//! bounded outbox that a background task drains in batches; when the outbox is full or Redis is
//! down they are dropped and counted (`gateway_fleet_writes_total{outcome}`). Every call that
//! does wait on Redis is bounded (`CALL_TIMEOUT`) and runs on a background task or on the
//! feedback endpoint, which skips Redis while it is known to be down.
//!
//! Keys, all under `gw:{name}:`: `pred:{model}:{id}` (hash: payload, rows, at, labelled; kept
//! for twice the feedback TTL so a late label is told "expired", not "unknown"), `preds:{model}`
//! (sorted set of ids by time: the fleet-wide bound), `count:{...}` (hash of counters),
//! `doc:{...}` (hash: seq, body) and `leader` (the lease: a replica id with a TTL).

mod link;
mod scripts;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metrics::{Counter, Gauge};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

pub use link::CALL_TIMEOUT;
use link::Link;

use crate::config::FleetConfig;
use crate::telemetry;

/// Request-path writes waiting for the background writer; beyond this they are dropped.
const OUTBOX: usize = 16_384;
/// Writes sent to Redis in one round trip at most.
const BATCH: usize = 512;
/// How long counters and documents are kept without a write (a day: far beyond any window).
const KEEP: Duration = Duration::from_secs(86_400);

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("Redis is unreachable ({0})")]
    Unavailable(String),
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("Redis refused the command: {0}")]
    Redis(String),
}

/// A write made on the request path, sent later by the background writer.
#[derive(Debug)]
pub enum Write {
    /// A prediction kept for a label: `payload` is the monitor's, opaque here.
    Prediction {
        model: String,
        id: String,
        payload: String,
        rows: usize,
        at_ms: u64,
        ttl: Duration,
        capacity: usize,
    },
    /// A prediction labelled on the replica that made it, before it reached Redis.
    Labelled { model: String, id: String },
}

/// What looking a prediction up for a label found.
#[derive(Debug, Clone, PartialEq)]
pub enum Taken {
    Found(String),
    Unknown,
    Expired,
    AlreadyLabelled,
    /// The prediction had this many rows (it stays unlabelled).
    Rows(usize),
}

/// Whether a published document may overwrite the one in Redis.
#[derive(Debug, Clone, Copy)]
pub enum Fence {
    /// Only while this replica holds the lease, and only over `expected` (the judge's write).
    Leader { expected: Option<u64> },
    /// Only over `expected` (an operator's write: any replica may make it).
    Seq { expected: Option<u64> },
}

/// What a publish achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    Written,
    /// Someone else wrote first: read again and decide again.
    Stale,
    /// The lease was lost meanwhile.
    NotLeader,
}

pub struct Fleet {
    name: String,
    prefix: String,
    replica: String,
    lease_ttl: Duration,
    link: Link,
    outbox: mpsc::Sender<Write>,
    inbox: Mutex<Option<mpsc::Receiver<Write>>>,
    /// Until when this replica's lease is good, when it holds it.
    lease: Mutex<Option<Instant>>,
    leading: AtomicBool,
    /// `gateway_fleet_writes_total` by outcome: written, dropped, failed.
    writes: [Counter; 3],
    leader_gauge: Gauge,
}

impl Fleet {
    pub fn new(config: &FleetConfig) -> Result<Arc<Fleet>, FleetError> {
        let (outbox, inbox) = mpsc::channel(OUTBOX);
        let replica = format!("{}-{}-{:08x}", host_name(), std::process::id(), fastrand::u32(..));
        Ok(Arc::new(Fleet {
            name: config.name.clone(),
            prefix: format!("gw:{}:", config.name),
            replica,
            lease_ttl: config.lease_ttl,
            link: Link::new(&config.redis_url)?,
            outbox,
            inbox: Mutex::new(Some(inbox)),
            lease: Mutex::new(None),
            leading: AtomicBool::new(false),
            writes: telemetry::fleet_writes(),
            leader_gauge: telemetry::fleet_leader(),
        }))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// This replica's id in the fleet (host, pid and a random part).
    pub fn replica(&self) -> &str {
        &self.replica
    }

    pub fn connected(&self) -> bool {
        self.link.up()
    }

    pub fn down_since(&self) -> Option<Instant> {
        self.link.down_since()
    }

    /// True while this replica holds the judging lease (and its time is not up).
    pub fn is_leader(&self) -> bool {
        self.lease.lock().ok().and_then(|l| *l).is_some_and(|until| Instant::now() < until)
    }

    /// Queues a request-path write; never waits. A full outbox drops it (counted).
    pub fn enqueue(&self, write: Write) {
        if self.outbox.try_send(write).is_err() {
            self.writes[1].increment(1);
        }
    }

    /// Starts the background writer and the lease keeper.
    pub fn spawn(self: &Arc<Self>, shutdown: watch::Receiver<bool>) -> Vec<JoinHandle<()>> {
        let mut tasks = vec![tokio::spawn(keep_lease(self.clone(), shutdown.clone()))];
        if let Some(inbox) = self.inbox.lock().ok().and_then(|mut i| i.take()) {
            tasks.push(tokio::spawn(write_out(self.clone(), inbox, shutdown)));
        }
        tasks
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Looks up the prediction a label is for, marking it labelled when it is found.
    pub async fn take_prediction(
        &self,
        model: &str,
        id: &str,
        rows: usize,
        ttl: Duration,
    ) -> Result<Taken, FleetError> {
        let key = self.key(&format!("pred:{model}:{id}"));
        let (outcome, detail): (String, String) = self
            .link
            .run(|mut c| async move {
                scripts::TAKE_PREDICTION
                    .key(key)
                    .arg(rows)
                    .arg(now_ms())
                    .arg(ttl.as_millis() as u64)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match outcome.as_str() {
            "found" => Taken::Found(detail),
            "expired" => Taken::Expired,
            "labelled" => Taken::AlreadyLabelled,
            "rows" => Taken::Rows(detail.parse().unwrap_or(0)),
            _ => Taken::Unknown,
        })
    }

    /// Adds `counts` to the shared counters `name` (creating them at 0).
    pub async fn add_counts(&self, name: &str, counts: &[(String, i64)]) -> Result<(), FleetError> {
        if counts.is_empty() {
            return Ok(());
        }
        let key = self.key(&format!("count:{name}"));
        let mut pipe = redis::pipe();
        for (field, n) in counts {
            pipe.cmd("HINCRBY").arg(&key).arg(field).arg(*n).ignore();
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(KEEP.as_millis() as u64).ignore();
        self.link.run(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    /// Adds `counts` to the short-lived window counters `name` (gone `ttl` after the last
    /// write) and reads the fleet's totals back, in one round trip.
    pub async fn add_and_read_window(
        &self,
        name: &str,
        counts: &[(String, i64)],
        ttl: Duration,
    ) -> Result<HashMap<String, i64>, FleetError> {
        let key = self.key(&format!("window:{name}"));
        let mut pipe = redis::pipe();
        for (field, n) in counts.iter().filter(|(_, n)| *n != 0) {
            pipe.cmd("HINCRBY").arg(&key).arg(field).arg(*n).ignore();
        }
        pipe.cmd("PEXPIRE").arg(&key).arg(ttl.as_millis() as u64).ignore();
        pipe.cmd("HGETALL").arg(&key);
        let (totals,): (HashMap<String, i64>,) =
            self.link.run(|mut c| async move { pipe.query_async(&mut c).await }).await?;
        Ok(totals)
    }

    /// The shared counters `name` (empty when none was added yet).
    pub async fn read_counts(&self, name: &str) -> Result<HashMap<String, i64>, FleetError> {
        let key = self.key(&format!("count:{name}"));
        self.link.run(|mut c| async move { redis::cmd("HGETALL").arg(key).query_async(&mut c).await }).await
    }

    /// The document `name`: its sequence number and body, when one was published.
    pub async fn read_doc(&self, name: &str) -> Result<Option<(u64, String)>, FleetError> {
        let key = self.key(&format!("doc:{name}"));
        let (seq, body): (Option<u64>, Option<String>) = self
            .link
            .run(|mut c| async move {
                redis::cmd("HMGET").arg(key).arg("seq").arg("body").query_async(&mut c).await
            })
            .await?;
        Ok(seq.zip(body))
    }

    /// Publishes `body` as document `name` with sequence number `seq`, if `fence` allows.
    pub async fn publish_doc(
        &self,
        name: &str,
        body: &str,
        seq: u64,
        fence: Fence,
    ) -> Result<Published, FleetError> {
        let (expected, leader) = match fence {
            Fence::Leader { expected } => (expected, self.replica.clone()),
            Fence::Seq { expected } => (expected, String::new()),
        };
        let expected = expected.map(|s| s.to_string()).unwrap_or_default();
        let (doc, lease) = (self.key(&format!("doc:{name}")), self.key("leader"));
        let body = body.to_string();
        let outcome: String = self
            .link
            .run(|mut c| async move {
                scripts::PUBLISH
                    .key(doc)
                    .key(lease)
                    .arg(body)
                    .arg(seq)
                    .arg(expected)
                    .arg(leader)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        Ok(match outcome.as_str() {
            "ok" => Published::Written,
            "not_leader" => Published::NotLeader,
            _ => Published::Stale,
        })
    }

    /// Gives the lease up (on shutdown), so another replica judges without waiting it out.
    pub async fn resign(&self) {
        if !self.is_leader() {
            return;
        }
        let (key, me) = (self.key("leader"), self.replica.clone());
        let _ = self
            .link
            .run(|mut c| async move { scripts::RESIGN.key(key).arg(me).invoke_async::<i64>(&mut c).await })
            .await;
        self.set_leading(None);
    }

    async fn renew_lease(&self) {
        let (key, me, ttl) = (self.key("leader"), self.replica.clone(), self.lease_ttl.as_millis() as u64);
        let asked = Instant::now();
        let held =
            self.link
                .run(|mut c| async move {
                    scripts::LEASE.key(key).arg(me).arg(ttl).invoke_async::<i64>(&mut c).await
                })
                .await;
        match held {
            // Good until the TTL counted from when we asked (Redis counts from later).
            Ok(1) => self.set_leading(Some(asked + self.lease_ttl)),
            Ok(_) => self.set_leading(None),
            // Unreachable: the lease runs out by itself (nobody else can take it before); once
            // it has, this replica no longer judges, and says so.
            Err(_) => {
                if !self.is_leader() {
                    self.set_leading(None);
                }
            }
        }
    }

    fn set_leading(&self, until: Option<Instant>) {
        if let Ok(mut lease) = self.lease.lock() {
            *lease = until;
        }
        let leading = until.is_some();
        if self.leading.swap(leading, Ordering::Relaxed) != leading {
            self.leader_gauge.set(if leading { 1.0 } else { 0.0 });
            tracing::info!(
                replica = self.replica.as_str(),
                leading,
                "fleet: judging lease {}",
                if leading { "taken" } else { "lost" }
            );
        }
    }

    /// Sends one batch of request-path writes: predictions first (grouped by model), then marks.
    async fn send(&self, batch: Vec<Write>) {
        let n = batch.len() as u64;
        let mut predictions: HashMap<String, Vec<Write>> = HashMap::new();
        let mut marks = Vec::new();
        for w in batch {
            match &w {
                Write::Prediction { model, .. } => predictions.entry(model.clone()).or_default().push(w),
                Write::Labelled { .. } => marks.push(w),
            }
        }
        let mut ok = true;
        for (model, writes) in predictions {
            ok &= self.put_predictions(&model, writes).await.is_ok();
        }
        for w in marks {
            if let Write::Labelled { model, id } = w {
                let key = self.key(&format!("pred:{model}:{id}"));
                ok &=
                    self.link
                        .run(|mut c| async move {
                            scripts::MARK_LABELLED.key(key).invoke_async::<i64>(&mut c).await
                        })
                        .await
                        .is_ok();
            }
        }
        self.writes[if ok { 0 } else { 2 }].increment(n);
    }

    async fn put_predictions(&self, model: &str, writes: Vec<Write>) -> Result<i64, FleetError> {
        let (mut ttl, mut capacity) = (Duration::ZERO, 1);
        let mut invocation = scripts::PUT_PREDICTIONS.key(self.key(&format!("preds:{model}")));
        let mut items = Vec::with_capacity(writes.len());
        for w in writes {
            if let Write::Prediction { id, payload, rows, at_ms, ttl: t, capacity: c, .. } = w {
                (ttl, capacity) = (t, c);
                items.push((id, payload, rows, at_ms));
            }
        }
        // Kept for twice the TTL, so that a late label is told "expired" rather than "unknown".
        let keep = (2 * ttl).max(Duration::from_secs(1)).as_millis() as u64;
        invocation
            .arg(self.key(&format!("pred:{model}:")))
            .arg(capacity)
            .arg(keep)
            .arg(now_ms().saturating_sub(keep));
        for (id, payload, rows, at_ms) in items {
            invocation.arg(id).arg(payload).arg(rows).arg(at_ms);
        }
        self.link.run(|mut c| async move { invocation.invoke_async(&mut c).await }).await
    }
}

/// Drains the outbox in batches until shutdown (then sends what is left once).
async fn write_out(fleet: Arc<Fleet>, mut inbox: mpsc::Receiver<Write>, mut shutdown: watch::Receiver<bool>) {
    loop {
        let first = tokio::select! {
            w = inbox.recv() => w,
            _ = shutdown.changed() => None,
        };
        let Some(first) = first else { break };
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match inbox.try_recv() {
                Ok(w) => batch.push(w),
                Err(_) => break,
            }
        }
        if !fleet.connected() && fleet.down_since().is_some_and(|t| t.elapsed() < Duration::from_secs(1)) {
            // Down a moment ago: drop rather than queue behind a connection attempt per batch.
            fleet.writes[1].increment(batch.len() as u64);
            continue;
        }
        fleet.send(batch).await;
    }
    let mut rest = Vec::new();
    while let Ok(w) = inbox.try_recv() {
        rest.push(w);
    }
    if !rest.is_empty() && fleet.connected() {
        fleet.send(rest).await;
    }
}

/// Takes or renews the lease every third of its TTL until shutdown, then gives it up.
async fn keep_lease(fleet: Arc<Fleet>, mut shutdown: watch::Receiver<bool>) {
    let every = fleet.lease_ttl / 3;
    loop {
        fleet.renew_lease().await;
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => break,
        }
    }
    fleet.resign().await;
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "replica".to_string())
}
