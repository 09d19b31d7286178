//! `h8s store …`: backup, restore and check for either backend.
//!
//! The embedded store is one file that one process opens at a time: stop `h8s server`
//! before backing up or checking its data dir. etcd can be backed up while servers run
//! (the snapshot is read at one revision).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};

#[path = "store_bench.rs"]
mod bench;

/// Where the store is: the same flags as `h8s server`.
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// `embedded` (the file DATA_DIR/store.redb) or `etcd://HOST:PORT[,…][/prefix]`.
    #[arg(long, default_value = "embedded")]
    pub store: String,
    /// The data dir: the embedded store, the PKI and admin.kubeconfig
    /// (default: $XDG_DATA_HOME/h8s or ~/.local/share/h8s).
    #[arg(long, env = "H8S_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// CA bundle of etcd's serving certificate.
    #[arg(long)]
    pub etcd_cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long)]
    pub etcd_certfile: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long)]
    pub etcd_keyfile: Option<PathBuf>,
}

#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Write a consistent snapshot of the store into a file.
    Backup {
        #[command(flatten)]
        at: StoreArgs,
        /// The backup file to write.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// Load a backup (taken from either backend) into an empty store.
    Restore {
        #[command(flatten)]
        at: StoreArgs,
        /// The backup file to read.
        #[arg(short = 'i', long = "input")]
        input: PathBuf,
    },
    /// Verify the store's integrity and invariants.
    Check {
        #[command(flatten)]
        at: StoreArgs,
    },
    /// Benchmark the API on etcd beside raw etcd and the embedded store (starts its own
    /// etcd and servers), optionally writing the results into BENCHMARKS.md.
    Bench(bench::BenchArgs),
}

pub fn run(cmd: StoreCommand) -> anyhow::Result<()> {
    if let StoreCommand::Bench(args) = cmd {
        return bench::run(args);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        match cmd {
            StoreCommand::Backup { at, output } => backup(&at, &output).await,
            StoreCommand::Restore { at, input } => restore(&at, &input).await,
            StoreCommand::Check { at } => check(&at).await,
            StoreCommand::Bench(_) => unreachable!("handled above"),
        }
    })
}

impl StoreArgs {
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(crate::server::default_data_dir)
    }

    fn embedded_file(&self) -> Option<PathBuf> {
        (self.store == "embedded").then(|| self.data_dir().join(h8s_store::EMBEDDED_FILE))
    }

    pub(crate) fn tls(&self) -> Option<h8s_store::EtcdTls> {
        (self.etcd_cafile.is_some() || self.etcd_certfile.is_some() || self.etcd_keyfile.is_some())
            .then(|| h8s_store::EtcdTls {
                ca_file: self.etcd_cafile.clone(),
                cert_file: self.etcd_certfile.clone(),
                key_file: self.etcd_keyfile.clone(),
            })
    }

    /// Opens the store; an embedded one must already exist unless `create`.
    async fn open(&self, create: bool) -> anyhow::Result<Arc<dyn h8s_store::Store>> {
        if let Some(file) = self.embedded_file() {
            if !create && !file.exists() {
                bail!("no embedded store at {}", file.display());
            }
        }
        let data_dir = self.data_dir();
        h8s_store::open(&self.store, &data_dir, self.tls())
            .await
            .with_context(|| match self.embedded_file() {
                Some(f) => format!("opening {} (is h8s server running on it?)", f.display()),
                None => format!("opening store {}", self.store),
            })
    }
}

async fn backup(at: &StoreArgs, output: &Path) -> anyhow::Result<()> {
    let store = at.open(false).await?;
    let s = h8s_store::backup(store.as_ref(), output)
        .await
        .with_context(|| format!("backing up into {}", output.display()))?;
    println!(
        "backup: {} keys at revision {} into {} ({} bytes)",
        s.keys,
        s.revision,
        output.display(),
        s.bytes
    );
    Ok(())
}

async fn restore(at: &StoreArgs, input: &Path) -> anyhow::Result<()> {
    // Verify the file before creating or touching any store.
    let (summary, _) = h8s_store::read_backup(input)
        .with_context(|| format!("reading backup {}", input.display()))?;
    if let Some(data_dir) = at.embedded_file().as_ref().and_then(|f| f.parent()) {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("creating data dir {}", data_dir.display()))?;
    }
    let store = at.open(true).await?;
    h8s_store::restore(store.as_ref(), input)
        .await
        .with_context(|| format!("restoring {}", input.display()))?;
    let report = store.check().await.context("checking the restored store")?;
    println!(
        "restore: {} keys from {} (taken at revision {}); store now at revision {}",
        summary.keys,
        input.display(),
        summary.revision,
        report.revision
    );
    Ok(())
}

async fn check(at: &StoreArgs) -> anyhow::Result<()> {
    let report = match at.embedded_file() {
        // Offline: redb's page checksums, then the logical invariants.
        Some(file) => {
            if !file.exists() {
                bail!("no embedded store at {}", file.display());
            }
            let f = file.clone();
            tokio::task::spawn_blocking(move || h8s_store::Embedded::check_file(&f))
                .await?
                .with_context(|| {
                    format!("checking {} (is h8s server running on it?)", file.display())
                })?
        }
        None => at
            .open(false)
            .await?
            .check()
            .await
            .with_context(|| format!("checking store {}", at.store))?,
    };
    println!(
        "check: ok — {} keys, revision {}, compacted to {}, {} revisions of history",
        report.keys, report.revision, report.compacted, report.history
    );
    Ok(())
}
