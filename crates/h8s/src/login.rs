//! `h8s login` and `h8s credential`: logging in with kubectl, which has no password
//! prompt of its own.
//!
//! `h8s login --server URL --user alice --tenant acme --certificate-authority ca.crt`
//! asks the server's identity service (Keystone v3, `POST /v3/auth/tokens`) for a token,
//! caches it, and writes a kubeconfig context whose user is the exec credential plugin
//! `h8s credential` (`client.authentication.k8s.io/v1`). kubectl runs the plugin for
//! every command; the plugin answers with the cached token while the server still
//! accepts it, and asks for the password again (on the terminal) when it has expired or
//! was revoked.
//!
//! State, per login, in `${XDG_CONFIG_HOME:-~/.config}/h8s/login/<user>@<tenant>@<host>/`
//! (directory 0700): `ca.crt` and `token.json` (0600).

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use h8s_client::kube;
use serde_json::{json, Value};

/// How long before its expiry a cached token is no longer handed out.
const EXPIRY_MARGIN_SECS: i64 = 60;

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// The API server, `https://host:port`.
    #[arg(long)]
    pub server: String,
    /// The user name.
    #[arg(long)]
    pub user: String,
    /// The user's tenant (Keystone project).
    #[arg(long)]
    pub tenant: String,
    /// The cluster CA certificate (PEM); default: the CA of a kubeconfig cluster that
    /// already points at `--server`.
    #[arg(long = "certificate-authority")]
    pub certificate_authority: Option<PathBuf>,
    /// Read the password from the first line of stdin instead of the terminal.
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// The kubeconfig to write (default: `$KUBECONFIG`'s first file, else ~/.kube/config).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The context's name (default `<user>@<tenant>`).
    #[arg(long)]
    pub context: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct CredentialArgs {
    /// The API server (kubectl's `KUBERNETES_EXEC_INFO` wins when it names one).
    #[arg(long)]
    pub server: String,
    #[arg(long)]
    pub user: String,
    #[arg(long)]
    pub tenant: String,
}

fn config_home() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x);
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".config")
}

/// The per-login state directory.
fn state_dir(server: &str, user: &str, tenant: &str) -> PathBuf {
    let host = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .replace(
            |c: char| !(c.is_ascii_alphanumeric() || c == '.' || c == '-'),
            "_",
        );
    let safe = |s: &str| {
        s.replace(
            |c: char| !(c.is_ascii_alphanumeric() || "._-".contains(c)),
            "_",
        )
    };
    config_home()
        .join("h8s/login")
        .join(format!("{}@{}@{host}", safe(user), safe(tenant)))
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// A client that trusts `ca_pem` and sends no credential of its own.
fn anonymous_client(server: &str, ca_pem: &[u8]) -> anyhow::Result<kube::Client> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let uri: http::Uri = server
        .parse()
        .with_context(|| format!("server URL {server:?}"))?;
    let mut cfg = kube::Config::new(uri);
    let certs = CertificateDer::pem_slice_iter(ca_pem)
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("CA certificate: {e}"))?;
    if certs.is_empty() {
        bail!("the CA file holds no certificate");
    }
    cfg.root_cert = Some(certs);
    cfg.connect_timeout = Some(std::time::Duration::from_secs(10));
    cfg.read_timeout = Some(std::time::Duration::from_secs(30));
    kube::Client::try_from(cfg).context("building the HTTPS client")
}

async fn send(
    client: &kube::Client,
    req: http::Request<Vec<u8>>,
) -> anyhow::Result<(u16, http::HeaderMap, Value)> {
    use http_body_util::BodyExt;
    let req = req.map(kube::client::Body::from);
    let resp = client
        .send(req)
        .await
        .context("calling the identity service")?;
    let code = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Ok((
        code,
        headers,
        serde_json::from_slice(&body).unwrap_or(Value::Null),
    ))
}

/// A token and when it expires (Unix seconds).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Cached {
    token: String,
    expires_at: i64,
}

/// `POST /v3/auth/tokens` with a password, scoped to the tenant.
async fn password_token(
    client: &kube::Client,
    user: &str,
    tenant: &str,
    password: &str,
) -> anyhow::Result<Cached> {
    let body = json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": tenant, "domain": {"id": "default"}}},
    }});
    let req = http::Request::post("/v3/auth/tokens?nocatalog")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body)?)?;
    let (code, headers, v) = send(client, req).await?;
    if code != 201 {
        let msg = v
            .pointer("/error/message")
            .and_then(Value::as_str)
            .unwrap_or("no message");
        bail!("login failed ({code}): {msg}");
    }
    let token = headers
        .get("x-subject-token")
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| anyhow!("the identity service sent no X-Subject-Token"))?
        .to_string();
    let expires_at = v
        .pointer("/token/expires_at")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
        .ok_or_else(|| anyhow!("the identity service sent no token expiry"))?;
    Ok(Cached { token, expires_at })
}

