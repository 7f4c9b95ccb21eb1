//! The SQL implementation of [`Store`], one code path for both databases:
//! SQLite (the embedded default) and PostgreSQL (several nodes).
//!
//! Statements are written once in the SQL both accept (`$n` parameters,
//! `ON CONFLICT … DO UPDATE`, row values) and run through sqlx's `Any`
//! driver; [`Dialect`] holds the few differences: how a write transaction
//! takes its lock and which migrations apply.
//!
//! * SQLite: WAL journal with `synchronous = FULL`, so a committed
//!   transaction has been fsync'd before `commit` returns. Write
//!   transactions start with `BEGIN IMMEDIATE` to take the write lock up
//!   front (a deferred transaction that upgrades can fail with SQLITE_BUSY
//!   instead of waiting).
//! * PostgreSQL: a consent batch locks its tenants' chain heads
//!   (`SELECT … FOR UPDATE`) first, so writers on several nodes append to
//!   one chain in turn; commits are durable with the server's default
//!   `synchronous_commit = on`.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sha2::Digest;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions, AnyRow};
use sqlx::postgres::PgListener;
use sqlx::{Any, AnyPool, Executor, Row};
use yinyom_core::consent::{Action, ConsentRecord, ConsentState, NoticeVersion};
use yinyom_core::ledger::{Broken, Chain, EntryBody, LedgerEntry, Verifier, evidence_hash};
use yinyom_core::notice::{Notice, NoticeDraft, NoticeRef};
use yinyom_core::purpose::{Channel, Purpose};
use yinyom_core::time::{self, Micros};

use super::*;
use crate::events::{self, ConsentEvent};

pub mod hot;
mod messages;
mod outbox;
mod profiles;
mod registry;
mod requests;
mod staff;
mod tracking;
mod verifications;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// The statement that opens a write transaction.
    fn begin(self) -> &'static str {
        match self {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        }
    }

    /// Appended to a `SELECT` of rows the transaction will update.
    fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }
}

pub struct SqlStore {
    pool: AnyPool,
    dialect: Dialect,
    url: String,
    /// PostgreSQL: the notification channel of this database and schema,
    /// on which every change is announced to the other nodes.
    channel: Option<String>,
    /// SQLite: one writer at a time in this process, queued here rather
    /// than in SQLite's busy handler (which sleeps up to 100 ms per retry).
    write_lock: tokio::sync::Mutex<()>,
    /// PostgreSQL: the connection holding the dispatcher's advisory lock
    /// while this node leads.
    leader: tokio::sync::Mutex<Option<sqlx::pool::PoolConnection<Any>>>,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Unavailable(format!("stored JSON is unreadable: {e}"))
}

impl SqlStore {
    /// Open (creating if needed) the SQLite database file at `path` and migrate it.
    pub async fn sqlite(path: &Path) -> Result<Self> {
        // Characters that would end the path part of a URL are escaped.
        let path = path
            .to_string_lossy()
            .replace('%', "%25")
            .replace('?', "%3F")
            .replace('#', "%23");
        Self::connect(&format!("sqlite://{path}")).await
    }

