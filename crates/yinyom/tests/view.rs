//! The decision view equals a replay of the ledger: random histories
//! (choices made out of order, purpose-wide and per channel, several
//! purposes) written through the real store, then every decision of every
//! subject asked of the compact view kept up by the write path, the compact
//! view loaded from the store, and bounded views far too small to hold
//! everyone (misses read the store), each compared with a fold of the
//! subject's ledger history. On SQLite and PostgreSQL.

use std::sync::Arc;

#[macro_use]
mod common;

use common::{Backend, Db, settled};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use yinyom::app;
use yinyom::record::{self, ActionRequest, ConsentRequest, NoticeSelector, Origin};
use yinyom::store::{ItemOutcome, Store};
use yinyom::view::{SubjectView, View};
use yinyom_core::consent::{Action, SubjectConsents};
use yinyom_core::notice::{NoticeDraft, NoticeText};
use yinyom_core::purpose::{Channel, Lang, LawfulBasis, Purpose};
use yinyom_core::time;

const PURPOSES: [&str; 3] = ["marketing.email", "marketing.sms", "profiling"];
const CHANNELS: [Option<Channel>; 3] = [None, Some(Channel::Email), Some(Channel::Sms)];

async fn tenant(store: &dyn Store) -> String {
    let (t, _) = app::create_tenant(store, "T", None).await.expect("tenant");
    for (i, key) in PURPOSES.iter().enumerate() {
        let purpose = Purpose {
            key: key.to_string(),
            names: [(Lang::En, key.to_string())].into(),
            descriptions: Default::default(),
            basis: if i == 2 {
                LawfulBasis::LegitimateInterest
            } else {
                LawfulBasis::Consent
            },
            categories: vec![],
            channels: vec![Channel::Email, Channel::Sms],
            retention_days: 365,
            validity_days: (i == 1).then_some(30),
            recipients: vec![],
            double_opt_in: false,
            banner: None,
        };
        store
            .insert_purpose(&t.id, &purpose, time::now())
            .await
            .expect("purpose");
    }
    store
        .publish_notice(
            &t.id,
            NoticeDraft {
                key: "n".into(),
                texts: [(
                    Lang::En,
                    NoticeText {
                        title: "N".into(),
                        body: "Everything.".into(),
                        url: None,
                    },
                )]
                .into(),
                purposes: PURPOSES.iter().map(|p| p.to_string()).collect(),
                material: false,
            },
            time::now(),
        )
        .await
        .expect("notice");
    t.id
}

fn random_request(rng: &mut StdRng, subjects: usize) -> ConsentRequest {
    let mut actions = (0..rng.gen_range(1..=3))
        .map(|_| ActionRequest {
            // The third purpose rests on legitimate interest: it is only
            // asked about.
            purpose: PURPOSES[rng.gen_range(0..2)].into(),
            channel: CHANNELS[rng.gen_range(0..CHANNELS.len())],
            action: [Action::Grant, Action::Deny, Action::Withdraw][rng.gen_range(0..3)],
        })
        .collect::<Vec<_>>();
    actions.sort_by_key(|a| (a.purpose.clone(), a.channel));
    actions.dedup_by_key(|a| (a.purpose.clone(), a.channel));
    // Choices made at random times in the last 60 days: later writes are
    // often older choices (imports of history).
    let at = time::now() - rng.gen_range(0..60 * time::MICROS_PER_DAY);
    ConsentRequest {
        subject: format!("subject-{}", rng.gen_range(0..subjects)),
        notice: Some(NoticeSelector {
            key: "n".into(),
            version: 1,
        }),
        source: ["web", "crm", "import"][rng.gen_range(0..3)].into(),
        evidence: None,
        occurred_at: Some(time::rfc3339(at)),
        actions,
    }
}

