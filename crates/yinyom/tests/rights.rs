//! Data-subject rights end to end, on SQLite and on PostgreSQL: one
//! scenario per legal rule, named after the section it enforces.

#[macro_use]
mod common;

use std::io::Read;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use common::{Backend, TestApp};

const EMAIL: &str = "malee.rights@example.com";
const PHONE: &str = "+66898765432";

async fn setup(t: &TestApp) {
    for (key, channels, basis) in [
        ("marketing.email", vec!["email"], "consent"),
        ("analytics", vec![], "consent"),
        ("service", vec!["email"], "contract"),
    ] {
        t.post(
            "/v1/purposes",
            json!({
                "key": key,
                "names": { "th": format!("วัตถุประสงค์ {key}"), "en": format!("Purpose {key}") },
                "basis": basis, "channels": channels, "retention_days": 365,
            }),
        )
        .await;
    }
    t.post(
        "/v1/notices",
        json!({
            "key": "main",
            "texts": { "th": { "title": "ประกาศ", "body": "…" }, "en": { "title": "Notice", "body": "…" } },
            "purposes": ["marketing.email", "analytics"],
        }),
    )
    .await;
}

/// A subject with contact points, two consents (evidence quoting the
/// email), and a tracked event whose traits carry the email and phone.
async fn subject_with_data(t: &TestApp, id: &str) {
    let (status, _, body) = t
        .request(
            Method::PUT,
            &format!("/v1/subjects/{id}"),
            &t.owner,
            Some(json!({
                "identifiers": { "email": EMAIL, "phone": "089-876-5432" },
                "attributes": { "first_name": "มาลี", "country": "TH" },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    t.post(
        "/v1/consents",
        json!({
            "subject": id, "source": "web", "notice": { "key": "main", "version": 1 },
            "evidence": { "form": "signup", "typed_email": EMAIL },
            "actions": [
                { "purpose": "marketing.email", "channel": "email", "action": "grant" },
                { "purpose": "analytics", "action": "grant" },
            ],
        }),
    )
    .await;
    let s = t
        .post(
            "/v1/sources",
            // Named apart from the subject: a source is not the subject's data.
            json!({ "name": format!("web-{}", uuid::Uuid::now_v7().simple()), "purposes": ["analytics"] }),
        )
        .await;
    let key = s["write_key"].as_str().unwrap().to_string();
    let (status, _, r) = t
        .request_raw(
            Method::POST,
            "/v1/identify",
            None,
            &[],
            Some(
                serde_json::to_vec(&json!({
                    "writeKey": key, "userId": id,
                    "traits": { "email": EMAIL, "phone": PHONE },
                }))
                .unwrap(),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&r));
}

async fn request(t: &TestApp, body: Value) -> (StatusCode, Value) {
    let (status, _, res) = t
        .request(Method::POST, "/v1/requests", &t.owner, Some(body))
        .await;
    (status, res)
}

async fn act(t: &TestApp, id: &str, action: &str, reason: Option<&str>) -> (StatusCode, Value) {
    let (status, _, res) = t
        .request(
            Method::POST,
            &format!("/v1/requests/{id}/actions"),
            &t.owner,
            Some(json!({ "action": action, "reason": reason })),
        )
        .await;
    (status, res)
}

/// Receive, verify and complete a request; returns it completed.
async fn carry_out(t: &TestApp, body: Value) -> Value {
    let (status, r) = request(t, body).await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    assert_eq!(act(t, &id, "verify", None).await.0, StatusCode::OK);
    let (status, done) = act(t, &id, "complete", None).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["status"], "completed");
    done
}

async fn decide(t: &TestApp, subject: &str, purpose: &str, channel: &str) -> Value {
    t.get(&format!(
        "/v1/decisions?subject={subject}&purpose={purpose}&channel={channel}"
    ))
    .await
}

/// Every file of the database as bytes: the SQLite file, WAL and shared
/// memory, or a `pg_dump` of the test schema.
fn database_bytes(t: &TestApp) -> Vec<u8> {
    if let Some(dir) = t.db.sqlite_dir() {
        let mut all = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            all.extend(std::fs::read(entry.unwrap().path()).unwrap());
        }
        return all;
    }
    let schema = t.db.postgres_schema().unwrap();
    let out = std::process::Command::new("pg_dump")
        .arg(format!(
            "--dbname={}",
            yinyom::store::scratch::postgres_url()
        ))
        .args(["--schema", schema, "--data-only"])
        .output()
        .expect("pg_dump (postgresql-client)");
    assert!(
        out.status.success(),
        "pg_dump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn pdpa_s33_erasure_crypto_shreds_and_leaves_no_email_or_phone_in_the_database(
    backend: Backend,
) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    subject_with_data(&t, "cust-e1").await;
    // The data is there before: the scan would find a clear copy.
    let events = t.get("/v1/subjects/cust-e1/events").await;
    assert_eq!(events.as_array().unwrap().len(), 1);
    assert!(
        contains(&database_bytes(&t), EMAIL),
        "the tracked event keeps the email in clear until erasure"
    );

    let done = carry_out(&t, json!({ "subject": "cust-e1", "kind": "erasure" })).await;
    let outcome = done["steps"].as_array().unwrap().last().unwrap()["outcome"].clone();
    assert!(
        outcome.as_str().unwrap().contains("data key destroyed"),
        "{outcome}"
    );

    // Decisions for the subject become "erased", at once.
    let d = decide(&t, "cust-e1", "marketing.email", "email").await;
    assert_eq!(
        (d["allowed"].clone(), d["reason"].clone()),
        (json!(false), json!("erased"))
    );
    let d = decide(&t, "cust-e1", "service", "email").await;
    assert_eq!(d["reason"], "erased", "even purposes on other bases");
    // Nothing readable is left; nothing new may be written for it.
    let (status, _, _) = t
        .request(Method::GET, "/v1/subjects/cust-e1/events", &t.owner, None)
        .await;
    assert!(status == StatusCode::OK || status == StatusCode::CONFLICT);
    let (status, _, _) = t
        .request(
            Method::PUT,
            "/v1/subjects/cust-e1",
            &t.owner,
            Some(json!({ "identifiers": { "email": EMAIL } })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    // Erasing again is refused, clearly.
    let (status, r) = request(&t, json!({ "subject": "cust-e1", "kind": "erasure" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    // The ledger keeps pseudonymous proof and still verifies.
    let v = t.get("/v1/ledger/verify").await;
    assert_eq!(v["ok"], true, "{v}");
    let h = t.get("/v1/subjects/cust-e1/consents?history=true").await;
    // Two grants, each marked erased, the erasure itself, and the
    // request received and completed.
    assert_eq!(h["history"].as_array().unwrap().len(), 7);

    // The email and phone appear nowhere in the database files.
    let bytes = database_bytes(&t);
    for needle in [EMAIL, PHONE, "0898765432", "มาลี"] {
        assert!(
            !contains(&bytes, needle),
            "{needle:?} is still in the database files"
        );
    }
}

async fn pdpa_s30_access_gives_a_machine_readable_bundle_and_is_due_in_30_days(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    subject_with_data(&t, "cust-a1").await;
    let (status, r) = request(&t, json!({ "subject": "cust-a1", "kind": "access" })).await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    let id = r["id"].as_str().unwrap().to_string();
    let received = yinyom_core::time::parse_rfc3339(r["received_at"].as_str().unwrap()).unwrap();
    let due = yinyom_core::time::parse_rfc3339(r["due_at"].as_str().unwrap()).unwrap();
    assert_eq!(due - received, 30 * yinyom_core::time::MICROS_PER_DAY);
    assert_eq!(r["status"], "received");

    // Nothing is handed out before identity is verified and the request completed.
    let (status, _, _) = t
        .request_raw(
            Method::GET,
            &format!("/v1/requests/{id}/bundle"),
            Some(&t.owner),
            &[],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    let (status, _) = act(&t, &id, "complete", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "verify first");
    act(&t, &id, "verify", None).await;
    act(&t, &id, "complete", None).await;

    let (status, headers, zip) = t
        .request_raw(
            Method::GET,
            &format!("/v1/requests/{id}/bundle"),
            Some(&t.owner),
            &[],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/zip");
    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(zip.to_vec())).unwrap();
    let mut read = |name: &str| {
        let mut s = String::new();
        archive
            .by_name(name)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    };
    let subject: Value = serde_json::from_str(&read("subject.json")).unwrap();
    assert_eq!(subject["profile"]["contacts"]["email"], EMAIL);
    assert_eq!(subject["profile"]["contacts"]["phone"], PHONE);
    let consents: Value = serde_json::from_str(&read("consents.json")).unwrap();
    // Two grants and the access request's own entries.
    let actions: Vec<&str> = consents["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        ["grant", "grant", "request_received", "request_completed"],
        "{consents}"
    );
    assert_eq!(consents["receipts"].as_array().unwrap().len(), 1);
    let csv = read("consents.csv");
    // The header, two grants, the request received and completed.
    assert_eq!(csv.lines().count(), 5, "{csv}");
    assert!(csv.starts_with("purpose,channel,state,occurred_at"));
    let events: Value = serde_json::from_str(&read("events.json")).unwrap();
    assert_eq!(events.as_array().unwrap().len(), 1);
    assert!(read("README.txt").contains("Your personal data"));

    // The download is audited.
    let audit = t.get("/v1/audit").await;
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["fields"] == json!(["bundle"])),
        "{audit}"
    );
}

async fn pdpa_s34_restriction_and_s32_objection_change_decisions_at_once(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    subject_with_data(&t, "cust-r1").await;
    // Restrictions and objections propagate like consent changes: through
    // the ledger to the stream (and webhooks and NATS, from the same outbox).
    let mut flags = common::Sse::new(
        t.open(
            "/v1/stream?types=subject.restricted,subject.objected,subject.restriction_lifted",
            &t.owner,
            &[],
        )
        .await,
    );
    let mut service = common::Sse::new(t.open("/v1/stream?purposes=service", &t.owner, &[]).await);
    assert_eq!(
        decide(&t, "cust-r1", "service", "email").await["allowed"],
        true
    );
    assert_eq!(
        decide(&t, "cust-r1", "marketing.email", "email").await["allowed"],
        true
    );

    let (status, r) = request(
        &t,
        json!({ "subject": "cust-r1", "kind": "objection", "purposes": ["marketing.email"] }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(
        decide(&t, "cust-r1", "marketing.email", "email").await["allowed"],
        true,
        "nothing changes before the request is carried out"
    );
    let id = r["id"].as_str().unwrap();
    act(&t, id, "verify", None).await;
    act(&t, id, "complete", None).await;
    let d = decide(&t, "cust-r1", "marketing.email", "email").await;
    assert_eq!(
        (d["allowed"].clone(), d["reason"].clone()),
        (json!(false), json!("objected"))
    );

    carry_out(&t, json!({ "subject": "cust-r1", "kind": "restriction" })).await;
    let d = decide(&t, "cust-r1", "service", "email").await;
    assert_eq!(
        (d["allowed"].clone(), d["reason"].clone()),
        (json!(false), json!("restricted"))
    );
    let s = t.get("/v1/subjects/cust-r1").await;
    assert_eq!(s["flags"]["restricted"], json!(["*"]), "{s}");

    let wait = std::time::Duration::from_secs(5);
    let (_, kind, objected) = flags.next(wait).await.expect("the objection");
    assert_eq!(kind, "subject.objected");
    assert_eq!(objected["purpose"], "marketing.email");
    assert_eq!(
        objected["before"], objected["after"],
        "no consent changed: {objected}"
    );
    assert_eq!(objected["action"], "object");
    let (_, kind, restricted) = flags.next(wait).await.expect("the restriction");
    assert_eq!(
        (kind.as_str(), &restricted["purpose"]),
        ("subject.restricted", &json!("*"))
    );
    // A restriction of every purpose reaches a stream of one purpose; an
    // objection to another purpose does not.
    let (_, kind, _) = service
        .next(wait)
        .await
        .expect("the restriction, filtered by purpose");
    assert_eq!(kind, "subject.restricted");
    assert!(
        service
            .next(std::time::Duration::from_millis(200))
            .await
            .is_none()
    );

    // Lifting the restriction (here through the subject API) propagates too.
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/subjects/cust-r1",
            &t.owner,
            Some(json!({
                "identifiers": { "email": EMAIL, "phone": "089-876-5432" },
                "flags": { "objected": ["marketing.email"] },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, kind, lifted) = flags.next(wait).await.expect("the lifted restriction");
    assert_eq!(
        (kind.as_str(), &lifted["purpose"]),
        ("subject.restriction_lifted", &json!("*"))
    );
    assert_eq!(
        decide(&t, "cust-r1", "service", "email").await["allowed"],
        true
    );
    assert!(
        flags
            .next(std::time::Duration::from_millis(200))
            .await
            .is_none(),
        "the objection stands"
    );
    // In the ledger: chained, verifiable, not mistaken for consent.
    let h = t.get("/v1/subjects/cust-r1/consents?history=true").await;
    let actions: Vec<&str> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        // The requests' own entries (received, completed) aside.
        .filter(|a| !a.starts_with("request_"))
        .collect();
    assert_eq!(
        actions[actions.len() - 3..],
        ["object", "restrict", "lift_restriction"],
        "{h}"
    );
    assert!(
        h["consents"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["purpose"] != "*"),
        "{h}"
    );
    assert_eq!(t.get("/v1/ledger/verify").await["ok"], true);
    // They are rights, not consent actions: POST /v1/consents refuses them.
    let (status, _, p) = t
        .request(
            Method::POST,
            "/v1/consents",
            &t.owner,
            Some(json!({ "subject": "cust-r1", "source": "web",
                "actions": [{ "purpose": "marketing.email", "action": "restrict" }] })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{p}");
    assert_eq!(p["field"], "actions/0/action");
}

async fn pdpa_s19_withdrawal_request_withdraws_through_the_ledger(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    subject_with_data(&t, "cust-w1").await;
    let done = carry_out(
        &t,
        json!({ "subject": "cust-w1", "kind": "withdrawal", "purposes": ["marketing.email"] }),
    )
    .await;
    assert!(
        done["steps"][2]["outcome"]
            .as_str()
            .unwrap()
            .contains("1 consent")
    );
    let d = decide(&t, "cust-w1", "marketing.email", "email").await;
    assert_eq!(d["reason"], "withdrawn");
    assert_eq!(
        decide(&t, "cust-w1", "analytics", "web").await["allowed"],
        true
    );
    let h = t.get("/v1/subjects/cust-w1/consents?history=true").await;
    let last = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .rfind(|e| !e["action"].as_str().unwrap().starts_with("request_"))
        .unwrap()
        .clone();
    assert_eq!(
        (last["action"].clone(), last["source"].clone()),
        (json!("withdraw"), json!("rights_request"))
    );
}

async fn pdpa_s35_rectification_corrects_the_sealed_profile(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    subject_with_data(&t, "cust-c1").await;
    let (status, r) = request(
        &t,
        json!({ "subject": "cust-c1", "kind": "rectification",
                "changes": { "identifiers": { "email": "not an email" } } }),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{r}");
    assert_eq!(r["field"], "changes.identifiers.email");
    let done = carry_out(
        &t,
        json!({ "subject": "cust-c1", "kind": "rectification",
                "changes": { "identifiers": { "email": "Malee.New@Example.com" },
                             "attributes": { "country": null, "first_name": "Malee" } } }),
    )
    .await;
    assert!(
        done["steps"][2]["outcome"]
            .as_str()
            .unwrap()
            .contains("email")
    );
    let s = t.get("/v1/subjects/cust-c1").await;
    assert_eq!(s["identifiers"]["email"], "malee.new@example.com");
    assert_eq!(s["attributes"], json!({ "first_name": "Malee" }));
}

async fn pdpa_s30_s39_rejections_are_reasoned_extensions_move_the_due_date_and_overdue_requests_are_listed(
    backend: Backend,
) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    subject_with_data(&t, "cust-d1").await;

    // Bad input: unknown subject, future receipt, duplicates, purposes where none belong.
    let (status, r) = request(&t, json!({ "subject": "nobody", "kind": "access" })).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{r}");
    let (status, r) = request(
        &t,
        json!({ "subject": "cust-d1", "kind": "access", "received_at": "2999-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("received_at"))
    );
    let (status, r) = request(
        &t,
        json!({ "subject": "cust-d1", "kind": "access", "purposes": ["analytics"] }),
    )
    .await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("purposes"))
    );
    let (status, r) = request(
        &t,
        json!({ "subject": "cust-d1", "kind": "objection", "purposes": ["nope"] }),
    )
    .await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("purposes"))
    );
    let (status, _) = request(&t, json!({ "subject": "cust-d1", "kind": "launch" })).await;
    assert!(status.is_client_error());

    // Received 40 days ago: overdue.
    let received = yinyom_core::time::rfc3339(
        yinyom_core::time::now() - 40 * yinyom_core::time::MICROS_PER_DAY,
    );
    let (status, old) = request(
        &t,
        json!({ "subject": "cust-d1", "kind": "access", "via": "email", "received_at": received }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{old}");
    assert_eq!(old["overdue"], true);
    let old_id = old["id"].as_str().unwrap().to_string();
    let (status, dup) = request(&t, json!({ "subject": "cust-d1", "kind": "access" })).await;
    assert_eq!(status, StatusCode::CONFLICT, "{dup}");
    assert!(dup["detail"].as_str().unwrap().contains(&old_id));

    let (_, fresh) = request(&t, json!({ "subject": "cust-d1", "kind": "portability" })).await;
    let fresh_id = fresh["id"].as_str().unwrap().to_string();
    let overdue = t.get("/v1/requests?overdue=true").await;
    let ids: Vec<&str> = overdue["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![old_id.as_str()]);

    // An extension needs a reason, moves the due date 30 days (PDPA), once.
    let (status, r) = act(&t, &fresh_id, "extend", None).await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("reason"))
    );
    let (status, ext) = act(
        &t,
        &fresh_id,
        "extend",
        Some("the request covers ten years of records"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{ext}");
    let due = |v: &Value| yinyom_core::time::parse_rfc3339(v["due_at"].as_str().unwrap()).unwrap();
    assert_eq!(
        due(&ext) - due(&fresh),
        30 * yinyom_core::time::MICROS_PER_DAY
    );
    assert_eq!(ext["extended"], true);
    let (status, _) = act(&t, &fresh_id, "extend", Some("again")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // A rejection needs its reason, which is recorded; a closed request stays closed.
    let (status, _) = act(&t, &old_id, "reject", Some(" ")).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, rej) = act(
        &t,
        &old_id,
        "reject",
        Some("identity could not be verified"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rej}");
    assert_eq!(rej["status"], "rejected");
    assert_eq!(rej["overdue"], false);
    let got = t.get(&format!("/v1/requests/{old_id}")).await;
    let last = got["steps"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["reason"], "identity could not be verified");
    assert!(last["actor"].as_str().unwrap().starts_with("key:"));
    let (status, _) = act(&t, &old_id, "verify", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        t.get("/v1/requests?overdue=true").await["requests"],
        json!([])
    );
    let (status, _, _) = t
        .request(Method::GET, "/v1/requests/req_nope", &t.owner, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // GDPR tenants: one calendar month.
    let (status, _, body) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({ "jurisdictions": ["EU"] })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, eu) = request(
        &t,
        json!({ "subject": "cust-d1", "kind": "erasure", "received_at": "2026-01-31T09:00:00Z" }),
    )
    .await;
    assert_eq!(eu["due_at"], "2026-02-28T09:00:00Z", "{eu}");
}

async fn grant_at(t: &TestApp, subject: &str, purpose: &str, days_ago: i64) {
    let at = yinyom_core::time::rfc3339(
        yinyom_core::time::now() - days_ago * yinyom_core::time::MICROS_PER_DAY,
    );
    t.post(
        "/v1/consents",
        json!({
            "subject": subject, "source": "web", "occurred_at": at,
            "notice": { "key": "nl", "version": 1 },
            "actions": [{ "purpose": purpose, "channel": "email", "action": "grant" }],
        }),
    )
    .await;
}

async fn pdpa_s19_consent_expires_after_its_validity_ledgered_and_propagated_and_data_is_erased_after_retention(
    backend: Backend,
) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    t.post(
        "/v1/purposes",
        json!({
            "key": "newsletter", "names": { "th": "จดหมายข่าว", "en": "Newsletter" },
            "basis": "consent", "channels": ["email"], "validity_days": 1, "retention_days": 2,
        }),
    )
    .await;
    t.post(
        "/v1/notices",
        json!({
            "key": "nl",
            "texts": { "th": { "title": "จดหมายข่าว", "body": "…" }, "en": { "title": "Newsletter", "body": "…" } },
            "purposes": ["newsletter"],
        }),
    )
    .await;
    for id in ["cust-x1", "cust-x2", "cust-x3"] {
        let (status, _, body) = t
            .request(
                Method::PUT,
                &format!("/v1/subjects/{id}"),
                &t.owner,
                Some(json!({ "identifiers": { "email": format!("{id}@example.com") } })),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    grant_at(&t, "cust-x1", "newsletter", 0).await; // valid
    grant_at(&t, "cust-x2", "newsletter", 2).await; // expired a day ago, data kept
    grant_at(&t, "cust-x3", "newsletter", 4).await; // expired 3 days ago: retention over
    let mut stream = common::Sse::new(t.open("/v1/stream?since=0", &t.owner, &[]).await);

    let now = yinyom_core::time::now();
    let report = yinyom::lifecycle::run_once(&t.app, now).await.unwrap();
    assert_eq!((report.expired, report.erased), (2, 1), "{report:?}");

    // The expiry is in the ledger, at the time the consent lapsed.
    let h = t.get("/v1/subjects/cust-x2/consents?history=true").await;
    let last = h["history"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].clone(), last["source"].clone()),
        (json!("expire"), json!("expiry"))
    );
    assert_eq!(
        decide(&t, "cust-x2", "newsletter", "email").await["reason"],
        "expired"
    );
    assert_eq!(
        decide(&t, "cust-x1", "newsletter", "email").await["allowed"],
        true
    );
    // ...and propagated like every change.
    let mut expired = Vec::new();
    while let Some((_, _, e)) = stream.next(std::time::Duration::from_secs(2)).await {
        if e["type"] == "consent.expired" {
            expired.push(e);
        }
        if expired.len() == 2 {
            break;
        }
    }
    assert_eq!(expired.len(), 2, "consent.expired events on the stream");

    // Retention over: erased; the other keeps its data.
    assert_eq!(
        decide(&t, "cust-x3", "newsletter", "email").await["reason"],
        "erased"
    );
    let kept = t.get("/v1/subjects/cust-x2").await;
    assert_eq!(kept["identifiers"]["email"], "cust-x2@example.com");

    // A second run (another node, the next minute) does nothing twice.
    let again = yinyom::lifecycle::run_once(&t.app, now).await.unwrap();
    assert_eq!((again.expired, again.erased), (0, 0));
    let h = t.get("/v1/subjects/cust-x2/consents?history=true").await;
    assert_eq!(h["history"].as_array().unwrap().len(), 2);

    // Two days on, cust-x2's retention is over too, unless restricted (PDPA s.34).
    let later = now + 2 * yinyom_core::time::MICROS_PER_DAY;
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/subjects/cust-x2",
            &t.owner,
            Some(json!({ "identifiers": { "email": "cust-x2@example.com" }, "flags": { "restricted": ["newsletter"] } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let r = yinyom::lifecycle::run_once(&t.app, later).await.unwrap();
    assert_eq!(r.erased, 0, "a restricted subject is kept");
}

async fn pdpa_s37_breaches_are_due_to_the_regulator_in_72_hours_and_late_notices_give_reasons(
    backend: Backend,
) {
    let t = TestApp::new(backend).await;
    let hours_ago =
        |h: i64| yinyom_core::time::rfc3339(yinyom_core::time::now() - h * 3_600_000_000);
    let breach = |discovered: String, risk: &str| {
        json!({
            "discovered_at": discovered, "description": "A laptop with a CRM export was stolen",
            "categories": ["email", "phone"], "affected_subjects": 1200, "risk": risk,
            "risk_assessment": "unencrypted export of contact data",
        })
    };
    let late = t.post("/v1/breaches", breach(hours_ago(80), "risk")).await;
    assert_eq!(late["regulator_required"], true);
    assert_eq!(late["regulator_overdue"], true, "{late}");
    assert_eq!(late["subjects_required"], false);
    let high = t.post("/v1/breaches", breach(hours_ago(1), "high")).await;
    assert_eq!(high["regulator_overdue"], false);
    assert_eq!(high["subjects_required"], true);
    let due = yinyom_core::time::parse_rfc3339(high["regulator_due_at"].as_str().unwrap()).unwrap()
        - yinyom_core::time::parse_rfc3339(high["discovered_at"].as_str().unwrap()).unwrap();
    assert_eq!(due, 72 * 3_600_000_000);
    let minor = t
        .post("/v1/breaches", breach(hours_ago(100), "unlikely"))
        .await;
    assert_eq!(
        (
            minor["regulator_required"].clone(),
            minor["regulator_overdue"].clone()
        ),
        (json!(false), json!(false))
    );

    let overdue = t.get("/v1/breaches?overdue=true").await;
    assert_eq!(overdue["breaches"].as_array().unwrap().len(), 1);
    assert_eq!(overdue["breaches"][0]["id"], late["id"]);
    let r = yinyom::lifecycle::run_once(&t.app, yinyom_core::time::now())
        .await
        .unwrap();
    assert_eq!(r.breaches_overdue, 1, "the overdue alert");

    // Late: the reasons for the delay are required (GDPR Art. 33(1)).
    let path = format!(
        "/v1/breaches/{}/notifications",
        late["id"].as_str().unwrap()
    );
    let (status, _, res) = t
        .request(
            Method::POST,
            &path,
            &t.owner,
            Some(json!({ "to": "regulator", "reference": "PDPC-2026-1" })),
        )
        .await;
    assert_eq!(
        (status, res["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("delay_reason"))
    );
    let (status, _, res) = t
        .request(
            Method::POST,
            &path,
            &t.owner,
            Some(json!({ "to": "regulator", "reference": "PDPC-2026-1",
                         "delay_reason": "the theft was reported to us by the police on day 3" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    assert_eq!(res["regulator_overdue"], false);
    assert_eq!(res["notifications"][0]["late"], true);
    assert!(res["regulator_notified_at"].is_string());
    assert_eq!(
        t.get("/v1/breaches?overdue=true").await["breaches"],
        json!([])
    );

    // Bad input.
    for (body, field) in [
        (
            breach("2999-01-01T00:00:00Z".into(), "risk"),
            "discovered_at",
        ),
        (breach("yesterday".into(), "risk"), "discovered_at"),
        (
            {
                let mut b = breach(hours_ago(1), "risk");
                b["description"] = json!(" ");
                b
            },
            "description",
        ),
    ] {
        let (status, _, res) = t
            .request(Method::POST, "/v1/breaches", &t.owner, Some(body))
            .await;
        assert_eq!(
            (status, res["field"].clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, json!(field)),
            "{res}"
        );
    }
    let (status, _, _) = t
        .request(
            Method::POST,
            "/v1/breaches",
            &t.owner,
            Some(breach(hours_ago(1), "catastrophic")),
        )
        .await;
    assert!(status.is_client_error());
    let (status, _, res) = t
        .request(
            Method::POST,
            &format!(
                "/v1/breaches/{}/notifications",
                high["id"].as_str().unwrap()
            ),
            &t.owner,
            Some(json!({ "to": "subjects", "at": hours_ago(5) })),
        )
        .await;
    assert_eq!(
        (status, res["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("at"))
    );
    let (status, _, _) = t
        .request(
            Method::POST,
            "/v1/breaches/brc_nope/notifications",
            &t.owner,
            Some(json!({ "to": "subjects" })),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let user = t.key(yinyom::model::Role::User).await;
    let (status, _, _) = t
        .request(
            Method::POST,
            "/v1/breaches",
            &user,
            Some(breach(hours_ago(1), "risk")),
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = t.request(Method::GET, "/v1/breaches", &user, None).await;
    assert_eq!(status, StatusCode::OK);
}

async fn pdpa_s39_record_of_processing_exports_and_the_transparency_page_shows_it(
    backend: Backend,
) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    t.post(
        "/v1/purposes",
        json!({
            "key": "health.claims", "names": { "th": "เคลมประกัน <script>alert(1)</script>", "en": "Insurance claims" },
            "descriptions": { "en": "Handling your claims" },
            "basis": "contract", "retention_days": 3650,
            "categories": [{ "name": "health", "sensitivity": "sensitive" }, { "name": "name", "sensitivity": "general" }],
            "recipients": ["Reinsurer Co., Ltd.", "Cloud host (processor)"],
        }),
    )
    .await;
    let (status, _, body) = t
        .request(
            Method::PATCH,
            "/v1/tenant",
            &t.owner,
            Some(json!({
                "dpo": { "name": "Khun Dao", "email": "dpo@shop.example" },
                "security_measures": ["AES-256-GCM per-subject encryption", "role-based access with audit log"],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    subject_with_data(&t, "cust-p1").await;
    let (_, r) = request(&t, json!({ "subject": "cust-p1", "kind": "erasure" })).await;
    act(
        &t,
        r["id"].as_str().unwrap(),
        "reject",
        Some("legal hold: open insurance claim"),
    )
    .await;

    let rec = t.get("/v1/records-of-processing").await;
    let acts = rec["activities"].as_array().unwrap();
    assert_eq!(acts.len(), 4);
    let claims = acts
        .iter()
        .find(|a| a["purpose"] == "health.claims")
        .unwrap();
    assert_eq!(claims["basis"], "contract");
    assert_eq!(claims["sensitive"], true);
    assert_eq!(claims["data_categories"], json!(["health", "name"]));
    assert_eq!(
        claims["recipients"],
        json!(["Reinsurer Co., Ltd.", "Cloud host (processor)"])
    );
    assert_eq!(claims["retention_days"], 3650);
    assert_eq!(
        rec["security_measures"][0],
        "AES-256-GCM per-subject encryption"
    );
    assert_eq!(
        rec["rejections"][0]["reason"],
        "legal hold: open insurance claim"
    );

    let (status, headers, csv) = t
        .request_raw(
            Method::GET,
            "/v1/records-of-processing?format=csv",
            Some(&t.owner),
            &[],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let csv = String::from_utf8(csv.to_vec()).unwrap();
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 4, "{csv}");
    assert!(reader.headers().unwrap().iter().any(|h| h == "recipients"));
    let (_, _, rej) = t
        .request_raw(
            Method::GET,
            "/v1/records-of-processing?format=csv&table=rejections",
            Some(&t.owner),
            &[],
            None,
        )
        .await;
    assert!(String::from_utf8_lossy(&rej).contains("legal hold"));
    let (status, _, _) = t
        .request(
            Method::GET,
            "/v1/records-of-processing?format=xml",
            &t.owner,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // The public transparency page, in English and in Thai, escaped.
    let page = |path: String, lang: Option<&'static str>| {
        let t = &t;
        async move {
            let headers: Vec<(&str, &str)> =
                lang.map(|l| ("accept-language", l)).into_iter().collect();
            let (status, h, body) = t
                .request_raw(Method::GET, &path, None, &headers, None)
                .await;
            (status, h, String::from_utf8(body.to_vec()).unwrap())
        }
    };
    let (status, h, en) = page(format!("/t/{}?lang=en", t.tenant), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        h["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    for needle in [
        "Insurance claims",
        "Kept for",
        "3650 days",
        "dpo@shop.example",
        "Reinsurer Co., Ltd.",
        "Contract (PDPA s.24(3)",
    ] {
        assert!(en.contains(needle), "{needle:?} missing from {en}");
    }
    let (_, _, th) = page(format!("/t/{}", t.tenant), Some("th-TH,th;q=0.9,en;q=0.5")).await;
    assert!(th.contains("ระยะเวลาเก็บรักษา"), "{th}");
    assert!(th.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert!(!th.contains("<script>"));
    let (status, _, _) = page("/t/no-such-tenant".into(), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn pdpa_s25_subjects_whose_data_came_from_third_parties_are_told_within_30_days(
    backend: Backend,
) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    subject_with_data(&t, "cust-t1").await;
    subject_with_data(&t, "cust-t2").await;
    let days_ago = |d: i64| {
        yinyom_core::time::rfc3339(yinyom_core::time::now() - d * yinyom_core::time::MICROS_PER_DAY)
    };
    let put = |id: &'static str, body: Value| {
        let t = &t;
        async move {
            let (status, _, res) = t
                .request(
                    Method::PUT,
                    &format!("/v1/subjects/{id}/acquisition"),
                    &t.owner,
                    Some(body),
                )
                .await;
            (status, res)
        }
    };
    let (status, old) = put(
        "cust-t1",
        json!({ "source": "Partner Bank PCL", "acquired_at": days_ago(31) }),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{old}");
    assert_eq!(old["overdue"], true);
    let (_, fresh) = put(
        "cust-t2",
        json!({ "source": "Event sign-up list", "acquired_at": days_ago(2) }),
    )
    .await;
    assert_eq!(fresh["overdue"], false);
    let due =
        |v: &Value, k: &str| yinyom_core::time::parse_rfc3339(v[k].as_str().unwrap()).unwrap();
    assert_eq!(
        due(&fresh, "due_at") - due(&fresh, "acquired_at"),
        30 * yinyom_core::time::MICROS_PER_DAY
    );

    let list = t.get("/v1/acquisitions?overdue=true").await;
    assert_eq!(list["acquisitions"].as_array().unwrap().len(), 1);
    assert_eq!(list["acquisitions"][0]["subject"], "cust-t1");
    let r = yinyom::lifecycle::run_once(&t.app, yinyom_core::time::now())
        .await
        .unwrap();
    assert_eq!(r.notices_overdue, 1);

    // The notice is recorded: how, when, which version.
    let (status, _, told) = t
        .request(
            Method::POST,
            "/v1/subjects/cust-t1/acquisition/notice",
            &t.owner,
            Some(json!({ "method": "email", "notice": { "key": "main", "version": 1 } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{told}");
    assert_eq!(
        (told["overdue"].clone(), told["notice"].clone()),
        (json!(false), json!("main@1"))
    );
    assert_eq!(
        t.get("/v1/acquisitions?overdue=true").await["acquisitions"],
        json!([])
    );
    assert_eq!(
        t.get("/v1/acquisitions?pending=true").await["acquisitions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        t.get("/v1/acquisitions").await["acquisitions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // Bad input.
    let (status, r) = put(
        "cust-t2",
        json!({ "source": "x", "acquired_at": "2999-01-01T00:00:00Z" }),
    )
    .await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("acquired_at"))
    );
    let (status, _) = put(
        "nobody",
        json!({ "source": "x", "acquired_at": days_ago(1) }),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    for (body, field) in [
        (json!({ "method": "email", "at": days_ago(10) }), "at"),
        (
            json!({ "method": "email", "notice": { "key": "main", "version": 9 } }),
            "notice",
        ),
        (json!({ "method": "" }), "method"),
    ] {
        let (status, _, r) = t
            .request(
                Method::POST,
                "/v1/subjects/cust-t2/acquisition/notice",
                &t.owner,
                Some(body),
            )
            .await;
        assert_eq!(
            (status, r["field"].clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, json!(field)),
            "{r}"
        );
    }
}

async fn pdpa_s19_a_material_notice_change_lists_and_messages_the_consents_to_renew(
    backend: Backend,
) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    subject_with_data(&t, "cust-n1").await;
    subject_with_data(&t, "cust-n2").await;
    let r = t.get("/v1/notices/main/renewals").await;
    assert_eq!(
        (r["material_version"].clone(), r["subjects"].clone()),
        (Value::Null, json!([]))
    );

    // Version 2 is material: the grants under version 1 need renewal.
    t.post(
        "/v1/notices",
        json!({
            "key": "main", "material": true,
            "texts": { "th": { "title": "ประกาศ", "body": "ใหม่" }, "en": { "title": "Notice", "body": "new" } },
            "purposes": ["marketing.email", "analytics"],
        }),
    )
    .await;
    // cust-n2 agrees again to email marketing under version 2.
    t.post(
        "/v1/consents",
        json!({ "subject": "cust-n2", "source": "web", "notice": { "key": "main", "version": 2 },
                "actions": [{ "purpose": "marketing.email", "channel": "email", "action": "grant" }] }),
    )
    .await;
    let r = t.get("/v1/notices/main/renewals").await;
    assert_eq!(r["material_version"], 2);
    let due: Vec<(String, String)> = r["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["subject"].as_str().unwrap().into(),
                x["purpose"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        due,
        vec![
            ("cust-n1".into(), "analytics".into()),
            ("cust-n1".into(), "marketing.email".into()),
            ("cust-n2".into(), "analytics".into()),
        ]
    );
    assert_eq!(
        decide(&t, "cust-n1", "marketing.email", "email").await["reason"],
        "notice_outdated"
    );

    // Ask them to agree again, through the relay, on a purpose that allows it.
    let (status, _, res) = t
        .request(
            Method::PUT,
            "/v1/connectors/email",
            &t.owner,
            Some(json!({ "url": "smtp://127.0.0.1:9", "from": "Shop <privacy@shop.example>" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{res}");
    let (status, _, a) = t
        .request(
            Method::POST,
            "/v1/messages",
            &t.owner,
            Some(json!({
                "audience": { "renewal": "main" }, "channel": "email", "purpose": "service",
                "content": { "subject": "Our notice changed", "text": "Please review it" },
            })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{a}");
    assert_eq!(a["recipients"], 2, "one message per subject");
    let (status, _, _) = t
        .request(Method::GET, "/v1/notices/nope/renewals", &t.owner, None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

async fn pdpa_s20_a_minors_consent_needs_the_guardian(backend: Backend) {
    let mut t = TestApp::new(backend).await;
    setup(&t).await;
    let years_ago = |y: i32| {
        let today = yinyom_core::time::from_micros(yinyom_core::time::now()).date();
        format!(
            "{:04}-{:02}-{:02}",
            today.year() - y,
            today.month() as u8,
            today.day().min(28)
        )
    };
    let put_flags = |id: &'static str, flags: Value| {
        let t = &t;
        async move {
            let (status, _, body) = t
                .request(
                    Method::PUT,
                    &format!("/v1/subjects/{id}"),
                    &t.owner,
                    Some(json!({ "flags": flags })),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
        }
    };
    let grant = |id: &'static str, evidence: Value| {
        let t = &t;
        async move {
            let (status, _, body) = t
                .request(
                    Method::POST,
                    "/v1/consents",
                    &t.owner,
                    Some(json!({
                        "subject": id, "source": "web", "notice": { "key": "main", "version": 1 },
                        "evidence": evidence,
                        "actions": [{ "purpose": "marketing.email", "channel": "email", "action": "grant" }],
                    })),
                )
                .await;
            (status, body)
        }
    };
    let mother = json!({ "guardian": { "name": "Khun Mae", "relationship": "mother" } });

    // Under 10: only the guardian may consent.
    put_flags("kid", json!({ "born_on": years_ago(8) })).await;
    let (status, r) = grant("kid", json!({ "form": "signup" })).await;
    assert_eq!(
        (status, r["type"].clone()),
        (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!("https://yinyom.dev/problems/guardian-required")
        ),
        "{r}"
    );
    assert!(r["detail"].as_str().unwrap().contains("under 10"));
    let (status, r) = grant("kid", mother.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    assert_eq!(
        decide(&t, "kid", "marketing.email", "email").await["allowed"],
        true
    );

    // 10 to 19: the guardian joins the minor's consent; a guardian without
    // the relationship is refused.
    put_flags("teen", json!({ "age_band": "10_to_19" })).await;
    let (status, r) = grant("teen", json!({ "guardian": { "name": "Khun Por" } })).await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("evidence.guardian")),
        "{r}"
    );
    let (status, _) = grant("teen", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let (status, _) = grant(
        "teen",
        json!({ "guardian": { "name": "Khun Por", "relationship": "father" } }),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);

    // A consent recorded before the subject was known to be a minor does not count.
    let (status, _) = grant("late", json!({})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        decide(&t, "late", "marketing.email", "email").await["allowed"],
        true
    );
    put_flags("late", json!({ "born_on": years_ago(15) })).await;
    let d = decide(&t, "late", "marketing.email", "email").await;
    assert_eq!(
        (d["allowed"].clone(), d["reason"].clone()),
        (json!(false), json!("guardian_required"))
    );
    // An adult's is unaffected; a birth date in the future is refused.
    put_flags("grown", json!({ "born_on": years_ago(30) })).await;
    assert_eq!(grant("grown", json!({})).await.0, StatusCode::CREATED);
    let (status, _, r) = t
        .request(
            Method::PUT,
            "/v1/subjects/grown",
            &t.owner,
            Some(json!({ "flags": { "born_on": "2999-01-01" } })),
        )
        .await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("flags.born_on"))
    );

    // The guardian mark is in the chain and survives a restart.
    assert_eq!(t.get("/v1/ledger/verify").await["ok"], true);
    t.restart().await;
    assert_eq!(
        decide(&t, "kid", "marketing.email", "email").await["allowed"],
        true
    );
    assert_eq!(
        decide(&t, "late", "marketing.email", "email").await["reason"],
        "guardian_required"
    );
    assert_eq!(t.get("/v1/ledger/verify").await["ok"], true);
}

async fn pdpa_s30_the_requester_is_verified_by_a_one_time_code_sent_to_the_subject(
    backend: Backend,
) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let port = common::free_port();
    let sink = common::SmtpSink::start(port);
    let (status, _, body) = t
        .request(
            Method::PUT,
            "/v1/connectors/email",
            &t.owner,
            Some(json!({ "url": format!("smtp://127.0.0.1:{port}"), "from": "Shop <privacy@shop.example>" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    subject_with_data(&t, "cust-v1").await;
    let (_, r) = request(
        &t,
        json!({ "subject": "cust-v1", "kind": "access", "via": "preference_center" }),
    )
    .await;
    let id = r["id"].as_str().unwrap().to_string();
    let path = format!("/v1/requests/{id}/verification");

    let (status, _, r) = t
        .request(
            Method::POST,
            &path,
            &t.owner,
            Some(json!({ "channel": "sms" })),
        )
        .await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("channel")),
        "{r}"
    );
    let (status, _, r) = t
        .request(
            Method::POST,
            &format!("{path}/confirm"),
            &t.owner,
            Some(json!({ "code": "123456" })),
        )
        .await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("code")),
        "nothing sent yet"
    );

    let (status, _, r) = t
        .request(
            Method::POST,
            &path,
            &t.owner,
            Some(json!({ "channel": "email" })),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["status"], "received");
    assert!(
        common::eventually(std::time::Duration::from_secs(10), || async {
            sink.received().len() == 1
        })
        .await,
        "the code arrives by email"
    );
    let mail = sink.received()[0].clone();
    assert_eq!(mail["to"], json!([EMAIL]));
    let data = mail["data"].as_str().unwrap().to_string();
    assert!(
        !data.contains("List-Unsubscribe"),
        "not a marketing message"
    );
    let (head, body) = data
        .split_once("\r\n\r\n")
        .or_else(|| data.split_once("\n\n"))
        .unwrap();
    let text = if head
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: base64")
    {
        use base64::Engine;
        let raw: String = body.split_whitespace().collect();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap(),
        )
        .unwrap()
    } else {
        body.to_string()
    };
    assert!(
        text.contains("verification") || text.contains("code"),
        "{data}"
    );
    let code: String = text
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| w.len() == 6)
        .expect("a 6-digit code")
        .to_string();
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let (status, _, r) = t
        .request(
            Method::POST,
            &format!("{path}/confirm"),
            &t.owner,
            Some(json!({ "code": wrong })),
        )
        .await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("code"))
    );
    let (status, _, r) = t
        .request(
            Method::POST,
            &format!("{path}/confirm"),
            &t.owner,
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["status"], "verified");
    let last = r["steps"].as_array().unwrap().last().unwrap().clone();
    assert!(
        last["outcome"].as_str().unwrap().contains("one-time code"),
        "{last}"
    );
    // A code works once.
    let (status, _, _) = t
        .request(
            Method::POST,
            &format!("{path}/confirm"),
            &t.owner,
            Some(json!({ "code": code })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // Guessing is bounded: five codes per request, five tries per code.
    let (_, r) = request(&t, json!({ "subject": "cust-v1", "kind": "portability" })).await;
    let path = format!("/v1/requests/{}/verification", r["id"].as_str().unwrap());
    for _ in 0..5 {
        let (status, _, _) = t
            .request(
                Method::POST,
                &path,
                &t.owner,
                Some(json!({ "channel": "email" })),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED);
    }
    let (status, _, _) = t
        .request(
            Method::POST,
            &path,
            &t.owner,
            Some(json!({ "channel": "email" })),
        )
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    for _ in 0..5 {
        let (status, _, _) = t
            .request(
                Method::POST,
                &format!("{path}/confirm"),
                &t.owner,
                Some(json!({ "code": "99999x" })),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let (status, _, r) = t
        .request(
            Method::POST,
            &format!("{path}/confirm"),
            &t.owner,
            Some(json!({ "code": "999999" })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r["detail"].as_str().unwrap().contains("tried too often"),
        "{r}"
    );
}

/// The decoded text of a mail the SMTP sink received.
fn mail_text(mail: &Value) -> String {
    let data = mail["data"].as_str().unwrap();
    let (head, body) = data
        .split_once("\r\n\r\n")
        .or_else(|| data.split_once("\n\n"))
        .unwrap();
    if head
        .to_ascii_lowercase()
        .contains("content-transfer-encoding: base64")
    {
        use base64::Engine;
        let raw: String = body.split_whitespace().collect();
        String::from_utf8(
            base64::engine::general_purpose::STANDARD
                .decode(raw)
                .unwrap(),
        )
        .unwrap()
    } else {
        body.to_string()
    }
}

async fn double_opt_in_holds_an_email_grant_until_the_subject_confirms_it(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let port = common::free_port();
    let sink = common::SmtpSink::start(port);
    t.request(
        Method::PUT,
        "/v1/connectors/email",
        &t.owner,
        Some(json!({ "url": format!("smtp://127.0.0.1:{port}"), "from": "Shop <news@shop.example>" })),
    )
    .await;
    t.post(
        "/v1/purposes",
        json!({ "key": "news", "names": { "en": "News" }, "basis": "consent", "channels": ["email"],
                "retention_days": 365, "double_opt_in": true }),
    )
    .await;
    t.post(
        "/v1/notices",
        json!({ "key": "news", "texts": { "en": { "title": "News", "body": "…" } }, "purposes": ["news"] }),
    )
    .await;
    subject_with_data(&t, "cust-o1").await;
    let signup = json!({
        "subject": "cust-o1", "source": "web", "notice": { "key": "news", "version": 1 },
        "evidence": { "form": "footer" },
        "actions": [{ "purpose": "news", "channel": "email", "action": "grant" }],
    });
    let (status, _, r) = t
        .request(Method::POST, "/v1/consents", &t.owner, Some(signup.clone()))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["status"], "pending");
    assert_eq!(
        decide(&t, "cust-o1", "news", "email").await["reason"],
        "no_consent",
        "held, not granted"
    );

    assert!(
        common::eventually(std::time::Duration::from_secs(10), || async {
            sink.received().len() == 1
        })
        .await
    );
    let mail = sink.received()[0].clone();
    assert_eq!(mail["to"], json!([EMAIL]));
    let text = mail_text(&mail);
    let path = text
        .split_whitespace()
        .find_map(|w| w.find("/c/").map(|i| w[i..].to_string()))
        .expect("a confirmation link");
    // Opening the link changes nothing; a tampered one is refused.
    let (status, _, _) = t.request_raw(Method::GET, &path, None, &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        decide(&t, "cust-o1", "news", "email").await["reason"],
        "no_consent"
    );
    let (status, _, _) = t
        .request_raw(Method::POST, &format!("{path}x"), None, &[], None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let (status, _, _) = t.request_raw(Method::POST, &path, None, &[], None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        decide(&t, "cust-o1", "news", "email").await["allowed"],
        true
    );
    let (status, _, _) = t.request_raw(Method::POST, &path, None, &[], None).await;
    assert_eq!(status, StatusCode::OK, "confirming twice is harmless");
    let h = t.get("/v1/subjects/cust-o1/consents?history=true").await;
    let grants: Vec<&Value> = h["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["purpose"] == "news")
        .collect();
    assert_eq!(grants.len(), 1, "{h}");
    assert!(
        grants[0]["receipt"].is_string(),
        "a receipt for the confirmed grant: {}",
        grants[0]
    );

    // No email address: nothing to confirm with.
    let (status, _, _) = t
        .request(
            Method::PUT,
            "/v1/subjects/cust-o2",
            &t.owner,
            Some(json!({ "identifiers": { "phone": "0812345678" } })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let mut other = signup.clone();
    other["subject"] = json!("cust-o2");
    let (status, _, r) = t
        .request(Method::POST, "/v1/consents", &t.owner, Some(other))
        .await;
    assert_eq!(
        (status, r["field"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("channel")),
        "{r}"
    );
}

async fn requests_list_pages_by_cursor(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let mut filed = vec![];
    for i in 0..5 {
        let id = format!("cust-page{i}");
        subject_with_data(&t, &id).await;
        let (status, r) = request(&t, json!({ "subject": id, "kind": "access" })).await;
        assert_eq!(status, StatusCode::CREATED, "{r}");
        filed.push(r["id"].as_str().unwrap().to_string());
    }
    let list = |q: String| {
        let t = &t;
        async move {
            let (status, _, body) = t
                .request(Method::GET, &format!("/v1/requests{q}"), &t.owner, None)
                .await;
            (status, body)
        }
    };
    // One page holds them all: no cursor.
    let (status, all) = list(String::new()).await;
    assert_eq!(status, StatusCode::OK, "{all}");
    assert!(all.get("next_cursor").is_none(), "{all}");
    let all: Vec<String> = all["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = all.clone();
    sorted.sort();
    filed.sort();
    assert_eq!(sorted, filed);
    // Pages of two follow one another to the same list, in the same order.
    let mut paged = vec![];
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("?limit=2&cursor={c}"),
            None => "?limit=2".to_string(),
        };
        let (status, page) = list(q).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        pages += 1;
        let rows = page["requests"].as_array().unwrap();
        assert!(rows.len() <= 2);
        paged.extend(rows.iter().map(|r| r["id"].as_str().unwrap().to_string()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(paged, all);
    assert_eq!(pages, 3);
    // One subject's requests page too.
    let (status, one) = list("?subject=cust-page3&limit=1".into()).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["requests"].as_array().unwrap().len(), 1);
    assert!(one.get("next_cursor").is_none(), "{one}");
    // Bad limits and cursors are problems on their field.
    for (q, field) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?cursor=not-a-cursor", "cursor"),
        ("?cursor=e30", "cursor"),
    ] {
        let (status, p) = list(q.into()).await;
        assert_eq!(
            (status, p["field"].clone()),
            (StatusCode::UNPROCESSABLE_ENTITY, json!(field)),
            "{q}: {p}"
        );
    }
}

/// The records of a tenant as `yinyom export` writes them (JSON Lines).
async fn export_rows(t: &TestApp, dir: &std::path::Path) -> Vec<Value> {
    let path = dir.join("export.jsonl");
    let file = std::fs::File::create(&path).unwrap();
    yinyom::transfer::export(
        t.app.store.as_ref(),
        &t.tenant,
        yinyom::cli::Format::Jsonl,
        false,
        Box::new(file),
    )
    .await
    .unwrap();
    std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

async fn pdpa_s33_an_erased_subject_id_is_replaced_by_a_pseudonym_and_its_records_stay_erased(
    backend: Backend,
) {
    // The controller's id for the subject is often an email address.
    const ID: &str = "somchai.erasure@example.org";
    let mut t = TestApp::new(backend).await;
    // Files outside the database's directory (which is scanned whole).
    let files = tempfile::tempdir().unwrap();
    setup(&t).await;
    subject_with_data(&t, ID).await;
    // A client retries with a key that quotes the id; the response is kept.
    let (status, _, body) = t
        .request_raw(
            Method::POST,
            "/v1/consents",
            Some(&t.owner),
            &[("Idempotency-Key", &format!("signup-{ID}"))],
            Some(
                serde_json::to_vec(&json!({
                    "subject": ID, "source": "web", "notice": { "key": "main", "version": 1 },
                    "actions": [{ "purpose": "analytics", "action": "grant" }],
                }))
                .unwrap(),
            ),
        )
        .await;
    assert!(status.is_success(), "{}", String::from_utf8_lossy(&body));
    let receipts = t
        .get(&format!("/v1/subjects/{ID}/consents?history=true"))
        .await;
    assert!(
        !receipts["receipts"].as_array().unwrap().is_empty(),
        "{receipts}"
    );
    assert!(contains(&database_bytes(&t), ID), "the id is stored before");
    let before_export = export_rows(&t, files.path()).await;
    assert!(
        before_export
            .iter()
            .any(|r| r["subject"] == ID && r["state"] == "granted")
    );

    let done = carry_out(&t, json!({ "subject": ID, "kind": "erasure" })).await;
    let request_id = done["id"].as_str().unwrap().to_string();

    // Decisions stay refusals, asked by the old id.
    for (purpose, channel) in [("marketing.email", "email"), ("analytics", "web")] {
        let d = decide(&t, ID, purpose, channel).await;
        assert_eq!(
            (d["allowed"].clone(), d["reason"].clone()),
            (json!(false), json!("erased")),
            "{d}"
        );
    }
    // Every record is `erased`, by the old id too.
    let c = t
        .get(&format!("/v1/subjects/{ID}/consents?history=true"))
        .await;
    let states: Vec<&str> = c["consents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, vec!["erased", "erased"], "{c}");
    let actions: Vec<&str> = c["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        &actions[actions.len() - 4..],
        ["erase", "erase", "erase_subject", "request_completed"]
    );
    // Nothing revives it: a grant by the old id is refused.
    let (status, _, r) = t
        .request(
            Method::POST,
            "/v1/consents",
            &t.owner,
            Some(json!({
                "subject": ID, "source": "web", "notice": { "key": "main", "version": 1 },
                "actions": [{ "purpose": "analytics", "action": "grant" }],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");
    assert_eq!(
        r["type"].as_str().unwrap().rsplit('/').next(),
        Some("subject-erased")
    );
    // Nor can an "erase" be recorded by hand.
    let (status, _, _) = t
        .request(
            Method::POST,
            "/v1/consents",
            &t.owner,
            Some(json!({
                "subject": "someone-else", "source": "web",
                "actions": [{ "purpose": "analytics", "action": "erase" }],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    // The chain still verifies (evidence is outside the hash).
    let v = t.get("/v1/ledger/verify").await;
    assert_eq!(v["ok"], true, "{v}");

    // Events: one consent.erased per record, then subject.erased naming
    // the request and only the pseudonymous uid.
    let events = t.app.store.events_after(&t.tenant, 0, 1_000).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "consent.erased").count(), 2);
    // The request's own events frame it: received, …, completed.
    let of_request = |kind: &str| -> Value {
        let e = events.iter().find(|e| e.kind == kind).expect(kind);
        serde_json::from_str(&e.payload).unwrap()
    };
    assert_eq!(
        of_request("request.received")["request"],
        request_id.as_str()
    );
    assert_eq!(
        of_request("request.completed")["request"],
        request_id.as_str()
    );
    assert_eq!(kinds.last(), Some(&"request.completed"), "{kinds:?}");
    let last = events
        .iter()
        .rev()
        .find(|e| e.kind == "subject.erased")
        .unwrap();
    let payload: Value = serde_json::from_str(&last.payload).unwrap();
    assert_eq!(payload["request"], request_id.as_str(), "{payload}");
    assert_eq!(payload["purpose"], "*");
    assert_eq!(payload["systems"], json!([]));
    assert!(!last.payload.contains(ID) && !last.payload.contains(EMAIL));

    // The id is nowhere in the database: not in the subjects row, the
    // receipts, the stored responses or their keys.
    let bytes = database_bytes(&t);
    assert!(
        !contains(&bytes, ID),
        "the subject id is still in the database files"
    );
    let r = t
        .get(&format!("/v1/subjects/{ID}/consents?history=true"))
        .await;
    let jws = r["receipts"][0]["jws"].as_str().unwrap().to_string();
    let claims = t.app.signer.current().verify(&jws).expect("re-signed");
    assert!(
        claims["dpv:hasRecordOfActivity"][0]["dpv:hasDataSubject"]["dct:identifier"]
            .as_str()
            .unwrap()
            .starts_with("erased:"),
        "{claims}"
    );

    // The export lists it erased, under its pseudonym, never granted.
    let rows = export_rows(&t, files.path()).await;
    assert!(rows.iter().all(|r| r["subject"] != ID), "{rows:?}");
    let erased: Vec<&Value> = rows
        .iter()
        .filter(|r| r["subject"].as_str().unwrap().starts_with("erased:"))
        .collect();
    assert_eq!(erased.len(), 2);
    assert!(erased.iter().all(|r| r["state"] == "erased"));

    // Imported into a fresh instance, the erased rows are skipped, said so.
    let fresh = TestApp::new(backend).await;
    setup(&fresh).await;
    let file = files.path().join("to-import.jsonl");
    std::fs::write(
        &file,
        rows.iter().map(|r| format!("{r}\n")).collect::<String>(),
    )
    .unwrap();
    let report = yinyom::transfer::import(
        fresh.app.store.clone(),
        &fresh.tenant,
        &file,
        yinyom::cli::Format::Jsonl,
        false,
        None,
    )
    .await
    .unwrap();
    assert_eq!(report.imported, 0);
    assert_eq!(report.rejected.len(), 2, "{:?}", report.rejected);
    assert!(
        report
            .rejected
            .iter()
            .all(|(_, why)| why.contains("erased"))
    );
    let pseudonym = erased[0]["subject"].as_str().unwrap();
    let d = decide(&fresh, pseudonym, "analytics", "web").await;
    assert_eq!(d["allowed"], false, "{d}");
    // The pseudonym names no one who could be given consent either.
    let (status, _, r) = t
        .request(
            Method::POST,
            "/v1/consents",
            &t.owner,
            Some(json!({
                "subject": pseudonym, "source": "web",
                "actions": [{ "purpose": "analytics", "action": "grant" }],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{r}");

    // After a restart the old id still resolves to the erased subject.
    t.restart().await;
    let d = decide(&t, ID, "analytics", "web").await;
    assert_eq!(d["reason"], "erased", "{d}");
    let (status, _, _) = t
        .request(
            Method::PUT,
            &format!("/v1/subjects/{ID}"),
            &t.owner,
            Some(json!({ "identifiers": { "email": EMAIL } })),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
}

async fn idempotency_keys_expire_after_a_day(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let send = async |purpose: &str| {
        let (status, _, body) = t
            .request_raw(
                Method::POST,
                "/v1/consents",
                Some(&t.owner),
                &[("Idempotency-Key", "retry-me")],
                Some(
                    serde_json::to_vec(&json!({
                        "subject": "cust-ttl", "source": "web",
                        "notice": { "key": "main", "version": 1 },
                        "actions": [{ "purpose": purpose, "action": "grant" }],
                    }))
                    .unwrap(),
                ),
            )
            .await;
        (status, String::from_utf8_lossy(&body).to_string())
    };
    assert!(send("analytics").await.0.is_success());
    // Within the day the key is taken.
    assert_eq!(
        send("marketing.email").await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    let now = yinyom_core::time::now();
    let r = yinyom::lifecycle::run_once(&t.app, now + 3_600_000_000)
        .await
        .unwrap();
    assert_eq!(r.responses_expired, 0, "an hour later it is kept");
    let r = yinyom::lifecycle::run_once(&t.app, now + 25 * 3_600_000_000)
        .await
        .unwrap();
    assert_eq!(r.responses_expired, 1, "a day later it is forgotten");
    let (status, body) = send("marketing.email").await;
    assert!(status.is_success(), "the key is free again: {body}");
}

on_every_backend!(
    pdpa_s33_an_erased_subject_id_is_replaced_by_a_pseudonym_and_its_records_stay_erased,
    idempotency_keys_expire_after_a_day,
    requests_list_pages_by_cursor,
    double_opt_in_holds_an_email_grant_until_the_subject_confirms_it,
    pdpa_s30_the_requester_is_verified_by_a_one_time_code_sent_to_the_subject,
    pdpa_s20_a_minors_consent_needs_the_guardian,
    pdpa_s19_a_material_notice_change_lists_and_messages_the_consents_to_renew,
    pdpa_s25_subjects_whose_data_came_from_third_parties_are_told_within_30_days,
    pdpa_s39_record_of_processing_exports_and_the_transparency_page_shows_it,
    pdpa_s37_breaches_are_due_to_the_regulator_in_72_hours_and_late_notices_give_reasons,
    pdpa_s19_consent_expires_after_its_validity_ledgered_and_propagated_and_data_is_erased_after_retention,
    pdpa_s33_erasure_crypto_shreds_and_leaves_no_email_or_phone_in_the_database,
    pdpa_s30_access_gives_a_machine_readable_bundle_and_is_due_in_30_days,
    pdpa_s34_restriction_and_s32_objection_change_decisions_at_once,
    pdpa_s19_withdrawal_request_withdraws_through_the_ledger,
    pdpa_s35_rectification_corrects_the_sealed_profile,
    pdpa_s30_s39_rejections_are_reasoned_extensions_move_the_due_date_and_overdue_requests_are_listed,
);
