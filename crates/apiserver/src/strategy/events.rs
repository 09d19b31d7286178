//! `events.k8s.io/v1` Events: the same objects as core `v1` Events, in the same place
//! of the store (core form), converted both ways as Kubernetes converts them.

use h8s_types::resources::FieldSelectorError;
use h8s_types::{events, FieldErrors, Resource};
use serde_json::Value;

use super::Strategy;

pub(crate) struct EventsV1;

fn core() -> &'static Resource {
    h8s_types::resources::find("", "v1", "events").expect("core events are served")
}

impl Strategy for EventsV1 {
    fn validate_create(&self, res: &Resource, o: &Value) -> Result<(), FieldErrors> {
        h8s_types::validation::validate_create(res, o)
    }

    fn field_value(
        &self,
        _res: &Resource,
        o: &Value,
        field: &str,
    ) -> Result<String, FieldSelectorError> {
        // The fields are the core kind's, as kube-apiserver's shared storage has them.
        core().field_value(&events::v1_to_core(o.clone()), field)
    }

    fn to_storage(&self, o: &Value) -> Option<Value> {
        Some(events::v1_to_core(o.clone()))
    }

    fn from_storage(&self, o: Value) -> Value {
        events::core_to_v1(o)
    }

    fn table(
        &self,
        _res: &Resource,
        objs: &[Value],
        include_object: &str,
        list_meta: Value,
    ) -> Value {
        let core_objs: Vec<Value> = objs.iter().cloned().map(events::v1_to_core).collect();
        let mut t = super::generic_table(core(), &core_objs, include_object, list_meta);
        if include_object == "Object" {
            // Rows carry the object as this resource serves it.
            if let Some(rows) = t.get_mut("rows").and_then(Value::as_array_mut) {
                for (row, o) in rows.iter_mut().zip(objs) {
                    row["object"] = o.clone();
                }
            }
        }
        t
    }
}
