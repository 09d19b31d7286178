//! Tells the VM tests whether the guest kernel and initramfs are built (`scripts/setup`), so
//! they are ignored with a reason instead of failing when they are not; and names the build
//! (`H8S_RUNTIME_BUILD_ID`, a hash of the sources a pod supervisor is made of), so a binary can
//! tell whether the standalone `h8s-pod-shim` beside it comes from the same sources.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(h8s_guest)");
    println!("cargo::rerun-if-env-changed=H8S_CACHE");
    let cache = std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/h8s")))
        .unwrap_or_else(|| PathBuf::from("/var/cache/h8s"));
    let guest = cache.join("guest");
    // Watching the directory reruns this script when the set-up step creates the files.
    println!("cargo::rerun-if-changed={}", guest.display());
    let ready = ["vmlinuz", "initramfs.img"]
        .iter()
        .all(|f| guest.join(f).is_file());
    if ready {
        println!("cargo::rustc-cfg=h8s_guest");
    }
    build_id();
}

/// Hashes this crate's sources, those of the workspace crates it speaks to the guest and the
/// network with, and the lock file (every dependency's version). The guest agent's own code
/// (`crates/guest/src/bin`) is not the supervisor's: changing it neither alters the id nor
/// reruns this script (which would rebuild this crate and relink `h8s`).
fn build_id() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let crates = manifest.parent().expect("crates/runtime").to_path_buf();
    let lock = crates.parent().expect("workspace").join("Cargo.lock");
    let mut files = vec![lock];
    for c in ["runtime", "guest", "net"] {
        files.push(crates.join(c).join("Cargo.toml"));
        collect(&crates.join(c).join("src"), &mut files);
    }
    // Whole directories where a new file matters; the guest protocol's files one by one (a new
    // module of it changes `lib.rs`).
    let watched_dirs = [crates.join("runtime/src"), crates.join("net/src")];
    for d in &watched_dirs {
        println!("cargo::rerun-if-changed={}", d.display());
    }
    let agent = crates.join("guest/src/bin");
    files.retain(|f| !f.starts_with(&agent));
    files.sort();
    let mut h = DefaultHasher::new();
    for f in &files {
        if !watched_dirs.iter().any(|d| f.starts_with(d)) {
            println!("cargo::rerun-if-changed={}", f.display());
        }
        f.strip_prefix(&crates).unwrap_or(f).hash(&mut h);
        std::fs::read(f).unwrap_or_default().hash(&mut h);
    }
    println!("cargo::rustc-env=H8S_RUNTIME_BUILD_ID={:016x}", h.finish());
}

fn collect(path: &Path, out: &mut Vec<PathBuf>) {
    match std::fs::read_dir(path) {
        Ok(entries) => {
            for e in entries.flatten() {
                collect(&e.path(), out);
            }
        }
        Err(_) if path.is_file() => out.push(path.to_path_buf()),
        Err(_) => {}
    }
}