/// True while the server still accepts `token` (`GET /v3/auth/tokens`).
async fn still_valid(client: &kube::Client, token: &str) -> anyhow::Result<bool> {
    let req = http::Request::get("/v3/auth/tokens?nocatalog")
        .header("x-auth-token", token)
        .header("x-subject-token", token)
        .body(Vec::new())?;
    let (code, _, _) = send(client, req).await?;
    Ok(code == 200)
}

/// Reads a password from the terminal without echo.
pub fn prompt_password(prompt: &str) -> anyhow::Result<String> {
    use std::os::fd::AsRawFd;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for the password on (use --password-stdin)")?;
    let fd = tty.as_raw_fd();
    let mut term = std::mem::MaybeUninit::<libc::termios>::uninit();
    // SAFETY: `fd` is an open terminal for the life of `tty`; tcgetattr fills `term`.
    let have = unsafe { libc::tcgetattr(fd, term.as_mut_ptr()) } == 0;
    let saved = if have {
        // SAFETY: tcgetattr succeeded, so `term` is initialised.
        Some(unsafe { term.assume_init() })
    } else {
        None
    };
    if let Some(saved) = saved {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        quiet.c_lflag |= libc::ECHONL;
        // SAFETY: `fd` is open; `quiet` is a valid termios copied from the terminal's own.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut out = &tty;
    let _ = write!(out, "{prompt}");
    let _ = out.flush();
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    if let Some(saved) = saved {
        // SAFETY: as above; restores the terminal's own settings.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    read.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// The first line of stdin.
pub fn stdin_password() -> anyhow::Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the password from stdin")?;
    let pw = line.trim_end_matches(['\r', '\n']).to_string();
    if pw.is_empty() {
        bail!("no password on stdin");
    }
    Ok(pw)
}

fn kubeconfig_path(arg: Option<PathBuf>) -> PathBuf {
    if let Some(p) = arg {
        return p;
    }
    if let Some(k) = std::env::var_os("KUBECONFIG").filter(|k| !k.is_empty()) {
        if let Some(first) = std::env::split_paths(&k).next() {
            return first;
        }
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
    PathBuf::from(home).join(".kube/config")
}

fn read_kubeconfig(path: &Path) -> anyhow::Result<Value> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => {
            let v: Value = serde_saphyr::from_str(&text)
                .with_context(|| format!("parsing kubeconfig {}", path.display()))?;
            Ok(v)
        }
        Ok(_) => Ok(json!({})),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(json!({})),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Replaces or adds the entry called `name` in the list `key` of a kubeconfig.
fn upsert(kc: &mut Value, key: &str, name: &str, item_key: &str, item: Value) {
    if !kc.get(key).is_some_and(Value::is_array) {
        kc[key] = json!([]);
    }
    let entry = json!({"name": name, item_key: item});
    if let Some(list) = kc[key].as_array_mut() {
        match list
            .iter_mut()
            .find(|e| e.get("name").and_then(Value::as_str) == Some(name))
        {
            Some(e) => *e = entry,
            None => list.push(entry),
        }
    }
}

/// The CA of a kubeconfig cluster that points at `server`.
fn ca_from_kubeconfig(kc: &Value, server: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    kc.get("clusters")?.as_array()?.iter().find_map(|c| {
        let cl = c.get("cluster")?;
        if cl.get("server")?.as_str()?.trim_end_matches('/') != server.trim_end_matches('/') {
            return None;
        }
        if let Some(d) = cl.get("certificate-authority-data").and_then(Value::as_str) {
            return base64::engine::general_purpose::STANDARD.decode(d).ok();
        }
        std::fs::read(cl.get("certificate-authority")?.as_str()?).ok()
    })
}

pub fn login(args: LoginArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(login_async(args))
}

async fn login_async(args: LoginArgs) -> anyhow::Result<()> {
    use base64::Engine as _;
    let server = args.server.trim_end_matches('/').to_string();
    if !server.starts_with("https://") {
        bail!("--server must be an https:// URL");
    }
    let kc_path = kubeconfig_path(args.kubeconfig.clone());
    let mut kc = read_kubeconfig(&kc_path)?;
    let ca = match &args.certificate_authority {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => ca_from_kubeconfig(&kc, &server).ok_or_else(|| {
            anyhow!("no CA for {server}: pass --certificate-authority (the cluster's ca.crt)")
        })?,
    };
    let client = anonymous_client(&server, &ca)?;
    let password = if args.password_stdin {
        stdin_password()?
    } else {
        prompt_password(&format!("Password for {}@{}: ", args.user, args.tenant))?
    };
    let cached = password_token(&client, &args.user, &args.tenant, &password).await?;
    let dir = state_dir(&server, &args.user, &args.tenant);
    write_private(&dir.join("ca.crt"), &ca)?;
    write_private(&dir.join("token.json"), &serde_json::to_vec(&cached)?)?;
    let name = args
        .context
        .clone()
        .unwrap_or_else(|| format!("{}@{}", args.user, args.tenant));
    let exe = std::env::current_exe()
        .context("finding the h8s binary for the credential plugin")?
        .display()
        .to_string();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&ca);
    upsert(
        &mut kc,
        "clusters",
        &name,
        "cluster",
        json!({"server": server, "certificate-authority-data": b64}),
    );
    upsert(
        &mut kc,
        "users",
        &name,
        "user",
        json!({"exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": exe,
            "args": ["credential", "--server", server, "--user", args.user, "--tenant", args.tenant],
            "interactiveMode": "IfAvailable",
            "provideClusterInfo": true,
            "installHint": "h8s credential is part of the h8s binary",
        }}),
    );
    upsert(
        &mut kc,
        "contexts",
        &name,
        "context",
        json!({"cluster": name, "user": name}),
    );
    kc["current-context"] = json!(name);
    kc["apiVersion"] = json!("v1");
    kc["kind"] = json!("Config");
    write_private(&kc_path, serde_json::to_string_pretty(&kc)?.as_bytes())?;
    eprintln!(
        "Logged in as {} in tenant {}; context {name:?} in {} (token valid until {}).",
        args.user,
        args.tenant,
        kc_path.display(),
        jiff::Timestamp::from_second(cached.expires_at)
            .map(|t| t.to_string())
            .unwrap_or_default()
    );
    Ok(())
}

pub fn credential(args: CredentialArgs) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let out = rt.block_on(credential_async(args))?;
    println!("{out}");
    Ok(())
}

