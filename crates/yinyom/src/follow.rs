//! Keeping a node's in-memory view exact when other nodes write to the same
//! database (PostgreSQL).
//!
//! Every change is announced through the database (see [`Change`]); the
//! follower applies it: new ledger entries are read after the node's
//! cursor of each tenant's chain and folded into the view (folding is
//! idempotent, so the node's own entries, already applied by its writer,
//! do no harm), registries and subject flags are reloaded, cached API keys
//! dropped. Readers take entries below the store's horizon (on
//! PostgreSQL, the oldest transaction still running), so reading
//! `seq > cursor` never skips an entry; an announced entry not yet below
//! the horizon is read again shortly after. After an interruption of the feed
//! the follower catches up on everything; every few seconds, as a
//! backstop, on the chains and subject flags.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use yinyom_core::time::{self, Micros};

use crate::services::Services;
use crate::store::{Change, ChangeFeed, StoreError};

/// Entries read per query while catching up.
const PAGE: u32 = 5_000;
/// How often the follower catches up even without a notification.
const BACKSTOP: Duration = Duration::from_secs(5);

pub struct Follower {
    /// Weak: the follower must not keep a stopped app alive.
    svc: Weak<Services>,
    /// Per tenant: every entry up to this seq has been applied.
    cursors: HashMap<String, u64>,
    /// When subject flags were last reloaded in full.
    flags_since: Micros,
    /// Called when API keys changed on another node: whoever caches them
    /// (the HTTP layer) drops its cache.
    keys_changed: Box<dyn Fn() + Send + Sync>,
}

impl Follower {
    /// `cursors` must have been read before the view was loaded.
    pub fn new(
        svc: &Arc<Services>,
        cursors: HashMap<String, u64>,
        loaded_at: Micros,
        keys_changed: impl Fn() + Send + Sync + 'static,
    ) -> Follower {
        Follower {
            svc: Arc::downgrade(svc),
            cursors,
            flags_since: loaded_at,
            keys_changed: Box::new(keys_changed),
        }
    }

    /// Apply changes until the app stops.
    pub async fn run(mut self, mut feed: ChangeFeed) {
        let mut backstop = tokio::time::interval(BACKSTOP);
        // The first tick is immediate: entries committed between reading
        // the cursors and loading the view are caught up at once.
        loop {
            let first = tokio::select! {
                c = feed.recv() => match c {
                    Some(c) => c,
                    None => return,
                },
                _ = backstop.tick() => {
                    let Some(svc) = self.svc.upgrade() else {
                        return;
                    };
                    if let Err(e) = self.backstop(&svc).await {
                        tracing::warn!(error = %e, "change feed: catching up failed; will retry");
                    }
                    continue;
                }
            };
            // Under write load announcements arrive faster than they are
            // applied: take all that are waiting, each distinct one once.
            let mut changes = vec![first];
            while changes.len() < 1_000
                && let Ok(c) = feed.try_recv()
            {
                if !changes.contains(&c) {
                    changes.push(c);
                }
            }
            let Some(svc) = self.svc.upgrade() else {
                return;
            };
            for change in changes {
                if let Err(e) = self.apply(&svc, change).await {
                    tracing::warn!(error = %e, "change feed: could not apply a change; will resync");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = self.resync(&svc).await;
                    break;
                }
            }
        }
    }

