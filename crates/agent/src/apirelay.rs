//! The API server relay: pods reach the API server as `kubernetes.default.svc` through their
//! own proxy (the `kubernetes` Service in every Network's table, backed by the Network's
//! gateway, port [`h8s_net::API_GATEWAY_PORT`]); each gateway forwards that port to this
//! relay on the node (its uplink's host address, a port the node's rules open to gateway
//! uplinks only), and the relay splices the TCP stream to the API server's address from the
//! `default/kubernetes` Endpoints (each server's advertised address; the first that answers).
//! TLS is end to end between the pod and the API server; the
//! pod authenticates with its ServiceAccount token like any client. The relay sees bytes
//! only. At most [`MAX_CONNECTIONS`] at once (more are closed at once).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Endpoints;
use kube::Api;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Connections the relay carries at once.
pub const MAX_CONNECTIONS: usize = 1024;

/// The API servers' addresses as they publish themselves (`default/kubernetes` Endpoints,
/// each server's `--advertise-address`).
async fn targets(client: &kube::Client) -> Vec<SocketAddr> {
    let Ok(ep) = Api::<Endpoints>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for s in ep.subsets.unwrap_or_default() {
        let port = s
            .ports
            .unwrap_or_default()
            .into_iter()
            .find_map(|p| u16::try_from(p.port).ok());
        let Some(port) = port else { continue };
        for a in s.addresses.unwrap_or_default() {
            if let Ok(ip) = a.ip.parse() {
                out.push(SocketAddr::new(ip, port));
            }
        }
    }
    out
}

/// Relays connections accepted on `listener` until `stop`.
pub async fn serve(listener: TcpListener, client: kube::Client, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Looked up again after a connection to it failed (a restarted server may have moved).
    let cached: Arc<std::sync::Mutex<Option<Vec<SocketAddr>>>> = Arc::default();
    loop {
        let (conn, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "API relay accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.changed() => return,
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%peer, "API relay full; connection closed");
            continue;
        };
        let known = cached.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let to = match known {
            Some(t) => t,
            None => {
                let t = targets(&client).await;
                if !t.is_empty() {
                    *cached.lock().unwrap_or_else(|e| e.into_inner()) = Some(t.clone());
                }
                t
            }
        };
        if to.is_empty() {
            tracing::warn!(
                "API relay: the API server's address is unknown (default/kubernetes Endpoints)"
            );
            continue;
        }
        tracing::debug!(%peer, ?to, "API relay connection");
        let cached = cached.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if !relay(conn, &to).await {
                *cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        });
    }
}

/// Splices `conn` to the first API server of `to` that answers; `false` if none could be
/// reached.
#[tracing::instrument(skip(conn), level = "debug")]
async fn relay(mut conn: TcpStream, to: &[SocketAddr]) -> bool {
    let mut up = None;
    for t in to {
        match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(t)).await {
            Ok(Ok(s)) => {
                up = Some(s);
                break;
            }
            _ => tracing::debug!(to = %t, "API relay cannot reach this API server"),
        }
    }
    let Some(mut up) = up else {
        return false;
    };
    let _ = conn.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
    true
}
