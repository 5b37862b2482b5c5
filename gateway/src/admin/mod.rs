//! The admin plane on `admin_listen`: `/metrics` (open, for Prometheus) and `/admin/*` behind
//! a bearer token (compared in constant time). Without a configured token the admin API is
//! open, which config validation only allows on a loopback address. Every change made here is
//! recorded in the audit history with its actor: the token's fingerprint and the caller's
//! address.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use http::header::{AUTHORIZATION, HeaderValue};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

use crate::audit::{Actor, Cause};
use crate::http::PeerAddr;
use crate::http::response::{self, HttpResponse, error};
use crate::monitor::Monitor;
use crate::protocol::ApiError;
use crate::registry::{Registry, ServedModel};
use crate::reload::{Reloader, RevertError};

/// The largest body an admin call reads (`{"generation": N}`).
const MAX_ADMIN_BODY: usize = 64 * 1024;
/// Records per history page: the default, and the most a caller may ask for.
const HISTORY_PAGE: usize = 50;
const HISTORY_PAGE_MAX: usize = 1000;

pub struct AdminPlane {
    pub registry: Arc<Registry>,
    pub reloader: Arc<Reloader>,
    pub monitor: Arc<Monitor>,
    pub metrics: PrometheusHandle,
    pub token: Option<String>,
}

pub fn admin_service(
    plane: Arc<AdminPlane>,
) -> impl tower::Service<
    Request<Incoming>,
    Response = HttpResponse,
    Error = Infallible,
    Future = impl Send + 'static,
> + Clone
+ Send
+ 'static {
    tower::service_fn(move |req: Request<Incoming>| {
        let plane = plane.clone();
        async move { Ok::<_, Infallible>(handle(&plane, req).await) }
    })
}

async fn handle(plane: &AdminPlane, req: Request<Incoming>) -> HttpResponse {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if path == "/metrics" {
        return metrics(plane);
    }
    if path.starts_with("/admin/") && !authorized(plane.token.as_deref(), req.headers().get(AUTHORIZATION)) {
        let mut response = error(&ApiError::Unauthorized);
        response.headers_mut().insert("www-authenticate", HeaderValue::from_static("Bearer"));
        return response;
    }
    let peer = req.extensions().get::<PeerAddr>().map(|p| p.0);
    let actor = Actor::admin(plane.token.as_deref(), peer);
    match (method, path.as_str()) {
        (Method::GET, "/admin/models") => response::json(StatusCode::OK, &models(&plane.registry)),
        (Method::GET, "/admin/config") => response::json(StatusCode::OK, &routing(&plane.registry)),
        (Method::POST, "/admin/reload") => reload(plane, actor).await,
        (Method::GET, "/admin/history") => history(plane, req.uri().query()),
        (Method::POST, "/admin/revert") => revert(plane, req, actor).await,
        (Method::GET, "/admin/rollouts") => response::json(StatusCode::OK, &plane.monitor.rollouts_json()),
        (Method::POST, p) if p.starts_with("/admin/rollouts/") => rollout_action(plane, p, actor).await,
        (m, p) => error(&ApiError::NoRoute { method: m.to_string(), path: p.to_string() }),
    }
}

/// 200 with what changed, or 400 with every problem; the running routing keeps serving.
async fn reload(plane: &AdminPlane, actor: Actor) -> HttpResponse {
    match plane.reloader.reload(Cause::new("reload", "admin API", actor)).await {
        Ok(report) => response::json(StatusCode::OK, &report),
        Err(refused) => response::json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": refused.to_string(), "problems": refused.problems }),
        ),
    }
}

/// `GET /admin/history?limit=50&before=SEQ`: newest first; `next_before` pages on.
fn history(plane: &AdminPlane, query: Option<&str>) -> HttpResponse {
    let (mut limit, mut before) = (HISTORY_PAGE, None);
    for (key, value) in query.unwrap_or("").split('&').filter_map(|kv| kv.split_once('=')) {
        let parsed = value.parse::<u64>().ok();
        match (key, parsed) {
            ("limit", Some(n)) if (1..=HISTORY_PAGE_MAX as u64).contains(&n) => limit = n as usize,
            ("before", Some(n)) => before = Some(n),
            ("limit" | "before", _) => {
                return error(&ApiError::Malformed(format!(
                    "{key} must be a number (limit: 1..={HISTORY_PAGE_MAX}), got {value:?}"
                )));
            }
            _ => {}
        }
    }
    match plane.registry.history.page(before, limit) {
        Ok(page) => response::json(StatusCode::OK, &page),
        Err(e) => error(&ApiError::Internal(e.to_string())),
    }
}

