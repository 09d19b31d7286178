//! Watches: a chunked stream of newline-delimited `{"type","object"}` events.
//!
//! Bookmarks carry the store's progress, not the watched resource's last event: the
//! store's watch ([`h8s_store::Store::watch_progress`], the watch cache's ring fed by
//! every write and by etcd's progress notifications) says up to which revision nothing
//! under the prefix is left to send. A controller whose resource is quiet while others
//! churn resumes from a recent revision, inside the ring and the compaction window, as
//! from kube-apiserver's watch cache, rather than from one the churn has pushed out.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::{json, Value};

use crate::ctx::Ctx;
use crate::error::{from_machinery, from_store, ApiError};
use crate::filter::Filter;
use crate::flow::conn::ConnKill;
use crate::flow::{Room, SendEnd, WatchBudget};
use crate::obj;
use crate::response::Body;
use crate::route::Target;
use crate::state::Api;
use crate::strategy::Strategy;

/// The longest a watch lasts without `timeoutSeconds` (kube-apiserver picks a random
/// value around 30–60 minutes; clients re-establish).
const MAX_WATCH: Duration = Duration::from_secs(1800);

/// Encoded events shared by the watches that need the same bytes for an event — one
/// resource version, no selector, no authorization filter, JSON rather than Table — the way
/// kube-apiserver's watch cache serializes an event once for all its watchers
/// (`cachingObject`): with N such watchers an event is decoded and encoded once, not N
/// times. Bounded in events and bytes; the oldest go first.
#[derive(Default)]
pub(crate) struct SharedEncodings {
    inner: std::sync::Mutex<SharedInner>,
}

#[derive(Default)]
struct SharedInner {
    map: std::collections::HashMap<EncodingKey, Bytes>,
    order: std::collections::VecDeque<EncodingKey>,
    bytes: usize,
}

/// (store revision, served resource, hash of the store key).
type EncodingKey = (i64, usize, u64);

const SHARED_MAX_EVENTS: usize = 1024;
const SHARED_MAX_BYTES: usize = 64 << 20;

/// The watch path's memory in Prometheus text: the watch cache's ring and the shared
/// encodings (what the soak benchmark follows next to RSS).
pub(crate) fn render_metrics(api: &Api) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    if let Some(c) = &api.watch_cache {
        let (events, bytes) = c.ring_size();
        let _ = writeln!(out, "# HELP h8s_watch_cache_events Events in the watch cache's ring.\n# TYPE h8s_watch_cache_events gauge\nh8s_watch_cache_events {events}");
        let _ = writeln!(out, "# HELP h8s_watch_cache_bytes Bytes of keys and values in the watch cache's ring.\n# TYPE h8s_watch_cache_bytes gauge\nh8s_watch_cache_bytes {bytes}");
        let _ = writeln!(out, "# HELP h8s_watch_cache_watchers Subscribers of the watch cache.\n# TYPE h8s_watch_cache_watchers gauge\nh8s_watch_cache_watchers {}", c.watchers());
    }
    let (events, bytes) = {
        let inner = api
            .watch_encodings
            .inner
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        (inner.map.len(), inner.bytes)
    };
    let _ = writeln!(out, "# HELP h8s_watch_shared_encodings_bytes Bytes of watch events encoded once for many watches.\n# TYPE h8s_watch_shared_encodings_bytes gauge\nh8s_watch_shared_encodings_bytes {bytes}");
    let _ = writeln!(out, "# HELP h8s_watch_shared_encodings Watch events encoded once for many watches.\n# TYPE h8s_watch_shared_encodings gauge\nh8s_watch_shared_encodings {events}");
    out
}

impl SharedEncodings {
    fn key(res: &'static h8s_types::Resource, ev: &h8s_store::Event) -> EncodingKey {
        use std::hash::{Hash, Hasher};
        let key = match ev {
            h8s_store::Event::Put { kv, .. } => &kv.key,
            h8s_store::Event::Delete { prev, .. } => &prev.key,
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (ev.revision(), res as *const _ as usize, h.finish())
    }

    fn get(&self, k: &EncodingKey) -> Option<Bytes> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.map.get(k).cloned()
    }

