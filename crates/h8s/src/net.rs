//! `h8s net …`: the node-level Network store and the fabric on this node; and the calls the
//! pod runtime makes (`attach_vm`, `detach_pod`).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use anyhow::{bail, Context};
use h8s_net::{Attachment, Fabric, Network, NetworkStore, NodeConfig, NsRef, Subnet};

/// Where the fabric keeps its state and which node it is.
#[derive(clap::Args, Clone, Debug)]
pub struct NodeArgs {
    /// State directory of the Network store (IPAM, per-node bookkeeping).
    #[arg(
        long,
        env = "H8S_NET_DIR",
        default_value = "/var/lib/h8s/net",
        global = true
    )]
    state_dir: PathBuf,
    /// This node's name (default: the host name).
    #[arg(long, env = "H8S_NODE_NAME", global = true)]
    node_name: Option<String>,
    /// This node's underlay (VXLAN) address (default: the address of the default route's interface).
    #[arg(long, env = "H8S_NODE_IP", global = true)]
    node_ip: Option<Ipv4Addr>,
    /// Underlay MTU (default: the default route interface's).
    #[arg(long, env = "H8S_NODE_MTU", global = true)]
    node_mtu: Option<u32>,
    /// Work in this named network namespace instead of the host's (tests, labs).
    #[arg(long, env = "H8S_NET_NETNS", global = true)]
    netns: Option<String>,
    /// Let pods reach beyond their Network through its gateway (turns on IPv4 forwarding).
    #[arg(long, env = "H8S_NET_EGRESS", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    egress: bool,
    /// Ranges tenant egress may not reach (repeatable; e.g. the node and cluster network).
    #[arg(
        long = "protect",
        env = "H8S_NET_PROTECT",
        value_delimiter = ',',
        global = true
    )]
    protect: Vec<String>,
    /// Destinations tenant egress may reach through the gateways' NAT (comma-separated
    /// CIDRs; the protected ranges stay refused). Default: everything but the protected
    /// ranges, i.e. the default route's destinations minus private and link-local ranges.
    /// `none`: no egress.
    #[arg(
        long = "egress-allow",
        env = "H8S_NET_EGRESS_ALLOW",
        value_delimiter = ',',
        global = true
    )]
    egress_allow: Vec<String>,
    /// The range of the gateways' uplink /31s on this host (default 100.64.0.0/16). Two
    /// fabrics on one host (test clusters side by side) need disjoint ones, or replies to
    /// one's gateway leave through the other's uplink.
    #[arg(long = "transit", env = "H8S_NET_TRANSIT", global = true)]
    transit: Option<h8s_net::Ipv4Net>,
}

#[derive(clap::Subcommand)]
pub enum NetCommand {
    /// Create a Network and build its segment on this node.
    Create(CreateArgs),
    /// List Networks.
    Ls(LsArgs),
    /// Remove a Network from this node and the store.
    Rm(RmArgs),
    /// Show a Network with its attachments (JSON).
    Inspect(InspectArgs),
    /// Attach a pod: a tap for a VM, or a veth into `--pod-netns`. Prints the attachment (JSON).
    Attach(AttachArgs),
    /// Detach a pod from a Network.
    Detach(DetachArgs),
    /// Rebuild missing segments and re-program rules and VXLAN forwarding entries from the store.
    Reconcile(Only),
    /// List every device, namespace and nftables table h8s made on this node.
    Inventory(Only),
    /// Remove everything h8s made on this node (devices, gateway namespaces, tables).
    Reset(ResetArgs),
}

#[derive(clap::Args)]
pub struct Only {
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Network name (a DNS label).
    name: String,
    /// Owning tenant id.
    #[arg(long)]
    tenant: String,
    /// Subnet CIDR (repeatable; named subnet1, subnet2, …).
    #[arg(long = "subnet", required = true)]
    subnets: Vec<String>,
    /// Gateway of the matching --subnet (default: its first host address).
    #[arg(long = "gateway")]
    gateways: Vec<Ipv4Addr>,
    /// Segment id / VXLAN VNI (default: the lowest free one from 100).
    #[arg(long)]
    vni: Option<u32>,
    /// Pod MTU (default: underlay MTU minus 50 for VXLAN).
    #[arg(long)]
    mtu: Option<u32>,
    /// DNS servers for pods (default: the first gateway).
    #[arg(long = "dns")]
    dns: Vec<Ipv4Addr>,
}

