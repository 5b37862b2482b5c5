//! W3C Trace Context (level 1) on the wire: `traceparent` parsed into fixed-size ids and
//! formatted back without allocating, `tracestate` kept as the caller sent it. No I/O, no
//! clock, no locks: this runs on every request that carries a `traceparent`.

use std::sync::Arc;

/// The header (and gRPC metadata key) names.
pub const TRACEPARENT: &str = "traceparent";
pub const TRACESTATE: &str = "tracestate";

/// The longest `tracestate` passed on. W3C asks that at least 512 characters be propagated; a
/// longer one is dropped whole rather than cut mid-member (this gateway never adds a member).
pub const MAX_TRACESTATE: usize = 512;

/// A `traceparent` as formatted: `00-<32 hex>-<16 hex>-<2 hex>`.
pub const TRACEPARENT_LEN: usize = 55;

/// What a valid `traceparent` says: the trace, the caller's span, and whether the caller
/// records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub parent_id: u64,
    pub sampled: bool,
}

impl TraceParent {
    /// Parses a `traceparent` value; `None` when it is invalid, in which case W3C says to start
    /// a new trace (and to ignore `tracestate`). Version 00 must be exactly 55 characters; a
    /// later version may carry more after a `-`, which is ignored; version ff is invalid. Hex
    /// is lowercase only; an all-zero trace or parent id is invalid.
    pub fn parse(value: &[u8]) -> Option<TraceParent> {
        if value.len() < TRACEPARENT_LEN {
            return None;
        }
        let version = hex(value.get(0..2)?)? as u8;
        let longer_ok = version != 0 && value.get(TRACEPARENT_LEN).is_none_or(|&b| b == b'-');
        if version == 0xff || (value.len() > TRACEPARENT_LEN && !longer_ok) {
            return None;
        }
        if [2, 35, 52].iter().any(|&i| value.get(i) != Some(&b'-')) {
            return None;
        }
        let trace_id = hex(value.get(3..35)?)?;
        let parent_id = hex(value.get(36..52)?)? as u64;
        let flags = hex(value.get(53..55)?)? as u8;
        if trace_id == 0 || parent_id == 0 {
            return None;
        }
        Some(TraceParent { trace_id, parent_id, sampled: flags & 1 == 1 })
    }
}

/// `traceparent` for a span (version 00; the only flag is `sampled`).
pub fn format_traceparent(trace_id: u128, span_id: u64, sampled: bool) -> [u8; TRACEPARENT_LEN] {
    let mut out = [b'-'; TRACEPARENT_LEN];
    out[0] = b'0';
    out[1] = b'0';
    write_hex(&mut out[3..35], trace_id);
    write_hex(&mut out[36..52], u128::from(span_id));
    out[53] = b'0';
    out[54] = if sampled { b'1' } else { b'0' };
    out
}

/// A `tracestate` worth passing on: not empty, at most `MAX_TRACESTATE` bytes, printable
/// ASCII (its grammar's characters). Not parsed further: it is the caller's, passed through.
pub fn tracestate(value: &[u8]) -> Option<Arc<str>> {
    let fits = !value.is_empty() && value.len() <= MAX_TRACESTATE;
    if !fits || !value.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t') {
        return None;
    }
    std::str::from_utf8(value).ok().map(Arc::from)
}

/// A new trace id: random, never zero (W3C's "invalid" id).
pub fn new_trace_id() -> u128 {
    fastrand::u128(1..)
}

/// A new span id: random, never zero.
pub fn new_span_id() -> u64 {
    fastrand::u64(1..)
}

/// Lowercase hex of `value`'s low `out.len() * 4` bits into `out`.
fn write_hex(out: &mut [u8], mut value: u128) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(value & 0xf) as usize];
        value >>= 4;
    }
}

/// Lowercase hex (at most 32 digits) as a number; `None` on any other character.
fn hex(digits: &[u8]) -> Option<u128> {
    digits.iter().try_fold(0u128, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(d))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_w3c_example_parses_and_formats_back() {
        let p = TraceParent::parse(VALID.as_bytes()).unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.parent_id, 0x00f067aa0ba902b7);
        assert!(p.sampled);
        assert_eq!(&format_traceparent(p.trace_id, p.parent_id, true)[..], VALID.as_bytes());
        let unsampled = format_traceparent(1, 2, false);
        assert_eq!(&unsampled[..], b"00-00000000000000000000000000000001-0000000000000002-00");
    }

    #[test]
    fn flags_other_than_sampled_are_ignored() {
        let p = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-02").unwrap();
        assert!(!p.sampled);
        let p = TraceParent::parse(b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03").unwrap();
        assert!(p.sampled);
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        let bad = [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ];
        for value in bad {
            assert_eq!(TraceParent::parse(value.as_bytes()), None, "{value:?}");
        }
    }

    #[test]
    fn a_later_version_may_carry_more_fields() {
        let later = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert!(TraceParent::parse(later.as_bytes()).is_some());
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(TraceParent::parse(glued.as_bytes()), None);
    }

    #[test]
    fn tracestate_is_passed_through_within_bounds() {
        assert_eq!(
            tracestate(b"congo=t61rcWkgMzE,rojo=00f067aa0ba902b7").as_deref(),
            Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")
        );
        assert_eq!(tracestate(b""), None);
        assert_eq!(tracestate(&[b'a'; MAX_TRACESTATE + 1]), None);
        assert_eq!(tracestate("k=v\u{e9}".as_bytes()), None);
    }

    #[test]
    fn new_ids_are_never_zero() {
        assert!((0..1000).all(|_| new_trace_id() != 0 && new_span_id() != 0));
    }
}
