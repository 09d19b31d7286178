//! The tenancy kinds of `tenancy.h8s.io/v1`, both cluster-scoped: `Tenant` (a
//! Keystone project) and `User` (the seeds' User kind). Passwords are not part of
//! either: they are set through the `users/password` subresource and kept as an
//! Argon2id hash that no read returns.
//!
//! ```yaml
//! apiVersion: tenancy.h8s.io/v1
//! kind: User
//! metadata: {name: alice}
//! spec: {tenant: acme, displayName: Alice, email: alice@example.com}
//! ```

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ListMeta, ObjectMeta};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// The API group of the tenancy kinds.
pub const GROUP: &str = "tenancy.h8s.io";
/// Its only version.
pub const VERSION: &str = "v1";
/// `tenancy.h8s.io/v1`.
pub const API_VERSION: &str = "tenancy.h8s.io/v1";
/// The roles a user may hold in its tenant (Keystone's bootstrap roles).
pub const ROLES: &[&str] = &["admin", "member", "reader"];
/// The role a user gets when none is named.
pub const DEFAULT_ROLE: &str = "member";
/// The kind of the `users/password` subresource's request and answer.
pub const PASSWORD_KIND: &str = "UserPassword";

/// A tenant: the unit of isolation (a Keystone project).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tenant {
    /// `tenancy.h8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `Tenant`.
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata (cluster-scoped).
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What the operator asked for.
    #[serde(default)]
    pub spec: TenantSpec,
    /// What the server made of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<TenantStatus>,
}

/// The desired state of a [`Tenant`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantSpec {
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// False disables every user of the tenant (defaults to true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// The tenant-wide quota across all its namespaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota: Option<TenantQuota>,
}

/// A tenant-wide quota, shaped like a ResourceQuota's spec.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantQuota {
    /// Resource name → quantity (`pods: "10"`, `requests.cpu: "4"`).
    #[serde(default)]
    pub hard: BTreeMap<String, String>,
}

/// The observed state of a [`Tenant`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantStatus {
    /// `Active` or `Terminating`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// Usage against `spec.quota.hard`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub used: BTreeMap<String, String>,
}

/// A user of one tenant.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// `tenancy.h8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `User`.
    #[serde(default)]
    pub kind: String,
    /// Standard object metadata (cluster-scoped); the name is the login name.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// Who the user is.
    #[serde(default)]
    pub spec: UserSpec,
}

/// The description of a [`User`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserSpec {
    /// The tenant the user belongs to (immutable).
    #[serde(default)]
    pub tenant: String,
    /// A human-readable name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// E-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Extra groups the user is in (not `system:` or `h8s:` ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Roles in the tenant: `admin`, `member`, `reader` (default `member`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// False: the user cannot log in and its tokens stop working (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl UserSpec {
    /// True unless disabled.
    pub fn is_enabled(&self) -> bool {
        self.enabled != Some(false)
    }
}

/// A list of Tenants.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenantList {
    /// List metadata.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The tenants.
    #[serde(default)]
    pub items: Vec<Tenant>,
}

/// A list of Users.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserList {
    /// List metadata.
    #[serde(default)]
    pub metadata: ListMeta,
    /// The users.
    #[serde(default)]
    pub items: Vec<User>,
}

/// Defaults on every write: `User.spec.enabled = true`, `roles = [member]`;
/// `Tenant.spec.enabled = true`.
pub(crate) fn default(kind: &str, obj: &mut Value) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    let spec = map
        .entry("spec")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(spec) = spec.as_object_mut() else {
        return;
    };
    spec.entry("enabled").or_insert(json!(true));
    if kind == "User" {
        let empty = spec
            .get("roles")
            .and_then(Value::as_array)
            .is_none_or(Vec::is_empty);
        if empty {
            spec.insert("roles".into(), json!([DEFAULT_ROLE]));
        }
    }
}

const REF: &str = "#/components/schemas/";

