//! The request flow every front end (HTTP, gRPC) shares once it has a whole request:
//! `Inference::serve` picks the version (from the one snapshot the request holds), decodes the
//! request against that version's signature, runs it through the version's queue, encodes the
//! answer, hands a copy to the shadows, and records the request's metrics and log line once,
//! all under the request's one `Deadline`. The front ends only say how to decode and encode
//! their wire format; everything here is protocol-agnostic.
//!
//! A version's time starts when it is picked, which is after the request is whole: a slow
//! upload never counts toward a version's latency, timeouts or rollout gates.
//!
//! Also the lookups both front ends answer metadata, readiness and config requests with, so
//! HTTP and gRPC describe a model identically.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::batching::{Expected, InferError};
use crate::capture::{Capture, Record};
use crate::config::valid_model_name;
use crate::deadline::Deadline;
use crate::monitor::{Monitor, Segment, segment_of};
use crate::protocol::{ApiError, DecodeLimits, InferRequest, OutputChoice, metadata};
use crate::registry::{ServedModel, ServedVersion, ServingSnapshot};
use crate::routing::{Route, RouteReason};
use crate::shadow::{OnOutputs, Shadows};
use crate::telemetry::stats::ModelStats;
use crate::telemetry::{self, Outcome, Role, RolloutComparison};
use crate::tensor::{ModelSignature, Tensor};
use crate::trace::{JobTrace, Trace, Tracer};
use crate::upstream::Failure;

/// Services the flow needs beyond the snapshot.
#[derive(Default)]
pub struct Inference {
    pub shadows: Shadows,
    pub monitor: Arc<Monitor>,
    /// Sampled records of answered requests (`[models.X.capture]`).
    pub capture: Arc<Capture>,
    /// Request traces (`[tracing]`): the front ends begin a request's trace with it.
    pub tracer: Arc<Tracer>,
}

/// The version that answers a request, and why.
pub struct Target {
    pub version: Arc<ServedVersion>,
    pub route: Route,
    started: Instant,
}

/// What the answering version produced.
pub struct Answer {
    pub inputs: Arc<Vec<Tensor>>,
    pub outputs: Arc<Vec<Tensor>>,
}

/// A served request's reply, and the version that answered it, and why.
pub struct Served<R> {
    pub reply: R,
    pub version: u64,
    pub reason: RouteReason,
    /// The routing generation that served it (`x-gateway-generation`).
    pub generation: u64,
}

/// Finds the model; errors here are counted without version labels.
pub fn model<'s>(snapshot: &'s ServingSnapshot, name: &str) -> Result<&'s ServedModel, ApiError> {
    let m = snapshot.model(name).ok_or_else(|| ApiError::UnknownModel(name.to_string()))?;
    if !m.is_ready() {
        return Err(not_ready(m));
    }
    Ok(m)
}

/// A model name as a request gives it: a path segment, `[A-Za-z0-9_.-]+`, never `.` or `..`.
pub fn check_model_name(name: &str) -> Result<(), ApiError> {
    if valid_model_name(name) {
        Ok(())
    } else {
        Err(ApiError::Malformed(format!(
            "invalid model name {name:?}: names match [A-Za-z0-9_.-]+ and are not `.` or `..`"
        )))
    }
}

/// Finds the model, ready or not (metadata and readiness describe unready models too).
pub fn lookup<'s>(snapshot: &'s ServingSnapshot, name: &str) -> Result<&'s ServedModel, ApiError> {
    snapshot.model(name).ok_or_else(|| ApiError::UnknownModel(name.to_string()))
}

/// The version a metadata or config request describes: the one asked for, or the primary.
pub fn described_version(m: &ServedModel, version: Option<u64>) -> Result<&Arc<ServedVersion>, ApiError> {
    if !m.is_ready() {
        return Err(not_ready(m));
    }
    let v = version.unwrap_or_else(|| m.routing.primary());
    m.version(v).ok_or_else(|| ApiError::UnknownVersion { model: m.name.clone(), version: v.to_string() })
}

