//! Network set-up of the VM (the pod's one network namespace) over a minimal rtnetlink client:
//! link up / rename / MTU, addresses, default routes.

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use h8s_guest::{ErrorCode, NetworkConfig, ProtoError};

use crate::container::NetFiles;
use crate::sys::check;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTM_NEWROUTE: u16 = 24;
const RTM_DELROUTE: u16 = 25;
const NLM_F_EXCL: u16 = 0x200;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFLA_NET_NS_FD: u16 = 28;
const NLA_F_NESTED: u16 = 0x8000;
const RTA_DST: u16 = 1;
const RT_SCOPE_LINK: u8 = 253;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_REPLACE: u16 = 0x100;
const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;
const RTNH_F_ONLINK: u32 = 4;
const IFF_UP: u32 = 1;

/// A parsed `address/prefix`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

/// Parses CIDR notation (`10.1.0.5/24`, `fd00::5/64`).
pub fn parse_cidr(s: &str) -> Result<Cidr, ProtoError> {
    let bad = || {
        ProtoError::new(
            ErrorCode::InvalidArgument,
            format!("{s:?} is not an address in CIDR notation"),
        )
    };
    let (a, p) = s.split_once('/').ok_or_else(bad)?;
    let addr: IpAddr = a.parse().map_err(|_| bad())?;
    let prefix: u8 = p.parse().map_err(|_| bad())?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if prefix > max {
        return Err(bad());
    }
    Ok(Cidr { addr, prefix })
}

fn family(a: &IpAddr) -> u8 {
    if a.is_ipv4() {
        libc::AF_INET as u8
    } else {
        libc::AF_INET6 as u8
    }
}

fn addr_bytes(a: &IpAddr) -> Vec<u8> {
    match a {
        IpAddr::V4(v) => v.octets().to_vec(),
        IpAddr::V6(v) => v.octets().to_vec(),
    }
}

/// One rtnetlink request builder: header fields, a fixed struct, then attributes.
struct Msg {
    buf: Vec<u8>,
}

