//! Server-side apply and managed fields, with structured-merge-diff's semantics as
//! kube-apiserver runs them: field sets per manager in `metadata.managedFields`, conflicts with
//! other managers' fields, `force` taking ownership, and fields a manager stops applying
//! removed unless someone else owns them.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{Map, Value};

use crate::error::{Conflict, Conflicts, Error, Result};
use crate::fieldset::{path_string, FieldSet, Path, PathElement};
use crate::patch_meta::{ListType, Schema};

/// The annotation `kubectl apply` (client-side) keeps.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Who is writing, and when: one `metadata.managedFields` entry is kept per
/// (name, operation, subresource).
#[derive(Debug, Clone, Copy)]
pub struct Manager<'a> {
    /// The `fieldManager` query parameter (or the user agent's default).
    pub name: &'a str,
    /// The object's `apiVersion` in the request (`apps/v1`).
    pub api_version: &'a str,
    /// `""` for the main resource, `"status"` / `"scale"` for subresources.
    pub subresource: &'a str,
    /// The entry's time, RFC 3339 (`2024-05-01T12:00:00Z`); the caller's clock keeps this crate
    /// pure.
    pub time: &'a str,
}

/// One decoded `metadata.managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: Option<String>,
    subresource: String,
    set: FieldSet,
}

impl Entry {
    fn same_identity(&self, name: &str, operation: &str, subresource: &str) -> bool {
        self.manager == name && self.operation == operation && self.subresource == subresource
    }

    fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(self.manager.clone()));
        m.insert("operation".into(), Value::String(self.operation.clone()));
        m.insert("apiVersion".into(), Value::String(self.api_version.clone()));
        if let Some(t) = &self.time {
            m.insert("time".into(), Value::String(t.clone()));
        }
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), self.set.to_fields_v1());
        if !self.subresource.is_empty() {
            m.insert(
                "subresource".into(),
                Value::String(self.subresource.clone()),
            );
        }
        Value::Object(m)
    }
}

fn decode_entries(v: Option<&Value>) -> Result<Vec<Entry>> {
    let Some(v) = v else {
        return Ok(Vec::new());
    };
    let Value::Array(items) = v else {
        if v.is_null() {
            return Ok(Vec::new());
        }
        return Err(Error::Invalid(
            "metadata.managedFields must be a list".into(),
        ));
    };
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Value::Object(m) = item else {
            return Err(Error::Invalid(format!(
                "metadata.managedFields[{i}] must be an object"
            )));
        };
        let s = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let fields_type = s("fieldsType");
        if !fields_type.is_empty() && fields_type != "FieldsV1" {
            return Err(Error::Invalid(format!(
                "metadata.managedFields[{i}].fieldsType: Unsupported value: {fields_type:?}"
            )));
        }
        let set = match m.get("fieldsV1") {
            None | Some(Value::Null) => FieldSet::new(),
            Some(f) => FieldSet::from_fields_v1(f)?,
        };
        out.push(Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            time: m.get("time").and_then(Value::as_str).map(str::to_string),
            subresource: s("subresource"),
            set,
        });
    }
    Ok(out)
}

/// Writes the entries, sorted as kube-apiserver sorts them (Apply before Update, then by
/// time, manager, apiVersion, subresource), into `metadata.managedFields`.
fn encode_entries(obj: &mut Value, mut entries: Vec<Entry>) {
    entries.retain(|e| !e.set.is_empty());
    entries.sort_by(|a, b| {
        a.operation
            .cmp(&b.operation)
            .then_with(|| a.time.cmp(&b.time))
            .then_with(|| a.manager.cmp(&b.manager))
            .then_with(|| a.api_version.cmp(&b.api_version))
            .then_with(|| a.subresource.cmp(&b.subresource))
    });
    let Some(meta) = metadata_mut(obj) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert(
            "managedFields".into(),
            Value::Array(entries.iter().map(Entry::to_json).collect()),
        );
    }
}

fn metadata_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let o = obj.as_object_mut()?;
    let m = o
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !m.is_object() {
        *m = Value::Object(Map::new());
    }
    m.as_object_mut()
}

