//! CSV and JSONL imports: any file is read row by row without panicking,
//! and every row that parses passes or fails the checks a consent request
//! gets (against a small registry), never anything worse.
#![no_main]
use libfuzzer_sys::fuzz_target;

mod registry {
    include!("common.rs");
}

fuzz_target!(|data: &[u8]| {
    let view = registry::view();
    for format in [yinyom::cli::Format::Csv, yinyom::cli::Format::Jsonl] {
        for (_, row) in yinyom::transfer::parse(format, data.to_vec()) {
            if let Ok(req) = row {
                let _ = yinyom::record::prepare(&view, req, "import", yinyom::record::Origin::Import, None, 1_800_000_000_000_000);
            }
        }
    }
});
