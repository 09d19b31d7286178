//! A compact SPDY/3.1 framer and server session, as much of the protocol as Kubernetes'
//! streaming (moby/spdystream, used by kubectl and client-go) speaks: `SYN_STREAM`,
//! `SYN_REPLY`, `DATA`, `RST_STREAM`, `PING`, `GOAWAY`; `SETTINGS`, `HEADERS` and
//! `WINDOW_UPDATE` are parsed and ignored (spdystream implements no flow control and never
//! sends window updates, so a sender that waited for them would stall).
//!
//! Wire format (SPDY/3, big-endian):
//!
//! ```text
//! control: 1 | version:15 (3) | type:16 | flags:8 | length:24 | payload
//! data:    0 | stream id:31           | flags:8 | length:24 | payload
//! ```
//!
//! Header blocks (`SYN_STREAM`, `SYN_REPLY`, `HEADERS`) are `u32 count` then `u32 len, name,
//! u32 len, value` pairs, compressed with zlib using SPDY/3's preset dictionary; each
//! direction keeps one zlib stream for the whole session, flushed (sync) after every block.
//!
//! Everything is bounded: frame payloads ([`MAX_FRAME`]), decompressed header blocks
//! ([`MAX_HEADER_BLOCK`]), the number of open streams ([`MAX_STREAMS`]), and the queues
//! between the connection and the streams (a stream whose reader is slow stops the
//! connection's reader: back-pressure, as spdystream does).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// SPDY/3's zlib dictionary for header blocks (from the SPDY/3 specification, 1423 bytes).
pub const DICTIONARY: &[u8] = include_bytes!("spdy3_dictionary.bin");

/// Largest frame payload accepted (spdystream's data frames are at most 32 KiB in practice).
pub const MAX_FRAME: usize = 1 << 20;
/// Largest decompressed header block accepted.
pub const MAX_HEADER_BLOCK: usize = 64 * 1024;
/// Most streams open at once on one session.
pub const MAX_STREAMS: usize = 256;
/// Largest data frame this side sends.
pub const MAX_DATA_OUT: usize = 32 * 1024;

const VERSION: u16 = 3;
const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// `FLAG_FIN` of data and control frames.
pub const FLAG_FIN: u8 = 0x01;
/// `FLAG_UNIDIRECTIONAL` of `SYN_STREAM`.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// `RST_STREAM` status codes used here.
pub mod rst {
    /// PROTOCOL_ERROR
    pub const PROTOCOL_ERROR: u32 = 1;
    /// REFUSED_STREAM
    pub const REFUSED_STREAM: u32 = 3;
    /// CANCEL
    pub const CANCEL: u32 = 5;
    /// INTERNAL_ERROR
    pub const INTERNAL_ERROR: u32 = 6;
}

/// Errors of the framer and the session.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The connection failed.
    #[error("connection i/o failed")]
    Io(#[from] std::io::Error),
    /// The peer sent something that is not SPDY/3.
    #[error("SPDY protocol error: {0}")]
    Protocol(&'static str),
    /// A frame or header block over the limits.
    #[error("SPDY frame too large ({0} bytes)")]
    TooLarge(usize),
    /// zlib failed on a header block.
    #[error("SPDY header compression failed: {0}")]
    Zlib(String),
    /// The session is gone.
    #[error("SPDY session closed")]
    Closed,
}

/// Header name/value pairs (names lower-case on the wire; multiple values NUL-separated).
pub type Headers = Vec<(String, String)>;

/// The value of header `name` (case-insensitive), if present.
pub fn header<'a>(h: &'a Headers, name: &str) -> Option<&'a str> {
    h.iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// One SPDY/3 frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// Stream id (odd from clients).
        stream_id: u32,
        /// Associated stream (0: none).
        associated: u32,
        /// Priority 0 (highest) ..= 7.
        priority: u8,
        /// [`FLAG_FIN`], [`FLAG_UNIDIRECTIONAL`].
        flags: u8,
        /// The stream's headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// Stream id.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// Reply headers.
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// Stream id.
        stream_id: u32,
        /// Status code ([`rst`]).
        status: u32,
    },
    /// Session settings (ignored).
    Settings {
        /// `(flags, id, value)` entries.
        entries: Vec<(u8, u32, u32)>,
    },
    /// Liveness; the receiver echoes the peer's pings.
    Ping {
        /// Ping id (odd from clients).
        id: u32,
    },
    /// The sender will open no more streams.
    GoAway {
        /// Last stream the sender handled.
        last_good: u32,
        /// 0 OK, 1 protocol error, 2 internal error.
        status: u32,
    },
    /// More headers for a stream (ignored).
    Headers {
        /// Stream id.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// Headers.
        headers: Headers,
    },
    /// Flow-control window update (ignored, see the module docs).
    WindowUpdate {
        /// Stream id (0: session).
        stream_id: u32,
        /// Bytes added.
        delta: u32,
    },
    /// Stream payload.
    Data {
        /// Stream id.
        stream_id: u32,
        /// [`FLAG_FIN`].
        flags: u8,
        /// The bytes.
        data: Bytes,
    },
}

