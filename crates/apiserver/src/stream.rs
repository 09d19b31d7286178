//! The seam for subresources served by other parts of h8s: `pods/log`, `exec`, `attach`,
//! `portforward`, `proxy` (the node agent streams them). The API server authenticates,
//! authorizes and finds the object; a [`SubresourceHandler`] registered in
//! [`crate::Config`] answers, and may take over the connection (WebSocket or SPDY upgrade)
//! through the request parts with `hyper::upgrade::on`.

use futures::future::BoxFuture;
use http::Response;
use serde_json::Value;

use crate::auth::UserInfo;
use crate::response::Body;

/// One request for a delegated subresource.
pub struct SubresourceRequest {
    pub user: UserInfo,
    /// Resource (plural) and subresource, e.g. `pods` and `exec`.
    pub resource: &'static str,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// The object as stored now (with its resourceVersion).
    pub object: Value,
    /// The HTTP request's parts, upgrade extension included.
    pub parts: http::request::Parts,
    /// The request body (empty for upgrades).
    pub body: bytes::Bytes,
}

/// Answers delegated subresource requests.
pub trait SubresourceHandler: Send + Sync {
    fn handle(&self, req: SubresourceRequest) -> BoxFuture<'static, Response<Body>>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::sync::Arc;

    struct Echo;
    impl SubresourceHandler for Echo {
        fn handle(&self, req: SubresourceRequest) -> BoxFuture<'static, Response<Body>> {
            let text = format!(
                "{} {}/{} {} by {}",
                req.subresource,
                req.namespace,
                req.name,
                req.object["spec"]["containers"][0]["image"]
                    .as_str()
                    .unwrap_or(""),
                req.user.username
            );
            Box::pin(async move { Response::new(crate::response::full(text)) })
        }
    }

    async fn call(api: &Arc<crate::Api>, tok: &str, m: &str, p: &str, body: &str) -> (u16, String) {
        let req = http::Request::builder()
            .method(m)
            .uri(p)
            .header("authorization", format!("Bearer {tok}"))
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let r = api.handle(req).await;
        let code = r.status().as_u16();
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (code, String::from_utf8_lossy(&b).to_string())
    }

    #[tokio::test]
    async fn delegated_subresources() {
        let dir = tempfile::tempdir().unwrap();
        let store = h8s_store::open("embedded", dir.path(), None).await.unwrap();
        let mut cfg = crate::Config::new(
            dir.path().to_path_buf(),
            "127.0.0.1:0".parse().unwrap(),
            store,
        );
        cfg.subresource_handlers
            .push(("pods".into(), "log".into(), Arc::new(Echo)));
        let srv = crate::Server::start(cfg).await.unwrap();
        let (api, tok) = (srv.api(), srv.pki.admin_token.clone());
        let pod = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"img:1"}]}}"#;
        assert_eq!(
            call(&api, &tok, "POST", "/api/v1/namespaces/default/pods", pod)
                .await
                .0,
            201
        );
        let (c, b) = call(
            &api,
            &tok,
            "GET",
            "/api/v1/namespaces/default/pods/p/log",
            "",
        )
        .await;
        assert_eq!((c, b.as_str()), (200, "log default/p img:1 by admin"));
        assert_eq!(
            call(
                &api,
                &tok,
                "GET",
                "/api/v1/namespaces/default/pods/q/log",
                ""
            )
            .await
            .0,
            404
        );
        // exec is not delegated to Echo: the server's own node proxy answers, and this pod
        // is on no node.
        let (c, b) = call(
            &api,
            &tok,
            "GET",
            "/api/v1/namespaces/default/pods/p/exec?command=true&stdout=true",
            "",
        )
        .await;
        assert_eq!(c, 400, "{b}");
        assert!(b.contains("does not have a host assigned"), "{b}");
        assert_eq!(
            call(
                &api,
                "bad",
                "GET",
                "/api/v1/namespaces/default/pods/p/log",
                ""
            )
            .await
            .0,
            401
        );
        srv.shutdown().await;
    }
}
