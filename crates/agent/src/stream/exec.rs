//! exec and attach over WebSocket (channel protocols) and SPDY/3.1 (one stream per stdio
//! channel), as kubelet serves them. Errors after the upgrade go to the error channel or
//! stream as a `metav1.Status` (v4+), the way kubectl reports them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use http::{Request, Response};
use hyper::body::Incoming as IncomingBody;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tracing::Instrument;

use super::spdy::{self, header, Incoming};
use super::ws::{self, channel, Codec};
use super::{
    bad_request, full, is_spdy, spdy_accept, spdy_offered, BackendError, Body, Ctx, ExecRequest,
    Input, Output, PodRef, Query, Session, TermSize,
};

/// exec starts a process; attach joins the container's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Exec,
    Attach,
}

/// WebSocket subprotocols, best first (the client's order decides among them).
const WS_PROTOCOLS: &[&str] = &[
    "v5.channel.k8s.io",
    "v4.channel.k8s.io",
    "v4.base64.channel.k8s.io",
    "channel.k8s.io",
    "base64.channel.k8s.io",
];

/// SPDY stream protocols, best first (this side's order decides, as kubelet's does).
const SPDY_PROTOCOLS: &[&str] = &[
    "v4.channel.k8s.io",
    "v3.channel.k8s.io",
    "v2.channel.k8s.io",
    "channel.k8s.io",
];

#[derive(Debug, Clone)]
struct Opts {
    stdin: bool,
    stdout: bool,
    stderr: bool,
    tty: bool,
    command: Vec<String>,
}

/// Protocol generation: what the error channel carries and whether resize exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Gen {
    V1,
    V2,
    V3,
    V4,
    V5,
}

fn generation(p: &str) -> Gen {
    if p.starts_with("v5.") {
        Gen::V5
    } else if p.starts_with("v4.") {
        Gen::V4
    } else if p.starts_with("v3.") {
        Gen::V3
    } else if p.starts_with("v2.") {
        Gen::V2
    } else {
        Gen::V1
    }
}

pub(crate) async fn serve(
    mut req: Request<IncomingBody>,
    mode: Mode,
    pod: PodRef,
    container: String,
    q: Query,
    ctx: Arc<Ctx>,
) -> Response<Body> {
    let mut opts = Opts {
        stdin: q.flag("stdin"),
        stdout: q.flag("stdout"),
        stderr: q.flag("stderr"),
        tty: q.flag("tty"),
        command: q.all("command"),
    };
    if mode == Mode::Exec && opts.command.is_empty() {
        return bad_request("you must specify at least one command for the container");
    }
    if !opts.stdin && !opts.stdout && !opts.stderr {
        return bad_request("you must specify at least 1 of stdin, stdout, stderr");
    }
    if opts.tty {
        // A terminal merges stderr into stdout.
        opts.stderr = false;
    }
    let headers = req.headers().clone();
    if ws::is_websocket(&headers) {
        let offered = ws::offered_protocols(&headers);
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
                match on_upgrade.await {
                    Ok(up) => {
                        let sock = ws::server(up).await;
                        run_ws(sock, &proto, mode, pod, container, opts, ctx).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "WebSocket upgrade failed"),
                }
            }
            .in_current_span(),
        );
        return resp;
    }
    if is_spdy(&headers) {
        let offered = spdy_offered(&headers);
        // kubelet's rule: no header means the oldest protocol; otherwise this side's
        // preference among what the client offers.
        let proto = if offered.is_empty() {
            Some("channel.k8s.io".to_string())
        } else {
            SPDY_PROTOCOLS
                .iter()
                .find(|p| offered.iter().any(|o| o == *p))
                .map(|p| p.to_string())
        };
        let Some(proto) = proto else {
            return super::status_response(
                http::StatusCode::FORBIDDEN,
                "Forbidden",
                &format!(
                    "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server supports {SPDY_PROTOCOLS:?}"
                ),
            );
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let p2 = proto.clone();
        tokio::spawn(
            async move {
                match on_upgrade.await {
                    Ok(up) => {
                        let session = spdy::Session::server(TokioIo::new(up));
                        run_spdy(session, &p2, mode, pod, container, opts, ctx).await;
                    }
                    Err(e) => tracing::debug!(error = %e, "SPDY upgrade failed"),
                }
            }
            .in_current_span(),
        );
        return spdy_accept(&proto);
    }
    let mut r = Response::new(full("Upgrade request required"));
    *r.status_mut() = http::StatusCode::BAD_REQUEST;
    r
}

async fn start(
    ctx: &Ctx,
    mode: Mode,
    pod: &PodRef,
    container: &str,
    opts: &Opts,
) -> Result<Session, BackendError> {
    match mode {
        Mode::Exec => {
            ctx.backend
                .exec(
                    pod.clone(),
                    container.to_string(),
                    ExecRequest {
                        command: opts.command.clone(),
                        stdin: opts.stdin,
                        tty: opts.tty,
                    },
                )
                .await
        }
        Mode::Attach => {
            ctx.backend
                .attach(pod.clone(), container.to_string(), opts.stdin, opts.tty)
                .await
        }
    }
}

