//! Small helpers: randomness, uids, timestamps, query strings.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use ring::rand::SecureRandom;

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // The system RNG only fails when the OS has no entropy source at all; a zeroed
    // buffer would be unsafe for tokens, so that is a fatal condition.
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .expect("system random number generator failed");
    b
}

/// A random version 4 UUID, as Kubernetes uses for `metadata.uid`.
pub fn new_uid() -> String {
    let mut b = random_bytes::<16>();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The five-character suffix of `generateName`, from Kubernetes' alphabet without vowels.
pub fn name_suffix() -> String {
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    random_bytes::<5>()
        .iter()
        .map(|b| ALPHA[(*b as usize) % ALPHA.len()] as char)
        .collect()
}

/// Now as RFC 3339 in UTC with whole seconds (`metav1.Time`).
pub fn now_rfc3339() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    rfc3339(secs)
}

pub fn rfc3339(secs: i64) -> String {
    let days = secs.div_euclid(86400);
    let rem = secs.rem_euclid(86400);
    // Howard Hinnant's days-to-civil.
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes `%XX` escapes (and `+` as a space when `plus` is set). Invalid escapes stay
/// as they are; invalid UTF-8 is replaced.
pub fn percent_decode(s: &str, plus: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h * 16 + l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A parsed query string. Repeated keys keep every value in order.
#[derive(Debug, Default, Clone)]
pub struct Query(HashMap<String, Vec<String>>);

impl Query {
    pub fn parse(q: Option<&str>) -> Query {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for pair in q.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            m.entry(percent_decode(k, true))
                .or_default()
                .push(percent_decode(v, true));
        }
        Query(m)
    }
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).and_then(|v| v.first()).map(|s| s.as_str())
    }
    pub fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map(|v| v.as_slice()).unwrap_or(&[])
    }
    /// A copy with only `keys`.
    pub fn only(&self, keys: &[&str]) -> Query {
        Query(
            self.0
                .iter()
                .filter(|(k, _)| keys.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        )
    }
    pub fn flag(&self, k: &str) -> bool {
        matches!(self.get(k), Some("true") | Some("1") | Some("")) && self.0.contains_key(k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951782400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1700000000), "2023-11-14T22:13:20Z");
    }

    #[test]
    fn uids_and_names() {
        let u = new_uid();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, new_uid());
        assert_eq!(name_suffix().len(), 5);
    }

    #[test]
    fn query() {
        let q = Query::parse(Some("a=1&b=x%3Dy&c&a=2&l=app+in+(a%2Cb)&bad=%zz%4"));
        assert_eq!(q.get("a"), Some("1"));
        assert_eq!(q.all("a"), &["1".to_string(), "2".to_string()]);
        assert_eq!(q.get("b"), Some("x=y"));
        assert!(q.flag("c"));
        assert!(!q.flag("d"));
        assert_eq!(q.get("l"), Some("app in (a,b)"));
        assert_eq!(q.get("bad"), Some("%zz%4"));
    }
}
