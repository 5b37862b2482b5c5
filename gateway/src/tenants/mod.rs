//! The front door for many teams (`[auth]`): who is calling (a tenant's API key), what it may
//! call (its models, whether it may pin), how much (its rate and concurrency quotas) and who
//! yields under load (`batch` before `online`). Both front ends pass every data-plane request
//! through `FrontDoor::enter` before it takes a place in the server's in-flight limit, so a
//! refused caller costs a hash and a map look-up, never a model's time.
//!
//! Keys: `Authorization: Bearer <key>` or `x-api-key: <key>` (the same names in gRPC metadata).
//! The keys file holds SHA-256 digests only; a request's key is hashed and looked up by digest,
//! unless it is the key its thread let in last (`recent`: compared in constant time).
//! The look-up's timing leaks nothing a caller can use: learning a digest's first bytes does not
//! bring a key any closer.
//!
//! The tenants follow the serving config: a reload (or a change of the keys file) that applies
//! builds a new table on the next request, keeping the running state (rate bucket, requests in
//! flight) of every tenant whose settings did not change. Health endpoints stay open (probes).

mod bucket;
mod priority;
mod recent;
mod shared;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use arc_swap::ArcSwap;
use http::header::AUTHORIZATION;
use http::{HeaderMap, HeaderName, HeaderValue};
use metrics::Counter;
use sha2::Digest;

use bucket::Bucket;
pub use priority::PriorityGate;
pub use shared::share_rates;

use crate::admission::{Admission, Admitted};
use crate::config::{GatewayConfig, ModelAccess, Priority, TenantConfig};
use crate::deadline::Deadline;
use crate::protocol::ApiError;
use crate::registry::{Registry, ServingSnapshot};
use crate::telemetry::{self, Outcome};

/// One tenant's settings and running state.
pub struct Tenant {
    pub config: TenantConfig,
    bucket: Option<Mutex<Bucket>>,
    in_flight: AtomicUsize,
    admitted: Counter,
    rate_limited: Counter,
    over_concurrency: Counter,
    forbidden: Counter,
    /// Admitted requests by result, in `Outcome::ALL` order.
    results: [Counter; 5],
    /// With `[fleet]`: requests that reached the rate limiter here since the last report
    /// (`shared`).
    demand: AtomicU64,
}

impl Tenant {
    fn new(config: TenantConfig) -> Tenant {
        let name = config.name.as_str();
        let bucket = config.rps.map(|rps| Mutex::new(Bucket::new(rps, config.burst, Instant::now())));
        Tenant {
            bucket,
            in_flight: AtomicUsize::new(0),
            admitted: telemetry::tenant_requests(name, "admitted"),
            rate_limited: telemetry::tenant_requests(name, "rate_limited"),
            over_concurrency: telemetry::tenant_requests(name, "over_concurrency"),
            forbidden: telemetry::tenant_requests(name, "forbidden"),
            results: Outcome::ALL.map(|o| telemetry::tenant_requests(name, o.as_str())),
            demand: AtomicU64::new(0),
            config,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// With `[fleet]`: this replica's part of the tenant's rate when `n` replicas serve it.
    fn split_rate(&self, n: usize) {
        let (Some(rps), Some(bucket)) = (self.config.rps, &self.bucket) else { return };
        let burst = (self.config.burst / n as u64).max(1);
        if let Ok(mut b) = bucket.lock() {
            b.set_rate(rps / n as f64, burst);
        }
    }
}

/// The tenant a request was admitted as: handed to the HTTP handlers beside the request, and in
/// a gRPC call's extensions (tonic passes those to the RPCs).
#[derive(Clone)]
pub struct Caller(pub Arc<Tenant>);

impl Caller {
    /// 403 unless the tenant may call `model`, with the same words whether or not it exists.
    pub fn may_call(&self, model: &str) -> Result<(), ApiError> {
        if self.0.config.models.allows(model) {
            return Ok(());
        }
        self.0.forbidden.increment(1);
        Err(ApiError::Forbidden(format!("tenant '{}' may not call model '{model}'", self.0.name())))
    }

    /// 403 unless the tenant may use calls that span every model (the repository API, all
    /// statistics).
    pub fn may_call_all(&self, what: &str) -> Result<(), ApiError> {
        if self.0.config.models == ModelAccess::All {
            return Ok(());
        }
        self.0.forbidden.increment(1);
        Err(ApiError::Forbidden(format!(
            "tenant '{}' may not use {what}: it needs models = [\"*\"]",
            self.0.name()
        )))
    }

    /// 403 when the request picks a version (`pinned` by its path or message, or by the
    /// model's pin header) and the tenant may not pin.
    pub fn may_pin<'h>(
        &self,
        snapshot: &ServingSnapshot,
        model: &str,
        pinned: bool,
        header: impl Fn(&str) -> Option<&'h [u8]>,
    ) -> Result<(), ApiError> {
        if self.0.config.may_pin {
            return Ok(());
        }
        let pin_header = snapshot.model(model).and_then(|m| m.routing.pin_header.as_deref());
        if pinned || pin_header.is_some_and(|h| header(h).is_some()) {
            self.0.forbidden.increment(1);
            return Err(ApiError::Forbidden(format!(
                "tenant '{}' may not choose a model version (may_pin = false)",
                self.0.name()
            )));
        }
        Ok(())
    }
}

/// What the front door decided for one request.
pub enum Entry {
    /// No `[auth]`, or a path open without a key: served as without tenants.
    Open,
    /// Let in as a tenant.
    Admitted(Pass),
    /// A `batch` tenant's request, to wait for its place (`FrontDoor::wait`).
    Waiting(Waiting),
}

/// A batch request that holds its tenant's place and waits for the lane.
pub struct Waiting {
    slot: Slot,
    deadline: Deadline,
}

/// A tenant's admitted request; dropping it frees the tenant's place and any priority permit.
pub struct Pass {
    slot: Slot,
    _permit: Option<priority::Permit>,
}

impl Pass {
    fn new(slot: Slot, permit: Option<priority::Permit>) -> Pass {
        slot.tenant().admitted.increment(1);
        Pass { slot, _permit: permit }
    }