    /// Open from a `sqlite://PATH` or `postgres://…` URL and migrate.
    ///
    /// A PostgreSQL URL may choose a schema with
    /// `?options=-c%20search_path%3DNAME` (the schema must exist).
    pub async fn connect(url: &str) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let (dialect, url) = if let Some(rest) = url.strip_prefix("sqlite:") {
            let sep = if rest.contains('?') { '&' } else { '?' };
            (Dialect::Sqlite, format!("sqlite:{rest}{sep}mode=rwc"))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Dialect::Postgres, url.to_string())
        } else {
            return Err(StoreError::Unavailable(
                "unsupported database URL: use sqlite://PATH or postgres://…".into(),
            ));
        };
        let options: AnyConnectOptions = url.parse().map_err(unavailable)?;
        let pool = match dialect {
            Dialect::Sqlite => AnyPoolOptions::new()
                .max_connections(8)
                .min_connections(1)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
                             PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON;
                             PRAGMA mmap_size = 268435456; PRAGMA cache_size = -16000;
                             PRAGMA secure_delete = ON; PRAGMA optimize = 0x10002;",
                        )
                        .await?;
                        Ok(())
                    })
                }),
            Dialect::Postgres => AnyPoolOptions::new()
                .max_connections(16)
                .min_connections(1)
                .acquire_timeout(Duration::from_secs(10)),
        }
        // A connection still inside a transaction when it comes back is not
        // reused: when a COMMIT fails (SQLite's disk full rolls back by
        // itself), the driver's rollback fails too and the connection would
        // refuse every later BEGIN. The pool opens a fresh one instead.
        .after_release(|conn, _| {
            Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
        })
        .connect_with(options)
        .await
        .map_err(unavailable)?;
        let migrator = match dialect {
            Dialect::Sqlite => &SQLITE_MIGRATIONS,
            Dialect::Postgres => &POSTGRES_MIGRATIONS,
        };
        migrator
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        if dialect == Dialect::Sqlite {
            // Statistics for tables a migration created or changed (bounded
            // work: SQLite limits the rows it reads per index).
            sqlx::query("PRAGMA optimize = 0x10002")
                .execute(&pool)
                .await
                .map_err(unavailable)?;
        }
        let channel = match dialect {
            Dialect::Sqlite => None,
            Dialect::Postgres => {
                // Channels are per database, not per schema: name the
                // channel after the schema so that separate deployments
                // (or test runs) in one database do not hear each other.
                let schema: String = sqlx::query_scalar("SELECT current_schema()::text")
                    .fetch_one(&pool)
                    .await
                    .map_err(unavailable)?;
                let digest = hex::encode(sha2::Sha256::digest(schema.as_bytes()));
                Some(format!("yinyom_{}", &digest[..32]))
            }
        };
        Ok(SqlStore {
            pool,
            dialect,
            url,
            channel,
            write_lock: tokio::sync::Mutex::new(()),
            leader: tokio::sync::Mutex::new(None),
        })
    }

    /// Hold while writing: SQLite has a single writer, and waiting for it
    /// here is prompt and fair. PostgreSQL writers need no such turn.
    async fn exclusive(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.dialect {
            Dialect::Sqlite => Some(self.write_lock.lock().await),
            Dialect::Postgres => None,
        }
    }

    /// Tell every node sharing the database about `change` (PostgreSQL
    /// only). Sent inside a transaction, it is delivered when, and only if,
    /// the transaction commits.
    async fn announce<'e>(
        &self,
        ex: impl Executor<'e, Database = Any>,
        change: &Change,
    ) -> Result<()> {
        let Some(channel) = &self.channel else {
            return Ok(());
        };
        let payload = serde_json::to_string(change).map_err(json_err)?;
        // pg_notify returns void, which no driver type decodes: count it.
        sqlx::query("SELECT count(*) AS n FROM (SELECT pg_notify($1, $2)) AS sent")
            .bind(channel.as_str())
            .bind(payload)
            .fetch_one(ex)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn ledger_rows(
        &self,
        tenant: &str,
        after: u64,
        limit: Option<u32>,
    ) -> Result<Vec<(Option<String>, LedgerEntry)>> {
        let rows = sqlx::query(hot::LEDGER_AFTER)
            .bind(tenant)
            .bind(after as i64)
            .bind(limit.map_or(i64::MAX, i64::from))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get("subject_id"),
                    entry_from_row(r).map_err(StoreError::Unavailable)?,
                ))
            })
            .collect()
    }

    /// The single-threaded verification as it was before jobs: one query
    /// streaming the whole chain, each entry hashed in turn. Kept as the
    /// reference the parallel path ([`crate::verification`]) is measured
    /// against (`yinyom bench --only verify`) and tested to agree with.
    pub async fn verify_ledger_sequential(&self, tenant: &str) -> Result<VerifyReport> {
        let mut verifier = Verifier::default();
        let mut rows = sqlx::query("SELECT * FROM ledger WHERE tenant = $1 ORDER BY seq")
            .bind(tenant)
            .fetch(&self.pool);
        while let Some(r) = rows.try_next().await.map_err(unavailable)? {
            let seq = r.try_get::<i64, _>("seq").unwrap_or(-1) as u64;
            let checked = verifier.checked();
            let result = entry_from_row(&r)
                .map_err(|problem| Broken { seq, problem })
                .and_then(|entry| {
                    let evidence: Option<String> = r.try_get("evidence").ok().flatten();
                    let evidence = match evidence.map(|e| serde_json::from_str(&e)) {
                        Some(Ok(v)) => Some(v),
                        Some(Err(_)) => {
                            return Err(Broken {
                                seq,
                                problem: "evidence is not valid JSON".into(),
                            });
                        }
                        None => None,
                    };
                    verifier.push(&entry, evidence.as_ref())
                });
            if let Err(broken) = result {
                return Ok(VerifyReport {
                    ok: false,
                    checked,
                    broken: Some(broken),
                });
            }
        }
        drop(rows);
        let head = sqlx::query("SELECT seq, hash FROM ledger_heads WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| Chain {
                seq: r.get::<i64, _>("seq") as u64,
                hash: r.get("hash"),
            })
            .unwrap_or_else(Chain::genesis);
        let checked = verifier.checked();
        Ok(match verifier.finish(&head) {
            Ok(checked) => VerifyReport {
                ok: true,
                checked,
                broken: None,
            },
            Err(broken) => VerifyReport {
                ok: false,
                checked,
                broken: Some(broken),
            },
        })
    }

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }
}

/// `($k, $k+1, …), (…)`: `rows` groups of `cols` parameters numbered from
/// `first` (PostgreSQL), or as many `?` (SQLite); bind them in order.
fn groups(d: Dialect, first: usize, rows: usize, cols: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push_str(", ");
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push_str(", ");
            }
            // SQLite looks each `$name` up in a list (quadratic in the
            // number of parameters); anonymous `?`s, bound in order, cost
            // nothing.
            match d {
                Dialect::Sqlite => s.push('?'),
                Dialect::Postgres => {
                    s.push('$');
                    s.push_str(&(first + r * cols + c).to_string());
                }
            }
        }
        s.push(')');
    }
    s
}