/// The versions a metadata document lists: the one asked for, or every served one.
pub fn listed_versions(m: &ServedModel, version: Option<u64>) -> Vec<u64> {
    match version {
        Some(v) => vec![v],
        None => m.versions.keys().copied().collect(),
    }
}

/// Triton's statistics of every served version of `m`, or of the one asked for.
pub fn statistics(m: &ServedModel, version: Option<u64>) -> Result<Vec<ModelStats>, ApiError> {
    let versions: Vec<&Arc<ServedVersion>> = match version {
        Some(v) => vec![
            m.version(v)
                .ok_or_else(|| ApiError::UnknownVersion { model: m.name.clone(), version: v.to_string() })?,
        ],
        None => m.versions.values().collect(),
    };
    Ok(versions.into_iter().map(|v| v.metrics.stats.snapshot(&m.name, v.version)).collect())
}

/// Triton's statistics of every served version of every model.
pub fn all_statistics(snapshot: &ServingSnapshot) -> Vec<ModelStats> {
    snapshot.models.values().flat_map(|m| statistics(m, None).unwrap_or_default()).collect()
}

/// Whether the model (and the version asked for, when one is) can take requests.
pub fn is_ready(m: &ServedModel, version: Option<u64>) -> bool {
    m.is_ready() && version.is_none_or(|v| m.versions.contains_key(&v))
}

/// Triton's model configuration of one version (HTTP `/config` and gRPC `ModelConfig`).
pub fn triton_config<'a>(m: &'a ServedModel, v: &'a ServedVersion) -> metadata::ModelConfig<'a> {
    let delay_us = v.key.policy.max_queue_delay.as_micros() as u64;
    metadata::triton_config(&m.name, &v.signature, v.max_batch_size(), delay_us, v.key.instances)
}

pub fn not_ready(m: &ServedModel) -> ApiError {
    ApiError::NotReady {
        model: m.name.clone(),
        reason: m.failure.clone().unwrap_or_else(|| "its primary version is not loaded".to_string()),
    }
}

/// Chooses the answering version and announces the request to it. `pinned` comes from the
/// path or the request itself; `header` looks up a request header (HTTP) or metadata entry
/// (gRPC) by lower-case name, for the model's pin and sticky headers.
pub fn pick<'h>(
    m: &ServedModel,
    pinned: Option<u64>,
    header: impl Fn(&str) -> Option<&'h [u8]>,
) -> Result<(Target, Expected), ApiError> {
    let started = Instant::now();
    let pinned = match pinned {
        Some(v) => Some(v),
        None => pinned_by_header(m, &header)?,
    };
    let route = match pinned {
        Some(version) => Route { version, role: Role::Pinned, reason: RouteReason::Pinned },
        None => {
            let key = m.routing.sticky_header.as_deref().and_then(&header);
            m.routing.pick(key, fastrand::f64())
        }
    };
    let mut version = m.version(route.version).cloned().ok_or_else(|| ApiError::UnknownVersion {
        model: m.name.clone(),
        version: route.version.to_string(),
    })?;
    let mut route = route;
    // An ejected remote candidate's share goes to the primary; a pinned call goes where it asked.
    if route.role == Role::Candidate
        && !version.available()
        && let Some(primary) = m.primary()
    {
        route = fallback_route(primary);
        version = primary.clone();
    }
    let expected = version.expect();
    Ok((Target { version, route, started }, expected))
}

fn pinned_by_header<'h>(
    m: &ServedModel,
    header: &impl Fn(&str) -> Option<&'h [u8]>,
) -> Result<Option<u64>, ApiError> {
    let Some(name) = m.routing.pin_header.as_deref() else { return Ok(None) };
    let Some(value) = header(name) else { return Ok(None) };
    let parsed =
        std::str::from_utf8(value).ok().and_then(|s| s.trim().parse::<u64>().ok()).filter(|&v| v > 0);
    parsed.map(Some).ok_or_else(|| {
        ApiError::Malformed(format!(
            "header {name} must be a positive version number, got {:?}",
            String::from_utf8_lossy(value)
        ))
    })
}

