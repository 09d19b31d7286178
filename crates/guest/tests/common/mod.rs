//! Boots the real guest (kernel + initramfs from the set-up step) under QEMU microvm and talks
//! to the agent over the virtio-serial port. Shared by the boot test and the boot benchmark.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use h8s_guest::{
    encode, Channel, Decoder, ExitStatus, Frame, Hello, Message, ProcessId, ProtoError, Reply,
    Request,
};

/// The MAC of the test VM's network interface.
pub const TEST_MAC: &str = "52:54:00:12:34:56";

/// The set-up step's outputs.
pub struct Guest {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
    pub release: String,
}

impl Guest {
    pub fn from_cache() -> Guest {
        let cache = std::env::var_os("H8S_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/h8s"));
        let env = std::fs::read_to_string(cache.join("guest/guest.env"))
            .expect("guest.env (run scripts/setup.d/20-guest.sh)");
        let get = |k: &str| {
            env.lines()
                .find_map(|l| l.strip_prefix(&format!("{k}=")))
                .unwrap_or_else(|| panic!("{k} missing in guest.env"))
                .to_string()
        };
        Guest {
            kernel: get("KERNEL").into(),
            initramfs: get("INITRAMFS").into(),
            release: get("RELEASE"),
        }
    }
}

/// The host's TSC frequency in kHz, for `tsc_early_khz=` (TCG boots hang now and then without
/// it, see GUEST-KERNEL.md).
pub fn host_tsc_khz() -> Option<u64> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("cpu MHz"))?
        .trim_start_matches([' ', '\t', ':'])
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0).round() as u64)
}

/// The kernel command line the guest is booted with.
pub fn kernel_cmdline(extra: &str) -> String {
    let mut c = String::from("console=ttyS0 quiet panic=-1");
    if let Some(khz) = host_tsc_khz() {
        c.push_str(&format!(" tsc_early_khz={khz}"));
    }
    if !extra.is_empty() {
        c.push(' ');
        c.push_str(extra);
    }
    c
}

/// A busybox erofs image: /bin/busybox, a symlink per applet, /etc/passwd and /etc/group.
pub fn busybox_image(dir: &Path) -> PathBuf {
    let root = dir.join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    let list = Command::new("/bin/busybox").arg("--list").output().unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
    }
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n").unwrap();
    let img = dir.join("busybox.erofs");
    let st = Command::new("mkfs.erofs")
        .args(["--quiet", "--all-root"])
        .arg(&img)
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success(), "mkfs.erofs failed");
    img
}

