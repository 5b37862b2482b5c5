//! An MLflow model registry in the reload path (`[models.X.source]`).
//!
//! - **Resolve** (`resolve`, before a config is validated): the aliases the routing names
//!   (`primary = "@champion"`) become the versions they point at; every version the routing
//!   names is fetched into the content-addressed cache (verified, never half-written) and linked
//!   as `<cache_dir>/<model>/<version>/model.onnx`, which becomes the model's repository. A
//!   candidate or shadow alias that now points at the primary's version is dropped (the
//!   challenger became the champion). Any failure refuses the whole config, so a reload keeps
//!   what serves and the poll retries.
//! - **Poll** (`alias_moved`, driven by `reload::poll_registries`): every `poll_s` the registry's aliases are read (doubling the
//!   wait while it fails, up to 5 minutes); when one the routing uses moved, the config is
//!   reloaded through the one reload path. `/admin/models` shows each model's last poll.
//! - **Report back** (`report_verdict`): a rollout that promotes moves the primary's alias to the
//!   candidate's version and tags it with the verdict's numbers; a rollback tags the candidate.
//!   Off the request path, on a task of its own; a failure is logged and counted.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::cache::{Cache, CachedModel};
use super::mlflow::MlflowClient;
use crate::config::{ConfigError, ModelConfig, Problem, RawConfig, RawModel, RawVersion};
use crate::telemetry;

/// Resolves every registry-sourced model of `raw` (see the module docs); all problems at once.
pub async fn resolve(raw: &mut RawConfig) -> Result<(), ConfigError> {
    let mut problems = Vec::new();
    for (name, model) in raw.models.iter_mut() {
        if let Err(p) = resolve_model(name, model).await {
            problems.push(p);
        }
    }
    if problems.is_empty() { Ok(()) } else { Err(ConfigError { problems }) }
}

async fn resolve_model(name: &str, m: &mut RawModel) -> Result<(), Problem> {
    let path = format!("models.{name}.source");
    let Some(source) = m.source.as_mut() else { return Ok(()) };
    let Some(mlflow) = &source.mlflow else { return Ok(()) }; // validation says what is missing
    let (Some(uri), Some(registered)) = (mlflow.tracking_uri.clone(), mlflow.name.clone()) else {
        return Ok(());
    };
    let client = MlflowClient::new(&uri)
        .map_err(|e| Problem::new(format!("{path}.mlflow.tracking_uri"), e.to_string()))?;
    let cache_dir = PathBuf::from(source.cache_dir.as_deref().unwrap_or("cache/mlflow"));
    let cache = Cache::open(&cache_dir)
        .await
        .map_err(|e| Problem::new(format!("{path}.cache_dir"), e.to_string()))?;
    let aliases = client.aliases(&registered).await.map_err(|e| {
        Problem::new(format!("{path}.mlflow"), format!("registry {uri}, model {registered:?}: {e}"))
    })?;
    let Some(routing) = m.routing.as_mut() else { return Ok(()) };
    let mut resolved = BTreeMap::new();
    let mut number = |v: &mut RawVersion, at: String| -> Result<(), Problem> {
        if let RawVersion::Alias(a) = v {
            let alias = a.trim_start_matches('@').to_string();
            let Some(&n) = aliases.get(&alias) else {
                let set: Vec<&String> = aliases.keys().collect();
                return Err(Problem::new(
                    at,
                    format!("alias @{alias} is not set on {registered:?} (set: {set:?})"),
                ));
            };
            resolved.insert(alias, n);
            *v = RawVersion::Number(n);
        }
        Ok(())
    };
    let routing_path = format!("models.{name}.routing");
    let primary_alias = match &routing.primary {
        Some(RawVersion::Alias(a)) => Some(a.trim_start_matches('@').to_string()),
        _ => None,
    };
    if let Some(p) = routing.primary.as_mut() {
        number(p, format!("{routing_path}.primary"))?;
    }
    for (list, key) in [(&mut routing.candidates, "candidates"), (&mut routing.shadows, "shadows")] {
        for (i, w) in list.iter_mut().enumerate() {
            if let Some(v) = w.version.as_mut() {
                number(v, format!("{routing_path}.{key}[{i}].version"))?;
            }
        }
    }
    // An alias that now names a version already routed is dropped rather than refused.
    let primary = routing.primary.clone();
    routing.candidates.retain(|w| w.version != primary);
    let live: Vec<Option<RawVersion>> =
        routing.candidates.iter().map(|w| w.version.clone()).chain([primary]).collect();
    routing.shadows.retain(|w| !live.contains(&w.version));
    let mut versions: Vec<u64> = routing.versions.clone();
    for v in [routing.primary.clone()]
        .into_iter()
        .flatten()
        .chain(routing.candidates.iter().chain(&routing.shadows).filter_map(|w| w.version.clone()))
    {
        if let RawVersion::Number(n) = v {
            versions.push(n);
        }
    }
    versions.sort_unstable();
    versions.dedup();
    for v in versions {
        let fail =
            |e: String| Problem::new(format!("{path}.mlflow"), format!("{registered:?} version {v}: {e}"));
        let found = client.get_version(&registered, v).await.map_err(|e| fail(e.to_string()))?;
        let cached = client.fetch_onnx(&found, &cache).await.map_err(|e| fail(e.to_string()))?;
        link(&cache_dir, name, v, &cached).await.map_err(fail)?;
    }
    m.repository = Some(cache_dir.display().to_string());
    m.model_filename = None;
    if let Some(source) = m.source.as_mut() {
        source.resolved = resolved;
        source.primary_alias = primary_alias;
    }
    Ok(())
}

