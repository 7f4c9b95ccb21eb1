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

use common::{Backend, Db};
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

async fn view_equals_a_replay_of_the_ledger(backend: Backend) {
    let db = Db::new(backend).await;
    let store: Arc<dyn Store> = db.open().await;
    let t = tenant(store.as_ref()).await;
    let registry = app::load_view(store.as_ref()).await.expect("view");
    let kept_up = app::load_view(store.as_ref()).await.expect("view");
    // 2 KiB holds a handful of subjects: nearly every question misses.
    let bounded_kept_up = View::new(Some(2048));
    app::load_into(store.as_ref(), &bounded_kept_up)
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
    app::load_into(store.as_ref(), &bounded_loaded)
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

on_every_backend!(view_equals_a_replay_of_the_ledger);
