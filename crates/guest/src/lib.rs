//! The in-VM guest agent and the host-guest protocol.