/// Fields kube-apiserver never records as owned.
fn strip_meta(set: &mut FieldSet) {
    let f = |s: &str| PathElement::Field(s.to_string());
    for p in [
        vec![f("apiVersion")],
        vec![f("kind")],
        vec![f("metadata")],
        vec![f("metadata"), f("name")],
        vec![f("metadata"), f("namespace")],
        vec![f("metadata"), f("creationTimestamp")],
        vec![f("metadata"), f("selfLink")],
        vec![f("metadata"), f("uid")],
        vec![f("metadata"), f("generation")],
        vec![f("metadata"), f("managedFields")],
        vec![f("metadata"), f("resourceVersion")],
        vec![f("metadata"), f("deletionTimestamp")],
        vec![f("metadata"), f("deletionGracePeriodSeconds")],
    ] {
        set.remove(&p);
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// How a JSON value at a schema path behaves.
enum Shape {
    /// Owned and replaced as a whole.
    Leaf,
    /// An object merged key by key.
    Object,
    /// A set of scalars.
    Set,
    /// An associative list; `atomic_items` when the elements are owned as wholes.
    Keyed(&'static [&'static str], bool),
}

fn shape(schema: Schema, spath: &str, v: &Value) -> Shape {
    let meta = schema.field(spath);
    match v {
        Value::Object(_) => {
            if meta.is_some_and(|m| m.atomic && m.list_type.is_none()) {
                Shape::Leaf
            } else {
                Shape::Object
            }
        }
        Value::Array(_) => match meta.and_then(|m| m.list_type.map(|lt| (lt, m.atomic))) {
            Some((ListType::Set, _)) => Shape::Set,
            Some((ListType::Map(keys), atomic)) => Shape::Keyed(keys, atomic),
            _ => Shape::Leaf,
        },
        _ => Shape::Leaf,
    }
}

/// The path element of an associative list item: its key fields (`protocol` defaults to
/// `TCP`, as the OpenAPI schema of ports says).
fn item_key(item: &Value, keys: &[&str], spath: &str) -> Result<PathElement> {
    let Value::Object(m) = item else {
        return Err(Error::Invalid(format!(
            ".{spath}: associative list elements must be objects"
        )));
    };
    let mut kv = Vec::with_capacity(keys.len());
    for k in keys {
        let v = match m.get(*k) {
            Some(v) if !v.is_null() => v.to_string(),
            _ if *k == "protocol" => "\"TCP\"".to_string(),
            _ => {
                return Err(Error::Invalid(format!(
                    ".{spath}: associative list with keys has an element that omits key field {k:?} (and doesn't have default value)"
                )))
            }
        };
        kv.push((k.to_string(), v));
    }
    kv.sort();
    Ok(PathElement::Key(kv))
}

fn set_item(item: &Value, spath: &str) -> Result<PathElement> {
    if item.is_object() || item.is_array() {
        return Err(Error::Invalid(format!(
            ".{spath}: set elements must be scalars"
        )));
    }
    Ok(PathElement::Value(item.to_string()))
}

/// Indexes a list's items by path element, refusing duplicates unless `allow_dups` (live
/// objects may carry duplicates written before apply existed).
fn index_items<'a>(
    items: &'a [Value],
    spath: &str,
    shape: &Shape,
    allow_dups: bool,
) -> Result<Vec<(PathElement, &'a Value)>> {
    let mut out: Vec<(PathElement, &Value)> = Vec::with_capacity(items.len());
    let mut seen: HashSet<PathElement> = HashSet::with_capacity(items.len());
    for it in items {
        let pe = match shape {
            Shape::Set => set_item(it, spath)?,
            Shape::Keyed(keys, _) => item_key(it, keys, spath)?,
            _ => continue,
        };
        if !seen.insert(pe.clone()) {
            if allow_dups {
                continue;
            }
            return Err(Error::Invalid(format!(
                ".{spath}: duplicate entries for key {pe}"
            )));
        }
        out.push((pe, it));
    }
    Ok(out)
}

/// The set of fields an object (or applied configuration) sets.
pub fn field_set(schema: Schema, obj: &Value) -> Result<FieldSet> {
    let mut out = FieldSet::new();
    collect(schema, obj, "", &mut Vec::new(), &mut out, false)?;
    strip_meta(&mut out);
    Ok(out)
}

