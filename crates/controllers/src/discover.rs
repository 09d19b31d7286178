//! What the API server serves, from discovery: the resources the garbage collector watches
//! and the namespace controller empties, and the kind → resource mapping of owner references.

use std::collections::HashMap;

use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope};

/// One served resource (its preferred version) and what it supports.
#[derive(Clone, Debug)]
pub struct Served {
    pub ar: ApiResource,
    pub namespaced: bool,
    pub verbs: Vec<String>,
}

impl Served {
    pub fn supports(&self, verb: &str) -> bool {
        self.verbs.iter().any(|v| v == verb)
    }

    /// `plural.group` (`deployments.apps`, `pods.`), as Kubernetes names a group resource in
    /// messages.
    pub fn group_resource(&self) -> String {
        format!("{}.{}", self.ar.plural, self.ar.group)
    }
}

/// The served resources and the kind mapping.
#[derive(Clone, Debug, Default)]
pub struct Resources {
    /// Every resource at its most stable version (client-go's `ServerPreferredResources`).
    pub preferred: Vec<Served>,
    /// (group, kind) → (plural, namespaced), over every served version.
    kinds: HashMap<(String, String), (String, bool)>,
}

impl Resources {
    /// Builds the view from a discovery run.
    pub fn from_discovery(d: &Discovery) -> Self {
        let mut out = Resources::default();
        for g in d.groups() {
            for (ar, caps) in g.resources_by_stability() {
                out.kinds.insert(
                    (ar.group.clone(), ar.kind.clone()),
                    (ar.plural.clone(), caps.scope == Scope::Namespaced),
                );
                out.preferred.push(served(ar, &caps));
            }
        }
        out.preferred
            .sort_by(|a, b| (&a.ar.group, &a.ar.plural).cmp(&(&b.ar.group, &b.ar.plural)));
        out
    }

    /// The resource an owner reference's `apiVersion` and `kind` name, at that version, and
    /// whether it is namespaced; `None` when no served resource has that kind.
    pub fn resolve(&self, api_version: &str, kind: &str) -> Option<(ApiResource, bool)> {
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let (plural, namespaced) = self.kinds.get(&(group.to_string(), kind.to_string()))?;
        Some((
            ApiResource {
                group: group.to_string(),
                version: version.to_string(),
                api_version: api_version.to_string(),
                kind: kind.to_string(),
                plural: plural.clone(),
            },
            *namespaced,
        ))
    }

    /// Resources that support every verb of `verbs`.
    pub fn supporting<'a>(&'a self, verbs: &'a [&'a str]) -> impl Iterator<Item = &'a Served> {
        self.preferred
            .iter()
            .filter(move |s| verbs.iter().all(|v| s.supports(v)))
    }
}

fn served(ar: ApiResource, caps: &ApiCapabilities) -> Served {
    Served {
        ar,
        namespaced: caps.scope == Scope::Namespaced,
        verbs: caps.operations.clone(),
    }
}

/// Runs discovery (aggregated when the server offers it, else group by group).
pub async fn discover(client: &kube::Client) -> Result<Resources, kube::Error> {
    let d = match Discovery::new(client.clone()).run_aggregated().await {
        Ok(d) => d,
        Err(e) => {
            tracing::debug!(error = %e, "aggregated discovery failed; querying group by group");
            Discovery::new(client.clone()).run().await?
        }
    };
    Ok(Resources::from_discovery(&d))
}
