//! The in-pod Service proxy and cluster DNS (Hypernetes's per-pod HAProxy "Service portal",
//! and kube-dns, for one pod).
//!
//! Layout: the agent makes a second network namespace, the *service namespace*, joined to the
//! pod's own by the veth pair `h8s-svc0` (pod side, [`HOST_ADDR`]/30) ↔ `h8s-svc1` (service
//! side, [`h8s_guest::CLUSTER_DNS_ADDR`]/30). Every ClusterIP is a /32 on the service
//! namespace's `lo` and an on-link /32 route through `h8s-svc0` in the pod's namespace. The
//! proxy's listeners (`ClusterIP:port`) and the DNS server are bound in the service namespace,
//! so they never collide with the pod's own sockets (a container listening on `0.0.0.0:80`
//! while the Network has a Service on port 80 is the normal case); connections to endpoints
//! are made from the pod's namespace, so they leave through `eth0` like any pod traffic.
//!
//! The proxy accepts `ClusterIP:port` (TCP), picks a ready backend (round robin, or the last
//! one used with `sessionAffinity: ClientIP` — every client of this proxy is this one pod),
//! tries the next one when a connect fails, and relays bytes both ways. At most
//! [`MAX_CONNS`] connections per Service port; more are refused at once.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use std::time::Duration;

use h8s_guest::{
    ClusterDns, ErrorCode, PortProtocol, ProtoError, ServiceEntry, ServiceKind, ServiceName,
    ServiceUpdate, CLUSTER_DNS_ADDR, SERVICES_VERSION,
};

use crate::dns::{self, Zone};
use crate::net::Netlink;

/// The pod-side address of the veth pair to the service namespace.
pub const HOST_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 53, 1);
const HOST_IF: &str = "h8s-svc0";
const PEER_IF: &str = "h8s-svc1";
/// Concurrent connections per Service port.
pub const MAX_CONNS: usize = 1024;
/// Concurrent forwarded DNS queries.
const MAX_FORWARDS: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

fn fail(what: &str, e: impl std::fmt::Display) -> ProtoError {
    ProtoError::new(ErrorCode::Internal, format!("{what}: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn log(msg: impl std::fmt::Display) {
    eprintln!("h8s-guest: services: {msg}");
}

/// A proxied `ClusterIP:port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenKey {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub udp: bool,
}

/// Where a listener sends connections.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Target {
    pub backends: Vec<SocketAddrV4>,
    pub affinity: bool,
}

/// What the proxy must listen on for `services` (pure): TCP and UDP ports of ClusterIP
/// Services (SCTP ports are not proxied).
pub fn desired(services: &BTreeMap<ServiceName, ServiceEntry>) -> BTreeMap<ListenKey, Target> {
    let mut out = BTreeMap::new();
    for e in services.values() {
        let ServiceKind::ClusterIp { ip } = e.kind else {
            continue;
        };
        for p in e.ports.iter().filter(|p| p.protocol != PortProtocol::Sctp) {
            out.insert(
                ListenKey {
                    ip,
                    port: p.port,
                    udp: p.protocol == PortProtocol::Udp,
                },
                Target {
                    backends: p.backends.clone(),
                    affinity: e.affinity,
                },
            );
        }
    }
    out
}

/// Applies `u` to a table (pure); `false` if `u` is older than what was applied.
pub fn apply(
    table: &mut BTreeMap<ServiceName, ServiceEntry>,
    pods: &mut BTreeMap<Ipv4Addr, String>,
    generation: &mut u64,
    u: &ServiceUpdate,
) -> bool {
    if u.generation < *generation {
        return false;
    }
    *generation = u.generation;
    if u.full {
        table.clear();
        pods.clear();
    }
    for k in &u.removed {
        table.remove(k);
    }
    for e in &u.services {
        table.insert(e.key.clone(), e.clone());
    }
    for ip in &u.removed_pods {
        pods.remove(ip);
    }
    for p in &u.pods {
        pods.insert(p.ip, p.namespace.clone());
    }
    true
}

struct Listener {
    /// The listening (TCP) or receiving (UDP) socket, kept open by its thread too.
    fd: Arc<dyn AsRawFd + Send + Sync>,
    stop: Arc<AtomicBool>,
    target: Arc<RwLock<Target>>,
}

