//! `h8s image pull|import|ls|rm|inspect|rootfs`: the image store from the command line.
//! The store lives at `${H8S_DATA_DIR:-~/.local/share/h8s}/images` (see `ImageStore::default_root`).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use h8s_runtime::image::{Credentials, Image, ImageStore, Progress, ProgressFn, PullOptions};

/// `println!` that treats a closed stdout (`h8s image ls | head -1`) as done, not as
/// a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        let mut o = std::io::stdout().lock();
        if let Err(e) = writeln!(o, $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            return Err(e.into());
        }
    }};
}

#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Pull an image from a registry (https; plain http for loopback registries).
    Pull {
        /// Image reference: `busybox`, `localhost:5000/app:v1`, `name@sha256:…`.
        reference: String,
        #[arg(long, short = 'u')]
        username: Option<String>,
        /// Prefer --password-stdin: a password on the command line shows in `ps`.
        #[arg(long, short = 'p', requires = "username")]
        password: Option<String>,
        /// Read the password from the first line of stdin.
        #[arg(long, requires = "username", conflicts_with = "password")]
        password_stdin: bool,
        /// Registry (`host:port`) to reach over plain http although not on loopback.
        #[arg(long = "insecure-registry")]
        insecure: Vec<String>,
        /// Only print the image id.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Import an OCI layout directory, an OCI archive or a docker-archive (`docker save`).
    Import {
        path: PathBuf,
        /// Name for the image, overriding the names in the source.
        #[arg(long)]
        name: Option<String>,
    },
    /// List images.
    #[command(alias = "list")]
    Ls {
        /// Only print image ids.
        #[arg(long, short = 'q')]
        quiet: bool,
    },
    /// Remove an image name; the image goes when no name is left (or when given by id).
    #[command(alias = "remove", alias = "rmi")]
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
    },
    /// Show an image's details as JSON.
    Inspect { image: String },
    /// Build (if needed) and print the path of an image's read-only erofs root filesystem.
    Rootfs { image: String },
}

pub fn run(cmd: ImageCommand) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start async runtime")?;
    rt.block_on(run_async(cmd))
}

fn open() -> Result<ImageStore> {
    let root = ImageStore::default_root();
    ImageStore::open(&root).with_context(|| format!("open image store {}", root.display()))
}

async fn run_async(cmd: ImageCommand) -> Result<()> {
    let store = open()?;
    match cmd {
        ImageCommand::Pull {
            reference,
            username,
            password,
            password_stdin,
            insecure,
            quiet,
        } => {
            let auth = match (username, password, password_stdin) {
                (Some(u), Some(p), _) => Some(Credentials {
                    username: u,
                    password: p,
                }),
                (Some(u), None, true) => {
                    let mut line = String::new();
                    std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .context("read password from stdin")?;
                    let p = line.trim_end_matches(['\n', '\r']).to_owned();
                    if p.is_empty() {
                        bail!("empty password on stdin");
                    }
                    Some(Credentials {
                        username: u,
                        password: p,
                    })
                }
                (Some(_), None, false) => bail!("--username needs --password or --password-stdin"),
                _ => None,
            };
            let opts = PullOptions {
                auth,
                progress: if quiet {
                    None
                } else {
                    Some(progress_printer())
                },
                insecure_registries: insecure,
                // The operator's own command on the operator's own machine: a registry on
                // loopback is what they asked for (a tenant's pod spec never gets this).
                allow_local_registries: true,
            };
            let image = store
                .pull(&reference, &opts)
                .await
                .with_context(|| format!("pull {reference}"))?;
            if quiet {
                out!("{}", image.id);
            } else {
                eprintln!("Digest: {}", image.digest);
                out!(
                    "{} {}",
                    image.names.first().map(String::as_str).unwrap_or("<none>"),
                    image.id
                );
            }
        }
        ImageCommand::Import { path, name } => {
            let images = store
                .import(&path, name.as_deref())
                .await
                .with_context(|| format!("import {}", path.display()))?;
            for i in images {
                let names = if i.names.is_empty() {
                    "<none>".to_owned()
                } else {
                    i.names.join(",")
                };
                out!("{names} {}", i.id);
            }
        }
        ImageCommand::Ls { quiet } => {
            let images = store.list()?;
            if quiet {
                for i in images {
                    out!("{}", i.id.short());
                }
                return Ok(());
            }
            out!(
                "{:<48} {:<20} {:<14} {:>10}  CREATED",
                "REPOSITORY",
                "TAG",
                "IMAGE ID",
                "SIZE"
            );
            for i in images {
                let names = if i.names.is_empty() {
                    vec!["<none>:<none>".to_owned()]
                } else {
                    i.names.clone()
                };
                for n in names {
                    let (repo, tag) = split_name(&n);
                    out!(
                        "{:<48} {:<20} {:<14} {:>10}  {}",
                        repo,
                        tag,
                        i.id.short(),
                        human(i.size),
                        ago(i.created)
                    );
                }
            }
        }
        ImageCommand::Rm { images } => {
            let mut failed = false;
            for r in images {
                match store.remove(&r) {
                    Ok(removed) => {
                        for n in removed.untagged {
                            out!("Untagged: {n}");
                        }
                        if let Some(d) = removed.deleted {
                            out!("Deleted: {d}");
                        }
                    }
                    Err(e) => {
                        eprintln!("Error: {r}: {e}");
                        failed = true;
                    }
                }
            }
            if failed {
                bail!("some images were not removed");
            }
        }
        ImageCommand::Inspect { image } => {
            let i = store.status(&image)?;
            out!("{}", serde_json::to_string_pretty(&inspect_json(&i))?);
        }
        ImageCommand::Rootfs { image } => {
            let i = store.status(&image)?;
            let started = std::time::Instant::now();
            let path = store
                .rootfs(&i)
                .await
                .with_context(|| format!("build rootfs of {image}"))?;
            tracing::debug!(
                elapsed_ms = started.elapsed().as_millis() as u64,
                "rootfs ready"
            );
            out!("{}", path.display());
        }
    }
    Ok(())
}

