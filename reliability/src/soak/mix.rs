//! What the soak sends and what it accepts back: the kinds of request in the mix with their
//! weights, the bodies (one random input row, rendered once), and the one classification of
//! an answer as expected or not. Pure: no I/O, randomness passed in.
//!
//! Ids: most infer requests carry one of a few repeated `"id"`s (many predictions stored under
//! the same id, which must not grow the feedback store); about 2% carry a unique id (labelled
//! once, 200, then again, 409) or none (the gateway keeps them under its generated
//! `x-request-id`), so the store's unique entries stay far below its capacity and a store that
//! grows per request rather than per id shows in the RSS.

use std::fmt;

/// Repeated ids in the mix (`dup-0` .. `dup-15`).
pub const REPEATED_IDS: u32 = 16;
/// Distinct sticky user keys.
pub const USERS: u32 = 10_000;
/// Versions a pin may name (v3 is the shadow, served only when pinned).
pub const VERSIONS: [u64; 3] = [1, 2, 3];
/// Versions a routed answer may come from (the primary and the candidate).
pub const ROUTED_VERSIONS: [u64; 2] = [1, 2];

/// One draw of the mix. All but [`Kind::LabelledPair`] are one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Routed by the weighted split (and sampled by the shadow), a repeated id.
    Routed,
    /// Routed with the sticky header (one of [`USERS`] keys), a repeated id.
    Sticky,
    /// Pinned by the pin header, a repeated id.
    PinHeader,
    /// Pinned by the `/versions/{v}/infer` path, a repeated id.
    PinPath,
    /// Routed with no id: stored under the gateway's `x-request-id`.
    NoId,
    /// Routed with a unique id, then labelled (200), then labelled again (409).
    LabelledPair,
    /// A label for a repeated id: 200, or 409 when it was labelled since its last prediction.
    FeedbackRepeated,
    /// A label for an id never used: 404.
    FeedbackUnknown,
}

/// The mix: each kind's share of draws.
pub const WEIGHTS: [(Kind, f64); 8] = [
    (Kind::Routed, 0.36),
    (Kind::Sticky, 0.20),
    (Kind::PinHeader, 0.08),
    (Kind::PinPath, 0.08),
    (Kind::NoId, 0.01),
    (Kind::LabelledPair, 0.01),
    (Kind::FeedbackRepeated, 0.16),
    (Kind::FeedbackUnknown, 0.10),
];

impl Kind {
    /// The kind a uniform draw `u` in [0, 1) lands on.
    pub fn pick(u: f64) -> Kind {
        let mut edge = 0.0;
        for (kind, weight) in WEIGHTS {
            edge += weight;
            if u < edge {
                return kind;
            }
        }
        Kind::Routed
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Routed => "routed",
            Kind::Sticky => "sticky",
            Kind::PinHeader => "pin_header",
            Kind::PinPath => "pin_path",
            Kind::NoId => "no_id",
            Kind::LabelledPair => "labelled_pair",
            Kind::FeedbackRepeated => "feedback_repeated",
            Kind::FeedbackUnknown => "feedback_unknown",
        }
    }
}

/// Which request of a draw an answer belongs to (a labelled pair has three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Step {
    /// An infer request: `pinned` when a pin chose the version; `expect` is the one version
    /// allowed to answer (a pin, or a sticky user whose bucket no reload moves), else any
    /// of [`ROUTED_VERSIONS`].
    Infer {
        pinned: bool,
        expect: Option<u64>,
    },
    FirstLabel,
    SecondLabel,
    RepeatedLabel,
    UnknownLabel,
}

impl Step {
    pub fn name(self) -> &'static str {
        match self {
            Step::Infer { pinned: false, .. } => "infer",
            Step::Infer { pinned: true, .. } => "infer_pinned",
            Step::FirstLabel => "label_first",
            Step::SecondLabel => "label_second",
            Step::RepeatedLabel => "label_repeated",
            Step::UnknownLabel => "label_unknown",
        }
    }
}

/// Why an answer was not one the mix expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unexpected {
    /// No HTTP answer: connect failure, reset, timeout.
    Transport,
    /// A status this step never gets.
    Status(u16),
    /// 200 from a version the route cannot give (a pin not honoured, a sticky user moved, a
    /// shadow answering).
    Version(Option<u64>),
}

impl fmt::Display for Unexpected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unexpected::Transport => f.write_str("transport error"),
            Unexpected::Status(s) => write!(f, "status {s}"),
            Unexpected::Version(Some(v)) => write!(f, "answered by version {v}"),
            Unexpected::Version(None) => f.write_str("answer without a version"),
        }
    }
}

/// The one rule: is `status` (0 = no answer) with the answering `version` what `step` expects?
pub fn classify(step: Step, status: u16, version: Option<u64>) -> Result<(), Unexpected> {
    if status == 0 {
        return Err(Unexpected::Transport);
    }
    let expected: &[u16] = match step {
        Step::Infer { .. } | Step::FirstLabel => &[200],
        Step::SecondLabel => &[409],
        Step::RepeatedLabel => &[200, 409],
        Step::UnknownLabel => &[404],
    };
    if !expected.contains(&status) {
        return Err(Unexpected::Status(status));
    }
    match step {
        Step::Infer { expect: Some(v), .. } if version != Some(v) => Err(Unexpected::Version(version)),
        Step::Infer { expect: None, .. } if !version.is_some_and(|v| ROUTED_VERSIONS.contains(&v)) => {
            Err(Unexpected::Version(version))
        }
        _ => Ok(()),
    }
}

