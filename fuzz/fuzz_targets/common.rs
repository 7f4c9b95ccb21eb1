// A small registry for the fuzz targets: two purposes (one with channels and
// a validity period, one sensitive) and a notice asking for both.
use yinyom::view::TenantView;

pub fn view() -> TenantView {
    let tenant = serde_json::from_value(serde_json::json!({
        "id": "t1", "name": "Fuzz", "dpo": { "name": "D", "email": "d@example.com" },
        "jurisdictions": ["TH"], "default_lang": "th", "created_at": 0,
    }))
    .expect("a tenant");
    let purposes = [
        serde_json::json!({ "key": "marketing.email", "names": { "en": "Email" }, "basis": "consent",
            "channels": ["email", "sms"], "retention_days": 365, "validity_days": 180 }),
        serde_json::json!({ "key": "health", "names": { "en": "Health" }, "basis": "contract",
            "categories": [{ "name": "health", "sensitivity": "sensitive" }], "retention_days": 30 }),
    ]
    .into_iter()
    .map(|p| serde_json::from_value(p).expect("a purpose"))
    .collect();
    let notice = serde_json::from_value(serde_json::json!({
        "key": "main", "version": 1, "texts": { "en": { "title": "t", "body": "b" } },
        "purposes": ["marketing.email", "health"], "material": false,
        "content_hash": "00", "published_at": 0,
    }))
    .expect("a notice");
    TenantView::with(tenant, purposes, &[notice])
}
