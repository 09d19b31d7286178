//! Strategic merge patch with Kubernetes semantics (`k8s.io/apimachinery/pkg/util/strategicpatch`
//! as kube-apiserver applies it): lists merged by patch merge key or as sets where the field's
//! patch strategy says `merge`, other lists replaced, `null` deletes, and the directives
//! `$patch` (`replace`, `delete`, `merge`), `$retainKeys`, `$setElementOrder/<list>` and
//! `$deleteFromPrimitiveList/<list>`.

use std::collections::{HashMap, HashSet};

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::patch_meta::Schema;

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM_PRIMITIVE: &str = "$deleteFromPrimitiveList/";

/// Applies a strategic merge patch (already parsed JSON) to `original` and returns the result.
/// The patch must be a JSON object; `original` is treated as `{}` when it is not an object.
pub fn strategic_merge_patch_value(
    original: &Value,
    patch: &Value,
    schema: Schema,
) -> Result<Value> {
    let Value::Object(p) = patch else {
        return Err(Error::BadPatch(format!(
            "a strategic merge patch must be a JSON object, not {}",
            kind_name(patch)
        )));
    };
    let orig = match original {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    let ctx = Ctx { schema };
    Ok(Value::Object(ctx.merge_map(orig, p.clone(), "")?))
}

/// Parses and applies a strategic merge patch body.
pub fn strategic_merge_patch(original: &Value, body: &[u8], schema: Schema) -> Result<Value> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| Error::BadPatch(format!("invalid JSON: {e}")))?;
    strategic_merge_patch_value(original, &patch, schema)
}

fn kind_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn same_kind(a: &Value, b: &Value) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Drops maps that carry `$patch` (and every other `$` key, which no Kubernetes object
/// field name can start with), recursively. `None` means "drop this value".
fn remove_directives(v: Value) -> Option<Value> {
    match v {
        Value::Object(m) => {
            if m.contains_key(DIRECTIVE) {
                return None;
            }
            Some(Value::Object(
                m.into_iter()
                    .filter(|(k, _)| !k.starts_with('$'))
                    .filter_map(|(k, v)| remove_directives(v).map(|v| (k, v)))
                    .collect(),
            ))
        }
        Value::Array(a) => Some(Value::Array(
            a.into_iter().filter_map(remove_directives).collect(),
        )),
        other => Some(other),
    }
}

/// Removes `null`-valued keys everywhere (a `null` in a patch means "delete", which means
/// nothing where there is nothing to delete).
fn discard_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, v| !v.is_null());
            m.values_mut().for_each(discard_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(discard_nulls),
        _ => {}
    }
}

/// A patch value placed where the original has nothing (or something of another type).
fn fresh(mut v: Value) -> Option<Value> {
    discard_nulls(&mut v);
    remove_directives(v)
}

fn no_merge_key(item: &Value, key: &str) -> Error {
    Error::BadPatch(format!(
        "map: {} does not contain declared merge key: {key}",
        short(item)
    ))
}

