//! `GET /containerLogs/{ns}/{pod}/{container}`: a container's CRI log file as plain text,
//! with kubelet's options. The body is fed through a small bounded queue, so a slow
//! client slows the reading down; a followed log ends when the container stops.

use std::io::SeekFrom;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncSeekExt, BufReader};
use tokio::sync::mpsc;
use tracing::Instrument;

use h8s_runtime::LogEntry;

use super::{backend_error, bad_request, Body, Ctx, PodRef, Query};

/// Longest log line handed on in one piece (the runtime writes at most 16 KiB per entry).
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Default)]
struct Opts {
    follow: bool,
    tail: Option<u64>,
    since: Option<jiff::Timestamp>,
    timestamps: bool,
    previous: bool,
    limit: Option<u64>,
}

fn parse(q: &Query) -> Result<Opts, String> {
    let num = |k: &str| -> Result<Option<i64>, String> {
        q.get(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| format!("{k} must be an integer, not {v:?}"))
            })
            .transpose()
    };
    let tail = match num("tailLines")? {
        Some(n) if n < 0 => return Err("tailLines must be non-negative".into()),
        n => n.map(|n| n as u64),
    };
    let limit = match num("limitBytes")? {
        Some(n) if n < 1 => return Err("limitBytes must be a positive integer".into()),
        n => n.map(|n| n as u64),
    };
    let since = match (num("sinceSeconds")?, q.get("sinceTime")) {
        (Some(_), Some(_)) => {
            return Err("at most one of sinceTime or sinceSeconds may be specified".into())
        }
        (Some(s), None) if s < 1 => return Err("sinceSeconds must be a positive integer".into()),
        (Some(s), None) => Some(
            jiff::Timestamp::now()
                .checked_sub(jiff::SignedDuration::from_secs(s))
                .map_err(|e| e.to_string())?,
        ),
        (None, Some(t)) => Some(
            t.parse::<jiff::Timestamp>()
                .map_err(|e| format!("sinceTime {t:?} is not RFC 3339: {e}"))?,
        ),
        (None, None) => None,
    };
    Ok(Opts {
        follow: q.flag("follow"),
        tail,
        since,
        timestamps: q.flag("timestamps"),
        previous: q.flag("previous"),
        limit,
    })
}

pub(crate) async fn serve(
    pod: PodRef,
    container: String,
    q: Query,
    ctx: Arc<Ctx>,
) -> Response<Body> {
    let opts = match parse(&q) {
        Ok(o) => o,
        Err(e) => return bad_request(&e),
    };
    let file = match ctx
        .backend
        .log_file(pod.clone(), container.clone(), opts.previous)
        .await
    {
        Ok(f) => f,
        Err(e) => return backend_error(&e),
    };
    let f = match open_log(&file.path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Created but not started yet: an empty log, as kubelet shows it.
            return text(super::full(Bytes::new()));
        }
        Err(e) => {
            return backend_error(&super::BackendError::Internal(format!(
                "reading the log of container {container}: {e}"
            )))
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(4);
    let path = file.path.clone();
    tokio::spawn(
        async move {
            if let Err(e) = pump(f, &path, opts, tx, ctx, pod, container).await {
                tracing::debug!(error = %e, "log stream ended");
            }
        }
        .in_current_span(),
    );
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::io::Error>(Frame::data(b)), rx))
    });
    text(StreamBody::new(stream).boxed())
}

fn text(body: Body) -> Response<Body> {
    let mut r = Response::new(body);
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain"),
    );
    r
}

/// Whether `path` now names another file than the one open (log rotation).
async fn rotated_away(open: &tokio::fs::File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (open.metadata().await, tokio::fs::metadata(path).await) {
        (Ok(a), Ok(b)) => a.ino() != b.ino() || a.dev() != b.dev(),
        _ => false,
    }
}

/// Where the last `n` lines of the file start.
async fn tail_offset(path: &Path, n: u64) -> std::io::Result<u64> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || {
        use std::io::{Read, Seek};
        let mut f = h8s_runtime::open_log_file(&path)?;
        let len = f.metadata()?.len();
        if n == 0 {
            return Ok(len);
        }
        // Count newlines backwards; the file's own last newline ends the last line.
        let mut pos = len;
        let mut seen = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        let mut first = true;
        while pos > 0 {
            let step = (buf.len() as u64).min(pos);
            pos -= step;
            f.seek(std::io::SeekFrom::Start(pos))?;
            let chunk = &mut buf[..step as usize];
            f.read_exact(chunk)?;
            for i in (0..chunk.len()).rev() {
                if chunk[i] != b'\n' {
                    continue;
                }
                if first && pos + i as u64 == len - 1 {
                    first = false;
                    continue;
                }
                first = false;
                seen += 1;
                if seen == n {
                    return Ok(pos + i as u64 + 1);
                }
            }
        }
        Ok(0)
    })
    .await
    .map_err(std::io::Error::other)?
}

