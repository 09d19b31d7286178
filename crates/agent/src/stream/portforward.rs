//! port-forward: SPDY/3.1 (`portforward.k8s.io`: per connection an `error` and a `data`
//! stream with the same `requestID` and a `port` header), the same SPDY session tunnelled
//! in WebSocket binary messages (`SPDY/3.1+portforward.k8s.io`, kubectl ≥ 1.31), and the
//! channel WebSocket (`v4.channel.k8s.io`; the `port` query parameter lists the ports,
//! channel 2n carries the n-th port's data and 2n+1 its errors, each starting with the
//! port number as two little-endian bytes).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming as IncomingBody;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use super::spdy::{self, header, Incoming};
use super::ws::{self, Codec};
use super::{bad_request, full, is_spdy, spdy_accept, spdy_offered, Body, Ctx, PodRef, Query};

const SPDY_PROTOCOL: &str = "portforward.k8s.io";
const TUNNEL_PREFIX: &str = "SPDY/3.1+";
const WS_PROTOCOLS: &[&str] = &["v4.channel.k8s.io", "v4.base64.channel.k8s.io", ""];

/// Bytes read from the pod per data frame or message.
const CHUNK: usize = 32 * 1024;

pub(crate) async fn serve(
    mut req: Request<IncomingBody>,
    pod: PodRef,
    q: Query,
    ctx: Arc<Ctx>,
) -> Response<Body> {
    let headers = req.headers().clone();
    if ws::is_websocket(&headers) {
        let offered = ws::offered_protocols(&headers);
        // kubectl ≥ 1.31: SPDY inside the WebSocket.
        if let Some(tunnel) = offered
            .iter()
            .find(|p| p.strip_prefix(TUNNEL_PREFIX) == Some(SPDY_PROTOCOL))
            .cloned()
        {
            let Some(resp) = ws::accept_response::<Body>(&headers, &tunnel) else {
                return bad_request("bad WebSocket handshake");
            };
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(
                async move {
                    if let Ok(up) = on_upgrade.await {
                        let sock = ws::server(up).await;
                        let session = spdy::Session::server(ws::WsIo::new(sock));
                        run_spdy(session, pod, ctx).await;
                    }
                }
                .in_current_span(),
            );
            return resp;
        }
        let ports = match ports(&q) {
            Ok(p) => p,
            Err(e) => return bad_request(&e),
        };
        let Some(proto) = ws::choose(&offered, WS_PROTOCOLS) else {
            return bad_request(&format!(
                "requested protocol(s) are not supported: {offered:?}; supports {WS_PROTOCOLS:?}"
            ));
        };
        let Some(resp) = ws::accept_response::<Body>(&headers, &proto) else {
            return bad_request("bad WebSocket handshake");
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(
            async move {
                if let Ok(up) = on_upgrade.await {
                    let sock = ws::server(up).await;
                    run_ws(sock, Codec::of(&proto), ports, pod, ctx).await;
                }
            }
            .in_current_span(),
        );
        return resp;
    }
    if is_spdy(&headers) {
        let offered = spdy_offered(&headers);
        if !offered.is_empty() && !offered.iter().any(|p| p == SPDY_PROTOCOL) {
            return super::status_response(
                http::StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports [\"{SPDY_PROTOCOL}\"]"
                ),
            );
        }
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(
            async move {
                if let Ok(up) = on_upgrade.await {
                    run_spdy(spdy::Session::server(TokioIo::new(up)), pod, ctx).await;
                }
            }
            .in_current_span(),
        );
        return spdy_accept(SPDY_PROTOCOL);
    }
    let mut r = Response::new(full("Upgrade request required"));
    *r.status_mut() = http::StatusCode::BAD_REQUEST;
    r
}

/// The ports of a channel WebSocket request (`port`, or the API's `ports`; comma lists).
fn ports(q: &Query) -> Result<Vec<u16>, String> {
    // kubelet's `port`; the API's `ports` when a client calls the agent with the API's
    // names (the API server passes both).
    let mut raw = q.all("port");
    if raw.is_empty() {
        raw = q.all("ports");
    }
    if raw.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    let mut out = Vec::new();
    for s in raw {
        for p in s.split(',') {
            match p.trim().parse::<u16>() {
                Ok(n) if n > 0 => out.push(n),
                _ => return Err(format!("unable to parse {s:?} as a port")),
            }
        }
    }
    if out.len() > 32 {
        return Err("at most 32 ports per request".into());
    }
    Ok(out)
}

#[derive(Default)]
struct Pair {
    error: Option<Incoming>,
    data: Option<Incoming>,
    since: Option<tokio::time::Instant>,
}

async fn run_spdy(mut session: spdy::Session, pod: PodRef, ctx: Arc<Ctx>) {
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let timeout = ctx.cfg.stream_creation_timeout;
    loop {
        let inc = tokio::select! {
            i = session.accept() => i,
            _ = tokio::time::sleep(Duration::from_secs(1)), if !pending.is_empty() => {
                let now = tokio::time::Instant::now();
                let stale: Vec<String> = pending
                    .iter()
                    .filter(|(_, p)| p.since.is_some_and(|s| now - s > timeout))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in stale {
                    if let Some(p) = pending.remove(&k) {
                        for s in [p.error, p.data].into_iter().flatten() {
                            s.writer.reset(spdy::rst::CANCEL).await;
                        }
                    }
                }
                continue;
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
        };
        let Some(inc) = inc else { break };
        let ty = header(&inc.headers, "streamtype").unwrap_or("").to_string();
        // Old clients send no requestID: pair by stream id (error stream first, then data).
        let rid = header(&inc.headers, "requestid")
            .map(str::to_string)
            .unwrap_or_else(|| {
                let base = if ty == "data" {
                    inc.id.saturating_sub(2)
                } else {
                    inc.id
                };
                format!("stream-{base}")
            });
        if pending.len() >= 128 && !pending.contains_key(&rid) {
            inc.writer.reset(spdy::rst::REFUSED_STREAM).await;
            continue;
        }
        let entry = pending.entry(rid.clone()).or_default();
        entry.since.get_or_insert_with(tokio::time::Instant::now);
        match ty.as_str() {
            "error" if entry.error.is_none() => entry.error = Some(inc),
            "data" if entry.data.is_none() => entry.data = Some(inc),
            _ => {
                inc.writer.reset(spdy::rst::PROTOCOL_ERROR).await;
                continue;
            }
        }
        if entry.error.is_some() && entry.data.is_some() {
            if let Some(Pair {
                error: Some(error),
                data: Some(data),
                ..
            }) = pending.remove(&rid)
            {
                let ctx = ctx.clone();
                let pod = pod.clone();
                tasks.spawn(forward_pair(error, data, pod, ctx).in_current_span());
            }
        }
    }
    // The client closed the session: stop what still runs.
    tasks.shutdown().await;
    drop(pending);
    session.close().await;
}

async fn forward_pair(error: Incoming, mut data: Incoming, pod: PodRef, ctx: Arc<Ctx>) {
    let port = header(&data.headers, "port")
        .and_then(|p| p.parse::<u16>().ok())
        .filter(|p| *p > 0);
    let Some(port) = port else {
        let _ = error
            .writer
            .write(b"unable to parse the port header of the data stream")
            .await;
        let _ = error.writer.close().await;
        data.writer.reset(spdy::rst::PROTOCOL_ERROR).await;
        return;
    };
    let conn = match ctx.backend.port_forward(pod.clone(), port).await {
        Ok(c) => c,
        Err(e) => {
            let msg = format!(
                "error forwarding port {port} to pod {}, uid {}: {e}",
                pod.name,
                pod.uid.as_deref().unwrap_or("")
            );
            let _ = error.writer.write(msg.as_bytes()).await;
            let _ = error.writer.close().await;
            let _ = data.writer.close().await;
            return;
        }
    };
    let (mut rd, mut wr) = tokio::io::split(conn);
    // Client → pod: until the client's FIN, then half-close the pod side.
    let up = tokio::spawn(
        async move {
            while let Some(b) = data.data.recv().await {
                if wr.write_all(&b).await.is_err() {
                    return;
                }
            }
            let _ = wr.shutdown().await;
        }
        .in_current_span(),
    );
    // Pod → client: until the pod closes, then FIN.
    let mut buf = vec![0u8; CHUNK];
    loop {
        match rd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if data.writer.write(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = data.writer.close().await;
    let _ = error.writer.close().await;
    // The client's side may still be sending; it has nowhere to go once the pod closed.
    let _ = tokio::time::timeout(Duration::from_secs(1), up).await;
}

async fn run_ws(sock: ws::Ws, codec: Codec, ports: Vec<u16>, pod: PodRef, ctx: Arc<Ctx>) {
    let (mut sink, mut stream) = sock.split();
    // Every port's channels first carry the port number.
    for (i, p) in ports.iter().enumerate() {
        let le = p.to_le_bytes();
        for ch in [2 * i as u8, 2 * i as u8 + 1] {
            if sink.send(codec.encode(ch, &le)).await.is_err() {
                return;
            }
        }
    }
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(16);
    let mut to_pod: Vec<Option<mpsc::Sender<Bytes>>> = Vec::new();
    // ups: client → pod writers; downs: pod → client readers.
    let mut ups = tokio::task::JoinSet::new();
    let mut downs = tokio::task::JoinSet::new();
    for (i, p) in ports.iter().copied().enumerate() {
        let data_ch = 2 * i as u8;
        match ctx.backend.port_forward(pod.clone(), p).await {
            Err(e) => {
                let msg = format!(
                    "error forwarding port {p} to pod {}, uid {}: {e}",
                    pod.name,
                    pod.uid.as_deref().unwrap_or("")
                );
                let _ = out_tx.send(codec.encode(data_ch + 1, msg.as_bytes())).await;
                to_pod.push(None);
            }
            Ok(conn) => {
                let (mut rd, mut wr) = tokio::io::split(conn);
                let (tx, mut rx) = mpsc::channel::<Bytes>(16);
                to_pod.push(Some(tx));
                ups.spawn(
                    async move {
                        while let Some(b) = rx.recv().await {
                            if wr.write_all(&b).await.is_err() {
                                return;
                            }
                        }
                        let _ = wr.shutdown().await;
                    }
                    .in_current_span(),
                );
                let out = out_tx.clone();
                downs.spawn(
                    async move {
                        let mut buf = vec![0u8; CHUNK];
                        while let Ok(n) = rd.read(&mut buf).await {
                            if n == 0 || out.send(codec.encode(data_ch, &buf[..n])).await.is_err() {
                                break;
                            }
                        }
                    }
                    .in_current_span(),
                );
            }
        }
    }
    drop(out_tx);
    let writer = tokio::spawn(
        async move {
            while let Some(m) = out_rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        }
        .in_current_span(),
    );
    loop {
        // Every pod connection has closed: nothing more to forward (kubelet ends here).
        if downs.is_empty() {
            break;
        }
        let msg = tokio::select! {
            m = stream.next() => m,
            _ = downs.join_next() => continue,
        };
        let Some(Ok(msg)) = msg else { break };
        if matches!(msg, Message::Close(_)) {
            break;
        }
        let Some((ch, data)) = codec.decode(&msg) else {
            continue;
        };
        let idx = usize::from(ch / 2);
        if ch % 2 != 0 || data.is_empty() {
            continue;
        }
        if let Some(Some(tx)) = to_pod.get(idx) {
            if tx.send(Bytes::from(data)).await.is_err() {
                to_pod[idx] = None;
            }
        }
    }
    drop(to_pod);
    ups.shutdown().await;
    downs.shutdown().await;
    // The writer sends what is queued, then the close frame.
    if tokio::time::timeout(Duration::from_secs(2), writer)
        .await
        .is_err()
    {
        tracing::debug!("WebSocket close timed out");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists() {
        assert_eq!(ports(&Query::parse("port=80")).unwrap(), vec![80]);
        assert_eq!(
            ports(&Query::parse("ports=80,8080")).unwrap(),
            vec![80, 8080]
        );
        assert_eq!(
            ports(&Query::parse("ports=8080&port=8080")).unwrap(),
            vec![8080]
        );
        assert!(ports(&Query::parse("")).is_err());
        assert!(ports(&Query::parse("port=0")).is_err());
        assert!(ports(&Query::parse("port=70000")).is_err());
    }
}
