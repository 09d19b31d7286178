//! Small host helpers: ids, timestamps, process identity.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::{SystemTime, UNIX_EPOCH};

/// A fresh 12-hex-digit id (short enough to keep unix socket paths under 108 bytes).
pub(crate) fn new_id() -> String {
    let mut b = [0u8; 6];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        // Fall back to time and PID; ids only need to be unique on this host.
        let n = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id()) << 64;
        b.copy_from_slice(&n.to_le_bytes()[..6]);
    }
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `t` as RFC 3339 with nanoseconds in UTC, as CRI log lines and Kubernetes use.
pub fn rfc3339_nano(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The start time of a process (clock ticks since boot, field 22 of `/proc/PID/stat`);
/// with the PID it names a process unambiguously even after PID reuse.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    // `rest` starts at field 3 (state); field 22 is index 19 here.
    rest.split(' ').nth(19)?.parse().ok()
}

/// Whether the process `pid` that started at `start` still exists (and is not a zombie).
pub(crate) fn process_alive(pid: u32, start: u64) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..i + 3))
        .unwrap_or("X");
    state != "Z" && state != "X" && process_start_time(pid) == Some(start)
}

/// The real uid of process `pid` (`Uid:` in `/proc/PID/status`).
pub(crate) fn process_uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The command line of process `pid`, one string per argument.
pub(crate) fn process_args(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Sends `sig` to `pid` only if it is still the process that started at `start`.
pub(crate) fn kill_checked(pid: u32, start: u64, sig: i32) -> bool {
    if !process_alive(pid, start) {
        return false;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; the PID was just checked
    // against its start time, so we signal the process we started, not a reused PID.
    unsafe { libc::kill(pid, sig) == 0 }
}

/// Sends `fd` over `sock` (`SCM_RIGHTS`, with one byte of data). Allocates nothing and makes
/// one system call, so a child may call it between fork and exec.
pub(crate) fn send_fd(sock: &UnixStream, fd: RawFd) -> std::io::Result<()> {
    send_with_fd(sock.as_raw_fd(), &[0], fd).map(drop)
}

/// Sends `data` with `fd` attached (`SCM_RIGHTS`) over the unix socket `sock`; returns how
/// many bytes of `data` went. One `sendmsg(2)`, no allocation.
pub(crate) fn send_with_fd(sock: RawFd, data: &[u8], fd: RawFd) -> std::io::Result<usize> {
    send_with_fds(sock, data, &[fd])
}

/// Most descriptors one message of [`send_with_fds`] carries.
pub(crate) const MAX_FDS: usize = 8;

/// Sends `data` with `fds` (at most [`MAX_FDS`]) attached (`SCM_RIGHTS`) over the unix
/// socket `sock`; returns how many bytes of `data` went. One `sendmsg(2)`, no allocation.
pub(crate) fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> std::io::Result<usize> {
    /// Room for [`MAX_FDS`] descriptors' control message (`CMSG_SPACE(32)` is 48 bytes on
    /// 64-bit Linux), aligned as a `cmsghdr`.
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    if fds.is_empty() || fds.len() > MAX_FDS {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "1 to 8 descriptors per message",
        ));
    }
    let bytes = std::mem::size_of_val(fds) as u32;
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let mut cbuf = Control([0; 64]);
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(bytes) } as usize;
    debug_assert!(space <= cbuf.0.len());
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive the sendmsg call
    // (the kernel only reads `data`), and the control buffer has room for `fds`
    // (CMSG_SPACE, at most MAX_FDS of them).
    let r = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(bytes) as _;
        let out = libc::CMSG_DATA(c) as *mut libc::c_int;
        for (i, fd) in fds.iter().enumerate() {
            std::ptr::write_unaligned(out.add(i), *fd);
        }
        libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL)
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(r as usize)
}

/// Receives one byte with up to [`MAX_FDS`] descriptors attached (sent by
/// [`send_with_fds`]) from the unix socket `sock`; they are closed on exec.
pub(crate) fn recv_fds(sock: RawFd) -> std::io::Result<Vec<std::fs::File>> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    #[repr(C, align(8))]
    struct Control([u8; 64]);
    let mut cbuf = Control([0; 64]);
    // SAFETY: as in `send_with_fds`; the kernel writes at most `msg_controllen` control bytes,
    // and every descriptor it hands over (closed on exec) becomes ours, each taken once.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.0.as_mut_ptr().cast();
        msg.msg_controllen = cbuf.0.len() as _;
        if libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut out = Vec::new();
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let head = libc::CMSG_LEN(0) as usize;
                let n = ((*c).cmsg_len as usize).saturating_sub(head) / 4;
                let data = libc::CMSG_DATA(c) as *const libc::c_int;
                for i in 0..n {
                    out.push(std::fs::File::from_raw_fd(std::ptr::read_unaligned(
                        data.add(i),
                    )));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
        if msg.msg_flags & libc::MSG_CTRUNC != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "more descriptors than expected",
            ));
        }
        Ok(out)
    }
}

/// Receives one descriptor sent by [`send_fd`].
pub(crate) fn recv_fd(sock: &UnixStream) -> std::io::Result<std::fs::File> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: CMSG_SPACE is arithmetic.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) } as usize;
    let mut cbuf = vec![0u8; space];
    // SAFETY: as in `send_fd`; the kernel writes at most `space` control bytes, and a
    // descriptor it hands over (closed on exec) becomes ours.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        if libc::recvmsg(sock.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_level != libc::SOL_SOCKET || (*c).cmsg_type != libc::SCM_RIGHTS
        {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "no descriptor received",
            ));
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c) as *const libc::c_int);
        Ok(std::fs::File::from_raw_fd(fd))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_nano_formats_known_instants() {
        let t = UNIX_EPOCH + Duration::new(1_475_713_029, 669_794_202);
        assert_eq!(rfc3339_nano(t), "2016-10-06T00:17:09.669794202Z");
        assert_eq!(rfc3339_nano(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339_nano(leap).starts_with("2000-02-29T00:00:00"));
    }

    #[test]
    fn descriptors_cross_a_socket_together() {
        use std::io::{Seek, Write};
        let (a, b) = UnixStream::pair().unwrap();
        let mut files: Vec<std::fs::File> = (0..3).map(|_| tempfile::tempfile().unwrap()).collect();
        for (i, f) in files.iter_mut().enumerate() {
            write!(f, "file {i}").unwrap();
        }
        let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        assert_eq!(send_with_fds(a.as_raw_fd(), &[0], &fds).unwrap(), 1);
        let got = recv_fds(b.as_raw_fd()).unwrap();
        assert_eq!(got.len(), 3);
        for (i, mut f) in got.into_iter().enumerate() {
            let mut s = String::new();
            f.rewind().unwrap();
            f.read_to_string(&mut s).unwrap();
            assert_eq!(s, format!("file {i}"), "in order");
        }
        assert!(send_with_fds(a.as_raw_fd(), &[0], &[]).is_err());
        assert!(send_with_fds(a.as_raw_fd(), &[0], &[fds[0]; MAX_FDS + 1]).is_err());
    }

    #[test]
    fn own_process_is_alive_and_ids_are_short() {
        let me = std::process::id();
        let start = process_start_time(me).expect("own start time");
        assert!(process_alive(me, start));
        assert!(!process_alive(me, start + 1));
        let id = new_id();
        assert_eq!(id.len(), 12);
        assert_ne!(id, new_id());
    }
}
