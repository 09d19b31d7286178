//! The server's own PKI: a CA, a serving certificate and the admin credential, created on
//! first start in the data directory and reused afterwards.
//!
//! Files (all mode 0600): `ca.crt`, `ca.key`, `server.crt`, `server.key`, `admin.token`,
//! `admin.kubeconfig`. Client certificates for users and components are issued by the
//! same CA ([`Pki::issue_client_cert`]); the server requests (but does not require) one
//! on every TLS connection and authenticates its subject (CN → user, O → groups). The
//! serving certificate is re-issued (by the same CA) when the
//! wanted subject alternative names are not all in the existing one, so adding a
//! `--tls-san` later does not invalidate kubeconfigs that trust the CA.
//!
//! Lifetimes, as kubeadm and k3s choose them: the CA ten years, the serving certificate and
//! client certificates one year. The serving certificate is renewed at start when less than
//! [`RENEW_BEFORE`] of it is left (or when it outlives [`SERVING_CERT_LIFETIME`], as
//! certificates made before lifetimes were bounded do); a server that runs for a year without
//! a restart must be restarted to renew it, as k3s must.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};

use crate::{Error, Result};

/// The PKI material the server runs with.
#[derive(Clone)]
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub admin_token: String,
    pub dir: PathBuf,
    /// The CA's private key (PEM); never leaves the server.
    ca_key_pem: String,
}

/// The lifetime of a client certificate when the caller names none: one year.
pub const CLIENT_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The lifetime of the serving certificate: one year.
pub const SERVING_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);

/// The lifetime of a new cluster CA: ten years (kubeadm's).
pub const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A certificate with less than this left is renewed when the server (or a joined agent)
/// starts: 90 days, k3s's threshold.
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);

