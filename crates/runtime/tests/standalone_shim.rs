//! The standalone supervisor binary and how `h8s` chooses it (no VM needed).

use std::path::PathBuf;
use std::process::Command;

use h8s_runtime::{ShimCommand, BUILD_ID};

const SHIM: &str = env!("CARGO_BIN_EXE_h8s-pod-shim");

#[test]
fn a_binary_uses_the_standalone_supervisor_beside_it_and_falls_back_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("h8s");
    std::fs::write(&exe, b"").unwrap();
    let alone = ShimCommand::beside(exe.clone(), "pod-shim");
    assert_eq!(alone.program, exe);
    assert_eq!(alone.args, ["pod-shim"]);

    let standalone = dir.path().join(ShimCommand::STANDALONE);
    std::fs::write(&standalone, b"").unwrap();
    let beside = ShimCommand::beside(exe.clone(), "pod-shim");
    assert_eq!(beside.program, standalone);
    assert_eq!(
        beside.args,
        [
            "--build-id",
            BUILD_ID,
            "--else",
            exe.to_str().unwrap(),
            "pod-shim"
        ]
    );
}

#[test]
fn a_standalone_supervisor_from_other_sources_runs_the_callers_binary_instead() {
    // `/bin/echo` stands for the caller's `h8s`: it shows the command line it was given.
    let out = Command::new(SHIM)
        .args(["--build-id", "0000000000000000", "--else", "/bin/echo"])
        .args(["pod-shim", "--root", "/nonexistent", "--adopt", "abc123"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "pod-shim --root /nonexistent --adopt abc123\n"
    );
    // Without a fallback it refuses, saying why.
    let out = Command::new(SHIM)
        .args(["--build-id", "0000000000000000", "--root", "/x", "abc123"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("built from other sources"));
}

#[test]
fn a_standalone_supervisor_from_the_same_sources_supervises() {
    // The same build id: it runs as the supervisor, which answers its spawner with an error
    // line on a root without the pod (the fallback would have printed its arguments).
    let root = tempfile::tempdir().unwrap();
    let out = Command::new(SHIM)
        .args(["--build-id", BUILD_ID, "--else", "/bin/echo", "pod-shim"])
        .arg("--root")
        .arg(PathBuf::from(root.path()))
        .arg("abc123")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(line.get("error").is_some(), "{line}");
    // It logs (to stderr, the pod's `shim.log`), as `h8s pod-shim` does.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("pod supervisor failed"), "{log}");
}
