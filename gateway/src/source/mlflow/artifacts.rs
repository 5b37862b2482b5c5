//! Finding and fetching a version's ONNX file, the way MLflow's own clients do through the
//! server's artifact proxy: resolving its `source` (a logged model, a run's artifacts, or an
//! artifact URI) to a folder under the proxy, listing it, reading `MLmodel`, and streaming the
//! file into the content-addressed cache. Nothing here touches the server's storage directly.

use std::path::Path;

use bytes::Bytes;
use http::{Method, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::api::{
    FileEntry, ListAnswer, LoggedModelAnswer, LoggedModelInfo, RunAnswer, SearchAnswer, answer_error,
};
use super::rest::{encode, encode_path, read_limited, unreachable};
use super::{MlflowClient, MlflowError, ModelVersion, VersionStatus, onnx_external};
use crate::source::cache::{Cache, CacheError, CachedModel, Expected};

const ARTIFACTS_ROUTE: &str = "/api/2.0/mlflow-artifacts/artifacts";
/// Pages of logged-model search results read when a `runs:/` source names a logged model.
const MAX_SEARCH_PAGES: usize = 20;

impl MlflowClient {
    /// The version's ONNX file, downloaded into `cache` unless the cache already holds what this
    /// version (same model, number and source) resolved to before and the listing's size agrees.
    pub async fn fetch_onnx(
        &self,
        version: &ModelVersion,
        cache: &Cache,
    ) -> Result<CachedModel, MlflowError> {
        if version.status != VersionStatus::Ready {
            return Err(MlflowError::NotReady {
                model: version.name.clone(),
                version: version.version,
                status: format!("{:?}", version.status),
            });
        }
        let (dir, listing) = self.resolve_artifacts(version).await?;
        let file = self.find_onnx(&dir, &listing).await?;
        let key = format!("mlflow {} {} {} {}", self.base, version.name, version.version, version.source);
        if let Some(size) = file.size
            && let Some(cached) = cache.lookup(&key).await?
            && cached.size == size
        {
            return Ok(cached);
        }
        let model = self.download(&file, cache).await?;
        let external = external_data_files(&model.path).await?;
        if !external.is_empty() {
            return Err(MlflowError::ExternalData { location: file.location.display(), files: external });
        }
        cache.remember(&key, &model).await?;
        Ok(model)
    }

    /// Where the version's files are under the artifact proxy, and what is there.
    async fn resolve_artifacts(
        &self,
        v: &ModelVersion,
    ) -> Result<(ArtifactDir, Vec<FileEntry>), MlflowError> {
        let unsupported =
            |reason: &str| MlflowError::UnsupportedSource { uri: v.source.clone(), reason: reason.into() };
        let dir = if let Some(id) = &v.model_id {
            self.logged_model_dir(id).await?
        } else if let Some(rest) = v.source.strip_prefix("runs:/") {
            let (run_id, path) = rest.split_once('/').unwrap_or((rest, ""));
            return self.run_artifacts(run_id, path.trim_matches('/')).await;
        } else if v.source.starts_with("models:/") {
            return Err(unsupported("a registry URI (models:/<name>/<version>), not a logged model"));
        } else {
            self.artifact_dir(&v.source)?
        };
        let listing = self.list(&dir).await?;
        Ok((dir, listing))
    }

    async fn logged_model_dir(&self, model_id: &str) -> Result<ArtifactDir, MlflowError> {
        let path = format!("/api/2.0/mlflow/logged-models/{}", encode(model_id));
        let answer: LoggedModelAnswer = self.call(Method::GET, &path, None).await?;
        self.artifact_dir(&answer.model.info.artifact_uri)
    }

    /// A `runs:/<run>/<path>` source: the run's own artifacts, or (MLflow 3, where
    /// `log_model(name=...)` writes a logged model, not run artifacts) the logged model of that
    /// name from that run, as MLflow's `RunsArtifactRepository` does.
    async fn run_artifacts(
        &self,
        run_id: &str,
        path: &str,
    ) -> Result<(ArtifactDir, Vec<FileEntry>), MlflowError> {
        let what = format!("/api/2.0/mlflow/runs/get?run_id={}", encode(run_id));
        let run: RunAnswer = self.call(Method::GET, &what, None).await?;
        let dir = self.artifact_dir(&run.run.info.artifact_uri)?.join(path);
        let listing = self.list(&dir).await?;
        let (name, rest) = path.split_once('/').unwrap_or((path, ""));
        if !listing.is_empty() || name.is_empty() {
            return Ok((dir, listing));
        }
        let Some(model) = self.logged_model_of_run(&run.run.info.experiment_id, run_id, name).await? else {
            return Ok((dir, listing));
        };
        let dir = self.artifact_dir(&model.artifact_uri)?.join(rest);
        let listing = self.list(&dir).await?;
        Ok((dir, listing))
    }

    async fn logged_model_of_run(
        &self,
        experiment_id: &str,
        run_id: &str,
        name: &str,
    ) -> Result<Option<LoggedModelInfo>, MlflowError> {
        if name.contains(['\'', '\\']) {
            return Ok(None);
        }
        let path = "/api/2.0/mlflow/logged-models/search";
        let mut token: Option<String> = None;
        for _ in 0..MAX_SEARCH_PAGES {
            let mut body = json!({ "experiment_ids": [experiment_id], "filter": format!("name = '{name}'") });
            if let Some(token) = &token {
                body["page_token"] = Value::String(token.clone());
            }
            let page: SearchAnswer = self.call(Method::POST, path, Some(body)).await?;
            if let Some(m) = page.models.into_iter().find(|m| m.info.source_run_id.as_deref() == Some(run_id))
            {
                return Ok(Some(m.info));
            }
            match page.next_page_token.filter(|t| !t.is_empty()) {
                Some(next) => token = Some(next),
                None => return Ok(None),
            }
        }
        Ok(None)
    }

    /// An artifact URI served by the proxy: `mlflow-artifacts:/<path>` (this server),
    /// `mlflow-artifacts://<host:port>/<path>`, or an `http://` URL into the proxy route.
    fn artifact_dir(&self, uri: &str) -> Result<ArtifactDir, MlflowError> {
        let unsupported =
            |reason: &str| MlflowError::UnsupportedSource { uri: uri.to_owned(), reason: reason.into() };
        let (base, path) = if let Some(rest) = uri.strip_prefix("mlflow-artifacts://") {
            let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
            let base = if authority.is_empty() { self.base.clone() } else { format!("http://{authority}") };
            (base, path)
        } else if let Some(path) = uri.strip_prefix("mlflow-artifacts:") {
            (self.base.clone(), path)
        } else if uri.starts_with("http://") {
            let Some((base, path)) = uri.split_once(ARTIFACTS_ROUTE) else {
                return Err(unsupported("an http URL outside the artifact proxy route"));
            };
            (base.trim_end_matches('/').to_owned(), path)
        } else if uri.starts_with("https://") {
            return Err(unsupported("https is not supported by this client"));
        } else {
            return Err(unsupported(
                "not served by the tracking server's artifact proxy (start it with --serve-artifacts)",
            ));
        };
        let path = path.trim_matches('/');
        if path.split('/').any(|seg| seg == "..") {
            return Err(unsupported("the path leaves the artifact root"));
        }
        Ok(ArtifactDir { base, path: path.to_owned() })
    }

    async fn list(&self, dir: &ArtifactDir) -> Result<Vec<FileEntry>, MlflowError> {
        let url = format!("{}{ARTIFACTS_ROUTE}?path={}", dir.base, encode(&dir.path));
        let answer: ListAnswer = self.call_url(Method::GET, &url, None).await?;
        Ok(answer.files)
    }

    /// The ONNX file in a model's directory: MLmodel's `flavors.onnx.data` when there is an
    /// MLmodel, else the one `.onnx` file (or `model.onnx` among several). A listing that is
    /// empty because the source names a file is that file, its size unknown.
    async fn find_onnx(&self, dir: &ArtifactDir, listing: &[FileEntry]) -> Result<OnnxFile, MlflowError> {
        let missing = |reason: String| MlflowError::ArtifactMissing { location: dir.display(), reason };
        if listing.is_empty() {
            if dir.path.ends_with(".onnx") {
                return Ok(OnnxFile { location: dir.clone(), size: None });
            }
            return Err(missing("nothing there (no such path, or an empty one)".into()));
        }
        let is_file = |name: &str| listing.iter().any(|f| f.path == name && !f.is_dir);
        let data = if is_file("MLmodel") {
            let text = self.read_small(&dir.join("MLmodel")).await?;
            mlmodel_onnx_data(&text)
                .ok_or_else(|| missing("MLmodel has no onnx flavor with a data file".into()))?
        } else {
            let onnx: Vec<&str> = listing
                .iter()
                .filter(|f| !f.is_dir && f.path.ends_with(".onnx"))
                .map(|f| f.path.as_str())
                .collect();
            match onnx.as_slice() {
                [] => return Err(missing("no MLmodel and no .onnx file".into())),
                [one] => (*one).to_owned(),
                many if many.contains(&"model.onnx") => "model.onnx".to_owned(),
                many => return Err(missing(format!("several .onnx files and none is model.onnx: {many:?}"))),
            }
        };
        if data.starts_with('/') || data.split('/').any(|seg| seg == ".." || seg.is_empty()) {
            return Err(missing(format!("MLmodel names an unsafe path {data:?}")));
        }
        let location = dir.join(&data);
        // A data file in a subfolder is listed from its own folder.
        let (parent, name) = match data.rsplit_once('/') {
            Some((parent, name)) => (Some(dir.join(parent)), name),
            None => (None, data.as_str()),
        };
        let entries = match &parent {
            Some(parent) => self.list(parent).await?,
            None => listing.to_vec(),
        };
        let entry = entries
            .iter()
            .find(|f| f.path == name && !f.is_dir)
            .ok_or_else(|| missing(format!("MLmodel names {data:?}, which is not there")))?;
        Ok(OnnxFile { location, size: entry.file_size })
    }

    async fn read_small(&self, file: &ArtifactDir) -> Result<String, MlflowError> {
        let url = format!("{}{ARTIFACTS_ROUTE}/{}", file.base, encode_path(&file.path));
        let what = format!("GET {}", file.display());
        let (status, bytes) = self.exchange(self.request(Method::GET, &url, None)?, &what).await?;
        if !status.is_success() {
            return Err(answer_error(&what, status, &bytes));
        }
        String::from_utf8(bytes.to_vec()).map_err(|e| MlflowError::BadAnswer { what, reason: e.to_string() })
    }

    /// Streams one file into the cache: the answer must start within the timeout, never go
    /// silent longer than it, and end within the download timeout.
    async fn download(&self, file: &OnnxFile, cache: &Cache) -> Result<CachedModel, MlflowError> {
        let url = format!("{}{ARTIFACTS_ROUTE}/{}", file.location.base, encode_path(&file.location.path));
        let what = format!("GET {}", file.location.display());
        let deadline = Instant::now() + self.download_timeout;
        let request = self.request(Method::GET, &url, None)?;
        let response = tokio::time::timeout(self.timeout, self.http.request(request))
            .await
            .map_err(|_| MlflowError::Timeout { what: what.clone(), after: self.timeout })?
            .map_err(|e| unreachable(&what, &e))?;
        let status = response.status();
        if !status.is_success() {
            let body = tokio::time::timeout(self.timeout, read_limited(response.into_body()))
                .await
                .unwrap_or_else(|_| Ok(Bytes::new()))
                .unwrap_or_default();
            return Err(match answer_error(&what, status, &body) {
                MlflowError::NotFound { message, .. } => {
                    MlflowError::ArtifactMissing { location: file.location.display(), reason: message }
                }
                other => other,
            });
        }
        let declared = response
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        let mut put = cache.begin_put(Expected { size: file.size.or(declared), sha256: None }).await?;
        let mut body = response.into_body();
        loop {
            let until = deadline.min(Instant::now() + self.timeout);
            let frame =
                tokio::time::timeout_at(until, body.frame()).await.map_err(|_| MlflowError::Timeout {
                    what: format!("{what} (after {} bytes)", put.written()),
                    after: if until == deadline { self.download_timeout } else { self.timeout },
                })?;
            match frame {
                None => break,
                Some(Err(e)) => return Err(unreachable(&what, &e)),
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        put.write(&data).await?;
                    }
                }
            }
        }
        Ok(put.finish().await?)
    }
}