impl Inference {
    /// Serves one whole request for `model`: pick → `decode` (against the picked version's
    /// signature, within the request's limits) → queue → `encode` → shadows and monitoring,
    /// bounded by `deadline` and counted once. `header` looks up request headers (HTTP) or
    /// metadata (gRPC); a request's `id`, else its `x-request-id`, keys its prediction for a
    /// later label. `trace` (begun by the front end) is filled in: the version, the run, the
    /// shadows, the outcome; the front end ends it with its answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn serve<'h, R>(
        &self,
        snapshot: &Arc<ServingSnapshot>,
        model: &str,
        pinned: Option<u64>,
        header: impl Fn(&str) -> Option<&'h [u8]>,
        deadline: Deadline,
        trace: &mut Trace,
        tenant: Option<&str>,
        decode: impl FnOnce(&ModelSignature, &DecodeLimits) -> Result<InferRequest, ApiError>,
        encode: impl FnOnce(&ServedVersion, Option<&str>, &[Tensor], &[OutputChoice]) -> Result<R, ApiError>,
    ) -> Result<Served<R>, ApiError> {
        let picked = self::model(snapshot, model).and_then(|m| Ok((m, pick(m, pinned, &header)?)));
        let (m, (target, expected)) = match picked {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(model, request_id = logged_id(&header), error = %e, "refused");
                count_refused(snapshot, model, &e);
                let outcome = outcome_of(&e);
                trace.finished(outcome.as_str(), Some(&e), server_side(outcome));
                return Err(e);
            }
        };
        let (role, reason) = (target.route.role.as_str(), target.route.reason.as_str());
        trace.routed(&m.name, target.version.version, role, reason, snapshot.generation);
        let mut target = target;
        let work = async {
            let target = &mut target;
            let version = &target.version;
            let server = &snapshot.config.server;
            let limits = DecodeLimits::for_request(server.max_request_bytes, version.max_batch_size());
            let InferRequest { id, inputs, outputs: chosen } = decode(&version.signature, &limits)?;
            let inputs = Arc::new(inputs);
            let answer = match self.run(target, inputs.clone(), deadline, expected, trace).await {
                Err(ApiError::InputRefused(reason)) if target.route.role != Role::Primary => {
                    Err(refusal_by_non_primary(m, target, inputs, deadline, reason).await)
                }
                Err(e) if falls_back(target, &e) => {
                    // A remote candidate failed: it is charged with the failure (its rollout
                    // window and error rate see it), and the primary answers the client.
                    self.finish(target, outcome_of(&e));
                    trace.set("gateway.fallback", e.to_string());
                    let Some(primary) = m.primary().cloned() else { return Err(e) };
                    let route = fallback_route(&primary);
                    let expected = primary.expect();
                    *target = Target { version: primary, route, started: Instant::now() };
                    self.run(target, inputs, deadline, expected, trace).await
                }
                other => other,
            }?;
            let version = &target.version;
            let reply = encode(version, id.as_deref(), &answer.outputs, &chosen)?;
            let request_id = id.as_deref().or_else(|| std::str::from_utf8(header("x-request-id")?).ok());
            let timeout = server.request_timeout;
            let segment = request_segment(snapshot, &m.name, &header);
            let job = trace.job();
            let (job, seen) = (job.as_ref(), Seen { request_id, tenant, segment });
            self.after_answer(snapshot, m, target, &answer, &seen, timeout, job);
            Ok(reply)
        };
        let result = deadline.bound(work).await;
        let outcome = result.as_ref().map_or_else(outcome_of, |_| Outcome::Ok);
        self.finish(&target, outcome);
        let error = result.as_ref().err().map(|e| e as &dyn std::fmt::Display);
        trace.finished(outcome.as_str(), error, server_side(outcome));
        if let Err(e) = &result {
            let (version, request_id) = (target.version.version, logged_id(&header));
            if outcome == Outcome::ServerError {
                tracing::warn!(model, version, request_id, error = %e, "inference failed");
            } else {
                tracing::debug!(model, version, request_id, error = %e, "refused");
            }
        }
        let (version, reason, generation) =
            (target.version.version, target.route.reason, snapshot.generation);
        result.map(|reply| Served { reply, version, reason, generation })
    }

    /// Runs validated inputs (in signature order) on the target version; a sampled request's
    /// trace gets its queue and run spans and links the run.
    async fn run(
        &self,
        target: &Target,
        inputs: Arc<Vec<Tensor>>,
        deadline: Deadline,
        expected: Expected,
        trace: &mut Trace,
    ) -> Result<Answer, ApiError> {
        let done = target
            .version
            .infer_traced(inputs.clone(), deadline.at(), expected, trace.job())
            .await
            .map_err(|e| infer_error(e, &target.version, &deadline))?;
        trace.ran(done.run_span);
        target.version.metrics.role(target.route.role).queue.record(done.queue_time.as_secs_f64());
        target.version.metrics.stats.record_answered(done.queue_time, done.inference_time);
        Ok(Answer { inputs, outputs: Arc::new(done.outputs) })
    }

    /// Once the answer is on its way: record the prediction (kept under `request_id` for a
    /// later label), offer it to the model's capture (sampled, never blocking), mirror the
    /// request to the shadows (never for pinned calls), and during a rollout compare a
    /// candidate's answer with the primary's. `trace` (sampled requests) gets the shadows' spans.
    #[allow(clippy::too_many_arguments)]
    fn after_answer(
        &self,
        snapshot: &Arc<ServingSnapshot>,
        m: &ServedModel,
        target: &Target,
        answer: &Answer,
        seen: &Seen<'_>,
        shadow_timeout: Duration,
        trace: Option<&JobTrace>,
    ) {
        let Seen { request_id, tenant, segment } = *seen;
        let (model, version, role) = (m.name.as_str(), target.version.version, target.route.role);
        self.monitor.observe(snapshot, model, version, role, request_id, &answer.outputs, segment);
        self.monitor.observe_inputs(snapshot, model, version, role, &answer.inputs);
        self.capture.offer(snapshot, model, || captured(snapshot, target, answer, request_id, tenant));
        if role != Role::Pinned && m.routing.has_shadows() {
            let (monitor, snapshot, name) = (self.monitor.clone(), snapshot.clone(), m.name.clone());
            let on_outputs: OnOutputs = Arc::new(move |shadow_version: u64, outputs: &[Tensor]| {
                monitor.observe(&snapshot, &name, shadow_version, Role::Shadow, None, outputs, segment);
            });
            self.shadows.mirror(m, &answer.inputs, &answer.outputs, shadow_timeout, role, &on_outputs, trace);
        }
        if role == Role::Candidate {
            self.compare_with_primary(snapshot, m, target, answer, shadow_timeout);
        }
    }

    /// Rollouts gating on disagreement: run the primary on the candidate's inputs and count
    /// whether the two agree on the monitored output (every output without a monitor).
    fn compare_with_primary(
        &self,
        snapshot: &ServingSnapshot,
        m: &ServedModel,
        target: &Target,
        answer: &Answer,
        timeout: Duration,
    ) {
        let Some(config) = snapshot.config.models.get(&m.name) else { return };
        if config.rollout.as_ref().is_none_or(|r| r.max_shadow_disagreement.is_none()) {
            return;
        }
        let Some(primary) = m.primary().cloned() else { return };
        let output = config.monitor.as_ref().map(|mc| mc.output.clone());
        let (monitor, name, candidate) = (self.monitor.clone(), m.name.clone(), target.version.clone());
        let started = self.shadows.compare(m, primary, &answer.inputs, &answer.outputs, output, timeout, {
            let candidate = candidate.clone();
            move |agreed| {
                let result = if agreed { RolloutComparison::Agree } else { RolloutComparison::Disagree };
                candidate.metrics.count_rollout_comparison(result);
                monitor.record_comparison(&name, candidate.version, agreed);
            }
        });
        if !started {
            candidate.metrics.count_rollout_comparison(RolloutComparison::Dropped);
        }
    }

    /// Records the request's outcome and duration under its version and role (and in the
    /// candidate's rollout window).
    fn finish(&self, target: &Target, outcome: Outcome) {
        let elapsed = target.started.elapsed();
        target.version.metrics.role(target.route.role).finish(outcome, elapsed);
        target.version.metrics.stats.record_request(outcome == Outcome::Ok, elapsed);
        self.monitor.record_request(
            &target.version.model,
            target.version.version,
            target.route.role,
            outcome,
            elapsed,
        );
    }
}