impl Listener {
    fn close(&self) {
        self.stop.store(true, Ordering::SeqCst);
        // SAFETY: shutdown(2) on a descriptor `fd` keeps open; it wakes a blocked accept
        // (a UDP receiver also wakes on its read timeout).
        unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_RDWR) };
    }
}

struct Inner {
    generation: u64,
    services: BTreeMap<ServiceName, ServiceEntry>,
    pods: BTreeMap<Ipv4Addr, String>,
    listeners: BTreeMap<ListenKey, Listener>,
    ips: BTreeSet<Ipv4Addr>,
}

/// The service namespace, the proxy and the DNS zone.
pub struct Services {
    svc_ns: File,
    host_index: i32,
    inner: Mutex<Inner>,
    zone: Arc<RwLock<Zone>>,
    dns_started: AtomicBool,
}

static SERVICES: OnceLock<Result<Arc<Services>, String>> = OnceLock::new();

/// The service namespace, made on first use.
pub fn get() -> Result<Arc<Services>, ProtoError> {
    SERVICES
        .get_or_init(|| Services::new().map(Arc::new).map_err(|e| e.message))
        .clone()
        .map_err(|m| {
            ProtoError::new(
                ErrorCode::FailedPrecondition,
                format!("no in-pod Service proxy: {m}"),
            )
        })
}

/// Runs `f` on a thread inside `ns` (sockets it makes belong to `ns`).
fn in_ns<T: Send>(ns: &File, f: impl FnOnce() -> io::Result<T> + Send) -> io::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            crate::sys::setns(ns, libc::CLONE_NEWNET)?;
            f()
        })
        .join()
        .map_err(|_| io::Error::other("namespace thread panicked"))?
    })
}

fn ifindex(name: &str) -> io::Result<i32> {
    let c = crate::sys::cstr(name)?;
    // SAFETY: `c` is a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(i as i32)
}

impl Services {
    fn new() -> Result<Services, ProtoError> {
        // The new namespace: a thread unshares, and its namespace file is kept open.
        let svc_ns = std::thread::spawn(|| -> io::Result<File> {
            // SAFETY: unshare(2) with a flag only; affects this thread alone.
            crate::sys::check(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
            let f = File::open("/proc/thread-self/ns/net")?;
            Netlink::open()?.up(1)?;
            Ok(f)
        })
        .join()
        .map_err(|_| fail("service namespace", "thread panicked"))?
        .map_err(|e| fail("service namespace", e))?;
        let mut nl = Netlink::open().map_err(|e| fail("netlink", e))?;
        nl.create_veth(HOST_IF, PEER_IF, &svc_ns)
            .map_err(|e| fail("veth pair (is the veth module loaded?)", e))?;
        let host_index = ifindex(HOST_IF).map_err(|e| fail(HOST_IF, e))?;
        nl.address4(host_index, HOST_ADDR, 30, true)
            .map_err(|e| fail("veth address", e))?;
        nl.up(host_index).map_err(|e| fail("veth up", e))?;
        in_ns(&svc_ns, || {
            let mut nl = Netlink::open()?;
            let i = ifindex(PEER_IF)?;
            nl.address4(i, CLUSTER_DNS_ADDR, 30, true)?;
            nl.up(i)?;
            nl.default_route(i, &std::net::IpAddr::V4(HOST_ADDR))
        })
        .map_err(|e| fail("service namespace set-up", e))?;
        Ok(Services {
            svc_ns,
            host_index,
            inner: Mutex::new(Inner {
                generation: 0,
                services: BTreeMap::new(),
                pods: BTreeMap::new(),
                listeners: BTreeMap::new(),
                ips: BTreeSet::new(),
            }),
            zone: Arc::new(RwLock::new(Zone::default())),
            dns_started: AtomicBool::new(false),
        })
    }

    /// Starts the DNS server (once).
    pub fn start_dns(self: &Arc<Self>, cfg: &ClusterDns) -> Result<(), ProtoError> {
        self.zone.write().unwrap_or_else(|p| p.into_inner()).domain =
            cfg.domain.trim_end_matches('.').to_ascii_lowercase();
        if self.dns_started.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let upstream: Vec<SocketAddr> = cfg
            .upstream
            .iter()
            .filter_map(|s| s.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 53))
            .collect();
        let addr = SocketAddr::from((CLUSTER_DNS_ADDR, 53));
        let (udp, tcp) = in_ns(&self.svc_ns, || {
            Ok((UdpSocket::bind(addr)?, TcpListener::bind(addr)?))
        })
        .map_err(|e| fail("DNS server", e))?;
        let udp = Arc::new(udp);
        let upstream = Arc::new(upstream);
        let (zone, up) = (self.zone.clone(), upstream.clone());
        spawn("dns-udp", move || serve_udp(udp, zone, up));
        let zone = self.zone.clone();
        spawn("dns-tcp", move || serve_tcp(tcp, zone, upstream));
        Ok(())
    }

