//! Triton's model repository extension for `--model-repository DIR`, and its control modes:
//! - `none`: what the repository holds at start is served; changes wait for a reload (SIGHUP,
//!   `POST /admin/reload`); load and unload are refused;
//! - `poll`: the repository is re-read every `--repository-poll-secs`, and a change (a new or
//!   removed version folder, a new model, a changed `config.pbtxt` or model file) is applied
//!   through the one reload path; load and unload are refused, as Triton does;
//! - `explicit`: only the models named by `--load-model` (`*`: all) are served at start;
//!   `POST /v2/repository/models/{m}/load` and `/unload` (and gRPC `RepositoryModelLoad`/`Unload`)
//!   add or remove one, each through the reload path, so a load that fails leaves the running
//!   routing serving and says why.
//!
//! The index lists every model folder: each served version READY (or UNAVAILABLE with the load
//! failure), and models not served UNAVAILABLE with the reason.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::sync::watch;

use super::Reloader;
use crate::audit::{Actor, Cause};
use crate::protocol::ApiError;
use crate::registry::Registry;
use crate::source::triton::{self, Found};

/// Triton's `--model-control-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlMode {
    None,
    Poll,
    Explicit,
}

impl ControlMode {
    pub fn parse(text: &str) -> Option<ControlMode> {
        match text {
            "none" => Some(ControlMode::None),
            "poll" => Some(ControlMode::Poll),
            "explicit" => Some(ControlMode::Explicit),
            _ => None,
        }
    }
}

/// A served repository: where it is, how it changes, and (explicit mode) which models are loaded.
#[derive(Debug)]
pub struct RepositoryControl {
    pub dir: PathBuf,
    pub mode: ControlMode,
    /// How often `poll` mode re-reads the folder.
    pub poll_every: Duration,
    loaded: Mutex<BTreeSet<String>>,
}

impl RepositoryControl {
    /// `load`: the models loaded at start in explicit mode (`*` for all of them).
    pub fn new(
        dir: PathBuf,
        mode: ControlMode,
        poll_every: Duration,
        load: &[String],
    ) -> Arc<RepositoryControl> {
        let mut loaded: BTreeSet<String> = load.iter().cloned().collect();
        if loaded.contains("*") {
            loaded = triton::read_repository(&dir).map(|m| m.into_keys().collect()).unwrap_or_default();
        }
        Arc::new(RepositoryControl { dir, mode, poll_every, loaded: Mutex::new(loaded) })
    }

    /// The models to serve: `None` for all of them (modes none and poll).
    pub fn selection(&self) -> Option<BTreeSet<String>> {
        (self.mode == ControlMode::Explicit)
            .then(|| self.loaded.lock().map(|l| l.clone()).unwrap_or_default())
    }

    fn set_loaded(&self, model: &str, loaded: bool) {
        if let Ok(mut l) = self.loaded.lock() {
            if loaded {
                l.insert(model.to_string());
            } else {
                l.remove(model);
            }
        }
    }
}

/// One entry of the repository index (Triton's field names).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct IndexEntry {
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    pub state: &'static str,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// The repository extension's actions.
pub struct Repository {
    pub reloader: Arc<Reloader>,
    pub registry: Arc<Registry>,
    /// `None` when the gateway serves a config file rather than a repository.
    pub control: Option<Arc<RepositoryControl>>,
}

impl Repository {
    /// Every model folder (or, serving a config file, every configured model) and its state.
    pub fn index(&self, ready_only: bool) -> Vec<IndexEntry> {
        let snapshot = self.registry.snapshot();
        let mut entries = Vec::new();
        let mut seen = BTreeSet::new();
        for (name, m) in &snapshot.models {
            seen.insert(name.clone());
            for &v in m.versions.keys() {
                let (state, reason) = if m.is_ready() {
                    ("READY", String::new())
                } else {
                    ("UNAVAILABLE", m.failure.clone().unwrap_or_default())
                };
                entries.push(IndexEntry { name: name.clone(), version: v.to_string(), state, reason });
            }
            if m.versions.is_empty() {
                let reason = m.failure.clone().unwrap_or_else(|| "not loaded".to_string());
                entries.push(IndexEntry {
                    name: name.clone(),
                    version: String::new(),
                    state: "UNAVAILABLE",
                    reason,
                });
            }
        }
        if let Some(control) = &self.control
            && let Ok(models) = triton::read_repository(&control.dir)
        {
            for (name, found) in models.into_iter().filter(|(n, _)| !seen.contains(n)) {
                let reason = match found {
                    Found::Serve { .. } => "unloaded".to_string(),
                    Found::LeftOut(reason) => reason,
                };
                entries.push(IndexEntry { name, version: String::new(), state: "UNAVAILABLE", reason });
            }
        }
        entries.retain(|e| !ready_only || e.state == "READY");
        entries.sort_by(|a, b| (&a.name, &a.version).cmp(&(&b.name, &b.version)));
        entries
    }

