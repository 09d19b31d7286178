//! The operations of every served resource, in a neutral form rendered to
//! OpenAPI v3 and Swagger 2.0.

use crate::resources::{self, Resource, Subresource};
use crate::schema::schemas;
use serde_json::{json, Map, Value};

const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
const PATCH_DEF: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const STATUS_DEF: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const DELETE_OPTIONS_DEF: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";

#[derive(Clone)]
pub(super) struct Param {
    name: &'static str,
    location: &'static str,
    ty: &'static str,
    required: bool,
    description: &'static str,
}

const fn q(name: &'static str, ty: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "query",
        ty,
        required: false,
        description,
    }
}

const PRETTY: Param = q("pretty", "string", "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).");
const DRY_RUN: Param = q("dryRun", "string", "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed");
const FIELD_MANAGER: Param = q("fieldManager", "string", "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.");
const FIELD_VALIDATION: Param = q("fieldValidation", "string", "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.");
const FORCE: Param = q("force", "boolean", "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.");
const LIST_PARAMS: &[Param] = &[
    q("allowWatchBookmarks", "boolean", "allowWatchBookmarks requests watch events with type \"BOOKMARK\"."),
    q("continue", "string", "The continue option should be set when retrieving more results from the server."),
    q("fieldSelector", "string", "A selector to restrict the list of returned objects by their fields. Defaults to everything."),
    q("labelSelector", "string", "A selector to restrict the list of returned objects by their labels. Defaults to everything."),
    q("limit", "integer", "limit is a maximum number of responses to return for a list call."),
    q("resourceVersion", "string", "resourceVersion sets a constraint on what resource versions a request may be served from."),
    q("resourceVersionMatch", "string", "resourceVersionMatch determines how resourceVersion is applied to list calls."),
    q("sendInitialEvents", "boolean", "`sendInitialEvents=true` may be set together with `watch=true`."),
    q("timeoutSeconds", "integer", "Timeout for the list/watch call."),
    q("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications."),
];
const DELETE_PARAMS: &[Param] = &[
    q("gracePeriodSeconds", "integer", "The duration in seconds before the object should be deleted."),
    q("ignoreStoreReadErrorWithClusterBreakingPotential", "boolean", "if set to true, it will trigger an unsafe deletion of the resource in case the normal deletion flow fails with a corrupt object error."),
    q("orphanDependents", "boolean", "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7."),
    q("propagationPolicy", "string", "Whether and how garbage collection will be performed."),
];
const LOG_PARAMS: &[Param] = &[
    q("container", "string", "The container for which to stream logs. Defaults to only container if there is one container in the pod."),
    q("follow", "boolean", "Follow the log stream of the pod. Defaults to false."),
    q("insecureSkipTLSVerifyBackend", "boolean", "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to."),
    q("limitBytes", "integer", "If set, the number of bytes to read from the server before terminating the log output."),
    q("previous", "boolean", "Return previous terminated container logs. Defaults to false."),
    q("sinceSeconds", "integer", "A relative time in seconds before the current time from which to show logs."),
    q("stream", "string", "Specify which container log stream to return to the client."),
    q("tailLines", "integer", "If set, the number of lines from the end of the logs to show."),
    q("timestamps", "boolean", "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false."),
];
const EXEC_PARAMS: &[Param] = &[
    q("command", "string", "Command is the remote command to execute. argv array. Not executed within a shell."),
    q("container", "string", "Container in which to execute the command. Defaults to only container if there is only one container in the pod."),
    q("stderr", "boolean", "Redirect the standard error stream of the pod for this call."),
    q("stdin", "boolean", "Redirect the standard input stream of the pod for this call. Defaults to false."),
    q("stdout", "boolean", "Redirect the standard output stream of the pod for this call."),
    q("tty", "boolean", "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false."),
];
const PORTFORWARD_PARAMS: &[Param] = &[q(
    "ports",
    "integer",
    "List of ports to forward Required when using WebSockets",
)];

