//! `h8s run --network NAME`: the shared glue (`h8s_runtime::network`) asks the network
//! fabric (`crate::net`) for a tap on the Network's segment for the pod; the pod VM gets the
//! tap, the guest agent configures the interface. Detached again when the pod is removed or
//! fails to start.

use h8s_runtime::NetworkAttachment;

pub(super) fn attachment(network: &str, pod: &str) -> anyhow::Result<NetworkAttachment> {
    let a = crate::net::attach_vm(network, pod)?;
    Ok(h8s_runtime::network::attachment(&a))
}

/// Releases the pod's tap and address (fine if it has none).
pub(super) fn detach(pod: &str) {
    if let Err(e) = crate::net::detach_pod(pod) {
        eprintln!("h8s: detaching pod {pod} from its network: {e:#}");
    }
}