impl Msg {
    fn new(kind: u16, flags: u16, fixed: &[u8]) -> Msg {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(fixed);
        Msg { buf }
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Msg {
        let len = 4 + data.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
        self
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// Nested netlink attributes (the payload of one attribute).
struct Attrs(Vec<u8>);

impl Attrs {
    fn new(fixed: &[u8]) -> Attrs {
        Attrs(fixed.to_vec())
    }

    fn attr(mut self, kind: u16, data: &[u8]) -> Attrs {
        self.0
            .extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        while !self.0.len().is_multiple_of(4) {
            self.0.push(0);
        }
        self
    }
}

fn cstring(s: &str) -> Vec<u8> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    b
}

/// An rtnetlink socket of the calling thread's network namespace.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    /// Opens one in the calling thread's network namespace.
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: socket(2) has no memory arguments.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        })?;
        // SAFETY: a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Netlink { fd, seq: 0 })
    }

    /// Sends one request and waits for its acknowledgement.
    fn call(&mut self, msg: Msg) -> io::Result<()> {
        self.seq += 1;
        let bytes = msg.finish(self.seq);
        // SAFETY: sends `bytes.len()` bytes from a valid buffer; the kernel is the default
        // destination of an unbound netlink socket.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = [0u8; 8192];
        loop {
            // SAFETY: receives into a valid buffer of the given length.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut off = 0usize;
            let n = n as usize;
            while off + 16 <= n {
                let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
                let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
                let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
                if len < 16 || off + len > n {
                    break;
                }
                if kind == NLMSG_ERROR && seq == self.seq && len >= 20 {
                    let code = i32::from_ne_bytes(buf[off + 16..off + 20].try_into().unwrap());
                    return if code == 0 {
                        Ok(())
                    } else {
                        Err(io::Error::from_raw_os_error(-code))
                    };
                }
                off += (len + 3) & !3;
            }
        }
    }

    fn link(
        &mut self,
        index: i32,
        up: bool,
        name: Option<&str>,
        mtu: Option<u32>,
    ) -> io::Result<()> {
        let mut fixed = vec![0u8; 16];
        fixed[0] = libc::AF_UNSPEC as u8;
        fixed[4..8].copy_from_slice(&index.to_ne_bytes());
        if up {
            fixed[8..12].copy_from_slice(&IFF_UP.to_ne_bytes());
            fixed[12..16].copy_from_slice(&IFF_UP.to_ne_bytes());
        }
        let mut m = Msg::new(RTM_NEWLINK, 0, &fixed);
        if let Some(n) = name {
            let mut b = n.as_bytes().to_vec();
            b.push(0);
            m = m.attr(IFLA_IFNAME, &b);
        }
        if let Some(mtu) = mtu {
            m = m.attr(IFLA_MTU, &mtu.to_ne_bytes());
        }
        self.call(m)
    }

    fn address(&mut self, index: i32, c: &Cidr) -> io::Result<()> {
        let mut fixed = vec![0u8; 8];
        fixed[0] = family(&c.addr);
        fixed[1] = c.prefix;
        fixed[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let a = addr_bytes(&c.addr);
        let m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, &fixed)
            .attr(IFA_LOCAL, &a)
            .attr(IFA_ADDRESS, &a);
        self.call(m)
    }

    /// Creates the veth pair `name` ↔ `peer`, the peer in the network namespace `peer_ns`.
    pub fn create_veth(&mut self, name: &str, peer: &str, peer_ns: &fs::File) -> io::Result<()> {
        let peer_info = Attrs::new(&[0u8; 16])
            .attr(IFLA_IFNAME, &cstring(peer))
            .attr(IFLA_NET_NS_FD, &(peer_ns.as_raw_fd() as u32).to_ne_bytes());
        let data = Attrs::new(&[]).attr(VETH_INFO_PEER | NLA_F_NESTED, &peer_info.0);
        let info = Attrs::new(&[])
            .attr(IFLA_INFO_KIND, b"veth")
            .attr(IFLA_INFO_DATA | NLA_F_NESTED, &data.0);
        let mut fixed = vec![0u8; 16];
        fixed[0] = libc::AF_UNSPEC as u8;
        let m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, &fixed)
            .attr(IFLA_IFNAME, &cstring(name))
            .attr(IFLA_LINKINFO | NLA_F_NESTED, &info.0);
        self.call(m)
    }

    /// Sets a link up.
    pub fn up(&mut self, index: i32) -> io::Result<()> {
        self.link(index, true, None, None)
    }

    /// Adds (`add`) or deletes an IPv4 address.
    pub fn address4(
        &mut self,
        index: i32,
        addr: Ipv4Addr,
        prefix: u8,
        add: bool,
    ) -> io::Result<()> {
        if add {
            return self.address(
                index,
                &Cidr {
                    addr: IpAddr::V4(addr),
                    prefix,
                },
            );
        }
        let mut fixed = vec![0u8; 8];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = prefix;
        fixed[4..8].copy_from_slice(&(index as u32).to_ne_bytes());
        let m = Msg::new(RTM_DELADDR, 0, &fixed)
            .attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        self.call(m)
    }

    /// Adds (`add`) or deletes the on-link route `dst/32 dev index`.
    pub fn host_route(&mut self, index: i32, dst: Ipv4Addr, add: bool) -> io::Result<()> {
        let mut fixed = vec![0u8; 12];
        fixed[0] = libc::AF_INET as u8;
        fixed[1] = 32;
        fixed[4] = RT_TABLE_MAIN;
        fixed[5] = RTPROT_BOOT;
        fixed[6] = RT_SCOPE_LINK;
        fixed[7] = RTN_UNICAST;
        let (kind, flags) = if add {
            (RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE)
        } else {
            (RTM_DELROUTE, 0)
        };
        let m = Msg::new(kind, flags, &fixed)
            .attr(RTA_DST, &dst.octets())
            .attr(RTA_OIF, &(index as u32).to_ne_bytes());
        self.call(m)
    }

    /// The default route via `gw` on `index`.
    pub fn default_route(&mut self, index: i32, gw: &IpAddr) -> io::Result<()> {
        let mut fixed = vec![0u8; 12];
        fixed[0] = family(gw);
        fixed[4] = RT_TABLE_MAIN;
        fixed[5] = RTPROT_BOOT;
        fixed[6] = 0; // RT_SCOPE_UNIVERSE
        fixed[7] = RTN_UNICAST;
        // On-link: the gateway may sit outside the pod's prefix (e.g. a /32 pod address).
        fixed[8..12].copy_from_slice(&RTNH_F_ONLINK.to_ne_bytes());
        let m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, &fixed)
            .attr(RTA_GATEWAY, &addr_bytes(gw))
            .attr(RTA_OIF, &(index as u32).to_ne_bytes());
        self.call(m)
    }
}

