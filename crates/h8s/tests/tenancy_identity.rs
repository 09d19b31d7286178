//! Tenancy identity against the real `h8s server`: the `tenancy.h8s.io` Tenant and User
//! kinds through kubectl (CRUD, columns, `explain`, watch), passwords that no read returns,
//! the Keystone v3 API through the real `openstack` CLI (python-openstackclient, installed
//! by scripts/setup.d/40-identity.sh) and raw HTTP for the bad-input cases, token expiry,
//! revocation when a user is deleted, disabled or changes password, and kubectl 1.27 and
//! 1.33 logged in with `h8s login` and the `h8s credential` exec plugin.
//!
//! One shared server (default token lifetime) for everything except expiry, which has its
//! own server with `--token-ttl 3s`.

mod api_support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use api_support::{eventually, json, Server};
use serde_json::json;

static SERVER: Mutex<Option<Server>> = Mutex::new(None);

extern "C" fn stop_server() {
    let s = SERVER.lock().ok().and_then(|mut s| s.take());
    drop(s);
}

/// What tests need of the shared server.
#[derive(Clone)]
struct Shared {
    url: String,
    data: PathBuf,
    kubeconfig: PathBuf,
    token: String,
}

fn server() -> Shared {
    let mut g = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let s = match &*g {
        Some(s) => s,
        None => {
            // SAFETY: `stop_server` is a plain `extern "C" fn()` that does not unwind (it drops
            // a value whose Drop signals and waits for a child process); registering it has no
            // other precondition.
            unsafe {
                libc::atexit(stop_server);
            }
            g.insert(Server::start_with(
                tempfile::tempdir().expect("tempdir"),
                &["--disable-controllers".as_ref()],
            ))
        }
    };
    Shared {
        url: s.url.clone(),
        data: s.data_dir(),
        kubeconfig: s.kubeconfig.clone(),
        token: s.token.clone(),
    }
}

fn openstack_bin() -> PathBuf {
    let cache = std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/h8s")
        });
    let p = cache.join("openstack/bin/openstack");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.d/40-identity.sh (python-openstackclient)",
        p.display()
    );
    p
}

/// One HTTPS request with curl: (status, response headers lower-cased, body).
fn http(
    s: &Shared,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let dir = tempfile::tempdir().expect("tmp");
    let hdr = dir.path().join("h");
    let mut c = Command::new("curl");
    c.args([
        "-sS",
        "-o",
        "-",
        "-w",
        "\n%{http_code}",
        "-X",
        method,
        "--cacert",
    ])
    .arg(s.data.join("ca.crt"))
    .arg("-D")
    .arg(&hdr)
    .arg(format!("{}{}", s.url, path));
    for (k, v) in headers {
        c.args(["-H", &format!("{k}: {v}")]);
    }
    if let Some(b) = body {
        c.args(["-H", "Content-Type: application/json", "--data-binary", b]);
    }
    let o = c.output().expect("curl");
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let (b, code) = out.rsplit_once('\n').unwrap_or(("", "0"));
    let h = std::fs::read_to_string(&hdr)
        .unwrap_or_default()
        .to_lowercase();
    (code.trim().parse().unwrap_or(0), h, b.to_string())
}

fn header(h: &str, name: &str) -> Option<String> {
    h.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .map(|v| v.trim().to_string())
}

fn password_body(user: &str, pw: &str, project: Option<&str>) -> String {
    let mut v = json!({"auth": {"identity": {"methods": ["password"],
        "password": {"user": {"name": user, "domain": {"id": "default"}, "password": pw}}}}});
    if let Some(p) = project {
        v["auth"]["scope"] = json!({"project": {"name": p, "domain": {"name": "Default"}}});
    }
    v.to_string()
}

/// A token (X-Subject-Token) for a password login; panics without one (any status but 201).
fn login(s: &Shared, user: &str, pw: &str, project: Option<&str>) -> String {
    let o = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-D",
            "-",
            "-X",
            "POST",
            "--cacert",
        ])
        .arg(s.data.join("ca.crt"))
        .args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &password_body(user, pw, project),
        ])
        .arg(format!("{}/v3/auth/tokens", s.url))
        .output()
        .expect("curl");
    // The token is case-sensitive: read the raw headers.
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    out.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-subject-token")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_else(|| panic!("no X-Subject-Token for {user}: {out}"))
}

fn admin_password(s: &Shared) -> String {
    std::fs::read_to_string(s.data.join("admin.password"))
        .expect("admin.password")
        .trim()
        .to_string()
}

