//! The runtime API as narrow traits, CRI's three services: what the node agent programs
//! against (so it can be tested with another implementation). [`Runtime`] implements all three
//! with the `vm` backend.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use crate::api::{ContainerConfig, ContainerStatus, ExecConfig, SandboxConfig, SandboxStatus};
use crate::client::{Runtime, Stream};
use crate::image::{Image, PullOptions, Removed};
use crate::Result;

/// Pod sandboxes (CRI `RunPodSandbox`, `StopPodSandbox`, `RemovePodSandbox`,
/// `PodSandboxStatus`, `ListPodSandbox`).
pub trait SandboxService {
    /// Starts a pod; returns its id once it can take containers.
    fn run_sandbox(&self, config: SandboxConfig) -> impl Future<Output = Result<String>> + Send;
    /// Stops its containers and its VM.
    fn stop_sandbox(&self, id: &str, grace: Duration) -> impl Future<Output = Result<()>> + Send;
    /// Forgets a stopped pod (`force`: stop it first).
    fn remove_sandbox(&self, id: &str, force: bool) -> impl Future<Output = Result<()>> + Send;
    /// One pod.
    fn sandbox_status(&self, id: &str) -> impl Future<Output = Result<SandboxStatus>> + Send;
    /// All pods.
    fn list_sandboxes(&self) -> impl Future<Output = Result<Vec<SandboxStatus>>> + Send;
}

/// Containers in a pod (CRI `CreateContainer` … `Exec`, `Attach`).
pub trait ContainerService {
    /// Creates a container in a running pod.
    fn create_container(
        &self,
        pod: &str,
        config: ContainerConfig,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Starts it.
    fn start_container(&self, pod: &str, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Stops it (SIGTERM, SIGKILL after `grace`).
    fn stop_container(
        &self,
        pod: &str,
        name: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<()>> + Send;
    /// Removes a container that is not running.
    fn remove_container(&self, pod: &str, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// One container.
    fn container_status(
        &self,
        pod: &str,
        name: &str,
    ) -> impl Future<Output = Result<ContainerStatus>> + Send;
    /// A pod's containers.
    fn list_containers(
        &self,
        pod: &str,
    ) -> impl Future<Output = Result<Vec<ContainerStatus>>> + Send;
    /// Its stdio.
    fn attach(&self, pod: &str, name: &str) -> impl Future<Output = Result<Stream>> + Send;
    /// A new process in it.
    fn exec(
        &self,
        pod: &str,
        name: &str,
        config: ExecConfig,
    ) -> impl Future<Output = Result<Stream>> + Send;
}

/// Images (CRI `PullImage`, `ListImages`, `ImageStatus`, `RemoveImage`; plus import).
pub trait ImageService {
    /// Pulls from a registry.
    /// (Not `Send`: the image store's pull future is not.)
    fn pull_image(
        &self,
        reference: &str,
        opts: &PullOptions,
    ) -> impl Future<Output = Result<Image>>;
    /// Imports an OCI layout or archive.
    fn import_image(
        &self,
        path: &Path,
        name: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Image>>> + Send;
    /// All images.
    fn list_images(&self) -> Result<Vec<Image>>;
    /// One image.
    fn image_status(&self, name_or_id: &str) -> Result<Image>;
    /// Removes a name or the image.
    fn remove_image(&self, name_or_id: &str) -> Result<Removed>;
}

impl SandboxService for Runtime {
    fn run_sandbox(&self, config: SandboxConfig) -> impl Future<Output = Result<String>> + Send {
        Runtime::run_sandbox(self, config)
    }
    fn stop_sandbox(&self, id: &str, grace: Duration) -> impl Future<Output = Result<()>> + Send {
        Runtime::stop_sandbox(self, id, grace)
    }
    fn remove_sandbox(&self, id: &str, force: bool) -> impl Future<Output = Result<()>> + Send {
        Runtime::remove_sandbox(self, id, force)
    }
    fn sandbox_status(&self, id: &str) -> impl Future<Output = Result<SandboxStatus>> + Send {
        Runtime::sandbox_status(self, id)
    }
    fn list_sandboxes(&self) -> impl Future<Output = Result<Vec<SandboxStatus>>> + Send {
        Runtime::list_sandboxes(self)
    }
}

impl ContainerService for Runtime {
    fn create_container(
        &self,
        pod: &str,
        config: ContainerConfig,
    ) -> impl Future<Output = Result<()>> + Send {
        Runtime::create_container(self, pod, config)
    }
    fn start_container(&self, pod: &str, name: &str) -> impl Future<Output = Result<()>> + Send {
        Runtime::start_container(self, pod, name)
    }
    fn stop_container(
        &self,
        pod: &str,
        name: &str,
        grace: Duration,
    ) -> impl Future<Output = Result<()>> + Send {
        Runtime::stop_container(self, pod, name, grace)
    }
    fn remove_container(&self, pod: &str, name: &str) -> impl Future<Output = Result<()>> + Send {
        Runtime::remove_container(self, pod, name)
    }
    fn container_status(
        &self,
        pod: &str,
        name: &str,
    ) -> impl Future<Output = Result<ContainerStatus>> + Send {
        Runtime::container_status(self, pod, name)
    }
    fn list_containers(
        &self,
        pod: &str,
    ) -> impl Future<Output = Result<Vec<ContainerStatus>>> + Send {
        Runtime::list_containers(self, pod)
    }
    fn attach(&self, pod: &str, name: &str) -> impl Future<Output = Result<Stream>> + Send {
        Runtime::attach(self, pod, name)
    }
    fn exec(
        &self,
        pod: &str,
        name: &str,
        config: ExecConfig,
    ) -> impl Future<Output = Result<Stream>> + Send {
        Runtime::exec(self, pod, name, config)
    }
}

impl ImageService for Runtime {
    fn pull_image(
        &self,
        reference: &str,
        opts: &PullOptions,
    ) -> impl Future<Output = Result<Image>> {
        Runtime::pull_image(self, reference, opts)
    }
    fn import_image(
        &self,
        path: &Path,
        name: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Image>>> + Send {
        Runtime::import_image(self, path, name)
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
}