#[derive(Clone)]
pub(super) struct Op {
    method: &'static str,
    id: String,
    description: String,
    action: &'static str,
    gvk: (String, String, String),
    params: Vec<Param>,
    body: Option<String>,
    patch: bool,
    responses: Vec<(&'static str, Option<String>)>,
    text: bool,
    tag: String,
}

pub(super) struct PathEntry {
    pub(super) path: String,
    ops: Vec<Op>,
    params: Vec<Param>,
}

fn camel(s: &str) -> String {
    let mut out = String::new();
    for part in s.split(['.', '-']) {
        let mut c = part.chars();
        if let Some(f) = c.next() {
            out.push(f.to_ascii_uppercase());
            out.push_str(c.as_str());
        }
    }
    out
}

fn group_camel(g: &str) -> String {
    if g.is_empty() {
        "Core".into()
    } else {
        camel(g.trim_end_matches(".k8s.io"))
    }
}

fn tag(g: &str, v: &str) -> String {
    let g = if g.is_empty() {
        "core".to_string()
    } else {
        g.trim_end_matches(".k8s.io").replace('.', "_")
    };
    format!("{g}_{v}")
}

/// `((group, version, kind), definition name)` of custom kinds.
type CustomDefs = Vec<((String, String, String), String)>;

thread_local! {
    /// Definition names of custom kinds while their paths are built
    /// ([`for_custom`]).
    static CUSTOM_DEFS: std::cell::RefCell<CustomDefs> =
        const { std::cell::RefCell::new(Vec::new()) };
}

fn def(g: &str, v: &str, k: &str) -> Option<String> {
    if let Some(d) = CUSTOM_DEFS.with(|c| {
        c.borrow()
            .iter()
            .find(|((cg, cv, ck), _)| cg == g && cv == v && ck == k)
            .map(|(_, d)| d.clone())
    }) {
        return Some(d);
    }
    schemas().definition_name(g, v, k).map(str::to_string)
}

/// The operations of resources outside the table (custom resources), whose kind and
/// list definitions are named by `defs` as `((group, version, kind), name)`.
pub(super) fn for_custom(resources: &[&Resource], defs: CustomDefs) -> Vec<PathEntry> {
    CUSTOM_DEFS.with(|c| *c.borrow_mut() = defs);
    let out = resources.iter().flat_map(|r| for_resource(r)).collect();
    CUSTOM_DEFS.with(|c| c.borrow_mut().clear());
    out
}

fn path_param(name: &'static str, description: &'static str) -> Param {
    Param {
        name,
        location: "path",
        ty: "string",
        required: true,
        description,
    }
}

/// The operations of every resource in one group version.
pub(super) fn for_group_version(group: &str, version: &str) -> Vec<PathEntry> {
    let mut out = Vec::new();
    for r in resources::in_group_version(group, version) {
        out.extend(for_resource(r));
    }
    out
}

fn for_resource(r: &Resource) -> Vec<PathEntry> {
    let root = if r.group.is_empty() {
        format!("/api/{}", r.version)
    } else {
        format!("/apis/{}/{}", r.group, r.version)
    };
    let gc = group_camel(r.group);
    let vc = camel(r.version);
    let t = tag(r.group, r.version);
    let gvk = (
        r.group.to_string(),
        r.version.to_string(),
        r.kind.to_string(),
    );
    let kind_def = def(r.group, r.version, r.kind);
    let list_def = def(r.group, r.version, r.list_kind);
    let ns = if r.namespaced { "Namespaced" } else { "" };
    let collection = if r.namespaced {
        format!("{root}/namespaces/{{namespace}}/{}", r.plural)
    } else {
        format!("{root}/{}", r.plural)
    };
    let mut scope_params = vec![];
    if r.namespaced {
        scope_params.push(path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects",
        ));
    }
    let op = |method: &'static str, verb: &str, action: &'static str, what: &str| Op {
        method,
        id: format!("{verb}{gc}{vc}{ns}{}", r.kind),
        description: format!("{what} {}", r.kind),
        action,
        gvk: gvk.clone(),
        params: vec![PRETTY],
        body: None,
        patch: false,
        responses: vec![],
        text: false,
        tag: t.clone(),
    };
    let mut entries = Vec::new();
    if !r.is_stored() {
        // Reviews: create only.
        let mut create = op("post", "create", "post", "create a");
        create
            .params
            .extend([DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION]);
        create.body = kind_def.clone();
        create.responses = vec![
            ("200", kind_def.clone()),
            ("201", kind_def.clone()),
            ("202", kind_def.clone()),
        ];
        entries.push(PathEntry {
            path: collection,
            ops: vec![create],
            params: scope_params,
        });
        return entries;
    }
    // The collection.
    let mut list = op("get", "list", "list", "list or watch objects of kind");
    list.params.extend_from_slice(LIST_PARAMS);
    list.responses = vec![("200", list_def.clone())];
    let mut create = op("post", "create", "post", "create a");
    create
        .params
        .extend([DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION]);
    create.body = kind_def.clone();
    create.responses = vec![
        ("200", kind_def.clone()),
        ("201", kind_def.clone()),
        ("202", kind_def.clone()),
    ];
    let mut ops = vec![list, create];
    if r.has_verb("deletecollection") {
        let mut dc = op(
            "delete",
            "deleteCollection",
            "deletecollection",
            "delete collection of",
        );
        dc.params.extend_from_slice(DELETE_PARAMS);
        dc.params.extend_from_slice(LIST_PARAMS);
        dc.params.push(DRY_RUN);
        dc.body = Some(DELETE_OPTIONS_DEF.into());
        dc.responses = vec![("200", Some(STATUS_DEF.into()))];
        ops.push(dc);
    }
    entries.push(PathEntry {
        path: collection.clone(),
        ops,
        params: scope_params.clone(),
    });
    // Across namespaces.
    if r.namespaced {
        let mut all = op("get", "list", "list", "list or watch objects of kind");
        all.id = format!("list{gc}{vc}{}ForAllNamespaces", r.kind);
        all.params.extend_from_slice(LIST_PARAMS);
        all.responses = vec![("200", list_def.clone())];
        entries.push(PathEntry {
            path: format!("{root}/{}", r.plural),
            ops: vec![all],
            params: vec![],
        });
    }
    // One object.
    let mut item_params = vec![path_param("name", "name of the object")];
    item_params.extend(scope_params.clone());
    let item = format!("{collection}/{{name}}");
    let read = {
        let mut o = op("get", "read", "get", "read the specified");
        o.responses = vec![("200", kind_def.clone())];
        o
    };
    let replace = {
        let mut o = op("put", "replace", "put", "replace the specified");
        o.params.extend([DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION]);
        o.body = kind_def.clone();
        o.responses = vec![("200", kind_def.clone()), ("201", kind_def.clone())];
        o
    };
    let patch = {
        let mut o = op("patch", "patch", "patch", "partially update the specified");
        o.params
            .extend([DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION, FORCE]);
        o.body = Some(PATCH_DEF.into());
        o.patch = true;
        o.responses = vec![("200", kind_def.clone()), ("201", kind_def.clone())];
        o
    };
    let delete = {
        let mut o = op("delete", "delete", "delete", "delete a");
        o.params.extend([DRY_RUN]);
        o.params.extend_from_slice(DELETE_PARAMS);
        o.body = Some(DELETE_OPTIONS_DEF.into());
        o.responses = vec![("200", kind_def.clone()), ("202", kind_def.clone())];
        o
    };
    entries.push(PathEntry {
        path: item.clone(),
        ops: vec![read.clone(), replace.clone(), patch.clone(), delete],
        params: item_params.clone(),
    });
    for s in r.subresources {
        if let Some(e) = subresource(r, s, &item, &item_params, &read, &replace, &patch) {
            entries.push(e);
        }
    }
    entries
}

