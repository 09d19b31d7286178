//! The node-level Network store and IPAM: one JSON file per Network under a directory, every
//! read-modify-write under an exclusive `flock` on `<dir>/lock` (so several processes can allocate
//! at once), every write atomic (temp file, fsync, rename, fsync of the directory).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{next, valid_label, valid_pod, Attachment, MacAddr, Network, PortKind};

/// A Network and everything allocated on it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkRecord {
    network: Network,
    /// Attachments by pod name.
    #[serde(default)]
    attachments: BTreeMap<String, Attachment>,
    /// Per subnet: offset of the last address handed out. Allocation continues after it, so a
    /// released address is the last to be reused (stale ARP caches and connections die first).
    #[serde(default)]
    cursors: Vec<u32>,
}

/// Per-node bookkeeping: which uplink (transit /31) index each Network uses on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NodeRecord {
    #[serde(default)]
    pub transit: BTreeMap<String, u32>,
}

/// What [`NetworkStore::allocate`] needs to know about the port besides the Network.
#[derive(Debug, Clone)]
pub(crate) struct PortRequest<'a> {
    pub pod: &'a str,
    pub node: &'a str,
    pub node_ip: Ipv4Addr,
    pub kind: PortKind,
    /// The address, when the cluster's IPAM (the API) chose it; `None` allocates here.
    pub ip: Option<Ipv4Addr>,
}

/// The store of Networks and their address allocations in a directory.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    dir: PathBuf,
}

/// An exclusive lock on the whole store, released on drop.
pub(crate) struct Locked<'a> {
    store: &'a NetworkStore,
    _lock: Flock<File>,
}

impl NetworkStore {
    /// Opens (creating if needed) a store in `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<NetworkStore> {
        let dir = dir.into();
        for d in [dir.clone(), dir.join("networks"), dir.join("nodes")] {
            fs::create_dir_all(&d).map_err(|e| Error::State {
                path: d.clone(),
                source: e,
            })?;
        }
        // Tenants' subnets, pod addresses and MACs: readable by root only.
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).map_err(|e| {
                Error::State {
                    path: dir.clone(),
                    source: e,
                }
            })?;
        }
        Ok(NetworkStore { dir })
    }

    /// The store's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn lock(&self) -> Result<Locked<'_>> {
        Ok(Locked {
            store: self,
            _lock: flock(&self.dir.join("lock"))?,
        })
    }

    /// A node's datapath lock: held while a node's rules and forwarding entries are rebuilt
    /// from the store, so two processes never install a stale view over a newer one.
    pub(crate) fn node_lock(&self, node: &str) -> Result<Flock<File>> {
        flock(&self.dir.join("nodes").join(format!("{node}.lock")))
    }
}

fn flock(path: &Path) -> Result<Flock<File>> {
    let f = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| Error::State {
            path: path.into(),
            source: e,
        })?;
    Flock::lock(f, FlockArg::LockExclusive).map_err(|(_, e)| Error::State {
        path: path.into(),
        source: e.into(),
    })
}

impl NetworkStore {
    fn net_path(&self, name: &str) -> PathBuf {
        self.dir.join("networks").join(format!("{name}.json"))
    }

    pub(crate) fn node_path(&self, node: &str) -> PathBuf {
        self.dir.join("nodes").join(format!("{node}.json"))
    }

    /// Adds a Network. Its name and VNI must be new, and it must validate.
    pub fn create(&self, network: &Network) -> Result<()> {
        network.validate()?;
        let l = self.lock()?;
        if l.store.net_path(&network.name).exists() {
            return Err(Error::Exists {
                kind: "network",
                name: network.name.clone(),
            });
        }
        if let Some(o) = l
            .records()?
            .into_iter()
            .find(|r| r.network.vni == network.vni)
        {
            return Err(Error::Exists {
                kind: "vni",
                name: format!("{} (used by {})", network.vni, o.network.name),
            });
        }
        let rec = NetworkRecord {
            network: network.clone(),
            attachments: BTreeMap::new(),
            cursors: vec![0; network.subnets.len()],
        };
        write_json(&l.store.net_path(&network.name), &rec)
    }

    /// The smallest VNI not used by any Network, from 100 up.
    pub fn free_vni(&self) -> Result<u32> {
        let l = self.lock()?;
        let used: Vec<u32> = l.records()?.iter().map(|r| r.network.vni).collect();
        (100..=crate::model::MAX_VNI)
            .find(|v| !used.contains(v))
            .ok_or_else(|| Error::invalid("vni", "every VNI is in use"))
    }

