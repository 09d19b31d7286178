//! The tenant guard: what keeps tenants apart inside the API server.
//!
//! A tenant user is a caller with an `h8s:tenant:<name>` group ([`UserInfo::tenant`]) who
//! is not in `system:masters`. [`TenantGuard`] wraps the configured authorizer (Node →
//! RBAC) and narrows what it allows for tenant users:
//!
//! - Namespaces, Networks and PersistentVolumes are tenant-owned (the
//!   `tenancy.h8s.io/tenant` label that only the server sets; a Network's
//!   `spec.tenantID`): creating is allowed (admission stamps the caller's tenant), a named
//!   get/update/patch/delete only of the caller's own (anything else — another tenant's or a
//!   missing one — is the same 403, so a name reveals nothing), lists and watches are
//!   *allowed, filtered* to the caller's objects.
//! - Namespaced kinds: only in the caller's namespaces; lists and watches across all
//!   namespaces are filtered to objects in the caller's namespaces.
//! - Nodes, StorageClasses, CSIDrivers, IngressClasses, RuntimeClasses, PriorityClasses:
//!   read-only.
//! - The caller's own Tenant and User (and its tenant's Users in lists): read-only.
//! - Every other cluster-scoped kind (CRDs, webhook configurations, APIServices,
//!   ClusterRoles and their bindings, CSRs, TokenReviews, SubjectAccessReviews, …) is for
//!   cluster administrators only; self reviews stay open.
//!
//! The object-level half (stamping and immutability of the tenant, `Namespace.spec.network`
//! naming a Network of the same tenant) is the tenancy admission plugin
//! (`admission/tenancy.rs`), which shares the guard's [`TenantIndex`].

mod index;

pub use index::{label_tenant, Owned, TenantIndex, TENANT_LABEL};

use std::sync::Arc;

use serde_json::Value;

use crate::auth::{Attributes, Authorizer, Decision, ObjectFilter, UserInfo};

/// The group of cluster administrators.
pub const MASTERS_GROUP: &str = "system:masters";

/// The tenant of a caller the guard confines: its tenant group's name, unless it is a
/// cluster administrator.
pub fn confined_tenant(user: &UserInfo) -> Option<&str> {
    if user.groups.iter().any(|g| g == MASTERS_GROUP) {
        return None;
    }
    user.tenant().filter(|t| !t.is_empty())
}

/// Cluster-scoped kinds tenant users may read but not write.
const READ_ONLY: &[(&str, &str)] = &[
    ("", "nodes"),
    ("storage.k8s.io", "storageclasses"),
    ("storage.k8s.io", "csidrivers"),
    ("networking.k8s.io", "ingressclasses"),
    ("node.k8s.io", "runtimeclasses"),
    ("scheduling.k8s.io", "priorityclasses"),
];

/// Create-only reviews about the caller itself.
const SELF_REVIEWS: &[(&str, &str)] = &[
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
    ("authentication.k8s.io", "selfsubjectreviews"),
];

const READ_VERBS: &[&str] = &["get", "list", "watch"];
const COLLECTION_VERBS: &[&str] = &["list", "watch", "deletecollection"];

/// What the guard makes of a tenant user's request before the wrapped authorizer's
/// answer is combined with it.
enum Rule {
    /// The wrapped authorizer decides.
    Pass,
    /// Refused, with this reason (empty: the plain RBAC-style 403).
    Deny(String),
    /// Allowed (if the wrapped authorizer allows), but lists and watches see only what
    /// the filter lets through.
    Filter(Arc<dyn ObjectFilter>),
}

/// An object filter: objects of an owned kind that belong to `tenant`.
struct OwnedBy {
    kind: Owned,
    tenant: String,
}

impl ObjectFilter for OwnedBy {
    fn allows(&self, o: &Value) -> bool {
        self.kind.tenant_of(o) == Some(self.tenant.as_str())
    }
}

/// An object filter: namespaced objects in a namespace of `tenant`.
struct InTenantNamespace {
    index: Arc<TenantIndex>,
    tenant: String,
}

impl ObjectFilter for InTenantNamespace {
    fn allows(&self, o: &Value) -> bool {
        let ns = crate::obj::namespace(o);
        !ns.is_empty() && self.index.owned_by(Owned::Namespace, ns, &self.tenant)
    }
}

/// An object filter on a field of the object.
struct FieldIs {
    pointer: &'static str,
    value: String,
}

impl ObjectFilter for FieldIs {
    fn allows(&self, o: &Value) -> bool {
        o.pointer(self.pointer).and_then(Value::as_str) == Some(self.value.as_str())
    }
}

/// Both filters.
struct Both(Arc<dyn ObjectFilter>, Arc<dyn ObjectFilter>);