    /// Applies an update from the host.
    pub fn update(&self, u: &ServiceUpdate) -> Result<(), ProtoError> {
        if u.version != SERVICES_VERSION {
            return Err(ProtoError::new(
                ErrorCode::Unsupported,
                format!(
                    "service table version {} (this agent speaks {SERVICES_VERSION})",
                    u.version
                ),
            ));
        }
        let mut inner = lock(&self.inner);
        let st = &mut *inner;
        if !apply(&mut st.services, &mut st.pods, &mut st.generation, u) {
            return Ok(());
        }
        {
            let mut z = self.zone.write().unwrap_or_else(|p| p.into_inner());
            z.services = st.services.clone();
            z.pods = st.pods.clone();
        }
        let want = desired(&st.services);
        let ips: BTreeSet<Ipv4Addr> = want.keys().map(|k| k.ip).collect();
        // Close what is gone first (a port may move to another Service).
        let gone: Vec<ListenKey> = st
            .listeners
            .keys()
            .filter(|k| !want.contains_key(k))
            .copied()
            .collect();
        for k in gone {
            if let Some(l) = st.listeners.remove(&k) {
                l.close();
            }
        }
        let mut nl = Netlink::open().map_err(|e| fail("netlink", e))?;
        let new_ips: Vec<Ipv4Addr> = ips.difference(&st.ips).copied().collect();
        let old_ips: Vec<Ipv4Addr> = st.ips.difference(&ips).copied().collect();
        if !new_ips.is_empty() || !old_ips.is_empty() {
            in_ns(&self.svc_ns, || {
                let mut nl = Netlink::open()?;
                for ip in &new_ips {
                    nl.address4(1, *ip, 32, true)?;
                }
                for ip in &old_ips {
                    let _ = nl.address4(1, *ip, 32, false);
                }
                Ok(())
            })
            .map_err(|e| fail("ClusterIP addresses", e))?;
        }
        for ip in &new_ips {
            nl.host_route(self.host_index, *ip, true)
                .map_err(|e| fail("ClusterIP route", e))?;
        }
        for ip in &old_ips {
            let _ = nl.host_route(self.host_index, *ip, false);
        }
        st.ips = ips;
        let mut errors = Vec::new();
        for (k, t) in want {
            if let Some(l) = st.listeners.get(&k) {
                let mut cur = l.target.write().unwrap_or_else(|p| p.into_inner());
                if *cur != t {
                    *cur = t;
                }
                continue;
            }
            let addr = SocketAddr::from((k.ip, k.port));
            let (stop, target) = (Arc::new(AtomicBool::new(false)), Arc::new(RwLock::new(t)));
            let (s2, t2) = (stop.clone(), target.clone());
            let fd: io::Result<Arc<dyn AsRawFd + Send + Sync>> = if k.udp {
                in_ns(&self.svc_ns, || UdpSocket::bind(addr)).map(|sock| {
                    let sock = Arc::new(sock);
                    let s = sock.clone();
                    spawn("svc-udp", move || udp_loop(s, s2, t2));
                    sock as Arc<dyn AsRawFd + Send + Sync>
                })
            } else {
                in_ns(&self.svc_ns, || TcpListener::bind(addr)).map(|sock| {
                    let sock = Arc::new(sock);
                    let s = sock.clone();
                    spawn("svc-accept", move || accept_loop(s, s2, t2));
                    sock as Arc<dyn AsRawFd + Send + Sync>
                })
            };
            match fd {
                Ok(fd) => {
                    st.listeners.insert(k, Listener { fd, stop, target });
                }
                Err(e) => errors.push(format!("{addr}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(fail("listening", errors.join(", ")))
        }
    }
}

fn spawn(name: &str, f: impl FnOnce() + Send + 'static) {
    if let Err(e) = std::thread::Builder::new()
        .name(name.into())
        .stack_size(128 * 1024)
        .spawn(f)
    {
        log(format!("cannot start a thread: {e}"));
    }
}

fn accept_loop(sock: Arc<TcpListener>, stop: Arc<AtomicBool>, target: Arc<RwLock<Target>>) {
    let active = Arc::new(AtomicUsize::new(0));
    let next = Arc::new(AtomicUsize::new(0));
    let sticky: Arc<Mutex<Option<SocketAddrV4>>> = Arc::new(Mutex::new(None));
    loop {
        let client = match sock.accept() {
            Ok((c, _)) => c,
            Err(_) if stop.load(Ordering::SeqCst) => return,
            Err(e) => {
                log(format!("accept: {e}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if stop.load(Ordering::SeqCst) {
            return;
        }
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue; // dropped: the client sees the connection closed
        }
        let (active, next, sticky, target) =
            (active.clone(), next.clone(), sticky.clone(), target.clone());
        spawn("svc-conn", move || {
            let t = target.read().unwrap_or_else(|p| p.into_inner()).clone();
            if let Some(up) = connect(&t, &next, &sticky) {
                relay(client, up);
            } else {
                // No ready backend: reset, as a refused connection would.
                let _ = set_linger_zero(&client);
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

/// How long a UDP flow (client address → backend) lives without traffic.
const UDP_IDLE: Duration = Duration::from_secs(30);

/// Relays datagrams: each client address gets a connected socket to one backend (chosen as
/// for TCP) and a thread returning the backend's answers, until [`UDP_IDLE`] passes.
fn udp_loop(sock: Arc<UdpSocket>, stop: Arc<AtomicBool>, target: Arc<RwLock<Target>>) {
    let _ = sock.set_read_timeout(Some(Duration::from_secs(1)));
    let flows: Arc<Mutex<BTreeMap<SocketAddr, Arc<UdpSocket>>>> = Arc::default();
    let next = AtomicUsize::new(0);
    let sticky: Mutex<Option<SocketAddrV4>> = Mutex::new(None);
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let (n, client) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(_) => continue, // timeout (or shut down: the loop condition ends it)
        };
        let existing = lock(&flows).get(&client).cloned();
        let up = match existing {
            Some(u) => u,
            None => {
                if lock(&flows).len() >= MAX_CONNS {
                    continue;
                }
                let t = target.read().unwrap_or_else(|p| p.into_inner()).clone();
                let start = next.fetch_add(1, Ordering::Relaxed);
                let s = *lock(&sticky);
                let Some(b) = order(&t, start, s).into_iter().next() else {
                    continue; // no ready backend: dropped
                };
                if t.affinity {
                    *lock(&sticky) = Some(b);
                }
                let Ok(u) = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))) else {
                    continue;
                };
                if u.connect(SocketAddr::V4(b)).is_err() {
                    continue;
                }
                let _ = u.set_read_timeout(Some(UDP_IDLE));
                let u = Arc::new(u);
                lock(&flows).insert(client, u.clone());
                let (u2, sock2, flows2, stop2) =
                    (u.clone(), sock.clone(), flows.clone(), stop.clone());
                spawn("svc-udp-flow", move || {
                    let mut buf = vec![0u8; 65536];
                    while let Ok(n) = u2.recv(&mut buf) {
                        if stop2.load(Ordering::SeqCst) || sock2.send_to(&buf[..n], client).is_err()
                        {
                            break;
                        }
                    }
                    lock(&flows2).remove(&client);
                });
                u
            }
        };
        let _ = up.send(&buf[..n]);
    }
}

/// The order backends are tried in (pure): the sticky one first with affinity, else round
/// robin from `start`.
pub fn order(t: &Target, start: usize, sticky: Option<SocketAddrV4>) -> Vec<SocketAddrV4> {
    let n = t.backends.len();
    let mut out: Vec<SocketAddrV4> = (0..n).map(|i| t.backends[(start + i) % n]).collect();
    if let Some(s) = sticky.filter(|s| t.affinity && t.backends.contains(s)) {
        out.retain(|b| *b != s);
        out.insert(0, s);
    }
    out
}

fn connect(
    t: &Target,
    next: &AtomicUsize,
    sticky: &Mutex<Option<SocketAddrV4>>,
) -> Option<TcpStream> {
    let start = next.fetch_add(1, Ordering::Relaxed);
    let s = *lock(sticky);
    for b in order(t, start, s) {
        match TcpStream::connect_timeout(&SocketAddr::V4(b), CONNECT_TIMEOUT) {
            Ok(c) => {
                if t.affinity {
                    *lock(sticky) = Some(b);
                }
                return Some(c);
            }
            Err(e) => log(format!("backend {b}: {e}")),
        }
    }
    None
}

fn set_linger_zero(s: &TcpStream) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt reads `size_of::<linger>()` bytes from a valid struct.
    crate::sys::check(unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    })
    .map(drop)
}

fn relay(client: TcpStream, up: TcpStream) {
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (Ok(c2), Ok(u2)) = (client.try_clone(), up.try_clone()) else {
        return;
    };
    let h = std::thread::Builder::new()
        .name("svc-up".into())
        .stack_size(128 * 1024)
        .spawn(move || pipe(c2, u2));
    pipe(up, client);
    if let Ok(h) = h {
        let _ = h.join();
    }
}

/// Copies `from` → `to` until EOF, then half-closes `to`.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    let _ = from.shutdown(Shutdown::Read);
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn zone_answer(zone: &RwLock<Zone>, q: &hickory_proto::op::Message, upstream: bool) -> dns::Answer {
    let z = zone.read().unwrap_or_else(|p| p.into_inner());
    dns::answer(&z, q, upstream)
}

/// Asks the upstream resolvers (from the pod's namespace); the raw answer.
fn forward(query: &[u8], upstream: &[SocketAddr]) -> Option<Vec<u8>> {
    let id = query.get(..2)?;
    for u in upstream {
        let Ok(s) = UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 0))) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(UPSTREAM_TIMEOUT));
        if s.connect(u).is_err() || s.send(query).is_err() {
            continue;
        }
        let mut buf = vec![0u8; 4096];
        while let Ok(n) = s.recv(&mut buf) {
            if n >= 2 && &buf[..2] == id {
                buf.truncate(n);
                return Some(buf);
            }
        }
    }
    None
}

