//! Watches on the embedded store: history from the log, then the live broadcast.
//!
//! A watcher subscribes to the broadcast *before* noting the published revision, so every
//! later revision reaches it either from the log read or from the broadcast. If it falls
//! behind and the broadcast drops batches, the gap is read back from the log. Events at
//! or below the last one delivered are skipped: no gaps, no duplicates.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use futures::StreamExt;
use redb::ReadableDatabase;
use tokio::sync::{broadcast, mpsc};

use super::{codec, db_err, Shared, COMPACTED_KEY, LOG, META};
use crate::{Error, Event, Result, Revision, WatchStream};

/// Revisions read from the log per read transaction.
const HISTORY_CHUNK: Revision = 512;

pub(super) fn start(shared: &Arc<Shared>, prefix: &str, after: Revision) -> Result<WatchStream> {
    let (rx, published) = {
        let tx = shared.events.lock().expect("event lock");
        (tx.subscribe(), shared.published.load(Ordering::SeqCst))
    };
    let compacted = shared.compacted.load(Ordering::SeqCst);
    if after != 0 && after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    let from = if after == 0 { published } else { after };
    let (tx, out) = mpsc::channel(256);
    tokio::spawn(run(
        Arc::downgrade(shared),
        prefix.to_owned(),
        from,
        published,
        rx,
        tx,
    ));
    Ok(futures::stream::unfold(out, |mut out| async move {
        out.recv().await.map(|item| (item, out))
    })
    .boxed())
}

async fn run(
    shared: Weak<Shared>,
    prefix: String,
    mut last: Revision,
    published: Revision,
    mut rx: broadcast::Receiver<Arc<[Event]>>,
    tx: mpsc::Sender<Result<Event>>,
) {
    if published > last && !replay(&shared, &prefix, &mut last, published, &tx).await {
        return;
    }
    loop {
        let batch = tokio::select! {
            _ = tx.closed() => return,
            b = rx.recv() => b,
        };
        match batch {
            Ok(batch) => {
                let first = batch.first().map(Event::revision).unwrap_or(last);
                if first > last + 1 && !replay(&shared, &prefix, &mut last, first - 1, &tx).await {
                    return;
                }
                for ev in batch.iter() {
                    if ev.revision() <= last {
                        continue;
                    }
                    last = ev.revision();
                    if key_of(ev).starts_with(prefix.as_str())
                        && tx.send(Ok(ev.clone())).await.is_err()
                    {
                        return;
                    }
                }
            }
            // Fell behind: the next batch received starts after a gap, filled from the log.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

fn key_of(ev: &Event) -> &str {
    match ev {
        Event::Put { kv, .. } => &kv.key,
        Event::Delete { prev, .. } => &prev.key,
    }
}

/// Sends the logged events in `(last, to]` under `prefix`; false when the watch is over
/// (receiver gone, store gone, or an error was sent).
async fn replay(
    shared: &Weak<Shared>,
    prefix: &str,
    last: &mut Revision,
    to: Revision,
    tx: &mpsc::Sender<Result<Event>>,
) -> bool {
    while *last < to {
        let Some(s) = shared.upgrade() else {
            return false;
        };
        let from = *last;
        let end = (from + HISTORY_CHUNK).min(to);
        let p = prefix.to_owned();
        let chunk = tokio::task::spawn_blocking(move || read_log(&s, &p, from, end)).await;
        let events = match chunk {
            Ok(Ok(events)) => events,
            Ok(Err(e)) => {
                let _ = tx.send(Err(e)).await;
                return false;
            }
            Err(e) => {
                let _ = tx
                    .send(Err(Error::Unavailable(format!("watch reader failed: {e}"))))
                    .await;
                return false;
            }
        };
        for ev in events {
            if tx.send(Ok(ev)).await.is_err() {
                return false;
            }
        }
        *last = end;
    }
    true
}

fn read_log(shared: &Shared, prefix: &str, after: Revision, to: Revision) -> Result<Vec<Event>> {
    let txn = shared.db.begin_read().map_err(db_err)?;
    let meta = txn.open_table(META).map_err(db_err)?;
    let compacted = super::meta_i64(&meta, COMPACTED_KEY)?;
    if after < compacted {
        return Err(Error::Compacted {
            requested: after,
            compacted,
        });
    }
    let log = txn.open_table(LOG).map_err(db_err)?;
    let mut out = Vec::new();
    let mut expect = after + 1;
    for entry in log.range((after + 1) as u64..=to as u64).map_err(db_err)? {
        let (r, raw) = entry.map_err(db_err)?;
        let r = r.value() as i64;
        if r != expect {
            return Err(Error::Corrupt(format!(
                "history log gap at revision {expect}"
            )));
        }
        expect = r + 1;
        if codec::log_key(r, raw.value())?.starts_with(prefix) {
            out.push(codec::decode_log(r, raw.value())?.0);
        }
    }
    if expect != to + 1 {
        return Err(Error::Corrupt(format!(
            "history log ends at {} before revision {to}",
            expect - 1
        )));
    }
    Ok(out)
}
