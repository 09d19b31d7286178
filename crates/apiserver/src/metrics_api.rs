//! `metrics.k8s.io/v1beta1` — `NodeMetrics` and `PodMetrics` for `kubectl top` and the
//! HorizontalPodAutoscaler — served by the API server itself (a local API group, where a
//! kubeadm cluster runs metrics-server behind an APIService).
//!
//! It does what metrics-server does, on demand: the Node objects say where each node agent
//! listens; the agent's `/stats/summary` (kubelet's Summary API, reached over the same
//! mutually authenticated TLS as `pods/log`, see [`crate::nodeproxy`]) gives CPU rates and
//! memory working sets; answers are kept per node for a short time ([`DEFAULT_CACHE_TTL`])
//! so that many `kubectl top` calls cost one scrape per node. A node that does not answer
//! is left out (its Node shows `<unknown>` in `kubectl top node`), as metrics-server leaves
//! out nodes it failed to scrape.
//!
//! Served: list and get of `nodes` (cluster-scoped) and `pods` (namespaced, and across
//! namespaces), with `labelSelector` (the object's labels: the Node's or the Pod's) and
//! `fieldSelector` on `metadata.name` / `metadata.namespace`. Authorization is the request
//! chain's: the resource is `nodes` or `pods` in group `metrics.k8s.io`, verbs `get` and
//! `list` (an allow-filtered decision narrows a list, like any other list). Discovery
//! (legacy and aggregated) lists the group.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use h8s_machinery::{FieldSelector, LabelSelector};
use http::Response;
use serde_json::{json, Value};

use crate::ctx::Ctx;
use crate::error::{from_machinery, ApiError, Subject};
use crate::nodeproxy::NodeProxy;
use crate::response::{json_response, Body};

/// The group.
pub const GROUP: &str = "metrics.k8s.io";
/// Its one version.
pub const VERSION: &str = "v1beta1";
/// How long a node's summary is reused.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(5);
/// The longest a scrape of one node may take.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest summary read from an agent.
const SUMMARY_LIMIT: usize = 8 << 20;
/// Nodes scraped at once.
const SCRAPE_PARALLEL: usize = 32;

/// The two resources.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `NodeMetrics`, cluster-scoped.
    Nodes,
    /// `PodMetrics`, namespaced.
    Pods,
}

impl Kind {
    pub fn plural(self) -> &'static str {
        match self {
            Kind::Nodes => "nodes",
            Kind::Pods => "pods",
        }
    }
    fn kind(self) -> &'static str {
        match self {
            Kind::Nodes => "NodeMetrics",
            Kind::Pods => "PodMetrics",
        }
    }
}

/// A request for one of the resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub kind: Kind,
    pub ns: Option<String>,
    pub name: Option<String>,
}

/// Routes the path segments after `/apis/metrics.k8s.io/<version>/`.
pub fn route(version: &str, rest: &[&str]) -> Option<Target> {
    if version != VERSION {
        return None;
    }
    let bad = |s: &str| s.is_empty() || s.contains('/') || s == "." || s == "..";
    let (ns, rest) = match rest {
        ["namespaces", ns, tail @ ..] if !tail.is_empty() => (Some(ns.to_string()), tail),
        r => (None, r),
    };
    let (kind, name) = match rest {
        ["nodes"] => (Kind::Nodes, None),
        ["nodes", n] => (Kind::Nodes, Some(n.to_string())),
        ["pods"] => (Kind::Pods, None),
        ["pods", n] => (Kind::Pods, Some(n.to_string())),
        _ => return None,
    };
    if kind == Kind::Nodes && ns.is_some() {
        return None;
    }
    if kind == Kind::Pods && ns.is_none() && name.is_some() {
        return None;
    }
    if ns.as_deref().is_some_and(bad) || name.as_deref().is_some_and(bad) {
        return None;
    }
    Some(Target { kind, ns, name })
}

fn api_resources() -> Value {
    json!([
        {"name": "nodes", "singularName": "", "namespaced": false, "kind": "NodeMetrics", "verbs": ["get", "list"]},
        {"name": "pods", "singularName": "", "namespaced": true, "kind": "PodMetrics", "verbs": ["get", "list"]},
    ])
}

/// `/apis`'s entry for the group (and the body of `/apis/metrics.k8s.io`).
pub fn group_doc() -> Value {
    let v = json!({"groupVersion": format!("{GROUP}/{VERSION}"), "version": VERSION});
    json!({"name": GROUP, "versions": [v.clone()], "preferredVersion": v})
}

