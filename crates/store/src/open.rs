//! Choosing a backend from the server's `--store` flag.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{Embedded, Error, Result, Store};

/// Client certificates for etcd (`--etcd-cafile`, `--etcd-certfile`, `--etcd-keyfile`).
#[derive(Clone, Debug, Default)]
pub struct EtcdTls {
    /// CA bundle that signed etcd's serving certificate.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM).
    pub key_file: Option<PathBuf>,
}

/// The file the embedded store keeps in a data dir.
pub const EMBEDDED_FILE: &str = "store.redb";

/// What a `--store` URL names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Embedded,
    Etcd {
        endpoints: Vec<String>,
        prefix: String,
        /// `etcds://`: TLS is required, never plain text.
        tls: bool,
    },
}

pub(crate) fn parse(url: &str) -> Result<Target> {
    let bad = |why: &str| Error::Unavailable(format!("bad store URL {url:?}: {why}"));
    if url == "embedded" || url == "embedded://" {
        return Ok(Target::Embedded);
    }
    let tls = url.starts_with("etcds://");
    let Some(rest) = url
        .strip_prefix("etcd://")
        .or_else(|| url.strip_prefix("etcds://"))
    else {
        return Err(bad(
            "use `embedded` or `etcd://HOST:PORT[,HOST:PORT…][/prefix]`",
        ));
    };
    let (hosts, prefix) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let endpoints: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(str::to_owned)
        .collect();
    if endpoints.is_empty() {
        return Err(bad("no etcd endpoint"));
    }
    for e in &endpoints {
        let port_ok = e
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
        if !port_ok {
            return Err(bad(&format!("endpoint {e:?} is not HOST:PORT")));
        }
    }
    // Each cluster's keys live under its own prefix; `/registry/…` keys are appended
    // to it. No trailing slash, so `/c1` and `/c1/` name the same place.
    let prefix = prefix.trim_end_matches('/').to_owned();
    Ok(Target::Etcd {
        endpoints,
        prefix,
        tls,
    })
}

/// Opens the store a `--store` URL names: `embedded` (the file `DATA_DIR/store.redb`) or
/// `etcd://HOST:PORT[,HOST:PORT…][/prefix]`; `etcds://…` refuses to connect without TLS
/// settings rather than falling back to plain text.
pub async fn open(url: &str, data_dir: &Path, tls: Option<EtcdTls>) -> Result<Arc<dyn Store>> {
    match parse(url)? {
        Target::Embedded => {
            let path = data_dir.join(EMBEDDED_FILE);
            let store = tokio::task::spawn_blocking(move || Embedded::open(&path))
                .await
                .map_err(|e| Error::Unavailable(format!("opening the store failed: {e}")))??;
            Ok(Arc::new(store))
        }
        Target::Etcd {
            endpoints,
            prefix,
            tls: tls_required,
        } => {
            if tls_required && tls.as_ref().is_none_or(|t| t.ca_file.is_none()) {
                return Err(Error::Unavailable(format!(
                    "{url}: etcds:// requires TLS settings (--etcd-cafile, and --etcd-certfile/--etcd-keyfile for a client certificate); refusing to connect in plain text"
                )));
            }
            let store = crate::Etcd::connect(crate::EtcdOptions {
                endpoints,
                prefix,
                tls,
                ..Default::default()
            })
            .await?;
            Ok(Arc::new(store))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(parse("embedded").unwrap(), Target::Embedded);
        assert_eq!(
            parse("etcd://127.0.0.1:2379").unwrap(),
            Target::Etcd {
                endpoints: vec!["127.0.0.1:2379".into()],
                prefix: "".into(),
                tls: false,
            }
        );
        assert_eq!(
            parse("etcd://a:1,b:2/c1/").unwrap(),
            Target::Etcd {
                endpoints: vec!["a:1".into(), "b:2".into()],
                prefix: "/c1".into(),
                tls: false,
            }
        );
        assert!(matches!(
            parse("etcds://a:1").unwrap(),
            Target::Etcd { tls: true, .. }
        ));
        for bad in [
            "",
            "etcd://",
            "etcd://host",
            "etcd://h:x",
            "mysql://x",
            "etcd:///p",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn etcds_without_tls_settings_is_refused_not_plain_text() {
        let d = tempfile::tempdir().unwrap();
        for tls in [None, Some(EtcdTls::default())] {
            match open("etcds://127.0.0.1:1", d.path(), tls).await {
                Err(Error::Unavailable(m)) => assert!(m.contains("requires TLS"), "{m}"),
                Err(e) => panic!("{e}"),
                Ok(_) => panic!("connected without TLS"),
            }
        }
    }
}
