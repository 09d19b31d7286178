//! `h8s run --network NAME`: the network fabric (`crate::net`) makes a tap on the Network's
//! segment for the pod and hands out its address; the pod VM gets the tap, the guest agent
//! configures the interface. Detached again when the pod is removed or fails to start.

use h8s_runtime::NetworkAttachment;

pub(super) fn attachment(network: &str, pod: &str) -> anyhow::Result<NetworkAttachment> {
    let a = crate::net::attach_vm(network, pod)?;
    Ok(NetworkAttachment {
        tap: a.port.clone(),
        mac: a.mac.to_string(),
        address: a.address_cidr(),
        gateway: Some(a.gateway.to_string()),
        mtu: a.mtu,
        dns: a.dns.iter().map(|d| d.to_string()).collect(),
    })
}

/// Releases the pod's tap and address (fine if it has none).
pub(super) fn detach(pod: &str) {
    if let Err(e) = crate::net::detach_pod(pod) {
        eprintln!("h8s: detaching pod {pod} from its network: {e:#}");
    }
}
