//! API aggregation (kube-aggregator's role): requests for a group version that an
//! `apiregistration.k8s.io/v1` APIService with a `spec.service` registers are proxied to
//! that Service's aggregated API server over TLS.
//!
//! - [`controller`] follows the APIServices (list + watch), checks every service-backed
//!   one (`GET /apis/<group>/<version>` through the proxy path) at start, on every write
//!   and every `check_interval`, writes its `Available` condition with kube-aggregator's
//!   reasons, and keeps the answered `APIResourceList` for discovery.
//! - [`openapi`] keeps each available server's OpenAPI v3 and v2 documents, listed in
//!   and merged into this server's `/openapi/v3` and `/openapi/v2`.
//! - [`proxy`] resolves the Service to an address (see [`resolve`]), connects with the
//!   front-proxy client certificate ([`frontproxy`]), verifying the server against the
//!   APIService's `caBundle` as `<service>.<namespace>.svc` (nothing is verified only with
//!   `insecureSkipTLSVerify: true`), and passes the authenticated caller in `X-Remote-User`,
//!   `X-Remote-Uid`, `X-Remote-Group` and `X-Remote-Extra-*` (the requestheader flow). The
//!   caller's own credentials (`Authorization`), `Impersonate-*` and any `X-Remote-*`
//!   headers it sent are dropped. Bodies stream both ways (the request's at most
//!   [`crate::body::MAX_BODY`]); connecting and the response head are bounded in time.
//! - The caller is authorized first, like any request (RBAC on the aggregated group and
//!   resource; the tenant guard confines tenant users to their namespaces).
//!
//! A group version that the server serves itself (built-in kinds, `metrics.k8s.io`, custom
//! resources) is never proxied: a service-backed APIService for it is reported
//! `Available: False` and ignored.

pub(crate) mod controller;
pub(crate) mod frontproxy;
pub(crate) mod openapi;
pub(crate) mod proxy;
pub(crate) mod resolve;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{json, Value};

use crate::auth::Attributes;
use crate::crd::Registry;
use crate::route::Route;
use crate::util::Query;

pub use frontproxy::{FrontProxy, FRONT_PROXY_CLIENT_CN};

/// Timers and bounds of the aggregator (flags of `h8s server`).
#[derive(Debug, Clone)]
pub struct AggregatorConfig {
    /// How often every service-backed APIService is checked (kube-aggregator's available
    /// controller re-checks every 30 s).
    pub check_interval: Duration,
    /// Connecting and the TLS handshake to an aggregated server.
    pub dial_timeout: Duration,
    /// The response head of a proxied request (its body then streams for as long as the
    /// request lasts: watches).
    pub response_timeout: Duration,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        AggregatorConfig {
            check_interval: Duration::from_secs(30),
            dial_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(60),
        }
    }
}

/// The largest discovery document (`APIResourceList`) kept from an aggregated server.
const MAX_DISCOVERY: usize = 1024 * 1024;

/// One service-backed APIService.
pub(crate) struct Backend {
    pub name: String,
    pub group: String,
    pub version: String,
    pub group_priority: i64,
    pub version_priority: i64,
    pub svc_namespace: String,
    pub svc_name: String,
    pub port: u16,
    /// The TLS client settings, or why the APIService's are unusable.
    pub tls: Result<Arc<rustls::ClientConfig>, String>,
    /// The APIService's spec this was made from (a write of the same spec is no change).
    pub spec: Value,
    /// What the last check found: `Ok(discovery document)` or `Err((reason, message))`.
    pub state: RwLock<Result<Option<Value>, (String, String)>>,
    /// The OpenAPI documents it published at its last passed check.
    pub openapi: RwLock<Option<Arc<openapi::Spec>>>,
    /// Idle connections to it, reused by proxied requests.
    pub(crate) idle: proxy::Idle,
}

impl Backend {
    /// The TLS name the aggregated server must present (kube-aggregator's).
    pub fn server_name(&self) -> String {
        format!("{}.{}.svc", self.svc_name, self.svc_namespace)
    }

    fn available(&self) -> Result<(), String> {
        match &*self.state.read().unwrap_or_else(|e| e.into_inner()) {
            Ok(_) => Ok(()),
            Err((_, m)) => Err(m.clone()),
        }
    }

    fn discovery(&self) -> Option<Value> {
        match &*self.state.read().unwrap_or_else(|e| e.into_inner()) {
            Ok(d) => d.clone(),
            Err(_) => None,
        }
    }
}