fn collect(
    schema: Schema,
    v: &Value,
    spath: &str,
    prefix: &mut Path,
    out: &mut FieldSet,
    allow_dups: bool,
) -> Result<()> {
    let sh = shape(schema, spath, v);
    match (&sh, v) {
        (Shape::Object, Value::Object(m)) => {
            if m.is_empty() {
                out.insert(prefix);
            }
            for (k, cv) in m {
                prefix.push(PathElement::Field(k.clone()));
                collect(schema, cv, &join(spath, k), prefix, out, allow_dups)?;
                prefix.pop();
            }
        }
        (Shape::Set | Shape::Keyed(..), Value::Array(items)) => {
            let item_path = format!("{spath}[]");
            for (pe, it) in index_items(items, spath, &sh, allow_dups)? {
                prefix.push(pe);
                out.insert(prefix);
                if let Shape::Keyed(_, false) = sh {
                    if let Value::Object(m) = it {
                        for (k, cv) in m {
                            prefix.push(PathElement::Field(k.clone()));
                            collect(schema, cv, &join(&item_path, k), prefix, out, allow_dups)?;
                            prefix.pop();
                        }
                    }
                }
                prefix.pop();
            }
        }
        _ => out.insert(prefix),
    }
    Ok(())
}

/// Merges an applied configuration into the live object (configuration wins; objects and
/// associative lists/sets merge; atomic values are replaced; `null` removes).
fn merge(schema: Schema, lhs: Option<&Value>, rhs: &Value, spath: &str) -> Result<Value> {
    let Some(lhs) = lhs else {
        return Ok(strip_nulls(rhs.clone()));
    };
    let sh = shape(schema, spath, rhs);
    match (&sh, lhs, rhs) {
        (Shape::Object, Value::Object(l), Value::Object(r)) => {
            let mut out = l.clone();
            for (k, rv) in r {
                if rv.is_null() {
                    out.remove(k);
                    continue;
                }
                let merged = merge(schema, l.get(k), rv, &join(spath, k))?;
                out.insert(k.clone(), merged);
            }
            Ok(Value::Object(out))
        }
        (Shape::Set | Shape::Keyed(..), Value::Array(l), Value::Array(r)) => {
            let li = index_items(l, spath, &sh, true)?;
            let ri = index_items(r, spath, &sh, false)?;
            let item_path = format!("{spath}[]");
            let atomic_items = matches!(sh, Shape::Set | Shape::Keyed(_, true));
            let l_by: HashMap<&PathElement, &Value> = li.iter().map(|(p, v)| (p, *v)).collect();
            let r_pos: HashMap<&PathElement, usize> =
                ri.iter().enumerate().map(|(i, (p, _))| (p, i)).collect();
            let merge_item = |pe: &PathElement, rv: &Value| -> Result<Value> {
                let lv = l_by.get(pe).copied();
                if atomic_items {
                    Ok(strip_nulls(rv.clone()))
                } else {
                    merge(schema, lv, rv, &item_path)
                }
            };
            let mut out = Vec::with_capacity(l.len() + r.len());
            let mut emitted = vec![false; ri.len()];
            let mut next_r = 0;
            for (lpe, lv) in &li {
                match r_pos.get(lpe).copied() {
                    None => out.push((*lv).clone()),
                    Some(pos) if !emitted[pos] => {
                        // Emit the configuration's items up to this shared one, in its order.
                        while next_r <= pos {
                            if !emitted[next_r] {
                                emitted[next_r] = true;
                                out.push(merge_item(&ri[next_r].0, ri[next_r].1)?);
                            }
                            next_r += 1;
                        }
                    }
                    Some(_) => {}
                }
            }
            for (i, (pe, rv)) in ri.iter().enumerate() {
                if !emitted[i] {
                    out.push(merge_item(pe, rv)?);
                }
            }
            Ok(Value::Array(out))
        }
        _ => Ok(strip_nulls(rhs.clone())),
    }
}

fn strip_nulls(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, strip_nulls(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(strip_nulls).collect()),
        other => other,
    }
}

/// What changed between two objects, as field sets.
#[derive(Default)]
struct Comparison {
    added: FieldSet,
    modified: FieldSet,
    removed: FieldSet,
}

