//! The enforcement gates end to end, on SQLite and on PostgreSQL: profiles
//! (encrypted, masked by role, audited), the consent-gated tracking
//! collector, and the messaging relay (a real SMTP server process, real HTTP
//! receivers for SMS and LINE).

#[macro_use]
mod common;

use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine;
use serde_json::{Value, json};
use yinyom::app::Config;
use yinyom::dispatch::DispatchConfig;
use yinyom::model::Role;
use yinyom::relay::RelayConfig;
use yinyom::store::Store;

use common::{Backend, Receiver, SmtpSink, TestApp, eventually, free_port};

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

fn purpose(key: &str, channels: &[&str]) -> Value {
    json!({
        "key": key,
        "names": { "th": format!("วัตถุประสงค์ {key}"), "en": format!("Purpose {key}") },
        "basis": "consent",
        "channels": channels,
        "retention_days": 30,
    })
}

/// Purposes `marketing.email` (email), `marketing.sms` (sms, line) and
/// `analytics` (web), and notice `main` v1 asking for all three.
async fn setup(t: &TestApp) {
    t.post("/v1/purposes", purpose("marketing.email", &["email"]))
        .await;
    t.post("/v1/purposes", purpose("marketing.sms", &["sms", "line"]))
        .await;
    t.post("/v1/purposes", purpose("analytics", &["web"])).await;
    t.post(
        "/v1/notices",
        json!({
            "key": "main",
            "texts": {
                "th": { "title": "ประกาศความเป็นส่วนตัว", "body": "เราใช้ข้อมูลของคุณเพื่อ…" },
                "en": { "title": "Privacy notice", "body": "We use your data to…" },
            },
            "purposes": ["marketing.email", "marketing.sms", "analytics"],
        }),
    )
    .await;
}

/// Record one action (grants name notice `main` v1); `channel` may be
/// null (purpose-wide).
async fn choose(t: &TestApp, subject: &str, purpose: &str, channel: Option<&str>, action: &str) {
    t.post(
        "/v1/consents",
        json!({
            "subject": subject,
            "source": "crm",
            "notice": { "key": "main", "version": 1 },
            "actions": [{ "purpose": purpose, "channel": channel, "action": action }],
        }),
    )
    .await;
}

async fn put_subject(t: &TestApp, id: &str, body: Value) -> Value {
    let (status, _, res) = t
        .request(
            Method::PUT,
            &format!("/v1/subjects/{id}"),
            &t.owner,
            Some(body),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "PUT subject {id}: {res}");
    res
}

async fn get_as(t: &TestApp, key: &str, path: &str) -> Value {
    let (status, _, body) = t.request(Method::GET, path, key, None).await;
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    body
}

fn contact<'a>(subject: &'a Value, kind: &str) -> &'a Value {
    subject["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} contact in {subject}"))
}

async fn decision(t: &TestApp, subject: &str, purpose: &str, channel: &str) -> Value {
    t.get(&format!(
        "/v1/decisions?subject={subject}&purpose={purpose}&channel={channel}"
    ))
    .await
}

// ---------------------------------------------------------------------------
// 1. Profiles
// ---------------------------------------------------------------------------

async fn profiles_are_encrypted_masked_by_role_and_reads_in_clear_audited(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let owner_view = put_subject(
        &t,
        "cust-1",
        json!({
            "identifiers": {
                "email": "Somchai.J@Example.com",
                "phone": "081-234-5678",
                "line_id": "U0123456789abcdef0123456789abcdef",
            },
            "attributes": { "country": "TH", "first_name": "สมชาย" },
        }),
    )
    .await;
    // Normalised, and in clear for the owner.
    assert_eq!(owner_view["identifiers"]["email"], "somchai.j@example.com");
    assert_eq!(owner_view["identifiers"]["phone"], "+66812345678");
    assert_eq!(contact(&owner_view, "phone")["masked"], false);
    assert_eq!(
        contact(&owner_view, "phone")["channels"]["sms"]["status"],
        "unspecified"
    );

    // At rest: sealed, no clear text in the row or its lookups.
    let record = t.store.subject(&t.tenant, "cust-1").await.unwrap().unwrap();
    let blob = record.profile.expect("a sealed profile");
    for clear in [
        "somchai",
        "812345678",
        "0123456789abcdef",
        "สมชาย".to_string().as_str(),
    ] {
        assert!(
            !blob.windows(clear.len()).any(|w| w == clear.as_bytes()),
            "{clear} in clear"
        );
    }

    // A `user` sees masks until the subject consents on the channel.
    let (user, user_id) = t.key_in(&t.tenant, Role::User).await;
    let s = get_as(&t, &user, "/v1/subjects/cust-1").await;
    assert_eq!(s["identifiers"]["email"], "s***@example.com");
    assert_eq!(s["identifiers"]["phone"], "08x-xxx-5678");
    assert_eq!(contact(&s, "phone")["masked"], true);
    assert_eq!(s["attributes"]["country"], "TH");

    choose(&t, "cust-1", "marketing.sms", Some("sms"), "grant").await;
    choose(&t, "cust-1", "marketing.email", Some("email"), "deny").await;
    let s = get_as(&t, &user, "/v1/subjects/cust-1").await;
    let phone = contact(&s, "phone");
    assert_eq!(phone["value"], "+66812345678", "consented on sms: shown");
    assert_eq!(phone["channels"]["sms"]["status"], "consented");
    assert_eq!(
        phone["channels"]["sms"]["purposes"]["marketing.sms"],
        "consented"
    );
    assert_eq!(phone["channels"]["phone"]["status"], "unspecified");
    let email = contact(&s, "email");
    assert_eq!(email["value"], "s***@example.com");
    assert_eq!(email["channels"]["email"]["status"], "not_consented");
    assert_eq!(
        contact(&s, "line_id")["channels"]["line"]["status"],
        "unspecified"
    );

    // On the tenant's allow-list, the user sees everything.
    let (status, _, body) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "pii_readers": [user_id] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let s = get_as(&t, &user, "/v1/subjects/cust-1").await;
    assert_eq!(s["identifiers"]["email"], "somchai.j@example.com");

    // Every read in clear is in the audit log: who, whose, which fields.
    let audit = t.get("/v1/audit").await;
    let entries = audit.as_array().unwrap();
    let by_user: Vec<&Value> = entries
        .iter()
        .filter(|e| e["actor"] == format!("key:{user_id}"))
        .collect();
    assert_eq!(by_user.len(), 2, "{audit}");
    assert_eq!(by_user[0]["subject"], "cust-1");
    assert_eq!(
        by_user[0]["fields"],
        json!(["email", "phone", "line_id"]),
        "newest first: the allow-listed read"
    );
    assert_eq!(by_user[1]["fields"], json!(["phone"]));
    // Pages: a full one links to the next (RFC 8288); the array is unchanged.
    let (status, headers, first) = t
        .request(Method::GET, "/v1/audit?limit=1", &t.owner, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(first.as_array().unwrap().len(), 1);
    let link = headers["link"].to_str().unwrap().to_string();
    let next = link
        .strip_prefix('<')
        .and_then(|l| l.strip_suffix(">; rel=\"next\""))
        .unwrap_or_else(|| panic!("{link}"));
    let second = t.get(next).await;
    assert_eq!(second[0]["id"], entries[1]["id"], "{second}");
    let (_, headers, _) = t
        .request(Method::GET, "/v1/audit?limit=1000", &t.owner, None)
        .await;
    assert!(headers.get("link").is_none(), "the last page links nowhere");
    let (status, _, _) = t.request(Method::GET, "/v1/audit", &user, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Bad contact points are refused, nothing changes.
    for (body, field) in [
        (
            json!({ "identifiers": { "phone": "12345" } }),
            "identifiers.phone",
        ),
        (
            json!({ "identifiers": { "phone": "+999 1234" } }),
            "identifiers.phone",
        ),
        (
            json!({ "identifiers": { "email": "Somchai <s@example.com>" } }),
            "identifiers.email",
        ),
        (
            json!({ "identifiers": { "email": "nobody@localhost" } }),
            "identifiers.email",
        ),
        (
            json!({ "identifiers": { "line_id": "@shop" } }),
            "identifiers.line_id",
        ),
    ] {
        let (status, _, res) = t
            .request(Method::PUT, "/v1/subjects/cust-1", &t.owner, Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
        assert_eq!(res["field"], field);
    }
    let (status, _, res) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "pii_readers": ["no-such-key"] })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
    assert_eq!(
        t.get("/v1/subjects/cust-1").await["identifiers"]["phone"],
        "+66812345678"
    );
}

async fn profiles_survive_a_restart_and_a_wrong_master_key_is_refused(backend: Backend) {
    let mut t = TestApp::new(backend).await;
    put_subject(
        &t,
        "cust-2",
        json!({ "identifiers": { "email": "a@example.com" } }),
    )
    .await;
    t.restart().await;
    assert_eq!(
        t.get("/v1/subjects/cust-2").await["identifiers"]["email"],
        "a@example.com"
    );
    let other = Config {
        master_key: Some(yinyom::vault::MasterKey::random()),
        ..Config::default()
    };
    let refused = yinyom::app::App::start_with(t.store.clone(), other).await;
    let err = refused
        .err()
        .expect("another master key is refused")
        .to_string();
    assert!(err.contains("master key"), "{err}");
}

// ---------------------------------------------------------------------------
// 2. The collector
// ---------------------------------------------------------------------------

async fn source(t: &TestApp, purposes: &[&str]) -> (String, String) {
    let s = t
        .post(
            "/v1/sources",
            json!({ "name": "website", "purposes": purposes }),
        )
        .await;
    (
        s["id"].as_str().unwrap().into(),
        s["write_key"].as_str().unwrap().into(),
    )
}

fn basic(write_key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{write_key}:"))
    )
}

