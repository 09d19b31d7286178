//! The audit log: one JSON line per request, in the shape of Kubernetes'
//! `audit.k8s.io/v1` `Event` (stage `ResponseComplete`; for watches and streams, when the
//! response starts) plus h8s' `tenant` and `latencyMicros`.
//!
//! A policy (a subset of kube-apiserver's `audit.k8s.io/v1 Policy`: rules matched in order on
//! `users`, `userGroups`, `verbs`, `resources` (`group`, `resources`), `namespaces`,
//! `nonResourceURLs`; the first match gives the level) says which requests are logged:
//! `None` or `Metadata` (`Request` and `RequestResponse` are accepted and logged at
//! `Metadata`: h8s never writes bodies to the log). Without a policy file every request is
//! logged at `Metadata`.
//!
//! Lines go through a bounded queue to one writer thread, so a slow disk never blocks a
//! request (a full queue drops the line and counts it); the file is rotated by size into
//! `<name>-<UTC time>.<ext>` backups, the oldest beyond `max_backups` removed.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};

use crate::auth::{Attributes, UserInfo};

/// How much of a request the log keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    None,
    Metadata,
}

impl Level {
    fn parse(s: &str) -> Result<Level, AuditError> {
        match s {
            "None" => Ok(Level::None),
            // Bodies are never logged: the richer levels log metadata.
            "Metadata" | "Request" | "RequestResponse" => Ok(Level::Metadata),
            other => Err(AuditError::Policy(format!("unknown audit level {other:?}"))),
        }
    }
}

/// Why the audit log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit policy: {0}")]
    Policy(String),
    #[error("audit log {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct RawGroupResources {
    #[serde(default)]
    group: String,
    #[serde(default)]
    resources: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawRule {
    level: String,
    #[serde(default)]
    users: Vec<String>,
    #[serde(default)]
    user_groups: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
    #[serde(default)]
    resources: Vec<RawGroupResources>,
    #[serde(default)]
    namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    non_resource_urls: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawPolicy {
    #[serde(default)]
    kind: String,
    #[serde(default)]
    rules: Vec<RawRule>,
}

/// One policy rule; empty lists match everything.
#[derive(Debug, Clone)]
struct Rule {
    level: Level,
    users: Vec<String>,
    user_groups: Vec<String>,
    verbs: Vec<String>,
    /// (group, resources: `pods`, `pods/log`, `*`, `*/status`; empty = all of the group)
    resources: Vec<(String, Vec<String>)>,
    namespaces: Vec<String>,
    non_resource_urls: Vec<String>,
}

fn resource_matches(pattern: &str, resource: &str, sub: &str) -> bool {
    let full = if sub.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}/{sub}")
    };
    match pattern {
        "*" => true,
        p if p == full => true,
        p if p.starts_with("*/") => !sub.is_empty() && &p[2..] == sub,
        p if p.ends_with("/*") => !sub.is_empty() && &p[..p.len() - 2] == resource,
        _ => false,
    }
}

impl Rule {
    fn matches(&self, user: Option<&UserInfo>, a: &Attributes) -> bool {
        let name = user
            .map(|u| u.username.as_str())
            .unwrap_or("system:anonymous");
        if !self.users.is_empty() && !self.users.iter().any(|u| u == name) {
            return false;
        }
        if !self.user_groups.is_empty()
            && !user.is_some_and(|u| u.groups.iter().any(|g| self.user_groups.contains(g)))
        {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.iter().any(|v| v == &a.verb) {
            return false;
        }
        if a.resource_request {
            if !self.non_resource_urls.is_empty() && self.resources.is_empty() {
                return false;
            }
            if !self.namespaces.is_empty() && !self.namespaces.contains(&a.namespace) {
                return false;
            }
            if !self.resources.is_empty()
                && !self.resources.iter().any(|(g, rs)| {
                    (g == &a.group || g == "*")
                        && (rs.is_empty()
                            || rs
                                .iter()
                                .any(|p| resource_matches(p, &a.resource, &a.subresource)))
                })
            {
                return false;
            }
        } else {
            if !self.resources.is_empty() || !self.namespaces.is_empty() {
                return false;
            }
            if !self.non_resource_urls.is_empty()
                && !self
                    .non_resource_urls
                    .iter()
                    .any(|p| match p.strip_suffix('*') {
                        Some(prefix) => a.path.starts_with(prefix),
                        None => a.path == *p,
                    })
            {
                return false;
            }
        }
        true
    }
}

/// Which requests are logged, at which level.
#[derive(Debug, Clone)]
pub struct Policy {
    rules: Vec<Rule>,
}

impl Default for Policy {
    /// Everything at `Metadata`.
    fn default() -> Self {
        Policy {
            rules: vec![Rule {
                level: Level::Metadata,
                users: vec![],
                user_groups: vec![],
                verbs: vec![],
                resources: vec![],
                namespaces: vec![],
                non_resource_urls: vec![],
            }],
        }
    }
}

impl Policy {
    /// Parses an `audit.k8s.io/v1 Policy` in YAML or JSON.
    pub fn parse(text: &str) -> Result<Policy, AuditError> {
        let raw: RawPolicy =
            serde_saphyr::from_str(text).map_err(|e| AuditError::Policy(e.to_string()))?;
        if !raw.kind.is_empty() && raw.kind != "Policy" {
            return Err(AuditError::Policy(format!(
                "kind must be Policy, not {:?}",
                raw.kind
            )));
        }
        let rules = raw
            .rules
            .into_iter()
            .map(|r| {
                Ok(Rule {
                    level: Level::parse(&r.level)?,
                    users: r.users,
                    user_groups: r.user_groups,
                    verbs: r.verbs,
                    resources: r
                        .resources
                        .into_iter()
                        .map(|g| (g.group, g.resources))
                        .collect(),
                    namespaces: r.namespaces,
                    non_resource_urls: r.non_resource_urls,
                })
            })
            .collect::<Result<Vec<_>, AuditError>>()?;
        Ok(Policy { rules })
    }

