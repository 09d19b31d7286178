//! Image garbage collection by disk thresholds, as kubelet's image GC manager does it: when
//! the image store's filesystem is at least `--image-gc-high-threshold` percent used, unused
//! images are deleted, least recently used first (then oldest detected), until usage is back
//! at `--image-gc-low-threshold`. An image used by any pod VM the runtime knows (running or
//! not) is never deleted, nor one detected less than `--minimum-image-ttl-duration` ago (it
//! may be about to start). Not enough to free: an `ImageGCFailed` Warning event on the Node,
//! kubelet's wording.
//!
//! [`plan`] is the pure core; [`Gc`] keeps the records (first detected, last used) and runs it
//! against the runtime.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;

/// The GC's settings (kubelet's flags of the same names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageGcConfig {
    /// Usage percent of the image filesystem at which GC runs (default 90, kubelet's 85;
    /// 100 disables).
    pub high_threshold_percent: u8,
    /// Usage percent GC frees down to (default 85, kubelet's 80).
    pub low_threshold_percent: u8,
    /// Images younger than this (since first detected) are kept (kubelet: 2 min).
    pub minimum_age: Duration,
    /// How often usage is checked (kubelet: 5 min).
    pub period: Duration,
    /// The image store, on the filesystem whose usage counts.
    pub images_dir: PathBuf,
}

impl ImageGcConfig {
    /// Defaults for the store in `images_dir`: kubelet's (2 min, 5 min) but for the
    /// thresholds, 90 % and 85 % rather than 85 % and 80 %: the image store usually shares the
    /// host's root filesystem, whose usage is mostly not images.
    pub fn new(images_dir: PathBuf) -> ImageGcConfig {
        ImageGcConfig {
            high_threshold_percent: 90,
            low_threshold_percent: 85,
            minimum_age: Duration::from_secs(120),
            period: Duration::from_secs(300),
            images_dir,
        }
    }

    /// kubelet's validation: both at most 100, low below high.
    pub fn validate(&self) -> Result<(), String> {
        if self.high_threshold_percent > 100 || self.low_threshold_percent > 100 {
            return Err("image GC thresholds are percentages (0-100)".into());
        }
        if self.low_threshold_percent >= self.high_threshold_percent {
            return Err(format!(
                "--image-gc-low-threshold ({}) must be less than --image-gc-high-threshold ({})",
                self.low_threshold_percent, self.high_threshold_percent
            ));
        }
        Ok(())
    }
}

/// An image as GC sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Candidate {
    pub id: String,
    /// Bytes it holds on the image filesystem.
    pub bytes: u64,
    /// Used by some pod VM (running or stopped but not removed).
    pub in_use: bool,
    /// Seconds since the epoch when first seen.
    pub first_detected: u64,
    /// Seconds since the epoch when last seen in use (0: never).
    pub last_used: u64,
}

/// What one GC round does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Bytes to free to get down to the low threshold (0: below the high threshold).
    pub to_free: u64,
    /// Images to delete, in order.
    pub remove: Vec<String>,
    /// Bytes the removals free.
    pub freed: u64,
}

impl Plan {
    /// kubelet's failure message when the eligible images do not free enough.
    pub fn shortfall(&self) -> Option<String> {
        (self.freed < self.to_free).then(|| {
            format!(
                "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} bytes eligible to free.",
                self.to_free, self.freed
            )
        })
    }
}

/// kubelet's `GarbageCollect`: the usage percent of a filesystem of `capacity` bytes with
/// `available` free; at or above `high`, free `capacity × (100 − low)% − available` bytes from
/// unused images old enough, least recently used first.
pub(crate) fn plan(
    images: &[Candidate],
    capacity: u64,
    available: u64,
    cfg: &ImageGcConfig,
    now: u64,
) -> Plan {
    if capacity == 0 || cfg.high_threshold_percent >= 100 {
        return Plan::default();
    }
    let available = available.min(capacity);
    let used_percent = 100 - (u128::from(available) * 100 / u128::from(capacity)) as u64;
    if used_percent < u64::from(cfg.high_threshold_percent) {
        return Plan::default();
    }
    let target_free =
        (u128::from(capacity) * u128::from(100 - cfg.low_threshold_percent.min(100)) / 100) as u64;
    let to_free = target_free.saturating_sub(available);
    let mut order: Vec<&Candidate> = images
        .iter()
        .filter(|c| !c.in_use)
        .filter(|c| now.saturating_sub(c.first_detected) >= cfg.minimum_age.as_secs())
        .collect();
    order.sort_by(|a, b| {
        (a.last_used, a.first_detected, &a.id).cmp(&(b.last_used, b.first_detected, &b.id))
    });
    let mut p = Plan {
        to_free,
        ..Default::default()
    };
    for c in order {
        if p.freed >= to_free {
            break;
        }
        p.remove.push(c.id.clone());
        p.freed = p.freed.saturating_add(c.bytes);
    }
    p
}

