//! [`StreamBackend`] over the pod runtime: pods are found by the CRI labels kubelet puts
//! on sandboxes (`io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`,
//! `io.kubernetes.pod.uid`), streams are the runtime's exec/attach streams, logs its CRI log
//! files. A previous container instance's log is expected beside the current one as
//! `<container>.log.1` (the node agent rotates it there when it restarts a container).

use std::path::PathBuf;

use bytes::Bytes;
use futures::future::BoxFuture;
use h8s_runtime::{ContainerState, ExecConfig, Runtime, SandboxState, StreamEvent};
use tokio::sync::mpsc;
use tracing::Instrument;

use super::{
    BackendError, ExecRequest, Input, LogFile, Output, PodConn, PodRef, Session, StreamBackend,
};

/// CRI label holding the pod's namespace.
pub const LABEL_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// CRI label holding the pod's name.
pub const LABEL_NAME: &str = "io.kubernetes.pod.name";
/// CRI label holding the pod's UID.
pub const LABEL_UID: &str = "io.kubernetes.pod.uid";

/// Queue depth between the runtime's stream and the protocol side, each way.
const QUEUE: usize = 16;

/// The streaming backend over [`Runtime`].
#[derive(Clone)]
pub struct RuntimeBackend {
    rt: Runtime,
}

impl RuntimeBackend {
    /// A backend over `rt`.
    pub fn new(rt: Runtime) -> RuntimeBackend {
        RuntimeBackend { rt }
    }
}

pub(crate) fn from_runtime(e: h8s_runtime::Error) -> BackendError {
    use h8s_runtime::Error as E;
    match e {
        E::NotFound { .. } => BackendError::NotFound(e.to_string()),
        E::InvalidArgument(_) | E::CommandNotFound(_) | E::CommandNotExecutable(_) => {
            BackendError::BadRequest(e.to_string())
        }
        E::FailedPrecondition(_) => BackendError::Unavailable(e.to_string()),
        other => BackendError::Internal(other.to_string()),
    }
}

/// The runtime id of the newest running sandbox of `pod`.
async fn resolve(rt: &Runtime, pod: &PodRef) -> Result<String, BackendError> {
    let all = rt.list_sandboxes().await.map_err(from_runtime)?;
    let mut found: Vec<_> = all
        .into_iter()
        .filter(|s| {
            let l = &s.config.labels;
            l.get(LABEL_NAMESPACE).map(String::as_str) == Some(pod.namespace.as_str())
                && l.get(LABEL_NAME).map(String::as_str) == Some(pod.name.as_str())
                && match (&pod.uid, l.get(LABEL_UID)) {
                    (Some(want), Some(have)) => want == have,
                    _ => true,
                }
        })
        .collect();
    // Newest first; a ready one before any other.
    found.sort_by(|a, b| b.created_at.cmp(&a.created_at));
    found.sort_by_key(|s| s.state != SandboxState::Ready);
    found
        .into_iter()
        .next()
        .map(|s| s.id)
        .ok_or_else(|| BackendError::NotFound(format!("pod {pod} is not on this node")))
}

/// Bridges a runtime stream to a [`Session`] through bounded queues.
pub(crate) fn bridge(stream: h8s_runtime::Stream) -> Session {
    let h8s_runtime::Stream {
        input: mut rt_in,
        output: mut rt_out,
    } = stream;
    let (in_tx, mut in_rx) = mpsc::channel::<Input>(QUEUE);
    let (out_tx, out_rx) = mpsc::channel::<Output>(QUEUE);
    // The supervisor takes a half-closed socket for a client that went away: the writing
    // half stays open until the output has ended.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        async move {
            while let Some(i) = in_rx.recv().await {
                let r = match i {
                    Input::Stdin(b) => rt_in.stdin(&b).await,
                    Input::CloseStdin => rt_in.close_stdin().await,
                    Input::Resize(sz) => rt_in.resize(sz.height, sz.width).await,
                };
                if r.is_err() {
                    break;
                }
            }
            let _ = done_rx.await;
            drop(rt_in);
        }
        .in_current_span(),
    );
    tokio::spawn(
        async move {
            let _done = done_tx;
            loop {
                let o = match rt_out.next().await {
                    Ok(Some(StreamEvent::Stdout(d))) => Output::Stdout(Bytes::from(d)),
                    Ok(Some(StreamEvent::Stderr(d))) => Output::Stderr(Bytes::from(d)),
                    Ok(Some(StreamEvent::Exit(c))) => {
                        let _ = out_tx.send(Output::Exit(c)).await;
                        return;
                    }
                    Ok(None) => {
                        tracing::warn!("the pod's stream ended without an exit status");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "reading the pod's stream");
                        return;
                    }
                };
                // Waiting here is the back-pressure: the runtime's socket is not read on.
                if out_tx.send(o).await.is_err() {
                    return;
                }
            }
        }
        .in_current_span(),
    );
    Session {
        input: in_tx,
        output: out_rx,
    }
}

