//! The storage contract, written against the `Store` trait so that every
//! backend runs the same suite: each test body is a function of a fresh,
//! empty store, once on SQLite and once on PostgreSQL.

use std::sync::Arc;

#[macro_use]
mod common;

use common::{Backend, Db, settled};

use yinyom::app;
use yinyom::record::{self, ActionRequest, ConsentRequest, NoticeSelector, Origin};
use yinyom::store::{Idempotency, ItemOutcome, Ledger, RequestFilter, Requests, Store, WriteItem};
use yinyom_core::consent::{Action, ConsentRecord, ConsentState, SubjectConsents};
use yinyom_core::notice::{NoticeDraft, NoticeText};
use yinyom_core::purpose::{Channel, Lang, LawfulBasis, Purpose};
use yinyom_core::time;

/// A fresh, empty store of `backend` (dropped with the `Db`).
async fn open(backend: Backend) -> (Db, Arc<dyn Store>) {
    let db = Db::new(backend).await;
    let store: Arc<dyn Store> = db.open().await;
    (db, store)
}

/// A tenant with one consent purpose and a notice asking for it.
async fn tenant(store: &dyn Store, name: &str) -> String {
    let (t, _) = app::create_tenant(store, name, None).await.expect("tenant");
    let purpose = Purpose {
        key: "marketing.email".into(),
        names: [(Lang::En, "Email".to_string())].into(),
        descriptions: Default::default(),
        basis: LawfulBasis::Consent,
        categories: vec![],
        channels: vec![Channel::Email],
        retention_days: 365,
        validity_days: None,
        recipients: vec![],
        double_opt_in: false,
        banner: None,
    };
    store
        .insert_purpose(&t.id, &purpose, time::now())
        .await
        .expect("purpose");
    store
        .publish_notice(
            &t.id,
            NoticeDraft {
                key: "marketing".into(),
                texts: [(
                    Lang::En,
                    NoticeText {
                        title: "Marketing".into(),
                        body: "Offers by email.".into(),
                        url: None,
                    },
                )]
                .into(),
                purposes: vec!["marketing.email".into()],
                material: false,
            },
            time::now(),
        )
        .await
        .expect("notice");
    t.id
}

fn request(subject: &str, action: Action, occurred_at: Option<&str>) -> ConsentRequest {
    ConsentRequest {
        subject: subject.into(),
        notice: Some(NoticeSelector {
            key: "marketing".into(),
            version: 1,
        }),
        source: "web".into(),
        evidence: Some(serde_json::json!({ "ip": "203.0.113.9" })),
        occurred_at: occurred_at.map(str::to_string),
        actions: vec![ActionRequest {
            purpose: "marketing.email".into(),
            channel: Some(Channel::Email),
            action,
        }],
    }
}

async fn prepare(store: &dyn Store, tenant: &str, req: ConsentRequest) -> WriteItem {
    let view = app::load_view(store).await.expect("view");
    prepare_in(&view, tenant, req)
}

/// [`prepare`] with a view already loaded (for many items).
fn prepare_in(view: &yinyom::view::View, tenant: &str, req: ConsentRequest) -> WriteItem {
    view.read(tenant, |tv| {
        record::prepare(tv, req, "test", Origin::Api, None, time::now())
    })
    .expect("tenant in view")
    .expect("valid request")
}

async fn commit(store: &dyn Store, items: &[WriteItem]) -> Vec<ItemOutcome> {
    let seal = |item: &WriteItem, entries: &[_]| yinyom::receipts::response(item, entries);
    store.commit(items, &seal).await.expect("commit")
}

fn entries(o: &ItemOutcome) -> &[yinyom_core::ledger::LedgerEntry] {
    match o {
        ItemOutcome::Written { entries, .. } => entries,
        _ => panic!("expected a write"),
    }
}

async fn chains_continue_across_batches_and_tenants_stay_apart(backend: Backend) {
    let (_db, store) = open(backend).await;
    let a = tenant(store.as_ref(), "A").await;
    let b = tenant(store.as_ref(), "B").await;
    // A second subject of A in another partition than s1 (tenant ids are
    // random, so which one that is varies).
    let part =
        |id: &str| yinyom_core::ledger::partition_of(&a, id, yinyom_core::ledger::PARTITIONS);
    let s2 = (2..)
        .map(|k| format!("s{k}"))
        .find(|id| part(id) != part("s1"))
        .expect("another partition");
    let batch = vec![
        prepare(store.as_ref(), &a, request("s1", Action::Grant, None)).await,
        prepare(store.as_ref(), &b, request("s1", Action::Grant, None)).await,
        prepare(store.as_ref(), &a, request(&s2, Action::Deny, None)).await,
    ];
    let out = commit(store.as_ref(), &batch).await;
    // Each tenant's entries are in order; each subject's partition chain
    // starts at position 1.
    let first: Vec<&yinyom_core::ledger::LedgerEntry> =
        out.iter().map(|o| &entries(o)[0]).collect();
    assert!(first[0].seq < first[2].seq, "A's entries in order");
    assert!(
        first
            .iter()
            .all(|e| e.pseq == 1 && e.prev_hash == yinyom_core::ledger::GENESIS)
    );
    let s1 = yinyom_core::ledger::partition_of(&a, "s1", yinyom_core::ledger::PARTITIONS);
    assert_eq!(first[0].partition, s1);
    let next = commit(
        store.as_ref(),
        &[prepare(store.as_ref(), &a, request("s1", Action::Withdraw, None)).await],
    )
    .await;
    // s1's next entry continues s1's partition chain.
    let again = &entries(&next[0])[0];
    assert!(again.seq > first[2].seq);
    assert_eq!((again.partition, again.pseq), (s1, 2));
    assert_eq!(again.prev_hash, first[0].hash);
    for (t, n) in [(&a, 3), (&b, 1)] {
        let r = store.verify_ledger(t).await.expect("verify");
        assert!(r.ok, "{r:?}");
        assert_eq!(r.checked, n);
    }
    // The same subject id in two tenants is two different people.
    let (sa, sb) = (
        store.subject(&a, "s1").await.unwrap().unwrap(),
        store.subject(&b, "s1").await.unwrap().unwrap(),
    );
    assert_ne!(sa.uid, sb.uid);
    assert_eq!(store.history(&a, &sb.uid).await.unwrap().len(), 0);
    assert_eq!(store.history(&a, &sa.uid).await.unwrap().len(), 2);
}

/// Paging current state never splits a subject: a page that ends inside its
/// last subject leaves that one to the next page, and a page too small for
/// one subject holds that subject whole (the view loads this way).
async fn state_pages_keep_each_subject_whole(backend: Backend) {
    let (_db, store) = open(backend).await;
    let t = tenant(store.as_ref(), "T").await;
    let view = app::load_view(store.as_ref()).await.expect("view");
    let items: Vec<WriteItem> = (0..20)
        .map(|i| {
            let mut r = request(&format!("s{i:02}"), Action::Grant, None);
            if i % 2 == 0 {
                // A second record: the purpose-wide one.
                r.actions.push(ActionRequest {
                    purpose: "marketing.email".into(),
                    channel: None,
                    action: Action::Deny,
                });
            }
            prepare_in(&view, &t, r)
        })
        .collect();
    commit(store.as_ref(), &items).await;
    let key = |r: &ConsentRecord| (r.channel.map(Channel::as_str), r.state.as_str());
    let expected: Vec<String> = (0..20).map(|i| format!("s{i:02}")).collect();
    for limit in [1, 2, 3, 7, 100] {
        let (mut after, mut seen) = (String::new(), Vec::new());
        loop {
            let page = store.states_page(&t, &after, limit).await.expect("page");
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            seen.extend(page);
        }
        let ids: Vec<&String> = seen.iter().map(|s| &s.id).collect();
        assert_eq!(ids, expected.iter().collect::<Vec<_>>(), "limit {limit}");
        for (i, s) in seen.iter().enumerate() {
            let mut whole = store.subject_states(&t, &s.id).await.expect("states");
            let mut paged = s.records.clone();
            whole.sort_by_key(key);
            paged.sort_by_key(key);
            assert_eq!(paged, whole, "limit {limit}, {}", s.id);
            assert_eq!(paged.len(), if i % 2 == 0 { 2 } else { 1 }, "{}", s.id);
            assert_eq!(s.tenant, t);
        }
    }
}

