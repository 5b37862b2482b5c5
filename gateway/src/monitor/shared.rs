//! The monitor's fleet mode (`[fleet]`): what a replica shares through `fleet`, and how it
//! applies what the fleet decided.
//!
//! - Predictions kept for labels also go to Redis (through the fleet's outbox), so a label
//!   posted to any replica joins. The local store still answers what Redis has not received yet.
//! - Every `TICK` each replica adds its candidate-window counts to the fleet's window, named by
//!   the rollout and its window number: a verdict that starts a new window starts a new name.
//! - One replica, the lease holder, judges: when a rollout's `next_judge` is due it reads the
//!   fleet's window, decides with the same `judge` and `advance` as a lone replica, and
//!   publishes the rollout's state under the lease. Every replica, the judge included, applies
//!   only what is published, within a `TICK` of it; so one verdict is one event fleet-wide.
//! - Without Redis: the routing in force stays, window counts wait in memory (fixed-size
//!   counters), nothing is judged, and `/admin/rollouts` says the rollout is held and why.
//!   A judge that restarts, or dies and is replaced, resumes from what is published.
//!
//! What is not shared: prediction metrics and drift (each replica exports its own; Prometheus
//! adds them up), shadow budgets, and the routing config (every replica reads its own copy of
//! the same file, a ConfigMap). A replica whose config names another rollout than the
//! published one keeps its own until its config catches up.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::controller::{Rollout, RolloutState, advance, no_rollout, publish_state, report};
use super::feedback::Prediction;
use super::{Analysis, FeedbackReply, Monitor, WindowStats, judge};
use crate::audit::{Actor, Cause};
use crate::fleet::{Fence, Fleet, Published, Taken, now_ms};
use crate::protocol::ApiError;
use crate::registry::{Registry, ServingSnapshot};
use crate::telemetry::{self, Role};

/// How often a replica shares its counts, reads the fleet's state, and (when judging) judges.
pub const TICK: Duration = Duration::from_millis(250);

/// A rollout's state as the fleet publishes it (document `rollout:{model}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Doc {
    /// `rollout_id` of the rollout (config) this state belongs to.
    id: String,
    candidate: u64,
    step: usize,
    state: RolloutState,
    weight: f64,
    /// The window being counted: `window:{model}:{id}:{window}`.
    window: u64,
    started_unix_ms: u64,
    next_judge_unix_ms: u64,
    last: Option<(u64, Analysis)>,
    /// The replica that wrote it.
    by: String,
}

/// What this replica last read of a rollout's shared state.
#[derive(Debug, Default)]
pub(super) struct View {
    seq: u64,
    doc: Option<Doc>,
    window: WindowStats,
}

