//! The authorization matrix: every operation of `/openapi.json` (the
//! route table as the code generates it) × every role, another tenant's
//! owner, a revoked key and no key, on SQLite and PostgreSQL. Each
//! operation must have a rule below: a new endpoint without one fails here.

#[macro_use]
mod common;

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use yinyom::model::Role;

use common::{Backend, TestApp};

/// Who may call an operation.
#[derive(Debug, Clone, Copy)]
enum Rule {
    /// No credentials: health, keys, the banner's calls.
    Public,
    /// A source's write key (the tracking collector), not an API key.
    WriteKey,
    /// API keys of these roles.
    Roles(&'static [Role]),
}

const OWNERS: Rule = Rule::Roles(&[Role::Owner]);
const MANAGERS: Rule = Rule::Roles(&[Role::Owner, Role::Admin]);
const STAFF: Rule = Rule::Roles(&[Role::Owner, Role::Admin, Role::User]);
const EVERYONE: Rule = Rule::Roles(&[Role::Owner, Role::Admin, Role::User, Role::Service]);
const SENDERS: Rule = Rule::Roles(&[Role::Owner, Role::Admin, Role::Service]);

fn rules() -> BTreeMap<&'static str, Rule> {
    use Rule::*;
    BTreeMap::from([
        ("GET /.well-known/jwks.json", Public),
        ("GET /healthz", Public),
        ("GET /readyz", Public),
        ("GET /sdk/v1/config", Public),
        ("POST /sdk/v1/consents", Public),
        ("GET /sdk/v1/tcf/vendor-list", Public),
        ("GET /v1/acquisitions", STAFF),
        ("PUT /v1/subjects/{id}/acquisition", STAFF),
        ("POST /v1/subjects/{id}/acquisition/notice", STAFF),
        ("GET /v1/audiences/{id}", EVERYONE),
        ("GET /v1/audit", MANAGERS),
        ("GET /v1/breaches", STAFF),
        ("POST /v1/breaches", MANAGERS),
        ("GET /v1/breaches/{id}", STAFF),
        ("POST /v1/breaches/{id}/notifications", MANAGERS),
        ("GET /v1/breaches/{id}/recipients", STAFF),
        ("POST /v1/breaches/{id}/recipients", MANAGERS),
        ("GET /v1/connectors", STAFF),
        ("PUT /v1/connectors/{channel}", MANAGERS),
        ("POST /v1/consents", EVERYONE),
        ("GET /v1/decisions", EVERYONE),
        ("POST /v1/decisions/batch", EVERYONE),
        ("GET /v1/keys", MANAGERS),
        ("POST /v1/keys", MANAGERS),
        ("DELETE /v1/keys/{id}", MANAGERS),
        ("GET /v1/ledger/verify", STAFF),
        ("GET /v1/ledger/verifications", STAFF),
        ("POST /v1/ledger/verifications", STAFF),
        ("GET /v1/ledger/verifications/{id}", STAFF),
        ("GET /v1/ledger/checkpoints", EVERYONE),
        ("POST /v1/ledger/checkpoints", STAFF),
        ("GET /v1/ledger/checkpoints/{number}", EVERYONE),
        ("GET /v1/receipts/{id}/proof", EVERYONE),
        ("POST /v1/messages", SENDERS),
        ("GET /v1/messages/{id}", EVERYONE),
        ("GET /v1/notices", EVERYONE),
        ("POST /v1/notices", MANAGERS),
        ("GET /v1/notices/{key}", EVERYONE),
        ("GET /v1/notices/{key}/renewals", STAFF),
        ("GET /v1/notices/{key}/versions/{version}", EVERYONE),
        ("GET /v1/purposes", EVERYONE),
        ("POST /v1/purposes", MANAGERS),
        ("GET /v1/purposes/{key}", EVERYONE),
        ("PATCH /v1/purposes/{key}", MANAGERS),
        ("GET /v1/records-of-processing", STAFF),
        ("GET /v1/requests", STAFF),
        ("POST /v1/requests", EVERYONE),
        ("GET /v1/requests/{id}", EVERYONE),
        ("POST /v1/requests/{id}/actions", STAFF),
        ("GET /v1/requests/{id}/bundle", STAFF),
        ("POST /v1/requests/{id}/verification", EVERYONE),
        ("POST /v1/requests/{id}/verification/confirm", EVERYONE),
        ("GET /v1/requests/{id}/plan", STAFF),
        ("POST /v1/requests/{id}/systems/{key}/confirm", STAFF),
        ("GET /v1/hooks", MANAGERS),
        ("POST /v1/hooks", MANAGERS),
        ("GET /v1/hooks/{id}", MANAGERS),
        ("PUT /v1/hooks/{id}", MANAGERS),
        ("DELETE /v1/hooks/{id}", MANAGERS),
        // A hook's reply carries its call's token, never an API key
        // (refused like a write key's calls).
        ("POST /v1/requests/{id}/hooks/{hook}/reply", WriteKey),
        ("GET /v1/systems", STAFF),
        ("POST /v1/systems", MANAGERS),
        ("GET /v1/systems/categories", EVERYONE),
        ("GET /v1/systems/{key}", STAFF),
        ("PUT /v1/systems/{key}", MANAGERS),
        ("DELETE /v1/systems/{key}", MANAGERS),
        ("POST /v1/systems/{key}/test", MANAGERS),
        ("GET /v1/subjects/{id}/systems", STAFF),
        ("POST /v1/segments/evaluate", EVERYONE),
        ("GET /v1/sources", STAFF),
        ("POST /v1/sources", MANAGERS),
        ("DELETE /v1/sources/{id}", MANAGERS),
        ("GET /v1/staff", OWNERS),
        ("POST /v1/staff", OWNERS),
        ("DELETE /v1/staff/{id}", OWNERS),
        ("GET /v1/stream", SENDERS),
        ("GET /v1/subjects/{id}", EVERYONE),
        ("PUT /v1/subjects/{id}", EVERYONE),
        ("GET /v1/subjects/{id}/consents", EVERYONE),
        ("GET /v1/subjects/{id}/events", STAFF),
        ("POST /v1/subjects/{id}/preference-link", EVERYONE),
        ("GET /v1/tenant", EVERYONE),
        ("PATCH /v1/tenant", OWNERS),
        ("GET /v1/tenant/banner-design", STAFF),
        ("PUT /v1/tenant/banner-design", MANAGERS),
        ("GET /v1/tenant/banner-design/history", STAFF),
        ("GET /v1/webhooks", MANAGERS),
        ("POST /v1/webhooks", MANAGERS),
        ("GET /v1/webhooks/{id}", MANAGERS),
        ("DELETE /v1/webhooks/{id}", MANAGERS),
        ("GET /v1/webhooks/{id}/deliveries", MANAGERS),
        ("POST /v1/webhooks/{id}/replay", MANAGERS),
        ("POST /v1/track", WriteKey),
        ("POST /v1/identify", WriteKey),
        ("POST /v1/page", WriteKey),
        ("POST /v1/screen", WriteKey),
        ("POST /v1/group", WriteKey),
        ("POST /v1/alias", WriteKey),
        ("POST /v1/batch", WriteKey),
        ("POST /v1/t", WriteKey),
        ("POST /v1/i", WriteKey),
        ("POST /v1/p", WriteKey),
        ("POST /v1/s", WriteKey),
        ("POST /v1/g", WriteKey),
        ("POST /v1/a", WriteKey),
        ("POST /v1/b", WriteKey),
        // The write key is in the path; unknown keys are 404.
        ("GET /v1/projects/{key}/settings", Public),
    ])
}