/// A value for an error message, cut short: messages must stay readable (and small) however
/// big the patch.
fn short(v: &Value) -> String {
    const MAX: usize = 200;
    let s = v.to_string();
    if s.len() <= MAX {
        return s;
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The "kind" of list elements, as reflect.Type is used by Kubernetes: all elements of both
/// lists must agree, and lists of lists are refused.
#[derive(PartialEq, Clone, Copy)]
enum ElemKind {
    Map,
    Scalar,
}

fn element_kind(lists: &[&[Value]], path: &str) -> Result<Option<ElemKind>> {
    let mut first: Option<&Value> = None;
    for l in lists {
        for v in l.iter() {
            if v.is_array() {
                return Err(Error::PatchNotApplicable(
                    "lists of lists are not supported".into(),
                ));
            }
            match first {
                None => first = Some(v),
                Some(f) if !same_kind(f, v) => {
                    return Err(Error::PatchNotApplicable(format!(
                        "list element types are not identical in {path}"
                    )))
                }
                _ => {}
            }
        }
    }
    Ok(first.map(|f| {
        if f.is_object() {
            ElemKind::Map
        } else {
            ElemKind::Scalar
        }
    }))
}

/// The identity of a list element for ordering and matching: the merge key's value for maps,
/// the value itself for scalars, as canonical JSON (a missing merge key has an identity of its
/// own, as Go's `nil == nil`).
fn ident(v: &Value, merge_key: &str, kind: ElemKind) -> String {
    let id = match kind {
        ElemKind::Map => v.get(merge_key),
        ElemKind::Scalar => Some(v),
    };
    match id {
        Some(x) => x.to_string(),
        None => "\u{0}none".to_string(),
    }
}

/// Position of each identity's first occurrence in a list: hashing keeps huge lists linear.
struct Order(HashMap<String, usize>);

impl Order {
    fn new(list: &[Value], merge_key: &str, kind: ElemKind) -> Order {
        let mut m = HashMap::with_capacity(list.len());
        for (i, v) in list.iter().enumerate() {
            m.entry(ident(v, merge_key, kind)).or_insert(i);
        }
        Order(m)
    }

    fn get(&self, v: &Value, merge_key: &str, kind: ElemKind) -> Option<usize> {
        self.0.get(&ident(v, merge_key, kind)).copied()
    }
}

struct Ctx {
    schema: Schema,
}

impl Ctx {
    fn merge_map(
        &self,
        mut original: Map<String, Value>,
        mut patch: Map<String, Value>,
        path: &str,
    ) -> Result<Map<String, Value>> {
        if let Some(d) = patch.get(DIRECTIVE) {
            return match d.as_str() {
                Some("replace") => {
                    patch.remove(DIRECTIVE);
                    match remove_directives(Value::Object(patch)) {
                        Some(Value::Object(m)) => Ok(m),
                        _ => Ok(Map::new()),
                    }
                }
                Some("delete") => Ok(Map::new()),
                _ => Err(Error::BadPatch(format!(
                    "unknown patch type: {} in map: {}",
                    short(d),
                    short(&Value::Object(patch.clone()))
                ))),
            };
        }

        // $retainKeys: keys of `original` not listed are cleared; the patch may only set
        // listed keys.
        if let Some(rk) = patch.remove(RETAIN_KEYS) {
            let Value::Array(keys) = rk else {
                return Err(Error::BadPatch("invalid patch format of retainKeys".into()));
            };
            let listed = |k: &str| keys.iter().any(|x| x.as_str() == Some(k));
            for (k, v) in &patch {
                if v.is_null() || k.starts_with(DELETE_FROM_PRIMITIVE) || k.starts_with(SET_ORDER) {
                    continue;
                }
                if !listed(k) {
                    return Err(Error::BadPatch("invalid patch format of retainKeys".into()));
                }
            }
            original.retain(|k, _| listed(k));
        }

        // $setElementOrder/<list> first, together with its list.
        let order_keys: Vec<String> = patch
            .keys()
            .filter(|k| k.starts_with(SET_ORDER))
            .cloned()
            .collect();
        for key in order_keys {
            let order = patch.remove(&key).unwrap_or(Value::Null);
            let Value::Array(order) = order else {
                return Err(Error::BadPatch(
                    "invalid patch format of setElementOrder list".into(),
                ));
            };
            let list_key = &key[SET_ORDER.len()..];
            self.merge_with_order(&mut original, &mut patch, list_key, order, path)?;
        }

        // Ordinary keys, then deletion lists (deterministic, unlike Go's map order).
        let mut keys: Vec<String> = patch.keys().cloned().collect();
        keys.sort_by_key(|k| k.starts_with(DELETE_FROM_PRIMITIVE));
        for k in keys {
            let patch_v = patch.remove(&k).unwrap_or(Value::Null);
            let (key, is_delete_list) = match k.strip_prefix(DELETE_FROM_PRIMITIVE) {
                Some(rest) => (rest.to_string(), true),
                None => (k, false),
            };
            if key.starts_with('$') {
                return Err(Error::BadPatch(format!(
                    "unknown strategic merge patch directive {key:?}"
                )));
            }
            if patch_v.is_null() {
                original.remove(&key);
                continue;
            }
            let Some(orig_v) = original.get(&key) else {
                if !is_delete_list {
                    if let Some(v) = fresh(patch_v) {
                        original.insert(key, v);
                    }
                }
                continue;
            };
            if !same_kind(orig_v, &patch_v) {
                if !is_delete_list {
                    match fresh(patch_v) {
                        Some(v) => original.insert(key, v),
                        None => original.remove(&key),
                    };
                }
                continue;
            }
            let child = join(path, &key);
            let meta = self.schema.field(&child);
            let orig_v = original.remove(&key).unwrap_or(Value::Null);
            let merged = match (orig_v, patch_v) {
                (Value::Object(o), Value::Object(p)) => {
                    let replace =
                        meta.is_some_and(|m| m.patch_strategy.split(',').any(|s| s == "replace"));
                    if replace {
                        fresh(Value::Object(p))
                    } else {
                        Some(Value::Object(self.merge_map(o, p, &child)?))
                    }
                }
                (Value::Array(o), Value::Array(p)) => {
                    let merges = meta.is_some_and(|m| m.merges());
                    if merges || is_delete_list {
                        let mk = meta.map(|m| m.patch_merge_key).unwrap_or("");
                        Some(Value::Array(self.merge_slice(
                            o,
                            p,
                            mk,
                            &child,
                            is_delete_list,
                        )?))
                    } else {
                        fresh(Value::Array(p))
                    }
                }
                (_, p) => remove_directives(p),
            };
            if let Some(v) = merged {
                original.insert(key, v);
            }
        }
        Ok(original)
    }

    /// Handles one `$setElementOrder/<list_key>` directive and the patch's `<list_key>` list.
    fn merge_with_order(
        &self,
        original: &mut Map<String, Value>,
        patch: &mut Map<String, Value>,
        list_key: &str,
        order: Vec<Value>,
        path: &str,
    ) -> Result<()> {
        let child = join(path, list_key);
        let meta = self.schema.field(&child);
        let mk = meta.map(|m| m.patch_merge_key).unwrap_or("");
        let orig_list = match original.get(list_key) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(other) => {
                return Err(Error::PatchNotApplicable(format!(
                    "{child} is {}, not a list",
                    kind_name(other)
                )))
            }
        };
        let patch_list = match patch.get(list_key) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => {
                return Err(Error::BadPatch(
                    "invalid patch format of setElementOrder list".into(),
                ))
            }
        };
        validate_order(patch_list.as_deref().unwrap_or(&[]), &order, mk)?;
        let merged = match (&orig_list, &patch_list) {
            (None, None) => return Ok(()),
            (Some(o), None) => o.clone(),
            (None, Some(p)) => match remove_directives(Value::Array(p.clone())) {
                Some(Value::Array(a)) => a,
                _ => Vec::new(),
            },
            (Some(o), Some(p)) => {
                if meta.is_some_and(|m| m.merges()) {
                    self.merge_slice(o.clone(), p.clone(), mk, &child, false)?
                } else {
                    match fresh(Value::Array(p.clone())) {
                        Some(Value::Array(a)) => a,
                        _ => Vec::new(),
                    }
                }
            }
        };
        let orig_ref = orig_list.as_deref().unwrap_or(&[]);
        let kind = element_kind(&[orig_ref, patch_list.as_deref().unwrap_or(&[])], &child)?;
        let result = match kind {
            None => merged,
            Some(kind) => {
                if kind == ElemKind::Map && mk.is_empty() {
                    merged
                } else {
                    let (in_order, server_only) = partition(merged, &order, mk, kind)?;
                    normalize_element_order(in_order, server_only, &order, orig_ref, mk, kind)?
                }
            }
        };
        original.insert(list_key.to_string(), Value::Array(result));
        patch.remove(list_key);
        Ok(())
    }

    fn merge_slice(
        &self,
        original: Vec<Value>,
        patch: Vec<Value>,
        merge_key: &str,
        path: &str,
        is_delete_list: bool,
    ) -> Result<Vec<Value>> {
        if original.is_empty() && patch.is_empty() {
            return Ok(original);
        }
        let Some(kind) = element_kind(&[&original, &patch], path)? else {
            return Ok(original);
        };
        if kind == ElemKind::Scalar {
            if is_delete_list {
                let gone: HashSet<String> = patch.iter().map(Value::to_string).collect();
                return Ok(original
                    .into_iter()
                    .filter(|v| !gone.contains(&v.to_string()))
                    .collect());
            }
            let mut seen = HashSet::with_capacity(original.len() + patch.len());
            let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
            for v in original.iter().chain(patch.iter()) {
                if seen.insert(v.to_string()) {
                    merged.push(v.clone());
                }
            }
            let (in_patch, server_only) = partition(merged, &patch, "", kind)?;
            return normalize_element_order(in_patch, server_only, &patch, &original, "", kind);
        }
        if merge_key.is_empty() {
            return Err(Error::PatchNotApplicable(format!(
                "cannot merge lists without merge key for {path}"
            )));
        }
        let item_path = format!("{path}[]");

        // Special elements: `{"$patch":"delete", key: v}` deletes, `{"$patch":"replace"}`
        // makes the rest of the patch list replace the original.
        let mut original = original;
        let mut plain = Vec::with_capacity(patch.len());
        let mut replace = false;
        let mut deleted: HashSet<String> = HashSet::new();
        for v in patch {
            match v.get(DIRECTIVE) {
                None => plain.push(v),
                Some(d) => match d.as_str() {
                    Some("delete") => {
                        let Some(kv) = v.get(merge_key) else {
                            return Err(no_merge_key(&v, merge_key));
                        };
                        deleted.insert(kv.to_string());
                    }
                    Some("replace") => replace = true,
                    Some("merge") => {
                        return Err(Error::BadPatch(
                            "merging lists cannot yet be specified in the patch".into(),
                        ))
                    }
                    _ => {
                        return Err(Error::BadPatch(format!(
                            "unknown patch type: {} in map: {}",
                            short(d),
                            short(&v)
                        )))
                    }
                },
            }
        }
        if !deleted.is_empty() {
            original.retain(|o| {
                o.get(merge_key)
                    .is_none_or(|kv| !deleted.contains(&kv.to_string()))
            });
        }
        let (original, patch) = if replace {
            let replaced = plain.into_iter().filter_map(fresh).collect();
            (replaced, Vec::new())
        } else {
            (original, plain)
        };

        // Index the original items by merge key: patches of huge lists stay linear.
        let mut merged = original.clone();
        let mut by_key: HashMap<String, usize> = HashMap::with_capacity(merged.len());
        for (i, o) in merged.iter().enumerate() {
            let Value::Object(om) = o else {
                return Err(Error::PatchNotApplicable(format!(
                    "value for key {i} is not a map"
                )));
            };
            if let Some(kv) = om.get(merge_key) {
                by_key.entry(kv.to_string()).or_insert(i);
            }
        }
        for p in &patch {
            let Some(kv) = p.get(merge_key) else {
                return Err(no_merge_key(p, merge_key));
            };
            match by_key.get(&kv.to_string()) {
                Some(&i) => {
                    let o = std::mem::take(&mut merged[i]);
                    let (Value::Object(om), Value::Object(pm)) = (o, p.clone()) else {
                        continue;
                    };
                    merged[i] = Value::Object(self.merge_map(om, pm, &item_path)?);
                }
                None => {
                    if let Some(v) = fresh(p.clone()) {
                        by_key.insert(kv.to_string(), merged.len());
                        merged.push(v);
                    }
                }
            }
        }
        let (in_patch, server_only) = partition(merged, &patch, merge_key, kind)?;
        normalize_element_order(in_patch, server_only, &patch, &original, merge_key, kind)
    }
}

