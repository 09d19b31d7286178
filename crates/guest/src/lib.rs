//! The host↔guest protocol of h8s pod VMs (types and codec, no I/O runtime: usable by the host's
//! async runtime and by the synchronous guest agent alike). The agent itself is the `h8s-guest`
//! binary of this crate. See `docs/guest.md`.

mod proto;

pub use proto::*;
