//! An MLflow model registry as a source of versions: an async client for the tracking server's
//! REST API (MLflow 3.x) that reads versions by alias or number, moves aliases, tags versions and
//! fetches a version's ONNX file into the content-addressed [`Cache`](super::cache::Cache). Owns
//! the REST paths, the JSON shapes, MLflow's credentials and the way MLflow's own clients find a
//! version's files; knows nothing of config, routing or serving (`reload` turns versions into a
//! snapshot).
//!
//! Artifacts are read the way `mlflow` itself reads them from a server started with
//! `--serve-artifacts` (its default), with no access to the server's storage: a version's
//! `source` (`models:/m-<id>` in MLflow 3, a logged model; `runs:/<run>/<path>` or
//! `mlflow-artifacts:/<path>` from older clients) is resolved through the REST API to a path
//! under the artifact proxy (`/api/2.0/mlflow-artifacts/artifacts`), listed, and the file named by
//! `MLmodel`'s `flavors.onnx.data` is streamed into the cache, its size checked against the
//! listing. Every request is bounded by a timeout; credentials never appear in `Debug` output or
//! errors.
//!
//! Laid out by concern: this file is the public interface (the client, its registry calls, the
//! version and error types); `rest` sends one bounded request and types its failure; `api` holds
//! the JSON answer shapes; `artifacts` finds a version's ONNX file and downloads it into the cache;
//! `onnx_external` reads just enough of an ONNX file to refuse one whose tensors live elsewhere.

mod api;
mod artifacts;
mod onnx_external;
mod rest;
#[cfg(test)]
mod testutil;

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderValue, Method};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{Value, json};

use super::cache::CacheError;
use api::{RegisteredModelAnswer, VersionAnswer, parse_version};
use rest::encode;

/// Default bound on one REST call (connect, send, whole answer).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default bound on one model download, start to end; a stalled transfer is cut sooner, after
/// the REST timeout without a byte.
pub const DEFAULT_DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a registry call failed. `Unreachable`, `Timeout` and 5xx `Status` are worth retrying
/// ([`MlflowError::is_transient`]); the rest need someone to change the registry or the config.
#[derive(Debug, thiserror::Error)]
pub enum MlflowError {
    #[error("invalid MLflow tracking URI {uri:?}: {reason}")]
    InvalidUri { uri: String, reason: String },
    #[error("MLflow server unreachable ({what}): {reason}")]
    Unreachable { what: String, reason: String },
    #[error("MLflow did not answer {what} within {after:?}")]
    Timeout { what: String, after: Duration },
    #[error("MLflow answered {status} to {what}: {error_code}: {message}")]
    Status { what: String, status: u16, error_code: String, message: String },
    #[error("not in the MLflow registry: {what}: {message}")]
    NotFound { what: String, message: String },
    #[error("unexpected answer from MLflow to {what}: {reason}")]
    BadAnswer { what: String, reason: String },
    #[error("version {version} of MLflow model {model:?} is not ready: {status}")]
    NotReady { model: String, version: u64, status: String },
    #[error("cannot fetch artifacts from {uri:?}: {reason}")]
    UnsupportedSource { uri: String, reason: String },
    #[error("no ONNX model at {location}: {reason}")]
    ArtifactMissing { location: String, reason: String },
    #[error(
        "{location} keeps tensors in separate files {files:?} (mlflow.onnx.log_model's default); \
         log the model with save_as_external_data=False to serve it"
    )]
    ExternalData { location: String, files: Vec<String> },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

impl MlflowError {
    /// The server may answer differently later without anyone changing anything.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } | Self::Timeout { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::InvalidUri { .. }
            | Self::NotFound { .. }
            | Self::BadAnswer { .. }
            | Self::NotReady { .. }
            | Self::UnsupportedSource { .. }
            | Self::ArtifactMissing { .. }
            | Self::ExternalData { .. }
            | Self::Cache(_) => false,
        }
    }
}

/// How the client proves who it is, as MLflow's own clients do: basic auth when both
/// `MLFLOW_TRACKING_USERNAME` and `MLFLOW_TRACKING_PASSWORD` are set, else a bearer
/// `MLFLOW_TRACKING_TOKEN`, else nothing.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    None,
    Bearer(String),
    Basic {
        username: String,
        password: String,
    },
}

impl Credentials {
    pub fn from_env() -> Self {
        let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
        match (var("MLFLOW_TRACKING_USERNAME"), var("MLFLOW_TRACKING_PASSWORD")) {
            (Some(username), Some(password)) => Self::Basic { username, password },
            _ => var("MLFLOW_TRACKING_TOKEN").map_or(Self::None, Self::Bearer),
        }
    }

