//! Cluster DNS inside the pod VM (kube-dns's role, per pod): answers from the Service table the
//! node agent pushed ([`crate::services`]), so a pod resolves exactly its own Network's names;
//! every other name goes to the pod's upstream resolvers.
//!
//! * `<svc>.<ns>.svc.<domain>` A: the ClusterIP; for a headless Service its ready endpoints;
//!   for an ExternalName Service a CNAME (not chased).
//! * `<a-b-c-d>.<svc>.<ns>.svc.<domain>` A: a ready endpoint of a headless Service.
//! * `_<port>._<proto>.<svc>.<ns>.svc.<domain>` SRV for named ports.
//! * `<a-b-c-d>.<ns>.pod.<domain>` A: a pod of this Network in that namespace (kube-dns's
//!   "pods verified" mode: unknown addresses are NXDOMAIN).
//! * Anything else under `<domain>`: NXDOMAIN (authoritative) — in particular every name of
//!   another Network, which this pod is never told about.
//! * Names outside `<domain>`: forwarded, or REFUSED when there is no upstream.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use h8s_guest::{PortProtocol, ServiceEntry, ServiceKind, ServiceName};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

/// TTL of every answer (CoreDNS's kubernetes plugin default).
pub const TTL: u32 = 5;

/// What DNS answers from.
#[derive(Debug, Default, Clone)]
pub struct Zone {
    /// The cluster domain without trailing dot, lower case (`cluster.local`).
    pub domain: String,
    /// Services of the pod's Network.
    pub services: BTreeMap<ServiceName, ServiceEntry>,
    /// Pods of the pod's Network: address → namespace.
    pub pods: BTreeMap<Ipv4Addr, String>,
}

/// What to do with a query.
#[derive(Debug)]
pub enum Answer {
    /// Send this.
    Reply(Box<Message>),
    /// Ask the upstream resolvers.
    Forward,
}

fn dashed(s: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() != 4 {
        return None;
    }
    parts.join(".").parse().ok()
}

fn reply(q: &Message, code: ResponseCode, authoritative: bool) -> Message {
    let mut r = Message::new(q.metadata.id, MessageType::Response, q.metadata.op_code);
    r.metadata.recursion_desired = q.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.authoritative = authoritative;
    r.metadata.response_code = code;
    r.add_queries(q.queries.iter().cloned());
    r
}

