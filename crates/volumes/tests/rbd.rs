//! The rbd backend against a real one-node Ceph cluster (one mon, one mgr, one BlueStore OSD on
//! a file) that this test starts with `ceph-up.sh` and stops at the end. Needs the ceph
//! packages and qemu-block-extra (scripts/setup.d/50-volumes.sh).

use std::path::{Path, PathBuf};
use std::process::Command;

use h8s_volumes::{rbd::Rbd, Backend, Error, Filesystem, VolumeId};

struct Ceph {
    dir: PathBuf,
}

impl Ceph {
    fn start() -> Ceph {
        let dir = tempfile::Builder::new()
            .prefix("h8s-ceph-")
            .tempdir()
            .unwrap()
            .keep();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ceph-up.sh");
        let out = Command::new("bash")
            .arg(script)
            .arg(&dir)
            .arg(port.to_string())
            .output()
            .unwrap();
        let c = Ceph { dir };
        assert!(
            out.status.success(),
            "ceph did not start: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }

    fn conf(&self) -> PathBuf {
        self.dir.join("ceph.conf")
    }
}

impl Drop for Ceph {
    fn drop(&mut self) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ceph-down.sh");
        let _ = Command::new("bash").arg(script).arg(&self.dir).status();
    }
}

fn read_at(b: &Rbd, conf: &Path, id: &VolumeId, offset: u64, len: usize) -> Vec<u8> {
    // Export through qemu-img (QEMU's rbd driver, the path pod VMs use) into a local file.
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.raw");
    let st = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(format!(
            "rbd:{}/{}:id=admin:conf={}",
            b.pool(),
            id,
            conf.display()
        ))
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let all = std::fs::read(out).unwrap();
    all[offset as usize..offset as usize + len].to_vec()
}

#[test]
fn rbd_images_are_made_formatted_grown_checked_and_removed() {
    let ceph = Ceph::start();
    let b = Rbd::new("h8s", ceph.conf(), "admin");
    let id = VolumeId::new("pv-rbd-1").unwrap();

    assert!(matches!(b.inspect(&id), Err(Error::NotFound(_))));
    let i = b.create(&id, 32 << 20, Some(Filesystem::Ext4)).unwrap();
    assert_eq!(i.size, 32 << 20);
    assert_eq!(b.inspect(&id).unwrap().size, 32 << 20);
    // ext4's superblock magic, read back through QEMU's rbd driver.
    assert_eq!(read_at(&b, &ceph.conf(), &id, 1024 + 0x38, 2), [0x53, 0xEF]);
    assert!(matches!(
        b.create(&id, 1 << 20, None),
        Err(Error::AlreadyExists(_))
    ));
    assert_eq!(b.resize(&id, 48 << 20).unwrap().size, 48 << 20);
    assert_eq!(b.inspect(&id).unwrap().size, 48 << 20);
    assert!(matches!(b.resize(&id, 1 << 20), Err(Error::Shrink { .. })));

    // Delete, then a new image of the same name reads zeros where the old one had data.
    b.delete(&id).unwrap();
    assert!(matches!(b.inspect(&id), Err(Error::NotFound(_))));
    b.delete(&id).unwrap();
    b.create(&id, 32 << 20, None).unwrap();
    assert!(read_at(&b, &ceph.conf(), &id, 1024, 4096)
        .iter()
        .all(|&x| x == 0));
    b.delete(&id).unwrap();
}