/// A path under one server's artifact proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArtifactDir {
    base: String,
    /// Relative to the artifact root, no leading or trailing `/`.
    path: String,
}

impl ArtifactDir {
    fn join(&self, rel: &str) -> ArtifactDir {
        let rel = rel.trim_matches('/');
        let path = match (self.path.is_empty(), rel.is_empty()) {
            (_, true) => self.path.clone(),
            (true, false) => rel.to_owned(),
            (false, false) => format!("{}/{rel}", self.path),
        };
        ArtifactDir { base: self.base.clone(), path }
    }

    fn display(&self) -> String {
        format!("{}{ARTIFACTS_ROUTE}/{}", self.base, self.path)
    }
}

#[derive(Debug)]
struct OnnxFile {
    location: ArtifactDir,
    size: Option<u64>,
}

/// `flavors.onnx.data` from an MLmodel file. MLflow writes MLmodel with PyYAML in block style
/// (`flavors:` at column 0, each flavor one level in, its keys one level further), which this
/// reads without a YAML parser.
fn mlmodel_onnx_data(mlmodel: &str) -> Option<String> {
    let mut in_flavors = false;
    let mut flavor_indent: Option<usize> = None;
    let mut key_indent: Option<usize> = None;
    let mut in_onnx = false;
    for line in mlmodel.lines() {
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let indent = line.len() - line.trim_start().len();
        if indent == 0 {
            in_flavors = text == "flavors:";
            in_onnx = false;
            continue;
        }
        if !in_flavors {
            continue;
        }
        let flavor = *flavor_indent.get_or_insert(indent);
        if indent <= flavor {
            in_onnx = text == "onnx:";
            key_indent = None;
            continue;
        }
        if in_onnx
            && indent == *key_indent.get_or_insert(indent)
            && let Some(value) = text.strip_prefix("data:")
        {
            let value = value.trim().trim_matches(|c| c == '\'' || c == '"');
            return (!value.is_empty() && value != "null").then(|| value.to_owned());
        }
    }
    None
}