async fn pump(
    f: tokio::fs::File,
    path: &Path,
    opts: Opts,
    tx: mpsc::Sender<Bytes>,
    ctx: Arc<Ctx>,
    pod: PodRef,
    container: String,
) -> std::io::Result<()> {
    let start = match opts.tail {
        Some(n) => tail_offset(path, n).await?,
        None => 0,
    };
    let mut f = f;
    f.seek(SeekFrom::Start(start)).await?;
    let mut rd = BufReader::with_capacity(64 * 1024, f);
    let mut line: Vec<u8> = Vec::new();
    let mut sent: u64 = 0;
    let mut idle_polls = 0u32;
    let mut switch_pending = false;
    loop {
        let before = line.len();
        let n = (&mut rd)
            .take((MAX_LINE - before.min(MAX_LINE)) as u64 + 1)
            .read_until(b'\n', &mut line)
            .await?;
        let complete = line.last() == Some(&b'\n') || line.len() > MAX_LINE;
        if !complete {
            // At the end of what is written so far.
            if !opts.follow {
                break;
            }
            if n == 0 {
                // Rotated (the runtime renamed the file and started a new one): once the
                // old file is read to its end (it gets no more writes), go on in the new one.
                if rotated_away(rd.get_ref(), path).await {
                    if switch_pending {
                        if let Ok(f) = open_log(path).await {
                            rd = BufReader::with_capacity(64 * 1024, f);
                            switch_pending = false;
                            continue;
                        }
                    } else {
                        switch_pending = true;
                        continue;
                    }
                }
                idle_polls += 1;
                // Check now and then whether the container still runs; once it does not,
                // a last read picks up what it wrote before stopping.
                let checks_every = (Duration::from_secs(1).as_millis()
                    / ctx.cfg.log_poll_interval.as_millis().max(1))
                .max(1) as u32;
                if idle_polls.is_multiple_of(checks_every)
                    && !ctx.backend.is_running(pod.clone(), container.clone()).await
                {
                    let n = rd.read_until(b'\n', &mut line).await?;
                    if n == 0 {
                        break;
                    }
                    continue;
                }
                if tx.is_closed() {
                    break;
                }
                tokio::time::sleep(ctx.cfg.log_poll_interval).await;
            }
            continue;
        }
        idle_polls = 0;
        let raw = std::mem::take(&mut line);
        let body = raw.strip_suffix(b"\n").unwrap_or(&raw);
        let Some(entry) = LogEntry::parse(body) else {
            continue;
        };
        if let Some(since) = opts.since {
            match entry.time.parse::<jiff::Timestamp>() {
                Ok(t) if t < since => continue,
                _ => {}
            }
        }
        let mut out = Vec::with_capacity(entry.content.len() + 40);
        if opts.timestamps {
            out.extend_from_slice(entry.time.as_bytes());
            out.push(b' ');
        }
        out.extend_from_slice(&entry.raw());
        if let Some(limit) = opts.limit {
            let left = limit.saturating_sub(sent);
            if (out.len() as u64) >= left {
                out.truncate(left as usize);
                let _ = tx.send(Bytes::from(out)).await;
                break;
            }
        }
        sent += out.len() as u64;
        if tx.send(Bytes::from(out)).await.is_err() {
            break;
        }
    }
    Ok(())
}

/// Opens a container log without following links (a jailed pod's directory is its uid's).
async fn open_log(path: &Path) -> std::io::Result<tokio::fs::File> {
    let path = path.to_path_buf();
    let f = tokio::task::spawn_blocking(move || h8s_runtime::open_log_file(&path))
        .await
        .map_err(std::io::Error::other)??;
    Ok(tokio::fs::File::from_std(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tail_offsets() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.log");
        std::fs::write(&p, "a\nbb\nccc\n").unwrap();
        assert_eq!(tail_offset(&p, 1).await.unwrap(), 5);
        assert_eq!(tail_offset(&p, 2).await.unwrap(), 2);
        assert_eq!(tail_offset(&p, 3).await.unwrap(), 0);
        assert_eq!(tail_offset(&p, 10).await.unwrap(), 0);
        assert_eq!(tail_offset(&p, 0).await.unwrap(), 9);
        // An unterminated last line counts as a line.
        std::fs::write(&p, "a\nbb").unwrap();
        assert_eq!(tail_offset(&p, 1).await.unwrap(), 2);
    }

    #[test]
    fn options() {
        let q = Query::parse("follow=true&tailLines=5&timestamps=1&limitBytes=10");
        let o = parse(&q).unwrap();
        assert!(o.follow && o.timestamps && !o.previous);
        assert_eq!((o.tail, o.limit), (Some(5), Some(10)));
        assert!(parse(&Query::parse("tailLines=-1")).is_err());
        assert!(parse(&Query::parse("sinceSeconds=0")).is_err());
        assert!(parse(&Query::parse("sinceTime=yesterday")).is_err());
        assert!(parse(&Query::parse(
            "sinceSeconds=1&sinceTime=2024-01-01T00:00:00Z"
        ))
        .is_err());
        let o = parse(&Query::parse("sinceTime=2024-01-01T00:00:00Z")).unwrap();
        assert_eq!(o.since.unwrap().to_string(), "2024-01-01T00:00:00Z");
    }
}