/// The aggregator's state: the service-backed APIServices by (group, version).
pub struct Aggregator {
    pub(crate) cfg: AggregatorConfig,
    pub(crate) front_proxy: FrontProxy,
    backends: RwLock<HashMap<(String, String), Arc<Backend>>>,
    /// Bumped when the set of backends or a backend's OpenAPI changes.
    openapi_gen: std::sync::atomic::AtomicU64,
    /// The merged `/openapi/v2`, for (custom resource generation, `openapi_gen`).
    v2_cache: std::sync::Mutex<Option<((u64, u64), openapi::MergedV2)>>,
}

/// A request for an aggregated group version, with what authorization needs.
pub(crate) struct AggTarget {
    pub backend: Arc<Backend>,
    pub resource_request: bool,
    pub verb: &'static str,
    pub namespace: String,
    pub resource: String,
    pub subresource: String,
    pub name: String,
}

impl AggTarget {
    /// Fills the authorization attributes of the request.
    pub fn attributes(&self, attrs: &mut Attributes) {
        attrs.resource_request = self.resource_request;
        if self.resource_request {
            attrs.group = self.backend.group.clone();
            attrs.version = self.backend.version.clone();
            attrs.resource = self.resource.clone();
            attrs.subresource = self.subresource.clone();
            attrs.name = self.name.clone();
            attrs.namespace = self.namespace.clone();
        }
        attrs.verb = self.verb.to_string();
    }
}

/// Whether the server serves a group version itself.
pub(crate) fn served_locally(group: &str, version: &str, crds: &Registry) -> bool {
    h8s_types::resources::serves_group_version(group, version)
        || (group == crate::metrics_api::GROUP && version == crate::metrics_api::VERSION)
        || crds.serves_group_version(group, version)
}

impl Aggregator {
    pub(crate) fn new(cfg: AggregatorConfig, front_proxy: FrontProxy) -> Aggregator {
        Aggregator {
            cfg,
            front_proxy,
            backends: Default::default(),
            openapi_gen: Default::default(),
            v2_cache: Default::default(),
        }
    }

