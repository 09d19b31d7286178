//! CustomResourceDefinitions: the dynamic layer next to the static resource table.
//!
//! - [`Registry`]: the custom resources this server serves now, consulted by routing,
//!   discovery and OpenAPI. It is kept by [`controller`] from a watch on definitions
//!   in the store, so every server of a cluster serves the same custom resources.
//! - [`CustomResource`]: the registry strategy of one served version (schema defaults,
//!   pruning and validation, CEL rules, subresources, printer columns, versions).
//! - [`kind`]: the strategy of the `CustomResourceDefinition` kind itself.
//! - [`openapi`]: OpenAPI v2/v3 documents from the definitions' schemas.

pub(crate) mod controller;
pub(crate) mod convert;
mod intern;
pub(crate) mod kind;
pub(crate) mod openapi;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use futures::future::BoxFuture;
use h8s_types::crd::{self as types, value, Definition, Version};
use h8s_types::resources::{group_version, ScalePaths, Subresource, STANDARD_VERBS};
use h8s_types::{FieldError, FieldErrors, Resource};
use serde_json::{json, Value};

use crate::auth::UserInfo;
use crate::error::ApiError;
use crate::state::Api;
use crate::strategy::{generic_prepare_for_update, Guard, Strategy, Sub};

/// One served version of a custom resource: its `Resource` and what its schema does.
pub(crate) struct CustomResource {
    pub res: &'static Resource,
    pub def: Arc<Definition>,
    /// Index of this version in `def.versions`.
    version: usize,
    /// `group/version` of this version and of the storage version.
    api_version: String,
    storage_api_version: String,
    /// The compiled `x-kubernetes-validations` of this version's schema.
    pub(crate) rules: Arc<crate::cel::SchemaRules>,
    /// List and map semantics for server-side apply, from the schema.
    patch_schema: h8s_machinery::Schema,
    /// The conversion webhook (`spec.conversion.strategy: Webhook`).
    conversion: Option<Arc<convert::Webhook>>,
}

/// The server-side apply metadata of a structural schema: `x-kubernetes-list-type`
/// `map` (keyed by `x-kubernetes-list-map-keys`) and `set` lists, `x-kubernetes-map-type:
/// atomic` objects, at their paths (`spec.ports`, `spec.ports[].targets`). Lists without
/// a list type are atomic, as in Kubernetes. Maps (`additionalProperties`) are not
/// descended into (their keys are not paths).
pub(crate) fn patch_fields(s: &types::Schema) -> Vec<h8s_machinery::FieldMeta> {
    fn walk(s: &types::Schema, path: &str, out: &mut Vec<h8s_machinery::FieldMeta>, depth: usize) {
        if depth > 64 {
            return;
        }
        let join = |k: &str| {
            if path.is_empty() {
                k.to_string()
            } else {
                format!("{path}.{k}")
            }
        };
        for (k, p) in &s.properties {
            if path.is_empty() && k == "metadata" {
                continue;
            }
            let here = join(k);
            if p.ty == "array" {
                let list_type = match p.list_type.as_str() {
                    "map" if !p.list_map_keys.is_empty() => {
                        Some(h8s_machinery::ListType::Map(intern::list(&p.list_map_keys)))
                    }
                    "set" => Some(h8s_machinery::ListType::Set),
                    _ => None,
                };
                if let Some(lt) = list_type {
                    let items_atomic = p.items.as_deref().is_some_and(|i| i.map_type == "atomic");
                    out.push(h8s_machinery::FieldMeta {
                        path: intern::str(&here),
                        patch_strategy: "",
                        patch_merge_key: "",
                        list_type: Some(lt),
                        atomic: items_atomic,
                    });
                    if let Some(items) = p.items.as_deref() {
                        walk(items, &format!("{here}[]"), out, depth + 1);
                    }
                }
            } else if p.ty == "object" {
                if p.map_type == "atomic" {
                    out.push(h8s_machinery::FieldMeta {
                        path: intern::str(&here),
                        patch_strategy: "",
                        patch_merge_key: "",
                        list_type: None,
                        atomic: true,
                    });
                } else {
                    walk(p, &here, out, depth + 1);
                }
            }
        }
    }
    let mut out = Vec::new();
    walk(s, "", &mut out, 0);
    out
}

