//! Starting a process in a container: a `clone` with `CLONE_VM | CLONE_VFORK` (as
//! posix_spawn: no copy of the agent's page tables, no copy-on-write faults — under TCG a
//! fork of the agent cost more than the rest of an exec), optionally into new namespaces, then
//! in the child only async-signal-safe syscalls on memory prepared beforehand (the agent is
//! multi-threaded and the memory is shared, so the child must not allocate or take locks).

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, RawFd};

/// Where a child failed before `execve`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Stage {
    Stdio = 1,
    Namespace = 2,
    Root = 3,
    Proc = 4,
    Hostname = 5,
    Identity = 6,
    WorkingDir = 7,
    Exec = 8,
}

impl Stage {
    fn from_u32(v: u32) -> Option<Stage> {
        Some(match v {
            1 => Stage::Stdio,
            2 => Stage::Namespace,
            3 => Stage::Root,
            4 => Stage::Proc,
            5 => Stage::Hostname,
            6 => Stage::Identity,
            7 => Stage::WorkingDir,
            8 => Stage::Exec,
            _ => return None,
        })
    }
}

/// The child's failure: the stage and the errno.
#[derive(Debug)]
pub struct ChildError {
    pub stage: Stage,
    pub error: io::Error,
}

/// Everything the child needs, prepared by the parent (owned C strings plus pointer arrays).
pub struct Plan {
    /// Extra `clone` flags (namespaces); `SIGCHLD` is always added.
    pub clone_flags: libc::c_int,
    /// Namespaces to enter in the child (exec sessions): `(ns file, CLONE_NEW*)`.
    pub enter: Vec<(File, libc::c_int)>,
    /// The pid namespace to create the child in (exec sessions) and the caller's own, to
    /// return to at once: while switched, the calling thread cannot start threads.
    pub pidns: Option<(File, File)>,
    /// Make this directory the root with `pivot_root` (container main process).
    pub pivot_root: Option<CString>,
    /// Mount a fresh `/proc` after the root change (new pid namespace).
    pub mount_proc: bool,
    pub hostname: Option<CString>,
    /// Executable paths to try, in order (the `PATH` search, done without allocating).
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<libc::gid_t>,
    /// Make stdin the controlling terminal.
    pub tty: bool,
}