/// An import committed in write lanes (PostgreSQL: a batch split by ledger
/// partition, the parts committed at once) keeps each subject's rows in
/// the file's order, and the newest choice is the state, whatever lane
/// committed first. (On SQLite there is one lane: the same checks.)
async fn an_import_in_lanes_keeps_each_subjects_rows_in_order(backend: Backend) {
    let db = Db::new(backend).await;
    let sql = db.open().await;
    sql.set_write_lanes(2);
    let store: Arc<dyn Store> = sql;
    let t = tenant(store.as_ref(), "T").await;
    // A first write reads the tenant's partition count: lanes follow it.
    let first = prepare(store.as_ref(), &t, request("s0", Action::Grant, None)).await;
    commit(store.as_ref(), &[first]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crm.csv");
    let mut csv = String::from("subject,purpose,channel,state,occurred_at,source\n");
    // Per subject: granted in March, withdrawn in January (older: history,
    // not state), denied in February.
    for i in 0..200 {
        for (state, month) in [("granted", 3), ("withdrawn", 1), ("denied", 2)] {
            csv += &format!("c{i},marketing.email,email,{state},2024-0{month}-01T00:00:00Z,crm\n");
        }
    }
    std::fs::write(&file, csv).unwrap();
    let report = yinyom::transfer::import(
        store.clone(),
        &t,
        &file,
        yinyom::cli::Format::Csv,
        false,
        None,
    )
    .await
    .expect("import");
    assert_eq!(report.imported, 600, "{:?}", report.rejected);
    settled(store.as_ref(), &t).await;
    let mut parts = std::collections::BTreeSet::new();
    for i in 0..200 {
        let id = format!("c{i}");
        let subject = store.subject(&t, &id).await.unwrap().expect("subject");
        let history = store.history(&t, &subject.uid).await.unwrap();
        let actions: Vec<Action> = history.iter().map(|e| e.body.action).collect();
        assert_eq!(
            actions,
            [Action::Grant, Action::Withdraw, Action::Deny],
            "{id}"
        );
        assert!(history.windows(2).all(|w| w[0].seq < w[1].seq), "{id}");
        parts.insert(history[0].partition);
        let states = store.subject_states(&t, &id).await.unwrap();
        let states: Vec<ConsentState> = states.iter().map(|r| r.state).collect();
        assert_eq!(
            states,
            [ConsentState::Granted],
            "{id}: March's choice stands"
        );
    }
    assert!(parts.len() > 1, "the subjects are in several partitions");
    let r = store.verify_ledger(&t).await.expect("verify");
    assert!(r.ok, "{r:?}");
    assert_eq!(r.checked, 601);
}

async fn state_is_the_fold_of_history_even_for_late_imports(backend: Backend) {
    let (_db, store) = open(backend).await;
    let t = tenant(store.as_ref(), "T").await;
    let newer = prepare(
        store.as_ref(),
        &t,
        request("s", Action::Grant, Some("2025-06-01T00:00:00Z")),
    )
    .await;
    let older = prepare(
        store.as_ref(),
        &t,
        request("s", Action::Withdraw, Some("2024-01-01T00:00:00Z")),
    )
    .await;
    commit(store.as_ref(), &[newer]).await;
    commit(store.as_ref(), &[older]).await;
    let snap = all_states(store.as_ref(), &t).await;
    let s = snap.iter().find(|s| s.id == "s").expect("subject");
    let mut fold = SubjectConsents::default();
    for e in store.history(&t, &s.uid).await.unwrap() {
        fold.apply(e.record().expect("consent entries only"));
    }
    assert_eq!(
        s.records, fold.records,
        "stored state = replay of the ledger"
    );
    assert_eq!(
        s.records[0].state,
        ConsentState::Granted,
        "an older choice never wins"
    );
}

async fn idempotency_keys_replay_within_and_across_batches(backend: Backend) {
    let (_db, store) = open(backend).await;
    let t = tenant(store.as_ref(), "T").await;
    let keyed = |hash: &str| {
        let hash = hash.to_string();
        let store = store.clone();
        let t = t.clone();
        async move {
            let mut item = prepare(store.as_ref(), &t, request("s", Action::Grant, None)).await;
            item.idempotency = Some(Idempotency {
                key: "k1".into(),
                request_hash: hash,
            });
            item
        }
    };
    // A plain write after the replays: its evidence must stay its own.
    let plain = prepare(store.as_ref(), &t, request("s2", Action::Grant, None)).await;
    let out = commit(
        store.as_ref(),
        &[
            keyed("h").await,
            keyed("h").await,
            keyed("other").await,
            plain,
        ],
    )
    .await;
    assert!(matches!(out[0], ItemOutcome::Written { .. }));
    assert!(matches!(out[1], ItemOutcome::Replayed { .. }));
    assert!(matches!(out[2], ItemOutcome::KeyReused));
    assert!(matches!(out[3], ItemOutcome::Written { .. }));
    assert!(
        store.verify_ledger(&t).await.unwrap().ok,
        "evidence hashes match"
    );
    let again = commit(store.as_ref(), &[keyed("h").await]).await;
    assert!(matches!(again[0], ItemOutcome::Replayed { .. }));
    assert_eq!(
        store.verify_ledger(&t).await.unwrap().checked,
        2,
        "one write per key, however often retried, and the plain one"
    );
}

async fn many_subjects_in_one_batch(backend: Backend) {
    let (_db, store) = open(backend).await;
    let t = tenant(store.as_ref(), "T").await;
    let mut batch = Vec::new();
    // More than one multi-row statement's worth, with repeats of a subject.
    for i in 0..1_234 {
        batch.push(
            prepare(
                store.as_ref(),
                &t,
                request(&format!("s{}", i % 1_000), Action::Grant, None),
            )
            .await,
        );
    }
    commit(store.as_ref(), &batch).await;
    let r = store.verify_ledger(&t).await.unwrap();
    assert!(r.ok);
    assert_eq!(r.checked, 1_234);
    let snap = all_states(store.as_ref(), &t).await;
    assert_eq!(snap.len(), 1_000);
}

/// A batch as large as an import's is written in chunks (on SQLite,
/// chained on a second thread while the chunk before is written): the
/// result is the batch written at once. Subjects recur across chunks with
/// choices out of time order, an idempotency key is reused in a later
/// chunk; the current state is the fold of each subject's history and
/// every outbox row carries the state before and after its entry.
async fn a_large_batch_is_written_as_one(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let t = tenant(store.as_ref(), "T").await;
    let actions = [Action::Grant, Action::Withdraw, Action::Deny, Action::Grant];
    let view = app::load_view(store.as_ref()).await.expect("view");
    let mut batch = Vec::new();
    for i in 0..5_000usize {
        // Spread over five years, not in the order of the batch.
        let day = (i * 7_919) % 1_800;
        let at = time::rfc3339(
            time::parse_rfc3339("2020-01-01T00:00:00Z").unwrap() + day as i64 * 86_400_000_000,
        );
        let req = request(&format!("s{}", i % 1_500), actions[i / 1_500], Some(&at));
        let mut item = prepare_in(&view, &t, req);
        if i == 100 || i == 4_000 {
            item.subject_id = "keyed".into();
            item.idempotency = Some(Idempotency {
                key: "k".into(),
                request_hash: "h".into(),
            });
        }
        batch.push(item);
    }
    let out = commit(store.as_ref(), &batch).await;
    assert_eq!(out.len(), 5_000);
    assert!(matches!(out[100], ItemOutcome::Written { .. }));
    assert!(
        matches!(out[4_000], ItemOutcome::Replayed { .. }),
        "a key used in an earlier chunk of the batch is replayed"
    );
    let r = store.verify_ledger(&t).await.unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.checked, 4_999);
    settled(store.as_ref(), &t).await;
    let ledger = store.ledger(&t).await.unwrap();
    assert_eq!(ledger.len(), 4_999);
    // seq follows the batch's order.
    let seqs: Vec<u64> = out
        .iter()
        .filter_map(|o| match o {
            ItemOutcome::Written { entries, .. } => Some(entries[0].seq),
            _ => None,
        })
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    for s in all_states(store.as_ref(), &t).await {
        let mut fold = SubjectConsents::default();
        for e in store.history(&t, &s.uid).await.unwrap() {
            fold.apply(e.record().expect("consent entries only"));
        }
        assert_eq!(s.records, fold.records, "{}: state = replay", s.id);
    }
    // Before and after of each outbox row, replayed from the ledger.
    let rows: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT seq, before_state, after_state FROM outbox WHERE tenant = $1 ORDER BY seq",
    )
    .bind(&t)
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(rows.len(), 4_999);
    let mut going: std::collections::HashMap<String, (ConsentState, i64, u64)> = Default::default();
    for ((_, e), (seq, before, after)) in ledger.iter().zip(&rows) {
        assert_eq!(e.seq, *seq as u64);
        let slot = going.entry(e.body.subject_uid.clone()).or_insert((
            ConsentState::Unspecified,
            i64::MIN,
            0,
        ));
        assert_eq!(before, slot.0.as_str(), "before entry {seq}");
        let state = e.body.action.state().unwrap();
        if (e.body.occurred_at, e.seq) > (slot.1, slot.2) {
            *slot = (state, e.body.occurred_at, e.seq);
        }
        assert_eq!(after, slot.0.as_str(), "after entry {seq}");
    }
}

