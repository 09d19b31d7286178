//! What a VM restored from a template does before it serves its pod ([`Request::Restored`]):
//! every clone of a template wakes up with the template's kernel RNG state, clock, NIC MACs
//! and cached disk sizes, and this makes it its own.
//!
//! [`Request::Restored`]: h8s_guest::Request::Restored

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use h8s_guest::{ErrorCode, ProtoError, RestoreInfo};

use crate::sys;

/// `RNDADDENTROPY` (`_IOW('R', 0x03, int[2])`).
const RNDADDENTROPY: libc::c_ulong = 0x4008_5203;
/// `RNDRESEEDCRNG` (`_IO('R', 0x07)`).
const RNDRESEEDCRNG: libc::c_ulong = 0x5207;
/// `BLKFLSBUF` (`_IO(0x12, 97)`).
const BLKFLSBUF: libc::c_ulong = 0x1261;

fn fail(what: &str, e: io::Error) -> ProtoError {
    ProtoError::new(ErrorCode::Internal, format!("{what}: {e}"))
}

/// Applies `info` but its network (the caller configures that); the RNG and the clock
/// first, so nothing after sees the template's. Returns how long each step took (µs).
pub fn apply(info: &RestoreInfo) -> Result<Vec<(String, u64)>, ProtoError> {
    if info.entropy.len() < RestoreInfo::MIN_ENTROPY || info.entropy.len() > 4096 {
        return Err(ProtoError::new(
            ErrorCode::InvalidArgument,
            format!(
                "restore entropy must be {}..=4096 bytes, not {}",
                RestoreInfo::MIN_ENTROPY,
                info.entropy.len()
            ),
        ));
    }
    let mut steps = Vec::new();
    let mut t = Instant::now();
    let mut step = |name: &str| {
        steps.push((name.to_string(), t.elapsed().as_micros() as u64));
        t = Instant::now();
    };
    reseed(&info.entropy).map_err(|e| fail("reseeding the kernel RNG", e))?;
    step("reseed");
    set_clock(info.realtime_ns).map_err(|e| fail("setting the clock", e))?;
    step("clock");
    for (from, to) in &info.macs {
        set_mac(from, to).map_err(|e| fail(&format!("giving NIC {from} the MAC {to}"), e))?;
    }
    step("macs");
    if info.rescan_disks {
        rescan_disks().map_err(|e| fail("re-probing the disks", e))?;
    }
    if info.flush_images {
        flush_image_disks().map_err(|e| fail("dropping the image disks' cached blocks", e))?;
    }
    step("disks");
    Ok(steps)
}

/// What the template's guest learned before it was saved ([`prepare_template`]). Every clone
/// wakes up with it (it is in the saved memory), so it binds its disks and finds its NICs
/// without scanning sysfs: under TCG a clone translates every code path it runs for the first
/// time, and a scan of the virtio devices alone took ~20 ms.
static TEMPLATE: Mutex<Option<Template>> = Mutex::new(None);

struct Template {
    /// The virtio block devices (`virtioN`) left unbound (the volume disks); taken by the
    /// first [`rescan_disks`].
    disks: Option<Vec<String>>,
    /// The network interfaces' names.
    nics: Vec<String>,
}

fn template() -> std::sync::MutexGuard<'static, Option<Template>> {
    TEMPLATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Before the template is saved: unbinds the placeholder volume disks, so a clone only binds
/// its real ones ([`rescan_disks`]) instead of unbinding and binding each, and remembers the
/// devices for the clones. Image disks stay bound: a clone keeps the placeholder's capacity
/// for them (the host makes it an upper bound on any image's size, and QEMU bounds every
/// request by the real file), so a clone binds no image disk at all (a bind took ~45 ms
/// under TCG). Their cached blocks are dropped, so a clone reads its own image's.
pub fn prepare_template() -> Result<(), ProtoError> {
    let devs = block_devices().map_err(|e| fail("listing the disks", e))?;
    let mut unbound = Vec::new();
    for (dev, bound) in &devs {
        if !bound {
            unbound.push(dev.clone());
        } else if let Some(node) = image_disk(dev) {
            drop_cached_blocks(&node)
                .map_err(|e| fail(&format!("dropping {}'s cached blocks", node.display()), e))?;
        } else {
            fs::write(Path::new(VIRTIO_BLK).join("unbind"), dev)
                .map_err(|e| fail(&format!("unbinding {dev}"), e))?;
            unbound.push(dev.clone());
        }
    }
    let nics = fs::read_dir("/sys/class/net")
        .map_err(|e| fail("listing the NICs", e))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    *template() = Some(Template {
        disks: Some(unbound),
        nics,
    });
    Ok(())
}

/// Drops the cached blocks of every bound image disk: a warm clone read its warm-up image
/// through them, and the host has since put the pod's images behind the same disks.
fn flush_image_disks() -> io::Result<()> {
    for (dev, bound) in block_devices()? {
        if let (true, Some(node)) = (bound, image_disk(&dev)) {
            drop_cached_blocks(&node)?;
        }
    }
    Ok(())
}