/// How far back a new certificate's validity starts, for clocks slightly behind ours.
const BACKDATE: Duration = Duration::from_secs(5 * 60);

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Loads an existing PKI from a server's data dir without writing anything.
    pub fn load(dir: &Path) -> Result<Pki> {
        load(dir)
    }

    /// Issues a client certificate signed by the cluster CA for `user` (the subject's CN)
    /// in `groups` (the subject's O), valid from now (minus five minutes of clock skew)
    /// for `lifetime` (at most until the CA expires). Returns the certificate and its new
    /// private key (ECDSA P-256, PKCS#8), both PEM.
    ///
    /// At most one group: rcgen, which writes the certificate, keeps one value per
    /// subject attribute (Kubernetes' own identities — `system:masters`,
    /// `system:nodes` — need only one).
    pub fn issue_client_cert(
        &self,
        user: &str,
        groups: &[String],
        lifetime: Duration,
    ) -> Result<(String, String)> {
        if user.is_empty() {
            return Err(Error::Pki("a client certificate needs a user name".into()));
        }
        if groups.len() > 1 {
            return Err(Error::Pki(
                "a client certificate carries at most one group (O)".into(),
            ));
        }
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for g in groups {
            dn.push(DnType::OrganizationName, g.as_str());
        }
        dn.push(DnType::CommonName, user);
        p.distinguished_name = dn;
        let key = KeyPair::generate().map_err(rc)?;
        let cert = self.sign_client(p, &key, lifetime)?;
        Ok((cert, key.serialize_pem()))
    }

    /// Issues a node agent's serving certificate (what a `kubernetes.io/kubelet-serving`
    /// CSR gets): `CN=system:node:NODE`, `O=system:nodes`, the given DNS names and IPs as
    /// subject alternative names, `serverAuth` only. Returns the certificate and its new
    /// private key, both PEM.
    pub fn issue_node_serving_cert(
        &self,
        node: &str,
        sans: &[String],
        lifetime: Duration,
    ) -> Result<(String, String)> {
        if node.is_empty() {
            return Err(Error::Pki(
                "a node serving certificate needs a node name".into(),
            ));
        }
        let mut p = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "system:nodes");
        dn.push(DnType::CommonName, format!("system:node:{node}"));
        p.distinguished_name = dn;
        let key = KeyPair::generate().map_err(rc)?;
        let sans = sans.iter().map(|s| san_of(s)).collect();
        let cert = self.sign_leaf(p, &key, lifetime, Leaf::Serving(sans))?;
        Ok((cert, key.serialize_pem()))
    }

    /// Signs client-certificate parameters for `public_key` with the CA: a leaf with
    /// `clientAuth` only, a random serial and the given lifetime.
    fn sign_client(
        &self,
        p: CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
        lifetime: Duration,
    ) -> Result<String> {
        self.sign_leaf(p, public_key, lifetime, Leaf::Client)
    }

    /// Signs a leaf for `public_key` with the CA: a random serial, the given lifetime (at
    /// most the CA's), `clientAuth` and no names, or `serverAuth` with the given names.
    fn sign_leaf(
        &self,
        mut p: CertificateParams,
        public_key: &impl rcgen::PublicKeyData,
        lifetime: Duration,
        leaf: Leaf,
    ) -> Result<String> {
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).map_err(rc)?;
        let issuer = Issuer::new(ca_params(), &ca_key);
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - BACKDATE;
        p.not_after = (now + lifetime).min(not_after(&self.ca_pem)?);
        p.is_ca = IsCa::ExplicitNoCa;
        p.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        match leaf {
            Leaf::Client => {
                p.subject_alt_names.clear();
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
            }
            Leaf::Serving(sans) => {
                p.subject_alt_names = sans;
                p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            }
        }
        let mut serial = crate::util::random_bytes::<16>();
        serial[0] &= 0x7f;
        p.serial_number = Some(SerialNumber::from_slice(&serial));
        p.use_authority_key_identifier_extension = true;
        let cert = p.signed_by(public_key, &issuer).map_err(rc)?;
        Ok(cert.pem())
    }

    /// Signs a PKCS#10 request (PEM) as a client certificate, keeping only its subject:
    /// what the CSR signers of `certificates.k8s.io` issue. The request's signature is
    /// checked; its extensions are not carried over.
    pub(crate) fn sign_csr(
        &self,
        csr: &rcgen::CertificateSigningRequestParams,
        lifetime: Duration,
    ) -> Result<String> {
        let mut p = CertificateParams::default();
        p.distinguished_name = csr.params.distinguished_name.clone();
        self.sign_client(p, &csr.public_key, lifetime)
    }

    /// Signs a PKCS#10 request as a serving certificate (the `kubelet-serving` signer):
    /// its subject and its DNS and IP subject alternative names (checked by the caller),
    /// `serverAuth` only; its other extensions are not carried over.
    pub(crate) fn sign_serving_csr(
        &self,
        csr: &rcgen::CertificateSigningRequestParams,
        sans: &[std::net::IpAddr],
        dns: &[String],
        lifetime: Duration,
    ) -> Result<String> {
        let mut p = CertificateParams::default();
        p.distinguished_name = csr.params.distinguished_name.clone();
        let mut names: Vec<SanType> = sans.iter().map(|ip| SanType::IpAddress(*ip)).collect();
        for d in dns {
            names.push(SanType::DnsName(d.clone().try_into().map_err(rc)?));
        }
        self.sign_leaf(p, &csr.public_key, lifetime, Leaf::Serving(names))
    }

    /// A kubeconfig for `server_url` that trusts this CA and presents a client
    /// certificate (both PEM), e.g. from [`Pki::issue_client_cert`].
    pub fn client_kubeconfig(
        &self,
        server_url: &str,
        user: &str,
        cert_pem: &str,
        key_pem: &str,
    ) -> String {
        kubeconfig_with_cert(server_url, &self.ca_pem, cert_pem, key_pem, user)
    }
}

/// What a CA-signed leaf is for.
enum Leaf {
    Client,
    Serving(Vec<SanType>),
}