#[allow(clippy::too_many_arguments)]
fn subresource(
    r: &Resource,
    s: &Subresource,
    item: &str,
    item_params: &[Param],
    read: &Op,
    replace: &Op,
    patch: &Op,
) -> Option<PathEntry> {
    let path = format!("{item}/{}", s.name);
    let sub_camel = camel(s.name);
    let sub_def = def(s.group, s.version, s.kind);
    let gvk = (
        s.group.to_string(),
        s.version.to_string(),
        s.kind.to_string(),
    );
    let rename = |o: &Op, verb: &str| {
        let mut o = o.clone();
        o.id = format!("{}{sub_camel}", o.id);
        o.description = format!("{verb} {} of the specified {}", s.name, r.kind);
        o.gvk = gvk.clone();
        if o.body.as_deref() != Some(PATCH_DEF) && o.body.is_some() {
            o.body = sub_def.clone();
        }
        for resp in &mut o.responses {
            resp.1 = sub_def.clone();
        }
        o
    };
    let connect = |method: &'static str, params: &[Param]| {
        let mut o = read.clone();
        o.method = method;
        o.action = "connect";
        o.id = format!(
            "connect{}{}{}{}",
            camel(method),
            if r.namespaced { "Namespaced" } else { "" },
            r.kind,
            sub_camel
        );
        o.description = format!(
            "connect {} requests to {} of {}",
            method.to_uppercase(),
            s.name,
            r.kind
        );
        o.gvk = gvk.clone();
        o.params = params.to_vec();
        o.responses = vec![("200", None)];
        o.text = true;
        o
    };
    let ops = match s.name {
        "status" | "scale" | "ephemeralcontainers" | "resize" => vec![
            rename(read, "read"),
            rename(replace, "replace"),
            rename(patch, "partially update"),
        ],
        "finalize" => vec![rename(replace, "replace")],
        "log" => {
            let mut o = read.clone();
            o.id = format!("{}Log", o.id);
            o.description = format!("read log of the specified {}", r.kind);
            o.params.extend_from_slice(LOG_PARAMS);
            o.responses = vec![("200", None)];
            o.text = true;
            vec![o]
        }
        "exec" | "attach" => vec![connect("get", EXEC_PARAMS), connect("post", EXEC_PARAMS)],
        "portforward" => vec![
            connect("get", PORTFORWARD_PARAMS),
            connect("post", PORTFORWARD_PARAMS),
        ],
        "binding" | "eviction" | "token" => {
            let mut o = read.clone();
            o.method = "post";
            o.action = "post";
            o.id = format!(
                "create{}{}",
                if r.namespaced { "Namespaced" } else { "" },
                format_args!("{}{}", r.kind, sub_camel)
            );
            o.description = format!("create {} of a {}", s.name, r.kind);
            o.gvk = gvk.clone();
            o.params.extend([DRY_RUN, FIELD_MANAGER, FIELD_VALIDATION]);
            o.body = sub_def.clone();
            o.responses = vec![
                ("200", sub_def.clone()),
                ("201", sub_def.clone()),
                ("202", sub_def.clone()),
            ];
            vec![o]
        }
        // proxy has path variants and many methods; discovery lists it and
        // the server routes it, but no client reads its schema.
        _ => return None,
    };
    Some(PathEntry {
        path,
        ops,
        params: item_params.to_vec(),
    })
}

