//! Tells the VM tests whether the guest kernel and initramfs are built (`scripts/setup`), so
//! they are ignored with a reason instead of failing when they are not.

use std::path::PathBuf;

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
}