#[derive(clap::Args)]
pub struct LsArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct RmArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Network name.
    name: String,
    /// Detach this node's pods first.
    #[arg(short, long)]
    force: bool,
}

#[derive(clap::Args)]
pub struct InspectArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Network name.
    name: String,
}

#[derive(clap::Args)]
pub struct AttachArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Network name.
    network: String,
    /// Pod name.
    pod: String,
    /// The pod's network namespace (a /run/netns name or a path): attach by veth, not tap.
    #[arg(long)]
    pod_netns: Option<String>,
}

#[derive(clap::Args)]
pub struct DetachArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Network name.
    network: String,
    /// Pod name.
    pod: String,
}

#[derive(clap::Args)]
pub struct ResetArgs {
    #[command(flatten)]
    node: NodeArgs,
    /// Yes, really.
    #[arg(long)]
    yes: bool,
}

fn ns_ref(s: &str) -> NsRef {
    if s.contains('/') {
        NsRef::Path(s.into())
    } else {
        NsRef::named(s)
    }
}

fn host_name() -> String {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let mut n: String = raw
        .trim()
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    n = n.trim_matches('-').chars().take(40).collect();
    if n.is_empty() {
        "node".into()
    } else {
        n
    }
}

impl NodeArgs {
    fn fabric(&self) -> anyhow::Result<Fabric> {
        let store = NetworkStore::open(&self.state_dir)
            .with_context(|| format!("network store {}", self.state_dir.display()))?;
        let name = self.node_name.clone().unwrap_or_else(host_name);
        let ns = self.netns.as_deref().map(ns_ref).unwrap_or_default();
        let mut node = match self.node_ip {
            Some(ip) => {
                let mut c = match NodeConfig::detect(&name, ns.clone()) {
                    Ok(c) => c,
                    Err(_) => NodeConfig::new(&name, ip),
                };
                c.underlay_ip = ip;
                c.netns = ns;
                c
            }
            None => NodeConfig::detect(&name, ns)?,
        };
        node.egress = self.egress;
        if let Some(m) = self.node_mtu {
            node.underlay_mtu = m;
        }
        for p in &self.protect {
            node.protected
                .push(p.parse().with_context(|| format!("--protect {p:?}"))?);
        }
        if let Some(allow) = parse_egress_allow(&self.egress_allow)? {
            node.egress_allow = allow;
        }
        if let Some(t) = self.transit {
            node.transit = t;
        }
        Ok(Fabric::new(store, node)?)
    }
}

/// `--egress-allow`: `None` keeps the default (everything not protected), `none` allows
/// nothing, else the CIDRs.
pub fn parse_egress_allow(v: &[String]) -> anyhow::Result<Option<Vec<h8s_net::Ipv4Net>>> {
    if v.is_empty() {
        return Ok(None);
    }
    if v.len() == 1 && v[0] == "none" {
        return Ok(Some(vec![]));
    }
    v.iter()
        .map(|c| {
            c.parse()
                .with_context(|| format!("--egress-allow {c:?} is not an IPv4 CIDR"))
        })
        .collect::<anyhow::Result<Vec<_>>>()
        .map(Some)
}

/// The fabric of this node as the environment configures it (`H8S_NET_DIR`, `H8S_NODE_*`).
pub fn fabric_from_env() -> anyhow::Result<Fabric> {
    fabric_of_node(None)
}

/// The fabric as [`fabric_from_env`] reads it, for node `node` when given (the agent's
/// `--node-name`, which may differ from `H8S_NODE_NAME` and the host's name).
pub fn fabric_of_node(node: Option<&str>) -> anyhow::Result<Fabric> {
    use clap::{FromArgMatches, Parser};
    #[derive(Parser)]
    struct Env {
        #[command(flatten)]
        node: NodeArgs,
    }
    let m = <Env as clap::CommandFactory>::command()
        .no_binary_name(true)
        .get_matches_from(Vec::<String>::new());
    let mut args = Env::from_arg_matches(&m)?.node;
    if let Some(n) = node {
        args.node_name = Some(n.to_string());
    }
    args.fabric()
}

/// For `h8s run --network`: a tap on `network` for pod VM `pod`.
pub fn attach_vm(network: &str, pod: &str) -> anyhow::Result<Attachment> {
    fabric_from_env()?
        .attach(network, pod)
        .with_context(|| format!("attach pod {pod} to network {network}"))
}

