//! The runtime API as narrow, object-safe traits, CRI's three services: the seam the node
//! agent programs against (as `Arc<dyn PodRuntime>`, so its unit tests can use a fake).
//! [`Runtime`] implements all three with the `vm` backend.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use crate::api::{
    Accel, ContainerConfig, ContainerStatus, ExecConfig, ImageDisk, SandboxConfig, SandboxStatus,
};
use crate::client::{Runtime, Stream};
use crate::image::{Image, PullOptions, Removed};
use crate::{Error, Result};

/// A boxed, `Send` future: what the object-safe service methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The runtime's name as CRI's `RuntimeName` (and the prefix of container ids: `h8s-vm://`).
pub const RUNTIME_NAME: &str = "h8s-vm";

/// What the runtime says about itself (CRI `Version`, plus the accelerator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeInfo {
    /// [`RUNTIME_NAME`] for the VM backend.
    pub name: String,
    /// The runtime's version.
    pub version: String,
    /// The accelerator new pods get on this host.
    pub accel: Accel,
    /// Why that accelerator.
    pub accel_reason: String,
    /// Guest memory a pod gets when it asks for none, MiB.
    pub default_memory_mib: u32,
    /// Host memory a pod VM costs beyond its guest RAM (QEMU heaps, translation cache), MiB.
    pub overhead_memory_mib: u32,
}

/// Pod sandboxes (CRI `RunPodSandbox`, `StopPodSandbox`, `RemovePodSandbox`,
/// `PodSandboxStatus`, `ListPodSandbox`).
pub trait SandboxService: Send + Sync {
    /// Starts a pod; returns its id once it can take containers.
    fn run_sandbox(&self, config: SandboxConfig) -> BoxFuture<'_, Result<String>>;
    /// Stops its containers and its VM.
    fn stop_sandbox<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<()>>;
    /// Forgets a stopped pod (`force`: stop it first).
    fn remove_sandbox<'a>(&'a self, id: &'a str, force: bool) -> BoxFuture<'a, Result<()>>;
    /// One pod.
    fn sandbox_status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SandboxStatus>>;
    /// All pods.
    fn list_sandboxes(&self) -> BoxFuture<'_, Result<Vec<SandboxStatus>>>;
    /// Takes over a pod whose VM runs but whose supervisor died; `false` if there was
    /// nothing to do.
    fn recover<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>>;
    /// Replaces the files of one of the pod's volumes, atomically.
    fn write_volume<'a>(
        &'a self,
        id: &'a str,
        content: h8s_guest::VolumeContent,
    ) -> BoxFuture<'a, Result<()>>;
    /// Runs a tcpSocket/httpGet probe inside the pod VM; `Ok` when it passes.
    fn probe<'a>(&'a self, id: &'a str, spec: h8s_guest::ProbeSpec) -> BoxFuture<'a, Result<()>>;
    /// Changes the pod's view of its Network's Services (in-pod proxy and DNS). Runtimes
    /// without it refuse.
    fn update_services<'a>(
        &'a self,
        id: &'a str,
        update: h8s_guest::ServiceUpdate,
    ) -> BoxFuture<'a, Result<()>> {
        let _ = (id, update);
        Box::pin(async {
            Err(crate::Error::FailedPrecondition(
                "this runtime has no in-pod Service proxy".into(),
            ))
        })
    }
    /// The pod's local storage usage inside its VM (containers' writable layers, pod
    /// volumes). Runtimes without it refuse.
    fn storage_usage<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<h8s_guest::StorageUsage>> {
        let _ = id;
        Box::pin(async {
            Err(crate::Error::FailedPrecondition(
                "this runtime does not report storage usage".into(),
            ))
        })
    }
    /// The runtime's name, version and accelerator.
    fn info(&self) -> RuntimeInfo;
    /// Retires every VM template and starts building the one for the usual pod shape (one
    /// image, a NIC, default memory, one vCPU) in the background; a node agent calls it when
    /// it starts, so each agent run restores pods from freshly built templates (their own
    /// kernel layout and RNG state). Returns how many templates were retired.
    fn rotate_templates(&self) -> usize {
        0
    }
}

