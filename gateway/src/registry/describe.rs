//! A snapshot's routing as JSON: what `/admin/config` shows and what the audit history records
//! before and after each change.

use serde_json::{Value, json};

use super::ServingSnapshot;

impl ServingSnapshot {
    /// Per model: the primary and its share, candidates and shadows with their percents, the
    /// headers that pin or stick, and every loaded version.
    pub fn routing_json(&self) -> Value {
        let models: serde_json::Map<String, Value> = self
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
        Value::Object(models)
    }
}
