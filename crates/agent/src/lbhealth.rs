//! Health checks of LoadBalancer Services with `externalTrafficPolicy: Local` (kube-proxy's
//! healthcheck server): on each Service's `healthCheckNodePort` the node answers
//! `GET /` with `200` while it has a ready local endpoint of the Service, `503` otherwise,
//! and a JSON body `{"service":{"namespace","name"},"localEndpoints":N}`. A load balancer
//! in front of the nodes sends traffic only to nodes that answer 200.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::netapi::AbortOnDrop;

/// Connections served at once per port; more wait for a slot.
const MAX_CONNECTIONS: usize = 64;
/// A connection is closed after this long, finished or not.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(5);

/// What one health check port answers for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Check {
    pub namespace: String,
    pub name: String,
    pub local_endpoints: usize,
}

struct Served {
    service: (String, String),
    local: Arc<AtomicUsize>,
    _task: AbortOnDrop,
}

/// The node's health check listeners, one per port.
#[derive(Default)]
pub(crate) struct HealthChecks {
    ports: HashMap<u16, Served>,
}

/// The answer for `local` ready local endpoints of `namespace/name` (pure).
pub(crate) fn answer(namespace: &str, name: &str, local: usize) -> (StatusCode, String) {
    let status = if local > 0 {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "service": {"namespace": namespace, "name": name},
        "localEndpoints": local,
        "serviceProxyHealthy": true,
    });
    (status, body.to_string())
}

impl HealthChecks {
    /// Serves exactly the ports of `want` (on every address of the node), updating the
    /// counts of those already served. A port that cannot be bound is logged and retried on
    /// the next call.
    pub(crate) async fn sync(&mut self, want: &BTreeMap<u16, Check>) {
        self.ports.retain(|port, s| {
            want.get(port)
                .is_some_and(|c| (c.namespace.clone(), c.name.clone()) == s.service)
        });
        for (port, c) in want {
            if let Some(s) = self.ports.get(port) {
                s.local.store(c.local_endpoints, Ordering::Relaxed);
                continue;
            }
            let listener = match TcpListener::bind(("0.0.0.0", *port)).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(port, error = %e, "cannot serve a health check node port");
                    continue;
                }
            };
            let local = Arc::new(AtomicUsize::new(c.local_endpoints));
            let task = tokio::spawn(serve(
                listener,
                c.namespace.clone(),
                c.name.clone(),
                local.clone(),
            ));
            self.ports.insert(
                *port,
                Served {
                    service: (c.namespace.clone(), c.name.clone()),
                    local,
                    _task: AbortOnDrop(task),
                },
            );
        }
    }
}

async fn serve(listener: TcpListener, namespace: String, name: String, local: Arc<AtomicUsize>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let (namespace, name) = (Arc::new(namespace), Arc::new(name));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (namespace, name, local) = (namespace.clone(), name.clone(), local.clone());
        tokio::spawn(async move {
            let _permit = permit;
            let svc = hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                let (status, body) = answer(&namespace, &name, local.load(Ordering::Relaxed));
                let mut r = Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    hyper::header::CONTENT_TYPE,
                    hyper::header::HeaderValue::from_static("application/json"),
                );
                async move { Ok::<_, Infallible>(r) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            let _ = tokio::time::timeout(CONNECTION_TIMEOUT, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ok_only_with_local_endpoints() {
        let (s, b) = answer("ns", "web", 2);
        assert_eq!(s, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&b).unwrap();
        assert_eq!(v["localEndpoints"], 2);
        assert_eq!(v["service"]["name"], "web");
        assert_eq!(answer("ns", "web", 0).0, StatusCode::SERVICE_UNAVAILABLE);
    }

    #[tokio::test]
    async fn listeners_follow_the_wanted_ports() {
        // A free port: bind, note, release.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut hc = HealthChecks::default();
        let mut want = BTreeMap::new();
        want.insert(
            port,
            Check {
                namespace: "ns".into(),
                name: "web".into(),
                local_endpoints: 0,
            },
        );
        hc.sync(&want).await;
        let get = || async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        assert!(get().await.unwrap().starts_with("HTTP/1.1 503"));
        want.get_mut(&port).unwrap().local_endpoints = 1;
        hc.sync(&want).await;
        let got = get().await.unwrap();
        assert!(got.starts_with("HTTP/1.1 200"), "{got}");
        assert!(got.contains("\"localEndpoints\":1"), "{got}");
        hc.sync(&BTreeMap::new()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(get().await.is_err(), "the port is closed");
    }
}
