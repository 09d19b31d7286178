//! Durability through the real `h8s server`: concurrent ConfigMap creates and updates over
//! HTTPS while the server (and, on etcd, a member of a 3-member cluster) is SIGKILLed at
//! random moments. After each kill and restart, every write the API acknowledged (201/200)
//! is read back with its content, and the store passes `h8s store check`.

mod store_support;

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use h8s_store::testing::EtcdCluster;
use store_support::{Api, Server, H8S};

#[derive(Default)]
struct Ledger {
    acked: HashMap<String, String>,
    in_flight: HashMap<String, Vec<String>>,
    acks: usize,
}

/// Writer tasks: each creates its ConfigMaps and updates each twice with its
/// resourceVersion, until the connection dies.
async fn write_until_killed(api: Api, round: u64, ledger: Arc<Mutex<Ledger>>) {
    let mut tasks = Vec::new();
    for t in 0..16u64 {
        let api = api.clone();
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            for n in 0.. {
                let name = format!("cm-r{round}-t{t}-{n}");
                let mut rv = String::new();
                for version in 0..3 {
                    let v = format!("r{round}t{t}n{n}v{version}");
                    ledger
                        .lock()
                        .unwrap()
                        .in_flight
                        .entry(name.clone())
                        .or_default()
                        .push(v.clone());
                    let mut body = serde_json::json!({
                        "apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": name, "namespace": "dur"},
                        "data": {"v": v},
                    });
                    let r = if version == 0 {
                        api.call("POST", "/api/v1/namespaces/dur/configmaps", Some(body))
                            .await
                    } else {
                        body["metadata"]["resourceVersion"] = serde_json::json!(rv);
                        api.call(
                            "PUT",
                            &format!("/api/v1/namespaces/dur/configmaps/{name}"),
                            Some(body),
                        )
                        .await
                    };
                    match r {
                        Ok((200 | 201, obj)) => {
                            rv = obj["metadata"]["resourceVersion"]
                                .as_str()
                                .unwrap()
                                .to_owned();
                            let mut l = ledger.lock().unwrap();
                            l.in_flight.remove(&name);
                            l.acked.insert(name.clone(), v);
                            l.acks += 1;
                        }
                        Ok((code, obj)) => panic!("{name}: unexpected {code}: {obj}"),
                        Err(_) => return, // the server is gone
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

async fn verify(api: &Api, ledger: &Ledger) {
    let checks = ledger.acked.iter().map(|(name, v)| {
        let api = api.clone();
        let later = ledger.in_flight.get(name).cloned().unwrap_or_default();
        async move {
            let (code, obj) = api
                .call(
                    "GET",
                    &format!("/api/v1/namespaces/dur/configmaps/{name}"),
                    None,
                )
                .await
                .unwrap();
            assert_eq!(code, 200, "acknowledged ConfigMap {name} lost: {obj}");
            let got = obj["data"]["v"].as_str().unwrap_or_default().to_owned();
            assert!(
                got == *v || later.contains(&got),
                "{name}: acknowledged {v:?}, server has {got:?}"
            );
        }
    });
    futures::stream::iter(checks)
        .buffer_unordered(32)
        .collect::<Vec<()>>()
        .await;
}

fn rng() -> impl FnMut(u64) -> u64 {
    let mut s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    eprintln!("random seed {s}");
    move |n| {
        s = s.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = s;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

async fn run(store: &str, mut etcd: Option<&mut EtcdCluster>) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut below = rng();
    for round in 0..40u64 {
        let server = Server::start(&data, store);
        let api = Api::connect(&server.addr, &data).await;
        if round == 0 {
            let ns =
                serde_json::json!({"apiVersion":"v1","kind":"Namespace","metadata":{"name":"dur"}});
            let (code, obj) = api
                .call("POST", "/api/v1/namespaces", Some(ns))
                .await
                .unwrap();
            assert!(code == 201 || code == 409, "{code} {obj}");
        } else {
            // Everything acknowledged before the last kill is still there.
            let l = std::mem::take(&mut *ledger.lock().unwrap());
            verify(&api, &l).await;
            eprintln!(
                "{store}: round {round}: all {} acknowledged writes present",
                l.acks
            );
            // Round r starts after r kills.
            let done = l.acks >= 10_000 && round >= 5;
            *ledger.lock().unwrap() = l;
            if done {
                return;
            }
        }
        let writer = tokio::spawn(write_until_killed(api, round, ledger.clone()));
        let before = ledger.lock().unwrap().acks;
        let t0 = Instant::now();
        while ledger.lock().unwrap().acks < before + 100 {
            assert!(t0.elapsed() < Duration::from_secs(60), "no progress");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let mut victim = None;
        if let Some(c) = etcd.as_deref_mut() {
            tokio::time::sleep(Duration::from_millis(below(500))).await;
            let v = below(3) as usize;
            c.kill(v);
            victim = Some(v);
            let during = ledger.lock().unwrap().acks;
            let t0 = Instant::now();
            while ledger.lock().unwrap().acks < during + 100 {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "API stopped serving with one etcd member down"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        tokio::time::sleep(Duration::from_millis(200 + below(1500))).await;
        server.kill();
        writer.await.unwrap();
        if let (Some(c), Some(v)) = (etcd.as_deref_mut(), victim) {
            c.restart(v).unwrap();
            c.wait_healthy(Duration::from_secs(30)).unwrap();
        }
        // The store is consistent while the server is down.
        let out = Command::new(H8S)
            .args(["store", "check", "--store", store, "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "store check after SIGKILL: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    panic!("fewer than 10,000 acknowledged writes in 40 rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_on_embedded_survives_sigkill() {
    run("embedded", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_on_3_member_etcd_survives_sigkill_of_server_and_member() {
    let mut c = EtcdCluster::start(3).expect("etcd-server");
    let url = c.url("/h8s-durability");
    run(&url, Some(&mut c)).await;
}
