//! The config file: TOML text → `config::from_toml`. Whatever the text, the answer is a config
//! or a list of problems (never a panic); the same text always gives the same answer; a text
//! that parses gives the same answer when its parsed form is written back out as TOML and read
//! again. A config that validates keeps the promises `config::validate` makes (positive,
//! distinct versions, percents in range and summing to at most 100, a shadow never a routed
//! version, header names valid, every served version's file present...), and its routing
//! table sends every draw and every sticky key to a served version.
//!
//! Relative `repository` paths resolve against the working directory: scripts/fuzz.sh runs from
//! the repository root, so the seeds' `repository = "models"` finds the committed models.

use std::collections::HashMap;

use gateway::config::{self, ConfigError, GatewayConfig, ModelConfig, Overrides};
use gateway::registry;

/// One fuzz input: the bytes as config text (inputs that are not UTF-8 cannot be a file's text
/// as the gateway reads it, `read_to_string`, so they are skipped).
pub fn fuzz(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let overrides = Overrides::default();
    let answer = config::from_toml(text, &overrides);
    match &answer {
        Ok(cfg) => check_config(cfg),
        Err(e) => check_error(e),
    }
    assert_eq!(config::from_toml(text, &overrides), answer, "the same text, another answer");
    let Ok(raw) = config::parse(text) else {
        return;
    };
    assert_eq!(config::from_raw(&raw), answer, "from_raw(parse(text)) differs from from_toml(text)");
    // Written back out (where the TOML writer can: it has no u64 above i64::MAX, for one).
    let Ok(written) = toml::to_string(&raw) else {
        return;
    };
    let again = config::from_toml(&written, &overrides);
    assert_eq!(again, answer, "the config written back as TOML reads differently:\n{written}");
}

fn check_error(e: &ConfigError) {
    assert!(!e.problems.is_empty(), "an error with no problem in it");
    let _ = e.to_string();
}

fn check_config(cfg: &GatewayConfig) {
    let s = &cfg.server;
    assert!(!cfg.models.is_empty(), "a valid config serves a model");
    assert!((1..=1 << 31).contains(&s.max_request_bytes), "max_request_bytes {}", s.max_request_bytes);
    assert!(s.max_in_flight >= 1 && s.max_connections >= 1 && !s.request_timeout.is_zero());
    assert!(s.listen.port() == 0 || s.listen != s.admin_listen, "listen == admin_listen");
    assert!(cfg.admin.token.is_some() || s.admin_listen.ip().is_loopback(), "public admin without a token");
    assert!(!cfg.runtime.execution_providers.is_empty(), "no execution provider");
    for (name, m) in &cfg.models {
        assert_eq!(&m.name, name);
        assert!(config::valid_model_name(name), "model name {name:?}");
        check_model(m);
    }
    let _ = cfg.describe_routing();
}

fn check_model(m: &ModelConfig) {
    let r = &m.routing;
    assert!((1..=256).contains(&m.instances), "instances {}", m.instances);
    assert!(m.batching.max_batch_size >= 1 && m.batching.max_queue >= 1, "batching {:?}", m.batching);
    assert!(r.primary > 0, "primary 0");
    let mut routed = vec![r.primary];
    for w in &r.candidates {
        assert!(w.version > 0 && !routed.contains(&w.version), "candidate {} repeats or is 0", w.version);
        assert!((0.0..=100.0).contains(&w.percent), "candidate percent {}", w.percent);
        routed.push(w.version);
    }
    let total: f64 = r.candidates.iter().map(|w| w.percent).sum();
    assert!(total <= 100.0 + 1e-9, "candidate percents sum to {total}");
    let mut shadows = Vec::new();
    for w in &r.shadows {
        assert!(w.version > 0 && !routed.contains(&w.version), "shadow {} is routed or 0", w.version);
        assert!(!shadows.contains(&w.version), "shadow {} listed twice", w.version);
        assert!((0.0..=100.0).contains(&w.percent), "shadow percent {}", w.percent);
        shadows.push(w.version);
    }
    assert!(r.pin_only.iter().all(|&v| v > 0), "pin-only version 0");
    for header in [&r.sticky_header, &r.pin_header].into_iter().flatten() {
        assert!(http::HeaderName::from_bytes(header.as_bytes()).is_ok(), "header name {header:?}");
        assert_eq!(header, &header.to_ascii_lowercase());
    }
    if let Some(mon) = &m.monitor {
        assert!(mon.range.0 < mon.range.1 && mon.range.0.is_finite() && mon.range.1.is_finite());
        assert!(mon.threshold.is_finite() && mon.max_classes >= 2 && mon.feedback_capacity >= 1);
    }
    if let Some(rollout) = &m.rollout {
        assert_eq!(r.candidates.len(), 1, "a rollout has one candidate");
        assert_eq!(rollout.steps.last(), Some(&100.0), "steps end at 100");
        assert!(rollout.steps.windows(2).all(|w| w[0] < w[1]), "steps ascend");
        assert!(rollout.steps.iter().all(|s| *s > 0.0), "steps positive");
    }
    let served = m.served_versions();
    for &v in &served {
        assert!(m.model_path(v).is_file(), "served version {v} has no file");
    }
    check_routing(m, &served);
}

/// The routing table this config becomes: every draw, sticky or not, lands on a served version.
fn check_routing(m: &ModelConfig, served: &[u64]) {
    let table = registry::routing_table(m, &HashMap::new());
    let draws = [0.0, 0.049_999, 0.05, 0.5, 0.999_999, 1.0 - f64::EPSILON];
    let keys: [&[u8]; 4] = [b"", b"alice", b"bob", &[0xff; 9]];
    let routes =
        draws.iter().map(|&u| table.pick(None, u)).chain(keys.iter().map(|k| table.pick(Some(k), 0.0)));
    for route in routes {
        assert!(served.contains(&route.version), "routed to unserved version {}", route.version);
    }
    for shadow in table.sample_shadows(|| 0.0) {
        assert!(served.contains(&shadow), "shadowed to unserved version {shadow}");
    }
}