/// The capture record of an answered request (built only when it is sampled): `Arc`s and small
/// values; the writer thread encodes it.
/// What the request told about itself that the post-answer work records.
#[derive(Clone, Copy)]
struct Seen<'a> {
    request_id: Option<&'a str>,
    /// The tenant it was admitted as (`[auth]`).
    tenant: Option<&'a str>,
    segment: Option<Segment>,
}

fn captured(
    snapshot: &ServingSnapshot,
    target: &Target,
    answer: &Answer,
    request_id: Option<&str>,
    tenant: Option<&str>,
) -> Record {
    let since_epoch = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    Record {
        time_us: u64::try_from(since_epoch.as_micros()).unwrap_or(u64::MAX),
        model: target.version.model.clone(),
        version: target.version.version,
        role: target.route.role.as_str().into(),
        reason: target.route.reason.as_str().into(),
        generation: snapshot.generation,
        request_id: request_id.map(str::to_string),
        tenant: tenant.map(str::to_string),
        latency_us: u64::try_from(target.started.elapsed().as_micros()).unwrap_or(u64::MAX),
        inputs: answer.inputs.clone(),
        outputs: answer.outputs.clone(),
    }
}

/// A version other than the primary (a candidate, or one pinned) refused a request's inputs:
/// the client's fault only if the primary refuses them too. The primary runs the same inputs
/// (within the request's deadline); when it accepts them the version is broken, not the
/// request: a server error, which counts toward the rollout's `max_error_rate`. A client
/// therefore cannot roll a candidate back with bad inputs (the primary refuses them as well),
/// and a version that refuses good ones is caught. ONNX Runtime gives the same code for an
/// index out of range whether the index came from the request or from the graph itself, so
/// this comparison is what tells the two apart.
async fn refusal_by_non_primary(
    m: &ServedModel,
    target: &Target,
    inputs: Arc<Vec<Tensor>>,
    deadline: Deadline,
    reason: String,
) -> ApiError {
    let Some(primary) = m.primary().filter(|p| p.version != target.version.version) else {
        return ApiError::InputRefused(reason);
    };
    let run = primary.infer(inputs, deadline.at(), primary.expect());
    match deadline.bound(run).await {
        Ok(_) => ApiError::InferenceFailed(format!(
            "{reason}; its primary (version {}) accepts them, so version {} is at fault, not the request",
            primary.version, target.version.version
        )),
        Err(_) => ApiError::InputRefused(reason),
    }
}