/// Bodies, built from one rendered `"inputs"` array.
#[derive(Debug, Clone)]
pub struct Bodies {
    inputs: String,
}

impl Bodies {
    /// `inputs_json` is the request's `"inputs"` array as JSON text.
    pub fn new(inputs_json: String) -> Bodies {
        Bodies { inputs: inputs_json }
    }

    /// An infer request carrying `id` (none when `None`).
    pub fn infer(&self, id: Option<&str>) -> String {
        match id {
            Some(id) => format!(r#"{{"id":"{id}","inputs":{}}}"#, self.inputs),
            None => format!(r#"{{"inputs":{}}}"#, self.inputs),
        }
    }

    /// A feedback label for `id`.
    pub fn label(id: &str, label: u64) -> String {
        format!(r#"{{"id":"{id}","label":{label}}}"#)
    }
}

/// Buckets of the sticky key space (`percent * 100` buckets per percent).
pub const BUCKETS: u64 = 10_000;

/// A sticky key's bucket as the README specifies it: 64-bit FNV-1a over the raw bytes, modulo
/// [`BUCKETS`] (written here independently of the gateway's code, so the check is not circular).
pub fn sticky_bucket(key: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash % BUCKETS
}

/// The version a sticky user must get whatever the reloads do, when the candidate's percent
/// moves between `low` and `high`: the candidate (2) below `low`'s range, the primary (1) from
/// `high`'s range on; `None` in between (that user moves with the percent).
pub fn sticky_stable(bucket: u64, low: f64, high: f64) -> Option<u64> {
    let edge = |percent: f64| (percent * BUCKETS as f64 / 100.0).round() as u64;
    if bucket < edge(low) {
        Some(2)
    } else if bucket >= edge(high) {
        Some(1)
    } else {
        None
    }
}

/// `dup-N` for a draw `n`.
pub fn repeated_id(n: u32) -> String {
    format!("dup-{}", n % REPEATED_IDS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_cover_the_unit_interval() {
        let total: f64 = WEIGHTS.iter().map(|(_, w)| w).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
        assert_eq!(Kind::pick(0.0), Kind::Routed);
        assert_eq!(Kind::pick(0.999_999), Kind::FeedbackUnknown);
        let mut rng = fastrand::Rng::with_seed(5);
        let pairs = (0..100_000).filter(|_| Kind::pick(rng.f64()) == Kind::LabelledPair).count();
        assert!((800..1200).contains(&pairs), "{pairs}");
    }

    #[test]
    fn fnv1a_buckets() {
        // Published FNV-1a 64 test vectors, reduced to buckets.
        assert_eq!(sticky_bucket(b""), 0xcbf29ce484222325 % BUCKETS);
        assert_eq!(sticky_bucket(b"a"), 0xaf63dc4c8601ec8c % BUCKETS);
        assert_eq!(sticky_bucket(b"foobar"), 0x85944171f73967e8 % BUCKETS);
        assert_eq!(sticky_stable(999, 10.0, 30.0), Some(2));
        assert_eq!(sticky_stable(1000, 10.0, 30.0), None);
        assert_eq!(sticky_stable(2999, 10.0, 30.0), None);
        assert_eq!(sticky_stable(3000, 10.0, 30.0), Some(1));
    }

    #[test]
    fn classification() {
        let routed = Step::Infer { pinned: false, expect: None };
        assert_eq!(classify(routed, 200, Some(2)), Ok(()));
        assert_eq!(classify(routed, 200, Some(3)), Err(Unexpected::Version(Some(3))));
        assert_eq!(classify(routed, 503, Some(1)), Err(Unexpected::Status(503)));
        assert_eq!(classify(routed, 0, None), Err(Unexpected::Transport));
        let pinned = Step::Infer { pinned: true, expect: Some(3) };
        assert_eq!(classify(pinned, 200, Some(3)), Ok(()));
        assert_eq!(classify(pinned, 200, Some(1)), Err(Unexpected::Version(Some(1))));
        let sticky = Step::Infer { pinned: false, expect: Some(1) };
        assert_eq!(classify(sticky, 200, Some(2)), Err(Unexpected::Version(Some(2))));
        assert_eq!(classify(Step::FirstLabel, 200, None), Ok(()));
        assert_eq!(classify(Step::FirstLabel, 409, None), Err(Unexpected::Status(409)));
        assert_eq!(classify(Step::SecondLabel, 409, None), Ok(()));
        assert_eq!(classify(Step::RepeatedLabel, 409, None), Ok(()));
        assert_eq!(classify(Step::RepeatedLabel, 404, None), Err(Unexpected::Status(404)));
        assert_eq!(classify(Step::UnknownLabel, 404, None), Ok(()));
        assert_eq!(classify(Step::UnknownLabel, 500, None), Err(Unexpected::Status(500)));
    }

    #[test]
    fn bodies() {
        let b = Bodies::new(r#"[{"name":"x"}]"#.into());
        assert_eq!(b.infer(Some("dup-1")), r#"{"id":"dup-1","inputs":[{"name":"x"}]}"#);
        assert_eq!(b.infer(None), r#"{"inputs":[{"name":"x"}]}"#);
        let v: serde_json::Value = serde_json::from_str(&Bodies::label("u-1", 1)).unwrap();
        assert_eq!(v["label"], 1);
        assert_eq!(repeated_id(17), "dup-1");
    }
}
