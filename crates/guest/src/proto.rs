//! The host↔guest protocol spoken over the pod VM's virtio-serial port `h8s.agent`.
//!
//! # Framing
//!
//! The port carries a sequence of frames. Every frame is
//!
//! ```text
//! u32 big-endian length N (of what follows, 1 ..= MAX_FRAME_LEN) | u8 kind | N-1 bytes payload
//! ```
//!
//! * kind `0` ([`Frame::Message`]): the payload is one JSON-encoded [`Message`].
//! * kind `1` ([`Frame::Data`]): raw stdio bytes of one process:
//!   `u32 big-endian process id | u8 channel (0 stdin, 1 stdout, 2 stderr) | bytes`.
//!   Stdio bypasses JSON so output is not inflated; an empty data frame is legal and means nothing
//!   (end of stdin is [`Request::CloseStdin`], end of output is [`Event::Exited`]).
//!
//! Control messages are JSON so that both ends can evolve independently (see the version rule).
//!
//! # Conversation
//!
//! 1. When the agent (PID 1 in the guest) has found the port, and again when it notices that
//!    the host reconnected, it sends [`Message::Hello`]. The host checks [`Hello::version`].
//!    A host connecting to an already running VM sends [`Request::Greet`] to get a Hello for
//!    sure (a quick disconnect + connect can go unnoticed by the guest).
//! 2. The host sends [`Message::Request`]s, each with an id it chooses ([`RequestId`]); the guest
//!    answers each exactly once with a [`Message::Response`] carrying the same id. Responses may
//!    come out of order ([`Request::Wait`] answers only when the process exits).
//! 3. The guest pushes [`Message::Event`]s at any time (process exits, agent log lines).
//!
//! Processes (a container's main process or an exec session) are named by a [`ProcessId`] the host
//! picks, unique within one VM's lifetime. Stdio data frames, signals, resizes and exit events refer
//! to that id, so any number of containers and exec sessions share the one port.
//! All output of a process that the agent read is sent before that process's [`Event::Exited`].
//!
//! # Version rule
//!
//! [`PROTOCOL_VERSION`] changes only on a breaking change (a removed or renamed field or variant,
//! a changed meaning or framing). Everything else is additive and keeps the version:
//! new optional fields (`#[serde(default)]`, so an older peer's messages still decode; unknown
//! fields are ignored), new [`Request`] variants (an older guest answers them with
//! [`ErrorCode::Unsupported`] instead of failing the connection), new [`Event`] variants (hosts
//! must ignore events they cannot decode). A host refuses a guest whose `Hello::version` differs
//! from its own.

use std::fmt;
use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// The protocol version; see the module docs for when it changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// The name of the virtio-serial port the agent listens on (`-device virtserialport,name=…`).
pub const PORT_NAME: &str = "h8s.agent";

/// Largest frame accepted (length field value). Bigger frames are a protocol error.
pub const MAX_FRAME_LEN: u32 = 1 << 20;

/// Largest stdio payload a sender should put in one data frame.
pub const MAX_DATA_LEN: usize = 64 * 1024;

const KIND_MESSAGE: u8 = 0;
const KIND_DATA: u8 = 1;

/// Errors of encoding or decoding frames.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The underlying port failed.
    #[error("agent port i/o failed")]
    Io(#[from] io::Error),
    /// The frame length field is 0 or above [`MAX_FRAME_LEN`].
    #[error("frame length {0} out of range")]
    FrameLength(u32),
    /// The frame kind byte is unknown.
    #[error("unknown frame kind {0}")]
    FrameKind(u8),
    /// A data frame is shorter than its header.
    #[error("data frame too short")]
    ShortData,
    /// A data frame names an unknown stdio channel.
    #[error("unknown stdio channel {0}")]
    Channel(u8),
    /// A message frame is not valid JSON for a [`Message`]. `request_id` is set when the frame
    /// was a request whose id could still be read (so the receiver can answer it with an error).
    #[error("undecodable message")]
    Json {
        /// The id of the undecodable request, when recoverable.
        request_id: Option<RequestId>,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
}

/// Result type of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Identifies a request; chosen by the host, echoed in the response.
pub type RequestId = u64;

/// Identifies a process (container main process or exec session) in one VM; chosen by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProcessId(pub u32);

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "p{}", self.0)
    }
}

/// A stdio channel of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// Host → guest input.
    Stdin,
    /// Guest → host standard output (also the whole terminal output with a tty).
    Stdout,
    /// Guest → host standard error (unused with a tty).
    Stderr,
}

impl Channel {
    fn to_byte(self) -> u8 {
        match self {
            Channel::Stdin => 0,
            Channel::Stdout => 1,
            Channel::Stderr => 2,
        }
    }

    fn from_byte(b: u8) -> Result<Self> {
        Ok(match b {
            0 => Channel::Stdin,
            1 => Channel::Stdout,
            2 => Channel::Stderr,
            other => return Err(Error::Channel(other)),
        })
    }
}

