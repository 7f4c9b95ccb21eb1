//! Connected systems (issue 14): the tenant's own databases and teams that a
//! rights request reaches. A system is registered with its data map
//! ([`yinyom_core::systems::TableMap`]); completing an access, portability,
//! erasure or rectification request creates one job per system, carried
//! out by a background task on the leader (retried with backoff, each
//! system on its own), or confirmed by staff for a `manual` system. The
//! request is completed when every job is done.
//!
//! The subject's identifiers are read from its profile when the request is
//! completed (before Yinyom's own erasure shreds the profile) and kept
//! sealed with the tenant key in the job until it is done.

pub mod db;
pub mod http;
pub mod propagate;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use yinyom_core::rights::{Kind, Status};
use yinyom_core::systems::{
    self as map, Bind, IdentifierKind, OnErasure, SetTo, SystemKind, TableMap, TableName,
};
use yinyom_core::time::{self, Micros};

use crate::api::problem::Problem;
use crate::model::{RequestRow, RequestStep};
use crate::services::Services;
use crate::store::{Store, StoreError, SystemJob, SystemRow};

/// Settings of the systems task.
#[derive(Debug, Clone)]
pub struct SystemsConfig {
    /// The wait after a first failure; doubled after each, up to `retry_max`.
    pub retry_base: Duration,
    pub retry_max: Duration,
    /// HTTP connectors: their directory and the outbound allow-list.
    pub http: http::HttpSettings,
}

impl Default for SystemsConfig {
    fn default() -> Self {
        SystemsConfig {
            retry_base: Duration::from_secs(2),
            retry_max: Duration::from_secs(600),
            http: Default::default(),
        }
    }
}

/// What the app holds for connected systems.
pub struct Systems {
    pub pools: db::Pools,
    /// Wakes the task when jobs are created.
    pub wake: Arc<tokio::sync::Notify>,
    /// Wakes the request hooks' task (`crate::hooks`) when calls are made.
    pub hooks_wake: Arc<tokio::sync::Notify>,
    /// Wakes the consent propagation loop when propagations are created
    /// (its own: `notify_one` wakes a single waiter, and a job must never
    /// wait for the jobs loop's 500 ms poll because the propagation loop
    /// took its wake-up).
    pub propagate_wake: Arc<tokio::sync::Notify>,
    pub config: SystemsConfig,
    /// The guarded HTTP client of connectors, and their OAuth2 tokens.
    pub http: http::Http,
    /// Each system's last test or attempt, for the console: (tenant, key) →
    /// health.
    pub health: std::sync::Mutex<std::collections::HashMap<(String, String), Health>>,
}

/// A system's health as last seen (a test, or an attempt at a job).
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub ok: bool,
    pub error: Option<String>,
    /// `test` or `job`.
    pub source: &'static str,
    pub at: Micros,
}

impl Systems {
    fn saw(&self, tenant: &str, key: &str, source: &'static str, error: Option<String>) {
        if let Ok(mut h) = self.health.lock() {
            h.insert(
                (tenant.to_string(), key.to_string()),
                Health {
                    ok: error.is_none(),
                    error,
                    source,
                    at: time::now(),
                },
            );
        }
    }

    /// A system's last seen health, if any.
    pub fn health_of(&self, tenant: &str, key: &str) -> Option<Health> {
        self.health
            .lock()
            .ok()?
            .get(&(tenant.to_string(), key.to_string()))
            .cloned()
    }
}

impl Default for Systems {
    fn default() -> Self {
        Systems::new(SystemsConfig::default())
    }
}

impl Systems {
    pub fn new(config: SystemsConfig) -> Systems {
        Systems {
            pools: Default::default(),
            wake: Default::default(),
            hooks_wake: Default::default(),
            propagate_wake: Default::default(),
            http: http::Http::new(config.http.clone()),
            health: Default::default(),
            config,
        }
    }
}

/// A system's settings as stored (`systems.config`): the data map and, for
/// databases, the connection without its secret.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredConfig {
    #[serde(default)]
    pub tables: Vec<TableMap>,
    /// The connection shown to staff: scheme, user, host, port, database;
    /// never the password or query parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// For a manual system: what the team is asked to do, and how to reach it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<String>,
    /// An HTTP system: its connector and parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connector: Option<http::HttpConfig>,
}

impl StoredConfig {
    pub fn of(row: &SystemRow) -> StoredConfig {
        serde_json::from_value(row.config.clone()).unwrap_or_default()
    }
}

/// The connection URL shown back: without password and query.
pub fn redact(url: &url::Url) -> String {
    let mut u = url.clone();
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// Check a connection URL for a database kind.
pub fn check_url(kind: SystemKind, raw: &str) -> Result<url::Url, Problem> {
    let bad = |why: &str| Problem::validation("connection.url", why.to_string());
    if raw.len() > 2000 {
        return Err(bad("must be at most 2000 bytes"));
    }
    let u = url::Url::parse(raw).map_err(|e| bad(&format!("is not a URL: {e}")))?;
    let ok = match kind {
        SystemKind::Postgres => matches!(u.scheme(), "postgres" | "postgresql"),
        SystemKind::Mysql => matches!(u.scheme(), "mysql" | "mariadb"),
        _ => false,
    };
    if !ok {
        return Err(bad(match kind {
            SystemKind::Postgres => "must be a postgres:// URL",
            _ => "must be a mysql:// URL (MySQL or MariaDB)",
        }));
    }
    if u.host_str().unwrap_or_default().is_empty() {
        return Err(bad("names no host"));
    }
    Ok(u)
}

fn secret_name(key: &str) -> String {
    format!("system:{key}")
}

fn payload_name(request: &str, system: &str) -> String {
    format!("request-system:{request}:{system}")
}

fn result_name(request: &str, system: &str) -> String {
    format!("request-system-result:{request}:{system}")
}

/// The subject's identifiers (normalised), by [`IdentifierKind`] name, and
/// what a rectification corrects.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Payload {
    pub identifiers: BTreeMap<IdentifierKind, String>,
    #[serde(default)]
    pub corrections: Option<crate::rights::Corrections>,
    pub subject_uid: String,
}