type Query<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

fn subject_from_row(row: &AnyRow) -> Result<SubjectRecord> {
    Ok(SubjectRecord {
        id: row.get("id"),
        uid: row.get("uid"),
        data_key: row.get("data_key"),
        profile: row.get("profile"),
        rev: row.get("profile_rev"),
        flags: serde_json::from_str(row.get("flags")).map_err(json_err)?,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

/// Read a ledger row back into the exact entry that was hashed. Rows edited
/// into something unreadable are reported, not panicked on.
fn entry_from_row(row: &AnyRow) -> std::result::Result<LedgerEntry, String> {
    let channel: Option<String> = row.try_get("channel").map_err(|e| e.to_string())?;
    let channel = match channel {
        None => None,
        Some(c) => Some(Channel::parse(&c).ok_or_else(|| format!("unknown channel {c:?}"))?),
    };
    let action: String = row.try_get("action").map_err(|e| e.to_string())?;
    let action = Action::parse(&action).ok_or_else(|| format!("unknown action {action:?}"))?;
    let notice_key: Option<String> = row.try_get("notice_key").map_err(|e| e.to_string())?;
    let notice = match notice_key {
        None => None,
        Some(key) => Some(NoticeRef {
            key,
            version: row
                .try_get::<i64, _>("notice_version")
                .map_err(|e| e.to_string())? as u32,
            hash: row.try_get("notice_hash").map_err(|e| e.to_string())?,
        }),
    };
    let get = |c: &str| row.try_get::<String, _>(c).map_err(|e| e.to_string());
    let get_i = |c: &str| row.try_get::<i64, _>(c).map_err(|e| e.to_string());
    Ok(LedgerEntry {
        seq: get_i("seq")? as u64,
        body: EntryBody {
            tenant: get("tenant")?,
            subject_uid: get("subject_uid")?,
            purpose: get("purpose")?,
            channel,
            action,
            notice,
            source: get("source")?,
            actor: get("actor")?,
            evidence_hash: row.try_get("evidence_hash").map_err(|e| e.to_string())?,
            occurred_at: get_i("occurred_at")?,
            recorded_at: get_i("recorded_at")?,
            expires_at: row.try_get("expires_at").map_err(|e| e.to_string())?,
            receipt: row.try_get("receipt_id").map_err(|e| e.to_string())?,
            guardian: row.try_get::<i64, _>("guardian").unwrap_or(0) != 0,
        },
        prev_hash: get("prev_hash")?,
        hash: get("hash")?,
    })
}

/// Flags as stored: `{}` when none is set (the partial index on flagged
/// subjects counts on it).
pub(crate) fn flags_json(flags: &SubjectFlags) -> Result<String> {
    if *flags == SubjectFlags::default() {
        return Ok("{}".into());
    }
    serde_json::to_string(flags).map_err(json_err)
}

/// Rows of `consent_states` (with `subject_id`), in subject order, as
/// subjects with their records.
fn group_states(tenant: &str, rows: &[AnyRow]) -> Vec<SubjectSnapshot> {
    let mut out: Vec<SubjectSnapshot> = Vec::new();
    for r in rows {
        let uid: String = r.get("subject_uid");
        if out.last().is_none_or(|s| s.uid != uid) {
            out.push(SubjectSnapshot {
                tenant: tenant.to_string(),
                id: r.get("subject_id"),
                uid,
                flags: SubjectFlags::default(),
                records: Vec::new(),
            });
        }
        if let (Some(s), Some(rec)) = (out.last_mut(), record_from_state_row(r)) {
            s.records.push(rec);
        }
    }
    out
}

fn record_from_state_row(row: &AnyRow) -> Option<ConsentRecord> {
    let channel: String = row.get("channel");
    let notice_key: Option<String> = row.get("notice_key");
    Some(ConsentRecord {
        purpose: row.get::<&str, _>("purpose").into(),
        channel: if channel.is_empty() {
            None
        } else {
            Some(Channel::parse(&channel)?)
        },
        state: ConsentState::parse(row.get("state"))?,
        seq: row.get::<i64, _>("seq") as u64,
        occurred_at: row.get("occurred_at"),
        expires_at: row.get("expires_at"),
        notice: notice_key.map(|key| NoticeVersion {
            key: key.into(),
            version: row.get::<Option<i64>, _>("notice_version").unwrap_or(0) as u32,
        }),
        source: row.get::<&str, _>("source").into(),
        guardian: row.try_get::<i64, _>("guardian").unwrap_or(0) != 0,
    })
}

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn subject(&self, tenant: &str, id: &str) -> Result<Option<SubjectRecord>> {
        let row = sqlx::query(hot::SUBJECT)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(subject_from_row).transpose()
    }

    async fn commit(&self, items: &[WriteItem], seal: Sealer<'_>) -> Result<Vec<ItemOutcome>> {
        let _writing = self.exclusive().await;
        // Set-based: a handful of statements per batch, not per item, so a
        // batch costs little more than its fsync. The chain heads are locked
        // first: everything read after that is stable until commit.
        let mut tx = self
            .pool
            .begin_with(self.dialect.begin())
            .await
            .map_err(unavailable)?;
        let mut heads = lock_heads(&mut tx, self.dialect, items).await?;
        let mut seen = prior_idempotency(&mut tx, self.dialect, items).await?;
        let fresh: Vec<&WriteItem> = items
            .iter()
            .filter(|i| {
                i.idempotency
                    .as_ref()
                    .is_none_or(|k| !seen.contains_key(&(i.tenant.clone(), k.key.clone())))
            })
            .collect();
        let uids = ensure_subjects(&mut tx, self.dialect, &fresh).await?;

        let mut outcomes = Vec::with_capacity(items.len());
        let mut rows = Rows::default();
        for item in items {
            if let Some(idem) = &item.idempotency
                && let Some((hash, response)) = seen.get(&(item.tenant.clone(), idem.key.clone()))
            {
                outcomes.push(if *hash == idem.request_hash {
                    ItemOutcome::Replayed {
                        response: response.clone(),
                    }
                } else {
                    ItemOutcome::KeyReused
                });
                continue;
            }
            let recorded_at = time::now();
            let uid = uids
                .get(&(item.tenant.clone(), item.subject_id.clone()))
                .cloned()
                .ok_or_else(|| StoreError::Unavailable("subject row missing".into()))?;
            let chain = heads
                .get_mut(&item.tenant)
                .ok_or_else(|| StoreError::Unavailable("chain head missing".into()))?;
            let ev_hash = item.evidence.as_ref().map(evidence_hash);
            let entries: Vec<LedgerEntry> = item
                .actions
                .iter()
                .map(|a| {
                    chain.append(EntryBody {
                        tenant: item.tenant.clone(),
                        subject_uid: uid.clone(),
                        purpose: a.purpose.clone(),
                        channel: a.channel,
                        action: a.action,
                        notice: item.notice.clone(),
                        source: item.source.clone(),
                        actor: item.actor.clone(),
                        evidence_hash: ev_hash.clone(),
                        occurred_at: item.occurred_at,
                        recorded_at,
                        expires_at: a.expires_at,
                        receipt: item
                            .receipt
                            .as_ref()
                            .filter(|_| a.action == Action::Grant)
                            .map(|r| r.id.clone()),
                        guardian: item.guardian && a.action == Action::Grant,
                    })
                })
                .collect();
            let response = seal(item, &entries);
            // Replays and reused keys were skipped above: index evidence by
            // written item, not by position in the batch.
            let written = rows.evidence.len();
            rows.evidence
                .push(item.evidence.as_ref().map(|e| e.to_string()));
            for e in &entries {
                rows.entries.push((e.clone(), written));
            }
            if let Some(r) = &item.receipt {
                rows.receipts.push((&item.tenant, uid.clone(), r));
            }
            if let Some(idem) = &item.idempotency {
                seen.insert(
                    (item.tenant.clone(), idem.key.clone()),
                    (idem.request_hash.clone(), response.clone()),
                );
                rows.idempotency.push((
                    &item.tenant,
                    &idem.key,
                    &idem.request_hash,
                    response.to_string(),
                    recorded_at,
                ));
            }
            outcomes.push(ItemOutcome::Written {
                subject_uid: uid,
                entries,
                response,
            });
        }

        insert_entries(&mut tx, self.dialect, &rows).await?;
        insert_rows(
            &mut tx,
            self.dialect,
            "INSERT INTO receipts (tenant, id, subject_uid, jws, created_at)",
            "",
            &rows.receipts,
            5,
            |q, (tenant, uid, r)| {
                q.bind(tenant.as_str())
                    .bind(r.id.as_str())
                    .bind(uid.as_str())
                    .bind(r.jws.as_str())
                    .bind(r.created_at)
            },
        )
        .await?;
        insert_rows(
            &mut tx,
            self.dialect,
            "INSERT INTO idempotency_keys (tenant, key, request_hash, response, created_at)",
            "",
            &rows.idempotency,
            5,
            |q, (tenant, key, hash, response, at)| {
                q.bind(tenant.as_str())
                    .bind(key.as_str())
                    .bind(hash.as_str())
                    .bind(response.as_str())
                    .bind(*at)
            },
        )
        .await?;
        for (tenant, head) in &heads {
            sqlx::query("UPDATE ledger_heads SET seq = $1, hash = $2 WHERE tenant = $3")
                .bind(head.seq as i64)
                .bind(head.hash.as_str())
                .bind(tenant.as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        for tenant in heads.keys() {
            self.announce(
                &mut *tx,
                &Change::Ledger {
                    tenant: tenant.clone(),
                },
            )
            .await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(outcomes)
    }

    async fn idempotent_response(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(String, serde_json::Value)>> {
        let row = sqlx::query(
            "SELECT request_hash, response FROM idempotency_keys WHERE tenant = $1 AND key = $2",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.map(|r| {
            Ok((
                r.get("request_hash"),
                serde_json::from_str(r.get("response")).map_err(json_err)?,
            ))
        })
        .transpose()
    }

    async fn history(&self, tenant: &str, subject_uid: &str) -> Result<Vec<LedgerEntry>> {
        let rows = sqlx::query(hot::HISTORY)
            .bind(tenant)
            .bind(subject_uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| entry_from_row(r).map_err(StoreError::Unavailable))
            .collect()
    }

    async fn evidence(
        &self,
        tenant: &str,
        subject_uid: &str,
    ) -> Result<std::collections::BTreeMap<u64, serde_json::Value>> {
        let rows = sqlx::query(hot::EVIDENCE)
            .bind(tenant)
            .bind(subject_uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut out = std::collections::BTreeMap::new();
        for r in rows {
            let seq: i64 = r.try_get("seq").map_err(unavailable)?;
            let text: String = r.try_get("evidence").map_err(unavailable)?;
            let v = serde_json::from_str(&text).map_err(json_err)?;
            out.insert(seq as u64, v);
        }
        Ok(out)
    }

    async fn receipts(&self, tenant: &str, subject_uid: &str) -> Result<Vec<StoredReceipt>> {
        let rows = sqlx::query(hot::RECEIPTS)
            .bind(tenant)
            .bind(subject_uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| StoredReceipt {
                id: r.get("id"),
                jws: r.get("jws"),
                created_at: r.get("created_at"),
            })
            .collect())
    }

    async fn store_id(&self) -> Result<String> {
        sqlx::query("SELECT value FROM store_meta WHERE key = 'store_id'")
            .fetch_one(&self.pool)
            .await
            .map(|r| r.get("value"))
            .map_err(unavailable)
    }

    async fn states_page(
        &self,
        tenant: &str,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<SubjectSnapshot>> {
        let rows = sqlx::query(
            "SELECT s.id AS subject_id, c.* FROM subjects s
               JOIN consent_states c ON c.tenant = s.tenant AND c.subject_uid = s.uid
             WHERE s.tenant = $1 AND s.id > $2
             ORDER BY s.id LIMIT $3",
        )
        .bind(tenant)
        .bind(after_id)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let full = rows.len() as u64 == u64::from(limit.max(1));
        let mut page = group_states(tenant, &rows);
        if full && let Some(last) = page.pop() {
            // The page may end inside its last subject: that one is read
            // whole, on its own when it is all the page holds.
            if page.is_empty() {
                let rows = sqlx::query(
                    "SELECT s.id AS subject_id, c.* FROM subjects s
                       JOIN consent_states c ON c.tenant = s.tenant AND c.subject_uid = s.uid
                     WHERE s.tenant = $1 AND s.id = $2",
                )
                .bind(tenant)
                .bind(&last.id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                page = group_states(tenant, &rows);
            }
        }
        Ok(page)
    }

    async fn flagged_subjects(&self, tenant: &str) -> Result<Vec<(String, SubjectFlags)>> {
        let rows =
            sqlx::query("SELECT id, flags FROM subjects WHERE tenant = $1 AND flags <> '{}'")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get("id"),
                    serde_json::from_str(r.get("flags")).map_err(json_err)?,
                ))
            })
            .collect()
    }

    async fn subject_states(&self, tenant: &str, id: &str) -> Result<Vec<ConsentRecord>> {
        let rows = sqlx::query(
            "SELECT c.* FROM subjects s
               JOIN consent_states c ON c.tenant = s.tenant AND c.subject_uid = s.uid
             WHERE s.tenant = $1 AND s.id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().filter_map(record_from_state_row).collect())
    }

    async fn ledger(&self, tenant: &str) -> Result<Vec<(Option<String>, LedgerEntry)>> {
        self.ledger_rows(tenant, 0, None).await
    }

    async fn ledger_after(
        &self,
        tenant: &str,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<(Option<String>, LedgerEntry)>> {
        self.ledger_rows(tenant, seq, Some(limit)).await
    }

    async fn lead(&self) -> Result<bool> {
        let Some(channel) = &self.channel else {
            // SQLite: this process is the only one.
            return Ok(true);
        };
        let mut held = self.leader.lock().await;
        if let Some(conn) = held.as_mut() {
            if sqlx::query("SELECT 1").execute(&mut **conn).await.is_ok() {
                return Ok(true);
            }
            // The connection (and with it the lock) is gone.
            *held = None;
        }
        let digest = sha2::Sha256::digest(channel.as_bytes());
        let key = i64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]));
        let mut conn = self.pool.acquire().await.map_err(unavailable)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut *conn)
            .await
            .map_err(unavailable)?;
        if got {
            *held = Some(conn);
        }
        Ok(got)
    }

    async fn heads(&self) -> Result<HashMap<String, u64>> {
        let rows = sqlx::query("SELECT tenant, seq FROM ledger_heads")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| (r.get("tenant"), r.get::<i64, _>("seq") as u64))
            .collect())
    }

    async fn subjects_changed_since(
        &self,
        since: Micros,
    ) -> Result<Vec<(String, String, SubjectFlags)>> {
        let rows = sqlx::query(hot::SUBJECTS_CHANGED_SINCE)
            .bind(since)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get("tenant"),
                    r.get("id"),
                    serde_json::from_str(r.get("flags")).map_err(json_err)?,
                ))
            })
            .collect()
    }

    async fn follow(&self) -> Result<Option<ChangeFeed>> {
        let Some(channel) = self.channel.clone() else {
            return Ok(None);
        };
        let mut listener = PgListener::connect(&self.url).await.map_err(unavailable)?;
        listener.listen(&channel).await.map_err(unavailable)?;
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        tokio::spawn(async move {
            loop {
                let received = tokio::select! {
                    _ = tx.closed() => return,
                    r = listener.try_recv() => r,
                };
                let change = match received {
                    Ok(Some(n)) => match serde_json::from_str::<Change>(n.payload()) {
                        Ok(change) => change,
                        Err(e) => {
                            tracing::warn!(error = %e, "unreadable change notification");
                            continue;
                        }
                    },
                    // The connection was lost; the next call reconnects.
                    // Whatever was announced meanwhile is not redelivered.
                    Ok(None) => Change::Resync,
                    Err(e) => {
                        tracing::warn!(error = %e, "change feed: reconnecting");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                };
                if tx.send(change).await.is_err() {
                    return;
                }
            }
        });
        Ok(Some(rx))
    }
}