/// Brings the loopback interface up (index 1 in every network namespace).
pub fn loopback_up() -> io::Result<()> {
    Netlink::open()?.link(1, true, None, None)
}

/// `(name, ifindex)` of the interface with this MAC.
fn find_by_mac(mac: &str) -> Option<(String, i32)> {
    let want = mac.to_ascii_lowercase();
    if let Some(nic) = crate::restore::template_nic(&want) {
        return Some(nic);
    }
    for e in fs::read_dir("/sys/class/net").ok()?.flatten() {
        let p = e.path();
        let addr = fs::read_to_string(p.join("address")).unwrap_or_default();
        if addr.trim() == want {
            let idx = fs::read_to_string(p.join("ifindex"))
                .ok()?
                .trim()
                .parse()
                .ok()?;
            return Some((e.file_name().to_string_lossy().into_owned(), idx));
        }
    }
    None
}

/// Applies a network configuration; returns the files later containers get.
pub fn configure(cfg: &NetworkConfig) -> Result<NetFiles, ProtoError> {
    let fail =
        |what: String, e: io::Error| ProtoError::new(ErrorCode::Internal, format!("{what}: {e}"));
    // Validate everything before changing anything.
    let mut plans = Vec::new();
    for i in &cfg.interfaces {
        let (cur, idx) = find_by_mac(&i.mac).ok_or_else(|| {
            ProtoError::new(
                ErrorCode::NotFound,
                format!("no network interface with MAC {}", i.mac),
            )
        })?;
        if let Some(n) = &i.name {
            if n.is_empty() || n.len() > 15 || n.contains(['/', ' ', '\0']) {
                return Err(ProtoError::new(
                    ErrorCode::InvalidArgument,
                    format!("bad interface name {n:?}"),
                ));
            }
        }
        let addrs = i
            .addresses
            .iter()
            .map(|a| parse_cidr(a))
            .collect::<Result<Vec<_>, _>>()?;
        let gw = i
            .gateway
            .as_deref()
            .map(|g| {
                g.parse::<IpAddr>().map_err(|_| {
                    ProtoError::new(ErrorCode::InvalidArgument, format!("bad gateway {g:?}"))
                })
            })
            .transpose()?;
        plans.push((i, cur, idx, addrs, gw));
    }
    for s in &cfg.dns_servers {
        s.parse::<IpAddr>().map_err(|_| {
            ProtoError::new(ErrorCode::InvalidArgument, format!("bad DNS server {s:?}"))
        })?;
    }
    if let Some(h) = &cfg.hostname {
        if h.is_empty()
            || h.len() > 64
            || !h
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            return Err(ProtoError::new(
                ErrorCode::InvalidArgument,
                format!("bad hostname {h:?}"),
            ));
        }
    }

    let mut nl = Netlink::open().map_err(|e| fail("netlink".into(), e))?;
    let mut pod_ip = None;
    for (i, cur, idx, addrs, gw) in &plans {
        let rename = i.name.as_deref().filter(|n| n != cur);
        // Renaming needs the link down, which it is until now.
        nl.link(*idx, false, rename, i.mtu)
            .map_err(|e| fail(format!("configure {cur}"), e))?;
        nl.link(*idx, true, None, None)
            .map_err(|e| fail(format!("bring up {cur}"), e))?;
        for a in addrs {
            nl.address(*idx, a)
                .map_err(|e| fail(format!("add address {}/{}", a.addr, a.prefix), e))?;
            pod_ip.get_or_insert(a.addr.to_string());
        }
        if let Some(g) = gw {
            nl.default_route(*idx, g)
                .map_err(|e| fail(format!("add default route via {g}"), e))?;
        }
    }
    if let Some(h) = &cfg.hostname {
        // SAFETY: sethostname reads `len` bytes from the valid buffer.
        check(unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) })
            .map_err(|e| fail("set hostname".into(), e))?;
    }
    // Cluster DNS in the VM when asked for; if it cannot start (an initramfs without the
    // veth module), the pod keeps its plain resolvers and the host hears of it when it sends
    // the Service table.
    let cluster_dns = cfg.cluster_dns.as_ref().filter(|c| {
        match crate::services::get().and_then(|s| s.start_dns(c)) {
            Ok(()) => true,
            Err(e) => {
                eprintln!("h8s-guest: cluster DNS not served: {}", e.message);
                false
            }
        }
    });
    let resolv_conf = resolv_conf(cfg, cluster_dns);
    Ok(NetFiles {
        resolv_conf,
        pod_ip,
        hostname: cfg.hostname.clone(),
    })
}

