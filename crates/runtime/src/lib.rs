//! Pod runtime: CRI-shaped API, QEMU microvm backend, images.

pub mod image;
