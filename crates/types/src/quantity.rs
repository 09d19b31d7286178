//! Kubernetes resource quantities (`500m`, `1.5Gi`, `2e3`): syntax checks
//! with kube-apiserver's message, and exact values for comparisons and the
//! scheduler's arithmetic.

use std::cmp::Ordering;
use std::fmt;

/// The message kube-apiserver gives for a malformed quantity.
pub const QUANTITY_MSG: &str =
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'";

/// A parsed quantity: `mantissa × 10^exp10 × 2^exp2`, exactly. Equality
/// and order are by value (`1024Mi == 1Gi`).
#[derive(Debug, Clone, Copy)]
pub struct Quantity {
    negative: bool,
    mantissa: u128,
    exp10: i32,
    exp2: u32,
}

/// A string that is not a quantity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{QUANTITY_MSG}")]
pub struct QuantityError;

impl Quantity {
    /// Parses Kubernetes' quantity syntax.
    pub fn parse(s: &str) -> Result<Self, QuantityError> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (num, suffix) = rest.split_at(num_end);
        let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
        if (int_part.is_empty() && frac_part.is_empty()) || frac_part.contains('.') {
            return Err(QuantityError);
        }
        let digits: String = format!("{int_part}{frac_part}");
        let digits = digits.trim_start_matches('0');
        // More digits than an u128 holds: no real quantity needs them.
        if digits.len() > 38 {
            return Err(QuantityError);
        }
        let mantissa: u128 = if digits.is_empty() {
            0
        } else {
            digits.parse().map_err(|_| QuantityError)?
        };
        let mut exp10 = -(i32::try_from(frac_part.len()).map_err(|_| QuantityError)?);
        let mut exp2 = 0;
        match suffix {
            "" => {}
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            e if e.starts_with(['e', 'E']) => {
                let n = &e[1..];
                let digits = n.trim_start_matches(['+', '-']);
                if digits.is_empty()
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                    || n.len() - digits.len() > 1
                    || digits.len() > 4
                {
                    return Err(QuantityError);
                }
                let v: i32 = n.parse().map_err(|_| QuantityError)?;
                exp10 += v;
            }
            _ => return Err(QuantityError),
        }
        Ok(Self {
            negative: negative && mantissa != 0,
            mantissa,
            exp10,
            exp2,
        })
    }

    /// True for values below zero.
    pub fn is_negative(&self) -> bool {
        self.negative
    }

    /// The value in thousandths, rounded up (as Kubernetes' MilliValue);
    /// `None` when it does not fit an i128.
    pub fn milli_value(&self) -> Option<i128> {
        self.scaled(3)
    }

    /// The value as an integer, rounded up (as Kubernetes' Value).
    pub fn value(&self) -> Option<i128> {
        self.scaled(0)
    }

    /// `value × 10^scale`, rounded up away from… towards +∞.
    fn scaled(&self, scale: i32) -> Option<i128> {
        let mut m = i128::try_from(self.mantissa).ok()?;
        m = m.checked_mul(1i128.checked_shl(self.exp2)?)?;
        let e = self.exp10.checked_add(scale)?;
        let v = if e >= 0 {
            m.checked_mul(10i128.checked_pow(u32::try_from(e).ok()?)?)?
        } else {
            let div = 10i128.checked_pow(u32::try_from(-e).ok()?);
            match div {
                // Dividing by more than i128 holds leaves at most 1.
                None => i128::from(m != 0),
                Some(d) => {
                    let (q, r) = (m / d, m % d);
                    if r != 0 && !self.negative {
                        q + 1
                    } else {
                        q
                    }
                }
            }
        };
        Some(if self.negative { -v } else { v })
    }

    fn approx(&self) -> f64 {
        let v = self.mantissa as f64 * 10f64.powi(self.exp10) * 2f64.powi(self.exp2 as i32);
        if self.negative {
            -v
        } else {
            v
        }
    }
}

impl PartialEq for Quantity {
    fn eq(&self, other: &Self) -> bool {
        self.partial_cmp(other) == Some(Ordering::Equal)
    }
}

impl PartialOrd for Quantity {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        // Exact when both fit in nano-units, else by floating point.
        match (self.scaled(9), other.scaled(9)) {
            (Some(a), Some(b)) if self.exp10 >= -9 && other.exp10 >= -9 => Some(a.cmp(&b)),
            _ => self.approx().partial_cmp(&other.approx()),
        }
    }
}

impl fmt::Display for Quantity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.milli_value() {
            Some(m) if m % 1000 == 0 => write!(f, "{}", m / 1000),
            Some(m) => write!(f, "{m}m"),
            None => write!(f, "{}", self.approx()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_forms() {
        let q = |s| Quantity::parse(s).unwrap();
        assert_eq!(q("500m").milli_value(), Some(500));
        assert_eq!(q("1").milli_value(), Some(1000));
        assert_eq!(q("1.5").milli_value(), Some(1500));
        assert_eq!(q("1Ki").value(), Some(1024));
        assert_eq!(q("1.5Gi").value(), Some(1_610_612_736));
        assert_eq!(q("2e3").value(), Some(2000));
        assert_eq!(q("1E-3").milli_value(), Some(1));
        assert_eq!(q(".5").milli_value(), Some(500));
        assert_eq!(q("5.").milli_value(), Some(5000));
        assert_eq!(q("1n").milli_value(), Some(1), "rounded up");
        assert_eq!(q("-1").milli_value(), Some(-1000));
        assert!(q("-1").is_negative());
        assert!(!q("-0").is_negative());
        assert_eq!(q("100M").value(), Some(100_000_000));
        for bad in [
            "", "abc", "1.2.3", "1Kb", "1e", "1e+-2", "--1", ".", "1 Gi", "1e99999",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn compares_across_units() {
        let q = |s| Quantity::parse(s).unwrap();
        assert!(q("500m") < q("1"));
        assert!(q("1Gi") > q("1G"));
        assert!(q("1024Mi") == q("1Gi"));
        assert_eq!(q("1000m").partial_cmp(&q("1")), Some(Ordering::Equal));
        assert!(q("1e30") > q("1Ei"));
        assert_eq!(q("250m").to_string(), "250m");
        assert_eq!(q("2k").to_string(), "2000");
    }
}
