//! Builds an image's root filesystem: layers flattened into a staging directory, then
//! `mkfs.erofs` into `<root>/rootfs/<id>.erofs`.
//!
//! erofs-utils 1.5 (Debian 12) has no `--tar` input, so a staging directory it is. It
//! lives under the store's `tmp/` (mode 0700) and is removed on success and failure.

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::digest::Hasher;
use super::flatten::Flattener;
use super::oci::{self, Manifest};
use super::store::{IoContext, Layout, Record};
use super::{Digest, Error, Result, UnpackBudget};

/// Where `mkfs.erofs` lives: `$H8S_MKFS_EROFS`, else the first on `PATH` or in sbin.
fn mkfs_erofs() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("H8S_MKFS_EROFS") {
        return Ok(PathBuf::from(p));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join("mkfs.erofs"))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Mkfs("not found: install Debian's erofs-utils".into()))
}

pub(crate) fn build(layout: &Layout, record: &Record, budget: UnpackBudget) -> Result<PathBuf> {
    let dest = layout.rootfs_path(&record.id);
    // One builder per image at a time, across processes; the others wait, then find
    // the file done.
    let lock_path = dest.with_extension("lock");
    let lock = std::fs::File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .ctx(|| format!("open {}", lock_path.display()))?;
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).map_err(|e| Error::Io {
        context: format!("lock {}", lock_path.display()),
        source: e.into(),
    })?;
    if dest.is_file() {
        return Ok(dest);
    }
    let manifest: Manifest = serde_json::from_slice(&layout.read_blob(&record.manifest)?)
        .map_err(|e| Error::InvalidImage(format!("manifest {}: {e}", record.manifest)))?;

    let started = Instant::now();
    let staging = tempfile::Builder::new()
        .prefix("rootfs-")
        .tempdir_in(layout.tmp())
        .ctx(|| format!("create staging dir in {}", layout.tmp().display()))?;
    let tree = staging.path().join("root");
    std::fs::create_dir(&tree).ctx(|| format!("create {}", tree.display()))?;
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755))
        .ctx(|| format!("chmod {}", tree.display()))?;
    flatten_into(layout, &manifest, &tree, budget)?;
    let flattened = started.elapsed();

    let out = tempfile::Builder::new()
        .prefix(".building-")
        .suffix(".erofs")
        .tempfile_in(dest.parent().expect("rootfs dir"))
        .ctx(|| "create rootfs temp file".into())?;
    let mkfs = mkfs_erofs()?;
    let result = Command::new(&mkfs)
        .arg("--quiet")
        .arg(out.path())
        .arg(&tree)
        .output()
        .map_err(|e| Error::Mkfs(format!("run {}: {e}", mkfs.display())))?;
    if !result.status.success() {
        let stderr = String::from_utf8_lossy(&result.stderr);
        return Err(Error::Mkfs(format!("{}: {}", result.status, stderr.trim())));
    }
    // Read-only for everyone: the VMM may run as an unprivileged user, and nothing
    // ever writes to a built image.
    out.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o444))
        .ctx(|| "chmod rootfs".into())?;
    let built = started.elapsed();
    out.as_file().sync_all().ctx(|| "sync rootfs".into())?;
    out.persist(&dest).map_err(|e| Error::Io {
        context: format!("store {}", dest.display()),
        source: e.error,
    })?;
    drop(staging);
    let size = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
    tracing::info!(
        id = %record.id,
        layers = manifest.layers.len(),
        flatten_ms = flattened.as_millis() as u64,
        mkfs_ms = (built - flattened).as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        bytes = size,
        "rootfs built"
    );
    Ok(dest)
}

/// Applies the manifest's layers in order into `tree`, verifying every layer blob's
/// digest as it is read.
pub(crate) fn flatten_into(
    layout: &Layout,
    manifest: &Manifest,
    tree: &Path,
    budget: UnpackBudget,
) -> Result<()> {
    let flattener = Flattener::new(tree)?.with_budget(budget);
    for layer in &manifest.layers {
        match layer.media_type.as_str() {
            oci::OCI_LAYER
            | oci::OCI_LAYER_GZIP
            | oci::DOCKER_LAYER_GZIP
            | oci::DOCKER_FOREIGN_GZIP
            | "" => {}
            "application/vnd.docker.image.rootfs.diff.tar" => {}
            oci::OCI_LAYER_ZSTD => {
                return Err(Error::UnsupportedMediaType(layer.media_type.clone()))
            }
            other => return Err(Error::UnsupportedMediaType(other.to_owned())),
        }
        apply_blob(layout, &flattener, &layer.digest)?;
    }
    Ok(())
}

