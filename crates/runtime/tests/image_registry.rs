//! Push to and pull from Debian's `docker-registry` (the CNCF distribution registry),
//! started by each test on a free loopback port and killed by PID when it ends:
//! anonymous and basic auth, tags, digests, an OCI index, progress and caching.
//! Needs docker-registry, busybox-static and erofs-utils (scripts/setup installs them).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use h8s_runtime::image::{Credentials, Error, ImageStore, Progress, ProgressFn, PullOptions};

const REGISTRY: &str = "/usr/bin/docker-registry";

/// These tests' registries run on loopback, which a pull must be allowed to reach.
fn local() -> PullOptions {
    PullOptions {
        allow_local_registries: true,
        ..Default::default()
    }
}

struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `htpasswd`, basic auth for that user and password.
    fn start(htpasswd: Option<(&str, &str)>) -> Registry {
        Registry::start_with(htpasswd, "")
    }

    /// Same, with extra configuration (an `auth:` section) appended.
    fn start_with(htpasswd: Option<(&str, &str)>, extra: &str) -> Registry {
        assert!(
            Path::new(REGISTRY).exists(),
            "needs Debian's docker-registry (scripts/setup)"
        );
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut config = format!(
            "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n  secret: h8s-test-secret\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = htpasswd {
            // The registry reads bcrypt only; $2a$ is the variant every version accepts.
            let hash = bcrypt::hash_with_result(password, 4)
                .unwrap()
                .format_for_version(bcrypt::Version::TwoA);
            let file = dir.path().join("htpasswd");
            std::fs::write(&file, format!("{user}:{hash}\n")).unwrap();
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: h8s-test\n    path: {}\n",
                file.display()
            ));
        }
        config.push_str(extra);
        let cfg = dir.path().join("config.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&cfg)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let mut r = Registry {
            child,
            port,
            _dir: dir,
        };
        r.wait_ready();
        r
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                let log = std::fs::read_to_string(self._dir.path().join("registry.log"))
                    .unwrap_or_default();
                panic!("registry exited ({st}): {log}");
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = s.write_all(b"GET /v2/ HTTP/1.0\r\n\r\n");
                let mut buf = [0u8; 12];
                if s.read(&mut buf).unwrap_or(0) >= 9 && buf.starts_with(b"HTTP/1.") {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "registry did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A raw PUT, for what our client has no call for (an index document).
    fn put(&self, path: &str, content_type: &str, body: &[u8]) -> String {
        let mut s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        let head = format!(
            "PUT {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.host(),
            body.len()
        );
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        // Child::kill signals exactly this PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn busybox_layout(dir: &Path) -> PathBuf {
    let out = dir.join("busybox-oci");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let st = Command::new("bash")
        .arg(root.join("scripts/build-test-image.sh"))
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(
        st.success(),
        "build-test-image.sh failed (needs busybox-static)"
    );
    out
}

/// A one-layer docker-archive, to have a second, different image.
fn other_image(path: &Path) {
    let mut l = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o644);
    h.set_size(5);
    l.append_data(&mut h, "hello.txt", &b"hello"[..]).unwrap();
    let layer = l.into_inner().unwrap();
    let config = br#"{"architecture":"arm64","os":"linux","config":{"Cmd":["cat","/hello.txt"]}}"#;
    let manifest = br#"[{"Config":"config.json","RepoTags":["other:1"],"Layers":["l/layer.tar"]}]"#;
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in [
        ("l/layer.tar", &layer[..]),
        ("config.json", &config[..]),
        ("manifest.json", &manifest[..]),
    ] {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    }
    b.finish().unwrap();
}

fn recorder() -> (Arc<Mutex<Vec<Progress>>>, ProgressFn) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    (
        events,
        Arc::new(move |p: &Progress| e.lock().unwrap().push(p.clone())),
    )
}

