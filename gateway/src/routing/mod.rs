//! Pure routing decisions: which version answers a request, and which shadows see a copy.
//!
//! Randomness comes in as arguments (a uniform `f64` in `[0, 1)`, a sticky key), so tests and
//! benches need no RNG plumbing.
//!
//! **Sticky routing.** The sticky header's value is hashed with 64-bit FNV-1a (offset basis
//! 0xcbf29ce484222325, prime 0x100000001b3) over its raw bytes, and `hash % 10_000` is its
//! bucket. Candidates own consecutive bucket ranges in config order, starting at 0: with
//! candidates A at 5% and B at 10%, A owns buckets 0..500, B owns 500..1500, the primary owns
//! the rest. Raising A to 25% grows its range to 0..2500, so every user already on A stays on A.
//! The hash is fixed by this documentation: every replica and every release agrees.
//!
//! Depends only on `telemetry::Role`, the label enum a decision is reported under.

use crate::telemetry::Role;

/// Buckets of the sticky key space; a percent is `percent * 100` buckets.
pub const BUCKETS: u64 = 10_000;

/// Why a version was chosen (the `x-route-reason` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteReason {
    /// No candidate drew this request.
    Primary,
    /// A weighted random draw chose a candidate.
    Candidate,
    /// The sticky key's bucket decided (primary or candidate).
    Sticky,
    /// The caller asked for this version.
    Pinned,
    /// The version drawn (a remote candidate or shadow's share) was ejected, or its call
    /// failed: the primary answered instead.
    Fallback,
}

impl RouteReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Primary => "primary",
            RouteReason::Candidate => "candidate",
            RouteReason::Sticky => "sticky",
            RouteReason::Pinned => "pinned",
            RouteReason::Fallback => "fallback",
        }
    }
}

/// The outcome of one routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub version: u64,
    pub role: Role,
    pub reason: RouteReason,
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Share {
    version: u64,
    percent: f64,
    buckets: u64,
}

/// A model's routing: primary, weighted candidates, sampled shadows, header names.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingTable {
    primary: u64,
    candidates: Vec<Share>,
    shadows: Vec<Share>,
    pub sticky_header: Option<String>,
    pub pin_header: Option<String>,
}

impl RoutingTable {
    /// Percents must already be validated (0..=100, candidates summing to at most 100).
    pub fn new(primary: u64, candidates: &[(u64, f64)], shadows: &[(u64, f64)]) -> RoutingTable {
        let share = |&(version, percent): &(u64, f64)| Share {
            version,
            percent,
            buckets: (percent * (BUCKETS as f64) / 100.0).round() as u64,
        };
        RoutingTable {
            primary,
            candidates: candidates.iter().map(share).collect(),
            shadows: shadows.iter().map(share).collect(),
            sticky_header: None,
            pin_header: None,
        }
    }

    pub fn with_headers(mut self, sticky: Option<String>, pin: Option<String>) -> RoutingTable {
        self.sticky_header = sticky;
        self.pin_header = pin;
        self
    }

    pub fn primary(&self) -> u64 {
        self.primary
    }

    /// `(version, percent)` of every candidate, in config order.
    pub fn candidates(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.candidates.iter().map(|s| (s.version, s.percent))
    }

