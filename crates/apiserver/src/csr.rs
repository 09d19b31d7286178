//! CertificateSigningRequests signed by the cluster CA, and the automatic approval of
//! node client certificates, as kube-controller-manager's `csrsigning` and
//! `csrapproving` controllers do for the two client signers:
//!
//! - `kubernetes.io/kube-apiserver-client`: any client certificate (approval is the
//!   privileged act);
//! - `kubernetes.io/kube-apiserver-client-kubelet`: a node's client certificate
//!   (`CN=system:node:NAME`, `O=system:nodes`, no subject alternative names);
//! - `kubernetes.io/kubelet-serving`: a node agent's serving certificate (same subject,
//!   DNS and IP subject alternative names only, `server auth`).
//!
//! [`ClusterCaSigner`] is the registry's [`CsrSigner`]: an approved request of those
//! signers gets `status.certificate`, valid for `spec.expirationSeconds` (at most a year).
//! [`CsrApprover`] watches CSRs and approves, through the API (the `approval`
//! subresource, as `system:kube-controller-manager`), kubelet client requests made with
//! a bootstrap token (group `system:bootstrappers`) or by a node renewing its own
//! certificate, when the authorizer allows the requester `create` on
//! `certificatesigningrequests/nodeclient` (or `selfnodeclient`); and kubelet serving
//! requests a node makes for itself (requester `system:node:NAME` in `system:nodes`, the
//! subject's CN the same). Upstream leaves serving requests to an operator because their
//! names are not checked; here the API server does not rely on those names: it accepts an
//! agent only with the serving certificate of the Node it dials (`nodeproxy`), so a node
//! naming another's address gains nothing.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use futures::future::BoxFuture;
use futures::StreamExt;
use serde_json::{json, Value};
use x509_parser::prelude::FromDer;

use crate::auth::{Attributes, ConnInfo, UserInfo, BOOTSTRAPPERS_GROUP};
use crate::error::{ApiError, Cause};
use crate::obj;
use crate::pki::{Pki, CLIENT_CERT_LIFETIME};
use crate::seams::CsrSigner;
use crate::state::Api;

/// The signer of API client certificates.
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// The signer of kubelet (node) client certificates.
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of kubelet (node agent) serving certificates.
pub const KUBELET_SERVING: &str = "kubernetes.io/kubelet-serving";
/// The group of nodes.
pub const NODES_GROUP: &str = "system:nodes";
/// The prefix of a node's user name.
pub const NODE_USER_PREFIX: &str = "system:node:";

/// The most names a kubelet serving certificate carries.
const MAX_SERVING_SANS: usize = 32;

/// The shortest certificate a CSR can ask for (Kubernetes: ten minutes).
const MIN_EXPIRATION: Duration = Duration::from_secs(600);

/// The subject and key of a parsed, signature-checked PKCS#10 request.
pub(crate) struct ParsedCsr {
    pub common_name: String,
    pub organizations: Vec<String>,
    /// Whether it asks for any subject alternative name.
    pub has_sans: bool,
    /// The IP subject alternative names it asks for.
    pub ips: Vec<std::net::IpAddr>,
    /// The DNS subject alternative names it asks for.
    pub dns: Vec<String>,
    /// Whether it asks for another kind of name (email, URI, …).
    pub other_sans: bool,
    pub params: rcgen::CertificateSigningRequestParams,
}

fn invalid(name: &str, field: &str, msg: impl Into<String>) -> ApiError {
    let msg = msg.into();
    ApiError::invalid(
        "CertificateSigningRequest",
        "certificates.k8s.io",
        name,
        vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: format!("Invalid value: {msg}"),
            field: field.into(),
        }],
    )
}

