//! Durability under SIGKILL, on both backends.
//!
//! A writer process (`h8s-store-torture`) pushes creates and compare-and-swap updates and
//! reports each write before sending it and after its acknowledgement. The test kills it
//! (and, on etcd, a cluster member) with SIGKILL at random moments, then checks that every
//! acknowledged write is in the store with its acknowledged content (or a later write's
//! content that was in flight at the kill), and that the store passes its own check.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use h8s_store::testing::EtcdCluster;
use h8s_store::{Embedded, Store};

const WRITER: &str = env!("CARGO_BIN_EXE_h8s-store-torture");

/// Everything the writer said, folded per key.
#[derive(Default)]
struct Ledger {
    /// Last acknowledged (value, revision) per key.
    acked: HashMap<String, (String, i64)>,
    /// Values sent after the last acknowledgement, per key (their fate is unknown).
    in_flight: HashMap<String, Vec<String>>,
    acks: usize,
    failures: Vec<String>,
}

impl Ledger {
    fn feed(&mut self, line: &str) {
        let mut parts = line.splitn(3, ' ');
        let (Some(kind), Some(key), Some(rest)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        match kind {
            "S" => self
                .in_flight
                .entry(key.to_owned())
                .or_default()
                .push(rest.to_owned()),
            "A" => {
                let sent = self
                    .in_flight
                    .get_mut(key)
                    .and_then(|v| v.pop())
                    .expect("an ack follows its send");
                self.in_flight.remove(key);
                self.acked
                    .insert(key.to_owned(), (sent, rest.parse().expect("revision")));
                self.acks += 1;
            }
            "F" => self.failures.push(line.to_owned()),
            _ => {}
        }
    }

    async fn verify(&self, s: &dyn Store) {
        let mut checked = 0;
        for (key, (value, rev)) in &self.acked {
            let got = s
                .get(key)
                .await
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged key {key} lost"));
            let v = String::from_utf8(got.value.to_vec()).unwrap();
            let later = self.in_flight.get(key).is_some_and(|l| l.contains(&v));
            assert!(
                v == *value || later,
                "{key}: acknowledged {value:?} at {rev}, store has {v:?}"
            );
            assert!(got.mod_revision >= *rev, "{key}: revision went back");
            checked += 1;
        }
        for (key, values) in &self.in_flight {
            if self.acked.contains_key(key) {
                continue;
            }
            // Never acknowledged: absent, or one of the values that were in flight.
            if let Some(got) = s.get(key).await.unwrap() {
                let v = String::from_utf8(got.value.to_vec()).unwrap();
                assert!(values.contains(&v), "{key}: unexpected value {v:?}");
            }
        }
        assert!(checked > 0);
        s.check().await.expect("store passes its own check");
    }
}

/// A cheap random number source; reproducible from the printed seed.
struct Rng(u64);
impl Rng {
    fn new() -> Self {
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1;
        eprintln!("random seed {seed}");
        Rng(seed)
    }
    /// splitmix64.
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n
    }
}

/// Starts the writer and a thread feeding its output into the ledger.
fn spawn_writer(
    store: &str,
    data_dir: &Path,
    round: u64,
    ledger: &Arc<Mutex<Ledger>>,
) -> (Child, std::thread::JoinHandle<()>) {
    let mut child = Command::new(WRITER)
        .args(["--store", store, "--data-dir"])
        .arg(data_dir)
        .args(["--round", &round.to_string(), "--tasks", "16"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer");
    let out = child.stdout.take().unwrap();
    let ledger = ledger.clone();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            ledger.lock().unwrap().feed(&line);
        }
    });
    (child, reader)
}

/// Waits until the writer has had `n` more writes acknowledged (it is really writing).
fn wait_for_acks(ledger: &Arc<Mutex<Ledger>>, from: usize, n: usize) {
    let t0 = Instant::now();
    while ledger.lock().unwrap().acks < from + n {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "writer made no progress"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = Rng::new();
    let mut kills = 0;
    for round in 0..40 {
        let before = ledger.lock().unwrap().acks;
        let (mut child, reader) = spawn_writer("embedded", dir.path(), round, &ledger);
        wait_for_acks(&ledger, before, 50);
        std::thread::sleep(Duration::from_millis(100 + rng.below(1500)));
        child.kill().unwrap(); // SIGKILL, by PID
        child.wait().unwrap();
        kills += 1;
        reader.join().unwrap();

        let path = dir.path().join("store.redb");
        // The file passes redb's page checksums and our invariants before we reopen it.
        Embedded::check_file(&path).expect("store file intact after SIGKILL");
        let s = Embedded::open(&path).unwrap();
        // The reader thread is done: move the ledger out while awaiting.
        let l = std::mem::take(&mut *ledger.lock().unwrap());
        l.verify(&s).await;
        eprintln!(
            "round {round}: {} acknowledged writes so far, all present",
            l.acks
        );
        assert!(l.failures.is_empty(), "{:?}", l.failures);
        let done = l.acks >= 10_000 && kills >= 5;
        *ledger.lock().unwrap() = l;
        if done {
            return;
        }
    }
    panic!("fewer than 10,000 writes acknowledged in 40 rounds");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_survives_sigkill_of_writer_and_a_member() {
    let mut cluster = EtcdCluster::start(3).expect("start 3 etcd members (etcd-server)");
    let url = cluster.url("/durability");
    let dir = tempfile::tempdir().unwrap();
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let mut rng = Rng::new();
    let mut kills = 0;
    for round in 0..40 {
        let before = ledger.lock().unwrap().acks;
        let (mut child, reader) = spawn_writer(&url, dir.path(), round, &ledger);
        wait_for_acks(&ledger, before, 50);
        // Mid-load, SIGKILL one member; the other two keep a quorum.
        let victim = rng.below(3) as usize;
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        cluster.kill(victim);
        eprintln!("round {round}: killed etcd member {victim}");
        let during = ledger.lock().unwrap().acks;
        wait_for_acks(&ledger, during, 200); // still serving with a member down
        std::thread::sleep(Duration::from_millis(rng.below(800)));
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        reader.join().unwrap();
        cluster.restart(victim).unwrap();
        cluster.wait_healthy(Duration::from_secs(30)).unwrap();

        let s = h8s_store::open(&url, dir.path(), None).await.unwrap();
        let l = std::mem::take(&mut *ledger.lock().unwrap());
        l.verify(s.as_ref()).await;
        eprintln!(
            "round {round}: {} acknowledged writes so far, all present",
            l.acks
        );
        assert!(
            l.failures.is_empty(),
            "writes failed with one member down: {:?}",
            &l.failures[..l.failures.len().min(5)]
        );
        let done = l.acks >= 10_000 && kills >= 5;
        *ledger.lock().unwrap() = l;
        if done {
            return;
        }
    }
    panic!("fewer than 10,000 writes acknowledged in 40 rounds");
}