fn compare(
    schema: Schema,
    l: Option<&Value>,
    r: Option<&Value>,
    spath: &str,
    prefix: &mut Path,
    c: &mut Comparison,
) {
    let probe = r.or(l);
    let Some(probe) = probe else {
        return;
    };
    let sh = shape(schema, spath, probe);
    let same_kind = match (l, r) {
        (Some(a), Some(b)) => std::mem::discriminant(a) == std::mem::discriminant(b),
        _ => true,
    };
    match (&sh, same_kind) {
        (Shape::Object, true) => {
            let empty = Map::new();
            let lm = l.and_then(Value::as_object).unwrap_or(&empty);
            let rm = r.and_then(Value::as_object).unwrap_or(&empty);
            let mut keys: Vec<&String> = lm.keys().chain(rm.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                prefix.push(PathElement::Field(k.clone()));
                compare(schema, lm.get(k), rm.get(k), &join(spath, k), prefix, c);
                prefix.pop();
            }
            node_change(l, r, prefix, c);
        }
        (Shape::Set | Shape::Keyed(..), true) => {
            let empty = Vec::new();
            let la = l.and_then(Value::as_array).unwrap_or(&empty);
            let ra = r.and_then(Value::as_array).unwrap_or(&empty);
            // Comparing never fails: unusable items count as an atomic change of the list.
            let (Ok(li), Ok(ri)) = (
                index_items(la, spath, &sh, true),
                index_items(ra, spath, &sh, true),
            ) else {
                leaf_change(l, r, prefix, c);
                return;
            };
            let item_path = format!("{spath}[]");
            let atomic_items = matches!(sh, Shape::Set | Shape::Keyed(_, true));
            let mut pes: Vec<&PathElement> = li
                .iter()
                .map(|(p, _)| p)
                .chain(ri.iter().map(|(p, _)| p))
                .collect();
            pes.sort();
            pes.dedup();
            let l_by: HashMap<&PathElement, &Value> = li.iter().map(|(p, v)| (p, *v)).collect();
            let r_by: HashMap<&PathElement, &Value> = ri.iter().map(|(p, v)| (p, *v)).collect();
            for pe in pes {
                let lv = l_by.get(pe).copied();
                let rv = r_by.get(pe).copied();
                prefix.push(pe.clone());
                if atomic_items {
                    leaf_change(lv, rv, prefix, c);
                } else {
                    let empty = Map::new();
                    let lm = lv.and_then(Value::as_object).unwrap_or(&empty);
                    let rm = rv.and_then(Value::as_object).unwrap_or(&empty);
                    let mut keys: Vec<&String> = lm.keys().chain(rm.keys()).collect();
                    keys.sort();
                    keys.dedup();
                    for k in keys {
                        prefix.push(PathElement::Field(k.clone()));
                        compare(
                            schema,
                            lm.get(k),
                            rm.get(k),
                            &join(&item_path, k),
                            prefix,
                            c,
                        );
                        prefix.pop();
                    }
                    node_change(lv, rv, prefix, c);
                }
                prefix.pop();
            }
            node_change(l, r, prefix, c);
        }
        _ => leaf_change(l, r, prefix, c),
    }
}

fn node_change(l: Option<&Value>, r: Option<&Value>, prefix: &Path, c: &mut Comparison) {
    match (l, r) {
        (None, Some(_)) => c.added.insert(prefix),
        (Some(_), None) => c.removed.insert(prefix),
        _ => {}
    }
}

fn leaf_change(l: Option<&Value>, r: Option<&Value>, prefix: &Path, c: &mut Comparison) {
    match (l, r) {
        (None, Some(_)) => c.added.insert(prefix),
        (Some(_), None) => c.removed.insert(prefix),
        (Some(a), Some(b)) if a != b => c.modified.insert(prefix),
        _ => {}
    }
}

