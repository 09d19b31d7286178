//! The pod supervisor's own seccomp filter (besides QEMU's `-sandbox`), with `seccompiler`,
//! and the one filter the supervisor gives a template clone's QEMU ([`clone_memory_filter`]).
//!
//! Installed once the VM runs: from then on the supervisor only serves its socket, talks to
//! QMP and the guest agent, writes logs and its record, signals QEMU and removes the pod's
//! cgroups and sockets at the end. Everything else fails with `EPERM`: no exec, no new
//! process (clone only with `CLONE_THREAD`), no mount, namespace, ptrace, module, BPF, key
//! or uid change. `clone3` answers `ENOSYS` so the C library falls back to `clone`, whose
//! flags a filter can see.

use std::collections::BTreeMap;
use std::os::fd::RawFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::{Error, Result};

/// System calls the supervisor makes after boot (tokio, std, serde, its own code).
const ALLOWED: &[&str] = &[
    // memory, threads, signals, time
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "mprotect",
    "madvise",
    "futex",
    "set_robust_list",
    "rseq",
    "sched_yield",
    "sched_getaffinity",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "getpid",
    "gettid",
    "getppid",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getrandom",
    "prlimit64",
    "uname",
    "exit",
    "exit_group",
    "restart_syscall",
    "clone3",
    "prctl",
    // files
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "openat",
    "open",
    "close",
    "fstat",
    "newfstatat",
    "statx",
    "lseek",
    "fcntl",
    "dup",
    "dup2",
    "dup3",
    "getdents64",
    "ftruncate",
    "fsync",
    "fdatasync",
    "flock",
    "rename",
    "renameat",
    "renameat2",
    "unlink",
    "unlinkat",
    "rmdir",
    "mkdir",
    "mkdirat",
    "readlink",
    "readlinkat",
    "access",
    "faccessat",
    "faccessat2",
    "getcwd",
    "statfs",
    "fstatfs",
    "copy_file_range",
    "sendfile",
    "fchmod",
    "ioctl",
    "pipe2",
    "umask",
    "chmod",
    // sockets and polling
    "socket",
    "socketpair",
    "connect",
    "accept",
    "accept4",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "getsockopt",
    "setsockopt",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd2",
    "poll",
    "ppoll",
    // QEMU, the child: signals and reaping
    "kill",
    "tgkill",
    "wait4",
    "waitid",
    "pidfd_open",
    "pidfd_send_signal",
];