/// A rollout's identity in the fleet: its key (candidate and rollout table) hashed, so that a
/// config change names a new rollout. FNV-1a: the same on every replica and every build.
pub(super) fn rollout_id(key: &str) -> String {
    let hash =
        key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

fn doc_name(model: &str) -> String {
    format!("rollout:{model}")
}

fn window_name(model: &str, id: &str, window: u64) -> String {
    format!("window:{model}:{id}:{window}")
}

/// The prediction as the fleet stores it: `version|role|classes` (`-` for a row without one).
pub(super) fn encode_prediction(p: &Prediction) -> String {
    let role = match p.role {
        Role::Primary => 'p',
        Role::Candidate => 'c',
        Role::Shadow => 's',
        Role::Pinned => 'n',
    };
    let classes: Vec<String> =
        p.classes.iter().map(|c| c.map_or_else(|| "-".to_string(), |c| c.to_string())).collect();
    format!("{}|{role}|{}", p.version, classes.join(","))
}

pub(super) fn decode_prediction(s: &str) -> Option<Prediction> {
    let mut parts = s.splitn(3, '|');
    let version = parts.next()?.parse().ok()?;
    let role = match parts.next()? {
        "p" => Role::Primary,
        "c" => Role::Candidate,
        "s" => Role::Shadow,
        "n" => Role::Pinned,
        _ => return None,
    };
    let classes = parts.next()?;
    let classes = if classes.is_empty() {
        Vec::new()
    } else {
        classes
            .split(',')
            .map(|c| if c == "-" { Some(None) } else { c.parse().ok().map(Some) })
            .collect::<Option<_>>()?
    };
    Some(Prediction { version, role, classes })
}

/// A local rollout, as much of it as sharing needs (read under the lock, used without it).
struct Brief {
    model: String,
    id: String,
    /// The primary too: its traffic's input drift holds the rollout like the candidate's.
    primary: u64,
    candidate: u64,
    config: crate::config::RolloutConfig,
    min_segment_requests: u64,
    seq: u64,
    window: u64,
    active: bool,
    /// The state this replica applied last, when it applied one.
    applied: Option<Doc>,
}

/// Shares and applies every `TICK` until shutdown.
pub async fn run_fleet(
    monitor: Arc<Monitor>,
    registry: Arc<Registry>,
    fleet: Arc<Fleet>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        monitor.share_once(&registry, &fleet).await;
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = shutdown.changed() => return,
        }
    }
}

impl Monitor {
    /// Sets the fleet this monitor shares through (once, at start).
    pub fn set_fleet(&self, fleet: Arc<Fleet>) {
        let _ = self.fleet.set(fleet);
    }

    /// True when rollouts and labels are the fleet's (`[fleet]`).
    pub fn in_fleet(&self) -> bool {
        self.fleet.get().is_some()
    }

    pub(super) fn fleet(&self) -> Option<&Arc<Fleet>> {
        self.fleet.get()
    }

    /// One round: add this replica's window counts, read every rollout's published state and
    /// window, judge what is due when this replica holds the lease, apply what is published.
    pub async fn share_once(&self, registry: &Registry, fleet: &Fleet) {
        for r in self.briefs(fleet) {
            self.flush_window(fleet, &r).await;
            let Ok(read) = fleet.read_doc(&doc_name(&r.model)).await else { continue };
            let (mut seq, mut doc) = match read {
                Some((seq, body)) => (seq, serde_json::from_str::<Doc>(&body).ok()),
                None => (0, None),
            };
            let mut window = WindowStats::default();
            if let Some(d) = doc.as_ref().filter(|d| d.id == r.id)
                && let Ok(counts) = fleet.read_counts(&window_name(&r.model, &d.id, d.window)).await
            {
                window = WindowStats::from_counts(&counts);
            }
            if fleet.is_leader()
                && let Some((s, d)) = self.lead(fleet, &r, seq, doc.as_ref(), &window).await
            {
                let event = match d.state {
                    RolloutState::Promoted => "promote",
                    RolloutState::RolledBack => "rollback",
                    _ => "",
                };
                let reasons = d.last.as_ref().map(|(_, a)| a.reasons.join("; ")).unwrap_or_default();
                report(registry, &r.model, d.candidate, event, &reasons);
                if doc.as_ref().is_none_or(|old| old.window != d.window) {
                    window = WindowStats::default();
                }
                (seq, doc) = (s, Some(d));
            }
            if let Ok(mut views) = self.views.lock() {
                views.insert(r.model.clone(), View { seq, doc: doc.clone(), window });
            }
            if let Some(d) = doc {
                let _control = registry.control.lock().await;
                self.apply_doc(registry, &r.model, seq, &d, Actor::Fleet);
            }
        }
    }

    fn briefs(&self, fleet: &Fleet) -> Vec<Brief> {
        let Ok(rollouts) = self.rollouts.lock() else { return Vec::new() };
        rollouts
            .iter()
            .map(|(model, r)| Brief {
                model: model.clone(),
                id: r.id.clone(),
                primary: r.primary,
                candidate: r.candidate,
                config: r.config.clone(),
                min_segment_requests: r.min_segment_requests,
                seq: r.seq,
                window: r.window,
                active: r.active(),
                applied: (r.seq > 0).then(|| doc_of(r, fleet)),
            })
            .collect()
    }

