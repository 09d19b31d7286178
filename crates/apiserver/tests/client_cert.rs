//! X.509 client certificates over a real TLS connection, driven by real kubectl: the
//! server requests a certificate, verifies it against the cluster CA and maps its subject
//! to a user (CN) and groups (O).

use std::path::Path;
use std::process::Command;

const KUBECTL: &str = "/usr/lib/google-cloud-sdk/bin/kubectl.1.33";

fn whoami(kubeconfig: &Path) -> Result<serde_json::Value, String> {
    let out = Command::new(KUBECTL)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["auth", "whoami", "-o", "json"])
        .output()
        .expect("running kubectl");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(serde_json::from_slice(&out.stdout).expect("whoami JSON"))
}

#[tokio::test(flavor = "multi_thread")]
async fn client_certificates_authenticate() {
    assert!(
        Path::new(KUBECTL).exists(),
        "{KUBECTL} is missing: install the kubectl Debian package (google-cloud-sdk)"
    );
    let dir = tempfile::tempdir().unwrap();
    let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
    let cfg = h8s_apiserver::Config::new(
        dir.path().to_path_buf(),
        "127.0.0.1:0".parse().unwrap(),
        store,
    );
    let srv = h8s_apiserver::Server::start(cfg).await.unwrap();
    let url = format!("https://{}", srv.addr);

    let (cert, key) = srv
        .pki
        .issue_client_cert(
            "jane",
            &["dev".to_string()],
            h8s_apiserver::CLIENT_CERT_LIFETIME,
        )
        .unwrap();
    let kc = dir.path().join("jane.kubeconfig");
    std::fs::write(&kc, srv.pki.client_kubeconfig(&url, "jane", &cert, &key)).unwrap();
    let kc2 = kc.clone();
    let me = tokio::task::spawn_blocking(move || whoami(&kc2))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(me["status"]["userInfo"]["username"], "jane");
    assert_eq!(
        me["status"]["userInfo"]["groups"],
        serde_json::json!(["dev", "system:authenticated"])
    );

    // The token kubeconfig keeps working on the same listener (no certificate sent).
    let admin = dir.path().join("admin.kubeconfig");
    let me = tokio::task::spawn_blocking(move || whoami(&admin))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(me["status"]["userInfo"]["username"], "admin");

    // A certificate from another CA is refused.
    let other = tempfile::tempdir().unwrap();
    let foreign = h8s_apiserver::Pki::load(&{
        // A second server's PKI, created in its own dir and never started.
        let d = other.path().to_path_buf();
        let store = h8s_store::open("embedded", &d, None).await.unwrap();
        let cfg = h8s_apiserver::Config::new(d.clone(), "127.0.0.1:0".parse().unwrap(), store);
        let s2 = h8s_apiserver::Server::start(cfg).await.unwrap();
        s2.shutdown().await;
        d
    })
    .unwrap();
    let (fc, fk) = foreign
        .issue_client_cert(
            "mallory",
            &["system:masters".to_string()],
            h8s_apiserver::CLIENT_CERT_LIFETIME,
        )
        .unwrap();
    let bad = dir.path().join("mallory.kubeconfig");
    // Trusts our server's CA but presents the foreign client certificate.
    std::fs::write(&bad, srv.pki.client_kubeconfig(&url, "mallory", &fc, &fk)).unwrap();
    let r = tokio::task::spawn_blocking(move || whoami(&bad))
        .await
        .unwrap();
    assert!(r.is_err(), "a foreign certificate authenticated: {r:?}");

    srv.shutdown().await;
}