/// Splits `merged` into the items present in `by` and the others (server-only), keeping order.
fn partition(
    merged: Vec<Value>,
    by: &[Value],
    merge_key: &str,
    kind: ElemKind,
) -> Result<(Vec<Value>, Vec<Value>)> {
    let wanted: HashSet<String> = by.iter().map(|b| ident(b, merge_key, kind)).collect();
    let mut present = Vec::new();
    let mut server_only = Vec::new();
    for v in merged {
        if kind == ElemKind::Map && v.get(merge_key).is_none() {
            return Err(no_merge_key(&v, merge_key));
        }
        if wanted.contains(&ident(&v, merge_key, kind)) {
            present.push(v);
        } else {
            server_only.push(v);
        }
    }
    Ok((present, server_only))
}

/// Orders the patch items by the patch (or `$setElementOrder`) order and the server-only items
/// by the live order, then interleaves them: Kubernetes' `normalizeElementOrder`.
fn normalize_element_order(
    patch_items: Vec<Value>,
    server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: &str,
    kind: ElemKind,
) -> Result<Vec<Value>> {
    let patch_items = sort_by_order(patch_items, patch_order, merge_key, kind)?;
    let server_only = sort_by_order(server_only, server_order, merge_key, kind)?;
    Ok(merge_sorted(
        server_only,
        patch_items,
        server_order,
        merge_key,
        kind,
    ))
}