    /// One Network.
    pub fn get(&self, name: &str) -> Result<Network> {
        valid_label("network name", name)?;
        let l = self.lock()?;
        Ok(l.record(name)?.network)
    }

    /// All Networks, by name.
    pub fn list(&self) -> Result<Vec<Network>> {
        let l = self.lock()?;
        Ok(l.records()?.into_iter().map(|r| r.network).collect())
    }

    /// Attachments on a Network (every node's), by pod name.
    pub fn attachments(&self, network: &str) -> Result<Vec<Attachment>> {
        valid_label("network name", network)?;
        let l = self.lock()?;
        Ok(l.record(network)?.attachments.into_values().collect())
    }

    /// The attachment of `pod` to `network`, if any.
    pub fn attachment(&self, network: &str, pod: &str) -> Result<Option<Attachment>> {
        valid_label("network name", network)?;
        let l = self.lock()?;
        Ok(l.record(network)?.attachments.get(pod).cloned())
    }

    /// Creates `network`, or updates the stored one to it (the node's cache of the API's
    /// Network). Its VNI must not be another Network's; a changed VNI or subnets are refused
    /// while pods of this store are attached (they would be stranded).
    pub fn put(&self, network: &Network) -> Result<()> {
        network.validate()?;
        let l = self.lock()?;
        if let Some(o) = l
            .records()?
            .into_iter()
            .find(|r| r.network.vni == network.vni && r.network.name != network.name)
        {
            return Err(Error::Exists {
                kind: "vni",
                name: format!("{} (used by {})", network.vni, o.network.name),
            });
        }
        let path = l.store.net_path(&network.name);
        let rec = match read_json::<NetworkRecord>(&path)? {
            None => NetworkRecord {
                network: network.clone(),
                attachments: BTreeMap::new(),
                cursors: vec![0; network.subnets.len()],
            },
            Some(r) if r.network == *network => return Ok(()),
            Some(mut r) => {
                let moved = r.network.vni != network.vni || r.network.subnets != network.subnets;
                if moved && !r.attachments.is_empty() {
                    return Err(Error::InUse {
                        network: network.name.clone(),
                        pods: r.attachments.len(),
                    });
                }
                r.network = network.clone();
                r.cursors.resize(network.subnets.len(), 0);
                r
            }
        };
        write_json(&path, &rec)
    }

    /// Replaces the attachments of `network` that are not on node `local` with `remote`
    /// (pods on other nodes, as the API lists them: what the VXLAN forwarding entries are
    /// made from). True when anything changed.
    pub fn set_remote(&self, network: &str, local: &str, remote: Vec<Attachment>) -> Result<bool> {
        valid_label("network name", network)?;
        let l = self.lock()?;
        let mut rec = l.record(network)?;
        let before = rec.attachments.clone();
        rec.attachments.retain(|_, a| a.node == local);
        for a in remote {
            if a.node != local && !rec.attachments.contains_key(&a.pod) {
                rec.attachments.insert(a.pod.clone(), a);
            }
        }
        if rec.attachments == before {
            return Ok(false);
        }
        write_json(&l.store.net_path(network), &rec)?;
        Ok(true)
    }

    /// Removes a Network that has no attachments left.
    pub fn remove(&self, name: &str) -> Result<Network> {
        valid_label("network name", name)?;
        let l = self.lock()?;
        let rec = l.record(name)?;
        if !rec.attachments.is_empty() {
            return Err(Error::InUse {
                network: name.into(),
                pods: rec.attachments.len(),
            });
        }
        let p = l.store.net_path(name);
        fs::remove_file(&p).map_err(|e| Error::State { path: p, source: e })?;
        sync_dir(&l.store.dir.join("networks"))?;
        Ok(rec.network)
    }

