//! Dynamic admission: `admissionregistration.k8s.io/v1` admission webhooks
//! (MutatingWebhookConfiguration, ValidatingWebhookConfiguration) and
//! ValidatingAdmissionPolicies with their bindings.
//!
//! [`Dynamic`] keeps the configurations from watches (listed before the first request, as
//! the RBAC index is) in compiled form: rules, selectors, CEL match conditions and a TLS
//! client per webhook that trusts only its `caBundle`. The registry calls it twice per
//! write, in kube-apiserver's order:
//!
//! 1. [`Dynamic::mutate`] after the built-in admission plugins: mutating webhooks, in
//!    configuration-name order, their JSONPatch responses applied, `IfNeeded` webhooks
//!    invoked once more when a later webhook changed the object;
//! 2. [`Dynamic::validate`] after the kind's validation: ValidatingAdmissionPolicies,
//!    then validating webhooks.
//!
//! A webhook is called over HTTPS only (`clientConfig.url`). A `clientConfig.service`
//! reference is accepted (manifests written for Kubernetes apply), but the h8s API server
//! runs on the host and cannot route into tenant Networks, so calling it fails with a
//! message saying so and the webhook's `failurePolicy` decides (`Fail`: the write is
//! refused naming the webhook; `Ignore`: admitted).

pub(crate) mod call;
mod config;
mod policy;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use crate::admission::{Operation, Request};
use crate::error::ApiError;
use crate::obj;

pub(crate) use config::{compile_errors, Hook};

/// The kinds this module follows, by plural (all in `admissionregistration.k8s.io/v1`).
const GROUP: &str = "admissionregistration.k8s.io";
const MUTATING: &str = "mutatingwebhookconfigurations";
const VALIDATING: &str = "validatingwebhookconfigurations";
const POLICIES: &str = "validatingadmissionpolicies";
const BINDINGS: &str = "validatingadmissionpolicybindings";

/// Most times the mutating webhooks run for one write (the first pass and one
/// reinvocation pass, as kube-apiserver).
const MAX_PASSES: usize = 2;

/// One followed object in compiled form.
#[derive(Clone)]
enum Entry {
    Hooks(Arc<Vec<Arc<Hook>>>),
    Policy(Arc<policy::Policy>),
    Binding(Arc<policy::Binding>),
    /// A namespace: its labels, and whether its pods are on the system Network.
    Namespace {
        labels: Value,
        system: bool,
    },
}

impl Entry {
    fn compile(plural: &str, o: &Value) -> Entry {
        match plural {
            MUTATING => Entry::Hooks(Arc::new(config::hooks(o, true))),
            VALIDATING => Entry::Hooks(Arc::new(config::hooks(o, false))),
            POLICIES => Entry::Policy(Arc::new(policy::Policy::compile(o))),
            BINDINGS => Entry::Binding(Arc::new(policy::Binding::compile(o))),
            _ => Entry::Namespace {
                labels: o.pointer("/metadata/labels").cloned().unwrap_or_default(),
                system: h8s_types::effective_network(o) == h8s_types::SYSTEM_PODS_NETWORK,
            },
        }
    }
}

/// What one followed kind holds: name → compiled form, and the store revision applied.
struct Followed {
    items: RwLock<BTreeMap<String, Entry>>,
    applied: tokio::sync::watch::Sender<i64>,
}

impl Default for Followed {
    fn default() -> Self {
        Self {
            items: RwLock::new(BTreeMap::new()),
            applied: tokio::sync::watch::channel(0).0,
        }
    }
}

