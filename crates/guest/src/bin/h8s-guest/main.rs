//! `h8s-guest`: PID 1 of an h8s pod VM.
//!
//! Boot: mount /proc and /dev, (bench mode: print a marker and power off), load the kernel
//! modules shipped in the initramfs, move to a tmpfs root (so containers can `pivot_root`),
//! mount the rest, find the `h8s.agent` virtio-serial port, greet the host and serve it.
//! See `docs/guest.md`.

mod container;
mod dns;
mod modules;
mod net;
mod probe;
mod pvol;
mod relay;
mod restore;
mod server;
mod services;
mod spawn;
mod sys;
mod volume;

use std::fs;
use std::path::Path;
use std::time::Duration;

use h8s_guest::{LogLevel, PORT_NAME};

/// Printed on the console in bench mode (`h8s.marker=1`), then the VM powers off.
const MARKER: &str = "H8S-GUEST-MARKER";

/// Options from the kernel command line (`h8s.*` words reach only /proc/cmdline).
#[derive(Debug, Default, PartialEq)]
struct Options {
    marker: bool,
    /// Print boot phase times on the console.
    debug: bool,
    reboot_to_power_off: bool,
    port_timeout: Option<u64>,
}

fn parse_cmdline(cmdline: &str) -> Options {
    let mut o = Options::default();
    for w in cmdline.split_whitespace() {
        match w.split_once('=') {
            Some(("h8s.marker", v)) => o.marker = v == "1",
            Some(("h8s.debug", v)) => o.debug = v == "1",
            Some(("h8s.poweroff", v)) => o.reboot_to_power_off = v == "reboot",
            Some(("h8s.port_timeout", v)) => o.port_timeout = v.parse().ok(),
            _ => {}
        }
    }
    o
}

fn mount_or_warn(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: Option<&str>) {
    let t = Path::new(target);
    let _ = fs::create_dir_all(t);
    if let Err(e) = sys::mount(Some(src), t, Some(fstype), flags, data) {
        eprintln!("h8s-guest: mount {fstype} on {target}: {e}");
    }
}

/// Makes sure fds 0-2 are the console (the kernel opens /dev/console for init only if the
/// initramfs has the node).
fn ensure_console() {
    // SAFETY: F_GETFD on a possibly closed descriptor only reports EBADF.
    if unsafe { libc::fcntl(1, libc::F_GETFD) } >= 0 {
        return;
    }
    if let Ok(c) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        use std::os::fd::IntoRawFd;
        let fd = c.into_raw_fd();
        for target in 0..3 {
            // SAFETY: dup2 onto the standard descriptors, which are closed.
            unsafe { libc::dup2(fd, target) };
        }
        if fd > 2 {
            // SAFETY: closing the descriptor we own.
            unsafe { libc::close(fd) };
        }
    }
}

/// Moves from the initramfs (rootfs, which cannot be `pivot_root`ed away from) to a tmpfs root,
/// carrying /proc and /dev along, and frees the module files.
fn switch_to_tmpfs_root() -> std::io::Result<()> {
    let new = Path::new("/newroot");
    fs::create_dir_all(new)?;
    sys::mount(Some("tmpfs"), new, Some("tmpfs"), 0, Some("mode=755"))?;
    for d in ["proc", "dev", "sys", "run", "tmp"] {
        fs::create_dir(new.join(d))?;
    }
    for d in ["proc", "dev"] {
        sys::mount(
            Some(&format!("/{d}")),
            &new.join(d),
            None,
            libc::MS_MOVE,
            None,
        )?;
    }
    let _ = fs::remove_dir_all("/lib/modules");
    let _ = fs::remove_file("/init");
    std::env::set_current_dir(new)?;
    sys::mount(Some("."), Path::new("/"), None, libc::MS_MOVE, None)?;
    // SAFETY: chroot(".") with a static C string.
    sys::check(unsafe { libc::chroot(c".".as_ptr()) })?;
    std::env::set_current_dir("/")?;
    Ok(())
}

fn main() {
    if std::process::id() != 1 {
        eprintln!("h8s-guest is the init (PID 1) of an h8s pod VM; it does nothing elsewhere");
        std::process::exit(2);
    }
    // Every thread (and so the reaper's sigwait) relies on SIGCHLD being blocked from the start.
    sys::block_sigchld();
    // SAFETY: umask has no memory arguments.
    unsafe { libc::umask(0o022) };

    mount_or_warn(
        "proc",
        "/proc",
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    );
    mount_or_warn(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        libc::MS_NOSUID,
        Some("mode=755"),
    );
    ensure_console();
    let opts = parse_cmdline(&fs::read_to_string("/proc/cmdline").unwrap_or_default());
    if opts.marker {
        println!("{MARKER} uptime_ms={}", sys::boottime_ms());
        sys::power_off(opts.reboot_to_power_off);
    }

    let phase = |name: &str| {
        if opts.debug {
            eprintln!("h8s-guest: {name} at {} ms", sys::boottime_ms());
        }
    };
    phase("start");
    let release = sys::kernel_release();
    let (loaded, failed) = modules::load_all(&release, opts.debug);
    for (path, e) in &failed {
        eprintln!("h8s-guest: load module {}: {e}", path.display());
    }
    phase("modules loaded");
    if let Err(e) = switch_to_tmpfs_root() {
        // Containers will fail to pivot_root; keep going so the host hears about it.
        eprintln!("h8s-guest: cannot leave the initramfs root: {e}");
    }
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    mount_or_warn("sysfs", "/sys", "sysfs", nosuid_nodev_noexec, None);
    mount_or_warn(
        "devpts",
        "/dev/pts",
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=666"),
    );
    mount_or_warn(
        "shm",
        "/dev/shm",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    );
    mount_or_warn(
        "tmpfs",
        "/run",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=755"),
    );
    mount_or_warn(
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    );
    if Path::new("/sys/fs/cgroup").is_dir() {
        mount_or_warn(
            "cgroup2",
            "/sys/fs/cgroup",
            "cgroup2",
            nosuid_nodev_noexec,
            None,
        );
    }
    if let Err(e) = net::loopback_up() {
        eprintln!("h8s-guest: bring up lo: {e}");
    }

    phase("mounted");
    let timeout = Duration::from_secs(opts.port_timeout.unwrap_or(30));
    let port = match server::open_port(PORT_NAME, timeout) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("h8s-guest: {e}; powering off");
            sys::power_off(opts.reboot_to_power_off);
        }
    };
    let agent = match server::Agent::new(port, sys::boottime_ms(), opts.reboot_to_power_off) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("h8s-guest: {e}; powering off");
            sys::power_off(opts.reboot_to_power_off);
        }
    };
    phase("port open");
    let reaper = std::sync::Arc::clone(&agent);
    server::spawn_thread("reaper", move || server::reap_forever(reaper));
    if !failed.is_empty() {
        agent.log(
            LogLevel::Warn,
            format!(
                "{} of {} kernel modules failed to load",
                failed.len(),
                loaded + failed.len()
            ),
        );
    }
    agent.serve()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_options() {
        let o = parse_cmdline(
            "console=ttyS0 quiet h8s.marker=1 h8s.poweroff=reboot h8s.port_timeout=5\n",
        );
        assert_eq!(
            o,
            Options {
                marker: true,
                debug: false,
                reboot_to_power_off: true,
                port_timeout: Some(5)
            }
        );
        assert_eq!(
            parse_cmdline("h8s.marker=0 h8s.port_timeout=x"),
            Options::default()
        );
    }
}