fn admin_token(s: &Shared) -> String {
    login(s, "admin", &admin_password(s), Some("admin"))
}

/// Creates a tenant and a user with a password through the Keystone API as admin.
fn make_user(s: &Shared, admin: &str, tenant: &str, user: &str, pw: &str) {
    let (c, _, b) = http(
        s,
        "POST",
        "/v3/projects",
        &[("X-Auth-Token", admin)],
        Some(&json!({"project": {"name": tenant}}).to_string()),
    );
    assert!(c == 201 || c == 409, "project {tenant}: {c} {b}");
    let (c, _, b) = http(
        s,
        "POST",
        "/v3/users",
        &[("X-Auth-Token", admin)],
        Some(
            &json!({"user": {"name": user, "password": pw, "default_project_id": tenant}})
                .to_string(),
        ),
    );
    assert_eq!(c, 201, "user {user}: {b}");
}

/// The HTTP status of `GET /api` with a bearer token.
fn api_status(s: &Shared, token: &str) -> u16 {
    http(
        s,
        "GET",
        "/api",
        &[("Authorization", &format!("Bearer {token}"))],
        None,
    )
    .0
}

fn kubectl(s: &Shared, ver: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    let mut c = Command::new(api_support::kubectl_bin(ver));
    c.arg("--kubeconfig")
        .arg(&s.kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG");
    run(c, stdin)
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

const KINDS: &str = "apiVersion: tenancy.h8s.io/v1
kind: Tenant
metadata:
  name: kinds-acme
spec:
  displayName: ACME Corp
  quota:
    hard:
      pods: \"10\"
---
apiVersion: tenancy.h8s.io/v1
kind: User
metadata:
  name: kinds-alice
spec:
  tenant: kinds-acme
  displayName: Alice
  email: alice@example.com
  groups: [developers]
";

#[test]
fn kinds_crud_columns_explain_and_watch() {
    let s = server();
    let (ok, out, err) = kubectl(&s, "1.33", &["apply", "-f", "-"], Some(KINDS));
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kubectl(&s, "1.33", &["get", "tenants"], None);
    assert!(ok, "{err}");
    let head: Vec<&str> = out
        .lines()
        .next()
        .unwrap()
        .split("  ")
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .collect();
    assert_eq!(head, ["NAME", "DISPLAY NAME", "ENABLED", "PHASE", "AGE"]);
    assert!(
        out.lines().any(|l| l.starts_with("kinds-acme")
            && l.contains("ACME Corp")
            && l.contains("Active")),
        "{out}"
    );
    let (ok, out, _) = kubectl(
        &s,
        "1.33",
        &["get", "users", "kinds-alice", "-o", "wide"],
        None,
    );
    assert!(ok);
    let row = out.lines().nth(1).unwrap();
    for want in [
        "kinds-alice",
        "kinds-acme",
        "Alice",
        "member",
        "true",
        "alice@example.com",
        "developers",
    ] {
        assert!(row.contains(want), "{want} not in {row}");
    }
    // Defaults: enabled and the member role.
    let (_, out, _) = kubectl(
        &s,
        "1.33",
        &["get", "user", "kinds-alice", "-o", "json"],
        None,
    );
    let u = json(&out);
    assert_eq!(u["spec"]["enabled"], true);
    assert_eq!(u["spec"]["roles"], json!(["member"]));
    for ver in ["1.27", "1.33"] {
        let (ok, out, err) = kubectl(&s, ver, &["explain", "user.spec.tenant"], None);
        assert!(ok, "{ver}: {err}");
        assert!(
            out.contains("Tenant is the name of the Tenant the user belongs to"),
            "{ver}: {out}"
        );
        let (ok, out, err) = kubectl(&s, ver, &["explain", "tenant.spec.quota"], None);
        assert!(ok && out.contains("hard"), "{ver}: {out}{err}");
    }
    // Validation: reserved groups, unknown roles, a tenant that changes.
    let (ok, _, err) = kubectl(
        &s,
        "1.33",
        &[
            "patch",
            "user",
            "kinds-alice",
            "--type=merge",
            "-p",
            r#"{"spec":{"groups":["system:masters"],"roles":["owner"],"tenant":"other"}}"#,
        ],
        None,
    );
    assert!(!ok);
    for want in [
        "spec.groups[0]",
        "spec.roles[0]",
        "spec.tenant",
        "field is immutable",
    ] {
        assert!(err.contains(want), "{want} not in {err}");
    }
    // A user with no tenant is refused with 422.
    let (ok, _, err) = kubectl(&s, "1.33", &["create", "-f", "-"], Some(
        "apiVersion: tenancy.h8s.io/v1\nkind: User\nmetadata: {name: kinds-bob}\nspec: {displayName: Bob}\n"));
    assert!(!ok && err.contains("spec.tenant: Required value"), "{err}");
    // Watch sees a change.
    let watch = {
        let mut c = Command::new(api_support::kubectl_bin("1.33"));
        c.arg("--kubeconfig")
            .arg(&s.kubeconfig)
            .args([
                "get",
                "users",
                "--watch",
                "--output-watch-events",
                "-o",
                "json",
                "--request-timeout=8s",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        c.spawn().expect("watch")
    };
    std::thread::sleep(Duration::from_millis(1500));
    let (ok, _, err) = kubectl(
        &s,
        "1.33",
        &[
            "patch",
            "user",
            "kinds-alice",
            "--type=merge",
            "-p",
            r#"{"spec":{"enabled":false}}"#,
        ],
        None,
    );
    assert!(ok, "{err}");
    let out = watch.wait_with_output().expect("watch output");
    let out = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.contains(r#""type":"MODIFIED""#) && out.contains(r#""enabled":false"#),
        "{out}"
    );
    let (ok, _, err) = kubectl(&s, "1.33", &["delete", "user", "kinds-alice"], None);
    assert!(ok, "{err}");
    let (ok, _, err) = kubectl(&s, "1.33", &["delete", "tenant", "kinds-acme"], None);
    assert!(ok, "{err}");
}

#[test]
fn passwords_are_never_readable() {
    let s = server();
    let (ok, _, err) = kubectl(&s, "1.33", &["apply", "-f", "-"], Some(
        "apiVersion: tenancy.h8s.io/v1\nkind: Tenant\nmetadata: {name: pw-t}\n---\napiVersion: tenancy.h8s.io/v1\nkind: User\nmetadata: {name: pw-u}\nspec: {tenant: pw-t}\n"));
    assert!(ok, "{err}");
    let secret = "Sup3r-Secret-Pa55";
    let auth = format!("Bearer {}", s.token);
    let (c, _, b) = http(
        &s,
        "POST",
        "/apis/tenancy.h8s.io/v1/users/pw-u/password",
        &[("Authorization", &auth)],
        Some(
            &json!({"apiVersion": "tenancy.h8s.io/v1", "kind": "UserPassword", "password": secret})
                .to_string(),
        ),
    );
    assert_eq!(c, 201, "{b}");
    assert!(!b.contains(secret) && !b.contains("argon2"), "{b}");
    // Too short: 400; no body field: 422; a read of the subresource: 405.
    let (c, _, b) = http(
        &s,
        "POST",
        "/apis/tenancy.h8s.io/v1/users/pw-u/password",
        &[("Authorization", &auth)],
        Some(r#"{"password":"short"}"#),
    );
    assert_eq!(c, 400, "{b}");
    assert_eq!(json(&b)["kind"], "Status");
    let (c, _, b) = http(
        &s,
        "POST",
        "/apis/tenancy.h8s.io/v1/users/pw-u/password",
        &[("Authorization", &auth)],
        Some("{}"),
    );
    assert_eq!(c, 422, "{b}");
    let (c, _, _) = http(
        &s,
        "GET",
        "/apis/tenancy.h8s.io/v1/users/pw-u/password",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(c, 405);
    // The password works…
    let tok = login(&s, "pw-u", secret, None);
    assert_eq!(api_status(&s, &tok), 200);
    // …and nothing a client can read holds it or its hash.
    let reads = [
        "/apis/tenancy.h8s.io/v1/users/pw-u",
        "/apis/tenancy.h8s.io/v1/users",
        "/apis/tenancy.h8s.io/v1/users?watch=1&timeoutSeconds=1",
        "/apis/tenancy.h8s.io/v1/tenants",
        "/api/v1/secrets",
    ];
    for p in reads {
        let (c, _, b) = http(&s, "GET", p, &[("Authorization", &auth)], None);
        assert_eq!(c, 200, "{p}: {b}");
        assert!(
            !b.contains(secret) && !b.contains("argon2") && !b.contains("$v=19"),
            "{p}: {b}"
        );
    }
    for out in [
        kubectl(&s, "1.33", &["get", "users", "-o", "yaml"], None).1,
        kubectl(
            &s,
            "1.33",
            &["get", "user", "pw-u", "-o", "json", "--show-managed-fields"],
            None,
        )
        .1,
    ] {
        assert!(!out.contains("argon2") && !out.contains(secret), "{out}");
    }
}

#[test]
fn keystone_api_with_the_openstack_cli() {
    let s = server();
    let os = |args: &[&str]| {
        let mut c = Command::new(openstack_bin());
        c.args(args)
            .env("OS_AUTH_URL", format!("{}/v3", s.url))
            .env("OS_USERNAME", "admin")
            .env("OS_PASSWORD", admin_password(&s))
            .env("OS_PROJECT_NAME", "admin")
            .env("OS_USER_DOMAIN_NAME", "Default")
            .env("OS_PROJECT_DOMAIN_NAME", "Default")
            .env("OS_IDENTITY_API_VERSION", "3")
            .env("OS_CACERT", s.data.join("ca.crt"));
        let (ok, out, err) = run(c, None);
        assert!(ok, "openstack {args:?}: {out}\n{err}");
        out
    };
    let t = json(&os(&["token", "issue", "-f", "json"]));
    assert_eq!(t["project_id"], "admin");
    assert_eq!(t["user_id"], "admin");
    assert!(t["id"].as_str().unwrap().len() >= 43);
    // The CLI's token works on the Kubernetes API as a cloud admin.
    let (c, _, b) = http(
        &s,
        "POST",
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        &[(
            "Authorization",
            &format!("Bearer {}", t["id"].as_str().unwrap()),
        )],
        Some(r#"{"apiVersion":"authentication.k8s.io/v1","kind":"SelfSubjectReview"}"#),
    );
    assert_eq!(c, 201, "{b}");
    assert_eq!(
        json(&b)["status"]["userInfo"]["groups"],
        json!(["system:masters", "system:authenticated"])
    );
    let p = json(&os(&[
        "project",
        "create",
        "os-acme",
        "--description",
        "ACME",
        "-f",
        "json",
    ]));
    assert_eq!(p["name"], "os-acme");
    let list = json(&os(&["project", "list", "-f", "json"]));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|p| p["Name"] == "os-acme"),
        "{list}"
    );
    let u = json(&os(&[
        "user",
        "create",
        "--project",
        "os-acme",
        "--password",
        "os-alice-pw",
        "--email",
        "a@example.com",
        "os-alice",
        "-f",
        "json",
    ]));
    assert_eq!(u["default_project_id"], "os-acme");
    let list = json(&os(&["user", "list", "-f", "json"]));
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|u| u["Name"] == "os-alice"),
        "{list}"
    );
    os(&[
        "role",
        "add",
        "--project",
        "os-acme",
        "--user",
        "os-alice",
        "reader",
    ]);
    let ra = os(&[
        "role",
        "assignment",
        "list",
        "--user",
        "os-alice",
        "--names",
        "-f",
        "json",
    ]);
    assert!(ra.contains("reader") && ra.contains("os-acme"), "{ra}");
    // The Kubernetes object is the same user.
    let (_, out, _) = kubectl(&s, "1.33", &["get", "user", "os-alice", "-o", "json"], None);
    let k = json(&out);
    assert_eq!(k["spec"]["tenant"], "os-acme");
    assert_eq!(k["spec"]["roles"], json!(["member", "reader"]));
    // The new user logs in with the CLI too, scoped to its project.
    let mut c = Command::new(openstack_bin());
    c.args(["token", "issue", "-f", "json"])
        .env("OS_AUTH_URL", format!("{}/v3", s.url))
        .env("OS_USERNAME", "os-alice")
        .env("OS_PASSWORD", "os-alice-pw")
        .env("OS_PROJECT_NAME", "os-acme")
        .env("OS_USER_DOMAIN_NAME", "Default")
        .env("OS_PROJECT_DOMAIN_NAME", "Default")
        .env("OS_IDENTITY_API_VERSION", "3")
        .env("OS_CACERT", s.data.join("ca.crt"));
    let (ok, out, err) = run(c, None);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["project_id"], "os-acme");
    os(&["user", "delete", "os-alice"]);
    let list = json(&os(&["user", "list", "-f", "json"]));
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["Name"] == "os-alice"),
        "{list}"
    );
    os(&["project", "delete", "os-acme"]);
}

