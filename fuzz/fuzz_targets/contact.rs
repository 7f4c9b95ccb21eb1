//! Contact points: any text either normalises (idempotently: a normalised
//! value normalises to itself) or is refused, for every kind; masking a
//! normalised value never fails.
#![no_main]
use libfuzzer_sys::fuzz_target;
use yinyom_core::contact::ContactKind;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [ContactKind::Email, ContactKind::Phone, ContactKind::LineId] {
        if let Ok(v) = kind.normalize(s) {
            assert_eq!(kind.normalize(&v).ok().as_deref(), Some(v.as_str()), "{kind:?} {s:?}");
            let _ = kind.mask(&v);
        }
    }
});