/// The two zlib streams of a session's header blocks.
pub struct HeaderCodec {
    comp: Compress,
    decomp: Decompress,
}

impl Default for HeaderCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCodec {
    /// Fresh compression contexts (one per session and direction).
    pub fn new() -> HeaderCodec {
        let mut comp = Compress::new(Compression::best(), true);
        // A fresh deflate stream always takes a dictionary; this cannot fail.
        let _ = comp.set_dictionary(DICTIONARY);
        HeaderCodec {
            comp,
            decomp: Decompress::new(true),
        }
    }

    /// Encodes and compresses a header block.
    pub fn compress(&mut self, headers: &Headers) -> Result<Vec<u8>, Error> {
        let raw = raw_header_block(headers);
        let mut out = Vec::with_capacity(raw.len() / 2 + 64);
        let mut input = &raw[..];
        loop {
            if out.capacity() - out.len() < 256 {
                out.reserve(4096);
            }
            let before_in = self.comp.total_in();
            self.comp
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Zlib(e.to_string()))?;
            input = &input[(self.comp.total_in() - before_in) as usize..];
            // zlib's rule: the flush is complete once all input is taken and output room
            // is left over.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Decompresses and parses a header block.
    pub fn decompress(&mut self, block: &[u8]) -> Result<Headers, Error> {
        let mut out: Vec<u8> = Vec::with_capacity(block.len() * 4 + 256);
        let mut input = block;
        loop {
            if out.capacity() - out.len() < 256 {
                if out.len() >= MAX_HEADER_BLOCK {
                    return Err(Error::TooLarge(out.len()));
                }
                out.reserve(4096);
            }
            let before_in = self.decomp.total_in();
            let r = self
                .decomp
                .decompress_vec(input, &mut out, FlushDecompress::Sync);
            input = &input[(self.decomp.total_in() - before_in) as usize..];
            match r {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.decomp
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| Error::Zlib(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(Error::Zlib(e.to_string())),
            }
            if input.is_empty() && out.len() < out.capacity() {
                break;
            }
        }
        parse_header_block(&out)
    }
}

/// The uncompressed header block of `headers` (names lower-cased).
pub fn raw_header_block(headers: &Headers) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (n, v) in headers {
        let n = n.to_ascii_lowercase();
        b.extend_from_slice(&(n.len() as u32).to_be_bytes());
        b.extend_from_slice(n.as_bytes());
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// Parses an uncompressed header block.
pub fn parse_header_block(b: &[u8]) -> Result<Headers, Error> {
    let mut r = Cursor { b, at: 0 };
    let n = r.u32()? as usize;
    if n > 1024 {
        return Err(Error::Protocol("too many headers"));
    }
    let mut h = Vec::with_capacity(n);
    for _ in 0..n {
        let name = r.string()?;
        let value = r.string()?;
        if name.is_empty() {
            return Err(Error::Protocol("empty header name"));
        }
        h.push((name, value));
    }
    Ok(h)
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Error> {
        let end = self
            .at
            .checked_add(n)
            .filter(|e| *e <= self.b.len())
            .ok_or(Error::Protocol("truncated frame"))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u32(&mut self) -> Result<u32, Error> {
        let s = self.take(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn string(&mut self) -> Result<String, Error> {
        let n = self.u32()? as usize;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec()).map_err(|_| Error::Protocol("header is not UTF-8"))
    }
}

fn control_head(out: &mut Vec<u8>, ty: u16, flags: u8, len: usize) -> Result<(), Error> {
    if len >= 1 << 24 {
        return Err(Error::TooLarge(len));
    }
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | len as u32).to_be_bytes());
    Ok(())
}

/// Appends the wire form of `f` to `out`.
pub fn encode(f: &Frame, codec: &mut HeaderCodec, out: &mut Vec<u8>) -> Result<(), Error> {
    match f {
        Frame::SynStream {
            stream_id,
            associated,
            priority,
            flags,
            headers,
        } => {
            let block = codec.compress(headers)?;
            control_head(out, TYPE_SYN_STREAM, *flags, block.len() + 10)?;
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&(associated & 0x7fff_ffff).to_be_bytes());
            out.push((priority & 7) << 5);
            out.push(0);
            out.extend_from_slice(&block);
        }
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        }
        | Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let ty = if matches!(f, Frame::SynReply { .. }) {
                TYPE_SYN_REPLY
            } else {
                TYPE_HEADERS
            };
            let block = codec.compress(headers)?;
            control_head(out, ty, *flags, block.len() + 4)?;
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&block);
        }
        Frame::RstStream { stream_id, status } => {
            control_head(out, TYPE_RST_STREAM, 0, 8)?;
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&status.to_be_bytes());
        }
        Frame::Settings { entries } => {
            control_head(out, TYPE_SETTINGS, 0, 4 + 8 * entries.len())?;
            out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for (fl, id, v) in entries {
                out.extend_from_slice(&((u32::from(*fl) << 24) | (id & 0xff_ffff)).to_be_bytes());
                out.extend_from_slice(&v.to_be_bytes());
            }
        }
        Frame::Ping { id } => {
            control_head(out, TYPE_PING, 0, 4)?;
            out.extend_from_slice(&id.to_be_bytes());
        }
        Frame::GoAway { last_good, status } => {
            control_head(out, TYPE_GOAWAY, 0, 8)?;
            out.extend_from_slice(&(last_good & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&status.to_be_bytes());
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control_head(out, TYPE_WINDOW_UPDATE, 0, 8)?;
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            if data.len() >= 1 << 24 {
                return Err(Error::TooLarge(data.len()));
            }
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&((u32::from(*flags) << 24) | data.len() as u32).to_be_bytes());
            out.extend_from_slice(data);
        }
    }
    Ok(())
}

