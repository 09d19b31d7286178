//! URL → what the request is about (Kubernetes' `RequestInfo`).

use h8s_types::resources::{self, Resource};

use crate::crd::{CustomResource, Registry};
use crate::error::Subject;
use crate::strategy::{self, StrategyRef};
use crate::util::percent_decode;
use std::sync::Arc;

/// A resource request: which resource, where, and which object or subresource.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static Resource,
    /// The namespace from the URL (`None`: cluster-scoped, or all namespaces).
    pub ns: Option<String>,
    pub name: Option<String>,
    pub sub: Option<String>,
    /// The path used the deprecated `/watch/` prefix.
    pub watch_path: bool,
    /// The custom resource version when `res` is one.
    pub cr: Option<Arc<CustomResource>>,
}

impl Target {
    /// What an error about object `name` of this resource names.
    pub fn subject<'a>(&'a self, name: &'a str) -> Subject<'a> {
        Subject {
            group: self.res.group,
            resource: self.res.plural,
            name,
        }
    }

    /// The registry strategy of the resource.
    pub fn strategy(&self) -> StrategyRef {
        match &self.cr {
            Some(c) => StrategyRef::Custom(c.clone()),
            None => StrategyRef::Static(strategy::of(self.res)),
        }
    }
}

/// Every path the server answers.
#[derive(Debug, Clone)]
pub enum Route {
    Version,
    Health(&'static str),
    Metrics,
    /// `/api`
    LegacyRoot,
    /// `/apis`
    GroupList,
    /// `/apis/<group>`
    Group(String),
    /// `/api/v1`, `/apis/<g>/<v>`
    GroupVersion(String, String),
    OpenApiV2,
    OpenApiV3Index,
    /// `/openapi/v3/<api/v1 | apis/g/v>`
    OpenApiV3(String),
    Resource(Target),
    /// `metrics.k8s.io` (served by [`crate::metrics_api`], not the registry).
    MetricsApi(crate::metrics_api::Target),
    /// A known group version but an unknown resource, or any other path.
    NotFound,
}

const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Routes a path (already without the query string); custom resources come from `crds`.
pub fn route(path: &str, crds: &Registry) -> Route {
    let trimmed = path.trim_end_matches('/');
    match trimmed {
        "/version" => return Route::Version,
        "/healthz" => return Route::Health("healthz"),
        "/livez" => return Route::Health("livez"),
        "/readyz" => return Route::Health("readyz"),
        "/metrics" => return Route::Metrics,
        "/api" => return Route::LegacyRoot,
        "/apis" => return Route::GroupList,
        "/openapi/v2" | "/swagger-2.0.0.pb-v1" | "/swagger.json" => return Route::OpenApiV2,
        "/openapi/v3" => return Route::OpenApiV3Index,
        _ => {}
    }
    if let Some(rest) = trimmed.strip_prefix("/openapi/v3/") {
        return Route::OpenApiV3(rest.to_string());
    }
    if trimmed.starts_with("/healthz/")
        || trimmed.starts_with("/livez/")
        || trimmed.starts_with("/readyz/")
    {
        return Route::Health("healthz");
    }
    let parts: Vec<String> = trimmed
        .split('/')
        .skip(1)
        .map(|p| percent_decode(p, false))
        .collect();
    let (group, version, rest) = match parts.first().map(String::as_str) {
        Some("api") if parts.len() >= 2 => (String::new(), parts[1].clone(), &parts[2..]),
        Some("apis") if parts.len() == 2 => return Route::Group(parts[1].clone()),
        Some("apis") if parts.len() >= 3 => (parts[1].clone(), parts[2].clone(), &parts[3..]),
        _ => return Route::NotFound,
    };
    if rest.is_empty() {
        return Route::GroupVersion(group, version);
    }
    if group == crate::metrics_api::GROUP {
        let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
        return crate::metrics_api::route(&version, &rest)
            .map_or(Route::NotFound, Route::MetricsApi);
    }
    if !resources::serves_group_version(&group, &version)
        && !crds.serves_group_version(&group, &version)
    {
        return Route::NotFound;
    }
    let mut rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    let mut watch_path = false;
    if rest.first() == Some(&"watch") {
        watch_path = true;
        rest.remove(0);
    }
    let mut ns = None;
    if rest.first() == Some(&"namespaces") && rest.len() > 1 {
        let is_ns_sub = rest.len() > 2 && NAMESPACE_SUBRESOURCES.contains(&rest[2]);
        if rest.len() > 2 && !is_ns_sub {
            ns = Some(rest[1].to_string());
            rest.drain(0..2);
        }
    }
    let Some(plural) = rest.first() else {
        return Route::NotFound;
    };
    let (res, cr) = match resources::find(&group, &version, plural) {
        Some(r) => (r, None),
        None => match crds.find(&group, &version, plural) {
            Some(c) => (c.res, Some(c)),
            None => return Route::NotFound,
        },
    };
    if ns.is_some() && !res.namespaced {
        return Route::NotFound;
    }
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).map(|s| s.to_string());
    // Names and namespaces become store keys: a decoded '/' (or an empty, '.' or '..'
    // segment) could name a key of another scope, so such paths do not exist.
    let bad = |s: &str| s.is_empty() || s.contains('/') || s == "." || s == "..";
    if ns.as_deref().is_some_and(bad) || name.as_deref().is_some_and(bad) {
        return Route::NotFound;
    }
    if rest.len() > 3 && sub.as_deref() != Some("proxy") {
        return Route::NotFound;
    }
    Route::Resource(Target {
        res,
        ns,
        name,
        sub,
        watch_path,
        cr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(p: &str) -> Target {
        match route(p, &Registry::default()) {
            Route::Resource(t) => t,
            other => panic!("{p}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        let x = t("/api/v1/namespaces/default/pods/p/status");
        assert_eq!(x.res.plural, "pods");
        assert_eq!(x.ns.as_deref(), Some("default"));
        assert_eq!(x.name.as_deref(), Some("p"));
        assert_eq!(x.sub.as_deref(), Some("status"));
        let x = t("/api/v1/namespaces/foo");
        assert_eq!(x.res.plural, "namespaces");
        assert_eq!(x.name.as_deref(), Some("foo"));
        let x = t("/api/v1/namespaces/foo/finalize");
        assert_eq!(x.res.plural, "namespaces");
        assert_eq!(x.sub.as_deref(), Some("finalize"));
        let x = t("/apis/apps/v1/deployments");
        assert!(x.ns.is_none());
        let x = t("/api/v1/watch/namespaces/d/pods");
        assert!(x.watch_path);
        assert!(
            matches!(route("/api/v1", &Registry::default()), Route::GroupVersion(g, v) if g.is_empty() && v == "v1")
        );
        assert!(matches!(
            route("/apis/apps/v1/nothing", &Registry::default()),
            Route::NotFound
        ));
        assert!(matches!(
            route("/api/v1/namespaces/x/nodes", &Registry::default()),
            Route::NotFound
        ));
        assert!(matches!(
            route("/version/", &Registry::default()),
            Route::Version
        ));
        assert!(
            matches!(route("/apis/apps", &Registry::default()), Route::Group(g) if g == "apps")
        );
        assert!(matches!(
            route(
                "/api/v1/namespaces/default/configmaps/a%2Fb",
                &Registry::default()
            ),
            Route::NotFound
        ));
        assert!(matches!(
            route("/api/v1/namespaces/a%2Fb/configmaps", &Registry::default()),
            Route::NotFound
        ));
        assert!(matches!(
            route(
                "/api/v1/namespaces/default/configmaps/..",
                &Registry::default()
            ),
            Route::NotFound
        ));
    }
}
