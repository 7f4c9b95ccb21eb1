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
//! * PostgreSQL: a consent batch locks its tenants' chain heads first (an
//!   upsert that changes nothing, returning the head), so writers on
//!   several nodes append to one chain in turn; the batch's rows are then
//!   written by one statement (`ledger.rs`, `write_batch_pg`); commits are
//!   durable with the server's default `synchronous_commit = on`.

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
use yinyom_core::ledger::{Broken, Chain, EntryBody, Head, LedgerEntry, Verifier, evidence_hash};
use yinyom_core::notice::{Notice, NoticeDraft, NoticeRef};
use yinyom_core::purpose::{Channel, Purpose};
use yinyom_core::time::{self, Micros};

use super::*;
use crate::events::{self, ConsentEvent};

mod banner;
mod checkpoints;
mod current;
mod hooks;
pub mod hot;
mod ledger;
use ledger::ensure_subject_ids;
mod messages;
mod outbox;
mod profiles;
mod raw;
mod registry;
mod requests;
mod staff;
mod systems;
mod tcf;
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
    /// The native pool ledger verification reads with (opened on first use).
    reader: tokio::sync::OnceCell<verifications::Reader>,
    /// SQLite: the native connection consent batches are written through
    /// (`ledger/sqlite.rs`; opened on first use).
    writer: tokio::sync::OnceCell<Writer>,
    /// Each tenant's number of ledger partitions (fixed at its creation).
    partitions: std::sync::Mutex<HashMap<String, u32>>,
    /// Batches committing at once on PostgreSQL ([`crate::store::Ledger::write_lanes`]).
    write_lanes: std::sync::atomic::AtomicUsize,
}

/// On PostgreSQL an entry's `seq` is `xid * 2^SEQ_SHIFT + i`: its
/// transaction's id (taken after the partition locks) and its place in the
/// transaction. A transaction writes fewer than 2^20 entries.
pub(crate) const SEQ_SHIFT: u32 = 20;