/// Parses one frame from its 8-byte head and payload. `Ok(None)`: a control frame of a
/// type this framer skips (unknown types must be ignored).
pub fn decode(
    head: [u8; 8],
    payload: Bytes,
    codec: &mut HeaderCodec,
) -> Result<Option<Frame>, Error> {
    let flags = head[4];
    if head[0] & 0x80 == 0 {
        let stream_id = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) & 0x7fff_ffff;
        return Ok(Some(Frame::Data {
            stream_id,
            flags,
            data: payload,
        }));
    }
    let version = u16::from_be_bytes([head[0], head[1]]) & 0x7fff;
    if version != VERSION {
        return Err(Error::Protocol("not SPDY version 3"));
    }
    let ty = u16::from_be_bytes([head[2], head[3]]);
    let mut r = Cursor { b: &payload, at: 0 };
    let f = match ty {
        TYPE_SYN_STREAM => {
            let stream_id = r.u32()? & 0x7fff_ffff;
            let associated = r.u32()? & 0x7fff_ffff;
            let pri = r.take(2)?[0] >> 5;
            let headers = codec.decompress(&payload[r.at..])?;
            Frame::SynStream {
                stream_id,
                associated,
                priority: pri,
                flags,
                headers,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            let stream_id = r.u32()? & 0x7fff_ffff;
            let headers = codec.decompress(&payload[r.at..])?;
            if ty == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
        }
        TYPE_RST_STREAM => Frame::RstStream {
            stream_id: r.u32()? & 0x7fff_ffff,
            status: r.u32()?,
        },
        TYPE_SETTINGS => {
            let n = r.u32()? as usize;
            if n > 64 {
                return Err(Error::Protocol("too many settings"));
            }
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let fi = r.u32()?;
                entries.push(((fi >> 24) as u8, fi & 0xff_ffff, r.u32()?));
            }
            Frame::Settings { entries }
        }
        TYPE_PING => Frame::Ping { id: r.u32()? },
        TYPE_GOAWAY => Frame::GoAway {
            last_good: r.u32()? & 0x7fff_ffff,
            // SPDY/3 added the status; tolerate its absence.
            status: r.u32().unwrap_or(0),
        },
        TYPE_WINDOW_UPDATE => Frame::WindowUpdate {
            stream_id: r.u32()? & 0x7fff_ffff,
            delta: r.u32()? & 0x7fff_ffff,
        },
        _ => return Ok(None),
    };
    Ok(Some(f))
}