    fn put(&self, k: EncodingKey, b: Bytes) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if b.len() > SHARED_MAX_BYTES / 4 || inner.map.contains_key(&k) {
            return;
        }
        inner.bytes += b.len();
        inner.map.insert(k, b);
        inner.order.push_back(k);
        while inner.order.len() > SHARED_MAX_EVENTS || inner.bytes > SHARED_MAX_BYTES {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some(b) = inner.map.remove(&old) {
                inner.bytes -= b.len();
            }
        }
    }
}

struct Encoder {
    res: &'static h8s_types::Resource,
    strategy: crate::strategy::StrategyRef,
    table: bool,
    include_object: String,
}

impl Encoder {
    fn event(&mut self, kind: &str, o: &Value) -> Bytes {
        let object = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let meta = json!({"resourceVersion": obj::resource_version(o)});
            self.strategy.table(
                self.res,
                std::slice::from_ref(o),
                &self.include_object,
                meta,
            )
        } else {
            o.clone()
        };
        let mut b = h8s_types::wire::watch_event(kind, &object);
        b.push(b'\n');
        Bytes::from(b)
    }
}

impl Api {
    pub(crate) async fn watch(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
    ) -> Result<Response<Body>, ApiError> {
        let mut filter = Filter::from_query(cx, t)?;
        if let Some(n) = &t.name {
            // A watch on one object (the old /watch/…/name form) is a name selector.
            let s = format!("metadata.name={}", h8s_machinery::escape_value(n));
            filter.field =
                h8s_machinery::FieldSelector::parse(&match cx.query.get("fieldSelector") {
                    Some(f) if !f.is_empty() => format!("{f},{s}"),
                    _ => s,
                })
                .map_err(from_machinery)?;
        }
        let timeout = match cx.query.get("timeoutSeconds") {
            Some(s) if !s.is_empty() => Duration::from_secs(
                s.parse::<u64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds {s:?}")))?,
            )
            .min(MAX_WATCH),
            _ => MAX_WATCH,
        };
        let bookmarks = cx.query.flag("allowWatchBookmarks");
        let send_initial = cx.query.get("sendInitialEvents") == Some("true");
        let rv = cx.query.get("resourceVersion").unwrap_or("").to_string();
        let prefix = obj::prefix(t.res, t.ns.as_deref());

        // RV "" or "0" (or sendInitialEvents) start with the current state as ADDED.
        let mut initial = Vec::new();
        let start_rev: i64;
        if rv.is_empty() || rv == "0" || send_initial {
            let list_cx_query = strip_paging(cx.query.clone());
            let tmp = Ctx {
                user: cx.user.clone(),
                query: list_cx_query,
                headers: cx.headers.clone(),
                method: cx.method.clone(),
                as_table: false,
                include_object: String::new(),
                warnings: vec![],
                late_warnings: Default::default(),
                verb: "list",
                applying: false,
                parts: None,
                authz_filter: cx.authz_filter.clone(),
            };
            let (items, rev, _) = self.list_objects(&tmp, t, &filter).await?;
            initial = items;
            start_rev = rev;
        } else {
            start_rev = rv
                .parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version {rv:?}")))?;
        }

        // limits: a bounded send buffer (events and bytes); a reader that does not make
        // room in time ends its watch (it re-lists, as after kube's "too slow" close).
        let (tx, rx) = tokio::sync::mpsc::channel::<(Bytes, Room)>(256);
        let budget = WatchBudget::new(&self.flow.cfg);
        let http1 = cx
            .parts
            .as_ref()
            .filter(|p| p.version < http::Version::HTTP_2)
            .and_then(|p| p.extensions.get::<ConnKill>().cloned());
        let mut enc = Encoder {
            res: t.res,
            strategy: t.strategy(),
            table: cx.as_table,
            include_object: cx.include_object.clone(),
        };
        let stream = self.store.watch_progress(&prefix, start_rev).await;
        let bookmark_every = self
            .flow
            .cfg
            .watch_bookmark_interval
            .max(Duration::from_millis(100));
        let me = self.clone();
        let res = t.res;
        let sub_name = t.name.clone().unwrap_or_default();
        let t2 = t.clone();
        me.metrics.watch_started();
        tokio::spawn(async move {
            let _guard = WatchGuard(me.clone());
            let sink = Sink {
                api: &me,
                budget,
                tx: &tx,
                http1,
            };
            for o in &initial {
                if !sink.put(enc.event("ADDED", o)).await {
                    return;
                }
            }
            if send_initial && bookmarks {
                let b = bookmark(res, start_rev, true);
                if !sink.put(enc.event("BOOKMARK", &b)).await {
                    return;
                }
            }
            let mut stream = match stream {
                Ok(s) => s,
                Err(e) => {
                    let st = from_store(e, &t2.subject(&sub_name)).to_status();
                    let _ = sink.put(enc.event("ERROR", &st)).await;
                    return;
                }
            };
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval(bookmark_every);
            tick.tick().await;
            let mut last_rev = start_rev;
            let mut shutdown = me.shutdown.clone();
            loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = tx.closed() => return,
                    _ = shutdown.changed() => return,
                    _ = tick.tick(), if bookmarks => {
                        let b = bookmark(res, last_rev, false);
                        if !sink.put(enc.event("BOOKMARK", &b)).await { return; }
                    }
                    ev = stream.next() => {
                        let Some(ev) = ev else { return };
                        let ev = match ev {
                            Ok(h8s_store::Notice::Event(ev)) => ev,
                            Ok(h8s_store::Notice::Progress(rev)) => {
                                // Nothing under the prefix up to `rev`: the next bookmark
                                // may say so.
                                last_rev = last_rev.max(rev);
                                continue;
                            }
                            Err(e) => {
                                let st = from_store(e, &t2.subject(&sub_name)).to_status();
                                let _ = sink.put(enc.event("ERROR", &st)).await;
                                return;
                            }
                        };
                        last_rev = ev.revision();
                        let shared = (filter.is_everything() && !enc.table)
                            .then(|| SharedEncodings::key(res, &ev));
                        if let Some(b) = shared.as_ref().and_then(|k| me.watch_encodings.get(k)) {
                            if !sink.put(b).await { return; }
                            continue;
                        }
                        // A custom resource stored in another version than the one
                        // watched: through its conversion webhook; a failure ends the
                        // watch with the webhook's error (the client lists again).
                        let ev = match &t2.cr {
                            Some(c) => match c.convert_event(&me, ev).await {
                                Ok(ev) => ev,
                                Err(e) => {
                                    let _ = sink.put(enc.event("ERROR", &e.to_status())).await;
                                    return;
                                }
                            },
                            None => ev,
                        };
                        let out = match translate(&ev, &filter, &*enc.strategy) {
                            Ok(Some((kind, o))) => enc.event(kind, &o),
                            Ok(None) => continue,
                            Err(e) => {
                                tracing::warn!(error = %e.message, "watch: skipping an undecodable object");
                                continue;
                            }
                        };
                        if let Some(k) = shared {
                            me.watch_encodings.put(k, out.clone());
                        }
                        if !sink.put(out).await { return; }
                    }
                }
            }
        });
        let body = StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
            // The event leaves the watch's buffer (its room is given back) as the
            // connection takes it.
            rx.recv()
                .await
                .map(|(b, _room)| (Ok::<_, Infallible>(Frame::data(b)), rx))
        }))
        .boxed_unsync();
        let mut resp = Response::new(body);
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        resp.headers_mut().insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache, private"),
        );
        Ok(resp)
    }
}

