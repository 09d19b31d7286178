//! The h8s scheduler (kube-scheduler's role). Not built yet.
#![forbid(unsafe_code)]
