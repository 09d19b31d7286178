//! The API server relay: pods reach the API server as `kubernetes.default.svc` through their
//! own proxy (the `kubernetes` Service in every Network's table, backed by the Network's
//! gateway, port [`h8s_net::API_GATEWAY_PORT`]); each gateway forwards that port to this
//! relay on the node (its uplink's host address, a port the node's rules open to gateway
//! uplinks only), and the relay splices the TCP stream to the API server's address from the
//! `default/kubernetes` Endpoints. TLS is end to end between the pod and the API server; the
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

/// The API server's address as it publishes itself (`default/kubernetes` Endpoints).
async fn target(client: &kube::Client) -> Option<SocketAddr> {
    let ep: Endpoints = Api::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .ok()?;
    let subset = ep.subsets?.into_iter().next()?;
    let ip = subset.addresses?.into_iter().next()?.ip;
    let port = subset.ports?.into_iter().next()?.port;
    Some(SocketAddr::new(ip.parse().ok()?, u16::try_from(port).ok()?))
}

/// Relays connections accepted on `listener` until `stop`.
pub async fn serve(listener: TcpListener, client: kube::Client, mut stop: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Looked up again after a connection to it failed (a restarted server may have moved).
    let cached: Arc<std::sync::Mutex<Option<SocketAddr>>> = Arc::default();
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
        let known = *cached.lock().unwrap_or_else(|e| e.into_inner());
        let to = match known {
            Some(t) => Some(t),
            None => {
                let t = target(&client).await;
                *cached.lock().unwrap_or_else(|e| e.into_inner()) = t;
                t
            }
        };
        let Some(to) = to else {
            tracing::warn!(
                "API relay: the API server's address is unknown (default/kubernetes Endpoints)"
            );
            continue;
        };
        tracing::debug!(%peer, %to, "API relay connection");
        let cached = cached.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if !relay(conn, to).await {
                *cached.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        });
    }
}

/// Splices `conn` to the API server at `to`; `false` if it could not be reached.
#[tracing::instrument(skip(conn), level = "debug")]
async fn relay(mut conn: TcpStream, to: SocketAddr) -> bool {
    let mut up = match tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(to)).await {
        Ok(Ok(s)) => s,
        _ => {
            tracing::debug!("API relay cannot reach the API server");
            return false;
        }
    };
    let _ = conn.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
    true
}
