//! Network namespaces: named ones under `/run/netns` (as `ip netns` makes them, so `ip netns
//! exec` works on them too) and running code inside one on a dedicated thread.

use std::fs::{self, File};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::error::{Error, Result};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// A network namespace to work in: the caller's own, or one named by a file (`/run/netns/x`,
/// `/proc/<pid>/ns/net`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum NsRef {
    /// The namespace of the calling process.
    #[default]
    Current,
    /// The namespace behind this path.
    Path(PathBuf),
}

impl NsRef {
    /// `/run/netns/<name>`.
    pub fn named(name: &str) -> NsRef {
        NsRef::Path(Path::new(NETNS_DIR).join(name))
    }

    /// Runs `f` on a fresh thread that has entered this namespace: sockets it opens and
    /// processes it spawns live there. The caller's threads are never moved.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
        std::thread::scope(|s| {
            s.spawn(|| {
                if let NsRef::Path(p) = self {
                    let fd =
                        File::open(p).map_err(|e| Error::io(format!("open {}", p.display()), e))?;
                    setns(fd.as_fd(), CloneFlags::CLONE_NEWNET)
                        .map_err(|e| Error::io(format!("setns {}", p.display()), e.into()))?;
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(Error::io(
                    "namespace worker",
                    std::io::Error::other("panicked"),
                ))
            })
        })
    }

    /// Opens the namespace file (for moving links into it).
    pub(crate) fn open(&self) -> Result<File> {
        let p = match self {
            NsRef::Current => PathBuf::from("/proc/thread-self/ns/net"),
            NsRef::Path(p) => p.clone(),
        };
        File::open(&p).map_err(|e| Error::io(format!("open {}", p.display()), e))
    }
}

/// Creates `/run/netns/<name>` holding a new, empty network namespace (only `lo`, down).
pub fn create_named(name: &str) -> Result<NsRef> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') || name.len() > 200 {
        return Err(Error::invalid("namespace name", format!("{name:?}")));
    }
    fs::create_dir_all(NETNS_DIR).map_err(|e| Error::io(format!("mkdir {NETNS_DIR}"), e))?;
    let path = Path::new(NETNS_DIR).join(name);
    if path.exists() {
        return Err(Error::Exists {
            kind: "network namespace",
            name: name.into(),
        });
    }
    File::create(&path).map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    let res = std::thread::scope(|s| {
        s.spawn(|| -> Result<()> {
            unshare(CloneFlags::CLONE_NEWNET)
                .map_err(|e| Error::io("unshare(CLONE_NEWNET)", e.into()))?;
            mount(
                Some("/proc/thread-self/ns/net"),
                &path,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .map_err(|e| Error::io(format!("bind-mount {}", path.display()), e.into()))
        })
        .join()
        .unwrap_or_else(|_| {
            Err(Error::io(
                "namespace worker",
                std::io::Error::other("panicked"),
            ))
        })
    });
    if let Err(e) = res {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(NsRef::Path(path))
}

/// Deletes a named namespace; its devices go with it once nothing else holds it. Missing is fine.
pub fn delete_named(name: &str) -> Result<()> {
    let path = Path::new(NETNS_DIR).join(name);
    if !path.exists() {
        return Ok(());
    }
    match umount2(&path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(Error::io(format!("umount {}", path.display()), e.into())),
    }
    fs::remove_file(&path).map_err(|e| Error::io(format!("remove {}", path.display()), e))
}

/// Names of `/run/netns` entries starting with `prefix`.
pub fn list_named(prefix: &str) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(NETNS_DIR)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Writes a sysctl of the calling thread's network namespace (`net.ipv4.ip_forward` →
/// `/proc/sys/net/ipv4/ip_forward`). Call it inside [`NsRef::run`].
pub(crate) fn sysctl(key: &str, value: &str) -> Result<()> {
    let p = format!("/proc/sys/{}", key.replace('.', "/"));
    fs::write(&p, value).map_err(|e| Error::io(format!("write {p}"), e))
}

/// Like [`sysctl`] for per-device keys whose device name may contain dots.
pub(crate) fn sysctl_dev(family: &str, dev: &str, key: &str, value: &str) -> Result<()> {
    let p = format!("/proc/sys/net/{family}/conf/{dev}/{key}");
    fs::write(&p, value).map_err(|e| Error::io(format!("write {p}"), e))
}
