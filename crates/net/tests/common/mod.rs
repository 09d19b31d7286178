//! A lab of network namespaces for the fabric's tests: "nodes" joined by a veth underlay,
//! "pods" as namespaces, and probes (ICMP, TCP, UDP, raw frames) run inside them. Everything
//! is deleted when the [`Lab`] drops, also when a test fails.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

use h8s_net::netns::{self, NsRef};
use h8s_net::{Fabric, NetworkStore, NodeConfig};

pub struct Lab {
    pub tag: String,
    pub dir: tempfile::TempDir,
    pub store: NetworkStore,
    pub namespaces: Vec<String>,
    pub fabrics: Vec<Fabric>,
}

impl Lab {
    /// A lab whose names carry `tag` and the process id, so parallel tests never collide.
    pub fn new(tag: &str) -> Lab {
        let dir = tempfile::tempdir().unwrap();
        let store = NetworkStore::open(dir.path()).unwrap();
        Lab {
            tag: format!("{tag}{}", std::process::id()),
            dir,
            store,
            namespaces: vec![],
            fabrics: vec![],
        }
    }

    /// A fresh namespace `h8s-test-<tag>-<what>`, deleted with the lab.
    pub fn ns(&mut self, what: &str) -> NsRef {
        let name = format!("h8s-test-{}-{what}", self.tag);
        let _ = netns::delete_named(&name);
        let ns = netns::create_named(&name).unwrap();
        self.namespaces.push(name);
        sh(&ns, "ip link set lo up");
        ns
    }

    /// `n` nodes (namespaces) on one underlay 10.77.0.0/24 (node i has 10.77.0.i), all joined
    /// by a bridge `u` in an extra "switch" namespace.
    pub fn nodes(&mut self, n: usize) -> Vec<Fabric> {
        let sw = self.ns("sw");
        sh(&sw, "ip link add u type bridge && ip link set u up");
        let mut out = vec![];
        for i in 1..=n {
            let ns = self.ns(&format!("n{i}"));
            let NsRef::Path(p) = &ns else { unreachable!() };
            let NsRef::Path(swp) = &sw else {
                unreachable!()
            };
            run(&format!(
                "ip -n {sw} link add p{i} type veth peer name u0 netns {node} && ip -n {sw} link set p{i} master u up && \
                 ip -n {node} addr add 10.77.0.{i}/24 dev u0 && ip -n {node} link set u0 up",
                sw = swp.file_name().unwrap().to_str().unwrap(),
                node = p.file_name().unwrap().to_str().unwrap(),
            ));
            let mut cfg = NodeConfig::new(
                &format!("{}-n{i}", self.tag),
                Ipv4Addr::new(10, 77, 0, i as u8),
            );
            cfg.netns = ns;
            cfg.protected.push("10.77.0.0/24".parse().unwrap());
            let f = Fabric::new(self.store.clone(), cfg).unwrap();
            self.fabrics.push(f.clone());
            out.push(f);
        }
        out
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for f in &self.fabrics {
            if let Err(e) = f.teardown_all() {
                eprintln!("lab clean-up: {e}");
            }
        }
        for n in self.namespaces.iter().rev() {
            let _ = netns::delete_named(n);
        }
    }
}

pub fn run(cmd: &str) -> String {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a shell command inside `ns`.
pub fn sh(ns: &NsRef, cmd: &str) -> String {
    ns.run(|| Ok(run(cmd))).unwrap()
}

/// Sends one ICMP echo from `ns` to `dst`; the round-trip time if a reply came in `timeout`.
pub fn ping(ns: &NsRef, dst: Ipv4Addr, timeout: Duration) -> Option<Duration> {
    ns.run(|| Ok(ping_here(dst, timeout))).unwrap()
}

pub fn checksum(b: &[u8]) -> u16 {
    let mut s: u32 = 0;
    for c in b.chunks(2) {
        s += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while s >> 16 != 0 {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn ping_here(dst: Ipv4Addr, timeout: Duration) -> Option<Duration> {
    // SAFETY: plain socket(2); the result is checked and owned immediately.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let id: u16 = (std::process::id() as u16) ^ 0x5a5a;
    let seq: u16 = rand_u16();
    let mut pkt = vec![
        8u8,
        0,
        0,
        0,
        (id >> 8) as u8,
        id as u8,
        (seq >> 8) as u8,
        seq as u8,
    ];
    pkt.extend_from_slice(b"h8s-probe-payload");
    let c = checksum(&pkt);
    pkt[2..4].copy_from_slice(&c.to_be_bytes());
    let sa = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    let start = Instant::now();
    // SAFETY: pkt and sa are valid for the lengths given.
    let r = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            pkt.as_ptr().cast(),
            pkt.len(),
            0,
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if r < 0 {
        return None; // e.g. network unreachable
    }
    let mut buf = [0u8; 1500];
    while start.elapsed() < timeout {
        let left = timeout - start.elapsed();
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if n <= 0 {
            return None;
        }
        // SAFETY: buf is valid for its length.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n <= 0 {
            return None;
        }
        let b = &buf[..n as usize];
        let ihl = usize::from(b[0] & 0x0f) * 4;
        let src = Ipv4Addr::new(b[12], b[13], b[14], b[15]);
        let icmp = &b[ihl..];
        if src == dst
            && icmp.len() >= 8
            && icmp[0] == 0
            && icmp[4..6] == id.to_be_bytes()
            && icmp[6..8] == seq.to_be_bytes()
        {
            return Some(start.elapsed());
        }
    }
    None
}

fn rand_u16() -> u16 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    (t.subsec_nanos() ^ (t.subsec_nanos() >> 16)) as u16
}

/// A TCP server in `ns` on `addr` that answers every connection with `token` and closes.
pub fn tcp_token_server(ns: &NsRef, addr: SocketAddrV4, token: &'static str) {
    let l = ns.run(|| Ok(TcpListener::bind(addr).unwrap())).unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(token.as_bytes());
        }
    });
}

