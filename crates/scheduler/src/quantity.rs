//! Kubernetes resource quantities (`100m`, `1.5Gi`, `2e3`) as exact integers.

/// The value of a quantity scaled by `10^scale` (3 for millicores, 0 for bytes), rounded
/// up as Kubernetes' `MilliValue`/`Value` do. `None` for text that is not a quantity.
pub fn parse_scaled(s: &str, scale: u32) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let (neg, body) = match s.as_bytes()[0] {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    // Split the number from its suffix.
    let num_end = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (num, suffix) = body.split_at(num_end);
    if num.is_empty() || num == "." || num.matches('.').count() > 1 {
        return None;
    }
    // Digits as an integer with a decimal exponent.
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    let mut mant: i128 = 0;
    for c in int_part.chars().chain(frac_part.chars()) {
        mant = mant
            .checked_mul(10)?
            .checked_add((c as u8 - b'0') as i128)?;
    }
    let mut exp10: i32 = -(frac_part.len() as i32);
    let mut mult: i128 = 1;
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
        "Ki" => mult = 1 << 10,
        "Mi" => mult = 1 << 20,
        "Gi" => mult = 1 << 30,
        "Ti" => mult = 1 << 40,
        "Pi" => mult = 1 << 50,
        "Ei" => mult = 1 << 60,
        s if s.starts_with(['e', 'E']) => {
            let e: i32 = s[1..].parse().ok()?;
            if e.abs() > 40 {
                return None;
            }
            exp10 += e;
        }
        _ => return None,
    }
    exp10 += scale as i32;
    let mut v = mant.checked_mul(mult)?;
    if exp10 >= 0 {
        for _ in 0..exp10 {
            v = v.checked_mul(10)?;
        }
    } else {
        let mut div: i128 = 1;
        for _ in 0..(-exp10) {
            div = div.checked_mul(10)?;
        }
        // Round up (away from zero), as Kubernetes does.
        v = (v + div - 1) / div;
    }
    let v = if neg { -v } else { v };
    i64::try_from(v).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_scaled;

    #[test]
    fn cpu_and_memory() {
        assert_eq!(parse_scaled("100m", 3), Some(100));
        assert_eq!(parse_scaled("0.1", 3), Some(100));
        assert_eq!(parse_scaled("2", 3), Some(2000));
        assert_eq!(parse_scaled("1.5", 3), Some(1500));
        assert_eq!(parse_scaled("1n", 3), Some(1)); // rounds up
        assert_eq!(parse_scaled("128Mi", 0), Some(128 << 20));
        assert_eq!(parse_scaled("1.5Gi", 0), Some(3 << 29));
        assert_eq!(parse_scaled("1G", 0), Some(1_000_000_000));
        assert_eq!(parse_scaled("2e3", 0), Some(2000));
        assert_eq!(parse_scaled("1E", 0), Some(1_000_000_000_000_000_000));
        assert_eq!(parse_scaled("110", 0), Some(110));
        assert_eq!(parse_scaled("-1", 0), Some(-1));
        assert_eq!(parse_scaled("abc", 0), None);
        assert_eq!(parse_scaled("1Qi", 0), None);
        assert_eq!(parse_scaled("", 0), None);
        assert_eq!(parse_scaled("1..2", 0), None);
        assert_eq!(parse_scaled("99999999999999999999999Ei", 0), None);
    }
}
