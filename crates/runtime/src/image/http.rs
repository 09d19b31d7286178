//! A deliberately small HTTP/1.1 client for registries: hyper over TCP, with rustls
//! (ring, webpki roots) for https. One connection per request keeps it simple; a pull
//! makes only a handful of requests.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::{Error, Result};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Also the longest a body may stall between two chunks.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// An absolute URL, split the way a request needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Url {
    pub https: bool,
    /// `host[:port]` as written (IPv6 in brackets).
    pub authority: String,
    /// `/path?query`.
    pub path: String,
}

impl Url {
    pub(crate) fn parse(s: &str) -> Option<Url> {
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return None;
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        Some(Url {
            https,
            authority: authority.to_owned(),
            path,
        })
    }

    /// Resolves a `Location` header against this URL.
    pub(crate) fn join(&self, location: &str) -> Option<Url> {
        if location.starts_with("http://") || location.starts_with("https://") {
            Url::parse(location)
        } else if location.starts_with('/') {
            Some(Url {
                path: location.to_owned(),
                ..self.clone()
            })
        } else {
            None
        }
    }

    fn host_port(&self) -> (String, u16) {
        let default = if self.https { 443 } else { 80 };
        let a = &self.authority;
        if let Some(rest) = a.strip_prefix('[') {
            let (h, p) = rest.split_once(']').unwrap_or((rest, ""));
            (
                h.to_owned(),
                p.strip_prefix(':')
                    .and_then(|p| p.parse().ok())
                    .unwrap_or(default),
            )
        } else {
            match a.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().unwrap_or(default)),
                None => (a.clone(), default),
            }
        }
    }

    pub(crate) fn is_loopback(&self) -> bool {
        let (host, _) = self.host_port();
        is_loopback_host(&host)
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority,
            self.path
        )
    }
}

pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Loopback, link-local (cloud metadata at 169.254.169.254) and unspecified addresses: the
/// node's own services, which an image reference must not reach unless configured.
pub(crate) fn is_local_addr(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || a.is_unspecified(),
        IpAddr::V6(a) => {
            a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

#[derive(Clone)]
pub(crate) struct Client {
    tls: Arc<rustls::ClientConfig>,
    allow_local: bool,
}

impl Client {
    /// A client that connects to local addresses (see [`is_local_addr`]) only if `allow_local`.
    pub(crate) fn new(allow_local: bool) -> Result<Client> {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Io {
            context: "tls config".into(),
            source: std::io::Error::other(e),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
        Ok(Client {
            tls: Arc::new(tls),
            allow_local,
        })
    }

    /// Sends one request on a fresh connection.
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &HeaderMap,
        body: Bytes,
    ) -> Result<Response<Incoming>> {
        let err = |m: String| Error::Registry {
            registry: url.authority.clone(),
            message: m,
        };
        // The registry could not be reached at all (name or connection): nothing was said by it.
        let unreachable = |m: String| Error::Unreachable {
            registry: url.authority.clone(),
            message: m,
        };
        let (host, port) = url.host_port();
        // Resolve first and connect to a checked address, so neither a name nor a redirect
        // leads to the node's own services.
        let addrs: Vec<std::net::SocketAddr> = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port)),
        )
        .await
        .map_err(|_| unreachable("name resolution timed out".into()))?
        .map_err(|e| unreachable(format!("resolve {host}: {e}")))?
        .collect();
        let allowed: Vec<_> = addrs
            .iter()
            .copied()
            .filter(|a| self.allow_local || !is_local_addr(a.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(err(match addrs.first() {
                Some(a) => format!(
                    "refusing to connect to local address {} (pulls from loopback or \
                     link-local registries must be allowed by configuration)",
                    a.ip()
                ),
                None => format!("{host} resolves to no address"),
            }));
        }
        let tcp = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&allowed[..]),
        )
        .await
        .map_err(|_| unreachable("connect timed out".into()))?
        .map_err(|e| unreachable(format!("connect: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let mut sender = if url.https {
            let name = rustls::pki_types::ServerName::try_from(host.clone())
                .map_err(|e| err(format!("bad server name: {e}")))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| err(format!("tls: {e}")))?;
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
                .await
                .map_err(|e| err(format!("http: {e}")))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            sender
        } else {
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| err(format!("http: {e}")))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            sender
        };
        let mut req = Request::builder().method(method).uri(url.path.as_str());
        {
            let h = req.headers_mut().expect("valid builder");
            h.insert(
                http::header::HOST,
                HeaderValue::from_str(&url.authority).map_err(|e| err(e.to_string()))?,
            );
            h.insert(
                http::header::USER_AGENT,
                HeaderValue::from_static("h8s/0.1"),
            );
            h.insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            for (k, v) in headers {
                h.insert(k, v.clone());
            }
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| err(format!("request: {e}")))?;
        tokio::time::timeout(READ_TIMEOUT, sender.send_request(req))
            .await
            .map_err(|_| err("no response in time".into()))?
            .map_err(|e| err(format!("http: {e}")))
    }
}