/// The primary answering for a remote candidate that was ejected or failed.
fn fallback_route(primary: &ServedVersion) -> Route {
    Route { version: primary.version, role: Role::Primary, reason: RouteReason::Fallback }
}

/// Whether a failed request is retried on the primary: a candidate drawn by the split (never a
/// pinned call) whose remote could not answer. A local candidate's failure is its own answer.
fn falls_back(target: &Target, e: &ApiError) -> bool {
    target.route.role == Role::Candidate
        && target.version.remote().is_some()
        && matches!(e, ApiError::BadGateway(_) | ApiError::TimedOut(_) | ApiError::Overloaded(_))
}

/// The request's segment (`monitor.segment_header`), when the model counts segments: resolved
/// once per request, without allocating.
fn request_segment<'h>(
    snapshot: &ServingSnapshot,
    model: &str,
    header: &impl Fn(&str) -> Option<&'h [u8]>,
) -> Option<Segment> {
    let cfg = snapshot.config.models.get(model)?.monitor.as_ref()?;
    segment_of(cfg, header)
}

/// The request id for a log line (`x-request-id`: the client's own, or the one the front end
/// made); empty when there is none.
fn logged_id<'h>(header: &impl Fn(&str) -> Option<&'h [u8]>) -> &'h str {
    header(crate::trace::REQUEST_ID).and_then(|v| std::str::from_utf8(v).ok()).unwrap_or("")
}

