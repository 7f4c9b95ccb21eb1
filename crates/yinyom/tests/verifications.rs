//! Ledger verification as a job (`/v1/ledger/verifications`) and the
//! parallel pass behind it, on SQLite and PostgreSQL through the real
//! router; the parallel pass is held to the old single-threaded one on
//! alterations placed in and at the edges of its pages.

#[macro_use]
mod common;

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use axum::http::{Method, StatusCode, header};
use serde_json::{Value, json};
use yinyom::store::{
    Ledger, PreparedAction, SqlStore, Store, VerificationRow, Verifications, WriteItem,
};
use yinyom::verification::{self, Options};
use yinyom_core::consent::Action;
use yinyom_core::purpose::Channel;
use yinyom_core::time;

use common::{Backend, Db, TestApp};

/// A purpose, a notice and `n` consent changes through the API: `n` entries.
async fn entries(t: &TestApp, n: usize) {
    t.post(
        "/v1/purposes",
        json!({ "key": "marketing.email", "names": { "en": "Email offers" }, "basis": "consent",
                "channels": ["email"], "retention_days": 30 }),
    )
    .await;
    t.post(
        "/v1/notices",
        json!({ "key": "main", "texts": { "en": { "title": "Offers", "body": "…" } },
                "purposes": ["marketing.email"] }),
    )
    .await;
    for i in 0..n {
        let action = if i % 3 == 2 { "withdraw" } else { "grant" };
        let (s, _, body) = t
            .request(
                Method::POST,
                "/v1/consents",
                &t.owner,
                Some(json!({ "subject": format!("cust-{}", i % 4), "source": "web",
                    "notice": { "key": "main", "version": 1 },
                    "evidence": { "ip": "203.0.113.7" },
                    "actions": [{ "purpose": "marketing.email", "channel": "email", "action": action }] })),
            )
            .await;
        assert!(s.is_success(), "{s} {body}");
    }
}

/// Start a job as `key`; its view, after checking the 202 and Location.
async fn start(t: &TestApp, key: &str) -> Value {
    let (s, headers, body) = t
        .request(Method::POST, "/v1/ledger/verifications", key, None)
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    let id = body["id"].as_str().expect("an id");
    assert_eq!(
        headers.get(header::LOCATION).and_then(|v| v.to_str().ok()),
        Some(format!("/v1/ledger/verifications/{id}").as_str()),
    );
    assert!(
        ["running", "done"].contains(&body["status"].as_str().unwrap()),
        "{body}"
    );
    body
}

