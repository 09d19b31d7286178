//! The generic registry: create, get, list, update, patch, delete and the scale
//! subresource, for every kind in the resource table.

use std::sync::Arc;

use bytes::Bytes;
use h8s_machinery::LabelSelector;
use h8s_store::{KeyValue, ListOptions};
use h8s_types::Resource;
use http::Response;
use serde_json::{json, Value};

use crate::admission::{Operation, Request as AdmissionRequest};
use crate::body::{decode_object, Media};
use crate::ctx::Ctx;
use crate::error::{from_machinery, from_store, ApiError, Cause};
use crate::filter::Filter;
use crate::gc;
use crate::obj::{self, check_type_meta};
use crate::response::{json_response, success_status, Body};
use crate::route::Target;
use crate::state::Api;
use crate::strategy::{Propagation, Sub};
use crate::util;

/// How many times a write without a resourceVersion precondition is retried when it
/// races another writer.
const MAX_RETRIES: usize = 8;

/// The namespace a write goes to: the URL's, checked against the object's.
fn target_namespace(t: &Target, o: &mut Value) -> Result<Option<String>, ApiError> {
    if !t.res.namespaced {
        obj::meta_mut(o).remove("namespace");
        return Ok(None);
    }
    let Some(ns) = t.ns.clone() else {
        return Err(ApiError::bad_request(
            "a namespace is required to write a namespaced resource",
        ));
    };
    let in_obj = obj::namespace(o).to_string();
    if !in_obj.is_empty() && in_obj != ns {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    obj::meta_mut(o).insert("namespace".into(), json!(ns));
    Ok(Some(ns))
}

fn invalid(res: &Resource, name: &str, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(res.kind, res.group, name, causes)
}

fn invalid_fields(
    res: &Resource,
    name: &str,
    errs: Result<(), h8s_types::FieldErrors>,
) -> Result<(), ApiError> {
    errs.map_err(|e| ApiError::from_field_errors(res.kind, res.group, name, &e))
}

/// An object read from the store, in the form `t` serves.
pub(crate) fn decode_for(t: &Target, kv: &KeyValue) -> Result<Value, ApiError> {
    Ok(t.strategy().served_form(obj::decode(kv)?))
}

impl Api {
    /// An object read from the store, in the form `t` serves, through the custom
    /// resource's conversion webhook when it has one.
    pub(crate) async fn decode_converted(
        &self,
        t: &Target,
        kv: &KeyValue,
    ) -> Result<Value, ApiError> {
        let o = obj::decode(kv)?;
        let o = match &t.cr {
            Some(c) => c.to_served(self, o).await?,
            None => o,
        };
        Ok(t.strategy().served_form(o))
    }

    /// A page of objects read from the store, in the form `t` serves: a custom
    /// resource's through its conversion webhook in one review for the page.
    pub(crate) async fn decode_page(
        &self,
        t: &Target,
        kvs: &[KeyValue],
    ) -> Result<Vec<Value>, ApiError> {
        let objs = kvs.iter().map(obj::decode).collect::<Result<Vec<_>, _>>()?;
        let objs = match &t.cr {
            Some(c) => c.to_served_all(self, objs).await?,
            None => objs,
        };
        let s = t.strategy();
        Ok(objs.into_iter().map(|o| s.served_form(o)).collect())
    }

    /// An object as the store keeps it, through the custom resource's conversion
    /// webhook when it has one.
    pub(crate) async fn encode_converted(&self, t: &Target, o: &Value) -> Result<Bytes, ApiError> {
        match &t.cr {
            Some(c) => Ok(encode_for(t, &c.to_stored(self, o.clone()).await?)),
            None => Ok(encode_for(t, o)),
        }
    }
}

/// An object as the store keeps it.
pub(crate) fn encode_for(t: &Target, o: &Value) -> Bytes {
    match t.strategy().stored_form(o) {
        Some(stored) => obj::encode(&stored),
        None => obj::encode(o),
    }
}

/// Records a non-apply write in `metadata.managedFields` (the caller's Update entry).
fn record_manager(
    cx: &Ctx,
    t: &Target,
    sub: Option<&str>,
    live: Option<&Value>,
    new: &mut Value,
) -> Result<(), ApiError> {
    if cx.applying {
        return Ok(());
    }
    let name = cx.manager_name();
    let time = util::now_rfc3339();
    let av = t.res.api_version();
    let m = h8s_machinery::Manager {
        name: &name,
        api_version: &av,
        subresource: sub.unwrap_or(""),
        time: &time,
    };
    let schema = t.strategy().patch_schema(t.res);
    h8s_machinery::update_managed_fields(schema, live, new, &m).map_err(from_machinery)
}

impl Api {
    pub(crate) fn store_key(&self, t: &Target, name: &str) -> String {
        obj::key(t.res, t.ns.as_deref(), name)
    }

    pub(crate) async fn read(
        &self,
        t: &Target,
        name: &str,
    ) -> Result<Option<(KeyValue, Value)>, ApiError> {
        let kv = self
            .store
            .get(&self.store_key(t, name))
            .await
            .map_err(|e| from_store(e, &t.subject(name)))?;
        match kv {
            Some(kv) => {
                let v = self.decode_converted(t, &kv).await?;
                Ok(Some((kv, v)))
            }
            None => Ok(None),
        }
    }

    pub(crate) async fn admit(
        &self,
        cx: &Ctx,
        t: &Target,
        op: Operation,
        name: &str,
        old: Option<&Value>,
        mut o: Option<&mut Value>,
    ) -> Result<(), ApiError> {
        let req = AdmissionRequest {
            op,
            res: t.res,
            sub: t.sub.as_deref(),
            namespace: t.ns.as_deref().unwrap_or(""),
            name,
            user: &cx.user,
            dry_run: cx.dry_run(),
            old,
        };
        for a in &self.admission {
            a.admit(&req, o.as_deref_mut()).await?;
        }
        // Mutating webhooks run after the built-in plugins, before validation.
        if let Some(d) = &self.dynamic {
            let mut warnings = Vec::new();
            let r = d
                .mutate(&req, &admission_options(cx, op), o, &mut warnings)
                .await;
            add_late_warnings(cx, warnings);
            r?;
        }
        Ok(())
    }

    /// Validating admission after the kind's validation: ValidatingAdmissionPolicies,
    /// then validating webhooks.
    pub(crate) async fn admit_validated(
        &self,
        cx: &Ctx,
        t: &Target,
        op: Operation,
        name: &str,
        old: Option<&Value>,
        o: Option<&Value>,
    ) -> Result<(), ApiError> {
        let Some(d) = &self.dynamic else {
            return Ok(());
        };
        let req = AdmissionRequest {
            op,
            res: t.res,
            sub: t.sub.as_deref(),
            namespace: t.ns.as_deref().unwrap_or(""),
            name,
            user: &cx.user,
            dry_run: cx.dry_run(),
            old,
        };
        let mut warnings = Vec::new();
        let r = d
            .validate(&req, &admission_options(cx, op), o, &mut warnings)
            .await;
        add_late_warnings(cx, warnings);
        r
    }

    /// Returns once a write of an RBAC or admission configuration kind (at `rev`) is in
    /// force for the next request.
    async fn written(&self, t: &Target, rev: i64) {
        self.rbac_written(t, rev).await;
        if let Some(d) = &self.dynamic {
            d.written(t.res, rev).await;
        }
    }

    // ---- get ----

    pub(crate) async fn get(&self, cx: &mut Ctx, t: &Target) -> Result<Response<Body>, ApiError> {
        let name = t.name.clone().unwrap_or_default();
        let (_, o) = self
            .read(t, &name)
            .await?
            .ok_or_else(|| ApiError::not_found(&t.subject(&name)))?;
        if cx.as_table {
            let meta = json!({"resourceVersion": obj::resource_version(&o)});
            let tab = t
                .strategy()
                .table(t.res, std::slice::from_ref(&o), &cx.include_object, meta);
            return Ok(json_response(200, &tab));
        }
        Ok(json_response(200, &o))
    }

    // ---- list ----

    pub(crate) async fn list_objects(
        &self,
        cx: &Ctx,
        t: &Target,
        filter: &Filter,
    ) -> Result<(Vec<Value>, i64, Option<String>), ApiError> {
        let prefix = obj::prefix(t.res, t.ns.as_deref());
        let limit = match cx.query.get("limit") {
            Some(l) if !l.is_empty() => Some(
                l.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
            )
            .filter(|n| *n > 0)
            .map(|n| n as usize),
            _ => None,
        };
        let mut revision = None;
        let mut start_after = None;
        if let Some(c) = cx.query.get("continue").filter(|c| !c.is_empty()) {
            let (rv, start) = decode_continue(c, &prefix)?;
            revision = Some(rv);
            start_after = Some(start);
        } else {
            let rv = cx.query.get("resourceVersion").unwrap_or("");
            let exact = cx.query.get("resourceVersionMatch") == Some("Exact");
            if !rv.is_empty() && rv != "0" {
                let n: i64 = rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid resource version {rv:?}"))
                })?;
                if exact {
                    revision = Some(n);
                } else {
                    let cur = self
                        .store
                        .revision()
                        .await
                        .map_err(|e| from_store(e, &t.subject("")))?;
                    if n > cur {
                        return Err(ApiError::timeout(format!(
                            "Too large resource version: {n}, current: {cur}"
                        )));
                    }
                }
            }
        }
        let mut items = Vec::new();
        let mut read_rev = revision;
        let mut last_key: Option<String> = None;
        let mut more;
        loop {
            let page = limit.map(|l| (l - items.len()).max(1)).map(|n| {
                if filter.is_everything() {
                    n
                } else {
                    n.max(256)
                }
            });
            let res = self
                .store
                .list(
                    &prefix,
                    ListOptions {
                        revision: read_rev,
                        start_after: start_after.clone(),
                        limit: page,
                    },
                )
                .await
                .map_err(|e| match e {
                    h8s_store::Error::Compacted { .. } if cx.query.get("continue").is_some() => ApiError::gone(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.",
                    ),
                    e => from_store(e, &t.subject("")),
                })?;
            read_rev = Some(res.revision);
            more = res.more;
            let n = res.items.len();
            let page = self.decode_page(t, &res.items).await?;
            for (i, (kv, o)) in res.items.iter().zip(page).enumerate() {
                start_after = Some(kv.key.clone());
                if filter.matches(&o) {
                    items.push(o);
                    last_key = Some(kv.key.clone());
                    if limit.is_some_and(|l| items.len() >= l) {
                        more = more || i + 1 < n;
                        break;
                    }
                }
            }
            if !more || limit.is_none_or(|l| items.len() >= l) {
                break;
            }
        }
        let rev = read_rev.unwrap_or(0);
        let cont = if more {
            last_key
                .or(start_after)
                .map(|k| encode_continue(rev, &k, &prefix))
        } else {
            None
        };
        Ok((items, rev, cont))
    }

    pub(crate) async fn list(&self, cx: &mut Ctx, t: &Target) -> Result<Response<Body>, ApiError> {
        let filter = Filter::from_query(cx, t)?;
        let (items, rev, cont) = self.list_objects(cx, t, &filter).await?;
        let mut meta = json!({"resourceVersion": rev.to_string()});
        if let Some(c) = cont {
            meta["continue"] = json!(c);
        }
        if cx.as_table {
            let tab = t.strategy().table(t.res, &items, &cx.include_object, meta);
            return Ok(json_response(200, &tab));
        }
        Ok(json_response(
            200,
            &json!({
                "kind": t.res.list_kind,
                "apiVersion": t.res.api_version(),
                "metadata": meta,
                "items": items,
            }),
        ))
    }

    // ---- create ----

    pub(crate) async fn create(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let media = Media::parse(cx.content_type())?;
        let mut o = self.decode_checked(cx, t, media, &body)?;
        if t.res.group.is_empty() && t.res.kind == "Binding" {
            return self.create_binding(cx, t, o).await;
        }
        if !t.res.is_stored() {
            return self.review(cx, t, o).await;
        }
        check_type_meta(t.res, &mut o)?;
        let created = self.create_object(cx, t, o).await?;
        Ok(json_response(201, &created))
    }

    /// Decodes a create or update body and applies `fieldValidation` (Strict, Warn
    /// or Ignore) to it: unknown and duplicate fields.
    pub(crate) fn decode_checked(
        &self,
        cx: &mut Ctx,
        t: &Target,
        media: Media,
        raw: &[u8],
    ) -> Result<Value, ApiError> {
        let res = t.res;
        let mode = cx.field_validation()?;
        let (v, dups) = match media {
            Media::Json if mode != "Ignore" => h8s_types::strict::parse_json(raw).map_err(|e| {
                ApiError::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
            })?,
            _ => (decode_object(media, raw)?, Vec::new()),
        };
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "the body must be a JSON object (a Kubernetes object)",
            ));
        }
        let unknown = if mode == "Ignore" {
            Vec::new()
        } else {
            t.strategy().unknown_fields(res, &v)
        };
        report_strict(cx, mode, res, unknown, dups)?;
        Ok(v)
    }

    /// The create path shared by POST, server-side apply of a missing object and the
    /// namespace bootstrap. A generated name that is taken is retried with a new one
    /// (limits: kube-apiserver ≥ 1.32's RetryGenerateName).
    pub(crate) async fn create_object(
        self: &Arc<Self>,
        cx: &Ctx,
        t: &Target,
        o: Value,
    ) -> Result<Value, ApiError> {
        let generated = obj::name(&o).is_empty()
            && o["metadata"]["generateName"]
                .as_str()
                .is_some_and(|g| !g.is_empty());
        if !generated {
            return self.create_object_once(cx, t, o).await;
        }
        crate::flow::retry::with_generated_name(|| self.create_object_once(cx, t, o.clone())).await
    }

    async fn create_object_once(
        self: &Arc<Self>,
        cx: &Ctx,
        t: &Target,
        mut o: Value,
    ) -> Result<Value, ApiError> {
        let ns = target_namespace(t, &mut o)?;
        let strategy = t.strategy();
        {
            let m = obj::meta_mut(&mut o);
            let name = m
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if name.is_empty() {
                match m.get("generateName").and_then(Value::as_str) {
                    Some(g) if !g.is_empty() => {
                        let mut base = g.to_string();
                        // Leave room for the suffix within the 63 characters of a label
                        // (bytes, as Kubernetes counts; never inside a character: an invalid
                        // name is refused below, not a panic).
                        base.truncate(base.floor_char_boundary(58));
                        m.insert(
                            "name".into(),
                            json!(format!("{base}{}", util::name_suffix())),
                        );
                    }
                    _ => {
                        return Err(invalid(
                            t.res,
                            "",
                            vec![Cause {
                                reason: "FieldValueRequired".into(),
                                message: "Required value: name or generateName is required".into(),
                                field: "metadata.name".into(),
                            }],
                        ))
                    }
                }
            }
            m.insert("uid".into(), json!(util::new_uid()));
            m.insert("creationTimestamp".into(), json!(util::now_rfc3339()));
            for f in [
                "resourceVersion",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "selfLink",
            ] {
                m.remove(f);
            }
            if strategy.tracks_generation(t.res) {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        let name = obj::name(&o).to_string();
        // As kube-apiserver: defaults and the create strategy, then mutating admission,
        // then validation of what admission made.
        strategy.default(t.res, &mut o);
        strategy.prepare_for_create(t.res, &cx.user, &mut o);
        self.admit(cx, t, Operation::Create, &name, None, Some(&mut o))
            .await?;
        strategy.default(t.res, &mut o);
        invalid_fields(t.res, &name, strategy.validate_create(t.res, &o))?;
        self.admit_validated(cx, t, Operation::Create, &name, None, Some(&o))
            .await?;
        record_manager(cx, t, None, None, &mut o)?;
        let key = obj::key(t.res, ns.as_deref(), &name);
        let _guard = strategy.before_create(self, &mut o, cx.dry_run()).await?;
        if cx.dry_run() {
            if self
                .store
                .get(&key)
                .await
                .map_err(|e| from_store(e, &t.subject(&name)))?
                .is_some()
            {
                return Err(ApiError::already_exists(&t.subject(&name)));
            }
            return Ok(o);
        }
        let kv = self
            .store
            .create(&key, self.encode_converted(t, &o).await?)
            .await
            .map_err(|e| from_store(e, &t.subject(&name)))?;
        obj::set_resource_version(&mut o, kv.mod_revision);
        self.written(t, kv.mod_revision).await;
        Ok(o)
    }

    // ---- update ----

    pub(crate) async fn update(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let media = Media::parse(cx.content_type())?;
        let mut new = self.decode_checked(cx, t, media, &body)?;
        check_type_meta(t.res, &mut new)?;
        let name = t.name.clone().unwrap_or_default();
        let in_obj = obj::name(&new).to_string();
        if in_obj.is_empty() {
            obj::meta_mut(&mut new).insert("name".into(), json!(name));
        } else if in_obj != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({in_obj}) does not match the name on the URL ({name})"
            )));
        }
        target_namespace(t, &mut new)?;
        let (o, _) = self
            .guaranteed_update(cx, t, &name, false, |_| Ok(new.clone()))
            .await?;
        Ok(json_response(200, &o))
    }

    /// Reads the object, lets `f` compute its new state from the current one and writes
    /// it with compare-and-swap, retrying on races when the new state carries no
    /// resourceVersion precondition. `create_missing` lets `f` create (apply).
    /// Returns the written object and whether it was created.
    pub(crate) async fn guaranteed_update<F>(
        self: &Arc<Self>,
        cx: &Ctx,
        t: &Target,
        name: &str,
        create_missing: bool,
        mut f: F,
    ) -> Result<(Value, bool), ApiError>
    where
        F: FnMut(Option<&Value>) -> Result<Value, ApiError>,
    {
        for _ in 0..MAX_RETRIES {
            let cur = self.read(t, name).await?;
            let Some((kv, old)) = cur else {
                if !create_missing {
                    return Err(ApiError::not_found(&t.subject(name)));
                }
                let mut new = f(None)?;
                check_type_meta(t.res, &mut new)?;
                obj::meta_mut(&mut new).insert("name".into(), json!(name));
                match self.create_object(cx, t, new).await {
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    other => return other.map(|o| (o, true)),
                }
            };
            let mut new = f(Some(&old))?;
            let precondition = obj::resource_version(&new).to_string();
            if !precondition.is_empty() && precondition != obj::resource_version(&old) {
                return Err(ApiError::stale(&t.subject(name)));
            }
            self.prepare_update(t, &old, &mut new)?;
            if same_object(&old, &new) {
                return Ok((old, false));
            }
            self.admit(cx, t, Operation::Update, name, Some(&old), Some(&mut new))
                .await?;
            let strategy = t.strategy();
            let sub = sub_of(t);
            strategy.default(t.res, &mut new);
            invalid_fields(
                t.res,
                name,
                strategy.validate_update(t.res, sub, &new, &old),
            )?;
            self.admit_validated(cx, t, Operation::Update, name, Some(&old), Some(&new))
                .await?;
            record_manager(cx, t, t.sub.as_deref(), Some(&old), &mut new)?;
            let _held = strategy
                .before_update(self, &old, &mut new, cx.dry_run())
                .await?;
            if cx.dry_run() {
                return Ok((new, false));
            }
            // Removing the last finalizer of an object being deleted deletes it (a
            // namespace also needs its spec.finalizers gone).
            if obj::is_deleting(&new)
                && obj::finalizers(&new).is_empty()
                && t.sub.is_none()
                && (!strategy.deletes_by_finalizing() || gc::namespace_finalized(&new))
            {
                match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                    Ok((_, rev)) => {
                        obj::set_resource_version(&mut new, rev);
                        self.written(t, rev).await;
                        strategy.after_delete(self, &new).await;
                        return Ok((new, false));
                    }
                    Err(h8s_store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(from_store(e, &t.subject(name))),
                }
            }
            match self
                .store
                .update(
                    &kv.key,
                    self.encode_converted(t, &new).await?,
                    kv.mod_revision,
                )
                .await
            {
                Ok(w) => {
                    obj::set_resource_version(&mut new, w.mod_revision);
                    self.written(t, w.mod_revision).await;
                    return Ok((new, false));
                }
                Err(h8s_store::Error::Conflict { .. }) if precondition.is_empty() => continue,
                Err(h8s_store::Error::NotFound(_)) => {
                    return Err(ApiError::not_found(&t.subject(name)))
                }
                Err(e) => return Err(from_store(e, &t.subject(name))),
            }
        }
        Err(ApiError::conflict(
            &t.subject(name),
            "the object is being modified by others too often; try again",
        ))
    }

    /// Keeps system-owned fields, lets the kind's strategy split spec from status
    /// writes, bumps generation and fills defaults (validation follows admission).
    fn prepare_update(&self, t: &Target, old: &Value, new: &mut Value) -> Result<(), ApiError> {
        let name = obj::name(old).to_string();
        let strategy = t.strategy();
        strategy.prepare_for_update(t.res, sub_of(t), old, new);
        let om = obj::meta(old).cloned().unwrap_or_default();
        let nm = obj::meta_mut(new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match om.get(f) {
                Some(v) => nm.insert(f.into(), v.clone()),
                None => nm.remove(f),
            };
        }
        nm.insert(
            "resourceVersion".into(),
            om.get("resourceVersion").cloned().unwrap_or(json!("")),
        );
        // Objects being deleted accept no new finalizers (as Kubernetes).
        if obj::is_deleting(old) {
            let oldf = obj::finalizers(old);
            if obj::finalizers(new).iter().any(|f| !oldf.contains(f)) {
                return Err(ApiError::forbidden_about(
                    &t.subject(&name),
                    "no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        if strategy.tracks_generation(t.res)
            && t.sub.is_none()
            && obj::spec_part(old) != obj::spec_part(new)
        {
            let g = om.get("generation").and_then(Value::as_i64).unwrap_or(0);
            obj::meta_mut(new).insert("generation".into(), json!(g + 1));
        }
        strategy.default(t.res, new);
        Ok(())
    }

    // ---- delete ----

    pub(crate) async fn delete(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let opts = DeleteOptions::parse(cx, &body)?;
        let name = t.name.clone().unwrap_or_default();
        let (code, o) = self.delete_one(cx, t, &name, &opts).await?;
        Ok(json_response(code, &o))
    }

    /// Deletes one object; returns the HTTP code and the body to send.
    pub(crate) async fn delete_one(
        self: &Arc<Self>,
        cx: &Ctx,
        t: &Target,
        name: &str,
        opts: &DeleteOptions,
    ) -> Result<(u16, Value), ApiError> {
        for _ in 0..MAX_RETRIES {
            let (kv, old) = self
                .read(t, name)
                .await?
                .ok_or_else(|| ApiError::not_found(&t.subject(name)))?;
            if let Some(u) = &opts.uid {
                if u != obj::uid(&old) {
                    return Err(ApiError::conflict(
                        &t.subject(name),
                        &format!(
                            "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                            obj::uid(&old)
                        ),
                    ));
                }
            }
            if let Some(rv) = &opts.resource_version {
                if rv != obj::resource_version(&old) {
                    return Err(ApiError::conflict(
                        &t.subject(name),
                        &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            obj::resource_version(&old)
                        ),
                    ));
                }
            }
            let strategy = t.strategy();
            if let Err(why) = strategy.check_delete(&old) {
                return Err(ApiError::forbidden_about(&t.subject(name), &why));
            }
            self.admit(cx, t, Operation::Delete, name, Some(&old), None)
                .await?;
            self.admit_validated(cx, t, Operation::Delete, name, Some(&old), None)
                .await?;
            let is_namespace = strategy.deletes_by_finalizing();
            let graceful = strategy.grace_period(&old, opts.grace_period_seconds);
            let policy = gc_policy(strategy.default_propagation(), opts, &obj::finalizers(&old));
            // As kube-apiserver: Foreground and Orphan keep the object behind the
            // `foregroundDeletion` / `orphan` finalizer; the garbage collector (a controller)
            // does the rest. A namespace waits for its spec.finalizers (the namespace
            // controller empties it, then removes `kubernetes`).
            let (fins_changed, fins) = gc::deletion_finalizers(&obj::finalizers(&old), policy);
            let pending = (is_namespace && !gc::namespace_finalized(&old))
                || !fins.is_empty()
                || graceful.is_some();
            if pending {
                let already = obj::is_deleting(&old);
                if already && graceful != Some(0) && !fins_changed {
                    return Ok((200, old));
                }
                let mut new = old.clone();
                if !already || graceful == Some(0) {
                    let m = obj::meta_mut(&mut new);
                    let grace = graceful.unwrap_or(0);
                    let when = util::rfc3339(obj::now_secs() + grace);
                    m.insert("deletionTimestamp".into(), json!(when));
                    m.insert("deletionGracePeriodSeconds".into(), json!(grace));
                    if strategy.tracks_generation(t.res) {
                        let g = m.get("generation").and_then(Value::as_i64).unwrap_or(0);
                        m.insert("generation".into(), json!(g + 1));
                    }
                }
                if is_namespace {
                    obj::set_at(&mut new, "status.phase", json!("Terminating"));
                }
                if fins_changed {
                    obj::meta_mut(&mut new).insert("finalizers".into(), json!(fins));
                }
                if cx.dry_run() {
                    return Ok((200, new));
                }
                match self
                    .store
                    .update(
                        &kv.key,
                        self.encode_converted(t, &new).await?,
                        kv.mod_revision,
                    )
                    .await
                {
                    Ok(w) => {
                        obj::set_resource_version(&mut new, w.mod_revision);
                        self.written(t, w.mod_revision).await;
                        let code = if opts.orphan_dependents == Some(false) {
                            202
                        } else {
                            200
                        };
                        return Ok((code, new));
                    }
                    Err(h8s_store::Error::Conflict { .. }) => continue,
                    Err(e) => return Err(from_store(e, &t.subject(name))),
                }
            }
            if cx.dry_run() {
                return Ok((200, old));
            }
            match self.store.delete(&kv.key, Some(kv.mod_revision)).await {
                Ok((_, rev)) => {
                    self.written(t, rev).await;
                    strategy.after_delete(self, &old).await;
                    if strategy.returns_deleted_object() {
                        return Ok((200, old));
                    }
                    let mut details =
                        json!({"name": name, "kind": t.res.plural, "uid": obj::uid(&old)});
                    if !t.res.group.is_empty() {
                        details["group"] = json!(t.res.group);
                    }
                    return Ok((
                        200,
                        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
                    ));
                }
                Err(h8s_store::Error::Conflict { .. }) => continue,
                Err(e) => return Err(from_store(e, &t.subject(name))),
            }
        }
        Err(ApiError::conflict(
            &t.subject(name),
            "the object is being modified by others too often; try again",
        ))
    }

    pub(crate) async fn delete_collection(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let opts = DeleteOptions::parse(cx, &body)?;
        let filter = Filter::from_query(cx, t)?;
        let (items, rev, _) = self.list_objects(cx, t, &filter).await?;
        let mut deleted = Vec::new();
        for o in items {
            let nt = Target {
                ns: Some(obj::namespace(&o).to_string()).filter(|s| !s.is_empty()),
                name: Some(obj::name(&o).to_string()),
                ..t.clone()
            };
            match self.delete_one(cx, &nt, obj::name(&o), &opts).await {
                Ok((_, _)) => deleted.push(o),
                Err(e) if e.code == 404 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(json_response(
            200,
            &json!({
                "kind": t.res.list_kind,
                "apiVersion": t.res.api_version(),
                "metadata": {"resourceVersion": rev.to_string()},
                "items": deleted,
            }),
        ))
    }

    // ---- scale ----

    fn scale_of(&self, t: &Target, o: &Value) -> Result<Value, ApiError> {
        let paths = t.res.scale.ok_or_else(ApiError::no_route)?;
        let selector = if paths.selector.is_empty() {
            Value::Null
        } else {
            obj::at(o, paths.selector).cloned().unwrap_or(Value::Null)
        };
        let sel_str = if let Value::String(s) = &selector {
            // Custom resources keep the selector in its string form.
            s.clone()
        } else if paths.selector_is_map {
            selector
                .as_object()
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .unwrap_or_default()
        } else if selector.is_null() {
            String::new()
        } else {
            LabelSelector::from_json(&selector)
                .map(|s| s.to_string())
                .unwrap_or_default()
        };
        let m = obj::meta(o).cloned().unwrap_or_default();
        let mut meta = json!({});
        for f in [
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "creationTimestamp",
        ] {
            if let Some(v) = m.get(f) {
                meta[f] = v.clone();
            }
        }
        let spec_replicas = obj::at(o, paths.spec_replicas)
            .and_then(Value::as_i64)
            .unwrap_or(1);
        let status_replicas = obj::at(o, paths.status_replicas)
            .and_then(Value::as_i64)
            .unwrap_or(0);
        let mut status = json!({"replicas": status_replicas});
        if !sel_str.is_empty() {
            status["selector"] = json!(sel_str);
        }
        Ok(json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": meta,
            "spec": {"replicas": spec_replicas},
            "status": status,
        }))
    }

    pub(crate) async fn get_scale(
        &self,
        _cx: &mut Ctx,
        t: &Target,
    ) -> Result<Response<Body>, ApiError> {
        let name = t.name.clone().unwrap_or_default();
        let (_, o) = self
            .read(t, &name)
            .await?
            .ok_or_else(|| ApiError::not_found(&t.subject(&name)))?;
        Ok(json_response(200, &self.scale_of(t, &o)?))
    }

    async fn write_scale<F>(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        mut f: F,
    ) -> Result<Response<Body>, ApiError>
    where
        F: FnMut(Value) -> Result<Value, ApiError>,
    {
        let paths = t.res.scale.ok_or_else(ApiError::no_route)?;
        let name = t.name.clone().unwrap_or_default();
        let main = Target {
            sub: None,
            ..t.clone()
        };
        let me = self.clone();
        let (o, _) = self
            .guaranteed_update(cx, &main, &name, false, |old| {
                let old = old.cloned().unwrap_or(Value::Null);
                let scale = me.scale_of(t, &old)?;
                let new_scale = f(scale)?;
                let replicas = obj::at(&new_scale, "spec.replicas")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| {
                        invalid(
                            t.res,
                            &name,
                            vec![Cause {
                                reason: "FieldValueRequired".into(),
                                message: "Required value".into(),
                                field: "spec.replicas".into(),
                            }],
                        )
                    })?;
                if replicas < 0 {
                    return Err(ApiError::invalid(
                        "Scale",
                        "autoscaling",
                        &name,
                        vec![Cause {
                            reason: "FieldValueInvalid".into(),
                            message: format!(
                                "Invalid value: {replicas}: must be greater than or equal to 0"
                            ),
                            field: "spec.replicas".into(),
                        }],
                    ));
                }
                let mut new = old.clone();
                obj::set_at(&mut new, paths.spec_replicas, json!(replicas));
                // Only a resourceVersion other than the read one is a precondition.
                let rv = obj::resource_version(&new_scale).to_string();
                if rv == obj::resource_version(&old) {
                    obj::meta_mut(&mut new).remove("resourceVersion");
                } else {
                    obj::meta_mut(&mut new).insert("resourceVersion".into(), json!(rv));
                }
                Ok(new)
            })
            .await?;
        Ok(json_response(200, &self.scale_of(t, &o)?))
    }

    pub(crate) async fn update_scale(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let media = Media::parse(cx.content_type())?;
        let s = decode_object(media, &body)?;
        self.write_scale(cx, t, |_| Ok(s.clone())).await
    }

    pub(crate) async fn patch_scale(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let media = Media::parse(cx.content_type())?;
        let patch = body.clone();
        self.write_scale(cx, t, |scale| {
            crate::patch::apply_simple(media, "autoscaling", "Scale", &scale, &patch)
        })
        .await
    }

    // ---- pods/binding ----

    /// `POST pods/{name}/binding`, as kube-apiserver's `BindingREST`: one guaranteed update
    /// of the stored pod that sets `spec.nodeName` and the `PodScheduled=True` condition,
    /// nothing else — no pod defaulting, validation or managedFields (the pod's spec is
    /// otherwise unchanged; admission webhooks still see the write). Refused with 409 when
    /// the pod is bound already, being deleted, gated, or not the pod the binding's uid
    /// names.
    pub(crate) async fn bind(
        self: &Arc<Self>,
        cx: &mut Ctx,
        t: &Target,
        body: Bytes,
    ) -> Result<Response<Body>, ApiError> {
        let media = Media::parse(cx.content_type())?;
        let b = decode_object(media, &body)?;
        let node = obj::at(&b, "target.name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let kind = obj::at(&b, "target.kind")
            .and_then(Value::as_str)
            .unwrap_or("");
        let bad_target = |field: &str, reason: &str, message: &str| {
            ApiError::invalid(
                "Binding",
                "",
                obj::name(&b),
                vec![Cause {
                    reason: reason.into(),
                    message: message.into(),
                    field: field.into(),
                }],
            )
        };
        if node.is_empty() {
            return Err(bad_target(
                "target.name",
                "FieldValueRequired",
                "Required value",
            ));
        }
        if !kind.is_empty() && kind != "Node" {
            return Err(bad_target(
                "target.kind",
                "FieldValueNotSupported",
                "Unsupported value: must be empty or 'Node'",
            ));
        }
        let uid = obj::at(&b, "metadata.uid")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let name = t.name.clone().unwrap_or_default();
        let subject = t.subject(&name);
        for _ in 0..MAX_RETRIES {
            let (kv, old) = self
                .read(t, &name)
                .await?
                .ok_or_else(|| ApiError::not_found(&subject))?;
            let refuse = |why: String| Err(ApiError::conflict(&subject, &why));
            if !uid.is_empty() && obj::uid(&old) != uid {
                return refuse(format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    obj::uid(&old)
                ));
            }
            if obj::is_deleting(&old) {
                return refuse(format!(
                    "pod {name} is being deleted, cannot be assigned to a host"
                ));
            }
            let cur = obj::at(&old, "spec.nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !cur.is_empty() {
                return refuse(format!("pod {name} is already assigned to node \"{cur}\""));
            }
            if obj::at(&old, "spec.schedulingGates")
                .and_then(Value::as_array)
                .is_some_and(|g| !g.is_empty())
            {
                return refuse(format!("pod {name} has non-empty .spec.schedulingGates"));
            }
            let mut new = old.clone();
            obj::set_at(&mut new, "spec.nodeName", json!(node));
            set_pod_scheduled(&mut new);
            self.admit(cx, t, Operation::Update, &name, Some(&old), Some(&mut new))
                .await?;
            self.admit_validated(cx, t, Operation::Update, &name, Some(&old), Some(&new))
                .await?;
            if cx.dry_run() {
                break;
            }
            match self
                .store
                .update(
                    &kv.key,
                    self.encode_converted(t, &new).await?,
                    kv.mod_revision,
                )
                .await
            {
                Ok(w) => {
                    self.written(t, w.mod_revision).await;
                    return Ok(json_response(201, &success_status(201)));
                }
                Err(h8s_store::Error::Conflict { .. }) => continue,
                Err(h8s_store::Error::NotFound(_)) => return Err(ApiError::not_found(&subject)),
                Err(e) => return Err(from_store(e, &subject)),
            }
        }
        if cx.dry_run() {
            return Ok(json_response(201, &success_status(201)));
        }
        Err(ApiError::conflict(
            &subject,
            "the object is being modified by others too often; try again",
        ))
    }
}

/// Sets the pod's `PodScheduled` condition to True, as the binding does in Kubernetes
/// (`podutil.UpdatePodCondition`: the transition time moves only when the status changes).
fn set_pod_scheduled(pod: &mut Value) {
    let now = util::now_rfc3339();
    let Some(root) = pod.as_object_mut() else {
        return;
    };
    let status = root.entry("status").or_insert_with(|| json!({}));
    if !status.is_object() {
        *status = json!({});
    }
    let conds = status
        .as_object_mut()
        .expect("an object")
        .entry("conditions")
        .or_insert_with(|| json!([]));
    if !conds.is_array() {
        *conds = json!([]);
    }
    let list = conds.as_array_mut().expect("an array");
    match list.iter_mut().find(|c| c["type"] == "PodScheduled") {
        Some(c) => {
            if c["status"] != "True" {
                c["lastTransitionTime"] = json!(now);
            }
            c["status"] = json!("True");
            if let Some(m) = c.as_object_mut() {
                m.remove("reason");
                m.remove("message");
            }
        }
        None => list.push(json!({
            "type": "PodScheduled",
            "status": "True",
            "lastProbeTime": null,
            "lastTransitionTime": now,
        })),
    }
}

/// What the request's subresource does, per the kind's strategy.
pub(crate) fn sub_of(t: &Target) -> Option<Sub> {
    t.sub
        .as_deref()
        .and_then(|s| t.strategy().subresource(t.res, s))
}

/// Whether two versions of an object differ only in bookkeeping (then the write is a
/// no-op and keeps its resourceVersion, as Kubernetes does).
fn same_object(a: &Value, b: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        let m = obj::meta_mut(&mut v);
        m.remove("resourceVersion");
        m.remove("managedFields");
        v
    };
    strip(a) == strip(b)
}

