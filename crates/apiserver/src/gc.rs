//! What a delete does for garbage collection, as kube-apiserver: the propagation policy
//! picks the `orphan` or `foregroundDeletion` finalizer the object keeps while the garbage
//! collector (a controller in `h8s-controllers`, an API client) finishes the work.
//!
//! - Background: no finalizer; the object goes at once and the collector deletes its
//!   dependents when it sees the delete.
//! - Foreground: `deletionTimestamp` + `foregroundDeletion`; the collector deletes the
//!   dependents, then removes the finalizer, and the object goes.
//! - Orphan: `deletionTimestamp` + `orphan`; the collector removes the object from its
//!   dependents' `ownerReferences`, then removes the finalizer.

use serde_json::Value;

use crate::obj;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    Background,
    Foreground,
    Orphan,
}

/// The object's finalizers after a delete with `policy` (kube-apiserver's
/// `deletionFinalizersForGarbageCollection`): both GC finalizers removed, the policy's one
/// added. Returns whether they changed.
pub fn deletion_finalizers(old: &[String], policy: Policy) -> (bool, Vec<String>) {
    let mut new: Vec<String> = old
        .iter()
        .filter(|f| *f != FOREGROUND && *f != ORPHAN)
        .cloned()
        .collect();
    match policy {
        Policy::Orphan => new.push(ORPHAN.to_string()),
        Policy::Foreground => new.push(FOREGROUND.to_string()),
        Policy::Background => {}
    }
    let same = {
        let a: std::collections::BTreeSet<&String> = old.iter().collect();
        let b: std::collections::BTreeSet<&String> = new.iter().collect();
        a == b
    };
    if same {
        (false, old.to_vec())
    } else {
        (true, new)
    }
}

/// The policy a delete without an explicit one gets from the finalizers the object already
/// has (an earlier delete's), before the kind's default.
pub fn policy_from_finalizers(fins: &[String]) -> Option<Policy> {
    fins.iter().find_map(|f| match f.as_str() {
        ORPHAN => Some(Policy::Orphan),
        FOREGROUND => Some(Policy::Foreground),
        _ => None,
    })
}

/// Whether a namespace has no `spec.finalizers` left (the namespace controller removes
/// `kubernetes` once the namespace is empty).
pub fn namespace_finalized(o: &Value) -> bool {
    obj::at(o, "spec.finalizers")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn finalizers_follow_the_policy() {
        assert_eq!(
            deletion_finalizers(&s(&["a"]), Policy::Background),
            (false, s(&["a"]))
        );
        assert_eq!(
            deletion_finalizers(&s(&["a"]), Policy::Foreground),
            (true, s(&["a", FOREGROUND]))
        );
        assert_eq!(
            deletion_finalizers(&s(&[FOREGROUND]), Policy::Orphan),
            (true, s(&[ORPHAN]))
        );
        assert_eq!(
            deletion_finalizers(&s(&[ORPHAN]), Policy::Background),
            (true, s(&[]))
        );
        assert_eq!(
            deletion_finalizers(&s(&[ORPHAN, "a"]), Policy::Orphan),
            (false, s(&[ORPHAN, "a"]))
        );
        assert_eq!(
            policy_from_finalizers(&s(&["a", ORPHAN])),
            Some(Policy::Orphan)
        );
        assert_eq!(policy_from_finalizers(&s(&["a"])), None);
    }
}
