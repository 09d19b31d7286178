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

    fn stored_form(&self, o: &Value) -> Option<Value> {
        Some(events::v1_to_core(o.clone()))
    }

    fn served_form(&self, o: Value) -> Value {
        events::core_to_v1(o)
    }
}