/// Reads the next frame's head and payload; `Ok(None)` at a clean end of the connection.
pub async fn read_raw<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<([u8; 8], Bytes)>, Error> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = (u32::from_be_bytes([0, head[5], head[6], head[7]])) as usize;
    if len > MAX_FRAME {
        return Err(Error::TooLarge(len));
    }
    let mut payload = BytesMut::zeroed(len);
    r.read_exact(&mut payload).await?;
    Ok(Some((head, payload.freeze())))
}

/// A stream the client opened.
pub struct Incoming {
    /// Its id.
    pub id: u32,
    /// Its `SYN_STREAM` headers.
    pub headers: Headers,
    /// Its data, in order; ends at the client's FIN (or a reset, or the session's end).
    pub data: mpsc::Receiver<Bytes>,
    /// Writes to it.
    pub writer: StreamWriter,
}

/// What the connection's writer task takes: frames, then a shutdown marker.
enum Out {
    Frame(Frame),
    Shutdown,
}

/// The writing end of one stream.
#[derive(Clone)]
pub struct StreamWriter {
    id: u32,
    tx: mpsc::Sender<Out>,
    reset: Arc<Mutex<HashMap<u32, bool>>>,
}

impl StreamWriter {
    /// The stream's id.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn is_reset(&self) -> bool {
        self.reset
            .lock()
            .map(|m| m.get(&self.id).copied().unwrap_or(false))
            .unwrap_or(true)
    }

    /// Sends bytes (in frames of at most [`MAX_DATA_OUT`]); waits while the connection's
    /// write queue is full.
    pub async fn write(&self, data: &[u8]) -> Result<(), Error> {
        if self.is_reset() {
            return Err(Error::Closed);
        }
        for chunk in data.chunks(MAX_DATA_OUT) {
            self.tx
                .send(Out::Frame(Frame::Data {
                    stream_id: self.id,
                    flags: 0,
                    data: Bytes::copy_from_slice(chunk),
                }))
                .await
                .map_err(|_| Error::Closed)?;
        }
        Ok(())
    }

    /// Half-closes the stream (an empty data frame with FIN).
    pub async fn close(&self) -> Result<(), Error> {
        if self.is_reset() {
            return Ok(());
        }
        self.tx
            .send(Out::Frame(Frame::Data {
                stream_id: self.id,
                flags: FLAG_FIN,
                data: Bytes::new(),
            }))
            .await
            .map_err(|_| Error::Closed)
    }

    /// Aborts the stream.
    pub async fn reset(&self, status: u32) {
        if let Ok(mut m) = self.reset.lock() {
            m.insert(self.id, true);
        }
        let _ = self
            .tx
            .send(Out::Frame(Frame::RstStream {
                stream_id: self.id,
                status,
            }))
            .await;
    }
}

