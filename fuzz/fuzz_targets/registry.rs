//! What the API parses from JSON: purposes, notice drafts, webhook
//! settings and consent requests. Any bytes are refused or accepted without panicking; accepted
//! ones are validated, and consent requests are checked against a small
//! registry as `POST /v1/consents` does.
#![no_main]
use libfuzzer_sys::fuzz_target;

mod registry {
    include!("common.rs");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = serde_json::from_slice::<yinyom_core::purpose::Purpose>(data) {
        let _ = p.validate();
    }
    if let Ok(n) = serde_json::from_slice::<yinyom_core::notice::NoticeDraft>(data) {
        let _ = n.validate();
    }
    if let Ok(w) = serde_json::from_slice::<yinyom::api::webhooks::NewWebhook>(data) {
        let _ = yinyom::api::webhooks::check(&w);
    }
    if let Ok(req) = serde_json::from_slice::<yinyom::record::ConsentRequest>(data) {
        let view = registry::view();
        let _ = yinyom::record::prepare(&view, req, "key:fuzz", yinyom::record::Origin::Api, None, 1_800_000_000_000_000);
    }
});
