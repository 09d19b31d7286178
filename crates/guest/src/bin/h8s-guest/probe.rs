//! kubelet's `tcpSocket`, `httpGet` and `grpc` probes, run by the guest agent inside the pod
//! VM (the pod's network namespace), so no container needs a client tool for them. HTTPS
//! probes are checked as a TCP connect (kubelet does not verify probe certificates either;
//! there is no TLS stack in the guest agent).
//!
//! A `grpc` probe is `grpc.health.v1.Health/Check` over plain HTTP/2 (prior knowledge, as
//! kubelet's): the connection preface, SETTINGS, one HEADERS frame (HPACK literals, no
//! Huffman) and one DATA frame with the HealthCheckRequest; the answer's DATA frames carry
//! the HealthCheckResponse, whose `status` must be SERVING. The response headers are not
//! decoded (no HPACK decoder here): a server that answers with an error status sends no
//! message, which fails the probe. Reads are bounded (64 KiB) and timed out.

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
    if let Some(g) = &p.grpc {
        let left = timeout
            .saturating_sub(start.elapsed())
            .max(Duration::from_millis(50));
        let _ = s.set_read_timeout(Some(left));
        let _ = s.set_write_timeout(Some(left));
        return grpc_check(&mut s, &format!("{host}:{}", p.port), &g.service);
    }
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

/// The most response bytes a gRPC probe reads.
const GRPC_READ_LIMIT: usize = 64 << 10;

/// An HPACK integer with an `n`-bit prefix whose other bits are `first`.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

fn hpack_str(out: &mut Vec<u8>, s: &str) {
    hpack_int(out, 0, 7, s.len());
    out.extend_from_slice(s.as_bytes());
}

/// One HTTP/2 frame.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(9 + payload.len());
    f.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    f.push(kind);
    f.push(flags);
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const GOAWAY: u8 = 7;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

/// The bytes a health check sends: preface, SETTINGS, HEADERS and DATA on stream 1.
pub(crate) fn grpc_request(authority: &str, service: &str) -> Vec<u8> {
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    let mut h = vec![0x83, 0x86]; // :method POST, :scheme http (static table 3, 6)
    h.push(0x04); // :path, literal without indexing, name from static entry 4
    hpack_str(&mut h, "/grpc.health.v1.Health/Check");
    h.push(0x01); // :authority (1)
    hpack_str(&mut h, authority);
    hpack_int(&mut h, 0, 4, 31); // content-type (31)
    hpack_str(&mut h, "application/grpc");
    hpack_int(&mut h, 0, 4, 58); // user-agent (58)
    hpack_str(&mut h, "kube-probe/1.33");
    h.push(0x00); // te, a new name
    hpack_str(&mut h, "te");
    hpack_str(&mut h, "trailers");
    out.extend(frame(HEADERS, END_HEADERS, 1, &h));
    // HealthCheckRequest { service = 1 } in a gRPC message (uncompressed, length-prefixed).
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a);
        let mut n = service.len();
        while n >= 0x80 {
            msg.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        msg.push(n as u8);
        msg.extend_from_slice(service.as_bytes());
    }
    let mut data = vec![0u8];
    data.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    data.extend(msg);
    out.extend(frame(DATA, END_STREAM, 1, &data));
    out
}

/// The `status` of a HealthCheckResponse message (`0` when absent, protobuf's default).
pub(crate) fn health_status(msg: &[u8]) -> Option<u64> {
    let mut i = 0;
    let varint = |i: &mut usize| -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *msg.get(*i)?;
            *i += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    };
    let mut status = 0;
    while i < msg.len() {
        let key = varint(&mut i)?;
        match key & 7 {
            0 => {
                let v = varint(&mut i)?;
                if key >> 3 == 1 {
                    status = v;
                }
            }
            2 => {
                let n = varint(&mut i)? as usize;
                i = i.checked_add(n).filter(|&e| e <= msg.len())?;
            }
            5 => i += 4,
            1 => i += 8,
            _ => return None,
        }
    }
    Some(status)
}