/// The GC's memory of images (kubelet keeps it in memory too: after a restart every image
/// counts as first detected then, and in-use ones as just used).
pub(crate) struct Gc {
    cfg: ImageGcConfig,
    runtime: Arc<dyn h8s_runtime::PodRuntime>,
    recorder: crate::events::Recorder,
    node: String,
    records: HashMap<String, (u64, u64)>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Gc {
    pub(crate) fn new(
        cfg: ImageGcConfig,
        runtime: Arc<dyn h8s_runtime::PodRuntime>,
        recorder: crate::events::Recorder,
        node: String,
    ) -> Gc {
        Gc {
            cfg,
            runtime,
            recorder,
            node,
            records: HashMap::new(),
        }
    }

    /// The image store's images with their records refreshed.
    async fn candidates(&mut self, now: u64) -> Result<Vec<Candidate>, String> {
        let images = self
            .runtime
            .list_images()
            .map_err(|e| format!("listing images: {e}"))?;
        let sandboxes = self
            .runtime
            .list_sandboxes()
            .await
            .map_err(|e| format!("listing pod VMs: {e}"))?;
        // A pod VM's image disks are the images' root filesystems, named by image id.
        let used: std::collections::HashSet<String> = sandboxes
            .iter()
            .flat_map(|s| s.config.images.iter())
            .filter_map(|d| Some(d.path.file_stem()?.to_string_lossy().into_owned()))
            .collect();
        let rootfs_dir = self.cfg.images_dir.join("rootfs");
        let mut out = Vec::new();
        for img in &images {
            let id = img.id.to_string();
            let in_use = used.contains(img.id.hex());
            let rec = self.records.entry(id.clone()).or_insert((now, 0));
            if in_use {
                rec.1 = now;
            }
            let rootfs = std::fs::metadata(rootfs_dir.join(format!("{}.erofs", img.id.hex())))
                .map(|m| m.len())
                .unwrap_or(0);
            out.push(Candidate {
                id,
                bytes: img.size.saturating_add(rootfs),
                in_use,
                first_detected: rec.0,
                last_used: rec.1,
            });
        }
        self.records.retain(|id, _| out.iter().any(|c| &c.id == id));
        Ok(out)
    }

    /// One round: measure the image filesystem, plan, delete. Returns the plan carried out.
    pub(crate) async fn run_once(&mut self) -> Result<Plan, String> {
        let Some((capacity, available)) = crate::node::disk(&self.cfg.images_dir) else {
            return Err(format!(
                "cannot read the filesystem of {}",
                self.cfg.images_dir.display()
            ));
        };
        self.round(capacity, available).await
    }

    /// A round for a filesystem of `capacity` bytes with `available` free.
    async fn round(&mut self, capacity: u64, available: u64) -> Result<Plan, String> {
        let now = now_secs();
        let cands = self.candidates(now).await?;
        let mut p = plan(&cands, capacity, available, &self.cfg, now);
        if p.to_free == 0 {
            return Ok(p);
        }
        let mut freed = 0u64;
        let mut removed = Vec::new();
        for id in &p.remove {
            match self.runtime.remove_image(id) {
                Ok(_) => {
                    let bytes = cands
                        .iter()
                        .find(|c| &c.id == id)
                        .map(|c| c.bytes)
                        .unwrap_or(0);
                    tracing::info!(image = %id, bytes, "image garbage collected");
                    freed += bytes;
                    removed.push(id.clone());
                    self.records.remove(id);
                }
                Err(e) => {
                    tracing::warn!(image = %id, error = %e, "removing an unused image failed")
                }
            }
        }
        p.remove = removed;
        p.freed = freed;
        if let Some(msg) = p.shortfall() {
            tracing::warn!("{msg}");
            let node = ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("Node".into()),
                name: Some(self.node.clone()),
                uid: Some(self.node.clone()),
                namespace: Some("default".into()),
                ..Default::default()
            };
            self.recorder
                .object_event(
                    node,
                    "kubelet",
                    crate::events::Kind::Warning,
                    "ImageGCFailed",
                    msg,
                )
                .await;
        }
        Ok(p)
    }