async fn credential_async(args: CredentialArgs) -> anyhow::Result<Value> {
    use base64::Engine as _;
    // kubectl tells the plugin about the cluster (provideClusterInfo) and whether it
    // may talk to the user.
    let info: Value = std::env::var("KUBERNETES_EXEC_INFO")
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or(Value::Null);
    let api_version = info
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("client.authentication.k8s.io/v1")
        .to_string();
    let interactive = info
        .pointer("/spec/interactive")
        .and_then(Value::as_bool)
        .unwrap_or_else(|| std::io::stdin().is_terminal());
    let server = args.server.trim_end_matches('/').to_string();
    let dir = state_dir(&server, &args.user, &args.tenant);
    let ca = match info
        .pointer("/spec/cluster/certificate-authority-data")
        .and_then(Value::as_str)
        .and_then(|d| base64::engine::general_purpose::STANDARD.decode(d).ok())
    {
        Some(ca) => ca,
        None => std::fs::read(dir.join("ca.crt"))
            .with_context(|| format!("no CA for {server}: run h8s login again"))?,
    };
    let client = anonymous_client(&server, &ca)?;
    let now = jiff::Timestamp::now().as_second();
    let cached: Option<Cached> = std::fs::read(dir.join("token.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .filter(|c: &Cached| c.expires_at > now + EXPIRY_MARGIN_SECS);
    let cached = match cached {
        Some(c) if still_valid(&client, &c.token).await? => c,
        _ => {
            let _ = std::fs::remove_file(dir.join("token.json"));
            if !interactive {
                bail!(
                    "the token of {}@{} expired or was revoked; run `h8s login --server {server} --user {} --tenant {}`",
                    args.user, args.tenant, args.user, args.tenant
                );
            }
            let pw = prompt_password(&format!("Password for {}@{}: ", args.user, args.tenant))?;
            let c = password_token(&client, &args.user, &args.tenant, &pw).await?;
            write_private(&dir.join("token.json"), &serde_json::to_vec(&c)?)?;
            c
        }
    };
    let exp = jiff::Timestamp::from_second(cached.expires_at)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    Ok(json!({
        "apiVersion": api_version,
        "kind": "ExecCredential",
        "status": {"token": cached.token, "expirationTimestamp": exp},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubeconfig_entries_are_replaced_by_name() {
        let mut kc = json!({"clusters": [{"name": "a", "cluster": {"server": "https://x"}}]});
        upsert(
            &mut kc,
            "clusters",
            "a",
            "cluster",
            json!({"server": "https://y"}),
        );
        upsert(
            &mut kc,
            "clusters",
            "b",
            "cluster",
            json!({"server": "https://z"}),
        );
        assert_eq!(kc["clusters"].as_array().unwrap().len(), 2);
        assert_eq!(kc["clusters"][0]["cluster"]["server"], "https://y");
        let d = state_dir("https://127.0.0.1:6443/", "al/ice", "acme");
        assert!(d.ends_with("al_ice@acme@127.0.0.1_6443"), "{}", d.display());
    }
}