    fn header(&self) -> Option<HeaderValue> {
        let value = match self {
            Self::None => return None,
            Self::Bearer(token) => format!("Bearer {token}"),
            Self::Basic { username, password } => {
                let pair = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
                format!("Basic {pair}")
            }
        };
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        Some(value)
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::None => f.write_str("None"),
            Self::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Self::Basic { username, .. } => {
                write!(f, "Basic {{ username: {username:?}, password: <redacted> }}")
            }
        }
    }
}

/// One registered model version as the registry describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelVersion {
    pub name: String,
    pub version: u64,
    /// Where its files are: `models:/m-<id>` (MLflow 3), `runs:/<run>/<path>`, or an artifact URI.
    pub source: String,
    pub run_id: Option<String>,
    /// The logged model behind it (MLflow 3), from the answer or else from a `models:/` source.
    pub model_id: Option<String>,
    pub status: VersionStatus,
    pub aliases: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// A version's registration state; only `Ready` versions have files to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionStatus {
    Ready,
    PendingRegistration,
    FailedRegistration,
    Other(String),
}

impl VersionStatus {
    fn parse(s: &str) -> Self {
        match s {
            "READY" => Self::Ready,
            "PENDING_REGISTRATION" => Self::PendingRegistration,
            "FAILED_REGISTRATION" => Self::FailedRegistration,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// A client for one tracking server. Cheap to clone.
#[derive(Clone)]
pub struct MlflowClient {
    /// `http://host:port[/prefix]`, no trailing slash.
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
    auth: Option<HeaderValue>,
    credentials_kind: &'static str,
    timeout: Duration,
    download_timeout: Duration,
}

impl std::fmt::Debug for MlflowClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MlflowClient")
            .field("tracking_uri", &self.base)
            .field("credentials", &self.credentials_kind)
            .field("timeout", &self.timeout)
            .field("download_timeout", &self.download_timeout)
            .finish_non_exhaustive()
    }
}

impl MlflowClient {
    /// A client for `tracking_uri` (`http://host:port[/prefix]`) with credentials from the
    /// environment ([`Credentials::from_env`]).
    pub fn new(tracking_uri: &str) -> Result<Self, MlflowError> {
        Self::with_credentials(tracking_uri, Credentials::from_env())
    }

    pub fn with_credentials(tracking_uri: &str, credentials: Credentials) -> Result<Self, MlflowError> {
        let base = parse_tracking_uri(tracking_uri)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(DEFAULT_TIMEOUT));
        connector.set_nodelay(true);
        // No idle connections are kept: MLflow's servers close idle keep-alive connections after
        // a few seconds (uvicorn 5 s, gunicorn 2 s), and a request sent on one as it closes fails
        // with "connection closed before message completed". A registry polled every few seconds
        // loses nothing by connecting afresh.
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(0)
            .build(connector);
        let credentials_kind = match credentials {
            Credentials::None => "none",
            Credentials::Bearer(_) => "bearer <redacted>",
            Credentials::Basic { .. } => "basic <redacted>",
        };
        Ok(Self {
            base,
            http,
            auth: credentials.header(),
            credentials_kind,
            timeout: DEFAULT_TIMEOUT,
            download_timeout: DEFAULT_DOWNLOAD_TIMEOUT,
        })
    }

    /// Bounds each REST call, and each silence during a download.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Bounds one whole model download.
    pub fn with_download_timeout(mut self, timeout: Duration) -> Self {
        self.download_timeout = timeout;
        self
    }

    /// The tracking server's base URL, as requests use it.
    pub fn tracking_uri(&self) -> &str {
        &self.base
    }

    /// The version `alias` points at. An unknown model or alias is [`MlflowError::NotFound`].
    pub async fn version_by_alias(&self, model: &str, alias: &str) -> Result<ModelVersion, MlflowError> {
        let path =
            format!("/api/2.0/mlflow/registered-models/alias?name={}&alias={}", encode(model), encode(alias));
        match self.call::<VersionAnswer>(Method::GET, &path, None).await {
            Ok(answer) => answer.model_version.into_version(&path),
            // MLflow answers an unknown alias of a known model with 400 INVALID_PARAMETER_VALUE,
            // like a malformed request; the model's alias list tells the two apart.
            Err(MlflowError::Status { status: 400, error_code, message, what })
                if error_code == "INVALID_PARAMETER_VALUE" =>
            {
                if self.aliases(model).await?.contains_key(alias) {
                    return Err(MlflowError::Status { what, status: 400, error_code, message });
                }
                Err(MlflowError::NotFound { what: format!("alias {model}@{alias}"), message })
            }
            Err(e) => Err(e),
        }
    }

