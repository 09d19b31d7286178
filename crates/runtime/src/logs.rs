//! Container logs in the CRI (kubelet) file format: one entry per line,
//! `<RFC3339Nano> <stdout|stderr> <F|P> <content>`, `P` marking a partial line.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::util::rfc3339_nano;
use crate::{Error, Result};

/// Longest content of one entry; longer lines are split into `P` entries.
const MAX_LINE: usize = 16 * 1024;

/// How large a container's log may grow: kubelet's `containerLogMaxSize` (10 MiB) and
/// `containerLogMaxFiles` (5, the current file included). When the current file would pass
/// `max_bytes` it is renamed to `<file>.<UTC time>` and a new one is started; only the newest
/// `max_files - 1` rotated files are kept. `max_bytes == 0` turns rotation off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLimits {
    /// Largest size of one file, bytes.
    pub max_bytes: u64,
    /// Most files per container, the current one included (at least 1).
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            max_bytes: 10 << 20,
            max_files: 5,
        }
    }
}

/// Appends a container's output to its log file, line by line, rotating it at its limit.
pub(crate) struct LogWriter {
    file: std::fs::File,
    path: PathBuf,
    size: u64,
    limits: LogLimits,
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
    pub fn open(path: &Path, limits: LogLimits) -> Result<LogWriter> {
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(LogWriter {
            file,
            path: path.to_path_buf(),
            size,
            limits,
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

    /// Writes whole entries, rotating first when the next ones would pass the limit (a
    /// file holds at least one entry, so it stays below `max_bytes` + one entry).
    fn emit(&mut self, out: &[u8]) {
        let mut rest = out;
        while !rest.is_empty() {
            let room = if self.limits.max_bytes == 0 {
                u64::MAX
            } else {
                self.limits.max_bytes.saturating_sub(self.size)
            };
            // The longest run of whole entries that fits.
            let mut take = 0usize;
            for (i, b) in rest.iter().enumerate() {
                if *b == b'\n' {
                    if (i + 1) as u64 > room {
                        break;
                    }
                    take = i + 1;
                }
            }
            if take == 0 {
                if self.size > 0 {
                    self.rotate();
                    continue;
                }
                // One entry larger than the limit: it gets a file of its own.
                take = rest
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(rest.len(), |i| i + 1);
            }
            if let Err(e) = self.file.write_all(&rest[..take]) {
                tracing::warn!(error = %e, "writing container log");
            }
            self.size += take as u64;
            rest = &rest[take..];
        }
    }

    fn rotate(&mut self) {
        let stamp: String = rfc3339_nano(SystemTime::now())
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '.')
            .collect();
        let rotated = PathBuf::from(format!("{}.{stamp}", self.path.display()));
        if let Err(e) = std::fs::rename(&self.path, &rotated) {
            tracing::warn!(error = %e, "rotating container log");
        }
        match open_append(&self.path) {
            Ok(f) => {
                self.file = f;
                self.size = 0;
            }
            Err(e) => tracing::warn!(error = %e, "reopening container log"),
        }
        let keep = self.limits.max_files.saturating_sub(1) as usize;
        let mut old = rotated_files(&self.path);
        if old.len() > keep {
            old.sort();
            for p in &old[..old.len() - keep] {
                let _ = std::fs::remove_file(p);
            }
        }
    }
}

fn open_append(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// The rotated files of log `path` (`<file>.<UTC time>`, e.g. `c.0.log.20261204T221500.123456789Z`).
pub(crate) fn rotated_files(path: &Path) -> Vec<PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else {
        return Vec::new();
    };
    let prefix = format!("{name}.");
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            e.file_name().to_str().is_some_and(|n| {
                n.strip_prefix(&prefix).is_some_and(|rest| {
                    rest.len() >= 16 && rest.contains('T') && rest.ends_with('Z')
                })
            })
        })
        .map(|e| e.path())
        .collect()
}

