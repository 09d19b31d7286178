//! Discovery: the legacy documents (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`) and
//! aggregated discovery (`apidiscovery.k8s.io` v2 and v2beta1) on `/api` and `/apis`.
//! Discovery is the same for every caller (kubectl caches it per host, not per user).

use h8s_types::resources::{self, Resource};
use http::{HeaderValue, Response};
use serde_json::{json, Value};

use crate::crd::Registry;
use crate::error::ApiError;
use crate::response::{full, json_response, Body};

/// Which aggregated discovery version an `Accept` header asks for first, if any.
fn aggregated_version(accept: &str) -> Option<&'static str> {
    for part in accept.split(',') {
        let mut params = part.split(';').map(str::trim);
        let base = params.next().unwrap_or("");
        let (mut g, mut v, mut as_) = ("", "", "");
        for p in params {
            match p.split_once('=') {
                Some(("g", x)) => g = x,
                Some(("v", x)) => v = x,
                Some(("as", x)) => as_ = x,
                _ => {}
            }
        }
        if base == "application/json"
            && g == "apidiscovery.k8s.io"
            && as_ == "APIGroupDiscoveryList"
        {
            match v {
                "v2" => return Some("v2"),
                "v2beta1" => return Some("v2beta1"),
                _ => continue,
            }
        }
        if base == "application/json" || base == "*/*" {
            return None;
        }
    }
    None
}

fn kind_ref(group: &str, version: &str, kind: &str) -> Value {
    json!({"group": group, "version": version, "kind": kind})
}

fn aggregated_resource(r: &Resource) -> Value {
    let mut v = json!({
        "resource": r.plural,
        "responseKind": kind_ref(r.group, r.version, r.kind),
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs,
    });
    if !r.short_names.is_empty() {
        v["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        v["categories"] = json!(r.categories);
    }
    if !r.subresources.is_empty() {
        v["subresources"] = Value::Array(
            r.subresources
                .iter()
                .map(|s| {
                    json!({
                        "subresource": s.name,
                        "responseKind": kind_ref(s.group, s.version, s.kind),
                        "verbs": s.verbs,
                    })
                })
                .collect(),
        );
    }
    v
}

fn aggregated_group(name: &str, versions: &[&str]) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let res: Vec<Value> = resources::in_group_version(name, v)
                .map(aggregated_resource)
                .collect();
            json!({"version": v, "resources": res, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": name, "creationTimestamp": null}, "versions": versions})
}

fn aggregated_custom_group(name: &str, versions: &[String], crds: &Registry) -> Value {
    let versions: Vec<Value> = versions
        .iter()
        .map(|v| {
            let res: Vec<Value> = crds
                .in_group_version(name, v)
                .iter()
                .map(|c| aggregated_resource(c.res))
                .collect();
            json!({"version": v, "resources": res, "freshness": "Current"})
        })
        .collect();
    json!({"metadata": {"name": name, "creationTimestamp": null}, "versions": versions})
}

fn aggregated(
    core: bool,
    ver: &str,
    crds: &Registry,
    agg: Option<&crate::aggregator::Aggregator>,
) -> Response<Body> {
    let mut items: Vec<Value> = resources::groups()
        .iter()
        .filter(|g| g.name.is_empty() == core)
        .map(|g| aggregated_group(g.name, g.versions))
        .collect();
    if !core {
        items.push(crate::metrics_api::aggregated_group());
        // Custom resource groups follow the built-in ones, by name.
        items.extend(
            crds.groups()
                .iter()
                .map(|(g, vs)| aggregated_custom_group(g, vs, crds)),
        );
        // Then the groups of service-backed APIServices.
        if let Some(a) = agg {
            items.extend(
                a.groups(crds)
                    .iter()
                    .map(|(g, vs)| crate::aggregator::aggregated_group(g, vs)),
            );
        }
    }
    let doc = json!({
        "kind": "APIGroupDiscoveryList",
        "apiVersion": format!("apidiscovery.k8s.io/{ver}"),
        "metadata": {},
        "items": items,
    });
    let body = h8s_types::wire::to_vec(&doc);
    let etag = format!("\"{:016x}\"", fnv(&body));
    let mut r = Response::new(full(body));
    let ct = format!("application/json;g=apidiscovery.k8s.io;v={ver};as=APIGroupDiscoveryList");
    if let Ok(h) = HeaderValue::from_str(&ct) {
        r.headers_mut().insert(http::header::CONTENT_TYPE, h);
    }
    r.headers_mut()
        .insert(http::header::VARY, HeaderValue::from_static("Accept"));
    if let Ok(h) = HeaderValue::from_str(&etag) {
        r.headers_mut().insert(http::header::ETAG, h);
    }
    r
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, x| {
        (h ^ *x as u64).wrapping_mul(0x100000001b3)
    })
}

fn with_vary(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(http::header::VARY, HeaderValue::from_static("Accept"));
    r
}

/// `/api`.
pub fn legacy_root(accept: &str, crds: &Registry) -> Response<Body> {
    if let Some(v) = aggregated_version(accept) {
        return aggregated(true, v, crds, None);
    }
    with_vary(json_response(
        200,
        &json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        }),
    ))
}