/// Per-blob progress on stderr: a live line on a terminal, one line per finished blob
/// otherwise (so logs stay readable).
fn progress_printer() -> ProgressFn {
    let tty = std::io::stderr().is_terminal();
    let lock = Arc::new(Mutex::new(()));
    Arc::new(move |p: &Progress| {
        let _g = lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut err = std::io::stderr().lock();
        let _ = match p {
            Progress::Resolved {
                reference,
                digest,
                layers,
            } => {
                writeln!(
                    err,
                    "Pulling {reference} ({layers} layers, {})",
                    digest.short()
                )
            }
            Progress::Downloading {
                digest,
                received,
                total,
            } if tty => {
                write!(
                    err,
                    "\r{}: downloading {} / {}\x1b[K",
                    digest.short(),
                    human(*received),
                    human(*total)
                )
            }
            Progress::Downloading { .. } => Ok(()),
            Progress::Done {
                digest,
                size,
                cached,
            } => {
                let what = if *cached { "already present" } else { "done" };
                let cr = if tty { "\r" } else { "" };
                writeln!(
                    err,
                    "{cr}{}: {what} ({})\x1b[K",
                    digest.short(),
                    human(*size)
                )
            }
        };
    })
}

fn inspect_json(i: &Image) -> serde_json::Value {
    serde_json::json!({
        "Id": i.id.to_string(),
        "RepoTags": i.names,
        "Digest": i.digest.to_string(),
        "ManifestDigest": i.manifest_digest.to_string(),
        "Size": i.size,
        "Created": i.created,
        "Architecture": i.architecture,
        "Os": i.os,
        "Config": {
            "Entrypoint": i.config.entrypoint,
            "Cmd": i.config.cmd,
            "Env": i.config.env,
            "WorkingDir": i.config.working_dir,
            "User": i.config.user,
            "ExposedPorts": i.config.exposed_ports,
            "Labels": i.config.labels,
            "StopSignal": i.config.stop_signal,
        },
    })
}

fn split_name(n: &str) -> (&str, &str) {
    match n.rfind(':') {
        Some(i) if !n[i..].contains('/') => (&n[..i], &n[i + 1..]),
        _ => (n, "<none>"),
    }
}

fn human(n: u64) -> String {
    const U: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < U.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", U[u])
    }
}

fn ago(t: u64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(t);
    let s = now.saturating_sub(t);
    match s {
        0..=59 => format!("{s} seconds ago"),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}