impl std::fmt::Debug for CustomResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "CustomResource({}/{})",
            self.api_version, self.res.plural
        )
    }
}

impl CustomResource {
    fn v(&self) -> &Version {
        &self.def.versions[self.version]
    }

    /// The parsed schema of this version.
    pub(crate) fn schema(&self) -> &types::Schema {
        &self.v().schema
    }

    /// The `Warning` a request to a deprecated version gets.
    pub(crate) fn deprecation_warning(&self) -> Option<String> {
        let v = self.v();
        if !v.deprecated {
            return None;
        }
        Some(
            v.deprecation_warning
                .clone()
                .unwrap_or_else(|| format!("{} {} is deprecated", self.api_version, self.res.kind)),
        )
    }

    /// `o` (as stored, or as sent) in this version: through the conversion webhook when
    /// the definition has one, else unchanged (`served_form` rewrites `apiVersion`).
    pub(crate) async fn to_served(&self, api: &Api, o: Value) -> Result<Value, ApiError> {
        self.convert_to(api, o, &self.api_version).await
    }

    /// Objects (a list page) in this version, through the conversion webhook in one
    /// review for all of them that are in another version.
    pub(crate) async fn to_served_all(
        &self,
        api: &Api,
        objs: Vec<Value>,
    ) -> Result<Vec<Value>, ApiError> {
        match &self.conversion {
            Some(hook) => {
                convert::convert(api, hook, &self.def.names.kind, objs, &self.api_version).await
            }
            None => Ok(objs),
        }
    }

    /// `o` in the storage version, through the conversion webhook when there is one.
    pub(crate) async fn to_stored(&self, api: &Api, o: Value) -> Result<Value, ApiError> {
        self.convert_to(api, o, &self.storage_api_version).await
    }

    async fn convert_to(&self, api: &Api, o: Value, to: &str) -> Result<Value, ApiError> {
        let Some(hook) = &self.conversion else {
            return Ok(o);
        };
        if o["apiVersion"].as_str() == Some(to) {
            return Ok(o);
        }
        let mut out = convert::convert(api, hook, &self.def.names.kind, vec![o], to).await?;
        Ok(out.pop().unwrap_or(Value::Null))
    }

    /// A watch event in this version: its object and, for an update, the object before
    /// it, through the conversion webhook in one `ConversionReview` when either is stored
    /// in another version (no call when both are already in this version, or when the
    /// definition has no webhook). The returned event holds the converted objects.
    pub(crate) async fn convert_event(
        &self,
        api: &Api,
        mut ev: h8s_store::Event,
    ) -> Result<h8s_store::Event, ApiError> {
        let Some(hook) = &self.conversion else {
            return Ok(ev);
        };
        let kvs: Vec<&mut h8s_store::KeyValue> = match &mut ev {
            h8s_store::Event::Put { kv, prev } => std::iter::once(kv).chain(prev).collect(),
            h8s_store::Event::Delete { prev, .. } => vec![prev],
        };
        let objs = kvs
            .iter()
            .map(|kv| crate::obj::decode(kv))
            .collect::<Result<Vec<_>, _>>()?;
        if objs
            .iter()
            .all(|o| o["apiVersion"].as_str() == Some(self.api_version.as_str()))
        {
            return Ok(ev);
        }
        let out =
            convert::convert(api, hook, &self.def.names.kind, objs, &self.api_version).await?;
        for (kv, o) in kvs.into_iter().zip(out) {
            kv.value = crate::obj::encode(&o);
        }
        Ok(ev)
    }

    /// The version as the definition states it.
    pub(crate) fn version(&self) -> &Version {
        self.v()
    }

    fn validate(&self, o: &Value, old: Option<&Value>) -> Result<(), FieldErrors> {
        let mut errs = FieldErrors::default();
        h8s_types::validation::validate_object_meta(self.res, o, &mut errs);
        if let Some(old) = old {
            h8s_types::validation::validate_object_meta_update(o, old, &mut errs);
        }
        let mut fe: Vec<FieldError> = Vec::new();
        // The schema's root is the whole object; metadata is the server's.
        let mut body = o.clone();
        if let Some(m) = body.as_object_mut() {
            m.remove("metadata");
        }
        value::validate(self.schema(), &body, "", &mut fe);
        if fe.is_empty() {
            let old_body = old.map(|x| {
                let mut x = x.clone();
                if let Some(m) = x.as_object_mut() {
                    m.remove("metadata");
                }
                x
            });
            self.rules.check(&body, old_body.as_ref(), &mut fe);
        }
        errs.0.extend(fe);
        errs.into_result()
    }
}