/// Reports unknown (against the kind's schema) and duplicate fields of `v` as
/// `fieldValidation` asks: a 400 under Strict, warnings under Warn.
pub(crate) fn report_strict(
    cx: &mut Ctx,
    mode: &str,
    res: &Resource,
    unknown: Vec<String>,
    duplicate: Vec<String>,
) -> Result<(), ApiError> {
    if mode == "Ignore" {
        return Ok(());
    }
    let kind = res.kind;
    let errs = h8s_types::strict::StrictErrors { duplicate, unknown };
    if errs.is_empty() {
        return Ok(());
    }
    if mode == "Strict" {
        let st = errs.to_status(kind, &res.api_version());
        let msg = st["message"]
            .as_str()
            .unwrap_or("strict decoding error")
            .to_string();
        return Err(ApiError::bad_request(msg));
    }
    cx.warnings.extend(errs.messages());
    Ok(())
}

/// The garbage-collection policy of a delete: the request's, else the one an earlier
/// delete left as a finalizer, else the kind's default (core ReplicationControllers
/// orphan, as in Kubernetes; everything else cascades).
fn gc_policy(default: Propagation, opts: &DeleteOptions, fins: &[String]) -> gc::Policy {
    match opts.propagation_policy.as_deref() {
        Some("Foreground") => gc::Policy::Foreground,
        Some("Orphan") => gc::Policy::Orphan,
        Some(_) => gc::Policy::Background,
        None => match opts.orphan_dependents {
            Some(true) => gc::Policy::Orphan,
            Some(false) => gc::Policy::Background,
            None => match gc::policy_from_finalizers(fins) {
                Some(p) => p,
                None if default == Propagation::Orphan => gc::Policy::Orphan,
                None => gc::Policy::Background,
            },
        },
    }
}

