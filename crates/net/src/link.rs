//! A blocking netlink (rtnetlink) client bound to the namespace of the thread that opens it.
//! Each [`Nl`] owns a single-threaded tokio runtime: the fabric's callers may be sync or async,
//! and a namespace-bound socket must be opened on a thread that has entered that namespace.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::{AsRawFd, OwnedFd};

use futures::{StreamExt, TryStreamExt};
use netlink_packet_core::{
    NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkMessage};
use netlink_packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

use crate::error::{Error, Result};
use crate::model::MacAddr;

use rtnetlink::packet_core as netlink_packet_core;
use rtnetlink::packet_route as netlink_packet_route;

pub(crate) struct Nl {
    rt: tokio::runtime::Runtime,
    h: Handle,
}

/// A link as listed.
#[derive(Debug, Clone)]
pub(crate) struct Link {
    pub index: u32,
    pub name: String,
}

impl Nl {
    /// Opens a netlink socket in the calling thread's network namespace.
    pub fn open() -> Result<Nl> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .map_err(|e| Error::io("tokio runtime", e))?;
        let h = rt.block_on(async {
            let (conn, h, _) =
                rtnetlink::new_connection().map_err(|e| Error::io("netlink socket", e))?;
            tokio::spawn(conn);
            Ok::<_, Error>(h)
        })?;
        Ok(Nl { rt, h })
    }

    pub fn links(&self) -> Result<Vec<Link>> {
        self.rt.block_on(async {
            let msgs: Vec<LinkMessage> = self
                .h
                .link()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::nl("list links", e))?;
            Ok(msgs.iter().map(to_link).collect())
        })
    }

    /// The index of the link named `name`: one `RTM_GETLINK` by name (the kernel's hash
    /// lookup), not a dump of every link.
    pub fn index(&self, name: &str) -> Result<Option<u32>> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            // No link can have it (and the kernel would refuse the attribute).
            return Ok(None);
        }
        self.rt.block_on(async {
            let mut found = self.h.link().get().match_name(name).execute();
            match found.try_next().await {
                Ok(m) => Ok(m.map(|m| m.header.index)),
                Err(e) if no_such_device(&e) => Ok(None),
                Err(e) => Err(Error::nl(format!("look up link {name}"), e)),
            }
        })
    }

    pub fn require(&self, name: &str) -> Result<u32> {
        self.index(name)?.ok_or_else(|| Error::NotFound {
            kind: "link",
            name: name.into(),
        })
    }

    fn add(&self, op: String, msg: LinkMessage) -> Result<()> {
        self.rt.block_on(async {
            self.h
                .link()
                .add(msg)
                .execute()
                .await
                .map_err(|e| Error::nl(op, e))
        })
    }

    fn set(&self, op: String, msg: LinkMessage) -> Result<()> {
        self.rt.block_on(async {
            self.h
                .link()
                .set(msg)
                .execute()
                .await
                .map_err(|e| Error::nl(op, e))
        })
    }

    /// A bridge, down, without addresses.
    pub fn add_bridge(&self, name: &str, mtu: u32) -> Result<()> {
        // STP off (default) and no multicast snooping: every port is one tenant's.
        let msg = LinkBridge::new(name)
            .down()
            .mtu(mtu)
            .mcast_snooping(false)
            .build();
        self.add(format!("add bridge {name}"), msg)
    }

    /// A unicast-only VXLAN device: no group, no learning; forwarding entries come from
    /// [`Nl::fdb_add`].
    pub fn add_vxlan(
        &self,
        name: &str,
        vni: u32,
        local: Ipv4Addr,
        port: u16,
        mtu: u32,
    ) -> Result<()> {
        let msg = LinkVxlan::new(name, vni)
            .local(local)
            .port(port)
            .learning(false)
            .l2miss(false)
            .l3miss(false)
            .mtu(mtu)
            .build();
        self.add(format!("add vxlan {name}"), msg)
    }

    /// A port-less bridge, up, that holds addresses the node answers for (ARP on every
    /// interface). A bridge, not a dummy: kernels without the dummy driver have bridges.
    pub fn add_holder(&self, name: &str) -> Result<()> {
        self.add(
            format!("add address holder {name}"),
            LinkBridge::new(name).up().build(),
        )
    }

    /// Makes the IPv4 addresses of link `index` exactly `want` (as /32s).
    pub fn sync_host_addrs(&self, index: u32, want: &[Ipv4Addr]) -> Result<Vec<Ipv4Addr>> {
        use netlink_packet_route::address::{AddressAttribute, AddressMessage};
        self.rt.block_on(async {
            let have: Vec<AddressMessage> = self
                .h
                .address()
                .get()
                .set_link_index_filter(index)
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::nl("list addresses", e))?;
            let mut present = vec![];
            for m in have {
                let ip = m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                });
                match ip {
                    Some(ip) if want.contains(&ip) && m.header.prefix_len == 32 => present.push(ip),
                    _ => self
                        .h
                        .address()
                        .del(m)
                        .execute()
                        .await
                        .map_err(|e| Error::nl(format!("delete address {ip:?}"), e))?,
                }
            }
            let mut added = vec![];
            for ip in want.iter().filter(|ip| !present.contains(ip)) {
                self.h
                    .address()
                    .add(index, IpAddr::V4(*ip), 32)
                    .replace()
                    .execute()
                    .await
                    .map_err(|e| Error::nl(format!("add address {ip}/32"), e))?;
                added.push(*ip);
            }
            Ok(added)
        })
    }

    /// The attributes of link `index` (none if it is gone).
    async fn link_attributes(&self, index: u32) -> Result<Vec<LinkAttribute>> {
        let links: Vec<LinkMessage> = self
            .h
            .link()
            .get()
            .match_index(index)
            .execute()
            .try_collect()
            .await
            .map_err(|e| Error::nl("get link", e))?;
        Ok(links.into_iter().flat_map(|l| l.attributes).collect())
    }

    /// `(ifindex, MAC)` of the interface holding the IPv4 address `ip`, if any has it.
    pub fn link_of_addr(&self, ip: Ipv4Addr) -> Result<Option<(u32, [u8; 6])>> {
        use netlink_packet_route::address::{AddressAttribute, AddressMessage};
        self.rt.block_on(async {
            let addrs: Vec<AddressMessage> = self
                .h
                .address()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::nl("list addresses", e))?;
            let Some(index) = addrs.iter().find_map(|m| {
                m.attributes
                    .iter()
                    .any(|a| matches!(a, AddressAttribute::Address(IpAddr::V4(a)) if *a == ip))
                    .then_some(m.header.index)
            }) else {
                return Ok(None);
            };
            Ok(self
                .link_attributes(index)
                .await?
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Address(m) => <[u8; 6]>::try_from(m.as_slice()).ok(),
                    _ => None,
                })
                .map(|mac| (index, mac)))
        })
    }

    pub fn add_veth(&self, name: &str, peer: &str) -> Result<()> {
        self.add(
            format!("add veth {name}"),
            LinkVeth::new(name, peer).build(),
        )
    }

    /// Puts `port` on `bridge` with the MTU, brings it up.
    pub fn enslave(&self, port: u32, bridge: u32, mtu: u32) -> Result<()> {
        let msg = LinkUnspec::new_with_index(port)
            .controller(bridge)
            .mtu(mtu)
            .up()
            .build();
        self.set(format!("attach link {port} to bridge {bridge}"), msg)
    }

    /// Bridge-port options of a pod port: it learns nothing and receives no flooded unknown
    /// unicast (every local MAC is a static entry), so a pod cannot see frames meant for others.
    pub fn pod_port_opts(&self, port: u32) -> Result<()> {
        let msg = LinkBridgePort::new(port)
            .learning(false)
            .flood(false)
            .build();
        self.rt.block_on(async {
            self.h
                .link()
                .set_port(msg)
                .execute()
                .await
                .map_err(|e| Error::nl(format!("bridge port options of link {port}"), e))
        })
    }

    pub fn set_up(&self, index: u32, mtu: Option<u32>, mac: Option<MacAddr>) -> Result<()> {
        let mut b = LinkUnspec::new_with_index(index).up();
        if let Some(m) = mtu {
            b = b.mtu(m);
        }
        if let Some(m) = mac {
            b = b.address(m.0.to_vec());
        }
        self.set(format!("set link {index} up"), b.build())
    }

    pub fn set_down(&self, index: u32) -> Result<()> {
        self.set(
            format!("set link {index} down"),
            LinkUnspec::new_with_index(index).down().build(),
        )
    }

    pub fn rename(&self, index: u32, name: &str) -> Result<()> {
        self.set(
            format!("rename link {index} to {name}"),
            LinkUnspec::new_with_index(index).name(name).build(),
        )
    }

    pub fn move_to(&self, index: u32, ns: &File) -> Result<()> {
        let msg = LinkUnspec::new_with_index(index)
            .setns_by_fd(ns.as_raw_fd())
            .build();
        self.set(format!("move link {index} to a namespace"), msg)
    }

    pub fn del(&self, index: u32) -> Result<()> {
        self.rt.block_on(async {
            self.h
                .link()
                .del(index)
                .execute()
                .await
                .map_err(|e| Error::nl(format!("delete link {index}"), e))
        })
    }

    /// Deletes a link by name; a missing link is fine, also one that went between the lookup
    /// and the delete (a veth whose other end's namespace the kernel is destroying: that
    /// happens asynchronously after the namespace's last reference went).
    pub fn del_name(&self, name: &str) -> Result<bool> {
        let Some(i) = self.index(name)? else {
            return Ok(false);
        };
        match self.del(i) {
            Ok(()) => Ok(true),
            Err(Error::Netlink { source, .. }) if no_such_device(&source) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn add_addr(&self, index: u32, ip: Ipv4Addr, prefix: u8) -> Result<()> {
        self.rt.block_on(async {
            self.h
                .address()
                .add(index, IpAddr::V4(ip), prefix)
                .replace()
                .execute()
                .await
                .map_err(|e| Error::nl(format!("add address {ip}/{prefix}"), e))
        })
    }

    pub fn add_default_route(&self, via: Ipv4Addr) -> Result<()> {
        let msg = RouteMessageBuilder::<Ipv4Addr>::new().gateway(via).build();
        self.rt.block_on(async {
            self.h
                .route()
                .add(msg)
                .replace()
                .execute()
                .await
                .map_err(|e| Error::nl(format!("add default route via {via}"), e))
        })
    }

    /// Every IPv4 address of the namespace with its prefix length (all interfaces).
    pub fn ipv4_addrs(&self) -> Result<Vec<(Ipv4Addr, u8)>> {
        use netlink_packet_route::address::{AddressAttribute, AddressMessage};
        self.rt.block_on(async {
            let addrs: Vec<AddressMessage> = self
                .h
                .address()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::nl("list addresses", e))?;
            Ok(addrs
                .iter()
                .filter_map(|m| {
                    m.attributes.iter().find_map(|a| match a {
                        AddressAttribute::Address(IpAddr::V4(ip)) => {
                            Some((*ip, m.header.prefix_len))
                        }
                        _ => None,
                    })
                })
                .collect())
        })
    }

    /// The address and MTU of the interface holding the IPv4 default route, if there is one.
    pub fn default_route_source(&self) -> Result<Option<(Ipv4Addr, u8, u32)>> {
        use netlink_packet_route::address::{AddressAttribute, AddressMessage};
        use netlink_packet_route::route::{RouteAttribute, RouteMessage};
        self.rt.block_on(async {
            let routes: Vec<RouteMessage> = self
                .h
                .route()
                .get(RouteMessageBuilder::<Ipv4Addr>::new().build())
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::nl("list routes", e))?;
            let Some(oif) = routes
                .iter()
                .filter(|r| r.header.destination_prefix_length == 0 && r.header.table == 254)
                .find_map(|r| {
                    r.attributes.iter().find_map(|a| match a {
                        RouteAttribute::Oif(i) => Some(*i),
                        _ => None,
                    })
                })
            else {
                return Ok(None);
            };
            let addrs: Vec<AddressMessage> = self
                .h
                .address()
                .get()
                .set_link_index_filter(oif)
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::nl("list addresses", e))?;
            let Some((ip, prefix)) = addrs.iter().find_map(|m| {
                m.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some((*ip, m.header.prefix_len)),
                    _ => None,
                })
            }) else {
                return Ok(None);
            };
            let mtu = self
                .link_attributes(oif)
                .await?
                .iter()
                .find_map(|a| match a {
                    LinkAttribute::Mtu(m) => Some(*m),
                    _ => None,
                })
                .unwrap_or(1500);
            Ok(Some((ip, prefix, mtu)))
        })
    }

    /// `(mac, remote)` forwarding entries of a VXLAN device.
    pub fn fdb_list(&self, vxlan: u32) -> Result<Vec<(MacAddr, Ipv4Addr)>> {
        self.rt.block_on(async {
            let msgs: Vec<NeighbourMessage> = self
                .h
                .neighbours()
                .get()
                .set_address_family(AddressFamily::Bridge)
                .execute()
                .try_collect()
                .await
                .map_err(|e| Error::nl("list forwarding entries", e))?;
            let mut out = Vec::new();
            for m in msgs.iter().filter(|m| m.header.ifindex == vxlan) {
                let mut mac = None;
                let mut dst = None;
                for a in &m.attributes {
                    match a {
                        NeighbourAttribute::LinkLayerAddress(b) if b.len() == 6 => {
                            mac = Some(MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]]))
                        }
                        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => {
                            dst = Some(*ip)
                        }
                        // The bridge family's NDA_DST is not typed by the parser.
                        NeighbourAttribute::Destination(NeighbourAddress::Other(b))
                            if b.len() == 4 =>
                        {
                            dst = Some(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
                        }
                        _ => {}
                    }
                }
                if let (Some(mac), Some(dst)) = (mac, dst) {
                    out.push((mac, dst));
                }
            }
            Ok(out)
        })
    }

    fn fdb_msg(vxlan: u32, mac: MacAddr, dst: Ipv4Addr) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = vxlan;
        m.header.state = NeighbourState::Permanent;
        m.header.flags = NeighbourFlags::Own;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(dst)));
        m
    }

    async fn request(&self, msg: RouteNetlinkMessage, flags: u16, op: String) -> Result<()> {
        let mut req = NetlinkMessage::from(msg);
        req.header.flags = flags;
        let mut h = self.h.clone();
        let mut resp = h.request(req).map_err(|e| Error::nl(op.clone(), e))?;
        while let Some(m) = resp.next().await {
            if let NetlinkPayload::Error(e) = m.payload {
                if e.code.is_some() {
                    return Err(Error::nl(op, rtnetlink::Error::NetlinkError(e)));
                }
            }
        }
        Ok(())
    }

    /// Adds a VXLAN forwarding entry. The all-zero MAC may have several remotes (head-end
    /// replication of broadcast, unknown unicast and multicast), so entries are appended.
    pub fn fdb_add(&self, vxlan: u32, mac: MacAddr, dst: Ipv4Addr) -> Result<()> {
        let flags = NLM_F_REQUEST
            | NLM_F_ACK
            | NLM_F_CREATE
            | if mac.0 == [0; 6] {
                NLM_F_APPEND
            } else {
                NLM_F_EXCL
            };
        self.rt.block_on(self.request(
            RouteNetlinkMessage::NewNeighbour(Self::fdb_msg(vxlan, mac, dst)),
            flags,
            format!("add forwarding entry {mac} -> {dst}"),
        ))
    }

    pub fn fdb_del(&self, vxlan: u32, mac: MacAddr, dst: Ipv4Addr) -> Result<()> {
        self.rt.block_on(self.request(
            RouteNetlinkMessage::DelNeighbour(Self::fdb_msg(vxlan, mac, dst)),
            NLM_F_REQUEST | NLM_F_ACK,
            format!("delete forwarding entry {mac} -> {dst}"),
        ))
    }

    /// A static bridge forwarding entry: frames for `mac` go to `port` (on its bridge).
    pub fn bridge_fdb_add(&self, port: u32, mac: MacAddr) -> Result<()> {
        let mut m = NeighbourMessage::default();
        m.header.family = AddressFamily::Bridge;
        m.header.ifindex = port;
        m.header.state = NeighbourState::Noarp;
        m.header.flags = NeighbourFlags::Controller;
        m.attributes
            .push(NeighbourAttribute::LinkLayerAddress(mac.0.to_vec()));
        self.rt.block_on(self.request(
            RouteNetlinkMessage::NewNeighbour(m),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | netlink_packet_core::NLM_F_REPLACE,
            format!("add bridge entry {mac} on link {port}"),
        ))
    }
}