fn syscall_nr(name: &str) -> Option<i64> {
    Some(match name {
        "brk" => libc::SYS_brk,
        "mmap" => libc::SYS_mmap,
        "munmap" => libc::SYS_munmap,
        "mremap" => libc::SYS_mremap,
        "mprotect" => libc::SYS_mprotect,
        "madvise" => libc::SYS_madvise,
        "futex" => libc::SYS_futex,
        "set_robust_list" => libc::SYS_set_robust_list,
        "rseq" => libc::SYS_rseq,
        "sched_yield" => libc::SYS_sched_yield,
        "sched_getaffinity" => libc::SYS_sched_getaffinity,
        "rt_sigaction" => libc::SYS_rt_sigaction,
        "rt_sigprocmask" => libc::SYS_rt_sigprocmask,
        "rt_sigreturn" => libc::SYS_rt_sigreturn,
        "sigaltstack" => libc::SYS_sigaltstack,
        "clock_gettime" => libc::SYS_clock_gettime,
        "clock_getres" => libc::SYS_clock_getres,
        "clock_nanosleep" => libc::SYS_clock_nanosleep,
        "nanosleep" => libc::SYS_nanosleep,
        "gettimeofday" => libc::SYS_gettimeofday,
        "getpid" => libc::SYS_getpid,
        "gettid" => libc::SYS_gettid,
        "getppid" => libc::SYS_getppid,
        "getuid" => libc::SYS_getuid,
        "geteuid" => libc::SYS_geteuid,
        "getgid" => libc::SYS_getgid,
        "getegid" => libc::SYS_getegid,
        "getrandom" => libc::SYS_getrandom,
        "prlimit64" => libc::SYS_prlimit64,
        "uname" => libc::SYS_uname,
        "exit" => libc::SYS_exit,
        "exit_group" => libc::SYS_exit_group,
        "restart_syscall" => libc::SYS_restart_syscall,
        "clone3" => libc::SYS_clone3,
        "prctl" => libc::SYS_prctl,
        "read" => libc::SYS_read,
        "write" => libc::SYS_write,
        "readv" => libc::SYS_readv,
        "writev" => libc::SYS_writev,
        "pread64" => libc::SYS_pread64,
        "pwrite64" => libc::SYS_pwrite64,
        "openat" => libc::SYS_openat,
        "open" => libc::SYS_open,
        "close" => libc::SYS_close,
        "fstat" => libc::SYS_fstat,
        "newfstatat" => libc::SYS_newfstatat,
        "statx" => libc::SYS_statx,
        "lseek" => libc::SYS_lseek,
        "fcntl" => libc::SYS_fcntl,
        "dup" => libc::SYS_dup,
        "dup2" => libc::SYS_dup2,
        "dup3" => libc::SYS_dup3,
        "getdents64" => libc::SYS_getdents64,
        "ftruncate" => libc::SYS_ftruncate,
        "fsync" => libc::SYS_fsync,
        "fdatasync" => libc::SYS_fdatasync,
        "flock" => libc::SYS_flock,
        "rename" => libc::SYS_rename,
        "renameat" => libc::SYS_renameat,
        "renameat2" => libc::SYS_renameat2,
        "unlink" => libc::SYS_unlink,
        "unlinkat" => libc::SYS_unlinkat,
        "rmdir" => libc::SYS_rmdir,
        "mkdir" => libc::SYS_mkdir,
        "mkdirat" => libc::SYS_mkdirat,
        "readlink" => libc::SYS_readlink,
        "readlinkat" => libc::SYS_readlinkat,
        "access" => libc::SYS_access,
        "faccessat" => libc::SYS_faccessat,
        "faccessat2" => libc::SYS_faccessat2,
        "getcwd" => libc::SYS_getcwd,
        "statfs" => libc::SYS_statfs,
        "fstatfs" => libc::SYS_fstatfs,
        "copy_file_range" => libc::SYS_copy_file_range,
        "sendfile" => libc::SYS_sendfile,
        "fchmod" => libc::SYS_fchmod,
        "chmod" => libc::SYS_chmod,
        "ioctl" => libc::SYS_ioctl,
        "pipe2" => libc::SYS_pipe2,
        "umask" => libc::SYS_umask,
        "socket" => libc::SYS_socket,
        "socketpair" => libc::SYS_socketpair,
        "connect" => libc::SYS_connect,
        "accept" => libc::SYS_accept,
        "accept4" => libc::SYS_accept4,
        "bind" => libc::SYS_bind,
        "listen" => libc::SYS_listen,
        "getsockname" => libc::SYS_getsockname,
        "getpeername" => libc::SYS_getpeername,
        "getsockopt" => libc::SYS_getsockopt,
        "setsockopt" => libc::SYS_setsockopt,
        "sendto" => libc::SYS_sendto,
        "recvfrom" => libc::SYS_recvfrom,
        "sendmsg" => libc::SYS_sendmsg,
        "recvmsg" => libc::SYS_recvmsg,
        "shutdown" => libc::SYS_shutdown,
        "epoll_create1" => libc::SYS_epoll_create1,
        "epoll_ctl" => libc::SYS_epoll_ctl,
        "epoll_wait" => libc::SYS_epoll_wait,
        "epoll_pwait" => libc::SYS_epoll_pwait,
        "epoll_pwait2" => libc::SYS_epoll_pwait2,
        "eventfd2" => libc::SYS_eventfd2,
        "poll" => libc::SYS_poll,
        "ppoll" => libc::SYS_ppoll,
        "kill" => libc::SYS_kill,
        "tgkill" => libc::SYS_tgkill,
        "wait4" => libc::SYS_wait4,
        "waitid" => libc::SYS_waitid,
        "pidfd_open" => libc::SYS_pidfd_open,
        "pidfd_send_signal" => libc::SYS_pidfd_send_signal,
        _ => return None,
    })
}

