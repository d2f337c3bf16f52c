//! Byte counts as people write them: `80GiB`, `80GB`, `512MiB`, `1.5TiB`.
//!
//! Binary units (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB, MB, GB, TB) powers
//! of 1000, as GPU vendors (binary) and disk vendors (decimal) use them. A bare number is an
//! error rather than a guess at the unit.

use std::fmt;

use super::error::PlanError;

const UNITS: [(&str, u64); 13] = [
    ("b", 1),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
    ("k", 1 << 10),
    ("m", 1 << 20),
    ("g", 1 << 30),
    ("t", 1 << 40),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
];

/// Parses a byte count such as `80GiB`, `24 GB`, `512MiB`, `1.5TiB` or `4096B`.
///
/// The single letters K, M, G, T are binary (as `ls -h` and `free -h` print them). A
/// fraction is allowed and rounded down to a whole byte.
pub fn parse_bytes(text: &str) -> Result<u64, PlanError> {
    let bad = |why: &str| PlanError::BadSize {
        text: text.to_string(),
        why: why.to_string(),
    };
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    if number.is_empty() {
        return Err(bad("it does not start with a number"));
    }
    if unit.is_empty() {
        return Err(bad(
            "it has no unit: write e.g. 80GiB, 80GB, 512MiB or 1TiB",
        ));
    }
    let Some(&(_, scale)) = UNITS.iter().find(|(u, _)| u.eq_ignore_ascii_case(unit)) else {
        return Err(bad(&format!(
            "unknown unit '{unit}' (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB, K, M, G or T)"
        )));
    };
    let (whole, frac) = match number.split_once('.') {
        Some((w, f)) => (w, f),
        None => (number, ""),
    };
    if frac.contains('.') || (whole.is_empty() && frac.is_empty()) {
        return Err(bad("the number is malformed"));
    }
    if frac.len() > 12 {
        return Err(bad("more than 12 decimal places"));
    }
    // Exact integer arithmetic: (whole·10^d + frac)·scale / 10^d, rounded down.
    let digits = format!("{whole}{frac}");
    let mantissa: u128 = digits.parse().map_err(|_| bad("the number is too large"))?;
    let bytes = mantissa
        .checked_mul(scale as u128)
        .map(|b| b / 10u128.pow(frac.len() as u32))
        .filter(|b| *b <= u64::MAX as u128)
        .ok_or_else(|| bad("the size does not fit in 64 bits"))?;
    Ok(bytes as u64)
}

/// A byte count printed in GiB/MiB/KiB with two decimals, the way the plan table shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0 as f64;
        let (value, unit) = if self.0 >= 1 << 30 {
            (b / (1u64 << 30) as f64, "GiB")
        } else if self.0 >= 1 << 20 {
            (b / (1u64 << 20) as f64, "MiB")
        } else if self.0 >= 1 << 10 {
            (b / (1u64 << 10) as f64, "KiB")
        } else {
            return f.pad(&format!("{} B", self.0));
        };
        f.pad(&format!("{value:.2} {unit}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_bytes("80GiB").unwrap(), 80 << 30);
        assert_eq!(parse_bytes("80GB").unwrap(), 80_000_000_000);
        assert_eq!(parse_bytes("80 gib").unwrap(), 80 << 30);
        assert_eq!(parse_bytes("512MiB").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1TiB").unwrap(), 1 << 40);
        assert_eq!(parse_bytes("1T").unwrap(), 1 << 40);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("0.1GB").unwrap(), 100_000_000);
        assert_eq!(parse_bytes("4096B").unwrap(), 4096);
        assert_eq!(parse_bytes("1.0000000001KB").unwrap(), 1000);
    }

    #[test]
    fn errors_name_the_text_and_the_problem() {
        for (text, why) in [
            ("80", "no unit"),
            ("GiB", "does not start with a number"),
            ("80XB", "unknown unit 'XB'"),
            ("1.2.3GiB", "malformed"),
            ("99999999999999999999TiB", "64 bits"),
            ("-1GiB", "does not start with a number"),
        ] {
            let e = parse_bytes(text).unwrap_err().to_string();
            assert!(e.contains(text) && e.contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn display() {
        assert_eq!(Bytes(80 << 30).to_string(), "80.00 GiB");
        assert_eq!(Bytes(512 << 20).to_string(), "512.00 MiB");
        assert_eq!(Bytes(1536).to_string(), "1.50 KiB");
        assert_eq!(Bytes(12).to_string(), "12 B");
    }
}
