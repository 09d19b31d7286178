//! The Deployment controller's decisions, from snapshots.

use super::*;
use k8s_openapi::api::apps::v1::{
    DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{Container, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some([("app".to_string(), "web".to_string())].into()),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "c".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

fn deployment(replicas: i32, image: &str) -> Deployment {
    Deployment {
        metadata: ObjectMeta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("d-uid".into()),
            generation: Some(1),
            ..Default::default()
        },
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: LabelSelector {
                match_labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            template: template(image),
            progress_deadline_seconds: Some(600),
            revision_history_limit: Some(10),
            ..Default::default()
        }),
        status: None,
    }
}

/// A ReplicaSet of `d` for `image` with `replicas` (all of them available when `avail`).
fn rs(
    d: &Deployment,
    image: &str,
    rev: i64,
    replicas: i32,
    available: i32,
    age: i64,
) -> ReplicaSet {
    let t = template(image);
    let hash = compute_hash(&t, None);
    let mut t2 = t.clone();
    t2.metadata
        .as_mut()
        .unwrap()
        .labels
        .as_mut()
        .unwrap()
        .insert(HASH_LABEL.into(), hash.clone());
    ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("web-{hash}")),
            namespace: Some("default".into()),
            uid: Some(format!("rs-{hash}")),
            generation: Some(1),
            creation_timestamp: Some(Time(
                jiff::Timestamp::now() - jiff::SignedDuration::from_secs(age),
            )),
            owner_references: Some(vec![controller_ref(d)]),
            annotations: Some(
                [
                    (REVISION.to_string(), rev.to_string()),
                    (
                        DESIRED_REPLICAS.to_string(),
                        d.spec.as_ref().unwrap().replicas.unwrap().to_string(),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            selector: Default::default(),
            template: Some(t2),
            min_ready_seconds: None,
        }),
        status: Some(ReplicaSetStatus {
            replicas,
            ready_replicas: Some(available),
            available_replicas: Some(available),
            observed_generation: Some(1),
            ..Default::default()
        }),
    }
}

fn run(d: &Deployment, rss: Vec<ReplicaSet>) -> Vec<Op> {
    let mut s = Sync::new(d, jiff::Timestamp::now()).unwrap();
    s.run(rss, false).unwrap();
    s.ops
}

fn scales(ops: &[Op]) -> Vec<(String, i64)> {
    ops.iter()
        .filter_map(|o| match o {
            Op::PatchRs { name, patch } => {
                Some((name.clone(), patch["spec"]["replicas"].as_i64()?))
            }
            _ => None,
        })
        .collect()
}

fn status(ops: &[Op]) -> DeploymentStatus {
    ops.iter()
        .rev()
        .find_map(|o| match o {
            Op::Status(s) => Some((**s).clone()),
            _ => None,
        })
        .expect("a status write")
}

fn progressing_reason(s: &DeploymentStatus) -> String {
    get_cond(s, "Progressing")
        .and_then(|c| c.reason.clone())
        .unwrap_or_default()
}

#[test]
fn a_new_deployment_creates_its_replica_set_with_every_replica() {
    let d = deployment(3, "nginx:1");
    let ops = run(&d, vec![]);
    let Op::CreateRs(rs) = &ops[0] else {
        panic!("{ops:?}")
    };
    let hash = compute_hash(&template("nginx:1"), None);
    assert_eq!(rs.name_any(), format!("web-{hash}"));
    assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(3));
    let ann = rs.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann[REVISION], "1");
    assert_eq!(ann[DESIRED_REPLICAS], "3");
    assert_eq!(ann[MAX_REPLICAS], "4");
    let labels = rs
        .spec
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap()
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    assert_eq!(labels[HASH_LABEL], hash);
    assert_eq!(
        rs.spec
            .as_ref()
            .unwrap()
            .selector
            .match_labels
            .as_ref()
            .unwrap()[HASH_LABEL],
        hash
    );
    assert!(ops.iter().any(|o| matches!(o, Op::Event { note, .. } if note == &format!("Scaled up replica set web-{hash} from 0 to 3"))));
    assert!(ops
        .iter()
        .any(|o| matches!(o, Op::Annotate(a) if a[REVISION] == "1")));
    let s = status(&ops);
    assert_eq!(progressing_reason(&s), NEW_RS_CREATED);
    assert_eq!(get_cond(&s, "Available").unwrap().status, "False");
}