/// How the command ended, as the error channel of protocol v4+ reports it.
fn exit_status(code: Option<i32>, command: &[String]) -> serde_json::Value {
    match code {
        Some(0) => json!({"metadata": {}, "status": "Success"}),
        Some(c) => json!({
            "metadata": {},
            "status": "Failure",
            "message": format!(
                "command terminated with non-zero exit code: error executing command {command:?}, exit code {c}"
            ),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": c.to_string()}]},
        }),
        None => failure("the pod's stream ended without an exit status (was the pod stopped?)"),
    }
}

fn failure(message: &str) -> serde_json::Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

/// What goes on the error channel for protocol generation `g`; `None`: nothing.
fn error_payload(g: Gen, status: &serde_json::Value) -> Option<Vec<u8>> {
    if g >= Gen::V4 {
        return serde_json::to_vec(status).ok();
    }
    // Older protocols carry plain text, and nothing on success.
    if status["status"] == "Success" {
        return None;
    }
    Some(
        status["message"]
            .as_str()
            .unwrap_or("error")
            .as_bytes()
            .to_vec(),
    )
}

async fn run_ws(
    sock: ws::Ws,
    proto: &str,
    mode: Mode,
    pod: PodRef,
    container: String,
    opts: Opts,
    ctx: Arc<Ctx>,
) {
    let g = generation(proto);
    let codec = Codec::of(proto);
    let (mut sink, mut stream) = sock.split();
    let session = match start(&ctx, mode, &pod, &container, &opts).await {
        Ok(s) => s,
        Err(e) => {
            let st = failure(&format!(
                "error executing command in container {container}: {e}"
            ));
            if let Some(p) = error_payload(g, &st) {
                let _ = sink.send(codec.encode(channel::ERROR, &p)).await;
            }
            let _ = sink.send(close_normal()).await;
            return;
        }
    };
    let Session { input, mut output } = session;
    let stdin = opts.stdin;
    let reader = tokio::spawn(
        async move {
            while let Some(Ok(msg)) = stream.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                let Some((ch, data)) = codec.decode(&msg) else {
                    continue;
                };
                let ok = match ch {
                    channel::STDIN if stdin => input.send(Input::Stdin(Bytes::from(data))).await,
                    channel::RESIZE => match serde_json::from_slice::<TermSize>(&data) {
                        Ok(sz) => input.send(Input::Resize(sz)).await,
                        Err(_) => Ok(()),
                    },
                    channel::CLOSE if g >= Gen::V5 && data.first() == Some(&channel::STDIN) => {
                        input.send(Input::CloseStdin).await
                    }
                    _ => Ok(()),
                };
                if ok.is_err() {
                    break;
                }
            }
        }
        .in_current_span(),
    );
    let code = loop {
        let sent = match output.recv().await {
            Some(Output::Stdout(b)) if opts.stdout => {
                sink.send(codec.encode(channel::STDOUT, &b)).await
            }
            Some(Output::Stderr(b)) if opts.stderr => {
                sink.send(codec.encode(channel::STDERR, &b)).await
            }
            Some(Output::Stderr(b)) if opts.tty && opts.stdout => {
                sink.send(codec.encode(channel::STDOUT, &b)).await
            }
            Some(Output::Stdout(_)) | Some(Output::Stderr(_)) => Ok(()),
            Some(Output::Exit(c)) => break Some(c),
            None => break None,
        };
        if sent.is_err() {
            // The client went away; the process is left to finish (as kubelet does).
            reader.abort();
            return;
        }
    };
    let st = exit_status(code, &opts.command);
    if let Some(p) = error_payload(g, &st) {
        let _ = sink.send(codec.encode(channel::ERROR, &p)).await;
    }
    let _ = sink.send(close_normal()).await;
    // Let the client's close answer arrive, briefly.
    let _ = tokio::time::timeout(Duration::from_secs(1), reader).await;
}

fn close_normal() -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }))
}

/// The streams a SPDY client opens, by their `streamType` header.
#[derive(Default)]
struct Streams {
    error: Option<Incoming>,
    stdin: Option<Incoming>,
    stdout: Option<Incoming>,
    stderr: Option<Incoming>,
    resize: Option<Incoming>,
}