/// Rows per multi-row statement: well under SQLite's limit of 32,766 and
/// PostgreSQL's of 65,535 bound parameters for the widest table (19 columns).
const CHUNK: usize = 500;

/// The rows a batch adds, gathered before they are written set-wise.
#[derive(Default)]
struct Rows<'a> {
    /// Each entry with the index of its item's evidence in `evidence`.
    entries: Vec<(LedgerEntry, usize)>,
    /// Evidence JSON per written item.
    evidence: Vec<Option<String>>,
    receipts: Vec<(&'a String, String, &'a StoredReceipt)>,
    idempotency: Vec<(&'a String, &'a String, &'a String, String, Micros)>,
}

type Key = (String, String);
type Tx<'c> = sqlx::Transaction<'c, Any>;

/// `head VALUES (…), (…) tail` in chunks of [`CHUNK`] rows, each row's
/// `cols` parameters bound by `bind`.
async fn insert_rows<T>(
    tx: &mut Tx<'_>,
    d: Dialect,
    head: &str,
    tail: &str,
    rows: &[T],
    cols: usize,
    bind: impl for<'a> Fn(Query<'a>, &'a T) -> Query<'a>,
) -> Result<()> {
    for chunk in rows.chunks(CHUNK) {
        let sql = format!("{head} VALUES {}{tail}", groups(d, 1, chunk.len(), cols));
        let mut q = sqlx::query(&sql);
        for row in chunk {
            q = bind(q, row);
        }
        q.execute(&mut **tx).await.map_err(unavailable)?;
    }
    Ok(())
}

