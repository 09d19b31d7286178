//! `admissionregistration.k8s.io/v1`: ValidatingWebhookConfiguration,
//! MutatingWebhookConfiguration, ValidatingAdmissionPolicy and its binding, with
//! kube-apiserver's rules and wording (`pkg/apis/admissionregistration/validation`).
//!
//! CEL expressions (matchConditions, validations, variables) are checked for form here;
//! whether they compile is the API server's check (it holds the CEL environment).

use super::*;

/// The AdmissionReview versions h8s sends. kube-apiserver also speaks `v1beta1`; h8s
/// speaks only `v1`, so a configuration must list it.
pub const ADMISSION_REVIEW_VERSIONS: &[&str] = &["v1"];
/// Most match conditions per webhook or policy.
pub const MAX_MATCH_CONDITIONS: usize = 64;

/// A webhook configuration; `mutating` adds `reinvocationPolicy`.
pub(super) fn webhook_configuration(obj: &Value, mutating: bool, e: &mut FieldErrors) {
    let mut seen = std::collections::HashSet::new();
    for (i, w) in arr(obj, "/webhooks").iter().enumerate() {
        let p = format!("webhooks[{i}]");
        let name = str_at(w, "/name").unwrap_or_default();
        if name.is_empty() {
            e.push(FieldError::required(format!("{p}.name"), ""));
        } else {
            for m in fully_qualified_name(name) {
                e.push(FieldError::invalid(format!("{p}.name"), name, &m));
            }
            if !seen.insert(name) {
                e.push(FieldError::duplicate(format!("{p}.name"), name));
            }
        }
        for (j, r) in arr(w, "/rules").iter().enumerate() {
            rule_with_operations(r, &format!("{p}.rules[{j}]"), e);
        }
        client_config(w.get("clientConfig"), &format!("{p}.clientConfig"), e);
        match str_at(w, "/sideEffects") {
            None | Some("") => e.push(FieldError::required(
                format!("{p}.sideEffects"),
                "must specify one of None, NoneOnDryRun",
            )),
            Some(s) => one_of(e, &format!("{p}.sideEffects"), s, &["None", "NoneOnDryRun"]),
        }
        let versions = string_list(w.get("admissionReviewVersions"));
        if versions.is_empty() {
            e.push(FieldError::required(
                format!("{p}.admissionReviewVersions"),
                "must specify one of v1",
            ));
        } else {
            let mut dup = std::collections::HashSet::new();
            for (k, v) in versions.iter().enumerate() {
                if !dup.insert(*v) {
                    e.push(FieldError::duplicate(
                        format!("{p}.admissionReviewVersions[{k}]"),
                        *v,
                    ));
                }
            }
            if !versions
                .iter()
                .any(|v| ADMISSION_REVIEW_VERSIONS.contains(v))
            {
                e.push(FieldError::invalid(
                    format!("{p}.admissionReviewVersions"),
                    json!(versions),
                    "must include at least one of v1",
                ));
            }
        }
        if let Some(t) = w.get("timeoutSeconds").filter(|v| !v.is_null()) {
            match t.as_i64() {
                Some(n) if (1..=30).contains(&n) => {}
                _ => e.push(FieldError::invalid(
                    format!("{p}.timeoutSeconds"),
                    t.clone(),
                    "the timeout value must be between 1 and 30 seconds",
                )),
            }
        }
        if let Some(f) = str_at(w, "/failurePolicy") {
            one_of(e, &format!("{p}.failurePolicy"), f, &["Fail", "Ignore"]);
        }
        if let Some(m) = str_at(w, "/matchPolicy") {
            one_of(e, &format!("{p}.matchPolicy"), m, &["Equivalent", "Exact"]);
        }
        if mutating {
            if let Some(r) = str_at(w, "/reinvocationPolicy") {
                one_of(
                    e,
                    &format!("{p}.reinvocationPolicy"),
                    r,
                    &["IfNeeded", "Never"],
                );
            }
        }
        for sel in ["namespaceSelector", "objectSelector"] {
            if let Some(s) = w.get(sel).filter(|v| v.is_object()) {
                label_selector(s, &format!("{p}.{sel}"), e);
            }
        }
        match_conditions(w, &p, e);
    }
}