/// For pod removal: detach `pod` from every Network on this node. Not attached is fine.
pub fn detach_pod(pod: &str) -> anyhow::Result<()> {
    fabric_from_env()?.detach_pod(pod)?;
    Ok(())
}

pub fn run(cmd: NetCommand) -> anyhow::Result<()> {
    match cmd {
        NetCommand::Create(a) => create(a),
        NetCommand::Ls(a) => ls(a),
        NetCommand::Rm(a) => {
            let f = a.node.fabric()?;
            if a.force {
                for att in f.store().attachments(&a.name)? {
                    if att.node == f.node().name {
                        f.detach(&a.name, &att.pod)?;
                    }
                }
            }
            f.teardown_network(&a.name)?;
            f.store().remove(&a.name)?;
            Ok(())
        }
        NetCommand::Inspect(a) => {
            let f = a.node.fabric()?;
            let v = serde_json::json!({
                "network": f.store().get(&a.name)?,
                "attachments": f.store().attachments(&a.name)?,
            });
            println!("{}", serde_json::to_string_pretty(&v)?);
            Ok(())
        }
        NetCommand::Attach(a) => {
            let f = a.node.fabric()?;
            let att = match &a.pod_netns {
                Some(ns) => f.attach_netns(&a.network, &a.pod, &ns_ref(ns))?,
                None => f.attach(&a.network, &a.pod)?,
            };
            println!("{}", serde_json::to_string_pretty(&att)?);
            Ok(())
        }
        NetCommand::Detach(a) => {
            a.node.fabric()?.detach(&a.network, &a.pod)?;
            Ok(())
        }
        NetCommand::Reconcile(a) => Ok(a.node.fabric()?.repair()?),
        NetCommand::Inventory(a) => {
            let inv = a.node.fabric()?.inventory()?;
            for l in &inv.links {
                println!("link\t{l}");
            }
            for n in &inv.namespaces {
                println!("netns\t{n}");
            }
            for t in &inv.tables {
                println!("nft\t{t}");
            }
            Ok(())
        }
        NetCommand::Reset(a) => {
            if !a.yes {
                bail!("this removes every h8s device, gateway and rule on this node: pass --yes");
            }
            Ok(a.node.fabric()?.teardown_all()?)
        }
    }
}

fn create(a: CreateArgs) -> anyhow::Result<()> {
    let f = a.node.fabric()?;
    if a.gateways.len() > a.subnets.len() {
        bail!(
            "{} --gateway for {} --subnet",
            a.gateways.len(),
            a.subnets.len()
        );
    }
    let subnets = a
        .subnets
        .iter()
        .enumerate()
        .map(|(i, c)| Subnet::new(&format!("subnet{}", i + 1), c, a.gateways.get(i).copied()))
        .collect::<Result<Vec<_>, _>>()?;
    let vni = match a.vni {
        Some(v) => v,
        None => f.store().free_vni()?,
    };
    let net = Network {
        name: a.name.clone(),
        tenant: a.tenant,
        vni,
        subnets,
        mtu: a
            .mtu
            .unwrap_or(f.node().underlay_mtu - h8s_net::VXLAN_OVERHEAD),
        dns: a.dns,
    };
    f.store().create(&net)?;
    if let Err(e) = f.ensure_network(&net.name) {
        // Leave nothing half-made: the segment's devices and the store entry go.
        let _ = f.teardown_network(&net.name);
        let _ = f.store().remove(&net.name);
        return Err(
            anyhow::Error::new(e).context(format!("build network {} on this node", net.name))
        );
    }
    println!("{}", net.name);
    Ok(())
}

fn ls(a: LsArgs) -> anyhow::Result<()> {
    let f = a.node.fabric()?;
    let nets = f.store().list()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&nets)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<34} {:>8} {:<20} {:<15} {:>5} {:>5}",
        "NAME", "TENANT", "VNI", "SUBNETS", "GATEWAY", "MTU", "PODS"
    );
    for n in nets {
        let pods = f.store().attachments(&n.name)?.len();
        let subnets = n
            .subnets
            .iter()
            .map(|s| s.cidr.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let gws = n
            .subnets
            .iter()
            .map(|s| s.gateway.to_string())
            .collect::<Vec<_>>()
            .join(",");
        println!(
            "{:<20} {:<34} {:>8} {:<20} {:<15} {:>5} {:>5}",
            n.name, n.tenant, n.vni, subnets, gws, n.mtu, pods
        );
    }
    Ok(())
}