#[test]
fn keystone_bad_input_and_token_lifecycle() {
    let s = server();
    let admin = admin_token(&s);
    make_user(&s, &admin, "bad-t", "bad-u", "bad-u-password");
    // Version discovery.
    let (c, _, b) = http(&s, "GET", "/v3", &[], None);
    assert_eq!(c, 200);
    assert_eq!(json(&b)["version"]["id"], "v3.14");
    // Malformed bodies: 400 in Keystone's error shape.
    for body in [
        "{not json",
        "[]",
        r#"{"auth":{}}"#,
        r#"{"auth":{"identity":{"methods":"password"}}}"#,
        r#"{"auth":{"identity":{"methods":["password"],"password":{}}}}"#,
        r#"{"auth":{"identity":{"methods":["password"],"password":{"user":{"name":"x"}}}}}"#,
    ] {
        let (c, _, b) = http(&s, "POST", "/v3/auth/tokens", &[], Some(body));
        assert_eq!(c, 400, "{body}: {b}");
        let e = json(&b);
        assert_eq!(e["error"]["code"], 400, "{b}");
        assert_eq!(e["error"]["title"], "Bad Request", "{b}");
    }
    // A wrong password and a user that does not exist: the same 401, byte for byte.
    let (c1, _, b1) = http(
        &s,
        "POST",
        "/v3/auth/tokens",
        &[],
        Some(&password_body("bad-u", "wrong-password", None)),
    );
    let (c2, _, b2) = http(
        &s,
        "POST",
        "/v3/auth/tokens",
        &[],
        Some(&password_body("nobody-here", "wrong-password", None)),
    );
    assert_eq!((c1, c2), (401, 401));
    assert_eq!(b1, b2);
    assert_eq!(
        json(&b1)["error"]["message"],
        "The request you have made requires authentication."
    );
    // Scoping to another tenant's project: 401.
    let (c, _, _) = http(
        &s,
        "POST",
        "/v3/auth/tokens",
        &[],
        Some(&password_body("bad-u", "bad-u-password", Some("admin"))),
    );
    assert_eq!(c, 401);
    // Admin-only calls refuse a tenant user (403) and anonymous callers (401).
    let user_tok = login(&s, "bad-u", "bad-u-password", Some("bad-t"));
    let (c, _, b) = http(&s, "GET", "/v3/users", &[("X-Auth-Token", &user_tok)], None);
    assert_eq!(c, 403, "{b}");
    let (c, _, _) = http(&s, "GET", "/v3/users", &[], None);
    assert_eq!(c, 401);
    // Validate (GET, HEAD), re-scope with the token method, revoke.
    let (c, _, b) = http(
        &s,
        "GET",
        "/v3/auth/tokens",
        &[("X-Auth-Token", &admin), ("X-Subject-Token", &user_tok)],
        None,
    );
    assert_eq!(c, 200, "{b}");
    let t = json(&b);
    assert_eq!(t["token"]["user"]["name"], "bad-u");
    assert_eq!(t["token"]["project"]["name"], "bad-t");
    assert_eq!(t["token"]["roles"][0]["name"], "member");
    let (c, _, _) = http(
        &s,
        "HEAD",
        "/v3/auth/tokens",
        &[("X-Auth-Token", &user_tok), ("X-Subject-Token", &user_tok)],
        None,
    );
    assert_eq!(c, 200);
    let (c, _, b) = http(&s, "POST", "/v3/auth/tokens", &[],
        Some(&json!({"auth": {"identity": {"methods": ["token"], "token": {"id": user_tok}}, "scope": {"project": {"id": "bad-t"}}}}).to_string()));
    assert_eq!(c, 201, "{b}");
    assert_eq!(json(&b)["token"]["methods"], json!(["password", "token"]));
    assert_eq!(api_status(&s, &user_tok), 200);
    let (c, _, _) = http(
        &s,
        "DELETE",
        "/v3/auth/tokens",
        &[("X-Auth-Token", &admin), ("X-Subject-Token", &user_tok)],
        None,
    );
    assert_eq!(c, 204);
    let (c, _, b) = http(
        &s,
        "GET",
        "/v3/auth/tokens",
        &[("X-Auth-Token", &admin), ("X-Subject-Token", &user_tok)],
        None,
    );
    assert_eq!(c, 404);
    assert_eq!(json(&b)["error"]["message"], "Failed to validate token");
    assert_eq!(api_status(&s, &user_tok), 401);
    // Anything that is not ours is a 401 on the Kubernetes API, never a 500.
    assert_eq!(api_status(&s, "h8sks_not-a-real-token"), 401);
    assert_eq!(api_status(&s, &format!("h8sks_{}", "x".repeat(5000))), 401);
    // Unknown paths and methods: Keystone's 404 and 405.
    assert_eq!(http(&s, "GET", "/v3/nothing", &[], None).0, 404);
    assert_eq!(http(&s, "PUT", "/v3/auth/tokens", &[], None).0, 405);
}

