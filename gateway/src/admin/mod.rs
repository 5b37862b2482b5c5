//! The admin plane on `admin_listen`: `/metrics` (open, for Prometheus) and `/admin/*` behind
//! a bearer token (compared in constant time). Without a configured token the admin API is
//! open, which config validation only allows on a loopback address.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use http::header::{AUTHORIZATION, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};

use crate::http::response::{self, HttpResponse, error};
use crate::monitor::Monitor;
use crate::protocol::ApiError;
use crate::registry::{Registry, ServedModel};
use crate::reload::Reloader;

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
    match (method, path.as_str()) {
        (Method::GET, "/admin/models") => response::json(StatusCode::OK, &models(&plane.registry)),
        (Method::GET, "/admin/config") => response::json(StatusCode::OK, &routing(&plane.registry)),
        (Method::POST, "/admin/reload") => reload(plane).await,
        (Method::GET, "/admin/rollouts") => response::json(StatusCode::OK, &plane.monitor.rollouts_json()),
        (Method::POST, p) if p.starts_with("/admin/rollouts/") => rollout_action(plane, p).await,
        (m, p) => error(&ApiError::NoRoute { method: m.to_string(), path: p.to_string() }),
    }
}

/// 200 with what changed, or 400 with every problem; the running routing keeps serving.
async fn reload(plane: &AdminPlane) -> HttpResponse {
    match plane.reloader.reload("admin API").await {
        Ok(report) => response::json(StatusCode::OK, &report),
        Err(refused) => response::json(
            StatusCode::BAD_REQUEST,
            &json!({ "error": refused.to_string(), "problems": refused.problems }),
        ),
    }
}

/// `POST /admin/rollouts/{model}/promote|abort`.
async fn rollout_action(plane: &AdminPlane, path: &str) -> HttpResponse {
    let rest = path.trim_start_matches("/admin/rollouts/");
    let Some((model, action)) = rest.split_once('/') else {
        return error(&ApiError::NoRoute { method: "POST".into(), path: path.to_string() });
    };
    let shared = plane.monitor.in_fleet() && matches!(action, "promote" | "abort");
    let result = if shared {
        // The fleet's rollout: published for every replica (takes the control lock to apply).
        plane.monitor.operate_shared(&plane.registry, model, action == "promote").await
    } else {
        let _control = plane.registry.control.lock().await;
        local_rollout_action(plane, model, action, path)
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
) -> Result<serde_json::Value, ApiError> {
    match action {
        "promote" => plane.monitor.promote(&plane.registry, model),
        "abort" => plane.monitor.abort(&plane.registry, model),
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
    let models: serde_json::Map<String, Value> = snapshot
        .models
        .values()
        .map(|m| {
            let r = &m.routing;
            let candidates: Vec<Value> =
                r.candidates().map(|(v, p)| json!({ "version": v, "percent": p })).collect();
            let shadows: Vec<Value> =
                r.shadow_shares().map(|(v, p)| json!({ "version": v, "percent": p })).collect();
            let value = json!({
                "primary": r.primary(),
                "primary_percent": r.primary_percent(),
                "candidates": candidates,
                "shadows": shadows,
                "sticky_header": r.sticky_header,
                "pin_header": r.pin_header,
                "versions": m.versions.keys().collect::<Vec<_>>(),
            });
            (m.name.clone(), value)
        })
        .collect();
    json!({ "generation": snapshot.generation, "models": models })
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
