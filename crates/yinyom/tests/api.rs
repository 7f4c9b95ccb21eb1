//! The HTTP API end to end: the real router on a real store, driven
//! in-process (see `common`); every test runs on SQLite and on PostgreSQL. Each test is one behaviour a user of the API
//! relies on.

#[macro_use]
mod common;

use axum::http::{HeaderMap, Method, StatusCode, header};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use serde_json::{Value, json};
use yinyom::model::Role;
use yinyom_core::time;

use std::time::Duration;

use common::{Backend, Mode, Receiver, Sse, TestApp, eventually, json_of};
use yinyom::app::Config;
use yinyom::dispatch::DispatchConfig;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A purpose body: `basis`, `channels`, optional validity, general data.
fn purpose(key: &str, basis: &str, channels: &[&str], validity_days: Option<u32>) -> Value {
    json!({
        "key": key,
        "names": { "th": format!("วัตถุประสงค์ {key}"), "en": format!("Purpose {key}") },
        "basis": basis,
        "channels": channels,
        "retention_days": 730,
        "validity_days": validity_days,
    })
}

/// A notice body asking for `purposes`.
fn notice(key: &str, body: &str, purposes: &[&str], material: bool) -> Value {
    json!({
        "key": key,
        "texts": {
            "th": { "title": "การตลาด", "body": body },
            "en": { "title": "Marketing", "body": body },
        },
        "purposes": purposes,
        "material": material,
    })
}

/// A consent request with one action; `notice` is `(key, version)`.
fn consent(
    subject: &str,
    notice: Option<(&str, u32)>,
    purpose: &str,
    channel: Option<&str>,
    action: &str,
) -> Value {
    let mut body = json!({
        "subject": subject,
        "source": "web",
        "evidence": { "ip": "203.0.113.9", "user_agent": "Mozilla/5.0", "locale": "th-TH" },
        "actions": [{ "purpose": purpose, "channel": channel, "action": action }],
    });
    if let Some((key, version)) = notice {
        body["notice"] = json!({ "key": key, "version": version });
    }
    body
}

/// The README's purpose and notice v1: `marketing.email`, consent, email,
/// valid 365 days; notice `marketing` asking for it. Returns the notice.
async fn readme_setup(t: &TestApp) -> Value {
    t.post(
        "/v1/purposes",
        purpose("marketing.email", "consent", &["email"], Some(365)),
    )
    .await;
    t.post(
        "/v1/notices",
        notice(
            "marketing",
            "We will email you offers.",
            &["marketing.email"],
            false,
        ),
    )
    .await
}

async fn decision(t: &TestApp, subject: &str, purpose: &str, channel: Option<&str>) -> Value {
    let mut path = format!("/v1/decisions?subject={subject}&purpose={purpose}");
    if let Some(c) = channel {
        path.push_str(&format!("&channel={c}"));
    }
    t.get(&path).await
}

/// `(allowed, reason)` of one decision.
async fn decide(
    t: &TestApp,
    subject: &str,
    purpose: &str,
    channel: Option<&str>,
) -> (bool, String) {
    let d = decision(t, subject, purpose, channel).await;
    (
        d["allowed"].as_bool().expect("allowed is a bool"),
        d["reason"]
            .as_str()
            .expect("reason is a string")
            .to_string(),
    )
}

fn allowed(reason: &str) -> (bool, String) {
    (true, reason.to_string())
}

fn denied(reason: &str) -> (bool, String) {
    (false, reason.to_string())
}

