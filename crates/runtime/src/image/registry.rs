//! Pull and push over the OCI distribution API: anonymous, basic and bearer-token
//! auth; https always, plain http only for loopback registries or ones listed insecure.

use std::sync::Mutex;

use base64::Engine;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::http::{encode, read_body, Challenge, Client, Url, READ_TIMEOUT};
use super::oci::{self, Descriptor, Manifest};
use super::store::{Layout, Record};
use super::{Digest, Error, Progress, PullOptions, Pulled, Reference, Result};

const MAX_MANIFEST: usize = 4 * 1024 * 1024;
const MAX_TOKEN: usize = 1024 * 1024;
const PARALLEL_BLOBS: usize = 3;
const MAX_REDIRECTS: usize = 5;

/// One repository on one registry, with the auth state learnt from challenges.
struct Session<'a> {
    client: Client,
    /// As the user wrote it (`docker.io`, `localhost:5000`): for messages.
    registry: String,
    base: Url,
    repository: String,
    actions: &'static str,
    opts: &'a PullOptions,
    auth: Mutex<Option<HeaderValue>>,
}

impl<'a> Session<'a> {
    fn new(r: &Reference, opts: &'a PullOptions, actions: &'static str) -> Result<Session<'a>> {
        let host = if r.registry() == super::DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            r.registry()
        };
        let insecure = opts
            .insecure_registries
            .iter()
            .any(|i| i == r.registry() || i == host);
        let base = Url {
            https: true,
            authority: host.to_owned(),
            path: "/".into(),
        };
        let base = if (base.is_loopback() && opts.allow_local_registries) || insecure {
            Url {
                https: false,
                ..base
            }
        } else {
            base
        };
        Ok(Session {
            client: Client::new(opts.allow_local_registries)?,
            registry: r.registry().to_owned(),
            base,
            repository: r.repository().to_owned(),
            actions,
            opts,
            auth: Mutex::new(None),
        })
    }

    fn err(&self, message: impl Into<String>) -> Error {
        Error::Registry {
            registry: self.registry.clone(),
            message: message.into(),
        }
    }

    fn url(&self, path: &str) -> Url {
        Url {
            path: format!("/v2/{}/{path}", self.repository),
            ..self.base.clone()
        }
    }

    /// Plain http is allowed only to the registry itself when it is plain http, to a
    /// registry listed insecure, or to loopback when local registries are allowed: a redirect
    /// or token realm never downgrades a public registry to http.
    fn check_scheme(&self, u: &Url) -> Result<()> {
        if u.https
            || (!self.base.https && u.authority == self.base.authority)
            || (self.opts.allow_local_registries && u.is_loopback())
            || self
                .opts
                .insecure_registries
                .iter()
                .any(|i| i == &u.authority)
        {
            Ok(())
        } else {
            Err(Error::Insecure(u.authority.clone()))
        }
    }

    fn basic(&self) -> Option<HeaderValue> {
        self.opts.auth.as_ref().map(|c| {
            let raw = format!("{}:{}", c.username, c.password);
            let mut v = HeaderValue::from_str(&format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            ))
            .expect("base64 is a valid header value");
            v.set_sensitive(true);
            v
        })
    }

    /// Sends a request, answering one auth challenge and following redirects. The
    /// registry's credentials never go to another host a redirect points at.
    async fn request(
        &self,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        let mut url = url;
        let mut challenged = false;
        let mut redirects = 0;
        loop {
            self.check_scheme(&url)?;
            let mut h = headers.clone();
            let same_host = url.authority == self.base.authority;
            if same_host {
                if let Some(a) = self.auth.lock().expect("auth lock").clone() {
                    h.insert(http::header::AUTHORIZATION, a);
                }
            }
            let resp = self
                .client
                .send(method.clone(), &url, &h, body.clone())
                .await?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && same_host && !challenged {
                challenged = true;
                let challenge = resp
                    .headers()
                    .get(http::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(Challenge::parse)
                    .ok_or_else(|| Error::Unauthorized(self.registry.clone()))?;
                self.authenticate(&challenge).await?;
                continue;
            }
            if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
                return Err(Error::Unauthorized(self.registry.clone()));
            }
            if status.is_redirection() && status != StatusCode::NOT_MODIFIED {
                redirects += 1;
                let next = resp
                    .headers()
                    .get(http::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|l| url.join(l));
                match next {
                    Some(n) if redirects <= MAX_REDIRECTS => {
                        url = n;
                        continue;
                    }
                    _ => return Err(self.err(format!("bad or too many redirects from {url}"))),
                }
            }
            return Ok(resp);
        }
    }

    async fn authenticate(&self, c: &Challenge) -> Result<()> {
        let value = if c.scheme.eq_ignore_ascii_case("basic") {
            self.basic()
                .ok_or_else(|| Error::Unauthorized(self.registry.clone()))?
        } else if c.scheme.eq_ignore_ascii_case("bearer") {
            let realm = c
                .param("realm")
                .ok_or_else(|| self.err("bearer challenge without realm"))?;
            let mut token_url =
                Url::parse(realm).ok_or_else(|| self.err(format!("bad token realm {realm:?}")))?;
            self.check_scheme(&token_url)?;
            let scope = format!("repository:{}:{}", self.repository, self.actions);
            let mut q = vec![format!("scope={}", encode(&scope))];
            if let Some(s) = c.param("service") {
                q.push(format!("service={}", encode(s)));
            }
            let sep = if token_url.path.contains('?') {
                '&'
            } else {
                '?'
            };
            token_url.path = format!("{}{sep}{}", token_url.path, q.join("&"));
            let mut h = HeaderMap::new();
            if let Some(b) = self.basic() {
                h.insert(http::header::AUTHORIZATION, b);
            }
            let resp = self
                .client
                .send(Method::GET, &token_url, &h, Bytes::new())
                .await?;
            if !resp.status().is_success() {
                tracing::debug!(status = %resp.status(), "token endpoint refused");
                return Err(Error::Unauthorized(self.registry.clone()));
            }
            #[derive(serde::Deserialize)]
            struct Token {
                token: Option<String>,
                access_token: Option<String>,
            }
            let body = read_body(resp, MAX_TOKEN, &self.registry).await?;
            let t: Token = serde_json::from_slice(&body)
                .map_err(|e| self.err(format!("token response: {e}")))?;
            let t = t
                .token
                .or(t.access_token)
                .ok_or_else(|| self.err("token response without token"))?;
            let mut v = HeaderValue::from_str(&format!("Bearer {t}"))
                .map_err(|_| self.err("token is not a header value"))?;
            v.set_sensitive(true);
            v
        } else {
            return Err(self.err(format!("unsupported auth scheme {:?}", c.scheme)));
        };
        *self.auth.lock().expect("auth lock") = Some(value);
        Ok(())
    }

    /// A manifest by tag or digest; verified against the digest when one was asked for.
    async fn manifest(&self, reference: &str) -> Result<(Bytes, Digest, Option<String>)> {
        let mut h = HeaderMap::new();
        h.insert(
            http::header::ACCEPT,
            HeaderValue::from_static(oci::MANIFEST_ACCEPT),
        );
        let resp = self
            .request(
                Method::GET,
                self.url(&format!("manifests/{reference}")),
                h,
                Bytes::new(),
            )
            .await?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Err(Error::NotFound(format!(
                "{}/{}:{reference}",
                self.registry, self.repository
            )));
        }
        if !status.is_success() {
            return Err(self.err(format!("manifest {reference}: HTTP {status}")));
        }
        let ctype = resp
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(';').next().unwrap_or("").trim().to_owned());
        let body = read_body(resp, MAX_MANIFEST, &self.registry).await?;
        let digest = Digest::of(&body);
        if let Ok(want) = reference.parse::<Digest>() {
            if want != digest {
                return Err(Error::DigestMismatch {
                    expected: want,
                    actual: digest,
                });
            }
        }
        Ok((body, digest, ctype))
    }

    /// Streams a blob into the store, verifying size and digest.
    async fn blob(&self, layout: &Layout, d: &Descriptor) -> Result<()> {
        let report = |p: Progress| {
            if let Some(cb) = &self.opts.progress {
                cb(&p);
            }
        };
        if layout.has_blob(&d.digest) {
            report(Progress::Done {
                digest: d.digest.clone(),
                size: d.size,
                cached: true,
            });
            return Ok(());
        }
        let resp = self
            .request(
                Method::GET,
                self.url(&format!("blobs/{}", d.digest)),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await?;
        if !resp.status().is_success() {
            return Err(self.err(format!("blob {}: HTTP {}", d.digest, resp.status())));
        }
        let mut w = layout.writer()?;
        let mut body = resp.into_body();
        let mut last = 0u64;
        while let Some(frame) = tokio::time::timeout(READ_TIMEOUT, body.frame())
            .await
            .map_err(|_| self.err(format!("blob {} stalled", d.digest)))?
        {
            let frame = frame.map_err(|e| self.err(format!("blob {}: {e}", d.digest)))?;
            if let Ok(data) = frame.into_data() {
                w.write(&data)?;
                if w.len() > d.size {
                    return Err(Error::SizeMismatch {
                        digest: d.digest.clone(),
                        expected: d.size,
                        actual: w.len(),
                    });
                }
                if w.len() - last >= 512 * 1024 {
                    last = w.len();
                    report(Progress::Downloading {
                        digest: d.digest.clone(),
                        received: last,
                        total: d.size,
                    });
                }
            }
        }
        let received = w.len();
        w.commit(Some(&d.digest), Some(d.size))?;
        report(Progress::Downloading {
            digest: d.digest.clone(),
            received,
            total: d.size,
        });
        report(Progress::Done {
            digest: d.digest.clone(),
            size: d.size,
            cached: false,
        });
        Ok(())
    }
}