/// The OpenAPI definitions of the tenancy kinds: `(definition name, schema)` and the
/// kinds they describe, for `crate::schema`.
pub(crate) fn schemas() -> Vec<(String, Option<&'static str>, Value)> {
    let type_meta = |kind_doc: &str| {
        json!({
            "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
            "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
            "metadata": {"allOf": [{"$ref": format!("{REF}io.k8s.apimachinery.pkg.apis.meta.v1.{kind_doc}")}], "description": "Standard object's metadata."},
        })
    };
    let gvk = |k: &str| json!([{"group": GROUP, "version": VERSION, "kind": k}]);
    let with = |mut base: Value, extra: Value| {
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        base
    };
    let p = "io.h8s.api.tenancy.v1";
    let list = |kind: &str| {
        json!({
            "description": format!("{kind}List is a list of {kind}s."),
            "type": "object",
            "required": ["items"],
            "properties": with(type_meta("ListMeta"), json!({
                "items": {"description": format!("Items is the list of {kind}s."), "type": "array", "items": {"$ref": format!("{REF}{p}.{kind}")}},
            })),
            "x-kubernetes-group-version-kind": gvk(&format!("{kind}List")),
        })
    };
    vec![
        (
            format!("{p}.Tenant"),
            Some("Tenant"),
            json!({
                "description": "Tenant is a unit of isolation (an h8s kind, a Keystone project): its users, namespaces, networks and volumes are invisible to other tenants.",
                "type": "object",
                "properties": with(type_meta("ObjectMeta"), json!({
                    "spec": {"allOf": [{"$ref": format!("{REF}{p}.TenantSpec")}], "description": "Spec is the desired state of the tenant.", "default": {}},
                    "status": {"allOf": [{"$ref": format!("{REF}{p}.TenantStatus")}], "description": "Status is the observed state of the tenant.", "default": {}},
                })),
                "x-kubernetes-group-version-kind": gvk("Tenant"),
            }),
        ),
        (
            format!("{p}.TenantSpec"),
            None,
            json!({
                "description": "TenantSpec is the desired state of a Tenant.",
                "type": "object",
                "properties": {
                    "displayName": {"description": "DisplayName is a human-readable name of the tenant.", "type": "string"},
                    "description": {"description": "Description is free text about the tenant.", "type": "string"},
                    "enabled": {"description": "Enabled false keeps every user of the tenant from logging in and ends their tokens. Defaults to true.", "type": "boolean"},
                    "quota": {"allOf": [{"$ref": format!("{REF}{p}.TenantQuota")}], "description": "Quota is the tenant-wide quota across all its namespaces."},
                },
            }),
        ),
        (
            format!("{p}.TenantQuota"),
            None,
            json!({
                "description": "TenantQuota is a tenant-wide quota, shaped like a ResourceQuota's spec.",
                "type": "object",
                "properties": {
                    "hard": {"description": "Hard is the set of enforced hard limits for each named resource (pods, requests.cpu, requests.memory, requests.storage, count/<resource>).", "type": "object", "additionalProperties": {"type": "string"}},
                },
            }),
        ),
        (
            format!("{p}.TenantStatus"),
            None,
            json!({
                "description": "TenantStatus is the observed state of a Tenant.",
                "type": "object",
                "properties": {
                    "phase": {"description": "Phase is Active or Terminating.", "type": "string"},
                    "used": {"description": "Used is the current usage against the quota.", "type": "object", "additionalProperties": {"type": "string"}},
                },
            }),
        ),
        (
            format!("{p}.TenantList"),
            Some("TenantList"),
            list("Tenant"),
        ),
        (
            format!("{p}.User"),
            Some("User"),
            json!({
                "description": "User is a person or robot of one tenant (an h8s kind). The password is set through the users/password subresource (or `h8s user passwd`) and is never returned by any read.",
                "type": "object",
                "properties": with(type_meta("ObjectMeta"), json!({
                    "spec": {"allOf": [{"$ref": format!("{REF}{p}.UserSpec")}], "description": "Spec describes the user.", "default": {}},
                })),
                "x-kubernetes-group-version-kind": gvk("User"),
            }),
        ),
        (
            format!("{p}.UserSpec"),
            None,
            json!({
                "description": "UserSpec describes a User.",
                "type": "object",
                "required": ["tenant"],
                "properties": {
                    "tenant": {"description": "Tenant is the name of the Tenant the user belongs to. Cannot be changed.", "type": "string"},
                    "displayName": {"description": "DisplayName is a human-readable name of the user.", "type": "string"},
                    "email": {"description": "Email is the user's e-mail address.", "type": "string"},
                    "groups": {"description": "Groups the user is in, besides its tenant's group h8s:tenant:<tenant> and system:authenticated. Names starting with system: or h8s: are reserved.", "type": "array", "items": {"type": "string", "default": ""}},
                    "roles": {"description": "Roles of the user in its tenant: admin, member or reader. Defaults to [member]. The admin role in the cloud-admin tenant makes a cluster admin.", "type": "array", "items": {"type": "string", "default": ""}},
                    "enabled": {"description": "Enabled false keeps the user from logging in and ends its tokens at once. Defaults to true.", "type": "boolean"},
                },
            }),
        ),
        (format!("{p}.UserList"), Some("UserList"), list("User")),
        (
            format!("{p}.{PASSWORD_KIND}"),
            Some(PASSWORD_KIND),
            json!({
                "description": "UserPassword sets a User's password (POST or PUT to users/<name>/password). The password is stored only as an Argon2id hash and never returned; the answer carries no password.",
                "type": "object",
                "properties": {
                    "apiVersion": {"description": "APIVersion defines the versioned schema of this representation of an object.", "type": "string"},
                    "kind": {"description": "Kind is a string value representing the REST resource this object represents.", "type": "string"},
                    "password": {"description": "Password is the new password (8 to 256 bytes). Write-only.", "type": "string"},
                },
                "x-kubernetes-group-version-kind": gvk(PASSWORD_KIND),
            }),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_round_trip() {
        let mut u = json!({"apiVersion": API_VERSION, "kind": "User", "metadata": {"name": "alice"}, "spec": {"tenant": "acme"}});
        default("User", &mut u);
        assert_eq!(u["spec"]["enabled"], json!(true));
        assert_eq!(u["spec"]["roles"], json!(["member"]));
        let typed: User = serde_json::from_value(u).unwrap();
        assert!(typed.spec.is_enabled());
        assert_eq!(typed.spec.tenant, "acme");
        let mut t = json!({"spec": {"enabled": false}});
        default("Tenant", &mut t);
        assert_eq!(t["spec"]["enabled"], json!(false));
        assert!(t["spec"].get("roles").is_none());
    }

    #[test]
    fn validation() {
        let users = crate::resources::find(GROUP, VERSION, "users").unwrap();
        let tenants = crate::resources::find(GROUP, VERSION, "tenants").unwrap();
        let mut ok = json!({"apiVersion": API_VERSION, "kind": "User", "metadata": {"name": "alice"},
            "spec": {"tenant": "acme", "email": "a@example.com", "groups": ["dev"]}});
        default("User", &mut ok);
        crate::validation::validate_create(users, &ok).unwrap();
        let bad = json!({"apiVersion": API_VERSION, "kind": "User", "metadata": {"name": "bob"},
            "spec": {"groups": ["system:masters", "h8s:tenant:other", "dev", "dev"], "roles": ["owner"], "email": "nope"}});
        let errs = crate::validation::validate_create(users, &bad).unwrap_err();
        let fields: Vec<String> = errs.iter().map(|e| e.field.clone()).collect();
        for f in [
            "spec.tenant",
            "spec.groups[0]",
            "spec.groups[1]",
            "spec.groups[3]",
            "spec.roles[0]",
            "spec.email",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
        }
        let mut moved = ok.clone();
        moved["spec"]["tenant"] = json!("other");
        let errs = crate::validation::validate_update(users, &moved, &ok).unwrap_err();
        assert!(errs.iter().any(|e| e.field == "spec.tenant"));
        let t = json!({"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": "acme"},
            "spec": {"quota": {"hard": {"pods": "10", "requests.cpu": "4"}}}});
        crate::validation::validate_create(tenants, &t).unwrap();
        let t = json!({"apiVersion": API_VERSION, "kind": "Tenant", "metadata": {"name": "Acme.Corp"},
            "spec": {"quota": {"hard": {"pods": "ten"}}}});
        let errs = crate::validation::validate_create(tenants, &t).unwrap_err();
        assert_eq!(errs.len(), 2, "{errs:?}");
    }

    #[test]
    fn schemas_tables_and_discovery() {
        let s = crate::schema::schemas();
        assert!(s.kind(GROUP, VERSION, "User").is_some());
        assert!(s.kind(GROUP, VERSION, "TenantList").is_some());
        let users = crate::resources::find(GROUP, VERSION, "users").unwrap();
        assert!(users.subresource("password").is_some());
        assert!(!users.namespaced);
        let u = json!({"apiVersion": API_VERSION, "kind": "User", "metadata": {"name": "alice", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"tenant": "acme", "roles": ["admin"], "enabled": false}});
        let t = crate::table::table(
            users,
            &[u],
            &json!({}),
            crate::table::IncludeObject::None,
            std::time::SystemTime::now(),
        );
        let row = &t["rows"][0]["cells"];
        assert_eq!(row[0], json!("alice"));
        assert_eq!(row[1], json!("acme"));
        assert_eq!(row[3], json!("admin"));
        assert_eq!(row[4], json!(false));
    }
}
