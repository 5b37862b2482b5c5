//! The single reload path, whatever triggers it (the config file changing, SIGHUP,
//! `POST /admin/reload`): read and validate the whole config → load and warm the versions it
//! adds (reusing the ones it keeps) → flip the snapshot in one step. Any problem refuses the
//! whole change, lists every problem with its path, and leaves the running routing serving.
//!
//! Settings that cannot change while running (listen addresses, connection limits, the admin
//! token) keep their running values; a reload that changes them says so.

mod registry_poll;
mod repository;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

pub use registry_poll::poll_registries;
pub use repository::{ControlMode, IndexEntry, Repository, RepositoryControl, poll_repository};
pub use watch::watch_file;

use crate::audit::{Actor, Cause, LogError};
use crate::config::{ConfigError, GatewayConfig, Overrides, Problem};
use crate::registry::{self, OnFailure, Registry, ServingSnapshot};
use crate::source;
use crate::telemetry;

/// Where the config comes from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    File {
        path: PathBuf,
        overrides: Overrides,
    },
    /// `--model-repository DIR`: a reload rescans the folder (`config.pbtxt` files, version
    /// policies; in explicit mode only the loaded models).
    Repository {
        control: Arc<RepositoryControl>,
        overrides: Overrides,
    },
    /// Built in code (tests): nothing to re-read.
    Fixed,
}

/// What an applied reload changed.
#[derive(Debug, Clone, Serialize)]
pub struct ReloadReport {
    pub outcome: &'static str,
    pub trigger: String,
    pub generation: u64,
    /// `model/version` loaded by this reload.
    pub loaded: Vec<String>,
    /// `model/version` no longer served (drained, then freed).
    pub unloaded: Vec<String>,
    /// The effective routing, one line per model.
    pub routing: Vec<String>,
    /// Settings the file changed that only a restart applies.
    pub restart_required: Vec<String>,
}

/// Why `POST /admin/revert` did not apply.
#[derive(Debug, thiserror::Error)]
pub enum RevertError {
    #[error("the config does not come from a file (a model repository, or built in code): nothing to revert")]
    NotAFile,
    #[error("generation {0} is not in the history (never served, or rotated out of it)")]
    Unknown(u64),
    #[error("{0}")]
    History(#[from] LogError),
    #[error("cannot write the config file {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Refused(#[from] ReloadRefused),
}

/// A refused reload: every problem, with its path.
#[derive(Debug, Clone, Serialize, thiserror::Error)]
#[error("reload refused ({} problem(s)); the running configuration keeps serving", problems.len())]
pub struct ReloadRefused {
    pub trigger: String,
    pub problems: Vec<Problem>,
}

pub struct Reloader {
    registry: Arc<Registry>,
    source: ConfigSource,
    after: Vec<AfterReload>,
}

/// Run after every reload, applied or refused, before its caller hears the outcome: re-reads
/// what the config names but does not hold (the TLS certificate files).
pub type AfterReload = Box<dyn Fn() + Send + Sync>;

impl Reloader {
    pub fn new(registry: Arc<Registry>, source: ConfigSource) -> Reloader {
        Reloader { registry, source, after: Vec::new() }
    }

    /// Adds `hook` to run after every reload.
    pub fn after_reload(mut self, hook: AfterReload) -> Reloader {
        self.after.push(hook);
        self
    }

    /// Reloads, recording the outcome in the history under `cause` (refusals included).
    pub async fn reload(&self, cause: Cause) -> Result<ReloadReport, ReloadRefused> {
        // One change at a time (reloads and rollout steps): a second trigger waits, then
        // reloads the newest file.
        let _one_at_a_time = self.registry.control.lock().await;
        self.reload_locked(cause).await
    }

    /// The keys file of the serving config (`[auth] keys_file`), which the file watch follows too.
    pub fn keys_file(&self) -> Option<PathBuf> {
        self.registry.snapshot().config.auth.as_ref().map(|a| a.keys_file.clone())
    }