/// Removes from `obj` the members of `last` that nobody in `keep` owns (nor owns anything
/// below). Containers emptied by the removal go too.
fn prune(schema: Schema, obj: &mut Value, last: &FieldSet, keep: Option<&FieldSet>, spath: &str) {
    let empty = FieldSet::new();
    let keep = keep.unwrap_or(&empty);
    let sh = shape(schema, spath, obj);
    match (&sh, obj) {
        (Shape::Object, Value::Object(m)) => {
            for pe in last.members() {
                let PathElement::Field(k) = pe else { continue };
                let path = [pe.clone()];
                if !keep.has(&path) && !keep.has_descendants(&path) {
                    m.remove(k);
                }
            }
            let keys: Vec<String> = m.keys().cloned().collect();
            for k in keys {
                let pe = PathElement::Field(k.clone());
                let Some(sub) = last.child(&pe) else { continue };
                let Some(child) = m.get_mut(&k) else { continue };
                let was_empty = is_empty_container(child);
                prune(schema, child, sub, keep.child(&pe), &join(spath, &k));
                if !was_empty && is_empty_container(child) && !keep.has(std::slice::from_ref(&pe)) {
                    m.remove(&k);
                }
            }
        }
        (Shape::Set | Shape::Keyed(..), Value::Array(items)) => {
            let item_path = format!("{spath}[]");
            let mut out = Vec::with_capacity(items.len());
            for mut it in std::mem::take(items) {
                let pe = match &sh {
                    Shape::Set => set_item(&it, spath).ok(),
                    Shape::Keyed(keys, _) => item_key(&it, keys, spath).ok(),
                    _ => None,
                };
                let Some(pe) = pe else {
                    out.push(it);
                    continue;
                };
                let path = [pe.clone()];
                if last.has(&path) && !keep.has(&path) && !keep.has_descendants(&path) {
                    continue;
                }
                if let (Some(sub), Value::Object(m)) = (last.child(&pe), &mut it) {
                    let mut as_obj = Value::Object(std::mem::take(m));
                    prune(schema, &mut as_obj, sub, keep.child(&pe), &item_path);
                    it = as_obj;
                }
                out.push(it);
            }
            *items = out;
        }
        _ => {}
    }
}

