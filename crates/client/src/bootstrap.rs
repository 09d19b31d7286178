//! Node bootstrap: trade a join token for a node client certificate, as the kubelet's
//! TLS bootstrap does.
//!
//! With a [`Connection`] that presents the join token (`h8s server` writes it to
//! `DATA_DIR/join-token`; it authenticates as `system:bootstrap:ID`, group
//! `system:bootstrappers`), [`bootstrap_node`] generates a P-256 key, sends a
//! CertificateSigningRequest for `CN=system:node:NAME, O=system:nodes` to the
//! `kubernetes.io/kube-apiserver-client-kubelet` signer, waits until the server has
//! approved and signed it, and returns a [`Connection`] that presents the certificate.

use std::time::Duration;

use k8s_openapi::api::certificates::v1::{
    CertificateSigningRequest, CertificateSigningRequestSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kube::api::PostParams;

use crate::{Connection, Credentials};

/// The signer of node client certificates.
pub const KUBELET_CLIENT_SIGNER: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// The signer of node agents' serving certificates.
pub const KUBELET_SERVING_SIGNER: &str = "kubernetes.io/kubelet-serving";

/// Why bootstrapping failed.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    #[error("invalid node name {0:?}")]
    NodeName(String),
    #[error("a serving certificate needs at least one DNS name or IP address")]
    NoNames,
    #[error("generating the node key or request")]
    Key(#[source] rcgen::Error),
    #[error(transparent)]
    Client(#[from] crate::Error),
    #[error("creating the certificate signing request")]
    Create(#[source] kube::Error),
    #[error("waiting for the certificate of {name}")]
    Wait {
        name: String,
        #[source]
        source: kube::runtime::wait::Error,
    },
    #[error("certificate signing request {name} was deleted")]
    Deleted { name: String },
    #[error("certificate signing request {name} was {condition}: {message}")]
    Refused {
        name: String,
        condition: String,
        message: String,
    },
    #[error("no certificate for {name} after {waited:?}")]
    Timeout { name: String, waited: Duration },
}

/// What to ask for.
#[derive(Debug, Clone)]
pub struct BootstrapOptions {
    /// How long to wait for approval and signing.
    pub timeout: Duration,
    /// The certificate's lifetime (`spec.expirationSeconds`); `None`: the signer's
    /// default (a year on h8s).
    pub expiration: Option<Duration>,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        BootstrapOptions {
            timeout: Duration::from_secs(60),
            expiration: None,
        }
    }
}

/// A node's client certificate and its private key, both PEM.
#[derive(Clone)]
pub struct NodeCertificate {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

impl std::fmt::Debug for NodeCertificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NodeCertificate(<redacted>)")
    }
}

/// Requests a client certificate for node `node_name` through `client` (authenticated
/// with a join token, or the node's current certificate to renew it) and waits for it.
pub async fn request_node_certificate(
    client: kube::Client,
    node_name: &str,
    opts: &BootstrapOptions,
) -> Result<NodeCertificate, BootstrapError> {
    request(
        client,
        node_name,
        KUBELET_CLIENT_SIGNER,
        &[],
        "client auth",
        opts,
    )
    .await
}

/// Requests the node agent's serving certificate (`kubernetes.io/kubelet-serving`,
/// `CN=system:node:NAME`, the node's addresses and host names as subject alternative
/// names) through `client`, authenticated as the node, and waits for it.
pub async fn request_serving_certificate(
    client: kube::Client,
    node_name: &str,
    names: &[String],
    opts: &BootstrapOptions,
) -> Result<NodeCertificate, BootstrapError> {
    if names.is_empty() {
        return Err(BootstrapError::NoNames);
    }
    request(
        client,
        node_name,
        KUBELET_SERVING_SIGNER,
        names,
        "server auth",
        opts,
    )
    .await
}

async fn request(
    client: kube::Client,
    node_name: &str,
    signer: &str,
    names: &[String],
    auth_usage: &str,
    opts: &BootstrapOptions,
) -> Result<NodeCertificate, BootstrapError> {
    if node_name.is_empty() || node_name.len() > 253 {
        return Err(BootstrapError::NodeName(node_name.into()));
    }
    let key = rcgen::KeyPair::generate().map_err(BootstrapError::Key)?;
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(BootstrapError::Key)?;
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::OrganizationName, "system:nodes");
    dn.push(
        rcgen::DnType::CommonName,
        format!("system:node:{node_name}"),
    );
    params.distinguished_name = dn;
    let request = params
        .serialize_request(&key)
        .and_then(|r| r.pem())
        .map_err(BootstrapError::Key)?;

    let api: kube::Api<CertificateSigningRequest> = kube::Api::all(client);
    let csr = CertificateSigningRequest {
        metadata: ObjectMeta {
            generate_name: Some("node-csr-".into()),
            ..Default::default()
        },
        spec: CertificateSigningRequestSpec {
            request: ByteString(request.into_bytes()),
            signer_name: signer.into(),
            usages: Some(vec!["digital signature".into(), auth_usage.into()]),
            expiration_seconds: opts
                .expiration
                .map(|d| d.as_secs().min(i32::MAX as u64) as i32),
            ..Default::default()
        },
        status: None,
    };
    let created = api
        .create(&PostParams::default(), &csr)
        .await
        .map_err(BootstrapError::Create)?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let span = tracing::info_span!("node certificate", csr = %name, node = %node_name, signer);
    let _e = span.enter();
    tracing::info!("sent a certificate signing request; waiting for the certificate");

    let done = |o: Option<&CertificateSigningRequest>| match o {
        None => true,
        Some(c) => c.status.as_ref().is_some_and(|s| {
            s.certificate.as_ref().is_some_and(|b| !b.0.is_empty())
                || s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Denied" || c.type_ == "Failed")
        }),
    };
    let wait = kube::runtime::wait::await_condition(api, &name, done);
    let got = match tokio::time::timeout(opts.timeout, wait).await {
        Err(_) => {
            return Err(BootstrapError::Timeout {
                name,
                waited: opts.timeout,
            })
        }
        Ok(r) => r.map_err(|source| BootstrapError::Wait {
            name: name.clone(),
            source,
        })?,
    };
    let Some(csr) = got else {
        return Err(BootstrapError::Deleted { name });
    };
    let status = csr.status.unwrap_or_default();
    if let Some(c) = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Denied" || c.type_ == "Failed")
    {
        return Err(BootstrapError::Refused {
            name,
            condition: c.type_.clone(),
            message: c.message.clone().unwrap_or_default(),
        });
    }
    let cert_pem = status.certificate.map(|b| b.0).unwrap_or_default();
    tracing::info!("got the node certificate");
    Ok(NodeCertificate {
        cert_pem,
        key_pem: key.serialize_pem().into_bytes(),
    })
}

/// Bootstraps node `node_name` over `join` (a connection presenting the join token) and
/// returns the same connection presenting the node's new client certificate.
pub async fn bootstrap_node(
    join: &Connection,
    node_name: &str,
    opts: &BootstrapOptions,
) -> Result<(Connection, NodeCertificate), BootstrapError> {
    let client = join.client()?;
    let cert = request_node_certificate(client, node_name, opts).await?;
    let conn = Connection {
        credentials: Credentials::ClientCert {
            cert_pem: cert.cert_pem.clone(),
            key_pem: cert.key_pem.clone(),
        },
        ..join.clone()
    };
    Ok((conn, cert))
}
