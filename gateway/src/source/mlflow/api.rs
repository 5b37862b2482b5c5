//! The JSON answers of MLflow's REST API (3.x) that the client reads, as serde shapes, and how an
//! error answer becomes an [`MlflowError`]. Only the fields the client uses are named; serde
//! skips the rest, so a newer server's extra fields change nothing.

use http::StatusCode;
use serde::Deserialize;
use serde_json::Value;

use super::{MlflowError, ModelVersion, VersionStatus};

#[derive(Debug, Deserialize)]
pub(super) struct VersionAnswer {
    pub(super) model_version: RawVersion,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawVersion {
    name: String,
    version: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    run_id: Option<String>,
    #[serde(default)]
    model_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    tags: Vec<RawTag>,
}

#[derive(Debug, Deserialize)]
struct RawTag {
    key: String,
    #[serde(default)]
    value: String,
}

impl RawVersion {
    pub(super) fn into_version(self, what: &str) -> Result<ModelVersion, MlflowError> {
        let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
        // MLflow 3.x leaves `model_id` out of the answer even for versions of logged models; the
        // source then names the logged model.
        let model_id = non_empty(self.model_id).or_else(|| logged_model_id(&self.source));
        Ok(ModelVersion {
            version: parse_version(&self.version, what)?,
            name: self.name,
            source: self.source,
            run_id: non_empty(self.run_id),
            model_id,
            status: VersionStatus::parse(self.status.as_deref().unwrap_or("READY")),
            aliases: self.aliases,
            tags: self.tags.into_iter().map(|t| (t.key, t.value)).collect(),
        })
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct RegisteredModelAnswer {
    pub(super) registered_model: RawRegisteredModel,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRegisteredModel {
    #[serde(default)]
    pub(super) aliases: Vec<RawAlias>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawAlias {
    pub(super) alias: String,
    pub(super) version: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct LoggedModelAnswer {
    pub(super) model: RawLoggedModel,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawLoggedModel {
    pub(super) info: LoggedModelInfo,
}

/// The REST field is `artifact_uri` (the Python entity calls it `artifact_location`).
#[derive(Debug, Deserialize)]
pub(super) struct LoggedModelInfo {
    pub(super) artifact_uri: String,
    #[serde(default)]
    pub(super) source_run_id: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct SearchAnswer {
    #[serde(default)]
    pub(super) models: Vec<RawLoggedModel>,
    #[serde(default)]
    pub(super) next_page_token: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct RunAnswer {
    pub(super) run: RawRun,
}

#[derive(Debug, Deserialize)]
pub(super) struct RawRun {
    pub(super) info: RunInfo,
}

#[derive(Debug, Deserialize)]
pub(super) struct RunInfo {
    pub(super) artifact_uri: String,
    pub(super) experiment_id: String,
}

/// The proxy answers `{}` (no `files`) for a missing path and for a path that is a file.
#[derive(Debug, Deserialize)]
pub(super) struct ListAnswer {
    #[serde(default)]
    pub(super) files: Vec<FileEntry>,
}

#[derive(Debug, Clone, Deserialize)]
pub(super) struct FileEntry {
    pub(super) path: String,
    #[serde(default)]
    pub(super) is_dir: bool,
    /// An int64: a JSON number from MLflow, a string from strict proto3 JSON writers.
    #[serde(default, deserialize_with = "lenient_u64")]
    pub(super) file_size: Option<u64>,
}

fn lenient_u64<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    })
}

#[derive(Debug, Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error_code: String,
    #[serde(default)]
    message: String,
}

pub(super) fn answer_error(what: &str, status: StatusCode, body: &[u8]) -> MlflowError {
    let parsed: Option<ErrorAnswer> = serde_json::from_slice(body).ok();
    let (error_code, message) = match parsed {
        Some(e) => (e.error_code, e.message),
        None => (String::new(), String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned()),
    };
    if status == StatusCode::NOT_FOUND || error_code == "RESOURCE_DOES_NOT_EXIST" {
        return MlflowError::NotFound { what: what.to_owned(), message };
    }
    MlflowError::Status { what: what.to_owned(), status: status.as_u16(), error_code, message }
}

pub(super) fn parse_version(version: &str, what: &str) -> Result<u64, MlflowError> {
    version.parse().map_err(|_| MlflowError::BadAnswer {
        what: what.to_owned(),
        reason: format!("version {version:?} is not a number"),
    })
}

/// `models:/<model_id>`: one path segment, no `@alias`; `models:/<name>/<version>` is a
/// registry reference, not a logged model.
fn logged_model_id(source: &str) -> Option<String> {
    let id = source.strip_prefix("models:/")?.trim_matches('/');
    (!id.is_empty() && !id.contains(['/', '@'])).then(|| id.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_models_source_with_one_segment_is_a_logged_model() {
        assert_eq!(logged_model_id("models:/m-98c2").as_deref(), Some("m-98c2"));
        assert_eq!(logged_model_id("models:/credit/3"), None);
        assert_eq!(logged_model_id("models:/credit@champion"), None);
        assert_eq!(logged_model_id("runs:/abc/model"), None);
    }

    #[test]
    fn error_answers_become_typed_errors() {
        let body = br#"{"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "Registered Model with name=x not found"}"#;
        let err = answer_error("GET x", StatusCode::NOT_FOUND, body);
        assert!(matches!(&err, MlflowError::NotFound { message, .. } if message.contains("name=x")), "{err}");
        assert!(!err.is_transient());
        let body = br#"{"error_code": "INTERNAL_ERROR", "message": "boom"}"#;
        let err = answer_error("GET x", StatusCode::INTERNAL_SERVER_ERROR, body);
        assert!(
            matches!(&err, MlflowError::Status { status: 500, error_code, .. } if error_code == "INTERNAL_ERROR")
        );
        assert!(err.is_transient());
        let err = answer_error("GET x", StatusCode::BAD_GATEWAY, b"<html>proxy</html>");
        assert!(
            matches!(&err, MlflowError::Status { status: 502, message, .. } if message.contains("proxy"))
        );
    }

    #[test]
    fn versions_parse_from_mlflow_3_answers() {
        let answer = r#"{"model_version": {"name": "credit", "version": "2", "source": "models:/m-500b",
            "run_id": "3d75", "status": "READY", "tags": [{"key": "k", "value": "v"}], "run_link": "",
            "aliases": ["challenger"]}}"#;
        let raw: VersionAnswer = serde_json::from_str(answer).unwrap();
        let v = raw.model_version.into_version("GET").unwrap();
        assert_eq!(v.version, 2);
        assert_eq!(v.model_id.as_deref(), Some("m-500b"));
        assert_eq!(v.run_id.as_deref(), Some("3d75"));
        assert_eq!(v.status, VersionStatus::Ready);
        assert_eq!(v.tags.get("k").map(String::as_str), Some("v"));
        let listing: ListAnswer =
            serde_json::from_str(r#"{"files": [{"path": "a", "is_dir": false, "file_size": "12"}, {"path": "d", "is_dir": true}]}"#)
                .unwrap();
        assert_eq!(listing.files[0].file_size, Some(12));
        assert_eq!(listing.files[1].file_size, None);
        assert!(serde_json::from_str::<ListAnswer>("{}").unwrap().files.is_empty());
    }
}