    pub(crate) fn put(&self, b: Arc<Backend>) {
        self.backends
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert((b.group.clone(), b.version.clone()), b);
        self.openapi_gen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn remove_named(&self, name: &str) {
        self.backends
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|_, b| b.name != name);
        self.openapi_gen
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn all(&self) -> Vec<Arc<Backend>> {
        self.backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn get(&self, group: &str, version: &str) -> Option<Arc<Backend>> {
        self.backends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(group.to_string(), version.to_string()))
            .cloned()
    }

    /// The aggregated target of a request, when its path is under a group version that a
    /// service-backed APIService registers and the server does not serve itself.
    pub(crate) fn target(
        &self,
        r: &Route,
        method: &http::Method,
        path: &str,
        query: &Query,
        crds: &Registry,
    ) -> Option<AggTarget> {
        if !matches!(r, Route::NotFound | Route::GroupVersion(..)) {
            return None;
        }
        let parts: Vec<String> = path
            .trim_end_matches('/')
            .split('/')
            .skip(1)
            .map(|p| crate::util::percent_decode(p, false))
            .collect();
        if parts.len() < 3 || parts[0] != "apis" {
            return None;
        }
        let (group, version) = (&parts[1], &parts[2]);
        if served_locally(group, version, crds) {
            return None;
        }
        let backend = self.get(group, version)?;
        let mut rest: Vec<&str> = parts[3..].iter().map(String::as_str).collect();
        if rest.is_empty() {
            return Some(AggTarget {
                backend,
                resource_request: false,
                verb: match *method {
                    http::Method::GET | http::Method::HEAD => "get",
                    http::Method::POST => "post",
                    http::Method::PUT => "put",
                    http::Method::DELETE => "delete",
                    _ => "unknown",
                },
                namespace: String::new(),
                resource: String::new(),
                subresource: String::new(),
                name: String::new(),
            });
        }
        // kube-apiserver's RequestInfo.
        let mut watch = query.flag("watch");
        if rest.first() == Some(&"watch") {
            watch = true;
            rest.remove(0);
        }
        let mut namespace = String::new();
        if rest.first() == Some(&"namespaces") && rest.len() > 1 {
            namespace = rest[1].to_string();
            if rest.len() > 2 && !["status", "finalize"].contains(&rest[2]) {
                rest.drain(0..2);
            }
        }
        let resource = rest.first().map(|s| s.to_string()).unwrap_or_default();
        let name = rest.get(1).map(|s| s.to_string()).unwrap_or_default();
        let subresource = rest.get(2).map(|s| s.to_string()).unwrap_or_default();
        let verb = match *method {
            http::Method::GET | http::Method::HEAD if !name.is_empty() && watch => "watch",
            http::Method::GET | http::Method::HEAD if !name.is_empty() => "get",
            http::Method::GET | http::Method::HEAD if watch => "watch",
            http::Method::GET | http::Method::HEAD => "list",
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE if !name.is_empty() => "delete",
            http::Method::DELETE => "deletecollection",
            _ => "unknown",
        };
        Some(AggTarget {
            backend,
            resource_request: true,
            verb,
            namespace,
            resource,
            subresource,
            name,
        })
    }

    /// The aggregated groups for discovery, highest `groupPriorityMinimum` first, each
    /// with its versions, highest `versionPriority` first.
    pub(crate) fn groups(&self, crds: &Registry) -> Vec<(String, Vec<Arc<Backend>>)> {
        let mut by_group: Vec<(String, Vec<Arc<Backend>>)> = Vec::new();
        let mut all: Vec<Arc<Backend>> = self
            .all()
            .into_iter()
            .filter(|b| !served_locally(&b.group, &b.version, crds))
            .collect();
        all.sort_by(|a, b| {
            b.version_priority.cmp(&a.version_priority).then_with(|| {
                h8s_types::crd::version_priority(&a.version)
                    .cmp(&h8s_types::crd::version_priority(&b.version))
            })
        });
        for b in all {
            match by_group.iter_mut().find(|(g, _)| *g == b.group) {
                Some((_, vs)) => vs.push(b),
                None => by_group.push((b.group.clone(), vec![b])),
            }
        }
        let prio = |vs: &[Arc<Backend>]| vs.iter().map(|b| b.group_priority).max().unwrap_or(0);
        by_group.sort_by(|(ga, a), (gb, b)| prio(b).cmp(&prio(a)).then_with(|| ga.cmp(gb)));
        by_group
    }

    /// `/apis/<group>` of an aggregated group.
    pub(crate) fn group_doc(&self, group: &str, crds: &Registry) -> Option<Value> {
        let (_, vs) = self.groups(crds).into_iter().find(|(g, _)| g == group)?;
        Some(legacy_group(group, &vs))
    }
}

/// The `APIGroup` entry of an aggregated group.
pub(crate) fn legacy_group(group: &str, vs: &[Arc<Backend>]) -> Value {
    let versions: Vec<Value> = vs
        .iter()
        .map(|b| json!({"groupVersion": format!("{group}/{}", b.version), "version": b.version}))
        .collect();
    json!({"name": group, "versions": versions,
        "preferredVersion": versions.first().cloned().unwrap_or(Value::Null)})
}

/// The `apidiscovery.k8s.io` entry of an aggregated group, from the `APIResourceList`s
/// its servers answered (a version not answered yet is `Stale` with no resources).
pub(crate) fn aggregated_group(group: &str, vs: &[Arc<Backend>]) -> Value {
    let versions: Vec<Value> = vs
        .iter()
        .map(|b| match b.discovery() {
            Some(list) => json!({"version": b.version,
                "resources": aggregated_resources(group, &b.version, &list),
                "freshness": "Current"}),
            None => json!({"version": b.version, "resources": [], "freshness": "Stale"}),
        })
        .collect();
    json!({"metadata": {"name": group, "creationTimestamp": null}, "versions": versions})
}

/// An `APIResourceList`'s resources in the aggregated discovery shape (`a/b` entries
/// become subresources of `a`).
fn aggregated_resources(group: &str, version: &str, list: &Value) -> Vec<Value> {
    let empty = Vec::new();
    let items = list["resources"].as_array().unwrap_or(&empty);
    let kind_ref = |r: &Value| {
        json!({"group": r["group"].as_str().unwrap_or(group),
            "version": r["version"].as_str().unwrap_or(version),
            "kind": r["kind"].as_str().unwrap_or("")})
    };
    let mut out: Vec<Value> = Vec::new();
    for r in items.iter().filter(|r| {
        r["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty() && !n.contains('/'))
    }) {
        let name = r["name"].as_str().unwrap_or("");
        let mut v = json!({
            "resource": name,
            "responseKind": kind_ref(r),
            "scope": if r["namespaced"].as_bool().unwrap_or(false) { "Namespaced" } else { "Cluster" },
            "singularResource": r["singularName"].as_str().unwrap_or(""),
            "verbs": r["verbs"].clone(),
        });
        for k in ["shortNames", "categories"] {
            if r[k].as_array().is_some_and(|a| !a.is_empty()) {
                v[k] = r[k].clone();
            }
        }
        let subs: Vec<Value> = items
            .iter()
            .filter_map(|s| {
                let (parent, sub) = s["name"].as_str()?.split_once('/')?;
                (parent == name).then(|| {
                    json!({"subresource": sub, "responseKind": kind_ref(s),
                        "verbs": s["verbs"].clone()})
                })
            })
            .collect();
        if !subs.is_empty() {
            v["subresources"] = Value::Array(subs);
        }
        out.push(v);
    }
    out
}

#[cfg(test)]
mod tests;
