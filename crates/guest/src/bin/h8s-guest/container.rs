//! Container root filesystems (erofs image + tmpfs upper under an overlay, a minimal /dev,
//! /sys, volumes), identity lookup in the image, and the process plans that `spawn` runs.

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use h8s_guest::{
    BlockDevice, ContainerSpec, ErrorCode, IdOrName, MountSource, ProcessSpec, ProtoError, User,
    WritableLayer,
};

use crate::spawn::Plan;
use crate::sys::{self, cstr};

/// Where container roots and pod volumes live in the guest.
pub const RUN_DIR: &str = "/run/h8s";

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Files the network configuration puts into every container created after it.
#[derive(Debug, Default, Clone)]
pub struct NetFiles {
    pub resolv_conf: Option<String>,
    /// `/etc/hosts` lines besides localhost (e.g. `10.1.0.5\tpod`), without the hostname line.
    pub pod_ip: Option<String>,
    pub hostname: Option<String>,
}

/// A prepared container root: mounts made in the agent's namespace (inherited by the
/// container's own mount namespace when it starts).
#[derive(Debug)]
pub struct Rootfs {
    pub dir: PathBuf,
    pub root: PathBuf,
    mounts: Vec<PathBuf>,
}

impl Rootfs {
    /// Unmounts everything (lazily) and removes the directory.
    pub fn remove(&mut self) {
        for m in self.mounts.drain(..).rev() {
            if let Err(e) = sys::umount_detach(&m) {
                eprintln!("h8s-guest: unmount {}: {e}", m.display());
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }

    fn mount(
        &mut self,
        src: Option<&str>,
        target: &Path,
        fstype: Option<&str>,
        flags: libc::c_ulong,
        data: Option<&str>,
    ) -> Result<(), ProtoError> {
        sys::mount(src, target, fstype, flags, data).map_err(|e| {
            ProtoError::new(
                ErrorCode::MountFailed,
                format!(
                    "mount {} on {}: {e}",
                    fstype.or(src).unwrap_or("?"),
                    self.display_target(target)
                ),
            )
        })?;
        self.mounts.push(target.to_path_buf());
        Ok(())
    }

    /// A mount target as the container sees it (no agent-internal paths in messages).
    fn display_target(&self, target: &Path) -> String {
        match target.strip_prefix(&self.root) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => target
                .strip_prefix(&self.dir)
                .map(|r| r.display().to_string())
                .unwrap_or_default(),
        }
    }
}

fn internal(what: &str, e: io::Error) -> ProtoError {
    ProtoError::new(ErrorCode::Internal, format!("{what}: {e}"))
}

fn invalid(msg: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorCode::InvalidArgument, msg)
}

/// Container ids and volume names: short, path-safe.
pub fn validate_name(kind: &str, s: &str) -> Result<(), ProtoError> {
    let ok = !s.is_empty()
        && s.len() <= 128
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{kind} {s:?} must be 1-128 characters of [A-Za-z0-9._-]"
        )))
    }
}

/// Finds a block device by path or virtio serial.
pub fn find_device(dev: &BlockDevice) -> Result<PathBuf, ProtoError> {
    match dev {
        BlockDevice::Path(p) => {
            let p = Path::new(p);
            if !p.starts_with("/dev/") || p.components().any(|c| c == Component::ParentDir) {
                return Err(invalid(format!("device {} is not under /dev", p.display())));
            }
            if !p.exists() {
                return Err(ProtoError::new(
                    ErrorCode::NotFound,
                    format!("no block device {}", p.display()),
                ));
            }
            Ok(p.to_path_buf())
        }
        BlockDevice::Serial(s) => {
            if let Ok(entries) = fs::read_dir("/sys/block") {
                for e in entries.flatten() {
                    if let Ok(serial) = fs::read_to_string(e.path().join("serial")) {
                        if serial.trim() == s {
                            return Ok(Path::new("/dev").join(e.file_name()));
                        }
                    }
                }
            }
            Err(ProtoError::new(
                ErrorCode::NotFound,
                format!("no block device with serial {s:?}"),
            ))
        }
    }
}