/// `matchConditions`: unique qualified names, an expression each, at most 64.
fn match_conditions(owner: &Value, path: &str, e: &mut FieldErrors) {
    let list = arr(owner, "/matchConditions");
    if list.len() > MAX_MATCH_CONDITIONS {
        e.push(FieldError::too_many(
            format!("{path}.matchConditions"),
            list.len(),
            MAX_MATCH_CONDITIONS,
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in list.iter().enumerate() {
        let p = format!("{path}.matchConditions[{i}]");
        let name = str_at(c, "/name").unwrap_or_default();
        if name.is_empty() {
            e.push(FieldError::required(format!("{p}.name"), ""));
        } else {
            for m in names::qualified_name(name) {
                e.push(FieldError::invalid(format!("{p}.name"), name, &m));
            }
            if !seen.insert(name) {
                e.push(FieldError::duplicate(format!("{p}.name"), name));
            }
        }
        if nonempty_str(c, "/expression").is_none() {
            e.push(FieldError::required(format!("{p}.expression"), ""));
        }
    }
}

/// kube's `IsFullyQualifiedName`: a DNS subdomain of at least three labels.
fn fully_qualified_name(s: &str) -> Vec<String> {
    let errs = names::dns1123_subdomain(s);
    if !errs.is_empty() {
        return errs;
    }
    if s.split('.').count() < 3 {
        return vec!["should be a domain with at least three segments separated by dots".into()];
    }
    Vec::new()
}

/// A `RuleWithOperations` (webhooks) or `NamedRuleWithOperations` (policies).
fn rule_with_operations(r: &Value, path: &str, e: &mut FieldErrors) {
    let ops = string_list(r.get("operations"));
    if ops.is_empty() {
        e.push(FieldError::required(format!("{path}.operations"), ""));
    }
    if ops.len() > 1 && ops.contains(&"*") {
        e.push(FieldError::invalid(
            format!("{path}.operations"),
            json!(ops),
            "if '*' is present, must not specify other operations",
        ));
    }
    for (i, op) in ops.iter().enumerate() {
        one_of(
            e,
            &format!("{path}.operations[{i}]"),
            op,
            &["*", "CONNECT", "CREATE", "DELETE", "UPDATE"],
        );
    }
    for field in ["apiGroups", "apiVersions"] {
        let list = string_list(r.get(field));
        if list.is_empty() {
            e.push(FieldError::required(format!("{path}.{field}"), ""));
        }
        if list.len() > 1 && list.contains(&"*") {
            e.push(FieldError::invalid(
                format!("{path}.{field}"),
                json!(list),
                "if '*' is present, must not specify other API groups",
            ));
        }
    }
    for (i, v) in string_list(r.get("apiVersions")).iter().enumerate() {
        if v.is_empty() {
            e.push(FieldError::required(format!("{path}.apiVersions[{i}]"), ""));
        }
    }
    let resources = string_list(r.get("resources"));
    if resources.is_empty() {
        e.push(FieldError::required(format!("{path}.resources"), ""));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, res) in resources.iter().enumerate() {
        let p = format!("{path}.resources[{i}]");
        if res.is_empty() {
            e.push(FieldError::required(p.clone(), ""));
            continue;
        }
        let (main, sub) = res.split_once('/').unwrap_or((res, ""));
        if res.matches('/').count() > 1 || main.is_empty() || (res.contains('/') && sub.is_empty())
        {
            e.push(FieldError::invalid(
                p.clone(),
                *res,
                "must be of the form 'resource', 'resource/subresource', '*', '*/subresource' or 'resource/*'",
            ));
        }
        if !seen.insert(*res) {
            e.push(FieldError::duplicate(p, *res));
        }
    }
    if resources.len() > 1 && resources.contains(&"*") {
        e.push(FieldError::invalid(
            format!("{path}.resources"),
            json!(resources),
            "if '*' is present, must not specify other resources without subresources",
        ));
    }
    if let Some(s) = str_at(r, "/scope") {
        one_of(
            e,
            &format!("{path}.scope"),
            s,
            &["*", "Cluster", "Namespaced"],
        );
    }
}

/// `clientConfig`: exactly one of `url` (https, a host, no user, query or fragment) and
/// `service` (name, namespace, a port, a path starting with `/`).
fn client_config(cc: Option<&Value>, path: &str, e: &mut FieldErrors) {
    let cc = cc.cloned().unwrap_or(Value::Null);
    let url = cc.get("url").filter(|v| !v.is_null());
    let svc = cc.get("service").filter(|v| !v.is_null());
    match (url, svc) {
        (Some(_), Some(_)) | (None, None) => e.push(FieldError::required(
            path,
            "exactly one of url or service is required",
        )),
        (Some(u), None) => webhook_url(u.as_str().unwrap_or_default(), &format!("{path}.url"), e),
        (None, Some(s)) => {
            let p = format!("{path}.service");
            for f in ["name", "namespace"] {
                match nonempty_str(s, &format!("/{f}")) {
                    None => e.push(FieldError::required(format!("{p}.{f}"), "")),
                    Some(v) => name_with(e, &format!("{p}.{f}"), v, names::dns1123_label),
                }
            }
            if let Some(port) = s.get("port").and_then(Value::as_i64) {
                port_range(e, &format!("{p}.port"), port);
            }
            if let Some(path_s) = nonempty_str(s, "/path") {
                if !path_s.starts_with('/') {
                    e.push(FieldError::invalid(
                        format!("{p}.path"),
                        path_s,
                        "must start with a '/'",
                    ));
                }
            }
        }
    }
    if let Some(ca) = nonempty_str(&cc, "/caBundle") {
        use base64::Engine as _;
        if base64::engine::general_purpose::STANDARD
            .decode(ca)
            .is_err()
        {
            e.push(FieldError::invalid(
                format!("{path}.caBundle"),
                "<bytes>",
                "must be base64",
            ));
        }
    }
}

/// kube's `ValidateWebhookURL(…, forceHttps=true)`.
fn webhook_url(u: &str, path: &str, e: &mut FieldErrors) {
    let Some((scheme, rest)) = u.split_once("://") else {
        e.push(FieldError::invalid(path, u, "host must be specified"));
        return;
    };
    if scheme != "https" {
        e.push(FieldError::not_supported(path, scheme, &["https"]));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        e.push(FieldError::invalid(
            path,
            authority.split('@').next().unwrap_or_default(),
            "user information is not permitted in the URL",
        ));
    }
    let host = authority.rsplit('@').next().unwrap_or_default();
    if host.is_empty() {
        e.push(FieldError::invalid(path, host, "host must be specified"));
    }
    if rest.contains('#') {
        e.push(FieldError::invalid(
            path,
            rest.split_once('#').map(|x| x.1).unwrap_or_default(),
            "fragments are not permitted in the URL",
        ));
    }
    if let Some((_, q)) = rest.split('#').next().unwrap_or_default().split_once('?') {
        e.push(FieldError::invalid(
            path,
            q,
            "query parameters are not permitted in the URL",
        ));
    }
}

/// `matchConstraints` / `matchResources`: selectors, match policy and rules.
fn match_resources(m: &Value, path: &str, required: bool, e: &mut FieldErrors) {
    if !m.is_object() {
        if required {
            e.push(FieldError::required(path, ""));
        }
        return;
    }
    for sel in ["namespaceSelector", "objectSelector"] {
        if let Some(s) = m.get(sel).filter(|v| v.is_object()) {
            label_selector(s, &format!("{path}.{sel}"), e);
        }
    }
    if let Some(p) = str_at(m, "/matchPolicy") {
        one_of(
            e,
            &format!("{path}.matchPolicy"),
            p,
            &["Equivalent", "Exact"],
        );
    }
    let rules = arr(m, "/resourceRules");
    if required && rules.is_empty() {
        e.push(FieldError::required(format!("{path}.resourceRules"), ""));
    }
    for (i, r) in rules.iter().enumerate() {
        rule_with_operations(r, &format!("{path}.resourceRules[{i}]"), e);
    }
    for (i, r) in arr(m, "/excludeResourceRules").iter().enumerate() {
        rule_with_operations(r, &format!("{path}.excludeResourceRules[{i}]"), e);
    }
}

/// A ValidatingAdmissionPolicy.
pub(super) fn validating_admission_policy(obj: &Value, e: &mut FieldErrors) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match_resources(
        spec.get("matchConstraints").unwrap_or(&Value::Null),
        "spec.matchConstraints",
        true,
        e,
    );
    if let Some(pk) = spec.get("paramKind").filter(|v| v.is_object()) {
        for f in ["apiVersion", "kind"] {
            if nonempty_str(pk, &format!("/{f}")).is_none() {
                e.push(FieldError::required(format!("spec.paramKind.{f}"), ""));
            }
        }
    }
    if let Some(f) = str_at(&spec, "/failurePolicy") {
        one_of(e, "spec.failurePolicy", f, &["Fail", "Ignore"]);
    }
    let validations = arr(&spec, "/validations");
    let audit = arr(&spec, "/auditAnnotations");
    if validations.is_empty() && audit.is_empty() {
        e.push(FieldError::required(
            "spec.validations",
            "validations or auditAnnotations must contain at least one item",
        ));
    }
    for (i, v) in validations.iter().enumerate() {
        let p = format!("spec.validations[{i}]");
        if nonempty_str(v, "/expression").is_none() {
            e.push(FieldError::required(format!("{p}.expression"), ""));
        }
        if let Some(m) = str_at(v, "/message") {
            if m.contains('\n') {
                e.push(FieldError::invalid(
                    format!("{p}.message"),
                    m,
                    "message must not contain line breaks",
                ));
            }
        }
        if let Some(r) = str_at(v, "/reason") {
            one_of(
                e,
                &format!("{p}.reason"),
                r,
                &[
                    "Unauthorized",
                    "Forbidden",
                    "Invalid",
                    "RequestEntityTooLarge",
                ],
            );
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, v) in arr(&spec, "/variables").iter().enumerate() {
        let p = format!("spec.variables[{i}]");
        let name = str_at(v, "/name").unwrap_or_default();
        if name.is_empty() {
            e.push(FieldError::required(format!("{p}.name"), ""));
        } else {
            let ident = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !ident {
                e.push(FieldError::invalid(
                    format!("{p}.name"),
                    name,
                    "name is not a valid CEL identifier",
                ));
            }
            if !seen.insert(name) {
                e.push(FieldError::duplicate(format!("{p}.name"), name));
            }
        }
        if nonempty_str(v, "/expression").is_none() {
            e.push(FieldError::required(format!("{p}.expression"), ""));
        }
    }
    match_conditions(&spec, "spec", e);
}

/// A ValidatingAdmissionPolicyBinding.
pub(super) fn validating_admission_policy_binding(obj: &Value, e: &mut FieldErrors) {
    let spec = obj.get("spec").cloned().unwrap_or(Value::Null);
    match nonempty_str(&spec, "/policyName") {
        None => e.push(FieldError::required("spec.policyName", "")),
        Some(n) => name_with(e, "spec.policyName", n, dns_subdomain),
    }
    let actions = string_list(spec.get("validationActions"));
    if actions.is_empty() {
        e.push(FieldError::required("spec.validationActions", ""));
    }
    let mut seen = std::collections::HashSet::new();
    for (i, a) in actions.iter().enumerate() {
        let p = format!("spec.validationActions[{i}]");
        one_of(e, &p, a, &["Audit", "Deny", "Warn"]);
        if !seen.insert(*a) {
            e.push(FieldError::duplicate(p, *a));
        }
    }
    if actions.contains(&"Deny") && actions.contains(&"Warn") {
        e.push(FieldError::invalid(
            "spec.validationActions",
            json!(actions),
            "must not contain both Deny and Warn (repeating the same validation failure information in the API response and headers serves no purpose)",
        ));
    }
    if let Some(pr) = spec.get("paramRef").filter(|v| v.is_object()) {
        let name = nonempty_str(pr, "/name");
        let selector = pr.get("selector").filter(|v| v.is_object());
        if name.is_some() == selector.is_some() {
            e.push(FieldError::forbidden(
                "spec.paramRef",
                "one of name or selector must be specified",
            ));
        }
        if let Some(a) = str_at(pr, "/parameterNotFoundAction") {
            one_of(
                e,
                "spec.paramRef.parameterNotFoundAction",
                a,
                &["Allow", "Deny"],
            );
        } else {
            e.push(FieldError::required(
                "spec.paramRef.parameterNotFoundAction",
                "",
            ));
        }
    }
    if let Some(m) = spec.get("matchResources") {
        match_resources(m, "spec.matchResources", false, e);
    }
}

#[cfg(test)]
mod tests {
    use crate::resources::find;
    use crate::validation::validate_create;
    use serde_json::{json, Value};

    fn errors(plural: &str, mut o: Value) -> Vec<String> {
        let r = find("admissionregistration.k8s.io", "v1", plural).unwrap();
        crate::defaults::apply(r, &mut o);
        match validate_create(r, &o) {
            Ok(()) => Vec::new(),
            Err(e) => e.iter().map(|e| e.to_string()).collect(),
        }
    }

    fn webhook(extra: Value) -> Value {
        let mut w = json!({"name": "a.b.c", "clientConfig": {"url": "https://h:1/p"},
            "sideEffects": "None", "admissionReviewVersions": ["v1"],
            "rules": [{"operations": ["CREATE"], "apiGroups": [""], "apiVersions": ["v1"],
                "resources": ["pods", "pods/status"]}]});
        for (k, v) in extra.as_object().unwrap() {
            w[k] = v.clone();
        }
        json!({"metadata": {"name": "c"}, "webhooks": [w]})
    }

    #[test]
    fn webhook_configurations_as_kube_apiserver_checks_them() {
        let vwc = "validatingwebhookconfigurations";
        assert_eq!(errors(vwc, webhook(json!({}))), Vec::<String>::new());
        let cases = [
            (json!({"clientConfig": {"url": "http://h/p"}}),
             r#"webhooks[0].clientConfig.url: Unsupported value: "http": supported values: "https""#),
            (json!({"clientConfig": {"url": "https://u@h/p"}}),
             "user information is not permitted in the URL"),
            (json!({"clientConfig": {"url": "https://h/p?x=1"}}),
             "query parameters are not permitted in the URL"),
            (json!({"clientConfig": {}}),
             "webhooks[0].clientConfig: Required value: exactly one of url or service is required"),
            (json!({"clientConfig": {"service": {"name": "s"}}}),
             "webhooks[0].clientConfig.service.namespace: Required value"),
            (json!({"sideEffects": "Unknown"}), r#"webhooks[0].sideEffects: Unsupported value: "Unknown""#),
            (json!({"admissionReviewVersions": []}),
             "webhooks[0].admissionReviewVersions: Required value"),
            (json!({"timeoutSeconds": 0}),
             "webhooks[0].timeoutSeconds: Invalid value: 0: the timeout value must be between 1 and 30 seconds"),
            (json!({"name": "two.parts"}),
             "should be a domain with at least three segments separated by dots"),
            (json!({"rules": [{"operations": ["CREATE", "*"], "apiGroups": [""],
                "apiVersions": ["v1"], "resources": ["pods"]}]}),
             "if '*' is present, must not specify other operations"),
            (json!({"rules": [{"operations": ["PATCH"], "apiGroups": [""],
                "apiVersions": ["v1"], "resources": ["pods"]}]}),
             r#"webhooks[0].rules[0].operations[0]: Unsupported value: "PATCH""#),
            (json!({"rules": [{"operations": ["CREATE"], "apiGroups": [""],
                "apiVersions": ["v1"], "resources": ["a/b/c"]}]}),
             "webhooks[0].rules[0].resources[0]: Invalid value"),
            (json!({"matchPolicy": "Loose"}), r#"webhooks[0].matchPolicy: Unsupported value: "Loose""#),
            (json!({"namespaceSelector": {"matchExpressions": [{"key": "k", "operator": "In"}]}}),
             "webhooks[0].namespaceSelector.matchExpressions[0].values: Required value"),
        ];
        for (extra, want) in cases {
            let errs = errors(vwc, webhook(extra.clone()));
            assert!(errs.iter().any(|e| e.contains(want)), "{extra}: {errs:?}");
        }
        // Duplicate names; reinvocationPolicy only on mutating ones.
        let mut two = webhook(json!({}));
        let w = two["webhooks"][0].clone();
        two["webhooks"].as_array_mut().unwrap().push(w);
        assert!(errors(vwc, two)
            .iter()
            .any(|e| e.contains(r#"webhooks[1].name: Duplicate value: "a.b.c""#)));
        let errs = errors(
            "mutatingwebhookconfigurations",
            webhook(json!({"reinvocationPolicy": "Always"})),
        );
        assert!(
            errs.iter().any(|e| e.contains("reinvocationPolicy")),
            "{errs:?}"
        );
    }

    #[test]
    fn webhook_defaults() {
        let r = find(
            "admissionregistration.k8s.io",
            "v1",
            "mutatingwebhookconfigurations",
        )
        .unwrap();
        let mut o = webhook(json!({"clientConfig": {"service": {"name": "s", "namespace": "n"}}}));
        crate::defaults::apply(r, &mut o);
        let w = &o["webhooks"][0];
        assert_eq!(w["failurePolicy"], "Fail");
        assert_eq!(w["matchPolicy"], "Equivalent");
        assert_eq!(w["timeoutSeconds"], 10);
        assert_eq!(w["reinvocationPolicy"], "Never");
        assert_eq!(w["namespaceSelector"], json!({}));
        assert_eq!(w["rules"][0]["scope"], "*");
        assert_eq!(w["clientConfig"]["service"]["port"], 443);
    }

    #[test]
    fn policies_and_bindings() {
        let ok = json!({"metadata": {"name": "p"}, "spec": {
            "matchConstraints": {"resourceRules": [{"operations": ["CREATE"], "apiGroups": [""],
                "apiVersions": ["v1"], "resources": ["pods"]}]},
            "validations": [{"expression": "true"}]}});
        assert_eq!(
            errors("validatingadmissionpolicies", ok),
            Vec::<String>::new()
        );
        let errs = errors(
            "validatingadmissionpolicies",
            json!({"metadata": {"name": "p"}, "spec": {"validations": [{"expression": "",
                "reason": "Teapot"}], "variables": [{"name": "1x", "expression": "1"}]}}),
        );
        for want in [
            "spec.matchConstraints: Required value",
            "spec.validations[0].expression: Required value",
            r#"spec.validations[0].reason: Unsupported value: "Teapot""#,
            "spec.variables[0].name: Invalid value",
        ] {
            assert!(errs.iter().any(|e| e.contains(want)), "{want}: {errs:?}");
        }
        let errs = errors(
            "validatingadmissionpolicybindings",
            json!({"metadata": {"name": "b"}, "spec": {"validationActions": ["Deny", "Nope"]}}),
        );
        for want in [
            "spec.policyName: Required value",
            r#"spec.validationActions[1]: Unsupported value: "Nope""#,
        ] {
            assert!(errs.iter().any(|e| e.contains(want)), "{want}: {errs:?}");
        }
    }
}
