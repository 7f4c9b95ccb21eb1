//! The consent write path with group commit.
//!
//! Handlers hand validated [`WriteItem`]s to one writer task. While a
//! transaction is being fsync'd, new requests queue up; the writer then
//! commits all of them in the next transaction. One fsync thus acknowledges
//! many requests, which is how durable writes stay fast. After a commit the
//! writer folds the new entries into the [`View`] and only then answers, so
//! an acknowledged write is both on disk and visible to decisions.
//!
//! Where the database lets writers of different ledger partitions commit
//! side by side (PostgreSQL: each batch locks only the partitions it
//! appends to), several batches can be in flight at once
//! ([`crate::store::Ledger::write_lanes`], `serve --write-lanes`; one by
//! default); on SQLite one at a time.

use std::sync::Arc;

use tokio::sync::{Notify, Semaphore, mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::store::{ItemOutcome, Store, StoreError, WriteItem};
use crate::view::View;

/// Largest batch in one transaction: bounds latency of the first request
/// in a batch and the size of a transaction.
const MAX_BATCH: usize = 512;

/// How long a batch started beside one still committing waits for more
/// requests (bounded by that batch finishing).
const GATHER: std::time::Duration = std::time::Duration::from_millis(2);

struct Job {
    item: WriteItem,
    reply: oneshot::Sender<Result<ItemOutcome, StoreError>>,
}

#[derive(Clone)]
pub struct Writer {
    jobs: mpsc::Sender<Job>,
}

impl Writer {
    /// `changed` is bumped after every commit that wrote something.
    pub fn start(
        store: Arc<dyn Store>,
        view: Arc<View>,
        metrics: Arc<Metrics>,
        changed: watch::Sender<u64>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(store, view, metrics, changed, rx));
        Writer { jobs: tx }
    }

    /// Write one request durably; resolves once it is committed and visible.
    pub async fn write(&self, item: WriteItem) -> Result<ItemOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job { item, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }
}

async fn run(
    store: Arc<dyn Store>,
    view: Arc<View>,
    metrics: Arc<Metrics>,
    changed: watch::Sender<u64>,
    mut rx: mpsc::Receiver<Job>,
) {
    let lanes = store.write_lanes().max(1);
    let free = Arc::new(Semaphore::new(lanes));
    let finished = Arc::new(Notify::new());
    loop {
        // A lane first, then the requests: while every lane is busy, new
        // requests queue up and go together into the next batch.
        let Ok(lane) = free.clone().acquire_owned().await else {
            break;
        };
        let mut jobs = Vec::with_capacity(MAX_BATCH);
        if rx.recv_many(&mut jobs, MAX_BATCH).await == 0 {
            break;
        }
        // Beside a batch still committing, a second one is worth its own
        // transaction only with more than a few requests: gather them until
        // that batch finishes or for at most `GATHER`.
        if free.available_permits() + 1 < lanes && jobs.len() < MAX_BATCH {
            let wait = finished.notified();
            tokio::pin!(wait);
            wait.as_mut().enable();
            let _ = tokio::time::timeout(GATHER, wait).await;
            while jobs.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(job) => jobs.push(job),
                    Err(_) => break,
                }
            }
        }
        let batch = commit_batch(
            store.clone(),
            view.clone(),
            metrics.clone(),
            changed.clone(),
            jobs,
        );
        if lanes == 1 {
            batch.await;
            drop(lane);
        } else {
            let finished = finished.clone();
            tokio::spawn(async move {
                batch.await;
                drop(lane);
                finished.notify_waiters();
            });
        }
    }
    // Stopping: let the batches in flight finish and answer.
    let _ = free.acquire_many(lanes as u32).await;
}

/// Commit one batch, fold it into the view, answer its requests.
async fn commit_batch(
    store: Arc<dyn Store>,
    view: Arc<View>,
    metrics: Arc<Metrics>,
    changed: watch::Sender<u64>,
    mut jobs: Vec<Job>,
) {
    let items: Vec<WriteItem> = jobs.iter().map(|j| j.item.clone()).collect();
    let size = items.len();
    let started = std::time::Instant::now();
    // Each batch runs in a task of its own, so that a bug that panics
    // fails that batch (answered 503, nothing written) instead of
    // stopping every later write.
    let committing = tokio::spawn({
        let store = store.clone();
        async move {
            let seal = |item: &WriteItem, entries: &[_]| crate::receipts::response(item, entries);
            store.commit(&items, &seal).await
        }
    });
    let result = committing.await.unwrap_or_else(|e| {
        Err(StoreError::Unavailable(format!(
            "the write batch failed: {e}"
        )))
    });
    tracing::debug!(
        batch = size,
        elapsed_us = started.elapsed().as_micros() as u64,
        "committed"
    );
    metrics.write_batch(size);
    match result {
        Ok(outcomes) => {
            if outcomes
                .iter()
                .any(|o| matches!(o, ItemOutcome::Written { .. }))
            {
                changed.send_modify(|n| *n += 1);
            }
            // Batches in other lanes may fold in before or after this one:
            // the view keeps, per purpose, the greatest (occurred_at, seq),
            // so the order does not matter.
            for (job, outcome) in jobs.drain(..).zip(outcomes) {
                if let ItemOutcome::Written { entries, .. } = &outcome {
                    view.apply(&job.item.tenant, &job.item.subject_id, entries);
                    metrics.consent_events(entries);
                }
                let _ = job.reply.send(Ok(outcome));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, batch = size, "consent batch failed to commit");
            for job in jobs.drain(..) {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}