/// Clones and starts the child with `stdio` as its fds 0, 1, 2. Returns its pid once it has
/// exec'd, or the child's error (the child has then exited; the caller's reaper reaps it).
/// `register` runs right after the clone with the pid (before exec is known to have worked), so
/// the reaper can always match the exit to a process.
pub fn spawn(
    plan: &Plan,
    stdio: [RawFd; 3],
    register: impl FnOnce(i32),
) -> io::Result<Result<i32, ChildError>> {
    let argv: Vec<*const libc::c_char> = plan
        .argv
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let envp: Vec<*const libc::c_char> = plan
        .envp
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let (err_r, err_w) = crate::sys::pipe()?;
    if let Some((target, _)) = &plan.pidns {
        crate::sys::setns(target, libc::CLONE_NEWPID)?;
    }

    let mut stack = vec![0u8; CHILD_STACK];
    let args = ChildArgs {
        plan,
        stdio,
        argv: &argv,
        envp: &envp,
        err: err_w.as_raw_fd(),
    };
    // The stack grows down from its (16-byte aligned) end.
    let top = (stack.as_mut_ptr() as usize + stack.len()) & !15;
    // SAFETY: `CLONE_VM | CLONE_VFORK` as posix_spawn does: the child shares this address
    // space but runs on its own stack, and this thread is suspended until the child has
    // called execve or _exit, so `args`, `argv`, `envp` and `stack` outlive its use of them.
    // The child (`child_entry`) makes only system calls on memory prepared above: no
    // allocation, no locks, no writes to memory this thread reads afterwards (errno aside,
    // which the parent reads only when no child was created).
    let pid = unsafe {
        libc::clone(
            child_entry,
            top as *mut libc::c_void,
            plan.clone_flags | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            &args as *const ChildArgs as *mut libc::c_void,
        )
    };
    let clone_error = io::Error::last_os_error();
    drop(stack);
    if let Some((_, own)) = &plan.pidns {
        if let Err(e) = crate::sys::setns(own, libc::CLONE_NEWPID) {
            // Every later container would nest in this one's namespace, and no thread could be
            // started: nothing sensible is left to do.
            eprintln!("h8s-guest: cannot return to the agent's pid namespace: {e}");
            crate::sys::power_off(false);
        }
    }
    if pid < 0 {
        return Err(clone_error);
    }
    let pid = pid as i32;
    register(pid);
    drop(err_w);
    let mut report = [0u8; 8];
    let mut got = 0;
    let mut f = File::from(err_r);
    while got < report.len() {
        match f.read(&mut report[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if got == 0 {
        return Ok(Ok(pid));
    }
    let stage = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
    let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
    Ok(Err(ChildError {
        stage: Stage::from_u32(stage).unwrap_or(Stage::Exec),
        error: io::Error::from_raw_os_error(errno),
    }))
}

/// The child's stack: it only makes system calls (a few frames, no buffers).
const CHILD_STACK: usize = 64 * 1024;

/// What the child reads, on the parent's memory (shared until execve).
struct ChildArgs<'a> {
    plan: &'a Plan,
    stdio: [RawFd; 3],
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    err: RawFd,
}

extern "C" fn child_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `ChildArgs` of `spawn`, alive while the parent is suspended.
    let a = unsafe { &*(arg as *const ChildArgs<'_>) };
    child(a.plan, a.stdio, a.argv, a.envp, a.err)
}

/// The child side. Only async-signal-safe calls from here on; the memory is the agent's
/// (`CLONE_VM`) until execve, so nothing here may write what the agent relies on.
fn child(
    plan: &Plan,
    stdio: [RawFd; 3],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
    err: RawFd,
) -> ! {
    let fail = |stage: Stage| -> ! {
        // SAFETY: errno location is thread-local and valid; write and _exit are
        // async-signal-safe and take a valid buffer.
        unsafe {
            let errno = *libc::__errno_location();
            let mut buf = [0u8; 8];
            buf[..4].copy_from_slice(&(stage as u32).to_ne_bytes());
            buf[4..].copy_from_slice(&errno.to_ne_bytes());
            libc::write(err, buf.as_ptr().cast(), buf.len());
            libc::_exit(127)
        }
    };
    // SAFETY: each call below is a plain syscall on descriptors and on
    // NUL-terminated strings / arrays prepared by the parent, which stay valid in the child's
    // copy of the address space.
    unsafe {
        // While this child shares the agent's memory, no process of the container may trace
        // it (a non-root exec drops to the container's uid below): not dumpable. execve gives
        // the new program a fresh, dumpable address space.
        if libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 {
            fail(Stage::Stdio);
        }
        // The agent blocks SIGCHLD and std ignores SIGPIPE; neither may leak into the workload
        // (an ignored disposition survives execve).
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);

        if libc::setsid() < 0 {
            fail(Stage::Stdio);
        }
        for (target, &fd) in stdio.iter().enumerate() {
            let target = target as RawFd;
            if fd == target {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    fail(Stage::Stdio);
                }
            } else if libc::dup2(fd, target) < 0 {
                fail(Stage::Stdio);
            }
        }
        if plan.tty && libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            fail(Stage::Stdio);
        }
        for (ns, kind) in &plan.enter {
            if libc::setns(ns.as_raw_fd(), *kind) < 0 {
                fail(Stage::Namespace);
            }
        }
        if let Some(root) = &plan.pivot_root {
            // Keep our mounts from propagating back to the agent's namespace.
            if libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) < 0
            {
                fail(Stage::Root);
            }
            if libc::chdir(root.as_ptr()) < 0 {
                fail(Stage::Root);
            }
            // pivot_root(".", ".") stacks the old root on top of the new one; detaching it
            // leaves only the container's tree.
            if libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) < 0 {
                fail(Stage::Root);
            }
            if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) < 0 {
                fail(Stage::Root);
            }
            if libc::chdir(c"/".as_ptr()) < 0 {
                fail(Stage::Root);
            }
        }
        if plan.mount_proc
            && libc::mount(
                c"proc".as_ptr(),
                c"/proc".as_ptr(),
                c"proc".as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                std::ptr::null(),
            ) < 0
        {
            fail(Stage::Proc);
        }
        if let Some(h) = &plan.hostname {
            if libc::sethostname(h.as_ptr(), h.as_bytes().len()) < 0 {
                fail(Stage::Hostname);
            }
        }
        // The directory is entered as root (before dropping privileges), as runc does when the
        // user cannot search it.
        if libc::chdir(plan.cwd.as_ptr()) < 0 {
            fail(Stage::WorkingDir);
        }
        // Raw syscalls, not glibc's setuid & co.: those broadcast the change to every thread
        // glibc believes exists (the parent's, copied into this fork-like child) and wait for
        // answers that never come.
        if libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()) < 0
            || libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) < 0
            || libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) < 0
        {
            fail(Stage::Identity);
        }
        let mut best_errno = libc::ENOENT;
        for c in &plan.candidates {
            libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
            let e = *libc::__errno_location();
            // Like execvp: remember a more telling error than "not found".
            if e != libc::ENOENT && e != libc::ENOTDIR {
                best_errno = e;
            }
        }
        *libc::__errno_location() = best_errno;
        fail(Stage::Exec)
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::io::Read;
    use std::os::fd::IntoRawFd;

    use super::*;

    fn plan(args: &[&str], cwd: &str) -> Plan {
        let c = |s: &str| CString::new(s).unwrap();
        Plan {
            clone_flags: 0,
            enter: Vec::new(),
            pidns: None,
            pivot_root: None,
            mount_proc: false,
            hostname: None,
            candidates: vec![c(args[0])],
            argv: args.iter().map(|a| c(a)).collect(),
            envp: vec![c("GREETING=hello")],
            cwd: c(cwd),
            // SAFETY: getuid/getgid have no preconditions.
            uid: unsafe { libc::getuid() },
            // SAFETY: as above.
            gid: unsafe { libc::getgid() },
            groups: Vec::new(),
            tty: false,
        }
    }

    fn wait(pid: i32) -> i32 {
        let mut st = 0;
        // SAFETY: waitpid writes the status of our own child to a valid pointer.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
        libc::WEXITSTATUS(st)
    }

    /// The vfork-style spawn runs the program with the plan's argv, env, working directory
    /// and stdio, and the exit status is the program's; a failure before execve comes back
    /// as the stage and errno, not as a running child. (Needs root: it switches identity.)
    #[test]
    fn spawns_with_the_plan_and_reports_child_failures() {
        let (out_r, out_w) = crate::sys::pipe().unwrap();
        let null = File::open("/dev/null").unwrap();
        let stdio = [null.as_raw_fd(), out_w.as_raw_fd(), out_w.as_raw_fd()];
        let mut registered = None;
        let p = plan(&["/bin/sh", "-c", "echo $GREETING $(pwd); exit 3"], "/tmp");
        let pid = spawn(&p, stdio, |pid| registered = Some(pid))
            .unwrap()
            .unwrap();
        assert_eq!(registered, Some(pid));
        drop(out_w);
        let mut out = String::new();
        File::from(out_r).read_to_string(&mut out).unwrap();
        assert_eq!(out, "hello /tmp\n");
        assert_eq!(wait(pid), 3);

        let missing = spawn(&plan(&["/nonexistent/prog"], "/"), stdio_null(), |pid| {
            registered = Some(pid)
        })
        .unwrap()
        .unwrap_err();
        assert_eq!(missing.stage, Stage::Exec);
        assert_eq!(missing.error.raw_os_error(), Some(libc::ENOENT));
        assert_eq!(wait(registered.unwrap()), 127);

        let bad_dir = spawn(&plan(&["/bin/true"], "/nonexistent"), stdio_null(), |pid| {
            registered = Some(pid)
        })
        .unwrap()
        .unwrap_err();
        assert_eq!(bad_dir.stage, Stage::WorkingDir);
        assert_eq!(wait(registered.unwrap()), 127);
    }

    fn stdio_null() -> [RawFd; 3] {
        // Leaked on purpose: the descriptors must outlive the spawn; a test process is short.
        let fd = File::open("/dev/null").unwrap().into_raw_fd();
        [fd; 3]
    }
}