    /// `(version, percent)` of every shadow.
    pub fn shadow_shares(&self) -> impl Iterator<Item = (u64, f64)> + '_ {
        self.shadows.iter().map(|s| (s.version, s.percent))
    }

    /// The primary's share: what the candidates leave.
    pub fn primary_percent(&self) -> f64 {
        (100.0 - self.candidates.iter().map(|s| s.percent).sum::<f64>()).max(0.0)
    }

    /// Chooses the answering version. `sticky_key` is the sticky header's value when present;
    /// `uniform` is a draw in `[0, 1)` used when there is no key.
    pub fn pick(&self, sticky_key: Option<&[u8]>, uniform: f64) -> Route {
        match sticky_key {
            Some(key) => {
                let bucket = sticky_bucket(key);
                let mut start = 0;
                for c in &self.candidates {
                    if bucket < start + c.buckets {
                        return Route {
                            version: c.version,
                            role: Role::Candidate,
                            reason: RouteReason::Sticky,
                        };
                    }
                    start += c.buckets;
                }
                Route { version: self.primary, role: Role::Primary, reason: RouteReason::Sticky }
            }
            None => {
                let point = uniform * 100.0;
                let mut start = 0.0;
                for c in &self.candidates {
                    if point < start + c.percent {
                        return Route {
                            version: c.version,
                            role: Role::Candidate,
                            reason: RouteReason::Candidate,
                        };
                    }
                    start += c.percent;
                }
                Route { version: self.primary, role: Role::Primary, reason: RouteReason::Primary }
            }
        }
    }

    /// The shadows that see a copy of this request: each samples independently with its own
    /// uniform draw from `draw`.
    pub fn sample_shadows<'a>(
        &'a self,
        mut draw: impl FnMut() -> f64 + 'a,
    ) -> impl Iterator<Item = u64> + 'a {
        self.shadows
            .iter()
            .filter(move |s| s.percent >= 100.0 || draw() * 100.0 < s.percent)
            .map(|s| s.version)
    }

    pub fn has_shadows(&self) -> bool {
        !self.shadows.is_empty()
    }
}

/// The sticky bucket of a key: FNV-1a 64 of its bytes, modulo 10,000.
pub fn sticky_bucket(key: &[u8]) -> u64 {
    fnv1a64(key) % BUCKETS
}

pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a64(b"a"), 0xaf63dc4c8601ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x85944171f73967e8);
    }

    #[test]
    fn zero_weight_candidate_is_never_picked() {
        let t = RoutingTable::new(1, &[(2, 0.0)], &[]);
        for i in 0..1000 {
            assert_eq!(t.pick(None, i as f64 / 1000.0).version, 1);
            assert_eq!(t.pick(Some(format!("user-{i}").as_bytes()), 0.0).version, 1);
        }
    }

    #[test]
    fn full_weight_candidate_is_always_picked() {
        let t = RoutingTable::new(1, &[(2, 100.0)], &[]);
        for i in 0..1000 {
            assert_eq!(t.pick(None, i as f64 / 1000.0).version, 2);
        }
    }

    #[test]
    fn uniform_draw_splits_by_percent_in_order() {
        let t = RoutingTable::new(1, &[(2, 5.0), (3, 10.0)], &[]);
        assert_eq!(t.pick(None, 0.04).version, 2);
        assert_eq!(t.pick(None, 0.05).version, 3);
        assert_eq!(t.pick(None, 0.149).version, 3);
        let p = t.pick(None, 0.15);
        assert_eq!((p.version, p.reason, p.role), (1, RouteReason::Primary, Role::Primary));
        assert!((t.primary_percent() - 85.0).abs() < 1e-9);
    }

    #[test]
    fn raising_a_candidate_keeps_its_sticky_users() {
        let small = RoutingTable::new(1, &[(2, 5.0)], &[]);
        let large = RoutingTable::new(1, &[(2, 25.0)], &[]);
        let mut on_candidate = 0;
        for i in 0..20_000 {
            let key = format!("user-{i}");
            let before = small.pick(Some(key.as_bytes()), 0.0);
            assert_eq!(before.reason, RouteReason::Sticky);
            if before.version == 2 {
                on_candidate += 1;
                assert_eq!(large.pick(Some(key.as_bytes()), 0.99).version, 2, "{key} moved");
            }
        }
        // 5% of 20,000 keys, give or take hashing noise.
        assert!((800..1200).contains(&on_candidate), "{on_candidate}");
    }

    #[test]
    fn shadows_sample_by_their_own_percent() {
        let t = RoutingTable::new(1, &[], &[(3, 100.0), (4, 50.0), (5, 0.0)]);
        let mut draws = [0.2, 0.7, 0.9, 0.1].into_iter();
        let first: Vec<u64> = t.sample_shadows(|| draws.next().unwrap_or(0.0)).collect();
        assert_eq!(first, vec![3, 4]);
        let second: Vec<u64> = t.sample_shadows(|| draws.next().unwrap_or(0.0)).collect();
        assert_eq!(second, vec![3]);
    }
}
