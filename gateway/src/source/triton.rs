//! Triton model repositories as they are: `<repo>/<model>/config.pbtxt` (optional) beside
//! `<repo>/<model>/<version>/<file>`. What `config.pbtxt` says that the gateway does is applied
//! (`max_batch_size`, `dynamic_batching`, `instance_group` count, `version_policy`,
//! `default_model_filename`); `platform`/`backend` other than ONNX Runtime leave the model out
//! with the reason; every other field (other backends' settings, warm-up, optimisation) is
//! named in a warning, never fatal, since real repositories carry them.
//!
//! Without `config.pbtxt`, the configuration is completed as Triton does for ONNX models:
//! batching on, up to Triton's default maximum batch size, when every input and output has a
//! dynamic leading dimension (the version decides that when loaded: see
//! `ServedVersion::max_batch_size`), the latest version served.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use super::pbtxt::{self, Field, Value};
use crate::config::{
    ConfigError, Problem, RawBatching, RawConfig, RawModel, RawRouting, RawVersion, valid_model_name,
    versions_on_disk,
};

/// Triton's `--backend-config=default-max-batch-size`, what its auto-complete gives a model that
/// can batch.
pub const DEFAULT_MAX_BATCH_SIZE: u64 = 4;
pub const CONFIG_FILE: &str = "config.pbtxt";
pub const DEFAULT_MODEL_FILENAME: &str = "model.onnx";

/// Which versions on disk a model serves (`version_policy`; Triton's default: the latest one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionPolicy {
    Latest(u64),
    All,
    Specific(Vec<u64>),
}

impl VersionPolicy {
    /// The versions served out of `on_disk` (ascending).
    pub fn select(&self, on_disk: &[u64]) -> Vec<u64> {
        match self {
            VersionPolicy::All => on_disk.to_vec(),
            VersionPolicy::Latest(n) => on_disk[on_disk.len().saturating_sub(*n as usize)..].to_vec(),
            VersionPolicy::Specific(wanted) => {
                on_disk.iter().copied().filter(|v| wanted.contains(v)).collect()
            }
        }
    }
}

/// The parts of a `config.pbtxt` the gateway applies.
#[derive(Debug, Clone, PartialEq)]
pub struct TritonConfig {
    pub name: Option<String>,
    pub platform: Option<String>,
    pub backend: Option<String>,
    pub max_batch_size: u64,
    /// `dynamic_batching.max_queue_delay_microseconds`, when `dynamic_batching` is present.
    pub max_queue_delay_us: Option<u64>,
    /// The sum of the `instance_group` counts (each 1 when not given).
    pub instances: Option<u64>,
    pub version_policy: VersionPolicy,
    pub default_model_filename: Option<String>,
    /// Fields read but not applied, by path: said once in a warning.
    pub ignored: Vec<String>,
}

impl Default for TritonConfig {
    fn default() -> TritonConfig {
        TritonConfig {
            name: None,
            platform: None,
            backend: None,
            max_batch_size: 0,
            max_queue_delay_us: None,
            instances: None,
            version_policy: VersionPolicy::Latest(1),
            default_model_filename: None,
            ignored: Vec::new(),
        }
    }
}

impl TritonConfig {
    pub fn parse(text: &str) -> Result<TritonConfig, String> {
        let mut c = TritonConfig::default();
        for f in pbtxt::parse(text)? {
            match f.name.as_str() {
                "name" => c.name = Some(text_of(&f)?),
                "platform" => c.platform = Some(text_of(&f)?),
                "backend" => c.backend = Some(text_of(&f)?),
                "max_batch_size" => c.max_batch_size = number(&f)?,
                "default_model_filename" => c.default_model_filename = Some(text_of(&f)?),
                "dynamic_batching" => c.dynamic_batching(&f)?,
                "instance_group" => c.instance_groups(&f)?,
                "version_policy" => c.version_policy = version_policy(&f)?,
                // Declared inputs and outputs: the model file is what is served (its own
                // signature is what metadata and checks use); only unusual settings are named.
                "input" | "output" => c.note_tensor_settings(&f),
                other => c.ignored.push(other.to_string()),
            }
        }
        Ok(c)
    }

