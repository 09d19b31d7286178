//! Entering the jail between fork and exec of QEMU.
//!
//! Everything is computed before the fork ([`Plan::new`]): paths as C strings, the namespace
//! flags, the descriptors to keep. [`Plan::enter`] then runs in the child, where only
//! async-signal-safe calls are allowed: it makes raw system calls and allocates nothing.
//!
//! In the child, in order: join the pod's cgroups (write `0` to each `cgroup.procs`), keep the
//! passed descriptors open across exec, `unshare` mount/IPC/UTS/cgroup (and net) namespaces
//! (the PID namespace was unshared by the supervisor for its children, so QEMU is PID 1 of its
//! own), build the new root on a tmpfs and `pivot_root` into it, drop every capability from
//! the bounding set, switch to the pod's uid/gid with no supplementary groups, clear the
//! remaining capability sets and set `no_new_privs`.

use std::ffi::CString;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// One step of building the new root (paths are host paths under the jail's root).
#[derive(Debug)]
enum Op {
    Mkdir(CString),
    /// An empty file to bind a file onto.
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    /// A procfs showing only processes (QEMU's own: it is PID 1 of its PID namespace).
    Proc(CString),
    /// Bind `src` onto `dst`, then remount it with `flags` (always nosuid; `MS_RDONLY`,
    /// `MS_NODEV`, `MS_NOEXEC` as given).
    Bind {
        src: CString,
        dst: CString,
        flags: libc::c_ulong,
    },
}

/// What QEMU's jail holds and how QEMU runs.
#[derive(Debug)]
pub(crate) struct Plan {
    /// uid and gid to switch to (`None`: stay uid 0).
    ids: Option<(libc::uid_t, libc::gid_t)>,
    /// `unshare(2)` flags.
    unshare: libc::c_int,
    /// The directory the new root is mounted on (empty, created by the supervisor).
    root: CString,
    tmpfs_opts: CString,
    ops: Vec<Op>,
    /// Descriptors QEMU inherits.
    keep: Vec<RawFd>,
    /// `cgroup.procs` of the pod's cgroups.
    cgroups: Vec<RawFd>,
    /// Namespaces QEMU gets (for the record).
    pub namespaces: Vec<String>,
}

/// Where the kernel and initramfs appear inside the jail.
pub(crate) const KERNEL: &str = "/vm/kernel";
/// See [`KERNEL`].
pub(crate) const INITRD: &str = "/vm/initrd";
/// Where [`Contents::lib_dir`] appears inside the jail.
pub(crate) const LIB_DIR: &str = "/vm/lib";

/// What goes into the jail.
pub(crate) struct Contents<'a> {
    /// The pod's uid and gid; `None`: QEMU stays uid 0 (still without any capability).
    pub ids: Option<(u32, u32)>,
    /// Host directories QEMU sees read-only at the same path (e.g. a Ceph configuration).
    pub extra_ro_dirs: Vec<PathBuf>,
    /// A directory of shared libraries QEMU loads (`VmSettings::qemu_lib_dir`), read-only at
    /// [`LIB_DIR`] (not `noexec`: its files are mapped executable).
    pub lib_dir: Option<&'a Path>,
    /// The (empty) directory to build the root on.
    pub root: &'a Path,
    /// QEMU's executable, absolute.
    pub qemu: &'a Path,
    pub kernel: &'a Path,
    pub initrd: &'a Path,
    /// Mount a process-only procfs (`subset=pid,hidepid=invisible`) at `/proc`: QEMU opens a
    /// VM template's memory, a sealed memfd it inherits, as `/proc/self/fd/N` (QEMU 7.2 takes
    /// memory files by path only).
    pub proc_pids: bool,
    /// Add `/dev/kvm`.
    pub kvm: bool,
    /// Give QEMU its own network namespace (it then reaches no network but its tap).
    pub own_net: bool,
    /// Descriptors QEMU inherits.
    pub keep: Vec<RawFd>,
    pub cgroups: &'a [std::fs::File],
}

fn cstr(p: impl AsRef<std::ffi::OsStr>) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_ref().as_bytes())
        .map_err(|_| Error::InvalidArgument(format!("path {:?} has a NUL byte", p.as_ref())))
}