fn v3_param(p: &Param) -> Value {
    let mut v = json!({"name": p.name, "in": p.location, "description": p.description,
        "schema": {"type": p.ty, "uniqueItems": true}});
    if p.required {
        v["required"] = json!(true);
    }
    v
}

fn v2_param(p: &Param) -> Value {
    let mut v = json!({"name": p.name, "in": p.location, "description": p.description,
        "type": p.ty, "uniqueItems": true});
    if p.required {
        v["required"] = json!(true);
    }
    v
}

fn gvk_ext(gvk: &(String, String, String)) -> Value {
    json!({"group": gvk.0, "version": gvk.1, "kind": gvk.2})
}

impl PathEntry {
    pub(super) fn to_v3(&self, used: &mut Vec<String>) -> Value {
        let mut item = Map::new();
        for o in &self.ops {
            let mut op = json!({
                "tags": [o.tag],
                "description": o.description,
                "operationId": o.id,
                "parameters": o.params.iter().map(v3_param).collect::<Vec<_>>(),
                "x-kubernetes-action": o.action,
                "x-kubernetes-group-version-kind": gvk_ext(&o.gvk),
            });
            if let Some(b) = &o.body {
                used.push(b.clone());
                let types: Vec<&str> = if o.patch {
                    PATCH_TYPES.to_vec()
                } else {
                    vec!["*/*"]
                };
                let content: Map<String, Value> = types
                    .into_iter()
                    .map(|t| {
                        (
                            t.to_string(),
                            json!({"schema": {"$ref": format!("#/components/schemas/{b}")}}),
                        )
                    })
                    .collect();
                op["requestBody"] = json!({"content": content, "required": true});
            }
            let mut responses = Map::new();
            for (code, d) in &o.responses {
                let content = if o.text {
                    json!({"*/*": {"schema": {"type": "string"}}})
                } else if let Some(d) = d {
                    used.push(d.clone());
                    let r = json!({"schema": {"$ref": format!("#/components/schemas/{d}")}});
                    let mut c = json!({"application/json": r, "application/yaml": r, "application/vnd.kubernetes.protobuf": r});
                    if o.action == "list" {
                        c["application/json;stream=watch"] = r.clone();
                    }
                    c
                } else {
                    json!({})
                };
                let desc = match *code {
                    "201" => "Created",
                    "202" => "Accepted",
                    _ => "OK",
                };
                responses.insert(
                    code.to_string(),
                    json!({"description": desc, "content": content}),
                );
            }
            responses.insert("401".into(), json!({"description": "Unauthorized"}));
            op["responses"] = Value::Object(responses);
            item.insert(o.method.to_string(), op);
        }
        item.insert(
            "parameters".into(),
            Value::Array(self.params.iter().map(v3_param).collect()),
        );
        Value::Object(item)
    }

