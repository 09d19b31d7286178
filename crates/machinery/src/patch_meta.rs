//! Patch and list metadata of built-in kinds (the table) and the [`Schema`] handle that the
//! strategic merge patch and server-side apply use to look fields up.

use std::collections::HashMap;
use std::sync::OnceLock;

#[path = "patch_meta_table.rs"]
mod table;

/// How a list field behaves under server-side apply (`x-kubernetes-list-type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListType {
    /// Replaced as a whole; owned as one field.
    Atomic,
    /// A set of scalars; each value owned separately (`v:"x"` in FieldsV1).
    Set,
    /// An associative list keyed by these fields (`x-kubernetes-list-map-keys`); each element
    /// owned separately (`k:{"name":"x"}` in FieldsV1).
    Map(&'static [&'static str]),
}

/// Metadata of one field with non-default semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMeta {
    /// Path from the object root: `spec.template.spec.containers[].env` (`[]` steps into list
    /// elements).
    pub path: &'static str,
    /// `x-kubernetes-patch-strategy`: `""`, `"merge"`, `"retainKeys"`, `"merge,retainKeys"`.
    pub patch_strategy: &'static str,
    /// `x-kubernetes-patch-merge-key`, `""` when none.
    pub patch_merge_key: &'static str,
    /// `Some` for lists with a declared `x-kubernetes-list-type` or patch strategy; `None` for
    /// objects.
    pub list_type: Option<ListType>,
    /// For objects: `x-kubernetes-map-type: atomic` (the object is replaced and owned as a
    /// whole). For lists: the elements are atomic objects.
    pub atomic: bool,
}

impl FieldMeta {
    /// Strategic merge patch merges this list (by [`FieldMeta::patch_merge_key`] for lists of
    /// objects, as a set for lists of scalars) instead of replacing it.
    pub fn merges(&self) -> bool {
        self.patch_strategy.split(',').any(|s| s == "merge")
    }

    /// The patch strategy includes `retainKeys`.
    pub fn retains_keys(&self) -> bool {
        self.patch_strategy.split(',').any(|s| s == "retainKeys")
    }
}

/// A table of field metadata, with sub-tables included under a prefix (pod specs and object
/// metadata appear in many kinds).
#[derive(Debug)]
pub(crate) struct Table {
    fields: &'static [FieldMeta],
    includes: &'static [(&'static str, &'static Table)],
}

impl Table {
    fn flatten(&'static self, prefix: &str, out: &mut HashMap<String, &'static FieldMeta>) {
        for f in self.fields {
            out.insert(join(prefix, f.path), f);
        }
        for (p, t) in self.includes {
            t.flatten(&join(prefix, p), out);
        }
    }
}

fn join(prefix: &str, path: &str) -> String {
    if prefix.is_empty() {
        path.to_string()
    } else {
        format!("{prefix}.{path}")
    }
}

/// Metadata used for kinds not in the table (h8s kinds, anything new): only `metadata`.
static DEFAULT: Table = Table {
    fields: &[],
    includes: &[("metadata", &table::OBJECT_META)],
};

type Flat = HashMap<String, &'static FieldMeta>;

/// One flattened table per entry of `table::KINDS`, same order.
fn flat_tables() -> &'static [Flat] {
    static FLAT: OnceLock<Vec<Flat>> = OnceLock::new();
    FLAT.get_or_init(|| {
        table::KINDS
            .iter()
            .map(|(_, _, t)| {
                let mut flat = HashMap::new();
                t.flatten("", &mut flat);
                flat
            })
            .collect()
    })
}

fn default_flat() -> &'static Flat {
    static D: OnceLock<Flat> = OnceLock::new();
    D.get_or_init(|| {
        let mut flat = HashMap::new();
        DEFAULT.flatten("", &mut flat);
        flat
    })
}

/// The patch/list metadata of one kind: what strategic merge patch and server-side apply need
/// to know about its fields. Cheap to copy.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    flat: &'static Flat,
    known: bool,
}

impl Schema {
    /// The schema of a built-in kind (`group` is `""` for core). Kinds not in the table get
    /// object-metadata semantics only (see [`Schema::is_known`]).
    pub fn for_kind(group: &str, kind: &str) -> Schema {
        match table::KINDS
            .iter()
            .position(|(g, k, _)| *g == group && *k == kind)
        {
            Some(i) => Schema {
                flat: &flat_tables()[i],
                known: true,
            },
            None => Schema {
                flat: default_flat(),
                known: false,
            },
        }
    }

