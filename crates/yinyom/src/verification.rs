//! Ledger verification on every core, and as a job.
//!
//! [`verify`] reads the chain in keyset pages (`seq > last ORDER BY seq
//! LIMIT k`: no long query or transaction) up to the head recorded when it
//! started, through the database's native driver (`store/sql/verifications.rs`).
//! Each page is decoded and checked on a blocking thread ([`EntryCheck`]:
//! SHA-256 over the canonical JSON, independent per entry) while the next
//! page is read, with up to `workers` pages in flight; the links between
//! entries and the recorded head are checked in order ([`Verifier::link`]),
//! so the first altered entry is named exactly as a one-by-one pass would.
//!
//! A job ([`start`]) runs [`verify`] in the background and stores its
//! progress with a heartbeat every second in `verifications`, so any node
//! can answer for it and its result survives restarts. A job whose
//! heartbeat is older than [`STALE_AFTER`] belonged to a process that died:
//! the next reader marks it failed ([`Verifications::expire_verifications`]).

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use yinyom_core::ledger::{Broken, EntryCheck, Verifier};
use yinyom_core::merkle;
use yinyom_core::time::{self, Micros};

use crate::store::{
    LedgerRow, Result, Store, StoreError, VerificationRow, Verifications, VerifyReport,
};

/// Above this many entries `GET /v1/ledger/verify` refuses to verify inline
/// (it would take longer than an HTTP request should) and points at the
/// job API, `POST /v1/ledger/verifications`.
pub const INLINE_LIMIT: u64 = 1_000_000;
/// Rows per keyset page, and per unit of work for a checking thread.
pub const CHUNK: u32 = 4_096;
/// How often a running job stores its progress.
pub const HEARTBEAT: Duration = Duration::from_secs(1);
/// A running job without a heartbeat for this long is marked failed.
pub const STALE_AFTER: Micros = 30_000_000;
/// How many jobs `GET /v1/ledger/verifications` lists.
pub const RECENT: u32 = 50;

#[derive(Debug, Clone)]
pub struct Options {
    /// Rows per page.
    pub chunk: u32,
    /// Pages checked at once (threads).
    pub workers: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            chunk: CHUNK,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
        }
    }
}

/// One stored row checked on its own (on a checking thread), with its
/// Merkle leaf if the checkpoint audit needs leaves.
fn check(row: LedgerRow, leaves: bool) -> std::result::Result<Checked, Broken> {
    let seq = row.seq;
    let entry = row.entry.map_err(|problem| Broken { seq, problem })?;
    let evidence = row
        .evidence
        .map(|e| serde_json::from_str::<serde_json::Value>(&e))
        .transpose()
        .map_err(|_| Broken {
            seq,
            problem: "evidence is not valid JSON".into(),
        })?;
    let check = EntryCheck::of(&entry, evidence.as_ref());
    let leaf = if leaves {
        merkle::leaf_of_hex(&check.hash)
    } else {
        None
    };
    Ok(Checked { check, leaf })
}

/// An entry checked on its own, and its leaf in the checkpoints' tree.
struct Checked {
    check: EntryCheck,
    leaf: Option<merkle::Hash>,
}

fn broken(checked: u64, b: Broken) -> VerifyReport {
    VerifyReport {
        ok: false,
        checked,
        broken: Some(b),
    }
}

type Checks = Vec<std::result::Result<Checked, Broken>>;

/// Recompute `tenant`'s chain, pages checked in parallel and linked in
/// order, and audit its signed checkpoints from the same rows; `progress`
/// counts the entries verified so far.
pub async fn verify<S: Verifications + crate::store::Checkpoints + ?Sized>(
    store: &S,
    tenant: &str,
    opts: &Options,
    progress: &AtomicU64,
) -> Result<VerifyReport> {
    // The partitions' heads, then the last seq: every entry up to those
    // heads has a seq up to it. Entries past a head (written since) are
    // left for the next verification.
    let heads = store.ledger_partitions(tenant).await?;
    let upto = store.ledger_last_seq(tenant).await?;
    let sizes: std::collections::HashMap<u32, u64> =
        heads.iter().map(|h| (h.partition, h.chain.seq)).collect();
    let mut audit = crate::checkpoint::Audit::start(store, tenant).await?;
    let leaves = audit.needs_leaves();
    let chunk = opts.chunk.max(1);
    let workers = opts.workers.max(1);
    let mut verifier = Verifier::default();
    let mut inflight: VecDeque<tokio::task::JoinHandle<Checks>> = VecDeque::new();
    let mut after = 0;
    let mut more = upto > 0;
    loop {
        if more {
            let page = store.ledger_page(tenant, after, upto, chunk).await?;
            more = page.len() == chunk as usize && page.last_seq().is_some_and(|s| s < upto);
            if let Some(last) = page.last_seq() {
                after = last;
            }
            inflight.push_back(tokio::task::spawn_blocking(move || {
                page.rows()
                    .into_iter()
                    .map(|row| check(row, leaves))
                    .collect()
            }));
        }
        if more && inflight.len() <= workers {
            continue;
        }
        let Some(next) = inflight.pop_front() else {
            break;
        };
        let checks = next
            .await
            .map_err(|e| StoreError::Unavailable(format!("a checking thread failed: {e}")))?;
        let mut reach = std::collections::BTreeMap::new();
        for c in checks.iter().flatten() {
            let at = reach.entry(c.check.partition).or_insert(0);
            *at = c.check.pseq.max(*at);
        }
        audit.prepare(store, tenant, &reach).await?;
        for c in checks {
            if let Ok(c) = &c
                && c.check.pseq > sizes.get(&c.check.partition).copied().unwrap_or(0)
            {
                // Written after the heads were read (or behind the
                // service's back: `ledger_past_heads` finds those).
                continue;
            }
            let checked = verifier.checked();
            let linked = c.and_then(|c| {
                verifier
                    .link(&c.check)
                    .map(|()| (c.check.partition, c.check.seq, c.leaf))
            });
            match linked {
                Ok((part, seq, Some(leaf))) => audit.push(part, seq, leaf),
                Ok(_) => {}
                Err(b) => {
                    progress.store(checked, Ordering::Relaxed);
                    return Ok(broken(checked, b));
                }
            }
        }
        progress.store(verifier.checked(), Ordering::Relaxed);
    }
    let checked = verifier.checked();
    if let Err(b) = verifier.finish_partitions(&heads) {
        return Ok(broken(checked, b));
    }
    // Entries stored past their partition's recorded head (written behind
    // the service's back); a live ledger moves each head with its rows.
    if let Some(seq) = store.ledger_past_heads(tenant).await? {
        return Ok(broken(
            checked,
            Broken {
                seq,
                problem: format!("entry {seq} lies beyond its partition's recorded head"),
            },
        ));
    }
    // The chain links; does it still hash to what the checkpoints signed?
    // (A chain rewritten and re-hashed from some entry on links again.)
    // The leaves were folded as the entries linked; checkpoints made
    // since the start read the entries past the head.
    if let Some(m) = audit.finish(store, tenant).await? {
        return Ok(broken(m.seq.saturating_sub(1), m.into()));
    }
    Ok(VerifyReport {
        ok: true,
        checked,
        broken: None,
    })
}

