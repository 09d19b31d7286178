//! The h8s node agent (kubelet's role). Not built yet.
