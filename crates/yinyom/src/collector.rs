//! The consent-gated tracking collector.
//!
//! Sources (a website, an app) send Segment-spec messages with a write key.
//! Each message's subject is resolved (its `userId`, or the person its
//! `anonymousId` was linked to, or the anonymous visitor itself) and every
//! purpose of the source is asked: only if all allow is the event kept.
//! Denied events are counted and dropped before anything is written.
//! Allowed events are stored in batches (one transaction for many
//! requests, like the consent writer) before the request is answered.
//!
//! `identify` and `alias` link an anonymous id to a known subject, and the
//! consent the anonymous visitor gave (the cookie banner) follows the
//! person: each anonymous choice newer than the person's own is written to
//! the person's ledger, with the anonymous entry as evidence.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use yinyom_core::decision::Reason;
use yinyom_core::notice::NoticeRef;
use yinyom_core::purpose::Channel;
use yinyom_core::time::{MICROS_PER_DAY, Micros};

use crate::model::{Source, SourceCounts, TrackedEvent};
use crate::nats::Forwarder;
use crate::profiles::{self, ANONYMOUS_ID, ProfileError};
use crate::services::Services;
use crate::store::{PreparedAction, Store, StoreError, WriteItem};
use crate::view::View;

/// Messages in one `batch` call (Segment allows 500 KB, at most 32 KB each).
pub const MAX_MESSAGES: usize = 2_500;
const JOBS_PER_BATCH: usize = 64;
const SOURCE_TTL: Duration = Duration::from_secs(10);
const ALIAS_TTL: Duration = Duration::from_secs(60);
const UNLINKED_TTL: Duration = Duration::from_secs(5);
const MAX_ALIASES: usize = 1_000_000;

/// Write keys → sources, refreshed every few seconds (sources made or
/// deleted on another node are seen within [`SOURCE_TTL`]).
#[derive(Default)]
pub struct SourceCache {
    inner: RwLock<Loaded>,
}

#[derive(Default)]
struct Loaded {
    by_hash: HashMap<String, Arc<Source>>,
    at: Option<Instant>,
}

impl SourceCache {
    pub async fn get(
        &self,
        store: &dyn Store,
        key_hash: &str,
    ) -> Result<Option<Arc<Source>>, StoreError> {
        let fresh = {
            let r = self.inner.read().expect("source cache");
            match r.at {
                Some(at) if at.elapsed() < SOURCE_TTL => {
                    if let Some(s) = r.by_hash.get(key_hash) {
                        return Ok(Some(s.clone()));
                    }
                    // An unknown key reloads at most once a second.
                    at.elapsed() < Duration::from_secs(1)
                }
                _ => false,
            }
        };
        if fresh {
            return Ok(None);
        }
        self.reload(store).await?;
        Ok(self
            .inner
            .read()
            .expect("source cache")
            .by_hash
            .get(key_hash)
            .cloned())
    }

    pub async fn reload(&self, store: &dyn Store) -> Result<(), StoreError> {
        let all = store.sources(None).await?;
        let map = all
            .into_iter()
            .map(|s| (s.key_hash.clone(), Arc::new(s)))
            .collect();
        *self.inner.write().expect("source cache") = Loaded {
            by_hash: map,
            at: Some(Instant::now()),
        };
        Ok(())
    }
}

/// Anonymous id → the subject it resolves to, cached.
#[derive(Default)]
pub struct Aliases {
    map: RwLock<HashMap<(Arc<str>, String), Alias>>,
}

/// The subject an anonymous id was linked to (none: not linked), as of `at`.
struct Alias {
    target: Option<String>,
    at: Instant,
}

impl Aliases {
    fn get(&self, tenant: &Arc<str>, anon: &str) -> Option<Option<String>> {
        let m = self.map.read().expect("alias cache");
        let a = m.get(&(tenant.clone(), anon.to_string()))?;
        let ttl = if a.target.is_some() {
            ALIAS_TTL
        } else {
            UNLINKED_TTL
        };
        (a.at.elapsed() < ttl).then(|| a.target.clone())
    }