    /// `platform`/`backend`, when they name something other than ONNX Runtime.
    pub fn foreign_backend(&self) -> Option<String> {
        let onnx_platform = self.platform.as_deref().is_none_or(|p| p == "onnxruntime_onnx");
        let onnx_backend = self.backend.as_deref().is_none_or(|b| b == "onnxruntime");
        if onnx_platform && onnx_backend {
            return None;
        }
        let named = self.platform.clone().or_else(|| self.backend.clone()).unwrap_or_default();
        Some(format!(
            "{named:?} is not an ONNX model: only platform \"onnxruntime_onnx\" (backend \"onnxruntime\") is served"
        ))
    }

    fn dynamic_batching(&mut self, f: &Field) -> Result<(), String> {
        let mut delay = 0;
        for sub in message(f)? {
            match sub.name.as_str() {
                "max_queue_delay_microseconds" => delay = number(sub)?,
                // Batches form from what is queued, up to max_batch_size; no preferred sizes.
                other => self.ignored.push(format!("dynamic_batching.{other}")),
            }
        }
        self.max_queue_delay_us = Some(delay);
        Ok(())
    }

    fn instance_groups(&mut self, f: &Field) -> Result<(), String> {
        for g in items(f) {
            let Value::Message(fields) = g else { return Err("instance_group: expected { ... }".into()) };
            let mut count = 1;
            for sub in &fields {
                match sub.name.as_str() {
                    "count" => count = number(sub)?,
                    "kind" if matches!(&sub.value, Value::Scalar(k) if k == "KIND_CPU" || k == "KIND_AUTO") =>
                        {}
                    // Where a version runs is runtime.execution_providers, for every model.
                    other => self.ignored.push(format!("instance_group.{other}")),
                }
            }
            *self.instances.get_or_insert(0) += count;
        }
        Ok(())
    }

    fn note_tensor_settings(&mut self, f: &Field) {
        for item in items(f) {
            let Value::Message(fields) = item else { continue };
            for sub in fields {
                if !matches!(sub.name.as_str(), "name" | "data_type" | "dims" | "optional") {
                    self.ignored.push(format!("{}.{}", f.name, sub.name));
                }
            }
        }
    }
}

/// A repeated field's values: a list `[...]`, or the one value written.
fn items(f: &Field) -> Vec<Value> {
    match &f.value {
        Value::List(items) => items.clone(),
        v => vec![v.clone()],
    }
}

fn version_policy(f: &Field) -> Result<VersionPolicy, String> {
    let fields = message(f)?;
    let Some(kind) = fields.first() else { return Ok(VersionPolicy::Latest(1)) };
    match kind.name.as_str() {
        "all" => Ok(VersionPolicy::All),
        "latest" => {
            let n = message(kind)?.iter().find(|s| s.name == "num_versions").map(number).transpose()?;
            Ok(VersionPolicy::Latest(n.unwrap_or(1).max(1)))
        }
        "specific" => {
            let mut versions = Vec::new();
            for s in message(kind)?.iter().filter(|s| s.name == "versions") {
                for v in items(s) {
                    versions.push(scalar_number(&v, "version_policy.specific.versions")?);
                }
            }
            Ok(VersionPolicy::Specific(versions))
        }
        other => Err(format!("version_policy: unknown policy {other:?} (latest, all or specific)")),
    }
}

fn message(f: &Field) -> Result<&[Field], String> {
    match &f.value {
        Value::Message(fields) => Ok(fields),
        _ => Err(format!("{}: expected {{ ... }}", f.name)),
    }
}

fn text_of(f: &Field) -> Result<String, String> {
    match &f.value {
        Value::Text(s) | Value::Scalar(s) => Ok(s.clone()),
        _ => Err(format!("{}: expected a string", f.name)),
    }
}