/// Runs a gRPC health check on a connected stream.
fn grpc_check(s: &mut TcpStream, authority: &str, service: &str) -> Result<(), ProtoError> {
    let rpc = |m: String| fail(format!("rpc error: {m}"));
    s.write_all(&grpc_request(authority, service))
        .map_err(|e| rpc(format!("sending the health check: {e}")))?;
    let mut data = Vec::new();
    let mut read = 0usize;
    loop {
        let mut head = [0u8; 9];
        s.read_exact(&mut head)
            .map_err(|e| rpc(format!("reading the answer: {e}")))?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let (kind, flags) = (head[3], head[4]);
        let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
        read += 9 + len;
        if read > GRPC_READ_LIMIT {
            return Err(rpc(format!("answer larger than {GRPC_READ_LIMIT} bytes")));
        }
        let mut payload = vec![0u8; len];
        s.read_exact(&mut payload)
            .map_err(|e| rpc(format!("reading the answer: {e}")))?;
        match (kind, stream) {
            (SETTINGS, 0) if flags & ACK == 0 => {
                let _ = s.write_all(&frame(SETTINGS, ACK, 0, &[]));
            }
            (PING, 0) if flags & ACK == 0 => {
                let _ = s.write_all(&frame(PING, ACK, 0, &payload));
            }
            (GOAWAY, _) => return Err(rpc("the server went away (GOAWAY)".into())),
            (RST_STREAM, 1) => return Err(rpc("the server reset the stream".into())),
            (DATA, 1) => {
                // Padding (flag 0x8): the first byte is the pad length.
                let body = if flags & 0x8 != 0 && !payload.is_empty() {
                    let pad = payload[0] as usize;
                    &payload[1..payload.len().saturating_sub(pad).max(1)]
                } else {
                    &payload[..]
                };
                data.extend_from_slice(body);
                if flags & END_STREAM != 0 {
                    break;
                }
            }
            (HEADERS, 1) if flags & END_STREAM != 0 => break,
            _ => {}
        }
    }
    if data.len() < 5 {
        return Err(rpc(
            "the server answered without a health status (is grpc.health.v1.Health served, \
             and the service known?)"
                .into(),
        ));
    }
    if data[0] != 0 {
        return Err(rpc("compressed health response".into()));
    }
    let n = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
    let msg = data
        .get(5..5 + n)
        .ok_or_else(|| rpc("truncated health response".into()))?;
    match health_status(msg) {
        Some(1) => Ok(()),
        Some(st) => {
            let name = match st {
                0 => "UNKNOWN",
                2 => "NOT_SERVING",
                3 => "SERVICE_UNKNOWN",
                _ => "an unknown status",
            };
            Err(fail(format!("service unhealthy (responded with {name:?})")))
        }
        None => Err(rpc("malformed health response".into())),
    }
}

#[cfg(test)]
mod grpc_tests {
    use super::*;

    /// A minimal HTTP/2 health server on a real socket: reads the client's request frames,
    /// answers with SETTINGS, HEADERS and one DATA frame carrying `status`, then trailers.
    fn serve_once(status: Option<u8>) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            let (mut c, _) = l.accept().unwrap();
            let mut got = vec![0u8; 24];
            c.read_exact(&mut got).unwrap();
            // SETTINGS, HEADERS, DATA from the client.
            for _ in 0..3 {
                let mut head = [0u8; 9];
                c.read_exact(&mut head).unwrap();
                let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                let mut p = vec![0u8; len];
                c.read_exact(&mut p).unwrap();
                got.extend_from_slice(&head);
                got.extend(p);
            }
            c.write_all(&frame(SETTINGS, 0, 0, &[])).unwrap();
            c.write_all(&frame(PING, 0, 0, &[1; 8])).unwrap();
            c.write_all(&frame(HEADERS, END_HEADERS, 1, &[0x88]))
                .unwrap();
            if let Some(st) = status {
                c.write_all(&frame(DATA, 0, 1, &[0, 0, 0, 0, 2, 0x08, st]))
                    .unwrap();
            }
            c.write_all(&frame(HEADERS, END_HEADERS | END_STREAM, 1, &[0x40]))
                .unwrap();
            // Read until the client hangs up: closing with its SETTINGS/PING acks unread
            // would make the kernel answer with a reset, which can overtake the answer.
            let _ = std::io::copy(&mut c, &mut std::io::sink());
            got
        });
        (port, t)
    }

    fn spec(port: u16, service: &str) -> ProbeSpec {
        ProbeSpec {
            host: String::new(),
            port,
            http: None,
            grpc: Some(h8s_guest::GrpcProbe {
                service: service.into(),
            }),
            timeout_ms: 2000,
        }
    }

    #[test]
    fn serving_passes_and_others_fail_with_kubelets_words() {
        let (port, t) = serve_once(Some(1));
        run(&spec(port, "web")).unwrap();
        let sent = t.join().unwrap();
        assert!(sent.starts_with(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
        let text = String::from_utf8_lossy(&sent);
        assert!(text.contains("/grpc.health.v1.Health/Check"));
        assert!(text.contains("application/grpc"));
        // The request message: service = "web".
        assert!(sent.ends_with(&[0, 0, 0, 0, 5, 0x0a, 3, b'w', b'e', b'b']));

        let (port, t) = serve_once(Some(2));
        let e = run(&spec(port, "")).unwrap_err();
        assert!(e.message.contains("NOT_SERVING"), "{}", e.message);
        t.join().unwrap();

        let (port, t) = serve_once(None);
        let e = run(&spec(port, "nope")).unwrap_err();
        assert!(
            e.message.contains("without a health status"),
            "{}",
            e.message
        );
        t.join().unwrap();

        // Nothing listening.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        assert!(run(&spec(port, "")).is_err());
    }

    #[test]
    fn hpack_and_protobuf_pieces() {
        let mut v = Vec::new();
        hpack_int(&mut v, 0, 4, 31);
        assert_eq!(v, [0x0f, 0x10]);
        let mut v = Vec::new();
        hpack_int(&mut v, 0, 5, 1337);
        assert_eq!(v, [31, 154, 10]); // RFC 7541 C.1.2
        assert_eq!(health_status(&[0x08, 0x01]), Some(1));
        assert_eq!(health_status(&[]), Some(0));
        assert_eq!(health_status(&[0x12, 0x01, 0x00, 0x08, 0x02]), Some(2));
        assert_eq!(health_status(&[0x12, 0x09]), None);
    }
}