/// Removes a container's log and its rotated files.
pub(crate) fn remove_log(path: &Path) {
    for p in rotated_files(path) {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_file(path);
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

/// Opens a container log file (`<pod dir>/logs/<name>.log`, or its rotated `.1`) for
/// reading, as a root client must: a jailed pod's directory belongs to the pod's uid, so
/// neither `logs` nor the file may be a link (that could make `kubectl logs` read any host
/// file) — the path below the pod directory is resolved with `RESOLVE_BENEATH` and
/// `RESOLVE_NO_SYMLINKS`, and only a regular file is returned.
pub fn open_log_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags, ResolveFlags};
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidInput, why.to_string());
    let name = path.file_name().ok_or_else(|| bad("no file name"))?;
    let logs = path.parent().ok_or_else(|| bad("no parent"))?;
    let pod = logs.parent().ok_or_else(|| bad("no pod directory"))?;
    let logs_name = logs.file_name().ok_or_else(|| bad("no logs directory"))?;
    let dir = std::fs::File::open(pod)?;
    let rel = std::path::Path::new(logs_name).join(name);
    let fd = rustix::fs::openat2(
        &dir,
        &rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(std::io::Error::from)?;
    let f = std::fs::File::from(fd);
    if !f.metadata()?.is_file() {
        return Err(bad("not a regular file"));
    }
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_files_open_only_without_links() {
        let t = tempfile::tempdir().unwrap();
        let pod = t.path().join("pod");
        std::fs::create_dir_all(pod.join("logs")).unwrap();
        std::fs::write(pod.join("logs/app.log"), "x").unwrap();
        std::fs::write(t.path().join("secret"), "s").unwrap();
        assert!(open_log_file(&pod.join("logs/app.log")).is_ok());
        assert_eq!(
            open_log_file(&pod.join("logs/missing.log"))
                .unwrap_err()
                .kind(),
            std::io::ErrorKind::NotFound
        );
        // A link as the file, and a link as the logs directory, are refused.
        std::os::unix::fs::symlink(t.path().join("secret"), pod.join("logs/evil.log")).unwrap();
        assert!(open_log_file(&pod.join("logs/evil.log")).is_err());
        let other = t.path().join("other");
        std::fs::create_dir_all(&other).unwrap();
        std::fs::write(other.join("app.log"), "o").unwrap();
        std::fs::rename(pod.join("logs"), pod.join("old")).unwrap();
        std::os::unix::fs::symlink(&other, pod.join("logs")).unwrap();
        assert!(open_log_file(&pod.join("logs/app.log")).is_err());
    }

    #[test]
    fn lines_partials_and_streams_are_kept_apart() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.log");
        let mut w = LogWriter::open(&p, LogLimits::default()).unwrap();
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

    #[test]
    fn logs_rotate_at_their_limit_and_keep_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.0.log");
        let limits = LogLimits {
            max_bytes: 4096,
            max_files: 3,
        };
        let mut w = LogWriter::open(&p, limits).unwrap();
        // `yes`: 1 MiB of "y\n" in 64 KiB writes.
        for _ in 0..16 {
            w.write(LogStream::Stdout, &b"y\n".repeat(32 * 1024));
        }
        let rotated = rotated_files(&p);
        assert_eq!(rotated.len(), 2, "{rotated:?}");
        let mut total = std::fs::metadata(&p).unwrap().len();
        for r in &rotated {
            let len = std::fs::metadata(r).unwrap().len();
            assert!(len <= 4096, "{} is {len} bytes", r.display());
            total += len;
        }
        assert!(total <= 3 * 4096, "{total}");
        // Every file holds whole, parsable entries; the current one the newest output.
        let text = std::fs::read(&p).unwrap();
        assert!(text.ends_with(b" stdout F y\n"));
        for l in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert_eq!(LogEntry::parse(l).unwrap().content, b"y");
        }
        // Other files in the directory are not taken for rotated ones.
        std::fs::write(dir.path().join("c.0.log.1"), b"x").unwrap();
        assert_eq!(rotated_files(&p).len(), 2);
        remove_log(&p);
        assert!(!p.exists() && rotated_files(&p).is_empty());
        // An entry larger than the limit gets a file of its own.
        let mut w = LogWriter::open(
            &p,
            LogLimits {
                max_bytes: 10,
                max_files: 2,
            },
        )
        .unwrap();
        w.write(LogStream::Stdout, b"a long line\nanother\n");
        assert_eq!(rotated_files(&p).len(), 1);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.ends_with(" stdout F another\n"), "{text}");
    }
}