/// Files that the ONNX model at `path` says hold its tensors (ONNX external data), read from
/// the protobuf without loading the model.
async fn external_data_files(path: &Path) -> Result<Vec<String>, MlflowError> {
    let path = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || std::fs::read(&path).map_err(|e| (path, e))).await;
    let bytes = match read {
        Ok(Ok(bytes)) => bytes,
        Ok(Err((path, source))) => return Err(CacheError::Io { path, source }.into()),
        // The blocking pool is gone only when the runtime shuts down.
        Err(e) => {
            return Err(MlflowError::BadAnswer { what: "reading the model".into(), reason: e.to_string() });
        }
    };
    Ok(onnx_external::locations(&bytes).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::source::mlflow::Credentials;
    use crate::source::mlflow::testutil::fake_server;

    const MLMODEL: &str = "\
artifact_path: mlflow-artifacts:/0/models/m-98c2/artifacts
flavors:
  onnx:
    code: null
    data: model.onnx
    onnx_session_options: null
    providers:
    - CUDAExecutionProvider
    - CPUExecutionProvider
  python_function:
    data: other.onnx
    env:
      conda: conda.yaml
    loader_module: mlflow.onnx
mlflow_version: 3.17.2
model_id: m-98c2
";

    #[test]
    fn mlmodel_names_the_onnx_flavors_data_file() {
        assert_eq!(mlmodel_onnx_data(MLMODEL).as_deref(), Some("model.onnx"));
        let quoted = MLMODEL.replace("data: model.onnx", "data: 'sub/my model.onnx'");
        assert_eq!(mlmodel_onnx_data(&quoted).as_deref(), Some("sub/my model.onnx"));
        let python_only = MLMODEL.replace("  onnx:", "  sklearn:");
        assert_eq!(mlmodel_onnx_data(&python_only), None);
        assert_eq!(mlmodel_onnx_data("flavors: {}\n"), None);
    }

    #[test]
    fn artifact_uris_resolve_to_the_proxy_or_are_refused() {
        let client = MlflowClient::with_credentials("http://127.0.0.1:5000/p", Credentials::None).unwrap();
        let dir = |uri: &str| client.artifact_dir(uri).map(|d| (d.base, d.path));
        let here = "http://127.0.0.1:5000/p".to_owned();
        assert_eq!(
            dir("mlflow-artifacts:/0/models/m-1/artifacts").unwrap(),
            (here.clone(), "0/models/m-1/artifacts".into())
        );
        assert_eq!(dir("mlflow-artifacts:///0/x/").unwrap(), (here, "0/x".into()));
        assert_eq!(dir("mlflow-artifacts://other:81/0/x").unwrap(), ("http://other:81".into(), "0/x".into()));
        assert_eq!(
            dir("http://h:1/pre/api/2.0/mlflow-artifacts/artifacts/0/x").unwrap(),
            ("http://h:1/pre".into(), "0/x".into())
        );
        for bad in [
            "s3://bucket/0/x",
            "/var/mlruns/0/x",
            "https://h/api/2.0/mlflow-artifacts/artifacts/x",
            "http://h/x",
            "mlflow-artifacts:/0/../../etc",
        ] {
            assert!(matches!(dir(bad), Err(MlflowError::UnsupportedSource { .. })), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_download_that_disagrees_with_the_listing_leaves_nothing_in_the_cache() {
        let listing = br#"{"files": [{"path": "MLmodel", "is_dir": false, "file_size": 40},
            {"path": "model.onnx", "is_dir": false, "file_size": 10}]}"#;
        let uri = fake_server(Some(vec![
            (
                "/api/2.0/mlflow/logged-models/m-1",
                200,
                br#"{"model": {"info": {"artifact_uri": "mlflow-artifacts:/0/models/m-1/artifacts"}}}"#
                    .to_vec(),
            ),
            ("/api/2.0/mlflow-artifacts/artifacts?", 200, listing.to_vec()),
            (
                "/api/2.0/mlflow-artifacts/artifacts/0/models/m-1/artifacts/MLmodel",
                200,
                b"flavors:\n  onnx:\n    data: model.onnx\n".to_vec(),
            ),
            (
                "/api/2.0/mlflow-artifacts/artifacts/0/models/m-1/artifacts/model.onnx",
                200,
                b"twelve bytes".to_vec(),
            ),
        ]))
        .await;
        let client = MlflowClient::with_credentials(&uri, Credentials::None).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "gateway-mlflow-unit-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        let cache = Cache::open(&dir).await.unwrap();
        let version = ModelVersion {
            name: "m".into(),
            version: 1,
            source: "models:/m-1".into(),
            run_id: None,
            model_id: Some("m-1".into()),
            status: VersionStatus::Ready,
            aliases: vec![],
            tags: BTreeMap::new(),
        };
        let err = client.fetch_onnx(&version, &cache).await.unwrap_err();
        assert!(matches!(err, MlflowError::Cache(CacheError::SizeMismatch { expected: 10, .. })), "{err:?}");
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
