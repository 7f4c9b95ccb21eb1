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
    Checkpoints, Ledger, PreparedAction, SqlStore, Store, VerificationRow, Verifications, WriteItem,
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
    let sql = &db.ledger_write(sql);
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

/// The `i`-th request of a test ledger: alternately a grant and a
/// withdrawal of purpose `p` by email, with an IP address as evidence.
fn item(tenant: &str, i: usize, subject: String, ip: String) -> WriteItem {
    WriteItem {
        tenant: tenant.to_string(),
        subject_id: subject,
        actor: "test".into(),
        source: "web".into(),
        notice: None,
        evidence: Some(json!({ "ip": ip })),
        occurred_at: 1_700_000_000_000_000 + i as i64,
        actions: vec![PreparedAction {
            purpose: "p".into(),
            channel: Some(Channel::Email),
            action: if i.is_multiple_of(2) {
                Action::Grant
            } else {
                Action::Withdraw
            },
            expires_at: None,
        }],
        idempotency: None,
        receipt: None,
        guardian: false,
    }
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
        .map(|i| {
            item(
                &tenant.id,
                i,
                format!("s{}", i % 5),
                format!("198.51.100.{i}"),
            )
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

/// Rows that do not read back as an entry at all (a value the domain does
/// not know, a hash of the wrong length, a text where a number belongs) are
/// named at their own entry by the pass, in small pages and large, as the
/// single-threaded pass names them.
async fn rows_that_do_not_decode_are_located(backend: Backend) {
    let opts = Options {
        chunk: 4,
        workers: 3,
    };
    let truncate = match backend {
        Backend::Sqlite => "UPDATE ledger SET hash = substr(hash, 1, 16) WHERE seq = 10",
        Backend::Postgres => {
            "UPDATE ledger SET hash = substring(hash from 1 for 16) WHERE seq = 10"
        }
    };
    let mut cases = vec![
        ("UPDATE ledger SET channel = 'fax' WHERE seq = 3", 3),
        ("UPDATE ledger SET action = 'bogus' WHERE seq = 5", 5),
        (truncate, 10),
        ("UPDATE ledger SET prev_hash = hash WHERE seq = 17", 17),
    ];
    if backend == Backend::Sqlite {
        // SQLite keeps the value's own type whatever the column says.
        cases.push(("UPDATE ledger SET occurred_at = 'soon' WHERE seq = 8", 8));
        cases.push(("UPDATE ledger SET source = 42 WHERE seq = 9", 9));
    }
    for (sql, expected) in cases {
        let (db, store, tenant) = store_with(backend, 23).await;
        tamper(&db, sql).await;
        let progress = AtomicU64::new(0);
        let parallel = verification::verify(store.as_ref(), &tenant, &opts, &progress)
            .await
            .unwrap();
        assert!(!parallel.ok, "{sql}: {parallel:?}");
        assert_eq!(
            parallel.broken.as_ref().map(|b| b.seq),
            Some(expected),
            "{sql}: {parallel:?}"
        );
        assert_eq!(parallel.checked, expected - 1, "{sql}");
        let sequential = store.verify_ledger_sequential(&tenant).await.unwrap();
        assert_eq!(sequential.broken.map(|b| b.seq), Some(expected), "{sql}");
        assert_eq!(
            store.verify_ledger(&tenant).await.unwrap().broken,
            parallel.broken,
            "{sql}"
        );
    }
}

/// `n` entries of subjects spread over `parts` partitions, committed
/// three at a time (on PostgreSQL each commit takes seqs of its own
/// transaction, far apart), with the ledger as stored, oldest first.
async fn partitioned_store(
    backend: Backend,
    n: usize,
    parts: u32,
) -> (
    Db,
    std::sync::Arc<SqlStore>,
    String,
    Vec<yinyom_core::ledger::LedgerEntry>,
) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let (tenant, _) = yinyom::app::bootstrap(store.as_ref(), None)
        .await
        .unwrap()
        .unwrap();
    sqlx::query(&format!("UPDATE tenants SET partitions = {parts}"))
        .execute(store.pool())
        .await
        .unwrap();
    let items: Vec<WriteItem> = (0..n)
        .map(|i| {
            item(
                &tenant.id,
                i,
                format!("s{}", i % 7),
                format!("198.51.100.{}", i % 3),
            )
        })
        .collect();
    let seal = |_: &WriteItem, _: &[_]| Value::Null;
    for batch in items.chunks(3) {
        store.commit(batch, &seal).await.unwrap();
    }
    let ledger = store
        .ledger(&tenant.id)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    (db, store, tenant.id, ledger)
}

/// A ledger of several partitions read in pages of 2, three at once: each
/// entry's predecessor in its partition is mostly in an earlier page, which
/// may still be being checked; the pass links them as the single-threaded
/// pass does, and names the same entry when one is altered, deleted, cut
/// off a partition's end or stored past its head.
async fn the_parallel_pass_links_each_partition_across_pages(backend: Backend) {
    let opts = Options {
        chunk: 2,
        workers: 3,
    };
    let hex_of_hash = match backend {
        Backend::Sqlite => "lower(hex(hash))",
        Backend::Postgres => "encode(hash, 'hex')",
    };
    for case in 0..6 {
        let (db, store, tenant, ledger) = partitioned_store(backend, 30, 4).await;
        let mut by_part = std::collections::BTreeMap::<u32, Vec<_>>::new();
        for e in &ledger {
            by_part.entry(e.partition).or_default().push(e);
        }
        assert!(by_part.len() > 1, "{by_part:?}");
        // The partition with the most entries, its entries in order.
        let (part, entries) = by_part.iter().max_by_key(|(_, es)| es.len()).unwrap();
        assert!(entries.len() >= 5, "{entries:?}");
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.pseq, i as u64 + 1);
        }
        let seq = |k: usize| entries[k].seq;
        let n = entries.len();
        let row = |k: usize| format!("tenant = '{tenant}' AND seq = {}", seq(k));
        let (sql, expected) = match case {
            0 => (String::new(), None),
            1 => (
                format!("UPDATE ledger SET source = 'forged' WHERE {}", row(2)),
                Some(seq(2)),
            ),
            2 => (
                format!("UPDATE ledger SET prev_hash = hash WHERE {}", row(3)),
                Some(seq(3)),
            ),
            // The next entry of the partition no longer links; where the
            // partition holds every entry of the tenant up to it (its seq
            // equals its position, as when the tenant's first entries all
            // land in it), the missing entry's own seq is known and named.
            3 => (
                format!("DELETE FROM ledger WHERE {}", row(1)),
                Some(if entries[2].seq == entries[2].pseq {
                    seq(1)
                } else {
                    seq(2)
                }),
            ),
            // Cut off the partition's end: its head names it.
            4 => (
                format!("DELETE FROM ledger WHERE {}", row(n - 1)),
                Some(seq(n - 1)),
            ),
            // A row stored past its partition's recorded head: the pass
            // leaves it out of the chain (as if written after it read the
            // heads), then finds it beyond the head.
            _ => (
                format!(
                    "UPDATE ledger_partitions SET size = size - 1, last_seq = {},
                         hash = (SELECT {hex_of_hash} FROM ledger WHERE {})
                     WHERE tenant = '{tenant}' AND part = {part}",
                    seq(n - 2),
                    row(n - 2),
                ),
                Some(seq(n - 1)),
            ),
        };
        if !sql.is_empty() {
            tamper(&db, &sql).await;
        }
        let progress = AtomicU64::new(0);
        let parallel = verification::verify(store.as_ref(), &tenant, &opts, &progress)
            .await
            .unwrap();
        assert_eq!(
            parallel.broken.as_ref().map(|b| b.seq),
            expected,
            "{sql}: {parallel:?}"
        );
        assert_eq!(parallel.ok, expected.is_none(), "{sql}");
        assert_eq!(
            progress.load(std::sync::atomic::Ordering::Relaxed),
            parallel.checked,
            "{sql}"
        );
        if case == 5 {
            let problem = &parallel.broken.as_ref().unwrap().problem;
            assert!(problem.contains("beyond"), "{parallel:?}");
            assert_eq!(parallel.checked, 29);
        } else {
            // As the single-threaded pass finds it.
            let sequential = store.verify_ledger_sequential(&tenant).await.unwrap();
            assert_eq!(parallel.broken, sequential.broken, "{sql}");
            assert_eq!(parallel.checked, sequential.checked, "{sql}");
        }
        if expected.is_none() {
            assert_eq!(parallel.checked, 30);
        }
        // The default options (pages of thousands) agree too.
        assert_eq!(
            store.verify_ledger(&tenant).await.unwrap().broken,
            parallel.broken,
            "{sql}"
        );
    }
}

