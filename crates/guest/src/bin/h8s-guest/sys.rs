//! Thin, checked wrappers over the syscalls the agent makes.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

/// `Ok(ret)` or the errno as an `io::Error`.
pub fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A C string from Rust text; interior NULs are invalid input.
pub fn cstr(s: impl AsRef<[u8]>) -> io::Result<CString> {
    CString::new(s.as_ref())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "string contains a NUL byte"))
}

/// A C string from a path.
pub fn cpath(p: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    cstr(p.as_os_str().as_bytes())
}

/// mount(2).
pub fn mount(
    src: Option<&str>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let src = src.map(cstr).transpose()?;
    let target = cpath(target)?;
    let fstype = fstype.map(cstr).transpose()?;
    let data = data.map(cstr).transpose()?;
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call;
    // mount(2) only reads them.
    check(unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.as_ref()
                .map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    })?;
    Ok(())
}

/// umount2(2) with `MNT_DETACH` (lazy: never fails on a busy mount).
pub fn umount_detach(target: &Path) -> io::Result<()> {
    let t = cpath(target)?;
    // SAFETY: `t` is a valid C string for the duration of the call.
    check(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) })?;
    Ok(())
}

/// mknod(2) of a character device.
pub fn mknod_char(path: &Path, mode: u32, major: u32, minor: u32) -> io::Result<()> {
    let p = cpath(path)?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `p` is a valid C string; mknod only reads it.
    check(unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR | mode, dev) })?;
    Ok(())
}

/// A pipe whose both ends are close-on-exec: `(read, write)`.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 succeeded, so both are fresh descriptors nobody else owns.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// A pseudo-terminal pair `(master, slave)`, both close-on-exec, with an initial size.
pub fn openpty(size: Option<(u16, u16)>) -> io::Result<(OwnedFd, OwnedFd)> {
    let mut master: libc::c_int = -1;
    let mut slave: libc::c_int = -1;
    // SAFETY: the out-pointers are valid; name, termios and winsize may be null.
    check(unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    })?;
    // SAFETY: openpty succeeded, so both are fresh descriptors nobody else owns.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [m.as_raw_fd(), s.as_raw_fd()] {
        // SAFETY: fcntl on descriptors we own.
        check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    }
    if let Some((rows, cols)) = size {
        set_winsize(m.as_raw_fd(), rows, cols)?;
    }
    Ok((m, s))
}

/// TIOCSWINSZ on a terminal.
pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a `winsize` from the valid pointer.
    check(unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws) })?;
    Ok(())
}

/// Sends a signal to a process.
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) has no memory arguments.
    check(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

/// setns(2) with an open namespace file.
pub fn setns(ns: &File, nstype: libc::c_int) -> io::Result<()> {
    // SAFETY: setns(2) has no memory arguments; `ns` is an open descriptor.
    check(unsafe { libc::setns(ns.as_raw_fd(), nstype) })?;
    Ok(())
}

/// Milliseconds of `CLOCK_BOOTTIME` (time since the guest kernel started).
pub fn boottime_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to the valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    ts.tv_sec as u64 * 1000 + ts.tv_nsec as u64 / 1_000_000
}

/// `uname -r`.
pub fn kernel_release() -> String {
    // SAFETY: utsname is plain old data; all-zero is a valid value.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: uname writes one utsname to the valid pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return String::new();
    }
    let bytes: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Blocks `SIGCHLD` (for the reaper's `sigwait`) in the calling thread and the threads it
/// starts afterwards.
pub fn block_sigchld() {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset before use; the masks are
    // valid pointers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
}

/// Waits for `SIGCHLD` (blocked in every thread).
pub fn wait_sigchld() {
    // SAFETY: as in `block_sigchld`; sigwait writes the signal number to `sig`.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        let mut sig = 0;
        libc::sigwait(&set, &mut sig);
    }
}

/// Reaps one exited child without blocking: `Some((pid, raw wait status))`.
pub fn reap_one() -> Option<(i32, i32)> {
    let mut status = 0;
    // SAFETY: waitpid writes the status to the valid pointer.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    (pid > 0).then_some((pid, status))
}

/// Powers the VM off (or reboots, which QEMU's `-no-reboot` turns into an exit, when the kernel
/// command line has `h8s.poweroff=reboot`). Never returns.
pub fn power_off(reboot: bool) -> ! {
    // SAFETY: sync has no arguments.
    unsafe { libc::sync() };
    let how = if reboot {
        libc::RB_AUTOBOOT
    } else {
        libc::RB_POWER_OFF
    };
    // SAFETY: reboot(2) has no memory arguments; as PID 1 we may call it.
    unsafe { libc::reboot(how) };
    // Only reached if reboot failed; PID 1 must not exit (the kernel would panic), so halt here.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

/// The block size of the filesystem holding `p` (statfs(2) `f_bsize`).
pub fn statfs_block_size(p: &Path) -> io::Result<u64> {
    let c = cpath(p)?;
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid C string and `st` a writable statfs that outlives the call.
    check(unsafe { libc::statfs(c.as_ptr(), &mut st) })?;
    Ok(st.f_bsize as u64)
}

/// `EXT4_IOC_RESIZE_FS` (`_IOW('f', 16, __u64)`).
const EXT4_IOC_RESIZE_FS: libc::c_ulong = 0x4008_6610;

/// Grows the ext4 filesystem mounted at `dir` to `blocks` blocks (online resize; the kernel
/// returns at once when the size is unchanged).
pub fn ext4_resize(dir: &Path, blocks: u64) -> io::Result<()> {
    let f = File::open(dir)?;
    let n: u64 = blocks;
    // SAFETY: the fd is open for the call's duration; the ioctl reads one u64 through the
    // pointer, which points at `n`, alive until the call returns.
    check(unsafe { libc::ioctl(f.as_raw_fd(), EXT4_IOC_RESIZE_FS, &n as *const u64) })?;
    Ok(())
}

/// lchown(2); `None` leaves an id unchanged.
pub fn lchown(p: &Path, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
    let c = cpath(p)?;
    // SAFETY: `c` is a valid C string; lchown only reads it.
    check(unsafe { libc::lchown(c.as_ptr(), uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX)) })?;
    Ok(())
}
