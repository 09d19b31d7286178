//! Detects whether the pod VM boot test can run here: the guest kernel and initramfs built by
//! `scripts/setup.d/20-guest.sh`, QEMU, mkfs.erofs and busybox. If not, the boot tests are
//! compiled as `#[ignore]`d with the reason (cfg `h8s_guest_artifacts`).

use std::path::PathBuf;

fn main() {
    println!("cargo:rustc-check-cfg=cfg(h8s_guest_artifacts)");
    println!("cargo:rerun-if-env-changed=H8S_CACHE");
    println!("cargo:rerun-if-env-changed=HOME");
    let cache = std::env::var_os("H8S_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/h8s")));
    let Some(cache) = cache else { return };
    let needed = [
        cache.join("guest/vmlinuz"),
        cache.join("guest/initramfs.img"),
        cache.join("guest/guest.env"),
        PathBuf::from("/usr/bin/qemu-system-x86_64"),
        PathBuf::from("/usr/bin/mkfs.erofs"),
        PathBuf::from("/bin/busybox"),
    ];
    // Re-evaluated when the set-up step (re)writes guest.env or a tool appears; not on every
    // initramfs rebuild, which would recompile this crate's dependents for nothing.
    for p in &needed[2..] {
        println!("cargo:rerun-if-changed={}", p.display());
    }
    if needed.iter().all(|p| p.exists()) {
        println!("cargo:rustc-cfg=h8s_guest_artifacts");
    }
}
