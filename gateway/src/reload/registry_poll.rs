//! Following a model registry: the poll that reloads when an alias the routing uses moved (the
//! registry side, reading aliases and keeping each model's last poll, is `source::registry`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use super::Reloader;
use crate::audit::{Actor, Cause};
use crate::registry::Registry;
use crate::source::registry;

/// Reads the aliases of every registry-sourced model every `poll_s` (backing off while its
/// registry fails), and reloads when one the routing uses points elsewhere now. Until shutdown.
pub async fn poll_registries(
    reloader: Arc<Reloader>,
    serving: Arc<Registry>,
    mut shutdown: watch::Receiver<bool>,
) {
    let tick = Duration::from_secs(1);
    let mut next: BTreeMap<String, tokio::time::Instant> = BTreeMap::new();
    let mut refused = Refused::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(tick) => {}
            _ = shutdown.changed() => return,
        }
        let snapshot = serving.snapshot();
        let now = tokio::time::Instant::now();
        let mut moved = Vec::new();
        for m in snapshot.config.models.values() {
            let Some(source) = &m.source else { continue };
            if next.get(&m.name).is_some_and(|t| now < *t) {
                continue;
            }
            let (change, failures) = registry::alias_moved(m).await;
            let backoff =
                source.poll.saturating_mul(1 << failures.min(8)).min(registry::MAX_BACKOFF.max(source.poll));
            next.insert(m.name.clone(), now + backoff);
            match change {
                Some(change) => match refused.known(&m.name, &change) {
                    // The very move the gate refused: not tried again until it changes.
                    Some(why) => {
                        registry::set_status(&m.name, "reload_refused", Some(why.to_string()));
                    }
                    None => moved.push((m.name.clone(), change)),
                },
                None => refused.forget(&m.name),
            }
        }
        if !moved.is_empty() {
            let what: Vec<&str> = moved.iter().map(|(_, c)| c.as_str()).collect();
            let cause = Cause::new("reload", format!("registry: {}", what.join(", ")), Actor::Registry);
            match reloader.reload(cause).await {
                Err(refusal) => {
                    let why: Vec<String> = refusal.problems.iter().map(ToString::to_string).collect();
                    // Only the validation gate's verdict is sure to repeat for the same move; a
                    // registry or download failure may heal, so those moves are retried every poll.
                    let by_gate = refusal.problems.iter().any(|p| is_gate_problem(&p.path));
                    for (model, change) in &moved {
                        registry::set_status(model, "reload_refused", Some(why.join("; ")));
                        if by_gate {
                            refused.remember(model, change, why.join("; "));
                        }
                    }
                }
                Ok(_) => moved.iter().for_each(|(model, _)| refused.forget(model)),
            }
        }
    }
}

/// A problem the validation gate reported (`models.X.validation`, `.dataset`, `.output`).
fn is_gate_problem(path: &str) -> bool {
    path.starts_with("models.") && (path.ends_with(".validation") || path.contains(".validation."))
}

/// Alias moves whose reload the validation gate refused, per model, with the reason. The same move is not retried every poll: it would be
/// refused again, flooding the log and the history. It is retried when it changes: the alias
/// moves again, or the serving routing changed (an explicit reload), which changes the
/// description of the move (`model@alias: serving -> registry`).
#[derive(Debug, Default)]
struct Refused(BTreeMap<String, (String, String)>);

impl Refused {
    /// Why `change` of `model` was refused, when that very move was.
    fn known(&self, model: &str, change: &str) -> Option<&str> {
        self.0.get(model).filter(|(c, _)| c == change).map(|(_, why)| why.as_str())
    }

    fn remember(&mut self, model: &str, change: &str, why: String) {
        self.0.insert(model.to_string(), (change.to_string(), why));
    }

    /// The model's aliases point where it serves (or a reload applied them): nothing pending.
    fn forget(&mut self, model: &str) {
        self.0.remove(model);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_move_is_not_retried_until_the_alias_moves_again() {
        let mut refused = Refused::default();
        let first = "m@challenger: 1 -> Some(2)";
        assert_eq!(refused.known("m", first), None, "a new move is tried");
        refused.remember("m", first, "models.m.validation: version 2: accuracy 0.5".to_string());
        assert_eq!(refused.known("m", first), Some("models.m.validation: version 2: accuracy 0.5"));
        assert_eq!(refused.known("other", first), None, "another model's moves are its own");
        assert_eq!(refused.known("m", "m@challenger: 1 -> Some(3)"), None, "moved again: retried");
        refused.forget("m");
        assert_eq!(refused.known("m", first), None, "after the aliases settle, the same move is new");
    }

    #[test]
    fn only_the_gate_makes_a_refusal_stick() {
        assert!(is_gate_problem("models.credit-scoring.validation"));
        assert!(is_gate_problem("models.credit-scoring.validation.dataset"));
        assert!(!is_gate_problem("models.credit-scoring.source.mlflow"));
        assert!(!is_gate_problem("models.credit-scoring.versions.2"));
    }
}
