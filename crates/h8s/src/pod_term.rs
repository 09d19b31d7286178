//! Terminal plumbing for `h8s run` / `h8s exec`: raw mode, window size, and the loop that
//! joins the local stdio, signals and window changes to a pod stream.

use std::io::{Read, Write};

use h8s_runtime::{Stream, StreamEvent};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

/// The terminal size of stdout (or stdin) as (rows, cols), if it is a terminal.
pub fn size() -> Option<(u16, u16)> {
    for fd in [1, 0, 2] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes one `winsize` into the valid, exclusively borrowed `ws`.
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        if r == 0 && ws.ws_row > 0 && ws.ws_col > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

/// The local terminal in raw mode; restored on drop (also on error paths).
pub struct RawMode {
    saved: libc::termios,
}

impl RawMode {
    /// Puts stdin's terminal in raw mode; `None` if stdin is not a terminal.
    pub fn enter() -> Option<RawMode> {
        // SAFETY: isatty only inspects fd 0.
        if unsafe { libc::isatty(0) } != 1 {
            return None;
        }
        // SAFETY: an all-zero termios is a valid value to be overwritten by tcgetattr.
        let mut saved: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: tcgetattr fills the valid `saved` for fd 0.
        if unsafe { libc::tcgetattr(0, &mut saved) } != 0 {
            return None;
        }
        let mut raw = saved;
        // SAFETY: cfmakeraw edits the valid `raw` in place; tcsetattr reads it.
        unsafe {
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(0, libc::TCSANOW, &raw) != 0 {
                return None;
            }
        }
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        // SAFETY: restores the attributes read in `enter` on the same fd.
        unsafe {
            libc::tcsetattr(0, libc::TCSANOW, &self.saved);
        }
    }
}

/// Joins a stream to the local stdio until the process exits. Returns its exit code, or
/// `None` if the stream ended without one (the pod went away).
pub async fn pump(stream: Stream, interactive: bool, tty: bool) -> std::io::Result<Option<i32>> {
    let Stream {
        mut input,
        mut output,
    } = stream;
    // The output is read in its own task: reading a frame is not cancel-safe.
    let (out_tx, mut out_rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let ev = output.next().await;
            let end = !matches!(
                ev,
                Ok(Some(StreamEvent::Stdout(_) | StreamEvent::Stderr(_)))
            );
            let _ = out_tx.send(ev);
            if end {
                break;
            }
        }
    });
    let (in_tx, mut in_rx) = mpsc::channel::<Option<Vec<u8>>>(16);
    if interactive {
        // Blocking reads of stdin on a plain thread; the process exits without joining it.
        std::thread::spawn(move || {
            let mut stdin = std::io::stdin().lock();
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) | Err(_) => {
                        let _ = in_tx.blocking_send(None);
                        break;
                    }
                    Ok(n) => {
                        if in_tx.blocking_send(Some(buf[..n].to_vec())).is_err() {
                            break;
                        }
                    }
                }
            }
        });
    } else {
        drop(in_tx);
    }
    let mut stdin_open = interactive;
    let mut winch = signal(SignalKind::window_change())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let mut sigquit = signal(SignalKind::quit())?;
    if tty {
        // The size may have changed between create and start.
        if let Some((r, c)) = size() {
            let _ = input.resize(r, c).await;
        }
    }
    loop {
        tokio::select! {
            ev = out_rx.recv() => match ev {
                Some(Ok(Some(StreamEvent::Stdout(d)))) => {
                    let mut o = std::io::stdout().lock();
                    o.write_all(&d)?;
                    o.flush()?;
                }
                Some(Ok(Some(StreamEvent::Stderr(d)))) => {
                    let mut o = std::io::stderr().lock();
                    o.write_all(&d)?;
                    o.flush()?;
                }
                Some(Ok(Some(StreamEvent::Exit(code)))) => return Ok(Some(code)),
                Some(Ok(None)) | None => return Ok(None),
                Some(Err(e)) => return Err(std::io::Error::other(e.to_string())),
            },
            data = in_rx.recv(), if stdin_open => match data {
                Some(Some(d)) => { let _ = input.stdin(&d).await; }
                Some(None) | None => {
                    stdin_open = false;
                    let _ = input.close_stdin().await;
                }
            },
            _ = winch.recv() => {
                if tty {
                    if let Some((r, c)) = size() {
                        let _ = input.resize(r, c).await;
                    }
                }
            }
            // Without a terminal, signals to `h8s` go to the container (docker's sig-proxy);
            // with one, Ctrl-C arrives as a byte and the guest's terminal makes it SIGINT.
            _ = sigint.recv() => { let _ = input.signal(libc::SIGINT).await; }
            _ = sigterm.recv() => { let _ = input.signal(libc::SIGTERM).await; }
            _ = sighup.recv() => { let _ = input.signal(libc::SIGHUP).await; }
            _ = sigquit.recv() => { let _ = input.signal(libc::SIGQUIT).await; }
        }
    }
}
