//! IAB TCF v2.2 and GPP through the real router on the real store, on
//! SQLite and PostgreSQL: the tenant's TCF settings, the vendor list
//! fetched from a loopback server (a small list made here, never the
//! network), stored per version and served from our origin; TC strings as
//! evidence, checked against the choice and shown decoded on the subject;
//! and the size of both banner scripts. (The banner itself, `__tcfapi`,
//! `__gpp` and the strings it writes are checked in Chromium against the
//! IAB's own decoders in `web-tests/tcf.test.mjs`.)

#[macro_use]
mod common;

use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode, header};
use base64::Engine;
use serde_json::{Value, json};

use common::{Backend, TestApp, json_of};

/// A v3 vendor list: purposes 1-11, two special features, one stack, data
/// categories, and `vendors`.
fn vendor_list(version: u32, vendors: &[u16]) -> Value {
    let named = |n: u32, what: &str| -> Value {
        (1..=n)
            .map(|i| {
                (
                    i.to_string(),
                    json!({ "id": i, "name": format!("{what} {i}"), "description": "…", "illustrations": [] }),
                )
            })
            .collect::<serde_json::Map<_, _>>()
            .into()
    };
    let vendors: serde_json::Map<String, Value> = vendors
        .iter()
        .map(|id| {
            (
                id.to_string(),
                json!({
                    "id": id, "name": format!("Vendor {id}"), "purposes": [1, 3, 4],
                    "legIntPurposes": [7], "flexiblePurposes": [], "specialPurposes": [1],
                    "features": [], "specialFeatures": [], "cookieMaxAgeSeconds": 86400,
                    "usesCookies": true, "usesNonCookieAccess": false,
                    "dataRetention": { "stdRetention": 30, "purposes": {}, "specialPurposes": {} },
                    "urls": [{ "langId": "en", "privacy": "https://v.example/p" }],
                    "dataDeclaration": [1, 2],
                }),
            )
        })
        .collect();
    json!({
        "gvlSpecificationVersion": 3, "vendorListVersion": version, "tcfPolicyVersion": 5,
        "lastUpdated": "2026-11-26T16:00:00Z",
        "purposes": named(11, "Purpose"), "specialPurposes": named(2, "Special purpose"),
        "features": named(3, "Feature"), "specialFeatures": named(2, "Special feature"),
        "stacks": { "1": { "id": 1, "purposes": [2, 7], "specialFeatures": [], "name": "Stack", "description": "…" } },
        "dataCategories": named(11, "Data category"),
        "vendors": vendors,
    })
}

