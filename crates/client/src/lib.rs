//! The one typed Kubernetes API client of h8s.
//!
//! Every in-cluster component (controllers, scheduler, node agent, CLI commands that talk to
//! the API) gets its [`kube::Client`] here, over rustls with the cluster's CA pinned, and
//! uses kube-rs' typed [`kube::Api`] and `kube::runtime` watchers, reflectors and
//! controllers. No component hand-rolls HTTP to the API server.
//!
//! Configuration is passed in (the binary reads files and flags); this crate only turns a
//! [`Connection`] or a kubeconfig into a client.

use std::path::Path;

pub use k8s_openapi;
pub use kube;

pub mod bootstrap;

mod h2;
pub mod leader;

/// How a component proves who it is to the API server.
#[derive(Clone)]
pub enum Credentials {
    /// A bearer token (`Authorization: Bearer …`).
    Token(String),
    /// An X.509 client certificate signed by the cluster CA, PEM encoded.
    ClientCert { cert_pem: Vec<u8>, key_pem: Vec<u8> },
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credentials::Token(_) => f.write_str("Token(<redacted>)"),
            Credentials::ClientCert { .. } => f.write_str("ClientCert(<redacted>)"),
        }
    }
}

/// Where the API server is and how to trust and authenticate to it.
#[derive(Clone, Debug)]
pub struct Connection {
    /// `https://host:port` of the API server.
    pub server: String,
    /// The cluster CA certificate(s), PEM encoded; the server's certificate must chain to it.
    pub ca_pem: Vec<u8>,
    /// The caller's identity.
    pub credentials: Credentials,
    /// Sent as `User-Agent`, so the server's logs and audit name the component.
    pub user_agent: String,
}

/// Why a client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid API server URL {url:?}")]
    Url {
        url: String,
        #[source]
        source: http::uri::InvalidUri,
    },
    #[error("invalid CA certificate PEM")]
    CaPem(#[source] std::io::Error),
    #[error("CA PEM holds no certificate")]
    NoCaCert,
    #[error("invalid user agent {0:?}")]
    UserAgent(String),
    #[error("reading kubeconfig {path}")]
    Kubeconfig {
        path: String,
        #[source]
        source: kube::config::KubeconfigError,
    },
    #[error("building the API client")]
    Client(#[source] kube::Error),
}

impl Connection {
    /// The kube-rs configuration of this connection.
    pub fn config(&self) -> Result<kube::Config, Error> {
        let uri: http::Uri = self.server.parse().map_err(|source| Error::Url {
            url: self.server.clone(),
            source,
        })?;
        let mut cfg = kube::Config::new(uri);
        cfg.root_cert = Some(pem_certs(&self.ca_pem)?);
        cfg.connect_timeout = Some(std::time::Duration::from_secs(10));
        match &self.credentials {
            Credentials::Token(t) => cfg.auth_info.token = Some(t.clone().into()),
            Credentials::ClientCert { cert_pem, key_pem } => {
                use base64_engine::encode;
                cfg.auth_info.client_certificate_data = Some(encode(cert_pem));
                cfg.auth_info.client_key_data = Some(encode(key_pem).into());
            }
        }
        let ua = http::HeaderValue::from_str(&self.user_agent)
            .map_err(|_| Error::UserAgent(self.user_agent.clone()))?;
        cfg.headers.push((http::header::USER_AGENT, ua));
        Ok(cfg)
    }

    /// A client for this connection.
    pub fn client(&self) -> Result<kube::Client, Error> {
        kube::Client::try_from(self.config()?).map_err(Error::Client)
    }
}

/// A client from a kubeconfig file (its current context).
pub async fn from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    let err = |source| Error::Kubeconfig {
        path: path.display().to_string(),
        source,
    };
    let kc = kube::config::Kubeconfig::read_from(path).map_err(err)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(err)?;
    kube::Client::try_from(cfg).map_err(Error::Client)
}

/// DER certificates of a PEM bundle.
fn pem_certs(pem: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
    use rustls_pki_types::{pem::PemObject, CertificateDer};
    let out = CertificateDer::pem_slice_iter(pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::CaPem(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
    if out.is_empty() {
        return Err(Error::NoCaCert);
    }
    Ok(out)
}

mod base64_engine {
    use base64::Engine as _;
    pub fn encode(b: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_bundle_with_two_certs() {
        let pem = b"-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n-----BEGIN CERTIFICATE-----\nAwQF\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certs(pem).unwrap(), vec![vec![0, 1, 2], vec![3, 4, 5]]);
        assert!(matches!(pem_certs(b"nothing"), Err(Error::NoCaCert)));
    }

    #[test]
    fn bad_url_is_a_typed_error() {
        let c = Connection {
            server: "ht tp://x".into(),
            ca_pem: vec![],
            credentials: Credentials::Token("t".into()),
            user_agent: "test".into(),
        };
        assert!(matches!(c.config(), Err(Error::Url { .. })));
    }
}