/// Subject ids and idempotency keys are the client's text: quotes,
/// backslashes and SQL in them are stored and found as written (the
/// PostgreSQL batch writes its read's values into the query as string
/// constants).
async fn client_text_with_quotes_and_backslashes_round_trips(backend: Backend) {
    let (_db, store) = open(backend).await;
    let t = tenant(store.as_ref(), "T").await;
    let ids = [
        "o'brien",
        "back\\slash\\",
        "E'x\\'",
        "'); DROP TABLE ledger; --",
        "$$dollar$$",
        "ลูกค้า-๔๒",
    ];
    let batch = |n: usize| {
        let store = store.clone();
        let t = t.clone();
        async move {
            let mut items = Vec::new();
            for id in ids {
                let action = if n == 0 {
                    Action::Grant
                } else {
                    Action::Withdraw
                };
                let mut item = prepare(store.as_ref(), &t, request(id, action, None)).await;
                item.idempotency = Some(Idempotency {
                    key: format!("{id}\\'{n}"),
                    request_hash: "h".into(),
                });
                items.push(item);
            }
            items
        }
    };
    for n in 0..2 {
        let out = commit(store.as_ref(), &batch(n).await).await;
        assert!(out.iter().all(|o| matches!(o, ItemOutcome::Written { .. })));
        let replayed = commit(store.as_ref(), &batch(n).await).await;
        assert!(
            replayed
                .iter()
                .all(|o| matches!(o, ItemOutcome::Replayed { .. })),
            "each key is found again"
        );
    }
    for id in ids {
        let states = store.subject_states(&t, id).await.unwrap();
        assert_eq!(states.len(), 1, "{id}");
        assert_eq!(states[0].state, ConsentState::Withdrawn, "{id}");
        let uid = store.subject(&t, id).await.unwrap().expect(id).uid;
        assert_eq!(store.history(&t, &uid).await.unwrap().len(), 2, "{id}");
    }
    let r = store.verify_ledger(&t).await.unwrap();
    assert!(r.ok);
    assert_eq!(r.checked, 2 * ids.len() as u64);
}