/// What a name under the domain is.
enum Found<'a> {
    Service(&'a ServiceEntry),
    Ip(Ipv4Addr),
    Srv(&'a ServiceEntry, Vec<(u16, Name)>),
}

/// Answers one query from `zone`; `upstream`: whether other names can be forwarded.
pub fn answer(zone: &Zone, q: &Message, upstream: bool) -> Answer {
    if q.metadata.message_type != MessageType::Query || q.metadata.op_code != OpCode::Query {
        return Answer::Reply(Box::new(reply(q, ResponseCode::NotImp, false)));
    }
    let [query] = q.queries.as_slice() else {
        return Answer::Reply(Box::new(reply(q, ResponseCode::FormErr, false)));
    };
    let qname = query.name().to_lowercase();
    let ascii = qname.to_ascii();
    let name = ascii.trim_end_matches('.');
    let domain = zone.domain.as_str();
    let rel = if name == domain {
        Some("")
    } else {
        name.strip_suffix(domain)
            .and_then(|p| p.strip_suffix('.'))
            .filter(|p| !p.is_empty())
    };
    let Some(rel) = rel else {
        return if upstream {
            Answer::Forward
        } else {
            Answer::Reply(Box::new(reply(q, ResponseCode::Refused, false)))
        };
    };
    if query.query_class() != DNSClass::IN {
        return Answer::Reply(Box::new(reply(q, ResponseCode::NXDomain, true)));
    }
    let labels: Vec<&str> = if rel.is_empty() {
        Vec::new()
    } else {
        rel.split('.').collect()
    };
    let svc = |ns: &str, name: &str| {
        zone.services.get(&ServiceName {
            namespace: ns.to_string(),
            name: name.to_string(),
        })
    };
    let found = match labels.as_slice() {
        [s, ns, "svc"] => svc(ns, s).map(Found::Service),
        [ep, s, ns, "svc"] => svc(ns, s)
            .filter(|e| e.kind == ServiceKind::Headless)
            .and_then(|e| dashed(ep).filter(|ip| e.endpoints.contains(ip)))
            .map(Found::Ip),
        [port, proto, s, ns, "svc"] => {
            let (Some(port), Some(proto)) = (port.strip_prefix('_'), proto.strip_prefix('_'))
            else {
                return Answer::Reply(Box::new(reply(q, ResponseCode::NXDomain, true)));
            };
            svc(ns, s).and_then(|e| srv(e, port, proto, ns, domain).map(|t| Found::Srv(e, t)))
        }
        [ip, ns, "pod"] => dashed(ip)
            .filter(|ip| zone.pods.get(ip).map(String::as_str) == Some(*ns))
            .map(Found::Ip),
        // The zone's own structure: names that exist but hold no records.
        [] | ["svc"] | ["pod"] => {
            return Answer::Reply(Box::new(reply(q, ResponseCode::NoError, true)));
        }
        _ => None,
    };
    let Some(found) = found else {
        return Answer::Reply(Box::new(reply(q, ResponseCode::NXDomain, true)));
    };
    let mut r = reply(q, ResponseCode::NoError, true);
    let qtype = query.query_type();
    let wants = |t: RecordType| qtype == t || qtype == RecordType::ANY;
    let owner = query.name().clone();
    match found {
        Found::Service(e) => match &e.kind {
            ServiceKind::ExternalName { name } => {
                if let Ok(target) = Name::from_ascii(format!("{}.", name.trim_end_matches('.'))) {
                    r.add_answer(Record::from_rdata(owner, TTL, RData::CNAME(CNAME(target))));
                }
            }
            ServiceKind::ClusterIp { ip } => {
                if wants(RecordType::A) {
                    r.add_answer(Record::from_rdata(owner, TTL, RData::A(A(*ip))));
                }
            }
            ServiceKind::Headless => {
                if wants(RecordType::A) {
                    for ip in &e.endpoints {
                        r.add_answer(Record::from_rdata(owner.clone(), TTL, RData::A(A(*ip))));
                    }
                }
            }
        },
        Found::Ip(ip) => {
            if wants(RecordType::A) {
                r.add_answer(Record::from_rdata(owner, TTL, RData::A(A(ip))));
            }
        }
        Found::Srv(e, targets) => {
            if wants(RecordType::SRV) {
                let weight = (100 / targets.len().max(1)) as u16;
                for (port, target) in &targets {
                    r.add_answer(Record::from_rdata(
                        owner.clone(),
                        TTL,
                        RData::SRV(SRV::new(0, weight, *port, target.clone())),
                    ));
                }
                // The targets' addresses, as kube-dns adds them.
                for (_, target) in &targets {
                    let ip = match &e.kind {
                        ServiceKind::ClusterIp { ip } => Some(*ip),
                        ServiceKind::Headless => target
                            .iter()
                            .next()
                            .and_then(|l| dashed(&String::from_utf8_lossy(l))),
                        ServiceKind::ExternalName { .. } => None,
                    };
                    if let Some(ip) = ip {
                        r.add_additional(Record::from_rdata(target.clone(), TTL, RData::A(A(ip))));
                    }
                }
            }
        }
    }
    Answer::Reply(Box::new(r))
}

/// SRV targets of the named port `port`/`proto` of `e`: the Service's own name and port, or
/// (headless) every ready endpoint with its port.
fn srv(
    e: &ServiceEntry,
    port: &str,
    proto: &str,
    ns: &str,
    domain: &str,
) -> Option<Vec<(u16, Name)>> {
    let want = match proto {
        "tcp" => PortProtocol::Tcp,
        "udp" => PortProtocol::Udp,
        "sctp" => PortProtocol::Sctp,
        _ => return None,
    };
    let p = e
        .ports
        .iter()
        .find(|p| !p.name.is_empty() && p.name.eq_ignore_ascii_case(port) && p.protocol == want)?;
    let base = format!("{}.{ns}.svc.{domain}.", e.key.name);
    let targets = match &e.kind {
        ServiceKind::ClusterIp { .. } => vec![(p.port, Name::from_ascii(&base).ok()?)],
        ServiceKind::Headless => p
            .backends
            .iter()
            .filter_map(|b| {
                let dashed = b.ip().to_string().replace('.', "-");
                Some((b.port(), Name::from_ascii(format!("{dashed}.{base}")).ok()?))
            })
            .collect(),
        ServiceKind::ExternalName { .. } => return None,
    };
    Some(targets)
}

/// Encodes `m` for UDP within `limit` bytes: truncated (TC set, answers dropped) if larger.
pub fn encode_udp(m: &Message, limit: usize) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    if bytes.len() <= limit {
        return Some(bytes);
    }
    m.truncate().to_vec().ok()
}