/// Builds the `Resource` of one version of a definition (interned, `'static`).
fn resource_of(def: &Definition, v: &Version) -> &'static Resource {
    let group = intern::str(&def.group);
    let version = intern::str(&v.name);
    let kind = intern::str(&def.names.kind);
    let mut subs = Vec::new();
    if v.scale.is_some() {
        subs.push(Subresource {
            name: "scale",
            group: "autoscaling",
            version: "v1",
            kind: "Scale",
            verbs: &["get", "patch", "update"],
        });
    }
    if v.status {
        subs.push(Subresource {
            name: "status",
            group,
            version,
            kind,
            verbs: &["get", "patch", "update"],
        });
    }
    let storage = def.storage_version().map(|s| intern::str(&s.name));
    intern::resource(Resource {
        group,
        version,
        kind,
        list_kind: intern::str(&def.names.list_kind),
        plural: intern::str(&def.names.plural),
        singular: intern::str(&def.names.singular),
        namespaced: def.namespaced,
        short_names: intern::list(&def.names.short_names),
        categories: intern::list(&def.names.categories),
        verbs: STANDARD_VERBS,
        subresources: intern::subresources(subs),
        has_status: v.status,
        scale: v.scale.as_ref().map(|s| ScalePaths {
            spec_replicas: intern::str(&s.spec_replicas),
            status_replicas: intern::str(&s.status_replicas),
            selector: intern::str(s.label_selector.as_deref().unwrap_or("")),
            selector_is_map: false,
        }),
        storage: storage.map(|s| (group, s, kind)),
        extra_selectable_fields: intern::list(&v.selectable_fields),
        h8s_kind: false,
    })
}

/// What the registry holds.
#[derive(Default)]
struct Inner {
    /// Served definitions by name.
    defs: BTreeMap<String, Arc<Definition>>,
    /// Served versions by (group, version, plural).
    served: HashMap<(String, String, String), Arc<CustomResource>>,
    /// Bumped on every change (OpenAPI and discovery caches key on it).
    generation: u64,
}

/// The custom resources this server serves: shared by the request path (routing,
/// discovery, OpenAPI) and the controller that keeps it.
#[derive(Clone, Default)]
pub(crate) struct Registry(Arc<RwLock<Inner>>, Arc<openapi::Cache>);

impl Registry {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    fn openapi_cache(&self) -> &openapi::Cache {
        &self.1
    }