fn sort_by_order(
    items: Vec<Value>,
    order: &[Value],
    merge_key: &str,
    kind: ElemKind,
) -> Result<Vec<Value>> {
    let mut items = items;
    let mut to_delete = Vec::new();
    if kind == ElemKind::Map {
        for v in items.iter().chain(order.iter()) {
            if v.get(merge_key).is_none() {
                return Err(no_merge_key(v, merge_key));
            }
        }
        let (keep, del): (Vec<Value>, Vec<Value>) = items
            .into_iter()
            .partition(|v| v.get(DIRECTIVE).and_then(Value::as_str) != Some("delete"));
        items = keep;
        to_delete = del;
    }
    // Stable: items missing from `order` keep their relative place after the known ones.
    let idx = Order::new(order, merge_key, kind);
    items.sort_by_cached_key(|v| idx.get(v, merge_key, kind).unwrap_or(usize::MAX));
    items.extend(to_delete);
    Ok(items)
}

/// Inserts each `left` (server-only) item into `right` (patch items) before the first right
/// item that comes after it in the live order; relative orders of both sides are kept.
fn merge_sorted(
    left: Vec<Value>,
    right: Vec<Value>,
    server_order: &[Value],
    merge_key: &str,
    kind: ElemKind,
) -> Vec<Value> {
    let idx = Order::new(server_order, merge_key, kind);
    let mut out = Vec::with_capacity(left.len() + right.len());
    let mut l = left.into_iter().peekable();
    let mut r = right.into_iter().peekable();
    loop {
        match (l.peek(), r.peek()) {
            (None, None) => break,
            (Some(_), None) => out.extend(l.next()),
            (None, Some(_)) => out.extend(r.next()),
            (Some(a), Some(b)) => {
                let li = idx.get(a, merge_key, kind);
                let ri = idx.get(b, merge_key, kind);
                let left_first = matches!((li, ri), (Some(x), Some(y)) if x < y);
                if left_first {
                    out.extend(l.next());
                } else {
                    out.extend(r.next());
                }
            }
        }
    }
    out
}

