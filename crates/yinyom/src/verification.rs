//! Ledger verification on every core, and as a job.
//!
//! [`verify`] cuts the ledger, up to the last `seq` stored when it started
//! (after reading the partitions' heads), into keyset pages of at most `chunk` rows (`after < seq <= upto`, the ends
//! found by counting rows, so gaps in `seq` are fine: no long query or
//! transaction) and reads up to `workers` pages at once, each on its own
//! connection and thread, which decodes and checks its rows as it reads
//! them ([`Checker`]: SHA-256 over the canonical JSON, independent per
//! entry; `store/sql/verifications.rs` holds the one row decoder). The
//! pages are handed over in `seq` order, and one [`Verifier`] links each
//! entry to the previous one of its partition, however many pages back,
//! and each partition's end to its recorded head ([`link`],
//! [`Verifier::link`], [`Verifier::finish_partitions`]), so the first
//! altered entry is named exactly as a one-by-one pass would. Entries
//! written after the heads were read are left for the next pass.
//!
//! A job ([`start`]) runs [`verify`] in the background and stores its
//! progress with a heartbeat every second in `verifications`, so any node
//! can answer for it and its result survives restarts. A job whose
//! heartbeat is older than [`STALE_AFTER`] belonged to a process that died:
//! the next reader marks it failed ([`Verifications::expire_verifications`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use yinyom_core::ledger::{Broken, EntryBody, EntryCheck, LedgerEntry, Verifier};
use yinyom_core::merkle;
use yinyom_core::time::{self, Micros};

use crate::store::{Result, Store, StoreError, VerificationRow, Verifications, VerifyReport};

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

/// Checks stored rows on their own, on the thread that reads them: the
/// store's reader decodes each row into [`Checker::entry`] (whose strings
/// keep their capacity from row to row, so a row costs no allocation to
/// decode) and hands over the evidence as stored; [`Checker::check`] then
/// recomputes the entry's hash ([`EntryCheck::of`]) and its Merkle leaf if
/// the checkpoint audit needs leaves at all. Evidence is kept
/// once per distinct value, so rows share it: its hash is remembered per
/// text rather than parsed and hashed again for every row.
pub struct Checker {
    leaves: bool,
    entry: LedgerEntry,
    /// Evidence texts seen lately and their hash (`None`: not JSON).
    evidence: Vec<(String, Option<String>)>,
    /// The slot the next new evidence text replaces.
    next_slot: usize,
}

/// Evidence texts a [`Checker`] remembers.
const EVIDENCE_SLOTS: usize = 16;

impl Checker {
    /// A checker of `tenant`'s rows; `leaves`: whether to compute each
    /// entry's Merkle leaf ([`crate::checkpoint::Audit::needs_leaves`]).
    pub fn new(tenant: &str, leaves: bool) -> Self {
        let entry = LedgerEntry {
            seq: 0,
            partition: 0,
            pseq: 0,
            body: EntryBody {
                tenant: tenant.to_string(),
                subject_uid: String::new(),
                purpose: String::new(),
                channel: None,
                action: yinyom_core::consent::Action::Grant,
                notice: None,
                source: String::new(),
                actor: String::new(),
                evidence_hash: None,
                occurred_at: 0,
                recorded_at: 0,
                expires_at: None,
                receipt: None,
                guardian: false,
            },
            prev_hash: String::new(),
            hash: String::new(),
        };
        Checker {
            leaves,
            entry,
            evidence: Vec::new(),
            next_slot: 0,
        }
    }

    /// The entry the reader decodes the next row into (every field is
    /// overwritten, its partition and position too; the tenant is set
    /// already).
    pub fn entry(&mut self) -> &mut LedgerEntry {
        &mut self.entry
    }

    /// The row `seq` as decoded into [`Checker::entry`] (or why it is not
    /// an entry), with its evidence as stored, checked on its own.
    pub fn check(
        &mut self,
        seq: u64,
        decoded: std::result::Result<Option<&str>, String>,
    ) -> std::result::Result<Checked, Broken> {
        let evidence = decoded.map_err(|problem| Broken { seq, problem })?;
        let evidence_ok = match evidence {
            None => true,
            Some(text) => self.evidence_matches(text).ok_or_else(|| Broken {
                seq,
                problem: "evidence is not valid JSON".into(),
            })?,
        };
        let mut check = EntryCheck::of(&self.entry, None);
        check.evidence_ok = evidence_ok;
        let leaf = if self.leaves {
            merkle::leaf_of_hex(&check.hash)
        } else {
            None
        };
        Ok(Checked { check, leaf })
    }

