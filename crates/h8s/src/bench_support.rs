//! What the benchmark commands that drive a separate `h8s server` process share: starting and
//! stopping it, sample statistics, and rewriting their own block of BENCHMARKS.md.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// An `h8s server` process on a temp data dir, stopped (SIGTERM, then SIGKILL) on drop.
pub struct ServerProc {
    pub child: Child,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        // SIGTERM lets it release its leases; then make sure it is gone.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProc {
    /// The server's URL, cluster CA (PEM) and admin token, from its data dir.
    pub fn endpoint(&self) -> anyhow::Result<(String, String, String)> {
        let data = self.kubeconfig.parent().context("data dir")?;
        let token = std::fs::read_to_string(data.join("admin.token"))?
            .trim()
            .to_string();
        let ca = std::fs::read_to_string(data.join("ca.crt"))?;
        let url = std::fs::read_to_string(&self.kubeconfig)?
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_string))
            .context("server URL in the admin kubeconfig")?;
        Ok((url, ca, token))
    }
}

/// Starts this binary as `h8s server --listen 127.0.0.1:0 <extra> --data-dir <temp>` and waits
/// for its `ready` line.
pub fn start_server(extra: &[&str]) -> anyhow::Result<ServerProc> {
    start_server_at(&std::env::current_exe()?, extra)
}

/// [`start_server`] with another `h8s` binary (a benchmark's before/after comparison).
pub fn start_server_at(exe: &Path, extra: &[&str]) -> anyhow::Result<ServerProc> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("data");
    let mut child = Command::new(exe)
        .args(["server", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--data-dir")
        .arg(&data)
        .env("H8S_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .context("starting h8s server")?;
    let mut out = std::io::BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    out.read_line(&mut line)?;
    std::thread::spawn(move || {
        let mut s = String::new();
        while out.read_line(&mut s).map(|n| n > 0).unwrap_or(false) {
            s.clear();
        }
    });
    if !line.starts_with("ready ") {
        let _ = child.kill();
        bail!("server did not start: {line:?}");
    }
    Ok(ServerProc {
        child,
        kubeconfig: data.join("admin.kubeconfig"),
        _dir: dir,
    })
}

/// min, median, p99 of a sample.
pub fn stats(v: &mut [f64]) -> (f64, f64, f64) {
    if v.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (v[0], at(0.5), at(0.99))
}

/// Replaces the `<!-- bench:<name>:begin/end -->` block of `path` with `md`, or appends it
/// under `heading` when the file has none yet.
pub fn write_section(path: &Path, name: &str, heading: &str, md: &str) -> anyhow::Result<()> {
    let (b, e) = (
        format!("<!-- bench:{name}:begin -->"),
        format!("<!-- bench:{name}:end -->"),
    );
    let cur =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let block = format!("{b}\n{md}\n{e}");
    let new = match (cur.find(&b), cur.find(&e)) {
        (Some(i), Some(j)) if j > i => format!("{}{}{}", &cur[..i], block, &cur[j + e.len()..]),
        _ => format!("{}\n\n## {heading}\n{block}\n", cur.trim_end_matches('\n')),
    };
    std::fs::write(path, new).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_appended_once_then_replaced_in_place() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("B.md");
        std::fs::write(&p, "# B\n\nintro\n").unwrap();
        write_section(&p, "x", "X", "one").unwrap();
        write_section(&p, "x", "X", "two").unwrap();
        let s = std::fs::read_to_string(&p).unwrap();
        assert_eq!(
            s,
            "# B\n\nintro\n\n## X\n<!-- bench:x:begin -->\ntwo\n<!-- bench:x:end -->\n"
        );
        assert_eq!(stats(&mut [3.0, 1.0, 2.0]), (1.0, 2.0, 3.0));
    }
}