fn parse_manifest(body: &[u8], d: &Digest) -> Result<Manifest> {
    serde_json::from_slice(body).map_err(|e| Error::InvalidImage(format!("manifest {d}: {e}")))
}

pub(crate) async fn pull(layout: &Layout, r: &Reference, opts: &PullOptions) -> Result<Pulled> {
    use tracing::Instrument;
    pull_inner(layout, r, opts)
        .instrument(tracing::info_span!("pull", reference = %r))
        .await
}

async fn pull_inner(layout: &Layout, r: &Reference, opts: &PullOptions) -> Result<Pulled> {
    let s = Session::new(r, opts, "pull")?;
    let (body, top, ctype) = s.manifest(&r.manifest_ref()).await?;
    let mut m = parse_manifest(&body, &top)?;
    layout.put_bytes(&body, Some(&top))?;
    let mut manifest = top.clone();
    if m.is_index(ctype.as_deref()) {
        let pick = oci::pick_platform(&m).ok_or_else(|| Error::NoPlatform(r.to_string()))?;
        let (body, d, _) = s.manifest(&pick.digest.to_string()).await?;
        m = parse_manifest(&body, &d)?;
        if m.is_index(None) {
            return Err(Error::InvalidImage(format!("nested index {d}")));
        }
        layout.put_bytes(&body, Some(&d))?;
        manifest = d;
    }
    if m.schema_version != 2 {
        return Err(Error::UnsupportedMediaType(format!(
            "manifest schema version {}",
            m.schema_version
        )));
    }
    let config = m
        .config
        .clone()
        .ok_or_else(|| Error::InvalidImage(format!("manifest {manifest} has no config")))?;
    if let Some(cb) = &opts.progress {
        cb(&Progress::Resolved {
            reference: r.to_string(),
            digest: top.clone(),
            layers: m.layers.len(),
        });
    }
    s.blob(layout, &config).await?;
    futures::stream::iter(m.layers.iter().map(|l| s.blob(layout, l)))
        .buffer_unordered(PARALLEL_BLOBS)
        .try_collect::<Vec<()>>()
        .await?;
    let size = config.size + m.layers.iter().map(|l| l.size).sum::<u64>();
    Ok(Pulled {
        id: config.digest,
        digest: top,
        manifest,
        size,
    })
}