/// The items of the patch list (deletions aside) must appear in `$setElementOrder` in the same
/// relative order.
fn validate_order(patch_list: &[Value], order: &[Value], merge_key: &str) -> Result<()> {
    if order.is_empty() || patch_list.is_empty() {
        return Ok(());
    }
    let non_delete: Vec<&Value> = patch_list
        .iter()
        .filter(|v| {
            merge_key.is_empty() || v.get(DIRECTIVE).and_then(Value::as_str) != Some("delete")
        })
        .collect();
    let (mut pi, mut oi) = (0, 0);
    while pi < non_delete.len() && oi < order.len() {
        let p = non_delete[pi];
        if p.get(DIRECTIVE).is_some() {
            pi += 1;
            continue;
        }
        let equal = if merge_key.is_empty() {
            p == &order[oi]
        } else {
            let (Some(a), Some(b)) = (p.get(merge_key), order[oi].get(merge_key)) else {
                return Err(no_merge_key(p, merge_key));
            };
            a == b
        };
        if equal {
            pi += 1;
        }
        oi += 1;
    }
    if pi < non_delete.len() {
        return Err(Error::BadPatch(format!(
            "The order in patch list:\n{}\n doesn't match $setElementOrder list:\n{}\n",
            short(&Value::Array(patch_list.to_vec())),
            short(&Value::Array(order.to_vec()))
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Schema {
        Schema::for_kind("", "Pod")
    }

    fn smp(orig: Value, patch: Value, s: Schema) -> Value {
        strategic_merge_patch_value(&orig, &patch, s).unwrap()
    }

    #[test]
    fn merges_containers_by_name_and_keeps_others() {
        let orig = json!({"spec":{"containers":[
            {"name":"a","image":"a:1","env":[{"name":"X","value":"1"},{"name":"Y","value":"2"}]},
            {"name":"b","image":"b:1"}
        ]}});
        let out = smp(
            orig,
            json!({"spec":{"containers":[{"name":"a","image":"a:2","env":[{"name":"Y","value":"3"}]}]}}),
            pod(),
        );
        assert_eq!(
            out,
            json!({"spec":{"containers":[
                {"name":"a","image":"a:2","env":[{"name":"X","value":"1"},{"name":"Y","value":"3"}]},
                {"name":"b","image":"b:1"}
            ]}})
        );
    }

    #[test]
    fn lists_without_strategy_are_replaced() {
        let orig = json!({"spec":{"tolerations":[{"key":"a"}],"containers":[{"name":"c","args":["1","2"]}]}});
        let out = smp(
            orig,
            json!({"spec":{"tolerations":[{"key":"b"}],"containers":[{"name":"c","args":["3"]}]}}),
            pod(),
        );
        assert_eq!(
            out,
            json!({"spec":{"tolerations":[{"key":"b"}],"containers":[{"name":"c","args":["3"]}]}})
        );
    }

    #[test]
    fn delete_and_replace_directives() {
        let orig = json!({"spec":{"containers":[{"name":"a"},{"name":"b"}],"volumes":[{"name":"v","emptyDir":{}}]}});
        let out = smp(
            orig.clone(),
            json!({"spec":{"containers":[{"name":"a","$patch":"delete"}]}}),
            pod(),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name":"b"}]));
        let out = smp(
            orig.clone(),
            json!({"spec":{"containers":[{"name":"z"},{"$patch":"replace"}]}}),
            pod(),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name":"z"}]));
        let out = smp(
            orig.clone(),
            json!({"spec":{"$patch":"replace","restartPolicy":"Never"}}),
            pod(),
        );
        assert_eq!(out, json!({"spec":{"restartPolicy":"Never"}}));
        let out = smp(orig.clone(), json!({"spec":{"$patch":"delete"}}), pod());
        assert_eq!(out, json!({"spec":{}}));
        let e = strategic_merge_patch_value(
            &orig,
            &json!({"spec":{"containers":[{"$patch":"merge"}]}}),
            pod(),
        )
        .unwrap_err();
        assert_eq!(e.code(), 400);
        let e = strategic_merge_patch_value(&orig, &json!({"spec":{"$patch":"frob"}}), pod())
            .unwrap_err();
        assert!(
            e.to_string().starts_with("unknown patch type: \"frob\""),
            "{e}"
        );
    }

    #[test]
    fn null_deletes_and_unmatched_nulls_vanish() {
        let orig = json!({"metadata":{"labels":{"a":"1","b":"2"}}});
        let out = smp(
            orig,
            json!({"metadata":{"labels":{"a":null,"c":null},"annotations":{"x":null,"y":"1"}}}),
            pod(),
        );
        assert_eq!(
            out,
            json!({"metadata":{"labels":{"b":"2"},"annotations":{"y":"1"}}})
        );
    }

    #[test]
    fn finalizers_merge_as_a_set_and_delete_from_primitive_list() {
        let orig = json!({"metadata":{"finalizers":["a","b"]}});
        let out = smp(
            orig.clone(),
            json!({"metadata":{"finalizers":["c","a"]}}),
            pod(),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "a", "b"]));
        let out = smp(
            orig,
            json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["a"],"finalizers":["d"]}}),
            pod(),
        );
        // New items go before server-only ones, as in Kubernetes.
        assert_eq!(out["metadata"]["finalizers"], json!(["d", "b"]));
    }

    #[test]
    fn set_element_order() {
        let orig = json!({"spec":{"containers":[{"name":"a"},{"name":"b"},{"name":"c"}]}});
        let out = smp(
            orig,
            json!({"spec":{
                "$setElementOrder/containers":[{"name":"c"},{"name":"b"},{"name":"a"}],
                "containers":[{"name":"b","image":"x"}]
            }}),
            pod(),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name":"c"},{"name":"b","image":"x"},{"name":"a"}])
        );
        // Primitive list order.
        let orig = json!({"metadata":{"finalizers":["a","b"]}});
        let out = smp(
            orig,
            json!({"metadata":{"$setElementOrder/finalizers":["b","c","a"],"finalizers":["c"]}}),
            pod(),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b", "c", "a"]));
        // Mismatch between the patch list and the order list.
        let e = strategic_merge_patch_value(
            &json!({"spec":{}}),
            &json!({"spec":{"$setElementOrder/containers":[{"name":"a"}],"containers":[{"name":"b"}]}}),
            pod(),
        )
        .unwrap_err();
        assert_eq!(e.code(), 400);
    }

    #[test]
    fn retain_keys_switches_volume_source() {
        let orig = json!({"spec":{"volumes":[{"name":"v","hostPath":{"path":"/x"}}]}});
        let out = smp(
            orig.clone(),
            json!({"spec":{"volumes":[{"name":"v","$retainKeys":["emptyDir","name"],"emptyDir":{}}]}}),
            pod(),
        );
        assert_eq!(out["spec"]["volumes"], json!([{"name":"v","emptyDir":{}}]));
        let e = strategic_merge_patch_value(
            &orig,
            &json!({"spec":{"volumes":[{"name":"v","$retainKeys":["name"],"emptyDir":{}}]}}),
            pod(),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "invalid patch format of retainKeys");
        // Deployment strategy: switching Recreate → RollingUpdate as kubectl sends it.
        let d = Schema::for_kind("apps", "Deployment");
        let out = smp(
            json!({"spec":{"strategy":{"type":"RollingUpdate","rollingUpdate":{"maxSurge":1}}}}),
            json!({"spec":{"strategy":{"$retainKeys":["type"],"type":"Recreate"}}}),
            d,
        );
        assert_eq!(out, json!({"spec":{"strategy":{"type":"Recreate"}}}));
    }

    #[test]
    fn service_ports_by_port_and_errors() {
        let s = Schema::for_kind("", "Service");
        let out = smp(
            json!({"spec":{"ports":[{"port":80,"targetPort":8080},{"port":443}],"selector":{"a":"b"}}}),
            json!({"spec":{"ports":[{"port":80,"targetPort":9090}],"selector":{"c":"d"}}}),
            s,
        );
        assert_eq!(
            out,
            json!({"spec":{"ports":[{"port":80,"targetPort":9090},{"port":443}],"selector":{"a":"b","c":"d"}}})
        );
        let e = strategic_merge_patch_value(
            &json!({"spec":{"ports":[{"port":80}]}}),
            &json!({"spec":{"ports":[{"targetPort":1}]}}),
            s,
        )
        .unwrap_err();
        assert_eq!(e.code(), 400);
        assert_eq!(
            strategic_merge_patch(&json!({}), b"[]", s)
                .unwrap_err()
                .code(),
            400
        );
        assert_eq!(
            strategic_merge_patch(&json!({}), b"{", s)
                .unwrap_err()
                .code(),
            400
        );
        let e = strategic_merge_patch_value(
            &json!({"spec":{"ports":[[1]]}}),
            &json!({"spec":{"ports":[[2]]}}),
            s,
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "lists of lists are not supported");
        assert_eq!(
            strategic_merge_patch_value(&json!({}), &json!({"$frob": 1}), s)
                .unwrap_err()
                .code(),
            400
        );
    }

    /// The patch `kubectl apply` (client-side) sends when a Deployment's image and a label
    /// change: labels merged, the container merged by name with `$setElementOrder`, and the
    /// last-applied annotation replaced.
    #[test]
    fn kubectl_apply_three_way_patch_for_a_deployment() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "web", "namespace": "default",
                "labels": {"app": "web", "tier": "fe"},
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"old\":true}", "deployment.kubernetes.io/revision": "1"}
            },
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "nginx", "image": "nginx:1.25", "ports": [{"containerPort": 80, "protocol": "TCP"}], "imagePullPolicy": "IfNotPresent"},
                            {"name": "sidecar", "image": "busybox", "args": ["sleep", "1d"]}
                        ],
                        "restartPolicy": "Always"
                    }
                }
            },
            "status": {"replicas": 3}
        });
        let patch = json!({
            "metadata": {
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{\"new\":true}"},
                "labels": {"tier": null, "version": "v2"}
            },
            "spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "nginx"}, {"name": "sidecar"}],
                "containers": [{"image": "nginx:1.27", "name": "nginx"}]
            }}}
        });
        let out = smp(live.clone(), patch, Schema::for_kind("apps", "Deployment"));
        let mut want = live;
        want["metadata"]["labels"] = json!({"app": "web", "version": "v2"});
        want["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"] =
            json!("{\"new\":true}");
        want["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:1.27");
        assert_eq!(out, want);
    }
}