    fn put(&self, tenant: &Arc<str>, anon: &str, target: Option<String>) {
        let mut m = self.map.write().expect("alias cache");
        if m.len() >= MAX_ALIASES {
            m.clear();
        }
        m.insert(
            (tenant.clone(), anon.to_string()),
            Alias {
                target,
                at: Instant::now(),
            },
        );
    }
}

/// The subject id an event is about: the user id, else the person the
/// anonymous id is linked to, else the anonymous visitor (whose banner
/// choices are recorded under the anonymous id itself).
pub async fn resolve(
    svc: &Services,
    tenant: &Arc<str>,
    user_id: Option<&str>,
    anonymous_id: Option<&str>,
) -> Result<String, StoreError> {
    if let Some(u) = user_id {
        return Ok(u.to_string());
    }
    let anon = anonymous_id.expect("messages carry a userId or an anonymousId");
    if let Some(hit) = svc.collector.aliases.get(tenant, anon) {
        return Ok(hit.unwrap_or_else(|| anon.to_string()));
    }
    let linked = profiles::find(svc, tenant, ANONYMOUS_ID, anon)
        .await?
        .into_iter()
        .map(|s| s.record.id)
        .find(|id| id != anon);
    svc.collector.aliases.put(tenant, anon, linked.clone());
    Ok(linked.unwrap_or_else(|| anon.to_string()))
}

/// Whether every purpose of the source allows processing the subject's
/// events now; the first denial's reason otherwise.
pub fn gate(view: &View, source: &Source, subject: &str, now: Micros) -> Result<(), &'static str> {
    view.read(&source.tenant, |tv| {
        for key in &source.purposes {
            let Some(p) = tv.purposes.get(key) else {
                return Err("unknown_purpose");
            };
            let channel = p.channels.contains(&Channel::Web).then_some(Channel::Web);
            match tv.decide(subject, key, channel, now) {
                Ok(a) if a.decision.allowed => {}
                Ok(a) => return Err(a.decision.reason.as_str()),
                Err(_) => return Err("unknown_purpose"),
            }
        }
        Ok(())
    })
    .unwrap_or(Err(Reason::NoConsent.as_str()))
}

/// How long an allowed event is kept: the shortest retention of the
/// source's purposes.
pub fn expiry(view: &View, source: &Source, received_at: Micros) -> Micros {
    let days = view
        .read(&source.tenant, |tv| {
            source
                .purposes
                .iter()
                .filter_map(|k| tv.purposes.get(k).map(|p| p.retention_days))
                .min()
        })
        .flatten()
        .unwrap_or(1);
    received_at.saturating_add(i64::from(days) * MICROS_PER_DAY)
}

/// Link `anonymous_id` to the known subject `user_id` and carry the
/// anonymous visitor's consent choices over.
pub async fn link(
    svc: &Services,
    source: &Source,
    user_id: &str,
    anonymous_id: &str,
) -> Result<(), StoreError> {
    let tenant: Arc<str> = source.tenant.as_str().into();
    if svc
        .collector
        .aliases
        .get(&tenant, anonymous_id)
        .flatten()
        .as_deref()
        != Some(user_id)
    {
        profiles::modify::<()>(svc, &source.tenant, user_id, None, |p| {
            p.anonymous_ids.insert(anonymous_id.to_string());
            Ok(())
        })
        .await
        .map_err(|e| match e {
            ProfileError::Store(e) => e,
            ProfileError::Refused(()) => StoreError::Unavailable("refused".into()),
        })?;
        svc.collector
            .aliases
            .put(&tenant, anonymous_id, Some(user_id.to_string()));
    }
    if anonymous_id == user_id {
        return Ok(());
    }
    for item in carried_over(svc, source, user_id, anonymous_id).await? {
        svc.writer.write(item).await?;
    }
    Ok(())
}

