//! The serving state: every served version and every model's routing table, in ONE
//! `ServingSnapshot` behind ONE `ArcSwap`.
//!
//! A change is prepared whole first (new versions loaded and warmed, unchanged ones reused),
//! then flipped in a single store that cannot fail. A request loads the snapshot once and holds
//! it to the end, so it finishes on the versions it started with; a version no longer named is
//! freed when the last request holding the old snapshot finishes (its queue closes, its worker
//! threads drain and exit).

mod budget;
mod describe;
mod file;
mod gate;
mod version;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

pub use budget::{ShadowBudget, ShadowPermit};
pub use file::FileId;
pub use version::{ServedVersion, VersionKey};

use crate::audit::{Cause, Entry, History};
use crate::batching::BatchPolicy;
use crate::config::{ExecutionProvider, GatewayConfig, ModelConfig, Problem};
use crate::onnx::{Provider, SessionOptions};
use crate::routing::RoutingTable;
use crate::telemetry::{self, Role};

/// One model as served: its loaded versions and its routing.
#[derive(Clone)]
pub struct ServedModel {
    pub name: String,
    pub versions: BTreeMap<u64, Arc<ServedVersion>>,
    pub routing: RoutingTable,
    /// Why the model is not served, when it could not be loaded at start-up.
    pub failure: Option<String>,
    /// Mirrored requests in flight (`routing.shadow_max_in_flight`): the model's, shared by
    /// every snapshot that serves it.
    pub shadow_budget: Arc<ShadowBudget>,
}

impl ServedModel {
    pub fn is_ready(&self) -> bool {
        self.failure.is_none() && self.versions.contains_key(&self.routing.primary())
    }

    pub fn version(&self, version: u64) -> Option<&Arc<ServedVersion>> {
        self.versions.get(&version)
    }

    pub fn primary(&self) -> Option<&Arc<ServedVersion>> {
        self.versions.get(&self.routing.primary())
    }
}

/// Everything a request needs, consistent with itself.
pub struct ServingSnapshot {
    pub generation: u64,
    pub config: Arc<GatewayConfig>,
    pub models: BTreeMap<String, ServedModel>,
}

impl ServingSnapshot {
    pub fn model(&self, name: &str) -> Option<&ServedModel> {
        self.models.get(name)
    }

    pub fn all_ready(&self) -> bool {
        self.models.values().all(ServedModel::is_ready)
    }

    fn versions(&self) -> impl Iterator<Item = &Arc<ServedVersion>> {
        self.models.values().flat_map(|m| m.versions.values())
    }
}

pub struct Registry {
    current: ArcSwap<ServingSnapshot>,
    generations: AtomicU64,
    /// Held by whoever changes the snapshot (reloads, rollout steps), so that no change is
    /// prepared from a snapshot another change is about to replace.
    pub control: tokio::sync::Mutex<()>,
    /// Rollout weights and promotions, applied by every `prepare` and `reroute`.
    overrides: Mutex<Overrides>,
    /// Every change `flip` makes, and every refused reload.
    pub history: History,
}

impl Registry {
    /// Serves `first`, recording the start (with the config text it was read from) in `history`.
    pub fn new(first: ServingSnapshot, history: History, cause: Cause) -> Registry {
        mark_loaded(None, &first);
        let generations = AtomicU64::new(first.generation);
        history.append(Entry {
            generation: first.generation,
            previous_generation: 0,
            applied: true,
            cause,
            routing_before: serde_json::Value::Null,
            routing_after: first.routing_json(),
            config: first.config.text.as_deref().map(str::to_string),
        });
        Registry {
            current: ArcSwap::from_pointee(first),
            generations,
            control: tokio::sync::Mutex::new(()),
            overrides: Mutex::new(Overrides::new()),
            history,
        }
    }

    /// A copy of the current rollout overrides (for `prepare`).
    pub fn overrides(&self) -> Overrides {
        self.overrides.lock().map(|o| o.clone()).unwrap_or_default()
    }