/// A loopback server answering `/gvl.json` with whatever `list` holds, and
/// `/broken.json` with something that is not a vendor list.
async fn serve(list: Arc<Mutex<Value>>) -> String {
    use axum::routing::get;
    let app = axum::Router::new()
        .route(
            "/gvl.json",
            get(move || {
                let v = list.lock().unwrap().clone();
                async move { axum::Json(v) }
            }),
        )
        .route(
            "/broken.json",
            get(|| async { axum::Json(json!({ "vendorListVersion": 3 })) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// A TC string core segment, written bit by bit for the test.
fn tc_string(cmp_id: u64, purposes: &[u8], vendors: &[u16]) -> String {
    tc_string_v(cmp_id, 7, purposes, vendors)
}

/// The same, made under vendor list version `list`.
fn tc_string_v(cmp_id: u64, list: u64, purposes: &[u8], vendors: &[u16]) -> String {
    let mut bits: Vec<bool> = Vec::new();
    let mut put = |v: u64, n: usize| {
        for i in (0..n).rev() {
            bits.push((v >> i) & 1 == 1);
        }
    };
    put(2, 6);
    put(17_800_000_000, 36);
    put(17_800_000_000, 36);
    put(cmp_id, 12);
    put(1, 12);
    put(1, 6);
    put(4, 6); // E
    put(13, 6); // N
    put(list, 12);
    put(5, 6);
    put(1, 1);
    put(0, 1);
    put(0, 12);
    let field =
        |ids: &[u8]| (1..=24u8).fold(0u64, |acc, i| (acc << 1) | u64::from(ids.contains(&i)));
    put(field(purposes), 24);
    put(0, 24);
    put(0, 1);
    put(0, 6); // AA
    put(0, 6);
    let max = vendors.iter().copied().max().unwrap_or(0);
    put(u64::from(max), 16);
    put(0, 1);
    for id in 1..=max {
        put(u64::from(vendors.contains(&id)), 1);
    }
    put(0, 16);
    put(0, 1);
    put(0, 12);
    let mut bytes = vec![0u8; bits.len().div_ceil(8)];
    for (i, b) in bits.iter().enumerate() {
        if *b {
            bytes[i / 8] |= 1 << (7 - i % 8);
        }
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn setup(t: &TestApp) {
    for (key, sale) in [("analytics", false), ("ads", true), ("social", false)] {
        t.post(
            "/v1/purposes",
            json!({
                "key": key, "basis": "consent", "channels": ["web"], "retention_days": 365,
                "names": { "en": key }, "banner": { "sale_or_sharing": sale },
            }),
        )
        .await;
    }
    t.post(
        "/v1/notices",
        json!({ "key": "cookies", "purposes": ["analytics", "ads", "social"],
                "texts": { "en": { "title": "Cookies", "body": "…" } } }),
    )
    .await;
}

async fn patch(t: &TestApp, banner: Value) -> (StatusCode, Value) {
    let (s, _, b) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "banner": banner })),
        )
        .await;
    (s, b)
}

async fn public(
    t: &TestApp,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let (s, _, b) = t
        .request_raw(
            method,
            path,
            None,
            &[("origin", "https://news.example")],
            body.map(|b| serde_json::to_vec(&b).unwrap()),
        )
        .await;
    (s, json_of(&b))
}

fn consent(site: &str, anon: &str, actions: Value, tc: Option<&str>) -> Value {
    json!({
        "site_key": site, "anonymous_id": anon,
        "notice": { "key": "cookies", "version": 1 },
        "actions": actions,
        "evidence": { "ui_element": "save_preferences", "tc_string": tc, "gpp_string": tc.map(|_| "DBABMA~CAAAAAA") },
    })
}

async fn tcf_is_configured_fetched_served_and_checked(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let list = Arc::new(Mutex::new(vendor_list(7, &[1, 2, 3, 10])));
    let origin = serve(list.clone()).await;
    let url = format!("{origin}/gvl.json");

    // Refused settings, each naming its field; nothing is saved.
    let dead = format!("http://127.0.0.1:{}/gvl.json", common::free_port());
    let tcf = |extra: Value| {
        let mut v = json!({ "cmp_id": 300, "vendor_list_url": url });
        v.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "notice": "cookies", "tcf": v })
    };
    for (banner, field) in [
        (tcf(json!({ "cmp_id": 1 })), "banner.tcf.cmp_id"),
        (
            tcf(json!({ "vendor_list_url": dead })),
            "banner.tcf.vendor_list_url",
        ),
        (
            tcf(json!({ "vendor_list_url": format!("{origin}/broken.json") })),
            "banner.tcf.vendor_list_url",
        ),
        (
            tcf(json!({ "vendor_list_url": "ftp://x" })),
            "banner.tcf.vendor_list_url",
        ),
        (
            tcf(json!({ "purposes": { "3": "nope" } })),
            "banner.tcf.purposes.3",
        ),
        (
            tcf(json!({ "purposes": { "12": "ads" } })),
            "banner.tcf.purposes.12",
        ),
        (
            tcf(json!({ "publisher_cc": "th" })),
            "banner.tcf.publisher_cc",
        ),
        (tcf(json!({ "vendors": [1, 99] })), "banner.tcf.vendors"),
        (
            json!({ "notice": "cookies", "gpp": { "sections": ["usnat"] } }),
            "banner.gpp",
        ),
        (
            json!({ "notice": "cookies", "tcf": { "cmp_id": 300, "vendor_list_url": url }, "gpp": { "sections": ["uspv1"] } }),
            "banner.gpp.sections/0",
        ),
    ] {
        let (s, p) = patch(&t, banner.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{banner}: {p}");
        assert_eq!(p["field"], field, "{banner}: {p}");
    }
    assert!(t.get("/v1/tenant").await.get("banner").is_none());

    // The contract of the issue, as written.
    let (s, tenant) = patch(
        &t,
        json!({ "notice": "cookies", "tcf": { "cmp_id": 300, "vendor_list_url": url } }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{tenant}");
    assert_eq!(tenant["banner"]["tcf"]["cmp_id"], 300);
    assert_eq!(tenant["banner"]["tcf"]["cmp_version"], 1);
    // With a purpose mapping, a vendor selection and GPP.
    let (s, tenant) = patch(
        &t,
        json!({ "notice": "cookies",
                "tcf": { "cmp_id": 300, "cmp_version": 4, "vendor_list_url": url, "publisher_cc": "TH",
                         "purposes": { "1": "analytics", "3": "ads", "4": "ads" }, "vendors": [1, 3, 10] },
                "gpp": { "sections": ["tcfeuv2", "usnat"] } }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{tenant}");
    let site = tenant["banner"]["site_key"].as_str().unwrap().to_string();

    // The banner's config names the lazily loaded script and our copy of the list.
    let (s, config) = public(
        &t,
        Method::GET,
        &format!("/sdk/v1/config?site_key={site}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{config}");
    let c = &config["tcf"];
    assert_eq!(c["cmp_id"], 300);
    assert_eq!(c["cmp_version"], 4);
    assert_eq!(c["script"], "/sdk/tcf.js");
    assert_eq!(c["gpp"], json!(["tcfeuv2", "usnat"]));
    assert_eq!(
        c["purposes"],
        json!({ "1": "analytics", "3": "ads", "4": "ads" })
    );
    let gvl_path = c["vendor_list"].as_str().unwrap().to_string();
    let (s, gvl) = public(&t, Method::GET, &gvl_path, None).await;
    assert_eq!(s, StatusCode::OK, "{gvl}");
    assert_eq!(gvl["vendorListVersion"], 7);
    let served: Vec<&String> = gvl["vendors"].as_object().unwrap().keys().collect();
    assert_eq!(served, ["1", "10", "3"], "only the publisher's vendors");

    // A new version upstream is fetched when the settings are saved again;
    // the old one stays readable.
    *list.lock().unwrap() = vendor_list(8, &[1, 2, 3, 10, 11]);
    let (s, _) = patch(
        &t,
        json!({ "notice": "cookies",
                "tcf": { "cmp_id": 300, "vendor_list_url": url, "purposes": { "1": "analytics", "3": "ads", "4": "ads" } } }),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let (_, gvl) = public(&t, Method::GET, &gvl_path, None).await;
    assert_eq!(gvl["vendorListVersion"], 8);
    assert_eq!(gvl["vendors"].as_object().unwrap().len(), 5);
    let (_, old) = public(&t, Method::GET, &format!("{gvl_path}&version=7"), None).await;
    assert_eq!(old["vendorListVersion"], 7);
    let (s, p) = public(&t, Method::GET, &format!("{gvl_path}&version=99"), None).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{p}");

    // A choice with its TC string: purposes 1 and 3 consented, 4 not, so
    // analytics (1) is granted and ads (3 and 4) is not.
    let anon = "0192f3a0-7a1b-7c2d-8e3f-405162738495";
    let tc = tc_string(300, &[1, 3], &[1, 3]);
    let actions = |ads: &str| {
        json!([{ "purpose": "analytics", "action": "grant" }, { "purpose": "ads", "action": ads },
               { "purpose": "social", "action": "grant" }])
    };
    for (body, field) in [
        // The string says no to purpose 4, so ads cannot be granted.
        (
            consent(&site, anon, actions("grant"), Some(&tc)),
            "actions/1/action",
        ),
        (
            consent(&site, anon, actions("deny"), None),
            "evidence.tc_string",
        ),
        (
            consent(&site, anon, actions("deny"), Some("not a tc string")),
            "evidence.tc_string",
        ),
        (
            consent(
                &site,
                anon,
                actions("deny"),
                Some(&tc_string(301, &[1, 3], &[1])),
            ),
            "evidence.tc_string",
        ),
        // Made under a vendor list version this server never fetched.
        (
            consent(
                &site,
                anon,
                actions("deny"),
                Some(&tc_string_v(300, 6, &[1, 3], &[1])),
            ),
            "evidence.tc_string",
        ),
        (
            consent(
                &site,
                anon,
                json!([{ "purpose": "analytics", "action": "grant" }]),
                Some(&tc),
            ),
            "actions",
        ),
    ] {
        let (s, p) = public(&t, Method::POST, "/sdk/v1/consents", Some(body.clone())).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {p}");
        assert_eq!(p["field"], field, "{body}: {p}");
    }
    let (s, r) = public(
        &t,
        Method::POST,
        "/sdk/v1/consents",
        Some(consent(&site, anon, actions("deny"), Some(&tc))),
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");

    // Decisions and the TC string agree; the subject shows it decoded.
    for (purpose, allowed) in [("analytics", true), ("ads", false), ("social", true)] {
        let d = t
            .get(&format!("/v1/decisions?subject={anon}&purpose={purpose}"))
            .await;
        assert_eq!(d["allowed"], allowed, "{purpose}: {d}");
    }
    let subject = t.get(&format!("/v1/subjects/{anon}")).await;
    let s = &subject["tcf"];
    assert_eq!(s["tc_string"], tc.as_str(), "{subject}");
    assert_eq!(s["decoded"]["core"]["cmp_id"], 300);
    assert_eq!(s["decoded"]["core"]["purposes_consent"], json!([1, 3]));
    assert_eq!(s["decoded"]["core"]["vendor_consents"], json!([1, 3]));
    assert_eq!(s["purposes"], json!({ "analytics": true, "ads": false }));
    assert_eq!(s["gpp_string"], "DBABMA~CAAAAAA");
    let hist = t
        .get(&format!("/v1/subjects/{anon}/consents?history=true"))
        .await;
    assert_eq!(hist["history"][0]["evidence"]["tc_string"], tc.as_str());

    // Off again: TC strings are refused, the list is no longer served.
    let (s, _) = patch(&t, json!({ "notice": "cookies" })).await;
    assert_eq!(s, StatusCode::OK);
    let (s, p) = public(
        &t,
        Method::POST,
        "/sdk/v1/consents",
        Some(consent(&site, anon, actions("deny"), Some(&tc))),
    )
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    let (s, _) = public(&t, Method::GET, &gvl_path, None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, config) = public(
        &t,
        Method::GET,
        &format!("/sdk/v1/config?site_key={site}"),
        None,
    )
    .await;
    assert!(config.get("tcf").is_none(), "{config}");
}

async fn a_stale_vendor_list_is_refreshed_in_the_background(backend: Backend) {
    use yinyom::store::VendorLists;
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let list = Arc::new(Mutex::new(vendor_list(7, &[1, 2])));
    let url = format!("{}/gvl.json", serve(list.clone()).await);
    let (s, tenant) = patch(
        &t,
        json!({ "notice": "cookies", "tcf": { "cmp_id": 300, "vendor_list_url": url } }),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{tenant}");
    let site = tenant["banner"]["site_key"].as_str().unwrap().to_string();
    let path = format!("/sdk/v1/tcf/vendor-list?site_key={site}");
    // Upstream moves on; our copy was fetched two days ago.
    *list.lock().unwrap() = vendor_list(8, &[1, 2, 3]);
    let mut stored = t.store.vendor_list(&t.tenant, None).await.unwrap().unwrap();
    stored.fetched_at -= 2 * 24 * 3600 * 1_000_000;
    t.store.put_vendor_list(&t.tenant, &stored).await.unwrap();
    // The stale copy is served at once (no visitor waits for the IAB's
    // server), and the new version replaces it.
    let (s, gvl) = public(&t, Method::GET, &path, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(gvl["vendorListVersion"], 7);
    let refreshed = common::eventually(std::time::Duration::from_secs(10), || async {
        public(&t, Method::GET, &path, None).await.1["vendorListVersion"] == 8
    })
    .await;
    assert!(refreshed, "the list was not refreshed");
    let v7 = t.store.vendor_list(&t.tenant, Some(7)).await.unwrap();
    assert!(v7.is_some(), "older versions are kept");
}

async fn both_scripts_stay_small(backend: Backend) {
    let t = TestApp::new(backend).await;
    let mut sizes = Vec::new();
    for (path, limit) in [("/sdk/yinyom.js", 12 * 1024), ("/sdk/tcf.js", 20 * 1024)] {
        let (s, h, gz) = t
            .request_raw(
                Method::GET,
                path,
                None,
                &[("accept-encoding", "gzip")],
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{path}");
        assert_eq!(h[header::CONTENT_ENCODING], "gzip");
        assert!(gz.len() <= limit, "{path} is {} bytes gzipped", gz.len());
        sizes.push(gz.len());
    }
    println!("gzipped: yinyom.js {} B, tcf.js {} B", sizes[0], sizes[1]);
}

on_every_backend!(
    tcf_is_configured_fetched_served_and_checked,
    a_stale_vendor_list_is_refreshed_in_the_background,
    both_scripts_stay_small
);
