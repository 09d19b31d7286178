//! `h8s server --keystone-url` against a real OpenStack Keystone (from PyPI, installed by
//! scripts/setup.d/40-identity.sh into `$H8S_CACHE/keystone`), run here on SQLite with
//! fernet tokens under gunicorn on a loopback port, in its own temporary directory, and
//! stopped by PID afterwards.
//!
//! One scenario, in order: Keystone projects and users (made through Keystone's own API);
//! `h8s login` through the API server's `/v3` (passed to Keystone) and kubectl with the
//! exec plugin; the mapping (project → Tenant and user → User mirrors with their Keystone
//! ids, roles → `h8s:role:` groups, only `admin` on the cloud-admin project is
//! `system:masters`, a project's own admin is not); a tenant user working in its own
//! namespace and not seeing another tenant's; bad input (401 that does not say whether
//! the user exists, 400 for malformed bodies, back-off); a user deleted in Keystone losing
//! access within the cache TTL; and a Keystone outage: cached tokens keep working for the
//! TTL, then 503 with a message naming Keystone.

mod api_support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use api_support::{eventually, json, Server};
use serde_json::{json, Value};

/// The cache TTL the server runs with here (short, so the test sees it pass).
const CACHE_TTL_SECS: u64 = 3;

fn keystone_venv() -> PathBuf {
    let cache = std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/h8s")
        });
    let v = cache.join("keystone");
    assert!(
        v.join("bin/keystone-manage").exists() && v.join("bin/gunicorn").exists(),
        "{} is missing: run scripts/setup.d/40-identity.sh (OpenStack Keystone + gunicorn)",
        v.display()
    );
    v
}

/// A Keystone (SQLite, fernet) under gunicorn with one worker on 127.0.0.1:`port`.
struct Keystone {
    dir: tempfile::TempDir,
    port: u16,
    gunicorn: Child,
    url: String,
}

