//! Input = an applied configuration (JSON) for a Deployment, applied by two managers and
//! re-applied. No panic; re-applying the same configuration changes nothing; managedFields
//! always decode.
#![no_main]
use h8s_machinery::{apply, managed_field_sets, update_managed_fields, Manager, Schema};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(cfg) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let s = Schema::for_kind("apps", "Deployment");
    let a = Manager {
        name: "a",
        api_version: "apps/v1",
        subresource: "",
        time: "t1",
    };
    let b = Manager {
        name: "b",
        api_version: "apps/v1",
        subresource: "",
        time: "t2",
    };
    let Ok(live) = apply(s, None, &cfg, &a, false) else {
        return;
    };
    assert!(managed_field_sets(&live).is_ok());
    let again = apply(s, Some(&live), &cfg, &a, false).expect("re-apply works");
    assert_eq!(again, live);
    let _ = apply(s, Some(&live), &cfg, &b, false);
    if let Ok(forced) = apply(s, Some(&live), &cfg, &b, true) {
        assert!(managed_field_sets(&forced).is_ok());
    }
    let mut updated = live.clone();
    if update_managed_fields(s, Some(&live), &mut updated, &b).is_ok() {
        assert!(managed_field_sets(&updated).is_ok());
    }
});
