//! Boots the real pod VM guest (Debian cloud kernel + h8s initramfs) under QEMU microvm/TCG and
//! drives the agent over virtio-serial: containers from an erofs busybox image, exec with
//! stdio and a terminal, users, env, signals, exit codes, removal, shutdown.

mod common;

use std::time::Duration;

use common::{busybox_image, launch, qemu_command, Client, Guest};
use h8s_guest::{
    BlockDevice, Channel, ContainerSpec, ErrorCode, ExecSpec, ExitStatus, Frame, IdOrName,
    Interface, NetworkConfig, ProcessId, ProcessSpec, ProcessState, Reply, Request, User,
    WritableLayer, PROTOCOL_VERSION,
};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn process(args: &[&str]) -> ProcessSpec {
    ProcessSpec {
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        working_dir: None,
        user: None,
        tty: false,
        stdin: false,
        tty_size: None,
    }
}

fn container(id: &str, pid: u32, p: ProcessSpec) -> Request {
    Request::CreateContainer(ContainerSpec {
        id: id.into(),
        rootfs: BlockDevice::Serial("busybox".into()),
        writable: WritableLayer::Default,
        process: p,
        process_id: ProcessId(pid),
        hostname: None,
        mounts: Vec::new(),
        read_only_root: false,
    })
}

fn exec(c: &mut Client, id: u32, p: ProcessSpec) -> Result<Reply, h8s_guest::ProtoError> {
    c.call(Request::Exec(ExecSpec {
        container: "sleeper".into(),
        process_id: ProcessId(id),
        process: p,
    }))
}

fn run_container(c: &mut Client, id: &str, pid: u32, p: ProcessSpec) -> ExitStatus {
    c.call(container(id, pid, p)).unwrap();
    let r = c.call(Request::StartContainer {
        container: id.into(),
    });
    assert!(matches!(r, Ok(Reply::Started { .. })), "{r:?}");
    c.wait_exit(ProcessId(pid))
}

