//! Kubernetes API semantics over real HTTPS (curl) against the real `h8s server`:
//! generateName, dryRun, finalizers, delete preconditions, deletecollection, watch
//! selector transitions, paging, extra users from tokens.csv.

mod api_support;

use api_support::{json, Server};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

fn cm(name: &str, extra_meta: &str) -> Vec<u8> {
    format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"{extra_meta}}},"data":{{"a":"1"}}}}"#)
        .into_bytes()
}

#[test]
fn create_get_delete_semantics() {
    let s = Server::start();

    // generateName
    let (c, b) = s.curl(
        "POST",
        CMS,
        None,
        Some(br#"{"metadata":{"generateName":"gen-"}}"#),
    );
    assert_eq!(c, 201, "{b}");
    let name = json(&b)["metadata"]["name"].as_str().unwrap().to_string();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    // A long generateName is cut to leave room for the suffix, never inside a character; a
    // name that is no DNS label is refused.
    let long = "€".repeat(20);
    let (c, b) = s.curl(
        "POST",
        CMS,
        None,
        Some(format!(r#"{{"metadata":{{"generateName":"{long}"}}}}"#).as_bytes()),
    );
    assert_eq!(c, 422, "{b}");

    // dryRun=All answers like a create but stores nothing
    let (c, b) = s.curl(
        "POST",
        &format!("{CMS}?dryRun=All"),
        None,
        Some(&cm("dry", "")),
    );
    assert_eq!(c, 201, "{b}");
    assert_eq!(s.curl("GET", &format!("{CMS}/dry"), None, None).0, 404);

    // finalizers hold a deletion until they are removed
    let (c, _) = s.curl(
        "POST",
        CMS,
        None,
        Some(&cm("fin", r#","finalizers":["example.com/hold"]"#)),
    );
    assert_eq!(c, 201);
    let (c, b) = s.curl("DELETE", &format!("{CMS}/fin"), None, None);
    assert_eq!(c, 200, "{b}");
    let (c, b) = s.curl("GET", &format!("{CMS}/fin"), None, None);
    assert_eq!(c, 200);
    assert!(json(&b)["metadata"]["deletionTimestamp"].is_string(), "{b}");
    let (c, b) = s.curl(
        "PATCH",
        &format!("{CMS}/fin"),
        Some("application/merge-patch+json"),
        Some(br#"{"metadata":{"finalizers":null}}"#),
    );
    assert_eq!(c, 200, "{b}");
    assert_eq!(s.curl("GET", &format!("{CMS}/fin"), None, None).0, 404);

    // delete preconditions
    let (_, b) = s.curl("POST", CMS, None, Some(&cm("pre", "")));
    let uid = json(&b)["metadata"]["uid"].as_str().unwrap().to_string();
    let (c, b) = s.curl(
        "DELETE",
        &format!("{CMS}/pre"),
        None,
        Some(br#"{"preconditions":{"uid":"00000000-0000-0000-0000-000000000000"}}"#),
    );
    assert_eq!(c, 409, "{b}");
    let (c, b) = s.curl(
        "DELETE",
        &format!("{CMS}/pre"),
        None,
        Some(
            format!(r#"{{"preconditions":{{"uid":"{uid}"}},"propagationPolicy":"Background"}}"#)
                .as_bytes(),
        ),
    );
    assert_eq!(c, 200, "{b}");
    assert_eq!(json(&b)["status"], "Success");
    let (c, _) = s.curl(
        "DELETE",
        &format!("{CMS}/x"),
        None,
        Some(br#"{"propagationPolicy":"Sideways"}"#),
    );
    assert_eq!(c, 422);

    // deletecollection with a selector
    for n in ["d1", "d2", "d3"] {
        let lbl = if n == "d3" { "keep" } else { "drop" };
        let (c, _) = s.curl(
            "POST",
            CMS,
            None,
            Some(&cm(n, &format!(r#","labels":{{"x":"{lbl}"}}"#))),
        );
        assert_eq!(c, 201);
    }
    let (c, b) = s.curl(
        "DELETE",
        &format!("{CMS}?labelSelector=x%3Ddrop"),
        None,
        None,
    );
    assert_eq!(c, 200, "{b}");
    assert_eq!(json(&b)["items"].as_array().unwrap().len(), 2);
    let (_, b) = s.curl("GET", &format!("{CMS}?labelSelector=x"), None, None);
    let names: Vec<String> = json(&b)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, vec!["d3"]);

    // update: stale resourceVersion conflicts, generation follows spec changes
    let dep = br#"{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"d"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"b"}},"spec":{"containers":[{"name":"c","image":"i"}]}}}}"#;
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    let (c, b) = s.curl("POST", deps, None, Some(dep));
    assert_eq!(c, 201, "{b}");
    let (c, b) = s.curl(
        "PATCH",
        &format!("{deps}/d"),
        Some("application/merge-patch+json"),
        Some(br#"{"metadata":{"labels":{"l":"1"}}}"#),
    );
    assert_eq!(c, 200);
    assert_eq!(
        json(&b)["metadata"]["generation"],
        1,
        "a label is not a spec change"
    );
    let (c, b) = s.curl(
        "PATCH",
        &format!("{deps}/d"),
        Some("application/merge-patch+json"),
        Some(br#"{"spec":{"replicas":4},"status":{"replicas":9}}"#),
    );
    assert_eq!(c, 200);
    let d = json(&b);
    assert_eq!(d["metadata"]["generation"], 2);
    // (The deployment controller of the server may have written a status by now.)
    assert_ne!(
        d["status"]["replicas"], 9,
        "status is written only through /status: {b}"
    );
    let (c, b) = s.curl(
        "PATCH",
        &format!("{deps}/d/status"),
        Some("application/merge-patch+json"),
        Some(br#"{"status":{"replicas":4},"spec":{"replicas":1}}"#),
    );
    assert_eq!(c, 200, "{b}");
    let d = json(&b);
    assert_eq!(d["status"]["replicas"], 4);
    assert_eq!(d["spec"]["replicas"], 4);
}

#[test]
fn watch_follows_selectors_and_paging_follows_continue() {
    let s = Server::start();
    // A watch with a label selector: an object that stops matching is DELETED for it.
    let ca = s.data_dir().join("ca.crt");
    let url = format!(
        "{}{CMS}?watch=true&timeoutSeconds=4&labelSelector=team%3Dblue",
        s.url
    );
    let watcher = std::process::Command::new("curl")
        .args(["-sSN", "--cacert"])
        .arg(&ca)
        .args(["-H", &format!("Authorization: Bearer {}", s.token), &url])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("curl watch");
    std::thread::sleep(std::time::Duration::from_millis(800));
    s.curl(
        "POST",
        CMS,
        None,
        Some(&cm("w", r#","labels":{"team":"blue"}"#)),
    );
    s.curl(
        "POST",
        CMS,
        None,
        Some(&cm("other", r#","labels":{"team":"red"}"#)),
    );
    s.curl(
        "PATCH",
        &format!("{CMS}/w"),
        Some("application/merge-patch+json"),
        Some(br#"{"data":{"a":"2"}}"#),
    );
    s.curl(
        "PATCH",
        &format!("{CMS}/w"),
        Some("application/merge-patch+json"),
        Some(br#"{"metadata":{"labels":{"team":"red"}}}"#),
    );
    let out = watcher.wait_with_output().expect("watch output");
    let events: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v = json(l);
            (
                v["type"].as_str().unwrap().to_string(),
                v["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(events, want);

    // Paging: limit + continue visit every object exactly once, at one revision.
    for i in 0..5 {
        s.curl("POST", CMS, None, Some(&cm(&format!("p{i}"), "")));
    }
    let mut seen = Vec::new();
    let mut cont = String::new();
    let mut rvs = Vec::new();
    loop {
        let path = if cont.is_empty() {
            format!("{CMS}?limit=2")
        } else {
            format!("{CMS}?limit=2&continue={cont}")
        };
        let (c, b) = s.curl("GET", &path, None, None);
        assert_eq!(c, 200, "{b}");
        let v = json(&b);
        rvs.push(
            v["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        for i in v["items"].as_array().unwrap() {
            seen.push(i["metadata"]["name"].as_str().unwrap().to_string());
        }
        match v["metadata"]["continue"].as_str() {
            Some(c) if !c.is_empty() => cont = c.to_string(),
            _ => break,
        }
        if seen.len() == 4 {
            // A write between pages does not show up in this list.
            s.curl("POST", CMS, None, Some(&cm("late", "")));
        }
    }
    // The root CA ConfigMap the ServiceAccount controller publishes in every namespace may
    // be there too, depending on when the controller got to this namespace.
    seen.retain(|n| n != "kube-root-ca.crt");
    assert_eq!(seen, vec!["other", "p0", "p1", "p2", "p3", "p4", "w"]);
    assert!(rvs.windows(2).all(|w| w[0] == w[1]), "{rvs:?}");
}

#[test]
fn extra_users_from_the_token_file() {
    let s = Server::start();
    std::fs::write(
        s.data_dir().join("tokens.csv"),
        "alicetoken,alice,u-1,\"dev,ops\"\n",
    )
    .unwrap();
    let (c, b) = s.curl_with(
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some("application/json"),
        Some(br#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#),
        Some("alicetoken"),
    );
    assert_eq!(c, 201, "{b}");
    let u = &json(&b)["status"]["userInfo"];
    assert_eq!(u["username"], "alice");
    assert_eq!(
        u["groups"],
        serde_json::json!(["dev", "ops", "system:authenticated"])
    );
    let (c, _) = s.curl_with("GET", "/api/v1/namespaces", None, None, Some("nottoken"));
    assert_eq!(c, 401);
}

#[test]
fn cascading_deletion_by_owner_references() {
    let s = Server::start();
    let uid_of = |b: &str| json(b)["metadata"]["uid"].as_str().unwrap().to_string();
    let owned = |name: &str, owners: &[(&str, &str)]| {
        let refs: Vec<String> = owners
            .iter()
            .map(|(n, u)| {
                format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","name":"{n}","uid":"{u}"}}"#)
            })
            .collect();
        cm(name, &format!(r#","ownerReferences":[{}]"#, refs.join(",")))
    };
    let gone = |name: &str| {
        api_support::eventually(10, || {
            s.curl("GET", &format!("{CMS}/{name}"), None, None).0 == 404
        })
    };

    // Background (the default): dependents go after the owner, unless another owner lives.
    let (_, b) = s.curl("POST", CMS, None, Some(&cm("owner", "")));
    let owner = uid_of(&b);
    let (_, b) = s.curl("POST", CMS, None, Some(&cm("keeper", "")));
    let keeper = uid_of(&b);
    s.curl(
        "POST",
        CMS,
        None,
        Some(&owned("child", &[("owner", &owner)])),
    );
    s.curl(
        "POST",
        CMS,
        None,
        Some(&owned("shared", &[("owner", &owner), ("keeper", &keeper)])),
    );
    s.curl(
        "POST",
        CMS,
        None,
        Some(&owned("grandchild", &[("child", "")])),
    );
    let (_, b) = s.curl("GET", &format!("{CMS}/child"), None, None);
    let child = uid_of(&b);
    s.curl("DELETE", &format!("{CMS}/grandchild"), None, None);
    s.curl(
        "POST",
        CMS,
        None,
        Some(&owned("grandchild", &[("child", &child)])),
    );
    assert_eq!(s.curl("DELETE", &format!("{CMS}/owner"), None, None).0, 200);
    assert!(gone("child"), "child should be collected");
    assert!(gone("grandchild"), "the cascade continues");
    assert!(api_support::eventually(10, || {
        let (c, b) = s.curl("GET", &format!("{CMS}/shared"), None, None);
        c == 200
            && json(&b)["metadata"]["ownerReferences"]
                .as_array()
                .map(|a| a.len())
                == Some(1)
    }));

    // Orphan: the dependent stays, without the reference.
    let (_, b) = s.curl("POST", CMS, None, Some(&cm("o2", "")));
    let o2 = uid_of(&b);
    s.curl("POST", CMS, None, Some(&owned("orphan", &[("o2", &o2)])));
    s.curl(
        "DELETE",
        &format!("{CMS}/o2"),
        None,
        Some(br#"{"propagationPolicy":"Orphan"}"#),
    );
    assert!(api_support::eventually(10, || {
        let (c, b) = s.curl("GET", &format!("{CMS}/orphan"), None, None);
        c == 200
            && json(&b)["metadata"]["ownerReferences"]
                .as_array()
                .is_none_or(|a| a.is_empty())
    }));

    // Foreground: the owner waits (finalizer foregroundDeletion) for its dependents.
    let (_, b) = s.curl("POST", CMS, None, Some(&cm("o3", "")));
    let o3 = uid_of(&b);
    s.curl("POST", CMS, None, Some(&owned("held", &[("o3", &o3)])));
    s.curl("POST", CMS, None, Some(&owned("blocker", &[("held", "")])));
    let (c, b) = s.curl(
        "DELETE",
        &format!("{CMS}/o3"),
        None,
        Some(br#"{"propagationPolicy":"Foreground"}"#),
    );
    assert_eq!(c, 200, "{b}");
    let v = json(&b);
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{b}");
    assert!(
        v["metadata"]["finalizers"]
            .to_string()
            .contains("foregroundDeletion"),
        "{b}"
    );
    assert!(gone("held"));
    assert!(gone("o3"));
}
