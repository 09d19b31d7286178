//! The output relay: one thread reads the stdout/stderr (or terminal) of every process with
//! epoll and sends it to the host, and fires the output grace timers of exited processes.
//! No thread is started or ended per process (under TCG two thread starts per exec were a
//! measurable part of its round trip).
//!
//! Fairness and back-pressure: every ready descriptor gets one read of at most
//! [`MAX_DATA_LEN`] per round, and the thread waits for the port like every other writer, so
//! a process that writes faster than the host reads fills its pipe and blocks in `write`.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use h8s_guest::{Channel, ProcessId, MAX_DATA_LEN};

use crate::server::Agent;

/// The epoll token of the wake-up eventfd; output descriptors count up from 1.
const WAKE: u64 = 0;

/// Events handled per `epoll_wait`.
const BATCH: usize = 32;

/// Work handed to the relay thread.
#[derive(Default)]
struct Inbox {
    outputs: Vec<(File, ProcessId, Channel)>,
    timers: Vec<(Instant, ProcessId)>,
}

/// The relay's shared half: the agent hands it descriptors and timers.
pub struct Relay {
    epoll: OwnedFd,
    wake: OwnedFd,
    inbox: Mutex<Inbox>,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Relay {
    pub fn new() -> io::Result<Relay> {
        // SAFETY: epoll_create1 and eventfd take flags only; on success the descriptors are
        // fresh and owned by nobody else.
        let (epoll, wake) = unsafe {
            let e = OwnedFd::from_raw_fd(check(libc::epoll_create1(libc::EPOLL_CLOEXEC))?);
            let w = OwnedFd::from_raw_fd(check(libc::eventfd(
                0,
                libc::EFD_CLOEXEC | libc::EFD_NONBLOCK,
            ))?);
            (e, w)
        };
        let r = Relay {
            epoll,
            wake,
            inbox: Mutex::default(),
        };
        r.ctl(libc::EPOLL_CTL_ADD, r.wake.as_raw_fd(), WAKE)?;
        Ok(r)
    }

    fn ctl(&self, op: libc::c_int, fd: libc::c_int, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: token,
        };
        // SAFETY: epoll_ctl reads one valid epoll_event.
        check(unsafe { libc::epoll_ctl(self.epoll.as_raw_fd(), op, fd, &mut ev) }).map(drop)
    }

    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a valid u64 to our eventfd (EAGAIN when the counter is
        // full only means a wake-up is already pending).
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Relays `f` (a process's output) until it ends; the agent hears of the end through
    /// [`Agent::output_closed`].
    pub fn watch(&self, f: File, process: ProcessId, channel: Channel) {
        self.lock().outputs.push((f, process, channel));
        self.wake();
    }

    /// Calls [`Agent::finalize`] for `process` after `after`.
    pub fn timer(&self, process: ProcessId, after: Duration) {
        self.lock().timers.push((Instant::now() + after, process));
        self.wake();
    }

    /// The relay thread's loop.
    pub fn run(&self, agent: Arc<Agent>) -> ! {
        let mut outputs: HashMap<u64, (File, ProcessId, Channel)> = HashMap::new();
        let mut timers: Vec<(Instant, ProcessId)> = Vec::new();
        let mut next_token = WAKE + 1;
        let mut buf = vec![0u8; MAX_DATA_LEN];
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; BATCH];
        loop {
            let timeout = match timers.iter().map(|t| t.0).min() {
                None => -1,
                Some(at) => {
                    let ms = at.saturating_duration_since(Instant::now()).as_millis();
                    // Rounded up: waking early would only spin.
                    ms.min(60_000) as libc::c_int + 1
                }
            };
            // SAFETY: epoll_wait writes at most BATCH events into the valid array.
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    BATCH as libc::c_int,
                    timeout,
                )
            };
            let n = if n < 0 { 0 } else { n as usize };
            for ev in &events[..n] {
                let token = ev.u64;
                if token == WAKE {
                    let mut count = 0u64;
                    // SAFETY: reads 8 bytes into a valid u64 (resets the eventfd counter).
                    unsafe {
                        libc::read(self.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8)
                    };
                    let mut inbox = std::mem::take(&mut *self.lock());
                    timers.append(&mut inbox.timers);
                    for (f, process, channel) in inbox.outputs {
                        let token = next_token;
                        next_token += 1;
                        match self.ctl(libc::EPOLL_CTL_ADD, f.as_raw_fd(), token) {
                            Ok(()) => {
                                outputs.insert(token, (f, process, channel));
                            }
                            Err(e) => {
                                eprintln!("h8s-guest: cannot watch the output of {process}: {e}");
                                agent.output_closed(process);
                            }
                        }
                    }
                    continue;
                }
                let Some((f, process, channel)) = outputs.get_mut(&token) else {
                    continue;
                };
                let (process, channel) = (*process, *channel);
                let open = match f.read(&mut buf) {
                    Ok(0) => false,
                    Ok(n) => {
                        // After the exit was reported (grace over), later output is dropped.
                        !agent.is_finalized(process) && {
                            agent.send_output(process, channel, buf[..n].to_vec());
                            true
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => true,
                    // EIO: a pty master after the last slave closed.
                    Err(_) => false,
                };
                if !open {
                    // Closing the descriptor removes it from the epoll set.
                    outputs.remove(&token);
                    agent.output_closed(process);
                }
            }
            let now = Instant::now();
            let (due, later): (Vec<_>, Vec<_>) = timers.drain(..).partition(|t| t.0 <= now);
            timers = later;
            for (_, process) in due {
                agent.finalize(process);
            }
        }
    }
}