/// Commit `rounds` × 8 random consent requests; apply them to `views`.
async fn write_random(
    store: &dyn Store,
    t: &str,
    registry: &View,
    rng: &mut StdRng,
    rounds: usize,
    views: &[&View],
) {
    for _ in 0..rounds {
        let now = time::now();
        let items: Vec<_> = (0..8)
            .map(|_| {
                let req = random_request(rng, SUBJECTS);
                registry
                    .read(t, |tv| {
                        record::prepare(tv, req, "test", Origin::Import, None, now)
                    })
                    .expect("tenant")
                    .expect("valid")
            })
            .collect();
        let seal = |item: &_, entries: &[_]| yinyom::receipts::response(item, entries);
        let out = store.commit(&items, &seal).await.expect("commit");
        for (item, o) in items.iter().zip(&out) {
            if let ItemOutcome::Written { entries, .. } = o {
                for v in views {
                    v.apply(t, &item.subject_id, entries);
                }
            }
        }
    }
}

const SUBJECTS: usize = 40;

/// The view saved to its snapshot file and loaded again, with writes made
/// after the save caught up on from the ledger, equals a replay; a file
/// that is damaged, sealed with another key or of another store is not
/// used (the view is then read from the store, and still equals a replay).
async fn a_snapshot_and_the_ledger_after_it_equal_a_replay(backend: Backend) {
    let db = Db::new(backend).await;
    let store: Arc<dyn Store> = db.open().await;
    let t = tenant(store.as_ref()).await;
    let registry = app::load_view(store.as_ref()).await.expect("view");
    let saved = Arc::new(app::load_view(store.as_ref()).await.expect("view"));
    let mut rng = StdRng::seed_from_u64(42);
    write_random(store.as_ref(), &t, &registry, &mut rng, 30, &[&saved]).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = yinyom::view::SnapshotFile {
        path: dir.path().join("view.snapshot"),
        key: yinyom::vault::MasterKey::random(),
    };
    let head = store.heads().await.expect("heads")[&t];
    // On PostgreSQL entries are numbered with gaps: the writer's own
    // applications cannot tell a gap from an entry still coming, so the
    // cursor stays at or below the head (a follower moves it up to the
    // horizon); whatever it is, the loaded view below equals a replay.
    match backend {
        Backend::Sqlite => assert_eq!(
            saved.watermarks()[&t],
            head,
            "every entry applied: the file's cursor is the head"
        ),
        Backend::Postgres => assert!(saved.watermarks()[&t] <= head),
    }
    let written = saved.save(store.as_ref(), &file).await.expect("saved");
    assert!(written > 0);
    let bytes = std::fs::read(&file.path).expect("file");
    assert!(
        !bytes.windows(b"subject-1".len()).any(|w| w == b"subject-1"),
        "subject ids are sealed"
    );
    // Written after the save: caught up on from the ledger.
    write_random(store.as_ref(), &t, &registry, &mut rng, 10, &[]).await;
    settled(store.as_ref(), &t).await;
    let from_file = View::new(None);
    app::load_into(store.as_ref(), &from_file, Some(&file))
        .await
        .expect("load");
    assert_eq!(
        from_file
            .progress
            .subjects
            .load(std::sync::atomic::Ordering::Relaxed),
        0,
        "loaded from the file, not from the store"
    );
    check(store.as_ref(), &t, SUBJECTS, &[&from_file]).await;

    let other_key = yinyom::view::SnapshotFile {
        path: file.path.clone(),
        key: yinyom::vault::MasterKey::random(),
    };
    let mut damaged = bytes.clone();
    let mid = damaged.len() / 2;
    damaged[mid] ^= 1;
    let damaged_path = dir.path().join("damaged.snapshot");
    std::fs::write(&damaged_path, &damaged).expect("write");
    let damaged_file = yinyom::view::SnapshotFile {
        path: damaged_path,
        key: file.key.clone(),
    };
    let truncated_path = dir.path().join("truncated.snapshot");
    std::fs::write(&truncated_path, &bytes[..bytes.len() - 100]).expect("write");
    let truncated = yinyom::view::SnapshotFile {
        path: truncated_path,
        key: file.key.clone(),
    };
    let other_db = Db::new(backend).await;
    let other_store: Arc<dyn Store> = other_db.open().await;
    for (what, f, s) in [
        ("another key", &other_key, store.as_ref()),
        ("damaged", &damaged_file, store.as_ref()),
        ("truncated", &truncated, store.as_ref()),
        ("another store", &file, other_store.as_ref()),
    ] {
        let v = View::new(None);
        app::load_into(s, &v, Some(f)).await.expect("load");
        if what == "another store" {
            assert_eq!(v.stats().records, 0, "{what}: nothing of the file is used");
            continue;
        }
        assert!(
            v.progress
                .subjects
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0,
            "{what}: read from the store"
        );
        check(store.as_ref(), &t, SUBJECTS, &[&v]).await;
    }
}