/// The device node (`/dev/vdX`) of virtio device `dev` when it is a bound image disk (its
/// serial is `img…`, as the host names image disks).
fn image_disk(dev: &str) -> Option<std::path::PathBuf> {
    let block = Path::new("/sys/bus/virtio/devices").join(dev).join("block");
    let name = fs::read_dir(block).ok()?.flatten().next()?.file_name();
    let serial = fs::read_to_string(Path::new("/sys/block").join(&name).join("serial")).ok()?;
    serial
        .trim()
        .starts_with("img")
        .then(|| Path::new("/dev").join(name))
}

/// Drops the cached blocks of the block device at `node` (`BLKFLSBUF`).
fn drop_cached_blocks(node: &Path) -> io::Result<()> {
    let f = fs::File::open(node)?;
    // SAFETY: BLKFLSBUF takes no argument; `f` is an open block device.
    sys::check(unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF, 0) })?;
    Ok(())
}

/// `(name, ifindex)` of the NIC whose MAC is `mac` (lowercase), among the template's NICs
/// (asked by name: two ioctls each); `None` when this guest is no clone or none has it.
pub fn template_nic(mac: &str) -> Option<(String, i32)> {
    let names = template().as_ref()?.nics.clone();
    // SAFETY: socket(2) with constant arguments.
    let fd = sys::check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) }).ok()?;
    let found = names.into_iter().find_map(|name| {
        let mut req = ifreq(&name)?;
        // SAFETY: SIOCGIFHWADDR fills the ifreq's hardware address; `fd` is ours.
        if unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) } < 0 {
            return None;
        }
        // SAFETY: the kernel wrote the hwaddr member of the union.
        let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
        let got: Vec<String> = data[..6]
            .iter()
            .map(|b| format!("{:02x}", *b as u8))
            .collect();
        if got.join(":") != mac {
            return None;
        }
        // SAFETY: SIOCGIFINDEX fills the ifreq's index; `fd` is ours.
        if unsafe { libc::ioctl(fd, libc::SIOCGIFINDEX, &mut req) } < 0 {
            return None;
        }
        // SAFETY: the kernel wrote the ifindex member of the union.
        Some((name, unsafe { req.ifr_ifru.ifru_ifindex }))
    });
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    found
}

/// An `ifreq` naming `name`, or `None` when the name is too long.
fn ifreq(name: &str) -> Option<libc::ifreq> {
    if name.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: an all-zero ifreq is valid; the name is filled in below.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *d = *s as libc::c_char;
    }
    Some(req)
}

/// Credits `entropy` to the input pool (`RNDADDENTROPY`) and makes the CRNG reseed from it
/// now (`RNDRESEEDCRNG`), so every later read of /dev/urandom or getrandom(2) in this clone
/// differs from every other clone's.
fn reseed(entropy: &[u8]) -> io::Result<()> {
    let f = fs::OpenOptions::new().write(true).open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut req: Vec<u8> = Vec::with_capacity(8 + entropy.len());
    req.extend_from_slice(&((entropy.len() * 8) as i32).to_ne_bytes());
    req.extend_from_slice(&(entropy.len() as i32).to_ne_bytes());
    req.extend_from_slice(entropy);
    // The kernel reads `buf_size` bytes after the header: pad to whole u32 words.
    req.resize(8 + entropy.len().div_ceil(4) * 4, 0);
    // SAFETY: RNDADDENTROPY reads a rand_pool_info whose header and `buf_size` bytes lie in
    // `req`, alive for the call.
    sys::check(unsafe { libc::ioctl(f.as_raw_fd(), RNDADDENTROPY, req.as_ptr()) })?;
    // SAFETY: RNDRESEEDCRNG takes no argument.
    sys::check(unsafe { libc::ioctl(f.as_raw_fd(), RNDRESEEDCRNG, 0) })?;
    Ok(())
}

fn set_clock(realtime_ns: u64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: (realtime_ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (realtime_ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads one timespec on the stack.
    sys::check(unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) })?;
    Ok(())
}

