//! The V2 REST paths, parsed into an `Endpoint`; wrong method → 405, anything else → 404.

use http::Method;

use crate::inference;
use crate::protocol::{ApiError, validate};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint<'a> {
    ServerMetadata,
    Live,
    Ready,
    Feedback,
    /// Triton's statistics of every model (`/v2/models/stats`).
    AllStats,
    /// Triton's model repository extension.
    RepositoryIndex,
    RepositoryLoad(&'a str),
    RepositoryUnload(&'a str),
    Model {
        model: &'a str,
        version: Option<u64>,
        action: ModelAction,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelAction {
    Metadata,
    Ready,
    Config,
    Stats,
    Infer,
    /// Per-feature attributions by occlusion (`crate::explain`).
    Explain,
}

pub fn route<'a>(method: &Method, path: &'a str) -> Result<Endpoint<'a>, ApiError> {
    let segments: Vec<&str> = path.strip_prefix('/').unwrap_or(path).split('/').collect();
    let (endpoint, expected) = match segments.as_slice() {
        ["v2"] => (Endpoint::ServerMetadata, Method::GET),
        ["v2", "health", "live"] => (Endpoint::Live, Method::GET),
        ["v2", "health", "ready"] => (Endpoint::Ready, Method::GET),
        ["v2", "feedback"] => (Endpoint::Feedback, Method::POST),
        // Triton's path; it shadows the metadata of a model named "stats", as in Triton.
        ["v2", "models", "stats"] => (Endpoint::AllStats, Method::GET),
        ["v2", "models", model, rest @ ..] => model_endpoint(model, rest, method, path)?,
        ["v2", "repository", "index"] => (Endpoint::RepositoryIndex, Method::POST),
        ["v2", "repository", "models", model, "load"] => (Endpoint::RepositoryLoad(model), Method::POST),
        ["v2", "repository", "models", model, "unload"] => (Endpoint::RepositoryUnload(model), Method::POST),
        _ => return Err(no_route(method, path)),
    };
    let ok = *method == expected || (expected == Method::GET && *method == Method::HEAD);
    if !ok {
        let allowed = if expected == Method::GET { "GET, HEAD" } else { "POST" };
        return Err(ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
            allowed,
        });
    }
    Ok(endpoint)
}

fn model_endpoint<'a>(
    model: &'a str,
    rest: &[&'a str],
    method: &Method,
    path: &str,
) -> Result<(Endpoint<'a>, Method), ApiError> {
    let (version, action) = match rest {
        ["versions", v, action @ ..] => (Some(*v), action),
        action => (None, action),
    };
    let (action, expected) = match action {
        [] => (ModelAction::Metadata, Method::GET),
        ["ready"] => (ModelAction::Ready, Method::GET),
        ["config"] => (ModelAction::Config, Method::GET),
        ["stats"] => (ModelAction::Stats, Method::GET),
        ["infer"] => (ModelAction::Infer, Method::POST),
        ["explain"] => (ModelAction::Explain, Method::POST),
        _ => return Err(no_route(method, path)),
    };
    inference::check_model_name(model)?;
    let version = version.map(validate::parse_version).transpose()?;
    Ok((Endpoint::Model { model, version, action }, expected))
}

fn no_route(method: &Method, path: &str) -> ApiError {
    ApiError::NoRoute { method: method.to_string(), path: path.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_v2_path_parses() {
        let get = Method::GET;
        assert_eq!(route(&get, "/v2").unwrap(), Endpoint::ServerMetadata);
        assert_eq!(route(&get, "/v2/health/ready").unwrap(), Endpoint::Ready);
        assert_eq!(
            route(&Method::POST, "/v2/models/m/versions/3/infer").unwrap(),
            Endpoint::Model { model: "m", version: Some(3), action: ModelAction::Infer }
        );
        assert_eq!(
            route(&get, "/v2/models/m/config").unwrap(),
            Endpoint::Model { model: "m", version: None, action: ModelAction::Config }
        );
        assert_eq!(route(&get, "/v2/models/stats").unwrap(), Endpoint::AllStats);
        assert_eq!(
            route(&Method::POST, "/v2/models/m/versions/2/explain").unwrap(),
            Endpoint::Model { model: "m", version: Some(2), action: ModelAction::Explain }
        );
        assert_eq!(
            route(&get, "/v2/models/m/versions/2/stats").unwrap(),
            Endpoint::Model { model: "m", version: Some(2), action: ModelAction::Stats }
        );
    }

    #[test]
    fn hostile_paths_are_refused() {
        let get = Method::GET;
        assert_eq!(route(&get, "/v2/models/../ready").unwrap_err().status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(route(&get, "/v2/models/a%2Fb").unwrap_err().status(), http::StatusCode::BAD_REQUEST);
        assert_eq!(
            route(&get, "/v2/models/m/versions/x").unwrap_err().status(),
            http::StatusCode::BAD_REQUEST
        );
        assert_eq!(route(&get, "/v3").unwrap_err().status(), http::StatusCode::NOT_FOUND);
        assert_eq!(
            route(&get, "/v2/models/m/infer").unwrap_err().status(),
            http::StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
