//! The rollout controller: one rollout per model with a `[rollout]` table and one candidate.
//!
//! Every `step_interval_s` it judges the candidate's window (see `analysis`):
//! - **pass**: the next step's weight (a pass at the last step, 100, promotes the candidate to
//!   primary); the window starts over;
//! - **fail**: the candidate's weight goes to 0 at once and stays there until an operator acts
//!   (promote or abort by API, or a config change that starts a new rollout); sticky users of the
//!   candidate return to the primary because its bucket range is empty;
//! - **insufficient data**: hold, say so, keep accumulating the same window.
//!
//! Every change goes through the registry's one snapshot flip (`Registry::reroute`, with the
//! registry's control lock held), so no request is lost. A reload that leaves the candidate and
//! the rollout table unchanged keeps the rollout where it is; one that changes either starts a new
//! rollout at `steps[0]`. Without `[fleet]`, rollout state lives in memory: after a restart, a
//! rollout starts over from `steps[0]` (to keep a promotion, make it the config: `primary =
//! <candidate>`). With `[fleet]`, the state is the fleet's (see `shared`): the judging replica
//! decides, publishes in Redis, and every replica applies what is published.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{Analysis, Monitor, Verdict, judge};
use crate::audit::{Actor, Cause};
use crate::config::{ModelConfig, RolloutConfig};
use crate::protocol::ApiError;
use crate::registry::{Registry, RouteOverride, rollout_key};
use crate::telemetry;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    Progressing,
    InsufficientData,
    RolledBack,
    Promoted,
    Aborted,
}

pub(super) struct Rollout {
    pub(super) key: String,
    /// `key` hashed: names the rollout in the fleet's shared state.
    pub(super) id: String,
    pub(super) primary: u64,
    pub(super) candidate: u64,
    pub(super) config: RolloutConfig,
    pub(super) step: usize,
    pub(super) state: RolloutState,
    pub(super) weight: f64,
    pub(super) started: SystemTime,
    next: Instant,
    pub(super) last: Option<(SystemTime, Analysis)>,
    /// Fleet mode: the published state applied (0: none yet) and the window being counted.
    pub(super) seq: u64,
    pub(super) window: u64,
    /// `monitor.min_segment_requests` (the fairness gate's per-segment minimum), kept current.
    pub(super) min_segment_requests: u64,
}

impl Rollout {
    pub(super) fn route(&self) -> RouteOverride {
        RouteOverride {
            key: self.key.clone(),
            weight: self.weight,
            promoted: self.state == RolloutState::Promoted,
        }
    }

    pub(super) fn active(&self) -> bool {
        matches!(self.state, RolloutState::Progressing | RolloutState::InsufficientData)
    }
}

/// Where a verdict takes a rollout at `step` of `steps`: its state, step and weight, the event
/// it counts, and whether the window starts over.
pub(super) fn advance(
    step: usize,
    steps: &[f64],
    verdict: Verdict,
) -> (RolloutState, usize, f64, &'static str, bool) {
    match verdict {
        Verdict::InsufficientData => (
            RolloutState::InsufficientData,
            step,
            steps.get(step).copied().unwrap_or(0.0),
            "insufficient_data",
            false,
        ),
        Verdict::Fail => (RolloutState::RolledBack, step, 0.0, "rollback", true),
        Verdict::Pass if step + 1 < steps.len() => {
            (RolloutState::Progressing, step + 1, steps[step + 1], "step", true)
        }
        Verdict::Pass => (RolloutState::Promoted, step, 100.0, "promote", true),
    }
}