    /// Whether the evidence `text` hashes to the evidence hash the entry
    /// recorded (`None` if it is not JSON).
    fn evidence_matches(&mut self, text: &str) -> Option<bool> {
        let slot = match self.evidence.iter().position(|(t, _)| t == text) {
            Some(slot) => slot,
            None => {
                let hash = serde_json::from_str::<serde_json::Value>(text)
                    .ok()
                    .map(|v| yinyom_core::ledger::evidence_hash(&v));
                let seen = (text.to_string(), hash);
                if self.evidence.len() < EVIDENCE_SLOTS {
                    self.evidence.push(seen);
                    self.evidence.len() - 1
                } else {
                    let slot = self.next_slot;
                    self.next_slot = (slot + 1) % EVIDENCE_SLOTS;
                    self.evidence[slot] = seen;
                    slot
                }
            }
        };
        let hash = self.evidence[slot].1.as_deref()?;
        Some(self.entry.body.evidence_hash.as_deref() == Some(hash))
    }
}

/// An entry checked on its own, and its leaf in the checkpoints' tree.
pub struct Checked {
    pub check: EntryCheck,
    pub leaf: Option<merkle::Hash>,
}

/// A range of rows checked on their own, in `seq` order.
pub type Checks = Vec<std::result::Result<Checked, Broken>>;

fn broken(checked: u64, b: Broken) -> VerifyReport {
    VerifyReport {
        ok: false,
        checked,
        broken: Some(b),
    }
}

/// The pages a pass reads: `(after, upto]` ranges of at most `chunk` rows
/// up to `last`, found by counting rows (`seq` has gaps on PostgreSQL).
fn pages<'a, S: Verifications + ?Sized>(
    store: &'a S,
    tenant: &'a str,
    last: u64,
    chunk: u32,
) -> impl futures_util::Stream<Item = Result<(u64, u64)>> + 'a {
    futures_util::stream::try_unfold((0u64, last > 0), move |(after, more)| async move {
        if !more {
            return Ok(None);
        }
        let upto = match store.ledger_page_end(tenant, after, last, chunk).await? {
            Some(end) if end < last => end,
            _ => last,
        };
        Ok(Some(((after, upto), (upto, upto < last))))
    })
}

/// Link one page's checks, in `seq` order, each to the previous entry of
/// its partition (in this page or an earlier one: `verifier` carries every
/// partition's head from page to page), folding the leaves into the
/// checkpoint audit of their partition; the first broken link ends the
/// pass. Entries past their partition's head in `sizes` (written after the
/// heads were read) are left out.
fn link(
    verifier: &mut Verifier,
    audit: &mut crate::checkpoint::Audit,
    sizes: &HashMap<u32, u64>,
    checks: Checks,
) -> std::result::Result<(), (u64, Broken)> {
    for c in checks {
        if let Ok(c) = &c
            && c.check.pseq > sizes.get(&c.check.partition).copied().unwrap_or(0)
        {
            // Written after the heads were read (or behind the service's
            // back: `ledger_past_heads` finds those).
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
            Err(b) => return Err((checked, b)),
        }
    }
    Ok(())
}

/// Recompute `tenant`'s chain, pages read and checked in parallel and
/// linked in order, and audit its signed checkpoints from the same rows;
/// `progress` counts the entries verified so far.
pub async fn verify<S: Verifications + crate::store::Checkpoints + ?Sized>(
    store: &S,
    tenant: &str,
    opts: &Options,
    progress: &AtomicU64,
) -> Result<VerifyReport> {
    use futures_util::{StreamExt, TryStreamExt};
    // The partitions' heads, then the last seq: every entry up to those
    // heads has a seq up to it. Entries past a head (written since) are
    // left for the next verification.
    let heads = store.ledger_partitions(tenant).await?;
    let upto = store.ledger_last_seq(tenant).await?;
    let sizes: HashMap<u32, u64> = heads.iter().map(|h| (h.partition, h.chain.seq)).collect();
    let mut audit = crate::checkpoint::Audit::start(store, tenant).await?;
    let leaves = audit.needs_leaves();
    // Pages are read and checked on their own, several at once, but
    // handed over in `seq` order, so one verifier links every entry to
    // the previous one of its partition whichever page that was in.
    let mut verifier = Verifier::default();
    let mut checked_pages = std::pin::pin!(
        pages(store, tenant, upto, opts.chunk.max(1))
            .map_ok(|(after, to)| {
                store.check_ledger_range(tenant, after, to, Checker::new(tenant, leaves))
            })
            .try_buffered(opts.workers.max(1))
    );
    while let Some(checks) = checked_pages.next().await.transpose()? {
        let mut reach = BTreeMap::new();
        for c in checks.iter().flatten() {
            let at = reach.entry(c.check.partition).or_insert(0);
            *at = c.check.pseq.max(*at);
        }
        audit.prepare(store, tenant, &reach).await?;
        if let Err((checked, b)) = link(&mut verifier, &mut audit, &sizes, checks) {
            progress.store(checked, Ordering::Relaxed);
            return Ok(broken(checked, b));
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
