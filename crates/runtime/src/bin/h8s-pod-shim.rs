//! The standalone pod supervisor: `h8s pod-shim` without the rest of `h8s`, which `h8s` runs
//! when it finds it beside itself ([`h8s_runtime::ShimCommand::beside`]), and the runtime's
//! own tests and benchmarks use.
//!
//! `h8s-pod-shim [--build-id ID --else PROGRAM SUBCOMMAND] --root DIR [--adopt |
//! --build-template [--template-owner PID:START]] ID`: with `--build-id`, a binary from other
//! sources than ID's runs `PROGRAM SUBCOMMAND` with the other arguments instead.

use std::os::unix::process::CommandExt;

const USAGE: &str = "usage: h8s-pod-shim [--build-id ID --else PROGRAM SUBCOMMAND] --root DIR \
                     [--adopt | --build-template [--template-owner PID:START]] ID";

fn main() {
    // First the caller's build check, which decides who handles the other arguments.
    let mut all = std::env::args().skip(1);
    let mut rest = Vec::new();
    let mut expected = None;
    let mut fallback = None;
    while let Some(a) = all.next() {
        match a.as_str() {
            "--build-id" => expected = all.next(),
            "--else" => fallback = all.next().zip(all.next()),
            _ => rest.push(a),
        }
    }
    if let Some(expected) = expected.filter(|e| e != h8s_runtime::BUILD_ID) {
        let Some((program, subcommand)) = fallback else {
            eprintln!(
                "h8s-pod-shim: built from other sources ({}) than the caller ({expected})",
                h8s_runtime::BUILD_ID
            );
            std::process::exit(2);
        };
        let e = std::process::Command::new(&program)
            .arg(subcommand)
            .args(&rest)
            .exec();
        eprintln!("h8s-pod-shim: running {program}: {e}");
        std::process::exit(2);
    }

    let mut args = rest.into_iter();
    let mut root = None;
    let mut adopt = false;
    let mut build_template = false;
    let mut owner = None;
    let mut id = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--root" => root = args.next(),
            "--adopt" => adopt = true,
            "--build-template" => build_template = true,
            "--template-owner" => {
                owner = match args.next().map(|o| o.parse::<h8s_runtime::ProcessRef>()) {
                    Some(Ok(o)) => Some(o),
                    _ => {
                        eprintln!("--template-owner takes PID:START_TICKS");
                        std::process::exit(2);
                    }
                }
            }
            _ => id = Some(a),
        }
    }
    // The log goes to stderr, which the spawner points at the pod's `shim.log`; filtered by
    // `H8S_LOG` as `h8s pod-shim` is.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("H8S_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let (Some(root), Some(id)) = (root, id) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let root = std::path::Path::new(&root);
    std::process::exit(if build_template {
        h8s_runtime::template_main(root, &id, owner)
    } else {
        h8s_runtime::shim_main(root, &id, adopt)
    });
}
