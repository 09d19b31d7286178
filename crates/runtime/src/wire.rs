//! The framing between a client (`h8s`, the node agent) and a pod's supervisor (shim) on the
//! pod's unix socket: `kind: u8, len: u32 BE, payload`. A connection carries one request and
//! its response; after an `Attach` or `Exec` it stays open as a stdio stream.

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::api::{ContainerConfig, ExecConfig, SandboxStatus};
use crate::error::WireError;
use crate::{Error, Result};

/// Largest frame accepted (a peer sending more is broken or hostile).
const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Kind {
    Request = 1,
    Response = 2,
    Stdin = 3,
    Stdout = 4,
    Stderr = 5,
    StdinClose = 6,
    Resize = 7,
    Signal = 8,
    Exit = 9,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        Some(match b {
            1 => Kind::Request,
            2 => Kind::Response,
            3 => Kind::Stdin,
            4 => Kind::Stdout,
            5 => Kind::Stderr,
            6 => Kind::StdinClose,
            7 => Kind::Resize,
            8 => Kind::Signal,
            9 => Kind::Exit,
            _ => return None,
        })
    }
}

/// One frame.
#[derive(Debug, Clone)]
pub(crate) struct Frame {
    pub kind: Kind,
    pub data: Vec<u8>,
}

impl Frame {
    pub fn json<T: Serialize>(kind: Kind, v: &T) -> Frame {
        Frame {
            kind,
            data: serde_json::to_vec(v).unwrap_or_default(),
        }
    }
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.data)
            .map_err(|e| Error::Shim(format!("bad {:?} frame: {e}", self.kind)))
    }
}

pub(crate) async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Frame>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(Error::io("reading from pod supervisor socket", e)),
    }
    let kind =
        Kind::from_u8(head[0]).ok_or_else(|| Error::Shim(format!("unknown frame {}", head[0])))?;
    let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(Error::Shim(format!("frame of {len} bytes")));
    }
    let mut data = vec![0u8; len];
    r.read_exact(&mut data)
        .await
        .map_err(|e| Error::io("reading from pod supervisor socket", e))?;
    Ok(Some(Frame { kind, data }))
}

pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, f: &Frame) -> Result<()> {
    let len = u32::try_from(f.data.len()).map_err(|_| Error::Shim("frame too large".into()))?;
    let mut buf = Vec::with_capacity(5 + f.data.len());
    buf.push(f.kind as u8);
    buf.extend_from_slice(&len.to_be_bytes());
    buf.extend_from_slice(&f.data);
    w.write_all(&buf)
        .await
        .map_err(|e| Error::io("writing to pod supervisor socket", e))
}

/// Requests a client sends to a shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(crate) enum Request {
    Status,
    CreateContainer {
        config: ContainerConfig,
    },
    StartContainer {
        name: String,
    },
    StopContainer {
        name: String,
        timeout_secs: u64,
    },
    RemoveContainer {
        name: String,
    },
    /// Stream a container's stdio (stdin only if it was created with `stdin`).
    Attach {
        name: String,
    },
    Exec {
        container: String,
        config: ExecConfig,
    },
    /// Connect to `127.0.0.1:port` inside the pod VM; the connection stays open as a stream
    /// (stdin frames to the port, stdout frames back, exit 0 when the port closes).
    PortForward {
        port: u16,
    },
    /// Run a tcpSocket/httpGet probe inside the pod VM (see `h8s_guest::Request::Probe`).
    Probe {
        spec: h8s_guest::ProbeSpec,
    },
    /// Replace a pod volume's files (see `h8s_guest::Request::WriteVolume`).
    WriteVolume {
        content: h8s_guest::VolumeContent,
    },
    /// Change the pod's Service table (see `h8s_guest::Request::UpdateServices`).
    UpdateServices {
        update: h8s_guest::ServiceUpdate,
    },
    /// The pod's local storage usage (see `h8s_guest::Request::StorageUsage`).
    StorageUsage,
    /// Stop every container and power the VM off; the shim exits afterwards.
    StopPod {
        timeout_secs: u64,
    },
    /// Make this warm clone the pod `config` (see `docs/runtime.md`, "Warm clones"): one
    /// byte follows the frame with the pod's image files attached (`SCM_RIGHTS`, in
    /// `config.images` order); `timeline`: the pod's start marks so far (its `requested`).
    Assign {
        config: Box<crate::SandboxConfig>,
        timeline: Vec<crate::api::StartMark>,
    },
}

/// A shim's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Response {
    Ok,
    Status(Box<SandboxStatus>),
    StorageUsage(h8s_guest::StorageUsage),
    Err(WireError),
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Resize {
    pub rows: u16,
    pub cols: u16,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Exit {
    pub code: i32,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct SignalMsg {
    pub signal: i32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_reject_garbage() {
        let (mut a, mut b) = tokio::io::duplex(1 << 16);
        let req = Request::StartContainer { name: "app".into() };
        write_frame(&mut a, &Frame::json(Kind::Request, &req))
            .await
            .unwrap();
        write_frame(
            &mut a,
            &Frame {
                kind: Kind::Stdout,
                data: b"hi".to_vec(),
            },
        )
        .await
        .unwrap();
        a.write_all(&[42, 0, 0, 0, 0]).await.unwrap();
        drop(a);
        let f = read_frame(&mut b).await.unwrap().unwrap();
        assert!(
            matches!(f.parse::<Request>().unwrap(), Request::StartContainer { name } if name == "app")
        );
        let f = read_frame(&mut b).await.unwrap().unwrap();
        assert_eq!((f.kind, f.data), (Kind::Stdout, b"hi".to_vec()));
        assert!(read_frame(&mut b).await.is_err());
    }
}