    /// The text of the config file serving now (`None` when not read from a file).
    pub fn serving_text(&self) -> Option<Arc<str>> {
        self.registry.snapshot().config.text.clone()
    }

    /// `POST /admin/revert`: writes the config text that served `generation` back to the file
    /// (the file stays the source of truth) and reloads it; the reload is recorded as a
    /// `revert`. A reload refused now (a version that no longer loads, say) leaves the written
    /// file and the running routing as they are, like any refused edit.
    pub async fn revert(&self, generation: u64, actor: Actor) -> Result<ReloadReport, RevertError> {
        let ConfigSource::File { path, .. } = &self.source else { return Err(RevertError::NotAFile) };
        let _one_at_a_time = self.registry.control.lock().await;
        let text = self.registry.history.config_at(generation)?.ok_or(RevertError::Unknown(generation))?;
        write_atomically(path, &text).map_err(|source| RevertError::Write { path: path.clone(), source })?;
        let cause = Cause::new("revert", format!("revert to generation {generation}"), actor);
        Ok(self.reload_locked(cause).await?)
    }

    /// `reload` for a caller that already holds `registry.control` (a revert writes the file
    /// and reloads under one lock, so no other change slips in between).
    async fn reload_locked(&self, cause: Cause) -> Result<ReloadReport, ReloadRefused> {
        let trigger = cause.trigger.as_str();
        let result = self.prepare_and_flip(&cause).await;
        for hook in &self.after {
            hook();
        }
        telemetry::count_reload(result.is_ok());
        if let Err(refused) = &result {
            let details = serde_json::json!({ "problems": refused.problems });
            self.registry.record_refusal(cause.clone().with_details(details));
        }
        match &result {
            Ok(r) => tracing::info!(
                trigger,
                generation = r.generation,
                loaded = ?r.loaded,
                unloaded = ?r.unloaded,
                restart_required = ?r.restart_required,
                "config reload applied"
            ),
            Err(refused) => {
                for p in &refused.problems {
                    tracing::error!(trigger, "config reload refused: {p}");
                }
            }
        }
        result
    }

    async fn prepare_and_flip(&self, cause: &Cause) -> Result<ReloadReport, ReloadRefused> {
        let trigger = cause.trigger.as_str();
        let refuse = |problems: Vec<Problem>| ReloadRefused { trigger: trigger.to_string(), problems };
        let mut next_config = self.read().await.map_err(|e| refuse(e.problems))?;
        let current = self.registry.snapshot();
        let restart_required = keep_running_settings(&current.config, &mut next_config);
        let next_config = Arc::new(next_config);
        let generation = self.registry.next_generation();
        let previous = current.clone();
        let overrides = self.registry.overrides();
        let next = tokio::task::spawn_blocking(move || {
            registry::prepare(next_config, Some(&previous), generation, OnFailure::RefuseAll, &overrides)
        })
        .await
        .map_err(|e| refuse(vec![Problem::new("", format!("loading was interrupted: {e}"))]))?
        .map_err(refuse)?;
        let (loaded, unloaded) = changes(&current, &next);
        let routing = next.config.describe_routing().lines().map(str::to_string).collect();
        let details = serde_json::json!({
            "loaded": loaded, "unloaded": unloaded, "restart_required": restart_required,
        });
        self.registry.flip(next, cause.clone().with_details(details));
        Ok(ReloadReport {
            outcome: "applied",
            trigger: trigger.to_string(),
            generation,
            loaded,
            unloaded,
            routing,
            restart_required,
        })
    }

