//! `autoscaling` HorizontalPodAutoscalers: `v2` (stored) ↔ `v1` conversion and `v2`
//! defaulting, as Kubernetes does them.
//!
//! `v1` knows one metric, the CPU utilization (`targetCPUUtilizationPercentage`). What
//! `v1` cannot say lives on in annotations, as kube-apiserver keeps it, so a `v1` round
//! trip loses nothing: other metrics in `autoscaling.alpha.kubernetes.io/metrics`,
//! current metrics in `…/current-metrics`, conditions in `…/conditions` and the
//! behavior in `…/behavior`. (h8s writes the `v2` JSON form into them; kube-apiserver
//! writes the older `v2beta1`-shaped form. Only h8s reads them back.)

use serde_json::{json, Map, Value};

/// The CPU utilization an HPA without metrics targets (`DefaultCPUUtilization`).
pub const DEFAULT_CPU_UTILIZATION: i64 = 80;

const METRICS: &str = "autoscaling.alpha.kubernetes.io/metrics";
const CURRENT: &str = "autoscaling.alpha.kubernetes.io/current-metrics";
const CONDITIONS: &str = "autoscaling.alpha.kubernetes.io/conditions";
const BEHAVIOR: &str = "autoscaling.alpha.kubernetes.io/behavior";

fn is_cpu_utilization(m: &Value) -> bool {
    m["type"] == "Resource"
        && m.pointer("/resource/name") == Some(&json!("cpu"))
        && m.pointer("/resource/target/type") == Some(&json!("Utilization"))
}

fn annotations(o: &mut Value) -> &mut Map<String, Value> {
    if !o["metadata"].is_object() {
        o["metadata"] = json!({});
    }
    let m = &mut o["metadata"];
    if !m["annotations"].is_object() {
        m["annotations"] = json!({});
    }
    m["annotations"].as_object_mut().expect("object")
}

fn take_annotation(o: &mut Value, key: &str) -> Option<Value> {
    let a = o.pointer_mut("/metadata/annotations")?.as_object_mut()?;
    let v = a.remove(key)?;
    let empty = a.is_empty();
    if empty {
        if let Some(m) = o["metadata"].as_object_mut() {
            m.remove("annotations");
        }
    }
    v.as_str().and_then(|s| serde_json::from_str(s).ok())
}

fn put_annotation(o: &mut Value, key: &str, v: &Value) {
    annotations(o).insert(key.into(), Value::String(v.to_string()));
}

/// An `autoscaling/v2` HPA in its `autoscaling/v1` form.
pub fn v2_to_v1(mut o: Value) -> Value {
    if !o.is_object() {
        return o;
    }
    o["apiVersion"] = json!("autoscaling/v1");
    let mut spec = o.get("spec").cloned().unwrap_or_else(|| json!({}));
    let metrics = spec
        .as_object_mut()
        .and_then(|m| m.remove("metrics"))
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default();
    let behavior = spec.as_object_mut().and_then(|m| m.remove("behavior"));
    let (cpu, others): (Vec<Value>, Vec<Value>) = metrics.into_iter().partition(is_cpu_utilization);
    if let Some(u) = cpu
        .first()
        .and_then(|m| m.pointer("/resource/target/averageUtilization"))
    {
        spec["targetCPUUtilizationPercentage"] = u.clone();
    }
    if !others.is_empty() {
        put_annotation(&mut o, METRICS, &Value::Array(others));
    }
    if let Some(b) = behavior.filter(|b| !b.is_null()) {
        put_annotation(&mut o, BEHAVIOR, &b);
    }
    o["spec"] = spec;
    if let Some(mut status) = o.get("status").cloned().filter(Value::is_object) {
        let current = status
            .as_object_mut()
            .and_then(|m| m.remove("currentMetrics"))
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default();
        let conditions = status.as_object_mut().and_then(|m| m.remove("conditions"));
        let (cpu, others): (Vec<Value>, Vec<Value>) = current.into_iter().partition(|m| {
            m["type"] == "Resource" && m.pointer("/resource/name") == Some(&json!("cpu"))
        });
        if let Some(u) = cpu
            .first()
            .and_then(|m| m.pointer("/resource/current/averageUtilization"))
        {
            status["currentCPUUtilizationPercentage"] = u.clone();
        }
        if !others.is_empty() {
            put_annotation(&mut o, CURRENT, &Value::Array(others));
        }
        if let Some(c) = conditions.filter(|c| c.as_array().is_some_and(|a| !a.is_empty())) {
            put_annotation(&mut o, CONDITIONS, &c);
        }
        o["status"] = status;
    }
    o
}