fn arch() -> Result<TargetArch> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|e| Error::Shim(format!("seccomp: unsupported architecture: {e}")))
}

/// The supervisor's filters: the `clone3` → `ENOSYS` filter and the allow-list. The kernel
/// runs both; the stricter answer wins.
pub(crate) fn supervisor_filters() -> Result<Vec<BpfProgram>> {
    let bad = |e: seccompiler::BackendError| Error::Shim(format!("seccomp filter: {e}"));
    let arch = arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for name in ALLOWED {
        let nr = syscall_nr(name)
            .ok_or_else(|| Error::Shim(format!("seccomp: unknown system call {name}")))?;
        rules.insert(nr, Vec::new());
    }
    // clone only for threads.
    let thread = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(libc::CLONE_THREAD as u64),
        libc::CLONE_THREAD as u64,
    )
    .map_err(bad)?;
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![thread]).map_err(bad)?],
    );
    let allow = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(bad)?;
    let clone3 = SeccompFilter::new(
        BTreeMap::from([(libc::SYS_clone3, Vec::new())]),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(bad)?;
    Ok(vec![
        BpfProgram::try_from(clone3).map_err(bad)?,
        BpfProgram::try_from(allow).map_err(bad)?,
    ])
}

/// Installs the filters on every thread of this process (and all it starts later).
pub(crate) fn apply_to_process(filters: &[BpfProgram]) -> Result<()> {
    for f in filters {
        seccompiler::apply_filter_all_threads(f)
            .map_err(|e| Error::Shim(format!("installing the seccomp filter: {e}")))?;
    }
    Ok(())
}

/// The filter for a template clone's QEMU: every `fallocate` that punches a hole waits for
/// the supervisor's answer ([`serve_clone_memory`]), which skips it (returns 0) when the file
/// is the template's memory and lets it run otherwise.
///
/// QEMU 7.2 discards guest pages (a balloon's free page reports) in a file-backed memory
/// backend by punching a hole into the file, then `MADV_DONTNEED`; an error from the first
/// skips the second. For a clone the first is wrong (its mapping is private: a hole would zero
/// the page for every clone, and the template's seals refuse it) and the second is all a
/// discard should be: it drops the clone's private copies, and the pages read as the
/// template's again. Newer QEMUs skip the hole for private mappings themselves. A filter
/// cannot tell the file by itself: QEMU opens `/proc/self/fd/N` as a descriptor of its own
/// choosing, and holes in a volume's file (write-zeroes, discard) must still happen.
pub(crate) fn clone_memory_filter() -> Result<BpfProgram> {
    let bad = |e: seccompiler::BackendError| Error::Shim(format!("seccomp filter: {e}"));
    let punch = SeccompCondition::new(
        1,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(libc::FALLOC_FL_PUNCH_HOLE as u64),
        libc::FALLOC_FL_PUNCH_HOLE as u64,
    )
    .map_err(bad)?;
    // seccompiler has no user-notification action: build with a trace action, then make
    // those return instructions notify.
    const MARK: u32 = 0x4838;
    let filter = SeccompFilter::new(
        BTreeMap::from([(
            libc::SYS_fallocate,
            vec![SeccompRule::new(vec![punch]).map_err(bad)?],
        )]),
        SeccompAction::Allow,
        SeccompAction::Trace(MARK),
        arch()?,
    )
    .map_err(bad)?;
    let mut prog = BpfProgram::try_from(filter).map_err(bad)?;
    let trace = u32::from(SeccompAction::Trace(MARK));
    let ret_k = (libc::BPF_RET | libc::BPF_K) as u16;
    let mut notifying = 0;
    for i in prog.iter_mut().filter(|i| i.code == ret_k && i.k == trace) {
        i.k = libc::SECCOMP_RET_USER_NOTIF;
        notifying += 1;
    }
    if notifying == 0 {
        return Err(Error::Shim("seccomp filter: no notifying return".into()));
    }
    Ok(prog)
}

