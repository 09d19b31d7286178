//! The OpenAPI documents kubectl reads, built once from the resource table
//! and [`crate::schema`]:
//!
//! - `/openapi/v3` ([`v3_index`]) and one document per group version
//!   ([`v3_document`]): paths whose operations carry
//!   `x-kubernetes-group-version-kind` and a `fieldValidation` parameter,
//!   PATCH bodies in the four patch content types, and the schemas with
//!   their GVK and patch extensions. `kubectl apply` (1.29+) then leaves
//!   validation to the server and `kubectl explain` works.
//! - `/openapi/v2` as JSON ([`v2_json`]) and in gnostic's protobuf form
//!   ([`v2_protobuf`]), which kubectl 1.27/1.28 need for apply and explain.

mod gnostic;
mod paths;

use crate::resources::{self, group_version};
use crate::schema::schemas;
use serde_json::{json, Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

/// The media type kubectl asks for in `Accept` to get `/openapi/v2` in
/// protobuf (Go's MIME parser rejects the `@`, so replies use
/// [`V2_PROTOBUF_CONTENT_TYPE`]).
pub const V2_PROTOBUF_ACCEPT: &str = "application/com.github.proto-openapi.spec.v2@v1.0+protobuf";

/// The Content-Type of a protobuf `/openapi/v2` reply, as kube-apiserver
/// sends it.
pub const V2_PROTOBUF_CONTENT_TYPE: &str =
    "application/com.github.proto-openapi.spec.v2.v1.0+protobuf";

/// The Kubernetes version the documents describe.
pub const KUBERNETES_VERSION: &str = "v1.33.0";

struct Built {
    index: Vec<u8>,
    docs: BTreeMap<String, (String, Vec<u8>)>,
}

struct BuiltV2 {
    json: Vec<u8>,
    pb: Vec<u8>,
}

// Separate, so kubectl ≥ 1.29 (v3 only) never pays for v2.
static BUILT: LazyLock<Built> = LazyLock::new(build);
static BUILT_V2: LazyLock<BuiltV2> = LazyLock::new(build_v2);

/// The `/openapi/v3` index: `{"paths":{"api/v1":{"serverRelativeURL":"/openapi/v3/api/v1?hash=…"},…}}`.
pub fn v3_index() -> &'static [u8] {
    &BUILT.index
}

/// The document of one group version, by its index key (`api/v1`,
/// `apis/apps/v1`; a leading `/openapi/v3/` is accepted), with its hash
/// (for the `hash=` parameter and the ETag).
pub fn v3_document(path: &str) -> Option<(&'static str, &'static [u8])> {
    let key = path
        .trim_start_matches('/')
        .trim_start_matches("openapi/v3/")
        .trim_end_matches('/');
    BUILT.docs.get(key).map(|(h, d)| (h.as_str(), d.as_slice()))
}

/// Every v3 document key (`api/v1`, `apis/apps/v1`, …).
pub fn v3_paths() -> impl Iterator<Item = &'static str> {
    BUILT.docs.keys().map(String::as_str)
}

/// `/openapi/v2` as JSON (Swagger 2.0).
pub fn v2_json() -> &'static [u8] {
    &BUILT_V2.json
}

/// `/openapi/v2` as gnostic's `openapi_v2.Document` in protobuf.
pub fn v2_protobuf() -> &'static [u8] {
    &BUILT_V2.pb
}

/// A content fingerprint for the `hash=` parameter and ETag: clients only
/// compare it. Two FNV-1a passes with different seeds (128 bits) are
/// cheap enough to run over megabytes in unoptimised builds, where SHA-512
/// took most of the build time.
fn hash(bytes: &[u8]) -> String {
    let fnv = |seed: u64| {
        bytes.iter().fold(seed, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    };
    format!(
        "{:016X}{:016X}",
        fnv(0xcbf2_9ce4_8422_2325),
        fnv(0x6c62_272e_07bb_0142)
    )
}

fn build() -> Built {
    let mut docs = BTreeMap::new();
    let mut index = Map::new();
    for g in resources::groups() {
        for v in g.versions {
            let entries = paths::for_group_version(g.name, v);
            let doc = v3_doc(&entries, g.name, v);
            let bytes = serde_json::to_vec(&doc).unwrap_or_default();
            let key = if g.name.is_empty() {
                format!("api/{v}")
            } else {
                format!("apis/{}/{v}", g.name)
            };
            let h = hash(&bytes);
            index.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={h}")}),
            );
            docs.insert(key, (h, bytes));
        }
    }
    let index = serde_json::to_vec(&json!({"paths": index})).unwrap_or_default();
    Built { index, docs }
}

fn build_v2() -> BuiltV2 {
    let mut all_paths: Vec<paths::PathEntry> = Vec::new();
    for g in resources::groups() {
        for v in g.versions {
            all_paths.extend(paths::for_group_version(g.name, v));
        }
    }
    let v2 = v2_doc(&all_paths);
    BuiltV2 {
        json: serde_json::to_vec(&v2).unwrap_or_default(),
        pb: gnostic::encode_document(&v2),
    }
}