    /// Adds what this replica counted since the last round to the fleet's current window; what
    /// Redis does not take waits for the next round.
    async fn flush_window(&self, fleet: &Fleet, r: &Brief) {
        if r.seq == 0 || !r.active {
            return; // nothing published yet: keep counting here until there is a window to add to
        }
        let delta = self.take_window(&r.model, r.candidate);
        if delta.is_empty() {
            return;
        }
        if fleet.add_counts(&window_name(&r.model, &r.id, r.window), &delta.to_counts()).await.is_err() {
            let watch = self.watch(&r.model, r.candidate);
            if let Ok(mut w) = watch.window.lock() {
                w.merge(&delta);
            }
        }
    }

    /// The judge's part: publish a rollout nobody published yet, or the verdict on a window
    /// that is due. Returns what it published.
    async fn lead(
        &self,
        fleet: &Fleet,
        r: &Brief,
        seq: u64,
        doc: Option<&Doc>,
        window: &WindowStats,
    ) -> Option<(u64, Doc)> {
        let now = now_ms();
        let interval = r.config.step_interval.as_millis() as u64;
        // What to publish, the event it counts (none for a republish), and its sequence number.
        let (next, event, analysis, next_seq) = match doc {
            Some(d) if d.id == r.id => {
                let due = matches!(d.state, RolloutState::Progressing | RolloutState::InsufficientData)
                    && now >= d.next_judge_unix_ms;
                if !due {
                    return None;
                }
                // Input drift is this replica's own measurement, not a shared counter.
                let mut window = window.clone();
                window.input_drift = self.input_drift(&r.model, r.primary, r.candidate);
                let analysis = judge(&window, &r.config, r.min_segment_requests);
                let (state, step, weight, event, reset) = advance(d.step, &r.config.steps, analysis.verdict);
                let next = Doc {
                    state,
                    step,
                    weight,
                    window: d.window + u64::from(reset),
                    next_judge_unix_ms: now + interval,
                    last: Some((now, analysis.clone())),
                    by: fleet.replica().to_string(),
                    ..d.clone()
                };
                (next, Some(event), Some(analysis), seq + 1)
            }
            // Redis lost the state (restarted empty): publish what the fleet had, as applied here.
            // Its sequence number continues the fleet's, so every replica applies it.
            None if r.applied.is_some() => {
                let next = Doc { by: fleet.replica().to_string(), ..r.applied.clone()? };
                (next, None, None, r.seq + 1)
            }
            _ => {
                let next = Doc {
                    id: r.id.clone(),
                    candidate: r.candidate,
                    step: 0,
                    state: RolloutState::Progressing,
                    weight: r.config.steps.first().copied().unwrap_or(0.0),
                    window: doc.map_or(0, |d| d.window) + 1,
                    started_unix_ms: now,
                    next_judge_unix_ms: now + interval,
                    last: None,
                    by: fleet.replica().to_string(),
                };
                (next, Some("start"), None, seq + 1)
            }
        };
        let body = serde_json::to_string(&next).ok()?;
        match fleet
            .publish_doc(&doc_name(&r.model), &body, next_seq, Fence::Leader { expected: Some(seq) })
            .await
        {
            Ok(Published::Written) => {
                match event {
                    Some(event) => {
                        telemetry::count_rollout_event(&r.model, event);
                        log_event(&r.model, &next, event, analysis.as_ref());
                    }
                    None => tracing::info!(
                        model = r.model.as_str(),
                        "fleet: rollout state republished after Redis lost it"
                    ),
                }
                Some((next_seq, next))
            }
            _ => None,
        }
    }