/// `GET /v1/ledger/verify` with `key`.
async fn verify_with(t: &TestApp, key: &str) -> Value {
    let (status, _, body) = t.request(Method::GET, "/v1/ledger/verify", key, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// How many ledger entries the owner's tenant has (asserting the chain is intact).
async fn ledger_len(t: &TestApp) -> u64 {
    let v = verify_with(t, &t.owner).await;
    assert_eq!(v["ok"], true, "ledger broken: {v}");
    v["checked"].as_u64().expect("checked is a number")
}

/// A 4xx problem+json of `kind` with `status`.
#[track_caller]
fn assert_problem(
    (status, headers, body): &(StatusCode, HeaderMap, Value),
    expected: StatusCode,
    kind: Option<&str>,
) {
    assert_eq!(*status, expected, "body: {body}");
    assert!(status.is_client_error(), "{status} is not a 4xx");
    assert_eq!(
        headers.get(header::CONTENT_TYPE).map(|v| v.as_bytes()),
        Some(&b"application/problem+json"[..]),
        "content-type of {status} {body}"
    );
    let ty = body["type"].as_str().unwrap_or_default();
    assert!(
        ty.starts_with("https://yinyom.dev/problems/"),
        "problem type {ty:?} in {body}"
    );
    if let Some(kind) = kind {
        assert_eq!(ty, format!("https://yinyom.dev/problems/{kind}"), "{body}");
    }
    assert_eq!(body["status"], expected.as_u16(), "{body}");
}

/// The same, for a raw response.
#[track_caller]
fn assert_raw_problem(
    (status, headers, bytes): (StatusCode, HeaderMap, axum::body::Bytes),
    expected: StatusCode,
    kind: Option<&str>,
) {
    assert_problem(&(status, headers, json_of(&bytes)), expected, kind);
}

/// Verify a receipt JWS against a JWKS with `jsonwebtoken` (not Yinyom's own
/// code); the claims, or why it failed.
fn verify_receipt(jwks: &Value, jws: &str) -> Result<Value, jsonwebtoken::errors::Error> {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
    let kid = decode_header(jws)?.kid;
    let jwk = jwks["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|k| k["kid"].as_str() == kid.as_deref())
        .expect("the receipt's kid is published");
    let key = DecodingKey::from_ed_components(jwk["x"].as_str().expect("x"))?;
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    decode::<Value>(jws, &key, &validation).map(|d| d.claims)
}

// ---------------------------------------------------------------------------
// 1. The README walkthrough
// ---------------------------------------------------------------------------

async fn readme_walkthrough_grant_decide_withdraw_history_verify(backend: Backend) {
    let t = TestApp::new(backend).await;
    let n = readme_setup(&t).await;
    assert_eq!(n["version"], 1);
    assert_eq!(n["material"], false);
    assert_eq!(n["content_hash"].as_str().map(str::len), Some(64));

    // The customer agrees on the website.
    let (status, headers, granted) = t
        .request(
            Method::POST,
            "/v1/consents",
            &t.owner,
            Some(consent(
                "cust-42",
                Some(("marketing", 1)),
                "marketing.email",
                Some("email"),
                "grant",
            )),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{granted}");
    assert!(headers.get("idempotent-replayed").is_none());
    assert_eq!(granted["subject"], "cust-42");
    let events = granted["events"].as_array().expect("events");
    assert_eq!(events.len(), 1);
    let e = &events[0];
    assert!(e["seq"].as_u64().is_some_and(|s| s >= 1), "{e}");
    // Where it sits: the subject's partition and its position there.
    assert_eq!(
        e["partition"],
        yinyom_core::ledger::partition_of(&t.tenant, "cust-42", 64)
    );
    assert!(e["pseq"].as_u64().is_some_and(|p| p >= 1), "{e}");
    assert_eq!(e["purpose"], "marketing.email");
    assert_eq!(e["channel"], "email");
    assert_eq!(e["action"], "grant");
    assert_eq!(e["state"], "granted");
    assert_eq!(e["hash"].as_str().map(str::len), Some(64));
    // Valid for 365 days from when it was given.
    let occurred = time::parse_rfc3339(e["occurred_at"].as_str().unwrap()).unwrap();
    let expires = time::parse_rfc3339(e["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(expires - occurred, 365 * time::MICROS_PER_DAY);
    let receipt = &granted["receipt"];
    assert!(
        receipt["jws"]
            .as_str()
            .is_some_and(|j| j.split('.').count() == 3)
    );
    assert_eq!(
        e["receipt"], receipt["id"],
        "the grant's entry names its receipt"
    );

    // May we email cust-42?
    let d = decision(&t, "cust-42", "marketing.email", Some("email")).await;
    assert_eq!(d["allowed"], true, "{d}");
    assert_eq!(d["reason"], "consent_granted");
    assert_eq!(d["state"], "granted");
    assert_eq!(d["notice"], json!({ "key": "marketing", "version": 1 }));
    assert_eq!(d["expires_at"], e["expires_at"]);

    // The customer withdraws (no notice needed).
    let withdrawn = t
        .post(
            "/v1/consents",
            json!({
                "subject": "cust-42", "source": "preference_center",
                "actions": [{ "purpose": "marketing.email", "channel": "email", "action": "withdraw" }],
            }),
        )
        .await;
    assert_eq!(withdrawn["events"][0]["seq"], nth_seq(&t, 2).await);
    assert_eq!(withdrawn["events"][0]["state"], "withdrawn");
    // A withdrawal gets a receipt too (no notice needed): it lists what
    // was withdrawn, and the entry carries its id.
    let w = &withdrawn["receipt"];
    assert_eq!(withdrawn["events"][0]["receipt"], w["id"], "{withdrawn}");
    let jwks = t.get("/.well-known/jwks.json").await;
    let claims = yinyom_core::receipt::verify_with_jwks(w["jws"].as_str().unwrap(), &jwks)
        .expect("the withdrawal receipt is signed");
    // ISO/IEC TS 27560: one consent record, its event a withdrawal.
    let records = claims["dpv:hasRecordOfActivity"].as_array().unwrap();
    assert_eq!(records.len(), 1, "{claims}");
    assert_eq!(
        records[0]["dpv:hasConsentStatus"][0]["@type"],
        "dpv:ConsentWithdrawn"
    );
    let process = &records[0]["dpv:hasProcess"][0];
    assert_eq!(
        process["dpv:hasPurpose"]["dct:identifier"],
        "marketing.email"
    );
    assert_eq!(process["yinyom:channel"], "email");
    assert!(records[0].get("dpv:hasNotice").is_none(), "{claims}");

    assert_eq!(
        decide(&t, "cust-42", "marketing.email", Some("email")).await,
        denied("withdrawn")
    );

    // The whole history with receipts.
    let h = t.get("/v1/subjects/cust-42/consents?history=true").await;
    assert_eq!(h["subject"], "cust-42");
    let consents = h["consents"].as_array().unwrap();
    assert_eq!(consents.len(), 1, "{h}");
    assert_eq!(consents[0]["state"], "withdrawn");
    assert_eq!(consents[0]["crm"], "not_consented");
    assert_eq!(consents[0]["seq"], nth_seq(&t, 2).await);
    let history = h["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{h}");
    assert_eq!(history[0]["action"], "grant");
    assert_eq!(history[1]["action"], "withdraw");
    assert_eq!(history[0]["hash"], e["hash"]);
    assert_eq!(history[1]["prev_hash"], history[0]["hash"]);
    assert_eq!(history[0]["notice"]["hash"], n["content_hash"]);
    assert_eq!(history[0]["receipt"], receipt["id"]);
    assert_eq!(history[1]["receipt"], w["id"]);
    let receipts = h["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 2, "the grant's and the withdrawal's: {h}");
    assert_eq!(receipts[0]["id"], receipt["id"]);
    assert_eq!(receipts[0]["jws"], receipt["jws"]);
    assert_eq!(receipts[1]["id"], w["id"]);

    // Without ?history only the current states.
    let plain = t.get("/v1/subjects/cust-42/consents").await;
    assert!(plain.get("history").is_none() && plain.get("receipts").is_none());

    let v = verify_with(&t, &t.owner).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["checked"], 2);
    assert_eq!(v["broken"], Value::Null);
}

// ---------------------------------------------------------------------------
// 2. Receipts verify with an independent JOSE library
// ---------------------------------------------------------------------------

async fn receipt_verifies_with_an_independent_jose_library_and_tampering_fails(backend: Backend) {
    use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};

    let t = TestApp::new(backend).await;
    // The signing key is stored sealed under the master key, never in clear
    // (a 32-byte secret would be the key itself).
    let stored: Vec<Vec<u8>> = sqlx::query_scalar("SELECT secret FROM signing_keys")
        .fetch_all(t.store.pool())
        .await
        .unwrap();
    assert!(
        !stored.is_empty() && stored.iter().all(|s| s.len() > 32),
        "{stored:?}"
    );
    let n = readme_setup(&t).await;
    let granted = t
        .post(
            "/v1/consents",
            consent(
                "cust-42",
                Some(("marketing", 1)),
                "marketing.email",
                Some("email"),
                "grant",
            ),
        )
        .await;
    let jws = granted["receipt"]["jws"].as_str().unwrap().to_string();
    let event = &granted["events"][0];

    let (status, headers, jwks) = t
        .request(Method::GET, "/.well-known/jwks.json", "", None)
        .await;
    assert_eq!(status, StatusCode::OK, "the JWKS is public: {jwks}");
    assert!(headers.get(header::CACHE_CONTROL).is_some());
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{jwks}");
    let jwk = &keys[0];
    assert_eq!(jwk["kty"], "OKP");
    assert_eq!(jwk["crv"], "Ed25519");
    assert_eq!(jwk["alg"], "EdDSA");

    let head = decode_header(&jws).expect("JWS header");
    assert_eq!(head.alg, Algorithm::EdDSA);
    assert_eq!(head.kid.as_deref(), jwk["kid"].as_str());

    let key = DecodingKey::from_ed_components(jwk["x"].as_str().unwrap()).expect("JWK x");
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let claims = decode::<Value>(&jws, &key, &validation)
        .expect("the receipt verifies with jsonwebtoken")
        .claims;

    // ISO/IEC TS 27560, as the W3C DPV guide writes it: a consent
    // receipt holding a consent record of the grant.
    assert_eq!(claims["@type"], "dpv:ConsentReceipt");
    assert_eq!(
        claims["dct:conformsTo"],
        "https://w3id.org/dpv/schema/dpv-27560#receipt"
    );
    let record = &claims["dpv:hasRecordOfActivity"][0];
    assert_eq!(record["dpv:hasDataSubject"]["dct:identifier"], "cust-42");
    let process = &record["dpv:hasProcess"][0];
    assert_eq!(
        process["dpv:hasPurpose"]["dct:identifier"],
        "marketing.email"
    );
    assert_eq!(process["dpv:hasLegalBasis"][0], "dpv:Consent");
    assert_eq!(process["yinyom:channel"], "email");
    assert_eq!(
        process["dpv:hasConsentControl"]["@type"],
        "dpv:WithdrawConsent"
    );
    assert_eq!(record["dpv:hasNotice"]["dct:identifier"], "marketing");
    assert_eq!(record["dpv:hasNotice"]["dct:hasVersion"], 1);
    assert_eq!(record["dpv:hasNotice"]["schema:sha256"], n["content_hash"]);
    let status = &record["dpv:hasConsentStatus"][0];
    assert_eq!(status["@type"][0], "dpv:ConsentGiven");
    assert_eq!(status["dpv:hasIndicationMethod"], "web");
    assert_eq!(record["dct:language"], "th", "evidence locale th-TH");
    assert_eq!(claims["jti"], claims["dct:identifier"]);
    assert_eq!(claims["dct:identifier"], granted["receipt"]["id"]);
    let occurred = time::parse_rfc3339(event["occurred_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        time::parse_rfc3339(status["dpv:isIndicatedAtTime"].as_str().unwrap()),
        Some(occurred)
    );
    // The receipt and the ledger vouch for each other: the grant's chained
    // entry carries the receipt id (the receipt is signed before the entry
    // exists, so it cannot carry the entry's hash).
    assert_eq!(event["receipt"], claims["dct:identifier"]);
    let h = t.get("/v1/subjects/cust-42/consents?history=true").await;
    assert_eq!(h["history"][0]["receipt"], claims["dct:identifier"]);
    assert_eq!(h["history"][0]["hash"], event["hash"]);

    // A forged payload with the original signature does not verify.
    let parts: Vec<&str> = jws.split('.').collect();
    let mut forged_claims = claims.clone();
    forged_claims["dpv:hasRecordOfActivity"][0]["dpv:hasDataSubject"]["dct:identifier"] =
        json!("cust-666");
    let forged_payload = B64.encode(serde_json::to_vec(&forged_claims).unwrap());
    let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
    assert!(decode::<Value>(&forged, &key, &validation).is_err());
    assert!(verify_receipt(&jwks, &forged).is_err());
    assert_eq!(verify_receipt(&jwks, &jws).unwrap(), claims);
    // Nor does one bit flipped in the signature.
    let mut sig = B64.decode(parts[2]).unwrap();
    sig[0] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], B64.encode(sig));
    assert!(decode::<Value>(&flipped, &key, &validation).is_err());
}

// ---------------------------------------------------------------------------
// 3. Decision rules through the API
// ---------------------------------------------------------------------------

async fn decision_rules_hold_through_the_api(backend: Backend) {
    let t = TestApp::new(backend).await;
    t.post(
        "/v1/purposes",
        purpose("marketing.email", "consent", &["email", "sms"], Some(365)),
    )
    .await;
    t.post(
        "/v1/purposes",
        purpose("analytics", "legitimate_interest", &["web"], None),
    )
    .await;
    t.post("/v1/purposes", purpose("billing", "contract", &[], None))
        .await;
    let mut health = purpose("health.reminders", "contract", &["sms"], None);
    health["categories"] = json!([{ "name": "health", "sensitivity": "sensitive" }]);
    t.post("/v1/purposes", health).await;
    t.post("/v1/purposes", purpose("surveys", "consent", &[], Some(1)))
        .await;
    let asks = ["marketing.email", "health.reminders", "surveys"];
    t.post("/v1/notices", notice("marketing", "v1 text", &asks, false))
        .await;

    // Notice outdated: a material v2 makes a v1 grant deny until renewed.
    t.post(
        "/v1/consents",
        consent(
            "cust-1",
            Some(("marketing", 1)),
            "marketing.email",
            Some("email"),
            "grant",
        ),
    )
    .await;
    assert_eq!(
        decide(&t, "cust-1", "marketing.email", Some("email")).await,
        allowed("consent_granted")
    );
    let v2 = t
        .post("/v1/notices", notice("marketing", "v2 text", &asks, true))
        .await;
    assert_eq!(v2["version"], 2);
    assert_eq!(v2["material"], true);
    assert_eq!(
        decide(&t, "cust-1", "marketing.email", Some("email")).await,
        denied("notice_outdated")
    );
    t.post(
        "/v1/consents",
        consent(
            "cust-1",
            Some(("marketing", 2)),
            "marketing.email",
            Some("email"),
            "grant",
        ),
    )
    .await;
    let d = decision(&t, "cust-1", "marketing.email", Some("email")).await;
    assert_eq!(
        (d["allowed"].clone(), d["reason"].clone()),
        (json!(true), json!("consent_granted"))
    );
    assert_eq!(d["notice"]["version"], 2);
    // A non-material v3 does not make the v2 grant outdated.
    t.post(
        "/v1/notices",
        notice("marketing", "v3 typo fix", &asks, false),
    )
    .await;
    assert_eq!(
        decide(&t, "cust-1", "marketing.email", Some("email")).await,
        allowed("consent_granted")
    );

    // Legitimate interest: allowed without consent, denied once objected.
    assert_eq!(
        decide(&t, "cust-2", "analytics", None).await,
        allowed("lawful_basis")
    );
    let (status, _, s) = t
        .request(
            Method::PUT,
            "/v1/subjects/cust-2",
            &t.owner,
            Some(json!({ "flags": { "objected": ["analytics"] } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{s}");
    assert_eq!(s["flags"]["objected"], json!(["analytics"]));
    assert_eq!(
        decide(&t, "cust-2", "analytics", Some("web")).await,
        denied("objected")
    );
    // Updating identifiers without `flags` keeps the objection.
    let (_, _, s) = t
        .request(
            Method::PUT,
            "/v1/subjects/cust-2",
            &t.owner,
            Some(json!({ "identifiers": { "email": "a@example.com" } })),
        )
        .await;
    assert_eq!(s["flags"]["objected"], json!(["analytics"]), "{s}");
    assert_eq!(
        decide(&t, "cust-2", "analytics", None).await,
        denied("objected")
    );
    // An objection does not stop processing on a contract.
    assert_eq!(
        decide(&t, "cust-2", "billing", None).await,
        allowed("lawful_basis")
    );

    // Restriction denies even a contract-basis purpose.
    assert_eq!(
        decide(&t, "cust-3", "billing", None).await,
        allowed("lawful_basis")
    );
    t.request(
        Method::PUT,
        "/v1/subjects/cust-3",
        &t.owner,
        Some(json!({ "flags": { "restricted": ["billing"] } })),
    )
    .await;
    assert_eq!(
        decide(&t, "cust-3", "billing", None).await,
        denied("restricted")
    );
    assert_eq!(
        decide(&t, "cust-3", "analytics", None).await,
        allowed("lawful_basis"),
        "restriction is per purpose"
    );
    // `*` restricts everything, consents included.
    t.request(
        Method::PUT,
        "/v1/subjects/cust-1",
        &t.owner,
        Some(json!({ "flags": { "restricted": ["*"] } })),
    )
    .await;
    assert_eq!(
        decide(&t, "cust-1", "marketing.email", Some("email")).await,
        denied("restricted")
    );
    // Lifting it restores the consent.
    t.request(
        Method::PUT,
        "/v1/subjects/cust-1",
        &t.owner,
        Some(json!({ "flags": {} })),
    )
    .await;
    assert_eq!(
        decide(&t, "cust-1", "marketing.email", Some("email")).await,
        allowed("consent_granted")
    );

    // Sensitive data on a contract purpose still needs explicit consent.
    assert_eq!(
        decide(&t, "cust-4", "health.reminders", Some("sms")).await,
        denied("no_consent")
    );
    t.post(
        "/v1/consents",
        consent(
            "cust-4",
            Some(("marketing", 3)),
            "health.reminders",
            Some("sms"),
            "grant",
        ),
    )
    .await;
    assert_eq!(
        decide(&t, "cust-4", "health.reminders", Some("sms")).await,
        allowed("consent_granted")
    );

    // A purpose-wide withdrawal after a channel grant denies the channel.
    t.post(
        "/v1/consents",
        consent(
            "cust-5",
            Some(("marketing", 3)),
            "marketing.email",
            Some("email"),
            "grant",
        ),
    )
    .await;
    assert_eq!(
        decide(&t, "cust-5", "marketing.email", Some("email")).await,
        allowed("consent_granted")
    );
    t.post(
        "/v1/consents",
        consent("cust-5", None, "marketing.email", None, "withdraw"),
    )
    .await;
    for channel in [Some("email"), Some("sms"), None] {
        assert_eq!(
            decide(&t, "cust-5", "marketing.email", channel).await,
            denied("withdrawn"),
            "channel {channel:?}"
        );
    }

    // A grant for one channel does not answer for the purpose as a whole
    // while another channel is refused.
    t.post(
        "/v1/consents",
        consent(
            "cust-6",
            Some(("marketing", 3)),
            "marketing.email",
            Some("email"),
            "grant",
        ),
    )
    .await;
    t.post(
        "/v1/consents",
        consent("cust-6", None, "marketing.email", Some("sms"), "deny"),
    )
    .await;
    assert_eq!(
        decide(&t, "cust-6", "marketing.email", Some("email")).await,
        allowed("consent_granted")
    );
    assert_eq!(
        decide(&t, "cust-6", "marketing.email", Some("sms")).await,
        denied("no_consent")
    );
    assert_eq!(
        decide(&t, "cust-6", "marketing.email", None).await,
        denied("no_consent")
    );

    // An older choice (by occurred_at) never overrides a newer one.
    let mut old = consent("cust-1", None, "marketing.email", Some("email"), "withdraw");
    old["occurred_at"] = json!("2020-01-01T00:00:00Z");
    t.post("/v1/consents", old).await;
    assert_eq!(
        decide(&t, "cust-1", "marketing.email", Some("email")).await,
        allowed("consent_granted")
    );

    // A grant past its validity reads as expired.
    let mut stale = consent("cust-7", Some(("marketing", 3)), "surveys", None, "grant");
    stale["occurred_at"] = json!(time::rfc3339(time::now() - 2 * time::MICROS_PER_DAY));
    t.post("/v1/consents", stale).await;
    let d = decision(&t, "cust-7", "surveys", None).await;
    assert_eq!(d["allowed"], false, "{d}");
    assert_eq!(d["reason"], "expired");
    assert_eq!(d["state"], "expired");

    // Batches answer in request order; an unknown purpose is one denied item.
    let (status, _, b) = t
        .request(
            Method::POST,
            "/v1/decisions/batch",
            &t.owner,
            Some(json!({ "requests": [
                { "subject": "cust-1", "purpose": "marketing.email", "channel": "email" },
                { "subject": "cust-2", "purpose": "analytics" },
                { "subject": "cust-1", "purpose": "no.such.purpose" },
                { "subject": "cust-5", "purpose": "marketing.email", "channel": "email" },
                { "subject": "cust-3", "purpose": "billing" },
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{b}");
    let got: Vec<(Value, Value, Value, Value)> = b["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["subject"].clone(),
                d["purpose"].clone(),
                d["allowed"].clone(),
                d["reason"].clone(),
            )
        })
        .collect();
    let want = [
        ("cust-1", "marketing.email", true, "consent_granted"),
        ("cust-2", "analytics", false, "objected"),
        ("cust-1", "no.such.purpose", false, "unknown_purpose"),
        ("cust-5", "marketing.email", false, "withdrawn"),
        ("cust-3", "billing", false, "restricted"),
    ]
    .map(|(s, p, a, r)| (json!(s), json!(p), json!(a), json!(r)));
    assert_eq!(got, want);

    // A single decision on an unknown purpose is a 404 problem.
    let r = t
        .request(
            Method::GET,
            "/v1/decisions?subject=cust-1&purpose=no.such.purpose",
            &t.owner,
            None,
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, Some("unknown-purpose"));
}

// ---------------------------------------------------------------------------
// 4. Bad input
// ---------------------------------------------------------------------------

async fn bad_consent_input_is_refused_with_a_problem_and_writes_nothing(backend: Backend) {
    let t = TestApp::new(backend).await;
    readme_setup(&t).await;
    t.post("/v1/purposes", purpose("billing", "contract", &[], None))
        .await;
    t.post(
        "/v1/notices",
        notice("terms", "Terms.", &["billing"], false),
    )
    .await;
    // One good write so "nothing written" is measured against a real ledger.
    t.post(
        "/v1/consents",
        consent(
            "cust-1",
            Some(("marketing", 1)),
            "marketing.email",
            Some("email"),
            "grant",
        ),
    )
    .await;
    assert_eq!(ledger_len(&t).await, 1);

    let good = || {
        consent(
            "cust-2",
            Some(("marketing", 1)),
            "marketing.email",
            Some("email"),
            "grant",
        )
    };
    let future = time::rfc3339(time::now() + 3_600 * 1_000_000);
    let mut cases: Vec<(&str, Value, StatusCode, Option<&str>)> = Vec::new();
    let mut with = |name, edit: &dyn Fn(&mut Value), status, kind| {
        let mut body = good();
        edit(&mut body);
        cases.push((name, body, status, kind));
    };
    use StatusCode as S;
    with(
        "unknown top-level field",
        &|b| b["colour"] = json!("red"),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "unknown action field",
        &|b| b["actions"][0]["chanel"] = json!("email"),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "unknown purpose",
        &|b| b["actions"][0]["purpose"] = json!("no.such.purpose"),
        S::UNPROCESSABLE_ENTITY,
        Some("unknown-purpose"),
    );
    with(
        "notice version that does not exist",
        &|b| b["notice"]["version"] = json!(9),
        S::UNPROCESSABLE_ENTITY,
        Some("unknown-notice"),
    );
    with(
        "notice key that does not exist",
        &|b| b["notice"]["key"] = json!("nope"),
        S::UNPROCESSABLE_ENTITY,
        Some("unknown-notice"),
    );
    with(
        "grant without a notice",
        &|b| {
            b.as_object_mut().unwrap().remove("notice");
        },
        S::UNPROCESSABLE_ENTITY,
        Some("notice-required"),
    );
    with(
        "grant on a contract purpose",
        &|b| {
            b["notice"] = json!({ "key": "terms", "version": 1 });
            b["actions"][0] = json!({ "purpose": "billing", "action": "grant" });
        },
        S::UNPROCESSABLE_ENTITY,
        Some("basis-not-consent"),
    );
    with(
        "notice that does not ask for the purpose",
        &|b| b["notice"] = json!({ "key": "terms", "version": 1 }),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "channel not in the purpose",
        &|b| b["actions"][0]["channel"] = json!("sms"),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "channel that does not exist",
        &|b| b["actions"][0]["channel"] = json!("pigeon"),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "expire through the API",
        &|b| b["actions"][0]["action"] = json!("expire"),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "occurred_at in the future",
        &|b| b["occurred_at"] = json!(future),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "occurred_at not RFC 3339",
        &|b| b["occurred_at"] = json!("yesterday"),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "no actions",
        &|b| b["actions"] = json!([]),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "empty subject",
        &|b| b["subject"] = json!(""),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "bad source",
        &|b| b["source"] = json!("Web Site"),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "evidence not an object",
        &|b| b["evidence"] = json!("203.0.113.9"),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "the same purpose and channel twice",
        &|b| {
            let a = b["actions"][0].clone();
            b["actions"].as_array_mut().unwrap().push(a);
        },
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "one valid and one invalid action",
        &|b| {
            b["actions"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "purpose": "no.such.purpose", "action": "deny" }));
        },
        S::UNPROCESSABLE_ENTITY,
        Some("unknown-purpose"),
    );
    with(
        "a valid grant and an invalid expire",
        &|b| {
            b["actions"]
                .as_array_mut()
                .unwrap()
                .push(json!({ "purpose": "marketing.email", "action": "expire" }));
        },
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    with(
        "wrong type",
        &|b| b["actions"] = json!("grant everything"),
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    for (name, body, status, kind) in cases {
        let r = t
            .request(Method::POST, "/v1/consents", &t.owner, Some(body))
            .await;
        assert_eq!(r.0, status, "{name}: {}", r.2);
        assert_problem(&r, status, kind);
        assert!(!r.2["detail"].as_str().unwrap_or("").is_empty(), "{name}");
        assert_eq!(ledger_len(&t).await, 1, "{name} wrote something");
    }

    // Bodies that are not JSON, or not the right size.
    let raw = |body: Vec<u8>| {
        t.request_raw(
            Method::POST,
            "/v1/consents",
            Some(&t.owner),
            &[],
            Some(body),
        )
    };
    assert_raw_problem(
        raw(br#"{"subject": "cust-2", "#.to_vec()).await,
        S::BAD_REQUEST,
        Some("malformed-json"),
    );
    assert_raw_problem(raw(b"".to_vec()).await, S::BAD_REQUEST, None);
    assert_raw_problem(
        raw(b"[1, 2, 3]".to_vec()).await,
        S::UNPROCESSABLE_ENTITY,
        None,
    );
    // Invalid UTF-8 inside a JSON string.
    let mut bytes = serde_json::to_vec(&good()).unwrap();
    let at = bytes.windows(7).position(|w| w == b"cust-2\"").unwrap();
    bytes[at + 4] = 0xff;
    bytes[at + 5] = 0xfe;
    let r = raw(bytes).await;
    assert!(r.0.is_client_error(), "{r:?}");
    assert_raw_problem(r, S::BAD_REQUEST, Some("malformed-json"));
    // More than 1 MiB.
    let mut big = good();
    big["evidence"]["padding"] = json!("x".repeat(1024 * 1024 + 1));
    assert_raw_problem(
        raw(serde_json::to_vec(&big).unwrap()).await,
        S::PAYLOAD_TOO_LARGE,
        Some("payload-too-large"),
    );
    // A large-but-allowed body is refused for its evidence, not its size.
    let mut ev = good();
    ev["evidence"]["padding"] = json!("x".repeat(20 * 1024));
    let r = t
        .request(Method::POST, "/v1/consents", &t.owner, Some(ev))
        .await;
    assert_problem(&r, S::UNPROCESSABLE_ENTITY, Some("validation"));
    assert_eq!(r.2["field"], "evidence");
    assert_eq!(ledger_len(&t).await, 1);

    // Idempotency: the same key and body replay; another body is refused.
    async fn post_with_key(
        t: &TestApp,
        key: &str,
        body: &Value,
    ) -> (StatusCode, HeaderMap, axum::body::Bytes) {
        t.request_raw(
            Method::POST,
            "/v1/consents",
            Some(&t.owner),
            &[("Idempotency-Key", key)],
            Some(serde_json::to_vec(body).unwrap()),
        )
        .await
    }
    let (s1, h1, b1) = post_with_key(&t, "signup-2", &good()).await;
    assert_eq!(s1, S::CREATED, "{}", json_of(&b1));
    assert!(h1.get("idempotent-replayed").is_none());
    assert_eq!(ledger_len(&t).await, 2);
    let (s2, h2, b2) = post_with_key(&t, "signup-2", &good()).await;
    assert_eq!(s2, S::CREATED);
    assert_eq!(
        h2.get("idempotent-replayed").map(|v| v.as_bytes()),
        Some(&b"true"[..])
    );
    let (first, replayed) = (json_of(&b1), json_of(&b2));
    assert_eq!(replayed, first, "the replay is the first response");
    assert_eq!(replayed["events"][0]["seq"], nth_seq(&t, 2).await);
    assert_eq!(ledger_len(&t).await, 2, "a replay writes nothing");
    let mut other = good();
    other["actions"][0]["action"] = json!("deny");
    other.as_object_mut().unwrap().remove("notice");
    let r = post_with_key(&t, "signup-2", &other).await;
    assert_raw_problem(r, S::UNPROCESSABLE_ENTITY, Some("idempotency-key-reused"));
    assert_eq!(ledger_len(&t).await, 2);
    let r = post_with_key(&t, "", &other).await;
    assert_raw_problem(r, S::UNPROCESSABLE_ENTITY, Some("validation"));
    assert_eq!(ledger_len(&t).await, 2);
    // The key is still free for a refused request's retry.
    let mut refused = good();
    refused["subject"] = json!("cust-3");
    refused["actions"][0]["channel"] = json!("sms");
    assert_raw_problem(
        post_with_key(&t, "signup-3", &refused).await,
        S::UNPROCESSABLE_ENTITY,
        Some("validation"),
    );
    refused["actions"][0]["channel"] = json!("email");
    let (s, h, _) = post_with_key(&t, "signup-3", &refused).await;
    assert_eq!(s, S::CREATED);
    assert!(h.get("idempotent-replayed").is_none());
    assert_eq!(ledger_len(&t).await, 3);
}

async fn bad_requests_of_every_other_kind_are_problems_not_errors(backend: Backend) {
    let t = TestApp::new(backend).await;
    readme_setup(&t).await;
    use StatusCode as S;

    // Wrong method, unknown path.
    for (m, path) in [
        (Method::DELETE, "/v1/consents"),
        (Method::PUT, "/v1/purposes"),
        (Method::POST, "/v1/ledger/verify"),
        (Method::DELETE, "/v1/decisions"),
    ] {
        let r = t.request(m, path, &t.owner, None).await;
        assert_problem(&r, S::METHOD_NOT_ALLOWED, Some("method-not-allowed"));
        assert!(
            r.1.get(header::ALLOW).is_some(),
            "405 without Allow: {path}"
        );
    }
    for path in ["/v1/nope", "/v2/purposes", "/", "/v1/purposes/a/b/c"] {
        let r = t.request(Method::GET, path, &t.owner, None).await;
        assert_problem(&r, S::NOT_FOUND, Some("not-found"));
    }

    // Missing, malformed or unknown credentials.
    for auth in [
        None,
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer"),
        Some("Bearer "),
        Some("Bearer yy_not_a_real_key"),
    ] {
        let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("authorization", *a)).collect();
        for (m, path, body) in [
            (Method::GET, "/v1/purposes", None),
            (
                Method::GET,
                "/v1/decisions?subject=a&purpose=marketing.email",
                None,
            ),
            (
                Method::POST,
                "/v1/consents",
                Some(
                    serde_json::to_vec(&consent("c", None, "marketing.email", None, "deny"))
                        .unwrap(),
                ),
            ),
        ] {
            let (status, h, b) = t.request_raw(m, path, None, &headers, body).await;
            assert!(
                h.get(header::WWW_AUTHENTICATE).is_some(),
                "401 without WWW-Authenticate"
            );
            assert_raw_problem((status, h, b), S::UNAUTHORIZED, Some("unauthorized"));
        }
    }
    assert_eq!(ledger_len(&t).await, 0);

    // Purposes and notices.
    let mut p = purpose("sms", "consent", &["sms"], None);
    for (edit, kind) in [
        (json!({ "key": "Bad Key" }), "validation"),
        (json!({ "basis": "because" }), "validation"),
        (json!({ "names": {} }), "validation"),
        (json!({ "retention_days": 0 }), "validation"),
        (
            json!({ "retention_days": 10, "validity_days": 30 }),
            "validation",
        ),
        (json!({ "channels": ["sms", "sms"] }), "validation"),
        (json!({ "channels": ["fax"] }), "validation"),
    ] {
        let mut body = p.clone();
        for (k, v) in edit.as_object().unwrap() {
            body[k] = v.clone();
        }
        let r = t
            .request(Method::POST, "/v1/purposes", &t.owner, Some(body))
            .await;
        assert_problem(&r, S::UNPROCESSABLE_ENTITY, Some(kind));
    }
    p["key"] = json!("x".repeat(65));
    let r = t
        .request(Method::POST, "/v1/purposes", &t.owner, Some(p))
        .await;
    assert_problem(&r, S::UNPROCESSABLE_ENTITY, Some("validation"));
    let r = t
        .request_raw(
            Method::POST,
            "/v1/purposes",
            Some(&t.owner),
            &[],
            Some(b"{not json".to_vec()),
        )
        .await;
    assert_raw_problem(r, S::BAD_REQUEST, Some("malformed-json"));
    let r = t
        .request_raw(
            Method::POST,
            "/v1/purposes",
            Some(&t.owner),
            &[("content-type", "text/plain")],
            Some(serde_json::to_vec(&purpose("sms", "consent", &[], None)).unwrap()),
        )
        .await;
    assert_raw_problem(r, S::UNSUPPORTED_MEDIA_TYPE, Some("unsupported-media-type"));
    let mut huge = purpose("sms", "consent", &[], None);
    huge["descriptions"] = json!({ "en": "x".repeat(2 * 1024 * 1024) });
    let r = t
        .request(Method::POST, "/v1/purposes", &t.owner, Some(huge))
        .await;
    assert_problem(&r, S::PAYLOAD_TOO_LARGE, Some("payload-too-large"));
    let r = t
        .request(
            Method::POST,
            "/v1/notices",
            &t.owner,
            Some(notice("marketing", "text", &["no.such.purpose"], false)),
        )
        .await;
    assert_problem(&r, S::UNPROCESSABLE_ENTITY, Some("unknown-purpose"));
    assert_eq!(r.2["field"], "purposes/0");
    let r = t
        .request(
            Method::POST,
            "/v1/notices",
            &t.owner,
            Some(notice("marketing", "text", &[], false)),
        )
        .await;
    assert_problem(&r, S::UNPROCESSABLE_ENTITY, Some("validation"));
    // Nothing of that was registered.
    let list = t.get("/v1/purposes").await;
    assert_eq!(list["purposes"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(t.get("/v1/notices/marketing").await["version"], 1);
    let r = t
        .request(
            Method::GET,
            "/v1/notices/marketing/versions/2",
            &t.owner,
            None,
        )
        .await;
    assert_problem(&r, S::NOT_FOUND, Some("not-found"));
    let r = t
        .request(
            Method::GET,
            "/v1/notices/marketing/versions/two",
            &t.owner,
            None,
        )
        .await;
    assert_problem(&r, S::BAD_REQUEST, Some("bad-path"));

    // Subjects.
    for (body, kind) in [
        (json!({ "identifiers": { "passport": "X1" } }), "validation"),
        (json!({ "identifiers": { "email": "" } }), "validation"),
        (json!({ "flags": { "erased": true } }), "validation"),
        (
            json!({ "flags": { "objected": ["no.such.purpose"] } }),
            "validation",
        ),
        (json!({ "flags": { "restricted": "all" } }), "validation"),
    ] {
        let r = t
            .request(Method::PUT, "/v1/subjects/cust-9", &t.owner, Some(body))
            .await;
        assert_problem(&r, S::UNPROCESSABLE_ENTITY, Some(kind));
    }
    let r = t
        .request(Method::GET, "/v1/subjects/cust-9", &t.owner, None)
        .await;
    assert_problem(&r, S::NOT_FOUND, Some("not-found"));
    let r = t
        .request(Method::GET, "/v1/subjects/cust-9/consents", &t.owner, None)
        .await;
    assert_problem(&r, S::NOT_FOUND, Some("not-found"));

    // Decisions.
    for path in [
        "/v1/decisions",
        "/v1/decisions?subject=a",
        "/v1/decisions?subject=a&purpose=marketing.email&channel=pigeon",
        "/v1/decisions?subject=a&purpose=marketing.email&colour=red",
    ] {
        let r = t.request(Method::GET, path, &t.owner, None).await;
        assert_problem(&r, S::BAD_REQUEST, Some("bad-query"));
    }
    for body in [
        json!({}),
        json!({ "requests": [{ "subject": "a" }] }),
        json!({ "requests": [], "extra": 1 }),
    ] {
        let r = t
            .request(Method::POST, "/v1/decisions/batch", &t.owner, Some(body))
            .await;
        assert_problem(&r, S::UNPROCESSABLE_ENTITY, Some("validation"));
    }
    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({ "subject": format!("s{i}"), "purpose": "marketing.email" }))
        .collect();
    let r = t
        .request(
            Method::POST,
            "/v1/decisions/batch",
            &t.owner,
            Some(json!({ "requests": too_many })),
        )
        .await;
    assert_problem(&r, S::UNPROCESSABLE_ENTITY, Some("validation"));
    // A batch may be larger than 1 MiB (up to 10,000 queries).
    let many: Vec<Value> = (0..10_000)
        .map(|i| {
            json!({
                "subject": format!("{}-{i:08}", "s".repeat(80)),
                "purpose": "marketing.email",
                "channel": "email",
            })
        })
        .collect();
    let body = json!({ "requests": many });
    assert!(serde_json::to_vec(&body).unwrap().len() > 1024 * 1024);
    let (status, _, b) = t
        .request(Method::POST, "/v1/decisions/batch", &t.owner, Some(body))
        .await;
    assert_eq!(status, S::OK);
    assert_eq!(b["decisions"].as_array().unwrap().len(), 10_000);

    // Keys and tenant.
    for body in [
        json!({ "role": "root" }),
        json!({ "role": "user", "label": "a\u{7}b" }),
    ] {
        let r = t
            .request(Method::POST, "/v1/keys", &t.owner, Some(body))
            .await;
        assert_problem(&r, S::UNPROCESSABLE_ENTITY, Some("validation"));
    }
    let r = t
        .request(Method::DELETE, "/v1/keys/no-such-key", &t.owner, None)
        .await;
    assert_problem(&r, S::NOT_FOUND, Some("not-found"));
    for body in [
        json!({ "jurisdictions": ["US"] }),
        json!({ "name": "" }),
        json!({ "policy_url": "ftp://x" }),
        json!({ "dpo": { "name": "D", "email": "not-an-email" } }),
        json!({ "owner": "me" }),
    ] {
        let r = t
            .request(Method::PATCH, "/v1/tenant", &t.owner, Some(body))
            .await;
        assert_problem(&r, S::UNPROCESSABLE_ENTITY, Some("validation"));
    }
    assert_eq!(t.get("/v1/tenant").await["name"], "Default organisation");
    assert_eq!(ledger_len(&t).await, 0);
}

/// A misspelt field must not be silently dropped: `"materal": true` on a
/// notice would publish a non-material version, and `"flag": {...}` on a
/// subject would lose an objection.
async fn misspelt_fields_in_purposes_notices_and_subjects_are_refused(backend: Backend) {
    let t = TestApp::new(backend).await;
    readme_setup(&t).await;
    let mut p = purpose("sms", "consent", &["sms"], None);
    p["validty_days"] = json!(30);
    let mut n = notice("marketing", "v2", &["marketing.email"], false);
    n.as_object_mut().unwrap().remove("material");
    n["materal"] = json!(true);
    let mut accepted = Vec::new();
    for (m, path, body) in [
        (Method::POST, "/v1/purposes", p),
        (Method::POST, "/v1/notices", n),
        (
            Method::PUT,
            "/v1/subjects/cust-1",
            json!({ "flag": { "objected": ["marketing.email"] } }),
        ),
        (
            Method::PATCH,
            "/v1/purposes/marketing.email",
            json!({ "validty_days": 30 }),
        ),
    ] {
        let r = t.request(m.clone(), path, &t.owner, Some(body)).await;
        if r.0 != StatusCode::UNPROCESSABLE_ENTITY {
            accepted.push(format!("{m} {path} -> {} {}", r.0, r.2));
        }
    }
    assert!(
        accepted.is_empty(),
        "misspelt fields accepted:\n{}",
        accepted.join("\n")
    );
}

/// RFC 9110 §11.1: the authentication scheme is a case-insensitive token.
async fn the_bearer_scheme_is_case_insensitive(backend: Backend) {
    let t = TestApp::new(backend).await;
    for scheme in ["bearer", "BEARER"] {
        let auth = format!("{scheme} {}", t.owner);
        let (s, _, body) = t
            .request_raw(
                Method::GET,
                "/v1/purposes",
                None,
                &[("authorization", &auth)],
                None,
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{scheme}: {}", json_of(&body));
    }
}

async fn post_consent(
    t: &TestApp,
    idempotency_key: Option<&str>,
    body: Vec<u8>,
) -> (StatusCode, HeaderMap, axum::body::Bytes) {
    let headers: Vec<(&str, &str)> = idempotency_key
        .map(|k| ("Idempotency-Key", k))
        .into_iter()
        .collect();
    t.request_raw(
        Method::POST,
        "/v1/consents",
        Some(&t.owner),
        &headers,
        Some(body),
    )
    .await
}

/// Retries of one request racing each other, mixed with other writes in the
/// same group commits: every call is answered, the retried request is written
/// once, every other request is written, and the chain verifies.
async fn racing_retries_and_other_writes_in_one_group_commit(backend: Backend) {
    let t = TestApp::new(backend).await;
    readme_setup(&t).await;
    let retried = serde_json::to_vec(&consent(
        "cust-retry",
        Some(("marketing", 1)),
        "marketing.email",
        Some("email"),
        "grant",
    ))
    .unwrap();
    let others: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            let mut body = consent(&format!("cust-{i}"), None, "marketing.email", None, "deny");
            body["evidence"] = json!({ "ip": format!("198.51.100.{i}") });
            serde_json::to_vec(&body).unwrap()
        })
        .collect();
    for round in 0..5 {
        let key = format!("retry-{round}");
        // Ten retries of the keyed request interleaved with forty others.
        let mut calls = Vec::new();
        for (i, body) in others.iter().enumerate() {
            if i % 4 == 0 {
                calls.push(post_consent(&t, Some(&key), retried.clone()));
            }
            calls.push(post_consent(&t, None, body.clone()));
        }
        let before = ledger_len(&t).await;
        let results = futures_util::future::join_all(calls).await;
        let mut written = 0;
        let mut first = None;
        for (n, (status, headers, body)) in results.into_iter().enumerate() {
            let body = json_of(&body);
            assert_eq!(
                status,
                StatusCode::CREATED,
                "round {round} call {n}: {body}"
            );
            if body["subject"] == "cust-retry" {
                if headers.get("idempotent-replayed").is_none() {
                    written += 1;
                }
                match &first {
                    None => first = Some(body),
                    Some(f) => assert_eq!(&body, f, "every retry gets the same answer"),
                }
            }
        }
        assert_eq!(
            written, 1,
            "round {round}: the retried request was written {written} times"
        );
        assert_eq!(ledger_len(&t).await, before + 1 + 40, "round {round}");
    }
    // Each entry kept its own evidence: changing nothing, the chain verifies
    // with evidence checked against each entry's hash.
    let v = verify_with(&t, &t.owner).await;
    assert_eq!(v["ok"], true, "{v}");
}

// ---------------------------------------------------------------------------
// 5. Tenant isolation
// ---------------------------------------------------------------------------

async fn one_tenant_never_sees_or_changes_another_tenants_data(backend: Backend) {
    let t = TestApp::new(backend).await;
    readme_setup(&t).await;
    let a_grant = t
        .request_raw(
            Method::POST,
            "/v1/consents",
            Some(&t.owner),
            &[("Idempotency-Key", "signup-42")],
            Some(
                serde_json::to_vec(&consent(
                    "cust-42",
                    Some(("marketing", 1)),
                    "marketing.email",
                    Some("email"),
                    "grant",
                ))
                .unwrap(),
            ),
        )
        .await;
    assert_eq!(a_grant.0, StatusCode::CREATED);
    t.request(
        Method::PUT,
        "/v1/subjects/cust-42",
        &t.owner,
        Some(json!({ "identifiers": { "email": "somchai@example.com" } })),
    )
    .await;
    let (a_service_key, a_service_id) = t.key_in(&t.tenant, Role::Service).await;

    let b = t.create_tenant("Other organisation").await;
    let bk = b.owner.as_str();
    let get = |path: &'static str| t.request(Method::GET, path, bk, None);

    // Reads: empty lists or 404s, never A's data.
    let (s, _, list) = get("/v1/purposes").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["purposes"], json!([]));
    let (s, _, list) = get("/v1/notices").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["notices"], json!([]));
    for path in [
        "/v1/purposes/marketing.email",
        "/v1/notices/marketing",
        "/v1/notices/marketing/versions/1",
        "/v1/subjects/cust-42",
        "/v1/subjects/cust-42/consents",
        "/v1/subjects/cust-42/consents?history=true",
    ] {
        assert_problem(&get(path).await, StatusCode::NOT_FOUND, Some("not-found"));
    }
    assert_problem(
        &get("/v1/decisions?subject=cust-42&purpose=marketing.email&channel=email").await,
        StatusCode::NOT_FOUND,
        Some("unknown-purpose"),
    );
    let (_, _, tenant) = get("/v1/tenant").await;
    assert_eq!(tenant["id"], b.id.as_str());
    let (_, _, keys) = get("/v1/keys").await;
    let keys = keys["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "B sees only its own key: {keys:?}");
    assert_ne!(keys[0]["id"], a_service_id.as_str());

    // Writes: A's purposes and notices do not exist for B.
    let r = t
        .request(
            Method::POST,
            "/v1/consents",
            bk,
            Some(consent(
                "cust-42",
                Some(("marketing", 1)),
                "marketing.email",
                Some("email"),
                "grant",
            )),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("unknown-notice"));
    let r = t
        .request(
            Method::DELETE,
            &format!("/v1/keys/{a_service_id}"),
            bk,
            None,
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, Some("not-found"));
    let (s, _, _) = t
        .request(Method::GET, "/v1/purposes", &a_service_key, None)
        .await;
    assert_eq!(s, StatusCode::OK, "A's key still works");

    // B registers the same purpose key: A's consent still does not count.
    let (s, _, _) = t
        .request(
            Method::POST,
            "/v1/purposes",
            bk,
            Some(purpose("marketing.email", "consent", &["email"], None)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "the same key in another tenant");
    let (s, _, _) = t
        .request(
            Method::POST,
            "/v1/notices",
            bk,
            Some(notice("marketing", "B's text", &["marketing.email"], false)),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let (_, _, d) =
        get("/v1/decisions?subject=cust-42&purpose=marketing.email&channel=email").await;
    assert_eq!(d["allowed"], false, "{d}");
    assert_eq!(d["reason"], "no_consent");
    let (_, _, batch) = t
        .request(
            Method::POST,
            "/v1/decisions/batch",
            bk,
            Some(json!({ "requests": [
                { "subject": "cust-42", "purpose": "marketing.email", "channel": "email" }
            ]})),
        )
        .await;
    assert_eq!(batch["decisions"][0]["reason"], "no_consent");

    // B's ledger is its own chain; the same idempotency key is B's own.
    let (_, _, v) = get("/v1/ledger/verify").await;
    assert_eq!(
        (v["ok"].clone(), v["checked"].clone()),
        (json!(true), json!(0))
    );
    let (s, h, b_grant) = t
        .request_raw(
            Method::POST,
            "/v1/consents",
            Some(bk),
            &[("Idempotency-Key", "signup-42")],
            Some(
                serde_json::to_vec(&consent(
                    "cust-7",
                    Some(("marketing", 1)),
                    "marketing.email",
                    Some("email"),
                    "grant",
                ))
                .unwrap(),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{}", json_of(&b_grant));
    assert!(
        h.get("idempotent-replayed").is_none(),
        "A's idempotency key replayed for B"
    );
    let b_grant = json_of(&b_grant);
    assert_eq!(b_grant["subject"], "cust-7");
    assert!(b_grant["events"][0]["seq"].as_u64().is_some(), "{b_grant}");
    let (_, _, v) = get("/v1/ledger/verify").await;
    assert_eq!(
        (v["ok"].clone(), v["checked"].clone()),
        (json!(true), json!(1))
    );
    assert_eq!(ledger_len(&t).await, 1, "A's ledger holds only A's entry");
    assert_eq!(
        decide(&t, "cust-7", "marketing.email", Some("email")).await,
        denied("no_consent"),
        "B's consent does not count for A"
    );
    let a = t.get("/v1/subjects/cust-42").await;
    assert_eq!(a["identifiers"]["email"], "somchai@example.com");
    assert_eq!(a["consents"].as_array().unwrap().len(), 1);
}

// ---------------------------------------------------------------------------
// 6. Roles
// ---------------------------------------------------------------------------

async fn each_role_may_do_only_what_it_is_allowed(backend: Backend) {
    let t = TestApp::new(backend).await;
    readme_setup(&t).await;
    let admin = t.key(Role::Admin).await;
    let user = t.key(Role::User).await;
    let service = t.key(Role::Service).await;
    use StatusCode as S;

    // Users and services cannot change the registry.
    for (i, key) in [&user, &service].into_iter().enumerate() {
        let r = t
            .request(
                Method::POST,
                "/v1/purposes",
                key,
                Some(purpose(&format!("p{i}"), "consent", &[], None)),
            )
            .await;
        assert_problem(&r, S::FORBIDDEN, Some("forbidden"));
        let r = t
            .request(
                Method::PATCH,
                "/v1/purposes/marketing.email",
                key,
                Some(json!({ "validity_days": 1 })),
            )
            .await;
        assert_problem(&r, S::FORBIDDEN, Some("forbidden"));
        let r = t
            .request(
                Method::POST,
                "/v1/notices",
                key,
                Some(notice("marketing", "mine", &["marketing.email"], true)),
            )
            .await;
        assert_problem(&r, S::FORBIDDEN, Some("forbidden"));
        for (m, path) in [(Method::GET, "/v1/keys"), (Method::PATCH, "/v1/tenant")] {
            let body = (m == Method::PATCH).then(|| json!({ "name": "Mine" }));
            let r = t.request(m, path, key, body).await;
            assert_problem(&r, S::FORBIDDEN, Some("forbidden"));
        }
        let r = t
            .request(
                Method::POST,
                "/v1/keys",
                key,
                Some(json!({ "role": "service" })),
            )
            .await;
        assert_problem(&r, S::FORBIDDEN, Some("forbidden"));
        // ... but may read, decide and record consents.
        let (s, _, _) = t.request(Method::GET, "/v1/purposes", key, None).await;
        assert_eq!(s, S::OK);
        let (s, _, _) = t
            .request(
                Method::GET,
                "/v1/decisions?subject=c&purpose=marketing.email",
                key,
                None,
            )
            .await;
        assert_eq!(s, S::OK);
        let (s, _, _) = t
            .request(
                Method::POST,
                "/v1/consents",
                key,
                Some(consent(
                    &format!("cust-{i}"),
                    Some(("marketing", 1)),
                    "marketing.email",
                    None,
                    "grant",
                )),
            )
            .await;
        assert_eq!(s, S::CREATED);
    }
    assert_eq!(t.get("/v1/notices/marketing").await["version"], 1);
    assert_eq!(
        t.get("/v1/purposes/marketing.email").await["validity_days"],
        365
    );
    // Staff may verify the ledger; machines may not.
    assert_eq!(verify_with(&t, &user).await["checked"], 2);
    let r = t
        .request(Method::GET, "/v1/ledger/verify", &service, None)
        .await;
    assert_problem(&r, S::FORBIDDEN, Some("forbidden"));

    // Admins manage the registry and non-owner keys, not owners.
    let (s, _, _) = t
        .request(
            Method::POST,
            "/v1/purposes",
            &admin,
            Some(purpose("analytics", "legitimate_interest", &[], None)),
        )
        .await;
    assert_eq!(s, S::CREATED);
    let r = t
        .request(
            Method::POST,
            "/v1/keys",
            &admin,
            Some(json!({ "role": "owner" })),
        )
        .await;
    assert_problem(&r, S::FORBIDDEN, Some("forbidden"));
    let (s, _, made) = t
        .request(
            Method::POST,
            "/v1/keys",
            &admin,
            Some(json!({ "role": "service", "label": "crm sync" })),
        )
        .await;
    assert_eq!(s, S::CREATED, "{made}");
    assert_eq!(made["role"], "service");
    let (_, _, listed) = t.request(Method::GET, "/v1/keys", &admin, None).await;
    let listed = listed["keys"].as_array().unwrap().clone();
    assert!(
        listed
            .iter()
            .all(|k| k.get("key").is_none() && k.get("hash").is_none())
    );
    let owner_id = listed
        .iter()
        .find(|k| k["role"] == "owner")
        .expect("the owner key is listed")["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = t
        .request(
            Method::DELETE,
            &format!("/v1/keys/{owner_id}"),
            &admin,
            None,
        )
        .await;
    assert_problem(&r, S::FORBIDDEN, Some("forbidden"));

    // A revoked key stops working at once, even though it was cached.
    let new_key = made["key"].as_str().unwrap().to_string();
    let new_id = made["id"].as_str().unwrap().to_string();
    let (s, _, _) = t.request(Method::GET, "/v1/purposes", &new_key, None).await;
    assert_eq!(s, S::OK);
    let (s, _, body) = t
        .request(Method::DELETE, &format!("/v1/keys/{new_id}"), &admin, None)
        .await;
    assert_eq!(s, S::NO_CONTENT, "{body}");
    let r = t.request(Method::GET, "/v1/purposes", &new_key, None).await;
    assert_problem(&r, S::UNAUTHORIZED, Some("unauthorized"));
    let (_, _, listed) = t.request(Method::GET, "/v1/keys", &admin, None).await;
    let revoked = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == new_id.as_str())
        .unwrap()
        .clone();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");

    // Only the owner changes the tenant.
    for key in [&admin, &user, &service] {
        let r = t
            .request(
                Method::PATCH,
                "/v1/tenant",
                key,
                Some(json!({ "name": "Hijacked" })),
            )
            .await;
        assert_problem(&r, S::FORBIDDEN, Some("forbidden"));
    }
    let (s, _, tenant) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({
                "name": "Siam Retail Co., Ltd.",
                "dpo": { "name": "Khun Dao", "email": "dpo@example.co.th" },
                "jurisdictions": ["TH", "EU"],
            })),
        )
        .await;
    assert_eq!(s, S::OK, "{tenant}");
    assert_eq!(tenant["name"], "Siam Retail Co., Ltd.");
    let (_, _, seen) = t.request(Method::GET, "/v1/tenant", &service, None).await;
    assert_eq!(seen["name"], "Siam Retail Co., Ltd.");
    assert_eq!(seen["dpo"]["email"], "dpo@example.co.th");

    // The owner manages owner keys.
    let (s, _, owner2) = t
        .request(
            Method::POST,
            "/v1/keys",
            &t.owner,
            Some(json!({ "role": "owner" })),
        )
        .await;
    assert_eq!(s, S::CREATED);
    let owner2 = owner2["key"].as_str().unwrap().to_string();
    let (s, _, _) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &owner2,
            Some(json!({ "default_lang": "en" })),
        )
        .await;
    assert_eq!(s, S::OK);
}

// ---------------------------------------------------------------------------
// 7. Durability and view reload
// ---------------------------------------------------------------------------

async fn acknowledged_consents_and_decisions_survive_a_restart(backend: Backend) {
    let mut t = TestApp::new(backend).await;
    readme_setup(&t).await;
    t.post(
        "/v1/purposes",
        purpose("analytics", "legitimate_interest", &[], None),
    )
    .await;
    for i in 0..5 {
        t.post(
            "/v1/consents",
            consent(
                &format!("cust-{i}"),
                Some(("marketing", 1)),
                "marketing.email",
                Some("email"),
                "grant",
            ),
        )
        .await;
    }
    t.post(
        "/v1/consents",
        consent("cust-1", None, "marketing.email", None, "withdraw"),
    )
    .await;
    t.post(
        "/v1/consents",
        consent("cust-2", None, "marketing.email", Some("email"), "deny"),
    )
    .await;
    t.request(
        Method::PUT,
        "/v1/subjects/cust-3",
        &t.owner,
        Some(json!({ "flags": { "objected": ["analytics"] } })),
    )
    .await;
    t.request(
        Method::PUT,
        "/v1/subjects/cust-4",
        &t.owner,
        Some(json!({ "flags": { "restricted": ["*"] } })),
    )
    .await;
    let replayable = serde_json::to_vec(&consent(
        "cust-9",
        Some(("marketing", 1)),
        "marketing.email",
        None,
        "grant",
    ))
    .unwrap();
    let (s, _, first) = t
        .request_raw(
            Method::POST,
            "/v1/consents",
            Some(&t.owner),
            &[("Idempotency-Key", "k-9")],
            Some(replayable.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);

    let questions = json!({ "requests": (0..10).flat_map(|i| [
        json!({ "subject": format!("cust-{i}"), "purpose": "marketing.email", "channel": "email" }),
        json!({ "subject": format!("cust-{i}"), "purpose": "marketing.email" }),
        json!({ "subject": format!("cust-{i}"), "purpose": "analytics" }),
    ]).collect::<Vec<_>>() });
    async fn ask(t: &TestApp, questions: &Value) -> Value {
        let (s, _, b) = t
            .request(
                Method::POST,
                "/v1/decisions/batch",
                &t.owner,
                Some(questions.clone()),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
        b
    }
    /// Subjects and their consents, with history and receipts.
    async fn state(t: &TestApp) -> Vec<Value> {
        let mut all = Vec::new();
        for i in [0, 1, 2, 3, 4, 9] {
            all.push(
                t.get(&format!("/v1/subjects/cust-{i}/consents?history=true"))
                    .await,
            );
            all.push(t.get(&format!("/v1/subjects/cust-{i}")).await);
        }
        all
    }
    let jwks_before = t.get("/.well-known/jwks.json").await;
    let decisions_before = ask(&t, &questions).await;
    let state_before = state(&t).await;
    let verify_before = verify_with(&t, &t.owner).await;
    // Eight consent entries, and the objection and restriction (ledgered too).
    assert_eq!(verify_before["checked"], 10);
    // Sanity: the answers are the interesting mix.
    let reasons: Vec<&str> = decisions_before["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap())
        .collect();
    for r in [
        "consent_granted",
        "withdrawn",
        "no_consent",
        "objected",
        "restricted",
        "lawful_basis",
    ] {
        assert!(reasons.contains(&r), "{r} missing from {reasons:?}");
    }

    t.restart().await;

    assert_eq!(ask(&t, &questions).await, decisions_before);
    assert_eq!(state(&t).await, state_before);
    assert_eq!(verify_with(&t, &t.owner).await, verify_before);
    assert_eq!(t.get("/v1/notices/marketing").await["version"], 1);
    // The idempotency record survived too.
    let (s, h, again) = t
        .request_raw(
            Method::POST,
            "/v1/consents",
            Some(&t.owner),
            &[("Idempotency-Key", "k-9")],
            Some(replayable),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(h.get("idempotent-replayed").is_some());
    assert_eq!(json_of(&again), json_of(&first));
    // The chain continues where it stopped.
    let next = t
        .post(
            "/v1/consents",
            consent("cust-0", None, "marketing.email", Some("email"), "withdraw"),
        )
        .await;
    assert!(next["events"][0]["seq"].as_u64().unwrap() > nth_seq(&t, 10).await);
    assert_eq!(next["events"][0]["seq"], nth_seq(&t, 11).await);
    assert_eq!(
        decide(&t, "cust-0", "marketing.email", Some("email")).await,
        denied("withdrawn")
    );
    assert_eq!(ledger_len(&t).await, 11);
    // A receipt signed before the restart still verifies with the keys
    // published after it.
    let jwks = t.get("/.well-known/jwks.json").await;
    assert_eq!(
        jwks, jwks_before,
        "the signing keys are stored, not regenerated"
    );
    let jws = json_of(&first)["receipt"]["jws"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        verify_receipt(&jwks, &jws).unwrap()["dpv:hasRecordOfActivity"][0]["dpv:hasDataSubject"]["dct:identifier"],
        "cust-9"
    );
}

// ---------------------------------------------------------------------------
// 8. Tampering
// ---------------------------------------------------------------------------

/// Three entries for one tenant: 1 grant (with receipt), 2 withdraw, 3 grant,
/// each with evidence.
async fn three_entries(backend: Backend) -> TestApp {
    let t = TestApp::new(backend).await;
    readme_setup(&t).await;
    for (action, notice) in [("grant", true), ("withdraw", false), ("grant", true)] {
        t.post(
            "/v1/consents",
            consent(
                "cust-42",
                notice.then_some(("marketing", 1)),
                "marketing.email",
                Some("email"),
                action,
            ),
        )
        .await;
    }
    assert_eq!(ledger_len(&t).await, 3);
    t
}

/// The `seq` of the `n`-th entry (from 1) of the tenant's ledger: dense on
/// SQLite, and on PostgreSQL numbered by transaction (increasing, with gaps).
async fn nth_seq(t: &TestApp, n: u64) -> u64 {
    use yinyom::store::Ledger;
    t.store.ledger(&t.tenant).await.unwrap()[n as usize - 1]
        .1
        .seq
}

/// Run `sql` against the database through a connection of its own, as
/// someone with access to the database (not the API) would; `seq = N`
/// in it names the N-th entry.
async fn tamper(t: &TestApp, sql: &str) {
    let mut sql = sql.to_string();
    if let Some(c) = regex_lite_seq(&sql) {
        let real = nth_seq(t, c).await;
        sql = sql.replace(&format!("seq = {c}"), &format!("seq = {real}"));
    }
    let sql = t.db.ledger_write(&sql);
    let sql = sql.as_str();
    let other = t.db.open().await;
    let done = sqlx::query(sql).execute(other.pool()).await.expect(sql);
    assert_eq!(done.rows_affected(), 1, "{sql}");
    other.pool().close().await;
}

/// The `N` of a `seq = N` in `sql`.
fn regex_lite_seq(sql: &str) -> Option<u64> {
    let at = sql.find("seq = ")? + "seq = ".len();
    let digits: String = sql[at..].chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

async fn altering_or_deleting_ledger_rows_is_detected_and_located(backend: Backend) {
    let cases = [
        ("UPDATE ledger SET action = 'grant' WHERE seq = 2", 2),
        (
            "UPDATE ledger SET occurred_at = occurred_at - 1000000 WHERE seq = 2",
            2,
        ),
        // The three entries carry the same evidence, stored once: altering
        // it alters each, and the first is named.
        ("UPDATE evidence SET body = '{\"ip\":\"198.51.100.1\"}'", 1),
        ("UPDATE ledger SET channel = NULL WHERE seq = 2", 2),
        (
            "UPDATE ledger SET actor = 'key:someone-else' WHERE seq = 2",
            2,
        ),
        ("UPDATE ledger SET receipt_id = 'forged' WHERE seq = 1", 1),
        ("UPDATE ledger SET notice_version = 2 WHERE seq = 3", 3),
        // The last entry: its partition's head names it.
        ("DELETE FROM ledger WHERE seq = 3", 3),
        // Within the chain: the entry deleted where seqs are dense (one
        // partition's entries only, as on SQLite here), else the entry
        // after it, the first that no longer links.
        ("DELETE FROM ledger WHERE seq = 2", 2),
        ("DELETE FROM ledger WHERE seq = 1", 1),
    ];
    for (sql, n) in cases {
        let t = three_entries(backend).await;
        let mut seq = nth_seq(&t, n).await;
        if sql.starts_with("DELETE") && n < 3 && seq != n {
            seq = nth_seq(&t, n + 1).await;
        }
        tamper(&t, sql).await;
        let v = verify_with(&t, &t.owner).await;
        assert_eq!(v["ok"], false, "{sql}: {v}");
        assert_eq!(v["broken"]["seq"], seq, "{sql}: {v}");
        assert!(
            v["broken"]["problem"]
                .as_str()
                .is_some_and(|p| !p.is_empty()),
            "{sql}: {v}"
        );
        assert!(v["checked"].as_u64().unwrap() < 3, "{sql}: {v}");
    }

    // Erasing evidence (as erasure does) keeps the chain valid: only its
    // hash is chained.
    let t = three_entries(backend).await;
    tamper(&t, "UPDATE ledger SET evidence_kept = 0 WHERE seq = 2").await;
    assert_eq!(ledger_len(&t).await, 3);
}

// ---------------------------------------------------------------------------
// 9. Purposes
// ---------------------------------------------------------------------------

async fn purposes_are_listed_sorted_patched_by_merge_and_unique(backend: Backend) {
    let mut t = TestApp::new(backend).await;
    for key in ["marketing.sms", "analytics", "billing", "marketing.email"] {
        let basis = if key == "billing" {
            "contract"
        } else {
            "consent"
        };
        let channels: &[&str] = if key == "marketing.sms" {
            &["sms"]
        } else {
            &[]
        };
        let created = t
            .post("/v1/purposes", purpose(key, basis, channels, Some(90)))
            .await;
        assert_eq!(created["key"], key);
    }
    let list = t.get("/v1/purposes").await;
    let keys: Vec<&str> = list["purposes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["analytics", "billing", "marketing.email", "marketing.sms"]
    );

    // Registering a key twice conflicts, and the first stays.
    let r = t
        .request(
            Method::POST,
            "/v1/purposes",
            &t.owner,
            Some(purpose("analytics", "legitimate_interest", &[], None)),
        )
        .await;
    assert_problem(&r, StatusCode::CONFLICT, Some("conflict"));
    assert_eq!(t.get("/v1/purposes/analytics").await["basis"], "consent");

    // A merge patch changes what it names and keeps the rest.
    let (s, _, patched) = t
        .request(
            Method::PATCH,
            "/v1/purposes/marketing.sms",
            &t.owner,
            Some(json!({ "validity_days": 30, "names": { "en": "SMS offers" } })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{patched}");
    assert_eq!(patched["validity_days"], 30);
    assert_eq!(patched["names"]["en"], "SMS offers");
    assert_eq!(patched["names"]["th"], "วัตถุประสงค์ marketing.sms");
    assert_eq!(patched["channels"], json!(["sms"]));
    assert_eq!(t.get("/v1/purposes/marketing.sms").await, patched);
    // The new validity applies to grants from now on.
    t.post(
        "/v1/notices",
        notice("marketing", "Texts.", &["marketing.sms"], false),
    )
    .await;
    let g = t
        .post(
            "/v1/consents",
            consent(
                "c",
                Some(("marketing", 1)),
                "marketing.sms",
                Some("sms"),
                "grant",
            ),
        )
        .await;
    let e = &g["events"][0];
    let span = time::parse_rfc3339(e["expires_at"].as_str().unwrap()).unwrap()
        - time::parse_rfc3339(e["occurred_at"].as_str().unwrap()).unwrap();
    assert_eq!(span, 30 * time::MICROS_PER_DAY);
    // `null` removes a member.
    let (s, _, patched) = t
        .request(
            Method::PATCH,
            "/v1/purposes/marketing.sms",
            &t.owner,
            Some(json!({ "validity_days": null })),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(patched["validity_days"], Value::Null);

    // Refused patches change nothing.
    for (patch, field) in [
        (json!({ "key": "marketing.text" }), "key"),
        (json!({ "retention_days": 0 }), "retention_days"),
        (json!({ "basis": "whim" }), ""),
    ] {
        let r = t
            .request(
                Method::PATCH,
                "/v1/purposes/marketing.sms",
                &t.owner,
                Some(patch.clone()),
            )
            .await;
        assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("validation"));
        if !field.is_empty() {
            assert_eq!(r.2["field"], field, "{patch}");
        }
    }
    let r = t
        .request(
            Method::PATCH,
            "/v1/purposes/marketing.sms",
            &t.owner,
            Some(json!(["not", "an", "object"])),
        )
        .await;
    assert_problem(&r, StatusCode::UNPROCESSABLE_ENTITY, Some("validation"));
    let r = t
        .request(
            Method::PATCH,
            "/v1/purposes/no.such.purpose",
            &t.owner,
            Some(json!({ "validity_days": 3 })),
        )
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, Some("not-found"));
    let r = t
        .request(Method::GET, "/v1/purposes/no.such.purpose", &t.owner, None)
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, Some("not-found"));
    let current = t.get("/v1/purposes/marketing.sms").await;
    assert_eq!(current, patched);
    let r = t
        .request(Method::GET, "/v1/purposes/marketing.text", &t.owner, None)
        .await;
    assert_problem(&r, StatusCode::NOT_FOUND, Some("not-found"));

    // Patches are stored, not only cached.
    t.restart().await;
    assert_eq!(t.get("/v1/purposes/marketing.sms").await, patched);
    assert_eq!(t.get("/v1/purposes").await, {
        let mut l = list.clone();
        l["purposes"][3] = patched.clone();
        l
    });
}

// ---------------------------------------------------------------------------
// 10. OpenAPI and metrics
// ---------------------------------------------------------------------------

async fn openapi_describes_every_route_and_metrics_count_requests(backend: Backend) {
    let t = TestApp::new(backend).await;
    let (s, h, doc) = t.request(Method::GET, "/openapi.json", "", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h.get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"))
    );
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "{}",
        doc["openapi"]
    );
    let paths = doc["paths"].as_object().expect("paths");
    let expected = [
        ("/v1/purposes", &["post", "get"][..]),
        ("/v1/purposes/{key}", &["get", "patch"]),
        ("/v1/notices", &["post", "get"]),
        ("/v1/notices/{key}", &["get"]),
        ("/v1/subjects/{id}", &["put", "get"]),
        ("/v1/subjects/{id}/consents", &["get"]),
        ("/v1/consents", &["post"]),
        ("/v1/decisions", &["get"]),
        ("/v1/decisions/batch", &["post"]),
        ("/v1/ledger/verify", &["get"]),
        ("/.well-known/jwks.json", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/v1/stream", &["get"]),
    ];
    for (path, methods) in expected {
        let item = paths
            .get(path)
            .unwrap_or_else(|| panic!("{path} missing from /openapi.json"));
        for m in methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing");
        }
    }
    // Each documented operation answers on the router (not 404/405).
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let Ok(m) = method.to_uppercase().parse::<Method>() else {
                continue;
            };
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&m.as_str()) {
                continue;
            }
            let concrete = path
                .replace("{key}", "k")
                .replace("{id}", "i")
                .replace("{version}", "1");
            let streams = item[method]["responses"]["200"]["content"]
                .get("text/event-stream")
                .is_some();
            let (s, body) = if streams {
                // An event stream never ends: its status is the answer.
                (t.open(&concrete, &t.owner, &[]).await.status(), Value::Null)
            } else {
                let (s, _, body) = t.request(m.clone(), &concrete, &t.owner, None).await;
                (s, body)
            };
            assert!(
                s != StatusCode::METHOD_NOT_ALLOWED
                    && !(s == StatusCode::NOT_FOUND
                        && body["type"].as_str() == Some("https://yinyom.dev/problems/not-found")
                        && body["detail"] == "no such endpoint"),
                "{m} {concrete} documented but not routed: {s} {body}"
            );
            assert!(!s.is_server_error(), "{m} {concrete}: {s} {body}");
        }
    }
    assert!(
        doc["components"]["securitySchemes"]["api_key"].is_object(),
        "bearer auth is documented"
    );

    let (s, _, health) = t.request(Method::GET, "/healthz", "", None).await;
    assert_eq!((s, health["status"].clone()), (StatusCode::OK, json!("ok")));
    let (s, _, ready) = t.request(Method::GET, "/readyz", "", None).await;
    assert_eq!(
        (s, ready["status"].clone()),
        (StatusCode::OK, json!("ready"))
    );

    let (s, h, body) = t
        .request_raw(Method::GET, "/metrics", None, &[], None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        h.get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("openmetrics") || v.starts_with("text/plain"))
    );
    let text = String::from_utf8(body.to_vec()).expect("metrics are text");
    assert!(text.contains("yinyom_http_requests"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("yinyom_http_requests")
            && l.contains("route=\"/healthz\"")
            && l.contains("status=\"200\"")),
        "the /healthz request is counted:\n{text}"
    );
}

// ---------------------------------------------------------------------------
// Event stream and outbox
// ---------------------------------------------------------------------------

async fn consent_events_stream_in_order_and_resume_after_the_last_event_id(backend: Backend) {
    let t = TestApp::new(backend).await;
    readme_setup(&t).await;
    let wait = Duration::from_secs(5);
    // From now on: events committed before the stream opened are not sent.
    t.post(
        "/v1/consents",
        consent(
            "early",
            Some(("marketing", 1)),
            "marketing.email",
            Some("email"),
            "grant",
        ),
    )
    .await;
    let mut live = Sse::new(t.open("/v1/stream", &t.owner, &[]).await);
    let mut withdrawals = Sse::new(
        t.open(
            "/v1/stream?types=consent.withdrawn&purposes=marketing.email",
            &t.owner,
            &[],
        )
        .await,
    );
    for action in ["grant", "withdraw"] {
        t.post(
            "/v1/consents",
            consent(
                "cust-1",
                Some(("marketing", 1)),
                "marketing.email",
                Some("email"),
                action,
            ),
        )
        .await;
    }
    let (id1, kind1, e1) = live.next(wait).await.expect("the grant");
    let (id2, kind2, e2) = live.next(wait).await.expect("the withdrawal");
    assert_eq!(
        (kind1.as_str(), kind2.as_str()),
        ("consent.granted", "consent.withdrawn")
    );
    assert_eq!(
        (e1["before"].as_str(), e1["after"].as_str()),
        (Some("unspecified"), Some("granted")),
        "{e1}"
    );
    assert_eq!(
        (e2["before"].as_str(), e2["after"].as_str()),
        (Some("granted"), Some("withdrawn")),
        "{e2}"
    );
    assert!(id2.parse::<u64>().unwrap() > id1.parse::<u64>().unwrap());
    assert_eq!(e2["ledger"]["seq"].as_u64(), id2.parse().ok());
    assert_eq!(e2["purpose"], "marketing.email");
    assert_eq!(e2["channel"], "email");
    assert_eq!(e2["type"], "consent.withdrawn");
    // The subject is pseudonymous: its uid, never the id given to the API.
    assert_ne!(e2["subject"], "cust-1");
    assert_eq!(e2["subject"], e1["subject"]);
    // The chained hash is the ledger's.
    let history = t.get("/v1/subjects/cust-1/consents?history=true").await;
    assert!(
        history
            .to_string()
            .contains(e2["ledger"]["hash"].as_str().unwrap()),
        "{history}"
    );
    assert!(
        live.next(Duration::from_millis(200)).await.is_none(),
        "nothing else happened"
    );

    let (_, kind, only) = withdrawals.next(wait).await.expect("the filtered stream");
    assert_eq!(kind, "consent.withdrawn");
    assert_eq!(only, e2);

    // A client that reconnects after the grant gets the withdrawal, then live events.
    let mut resumed = Sse::new(
        t.open("/v1/stream", &t.owner, &[("last-event-id", &id1)])
            .await,
    );
    assert_eq!(resumed.next(wait).await.expect("missed event").2, e2);
    let (_, _, from_start) = Sse::new(t.open("/v1/stream?since=0", &t.owner, &[]).await)
        .next(wait)
        .await
        .expect("the whole outbox");
    assert_eq!(from_start["ledger"]["seq"], nth_seq(&t, 1).await);

    // Bad filters and cursors are problems; users may not read the stream.
    for (path, headers, status) in [
        ("/v1/stream?types=consent.deleted", vec![], 422),
        ("/v1/stream?since=-1", vec![], 400),
        ("/v1/stream", vec![("last-event-id", "abc")], 422),
    ] {
        let res = t.open(path, &t.owner, &headers).await;
        assert_eq!(res.status().as_u16(), status, "{path} {headers:?}");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
    }
    let user = t.key(Role::User).await;
    assert_eq!(
        t.open("/v1/stream", &user, &[]).await.status(),
        StatusCode::FORBIDDEN
    );

    // Once old events are forgotten (a week old, every consumer has them),
    // a reader resuming before them is told so; from where they end it
    // goes on.
    use yinyom::store::Outbox;
    sqlx::query(
        &t.db
            .ledger_write("UPDATE ledger SET recorded_at = recorded_at - $1"),
    )
    .bind(8 * time::MICROS_PER_DAY)
    .execute(t.store.pool())
    .await
    .unwrap();
    // (A consumer that runs in the background, such as a dispatcher, may
    // not have passed the last event yet: the minute job forgets the rest
    // on a later run.)
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut pruned_events = 0;
    loop {
        let report = yinyom::lifecycle::run_once(&t.app, time::now())
            .await
            .unwrap();
        pruned_events += report.events_pruned;
        if pruned_events >= 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{pruned_events} events forgotten: {report:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pruned = t.store.events_pruned_upto(&t.tenant).await.unwrap();
    assert!(pruned >= nth_seq(&t, 1).await, "{pruned}");
    let res = t.open("/v1/stream?since=0", &t.owner, &[]).await;
    assert_eq!(res.status(), StatusCode::GONE);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let res = t
        .open(
            "/v1/stream",
            &t.owner,
            &[("last-event-id", &pruned.to_string())],
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
}

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

fn fast_retries(give_up_after_ms: u64) -> Config {
    Config {
        webhooks: DispatchConfig {
            timeout: Duration::from_millis(300),
            retry_base: Duration::from_millis(20),
            retry_max: Duration::from_millis(200),
            give_up_after: Duration::from_millis(give_up_after_ms),
            concurrency: 8,
        },
        ..Default::default()
    }
}

async fn deliveries(t: &TestApp, id: &str, status: &str) -> Vec<Value> {
    let body = t
        .get(&format!("/v1/webhooks/{id}/deliveries?status={status}"))
        .await;
    body["deliveries"].as_array().cloned().unwrap_or_default()
}

async fn webhooks_deliver_signed_events_in_order_per_subject_through_outages(backend: Backend) {
    let t = TestApp::with_config(backend, fast_retries(60_000)).await;
    readme_setup(&t).await;
    t.post("/v1/purposes", purpose("analytics", "consent", &[], None))
        .await;
    let receiver = Receiver::start().await;
    let hook = t
        .post(
            "/v1/webhooks",
            json!({ "url": receiver.url, "purposes": ["marketing.email"], "description": "CRM" }),
        )
        .await;
    let id = hook["id"].as_str().unwrap().to_string();
    let secret = hook["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{hook}");
    let listed = t.get("/v1/webhooks").await;
    assert!(
        listed["webhooks"][0].get("secret").is_none(),
        "secrets are shown once: {listed}"
    );

    // The receiver is down: the first event of s1 is retried, and s1's
    // later event waits behind it, while s2's event is tried on its own.
    receiver.set(Mode::Fail);
    let c =
        |s: &str, p: &str, ch: Option<&str>, a: &str| consent(s, Some(("marketing", 1)), p, ch, a);
    t.post(
        "/v1/consents",
        c("s1", "marketing.email", Some("email"), "grant"),
    )
    .await;
    t.post(
        "/v1/consents",
        c("s1", "marketing.email", Some("email"), "withdraw"),
    )
    .await;
    t.post(
        "/v1/consents",
        c("s2", "marketing.email", Some("email"), "grant"),
    )
    .await;
    // Not for this endpoint: another purpose.
    t.post(
        "/v1/consents",
        consent("s2", None, "analytics", None, "deny"),
    )
    .await;
    // The first three entries: s1's grant and withdrawal, s2's grant.
    let (first, second, third) = (
        nth_seq(&t, 1).await,
        nth_seq(&t, 2).await,
        nth_seq(&t, 3).await,
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            let pending = deliveries(&t, &id, "pending").await;
            let retried = |seq: u64| {
                pending
                    .iter()
                    .any(|d| d["seq"] == seq && d["attempts"].as_u64() >= Some(3))
            };
            retried(first) && retried(third)
        })
        .await,
        "failed deliveries are retried: {:?}",
        deliveries(&t, &id, "pending").await
    );
    let pending = deliveries(&t, &id, "pending").await;
    let waiting = pending
        .iter()
        .find(|d| d["seq"] == second)
        .expect("s1's second event");
    assert_eq!(
        waiting["attempts"], 0,
        "s1's second event waits for its first: {pending:?}"
    );
    let failed = pending.iter().find(|d| d["seq"] == first).unwrap();
    assert_eq!(failed["last_code"], 500, "{failed}");
    assert!(
        failed["last_error"].as_str().unwrap().contains("500"),
        "{failed}"
    );

    // A hanging receiver times out; the API keeps answering meanwhile.
    receiver.set(Mode::Hang);
    let started = std::time::Instant::now();
    t.post(
        "/v1/consents",
        c("s3", "marketing.email", Some("email"), "grant"),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "writes do not wait for webhooks"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            deliveries(&t, &id, "pending").await.iter().any(|d| {
                d["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("no response within"))
            })
        })
        .await,
        "a hanging receiver times out"
    );

    // Back up: everything arrives, each subject's events in order, signed.
    receiver.set(Mode::Accept);
    assert!(
        eventually(Duration::from_secs(15), || async {
            deliveries(&t, &id, "delivered").await.len() == 4
        })
        .await,
        "all delivered: {:?}",
        deliveries(&t, &id, "pending").await
    );
    let verifier = standardwebhooks::Webhook::new(&secret).unwrap();
    let mut seen: Vec<(String, u64, String)> = Vec::new();
    for (headers, body) in receiver.received() {
        verifier
            .verify(&body, &headers)
            .expect("a valid Standard Webhooks signature");
        let event: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            headers["webhook-id"].to_str().unwrap(),
            event["id"].as_str().unwrap()
        );
        assert_eq!(
            event["purpose"], "marketing.email",
            "filtered by purpose: {event}"
        );
        seen.push((
            event["subject"].as_str().unwrap().to_string(),
            event["ledger"]["seq"].as_u64().unwrap(),
            event["type"].as_str().unwrap().to_string(),
        ));
    }
    let mut seqs: Vec<u64> = seen.iter().map(|s| s.1).collect();
    seqs.sort();
    seqs.dedup();
    let want = [
        nth_seq(&t, 1).await,
        nth_seq(&t, 2).await,
        nth_seq(&t, 3).await,
        nth_seq(&t, 5).await,
    ];
    assert_eq!(seqs, want, "each matching event at least once: {seen:?}");
    let s1: Vec<&(String, u64, String)> = seen.iter().filter(|e| e.0 == seen[0].0).collect();
    let s1_first_seen: Vec<u64> = s1.iter().map(|e| e.1).collect();
    assert!(
        s1_first_seen.windows(2).all(|w| w[0] <= w[1]),
        "in order per subject: {seen:?}"
    );
    let kinds: Vec<&str> = seen
        .iter()
        .filter(|e| e.1 <= want[1])
        .map(|e| e.2.as_str())
        .collect();
    assert_eq!(kinds.first(), Some(&"consent.granted"));

    // Bad registrations are refused; other roles and unknown ids too.
    for (body, field) in [
        (json!({ "url": "ftp://example.com/x" }), "url"),
        (json!({ "url": "not a url" }), "url"),
        (json!({ "url": "http://user:pw@example.com/" }), "url"),
        (
            json!({ "url": receiver.url, "events": ["consent.nope"] }),
            "events",
        ),
        (
            json!({ "url": receiver.url, "purposes": ["nope"] }),
            "purposes",
        ),
    ] {
        let (status, _, problem) = t
            .request(Method::POST, "/v1/webhooks", &t.owner, Some(body.clone()))
            .await;
        assert_eq!(
            status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {problem}"
        );
        assert_eq!(problem["field"], field, "{problem}");
    }
    let (status, _, _) = t
        .request(
            Method::GET,
            "/v1/webhooks/wh_nope/deliveries",
            &t.owner,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let user = t.key(Role::User).await;
    let (status, _, _) = t.request(Method::GET, "/v1/webhooks", &user, None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A deleted endpoint gets nothing more.
    let (status, _, _) = t
        .request(
            Method::DELETE,
            &format!("/v1/webhooks/{id}"),
            &t.owner,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let before = receiver.received().len();
    t.post(
        "/v1/consents",
        c("s4", "marketing.email", Some("email"), "grant"),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), before);
}

async fn undeliverable_events_go_dead_and_are_replayed_on_request(backend: Backend) {
    let t = TestApp::with_config(backend, fast_retries(300)).await;
    readme_setup(&t).await;
    let receiver = Receiver::start().await;
    let hook = t.post("/v1/webhooks", json!({ "url": receiver.url })).await;
    let id = hook["id"].as_str().unwrap().to_string();
    receiver.set(Mode::Fail);
    t.post(
        "/v1/consents",
        consent(
            "s1",
            Some(("marketing", 1)),
            "marketing.email",
            Some("email"),
            "grant",
        ),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            deliveries(&t, &id, "dead").await.len() == 1
        })
        .await,
        "gives up after the retry window"
    );
    assert!(receiver.received().is_empty());
    receiver.set(Mode::Accept);
    let replayed = t
        .post_ok(&format!("/v1/webhooks/{id}/replay"), json!({}))
        .await;
    assert_eq!(replayed["requeued"], 1, "{replayed}");
    assert!(
        eventually(Duration::from_secs(10), || async {
            receiver.received().len() == 1
        })
        .await,
        "a replayed delivery arrives"
    );
    // The receiver has it before the dispatcher settles the round.
    assert!(
        eventually(Duration::from_secs(10), || async {
            deliveries(&t, &id, "delivered").await.len() == 1
        })
        .await,
        "the replayed delivery is recorded as delivered"
    );
    // Nothing left to replay.
    let again = t
        .post_ok(&format!("/v1/webhooks/{id}/replay"), json!({ "seqs": [1] }))
        .await;
    assert_eq!(again["requeued"], 0);

    // An endpoint nobody listens on: the failure is logged, nothing is lost.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let hook = t
        .post(
            "/v1/webhooks",
            json!({ "url": format!("http://127.0.0.1:{closed}/hook") }),
        )
        .await;
    let unreachable = hook["id"].as_str().unwrap().to_string();
    t.post(
        "/v1/consents",
        consent(
            "s2",
            Some(("marketing", 1)),
            "marketing.email",
            Some("email"),
            "grant",
        ),
    )
    .await;
    assert!(
        eventually(Duration::from_secs(10), || async {
            let all = t
                .get(&format!("/v1/webhooks/{unreachable}/deliveries"))
                .await;
            all["deliveries"].as_array().is_some_and(|d| {
                d.len() == 1
                    && d[0]["last_error"]
                        .as_str()
                        .is_some_and(|e| e.contains("could not reach"))
            })
        })
        .await,
        "an unreachable endpoint is recorded as such"
    );
}

// ---------------------------------------------------------------------------
// NATS JetStream
// ---------------------------------------------------------------------------

/// Read `n` messages of the tenant's consent subjects from the stream:
/// (subject, Nats-Msg-Id, event).
async fn nats_messages(url: &str, tenant: &str, n: usize) -> Vec<(String, String, Value)> {
    use futures_util::StreamExt;
    let client = async_nats::connect(url).await.expect("connect to NATS");
    let js = async_nats::jetstream::new(client);
    let stream = js
        .get_stream(yinyom::nats::STREAM)
        .await
        .expect("the stream exists");
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("yinyom.{tenant}.consent.>"),
            ..Default::default()
        })
        .await
        .expect("a consumer");
    let mut messages = consumer.messages().await.expect("messages");
    let mut out = Vec::new();
    while out.len() < n {
        let m = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {n} messages arrived: {out:?}", out.len()))
            .expect("stream open")
            .expect("a message");
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get("Nats-Msg-Id"))
            .map(|v| v.to_string())
            .unwrap_or_default();
        out.push((
            m.subject.to_string(),
            id,
            serde_json::from_slice(&m.payload).unwrap(),
        ));
    }
    out
}

/// A NATS server of the test's own, on a loopback port, with JetStream.
struct NatsServer {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl NatsServer {
    fn start(port: u16, dir: tempfile::TempDir) -> NatsServer {
        let child = std::process::Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("nats-server (Debian package nats-server) must be installed");
        NatsServer { child, dir }
    }

    fn stop(mut self) -> tempfile::TempDir {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.dir
    }
}

async fn consent_events_reach_nats_in_order_and_survive_nats_outages(backend: Backend) {
    // The machine's NATS: events of this tenant, in order, deduplicable.
    let url = std::env::var("YINYOM_TEST_NATS_URL");
    let url = url.as_deref().unwrap_or("nats://127.0.0.1:4222");
    let t = TestApp::with_config(
        backend,
        Config {
            nats_url: Some(url.into()),
            ..Default::default()
        },
    )
    .await;
    readme_setup(&t).await;
    for action in ["grant", "withdraw"] {
        t.post(
            "/v1/consents",
            consent(
                "s1",
                Some(("marketing", 1)),
                "marketing.email",
                Some("email"),
                action,
            ),
        )
        .await;
    }
    let got = nats_messages(url, &t.tenant, 2).await;
    let subject = format!("yinyom.{}.consent.marketing.email", t.tenant);
    assert_eq!(
        (got[0].0.as_str(), got[1].0.as_str()),
        (subject.as_str(), subject.as_str())
    );
    assert_eq!(got[0].2["type"], "consent.granted");
    assert_eq!(got[1].2["type"], "consent.withdrawn");
    assert_eq!(got[1].2["before"], "granted");
    assert_eq!(
        got[1].1,
        got[1].2["id"].as_str().unwrap(),
        "Nats-Msg-Id is the event id"
    );

    // A NATS that is down at start, comes up, goes down mid-run and comes
    // back: the API keeps answering, and every event arrives once, in order.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let own = format!("nats://127.0.0.1:{port}");
    let t = TestApp::with_config(
        backend,
        Config {
            nats_url: Some(own.clone()),
            ..Default::default()
        },
    )
    .await;
    readme_setup(&t).await;
    let c = |s: &str| {
        consent(
            s,
            Some(("marketing", 1)),
            "marketing.email",
            Some("email"),
            "grant",
        )
    };
    t.post("/v1/consents", c("before-start")).await;
    let server = NatsServer::start(port, tempfile::tempdir().unwrap());
    assert_eq!(
        nats_messages_when_up(&own, &t.tenant, 1).await[0].2["ledger"]["seq"],
        nth_seq(&t, 1).await
    );
    let dir = server.stop();
    t.post("/v1/consents", c("while-down-1")).await;
    t.post("/v1/consents", c("while-down-2")).await;
    let server = NatsServer::start(port, dir);
    let all = nats_messages_when_up(&own, &t.tenant, 3).await;
    let seqs: Vec<u64> = all
        .iter()
        .map(|m| m.2["ledger"]["seq"].as_u64().unwrap())
        .collect();
    let want = [
        nth_seq(&t, 1).await,
        nth_seq(&t, 2).await,
        nth_seq(&t, 3).await,
    ];
    assert_eq!(seqs, want, "each event once, in order");
    drop(server.stop());
}

/// [`nats_messages`], retrying while the server is still starting.
async fn nats_messages_when_up(url: &str, tenant: &str, n: usize) -> Vec<(String, String, Value)> {
    let mut ready = false;
    for _ in 0..200 {
        if let Ok(client) = async_nats::connect(url).await {
            let js = async_nats::jetstream::new(client);
            if js.get_stream(yinyom::nats::STREAM).await.is_ok() {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the publisher created the stream on {url}");
    nats_messages(url, tenant, n).await
}

on_every_backend!(
    readme_walkthrough_grant_decide_withdraw_history_verify,
    receipt_verifies_with_an_independent_jose_library_and_tampering_fails,
    decision_rules_hold_through_the_api,
    bad_consent_input_is_refused_with_a_problem_and_writes_nothing,
    bad_requests_of_every_other_kind_are_problems_not_errors,
    misspelt_fields_in_purposes_notices_and_subjects_are_refused,
    the_bearer_scheme_is_case_insensitive,
    racing_retries_and_other_writes_in_one_group_commit,
    one_tenant_never_sees_or_changes_another_tenants_data,
    each_role_may_do_only_what_it_is_allowed,
    acknowledged_consents_and_decisions_survive_a_restart,
    altering_or_deleting_ledger_rows_is_detected_and_located,
    purposes_are_listed_sorted_patched_by_merge_and_unique,
    openapi_describes_every_route_and_metrics_count_requests,
    consent_events_stream_in_order_and_resume_after_the_last_event_id,
    webhooks_deliver_signed_events_in_order_per_subject_through_outages,
    undeliverable_events_go_dead_and_are_replayed_on_request,
    consent_events_reach_nats_in_order_and_survive_nats_outages,
);
