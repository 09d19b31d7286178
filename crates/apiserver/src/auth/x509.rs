//! X.509 client-certificate authentication, as kube-apiserver's `--client-ca-file`: the
//! TLS layer has verified the chain against the cluster CA (see `pki::server_tls`); the
//! leaf's subject names the user: CN → user name, each O → a group.

use futures::future::BoxFuture;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::{Authenticator, Authn, RequestInfo, UserInfo, AUTHENTICATED_GROUP};

/// Authenticates a request by the client certificate of its TLS connection.
#[derive(Debug, Default, Clone, Copy)]
pub struct ClientCertAuthenticator;

impl ClientCertAuthenticator {
    /// The user a verified certificate (DER) names; `None` when it cannot be parsed or has
    /// no common name.
    pub fn user_of(der: &[u8]) -> Option<UserInfo> {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let subject = cert.subject();
        let username = subject
            .iter_common_name()
            .next()
            .and_then(|a| a.as_str().ok())
            .filter(|s| !s.is_empty())?
            .to_string();
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|a| a.as_str().ok())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        if !groups.iter().any(|g| g == AUTHENTICATED_GROUP) {
            groups.push(AUTHENTICATED_GROUP.into());
        }
        Some(UserInfo {
            username,
            uid: String::new(),
            groups,
            extra: Default::default(),
        })
    }
}

impl Authenticator for ClientCertAuthenticator {
    fn authenticate<'a>(&'a self, req: &'a RequestInfo<'a>) -> BoxFuture<'a, Authn> {
        let out = match req.client_certs.first() {
            None => Authn::NoOpinion,
            Some(leaf) => match Self::user_of(leaf) {
                Some(u) => Authn::User(u),
                None => {
                    tracing::debug!("client certificate without a usable subject");
                    Authn::Denied
                }
            },
        };
        Box::pin(std::future::ready(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;

    #[test]
    fn subject_maps_to_user_and_groups() {
        let d = tempfile::tempdir().unwrap();
        let pki = crate::pki::ensure(d.path(), &[], "https://127.0.0.1:1").unwrap();
        let (cert, _) = pki
            .issue_client_cert("jane", &["dev".into()], crate::pki::CLIENT_CERT_LIFETIME)
            .unwrap();
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        // A subject with two O attributes (rcgen keeps one value per type, so the second
        // is spelled as a custom type with O's OID) maps to two groups.
        let two = {
            let mut p = rcgen::CertificateParams::default();
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::OrganizationName, "dev");
            dn.push(rcgen::DnType::CustomDnType(vec![2, 5, 4, 10]), "ops");
            dn.push(rcgen::DnType::CommonName, "jane");
            p.distinguished_name = dn;
            let k = rcgen::KeyPair::generate().unwrap();
            p.self_signed(&k).unwrap().der().clone()
        };
        let headers0 = http::HeaderMap::new();
        let certs2 = [two];
        let req2 = RequestInfo {
            method: &http::Method::GET,
            path: "/api",
            headers: &headers0,
            client_certs: &certs2,
            remote_addr: None,
        };
        match futures::executor::block_on(ClientCertAuthenticator.authenticate(&req2)) {
            Authn::User(u) => assert_eq!(u.groups, ["dev", "ops", "system:authenticated"]),
            other => panic!("{other:?}"),
        }
        let headers = http::HeaderMap::new();
        let certs = [der];
        let req = RequestInfo {
            method: &http::Method::GET,
            path: "/api",
            headers: &headers,
            client_certs: &certs,
            remote_addr: None,
        };
        let a = ClientCertAuthenticator;
        match futures::executor::block_on(a.authenticate(&req)) {
            Authn::User(u) => {
                assert_eq!(u.username, "jane");
                assert_eq!(u.groups, ["dev", "system:authenticated"]);
            }
            other => panic!("{other:?}"),
        }
        let none = RequestInfo {
            client_certs: &[],
            ..req
        };
        assert!(matches!(
            futures::executor::block_on(a.authenticate(&none)),
            Authn::NoOpinion
        ));
        let junk = [CertificateDer::from(vec![1u8, 2, 3])];
        let bad = RequestInfo {
            client_certs: &junk,
            ..req
        };
        assert!(matches!(
            futures::executor::block_on(a.authenticate(&bad)),
            Authn::Denied
        ));
    }
}