/// A kind outside the resource table (a custom resource version) to publish.
pub struct CustomKind<'a> {
    /// The served resource.
    pub res: &'a crate::resources::Resource,
    /// The definition name (`com.example.stable.v1.CronTab`).
    pub name: String,
    /// Its schema in OpenAPI v3 form (references into `#/components/schemas/`).
    pub schema: Value,
}

fn custom_paths(kinds: &[CustomKind<'_>]) -> (Vec<paths::PathEntry>, Map<String, Value>) {
    let mut defs = Vec::new();
    let mut schemas_out = Map::new();
    for k in kinds {
        let r = k.res;
        let gvk = |kind: &str| (r.group.to_string(), r.version.to_string(), kind.to_string());
        defs.push((gvk(r.kind), k.name.clone()));
        defs.push((gvk(r.list_kind), format!("{}List", k.name)));
        schemas_out.insert(k.name.clone(), k.schema.clone());
        schemas_out.insert(
            format!("{}List", k.name),
            list_schema_v3(&k.name, r.group, r.version, r.list_kind),
        );
    }
    let res: Vec<&crate::resources::Resource> = kinds.iter().map(|k| k.res).collect();
    (paths::for_custom(&res, defs), schemas_out)
}

fn list_schema_v3(item: &str, group: &str, version: &str, list_kind: &str) -> Value {
    json!({
        "description": format!("{list_kind} is a list of {}", item.rsplit('.').next().unwrap_or(item)),
        "type": "object",
        "required": ["items"],
        "properties": {
            "apiVersion": {"type": "string", "description": "APIVersion defines the versioned schema of this representation of an object."},
            "items": {"type": "array", "items": {"$ref": format!("#/components/schemas/{item}")},
                      "description": "List of items. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md"},
            "kind": {"type": "string", "description": "Kind is a string value representing the REST resource this object represents."},
            "metadata": {"allOf": [{"$ref": "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta"}],
                         "default": {}, "description": "ListMeta describes metadata that synthetic resources must have."},
        },
        "x-kubernetes-group-version-kind": [{"group": group, "version": version, "kind": list_kind}],
    })
}

const SMP: &str = "application/strategic-merge-patch+json";

/// Custom resources take no strategic merge patch: their PATCH operations do not offer
/// it (kubectl then sends merge patches), in v3 `requestBody.content` and v2 `consumes`.
fn drop_smp(paths: &mut Value, prefixes: &[String]) {
    let Some(p) = paths.as_object_mut() else {
        return;
    };
    for (path, item) in p.iter_mut() {
        if !prefixes.iter().any(|x| path.starts_with(x.as_str())) {
            continue;
        }
        if let Some(Value::Object(c)) = item.pointer_mut("/patch/requestBody/content") {
            c.remove(SMP);
        }
        if let Some(Value::Array(c)) = item.pointer_mut("/patch/consumes") {
            c.retain(|x| x != SMP);
        }
    }
}

fn custom_prefixes(kinds: &[CustomKind<'_>]) -> Vec<String> {
    kinds
        .iter()
        .map(|k| format!("/apis/{}/{}/", k.res.group, k.res.version))
        .collect()
}

/// The v3 document of a group version of custom kinds (all of `kinds` share it).
pub fn custom_v3_document(group: &str, version: &str, kinds: &[CustomKind<'_>]) -> Value {
    let (entries, custom) = custom_paths(kinds);
    let mut doc = v3_doc(&entries, group, version);
    if let Some(p) = doc.get_mut("paths") {
        drop_smp(p, &custom_prefixes(kinds));
    }
    let mut refs = Vec::new();
    for v in custom.values() {
        collect_refs(v, &mut refs);
    }
    let defs = schemas().definitions();
    if let Some(Value::Object(c)) = doc.pointer_mut("/components/schemas") {
        for n in closure(refs) {
            if let Some(d) = defs.get(&n) {
                c.insert(n, d.clone());
            }
        }
        for (k, v) in custom {
            c.insert(k, v);
        }
    }
    doc
}

/// The v3 index with custom group versions added (`key` → hash).
pub fn v3_index_with(extra: &[(String, String)]) -> Vec<u8> {
    let mut idx: Value = serde_json::from_slice(&BUILT.index).unwrap_or(json!({"paths": {}}));
    if let Some(Value::Object(p)) = idx.get_mut("paths") {
        for (key, h) in extra {
            p.insert(
                key.clone(),
                json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={h}")}),
            );
        }
    }
    serde_json::to_vec(&idx).unwrap_or_default()
}

/// A Swagger 2.0 document as `/openapi/v2` serves it: (JSON, gnostic protobuf).
pub fn v2_encode(doc: &Value) -> (Vec<u8>, Vec<u8>) {
    (
        serde_json::to_vec(doc).unwrap_or_default(),
        gnostic::encode_document(doc),
    )
}

/// The content hash used in v3 index links.
pub fn content_hash(bytes: &[u8]) -> String {
    hash(bytes)
}

/// `/openapi/v2` (JSON and protobuf) with custom kinds added.
pub fn v2_with_custom(kinds: &[CustomKind<'_>]) -> (Vec<u8>, Vec<u8>) {
    let mut all_paths: Vec<paths::PathEntry> = Vec::new();
    for g in resources::groups() {
        for v in g.versions {
            all_paths.extend(paths::for_group_version(g.name, v));
        }
    }
    let (entries, custom) = custom_paths(kinds);
    all_paths.extend(entries);
    let mut v2 = v2_doc(&all_paths);
    if let Some(p) = v2.get_mut("paths") {
        drop_smp(p, &custom_prefixes(kinds));
    }
    if let Some(Value::Object(d)) = v2.get_mut("definitions") {
        for (k, v) in custom {
            let mut v = to_v2_schema(&v);
            // kubectl ≤ 1.28 picks strategic merge patch for any kind it finds in the v2
            // document; without the kind extension it sends merge patches to custom
            // resources, as it must.
            if let Some(m) = v.as_object_mut() {
                m.remove("x-kubernetes-group-version-kind");
            }
            d.insert(k, v);
        }
    }
    let json = serde_json::to_vec(&v2).unwrap_or_default();
    let pb = gnostic::encode_document(&v2);
    (json, pb)
}

/// The definitions `roots` refer to, transitively.
fn closure(roots: impl IntoIterator<Item = String>) -> BTreeSet<String> {
    let defs = schemas().definitions();
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.into_iter().collect();
    while let Some(n) = todo.pop() {
        if !seen.insert(n.clone()) {
            continue;
        }
        if let Some(d) = defs.get(&n) {
            collect_refs(d, &mut todo);
        }
    }
    seen
}

fn collect_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                if k == "$ref" {
                    if let Some(r) = x.as_str().and_then(|r| r.rsplit('/').next()) {
                        out.push(r.to_string());
                    }
                } else {
                    collect_refs(x, out);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| collect_refs(x, out)),
        _ => {}
    }
}

fn v3_doc(entries: &[paths::PathEntry], group: &str, version: &str) -> Value {
    let mut p = Map::new();
    let mut used: Vec<String> = Vec::new();
    for e in entries {
        p.insert(e.path.clone(), e.to_v3(&mut used));
    }
    let defs = schemas().definitions();
    let components: Map<String, Value> = closure(used)
        .into_iter()
        .filter_map(|n| defs.get(&n).map(|d| (n, d.clone())))
        .collect();
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION,
                 "description": format!("h8s serves {}", group_version(group, version))},
        "paths": p,
        "components": {
            "schemas": components,
            "securitySchemes": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        },
        "security": [{"BearerToken": []}],
    })
}

