//! The segment filter language: any input parses or is refused with a
//! position inside it; what parses prints back to text that parses to the
//! same segment.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(src) = std::str::from_utf8(data) else {
        return;
    };
    match yinyom_core::segment::parse(src) {
        Ok(seg) => {
            let printed = seg.to_string();
            let again = yinyom_core::segment::parse(&printed).expect("printed segments parse");
            assert_eq!(again, seg, "{printed}");
        }
        Err(e) => assert!(e.position <= src.chars().count() + 1, "{e:?} for {src:?}"),
    }
});