/// Connects from `ns` to `addr`; what the server said, or `None` if unreachable.
pub fn tcp_read(ns: &NsRef, addr: SocketAddrV4) -> Option<String> {
    ns.run(|| {
        Ok(
            TcpStream::connect_timeout(&addr.into(), Duration::from_millis(1500))
                .ok()
                .and_then(|mut s| {
                    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
                    let mut out = String::new();
                    s.read_to_string(&mut out).ok().map(|_| out)
                }),
        )
    })
    .unwrap()
}

/// A UDP socket bound in `ns`.
pub fn udp(ns: &NsRef, addr: SocketAddrV4) -> UdpSocket {
    let s = ns.run(|| Ok(UdpSocket::bind(addr).unwrap())).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    s
}

/// Datagrams `sock` receives within its timeout.
pub fn drain(sock: &UdpSocket) -> Vec<(String, std::net::SocketAddr)> {
    let mut out = vec![];
    let mut buf = [0u8; 2048];
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        out.push((String::from_utf8_lossy(&buf[..n]).into_owned(), from));
    }
    out
}

/// An AF_PACKET socket on `dev` inside `ns`: sends raw frames, receives everything the
/// interface gets (promiscuous).
pub struct Raw {
    fd: OwnedFd,
    ifindex: i32,
}

impl Raw {
    pub fn open(ns: &NsRef, dev: &str) -> Raw {
        let dev = dev.to_string();
        ns.run(move || {
            // SAFETY: plain socket(2), checked.
            let fd = unsafe {
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                    (libc::ETH_P_ALL as u16).to_be() as i32,
                )
            };
            assert!(fd >= 0);
            // SAFETY: fresh descriptor we own.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let cname = std::ffi::CString::new(dev).unwrap();
            // SAFETY: valid NUL-terminated string.
            let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
            assert!(ifindex > 0);
            // SAFETY: zeroed sockaddr_ll is valid; fields set below.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
            sll.sll_ifindex = ifindex;
            // SAFETY: sll valid for its size.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            assert_eq!(r, 0);
            // SAFETY: packet_mreq is plain data; all-zero is a valid value.
            let mut mr: libc::packet_mreq = unsafe { std::mem::zeroed() };
            mr.mr_ifindex = ifindex;
            mr.mr_type = libc::PACKET_MR_PROMISC as u16;
            // SAFETY: mr valid for its size.
            let r = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_ADD_MEMBERSHIP,
                    (&mr as *const libc::packet_mreq).cast(),
                    std::mem::size_of::<libc::packet_mreq>() as u32,
                )
            };
            assert_eq!(r, 0);
            Ok(Raw { fd, ifindex })
        })
        .unwrap()
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: frame valid for its length; the socket is bound to the interface.
        let r = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            r,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }

    /// Frames received within `d`.
    pub fn collect(&self, d: Duration) -> Vec<Vec<u8>> {
        let start = Instant::now();
        let mut out = vec![];
        let mut buf = [0u8; 4096];
        while start.elapsed() < d {
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let left = (d.saturating_sub(start.elapsed())).as_millis().max(1) as i32;
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, left) } <= 0 {
                break;
            }
            // SAFETY: buf valid for its length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n > 0 {
                out.push(buf[..n as usize].to_vec());
            }
        }
        let _ = self.ifindex;
        out
    }
}

/// An ARP reply frame: "`ip` is at `sha`", from Ethernet source `esrc` to `edst`.
pub fn arp_reply(
    esrc: [u8; 6],
    edst: [u8; 6],
    sha: [u8; 6],
    ip: Ipv4Addr,
    tha: [u8; 6],
    tip: Ipv4Addr,
) -> Vec<u8> {
    let mut f = vec![];
    f.extend_from_slice(&edst);
    f.extend_from_slice(&esrc);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0x00, 6, 4, 0, 2]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&tha);
    f.extend_from_slice(&tip.octets());
    f
}

/// The MAC the neighbour table of `ns` holds for `ip`, if any.
pub fn neighbour(ns: &NsRef, ip: Ipv4Addr) -> Option<String> {
    let out = sh(ns, &format!("ip -4 neigh show {ip}"));
    out.split_whitespace()
        .skip_while(|w| *w != "lladdr")
        .nth(1)
        .map(str::to_string)
}
