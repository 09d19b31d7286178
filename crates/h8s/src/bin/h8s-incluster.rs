//! `h8s-incluster`: an in-cluster API client, run inside a pod to check that the pod reaches
//! the API server the way in-cluster clients do (kube-rs's in-cluster configuration): the
//! ServiceAccount token, CA and namespace from `/var/run/secrets/kubernetes.io/serviceaccount`,
//! the server at `https://kubernetes.default.svc` (`dns`, the default) or at
//! `KUBERNETES_SERVICE_HOST:KUBERNETES_SERVICE_PORT` (`env`, client-go's way). The TLS
//! handshake verifies the server's certificate against that CA for that name.
//!
//! Prints `version <gitVersion>` (GET /version) and `user <username>` (a SelfSubjectReview:
//! who the token authenticated as); exits non-zero with the error otherwise.

use anyhow::Context;
use h8s_client::k8s_openapi::api::authentication::v1::SelfSubjectReview;
use h8s_client::kube::{self, api::PostParams, Api};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_else(|| "dns".into());
    let cfg = match mode.as_str() {
        "dns" => kube::Config::incluster_dns(),
        "env" => kube::Config::incluster_env(),
        other => anyhow::bail!("usage: h8s-incluster [dns|env] (got {other:?})"),
    }
    .context("the in-cluster configuration")?;
    println!("server {}", cfg.cluster_url);
    let client = kube::Client::try_from(cfg).context("the client")?;
    let v = client.apiserver_version().await.context("GET /version")?;
    println!("version {}", v.git_version);
    let review = Api::<SelfSubjectReview>::all(client)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .context("creating a SelfSubjectReview")?;
    let user = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .unwrap_or_default();
    println!("user {user}");
    Ok(())
}
