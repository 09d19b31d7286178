//! A small QMP (QEMU Machine Protocol) client over QEMU's unix socket: capabilities
//! negotiation, commands with ids, and an event stream for the watchdog.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, oneshot};

use crate::{Error, Result};

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value>>>>>;

/// A QMP event (`STOP`, `SHUTDOWN`, `GUEST_PANICKED`, …).
#[derive(Debug, Clone)]
pub(crate) struct QmpEvent {
    pub name: String,
    pub data: Value,
}

/// A connected, negotiated QMP session.
pub(crate) struct Qmp {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Pending,
    next_id: AtomicU64,
}

impl Qmp {
    /// Connects to `path` (retrying while QEMU creates it, up to `wait`), reads the greeting
    /// and leaves capabilities negotiation mode. Events arrive on the returned receiver.
    pub async fn connect(
        path: &Path,
        wait: Duration,
    ) -> Result<(Arc<Qmp>, mpsc::UnboundedReceiver<QmpEvent>)> {
        let stream = connect_retry(path, wait).await?;
        let (rd, wr) = stream.into_split();
        let mut lines = BufReader::new(rd).lines();
        let greeting = tokio::time::timeout(wait, lines.next_line())
            .await
            .map_err(|_| Error::Qmp("no greeting".into()))?
            .map_err(|e| Error::Qmp(format!("reading greeting: {e}")))?
            .ok_or_else(|| Error::Qmp("closed before greeting".into()))?;
        let g: Value = serde_json::from_str(&greeting)
            .map_err(|e| Error::Qmp(format!("bad greeting: {e}")))?;
        if g.get("QMP").is_none() {
            return Err(Error::Qmp(format!("unexpected greeting {greeting}")));
        }
        let pending: Pending = Arc::default();
        let (ev_tx, ev_rx) = mpsc::unbounded_channel();
        let p = pending.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    tracing::warn!(%line, "unparsable QMP line");
                    continue;
                };
                if let Some(name) = v.get("event").and_then(Value::as_str) {
                    let _ = ev_tx.send(QmpEvent {
                        name: name.to_string(),
                        data: v.get("data").cloned().unwrap_or(Value::Null),
                    });
                    continue;
                }
                let Some(id) = v.get("id").and_then(Value::as_u64) else {
                    continue;
                };
                let reply = match (v.get("return"), v.get("error")) {
                    (Some(r), _) => Ok(r.clone()),
                    (None, Some(e)) => Err(Error::Qmp(
                        e.get("desc")
                            .and_then(Value::as_str)
                            .unwrap_or("error")
                            .to_string(),
                    )),
                    _ => Err(Error::Qmp(format!("malformed reply {line}"))),
                };
                if let Some(tx) = p.lock().ok().and_then(|mut m| m.remove(&id)) {
                    let _ = tx.send(reply);
                }
            }
            // QEMU closed the socket: fail everything still waiting.
            if let Ok(mut m) = p.lock() {
                m.clear();
            }
            let _ = ev_tx.send(QmpEvent {
                name: "CLOSED".into(),
                data: Value::Null,
            });
        });
        let qmp = Arc::new(Qmp {
            writer: tokio::sync::Mutex::new(wr),
            pending,
            next_id: AtomicU64::new(1),
        });
        qmp.execute("qmp_capabilities", Value::Null).await?;
        Ok((qmp, ev_rx))
    }

    /// Runs one command and returns its `return` value.
    pub async fn execute(&self, command: &str, arguments: Value) -> Result<Value> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| Error::Qmp("state poisoned".into()))?
            .insert(id, tx);
        let mut msg = json!({ "execute": command, "id": id });
        if !arguments.is_null() {
            msg["arguments"] = arguments;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .lock()
            .await
            .write_all(line.as_bytes())
            .await
            .map_err(|e| Error::Qmp(format!("{command}: {e}")))?;
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Qmp(format!("{command}: connection closed"))),
            Err(_) => Err(Error::Qmp(format!("{command}: no reply in 10 s"))),
        }
    }

    /// Runs `getfd` handing QEMU `fd` under `name` (`SCM_RIGHTS` with the command), for
    /// commands that take descriptors by name (e.g. an outgoing `migrate` to `fd:NAME`).
    pub async fn getfd(&self, name: &str, fd: std::os::fd::RawFd) -> Result<()> {
        self.execute_with_fd("getfd", json!({ "fdname": name }), fd)
            .await
            .map(drop)
    }

    /// Runs `add-fd` handing QEMU `fd` (`SCM_RIGHTS`) into a new fd set; returns the set's
    /// id, for `/dev/fdset/N` file names (e.g. a block node's).
    pub async fn add_fd(&self, fd: std::os::fd::RawFd) -> Result<i64> {
        let r = self.execute_with_fd("add-fd", json!({}), fd).await?;
        r.get("fdset-id")
            .and_then(Value::as_i64)
            .ok_or_else(|| Error::Qmp(format!("add-fd: no fdset-id in {r}")))
    }

    /// Runs `command` with `fd` attached to it (`SCM_RIGHTS`).
    async fn execute_with_fd(
        &self,
        command: &str,
        arguments: Value,
        fd: std::os::fd::RawFd,
    ) -> Result<Value> {
        use std::os::fd::AsRawFd;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .map_err(|_| Error::Qmp("state poisoned".into()))?
            .insert(id, tx);
        let mut line = json!({ "execute": command, "arguments": arguments, "id": id }).to_string();
        line.push('\n');
        {
            let w = self.writer.lock().await;
            let sock = AsRef::<UnixStream>::as_ref(&*w).as_raw_fd();
            loop {
                match crate::util::send_with_fd(sock, line.as_bytes(), fd) {
                    Ok(n) if n == line.len() => break,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Ok(n) => {
                        return Err(Error::Qmp(format!(
                            "{command}: {n} of {} bytes sent",
                            line.len()
                        )))
                    }
                    Err(e) => return Err(Error::Qmp(format!("{command}: {e}"))),
                }
            }
        }
        match tokio::time::timeout(Duration::from_secs(10), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::Qmp(format!("{command}: connection closed"))),
            Err(_) => Err(Error::Qmp(format!("{command}: no reply in 10 s"))),
        }
    }

    /// `query-status`: the run state (`running`, `paused`, `shutdown`, `guest-panicked`, …).
    pub async fn status(&self) -> Result<String> {
        let r = self.execute("query-status", Value::Null).await?;
        Ok(r.get("status")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string())
    }
}

/// Connects to a unix socket that another process is about to create.
pub(crate) async fn connect_retry(path: &Path, wait: Duration) -> Result<UnixStream> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match UnixStream::connect(path).await {
            Ok(s) => return Ok(s),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(Error::io(format!("connecting to {}", path.display()), e))
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}