async fn run_spdy(
    mut session: spdy::Session,
    proto: &str,
    mode: Mode,
    pod: PodRef,
    container: String,
    opts: Opts,
    ctx: Arc<Ctx>,
) {
    let g = generation(proto);
    let want_resize = opts.tty && g >= Gen::V3;
    let expected = 1
        + usize::from(opts.stdin)
        + usize::from(opts.stdout)
        + usize::from(opts.stderr)
        + usize::from(want_resize);
    let mut s = Streams::default();
    let mut got = 0usize;
    let deadline = tokio::time::Instant::now() + ctx.cfg.stream_creation_timeout;
    while got < expected {
        let inc = match tokio::time::timeout_at(deadline, session.accept()).await {
            Ok(Some(i)) => i,
            Ok(None) => return,
            Err(_) => {
                tracing::info!(got, expected, "client did not open its streams in time");
                session.close().await;
                return;
            }
        };
        let ty = header(&inc.headers, "streamtype").unwrap_or("").to_string();
        let slot = match ty.as_str() {
            "error" => &mut s.error,
            "stdin" => &mut s.stdin,
            "stdout" => &mut s.stdout,
            "stderr" => &mut s.stderr,
            "resize" => &mut s.resize,
            _ => {
                inc.writer.reset(spdy::rst::REFUSED_STREAM).await;
                continue;
            }
        };
        if slot.is_none() {
            *slot = Some(inc);
            got += 1;
        } else {
            inc.writer.reset(spdy::rst::PROTOCOL_ERROR).await;
        }
    }
    let Some(error) = s.error.take() else {
        session.close().await;
        return;
    };
    let session_result = start(&ctx, mode, &pod, &container, &opts).await;
    let Session { input, mut output } = match session_result {
        Ok(x) => x,
        Err(e) => {
            let st = failure(&format!(
                "error executing command in container {container}: {e}"
            ));
            if let Some(p) = error_payload(g, &st) {
                let _ = error.writer.write(&p).await;
            }
            let _ = error.writer.close().await;
            drop(s);
            session.close().await;
            return;
        }
    };
    let mut pumps = Vec::new();
    if let Some(mut stdin) = s.stdin.take() {
        let input = input.clone();
        pumps.push(tokio::spawn(
            async move {
                while let Some(b) = stdin.data.recv().await {
                    if input.send(Input::Stdin(b)).await.is_err() {
                        return;
                    }
                }
                let _ = input.send(Input::CloseStdin).await;
            }
            .in_current_span(),
        ));
    }
    if let Some(mut resize) = s.resize.take() {
        let input = input.clone();
        pumps.push(tokio::spawn(
            async move {
                let mut buf: Vec<u8> = Vec::new();
                while let Some(b) = resize.data.recv().await {
                    buf.extend_from_slice(&b);
                    // A stream of JSON objects, one after another.
                    let mut it = serde_json::Deserializer::from_slice(&buf).into_iter::<TermSize>();
                    let mut used = 0;
                    while let Some(Ok(sz)) = it.next() {
                        used = it.byte_offset();
                        if input.send(Input::Resize(sz)).await.is_err() {
                            return;
                        }
                    }
                    buf.drain(..used);
                    if buf.len() > 4096 {
                        return;
                    }
                }
            }
            .in_current_span(),
        ));
    }
    drop(input);
    let stdout = s.stdout.take();
    let stderr = s.stderr.take();
    let code = loop {
        let r = match output.recv().await {
            Some(Output::Stdout(b)) => match &stdout {
                Some(o) => o.writer.write(&b).await,
                None => Ok(()),
            },
            Some(Output::Stderr(b)) => match (&stderr, &stdout) {
                (Some(e), _) => e.writer.write(&b).await,
                (None, Some(o)) if opts.tty => o.writer.write(&b).await,
                _ => Ok(()),
            },
            Some(Output::Exit(c)) => break Some(c),
            None => break None,
        };
        if r.is_err() {
            for p in &pumps {
                p.abort();
            }
            return;
        }
    };
    for st in [&stdout, &stderr].into_iter().flatten() {
        let _ = st.writer.close().await;
    }
    let st = exit_status(code, &opts.command);
    if let Some(p) = error_payload(g, &st) {
        let _ = error.writer.write(&p).await;
    }
    let _ = error.writer.close().await;
    for p in &pumps {
        p.abort();
    }
    drop((stdout, stderr, error, s));
    session.close().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_statuses_as_kubectl_reads_them() {
        let cmd = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];
        assert_eq!(
            exit_status(Some(0), &cmd),
            json!({"metadata": {}, "status": "Success"})
        );
        let st = exit_status(Some(3), &cmd);
        assert_eq!(st["reason"], "NonZeroExitCode");
        assert_eq!(st["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(st["details"]["causes"][0]["message"], "3");
        assert_eq!(error_payload(Gen::V3, &exit_status(Some(0), &cmd)), None);
        assert!(error_payload(Gen::V2, &st).is_some());
        assert_eq!(generation("v5.channel.k8s.io"), Gen::V5);
        assert_eq!(generation("v4.base64.channel.k8s.io"), Gen::V4);
        assert_eq!(generation("channel.k8s.io"), Gen::V1);
    }
}