impl Keystone {
    fn start() -> Keystone {
        let venv = keystone_venv();
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path();
        let port = h8s_store::testing::free_port();
        std::fs::write(
            base.join("keystone.conf"),
            format!(
                "[DEFAULT]\nlog_file = {b}/keystone.log\n[database]\nconnection = sqlite:///{b}/keystone.db\n\
                 [token]\nprovider = fernet\nexpiration = 3600\n[fernet_tokens]\nkey_repository = {b}/fernet-keys\n\
                 [credential]\nkey_repository = {b}/credential-keys\n",
                b = base.display()
            ),
        )
        .expect("keystone.conf");
        // oslo.config would otherwise parse gunicorn's argv and exit.
        std::fs::write(
            base.join("ks_wsgi.py"),
            "import sys\nsys.argv = sys.argv[:1]\nfrom keystone.server import wsgi\n\
             application = wsgi.initialize_public_application()\n",
        )
        .expect("ks_wsgi.py");
        let conf = base.join("keystone.conf");
        let manage = |args: &[&str]| {
            let o = Command::new(venv.join("bin/keystone-manage"))
                .arg("--config-file")
                .arg(&conf)
                .args(args)
                .env("OS_KEYSTONE_CONFIG_DIR", base)
                .output()
                .expect("keystone-manage");
            assert!(
                o.status.success(),
                "keystone-manage {args:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        manage(&["db_sync"]);
        for what in ["fernet_setup", "credential_setup"] {
            manage(&[what, "--keystone-user", "root", "--keystone-group", "root"]);
        }
        let public = format!("http://127.0.0.1:{port}/v3/");
        manage(&[
            "bootstrap",
            "--bootstrap-password",
            "secret",
            "--bootstrap-username",
            "admin",
            "--bootstrap-project-name",
            "admin",
            "--bootstrap-role-name",
            "admin",
            "--bootstrap-service-name",
            "keystone",
            "--bootstrap-region-id",
            "RegionOne",
            "--bootstrap-public-url",
            &public,
        ]);
        let gunicorn = gunicorn(base, port);
        let ks = Keystone {
            dir,
            port,
            gunicorn,
            url: format!("http://127.0.0.1:{port}/v3"),
        };
        ks.wait_ready();
        ks
    }

    fn wait_ready(&self) {
        assert!(
            eventually(60, || self.call("GET", "", None, None).0 == 200),
            "Keystone did not answer on port {}: {}",
            self.port,
            std::fs::read_to_string(self.dir.path().join("gunicorn.out")).unwrap_or_default()
        );
    }

    /// Stops gunicorn (SIGTERM by PID, SIGKILL if it lingers): an outage. Its state (the
    /// SQLite database, the fernet keys) stays in the directory.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.gunicorn.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.gunicorn.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.gunicorn.kill();
        let _ = self.gunicorn.wait();
    }

    /// Kills gunicorn's worker and master at once (SIGKILL by PID): a sudden outage.
    fn kill_now(&mut self) {
        let master = self.gunicorn.id().to_string();
        let workers = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        for pid in workers.split_whitespace().chain([master.as_str()]) {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
        let _ = self.gunicorn.wait();
        assert!(
            eventually(5, || self.call("GET", "", None, None).0 == 0),
            "Keystone still answers"
        );
    }

    /// Starts gunicorn again on the same port and state.
    fn restart(&mut self) {
        self.gunicorn = gunicorn(self.dir.path(), self.port);
        self.wait_ready();
    }

    /// One request to Keystone itself: (status, X-Subject-Token, body).
    fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String, Value) {
        curl(&format!("{}{path}", self.url), None, method, token, body)
    }

    fn admin_token(&self) -> String {
        let (c, tok, b) = self.call(
            "POST",
            "/auth/tokens",
            None,
            Some(&password_body("admin", "secret", Some("admin"))),
        );
        assert_eq!(c, 201, "{b}");
        tok
    }

    fn project(&self, admin: &str, name: &str) -> String {
        let (c, _, b) = self.call(
            "POST",
            "/projects",
            Some(admin),
            Some(&json!({"project": {"name": name, "domain_id": "default", "enabled": true}})),
        );
        assert_eq!(c, 201, "{b}");
        b["project"]["id"].as_str().unwrap().to_string()
    }

    fn user(&self, admin: &str, name: &str, project: &str, role: &str) -> String {
        let (c, _, b) = self.call(
            "POST",
            "/users",
            Some(admin),
            Some(&json!({"user": {"name": name, "domain_id": "default",
                "password": format!("{name}-pw"), "default_project_id": project}})),
        );
        assert_eq!(c, 201, "{b}");
        let uid = b["user"]["id"].as_str().unwrap().to_string();
        let (c, _, b) = self.call("GET", &format!("/roles?name={role}"), Some(admin), None);
        assert_eq!(c, 200, "{b}");
        let rid = b["roles"][0]["id"].as_str().unwrap().to_string();
        let (c, _, b) = self.call(
            "PUT",
            &format!("/projects/{project}/users/{uid}/roles/{rid}"),
            Some(admin),
            None,
        );
        assert_eq!(c, 204, "{b}");
        uid
    }
}

impl Drop for Keystone {
    fn drop(&mut self) {
        self.stop();
    }
}

/// gunicorn with one worker serving Keystone from `base` on 127.0.0.1:`port`.
fn gunicorn(base: &Path, port: u16) -> Child {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(base.join("gunicorn.out"))
        .expect("log");
    Command::new(keystone_venv().join("bin/gunicorn"))
        .args(["-b", &format!("127.0.0.1:{port}"), "-w", "1", "--chdir"])
        .arg(base)
        .arg("ks_wsgi:application")
        .env("OS_KEYSTONE_CONFIG_DIR", base)
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("log"))
        .stderr(out)
        .spawn()
        .expect("gunicorn")
}