async fn view_equals_a_replay_of_the_ledger(backend: Backend) {
    let db = Db::new(backend).await;
    let store: Arc<dyn Store> = db.open().await;
    let t = tenant(store.as_ref()).await;
    let registry = app::load_view(store.as_ref()).await.expect("view");
    let kept_up = app::load_view(store.as_ref()).await.expect("view");
    // 2 KiB holds a handful of subjects: nearly every question misses.
    let bounded_kept_up = View::new(Some(2048));
    app::load_into(store.as_ref(), &bounded_kept_up, None)
        .await
        .expect("bounded view");
    let subjects = 40;
    for seed in 0..4u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        for _ in 0..25 {
            let now = time::now();
            let items: Vec<_> = (0..8)
                .map(|_| {
                    let req = random_request(&mut rng, subjects);
                    registry
                        .read(&t, |tv| {
                            record::prepare(tv, req, "test", Origin::Import, None, now)
                        })
                        .expect("tenant")
                        .expect("valid")
                })
                .collect();
            let seal = |item: &_, entries: &[_]| yinyom::receipts::response(item, entries);
            let out = store.commit(&items, &seal).await.expect("commit");
            for (item, o) in items.iter().zip(&out) {
                if let ItemOutcome::Written { entries, .. } = o {
                    kept_up.apply(&t, &item.subject_id, entries);
                    bounded_kept_up.apply(&t, &item.subject_id, entries);
                }
            }
        }
        // Ask between rounds too, so that the bounded view holds some
        // subjects that later writes must update.
        check(store.as_ref(), &t, subjects, &[&kept_up, &bounded_kept_up]).await;
    }
    let loaded = app::load_view(store.as_ref()).await.expect("loaded");
    let bounded_loaded = View::new(Some(4096));
    app::load_into(store.as_ref(), &bounded_loaded, None)
        .await
        .expect("bounded loaded");
    check(
        store.as_ref(),
        &t,
        subjects,
        &[&kept_up, &bounded_kept_up, &loaded, &bounded_loaded],
    )
    .await;
    let stats = bounded_kept_up.stats();
    assert!(stats.bounded && stats.misses > 0, "{stats:?}");
    assert!(stats.bytes <= 4096, "the budget holds: {stats:?}");
    assert_eq!(loaded.stats().subjects as usize, subjects);
}

async fn check(store: &dyn Store, t: &str, subjects: usize, views: &[&View]) {
    let now = time::now();
    for i in 0..subjects {
        let id = format!("subject-{i}");
        let Some(record) = store.subject(t, &id).await.expect("subject") else {
            continue;
        };
        let mut fold = SubjectConsents::default();
        for e in store.history(t, &record.uid).await.expect("history") {
            if let Some(r) = e.record() {
                fold.apply(r);
            }
        }
        let replayed = SubjectView {
            flags: None,
            consents: fold,
        };
        for purpose in PURPOSES {
            for channel in CHANNELS {
                let want = views[0]
                    .read(t, |tv| tv.decide_for(&replayed, purpose, channel, now))
                    .expect("tenant")
                    .expect("purpose");
                for (n, view) in views.iter().enumerate() {
                    let got = view
                        .decide(store, t, &id, purpose, channel, now)
                        .await
                        .expect("store")
                        .expect("known");
                    assert_eq!(
                        (got.decision, &got.record),
                        (want.decision, &want.record),
                        "view {n}, {id} {purpose} {channel:?}"
                    );
                }
            }
        }
        for (n, view) in views.iter().enumerate() {
            let mut held = view
                .subject(store, t, &id)
                .await
                .expect("store")
                .expect("tenant")
                .consents
                .records;
            let mut want = replayed.consents.records.clone();
            held.sort_by_key(|r| (r.purpose.clone(), r.channel));
            want.sort_by_key(|r| (r.purpose.clone(), r.channel));
            assert_eq!(held, want, "view {n}, {id}: records");
        }
    }
}