fn number(f: &Field) -> Result<u64, String> {
    scalar_number(&f.value, &f.name)
}

fn scalar_number(v: &Value, what: &str) -> Result<u64, String> {
    match v {
        Value::Scalar(s) | Value::Text(s) => {
            s.parse().map_err(|_| format!("{what}: expected a non-negative integer, got {s:?}"))
        }
        _ => Err(format!("{what}: expected a number")),
    }
}

/// One model folder of a repository: served as `model` (with `notes` on what of its
/// `config.pbtxt` is not applied), or left out with `reason`. Nothing is logged here: the index
/// reads repositories on every call, and only a scan that serves them says what it noticed.
#[derive(Debug, Clone)]
pub enum Found {
    Serve { model: Box<RawModel>, notes: Vec<String> },
    LeftOut(String),
}

/// Reads `<repo>/<name>`: its `config.pbtxt` when present, its version folders, the policy.
pub fn read_model(repo: &Path, name: &str) -> Found {
    let config_path = repo.join(name).join(CONFIG_FILE);
    let (config, has_config) = match std::fs::read_to_string(&config_path) {
        Ok(text) => match TritonConfig::parse(&text) {
            Ok(c) => (c, true),
            Err(e) => return Found::LeftOut(format!("{}: {e}", config_path.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (TritonConfig::default(), false),
        Err(e) => return Found::LeftOut(format!("cannot read {}: {e}", config_path.display())),
    };
    if let Some(reason) = config.foreign_backend() {
        return Found::LeftOut(reason);
    }
    let mut notes = Vec::new();
    if let Some(other) = config.name.as_deref().filter(|n| *n != name) {
        notes.push(format!(
            "{}: name {other:?} differs from its folder; the folder's name is used",
            config_path.display()
        ));
    }
    if !config.ignored.is_empty() {
        let mut ignored = config.ignored.clone();
        ignored.dedup();
        notes.push(format!("{}: fields not applied by the gateway: {ignored:?}", config_path.display()));
    }
    let file = config.default_model_filename.clone().unwrap_or_else(|| DEFAULT_MODEL_FILENAME.to_string());
    let on_disk = versions_on_disk(repo, name, &file);
    let served = config.version_policy.select(&on_disk);
    let Some((&primary, older)) = served.split_last() else {
        return Found::LeftOut(if on_disk.is_empty() {
            format!("no version folder (a positive integer) holding {file}")
        } else {
            format!(
                "version_policy {:?} selects none of the versions on disk {on_disk:?}",
                config.version_policy
            )
        });
    };
    let batching = if has_config {
        (config.max_batch_size > 0).then_some(RawBatching {
            max_batch_size: Some(config.max_batch_size),
            max_queue_delay_us: config.max_queue_delay_us,
            max_queue: None,
        })
    } else {
        Some(RawBatching {
            max_batch_size: Some(DEFAULT_MAX_BATCH_SIZE),
            max_queue_delay_us: Some(0),
            max_queue: None,
        })
    };
    let model = Box::new(RawModel {
        repository: Some(repo.display().to_string()),
        model_filename: config.default_model_filename,
        instances: config.instances,
        batching,
        routing: Some(RawRouting {
            primary: Some(RawVersion::Number(primary)),
            versions: older.to_vec(),
            ..RawRouting::default()
        }),
        ..RawModel::default()
    });
    Found::Serve { model, notes }
}

/// Every model folder of `dir` (valid names only), with what it serves or why not.
pub fn read_repository(dir: &Path) -> Result<BTreeMap<String, Found>, ConfigError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Problem::new("--model-repository", format!("cannot read {}: {e}", dir.display())))?;
    let mut models = BTreeMap::new();
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().map(str::to_string) else { continue };
        if !entry.path().is_dir() || name.starts_with('.') {
            continue;
        }
        if !valid_model_name(&name) {
            tracing::warn!(folder = %entry.path().display(), "not served: model names match [A-Za-z0-9_.-]+");
            continue;
        }
        models.insert(name.clone(), read_model(dir, &name));
    }
    Ok(models)
}

