//! IPv4 CIDRs (the service range).

use std::net::Ipv4Addr;

/// A parsed IPv4 CIDR.
#[derive(Debug, Clone, Copy)]
pub struct Cidr {
    pub(crate) base: u32,
    bits: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (ip, bits) = s.split_once('/')?;
        let ip: Ipv4Addr = ip.parse().ok()?;
        let bits: u8 = bits.parse().ok().filter(|b| *b <= 30)?;
        let mask = u32::MAX.checked_shl(32 - bits as u32).unwrap_or(0);
        Some(Cidr {
            base: u32::from(ip) & mask,
            bits,
        })
    }
    pub(crate) fn size(&self) -> u32 {
        1u32 << (32 - self.bits as u32)
    }
    pub(crate) fn contains(&self, ip: Ipv4Addr) -> bool {
        let v = u32::from(ip);
        v >= self.base && v - self.base < self.size()
    }
    /// The range as written in `--service-cluster-ip-range` (`10.96.0.0/12`).
    pub fn cidr_string(&self) -> String {
        format!("{}/{}", Ipv4Addr::from(self.base), self.bits)
    }
    /// The first usable address: the `kubernetes` Service's.
    pub fn first(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.base + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs() {
        let c = Cidr::parse("10.96.0.0/12").unwrap();
        assert_eq!(c.first(), Ipv4Addr::new(10, 96, 0, 1));
        assert!(c.contains(Ipv4Addr::new(10, 111, 255, 254)));
        assert!(!c.contains(Ipv4Addr::new(10, 112, 0, 1)));
        assert!(Cidr::parse("10.0.0.0/31").is_none());
        assert!(Cidr::parse("nope").is_none());
    }
}