/// One frame on the port.
// Frames live only between the codec and a handler; boxing the big message variant would only
// add an allocation per frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A control message.
    Message(Message),
    /// Stdio bytes of a process.
    Data {
        /// The process.
        process: ProcessId,
        /// Which of its streams.
        channel: Channel,
        /// The bytes (at most [`MAX_DATA_LEN`] by convention).
        data: Vec<u8>,
    },
}

/// A control message, either direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// Guest → host, on start and on every host (re)connect.
    Hello(Hello),
    /// Host → guest.
    Request {
        /// Echoed in the response.
        id: RequestId,
        /// What to do.
        request: Request,
    },
    /// Guest → host, exactly one per request.
    Response {
        /// The request's id.
        id: RequestId,
        /// The outcome.
        result: std::result::Result<Reply, ProtoError>,
    },
    /// Guest → host, unsolicited.
    Event(Event),
}

/// The guest's greeting.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`PROTOCOL_VERSION`] of the guest.
    pub version: u32,
    /// The guest agent's crate version.
    pub agent_version: String,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
    /// Guest `CLOCK_BOOTTIME` when the agent first became ready, in milliseconds (the guest's
    /// own view of its boot time; constant across reconnects).
    pub boot_time_ms: u64,
    /// Containers and exec processes that already exist (non-empty after a host reconnect).
    #[serde(default)]
    pub containers: Vec<ContainerInfo>,
    /// A random id the agent draws when it starts and again after [`Request::Restored`]
    /// (so clones of one template differ). (Added in version 1, additive.)
    #[serde(default)]
    pub agent_id: String,
}

/// Host → guest requests.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Liveness check; answered with [`Reply::Pong`].
    Ping,
    /// Prepare a container's root filesystem (mounts) and record its process spec; the process
    /// is not started. Answered with [`Reply::Done`].
    CreateContainer(ContainerSpec),
    /// Start a created container's main process. Answered with [`Reply::Started`].
    StartContainer {
        /// The container.
        container: String,
    },
    /// Start a process inside a running container. Answered with [`Reply::Started`].
    Exec(ExecSpec),
    /// Deliver a signal to a process. Answered with [`Reply::Done`], or [`ErrorCode::NotRunning`]
    /// when it already exited (nothing is sent then).
    Signal {
        /// The process.
        process: ProcessId,
        /// Linux signal number (e.g. 15 for SIGTERM, 9 for SIGKILL).
        signal: i32,
    },
    /// Wait for a process to exit. Answered with [`Reply::Exited`] when it exits (at once if it
    /// already has).
    Wait {
        /// The process.
        process: ProcessId,
    },
    /// Set the terminal size of a process started with `tty: true`. Answered with [`Reply::Done`].
    ResizeTty {
        /// The process.
        process: ProcessId,
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// Close the process's stdin (end of input). Answered with [`Reply::Done`].
    CloseStdin {
        /// The process.
        process: ProcessId,
    },
    /// Remove a container whose processes have all exited: unmount its root filesystem and
    /// forget it. Answered with [`Reply::Done`]. Fails with [`ErrorCode::FailedPrecondition`]
    /// while it runs.
    RemoveContainer {
        /// The container.
        container: String,
    },
    /// List containers and their processes. Answered with [`Reply::Containers`].
    ListContainers,
    /// Configure the VM's network interfaces, routes and DNS. Answered with [`Reply::Done`].
    ConfigureNetwork(NetworkConfig),
    /// Kill every process, sync, and power the VM off. Answered with [`Reply::Done`] just before.
    Shutdown,
    /// Replace the files of a pod volume (the directory containers mount with
    /// [`MountSource::PodDir`]) as one atomic change, as kubelet's AtomicWriter does: the new
    /// files go into a fresh hidden directory, `..data` is switched to it with one rename, and
    /// the visible names are symlinks through `..data`, so a reader never sees a mix of old
    /// and new content. Answered with [`Reply::Done`]. (Added in version 1, additive.)
    WriteVolume(VolumeContent),
    /// Check a port inside the pod VM (the pod's network namespace) as kubelet's
    /// `tcpSocket` and `httpGet` probes do: connect within the timeout, and for HTTP send a GET
    /// and expect a status from 200 to 399. Answered with [`Reply::Done`] when the check
    /// passes, else [`ErrorCode::FailedPrecondition`] with the reason. (Added in version 1,
    /// additive.)
    Probe(ProbeSpec),
    /// Ask for a fresh [`Message::Hello`]: the agent sends one, then answers [`Reply::Done`].
    /// A host that (re)connects to a running VM should send this instead of relying on the
    /// spontaneous greeting: when a disconnect and the next connect reach the guest together,
    /// the agent cannot tell that the host changed. (Added in version 1, additive.)
    Greet,
    /// Connect to `127.0.0.1:port` in the VM's network namespace (the pod's) and relay bytes
    /// as if the connection were a process: [`Channel::Stdin`] data goes to the port,
    /// [`Request::CloseStdin`] half-closes it, what the port sends comes back on
    /// [`Channel::Stdout`], and [`Event::Exited`] with code 0 reports the connection's end.
    /// Answered with [`Reply::Done`] once connected; a refused connection fails with
    /// [`ErrorCode::FailedPrecondition`]. (Added in version 1, additive.)
    PortForward {
        /// The id the host gives this connection (a process id).
        process_id: ProcessId,
        /// The TCP port.
        port: u16,
    },
    /// Change the pod's view of its Network's Services (the in-pod Service proxy and cluster
    /// DNS, see [`ServiceUpdate`]). Answered with [`Reply::Done`]; an update older than the
    /// last one applied is ignored (also `Done`). (Added in version 1, additive; the table's
    /// own format is versioned by [`ServiceUpdate::version`].)
    UpdateServices(ServiceUpdate),
    /// The VM was just restored from a VM template (a saved, paused VM that other pods were
    /// restored from too): reseed the kernel RNG from the host's entropy, set the clock,
    /// re-probe the disks (their backends and sizes changed), give the NICs the pod's MACs
    /// and renew the agent's own random state. The host sends it right after the Hello and
    /// before anything else. Answered with [`Reply::Restored`]. (Added in version 1,
    /// additive.)
    Restored(RestoreInfo),
    /// How much of the guest's memory the pod's local storage holds: each container's
    /// writable layer and each pod volume directory ([`MountSource::PodDir`]), in bytes of
    /// allocated blocks. Answered with [`Reply::StorageUsage`]. (Added in version 1,
    /// additive.)
    StorageUsage,
    /// The host is about to save this VM as a VM template: let go of what each restored
    /// clone replaces anyway (the placeholder volume disks are unbound, so a clone's
    /// [`RestoreInfo::rescan_disks`] only binds its real ones; the image disks stay bound,
    /// their cached blocks dropped). Answered with
    /// [`Reply::Done`]. (Added in version 1, additive.)
    PrepareTemplate,
}