/// Whether the kernel answered "no such device" (`ENODEV`): the link does not exist.
fn no_such_device(e: &rtnetlink::Error) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.code.map(|c| c.get()) == Some(-libc::ENODEV))
}

fn to_link(m: &LinkMessage) -> Link {
    let name = m
        .attributes
        .iter()
        .find_map(|a| match a {
            LinkAttribute::IfName(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap_or_default();
    Link {
        index: m.header.index,
        name,
    }
}

/// Creates a persistent tap device `name` (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) in the calling
/// thread's namespace; QEMU later opens it by name. Netlink cannot create taps.
pub(crate) fn create_tap(name: &str) -> Result<()> {
    const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
    const TUNSETPERSIST: libc::c_ulong = 0x4004_54cb;
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
        return Err(Error::invalid("tap name", name.to_string()));
    }
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .map_err(|e| Error::io("open /dev/net/tun", e))?;
    let fd: OwnedFd = f.into();
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TAP | IFF_NO_PI | IFF_VNET_HDR,
        _pad: [0; 22],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: `fd` is an open /dev/net/tun descriptor; TUNSETIFF reads and writes a `struct
    // ifreq`, which `IfReq` lays out exactly (16-byte name, flags, padding to 40 bytes), and
    // `req` outlives the call.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if r < 0 {
        return Err(Error::io(
            format!("TUNSETIFF {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: same descriptor; TUNSETPERSIST takes an integer argument by value.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETPERSIST, 1 as libc::c_ulong) };
    if r < 0 {
        return Err(Error::io(
            format!("TUNSETPERSIST {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}