/// Parses `spec.request` (base64 of a PEM `CERTIFICATE REQUEST`) and checks its
/// signature.
pub(crate) fn parse_request(csr: &Value) -> Result<ParsedCsr, ApiError> {
    let name = obj::name(csr);
    let field = "spec.request";
    let b64 = obj::at(csr, field).and_then(Value::as_str).unwrap_or("");
    let pem_bytes = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|_| invalid(name, field, "not base64"))?;
    let pem = std::str::from_utf8(&pem_bytes)
        .map_err(|_| invalid(name, field, "not a PEM CERTIFICATE REQUEST"))?;
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|_| invalid(name, field, "not a PEM CERTIFICATE REQUEST"))?;
    if p.label != "CERTIFICATE REQUEST" && p.label != "NEW CERTIFICATE REQUEST" {
        return Err(invalid(name, field, "not a PEM CERTIFICATE REQUEST"));
    }
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&p.contents)
            .map_err(|_| invalid(name, field, "not a PKCS#10 certificate request"))?;
    let info = &req.certification_request_info;
    // rcgen keeps one value per attribute type: refuse what it would silently merge.
    let mut seen = std::collections::HashSet::new();
    for rdn in info.subject.iter() {
        for a in rdn.iter() {
            if !seen.insert(a.attr_type().to_id_string()) {
                return Err(invalid(
                    name,
                    field,
                    "a subject with a repeated attribute (e.g. two O) is not supported",
                ));
            }
        }
    }
    let common_name = info
        .subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .unwrap_or("")
        .to_string();
    let organizations = info
        .subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    let (mut ips, mut dns, mut other_sans) = (Vec::new(), Vec::new(), false);
    for e in req.requested_extensions().into_iter().flatten() {
        if let x509_parser::extensions::ParsedExtension::SubjectAlternativeName(s) = e {
            for g in &s.general_names {
                use x509_parser::extensions::GeneralName as G;
                match g {
                    G::DNSName(d) => dns.push(d.to_string()),
                    G::IPAddress(b) => match <[u8; 4]>::try_from(*b) {
                        Ok(v4) => ips.push(std::net::IpAddr::from(v4)),
                        Err(_) => match <[u8; 16]>::try_from(*b) {
                            Ok(v6) => ips.push(std::net::IpAddr::from(v6)),
                            Err(_) => other_sans = true,
                        },
                    },
                    _ => other_sans = true,
                }
            }
        }
    }
    let has_sans = !ips.is_empty() || !dns.is_empty() || other_sans;
    let params = rcgen::CertificateSigningRequestParams::from_der(&p.contents.clone().into())
        .map_err(|e| invalid(name, field, format!("unusable certificate request: {e}")))?;
    Ok(ParsedCsr {
        common_name,
        organizations,
        has_sans,
        ips,
        dns,
        other_sans,
        params,
    })
}