    /// The served version `group/version` of resource `plural`.
    pub(crate) fn find(
        &self,
        group: &str,
        version: &str,
        plural: &str,
    ) -> Option<Arc<CustomResource>> {
        self.read()
            .served
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Whether a custom resource is served in this group version.
    pub(crate) fn serves_group_version(&self, group: &str, version: &str) -> bool {
        self.read()
            .served
            .keys()
            .any(|(g, v, _)| g == group && v == version)
    }

    /// Groups of custom resources, by name, each with its served versions in priority
    /// order (the preferred first).
    pub(crate) fn groups(&self) -> Vec<(String, Vec<String>)> {
        let inner = self.read();
        let mut by_group: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (g, v, _) in inner.served.keys() {
            let e = by_group.entry(g.clone()).or_default();
            if !e.contains(v) {
                e.push(v.clone());
            }
        }
        by_group
            .into_iter()
            .map(|(g, mut vs)| {
                vs.sort_by_key(|v| types::version_priority(v));
                (g, vs)
            })
            .collect()
    }

    /// Served custom resources of one group version, by plural.
    pub(crate) fn in_group_version(&self, group: &str, version: &str) -> Vec<Arc<CustomResource>> {
        let inner = self.read();
        let mut v: Vec<Arc<CustomResource>> = inner
            .served
            .iter()
            .filter(|((g, ver, _), _)| g == group && ver == version)
            .map(|(_, c)| c.clone())
            .collect();
        v.sort_by_key(|c| c.res.plural);
        v
    }

    /// Every served custom resource.
    pub(crate) fn all(&self) -> Vec<Arc<CustomResource>> {
        let mut v: Vec<Arc<CustomResource>> = self.read().served.values().cloned().collect();
        v.sort_by_key(|c| (c.res.group, c.res.version, c.res.plural));
        v
    }

    /// A counter that changes whenever what is served changes.
    pub(crate) fn generation(&self) -> u64 {
        self.read().generation
    }

    /// The served definitions other than `name`.
    pub(crate) fn others(&self, name: &str) -> Vec<Arc<Definition>> {
        self.read()
            .defs
            .iter()
            .filter(|(n, _)| *n != name)
            .map(|(_, d)| d.clone())
            .collect()
    }

    /// Serves (or re-serves) a definition's versions. Its CEL rules must compile (the
    /// definition passed validation); a rule that does not is left out with a log line.
    pub(crate) fn put(&self, def: Definition) {
        let def = Arc::new(def);
        let storage_api_version = def
            .storage_version()
            .map(|s| group_version(&def.group, &s.name))
            .unwrap_or_default();
        let conversion = (def.conversion == "Webhook")
            .then(|| def.conversion_client_config.as_ref())
            .flatten()
            .map(|cc| Arc::new(convert::Webhook::parse(cc)));
        let mut versions = Vec::new();
        for (i, v) in def.versions.iter().enumerate().filter(|(_, v)| v.served) {
            let rules = match crate::cel::SchemaRules::compile(&v.schema) {
                Ok(r) => r,
                Err(errs) => {
                    tracing::warn!(crd = %def.name, version = %v.name, errors = ?errs, "CEL rules do not compile; serving without them");
                    crate::cel::SchemaRules::default()
                }
            };
            versions.push(Arc::new(CustomResource {
                res: resource_of(&def, v),
                def: def.clone(),
                version: i,
                api_version: group_version(&def.group, &v.name),
                storage_api_version: storage_api_version.clone(),
                rules: Arc::new(rules),
                patch_schema: h8s_machinery::Schema::custom(&patch_fields(&v.schema)),
                conversion: conversion.clone(),
            }));
        }
        let mut inner = self.write();
        inner.served.retain(|_, c| c.def.name != def.name);
        for c in versions {
            inner.served.insert(
                (
                    def.group.clone(),
                    c.res.version.to_string(),
                    def.names.plural.clone(),
                ),
                c,
            );
        }
        inner.defs.insert(def.name.clone(), def);
        inner.generation += 1;
    }

    /// Stops serving a definition.
    pub(crate) fn remove(&self, name: &str) {
        let mut inner = self.write();
        let before = inner.served.len() + inner.defs.len();
        inner.served.retain(|_, c| c.def.name != name);
        inner.defs.remove(name);
        if inner.served.len() + inner.defs.len() != before {
            inner.generation += 1;
        }
    }
}

/// Drops `metadata` for schema work and puts it back after.
fn without_metadata(o: &mut Value, f: impl FnOnce(&mut Value)) {
    let meta = o.as_object_mut().and_then(|m| m.remove("metadata"));
    f(o);
    if let (Some(meta), Some(m)) = (meta, o.as_object_mut()) {
        m.insert("metadata".into(), meta);
    }
}

impl Strategy for CustomResource {
    fn subresource(&self, _res: &Resource, name: &str) -> Option<Sub> {
        match name {
            "status" if self.v().status => Some(Sub::Status),
            "scale" if self.v().scale.is_some() => Some(Sub::Scale),
            _ => None,
        }
    }

    fn tracks_generation(&self, _res: &Resource) -> bool {
        true
    }

    fn patch_schema(&self, _res: &Resource) -> h8s_machinery::Schema {
        self.patch_schema
    }

    fn strategic_merge_patch(&self) -> bool {
        false
    }

    fn unknown_fields(&self, _res: &Resource, o: &Value) -> Vec<String> {
        let mut copy = o.clone();
        let mut out = Vec::new();
        without_metadata(&mut copy, |b| out = value::prune(self.schema(), b));
        out
    }

    fn default(&self, _res: &Resource, o: &mut Value) {
        without_metadata(o, |b| {
            value::prune(self.schema(), b);
            value::apply_defaults(self.schema(), b);
        });
    }

    fn prepare_for_create(&self, _res: &Resource, _user: &UserInfo, o: &mut Value) {
        if self.v().status {
            if let Some(m) = o.as_object_mut() {
                m.remove("status");
            }
        }
    }