impl Plan {
    pub fn new(c: &Contents<'_>) -> Result<Plan> {
        let root = c.root.to_path_buf();
        let at = |p: &Path| root.join(p.strip_prefix("/").unwrap_or(p));
        let mut ops = Vec::new();
        let mut made: Vec<PathBuf> = Vec::new();
        let mut mkdir_p = |ops: &mut Vec<Op>, dir: &Path| -> Result<()> {
            let mut cur = PathBuf::from("/");
            for comp in dir.components().skip(1) {
                cur.push(comp);
                if !made.contains(&cur) {
                    made.push(cur.clone());
                    ops.push(Op::Mkdir(cstr(at(&cur))?));
                }
            }
            Ok(())
        };
        const RO: libc::c_ulong = libc::MS_RDONLY | libc::MS_NODEV;
        // Programs and libraries: /usr read-only, the merged-/usr links as on the host.
        mkdir_p(&mut ops, Path::new("/usr"))?;
        ops.push(Op::Bind {
            src: cstr("/usr")?,
            dst: cstr(at(Path::new("/usr")))?,
            flags: RO,
        });
        for l in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            let p = Path::new(l);
            match std::fs::symlink_metadata(p) {
                Ok(m) if m.file_type().is_symlink() => {
                    let target = std::fs::read_link(p)
                        .map_err(|e| Error::io(format!("reading link {l}"), e))?;
                    ops.push(Op::Symlink {
                        target: cstr(target)?,
                        link: cstr(at(p))?,
                    });
                }
                Ok(m) if m.is_dir() => {
                    mkdir_p(&mut ops, p)?;
                    ops.push(Op::Bind {
                        src: cstr(p)?,
                        dst: cstr(at(p))?,
                        flags: RO,
                    });
                }
                _ => {}
            }
        }
        if !c.qemu.starts_with("/usr") {
            let d = c.qemu.parent().unwrap_or(Path::new("/"));
            mkdir_p(&mut ops, d)?;
            ops.push(Op::Bind {
                src: cstr(d)?,
                dst: cstr(at(d))?,
                flags: RO,
            });
        }
        for d in &c.extra_ro_dirs {
            if d.is_dir() && d.is_absolute() {
                mkdir_p(&mut ops, d)?;
                ops.push(Op::Bind {
                    src: cstr(d)?,
                    dst: cstr(at(d))?,
                    flags: RO | libc::MS_NOEXEC,
                });
            }
        }
        // The guest's kernel and initramfs, read-only.
        mkdir_p(&mut ops, Path::new("/vm"))?;
        for (src, dst) in [(c.kernel, KERNEL), (c.initrd, INITRD)] {
            ops.push(Op::Touch(cstr(at(Path::new(dst)))?));
            ops.push(Op::Bind {
                src: cstr(src)?,
                dst: cstr(at(Path::new(dst)))?,
                flags: RO | libc::MS_NOEXEC,
            });
        }
        if let Some(d) = c.lib_dir {
            mkdir_p(&mut ops, Path::new(LIB_DIR))?;
            ops.push(Op::Bind {
                src: cstr(d)?,
                dst: cstr(at(Path::new(LIB_DIR)))?,
                flags: RO,
            });
        }
        if c.proc_pids {
            mkdir_p(&mut ops, Path::new("/proc"))?;
            ops.push(Op::Proc(cstr(at(Path::new("/proc")))?));
        }
        // Device nodes: only these.
        mkdir_p(&mut ops, Path::new("/dev"))?;
        let mut devs = vec!["/dev/null", "/dev/zero", "/dev/urandom"];
        if c.kvm {
            devs.push("/dev/kvm");
        }
        for d in devs {
            ops.push(Op::Touch(cstr(at(Path::new(d)))?));
            ops.push(Op::Bind {
                src: cstr(d)?,
                dst: cstr(at(Path::new(d)))?,
                flags: libc::MS_NOEXEC,
            });
        }
        let mut unshare =
            libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS | libc::CLONE_NEWCGROUP;
        let mut namespaces: Vec<String> = ["mount", "pid", "ipc", "uts", "cgroup"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        if c.own_net {
            unshare |= libc::CLONE_NEWNET;
            namespaces.push("net".into());
        }
        Ok(Plan {
            ids: c.ids,
            unshare,
            root: cstr(c.root)?,
            tmpfs_opts: cstr("mode=0755,size=1m,nr_inodes=256")?,
            ops,
            keep: c.keep.clone(),
            cgroups: c.cgroups.iter().map(|f| f.as_raw_fd()).collect(),
            namespaces,
        })
    }