/// The pod's `/etc/resolv.conf`: with cluster DNS as kubelet writes it for `ClusterFirst`
/// (the in-VM server, the search path, `ndots`), else the configured resolvers.
fn resolv_conf(cfg: &NetworkConfig, cluster_dns: Option<&h8s_guest::ClusterDns>) -> Option<String> {
    let mut r = String::new();
    match cluster_dns {
        Some(_) => r.push_str(&format!("nameserver {}\n", h8s_guest::CLUSTER_DNS_ADDR)),
        None => {
            for s in &cfg.dns_servers {
                r.push_str(&format!("nameserver {s}\n"));
            }
        }
    }
    if !cfg.dns_search.is_empty() {
        r.push_str(&format!("search {}\n", cfg.dns_search.join(" ")));
    }
    if let Some(c) = cluster_dns {
        r.push_str(&format!("options ndots:{}\n", c.ndots));
    }
    (!r.is_empty()).then_some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_for_cluster_first() {
        let cfg = NetworkConfig {
            interfaces: vec![],
            dns_servers: vec!["192.168.0.1".into()],
            dns_search: vec![
                "a.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            hostname: None,
            cluster_dns: None,
        };
        let dns = h8s_guest::ClusterDns {
            domain: "cluster.local".into(),
            upstream: vec!["192.168.0.1".into()],
            ndots: 5,
        };
        assert_eq!(
            resolv_conf(&cfg, Some(&dns)).unwrap(),
            "nameserver 169.254.53.2\nsearch a.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n"
        );
        assert_eq!(
            resolv_conf(&cfg, None).unwrap(),
            "nameserver 192.168.0.1\nsearch a.svc.cluster.local svc.cluster.local cluster.local\n"
        );
    }

    #[test]
    fn cidrs() {
        assert_eq!(
            parse_cidr("10.1.0.5/24").unwrap(),
            Cidr {
                addr: "10.1.0.5".parse().unwrap(),
                prefix: 24
            }
        );
        assert_eq!(parse_cidr("fd00::1/128").unwrap().prefix, 128);
        for bad in [
            "10.1.0.5",
            "10.1.0.5/33",
            "fd00::1/129",
            "x/1",
            "10.0.0.1/-1",
        ] {
            assert_eq!(
                parse_cidr(bad).unwrap_err().code,
                ErrorCode::InvalidArgument
            );
        }
    }

    #[test]
    fn netlink_messages_are_aligned_and_sized() {
        let b = Msg::new(RTM_NEWADDR, 0, &[0u8; 8])
            .attr(IFA_LOCAL, &[1, 2, 3, 4])
            .attr(IFLA_IFNAME, b"eth0\0")
            .finish(7);
        assert_eq!(b.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(u32::from_ne_bytes(b[8..12].try_into().unwrap()), 7);
        // header 16 + fixed 8 + attr 8 + attr (4+5 → 12)
        assert_eq!(b.len(), 44);
    }
}