    fn prepare_for_update(&self, res: &Resource, sub: Option<Sub>, old: &Value, new: &mut Value) {
        generic_prepare_for_update(res, sub, old, new);
    }

    fn validate_create(&self, _res: &Resource, o: &Value) -> Result<(), FieldErrors> {
        self.validate(o, None)
    }

    fn validate_update(
        &self,
        _res: &Resource,
        _sub: Option<Sub>,
        new: &Value,
        old: &Value,
    ) -> Result<(), FieldErrors> {
        self.validate(new, Some(old))
    }

    fn before_create<'a: 'b, 'b>(
        &'a self,
        _api: &'a std::sync::Arc<Api>,
        _o: &'b mut Value,
        _dry_run: bool,
    ) -> BoxFuture<'b, Result<Option<Guard<'a>>, ApiError>> {
        let terminating = self.def.terminating;
        Box::pin(async move {
            if terminating {
                return Err(ApiError::method_not_allowed(
                    "create not allowed while custom resource definition is terminating",
                ));
            }
            Ok(None)
        })
    }

    fn stored_form(&self, o: &Value) -> Option<Value> {
        if self.api_version == self.storage_api_version {
            return None;
        }
        let mut s = o.clone();
        s["apiVersion"] = json!(self.storage_api_version);
        Some(s)
    }

    fn served_form(&self, mut o: Value) -> Value {
        if o.get("apiVersion").and_then(Value::as_str) != Some(self.api_version.as_str()) {
            o["apiVersion"] = json!(self.api_version);
        }
        // Defaults also apply to what was stored before they were declared.
        without_metadata(&mut o, |b| value::apply_defaults(self.schema(), b));
        o
    }

    fn table(
        &self,
        _res: &Resource,
        objs: &[Value],
        include_object: &str,
        list_meta: Value,
    ) -> Value {
        table(
            self.v(),
            objs,
            include_object,
            list_meta,
            std::time::SystemTime::now(),
        )
    }
}

/// The Table of custom objects: the name, then `additionalPrinterColumns` (an `Age`
/// column when the version declares none), as kube-apiserver's CRD table convertor.
pub(crate) fn table(
    v: &Version,
    objs: &[Value],
    include_object: &str,
    list_meta: Value,
    now: std::time::SystemTime,
) -> Value {
    let now = now
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let default_cols = [types::Column {
        name: "Age".into(),
        ty: "date".into(),
        format: String::new(),
        description: "CreationTimestamp is a timestamp representing the server time when this object was created.".into(),
        priority: 0,
        json_path: ".metadata.creationTimestamp".into(),
    }];
    let cols: &[types::Column] = if v.columns.is_empty() {
        &default_cols
    } else {
        &v.columns
    };
    let mut defs = vec![json!({"name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names",
        "priority": 0})];
    for c in cols {
        defs.push(json!({"name": c.name, "type": c.ty, "format": c.format,
            "description": c.description, "priority": c.priority}));
    }
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| {
            let mut cells = vec![o.pointer("/metadata/name").cloned().unwrap_or(json!(""))];
            for c in cols {
                cells.push(cell(c, o, now));
            }
            let mut row = json!({"cells": cells});
            match include_object {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": if list_meta.is_object() { list_meta } else { json!({}) },
        "columnDefinitions": defs,
        "rows": rows,
    })
}

fn cell(c: &types::Column, o: &Value, now: i64) -> Value {
    let Some(v) = types::jsonpath::first(&c.json_path, o) else {
        return Value::Null;
    };
    match c.ty.as_str() {
        "date" => match v.as_str().and_then(h8s_types::table::parse_time) {
            Some(t) => json!(h8s_types::table::human_duration(now - t)),
            None => Value::Null,
        },
        "integer" => v.as_i64().map(|n| json!(n)).unwrap_or(Value::Null),
        "number" => v.as_f64().map(|n| json!(n)).unwrap_or(Value::Null),
        "boolean" => v.as_bool().map(|b| json!(b)).unwrap_or(Value::Null),
        _ => match v {
            Value::String(s) => json!(s),
            Value::Null => Value::Null,
            other => json!(other.to_string()),
        },
    }
}

#[cfg(test)]
mod tests;
