//! A store writer for durability tests: writes as fast as it can and reports every write
//! before it is sent and after it is acknowledged, so a test that SIGKILLs this process
//! (or the store under it) can tell exactly which writes the store owes it.
//!
//! Usage: `h8s-store-torture --store URL --data-dir DIR --round N [--tasks T] [--max W]`
//!
//! Output, one line per event, flushed at once:
//! - `S <key> <value>` — about to write `value` to `key`;
//! - `A <key> <revision>` — that write was acknowledged at `revision`;
//! - `F <key> <error>` — it failed (not acknowledged; it may or may not have happened).
//!
//! Each of the T tasks owns its keys (`/dur/r<N>/t<task>/<n>`), creates one, then updates
//! it twice with compare-and-swap, and moves on; so per key, writes are sequential and
//! "the last acknowledged value" is well defined.

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let store = arg(&args, "--store").unwrap_or_else(|| "embedded".into());
    let data_dir = PathBuf::from(arg(&args, "--data-dir").expect("--data-dir DIR"));
    let round: u64 = arg(&args, "--round").map_or(0, |r| r.parse().expect("--round N"));
    let tasks: u64 = arg(&args, "--tasks").map_or(16, |r| r.parse().expect("--tasks T"));
    let max: u64 = arg(&args, "--max").map_or(u64::MAX, |r| r.parse().expect("--max W"));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let s = match h8s_store::open(&store, &data_dir, None).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("h8s-store-torture: {e}");
                std::process::exit(2);
            }
        };
        let out = Arc::new(Mutex::new(std::io::stdout()));
        let say = move |line: String| {
            let mut o = out.lock().expect("stdout lock");
            // A closed pipe means the test is gone: stop.
            if writeln!(o, "{line}").and_then(|_| o.flush()).is_err() {
                std::process::exit(0);
            }
        };
        let mut handles = Vec::new();
        for t in 0..tasks {
            let s = s.clone();
            let say = say.clone();
            handles.push(tokio::spawn(async move {
                let mut n = 0u64;
                while n * 3 < max / tasks.max(1) + 3 {
                    let key = format!("/dur/r{round}/t{t}/{n:06}");
                    let mut rev = 0;
                    for version in 0..3 {
                        // Values of varying size, unique per write.
                        let pad = "x".repeat(((n * 7 + version * 13) % 200) as usize);
                        let value = format!("r{round}t{t}n{n}v{version}{pad}");
                        say(format!("S {key} {value}"));
                        let r = if version == 0 {
                            s.create(&key, Bytes::from(value)).await
                        } else {
                            s.update(&key, Bytes::from(value), rev).await
                        };
                        match r {
                            Ok(kv) => {
                                rev = kv.mod_revision;
                                say(format!("A {key} {rev}"));
                            }
                            Err(e) => {
                                say(format!("F {key} {e}"));
                                break;
                            }
                        }
                    }
                    n += 1;
                }
            }));
        }
        for h in handles {
            let _ = h.await;
        }
    });
}
