//! Image names for `h8s run`: looked up in the image store (`h8s image`), pulled when
//! missing as `docker run` does, and turned into the erofs root filesystem the pod VM gets.

use std::sync::Arc;

use h8s_runtime::image::{Error as ImageError, ImageStore, Progress, PullOptions};
use h8s_runtime::ImageDisk;

use super::{base_name, ResolvedImage};

pub(super) async fn resolve(arg: &str) -> anyhow::Result<ResolvedImage> {
    let store = ImageStore::open(&ImageStore::default_root())?;
    let image = match store.status(arg) {
        Ok(i) => i,
        Err(ImageError::NotFound(_)) => {
            eprintln!("h8s: image {arg:?} not found locally; pulling");
            let opts = PullOptions {
                progress: Some(Arc::new(|p: &Progress| {
                    if let Progress::Done {
                        digest,
                        size,
                        cached,
                    } = p
                    {
                        eprintln!(
                            "{}: {} ({size} bytes)",
                            digest.short(),
                            if *cached { "already present" } else { "pulled" }
                        );
                    }
                })),
                ..PullOptions::default()
            };
            store
                .pull(arg, &opts)
                .await
                .map_err(|e| anyhow::anyhow!("image {arg:?} not found and cannot be pulled: {e}"))?
        }
        Err(e) => return Err(e.into()),
    };
    let path = store.rootfs(&image).await?;
    let c = &image.config;
    Ok(ResolvedImage {
        disk: ImageDisk {
            name: base_name(arg),
            path,
        },
        entrypoint: c.entrypoint.clone(),
        cmd: c.cmd.clone(),
        env: c.env.clone(),
        workdir: Some(c.working_dir.clone()).filter(|w| !w.is_empty()),
        user: Some(c.user.clone()).filter(|u| !u.is_empty()),
    })
}