fn is_empty_container(v: &Value) -> bool {
    match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The managers of `live` (none when there is no live object). An object written before
/// managed fields existed gets a `before-first-apply` Update entry owning everything, as
/// kube-apiserver does on the first apply.
fn live_entries(schema: Schema, live: Option<&Value>, seed: bool) -> Result<Vec<Entry>> {
    let Some(live) = live else {
        return Ok(Vec::new());
    };
    let entries = decode_entries(live.pointer("/metadata/managedFields")).unwrap_or_default();
    if entries.is_empty() && seed {
        let mut set = FieldSet::new();
        collect(schema, live, "", &mut Vec::new(), &mut set, true)?;
        strip_meta(&mut set);
        return Ok(vec![Entry {
            manager: "before-first-apply".into(),
            operation: "Update".into(),
            api_version: live
                .get("apiVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .into(),
            time: None,
            subresource: String::new(),
            set,
        }]);
    }
    Ok(entries)
}

/// Takes ownership away from other managers for changed fields (conflicts unless `force`),
/// and for removed fields.
fn settle_others(
    entries: &mut [Entry],
    me: (&str, &str, &str),
    cmp: &Comparison,
    force: bool,
) -> Result<()> {
    let changed = cmp.modified.union(&cmp.added);
    let mut conflicts = Vec::new();
    for e in entries.iter_mut() {
        if e.same_identity(me.0, me.1, me.2) {
            continue;
        }
        let clash = e.set.intersection(&changed);
        if !clash.is_empty() {
            if force {
                e.set = e.set.difference(&clash);
            } else {
                for p in clash.paths() {
                    conflicts.push(Conflict {
                        manager: e.manager.clone(),
                        update_api_version: (e.operation == "Update")
                            .then(|| e.api_version.clone()),
                        subresource: (!e.subresource.is_empty()).then(|| e.subresource.clone()),
                        field: path_string(&p),
                    });
                }
            }
        }
        e.set = e.set.difference(&cmp.removed);
    }
    if conflicts.is_empty() {
        Ok(())
    } else {
        Err(Error::Conflict(Conflicts(conflicts)))
    }
}

/// Server-side apply (`PATCH` with `application/apply-patch+yaml`, the body already parsed to
/// JSON): merges `config` into `live` (or creates from it when `live` is `None`) on behalf of
/// `manager`, and returns the new object with `metadata.managedFields` updated.
///
/// - Fields of `config` that other managers own with a different value are conflicts:
///   [`Error::Conflict`] (409) unless `force`, which takes them over.
/// - Fields this manager applied last time but no longer applies are removed, unless another
///   manager owns them.
/// - `config` must not carry `metadata.managedFields` ([`Error::BadPatch`], 400).
/// - When `manager.name` is `kubectl` and the live object has kubectl's client-side
///   last-applied annotation, conflicts on fields that annotation shows kubectl set are
///   allowed (kubectl's client-side → server-side upgrade), and the annotation is rewritten to
///   the applied configuration, as kube-apiserver does.
///
/// The caller keeps server-owned fields (name, uid, resourceVersion, status on the main
/// resource) as it does for any update, and strips fields it ignores (e.g. `status`) from
/// `config` first.
pub fn apply(
    schema: Schema,
    live: Option<&Value>,
    config: &Value,
    manager: &Manager<'_>,
    force: bool,
) -> Result<Value> {
    let Value::Object(cfg) = config else {
        return Err(Error::BadPatch(
            "an applied configuration must be an object".into(),
        ));
    };
    if cfg
        .get("metadata")
        .and_then(|m| m.get("managedFields"))
        .is_some_and(|m| !m.is_null())
    {
        return Err(Error::BadPatch("metadata.managedFields must be nil".into()));
    }
    let result = apply_once(schema, live, config, manager, force);
    let result = match result {
        Err(Error::Conflict(conflicts)) if manager.name == "kubectl" && !force => {
            match allowed_from_last_applied(schema, live) {
                Some(allowed)
                    if conflicts
                        .0
                        .iter()
                        .all(|c| allowed.iter().any(|p| path_string(p) == c.field)) =>
                {
                    apply_once(schema, live, config, manager, true)
                }
                _ => Err(Error::Conflict(conflicts)),
            }
        }
        other => other,
    }?;
    let mut result = result;
    if manager.name == "kubectl" && has_last_applied(live) {
        let mut last = config.clone();
        if let Some(a) = last
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.remove(LAST_APPLIED_ANNOTATION);
        }
        if let Some(a) = result
            .pointer_mut("/metadata/annotations")
            .and_then(Value::as_object_mut)
        {
            a.insert(
                LAST_APPLIED_ANNOTATION.into(),
                Value::String(last.to_string()),
            );
        }
    }
    Ok(result)
}

fn has_last_applied(obj: Option<&Value>) -> bool {
    obj.and_then(|o| o.pointer("/metadata/annotations"))
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .is_some()
}

/// Fields the client-side last-applied annotation shows kubectl set, and that still hold the
/// same values in the live object.
fn allowed_from_last_applied(schema: Schema, live: Option<&Value>) -> Option<Vec<Path>> {
    let live = live?;
    let raw = live
        .pointer("/metadata/annotations")?
        .get(LAST_APPLIED_ANNOTATION)?
        .as_str()?;
    let last: Value = serde_json::from_str(raw).ok()?;
    let set = field_set(schema, &last).ok()?;
    let mut c = Comparison::default();
    compare(schema, Some(&last), Some(live), "", &mut Vec::new(), &mut c);
    let allowed = set
        .difference(&c.modified)
        .difference(&c.added)
        .difference(&c.removed);
    Some(allowed.paths())
}

fn apply_once(
    schema: Schema,
    live: Option<&Value>,
    config: &Value,
    manager: &Manager<'_>,
    force: bool,
) -> Result<Value> {
    let mut entries = live_entries(schema, live, true)?;
    let applied = field_set(schema, config)?;
    let me = (manager.name, "Apply", manager.subresource);
    let last = entries
        .iter()
        .find(|e| e.same_identity(me.0, me.1, me.2))
        .map(|e| e.set.clone());

    let base = live.cloned().unwrap_or_else(|| Value::Object(Map::new()));
    let mut merged = merge(schema, Some(&base), config, "")?;
    if let Some(last) = &last {
        let mut keep = applied.clone();
        for e in &entries {
            if !e.same_identity(me.0, me.1, me.2) {
                keep = keep.union(&e.set);
            }
        }
        let to_drop = last.difference(&applied);
        prune(schema, &mut merged, &to_drop, Some(&keep), "");
    }

    let mut cmp = Comparison::default();
    compare(schema, live, Some(&merged), "", &mut Vec::new(), &mut cmp);
    settle_others(&mut entries, me, &cmp, force)?;

    entries.retain(|e| !e.same_identity(me.0, me.1, me.2));
    entries.push(Entry {
        manager: manager.name.to_string(),
        operation: "Apply".into(),
        api_version: manager.api_version.to_string(),
        time: Some(manager.time.to_string()),
        subresource: manager.subresource.to_string(),
        set: applied,
    });
    encode_entries(&mut merged, entries);
    Ok(merged)
}

/// Records an ordinary write (create, update, or a JSON/merge/strategic patch) by `manager` in
/// `new`'s `metadata.managedFields`, as kube-apiserver does with `fieldManager`: the manager's
/// `Update` entry gains every field it added or changed, other managers lose fields it changed
/// or removed. Never conflicts.
///
/// `managedFields` sent in `new` are kept when they decode and are non-empty (a client can
/// edit them); a list of one empty entry (`[{}]`) clears them; otherwise the live object's
/// entries carry over.
pub fn update_managed_fields(
    schema: Schema,
    live: Option<&Value>,
    new: &mut Value,
    manager: &Manager<'_>,
) -> Result<()> {
    if !new.is_object() {
        return Err(Error::Invalid("an object must be a JSON object".into()));
    }
    let sent = new.pointer("/metadata/managedFields").cloned();
    let reset = matches!(&sent, Some(Value::Array(a)) if !a.is_empty() && a.iter().all(|e| e.as_object().is_some_and(Map::is_empty)));
    let mut entries = if reset {
        Vec::new()
    } else {
        match decode_entries(sent.as_ref()) {
            Ok(e) if !e.is_empty() => e,
            _ => live_entries(schema, live, false)?,
        }
    };

    // Compare without managedFields on either side; a create compares against the skeleton
    // kube-apiserver's typed empty object has (top-level objects present).
    let mut after = new.clone();
    if let Some(m) = after
        .pointer_mut("/metadata")
        .and_then(Value::as_object_mut)
    {
        m.remove("managedFields");
    }
    let before = match live {
        Some(l) => {
            let mut l = l.clone();
            if let Some(m) = l.pointer_mut("/metadata").and_then(Value::as_object_mut) {
                m.remove("managedFields");
            }
            l
        }
        None => skeleton(&after),
    };
    let mut cmp = Comparison::default();
    compare(
        schema,
        Some(&before),
        Some(&after),
        "",
        &mut Vec::new(),
        &mut cmp,
    );
    strip_meta(&mut cmp.added);
    strip_meta(&mut cmp.modified);
    strip_meta(&mut cmp.removed);

    let me = (manager.name, "Update", manager.subresource);
    settle_others(&mut entries, me, &cmp, true)?;
    let prev = entries
        .iter()
        .position(|e| e.same_identity(me.0, me.1, me.2));
    let gained = cmp.modified.union(&cmp.added);
    match prev {
        Some(i) => {
            let e = &mut entries[i];
            let set = e.set.difference(&cmp.removed).union(&gained);
            if set != e.set || !gained.is_empty() {
                e.time = Some(manager.time.to_string());
            }
            e.set = set;
            e.api_version = manager.api_version.to_string();
        }
        None if !gained.is_empty() => entries.push(Entry {
            manager: manager.name.to_string(),
            operation: "Update".into(),
            api_version: manager.api_version.to_string(),
            time: Some(manager.time.to_string()),
            subresource: manager.subresource.to_string(),
            set: gained,
        }),
        None => {}
    }
    encode_entries(new, entries);
    Ok(())
}

/// `{}` for each top-level object field of `obj` (and a pod template's `metadata`/`spec`), the
/// shape of a zero Go struct: these never count as added by the creating manager.
fn skeleton(obj: &Value) -> Value {
    let mut out = Map::new();
    if let Value::Object(m) = obj {
        for (k, v) in m {
            if let Value::Object(inner) = v {
                let mut sk = Map::new();
                if let Some(Value::Object(t)) = inner.get("template") {
                    let mut tm = Map::new();
                    for part in ["metadata", "spec"] {
                        if t.get(part).is_some_and(Value::is_object) {
                            tm.insert(part.into(), Value::Object(Map::new()));
                        }
                    }
                    sk.insert("template".into(), Value::Object(tm));
                }
                out.insert(k.clone(), Value::Object(sk));
            }
        }
    }
    Value::Object(out)
}

/// The field sets of `obj`'s `metadata.managedFields`, by (manager, operation, subresource).
pub fn managed_field_sets(obj: &Value) -> Result<BTreeMap<(String, String, String), FieldSet>> {
    Ok(decode_entries(obj.pointer("/metadata/managedFields"))?
        .into_iter()
        .map(|e| ((e.manager, e.operation, e.subresource), e.set))
        .collect())
}