/// An `autoscaling/v1` HPA in its `autoscaling/v2` form (not defaulted).
pub fn v1_to_v2(mut o: Value) -> Value {
    if !o.is_object() {
        return o;
    }
    o["apiVersion"] = json!("autoscaling/v2");
    let others = take_annotation(&mut o, METRICS);
    let current = take_annotation(&mut o, CURRENT);
    let conditions = take_annotation(&mut o, CONDITIONS);
    let behavior = take_annotation(&mut o, BEHAVIOR);
    let mut spec = o.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut metrics = Vec::new();
    if let Some(t) = spec
        .as_object_mut()
        .and_then(|m| m.remove("targetCPUUtilizationPercentage"))
        .filter(|t| !t.is_null())
    {
        metrics.push(json!({"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": t}}}));
    }
    if let Some(Value::Array(a)) = others {
        metrics.extend(a);
    }
    if !metrics.is_empty() {
        spec["metrics"] = Value::Array(metrics);
    }
    if let Some(b) = behavior {
        spec["behavior"] = b;
    }
    o["spec"] = spec;
    if let Some(mut status) = o.get("status").cloned().filter(Value::is_object) {
        let mut cur = Vec::new();
        if let Some(u) = status
            .as_object_mut()
            .and_then(|m| m.remove("currentCPUUtilizationPercentage"))
            .filter(|u| !u.is_null())
        {
            cur.push(json!({"type": "Resource", "resource": {"name": "cpu",
                "current": {"averageUtilization": u}}}));
        }
        if let Some(Value::Array(a)) = current {
            cur.extend(a);
        }
        if !cur.is_empty() {
            status["currentMetrics"] = Value::Array(cur);
        }
        if let Some(c) = conditions {
            status["conditions"] = c;
        }
        o["status"] = status;
    }
    o
}

/// `SetDefaults_HorizontalPodAutoscaler` of `autoscaling/v2`: `minReplicas` 1, a CPU
/// utilization target of 80 % when no metric is given, and a given behavior's missing
/// rules filled in.
pub fn default_v2(o: &mut Value) {
    let Some(spec) = o.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if spec.get("minReplicas").is_none_or(Value::is_null) {
        spec["minReplicas"] = json!(1);
    }
    if spec
        .get("metrics")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
    {
        spec["metrics"] = json!([{"type": "Resource", "resource": {"name": "cpu",
            "target": {"type": "Utilization", "averageUtilization": DEFAULT_CPU_UTILIZATION}}}]);
    }
    if let Some(b) = spec.get_mut("behavior").filter(|b| b.is_object()) {
        let up = json!({"stabilizationWindowSeconds": 0, "selectPolicy": "Max", "policies": [
            {"type": "Pods", "value": 4, "periodSeconds": 15},
            {"type": "Percent", "value": 100, "periodSeconds": 15}]});
        let down = json!({"selectPolicy": "Max", "policies": [
            {"type": "Percent", "value": 100, "periodSeconds": 15}]});
        for (k, d) in [("scaleUp", up), ("scaleDown", down)] {
            let r = &mut b[k];
            if !r.is_object() {
                *r = json!({});
            }
            for (f, v) in d.as_object().expect("object") {
                if r.get(f).is_none_or(Value::is_null) {
                    r[f] = v.clone();
                }
            }
        }
    }
}

/// `autoscaling/v1` defaulting: `minReplicas` 1.
pub fn default_v1(o: &mut Value) {
    if let Some(spec) = o.get_mut("spec").filter(|s| s.is_object()) {
        if spec.get("minReplicas").is_none_or(Value::is_null) {
            spec["minReplicas"] = json!(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_round_trips_through_v2() {
        let v1 = json!({"apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"},
                "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 50},
            "status": {"currentReplicas": 2, "desiredReplicas": 2,
                "currentCPUUtilizationPercentage": 40}});
        let v2 = v1_to_v2(v1.clone());
        assert_eq!(
            v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            50
        );
        assert_eq!(
            v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"],
            40
        );
        assert_eq!(v2_to_v1(v2), v1);
    }

    #[test]
    fn v2_only_fields_survive_v1() {
        let mem = json!({"type": "Resource", "resource": {"name": "memory",
            "target": {"type": "AverageValue", "averageValue": "100Mi"}}});
        let mut v2 = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "h"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "maxReplicas": 5,
                "metrics": [mem.clone()], "behavior": {"scaleDown": {"stabilizationWindowSeconds": 60}}},
            "status": {"conditions": [{"type": "AbleToScale", "status": "True"}]}});
        default_v2(&mut v2);
        assert_eq!(v2["spec"]["minReplicas"], 1);
        assert_eq!(v2["spec"]["behavior"]["scaleUp"]["selectPolicy"], "Max");
        assert_eq!(
            v2["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
            60
        );
        let v1 = v2_to_v1(v2.clone());
        assert!(v1["spec"].get("targetCPUUtilizationPercentage").is_none());
        assert!(v1["metadata"]["annotations"][METRICS].is_string());
        assert_eq!(v1_to_v2(v1), v2);
    }

    #[test]
    fn no_metrics_default_to_cpu() {
        let mut o = json!({"spec": {"maxReplicas": 3}});
        default_v2(&mut o);
        assert!(is_cpu_utilization(&o["spec"]["metrics"][0]));
        assert_eq!(
            o["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
            80
        );
        assert!(o["spec"].get("behavior").is_none());
    }
}