    /// Loads (or reloads) `model` from the repository: explicit mode only.
    /// `tenant`: who asked (with `[auth]`), for the audit history.
    pub async fn load(&self, model: &str, tenant: Option<&str>) -> Result<(), ApiError> {
        let control = self.explicit(model, "load")?;
        if !control.dir.join(model).is_dir() {
            return Err(failed("load", model, "no such model folder in the repository"));
        }
        if let Found::LeftOut(reason) = triton::read_model(&control.dir, model) {
            return Err(failed("load", model, &reason));
        }
        let was_loaded = control.selection().is_some_and(|s| s.contains(model));
        control.set_loaded(model, true);
        let actor = Actor::Repository { tenant: tenant.map(str::to_string) };
        let cause = Cause::new("reload", format!("repository load {model}"), actor);
        if let Err(refused) = self.reloader.reload(cause).await {
            control.set_loaded(model, was_loaded);
            let why: Vec<String> = refused.problems.iter().map(ToString::to_string).collect();
            return Err(failed("load", model, &why.join("; ")));
        }
        Ok(())
    }

    /// Stops serving `model` (its versions drain first): explicit mode only.
    pub async fn unload(&self, model: &str, tenant: Option<&str>) -> Result<(), ApiError> {
        let control = self.explicit(model, "unload")?;
        if !control.selection().is_some_and(|s| s.contains(model)) {
            return Ok(()); // not loaded: nothing to do, as Triton answers
        }
        control.set_loaded(model, false);
        let actor = Actor::Repository { tenant: tenant.map(str::to_string) };
        let cause = Cause::new("reload", format!("repository unload {model}"), actor);
        if let Err(refused) = self.reloader.reload(cause).await {
            control.set_loaded(model, true);
            let why: Vec<String> = refused.problems.iter().map(ToString::to_string).collect();
            return Err(failed("unload", model, &why.join("; ")));
        }
        Ok(())
    }

    fn explicit(&self, model: &str, what: &str) -> Result<&Arc<RepositoryControl>, ApiError> {
        crate::inference::check_model_name(model)?;
        let Some(control) = &self.control else {
            return Err(failed(
                what,
                model,
                "this gateway serves a config file, not a model repository (start it with --model-repository DIR --model-control-mode explicit)",
            ));
        };
        match control.mode {
            ControlMode::Explicit => Ok(control),
            ControlMode::Poll => {
                Err(failed(what, model, "explicit model load / unload is not allowed if polling is enabled"))
            }
            ControlMode::None => Err(failed(
                what,
                model,
                "explicit model load / unload is not allowed with --model-control-mode none (use explicit)",
            )),
        }
    }
}

fn failed(what: &str, model: &str, why: &str) -> ApiError {
    ApiError::Malformed(format!("failed to {what} '{model}': {why}"))
}

/// Poll mode: re-reads the repository every `poll_every` and reloads when what is on disk
/// changed (names, sizes and times of the config files and version folders' files).
pub async fn poll_repository(
    reloader: Arc<Reloader>,
    control: Arc<RepositoryControl>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut seen = fingerprint(&control.dir);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(control.poll_every) => {}
            _ = shutdown.changed() => return,
        }
        let dir = control.dir.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || fingerprint(&dir)).await else { continue };
        let cause = || Cause::new("reload", "repository poll", Actor::Repository { tenant: None });
        if now != seen && reloader.reload(cause()).await.is_ok() {
            seen = now;
        }
    }
}

type Fingerprint = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// Every file two levels down (`<model>/config.pbtxt`, `<model>/<version>/<file>`): path, size,
/// modification time.
fn fingerprint(dir: &std::path::Path) -> Fingerprint {
    let mut out = Vec::new();
    let list = |p: &std::path::Path| {
        std::fs::read_dir(p).map(|r| r.flatten().collect::<Vec<_>>()).unwrap_or_default()
    };
    for model in list(dir) {
        for entry in list(&model.path()) {
            let path = entry.path();
            if path.is_dir() {
                for file in list(&path) {
                    out.push(stat(file.path()));
                }
            } else {
                out.push(stat(path));
            }
        }
    }
    out.sort();
    out
}

fn stat(path: PathBuf) -> (PathBuf, u64, Option<SystemTime>) {
    let meta = std::fs::metadata(&path).ok();
    let (len, modified) = meta.map_or((0, None), |m| (m.len(), m.modified().ok()));
    (path, len, modified)
}