/// A subject created by another writer (a profile write) while a consent
/// batch creates it too: whichever wins, the ledger names the subject's
/// one uid.
async fn a_subject_created_meanwhile_keeps_one_uid(backend: Backend) {
    let (_db, store) = open(backend).await;
    let t = tenant(store.as_ref(), "T").await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let id = format!("raced-{i}");
        let item = prepare(store.as_ref(), &t, request(&id, Action::Grant, None)).await;
        let (s1, s2, t1) = (store.clone(), store.clone(), t.clone());
        let profile = yinyom::model::ProfileWrite {
            id: id.clone(),
            uid: uuid::Uuid::now_v7().to_string(),
            rev: None,
            data_key: vec![1; 32],
            profile: vec![2; 8],
            lookups: vec![],
            exclusive: &[],
            flags: None,
        };
        tasks.push(tokio::spawn(async move {
            s1.put_profile(&t1, &profile, time::now()).await.unwrap();
        }));
        tasks.push(tokio::spawn(async move {
            commit(s2.as_ref(), &[item]).await;
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    for i in 0..40 {
        let id = format!("raced-{i}");
        let uid = store.subject(&t, &id).await.unwrap().expect("subject").uid;
        let history = store.history(&t, &uid).await.unwrap();
        assert_eq!(history.len(), 1, "{id}'s entry names its uid");
    }
    assert!(store.verify_ledger(&t).await.unwrap().ok);
}

/// What a batch writes besides its entries: each partition's head in
/// `ledger_partitions` (size, hash, last seq) is its last entry, positions
/// are dense from 1 and linked within the partition, and the tenant's
/// last seq is its newest entry's (SQLite: the counter in `ledger_heads`).
async fn partition_heads_follow_the_entries(backend: Backend) {
    let (_db, store) = open(backend).await;
    let t = tenant(store.as_ref(), "T").await;
    for round in 0..3 {
        let mut batch = Vec::new();
        for i in 0..150 {
            let action = if (i + round) % 3 == 0 {
                Action::Withdraw
            } else {
                Action::Grant
            };
            batch.push(
                prepare(
                    store.as_ref(),
                    &t,
                    request(&format!("s{}", (i * 7 + round) % 200), action, None),
                )
                .await,
            );
        }
        commit(store.as_ref(), &batch).await;
    }
    let ledger: Vec<yinyom_core::ledger::LedgerEntry> = store
        .ledger(&t)
        .await
        .unwrap()
        .into_iter()
        .map(|(_, e)| e)
        .collect();
    assert_eq!(ledger.len(), 450);
    let mut ids = std::collections::HashMap::new();
    for k in 0..200 {
        let id = format!("s{k}");
        if let Some(s) = store.subject(&t, &id).await.unwrap() {
            ids.insert(s.uid, id);
        }
    }
    let mut by_part: std::collections::BTreeMap<u32, Vec<&yinyom_core::ledger::LedgerEntry>> =
        Default::default();
    for e in &ledger {
        let id = &ids[&e.body.subject_uid];
        let part = yinyom_core::ledger::partition_of(&t, id, yinyom_core::ledger::PARTITIONS);
        assert_eq!(e.partition, part, "{id}");
        by_part.entry(e.partition).or_default().push(e);
    }
    let heads = yinyom::store::Verifications::ledger_partitions(store.as_ref(), &t)
        .await
        .unwrap();
    assert_eq!(heads.len(), by_part.len(), "{heads:?}");
    for h in &heads {
        let mut entries = by_part[&h.partition].clone();
        entries.sort_by_key(|e| e.pseq);
        let mut prev = yinyom_core::ledger::GENESIS.to_string();
        for (i, e) in entries.iter().enumerate() {
            assert_eq!(e.pseq, i as u64 + 1);
            assert_eq!(e.prev_hash, prev);
            prev = e.hash.clone();
        }
        let last = entries.last().unwrap();
        assert_eq!(h.chain.seq, entries.len() as u64);
        assert_eq!(h.chain.hash, last.hash);
        assert_eq!(h.last_seq, last.seq);
    }
    let newest = ledger.iter().map(|e| e.seq).max().unwrap();
    // On PostgreSQL the head is the last entry below the horizon, which a
    // transaction still open elsewhere in the cluster (another test's, in
    // another schema) holds back for a moment: it must get there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let head = store.heads().await.unwrap().get(&t).copied();
        if head == Some(newest) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the head stayed at {head:?}, the newest entry is {newest}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = store.verify_ledger(&t).await.unwrap();
    assert!(r.ok, "{r:?}");
    assert_eq!(r.checked, 450);
}

/// Rights requests are written with compare-and-swap: a stale writer
/// loses, and nothing it held is written.
async fn request_updates_are_compare_and_swap_and_erasure_is_one_transaction(backend: Backend) {
    use yinyom::model::RequestRow;
    use yinyom_core::rights::{Kind, Status};
    let (_db, store) = open(backend).await;
    let t = tenant(store.as_ref(), "A").await;
    let mut grant = prepare(store.as_ref(), &t, request("s1", Action::Grant, None)).await;
    grant.evidence = Some(serde_json::json!({ "typed_email": "s1@example.com" }));
    commit(store.as_ref(), &[grant]).await;
    let subject = store.subject(&t, "s1").await.unwrap().unwrap();

    let now = time::now();
    let row = RequestRow {
        tenant: t.clone(),
        id: "req_1".into(),
        subject_uid: subject.uid.clone(),
        subject_id: None,
        kind: Kind::Erasure,
        status: Status::Received,
        purposes: vec![],
        changes: Some(vec![1, 2, 3]),
        via: "api".into(),
        received_at: now,
        due_at: now + 30 * yinyom_core::time::MICROS_PER_DAY,
        extended: false,
        closed_at: None,
        steps: vec![],
        verification: None,
        updated_at: now,
    };
    store.insert_request(&row).await.unwrap();
    let mut first = row.clone();
    first.status = Status::Verified;
    first.updated_at = now + 1;
    assert!(store.update_request(&first, now).await.unwrap());
    let mut stale = row.clone();
    stale.status = Status::Rejected;
    stale.updated_at = now + 2;
    assert!(
        !store.update_request(&stale, now).await.unwrap(),
        "the stale writer loses"
    );
    let got = store.request(&t, "req_1").await.unwrap().unwrap();
    assert_eq!(got.status, Status::Verified);
    assert_eq!(got.subject_id.as_deref(), Some("s1"));
    let overdue = store
        .requests(
            &t,
            &RequestFilter {
                due_before: Some(now + 31 * yinyom_core::time::MICROS_PER_DAY),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(overdue.len(), 1);
    assert!(
        store
            .requests(
                &t,
                &RequestFilter {
                    status: Some(Status::Rejected),
                    ..Default::default()
                },
                None,
                100,
            )
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .subject_requests(&t, &subject.uid)
            .await
            .unwrap()
            .len(),
        1
    );

    let mut flags = subject.flags.clone();
    flags.erased = true;
    let gone = store
        .erase_subject(&yinyom::model::Erasure {
            tenant: &t,
            id: "s1",
            uid: &subject.uid,
            pseudonym: "erased:s1",
            flags: &flags,
            receipts: Vec::new(),
            at: now,
        })
        .await
        .unwrap();
    assert_eq!(
        gone.evidence, 1,
        "the evidence is deleted; its hash stays in the chain"
    );
    store.purge_deleted().await.unwrap();
    assert!(
        store.subject(&t, "s1").await.unwrap().is_none(),
        "the id is replaced by the pseudonym"
    );
    let after = store.subject(&t, "erased:s1").await.unwrap().unwrap();
    assert!(after.flags.erased && after.data_key.is_none() && after.profile.is_none());
    assert!(
        store
            .request(&t, "req_1")
            .await
            .unwrap()
            .unwrap()
            .changes
            .is_none()
    );
    assert!(store.verify_ledger(&t).await.unwrap().ok);
}

/// Outbox events page by cursor: each page continues exactly after the
/// last, only the tenant's own, each with its ledger entry's content; the
/// pages together are what one long read returns.
async fn outbox_events_page_by_cursor(backend: Backend) {
    let (_db, store) = open(backend).await;
    let a = tenant(store.as_ref(), "A").await;
    let b = tenant(store.as_ref(), "B").await;
    let actions = [Action::Grant, Action::Withdraw, Action::Deny, Action::Grant];
    for i in 0..13 {
        let mut batch = vec![];
        for t in [&a, &b] {
            let action = actions[i % actions.len()];
            let req = request(&format!("s{}", i % 4), action, None);
            batch.push(prepare(store.as_ref(), t, req).await);
        }
        commit(store.as_ref(), &batch).await;
    }
    settled(store.as_ref(), &a).await;
    let all = store.events_after(&a, 0, 1000).await.unwrap();
    assert!(all.len() >= 10, "{}", all.len());
    let mut paged = vec![];
    let mut after = 0;
    loop {
        let page = store.events_after(&a, after, 4).await.unwrap();
        assert!(page.len() <= 4);
        let Some(last) = page.last() else { break };
        assert!(page.iter().all(|e| e.seq > after));
        after = last.seq;
        paged.extend(page);
    }
    let key = |e: &yinyom::store::OutboxEvent| {
        (
            e.seq,
            e.subject_uid.clone(),
            e.kind.clone(),
            e.payload.clone(),
        )
    };
    assert_eq!(
        paged.iter().map(key).collect::<Vec<_>>(),
        all.iter().map(key).collect::<Vec<_>>()
    );
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    let history = store.ledger(&a).await.unwrap();
    for e in &all {
        let (_, entry) = history.iter().find(|(_, h)| h.seq == e.seq).unwrap();
        assert_eq!(entry.seq, e.seq);
        assert_eq!(entry.body.subject_uid, e.subject_uid);
        assert_eq!(entry.body.tenant, a);
    }
    assert!(store.events_after(&a, after, 4).await.unwrap().is_empty());
}

/// Evidence is stored once per distinct value and ledger partition;
/// erasing a subject deletes the evidence only its entries kept, lets go
/// of the rest (another subject's identical evidence stays theirs), and the
/// chain verifies.
async fn evidence_is_stored_once_and_erasure_deletes_the_subjects_own(backend: Backend) {
    let db = Db::new(backend).await;
    let store = db.open().await;
    let t = tenant(store.as_ref(), "A").await;
    let part =
        |id: &str| yinyom_core::ledger::partition_of(&t, id, yinyom_core::ledger::PARTITIONS);
    // s2 in another partition than s1, s3 in s2's.
    let s2_id = (0..)
        .map(|i| format!("s2-{i}"))
        .find(|id| part(id) != part("s1"))
        .unwrap();
    let s3_id = (0..)
        .map(|i| format!("s3-{i}"))
        .find(|id| part(id) == part(&s2_id))
        .unwrap();
    let mut own = prepare(store.as_ref(), &t, request("s1", Action::Grant, None)).await;
    own.evidence = Some(serde_json::json!({ "typed_email": "s1@example.com" }));
    // Four entries share {"ip": "203.0.113.9"} (one in s1's partition,
    // three in s2's), one keeps s1's own.
    let batch = vec![
        prepare(store.as_ref(), &t, request("s1", Action::Grant, None)).await,
        prepare(store.as_ref(), &t, request(&s2_id, Action::Grant, None)).await,
        prepare(store.as_ref(), &t, request(&s3_id, Action::Grant, None)).await,
        own,
    ];
    commit(store.as_ref(), &batch).await;
    commit(
        store.as_ref(),
        &[prepare(store.as_ref(), &t, request(&s2_id, Action::Withdraw, None)).await],
    )
    .await;
    let count = |sql: &'static str| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, i64>(sql)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM evidence").await,
        3,
        "the shared value once in each of two partitions, s1's own once"
    );
    assert_eq!(
        count("SELECT CAST(SUM(refs) AS BIGINT) FROM evidence").await,
        5
    );
    let s1 = store.subject(&t, "s1").await.unwrap().unwrap();
    let s2 = store.subject(&t, &s2_id).await.unwrap().unwrap();
    let ev = store.evidence(&t, &s1.uid).await.unwrap();
    assert_eq!(ev.len(), 2);
    assert!(ev.values().any(|v| v["typed_email"] == "s1@example.com"));

    let mut flags = s1.flags.clone();
    flags.erased = true;
    let gone = store
        .erase_subject(&yinyom::model::Erasure {
            tenant: &t,
            id: "s1",
            uid: &s1.uid,
            pseudonym: "erased:s1",
            flags: &flags,
            receipts: Vec::new(),
            at: time::now(),
        })
        .await
        .unwrap();
    assert_eq!(gone.evidence, 2, "both of s1's entries let go of evidence");
    assert!(store.evidence(&t, &s1.uid).await.unwrap().is_empty());
    assert_eq!(
        count("SELECT COUNT(*) FROM evidence WHERE body LIKE '%typed_email%'").await,
        0,
        "evidence only s1 kept is deleted"
    );
    let left = store.evidence(&t, &s2.uid).await.unwrap();
    assert_eq!(left.len(), 2, "s2's identical evidence stays: {left:?}");
    assert!(left.values().all(|v| v["ip"] == "203.0.113.9"));
    assert_eq!(count("SELECT COUNT(*) FROM evidence").await, 1);
    assert_eq!(
        count("SELECT CAST(SUM(refs) AS BIGINT) FROM evidence").await,
        3
    );
    let r = store.verify_ledger(&t).await.unwrap();
    assert!(r.ok && r.checked == 5, "{r:?}");
    let r = store.verify_ledger_sequential(&t).await.unwrap();
    assert!(r.ok && r.checked == 5, "{r:?}");
}

/// Old events go once every consumer has them: not past the least cursor
/// (a live webhook's, a sink's), not one an undelivered delivery still
/// needs, not one recorded after the cutoff; a page at a time; the ledger
/// keeps every entry.
async fn old_events_are_forgotten_once_every_consumer_has_them(backend: Backend) {
    let db = Db::new(backend).await;
    let sql = db.open().await;
    let store: Arc<dyn Store> = sql.clone();
    let a = tenant(store.as_ref(), "A").await;
    for i in 0..10 {
        let req = request(&format!("s{i}"), Action::Grant, None);
        let item = prepare(store.as_ref(), &a, req).await;
        commit(store.as_ref(), &[item]).await;
    }
    settled(store.as_ref(), &a).await;
    let seqs: Vec<u64> = store
        .events_after(&a, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs.len(), 10);
    let later = time::now() + time::MICROS_PER_DAY;
    // Nothing consumes them yet: everything recorded before the cutoff goes,
    // nothing recorded after it.
    let none = store
        .prune_events(&a, 0, time::now() - time::MICROS_PER_DAY, 100)
        .await
        .unwrap();
    assert_eq!(none.deleted, 0);
    assert_eq!(store.events_pruned_upto(&a).await.unwrap(), 0);

    // A webhook has deliveries up to the 6th event, the 2nd still pending;
    // a sink has read up to the 8th.
    let hook = yinyom::model::Webhook {
        id: "wh1".into(),
        tenant: a.clone(),
        url: "https://example.com/hook".into(),
        events: vec![],
        purposes: vec![],
        description: String::new(),
        secret: "whsec_x".into(),
        cursor: seqs[5],
        created_at: time::now(),
    };
    store.insert_webhook(&hook).await.unwrap();
    sqlx::query(
        "INSERT INTO webhook_deliveries (tenant, webhook, seq, subject_uid, status, attempts,
             next_at, created_at, updated_at) VALUES ($1, 'wh1', $2, 'u', 'pending', 1, 0, 0, 0)",
    )
    .bind(&a)
    .bind(seqs[1] as i64)
    .execute(sql.pool())
    .await
    .unwrap();
    store.set_sink_cursor("nats", &a, seqs[7]).await.unwrap();

    // A page of two: the 1st goes, the 2nd (pending) stays; go on after it.
    let first = store.prune_events(&a, 0, later, 2).await.unwrap();
    assert_eq!(first.deleted, 1);
    assert_eq!(first.next, Some(seqs[1]));
    let rest = store.prune_events(&a, seqs[1], later, 100).await.unwrap();
    assert_eq!(rest.deleted, 4, "the 3rd to the 6th");
    assert_eq!(rest.next, None, "the 7th is past the webhook's cursor");
    let left: Vec<u64> = store
        .events_after(&a, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seq)
        .collect();
    assert_eq!(left, [&seqs[1..2], &seqs[6..]].concat());
    assert_eq!(store.events_pruned_upto(&a).await.unwrap(), seqs[5]);
    // The ledger keeps every entry.
    assert_eq!(store.ledger(&a).await.unwrap().len(), 10);
    // Again: nothing more until the consumers move on.
    assert_eq!(
        store.prune_events(&a, 0, later, 100).await.unwrap().deleted,
        0
    );
}

/// The console's daily counts of choices (kept as the batches are written,
/// per partition) are the ledger's entries counted per day, purpose,
/// channel and action: across batches, a batch large enough to be chained
/// beside the writer on SQLite, choices of other days (imports of history)
/// and purpose-wide choices.
async fn daily_choices_count_the_ledger(backend: Backend) {
    let (_db, store) = open(backend).await;
    let t = tenant(store.as_ref(), "T").await;
    let other = tenant(store.as_ref(), "Other").await;
    let view = app::load_view(store.as_ref()).await.expect("view");
    let days = [
        "2024-03-01T08:00:00Z",
        "2024-03-01T23:59:59Z",
        "2024-03-02T00:00:00Z",
        "2025-11-30T12:00:00Z",
    ];
    let actions = [Action::Grant, Action::Withdraw, Action::Deny];
    let item = |i: usize, tenant: &str| {
        let mut req = request(
            &format!("s{}", i % 700),
            actions[i % 3],
            Some(days[i % days.len()]),
        );
        if i.is_multiple_of(5) {
            req.actions[0].channel = None;
        }
        prepare_in(&view, tenant, req)
    };
    let big: Vec<WriteItem> = (0..2_100).map(|i| item(i, &t)).collect();
    commit(store.as_ref(), &big).await;
    for chunk in (2_100..2_400).collect::<Vec<_>>().chunks(37) {
        let batch: Vec<WriteItem> = chunk.iter().map(|&i| item(i, &t)).collect();
        commit(store.as_ref(), &batch).await;
    }
    commit(store.as_ref(), &[item(1, &other)]).await;
    commit(
        store.as_ref(),
        &[prepare_in(&view, &t, request("now", Action::Grant, None))],
    )
    .await;

    let mut want: std::collections::BTreeMap<(i64, String, Option<String>, String), i64> =
        Default::default();
    for (_, e) in store.ledger(&t).await.unwrap() {
        let b = &e.body;
        *want
            .entry((
                b.occurred_at / 86_400_000_000,
                b.purpose.clone(),
                b.channel.map(|c| c.as_str().to_string()),
                b.action.as_str().to_string(),
            ))
            .or_default() += 1;
    }
    let got: std::collections::BTreeMap<_, _> = store
        .daily_choices(&t, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|d| ((d.day, d.purpose, d.channel, d.action), d.count))
        .collect();
    assert_eq!(want.values().sum::<i64>(), 2_401);
    assert!(want.keys().any(|k| k.2.is_none()), "purpose-wide choices");
    assert_eq!(got, want);
    // From a day on: the days before it are left out, the day itself is in.
    let since = time::parse_rfc3339("2024-03-02T00:00:00Z").unwrap();
    let recent = store.daily_choices(&t, since).await.unwrap();
    assert_eq!(
        recent.iter().map(|d| d.count).sum::<i64>(),
        want.iter()
            .filter(|(k, _)| k.0 >= since / 86_400_000_000)
            .map(|(_, n)| n)
            .sum::<i64>()
    );
    assert!(recent.windows(2).all(|w| w[0].day <= w[1].day), "by day");
}

on_every_backend!(
    daily_choices_count_the_ledger,
    old_events_are_forgotten_once_every_consumer_has_them,
    outbox_events_page_by_cursor,
    evidence_is_stored_once_and_erasure_deletes_the_subjects_own,
    request_updates_are_compare_and_swap_and_erasure_is_one_transaction,
    chains_continue_across_batches_and_tenants_stay_apart,
    state_is_the_fold_of_history_even_for_late_imports,
    state_pages_keep_each_subject_whole,
    an_import_in_lanes_keeps_each_subjects_rows_in_order,
    idempotency_keys_replay_within_and_across_batches,
    many_subjects_in_one_batch,
    a_large_batch_is_written_as_one,
    client_text_with_quotes_and_backslashes_round_trips,
    a_subject_created_meanwhile_keeps_one_uid,
    partition_heads_follow_the_entries,
);

/// SQLite: the writer leaves checkpoints to a task beside it. After a
/// commit that fills the WAL, its pages reach the database file without
/// any other write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_is_checkpointed_beside_the_writer() {
    let db = Db::new(Backend::Sqlite).await;
    let store = db.open().await;
    let t = tenant(store.as_ref(), "T").await;
    let view = app::load_view(store.as_ref()).await.expect("view");
    let file = db.sqlite_dir().unwrap().join("yinyom.db");
    let size = || std::fs::metadata(&file).unwrap().len();
    let before = size();
    let batch: Vec<WriteItem> = (0..12_000)
        .map(|i| prepare_in(&view, &t, request(&format!("s{i}"), Action::Grant, None)))
        .collect();
    commit(store.as_ref(), &batch).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while size() < before + 4_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL was not checkpointed: {} → {} bytes",
            before,
            size()
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// SQLite: a WAL grown past its limit (one large import batch) is cut back
/// to it once SQLite starts it over, rather than keeping its largest size
/// on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_wal_file_is_cut_back_to_its_limit() {
    let db = Db::new(Backend::Sqlite).await;
    let store = db.open().await;
    let t = tenant(store.as_ref(), "T").await;
    let view = app::load_view(store.as_ref()).await.expect("view");
    let wal = db.sqlite_dir().unwrap().join("yinyom.db-wal");
    let size = || std::fs::metadata(&wal).map_or(0, |m| m.len());
    const LIMIT: u64 = 64 << 20;
    let batch: Vec<WriteItem> = (0..120_000)
        .map(|i| prepare_in(&view, &t, request(&format!("s{i}"), Action::Grant, None)))
        .collect();
    commit(store.as_ref(), &batch).await;
    let grown = size();
    assert!(grown > LIMIT, "the batch left only {grown} bytes of WAL");
    // Once the WAL has been copied to the database, a commit starts it over.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut i = 0;
    while size() > LIMIT {
        assert!(
            std::time::Instant::now() < deadline,
            "the WAL file stayed at {} bytes",
            size()
        );
        let more = prepare_in(&view, &t, request(&format!("more{i}"), Action::Grant, None));
        commit(store.as_ref(), &[more]).await;
        i += 1;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Every subject of the tenant with its current records, page by page.
async fn all_states(store: &dyn Store, tenant: &str) -> Vec<yinyom::store::SubjectSnapshot> {
    let mut out = Vec::new();
    let mut after = String::new();
    loop {
        let page = store.states_page(tenant, &after, 7).await.expect("page");
        let Some(last) = page.last() else {
            return out;
        };
        after = last.id.clone();
        out.extend(page);
    }
}

/// A SQLite database written before migration 0010 (which rebuilds
/// `consent_states` and `outbox` as WITHOUT ROWID tables) reads the same
/// and still verifies after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_to_without_rowid_tables_keeps_every_row() {
    upgrade_keeps_every_row(Backend::Sqlite, "0010").await;
}

/// A database of today's schema (migrations up to 0090) upgraded by
/// migration 0130 (hashes as bytes, evidence once per value, a slimmer
/// outbox): every chain verifies, and history, evidence, events and state
/// read exactly as before, on both databases.
/// Migration 0160 (SQLite: ledger, current state and outbox keyed by the
/// tenant's number, read through views): every chain verifies, and
/// history, evidence, events and state read exactly as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_to_tenant_numbers_keeps_every_row() {
    upgrade_keeps_every_row(Backend::Sqlite, "0160").await;
}

/// Migration 0170 (SQLite: ledger and current state keyed by the subject's
/// number): every chain verifies, and history, evidence, events and state
/// read exactly as before; a state row whose subject `subjects` lacks is
/// kept, under a subject of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_to_subject_numbers_keeps_every_row() {
    upgrade_keeps_every_row(Backend::Sqlite, "0170").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_to_compact_ledger_keeps_every_row() {
    upgrade_keeps_every_row(Backend::Sqlite, "0130").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_to_compact_ledger_keeps_every_row() {
    upgrade_keeps_every_row(Backend::Postgres, "0130").await;
}

/// Columns of `ledger` and `outbox` as they were stored before migration
/// 0130, computed from a current row `x` of schema `src` (hashes as hex
/// text, the evidence in the row, the outbox repeating the ledger).
fn old_form(
    backend: Backend,
    cutoff: &str,
    src: &str,
    table: &str,
    column: &str,
) -> Option<String> {
    if cutoff == "0170" {
        // Before 0170 the rows named their subject by uid, and purposes,
        // channels, actions and states by their text.
        return match (table, column) {
            ("ledger_rows" | "consent_state_rows", "subject_uid") => Some(format!(
                "(SELECT s.uid FROM {src}.subjects s WHERE s.no = x.subject_no)"
            )),
            ("ledger_rows", "purpose" | "channel" | "action")
            | ("consent_state_rows", "purpose" | "channel" | "state")
            | ("outbox_rows", "before_state" | "after_state") => Some(format!(
                "(SELECT t.term FROM {src}.terms t WHERE t.no = x.{column})"
            )),
            _ => None,
        };
    }
    if cutoff > "0130" {
        return None;
    }
    let hex = |c: &str| match backend {
        Backend::Sqlite => format!("CASE WHEN x.{c} IS NULL THEN NULL ELSE lower(hex(x.{c})) END"),
        Backend::Postgres => format!("encode(x.{c}, 'hex')"),
    };
    let of_entry = |c: &str| {
        format!("(SELECT l.{c} FROM {src}.ledger l WHERE l.tenant = x.tenant AND l.seq = x.seq)")
    };
    Some(match (table, column) {
        ("ledger", "hash" | "prev_hash" | "evidence_hash") => hex(column),
        ("ledger", "evidence") => format!(
            "(SELECT e.body FROM {src}.evidence e WHERE e.tenant = x.tenant
              AND e.part = x.part AND e.hash = x.evidence_hash AND x.evidence_kept = 1)"
        ),
        ("outbox", "subject_uid" | "purpose") => of_entry(column),
        ("outbox", "kind") => {
            let mut case = format!("CASE {}", of_entry("action"));
            for a in [
                Action::Grant,
                Action::Deny,
                Action::Withdraw,
                Action::Expire,
                Action::Restrict,
                Action::Object,
                Action::LiftRestriction,
                Action::LiftObjection,
                Action::Erase,
                Action::EraseSubject,
                Action::RequestReceived,
                Action::RequestCompleted,
            ] {
                case += &format!(" WHEN '{}' THEN '{}'", a.as_str(), yinyom::events::kind(a));
            }
            case + " END"
        }
        ("outbox", "created_at") => "0".into(),
        _ => return None,
    })
}

/// Where the rows of `table` in the old schema come from: the table
/// itself, or for `ledger_heads` (the single chain's head before 0140)
/// partition 0's head, or for `evidence` before 0150 one row per value.
fn old_source(src: &str, table: &str, cutoff: &str) -> String {
    match table {
        "ledger_heads" if cutoff <= "0140" => {
            format!(
                "(SELECT tenant, size AS seq, hash FROM {src}.ledger_partitions WHERE part = 0)"
            )
        }
        // Before 0150, once per tenant and value (not per partition).
        "evidence" if cutoff <= "0150" => format!(
            "(SELECT tenant, hash, MIN(body) AS body, SUM(refs) AS refs
              FROM {src}.evidence GROUP BY tenant, hash)"
        ),
        _ => format!("{src}.{table}"),
    }
}

/// A database migrated only up to (not including) migration `cutoff`,
/// filled with every row a current store wrote (in the form the old
/// schema stored them), is upgraded by opening it; it then verifies and
/// reads the same as the current store.
async fn upgrade_keeps_every_row(backend: Backend, cutoff: &str) {
    use sqlx::Row;
    // The source: a current store with history, late imports, two tenants,
    // evidence shared by several entries and evidence of one.
    let src_db = Db::new(backend).await;
    let src = src_db.open().await;
    let a = tenant(src.as_ref(), "A").await;
    let b = tenant(src.as_ref(), "B").await;
    // One partition each: the single chain ledgers were before migration
    // 0140 (dense `seq`, every entry linked to the one before).
    if cutoff <= "0140" {
        sqlx::query("UPDATE tenants SET partitions = 1")
            .execute(src.pool())
            .await
            .unwrap();
    }
    let mut own = prepare(src.as_ref(), &a, request("s3", Action::Grant, None)).await;
    own.evidence = Some(serde_json::json!({ "typed_email": "s3@example.com" }));
    let batch = vec![
        prepare(src.as_ref(), &a, request("s1", Action::Grant, None)).await,
        prepare(src.as_ref(), &b, request("s1", Action::Grant, None)).await,
        prepare(src.as_ref(), &a, request("s2", Action::Deny, None)).await,
        prepare(src.as_ref(), &a, request("s1", Action::Withdraw, None)).await,
        own,
    ];
    commit(src.as_ref(), &batch).await;
    let late = prepare(
        src.as_ref(),
        &a,
        request("s2", Action::Grant, Some("2020-01-01T00:00:00Z")),
    )
    .await;
    commit(src.as_ref(), &[late]).await;

    // The old schema: the migrations before `cutoff` only.
    let dir = tempfile::tempdir().unwrap();
    let old_migrations = dir.path().join("migrations");
    std::fs::create_dir(&old_migrations).unwrap();
    let kind = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let all = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("migrations")
        .join(kind);
    for f in std::fs::read_dir(&all).unwrap() {
        let f = f.unwrap();
        let name = f.file_name().into_string().unwrap();
        if name.as_str() < cutoff {
            std::fs::copy(f.path(), old_migrations.join(&name)).unwrap();
        }
    }
    let migrator = sqlx::migrate::Migrator::new(old_migrations.as_path())
        .await
        .unwrap();
    let old_db = Db::new(backend).await;
    // Copy every table the old schema has, the columns it has (later
    // migrations add some), in their old form.
    match backend {
        Backend::Sqlite => {
            let src_path = src_db.sqlite_dir().unwrap().join("yinyom.db");
            let old_path = old_db.sqlite_dir().unwrap().join("yinyom.db");
            src.pool().close().await;
            // One connection: ATTACH holds for the connection that ran it.
            let old = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect(&format!("sqlite://{}?mode=rwc", old_path.display()))
                .await
                .unwrap();
            migrator.run(&old).await.unwrap();
            sqlx::query(&format!("ATTACH DATABASE '{}' AS src", src_path.display()))
                .execute(&old)
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query(
                // (Views too: since 0160 `ledger`, `consent_states` and
                // `outbox` read what were tables.)
                "SELECT name FROM src.sqlite_master WHERE type IN ('table', 'view')
                 AND name NOT LIKE 'sqlite_%' AND name != '_sqlx_migrations'
                 AND name IN (SELECT name FROM main.sqlite_master WHERE type = 'table')",
            )
            .fetch_all(&old)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("name"))
            .collect();
            // (Since 0160 the ledger's rows are `ledger_rows`.)
            assert!(tables.iter().any(|t| t == "ledger" || t == "ledger_rows"));
            for t in &tables {
                let columns: Vec<String> = sqlx::query(&format!("PRAGMA main.table_info({t})"))
                    .fetch_all(&old)
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| r.get::<String, _>("name"))
                    .collect();
                let values: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        old_form(backend, cutoff, "src", t, c).unwrap_or_else(|| format!("x.{c}"))
                    })
                    .collect();
                // Rows the migrations wrote (store_meta) are the source's.
                sqlx::query(&format!("DELETE FROM main.{t}"))
                    .execute(&old)
                    .await
                    .unwrap();
                sqlx::query(&format!(
                    "INSERT INTO main.{t} ({}) SELECT {} FROM {} x",
                    columns.join(", "),
                    values.join(", "),
                    old_source("src", t, cutoff)
                ))
                .execute(&old)
                .await
                .unwrap();
            }
            if cutoff == "0170" {
                // A state row of a subject `subjects` does not have.
                sqlx::query(
                    "INSERT INTO consent_state_rows (tenant_no, subject_uid, purpose, channel,
                         state, seq, occurred_at, source)
                     SELECT no, 'lost-uid', 'p', '', 'granted', 1, 1, 'web'
                     FROM tenant_numbers LIMIT 1",
                )
                .execute(&old)
                .await
                .unwrap();
            }
            if cutoff == "0160" {
                // Rows of a tenant `tenants` does not name (these tables
                // never had a foreign key): numbered too, not left behind.
                for sql in [
                    "INSERT INTO consent_states (tenant, subject_uid, purpose, channel, state,
                         seq, occurred_at, source) VALUES ('gone', 'u', 'p', '', 'granted', 1, 1, 'web')",
                    "INSERT INTO outbox (tenant, seq, before_state, after_state)
                         VALUES ('gone', 1, 'unspecified', 'granted')",
                ] {
                    sqlx::query(sql).execute(&old).await.unwrap();
                }
            }
            old.close().await;
        }
        Backend::Postgres => {
            let (src_schema, old_schema) = (
                src_db.postgres_schema().unwrap().to_string(),
                old_db.postgres_schema().unwrap().to_string(),
            );
            let old = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(old_db.url())
                .await
                .unwrap();
            migrator.run(&old).await.unwrap();
            // Rows go in table by table, whatever the foreign keys say.
            sqlx::query("SET session_replication_role = replica")
                .execute(&old)
                .await
                .unwrap();
            let tables: Vec<String> = sqlx::query(
                "SELECT table_name::text AS name FROM information_schema.tables
                 WHERE table_schema = $1 AND table_name != '_sqlx_migrations'
                   AND table_name IN (SELECT table_name FROM information_schema.tables
                                      WHERE table_schema = $2)",
            )
            .bind(&old_schema)
            .bind(&src_schema)
            .fetch_all(&old)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get("name"))
            .collect();
            assert!(tables.iter().any(|t| t == "ledger"));
            for t in &tables {
                let columns: Vec<String> = sqlx::query(
                    "SELECT column_name::text AS name FROM information_schema.columns
                     WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                )
                .bind(&old_schema)
                .bind(t)
                .fetch_all(&old)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect();
                let values: Vec<String> = columns
                    .iter()
                    .map(|c| {
                        old_form(backend, cutoff, &src_schema, t, c)
                            .unwrap_or_else(|| format!("x.{c}"))
                    })
                    .collect();
                sqlx::query(&format!("DELETE FROM {old_schema}.{t}"))
                    .execute(&old)
                    .await
                    .unwrap();
                sqlx::query(&format!(
                    "INSERT INTO {old_schema}.{t} ({}) SELECT {} FROM {} x",
                    columns.join(", "),
                    values.join(", "),
                    old_source(&src_schema, t, cutoff)
                ))
                .execute(&old)
                .await
                .unwrap();
            }
            old.close().await;
        }
    }

    // Migrated by opening; reads and verifies as the source does.
    let src = src_db.open().await;
    let up = old_db.open().await;
    if backend == Backend::Sqlite && cutoff == "0170" {
        let id: String = sqlx::query_scalar(
            "SELECT s.id FROM consent_states c JOIN subjects s ON s.uid = c.subject_uid
             WHERE c.subject_uid = 'lost-uid'",
        )
        .fetch_one(up.pool())
        .await
        .expect("the state row of a subject missing from `subjects` was kept");
        assert_eq!(id, "lost-uid");
        // Gone again, so that the database compares with the source.
        for sql in [
            "DELETE FROM consent_state_rows
             WHERE subject_no = (SELECT no FROM subjects WHERE uid = 'lost-uid')",
            "DELETE FROM subjects WHERE uid = 'lost-uid'",
        ] {
            sqlx::query(sql).execute(up.pool()).await.unwrap();
        }
    }
    if backend == Backend::Sqlite && cutoff == "0160" {
        for (table, sql) in [
            (
                "consent_states",
                "DELETE FROM consent_state_rows WHERE tenant_no = (SELECT no FROM tenant_numbers WHERE id = 'gone')",
            ),
            (
                "outbox",
                "DELETE FROM outbox_rows WHERE tenant_no = (SELECT no FROM tenant_numbers WHERE id = 'gone')",
            ),
        ] {
            let n: i64 = sqlx::query_scalar(&format!(
                "SELECT COUNT(*) FROM {table} WHERE tenant = 'gone'"
            ))
            .fetch_one(up.pool())
            .await
            .unwrap();
            assert_eq!(
                n, 1,
                "{table}: the row of a tenant not in `tenants` was kept"
            );
            // Gone again, so that the database compares with the source.
            sqlx::query(sql).execute(up.pool()).await.unwrap();
        }
        // (Since 0170 its subject has a row too: see the case above.)
        sqlx::query("DELETE FROM subjects WHERE tenant = 'gone'")
            .execute(up.pool())
            .await
            .unwrap();
    }
    if cutoff == "0010" {
        let after: String =
            // (Since 0160 the table behind the `consent_states` view.)
            sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE name = 'consent_state_rows'")
                .fetch_one(up.pool())
                .await
                .unwrap();
        assert!(after.contains("WITHOUT ROWID"), "{after}");
    }
    let evidence = |pool: sqlx::AnyPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM evidence")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let kept = evidence(up.pool().clone()).await;
    assert_eq!(
        kept,
        evidence(src.pool().clone()).await,
        "one row per tenant, partition and distinct evidence"
    );
    if cutoff <= "0140" {
        assert_eq!(
            kept, 3,
            "one partition: one row per tenant and distinct evidence"
        );
    } else {
        // Once per partition of the entries keeping it. (Whether the
        // subjects sharing a value share a partition is up to their keyed
        // hash: 1 time in 64 they do.)
        let placed: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM (SELECT DISTINCT tenant, part, evidence_hash FROM ledger
             WHERE evidence_kept = 1) AS d",
        )
        .fetch_one(up.pool())
        .await
        .unwrap();
        assert_eq!(kept, placed, "one row per tenant, partition and evidence");
    }
    for t in [&a, &b] {
        let r = up.verify_ledger(t).await.unwrap();
        assert!(r.ok, "{r:?}");
        assert_eq!(r.checked, src.verify_ledger(t).await.unwrap().checked);
        let seq = up.verify_ledger_sequential(t).await.unwrap();
        assert!(seq.ok, "{seq:?}");
        let mut seen = Vec::new();
        for s in [&up, &src] {
            let e: Vec<_> = (s.as_ref() as &dyn Store)
                .events_after(t, 0, 100)
                .await
                .unwrap()
                .into_iter()
                .map(|e| (e.seq, e.subject_uid, e.kind, e.payload))
                .collect();
            seen.push(e);
        }
        let (got, want) = (seen.remove(0), seen.remove(0));
        assert!(!want.is_empty());
        assert_eq!(got, want);
        // History (every hash) and evidence, subject by subject.
        for id in ["s1", "s2", "s3"] {
            let Some(subject) = src.subject(t, id).await.unwrap() else {
                continue;
            };
            let (got, want) = (
                up.history(t, &subject.uid).await.unwrap(),
                src.history(t, &subject.uid).await.unwrap(),
            );
            assert!(!want.is_empty());
            assert_eq!(got, want);
            let (got, want) = (
                up.evidence(t, &subject.uid).await.unwrap(),
                src.evidence(t, &subject.uid).await.unwrap(),
            );
            assert_eq!(got.len(), want.len());
            assert!(!want.is_empty());
            assert_eq!(got, want);
        }
        assert_eq!(
            up.ledger(t).await.unwrap(),
            src.ledger(t).await.unwrap(),
            "every entry reads back the same"
        );
    }
    for t in [&a, &b] {
        let counts = |s: &Arc<dyn Store>| {
            let s = s.clone();
            let t = t.clone();
            async move {
                s.daily_choices(&t, 0)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|d| (d.day, d.purpose, d.channel, d.action, d.count))
                    .collect::<Vec<_>>()
            }
        };
        let want = counts(&(src.clone() as Arc<dyn Store>)).await;
        assert!(!want.is_empty());
        assert_eq!(
            counts(&(up.clone() as Arc<dyn Store>)).await,
            want,
            "the daily choices counted from the ledger by the upgrade"
        );
    }
    let states = |mut v: Vec<yinyom::store::SubjectSnapshot>| {
        v.sort_by(|x, y| (&x.tenant, &x.id).cmp(&(&y.tenant, &y.id)));
        v.into_iter()
            .map(|s| {
                let mut r: Vec<String> = s.records.iter().map(|r| format!("{r:?}")).collect();
                r.sort();
                (s.tenant, s.id, r)
            })
            .collect::<Vec<_>>()
    };
    let mut src_states = all_states(src.as_ref(), &a).await;
    src_states.extend(all_states(src.as_ref(), &b).await);
    let mut up_states = all_states(up.as_ref(), &a).await;
    up_states.extend(all_states(up.as_ref(), &b).await);
    let want = states(src_states);
    assert_eq!(want.len(), 4);
    assert_eq!(states(up_states), want);

    // The upgraded store keeps writing and chaining: the old chain goes on
    // as partition 0, new subjects land in the others.
    let mut more = Vec::new();
    for i in 4..40 {
        more.push(
            prepare(
                up.as_ref(),
                &a,
                request(&format!("s{i}"), Action::Grant, None),
            )
            .await,
        );
    }
    commit(up.as_ref(), &more).await;
    let r = up.verify_ledger(&a).await.unwrap();
    assert!(r.ok, "{r:?}");
    let parts = yinyom::store::Verifications::ledger_partitions(up.as_ref(), &a)
        .await
        .unwrap();
    assert!(parts.len() > 10, "{parts:?}");
    if cutoff <= "0140" {
        assert!(parts.iter().any(|h| h.partition == 0));
    }
}

/// A database of the single-chain schema (before 0140) upgraded to
/// partitioned chains: the chain becomes partition 0 and keeps verifying;
/// new writes spread over the partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_to_partitioned_chains_keeps_every_row() {
    upgrade_keeps_every_row(Backend::Sqlite, "0140").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_to_partitioned_chains_keeps_every_row() {
    upgrade_keeps_every_row(Backend::Postgres, "0140").await;
}

/// A database of before 0150 (evidence once per tenant and value, shared
/// across partitions) upgraded: each value is then kept once per
/// partition, its references counted there; everything reads and verifies
/// as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_upgrade_to_evidence_by_partition_keeps_every_row() {
    upgrade_keeps_every_row(Backend::Sqlite, "0150").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_upgrade_to_evidence_by_partition_keeps_every_row() {
    upgrade_keeps_every_row(Backend::Postgres, "0150").await;
}