/// A QEMU process, killed (by PID) and reaped when dropped.
pub struct Qemu {
    pub child: Child,
    pub started: Instant,
    pub socket: PathBuf,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Qemu {
    /// Waits for QEMU to exit by itself (after a guest power-off).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

/// The QEMU command line of a pod VM (see docs/guest.md): microvm, TCG, serial console to
/// `console` (or QEMU's stdout, piped, when `None`), the agent port on a unix socket `sock` (QEMU listens), one read-only virtio-blk
/// disk per `(image, serial)`.
pub fn qemu_command(
    g: &Guest,
    sock: &Path,
    console: Option<&Path>,
    disks: &[(PathBuf, &str)],
    cmdline_extra: &str,
) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    c.args([
        "-M",
        "microvm,rtc=on",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",
    ])
    .args([
        "-m",
        "256",
        "-smp",
        "1",
        "-nodefaults",
        "-no-user-config",
        "-nographic",
    ])
    .args(["-no-reboot"])
    .arg("-serial")
    .arg(match console {
        Some(path) => format!("file:{}", path.display()),
        None => "stdio".to_string(),
    })
    .arg("-kernel")
    .arg(&g.kernel)
    .arg("-initrd")
    .arg(&g.initramfs)
    .arg("-append")
    .arg(kernel_cmdline(cmdline_extra))
    .args(["-device", "virtio-serial-device"])
    .arg("-chardev")
    .arg(format!(
        "socket,id=agent,path={},server=on,wait=off",
        sock.display()
    ))
    .args(["-device", "virtserialport,chardev=agent,name=h8s.agent"]);
    // One virtio-net device on a QEMU hub with nothing else on it: an interface to configure,
    // with no traffic leaving QEMU.
    c.args(["-netdev", "hubport,id=n0,hubid=0"]).args([
        "-device",
        &format!("virtio-net-device,netdev=n0,mac={TEST_MAC}"),
    ]);
    for (i, (img, serial)) in disks.iter().enumerate() {
        c.arg("-drive").arg(format!(
            "file={},if=none,id=d{i},format=raw,readonly=on",
            img.display()
        ));
        c.arg("-device")
            .arg(format!("virtio-blk-device,drive=d{i},serial={serial}"));
    }
    c.stdin(Stdio::null())
        .stdout(if console.is_some() {
            Stdio::null()
        } else {
            Stdio::piped()
        })
        .stderr(Stdio::piped());
    c
}

pub fn launch(mut cmd: Command, sock: &Path) -> Qemu {
    let started = Instant::now();
    let child = cmd.spawn().expect("start qemu-system-x86_64");
    Qemu {
        child,
        started,
        socket: sock.to_path_buf(),
    }
}

/// A test client of the agent protocol, collecting output and exits as they arrive.
pub struct Client {
    s: UnixStream,
    dec: Decoder,
    next_id: u64,
    pub output: HashMap<(ProcessId, Channel), Vec<u8>>,
    pub exits: HashMap<ProcessId, ExitStatus>,
    pub logs: Vec<String>,
    /// The latest Hello received after the first.
    pub last_hello: Option<Hello>,
    /// Responses that arrived while another was awaited (the agent may answer out of order).
    early: HashMap<u64, Result<Reply, ProtoError>>,
}

impl Client {
    /// Connects to QEMU's socket (retrying while QEMU creates it).
    pub fn connect(q: &mut Qemu, timeout: Duration) -> Client {
        let end = Instant::now() + timeout;
        let s = loop {
            match UnixStream::connect(&q.socket) {
                Ok(s) => break s,
                Err(e) => {
                    if let Some(st) = q.child.try_wait().unwrap() {
                        let mut err = String::new();
                        if let Some(mut e) = q.child.stderr.take() {
                            let _ = e.read_to_string(&mut err);
                        }
                        panic!("qemu exited ({st}) before its socket appeared: {err}");
                    }
                    assert!(Instant::now() < end, "no agent socket: {e}");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        };
        s.set_read_timeout(Some(timeout)).unwrap();
        Client {
            s,
            dec: Decoder::new(),
            next_id: 0,
            output: HashMap::new(),
            exits: HashMap::new(),
            logs: Vec::new(),
            last_hello: None,
            early: HashMap::new(),
        }
    }

    fn frame(&mut self) -> Frame {
        loop {
            if let Some(f) = self.dec.next_frame().expect("valid frame from the agent") {
                return f;
            }
            let mut buf = [0u8; 65536];
            let n = self.s.read(&mut buf).expect("read from agent (timed out?)");
            assert!(n > 0, "agent connection closed");
            self.dec.feed(&buf[..n]);
        }
    }

    /// Absorbs a non-response frame; returns a response as `(id, result)`.
    fn absorb(&mut self, f: Frame) -> Option<(u64, Result<Reply, ProtoError>)> {
        match f {
            Frame::Data {
                process,
                channel,
                data,
            } => self
                .output
                .entry((process, channel))
                .or_default()
                .extend_from_slice(&data),
            Frame::Message(Message::Event(h8s_guest::Event::Exited { process, status })) => {
                self.exits.insert(process, status);
            }
            Frame::Message(Message::Event(h8s_guest::Event::Log { message, .. })) => {
                self.logs.push(message)
            }
            Frame::Message(Message::Response { id, result }) => return Some((id, result)),
            Frame::Message(Message::Hello(h)) => self.last_hello = Some(h),
            other => panic!("unexpected frame {other:?}"),
        }
        None
    }

    pub fn hello(&mut self) -> Hello {
        match self.frame() {
            Frame::Message(Message::Hello(h)) => h,
            other => panic!("expected hello, got {other:?}"),
        }
    }

    pub fn send_frame(&mut self, f: &Frame) {
        self.s.write_all(&encode(f)).unwrap();
    }

    /// Sends a request without waiting; returns its id.
    pub fn send_request(&mut self, request: Request) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.send_frame(&Frame::Message(Message::Request { id, request }));
        id
    }

    /// Reads until the response to `id`, keeping others for later.
    pub fn response(&mut self, id: u64) -> Result<Reply, ProtoError> {
        if let Some(r) = self.early.remove(&id) {
            return r;
        }
        loop {
            let f = self.frame();
            if let Some((rid, result)) = self.absorb(f) {
                if rid == id {
                    return result;
                }
                assert!(rid <= self.next_id, "response to an unknown request {rid}");
                self.early.insert(rid, result);
            }
        }
    }

    pub fn call(&mut self, request: Request) -> Result<Reply, ProtoError> {
        let id = self.send_request(request);
        self.response(id)
    }

    pub fn wait_exit(&mut self, p: ProcessId) -> ExitStatus {
        while !self.exits.contains_key(&p) {
            let f = self.frame();
            if let Some((rid, result)) = self.absorb(f) {
                assert!(rid <= self.next_id, "response to an unknown request {rid}");
                self.early.insert(rid, result);
            }
        }
        self.exits[&p]
    }

    pub fn out(&self, p: ProcessId, c: Channel) -> String {
        String::from_utf8_lossy(self.output.get(&(p, c)).map_or(&[][..], |v| v)).into_owned()
    }
}
