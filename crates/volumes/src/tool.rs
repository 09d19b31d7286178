//! Running the storage tools (`qemu-img`, `mkfs.ext4`, `rbd`).

use std::process::{Command, Stdio};

use crate::{Error, Result};

/// Runs `program args…`; its stdout on success, else [`Error::Tool`] with stderr's last lines.
pub(crate) fn run(program: &'static str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::Tool {
            tool: program,
            message: format!("cannot run it: {e} (run scripts/setup)"),
        })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(Error::Tool {
        tool: program,
        message: last_lines(&String::from_utf8_lossy(&out.stderr), &out.status),
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