fn servfail(q: &hickory_proto::op::Message) -> Option<Vec<u8>> {
    let mut r = hickory_proto::op::Message::error_msg(
        q.metadata.id,
        q.metadata.op_code,
        hickory_proto::op::ResponseCode::ServFail,
    );
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.add_queries(q.queries.iter().cloned());
    r.to_vec().ok()
}

fn serve_udp(sock: Arc<UdpSocket>, zone: Arc<RwLock<Zone>>, upstream: Arc<Vec<SocketAddr>>) {
    let forwards = Arc::new(AtomicUsize::new(0));
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf) {
            Ok(x) => x,
            Err(e) => {
                log(format!("DNS receive: {e}"));
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let raw = buf[..n].to_vec();
        let Ok(q) = hickory_proto::op::Message::from_vec(&raw) else {
            continue;
        };
        match zone_answer(&zone, &q, !upstream.is_empty()) {
            dns::Answer::Reply(m) => {
                if let Some(b) = dns::encode_udp(&m, dns::udp_limit(&q)) {
                    let _ = sock.send_to(&b, peer);
                }
            }
            dns::Answer::Forward => {
                if forwards.fetch_add(1, Ordering::SeqCst) >= MAX_FORWARDS {
                    forwards.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let (sock, upstream, forwards) = (sock.clone(), upstream.clone(), forwards.clone());
                spawn("dns-forward", move || {
                    if let Some(b) = forward(&raw, &upstream).or_else(|| servfail(&q)) {
                        let _ = sock.send_to(&b, peer);
                    }
                    forwards.fetch_sub(1, Ordering::SeqCst);
                });
            }
        }
    }
}

fn serve_tcp(sock: TcpListener, zone: Arc<RwLock<Zone>>, upstream: Arc<Vec<SocketAddr>>) {
    let active = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut c, _)) = sock.accept() else {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        };
        if active.fetch_add(1, Ordering::SeqCst) >= MAX_FORWARDS {
            active.fetch_sub(1, Ordering::SeqCst);
            continue;
        }
        let (zone, upstream, active) = (zone.clone(), upstream.clone(), active.clone());
        spawn("dns-tcp-conn", move || {
            let _ = c.set_read_timeout(Some(Duration::from_secs(10)));
            loop {
                let mut len = [0u8; 2];
                if c.read_exact(&mut len).is_err() {
                    break;
                }
                let mut raw = vec![0u8; u16::from_be_bytes(len) as usize];
                if c.read_exact(&mut raw).is_err() {
                    break;
                }
                let Ok(q) = hickory_proto::op::Message::from_vec(&raw) else {
                    break;
                };
                let out = match zone_answer(&zone, &q, !upstream.is_empty()) {
                    dns::Answer::Reply(m) => m.to_vec().ok(),
                    dns::Answer::Forward => forward(&raw, &upstream).or_else(|| servfail(&q)),
                };
                let Some(out) = out else { break };
                let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                if c.write_all(&framed).is_err() {
                    break;
                }
            }
            active.fetch_sub(1, Ordering::SeqCst);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use h8s_guest::{PodRecord, ServicePortEntry};

    fn svc(name: &str, ip: &str, ports: &[(u16, PortProtocol, &[&str])]) -> ServiceEntry {
        ServiceEntry {
            key: ServiceName {
                namespace: "a".into(),
                name: name.into(),
            },
            kind: ServiceKind::ClusterIp {
                ip: ip.parse().unwrap(),
            },
            affinity: false,
            ports: ports
                .iter()
                .map(|(port, protocol, b)| ServicePortEntry {
                    name: String::new(),
                    protocol: *protocol,
                    port: *port,
                    backends: b.iter().map(|s| s.parse().unwrap()).collect(),
                })
                .collect(),
            endpoints: vec![],
        }
    }

    #[test]
    fn updates_apply_in_order_and_full_replaces() {
        let (mut t, mut p, mut g) = (BTreeMap::new(), BTreeMap::new(), 0);
        let a = svc(
            "a",
            "10.96.0.1",
            &[(80, PortProtocol::Tcp, &["192.168.0.2:80"])],
        );
        let b = svc("b", "10.96.0.2", &[]);
        let u = ServiceUpdate {
            version: SERVICES_VERSION,
            generation: 1,
            full: true,
            services: vec![a.clone(), b.clone()],
            pods: vec![PodRecord {
                ip: "192.168.0.2".parse().unwrap(),
                namespace: "a".into(),
            }],
            ..ServiceUpdate::default()
        };
        assert!(apply(&mut t, &mut p, &mut g, &u));
        assert_eq!(t.len(), 2);
        assert_eq!(p.len(), 1);
        let u2 = ServiceUpdate {
            version: SERVICES_VERSION,
            generation: 2,
            removed: vec![b.key.clone()],
            removed_pods: vec!["192.168.0.2".parse().unwrap()],
            ..ServiceUpdate::default()
        };
        assert!(apply(&mut t, &mut p, &mut g, &u2));
        assert_eq!(t.keys().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["a"]);
        assert!(p.is_empty());
        // A late, older update changes nothing.
        assert!(!apply(&mut t, &mut p, &mut g, &u));
        assert_eq!(t.len(), 1);
        // A full update drops what it does not name.
        let u3 = ServiceUpdate {
            version: SERVICES_VERSION,
            generation: 3,
            full: true,
            services: vec![b.clone()],
            ..ServiceUpdate::default()
        };
        assert!(apply(&mut t, &mut p, &mut g, &u3));
        assert_eq!(t.keys().map(|k| k.name.as_str()).collect::<Vec<_>>(), ["b"]);
    }

    #[test]
    fn listeners_for_tcp_and_udp_ports_of_cluster_ips_only() {
        let mut t = BTreeMap::new();
        for e in [
            svc(
                "multi",
                "10.96.0.1",
                &[
                    (80, PortProtocol::Tcp, &["192.168.0.2:8080"]),
                    (443, PortProtocol::Tcp, &["192.168.0.2:8443"]),
                    (53, PortProtocol::Udp, &["192.168.0.2:53"]),
                ],
            ),
            ServiceEntry {
                kind: ServiceKind::Headless,
                ..svc("h", "10.96.0.2", &[(80, PortProtocol::Tcp, &[])])
            },
        ] {
            t.insert(e.key.clone(), e);
        }
        let d = desired(&t);
        let keys: Vec<(String, u16, bool)> = d
            .keys()
            .map(|k| (k.ip.to_string(), k.port, k.udp))
            .collect();
        assert_eq!(
            keys,
            [
                ("10.96.0.1".to_string(), 53, true),
                ("10.96.0.1".to_string(), 80, false),
                ("10.96.0.1".to_string(), 443, false)
            ]
        );
        assert_eq!(
            d[&ListenKey {
                ip: "10.96.0.1".parse().unwrap(),
                port: 443,
                udp: false,
            }]
                .backends,
            ["192.168.0.2:8443".parse::<SocketAddrV4>().unwrap()]
        );
    }

    fn target(backends: &[SocketAddr]) -> Arc<RwLock<Target>> {
        Arc::new(RwLock::new(Target {
            backends: backends
                .iter()
                .filter_map(|a| match a {
                    SocketAddr::V4(v) => Some(*v),
                    SocketAddr::V6(_) => None,
                })
                .collect(),
            affinity: false,
        }))
    }

    // The relays on loopback (no namespaces needed): what the guest runs between its
    // service namespace and the pod's.
    #[test]
    fn tcp_relay_round_robins_skips_dead_backends_and_closes() {
        let mut addrs = Vec::new();
        for name in ["one", "two"] {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            addrs.push(l.local_addr().unwrap());
            std::thread::spawn(move || {
                for mut c in l.incoming().flatten() {
                    let mut req = [0u8; 4];
                    let _ = c.read_exact(&mut req);
                    let answer = format!("{name}:{}", String::from_utf8_lossy(&req));
                    let _ = c.write_all(answer.as_bytes());
                }
            });
        }
        let front = Arc::new(TcpListener::bind("127.0.0.1:0").unwrap());
        let at = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let t = target(&addrs);
        let (f, s, tt) = (front.clone(), stop.clone(), t.clone());
        std::thread::spawn(move || accept_loop(f, s, tt));
        let get = || -> io::Result<String> {
            let mut c = TcpStream::connect(at)?;
            c.write_all(b"ping")?;
            let mut out = String::new();
            c.read_to_string(&mut out)?;
            Ok(out)
        };
        let got: BTreeSet<String> = (0..4).map(|_| get().unwrap()).collect();
        assert_eq!(
            got,
            BTreeSet::from(["one:ping".to_string(), "two:ping".to_string()])
        );
        // A backend that refuses is skipped.
        let dead = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let new = target(&[dead, addrs[1]]).read().unwrap().clone();
        *t.write().unwrap() = new;
        for _ in 0..3 {
            assert_eq!(get().unwrap(), "two:ping");
        }
        // No backend: the connection is reset, nothing answered.
        *t.write().unwrap() = Target::default();
        assert!(get().map(|s| s.is_empty()).unwrap_or(true));
        // Closed: nothing accepts any more.
        Listener {
            fd: front.clone(),
            stop,
            target: t,
        }
        .close();
        std::thread::sleep(Duration::from_millis(200));
        assert!(get().map(|s| s.is_empty()).unwrap_or(true));
    }

    #[test]
    fn udp_relay_keeps_a_flow_per_client() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        let echo_at = echo.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            while let Ok((n, from)) = echo.recv_from(&mut buf) {
                let mut r = b"echo:".to_vec();
                r.extend_from_slice(&buf[..n]);
                let _ = echo.send_to(&r, from);
            }
        });
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").unwrap());
        let at = front.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (f, s, t) = (front.clone(), stop.clone(), target(&[echo_at]));
        std::thread::spawn(move || udp_loop(f, s, t));
        for client in 0..2 {
            let c = UdpSocket::bind("127.0.0.1:0").unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            for i in 0..3 {
                let msg = format!("c{client}-{i}");
                c.send_to(msg.as_bytes(), at).unwrap();
                let mut buf = [0u8; 512];
                let (n, from) = c.recv_from(&mut buf).unwrap();
                assert_eq!(from, at, "answers come from the Service address");
                assert_eq!(&buf[..n], format!("echo:{msg}").as_bytes());
            }
        }
        stop.store(true, Ordering::SeqCst);
    }

    #[test]
    fn round_robin_and_affinity() {
        let b: Vec<SocketAddrV4> = ["10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        let mut t = Target {
            backends: b.clone(),
            affinity: false,
        };
        assert_eq!(order(&t, 0, None)[0], b[0]);
        assert_eq!(order(&t, 1, None), [b[1], b[2], b[0]]);
        assert_eq!(
            order(&t, 5, Some(b[0]))[0],
            b[2],
            "no affinity: sticky ignored"
        );
        t.affinity = true;
        assert_eq!(order(&t, 5, Some(b[0])), [b[0], b[2], b[1]]);
        // A sticky backend that is no longer ready is not used.
        let gone: SocketAddrV4 = "10.0.0.9:80".parse().unwrap();
        assert_eq!(order(&t, 1, Some(gone))[0], b[1]);
        assert!(order(&Target::default(), 3, None).is_empty());
    }
}
