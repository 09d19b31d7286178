//! Running the storage tools (`qemu-img`, `mkfs.ext4`, `rbd`).

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// How long a tool may run by default before it is killed.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Runs `program args…` with [`DEFAULT_TIMEOUT`]; see [`run_timeout`].
pub(crate) fn run(program: &'static str, args: &[&str]) -> Result<String> {
    run_timeout(program, args, DEFAULT_TIMEOUT)
}

/// Runs `program args…`; its stdout on success, else [`Error::Tool`] with stderr's last lines.
/// A run longer than `timeout` (e.g. `rbd` waiting on monitors that do not answer) is killed
/// with its whole process group and reported as timed out, so a caller never hangs on it.
pub(crate) fn run_timeout(
    program: &'static str,
    args: &[&str],
    timeout: Duration,
) -> Result<String> {
    use std::os::unix::process::CommandExt;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a timeout kills helpers it started too.
        .process_group(0)
        .spawn()
        .map_err(|e| Error::Tool {
            tool: program,
            message: format!("cannot run it: {e} (run scripts/setup)"),
        })?;
    // Both pipes drained on their own threads, so a chatty tool never blocks on a full pipe.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                // At most 1 MiB kept of what a tool prints; the rest is read and dropped.
                let _ = r.by_ref().take(1 << 20).read_to_end(&mut buf);
                let _ = std::io::copy(&mut r, &mut std::io::sink());
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => {
                return Err(Error::Tool {
                    tool: program,
                    message: format!("waiting for it: {e}"),
                })
            }
        }
    };
    let Some(status) = status else {
        if let Some(pgid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process_group(pgid, rustix::process::Signal::KILL);
        }
        let _ = child.kill();
        let _ = child.wait();
        return Err(Error::Tool {
            tool: program,
            message: format!("no answer within {timeout:?}; killed"),
        });
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        return Ok(String::from_utf8_lossy(&stdout).into_owned());
    }
    Err(Error::Tool {
        tool: program,
        message: last_lines(&String::from_utf8_lossy(&stderr), &status),
    })
}

fn last_lines(stderr: &str, status: &std::process::ExitStatus) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    let tail = lines[lines.len().saturating_sub(3)..].join("; ");
    if tail.is_empty() {
        format!("exited with {status}")
    } else {
        tail.chars().take(600).collect()
    }
}

/// `mkfs.ext4` on an empty image file (no mount; the file is the device). Lazy inode table and
/// journal initialisation keep a large sparse file sparse; the guest kernel finishes it.
pub(crate) fn mkfs_ext4(file: &str) -> Result<()> {
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
            file,
        ],
    )
    .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_and_failures() {
        assert_eq!(
            run("sh", &["-c", "echo out; echo err >&2"]).unwrap(),
            "out\n"
        );
        match run("sh", &["-c", "echo first >&2; echo why >&2; exit 3"]) {
            Err(Error::Tool { tool, message }) => {
                assert_eq!(tool, "sh");
                assert_eq!(message, "first; why");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_hanging_tool_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("pid");
        let script = format!("sleep 60 & echo $! > {}; wait", pidfile.display());
        let t0 = Instant::now();
        match run_timeout("sh", &["-c", &script], Duration::from_millis(300)) {
            Err(Error::Tool { message, .. }) => assert!(message.contains("killed"), "{message}"),
            other => panic!("{other:?}"),
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
        // The tool's own child went with it (gone, or a zombie until init reaps it).
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let pid = pid.trim();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let alive = state
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|s| s != "Z");
            if !alive {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "sleep {pid} survived the timeout"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