/// `<dir>/<model>/<version>/model.onnx` as a hard link to the cached file (a copy where links
/// are not possible), replaced atomically when it points elsewhere.
async fn link(dir: &Path, model: &str, version: u64, cached: &CachedModel) -> Result<(), String> {
    let folder = dir.join(model).join(version.to_string());
    let target = folder.join("model.onnx");
    let cached_path = cached.path.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        std::fs::create_dir_all(&folder)?;
        let same = |a: &Path, b: &Path| match (std::fs::metadata(a), std::fs::metadata(b)) {
            (Ok(x), Ok(y)) => x.ino() == y.ino() && x.dev() == y.dev(),
            _ => false,
        };
        if same(&target, &cached_path) {
            return Ok(());
        }
        let temp = folder.join(format!(".model.onnx.{}", std::process::id()));
        let _ = std::fs::remove_file(&temp);
        if std::fs::hard_link(&cached_path, &temp).is_err() {
            std::fs::copy(&cached_path, &temp)?;
        }
        std::fs::rename(&temp, &target)
    })
    .await
    .map_err(|e| e.to_string())?
    .map_err(|e| format!("cannot link {} into {}: {e}", cached.path.display(), dir.display()))
}

/// The last poll of each registry-sourced model, for `/admin/models`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PollStatus {
    pub outcome: &'static str,
    pub at_unix: u64,
    /// Why the last poll or the reload it asked for failed.
    pub error: Option<String>,
    /// Failed polls in a row (the next waits `poll_s` doubled as many times, up to 5 minutes).
    pub failures: u32,
}

static STATUS: Mutex<BTreeMap<String, PollStatus>> = Mutex::new(BTreeMap::new());

/// The last poll of `model`'s registry, if it has one.
pub fn poll_status(model: &str) -> Option<PollStatus> {
    STATUS.lock().ok()?.get(model).cloned()
}

pub fn set_status(model: &str, outcome: &'static str, error: Option<String>) -> u32 {
    let Ok(mut all) = STATUS.lock() else { return 0 };
    let at_unix = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let failures = if error.is_some() { all.get(model).map_or(0, |s| s.failures) + 1 } else { 0 };
    all.insert(model.to_string(), PollStatus { outcome, at_unix, error, failures });
    failures
}

/// The longest wait between polls of a failing registry.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// What moved among the aliases `m`'s routing uses, if anything (counted and kept for
/// `/admin/models` either way), and how many polls in a row failed.
pub async fn alias_moved(m: &ModelConfig) -> (Option<String>, u32) {
    let Some(source) = m.source.as_ref() else { return (None, 0) };
    let read = match MlflowClient::new(&source.tracking_uri) {
        Ok(client) => client.aliases(&source.registered_name).await,
        Err(e) => Err(e),
    };
    let aliases = match read {
        Ok(a) => a,
        Err(e) => {
            telemetry::count_registry_poll("failed");
            tracing::warn!(model = m.name.as_str(), "registry poll failed ({e}); serving what is loaded");
            return (None, set_status(&m.name, "failed", Some(e.to_string())));
        }
    };
    let moved: Vec<String> = source
        .aliases
        .iter()
        .filter(|(alias, v)| aliases.get(*alias) != Some(v))
        .map(|(alias, v)| format!("{}@{alias}: {v} -> {:?}", m.name, aliases.get(alias)))
        .collect();
    let outcome = if moved.is_empty() { "unchanged" } else { "changed" };
    telemetry::count_registry_poll(outcome);
    set_status(&m.name, outcome, None);
    ((!moved.is_empty()).then(|| moved.join(", ")), 0)
}

/// A rollout verdict reported to the registry (see the module docs), on a task of its own.
pub fn report_verdict(m: &ModelConfig, candidate: u64, event: &str, summary: String) {
    let Some(source) = m.source.clone() else { return };
    if !matches!(event, "promote" | "rollback") {
        return;
    }
    let (model, event) = (m.name.clone(), event.to_string());
    tokio::spawn(async move {
        let result = async {
            let client = MlflowClient::new(&source.tracking_uri)?;
            let name = &source.registered_name;
            client
                .set_version_tag(name, candidate, "gateway.rollout", &format!("{event}: {summary}"))
                .await?;
            if event == "promote"
                && let Some(alias) = &source.primary_alias
            {
                client.set_alias(name, alias, candidate).await?;
            }
            Ok::<(), super::mlflow::MlflowError>(())
        }
        .await;
        match result {
            Ok(()) => tracing::info!(
                model = model.as_str(),
                candidate,
                event = event.as_str(),
                "rollout reported to the registry"
            ),
            Err(e) => {
                telemetry::count_registry_poll("report_failed");
                tracing::error!(
                    model = model.as_str(),
                    candidate,
                    "could not report the rollout's {event} to the registry: {e}"
                );
            }
        }
    });
}
