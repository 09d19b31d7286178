//! A client that multiplexes every request and watch over one HTTP/2 connection, as
//! client-go does (kube-rs' own builder offers HTTP/1.1 only: one TLS connection per watch).

use std::time::Duration;

use kube::client::retry::RetryPolicy;
use kube::client::ConfigExt;

use crate::{Connection, Error};

/// Idle HTTP/2 pings keep a quiet connection checked (a dead peer ends the watches, which
/// then reconnect).
const KEEPALIVE: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

impl Connection {
    /// A client whose requests and watches share one HTTP/2 connection (ALPN `h2`, falling
    /// back to HTTP/1.1 when the server does not offer it). For components with many
    /// watches (the controller manager, the scheduler).
    pub fn client_http2(&self) -> Result<kube::Client, Error> {
        let cfg = self.config()?;
        // hyper-rustls offers ALPN `h2, http/1.1` from enable_http2/enable_http1 below.
        let mut tls = cfg.rustls_client_config().map_err(Error::Client)?;
        // hyper-rustls panics ("ALPN protocols should not be pre-defined") if the config
        // already names protocols, as kube's may: it sets them itself.
        tls.alpn_protocols.clear();
        let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(cfg.connect_timeout);
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let hyper =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .pool_timer(hyper_util::rt::TokioTimer::new())
                .http2_keep_alive_interval(KEEPALIVE)
                .http2_keep_alive_timeout(KEEPALIVE_TIMEOUT)
                .http2_keep_alive_while_idle(true)
                .build(https);
        // Retries 429 (priority and fairness), 503 and 504 with back-off, honouring
        // `Retry-After`, as kube-rs' own builder and client-go do: without it a component's
        // writes fail outright whenever the server sheds load.
        let retry = cfg
            .default_retry
            .then(|| tower::retry::RetryLayer::new(RetryPolicy::server_retry()));
        let service = tower::ServiceBuilder::new()
            .layer(cfg.base_uri_layer())
            .option_layer(retry)
            .option_layer(cfg.auth_layer().map_err(Error::Client)?)
            .layer(cfg.extra_headers_layer().map_err(Error::Client)?)
            .map_err(tower::BoxError::from)
            .service(hyper);
        Ok(kube::Client::new(service, cfg.default_namespace))
    }
}
