//! Loads the kernel modules shipped in the initramfs, dependencies first, with `finit_module`
//! (no kmod binary in the guest).
//!
//! The set-up script puts the modules the pod VM needs under `/lib/modules/<release>/` with a
//! `modules.dep` listing exactly those; the agent loads every module that file names.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// One `modules.dep` line: a module path and the paths it depends on.
#[derive(Debug, PartialEq)]
pub struct DepLine {
    pub module: String,
    pub deps: Vec<String>,
}

/// Parses `modules.dep` (`path: dep dep …`, paths relative to the release directory).
pub fn parse_modules_dep(text: &str) -> Vec<DepLine> {
    text.lines()
        .filter_map(|line| {
            let (module, deps) = line.split_once(':')?;
            let module = module.trim();
            if module.is_empty() {
                return None;
            }
            Some(DepLine {
                module: module.to_string(),
                deps: deps.split_whitespace().map(str::to_string).collect(),
            })
        })
        .collect()
}

/// The load order: every module after all of its dependencies, each once, in file order
/// otherwise. Dependency cycles (invalid) are broken rather than looped on.
pub fn load_order(lines: &[DepLine]) -> Vec<String> {
    let deps: HashMap<&str, &[String]> = lines
        .iter()
        .map(|l| (l.module.as_str(), l.deps.as_slice()))
        .collect();
    let mut done = HashSet::new();
    let mut order = Vec::new();
    fn visit<'a>(
        m: &'a str,
        deps: &HashMap<&'a str, &'a [String]>,
        done: &mut HashSet<&'a str>,
        order: &mut Vec<String>,
    ) {
        if !done.insert(m) {
            return;
        }
        for d in deps.get(m).copied().unwrap_or_default() {
            visit(d, deps, done, order);
        }
        order.push(m.to_string());
    }
    for l in lines {
        visit(&l.module, &deps, &mut done, &mut order);
    }
    order
}

/// Loads every module of `/lib/modules/<release>/modules.dep`; returns how many were loaded and
/// the failures (module path, error). A missing `modules.dep` (a kernel with everything built
/// in) loads nothing.
pub fn load_all(release: &str, debug: bool) -> (usize, Vec<(PathBuf, io::Error)>) {
    let dir = Path::new("/lib/modules").join(release);
    let text = match std::fs::read_to_string(dir.join("modules.dep")) {
        Ok(t) => t,
        Err(_) => return (0, Vec::new()),
    };
    let mut loaded = 0;
    let mut failed = Vec::new();
    for m in load_order(&parse_modules_dep(&text)) {
        let path = dir.join(&m);
        let t = std::time::Instant::now();
        let r = load(&path);
        if debug {
            eprintln!("h8s-guest: module {m}: {:?}", t.elapsed());
        }
        match r {
            Ok(()) => loaded += 1,
            Err(e) => failed.push((path, e)),
        }
    }
    (loaded, failed)
}

fn load(path: &Path) -> io::Result<()> {
    let f = File::open(path)?;
    let params = c"";
    // SAFETY: finit_module reads the module from an open descriptor and a NUL-terminated
    // parameter string; no memory is written.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // Already loaded (or built in under another path): fine.
        if e.raw_os_error() == Some(libc::EEXIST) {
            return Ok(());
        }
        return Err(e);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_dependencies_first() {
        let text = "kernel/net/virtio_net.ko: kernel/net/net_failover.ko kernel/net/failover.ko\n\
                    kernel/virtio/virtio_mmio.ko: kernel/virtio/virtio_ring.ko kernel/virtio/virtio.ko\n\
                    kernel/net/net_failover.ko: kernel/net/failover.ko\n\
                    kernel/net/failover.ko:\n\
                    kernel/virtio/virtio.ko:\n\
                    kernel/virtio/virtio_ring.ko:\n\
                    \n\
                    garbage line\n";
        let lines = parse_modules_dep(text);
        assert_eq!(lines.len(), 6);
        let order = load_order(&lines);
        let pos = |m: &str| order.iter().position(|x| x.ends_with(m)).unwrap();
        assert_eq!(order.len(), 6);
        assert!(pos("/failover.ko") < pos("net_failover.ko"));
        assert!(pos("net_failover.ko") < pos("virtio_net.ko"));
        assert!(pos("virtio_ring.ko") < pos("virtio_mmio.ko"));
        assert!(pos("/virtio.ko") < pos("virtio_mmio.ko"));
    }

    #[test]
    fn cycles_terminate() {
        let lines = parse_modules_dep("a.ko: b.ko\nb.ko: a.ko\n");
        assert_eq!(load_order(&lines).len(), 2);
    }
}