/// Runs the controller until `shutdown`: adopts rollouts from the current config and judges
/// the ones that are due.
pub async fn run_rollouts(
    monitor: Arc<Monitor>,
    registry: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        {
            let _control = registry.control.lock().await;
            monitor.sync_rollouts(&registry);
            monitor.judge_due(&registry, Instant::now());
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

impl Monitor {
    /// Starts a rollout for every model whose config has one and whose candidate or rollout
    /// table changed; forgets rollouts the config no longer has. Call with `control` held.
    pub fn sync_rollouts(&self, registry: &Registry) {
        let snapshot = registry.snapshot();
        let Ok(mut rollouts) = self.rollouts.lock() else { return };
        let configured: Vec<&ModelConfig> = snapshot
            .config
            .models
            .values()
            .filter(|m| m.rollout.is_some() && !m.routing.candidates.is_empty())
            .collect();
        rollouts.retain(|name, _| {
            let keep = configured.iter().any(|m| &m.name == name);
            if !keep {
                let cause =
                    Cause::new("rollout_end", "the config no longer has the rollout", Actor::Controller);
                registry.reroute(name, None, cause);
            }
            keep
        });
        for m in configured {
            let key = rollout_key(m);
            let min_segment_requests = m.monitor.as_ref().map_or(0, |mo| mo.min_segment_requests);
            if let Some(r) = rollouts.get_mut(&m.name).filter(|r| r.key == key) {
                r.min_segment_requests = min_segment_requests;
                continue;
            }
            let (Some(config), Some(candidate)) = (m.rollout.clone(), m.routing.candidates.first()) else {
                continue;
            };
            let weight = config.steps.first().copied().unwrap_or(0.0);
            let mut rollout = Rollout {
                id: super::shared::rollout_id(&key),
                key,
                primary: m.routing.primary,
                candidate: candidate.version,
                step: 0,
                state: RolloutState::Progressing,
                weight,
                started: SystemTime::now(),
                next: Instant::now() + config.step_interval,
                last: None,
                config,
                seq: 0,
                window: 0,
                min_segment_requests,
            };
            self.take_window(&m.name, rollout.candidate);
            telemetry::register_rollout_events(&m.name);
            // In a fleet, the judging replica counts the start when it publishes it.
            if self.fleet().is_none() {
                telemetry::count_rollout_event(&m.name, "start");
            }
            // A fleet's rollout already under way (this replica restarted, or joined late).
            self.adopt_shared(&m.name, &mut rollout);
            publish_state(&m.name, &rollout);
            tracing::info!(
                model = m.name.as_str(),
                candidate = rollout.candidate,
                weight = rollout.weight,
                "rollout started"
            );
            let cause = Cause::new(
                "rollout_start",
                format!("rollout of candidate {} starts at {}%", rollout.candidate, rollout.weight),
                Actor::Controller,
            )
            .with_details(json!({ "candidate": rollout.candidate, "steps": rollout.config.steps }));
            registry.reroute(&m.name, Some(rollout.route()), cause);
            rollouts.insert(m.name.clone(), rollout);
        }
    }

    /// Judges every active rollout whose interval is over. Call with `control` held.
    pub fn judge_due(&self, registry: &Registry, now: Instant) {
        if self.fleet().is_some() {
            return; // the judging replica judges the fleet's windows (`shared`)
        }
        let Ok(mut rollouts) = self.rollouts.lock() else { return };
        for (model, r) in rollouts.iter_mut().filter(|(_, r)| r.active() && now >= r.next) {
            r.next = now + r.config.step_interval;
            self.judge_one(registry, model, r);
        }
    }

    /// Judges `model`'s rollout now, whatever its timer says (tests and operators). Call with
    /// `control` held.
    pub fn judge_now(&self, registry: &Registry, model: &str) -> Result<Value, ApiError> {
        let Ok(mut rollouts) = self.rollouts.lock() else {
            return Err(ApiError::Internal("rollout state".into()));
        };
        let r = rollouts.get_mut(model).ok_or_else(|| no_rollout(model))?;
        if self.fleet().is_some() {
            return Err(ApiError::Conflict(format!(
                "model '{model}' is rolled out by the fleet: its judging replica judges every step_interval_s"
            )));
        }
        if r.active() {
            self.judge_one(registry, model, r);
        }
        Ok(self.describe(model, r))
    }

    fn judge_one(&self, registry: &Registry, model: &str, r: &mut Rollout) {
        let mut window = self.peek_window(model, r.candidate);
        window.input_drift = self.input_drift(model, r.primary, r.candidate);
        let analysis = judge(&window, &r.config, r.min_segment_requests);
        let (state, step, weight, name, reset) = advance(r.step, &r.config.steps, analysis.verdict);
        if reset {
            self.take_window(model, r.candidate);
        }
        (r.state, r.step, r.weight) = (state, step, weight);
        event(model, r, name, &analysis);
        report(registry, model, r.candidate, name, &analysis.reasons.join("; "));
        let cause = Cause::new(
            history_event(name),
            format!("rollout verdict: {name}, candidate {} at {}%", r.candidate, r.weight),
            Actor::Controller,
        )
        .with_details(json!({ "step": r.step, "weight": r.weight, "analysis": analysis }));
        r.last = Some((SystemTime::now(), analysis));
        publish_state(model, r);
        registry.reroute(model, Some(r.route()), cause);
    }

    /// `POST /admin/rollouts/{model}/promote`: the candidate becomes primary now.
    pub fn promote(&self, registry: &Registry, model: &str, actor: Actor) -> Result<Value, ApiError> {
        self.operate(registry, model, RolloutState::Promoted, "promote", actor)
    }

    /// `POST /admin/rollouts/{model}/abort`: the candidate's weight goes to 0 now.
    pub fn abort(&self, registry: &Registry, model: &str, actor: Actor) -> Result<Value, ApiError> {
        self.operate(registry, model, RolloutState::Aborted, "abort", actor)
    }

    fn operate(
        &self,
        registry: &Registry,
        model: &str,
        state: RolloutState,
        name: &'static str,
        actor: Actor,
    ) -> Result<Value, ApiError> {
        let Ok(mut rollouts) = self.rollouts.lock() else {
            return Err(ApiError::Internal("rollout state".into()));
        };
        let r = rollouts.get_mut(model).ok_or_else(|| no_rollout(model))?;
        if self.fleet().is_some() {
            return Err(ApiError::Internal(
                "a fleet's rollout is operated through Monitor::operate_shared".into(),
            ));
        }
        r.state = state;
        r.weight = if state == RolloutState::Promoted { 100.0 } else { 0.0 };
        telemetry::count_rollout_event(model, name);
        publish_state(model, r);
        tracing::info!(model, candidate = r.candidate, weight = r.weight, "rollout {name} by the operator");
        report(
            registry,
            model,
            r.candidate,
            if name == "abort" { "rollback" } else { name },
            "by the operator",
        );
        let cause = Cause::new(name, format!("rollout {name} by the operator"), actor)
            .with_details(json!({ "candidate": r.candidate, "weight": r.weight }));
        registry.reroute(model, Some(r.route()), cause);
        Ok(self.describe(model, r))
    }

    /// A rollout as `/admin/rollouts` shows it: state, weight, step, the last verdict with the
    /// numbers behind it, and the window being gathered for the next one.
    pub(super) fn describe(&self, model: &str, r: &Rollout) -> Value {
        let unix = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut window = self.window_for_view(model, r);
        window.input_drift = self.input_drift(model, r.primary, r.candidate);
        let window = judge(&window, &r.config, r.min_segment_requests);
        let mut shown = json!({
            "model": model,
            "primary": r.primary,
            "candidate": r.candidate,
            "state": r.state,
            "weight": r.weight,
            "step": r.step,
            "steps": r.config.steps,
            "step_interval_s": r.config.step_interval.as_secs_f64(),
            "started_at_unix": unix(r.started),
            "last_verdict": r.last.as_ref().map(|(at, a)| json!({ "at_unix": unix(*at), "analysis": a })),
            "current_window": window,
        });
        if let Some(fleet) = self.fleet() {
            shown["fleet"] = super::shared::describe(fleet, r);
        }
        shown
    }

    /// `GET /admin/rollouts`.
    pub fn rollouts_json(&self) -> Value {
        let Ok(rollouts) = self.rollouts.lock() else { return json!({}) };
        let map: serde_json::Map<String, Value> =
            rollouts.iter().map(|(m, r)| (m.clone(), self.describe(m, r))).collect();
        json!({ "rollouts": map })
    }
}

/// The history's name for a rollout event (`step` is a rollout step there).
pub(super) fn history_event(event: &str) -> &'static str {
    match event {
        "promote" => "promote",
        "rollback" => "rollback",
        "abort" => "abort",
        "start" => "rollout_start",
        _ => "rollout_step",
    }
}

pub(super) fn publish_state(model: &str, r: &Rollout) {
    let state =
        serde_json::to_value(r.state).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
    telemetry::rollout_state(model, r.candidate, &state, r.step);
}

pub(super) fn event(model: &str, r: &Rollout, name: &str, a: &Analysis) {
    telemetry::count_rollout_event(model, name);
    let shown = |v: Option<f64>| v.map_or_else(|| "none".to_string(), |v| format!("{v:.4}"));
    tracing::info!(
        model,
        candidate = r.candidate,
        event = name,
        weight = r.weight,
        requests = a.requests,
        error_rate = %shown(a.error_rate),
        p99_latency_ms = %shown(a.p99_latency_ms),
        shadow_disagreement = %shown(a.shadow_disagreement),
        false_positive_rate = %shown(a.false_positive_rate),
        labelled_negatives = a.labelled_negatives,
        reasons = %a.reasons.join("; "),
        "rollout {name}"
    );
}

/// A promotion or rollback reported to the model's registry, when its versions come from one.
pub(super) fn report(registry: &Registry, model: &str, candidate: u64, event: &str, summary: &str) {
    if let Some(m) = registry.snapshot().config.models.get(model) {
        crate::source::registry::report_verdict(m, candidate, event, summary.to_string());
    }
}

pub(super) fn no_rollout(model: &str) -> ApiError {
    ApiError::NotFound(format!("model '{model}' has no rollout (configure [models.{model}.rollout])"))
}
