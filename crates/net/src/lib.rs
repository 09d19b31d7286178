//! Tenant network fabric: bridges, VXLAN, taps, IPAM, nftables.
