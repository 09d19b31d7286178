//! Imports OCI layout directories, OCI archives and docker-archives (`docker save`).
//!
//! Paths named inside the source (`manifest.json`'s layer paths, blob paths) are
//! untrusted: they are cleaned (no `..`) and, for directories, opened with the kernel
//! confining resolution beneath the source directory.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::flatten::clean_path;
use super::oci::{self, Descriptor, DockerArchiveEntry, Manifest};
use super::store::{IoContext, Layout};
use super::{Digest, Error, Pulled, Reference, Result};

/// Small metadata files are kept in memory; everything else goes straight into the blob
/// store (the archive is read once, in any order).
const SMALL: u64 = 64 * 1024;
const MAX_JSON: u64 = 16 * 1024 * 1024;

trait Source {
    /// A metadata file's bytes, `None` when absent.
    fn read(&mut self, layout: &Layout, path: &str) -> Result<Option<Vec<u8>>>;
    /// Stores a file as a blob, verifying digest and size when given.
    fn store(
        &mut self,
        layout: &Layout,
        path: &str,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Digest>;
}

fn key(raw: &str) -> Result<String> {
    clean_path(Path::new(raw))?
        .map(|p| p.to_string_lossy().into_owned())
        .ok_or_else(|| Error::UnsafePath(raw.to_owned()))
}

/// An OCI layout or unpacked docker-archive on disk.
struct DirSource {
    dir: OwnedFd,
}

impl DirSource {
    fn open(&self, path: &str) -> Result<Option<std::fs::File>> {
        let rel = key(path)?;
        match rustix::fs::openat2(
            self.dir.as_fd(),
            rel.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(fd) => Ok(Some(std::fs::File::from(fd))),
            Err(rustix::io::Errno::NOENT) => Ok(None),
            Err(e) => Err(Error::Io {
                context: format!("open {rel}"),
                source: e.into(),
            }),
        }
    }
}

impl Source for DirSource {
    fn read(&mut self, _: &Layout, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(f) = self.open(path)? else {
            return Ok(None);
        };
        let mut data = Vec::new();
        f.take(MAX_JSON + 1)
            .read_to_end(&mut data)
            .ctx(|| format!("read {path}"))?;
        if data.len() as u64 > MAX_JSON {
            return Err(Error::InvalidImage(format!("{path} is too large")));
        }
        Ok(Some(data))
    }

    fn store(
        &mut self,
        layout: &Layout,
        path: &str,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Digest> {
        if let Some(d) = expected {
            if layout.has_blob(d) {
                return Ok(d.clone());
            }
        }
        let f = self
            .open(path)?
            .ok_or_else(|| Error::InvalidImage(format!("{path} is missing")))?;
        layout.put_reader(f, expected, size)
    }
}

/// An archive read once: big files already in the blob store, small ones in memory.
struct ArchiveSource {
    stored: HashMap<String, (Digest, u64)>,
    small: HashMap<String, Vec<u8>>,
}

impl ArchiveSource {
    fn read_archive(layout: &Layout, path: &Path) -> Result<ArchiveSource> {
        let file = std::fs::File::open(path).ctx(|| format!("open {}", path.display()))?;
        let mut input = BufReader::new(file);
        let head = input
            .fill_buf()
            .ctx(|| format!("read {}", path.display()))?;
        let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::bufread::MultiGzDecoder::new(input))
        } else {
            Box::new(input)
        };
        let mut archive = tar::Archive::new(reader);
        let mut src = ArchiveSource {
            stored: HashMap::new(),
            small: HashMap::new(),
        };
        let bad = |e: std::io::Error| Error::InvalidImage(format!("{}: {e}", path.display()));
        for entry in archive.entries().map_err(bad)? {
            let mut entry = entry.map_err(bad)?;
            let kind = entry.header().entry_type();
            if !(kind.is_file() || kind == tar::EntryType::Continuous) {
                continue;
            }
            let raw = entry.path().map_err(bad)?.to_string_lossy().into_owned();
            let k = key(&raw)?;
            let size = entry.size();
            if !k.starts_with("blobs/") && size <= SMALL {
                let mut data = Vec::with_capacity(size as usize);
                entry.read_to_end(&mut data).map_err(bad)?;
                src.small.insert(k, data);
            } else {
                let d = layout.put_reader(&mut entry, None, Some(size))?;
                src.stored.insert(k, (d, size));
            }
        }
        Ok(src)
    }
}

