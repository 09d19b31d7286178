//! Gratuitous ARP: how a node that starts announcing a LoadBalancer pool address tells the
//! underlay at once (MetalLB's layer-2 mode does the same), so clients and routers replace
//! the previous node's MAC in their neighbour entries instead of waiting for them to expire.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const ETH_P_ARP: u16 = 0x0806;

/// The ARP body of a gratuitous request: "who has `ip`? tell `ip` at `mac`", sender and
/// target address both `ip`, target hardware address zero (what the kernel's own
/// `arp_notify` sends).
pub(crate) fn gratuitous_request(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 28] {
    let mut b = [0u8; 28];
    b[0..2].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    b[2..4].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    b[4] = 6;
    b[5] = 4;
    b[6..8].copy_from_slice(&1u16.to_be_bytes()); // request
    b[8..14].copy_from_slice(&mac);
    b[14..18].copy_from_slice(&ip.octets());
    b[24..28].copy_from_slice(&ip.octets());
    b
}

/// Broadcasts one gratuitous ARP request per address on interface `ifindex` (whose MAC is
/// `mac`) of the calling thread's network namespace.
pub(crate) fn announce(ifindex: u32, mac: [u8; 6], ips: &[Ipv4Addr]) -> io::Result<()> {
    // SAFETY: socket(2) has no memory arguments.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            i32::from(ETH_P_ARP.to_be()),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_ll is plain old data; all zeroes is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as u16;
    to.sll_protocol = ETH_P_ARP.to_be();
    to.sll_ifindex = ifindex as i32;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&[0xff; 6]);
    for ip in ips {
        let body = gratuitous_request(mac, *ip);
        // SAFETY: sends `body.len()` bytes from a valid buffer to a valid, correctly sized
        // sockaddr_ll (the kernel adds the Ethernet header for SOCK_DGRAM).
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                body.as_ptr().cast(),
                body.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gratuitous_request_layout() {
        let mac = [0x0a, 0x58, 1, 2, 3, 4];
        let b = gratuitous_request(mac, Ipv4Addr::new(10, 77, 0, 200));
        assert_eq!(&b[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(&b[8..14], &mac);
        assert_eq!(&b[14..18], &[10, 77, 0, 200]);
        assert_eq!(&b[18..24], &[0; 6]);
        assert_eq!(&b[24..28], &[10, 77, 0, 200]);
    }
}