/// The anonymous visitor's consent records that are newer than the
/// person's own for the same purpose and channel, as writes to the person.
async fn carried_over(
    svc: &Services,
    source: &Source,
    user_id: &str,
    anonymous_id: &str,
) -> Result<Vec<WriteItem>, StoreError> {
    let store = svc.store.as_ref();
    let Some(anon) = svc
        .view
        .subject(store, &source.tenant, anonymous_id)
        .await?
    else {
        return Ok(Vec::new());
    };
    if anon.consents.records.is_empty() {
        return Ok(Vec::new());
    }
    let person = svc.view.subject(store, &source.tenant, user_id).await?;
    Ok(svc
        .view
        .read(&source.tenant, |tv| {
            anon.consents
                .records
                .iter()
                .filter(|r| {
                    person
                        .as_ref()
                        .and_then(|p| p.consents.get(&r.purpose, r.channel))
                        .is_none_or(|mine| mine.occurred_at < r.occurred_at)
                })
                .filter_map(|r| {
                    let action = r.state.action()?;
                    let notice = r.notice.as_ref().and_then(|n| {
                        tv.notices
                            .get(&(n.key.to_string(), n.version))
                            .map(|meta| NoticeRef {
                                key: n.key.to_string(),
                                version: n.version,
                                hash: meta.hash.clone(),
                            })
                    });
                    Some(WriteItem {
                        tenant: source.tenant.clone(),
                        subject_id: user_id.to_string(),
                        actor: format!("source:{}", source.id),
                        source: r.source.to_string(),
                        notice,
                        evidence: Some(serde_json::json!({
                            "linked": { "anonymous_id_seq": r.seq, "by": "identify" },
                        })),
                        occurred_at: r.occurred_at,
                        actions: vec![PreparedAction {
                            purpose: r.purpose.to_string(),
                            channel: r.channel,
                            action,
                            expires_at: r.expires_at,
                        }],
                        idempotency: None,
                        receipt: None,
                        guardian: r.guardian,
                    })
                })
                .collect()
        })
        .unwrap_or_default())
}

struct Job {
    events: Vec<TrackedEvent>,
    counts: SourceCounts,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// The collector's state: caches and the batching event writer.
pub struct Collector {
    pub sources: SourceCache,
    pub aliases: Aliases,
    /// With a NATS server configured: forwards allowed events.
    pub forwarder: Option<Forwarder>,
    jobs: mpsc::Sender<Job>,
}

impl Collector {
    pub fn start(
        store: Arc<dyn Store>,
        nats_url: Option<String>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Collector {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(run(store, rx));
        Collector {
            sources: SourceCache::default(),
            aliases: Aliases::default(),
            forwarder: nats_url.map(|url| Forwarder::start(url, metrics)),
            jobs: tx,
        }
    }

    /// Store allowed events and count a request's outcome; resolves once
    /// durable.
    pub async fn write(
        &self,
        events: Vec<TrackedEvent>,
        counts: SourceCounts,
    ) -> Result<(), StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || StoreError::Unavailable("the event writer has stopped".into());
        self.jobs
            .send(Job {
                events,
                counts,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<Job>) {
    let mut jobs: Vec<Job> = Vec::new();
    // A request holds at most MAX_MESSAGES events: a transaction at most
    // JOBS_PER_BATCH times that.
    while rx.recv_many(&mut jobs, JOBS_PER_BATCH).await > 0 {
        let mut events = Vec::new();
        let mut counts: HashMap<(String, String), SourceCounts> = HashMap::new();
        for j in &jobs {
            events.extend(j.events.iter().cloned());
            let c = counts
                .entry((j.counts.tenant.clone(), j.counts.source.clone()))
                .or_insert_with(|| SourceCounts {
                    tenant: j.counts.tenant.clone(),
                    source: j.counts.source.clone(),
                    ..Default::default()
                });
            c.accepted += j.counts.accepted;
            c.dropped += j.counts.dropped;
        }
        let counts: Vec<SourceCounts> = counts.into_values().collect();
        let result = store.store_events(&events, &counts).await;
        if let Err(e) = &result {
            tracing::error!(error = %e, events = events.len(), "tracking events failed to store");
        }
        for j in jobs.drain(..) {
            let _ = j.reply.send(result.clone());
        }
    }
}

/// Delete stored events whose retention ended, every minute. Safe on
/// several nodes: deleting what is already gone does nothing.
pub async fn expire(svc: std::sync::Weak<Services>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        let Some(svc) = svc.upgrade() else { return };
        match svc.store.expire_events(yinyom_core::time::now()).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "tracking events past their retention deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete expired tracking events"),
        }
    }
}