/// Containers in a pod (CRI `CreateContainer` … `Exec`, `Attach`).
pub trait ContainerService: Send + Sync {
    /// Creates a container in a running pod.
    fn create_container<'a>(
        &'a self,
        pod: &'a str,
        config: ContainerConfig,
    ) -> BoxFuture<'a, Result<()>>;
    /// Starts it.
    fn start_container<'a>(&'a self, pod: &'a str, name: &'a str) -> BoxFuture<'a, Result<()>>;
    /// Stops it (SIGTERM, SIGKILL after `grace`).
    fn stop_container<'a>(
        &'a self,
        pod: &'a str,
        name: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<()>>;
    /// Removes a container that is not running.
    fn remove_container<'a>(&'a self, pod: &'a str, name: &'a str) -> BoxFuture<'a, Result<()>>;
    /// One container.
    fn container_status<'a>(
        &'a self,
        pod: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<ContainerStatus>>;
    /// A pod's containers.
    fn list_containers<'a>(&'a self, pod: &'a str) -> BoxFuture<'a, Result<Vec<ContainerStatus>>>;
    /// Its stdio.
    fn attach<'a>(&'a self, pod: &'a str, name: &'a str) -> BoxFuture<'a, Result<Stream>>;
    /// A new process in it.
    fn exec<'a>(
        &'a self,
        pod: &'a str,
        name: &'a str,
        config: ExecConfig,
    ) -> BoxFuture<'a, Result<Stream>>;
    /// The container's CRI log file (it may not exist yet).
    fn log_path(&self, pod: &str, name: &str) -> PathBuf;
    /// A connection to `127.0.0.1:port` inside the pod VM, as a stream (stdin to the port,
    /// stdout from it, exit at its end). Runtimes without it refuse.
    fn port_forward<'a>(&'a self, pod: &'a str, port: u16) -> BoxFuture<'a, Result<Stream>> {
        let _ = (pod, port);
        Box::pin(async {
            Err(crate::Error::FailedPrecondition(
                "this runtime cannot forward ports".into(),
            ))
        })
    }
}

/// Images (CRI `PullImage`, `ListImages`, `ImageStatus`, `RemoveImage`; plus import and the
/// disk a pod VM gets for an image).
pub trait ImageService: Send + Sync {
    /// Pulls from a registry.
    fn pull_image<'a>(
        &'a self,
        reference: &'a str,
        opts: PullOptions,
    ) -> BoxFuture<'a, Result<Image>>;
    /// Imports an OCI layout or archive.
    fn import_image<'a>(
        &'a self,
        path: &'a Path,
        name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Image>>>;
    /// All images.
    fn list_images(&self) -> Result<Vec<Image>>;
    /// One image.
    fn image_status(&self, name_or_id: &str) -> Result<Image>;
    /// Removes a name or the image.
    fn remove_image(&self, name_or_id: &str) -> Result<Removed>;
    /// The disk a pod needs for the image `reference` (present in the store), named
    /// `reference`, with the image itself (config, digests).
    fn image_disk<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<(ImageDisk, Image)>>;
}

/// The whole runtime: what the node agent holds as `Arc<dyn PodRuntime>`.
pub trait PodRuntime: SandboxService + ContainerService + ImageService {}

impl<T: SandboxService + ContainerService + ImageService> PodRuntime for T {}

impl SandboxService for Runtime {
    fn run_sandbox(&self, config: SandboxConfig) -> BoxFuture<'_, Result<String>> {
        Box::pin(Runtime::run_sandbox(self, config))
    }
    fn stop_sandbox<'a>(&'a self, id: &'a str, grace: Duration) -> BoxFuture<'a, Result<()>> {
        Box::pin(Runtime::stop_sandbox(self, id, grace))
    }
    fn remove_sandbox<'a>(&'a self, id: &'a str, force: bool) -> BoxFuture<'a, Result<()>> {
        Box::pin(Runtime::remove_sandbox(self, id, force))
    }
    fn sandbox_status<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SandboxStatus>> {
        Box::pin(Runtime::sandbox_status(self, id))
    }
    fn list_sandboxes(&self) -> BoxFuture<'_, Result<Vec<SandboxStatus>>> {
        Box::pin(Runtime::list_sandboxes(self))
    }
    fn recover<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<bool>> {
        Box::pin(Runtime::recover(self, id))
    }
    fn write_volume<'a>(
        &'a self,
        id: &'a str,
        content: h8s_guest::VolumeContent,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Runtime::write_volume(self, id, content))
    }
    fn probe<'a>(&'a self, id: &'a str, spec: h8s_guest::ProbeSpec) -> BoxFuture<'a, Result<()>> {
        Box::pin(Runtime::probe(self, id, spec))
    }
    fn update_services<'a>(
        &'a self,
        id: &'a str,
        update: h8s_guest::ServiceUpdate,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Runtime::update_services(self, id, update))
    }
    fn storage_usage<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<h8s_guest::StorageUsage>> {
        Box::pin(Runtime::storage_usage(self, id))
    }
    fn info(&self) -> RuntimeInfo {
        Runtime::info(self)
    }
    fn rotate_templates(&self) -> usize {
        let n = Runtime::rotate_templates(self);
        // Warm clones of the retired templates go too (a previous agent run's).
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            let me = self.clone();
            h.spawn(async move {
                let n = me.drain_pool().await;
                if n > 0 {
                    tracing::info!(clones = n, "removed the warm clones of retired templates");
                }
            });
        }
        let mut usual = SandboxConfig::new("template");
        usual.images.push(crate::ImageDisk {
            name: "image".into(),
            path: "/dev/null".into(),
        });
        usual.network = Some(crate::NetworkAttachment {
            tap: String::new(),
            mac: String::new(),
            address: String::new(),
            gateway: None,
            mtu: 1500,
            dns: vec![],
            cluster_dns: None,
        });
        if let Err(e) = self.prepare_template(&usual) {
            tracing::warn!(error = %e, "cannot prepare the usual VM template");
        }
        n
    }
}

