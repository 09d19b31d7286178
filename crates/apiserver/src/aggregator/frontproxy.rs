//! The front-proxy PKI (kube-apiserver's `--requestheader-client-ca-file` and
//! `--proxy-client-cert-file`): a CA of its own, separate from the cluster CA, and the
//! `front-proxy-client` certificate it signs, which the server presents to aggregated API
//! servers. An aggregated server trusts the `X-Remote-*` headers only on connections
//! that present a certificate of this CA, so a certificate of the cluster CA (every user
//! may hold one) cannot assert another user's identity to it.
//!
//! Files in the data directory (mode 0600), made on first start like the other
//! certificates: `front-proxy-ca.crt`, `front-proxy-ca.key`, `front-proxy-client.crt`,
//! `front-proxy-client.key`. The client certificate is renewed at start when less than
//! [`crate::pki::RENEW_BEFORE`] of it is left.

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SerialNumber,
};

use crate::pki::{read, write_private, CA_LIFETIME, CLIENT_CERT_LIFETIME};
use crate::{Error, Result};

/// The common name of the front-proxy client certificate (kubeadm's), which the
/// `extension-apiserver-authentication` ConfigMap lists as the allowed name.
pub const FRONT_PROXY_CLIENT_CN: &str = "front-proxy-client";

/// How far back a new certificate's validity starts, for clocks slightly behind.
const BACKDATE: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// The front-proxy CA (PEM) and the client certificate and key it signed.
#[derive(Clone)]
pub struct FrontProxy {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for FrontProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FrontProxy").finish_non_exhaustive()
    }
}

fn rc(e: rcgen::Error) -> Error {
    Error::Pki(e.to_string())
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "h8s-front-proxy-ca");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

/// Loads the front-proxy CA and client certificate from `dir`, making what is missing.
pub fn ensure(dir: &Path) -> Result<FrontProxy> {
    let ca_crt = dir.join("front-proxy-ca.crt");
    let ca_key = dir.join("front-proxy-ca.key");
    let now = time::OffsetDateTime::now_utc();
    let (ca_pem, ca_key_pem) = match (read(&ca_crt)?, read(&ca_key)?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let key = KeyPair::generate().map_err(rc)?;
            let mut p = ca_params();
            p.not_before = now - BACKDATE;
            p.not_after = now + CA_LIFETIME;
            let cert = p.self_signed(&key).map_err(rc)?;
            let (c, k) = (cert.pem(), key.serialize_pem());
            write_private(&ca_key, &k)?;
            write_private(&ca_crt, &c)?;
            let _ = std::fs::remove_file(dir.join("front-proxy-client.crt"));
            (c, k)
        }
    };
    let crt = dir.join("front-proxy-client.crt");
    let key = dir.join("front-proxy-client.key");
    let (cert_pem, key_pem) = match (read(&crt)?, read(&key)?) {
        (Some(c), Some(k)) if !crate::pki::needs_renewal(&c, CLIENT_CERT_LIFETIME) => (c, k),
        _ => {
            let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(rc)?;
            let issuer = Issuer::new(ca_params(), &ca_key);
            let leaf_key = KeyPair::generate().map_err(rc)?;
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, FRONT_PROXY_CLIENT_CN);
            p.distinguished_name = dn;
            p.is_ca = IsCa::ExplicitNoCa;
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            p.not_before = now - BACKDATE;
            p.not_after = (now + CLIENT_CERT_LIFETIME).min(crate::pki::not_after(&ca_pem)?);
            let mut serial = crate::util::random_bytes::<16>();
            serial[0] &= 0x7f;
            p.serial_number = Some(SerialNumber::from_slice(&serial));
            p.use_authority_key_identifier_extension = true;
            let cert = p.signed_by(&leaf_key, &issuer).map_err(rc)?;
            let (c, k) = (cert.pem(), leaf_key.serialize_pem());
            write_private(&key, &k)?;
            write_private(&crt, &c)?;
            (c, k)
        }
    };
    Ok(FrontProxy {
        ca_pem,
        cert_pem,
        key_pem,
    })
}

/// The TLS client configuration towards one aggregated API server: trusts only
/// `ca_bundle` (PEM), or nothing is checked when `insecure` (the APIService's
/// `insecureSkipTLSVerify`); presents the front-proxy client certificate. HTTP/1.1.
pub fn client_tls(
    fp: &FrontProxy,
    ca_bundle: &[u8],
    insecure: bool,
) -> std::result::Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(fp.cert_pem.as_bytes())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| format!("front-proxy client certificate: {e}"))?;
    let key = PrivateKeyDer::from_pem_slice(fp.key_pem.as_bytes())
        .map_err(|e| format!("front-proxy client key: {e}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(NoVerify(provider)))
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_bundle) {
            let c = c.map_err(|e| format!("caBundle: {e}"))?;
            roots.add(c).map_err(|e| format!("caBundle: {e}"))?;
        }
        if roots.is_empty() {
            return Err(
                "the APIService has no caBundle (and insecureSkipTLSVerify is not set)".into(),
            );
        }
        builder.with_root_certificates(roots)
    };
    let mut cfg = builder
        .with_client_auth_cert(certs, key)
        .map_err(|e| format!("front-proxy client certificate: {e}"))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// `insecureSkipTLSVerify: true`: the server's certificate is not checked (signatures of
/// the handshake still are, so the session is with whoever holds the presented key).
#[derive(Debug)]
struct NoVerify(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_once_and_reused() {
        let d = tempfile::tempdir().unwrap();
        let a = ensure(d.path()).unwrap();
        let b = ensure(d.path()).unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_eq!(a.cert_pem, b.cert_pem);
        let (_, der) = x509_parser::pem::parse_x509_pem(a.cert_pem.as_bytes()).unwrap();
        let x = der.parse_x509().unwrap();
        let cn = x.subject().iter_common_name().next().unwrap();
        assert_eq!(cn.as_str().unwrap(), FRONT_PROXY_CLIENT_CN);
        let (_, ca) = x509_parser::pem::parse_x509_pem(a.ca_pem.as_bytes()).unwrap();
        let ca = ca.parse_x509().unwrap();
        x.verify_signature(Some(ca.public_key())).unwrap();
        // Not the cluster CA's name: a separate trust root.
        assert!(ca.subject().to_string().contains("front-proxy"));
        assert!(client_tls(&a, a.ca_pem.as_bytes(), false).is_ok());
        assert!(client_tls(&a, b"", false).is_err());
        assert!(client_tls(&a, b"", true).is_ok());
    }
}
