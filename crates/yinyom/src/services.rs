//! What the services below the HTTP layer share: the store, the decision
//! view, the writer, the signer, the vault and the background tasks'
//! wake-ups.
//!
//! The layering (see ARCHITECTURE.md): `api/` and `web/` (HTTP) hold an
//! `App` (`app.rs`), which composes a [`Services`] with what only HTTP
//! needs (API-key cache, rate limits, web sessions); the services
//! (`rights`, `relay`, `collector`, `systems`, …) take a `&Services` or the
//! narrower pieces they need, and never name `App`; below them the store,
//! the view and `yinyom-core`. `tests/layers.rs` keeps it that way.

use std::sync::Arc;

use crate::collector::Collector;
use crate::metrics::Metrics;
use crate::receipts::Signer;
use crate::relay::Links;
use crate::store::{Store, StoreError};
use crate::vault::Vault;
use crate::view::View;
use crate::writer::Writer;

/// The pieces every service may use, built once by `App::start_with`.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub view: Arc<View>,
    pub writer: Writer,
    pub signer: Arc<Signer>,
    pub metrics: Arc<Metrics>,
    pub vault: Vault,
    pub collector: Collector,
    /// Signs unsubscribe and confirmation links.
    pub links: Links,
    /// Where recipients reach this server (links in messages).
    pub public_url: String,
    /// Wakes the relay when messages are queued.
    pub relay_wake: Arc<tokio::sync::Notify>,
    /// Bumped whenever new consent events are visible on this node (its own
    /// writes, or other nodes' once followed): wakes event streams and
    /// dispatchers.
    pub changed: tokio::sync::watch::Sender<u64>,
    /// Connected systems: connection pools, the task's wake-up.
    pub systems: crate::systems::Systems,
}

impl Services {
    /// The id a subject is stored under: the one given, or once the subject
    /// was erased the pseudonym that replaced it.
    pub fn resolve(&self, tenant: &str, id: &str) -> String {
        self.view
            .read(tenant, |tv| tv.resolve(id).into_owned())
            .unwrap_or_else(|| id.to_string())
    }

    /// Let the view find erased subjects by the ids they had (it then
    /// holds the tenant's keys).
    pub async fn arm_pseudonyms(&self, tenant: &str) -> Result<(), StoreError> {
        arm_pseudonyms(&self.view, &self.vault, self.store.as_ref(), tenant).await
    }

    /// A tenant created by another process (`yinyom tenants create` beside
    /// a running server) joins the view when its key is first used.
    pub async fn ensure_tenant(&self, id: &str) -> Result<(), StoreError> {
        if self.view.read(id, |_| ()).is_some() {
            return Ok(());
        }
        let Some(tenant) = self.store.tenants().await?.into_iter().find(|t| t.id == id) else {
            return Ok(());
        };
        let purposes = self.store.purposes(id).await?;
        let notices = self.store.notices(id).await?;
        self.view.add_new_tenant(tenant, purposes, &notices);
        Ok(())
    }
}

/// Give the tenant's view its keys when it has erased subjects (see
/// [`crate::view::TenantView::resolve`]).
pub async fn arm_pseudonyms(
    view: &View,
    vault: &Vault,
    store: &dyn Store,
    tenant: &str,
) -> Result<(), StoreError> {
    if view
        .read(tenant, |tv| tv.pseudonyms_armed())
        .unwrap_or(true)
    {
        return Ok(());
    }
    let keys = vault.tenant(store, tenant).await?;
    view.write(tenant, |tv| tv.arm_pseudonyms(keys));
    Ok(())
}

/// Arm every tenant of `view` that has erased subjects.
pub async fn arm_all_pseudonyms(
    view: &View,
    vault: &Vault,
    store: &dyn Store,
) -> Result<(), StoreError> {
    for t in store.tenants().await? {
        if view.read(&t.id, |tv| tv.has_erased()).unwrap_or(false) {
            arm_pseudonyms(view, vault, store, &t.id).await?;
        }
    }
    Ok(())
}

/// A view holding every subject (no memory bound), loaded from the store.
pub async fn load_view(store: &dyn Store) -> Result<View, StoreError> {
    let view = View::new(None);
    load_into(store, &view, None).await?;
    Ok(view)
}

/// Load the store's current state into `view` (see [`View::load`]).
pub async fn load_into(
    store: &dyn Store,
    view: &View,
    snapshot: Option<&crate::view::SnapshotFile>,
) -> Result<(), StoreError> {
    let mut tenants = Vec::new();
    for t in store.tenants().await? {
        let purposes = store.purposes(&t.id).await?;
        let notices = store.notices(&t.id).await?;
        tenants.push((t, purposes, notices));
    }
    view.load(store, tenants, snapshot).await
}