#[tokio::test]
async fn push_then_pull_anonymous_by_tag_digest_and_index() {
    let reg = Registry::start(None);
    let t = tempfile::tempdir().unwrap();
    let src = ImageStore::open(&t.path().join("src")).unwrap();
    let bb = src
        .import(&busybox_layout(t.path()), None)
        .await
        .unwrap()
        .remove(0);
    let target = format!("{}/test/busybox:v1", reg.host());
    let pushed = src.push("busybox", &target, &local()).await.unwrap();
    assert_eq!(pushed, bb.manifest_digest);

    let dst = ImageStore::open(&t.path().join("dst")).unwrap();
    let (events, progress) = recorder();
    let opts = PullOptions {
        progress: Some(progress),
        ..local()
    };
    let img = dst.pull(&target, &opts).await.unwrap();
    assert_eq!(img.id, bb.id);
    assert_eq!(img.digest, bb.manifest_digest);
    assert_eq!(img.names, vec![target.clone()]);
    assert_eq!(img.config, bb.config);
    {
        let ev = events.lock().unwrap();
        assert!(
            matches!(&ev[0], Progress::Resolved { layers: 1, .. }),
            "{ev:?}"
        );
        let layer = ev.iter().find_map(|p| match p {
            Progress::Done {
                digest,
                size,
                cached: false,
            } if *size > 500_000 => Some(digest.clone()),
            _ => None,
        });
        let layer = layer.expect("layer downloaded");
        let last = ev.iter().rev().find_map(|p| match p {
            Progress::Downloading {
                digest,
                received,
                total,
            } if digest == &layer => Some((*received, *total)),
            _ => None,
        });
        let (received, total) = last.expect("byte progress reported");
        assert_eq!(received, total);
    }
    let rootfs = dst.rootfs(&img).await.unwrap();
    assert!(rootfs.is_file());

    // Again: everything already present.
    events.lock().unwrap().clear();
    dst.pull(&target, &opts).await.unwrap();
    assert!(events
        .lock()
        .unwrap()
        .iter()
        .all(|p| !matches!(p, Progress::Done { cached: false, .. })));

    // By digest, under another repository name form (localhost).
    let by_digest = format!("{}/test/busybox@{}", reg.host(), bb.manifest_digest);
    assert_eq!(dst.pull(&by_digest, &local()).await.unwrap().id, bb.id);
    // Without the allowance a loopback registry is refused — by address and by name — with
    // a clear error, and nothing is pulled.
    let fresh = ImageStore::open(&t.path().join("fresh")).unwrap();
    for r in [
        target.clone(),
        format!("localhost:{}/test/busybox:v1", reg.port),
    ] {
        match fresh.pull(&r, &PullOptions::default()).await {
            Err(Error::Registry { message, .. }) => {
                assert!(
                    message.contains("refusing to connect to local address"),
                    "{message}"
                )
            }
            other => panic!("{r}: {other:?}"),
        }
    }
    assert!(fresh.list().unwrap().is_empty());
    let via_localhost = format!("localhost:{}/test/busybox:v1", reg.port);
    assert_eq!(dst.pull(&via_localhost, &local()).await.unwrap().id, bb.id);

    // An OCI index with an arm64 image first: the amd64 one is chosen.
    let other_tar = t.path().join("other.tar");
    other_image(&other_tar);
    let other = src.import(&other_tar, None).await.unwrap().remove(0);
    src.push(
        "other:1",
        &format!("{}/test/busybox:arm", reg.host()),
        &local(),
    )
    .await
    .unwrap();
    let size = |d: &h8s_runtime::image::Digest| {
        std::fs::metadata(src.root().join("blobs/sha256").join(d.hex()))
            .unwrap()
            .len()
    };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": other.manifest_digest.to_string(),
             "size": size(&other.manifest_digest), "platform": {"architecture": "arm64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": bb.manifest_digest.to_string(),
             "size": size(&bb.manifest_digest), "platform": {"architecture": "amd64", "os": "linux"}},
        ]
    });
    let body = serde_json::to_vec(&index).unwrap();
    let resp = reg.put(
        "/v2/test/busybox/manifests/multi",
        "application/vnd.oci.image.index.v1+json",
        &body,
    );
    assert!(resp.starts_with("HTTP/1.1 201"), "{resp}");
    let multi = dst
        .pull(&format!("{}/test/busybox:multi", reg.host()), &local())
        .await
        .unwrap();
    assert_eq!(multi.id, bb.id);
    assert_eq!(
        multi.digest,
        h8s_runtime::image::Digest::of(&body),
        "the name pins the index"
    );
    assert_eq!(multi.manifest_digest, bb.manifest_digest);

    // Missing things are typed errors.
    let missing = format!("{}/test/busybox:nope", reg.host());
    assert!(matches!(
        dst.pull(&missing, &local()).await,
        Err(Error::NotFound(_))
    ));
    let missing = format!("{}/test/absent:v1", reg.host());
    assert!(matches!(
        dst.pull(&missing, &local()).await,
        Err(Error::NotFound(_))
    ));
    assert!(dst.list().unwrap().iter().all(|i| i.id == bb.id));
    assert!(
        std::fs::read_dir(dst.root().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no partial files"
    );
}

#[tokio::test]
async fn basic_auth_push_and_pull() {
    let reg = Registry::start(Some(("h8s", "s3cret pass")));
    let t = tempfile::tempdir().unwrap();
    let src = ImageStore::open(&t.path().join("src")).unwrap();
    let bb = src
        .import(&busybox_layout(t.path()), None)
        .await
        .unwrap()
        .remove(0);
    let target = format!("{}/private/busybox:v1", reg.host());
    let creds = |password: &str| PullOptions {
        auth: Some(Credentials {
            username: "h8s".into(),
            password: password.into(),
        }),
        ..local()
    };

    let err = src.push("busybox", &target, &local()).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err}");
    src.push("busybox", &target, &creds("s3cret pass"))
        .await
        .unwrap();

    let dst = ImageStore::open(&t.path().join("dst")).unwrap();
    let err = dst.pull(&target, &local()).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err}");
    let err = dst.pull(&target, &creds("wrong")).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err}");
    assert!(dst.list().unwrap().is_empty());
    let img = dst.pull(&target, &creds("s3cret pass")).await.unwrap();
    assert_eq!(img.id, bb.id);
    assert!(dst.rootfs(&img).await.unwrap().is_file());
}