/// What a VM restored from a template needs to stop being a copy ([`Request::Restored`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreInfo {
    /// Fresh random bytes from the host (at least [`RestoreInfo::MIN_ENTROPY`]), mixed into the
    /// kernel's pool (credited) before the CRNG is reseeded.
    pub entropy: Vec<u8>,
    /// The host's `CLOCK_REALTIME`, nanoseconds since the epoch.
    pub realtime_ns: u64,
    /// Bind the disks [`Request::PrepareTemplate`] unbound (the volumes), so the guest reads
    /// each one's real size; in a VM that was no prepared template, unbind and rebind every
    /// virtio-blk disk.
    pub rescan_disks: bool,
    /// NICs to give another MAC: `(template's MAC, pod's MAC)`.
    #[serde(default)]
    pub macs: Vec<(String, String)>,
    /// The pod's network, configured right after the MACs (as [`Request::ConfigureNetwork`]
    /// would), so a restore is one round trip. (Additive: a guest that answers without
    /// [`Reply::Restored`]'s `hello` predates it and did not configure it.)
    #[serde(default)]
    pub network: Option<NetworkConfig>,
    /// Drop the image disks' cached blocks before anything reads them: a warm clone's image
    /// disks were just given the pod's images (they held the warm-up image before). (Added
    /// in version 1, additive.)
    #[serde(default)]
    pub flush_images: bool,
}

impl RestoreInfo {
    /// The least entropy a guest accepts, bytes (256 bits).
    pub const MIN_ENTROPY: usize = 32;
}

/// The format version of [`ServiceUpdate`]: a guest refuses (`unsupported`) other versions.
pub const SERVICES_VERSION: u32 = 1;

/// Cluster DNS inside the pod VM (in [`NetworkConfig::cluster_dns`]): the agent serves the
/// names of the Services it is told about ([`Request::UpdateServices`]) at
/// [`CLUSTER_DNS_ADDR`], forwards other names to `upstream`, and writes `/etc/resolv.conf` as
/// kubelet does for `dnsPolicy: ClusterFirst`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterDns {
    /// The cluster domain, e.g. `cluster.local`.
    pub domain: String,
    /// Resolvers for every other name (addresses); empty: other names are refused.
    #[serde(default)]
    pub upstream: Vec<String>,
    /// `options ndots:N` (kubelet: 5).
    #[serde(default = "default_ndots")]
    pub ndots: u8,
}

fn default_ndots() -> u8 {
    5
}

/// Where the in-pod cluster DNS listens (UDP and TCP port 53), in the VM's service network
/// namespace (reached from the pod over a veth pair; never bound in the pod's own namespace,
/// so the pod's own sockets on any port never collide with it).
pub const CLUSTER_DNS_ADDR: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 53, 2);

/// An incremental change of the Service table a pod VM holds (only the pod's own Network's
/// Services and pods). `full` replaces the table; otherwise entries in `services`/`pods`
/// replace the ones with the same key and `removed`/`removed_pods` delete.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ServiceUpdate {
    /// [`SERVICES_VERSION`].
    pub version: u32,
    /// Increases with every update the host sends to this VM; an older one is ignored.
    pub generation: u64,
    /// Replace the whole table (the host's first update to a VM, or after a reconnect).
    #[serde(default)]
    pub full: bool,
    /// Services added or changed (whole entries).
    #[serde(default)]
    pub services: Vec<ServiceEntry>,
    /// Services gone.
    #[serde(default)]
    pub removed: Vec<ServiceName>,
    /// Pods of the Network added or changed (for `<a-b-c-d>.<ns>.pod.<domain>`).
    #[serde(default)]
    pub pods: Vec<PodRecord>,
    /// Pod addresses gone.
    #[serde(default)]
    pub removed_pods: Vec<std::net::Ipv4Addr>,
}