pub(crate) fn write_private(path: &Path, data: &str) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| Error::Pki(format!("writing {}: {e}", tmp.display())))?;
    f.write_all(data.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| Error::Pki(format!("writing {}: {e}", tmp.display())))?;
    fs::rename(&tmp, path).map_err(|e| Error::Pki(format!("renaming {}: {e}", path.display())))
}

pub(crate) fn read(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Pki(format!("reading {}: {e}", path.display()))),
    }
}

/// A random token of 32 bytes, URL-safe base64 without padding.
pub fn random_token() -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(crate::util::random_bytes::<32>())
}

fn rc(e: rcgen::Error) -> Error {
    Error::Pki(e.to_string())
}

/// The end of a PEM certificate's validity.
pub fn not_after(pem: &str) -> Result<time::OffsetDateTime> {
    let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .map_err(|e| Error::Pki(format!("reading a certificate: {e}")))?;
    let x = der
        .parse_x509()
        .map_err(|e| Error::Pki(format!("reading a certificate: {e}")))?;
    time::OffsetDateTime::from_unix_timestamp(x.validity().not_after.timestamp())
        .map_err(|e| Error::Pki(format!("reading a certificate: {e}")))
}

/// Whether a certificate (PEM) should be renewed now: unreadable, less than
/// [`RENEW_BEFORE`] left, or valid for longer than `lifetime` from now (made before
/// lifetimes were bounded).
pub fn needs_renewal(pem: &str, lifetime: Duration) -> bool {
    let now = time::OffsetDateTime::now_utc();
    match not_after(pem) {
        Ok(end) => end - now < RENEW_BEFORE || end - now > lifetime + Duration::from_secs(86400),
        Err(_) => true,
    }
}

/// The CA's identity (what issuing needs); its validity is set only when it is made.
fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, "h8s-ca");
    p.distinguished_name = dn;
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    p
}

fn san_of(s: &str) -> SanType {
    match s.parse::<std::net::IpAddr>() {
        Ok(ip) => SanType::IpAddress(ip),
        Err(_) => SanType::DnsName(
            s.to_string()
                .try_into()
                .unwrap_or_else(|_| "localhost".to_string().try_into().expect("static DNS name")),
        ),
    }
}

/// The names in-cluster clients reach the API server by: the `kubernetes` Service's DNS
/// names (kube-apiserver's defaults, cluster domain `cluster.local`), its ClusterIP, and the
/// address the server advertises.
pub fn in_cluster_sans(service_ip: std::net::Ipv4Addr, advertise: std::net::IpAddr) -> Vec<String> {
    vec![
        "kubernetes".to_string(),
        "kubernetes.default".to_string(),
        "kubernetes.default.svc".to_string(),
        "kubernetes.default.svc.cluster.local".to_string(),
        service_ip.to_string(),
        advertise.to_string(),
    ]
}

/// The SANs every serving certificate carries, plus `extra`.
pub fn wanted_sans(extra: &[String]) -> Vec<String> {
    let mut sans = vec![
        "127.0.0.1".to_string(),
        "::1".to_string(),
        "localhost".to_string(),
    ];
    if let Ok(h) = fs::read_to_string("/proc/sys/kernel/hostname") {
        let h = h.trim();
        if !h.is_empty() {
            sans.push(h.to_string());
        }
    }
    for s in extra {
        if !s.is_empty() && !sans.contains(s) {
            sans.push(s.clone());
        }
    }
    sans
}

/// Loads an existing PKI from `dir` without writing anything (for commands that issue
/// credentials from a server's data dir).
pub fn load(dir: &Path) -> Result<Pki> {
    let need = |f: &str| {
        read(&dir.join(f))?
            .ok_or_else(|| Error::Pki(format!("{} is missing", dir.join(f).display())))
    };
    Ok(Pki {
        ca_pem: need("ca.crt")?,
        cert_pem: need("server.crt")?,
        key_pem: need("server.key")?,
        admin_token: need("admin.token")?.trim().to_string(),
        dir: dir.to_path_buf(),
        ca_key_pem: need("ca.key")?,
    })
}

