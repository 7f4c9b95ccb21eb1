//! Signed checkpoints and receipt proofs, on SQLite and PostgreSQL through
//! the real router: every receipt proves itself offline against the
//! published key set (the way an auditor or a data subject checks it), over
//! ledgers large enough that proofs use stored subtrees; a forged proof or
//! receipt is refused; and a ledger rewritten *and re-hashed* after a
//! checkpoint, which its own chain cannot show, is found by the audit.

#[macro_use]
mod common;

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};
use yinyom_core::proof::{ReceiptProof, verify_receipt};

use common::{Backend, TestApp};
use yinyom::store::Store as _;

const PURPOSES: [&str; 3] = ["marketing.email", "marketing.sms", "analytics"];

async fn setup(t: &TestApp) {
    for p in PURPOSES {
        t.post(
            "/v1/purposes",
            json!({ "key": p, "names": { "en": p }, "basis": "consent", "retention_days": 30 }),
        )
        .await;
    }
    t.post(
        "/v1/notices",
        json!({ "key": "main", "texts": { "en": { "title": "Offers", "body": "…" } },
                "purposes": PURPOSES }),
    )
    .await;
}

/// A grant of every purpose by `subject`: its receipt (id, jws).
async fn grant(t: &TestApp, subject: &str) -> (String, String) {
    let actions: Vec<Value> = PURPOSES
        .iter()
        .map(|p| json!({ "purpose": p, "action": "grant" }))
        .collect();
    let (s, _, body) = t
        .request(
            Method::POST,
            "/v1/consents",
            &t.owner,
            Some(json!({ "subject": subject, "source": "web",
                "notice": { "key": "main", "version": 1 }, "actions": actions })),
        )
        .await;
    assert!(s.is_success(), "{s} {body}");
    (
        body["receipt"]["id"].as_str().unwrap().to_string(),
        body["receipt"]["jws"].as_str().unwrap().to_string(),
    )
}