#[test]
fn failed_logins_back_off() {
    let s = server();
    let admin = admin_token(&s);
    make_user(&s, &admin, "lock-t", "lock-u", "lock-u-password");
    for _ in 0..3 {
        let (c, _, _) = http(
            &s,
            "POST",
            "/v3/auth/tokens",
            &[],
            Some(&password_body("lock-u", "wrong-wrong", None)),
        );
        assert_eq!(c, 401);
    }
    // Locked: even the right password waits, and says for how long.
    let (c, h, b) = http(
        &s,
        "POST",
        "/v3/auth/tokens",
        &[],
        Some(&password_body("lock-u", "lock-u-password", None)),
    );
    assert_eq!(c, 429, "{b}");
    assert_eq!(json(&b)["error"]["code"], 429);
    let wait: u64 = header(&h, "retry-after")
        .expect("Retry-After")
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    // A name that does not exist locks the same way (nothing tells them apart).
    for _ in 0..3 {
        http(
            &s,
            "POST",
            "/v3/auth/tokens",
            &[],
            Some(&password_body("ghost-u", "wrong-wrong", None)),
        );
    }
    assert_eq!(
        http(
            &s,
            "POST",
            "/v3/auth/tokens",
            &[],
            Some(&password_body("ghost-u", "wrong-wrong", None))
        )
        .0,
        429
    );
    std::thread::sleep(Duration::from_secs(wait + 1));
    // One more failure after the lock doubles it.
    let (c, _, _) = http(
        &s,
        "POST",
        "/v3/auth/tokens",
        &[],
        Some(&password_body("lock-u", "wrong-wrong", None)),
    );
    assert_eq!(c, 401);
    let (c, h, _) = http(
        &s,
        "POST",
        "/v3/auth/tokens",
        &[],
        Some(&password_body("lock-u", "lock-u-password", None)),
    );
    assert_eq!(c, 429);
    let wait2: u64 = header(&h, "retry-after").unwrap().parse().unwrap();
    assert!(wait2 > wait, "{wait2} > {wait}");
    std::thread::sleep(Duration::from_secs(wait2 + 1));
    let (c, _, b) = http(
        &s,
        "POST",
        "/v3/auth/tokens",
        &[],
        Some(&password_body("lock-u", "lock-u-password", None)),
    );
    assert_eq!(c, 201, "{b}");
}