    /// Version `version` of `model`.
    pub async fn get_version(&self, model: &str, version: u64) -> Result<ModelVersion, MlflowError> {
        let path = format!("/api/2.0/mlflow/model-versions/get?name={}&version={version}", encode(model));
        let answer: VersionAnswer = self.call(Method::GET, &path, None).await?;
        answer.model_version.into_version(&path)
    }

    /// Every alias of `model` and the version it points at, in one call.
    pub async fn aliases(&self, model: &str) -> Result<BTreeMap<String, u64>, MlflowError> {
        let path = format!("/api/2.0/mlflow/registered-models/get?name={}", encode(model));
        let answer: RegisteredModelAnswer = self.call(Method::GET, &path, None).await?;
        answer
            .registered_model
            .aliases
            .into_iter()
            .map(|a| Ok((a.alias, parse_version(&a.version, &path)?)))
            .collect()
    }

    /// Points `alias` at `version` (creating or moving it).
    pub async fn set_alias(&self, model: &str, alias: &str, version: u64) -> Result<(), MlflowError> {
        let body = json!({ "name": model, "alias": alias, "version": version.to_string() });
        self.call::<Value>(Method::POST, "/api/2.0/mlflow/registered-models/alias", Some(body)).await?;
        Ok(())
    }

    /// Sets tag `key` of a version to `value`.
    pub async fn set_version_tag(
        &self,
        model: &str,
        version: u64,
        key: &str,
        value: &str,
    ) -> Result<(), MlflowError> {
        let body = json!({ "name": model, "version": version.to_string(), "key": key, "value": value });
        self.call::<Value>(Method::POST, "/api/2.0/mlflow/model-versions/set-tag", Some(body)).await?;
        Ok(())
    }
}

fn parse_tracking_uri(uri: &str) -> Result<String, MlflowError> {
    let invalid = |reason: &str| MlflowError::InvalidUri { uri: uri.to_owned(), reason: reason.to_owned() };
    let parsed: http::Uri = uri.parse().map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    match parsed.scheme_str() {
        Some("http") => {}
        Some("https") => return Err(invalid("https is not supported by this client (use http)")),
        _ => return Err(invalid("must be http://host:port[/prefix]")),
    }
    let Some(authority) = parsed.authority() else { return Err(invalid("no host")) };
    if authority.as_str().contains('@') {
        return Err(invalid(
            "credentials belong in MLFLOW_TRACKING_USERNAME/PASSWORD or MLFLOW_TRACKING_TOKEN",
        ));
    }
    if parsed.query().is_some() {
        return Err(invalid("a query is not allowed"));
    }
    Ok(format!("http://{authority}{}", parsed.path().trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracking_uris_are_plain_http_with_an_optional_prefix() {
        assert_eq!(parse_tracking_uri("http://127.0.0.1:5000/").unwrap(), "http://127.0.0.1:5000");
        assert_eq!(parse_tracking_uri("http://mlflow:80/prefix/").unwrap(), "http://mlflow:80/prefix");
        for bad in
            ["https://mlflow", "file:///tmp/mlruns", "http://user:pw@mlflow", "mlflow:5000", "http://h?x=1"]
        {
            assert!(matches!(parse_tracking_uri(bad), Err(MlflowError::InvalidUri { .. })), "{bad}");
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output() {
        let secret = "s3cr3t-token";
        let bearer = Credentials::Bearer(secret.into());
        let basic = Credentials::Basic { username: "alice".into(), password: secret.into() };
        for credentials in [bearer, basic] {
            assert!(!format!("{credentials:?}").contains(secret));
            let header = credentials.header().unwrap();
            assert!(header.is_sensitive());
            let client = MlflowClient::with_credentials("http://127.0.0.1:1", credentials).unwrap();
            assert!(!format!("{client:?}").contains(secret), "{client:?}");
        }
        let basic = Credentials::Basic { username: "alice".into(), password: "pw".into() };
        assert_eq!(basic.header().unwrap(), "Basic YWxpY2U6cHc=");
        assert_eq!(Credentials::Bearer("t".into()).header().unwrap(), "Bearer t");
        assert_eq!(Credentials::None.header(), None);
    }
}