    /// The level of a request: the first matching rule's, else `None` (as Kubernetes).
    pub fn level(&self, user: Option<&UserInfo>, a: &Attributes) -> Level {
        self.rules
            .iter()
            .find(|r| r.matches(user, a))
            .map_or(Level::None, |r| r.level)
    }
}

/// Where and how the audit log is written (`--audit-log-path`, `--audit-log-maxsize`,
/// `--audit-log-maxbackup`, `--audit-policy-file`).
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// The log file; `-` writes to standard output.
    pub path: PathBuf,
    /// Rotate when the file would grow past this many bytes (0: never).
    pub max_size: u64,
    /// Rotated files kept (0: all).
    pub max_backups: usize,
    pub policy: Policy,
    /// Lines queued for the writer before new ones are dropped.
    pub queue: usize,
}

impl AuditConfig {
    pub fn new(path: PathBuf) -> Self {
        AuditConfig {
            path,
            max_size: 100 * 1024 * 1024,
            max_backups: 0,
            policy: Policy::default(),
            queue: 10_000,
        }
    }
}

/// One finished request, as the dispatcher saw it.
pub struct Record<'a> {
    pub user: Option<&'a UserInfo>,
    pub attrs: &'a Attributes,
    pub method: &'a http::Method,
    pub uri: &'a str,
    pub source: Option<std::net::SocketAddr>,
    pub user_agent: &'a str,
    pub code: u16,
    pub received: jiff::Timestamp,
    pub latency: std::time::Duration,
    /// `Some(true)` allowed, `Some(false)` forbidden, `None` not authorized (no user).
    pub decision: Option<bool>,
}

/// The running audit log.
pub struct AuditLog {
    policy: Policy,
    tx: SyncSender<Vec<u8>>,
    dropped: AtomicU64,
}

impl AuditLog {
    /// Opens the file and starts the writer thread.
    pub fn start(cfg: AuditConfig) -> Result<Arc<AuditLog>, AuditError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(cfg.queue.max(1));
        let writer = Writer::open(&cfg)?;
        std::thread::Builder::new()
            .name("audit-log".into())
            .spawn(move || writer.run(rx))
            .map_err(|source| AuditError::Io {
                path: cfg.path.display().to_string(),
                source,
            })?;
        Ok(Arc::new(AuditLog {
            policy: cfg.policy,
            tx,
            dropped: AtomicU64::new(0),
        }))
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Logs one request if the policy asks for it. Never blocks.
    pub fn record(&self, r: &Record<'_>) {
        if self.policy.level(r.user, r.attrs) == Level::None {
            return;
        }
        let mut line = serde_json::to_vec(&event(r)).unwrap_or_default();
        line.push(b'\n');
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if self
                    .dropped
                    .fetch_add(1, Ordering::Relaxed)
                    .is_multiple_of(1000)
                {
                    tracing::warn!("audit log: the writer is behind, dropping lines");
                }
            }
        }
    }
}