/// The server side of a SPDY session over `io`. Streams the client opens arrive from
/// [`Session::accept`], already answered with an empty `SYN_REPLY`.
pub struct Session {
    incoming: mpsc::Receiver<Incoming>,
    tx: mpsc::Sender<Out>,
    last_seen: Arc<Mutex<u32>>,
    reader: tokio::task::JoinHandle<()>,
    writer: tokio::task::JoinHandle<()>,
}

impl Session {
    /// Starts serving a session on an upgraded connection.
    pub fn server<T>(io: T) -> Session
    where
        T: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, wr) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel::<Out>(64);
        let (in_tx, in_rx) = mpsc::channel::<Incoming>(32);
        let reset: Arc<Mutex<HashMap<u32, bool>>> = Arc::default();
        let last_seen = Arc::new(Mutex::new(0u32));
        let writer = tokio::spawn(write_loop(wr, rx));
        let reader = tokio::spawn(read_loop(rd, tx.clone(), in_tx, reset, last_seen.clone()));
        Session {
            incoming: in_rx,
            tx,
            last_seen,
            reader,
            writer,
        }
    }

    /// The next stream the client opens; `None` once the session has ended.
    pub async fn accept(&mut self) -> Option<Incoming> {
        self.incoming.recv().await
    }

    /// Says GOAWAY, lets the frames queued before it out, and closes the connection.
    pub async fn close(mut self) {
        let last_good = self.last_seen.lock().map(|l| *l).unwrap_or(0);
        let _ = self
            .tx
            .send(Out::Frame(Frame::GoAway {
                last_good,
                status: 0,
            }))
            .await;
        let _ = self.tx.send(Out::Shutdown).await;
        self.reader.abort();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), &mut self.writer).await;
        self.writer.abort();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Out>) {
    let mut codec = HeaderCodec::new();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut done = false;
    while let Some(out) = rx.recv().await {
        buf.clear();
        let mut next = Some(out);
        // Coalesce what is already queued into one write.
        while let Some(o) = next.take() {
            match o {
                Out::Frame(f) => {
                    if let Err(e) = encode(&f, &mut codec, &mut buf) {
                        tracing::debug!(error = %e, "encoding a SPDY frame");
                        done = true;
                        break;
                    }
                }
                Out::Shutdown => {
                    done = true;
                    break;
                }
            }
            if buf.len() < 64 * 1024 {
                next = rx.try_recv().ok();
            }
        }
        if wr.write_all(&buf).await.is_err() || wr.flush().await.is_err() || done {
            break;
        }
    }
    let _ = wr.shutdown().await;
}

