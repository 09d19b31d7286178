//! Name syntaxes Kubernetes uses (`k8s.io/apimachinery/pkg/util/validation`),
//! each returning Kubernetes' own messages (empty when the name is fine).

const DNS1123_LABEL_MAX: usize = 63;
const DNS1123_SUBDOMAIN_MAX: usize = 253;
const QUALIFIED_NAME_MAX: usize = 63;
const LABEL_VALUE_MAX: usize = 63;

const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const CONFIG_KEY_MSG: &str = "a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')";

/// How a kind's names are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain (most kinds).
    Dns1123Subdomain,
    /// RFC 1123 label (namespaces, h8s networks).
    Dns1123Label,
    /// RFC 1035 label (services).
    Dns1035Label,
    /// Any path segment (RBAC, persistent volumes and claims).
    PathSegment,
}

impl NameRule {
    /// Checks a name, or a generateName prefix when `prefix` is true (a
    /// trailing dash is then allowed, as the random suffix follows it).
    pub fn check(self, name: &str, prefix: bool) -> Vec<String> {
        let n = if prefix {
            name.strip_suffix('-').unwrap_or(name)
        } else {
            name
        };
        match self {
            Self::Dns1123Subdomain => dns1123_subdomain(n),
            Self::Dns1123Label => dns1123_label(n),
            Self::Dns1035Label => dns1035_label(n),
            Self::PathSegment => path_segment(name, prefix),
        }
    }
}

fn max_len_msg(max: usize) -> String {
    format!("must be no more than {max} characters")
}

fn is_lower_alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

fn label_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && is_lower_alnum(b[0])
        && is_lower_alnum(b[b.len() - 1])
        && b.iter().all(|&c| is_lower_alnum(c) || c == b'-')
}

/// RFC 1123 label: at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn dns1123_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        out.push(max_len_msg(DNS1123_LABEL_MAX));
    }
    if !label_ok(s) {
        out.push(DNS1123_LABEL_MSG.to_string());
    }
    out
}

/// RFC 1123 subdomain: dot-separated labels, at most 253 characters.
pub fn dns1123_subdomain(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        out.push(max_len_msg(DNS1123_SUBDOMAIN_MAX));
    }
    if !s.split('.').all(label_ok) {
        out.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    out
}

/// RFC 1035 label: like an RFC 1123 label but starting with a letter.
pub fn dns1035_label(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_LABEL_MAX {
        out.push(max_len_msg(DNS1123_LABEL_MAX));
    }
    if !label_ok(s) || !s.as_bytes()[0].is_ascii_lowercase() {
        out.push(DNS1035_LABEL_MSG.to_string());
    }
    out
}

/// A name usable as one URL path segment.
pub fn path_segment(s: &str, prefix: bool) -> Vec<String> {
    let mut out = Vec::new();
    if !prefix && (s == "." || s == "..") {
        out.push(format!("may not be '{s}'"));
    }
    for bad in ["/", "%"] {
        if s.contains(bad) {
            out.push(format!("may not contain '{bad}'"));
        }
    }
    out
}

fn qualified_part_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A qualified name (`example.com/MyName` or `MyName`): label and
/// annotation keys, finalizers.
pub fn qualified_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                out.push("prefix part must be non-empty".to_string());
            } else {
                for m in dns1123_subdomain(prefix) {
                    out.push(format!("prefix part {m}"));
                }
            }
            *name
        }
        _ => {
            out.push(format!(
                "a qualified name {QUALIFIED_NAME_MSG} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
            ));
            return out;
        }
    };
    if name.is_empty() {
        out.push("name part must be non-empty".to_string());
    } else if name.len() > QUALIFIED_NAME_MAX {
        out.push(format!("name part {}", max_len_msg(QUALIFIED_NAME_MAX)));
    }
    if !name.is_empty() && !qualified_part_ok(name) {
        out.push(format!("name part {QUALIFIED_NAME_MSG}"));
    }
    out
}

