//! The fast path for JSON tensor data: numbers only, at any nesting, parsed straight from the
//! text in one byte-level pass (the common case for float and integer tensors, several times
//! faster than serde's visitor per element). The caller has already checked that the text is
//! well-formed JSON, so brackets, commas and whitespace only separate numbers. `None` as soon as
//! anything else appears (a string such as "NaN", a boolean, a fraction for an integer type, a
//! number beyond the type's range), more than `count` numbers, or nesting deeper than
//! serde_json's own limit: the general path then decides, with its errors, so both paths give
//! every input the same answer.
//!
//! Short decimals (`-?d+(.d+)?`, the form clients send) are converted by Clinger's fast path:
//! the digits as an exact integer divided by an exact power of ten, one correctly rounded IEEE
//! division, so the result is the correctly rounded value, bit for bit what `str::parse` gives.
//! Anything longer, or with an exponent, goes through `str::parse`.

/// Parses the numbers of `text` (a JSON array, any nesting) into at most `count` values.
pub(super) fn numbers<T: Plain>(text: &str, count: usize) -> Option<Vec<T>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(count);
    let (mut depth, mut i) = (0usize, 0usize);
    while let Some(&b) = bytes.get(i) {
        match b {
            b'[' => {
                depth += 1;
                // Deeper than serde_json's own limit: let the general path refuse it the same way.
                if depth > 127 {
                    return None;
                }
                i += 1;
            }
            b']' => {
                depth = depth.saturating_sub(1);
                i += 1;
            }
            _ if is_separator(b) => i += 1,
            _ => {
                let start = i;
                while bytes.get(i).is_some_and(|&b| !is_separator(b) && b != b'[' && b != b']') {
                    i += 1;
                }
                if out.len() == count {
                    return None;
                }
                // Token edges are ASCII bytes (or the ends), so the slice is valid UTF-8.
                out.push(T::parse_token(text.get(start..i)?)?);
            }
        }
    }
    Some(out)
}

fn is_separator(b: u8) -> bool {
    matches!(b, b',' | b' ' | b'\n' | b'\r' | b'\t')
}

/// The element types the fast path parses.
pub(super) trait Plain: Sized {
    fn parse_token(token: &str) -> Option<Self>;
}

impl Plain for i32 {
    fn parse_token(token: &str) -> Option<i32> {
        token.parse().ok()
    }
}

impl Plain for i64 {
    fn parse_token(token: &str) -> Option<i64> {
        token.parse().ok()
    }
}

/// Powers of ten exactly representable as `f32` (5^10 < 2^24) and `f64` (5^22 < 2^53).
const POW10_F32: [f32; 11] = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10];
const POW10_F64: [f64; 23] = [
    1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18,
    1e19, 1e20, 1e21, 1e22,
];

/// The float types: Clinger's fast path when the digits and the power of ten are both exact in
/// the type (below 2^24 and up to 10^10 for `f32`, below 2^53 and up to 10^22 for `f64`), else
/// `str::parse`. A literal that overflows parses to infinity, which the general path refuses or
/// converts its own way: not finite is not taken here.
macro_rules! plain_float {
    ($float:ty, $powers:expr, $exact_bits:expr) => {
        impl Plain for $float {
            fn parse_token(token: &str) -> Option<$float> {
                let fast = short_decimal(token.as_bytes()).and_then(|(negative, digits, scale)| {
                    let power = $powers.get(scale as usize)?;
                    (digits <= 1 << $exact_bits).then(|| {
                        let v = digits as $float / power;
                        if negative { -v } else { v }
                    })
                });
                fast.or_else(|| token.parse::<$float>().ok()).filter(|v| v.is_finite())
            }
        }
    };
}

plain_float!(f32, POW10_F32, 24);
plain_float!(f64, POW10_F64, 53);

/// `-?d+(.d+)?` with at most 19 digits in all: (negative, the digits as one integer, how many
/// of them follow the point). `None` for anything else (an exponent, more digits).
fn short_decimal(token: &[u8]) -> Option<(bool, u64, u32)> {
    let (negative, rest) = match token.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, token),
    };
    let (mut value, mut digits, mut scale, mut point) = (0u64, 0u32, 0u32, false);
    for &b in rest {
        match b {
            b'0'..=b'9' => {
                if digits == 19 {
                    return None;
                }
                value = value * 10 + u64::from(b - b'0');
                digits += 1;
                scale += u32::from(point);
            }
            b'.' if !point => point = true,
            _ => return None,
        }
    }
    (digits > 0).then_some((negative, value, scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic pseudo-random u64s (xorshift).
    fn sequence(seed: u64) -> impl FnMut() -> u64 {
        let mut state = seed | 1;
        move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        }
    }

    /// Decimal literals of every length the fast path takes and a little beyond.
    fn literals() -> Vec<String> {
        let mut next = sequence(0x5eed);
        let mut out = vec!["0".into(), "-0".into(), "0.0".into(), "16777216".into(), "16777217".into()];
        for _ in 0..200_000 {
            let digits = 1 + next() % 20;
            let mantissa = next() % 10u64.pow(digits.min(19) as u32);
            let text = format!("{mantissa:0width$}", width = digits as usize);
            let point = (next() % (digits + 1)) as usize;
            let text = if point == 0 || point == text.len() {
                text.trim_start_matches('0').to_string()
            } else {
                let (int, frac) = text.split_at(point);
                let int = int.trim_start_matches('0');
                format!("{}.{frac}", if int.is_empty() { "0" } else { int })
            };
            let text = if text.is_empty() { "0".to_string() } else { text };
            out.push(if next().is_multiple_of(2) { format!("-{text}") } else { text });
        }
        out
    }

    #[test]
    fn every_short_decimal_is_rounded_as_str_parse_rounds_it() {
        for text in literals() {
            let f = f32::parse_token(&text).expect("a number");
            assert_eq!(f.to_bits(), text.parse::<f32>().unwrap().to_bits(), "f32 {text}");
            let d = f64::parse_token(&text).expect("a number");
            assert_eq!(d.to_bits(), text.parse::<f64>().unwrap().to_bits(), "f64 {text}");
        }
    }

    #[test]
    fn exponents_long_literals_and_overflow_take_the_slow_way_or_none() {
        assert_eq!(f32::parse_token("1.5e3"), Some(1500.0));
        assert_eq!(f64::parse_token("-2E-2"), Some(-0.02));
        assert_eq!(f32::parse_token("3.4028236e38"), None, "overflows f32");
        assert_eq!(f64::parse_token("1e400"), None);
        let long = "0.1000000000000000055511151231257827021181583404541015625";
        assert_eq!(f64::parse_token(long), Some(0.1));
        assert_eq!(f32::parse_token("\"NaN\""), None);
        assert_eq!(i64::parse_token("1.5"), None);
    }

    #[test]
    fn numbers_reads_any_nesting_and_stops_at_anything_else() {
        assert_eq!(numbers::<f32>("[[1.5, -2],\n[3, 4.25]]", 4), Some(vec![1.5, -2.0, 3.0, 4.25]));
        assert_eq!(numbers::<f32>("[1, 2, 3]", 2), None, "more than count");
        assert_eq!(numbers::<f32>("[1, \"NaN\"]", 2), None);
        assert_eq!(numbers::<i64>("[1, true]", 2), None);
        let deep = format!("{}1{}", "[".repeat(128), "]".repeat(128));
        assert_eq!(numbers::<f32>(&deep, 1), None);
        let ok = format!("{}1{}", "[".repeat(127), "]".repeat(127));
        assert_eq!(numbers::<f32>(&ok, 1), Some(vec![1.0]));
    }
}