/// `DeleteOptions` from the body and the query.
#[derive(Debug, Default, Clone)]
pub(crate) struct DeleteOptions {
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub orphan_dependents: Option<bool>,
    pub uid: Option<String>,
    pub resource_version: Option<String>,
}

impl DeleteOptions {
    /// The options of a `DeleteOptions` object (a delete's body, an eviction's
    /// `deleteOptions`).
    pub fn from_value(v: &Value) -> DeleteOptions {
        DeleteOptions {
            grace_period_seconds: v
                .get("gracePeriodSeconds")
                .and_then(Value::as_i64)
                .map(|g| g.max(0)),
            propagation_policy: v
                .get("propagationPolicy")
                .and_then(Value::as_str)
                .map(str::to_string),
            orphan_dependents: v.get("orphanDependents").and_then(Value::as_bool),
            uid: obj::at(v, "preconditions.uid")
                .and_then(Value::as_str)
                .map(str::to_string),
            resource_version: obj::at(v, "preconditions.resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }

    pub fn parse(cx: &Ctx, body: &[u8]) -> Result<DeleteOptions, ApiError> {
        let mut o = DeleteOptions::default();
        if !body.iter().all(|b| b.is_ascii_whitespace()) {
            let media = Media::parse(cx.content_type())?;
            let v = decode_object(media, body)?;
            o = DeleteOptions::from_value(&v);
        }
        if let Some(g) = cx.query.get("gracePeriodSeconds") {
            o.grace_period_seconds =
                Some(g.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}"))
                })?);
        }
        if let Some(p) = cx.query.get("propagationPolicy") {
            o.propagation_policy = Some(p.to_string());
        }
        if let Some(p) = &o.propagation_policy {
            if !matches!(p.as_str(), "Orphan" | "Background" | "Foreground") {
                return Err(ApiError::invalid(
                    "DeleteOptions",
                    "",
                    "",
                    vec![Cause {
                        reason: "FieldValueNotSupported".into(),
                        message: format!("Unsupported value: \"{p}\": supported values: \"Foreground\", \"Background\", \"Orphan\""),
                        field: "propagationPolicy".into(),
                    }],
                ));
            }
        }
        if o.grace_period_seconds.is_some_and(|g| g < 0) {
            o.grace_period_seconds = Some(0);
        }
        Ok(o)
    }
}

