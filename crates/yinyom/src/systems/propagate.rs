//! Consent propagation: a column mapped to a purpose (and channel) in a
//! connected database (`"consent": {"email_opt_in": {"purpose":
//! "marketing.email", "channel": "email"}}`) is set to true while the
//! subject's consent stands granted and to false at once when it is
//! withdrawn, denied or expires.
//!
//! The leader follows the outbox (cursor `systems` per tenant, kept at the
//! head while no system maps a consent column); each consent
//! event for a mapped purpose (re)queues one propagation per subject and
//! system, carrying the values of *every* consent column of that system as
//! the view holds them now, so a later event simply replaces an earlier
//! one. The systems task carries them out and retries failures.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};

use futures_util::StreamExt;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use yinyom_core::consent::ConsentState;
use yinyom_core::systems::{Bind, IdentifierKind, SetTo, SystemKind, TableName};
use yinyom_core::time::{self, Micros};

use super::{LEASE, StoredConfig, backoff, http_parts, http_target, identifiers, pool_of};
use crate::events::ConsentEvent;
use crate::services::Services;
use crate::store::{Propagation, StoreError, SystemRow};

const SINK: &str = "systems";

/// The value a consent column takes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Setting {
    table: String,
    column: String,
    value: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PropPayload {
    identifiers: BTreeMap<IdentifierKind, String>,
    settings: Vec<Setting>,
}

fn payload_name(uid: &str, system: &str) -> String {
    format!("propagation:{uid}:{system}")
}

/// Whether a system maps a consent column to `purpose` on `channel`.
fn maps(row: &SystemRow, purpose: &str) -> bool {
    let config = StoredConfig::of(row);
    config
        .tables
        .iter()
        .any(|t| t.consent.values().any(|c| c.purpose == purpose))
        || http_purpose(&config).is_some_and(|(p, _)| p == purpose)
}

/// The purpose an HTTP system's consent calls propagate.
fn http_purpose(config: &StoredConfig) -> Option<(String, Option<yinyom_core::purpose::Channel>)> {
    config.connector.as_ref()?.consent_purpose()
}

/// Whether a system takes consent propagation at all.
fn propagates(s: &SystemRow) -> bool {
    let config = StoredConfig::of(s);
    match SystemKind::parse(&s.kind) {
        Some(SystemKind::Http) => http_purpose(&config).is_some(),
        Some(k) if k.dialect().is_some() => config.tables.iter().any(|t| !t.consent.is_empty()),
        _ => false,
    }
}

/// How often the cursor of a tenant with no system to propagate to is
/// moved to the head (a durable write: after every consent batch it cost
/// the writers an fsync each).
const IDLE_ADVANCE: Duration = Duration::from_secs(5);

/// Follow the outbox and queue propagations (leader only).
pub async fn follow(svc: Weak<Services>) {
    let Some(mut changed) = svc.upgrade().map(|a| a.changed.subscribe()) else {
        return;
    };
    let mut advanced: Option<std::time::Instant> = None;
    loop {
        let Some(a) = svc.upgrade() else { return };
        let advance_idle = advanced.is_none_or(|t| t.elapsed() >= IDLE_ADVANCE);
        match follow_round(&a, advance_idle).await {
            Ok(()) if advance_idle => advanced = Some(std::time::Instant::now()),
            Ok(()) => {}
            Err(e) => tracing::warn!(error = %e, "consent propagation: storage unavailable"),
        }
        drop(a);
        let _ = tokio::time::timeout(Duration::from_millis(500), changed.changed()).await;
    }
}

/// One round over the tenants; `advance_idle`: also move the cursors of
/// tenants with no system to propagate to.
async fn follow_round(svc: &Arc<Services>, advance_idle: bool) -> Result<(), StoreError> {
    if !svc.store.lead().await? {
        return Ok(());
    }
    for tenant in svc.store.tenants().await? {
        let tenant = tenant.id;
        let systems: Vec<SystemRow> = svc
            .store
            .systems(&tenant)
            .await?
            .into_iter()
            .filter(propagates)
            .collect();
        // Without a mapped consent column the cursor follows the head (every
        // `IDLE_ADVANCE`), so a system mapped later propagates the changes
        // made from then on (or from a few seconds before).
        if systems.is_empty() && !advance_idle {
            continue;
        }
        let mut cursor = svc.store.sink_cursor(SINK, &tenant).await?;
        if systems.is_empty() {
            let last = svc.store.last_event(&tenant).await?;
            if last > cursor {
                svc.store.set_sink_cursor(SINK, &tenant, last).await?;
            }
            continue;
        }
        loop {
            let events = svc.store.events_after(&tenant, cursor, 500).await?;
            let Some(last) = events.last().map(|e| e.seq) else {
                break;
            };
            let mut touched: Vec<(String, &SystemRow)> = Vec::new();
            for e in &events {
                let Ok(ev) = serde_json::from_str::<ConsentEvent>(&e.payload) else {
                    continue;
                };
                if !ev.kind.starts_with("consent.") {
                    continue;
                }
                for s in systems.iter().filter(|s| maps(s, &ev.purpose)) {
                    if !touched
                        .iter()
                        .any(|(u, x)| *u == e.subject_uid && x.key == s.key)
                    {
                        touched.push((e.subject_uid.clone(), s));
                    }
                }
            }
            for (uid, system) in touched {
                queue(svc, &tenant, &uid, system).await?;
            }
            svc.store.set_sink_cursor(SINK, &tenant, last).await?;
            cursor = last;
        }
    }
    Ok(())
}

