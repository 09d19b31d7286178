//! Secrets encrypted at rest: `h8s server --encryption-provider-config` with kube-apiserver's
//! EncryptionConfiguration; kubectl reads them back, the store file never holds them in plain.

mod api_support;

use api_support::Server;
use std::ffi::OsStr;

#[test]
fn secrets_are_encrypted_in_the_store_file_and_readable_through_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("encryption.yaml");
    std::fs::write(
        &cfg,
        "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
         - resources: [secrets]\n  providers:\n  - aesgcm:\n      keys:\n      - name: key1\n        \
         secret: MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n  - identity: {}\n",
    )
    .unwrap();
    let s = Server::start_with(
        dir,
        &[OsStr::new("--encryption-provider-config"), cfg.as_os_str()],
    );
    let marker = "plaintext-marker-7f3a9c";
    s.kubectl(
        "1.33",
        &[
            "create",
            "secret",
            "generic",
            "s",
            &format!("--from-literal=k={marker}"),
        ],
    );
    // A ConfigMap with the same text shows the search would find plain text.
    s.kubectl(
        "1.33",
        &[
            "create",
            "configmap",
            "c",
            &format!("--from-literal=k={marker}"),
        ],
    );
    let got = s.kubectl("1.33", &["get", "secret", "s", "-o", "jsonpath={.data.k}"]);
    let encoded = "cGxhaW50ZXh0LW1hcmtlci03ZjNhOWM="; // base64 of the marker
    assert_eq!(got.trim(), encoded);
    let data = s.data_dir();
    let dir = s.stop();
    let file = std::fs::read(data.join("store.redb")).unwrap();
    let count = |needle: &[u8]| file.windows(needle.len()).filter(|w| *w == needle).count();
    assert!(
        count(marker.as_bytes()) >= 1,
        "the ConfigMap is stored in plain text"
    );
    assert_eq!(
        count(encoded.as_bytes()),
        0,
        "the Secret's data is not in the file"
    );
    assert!(count(b"k8s:enc:aesgcm:v1:key1:") >= 1);

    // Restarted with the same configuration, the Secret reads back.
    let s = Server::start_with(
        dir,
        &[OsStr::new("--encryption-provider-config"), cfg.as_os_str()],
    );
    let got = s.kubectl("1.33", &["get", "secret", "s", "-o", "jsonpath={.data.k}"]);
    assert_eq!(got.trim(), encoded);
}