async fn read_loop<R: AsyncRead + Unpin>(
    mut rd: R,
    tx: mpsc::Sender<Out>,
    incoming: mpsc::Sender<Incoming>,
    reset: Arc<Mutex<HashMap<u32, bool>>>,
    last_seen: Arc<Mutex<u32>>,
) {
    let mut codec = HeaderCodec::new();
    let mut streams: HashMap<u32, mpsc::Sender<Bytes>> = HashMap::new();
    let mut last_id = 0u32;
    loop {
        let (head, payload) = match read_raw(&mut rd).await {
            Ok(Some(x)) => x,
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(error = %e, "reading the SPDY session");
                break;
            }
        };
        let frame = match decode(head, payload, &mut codec) {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => {
                tracing::debug!(error = %e, "bad SPDY frame");
                let _ = tx
                    .send(Out::Frame(Frame::GoAway {
                        last_good: last_id,
                        status: 1,
                    }))
                    .await;
                break;
            }
        };
        match frame {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => {
                if stream_id % 2 == 0 || stream_id <= last_id {
                    let _ = tx
                        .send(Out::Frame(Frame::RstStream {
                            stream_id,
                            status: rst::PROTOCOL_ERROR,
                        }))
                        .await;
                    continue;
                }
                last_id = stream_id;
                if let Ok(mut l) = last_seen.lock() {
                    *l = stream_id;
                }
                if streams.len() >= MAX_STREAMS {
                    let _ = tx
                        .send(Out::Frame(Frame::RstStream {
                            stream_id,
                            status: rst::REFUSED_STREAM,
                        }))
                        .await;
                    continue;
                }
                let (dtx, drx) = mpsc::channel(16);
                if flags & FLAG_FIN == 0 {
                    streams.insert(stream_id, dtx);
                }
                if let Ok(mut m) = reset.lock() {
                    m.insert(stream_id, false);
                }
                // spdystream drops data for streams it has no reply for: reply first.
                if tx
                    .send(Out::Frame(Frame::SynReply {
                        stream_id,
                        flags: 0,
                        headers: Vec::new(),
                    }))
                    .await
                    .is_err()
                {
                    break;
                }
                let inc = Incoming {
                    id: stream_id,
                    headers,
                    data: drx,
                    writer: StreamWriter {
                        id: stream_id,
                        tx: tx.clone(),
                        reset: reset.clone(),
                    },
                };
                if incoming.send(inc).await.is_err() {
                    break;
                }
            }
            Frame::Data {
                stream_id,
                flags,
                data,
            } => {
                if !data.is_empty() {
                    if let Some(s) = streams.get(&stream_id) {
                        // A stream whose consumer is gone just loses its data.
                        if s.send(data).await.is_err() {
                            streams.remove(&stream_id);
                        }
                    }
                }
                if flags & FLAG_FIN != 0 {
                    streams.remove(&stream_id);
                }
            }
            Frame::RstStream { stream_id, .. } => {
                streams.remove(&stream_id);
                if let Ok(mut m) = reset.lock() {
                    m.insert(stream_id, true);
                }
            }
            Frame::Ping { id } => {
                // Echo the client's pings (odd ids); even ids would be answers to ours.
                if id % 2 == 1 && tx.send(Out::Frame(Frame::Ping { id })).await.is_err() {
                    break;
                }
            }
            Frame::GoAway { .. } => {
                // The client opens no more streams; existing ones go on until EOF.
            }
            Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. } => {}
        }
        // Forget finished streams' reset flags now and then (bounded map).
        if let Ok(mut m) = reset.lock() {
            if m.len() > 4 * MAX_STREAMS {
                m.retain(|id, r| !*r && streams.contains_key(id));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_spdy3s() {
        assert_eq!(DICTIONARY.len(), 1423);
        // The dictionary id a zlib header names (RFC 1950 FDICT) for SPDY/3.
        let mut c = HeaderCodec::new();
        let block = c.compress(&vec![("a".into(), "b".into())]).unwrap();
        // CMF/FLG with FDICT set, then the dictionary's Adler-32.
        assert_eq!(block[0] & 0x0f, 8, "deflate");
        assert_ne!(block[1] & 0x20, 0, "FDICT");
        assert_eq!(&block[2..6], &0xe3c6_a7c2u32.to_be_bytes());
    }

    #[test]
    fn header_block_layout() {
        let h: Headers = vec![("streamType".into(), "error".into())];
        assert_eq!(
            raw_header_block(&h),
            b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x05error".to_vec()
        );
        assert_eq!(
            parse_header_block(&raw_header_block(&h)).unwrap(),
            vec![("streamtype".to_string(), "error".to_string())]
        );
        assert!(parse_header_block(b"\0\0\0\x01\0\0\0\x09abc").is_err());
    }

    #[test]
    fn header_compression_round_trips_across_blocks() {
        // One zlib stream per direction: several blocks in sequence must decode in order.
        let (mut a, mut b) = (HeaderCodec::new(), HeaderCodec::new());
        for i in 0..20 {
            let h: Headers = vec![
                ("streamtype".into(), "data".into()),
                ("port".into(), "8080".into()),
                ("requestid".into(), i.to_string()),
            ];
            let z = a.compress(&h).unwrap();
            assert_eq!(b.decompress(&z).unwrap(), h);
        }
        // An empty block (a SYN_REPLY's) too.
        let z = a.compress(&Vec::new()).unwrap();
        assert_eq!(b.decompress(&z).unwrap(), Vec::new());
    }

    #[test]
    fn frames_round_trip_with_known_heads() {
        let mut enc = HeaderCodec::new();
        let mut dec = HeaderCodec::new();
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynReply {
                stream_id: 1,
                flags: 0,
                headers: vec![],
            },
            Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::RstStream {
                stream_id: 5,
                status: rst::CANCEL,
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good: 9,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 65536,
            },
            Frame::Settings {
                entries: vec![(0, 7, 65536)],
            },
        ];
        for f in frames {
            let mut out = Vec::new();
            encode(&f, &mut enc, &mut out).unwrap();
            let head: [u8; 8] = out[..8].try_into().unwrap();
            let len = u32::from_be_bytes([0, head[5], head[6], head[7]]) as usize;
            assert_eq!(len, out.len() - 8);
            let back = decode(head, Bytes::copy_from_slice(&out[8..]), &mut dec)
                .unwrap()
                .unwrap();
            assert_eq!(back, f);
        }
        // Known bytes: PING 7 and a DATA frame with FIN.
        let mut out = Vec::new();
        encode(&Frame::Ping { id: 7 }, &mut enc, &mut out).unwrap();
        assert_eq!(out, [0x80, 3, 0, 6, 0, 0, 0, 4, 0, 0, 0, 7]);
        out.clear();
        encode(
            &Frame::Data {
                stream_id: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hi"),
            },
            &mut enc,
            &mut out,
        )
        .unwrap();
        assert_eq!(out, [0, 0, 0, 3, 1, 0, 0, 2, b'h', b'i']);
        // Not SPDY/3, and truncated payloads, are errors; unknown types are skipped.
        assert!(decode(
            [0x80, 2, 0, 6, 0, 0, 0, 4],
            Bytes::from_static(&[0; 4]),
            &mut dec
        )
        .is_err());
        assert!(decode(
            [0x80, 3, 0, 3, 0, 0, 0, 2],
            Bytes::from_static(&[0; 2]),
            &mut dec
        )
        .is_err());
        assert!(decode([0x80, 3, 0, 99, 0, 0, 0, 0], Bytes::new(), &mut dec)
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn session_replies_delivers_and_writes() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let mut s = Session::server(server);
        let (mut crd, mut cwr) = tokio::io::split(client);
        let mut enc = HeaderCodec::new();
        let mut dec = HeaderCodec::new();
        let mut out = Vec::new();
        for f in [
            Frame::SynStream {
                stream_id: 1,
                associated: 0,
                priority: 0,
                flags: 0,
                headers: vec![("streamtype".into(), "stdin".into())],
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"abc"),
            },
            Frame::Ping { id: 1 },
        ] {
            encode(&f, &mut enc, &mut out).unwrap();
        }
        cwr.write_all(&out).await.unwrap();
        let mut inc = s.accept().await.unwrap();
        assert_eq!(header(&inc.headers, "streamType"), Some("stdin"));
        assert_eq!(inc.data.recv().await.unwrap(), Bytes::from_static(b"abc"));
        assert!(inc.data.recv().await.is_none(), "FIN ends the data");
        inc.writer.write(b"out").await.unwrap();
        inc.writer.close().await.unwrap();
        let mut got = Vec::new();
        for _ in 0..4 {
            let (h, p) = read_raw(&mut crd).await.unwrap().unwrap();
            got.push(decode(h, p, &mut dec).unwrap().unwrap());
        }
        assert!(matches!(got[0], Frame::SynReply { stream_id: 1, .. }));
        assert!(got.contains(&Frame::Ping { id: 1 }));
        assert!(got.contains(&Frame::Data {
            stream_id: 1,
            flags: 0,
            data: Bytes::from_static(b"out")
        }));
        assert!(got.contains(&Frame::Data {
            stream_id: 1,
            flags: FLAG_FIN,
            data: Bytes::new()
        }));
        s.close().await;
    }
}