impl ObjectFilter for Both {
    fn allows(&self, o: &Value) -> bool {
        self.0.allows(o) && self.1.allows(o)
    }
}

/// The tenant guard, an [`Authorizer`] around the configured one (see the module docs).
pub struct TenantGuard {
    inner: Arc<dyn Authorizer>,
    index: Arc<TenantIndex>,
}

impl TenantGuard {
    /// Wraps `inner` with an empty index; the server fills it with
    /// [`TenantIndex::start`] before it serves.
    pub fn new(inner: Arc<dyn Authorizer>) -> Self {
        Self::with_index(inner, Arc::default())
    }

    pub fn with_index(inner: Arc<dyn Authorizer>, index: Arc<TenantIndex>) -> Self {
        TenantGuard { inner, index }
    }

    /// Who owns each Namespace, Network and PersistentVolume.
    pub fn index(&self) -> Arc<TenantIndex> {
        self.index.clone()
    }

    fn rule(&self, user: &UserInfo, tenant: &str, a: &Attributes) -> Rule {
        let verb = a.verb.as_str();
        let key = (a.group.as_str(), a.resource.as_str());
        let res = h8s_types::resources::find(&a.group, &a.version, &a.resource);
        let namespaced = res.map(|r| r.namespaced).unwrap_or(!a.namespace.is_empty());
        if let Some(kind) = Owned::of(key.0, key.1) {
            if a.name.is_empty() {
                return match verb {
                    "create" => Rule::Pass,
                    v if COLLECTION_VERBS.contains(&v) => Rule::Filter(Arc::new(OwnedBy {
                        kind,
                        tenant: tenant.to_string(),
                    })),
                    _ => Rule::Deny(String::new()),
                };
            }
            return if self.index.owned_by(kind, &a.name, tenant) {
                Rule::Pass
            } else {
                Rule::Deny(String::new())
            };
        }
        if namespaced {
            if a.namespace.is_empty() {
                return if COLLECTION_VERBS.contains(&verb) {
                    Rule::Filter(Arc::new(InTenantNamespace {
                        index: self.index.clone(),
                        tenant: tenant.to_string(),
                    }))
                } else {
                    Rule::Deny(String::new())
                };
            }
            return if self.index.owned_by(Owned::Namespace, &a.namespace, tenant) {
                Rule::Pass
            } else {
                Rule::Deny(String::new())
            };
        }
        if READ_ONLY.contains(&key) {
            return if READ_VERBS.contains(&verb) && a.subresource.is_empty() {
                Rule::Pass
            } else {
                Rule::Deny("tenant users may only read this cluster-scoped resource".into())
            };
        }
        if SELF_REVIEWS.contains(&key) {
            return Rule::Pass;
        }
        match key {
            ("tenancy.h8s.io", "tenants") if READ_VERBS.contains(&verb) => {
                if a.name.is_empty() && verb != "get" {
                    Rule::Filter(Arc::new(FieldIs {
                        pointer: "/metadata/name",
                        value: tenant.to_string(),
                    }))
                } else if a.name == tenant && a.subresource.is_empty() {
                    Rule::Pass
                } else {
                    Rule::Deny(String::new())
                }
            }
            ("tenancy.h8s.io", "users")
                if READ_VERBS.contains(&verb) || !a.subresource.is_empty() =>
            {
                if a.name.is_empty() && a.subresource.is_empty() && verb != "get" {
                    Rule::Filter(Arc::new(FieldIs {
                        pointer: "/spec/tenant",
                        value: tenant.to_string(),
                    }))
                } else if a.name == user.username {
                    // Its own User (and its own subresources, such as a password).
                    Rule::Pass
                } else {
                    Rule::Deny(String::new())
                }
            }
            _ => {
                Rule::Deny("this cluster-scoped resource is for cluster administrators only".into())
            }
        }
    }
}

impl Authorizer for TenantGuard {
    fn authorize(&self, user: &UserInfo, attrs: &Attributes) -> Decision {
        let Some(tenant) = confined_tenant(user) else {
            return self.inner.authorize(user, attrs);
        };
        if !attrs.resource_request {
            return self.inner.authorize(user, attrs);
        }
        let rule = self.rule(user, tenant, attrs);
        if let Rule::Deny(why) = rule {
            return Decision::Deny(why);
        }
        match (self.inner.authorize(user, attrs), rule) {
            (Decision::Deny(why), _) => Decision::Deny(why),
            (d, Rule::Pass) => d,
            (Decision::Allow, Rule::Filter(f)) => Decision::AllowFiltered(f),
            (Decision::AllowFiltered(g), Rule::Filter(f)) => {
                Decision::AllowFiltered(Arc::new(Both(f, g)))
            }
            (_, Rule::Deny(why)) => Decision::Deny(why),
        }
    }
}

#[cfg(test)]
mod tests;