/// Reads a whole (small) body, refusing more than `limit` bytes.
pub(crate) async fn read_body(
    resp: Response<Incoming>,
    limit: usize,
    registry: &str,
) -> Result<Bytes> {
    let err = |m: String| Error::Registry {
        registry: registry.to_owned(),
        message: m,
    };
    let mut body = resp.into_body();
    let mut out = Vec::new();
    while let Some(frame) = tokio::time::timeout(READ_TIMEOUT, body.frame())
        .await
        .map_err(|_| err("body stalled".into()))?
    {
        let frame = frame.map_err(|e| err(format!("read body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(err(format!("response larger than {limit} bytes")));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(out))
}

/// One `WWW-Authenticate` challenge: scheme and parameters.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Challenge {
    pub scheme: String,
    pub params: Vec<(String, String)>,
}

impl Challenge {
    pub(crate) fn param(&self, k: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(k))
            .map(|(_, v)| v.as_str())
    }

    /// Parses `Bearer realm="…",service="…",scope="a:b:pull,push"` (quoted values may
    /// hold commas).
    pub(crate) fn parse(h: &str) -> Option<Challenge> {
        let h = h.trim();
        let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
        let mut params = Vec::new();
        let mut chars = rest.chars().peekable();
        loop {
            while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
                chars.next();
            }
            let mut key = String::new();
            while let Some(&c) = chars.peek() {
                if c == '=' {
                    break;
                }
                key.push(c);
                chars.next();
            }
            if key.is_empty() {
                break;
            }
            if chars.next() != Some('=') {
                return None;
            }
            let mut val = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        Some('\\') => val.extend(chars.next()),
                        Some('"') => break,
                        Some(c) => val.push(c),
                        None => return None,
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    val.push(c);
                    chars.next();
                }
            }
            params.push((key.trim().to_owned(), val.trim().to_owned()));
        }
        Some(Challenge {
            scheme: scheme.to_owned(),
            params,
        })
    }
}

/// Percent-encodes a query value.
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':' | b'/' | b',')
        {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let c = Challenge::parse(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(c.scheme, "Bearer");
        assert_eq!(c.param("realm"), Some("https://auth.docker.io/token"));
        assert_eq!(c.param("service"), Some("registry.docker.io"));
        assert_eq!(
            c.param("scope"),
            Some("repository:library/busybox:pull,push")
        );
        let b = Challenge::parse(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(b.scheme, "Basic");
        assert_eq!(b.param("REALM"), Some("Registry Realm"));
        assert!(Challenge::parse(r#"Bearer realm="unterminated"#).is_none());
    }

    #[test]
    fn urls() {
        let u = Url::parse("https://r.example:8443/v2/x/blobs/uploads/abc?_state=1").unwrap();
        assert!(u.https);
        assert_eq!(u.authority, "r.example:8443");
        assert_eq!(u.path, "/v2/x/blobs/uploads/abc?_state=1");
        assert_eq!(u.host_port(), ("r.example".into(), 8443));
        assert_eq!(
            u.join("/v2/y").unwrap().to_string(),
            "https://r.example:8443/v2/y"
        );
        assert_eq!(
            u.join("http://127.0.0.1/z").unwrap().to_string(),
            "http://127.0.0.1/z"
        );
        assert_eq!(
            Url::parse("http://[::1]:5000").unwrap().host_port(),
            ("::1".into(), 5000)
        );
        assert!(Url::parse("http://[::1]:5000/").unwrap().is_loopback());
        assert!(Url::parse("http://localhost/").unwrap().is_loopback());
        assert!(Url::parse("http://127.0.0.9:80/").unwrap().is_loopback());
        assert!(!Url::parse("http://10.0.0.1/").unwrap().is_loopback());
        for local in [
            "127.0.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_local_addr(local.parse().unwrap()), "{local}");
        }
        for remote in ["10.0.0.1", "8.8.8.8", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert!(!is_local_addr(remote.parse().unwrap()), "{remote}");
        }
        assert!(Url::parse("http://user@evil/").is_none());
        assert!(Url::parse("ftp://x/").is_none());
        assert_eq!(
            encode("repository:a/b:pull push&"),
            "repository:a/b:pull%20push%26"
        );
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Registry-controlled headers and redirect targets never panic the parsers.
        #[test]
        fn header_parsers_never_panic(s in "\\PC{0,120}") {
            let _ = Challenge::parse(&s);
            if let Some(u) = Url::parse(&s) {
                let _ = u.host_port();
                let _ = u.is_loopback();
                let _ = u.join(&s);
            }
        }
    }
}