    async fn apply(&mut self, svc: &Services, change: Change) -> Result<(), StoreError> {
        match change {
            Change::Ledger { tenant, upto } => {
                // Until the announced entries are below the horizon: a few
                // milliseconds unless a long transaction is running, when
                // the backstop takes over.
                let mut wait = Duration::from_millis(1);
                loop {
                    self.catch_up(svc, &tenant).await?;
                    if self.cursors.get(&tenant).copied().unwrap_or(0) >= upto
                        || wait > Duration::from_millis(500)
                    {
                        return Ok(());
                    }
                    tokio::time::sleep(wait).await;
                    wait *= 2;
                }
            }
            Change::Purposes { tenant } => reload_purposes(svc, &tenant).await,
            Change::Notices { tenant } => reload_notices(svc, &tenant).await,
            Change::Subject { tenant, id } => {
                match svc.store.subject(&tenant, &id).await? {
                    Some(row) if row.flags.erased => {
                        // Erased on another node: its records, now under
                        // the pseudonym (the id's were dropped, below).
                        svc.arm_pseudonyms(&tenant).await?;
                        let records = svc.store.subject_states(&tenant, &id).await?;
                        svc.view
                            .write(&tenant, |tv| tv.put_erased(&id, &id, row.flags, &records));
                    }
                    Some(row) => svc.view.set_flags(&tenant, &id, row.flags),
                    // Erased on another node: the id was replaced.
                    None => {
                        svc.view.write(&tenant, |tv| tv.forget(&id));
                    }
                }
                Ok(())
            }
            Change::Keys => {
                (self.keys_changed)();
                Ok(())
            }
            Change::Tenant { id } => reload_tenant(svc, &id).await,
            Change::Resync => self.resync(svc).await,
        }
    }

    /// Read the tenant's entries after the cursor and fold them in.
    async fn catch_up(&mut self, svc: &Services, tenant: &str) -> Result<(), StoreError> {
        svc.ensure_tenant(tenant).await?;
        loop {
            let cursor = self.cursors.get(tenant).copied().unwrap_or(0);
            let page = svc.store.ledger_after(tenant, cursor, PAGE).await?;
            let Some((_, last)) = page.last() else {
                return Ok(());
            };
            let last = last.seq;
            svc.view.write(tenant, |tv| {
                tv.apply_entries(&page);
                tv.watermark.advance(last);
            });
            self.cursors.insert(tenant.to_string(), last);
            svc.changed.send_modify(|n| *n += 1);
            if page.len() < PAGE as usize {
                return Ok(());
            }
        }
    }

    /// Catch up on everything after the feed was interrupted: tenants,
    /// registries, every chain, flags, keys.
    async fn resync(&mut self, svc: &Services) -> Result<(), StoreError> {
        for t in svc.store.tenants().await? {
            let id = t.id.clone();
            if svc.view.read(&id, |_| ()).is_some() {
                svc.view.add_tenant(t);
                reload_purposes(svc, &id).await?;
                reload_notices(svc, &id).await?;
            } else {
                let purposes = svc.store.purposes(&id).await?;
                let notices = svc.store.notices(&id).await?;
                svc.view.add_new_tenant(t, purposes, &notices);
            }
        }
        (self.keys_changed)();
        self.backstop(svc).await
    }

    /// The periodic safety net, cheap enough to run every few seconds:
    /// every known chain after its cursor, and the flags of subjects
    /// changed since the last run.
    async fn backstop(&mut self, svc: &Services) -> Result<(), StoreError> {
        let started = time::now();
        for (tenant, seq) in svc.store.heads().await? {
            if self.cursors.get(&tenant).copied().unwrap_or(0) < seq {
                self.catch_up(svc, &tenant).await?;
            }
        }
        // Clocks of nodes differ a little: look back a margin.
        let since = self.flags_since - 10_000_000;
        for (tenant, id, flags) in svc.store.subjects_changed_since(since).await? {
            svc.view.set_flags(&tenant, &id, flags);
        }
        self.flags_since = started;
        Ok(())
    }
}

async fn reload_purposes(svc: &Services, tenant: &str) -> Result<(), StoreError> {
    let purposes = svc.store.purposes(tenant).await?;
    svc.view.write(tenant, |tv| {
        for p in purposes {
            tv.put_purpose(p);
        }
    });
    Ok(())
}

async fn reload_notices(svc: &Services, tenant: &str) -> Result<(), StoreError> {
    let notices = svc.store.notices(tenant).await?;
    svc.view.write(tenant, |tv| {
        for n in &notices {
            tv.put_notice(n);
        }
    });
    Ok(())
}

async fn reload_tenant(svc: &Services, id: &str) -> Result<(), StoreError> {
    if svc.view.read(id, |_| ()).is_none() {
        return svc.ensure_tenant(id).await;
    }
    if let Some(t) = svc.store.tenants().await?.into_iter().find(|t| t.id == id) {
        svc.view.add_tenant(t);
    }
    Ok(())
}