impl StreamBackend for RuntimeBackend {
    fn exec(
        &self,
        pod: PodRef,
        container: String,
        req: ExecRequest,
    ) -> BoxFuture<'static, Result<Session, BackendError>> {
        let rt = self.rt.clone();
        Box::pin(async move {
            let id = resolve(&rt, &pod).await?;
            let s = rt
                .exec(
                    &id,
                    &container,
                    ExecConfig {
                        command: req.command,
                        env: Vec::new(),
                        tty: req.tty,
                        stdin: req.stdin,
                        size: None,
                    },
                )
                .await
                .map_err(from_runtime)?;
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
        let rt = self.rt.clone();
        Box::pin(async move {
            let id = resolve(&rt, &pod).await?;
            let s = rt.attach(&id, &container).await.map_err(from_runtime)?;
            Ok(bridge(s))
        })
    }

    fn log_file(
        &self,
        pod: PodRef,
        container: String,
        previous: bool,
    ) -> BoxFuture<'static, Result<LogFile, BackendError>> {
        let rt = self.rt.clone();
        Box::pin(async move {
            let id = resolve(&rt, &pod).await?;
            let status = rt.sandbox_status(&id).await.map_err(from_runtime)?;
            if !status.containers.iter().any(|c| c.config.name == container) {
                return Err(BackendError::BadRequest(format!(
                    "container {container:?} in pod {:?} is waiting to start",
                    pod.name
                )));
            }
            let path = rt.log_path(&id, &container);
            if !previous {
                return Ok(LogFile { path });
            }
            let mut prev = path.into_os_string();
            prev.push(".1");
            let prev = PathBuf::from(prev);
            if prev.is_file() {
                Ok(LogFile { path: prev })
            } else {
                Err(BackendError::BadRequest(format!(
                    "previous terminated container {container:?} in pod {:?} not found",
                    pod.name
                )))
            }
        })
    }

    fn is_running(&self, pod: PodRef, container: String) -> BoxFuture<'static, bool> {
        let rt = self.rt.clone();
        Box::pin(async move {
            let Ok(id) = resolve(&rt, &pod).await else {
                return false;
            };
            rt.container_status(&id, &container)
                .await
                .is_ok_and(|c| c.state == ContainerState::Running)
        })
    }

    fn port_forward(
        &self,
        pod: PodRef,
        port: u16,
    ) -> BoxFuture<'static, Result<Box<dyn PodConn>, BackendError>> {
        let rt = self.rt.clone();
        Box::pin(async move {
            let id = resolve(&rt, &pod).await?;
            let s = rt.port_forward(&id, port).await.map_err(from_runtime)?;
            Ok(Box::new(conn(s)) as Box<dyn PodConn>)
        })
    }
}

/// A runtime port-forward stream as a byte stream: stdin frames carry bytes to the pod,
/// stdout frames bring them back, the exit is the connection's end.
pub(crate) fn conn(stream: h8s_runtime::Stream) -> tokio::io::DuplexStream {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (near, far) = tokio::io::duplex(64 * 1024);
    let (mut far_rd, mut far_wr) = tokio::io::split(far);
    let h8s_runtime::Stream {
        input: mut rt_in,
        output: mut rt_out,
    } = stream;
    // As in `bridge`: the socket's writing half lives until the pod side has ended.
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(
        async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match far_rd.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = rt_in.close_stdin().await;
                        break;
                    }
                    Ok(n) => {
                        if rt_in.stdin(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            }
            let _ = done_rx.await;
            drop(rt_in);
        }
        .in_current_span(),
    );
    tokio::spawn(
        async move {
            let _done = done_tx;
            loop {
                match rt_out.next().await {
                    Ok(Some(StreamEvent::Stdout(d))) | Ok(Some(StreamEvent::Stderr(d))) => {
                        if far_wr.write_all(&d).await.is_err() {
                            return;
                        }
                    }
                    _ => {
                        let _ = far_wr.shutdown().await;
                        return;
                    }
                }
            }
        }
        .in_current_span(),
    );
    near
}
