//! OCI images: pull, import, content store, erofs root filesystems.