/// A Service's key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ServiceName {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// One Service as the pod sees it: ports already resolved to ready backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceEntry {
    /// Namespace and name.
    #[serde(flatten)]
    pub key: ServiceName,
    /// What kind of Service.
    pub kind: ServiceKind,
    /// `sessionAffinity: ClientIP`: a client keeps its backend while it is ready.
    #[serde(default)]
    pub affinity: bool,
    /// Its ports.
    #[serde(default)]
    pub ports: Vec<ServicePortEntry>,
    /// Addresses of its ready endpoints (A records of a headless Service).
    #[serde(default)]
    pub endpoints: Vec<std::net::Ipv4Addr>,
}

/// The kind of a [`ServiceEntry`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceKind {
    /// A virtual address the pod's proxy answers.
    ClusterIp {
        /// The ClusterIP.
        ip: std::net::Ipv4Addr,
    },
    /// No ClusterIP: DNS answers with the ready endpoints.
    Headless,
    /// A DNS alias (CNAME).
    ExternalName {
        /// The target name.
        name: String,
    },
}

/// A transport protocol of a Service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PortProtocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
    /// SCTP (never proxied).
    Sctp,
}

/// One port of a Service with its ready backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicePortEntry {
    /// The port's name (empty for an unnamed single port).
    #[serde(default)]
    pub name: String,
    /// Its protocol.
    pub protocol: PortProtocol,
    /// The Service port.
    pub port: u16,
    /// Ready endpoints with the target port resolved for each.
    #[serde(default)]
    pub backends: Vec<std::net::SocketAddrV4>,
}

/// A pod of the Network, for pod A records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// The pod's address.
    pub ip: std::net::Ipv4Addr,
    /// Its namespace.
    pub namespace: String,
}

/// How to create a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSpec {
    /// The container's name, unique in the pod.
    pub id: String,
    /// The read-only image (erofs) block device.
    pub rootfs: BlockDevice,
    /// The writable layer over the image (an overlay upper directory).
    #[serde(default)]
    pub writable: WritableLayer,
    /// The main process.
    pub process: ProcessSpec,
    /// The id the host gives the main process.
    pub process_id: ProcessId,
    /// The container's hostname (own UTS namespace); the VM's hostname when absent.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Extra mounts (volumes).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// Mount the container's root read-only (`securityContext.readOnlyRootFilesystem`) once
    /// its mounts and network files are in place; volumes keep their own flags. (Added in
    /// version 1, additive.)
    #[serde(default)]
    pub read_only_root: bool,
}

/// The content of a pod volume (ConfigMap, Secret, downward API, projected).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeContent {
    /// The volume's name (its [`MountSource::PodDir`] name).
    pub name: String,
    /// Every file of the volume; files not listed disappear.
    pub files: Vec<VolumeFile>,
}

/// A network probe run inside the pod VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProbeSpec {
    /// An IP address (`127.0.0.1` when empty).
    #[serde(default)]
    pub host: String,
    /// The port.
    pub port: u16,
    /// An HTTP GET instead of a bare connect.
    #[serde(default)]
    pub http: Option<HttpProbe>,
    /// A gRPC health check (`grpc.health.v1.Health/Check` over plain HTTP/2) instead.
    #[serde(default)]
    pub grpc: Option<GrpcProbe>,
    /// Connect plus answer, milliseconds.
    pub timeout_ms: u64,
}

/// The gRPC part of a [`ProbeSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrpcProbe {
    /// The `service` of the HealthCheckRequest (empty: the server as a whole).
    #[serde(default)]
    pub service: String,
}

/// The HTTP part of a [`ProbeSpec`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpProbe {
    /// Path and query, `/` when empty.
    #[serde(default)]
    pub path: String,
    /// Extra request headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

/// One file of a [`VolumeContent`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeFile {
    /// Relative path inside the volume (no `..`, no leading `/`).
    pub path: String,
    /// The bytes.
    pub data: Vec<u8>,
    /// Permission bits; `0o644` when absent.
    #[serde(default)]
    pub mode: Option<u32>,
}

/// How to start an exec session in a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecSpec {
    /// The container.
    pub container: String,
    /// The id the host gives this process.
    pub process_id: ProcessId,
    /// The process.
    pub process: ProcessSpec,
}

/// A process to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in `PATH` (from `env`, or a default) when it has no `/`.
    pub args: Vec<String>,
    /// Environment, `KEY=VALUE` each.
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory inside the container; `/` when absent.
    #[serde(default)]
    pub working_dir: Option<String>,
    /// Identity; root when absent.
    #[serde(default)]
    pub user: Option<User>,
    /// Run on a pseudo-terminal (stdout carries the terminal; stderr is unused).
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open for host input (data frames on [`Channel::Stdin`]); otherwise stdin is
    /// `/dev/null`.
    #[serde(default)]
    pub stdin: bool,
    /// Initial terminal size, `(rows, cols)`, with `tty`.
    #[serde(default)]
    pub tty_size: Option<(u16, u16)>,
}

