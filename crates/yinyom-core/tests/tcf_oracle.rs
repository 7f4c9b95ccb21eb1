//! The TC string decoder against the IAB's own library: strings encoded by
//! `@iabtechlabtcf/core` (random models over random vendor lists, made by
//! `web-tests/tcf-strings.mjs` now, with a fresh seed) must decode here to
//! exactly what that library decodes them to. Without node (or before
//! `npm ci` in web-tests/) the committed output of the same script is used.

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use yinyom_core::tcf::TcString;

const FIXTURE: &str = include_str!("tcf-strings.json");

fn oracle() -> (Value, &'static str) {
    let web_tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../web-tests");
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() % (1 << 31))
        .unwrap_or(1);
    if web_tests.join("node_modules/@iabtechlabtcf/core").is_dir()
        && let Ok(out) = Command::new("node")
            .arg("tcf-strings.mjs")
            .arg(seed.to_string())
            .arg("300")
            .current_dir(&web_tests)
            .output()
    {
        assert!(
            out.status.success(),
            "tcf-strings.mjs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return (
            serde_json::from_slice(&out.stdout).expect("the script prints JSON"),
            "generated now",
        );
    }
    (
        serde_json::from_str(FIXTURE).expect("the fixture is JSON"),
        "committed fixture (node or web-tests/node_modules missing)",
    )
}

#[test]
fn decodes_what_the_iab_library_encodes() {
    let (data, from) = oracle();
    let seed = &data["seed"];
    let cases = data["cases"].as_array().expect("cases");
    assert!(cases.len() >= 100, "too few cases from the oracle");
    let (mut ranges, mut bitfields, mut restricted, mut publisher) = (0, 0, 0, 0);
    for (i, c) in cases.iter().enumerate() {
        let s = c["string"].as_str().expect("string");
        let want = &c["decoded"];
        let tc = TcString::decode(s)
            .unwrap_or_else(|e| panic!("case {i} (seed {seed}, {from}): {s}: {e}"));
        let mut got = serde_json::to_value(&tc).expect("serialises");
        // The library reports empty sets for segments the string lacks.
        if tc.disclosed_vendors.is_none() {
            got["disclosed_vendors"] = json!([]);
        }
        if tc.publisher_tc.is_none() {
            got["publisher_tc"] = json!({
                "purposes_consent": [], "purposes_li_transparency": [],
                "num_custom_purposes": 0, "custom_purposes_consent": [],
                "custom_purposes_li_transparency": []
            });
        } else {
            publisher += 1;
        }
        got.as_object_mut().map(|o| o.remove("allowed_vendors"));
        assert_eq!(&got, want, "case {i} (seed {seed}, {from}): {s}");
        // Which vendor encoding the library chose: the bit after MaxVendorId.
        let core = s.split('.').next().unwrap_or_default();
        let bits = core_bits(core);
        if bits.get(229) == Some(&true) {
            ranges += 1;
        } else {
            bitfields += 1;
        }
        if !tc.core.publisher_restrictions.is_empty() {
            restricted += 1;
        }
    }
    // The cases exercise every branch of the decoder.
    assert!(
        ranges > 0 && bitfields > 0,
        "ranges {ranges}, bitfields {bitfields}"
    );
    assert!(restricted > 0 && publisher > 0);
}

/// The core segment as bits (IsRangeEncoding of the consent section is bit 229).
fn core_bits(s: &str) -> Vec<bool> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .unwrap_or_default();
    bytes
        .iter()
        .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1 == 1))
        .collect()
}
