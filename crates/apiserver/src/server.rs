//! Transport: TLS (rustls, ALPN h2 + http/1.1) on a TCP listener, one task per
//! connection, hyper's automatic HTTP/1.1 or HTTP/2 per connection.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission::Admission;
use crate::api::Api;
use crate::auth::{
    Authenticator, AuthnChain, Authorizer, BootstrapGuard, BootstrapTokenAuthenticator,
    ClientCertAuthenticator, ConnInfo, JoinToken, TokenAuthenticator,
};
use crate::metrics::Metrics;
use crate::pki::{self, Pki};
use crate::sa_token::{
    ServiceAccountAuthenticator, ServiceAccountTokens, TokenRequestHandler, TokenReviewer,
};
use crate::{Error, Result};

/// What the server needs to start.
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The address this server publishes in the `default/kubernetes` Endpoints (pods reach
    /// the API there through their node's relay) and names in its certificate
    /// (kube-apiserver's `--advertise-address`). `None`: the listening address, or for an
    /// unspecified one (`0.0.0.0`) the host's default-route source address.
    pub advertise_address: Option<std::net::IpAddr>,
    pub tls_sans: Vec<String>,
    pub store: Arc<dyn h8s_store::Store>,
    /// Extra authenticators, tried after the built-in ones (client certificates, static
    /// tokens, ServiceAccount tokens, bootstrap tokens): the seam for Keystone.
    pub authenticators: Vec<Arc<dyn Authenticator>>,
    /// The authorizer; `None` is the default chain, the Node authorizer then RBAC
    /// (`system:masters` may do anything). Bootstrap-token users are confined by
    /// [`BootstrapGuard`] before it is asked.
    pub authorizer: Option<Arc<dyn Authorizer>>,
    /// Admission plugins run after the built-in NamespaceLifecycle.
    pub admission: Vec<Arc<dyn Admission>>,
    /// The IPv4 CIDR Service cluster IPs come from.
    pub service_cidr: String,
    /// The node ports NodePort and LoadBalancer Services get, `FIRST-LAST` inclusive
    /// (kube-apiserver's `--service-node-port-range`).
    pub service_node_port_range: String,
    /// ServiceAccount tokens: issuer, API audiences, longest lifetime.
    pub service_account: crate::sa_token::ServiceAccountConfig,
    /// The automatic approval of node client certificates (its timers).
    pub csr_approver: crate::csr::CsrApproverConfig,
    /// Handlers of delegated subresources, by (resource, subresource), e.g.
    /// (`pods`, `log`). Unregistered ones answer 405. (`serviceaccounts/token` is the
    /// server's own TokenRequest unless one is given here.)
    pub subresource_handlers: Vec<(String, String, Arc<dyn crate::stream::SubresourceHandler>)>,
    /// (api: registry seams) Signs approved CertificateSigningRequests; `None` leaves
    /// them approved and unsigned.
    pub csr_signer: Option<Arc<dyn crate::seams::CsrSigner>>,
    /// Answers create-only review kinds by (group, resource), e.g.
    /// (`authentication.k8s.io`, `tokenreviews`).
    pub reviewers: Vec<(String, String, Arc<dyn crate::seams::Reviewer>)>,
    /// How long Events live after their last write (kube-apiserver's `--event-ttl`).
    pub event_ttl: std::time::Duration,
    /// Settings of the built-in admission plugins.
    pub admission_plugins: crate::admission::PluginConfig,
    /// (identity) The built-in identity service (Tenants, Users, passwords, tokens, the
    /// Keystone v3 API under `/v3`); `None` turns it off.
    /// What `/version` reports about the build (the binary stamps it).
    pub build: crate::api::BuildInfo,
    pub identity: Option<crate::identity::IdentityConfig>,
    /// (identity) An external Keystone instead of the built-in identity service (which
    /// is then off whatever `identity` says): its tokens on the Kubernetes API, `/v3`
    /// passed to it.
    pub keystone: Option<crate::identity::external::KeystoneConfig>,
    /// How long `metrics.k8s.io` reuses a node agent's stats.
    pub metrics_cache_ttl: std::time::Duration,
    /// (audit) Where the audit log goes and its policy; `None`: no audit log.
    pub audit: Option<crate::audit::AuditConfig>,
    /// (limits) In-flight requests, fair queuing, connections, watches.
    pub limits: crate::flow::LimitsConfig,
    /// (aggregation) Timers of the proxy to aggregated API servers.
    pub aggregator: crate::aggregator::AggregatorConfig,
}

