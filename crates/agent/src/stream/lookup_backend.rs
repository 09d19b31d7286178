//! [`StreamBackend`] over the agent's own pod table ([`PodLookup`]): the pod workers know
//! which sandbox runs a pod and which runtime container is the current (and the previous)
//! instance of each Kubernetes container; the runtime does the streaming.

use std::sync::Arc;

use futures::future::BoxFuture;
use h8s_runtime::{ContainerState, ExecConfig, PodRuntime};

use super::runtime_backend::{bridge, conn, from_runtime};
use super::{BackendError, ExecRequest, LogFile, PodConn, PodRef, Session, StreamBackend};
use crate::pods::PodLookup;

/// The streaming backend of a running node agent.
#[derive(Clone)]
pub struct LookupBackend {
    lookup: PodLookup,
}

impl LookupBackend {
    /// A backend over the agent's pod table.
    pub fn new(lookup: PodLookup) -> LookupBackend {
        LookupBackend { lookup }
    }

    fn current(&self, pod: &PodRef, container: &str) -> Result<(String, String), BackendError> {
        if self.lookup.pod(&pod.namespace, &pod.name).is_none() {
            return Err(BackendError::NotFound(format!(
                "pod {pod} is not on this node"
            )));
        }
        self.lookup
            .container(&pod.namespace, &pod.name, Some(container))
            .ok_or_else(|| {
                BackendError::BadRequest(format!(
                    "container {container:?} in pod {:?} is waiting to start",
                    pod.name
                ))
            })
    }

    fn runtime(&self) -> Arc<dyn PodRuntime> {
        self.lookup.runtime()
    }
}

impl StreamBackend for LookupBackend {
    fn exec(
        &self,
        pod: PodRef,
        container: String,
        req: ExecRequest,
    ) -> BoxFuture<'static, Result<Session, BackendError>> {
        let found = self.current(&pod, &container);
        let rt = self.runtime();
        Box::pin(async move {
            let (sandbox, name) = found?;
            let cfg = ExecConfig {
                command: req.command,
                env: Vec::new(),
                tty: req.tty,
                stdin: req.stdin,
                size: None,
            };
            let s = rt.exec(&sandbox, &name, cfg).await.map_err(from_runtime)?;
            Ok(bridge(s))
        })
    }

    fn attach(
        &self,
        pod: PodRef,
        container: String,
        _stdin: bool,
        _tty: bool,
    ) -> BoxFuture<'static, Result<Session, BackendError>> {
        let found = self.current(&pod, &container);
        let rt = self.runtime();
        Box::pin(async move {
            let (sandbox, name) = found?;
            let s = rt.attach(&sandbox, &name).await.map_err(from_runtime)?;
            Ok(bridge(s))
        })
    }

    fn log_file(
        &self,
        pod: PodRef,
        container: String,
        previous: bool,
    ) -> BoxFuture<'static, Result<LogFile, BackendError>> {
        let found = if previous {
            self.lookup
                .previous_container(&pod.namespace, &pod.name, &container)
                .ok_or_else(|| {
                    BackendError::BadRequest(format!(
                        "previous terminated container {container:?} in pod {:?} not found",
                        pod.name
                    ))
                })
        } else {
            self.current(&pod, &container)
        };
        let rt = self.runtime();
        Box::pin(async move {
            let (sandbox, name) = found?;
            Ok(LogFile {
                path: rt.log_path(&sandbox, &name),
            })
        })
    }

    fn is_running(&self, pod: PodRef, container: String) -> BoxFuture<'static, bool> {
        let found = self.current(&pod, &container);
        let rt = self.runtime();
        Box::pin(async move {
            let Ok((sandbox, name)) = found else {
                return false;
            };
            rt.container_status(&sandbox, &name)
                .await
                .is_ok_and(|c| c.state == ContainerState::Running)
        })
    }

    fn port_forward(
        &self,
        pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn PodConn>, BackendError>> {
        let sandbox = self
            .lookup
            .pod(&pod.namespace, &pod.name)
            .and_then(|p| p.sandbox)
            .ok_or_else(|| BackendError::NotFound(format!("pod {pod} has no VM on this node")));
        let rt = self.runtime();
        Box::pin(async move {
            let sandbox = sandbox?;
            let s = rt
                .port_forward(&sandbox, port)
                .await
                .map_err(from_runtime)?;
            Ok(Box::new(conn(s)) as Box<dyn PodConn>)
        })
    }
}