pub(crate) async fn push(
    layout: &Layout,
    rec: &Record,
    target: &Reference,
    opts: &PullOptions,
) -> Result<Digest> {
    let s = Session::new(target, opts, "pull,push")?;
    let body = layout.read_blob(&rec.manifest)?;
    let m = parse_manifest(&body, &rec.manifest)?;
    let config = m
        .config
        .clone()
        .ok_or_else(|| Error::InvalidImage("manifest has no config".into()))?;
    for d in m.layers.iter().chain(std::iter::once(&config)) {
        let head = s
            .request(
                Method::HEAD,
                s.url(&format!("blobs/{}", d.digest)),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await?;
        if head.status().is_success() {
            continue;
        }
        let start = s
            .request(
                Method::POST,
                s.url("blobs/uploads/"),
                HeaderMap::new(),
                Bytes::new(),
            )
            .await?;
        if start.status() != StatusCode::ACCEPTED {
            return Err(s.err(format!("start upload: HTTP {}", start.status())));
        }
        let loc = start
            .headers()
            .get(http::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|l| s.base.join(l))
            .ok_or_else(|| s.err("upload without Location"))?;
        let sep = if loc.path.contains('?') { '&' } else { '?' };
        let put = Url {
            path: format!("{}{sep}digest={}", loc.path, encode(&d.digest.to_string())),
            ..loc
        };
        // Monolithic upload: fine for the images we push (tests, mirrors of small images).
        let data =
            Bytes::from(
                std::fs::read(layout.blob_path(&d.digest)).map_err(|e| Error::Io {
                    context: format!("read blob {}", d.digest),
                    source: e,
                })?,
            );
        let mut h = HeaderMap::new();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let resp = s.request(Method::PUT, put, h, data).await?;
        if resp.status() != StatusCode::CREATED {
            return Err(s.err(format!("upload {}: HTTP {}", d.digest, resp.status())));
        }
        if let Some(cb) = &opts.progress {
            cb(&Progress::Done {
                digest: d.digest.clone(),
                size: d.size,
                cached: false,
            });
        }
    }
    let tag = target.manifest_ref();
    let mut h = HeaderMap::new();
    let mt = if m.media_type.is_empty() {
        oci::OCI_MANIFEST.to_owned()
    } else {
        m.media_type.clone()
    };
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_str(&mt).map_err(|_| s.err("bad media type"))?,
    );
    let resp = s
        .request(
            Method::PUT,
            s.url(&format!("manifests/{tag}")),
            h,
            Bytes::from(body),
        )
        .await?;
    if resp.status() != StatusCode::CREATED {
        let status = resp.status();
        let text = read_body(resp, 64 * 1024, &s.registry)
            .await
            .unwrap_or_default();
        return Err(s.err(format!(
            "put manifest: HTTP {status}: {}",
            String::from_utf8_lossy(&text).trim()
        )));
    }
    Ok(rec.manifest.clone())
}