/// Loads the PKI from `dir`, creating whatever is missing. `server_url` goes into the
/// admin kubeconfig.
pub fn ensure(dir: &Path, extra_sans: &[String], server_url: &str) -> Result<Pki> {
    fs::create_dir_all(dir).map_err(|e| Error::Pki(format!("creating {}: {e}", dir.display())))?;
    let ca_crt = dir.join("ca.crt");
    let ca_key = dir.join("ca.key");
    let (ca_pem, ca_key_pem) = match (read(&ca_crt)?, read(&ca_key)?) {
        (Some(c), Some(k)) => (c, k),
        _ => {
            let key = KeyPair::generate().map_err(rc)?;
            let mut p = ca_params();
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now - BACKDATE;
            p.not_after = now + CA_LIFETIME;
            let cert = p.self_signed(&key).map_err(rc)?;
            let (c, k) = (cert.pem(), key.serialize_pem());
            write_private(&ca_key, &k)?;
            write_private(&ca_crt, &c)?;
            // A new CA invalidates any old serving certificate.
            let _ = fs::remove_file(dir.join("server.crt"));
            (c, k)
        }
    };
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(rc)?;
    let sans = wanted_sans(extra_sans);
    let srv_crt = dir.join("server.crt");
    let srv_key = dir.join("server.key");
    let sans_file = dir.join("server.sans");
    let have = read(&sans_file)?.unwrap_or_default();
    let have: Vec<&str> = have.lines().collect();
    let (cert_pem, key_pem) = match (read(&srv_crt)?, read(&srv_key)?) {
        (Some(c), Some(k))
            if sans.iter().all(|s| have.contains(&s.as_str()))
                && !needs_renewal(&c, SERVING_CERT_LIFETIME) =>
        {
            (c, k)
        }
        _ => {
            // The CA's parameters are fixed, so rebuilding them names the same issuer.
            let issuer = Issuer::new(ca_params(), &ca_key);
            let key = KeyPair::generate().map_err(rc)?;
            let mut p = CertificateParams::default();
            let mut dn = DistinguishedName::new();
            dn.push(DnType::CommonName, "h8s-apiserver");
            p.distinguished_name = dn;
            p.subject_alt_names = sans.iter().map(|s| san_of(s)).collect();
            p.key_usages = vec![
                KeyUsagePurpose::DigitalSignature,
                KeyUsagePurpose::KeyEncipherment,
            ];
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            let now = time::OffsetDateTime::now_utc();
            p.not_before = now - BACKDATE;
            p.not_after = (now + SERVING_CERT_LIFETIME).min(not_after(&ca_pem)?);
            let mut serial = crate::util::random_bytes::<16>();
            serial[0] &= 0x7f;
            p.serial_number = Some(SerialNumber::from_slice(&serial));
            let cert = p.signed_by(&key, &issuer).map_err(rc)?;
            let (c, k) = (cert.pem(), key.serialize_pem());
            write_private(&srv_key, &k)?;
            write_private(&srv_crt, &c)?;
            write_private(&sans_file, &sans.join("\n"))?;
            (c, k)
        }
    };
    let tok_path = dir.join("admin.token");
    let admin_token = match read(&tok_path)? {
        Some(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            let t = random_token();
            write_private(&tok_path, &t)?;
            t
        }
    };
    write_private(
        &dir.join("admin.kubeconfig"),
        &kubeconfig(server_url, &ca_pem, &admin_token, "admin"),
    )?;
    Ok(Pki {
        ca_pem,
        cert_pem,
        key_pem,
        admin_token,
        dir: dir.to_path_buf(),
        ca_key_pem,
    })
}

/// A kubeconfig for `server_url` that trusts `ca_pem` and presents `token`.
pub fn kubeconfig(server_url: &str, ca_pem: &str, token: &str, user: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: h8s\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: h8s\n  context:\n    cluster: h8s\n    user: {user}\n    namespace: default\ncurrent-context: h8s\n"
    )
}