/// The `audit.k8s.io/v1 Event` of a record.
fn event(r: &Record<'_>) -> Value {
    let a = r.attrs;
    let mut user = json!({"username": r.user.map_or("system:anonymous", |u| u.username.as_str())});
    if let Some(u) = r.user {
        if !u.uid.is_empty() {
            user["uid"] = json!(u.uid);
        }
        user["groups"] = json!(u.groups);
    }
    let now = jiff::Timestamp::now();
    let mut ev = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": crate::util::new_uid(),
        "stage": "ResponseComplete",
        "requestURI": r.uri,
        "verb": if a.verb.is_empty() { r.method.as_str().to_lowercase() } else { a.verb.clone() },
        "user": user,
        "tenant": r.user.and_then(|u| u.tenant()),
        "sourceIPs": r.source.map(|s| vec![s.ip().to_string()]).unwrap_or_default(),
        "userAgent": r.user_agent,
        "responseStatus": {"metadata": {}, "code": r.code},
        "requestReceivedTimestamp": r.received.to_string(),
        "stageTimestamp": now.to_string(),
        "latencyMicros": r.latency.as_micros() as u64,
    });
    if a.resource_request {
        let mut o = json!({"resource": a.resource, "apiVersion": a.version});
        for (k, v) in [
            ("namespace", &a.namespace),
            ("name", &a.name),
            ("apiGroup", &a.group),
            ("subresource", &a.subresource),
        ] {
            if !v.is_empty() {
                o[k] = json!(v);
            }
        }
        ev["objectRef"] = o;
    }
    if let Some(d) = r.decision {
        ev["annotations"] =
            json!({"authorization.k8s.io/decision": if d { "allow" } else { "forbid" }});
    }
    ev
}

/// The writer thread's side: the open file, its size, rotation.
struct Writer {
    path: PathBuf,
    max_size: u64,
    max_backups: usize,
    out: Option<std::io::BufWriter<std::fs::File>>,
    size: u64,
}

impl Writer {
    fn open(cfg: &AuditConfig) -> Result<Writer, AuditError> {
        let mut w = Writer {
            path: cfg.path.clone(),
            max_size: cfg.max_size,
            max_backups: cfg.max_backups,
            out: None,
            size: 0,
        };
        if w.path != Path::new("-") {
            w.reopen().map_err(|source| AuditError::Io {
                path: cfg.path.display().to_string(),
                source,
            })?;
        }
        Ok(w)
    }

    fn reopen(&mut self) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut o = std::fs::OpenOptions::new();
        o.create(true).append(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
        let f = o.open(&self.path)?;
        self.size = f.metadata()?.len();
        self.out = Some(std::io::BufWriter::new(f));
        Ok(())
    }

    fn run(mut self, rx: Receiver<Vec<u8>>) {
        while let Ok(line) = rx.recv() {
            self.write(&line);
            // Drain what is queued, then flush once.
            while let Ok(line) = rx.try_recv() {
                self.write(&line);
            }
            self.flush();
        }
        self.flush();
    }

    fn flush(&mut self) {
        if let Some(o) = self.out.as_mut() {
            let _ = o.flush();
        } else {
            let _ = std::io::stdout().flush();
        }
    }

    fn write(&mut self, line: &[u8]) {
        if self.out.is_none() {
            if self.path == Path::new("-") {
                let _ = std::io::stdout().write_all(line);
                return;
            }
            if self.reopen().is_err() {
                return;
            }
        }
        if self.max_size > 0 && self.size > 0 && self.size + line.len() as u64 > self.max_size {
            if let Err(e) = self.rotate() {
                tracing::warn!(error = %e, "audit log: rotation failed");
            }
        }
        if let Some(o) = self.out.as_mut() {
            match o.write_all(line) {
                Ok(()) => self.size += line.len() as u64,
                Err(e) => {
                    tracing::warn!(error = %e, "audit log: write failed");
                    self.out = None;
                }
            }
        }
    }

    /// Moves the file to `<stem>-<UTC time><.ext>`, opens a new one and removes the
    /// oldest backups beyond `max_backups`.
    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(mut o) = self.out.take() {
            o.flush()?;
        }
        let (stem, ext) = stem_ext(&self.path);
        let now = jiff::Timestamp::now();
        let ts = format!(
            "{}.{:03}",
            now.strftime("%Y-%m-%dT%H-%M-%S"),
            now.subsec_millisecond()
        );
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let mut backup = dir.join(format!("{stem}-{ts}{ext}"));
        let mut n = 1;
        while backup.exists() {
            backup = dir.join(format!("{stem}-{ts}.{n}{ext}"));
            n += 1;
        }
        std::fs::rename(&self.path, &backup)?;
        self.reopen()?;
        if self.max_backups > 0 {
            let mut backups = backups_of(&self.path);
            backups.sort();
            let excess = backups.len().saturating_sub(self.max_backups);
            for old in backups.into_iter().take(excess) {
                let _ = std::fs::remove_file(old);
            }
        }
        Ok(())
    }
}

fn stem_ext(path: &Path) -> (String, String) {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "audit".into());
    let ext = path
        .extension()
        .map(|e| format!(".{}", e.to_string_lossy()))
        .unwrap_or_default();
    (stem, ext)
}

