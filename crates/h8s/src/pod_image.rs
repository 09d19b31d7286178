//! Image names for `h8s run`: resolved through the image store.

use super::ResolvedImage;

pub(super) async fn resolve(arg: &str) -> anyhow::Result<ResolvedImage> {
    anyhow::bail!("image {arg:?} not found: give the path of an erofs root filesystem")
}
