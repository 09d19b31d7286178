//! Tenant network fabric: each Network an isolated layer-2 segment (a Linux bridge per node,
//! joined across nodes by a unicast VXLAN), with IPAM, a per-Network gateway namespace that
//! masquerades egress, and nftables anti-spoofing on every pod port. See `docs/network.md`.

mod arp;
mod error;
pub mod expose;
mod fabric;
mod host;
mod link;
mod model;
pub mod netns;
mod nft;
pub mod policy;
mod store;

pub use error::{Error, Result};
pub use expose::{ExposedPort, ServiceRules, L4, SVC_TABLE};
pub use fabric::{Fabric, Inventory, NodeConfig, API_GATEWAY_PORT, DEFAULT_PROTECTED, LB_DEVICE};
pub use host::{host_device, HOST_DEVICE_PREFIX};
pub use ipnet::Ipv4Net;
pub use model::{
    Attachment, MacAddr, Network, PortKind, Subnet, DEVICE_PREFIX, MAX_VNI, SYSTEM_TENANT,
    VXLAN_OVERHEAD,
};
pub use netns::NsRef;
pub use nft::TABLE as NFT_TABLE;
pub use policy::{PolicyRules, POLICY_TABLE};
pub use store::NetworkStore;
