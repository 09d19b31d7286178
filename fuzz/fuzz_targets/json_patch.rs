//! Input = a JSON Patch body (and, after a NUL byte, an optional document). No panic; a
//! failing patch leaves the document unchanged; merge patch is idempotent.
#![no_main]
use h8s_machinery::{merge_patch, JsonPatch};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};

fuzz_target!(|data: &[u8]| {
    let (patch, doc) = match data.iter().position(|b| *b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let doc: Value = serde_json::from_slice(doc).unwrap_or_else(|_| {
        json!({"metadata": {"name": "p", "labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}})
    });
    if let Ok(p) = JsonPatch::parse(patch) {
        let mut d = doc.clone();
        if p.apply(&mut d).is_err() {
            assert_eq!(d, doc);
        }
    }
    if let Ok(p) = serde_json::from_slice::<Value>(patch) {
        let mut once = doc.clone();
        merge_patch(&mut once, &p);
        let mut twice = once.clone();
        merge_patch(&mut twice, &p);
        assert_eq!(once, twice);
    }
});