    /// Runs a round every period until `stop`.
    pub(crate) async fn run(mut self, mut stop: tokio::sync::watch::Receiver<bool>) {
        loop {
            match self.run_once().await {
                Ok(p) if !p.remove.is_empty() => {
                    tracing::info!(images = p.remove.len(), bytes = p.freed, "image GC round")
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "image GC failed"),
            }
            tokio::select! {
                _ = tokio::time::sleep(self.cfg.period) => {}
                _ = stop.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ImageGcConfig {
        ImageGcConfig {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            minimum_age: Duration::from_secs(60),
            ..ImageGcConfig::new("/x".into())
        }
    }

    fn img(id: &str, bytes: u64, in_use: bool, first: u64, last: u64) -> Candidate {
        Candidate {
            id: id.into(),
            bytes,
            in_use,
            first_detected: first,
            last_used: last,
        }
    }

    #[test]
    fn below_the_high_threshold_nothing_happens() {
        let imgs = [img("a", 50, false, 0, 0)];
        // 84 % used.
        assert_eq!(plan(&imgs, 1000, 160, &cfg(), 1000), Plan::default());
    }

    #[test]
    fn frees_down_to_the_low_threshold_least_recently_used_first() {
        let imgs = [
            img("recent", 100, false, 0, 900),
            img("never-used", 100, false, 10, 0),
            img("old", 100, false, 0, 100),
            img("running", 500, true, 0, 1000),
            img("young", 500, false, 990, 0),
        ];
        // 90 % used: free 200 - 100 = 100 bytes to reach 80 %.
        let p = plan(&imgs, 1000, 100, &cfg(), 1000);
        assert_eq!(p.to_free, 100);
        assert_eq!(p.remove, ["never-used"]);
        assert_eq!(p.shortfall(), None);
        // 98 % used: 180 bytes; everything eligible goes, in order, and it is not enough.
        let p = plan(&imgs, 1000, 20, &cfg(), 1000);
        assert_eq!(p.to_free, 180);
        assert_eq!(p.remove, ["never-used", "old"]);
        let p = plan(
            &imgs,
            1000,
            0,
            &ImageGcConfig {
                low_threshold_percent: 50,
                ..cfg()
            },
            1000,
        );
        assert_eq!(p.remove, ["never-used", "old", "recent"]);
        assert_eq!(
            p.shortfall().as_deref(),
            Some("Failed to garbage collect required amount of images. Attempted to free 500 bytes, but only found 300 bytes eligible to free.")
        );
    }

    fn cache() -> PathBuf {
        std::env::var_os("H8S_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/h8s"))
    }

    /// A copy of the busybox OCI layout whose config carries one more label: another image
    /// (its own id) sharing busybox's layer.
    fn variant_layout(dir: &std::path::Path) -> PathBuf {
        use h8s_runtime::image::Digest;
        let src = cache().join("images/busybox-oci");
        assert!(
            src.exists(),
            "needs images/busybox-oci in the cache: run scripts/setup"
        );
        let out = dir.join("variant-oci");
        let blobs = out.join("blobs/sha256");
        std::fs::create_dir_all(&blobs).unwrap();
        for e in std::fs::read_dir(src.join("blobs/sha256")).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), blobs.join(e.file_name())).unwrap();
        }
        std::fs::copy(src.join("oci-layout"), out.join("oci-layout")).unwrap();
        let blob = |d: &str| blobs.join(d.trim_start_matches("sha256:"));
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(src.join("index.json")).unwrap()).unwrap();
        let mdesc = index["manifests"][0].clone();
        let mut manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(blob(mdesc["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        let mut config: serde_json::Value = serde_json::from_slice(
            &std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
        )
        .unwrap();
        config["config"]["Labels"] = serde_json::json!({"h8s.test/variant": "1"});
        let put = |v: &serde_json::Value| {
            let bytes = serde_json::to_vec(v).unwrap();
            let d = Digest::of(&bytes);
            std::fs::write(blobs.join(d.hex()), &bytes).unwrap();
            (d.to_string(), bytes.len())
        };
        let (cd, cl) = put(&config);
        manifest["config"]["digest"] = cd.into();
        manifest["config"]["size"] = cl.into();
        let (md, ml) = put(&manifest);
        let mut index = index.clone();
        index["manifests"][0]["digest"] = md.into();
        index["manifests"][0]["size"] = ml.into();
        index["manifests"][0]["annotations"] =
            serde_json::json!({"org.opencontainers.image.ref.name": "variant:1"});
        std::fs::write(out.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
        out
    }

    /// Two real images in a real store: the least recently used one goes, the other stays;
    /// images younger than the minimum age are never touched.
    #[tokio::test]
    async fn collects_the_least_recently_used_real_image() {
        let t = tempfile::tempdir().unwrap();
        let images_dir = t.path().join("images");
        let rt = h8s_runtime::Runtime::new(h8s_runtime::RuntimeConfig {
            root: t.path().join("r"),
            images: Some(images_dir.clone()),
            vm: h8s_runtime::VmSettings::from_env().unwrap(),
            shim: h8s_runtime::ShimCommand {
                program: "/bin/false".into(),
                args: vec![],
            },
        });
        let rt: Arc<dyn h8s_runtime::PodRuntime> = Arc::new(rt);
        let busybox = rt
            .import_image(&cache().join("images/busybox-oci"), Some("busybox"))
            .await
            .unwrap()
            .remove(0);
        let variant = rt
            .import_image(&variant_layout(t.path()), None)
            .await
            .unwrap()
            .remove(0);
        assert_ne!(busybox.id, variant.id);
        // A root filesystem built for each, as pod starts do.
        let _ = rt.image_disk("busybox").await.unwrap();
        let _ = rt.image_disk("variant:1").await.unwrap();
        let rootfs = |id: &h8s_runtime::image::Digest| {
            images_dir
                .join("rootfs")
                .join(format!("{}.erofs", id.hex()))
        };
        assert!(rootfs(&variant.id).exists());
        // Events go nowhere here (no API server): the recorder logs and drops them.
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap()))
                .unwrap();
        let mut gc = Gc::new(
            ImageGcConfig {
                high_threshold_percent: 50,
                low_threshold_percent: 49,
                minimum_age: Duration::from_secs(3600),
                period: Duration::from_secs(60),
                images_dir: images_dir.clone(),
            },
            rt.clone(),
            crate::events::Recorder::new(client, "n".into()),
            "n".into(),
        );
        // Full, but both images are younger than the minimum age: nothing goes.
        let p = gc.round(1000, 0).await.unwrap();
        assert!(p.remove.is_empty() && p.to_free == 510, "{p:?}");
        assert_eq!(rt.list_images().unwrap().len(), 2);
        // Old enough now; busybox was used a moment ago, the variant never.
        gc.cfg.minimum_age = Duration::ZERO;
        gc.records.get_mut(&busybox.id.to_string()).unwrap().1 = now_secs();
        // 10 bytes to free: the variant alone is enough.
        gc.cfg.low_threshold_percent = 49;
        let p = gc.round(1000, 500).await.unwrap();
        assert_eq!(p.remove, [variant.id.to_string()]);
        assert!(p.freed >= variant.size, "{p:?}");
        let left: Vec<_> = rt
            .list_images()
            .unwrap()
            .into_iter()
            .map(|i| i.id)
            .collect();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0], busybox.id);
        assert!(
            !rootfs(&variant.id).exists(),
            "the variant's root filesystem is gone"
        );
        assert!(rootfs(&busybox.id).exists());
        // The shared layer stays with busybox, which still builds and reads.
        let _ = rt.image_disk("busybox").await.unwrap();
    }

    #[test]
    fn thresholds_validate_like_kubelet() {
        assert!(cfg().validate().is_ok());
        let bad = ImageGcConfig {
            low_threshold_percent: 90,
            ..cfg()
        };
        assert!(bad.validate().unwrap_err().contains("must be less than"));
        let off = ImageGcConfig {
            high_threshold_percent: 100,
            low_threshold_percent: 99,
            ..cfg()
        };
        assert_eq!(
            plan(&[img("a", 1, false, 0, 0)], 10, 0, &off, 1000),
            Plan::default()
        );
    }
}