#[test]
fn a_rollout_surges_then_scales_the_old_set_down_as_the_new_becomes_available() {
    // 4 replicas, maxSurge 25% → 1, maxUnavailable 25% → 1.
    let mut d = deployment(4, "nginx:2");
    d.metadata.annotations = Some([(REVISION.to_string(), "1".to_string())].into());
    let old = rs(&d, "nginx:1", 1, 4, 4, 100);
    let ops = run(&d, vec![old.clone()]);
    let Op::CreateRs(new) = &ops[0] else {
        panic!("{ops:?}")
    };
    // 4 + 1 surge − 4 existing = 1 new pod, and one old pod may be unavailable.
    assert_eq!(new.spec.as_ref().unwrap().replicas, Some(1));
    assert_eq!(new.metadata.annotations.as_ref().unwrap()[REVISION], "2");
    assert_eq!(scales(&ops), [(old.name_any(), 3)]);

    // The old set at 3, the new at 1 (not available): surge to 2.
    let old3 = rs(&d, "nginx:1", 1, 3, 3, 100);
    let ops = run(&d, vec![old3.clone(), rs(&d, "nginx:2", 2, 1, 0, 1)]);
    assert_eq!(
        scales(&ops),
        [(
            format!("web-{}", compute_hash(&template("nginx:2"), None)),
            2
        )]
    );
    assert_eq!(progressing_reason(&status(&ops)), RS_UPDATED);
    // New at 2, none available: nothing may go.
    assert!(scales(&run(&d, vec![old3.clone(), rs(&d, "nginx:2", 2, 2, 0, 1)])).is_empty());
    // Both available: the old set loses two.
    let ops = run(&d, vec![old3.clone(), rs(&d, "nginx:2", 2, 2, 2, 1)]);
    assert_eq!(scales(&ops), [(old3.name_any(), 1)]);

    // When the new set is complete and the old at 0, the deployment is complete.
    let mut done_old = rs(&d, "nginx:1", 1, 0, 0, 100);
    done_old.status.as_mut().unwrap().replicas = 0;
    let mut d2 = d.clone();
    d2.status = Some(DeploymentStatus {
        conditions: Some(vec![cond(
            "Progressing",
            "True",
            RS_UPDATED,
            "x".into(),
            jiff::Timestamp::now(),
        )]),
        ..Default::default()
    });
    let ops = run(&d2, vec![done_old, rs(&d, "nginx:2", 2, 4, 4, 1)]);
    let s = status(&ops);
    assert_eq!(progressing_reason(&s), NEW_RS_AVAILABLE);
    assert_eq!(
        get_cond(&s, "Available").unwrap().reason.as_deref(),
        Some(MIN_AVAILABLE)
    );
    assert_eq!(
        (s.replicas, s.updated_replicas, s.available_replicas),
        (Some(4), Some(4), Some(4))
    );
}

#[test]
fn max_unavailable_zero_waits_for_availability() {
    let mut d = deployment(2, "nginx:2");
    d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        type_: Some("RollingUpdate".into()),
        rolling_update: Some(RollingUpdateDeployment {
            max_surge: Some(IntOrString::Int(1)),
            max_unavailable: Some(IntOrString::Int(0)),
        }),
    });
    let old = rs(&d, "nginx:1", 1, 2, 2, 100);
    let new = rs(&d, "nginx:2", 2, 1, 0, 1);
    assert!(scales(&run(&d, vec![old.clone(), new])).is_empty());
    let new = rs(&d, "nginx:2", 2, 1, 1, 1);
    assert_eq!(
        scales(&run(&d, vec![old.clone(), new])),
        [(old.name_any(), 1)]
    );
}

#[test]
fn scaling_mid_rollout_is_proportional() {
    // 10 replicas mid-rollout (old 8, new 5 with surge 3), scaled to 20.
    let mut d = deployment(10, "nginx:2");
    let mut old = rs(&d, "nginx:1", 1, 8, 8, 100);
    let mut new = rs(&d, "nginx:2", 2, 5, 0, 1);
    for r in [&mut old, &mut new] {
        r.metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert(MAX_REPLICAS.into(), "13".into());
    }
    d.spec.as_mut().unwrap().replicas = Some(20);
    // maxSurge 25% of 20 = 5: 25 pods allowed, 12 to add: 8·25/13 ≈ 15 (+7), 5·25/13 ≈ 10 (+5).
    let got = scales(&run(&d, vec![old.clone(), new.clone()]));
    assert_eq!(got, [(old.name_any(), 15), (new.name_any(), 10)]);
}