/// A user or group, by number or by name (looked up in the container image's `/etc/passwd` and
/// `/etc/group`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdOrName {
    /// Numeric id.
    Id(u32),
    /// Name to resolve in the image.
    Name(String),
}

/// The identity a process runs as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The user.
    pub user: IdOrName,
    /// The primary group; the user's group from `/etc/passwd` (or gid = uid when the user is
    /// numeric and unknown) when absent.
    #[serde(default)]
    pub group: Option<IdOrName>,
    /// Supplementary group ids (in addition to those `/etc/group` lists for the user).
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// A block device attached to the VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockDevice {
    /// By guest device path, e.g. `/dev/vda`.
    Path(String),
    /// By virtio-blk serial (`-device virtio-blk-device,serial=…`, at most 20 bytes): robust
    /// against probe order.
    Serial(String),
}

/// The writable layer of a container root.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WritableLayer {
    /// A tmpfs (RAM) upper directory; `size_bytes` limits it (tmpfs default: half of RAM).
    Tmpfs {
        /// Size limit.
        #[serde(default)]
        size_bytes: Option<u64>,
    },
    /// Default: an unlimited tmpfs.
    #[default]
    Default,
}

/// A mount inside a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Absolute path in the container (created if missing).
    pub target: String,
    /// What to mount.
    pub source: MountSource,
    /// Mount read-only.
    #[serde(default)]
    pub read_only: bool,
}

/// What a [`Mount`] mounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MountSource {
    /// A directory shared by every container of the pod that names it (an `emptyDir`), kept in
    /// guest RAM.
    PodDir {
        /// The volume's name.
        name: String,
        /// Make the directory its own tmpfs of this size when the first container mounts it
        /// (an `emptyDir`'s `sizeLimit`). (Added in version 1, additive.)
        #[serde(default)]
        size_bytes: Option<u64>,
    },
    /// A private tmpfs.
    Tmpfs {
        /// Size limit.
        #[serde(default)]
        size_bytes: Option<u64>,
    },
    /// A filesystem on a block device.
    Block {
        /// The device.
        device: BlockDevice,
        /// Filesystem type, e.g. `ext4` or `erofs`.
        fstype: String,
    },
    /// A persistent volume (PVC, `cinder:`): the filesystem on a volume disk, mounted once per
    /// pod under the agent's run directory (grown to the device's size first, group-owned by
    /// `fs_group` when set) and bind-mounted here — the whole volume or its `sub_path`,
    /// created if missing. (Added in version 1, additive.)
    Volume {
        /// The volume disk.
        device: BlockDevice,
        /// Filesystem type (`ext4`).
        fstype: String,
        /// A relative directory inside the volume (`volumeMounts[].subPath`).
        #[serde(default)]
        sub_path: Option<String>,
        /// The pod's `securityContext.fsGroup`.
        #[serde(default)]
        fs_group: Option<u32>,
        /// The disk is attached read-only (mount the filesystem with `ro`, never replay its
        /// journal for writing).
        #[serde(default)]
        device_read_only: bool,
    },
    /// The raw block device of a volume (`volumeMode: Block`), at `target` in the container
    /// (`volumeDevices[].devicePath`). (Added in version 1, additive.)
    Device {
        /// The volume disk.
        device: BlockDevice,
    },
}

/// The VM's network set-up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkConfig {
    /// Interfaces to configure (by MAC), brought up.
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// DNS servers for `/etc/resolv.conf` of every container.
    #[serde(default)]
    pub dns_servers: Vec<String>,
    /// DNS search domains.
    #[serde(default)]
    pub dns_search: Vec<String>,
    /// The VM's (pod's) hostname.
    #[serde(default)]
    pub hostname: Option<String>,
    /// Serve cluster DNS inside the VM and point `/etc/resolv.conf` at it (then
    /// `dns_servers` are not written; `dns_search` still is). (Added in version 1, additive.)
    #[serde(default)]
    pub cluster_dns: Option<ClusterDns>,
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// The MAC address of the virtio-net device, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Rename the interface to this (e.g. `eth0`).
    #[serde(default)]
    pub name: Option<String>,
    /// Addresses in CIDR notation, e.g. `10.1.0.5/24`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Default gateway through this interface.
    #[serde(default)]
    pub gateway: Option<String>,
    /// MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
}

/// Successful answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Done, nothing to report.
    Done,
    /// Answer to [`Request::Ping`].
    Pong,
    /// A process started; `pid` is its pid in the guest's initial pid namespace.
    Started {
        /// Guest pid.
        pid: u32,
    },
    /// Answer to [`Request::Wait`].
    Exited(ExitStatus),
    /// Answer to [`Request::ListContainers`].
    Containers(Vec<ContainerInfo>),
    /// Answer to [`Request::Restored`]: the agent's new id.
    Restored {
        /// See [`Hello::agent_id`].
        agent_id: String,
        /// The agent's greeting after the restore (with the new id), so the host need not
        /// ask for one ([`Request::Greet`]); `None` from a guest that predates it.
        #[serde(default)]
        hello: Option<Hello>,
        /// How long each step of the restore took in the guest, microseconds, in order
        /// (`reseed`, `clock`, `macs`, `disks`, `network`).
        #[serde(default)]
        steps_us: Vec<(String, u64)>,
    },
    /// Answer to [`Request::StorageUsage`].
    StorageUsage(StorageUsage),
}