/// Waits at most 1 s for `token` to stop working on the Kubernetes API.
fn dies_within_a_second(s: &Shared, token: &str) -> Duration {
    let t0 = Instant::now();
    assert!(
        eventually(1, || api_status(s, token) == 401),
        "token still works after 1 s"
    );
    t0.elapsed()
}

#[test]
fn tokens_die_on_delete_disable_and_password_change() {
    let s = server();
    let admin = admin_token(&s);
    let auth = format!("Bearer {}", s.token);
    // Deleted (through the Keystone API).
    make_user(&s, &admin, "rev-t", "rev-del", "rev-del-password");
    let tok = login(&s, "rev-del", "rev-del-password", Some("rev-t"));
    assert_eq!(api_status(&s, &tok), 200);
    assert_eq!(
        http(
            &s,
            "DELETE",
            "/v3/users/rev-del",
            &[("X-Auth-Token", &admin)],
            None
        )
        .0,
        204
    );
    dies_within_a_second(&s, &tok);
    // Deleted through the Kubernetes API, and created again under the same name: the old
    // password and tokens stay dead.
    make_user(&s, &admin, "rev-t", "rev-again", "rev-again-password");
    let tok = login(&s, "rev-again", "rev-again-password", None);
    let (ok, _, err) = kubectl(&s, "1.33", &["delete", "user", "rev-again"], None);
    assert!(ok, "{err}");
    dies_within_a_second(&s, &tok);
    let (ok, _, err) = kubectl(&s, "1.33", &["create", "-f", "-"], Some(
        "apiVersion: tenancy.h8s.io/v1\nkind: User\nmetadata: {name: rev-again}\nspec: {tenant: rev-t}\n"));
    assert!(ok, "{err}");
    assert_eq!(api_status(&s, &tok), 401);
    let (c, _, _) = http(
        &s,
        "POST",
        "/v3/auth/tokens",
        &[],
        Some(&password_body("rev-again", "rev-again-password", None)),
    );
    assert_eq!(c, 401);
    // Disabled (kubectl patch).
    make_user(&s, &admin, "rev-t", "rev-dis", "rev-dis-password");
    let tok = login(&s, "rev-dis", "rev-dis-password", None);
    assert_eq!(api_status(&s, &tok), 200);
    let (ok, _, err) = kubectl(
        &s,
        "1.33",
        &[
            "patch",
            "user",
            "rev-dis",
            "--type=merge",
            "-p",
            r#"{"spec":{"enabled":false}}"#,
        ],
        None,
    );
    assert!(ok, "{err}");
    dies_within_a_second(&s, &tok);
    // Password changed (users/password).
    make_user(&s, &admin, "rev-t", "rev-pw", "rev-pw-password");
    let tok = login(&s, "rev-pw", "rev-pw-password", None);
    assert_eq!(api_status(&s, &tok), 200);
    let (c, _, b) = http(
        &s,
        "PUT",
        "/apis/tenancy.h8s.io/v1/users/rev-pw/password",
        &[("Authorization", &auth)],
        Some(
            r#"{"apiVersion":"tenancy.h8s.io/v1","kind":"UserPassword","password":"another-password"}"#,
        ),
    );
    assert_eq!(c, 201, "{b}");
    dies_within_a_second(&s, &tok);
    let tok = login(&s, "rev-pw", "another-password", None);
    // Tenant deleted: its users' tokens die too.
    assert_eq!(api_status(&s, &tok), 200);
    assert_eq!(
        http(
            &s,
            "DELETE",
            "/v3/projects/rev-t",
            &[("X-Auth-Token", &admin)],
            None
        )
        .0,
        204
    );
    dies_within_a_second(&s, &tok);
}