/// `/apis/metrics.k8s.io/v1beta1`.
pub fn resource_list() -> Value {
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": format!("{GROUP}/{VERSION}"),
        "resources": api_resources(),
    })
}

/// The group in aggregated discovery (`apidiscovery.k8s.io`).
pub fn aggregated_group() -> Value {
    let res = |plural: &str, kind: &str, scope: &str| {
        json!({
            "resource": plural,
            "responseKind": {"group": GROUP, "version": VERSION, "kind": kind},
            "scope": scope,
            "singularResource": "",
            "verbs": ["get", "list"],
        })
    };
    json!({
        "metadata": {"name": GROUP, "creationTimestamp": null},
        "versions": [{
            "version": VERSION,
            "resources": [res("nodes", "NodeMetrics", "Cluster"), res("pods", "PodMetrics", "Namespaced")],
            "freshness": "Current",
        }],
    })
}

/// The verb of a request for [`Target`].
pub fn verb(method: &http::Method, t: &Target, watch: bool) -> &'static str {
    use http::Method;
    match *method {
        Method::GET | Method::HEAD if watch => "watch",
        Method::GET | Method::HEAD if t.name.is_some() => "get",
        Method::GET | Method::HEAD => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if t.name.is_some() => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

/// The server side: scrapes agents through the node proxy's TLS, with a per-node cache.
pub struct MetricsApi {
    store: Arc<dyn h8s_store::Store>,
    proxy: NodeProxy,
    ttl: Duration,
    cache: Mutex<HashMap<String, (Instant, Arc<Value>)>>,
}

impl MetricsApi {
    pub fn new(store: Arc<dyn h8s_store::Store>, proxy: NodeProxy, ttl: Duration) -> MetricsApi {
        MetricsApi {
            store,
            proxy,
            ttl,
            cache: Mutex::default(),
        }
    }

    /// Answers a request the chain has authorized.
    pub async fn serve(&self, cx: &Ctx, t: &Target) -> Result<Response<Body>, ApiError> {
        match cx.verb {
            "get" | "list" => {}
            _ => {
                return Err(ApiError::method_not_allowed(
                    "the server does not allow this method on the requested resource",
                ))
            }
        }
        let label = match cx.query.get("labelSelector") {
            Some(s) if !s.is_empty() => LabelSelector::parse(s).map_err(from_machinery)?,
            _ => LabelSelector::everything(),
        };
        let field = match cx.query.get("fieldSelector") {
            Some(s) if !s.is_empty() => FieldSelector::parse(s).map_err(from_machinery)?,
            _ => FieldSelector::everything(),
        };
        field
            .check_supported(|f| {
                f == "metadata.name" || (t.kind == Kind::Pods && f == "metadata.namespace")
            })
            .map_err(from_machinery)?;
        let items = match t.kind {
            Kind::Nodes => self.node_metrics(t.name.as_deref()).await?,
            Kind::Pods => self.pod_metrics(t.ns.as_deref(), t.name.as_deref()).await?,
        };
        let mut items: Vec<Value> = items
            .into_iter()
            .filter(|o| {
                label.matches_object(o)
                    && field.matches(|f| {
                        let m = &o["metadata"];
                        match f {
                            "metadata.name" => m["name"].as_str().map(str::to_string),
                            "metadata.namespace" => m["namespace"].as_str().map(str::to_string),
                            _ => None,
                        }
                    })
            })
            .collect();
        if let Some(name) = &t.name {
            return match items.pop() {
                Some(o) => Ok(json_response(200, &o)),
                None => Err(ApiError::not_found(&Subject {
                    group: GROUP,
                    resource: t.kind.plural(),
                    name,
                })),
            };
        }
        if let Some(f) = &cx.authz_filter {
            items.retain(|o| f.allows(o));
        }
        Ok(json_response(
            200,
            &json!({
                "kind": format!("{}List", t.kind.kind()),
                "apiVersion": format!("{GROUP}/{VERSION}"),
                "metadata": {},
                "items": items,
            }),
        ))
    }

    async fn read_objects(
        &self,
        plural: &str,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let res = h8s_types::resources::find("", "v1", plural)
            .ok_or_else(|| ApiError::internal(format!("the {plural} resource is not served")))?;
        let subject = Subject {
            group: "",
            resource: plural,
            name: name.unwrap_or(""),
        };
        if let Some(name) = name {
            let kv = self
                .store
                .get(&crate::obj::key(res, ns, name))
                .await
                .map_err(|e| crate::error::from_store(e, &subject))?;
            return match kv {
                Some(kv) => Ok(vec![crate::obj::decode(&kv)?]),
                None => Ok(Vec::new()),
            };
        }
        let list = self
            .store
            .list(
                &crate::obj::prefix(res, ns),
                h8s_store::ListOptions::default(),
            )
            .await
            .map_err(|e| crate::error::from_store(e, &subject))?;
        list.items.iter().map(crate::obj::decode).collect()
    }

    async fn node_metrics(&self, name: Option<&str>) -> Result<Vec<Value>, ApiError> {
        let nodes = self.read_objects("nodes", None, name).await?;
        let summaries = self.summaries(&nodes).await;
        Ok(nodes
            .iter()
            .filter_map(|n| {
                let name = n["metadata"]["name"].as_str()?;
                node_metrics(n, summaries.get(name)?)
            })
            .collect())
    }

    async fn pod_metrics(
        &self,
        ns: Option<&str>,
        name: Option<&str>,
    ) -> Result<Vec<Value>, ApiError> {
        let pods = self.read_objects("pods", ns, name).await?;
        let wanted: HashSet<&str> = pods
            .iter()
            .filter_map(|p| p["spec"]["nodeName"].as_str())
            .filter(|n| !n.is_empty())
            .collect();
        let mut nodes = Vec::new();
        for n in wanted {
            nodes.extend(self.read_objects("nodes", None, Some(n)).await?);
        }
        let summaries = self.summaries(&nodes).await;
        // uid → the summary's pod entry.
        let mut by_uid: HashMap<&str, &Value> = HashMap::new();
        for s in summaries.values() {
            for p in s["pods"].as_array().into_iter().flatten() {
                if let Some(uid) = p["podRef"]["uid"].as_str() {
                    by_uid.insert(uid, p);
                }
            }
        }
        Ok(pods
            .iter()
            .filter_map(|p| {
                let uid = p["metadata"]["uid"].as_str()?;
                pod_metrics(p, by_uid.get(uid)?)
            })
            .collect())
    }

    /// Each node's summary (cached or scraped now), by node name; nodes that fail are left
    /// out.
    async fn summaries(&self, nodes: &[Value]) -> HashMap<String, Arc<Value>> {
        use futures::StreamExt;
        let now = Instant::now();
        let mut out = HashMap::new();
        let mut todo = Vec::new();
        if let Ok(mut c) = self.cache.lock() {
            // Forget nodes not seen for long (deleted ones).
            c.retain(|_, (at, _)| now.duration_since(*at) < self.ttl * 12);
            for n in nodes {
                let Some(name) = n["metadata"]["name"].as_str() else {
                    continue;
                };
                match c.get(name) {
                    Some((at, s)) if now.duration_since(*at) < self.ttl => {
                        out.insert(name.to_string(), s.clone());
                    }
                    _ => todo.push((name.to_string(), n.clone())),
                }
            }
        }
        let scraped: Vec<(String, Option<Value>)> = futures::stream::iter(todo)
            .map(|(name, n): (String, Value)| {
                let proxy = self.proxy.clone();
                async move {
                    let got = tokio::time::timeout(
                        SCRAPE_TIMEOUT,
                        proxy.agent_get(&n, "/stats/summary", SUMMARY_LIMIT),
                    )
                    .await;
                    let parsed = match got {
                        Ok(Ok(body)) => parse_summary(&body),
                        Ok(Err(e)) => {
                            tracing::debug!(node = %name, error = %e.message, "node stats unavailable");
                            None
                        }
                        Err(_) => {
                            tracing::debug!(node = %name, "node stats timed out");
                            None
                        }
                    };
                    (name, parsed)
                }
            })
            .buffer_unordered(SCRAPE_PARALLEL)
            .collect()
            .await;
        if let Ok(mut c) = self.cache.lock() {
            for (name, s) in scraped {
                if let Some(s) = s {
                    let s = Arc::new(s);
                    c.insert(name.clone(), (Instant::now(), s.clone()));
                    out.insert(name, s);
                }
            }
        }
        out
    }
}

fn parse_summary(body: &Bytes) -> Option<Value> {
    let v: Value = serde_json::from_slice(body).ok()?;
    v.is_object().then_some(v)
}

/// CPU in the canonical form of a scaled quantity (`250m`, `1500u`, `12345n`).
pub fn cpu_quantity(nano_cores: u64) -> String {
    if nano_cores == 0 {
        "0".to_string()
    } else if nano_cores.is_multiple_of(1_000_000_000) {
        (nano_cores / 1_000_000_000).to_string()
    } else if nano_cores.is_multiple_of(1_000_000) {
        format!("{}m", nano_cores / 1_000_000)
    } else if nano_cores.is_multiple_of(1_000) {
        format!("{}u", nano_cores / 1_000)
    } else {
        format!("{nano_cores}n")
    }
}

/// Memory in the canonical form of a binary-SI quantity (`128Mi`, `1234Ki`, `1001`).
pub fn memory_quantity(bytes: u64) -> String {
    if bytes == 0 {
        return "0".to_string();
    }
    let mut n = bytes;
    for suffix in ["", "Ki", "Mi", "Gi", "Ti", "Pi"] {
        if !n.is_multiple_of(1024) || suffix == "Pi" {
            return format!("{n}{suffix}");
        }
        n /= 1024;
    }
    format!("{n}Ei")
}

/// An RFC 3339 time to whole seconds (as `metav1.Time` is written).
fn seconds(t: &str) -> Option<String> {
    let ts: jiff::Timestamp = t.parse().ok()?;
    Some(ts.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
}

/// A Go duration for a window in seconds (`10s`, `1.5s`).
fn window(secs: f64) -> String {
    let ms = (secs * 1000.0).round().max(0.0) as u64;
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        let s = format!("{}.{:03}", ms / 1000, ms % 1000);
        format!("{}s", s.trim_end_matches('0'))
    }
}

/// `(timestamp, window, cpu, memory)` of a summary's `cpu` and `memory` stats.
fn usage(cpu: &Value, memory: &Value) -> Option<(String, String, String, String)> {
    let nano = cpu["usageNanoCores"].as_u64()?;
    let ws = memory["workingSetBytes"].as_u64()?;
    let time = seconds(cpu["time"].as_str()?)?;
    let win = window(cpu["windowSeconds"].as_f64().unwrap_or(10.0));
    Some((time, win, cpu_quantity(nano), memory_quantity(ws)))
}

fn meta(o: &Value, namespaced: bool) -> Value {
    let m = &o["metadata"];
    let mut out = json!({
        "name": m["name"],
        "creationTimestamp": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
    });
    if namespaced {
        out["namespace"] = m["namespace"].clone();
    }
    if m["labels"].is_object() {
        out["labels"] = m["labels"].clone();
    }
    out
}

/// The NodeMetrics of Node `node` from its agent's summary.
pub fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let n = &summary["node"];
    let (ts, win, cpu, mem) = usage(&n["cpu"], &n["memory"])?;
    Some(json!({
        "kind": "NodeMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": meta(node, false),
        "timestamp": ts,
        "window": win,
        "usage": {"cpu": cpu, "memory": mem},
    }))
}