/// Many requests at once through the real writer (on PostgreSQL several
/// batches commit side by side, each locking only its partitions), several
/// about the same subject: every one is answered, the view kept up by the
/// writer equals a replay of each subject's history, and the ledger's
/// chains verify.
async fn concurrent_writes_through_the_writer_equal_a_replay(backend: Backend) {
    let db = Db::new(backend).await;
    let sql = db.open().await;
    sql.set_write_lanes(4);
    let store: Arc<dyn Store> = sql;
    let t = tenant(store.as_ref()).await;
    let view = Arc::new(app::load_view(store.as_ref()).await.expect("view"));
    let writer = yinyom::writer::Writer::start(
        store.clone(),
        view.clone(),
        Arc::new(yinyom::metrics::Metrics::default()),
        tokio::sync::watch::Sender::new(0),
    );
    let subjects = 24;
    let mut rng = StdRng::seed_from_u64(11);
    let mut written = 0;
    for _ in 0..3 {
        let now = time::now();
        let items: Vec<_> = (0..200)
            .map(|_| {
                view.read(&t, |tv| {
                    record::prepare(
                        tv,
                        random_request(&mut rng, subjects),
                        "test",
                        Origin::Import,
                        None,
                        now,
                    )
                })
                .expect("tenant")
                .expect("valid")
            })
            .collect();
        let answers = futures_util::future::join_all(items.into_iter().map(|item| {
            let writer = writer.clone();
            async move { writer.write(item).await }
        }))
        .await;
        for a in answers {
            match a {
                Ok(ItemOutcome::Written { entries, .. }) => written += entries.len() as u64,
                Ok(_) => panic!("a request was not written"),
                Err(e) => panic!("a request failed: {e}"),
            }
        }
    }
    check(store.as_ref(), &t, subjects, &[&view]).await;
    settled(store.as_ref(), &t).await;
    let progress = std::sync::atomic::AtomicU64::new(0);
    let report = yinyom::verification::verify(
        store.as_ref(),
        &t,
        &yinyom::verification::Options::default(),
        &progress,
    )
    .await
    .expect("verify");
    assert!(report.ok, "{report:?}");
    assert_eq!(report.checked, written, "every entry written is verified");
}

on_every_backend!(
    view_equals_a_replay_of_the_ledger,
    a_snapshot_and_the_ledger_after_it_equal_a_replay,
    concurrent_writes_through_the_writer_equal_a_replay,
);

/// While the view loads, liveness answers, readiness reports progress and
/// every other call is told to come back.
#[tokio::test]
async fn while_starting_healthz_answers_and_readyz_shows_progress() {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;
    let view = Arc::new(View::new(None));
    view.progress
        .records
        .store(1234, std::sync::atomic::Ordering::Relaxed);
    let router = yinyom::api::starting_router(view);
    let ask = |path: &str| {
        let req = Request::get(path).body(Body::empty()).expect("request");
        router.clone().oneshot(req)
    };
    let health = ask("/healthz").await.expect("answer");
    assert_eq!(health.status(), StatusCode::OK);
    for path in ["/readyz", "/v1/decisions?subject=s&purpose=p"] {
        let res = ask(path).await.expect("answer");
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(res.headers()["retry-after"], "1");
        assert_eq!(
            res.headers()["content-type"],
            "application/problem+json",
            "{path}"
        );
        let body = axum::body::to_bytes(res.into_body(), 1 << 16)
            .await
            .expect("body");
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["loaded_records"], 1234, "{path}: {v}");
        assert_eq!(v["status"], 503);
    }
}