impl Config {
    pub fn new(data_dir: PathBuf, listen: SocketAddr, store: Arc<dyn h8s_store::Store>) -> Self {
        Config {
            data_dir,
            listen,
            advertise_address: None,
            tls_sans: Vec::new(),
            store,
            authenticators: Vec::new(),
            authorizer: None,
            admission: Vec::new(),
            service_cidr: crate::svc::DEFAULT_SERVICE_CIDR.to_string(),
            service_node_port_range: crate::svc::DEFAULT_NODE_PORT_RANGE.to_string(),
            service_account: Default::default(),
            csr_approver: Default::default(),
            subresource_handlers: Vec::new(),
            csr_signer: None,
            reviewers: Vec::new(),
            event_ttl: std::time::Duration::from_secs(3600),
            admission_plugins: Default::default(),
            identity: Some(Default::default()),
            keystone: None,
            build: Default::default(),
            metrics_cache_ttl: crate::metrics_api::DEFAULT_CACHE_TTL,
            audit: None,
            limits: Default::default(),
            aggregator: Default::default(),
        }
    }
}

/// A started server: its address, PKI and a handle to stop it.
pub struct Server {
    pub addr: SocketAddr,
    pub pki: Pki,
    /// The join token (also in `DATA_DIR/join-token`, mode 0600) node agents bootstrap
    /// their client certificate with.
    pub join_token: JoinToken,
    api: Arc<Api>,
    stop: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Sets up PKI, binds, bootstraps the default namespaces and starts serving.
    pub async fn start(cfg: Config) -> Result<Server> {
        let service_cidr = crate::svc::Cidr::parse(&cfg.service_cidr).ok_or_else(|| {
            Error::Config(format!(
                "service CIDR {:?} is not an IPv4 CIDR of /30 or larger",
                cfg.service_cidr
            ))
        })?;
        let node_ports =
            crate::svc::parse_port_range(&cfg.service_node_port_range).ok_or_else(|| {
                Error::Config(format!(
                    "service node port range {:?} is not FIRST-LAST within 1-65535",
                    cfg.service_node_port_range
                ))
            })?;
        let listener = TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| Error::Listen {
                addr: cfg.listen.to_string(),
                source: e,
            })?;
        let addr = listener.local_addr()?;
        let host = match addr.ip() {
            ip if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) => format!("[{ip}]"),
            ip => ip.to_string(),
        };
        let url = format!("https://{host}:{}", addr.port());
        let dir = cfg.data_dir.clone();
        let advertise = cfg
            .advertise_address
            .unwrap_or_else(|| advertise_default(addr.ip()));
        let advertised = SocketAddr::new(advertise, addr.port());
        // In-cluster clients dial `kubernetes.default.svc` (or the Service's ClusterIP): the
        // certificate names them, and the advertised address, besides the `--tls-san`s.
        let mut sans = pki::in_cluster_sans(service_cidr.first(), advertise);
        sans.extend(cfg.tls_sans.iter().cloned());
        let pki = tokio::task::spawn_blocking(move || pki::ensure(&dir, &sans, &url))
            .await
            .map_err(|e| Error::Pki(e.to_string()))??;
        let tls = TlsAcceptor::from(Arc::new(pki::server_tls(&pki)?));
        // aggregation: the front-proxy CA and client certificate.
        let fp_dir = cfg.data_dir.clone();
        let front_proxy =
            tokio::task::spawn_blocking(move || crate::aggregator::frontproxy::ensure(&fp_dir))
                .await
                .map_err(|e| Error::Pki(e.to_string()))??;

        // Every watcher reads from one shared upstream watch (fan-out), never the
        // backend directly.
        let watch_cache = h8s_store::WatchCache::new(cfg.store.clone()).await?;
        let store: Arc<dyn h8s_store::Store> = watch_cache.clone();
        let join_path = cfg.data_dir.join("join-token");
        let join_token = tokio::task::spawn_blocking(move || JoinToken::ensure(&join_path))
            .await
            .map_err(|e| Error::Pki(e.to_string()))??;
        let sa_key = cfg.data_dir.join("sa.key");
        let sa_cfg = cfg.service_account.clone();
        let sa_tokens = Arc::new(
            tokio::task::spawn_blocking(move || ServiceAccountTokens::ensure(&sa_key, sa_cfg))
                .await
                .map_err(|e| Error::Pki(e.to_string()))??,
        );
        let sa_authn = Arc::new(ServiceAccountAuthenticator::new(
            sa_tokens.clone(),
            store.clone(),
        ));
        // The chain's order: client certificates, static tokens, ServiceAccount tokens,
        // bootstrap tokens, then the extra authenticators (Keystone).
        let mut authn: Vec<Arc<dyn Authenticator>> = vec![
            Arc::new(ClientCertAuthenticator),
            Arc::new(TokenAuthenticator::new(
                pki.admin_token.clone(),
                Some(cfg.data_dir.join("tokens.csv")),
            )),
            sa_authn.clone(),
            Arc::new(
                BootstrapTokenAuthenticator::new(vec![join_token.clone()])
                    .with_secrets(store.clone()),
            ),
        ];
        // identity: its tokens as bearer tokens, and users/password.
        let identity = cfg
            .identity
            .clone()
            .filter(|_| cfg.keystone.is_none())
            .map(|c| Arc::new(crate::identity::Identity::new(store.clone(), c)));
        if let Some(id) = &identity {
            authn.push(Arc::new(crate::identity::IdentityAuthenticator(id.clone())));
        }
        // identity: or an external Keystone, its tokens checked there (cached briefly).
        let keystone = match cfg.keystone.clone() {
            Some(k) => Some(Arc::new(
                crate::identity::external::External::new(k, store.clone())
                    .map_err(|e| Error::Config(e.to_string()))?,
            )),
            None => None,
        };
        if let Some(k) = &keystone {
            authn.push(k.clone());
        }
        authn.extend(cfg.authenticators.iter().cloned());
        let mut streams: std::collections::HashMap<_, _> = cfg
            .subresource_handlers
            .iter()
            .map(|(r, s, h)| ((r.clone(), s.clone()), h.clone()))
            .collect();
        streams
            .entry(("serviceaccounts".to_string(), "token".to_string()))
            .or_insert_with(|| {
                Arc::new(TokenRequestHandler::new(sa_tokens.clone(), store.clone()))
            });
        if identity.is_some() {
            streams
                .entry(("users".to_string(), "password".to_string()))
                .or_insert_with(|| {
                    Arc::new(crate::identity::password::PasswordHandler::new(
                        store.clone(),
                    ))
                });
        }
        // pods/log, exec, attach, portforward: proxied to the pod's node agent.
        let node_proxy = crate::nodeproxy::register(&mut streams, store.clone(), &pki)?;
        // metrics.k8s.io: node agents' stats through the same mTLS as the node proxy.
        let metrics_api = Arc::new(crate::metrics_api::MetricsApi::new(
            store.clone(),
            node_proxy,
            cfg.metrics_cache_ttl,
        ));
        let (stop, shutdown) = tokio::sync::watch::channel(false);
        // tenancy: who owns each Namespace, Network and PersistentVolume, complete before
        // the first request; the tenancy plugin runs right after NamespaceLifecycle.
        let tenant_index = Arc::new(crate::tenancy::TenantIndex::default());
        tenant_index.start(store.clone(), shutdown.clone()).await;
        // quota: LimitRanger and ResourceQuota enforce unless the config brings its own.
        let mut plugins = cfg.admission_plugins.clone();
        crate::quota::install(
            &mut plugins,
            store.clone(),
            tenant_index.clone(),
            shutdown.clone(),
        );
        // api: Kubernetes' default chain, then the configured plugins.
        let mut admission: Vec<Arc<dyn Admission>> =
            crate::admission::default_chain(store.clone(), shutdown.clone(), &plugins);
        admission.insert(
            1.min(admission.len()),
            Arc::new(crate::admission::Tenancy::new(
                store.clone(),
                tenant_index.clone(),
            )),
        );
        // rbac: the authorizer chain, Node authorizer → RBAC, both deciding from indexes
        // that watches keep (listed before the first request).
        let rbac = crate::rbac::RbacAuthorizer::start(store.clone(), shutdown.clone()).await;
        let node_authz =
            crate::rbac::node::NodeAuthorizer::start(store.clone(), shutdown.clone()).await;
        let chain: Arc<dyn Authorizer> = match &cfg.authorizer {
            Some(a) => a.clone(),
            None => Arc::new(crate::rbac::Union(vec![node_authz, rbac.clone()])),
        };
        // tenancy: the tenant guard wraps the chain (it turns tenant users' cluster-wide
        // lists into allow-filtered ones); bootstrap-token users are confined first.
        let authz: Arc<dyn Authorizer> = Arc::new(BootstrapGuard::new(Arc::new(
            crate::tenancy::TenantGuard::with_index(chain, tenant_index.clone()),
        )));
        // rbac: NodeRestriction, and escalation prevention on roles and bindings.
        admission.push(Arc::new(crate::rbac::node::NodeRestriction));
        admission.push(Arc::new(crate::rbac::escalation::Escalation::new(
            rbac.clone(),
        )));
        admission.extend(cfg.admission.iter().cloned());
        // auth: the chain also answers TokenReviews; the cluster CA signs client CSRs.
        let authn: Arc<dyn Authenticator> = Arc::new(AuthnChain(authn));
        let mut reviewers: std::collections::HashMap<_, _> = cfg
            .reviewers
            .iter()
            .map(|(g, r, h)| ((g.clone(), r.clone()), h.clone()))
            .collect();
        reviewers
            .entry((
                "authentication.k8s.io".to_string(),
                "tokenreviews".to_string(),
            ))
            .or_insert_with(|| Arc::new(TokenReviewer::new(authn.clone(), sa_authn.clone())));
        // rbac: the access reviews the registry does not answer itself.
        let az = "authorization.k8s.io".to_string();
        for (plural, local) in [
            ("subjectaccessreviews", false),
            ("localsubjectaccessreviews", true),
        ] {
            reviewers
                .entry((az.clone(), plural.to_string()))
                .or_insert_with(|| {
                    Arc::new(crate::rbac::review::AccessReviewer::new(
                        authz.clone(),
                        local,
                    ))
                });
        }
        reviewers
            .entry((az, "selfsubjectrulesreviews".to_string()))
            .or_insert_with(|| Arc::new(crate::rbac::review::RulesReviewer::new(rbac.clone())));
        let csr_signer = cfg
            .csr_signer
            .clone()
            .unwrap_or_else(|| Arc::new(crate::csr::ClusterCaSigner::new(Arc::new(pki.clone()))));
        let api_store = store.clone();
        let api = Arc::new(Api {
            store,
            authn,
            authz,
            admission,
            metrics: Metrics::default(),
            ready: Default::default(),
            shutdown: shutdown.clone(),
            service_cidr,
            node_ports,
            svc_lock: Default::default(),
            streams,
            csr_signer: Some(csr_signer),
            openid: Some(sa_tokens.clone()),
            reviewers,
            identity: identity.clone(),
            keystone: keystone.clone(),
            build: cfg.build.clone(),
            rbac: Some(rbac),
            metrics_api: Some(metrics_api),
            audit: match cfg.audit.clone() {
                Some(a) => Some(
                    crate::audit::AuditLog::start(a).map_err(|e| Error::Config(e.to_string()))?,
                ),
                None => None,
            },
            crds: Default::default(),
            dynamic: Some(crate::webhook::Dynamic::start(api_store, shutdown.clone()).await),
            flow: crate::flow::Flow::new(cfg.limits.clone(), Some(tenant_index.clone())),
            watch_encodings: Default::default(),
            watch_cache: Some(watch_cache),
            aggregator: Arc::new(crate::aggregator::Aggregator::new(
                cfg.aggregator.clone(),
                front_proxy,
            )),
        });
        crate::ns::bootstrap(&api, advertised)
            .await
            .map_err(|e| Error::Config(format!("bootstrapping the cluster: {}", e.message)))?;
        // api: the system PriorityClasses, and the Events' TTL sweeper.
        crate::bootstrap::start(&api, cfg.event_ttl)
            .await
            .map_err(|e| Error::Config(format!("bootstrapping the cluster: {}", e.message)))?;
        // apiregistration: the local APIService of every served group version.
        crate::apiservice::ensure_local(&api)
            .await
            .map_err(|e| Error::Config(format!("bootstrapping the cluster: {}", e.message)))?;
        // aggregation: the requestheader settings aggregated servers read.
        crate::aggregator::controller::publish_authentication_config(&api, &pki.ca_pem)
            .await
            .map_err(|e| Error::Config(format!("bootstrapping the cluster: {}", e.message)))?;
        // kinds: the default ServiceCIDR, FlowSchemas and PriorityLevelConfigurations.
        crate::kinds::ensure_defaults(&api)
            .await
            .map_err(|e| Error::Config(format!("bootstrapping the cluster: {}", e.message)))?;
        // limits: priority and fairness follows the FlowSchemas and priority levels.
        api.flow.follow(api.store.clone());
        if let Some(k) = &keystone {
            k.attach(&api);
        }
        // identity: the cloud-admin tenant and user; the sweeper of expired tokens.
        if let Some(id) = &identity {
            crate::identity::bootstrap(&api, id, &cfg.data_dir)
                .await
                .map_err(|e| Error::Config(format!("bootstrapping identity: {}", e.message)))?;
            tokio::spawn(id.clone().sweep(shutdown.clone()));
        }
        // rbac: the default roles and bindings (kube-apiserver's rbac/bootstrap-roles),
        // and the ClusterRole aggregation that follows ClusterRoles from then on.
        crate::rbac::bootstrap::reconcile(&api).await.map_err(|e| {
            Error::Config(format!(
                "reconciling the default RBAC policy: {}",
                e.message
            ))
        })?;
        tokio::spawn(crate::rbac::bootstrap::run_aggregation(
            api.clone(),
            shutdown.clone(),
        ));
        // auth: approves node client CSRs (bootstrap and renewal) through the API, as
        // system:kube-controller-manager.
        {
            let (cert, _) = pki.issue_client_cert(
                "system:kube-controller-manager",
                &[],
                std::time::Duration::from_secs(10 * 365 * 24 * 3600),
            )?;
            use rustls::pki_types::pem::PemObject;
            let der = rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes())
                .map_err(|e| Error::Pki(format!("approver certificate: {e}")))?;
            let approver = crate::csr::CsrApprover::new(
                api.clone(),
                ConnInfo::new(addr, vec![der]),
                cfg.csr_approver.clone(),
            );
            tokio::spawn(approver.run(shutdown.clone()));
        }
        api.ready.store(true, Ordering::Relaxed);
        tokio::task::spawn_blocking(crate::openapi::warm_up);
        // Custom resources: served from a watch on their definitions.
        tokio::spawn(crate::crd::controller::run(api.clone()));
        // aggregation: service-backed APIServices, their checks and conditions.
        tokio::spawn(crate::aggregator::controller::run(api.clone()));
        let task = tokio::spawn(accept_loop(listener, tls, api.clone(), shutdown));
        Ok(Server {
            addr,
            pki,
            join_token,
            api,
            stop,
            task,
        })
    }

    /// The request handler, for in-process use (tests, benchmarks).
    pub fn api(&self) -> Arc<Api> {
        self.api.clone()
    }

    /// Stops accepting and ends open watches.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: TlsAcceptor,
    api: Arc<Api>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        // limits: over the connection caps, closed before the TLS handshake.
        let Ok(place) = api.flow.conns.admit(peer.ip()) else {
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let api = api.clone();
        tokio::spawn(async move {
            let _place = place;
            let handshake = api
                .flow
                .cfg
                .read_header_timeout
                .min(Duration::from_secs(10));
            let stream = match tokio::time::timeout(handshake, tls.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => return,
            };
            // What the handshake proved (the verified client certificate) travels with
            // every request of the connection, for the authenticators.
            let certs = stream
                .get_ref()
                .1
                .peer_certificates()
                .map(|c| c.iter().map(|c| c.clone().into_owned()).collect())
                .unwrap_or_default();
            let conn = ConnInfo::new(peer, certs);
            let cfg = api.flow.cfg.clone();
            crate::flow::conn::serve(api, conn, peer, stream, &cfg).await;
        });
    }
}

/// The address to publish when none is configured: the listening one, or for an unspecified
/// listener the source address of the host's default route (as kube-apiserver picks its
/// advertise address), else loopback.
fn advertise_default(listen: std::net::IpAddr) -> std::net::IpAddr {
    if !listen.is_unspecified() {
        return listen;
    }
    // A connected UDP socket sends nothing; it only makes the kernel choose the route.
    let routed = std::net::UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|s| {
            s.connect(("192.0.2.1", 9))?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified());
    routed.unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}
