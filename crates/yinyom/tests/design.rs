//! The banner's design per tenant, through the real router on the real
//! store (SQLite and PostgreSQL): stored with history, refused with 422
//! when Accept and Reject lose equal prominence or text loses WCAG AA
//! contrast, served to the banner, and never a notice change.

#[macro_use]
mod common;

use axum::http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};
use yinyom::model::Role;

use common::{Backend, TestApp, json_of};

async fn setup(t: &TestApp) -> String {
    t.post(
        "/v1/purposes",
        json!({
            "key": "analytics", "basis": "consent", "channels": ["web"], "retention_days": 365,
            "names": { "th": "การวิเคราะห์", "en": "Analytics" },
            "banner": { "consent_mode": ["analytics_storage"] },
        }),
    )
    .await;
    t.post(
        "/v1/notices",
        json!({
            "key": "cookies", "purposes": ["analytics"],
            "texts": { "en": { "title": "Cookies", "body": "We use cookies." },
                       "th": { "title": "คุกกี้", "body": "เราใช้คุกกี้" } },
        }),
    )
    .await;
    let (s, _, tenant) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "banner": { "notice": "cookies" } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{tenant}");
    tenant["banner"]["site_key"].as_str().unwrap().to_string()
}

async fn config(t: &TestApp, site: &str) -> Value {
    let (s, _, b) = t
        .request_raw(
            Method::GET,
            &format!("/sdk/v1/config?site_key={site}"),
            None,
            &[],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    json_of(&b)
}

async fn put(t: &TestApp, key: &str, design: Value) -> (StatusCode, Value) {
    let (s, _, b) = t
        .request(Method::PUT, "/v1/tenant/banner-design", key, Some(design))
        .await;
    (s, b)
}

fn dark_corner() -> Value {
    json!({
        "position": "corner_box",
        "font_family": "Sarabun, Georgia, serif",
        "font_size": 17,
        "radius": 12,
        "logo_url": "https://shop.example/logo.png",
        "colors": {
            "background": "#fdf6e3", "text": "#1f2937", "accent": "#7c2d12",
            "accept_background": "#7c2d12", "accept_text": "#ffffff",
            "reject_background": "#7c2d12", "reject_text": "#ffffff"
        },
        "dark": {
            "background": "#111827", "text": "#f9fafb", "accent": "#fcd34d",
            "accept_background": "#fcd34d", "accept_text": "#111827",
            "reject_background": "#fcd34d", "reject_text": "#111827"
        },
        "texts": { "th": { "title": "เราใช้คุกกี้", "reject": "ไม่ยอมรับ" }, "en": { "accept": "Allow all" } }
    })
}

async fn design_is_stored_with_history_and_served_to_the_banner(backend: Backend) {
    let mut t = TestApp::new(backend).await;
    let site = setup(&t).await;
    let before = config(&t, &site).await;
    assert!(before.get("design").is_none(), "no design yet: {before}");
    let none = t.get("/v1/tenant/banner-design").await;
    assert_eq!(none["version"], 0);
    assert_eq!(none["design"]["position"], "bottom_bar");

    // A visitor accepts under the standard look.
    let anon = "0b0d5f3e-5a43-4d2c-9c57-8f0e5c1f6a01";
    let (s, _, _) = t
        .request(
            Method::POST,
            "/sdk/v1/consents",
            "",
            Some(json!({
                "site_key": site, "anonymous_id": anon,
                "notice": { "key": "cookies", "version": before["notice"]["version"] },
                "actions": [{ "purpose": "analytics", "action": "grant" }],
                "evidence": { "ui_element": "accept_all" },
            })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let (s, v1) = put(&t, &t.owner, json!({ "position": "center_modal" })).await;
    assert_eq!(s, StatusCode::OK, "{v1}");
    assert_eq!(v1["version"], 1);
    let admin = t.key(Role::Admin).await;
    let (s, v2) = put(&t, &admin, dark_corner()).await;
    assert_eq!(s, StatusCode::OK, "{v2}");
    assert_eq!(v2["version"], 2);
    assert_eq!(
        v2["design"]["accept"]["font_weight"], 600,
        "defaults filled in"
    );

    let current = t.get("/v1/tenant/banner-design").await;
    assert_eq!(current["version"], 2);
    assert_eq!(current["design"]["colors"]["background"], "#fdf6e3");
    let history = t.get("/v1/tenant/banner-design/history").await;
    let versions: Vec<_> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                v["version"].as_u64().unwrap(),
                v["design"]["position"].clone(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [(2, json!("corner_box")), (1, json!("center_modal"))],
        "{history}"
    );
    let page = t
        .get("/v1/tenant/banner-design/history?limit=1&before=2")
        .await;
    assert_eq!(page["versions"][0]["version"], 1, "{page}");

    // The banner gets the design; the notice stays exactly as it was.
    let after = config(&t, &site).await;
    assert_eq!(after["design"]["position"], "corner_box");
    assert_eq!(after["design"]["dark"]["accent"], "#fcd34d");
    assert_eq!(after["design"]["texts"]["th"]["reject"], "ไม่ยอมรับ");
    assert_eq!(
        after["notice"], before["notice"],
        "a design is not a notice change"
    );
    let notice = t.get("/v1/notices/cookies").await;
    assert_eq!(notice["version"], before["notice"]["version"], "{notice}");
    let d = t
        .get(&format!("/v1/decisions?subject={anon}&purpose=analytics"))
        .await;
    assert_eq!(d["allowed"], true, "the earlier consent still stands: {d}");

    // Turning the banner's other settings does not lose the design, nor
    // does a restart (the view is rebuilt from the store).
    let (s, _, _) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "banner": { "notice": "cookies" } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    t.restart().await;
    let again = config(&t, &site).await;
    assert_eq!(again["design"], after["design"]);

    // Only owners and admins change it.
    let user = t.key(Role::User).await;
    let (s, _) = put(&t, &user, json!({})).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
}

async fn designs_that_break_equal_prominence_or_contrast_are_refused(backend: Backend) {
    let t = TestApp::new(backend).await;
    let site = setup(&t).await;
    let colours = |over: Value| {
        let mut c = json!({
            "background": "#ffffff", "text": "#111827", "accent": "#1d4ed8",
            "accept_background": "#1d4ed8", "accept_text": "#ffffff",
            "reject_background": "#1d4ed8", "reject_text": "#ffffff"
        });
        for (k, v) in over.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    let cases = [
        // A filled Accept beside a Reject that melts into the banner.
        (
            json!({ "colors": colours(json!({ "reject_background": "#ffffff", "reject_text": "#1d4ed8" })) }),
            "colors.reject_background",
        ),
        // Reject's text at 2.6:1.
        (
            json!({ "colors": colours(json!({ "reject_text": "#8aa4f0" })) }),
            "colors.reject_text",
        ),
        (
            json!({ "colors": colours(json!({ "accept_text": "#3b62e0" })) }),
            "colors.accept_text",
        ),
        // Banner text at 2.8:1.
        (
            json!({ "colors": colours(json!({ "text": "#999999" })) }),
            "colors.text",
        ),
        (
            json!({ "dark": colours(json!({ "background": "#111827", "text": "#374151" })) }),
            "dark.text",
        ),
        (json!({ "reject": { "hidden": true } }), "reject.hidden"),
        (json!({ "reject": { "font_size": 12 } }), "reject.font_size"),
        (
            json!({ "accept": { "font_weight": 800 }, "reject": { "font_weight": 400 } }),
            "reject.font_weight",
        ),
        (
            json!({ "font_family": "x;}body{display:none" }),
            "font_family",
        ),
        (json!({ "logo_url": "javascript:alert(1)" }), "logo_url"),
        (
            json!({ "texts": { "en": { "reject": "" } } }),
            "texts.en.reject",
        ),
    ];
    for (design, field) in cases {
        let (s, p) = put(&t, &t.owner, design.clone()).await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{design} → {p}");
        assert_eq!(p["field"], field, "{design} → {p}");
    }
    // Unknown fields and positions are refused too, not ignored.
    for design in [
        json!({ "position": "top_left" }),
        json!({ "shadow": "big" }),
    ] {
        let (s, p) = put(&t, &t.owner, design.clone()).await;
        assert!(s.is_client_error(), "{design} → {s} {p}");
    }
    // Nothing refused was stored or served.
    let history = t.get("/v1/tenant/banner-design/history").await;
    assert_eq!(history["versions"], json!([]), "{history}");
    assert!(config(&t, &site).await.get("design").is_none());
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// The console session's cookies.
fn cookies(h: &HeaderMap, jar: &mut Vec<(String, String)>) {
    for v in h.get_all(header::SET_COOKIE) {
        let c = v.to_str().unwrap();
        let (kv, _) = c.split_once(';').unwrap_or((c, ""));
        let (k, v) = kv.split_once('=').unwrap();
        jar.retain(|(n, _)| n != k);
        if !v.is_empty() && !c.contains("Max-Age=0") {
            jar.push((k.into(), v.into()));
        }
    }
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 64].to_string()
}

async fn console_design_page_previews_refuses_and_saves(backend: Backend) {
    let t = TestApp::new(backend).await;
    let site = setup(&t).await;
    t.post(
        "/v1/staff",
        json!({ "email": "admin@example.com", "name": "A", "role": "admin", "password": "a long enough secret" }),
    )
    .await;
    let mut jar = Vec::new();
    let (_, h, b) = t
        .request_raw(Method::GET, "/admin/login", None, &[], None)
        .await;
    cookies(&h, &mut jar);
    let cookie = |jar: &Vec<(String, String)>| {
        jar.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    };
    let html = String::from_utf8_lossy(&b).into_owned();
    let c = cookie(&jar);
    let (s, h, _) = t
        .request_raw(
            Method::POST,
            "/admin/login",
            None,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("cookie", &c),
            ],
            Some(form(&[
                ("csrf", &csrf_in(&html)),
                ("email", "admin@example.com"),
                ("password", "a long enough secret"),
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    cookies(&h, &mut jar);
    let c = cookie(&jar);
    let (s, h, b) = t
        .request_raw(
            Method::GET,
            "/admin/banner?lang=en",
            None,
            &[("cookie", &c)],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    cookies(&h, &mut jar);
    let c = cookie(&jar);
    let html = String::from_utf8_lossy(&b).into_owned();
    assert!(
        html.contains("Banner design") && html.contains("Preview"),
        "{html}"
    );
    let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        !csp.contains("script-src"),
        "no script runs in the console: {csp}"
    );
    let csrf = csrf_in(&html);
    let post = |fields: Vec<(&'static str, &'static str)>| {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend(fields);
        let body = form(&all);
        let c = c.clone();
        let t = &t;
        async move {
            let (s, _, b) = t
                .request_raw(
                    Method::POST,
                    "/admin/banner",
                    None,
                    &[
                        ("content-type", "application/x-www-form-urlencoded"),
                        ("cookie", &c),
                    ],
                    Some(body),
                )
                .await;
            (s, String::from_utf8_lossy(&b).into_owned())
        }
    };
    // Preview a corner box: drawn with the draft, nothing stored.
    let (s, html) = post(vec![
        ("do", "preview"),
        ("position", "corner_box"),
        ("colors.background", "#fdf6e3"),
        ("texts.en.accept", "Allow all"),
    ])
    .await;
    assert_eq!(s, StatusCode::OK, "{html}");
    assert!(
        html.contains("background:#fdf6e3") && html.contains("Allow all"),
        "{html}"
    );
    assert!(html.contains("not saved"), "{html}");
    assert_eq!(t.get("/v1/tenant/banner-design").await["version"], 0);
    // A grey Reject on a white banner: refused, the reason at its field.
    let (s, html) = post(vec![
        ("do", "save"),
        ("colors.reject_background", "#ffffff"),
        ("colors.reject_text", "#6b7280"),
    ])
    .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{html}");
    assert!(
        html.contains("Not saved") && html.contains("colors.reject_text"),
        "{html}"
    );
    assert!(html.contains("aria-invalid=\"true\""), "{html}");
    assert_eq!(t.get("/v1/tenant/banner-design").await["version"], 0);
    // A good one is saved and served.
    let (s, html) = post(vec![
        ("do", "save"),
        ("position", "center_modal"),
        ("texts.th.reject", "ไม่ยอมรับ"),
    ])
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "{html}");
    let now = t.get("/v1/tenant/banner-design").await;
    assert_eq!(now["version"], 1);
    assert_eq!(now["design"]["position"], "center_modal");
    let cfg = config(&t, &site).await;
    assert_eq!(cfg["design"]["texts"]["th"]["reject"], "ไม่ยอมรับ");
}

on_every_backend!(
    design_is_stored_with_history_and_served_to_the_banner,
    designs_that_break_equal_prominence_or_contrast_are_refused,
    console_design_page_previews_refuses_and_saves,
);