/// Start verifying `tenant`'s ledger in the background. Returns the job and
/// whether it was started now: if one is already running for the tenant,
/// that one is returned instead of starting a second scan.
pub async fn start(
    store: Arc<dyn Store>,
    tenant: &str,
    actor: &str,
) -> Result<(VerificationRow, bool)> {
    let now = time::now();
    store.expire_verifications(now - STALE_AFTER, now).await?;
    let row = VerificationRow {
        tenant: tenant.to_string(),
        id: format!("ver_{}", uuid::Uuid::now_v7().simple()),
        status: "running".into(),
        total: store.ledger_size(tenant).await?,
        checked: 0,
        ok: None,
        broken: None,
        error: None,
        started_by: actor.to_string(),
        started_at: now,
        heartbeat_at: now,
        finished_at: None,
    };
    match store.insert_verification(&row).await {
        Ok(()) => {}
        Err(StoreError::Conflict) => {
            let running = store
                .verifications(tenant, RECENT)
                .await?
                .into_iter()
                .find(|v| v.status == "running");
            // It finished between the insert and the read: ask again.
            return running.map(|v| (v, false)).ok_or(StoreError::Conflict);
        }
        Err(e) => return Err(e),
    }
    tokio::spawn(run(store, row.clone()));
    Ok((row, true))
}

/// Run a job to its end, storing progress every [`HEARTBEAT`].
async fn run(store: Arc<dyn Store>, mut row: VerificationRow) {
    let progress = Arc::new(AtomicU64::new(0));
    let mut work = tokio::spawn({
        let (store, tenant, progress) = (store.clone(), row.tenant.clone(), progress.clone());
        async move { verify(store.as_ref(), &tenant, &Options::default(), &progress).await }
    });
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let outcome = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = tick.tick() => {
                let checked = progress.load(Ordering::Relaxed);
                match store.progress_verification(&row.tenant, &row.id, checked, time::now()).await {
                    Ok(true) => {}
                    // Marked failed meanwhile (it looked dead): stop.
                    Ok(false) => {
                        work.abort();
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, id = %row.id, "verification progress not stored"),
                }
            }
        }
    };
    let now = time::now();
    row.heartbeat_at = now;
    row.finished_at = Some(now);
    match outcome {
        Ok(Ok(report)) => {
            row.status = "done".into();
            row.checked = report.checked;
            row.ok = Some(report.ok);
            row.broken = report.broken;
        }
        Ok(Err(e)) => {
            row.status = "failed".into();
            row.checked = progress.load(Ordering::Relaxed);
            row.error = Some(e.to_string());
        }
        Err(e) => {
            row.status = "failed".into();
            row.checked = progress.load(Ordering::Relaxed);
            row.error = Some(format!("the verification stopped: {e}"));
        }
    }
    for attempt in 1..=5u64 {
        match store.finish_verification(&row).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, id = %row.id, attempt, "verification result not stored");
                tokio::time::sleep(Duration::from_secs(attempt)).await;
            }
        }
    }
}

/// A job as readers see it, with stale jobs marked failed first.
pub async fn get(store: &dyn Store, tenant: &str, id: &str) -> Result<Option<VerificationRow>> {
    let now = time::now();
    store.expire_verifications(now - STALE_AFTER, now).await?;
    store.verification(tenant, id).await
}

/// The tenant's recent jobs, newest first, with stale jobs marked failed.
pub async fn recent(store: &dyn Store, tenant: &str) -> Result<Vec<VerificationRow>> {
    let now = time::now();
    store.expire_verifications(now - STALE_AFTER, now).await?;
    store.verifications(tenant, RECENT).await
}

/// Entries per second so far (running) or over the whole job.
pub fn rate(v: &VerificationRow, now: Micros) -> f64 {
    let end = v.finished_at.unwrap_or(now);
    let seconds = (end - v.started_at) as f64 / 1e6;
    if seconds > 0.0 {
        v.checked as f64 / seconds
    } else {
        0.0
    }
}