/// A subject's identifiers from its profile, and its id.
pub async fn identifiers(
    svc: &Services,
    tenant: &str,
    subject_id: &str,
) -> Result<BTreeMap<IdentifierKind, String>, StoreError> {
    let mut ids = BTreeMap::from([(IdentifierKind::Subject, subject_id.to_string())]);
    if let Some(s) = crate::profiles::read(svc, tenant, subject_id).await? {
        for (k, v) in &s.profile.contacts {
            let kind = match k {
                yinyom_core::contact::ContactKind::Email => IdentifierKind::Email,
                yinyom_core::contact::ContactKind::Phone => IdentifierKind::Phone,
                yinyom_core::contact::ContactKind::LineId => IdentifierKind::LineId,
            };
            ids.insert(kind, v.clone());
        }
        if let Some(c) = &s.profile.customer_id {
            ids.insert(IdentifierKind::CustomerId, c.clone());
        }
    }
    Ok(ids)
}

/// Which request kinds reach connected systems.
pub fn reaches_systems(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Access | Kind::Portability | Kind::Erasure | Kind::Rectification
    )
}

/// Whether a system takes part in requests of `kind`: a database with no
/// table mapped does nothing (a manual one always takes part).
fn takes_part(row: &SystemRow, kind: Kind) -> bool {
    if !reaches_systems(kind) {
        return false;
    }
    match SystemKind::parse(&row.kind) {
        Some(SystemKind::Manual) => true,
        Some(SystemKind::Postgres | SystemKind::Mysql) => !StoredConfig::of(row).tables.is_empty(),
        Some(SystemKind::Http) => StoredConfig::of(row)
            .connector
            .is_some_and(|c| c.definition.is_some()),
        None => false,
    }
}

/// Start a request in every connected system, when it is completed in
/// Yinyom; returns how many systems it now waits for (0: none, carry on).
/// Called before Yinyom's own part (an erasure shreds the profile the
/// identifiers are read from). A request started before is refused.
/// `resumed`: called when pre-execution hooks released a request whose
/// `complete` step was taken before (`rights::resume`).
pub async fn begin(svc: &Services, r: &RequestRow, resumed: bool) -> Result<usize, Problem> {
    if !reaches_systems(r.kind) {
        return Ok(0);
    }
    let existing = svc.store.request_system_jobs(&r.tenant, &r.id).await?;
    if !existing.is_empty() {
        if !resumed && r.steps.iter().any(|s| s.action == "complete") {
            return Err(Problem::conflict(
                "the request is being carried out in its connected systems; see `systems`",
            ));
        }
        // Created before a failure in Yinyom's own part: go on with them.
        return Ok(existing.len());
    }
    let systems: Vec<SystemRow> = svc
        .store
        .systems(&r.tenant)
        .await?
        .into_iter()
        .filter(|s| takes_part(s, r.kind))
        .collect();
    if systems.is_empty() {
        return Ok(0);
    }
    let Some(subject_id) = r.subject_id.as_deref() else {
        return Ok(0);
    };
    let payload = Payload {
        identifiers: identifiers(svc, &r.tenant, subject_id).await?,
        corrections: corrections_of(svc, r).await?,
        subject_uid: r.subject_uid.clone(),
    };
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), &r.tenant)
        .await
        .map_err(StoreError::from)?;
    let plain = serde_json::to_vec(&payload).map_err(|e| Problem::bad_request(e.to_string()))?;
    let now = time::now();
    let jobs: Vec<SystemJob> = systems
        .iter()
        .map(|s| {
            let manual = s.kind == SystemKind::Manual.as_str();
            SystemJob {
                tenant: r.tenant.clone(),
                request_id: r.id.clone(),
                system: s.key.clone(),
                status: if manual { "manual" } else { "pending" }.into(),
                rows: 0,
                error: None,
                attempts: 0,
                next_at: (!manual).then_some(now),
                finished_at: None,
                detail: None,
                payload: (!manual).then(|| keys.seal_secret(&payload_name(&r.id, &s.key), &plain)),
                result: None,
                updated_at: now,
            }
        })
        .collect();
    svc.store.insert_system_jobs(&jobs).await?;
    svc.systems.wake.notify_one();
    Ok(jobs.len())
}

/// A rectification's corrections, opened (sealed in the request as
/// `rights::receive` sealed them).
async fn corrections_of(
    svc: &Services,
    r: &RequestRow,
) -> Result<Option<crate::rights::Corrections>, Problem> {
    let Some(blob) = &r.changes else {
        return Ok(None);
    };
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), &r.tenant)
        .await
        .map_err(StoreError::from)?;
    let plain = keys
        .open_secret(&format!("request:{}", r.subject_uid), blob)
        .map_err(StoreError::from)?;
    Ok(serde_json::from_slice(&plain).ok())
}