/// One layer blob: sniffed for compression (the media type is sometimes wrong in
/// docker-archives), applied, then read to the end so the whole blob is hashed. Every
/// decompressed byte, the tar's and any trailing data's, counts against the budget.
pub(crate) fn apply_blob(layout: &Layout, flattener: &Flattener, digest: &Digest) -> Result<()> {
    let file = layout.open_blob(digest)?;
    let mut input = BufReader::with_capacity(
        256 * 1024,
        HashingReader {
            inner: file,
            hasher: Hasher::new(),
        },
    );
    let head = input.fill_buf().ctx(|| format!("read layer {digest}"))?;
    let (limit, what) = flattener.bytes_left();
    let stats = if head.starts_with(&[0x1f, 0x8b]) {
        let mut gz = Limited::new(flate2::bufread::MultiGzDecoder::new(input), limit);
        let r = flattener.apply(&mut gz).and_then(|stats| {
            io::copy(&mut gz, &mut io::sink())
                .map_err(|e| Error::BadLayer(format!("layer {digest}: {e}")))?;
            Ok(stats)
        });
        let stats = gz.check(r, what)?;
        flattener.charge_bytes(gz.read);
        input = gz.inner.into_inner();
        stats
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Err(Error::UnsupportedMediaType("zstd-compressed layer".into()));
    } else {
        let mut plain = Limited::new(&mut input, limit);
        let r = flattener.apply(&mut plain);
        let stats = plain.check(r, what)?;
        flattener.charge_bytes(plain.read);
        stats
    };
    io::copy(&mut input, &mut io::sink()).ctx(|| format!("read layer {digest}"))?;
    let actual = input.into_inner().hasher.finish();
    if &actual != digest {
        return Err(Error::DigestMismatch {
            expected: digest.clone(),
            actual,
        });
    }
    tracing::debug!(%digest, ?stats, "layer applied");
    Ok(())
}

/// A reader that fails once more than `left` bytes would come out of it.
struct Limited<R> {
    inner: R,
    limit: u64,
    read: u64,
    tripped: bool,
}

impl<R> Limited<R> {
    fn new(inner: R, limit: u64) -> Self {
        Limited {
            inner,
            limit,
            read: 0,
            tripped: false,
        }
    }

    /// The budget error if this reader tripped (whatever error the reading code made of it).
    fn check<T>(&self, r: Result<T>, what: &'static str) -> Result<T> {
        if self.tripped {
            return Err(Error::OverBudget {
                what,
                limit: self.limit,
            });
        }
        r
    }
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let left = self.limit - self.read;
        // At the limit, one more byte tells the end of the stream from an excess.
        let max = (left.max(1)).min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..max])?;
        if n as u64 > left {
            self.tripped = true;
            return Err(io::Error::other("unpack budget exceeded"));
        }
        self.read += n as u64;
        Ok(n)
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    /// A tar of `files` files, each `size` bytes of zeros.
    fn tar_of(files: usize, size: usize) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let data = vec![0u8; size];
        for i in 0..files {
            let mut h = tar::Header::new_gnu();
            h.set_size(size as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, format!("f{i}"), &data[..]).unwrap();
        }
        b.into_inner().unwrap()
    }

    fn setup() -> (tempfile::TempDir, Layout, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::create(&d.path().join("store")).unwrap();
        let tree = d.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        (d, layout, tree)
    }

    fn budget() -> UnpackBudget {
        UnpackBudget {
            layer_bytes: 1 << 20,
            image_bytes: 3 << 18,
            layer_entries: 100,
            image_entries: 150,
        }
    }

    #[test]
    fn a_gzip_bomb_is_refused_at_the_budget() {
        let (_d, layout, tree) = setup();
        // 64 MiB of zeros compress to ~64 KiB.
        let bomb = gzip(&tar_of(1, 64 << 20));
        assert!(bomb.len() < 200 << 10);
        let digest = layout.put_bytes(&bomb, None).unwrap();
        let f = Flattener::new(&tree).unwrap().with_budget(budget());
        let e = apply_blob(&layout, &f, &digest).unwrap_err();
        assert!(
            matches!(e, Error::OverBudget { limit, .. } if limit == 3 << 18),
            "{e}"
        );
        // What was unpacked before the limit is bounded by it.
        let written = std::fs::metadata(tree.join("f0"))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(written <= 3 << 18, "{written}");
    }

    #[test]
    fn image_budget_spans_layers_and_entries_are_counted() {
        let (_d, layout, tree) = setup();
        let f = Flattener::new(&tree).unwrap().with_budget(budget());
        // 600 KiB per layer: the first fits, the second crosses the image's 768 KiB.
        let layer = gzip(&tar_of(1, 600 << 10));
        let digest = layout.put_bytes(&layer, None).unwrap();
        apply_blob(&layout, &f, &digest).unwrap();
        let e = apply_blob(&layout, &f, &digest).unwrap_err();
        assert!(
            matches!(e, Error::OverBudget { what, .. } if what.contains("image")),
            "{e}"
        );

        let (_d2, layout, tree) = setup();
        let f = Flattener::new(&tree).unwrap().with_budget(budget());
        let many = layout.put_bytes(&tar_of(101, 0), None).unwrap();
        let e = apply_blob(&layout, &f, &many).unwrap_err();
        assert!(
            matches!(
                e,
                Error::OverBudget {
                    what: "entries in a layer",
                    ..
                }
            ),
            "{e}"
        );
        // Within budget, a plain (uncompressed) layer still applies.
        let few = layout.put_bytes(&tar_of(3, 10), None).unwrap();
        let f = Flattener::new(&tree).unwrap().with_budget(budget());
        apply_blob(&layout, &f, &few).unwrap();
        assert!(tree.join("f2").is_file());
    }
}
