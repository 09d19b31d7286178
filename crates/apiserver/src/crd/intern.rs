//! `&'static` names for the resources of custom resource definitions.
//!
//! The registry, the routes and the strategies work on `&'static Resource`, as the static
//! table gives them. A custom resource's `Resource` is built from its definition and
//! interned here: each distinct string, name list and `Resource` value is leaked once and
//! reused, so recreating or updating a definition with the same names costs nothing.
//! What stays allocated is bounded by the distinct definitions ever served by this
//! process (a cluster-admin action), never by requests.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use h8s_types::{Resource, Subresource};

static STRS: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
static LISTS: LazyLock<Mutex<Vec<&'static [&'static str]>>> = LazyLock::new(Default::default);
static SUBS: LazyLock<Mutex<Vec<&'static [Subresource]>>> = LazyLock::new(Default::default);
static RESOURCES: LazyLock<Mutex<Vec<&'static Resource>>> = LazyLock::new(Default::default);

/// One string.
pub(crate) fn str(s: &str) -> &'static str {
    let mut set = STRS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(x) = set.get(s) {
        return x;
    }
    let leaked: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(leaked);
    leaked
}

/// A list of strings.
pub(crate) fn list(v: &[String]) -> &'static [&'static str] {
    let items: Vec<&'static str> = v.iter().map(|s| str(s)).collect();
    let mut lists = LISTS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(x) = lists.iter().find(|l| **l == items.as_slice()) {
        return x;
    }
    let leaked: &'static [&'static str] = Box::leak(items.into_boxed_slice());
    lists.push(leaked);
    leaked
}

/// A list of subresources.
pub(crate) fn subresources(v: Vec<Subresource>) -> &'static [Subresource] {
    let mut subs = SUBS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(x) = subs.iter().find(|l| **l == v.as_slice()) {
        return x;
    }
    let leaked: &'static [Subresource] = Box::leak(v.into_boxed_slice());
    subs.push(leaked);
    leaked
}

/// A resource.
pub(crate) fn resource(r: Resource) -> &'static Resource {
    let mut all = RESOURCES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(x) = all.iter().find(|x| ***x == r) {
        return x;
    }
    let leaked: &'static Resource = Box::leak(Box::new(r));
    all.push(leaked);
    leaked
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_same_value_is_leaked_once() {
        let a = super::str("widgets.intern.test");
        let b = super::str(&String::from("widgets.intern.test"));
        assert!(std::ptr::eq(a, b));
        let l1 = super::list(&["w".into(), "wd".into()]);
        let l2 = super::list(&["w".into(), "wd".into()]);
        assert!(std::ptr::eq(l1, l2));
    }
}