    async fn read(&self) -> Result<GatewayConfig, ConfigError> {
        match &self.source {
            ConfigSource::File { path, overrides } => source::load_file(path, overrides).await,
            ConfigSource::Repository { control, overrides } => {
                source::repository_config(&control.dir, overrides, control.selection().as_ref())
            }
            ConfigSource::Fixed => {
                Err(Problem::new("", "this gateway was started without a config file; nothing to reload")
                    .into())
            }
        }
    }
}

/// Replaces `path`'s content in one step (a file watcher never reads half of it).
fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    // Through a symlink to the file it names: the link stays a link.
    let path = &std::fs::canonicalize(path)?;
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.revert"));
    std::fs::write(&temp, text)?;
    std::fs::File::open(&temp)?.sync_all()?;
    std::fs::rename(&temp, path)
}

/// Copies the settings only a restart can change from `running` into `next`; names the ones
/// the new config tried to change.
fn keep_running_settings(running: &GatewayConfig, next: &mut GatewayConfig) -> Vec<String> {
    let (r, n) = (&running.server, &mut next.server);
    let mut changed = Vec::new();
    macro_rules! keep {
        ($field:ident, $name:literal) => {
            if r.$field != n.$field {
                changed.push(format!("{} (running: {:?}, file: {:?})", $name, r.$field, n.$field));
                n.$field = r.$field.clone();
            }
        };
    }
    keep!(listen, "server.listen");
    keep!(admin_listen, "server.admin_listen");
    keep!(grpc_listen, "server.grpc_listen");
    // gRPC's message limit is built into its service at start; HTTP keeps the same value so
    // that both front ends always agree.
    keep!(max_request_bytes, "server.max_request_bytes");
    keep!(max_in_flight, "server.max_in_flight");
    keep!(max_connections, "server.max_connections");
    keep!(request_timeout, "server.request_timeout_ms");
    keep!(header_read_timeout, "server.header_read_timeout_ms");
    keep!(idle_timeout, "server.idle_timeout_ms");
    keep!(drain_timeout, "server.drain_timeout_ms");
    // Which files the listeners use; their content is re-read on every reload.
    keep!(tls, "server.tls");
    if running.runtime.io_threads != next.runtime.io_threads {
        changed.push(format!(
            "runtime.io_threads (running: {}, file: {})",
            running.runtime.io_threads, next.runtime.io_threads
        ));
        next.runtime.io_threads = running.runtime.io_threads;
    }
    if running.admin != next.admin {
        changed.push("admin.token_env".to_string());
        next.admin = running.admin.clone();
    }
    if running.fleet != next.fleet {
        changed.push("fleet".to_string());
        next.fleet = running.fleet.clone();
    }
    if running.tracing != next.tracing {
        changed.push("tracing".to_string());
        next.tracing = running.tracing.clone();
    }
    if running.audit != next.audit {
        changed.push("audit".to_string());
        next.audit = running.audit.clone();
    }
    for c in &changed {
        tracing::warn!("{c} changed in the config file; it takes effect only after a restart");
    }
    changed
}

/// `model/version` names loaded (new or rebuilt) and unloaded by going from `a` to `b`.
fn changes(a: &ServingSnapshot, b: &ServingSnapshot) -> (Vec<String>, Vec<String>) {
    let same = |x: &ServingSnapshot, y: &ServingSnapshot, model: &str, version: u64| {
        let get = |s: &ServingSnapshot| s.model(model).and_then(|m| m.version(version)).cloned();
        matches!((get(x), get(y)), (Some(p), Some(q)) if Arc::ptr_eq(&p, &q))
    };
    let names = |s: &ServingSnapshot| -> Vec<(String, u64)> {
        s.models.values().flat_map(|m| m.versions.keys().map(|v| (m.name.clone(), *v))).collect()
    };
    let loaded =
        names(b).into_iter().filter(|(m, v)| !same(a, b, m, *v)).map(|(m, v)| format!("{m}/{v}")).collect();
    let unloaded =
        names(a).into_iter().filter(|(m, v)| !same(a, b, m, *v)).map(|(m, v)| format!("{m}/{v}")).collect();
    (loaded, unloaded)
}
