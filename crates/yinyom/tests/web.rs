//! The web surfaces through the real router on the real store, on SQLite
//! and PostgreSQL: the banner's public calls, the preference center's
//! signed links, the admin console's logins, sessions and CSRF checks.
//! (What a browser does with them is in `web-tests/`, run in Chromium.)

#[macro_use]
mod common;

use axum::http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};

use common::{Backend, TestApp, json_of};

const EVIL: &str = "<script>window.pwned=1</script>";

async fn setup(t: &TestApp) -> String {
    t.post(
        "/v1/purposes",
        json!({
            "key": "analytics", "basis": "consent", "channels": ["web"], "retention_days": 365,
            "names": { "th": "การวิเคราะห์", "en": "Analytics" },
            "banner": { "consent_mode": ["analytics_storage"], "cookies": ["_ga", "_ga_*"] },
        }),
    )
    .await;
    t.post(
        "/v1/purposes",
        json!({
            "key": "ads", "basis": "consent", "channels": ["web"], "retention_days": 365,
            "names": { "en": EVIL },
            "banner": { "consent_mode": ["ad_storage"], "sale_or_sharing": true },
        }),
    )
    .await;
    t.post(
        "/v1/purposes",
        json!({
            "key": "marketing.email", "basis": "consent", "channels": ["email", "sms"], "retention_days": 365,
            "names": { "th": "ข่าวสารทางอีเมล", "en": "News by email" },
        }),
    )
    .await;
    t.post(
        "/v1/notices",
        json!({
            "key": "cookies", "purposes": ["analytics", "ads"],
            "texts": { "en": { "title": "Cookies", "body": EVIL } },
        }),
    )
    .await;
    t.post(
        "/v1/notices",
        json!({
            "key": "marketing", "purposes": ["marketing.email"],
            "texts": { "th": { "title": "ข่าวสาร", "body": "…" }, "en": { "title": "News", "body": "…" } },
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

fn choice(site: &str, anon: &str, purpose: &str, action: &str) -> Value {
    json!({
        "site_key": site, "anonymous_id": anon,
        "notice": { "key": "cookies", "version": 1 },
        "actions": [{ "purpose": purpose, "action": action }],
        "evidence": { "page_url": "https://shop.example/cart", "ui_element": "accept_all", "locale": "th-TH" },
    })
}

async fn banner(t: &TestApp, body: Value, origin: &str) -> (StatusCode, HeaderMap, Value) {
    let (s, h, b) = t
        .request_raw(
            Method::POST,
            "/sdk/v1/consents",
            None,
            &[("origin", origin), ("user-agent", "Banner-Test/1.0")],
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await;
    (s, h, json_of(&b))
}

async fn banner_records_choices_as_proof_and_refuses_what_it_may_not_do(backend: Backend) {
    let mut t = TestApp::new(backend).await;
    let site = setup(&t).await;
    let (s, h, config) = t
        .request_raw(
            Method::GET,
            &format!("/sdk/v1/config?site_key={site}"),
            None,
            &[("origin", "https://shop.example"), ("sec-gpc", "1")],
            None,
        )
        .await;
    let config = json_of(&config);
    assert_eq!(s, StatusCode::OK, "{config}");
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    assert_eq!(config["gpc"], true);
    assert_eq!(config["notice"]["version"], 1);
    assert_eq!(config["notice"]["renewal_version"], 1);
    let keys: Vec<&str> = config["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["ads", "analytics"], "only banner purposes: {config}");
    assert_eq!(config["purposes"][0]["sale_or_sharing"], true);

    let anon = "0f8fad5b-d9cb-469f-a165-70867728950e";
    let (s, h, r) = banner(
        &t,
        choice(&site, anon, "analytics", "grant"),
        "https://shop.example",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["recorded"], 1);
    assert!(
        r["receipt"]
            .as_str()
            .is_some_and(|j| j.split('.').count() == 3)
    );
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    let d = t
        .get(&format!("/v1/decisions?subject={anon}&purpose=analytics"))
        .await;
    assert_eq!(d["allowed"], true, "{d}");
    let hist = t
        .get(&format!("/v1/subjects/{anon}/consents?history=true"))
        .await;
    let e = &hist["history"][0];
    assert_eq!(e["source"], "web");
    assert_eq!(e["evidence"]["ui_element"], "accept_all");
    assert_eq!(e["evidence"]["page_url"], "https://shop.example/cart");
    assert_eq!(e["evidence"]["user_agent"], "Banner-Test/1.0");
    // A withdrawal from the banner bites at once.
    let (s, _, _) = banner(
        &t,
        choice(&site, anon, "analytics", "withdraw"),
        "https://x.test",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let d = t
        .get(&format!("/v1/decisions?subject={anon}&purpose=analytics"))
        .await;
    assert_eq!(d["allowed"], false);

    // What the banner may not do.
    for (body, status, field) in [
        (
            choice("site_nope", anon, "analytics", "grant"),
            StatusCode::NOT_FOUND,
            "site_key",
        ),
        (
            choice(&site, "cust-42", "analytics", "grant"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "anonymous_id",
        ),
        (
            choice(&site, anon, "marketing.email", "grant"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "actions/0/purpose",
        ),
        (
            choice(&site, anon, "analytics", "expire"),
            StatusCode::UNPROCESSABLE_ENTITY,
            "actions/0/action",
        ),
        (
            json!({ "site_key": site, "anonymous_id": anon, "notice": { "key": "marketing", "version": 1 },
                    "actions": [{ "purpose": "analytics", "action": "grant" }] }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "notice.key",
        ),
        (
            json!({ "site_key": site, "anonymous_id": anon, "notice": { "key": "cookies", "version": 1 },
                    "actions": [{ "purpose": "analytics", "action": "grant" }],
                    "evidence": { "page_url": "javascript:alert(1)" } }),
            StatusCode::UNPROCESSABLE_ENTITY,
            "evidence.page_url",
        ),
    ] {
        let (s, h, p) = banner(&t, body, "https://shop.example").await;
        assert_eq!(s, status, "{p}");
        assert_eq!(p["field"], field, "{p}");
        assert!(
            h[header::CONTENT_TYPE]
                .to_str()
                .unwrap()
                .starts_with("application/problem+json")
        );
    }
    let (s, _, p) = t
        .request_raw(
            Method::POST,
            "/sdk/v1/consents",
            None,
            &[],
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "{}",
        String::from_utf8_lossy(&p)
    );

    // A known person's id cannot be written through the anonymous banner.
    let known = "6f9619ff-8b86-4d01-b42d-00cf4fc964ff";
    let (s, _, _) = t
        .request(
            Method::PUT,
            &format!("/v1/subjects/{known}"),
            &t.owner,
            Some(json!({ "identifiers": { "email": "known@example.com" } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, p) = banner(
        &t,
        choice(&site, known, "analytics", "grant"),
        "https://shop.example",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{p}");

    // Origins, when listed, are enforced.
    let (s, _, _) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "banner": { "notice": "cookies", "origins": ["https://shop.example"] } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = banner(
        &t,
        choice(&site, anon, "analytics", "grant"),
        "https://evil.example",
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _, _) = banner(
        &t,
        choice(&site, anon, "analytics", "grant"),
        "https://shop.example",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "the site key survived the change");
    t.restart().await;
    let (s, _, p) = banner(
        &t,
        choice(&site, anon, "analytics", "deny"),
        "https://shop.example",
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "and a restart: {p}");
    for (patch, field) in [
        (json!({ "banner": { "notice": "nope" } }), "banner.notice"),
        (
            json!({ "banner": { "notice": "cookies", "origins": ["https://a.example/path"] } }),
            "banner.origins/0",
        ),
    ] {
        let (s, _, p) = t
            .request(Method::PATCH, "/v1/tenant", &t.owner, Some(patch))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["field"], field);
    }

    // The script: gzipped when asked, cached by ETag.
    let (s, h, gz) = t
        .request_raw(
            Method::GET,
            "/sdk/yinyom.js",
            None,
            &[("accept-encoding", "gzip, br")],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::CONTENT_ENCODING], "gzip");
    assert!(
        gz.len() <= 15 * 1024,
        "the banner is {} bytes gzipped",
        gz.len()
    );
    let etag = h[header::ETAG].to_str().unwrap().to_string();
    let (s, _, _) = t
        .request_raw(
            Method::GET,
            "/sdk/yinyom.js",
            None,
            &[("if-none-match", &etag)],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_MODIFIED);
}

/// A banner submission with extra headers; (status, body).
async fn banner_with(t: &TestApp, body: Value, headers: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut all = vec![("origin", "https://shop.example")];
    all.extend_from_slice(headers);
    let (s, _, b) = t
        .request_raw(
            Method::POST,
            "/sdk/v1/consents",
            None,
            &all,
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await;
    (s, json_of(&b))
}

fn accept_all(site: &str, anon: &str, gpc_flag: bool) -> Value {
    json!({
        "site_key": site, "anonymous_id": anon,
        "notice": { "key": "cookies", "version": 1 },
        "actions": [
            { "purpose": "analytics", "action": "grant" },
            { "purpose": "ads", "action": "grant" },
        ],
        "evidence": { "ui_element": "accept_all", "gpc": gpc_flag },
    })
}

async fn allowed(t: &TestApp, anon: &str, purpose: &str) -> bool {
    let d = t
        .get(&format!("/v1/decisions?subject={anon}&purpose={purpose}"))
        .await;
    d["allowed"].as_bool().unwrap()
}

async fn banner_submissions_with_gpc_never_grant_sale_or_sharing(backend: Backend) {
    let t = TestApp::new(backend).await;
    let site = setup(&t).await;
    let purpose = t.get("/v1/purposes/ads").await;
    assert_eq!(purpose["banner"]["sale_or_sharing"], true, "{purpose}");

    // Without GPC, "Accept all" grants both.
    let plain = "7c9e6679-7425-40de-944b-e07fc1f90ae7";
    let (s, r) = banner_with(&t, accept_all(&site, plain, false), &[]).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["gpc_denied"], json!([]));
    assert!(allowed(&t, plain, "ads").await);

    // `Sec-GPC: 1` (a script that sends grants anyway, and says no GPC in
    // its body), or the body's flag alone: the sale-or-sharing purpose is
    // recorded as denied, the other one as asked.
    let header = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
    let flag = "b1ffcd88-8d1a-4ef9-9c7e-7cc8ce491b22";
    for (anon, flag_in_body, headers) in [
        (header, false, &[("sec-gpc", "1")][..]),
        (flag, true, &[][..]),
    ] {
        let (s, r) = banner_with(&t, accept_all(&site, anon, flag_in_body), headers).await;
        assert_eq!(s, StatusCode::CREATED, "{r}");
        assert_eq!(r["recorded"], 2);
        assert_eq!(r["gpc_denied"], json!(["ads"]), "{r}");
        assert!(allowed(&t, anon, "analytics").await);
        assert!(!allowed(&t, anon, "ads").await, "GPC: ads is never granted");
        let hist = t
            .get(&format!("/v1/subjects/{anon}/consents?history=true"))
            .await;
        let ads: Vec<&Value> = hist["history"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["purpose"] == "ads")
            .collect();
        assert_eq!(ads.len(), 1, "{hist}");
        assert_eq!(ads[0]["action"], "deny");
        assert_eq!(ads[0]["evidence"]["gpc"], true);
        assert_eq!(ads[0]["evidence"]["gpc_denied"], json!(["ads"]));
        assert_eq!(ads[0]["evidence"]["ui_element"], "accept_all");
        let consents = t.get(&format!("/v1/subjects/{anon}/consents")).await;
        let state = consents["consents"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["purpose"] == "ads")
            .map(|c| c["state"].clone());
        assert_eq!(state, Some(json!("denied")), "{consents}");
    }

    // Someone who granted before GPC: a later grant under GPC does not
    // stand either (it becomes a denial), and a withdrawal passes as sent.
    let (s, r) = banner_with(&t, accept_all(&site, plain, false), &[("sec-gpc", "1")]).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert!(!allowed(&t, plain, "ads").await);
    let mut withdraw = accept_all(&site, plain, true);
    withdraw["actions"] = json!([{ "purpose": "analytics", "action": "withdraw" }]);
    let (s, r) = banner_with(&t, withdraw, &[("sec-gpc", "1")]).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    assert_eq!(r["gpc_denied"], json!([]));
    assert!(!allowed(&t, plain, "analytics").await);
    // `Sec-GPC: 0` is no signal.
    let zero = "c2aade77-7e2b-4afa-8d8f-8dd9df5a2c33";
    let (s, _) = banner_with(&t, accept_all(&site, zero, false), &[("sec-gpc", "0")]).await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(allowed(&t, zero, "ads").await);
}

fn form(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
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

const FORM: (&str, &str) = ("content-type", "application/x-www-form-urlencoded");

async fn page(
    t: &TestApp,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let (s, h, b) = t.request_raw(Method::GET, path, None, headers, None).await;
    (s, h, String::from_utf8_lossy(&b).into_owned())
}

async fn preference_center_changes_consent_at_once_from_a_signed_link(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let (s, _, _) = t
        .request(
            Method::PUT,
            "/v1/subjects/cust-7",
            &t.owner,
            Some(json!({ "identifiers": { "email": "malee@example.com" } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    t.post(
        "/v1/consents",
        json!({
            "subject": "cust-7", "source": "web", "notice": { "key": "marketing", "version": 1 },
            "actions": [{ "purpose": "marketing.email", "channel": "email", "action": "grant" }],
        }),
    )
    .await;
    let link = t
        .post(
            "/v1/subjects/cust-7/preference-link",
            json!({ "ttl_hours": 2 }),
        )
        .await;
    let url = link["url"].as_str().unwrap();
    let path = &url[url.find("/p/").unwrap()..];

    let (s, h, html) = page(&t, &format!("{path}?lang=en"), &[]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    assert!(
        h[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    assert!(
        html.contains("News by email") && html.contains("Consented"),
        "{html}"
    );
    assert!(
        html.contains("marketing v1"),
        "the notice version agreed to is shown"
    );
    assert!(!html.contains(EVIL), "names are escaped");
    assert!(html.contains("&lt;script&gt;"), "and shown as text");
    let (_, _, th) = page(&t, path, &[("accept-language", "th-TH,th;q=0.9")]).await;
    assert!(th.contains("lang=\"th\"") && th.contains("ข่าวสารทางอีเมล"));

    // Switch email off (withdraw), sms on (grant): in force at once.
    let (s, h, _) = t
        .request_raw(
            Method::POST,
            path,
            None,
            &[FORM],
            Some(form(&[
                ("lang", "en"),
                ("shown", "marketing.email|email"),
                ("shown", "marketing.email|sms"),
                ("on", "marketing.email|sms"),
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h[header::LOCATION].to_str().unwrap().contains("saved=1"));
    let d = t
        .get("/v1/decisions?subject=cust-7&purpose=marketing.email&channel=email")
        .await;
    assert_eq!(d["allowed"], false, "{d}");
    assert_eq!(d["reason"], "withdrawn");
    let d = t
        .get("/v1/decisions?subject=cust-7&purpose=marketing.email&channel=sms")
        .await;
    assert_eq!(d["allowed"], true, "{d}");
    let hist = t.get("/v1/subjects/cust-7/consents?history=true").await;
    let last = hist["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["source"], "preference_center");
    assert_eq!(last["evidence"]["form"], "preference_center");

    // Receipts download; a rights request filed from the page.
    let (s, h, body) = t
        .request_raw(Method::GET, &format!("{path}/receipts"), None, &[], None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    assert_eq!(json_of(&body)["receipts"].as_array().unwrap().len(), 2);
    let (s, h, _) = t
        .request_raw(
            Method::POST,
            &format!("{path}/requests"),
            None,
            &[FORM],
            Some(form(&[("kind", "access"), ("lang", "en")])),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert!(h[header::LOCATION].to_str().unwrap().contains("request="));
    let reqs = t.get("/v1/requests?subject=cust-7").await;
    assert_eq!(reqs["requests"][0]["via"], "preference_center", "{reqs}");
    let (s, _, _) = t
        .request_raw(
            Method::POST,
            &format!("{path}/requests"),
            None,
            &[FORM],
            Some(form(&[("kind", "access")])),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "the same request twice");
    let (s, _, _) = t
        .request_raw(
            Method::POST,
            &format!("{path}/requests"),
            None,
            &[FORM],
            Some(form(&[("kind", "rectification")])),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Tampered, expired and misused links open nothing.
    let token = &path[3..];
    let mut tampered = token.to_string();
    tampered.insert(1, 'x');
    let (s, _, html) = page(&t, &format!("/p/{tampered}"), &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{html}");
    let (s, _, _) = t
        .request_raw(
            Method::POST,
            &format!("/p/{tampered}"),
            None,
            &[FORM],
            Some(form(&[("shown", "marketing.email|sms")])),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let uid = t.get("/v1/subjects/cust-7").await["uid"]
        .as_str()
        .unwrap()
        .to_string();
    let expired = yinyom::web::preferences::token(
        &t.app,
        &t.tenant,
        &uid,
        yinyom_core::time::now() - 1_000_000,
    );
    let (s, _, html) = page(&t, &format!("/p/{expired}"), &[]).await;
    assert_eq!(s, StatusCode::GONE, "{html}");
    // An unsubscribe link is not a preference link (different keys).
    let unsub = t.app.links.token(&t.tenant, &format!("{uid}.9999999999"));
    let (s, _, _) = page(&t, &format!("/p/{unsub}"), &[]).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    for (body, field) in [
        (json!({ "ttl_hours": 0 }), "ttl_hours"),
        (json!({ "ttl_hours": 721 }), "ttl_hours"),
    ] {
        let (s, _, p) = t
            .request(
                Method::POST,
                "/v1/subjects/cust-7/preference-link",
                &t.owner,
                Some(body),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
        assert_eq!(p["field"], field);
    }
    let (s, _, _) = t
        .request(
            Method::POST,
            "/v1/subjects/nobody/preference-link",
            &t.owner,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// A browser's cookie jar, enough for the console.
#[derive(Default)]
struct Jar(Vec<(String, String)>);

impl Jar {
    fn take(&mut self, h: &HeaderMap) {
        for v in h.get_all(header::SET_COOKIE) {
            let c = v.to_str().unwrap();
            let (kv, _) = c.split_once(';').unwrap_or((c, ""));
            let (k, v) = kv.split_once('=').unwrap();
            self.0.retain(|(n, _)| n != k);
            if !v.is_empty() && !c.contains("Max-Age=0") {
                self.0.push((k.into(), v.into()));
            }
        }
    }

    fn header(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..at + 64].to_string()
}

/// Log in through the form as a browser does; the jar keeps the session.
async fn login(t: &TestApp, email: &str, password: &str) -> (StatusCode, Jar) {
    let mut jar = Jar::default();
    let (_, h, html) = page(t, "/admin/login", &[]).await;
    jar.take(&h);
    let cookie = jar.header();
    let (s, h, _) = t
        .request_raw(
            Method::POST,
            "/admin/login",
            None,
            &[FORM, ("cookie", &cookie)],
            Some(form(&[
                ("csrf", &csrf_in(&html)),
                ("email", email),
                ("password", password),
            ])),
        )
        .await;
    jar.take(&h);
    (s, jar)
}

async fn console_logs_staff_in_checks_csrf_and_masks_by_role(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    for (email, role) in [
        ("Admin@Example.com", "admin"),
        ("clerk@example.com", "user"),
    ] {
        t.post(
            "/v1/staff",
            json!({ "email": email, "name": role, "role": role, "password": "a long enough secret" }),
        )
        .await;
    }
    let (s, _, p) = t
        .request(Method::POST, "/v1/staff", &t.owner, Some(json!({ "email": "admin@example.com", "role": "user", "password": "another long secret" })))
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{p}");
    for (body, field) in [
        (
            json!({ "email": "x@example.com", "role": "user", "password": "short" }),
            "password",
        ),
        (
            json!({ "email": "not an email", "role": "user", "password": "a long enough secret" }),
            "email",
        ),
        (
            json!({ "email": "m@example.com", "role": "service", "password": "a long enough secret" }),
            "role",
        ),
    ] {
        let (s, _, p) = t
            .request(Method::POST, "/v1/staff", &t.owner, Some(body))
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
        assert_eq!(p["field"], field);
    }
    let user_key = t.key(yinyom::model::Role::User).await;
    let (s, _, _) = t.request(Method::GET, "/v1/staff", &user_key, None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    // No session: every page sends to the login.
    let (s, h, _) = page(&t, "/admin/purposes", &[]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h[header::LOCATION], "/admin/login");
    let (s, _) = login(&t, "admin@example.com", "wrong password!").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _) = login(&t, "nobody@example.com", "a long enough secret").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    // The login form must come from the login page (login CSRF).
    let (s, _, _) = t
        .request_raw(
            Method::POST,
            "/admin/login",
            None,
            &[FORM],
            Some(form(&[
                ("csrf", &"0".repeat(64)),
                ("email", "admin@example.com"),
                ("password", "a long enough secret"),
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);

    let (s, admin) = login(&t, "ADMIN@example.com", "a long enough secret").await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let cookie = admin.header();
    assert!(cookie.contains("yy_session="));
    let (s, h, dash) = page(&t, "/admin?lang=en", &[("cookie", &cookie)]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        dash.contains("Dashboard") && dash.contains("<svg") || dash.contains("No choices"),
        "{dash}"
    );
    assert!(
        h[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .starts_with("yy_lang=en")
    );

    // A form without the session's token changes nothing.
    let purpose = [
        ("key", "loyalty"),
        ("name_en", "Loyalty <b>club</b>"),
        ("basis", "consent"),
        ("channels", "email"),
        ("retention_days", "365"),
    ];
    let (s, _, html) = t
        .request_raw(
            Method::POST,
            "/admin/purposes",
            None,
            &[FORM, ("cookie", &cookie)],
            Some(form(&purpose)),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "{}",
        String::from_utf8_lossy(&html)
    );
    let (s, _, _) = t
        .request(Method::GET, "/v1/purposes/loyalty", &t.owner, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "nothing was created");
    let (_, _, html) = page(&t, "/admin/purposes", &[("cookie", &cookie)]).await;
    let csrf = csrf_in(&html);
    let mut with = purpose.to_vec();
    with.push(("csrf", &csrf));
    let (s, _, _) = t
        .request_raw(
            Method::POST,
            "/admin/purposes",
            None,
            &[FORM, ("cookie", &cookie)],
            Some(form(&with)),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let p = t.get("/v1/purposes/loyalty").await;
    assert_eq!(p["names"]["en"], "Loyalty <b>club</b>");
    let (_, _, html) = page(&t, "/admin/purposes?lang=en", &[("cookie", &cookie)]).await;
    assert!(html.contains("Loyalty &lt;b&gt;club&lt;/b&gt;") && !html.contains(EVIL));
    // Bad input in a form is a 4xx page, not a 5xx.
    let (s, _, _) = t
        .request_raw(
            Method::POST,
            "/admin/purposes",
            None,
            &[FORM, ("cookie", &cookie)],
            Some(form(&[
                ("csrf", &csrf),
                ("key", "Bad Key"),
                ("name_en", "x"),
                ("retention_days", "soon"),
            ])),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);

    // Masking by role: the admin sees the email (and it is audited), the
    // user sees it masked.
    let (s, _, _) = t
        .request(
            Method::PUT,
            "/v1/subjects/cust-9",
            &t.owner,
            Some(json!({ "identifiers": { "email": "somchai@example.com" } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (_, _, html) = page(&t, "/admin/subjects/cust-9", &[("cookie", &cookie)]).await;
    assert!(html.contains("somchai@example.com"), "{html}");
    let audit = t.get("/v1/audit").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["context"].as_str().unwrap().contains("admin console")),
        "{audit}"
    );
    let (_, clerk) = login(&t, "clerk@example.com", "a long enough secret").await;
    let clerk = clerk.header();
    let (s, _, html) = page(&t, "/admin/subjects/cust-9", &[("cookie", &clerk)]).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        !html.contains("somchai@example.com") && html.contains("s***@example.com"),
        "{html}"
    );
    let (s, _, _) = page(&t, "/admin/audit", &[("cookie", &clerk)]).await;
    assert_eq!(s, StatusCode::FORBIDDEN, "the audit log is for managers");
    // A user on the tenant's allow-list sees contact points in clear.
    let staff = t.get("/v1/staff").await;
    let clerk_stf = staff["staff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "user")
        .unwrap()["id"]
        .clone();
    let (s, _, p) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "pii_readers": [clerk_stf] })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{p}");
    let (_, _, html) = page(&t, "/admin/subjects/cust-9", &[("cookie", &clerk)]).await;
    assert!(html.contains("somchai@example.com"), "{html}");
    let (s, _, _) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "pii_readers": [] })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, html) = page(
        &t,
        "/admin/subjects?q=somchai%40example.com",
        &[("cookie", &clerk)],
    )
    .await;
    assert_eq!(s, StatusCode::SEE_OTHER, "found by email: {html}");

    // Every other page answers.
    for p in [
        "/admin/notices",
        "/admin/requests",
        "/admin/breaches",
        "/admin/ledger",
        "/admin/webhooks",
        "/admin/audit",
        "/admin/purposes/analytics",
    ] {
        let (s, _, html) = page(&t, p, &[("cookie", &cookie)]).await;
        assert_eq!(s, StatusCode::OK, "{p}: {html}");
    }
    let (_, _, html) = page(&t, "/admin/ledger?lang=en", &[("cookie", &cookie)]).await;
    assert!(html.contains("Intact"), "{html}");

    // Logging out ends the session; disabling a member ends theirs.
    let (_, _, html) = page(&t, "/admin", &[("cookie", &cookie)]).await;
    let (s, _, _) = t
        .request_raw(
            Method::POST,
            "/admin/logout",
            None,
            &[FORM, ("cookie", &cookie)],
            Some(form(&[("csrf", &csrf_in(&html))])),
        )
        .await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _, _) = page(&t, "/admin", &[("cookie", &cookie)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let staff = t.get("/v1/staff").await;
    let clerk_id = staff["staff"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "user")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        staff.to_string().find("password").is_none(),
        "hashes never leave the server"
    );
    let (s, _, _) = t
        .request(
            Method::DELETE,
            &format!("/v1/staff/{clerk_id}"),
            &t.owner,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, _, _) = page(&t, "/admin", &[("cookie", &clerk)]).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    let (s, _) = login(&t, "clerk@example.com", "a long enough secret").await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);

    // Guessing passwords: after five failures, wait.
    for _ in 0..5 {
        let (s, _) = login(&t, "admin@example.com", "guess guess guess").await;
        assert_eq!(s, StatusCode::UNAUTHORIZED);
    }
    let (s, _) = login(&t, "admin@example.com", "a long enough secret").await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
}

on_every_backend!(
    banner_records_choices_as_proof_and_refuses_what_it_may_not_do,
    banner_submissions_with_gpc_never_grant_sale_or_sharing,
    preference_center_changes_consent_at_once_from_a_signed_link,
    console_logs_staff_in_checks_csrf_and_masks_by_role,
);
