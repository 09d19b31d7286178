//! The host end of the guest agent's virtio-serial port: sends requests, matches responses,
//! and hands guest output and events, in order, to the pod supervisor.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use h8s_guest::{
    Channel, Decoder, Event, Frame, Hello, Message, ProcessId, ProtoError, Reply, Request,
    RequestId,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

type Pending = Arc<Mutex<HashMap<RequestId, oneshot::Sender<Result<Reply, ProtoError>>>>>;

/// What the guest says unprompted, in the order it said it.
#[derive(Debug)]
pub(crate) enum GuestEvent {
    Hello(Hello),
    Output {
        process: ProcessId,
        channel: Channel,
        data: Vec<u8>,
    },
    Event(Event),
    /// The port closed (VM gone) or the stream broke.
    Closed(String),
}

/// A connected agent channel.
pub(crate) struct Agent {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
}

impl Agent {
    /// Connects to QEMU's chardev socket for the port; guest events arrive on the receiver.
    pub async fn connect(
        path: &Path,
        wait: Duration,
    ) -> Result<(Arc<Agent>, mpsc::UnboundedReceiver<GuestEvent>)> {
        let stream = super::qmp::connect_retry(path, wait).await?;
        let (mut rd, wr) = stream.into_split();
        let pending: Pending = Arc::default();
        let (tx, rx) = mpsc::unbounded_channel();
        let p = pending.clone();
        tokio::spawn(async move {
            let mut dec = Decoder::new();
            let mut buf = vec![0u8; 64 * 1024];
            let why = 'read: loop {
                let n = match rd.read(&mut buf).await {
                    Ok(0) => break 'read "agent port closed".to_string(),
                    Ok(n) => n,
                    Err(e) => break 'read format!("reading agent port: {e}"),
                };
                dec.feed(&buf[..n]);
                loop {
                    match dec.next_frame() {
                        Ok(None) => break,
                        Ok(Some(Frame::Data {
                            process,
                            channel,
                            data,
                        })) => {
                            let _ = tx.send(GuestEvent::Output {
                                process,
                                channel,
                                data,
                            });
                        }
                        Ok(Some(Frame::Message(Message::Response { id, result }))) => {
                            if let Some(tx) = p.lock().ok().and_then(|mut m| m.remove(&id)) {
                                let _ = tx.send(result);
                            }
                        }
                        Ok(Some(Frame::Message(Message::Hello(h)))) => {
                            let _ = tx.send(GuestEvent::Hello(h));
                        }
                        Ok(Some(Frame::Message(Message::Event(e)))) => {
                            let _ = tx.send(GuestEvent::Event(e));
                        }
                        Ok(Some(Frame::Message(Message::Request { .. }))) => {
                            tracing::warn!("guest sent a request; ignored");
                        }
                        // A well-framed message we cannot decode (a newer event): skip it.
                        Err(h8s_guest::Error::Json { .. }) => {
                            tracing::debug!("undecodable guest message skipped");
                        }
                        Err(e) => break 'read format!("agent protocol: {e}"),
                    }
                }
            };
            if let Ok(mut m) = p.lock() {
                m.clear();
            }
            let _ = tx.send(GuestEvent::Closed(why));
        });
        Ok((
            Arc::new(Agent {
                writer: tokio::sync::Mutex::new(wr),
                pending,
                next_id: AtomicU64::new(1),
            }),
            rx,
        ))
    }

    async fn send(&self, frame: &Frame) -> Result<()> {
        let bytes = h8s_guest::encode(frame);
        self.writer
            .lock()
            .await
            .write_all(&bytes)
            .await
            .map_err(|e| Error::Agent(format!("writing to agent port: {e}")))
    }

    /// Sends a request and waits for its response (no timeout: `Wait` may take forever;
    /// callers bound it where it matters).
    pub async fn request(&self, request: Request) -> Result<Reply> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| Error::Agent("state poisoned".into()))?
            .insert(id, tx);
        if let Err(e) = self
            .send(&Frame::Message(Message::Request { id, request }))
            .await
        {
            if let Ok(mut m) = self.pending.lock() {
                m.remove(&id);
            }
            return Err(e);
        }
        match rx.await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(e)) => Err(from_proto(e)),
            Err(_) => Err(Error::Agent("VM connection closed".into())),
        }
    }

    /// Like [`Agent::request`] with a deadline.
    pub async fn request_timeout(&self, request: Request, t: Duration) -> Result<Reply> {
        tokio::time::timeout(t, self.request(request))
            .await
            .map_err(|_| Error::Agent(format!("no answer in {t:?}")))?
    }

    /// Sends stdin bytes to a process.
    pub async fn stdin(&self, process: ProcessId, data: &[u8]) -> Result<()> {
        for chunk in data.chunks(h8s_guest::MAX_DATA_LEN) {
            self.send(&Frame::Data {
                process,
                channel: Channel::Stdin,
                data: chunk.to_vec(),
            })
            .await?;
        }
        Ok(())
    }
}

/// Maps a guest error to the runtime's.
pub(crate) fn from_proto(e: ProtoError) -> Error {
    use h8s_guest::ErrorCode as C;
    match e.code {
        C::ExecutableNotFound => {
            // The agent folds "not found" and "not executable" into one code; its message
            // tells them apart.
            if e.message.contains("ermission") || e.message.contains("EACCES") {
                Error::CommandNotExecutable(e.message)
            } else {
                Error::CommandNotFound(e.message)
            }
        }
        C::NotFound => Error::NotFound {
            kind: "object",
            id: e.message,
        },
        C::AlreadyExists => Error::AlreadyExists {
            kind: "object",
            id: e.message,
        },
        C::InvalidArgument => Error::InvalidArgument(e.message),
        C::FailedPrecondition | C::NotRunning => Error::FailedPrecondition(e.message),
        _ => Error::Agent(e.to_string()),
    }
}