/// Queue (or replace) a subject's propagation to a system with the values
/// its consent columns take now.
pub async fn queue(
    svc: &Arc<Services>,
    tenant: &str,
    uid: &str,
    system: &SystemRow,
) -> Result<(), StoreError> {
    let Some(id) = svc.store.subject_id(tenant, uid).await? else {
        return Ok(());
    };
    let now = time::now();
    let held = svc.view.subject(svc.store.as_ref(), tenant, &id).await?;
    let granted = |purpose: &str, channel: Option<yinyom_core::purpose::Channel>| {
        held.as_ref().is_some_and(|s| {
            s.consents.records.iter().any(|c| {
                *c.purpose == *purpose
                    && (channel.is_none() || c.channel.is_none() || c.channel == channel)
                    && c.state_at(now) == ConsentState::Granted
            })
        })
    };
    let mut settings = Vec::new();
    let config = StoredConfig::of(system);
    if let Some((purpose, channel)) = http_purpose(&config) {
        settings.push(Setting {
            table: String::new(),
            column: purpose.clone(),
            value: granted(&purpose, channel),
        });
    }
    for t in &config.tables {
        for (column, c) in &t.consent {
            settings.push(Setting {
                table: t.name.clone(),
                column: column.clone(),
                value: granted(&c.purpose, c.channel),
            });
        }
    }
    let payload = PropPayload {
        identifiers: identifiers(svc, tenant, &id).await?,
        settings,
    };
    let keys = svc.vault.tenant(svc.store.as_ref(), tenant).await?;
    let plain = serde_json::to_vec(&payload).unwrap_or_default();
    let previous = svc
        .store
        .propagations(tenant, uid)
        .await?
        .into_iter()
        .find(|p| p.system == system.key);
    let updated_at = previous.as_ref().map_or(now, |p| now.max(p.updated_at + 1));
    svc.store
        .put_propagation(&Propagation {
            tenant: tenant.to_string(),
            subject_uid: uid.to_string(),
            system: system.key.clone(),
            status: "pending".into(),
            rows: 0,
            error: None,
            attempts: 0,
            next_at: Some(now),
            finished_at: None,
            payload: Some(keys.seal_secret(&payload_name(uid, &system.key), &plain)),
            updated_at,
        })
        .await?;
    svc.systems.propagate_wake.notify_one();
    Ok(())
}

/// Carry out due propagations (leader only), systems side by side, each
/// a few at a time; a system whose batch all fails defers the rest untried.
pub async fn run(svc: Weak<Services>, wake: Arc<tokio::sync::Notify>) {
    loop {
        let Some(a) = svc.upgrade() else { return };
        let busy = match round(&a).await {
            Ok(busy) => busy,
            Err(e) => {
                tracing::warn!(error = %e, "consent propagation: storage unavailable");
                false
            }
        };
        drop(a);
        if !busy {
            let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
        }
    }
}

const ROUND: u32 = 64;
const PER_SYSTEM: usize = 4;
const SYSTEMS_AT_ONCE: usize = 16;

async fn round(svc: &Arc<Services>) -> Result<bool, StoreError> {
    if !svc.store.lead().await? {
        return Ok(false);
    }
    let due = svc.store.due_propagations(time::now(), ROUND).await?;
    let busy = due.len() == ROUND as usize;
    let mut by_system: BTreeMap<(String, String), Vec<Propagation>> = BTreeMap::new();
    for p in due {
        by_system
            .entry((p.tenant.clone(), p.system.clone()))
            .or_default()
            .push(p);
    }
    let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(by_system.into_values())
        .map(|ps| run_system(svc, ps))
        .buffer_unordered(SYSTEMS_AT_ONCE)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(busy)
}

