//! The Kubernetes API server.
#![forbid(unsafe_code)]