/// Joins an absolute container path onto `root`, refusing `..` and symlinks on the way (an
/// image's symlink must not redirect the agent's mounts and writes outside the container).
/// Missing directories are created when `create_dirs` is set (all components but the last
/// when `last_is_file`).
pub fn safe_join(
    root: &Path,
    target: &str,
    create_dirs: bool,
    last_is_file: bool,
) -> Result<PathBuf, ProtoError> {
    let t = Path::new(target);
    if !t.is_absolute() {
        return Err(invalid(format!("path {target:?} is not absolute")));
    }
    let comps: Vec<_> = t
        .components()
        .filter(|c| *c != Component::RootDir && *c != Component::CurDir)
        .collect();
    let mut p = root.to_path_buf();
    for (i, c) in comps.iter().enumerate() {
        let Component::Normal(name) = c else {
            return Err(invalid(format!("path {target:?} contains '..'")));
        };
        p.push(name);
        let last = i + 1 == comps.len();
        match fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(invalid(format!(
                    "path {target:?} goes through a symbolic link in the image"
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && create_dirs => {
                if last && last_is_file {
                    break;
                }
                fs::create_dir(&p).map_err(|e| internal(&format!("create {target}"), e))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(internal(&format!("inspect {target}"), e)),
        }
    }
    Ok(p)
}

/// Mounts a container's root: the read-only image, a tmpfs upper, the overlay, then /dev, /sys
/// and volumes inside it, and writes the network files.
pub fn create(spec: &ContainerSpec, net: &NetFiles) -> Result<Rootfs, ProtoError> {
    validate_name("container id", &spec.id)?;
    let dir = Path::new(RUN_DIR).join("c").join(&spec.id);
    let device = find_device(&spec.rootfs)?;
    let dev = device
        .to_str()
        .ok_or_else(|| invalid("device path is not UTF-8"))?
        .to_string();
    let mut rootfs = Rootfs {
        root: dir.join("root"),
        dir: dir.clone(),
        mounts: Vec::new(),
    };
    let result = (|| {
        for d in ["lower", "rw", "root"] {
            fs::create_dir_all(dir.join(d)).map_err(|e| internal("create container dir", e))?;
        }
        rootfs
            .mount(
                Some(&dev),
                &dir.join("lower"),
                Some("erofs"),
                libc::MS_RDONLY,
                None,
            )
            .map_err(|e| {
                ProtoError::new(
                    ErrorCode::MountFailed,
                    format!("image {dev}: {}", e.message),
                )
            })?;
        let size = match &spec.writable {
            WritableLayer::Tmpfs {
                size_bytes: Some(n),
            } => format!("mode=755,size={n}"),
            _ => "mode=755".to_string(),
        };
        rootfs.mount(
            Some("tmpfs"),
            &dir.join("rw"),
            Some("tmpfs"),
            0,
            Some(&size),
        )?;
        for d in ["upper", "work"] {
            fs::create_dir(dir.join("rw").join(d)).map_err(|e| internal("create upper", e))?;
        }
        let opts = format!(
            "lowerdir={0}/lower,upperdir={0}/rw/upper,workdir={0}/rw/work",
            dir.display()
        );
        let root = rootfs.root.clone();
        rootfs.mount(Some("overlay"), &root, Some("overlay"), 0, Some(&opts))?;
        mount_dev(&mut rootfs)?;
        let sys = safe_join(&root, "/sys", true, false)?;
        rootfs.mount(
            Some("sysfs"),
            &sys,
            Some("sysfs"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )?;
        safe_join(&root, "/proc", true, false)?;
        for m in &spec.mounts {
            mount_volume(&mut rootfs, m)?;
        }
        write_net_files(&root, net, spec.hostname.as_deref())?;
        if spec.read_only_root {
            seal_root(&root, spec.process.working_dir.as_deref())?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(rootfs),
        Err(e) => {
            rootfs.remove();
            Err(e)
        }
    }
}

fn mount_dev(rootfs: &mut Rootfs) -> Result<(), ProtoError> {
    let root = rootfs.root.clone();
    let dev = safe_join(&root, "/dev", true, false)?;
    rootfs.mount(
        Some("tmpfs"),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=755,size=65536"),
    )?;
    let nodes = [
        ("null", 1, 3),
        ("zero", 1, 5),
        ("full", 1, 7),
        ("random", 1, 8),
        ("urandom", 1, 9),
        ("tty", 5, 0),
    ];
    for (name, major, minor) in nodes {
        let p = dev.join(name);
        sys::mknod_char(&p, 0o666, major, minor)
            .and_then(|()| fs::set_permissions(&p, fs::Permissions::from_mode(0o666)))
            .map_err(|e| internal(&format!("create /dev/{name}"), e))?;
    }
    for d in ["pts", "shm"] {
        fs::create_dir(dev.join(d)).map_err(|e| internal("create /dev dirs", e))?;
    }
    // The pod's terminals are shared with the agent (which opens exec ttys), like one devpts
    // per pod; the VM is the isolation boundary.
    rootfs.mount(
        Some("/dev/pts"),
        &dev.join("pts"),
        None,
        libc::MS_BIND,
        None,
    )?;
    rootfs.mount(
        Some("shm"),
        &dev.join("shm"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=1777"),
    )?;
    let links = [
        ("pts/ptmx", "ptmx"),
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
    ];
    for (target, name) in links {
        symlink(target, dev.join(name)).map_err(|e| internal("create /dev links", e))?;
    }
    Ok(())
}

fn mount_volume(rootfs: &mut Rootfs, m: &h8s_guest::Mount) -> Result<(), ProtoError> {
    let root = rootfs.root.clone();
    let is_device = matches!(m.source, MountSource::Device { .. });
    let target = safe_join(&root, &m.target, true, is_device)?;
    let ro = if m.read_only { libc::MS_RDONLY } else { 0 };
    match &m.source {
        MountSource::PodDir { name, size_bytes } => {
            validate_name("volume name", name)?;
            let src = Path::new(RUN_DIR).join("volumes").join(name);
            fs::create_dir_all(&src).map_err(|e| internal("create volume", e))?;
            if let Some(n) = size_bytes {
                // The first container to mount a sized volume makes it its own tmpfs; the
                // pod's other containers share it. It lives as long as the VM.
                if !is_mount_point(&src).map_err(|e| internal("inspect volume", e))? {
                    sys::mount(
                        Some("tmpfs"),
                        &src,
                        Some("tmpfs"),
                        libc::MS_NOSUID | libc::MS_NODEV,
                        Some(&format!("mode=777,size={n}")),
                    )
                    .map_err(|e| internal(&format!("mount the {name} volume's tmpfs"), e))?;
                }
            }
            let src = src.to_string_lossy().into_owned();
            rootfs.mount(
                Some(&src),
                &target,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )?;
            if m.read_only {
                sys::mount(
                    None,
                    &target,
                    None,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    None,
                )
                .map_err(|e| internal("remount volume read-only", e))?;
            }
        }
        MountSource::Tmpfs { size_bytes } => {
            let opts = size_bytes.map(|n| format!("size={n}"));
            rootfs.mount(
                Some("tmpfs"),
                &target,
                Some("tmpfs"),
                ro | libc::MS_NOSUID | libc::MS_NODEV,
                opts.as_deref(),
            )?;
        }
        MountSource::Block { device, fstype } => {
            let dev = find_device(device)?;
            let dev = dev.to_string_lossy().into_owned();
            if fstype.is_empty() || fstype.contains(',') {
                return Err(invalid(format!("bad filesystem type {fstype:?}")));
            }
            rootfs.mount(Some(&dev), &target, Some(fstype), ro, None)?;
        }
        MountSource::Volume {
            device,
            fstype,
            sub_path,
            fs_group,
            device_read_only,
        } => {
            let dev = find_device(device)?;
            let base = crate::pvol::ensure(&dev, fstype, *fs_group, *device_read_only)?;
            let src = match sub_path.as_deref().filter(|s| !s.is_empty()) {
                None => base,
                Some(sp) if Path::new(sp).is_absolute() => {
                    return Err(invalid(format!("subPath {sp:?} must be a relative path")))
                }
                // Refuses `..` and symlinks (a tenant's volume must not redirect the mount).
                Some(sp) => safe_join(&base, &format!("/{sp}"), !*device_read_only, false)?,
            };
            if !src.is_dir() {
                return Err(ProtoError::new(
                    ErrorCode::NotFound,
                    "subPath does not exist in the read-only volume".to_string(),
                ));
            }
            let src = src.to_string_lossy().into_owned();
            rootfs.mount(Some(&src), &target, None, libc::MS_BIND, None)?;
            if m.read_only || *device_read_only {
                sys::mount(
                    None,
                    &target,
                    None,
                    libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                    None,
                )
                .map_err(|e| internal("remount volume read-only", e))?;
            }
        }
        MountSource::Device { device } => {
            let dev = find_device(device)?;
            // The device node itself is bind-mounted onto an empty file at the devicePath.
            if !target.exists() {
                fs::File::create(&target).map_err(|e| internal("create the device path", e))?;
            }
            let src = dev.to_string_lossy().into_owned();
            rootfs.mount(Some(&src), &target, None, libc::MS_BIND, None)?;
        }
    }
    Ok(())
}

/// Makes a prepared container root read-only (`readOnlyRootFilesystem`), as runc does: the
/// root mount alone is remounted `ro`, so /dev, /sys and the volumes mounted inside keep their
/// own flags. The working directory the start would create is created first.
pub fn seal_root(root: &Path, working_dir: Option<&str>) -> Result<(), ProtoError> {
    if let Some(wd) = working_dir {
        safe_join(root, wd, true, false)?;
    }
    sys::mount(
        None,
        root,
        None,
        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
        None,
    )
    .map_err(|e| internal("remount the root read-only", e))
}

/// Whether `p` is the root of a mount (its device differs from its parent's).
fn is_mount_point(p: &Path) -> io::Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let parent = p.parent().unwrap_or(Path::new("/"));
    Ok(fs::metadata(p)?.dev() != fs::metadata(parent)?.dev())
}

/// Bytes of allocated blocks under `dir` (not following symlinks, not crossing into other
/// filesystems), counting at most `max_entries` entries; hard links count once per name.
pub fn disk_usage(dir: &Path, max_entries: usize) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = fs::symlink_metadata(dir) else {
        return 0;
    };
    let dev = top.dev();
    let mut total = top.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    let mut seen = 0usize;
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            seen += 1;
            if seen > max_entries {
                return total;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != dev {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// What the pod's local storage holds: each container's writable layer (its overlay upper
/// directory) and each pod volume directory.
pub fn storage_usage(container_dirs: &[(String, PathBuf)]) -> h8s_guest::StorageUsage {
    const MAX_ENTRIES: usize = 200_000;
    let containers = container_dirs
        .iter()
        .map(|(id, dir)| {
            (
                id.clone(),
                disk_usage(&dir.join("rw").join("upper"), MAX_ENTRIES),
            )
        })
        .collect();
    let mut volumes = Vec::new();
    if let Ok(entries) = fs::read_dir(Path::new(RUN_DIR).join("volumes")) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            volumes.push((name, disk_usage(&e.path(), MAX_ENTRIES)));
        }
    }
    volumes.sort();
    h8s_guest::StorageUsage {
        containers,
        volumes,
    }
}

fn write_net_files(root: &Path, net: &NetFiles, hostname: Option<&str>) -> Result<(), ProtoError> {
    let hostname = hostname.or(net.hostname.as_deref());
    let mut files: Vec<(&str, String)> = Vec::new();
    if let Some(r) = &net.resolv_conf {
        files.push(("/etc/resolv.conf", r.clone()));
    }
    let mut hosts =
        String::from("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n");
    if let Some(h) = hostname {
        hosts.push_str(&format!(
            "{}\t{h}\n",
            net.pod_ip.as_deref().unwrap_or("127.0.1.1")
        ));
        files.push(("/etc/hostname", format!("{h}\n")));
    }
    files.push(("/etc/hosts", hosts));
    for (path, content) in files {
        let p = safe_join_replacing_link(root, path)?;
        fs::write(&p, content).map_err(|e| internal(&format!("write {path}"), e))?;
    }
    Ok(())
}

/// Like `safe_join` for a file the agent owns in the container (e.g. `/etc/resolv.conf`): a
/// symlink in the last component is replaced by a regular file.
fn safe_join_replacing_link(root: &Path, target: &str) -> Result<PathBuf, ProtoError> {
    let parent = Path::new(target)
        .parent()
        .and_then(Path::to_str)
        .unwrap_or("/");
    let dir = safe_join(root, parent, true, false)?;
    let name = Path::new(target)
        .file_name()
        .ok_or_else(|| invalid("no file name"))?;
    let p = dir.join(name);
    if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::remove_file(&p).map_err(|e| internal(&format!("replace {target}"), e))?;
    }
    Ok(p)
}

/// The identity a process runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// `(name, gid, members)` per `/etc/group` line.
fn parse_group(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 {
                return None;
            }
            let members = f[3]
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_string)
                .collect();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// Resolves a user spec against the image's `/etc/passwd` and `/etc/group` (read through the
/// container root; missing files mean numeric ids only). Docker's rules: an unknown numeric user
/// gets gid 0 and home `/`.
pub fn resolve_user(root: &Path, user: Option<&User>) -> Result<Identity, ProtoError> {
    let read = |p: &str| {
        safe_join(root, p, false, true)
            .ok()
            .and_then(|p| fs::read_to_string(p).ok())
            .unwrap_or_default()
    };
    resolve_user_in(&read("/etc/passwd"), &read("/etc/group"), user)
}

fn resolve_user_in(passwd: &str, group: &str, user: Option<&User>) -> Result<Identity, ProtoError> {
    let passwd = parse_passwd(passwd);
    let groups = parse_group(group);
    let root_user = User {
        user: IdOrName::Id(0),
        group: None,
        additional_gids: Vec::new(),
    };
    let user = user.unwrap_or(&root_user);
    let entry = match &user.user {
        IdOrName::Id(uid) => passwd.iter().find(|e| e.uid == *uid),
        IdOrName::Name(n) => Some(
            passwd
                .iter()
                .find(|e| &e.name == n)
                .ok_or_else(|| invalid(format!("user {n:?} not found in the image")))?,
        ),
    };
    let uid = match (&user.user, entry) {
        (_, Some(e)) => e.uid,
        (IdOrName::Id(uid), None) => *uid,
        (IdOrName::Name(_), None) => unreachable!("names resolve or fail above"),
    };
    let gid = match &user.group {
        Some(IdOrName::Id(g)) => *g,
        Some(IdOrName::Name(n)) => {
            groups
                .iter()
                .find(|(name, _, _)| name == n)
                .ok_or_else(|| invalid(format!("group {n:?} not found in the image")))?
                .1
        }
        None => entry.map_or(0, |e| e.gid),
    };
    let mut gids = vec![gid];
    if let Some(e) = entry {
        for (_, g, members) in &groups {
            if members.iter().any(|m| m == &e.name) && !gids.contains(g) {
                gids.push(*g);
            }
        }
    }
    for g in &user.additional_gids {
        if !gids.contains(g) {
            gids.push(*g);
        }
    }
    Ok(Identity {
        uid,
        gid,
        groups: gids,
        home: entry.map_or_else(|| "/".to_string(), |e| e.home.clone()),
    })
}

/// The final environment: the spec's, plus `PATH`, `HOME` (and `TERM` with a tty) when unset.
pub fn environment(p: &ProcessSpec, ident: &Identity) -> Result<Vec<String>, ProtoError> {
    let mut env = Vec::with_capacity(p.env.len() + 3);
    for kv in &p.env {
        match kv.split_once('=') {
            Some((k, _)) if !k.is_empty() => env.push(kv.clone()),
            _ => {
                return Err(invalid(format!(
                    "environment entry {kv:?} is not KEY=VALUE"
                )))
            }
        }
    }
    let has = |env: &[String], k: &str| env.iter().any(|kv| kv.split_once('=').unwrap().0 == k);
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", ident.home));
    }
    if p.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".to_string());
    }
    Ok(env)
}

/// The executables to try for `args[0]`: itself when it has a `/`, else each `PATH` entry.
pub fn candidates(arg0: &str, env: &[String]) -> Vec<String> {
    if arg0.contains('/') {
        return vec![arg0.to_string()];
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|d| {
            if d.is_empty() {
                arg0.to_string()
            } else {
                format!("{}/{arg0}", d.trim_end_matches('/'))
            }
        })
        .collect()
}

/// Builds the spawn plan of a process (root change and namespaces are added by the caller).
pub fn plan(root: &Path, p: &ProcessSpec) -> Result<Plan, ProtoError> {
    let Some(arg0) = p.args.first() else {
        return Err(invalid("no command given (args is empty)"));
    };
    let ident = resolve_user(root, p.user.as_ref())?;
    let env = environment(p, &ident)?;
    let cwd = p.working_dir.as_deref().unwrap_or("/");
    if !cwd.starts_with('/') {
        return Err(invalid(format!(
            "working directory {cwd:?} is not absolute"
        )));
    }
    let c = |s: &str| cstr(s).map_err(|_| invalid("argument contains a NUL byte"));
    Ok(Plan {
        clone_flags: 0,
        enter: Vec::new(),
        pidns: None,
        pivot_root: None,
        mount_proc: false,
        hostname: None,
        candidates: candidates(arg0, &env)
            .iter()
            .map(|s| c(s))
            .collect::<Result<_, _>>()?,
        argv: p.args.iter().map(|s| c(s)).collect::<Result<_, _>>()?,
        envp: env.iter().map(|s| c(s)).collect::<Result<_, _>>()?,
        cwd: c(cwd)?,
        uid: ident.uid,
        gid: ident.gid,
        groups: ident.groups,
        tty: p.tty,
    })
}

/// A C string for a path we built ourselves (no NULs possible from validated parts).
pub fn c_path(p: &Path) -> Result<CString, ProtoError> {
    sys::cpath(p).map_err(|e| internal("path", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                          daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                          app:x:1000:1000::/home/app:/bin/sh\n\
                          broken line\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,app\napp:x:1000:\nstaff:x:50:app\n";

    fn user(u: IdOrName, g: Option<IdOrName>) -> User {
        User {
            user: u,
            group: g,
            additional_gids: vec![],
        }
    }

    #[test]
    fn resolves_users_like_docker() {
        let root = resolve_user_in(PASSWD, GROUP, None).unwrap();
        assert_eq!((root.uid, root.gid, root.home.as_str()), (0, 0, "/root"));
        assert_eq!(root.groups, [0, 10]);

        let app = resolve_user_in(
            PASSWD,
            GROUP,
            Some(&user(IdOrName::Name("app".into()), None)),
        )
        .unwrap();
        assert_eq!((app.uid, app.gid), (1000, 1000));
        assert_eq!(app.groups, [1000, 10, 50]);

        let num = resolve_user_in(PASSWD, GROUP, Some(&user(IdOrName::Id(4242), None))).unwrap();
        assert_eq!((num.uid, num.gid, num.home.as_str()), (4242, 0, "/"));

        let g = resolve_user_in(
            PASSWD,
            GROUP,
            Some(&user(IdOrName::Id(1), Some(IdOrName::Name("staff".into())))),
        )
        .unwrap();
        assert_eq!((g.uid, g.gid), (1, 50));

        let err = resolve_user_in(
            PASSWD,
            GROUP,
            Some(&user(IdOrName::Name("nope".into()), None)),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
        let err = resolve_user_in(
            "",
            "",
            Some(&user(IdOrName::Id(0), Some(IdOrName::Name("x".into())))),
        )
        .unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidArgument);
    }

    #[test]
    fn environment_defaults_and_validation() {
        let ident = Identity {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/root".into(),
        };
        let mut p = ProcessSpec {
            args: vec!["sh".into()],
            env: vec!["A=1".into(), "B==2".into()],
            working_dir: None,
            user: None,
            tty: true,
            stdin: false,
            tty_size: None,
        };
        let env = environment(&p, &ident).unwrap();
        assert_eq!(
            env,
            [
                "A=1",
                "B==2",
                &format!("PATH={DEFAULT_PATH}"),
                "HOME=/root",
                "TERM=xterm"
            ]
        );
        p.env = vec!["NOEQUALS".into()];
        assert!(environment(&p, &ident).is_err());
        p.env = vec!["=x".into()];
        assert!(environment(&p, &ident).is_err());
    }

    #[test]
    fn path_search() {
        assert_eq!(candidates("/bin/sh", &[]), ["/bin/sh"]);
        assert_eq!(candidates("./x", &[]), ["./x"]);
        assert_eq!(
            candidates("ls", &["PATH=/a/:/b::".into()]),
            ["/a/ls", "/b/ls", "ls", "ls"]
        );
    }

    #[test]
    fn disk_usage_counts_allocated_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let empty = disk_usage(d, 100);
        fs::create_dir(d.join("sub")).unwrap();
        fs::write(d.join("sub/a"), vec![1u8; 256 << 10]).unwrap();
        fs::write(d.join("b"), vec![1u8; 64 << 10]).unwrap();
        let used = disk_usage(d, 100) - empty;
        assert!(
            ((320 << 10)..(400 << 10)).contains(&used),
            "{used} bytes for 320 KiB of files"
        );
        // The walk stops at its entry budget.
        assert!(disk_usage(d, 1) < disk_usage(d, 100));
    }

    /// Runs `f` on a thread of its own mount namespace with a tmpfs at `dir` (needs root, as
    /// the test suite runs).
    fn in_mount_namespace(dir: &Path, f: impl FnOnce() + Send + 'static) {
        // SAFETY: geteuid has no arguments and cannot fail.
        assert_eq!(unsafe { libc::geteuid() }, 0, "this test needs root");
        let dir = dir.to_path_buf();
        std::thread::spawn(move || {
            // SAFETY: unshare with a flag only; it affects this thread's mount namespace.
            assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0);
            sys::mount(
                None,
                Path::new("/"),
                None,
                libc::MS_REC | libc::MS_PRIVATE,
                None,
            )
            .unwrap();
            sys::mount(Some("tmpfs"), &dir, Some("tmpfs"), 0, None).unwrap();
            f();
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_sealed_root_refuses_writes_but_its_volumes_take_them() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_path_buf();
        in_mount_namespace(&root.clone(), move || {
            fs::create_dir(root.join("data")).unwrap();
            sys::mount(Some("tmpfs"), &root.join("data"), Some("tmpfs"), 0, None).unwrap();
            fs::write(root.join("before"), b"x").unwrap();
            seal_root(&root, Some("/srv/app")).unwrap();
            let e = fs::write(root.join("after"), b"x").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
            assert!(fs::remove_file(root.join("before")).is_err());
            assert!(
                root.join("srv/app").is_dir(),
                "the working directory was made first"
            );
            fs::write(root.join("data/file"), b"x").unwrap();
        });
    }

    #[test]
    fn a_sized_pod_dir_is_its_own_tmpfs() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().to_path_buf();
        in_mount_namespace(&dir.clone(), move || {
            let v = dir.join("v");
            fs::create_dir(&v).unwrap();
            assert!(!is_mount_point(&v).unwrap());
            sys::mount(Some("tmpfs"), &v, Some("tmpfs"), 0, Some("size=65536")).unwrap();
            assert!(is_mount_point(&v).unwrap());
            let e = fs::write(v.join("big"), vec![0u8; 1 << 20]).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
        });
    }

    #[test]
    fn safe_join_refuses_escapes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("etc")).unwrap();
        symlink("/", root.join("evil")).unwrap();
        assert!(safe_join(root, "relative", true, false).is_err());
        assert!(safe_join(root, "/a/../../b", true, false).is_err());
        assert!(safe_join(root, "/evil/x", true, false).is_err());
        let p = safe_join(root, "/data/sub", true, false).unwrap();
        assert!(p.is_dir() && p.starts_with(root));
        let f = safe_join(root, "/etc/new/file", true, true).unwrap();
        assert!(!f.exists() && f.parent().unwrap().is_dir());
        symlink("/etc/passwd", root.join("etc/resolv.conf")).unwrap();
        let r = safe_join_replacing_link(root, "/etc/resolv.conf").unwrap();
        assert!(!r.exists());
        assert!(validate_name("id", "ok-1.2_x").is_ok());
        for bad in ["", ".", "..", "a/b", "a,b"] {
            assert!(validate_name("id", bad).is_err());
        }
    }
}
