//! `autoscaling/v1` HorizontalPodAutoscalers: the `autoscaling/v2` objects (the storage
//! version) in their `v1` form, converted both ways as Kubernetes converts them
//! (`h8s_types::autoscaling`), and defaulted as `v2` when stored.

use serde_json::Value;

use super::Strategy;

pub(crate) struct HpaV1;

impl Strategy for HpaV1 {
    fn stored_form(&self, o: &Value) -> Option<Value> {
        let mut v2 = h8s_types::autoscaling::v1_to_v2(o.clone());
        h8s_types::autoscaling::default_v2(&mut v2);
        Some(v2)
    }

    fn served_form(&self, o: Value) -> Value {
        h8s_types::autoscaling::v2_to_v1(o)
    }
}