fn parse_mac(s: &str) -> io::Result<[u8; 6]> {
    let bad = || io::Error::new(io::ErrorKind::InvalidInput, format!("bad MAC {s:?}"));
    let mut out = [0u8; 6];
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    for (o, p) in out.iter_mut().zip(parts) {
        *o = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// Finds the interface whose MAC is `from` and sets `to` (`SIOCSIFHWADDR`; virtio-net tells
/// the device, whose receive filter follows).
fn set_mac(from: &str, to: &str) -> io::Result<()> {
    let want = from.to_ascii_lowercase();
    let mac = parse_mac(to)?;
    let name = match template_nic(&want) {
        Some((name, _)) => name,
        None => fs::read_dir("/sys/class/net")?
            .flatten()
            .find(|e| fs::read_to_string(e.path().join("address")).is_ok_and(|a| a.trim() == want))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such NIC"))?,
    };
    let mut req =
        ifreq(&name).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "long name"))?;
    // SAFETY: writing the sockaddr member of the (zeroed) union.
    unsafe {
        req.ifr_ifru.ifru_hwaddr.sa_family = libc::ARPHRD_ETHER;
        for (d, s) in req.ifr_ifru.ifru_hwaddr.sa_data.iter_mut().zip(mac) {
            *d = s as libc::c_char;
        }
    }
    // SAFETY: socket(2) with constant arguments.
    let fd = sys::check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) })?;
    // A warm clone's NIC is up (its warm-up configured it): down first, so the pod's network
    // configuration brings it up under the new MAC (its IPv6 link-local address then comes
    // from the pod's MAC, not the template's, which every clone shares).
    let mut flags =
        ifreq(&name).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "long name"))?;
    // SAFETY: SIOCGIFFLAGS fills the ifreq's flags; `fd` is ours.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut flags) } == 0 {
        // SAFETY: the kernel wrote the flags member of the union.
        let f = unsafe { flags.ifr_ifru.ifru_flags };
        if f & libc::IFF_UP as libc::c_short != 0 {
            flags.ifr_ifru.ifru_flags = f & !(libc::IFF_UP as libc::c_short);
            // SAFETY: SIOCSIFFLAGS reads one ifreq; `fd` is ours.
            if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &flags) } < 0 {
                let e = io::Error::last_os_error();
                // SAFETY: closing the socket opened above.
                unsafe { libc::close(fd) };
                return Err(e);
            }
        }
    }
    // SAFETY: SIOCSIFHWADDR reads one ifreq; `fd` is ours and closed right after.
    let r = unsafe { libc::ioctl(fd, libc::SIOCSIFHWADDR, &req) };
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(fd) };
    sys::check(r)?;
    Ok(())
}

/// The virtio-blk driver's sysfs directory.
const VIRTIO_BLK: &str = "/sys/bus/virtio/drivers/virtio_blk";

/// The virtio block devices (`virtioN`, virtio device id 2), sorted, and whether the
/// virtio-blk driver has each.
fn block_devices() -> io::Result<Vec<(String, bool)>> {
    let mut devs = Vec::new();
    for e in fs::read_dir("/sys/bus/virtio/devices")?.flatten() {
        let id = fs::read_to_string(e.path().join("device")).unwrap_or_default();
        if id.trim() == "0x0002" {
            let bound = fs::read_link(e.path().join("driver"))
                .is_ok_and(|d| d.file_name().is_some_and(|n| n == "virtio_blk"));
            devs.push((e.file_name().to_string_lossy().into_owned(), bound));
        }
    }
    devs.sort();
    Ok(devs)
}

/// Binds each virtio-blk device to its driver again (unbinding it first if bound): the
/// driver reads the capacity (and the read-only flag) once, at probe, and the template's
/// placeholder disks had other backends. Nothing may be mounted from them yet (the host
/// sends this before any container). A template unbinds its volume disks before it is saved
/// and keeps its image disks ([`prepare_template`]), so a clone only binds its volumes.
fn rescan_disks() -> io::Result<()> {
    // A clone of a prepared template: the disks to bind are known (taken: a second call
    // scans, and unbinds what is bound).
    if let Some(disks) = template().as_mut().and_then(|t| t.disks.take()) {
        for d in &disks {
            fs::write(Path::new(VIRTIO_BLK).join("bind"), d)?;
        }
        return Ok(());
    }
    if !Path::new(VIRTIO_BLK).exists() {
        return Ok(()); // no virtio-blk driver (no disks)
    }
    let devs = block_devices()?;
    for (d, _) in devs.iter().filter(|(_, bound)| *bound) {
        fs::write(Path::new(VIRTIO_BLK).join("unbind"), d)?;
    }
    for (d, _) in &devs {
        fs::write(Path::new(VIRTIO_BLK).join("bind"), d)?;
    }
    Ok(())
}

/// A fresh random id (hex of 16 bytes from getrandom(2), so after a reseed it is the
/// clone's own).
pub fn new_agent_id() -> String {
    let mut b = [0u8; 16];
    // SAFETY: getrandom writes at most `b.len()` bytes into `b`.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        // Never with a 16-byte request on Linux ≥ 3.17; keep an id that is at least unique
        // per boot.
        let t = sys::boottime_ms().to_ne_bytes();
        b[..8].copy_from_slice(&t);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse() {
        assert_eq!(
            parse_mac("02:aB:00:00:00:ff").unwrap(),
            [2, 0xab, 0, 0, 0, 0xff]
        );
        assert!(parse_mac("02:ab:00:00:00").is_err());
        assert!(parse_mac("02:ab:00:00:00:zz").is_err());
    }

    #[test]
    fn a_clone_finds_the_templates_nics_by_mac() {
        assert_eq!(template_nic("00:00:00:00:00:00"), None, "no template yet");
        *template() = Some(Template {
            disks: None,
            nics: vec!["no-such-nic".into(), "lo".into()],
        });
        // The loopback interface's MAC is all zeros, its index 1 (in any network namespace).
        assert_eq!(
            template_nic("00:00:00:00:00:00"),
            Some(("lo".to_string(), 1))
        );
        assert_eq!(template_nic("02:00:00:00:00:01"), None);
        *template() = None;
    }

    #[test]
    fn agent_ids_are_random() {
        let (a, b) = (new_agent_id(), new_agent_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