/// The rotated backups of `path`, by name (their names sort by time).
pub fn backups_of(path: &Path) -> Vec<PathBuf> {
    let (stem, ext) = stem_ext(path);
    let dir = path.parent().unwrap_or(Path::new("."));
    let prefix = format!("{stem}-");
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().map(|n| n.to_string_lossy()).is_some_and(|n| {
                        n.starts_with(&prefix) && n.ends_with(&ext) && n.len() > prefix.len() + 10
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(verb: &str, resource: &str, ns: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource: resource.into(),
            namespace: ns.into(),
            version: "v1".into(),
            resource_request: true,
            ..Default::default()
        }
    }

    #[test]
    fn policy_rules_in_order() {
        let p = Policy::parse(
            r#"
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
- level: None
  users: ["system:kube-scheduler"]
- level: None
  verbs: ["watch"]
- level: None
  resources: [{group: "", resources: ["events", "pods/log"]}]
- level: RequestResponse
  namespaces: ["acme"]
- level: None
  nonResourceURLs: ["/healthz*", "/version"]
- level: Metadata
"#,
        )
        .unwrap();
        let u = |n: &str| UserInfo {
            username: n.into(),
            ..Default::default()
        };
        let sched = u("system:kube-scheduler");
        assert_eq!(
            p.level(Some(&sched), &attrs("get", "pods", "x")),
            Level::None
        );
        assert_eq!(
            p.level(Some(&u("a")), &attrs("watch", "pods", "x")),
            Level::None
        );
        assert_eq!(
            p.level(Some(&u("a")), &attrs("create", "events", "x")),
            Level::None
        );
        let mut log = attrs("get", "pods", "x");
        log.subresource = "log".into();
        assert_eq!(p.level(Some(&u("a")), &log), Level::None);
        assert_eq!(
            p.level(Some(&u("a")), &attrs("get", "pods", "acme")),
            Level::Metadata
        );
        let health = Attributes {
            verb: "get".into(),
            path: "/healthz/etcd".into(),
            ..Default::default()
        };
        assert_eq!(p.level(None, &health), Level::None);
        assert_eq!(
            p.level(None, &attrs("get", "secrets", "y")),
            Level::Metadata
        );
        assert!(Policy::parse("rules: [{level: Loud}]").is_err());
        assert!(Policy::parse("kind: Other").is_err());
        // No matching rule: not logged.
        let p = Policy::parse("rules: [{level: Metadata, verbs: [delete]}]").unwrap();
        assert_eq!(p.level(None, &attrs("get", "pods", "x")), Level::None);
    }

    #[test]
    fn lines_and_rotation() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("audit.log");
        let mut cfg = AuditConfig::new(path.clone());
        cfg.max_size = 4096;
        cfg.max_backups = 2;
        let log = AuditLog::start(cfg).unwrap();
        let user = UserInfo {
            username: "alice".into(),
            groups: vec!["h8s:tenant:acme".into()],
            ..Default::default()
        };
        let a = attrs("delete", "configmaps", "acme-ns");
        for _ in 0..100 {
            log.record(&Record {
                user: Some(&user),
                attrs: &a,
                method: &http::Method::DELETE,
                uri: "/api/v1/namespaces/acme-ns/configmaps/x",
                source: Some("127.0.0.1:5000".parse().unwrap()),
                user_agent: "test",
                code: 200,
                received: jiff::Timestamp::now(),
                latency: std::time::Duration::from_micros(1500),
                decision: Some(true),
            });
        }
        // The writer is asynchronous: wait for it to settle.
        let t0 = std::time::Instant::now();
        let count = || {
            let mut files = backups_of(&path);
            files.push(path.clone());
            files
                .iter()
                .map(|f| {
                    std::fs::read_to_string(f)
                        .unwrap_or_default()
                        .lines()
                        .count()
                })
                .sum::<usize>()
        };
        while backups_of(&path).len() < 2 && t0.elapsed().as_secs() < 5 {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(backups_of(&path).len(), 2, "at most two backups kept");
        assert!(
            count() < 100,
            "the oldest lines went with the removed backups"
        );
        for f in backups_of(&path).iter().chain([&path]) {
            let s = std::fs::read_to_string(f).unwrap();
            assert!(
                s.len() as u64 <= 4096,
                "{} is {} bytes",
                f.display(),
                s.len()
            );
            for l in s.lines() {
                let v: Value = serde_json::from_str(l).unwrap();
                assert_eq!(v["user"]["username"], "alice");
                assert_eq!(v["tenant"], "acme");
                assert_eq!(v["verb"], "delete");
                assert_eq!(v["objectRef"]["namespace"], "acme-ns");
                assert_eq!(v["responseStatus"]["code"], 200);
                assert_eq!(v["sourceIPs"][0], "127.0.0.1");
                assert_eq!(v["latencyMicros"], 1500);
            }
        }
        assert_eq!(log.dropped(), 0);
    }
}
