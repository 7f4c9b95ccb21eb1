//! `yinyom bench --only checkpoints`: what signed checkpoints cost on a
//! ledger of `--verify-entries` entries (SQLite): the first checkpoint
//! (the whole tree), an incremental one after 10,000 more entries, an
//! entry's inclusion proof (time, path length, bytes of JSON), checking
//! one offline (entry hash, audit path, checkpoint signature), and the
//! audit of every checkpoint against the rows.

use std::sync::Arc;
use std::time::Instant;

use yinyom_core::consent::Action;
use yinyom_core::purpose::Channel;
use yinyom_core::time;

use crate::app;
use crate::checkpoint;
use crate::receipts::Signer;
use crate::store::{PreparedAction, SqlStore, Store, WriteItem};
use crate::vault::MasterKey;

type Error = Box<dyn std::error::Error>;

/// Append `entries` entries (one per item, 1,000 items per transaction).
async fn append(store: &dyn Store, tenant: &str, from: usize, entries: usize) -> Result<(), Error> {
    let now = time::now();
    let mut i = from;
    while i < from + entries {
        let end = (i + 1_000).min(from + entries);
        let batch: Vec<WriteItem> = (i..end)
            .map(|k| WriteItem {
                tenant: tenant.to_string(),
                subject_id: format!("cust-{}", k / 5),
                actor: "bench".into(),
                source: "web".into(),
                notice: None,
                evidence: None,
                occurred_at: now - k as i64,
                actions: vec![PreparedAction {
                    purpose: format!("purpose.{}", k % 5),
                    channel: Some(Channel::Email),
                    action: if k % 3 == 0 {
                        Action::Withdraw
                    } else {
                        Action::Grant
                    },
                    expires_at: None,
                }],
                idempotency: None,
                receipt: None,
                guardian: false,
            })
            .collect();
        let seal = |_: &WriteItem, _: &[_]| serde_json::Value::Null;
        store.commit(&batch, &seal).await?;
        i = end;
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0.0)
}

pub async fn run(entries: usize, dir: &std::path::Path) -> Result<(), Error> {
    let dir = dir.join("checkpoints");
    std::fs::create_dir_all(&dir)?;
    let store: Arc<dyn Store> = Arc::new(SqlStore::sqlite(&dir.join("yinyom.db")).await?);
    let (tenant, _) = app::bootstrap(store.as_ref(), None)
        .await?
        .ok_or("store not empty")?;
    let tenant = tenant.id;
    let signer = Signer::load(store.as_ref(), &MasterKey::random()).await?;
    append(store.as_ref(), &tenant, 0, entries).await?;

    let t = Instant::now();
    let first = checkpoint::make(store.as_ref(), &signer, &tenant)
        .await?
        .row;
    let first_secs = t.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>10.0}/s  {} entries in {first_secs:.2} s (the whole tree, subtrees stored)",
        "checkpoint: first",
        first.size as f64 / first_secs,
        first.size
    );
    let more = 10_000;
    append(store.as_ref(), &tenant, entries, more).await?;
    let t = Instant::now();
    let second = checkpoint::make(store.as_ref(), &signer, &tenant)
        .await?
        .row;
    println!(
        "{:<34} {:>10.1} ms  +{more} entries (checkpoint {} of {} entries)",
        "checkpoint: incremental",
        t.elapsed().as_secs_f64() * 1e3,
        second.number,
        second.size
    );

    // Proofs of entries spread over the ledger.
    let n = second.size;
    let samples = 500u64;
    let mut times = Vec::new();
    let mut verify_times = Vec::new();
    let mut bytes = Vec::new();
    let mut path_len = 0;
    let jwks = signer.jwks();
    for k in 0..samples {
        let seq = 1 + (k * 7_919 * 104_729) % n;
        let entry = store
            .ledger_after(&tenant, seq - 1, 1)
            .await?
            .pop()
            .ok_or("entry missing")?
            .1;
        let t = Instant::now();
        let proof = checkpoint::entry_proof(store.as_ref(), &tenant, entry, &second).await?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
        path_len = path_len.max(proof.path.len());
        let json = serde_json::to_vec(&proof)?;
        bytes.push(json.len() as f64 + second.jws.len() as f64);
        // What a verifier does for it offline.
        let t = Instant::now();
        let claims: yinyom_core::proof::CheckpointClaims =
            serde_json::from_value(yinyom_core::receipt::verify_with_jwks(&second.jws, &jwks)?)?;
        let part = claims
            .partitions
            .iter()
            .find(|p| p.partition == proof.partition)
            .ok_or("the checkpoint lacks the entry's partition")?;
        let ok = yinyom_core::ledger::hash_entry(
            proof.entry.seq,
            &proof.entry.prev_hash,
            &proof.entry.body,
        ) == proof.entry.hash
            && yinyom_core::merkle::verify_inclusion(
                proof.leaf_index,
                part.size,
                &yinyom_core::merkle::leaf_of_hex(&proof.entry.hash).ok_or("hash")?,
                &proof
                    .path
                    .iter()
                    .map(|h| yinyom_core::merkle::hash_from_hex(h).ok_or("path"))
                    .collect::<Result<Vec<_>, _>>()?,
                &yinyom_core::merkle::hash_from_hex(&part.root).ok_or("root")?,
            );
        verify_times.push(t.elapsed().as_secs_f64() * 1e6);
        if !ok {
            return Err(format!("the proof of entry {seq} does not verify").into());
        }
    }
    for v in [&mut times, &mut verify_times, &mut bytes] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "{:<34} p50 {:>7.0} µs  p99 {:>7.0} µs  ({samples} entries, path ≤ {path_len} hashes)",
        "proof: make (server)",
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    println!(
        "{:<34} p50 {:>7.0} B   max {:>7.0} B   (entry, path and signed checkpoint, JSON)",
        "proof: size",
        percentile(&bytes, 0.5),
        bytes.last().copied().unwrap_or(0.0)
    );
    println!(
        "{:<34} p50 {:>7.0} µs  p99 {:>7.0} µs  (signature, entry hash, audit path)",
        "proof: verify offline",
        percentile(&verify_times, 0.5),
        percentile(&verify_times, 0.99)
    );
    let t = Instant::now();
    let audit = checkpoint::audit(store.as_ref(), &tenant).await?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "{:<34} {:>10.0}/s  {n} entries, 2 checkpoints in {secs:.2} s, mismatch: {}",
        "checkpoint: audit (every root)",
        n as f64 / secs,
        audit.map_or("none".to_string(), |m| m.problem)
    );
    Ok(())
}