    /// Runs in the forked child, before exec. Async-signal-safe: raw system calls on data
    /// prepared before the fork, no allocation, no locks.
    pub fn enter(&self) -> std::io::Result<()> {
        // On failure the step's name goes to stderr (qemu.log): write(2) is async-signal-safe.
        let check = |r: libc::c_int, step: &'static [u8]| {
            if r < 0 {
                let e = std::io::Error::last_os_error();
                // SAFETY: writes a static buffer to fd 2.
                unsafe { libc::write(2, step.as_ptr().cast(), step.len()) };
                Err(e)
            } else {
                Ok(())
            }
        };
        // SAFETY: (the whole sequence) every pointer passed is a NUL-terminated C string or a
        // buffer owned by `self`, alive for the call; the calls are system calls listed as
        // async-signal-safe or raw ones (mount, pivot_root, prctl, setres*id, capset) that
        // take no user-space locks; only this single-threaded child is affected.
        unsafe {
            for &fd in &self.cgroups {
                let r = if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                    0
                } else {
                    -1
                };
                check(r, b"h8s jail: joining the pod's cgroup failed\n")?;
            }
            for &fd in &self.keep {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                check(flags, b"h8s jail: F_GETFD failed\n")?;
                check(
                    libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC),
                    b"h8s jail: F_SETFD failed\n",
                )?;
            }
            check(libc::unshare(self.unshare), b"h8s jail: unshare failed\n")?;
            // Nothing mounted from here on propagates back to the host.
            check(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ),
                b"h8s jail: making mounts private failed\n",
            )?;
            check(
                libc::mount(
                    c"tmpfs".as_ptr(),
                    self.root.as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    self.tmpfs_opts.as_ptr().cast(),
                ),
                b"h8s jail: mounting the root tmpfs failed\n",
            )?;
            for op in &self.ops {
                match op {
                    Op::Mkdir(p) => {
                        check(libc::mkdir(p.as_ptr(), 0o755), b"h8s jail: mkdir failed\n")?
                    }
                    Op::Touch(p) => {
                        let fd = libc::open(
                            p.as_ptr(),
                            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                            0o600,
                        );
                        check(fd, b"h8s jail: creating a mount point failed\n")?;
                        libc::close(fd);
                    }
                    Op::Proc(dst) => check(
                        libc::mount(
                            c"proc".as_ptr(),
                            dst.as_ptr(),
                            c"proc".as_ptr(),
                            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            c"subset=pid,hidepid=invisible".as_ptr().cast(),
                        ),
                        b"h8s jail: mounting /proc failed\n",
                    )?,
                    Op::Symlink { target, link } => check(
                        libc::symlink(target.as_ptr(), link.as_ptr()),
                        b"h8s jail: symlink failed\n",
                    )?,
                    Op::Bind { src, dst, flags } => {
                        check(
                            libc::mount(
                                src.as_ptr(),
                                dst.as_ptr(),
                                std::ptr::null(),
                                libc::MS_BIND | libc::MS_REC,
                                std::ptr::null(),
                            ),
                            b"h8s jail: bind mount failed\n",
                        )?;
                        check(
                            libc::mount(
                                std::ptr::null(),
                                dst.as_ptr(),
                                std::ptr::null(),
                                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NOSUID | flags,
                                std::ptr::null(),
                            ),
                            b"h8s jail: read-only remount failed\n",
                        )?;
                    }
                }
            }
            // pivot_root(".", "."): the old root ends up on top of the new one and is detached.
            check(libc::chdir(self.root.as_ptr()), b"h8s jail: chdir failed\n")?;
            check(
                libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) as libc::c_int,
                b"h8s jail: pivot_root failed\n",
            )?;
            check(
                libc::umount2(c".".as_ptr(), libc::MNT_DETACH),
                b"h8s jail: detaching the old root failed\n",
            )?;
            check(libc::chdir(c"/".as_ptr()), b"h8s jail: chdir / failed\n")?;
            check(
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    std::ptr::null(),
                ),
                b"h8s jail: remounting the root read-only failed\n",
            )?;
            // Capabilities: the bounding set first (needs CAP_SETPCAP, so before the uid
            // switch); values past the kernel's last capability fail with EINVAL.
            for cap in 0..64 {
                if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EINVAL) {
                        return Err(e);
                    }
                }
            }
            check(
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_CLEAR_ALL,
                    0,
                    0,
                    0,
                ),
                b"h8s jail: clearing ambient capabilities failed\n",
            )?;
            if let Some((uid, gid)) = self.ids {
                check(
                    libc::setgroups(0, std::ptr::null()),
                    b"h8s jail: setgroups failed\n",
                )?;
                check(
                    libc::setresgid(gid, gid, gid),
                    b"h8s jail: setresgid failed\n",
                )?;
                check(
                    libc::setresuid(uid, uid, uid),
                    b"h8s jail: setresuid failed\n",
                )?;
            }
            // The uid switch cleared the permitted and effective sets; clear inheritable too.
            #[repr(C)]
            struct Header {
                version: u32,
                pid: libc::c_int,
            }
            #[repr(C)]
            struct Data {
                effective: u32,
                permitted: u32,
                inheritable: u32,
            }
            let hdr = Header {
                version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
                pid: 0,
            };
            let data = [
                Data {
                    effective: 0,
                    permitted: 0,
                    inheritable: 0,
                },
                Data {
                    effective: 0,
                    permitted: 0,
                    inheritable: 0,
                },
            ];
            check(
                libc::syscall(libc::SYS_capset, &hdr as *const Header, data.as_ptr())
                    as libc::c_int,
                b"h8s jail: capset failed\n",
            )?;
            check(
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
                b"h8s jail: no_new_privs failed\n",
            )?;
        }
        Ok(())
    }
}