fn password_body(user: &str, pw: &str, project: Option<&str>) -> Value {
    let mut v = json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"name": user, "domain": {"name": "Default"}, "password": pw}}}}});
    if let Some(p) = project {
        v["auth"]["scope"] = json!({"project": {"name": p, "domain": {"name": "Default"}}});
    }
    v
}

/// One request with curl: (status, X-Subject-Token, body as JSON or a string).
fn curl(
    url: &str,
    ca: Option<&Path>,
    method: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, String, Value) {
    curl_raw(
        url,
        ca,
        method,
        &[("X-Auth-Token", token)],
        body.map(Value::to_string),
    )
}

fn curl_raw(
    url: &str,
    ca: Option<&Path>,
    method: &str,
    headers: &[(&str, Option<&str>)],
    body: Option<String>,
) -> (u16, String, Value) {
    let dir = tempfile::tempdir().expect("tmp");
    let hdr = dir.path().join("h");
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "-m",
        "20",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "-D",
    ])
    .arg(&hdr);
    if let Some(ca) = ca {
        c.arg("--cacert").arg(ca);
    }
    for (k, v) in headers {
        if let Some(v) = v {
            c.args(["-H", &format!("{k}: {v}")]);
        }
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", &b]);
    }
    c.arg(url);
    let o = c.output().expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (b, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    let subject = std::fs::read_to_string(&hdr)
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-subject-token")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let v = serde_json::from_str(b).unwrap_or_else(|_| Value::String(b.to_string()));
    (code.trim().parse().unwrap_or(0), subject, v)
}

fn run(mut c: Command, stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    c.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    })
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let mut ch = c.spawn().expect("spawn");
    if let Some(i) = stdin {
        ch.stdin
            .take()
            .expect("stdin")
            .write_all(i.as_bytes())
            .expect("stdin");
    }
    let o = ch.wait_with_output().expect("output");
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string(),
        String::from_utf8_lossy(&o.stderr).to_string(),
    )
}

/// The API server under test and how to reach it.
struct H8s {
    srv: Server,
    ca: PathBuf,
}

impl H8s {
    /// A request to the API server: (status, X-Subject-Token, body).
    fn call(
        &self,
        method: &str,
        path: &str,
        bearer: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String, Value) {
        let auth = bearer.map(|t| format!("Bearer {t}"));
        curl_raw(
            &format!("{}{path}", self.srv.url),
            Some(&self.ca),
            method,
            &[("Authorization", auth.as_deref())],
            body.map(Value::to_string),
        )
    }

    /// A Keystone call through the API server's `/v3`.
    fn v3(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, String, Value) {
        curl(
            &format!("{}/v3{path}", self.srv.url),
            Some(&self.ca),
            method,
            token,
            body,
        )
    }

    /// A scoped token for `user` (see [`password`]) through the API server.
    fn token(&self, user: &str, project: &str) -> String {
        let (c, tok, b) = self.v3(
            "POST",
            "/auth/tokens?nocatalog",
            None,
            Some(&password_body(user, &password(user), Some(project))),
        );
        assert_eq!(c, 201, "{user}: {b}");
        assert!(!tok.is_empty());
        tok
    }

    fn admin_get(&self, path: &str) -> (u16, Value) {
        let (c, _, b) = self.call("GET", path, Some(&self.srv.token), None);
        (c, b)
    }

    /// `kubectl auth whoami` as the bearer of `token`.
    fn whoami(&self, token: &str) -> Value {
        let (c, _, b) = self.call(
            "POST",
            "/apis/authentication.k8s.io/v1/selfsubjectreviews",
            Some(token),
            Some(&json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})),
        );
        assert_eq!(c, 201, "{b}");
        b["status"]["userInfo"].clone()
    }
}

/// The test users' passwords (`admin`'s is the bootstrap one).
fn password(user: &str) -> String {
    if user == "admin" {
        "secret".into()
    } else {
        format!("{user}-pw")
    }
}

