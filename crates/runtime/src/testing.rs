//! Support for the pod-VM tests of every crate. Test binaries run in parallel, and QEMU under
//! TCG on a small machine cannot boot many VMs at once without every guest timing out, so VM
//! tests of all binaries take turns through one lock file.

use std::fs::File;
use std::os::fd::AsRawFd;

/// The lock file every VM test of the workspace takes.
pub const VM_TEST_LOCK: &str = "/tmp/h8s-vm-tests.lock";

/// Held while a test runs pod VMs; dropping it lets the next VM test go.
#[derive(Debug)]
pub struct VmTestLock(#[allow(dead_code)] File);

/// Blocks until no other VM test holds [`VM_TEST_LOCK`], then holds it. The descriptor is
/// close-on-exec, so daemons a test starts do not keep the lock after it ends.
pub fn vm_test_lock() -> std::io::Result<VmTestLock> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(VM_TEST_LOCK)?;
    // SAFETY: flock on a descriptor this function owns and keeps open in the guard.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(VmTestLock(f))
}

/// A process's resident memory in MiB (`VmRSS`; 0 when it is gone).
pub fn rss_mib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// Guest kernel command line words (`H8S_GUEST_CMDLINE`, `VmSettings::cmdline_extra`) that
/// make a guest which never answers: the kernel finds no `/init` in the initramfs, falls back
/// to mounting a root device and waits forever for one that does not exist. Boot-timeout
/// tests use it instead of relying on a boot being slower than their timeout.
pub const NEVER_BOOTS_CMDLINE: &str =
    "rdinit=/h8s-no-such-init root=/dev/h8s-no-such-disk rootwait";