/// Gives the calling thread's future children a new PID namespace (QEMU becomes its PID 1).
/// The supervisor starts only QEMU, so this is done once, just before that.
pub(crate) fn unshare_pid_for_children() -> Result<()> {
    // A second VM of the same supervisor (a cold boot after a failed template restore) needs
    // a new namespace: the first one died with its PID 1. Back to our own first (unshare
    // refuses while the namespace for children differs from ours).
    if let Ok(own) = std::fs::File::open("/proc/self/ns/pid") {
        // SAFETY: setns(2) on a namespace descriptor we own; it changes only which namespace
        // this thread's later children are created in.
        unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) };
    }
    // SAFETY: unshare(2) with CLONE_NEWPID changes only which namespace this thread's later
    // children are created in; it touches no memory.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } < 0 {
        return Err(Error::io(
            "unsharing the PID namespace",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `program` as an absolute path, searched in `$PATH` like exec does.
pub(crate) fn resolve_program(program: &Path) -> Result<PathBuf> {
    if program.is_absolute() {
        return Ok(program.to_path_buf());
    }
    if program.components().count() > 1 {
        return std::fs::canonicalize(program)
            .map_err(|e| Error::io(format!("resolving {}", program.display()), e));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Qemu(format!("{} not found in PATH", program.display())))
}

/// Opens the persistent tap `name` (made by the network fabric) for QEMU to inherit, and
/// makes `owner` (the pod's uid and gid) its owner, so nobody else may attach to it.
pub(crate) fn open_tap(name: &str, owner: Option<(u32, u32)>) -> Result<std::fs::File> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const TUNSETOWNER: libc::c_ulong = 0x4004_54cc;
    const TUNSETGROUP: libc::c_ulong = 0x4004_54ce;
    const IFF_TAP: libc::c_short = 0x0002;
    const IFF_NO_PI: libc::c_short = 0x1000;
    const IFF_VNET_HDR: libc::c_short = 0x4000;
    #[repr(C)]
    struct IfReq {
        name: [u8; libc::IFNAMSIZ],
        flags: libc::c_short,
        _pad: [u8; 22],
    }
    if name.is_empty() || name.len() >= libc::IFNAMSIZ {
        return Err(Error::InvalidArgument(format!("tap name {name:?}")));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::io("opening /dev/net/tun", e))?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        // As QEMU would open it by name (vnet headers on, no packet info).
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `f` is an open /dev/net/tun descriptor; TUNSETIFF reads and writes a `struct
    // ifreq`, which `IfReq` lays out (name, flags, padding to its full 40 bytes).
    if unsafe { libc::ioctl(f.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) } < 0 {
        return Err(Error::io(
            format!("attaching to tap {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    if let Some((uid, gid)) = owner {
        for (op, id) in [(TUNSETOWNER, uid), (TUNSETGROUP, gid)] {
            // SAFETY: TUNSETOWNER/TUNSETGROUP take the id by value on an attached tap fd.
            if unsafe { libc::ioctl(f.as_raw_fd(), op, id as libc::c_ulong) } < 0 {
                return Err(Error::io(
                    format!("giving tap {name} to uid {uid}"),
                    std::io::Error::last_os_error(),
                ));
            }
        }
    }
    Ok(f)
}

/// Makes the supervisor the pod's own user once what needs root is done (tap, cgroups,
/// QEMU's namespaces, the template memory): its bounding set emptied (while `CAP_SETPCAP` is
/// still held), no supplementary groups, real/effective/saved gid and uid the pod's — which
/// clears every capability, on every thread (glibc applies `setresuid`/`setresgid` to all
/// threads) — and `no_new_privs`. It then signals QEMU as the same uid, and writes its pod
/// directory because [`own_pod_dir`] gave it to that uid. Checked afterwards: no
/// capability left in the effective or permitted set.
pub(crate) fn drop_supervisor_to(uid: u32, gid: u32) -> Result<()> {
    // SAFETY: prctl/setgroups/setresgid/setresuid/capget with plain integers, a null list
    // of length 0 and stack buffers that outlive the calls; they change only this
    // process's credentials.
    unsafe {
        for cap in 0..64u32 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) < 0 {
                let e = std::io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::EINVAL) {
                    return Err(Error::io("dropping the bounding set", e));
                }
            }
        }
        if libc::setgroups(0, std::ptr::null()) < 0 {
            return Err(Error::io(
                "dropping supplementary groups",
                std::io::Error::last_os_error(),
            ));
        }
        if libc::setresgid(gid, gid, gid) < 0 {
            return Err(Error::io(
                format!("setresgid({gid})"),
                std::io::Error::last_os_error(),
            ));
        }
        if libc::setresuid(uid, uid, uid) < 0 {
            return Err(Error::io(
                format!("setresuid({uid})"),
                std::io::Error::last_os_error(),
            ));
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return Err(Error::io(
                "setting no_new_privs",
                std::io::Error::last_os_error(),
            ));
        }
        #[repr(C)]
        struct Header {
            version: u32,
            pid: libc::c_int,
        }
        #[repr(C)]
        #[derive(Default, Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let mut hdr = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut data = [Data::default(); 2];
        if libc::syscall(libc::SYS_capget, &mut hdr as *mut Header, data.as_mut_ptr()) < 0 {
            return Err(Error::io(
                "reading capabilities",
                std::io::Error::last_os_error(),
            ));
        }
        if data.iter().any(|d| d.effective != 0 || d.permitted != 0) {
            return Err(Error::Shim(
                "capabilities left after dropping to the pod's uid".into(),
            ));
        }
    }
    Ok(())
}

/// Gives the pod directory and what the supervisor writes in it (record, sockets, logs) to
/// the pod's uid, without following links. `vmroot` (QEMU's mount point) stays root's.
/// The directory stays 0700: root clients (the node agent, `h8s`) read and finally remove
/// it; other pods' uids cannot enter it.
pub(crate) fn own_pod_dir(dir: &std::path::Path, uid: u32, gid: u32) -> Result<()> {
    let chown = |p: &std::path::Path| {
        std::os::unix::fs::lchown(p, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("giving {} to uid {uid}", p.display()), e))
    };
    chown(dir)?;
    for sub in [dir.to_path_buf(), dir.join("logs")] {
        let rd = match std::fs::read_dir(&sub) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("listing {}", sub.display()), e)),
        };
        for e in rd.flatten() {
            if e.file_name() == "vmroot" {
                continue;
            }
            chown(&e.path())?;
        }
    }
    Ok(())
}