    /// Sets (or with `None` clears) a model's rollout override and, when the model is served,
    /// flips to a snapshot whose routing reflects it; the loaded versions are reused as they
    /// are. Call with `control` held. `cause` goes to the history when the routing changed.
    pub fn reroute(&self, model: &str, change: Option<RouteOverride>, cause: Cause) {
        let overrides = {
            let Ok(mut map) = self.overrides.lock() else { return };
            match change {
                Some(o) => map.insert(model.to_string(), o),
                None => map.remove(model),
            };
            map.clone()
        };
        let current = self.snapshot();
        let Some(config) = current.config.models.get(model) else { return };
        let routing = routing_table(config, &overrides);
        if current.model(model).is_some_and(|m| m.routing == routing) {
            return;
        }
        let models = current
            .models
            .iter()
            .map(|(name, m)| {
                let routing = if name == model { routing.clone() } else { m.routing.clone() };
                (name.clone(), ServedModel { routing, ..m.clone() })
            })
            .collect();
        let generation = self.next_generation();
        self.flip(ServingSnapshot { generation, config: current.config.clone(), models }, cause);
    }

    /// The current snapshot; hold it for the whole request.
    pub fn snapshot(&self) -> Arc<ServingSnapshot> {
        self.current.load_full()
    }

    /// The generation number the next prepared snapshot should carry.
    pub fn next_generation(&self) -> u64 {
        self.generations.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Makes `next` current in one step and records the change (`cause`, the routing before and
    /// after, and the config text when `next` applies a new config); returns the previous
    /// snapshot (its versions that `next` does not reuse are freed once every request holding
    /// it has finished).
    pub fn flip(&self, next: ServingSnapshot, cause: Cause) -> Arc<ServingSnapshot> {
        let next = Arc::new(next);
        let previous = self.current.swap(next.clone());
        mark_loaded(Some(&previous), &next);
        let new_config = !Arc::ptr_eq(&previous.config, &next.config);
        self.history.append(Entry {
            generation: next.generation,
            previous_generation: previous.generation,
            applied: true,
            cause,
            routing_before: previous.routing_json(),
            routing_after: next.routing_json(),
            config: next.config.text.as_deref().filter(|_| new_config).map(str::to_string),
        });
        previous
    }

    /// Records a change that was refused: the running generation keeps serving.
    pub fn record_refusal(&self, cause: Cause) {
        let current = self.snapshot();
        let routing = current.routing_json();
        self.history.append(Entry {
            generation: current.generation,
            previous_generation: current.generation,
            applied: false,
            cause,
            routing_before: routing.clone(),
            routing_after: routing,
            config: None,
        });
    }
}

/// Publishes what `next` serves: `gateway_model_loaded` (1 per served version, 0 for dropped
/// ones) and `gateway_route_weight_percent` (0 for shares that went away); applies its shadow
/// budget limits.
fn mark_loaded(previous: Option<&ServingSnapshot>, next: &ServingSnapshot) {
    telemetry::routing_generation(next.generation);
    let next_weights = weights(next);
    if let Some(prev) = previous {
        for v in prev.versions() {
            let still = next.model(&v.model).is_some_and(|m| m.versions.contains_key(&v.version));
            if !still {
                v.metrics.loaded.set(0.0);
            }
        }
        for (model, version, role, _) in weights(prev) {
            if !next_weights.iter().any(|(m, v, r, _)| *m == model && *v == version && *r == role) {
                telemetry::route_weight(&model, version, role, 0.0);
            }
        }
    }
    for v in next.versions() {
        v.metrics.loaded.set(1.0);
    }
    for (name, m) in &next.models {
        if let Some(config) = next.config.models.get(name) {
            m.shadow_budget.set_limit(config.routing.shadow_max_in_flight);
        }
    }
    for m in next.models.values() {
        telemetry::model_ready(&m.name, m.is_ready());
    }
    for (model, version, role, percent) in next_weights {
        telemetry::route_weight(&model, version, role, percent);
    }
}

/// Every (model, version, role, percent) share of a snapshot's routing.
fn weights(s: &ServingSnapshot) -> Vec<(String, u64, Role, f64)> {
    let mut out = Vec::new();
    for m in s.models.values().filter(|m| m.is_ready()) {
        let r = &m.routing;
        out.push((m.name.clone(), r.primary(), Role::Primary, r.primary_percent()));
        out.extend(r.candidates().map(|(v, p)| (m.name.clone(), v, Role::Candidate, p)));
        out.extend(r.shadow_shares().map(|(v, p)| (m.name.clone(), v, Role::Shadow, p)));
    }
    out
}

/// How `prepare` treats a model that fails to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Start-up: report it, mark that model not ready, serve the others.
    ServeOthers,
    /// Reload: refuse the whole change.
    RefuseAll,
}

/// Builds the snapshot for `config`: versions `previous` already runs with the same settings
/// are reused, the others are loaded and warmed. Blocking (loads models).
pub fn prepare(
    config: Arc<GatewayConfig>,
    previous: Option<&ServingSnapshot>,
    generation: u64,
    on_failure: OnFailure,
    overrides: &Overrides,
) -> Result<ServingSnapshot, Vec<Problem>> {
    let mut models = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, model) in &config.models {
        let reuse = previous.and_then(|p| p.model(name));
        let (versions, mut model_problems) = load_versions(&config, model, reuse);
        model_problems.extend(signature_problems(model, &versions));
        model_problems.extend(monitor_problems(model, &versions));
        // The validation gate: every routed version passes the hold-out set before this
        // snapshot can route it (the only place versions enter a routing; see `gate`).
        model_problems.extend(gate::problems(model, &versions));
        let failure = if model_problems.is_empty() {
            None
        } else {
            for p in &model_problems {
                tracing::error!(model = %name, "{p}");
            }
            Some(model_problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))
        };
        problems.extend(model_problems);
        let routing = routing_table(model, overrides);
        let versions = if failure.is_some() { BTreeMap::new() } else { versions };
        // The running budget, kept (its limit follows the config when the snapshot is flipped).
        let shadow_budget = match reuse {
            Some(previous) => previous.shadow_budget.clone(),
            None => ShadowBudget::new(model.routing.shadow_max_in_flight),
        };
        models.insert(
            name.clone(),
            ServedModel { name: name.clone(), versions, routing, failure, shadow_budget },
        );
    }
    if on_failure == OnFailure::RefuseAll && !problems.is_empty() {
        return Err(problems);
    }
    Ok(ServingSnapshot { generation, config, models })
}

