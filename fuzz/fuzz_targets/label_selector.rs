//! Any input: no panic; a parsed selector's canonical form re-parses to an equal selector.
#![no_main]
use h8s_machinery::LabelSelector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = LabelSelector::parse(s) {
        let again = LabelSelector::parse(&sel.to_string()).expect("canonical form parses");
        assert_eq!(again, sel);
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = LabelSelector::from_json(&v);
    }
});