/// `POST /admin/revert {"generation": N}`: 200 with the reload's report; 404 for a generation
/// the history does not have; 400 when the reverted config is refused now (the running routing
/// keeps serving); 409 when the config is not a file.
async fn revert(plane: &AdminPlane, req: Request<Incoming>, actor: Actor) -> HttpResponse {
    let body = match Limited::new(req.into_body(), MAX_ADMIN_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(&ApiError::Malformed(format!("cannot read the body: {e}"))),
    };
    #[derive(serde::Deserialize)]
    struct Revert {
        generation: u64,
    }
    let generation = match serde_json::from_slice::<Revert>(&body) {
        Ok(r) => r.generation,
        Err(e) => {
            return error(&ApiError::Malformed(format!("expected {{\"generation\": N}}: {e}")));
        }
    };
    match plane.reloader.revert(generation, actor).await {
        Ok(report) => response::json(StatusCode::OK, &report),
        Err(RevertError::Refused(refused)) => response::json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": refused.to_string(), "problems": refused.problems }),
        ),
        Err(e @ RevertError::Unknown(_)) => error(&ApiError::NotFound(e.to_string())),
        Err(e @ RevertError::NotAFile) => error(&ApiError::Conflict(e.to_string())),
        Err(e) => error(&ApiError::Internal(e.to_string())),
    }
}

/// `POST /admin/rollouts/{model}/promote|abort`.
async fn rollout_action(plane: &AdminPlane, path: &str, actor: Actor) -> HttpResponse {
    let rest = path.trim_start_matches("/admin/rollouts/");
    let Some((model, action)) = rest.split_once('/') else {
        return error(&ApiError::NoRoute { method: "POST".into(), path: path.to_string() });
    };
    let shared = plane.monitor.in_fleet() && matches!(action, "promote" | "abort");
    let result = if shared {
        // The fleet's rollout: published for every replica (takes the control lock to apply).
        plane.monitor.operate_shared(&plane.registry, model, action == "promote", actor).await
    } else {
        let _control = plane.registry.control.lock().await;
        local_rollout_action(plane, model, action, path, actor)
    };
    match result {
        Ok(state) => response::json(StatusCode::OK, &state),
        Err(e) => error(&e),
    }
}

fn local_rollout_action(
    plane: &AdminPlane,
    model: &str,
    action: &str,
    path: &str,
    actor: Actor,
) -> Result<serde_json::Value, ApiError> {
    match action {
        "promote" => plane.monitor.promote(&plane.registry, model, actor),
        "abort" => plane.monitor.abort(&plane.registry, model, actor),
        _ => Err(ApiError::NoRoute { method: "POST".into(), path: path.to_string() }),
    }
}

fn metrics(plane: &AdminPlane) -> HttpResponse {
    let text = plane.metrics.render();
    response::bytes(StatusCode::OK, HeaderValue::from_static("text/plain; version=0.0.4"), text)
}

/// True when no token is configured, or the header carries exactly `Bearer <token>`.
fn authorized(token: Option<&str>, header: Option<&HeaderValue>) -> bool {
    let Some(token) = token else { return true };
    let Some(given) = header.and_then(|h| h.as_bytes().strip_prefix(b"Bearer ")) else {
        return false;
    };
    constant_time_eq(given, token.as_bytes())
}

/// Compares without returning early on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn models(registry: &Registry) -> Value {
    let snapshot = registry.snapshot();
    let models: Vec<Value> = snapshot.models.values().map(model_state).collect();
    json!({ "generation": snapshot.generation, "models": models })
}

fn model_state(m: &ServedModel) -> Value {
    let versions: Vec<Value> = m
        .versions
        .values()
        .map(|v| {
            json!({
                "version": v.version,
                "state": "serving",
                "path": v.path().display().to_string(),
                "file_digest": v.key.file.digest_hex(),
                "loaded_at_unix": v.loaded_at.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                "instances": v.worker_count(),
                "queue_depth": v.queue_depth(),
                "max_batch_size": v.max_batch_size(),
                "remote": v.remote().map(|r| json!({
                    "url": r.config.url,
                    "model": r.config.model,
                    "version": r.config.version,
                    "in_flight": r.in_flight(),
                    "max_in_flight": r.config.max_in_flight,
                    "ejected": !r.available(),
                    "ejected_for_ms": r.health.ejected_for().map(|d| d.as_millis() as u64),
                })),
            })
        })
        .collect();
    let mut state =
        json!({ "name": m.name, "ready": m.is_ready(), "failure": m.failure, "versions": versions });
    if let Some(poll) = crate::source::registry::poll_status(&m.name) {
        // A registry-sourced model: what its last poll found (a failure keeps what is loaded).
        state["registry"] = json!(poll);
    }
    state
}

fn routing(registry: &Registry) -> Value {
    let snapshot = registry.snapshot();
    json!({ "generation": snapshot.generation, "models": snapshot.routing_json() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_token_must_match_exactly() {
        let ok = HeaderValue::from_static("Bearer s3cret");
        assert!(authorized(Some("s3cret"), Some(&ok)));
        assert!(!authorized(Some("s3cret"), Some(&HeaderValue::from_static("Bearer s3cre"))));
        assert!(!authorized(Some("s3cret"), Some(&HeaderValue::from_static("s3cret"))));
        assert!(!authorized(Some("s3cret"), None));
        assert!(authorized(None, None));
    }
}