    pub(super) fn to_v2(&self, used: &mut Vec<String>) -> Value {
        let mut item = Map::new();
        for o in &self.ops {
            let mut params: Vec<Value> = o.params.iter().map(v2_param).collect();
            if let Some(b) = &o.body {
                used.push(b.clone());
                params.insert(
                    0,
                    json!({"name": "body", "in": "body", "required": true,
                    "schema": {"$ref": format!("#/definitions/{b}")}}),
                );
            }
            let consumes: Vec<&str> = if o.patch {
                PATCH_TYPES.to_vec()
            } else {
                vec!["*/*"]
            };
            let produces: Vec<&str> = if o.text {
                vec!["*/*"]
            } else {
                vec![
                    "application/json",
                    "application/yaml",
                    "application/vnd.kubernetes.protobuf",
                ]
            };
            let mut responses = Map::new();
            for (code, d) in &o.responses {
                let desc = match *code {
                    "201" => "Created",
                    "202" => "Accepted",
                    _ => "OK",
                };
                let mut resp = json!({"description": desc});
                if o.text {
                    resp["schema"] = json!({"type": "string"});
                } else if let Some(d) = d {
                    resp["schema"] = json!({"$ref": format!("#/definitions/{d}")});
                }
                responses.insert(code.to_string(), resp);
            }
            responses.insert("401".into(), json!({"description": "Unauthorized"}));
            item.insert(
                o.method.to_string(),
                json!({
                    "tags": [o.tag],
                    "description": o.description,
                    "operationId": o.id,
                    "consumes": consumes,
                    "produces": produces,
                    "schemes": ["https"],
                    "parameters": params,
                    "responses": responses,
                    "x-kubernetes-action": o.action,
                    "x-kubernetes-group-version-kind": gvk_ext(&o.gvk),
                }),
            );
        }
        item.insert(
            "parameters".into(),
            Value::Array(self.params.iter().map(v2_param).collect()),
        );
        Value::Object(item)
    }
}