/// Where a watch's events go: its bounded buffer towards the connection.
struct Sink<'a> {
    api: &'a Arc<Api>,
    budget: WatchBudget,
    tx: &'a tokio::sync::mpsc::Sender<(Bytes, Room)>,
    /// Over HTTP/1.1, the connection's kill switch: a response that cannot be finished
    /// takes its connection with it.
    http1: Option<ConnKill>,
}

impl Sink<'_> {
    /// Whether the watch goes on.
    async fn put(&self, b: Bytes) -> bool {
        match self.budget.send(self.tx, b).await {
            Ok(()) => true,
            Err(SendEnd::Closed) => false,
            Err(SendEnd::TooSlow(_)) => {
                self.api
                    .flow
                    .slow_watches_ended
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!("ending a watch whose reader does not keep up");
                if let Some(k) = &self.http1 {
                    k.kill();
                }
                false
            }
        }
    }
}

struct WatchGuard(Arc<Api>);
impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.metrics.watch_ended();
    }
}

fn strip_paging(q: crate::util::Query) -> crate::util::Query {
    // The initial list of a watch reads everything at the newest revision.
    q.only(&["labelSelector", "fieldSelector"])
}

fn bookmark(res: &h8s_types::Resource, rev: i64, initial_end: bool) -> Value {
    let mut meta = json!({"resourceVersion": rev.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": meta})
}

/// A store event as a watch event, with selector transitions: an object that stops
/// matching is DELETED for this watcher, one that starts matching is ADDED.
fn translate(
    ev: &h8s_store::Event,
    f: &Filter,
    strategy: &dyn Strategy,
) -> Result<Option<(&'static str, Value)>, ApiError> {
    let decode = |kv: &h8s_store::KeyValue| -> Result<Value, ApiError> {
        Ok(strategy.served_form(obj::decode(kv)?))
    };
    match ev {
        h8s_store::Event::Put { kv, prev } => {
            let new = decode(kv)?;
            let new_ok = f.matches(&new);
            let old_ok = match prev {
                Some(p) => f.is_everything() || f.matches(&decode(p)?),
                None => false,
            };
            Ok(match (prev.is_some() && old_ok, new_ok) {
                (false, true) => Some(("ADDED", new)),
                (true, true) => Some(("MODIFIED", new)),
                (true, false) => Some(("DELETED", new)),
                (false, false) => None,
            })
        }
        h8s_store::Event::Delete { prev, revision } => {
            let mut old = decode(prev)?;
            if !f.matches(&old) {
                return Ok(None);
            }
            obj::set_resource_version(&mut old, *revision);
            Ok(Some(("DELETED", old)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(rev: i64, key: &str) -> h8s_store::Event {
        h8s_store::Event::Put {
            kv: h8s_store::KeyValue {
                key: key.into(),
                value: Bytes::from_static(b"{}"),
                create_revision: rev,
                mod_revision: rev,
            },
            prev: None,
        }
    }

    #[test]
    fn shared_encodings_are_keyed_by_event_and_resource_and_bounded() {
        let cm = h8s_types::resources::find("", "v1", "configmaps").unwrap();
        let sec = h8s_types::resources::find("", "v1", "secrets").unwrap();
        let s = SharedEncodings::default();
        let k = SharedEncodings::key(cm, &put(7, "/registry/configmaps/a/b"));
        s.put(k, Bytes::from_static(b"seven"));
        assert_eq!(s.get(&k).as_deref(), Some(&b"seven"[..]));
        // Another resource or another key at the same revision is another entry.
        assert!(s
            .get(&SharedEncodings::key(
                sec,
                &put(7, "/registry/configmaps/a/b")
            ))
            .is_none());
        assert!(s
            .get(&SharedEncodings::key(
                cm,
                &put(7, "/registry/configmaps/a/c")
            ))
            .is_none());
        // At most SHARED_MAX_EVENTS are kept, the oldest dropped first.
        for r in 8..8 + SHARED_MAX_EVENTS as i64 {
            s.put(
                SharedEncodings::key(cm, &put(r, "/k")),
                Bytes::from_static(b"x"),
            );
        }
        assert!(s.get(&k).is_none());
        let inner = s.inner.lock().unwrap();
        assert_eq!(inner.map.len(), SHARED_MAX_EVENTS);
        assert_eq!(inner.bytes, SHARED_MAX_EVENTS);
    }
}