/// What tenant A holds that no one else may ever see.
const SECRET_NAME: &str = "Purpose-of-tenant-A-7f3a";
const SECRET_EMAIL: &str = "tenant-a-secret@example.com";
const SECRET_URL: &str = "https://a-secret.example/hook";

/// Tenant A's resources, by the path parameter that names them.
struct Ids {
    webhook: String,
    source: String,
    request: String,
    breach: String,
}

async fn setup(t: &TestApp) -> Ids {
    t.post(
        "/v1/purposes",
        json!({ "key": "a.secret", "names": { "en": SECRET_NAME }, "basis": "consent",
                "channels": ["email"], "retention_days": 30 }),
    )
    .await;
    t.post(
        "/v1/notices",
        json!({ "key": "main", "texts": { "en": { "title": SECRET_NAME, "body": "…" } }, "purposes": ["a.secret"] }),
    )
    .await;
    let (s, _, _) = t
        .request(
            Method::PUT,
            "/v1/subjects/cust-1",
            &t.owner,
            Some(json!({ "identifiers": { "email": SECRET_EMAIL } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    t.post(
        "/v1/consents",
        json!({ "subject": "cust-1", "source": "web", "notice": { "key": "main", "version": 1 },
                "actions": [{ "purpose": "a.secret", "channel": "email", "action": "grant" }] }),
    )
    .await;
    let webhook = t.post("/v1/webhooks", json!({ "url": SECRET_URL })).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let source = t
        .post(
            "/v1/sources",
            json!({ "name": SECRET_NAME, "purposes": ["a.secret"] }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let request = t
        .post(
            "/v1/requests",
            json!({ "subject": "cust-1", "kind": "access" }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let breach = t
        .post(
            "/v1/breaches",
            json!({ "discovered_at": "2026-01-01T00:00:00Z", "description": SECRET_NAME,
                    "affected_subjects": 1, "risk": "high", "risk_assessment": SECRET_NAME }),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_string();
    Ids {
        webhook,
        source,
        request,
        breach,
    }
}

/// The path with its parameters naming tenant A's resources (deletions
/// name nothing real, so the matrix leaves A's data in place).
fn concrete(method: &str, path: &str, ids: &Ids) -> String {
    let deleting = method == "DELETE";
    let id = |real: &str| {
        if deleting {
            "nope".to_string()
        } else {
            real.to_string()
        }
    };
    let mut p = path
        .replace("{key}", "a.secret")
        .replace("{version}", "1")
        .replace("{channel}", "sms")
        .replace("{hook}", "hk_nope");
    p = if p.starts_with("/v1/notices/") {
        p.replace("a.secret", "main")
    } else {
        p
    };
    let value = if p == "/v1/subjects/{id}" && method == "PUT" {
        // An upsert replaces the profile: not A's subject.
        "cust-put".to_string()
    } else if p.starts_with("/v1/subjects/") {
        "cust-1".to_string()
    } else if p.starts_with("/v1/webhooks/") {
        id(&ids.webhook)
    } else if p.starts_with("/v1/sources/") {
        id(&ids.source)
    } else if p.starts_with("/v1/requests/") {
        ids.request.clone()
    } else if p.starts_with("/v1/breaches/") {
        ids.breach.clone()
    } else {
        "nope".to_string()
    };
    p = p.replace("{id}", &value);
    if p == "/sdk/v1/config" || p == "/sdk/v1/tcf/vendor-list" {
        p.push_str("?site_key=site_nope");
    }
    p
}

/// A well-formed body for each operation that takes one (what it asks
/// may still be refused: the matrix is about who may ask).
fn body_for(method: &str, path: &str) -> Value {
    let op = format!("{method} {}", path.split('?').next().unwrap_or(path));
    match op.as_str() {
        o if o.ends_with("/acquisition") => {
            json!({ "source": "Partner", "acquired_at": "2026-11-01T00:00:00Z" })
        }
        o if o.ends_with("/acquisition/notice") => json!({ "method": "email" }),
        o if o.ends_with("/notifications") => json!({ "to": "regulator" }),
        o if o.ends_with("/recipients") => json!({ "subjects": ["cust-1"] }),
        o if o.ends_with("/verification") => json!({ "channel": "email" }),
        o if o.ends_with("/verification/confirm") => json!({ "code": "123456" }),
        o if o.ends_with("/actions") => json!({ "action": "verify" }),
        o if o.ends_with("/replay") => json!({}),
        o if o.ends_with("/reply") => json!({ "decision": "approve" }),
        "POST /v1/hooks" => json!({ "name": "Told", "url": "https://b.example/hook",
            "stage": "post_execution" }),
        o if o.starts_with("PUT /v1/hooks/") => json!({ "name": "Told",
            "url": "https://b.example/hook", "stage": "post_execution" }),
        o if o.starts_with("PUT /v1/connectors/") => json!({ "url": "https://sms.example/send" }),
        o if o.ends_with("/confirm") && o.contains("/systems/") => {
            json!({ "note": "done by hand" })
        }
        "POST /v1/systems" => json!({ "key": "team", "name": "Team", "kind": "manual" }),
        o if o.starts_with("PUT /v1/systems/") => json!({ "name": "Team", "kind": "manual" }),
        "POST /v1/breaches" => json!({ "discovered_at": "2026-01-01T00:00:00Z", "description": "b",
            "affected_subjects": 1, "risk": "unlikely", "risk_assessment": "b" }),
        "POST /v1/keys" => json!({ "role": "user" }),
        "POST /v1/messages" => {
            json!({ "subject": "cust-1", "channel": "email", "purpose": "a.secret",
            "content": { "subject": "Hi", "text": "Hello" } })
        }
        "POST /v1/notices" => {
            json!({ "key": "other", "texts": { "en": { "title": "t", "body": "b" } }, "purposes": [] })
        }
        "POST /v1/purposes" => {
            json!({ "key": "p.new", "names": { "en": "New" }, "basis": "consent", "retention_days": 30 })
        }
        "POST /v1/requests" => json!({ "subject": "cust-1", "kind": "access" }),
        "POST /v1/segments/evaluate" => json!({ "purpose": "a.secret" }),
        "POST /v1/sources" => json!({ "name": "s", "purposes": ["a.secret"] }),
        "POST /v1/staff" => {
            json!({ "email": "new@example.com", "role": "user", "password": "a long enough secret" })
        }
        "POST /v1/webhooks" => json!({ "url": "https://b.example/hook" }),
        "POST /v1/decisions/batch" => {
            json!({ "requests": [{ "subject": "cust-1", "purpose": "a.secret" }] })
        }
        _ => json!({}),
    }
}

/// Status and body of one call (the event stream only answers headers).
async fn call(t: &TestApp, method: &Method, path: &str, key: &str) -> (StatusCode, String) {
    if path == "/v1/stream" {
        let res = if key.is_empty() {
            t.send(
                axum::http::Request::get(path)
                    .body(axum::body::Body::empty())
                    .unwrap(),
            )
            .await
            .0
        } else {
            t.open(path, key, &[]).await.status()
        };
        return (res, String::new());
    }
    let body = matches!(*method, Method::POST | Method::PUT | Method::PATCH)
        .then(|| body_for(method.as_str(), path));
    let (s, _, b) = t.request(method.clone(), path, key, body).await;
    (s, b.to_string())
}

async fn every_operation_answers_each_caller_as_its_rule_says(backend: Backend) {
    let t = TestApp::new(backend).await;
    let ids = setup(&t).await;
    let other = t.create_tenant("Tenant B").await;
    let revoked = {
        let k = t
            .post("/v1/keys", json!({ "role": "admin", "label": "to revoke" }))
            .await;
        let (s, _, _) = t
            .request(
                Method::DELETE,
                &format!("/v1/keys/{}", k["id"].as_str().unwrap()),
                &t.owner,
                None,
            )
            .await;
        assert_eq!(s, StatusCode::NO_CONTENT);
        k["key"].as_str().unwrap().to_string()
    };
    let mut keys = vec![(Role::Owner, t.owner.clone())];
    for r in [Role::Admin, Role::User, Role::Service] {
        keys.push((r, t.key(r).await));
    }

    let doc = t.get("/openapi.json").await;
    let mut rules = rules();
    let mut failures = Vec::new();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (m, _) in item.as_object().unwrap() {
            let op = format!("{} {path}", m.to_uppercase());
            let Some(rule) = rules.remove(op.as_str()) else {
                failures.push(format!("{op}: no rule in tests/authz.rs; add one"));
                continue;
            };
            let method = Method::from_bytes(m.to_uppercase().as_bytes()).unwrap();
            let p = concrete(method.as_str(), path, &ids);
            let mut expect = |who: &str, ok: bool, (s, body): (StatusCode, String)| {
                checked += 1;
                if !ok {
                    failures.push(format!("{op} as {who}: {s} {body}"));
                }
                if s.is_server_error() {
                    failures.push(format!("{op} as {who}: a 5xx: {s} {body}"));
                }
            };
            let denied = |s: StatusCode| s == StatusCode::UNAUTHORIZED;
            // No key, a revoked key.
            let r = call(&t, &method, &p, "").await;
            expect("no key", matches!(rule, Rule::Public) != denied(r.0), r);
            let r = call(&t, &method, &p, &revoked).await;
            expect(
                "a revoked key",
                matches!(rule, Rule::Public) != denied(r.0),
                r,
            );
            for (role, key) in &keys {
                let r = call(&t, &method, &p, key).await;
                let ok = match rule {
                    Rule::Public => !denied(r.0) && r.0 != StatusCode::FORBIDDEN,
                    // An API key is not a write key.
                    Rule::WriteKey => r.0 == StatusCode::UNAUTHORIZED,
                    Rule::Roles(allowed) if allowed.contains(role) => {
                        !denied(r.0) && r.0 != StatusCode::FORBIDDEN
                    }
                    // Refused for the role (the bodies below are well
                    // formed, so the role is what refuses them).
                    Rule::Roles(_) => r.0 == StatusCode::FORBIDDEN,
                };
                expect(role.as_str(), ok, r);
            }
            // Another tenant's owner never sees tenant A's data.
            let r = call(&t, &method, &p, &other.owner).await;
            let leaked = [SECRET_NAME, SECRET_EMAIL, SECRET_URL]
                .iter()
                .any(|s| r.1.contains(s));
            let ok = !leaked
                && match rule {
                    Rule::WriteKey => r.0 == StatusCode::UNAUTHORIZED,
                    _ => !r.0.is_server_error(),
                };
            expect("tenant B's owner", ok, r);
        }
    }
    for op in rules.keys() {
        failures.push(format!(
            "{op}: a rule for an operation /openapi.json does not list"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {checked} calls:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 70 * 7, "{checked}");
    // Tenant A's data is all still there for its owner.
    let v: Value = t.get("/v1/subjects/cust-1").await;
    assert_eq!(v["identifiers"]["email"], SECRET_EMAIL);
}

/// A request as it comes from `peer` over a real connection.
fn from(
    peer: &str,
    path: &str,
    key: Option<&str>,
    forwarded: Option<&str>,
) -> axum::http::Request<axum::body::Body> {
    let mut req = axum::http::Request::get(path);
    if let Some(k) = key {
        req = req.header("authorization", format!("Bearer {k}"));
    }
    if let Some(f) = forwarded {
        req = req.header("x-forwarded-for", f);
    }
    let mut req = req.body(axum::body::Body::empty()).unwrap();
    let addr: std::net::SocketAddr = format!("{peer}:40000").parse().unwrap();
    req.extensions_mut()
        .insert(axum::extract::ConnectInfo(addr));
    req
}

async fn failed_authentications_and_public_calls_are_rate_limited_per_address(backend: Backend) {
    let proxy: std::net::IpAddr = "10.0.0.1".parse().unwrap();
    let t = TestApp::with_config(
        backend,
        yinyom::app::Config {
            trusted_proxies: vec![proxy],
            ..Default::default()
        },
    )
    .await;
    // Wrong keys from one address: 401 while tokens last, then 429 with
    // Retry-After, for any credentials from there; another address is not
    // affected.
    let mut statuses = Vec::new();
    for _ in 0..21 {
        statuses.push(
            t.send(from("203.0.113.9", "/v1/purposes", Some("yy_wrong"), None))
                .await
                .0,
        );
    }
    assert!(
        statuses[..20]
            .iter()
            .all(|s| *s == StatusCode::UNAUTHORIZED),
        "{statuses:?}"
    );
    let (s, h, _) = t
        .send(from("203.0.113.9", "/v1/purposes", Some(&t.owner), None))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    assert!(h.contains_key("retry-after"));
    let (s, _, _) = t
        .send(from("203.0.113.10", "/v1/purposes", Some(&t.owner), None))
        .await;
    assert_eq!(s, StatusCode::OK);
    // Behind a trusted proxy, the forwarded client counts, not the proxy;
    // a forwarded address from an untrusted peer is not believed.
    for _ in 0..25 {
        t.send(from(
            "10.0.0.1",
            "/v1/purposes",
            Some("yy_wrong"),
            Some("198.51.100.7"),
        ))
        .await;
    }
    let (s, _, _) = t
        .send(from(
            "10.0.0.1",
            "/v1/purposes",
            Some(&t.owner),
            Some("198.51.100.7"),
        ))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let (s, _, _) = t
        .send(from(
            "10.0.0.1",
            "/v1/purposes",
            Some(&t.owner),
            Some("198.51.100.8"),
        ))
        .await;
    assert_eq!(s, StatusCode::OK, "another client behind the same proxy");
    let (s, _, _) = t
        .send(from(
            "203.0.113.10",
            "/v1/purposes",
            Some(&t.owner),
            Some("203.0.113.9"),
        ))
        .await;
    assert_eq!(
        s,
        StatusCode::OK,
        "X-Forwarded-For from an untrusted peer is ignored"
    );
    // Public calls: bursts of 300 per address, then 429.
    let mut last = StatusCode::OK;
    for _ in 0..301 {
        last = t
            .send(from(
                "192.0.2.5",
                "/sdk/v1/config?site_key=site_nope",
                None,
                None,
            ))
            .await
            .0;
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
    // analytics.js's settings share the public allowance (guessed write
    // keys there are 404s, not failed authentications).
    let (s, _, _) = t
        .send(from(
            "192.0.2.5",
            "/v1/projects/yyw_guess/settings",
            None,
            None,
        ))
        .await;
    assert_eq!(s, StatusCode::TOO_MANY_REQUESTS);
    let (s, _, _) = t
        .send(from(
            "192.0.2.7",
            "/v1/projects/yyw_guess/settings",
            None,
            None,
        ))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = t
        .send(from(
            "192.0.2.6",
            "/sdk/v1/config?site_key=site_nope",
            None,
            None,
        ))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

on_every_backend!(
    every_operation_answers_each_caller_as_its_rule_says,
    failed_authentications_and_public_calls_are_rate_limited_per_address,
);