fn usages(csr: &Value) -> Vec<String> {
    obj::at(csr, "spec.usages")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Checks a request against its signer's rules (Kubernetes' `kube-apiserver-client`
/// and `kube-apiserver-client-kubelet` signers): usages within digital signature, key
/// encipherment and client auth, with client auth; for the kubelet signer, a node's
/// subject and no alternative names.
pub(crate) fn check_for_signer(csr: &Value, p: &ParsedCsr) -> Result<(), ApiError> {
    let name = obj::name(csr);
    let signer = obj::at(csr, "spec.signerName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let u = usages(csr);
    let auth = if signer == KUBELET_SERVING {
        "server auth"
    } else {
        "client auth"
    };
    let allowed = ["digital signature", "key encipherment", auth];
    if let Some(bad) = u.iter().find(|x| !allowed.contains(&x.as_str())) {
        return Err(invalid(
            name,
            "spec.usages",
            format!("{bad:?} is not allowed for signer {signer}"),
        ));
    }
    if !u.iter().any(|x| x == auth) {
        return Err(invalid(
            name,
            "spec.usages",
            format!("{auth:?} is required"),
        ));
    }
    if p.common_name.is_empty() {
        return Err(invalid(
            name,
            "spec.request",
            "the subject needs a common name",
        ));
    }
    if signer == KUBE_APISERVER_CLIENT_KUBELET || signer == KUBELET_SERVING {
        if p.organizations != [NODES_GROUP] {
            return Err(invalid(
                name,
                "spec.request",
                format!("the subject's organization must be [{NODES_GROUP}]"),
            ));
        }
        if !p.common_name.starts_with(NODE_USER_PREFIX)
            || p.common_name.len() == NODE_USER_PREFIX.len()
        {
            return Err(invalid(
                name,
                "spec.request",
                format!("the subject's common name must begin with {NODE_USER_PREFIX:?}"),
            ));
        }
    }
    if signer == KUBE_APISERVER_CLIENT_KUBELET && p.has_sans {
        return Err(invalid(
            name,
            "spec.request",
            "a kubelet client certificate has no subject alternative names",
        ));
    }
    if signer == KUBELET_SERVING {
        if p.other_sans {
            return Err(invalid(
                name,
                "spec.request",
                "a kubelet serving certificate names only DNS names and IP addresses",
            ));
        }
        if p.ips.is_empty() && p.dns.is_empty() {
            return Err(invalid(
                name,
                "spec.request",
                "a kubelet serving certificate needs at least one DNS name or IP address",
            ));
        }
        if p.ips.len() + p.dns.len() > MAX_SERVING_SANS {
            return Err(invalid(
                name,
                "spec.request",
                format!("at most {MAX_SERVING_SANS} subject alternative names"),
            ));
        }
    }
    Ok(())
}

/// The lifetime a CSR gets: `spec.expirationSeconds`, between ten minutes and a year
/// (a year when unset).
pub(crate) fn lifetime(csr: &Value) -> Duration {
    match obj::at(csr, "spec.expirationSeconds").and_then(Value::as_u64) {
        Some(s) => Duration::from_secs(s).clamp(MIN_EXPIRATION, CLIENT_CERT_LIFETIME),
        None => CLIENT_CERT_LIFETIME,
    }
}

/// Signs approved requests of the two client signers with the cluster CA.
pub struct ClusterCaSigner {
    pki: Arc<Pki>,
}

impl ClusterCaSigner {
    pub fn new(pki: Arc<Pki>) -> Self {
        ClusterCaSigner { pki }
    }

    /// The PEM certificate for `csr`, `None` for other signers.
    pub(crate) fn sign_now(&self, csr: &Value) -> Result<Option<Vec<u8>>, ApiError> {
        let signer = obj::at(csr, "spec.signerName")
            .and_then(Value::as_str)
            .unwrap_or("");
        if signer != KUBE_APISERVER_CLIENT
            && signer != KUBE_APISERVER_CLIENT_KUBELET
            && signer != KUBELET_SERVING
        {
            return Ok(None);
        }
        let p = parse_request(csr)?;
        check_for_signer(csr, &p)?;
        let signed = if signer == KUBELET_SERVING {
            self.pki
                .sign_serving_csr(&p.params, &p.ips, &p.dns, lifetime(csr))
        } else {
            self.pki.sign_csr(&p.params, lifetime(csr))
        };
        let pem =
            signed.map_err(|e| ApiError::internal(format!("signing the certificate: {e}")))?;
        tracing::info!(csr = obj::name(csr), signer, subject = %p.common_name, "signed a certificate");
        Ok(Some(pem.into_bytes()))
    }
}

impl CsrSigner for ClusterCaSigner {
    fn sign<'a>(&'a self, csr: &'a Value) -> BoxFuture<'a, Result<Option<Vec<u8>>, ApiError>> {
        Box::pin(std::future::ready(self.sign_now(csr)))
    }
}

/// Timers of the approver.
#[derive(Debug, Clone)]
pub struct CsrApproverConfig {
    /// How long to wait before watching again after the watch ended or failed.
    pub retry: Duration,
}

impl Default for CsrApproverConfig {
    fn default() -> Self {
        CsrApproverConfig {
            retry: Duration::from_secs(1),
        }
    }
}

/// The requester of a CSR, from the identity the registry recorded on create.
fn requester(csr: &Value) -> UserInfo {
    let s = |f: &str| {
        obj::at(csr, f)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    UserInfo {
        username: s("spec.username"),
        uid: s("spec.uid"),
        groups: obj::at(csr, "spec.groups")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default(),
        extra: Default::default(),
    }
}

fn has_condition(csr: &Value, kind: &str) -> bool {
    obj::at(csr, "status.conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == kind)
}

/// Approves kubelet client CSRs of bootstrapping and renewing nodes, through the API.
pub struct CsrApprover {
    api: Arc<Api>,
    /// The approver's identity: a client certificate of `system:kube-controller-manager`.
    conn: ConnInfo,
    cfg: CsrApproverConfig,
}

impl CsrApprover {
    pub(crate) fn new(api: Arc<Api>, conn: ConnInfo, cfg: CsrApproverConfig) -> Self {
        CsrApprover { api, conn, cfg }
    }

    /// Why `csr` should be approved (the condition's message), or `None`.
    fn should_approve(&self, csr: &Value) -> Option<&'static str> {
        let signer = obj::at(csr, "spec.signerName").and_then(Value::as_str);
        if signer == Some(KUBELET_SERVING)
            && !has_condition(csr, "Approved")
            && !has_condition(csr, "Denied")
            && !has_condition(csr, "Failed")
        {
            let p = parse_request(csr).ok()?;
            check_for_signer(csr, &p).ok()?;
            let user = requester(csr);
            let own =
                user.groups.iter().any(|g| g == NODES_GROUP) && user.username == p.common_name;
            return own.then_some("Auto approving a node's own kubelet serving certificate.");
        }
        if signer != Some(KUBE_APISERVER_CLIENT_KUBELET)
            || has_condition(csr, "Approved")
            || has_condition(csr, "Denied")
            || has_condition(csr, "Failed")
        {
            return None;
        }
        let p = parse_request(csr).ok()?;
        check_for_signer(csr, &p).ok()?;
        let user = requester(csr);
        let attrs = |sub: &str| Attributes {
            verb: "create".into(),
            group: "certificates.k8s.io".into(),
            version: "v1".into(),
            resource: "certificatesigningrequests".into(),
            subresource: sub.into(),
            resource_request: true,
            ..Default::default()
        };
        let in_group = |g: &str| user.groups.iter().any(|x| x == g);
        if in_group(BOOTSTRAPPERS_GROUP)
            && self
                .api
                .authz
                .authorize(&user, &attrs("nodeclient"))
                .allowed()
        {
            return Some("Auto approving kubelet client certificate after SubjectAccessReview.");
        }
        if in_group(NODES_GROUP)
            && user.username == p.common_name
            && self
                .api
                .authz
                .authorize(&user, &attrs("selfnodeclient"))
                .allowed()
        {
            return Some(
                "Auto approving self kubelet client certificate after SubjectAccessReview.",
            );
        }
        None
    }

    /// Approves `csr` through `certificatesigningrequests/NAME/approval`.
    async fn approve(&self, mut csr: Value, message: &str) {
        let name = obj::name(&csr).to_string();
        let now = crate::util::now_rfc3339();
        let cond = json!({
            "type": "Approved",
            "status": "True",
            "reason": "AutoApproved",
            "message": message,
            "lastUpdateTime": now,
            "lastTransitionTime": now,
        });
        match csr
            .pointer_mut("/status/conditions")
            .and_then(Value::as_array_mut)
        {
            Some(list) => list.push(cond),
            None => obj::set_at(&mut csr, "status.conditions", json!([cond])),
        }
        let body = serde_json::to_vec(&csr).unwrap_or_default();
        let req = http::Request::builder()
            .method(http::Method::PUT)
            .uri(format!(
                "/apis/certificates.k8s.io/v1/certificatesigningrequests/{name}/approval"
            ))
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "h8s-apiserver/csr-approver")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)));
        let Ok(mut req) = req else {
            tracing::warn!(csr = %name, "approver: cannot build the approval request");
            return;
        };
        req.extensions_mut().insert(self.conn.clone());
        let resp = self.api.handle(req).await;
        let code = resp.status().as_u16();
        if code == 200 {
            tracing::info!(csr = %name, "approved a kubelet client certificate request");
        } else {
            // A conflict means someone else wrote it; the watch brings the new version.
            let body = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            tracing::warn!(csr = %name, code, body = %String::from_utf8_lossy(&body[..body.len().min(512)]), "approver: approval failed");
        }
    }

    async fn consider(&self, csr: Value) {
        if let Some(msg) = self.should_approve(&csr) {
            let span = tracing::info_span!("csr approval", csr = %obj::name(&csr));
            let _e = span.enter();
            self.approve(csr, msg).await;
        }
    }

    /// Lists then watches CSRs until `shutdown` changes.
    pub(crate) async fn run(self, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        let res =
            h8s_types::resources::find("certificates.k8s.io", "v1", "certificatesigningrequests");
        let Some(res) = res else {
            tracing::warn!("approver: the CSR kind is not served; not approving");
            return;
        };
        let prefix = obj::prefix(res, None);
        loop {
            let r = self.list_and_watch(&prefix, &mut shutdown).await;
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = r {
                tracing::warn!(error = %e, "approver: watch failed; starting over");
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.retry) => {}
                _ = shutdown.changed() => return,
            }
        }
    }

    async fn list_and_watch(
        &self,
        prefix: &str,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<(), h8s_store::Error> {
        let store = self.api.store.clone();
        let list = store.list(prefix, Default::default()).await?;
        for kv in &list.items {
            if let Ok(o) = obj::decode(kv) {
                self.consider(o).await;
            }
        }
        let mut w = store.watch(prefix, list.revision).await?;
        loop {
            tokio::select! {
                _ = shutdown.changed() => return Ok(()),
                ev = w.next() => match ev {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(e),
                    Some(Ok(h8s_store::Event::Put { kv, .. })) => {
                        if let Ok(o) = obj::decode(&kv) {
                            self.consider(o).await;
                        }
                    }
                    Some(Ok(_)) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr_obj(cn: &str, orgs: &[&str], signer: &str, usages: &[&str], sans: &[&str]) -> Value {
        let mut p =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        let mut dn = rcgen::DistinguishedName::new();
        for (i, o) in orgs.iter().enumerate() {
            let t = if i == 0 {
                rcgen::DnType::OrganizationName
            } else {
                rcgen::DnType::CustomDnType(vec![2, 5, 4, 10])
            };
            dn.push(t, *o);
        }
        dn.push(rcgen::DnType::CommonName, cn);
        p.distinguished_name = dn;
        let k = rcgen::KeyPair::generate().unwrap();
        let pem = p.serialize_request(&k).unwrap().pem().unwrap();
        json!({
            "metadata": {"name": "c1"},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(pem),
                "signerName": signer,
                "usages": usages,
            }
        })
    }

    fn signer() -> (tempfile::TempDir, ClusterCaSigner) {
        let d = tempfile::tempdir().unwrap();
        let pki = crate::pki::ensure(d.path(), &[], "https://127.0.0.1:1").unwrap();
        (d, ClusterCaSigner::new(Arc::new(pki)))
    }

    #[test]
    fn signs_node_client_requests() {
        let (_d, s) = signer();
        let mut c = csr_obj(
            "system:node:n1",
            &["system:nodes"],
            KUBE_APISERVER_CLIENT_KUBELET,
            &["digital signature", "client auth"],
            &[],
        );
        c["spec"]["expirationSeconds"] = json!(3600);
        let pem = s.sign_now(&c).unwrap().unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let x = p.parse_x509().unwrap();
        let user = crate::auth::ClientCertAuthenticator::user_of(&p.contents).unwrap();
        assert_eq!(user.username, "system:node:n1");
        assert_eq!(user.groups, ["system:nodes", "system:authenticated"]);
        let secs = x.validity().not_after.timestamp() - x.validity().not_before.timestamp();
        assert_eq!(
            secs,
            3600 + 300,
            "the lifetime asked for, plus the backdating"
        );
        // No expirationSeconds: a year.
        c["spec"]
            .as_object_mut()
            .unwrap()
            .remove("expirationSeconds");
        let pem = s.sign_now(&c).unwrap().unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let x = p.parse_x509().unwrap();
        let days =
            (x.validity().not_after.timestamp() - x.validity().not_before.timestamp()) / 86400;
        assert_eq!(days, 365);
        // Other signers are not ours.
        c["spec"]["signerName"] = json!("example.com/other");
        assert!(s.sign_now(&c).unwrap().is_none());
    }

    #[test]
    fn signs_kubelet_serving_requests_with_their_names() {
        let (_d, s) = signer();
        let k = KUBELET_SERVING;
        let usages: &[&str] = &["digital signature", "key encipherment", "server auth"];
        let c = csr_obj(
            "system:node:n1",
            &["system:nodes"],
            k,
            usages,
            &["10.1.2.3", "n1.example"],
        );
        let pem = s.sign_now(&c).unwrap().unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(&pem).unwrap();
        let x = p.parse_x509().unwrap();
        let eku = x.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        let sans = x.subject_alternative_name().unwrap().unwrap().value;
        let names: Vec<String> = sans.general_names.iter().map(|g| g.to_string()).collect();
        assert!(names.iter().any(|n| n.contains("0a:01:02:03")), "{names:?}");
        assert!(names.iter().any(|n| n.contains("n1.example")), "{names:?}");
        assert_eq!(
            x.subject()
                .iter_common_name()
                .next()
                .unwrap()
                .as_str()
                .unwrap(),
            "system:node:n1"
        );
        let bad = [
            // No names.
            csr_obj("system:node:n1", &["system:nodes"], k, usages, &[]),
            // Client usage.
            csr_obj(
                "system:node:n1",
                &["system:nodes"],
                k,
                &["digital signature", "client auth"],
                &["n1"],
            ),
            // Not a node.
            csr_obj("mallory", &["system:nodes"], k, usages, &["n1"]),
            csr_obj("system:node:n1", &["system:masters"], k, usages, &["n1"]),
        ];
        for (i, c) in bad.iter().enumerate() {
            let e = s.sign_now(c).unwrap_err();
            assert_eq!(e.code, 422, "case {i}: {}", e.message);
        }
    }

    #[test]
    fn refuses_what_the_signers_do_not_sign() {
        let (_d, s) = signer();
        let k = KUBE_APISERVER_CLIENT_KUBELET;
        let ok_usages: &[&str] = &["digital signature", "key encipherment", "client auth"];
        let bad = [
            csr_obj("system:node:n1", &["system:masters"], k, ok_usages, &[]),
            csr_obj("mallory", &["system:nodes"], k, ok_usages, &[]),
            csr_obj(
                "system:node:n1",
                &["system:nodes"],
                k,
                &["server auth"],
                &[],
            ),
            csr_obj(
                "system:node:n1",
                &["system:nodes"],
                k,
                &["digital signature"],
                &[],
            ),
            csr_obj(
                "system:node:n1",
                &["system:nodes"],
                k,
                ok_usages,
                &["n1.example"],
            ),
            csr_obj(
                "system:node:n1",
                &["system:nodes", "system:masters"],
                k,
                ok_usages,
                &[],
            ),
        ];
        for (i, c) in bad.iter().enumerate() {
            let e = s.sign_now(c).unwrap_err();
            assert_eq!(e.code, 422, "case {i}: {}", e.message);
        }
        // The generic client signer takes any subject, with client usages only.
        let c = csr_obj(
            "jane",
            &["dev"],
            KUBE_APISERVER_CLIENT,
            &["client auth"],
            &[],
        );
        assert!(s.sign_now(&c).unwrap().is_some());
        let c = csr_obj(
            "jane",
            &["dev"],
            KUBE_APISERVER_CLIENT,
            &["server auth", "client auth"],
            &[],
        );
        assert!(s.sign_now(&c).is_err());
        // Garbage in spec.request.
        let mut c = csr_obj("jane", &[], KUBE_APISERVER_CLIENT, &["client auth"], &[]);
        c["spec"]["request"] = json!("bm90IGEgY3Ny");
        assert_eq!(s.sign_now(&c).unwrap_err().code, 422);
        // A request whose signature does not match its content.
        let mut c = csr_obj("jane", &[], KUBE_APISERVER_CLIENT, &["client auth"], &[]);
        let pem = String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(c["spec"]["request"].as_str().unwrap())
                .unwrap(),
        )
        .unwrap();
        let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let mut der = p.contents.clone();
        let n = der.len();
        der[n - 5] ^= 0x55;
        let b64 = base64::engine::general_purpose::STANDARD.encode(&der);
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{b64}\n-----END CERTIFICATE REQUEST-----\n"
        );
        c["spec"]["request"] = json!(base64::engine::general_purpose::STANDARD.encode(tampered));
        assert!(s.sign_now(&c).is_err());
    }
}
