//! Container logs in the CRI (kubelet) file format: one entry per line,
//! `<RFC3339Nano> <stdout|stderr> <F|P> <content>`, `P` marking a partial line.

use std::io::Write;
use std::path::Path;
use std::time::SystemTime;

use crate::util::rfc3339_nano;
use crate::{Error, Result};

/// Longest content of one entry; longer lines are split into `P` entries.
const MAX_LINE: usize = 16 * 1024;

/// Appends a container's output to its log file, line by line.
pub(crate) struct LogWriter {
    file: std::fs::File,
    partial: [Vec<u8>; 2],
}

/// Which stream output came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// Standard output (or the terminal of a TTY container).
    Stdout,
    /// Standard error.
    Stderr,
}

impl LogStream {
    fn name(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

impl LogWriter {
    pub fn open(path: &Path) -> Result<LogWriter> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        Ok(LogWriter {
            file,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Adds output; complete lines are written at once, the rest waits for its newline.
    pub fn write(&mut self, stream: LogStream, data: &[u8]) {
        let now = SystemTime::now();
        let buf_idx = stream as usize;
        let mut out = Vec::new();
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial[buf_idx]);
            line.extend_from_slice(&rest[..nl]);
            let line = line.strip_suffix(b"\r").unwrap_or(&line).to_vec();
            entry(&mut out, now, stream, true, &line);
            rest = &rest[nl + 1..];
        }
        self.partial[buf_idx].extend_from_slice(rest);
        while self.partial[buf_idx].len() >= MAX_LINE {
            let chunk: Vec<u8> = self.partial[buf_idx].drain(..MAX_LINE).collect();
            entry(&mut out, now, stream, false, &chunk);
        }
        self.emit(&out);
    }

    /// Writes out unterminated output (at container exit) as a full line.
    pub fn flush(&mut self) {
        let now = SystemTime::now();
        let mut out = Vec::new();
        for stream in [LogStream::Stdout, LogStream::Stderr] {
            let line = std::mem::take(&mut self.partial[stream as usize]);
            if !line.is_empty() {
                entry(&mut out, now, stream, true, &line);
            }
        }
        self.emit(&out);
    }

    fn emit(&mut self, out: &[u8]) {
        if !out.is_empty() {
            if let Err(e) = self.file.write_all(out) {
                tracing::warn!(error = %e, "writing container log");
            }
        }
    }
}

fn entry(out: &mut Vec<u8>, t: SystemTime, stream: LogStream, full: bool, content: &[u8]) {
    out.extend_from_slice(rfc3339_nano(t).as_bytes());
    out.push(b' ');
    out.extend_from_slice(stream.name().as_bytes());
    out.extend_from_slice(if full { b" F " } else { b" P " });
    out.extend_from_slice(content);
    out.push(b'\n');
}

/// One parsed log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// RFC 3339 timestamp.
    pub time: String,
    /// The stream.
    pub stream: LogStream,
    /// Whether the entry ends a line (`F`).
    pub full: bool,
    /// The bytes.
    pub content: Vec<u8>,
}

impl LogEntry {
    /// Parses one line (without its newline); `None` for anything malformed.
    pub fn parse(line: &[u8]) -> Option<LogEntry> {
        let mut parts = line.splitn(4, |&b| b == b' ');
        let time = std::str::from_utf8(parts.next()?).ok()?.to_string();
        let stream = match parts.next()? {
            b"stdout" => LogStream::Stdout,
            b"stderr" => LogStream::Stderr,
            _ => return None,
        };
        let full = match parts.next()? {
            b"F" => true,
            b"P" => false,
            _ => return None,
        };
        Some(LogEntry {
            time,
            stream,
            full,
            content: parts.next().unwrap_or_default().to_vec(),
        })
    }

    /// The bytes as the process wrote them (newline restored for full lines).
    pub fn raw(&self) -> Vec<u8> {
        let mut v = self.content.clone();
        if self.full {
            v.push(b'\n');
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_partials_and_streams_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut w = LogWriter::open(&p).unwrap();
        w.write(LogStream::Stdout, b"hel");
        w.write(LogStream::Stderr, b"oops\n");
        w.write(LogStream::Stdout, b"lo\r\nworld");
        w.write(LogStream::Stdout, &vec![b'x'; MAX_LINE + 3]);
        w.flush();
        let text = std::fs::read(&p).unwrap();
        let entries: Vec<LogEntry> = text
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| LogEntry::parse(l).expect("parsable"))
            .collect();
        assert_eq!(entries[0].stream, LogStream::Stderr);
        assert_eq!(entries[0].content, b"oops");
        assert_eq!(entries[1].content, b"hello");
        assert!(entries[1].full);
        assert!(!entries[2].full);
        assert_eq!(entries[2].content.len(), MAX_LINE);
        assert!(entries[2].content.starts_with(b"world"));
        assert_eq!(entries[3].content, b"xxxxxxxx");
        assert!(entries[3].full);
        assert_eq!(
            entries[0].time.len(),
            "2016-10-06T00:17:09.669794202Z".len()
        );
        assert!(LogEntry::parse(b"garbage").is_none());
    }
}
