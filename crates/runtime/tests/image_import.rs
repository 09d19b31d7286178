//! Image import (OCI layout, OCI archive, docker-archive), the erofs root filesystem
//! built from it, digest verification and hostile layers, through the public API.
//! Needs busybox-static and erofs-utils (scripts/setup installs both).

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use h8s_runtime::image::{Digest, Error, ImageStore};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The busybox test image, built by the project's script into `dir`.
fn busybox_layout(dir: &Path) -> PathBuf {
    let out = dir.join("busybox-oci");
    let st = Command::new("bash")
        .arg(repo_root().join("scripts/build-test-image.sh"))
        .arg(&out)
        .status()
        .expect("run build-test-image.sh");
    assert!(
        st.success(),
        "build-test-image.sh failed (needs busybox-static)"
    );
    out
}

/// Unpacks an erofs image with erofs-utils' own reader.
fn extract(erofs: &Path, into: &Path) {
    let out = Command::new("fsck.erofs")
        .arg(format!("--extract={}", into.display()))
        .arg("--preserve")
        .arg(erofs)
        .output()
        .expect("run fsck.erofs");
    assert!(
        out.status.success(),
        "fsck.erofs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A read-only loop mount of an erofs image, unmounted on drop (also when the test fails).
struct Mount(PathBuf);

impl Mount {
    fn new(image: &Path, at: &Path) -> Mount {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "erofs", "-o", "loop,ro"])
            .arg(image)
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mount erofs (needs root and the erofs module): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Mount(at.to_owned())
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn erofs_magic(path: &Path) -> u32 {
    let data = std::fs::read(path).unwrap();
    u32::from_le_bytes(data[1024..1028].try_into().unwrap())
}

fn dir_is_empty(p: &Path) -> bool {
    std::fs::read_dir(p).unwrap().next().is_none()
}

/// Every stored blob still hashes to its name.
fn blobs_verified(root: &Path) -> usize {
    let mut n = 0;
    for e in std::fs::read_dir(root.join("blobs/sha256")).unwrap() {
        let e = e.unwrap();
        let data = std::fs::read(e.path()).unwrap();
        assert_eq!(
            Digest::of(&data).hex(),
            e.file_name().to_str().unwrap(),
            "blob content matches its name"
        );
        n += 1;
    }
    n
}

#[tokio::test]
async fn oci_layout_import_rootfs_and_remove() {
    let t = tempfile::tempdir().unwrap();
    let layout = busybox_layout(t.path());
    let store = ImageStore::open(&t.path().join("store")).unwrap();

    let imported = store.import(&layout, None).await.unwrap();
    assert_eq!(imported.len(), 1);
    let img = &imported[0];
    assert_eq!(
        img.names,
        vec!["docker.io/library/busybox:latest".to_string()]
    );
    assert_eq!(img.config.cmd, vec!["sh".to_string()]);
    assert!(img.config.env.iter().any(|e| e.starts_with("PATH=")));
    assert_eq!(
        (img.os.as_str(), img.architecture.as_str()),
        ("linux", "amd64")
    );
    assert_eq!(img.digest, img.manifest_digest);

    // Found by short name, full name, id, id prefix and name@digest.
    for q in [
        "busybox".to_string(),
        "docker.io/library/busybox:latest".into(),
        img.id.to_string(),
        img.id.hex()[..12].to_string(),
        format!("busybox@{}", img.digest),
    ] {
        assert_eq!(store.status(&q).unwrap().id, img.id, "{q}");
    }
    assert!(matches!(
        store.status("busybox:other"),
        Err(Error::NotFound(_))
    ));

    // Importing again changes nothing.
    let again = store.import(&layout, None).await.unwrap();
    assert_eq!(again[0].id, img.id);
    assert_eq!(store.list().unwrap().len(), 1);

    let rootfs = store.rootfs(img).await.unwrap();
    assert_eq!(
        rootfs,
        store.root().join(format!("rootfs/{}.erofs", img.id.hex()))
    );
    assert_eq!(erofs_magic(&rootfs), 0xE0F5_E1E2, "an erofs superblock");
    assert_eq!(std::fs::metadata(&rootfs).unwrap().mode() & 0o777, 0o444);
    let built = std::fs::metadata(&rootfs).unwrap().modified().unwrap();
    assert_eq!(store.rootfs(img).await.unwrap(), rootfs);
    assert_eq!(
        std::fs::metadata(&rootfs).unwrap().modified().unwrap(),
        built,
        "cached, not rebuilt"
    );
    assert!(dir_is_empty(&store.root().join("tmp")), "staging cleaned");

    let x = t.path().join("x");
    extract(&rootfs, &x);
    assert_eq!(
        std::fs::read(x.join("bin/busybox")).unwrap(),
        std::fs::read("/bin/busybox").unwrap()
    );
    assert_eq!(
        std::fs::metadata(x.join("bin/busybox")).unwrap().mode() & 0o777,
        0o755
    );
    assert_eq!(
        std::fs::read_link(x.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert_eq!(
        std::fs::metadata(x.join("tmp")).unwrap().mode() & 0o7777,
        0o1777
    );
    assert!(std::fs::read_to_string(x.join("etc/passwd"))
        .unwrap()
        .starts_with("root:x:0:0"));

    // A second name, then removal name by name.
    store
        .import(&layout, Some("localhost:5000/bb:v1"))
        .await
        .unwrap();
    assert_eq!(store.status(&img.id.to_string()).unwrap().names.len(), 2);
    let r = store.remove("busybox").unwrap();
    assert_eq!(
        r.untagged,
        vec!["docker.io/library/busybox:latest".to_string()]
    );
    assert_eq!(r.deleted, None);
    assert!(rootfs.exists());
    let r = store.remove("localhost:5000/bb:v1").unwrap();
    assert_eq!(r.deleted, Some(img.id.clone()));
    assert!(!rootfs.exists());
    assert!(
        dir_is_empty(&store.root().join("rootfs")),
        "rootfs and its lock removed"
    );
    assert_eq!(blobs_verified(store.root()), 0, "unused blobs removed");
    assert!(store.list().unwrap().is_empty());
    assert!(matches!(store.remove("busybox"), Err(Error::NotFound(_))));
}

/// A tar (uncompressed) from (path, mode, content) entries; content `None` = directory,
/// `Some("->x")` = symlink to x.
fn layer(entries: &[(&str, u32, Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, mode, content) in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mode(*mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        match content {
            None => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, path, std::io::empty()).unwrap();
            }
            Some(c) if c.starts_with("->") => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, path, &c[2..]).unwrap();
            }
            Some(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                b.append_data(&mut h, path, c.as_bytes()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A `docker save`-style archive: layer tars in directories, config, manifest.json
/// written last (archives come in any order).
fn docker_archive(path: &Path, tags: &[&str], layers: &[Vec<u8>]) {
    let diff_ids: Vec<String> = layers.iter().map(|l| Digest::of(l).to_string()).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["A=1"], "WorkingDir": "/srv",
                   "User": "1000:1000", "ExposedPorts": {"8080/tcp": {}}, "Labels": {"k": "v"}},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let config = serde_json::to_vec(&config).unwrap();
    let config_name = format!("{}.json", Digest::of(&config).hex());
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    let mut layer_paths = vec![];
    for (i, l) in layers.iter().enumerate() {
        let p = format!("layer{i}/layer.tar");
        add(&p, l);
        add(&format!("layer{i}/VERSION"), b"1.0");
        layer_paths.push(p);
    }
    add(&config_name, &config);
    let manifest =
        serde_json::json!([{"Config": config_name, "RepoTags": tags, "Layers": layer_paths}]);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    b.into_inner().unwrap().sync_all().unwrap();
}

#[tokio::test]
async fn docker_archive_import_with_whiteouts() {
    let t = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&t.path().join("store")).unwrap();
    let l1 = layer(&[
        ("bin/", 0o755, None),
        ("bin/app", 0o755, Some("#!/bin/sh\necho app\n")),
        ("etc/", 0o755, None),
        ("etc/old.conf", 0o644, Some("old")),
        ("etc/keep.conf", 0o640, Some("keep")),
        ("var/cache/", 0o755, None),
        ("var/cache/a", 0o644, Some("a")),
        ("srv/", 0o750, None),
        ("lnk", 0o777, Some("->bin/app")),
    ]);
    let l2 = layer(&[
        ("etc/.wh.old.conf", 0o644, Some("")),
        ("var/cache/.wh..wh..opq", 0o644, Some("")),
        ("var/cache/b", 0o644, Some("b")),
        ("usr/bin/passwd", 0o4755, Some("suid")),
    ]);
    let archive = t.path().join("app.tar");
    // The second layer gzip-compressed: docker-archives may hold either.
    docker_archive(
        &archive,
        &["example.com/team/app:v1", "app:latest"],
        &[l1, gzip(&l2)],
    );

    let imported = store.import(&archive, None).await.unwrap();
    assert_eq!(imported.len(), 1);
    let img = &imported[0];
    assert_eq!(
        img.names,
        vec!["example.com/team/app:v1", "docker.io/library/app:latest"]
    );
    let c = &img.config;
    assert_eq!(
        (c.entrypoint.clone(), c.cmd.clone()),
        (vec!["/bin/app".into()], vec!["--serve".into()])
    );
    assert_eq!(
        (c.working_dir.as_str(), c.user.as_str()),
        ("/srv", "1000:1000")
    );
    assert_eq!(c.exposed_ports, vec!["8080/tcp".to_string()]);
    assert_eq!(c.labels.get("k").map(String::as_str), Some("v"));
    assert_eq!(c.env, vec!["A=1".to_string()]);

    let rootfs = store.rootfs(img).await.unwrap();
    let x = t.path().join("x");
    extract(&rootfs, &x);
    assert!(!x.join("etc/old.conf").exists(), "whiteout applied");
    assert!(!x.join("etc/.wh.old.conf").exists());
    assert_eq!(
        std::fs::read_to_string(x.join("etc/keep.conf")).unwrap(),
        "keep"
    );
    assert_eq!(
        std::fs::metadata(x.join("etc/keep.conf")).unwrap().mode() & 0o777,
        0o640
    );
    assert!(
        !x.join("var/cache/a").exists(),
        "opaque dir hides the lower layer"
    );
    assert_eq!(std::fs::read_to_string(x.join("var/cache/b")).unwrap(), "b");
    // fsck.erofs --extract drops setuid bits; the kernel's erofs shows what the guest sees.
    let mnt = Mount::new(&rootfs, &t.path().join("mnt"));
    let suid = std::fs::metadata(mnt.0.join("usr/bin/passwd")).unwrap();
    assert_eq!(suid.mode() & 0o7777, 0o4755, "setuid kept");
    assert_eq!(
        std::fs::read_to_string(mnt.0.join("usr/bin/passwd")).unwrap(),
        "suid"
    );
    drop(mnt);
    assert_eq!(
        std::fs::metadata(x.join("srv")).unwrap().mode() & 0o777,
        0o750
    );
    assert_eq!(
        std::fs::read_link(x.join("lnk")).unwrap(),
        Path::new("bin/app")
    );
    assert_eq!(
        blobs_verified(store.root()),
        4,
        "config, two layers, generated manifest"
    );
}

#[tokio::test]
async fn oci_archive_import_gzip_and_name_override() {
    let t = tempfile::tempdir().unwrap();
    let layout = busybox_layout(t.path());
    // An OCI archive is the layout directory as a tar; gzip it too.
    let mut b = tar::Builder::new(Vec::new());
    b.append_dir_all(".", &layout).unwrap();
    let archive = t.path().join("busybox.oci.tar.gz");
    std::fs::write(&archive, gzip(&b.into_inner().unwrap())).unwrap();

    let store = ImageStore::open(&t.path().join("store")).unwrap();
    let imported = store
        .import(&archive, Some("localhost:5000/tools/bb:test"))
        .await
        .unwrap();
    assert_eq!(
        imported[0].names,
        vec!["localhost:5000/tools/bb:test".to_string()]
    );
    let from_dir = ImageStore::open(&t.path().join("store2"))
        .unwrap()
        .import(&layout, None)
        .await
        .unwrap();
    assert_eq!(imported[0].id, from_dir[0].id, "same image either way");
    assert_eq!(imported[0].digest, from_dir[0].digest);
    store.rootfs(&imported[0]).await.unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn digest_mismatch_is_rejected_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let layout = busybox_layout(t.path());
    let bad = t.path().join("bad");
    copy_dir(&layout, &bad);
    // Flip one byte of the biggest blob (the layer): same size, other content.
    let layer = std::fs::read_dir(bad.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut data = std::fs::read(&layer).unwrap();
    data[100] ^= 0xff;
    std::fs::write(&layer, &data).unwrap();

    let store = ImageStore::open(&t.path().join("store")).unwrap();
    let err = store.import(&bad, None).await.unwrap_err();
    assert!(matches!(err, Error::DigestMismatch { .. }), "{err}");
    assert!(store.list().unwrap().is_empty());
    assert!(dir_is_empty(&store.root().join("tmp")), "no partial files");
    assert!(!store
        .root()
        .join("blobs/sha256")
        .join(layer.file_name().unwrap())
        .exists());
    blobs_verified(store.root());

    // Truncated: size mismatch.
    std::fs::write(&layer, &data[..data.len() / 2]).unwrap();
    let err = store.import(&bad, None).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::SizeMismatch { .. } | Error::DigestMismatch { .. }
        ),
        "{err}"
    );

    // Corruption inside the store is caught when the rootfs is built.
    let img = store.import(&layout, None).await.unwrap().remove(0);
    let stored = store
        .root()
        .join("blobs/sha256")
        .join(layer.file_name().unwrap());
    let mut s = std::fs::read(&stored).unwrap();
    let n = s.len();
    s[n - 20] ^= 0x01;
    std::fs::write(&stored, &s).unwrap();
    let err = store.rootfs(&img).await.unwrap_err();
    assert!(
        matches!(err, Error::DigestMismatch { .. } | Error::BadLayer(_)),
        "{err}"
    );
    assert!(!store
        .root()
        .join(format!("rootfs/{}.erofs", img.id.hex()))
        .exists());
    assert!(
        dir_is_empty(&store.root().join("tmp")),
        "staging cleaned after failure"
    );
}

#[tokio::test]
async fn hostile_layers_and_archives_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&t.path().join("store")).unwrap();
    let outside = t.path().join("outside");
    std::fs::create_dir(&outside).unwrap();

    // A layer entry with `..` (written raw: the tar crate refuses to build one).
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    let name = b"../../outside/evil";
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(5);
    h.set_cksum();
    b.append(&h, &b"pwned"[..]).unwrap();
    let evil = b.into_inner().unwrap();
    let archive = t.path().join("evil.tar");
    docker_archive(&archive, &["evil:1"], &[evil]);
    let img = store.import(&archive, None).await.unwrap().remove(0);
    let err = store.rootfs(&img).await.unwrap_err();
    assert!(matches!(err, Error::UnsafePath(_)), "{err}");
    assert!(dir_is_empty(&outside));
    assert!(dir_is_empty(&store.root().join("tmp")));
    assert!(!store
        .root()
        .join(format!("rootfs/{}.erofs", img.id.hex()))
        .exists());

    // A symlink to the host, then a file through it: confined to the image root.
    let l = layer(&[
        ("esc", 0o777, Some(&format!("->{}", outside.display()))),
        ("esc/pwned", 0o644, Some("x")),
    ]);
    let archive = t.path().join("esc.tar");
    docker_archive(&archive, &["esc:1"], &[l]);
    let img = store.import(&archive, None).await.unwrap().remove(0);
    let _ = store.rootfs(&img).await;
    assert!(
        dir_is_empty(&outside),
        "nothing written through the symlink"
    );

    // manifest.json naming files outside the archive root.
    let mut b = tar::Builder::new(Vec::new());
    let m = br#"[{"Config":"../../../../etc/hostname","RepoTags":["x:1"],"Layers":[]}]"#;
    let mut h = tar::Header::new_ustar();
    h.set_size(m.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "manifest.json", &m[..]).unwrap();
    let archive = t.path().join("paths.tar");
    std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
    let err = store.import(&archive, None).await.unwrap_err();
    assert!(matches!(err, Error::UnsafePath(_)), "{err}");

    // The same from a directory: a layer path that is a symlink to a host file.
    let dir = t.path().join("dirsrc");
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(outside.join("secret"), "host secret").unwrap();
    std::os::unix::fs::symlink(outside.join("secret"), dir.join("layer.tar")).unwrap();
    std::fs::write(
        dir.join("cfg.json"),
        br#"{"os":"linux","architecture":"amd64"}"#,
    )
    .unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        br#"[{"Config":"cfg.json","Layers":["layer.tar"]}]"#,
    )
    .unwrap();
    let err = store.import(&dir, None).await.unwrap_err();
    assert!(
        matches!(err, Error::InvalidImage(_)),
        "symlink resolved inside the dir, not to the host: {err}"
    );
}