/// Entries committed after the pass read the partitions' heads (here:
/// heads read before another ten entries were written) are left out of
/// the chain, in whichever pages and partitions they land, and the pass
/// succeeds over the entries the heads name.
async fn entries_written_after_the_heads_were_read_are_left_out(backend: Backend) {
    let (_db, store, tenant, ledger) = partitioned_store(backend, 20, 4).await;
    let heads = store.ledger_partitions(&tenant).await.unwrap();
    let items: Vec<WriteItem> = (0..10)
        .map(|i| WriteItem {
            tenant: tenant.clone(),
            subject_id: format!("late{i}"),
            actor: "test".into(),
            source: "web".into(),
            notice: None,
            evidence: None,
            occurred_at: 1_800_000_000_000_000 + i as i64,
            actions: vec![PreparedAction {
                purpose: "p".into(),
                channel: Some(Channel::Email),
                action: Action::Grant,
                expires_at: None,
            }],
            idempotency: None,
            receipt: None,
            guardian: false,
        })
        .collect();
    let seal = |_: &WriteItem, _: &[_]| Value::Null;
    for batch in items.chunks(2) {
        store.commit(batch, &seal).await.unwrap();
    }
    let stale = StaleHeads {
        inner: store.clone(),
        heads,
    };
    for chunk in [2, 5, 4096] {
        let opts = Options { chunk, workers: 3 };
        let progress = AtomicU64::new(0);
        let report = verification::verify(&stale, &tenant, &opts, &progress)
            .await
            .unwrap();
        assert!(report.ok, "chunk {chunk}: {report:?}");
        assert_eq!(report.checked, ledger.len() as u64, "chunk {chunk}");
    }
    // Read afresh, every entry.
    let report = store.verify_ledger(&tenant).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, 30);
}