    /// Allocates an address for `req.pod` on `network` and records the attachment. A pod already
    /// attached to this Network is an error (one interface per pod and Network).
    pub(crate) fn allocate(&self, network: &str, req: &PortRequest<'_>) -> Result<Attachment> {
        valid_label("network name", network)?;
        valid_pod(req.pod)?;
        let l = self.lock()?;
        let mut rec = l.record(network)?;
        if rec.attachments.contains_key(req.pod) {
            return Err(Error::Exists {
                kind: "attachment",
                name: format!("{}/{}", network, req.pod),
            });
        }
        let used: std::collections::HashSet<Ipv4Addr> =
            rec.attachments.values().map(|a| a.ip).collect();
        rec.cursors.resize(rec.network.subnets.len(), 0);
        let mut found = None;
        if let Some(ip) = req.ip {
            let s = rec.network.subnet_of(ip).ok_or_else(|| {
                Error::invalid("address", format!("{ip} is in no subnet of {network}"))
            })?;
            if ip == s.gateway || ip == s.cidr.network() || ip == s.cidr.broadcast() {
                return Err(Error::invalid(
                    "address",
                    format!("{ip} is not a pod address of {}", s.cidr),
                ));
            }
            if let Some(o) = rec.attachments.values().find(|a| a.ip == ip) {
                return Err(Error::Exists {
                    kind: "address",
                    name: format!("{ip} (held by {})", o.pod),
                });
            }
            let i = rec
                .network
                .subnets
                .iter()
                .position(|x| x.cidr == s.cidr)
                .unwrap_or(0);
            let off = u32::from(ip) - u32::from(s.cidr.network());
            found = Some((i, off, ip, s.cidr.prefix_len(), s.gateway));
        }
        'subnets: for (i, s) in rec.network.subnets.iter().enumerate() {
            // Offsets 1 ..= size-2 are hosts; the gateway is skipped below.
            let size = 1u32 << (32 - s.cidr.prefix_len());
            let hosts = size - 2;
            let start = rec.cursors[i];
            if found.is_some() {
                break;
            }
            for k in 1..=hosts {
                let off = (start + k - 1) % hosts + 1;
                let ip = next(s.cidr.network(), off);
                if ip != s.gateway && !used.contains(&ip) {
                    found = Some((i, off, ip, s.cidr.prefix_len(), s.gateway));
                    break 'subnets;
                }
            }
        }
        let Some((i, off, ip, prefix_len, gateway)) = found else {
            return Err(Error::Exhausted {
                network: network.into(),
                used: used.len(),
                subnets: rec
                    .network
                    .subnets
                    .iter()
                    .map(|s| s.cidr.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        rec.cursors[i] = off;
        let att = Attachment {
            pod: req.pod.into(),
            network: network.into(),
            node: req.node.into(),
            node_ip: req.node_ip,
            ip,
            prefix_len,
            gateway,
            mac: MacAddr::for_ip(ip),
            mtu: rec.network.mtu,
            dns: rec.network.dns_servers(),
            port: crate::model::port_names(req.kind, network, req.pod).0,
            kind: req.kind,
        };
        rec.attachments.insert(req.pod.into(), att.clone());
        write_json(&l.store.net_path(network), &rec)?;
        tracing::debug!(network, pod = req.pod, %ip, "allocated");
        Ok(att)
    }

    /// Releases the address of `pod` on `network`; returns the attachment it had.
    pub(crate) fn release(&self, network: &str, pod: &str) -> Result<Attachment> {
        valid_label("network name", network)?;
        let l = self.lock()?;
        let mut rec = l.record(network)?;
        let att = rec.attachments.remove(pod).ok_or_else(|| Error::NotFound {
            kind: "attachment",
            name: format!("{network}/{pod}"),
        })?;
        write_json(&l.store.net_path(network), &rec)?;
        Ok(att)
    }

    /// Releases the attachments of `pods` on `network` that exist, with one write (many pods
    /// leaving at once); the others are skipped.
    pub(crate) fn release_all(&self, network: &str, pods: &[&str]) -> Result<()> {
        valid_label("network name", network)?;
        let l = self.lock()?;
        let mut rec = l.record(network)?;
        let before = rec.attachments.len();
        for p in pods {
            rec.attachments.remove(*p);
        }
        if rec.attachments.len() != before {
            write_json(&l.store.net_path(network), &rec)?;
        }
        Ok(())
    }

    /// Runs `f` on a node's record under the lock and saves it.
    pub(crate) fn update_node<R>(
        &self,
        node: &str,
        f: impl FnOnce(&mut NodeRecord) -> Result<R>,
    ) -> Result<R> {
        let _l = self.lock()?;
        let p = self.node_path(node);
        let before: NodeRecord = read_json(&p)?.unwrap_or_default();
        let mut rec = before.clone();
        let r = f(&mut rec)?;
        if rec != before {
            write_json(&p, &rec)?;
        }
        Ok(r)
    }
}

impl Locked<'_> {
    fn record(&self, name: &str) -> Result<NetworkRecord> {
        let rec: NetworkRecord =
            read_json(&self.store.net_path(name))?.ok_or_else(|| Error::NotFound {
                kind: "network",
                name: name.into(),
            })?;
        // A hand-edited file must not reach the datapath unchecked.
        rec.network.validate()?;
        Ok(rec)
    }

    fn records(&self) -> Result<Vec<NetworkRecord>> {
        let d = self.store.dir.join("networks");
        let mut names: Vec<String> = fs::read_dir(&d)
            .map_err(|e| Error::State {
                path: d.clone(),
                source: e,
            })?
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect();
        names.sort();
        names.iter().map(|n| self.record(n)).collect()
    }
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::Corrupt {
                path: path.into(),
                source: e,
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::State {
            path: path.into(),
            source: e,
        }),
    }
}

/// Writes `value` so that a crash leaves either the old or the new file, never a torn one.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let st = |e| Error::State {
        path: path.into(),
        source: e,
    };
    let dir = path.parent().expect("state files live in a directory");
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("state"),
        std::process::id()
    ));
    let mut bytes = serde_json::to_vec_pretty(value).expect("state types serialize");
    bytes.push(b'\n');
    let mut f = File::create(&tmp).map_err(st)?;
    f.write_all(&bytes).map_err(st)?;
    f.sync_all().map_err(st)?;
    drop(f);
    fs::rename(&tmp, path).map_err(st)?;
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::State {
            path: dir.into(),
            source: e,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Subnet;

    fn net(name: &str, vni: u32, cidr: &str) -> Network {
        Network {
            name: name.into(),
            tenant: "t1".into(),
            vni,
            subnets: vec![Subnet::new("s1", cidr, None).unwrap()],
            mtu: 1450,
            dns: vec![],
        }
    }

    fn req(pod: &str) -> PortRequest<'_> {
        PortRequest {
            pod,
            node: "n1",
            node_ip: Ipv4Addr::new(10, 0, 0, 1),
            kind: PortKind::Veth,
            ip: None,
        }
    }

    #[test]
    fn the_apis_addresses_are_recorded_and_remote_pods_replaced() {
        let d = tempfile::tempdir().unwrap();
        let s = NetworkStore::open(d.path()).unwrap();
        let mut n = net("a", 100, "192.168.0.0/24");
        s.put(&n).unwrap();
        s.put(&n).unwrap();
        let fixed = |pod, ip: &str| PortRequest {
            ip: Some(ip.parse().unwrap()),
            ..req(pod)
        };
        let a = s.allocate("a", &fixed("p1", "192.168.0.77")).unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(192, 168, 0, 77));
        for (pod, ip) in [
            ("p2", "192.168.0.77"),
            ("p3", "192.168.0.1"),
            ("p4", "10.0.0.5"),
            ("p5", "192.168.0.255"),
        ] {
            assert!(s.allocate("a", &fixed(pod, ip)).is_err(), "{ip}");
        }
        // Other nodes' pods come and go as a set; local ones stay.
        let remote = |pod: &str, ip: &str| Attachment {
            pod: pod.into(),
            node: "n2".into(),
            node_ip: Ipv4Addr::new(10, 0, 0, 2),
            ip: ip.parse().unwrap(),
            mac: MacAddr::for_ip(ip.parse().unwrap()),
            ..a.clone()
        };
        assert!(s
            .set_remote(
                "a",
                "n1",
                vec![remote("r1", "192.168.0.5"), remote("r2", "192.168.0.6")]
            )
            .unwrap());
        assert!(!s
            .set_remote(
                "a",
                "n1",
                vec![remote("r1", "192.168.0.5"), remote("r2", "192.168.0.6")]
            )
            .unwrap());
        assert!(s
            .set_remote("a", "n1", vec![remote("r2", "192.168.0.6")])
            .unwrap());
        let pods: Vec<String> = s
            .attachments("a")
            .unwrap()
            .into_iter()
            .map(|a| a.pod)
            .collect();
        assert_eq!(pods, ["p1", "r2"]);
        // A changed MTU is taken; new subnets are refused under attached pods.
        n.mtu = 1400;
        s.put(&n).unwrap();
        assert_eq!(s.get("a").unwrap().mtu, 1400);
        n.subnets = vec![Subnet::new("s1", "10.1.0.0/24", None).unwrap()];
        assert!(matches!(s.put(&n), Err(Error::InUse { .. })));
        assert!(matches!(
            s.put(&net("b", 100, "10.0.0.0/24")),
            Err(Error::Exists { kind: "vni", .. })
        ));
    }

    #[test]
    fn create_list_get_remove() {
        let d = tempfile::tempdir().unwrap();
        let s = NetworkStore::open(d.path()).unwrap();
        s.create(&net("a", 100, "192.168.0.0/24")).unwrap();
        s.create(&net("b", 101, "192.168.0.0/24")).unwrap(); // overlapping subnets: other tenant's business
        assert!(matches!(
            s.create(&net("a", 102, "10.0.0.0/24")),
            Err(Error::Exists {
                kind: "network",
                ..
            })
        ));
        assert!(matches!(
            s.create(&net("c", 100, "10.0.0.0/24")),
            Err(Error::Exists { kind: "vni", .. })
        ));
        assert_eq!(s.free_vni().unwrap(), 102);
        assert_eq!(
            s.list()
                .unwrap()
                .iter()
                .map(|n| n.name.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(s.get("b").unwrap().vni, 101);
        assert!(matches!(s.get("zz"), Err(Error::NotFound { .. })));
        assert!(matches!(s.get("../x"), Err(Error::Invalid { .. })));
        s.remove("a").unwrap();
        assert!(matches!(s.remove("a"), Err(Error::NotFound { .. })));
    }

    #[test]
    fn allocation_skips_reserved_survives_reopen_and_exhausts_clearly() {
        let d = tempfile::tempdir().unwrap();
        let s = NetworkStore::open(d.path()).unwrap();
        // /29: .0 network, .1 gateway, .7 broadcast -> .2 ..= .6 = 5 pods.
        s.create(&net("a", 100, "10.9.0.0/29")).unwrap();
        let mut got = Vec::new();
        for i in 0..3 {
            got.push(s.allocate("a", &req(&format!("p{i}"))).unwrap().ip);
        }
        // A new process (a new store value) sees the same state.
        let s = NetworkStore::open(d.path()).unwrap();
        for i in 3..5 {
            got.push(s.allocate("a", &req(&format!("p{i}"))).unwrap().ip);
        }
        let want: Vec<Ipv4Addr> = (2..=6).map(|h| Ipv4Addr::new(10, 9, 0, h)).collect();
        assert_eq!(got, want);
        match s.allocate("a", &req("p5")) {
            Err(e @ Error::Exhausted { .. }) => {
                assert!(e.to_string().contains("10.9.0.0/29"), "{e}")
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            s.allocate("a", &req("p1")),
            Err(Error::Exists { .. })
        ));
        assert!(matches!(s.remove("a"), Err(Error::InUse { pods: 5, .. })));
        // Release p1 (.3); the next allocation reuses it only because nothing else is free.
        assert_eq!(s.release("a", "p1").unwrap().ip, Ipv4Addr::new(10, 9, 0, 3));
        assert!(matches!(s.release("a", "p1"), Err(Error::NotFound { .. })));
        let a = s.allocate("a", &req("p6")).unwrap();
        assert_eq!(a.ip, Ipv4Addr::new(10, 9, 0, 3));
        assert_eq!(a.gateway, Ipv4Addr::new(10, 9, 0, 1));
        assert_eq!(a.prefix_len, 29);
        assert_eq!(a.mac, MacAddr::for_ip(a.ip));
    }

    #[test]
    fn the_store_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("net");
        NetworkStore::open(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }

    #[test]
    fn released_addresses_are_reused_last() {
        let d = tempfile::tempdir().unwrap();
        let s = NetworkStore::open(d.path()).unwrap();
        s.create(&net("a", 100, "10.9.0.0/24")).unwrap();
        let a = s.allocate("a", &req("p0")).unwrap().ip;
        s.release("a", "p0").unwrap();
        let b = s.allocate("a", &req("p1")).unwrap().ip;
        assert_ne!(a, b);
    }

    #[test]
    fn release_all_drops_the_named_attachments_and_skips_unknown_ones() {
        let d = tempfile::tempdir().unwrap();
        let s = NetworkStore::open(d.path()).unwrap();
        s.create(&net("a", 100, "10.9.0.0/24")).unwrap();
        for p in ["p0", "p1", "p2"] {
            s.allocate("a", &req(p)).unwrap();
        }
        s.release_all("a", &["p0", "nobody", "p2"]).unwrap();
        let left: Vec<String> = s
            .attachments("a")
            .unwrap()
            .into_iter()
            .map(|a| a.pod)
            .collect();
        assert_eq!(left, ["p1"]);
        assert!(s.release_all("missing", &["p1"]).is_err());
    }

    #[test]
    fn second_subnet_is_used_when_first_is_full() {
        let d = tempfile::tempdir().unwrap();
        let s = NetworkStore::open(d.path()).unwrap();
        let mut n = net("a", 100, "10.9.0.0/30");
        n.subnets
            .push(Subnet::new("s2", "10.9.1.0/30", None).unwrap());
        s.create(&n).unwrap();
        assert_eq!(
            s.allocate("a", &req("p0")).unwrap().ip,
            Ipv4Addr::new(10, 9, 0, 2)
        );
        let b = s.allocate("a", &req("p1")).unwrap();
        assert_eq!(
            (b.ip, b.gateway),
            (Ipv4Addr::new(10, 9, 1, 2), Ipv4Addr::new(10, 9, 1, 1))
        );
        assert!(matches!(
            s.allocate("a", &req("p2")),
            Err(Error::Exhausted { .. })
        ));
    }

    #[test]
    fn corrupt_state_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let s = NetworkStore::open(d.path()).unwrap();
        fs::write(d.path().join("networks/x.json"), b"{not json").unwrap();
        assert!(matches!(s.get("x"), Err(Error::Corrupt { .. })));
        let bad = r#"{"network":{"name":"y","tenant":"t","vni":5,"subnets":[],"mtu":1450}}"#;
        fs::write(d.path().join("networks/y.json"), bad).unwrap();
        assert!(matches!(s.get("y"), Err(Error::Invalid { .. })));
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Any sequence of allocations and releases: addresses stay unique, inside the subnet,
        /// never network/broadcast/gateway, and exhaustion happens exactly when full.
        #[test]
        fn allocations_stay_unique_and_in_range(prefix in 26u8..=30, ops in proptest::collection::vec((proptest::bool::ANY, 0usize..80), 1..120)) {
            let d = tempfile::tempdir().unwrap();
            let s = NetworkStore::open(d.path()).unwrap();
            let cidr = format!("10.9.0.0/{prefix}");
            s.create(&net("a", 100, &cidr)).unwrap();
            let n = s.get("a").unwrap();
            let sub = &n.subnets[0];
            let mut live: std::collections::BTreeMap<String, Ipv4Addr> = Default::default();
            for (alloc, k) in ops {
                let pod = format!("p{k}");
                if alloc {
                    match s.allocate("a", &req(&pod)) {
                        Ok(a) => {
                            proptest::prop_assert!(!live.contains_key(&pod));
                            proptest::prop_assert!(sub.cidr.contains(&a.ip));
                            proptest::prop_assert!(a.ip != sub.gateway && a.ip != sub.cidr.network() && a.ip != sub.cidr.broadcast());
                            proptest::prop_assert!(!live.values().any(|ip| *ip == a.ip));
                            live.insert(pod, a.ip);
                        }
                        Err(Error::Exists { .. }) => proptest::prop_assert!(live.contains_key(&pod)),
                        Err(Error::Exhausted { .. }) => proptest::prop_assert_eq!(live.len() as u32, sub.capacity()),
                        Err(e) => proptest::prop_assert!(false, "{}", e),
                    }
                } else {
                    match s.release("a", &pod) {
                        Ok(a) => proptest::prop_assert_eq!(live.remove(&pod), Some(a.ip)),
                        Err(Error::NotFound { .. }) => proptest::prop_assert!(!live.contains_key(&pod)),
                        Err(e) => proptest::prop_assert!(false, "{}", e),
                    }
                }
            }
            let stored: Vec<Ipv4Addr> = s.attachments("a").unwrap().iter().map(|a| a.ip).collect();
            proptest::prop_assert_eq!(stored.len(), live.len());
        }
    }

    #[test]
    fn concurrent_threads_never_share_an_address() {
        let d = tempfile::tempdir().unwrap();
        NetworkStore::open(d.path())
            .unwrap()
            .create(&net("a", 100, "10.9.0.0/24"))
            .unwrap();
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let dir = d.path().to_path_buf();
                std::thread::spawn(move || {
                    let s = NetworkStore::open(dir).unwrap();
                    (0..20)
                        .map(|i| s.allocate("a", &req(&format!("t{t}-{i}"))).unwrap().ip)
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<Ipv4Addr> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        assert_eq!(n, 160);
    }
}
