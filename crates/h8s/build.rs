//! Stamps the build for `/version`: the commit, whether the tree had uncommitted changes, and
//! the commit's date (reproducible, unlike the wall clock). Without git (a source tarball)
//! the values say `unknown` and Kubernetes' unstamped date. The tree state is as of the last
//! time HEAD moved (the script re-runs then, not on every edit).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .env("TZ", "UTC")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

fn main() {
    // Re-run when HEAD moves: HEAD itself, the branch it names, and packed refs. Only files
    // that exist: cargo reruns a script that watches a missing file on every build (a clone
    // without packed refs relinked `h8s` each time). Packing the refs moves the branch's file,
    // which is watched.
    let mut watch: Vec<String> = ["HEAD", "packed-refs"]
        .iter()
        .filter_map(|p| git(&["rev-parse", "--git-path", p]))
        .collect();
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watch.extend(git(&["rev-parse", "--git-path", &r]));
    }
    for path in watch {
        if std::path::Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = git(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let state = match Command::new("git")
        .args(["diff", "--quiet", "HEAD", "--"])
        .status()
    {
        Ok(s) if s.success() => "clean",
        Ok(s) if s.code() == Some(1) => "dirty",
        _ => "unknown",
    };
    // Go's time.RFC3339 in UTC, as Kubernetes stamps it.
    let date = git(&[
        "log",
        "-1",
        "--format=%cd",
        "--date=format-local:%Y-%m-%dT%H:%M:%SZ",
    ])
    .unwrap_or_else(|| "1970-01-01T00:00:00Z".into());
    println!("cargo:rustc-env=H8S_GIT_COMMIT={commit}");
    println!("cargo:rustc-env=H8S_GIT_TREE_STATE={state}");
    println!("cargo:rustc-env=H8S_BUILD_DATE={date}");
}
