//! Checks and their verdicts: one `PASS`/`WARN`/`FAIL` line per check with its figures, the
//! same checks in the JSON summary, and the exit status. A check is either functional (a FAIL
//! fails the run) or a latency target (noisy on a shared machine: a miss is a WARN unless the
//! run is strict).

use std::fmt;

use serde_json::{Value, json};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        })
    }
}

/// One check: a stable name (`flood.refused_at_once`), its verdict and the figures behind it.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub verdict: Verdict,
    pub detail: String,
}

impl Check {
    /// A functional check: PASS when `ok`, else FAIL.
    pub fn functional(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
        Check {
            name: name.into(),
            verdict: if ok { Verdict::Pass } else { Verdict::Fail },
            detail: detail.into(),
        }
    }

    /// A latency target: PASS when met; a miss is FAIL when `strict`, else WARN.
    pub fn target(name: impl Into<String>, ok: bool, strict: bool, detail: impl Into<String>) -> Check {
        let verdict = match (ok, strict) {
            (true, _) => Verdict::Pass,
            (false, true) => Verdict::Fail,
            (false, false) => Verdict::Warn,
        };
        Check { name: name.into(), verdict, detail: detail.into() }
    }

    /// A measurement that could not be taken (the gateway or the tool failed): always FAIL.
    pub fn broken(name: impl Into<String>, why: impl Into<String>) -> Check {
        Check { name: name.into(), verdict: Verdict::Fail, detail: why.into() }
    }

    pub fn to_json(&self) -> Value {
        json!({ "name": self.name, "verdict": self.verdict.to_string(), "detail": self.detail })
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.verdict, self.name, self.detail)
    }
}

/// The run's verdict: FAIL when any check failed.
pub fn overall(checks: &[Check]) -> Verdict {
    if checks.iter().any(|c| c.verdict == Verdict::Fail) {
        Verdict::Fail
    } else if checks.iter().any(|c| c.verdict == Verdict::Warn) {
        Verdict::Warn
    } else {
        Verdict::Pass
    }
}

/// `x` as a ratio to `base` (0 when `base` is 0).
pub fn ratio(x: f64, base: f64) -> f64 {
    if base > 0.0 { x / base } else { 0.0 }
}

/// The `q` quantile (0..=1) of `sorted` (nearest rank), `None` when empty.
pub fn quantile<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.saturating_sub(1).min(sorted.len() - 1)).copied()
}

/// Kibibytes as MiB with one decimal, for the figures.
pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missed_target_warns_unless_strict() {
        assert_eq!(Check::target("t", false, false, "").verdict, Verdict::Warn);
        assert_eq!(Check::target("t", false, true, "").verdict, Verdict::Fail);
        assert_eq!(Check::target("t", true, true, "").verdict, Verdict::Pass);
    }

    #[test]
    fn one_failure_fails_the_run() {
        let pass = Check::functional("a", true, "x");
        let warn = Check::target("b", false, false, "y");
        assert_eq!(overall(&[pass.clone(), warn.clone()]), Verdict::Warn);
        assert_eq!(overall(&[pass, warn, Check::broken("c", "z")]), Verdict::Fail);
        assert_eq!(overall(&[]), Verdict::Pass);
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!(quantile(&v, 0.5), Some(50));
        assert_eq!(quantile(&v, 0.99), Some(99));
        assert_eq!(quantile(&v, 1.0), Some(100));
        assert_eq!(quantile(&v, 0.0), Some(1));
        assert_eq!(quantile::<u32>(&[], 0.5), None);
    }
}