/// `select WHERE (a, b) IN (VALUES …)` over `pairs`, in chunks; each
/// returned row goes to `each`.
async fn select_pairs(
    tx: &mut Tx<'_>,
    d: Dialect,
    select: &str,
    pairs: &[(&String, &String)],
    mut each: impl FnMut(&AnyRow) -> Result<()>,
) -> Result<()> {
    for chunk in pairs.chunks(CHUNK) {
        let sql = format!("{select} IN (VALUES {})", groups(d, 1, chunk.len(), 2));
        let mut q = sqlx::query(&sql);
        for (a, b) in chunk {
            q = q.bind(a.as_str()).bind(b.as_str());
        }
        for r in q.fetch_all(&mut **tx).await.map_err(unavailable)? {
            each(&r)?;
        }
    }
    Ok(())
}

/// Lock the chain head of every tenant in the batch (creating it at
/// genesis if the tenant has none), in a fixed order so that concurrent
/// writers cannot deadlock, and return the heads.
async fn lock_heads(
    tx: &mut Tx<'_>,
    d: Dialect,
    items: &[WriteItem],
) -> Result<HashMap<String, Chain>> {
    let tenants: BTreeSet<&String> = items.iter().map(|i| &i.tenant).collect();
    let genesis = Chain::genesis();
    let select = format!(
        "SELECT seq, hash FROM ledger_heads WHERE tenant = $1{}",
        d.for_update()
    );
    let mut heads = HashMap::new();
    for tenant in tenants {
        sqlx::query(
            "INSERT INTO ledger_heads (tenant, seq, hash) VALUES ($1, 0, $2) ON CONFLICT (tenant) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(genesis.hash.as_str())
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        let r = sqlx::query(&select)
            .bind(tenant.as_str())
            .fetch_one(&mut **tx)
            .await
            .map_err(unavailable)?;
        heads.insert(
            tenant.clone(),
            Chain {
                seq: r.get::<i64, _>("seq") as u64,
                hash: r.get("hash"),
            },
        );
    }
    Ok(heads)
}

/// Earlier uses of the batch's idempotency keys: (tenant, key) → (request hash, response).
async fn prior_idempotency(
    tx: &mut Tx<'_>,
    d: Dialect,
    items: &[WriteItem],
) -> Result<HashMap<Key, (String, serde_json::Value)>> {
    let mut found = HashMap::new();
    let wanted: Vec<(&String, &String)> = items
        .iter()
        .filter_map(|i| i.idempotency.as_ref().map(|k| (&i.tenant, &k.key)))
        .collect();
    select_pairs(
        tx,
        d,
        "SELECT tenant, key, request_hash, response FROM idempotency_keys WHERE (tenant, key)",
        &wanted,
        |r| {
            found.insert(
                (r.get("tenant"), r.get("key")),
                (
                    r.get("request_hash"),
                    serde_json::from_str(r.get("response")).map_err(json_err)?,
                ),
            );
            Ok(())
        },
    )
    .await?;
    Ok(found)
}

/// The uids of the items' subjects, (tenant, id) → uid, creating the
/// subjects that do not exist yet. A subject created meanwhile by another
/// writer (a `PUT /v1/subjects` on another node) is read back, not
/// duplicated.
async fn ensure_subjects(
    tx: &mut Tx<'_>,
    d: Dialect,
    items: &[&WriteItem],
) -> Result<HashMap<Key, String>> {
    ensure_subject_ids(tx, d, items.iter().map(|i| (&i.tenant, &i.subject_id))).await
}

/// [`ensure_subjects`] for (tenant, id) pairs.
async fn ensure_subject_ids<'a>(
    tx: &mut Tx<'_>,
    d: Dialect,
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<HashMap<Key, String>> {
    let wanted: Vec<(&String, &String)> = pairs.collect::<BTreeSet<_>>().into_iter().collect();
    let mut found = HashMap::new();
    let select = "SELECT tenant, id, uid FROM subjects WHERE (tenant, id)";
    select_pairs(tx, d, select, &wanted, |r| {
        found.insert((r.get("tenant"), r.get("id")), r.get("uid"));
        Ok(())
    })
    .await?;
    let missing: Vec<(&String, &String)> = wanted
        .into_iter()
        .filter(|(t, id)| !found.contains_key(&((*t).clone(), (*id).clone())))
        .collect();
    if missing.is_empty() {
        return Ok(found);
    }
    let at = time::now();
    // Time-ordered uids: index inserts append instead of splitting pages.
    let new: Vec<(&String, &String, String)> = missing
        .iter()
        .map(|(t, id)| (*t, *id, uuid::Uuid::now_v7().to_string()))
        .collect();
    insert_rows(
        tx,
        d,
        "INSERT INTO subjects (tenant, id, uid, created_at, updated_at)",
        " ON CONFLICT (tenant, id) DO NOTHING",
        &new,
        5,
        |q, (tenant, id, uid)| {
            q.bind(tenant.as_str())
                .bind(id.as_str())
                .bind(uid.as_str())
                .bind(at)
                .bind(at)
        },
    )
    .await?;
    select_pairs(tx, d, select, &missing, |r| {
        found.insert((r.get("tenant"), r.get("id")), r.get("uid"));
        Ok(())
    })
    .await?;
    Ok(found)
}

/// Append the ledger rows and fold them into `consent_states`. Current
/// state follows the latest `(occurred_at, seq)`, like the domain fold; an
/// older event (an import of history) leaves it alone. Only the latest
/// entry per state row is written (PostgreSQL refuses to update one row
/// twice in a statement).
async fn insert_entries(tx: &mut Tx<'_>, d: Dialect, rows: &Rows<'_>) -> Result<()> {
    let ledger: Vec<(&LedgerEntry, Option<&str>)> = rows
        .entries
        .iter()
        .map(|(e, item)| (e, rows.evidence[*item].as_deref()))
        .collect();
    insert_rows(tx, d,
        "INSERT INTO ledger (tenant, seq, subject_uid, purpose, channel, action, notice_key, notice_version,
            notice_hash, source, actor, evidence_hash, evidence, occurred_at, recorded_at, expires_at, receipt_id,
            prev_hash, hash, guardian)",
        "",
        &ledger,
        20,
        |q, (e, evidence)| {
            let b = &e.body;
            q.bind(b.tenant.as_str())
                .bind(e.seq as i64)
                .bind(b.subject_uid.as_str())
                .bind(b.purpose.as_str())
                .bind(b.channel.map(Channel::as_str))
                .bind(b.action.as_str())
                .bind(b.notice.as_ref().map(|n| n.key.as_str()))
                .bind(b.notice.as_ref().map(|n| n.version as i64))
                .bind(b.notice.as_ref().map(|n| n.hash.as_str()))
                .bind(b.source.as_str())
                .bind(b.actor.as_str())
                .bind(b.evidence_hash.as_deref())
                .bind(*evidence)
                .bind(b.occurred_at)
                .bind(b.recorded_at)
                .bind(b.expires_at)
                .bind(b.receipt.as_deref())
                .bind(e.prev_hash.as_str())
                .bind(e.hash.as_str())
                .bind(i64::from(b.guardian))
        },
    )
    .await?;

    write_outbox(tx, d, &ledger).await?;

    let mut latest: HashMap<(&str, &str, &str, Option<Channel>), &LedgerEntry> = HashMap::new();
    // Flag changes (restrict, object, …) set no consent state.
    for (e, _) in rows
        .entries
        .iter()
        .filter(|(e, _)| e.body.action.is_consent())
    {
        let b = &e.body;
        let key = (
            b.tenant.as_str(),
            b.subject_uid.as_str(),
            b.purpose.as_str(),
            b.channel,
        );
        let slot = latest.entry(key).or_insert(e);
        if (b.occurred_at, e.seq) > (slot.body.occurred_at, slot.seq) {
            *slot = e;
        }
    }
    let mut states: Vec<&LedgerEntry> = latest.into_values().collect();
    states.sort_by_key(|e| e.seq);
    insert_rows(tx, d,
        "INSERT INTO consent_states (tenant, subject_uid, purpose, channel, state, seq, occurred_at, expires_at,
            notice_key, notice_version, source, guardian)",
        " ON CONFLICT (tenant, subject_uid, purpose, channel) DO UPDATE SET
            state = excluded.state, seq = excluded.seq, occurred_at = excluded.occurred_at,
            expires_at = excluded.expires_at, notice_key = excluded.notice_key,
            notice_version = excluded.notice_version, source = excluded.source,
            guardian = excluded.guardian
         WHERE (excluded.occurred_at, excluded.seq) > (consent_states.occurred_at, consent_states.seq)",
        &states,
        12,
        |q, e| {
            let b = &e.body;
            q.bind(b.tenant.as_str())
                .bind(b.subject_uid.as_str())
                .bind(b.purpose.as_str())
                .bind(b.channel.map(Channel::as_str).unwrap_or(""))
                .bind(b.action.state().unwrap_or(ConsentState::Unspecified).as_str())
                .bind(e.seq as i64)
                .bind(b.occurred_at)
                .bind(b.expires_at)
                .bind(b.notice.as_ref().map(|n| n.key.as_str()))
                .bind(b.notice.as_ref().map(|n| n.version as i64))
                .bind(b.source.as_str())
                .bind(i64::from(b.guardian))
        },
    )
    .await
}

