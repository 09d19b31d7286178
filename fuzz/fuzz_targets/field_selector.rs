//! Any input: no panic; a parsed selector's canonical form re-parses to the same terms.
#![no_main]
use h8s_machinery::FieldSelector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(sel) = FieldSelector::parse(s) {
        let again = FieldSelector::parse(&sel.to_string()).expect("canonical form parses");
        let key = |r: &h8s_machinery::FieldRequirement| {
            (r.field.clone(), r.value.clone(), format!("{:?}", r.op))
        };
        let mut a: Vec<_> = sel.requirements().iter().map(key).collect();
        let mut b: Vec<_> = again.requirements().iter().map(key).collect();
        a.sort();
        b.sort();
        assert_eq!(a, b);
        let _ = sel.matches(|f| Some(f.to_string()));
    }
});
