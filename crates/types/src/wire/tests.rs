//! Bodies as kube-apiserver writes them, recorded as facts (field order of the Go structs
//! in k8s.io/api and apimachinery, Go's sorted map keys, struct fields always written).

use super::*;
use serde_json::json;

fn check(v: Value, expected: &str) {
    assert_eq!(to_string(&v), expected);
    // Same content: only the order changes.
    let back: Value = serde_json::from_str(expected).unwrap();
    let mut with_empties = v.clone();
    merge_empty(&mut with_empties, &back);
    assert_eq!(with_empties, back);
}

/// Adds the `{}` objects `expected` has and `v` lacks (struct fields Go always writes).
fn merge_empty(v: &mut Value, expected: &Value) {
    if let (Value::Array(a), Value::Array(e)) = (&mut *v, expected) {
        for (x, y) in a.iter_mut().zip(e) {
            merge_empty(x, y);
        }
    }
    if let (Value::Object(m), Value::Object(e)) = (v, expected) {
        for (k, ev) in e {
            match m.get_mut(k) {
                Some(mv) => merge_empty(mv, ev),
                None if ev
                    .as_object()
                    .is_some_and(|o| o.values().all(|x| x == &json!({}))) =>
                {
                    m.insert(k.clone(), ev.clone());
                }
                None => {}
            }
        }
    }
}

#[test]
fn status_in_go_order() {
    check(
        json!({"apiVersion":"v1","code":409,"details":{"kind":"configmaps","name":"x"},
               "kind":"Status","message":"configmaps \"x\" already exists","metadata":{},
               "reason":"AlreadyExists","status":"Failure"}),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"configmaps \"x\" already exists","reason":"AlreadyExists","details":{"name":"x","kind":"configmaps"},"code":409}"#,
    );
    check(
        json!({"apiVersion":"v1","code":422,"kind":"Status","metadata":{},"status":"Failure",
               "reason":"Invalid","message":"m",
               "details":{"causes":[{"field":"spec.x","message":"Required value","reason":"FieldValueRequired"}],
                          "group":"apps","kind":"Deployment","name":"d"}}),
        r#"{"kind":"Status","apiVersion":"v1","metadata":{},"status":"Failure","message":"m","reason":"Invalid","details":{"name":"d","group":"apps","kind":"Deployment","causes":[{"reason":"FieldValueRequired","message":"Required value","field":"spec.x"}]},"code":422}"#,
    );
}

#[test]
fn objects_in_go_order() {
    check(
        json!({"apiVersion":"v1","kind":"ConfigMap","data":{"b":"2","a":"1"},
               "metadata":{"uid":"u","resourceVersion":"5","name":"c","namespace":"default",
                           "labels":{"z":"1","a":"2"},"creationTimestamp":"2026-01-01T00:00:00Z"}}),
        r#"{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"c","namespace":"default","uid":"u","resourceVersion":"5","creationTimestamp":"2026-01-01T00:00:00Z","labels":{"a":"2","z":"1"}},"data":{"a":"1","b":"2"}}"#,
    );
    // A Service always has `status.loadBalancer`.
    check(
        json!({"apiVersion":"v1","kind":"Service","metadata":{"name":"s"},
               "spec":{"type":"ClusterIP","sessionAffinity":"None","selector":{"app":"a"},
                       "ports":[{"targetPort":80,"protocol":"TCP","port":80}],
                       "clusterIP":"10.96.0.9","clusterIPs":["10.96.0.9"],
                       "ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack",
                       "internalTrafficPolicy":"Cluster"}}),
        r#"{"kind":"Service","apiVersion":"v1","metadata":{"name":"s"},"spec":{"ports":[{"protocol":"TCP","port":80,"targetPort":80}],"selector":{"app":"a"},"clusterIP":"10.96.0.9","clusterIPs":["10.96.0.9"],"type":"ClusterIP","sessionAffinity":"None","ipFamilies":["IPv4"],"ipFamilyPolicy":"SingleStack","internalTrafficPolicy":"Cluster"},"status":{"loadBalancer":{}}}"#,
    );
    // Deployment: spec and container fields in struct order, `resources: {}` written.
    check(
        json!({"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d","generation":1},
               "spec":{"progressDeadlineSeconds":600,"replicas":1,"revisionHistoryLimit":10,
                       "selector":{"matchLabels":{"app":"d"}},
                       "strategy":{"rollingUpdate":{"maxSurge":"25%","maxUnavailable":"25%"},"type":"RollingUpdate"},
                       "template":{"metadata":{"labels":{"app":"d"}},
                                   "spec":{"containers":[{"image":"nginx","imagePullPolicy":"Always","name":"nginx",
                                           "terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File"}],
                                           "dnsPolicy":"ClusterFirst","restartPolicy":"Always","schedulerName":"default-scheduler",
                                           "securityContext":{},"terminationGracePeriodSeconds":30}}}}),
        r#"{"kind":"Deployment","apiVersion":"apps/v1","metadata":{"name":"d","generation":1},"spec":{"replicas":1,"selector":{"matchLabels":{"app":"d"}},"template":{"metadata":{"labels":{"app":"d"}},"spec":{"containers":[{"name":"nginx","image":"nginx","resources":{},"terminationMessagePath":"/dev/termination-log","terminationMessagePolicy":"File","imagePullPolicy":"Always"}],"restartPolicy":"Always","terminationGracePeriodSeconds":30,"dnsPolicy":"ClusterFirst","securityContext":{},"schedulerName":"default-scheduler"}},"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxUnavailable":"25%","maxSurge":"25%"}},"revisionHistoryLimit":10,"progressDeadlineSeconds":600},"status":{}}"#,
    );
}