/// Poll a job until it is no longer running.
async fn finished(t: &TestApp, id: &str) -> Value {
    let path = format!("/v1/ledger/verifications/{id}");
    for _ in 0..600 {
        let v = t.get(&path).await;
        if v["status"] != "running" {
            return v;
        }
        assert!(
            v["checked"].as_u64().unwrap() <= v["total"].as_u64().unwrap(),
            "{v}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("verification {id} still running after 30 s");
}

/// Run `sql` through a connection of its own, as someone with access to the
/// database (not the API) would.
async fn tamper(db: &Db, sql: &str) {
    let other = db.open().await;
    let done = sqlx::query(sql).execute(other.pool()).await.expect(sql);
    assert!(done.rows_affected() >= 1, "{sql}");
    other.pool().close().await;
}

async fn a_job_verifies_the_ledger_then_names_the_altered_entry(backend: Backend) {
    let t = TestApp::new(backend).await;
    entries(&t, 9).await;
    let job = start(&t, &t.owner).await;
    let done = finished(&t, job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["ok"], true, "{done}");
    assert_eq!(done["checked"], 9, "{done}");
    assert_eq!(done["total"], 9, "{done}");
    assert_eq!(done["first_broken"], Value::Null, "{done}");
    assert!(done["finished_at"].is_string(), "{done}");
    assert!(done["entries_per_second"].as_f64().unwrap() > 0.0, "{done}");
    assert!(
        done["started_by"].as_str().unwrap().starts_with("key:"),
        "{done}"
    );

    // The fifth entry in the ledger's order.
    let fifth = {
        use yinyom::store::Ledger;
        t.store.ledger(&t.tenant).await.unwrap()[4].1.seq
    };
    tamper(
        &t.db,
        &format!(
            "UPDATE ledger SET action = 'deny' WHERE tenant = '{}' AND seq = {fifth}",
            t.tenant
        ),
    )
    .await;
    let user = t.key(yinyom::model::Role::User).await;
    let second = start(&t, &user).await;
    let done = finished(&t, second["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(done["ok"], false, "{done}");
    assert_eq!(done["first_broken"]["seq"], fifth, "{done}");
    assert_eq!(
        done["first_broken"]["problem"],
        "content does not match its hash"
    );
    assert_eq!(done["checked"], 4, "{done}");

    // Both are listed, newest first; the inline check agrees.
    let list = t.get("/v1/ledger/verifications").await;
    let ids: Vec<&str> = list["verifications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [second["id"].as_str().unwrap(), job["id"].as_str().unwrap()]
    );
    let inline = t.get("/v1/ledger/verify").await;
    assert_eq!(inline["broken"]["seq"], fifth, "{inline}");
}

async fn unknown_and_other_tenants_jobs_are_not_found(backend: Backend) {
    let t = TestApp::new(backend).await;
    entries(&t, 2).await;
    let job = start(&t, &t.owner).await;
    let id = job["id"].as_str().unwrap();
    finished(&t, id).await;
    let other = t.create_tenant("Tenant B").await;
    for (path, key) in [
        (format!("/v1/ledger/verifications/{id}"), &other.owner),
        ("/v1/ledger/verifications/ver_nope".to_string(), &t.owner),
    ] {
        let (s, headers, body) = t.request(Method::GET, &path, key, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}: {body}");
        assert_eq!(
            headers.get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
        assert_eq!(body["type"], "https://yinyom.dev/problems/not-found");
    }
    let (s, _, list) = t
        .request(Method::GET, "/v1/ledger/verifications", &other.owner, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(list["verifications"], json!([]), "{list}");
    // Tenant B's own job verifies its own (empty) ledger.
    let b = start(&t, &other.owner).await;
    let (_, _, b_job) = t
        .request(
            Method::GET,
            &format!("/v1/ledger/verifications/{}", b["id"].as_str().unwrap()),
            &other.owner,
            None,
        )
        .await;
    assert_eq!(b_job["total"], 0, "{b_job}");
}

/// A job whose process died (no heartbeat for a while) is shown failed and
/// does not block a new one; a restart keeps finished results.
async fn a_job_left_running_by_a_dead_process_is_marked_failed(backend: Backend) {
    let mut t = TestApp::new(backend).await;
    entries(&t, 3).await;
    let job = start(&t, &t.owner).await;
    finished(&t, job["id"].as_str().unwrap()).await;
    let long_ago = time::now() - 120_000_000;
    t.store
        .insert_verification(&VerificationRow {
            tenant: t.tenant.clone(),
            id: "ver_dead".into(),
            status: "running".into(),
            total: 3,
            checked: 1,
            ok: None,
            broken: None,
            error: None,
            started_by: "key:gone".into(),
            started_at: long_ago,
            heartbeat_at: long_ago,
            finished_at: None,
        })
        .await
        .unwrap();
    t.restart().await;
    let dead = t.get("/v1/ledger/verifications/ver_dead").await;
    assert_eq!(dead["status"], "failed", "{dead}");
    assert_eq!(dead["ok"], Value::Null, "{dead}");
    assert!(
        dead["error"].as_str().unwrap().starts_with("interrupted"),
        "{dead}"
    );
    let kept = t
        .get(&format!(
            "/v1/ledger/verifications/{}",
            job["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(kept["ok"], true, "the result outlives the restart: {kept}");
    let again = start(&t, &t.owner).await;
    assert_ne!(again["id"], "ver_dead");
    assert_eq!(
        finished(&t, again["id"].as_str().unwrap()).await["ok"],
        true
    );
}

/// A ledger too long to verify within one request is refused inline, with
/// a problem that names the job API.
async fn inline_verification_refuses_a_ledger_over_the_limit(backend: Backend) {
    let t = TestApp::new(backend).await;
    entries(&t, 1).await;
    tamper(
        &t.db,
        &format!(
            "UPDATE ledger_partitions SET size = size + {} WHERE tenant = '{}'",
            verification::INLINE_LIMIT,
            t.tenant
        ),
    )
    .await;
    let (s, headers, body) = t
        .request(Method::GET, "/v1/ledger/verify", &t.owner, None)
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/problem+json"
    );
    assert_eq!(body["type"], "https://yinyom.dev/problems/ledger-too-large");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("POST /v1/ledger/verifications"),
        "{body}"
    );
    // The job reads to the recorded head and reports the gap: after the
    // one entry there is.
    let job = start(&t, &t.owner).await;
    let done = finished(&t, job["id"].as_str().unwrap()).await;
    assert_eq!(done["ok"], false, "{done}");
    let only = {
        use yinyom::store::Ledger;
        t.store.ledger(&t.tenant).await.unwrap()[0].1.seq
    };
    assert_eq!(done["first_broken"]["seq"], only + 1, "{done}");
}

/// `n` entries written straight to the store (with evidence), for the
/// pass's own tests.
async fn store_with(backend: Backend, n: usize) -> (Db, std::sync::Arc<SqlStore>, String) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let (tenant, _) = yinyom::app::bootstrap(store.as_ref(), None)
        .await
        .unwrap()
        .unwrap();
    // One partition: a single dense chain, so that every case below can
    // name its entry by `seq` on both databases.
    sqlx::query("UPDATE tenants SET partitions = 1")
        .execute(store.pool())
        .await
        .unwrap();
    let items: Vec<WriteItem> = (0..n)
        .map(|i| WriteItem {
            tenant: tenant.id.clone(),
            subject_id: format!("s{}", i % 5),
            actor: "test".into(),
            source: "web".into(),
            notice: None,
            evidence: Some(json!({ "ip": format!("198.51.100.{i}") })),
            occurred_at: 1_700_000_000_000_000 + i as i64,
            actions: vec![PreparedAction {
                purpose: "p".into(),
                channel: Some(Channel::Email),
                action: if i % 2 == 0 {
                    Action::Grant
                } else {
                    Action::Withdraw
                },
                expires_at: None,
            }],
            idempotency: None,
            receipt: None,
            guardian: false,
        })
        .collect();
    let seal = |_: &WriteItem, _: &[_]| Value::Null;
    store.commit(&items, &seal).await.unwrap();
    (db, store, tenant.id)
}

/// Alterations in the middle of a page, at both sides of a page boundary,
/// deleted rows, a cut-off tail and rows past the head: the parallel pass
/// (pages of 4, three at once) finds what the single-threaded pass finds,
/// at the same entry.
async fn the_parallel_pass_locates_alterations_as_the_single_threaded_one(backend: Backend) {
    let opts = Options {
        chunk: 4,
        workers: 3,
    };
    // The partition head holds the hash as hex; the ledger as bytes.
    let hex_of_hash = match backend {
        Backend::Sqlite => "lower(hex(hash))",
        Backend::Postgres => "encode(hash, 'hex')",
    };
    let head_at_20 = format!(
        "UPDATE ledger_partitions SET size = 20, hash = (SELECT {hex_of_hash} FROM ledger WHERE seq = 20)"
    );
    let cases: [(&str, Option<u64>); 9] = [
        ("", None),
        ("UPDATE ledger SET source = 'forged' WHERE seq = 6", Some(6)),
        ("UPDATE ledger SET action = 'grant' WHERE seq = 8", Some(8)),
        ("UPDATE ledger SET occurred_at = 1 WHERE seq = 9", Some(9)),
        (
            r#"UPDATE evidence SET body = '{"ip":"x"}'
               WHERE hash = (SELECT evidence_hash FROM ledger WHERE seq = 12)"#,
            Some(12),
        ),
        ("DELETE FROM ledger WHERE seq = 13", Some(13)),
        ("DELETE FROM ledger WHERE seq = 16", Some(16)),
        ("DELETE FROM ledger WHERE seq >= 20", Some(20)),
        (head_at_20.as_str(), Some(21)),
    ];
    for (sql, expected) in cases {
        let (db, store, tenant) = store_with(backend, 23).await;
        if !sql.is_empty() {
            tamper(&db, sql).await;
        }
        let progress = AtomicU64::new(0);
        let parallel = verification::verify(store.as_ref(), &tenant, &opts, &progress)
            .await
            .unwrap();
        let sequential = store.verify_ledger_sequential(&tenant).await.unwrap();
        assert_eq!(
            parallel.broken.as_ref().map(|b| b.seq),
            expected,
            "{sql}: {parallel:?}"
        );
        assert_eq!(parallel.ok, expected.is_none(), "{sql}");
        assert_eq!(parallel.broken, sequential.broken, "{sql}");
        assert_eq!(
            progress.load(std::sync::atomic::Ordering::Relaxed),
            parallel.checked,
            "{sql}"
        );
        if expected.is_none() {
            assert_eq!(parallel.checked, 23);
        }
        // The default options (pages of thousands) agree too.
        assert_eq!(
            store.verify_ledger(&tenant).await.unwrap().broken,
            parallel.broken,
            "{sql}"
        );
    }
}

on_every_backend!(
    a_job_verifies_the_ledger_then_names_the_altered_entry,
    unknown_and_other_tenants_jobs_are_not_found,
    a_job_left_running_by_a_dead_process_is_marked_failed,
    inline_verification_refuses_a_ledger_over_the_limit,
    the_parallel_pass_locates_alterations_as_the_single_threaded_one,
);