/// The largest UDP answer the client takes (EDNS payload size, else 512).
pub fn udp_limit(q: &Message) -> usize {
    q.edns
        .as_ref()
        .map(|e| e.max_payload() as usize)
        .unwrap_or(512)
        .clamp(512, 4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use h8s_guest::ServicePortEntry;
    use hickory_proto::op::Query;

    fn entry(ns: &str, name: &str, kind: ServiceKind) -> ServiceEntry {
        ServiceEntry {
            key: ServiceName {
                namespace: ns.into(),
                name: name.into(),
            },
            kind,
            affinity: false,
            ports: vec![ServicePortEntry {
                name: "http".into(),
                protocol: PortProtocol::Tcp,
                port: 80,
                backends: vec![
                    "192.168.0.5:8080".parse().unwrap(),
                    "192.168.0.6:8080".parse().unwrap(),
                ],
            }],
            endpoints: vec![
                "192.168.0.5".parse().unwrap(),
                "192.168.0.6".parse().unwrap(),
            ],
        }
    }

    fn zone() -> Zone {
        let mut z = Zone {
            domain: "cluster.local".into(),
            ..Zone::default()
        };
        for e in [
            entry(
                "a",
                "web",
                ServiceKind::ClusterIp {
                    ip: "10.96.0.10".parse().unwrap(),
                },
            ),
            entry("a", "db", ServiceKind::Headless),
            entry(
                "b",
                "ext",
                ServiceKind::ExternalName {
                    name: "example.com".into(),
                },
            ),
        ] {
            z.services.insert(e.key.clone(), e);
        }
        z.pods.insert("192.168.0.5".parse().unwrap(), "a".into());
        z
    }

    fn ask(z: &Zone, name: &str, t: RecordType, upstream: bool) -> Answer {
        let mut q = Message::new(7, MessageType::Query, OpCode::Query);
        q.metadata.recursion_desired = true;
        q.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
        // Round-trip through the wire format, as the server sees it.
        let q = Message::from_vec(&q.to_vec().unwrap()).unwrap();
        answer(z, &q, upstream)
    }

    fn reply_of(a: Answer) -> Message {
        match a {
            Answer::Reply(m) => Message::from_vec(&m.to_vec().unwrap()).unwrap(),
            Answer::Forward => panic!("forwarded"),
        }
    }

    fn a_records(m: &Message) -> Vec<String> {
        m.answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(a.0.to_string()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn service_names() {
        let z = zone();
        let m = reply_of(ask(&z, "web.a.svc.cluster.local.", RecordType::A, true));
        assert_eq!(m.metadata.id, 7);
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert_eq!(a_records(&m), ["10.96.0.10"]);
        // Case-insensitive.
        let m = reply_of(ask(&z, "WEB.A.svc.Cluster.Local.", RecordType::A, true));
        assert_eq!(a_records(&m), ["10.96.0.10"]);
        // AAAA of an existing name: no data, not NXDOMAIN.
        let m = reply_of(ask(&z, "web.a.svc.cluster.local.", RecordType::AAAA, true));
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.answers.is_empty());
        // Headless: the ready endpoints, and each endpoint by its dashed address.
        let m = reply_of(ask(&z, "db.a.svc.cluster.local.", RecordType::A, true));
        assert_eq!(a_records(&m), ["192.168.0.5", "192.168.0.6"]);
        let m = reply_of(ask(
            &z,
            "192-168-0-6.db.a.svc.cluster.local.",
            RecordType::A,
            true,
        ));
        assert_eq!(a_records(&m), ["192.168.0.6"]);
        let m = reply_of(ask(
            &z,
            "192-168-0-9.db.a.svc.cluster.local.",
            RecordType::A,
            true,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // ExternalName: a CNAME, whatever the type asked.
        let m = reply_of(ask(&z, "ext.b.svc.cluster.local.", RecordType::A, true));
        match &m.answers[0].data {
            RData::CNAME(c) => assert_eq!(c.0.to_ascii(), "example.com."),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn srv_and_pods() {
        let z = zone();
        let m = reply_of(ask(
            &z,
            "_http._tcp.web.a.svc.cluster.local.",
            RecordType::SRV,
            true,
        ));
        let srv: Vec<(u16, String)> = m
            .answers
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.port, s.target.to_ascii())),
                _ => None,
            })
            .collect();
        assert_eq!(srv, [(80, "web.a.svc.cluster.local.".to_string())]);
        assert_eq!(m.additionals.len(), 1);
        let m = reply_of(ask(
            &z,
            "_http._tcp.db.a.svc.cluster.local.",
            RecordType::SRV,
            true,
        ));
        assert_eq!(m.answers.len(), 2);
        let m = reply_of(ask(
            &z,
            "_http._udp.web.a.svc.cluster.local.",
            RecordType::SRV,
            true,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        let m = reply_of(ask(
            &z,
            "192-168-0-5.a.pod.cluster.local.",
            RecordType::A,
            true,
        ));
        assert_eq!(a_records(&m), ["192.168.0.5"]);
        // A pod of another namespace, or an address of no pod here: unknown.
        for n in [
            "192-168-0-5.b.pod.cluster.local.",
            "10-0-0-1.a.pod.cluster.local.",
        ] {
            let m = reply_of(ask(&z, n, RecordType::A, true));
            assert_eq!(m.metadata.response_code, ResponseCode::NXDomain, "{n}");
        }
    }

    #[test]
    fn other_networks_are_nxdomain_and_the_rest_is_forwarded_or_refused() {
        let z = zone();
        // A Service this pod was never told about (another Network's) does not exist.
        let m = reply_of(ask(&z, "web.other.svc.cluster.local.", RecordType::A, true));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        // A search-path expansion of an in-zone name.
        let m = reply_of(ask(
            &z,
            "web.a.svc.cluster.local.a.svc.cluster.local.",
            RecordType::A,
            true,
        ));
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(matches!(
            ask(&z, "example.com.", RecordType::A, true),
            Answer::Forward
        ));
        let m = reply_of(ask(&z, "example.com.", RecordType::A, false));
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        // A name merely ending like the domain is not in it.
        assert!(matches!(
            ask(&z, "xcluster.local.", RecordType::A, true),
            Answer::Forward
        ));
    }

    #[test]
    fn big_answers_are_truncated_for_udp() {
        let mut z = zone();
        let e = z
            .services
            .get_mut(&ServiceName {
                namespace: "a".into(),
                name: "db".into(),
            })
            .unwrap();
        e.endpoints = (1..=100).map(|i| Ipv4Addr::new(192, 168, 1, i)).collect();
        let m = reply_of(ask(&z, "db.a.svc.cluster.local.", RecordType::A, true));
        assert_eq!(m.answers.len(), 100);
        let b = encode_udp(&m, 512).unwrap();
        assert!(b.len() <= 512);
        let t = Message::from_vec(&b).unwrap();
        assert!(t.metadata.truncation);
    }
}
