//! `h8s`: one binary for the control plane, the pod runtime and their tools.

use clap::{Parser, Subcommand};

mod agent;
mod audit_flags;
mod bench_support;
mod crd_bench;
mod deploy_bench;
mod extensions_bench;
mod identity_bench;
mod identity_flags;
mod image;
mod jail;
mod limits_bench;
mod limits_flags;
mod login;
mod net;
mod pod;
mod rbac_bench;
mod sched_bench;
mod server;
mod soak_bench;
mod store;
mod svc_bench;
mod svcalloc_bench;
mod tenancy_bench;
mod tenant_cli;
mod webhook_bench;

#[derive(Parser)]
#[command(
    name = "h8s",
    version,
    about = "A secure, multi-tenant Kubernetes: every pod its own VM"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the server's flag set does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the control plane (API server on the embedded store by default).
    Server(server::ServerArgs),
    /// Run the node agent: register this machine as a Node and run its pods as VMs.
    Agent(agent::AgentArgs),
    /// Store maintenance: backup, restore, check.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Images: pull, import, list, remove.
    #[command(subcommand)]
    Image(image::ImageCommand),
    /// Network fabric tools.
    #[command(subcommand)]
    Net(net::NetCommand),
    /// Benchmarks that write their method and figures into BENCHMARKS.md.
    #[command(subcommand)]
    Bench(BenchCommand),
    #[command(flatten)]
    Pod(pod::PodCommand),
    /// Logs in to a cluster's identity service and writes a kubeconfig context whose
    /// credential is `h8s credential`.
    Login(login::LoginArgs),
    /// The kubectl exec credential plugin `h8s login` configures.
    #[command(hide = true)]
    Credential(login::CredentialArgs),
    /// Tenants (operators, with the admin kubeconfig).
    #[command(subcommand)]
    Tenant(tenant_cli::TenantCommand),
    /// Users of tenants (operators, with the admin kubeconfig).
    #[command(subcommand)]
    User(tenant_cli::UserCommand),
}

#[derive(Subcommand)]
enum BenchCommand {
    /// The API server: a fresh `h8s server` process on a temp dir, driven over HTTPS.
    Api(server::BenchArgs),
    /// The scheduler: N Node objects, M pods, bound through the API (vs raw pod creates).
    Sched(sched_bench::Args),
    /// The control loop at scale: a Deployment over hollow nodes (create, rollout) against
    /// bare pods, with the server's RSS and CPU.
    Deploy(deploy_bench::Args),
    /// RBAC: GETs as a tenant user authorized through RBAC (1,000 Roles and bindings in
    /// the cluster) against the same GETs as the admin, in the same run.
    Rbac(rbac_bench::Args),
    /// Custom resources: create/get of a CRD with a ~50 KB schema and CEL rules, against
    /// ConfigMaps of the same size.
    Crd(crd_bench::Args),
    /// Tenancy: a tenant user's namespace list filtered by the tenant guard (10,000
    /// namespaces over 100 tenants) against the admin's label-selected list of the same.
    Tenancy(tenancy_bench::Args),
    /// Identity: tokens issued and validated per second (built-in identity; an external
    /// Keystone with `--keystone-url`).
    Identity(identity_bench::Args),
    /// Services: pod → ClusterIP (the in-pod proxy) against pod → pod, request time and
    /// throughput, in pod VMs on one tenant Network.
    Svc(svc_bench::Args),
    /// Services: create latency (the ClusterIP allocation) with 0, 1,000 and 5,000
    /// Services stored, against ConfigMap creates.
    SvcAlloc(svcalloc_bench::Args),
    /// Dynamic admission: ConfigMap creates with a validating webhook / a
    /// ValidatingAdmissionPolicy selecting them, against none, in the same run.
    Webhook(webhook_bench::Args),
    /// API extensions: a CRD conversion webhook's round trip per object, and the
    /// aggregator's proxy against requests sent to the aggregated server directly.
    Extensions(extensions_bench::Args),
    /// Limits: GETs of a workload user with priority and fairness off, on and tight.
    Limits(limits_bench::Args),
    /// Soak: a steady open-loop mix of reads and writes with watchers for minutes; no
    /// errors and flat memory, the first minute as the baseline.
    Soak(soak_bench::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("H8S_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Server(args) => server::run(args),
        Command::Agent(args) => agent::run(args),
        Command::Store(cmd) => store::run(cmd),
        Command::Image(cmd) => image::run(cmd),
        Command::Net(cmd) => net::run(cmd),
        Command::Bench(BenchCommand::Api(args)) => server::bench(args),
        Command::Bench(BenchCommand::Sched(args)) => sched_bench::run(args),
        Command::Bench(BenchCommand::Deploy(args)) => deploy_bench::run(args),
        Command::Bench(BenchCommand::Rbac(args)) => rbac_bench::run(args),
        Command::Bench(BenchCommand::Crd(args)) => crd_bench::run(args),
        Command::Bench(BenchCommand::Tenancy(args)) => tenancy_bench::run(args),
        Command::Bench(BenchCommand::Identity(args)) => identity_bench::run(args),
        Command::Bench(BenchCommand::Svc(args)) => svc_bench::run(args),
        Command::Bench(BenchCommand::SvcAlloc(args)) => svcalloc_bench::run(args),
        Command::Bench(BenchCommand::Webhook(args)) => webhook_bench::run(args),
        Command::Bench(BenchCommand::Extensions(args)) => extensions_bench::run(args),
        Command::Bench(BenchCommand::Limits(args)) => limits_bench::run(args),
        Command::Bench(BenchCommand::Soak(args)) => soak_bench::run(args),
        Command::Pod(cmd) => pod::run(cmd),
        Command::Login(args) => login::login(args),
        Command::Credential(args) => login::credential(args),
        Command::Tenant(cmd) => tenant_cli::tenant(cmd),
        Command::User(cmd) => tenant_cli::user(cmd),
    }
}