#[test]
fn recreate_scales_old_to_zero_then_waits_then_creates() {
    let mut d = deployment(2, "nginx:2");
    d.spec.as_mut().unwrap().strategy = Some(DeploymentStrategy {
        type_: Some("Recreate".into()),
        rolling_update: None,
    });
    let old = rs(&d, "nginx:1", 1, 2, 2, 100);
    let ops = run(&d, vec![old.clone()]);
    assert_eq!(scales(&ops), [(old.name_any(), 0)]);
    assert!(!ops.iter().any(|o| matches!(o, Op::CreateRs(_))));
    // Scaled to 0 but pods still there: wait.
    let mut draining = rs(&d, "nginx:1", 1, 0, 0, 100);
    draining.status.as_mut().unwrap().replicas = 1;
    let mut s = Sync::new(&d, jiff::Timestamp::now()).unwrap();
    s.run(vec![draining], false).unwrap();
    assert!(!s.ops.iter().any(|o| matches!(o, Op::CreateRs(_))));
    assert!(s.requeue.is_some());
    // Gone: the new set is created at full size.
    let mut gone = rs(&d, "nginx:1", 1, 0, 0, 100);
    gone.status.as_mut().unwrap().replicas = 0;
    let ops = run(&d, vec![gone]);
    let Op::CreateRs(new) = &ops[0] else {
        panic!("{ops:?}")
    };
    assert_eq!(new.spec.as_ref().unwrap().replicas, Some(2));
}

#[test]
fn paused_deployments_only_scale_and_say_so() {
    let mut d = deployment(3, "nginx:2");
    d.spec.as_mut().unwrap().paused = Some(true);
    let old = rs(&d, "nginx:1", 1, 3, 3, 100);
    let ops = run(&d, vec![old]);
    assert!(!ops.iter().any(|o| matches!(o, Op::CreateRs(_))));
    assert_eq!(progressing_reason(&status(&ops)), PAUSED);
}

#[test]
fn old_replica_sets_beyond_the_history_limit_are_deleted() {
    let mut d = deployment(1, "nginx:9");
    d.spec.as_mut().unwrap().revision_history_limit = Some(2);
    let mut rss: Vec<ReplicaSet> = (1..=5)
        .map(|i| {
            let mut r = rs(&d, &format!("nginx:{i}"), i, 0, 0, 100 - i);
            r.status.as_mut().unwrap().replicas = 0;
            r
        })
        .collect();
    rss.push(rs(&d, "nginx:9", 6, 1, 1, 1));
    let ops = run(&d, rss);
    let deleted: Vec<_> = ops
        .iter()
        .filter_map(|o| match o {
            Op::DeleteRs { name, .. } => Some(name.clone()),
            _ => None,
        })
        .collect();
    let hash = |i: i32| {
        format!(
            "web-{}",
            compute_hash(&template(&format!("nginx:{i}")), None)
        )
    };
    assert_eq!(deleted, [hash(1), hash(2), hash(3)]);
}

#[test]
fn undo_gives_the_old_replica_set_a_new_revision_and_history() {
    // The template went back to nginx:1 (revision 1); the current set is revision 2.
    let d = deployment(2, "nginx:1");
    let back = rs(&d, "nginx:1", 1, 0, 0, 100);
    let cur = rs(&d, "nginx:2", 2, 2, 2, 50);
    let ops = run(&d, vec![back.clone(), cur]);
    let Op::PatchRs { name, patch } = &ops[0] else {
        panic!("{ops:?}")
    };
    assert_eq!(name, &back.name_any());
    assert_eq!(patch["metadata"]["annotations"][REVISION], "3");
    assert_eq!(patch["metadata"]["annotations"][REVISION_HISTORY], "1");
}

#[test]
fn a_stuck_rollout_times_out() {
    let d0 = deployment(1, "nginx:2");
    let mut d = d0.clone();
    let long_ago = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(3600);
    d.status = Some(DeploymentStatus {
        replicas: Some(2),
        updated_replicas: Some(1),
        available_replicas: Some(1),
        ready_replicas: Some(1),
        conditions: Some(vec![cond(
            "Progressing",
            "True",
            RS_UPDATED,
            "x".into(),
            long_ago,
        )]),
        observed_generation: Some(1),
        ..Default::default()
    });
    let old = rs(&d0, "nginx:1", 1, 1, 1, 100);
    let new = rs(&d0, "nginx:2", 2, 1, 0, 10);
    let ops = run(&d, vec![old, new]);
    let s = status(&ops);
    assert_eq!(progressing_reason(&s), TIMED_OUT);
    assert_eq!(get_cond(&s, "Progressing").unwrap().status, "False");
}
