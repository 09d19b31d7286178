//! User impersonation (`kubectl --as`, `--as-group`, `--as-uid`), as kube-apiserver's
//! impersonation filter: the `Impersonate-User`, `Impersonate-Group`, `Impersonate-Uid`
//! and `Impersonate-Extra-<key>` headers replace the caller's identity when the caller may
//! `impersonate` each of them (users, groups, ServiceAccounts, uids, userextras/<key>).

use http::HeaderMap;

use crate::auth::{Attributes, Authorizer, UserInfo, AUTHENTICATED_GROUP};
use crate::error::{ApiError, Subject};

const SA_PREFIX: &str = "system:serviceaccount:";

fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
    h.get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect()
}

/// The identity the request acts as: `user` itself without impersonation headers, the
/// impersonated one when `user` may impersonate it, else a 403 (400 for headers that
/// impersonate groups or extras without a user).
pub fn impersonate(
    authz: &dyn Authorizer,
    user: UserInfo,
    h: &HeaderMap,
) -> Result<UserInfo, ApiError> {
    let name = h
        .get("impersonate-user")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let groups = values(h, "impersonate-group");
    let uid = h.get("impersonate-uid").and_then(|v| v.to_str().ok());
    let extras: Vec<(String, Vec<&str>)> = h
        .keys()
        .filter_map(|k| k.as_str().strip_prefix("impersonate-extra-"))
        .map(|k| (k.to_string(), values(h, &format!("impersonate-extra-{k}"))))
        .collect();
    let Some(name) = name else {
        if groups.is_empty() && uid.is_none() && extras.is_empty() {
            return Ok(user);
        }
        return Err(ApiError::bad_request(
            "impersonating groups, a uid or extra fields requires impersonating a user",
        ));
    };
    let check = |group: &str, resource: &str, sub: &str, ns: &str, n: &str| {
        let a = Attributes {
            verb: "impersonate".into(),
            group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: n.into(),
            resource_request: true,
            ..Default::default()
        };
        match authz.authorize(&user, &a) {
            crate::auth::Decision::Deny(why) => {
                let msg = super::forbidden_message(&user, &a, &why);
                Err(ApiError::forbidden(msg).about(&Subject {
                    group,
                    resource,
                    name: n,
                }))
            }
            _ => Ok(()),
        }
    };
    let mut out = UserInfo {
        username: name.clone(),
        ..Default::default()
    };
    match name.strip_prefix(SA_PREFIX).and_then(|r| r.split_once(':')) {
        Some((ns, sa)) => {
            check("", "serviceaccounts", "", ns, sa)?;
            if groups.is_empty() {
                out.groups = vec![
                    "system:serviceaccounts".into(),
                    format!("system:serviceaccounts:{ns}"),
                ];
            }
        }
        None => check("", "users", "", "", &name)?,
    }
    for g in &groups {
        check("", "groups", "", "", g)?;
        out.groups.push(g.to_string());
    }
    if let Some(u) = uid {
        check("authentication.k8s.io", "uids", "", "", u)?;
        out.uid = u.to_string();
    }
    for (k, vs) in extras {
        for v in &vs {
            check("authentication.k8s.io", "userextras", &k, "", v)?;
        }
        out.extra
            .insert(k, vs.iter().map(|v| v.to_string()).collect());
    }
    if out.username != "system:anonymous" && !out.groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
        out.groups.push(AUTHENTICATED_GROUP.into());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Decision;

    /// Allows `boss` everything, nobody else anything.
    struct Boss;
    impl Authorizer for Boss {
        fn authorize(&self, u: &UserInfo, _: &Attributes) -> Decision {
            if u.username == "boss" {
                Decision::Allow
            } else {
                Decision::Deny(String::new())
            }
        }
    }

    fn user(n: &str) -> UserInfo {
        UserInfo {
            username: n.into(),
            groups: vec![AUTHENTICATED_GROUP.into()],
            ..Default::default()
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn impersonation_needs_the_verb() {
        let none = impersonate(&Boss, user("x"), &HeaderMap::new()).unwrap();
        assert_eq!(none.username, "x");
        let h = headers(&[
            ("Impersonate-User", "alice"),
            ("Impersonate-Group", "devs"),
            ("Impersonate-Extra-Scopes", "a"),
        ]);
        let u = impersonate(&Boss, user("boss"), &h).unwrap();
        assert_eq!(u.username, "alice");
        assert_eq!(u.groups, ["devs", "system:authenticated"]);
        assert_eq!(u.extra["scopes"], ["a"]);
        let e = impersonate(&Boss, user("eve"), &h).unwrap_err();
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            r#"users "alice" is forbidden: User "eve" cannot impersonate resource "users" in API group "" at the cluster scope"#
        );
        let sa = headers(&[("Impersonate-User", "system:serviceaccount:ns1:robot")]);
        let u = impersonate(&Boss, user("boss"), &sa).unwrap();
        assert_eq!(
            u.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ns1",
                "system:authenticated"
            ]
        );
        let e = impersonate(&Boss, user("eve"), &sa).unwrap_err();
        assert!(
            e.message
                .starts_with(r#"serviceaccounts "robot" is forbidden"#),
            "{}",
            e.message
        );
        let bad = headers(&[("Impersonate-Group", "devs")]);
        assert_eq!(
            impersonate(&Boss, user("boss"), &bad).unwrap_err().code,
            400
        );
    }
}