fn encode_continue(rev: i64, key: &str, prefix: &str) -> String {
    use base64::Engine;
    let start = key.strip_prefix(prefix).unwrap_or(key);
    let v = json!({"v": "meta.k8s.io/v1", "rv": rev, "start": start});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn decode_continue(c: &str, prefix: &str) -> Result<(i64, String), ApiError> {
    use base64::Engine;
    let bad = || {
        ApiError::bad_request("continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(c))
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rv = v
        .get("rv")
        .and_then(Value::as_i64)
        .filter(|r| *r > 0)
        .ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    if start.contains("..") {
        return Err(bad());
    }
    Ok((rv, format!("{prefix}{start}")))
}

/// The `options` of an AdmissionReview: the write's CreateOptions, UpdateOptions or
/// DeleteOptions as the request gave them.
fn admission_options(cx: &Ctx, op: Operation) -> Value {
    let kind = match op {
        Operation::Create => "CreateOptions",
        Operation::Update => "UpdateOptions",
        Operation::Delete => "DeleteOptions",
    };
    let mut o = json!({"kind": kind, "apiVersion": "meta.k8s.io/v1"});
    if cx.dry_run() {
        o["dryRun"] = json!(["All"]);
    }
    if op != Operation::Delete {
        if let Some(m) = cx.field_manager() {
            o["fieldManager"] = json!(m);
        }
    }
    o
}

fn add_late_warnings(cx: &Ctx, warnings: Vec<String>) {
    if !warnings.is_empty() {
        cx.late_warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(warnings);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens() {
        let c = encode_continue(42, "/registry/core/pods/default/p1", "/registry/core/pods/");
        let (rv, k) = decode_continue(&c, "/registry/core/pods/").unwrap();
        assert_eq!(rv, 42);
        assert_eq!(k, "/registry/core/pods/default/p1");
        assert_eq!(decode_continue("!!", "/x/").unwrap_err().code, 400);
    }

    #[test]
    fn type_meta() {
        let r = h8s_types::resources::find("apps", "v1", "deployments").unwrap();
        let mut o = json!({"metadata": {"name": "d"}});
        check_type_meta(r, &mut o).unwrap();
        assert_eq!(o["apiVersion"], "apps/v1");
        let mut bad = json!({"apiVersion": "v1", "kind": "Deployment"});
        assert_eq!(check_type_meta(r, &mut bad).unwrap_err().code, 400);
        let mut bad = json!({"apiVersion": "apps/v1", "kind": "Pod"});
        assert_eq!(check_type_meta(r, &mut bad).unwrap_err().code, 400);
    }
}