#[test]
fn kubectl_logs_in_with_h8s_login_and_the_exec_plugin() {
    let s = server();
    let h8s = env!("CARGO_BIN_EXE_h8s");
    let home = tempfile::tempdir().expect("home");
    let env = |c: &mut Command| {
        c.env("HOME", home.path())
            .env("XDG_CONFIG_HOME", home.path().join(".config"))
            .env_remove("KUBECONFIG");
    };
    // The operator: a tenant and a user, with the admin kubeconfig.
    let mut c = Command::new(h8s);
    c.args(["tenant", "create", "login-acme", "--display-name", "ACME"])
        .env("KUBECONFIG", &s.kubeconfig);
    let (ok, out, err) = run(c, None);
    assert!(ok, "{out}{err}");
    let mut c = Command::new(h8s);
    c.args([
        "user",
        "create",
        "login-alice",
        "--tenant",
        "login-acme",
        "--email",
        "alice@example.com",
        "--password-stdin",
    ])
    .env("KUBECONFIG", &s.kubeconfig);
    let (ok, out, err) = run(c, Some("alice-password\n"));
    assert!(ok, "{out}{err}");
    let mut c = Command::new(h8s);
    c.args(["user", "ls", "--tenant", "login-acme"])
        .env("KUBECONFIG", &s.kubeconfig);
    let (ok, out, _) = run(c, None);
    assert!(
        ok && out.contains("login-alice") && out.contains("alice@example.com"),
        "{out}"
    );
    // The user logs in.
    let kc = home.path().join("kubeconfig");
    let mut c = Command::new(h8s);
    env(&mut c);
    c.args([
        "login",
        "--server",
        &s.url,
        "--user",
        "login-alice",
        "--tenant",
        "login-acme",
        "--password-stdin",
    ])
    .arg("--certificate-authority")
    .arg(s.data.join("ca.crt"))
    .arg("--kubeconfig")
    .arg(&kc);
    let (ok, out, err) = run(c, Some("alice-password\n"));
    assert!(ok, "{out}{err}");
    let state = std::fs::read_dir(home.path().join(".config/h8s/login"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mode = |p: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o777
    };
    assert_eq!(mode(&state.join("token.json")), 0o600);
    assert_eq!(mode(&kc), 0o600);
    let kubectl_as_alice = |ver: &str, args: &[&str]| {
        let mut c = Command::new(api_support::kubectl_bin(ver));
        env(&mut c);
        c.arg("--kubeconfig").arg(&kc).args(args);
        run(c, None)
    };
    for ver in ["1.27", "1.33"] {
        let (ok, out, err) = kubectl_as_alice(ver, &["auth", "whoami", "-o", "json"]);
        assert!(ok, "{ver}: {err}");
        let who = json(&out);
        assert_eq!(
            who["status"]["userInfo"]["username"], "login-alice",
            "{ver}"
        );
        assert_eq!(
            who["status"]["userInfo"]["groups"],
            json!(["h8s:tenant:login-acme", "system:authenticated"]),
            "{ver}"
        );
        let (ok, out, err) = kubectl_as_alice(ver, &["get", "--raw", "/api"]);
        assert!(ok, "{ver}: {err}");
        assert_eq!(json(&out)["kind"], "APIVersions");
    }
    // The operator changes the password: the cached token is refused, and the plugin
    // (with no terminal to ask on) says to log in again.
    let mut c = Command::new(h8s);
    c.args(["user", "passwd", "login-alice", "--password-stdin"])
        .env("KUBECONFIG", &s.kubeconfig);
    let (ok, out, err) = run(c, Some("alice-new-password\n"));
    assert!(ok, "{out}{err}");
    let (ok, _, err) = kubectl_as_alice("1.33", &["auth", "whoami"]);
    assert!(!ok);
    assert!(
        err.contains("expired or was revoked") || err.contains("h8s login"),
        "{err}"
    );
    let mut c = Command::new(h8s);
    env(&mut c);
    c.args([
        "login",
        "--server",
        &s.url,
        "--user",
        "login-alice",
        "--tenant",
        "login-acme",
        "--password-stdin",
    ])
    .arg("--kubeconfig")
    .arg(&kc);
    // No --certificate-authority: the kubeconfig's cluster for this server has it.
    let (ok, out, err) = run(c, Some("alice-new-password\n"));
    assert!(ok, "{out}{err}");
    let (ok, out, err) = kubectl_as_alice("1.27", &["auth", "whoami"]);
    assert!(ok && out.contains("login-alice"), "{out}{err}");
    // A wrong password: login fails with the 401, nothing is written.
    let mut c = Command::new(h8s);
    env(&mut c);
    c.args([
        "login",
        "--server",
        &s.url,
        "--user",
        "login-alice",
        "--tenant",
        "login-acme",
        "--password-stdin",
    ])
    .arg("--certificate-authority")
    .arg(s.data.join("ca.crt"))
    .arg("--kubeconfig")
    .arg(home.path().join("other"));
    let (ok, _, err) = run(c, Some("nope-nope-nope\n"));
    assert!(!ok && err.contains("401"), "{err}");
    assert!(!home.path().join("other").exists());
    let mut c = Command::new(h8s);
    c.args(["user", "rm", "login-alice"])
        .env("KUBECONFIG", &s.kubeconfig);
    assert!(run(c, None).0);
    let mut c = Command::new(h8s);
    c.args(["tenant", "rm", "login-acme"])
        .env("KUBECONFIG", &s.kubeconfig);
    assert!(run(c, None).0);
}

#[test]
fn tokens_expire() {
    let srv = Server::start_with(
        tempfile::tempdir().expect("tempdir"),
        &[
            "--disable-controllers".as_ref(),
            "--token-ttl".as_ref(),
            "3s".as_ref(),
        ],
    );
    let s = Shared {
        url: srv.url.clone(),
        data: srv.data_dir(),
        kubeconfig: srv.kubeconfig.clone(),
        token: srv.token.clone(),
    };
    let tok = admin_token(&s);
    let (c, _, b) = http(
        &s,
        "GET",
        "/v3/auth/tokens",
        &[("X-Auth-Token", &tok), ("X-Subject-Token", &tok)],
        None,
    );
    assert_eq!(c, 200, "{b}");
    let exp = json(&b)["token"]["expires_at"]
        .as_str()
        .unwrap()
        .to_string();
    let iss = json(&b)["token"]["issued_at"].as_str().unwrap().to_string();
    let secs = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_second();
    assert_eq!(secs(&exp) - secs(&iss), 3);
    assert_eq!(api_status(&s, &tok), 200);
    // A re-scoped token keeps the original expiry.
    let (c, h, _) = http(
        &s,
        "POST",
        "/v3/auth/tokens",
        &[],
        Some(
            &json!({"auth": {"identity": {"methods": ["token"], "token": {"id": tok}}}})
                .to_string(),
        ),
    );
    assert_eq!(c, 201);
    assert!(h.contains("x-subject-token: h8sks_"), "{h}");
    std::thread::sleep(Duration::from_millis(3200));
    assert_eq!(api_status(&s, &tok), 401);
    let tok2 = admin_token(&s);
    let (c, _, _) = http(
        &s,
        "GET",
        "/v3/auth/tokens",
        &[("X-Auth-Token", &tok2), ("X-Subject-Token", &tok)],
        None,
    );
    assert_eq!(c, 404);
    drop(srv);
}
