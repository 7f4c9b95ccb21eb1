//! The running service: store, in-memory view, writer, signer, metrics —
//! assembled once at start-up and shared by every handler.

use std::sync::Arc;

use yinyom_core::purpose::Lang;
use yinyom_core::time;

use crate::api::auth::{KeyCache, generate_key, hash_key};
use crate::collector::Collector;
use crate::dispatch::{DispatchConfig, Dispatcher};
use crate::follow::Follower;
use crate::metrics::Metrics;
use crate::model::{ApiKey, Dpo, Role, Tenant};
use crate::nats::Publisher;
use crate::receipts::Signer;
use crate::relay::{Links, Relay, RelayConfig};
use crate::store::{Store, StoreError};
use crate::vault::{MasterKey, Vault};
use crate::view::View;
use crate::writer::Writer;

pub use crate::services::{Services, arm_all_pseudonyms, arm_pseudonyms, load_into, load_view};

/// Settings of a running service beyond its store.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub webhooks: DispatchConfig,
    /// Publish consent events to this NATS server (JetStream).
    pub nats_url: Option<String>,
    /// The root of the encryption of personal data (see [`crate::vault`]);
    /// none: a random key for this process only (tests).
    pub master_key: Option<MasterKey>,
    pub relay: RelayConfig,
    /// Proxies whose `X-Forwarded-For` names the client (rate limits).
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Rate limits per client address, per minute (none: the defaults).
    pub auth_failures_per_minute: Option<u32>,
    pub public_per_minute: Option<u32>,
    /// Bounded mode: the most bytes of subjects the decision view holds.
    pub view_memory: Option<usize>,
    /// The view to load into (so that `/readyz` can show its progress
    /// before the service is up); none: a new one.
    pub view: Option<Arc<View>>,
    /// Where the decision view is saved (on shutdown and every few
    /// minutes) and loaded from at start; none: loaded from the store.
    pub snapshot: Option<std::path::PathBuf>,
    /// Connected systems: retries of failed attempts.
    pub systems: crate::systems::SystemsConfig,
}

/// The running service as the HTTP layer sees it: the [`Services`] (through
/// `Deref`: `app.store`, `app.view`, … and `&app` where a service wants
/// `&Services`) and what only HTTP needs.
pub struct App {
    /// Shared with the background tasks, which hold it weakly: they end
    /// when the app is dropped.
    pub services: Arc<Services>,
    /// API keys already checked (cleared when another node changes keys).
    pub keys: Arc<KeyCache>,
    /// Signs preference-center links (another key than `links`: a link of
    /// one kind is never a link of the other).
    pub preference_links: Links,
    /// Notice texts and sessions of the web surfaces.
    pub web: crate::web::WebState,
    /// Rate limits per client address.
    pub limits: crate::api::limit::Limits,
    /// Set when the server shuts down: long-lived responses (event
    /// streams) end so that graceful shutdown does not wait for them.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Where the decision view is saved.
    pub snapshot: Option<crate::view::SnapshotFile>,
}

impl std::ops::Deref for App {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.services
    }
}

impl App {
    /// Load the view from the store and start the writer; with a store
    /// that other nodes share, also follow their changes.
    pub async fn start(store: Arc<dyn Store>) -> Result<Arc<App>, StoreError> {
        App::start_with(store, Config::default()).await
    }