    /// The tenant admitted.
    pub fn caller(&self) -> &Caller {
        &self.slot.0
    }

    /// Counts the admitted request's result under its tenant.
    pub fn finish(&self, outcome: Outcome) {
        if let Some(i) = Outcome::ALL.iter().position(|o| *o == outcome) {
            self.slot.tenant().results[i].increment(1);
        }
    }
}

/// A place in the server's in-flight limit (shared by HTTP and gRPC) for a request the front
/// door let in (`pass`; `None` without `[auth]`); a refusal is counted under its tenant.
pub fn take_server_place(admission: &Admission, pass: Option<&Pass>) -> Result<Admitted, ApiError> {
    admission.admit().inspect_err(|_| {
        if let Some(pass) = pass {
            pass.finish(Outcome::Rejected);
        }
    })
}

/// How an HTTP status counts in `gateway_tenant_requests_total` (as in `gateway_requests_total`).
pub fn outcome_of_status(status: http::StatusCode) -> Outcome {
    match status.as_u16() {
        200..=399 => Outcome::Ok,
        429 | 503 => Outcome::Rejected,
        504 => Outcome::Timeout,
        400..=499 => Outcome::ClientError,
        _ => Outcome::ServerError,
    }
}

/// A place among the tenant's requests in flight (`max_in_flight`), freed when dropped.
struct Slot(Caller);

impl Slot {
    fn tenant(&self) -> &Tenant {
        &self.0.0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.tenant().in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The tenants in force, built from one config.
struct Table {
    config: Option<Arc<GatewayConfig>>,
    /// Unique in the process (`recent` tells tables apart by it).
    generation: u64,
    by_key: HashMap<[u8; 32], Arc<Tenant>, DigestHash>,
}

impl Table {
    fn new(config: Option<Arc<GatewayConfig>>, by_key: HashMap<[u8; 32], Arc<Tenant>, DigestHash>) -> Table {
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        Table { config, generation: GENERATION.fetch_add(1, Ordering::Relaxed), by_key }
    }
}

/// The table's keys are SHA-256 digests, already spread evenly, so their hash is the digest's
/// first eight bytes rather than a second hash of a hash on every request. No caller can pick
/// digests that collide (that would take SHA-256 preimages), so there is no flooding to guard
/// against.
type DigestHash = std::hash::BuildHasherDefault<DigestHasher>;

#[derive(Default)]
struct DigestHasher(u64);

impl std::hash::Hasher for DigestHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut word = [0u8; 8];
        let n = bytes.len().min(8);
        word[..n].copy_from_slice(&bytes[..n]);
        self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(word);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub struct FrontDoor {
    registry: Arc<Registry>,
    table: ArcSwap<Table>,
    rebuilding: Mutex<()>,
    priority: PriorityGate,
    no_key: Counter,
    unknown_key: Counter,
    /// Rates are shared with the fleet (`share_rates` runs).
    shared: AtomicBool,
}

impl FrontDoor {
    pub fn new(registry: Arc<Registry>) -> Arc<FrontDoor> {
        let door = FrontDoor {
            registry,
            table: ArcSwap::from_pointee(Table::new(None, HashMap::default())),
            rebuilding: Mutex::new(()),
            priority: PriorityGate::default(),
            no_key: telemetry::tenant_requests("none", "unauthenticated"),
            unknown_key: telemetry::tenant_requests("unknown", "unauthenticated"),
            shared: AtomicBool::new(false),
        };
        door.refresh(&door.registry.snapshot());
        Arc::new(door)
    }

    /// Starts sharing tenants' rates with `fleet` (the task runs until `shutdown`).
    pub fn share_with(
        self: &Arc<Self>,
        fleet: Arc<crate::fleet::Fleet>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        self.shared.store(true, Ordering::Release);
        tokio::spawn(share_rates(self.clone(), fleet, shutdown))
    }

    /// The tenants of the serving config that have a rate.
    fn rate_limited_tenants(&self) -> Vec<Arc<Tenant>> {
        let table = self.table_for(&self.registry.snapshot());
        table.by_key.values().filter(|t| t.config.rps.is_some()).cloned().collect()
    }

    /// The front door's decision for a request to `path`, taken at once: open (no `[auth]`, or
    /// a health probe), admitted, or a `batch` tenant that must wait for its place in the lane
    /// (`FrontDoor::wait`) because `online` traffic is being served. Refused: 401 without a
    /// known key, 429 over the tenant's rate or concurrency (with `Retry-After`). `headers`:
    /// the HTTP request's, or the gRPC call's metadata (HTTP/2 headers too).
    ///
    /// Synchronous on purpose: an online tenant's request (nearly all of them) is admitted
    /// without a future of its own, so the front door adds no poll and no allocation to it.
    pub fn enter(&self, path: &str, headers: &HeaderMap) -> Result<Entry, ApiError> {
        let snapshot = self.registry.snapshot();
        if snapshot.config.auth.is_none() || open_path(path) {
            return Ok(Entry::Open);
        }
        // One clock reading for the rate bucket, the priority window and a batch wait.
        let now = Instant::now();
        let tenant = self.authenticate(&snapshot, headers)?;
        let priority = tenant.config.priority;
        let slot = self.take_place(tenant, now)?;
        match priority {
            Priority::Online => self.priority.online_seen(now),
            Priority::Batch if self.priority.online_present() => {
                let deadline = Deadline::after_from(now, snapshot.config.server.request_timeout);
                return Ok(Entry::Waiting(Waiting { slot, deadline }));
            }
            Priority::Batch => {}
        }
        Ok(Entry::Admitted(Pass::new(slot, None)))
    }

    /// A waiting batch request's place in the lane, within its deadline (then 429).
    pub async fn wait(&self, waiting: Waiting) -> Result<Pass, ApiError> {
        let Waiting { slot, deadline } = waiting;
        let permit = self.priority.enter_batch(&deadline).await?;
        Ok(Pass::new(slot, permit))
    }

    fn authenticate(&self, snapshot: &ServingSnapshot, headers: &HeaderMap) -> Result<Arc<Tenant>, ApiError> {
        let Some(key) = api_key(headers) else {
            self.no_key.increment(1);
            return Err(ApiError::Unauthenticated(
                "an API key is required: send `Authorization: Bearer <key>` or `x-api-key: <key>`".into(),
            ));
        };
        let table = self.table_for(snapshot);
        if let Some(tenant) = recent::find(table.generation, key) {
            return Ok(tenant);
        }
        let digest: [u8; 32] = sha2::Sha256::digest(key).into();
        match table.by_key.get(&digest) {
            Some(tenant) => {
                recent::keep(table.generation, key, tenant);
                Ok(tenant.clone())
            }
            None => {
                self.unknown_key.increment(1);
                Err(ApiError::Unauthenticated("unknown API key".into()))
            }
        }
    }

    /// The tenant's concurrency place, then a token from its rate bucket.
    fn take_place(&self, tenant: Arc<Tenant>, now: Instant) -> Result<Slot, ApiError> {
        let max = tenant.config.max_in_flight.unwrap_or(usize::MAX);
        if tenant.in_flight.fetch_add(1, Ordering::AcqRel) >= max {
            tenant.in_flight.fetch_sub(1, Ordering::AcqRel);
            tenant.over_concurrency.increment(1);
            return Err(ApiError::TooManyRequests {
                message: format!("tenant '{}' has {max} requests in progress (max_in_flight)", tenant.name()),
                retry_after: 1,
            });
        }
        let slot = Slot(Caller(tenant));
        let tenant = slot.tenant();
        if let Some(bucket) = &tenant.bucket {
            if self.shared.load(Ordering::Relaxed) {
                tenant.demand.fetch_add(1, Ordering::Relaxed);
            }
            let waited = bucket.lock().map(|mut b| b.take(now)).unwrap_or(Ok(()));
            if let Err(wait) = waited {
                tenant.rate_limited.increment(1);
                return Err(ApiError::TooManyRequests {
                    message: format!(
                        "tenant '{}' is over its rate of {} requests per second (burst {})",
                        tenant.name(),
                        tenant.config.rps.unwrap_or_default(),
                        tenant.config.burst
                    ),
                    retry_after: wait.as_secs_f64().ceil().max(1.0) as u32,
                });
            }
        }
        Ok(slot)
    }

    /// The table for `snapshot`'s config, rebuilt once after a reload applied a new one.
    fn table_for(&self, snapshot: &ServingSnapshot) -> Arc<Table> {
        let table = self.table.load_full();
        if table.config.as_ref().is_some_and(|c| Arc::ptr_eq(c, &snapshot.config)) {
            return table;
        }
        self.refresh(snapshot);
        self.table.load_full()
    }

    /// Builds the table for `snapshot`, keeping the state of tenants whose settings stayed.
    fn refresh(&self, snapshot: &ServingSnapshot) {
        let Ok(_one) = self.rebuilding.lock() else { return };
        let old = self.table.load_full();
        if old.config.as_ref().is_some_and(|c| Arc::ptr_eq(c, &snapshot.config)) {
            return; // another request rebuilt it meanwhile
        }
        let tenants = snapshot.config.auth.as_ref().map(|a| a.tenants.as_slice()).unwrap_or_default();
        let by_key = tenants
            .iter()
            .map(|t| {
                let kept = old.by_key.get(&t.key_sha256).filter(|o| o.config == *t).cloned();
                (t.key_sha256, kept.unwrap_or_else(|| Arc::new(Tenant::new(t.clone()))))
            })
            .collect();
        self.table.store(Arc::new(Table::new(Some(snapshot.config.clone()), by_key)));
    }
}

/// The `x-api-key` header, made once: a look-up by `HeaderName` skips parsing the name.
static X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");

/// The key from `Authorization: Bearer <key>`, else `x-api-key`.
fn api_key(headers: &HeaderMap) -> Option<&[u8]> {
    let header = |name: &HeaderName| headers.get(name).map(HeaderValue::as_bytes);
    let bearer = header(&AUTHORIZATION).and_then(|v| v.strip_prefix(b"Bearer "));
    bearer.or_else(|| header(&X_API_KEY)).map(<[u8]>::trim_ascii).filter(|k| !k.is_empty())
}

/// Whether a path is open without a key: the health probes (load balancers, Kubernetes).
fn open_path(path: &str) -> bool {
    matches!(
        path,
        "/v2/health/live"
            | "/v2/health/ready"
            | "/inference.GRPCInferenceService/ServerLive"
            | "/inference.GRPCInferenceService/ServerReady"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_bearer_or_x_api_key() {
        let h = |pairs: &'static [(&'static str, &'static str)]| -> HeaderMap {
            pairs.iter().map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v))).collect()
        };
        assert_eq!(api_key(&h(&[("authorization", "Bearer abc")])), Some(&b"abc"[..]));
        assert_eq!(api_key(&h(&[("x-api-key", " abc ")])), Some(&b"abc"[..]));
        assert_eq!(api_key(&h(&[("authorization", "Basic abc")])), None);
        assert_eq!(api_key(&h(&[("authorization", "Bearer ")])), None);
        assert_eq!(api_key(&h(&[])), None);
    }

    #[test]
    fn the_table_finds_every_digest_and_only_those() {
        let digest = |i: u32| -> [u8; 32] { sha2::Sha256::digest(i.to_le_bytes()).into() };
        let table: HashMap<[u8; 32], u32, DigestHash> = (0..1000).map(|i| (digest(i), i)).collect();
        for i in 0..1000 {
            assert_eq!(table.get(&digest(i)), Some(&i));
        }
        assert_eq!(table.get(&digest(1000)), None);
        // A digest that shares the first eight bytes still has to match whole.
        let mut near = digest(7);
        near[31] ^= 1;
        assert_eq!(table.get(&near), None);
    }
}