/// Installs `prog` on the calling thread, which must have `no_new_privs` set, and returns its
/// notification listener (closed on exec). One system call, no allocation: for a child
/// between fork and exec.
pub(crate) fn install_with_listener(prog: &BpfProgram) -> std::io::Result<RawFd> {
    let fprog = libc::sock_fprog {
        len: u16::try_from(prog.len())
            .map_err(|_| std::io::Error::from_raw_os_error(libc::E2BIG))?,
        filter: prog.as_ptr().cast_mut().cast(),
    };
    // SAFETY: seccomp(2) reads `fprog` and the `len` instructions it points to, which `prog`
    // owns and keeps alive for the call; it changes only this thread's filters.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r as RawFd)
}

/// Answers the notifications of [`clone_memory_filter`] on a thread of its own, until the
/// filtered processes are gone: a hole in `mem` (the template's memory, which those processes
/// opened themselves) is skipped, anything else runs. Without this thread (a supervisor that
/// died), the filter answers `ENOSYS`: no memory is returned, and QEMU writes a volume's
/// zeroes without a hole.
pub(crate) fn serve_clone_memory(
    listener: std::os::fd::OwnedFd,
    mem: &std::fs::File,
) -> Result<std::thread::JoinHandle<()>> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let m = mem
        .metadata()
        .map_err(|e| Error::io("reading the template memory's identity", e))?;
    let id = (m.dev(), m.ino());
    let span = tracing::Span::current();
    std::thread::Builder::new()
        .name("clone-memory".into())
        .spawn(move || {
            let _g = span.enter();
            let fd = listener.as_raw_fd();
            let (mut skipped, mut passed) = (0u64, 0u64);
            loop {
                // SAFETY: an all-zero seccomp_notif is what SECCOMP_IOCTL_NOTIF_RECV expects;
                // the kernel fills it in.
                let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
                // SAFETY: ioctl(2) on our listener with a buffer of the type it writes.
                if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut n) } < 0 {
                    let e = std::io::Error::last_os_error();
                    match e.raw_os_error() {
                        // Interrupted, or the caller died before we read it.
                        Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                        _ => break,
                    }
                }
                let file = std::fs::metadata(format!("/proc/{}/fd/{}", n.pid, n.data.args[0]))
                    .ok()
                    .map(|m| (m.dev(), m.ino()));
                let ours = file == Some(id);
                let resp = libc::seccomp_notif_resp {
                    id: n.id,
                    val: 0,
                    error: 0,
                    flags: if ours {
                        0
                    } else {
                        libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32
                    },
                };
                if ours {
                    skipped += 1;
                } else {
                    passed += 1;
                }
                // SAFETY: ioctl(2) on our listener with the response type it reads. An
                // answer for a caller that died meanwhile fails with ENOENT: nothing to do.
                unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &resp) };
            }
            tracing::debug!(skipped, passed, "clone memory: listener closed");
        })
        .map_err(|e| Error::io("starting the clone memory thread", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_allowed_name_is_a_system_call_and_the_filters_compile() {
        for n in ALLOWED {
            assert!(syscall_nr(n).is_some(), "{n}");
        }
        let f = supervisor_filters().unwrap();
        assert_eq!(f.len(), 2);
        assert!(f[1].len() > ALLOWED.len());
    }

    /// The filters on one thread of the test process: the supervisor's work goes on, what a
    /// compromised supervisor would want fails.
    #[test]
    fn the_filter_refuses_exec_fork_and_namespaces_but_not_io_or_threads() {
        let filters = supervisor_filters().unwrap();
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().to_path_buf();
        std::thread::spawn(move || {
            for f in &filters {
                // This thread only (no TSYNC): the rest of the test binary is unaffected.
                seccompiler::apply_filter(f).unwrap();
            }
            // Files, sockets and threads work.
            std::fs::write(dir.join("x"), b"y").unwrap();
            assert_eq!(std::fs::read(dir.join("x")).unwrap(), b"y");
            let (_a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
            std::thread::spawn(|| 1 + 1).join().unwrap();
            // Namespaces, mounts, uid changes, exec and fork do not.
            let eperm = |r: libc::c_long| {
                assert_eq!(r, -1);
                assert_eq!(
                    std::io::Error::last_os_error().raw_os_error(),
                    Some(libc::EPERM)
                );
            };
            // SAFETY: each call is refused by the filter before the kernel acts on it; the
            // pointers are valid C strings anyway.
            unsafe {
                eperm(libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS));
                eperm(libc::syscall(libc::SYS_setuid, 0));
                eperm(libc::syscall(
                    libc::SYS_mount,
                    c"none".as_ptr(),
                    c"/".as_ptr(),
                    c"tmpfs".as_ptr(),
                    0,
                    0,
                ));
                let argv = [c"/bin/true".as_ptr(), std::ptr::null()];
                eperm(libc::syscall(
                    libc::SYS_execve,
                    c"/bin/true".as_ptr(),
                    argv.as_ptr(),
                    std::ptr::null::<*const libc::c_char>(),
                ));
                // fork = clone without CLONE_THREAD.
                eperm(libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0));
            }
            let e = std::process::Command::new("/bin/true")
                .status()
                .unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EPERM), "{e}");
        })
        .join()
        .unwrap();
    }

    /// A clone's filter on one thread, answered by the supervisor's thread: punching a hole
    /// into the template's (sealed) memory succeeds and changes nothing; other calls and other
    /// files behave as without it.
    #[test]
    fn a_clone_punching_a_hole_into_the_template_changes_nothing() {
        use std::io::{Read, Seek, Write};
        use std::os::fd::{AsRawFd, FromRawFd};
        let memfd = || {
            let mut f = crate::template::memfd(8192).unwrap();
            f.write_all(&[7u8; 8192]).unwrap();
            f
        };
        let mut template = memfd();
        crate::template::seal(&template).unwrap();
        let mut other = memfd();
        let prog = clone_memory_filter().unwrap();
        // The clone opens the template's memory itself, read-write (as QEMU does).
        let reopened = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/self/fd/{}", template.as_raw_fd()))
            .unwrap();
        let (t, o) = (reopened.as_raw_fd(), other.as_raw_fd());
        let punch = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
        let (tx, rx) = std::sync::mpsc::channel();
        let caller = std::thread::spawn(move || {
            // SAFETY: prctl(2) on this thread only.
            let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
            assert_eq!(r, 0);
            tx.send(install_with_listener(&prog).unwrap()).unwrap();
            // SAFETY: fallocate(2) on descriptors this test owns.
            unsafe {
                assert_eq!(libc::fallocate(t, punch, 0, 4096), 0);
                assert_eq!(libc::fallocate(o, punch, 0, 4096), 0);
                // Not a hole: the call goes through, and the seal refuses it.
                assert_eq!(libc::fallocate(t, 0, 0, 16384), -1);
            }
            assert_eq!(
                std::io::Error::last_os_error().raw_os_error(),
                Some(libc::EPERM)
            );
        });
        let listener = rx.recv().unwrap();
        // SAFETY: the listener descriptor was just made for this test and nobody else owns it.
        let listener = unsafe { std::os::fd::OwnedFd::from_raw_fd(listener) };
        let _server = serve_clone_memory(listener, &template).unwrap();
        caller.join().unwrap();
        drop(reopened);
        let read = |f: &mut std::fs::File| {
            let mut v = Vec::new();
            f.rewind().unwrap();
            f.read_to_end(&mut v).unwrap();
            v
        };
        assert_eq!(
            read(&mut template),
            [7u8; 8192],
            "the template is untouched"
        );
        let o = read(&mut other);
        assert_eq!(o[..4096], [0u8; 4096], "the other file has its hole");
        assert_eq!(o[4096..], [7u8; 4096]);
    }
}