fn load_versions(
    config: &GatewayConfig,
    model: &ModelConfig,
    reuse: Option<&ServedModel>,
) -> (BTreeMap<u64, Arc<ServedVersion>>, Vec<Problem>) {
    let mut versions = BTreeMap::new();
    let mut problems = Vec::new();
    for v in model.served_versions() {
        let key = version_key(config, model, v);
        if let Some(existing) = reuse.and_then(|m| m.version(v)).filter(|e| e.key == key) {
            versions.insert(v, existing.clone());
            continue;
        }
        match ServedVersion::load(&model.name, v, key) {
            Ok(loaded) => {
                versions.insert(v, Arc::new(loaded));
            }
            Err(e) => problems.push(Problem::new(model.version_path(v), e.to_string())),
        }
    }
    (versions, problems)
}

/// Candidates and shadows must accept exactly the primary's inputs: they receive the same
/// requests (shadows the very same decoded tensors).
fn signature_problems(model: &ModelConfig, versions: &BTreeMap<u64, Arc<ServedVersion>>) -> Vec<Problem> {
    let Some(primary) = versions.get(&model.routing.primary) else {
        return Vec::new();
    };
    let others = model.routing.candidates.iter().chain(&model.routing.shadows).map(|w| w.version);
    others
        .filter_map(|v| {
            let differences = primary.signature.input_differences(&versions.get(&v)?.signature);
            (!differences.is_empty()).then(|| {
                Problem::new(
                    model.version_path(v),
                    format!(
                        "version {v} does not accept the primary's (v{}) inputs: {}",
                        model.routing.primary,
                        differences.join("; ")
                    ),
                )
            })
        })
        .collect()
}