async fn run_system(svc: &Arc<Services>, ps: Vec<Propagation>) -> Result<(), StoreError> {
    let mut ps = ps.into_iter();
    loop {
        let batch: Vec<Propagation> = ps.by_ref().take(PER_SYSTEM).collect();
        if batch.is_empty() {
            return Ok(());
        }
        let outcomes =
            futures_util::future::join_all(batch.into_iter().map(|p| attempt(svc, p))).await;
        let outcomes: Vec<Option<String>> = outcomes.into_iter().collect::<Result<_, _>>()?;
        if outcomes.iter().all(Option::is_some) {
            let error = outcomes.into_iter().flatten().next().unwrap_or_default();
            for mut p in ps {
                let before = p.updated_at;
                let now = time::now().max(before + 1);
                p.next_at = Some(
                    now + backoff(&svc.systems.config, p.attempts.max(1)).as_micros() as Micros,
                );
                p.error = Some(format!(
                    "not tried: the system failed just before ({error})"
                ));
                p.updated_at = now;
                svc.store.update_propagation(&p, before).await?;
            }
            return Ok(());
        }
    }
}

/// One attempt at a propagation; the error if it failed.
async fn attempt(svc: &Arc<Services>, mut p: Propagation) -> Result<Option<String>, StoreError> {
    let before = p.updated_at;
    let now = time::now().max(before + 1);
    p.status = "running".into();
    p.attempts += 1;
    p.next_at = Some(now + LEASE);
    p.updated_at = now;
    if !svc.store.update_propagation(&p, before).await? {
        return Ok(None);
    }
    let taken = p.updated_at;
    let outcome = carry_out(svc, &p).await;
    let now = time::now().max(taken + 1);
    p.updated_at = now;
    match outcome {
        Ok(rows) => {
            p.status = "done".into();
            p.rows = rows;
            p.error = None;
            p.next_at = None;
            p.finished_at = Some(now);
            p.payload = None;
        }
        Err(e) => {
            tracing::warn!(system = %p.system, attempts = p.attempts, error = %e,
                "consent propagation failed; retrying later");
            p.status = "failed".into();
            p.error = Some(e);
            p.next_at = Some(now + backoff(&svc.systems.config, p.attempts).as_micros() as Micros);
        }
    }
    // A newer change replaced it meanwhile: that one runs instead.
    svc.store.update_propagation(&p, taken).await?;
    Ok(p.error.filter(|_| p.status == "failed"))
}

async fn carry_out(svc: &Arc<Services>, p: &Propagation) -> Result<i64, String> {
    let system = svc
        .store
        .system(&p.tenant, &p.system)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the system was removed")?;
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), &p.tenant)
        .await
        .map_err(|e| e.to_string())?;
    let payload: PropPayload = p
        .payload
        .as_ref()
        .and_then(|b| {
            keys.open_secret(&payload_name(&p.subject_uid, &p.system), b)
                .ok()
        })
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the subject's identifiers are not readable")?;
    if system.kind == SystemKind::Http.as_str() {
        let config = StoredConfig::of(&system);
        let (hc, connector) = http_parts(&config)?;
        let target = http_target(svc, &system, hc, connector).await?;
        let Some(setting) = payload.settings.iter().find(|s| s.table.is_empty()) else {
            return Ok(0);
        };
        return super::http::set_consent(&target, &payload.identifiers, setting.value).await;
    }
    let dialect = SystemKind::parse(&system.kind)
        .and_then(SystemKind::dialect)
        .ok_or("not a database system")?;
    let pool = pool_of(svc, &system, dialect).await?;
    let mut tx = pool.begin().await?;
    let mut rows = 0;
    let config = StoredConfig::of(&system);
    for t in &config.tables {
        let settings: Vec<&Setting> = payload
            .settings
            .iter()
            .filter(|s| s.table == t.name && t.consent.contains_key(&s.column))
            .collect();
        if settings.is_empty() {
            continue;
        }
        let Some(value) = payload.identifiers.get(&t.identity.identifier) else {
            continue;
        };
        let name = TableName::parse("table", &t.name).map_err(|e| e.reason)?;
        let catalogue = tx.catalogue(&name).await?;
        let mut set = Vec::new();
        for s in &settings {
            let col = catalogue
                .iter()
                .find(|c| c.name == s.column)
                .ok_or_else(|| format!("{}: no column {}", t.name, s.column))?;
            if catalogue.iter().all(|c| c.name != t.identity.column) {
                return Err(format!("{}: no column {}", t.name, t.identity.column));
            }
            let bind = if col.is_bool() {
                Bind::Bool(s.value)
            } else if col.is_integer() {
                Bind::Int(i64::from(s.value))
            } else {
                return Err(format!(
                    "{}: column {} is not boolean or integer",
                    t.name, s.column
                ));
            };
            set.push((s.column.as_str(), SetTo::Value(bind)));
        }
        let forms = t.identity.identifier.forms(value);
        let statement = dialect.update(&name, &t.identity, &set, &forms);
        match tx.execute(&statement).await {
            Ok(n) => rows += n as i64,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(format!("{}: {e}", t.name));
            }
        }
    }
    tx.commit().await?;
    Ok(rows)
}