/// A token server for the registry's `token` auth: checks basic credentials and
/// answers with an ES256 JWT whose x5c certificate the registry trusts. Records the
/// scopes it was asked for.
struct TokenServer {
    port: u16,
    scopes: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TokenServer {
    async fn start(dir: &Path, user: &'static str, password: &'static str) -> TokenServer {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["h8s-token-issuer".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(dir.join("token.crt"), cert.pem()).unwrap();
        let rng = ring::rand::SystemRandom::new();
        let signer = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &key.serialize_der(),
            &rng,
        )
        .unwrap();
        let header = serde_json::json!({
            "typ": "JWT", "alg": "ES256",
            "x5c": [base64::engine::general_purpose::STANDARD.encode(cert.der())],
        });
        let header = b64.encode(serde_json::to_vec(&header).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let scopes = Arc::new(Mutex::new(Vec::new()));
        let seen = scopes.clone();
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let task = tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 8192];
                let mut n = 0;
                while !buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf[n..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(m) => n += m,
                    }
                }
                let req = String::from_utf8_lossy(&buf[..n]).to_string();
                let target = req.split_whitespace().nth(1).unwrap_or("").to_owned();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let param = |k: &str| {
                    query
                        .split('&')
                        .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                        .unwrap_or("")
                        .to_owned()
                };
                let scope = param("scope")
                    .replace("%3A", ":")
                    .replace("%2F", "/")
                    .replace("%2C", ",");
                seen.lock().unwrap().push(scope.clone());
                let authed = req.lines().any(|l| {
                    l.split_once(':').is_some_and(|(k, v)| {
                        k.eq_ignore_ascii_case("authorization") && v.trim() == good
                    })
                });
                let resp = if !authed {
                    "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                        .to_string()
                } else {
                    // scope = repository:<name>:<actions>
                    let mut parts = scope.splitn(3, ':');
                    let (_, name, actions) = (
                        parts.next(),
                        parts.next().unwrap_or(""),
                        parts.next().unwrap_or(""),
                    );
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let claims = serde_json::json!({
                        "iss": "h8s-test-issuer", "sub": user, "aud": param("service"),
                        "exp": now + 300, "nbf": now - 10, "iat": now, "jti": format!("{now}-{n}"),
                        "access": [{"type": "repository", "name": name,
                                    "actions": actions.split(',').collect::<Vec<_>>()}],
                    });
                    let signing_input = format!(
                        "{header}.{}",
                        b64.encode(serde_json::to_vec(&claims).unwrap())
                    );
                    let sig = signer.sign(&rng, signing_input.as_bytes()).unwrap();
                    let token = format!("{signing_input}.{}", b64.encode(sig.as_ref()));
                    let body = serde_json::json!({"token": token, "expires_in": 300}).to_string();
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = s.write_all(resp.as_bytes()).await;
            }
        });
        TokenServer { port, scopes, task }
    }
}

impl Drop for TokenServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test]
async fn bearer_token_flow() {
    let t = tempfile::tempdir().unwrap();
    let tokens = TokenServer::start(t.path(), "alice", "wonder land").await;
    let auth = format!(
        "auth:\n  token:\n    realm: http://127.0.0.1:{}/token\n    service: h8s-test-registry\n    \
         issuer: h8s-test-issuer\n    rootcertbundle: {}\n",
        tokens.port,
        t.path().join("token.crt").display()
    );
    let reg = Registry::start_with(None, &auth);
    let src = ImageStore::open(&t.path().join("src")).unwrap();
    let bb = src
        .import(&busybox_layout(t.path()), None)
        .await
        .unwrap()
        .remove(0);
    let target = format!("{}/team/busybox:v1", reg.host());
    let creds = |password: &str| PullOptions {
        auth: Some(Credentials {
            username: "alice".into(),
            password: password.into(),
        }),
        ..local()
    };

    let err = src.push("busybox", &target, &local()).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err}");
    src.push("busybox", &target, &creds("wonder land"))
        .await
        .unwrap();
    assert!(tokens
        .scopes
        .lock()
        .unwrap()
        .iter()
        .any(|s| s == "repository:team/busybox:pull,push"));

    let dst = ImageStore::open(&t.path().join("dst")).unwrap();
    let err = dst.pull(&target, &creds("wrong")).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized(_)), "{err}");
    tokens.scopes.lock().unwrap().clear();
    let img = dst.pull(&target, &creds("wonder land")).await.unwrap();
    assert_eq!(img.id, bb.id);
    // One token for the whole pull: manifest, config and layer reuse it.
    assert_eq!(
        *tokens.scopes.lock().unwrap(),
        vec!["repository:team/busybox:pull".to_string()]
    );
}
