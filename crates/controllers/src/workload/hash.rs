//! The template hash of Deployments, DaemonSets and StatefulSets (`pod-template-hash`,
//! `controller-revision-hash`): FNV-1a (32 bit) of the template, and of the collision count
//! when there is one, written with Kubernetes' `SafeEncodeString` alphabet. Not
//! byte-identical to Kubernetes' (which hashes a Go dump of the struct), but stable: the
//! same template always gives the same name.

use serde::Serialize;

/// Kubernetes' `rand.SafeEncodeString` alphabet: no vowels, no confusable characters.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The hash of `template` (any serialisable object) and `collision_count`.
pub(crate) fn compute_hash<T: Serialize>(template: &T, collision_count: Option<i32>) -> String {
    let mut h = Fnv32a::new();
    // serde_json::Value keeps its keys sorted, so the bytes depend only on the content.
    let v = serde_json::to_value(template).unwrap_or_default();
    h.write(v.to_string().as_bytes());
    if let Some(c) = collision_count {
        h.write(&(c as u32).to_le_bytes());
    }
    safe_encode(&h.0.to_string())
}

/// Kubernetes' `SafeEncodeString`: each byte mapped into [`ALPHANUMS`].
pub(crate) fn safe_encode(s: &str) -> String {
    s.bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

struct Fnv32a(u32);

impl Fnv32a {
    fn new() -> Self {
        Fnv32a(0x811c_9dc5)
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u32::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0193);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fnv32a_matches_the_reference_vectors() {
        let mut h = Fnv32a::new();
        h.write(b"a");
        assert_eq!(h.0, 0xe40c_292c);
        let mut h = Fnv32a::new();
        h.write(b"foobar");
        assert_eq!(h.0, 0xbf9c_f968);
    }

    #[test]
    fn hash_is_stable_and_sensitive() {
        let a = json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}});
        let b = json!({"spec": {"containers": [{"name": "c", "image": "nginx:2"}]}});
        assert_eq!(compute_hash(&a, None), compute_hash(&a.clone(), None));
        assert_ne!(compute_hash(&a, None), compute_hash(&b, None));
        assert_ne!(compute_hash(&a, None), compute_hash(&a, Some(1)));
        let h = compute_hash(&a, None);
        assert!(h.bytes().all(|c| ALPHANUMS.contains(&c)), "{h}");
        assert!((1..=10).contains(&h.len()));
    }
}