impl Followed {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Entry>> {
        self.items.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Entry>> {
        self.items.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The webhooks of every configuration, in configuration-name order.
    fn hooks(&self) -> Vec<Arc<Hook>> {
        self.read()
            .values()
            .filter_map(|e| match e {
                Entry::Hooks(h) => Some(h.iter().cloned()),
                _ => None,
            })
            .flatten()
            .collect()
    }
}

/// The followed kinds: (group, plural).
const FOLLOWED: &[(&str, &str)] = &[
    (GROUP, MUTATING),
    (GROUP, VALIDATING),
    (GROUP, POLICIES),
    (GROUP, BINDINGS),
    ("", "namespaces"),
];

/// Dynamic admission: webhooks and admission policies, kept from watches.
pub(crate) struct Dynamic {
    store: Arc<dyn h8s_store::Store>,
    followed: HashMap<&'static str, Followed>,
    /// Resolves `clientConfig.service` (and, for the server, every Service reference).
    resolver: crate::aggregator::resolve::Resolver,
}

impl Dynamic {
    /// Starts following the configurations (and namespaces' labels); returns once each
    /// has been listed, so the first request sees every configuration.
    pub(crate) async fn start(
        store: Arc<dyn h8s_store::Store>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Arc<Dynamic> {
        let d = Arc::new(Dynamic {
            resolver: crate::aggregator::resolve::Resolver::new(store.clone(), shutdown.clone()),
            store,
            followed: FOLLOWED
                .iter()
                .map(|(_, p)| (*p, Followed::default()))
                .collect(),
        });
        let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(FOLLOWED.len());
        for (group, plural) in FOLLOWED {
            let Some(res) = h8s_types::resources::find(group, "v1", plural) else {
                continue;
            };
            tokio::spawn(d.clone().follow(res, tx.clone(), shutdown.clone()));
        }
        drop(tx);
        // Each follower reports once after its first list (or ends at shutdown).
        let wait = async { while rx.recv().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        d
    }

    fn kind(&self, plural: &str) -> &Followed {
        static EMPTY: std::sync::LazyLock<Followed> = std::sync::LazyLock::new(Followed::default);
        self.followed.get(plural).unwrap_or(&EMPTY)
    }

    /// Returns once a write (at store revision `rev`) of a followed configuration kind
    /// is in force, so the next request is admitted under it.
    pub(crate) async fn written(&self, res: &h8s_types::Resource, rev: i64) {
        if res.group != GROUP {
            return;
        }
        let Some(f) = self.followed.get(res.plural) else {
            return;
        };
        let mut rx = f.applied.subscribe();
        let wait = rx.wait_for(|applied| *applied >= rev);
        if tokio::time::timeout(Duration::from_secs(5), wait)
            .await
            .is_err()
        {
            tracing::warn!(rev, "dynamic admission did not catch up with a write");
        }
    }

    /// Keeps one kind followed: list, then watch from the list's revision; on any
    /// error start over. `ready` is told once, after the first list.
    async fn follow(
        self: Arc<Self>,
        res: &'static h8s_types::Resource,
        ready: tokio::sync::mpsc::Sender<()>,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let prefix = obj::prefix(res, None);
        let f = self.kind(res.plural);
        let mut ready = Some(ready);
        let run = async {
            loop {
                let listed = self.store.list(&prefix, Default::default()).await;
                let watch = match &listed {
                    Ok(l) => self.store.watch(&prefix, l.revision).await,
                    Err(_) => Err(h8s_store::Error::Unavailable("list failed".into())),
                };
                if let (Ok(l), Ok(mut w)) = (listed, watch) {
                    let fresh: BTreeMap<String, Entry> = l
                        .items
                        .iter()
                        .filter_map(|kv| {
                            let name = kv.key.strip_prefix(&prefix)?;
                            let o = obj::decode(kv).ok()?;
                            Some((name.to_string(), Entry::compile(res.plural, &o)))
                        })
                        .collect();
                    *f.write() = fresh;
                    f.applied.send_replace(l.revision);
                    if let Some(r) = ready.take() {
                        let _ = r.send(()).await;
                    }
                    while let Some(Ok(ev)) = w.next().await {
                        let rev = ev.revision();
                        match &ev {
                            h8s_store::Event::Put { kv, .. } => {
                                if let (Some(name), Ok(o)) =
                                    (kv.key.strip_prefix(&prefix), obj::decode(kv))
                                {
                                    let e = Entry::compile(res.plural, &o);
                                    f.write().insert(name.to_string(), e);
                                }
                            }
                            h8s_store::Event::Delete { prev, .. } => {
                                if let Some(name) = prev.key.strip_prefix(&prefix) {
                                    f.write().remove(name);
                                }
                            }
                        }
                        f.applied.send_replace(rev);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = run => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }

    /// Where Service `namespace/name:port` is reached (see
    /// [`crate::aggregator::resolve::Resolver`]); the namespace's Network from this
    /// module's namespace cache.
    pub(crate) async fn resolve(
        &self,
        namespace: &str,
        name: &str,
        port: u16,
    ) -> Result<String, crate::aggregator::resolve::Unreachable> {
        let on_system = |ns: &str| match self.kind("namespaces").read().get(ns) {
            Some(Entry::Namespace { system, .. }) => Some(*system),
            _ => None,
        };
        self.resolver
            .resolve(namespace, name, port, &on_system)
            .await
    }

    /// The labels of namespace `ns` (from the watch, else the store).
    async fn namespace_labels(&self, ns: &str) -> Result<Value, ApiError> {
        if let Some(Entry::Namespace { labels, .. }) = self.kind("namespaces").read().get(ns) {
            return Ok(labels.clone());
        }
        let Some(res) = h8s_types::resources::find("", "v1", "namespaces") else {
            return Ok(Value::Null);
        };
        let kv = self
            .store
            .get(&obj::key(res, None, ns))
            .await
            .map_err(|e| {
                crate::error::from_store(
                    e,
                    &crate::error::Subject {
                        group: "",
                        resource: "namespaces",
                        name: ns,
                    },
                )
            })?;
        match kv {
            Some(kv) => Ok(obj::decode(&kv)?
                .pointer("/metadata/labels")
                .cloned()
                .unwrap_or_default()),
            None => Ok(Value::Null),
        }
    }

    /// What the selectors of a request are matched against: the labels of the
    /// request's namespace (a Namespace's own for namespaces) and of the object (the
    /// old one for deletes).
    async fn labels(
        &self,
        req: &Request<'_>,
        obj: Option<&Value>,
    ) -> Result<(Value, Value), ApiError> {
        let object = obj.or(req.old);
        let own = |o: Option<&Value>| {
            o.and_then(|o| o.pointer("/metadata/labels"))
                .cloned()
                .unwrap_or_default()
        };
        let ns_labels = if req.res.group.is_empty() && req.res.plural == "namespaces" {
            own(object)
        } else if req.res.namespaced && !req.namespace.is_empty() {
            self.namespace_labels(req.namespace).await?
        } else {
            Value::Null
        };
        Ok((ns_labels, own(object)))
    }

    /// Runs the mutating webhooks that match the write on `obj`; their warnings go to
    /// `warnings`.
    pub(crate) async fn mutate(
        &self,
        req: &Request<'_>,
        options: &Value,
        mut obj: Option<&mut Value>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let hooks = self.kind(MUTATING).hooks();
        if hooks.is_empty() {
            return Ok(());
        }
        let (ns_labels, obj_labels) = self.labels(req, obj.as_deref()).await?;
        // The webhooks called so far, each with whether a later one changed the object.
        let mut ran: Vec<(usize, bool)> = Vec::new();
        for pass in 0..MAX_PASSES {
            for (i, h) in hooks.iter().enumerate() {
                if pass > 0 {
                    // Reinvoke (once) the IfNeeded webhooks that saw an older object.
                    let stale = ran.iter().any(|(j, changed)| *j == i && *changed);
                    if !h.reinvoke || !stale {
                        continue;
                    }
                }
                let current = obj.as_deref();
                if !h.matches(req, current, &ns_labels, &obj_labels)? {
                    continue;
                }
                let patched =
                    call::review(self, h, req, options, current, pass > 0, warnings).await?;
                if pass == 0 {
                    ran.push((i, false));
                }
                if let (Some(p), Some(o)) = (patched, obj.as_deref_mut()) {
                    if p != *o {
                        *o = p;
                        for (j, changed) in ran.iter_mut() {
                            if *j != i {
                                *changed = true;
                            }
                        }
                    }
                }
            }
            if !ran
                .iter()
                .any(|(i, changed)| *changed && hooks[*i].reinvoke)
            {
                break;
            }
        }
        Ok(())
    }

    /// Runs the ValidatingAdmissionPolicies, then the validating webhooks, that match the
    /// write of `obj`.
    pub(crate) async fn validate(
        &self,
        req: &Request<'_>,
        options: &Value,
        obj: Option<&Value>,
        warnings: &mut Vec<String>,
    ) -> Result<(), ApiError> {
        let hooks = self.kind(VALIDATING).hooks();
        let bindings: Vec<Arc<policy::Binding>> = self
            .kind(BINDINGS)
            .read()
            .values()
            .filter_map(|e| match e {
                Entry::Binding(b) => Some(b.clone()),
                _ => None,
            })
            .collect();
        if hooks.is_empty() && bindings.is_empty() {
            return Ok(());
        }
        let (ns_labels, obj_labels) = self.labels(req, obj).await?;
        if !bindings.is_empty() {
            let policies: HashMap<String, Arc<policy::Policy>> = self
                .kind(POLICIES)
                .read()
                .iter()
                .filter_map(|(k, e)| match e {
                    Entry::Policy(p) => Some((k.clone(), p.clone())),
                    _ => None,
                })
                .collect();
            policy::run(
                &policies,
                &bindings,
                self,
                req,
                options,
                obj,
                &ns_labels,
                &obj_labels,
                warnings,
            )
            .await?;
        }
        // kube-apiserver calls validating webhooks in parallel; the first denial (in
        // configuration order) is the answer.
        let mut calls = Vec::new();
        for h in &hooks {
            if h.matches(req, obj, &ns_labels, &obj_labels)? {
                calls.push(async move {
                    let mut w = Vec::new();
                    let r = call::review(self, h, req, options, obj, false, &mut w).await;
                    (r, w)
                });
            }
        }
        let results = futures::future::join_all(calls).await;
        let mut first_err = None;
        for (r, w) in results {
            warnings.extend(w);
            if let Err(e) = r {
                first_err.get_or_insert(e);
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Reads one object for a policy's `paramRef`.
    async fn read_param(
        &self,
        res: &'static h8s_types::Resource,
        ns: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ApiError> {
        let kv = self
            .store
            .get(&obj::key(res, ns, name))
            .await
            .map_err(|e| {
                crate::error::from_store(
                    e,
                    &crate::error::Subject {
                        group: res.group,
                        resource: res.plural,
                        name,
                    },
                )
            })?;
        kv.map(|kv| obj::decode(&kv)).transpose()
    }
}

/// The registry strategy of the `admissionregistration.k8s.io` kinds: the generic
/// one, plus the check that every CEL expression compiles (422 otherwise).
pub(crate) struct Configuration;

impl crate::strategy::Strategy for Configuration {
    fn validate_create(
        &self,
        res: &h8s_types::Resource,
        o: &Value,
    ) -> Result<(), h8s_types::FieldErrors> {
        let mut errs = match h8s_types::validation::validate_create(res, o) {
            Ok(()) => h8s_types::FieldErrors::default(),
            Err(e) => e,
        };
        errs.extend(compile_errors(res, o));
        errs.into_result()
    }

    fn validate_update(
        &self,
        res: &h8s_types::Resource,
        sub: Option<crate::strategy::Sub>,
        new: &Value,
        old: &Value,
    ) -> Result<(), h8s_types::FieldErrors> {
        use h8s_types::validation as v;
        let r = match sub {
            Some(crate::strategy::Sub::Status) => return v::validate_status_update(res, new, old),
            _ => v::validate_update(res, new, old),
        };
        let mut errs = match r {
            Ok(()) => h8s_types::FieldErrors::default(),
            Err(e) => e,
        };
        errs.extend(compile_errors(res, new));
        errs.into_result()
    }
}

/// The Kubernetes operation name of an admission operation.
pub(crate) fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Create => "CREATE",
        Operation::Update => "UPDATE",
        Operation::Delete => "DELETE",
    }
}
