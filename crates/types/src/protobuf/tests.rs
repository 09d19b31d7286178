use super::*;
use k8s_pb::api::core::v1 as core;
use k8s_pb::apimachinery::pkg::api::resource::Quantity;
use k8s_pb::apimachinery::pkg::apis::meta::v1 as meta;
use k8s_pb::apimachinery::pkg::runtime::{TypeMeta, Unknown};
use k8s_pb::apimachinery::pkg::util::intstr::IntOrString;
use proptest::prelude::*;
use serde_json::json;

fn wrap<M: Message>(api_version: &str, kind: &str, m: &M) -> Vec<u8> {
    let u = Unknown {
        type_meta: Some(TypeMeta {
            api_version: Some(api_version.into()),
            kind: Some(kind.into()),
        }),
        raw: Some(m.encode_to_vec()),
        content_encoding: Some(String::new()),
        content_type: Some(String::new()),
    };
    let mut out = MAGIC.to_vec();
    out.extend(u.encode_to_vec());
    out
}

fn meta(name: &str) -> Option<meta::ObjectMeta> {
    Some(meta::ObjectMeta {
        name: Some(name.into()),
        creation_timestamp: Some(meta::Time {
            seconds: Some(1_767_225_600),
            nanos: Some(0),
        }),
        labels: [("app".to_string(), "web".to_string())].into(),
        ..Default::default()
    })
}

#[test]
fn secret_bytes_become_base64() {
    let s = core::Secret {
        metadata: meta("s"),
        data: [("a".to_string(), b"hi\n\0".to_vec())].into(),
        r#type: Some("Opaque".into()),
        ..Default::default()
    };
    let j = decode(&wrap("v1", "Secret", &s)).unwrap();
    assert_eq!(
        j,
        json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "s", "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"app": "web"}},
            "data": {"a": "aGkKAA=="}, "type": "Opaque"})
    );
}

#[test]
fn service_names_and_int_or_string() {
    let svc = core::Service {
        metadata: meta("svc"),
        spec: Some(core::ServiceSpec {
            cluster_ip: Some("10.0.0.1".into()),
            cluster_ips: vec!["10.0.0.1".into()],
            ports: vec![
                core::ServicePort {
                    name: Some("http".into()),
                    port: Some(80),
                    target_port: Some(IntOrString {
                        r#type: Some(1),
                        int_val: None,
                        str_val: Some("web".into()),
                    }),
                    ..Default::default()
                },
                core::ServicePort {
                    port: Some(443),
                    target_port: Some(IntOrString {
                        r#type: Some(0),
                        int_val: Some(8443),
                        str_val: None,
                    }),
                    ..Default::default()
                },
            ],
            r#type: Some("ClusterIP".into()),
            ..Default::default()
        }),
        ..Default::default()
    };
    let j = decode(&wrap("v1", "Service", &svc)).unwrap();
    assert_eq!(j["spec"]["clusterIP"], "10.0.0.1");
    assert_eq!(j["spec"]["clusterIPs"], json!(["10.0.0.1"]));
    assert_eq!(j["spec"]["ports"][0]["targetPort"], "web");
    assert_eq!(j["spec"]["ports"][1]["targetPort"], 8443);
    assert_eq!(j["spec"]["type"], "ClusterIP");
}

