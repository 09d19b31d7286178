//! kubelet's `tcpSocket` and `httpGet` probes, run by the guest agent inside the pod VM (the
//! pod's network namespace), so no container needs a client tool for them. HTTPS probes are
//! checked as a TCP connect (kubelet does not verify probe certificates either; there is no
//! TLS stack in the guest agent).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use h8s_guest::{ErrorCode, ProbeSpec, ProtoError};

fn fail(msg: impl Into<String>) -> ProtoError {
    ProtoError::new(ErrorCode::FailedPrecondition, msg)
}

/// Runs one probe; `Ok` when it passes.
pub fn run(p: &ProbeSpec) -> Result<(), ProtoError> {
    let host = match p.host.as_str() {
        "" | "localhost" => "127.0.0.1",
        h => h,
    };
    let ip: IpAddr = host.parse().map_err(|_| {
        ProtoError::new(
            ErrorCode::InvalidArgument,
            format!("probe host {host:?} is not an IP address"),
        )
    })?;
    let timeout = Duration::from_millis(p.timeout_ms.clamp(100, 300_000));
    let start = Instant::now();
    let addr = SocketAddr::new(ip, p.port);
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| fail(format!("dial tcp {addr}: {e}")))?;
    let Some(h) = &p.http else {
        return Ok(());
    };
    let left = timeout
        .saturating_sub(start.elapsed())
        .max(Duration::from_millis(50));
    let _ = s.set_read_timeout(Some(left));
    let _ = s.set_write_timeout(Some(left));
    let path = if h.path.is_empty() {
        "/"
    } else {
        h.path.as_str()
    };
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{}\r\nUser-Agent: kube-probe/1.33\r\nAccept: */*\r\nConnection: close\r\n",
        p.port
    );
    for (k, v) in &h.headers {
        if !k.contains(['\r', '\n', ':']) && !v.contains(['\r', '\n']) {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| fail(format!("Get \"http://{addr}{path}\": {e}")))?;
    let mut buf = [0u8; 512];
    let mut got = Vec::new();
    while !got.contains(&b'\n') && got.len() < 4096 {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) => {
                return Err(fail(format!(
                "Get \"http://{addr}{path}\": {e} (Client.Timeout exceeded while awaiting headers)"
            )))
            }
        }
    }
    let line = String::from_utf8_lossy(&got);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| {
            fail(format!(
                "Get \"http://{addr}{path}\": malformed HTTP response"
            ))
        })?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(fail(format!("HTTP probe failed with statuscode: {code}")))
    }
}
