//! Kubernetes resource quantities (`100m`, `1.5`, `128Mi`, `1G`, `2e3`) as numbers.

/// A quantity's value in milli-units (`1` → 1000, `250m` → 250), rounded up. `None` if it is
/// not a quantity.
pub(crate) fn milli(q: &str) -> Option<u128> {
    let v = value(q)?;
    Some((v * 1000.0).ceil().max(0.0) as u128)
}

/// A quantity's value in whole units (`128Mi` → 134217728), rounded up.
pub(crate) fn units(q: &str) -> Option<u128> {
    let v = value(q)?;
    Some(v.ceil().max(0.0) as u128)
}

fn value(q: &str) -> Option<f64> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => 10f64.powi(s[1..].parse().ok()?),
        _ => return None,
    };
    let v = n * mult;
    v.is_finite().then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("1.5"), Some(1500));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(units("128Mi"), Some(128 << 20));
        assert_eq!(units("1G"), Some(1_000_000_000));
        assert_eq!(units("2e3"), Some(2000));
        assert_eq!(units("1.5Gi"), Some(3 << 29));
        assert_eq!(units("abc"), None);
        assert_eq!(units("12Zi"), None);
    }
}