/// Local storage a pod uses inside its VM ([`Request::StorageUsage`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageUsage {
    /// Bytes in each container's writable layer, by container id.
    #[serde(default)]
    pub containers: Vec<(String, u64)>,
    /// Bytes in each pod volume directory, by volume name.
    #[serde(default)]
    pub volumes: Vec<(String, u64)>,
}

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl ExitStatus {
    /// The shell convention: the code, or 128 + signal.
    pub fn shell_code(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => 128 + s,
        }
    }
}

/// A container as the guest knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Its id.
    pub id: String,
    /// Its main process's id.
    pub process_id: ProcessId,
    /// Its processes (main first, then exec sessions).
    pub processes: Vec<ProcessInfo>,
}

/// A process as the guest knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessInfo {
    /// Its id.
    pub id: ProcessId,
    /// Its state.
    pub state: ProcessState,
}

/// A process's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessState {
    /// Created, not started (container main process only).
    Created,
    /// Running with this guest pid.
    Running {
        /// Guest pid.
        pid: u32,
    },
    /// Exited.
    Exited(ExitStatus),
}

/// Unsolicited guest → host messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A process exited; all its output has been sent before this event.
    Exited {
        /// The process.
        process: ProcessId,
        /// How.
        status: ExitStatus,
    },
    /// A line of the agent's own log (for the host's logs; rate-limited by the agent).
    Log {
        /// Severity.
        level: LogLevel,
        /// The line.
        message: String,
    },
}

/// Severity of an agent log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogLevel {
    /// Something failed.
    Error,
    /// Something unexpected.
    Warn,
    /// Progress.
    Info,
}

/// A typed error sent to the peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ProtoError {
    /// The class of error, for programs.
    pub code: ErrorCode,
    /// A short human sentence (no debug dumps).
    pub message: String,
}

impl ProtoError {
    /// An error of class `code`.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ProtoError {
            code,
            message: message.into(),
        }
    }
}

/// Classes of errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request is malformed or a field is invalid.
    InvalidArgument,
    /// The container, process or device does not exist.
    NotFound,
    /// The container or process id is taken.
    AlreadyExists,
    /// The object is in the wrong state for this (e.g. start twice, remove while running).
    FailedPrecondition,
    /// The process is not running (already exited).
    NotRunning,
    /// The executable was not found or is not executable.
    ExecutableNotFound,
    /// A mount failed (bad device, wrong filesystem).
    MountFailed,
    /// The request is unknown to this agent (a newer host).
    Unsupported,
    /// Anything else inside the guest.
    Internal,
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ErrorCode::InvalidArgument => "invalid argument",
            ErrorCode::NotFound => "not found",
            ErrorCode::AlreadyExists => "already exists",
            ErrorCode::FailedPrecondition => "failed precondition",
            ErrorCode::NotRunning => "not running",
            ErrorCode::ExecutableNotFound => "executable not found",
            ErrorCode::MountFailed => "mount failed",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Internal => "internal error",
        };
        f.write_str(s)
    }
}

/// Encodes a frame into its wire bytes.
pub fn encode(frame: &Frame) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0; 4]);
    match frame {
        Frame::Message(m) => {
            out.push(KIND_MESSAGE);
            // Serializing our own types to a Vec cannot fail (no maps with non-string keys,
            // no fallible Serialize impls).
            serde_json::to_writer(&mut out, m).expect("message serializes");
        }
        Frame::Data {
            process,
            channel,
            data,
        } => {
            out.push(KIND_DATA);
            out.extend_from_slice(&process.0.to_be_bytes());
            out.push(channel.to_byte());
            out.extend_from_slice(data);
        }
    }
    let len = (out.len() - 4) as u32;
    out[..4].copy_from_slice(&len.to_be_bytes());
    out
}

/// Writes one frame (a single `write_all` of the encoded bytes) and flushes.
pub fn write_frame<W: Write>(w: &mut W, frame: &Frame) -> Result<()> {
    w.write_all(&encode(frame))?;
    w.flush()?;
    Ok(())
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a frame starts.
pub fn read_frame<R: Read>(r: &mut R) -> Result<Option<Frame>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match r.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let len = u32::from_be_bytes(len);
    check_len(len)?;
    let mut body = vec![0u8; len as usize];
    r.read_exact(&mut body)?;
    decode_body(&body).map(Some)
}

fn check_len(len: u32) -> Result<()> {
    if len == 0 || len > MAX_FRAME_LEN {
        return Err(Error::FrameLength(len));
    }
    Ok(())
}