/// The config `--model-repository DIR` serves: every model that can be served, or only those
/// in `selection` (the explicitly loaded ones of `--model-control-mode explicit`).
pub fn scan(dir: &Path, selection: Option<&BTreeSet<String>>) -> Result<RawConfig, ConfigError> {
    let mut models = BTreeMap::new();
    for (name, found) in read_repository(dir)? {
        if selection.is_some_and(|s| !s.contains(&name)) {
            continue;
        }
        match found {
            Found::Serve { model, notes } => {
                for note in notes {
                    tracing::warn!(model = name.as_str(), "{note}");
                }
                models.insert(name, *model);
            }
            Found::LeftOut(reason) => tracing::warn!(model = name.as_str(), "not served: {reason}"),
        }
    }
    if models.is_empty() && selection.is_none() {
        return Err(Problem::new(
            "--model-repository",
            format!("{} holds no servable model (expected <model>/<version>/model.onnx)", dir.display()),
        )
        .into());
    }
    Ok(RawConfig { models, ..RawConfig::default() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_gateway_applies_is_read_and_the_rest_named() {
        let c = TritonConfig::parse(
            r#"
name: "m"
backend: "onnxruntime"
max_batch_size: 16
dynamic_batching { max_queue_delay_microseconds: 250 preferred_batch_size: [4, 8] }
instance_group [ { count: 2, kind: KIND_CPU }, { kind: KIND_GPU gpus: [0] } ]
version_policy: { latest: { num_versions: 2 } }
default_model_filename: "net.onnx"
input [ { name: "x", data_type: TYPE_FP32, dims: [ 8 ], reshape: { shape: [2, 4] } } ]
optimization { execution_accelerators { cpu_execution_accelerator: [ { name: "openvino" } ] } }
"#,
        )
        .unwrap();
        assert_eq!((c.max_batch_size, c.max_queue_delay_us, c.instances), (16, Some(250), Some(3)));
        assert_eq!(c.version_policy, VersionPolicy::Latest(2));
        assert_eq!(c.default_model_filename.as_deref(), Some("net.onnx"));
        assert_eq!(c.foreign_backend(), None);
        for f in [
            "dynamic_batching.preferred_batch_size",
            "instance_group.kind",
            "instance_group.gpus",
            "input.reshape",
            "optimization",
        ] {
            assert!(c.ignored.iter().any(|i| i == f), "{f} in {:?}", c.ignored);
        }
    }

    #[test]
    fn policies_select_from_what_is_on_disk() {
        let disk = [1, 2, 5, 7];
        assert_eq!(VersionPolicy::Latest(1).select(&disk), vec![7]);
        assert_eq!(VersionPolicy::Latest(3).select(&disk), vec![2, 5, 7]);
        assert_eq!(VersionPolicy::Latest(9).select(&disk), disk.to_vec());
        assert_eq!(VersionPolicy::All.select(&disk), disk.to_vec());
        assert_eq!(VersionPolicy::Specific(vec![2, 3, 7]).select(&disk), vec![2, 7]);
        let c = TritonConfig::parse("version_policy: { specific: { versions: [1, 3] } }").unwrap();
        assert_eq!(c.version_policy, VersionPolicy::Specific(vec![1, 3]));
        let c = TritonConfig::parse("version_policy: { all: {} }").unwrap();
        assert_eq!(c.version_policy, VersionPolicy::All);
    }

    #[test]
    fn other_backends_are_refused_by_name() {
        for text in
            ["platform: \"tensorflow_savedmodel\"", "backend: \"python\"", "platform: \"pytorch_libtorch\""]
        {
            let c = TritonConfig::parse(text).unwrap();
            assert!(c.foreign_backend().unwrap().contains("not an ONNX model"), "{text}");
        }
        assert_eq!(TritonConfig::parse("platform: \"onnxruntime_onnx\"").unwrap().foreign_backend(), None);
    }
}