#[test]
#[cfg_attr(
    not(h8s_guest_artifacts),
    ignore = "needs the guest kernel+initramfs (scripts/setup.d/20-guest.sh), qemu-system-x86, erofs-utils, busybox-static"
)]
fn pod_vm_runs_containers_and_execs() {
    let g = Guest::from_cache();
    let dir = tempfile::tempdir().unwrap();
    let img = busybox_image(dir.path());
    let sock = dir.path().join("agent.sock");
    let console = dir.path().join("console.log");
    let mut q = launch(
        qemu_command(&g, &sock, Some(&console), &[(img, "busybox")], ""),
        &sock,
    );
    let mut c = Client::connect(&mut q, BOOT_TIMEOUT);

    let hello = c.hello();
    assert_eq!(hello.version, PROTOCOL_VERSION);
    assert_eq!(hello.kernel_release, g.release);
    assert!(hello.containers.is_empty());
    assert_eq!(c.call(Request::Ping), Ok(Reply::Pong));

    // The network, before containers (they get resolv.conf, hosts, hostname at creation).
    let mut net = NetworkConfig {
        interfaces: vec![Interface {
            mac: "52:54:00:00:00:99".into(),
            name: Some("eth0".into()),
            addresses: vec!["10.0.2.15/24".into()],
            gateway: Some("10.0.2.2".into()),
            mtu: Some(1400),
        }],
        dns_servers: vec!["10.0.2.3".into()],
        dns_search: vec!["pod.local".into()],
        hostname: Some("testpod".into()),
        cluster_dns: None,
    };
    assert_eq!(
        c.call(Request::ConfigureNetwork(net.clone()))
            .unwrap_err()
            .code,
        ErrorCode::NotFound
    );
    net.interfaces[0].mac = common::TEST_MAC.into();
    net.interfaces[0].addresses.push("10.0.2".into());
    assert_eq!(
        c.call(Request::ConfigureNetwork(net.clone()))
            .unwrap_err()
            .code,
        ErrorCode::InvalidArgument
    );
    net.interfaces[0].addresses.pop();
    net.interfaces[0].addresses.push("fd00::15/64".into());
    assert_eq!(c.call(Request::ConfigureNetwork(net)), Ok(Reply::Done));
    let script = "ip -o addr show dev eth0; ip route; cat /sys/class/net/eth0/mtu; \
                  cat /etc/resolv.conf; hostname; grep testpod /etc/hosts; ip -o link show lo";
    let st = run_container(&mut c, "net", 3, process(&["sh", "-c", script]));
    let out = c.out(ProcessId(3), Channel::Stdout);
    assert_eq!(
        st,
        ExitStatus::Code(0),
        "{out}{}",
        c.out(ProcessId(3), Channel::Stderr)
    );
    for want in [
        "inet 10.0.2.15/24",
        "inet6 fd00::15/64",
        "default via 10.0.2.2 dev eth0",
        "\n1400\n",
        "nameserver 10.0.2.3\nsearch pod.local\n",
        "\ntestpod\n",
        "10.0.2.15\ttestpod",
        "LOOPBACK,UP",
    ] {
        assert!(out.contains(want), "{want:?} missing in:\n{out}");
    }

    // A container sees the guest kernel, not the host's.
    let st = run_container(&mut c, "uname", 1, process(&["uname", "-r"]));
    assert_eq!(st, ExitStatus::Code(0));
    assert_eq!(
        c.out(ProcessId(1), Channel::Stdout),
        format!("{}\n", g.release)
    );
    let host = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_ne!(g.release, host.trim());

    // Exit codes, stderr, env, working directory.
    let mut p = process(&["sh", "-c", "echo \"$FOO\"; pwd; echo oops >&2; exit 7"]);
    p.env = vec!["FOO=bar baz".into()];
    p.working_dir = Some("/work/dir".into());
    assert_eq!(run_container(&mut c, "exit7", 2, p), ExitStatus::Code(7));
    assert_eq!(c.out(ProcessId(2), Channel::Stdout), "bar baz\n/work/dir\n");
    assert_eq!(c.out(ProcessId(2), Channel::Stderr), "oops\n");

    // A long-running container to exec into; its main process is PID 1 of its own pid
    // namespace, its root is the image (the agent's /run/h8s is not visible).
    c.call(container(
        "sleeper",
        10,
        process(&["sh", "-c", "echo $$; exec sleep 1000"]),
    ))
    .unwrap();
    let Ok(Reply::Started { .. }) = c.call(Request::StartContainer {
        container: "sleeper".into(),
    }) else {
        panic!("sleeper did not start")
    };
    assert_eq!(
        c.call(Request::StartContainer {
            container: "sleeper".into()
        })
        .unwrap_err()
        .code,
        ErrorCode::FailedPrecondition
    );

    let r = exec(
        &mut c,
        11,
        process(&[
            "sh",
            "-c",
            "ls /run/h8s 2>&1; test -e /bin/busybox && echo image; exit 3",
        ]),
    );
    assert!(matches!(r, Ok(Reply::Started { .. })), "{r:?}");
    assert_eq!(c.wait_exit(ProcessId(11)), ExitStatus::Code(3));
    let out = c.out(ProcessId(11), Channel::Stdout);
    assert!(
        out.contains("No such file") && out.ends_with("image\n"),
        "{out:?}"
    );
    assert_eq!(c.out(ProcessId(10), Channel::Stdout), "1\n");

    // The host goes away and comes back (an h8s restart): the agent greets again and lists
    // what runs.
    drop(c);
    let mut c = Client::connect(&mut q, BOOT_TIMEOUT);
    assert_eq!(c.call(Request::Greet), Ok(Reply::Done));
    let hello = c.last_hello.take().expect("a Hello before Greet's answer");
    let sleeper = hello
        .containers
        .iter()
        .find(|ci| ci.id == "sleeper")
        .expect("sleeper listed after reconnect");
    assert!(
        matches!(sleeper.processes[0].state, ProcessState::Running { .. }),
        "{sleeper:?}"
    );
    assert_eq!(c.call(Request::Ping), Ok(Reply::Pong));

    // Users from the image's /etc/passwd.
    let mut p = process(&["id"]);
    p.user = Some(User {
        user: IdOrName::Name("nobody".into()),
        group: None,
        additional_gids: vec![],
    });
    exec(&mut c, 12, p).unwrap();
    assert_eq!(c.wait_exit(ProcessId(12)), ExitStatus::Code(0));
    assert!(
        c.out(ProcessId(12), Channel::Stdout)
            .starts_with("uid=65534(nobody) gid=65534(nogroup)"),
        "{}",
        c.out(ProcessId(12), Channel::Stdout)
    );

    // Stdin through a pipe, then end of input.
    let mut p = process(&["cat"]);
    p.stdin = true;
    exec(&mut c, 13, p).unwrap();
    c.send_frame(&Frame::Data {
        process: ProcessId(13),
        channel: Channel::Stdin,
        data: b"hello from the host\n".to_vec(),
    });
    c.call(Request::CloseStdin {
        process: ProcessId(13),
    })
    .unwrap();
    assert_eq!(c.wait_exit(ProcessId(13)), ExitStatus::Code(0));
    assert_eq!(
        c.out(ProcessId(13), Channel::Stdout),
        "hello from the host\n"
    );

    // A terminal: size set at start, changed by resize, input echoed.
    let mut p = process(&[
        "sh",
        "-c",
        "stty size; read line; stty size; echo got:$line",
    ]);
    p.tty = true;
    p.stdin = true;
    p.tty_size = Some((24, 80));
    exec(&mut c, 14, p).unwrap();
    // Wait for the first size line before resizing.
    while !c.out(ProcessId(14), Channel::Stdout).contains("24 80") {
        let r = c.call(Request::Ping);
        assert_eq!(r, Ok(Reply::Pong));
        assert!(
            !c.exits.contains_key(&ProcessId(14)),
            "tty exec exited early"
        );
    }
    c.call(Request::ResizeTty {
        process: ProcessId(14),
        rows: 50,
        cols: 132,
    })
    .unwrap();
    c.send_frame(&Frame::Data {
        process: ProcessId(14),
        channel: Channel::Stdin,
        data: b"typed\r".to_vec(),
    });
    assert_eq!(c.wait_exit(ProcessId(14)), ExitStatus::Code(0));
    let out = c.out(ProcessId(14), Channel::Stdout);
    assert!(
        out.contains("50 132") && out.contains("got:typed"),
        "{out:?}"
    );
    assert_eq!(c.out(ProcessId(14), Channel::Stderr), "");

    // Wait answers at once for an exited process; bad requests get typed errors.
    assert_eq!(
        c.call(Request::Wait {
            process: ProcessId(11)
        }),
        Ok(Reply::Exited(ExitStatus::Code(3)))
    );
    assert_eq!(
        exec(&mut c, 15, process(&["no-such-command"]))
            .unwrap_err()
            .code,
        ErrorCode::ExecutableNotFound
    );
    assert_eq!(
        exec(&mut c, 11, process(&["true"])).unwrap_err().code,
        ErrorCode::AlreadyExists
    );
    let mut bad_env = process(&["true"]);
    bad_env.env = vec!["NOEQUALS".into()];
    assert_eq!(
        exec(&mut c, 16, bad_env).unwrap_err().code,
        ErrorCode::InvalidArgument
    );
    assert_eq!(
        c.call(Request::Signal {
            process: ProcessId(99),
            signal: 9
        })
        .unwrap_err()
        .code,
        ErrorCode::NotFound
    );
    let mut missing = container("missing", 20, process(&["true"]));
    if let Request::CreateContainer(s) = &mut missing {
        s.rootfs = BlockDevice::Serial("nope".into());
    }
    assert_eq!(c.call(missing).unwrap_err().code, ErrorCode::NotFound);
    assert_eq!(
        c.call(Request::RemoveContainer {
            container: "sleeper".into()
        })
        .unwrap_err()
        .code,
        ErrorCode::FailedPrecondition
    );

    // Signals reach the container's main process; a pending Wait answers on exit, after the
    // exit event.
    let wait_id = c.send_request(Request::Wait {
        process: ProcessId(10),
    });
    c.call(Request::Signal {
        process: ProcessId(10),
        signal: 9,
    })
    .unwrap();
    assert_eq!(
        c.response(wait_id),
        Ok(Reply::Exited(ExitStatus::Signal(9)))
    );
    assert_eq!(c.exits[&ProcessId(10)], ExitStatus::Signal(9));
    assert_eq!(
        exec(&mut c, 17, process(&["true"])).unwrap_err().code,
        ErrorCode::FailedPrecondition
    );

    let Ok(Reply::Containers(list)) = c.call(Request::ListContainers) else {
        panic!("list failed")
    };
    let ids: Vec<_> = list.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["exit7", "net", "sleeper", "uname"]);
    for id in ["uname", "exit7", "sleeper", "net"] {
        c.call(Request::RemoveContainer {
            container: id.into(),
        })
        .unwrap();
    }
    assert_eq!(
        c.call(Request::ListContainers),
        Ok(Reply::Containers(vec![]))
    );

    // Shutdown powers the VM off and QEMU exits.
    assert_eq!(c.call(Request::Shutdown), Ok(Reply::Done));
    let st = q.wait_exit(Duration::from_secs(30));
    assert!(
        st.is_some_and(|s| s.success()),
        "qemu did not exit cleanly: {st:?}; console:\n{}",
        std::fs::read_to_string(&console).unwrap_or_default()
    );
}