/// (tenant, subject uid, purpose, channel or '') of a `consent_states` row.
type StateKey = (String, String, String, String);

/// One outbox row per entry, with the state in force before and after it,
/// computed from `consent_states` before this batch updates it.
async fn write_outbox(
    tx: &mut Tx<'_>,
    d: Dialect,
    ledger: &[(&LedgerEntry, Option<&str>)],
) -> Result<()> {
    let key = |e: &LedgerEntry| -> StateKey {
        let b = &e.body;
        (
            b.tenant.clone(),
            b.subject_uid.clone(),
            b.purpose.clone(),
            b.channel.map(Channel::as_str).unwrap_or("").to_string(),
        )
    };
    let keys: Vec<_> = ledger
        .iter()
        .map(|(e, _)| key(e))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // (state, occurred_at, seq) per key.
    let mut current: HashMap<StateKey, (ConsentState, Micros, u64)> = HashMap::new();
    for chunk in keys.chunks(CHUNK) {
        let sql = format!(
            "SELECT tenant, subject_uid, purpose, channel, state, occurred_at, seq FROM consent_states
             WHERE (tenant, subject_uid, purpose, channel) IN (VALUES {})",
            groups(d, 1, chunk.len(), 4)
        );
        let mut q = sqlx::query(&sql);
        for (t, u, p, c) in chunk {
            q = q
                .bind(t.as_str())
                .bind(u.as_str())
                .bind(p.as_str())
                .bind(c.as_str());
        }
        for r in q.fetch_all(&mut **tx).await.map_err(unavailable)? {
            let state = ConsentState::parse(r.get("state")).unwrap_or(ConsentState::Unspecified);
            current.insert(
                (
                    r.get("tenant"),
                    r.get("subject_uid"),
                    r.get("purpose"),
                    r.get("channel"),
                ),
                (state, r.get("occurred_at"), r.get::<i64, _>("seq") as u64),
            );
        }
    }
    let mut rows = Vec::with_capacity(ledger.len());
    for (e, _) in ledger {
        let slot = current
            .entry(key(e))
            .or_insert((ConsentState::Unspecified, i64::MIN, 0));
        let before = slot.0;
        if let Some(state) = e.body.action.state()
            && (e.body.occurred_at, e.seq) > (slot.1, slot.2)
        {
            *slot = (state, e.body.occurred_at, e.seq);
        }
        rows.push((*e, before, slot.0));
    }
    let now = time::now();
    insert_rows(
        tx,
        d,
        "INSERT INTO outbox (tenant, seq, subject_uid, purpose, kind, before_state, after_state, created_at)",
        "",
        &rows,
        8,
        |q, (e, before, after)| {
            q.bind(e.body.tenant.as_str())
                .bind(e.seq as i64)
                .bind(e.body.subject_uid.as_str())
                .bind(e.body.purpose.as_str())
                .bind(events::kind(e.body.action))
                .bind(before.as_str())
                .bind(after.as_str())
                .bind(now)
        },
    )
    .await
}
