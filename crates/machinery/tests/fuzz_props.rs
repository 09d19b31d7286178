//! Property tests (the fuzzing of this crate): the selector parsers and patch decoders never
//! panic on any input, and their round-trip / idempotence properties hold. Run longer with
//! `PROPTEST_CASES=20000 cargo test -p h8s-machinery --test fuzz_props`.

use h8s_machinery::{
    apply, apply_patch, field_set, merge_patch, strategic_merge_patch, strategic_merge_patch_value,
    FieldSelector, FieldSet, JsonPatch, LabelSelector, Manager, PatchType, Schema,
};
use proptest::prelude::*;
use serde_json::{Map, Value};

/// Strings built from the characters and words the selector grammars care about.
fn selector_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("a".to_string()),
        Just("app".to_string()),
        Just("k8s.io/x".to_string()),
        Just("in".to_string()),
        Just("notin".to_string()),
        Just("=".to_string()),
        Just("==".to_string()),
        Just("!=".to_string()),
        Just("!".to_string()),
        Just("(".to_string()),
        Just(")".to_string()),
        Just(",".to_string()),
        Just(" ".to_string()),
        Just(">".to_string()),
        Just("<".to_string()),
        Just("5".to_string()),
        Just("-1".to_string()),
        Just("\\".to_string()),
        Just("\\,".to_string()),
        Just("\\=".to_string()),
        Just("é".to_string()),
        Just("\0".to_string()),
        Just("metadata.name".to_string()),
        "[a-zA-Z0-9._/-]{1,8}",
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

fn json_value() -> impl Strategy<Value = Value> {
    let key = prop_oneof![
        Just("metadata".to_string()),
        Just("spec".to_string()),
        Just("template".to_string()),
        Just("containers".to_string()),
        Just("name".to_string()),
        Just("image".to_string()),
        Just("env".to_string()),
        Just("ports".to_string()),
        Just("containerPort".to_string()),
        Just("protocol".to_string()),
        Just("finalizers".to_string()),
        Just("labels".to_string()),
        Just("volumes".to_string()),
        Just("emptyDir".to_string()),
        Just("$patch".to_string()),
        Just("$retainKeys".to_string()),
        Just("$setElementOrder/containers".to_string()),
        Just("$setElementOrder/finalizers".to_string()),
        Just("$deleteFromPrimitiveList/finalizers".to_string()),
        Just("op".to_string()),
        Just("path".to_string()),
        Just("from".to_string()),
        Just("value".to_string()),
        "[a-z]{1,3}",
    ];
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..100).prop_map(Value::from),
        prop_oneof![
            Just("replace"),
            Just("delete"),
            Just("merge"),
            Just("add"),
            Just("remove"),
            Just("move"),
            Just("copy"),
            Just("test"),
            Just("/spec"),
            Just("/spec/containers/0"),
            Just("/spec/containers/-"),
            Just("/metadata/labels/a~1b"),
            Just(""),
            Just("a"),
            Just("TCP"),
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(5, 48, 5, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key.clone(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn object() -> impl Strategy<Value = Value> {
    json_value().prop_map(|v| match v {
        Value::Object(_) => v,
        other => {
            let mut m = Map::new();
            m.insert("spec".into(), other);
            Value::Object(m)
        }
    })
}

fn schemas() -> impl Strategy<Value = Schema> {
    prop_oneof![
        Just(Schema::for_kind("", "Pod")),
        Just(Schema::for_kind("apps", "Deployment")),
        Just(Schema::for_kind("", "Service")),
        Just(Schema::metadata_only()),
    ]
}

proptest! {
    #[test]
    fn label_selector_parse_never_panics_and_round_trips(s in selector_text()) {
        if let Ok(sel) = LabelSelector::parse(&s) {
            let again = LabelSelector::parse(&sel.to_string());
            prop_assert_eq!(again.as_ref(), Ok(&sel), "{:?} → {:?}", s, sel.to_string());
        }
    }

    #[test]
    fn label_selector_arbitrary_unicode(s in any::<String>()) {
        let _ = LabelSelector::parse(&s);
    }

    #[test]
    fn field_selector_parse_never_panics_and_round_trips(s in selector_text()) {
        if let Ok(sel) = FieldSelector::parse(&s) {
            let again = FieldSelector::parse(&sel.to_string()).expect("canonical form parses");
            let mut a = sel.requirements().to_vec();
            let mut b = again.requirements().to_vec();
            a.sort_by(|x, y| (&x.field, &x.value).cmp(&(&y.field, &y.value)));
            b.sort_by(|x, y| (&x.field, &x.value).cmp(&(&y.field, &y.value)));
            prop_assert_eq!(a, b);
        }
    }

    #[test]
    fn field_selector_arbitrary_unicode(s in any::<String>()) {
        let _ = FieldSelector::parse(&s);
    }

    #[test]
    fn label_selector_json_never_panics(v in json_value()) {
        let _ = LabelSelector::from_json(&v);
    }

    #[test]
    fn patch_decoders_never_panic_on_bytes(b in prop::collection::vec(any::<u8>(), 0..256), t in 0usize..3) {
        let pt = [PatchType::Json, PatchType::Merge, PatchType::Strategic][t];
        let doc = serde_json::json!({"metadata": {"name": "x"}});
        let _ = apply_patch(pt, &doc, &b, Schema::for_kind("", "Pod"));
        let _ = JsonPatch::parse(&b);
    }

    #[test]
    fn json_patch_apply_never_panics_and_is_atomic(doc in json_value(), patch in json_value()) {
        if let Ok(p) = JsonPatch::from_value(&patch) {
            let mut d = doc.clone();
            if p.apply(&mut d).is_err() {
                prop_assert_eq!(d, doc);
            }
        }
    }

    #[test]
    fn merge_patch_is_idempotent(doc in json_value(), patch in json_value()) {
        let mut once = doc.clone();
        merge_patch(&mut once, &patch);
        let mut twice = once.clone();
        merge_patch(&mut twice, &patch);
        prop_assert_eq!(once, twice);
    }

    #[test]
    fn strategic_merge_patch_never_panics(orig in object(), patch in object(), s in schemas()) {
        if let Ok(out) = strategic_merge_patch_value(&orig, &patch, s) {
            prop_assert!(out.is_object());
            let _ = strategic_merge_patch(&orig, out.to_string().as_bytes(), s);
        }
    }

    #[test]
    fn fields_v1_round_trips(obj in object(), s in schemas()) {
        if let Ok(set) = field_set(s, &obj) {
            let back = FieldSet::from_fields_v1(&set.to_fields_v1()).expect("own encoding parses");
            prop_assert_eq!(back, set);
        }
    }

    #[test]
    fn fields_v1_decoder_never_panics(v in json_value()) {
        let _ = FieldSet::from_fields_v1(&v);
    }

    #[test]
    fn apply_is_idempotent(cfg in object(), live in proptest::option::of(object()), s in schemas(), force in any::<bool>()) {
        let m = Manager { name: "m", api_version: "v1", subresource: "", time: "t" };
        let mut cfg = cfg;
        if let Some(meta) = cfg.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("managedFields");
        }
        if let Ok(once) = apply(s, live.as_ref(), &cfg, &m, force) {
            let twice = apply(s, Some(&once), &cfg, &m, force).expect("re-applying the same config works");
            prop_assert_eq!(once, twice);
        }
    }
}