fn decode_body(body: &[u8]) -> Result<Frame> {
    let (&kind, rest) = body.split_first().ok_or(Error::FrameLength(0))?;
    match kind {
        KIND_MESSAGE => match serde_json::from_slice::<Message>(rest) {
            Ok(m) => Ok(Frame::Message(m)),
            Err(source) => Err(Error::Json {
                request_id: recover_request_id(rest),
                source,
            }),
        },
        KIND_DATA => {
            if rest.len() < 5 {
                return Err(Error::ShortData);
            }
            let process = ProcessId(u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]));
            let channel = Channel::from_byte(rest[4])?;
            Ok(Frame::Data {
                process,
                channel,
                data: rest[5..].to_vec(),
            })
        }
        other => Err(Error::FrameKind(other)),
    }
}

/// For a request this peer cannot decode (e.g. a newer variant), find its id so the receiver can
/// answer [`ErrorCode::Unsupported`] instead of dropping the connection.
fn recover_request_id(json: &[u8]) -> Option<RequestId> {
    #[derive(Deserialize)]
    struct Outer {
        request: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        id: RequestId,
    }
    serde_json::from_slice::<Outer>(json)
        .ok()
        .map(|o| o.request.id)
}

/// An incremental decoder for non-blocking readers (e.g. the host's async side): feed it bytes,
/// take complete frames out. Linear in the bytes fed: frames are taken from a cursor into
/// the buffer, and what is left after them is moved to the front only when more bytes come.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: Vec<u8>,
    /// Where the next frame starts in `buf`.
    start: usize,
    /// Bytes moved to the front so far (tests check it stays below the bytes fed).
    #[cfg(test)]
    shifted: usize,
}