/// POST a Segment call authenticated by HTTP Basic; (status, body).
async fn segment(t: &TestApp, path: &str, write_key: &str, body: Value) -> (StatusCode, Value) {
    let auth = basic(write_key);
    let (status, _, bytes) = t
        .request_raw(
            Method::POST,
            path,
            None,
            &[("authorization", auth.as_str())],
            Some(serde_json::to_vec(&body).unwrap()),
        )
        .await;
    (status, common::json_of(&bytes))
}

async fn track(t: &TestApp, key: &str, user: &str, event: &str) -> Value {
    let (status, body) = segment(
        t,
        "/v1/track",
        key,
        json!({ "userId": user, "event": event, "properties": { "sku": "A-1" } }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn events_of(t: &TestApp, subject: &str) -> Vec<Value> {
    t.get(&format!("/v1/subjects/{subject}/events"))
        .await
        .as_array()
        .unwrap()
        .clone()
}

async fn tracking_without_consent_is_dropped_and_withdrawal_stops_the_next_event(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let (source_id, key) = source(&t, &["analytics"]).await;

    // No consent yet: dropped, not stored.
    let r = track(&t, &key, "cust-3", "Viewed Product").await;
    assert_eq!(
        (r["accepted"].clone(), r["dropped"].clone()),
        (json!(0), json!(1))
    );

    choose(&t, "cust-3", "analytics", None, "grant").await;
    let r = track(&t, &key, "cust-3", "Viewed Product").await;
    assert_eq!(
        (r["accepted"].clone(), r["dropped"].clone()),
        (json!(1), json!(0))
    );
    let kept = events_of(&t, "cust-3").await;
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["name"], "Viewed Product");
    assert_eq!(kept[0]["body"]["properties"]["sku"], "A-1");

    // The withdrawal bites on the very next event.
    choose(&t, "cust-3", "analytics", None, "withdraw").await;
    let r = track(&t, &key, "cust-3", "Added to Cart").await;
    assert_eq!(
        (r["accepted"].clone(), r["dropped"].clone()),
        (json!(0), json!(1))
    );
    assert_eq!(
        events_of(&t, "cust-3").await.len(),
        1,
        "nothing stored after withdrawal"
    );

    let sources = t.get("/v1/sources").await;
    let s = sources
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == source_id)
        .unwrap();
    assert_eq!(
        (s["accepted"].clone(), s["dropped"].clone()),
        (json!(1), json!(2))
    );
    assert!(s.get("write_key").is_none(), "the write key is shown once");

    // analytics.js style: writeKey in a text/plain body; a batch; a retried
    // message id is stored once.
    choose(&t, "cust-4", "analytics", None, "grant").await;
    let body = json!({
        "writeKey": key,
        "batch": [
            { "type": "page", "userId": "cust-4", "name": "Home", "messageId": "m-1" },
            { "type": "track", "userId": "cust-4", "event": "Signed Up", "messageId": "m-2" },
            { "type": "track", "userId": "cust-5", "event": "Signed Up", "messageId": "m-3" },
        ],
    });
    for _ in 0..2 {
        let (status, _, bytes) = t
            .request_raw(
                Method::POST,
                "/v1/batch",
                None,
                &[("content-type", "text/plain")],
                Some(serde_json::to_vec(&body).unwrap()),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let r = common::json_of(&bytes);
        assert_eq!(
            (r["accepted"].clone(), r["dropped"].clone()),
            (json!(2), json!(1))
        );
    }
    assert_eq!(events_of(&t, "cust-4").await.len(), 2);
    let (status, _, _) = t
        .request(Method::GET, "/v1/subjects/cust-5/events", &t.owner, None)
        .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a dropped subject is not even created"
    );

    // Bad input.
    let (status, body) = segment(
        &t,
        "/v1/track",
        "yyw_unknown",
        json!({ "userId": "x", "event": "e" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, _, _) = t
        .request_raw(
            Method::POST,
            "/v1/track",
            None,
            &[],
            Some(b"{\"userId\":\"x\",\"event\":\"e\"}".to_vec()),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    for (path, body, field) in [
        ("/v1/track", json!({ "event": "no ids" }), "userId"),
        ("/v1/track", json!({ "userId": "x" }), "event"),
        (
            "/v1/track",
            json!({ "userId": {"a": 1}, "event": "e" }),
            "userId",
        ),
        (
            "/v1/track",
            json!({ "userId": "x", "event": "e", "timestamp": "yesterday" }),
            "timestamp",
        ),
        (
            "/v1/track",
            json!({ "userId": "x", "event": "e", "timestamp": "2999-01-01T00:00:00Z" }),
            "timestamp",
        ),
        ("/v1/alias", json!({ "userId": "x" }), "previousId"),
        (
            "/v1/batch",
            json!({ "batch": [{ "type": "launch", "userId": "x" }] }),
            "batch/0/type",
        ),
        ("/v1/batch", json!({ "batch": "nope" }), "batch"),
    ] {
        let (status, res) = segment(&t, path, &key, body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {res}");
        assert_eq!(res["field"], field, "{res}");
    }
    let big = "x".repeat(40 * 1024);
    let (status, _) = segment(
        &t,
        "/v1/track",
        &key,
        json!({ "userId": "x", "event": "e", "properties": { "big": big } }),
    )
    .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    let many: Vec<Value> = (0..2_501)
        .map(|i| json!({ "type": "track", "userId": format!("u{i}"), "event": "e" }))
        .collect();
    let (status, _) = segment(&t, "/v1/batch", &key, json!({ "batch": many })).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        events_of(&t, "cust-4").await.len(),
        2,
        "bad input stored nothing"
    );

    // A deleted source's key stops working.
    let (status, _, _) = t
        .request(
            Method::DELETE,
            &format!("/v1/sources/{source_id}"),
            &t.owner,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = segment(
        &t,
        "/v1/track",
        &key,
        json!({ "userId": "cust-4", "event": "e" }),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// A raw collector call as a browser makes it: (status, headers, body).
async fn browser_call(
    t: &TestApp,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Value>,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let (status, h, bytes) = t
        .request_raw(
            method,
            path,
            None,
            headers,
            body.map(|b| serde_json::to_vec(&b).unwrap()),
        )
        .await;
    (status, h, common::json_of(&bytes))
}

fn acao(h: &axum::http::HeaderMap) -> Option<&str> {
    h.get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap())
}

async fn browser_sdks_use_the_short_paths_and_get_cors_for_the_tenants_origins_only(
    backend: Backend,
) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let (_, key) = source(&t, &["analytics"]).await;
    choose(&t, "cust-60", "analytics", None, "grant").await;
    let text = ("content-type", "text/plain");

    // analytics.js posts text/plain JSON with writeKey in the body to the
    // one-letter paths.
    for (path, body) in [
        (
            "/v1/t",
            json!({ "event": "Viewed Product", "properties": { "sku": "B-2" } }),
        ),
        ("/v1/p", json!({ "name": "Home" })),
        ("/v1/i", json!({ "traits": { "plan": "gold" } })),
        ("/v1/s", json!({ "name": "Cart" })),
        ("/v1/g", json!({ "groupId": "team-1" })),
        (
            "/v1/a",
            json!({ "previousId": "f00d5b1e-0000-4000-8000-000000000001" }),
        ),
    ] {
        let mut body = body;
        body["userId"] = json!("cust-60");
        body["writeKey"] = json!(key);
        let (status, _, r) = browser_call(&t, Method::POST, path, &[text], Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{path}: {r}");
        assert_eq!(
            (r["accepted"].clone(), r["dropped"].clone()),
            (json!(1), json!(0)),
            "{path}"
        );
    }
    // The batching delivery: /v1/b, write key as HTTP Basic user name.
    let auth = basic(&key);
    let (status, _, r) = browser_call(
        &t,
        Method::POST,
        "/v1/b",
        &[text, ("authorization", &auth)],
        Some(json!({ "batch": [
            { "type": "track", "userId": "cust-60", "event": "Added to Cart", "messageId": "b-1" },
            { "type": "page", "userId": "cust-60", "name": "Checkout", "messageId": "b-2" },
            { "type": "track", "userId": "cust-61", "event": "Added to Cart", "messageId": "b-3" },
        ] })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(
        (r["accepted"].clone(), r["dropped"].clone()),
        (json!(2), json!(1))
    );
    let mut kinds: Vec<String> = events_of(&t, "cust-60")
        .await
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["type"].as_str().unwrap(),
                e["name"].as_str().unwrap_or("")
            )
        })
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "group:",
            "identify:",
            "page:Checkout",
            "page:Home",
            "screen:Cart",
            "track:Added to Cart",
            "track:Viewed Product"
        ],
        "every short path stores under its kind"
    );

    // No banner origins: no CORS at all, for the preflight or the call.
    let shop = ("origin", "https://shop.example");
    let ask = [
        shop,
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization,content-type",
        ),
    ];
    let (status, h, _) = browser_call(&t, Method::OPTIONS, "/v1/t", &ask, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(acao(&h), None);
    let track_body = json!({ "userId": "cust-60", "event": "From the shop", "writeKey": key });
    let (status, h, _) = browser_call(
        &t,
        Method::POST,
        "/v1/t",
        &[text, shop],
        Some(track_body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        acao(&h),
        None,
        "a tenant that lists no origins gets no CORS"
    );

    // The tenant lists its shop: preflight and answers carry CORS for it.
    let (s, _, b) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "banner": { "notice": "main", "origins": ["https://shop.example"] } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    for path in ["/v1/t", "/v1/track", "/v1/b", "/v1/batch", "/v1/i", "/v1/p"] {
        let (status, h, _) = browser_call(&t, Method::OPTIONS, path, &ask, None).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{path}");
        assert_eq!(acao(&h), Some("https://shop.example"), "{path}");
        let allowed = h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
    }
    let (status, h, r) = browser_call(
        &t,
        Method::POST,
        "/v1/t",
        &[text, shop],
        Some(track_body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(acao(&h), Some("https://shop.example"));
    assert!(
        h.get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap().contains("Origin"))
    );
    // An error the SDK should see is readable too.
    let (status, h, _) = browser_call(
        &t,
        Method::POST,
        "/v1/t",
        &[text, shop],
        Some(json!({ "userId": "cust-60", "writeKey": key })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(acao(&h), Some("https://shop.example"));

    // Another site: no CORS, and its calls with this write key are refused.
    let evil = ("origin", "https://evil.example");
    let mut ask_evil = ask;
    ask_evil[0] = evil;
    let (status, h, _) = browser_call(&t, Method::OPTIONS, "/v1/t", &ask_evil, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(acao(&h), None);
    let before = events_of(&t, "cust-60").await.len();
    let (status, h, r) = browser_call(
        &t,
        Method::POST,
        "/v1/t",
        &[text, evil],
        Some(track_body.clone()),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{r}");
    assert_eq!(acao(&h), None);
    // Even when another tenant lists that site (so its preflight passes).
    let b = t.create_tenant("Tenant B").await;
    let (s, _, n) = t
        .request(
            Method::POST,
            "/v1/purposes",
            &b.owner,
            Some(purpose("analytics", &["web"])),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    let (s, _, n) = t
        .request(
            Method::POST,
            "/v1/notices",
            &b.owner,
            Some(json!({ "key": "cookies", "texts": { "en": { "title": "t", "body": "b" } }, "purposes": ["analytics"] })),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{n}");
    let (s, _, n) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &b.owner,
            Some(json!({ "banner": { "notice": "cookies", "origins": ["https://evil.example"] } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{n}");
    let (status, h, _) = browser_call(&t, Method::OPTIONS, "/v1/t", &ask_evil, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(acao(&h), Some("https://evil.example"));
    let (status, h, _) = browser_call(
        &t,
        Method::POST,
        "/v1/b",
        &[text, evil, ("authorization", &auth)],
        Some(json!({ "batch": [{ "type": "track", "userId": "cust-60", "event": "e" }] })),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(acao(&h), None);
    assert_eq!(
        events_of(&t, "cust-60").await.len(),
        before,
        "refused calls stored nothing"
    );
    // Server-side SDKs send no Origin: unaffected.
    let (status, _, _) =
        browser_call(&t, Method::POST, "/v1/t", &[text], Some(track_body.clone())).await;
    assert_eq!(status, StatusCode::OK);

    // The settings document analytics.js loads instead of Segment's CDN.
    let path = format!("/v1/projects/{key}/settings");
    let (status, h, s) = browser_call(&t, Method::GET, &path, &[shop], None).await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(acao(&h), Some("https://shop.example"));
    let io = &s["integrations"]["Segment.io"];
    assert_eq!(io["apiKey"], key.as_str());
    assert_eq!(
        io["apiHost"], "127.0.0.1:8080/v1",
        "the server's public URL: {s}"
    );
    assert_eq!(io["protocol"], "http");
    assert_eq!(
        s["integrations"].as_object().unwrap().len(),
        1,
        "no destinations to load from elsewhere"
    );
    assert_eq!(s["metrics"]["sampleRate"], 0, "no metrics sent to Segment");
    let (status, h, _) = browser_call(&t, Method::GET, &path, &[evil], None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(acao(&h), None);
    let (status, _, p) = browser_call(
        &t,
        Method::GET,
        "/v1/projects/yyw_unknown/settings",
        &[shop],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{p}");
}

async fn anonymous_consent_follows_the_person_identified_later(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let (_, key) = source(&t, &["analytics"]).await;
    // The cookie banner records the visitor's choice under the anonymous id.
    choose(&t, "anon-7f3a", "analytics", None, "grant").await;
    let (status, r) = segment(
        &t,
        "/v1/page",
        &key,
        json!({ "anonymousId": "anon-7f3a", "name": "Home" }),
    )
    .await;
    assert_eq!((status, r["accepted"].clone()), (StatusCode::OK, json!(1)));

    let (status, r) = segment(
        &t,
        "/v1/identify",
        &key,
        json!({
            "userId": "cust-9",
            "anonymousId": "anon-7f3a",
            "traits": { "email": "Nok@Example.com", "plan": "gold" },
        }),
    )
    .await;
    assert_eq!(
        (status, r["accepted"].clone()),
        (StatusCode::OK, json!(1)),
        "{r}"
    );
    let d = decision(&t, "cust-9", "analytics", "web").await;
    assert_eq!(d["allowed"], true, "{d}");
    let history = t.get("/v1/subjects/cust-9/consents?history=true").await;
    let entry = &history["history"][0];
    assert_eq!(entry["action"], "grant");
    assert_eq!(entry["source"], "crm", "the anonymous choice's own source");

    let person = t.get("/v1/subjects/cust-9").await;
    assert_eq!(person["identifiers"]["email"], "nok@example.com");
    assert_eq!(person["attributes"]["plan"], "gold");
    assert_eq!(person["anonymous_ids"], json!(["anon-7f3a"]));

    // Later anonymous events are the person's; the person's withdrawal
    // stops them.
    let (_, r) = segment(
        &t,
        "/v1/track",
        &key,
        json!({ "anonymousId": "anon-7f3a", "event": "Clicked" }),
    )
    .await;
    assert_eq!(r["accepted"], 1);
    assert_eq!(events_of(&t, "cust-9").await.len(), 2, "identify + track");
    choose(&t, "cust-9", "analytics", None, "withdraw").await;
    let (_, r) = segment(
        &t,
        "/v1/track",
        &key,
        json!({ "anonymousId": "anon-7f3a", "event": "Clicked" }),
    )
    .await;
    assert_eq!(r["dropped"], 1);

    // alias: a previous id's consent follows too.
    choose(&t, "guest-1", "analytics", None, "grant").await;
    let (_, r) = segment(
        &t,
        "/v1/alias",
        &key,
        json!({ "previousId": "guest-1", "userId": "cust-10" }),
    )
    .await;
    assert_eq!(r["accepted"], 1);
    assert_eq!(
        decision(&t, "cust-10", "analytics", "web").await["allowed"],
        true
    );
}

async fn allowed_events_are_forwarded_to_nats_and_denied_ones_are_not(backend: Backend) {
    use futures_util::StreamExt;
    let url = "nats://127.0.0.1:4222";
    let config = Config {
        nats_url: Some(url.into()),
        ..Config::default()
    };
    let t = TestApp::with_config(backend, config).await;
    setup(&t).await;
    let client = async_nats::connect(url)
        .await
        .expect("NATS on 127.0.0.1:4222");
    let mut sub = client
        .subscribe(format!("yinyom.{}.track.>", t.tenant))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let s = t
        .post(
            "/v1/sources",
            json!({ "name": "app", "purposes": ["analytics"], "store": false, "forward": true }),
        )
        .await;
    let key = s["write_key"].as_str().unwrap().to_string();
    choose(&t, "cust-50", "analytics", None, "grant").await;
    let (_, r) = segment(
        &t,
        "/v1/track",
        &key,
        json!({ "userId": "cust-51", "event": "Denied" }),
    )
    .await;
    assert_eq!(r["dropped"], 1);
    let (_, r) = segment(
        &t,
        "/v1/track",
        &key,
        json!({ "userId": "cust-50", "event": "Opened App" }),
    )
    .await;
    assert_eq!(r["accepted"], 1);
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .expect("forwarded within 5 s")
        .unwrap();
    assert_eq!(
        msg.subject.as_str(),
        format!("yinyom.{}.track.{}", t.tenant, s["id"].as_str().unwrap())
    );
    let body: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(body["event"], "Opened App");
    assert_eq!(body["yinyom"]["subject"], "cust-50");
    assert!(
        tokio::time::timeout(Duration::from_millis(300), sub.next())
            .await
            .is_err(),
        "the denied event was not forwarded"
    );
    assert!(
        events_of(&t, "cust-50").await.is_empty(),
        "a forward-only source stores nothing"
    );

    // Forwarding needs a NATS server; a source must keep or forward.
    let plain = TestApp::new(backend).await;
    setup(&plain).await;
    for (body, field) in [
        (
            json!({ "name": "x", "purposes": ["analytics"], "forward": true }),
            "forward",
        ),
        (
            json!({ "name": "x", "purposes": ["analytics"], "store": false }),
            "store",
        ),
        (json!({ "name": "x", "purposes": ["nope"] }), "purposes"),
        (json!({ "name": "", "purposes": ["analytics"] }), "name"),
    ] {
        let (status, _, res) = plain
            .request(Method::POST, "/v1/sources", &plain.owner, Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
        assert_eq!(res["field"], field);
    }
}

// ---------------------------------------------------------------------------
// 3. The relay
// ---------------------------------------------------------------------------

fn relay_config() -> Config {
    Config {
        relay: RelayConfig {
            public_url: "https://consent.example".into(),
            retry: DispatchConfig {
                retry_base: Duration::from_millis(50),
                retry_max: Duration::from_millis(200),
                timeout: Duration::from_secs(5),
                give_up_after: Duration::from_secs(3600),
                ..Default::default()
            },
        },
        ..Config::default()
    }
}

async fn email_connector(t: &TestApp, port: u16) {
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/connectors/email",
            &t.owner,
            Some(json!({ "url": format!("smtp://127.0.0.1:{port}"), "from": "Shop <news@shop.example>" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn email_to(subject: &str) -> Value {
    json!({
        "subject": subject,
        "channel": "email",
        "purpose": "marketing.email",
        "content": { "subject": "โปรโมชั่น / Offer", "text": "Hello {{first_name}}" },
    })
}

async fn message(t: &TestApp, id: &str) -> Value {
    t.get(&format!("/v1/messages/{id}")).await
}

async fn status_becomes(t: &TestApp, id: &str, status: &str) -> bool {
    eventually(Duration::from_secs(10), || async {
        message(t, id).await["status"] == status
    })
    .await
}

// ---------------------------------------------------------------------------
// DKIM, checked independently of the signer (RFC 6376, relaxed/relaxed)
// ---------------------------------------------------------------------------

/// A throwaway RSA key for the tests (PKCS#8, as `openssl genpkey` writes).
const DKIM_RSA_PEM: &str = include_str!("support/dkim_test_rsa.pem");

fn collapse_wsp(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = false;
    for c in s.chars() {
        if c == ' ' || c == '\t' {
            space = true;
        } else {
            if space {
                out.push(' ');
            }
            space = false;
            out.push(c);
        }
    }
    if space {
        out.push(' ');
    }
    out
}

/// Relaxed header canonicalisation of one header (name, raw folded value).
fn canon_header(name: &str, value: &str) -> String {
    let unfolded = value.replace("\r\n", "");
    format!(
        "{}:{}\r\n",
        name.trim().to_ascii_lowercase(),
        collapse_wsp(&unfolded).trim()
    )
}

/// Relaxed body canonicalisation.
fn canon_body(body: &str) -> String {
    let mut lines: Vec<String> = body
        .split("\r\n")
        .map(|l| collapse_wsp(l).trim_end().to_string())
        .collect();
    while lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines.iter().map(|l| format!("{l}\r\n")).collect()
}

enum DkimPublic {
    Rsa(rsa::RsaPublicKey),
    Ed25519(ed25519_dalek::VerifyingKey),
}

/// Verify the message's DKIM-Signature with `key`; its tags.
fn dkim_verify(
    raw: &str,
    key: &DkimPublic,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    use sha2::Digest;
    let raw = raw.replace("\r\n", "\n").replace('\n', "\r\n");
    let (head, body) = raw.split_once("\r\n\r\n").ok_or("no body")?;
    let mut headers: Vec<(String, String)> = Vec::new();
    for line in head.split("\r\n") {
        if line.starts_with([' ', '\t']) {
            let last = headers.last_mut().ok_or("a continuation first")?;
            last.1.push_str("\r\n");
            last.1.push_str(line);
        } else {
            let (n, v) = line.split_once(':').ok_or("a header without a colon")?;
            headers.push((n.to_string(), v.to_string()));
        }
    }
    let (_, sig_value) = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("DKIM-Signature"))
        .ok_or("no DKIM-Signature header")?
        .clone();
    let tags: std::collections::BTreeMap<String, String> = sig_value
        .split(';')
        .filter_map(|t| t.split_once('='))
        .map(|(k, v)| {
            let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
            (k.trim().to_string(), v)
        })
        .collect();
    let b64 = base64::engine::general_purpose::STANDARD;
    let bh = b64.encode(sha2::Sha256::digest(canon_body(body).as_bytes()));
    if tags.get("bh") != Some(&bh) {
        return Err(format!(
            "body hash: signed {:?}, computed {bh}",
            tags.get("bh")
        ));
    }
    let mut input = String::new();
    for name in tags.get("h").ok_or("no h=")?.split(':') {
        if let Some((n, v)) = headers
            .iter()
            .rev()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
        {
            input.push_str(&canon_header(n, v));
        }
    }
    let unsigned: Vec<String> = sig_value
        .split(';')
        .map(|t| {
            if t.trim_start().starts_with("b=") {
                t[..t.find("b=").unwrap() + 2].to_string()
            } else {
                t.to_string()
            }
        })
        .collect();
    let own = canon_header("DKIM-Signature", &unsigned.join(";"));
    input.push_str(own.trim_end_matches("\r\n"));
    let hash = sha2::Sha256::digest(input.as_bytes());
    let sig = b64
        .decode(tags.get("b").ok_or("no b=")?)
        .map_err(|e| e.to_string())?;
    match key {
        DkimPublic::Rsa(k) => k
            .verify(rsa::Pkcs1v15Sign::new::<sha2::Sha256>(), &hash, &sig)
            .map_err(|e| format!("RSA signature: {e}"))?,
        DkimPublic::Ed25519(k) => {
            use ed25519_dalek::Verifier;
            let sig = ed25519_dalek::Signature::from_slice(&sig).map_err(|e| e.to_string())?;
            k.verify(&hash, &sig)
                .map_err(|e| format!("Ed25519 signature: {e}"))?
        }
    }
    Ok(tags)
}

async fn put_email_connector(t: &TestApp, port: u16, dkim: Option<Value>) -> (StatusCode, Value) {
    let mut body =
        json!({ "url": format!("smtp://127.0.0.1:{port}"), "from": "Shop <news@shop.example>" });
    if let Some(d) = dkim {
        body["dkim"] = d;
    }
    let (status, _, res) = t
        .request(Method::PUT, "/v1/connectors/email", &t.owner, Some(body))
        .await;
    (status, res)
}

/// Send one email to `cust-70` and return the raw message the sink got.
async fn send_one(t: &TestApp, sink: &SmtpSink) -> String {
    let before = sink.received().len();
    let m = t.post("/v1/messages", email_to("cust-70")).await;
    let id = m["id"].as_str().unwrap();
    assert!(
        status_becomes(t, id, "sent").await,
        "{}",
        message(t, id).await
    );
    let mails = sink.received();
    assert_eq!(mails.len(), before + 1);
    mails[before]["data"].as_str().unwrap().to_string()
}

async fn email_is_dkim_signed_with_the_tenants_key(backend: Backend) {
    use rsa::pkcs8::DecodePrivateKey;
    let t = TestApp::with_config(backend, relay_config()).await;
    setup(&t).await;
    let port = free_port();
    let sink = SmtpSink::start(port);
    put_subject(
        &t,
        "cust-70",
        json!({ "identifiers": { "email": "ploy@example.com" } }),
    )
    .await;
    choose(&t, "cust-70", "marketing.email", Some("email"), "grant").await;

    // Bad DKIM settings are refused, field by field.
    for (dkim, field) in [
        (
            json!({ "domain": "shop.example", "selector": "yy2026" }),
            "dkim.private_key",
        ),
        (
            json!({ "domain": "shop.example", "selector": "yy2026", "private_key": "not a key" }),
            "dkim.private_key",
        ),
        (
            json!({ "domain": "shop.example", "selector": "yy 2026", "private_key": DKIM_RSA_PEM }),
            "dkim.selector",
        ),
        (
            json!({ "domain": "localhost", "selector": "yy2026", "private_key": DKIM_RSA_PEM }),
            "dkim.domain",
        ),
    ] {
        let (status, res) = put_email_connector(&t, port, Some(dkim)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
        assert_eq!(res["field"], field, "{res}");
    }

    // Without a key: no signature.
    let (status, res) = put_email_connector(&t, port, None).await;
    assert_eq!(status, StatusCode::OK, "{res}");
    assert!(!send_one(&t, &sink).await.contains("DKIM-Signature"));

    // An RSA key (PKCS#8 PEM): stored sealed, never shown.
    let (status, res) = put_email_connector(
        &t,
        port,
        Some(
            json!({ "domain": "shop.example", "selector": "yy2026", "private_key": DKIM_RSA_PEM }),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    assert_eq!(res["has_dkim_key"], true);
    assert_eq!(
        res["dkim"],
        json!({ "domain": "shop.example", "selector": "yy2026" })
    );
    let listed = t.get("/v1/connectors").await.to_string();
    assert!(
        listed.contains("yy2026") && !listed.contains("PRIVATE KEY") && !listed.contains("MII"),
        "{listed}"
    );
    let rows = yinyom::store::Messages::connectors(t.store.as_ref(), &t.tenant)
        .await
        .unwrap();
    let sealed = rows[0].dkim_key.clone().expect("the key is stored");
    let body_of_pem: String = DKIM_RSA_PEM
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();
    assert!(
        !String::from_utf8_lossy(&sealed).contains(&body_of_pem[..40])
            && !rows[0].config.to_string().contains(&body_of_pem[..40]),
        "the key is sealed, not stored in clear"
    );

    let raw = send_one(&t, &sink).await;
    let public = DkimPublic::Rsa(rsa::RsaPublicKey::from(
        &rsa::RsaPrivateKey::from_pkcs8_pem(DKIM_RSA_PEM).unwrap(),
    ));
    let tags = dkim_verify(&raw, &public).unwrap_or_else(|e| panic!("{e}\n{raw}"));
    assert_eq!(tags["d"], "shop.example");
    assert_eq!(tags["s"], "yy2026");
    assert_eq!(tags["a"], "rsa-sha256");
    assert_eq!(tags["c"], "relaxed/relaxed");
    let signed: Vec<&str> = tags["h"].split(':').collect();
    for h in [
        "from",
        "to",
        "subject",
        "date",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(signed.contains(&h), "{h} is signed: {}", tags["h"]);
    }
    // The checker is not a rubber stamp: a changed body or header fails.
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| raw.split_once("\n\n").unwrap());
    let sep = if raw.contains("\r\n\r\n") {
        "\r\n\r\n"
    } else {
        "\n\n"
    };
    let altered_body = format!("{head}{sep}{}", body.replacen("Hello", "Hellp", 1));
    assert!(
        dkim_verify(&altered_body, &public)
            .unwrap_err()
            .contains("body hash")
    );
    let altered_to = raw.replacen("ploy@example.com", "plob@example.com", 1);
    assert!(
        dkim_verify(&altered_to, &public)
            .unwrap_err()
            .contains("signature")
    );

    // An Ed25519 key (RFC 8463), as the base64 of its seed.
    let seed = [7u8; 32];
    let ed = ed25519_dalek::SigningKey::from_bytes(&seed);
    let (status, res) = put_email_connector(
        &t,
        port,
        Some(json!({ "domain": "mail.shop.example", "selector": "ed1",
            "private_key": base64::engine::general_purpose::STANDARD.encode(seed) })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let raw = send_one(&t, &sink).await;
    let tags = dkim_verify(&raw, &DkimPublic::Ed25519(ed.verifying_key()))
        .unwrap_or_else(|e| panic!("{e}\n{raw}"));
    assert_eq!(
        (tags["a"].as_str(), tags["d"].as_str(), tags["s"].as_str()),
        ("ed25519-sha256", "mail.shop.example", "ed1")
    );
    let wrong = ed25519_dalek::SigningKey::from_bytes(&[8u8; 32]).verifying_key();
    assert!(dkim_verify(&raw, &DkimPublic::Ed25519(wrong)).is_err());
}

async fn email_is_sent_only_with_consent_and_one_click_unsubscribe_withdraws_it(backend: Backend) {
    let t = TestApp::with_config(backend, relay_config()).await;
    setup(&t).await;
    let port = free_port();
    let sink = SmtpSink::start(port);
    email_connector(&t, port).await;
    put_subject(
        &t,
        "cust-20",
        json!({ "identifiers": { "email": "ploy@example.com" }, "attributes": { "first_name": "Ploy" } }),
    )
    .await;

    // No consent: suppressed at once, with the reason.
    let m = t.post("/v1/messages", email_to("cust-20")).await;
    assert_eq!(
        (m["status"].clone(), m["reason"].clone()),
        (json!("suppressed"), json!("no_consent"))
    );

    choose(&t, "cust-20", "marketing.email", Some("email"), "grant").await;
    let m = t.post("/v1/messages", email_to("cust-20")).await;
    assert_eq!(m["status"], "queued");
    let id = m["id"].as_str().unwrap();
    assert!(
        status_becomes(&t, id, "sent").await,
        "{}",
        message(&t, id).await
    );
    let mails = sink.received();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0]["to"], json!(["ploy@example.com"]));
    let data = mails[0]["data"].as_str().unwrap();
    assert!(data.contains("Hello Ploy"), "{data}");
    assert!(
        data.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"),
        "{data}"
    );
    let link = data
        .lines()
        .find_map(|l| l.strip_prefix("List-Unsubscribe: <"))
        .and_then(|l| l.strip_suffix('>'))
        .expect("a List-Unsubscribe header");
    let path = link.strip_prefix("https://consent.example").unwrap();

    // A GET (a mail scanner) changes nothing; the one-click POST withdraws.
    let (status, _, page) = t.request_raw(Method::GET, path, None, &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&page).contains("<form method=\"post\">"));
    assert_eq!(
        decision(&t, "cust-20", "marketing.email", "email").await["allowed"],
        true
    );
    for _ in 0..2 {
        let (status, _, _) = t
            .request_raw(
                Method::POST,
                path,
                None,
                &[("content-type", "application/x-www-form-urlencoded")],
                Some(b"List-Unsubscribe=One-Click".to_vec()),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let d = decision(&t, "cust-20", "marketing.email", "email").await;
    assert_eq!(
        (d["allowed"].clone(), d["reason"].clone()),
        (json!(false), json!("withdrawn"))
    );
    let history = t.get("/v1/subjects/cust-20/consents?history=true").await;
    let withdrawals: Vec<&Value> = history["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == "unsubscribe_link")
        .collect();
    assert_eq!(withdrawals.len(), 1, "a repeated click is one withdrawal");

    let m = t.post("/v1/messages", email_to("cust-20")).await;
    assert_eq!(
        (m["status"].clone(), m["reason"].clone()),
        (json!("suppressed"), json!("withdrawn"))
    );
    let m = message(&t, m["id"].as_str().unwrap()).await;
    assert_eq!(m["log"][0]["status"], "suppressed");
    assert_eq!(sink.received().len(), 1);

    // Tampered links, unknown recipients, missing contact points.
    let mut bad = path.to_string();
    bad.push('x');
    let (status, _, _) = t.request_raw(Method::POST, &bad, None, &[], None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    put_subject(
        &t,
        "cust-21",
        json!({ "identifiers": { "phone": "0812345678" } }),
    )
    .await;
    for (body, field) in [
        (email_to("cust-21"), "subject"),
        (
            json!({ "to": "nobody@example.com", "channel": "email", "purpose": "marketing.email", "content": { "subject": "s", "text": "t" } }),
            "to",
        ),
        (
            json!({ "to": "not an email", "channel": "email", "purpose": "marketing.email", "content": { "subject": "s", "text": "t" } }),
            "to",
        ),
        (
            json!({ "subject": "cust-20", "channel": "sms", "purpose": "marketing.email", "content": { "text": "t" } }),
            "channel",
        ),
        (
            json!({ "subject": "cust-20", "channel": "email", "purpose": "marketing.email", "content": { "text": "t" } }),
            "content.subject",
        ),
        (
            json!({ "subject": "cust-20", "to": "ploy@example.com", "channel": "email", "purpose": "marketing.email", "content": { "subject": "s", "text": "t" } }),
            "subject",
        ),
    ] {
        let (status, _, res) = t
            .request(Method::POST, "/v1/messages", &t.owner, Some(body))
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
        assert_eq!(res["field"], field, "{res}");
    }
    let (status, _, _) = t
        .request(
            Method::POST,
            "/v1/messages",
            &t.owner,
            Some(email_to("cust-404")),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn smtp_outage_queues_and_retries_and_a_withdrawal_before_the_retry_suppresses(
    backend: Backend,
) {
    let t = TestApp::with_config(backend, relay_config()).await;
    setup(&t).await;
    let port = free_port(); // nothing listens there yet
    email_connector(&t, port).await;
    for (id, email) in [("cust-30", "a@example.com"), ("cust-31", "b@example.com")] {
        put_subject(&t, id, json!({ "identifiers": { "email": email } })).await;
        choose(&t, id, "marketing.email", Some("email"), "grant").await;
    }
    let a = t.post("/v1/messages", email_to("cust-30")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let b = t.post("/v1/messages", email_to("cust-31")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    for id in [&a, &b] {
        assert!(status_becomes(&t, id, "retrying").await);
    }
    assert!(
        message(&t, &a).await["reason"]
            .as_str()
            .unwrap()
            .contains("SMTP")
    );
    choose(&t, "cust-31", "marketing.email", Some("email"), "withdraw").await;

    let sink = SmtpSink::start(port);
    assert!(
        status_becomes(&t, &a, "sent").await,
        "{}",
        message(&t, &a).await
    );
    assert!(status_becomes(&t, &b, "suppressed").await);
    assert_eq!(message(&t, &b).await["reason"], "withdrawn");
    let mails = sink.received();
    assert_eq!(mails.len(), 1, "{mails:?}");
    assert_eq!(mails[0]["to"], json!(["a@example.com"]));
    let log = message(&t, &a).await["log"].clone();
    let steps: Vec<&str> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["status"].as_str().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&"queued"));
    assert_eq!(steps.last(), Some(&"sent"));
    assert!(steps.contains(&"retrying"), "{steps:?}");
}

async fn sms_and_line_go_through_http_provider_connectors(backend: Backend) {
    let t = TestApp::with_config(backend, relay_config()).await;
    setup(&t).await;
    let sms = Receiver::start().await;
    let line = Receiver::start().await;
    for (channel, body) in [
        (
            "sms",
            json!({ "url": sms.url, "sender": "SHOP", "secret": "Bearer sms-key" }),
        ),
        ("line", json!({ "url": line.url, "secret": "line-token" })),
    ] {
        let (status, _, res) = t
            .request(
                Method::PUT,
                &format!("/v1/connectors/{channel}"),
                &t.owner,
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{res}");
        assert_eq!(res["has_secret"], true);
        assert!(res.get("secret").is_none());
    }
    put_subject(
        &t,
        "cust-40",
        json!({ "identifiers": { "phone": "+66 81 234 5678", "line_id": "U0123456789abcdef0123456789abcdef" } }),
    )
    .await;
    choose(&t, "cust-40", "marketing.sms", None, "grant").await;
    let send = |channel: &str| json!({ "subject": "cust-40", "channel": channel, "purpose": "marketing.sms", "content": { "text": "Sale starts today" } });
    let s = t.post("/v1/messages", send("sms")).await;
    let l = t.post("/v1/messages", send("line")).await;
    assert!(status_becomes(&t, s["id"].as_str().unwrap(), "sent").await);
    assert!(status_becomes(&t, l["id"].as_str().unwrap(), "sent").await);

    let got = sms.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["authorization"], "Bearer sms-key");
    let body: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(
        (
            body["to"].clone(),
            body["text"].clone(),
            body["sender"].clone()
        ),
        (
            json!("+66812345678"),
            json!("Sale starts today"),
            json!("SHOP")
        )
    );
    let got = line.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0["authorization"], "Bearer line-token");
    assert!(got[0].0.contains_key("x-line-retry-key"));
    let body: Value = serde_json::from_slice(&got[0].1).unwrap();
    assert_eq!(body["to"], "U0123456789abcdef0123456789abcdef");
    assert_eq!(
        body["messages"][0],
        json!({ "type": "text", "text": "Sale starts today" })
    );

    // A provider failing: retried, not lost.
    sms.set(common::Mode::Fail);
    let s = t.post("/v1/messages", send("sms")).await;
    let id = s["id"].as_str().unwrap();
    assert!(status_becomes(&t, id, "retrying").await);
    sms.set(common::Mode::Accept);
    assert!(status_becomes(&t, id, "sent").await);

    // Connector settings are checked.
    for (channel, body, field) in [
        (
            "email",
            json!({ "url": "http://mail", "from": "a@b.c" }),
            "url",
        ),
        (
            "email",
            json!({ "url": "smtp://127.0.0.1:25", "from": "not a mailbox" }),
            "from",
        ),
        (
            "line",
            json!({ "url": "https://api.line.me/v2/bot/message/push" }),
            "secret",
        ),
        ("web", json!({}), "channel"),
    ] {
        let (status, _, res) = t
            .request(
                Method::PUT,
                &format!("/v1/connectors/{channel}"),
                &t.owner,
                Some(body),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
        assert_eq!(res["field"], field, "{res}");
    }
}

async fn audiences_and_segments_report_sent_and_suppressed_counts(backend: Backend) {
    let t = TestApp::with_config(backend, relay_config()).await;
    setup(&t).await;
    let port = free_port();
    let sink = SmtpSink::start(port);
    email_connector(&t, port).await;
    let people = [
        ("p1", "p1@example.com", "TH", Some("grant")),
        ("p2", "p2@example.com", "TH", Some("withdraw")),
        ("p3", "p3@example.com", "TH", None),
        ("p4", "p4@example.com", "LA", Some("grant")),
    ];
    for (id, email, country, action) in people {
        put_subject(
            &t,
            id,
            json!({ "identifiers": { "email": email }, "attributes": { "country": country } }),
        )
        .await;
        if let Some(a) = action {
            choose(&t, id, "marketing.email", Some("email"), a).await;
        }
    }
    put_subject(&t, "p5", json!({ "attributes": { "country": "TH" } })).await;
    choose(&t, "p5", "marketing.email", Some("email"), "grant").await;

    let e = t
        .post_ok(
            "/v1/segments/evaluate",
            json!({ "filter": "country = \"TH\"", "purpose": "marketing.email", "channel": "email" }),
        )
        .await;
    assert_eq!(e["matched"], 4, "{e}");
    assert_eq!(e["allowed"], 2);
    assert_eq!(e["suppressed"], json!({ "withdrawn": 1, "no_consent": 1 }));

    let mut body = email_to("unused");
    body.as_object_mut().unwrap().remove("subject");
    body["audience"] = json!({ "segment": "country = \"TH\"" });
    let (status, _, a) = t
        .request(Method::POST, "/v1/messages", &t.owner, Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{a}");
    assert_eq!(a["recipients"], 4);
    assert_eq!(
        a["suppressed"],
        json!({ "withdrawn": 1, "no_consent": 1, "no_contact_point": 1 })
    );
    let id = a["audience"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(10), || async {
            t.get(&format!("/v1/audiences/{id}")).await["counts"]["sent"] == 1
        })
        .await
    );
    assert_eq!(sink.received().len(), 1);
    assert_eq!(sink.received()[0]["to"], json!(["p1@example.com"]));

    body["audience"] = json!({ "segment": "country = \"TH\" and and" });
    let (status, _, res) = t
        .request(Method::POST, "/v1/messages", &t.owner, Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{res}");
    assert!(
        res["detail"].as_str().unwrap().contains("position"),
        "{res}"
    );
    body["audience"] = json!({ "subjects": ["p1", "nobody"] });
    let (status, _, _) = t
        .request(Method::POST, "/v1/messages", &t.owner, Some(body))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
}

on_every_backend!(
    profiles_are_encrypted_masked_by_role_and_reads_in_clear_audited,
    profiles_survive_a_restart_and_a_wrong_master_key_is_refused,
    tracking_without_consent_is_dropped_and_withdrawal_stops_the_next_event,
    anonymous_consent_follows_the_person_identified_later,
    browser_sdks_use_the_short_paths_and_get_cors_for_the_tenants_origins_only,
    allowed_events_are_forwarded_to_nats_and_denied_ones_are_not,
    email_is_sent_only_with_consent_and_one_click_unsubscribe_withdraws_it,
    email_is_dkim_signed_with_the_tenants_key,
    smtp_outage_queues_and_retries_and_a_withdrawal_before_the_retry_suppresses,
    sms_and_line_go_through_http_provider_connectors,
    audiences_and_segments_report_sent_and_suppressed_counts,
);