/// One table's part of a run (or of a plan).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
pub struct TableOutcome {
    pub table: String,
    /// `read`, `delete`, `mask`, `retain`, `update`, `none`.
    pub action: String,
    /// Rows touched (or, in a plan, that would be).
    pub rows: i64,
    /// Why rows are retained (`retain`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The columns set (`mask`, `update`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Rows an access request collected from one table.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TableRows {
    pub table: String,
    /// Column → data category.
    pub columns: BTreeMap<String, String>,
    pub rows: Vec<serde_json::Value>,
}

/// What to do in a database for a request of `kind` (or, `dry`, only
/// count the rows it would touch). One transaction: all or nothing.
async fn run_tables(
    svc: &Services,
    system: &SystemRow,
    kind: Kind,
    payload: &Payload,
    dry: bool,
) -> Result<(Vec<TableOutcome>, Vec<TableRows>), String> {
    if system.kind == SystemKind::Http.as_str() {
        let config = StoredConfig::of(system);
        let (hc, connector) = http_parts(&config)?;
        let target = http_target(svc, system, hc, connector).await?;
        return http::run(&target, kind, payload, dry).await;
    }
    let Some(dialect) = SystemKind::parse(&system.kind).and_then(SystemKind::dialect) else {
        return Err("not a database system".into());
    };
    let pool = pool_of(svc, system, dialect).await?;
    let config = StoredConfig::of(system);
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), &system.tenant)
        .await
        .map_err(|e| e.to_string())?;
    let mut tx = pool.begin().await?;
    let mut outcomes = Vec::new();
    let mut collected = Vec::new();
    // An erasure goes from the last table listed to the first: list parent
    // tables before the tables whose rows refer to them.
    let order: Vec<&TableMap> = if kind == Kind::Erasure {
        config.tables.iter().rev().collect()
    } else {
        config.tables.iter().collect()
    };
    for t in order {
        let result = run_table(&mut tx, dialect, &keys, system, t, kind, payload, dry).await;
        match result {
            Ok((outcome, rows)) => {
                outcomes.push(outcome);
                collected.extend(rows);
            }
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(format!("{}: {e}", t.name));
            }
        }
    }
    if dry {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    // Keep the map's order in the outcome.
    if kind == Kind::Erasure {
        outcomes.reverse();
    }
    Ok((outcomes, collected))
}

fn http_parts(config: &StoredConfig) -> Result<(&http::HttpConfig, &http::Connector), String> {
    config
        .connector
        .as_ref()
        .and_then(|c| c.definition.as_ref().map(|d| (c, d)))
        .ok_or_else(|| "the system has no connector".to_string())
}

/// An HTTP system's calls, with its credentials opened.
async fn http_target<'a>(
    svc: &'a Services,
    system: &'a SystemRow,
    config: &'a http::HttpConfig,
    connector: &'a http::Connector,
) -> Result<http::Target<'a>, String> {
    let credentials = match &system.secret {
        None => http::Credentials::default(),
        Some(secret) => {
            let keys = svc
                .vault
                .tenant(svc.store.as_ref(), &system.tenant)
                .await
                .map_err(|e| e.to_string())?;
            let plain = keys
                .open_secret(&secret_name(&system.key), secret)
                .map_err(|e| format!("credentials: {e}"))?;
            serde_json::from_slice(&plain).map_err(|e| format!("credentials: {e}"))?
        }
    };
    Ok(http::Target {
        http: &svc.systems.http,
        tenant: &system.tenant,
        key: &system.key,
        version: system.updated_at,
        config,
        connector,
        credentials,
    })
}

async fn pool_of(
    svc: &Services,
    system: &SystemRow,
    dialect: map::Dialect,
) -> Result<db::Pool, String> {
    let Some(secret) = &system.secret else {
        return Err("no connection URL is set".into());
    };
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), &system.tenant)
        .await
        .map_err(|e| e.to_string())?;
    let url = keys
        .open_secret(&secret_name(&system.key), secret)
        .map_err(|e| format!("connection URL: {e}"))?;
    let url = String::from_utf8(url).map_err(|_| "connection URL: not UTF-8".to_string())?;
    svc.systems.pools.get(
        &system.tenant,
        &system.key,
        system.updated_at,
        dialect,
        &url,
    )
}