/// A JSON array of strings, sorted (Keystone lists roles in no fixed order).
fn sorted(v: &Value) -> Value {
    let mut a: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect();
    a.sort();
    json!(a)
}

#[test]
fn external_keystone() {
    let t0 = Instant::now();
    let mut ks = Keystone::start();
    eprintln!("keystone ready in {:?}", t0.elapsed());
    let admin = ks.admin_token();
    let acme = ks.project(&admin, "acme");
    let globex = ks.project(&admin, "globex");
    let alice_id = ks.user(&admin, "alice", &acme, "member");
    ks.user(&admin, "bob", &acme, "admin");
    ks.user(&admin, "carol", &globex, "member");
    ks.user(&admin, "dave", &globex, "member");

    let srv = Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        &[
            "--keystone-url".as_ref(),
            ks.url.as_ref(),
            "--keystone-cache-ttl".as_ref(),
            format!("{CACHE_TTL_SECS}s").as_ref(),
            // Keystone's bcrypt logins take seconds on a busy machine.
            "--keystone-timeout".as_ref(),
            "20s".as_ref(),
        ],
    );
    let h = H8s {
        ca: srv.data_dir().join("ca.crt"),
        srv,
    };
    // No built-in identity: no admin.password, /v3 is Keystone's (its version document).
    assert!(!h.srv.data_dir().join("admin.password").exists());
    let (c, _, b) = h.v3("GET", "", None, None);
    assert_eq!(c, 200, "{b}");
    assert!(
        b["version"]["id"].as_str().unwrap_or("").starts_with("v3."),
        "{b}"
    );

    // --- h8s login through the API server's /v3, kubectl with the exec plugin.
    let h8s = env!("CARGO_BIN_EXE_h8s");
    let home = tempfile::tempdir().expect("home");
    let env = |c: &mut Command| {
        c.env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .env_remove("KUBECONFIG");
    };
    let kc = home.path().join("kubeconfig");
    let mut c = Command::new(h8s);
    env(&mut c);
    c.args([
        "login",
        "--server",
        &h.srv.url,
        "--user",
        "alice",
        "--tenant",
        "acme",
        "--password-stdin",
    ])
    .arg("--certificate-authority")
    .arg(&h.ca)
    .arg("--kubeconfig")
    .arg(&kc);
    let (ok, out, err) = run(c, Some("alice-pw\n"));
    assert!(ok, "h8s login: {out}{err}");
    let kubectl_as_alice = |args: &[&str]| {
        let mut c = Command::new(api_support::kubectl_bin("1.33"));
        env(&mut c);
        c.arg("--kubeconfig").arg(&kc).args(args);
        run(c, None)
    };
    let (ok, out, err) = kubectl_as_alice(&["auth", "whoami", "-o", "json"]);
    assert!(ok, "{err}");
    let who = json(&out)["status"]["userInfo"].clone();
    assert_eq!(who["username"], "alice");
    assert_eq!(who["uid"], alice_id.as_str());
    assert_eq!(
        sorted(&who["groups"]),
        // Keystone's bootstrap roles imply one another: member brings reader.
        sorted(&json!([
            "h8s:tenant:acme",
            "h8s:role:member",
            "h8s:role:reader",
            "system:authenticated"
        ]))
    );
    assert_eq!(
        who["extra"]["alpha.kubernetes.io/identity/project/id"],
        json!([acme])
    );

    // --- project → Tenant, user → User, both carrying their Keystone ids.
    let (c, t) = h.admin_get("/apis/tenancy.h8s.io/v1/tenants/acme");
    assert_eq!(c, 200, "{t}");
    assert_eq!(
        t["metadata"]["annotations"]["tenancy.h8s.io/keystone-project-id"],
        acme.as_str()
    );
    let (c, u) = h.admin_get("/apis/tenancy.h8s.io/v1/users/alice");
    assert_eq!(c, 200, "{u}");
    assert_eq!(u["spec"]["tenant"], "acme");
    assert_eq!(
        u["metadata"]["annotations"]["tenancy.h8s.io/keystone-user-id"],
        alice_id.as_str()
    );

    // --- the tenant user works in its own namespace (the auth-controller binds its User
    // to namespace-creater; the tenant group gets `admin` in the namespace).
    assert!(
        eventually(30, || kubectl_as_alice(&[
            "create",
            "namespace",
            "acme-dev"
        ])
        .0),
        "alice could not create a namespace"
    );
    assert!(
        eventually(30, || kubectl_as_alice(&[
            "-n",
            "acme-dev",
            "create",
            "configmap",
            "c1",
            "--from-literal=k=v"
        ])
        .0),
        "alice could not work in her namespace"
    );
    let (ok, out, err) = kubectl_as_alice(&["get", "namespaces", "-o", "name"]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        "namespace/acme-dev",
        "alice sees only her tenant's namespaces"
    );

    // --- another tenant sees none of it.
    let carol = h.token("carol", "globex");
    // (Her User was mirrored just now; the auth-controller binds it to namespace-creater.)
    let mut b = Value::Null;
    assert!(
        eventually(30, || {
            let r = h.call("GET", "/api/v1/namespaces", Some(&carol), None);
            b = r.2;
            r.0 == 200
        }),
        "carol cannot list namespaces: {b}"
    );
    assert!(!b.to_string().contains("acme-dev"), "{b}");
    let (c, _, b) = h.call(
        "GET",
        "/api/v1/namespaces/acme-dev/configmaps/c1",
        Some(&carol),
        None,
    );
    assert!(matches!(c, 403 | 404), "{c} {b}");
    assert!(!b.to_string().contains("\"k\""), "{b}");

    // --- only `admin` on the cloud-admin project is a cluster admin.
    let bob = h.token("bob", "acme");
    let who = h.whoami(&bob);
    let groups = sorted(&who["groups"]);
    let has = |g: &str| groups.as_array().unwrap().iter().any(|x| x == g);
    assert!(
        has("h8s:tenant:acme") && has("h8s:role:admin") && !has("system:masters"),
        "a project's admin is only its tenant's: {groups}"
    );
    let crole = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "ks-test"}, "rules": []});
    let (c, _, b) = h.call(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        Some(&bob),
        Some(&crole),
    );
    assert_eq!(c, 403, "{b}");
    assert!(
        eventually(30, || h.call("GET", "/api/v1/nodes", Some(&bob), None).0
            == 200),
        "tenant users read nodes"
    );
    let cloud_admin = h.token("admin", "admin");
    let who = h.whoami(&cloud_admin);
    assert_eq!(who["groups"][0], "system:masters", "{who}");
    let (c, _, b) = h.call(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        Some(&cloud_admin),
        Some(&crole),
    );
    assert_eq!(c, 201, "{b}");

    // --- bad input: a 401 that does not say whether the user exists; 400s; back-off.
    let wrong = h.v3(
        "POST",
        "/auth/tokens",
        None,
        Some(&password_body("dave", "nope", Some("globex"))),
    );
    let ghost = h.v3(
        "POST",
        "/auth/tokens",
        None,
        Some(&password_body("ghost", "nope", Some("globex"))),
    );
    assert_eq!(wrong.0, 401, "{:?}", wrong.2);
    assert_eq!(
        (wrong.0, &wrong.2),
        (ghost.0, &ghost.2),
        "same answer for a missing user"
    );
    for bad in ["{", "[]", "{\"auth\": 3}", "null"] {
        let (c, _, b) = curl_raw(
            &format!("{}/v3/auth/tokens", h.srv.url),
            Some(&h.ca),
            "POST",
            &[],
            Some(bad.to_string()),
        );
        assert_eq!(c, 400, "{bad}: {b}");
        assert_eq!(b["error"]["code"], 400, "{b}");
    }
    let (c, _, _) = h.call(
        "GET",
        "/api",
        Some("gAAAAABnotakeystonetokenatall0123456789"),
        None,
    );
    assert_eq!(c, 401);
    // dave has failed once; two more failures, then even his right password waits.
    for _ in 0..2 {
        let (c, _, _) = h.v3(
            "POST",
            "/auth/tokens",
            None,
            Some(&password_body("dave", "nope", None)),
        );
        assert_eq!(c, 401);
    }
    let (c, _, b) = h.v3(
        "POST",
        "/auth/tokens",
        None,
        Some(&password_body("dave", "dave-pw", Some("globex"))),
    );
    assert_eq!(c, 429, "back-off after 3 failures: {b}");
    assert!(
        eventually(10, || h
            .v3(
                "POST",
                "/auth/tokens",
                None,
                Some(&password_body("dave", "dave-pw", Some("globex")))
            )
            .0
            == 201),
        "the back-off ends"
    );

    // --- a user deleted in Keystone loses access within the cache TTL.
    let carol_id = {
        let (c, _, b) = ks.call("GET", "/users?name=carol", Some(&admin), None);
        assert_eq!(c, 200, "{b}");
        b["users"][0]["id"].as_str().unwrap().to_string()
    };
    let (c, _, _) = h.call("GET", "/api", Some(&carol), None);
    assert_eq!(c, 200);
    let (c, _, b) = ks.call("DELETE", &format!("/users/{carol_id}"), Some(&admin), None);
    assert_eq!(c, 204, "{b}");
    let deleted = Instant::now();
    assert!(
        eventually(CACHE_TTL_SECS + 5, || h
            .call("GET", "/api", Some(&carol), None)
            .0
            == 401),
        "carol's token still works"
    );
    let lost = deleted.elapsed();
    eprintln!("deleted user lost access after {lost:?}");
    assert!(lost <= Duration::from_secs(CACHE_TTL_SECS + 2), "{lost:?}");

    // --- outage: a token validated just now keeps working for the TTL; then, and for
    // tokens never seen, 503 naming Keystone; /v3 answers 503 in Keystone's shape.
    let fresh = h.token("bob", "acme");
    let (c, _, _) = h.call("GET", "/api", Some(&bob), None);
    assert_eq!(c, 200);
    let cached_at = Instant::now();
    ks.kill_now();
    let (c, _, b) = h.call("GET", "/api/v1/namespaces", Some(&bob), None);
    assert!(cached_at.elapsed() < Duration::from_secs(CACHE_TTL_SECS));
    assert_eq!(c, 200, "a cached token works during the outage: {b}");
    let (c, _, b) = h.call("GET", "/api", Some(&fresh), None);
    assert_eq!(c, 503, "{b}");
    assert_eq!(b["kind"], "Status", "{b}");
    assert!(
        b["message"].as_str().unwrap_or("").contains("Keystone"),
        "{b}"
    );
    std::thread::sleep(Duration::from_secs(CACHE_TTL_SECS).saturating_sub(cached_at.elapsed()));
    let (c, _, b) = h.call("GET", "/api", Some(&bob), None);
    assert_eq!(c, 503, "after the TTL the token needs Keystone: {b}");
    let (c, _, b) = h.v3(
        "POST",
        "/auth/tokens",
        None,
        Some(&password_body("alice", "alice-pw", Some("acme"))),
    );
    assert_eq!(c, 503, "{b}");
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap_or("")
            .contains("Keystone"),
        "{b}"
    );
    // The admin's own credentials do not depend on Keystone.
    let (c, _) = h.admin_get("/api/v1/namespaces");
    assert_eq!(c, 200);
    ks.restart();
    assert!(
        eventually(10, || h.call("GET", "/api", Some(&bob), None).0 == 200),
        "back after the outage"
    );
}
