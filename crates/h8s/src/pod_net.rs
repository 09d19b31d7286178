//! `h8s run --network NAME`: the attachment comes from the network fabric.

use h8s_runtime::NetworkAttachment;

pub(super) fn attachment(name: &str) -> anyhow::Result<NetworkAttachment> {
    anyhow::bail!("network {name:?}: attaching pods to networks is not available yet")
}
