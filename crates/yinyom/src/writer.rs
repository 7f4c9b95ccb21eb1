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
//! appends to), a node has several writer lanes
//! ([`crate::store::Ledger::write_lanes`], `serve --write-lanes`; one by
//! default), each its own group-commit loop. A request goes to the lane of
//! its partition ([`crate::store::Ledger::lane_of`]), so the lanes' batches
//! append to disjoint partitions and never wait on each other's locks; a
//! subject's requests stay in one lane, in order. On SQLite one lane.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};

use crate::metrics::Metrics;
use crate::store::{ItemOutcome, Store, StoreError, WriteItem};
use crate::view::View;

/// Largest batch in one transaction: bounds latency of the first request
/// in a batch and the size of a transaction.
const MAX_BATCH: usize = 512;

struct Job {
    item: WriteItem,
    reply: oneshot::Sender<Result<ItemOutcome, StoreError>>,
}

#[derive(Clone)]
pub struct Writer {
    store: Arc<dyn Store>,
    lanes: Arc<[mpsc::Sender<Job>]>,
}

impl Writer {
    /// `changed` is bumped after every commit that wrote something.
    pub fn start(
        store: Arc<dyn Store>,
        view: Arc<View>,
        metrics: Arc<Metrics>,
        changed: watch::Sender<u64>,
    ) -> Writer {
        let lanes = (0..store.write_lanes().max(1))
            .map(|_| {
                let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
                tokio::spawn(run(
                    store.clone(),
                    view.clone(),
                    metrics.clone(),
                    changed.clone(),
                    rx,
                ));
                tx
            })
            .collect();
        Writer { store, lanes }
    }

    /// Write one request durably; resolves once it is committed and visible.
    pub async fn write(&self, item: WriteItem) -> Result<ItemOutcome, StoreError> {
        let n = self.lanes.len();
        let lane = if n == 1 {
            0
        } else {
            self.store.lane_of(&item, n).min(n - 1)
        };
        let (reply, answer) = oneshot::channel();
        self.lanes[lane]
            .send(Job { item, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?
    }
}

/// One lane: while its batch commits, new requests queue up and go
/// together into its next batch. Stops once every sender is gone and the
/// queue is drained.
async fn run(
    store: Arc<dyn Store>,
    view: Arc<View>,
    metrics: Arc<Metrics>,
    changed: watch::Sender<u64>,
    mut rx: mpsc::Receiver<Job>,
) {
    let mut jobs = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut jobs, MAX_BATCH).await > 0 {
        commit_batch(
            store.clone(),
            view.clone(),
            metrics.clone(),
            changed.clone(),
            std::mem::take(&mut jobs),
        )
        .await;
        jobs.reserve(MAX_BATCH);
    }
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
