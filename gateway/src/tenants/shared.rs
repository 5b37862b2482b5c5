//! Tenants' rates across a fleet (`[fleet]`): the fleet admits a tenant at `rps` in all, not at
//! `rps` per replica. Every `SHARE_EVERY` each replica adds the requests it saw per
//! rate-limited tenant (admitted or not: its demand) to the fleet's counter for the current
//! second, under its replica id, and reads the counters of this second and the last back (one
//! Redis round trip, off the request path). The replicas that saw the tenant in that time
//! split its rate: each refills its own bucket at `rps / n` up to `burst / n` (at least one).
//! A load balancer that spreads a tenant's requests evenly gets the tenant its whole rate; one
//! replica alone keeps all of it. Approximate by design: a new replica is counted within
//! `SHARE_EVERY`, and without Redis each replica keeps the split it last knew. The request path
//! never waits on Redis.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::FrontDoor;
use crate::fleet::Fleet;

/// How often a replica reports and reads the fleet's counts.
pub const SHARE_EVERY: Duration = Duration::from_millis(200);
/// How long a second's counters outlive it in Redis.
const KEEP: Duration = Duration::from_secs(5);

fn this_second() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Reports demand and re-splits rates until `shutdown`.
pub async fn share_rates(door: Arc<FrontDoor>, fleet: Arc<Fleet>, mut shutdown: watch::Receiver<bool>) {
    let me = fleet.replica().to_string();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(SHARE_EVERY) => {}
            _ = shutdown.changed() => return,
        }
        let tenants = door.rate_limited_tenants();
        if tenants.is_empty() {
            continue;
        }
        let second = this_second();
        let counts: Vec<(String, i64)> = tenants
            .iter()
            .map(|t| (field(t.name(), &me), t.demand.swap(0, Ordering::AcqRel) as i64))
            .collect();
        let now = fleet.add_and_read_window(&format!("rate:{second}"), &counts, KEEP).await;
        let before = fleet.add_and_read_window(&format!("rate:{}", second - 1), &[], KEEP).await;
        let (Ok(now), Ok(before)) = (now, before) else {
            tracing::debug!("fleet: tenant rates not shared this time (Redis unavailable)");
            continue;
        };
        let replicas = replicas_per_tenant(now.iter().chain(before.iter()));
        for t in &tenants {
            // This replica always counts itself: it is serving the tenant now.
            let n = replicas.get(t.name()).map_or(1, |r| r.len() + usize::from(!r.contains(&me)));
            t.split_rate(n.max(1));
        }
    }
}

/// `tenant|replica`: one counter per tenant per replica.
fn field(tenant: &str, replica: &str) -> String {
    format!("{tenant}|{replica}")
}

/// The replicas that saw each tenant (a counter above zero).
fn replicas_per_tenant<'a>(
    counters: impl Iterator<Item = (&'a String, &'a i64)>,
) -> HashMap<String, BTreeSet<String>> {
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (field, _) in counters.filter(|(_, n)| **n > 0) {
        if let Some((tenant, replica)) = field.split_once('|') {
            out.entry(tenant.to_string()).or_default().insert(replica.to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_are_counted_per_tenant_from_both_seconds() {
        let now: HashMap<String, i64> =
            [("a|r1".to_string(), 3), ("a|r2".to_string(), 1), ("b|r1".to_string(), 0)].into();
        let before: HashMap<String, i64> = [("a|r3".to_string(), 2), ("a|r1".to_string(), 5)].into();
        let r = replicas_per_tenant(now.iter().chain(before.iter()));
        assert_eq!(r["a"].len(), 3);
        assert!(!r.contains_key("b"), "no demand: not counted");
    }
}