    pub async fn start_with(store: Arc<dyn Store>, config: Config) -> Result<Arc<App>, StoreError> {
        // Listen and note the chain heads before loading: nothing committed
        // after the load can be missed.
        let feed = store.follow().await?;
        let cursors = store.heads().await?;
        let loaded_at = time::now();
        let view = config
            .view
            .clone()
            .unwrap_or_else(|| Arc::new(View::new(config.view_memory)));
        let master_key = config.master_key.clone().unwrap_or_else(MasterKey::random);
        let snapshot = config
            .snapshot
            .as_ref()
            .map(|path| crate::view::SnapshotFile {
                path: path.clone(),
                key: master_key.clone(),
            });
        load_into(store.as_ref(), &view, snapshot.as_ref()).await?;
        let signer = Arc::new(Signer::load(store.as_ref(), &master_key).await?);
        let metrics = Arc::new(Metrics::default());
        let changed = tokio::sync::watch::Sender::new(0);
        let writer = Writer::start(
            store.clone(),
            view.clone(),
            metrics.clone(),
            changed.clone(),
        );
        let collector = Collector::start(store.clone(), config.nats_url.clone(), metrics.clone());
        let services = Arc::new(Services {
            store,
            view,
            writer,
            signer,
            metrics,
            vault: Vault::new(master_key.clone()),
            collector,
            links: Links::new(master_key.link_key()),
            public_url: config.relay.public_url.clone(),
            relay_wake: Arc::default(),
            changed,
            systems: crate::systems::Systems::new(config.systems.clone()),
        });
        let app = Arc::new(App {
            services,
            keys: Arc::default(),
            preference_links: Links::new(master_key.preference_link_key()),
            web: crate::web::WebState::default(),
            limits: crate::api::limit::Limits::new(
                config.trusted_proxies.clone(),
                config.auth_failures_per_minute,
                config.public_per_minute,
            ),
            closing: tokio::sync::watch::Sender::new(false),
            snapshot,
        });
        app.vault.check(app.store.as_ref()).await?;
        arm_all_pseudonyms(&app.view, &app.vault, app.store.as_ref()).await?;
        let sealed = crate::profiles::seal_clear_profiles(&app).await?;
        if sealed > 0 {
            tracing::info!(
                sealed,
                "encrypted profiles stored in clear by an earlier version"
            );
        }
        if let Some(feed) = feed {
            let keys = app.keys.clone();
            let follower = Follower::new(&app.services, cursors, loaded_at, move || keys.clear());
            tokio::spawn(follower.run(feed));
        }
        tokio::spawn(Dispatcher::new(&app.services, config.webhooks).run());
        tokio::spawn(crate::collector::expire(Arc::downgrade(&app.services)));
        tokio::spawn(crate::lifecycle::run(
            Arc::downgrade(&app.services),
            std::time::Duration::from_secs(60),
        ));
        tokio::spawn(Relay::new(&app.services, config.relay).run());
        tokio::spawn(crate::systems::run(Arc::downgrade(&app.services)));
        tokio::spawn(crate::systems::propagate::follow(Arc::downgrade(
            &app.services,
        )));
        if app.snapshot.is_some() {
            tokio::spawn(save_view_periodically(
                Arc::downgrade(&app),
                std::time::Duration::from_secs(300),
            ));
        }
        if let Some(url) = config.nats_url {
            tokio::spawn(Publisher::new(&app.services, url).run());
        }
        Ok(app)
    }
}

/// Save the view every `every` when it has changed since the last save.
async fn save_view_periodically(app: std::sync::Weak<App>, every: std::time::Duration) {
    let mut saved = None;
    loop {
        tokio::time::sleep(every).await;
        let Some(app) = app.upgrade() else { return };
        let marks = app.view.watermarks();
        if saved.as_ref() == Some(&marks) {
            continue;
        }
        if let Err(e) = app.save_view().await {
            tracing::warn!(error = %e, "could not save the decision view");
        } else {
            saved = Some(marks);
        }
    }
}

impl App {
    /// Save the decision view to its snapshot file (none configured: no-op).
    pub async fn save_view(&self) -> Result<(), String> {
        let Some(file) = &self.snapshot else {
            return Ok(());
        };
        let started = std::time::Instant::now();
        let subjects = self.view.save(self.store.as_ref(), file).await?;
        tracing::info!(
            subjects,
            seconds = started.elapsed().as_secs_f64(),
            "decision view saved"
        );
        Ok(())
    }
}

/// A new API key: the key itself (shown once) and its stored record.
pub fn new_api_key(
    tenant: &str,
    role: Role,
    label: &str,
    value: Option<String>,
) -> (String, ApiKey) {
    let key = value.unwrap_or_else(generate_key);
    let record = ApiKey {
        id: uuid::Uuid::now_v7().to_string(),
        tenant: tenant.to_string(),
        role,
        label: label.to_string(),
        hash: hash_key(&key),
        prefix: key.chars().take(10).collect(),
        created_at: time::now(),
        revoked_at: None,
    };
    (key, record)
}

/// Create a tenant with an owner key; returns the tenant and the key.
pub async fn create_tenant(
    store: &dyn Store,
    name: &str,
    owner_key: Option<String>,
) -> Result<(Tenant, String), StoreError> {
    let tenant = Tenant {
        id: uuid::Uuid::now_v7().to_string(),
        name: name.to_string(),
        dpo: Dpo::default(),
        jurisdictions: vec!["TH".into()],
        default_lang: Lang::Th,
        policy_url: None,
        pii_readers: Vec::new(),
        security_measures: vec![],
        banner: None,
        banner_design: None,
        reminders: None,
        partitions: yinyom_core::ledger::PARTITIONS,
        created_at: time::now(),
    };
    store.insert_tenant(&tenant).await?;
    let (key, record) = new_api_key(&tenant.id, Role::Owner, "owner (bootstrap)", owner_key);
    store.insert_api_key(&record).await?;
    Ok((tenant, key))
}

/// On an empty store, create the first tenant and its owner key. Returns
/// the key when one was created.
pub async fn bootstrap(
    store: &dyn Store,
    key: Option<String>,
) -> Result<Option<(Tenant, String)>, StoreError> {
    if !store.tenants().await?.is_empty() {
        return Ok(None);
    }
    create_tenant(store, "Default organisation", key)
        .await
        .map(Some)
}
