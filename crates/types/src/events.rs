//! `events.k8s.io/v1` Event ↔ core `v1` Event, as Kubernetes converts them (both are
//! stored in the core form): `regarding` is `involvedObject`, `note` is `message`,
//! `reportingController` is `reportingComponent`, and the core-only fields live on as
//! `deprecatedSource`, `deprecatedFirstTimestamp`, `deprecatedLastTimestamp` and
//! `deprecatedCount`.

use serde_json::{Map, Value};

/// (events.k8s.io/v1 field, core v1 field) pairs that only change name.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

fn convert(o: Value, api_version: &str, from_v1: bool) -> Value {
    let Value::Object(m) = o else {
        return o;
    };
    let mut out = Map::with_capacity(m.len());
    for (k, v) in m {
        let key = RENAMED
            .iter()
            .find_map(|(v1, core)| {
                let (from, to) = if from_v1 { (v1, core) } else { (core, v1) };
                (*from == k).then(|| to.to_string())
            })
            .unwrap_or(k);
        out.insert(key, v);
    }
    out.insert("apiVersion".into(), Value::String(api_version.into()));
    out.insert("kind".into(), Value::String("Event".into()));
    Value::Object(out)
}

/// An `events.k8s.io/v1` Event in its core `v1` form.
pub fn v1_to_core(o: Value) -> Value {
    convert(o, "v1", true)
}

/// A core `v1` Event in its `events.k8s.io/v1` form.
pub fn core_to_v1(o: Value) -> Value {
    convert(o, "events.k8s.io/v1", false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips() {
        let core = json!({"apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "e", "namespace": "d"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "message": "hi",
            "reason": "Started", "type": "Normal", "source": {"component": "kubelet"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "count": 3,
            "reportingComponent": "kubelet", "reportingInstance": "n1"});
        let v1 = core_to_v1(core.clone());
        assert_eq!(v1["apiVersion"], "events.k8s.io/v1");
        assert_eq!(v1["regarding"]["name"], "p");
        assert_eq!(v1["note"], "hi");
        assert_eq!(v1["deprecatedSource"]["component"], "kubelet");
        assert_eq!(v1["deprecatedCount"], 3);
        assert_eq!(v1["reportingController"], "kubelet");
        assert_eq!(v1["reportingInstance"], "n1");
        assert!(v1.get("involvedObject").is_none());
        assert_eq!(v1_to_core(v1), core);
    }
}