    /// Applies a published state to the local rollout it belongs to, if it is newer.
    /// `actor`: the operator whose call published it here, else the fleet's judging replica.
    fn apply_doc(&self, registry: &Registry, model: &str, seq: u64, doc: &Doc, actor: Actor) {
        let Ok(mut rollouts) = self.rollouts.lock() else { return };
        let Some(r) = rollouts.get_mut(model) else { return };
        if doc.id != r.id || seq <= r.seq {
            return;
        }
        fill(r, seq, doc);
        publish_state(model, r);
        let event = match doc.state {
            RolloutState::Promoted => "promote",
            RolloutState::RolledBack => "rollback",
            RolloutState::Aborted => "abort",
            RolloutState::Progressing | RolloutState::InsufficientData => "rollout_step",
        };
        let trigger = format!("fleet: state {seq} published by {}", doc.by);
        let details = serde_json::to_value(doc).unwrap_or_default();
        registry.reroute(model, Some(r.route()), Cause::new(event, trigger, actor).with_details(details));
    }

    /// A rollout being started here takes the fleet's state when the fleet already runs it.
    pub(super) fn adopt_shared(&self, model: &str, r: &mut Rollout) {
        let Ok(views) = self.views.lock() else { return };
        if let Some(View { seq, doc: Some(doc), .. }) = views.get(model)
            && doc.id == r.id
        {
            fill(r, *seq, doc);
        }
    }

    /// The window `/admin/rollouts` shows: the fleet's, as last read, in fleet mode.
    pub(super) fn window_for_view(&self, model: &str, r: &Rollout) -> WindowStats {
        if self.fleet().is_none() {
            return self.peek_window(model, r.candidate);
        }
        let Ok(views) = self.views.lock() else { return WindowStats::default() };
        match views.get(model) {
            Some(v) if v.doc.as_ref().is_some_and(|d| d.id == r.id && d.window == r.window) => {
                v.window.clone()
            }
            _ => WindowStats::default(),
        }
    }

    /// `POST /admin/rollouts/{model}/promote|abort` in a fleet: published for every replica.
    pub async fn operate_shared(
        &self,
        registry: &Registry,
        model: &str,
        promote: bool,
        actor: Actor,
    ) -> Result<Value, ApiError> {
        let Some(fleet) = self.fleet() else {
            return Err(ApiError::Internal("not in a fleet".into()));
        };
        let (seq, mut doc) = {
            let Ok(rollouts) = self.rollouts.lock() else {
                return Err(ApiError::Internal("rollout state".into()));
            };
            let r = rollouts.get(model).ok_or_else(|| no_rollout(model))?;
            (r.seq, doc_of(r, fleet))
        };
        (doc.state, doc.weight) =
            if promote { (RolloutState::Promoted, 100.0) } else { (RolloutState::Aborted, 0.0) };
        doc.by = fleet.replica().to_string();
        let name = if promote { "promote" } else { "abort" };
        let body = serde_json::to_string(&doc).map_err(|e| ApiError::Internal(e.to_string()))?;
        match fleet.publish_doc(&doc_name(model), &body, seq + 1, Fence::Seq { expected: Some(seq) }).await {
            Ok(Published::Written) => {
                telemetry::count_rollout_event(model, name);
                report(
                    registry,
                    model,
                    doc.candidate,
                    if promote { "promote" } else { "rollback" },
                    "by the operator",
                );
                tracing::info!(
                    model,
                    candidate = doc.candidate,
                    weight = doc.weight,
                    "rollout {name} by the operator, for the fleet"
                );
                let _control = registry.control.lock().await;
                self.apply_doc(registry, model, seq + 1, &doc, actor);
                let rollouts =
                    self.rollouts.lock().map_err(|_| ApiError::Internal("rollout state".into()))?;
                let r = rollouts.get(model).ok_or_else(|| no_rollout(model))?;
                Ok(self.describe(model, r))
            }
            Ok(_) => Err(ApiError::Conflict(format!(
                "the fleet's rollout of '{model}' changed meanwhile; read /admin/rollouts and try again"
            ))),
            Err(e) => Err(ApiError::Overloaded(format!(
                "the fleet's Redis is unavailable ({e}); the rollout holds where it is"
            ))),
        }
    }