async fn proof_of(t: &TestApp, id: &str) -> Value {
    let (s, _, body) = t
        .request(
            Method::GET,
            &format!("/v1/receipts/{id}/proof"),
            &t.owner,
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{body}");
    body
}

fn check(
    receipt: &str,
    proof: &Value,
    jwks: &Value,
) -> Result<yinyom_core::proof::Verified, String> {
    let p: ReceiptProof = serde_json::from_value(proof.clone()).expect("a proof");
    verify_receipt(receipt, Some(&p), jwks)
}

async fn receipts_prove_themselves_against_signed_checkpoints(backend: Backend) {
    let t = TestApp::new(backend).await;
    setup(&t).await;
    let jwks = t.get("/.well-known/jwks.json").await;

    // Before any checkpoint, a proof makes one that covers the receipt.
    let (first_id, first_jws) = grant(&t, "cust-0").await;
    let p = proof_of(&t, &first_id).await;
    assert_eq!(p["receipt"], first_jws.as_str());
    assert_eq!(p["checkpoint"]["number"], 1, "{p}");
    assert_eq!(p["checkpoint"]["size"], 3, "{p}");
    let v = check(&first_jws, &p, &jwks).expect("the first receipt verifies");
    // The subject's partition, its first three entries there.
    let part = yinyom_core::ledger::partition_of(&t.tenant, "cust-0", 64);
    assert_eq!(v.positions, vec![(part, 0), (part, 1), (part, 2)]);
    assert_eq!(v.checkpoint, Some(1));
    // The receipt itself names that partition (signed before the write).
    assert_eq!(v.partition, Some(part));

    // Over a thousand entries: blocks of 256 are stored as subtrees.
    let mut receipts = vec![(first_id, first_jws)];
    for i in 1..400 {
        receipts.push(grant(&t, &format!("cust-{i}")).await);
    }
    // (The leader's minute job may have made it already: then it is 200.)
    let (s, _, cp) = t
        .request(Method::POST, "/v1/ledger/checkpoints", &t.owner, None)
        .await;
    assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{s} {cp}");
    let number = cp["number"].as_u64().unwrap();
    assert!(number >= 2, "{cp}");
    assert_eq!(cp["size"], 1200);
    // Spread over the partitions, which add up to it.
    let parts = cp["claims"]["partitions"].as_array().unwrap();
    assert!(parts.len() > 32, "{cp}");
    let total: u64 = parts.iter().map(|p| p["size"].as_u64().unwrap()).sum();
    assert_eq!(total, 1200);
    // Nothing new: the same checkpoint, 200.
    let (s, _, again) = t
        .request(Method::POST, "/v1/ledger/checkpoints", &t.owner, None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["number"], number);
    // The checkpoint's signature holds with the published keys.
    let claims = yinyom_core::receipt::verify_with_jwks(cp["jws"].as_str().unwrap(), &jwks)
        .expect("the checkpoint is signed");
    assert_eq!(claims, cp["claims"]);

    for (i, (id, jws)) in receipts.iter().enumerate().step_by(37) {
        let p = proof_of(&t, id).await;
        assert_eq!(p["checkpoint"]["number"], number, "{p}");
        let v = check(jws, &p, &jwks).unwrap_or_else(|e| panic!("receipt {i}: {e}"));
        assert_eq!(v.positions.len(), 3);
        let part = yinyom_core::ledger::partition_of(&t.tenant, &format!("cust-{i}"), 64);
        let first = v.positions[0].1;
        assert_eq!(
            v.positions,
            vec![(part, first), (part, first + 1), (part, first + 2)]
        );
        // ⌈log₂ 1200⌉ hashes at most.
        assert!(p["entries"][0]["path"].as_array().unwrap().len() <= 11);
    }

    // Forgeries are refused, each saying why.
    let (id, jws) = &receipts[300];
    let good = proof_of(&t, id).await;
    let mut p = good.clone();
    p["entries"][0]["entry"]["body"]["purpose"] = json!("analytics");
    assert!(
        check(jws, &p, &jwks)
            .unwrap_err()
            .contains("does not match its hash")
    );
    let mut p = good.clone();
    p["entries"][1]["path"][0] = json!(hex::encode([7u8; 32]));
    assert!(
        check(jws, &p, &jwks)
            .unwrap_err()
            .contains("not in checkpoint")
    );
    let mut p = good.clone();
    let moved = p["entries"][2]["leaf_index"].as_u64().unwrap() + 1;
    p["entries"][2]["leaf_index"] = json!(moved);
    assert!(check(jws, &p, &jwks).is_err());
    let (_, other_jws) = &receipts[301];
    assert!(check(other_jws, &good, &jwks).unwrap_err().contains("not"));
    // An entry moved to another partition (with a path that would fit
    // there) is not the partition the receipt names.
    let mut p = good.clone();
    let named = p["entries"][0]["partition"].as_u64().unwrap();
    // A partition the checkpoint has (most of the 64 hold entries by now).
    let elsewhere = parts
        .iter()
        .map(|x| x["partition"].as_u64().unwrap())
        .find(|x| *x != named)
        .unwrap();
    p["entries"][0]["partition"] = json!(elsewhere);
    p["entries"][0]["entry"]["partition"] = json!(elsewhere);
    assert!(
        check(jws, &p, &jwks)
            .unwrap_err()
            .contains("the receipt names partition")
    );
    let mut p = good.clone();
    p["entries"].as_array_mut().unwrap().truncate(2);
    assert!(
        check(jws, &p, &jwks)
            .unwrap_err()
            .contains("no proven entry grants")
    );
    let stranger = json!({"keys": [yinyom_core::receipt::ReceiptKey::from_secret([9; 32]).jwk()]});
    assert!(
        check(jws, &good, &stranger)
            .unwrap_err()
            .starts_with("receipt:")
    );

    // Listing and fetching by number.
    let list = t.get("/v1/ledger/checkpoints?limit=1").await;
    assert_eq!(list["latest"]["number"], number);
    assert_eq!(list["checkpoints"].as_array().unwrap().len(), 1);
    let cursor = list["next_cursor"].as_str().expect("a second page");
    let rest = t
        .get(&format!("/v1/ledger/checkpoints?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(rest["checkpoints"][0]["number"], number - 1);
    assert_eq!(t.get("/v1/ledger/checkpoints/1").await["size"], 3);
    let (s, _, body) = t
        .request(Method::GET, "/v1/ledger/checkpoints/99", &t.owner, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");
    let (s, _, body) = t
        .request(Method::GET, "/v1/receipts/nope/proof", &t.owner, None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{body}");

    // A withdrawal's receipt proves itself the same way.
    let (s, _, body) = t
        .request(
            Method::POST,
            "/v1/consents",
            &t.owner,
            Some(json!({ "subject": "cust-7", "source": "preference_center",
                "actions": [{ "purpose": "analytics", "action": "withdraw" }] })),
        )
        .await;
    assert!(s.is_success(), "{body}");
    let (wid, wjws) = (
        body["receipt"]["id"].as_str().unwrap(),
        body["receipt"]["jws"].as_str().unwrap(),
    );
    let p = proof_of(&t, wid).await;
    let v = check(wjws, &p, &jwks).expect("the withdrawal receipt verifies");
    assert_eq!(v.withdrawn, vec!["analytics".to_string()]);
    assert!(v.purposes.is_empty());
    let mut forged = p.clone();
    forged["entries"][0]["entry"]["body"]["action"] = json!("grant");
    assert!(check(wjws, &forged, &jwks).is_err());

    // Nothing was altered: the audit agrees with every checkpoint.
    assert_eq!(
        yinyom::checkpoint::audit(t.store.as_ref(), &t.tenant)
            .await
            .unwrap(),
        None
    );
    let report = t.store.verify_ledger(&t.tenant).await.unwrap();
    assert!(report.ok, "{report:?}");
}

/// Someone with write access to the database rewrites an entry and
/// re-hashes the chain after it, head included: the chain verifies, but
/// the checkpoint signed before does not, and the audit names the block.
async fn a_rewritten_and_rehashed_ledger_breaks_the_signed_checkpoint(backend: Backend) {
    use yinyom::store::{Ledger, Verifications};
    use yinyom_core::ledger::Chain;

    let t = TestApp::new(backend).await;
    setup(&t).await;
    for i in 0..200 {
        grant(&t, &format!("cust-{i}")).await;
    }
    let (s, _, _) = t
        .request(Method::POST, "/v1/ledger/checkpoints", &t.owner, None)
        .await;
    assert!(s == StatusCode::CREATED || s == StatusCode::OK);
    let first_covering = t.get("/v1/ledger/checkpoints?limit=1000").await["checkpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["size"].as_u64().unwrap() >= 400)
        .map(|c| c["number"].as_u64().unwrap())
        .min()
        .unwrap();

    // Rewrite entry 400 (a grant into a denial) and re-chain everything
    // after it in its partition, head included, as a forger without the
    // signing key would.
    let rows = t.store.ledger(&t.tenant).await.unwrap();
    let target = rows[399].1.clone();
    let part = target.partition;
    let ours: Vec<_> = rows
        .iter()
        .map(|(_, e)| e)
        .filter(|e| e.partition == part)
        .collect();
    let at = ours.iter().position(|e| e.seq == target.seq).unwrap();
    let mut chain = Chain {
        seq: target.pseq - 1,
        hash: target.prev_hash.clone(),
    };
    let other = t.db.open().await;
    for e in &ours[at..] {
        let mut body = e.body.clone();
        if e.seq == target.seq {
            body.action = yinyom_core::consent::Action::Deny;
        }
        let new = chain.append_at(part, e.seq, body);
        let sql = t.db.ledger_write(
            "UPDATE ledger SET action = $1, prev_hash = $2, hash = $3 WHERE tenant = $4 AND seq = $5",
        );
        sqlx::query(&sql)
            .bind(
                serde_json::to_value(new.body.action)
                    .unwrap()
                    .as_str()
                    .unwrap()
                    .to_string(),
            )
            .bind(hex::decode(&new.prev_hash).unwrap())
            .bind(hex::decode(&new.hash).unwrap())
            .bind(t.tenant.as_str())
            .bind(new.seq as i64)
            .execute(other.pool())
            .await
            .unwrap();
    }
    sqlx::query("UPDATE ledger_partitions SET hash = $1 WHERE tenant = $2 AND part = $3")
        .bind(chain.hash.as_str())
        .bind(t.tenant.as_str())
        .bind(i64::from(part))
        .execute(other.pool())
        .await
        .unwrap();
    other.pool().close().await;
    let heads = t.store.ledger_partitions(&t.tenant).await.unwrap();
    assert!(
        heads
            .iter()
            .any(|h| h.partition == part && h.chain == chain)
    );

    // The chain links again, but it no longer hashes to the signed
    // checkpoint: the audit finds it and names the entries…
    let m = yinyom::checkpoint::audit(t.store.as_ref(), &t.tenant)
        .await
        .unwrap()
        .expect("the audit finds the rewrite");
    let (number, problem) = (m.checkpoint, m.problem.clone());
    assert_eq!(number, first_covering);
    // …and so does verification (job, CLI and inline all run it).
    let report = t.store.verify_ledger(&t.tenant).await.unwrap();
    // The pass in small pages, the audit folded in as entries link across
    // them, names the same entry.
    let small = yinyom::verification::verify(
        t.store.as_ref(),
        &t.tenant,
        &yinyom::verification::Options {
            chunk: 7,
            workers: 2,
        },
        &std::sync::atomic::AtomicU64::new(0),
    )
    .await
    .unwrap();
    assert_eq!(small, report);
    assert!(!report.ok);
    assert_eq!(report.broken.as_ref().unwrap().problem, problem);
    assert!(report.broken.unwrap().seq <= target.seq);
    // The partition is named (its blocks of 256 are not complete yet: the
    // root is what differs).
    assert!(
        problem.contains(&format!("partition {part}:"))
            && problem.contains("no longer hash to the root"),
        "{problem}"
    );
}

/// The audit folded into verification lists the checkpoints when it
/// starts; one made while it runs (past the rows it was fed) is audited
/// too, from the rows it had not read: clean, and with an entry it covers
/// altered.
async fn the_audit_takes_in_checkpoints_made_while_it_runs(backend: Backend) {
    use yinyom::checkpoint::Audit;
    use yinyom::store::Ledger;

    let t = TestApp::new(backend).await;
    setup(&t).await;
    for i in 0..100 {
        grant(&t, &format!("cust-{i}")).await;
    }
    let (s, _, _) = t
        .request(Method::POST, "/v1/ledger/checkpoints", &t.owner, None)
        .await;
    assert!(s == StatusCode::CREATED || s == StatusCode::OK);
    let store = t.store.as_ref();
    let (mut clean, mut altered) = (
        Audit::start(store, &t.tenant).await.unwrap(),
        Audit::start(store, &t.tenant).await.unwrap(),
    );
    assert!(clean.needs_leaves());
    let covered = t.get("/v1/ledger/checkpoints?limit=1").await["checkpoints"][0]["size"]
        .as_u64()
        .unwrap();
    assert!(covered >= 300, "{covered}");
    let rows = t.store.ledger(&t.tenant).await.unwrap();
    let mut reach = std::collections::BTreeMap::new();
    for (_, e) in rows.iter().take(covered as usize) {
        reach.insert(e.partition, e.pseq);
    }
    for audit in [&mut clean, &mut altered] {
        audit.prepare(store, &t.tenant, &reach).await.unwrap();
        for (_, e) in rows.iter().take(covered as usize) {
            audit.push(
                e.partition,
                e.seq,
                yinyom_core::merkle::leaf_of_hex(&e.hash).unwrap(),
            );
        }
        assert!(!audit.needs_leaves(), "the listed checkpoints are met");
    }
    // More entries and a checkpoint over them, after both audits started.
    for i in 100..300 {
        grant(&t, &format!("cust-{i}")).await;
    }
    let (s, _, cp) = t
        .request(Method::POST, "/v1/ledger/checkpoints", &t.owner, None)
        .await;
    assert!(s == StatusCode::CREATED || s == StatusCode::OK, "{cp}");
    assert_eq!(clean.finish(store, &t.tenant).await.unwrap(), None);
    // Entry 700's stored hash changes.
    let rows = t.store.ledger(&t.tenant).await.unwrap();
    let target = rows[699].1.clone();
    let other = t.db.open().await;
    let sql =
        t.db.ledger_write("UPDATE ledger SET hash = $1 WHERE tenant = $2 AND seq = $3");
    sqlx::query(&sql)
        .bind(vec![0xab_u8; 32])
        .bind(t.tenant.as_str())
        .bind(target.seq as i64)
        .execute(other.pool())
        .await
        .unwrap();
    other.pool().close().await;
    let m = altered
        .finish(store, &t.tenant)
        .await
        .unwrap()
        .expect("the altered entry is found");
    // Named by its partition, from the first entry the second checkpoint
    // added there.
    assert!(
        m.seq <= target.seq && m.seq > rows[covered as usize - 1].1.seq,
        "{m:?}"
    );
    assert!(
        m.problem
            .contains(&format!("partition {}:", target.partition)),
        "{m:?}"
    );
}

on_every_backend!(
    receipts_prove_themselves_against_signed_checkpoints,
    a_rewritten_and_rehashed_ledger_breaks_the_signed_checkpoint,
    the_audit_takes_in_checkpoints_made_while_it_runs,
);