#[test]
fn lists_events_tables_and_unknown_kinds() {
    assert_eq!(
        to_string(
            &json!({"apiVersion":"v1","kind":"ConfigMapList","metadata":{},
               "items":[{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a"}}]})
        ),
        r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{},"items":[{"metadata":{"name":"a"}}]}"#
    );
    check(
        json!({"apiVersion":"v1","kind":"ConfigMapList","metadata":{"resourceVersion":"9"},
               "items":[{"metadata":{"namespace":"n","name":"a"},"data":{"k":"v"}}]}),
        r#"{"kind":"ConfigMapList","apiVersion":"v1","metadata":{"resourceVersion":"9"},"items":[{"metadata":{"name":"a","namespace":"n"},"data":{"k":"v"}}]}"#,
    );
    assert_eq!(
        String::from_utf8(watch_event(
            "ADDED",
            &json!({"metadata":{"name":"a"},"kind":"ConfigMap","apiVersion":"v1"})
        ))
        .unwrap(),
        r#"{"type":"ADDED","object":{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"a"}}}"#
    );
    check(
        json!({"apiVersion":"meta.k8s.io/v1","kind":"Table","metadata":{"resourceVersion":"3"},
               "rows":[{"object":{"metadata":{"name":"a"}},"cells":["a"]}],
               "columnDefinitions":[{"type":"string","priority":0,"name":"Name","format":"name","description":"d"}]}),
        r#"{"kind":"Table","apiVersion":"meta.k8s.io/v1","metadata":{"resourceVersion":"3"},"columnDefinitions":[{"name":"Name","type":"string","format":"name","description":"d","priority":0}],"rows":[{"cells":["a"],"object":{"metadata":{"name":"a"}}}]}"#,
    );
    // A kind without a protobuf form: type meta, metadata, spec, status, the rest sorted.
    check(
        json!({"apiVersion":"tenancy.h8s.io/v1","kind":"Tenant","status":{"b":1,"a":2},
               "spec":{"displayName":"x"},"metadata":{"uid":"u","name":"t"},"extra":1}),
        r#"{"kind":"Tenant","apiVersion":"tenancy.h8s.io/v1","metadata":{"name":"t","uid":"u"},"spec":{"displayName":"x"},"status":{"a":2,"b":1},"extra":1}"#,
    );
}

#[test]
fn every_served_kind_has_an_order() {
    // Every built-in kind the server serves from k8s.io/api is in the table.
    let mut missing = Vec::new();
    for r in crate::resources::all() {
        // h8s's own kinds have no Go struct.
        if r.group.ends_with("h8s.io") || r.kind == "Network" {
            continue;
        }
        let av = if r.group.is_empty() {
            r.version.to_string()
        } else {
            format!("{}/{}", r.group, r.version)
        };
        if ORDER_TABLE.kind(&av, r.kind).is_none() {
            missing.push(format!("{av} {}", r.kind));
        }
    }
    assert!(missing.is_empty(), "no field order for {missing:?}");
}

#[test]
fn strings_escaped_as_go_does() {
    assert_eq!(
        to_string(&json!({"a": "<none> & \u{2028}é\"x\""})),
        r#"{"a":"\u003cnone\u003e \u0026 \u2028é\"x\""}"#
    );
}

#[test]
fn metrics_in_go_order() {
    check(
        json!({"apiVersion":"metrics.k8s.io/v1beta1","kind":"NodeMetrics","metadata":{"name":"n"},
               "usage":{"memory":"1Mi","cpu":"1m"},"window":"10s","timestamp":"2026-01-01T00:00:00Z"}),
        r#"{"kind":"NodeMetrics","apiVersion":"metrics.k8s.io/v1beta1","metadata":{"name":"n"},"timestamp":"2026-01-01T00:00:00Z","window":"10s","usage":{"cpu":"1m","memory":"1Mi"}}"#,
    );
}