#[tokio::test]
async fn bad_input_gets_typed_errors() {
    let t = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&t.path().join("store")).unwrap();
    assert!(matches!(
        store.import(&t.path().join("missing"), None).await,
        Err(Error::Io { .. })
    ));
    let junk = t.path().join("junk");
    std::fs::write(
        &junk,
        b"not a tar at all, just some bytes that are not an archive",
    )
    .unwrap();
    let err = store.import(&junk, None).await.unwrap_err();
    assert!(matches!(err, Error::InvalidImage(_)), "{err}");
    std::fs::create_dir(t.path().join("emptydir")).unwrap();
    assert!(matches!(
        store.import(&t.path().join("emptydir"), None).await,
        Err(Error::InvalidImage(_))
    ));
    assert!(matches!(store.status("nope"), Err(Error::NotFound(_))));
    assert!(matches!(store.status("Bad:Ref!"), Err(Error::NotFound(_))));
    assert!(matches!(
        store.remove("sha256:1234"),
        Err(Error::InvalidDigest(_))
    ));
    let layout = busybox_layout(t.path());
    assert!(matches!(
        store.import(&layout, Some("UPPER/case")).await,
        Err(Error::InvalidReference(..))
    ));
    // The index file is the only state: a corrupt one is reported, not papered over.
    std::fs::write(store.root().join("index.json"), b"{").unwrap();
    assert!(matches!(store.list(), Err(Error::CorruptIndex(_))));
}