fn group_doc<S: AsRef<str>>(name: &str, versions: &[S]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| {
            let v = v.as_ref();
            json!({"groupVersion": resources::group_version(name, v), "version": v})
        })
        .collect();
    json!({
        "name": name,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// `/apis`.
pub fn group_list(
    accept: &str,
    crds: &Registry,
    agg: &crate::aggregator::Aggregator,
) -> Response<Body> {
    if let Some(v) = aggregated_version(accept) {
        return aggregated(false, v, crds, Some(agg));
    }
    let mut groups: Vec<Value> = resources::groups()
        .iter()
        .filter(|g| !g.name.is_empty())
        .map(|g| group_doc(g.name, g.versions))
        .collect();
    groups.push(crate::metrics_api::group_doc());
    groups.extend(crds.groups().iter().map(|(g, vs)| group_doc(g, vs)));
    groups.extend(
        agg.groups(crds)
            .iter()
            .map(|(g, vs)| crate::aggregator::legacy_group(g, vs)),
    );
    with_vary(json_response(
        200,
        &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
    ))
}

/// `/apis/<group>`.
pub fn group(
    name: &str,
    crds: &Registry,
    agg: &crate::aggregator::Aggregator,
) -> Result<Response<Body>, ApiError> {
    if name == crate::metrics_api::GROUP {
        let mut doc = crate::metrics_api::group_doc();
        doc["kind"] = json!("APIGroup");
        doc["apiVersion"] = json!("v1");
        return Ok(json_response(200, &doc));
    }
    let mut doc = match resources::groups()
        .iter()
        .find(|g| g.name == name && !name.is_empty())
    {
        Some(g) => group_doc(g.name, g.versions),
        None => match crds.groups().into_iter().find(|(g, _)| g == name) {
            Some((_, vs)) => group_doc(name, &vs),
            None => agg.group_doc(name, crds).ok_or_else(ApiError::no_route)?,
        },
    };
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Ok(json_response(200, &doc))
}

/// `/api/v1`, `/apis/<g>/<v>`: the APIResourceList.
pub fn group_version(
    group: &str,
    version: &str,
    crds: &Registry,
) -> Result<Response<Body>, ApiError> {
    if group == crate::metrics_api::GROUP && version == crate::metrics_api::VERSION {
        return Ok(json_response(200, &crate::metrics_api::resource_list()));
    }
    let doc = match resources::api_resource_list(group, version) {
        Some(d) => d,
        None => {
            let crs = crds.in_group_version(group, version);
            if crs.is_empty() {
                return Err(ApiError::no_route());
            }
            let list: Vec<Value> = crs
                .iter()
                .flat_map(|c| resources::api_resources(c.res))
                .collect();
            json!({
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": resources::group_version(group, version),
                "resources": list,
            })
        }
    };
    Ok(json_response(200, &doc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation() {
        let d = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json";
        assert_eq!(aggregated_version(d), Some("v2"));
        assert_eq!(
            aggregated_version("application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList,application/json"),
            Some("v2beta1")
        );
        assert_eq!(aggregated_version("application/json, */*"), None);
        let r = legacy_root(d, &Registry::default());
        assert_eq!(
            r.headers()[http::header::CONTENT_TYPE],
            "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList"
        );
    }
}