    /// A kind described by data (a custom resource's structural schema): object-metadata
    /// semantics plus `fields`. Each distinct set of fields is kept once for the process
    /// (definitions are few and written by administrators; requests never add one).
    pub fn custom(fields: &[FieldMeta]) -> Schema {
        type Kept = Vec<(Vec<FieldMeta>, &'static Flat)>;
        static KEPT: OnceLock<std::sync::Mutex<Kept>> = OnceLock::new();
        if fields.is_empty() {
            return Schema::metadata_only();
        }
        let mut kept = KEPT
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, flat)) = kept.iter().find(|(f, _)| f.as_slice() == fields) {
            return Schema { flat, known: true };
        }
        let mut flat = default_flat().clone();
        let metas: &'static [FieldMeta] = Box::leak(fields.to_vec().into_boxed_slice());
        for f in metas {
            flat.insert(f.path.to_string(), f);
        }
        let flat: &'static Flat = Box::leak(Box::new(flat));
        kept.push((fields.to_vec(), flat));
        Schema { flat, known: true }
    }

    /// Object-metadata semantics only (finalizers as a set, ownerReferences keyed by uid).
    pub fn metadata_only() -> Schema {
        Schema {
            flat: default_flat(),
            known: false,
        }
    }

    /// Whether the kind is one of the built-in kinds of the table.
    pub fn is_known(&self) -> bool {
        self.known
    }

    /// The metadata of the field at `path` (e.g. `spec.template.spec.containers[].ports`), if
    /// it differs from the defaults.
    pub fn field(&self, path: &str) -> Option<&'static FieldMeta> {
        self.flat.get(path).copied()
    }

    /// Every field with non-default metadata, as `(full path, meta)`, sorted by path. For
    /// generating OpenAPI extensions.
    pub fn fields(&self) -> Vec<(&str, &'static FieldMeta)> {
        let mut v: Vec<_> = self.flat.iter().map(|(k, m)| (k.as_str(), *m)).collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// The built-in kinds in the table, as `(group, kind)`.
    pub fn known_kinds() -> impl Iterator<Item = (&'static str, &'static str)> {
        table::KINDS.iter().map(|(g, k, _)| (*g, *k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_template_paths_resolve_in_every_workload() {
        for (g, k, prefix) in [
            ("", "Pod", "spec"),
            ("apps", "Deployment", "spec.template.spec"),
            ("apps", "StatefulSet", "spec.template.spec"),
            ("apps", "DaemonSet", "spec.template.spec"),
            ("apps", "ReplicaSet", "spec.template.spec"),
            ("batch", "Job", "spec.template.spec"),
            ("batch", "CronJob", "spec.jobTemplate.spec.template.spec"),
            ("", "ReplicationController", "spec.template.spec"),
            ("", "PodTemplate", "template.spec"),
        ] {
            let s = Schema::for_kind(g, k);
            assert!(s.is_known());
            let c = s.field(&format!("{prefix}.containers")).unwrap();
            assert_eq!(c.patch_merge_key, "name");
            assert!(c.merges());
            assert_eq!(c.list_type, Some(ListType::Map(&["name"])));
            let env = s.field(&format!("{prefix}.containers[].env")).unwrap();
            assert_eq!(env.patch_merge_key, "name");
            let vm = s
                .field(&format!("{prefix}.initContainers[].volumeMounts"))
                .unwrap();
            assert_eq!(vm.patch_merge_key, "mountPath");
            let ports = s.field(&format!("{prefix}.containers[].ports")).unwrap();
            assert_eq!(ports.patch_merge_key, "containerPort");
            assert_eq!(
                ports.list_type,
                Some(ListType::Map(&["containerPort", "protocol"]))
            );
            let vols = s.field(&format!("{prefix}.volumes")).unwrap();
            assert!(vols.merges() && vols.retains_keys());
            assert!(s.field(&format!("{prefix}.tolerations")).is_none());
        }
    }

    #[test]
    fn other_kinds() {
        let svc = Schema::for_kind("", "Service");
        let p = svc.field("spec.ports").unwrap();
        assert_eq!(p.patch_merge_key, "port");
        assert_eq!(p.list_type, Some(ListType::Map(&["port", "protocol"])));
        assert!(svc.field("spec.selector").unwrap().atomic);
        let d = Schema::for_kind("apps", "Deployment");
        assert!(d.field("spec.strategy").unwrap().retains_keys());
        assert!(d.field("spec.selector").unwrap().atomic);
        assert_eq!(
            d.field("status.conditions").unwrap().patch_merge_key,
            "type"
        );
        let fin = d.field("metadata.finalizers").unwrap();
        assert!(fin.merges());
        assert_eq!(fin.list_type, Some(ListType::Set));
        assert_eq!(
            d.field("spec.template.metadata.ownerReferences")
                .unwrap()
                .patch_merge_key,
            "uid"
        );
        let n = Schema::for_kind("", "Node");
        assert_eq!(
            n.field("spec.podCIDRs").unwrap().list_type,
            Some(ListType::Set)
        );
        let unknown = Schema::for_kind("", "Network");
        assert!(!unknown.is_known());
        assert!(unknown.field("metadata.finalizers").is_some());
        assert!(Schema::known_kinds().count() >= 29);
    }
}