impl Source for ArchiveSource {
    fn read(&mut self, layout: &Layout, path: &str) -> Result<Option<Vec<u8>>> {
        let k = key(path)?;
        if let Some(d) = self.small.get(&k) {
            return Ok(Some(d.clone()));
        }
        match self.stored.get(&k) {
            Some((d, size)) if *size <= MAX_JSON => layout.read_blob(d).map(Some),
            Some(_) => Err(Error::InvalidImage(format!("{path} is too large"))),
            None => Ok(None),
        }
    }

    fn store(
        &mut self,
        layout: &Layout,
        path: &str,
        expected: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<Digest> {
        let k = key(path)?;
        if let Some(data) = self.small.get(&k) {
            if let Some(s) = size {
                if s != data.len() as u64 {
                    let actual = Digest::of(data);
                    return Err(Error::SizeMismatch {
                        digest: actual,
                        expected: s,
                        actual: data.len() as u64,
                    });
                }
            }
            return layout.put_bytes(data, expected);
        }
        let (d, len) = self
            .stored
            .get(&k)
            .ok_or_else(|| Error::InvalidImage(format!("{path} is missing")))?;
        if let Some(e) = expected {
            if e != d {
                return Err(Error::DigestMismatch {
                    expected: e.clone(),
                    actual: d.clone(),
                });
            }
        }
        if let Some(s) = size {
            if s != *len {
                return Err(Error::SizeMismatch {
                    digest: d.clone(),
                    expected: s,
                    actual: *len,
                });
            }
        }
        Ok(d.clone())
    }
}

/// Imports every image found at `path`; each with the names the source gives it.
pub(crate) fn import(layout: &Layout, path: &Path) -> Result<Vec<(Pulled, Vec<String>)>> {
    let meta = std::fs::metadata(path).ctx(|| format!("stat {}", path.display()))?;
    let mut src: Box<dyn Source> = if meta.is_dir() {
        let dir = rustix::fs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::Io {
            context: format!("open {}", path.display()),
            source: e.into(),
        })?;
        Box::new(DirSource { dir })
    } else {
        Box::new(ArchiveSource::read_archive(layout, path)?)
    };
    // Docker's own manifest.json carries the tags; Docker ≥ 25 writes it beside an
    // OCI layout, so prefer it when present.
    if let Some(data) = src.read(layout, "manifest.json")? {
        return import_docker(layout, src.as_mut(), &data);
    }
    if let Some(data) = src.read(layout, "index.json")? {
        return import_oci(layout, src.as_mut(), &data);
    }
    Err(Error::InvalidImage(format!(
        "{}: neither an OCI layout (index.json) nor a docker-archive (manifest.json)",
        path.display()
    )))
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn import_oci(
    layout: &Layout,
    src: &mut dyn Source,
    index_data: &[u8],
) -> Result<Vec<(Pulled, Vec<String>)>> {
    let index: Manifest = serde_json::from_slice(index_data)
        .map_err(|e| Error::InvalidImage(format!("index.json: {e}")))?;
    let mut out: Vec<(Pulled, Vec<String>)> = Vec::new();
    for desc in &index.manifests {
        let pulled = import_oci_manifest(layout, src, desc, None)?;
        let name = desc
            .annotations
            .get(oci::CONTAINERD_NAME)
            .or_else(|| desc.annotations.get(oci::REF_NAME))
            // A bare tag ("latest") names no repository: only --name can place it.
            .filter(|n| n.contains(':') || n.contains('/'))
            .map(|n| n.parse::<Reference>())
            .transpose()?;
        match out.iter_mut().find(|(p, _)| p.id == pulled.id) {
            Some((_, names)) => names.extend(name.map(|n| n.to_string())),
            None => out.push((
                pulled,
                name.map(|n| vec![n.to_string()]).unwrap_or_default(),
            )),
        }
    }
    if out.is_empty() {
        return Err(Error::InvalidImage("index.json lists no images".into()));
    }
    Ok(out)
}

fn import_oci_manifest(
    layout: &Layout,
    src: &mut dyn Source,
    desc: &Descriptor,
    top: Option<&Digest>,
) -> Result<Pulled> {
    let d = src.store(
        layout,
        &blob_path(&desc.digest),
        Some(&desc.digest),
        Some(desc.size),
    )?;
    let m: Manifest = serde_json::from_slice(&layout.read_blob(&d)?)
        .map_err(|e| Error::InvalidImage(format!("manifest {d}: {e}")))?;
    if m.is_index(Some(&desc.media_type)) {
        if top.is_some() {
            return Err(Error::InvalidImage(format!("nested index {d}")));
        }
        let pick = oci::pick_platform(&m)
            .ok_or_else(|| Error::NoPlatform(d.to_string()))?
            .clone();
        return import_oci_manifest(layout, src, &pick, Some(&d));
    }
    let config = m
        .config
        .as_ref()
        .ok_or_else(|| Error::InvalidImage(format!("manifest {d} has no config")))?;
    let mut size = config.size;
    src.store(
        layout,
        &blob_path(&config.digest),
        Some(&config.digest),
        Some(config.size),
    )?;
    for l in &m.layers {
        src.store(layout, &blob_path(&l.digest), Some(&l.digest), Some(l.size))?;
        size += l.size;
    }
    Ok(Pulled {
        id: config.digest.clone(),
        digest: top.cloned().unwrap_or_else(|| d.clone()),
        manifest: d,
        size,
    })
}

fn import_docker(
    layout: &Layout,
    src: &mut dyn Source,
    data: &[u8],
) -> Result<Vec<(Pulled, Vec<String>)>> {
    let entries: Vec<DockerArchiveEntry> = serde_json::from_slice(data)
        .map_err(|e| Error::InvalidImage(format!("manifest.json: {e}")))?;
    if entries.is_empty() {
        return Err(Error::InvalidImage("manifest.json lists no images".into()));
    }
    let mut out = Vec::new();
    for e in entries {
        let config = src.store(layout, &e.config, None, None)?;
        let config_size = blob_len(layout, &config)?;
        let mut layers = Vec::new();
        for l in &e.layers {
            let d = src.store(layout, l, None, None)?;
            let size = blob_len(layout, &d)?;
            let media_type = if is_gzip(layout, &d)? {
                oci::OCI_LAYER_GZIP
            } else {
                oci::OCI_LAYER
            };
            layers.push(desc(media_type, d, size));
        }
        let size = config_size + layers.iter().map(|l| l.size).sum::<u64>();
        // docker-archives carry no manifest: write the OCI manifest a registry would
        // serve, so the image can be pushed and pinned by digest like any other.
        let manifest = Manifest {
            schema_version: 2,
            media_type: oci::OCI_MANIFEST.into(),
            config: Some(desc(oci::OCI_CONFIG, config.clone(), config_size)),
            layers,
            manifests: vec![],
            annotations: Default::default(),
        };
        let m = layout.put_bytes(
            &serde_json::to_vec(&manifest).expect("manifest serialises"),
            None,
        )?;
        let names = e
            .repo_tags
            .unwrap_or_default()
            .iter()
            .map(|t| t.parse::<Reference>().map(|r| r.to_string()))
            .collect::<Result<Vec<_>>>()?;
        out.push((
            Pulled {
                id: config,
                digest: m.clone(),
                manifest: m,
                size,
            },
            names,
        ));
    }
    Ok(out)
}

pub(crate) fn desc(media_type: &str, digest: Digest, size: u64) -> Descriptor {
    Descriptor {
        media_type: media_type.into(),
        digest,
        size,
        platform: None,
        annotations: Default::default(),
    }
}

fn blob_len(layout: &Layout, d: &Digest) -> Result<u64> {
    let p = layout.blob_path(d);
    Ok(std::fs::metadata(&p)
        .ctx(|| format!("stat {}", p.display()))?
        .len())
}

fn is_gzip(layout: &Layout, d: &Digest) -> Result<bool> {
    let mut head = [0u8; 2];
    let mut f = layout.open_blob(d)?;
    let n = f.read(&mut head).ctx(|| format!("read {d}"))?;
    Ok(n == 2 && head == [0x1f, 0x8b])
}
