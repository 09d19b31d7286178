//! The controller manager of h8s: the control loops of kube-controller-manager, each an API
//! client (kube-rs watchers and reflectors through `h8s-client`). Nothing here touches the
//! store: every read and write goes through the API server, so admission, validation and
//! finalizers apply to the controllers as to any client.
#![forbid(unsafe_code)]
