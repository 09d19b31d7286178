//! A standalone pod supervisor (`h8s pod-shim` without the rest of `h8s`), for the runtime's
//! own tests and benchmarks: `h8s-pod-shim --root DIR [--adopt | --build-template
//! [--template-owner PID:START]] ID`.

fn main() {
    let mut args = std::env::args().skip(1);
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
    let (Some(root), Some(id)) = (root, id) else {
        eprintln!(
            "usage: h8s-pod-shim --root DIR [--adopt | --build-template [--template-owner PID:START]] ID"
        );
        std::process::exit(2);
    };
    let root = std::path::Path::new(&root);
    std::process::exit(if build_template {
        h8s_runtime::template_main(root, &id, owner)
    } else {
        h8s_runtime::shim_main(root, &id, adopt)
    });
}