/// A kubeconfig for `server_url` that trusts `ca_pem` and presents a client certificate.
pub fn kubeconfig_with_cert(
    server_url: &str,
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &str,
    user: &str,
) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    let (ca, cert, key) = (b64(ca_pem), b64(cert_pem), b64(key_pem));
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: h8s\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: h8s\n  context:\n    cluster: h8s\n    user: {user}\n    namespace: default\ncurrent-context: h8s\n"
    )
}

/// The rustls server configuration for the serving certificate, with ALPN h2 and
/// http/1.1. A client certificate is requested, not required: when one is sent it must
/// chain to the cluster CA (and the handshake fails otherwise); the authenticator maps it
/// to a user.
pub fn server_tls(pki: &Pki) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| Error::Pki(format!("server.crt: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes())
        .map_err(|e| Error::Pki(format!("server.key: {e}")))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Pki(e.to_string()))?
        .with_client_cert_verifier(client_verifier(pki, provider.clone())?)
        .with_single_cert(certs, key)
        .map_err(|e| Error::Pki(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Verifies client certificates against the cluster CA; connections without one are
/// accepted (they authenticate otherwise, or get 401).
fn client_verifier(
    pki: &Pki,
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
) -> Result<std::sync::Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(pki.ca_pem.as_bytes()) {
        let c = c.map_err(|e| Error::Pki(format!("ca.crt: {e}")))?;
        roots
            .add(c)
            .map_err(|e| Error::Pki(format!("ca.crt: {e}")))?;
    }
    rustls::server::WebPkiClientVerifier::builder_with_provider(
        std::sync::Arc::new(roots),
        provider,
    )
    .allow_unauthenticated()
    .build()
    .map_err(|e| Error::Pki(format!("client certificate verifier: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_then_reuses() {
        let d = tempfile::tempdir().unwrap();
        let a = ensure(d.path(), &[], "https://127.0.0.1:1").unwrap();
        let b = ensure(d.path(), &[], "https://127.0.0.1:1").unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        let l = Pki::load(d.path()).unwrap();
        assert_eq!(
            (l.ca_pem, l.admin_token),
            (a.ca_pem.clone(), a.admin_token.clone())
        );
        assert!(Pki::load(&d.path().join("nope")).is_err());
        assert_eq!(a.cert_pem, b.cert_pem);
        assert_eq!(a.admin_token, b.admin_token);
        let mode = fs::metadata(d.path().join("ca.key")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(mode.permissions().mode() & 0o777, 0o600);
        // A new SAN re-issues the serving certificate from the same CA.
        let c = ensure(d.path(), &["example.test".into()], "https://127.0.0.1:1").unwrap();
        assert_eq!(a.ca_pem, c.ca_pem);
        assert_ne!(a.cert_pem, c.cert_pem);
        assert!(server_tls(&c).is_ok());
        let kc = fs::read_to_string(d.path().join("admin.kubeconfig")).unwrap();
        assert!(kc.contains(&a.admin_token));
    }

    /// The serving certificate names what in-cluster clients dial: `kubernetes.default.svc`
    /// and the other Service names, the ClusterIP and the advertised address.
    #[test]
    fn serving_certificate_names_the_kubernetes_service() {
        use x509_parser::prelude::*;
        let d = tempfile::tempdir().unwrap();
        let ip: std::net::IpAddr = "192.0.2.7".parse().unwrap();
        let sans = in_cluster_sans("10.96.0.1".parse().unwrap(), ip);
        let p = ensure(d.path(), &sans, "https://127.0.0.1:1").unwrap();
        let (_, pem) = parse_x509_pem(p.cert_pem.as_bytes()).unwrap();
        let x = pem.parse_x509().unwrap();
        let names: Vec<String> = x
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .iter()
            .map(|n| match n {
                GeneralName::DNSName(d) => d.to_string(),
                GeneralName::IPAddress(b) if b.len() == 4 => {
                    std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()
                }
                other => format!("{other:?}"),
            })
            .collect();
        for want in [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "10.96.0.1",
            "192.0.2.7",
            "127.0.0.1",
            "localhost",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
    }

    fn days_valid(pem: &str) -> i64 {
        use x509_parser::prelude::*;
        let (_, der) = parse_x509_pem(pem.as_bytes()).unwrap();
        let x = der.parse_x509().unwrap();
        (x.validity().not_after.timestamp() - x.validity().not_before.timestamp()) / 86400
    }

    #[test]
    fn lifetimes_are_bounded_and_the_serving_certificate_renews() {
        let d = tempfile::tempdir().unwrap();
        let a = ensure(d.path(), &[], "https://127.0.0.1:1").unwrap();
        assert_eq!(days_valid(&a.ca_pem), 3650);
        assert_eq!(days_valid(&a.cert_pem), 365);
        assert!(!needs_renewal(&a.cert_pem, SERVING_CERT_LIFETIME));
        // A serving certificate with 10 days left (here: a client certificate standing in
        // for one, signed by the same CA) is renewed at the next start.
        let (short, key) = a
            .issue_client_cert("x", &[], Duration::from_secs(10 * 86400))
            .unwrap();
        assert!(needs_renewal(&short, SERVING_CERT_LIFETIME));
        write_private(&d.path().join("server.crt"), &short).unwrap();
        write_private(&d.path().join("server.key"), &key).unwrap();
        let b = ensure(d.path(), &[], "https://127.0.0.1:1").unwrap();
        assert_eq!(a.ca_pem, b.ca_pem);
        assert_ne!(b.cert_pem, short);
        assert_eq!(days_valid(&b.cert_pem), 365);
        // One valid for a century (made before lifetimes were bounded) is renewed too.
        assert!(needs_renewal(&a.ca_pem, SERVING_CERT_LIFETIME));
        assert!(needs_renewal("not a certificate", SERVING_CERT_LIFETIME));
    }

    #[test]
    fn client_cert_subject_and_validity() {
        use x509_parser::prelude::*;
        let d = tempfile::tempdir().unwrap();
        let pki = ensure(d.path(), &[], "https://127.0.0.1:1").unwrap();
        let groups = vec!["system:nodes".to_string()];
        let (cert, key) = pki
            .issue_client_cert("system:node:n1", &groups, CLIENT_CERT_LIFETIME)
            .unwrap();
        let two = ["a".to_string(), "b".to_string()];
        assert!(pki
            .issue_client_cert("u", &two, CLIENT_CERT_LIFETIME)
            .is_err());
        assert!(key.contains("PRIVATE KEY"));
        let (_, pem) = parse_x509_pem(cert.as_bytes()).unwrap();
        let x = pem.parse_x509().unwrap();
        let cn: Vec<_> = x
            .subject()
            .iter_common_name()
            .map(|a| a.as_str().unwrap())
            .collect();
        let o: Vec<_> = x
            .subject()
            .iter_organization()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(cn, ["system:node:n1"]);
        assert_eq!(o, ["system:nodes"]);
        let days =
            (x.validity().not_after.timestamp() - x.validity().not_before.timestamp()) / 86400;
        assert_eq!(days, 365);
        assert!(x.extended_key_usage().unwrap().unwrap().value.client_auth);
        // It verifies against the CA, as the TLS layer does.
        let (_, ca) = parse_x509_pem(pki.ca_pem.as_bytes()).unwrap();
        let ca = ca.parse_x509().unwrap();
        x.verify_signature(Some(ca.public_key())).unwrap();
        assert!(pki
            .issue_client_cert("", &[], CLIENT_CERT_LIFETIME)
            .is_err());
        let kc = pki.client_kubeconfig("https://x:1", "n1", &cert, &key);
        assert!(kc.contains("client-certificate-data"));
    }
}