/// Outcomes that are the server's side of the table (5xx): they mark a trace span as failed.
fn server_side(outcome: Outcome) -> bool {
    matches!(outcome, Outcome::ServerError | Outcome::Timeout | Outcome::Rejected)
}

/// Counts a request that never reached a version.
pub fn count_refused(snapshot: &ServingSnapshot, model: &str, e: &ApiError) {
    telemetry::count_unrouted(snapshot.model(model).map(|m| m.name.as_str()), outcome_of(e));
}

pub(crate) fn infer_error(e: InferError, version: &ServedVersion, deadline: &Deadline) -> ApiError {
    match e {
        InferError::QueueFull { capacity } => ApiError::Overloaded(format!(
            "model '{}' version {} has {capacity} requests waiting (max_queue); retry shortly",
            version.model, version.version
        )),
        InferError::TimedOut => deadline.error(),
        InferError::Refused { reason } => ApiError::InputRefused(format!(
            "model '{}' version {} refused the inputs: {reason}",
            version.model, version.version
        )),
        InferError::Failed { reason } => ApiError::InferenceFailed(reason),
        InferError::Closed => ApiError::ShuttingDown,
        InferError::Upstream { failure, reason } => match failure {
            Failure::Unreachable | Failure::Failed => ApiError::BadGateway(reason),
            Failure::TimedOut => ApiError::TimedOut(reason),
            Failure::Busy => ApiError::Overloaded(reason),
        },
    }
}

/// How each error is counted in `gateway_requests_total{outcome}`.
pub fn outcome_of(e: &ApiError) -> Outcome {
    match e {
        ApiError::Malformed(_)
        | ApiError::UnknownModel(_)
        | ApiError::UnknownVersion { .. }
        | ApiError::NoRoute { .. }
        | ApiError::MethodNotAllowed { .. }
        | ApiError::TooLarge { .. }
        | ApiError::UnsupportedEncoding(_)
        | ApiError::Mismatch(_)
        | ApiError::NotFound(_)
        | ApiError::Gone(_)
        | ApiError::Conflict(_)
        | ApiError::InputRefused(_)
        | ApiError::Unauthorized
        | ApiError::Unauthenticated(_)
        | ApiError::Forbidden(_) => Outcome::ClientError,
        ApiError::TooManyRequests { .. } => Outcome::Rejected,
        ApiError::NotReady { .. } | ApiError::Overloaded(_) | ApiError::ShuttingDown => Outcome::Rejected,
        ApiError::TimedOut(_) => Outcome::Timeout,
        ApiError::InferenceFailed(_)
        | ApiError::BadGateway(_)
        | ApiError::Internal(_)
        | ApiError::ReplyTooLarge { .. } => Outcome::ServerError,
    }
}