/// The monitored output must exist in every served version.
fn monitor_problems(model: &ModelConfig, versions: &BTreeMap<u64, Arc<ServedVersion>>) -> Vec<Problem> {
    let Some(monitor) = &model.monitor else { return Vec::new() };
    versions
        .values()
        .filter(|v| v.signature.output(&monitor.output).is_none())
        .map(|v| {
            let outputs: Vec<&str> = v.signature.outputs.iter().map(|o| o.name.as_str()).collect();
            Problem::new(
                format!("models.{}.monitor.output", model.name),
                format!(
                    "version {} has no output '{}' (its outputs: {outputs:?})",
                    v.version, monitor.output
                ),
            )
        })
        .collect()
}

/// True when `version` serves `model` only as a shadow (no live traffic, no pins).
fn is_shadow_only(model: &ModelConfig, version: u64) -> bool {
    let r = &model.routing;
    r.shadows.iter().any(|s| s.version == version)
        && r.primary != version
        && !r.candidates.iter().any(|c| c.version == version)
        && !r.pin_only.contains(&version)
}

/// How `version` of `model` is to be built. Blocking: reads the model file to identify it.
pub fn version_key(config: &GatewayConfig, model: &ModelConfig, version: u64) -> VersionKey {
    let path = model.model_path(version);
    let remote = model.remote.get(&version).cloned();
    VersionKey {
        // A remote version has no file to read.
        file: if remote.is_some() { FileId::Unreadable } else { FileId::of(&path) },
        remote,
        path,
        instances: model.instances,
        policy: BatchPolicy {
            max_batch_size: model.batching.max_batch_size,
            max_queue_delay: model.batching.max_queue_delay,
            max_queue: model.batching.max_queue,
        },
        background: is_shadow_only(model, version),
        options: SessionOptions {
            intra_op_threads: config.runtime.intra_op_threads,
            intra_op_spinning: config.runtime.intra_op_spinning,
            execution_providers: config
                .runtime
                .execution_providers
                .iter()
                .map(|p| match p {
                    ExecutionProvider::Cpu => Provider::Cpu,
                    ExecutionProvider::Cuda => Provider::Cuda,
                })
                .collect(),
        },
    }
}

/// The routing table for `model`: its config, with a running rollout's weight (or promotion)
/// applied when `overrides` holds one for this very rollout; a rollout without one starts at
/// `steps[0]`.
pub fn routing_table(model: &ModelConfig, overrides: &Overrides) -> RoutingTable {
    let r = &model.routing;
    let mut primary = r.primary;
    let mut candidates: Vec<(u64, f64)> = r.candidates.iter().map(|w| (w.version, w.percent)).collect();
    if let (Some(rollout), [(candidate, _)]) = (&model.rollout, candidates.as_slice()) {
        let candidate = *candidate;
        let key = rollout_key(model);
        match overrides.get(&model.name).filter(|o| o.key == key) {
            Some(o) if o.promoted => {
                primary = candidate;
                candidates.clear();
            }
            Some(o) => candidates = vec![(candidate, o.weight)],
            None => candidates = vec![(candidate, rollout.steps.first().copied().unwrap_or(0.0))],
        }
    }
    let shadows: Vec<(u64, f64)> = r.shadows.iter().map(|w| (w.version, w.percent)).collect();
    RoutingTable::new(primary, &candidates, &shadows)
        .with_headers(r.sticky_header.clone(), r.pin_header.clone())
}

/// What identifies one rollout: a different candidate or rollout table is a new rollout.
pub fn rollout_key(model: &ModelConfig) -> String {
    let candidate = model.routing.candidates.first().map(|c| c.version);
    format!("{candidate:?}|{:?}", model.rollout)
}

/// A running rollout's effect on routing, per model name.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteOverride {
    /// `rollout_key` of the rollout this belongs to.
    pub key: String,
    pub weight: f64,
    pub promoted: bool,
}

pub type Overrides = HashMap<String, RouteOverride>;