impl Decoder {
    /// A decoder with an empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends received bytes.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.start > 0 {
            // Only the undecoded tail (less than one frame) moves.
            #[cfg(test)]
            {
                self.shifted += self.buf.len() - self.start;
            }
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame, `Ok(None)` if more bytes are needed. After a framing error
    /// ([`Error::FrameLength`]) the stream cannot be resynchronised and should be dropped; after
    /// a decoding error of a well-framed body the frame is consumed and decoding can go on.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let rest = &self.buf[self.start..];
        if rest.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]);
        check_len(len)?;
        let end = 4 + len as usize;
        if rest.len() < end {
            return Ok(None);
        }
        let result = decode_body(&rest[4..end]);
        self.start += end;
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        result.map(Some)
    }

    /// Bytes buffered but not yet decoded.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_is_linear_and_keeps_partial_frames() {
        let one = encode(&Frame::Data {
            process: ProcessId(7),
            channel: Channel::Stdout,
            data: b"y\n".to_vec(),
        });
        // 20,000 frames in one feed, then a frame split over three feeds.
        let n = 20_000;
        let mut bytes = Vec::with_capacity(one.len() * n);
        for _ in 0..n {
            bytes.extend_from_slice(&one);
        }
        let mut d = Decoder::new();
        d.feed(&bytes);
        let mut got = 0;
        while let Some(f) = d.next_frame().unwrap() {
            assert!(matches!(f, Frame::Data { ref data, .. } if data == b"y\n"));
            got += 1;
        }
        assert_eq!(got, n);
        assert_eq!(d.pending(), 0);
        d.feed(&one[..3]);
        assert!(d.next_frame().unwrap().is_none());
        d.feed(&one[3..5]);
        assert!(d.next_frame().unwrap().is_none());
        let mut tail = one[5..].to_vec();
        tail.extend_from_slice(&one[..2]);
        d.feed(&tail);
        assert!(d.next_frame().unwrap().is_some());
        assert_eq!(d.pending(), 2);
        // Bytes moved to the front: only undecoded partial frames, never the whole buffer
        // per frame (draining per frame would move ~n²/2 frames' worth here).
        d.feed(&one[2..]);
        assert!(d.next_frame().unwrap().is_some());
        assert!(d.shifted <= 3 * one.len(), "moved {} bytes", d.shifted);
    }

    fn roundtrip(frame: Frame) {
        let bytes = encode(&frame);
        let got = read_frame(&mut &bytes[..]).unwrap().unwrap();
        assert_eq!(got, frame);
        let mut d = Decoder::new();
        for b in &bytes {
            assert!(d.pending() < bytes.len());
            d.feed(std::slice::from_ref(b));
        }
        assert_eq!(d.next_frame().unwrap(), Some(frame));
        assert_eq!(d.pending(), 0);
    }

    fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "c1".into(),
            rootfs: BlockDevice::Serial("img-c1".into()),
            writable: WritableLayer::Tmpfs {
                size_bytes: Some(1 << 20),
            },
            process: ProcessSpec {
                args: vec!["sh".into(), "-c".into(), "echo hi".into()],
                env: vec!["PATH=/bin".into()],
                working_dir: Some("/tmp".into()),
                user: Some(User {
                    user: IdOrName::Name("nobody".into()),
                    group: Some(IdOrName::Id(65534)),
                    additional_gids: vec![1, 2],
                }),
                tty: true,
                stdin: true,
                tty_size: Some((24, 80)),
            },
            process_id: ProcessId(7),
            hostname: Some("pod".into()),
            mounts: vec![Mount {
                target: "/data".into(),
                source: MountSource::PodDir {
                    name: "cache".into(),
                    size_bytes: Some(1 << 20),
                },
                read_only: false,
            }],
            read_only_root: true,
        }
    }

    #[test]
    fn frames_roundtrip() {
        roundtrip(Frame::Message(Message::Hello(Hello {
            version: PROTOCOL_VERSION,
            agent_version: "0.1.0".into(),
            kernel_release: "6.1.0-1-cloud-amd64".into(),
            boot_time_ms: 812,
            containers: vec![],
            agent_id: "00ff".into(),
        })));
        roundtrip(Frame::Message(Message::Request {
            id: 4,
            request: Request::Restored(RestoreInfo {
                entropy: vec![7; 32],
                realtime_ns: 1_700_000_000_000_000_000,
                rescan_disks: true,
                macs: vec![("02:00:00:00:00:01".into(), "02:aa:00:00:00:02".into())],
                network: None,
                flush_images: true,
            }),
        }));
        roundtrip(Frame::Message(Message::Request {
            id: 3,
            request: Request::CreateContainer(spec()),
        }));
        roundtrip(Frame::Message(Message::Response {
            id: 3,
            result: Err(ProtoError::new(ErrorCode::NotFound, "no such container")),
        }));
        roundtrip(Frame::Message(Message::Response {
            id: 4,
            result: Ok(Reply::Exited(ExitStatus::Signal(9))),
        }));
        roundtrip(Frame::Message(Message::Event(Event::Exited {
            process: ProcessId(1),
            status: ExitStatus::Code(3),
        })));
        roundtrip(Frame::Data {
            process: ProcessId(0xdead_beef),
            channel: Channel::Stderr,
            data: b"\x00\xffbytes".to_vec(),
        });
        roundtrip(Frame::Data {
            process: ProcessId(1),
            channel: Channel::Stdin,
            data: vec![],
        });
    }

    #[test]
    fn unknown_request_keeps_its_id() {
        let body = br#"{"request":{"id":42,"request":{"teleport":{"to":"mars"}}}}"#;
        let mut frame = vec![];
        frame.extend_from_slice(&((body.len() + 1) as u32).to_be_bytes());
        frame.push(KIND_MESSAGE);
        frame.extend_from_slice(body);
        let mut d = Decoder::new();
        d.feed(&frame);
        d.feed(&encode(&Frame::Message(Message::Request {
            id: 43,
            request: Request::Ping,
        })));
        match d.next_frame() {
            Err(Error::Json {
                request_id: Some(42),
                ..
            }) => {}
            other => panic!("unexpected {other:?}"),
        }
        // The bad frame was consumed; the next one decodes.
        assert!(matches!(
            d.next_frame(),
            Ok(Some(Frame::Message(Message::Request {
                id: 43,
                request: Request::Ping
            })))
        ));
    }

    #[test]
    fn missing_optional_fields_default() {
        let json = br#"{"request":{"id":1,"request":{"exec":{"container":"c","process_id":2,"process":{"args":["ls"]}}}}}"#;
        let m: Message = serde_json::from_slice(json).unwrap();
        let Message::Request {
            request: Request::Exec(e),
            ..
        } = m
        else {
            panic!("not an exec")
        };
        assert_eq!(e.process.args, ["ls"]);
        assert!(!e.process.tty && e.process.env.is_empty() && e.process.user.is_none());
    }

    #[test]
    fn bad_frames_are_typed_errors() {
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 0][..]),
            Err(Error::FrameLength(0))
        ));
        assert!(matches!(
            read_frame(&mut &[0xffu8, 0, 0, 0][..]),
            Err(Error::FrameLength(_))
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 1, 9][..]),
            Err(Error::FrameKind(9))
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 3, 1, 0, 0][..]),
            Err(Error::ShortData)
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 6, 1, 0, 0, 0, 1, 7][..]),
            Err(Error::Channel(7))
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 3, 0, b'{', b'}'][..]),
            Err(Error::Json {
                request_id: None,
                ..
            })
        ));
        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 9, 0][..]),
            Err(Error::Io(_))
        ));
        assert!(read_frame(&mut &[][..]).unwrap().is_none());
    }

    proptest::proptest! {
        /// Whatever the peer sends, decoding returns frames or typed errors, never panics, and
        /// well-framed garbage is consumed.
        #[test]
        fn decoder_never_panics(chunks in proptest::collection::vec(
            proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0..16)) {
            let mut d = Decoder::new();
            for c in &chunks {
                d.feed(c);
                while let Ok(Some(_)) | Err(Error::Json { .. } | Error::FrameKind(_)
                    | Error::ShortData | Error::Channel(_)) = d.next_frame() {
                    if d.pending() == 0 {
                        break;
                    }
                }
            }
        }

        #[test]
        fn data_frames_roundtrip(process in 0u32.., ch in 0u8..3, data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let f = Frame::Data { process: ProcessId(process), channel: Channel::from_byte(ch).unwrap(), data };
            let mut d = Decoder::new();
            d.feed(&encode(&f));
            proptest::prop_assert_eq!(d.next_frame().unwrap(), Some(f));
        }
    }

    #[test]
    fn shell_codes() {
        assert_eq!(ExitStatus::Code(3).shell_code(), 3);
        assert_eq!(ExitStatus::Signal(9).shell_code(), 137);
    }
}