impl ContainerService for Runtime {
    fn create_container<'a>(
        &'a self,
        pod: &'a str,
        config: ContainerConfig,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Runtime::create_container(self, pod, config))
    }
    fn start_container<'a>(&'a self, pod: &'a str, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(Runtime::start_container(self, pod, name))
    }
    fn stop_container<'a>(
        &'a self,
        pod: &'a str,
        name: &'a str,
        grace: Duration,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(Runtime::stop_container(self, pod, name, grace))
    }
    fn remove_container<'a>(&'a self, pod: &'a str, name: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(Runtime::remove_container(self, pod, name))
    }
    fn container_status<'a>(
        &'a self,
        pod: &'a str,
        name: &'a str,
    ) -> BoxFuture<'a, Result<ContainerStatus>> {
        Box::pin(Runtime::container_status(self, pod, name))
    }
    fn list_containers<'a>(&'a self, pod: &'a str) -> BoxFuture<'a, Result<Vec<ContainerStatus>>> {
        Box::pin(Runtime::list_containers(self, pod))
    }
    fn attach<'a>(&'a self, pod: &'a str, name: &'a str) -> BoxFuture<'a, Result<Stream>> {
        Box::pin(Runtime::attach(self, pod, name))
    }
    fn exec<'a>(
        &'a self,
        pod: &'a str,
        name: &'a str,
        config: ExecConfig,
    ) -> BoxFuture<'a, Result<Stream>> {
        Box::pin(Runtime::exec(self, pod, name, config))
    }
    fn log_path(&self, pod: &str, name: &str) -> PathBuf {
        Runtime::log_path(self, pod, name)
    }
    fn port_forward<'a>(&'a self, pod: &'a str, port: u16) -> BoxFuture<'a, Result<Stream>> {
        Box::pin(Runtime::port_forward(self, pod, port))
    }
}

impl ImageService for Runtime {
    fn pull_image<'a>(
        &'a self,
        reference: &'a str,
        opts: PullOptions,
    ) -> BoxFuture<'a, Result<Image>> {
        // The image store's pull future is not `Send`: drive it on a blocking-pool thread of
        // the caller's runtime (no runtime of its own).
        let this = self.clone();
        let reference = reference.to_string();
        Box::pin(async move {
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                handle.block_on(Runtime::pull_image(&this, &reference, &opts))
            })
            .await
            .map_err(|e| Error::Image(format!("pull task failed: {e}")))?
        })
    }
    fn import_image<'a>(
        &'a self,
        path: &'a Path,
        name: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<Image>>> {
        Box::pin(Runtime::import_image(self, path, name))
    }
    fn list_images(&self) -> Result<Vec<Image>> {
        Runtime::list_images(self)
    }
    fn image_status(&self, name_or_id: &str) -> Result<Image> {
        Runtime::image_status(self, name_or_id)
    }
    fn remove_image(&self, name_or_id: &str) -> Result<Removed> {
        Runtime::remove_image(self, name_or_id)
    }
    fn image_disk<'a>(&'a self, reference: &'a str) -> BoxFuture<'a, Result<(ImageDisk, Image)>> {
        Box::pin(async move {
            let store = self.images()?;
            let image = store.status(reference)?;
            let path = store.rootfs(&image).await?;
            Ok((
                ImageDisk {
                    name: reference.to_string(),
                    path,
                },
                image,
            ))
        })
    }
}