/// The columns a rectification sets: a mapped column whose category the
/// corrections give a value for (`contact.email` from `identifiers.email`,
/// any category from an attribute named after it, e.g. `user.address`).
fn corrected(t: &TableMap, c: &crate::rights::Corrections) -> Vec<(String, String)> {
    t.columns
        .iter()
        .filter_map(|(col, category)| {
            let from_identifier = match category.as_str() {
                "contact.email" => c.identifiers.get("email"),
                "contact.phone" => c.identifiers.get("phone"),
                "contact.line_id" => c.identifiers.get("line_id"),
                _ => None,
            }
            .cloned();
            let value = from_identifier.or_else(|| match c.attributes.get(category) {
                Some(serde_json::Value::String(s)) => Some(s.clone()),
                Some(serde_json::Value::Number(n)) => Some(n.to_string()),
                _ => None,
            });
            value.map(|v| (col.clone(), v))
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
async fn run_table(
    tx: &mut db::Tx,
    dialect: map::Dialect,
    keys: &crate::vault::TenantKeys,
    system: &SystemRow,
    t: &TableMap,
    kind: Kind,
    payload: &Payload,
    dry: bool,
) -> Result<(TableOutcome, Option<TableRows>), String> {
    let name = TableName::parse("table", &t.name).map_err(|e| e.reason)?;
    let catalogue = tx.catalogue(&name).await?;
    if catalogue.is_empty() {
        return Err("no such table in the database".into());
    }
    let column = |c: &str| catalogue.iter().find(|x| x.name == c);
    let missing: Vec<&str> = std::iter::once(t.identity.column.as_str())
        .chain(t.columns.keys().map(String::as_str))
        .chain(t.consent.keys().map(String::as_str))
        .filter(|c| column(c).is_none())
        .collect();
    if !missing.is_empty() {
        return Err(format!("no column {} in the table", missing.join(", ")));
    }
    let mut outcome = TableOutcome {
        table: t.name.clone(),
        ..Default::default()
    };
    let Some(value) = payload.identifiers.get(&t.identity.identifier) else {
        outcome.action = "none".into();
        outcome.note = Some(format!(
            "the subject has no {} to find rows by",
            t.identity.identifier.as_str()
        ));
        return Ok((outcome, None));
    };
    let forms = t.identity.identifier.forms(value);
    let count = dialect.count(&name, &t.identity, &forms);
    match kind {
        Kind::Access | Kind::Portability => {
            outcome.action = "read".into();
            if dry {
                outcome.rows = tx.count(&count).await?;
                return Ok((outcome, None));
            }
            let mut cols: Vec<&str> = vec![t.identity.column.as_str()];
            cols.extend(
                t.columns
                    .keys()
                    .map(String::as_str)
                    .filter(|c| *c != t.identity.column),
            );
            let rows = tx
                .json_rows(&dialect.select(&name, &t.identity, &cols, &forms))
                .await?;
            outcome.rows = rows.len() as i64;
            Ok((
                outcome,
                Some(TableRows {
                    table: t.name.clone(),
                    columns: t.columns.clone(),
                    rows,
                }),
            ))
        }
        Kind::Erasure => {
            outcome.action = t.on_erasure.as_str().into();
            match t.on_erasure {
                OnErasure::Retain => {
                    outcome.reason = t.reason.clone();
                    outcome.rows = tx.count(&count).await?;
                }
                OnErasure::Delete if dry => outcome.rows = tx.count(&count).await?,
                OnErasure::Delete => {
                    outcome.rows = tx
                        .execute(&dialect.delete(&name, &t.identity, &forms))
                        .await? as i64
                }
                OnErasure::Mask => {
                    let hash = keys.lookup_hash(
                        &format!("mask:{}:{}", system.key, t.name),
                        &payload.subject_uid,
                    );
                    let mut set = Vec::new();
                    for c in t.columns.keys() {
                        let Some(col) = column(c) else { continue };
                        let Some(to) = map::mask_value(col, &hash[..32]) else {
                            return Err(format!(
                                "column {c} is NOT NULL and not text: it cannot be masked \
                                 (allow NULL, or delete or retain the rows)"
                            ));
                        };
                        set.push((c.as_str(), to));
                    }
                    outcome.columns = t.columns.keys().cloned().collect();
                    outcome.rows = if dry {
                        tx.count(&count).await?
                    } else {
                        tx.execute(&dialect.update(&name, &t.identity, &set, &forms))
                            .await? as i64
                    };
                }
            }
            Ok((outcome, None))
        }
        Kind::Rectification => {
            let set = payload
                .corrections
                .as_ref()
                .map(|c| corrected(t, c))
                .unwrap_or_default();
            if set.is_empty() {
                outcome.action = "none".into();
                outcome.note = Some("nothing this table maps is corrected".into());
                return Ok((outcome, None));
            }
            outcome.action = "update".into();
            outcome.columns = set.iter().map(|(c, _)| c.clone()).collect();
            for (c, _) in &set {
                if column(c).is_some_and(|x| !x.is_text()) {
                    return Err(format!(
                        "column {c} is not a text column; it cannot be corrected"
                    ));
                }
            }
            let set: Vec<(&str, SetTo)> = set
                .iter()
                .map(|(c, v)| (c.as_str(), SetTo::Value(Bind::Text(v.clone()))))
                .collect();
            outcome.rows = if dry {
                tx.count(&count).await?
            } else {
                tx.execute(&dialect.update(&name, &t.identity, &set, &forms))
                    .await? as i64
            };
            Ok((outcome, None))
        }
        _ => {
            outcome.action = "none".into();
            Ok((outcome, None))
        }
    }
}

/// Check a system: it answers, and every mapped table and column exists
/// (and masked NOT NULL columns can take a hash).
pub async fn test(svc: &Services, system: &SystemRow) -> Vec<TableCheck> {
    let out = test_checks(svc, system).await;
    let error = out
        .iter()
        .filter_map(|c| c.error.clone())
        .collect::<Vec<_>>();
    svc.systems.saw(
        &system.tenant,
        &system.key,
        "test",
        (!error.is_empty()).then(|| error.join("; ")),
    );
    out
}

async fn test_checks(svc: &Services, system: &SystemRow) -> Vec<TableCheck> {
    let mut out = Vec::new();
    if system.kind == SystemKind::Http.as_str() {
        let config = StoredConfig::of(system);
        let result = match http_parts(&config) {
            Ok((hc, connector)) => match http_target(svc, system, hc, connector).await {
                Ok(target) => http::test(&target).await.map(|_| connector.name.clone()),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        out.push(match result {
            Ok(name) => TableCheck {
                table: Some(name),
                ok: true,
                error: None,
            },
            Err(e) => TableCheck::error(None, e),
        });
        return out;
    }
    let Some(dialect) = SystemKind::parse(&system.kind).and_then(SystemKind::dialect) else {
        return out;
    };
    let pool = match pool_of(svc, system, dialect).await {
        Ok(p) => p,
        Err(e) => {
            out.push(TableCheck::error(None, e));
            return out;
        }
    };
    let mut tx = match pool.begin().await {
        Ok(tx) => tx,
        Err(e) => {
            out.push(TableCheck::error(None, e));
            return out;
        }
    };
    for t in &StoredConfig::of(system).tables {
        let check = async {
            let name = TableName::parse("table", &t.name).map_err(|e| e.reason)?;
            let catalogue = tx.catalogue(&name).await?;
            if catalogue.is_empty() {
                return Err("no such table in the database".to_string());
            }
            let mut problems = Vec::new();
            for c in std::iter::once(&t.identity.column)
                .chain(t.columns.keys())
                .chain(t.consent.keys())
            {
                match catalogue.iter().find(|x| &x.name == c) {
                    None => problems.push(format!("no column {c}")),
                    Some(col)
                        if t.on_erasure == OnErasure::Mask
                            && t.columns.contains_key(c)
                            && map::mask_value(col, "0").is_none() =>
                    {
                        problems.push(format!(
                            "column {c} is NOT NULL and not text: it cannot be masked"
                        ))
                    }
                    Some(col)
                        if t.consent.contains_key(c) && !(col.is_bool() || col.is_integer()) =>
                    {
                        problems.push(format!("consent column {c} must be boolean or integer"))
                    }
                    _ => {}
                }
            }
            if problems.is_empty() {
                Ok(())
            } else {
                Err(problems.join("; "))
            }
        };
        out.push(match check.await {
            Ok(()) => TableCheck {
                table: Some(t.name.clone()),
                ok: true,
                error: None,
            },
            Err(e) => TableCheck::error(Some(t.name.clone()), e),
        });
    }
    let _ = tx.rollback().await;
    out
}

/// One line of a system's test.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TableCheck {
    /// The table (none: the connection itself).
    pub table: Option<String>,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl TableCheck {
    fn error(table: Option<String>, e: String) -> Self {
        TableCheck {
            table,
            ok: false,
            error: Some(e),
        }
    }
}

/// A system's part of a request, as `GET /v1/requests/{id}` shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SystemStatus {
    pub key: String,
    /// `pending`, `running`, `done`, `failed` (retried), `manual` (waits
    /// for staff to confirm).
    pub status: String,
    pub rows: i64,
    pub error: Option<String>,
    pub attempts: i64,
    pub finished_at: Option<String>,
    /// When a failed system is tried again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_at: Option<String>,
    /// Per table: the action, rows, and the reason rows were retained.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tables: Vec<TableOutcome>,
    /// A manual system's confirmation note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SystemStatus {
    pub fn of(j: &SystemJob) -> SystemStatus {
        let detail = j.detail.clone().unwrap_or_default();
        SystemStatus {
            key: j.system.clone(),
            status: j.status.clone(),
            rows: j.rows,
            error: j.error.clone(),
            attempts: j.attempts,
            finished_at: j.finished_at.map(time::rfc3339),
            retry_at: (j.status == "failed")
                .then_some(j.next_at)
                .flatten()
                .map(time::rfc3339),
            tables: serde_json::from_value(detail["tables"].clone()).unwrap_or_default(),
            note: detail["note"].as_str().map(str::to_string),
        }
    }
}

/// The request's systems, for its view.
pub async fn statuses(
    store: &dyn Store,
    tenant: &str,
    id: &str,
) -> Result<Vec<SystemStatus>, StoreError> {
    Ok(store
        .request_system_jobs(tenant, id)
        .await?
        .iter()
        .map(SystemStatus::of)
        .collect())
}

/// One system in a request's plan.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SystemPlan {
    pub key: String,
    pub kind: SystemKind,
    /// `run` (a database), `manual` (staff act and confirm), `none` (this
    /// kind of request does nothing there), `failed` (see `error`).
    pub action: String,
    pub tables: Vec<TableOutcome>,
    pub error: Option<String>,
}

/// A dry run: per system and table, what the request would do and to how
/// many rows. Nothing is changed (the transaction is rolled back).
pub async fn plan(svc: &Services, r: &RequestRow) -> Result<Vec<SystemPlan>, Problem> {
    let systems = svc.store.systems(&r.tenant).await?;
    let jobs = svc.store.request_system_jobs(&r.tenant, &r.id).await?;
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), &r.tenant)
        .await
        .map_err(StoreError::from)?;
    let current = match r.subject_id.as_deref() {
        Some(id) if r.status.is_open() => Some(Payload {
            identifiers: identifiers(svc, &r.tenant, id).await?,
            corrections: corrections_of(svc, r).await?,
            subject_uid: r.subject_uid.clone(),
        }),
        _ => None,
    };
    let plans = futures_util::stream::iter(systems)
        .map(|s| {
            let job = jobs.iter().find(|j| j.system == s.key);
            // Once started, the plan uses the identifiers captured then.
            let payload = job
                .and_then(|j| j.payload.as_ref())
                .and_then(|p| keys.open_secret(&payload_name(&r.id, &s.key), p).ok())
                .and_then(|p| serde_json::from_slice::<Payload>(&p).ok())
                .or_else(|| current.clone());
            async move {
                let kind = SystemKind::parse(&s.kind).unwrap_or(SystemKind::Manual);
                let mut p = SystemPlan {
                    key: s.key.clone(),
                    kind,
                    action: "none".into(),
                    tables: vec![],
                    error: None,
                };
                if !takes_part(&s, r.kind) {
                    return p;
                }
                if kind == SystemKind::Manual {
                    p.action = "manual".into();
                    return p;
                }
                let Some(payload) = payload else {
                    p.action = "none".into();
                    p.error = Some("the request is closed; nothing is left to do".into());
                    return p;
                };
                match run_tables(svc, &s, r.kind, &payload, true).await {
                    Ok((tables, _)) => {
                        p.action = "run".into();
                        p.tables = tables;
                    }
                    Err(e) => {
                        p.action = "failed".into();
                        p.error = Some(e);
                    }
                }
                p
            }
        })
        .buffered(4)
        .collect()
        .await;
    Ok(plans)
}

/// The rows an access request collected, by system (for its bundle).
pub async fn collected(
    svc: &Services,
    tenant: &str,
    request_id: &str,
) -> Result<Vec<(SystemJob, Vec<TableRows>)>, StoreError> {
    let keys = svc.vault.tenant(svc.store.as_ref(), tenant).await?;
    let jobs = svc.store.request_system_jobs(tenant, request_id).await?;
    Ok(jobs
        .into_iter()
        .map(|j| {
            let rows = j
                .result
                .as_ref()
                .and_then(|b| {
                    keys.open_secret(&result_name(request_id, &j.system), b)
                        .ok()
                })
                .and_then(|p| serde_json::from_slice(&p).ok())
                .unwrap_or_default();
            (j, rows)
        })
        .collect())
}

/// Confirm a manual system's part of a request, with the staff's note.
pub async fn confirm(
    svc: &Services,
    tenant: &str,
    request_id: &str,
    system: &str,
    note: &str,
    actor: &str,
) -> Result<(), Problem> {
    let jobs = svc.store.request_system_jobs(tenant, request_id).await?;
    let Some(job) = jobs.into_iter().find(|j| j.system == system) else {
        return Err(Problem::not_found(format!(
            "request {request_id:?} has no part in system {system:?}"
        )));
    };
    if job.status != "manual" {
        return Err(Problem::conflict(format!(
            "system {system:?} is {}; only a manual system is confirmed by hand",
            job.status
        )));
    }
    let before = job.updated_at;
    let now = time::now().max(before + 1);
    let mut j = job;
    j.status = "done".into();
    j.finished_at = Some(now);
    j.updated_at = now;
    j.attempts += 1;
    j.detail = Some(serde_json::json!({ "note": note, "confirmed_by": actor }));
    if !svc.store.update_system_job(&j, before).await? {
        return Err(Problem::conflict(
            "the request changed at the same time; try again",
        ));
    }
    finish_if_done(svc, tenant, request_id).await?;
    Ok(())
}

/// Complete the request once every system is done.
pub async fn finish_if_done(
    svc: &Services,
    tenant: &str,
    request_id: &str,
) -> Result<bool, StoreError> {
    for _ in 0..5 {
        let jobs = svc.store.request_system_jobs(tenant, request_id).await?;
        if jobs.is_empty() || jobs.iter().any(|j| j.status != "done") {
            return Ok(false);
        }
        let Some(mut r) = svc.store.request(tenant, request_id).await? else {
            return Ok(false);
        };
        if !r.status.is_open() || !r.steps.iter().any(|s| s.action == "complete") {
            return Ok(false);
        }
        let before = r.updated_at;
        let now = time::now().max(before + 1);
        let mut parts = Vec::new();
        for j in &jobs {
            let s = SystemStatus::of(j);
            let mut line = format!("{}: {} row(s)", s.key, s.rows);
            for t in &s.tables {
                if let Some(reason) = &t.reason {
                    line.push_str(&format!(
                        "; {} {} row(s) retained: {reason}",
                        t.table, t.rows
                    ));
                }
            }
            if let Some(n) = &s.note {
                line.push_str(&format!("; confirmed: {n}"));
            }
            parts.push(line);
        }
        r.status = Status::Completed;
        r.closed_at = Some(now);
        r.updated_at = now;
        r.steps.push(RequestStep {
            at: time::rfc3339(now),
            actor: "yinyom".into(),
            action: "systems_done".into(),
            reason: None,
            outcome: Some(format!(
                "done in every connected system: {}",
                parts.join(" · ")
            )),
        });
        if svc.store.update_request(&r, before).await? {
            if r.kind == Kind::Erasure {
                let outcomes: Vec<crate::events::SystemOutcome> =
                    jobs.iter().map(outcome_of).collect();
                if let Err(e) = crate::rights::announce_erased(svc, &r, &outcomes).await {
                    tracing::warn!(request = %r.id, error = %e.detail,
                        "subject.erased could not be recorded");
                }
            }
            if let Err(e) = crate::rights::announce_completed(svc, &r).await {
                tracing::warn!(request = %r.id, error = %e.detail,
                    "request.completed could not be recorded");
            }
            return Ok(true);
        }
    }
    Ok(false)
}

/// A finished job as `subject.erased` carries it: `manual` for a system
/// staff confirmed by hand, else its status.
pub fn outcome_of(j: &SystemJob) -> crate::events::SystemOutcome {
    let confirmed = j
        .detail
        .as_ref()
        .is_some_and(|d| d.get("confirmed_by").is_some());
    crate::events::SystemOutcome {
        key: j.system.clone(),
        status: if confirmed && j.status == "done" {
            "manual".into()
        } else {
            j.status.clone()
        },
        rows: j.rows.max(0) as u64,
        error: j.error.clone(),
    }
}

/// The wait before attempt `attempts + 1`, after `attempts` failures.
fn backoff(config: &SystemsConfig, attempts: i64) -> Duration {
    let factor = 2u32.saturating_pow(attempts.clamp(1, 20) as u32 - 1);
    config
        .retry_base
        .saturating_mul(factor)
        .min(config.retry_max)
}

/// How long a running attempt holds its job before another may take it
/// (after a node died mid-attempt). Longer than an attempt's calls may take
/// (3 s to connect, statements and HTTP calls bounded by their timeouts);
/// the drill `system-outage` showed 5 minutes left a killed node's jobs
/// idle that long.
pub(crate) const LEASE: Micros = 2 * 60 * 1_000_000;
/// Jobs taken a round.
const ROUND: u32 = 64;
/// Systems worked on at once.
const SYSTEMS_AT_ONCE: usize = 16;
/// Jobs of one system carried out at once (its pool's size).
const PER_SYSTEM: usize = 4;

/// The background task (leader only): carries out due jobs and consent
/// propagations, retries failures with backoff.
pub async fn run(svc: Weak<Services>) {
    let Some((wake, propagate_wake)) = svc
        .upgrade()
        .map(|a| (a.systems.wake.clone(), a.systems.propagate_wake.clone()))
    else {
        return;
    };
    // Consent propagation in a loop of its own: it never delays requests.
    tokio::spawn(propagate::run(svc.clone(), propagate_wake));
    // Request hooks' calls too, through the same guarded client.
    tokio::spawn(crate::hooks::run(svc.clone()));
    loop {
        let Some(a) = svc.upgrade() else { return };
        let busy = match round(&a).await {
            Ok(busy) => busy,
            Err(e) => {
                tracing::warn!(error = %e, "connected systems: storage unavailable");
                false
            }
        };
        drop(a);
        if !busy {
            let _ = tokio::time::timeout(Duration::from_millis(500), wake.notified()).await;
        }
    }
}

async fn round(svc: &Arc<Services>) -> Result<bool, StoreError> {
    if !svc.store.lead().await? {
        return Ok(false);
    }
    let now = time::now();
    let due = svc.store.due_system_jobs(now, ROUND).await?;
    let busy = due.len() == ROUND as usize;
    // Systems side by side, each its own jobs a few at a time: a system
    // that is down holds only its own.
    let mut by_system: BTreeMap<(String, String), Vec<SystemJob>> = BTreeMap::new();
    for j in due {
        by_system
            .entry((j.tenant.clone(), j.system.clone()))
            .or_default()
            .push(j);
    }
    let results: Vec<Result<(), StoreError>> = futures_util::stream::iter(by_system.into_values())
        .map(|jobs| run_system(svc, jobs))
        .buffer_unordered(SYSTEMS_AT_ONCE)
        .collect()
        .await;
    results.into_iter().collect::<Result<(), _>>()?;
    Ok(busy)
}

/// One system's due jobs, `PER_SYSTEM` at a time; when a whole batch
/// fails (the system is down), the rest wait for the next retry untried.
async fn run_system(svc: &Arc<Services>, jobs: Vec<SystemJob>) -> Result<(), StoreError> {
    let mut jobs = jobs.into_iter();
    loop {
        let batch: Vec<SystemJob> = jobs.by_ref().take(PER_SYSTEM).collect();
        if batch.is_empty() {
            return Ok(());
        }
        let outcomes =
            futures_util::future::join_all(batch.into_iter().map(|j| attempt(svc, j))).await;
        let outcomes: Vec<Option<String>> = outcomes.into_iter().collect::<Result<_, _>>()?;
        if outcomes.iter().all(Option::is_some) {
            let error = outcomes.into_iter().flatten().next().unwrap_or_default();
            for mut j in jobs {
                let before = j.updated_at;
                let now = time::now().max(before + 1);
                j.next_at = Some(
                    now + backoff(&svc.systems.config, j.attempts.max(1)).as_micros() as Micros,
                );
                j.error = Some(format!(
                    "not tried: the system failed just before ({error})"
                ));
                j.updated_at = now;
                svc.store.update_system_job(&j, before).await?;
            }
            return Ok(());
        }
    }
}

/// One attempt at a job: taken (leased), carried out, settled; the error
/// if it failed.
async fn attempt(svc: &Arc<Services>, mut j: SystemJob) -> Result<Option<String>, StoreError> {
    let before = j.updated_at;
    let now = time::now().max(before + 1);
    j.status = "running".into();
    j.attempts += 1;
    j.next_at = Some(now + LEASE);
    j.updated_at = now;
    if !svc.store.update_system_job(&j, before).await? {
        return Ok(None); // taken by another round
    }
    let taken = j.updated_at;
    let outcome = carry_out(svc, &j).await;
    svc.systems
        .saw(&j.tenant, &j.system, "job", outcome.as_ref().err().cloned());
    let now = time::now().max(taken + 1);
    j.updated_at = now;
    match outcome {
        Ok((tables, rows)) => {
            j.status = "done".into();
            j.rows = tables
                .iter()
                .filter(|t| t.action != "retain")
                .map(|t| t.rows)
                .sum();
            j.error = None;
            j.next_at = None;
            j.finished_at = Some(now);
            j.detail = Some(serde_json::json!({ "tables": tables }));
            if let Some(rows) = rows {
                let keys = svc.vault.tenant(svc.store.as_ref(), &j.tenant).await?;
                let plain = serde_json::to_vec(&rows).unwrap_or_default();
                j.result = Some(keys.seal_secret(&result_name(&j.request_id, &j.system), &plain));
            }
            // The identifiers are no longer needed.
            j.payload = None;
        }
        Err(e) => {
            tracing::warn!(system = %j.system, request = %j.request_id, attempts = j.attempts, error = %e,
                "connected system: attempt failed; retrying later");
            j.status = "failed".into();
            j.error = Some(e);
            j.next_at = Some(now + backoff(&svc.systems.config, j.attempts).as_micros() as Micros);
        }
    }
    if svc.store.update_system_job(&j, taken).await? && j.status == "done" {
        finish_if_done(svc, &j.tenant, &j.request_id).await?;
    }
    Ok(j.error.filter(|_| j.status == "failed"))
}

type Carried = (Vec<TableOutcome>, Option<Vec<TableRows>>);

async fn carry_out(svc: &Arc<Services>, j: &SystemJob) -> Result<Carried, String> {
    let store_err = |e: StoreError| e.to_string();
    let r = svc
        .store
        .request(&j.tenant, &j.request_id)
        .await
        .map_err(store_err)?
        .ok_or("the request no longer exists")?;
    let system = svc
        .store
        .system(&j.tenant, &j.system)
        .await
        .map_err(store_err)?
        .ok_or("the system was removed")?;
    let keys = svc
        .vault
        .tenant(svc.store.as_ref(), &j.tenant)
        .await
        .map_err(|e| e.to_string())?;
    let payload: Payload = j
        .payload
        .as_ref()
        .and_then(|p| {
            keys.open_secret(&payload_name(&j.request_id, &j.system), p)
                .ok()
        })
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or("the subject's identifiers are not readable")?;
    let (tables, rows) = run_tables(svc, &system, r.kind, &payload, false).await?;
    let collect = matches!(r.kind, Kind::Access | Kind::Portability);
    Ok((tables, collect.then_some(rows)))
}

/// The access bundle's files for connected systems: `systems.json` (each
/// system's status, tables, notes) and, per system and table, the
/// subject's rows as `systems/<key>/<table>.json` and `.csv`.
pub async fn bundle_files(
    svc: &Services,
    tenant: &str,
    request_id: &str,
) -> Result<Vec<(String, Vec<u8>)>, Problem> {
    let parts = collected(svc, tenant, request_id).await?;
    if parts.is_empty() {
        return Ok(vec![]);
    }
    let mut files = Vec::new();
    let summary: Vec<serde_json::Value> = parts
        .iter()
        .map(|(j, rows)| {
            serde_json::json!({
                "system": SystemStatus::of(j),
                "tables": rows.iter().map(|t| serde_json::json!({
                    "table": t.table, "columns": t.columns, "rows": t.rows.len(),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    files.push((
        "systems.json".to_string(),
        serde_json::to_vec_pretty(&summary).unwrap_or_default(),
    ));
    for (j, tables) in &parts {
        for t in tables {
            let base = format!("systems/{}/{}", j.system, t.table);
            files.push((
                format!("{base}.json"),
                serde_json::to_vec_pretty(&serde_json::json!({
                    "system": j.system, "table": t.table, "columns": t.columns, "rows": t.rows,
                }))
                .unwrap_or_default(),
            ));
            files.push((format!("{base}.csv"), csv_of(&t.rows)?));
        }
    }
    Ok(files)
}

/// Rows (JSON objects) as CSV: the columns of the first row, in order.
fn csv_of(rows: &[serde_json::Value]) -> Result<Vec<u8>, Problem> {
    let mut header: Vec<String> = Vec::new();
    for r in rows {
        if let Some(o) = r.as_object() {
            for k in o.keys() {
                if !header.contains(k) {
                    header.push(k.clone());
                }
            }
        }
    }
    let fail = |e: csv::Error| Problem::bad_request(format!("bundle: {e}"));
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(&header).map_err(fail)?;
    for r in rows {
        let record: Vec<String> = header
            .iter()
            .map(|k| match &r[k] {
                serde_json::Value::Null => String::new(),
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect();
        w.write_record(&record).map_err(fail)?;
    }
    w.into_inner()
        .map_err(|e| Problem::bad_request(format!("bundle: {e}")))
}
