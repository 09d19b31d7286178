//! The server's own PKI: a CA, a serving certificate and the admin credential, created on
//! first start in the data directory and reused afterwards.
//!
//! Files (all mode 0600): `ca.crt`, `ca.key`, `server.crt`, `server.key`, `admin.token`,
//! `admin.kubeconfig`. The serving certificate is re-issued (by the same CA) when the
//! wanted subject alternative names are not all in the existing one, so adding a
//! `--tls-san` later does not invalidate kubeconfigs that trust the CA.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use crate::{Error, Result};

/// The PKI material the server runs with.
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
    pub admin_token: String,
    pub dir: PathBuf,
}

fn write_private(path: &Path, data: &str) -> Result<()> {
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

fn read(path: &Path) -> Result<Option<String>> {
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
    p.not_before = rcgen::date_time_ymd(2024, 1, 1);
    p.not_after = rcgen::date_time_ymd(2124, 1, 1);
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
            let cert = ca_params().self_signed(&key).map_err(rc)?;
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
        (Some(c), Some(k)) if sans.iter().all(|s| have.contains(&s.as_str())) => (c, k),
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
            p.not_before = rcgen::date_time_ymd(2024, 1, 1);
            p.not_after = rcgen::date_time_ymd(2124, 1, 1);
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
    })
}

/// A kubeconfig for `server_url` that trusts `ca_pem` and presents `token`.
pub fn kubeconfig(server_url: &str, ca_pem: &str, token: &str, user: &str) -> String {
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem.as_bytes());
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: h8s\n  cluster:\n    server: {server_url}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    token: {token}\ncontexts:\n- name: h8s\n  context:\n    cluster: h8s\n    user: {user}\n    namespace: default\ncurrent-context: h8s\n"
    )
}

/// The rustls server configuration for the serving certificate, with ALPN h2 and
/// http/1.1.
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
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Pki(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::Pki(e.to_string()))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(cfg)
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
}