/// The PodMetrics of Pod `pod` from its entry in its node's summary.
pub fn pod_metrics(pod: &Value, entry: &Value) -> Option<Value> {
    let (ts, win, _, _) = usage(&entry["cpu"], &entry["memory"])?;
    let containers: Vec<Value> = entry["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| {
            let (_, _, cpu, mem) = usage(&c["cpu"], &c["memory"])?;
            Some(json!({"name": c["name"], "usage": {"cpu": cpu, "memory": mem}}))
        })
        .collect();
    if containers.is_empty() {
        return None;
    }
    Some(json!({
        "kind": "PodMetrics",
        "apiVersion": format!("{GROUP}/{VERSION}"),
        "metadata": meta(pod, true),
        "timestamp": ts,
        "window": win,
        "containers": containers,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let t = route("v1beta1", &["nodes"]).unwrap();
        assert_eq!((t.kind, t.ns, t.name), (Kind::Nodes, None, None));
        let t = route("v1beta1", &["nodes", "n1"]).unwrap();
        assert_eq!(t.name.as_deref(), Some("n1"));
        let t = route("v1beta1", &["pods"]).unwrap();
        assert_eq!((t.kind, t.ns), (Kind::Pods, None));
        let t = route("v1beta1", &["namespaces", "default", "pods", "web"]).unwrap();
        assert_eq!(t.ns.as_deref(), Some("default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert!(route("v1beta1", &["namespaces", "default", "nodes"]).is_none());
        assert!(route("v1beta1", &["pods", "web"]).is_none());
        assert!(route("v1", &["nodes"]).is_none());
        assert!(route("v1beta1", &["services"]).is_none());
        assert!(route("v1beta1", &["nodes", ".."]).is_none());
        assert!(route("v1beta1", &["pods", "a", "b"]).is_none());
    }

    #[test]
    fn quantities_are_canonical() {
        assert_eq!(cpu_quantity(0), "0");
        assert_eq!(cpu_quantity(2_000_000_000), "2");
        assert_eq!(cpu_quantity(250_000_000), "250m");
        assert_eq!(cpu_quantity(1_500_000), "1500u");
        assert_eq!(cpu_quantity(12_345), "12345n");
        assert_eq!(memory_quantity(0), "0");
        assert_eq!(memory_quantity(1001), "1001");
        assert_eq!(memory_quantity(4096), "4Ki");
        assert_eq!(memory_quantity(128 << 20), "128Mi");
        assert_eq!(memory_quantity((1 << 20) + 1024), "1025Ki");
        assert_eq!(window(10.0), "10s");
        assert_eq!(window(1.25), "1.25s");
        assert_eq!(window(0.0004), "0s");
    }

    #[test]
    fn objects_from_a_summary() {
        let summary = json!({
            "node": {"nodeName": "n1",
                "cpu": {"time": "2026-01-02T03:04:05.678Z", "usageNanoCores": 250_000_000u64, "usageCoreNanoSeconds": 9, "windowSeconds": 10.0},
                "memory": {"time": "2026-01-02T03:04:05.678Z", "workingSetBytes": 1u64 << 30}},
            "pods": [{
                "podRef": {"name": "web", "namespace": "default", "uid": "u1"},
                "cpu": {"time": "2026-01-02T03:04:05Z", "usageNanoCores": 5_000_000u64, "windowSeconds": 2.5},
                "memory": {"workingSetBytes": 300u64 << 20},
                "containers": [
                    {"name": "a", "cpu": {"time": "2026-01-02T03:04:05Z", "usageNanoCores": 5_000_000u64}, "memory": {"workingSetBytes": 300u64 << 20}},
                    {"name": "b", "cpu": {"time": "2026-01-02T03:04:05Z", "usageNanoCores": 0}, "memory": {"workingSetBytes": 0}}
                ]
            }]
        });
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a"}}});
        let m = node_metrics(&node, &summary).unwrap();
        assert_eq!(m["kind"], "NodeMetrics");
        assert_eq!(m["metadata"]["name"], "n1");
        assert_eq!(m["metadata"]["labels"]["zone"], "a");
        assert_eq!(m["timestamp"], "2026-01-02T03:04:05Z");
        assert_eq!(m["window"], "10s");
        assert_eq!(m["usage"], json!({"cpu": "250m", "memory": "1Gi"}));
        let pod = json!({"metadata": {"name": "web", "namespace": "default", "uid": "u1", "labels": {"app": "web"}}});
        let p = pod_metrics(&pod, &summary["pods"][0]).unwrap();
        assert_eq!(p["metadata"]["namespace"], "default");
        assert_eq!(p["metadata"]["labels"]["app"], "web");
        assert_eq!(p["window"], "2.5s");
        assert_eq!(
            p["containers"][0],
            json!({"name": "a", "usage": {"cpu": "5m", "memory": "300Mi"}})
        );
        assert_eq!(
            p["containers"][1]["usage"],
            json!({"cpu": "0", "memory": "0"})
        );
        // A node whose agent has only one sample yet (no rate) has no metrics.
        assert!(node_metrics(&node, &json!({"node": {"nodeName": "n1"}})).is_none());
        assert!(pod_metrics(&pod, &json!({"containers": []})).is_none());
    }

    #[test]
    fn discovery_documents() {
        assert_eq!(
            group_doc()["preferredVersion"]["groupVersion"],
            "metrics.k8s.io/v1beta1"
        );
        let l = resource_list();
        assert_eq!(l["resources"][0]["kind"], "NodeMetrics");
        assert_eq!(l["resources"][1]["namespaced"], true);
        let a = aggregated_group();
        assert_eq!(a["versions"][0]["resources"][1]["scope"], "Namespaced");
    }
}