/// The store as a pass sees it when writes commit between its reading the
/// partitions' heads and the rest: heads as they were.
struct StaleHeads {
    inner: std::sync::Arc<SqlStore>,
    heads: Vec<yinyom_core::ledger::Head>,
}

#[async_trait::async_trait]
impl Verifications for StaleHeads {
    async fn ledger_page_end(
        &self,
        tenant: &str,
        after: u64,
        upto: u64,
        rows: u32,
    ) -> yinyom::store::Result<Option<u64>> {
        self.inner.ledger_page_end(tenant, after, upto, rows).await
    }
    async fn check_ledger_range(
        &self,
        tenant: &str,
        after: u64,
        upto: u64,
        checker: verification::Checker,
    ) -> yinyom::store::Result<verification::Checks> {
        self.inner
            .check_ledger_range(tenant, after, upto, checker)
            .await
    }
    async fn ledger_partitions(
        &self,
        _tenant: &str,
    ) -> yinyom::store::Result<Vec<yinyom_core::ledger::Head>> {
        Ok(self.heads.clone())
    }
    async fn ledger_last_seq(&self, tenant: &str) -> yinyom::store::Result<u64> {
        self.inner.ledger_last_seq(tenant).await
    }
    async fn ledger_past_heads(&self, tenant: &str) -> yinyom::store::Result<Option<u64>> {
        self.inner.ledger_past_heads(tenant).await
    }
    async fn insert_verification(&self, v: &VerificationRow) -> yinyom::store::Result<()> {
        self.inner.insert_verification(v).await
    }
    async fn verification(
        &self,
        tenant: &str,
        id: &str,
    ) -> yinyom::store::Result<Option<VerificationRow>> {
        self.inner.verification(tenant, id).await
    }
    async fn verifications(
        &self,
        tenant: &str,
        limit: u32,
    ) -> yinyom::store::Result<Vec<VerificationRow>> {
        self.inner.verifications(tenant, limit).await
    }
    async fn progress_verification(
        &self,
        tenant: &str,
        id: &str,
        checked: u64,
        at: time::Micros,
    ) -> yinyom::store::Result<bool> {
        self.inner
            .progress_verification(tenant, id, checked, at)
            .await
    }
    async fn finish_verification(&self, v: &VerificationRow) -> yinyom::store::Result<bool> {
        self.inner.finish_verification(v).await
    }
    async fn expire_verifications(
        &self,
        stale_before: time::Micros,
        at: time::Micros,
    ) -> yinyom::store::Result<u64> {
        self.inner.expire_verifications(stale_before, at).await
    }
}

