//! Image references with Docker's normalisation: `busybox` is
//! `docker.io/library/busybox:latest`; `localhost:5000/x:tag`; `name@sha256:…`.

use std::fmt;
use std::str::FromStr;

use super::{Digest, Error, Result};

/// The registry that a reference without a domain names.
pub const DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference. Display gives the full form
/// (`registry/repository[:tag][@digest]`); a reference with neither tag nor digest gets
/// `latest`, as Docker does.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// The registry host (and port): `docker.io`, `localhost:5000`.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry: `library/busybox`.
    pub fn repository(&self) -> &str {
        &self.repository
    }

    /// The tag, if any (`latest` when neither tag nor digest was given).
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if the reference pins one.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// `registry/repository`, without tag or digest.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The same repository with another tag and no digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        if !valid_tag(tag) {
            return Err(Error::InvalidReference(
                format!("{}:{tag}", self.name()),
                "bad tag",
            ));
        }
        Ok(Reference {
            tag: Some(tag.to_owned()),
            digest: None,
            ..self.clone()
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest when pinned, else the tag.
    pub(crate) fn manifest_ref(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => d.to_string(),
            (None, Some(t)) => t.clone(),
            (None, None) => "latest".to_owned(),
        }
    }
}

fn valid_tag(t: &str) -> bool {
    let b = t.as_bytes();
    !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// One path component: `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*`.
fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    if b.is_empty() || !is_alnum(b[0]) || !is_alnum(b[b.len() - 1]) {
        return false;
    }
    let mut i = 0;
    while i < b.len() {
        if is_alnum(b[i]) {
            i += 1;
            continue;
        }
        // A separator run: ".", "_", "__" or one or more "-".
        let start = i;
        while i < b.len() && !is_alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn is_alnum(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit()
}

fn valid_domain(d: &str) -> bool {
    // host[:port]; host may be a bracketed IPv6 literal.
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        match rest.split_once(']') {
            Some((h, p)) => (h, p.strip_prefix(':')),
            None => return false,
        }
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    if let Some(p) = port {
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err() {
            return false;
        }
    }
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(s: &str) -> Result<Reference> {
        let bad = |why| Error::InvalidReference(s.to_owned(), why);
        if s.is_empty() || s.len() > 512 {
            return Err(bad("empty or too long"));
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => (r, Some(d.parse::<Digest>().map_err(|_| bad("bad digest"))?)),
            None => (s, None),
        };
        // A tag follows the last ':' only if no '/' comes after it (else it is a port).
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i + 1..].contains('/') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        if let Some(t) = tag {
            if !valid_tag(t) {
                return Err(bad("bad tag"));
            }
        }
        let (mut registry, mut repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.')
                    || first.contains(':')
                    || first == "localhost"
                    || first.starts_with('[') =>
            {
                (first.to_owned(), remainder.to_owned())
            }
            _ => (DOCKER_HUB.to_owned(), name.to_owned()),
        };
        if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            registry = DOCKER_HUB.to_owned();
        }
        if !valid_domain(&registry) {
            return Err(bad("bad registry host"));
        }
        if registry == DOCKER_HUB && !repository.contains('/') {
            repository = format!("library/{repository}");
        }
        if repository.len() > 255 || !repository.split('/').all(valid_component) {
            return Err(bad(
                "repository must be lowercase letters, digits and separators",
            ));
        }
        let tag = match (tag, &digest) {
            (Some(t), _) => Some(t.to_owned()),
            (None, Some(_)) => None,
            (None, None) => Some("latest".to_owned()),
        };
        Ok(Reference {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        s.parse::<Reference>().unwrap().to_string()
    }

    #[test]
    fn docker_normalisation() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.36"), "docker.io/library/busybox:1.36");
        assert_eq!(norm("user/app"), "docker.io/user/app:latest");
        assert_eq!(
            norm("index.docker.io/library/alpine"),
            "docker.io/library/alpine:latest"
        );
        assert_eq!(norm("localhost:5000/x:tag"), "localhost:5000/x:tag");
        assert_eq!(norm("localhost/x"), "localhost/x:latest");
        assert_eq!(norm("quay.io/a/b/c:v1.0-rc_1"), "quay.io/a/b/c:v1.0-rc_1");
        assert_eq!(
            norm("127.0.0.1:5000/a__b.c--d"),
            "127.0.0.1:5000/a__b.c--d:latest"
        );
        assert_eq!(norm("[::1]:5000/x"), "[::1]:5000/x:latest");
        let d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        let r: Reference = format!("busybox@{d}").parse().unwrap();
        assert_eq!(r.to_string(), format!("docker.io/library/busybox@{d}"));
        assert_eq!(r.manifest_ref(), d);
        assert_eq!(r.tag(), None);
        let r: Reference = format!("localhost:5000/x:t@{d}").parse().unwrap();
        assert_eq!(r.registry(), "localhost:5000");
        assert_eq!(r.repository(), "x");
        assert_eq!(r.tag(), Some("t"));
        assert_eq!(r.manifest_ref(), d);
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:1234",
            "a//b",
            "a/../b",
            "-a",
            "a-",
            "a___b",
            "a..b",
            "localhost:abc/x",
            "localhost:70000/x",
            "busybox:tag with space",
            "busybox@md5:abcd",
        ] {
            assert!(
                bad.parse::<Reference>().is_err(),
                "{bad:?} should be rejected"
            );
        }
    }
}

#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any input: a value or an error, never a panic; what parses prints back to a
        /// string that parses to the same reference.
        #[test]
        fn parse_never_panics_and_round_trips(s in "\\PC{0,80}") {
            if let Ok(r) = s.parse::<Reference>() {
                let again: Reference = r.to_string().parse().unwrap();
                prop_assert_eq!(again, r);
            }
        }

        #[test]
        fn plausible_references_round_trip(
            host in prop::option::of("[a-z]{1,8}\\.[a-z]{2,3}(:[1-9][0-9]{0,3})?"),
            path in "[a-z0-9]{1,6}(/[a-z0-9]{1,6}){0,2}",
            tag in prop::option::of("[A-Za-z0-9_][A-Za-z0-9_.-]{0,10}"),
        ) {
            let mut s = host.clone().map(|h| format!("{h}/")).unwrap_or_default();
            s.push_str(&path);
            if let Some(t) = &tag {
                s.push(':');
                s.push_str(t);
            }
            let r: Reference = s.parse().unwrap();
            prop_assert_eq!(r.tag(), Some(tag.as_deref().unwrap_or("latest")));
            if let Some(h) = host {
                prop_assert_eq!(r.registry(), h.as_str());
                prop_assert_eq!(r.repository(), path.as_str());
            }
        }
    }
}