    /// Joins a label through the fleet: `Ok(None)` when Redis does not know the id (or cannot
    /// be asked), so the caller looks in this replica's own store.
    pub(super) async fn feedback_shared(
        &self,
        fleet: &Fleet,
        snapshot: &ServingSnapshot,
        id: &str,
        labels: &[u64],
    ) -> Result<Option<FeedbackReply>, ApiError> {
        for (name, m) in &snapshot.config.models {
            let Some(cfg) = &m.monitor else { continue };
            let taken = match fleet.take_prediction(name, id, labels.len(), cfg.feedback_ttl).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!("fleet: label lookup failed ({e}); looking here only");
                    return Ok(None);
                }
            };
            match taken {
                Taken::Unknown => continue,
                Taken::Found(payload) => {
                    let Some(p) = decode_prediction(&payload) else {
                        return Err(ApiError::Internal(format!(
                            "the fleet holds an unreadable prediction for id {id:?}"
                        )));
                    };
                    // This replica may hold it too (it made it): mark it labelled here as well.
                    if let Some(store) = self.store(name, cfg) {
                        let _ = store.take(id, labels.len(), Instant::now());
                    }
                    return self.join(name, cfg, id, &p, labels).map(Some);
                }
                Taken::Expired => {
                    telemetry::count_feedback(Some(name), "expired");
                    return Err(super::expired(id, cfg));
                }
                Taken::AlreadyLabelled => return Err(super::already_labelled(id)),
                Taken::Rows(rows) => return Err(super::wrong_rows(id, rows, labels.len())),
            }
        }
        Ok(None)
    }
}

/// The local rollout as a published state (when nothing newer was read).
fn doc_of(r: &Rollout, fleet: &Fleet) -> Doc {
    let ms = |t: SystemTime| t.duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    Doc {
        id: r.id.clone(),
        candidate: r.candidate,
        step: r.step,
        state: r.state,
        weight: r.weight,
        window: r.window,
        started_unix_ms: ms(r.started),
        next_judge_unix_ms: now_ms() + r.config.step_interval.as_millis() as u64,
        last: r.last.as_ref().map(|(at, a)| (ms(*at), a.clone())),
        by: fleet.replica().to_string(),
    }
}

fn fill(r: &mut Rollout, seq: u64, doc: &Doc) {
    let time = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    r.seq = seq;
    r.step = doc.step;
    r.state = doc.state;
    r.weight = doc.weight;
    r.window = doc.window;
    r.started = time(doc.started_unix_ms);
    r.last = doc.last.as_ref().map(|(at, a)| (time(*at), a.clone()));
}

/// The `fleet` part of a rollout in `/admin/rollouts`.
pub(super) fn describe(fleet: &Fleet, r: &Rollout) -> Value {
    let held = fleet.down_since().map(|since| {
        format!(
            "Redis unreachable for {} s: the routing in force stays and nothing is judged until it is back",
            since.elapsed().as_secs()
        )
    });
    json!({
        "name": fleet.name(),
        "replica": fleet.replica(),
        "judging": fleet.is_leader(),
        "connected": fleet.connected(),
        "held": held,
        "seq": r.seq,
        "window": r.window,
    })
}

fn log_event(model: &str, d: &Doc, event: &str, a: Option<&Analysis>) {
    tracing::info!(
        model,
        candidate = d.candidate,
        event,
        weight = d.weight,
        requests = a.map_or(0, |a| a.requests),
        reasons = %a.map(|a| a.reasons.join("; ")).unwrap_or_default(),
        "rollout {event} (judged for the fleet)"
    );
}
