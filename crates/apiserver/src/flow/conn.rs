//! Connections: a cap in all and per source IP (checked right after accept, before
//! TLS), and the serving of one connection with HTTP/2 stream and idle limits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;

use super::LimitsConfig;
use crate::auth::ConnInfo;
use crate::state::Api;

/// Counts open connections in all and per source IP.
pub(crate) struct ConnLimiter {
    max_total: usize,
    max_per_ip: usize,
    total: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    refused: AtomicU64,
    /// Seconds since `born` of the last "refused" log line (one a second at most).
    last_log: AtomicU64,
    born: Instant,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConnRefused {
    Total,
    PerIp,
}

/// An open connection's place, given back when dropped.
pub(crate) struct ConnPermit {
    limiter: Arc<ConnLimiter>,
    ip: IpAddr,
}

impl Drop for ConnPermit {
    fn drop(&mut self) {
        self.limiter.total.fetch_sub(1, Ordering::Relaxed);
        let mut m = self.limiter.lock();
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

impl ConnLimiter {
    /// 0 for either: no cap.
    pub(crate) fn new(max_total: usize, max_per_ip: usize) -> Arc<ConnLimiter> {
        Arc::new(ConnLimiter {
            max_total,
            max_per_ip,
            total: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            refused: AtomicU64::new(0),
            last_log: AtomicU64::new(u64::MAX),
            born: Instant::now(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        self.per_ip.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Open connections now.
    pub(crate) fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Connections refused so far.
    pub(crate) fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// A place for a new connection from `ip`, or why not.
    pub(crate) fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnPermit, ConnRefused> {
        let mut m = self.lock();
        if self.max_total > 0 && self.total.load(Ordering::Relaxed) >= self.max_total {
            drop(m);
            return Err(self.refuse(ip, ConnRefused::Total));
        }
        let n = m.entry(ip).or_insert(0);
        if self.max_per_ip > 0 && *n >= self.max_per_ip {
            drop(m);
            return Err(self.refuse(ip, ConnRefused::PerIp));
        }
        *n += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        Ok(ConnPermit {
            limiter: self.clone(),
            ip,
        })
    }

    /// Counts a refusal and logs it, one line a second at most (a client that opens
    /// connections in a loop must not flood the log).
    fn refuse(&self, ip: IpAddr, why: ConnRefused) -> ConnRefused {
        let n = self.refused.fetch_add(1, Ordering::Relaxed) + 1;
        let now = self.born.elapsed().as_secs();
        let last = self.last_log.load(Ordering::Relaxed);
        if (last == u64::MAX || now > last)
            && self
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let cap = match why {
                ConnRefused::Total => self.max_total,
                ConnRefused::PerIp => self.max_per_ip,
            };
            tracing::warn!(%ip, ?why, cap, refused_total = n, "connection refused: over the connection limit");
        }
        why
    }
}

/// What a connection is doing, for its idle timeout: requests (and streaming responses)
/// under way, and when the last one started or ended.
struct Activity {
    active: AtomicUsize,
    /// Milliseconds since `born`.
    last: AtomicU64,
    born: Instant,
}

impl Activity {
    fn touch(&self) {
        self.last
            .store(self.born.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

/// Marks a request of the connection under way until dropped.
struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.touch();
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A request's handle on its connection: a watch over HTTP/1.1 whose reader stopped
/// reading ends its connection with it (the response cannot end otherwise).
#[derive(Clone, Default)]
pub(crate) struct ConnKill(Arc<tokio::sync::Notify>);

impl ConnKill {
    pub(crate) fn kill(&self) {
        self.0.notify_one();
    }
}

/// Serves one TLS connection: HTTP/1.1 or HTTP/2, with kube-apiserver's limits (streams
/// per connection, header read timeout) and an idle timeout: a connection without a
/// request under way for `idle_timeout` is shut down gracefully.
pub(crate) async fn serve<IO>(
    api: Arc<Api>,
    conn: ConnInfo,
    peer: std::net::SocketAddr,
    io: IO,
    cfg: &LimitsConfig,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let kill = ConnKill::default();
    let killed = kill.clone();
    let activity = Arc::new(Activity {
        active: AtomicUsize::new(0),
        last: AtomicU64::new(0),
        born: Instant::now(),
    });
    let act = activity.clone();
    let svc = hyper::service::service_fn(move |mut req: http::Request<_>| {
        req.extensions_mut().insert(conn.clone());
        req.extensions_mut().insert(kill.clone());
        let api = api.clone();
        act.active.fetch_add(1, Ordering::Relaxed);
        act.touch();
        let busy = Busy(act.clone());
        async move {
            let resp = api.handle(req).await;
            // A streaming body (a watch) keeps the connection busy until it ends.
            Ok::<_, std::convert::Infallible>(if super::body::is_whole(resp.body()) {
                drop(busy);
                resp
            } else {
                super::body::holding(resp, busy)
            })
        }
    });
    let mut b = auto::Builder::new(TokioExecutor::new());
    // A client that never finishes its headers does not hold a connection forever; for
    // HTTP/1.1 the same timer bounds an idle keep-alive connection (hyper starts it when
    // it waits for the next request's head).
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(cfg.read_header_timeout);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.http2_streams())
        .keep_alive_interval(cfg.http2_keepalive)
        .keep_alive_timeout(cfg.http2_keepalive.unwrap_or(Duration::from_secs(20)));
    let served = b.serve_connection_with_upgrades(TokioIo::new(io), svc);
    tokio::pin!(served);
    let idle = cfg.idle_timeout;
    let mut shutting = false;
    loop {
        let check = tokio::time::sleep(if idle.is_zero() {
            Duration::from_secs(3600)
        } else {
            idle / 2
        });
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(%peer, error = %e, "connection ended");
                }
                return;
            }
            _ = killed.0.notified() => {
                tracing::debug!(%peer, "closing the connection of a watch too slow to read");
                return;
            }
            _ = check, if !shutting && !idle.is_zero() => {
                let now = activity.born.elapsed().as_millis() as u64;
                let last = activity.last.load(Ordering::Relaxed);
                if activity.active.load(Ordering::Relaxed) == 0
                    && now.saturating_sub(last) >= idle.as_millis() as u64
                {
                    tracing::debug!(%peer, "closing an idle connection");
                    served.as_mut().graceful_shutdown();
                    shutting = true;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_all_and_per_ip_and_gives_places_back() {
        let l = ConnLimiter::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let c: IpAddr = "10.0.0.3".parse().unwrap();
        let a1 = l.admit(a).unwrap();
        let _a2 = l.admit(a).unwrap();
        assert_eq!(l.admit(a).err(), Some(ConnRefused::PerIp));
        let _b1 = l.admit(b).unwrap();
        assert_eq!(l.admit(c).err(), Some(ConnRefused::Total));
        assert_eq!(l.open(), 3);
        assert_eq!(l.refused(), 2);
        drop(a1);
        assert_eq!(l.open(), 2);
        let _c1 = l.admit(c).unwrap();
        assert_eq!(l.admit(a).err(), Some(ConnRefused::Total));
        // Per-IP entries do not pile up: an IP with no connection is forgotten.
        drop(_c1);
        assert!(!l.lock().contains_key(&c));
        // No caps.
        let free = ConnLimiter::new(0, 0);
        let many: Vec<_> = (0..100).map(|_| free.admit(a).unwrap()).collect();
        assert_eq!(free.open(), 100);
        drop(many);
        assert_eq!(free.open(), 0);
    }
}