/// Rewrites a v3 schema for Swagger 2.0: references point into
/// `#/definitions/`, and a described reference (`allOf` of one `$ref`) is a
/// plain `$ref` since v2 tools ignore siblings of `$ref` anyway.
fn to_v2_schema(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            if let Some(Value::Array(all)) = m.get("allOf") {
                if let [one] = all.as_slice() {
                    if let Some(r) = one.get("$ref").and_then(Value::as_str) {
                        let mut out = Map::new();
                        out.insert("$ref".into(), json!(v2_ref(r)));
                        if let Some(d) = m.get("description") {
                            out.insert("description".into(), d.clone());
                        }
                        for (k, x) in m {
                            if k.starts_with("x-kubernetes-") {
                                out.insert(k.clone(), x.clone());
                            }
                        }
                        return Value::Object(out);
                    }
                }
            }
            let mut out = Map::new();
            for (k, x) in m {
                match k.as_str() {
                    "$ref" => {
                        out.insert(k.clone(), json!(v2_ref(x.as_str().unwrap_or_default())));
                    }
                    // Defaults and nullability are v3 only.
                    "default" | "nullable" => {}
                    _ => {
                        out.insert(k.clone(), to_v2_schema(x));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(to_v2_schema).collect()),
        other => other.clone(),
    }
}

fn v2_ref(r: &str) -> String {
    format!("#/definitions/{}", r.rsplit('/').next().unwrap_or(r))
}

fn v2_doc(entries: &[paths::PathEntry]) -> Value {
    let mut p = Map::new();
    let mut used = Vec::new();
    for e in entries {
        p.insert(e.path.clone(), e.to_v2(&mut used));
    }
    // Every definition, as kube-apiserver's v2 document has them all.
    let definitions: Map<String, Value> = schemas()
        .definitions()
        .iter()
        .map(|(k, v)| (k.clone(), to_v2_schema(v)))
        .collect();
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
        "paths": p,
        "definitions": definitions,
        "securityDefinitions": {"BearerToken": {"type": "apiKey", "description": "Bearer Token authentication", "name": "authorization", "in": "header"}},
        "security": [{"BearerToken": []}],
    })
}

#[cfg(test)]
mod tests;