/// PostgreSQL: every entry below this `seq` is committed or will never be:
/// no transaction that could write one is still running.
///
/// Transactions still running in the snapshot (`pg_snapshot_xip`) hold it
/// back, except those seen running without an advisory lock: a ledger
/// writer takes its partition locks before its transaction id and holds
/// them to its end, so those write no entries. Thus a long transaction of
/// another program in the same cluster does not stall followers. A
/// transaction that ended since the snapshot, or one this user may not
/// see, holds it back (the safe side); one not started yet gets an id past
/// the snapshot's `xmax`.
pub(crate) const PG_HORIZON: &str = "(WITH s AS (SELECT pg_current_snapshot() AS snap)
    SELECT LEAST(pg_snapshot_xmax(snap)::text::bigint,
        COALESCE((SELECT MIN(x::text::bigint) FROM pg_snapshot_xip(snap) AS x
            WHERE NOT EXISTS (SELECT 1 FROM pg_stat_activity a
                WHERE a.backend_xid::text = (x::text::bigint % 4294967296)::text
                  AND NOT EXISTS (SELECT 1 FROM pg_locks l
                      WHERE l.pid = a.pid AND l.locktype = 'advisory'))),
            pg_snapshot_xmax(snap)::text::bigint)) * 1048576
    FROM s)";

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
                             PRAGMA secure_delete = ON; PRAGMA analysis_limit = 1000;
                             PRAGMA optimize = 0x10002;",
                        )
                        .await?;
                        let limit = format!("PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}");
                        conn.execute(limit.as_str()).await?;
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
            // Statistics for tables a migration created or changed, or that
            // grew since (an import). Bounded work: `analysis_limit` (set on
            // every connection) has ANALYZE read about 1,000 rows per index;
            // without it the first start after an import of 1M records
            // spent 0.3-0.5 s here, sampling every row for `sqlite_stat4`.
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
            reader: tokio::sync::OnceCell::new(),
            writer: tokio::sync::OnceCell::new(),
            partitions: std::sync::Mutex::new(HashMap::new()),
            write_lanes: std::sync::atomic::AtomicUsize::new(1),
        })
    }

    /// Batches committing at once on PostgreSQL that `yinyom bench`
    /// compares with one (each on its own connection; batches of one
    /// partition wait for each other's lock). The default is one: on two
    /// cores shared with the database, more measured slower.
    pub const PG_WRITE_LANES: usize = 4;

    /// A write transaction (`BEGIN IMMEDIATE` on SQLite, so the write lock
    /// is taken at once).
    async fn begin(&self) -> Result<Tx<'static>> {
        self.pool
            .begin_with(self.dialect.begin())
            .await
            .map_err(unavailable)
    }

    /// Set how many batches may commit at once on PostgreSQL (at least 1;
    /// SQLite always commits one at a time). Read when a writer starts
    /// (`yinyom serve --write-lanes`).
    pub fn set_write_lanes(&self, lanes: usize) {
        self.write_lanes
            .store(lanes.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The number of ledger partitions of `tenant` (fixed at its creation,
    /// so read once).
    pub(crate) async fn partition_count(
        &self,
        tenant: &str,
        tx: Option<&mut sqlx::AnyConnection>,
    ) -> Result<u32> {
        if let Some(n) = self.cached_partition_count(tenant) {
            return Ok(n);
        }
        let q = sqlx::query_scalar("SELECT partitions FROM tenants WHERE id = $1").bind(tenant);
        let n: Option<i64> = match tx {
            Some(conn) => q.fetch_optional(conn).await,
            None => q.fetch_optional(&self.pool).await,
        }
        .map_err(unavailable)?;
        Ok(self.remember_partition_count(tenant, n))
    }

    /// [`Self::partition_count`] when it has been read before.
    pub(crate) fn cached_partition_count(&self, tenant: &str) -> Option<u32> {
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(tenant)
            .copied()
    }

    /// [`Self::partition_count`] from `tenants.partitions` as read
    /// (`None`: no such tenant), kept for next time.
    pub(crate) fn remember_partition_count(&self, tenant: &str, stored: Option<i64>) -> u32 {
        // A tenant not (yet) stored is not cached: it may be created.
        let Some(n) = stored else {
            return yinyom_core::ledger::PARTITIONS;
        };
        let n = u32::try_from(n.clamp(1, 4096)).unwrap_or(1);
        self.partitions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(tenant.to_string(), n);
        n
    }

    /// The recorded head of each partition of `tenant` that has entries.
    pub(crate) async fn partition_heads(&self, tenant: &str) -> Result<Vec<Head>> {
        let rows = sqlx::query(
            "SELECT part, size, hash, last_seq FROM ledger_partitions WHERE tenant = $1
             ORDER BY part",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| Head {
                partition: r.get::<i64, _>("part") as u32,
                chain: Chain {
                    seq: r.get::<i64, _>("size") as u64,
                    hash: r.get("hash"),
                },
                last_seq: r.get::<i64, _>("last_seq") as u64,
            })
            .collect())
    }

    /// The bound below which a reader of `seq > cursor` takes entries:
    /// everything (SQLite, one writer: entries commit in `seq` order), or
    /// PostgreSQL's horizon ([`PG_HORIZON`]). An older horizon is as safe
    /// as the latest, only less fresh.
    pub(crate) async fn horizon(&self) -> Result<i64> {
        match self.dialect {
            Dialect::Sqlite => Ok(i64::MAX),
            Dialect::Postgres => sqlx::query_scalar(&format!("SELECT {PG_HORIZON}"))
                .fetch_one(&self.pool)
                .await
                .map_err(unavailable),
        }
    }

    /// Hold while writing: SQLite has a single writer, and waiting for it
    /// here is prompt and fair. PostgreSQL writers need no such turn.
    async fn exclusive(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match self.dialect {
            Dialect::Sqlite => Some(self.write_lock.lock().await),
            Dialect::Postgres => None,
        }
    }

    /// SQLite: the native pool of one connection that consent batches are
    /// written through, set up like the `Any` pool's connections (WAL,
    /// `synchronous = FULL`: a committed batch has been fsync'd), and the
    /// WAL checkpointer beside it.
    async fn writer(&self) -> Result<&Writer> {
        self.writer
            .get_or_try_init(|| async {
                let options: sqlx::sqlite::SqliteConnectOptions =
                    self.url.parse().map_err(unavailable)?;
                let options = options
                    .journal_mode(sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .pragma("mmap_size", "268435456")
                    // A batch of an import dirties tens of MB: kept in
                    // memory until its commit writes them to the WAL once.
                    .pragma("cache_size", "-65536")
                    .pragma("secure_delete", "ON")
                    // Checkpoints run beside the writer (`Writer`).
                    .pragma("wal_autocheckpoint", "0")
                    .pragma("journal_size_limit", WAL_SIZE_LIMIT);
                let pool = sqlx::sqlite::SqlitePoolOptions::new()
                    .max_connections(1)
                    .min_connections(0)
                    .idle_timeout(Duration::from_secs(300))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(options)
                    .await
                    .map_err(unavailable)?;
                Ok(Writer {
                    pool,
                    checkpoints: checkpointer(self.pool.clone()),
                })
            })
            .await
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
        // A page after a cursor stops at the horizon; the whole ledger
        // (an export) is everything committed.
        let horizon = match limit {
            Some(_) => self.horizon().await?,
            None => i64::MAX,
        };
        let rows = sqlx::query(hot::LEDGER_AFTER)
            .bind(tenant)
            .bind(after as i64)
            .bind(horizon)
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
        let sql = format!(
            "SELECT l.*, {EVIDENCE_OF_ROW} AS evidence FROM ledger l WHERE l.tenant = $1 ORDER BY l.seq"
        );
        let mut rows = sqlx::query(&sql).bind(tenant).fetch(&self.pool);
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
        let heads = self.partition_heads(tenant).await?;
        let checked = verifier.checked();
        Ok(match verifier.finish_partitions(&heads) {
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
/// `$first, $first+1, …` (`n` of them): a list after other numbered
/// parameters (SQLite's anonymous `?` would be numbered from 1 again by
/// the driver, so a statement that names `$1` names every parameter).
fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

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
        partition: get_i("part")? as u32,
        pseq: get_i("pseq")? as u64,
        body: EntryBody {
            tenant: get("tenant")?,
            subject_uid: get("subject_uid")?,
            purpose: get("purpose")?,
            channel,
            action,
            notice,
            source: get("source")?,
            actor: get("actor")?,
            evidence_hash: stored_hash_opt(row, "evidence_hash")?,
            occurred_at: get_i("occurred_at")?,
            recorded_at: get_i("recorded_at")?,
            expires_at: row.try_get("expires_at").map_err(|e| e.to_string())?,
            receipt: row.try_get("receipt_id").map_err(|e| e.to_string())?,
            guardian: row.try_get::<i64, _>("guardian").unwrap_or(0) != 0,
        },
        prev_hash: stored_hash(row, "prev_hash")?,
        hash: stored_hash(row, "hash")?,
    })
}

/// The evidence a ledger row `l` keeps (its JSON), if any
/// ([`hot::evidence_of_row`]).
const EVIDENCE_OF_ROW: &str = hot::evidence_of_row!();

/// A hash as the ledger stores it (`hash`, `prev_hash`, `evidence_hash`,
/// `evidence.hash`): its 32 bytes, not the 64 hex digits the chain is
/// written in (migration 0130).
pub(crate) fn hash_bytes(hex_digits: &str) -> Result<[u8; 32]> {
    // Into a fixed array: three per ledger row, a million rows an import.
    let mut out = [0u8; 32];
    hex::decode_to_slice(hex_digits, &mut out)
        .map_err(|_| StoreError::Unavailable(format!("not a SHA-256 hash: {hex_digits:?}")))?;
    Ok(out)
}

/// A stored hash back in the chain's form: 64 lowercase hex digits.
fn stored_hash(row: &AnyRow, column: &str) -> std::result::Result<String, String> {
    stored_hash_opt(row, column)?.ok_or_else(|| format!("{column} is missing"))
}

/// [`stored_hash`] of a column that may be NULL.
fn stored_hash_opt(row: &AnyRow, column: &str) -> std::result::Result<Option<String>, String> {
    let bytes: Option<Vec<u8>> = row.try_get(column).map_err(|e| e.to_string())?;
    match bytes {
        Some(b) if b.len() == 32 => Ok(Some(hex::encode(b))),
        Some(b) => Err(format!("{column} is {} bytes, not a SHA-256 hash", b.len())),
        None => Ok(None),
    }
}

/// Flags as stored: `{}` when none is set (the partial index on flagged
/// subjects counts on it).
pub(crate) fn flags_json(flags: &SubjectFlags) -> Result<String> {
    if *flags == SubjectFlags::default() {
        return Ok("{}".into());
    }
    serde_json::to_string(flags).map_err(json_err)
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

    async fn store_id(&self) -> Result<String> {
        sqlx::query("SELECT value FROM store_meta WHERE key = 'store_id'")
            .fetch_one(&self.pool)
            .await
            .map(|r| r.get("value"))
            .map_err(unavailable)
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

/// SQLite's consent writer: its connection, and the way to ask for a
/// checkpoint of the WAL.
///
/// The writer's connection does not checkpoint (`wal_autocheckpoint = 0`):
/// a checkpoint copies the WAL's pages into the database and fsyncs it,
/// and done inside the writer's `COMMIT` (SQLite's default) it took a
/// quarter of an import batch's time on the one thread every write waits
/// for. After a commit that left [`CHECKPOINT_FRAMES`] or more frames in
/// the WAL, the writer asks; a task checkpoints (`PASSIVE`: it never
/// blocks the writer or readers) through the shared pool, on sqlx's own
/// thread. Should the WAL still grow past [`CHECKPOINT_INLINE_FRAMES`],
/// the writer checkpoints itself, as before.
struct Writer {
    pool: sqlx::SqlitePool,
    checkpoints: tokio::sync::mpsc::Sender<()>,
}

/// SQLite's own default for `wal_autocheckpoint` (pages of 4 KiB).
const CHECKPOINT_FRAMES: i32 = 1_000;
/// About 64 MiB of WAL, where the writer checkpoints itself.
///
/// SQLite starts the WAL over only when a write begins after a checkpoint
/// has copied all of it. While the writer never pauses (an import), a
/// checkpoint beside it copies what was committed when it started, and the
/// writer has committed more by then: the WAL never starts over and grew
/// to 400 MB. Here the writer copies the rest itself (the pages the
/// checkpointer has not), so its next commit starts the WAL over, and
/// truncates the file to [`WAL_SIZE_LIMIT`].
const CHECKPOINT_INLINE_FRAMES: i32 = 16_384;
/// `journal_size_limit`: the WAL file is cut back to this size (bytes)
/// when it starts over, rather than staying at the largest it has been.
const WAL_SIZE_LIMIT: &str = "67108864";

impl Writer {
    /// A commit left `frames` in the WAL.
    fn committed(&self, frames: i32) {
        if frames >= CHECKPOINT_FRAMES {
            // Full: a checkpoint is already asked for.
            let _ = self.checkpoints.try_send(());
        }
    }
}

/// The task that checkpoints when asked; it ends with its store.
fn checkpointer(pool: AnyPool) -> tokio::sync::mpsc::Sender<()> {
    let (ask, mut asked) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while asked.recv().await.is_some() {
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "WAL checkpoint failed; the next commit asks again");
            }
        }
    });
    ask
}

/// The rows a batch adds, gathered before they are written set-wise.
#[derive(Default)]
struct Rows<'a> {
    /// Each entry with the index of its item's evidence in `evidence`.
    entries: Vec<(LedgerEntry, usize)>,
    /// Evidence JSON per written item.
    evidence: Vec<Option<String>>,
    receipts: Vec<(&'a String, String, &'a StoredReceipt)>,
    idempotency: Vec<(&'a String, &'a String, &'a String, String, Micros, String)>,
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