#[test]
fn deployment_with_quantities_and_strategy() {
    use k8s_pb::api::apps::v1 as apps;
    let d = apps::Deployment {
        metadata: meta("web"),
        spec: Some(apps::DeploymentSpec {
            replicas: Some(2),
            selector: Some(meta::LabelSelector {
                match_labels: [("app".to_string(), "web".to_string())].into(),
                ..Default::default()
            }),
            template: Some(core::PodTemplateSpec {
                metadata: Some(meta::ObjectMeta {
                    labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                }),
                spec: Some(core::PodSpec {
                    containers: vec![core::Container {
                        name: Some("nginx".into()),
                        image: Some("nginx".into()),
                        resources: Some(core::ResourceRequirements {
                            limits: [(
                                "cpu".to_string(),
                                Quantity {
                                    string: Some("500m".into()),
                                },
                            )]
                            .into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    host_ipc: Some(false),
                    ..Default::default()
                }),
            }),
            strategy: Some(apps::DeploymentStrategy::default()),
            ..Default::default()
        }),
        status: Some(apps::DeploymentStatus::default()),
    };
    let j = decode(&wrap("apps/v1", "Deployment", &d)).unwrap();
    assert_eq!(j["apiVersion"], "apps/v1");
    assert_eq!(j["spec"]["replicas"], 2);
    assert_eq!(
        j["spec"]["selector"],
        json!({"matchLabels": {"app": "web"}})
    );
    let c = &j["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(c["resources"]["limits"]["cpu"], "500m");
    // hostIPC is a Go bool, written even when false and omitted from JSON.
    assert!(j["spec"]["template"]["spec"].get("hostIPC").is_none());
    assert_eq!(j["spec"]["strategy"], json!({}));
    assert_eq!(j["status"], json!({}));
    // replicas is a Go pointer: a zero on the wire was set on purpose.
    let mut zero = d.clone();
    zero.spec.as_mut().unwrap().replicas = Some(0);
    let jz = decode(&wrap("apps/v1", "Deployment", &zero)).unwrap();
    assert_eq!(jz["spec"]["replicas"], 0);
    // The result passes strict decoding: every field has its JSON name.
    assert_eq!(
        crate::strict::unknown_fields("apps", "v1", "Deployment", &j),
        Some(vec![])
    );
}

#[test]
fn reviews_and_errors() {
    use k8s_pb::api::authorization::v1 as authz;
    let ssar = authz::SelfSubjectAccessReview {
        metadata: Some(Default::default()),
        spec: Some(authz::SelfSubjectAccessReviewSpec {
            resource_attributes: Some(authz::ResourceAttributes {
                namespace: Some("default".into()),
                verb: Some("create".into()),
                resource: Some("pods".into()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        status: Some(Default::default()),
    };
    let j = decode(&wrap(
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
        &ssar,
    ))
    .unwrap();
    assert_eq!(
        j["spec"]["resourceAttributes"],
        json!({"namespace": "default", "verb": "create", "resource": "pods"})
    );
    let ssr = k8s_pb::api::authentication::v1beta1::SelfSubjectReview::default();
    let j = decode(&wrap(
        "authentication.k8s.io/v1beta1",
        "SelfSubjectReview",
        &ssr,
    ))
    .unwrap();
    assert_eq!(
        j,
        json!({"apiVersion": "authentication.k8s.io/v1beta1", "kind": "SelfSubjectReview"})
    );

    assert_eq!(decode(b"{}"), Err(Error::MissingMagic));
    assert!(matches!(decode(b"k8s\0\xff\xff"), Err(Error::Envelope(_))));
    assert_eq!(decode(b"k8s\0"), Err(Error::MissingTypeMeta));
    let net = wrap("v1", "Network", &core::Namespace::default());
    assert!(matches!(decode(&net), Err(Error::UnsupportedKind { .. })));
    let mut bad = wrap("v1", "Namespace", &core::Namespace::default());
    bad.extend([0x0a, 0x05, 0x01]);
    assert!(
        matches!(decode(&bad), Err(Error::Envelope(_))),
        "a truncated field"
    );
    let garbage = {
        let u = Unknown {
            type_meta: Some(TypeMeta {
                api_version: Some("v1".into()),
                kind: Some("Namespace".into()),
            }),
            raw: Some(vec![0x0a, 0x09, 0x01]),
            ..Default::default()
        };
        let mut out = MAGIC.to_vec();
        out.extend(u.encode_to_vec());
        out
    };
    assert!(matches!(decode(&garbage), Err(Error::Object { .. })));
}

#[test]
fn debug_parser_round_trips_escapes() {
    let s = core::Secret {
        r#type: Some("a\"b\\c\n\t\u{1}é'".into()),
        ..Default::default()
    };
    let rendered = format!("{s:?}");
    let v = value::parse(&rendered).unwrap();
    let Value::Struct(_, fields) = v else {
        panic!("not a struct")
    };
    let ty = fields
        .iter()
        .find(|(k, _)| k == "r#type")
        .unwrap()
        .1
        .unwrap_some();
    assert_eq!(ty, &Value::Str("a\"b\\c\n\t\u{1}é'".into()));
    assert!(value::parse("Foo { a: ").is_err());
    assert!(value::parse("[1, 2").is_err());
    assert!(value::parse(&"[".repeat(10_000)).is_err());
}

#[test]
fn go_durations() {
    assert_eq!(go_duration(0), "0s");
    assert_eq!(go_duration(1_500_000_000), "1.5s");
    assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
    assert_eq!(go_duration(90_000_000_000), "1m30s");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decode_never_panics_on_random_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode(&body);
        let mut with_magic = MAGIC.to_vec();
        with_magic.extend(&body);
        let _ = decode(&with_magic);
    }

    #[test]
    fn decode_never_panics_on_mutated_objects(
        kind in prop::sample::select(vec!["Namespace", "Secret", "Service", "ConfigMap"]),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let svc = core::Service {
            metadata: meta("svc"),
            spec: Some(core::ServiceSpec {
                ports: vec![core::ServicePort { port: Some(80), target_port: Some(IntOrString { r#type: Some(0), int_val: Some(80), str_val: None }), ..Default::default() }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let raw = svc.encode_to_vec();
        let mut raw = raw.clone();
        for (i, b) in flips {
            let n = raw.len();
            raw[i % n] = b;
        }
        let _ = decode_object("v1", kind, &raw);
    }

    #[test]
    fn debug_parser_never_panics(s in "\\PC{0,200}") {
        let _ = value::parse(&s);
    }
}