/// A label value: empty, or up to 63 qualified-name characters.
pub fn label_value(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > LABEL_VALUE_MAX {
        out.push(max_len_msg(LABEL_VALUE_MAX));
    }
    if !s.is_empty() && !qualified_part_ok(s) {
        out.push(LABEL_VALUE_MSG.to_string());
    }
    out
}

/// A ConfigMap or Secret key.
pub fn config_map_key(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > DNS1123_SUBDOMAIN_MAX {
        out.push(max_len_msg(DNS1123_SUBDOMAIN_MAX));
    }
    if s.is_empty()
        || !s
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    {
        out.push(CONFIG_KEY_MSG.to_string());
    }
    if s == "." {
        out.push("must not be '.'".to_string());
    } else if s == ".." {
        out.push("must not be '..'".to_string());
    } else if s.starts_with("..") {
        out.push("must not start with '..'".to_string());
    }
    out
}

/// A C identifier-ish environment variable name (Kubernetes relaxed this to
/// any printable ASCII except `=`).
pub fn env_var_name(s: &str) -> Vec<String> {
    if s.is_empty() || !s.bytes().all(|c| (b' '..=b'~').contains(&c) && c != b'=') {
        vec!["a valid environment variable name must consist only of printable ASCII characters other than '='".to_string()]
    } else {
        Vec::new()
    }
}

/// An IANA service name (port names): at most 15 characters of `[a-z0-9-]`,
/// at least one letter, no leading, trailing or double dash.
pub fn port_name(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    if s.len() > 15 {
        out.push(max_len_msg(15));
    }
    if !s.bytes().all(|c| is_lower_alnum(c) || c == b'-') {
        out.push("must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)".into());
    }
    if s.contains("--") {
        out.push("must not contain consecutive hyphens".into());
    }
    if !s.bytes().any(|c| c.is_ascii_lowercase()) {
        out.push("must contain at least one letter (a-z)".into());
    }
    if s.starts_with('-') || s.ends_with('-') {
        out.push("must not begin or end with a hyphen".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_rules() {
        assert!(dns1123_label("my-name").is_empty());
        assert!(dns1123_label("123-abc").is_empty());
        assert_eq!(dns1123_label("My").len(), 1);
        assert_eq!(
            dns1123_label(&"a".repeat(64))[0],
            "must be no more than 63 characters"
        );
        assert!(dns1123_subdomain("example.com").is_empty());
        assert!(!dns1123_subdomain("a..b").is_empty());
        assert!(!dns1123_subdomain("").is_empty());
        assert!(dns1035_label("abc-1").is_empty());
        assert!(!dns1035_label("1abc").is_empty());
        assert!(path_segment("system:admin", false).is_empty());
        assert_eq!(path_segment("a/b", false), vec!["may not contain '/'"]);
        assert_eq!(path_segment("..", false), vec!["may not be '..'"]);
        assert!(NameRule::Dns1123Subdomain.check("web-", true).is_empty());
        assert!(!NameRule::Dns1123Subdomain.check("web-", false).is_empty());
    }

    #[test]
    fn qualified_names_and_values() {
        assert!(qualified_name("app").is_empty());
        assert!(qualified_name("kubernetes.io/role").is_empty());
        assert!(qualified_name("app.kubernetes.io/My_Name.x").is_empty());
        assert_eq!(qualified_name("a/b/c").len(), 1);
        assert!(qualified_name("Bad.Prefix/x")[0].starts_with("prefix part a lowercase"));
        assert_eq!(qualified_name("x/")[0], "name part must be non-empty");
        assert!(qualified_name("bad key")[0].starts_with("name part must consist"));
        assert!(label_value("").is_empty());
        assert!(label_value("v1.2_3").is_empty());
        assert!(!label_value("-x").is_empty());
        assert!(config_map_key("key.name").is_empty());
        assert!(!config_map_key("bad key").is_empty());
        assert!(!config_map_key("..x").is_empty());
        assert!(port_name("http").is_empty());
        assert!(!port_name("80").is_empty());
    }
}