#[async_trait::async_trait]
impl Checkpoints for StaleHeads {
    async fn entry_hashes(
        &self,
        tenant: &str,
        part: u32,
        after: u64,
        upto: u64,
    ) -> yinyom::store::Result<Vec<(u64, String)>> {
        self.inner.entry_hashes(tenant, part, after, upto).await
    }
    async fn merkle_nodes(
        &self,
        tenant: &str,
        part: u32,
        wanted: &[yinyom_core::merkle::Subtree],
    ) -> yinyom::store::Result<
        std::collections::HashMap<yinyom_core::merkle::Subtree, yinyom_core::merkle::Hash>,
    > {
        self.inner.merkle_nodes(tenant, part, wanted).await
    }
    async fn insert_merkle_nodes(
        &self,
        tenant: &str,
        part: u32,
        nodes: &[(yinyom_core::merkle::Subtree, yinyom_core::merkle::Hash)],
    ) -> yinyom::store::Result<()> {
        self.inner.insert_merkle_nodes(tenant, part, nodes).await
    }
    async fn insert_checkpoint(
        &self,
        c: &yinyom::store::CheckpointRow,
    ) -> yinyom::store::Result<bool> {
        self.inner.insert_checkpoint(c).await
    }
    async fn checkpoint(
        &self,
        tenant: &str,
        number: Option<u64>,
    ) -> yinyom::store::Result<Option<yinyom::store::CheckpointRow>> {
        self.inner.checkpoint(tenant, number).await
    }
    async fn checkpoints(
        &self,
        tenant: &str,
        before: Option<u64>,
        limit: u32,
    ) -> yinyom::store::Result<Vec<yinyom::store::CheckpointRow>> {
        self.inner.checkpoints(tenant, before, limit).await
    }
    async fn receipt(
        &self,
        tenant: &str,
        id: &str,
    ) -> yinyom::store::Result<Option<(String, yinyom::store::StoredReceipt)>> {
        self.inner.receipt(tenant, id).await
    }
}

on_every_backend!(
    a_job_verifies_the_ledger_then_names_the_altered_entry,
    unknown_and_other_tenants_jobs_are_not_found,
    a_job_left_running_by_a_dead_process_is_marked_failed,
    inline_verification_refuses_a_ledger_over_the_limit,
    the_parallel_pass_locates_alterations_as_the_single_threaded_one,
    rows_that_do_not_decode_are_located,
    the_parallel_pass_links_each_partition_across_pages,
    entries_written_after_the_heads_were_read_are_left_out,
);
