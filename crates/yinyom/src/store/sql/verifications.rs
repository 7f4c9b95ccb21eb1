//! [`Verifications`] for both databases: the ledger read in keyset pages
//! for verification (through the native PostgreSQL driver, or SQLite's own
//! API on the checking thread, the rows decoded in [`decode`], the one
//! place that reads a ledger row back for verification, and checked as
//! they are read), and the verification jobs.

use super::raw::{self, Columns};
use super::*;
use crate::verification::{Checked, Checker, Checks};

fn verification_from_row(r: &AnyRow) -> VerificationRow {
    let broken_seq: Option<i64> = r.get("broken_seq");
    let broken_problem: Option<String> = r.get("broken_problem");
    VerificationRow {
        tenant: r.get("tenant"),
        id: r.get("id"),
        status: r.get("status"),
        total: r.get::<i64, _>("total") as u64,
        checked: r.get::<i64, _>("checked") as u64,
        ok: r.get::<Option<i64>, _>("ok").map(|ok| ok != 0),
        broken: broken_seq.map(|seq| Broken {
            seq: seq as u64,
            problem: broken_problem.unwrap_or_default(),
        }),
        error: r.get("error"),
        started_by: r.get("started_by"),
        started_at: r.get("started_at"),
        heartbeat_at: r.get("heartbeat_at"),
        finished_at: r.get("finished_at"),
    }
}

/// What a job that stopped sending heartbeats is marked failed with.
const INTERRUPTED: &str =
    "interrupted: the process running it stopped before it finished; start another";

/// How verification reads the ledger: through sqlx's native driver for
/// the database rather than `Any`, whose conversion of every row into its
/// own value types cost more than the hashing (`BENCHMARKS.md`), and on
/// SQLite through the connection's own handle (below). Opened on first
/// use, next to the store's pool, with a connection per checking thread;
/// also how current state is read in pages (`current.rs`).
pub(super) enum Reader {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

/// The columns [`decode`] reads, in its order (the tenant is known).
/// Hashes are stored as 32 bytes (migration 0130), evidence once per
/// distinct value in `evidence` (read through `EVIDENCE_OF_ROW`).
fn columns() -> String {
    format!(
        "l.seq, l.subject_uid, l.purpose, l.channel, l.action, l.notice_key, l.notice_version,
         l.notice_hash, l.source, l.actor, l.evidence_hash, {EVIDENCE_OF_ROW}, l.occurred_at,
         l.recorded_at, l.expires_at, l.receipt_id, l.guardian, l.prev_hash, l.hash, l.part, l.pseq"
    )
}

/// The rows of one verification page, `after < seq <= upto`, in `seq`
/// order; `$n` parameters (SQLite reads them as named `$1`, `$2`, `$3`,
/// numbered in order of appearance).
fn range_sql() -> String {
    format!(
        "SELECT {} FROM ledger l WHERE l.tenant = $1 AND l.seq > $2 AND l.seq <= $3
         ORDER BY l.seq",
        columns()
    )
}

/// The one place a ledger row is read back for verification: decoded into
/// `e` (every field overwritten, the strings reusing their capacity; the
/// tenant is the caller's), with the row's evidence as stored. Hashes are
/// written back as the 64 lowercase hex digits the chain hashes.
fn decode<'r, C: Columns + ?Sized>(
    r: &'r C,
    e: &mut LedgerEntry,
) -> std::result::Result<Option<&'r str>, String> {
    fn set(s: &mut String, v: &str) {
        s.clear();
        s.push_str(v);
    }
    fn set_opt(s: &mut Option<String>, v: Option<&str>) {
        match (s.as_mut(), v) {
            (Some(s), Some(v)) => set(s, v),
            (_, v) => *s = v.map(str::to_owned),
        }
    }
    // A hash as stored: 32 bytes.
    fn hash_hex(i: usize, b: &[u8]) -> std::result::Result<[u8; 64], String> {
        let mut hex = [0u8; 64];
        hex::encode_to_slice(b, &mut hex)
            .map_err(|_| format!("column {i} is {} bytes, not a SHA-256 hash", b.len()))?;
        Ok(hex)
    }
    fn hex_str(hex: &[u8; 64]) -> &str {
        std::str::from_utf8(hex).expect("hex digits are ASCII")
    }
    let null = |i: usize| format!("column {i} is null");
    let text = |i: usize| r.text(i)?.ok_or_else(|| null(i));
    let int = |i: usize| r.int(i)?.ok_or_else(|| null(i));
    let hash = |i: usize| {
        let b = r
            .blob(i)?
            .ok_or_else(|| format!("column {i}: the hash is missing"))?;
        hash_hex(i, b)
    };
    let b = &mut e.body;
    b.channel = match r.text(3)? {
        None => None,
        Some(c) => Some(Channel::parse(c).ok_or_else(|| format!("unknown channel {c:?}"))?),
    };
    let action = text(4)?;
    b.action = Action::parse(action).ok_or_else(|| format!("unknown action {action:?}"))?;
    match r.text(5)? {
        None => b.notice = None,
        Some(key) => {
            let (version, hash) = (int(6)? as u32, text(7)?);
            match b.notice.as_mut() {
                Some(n) => {
                    set(&mut n.key, key);
                    n.version = version;
                    set(&mut n.hash, hash);
                }
                None => {
                    b.notice = Some(NoticeRef {
                        key: key.to_owned(),
                        version,
                        hash: hash.to_owned(),
                    })
                }
            }
        }
    }
    set(&mut b.subject_uid, text(1)?);
    set(&mut b.purpose, text(2)?);
    set(&mut b.source, text(8)?);
    set(&mut b.actor, text(9)?);
    let evidence_hash = match r.blob(10)? {
        None => None,
        Some(h) => Some(hash_hex(10, h)?),
    };
    set_opt(&mut b.evidence_hash, evidence_hash.as_ref().map(hex_str));
    b.occurred_at = int(12)?;
    b.recorded_at = int(13)?;
    b.expires_at = r.int(14)?;
    set_opt(&mut b.receipt, r.text(15)?);
    b.guardian = int(16)? != 0;
    set(&mut e.prev_hash, hex_str(&hash(17)?));
    set(&mut e.hash, hex_str(&hash(18)?));
    let part = int(19)?;
    e.partition = u32::try_from(part).map_err(|_| format!("partition {part} is out of range"))?;
    let pseq = int(20)?;
    e.pseq = u64::try_from(pseq).map_err(|_| format!("position {pseq} is out of range"))?;
    r.text(11)
}

/// One row decoded and checked on its own.
fn check_row<C: Columns + ?Sized>(
    r: &C,
    checker: &mut Checker,
) -> std::result::Result<Checked, Broken> {
    let seq = r.int(0).ok().flatten().map_or(0, |s| s as u64);
    checker.entry().seq = seq;
    let decoded = decode(r, checker.entry());
    checker.check(seq, decoded)
}

/// Read the tenant's rows `after < seq <= upto` on `db` (SQLite, on this
/// thread: [`raw`]) and check each as it is read.
fn check_range_raw(
    db: std::ptr::NonNull<libsqlite3_sys::sqlite3>,
    tenant: &str,
    after: u64,
    upto: u64,
    mut checker: Checker,
) -> std::result::Result<Checks, String> {
    let mut stmt = raw::Stmt::prepare(db.as_ptr(), &range_sql())?;
    stmt.bind_text(1, tenant)?;
    stmt.bind_int(2, after.min(i64::MAX as u64) as i64)?;
    stmt.bind_int(3, upto.min(i64::MAX as u64) as i64)?;
    let mut checks = Vec::new();
    while stmt.step()? {
        checks.push(check_row(&stmt, &mut checker));
    }
    Ok(checks)
}

impl SqlStore {
    /// The native pool verification reads with, opened on first use.
    pub(super) async fn reader(&self) -> Result<&Reader> {
        // A connection per checking thread, one to find where pages end,
        // and two for reading current state (the view's load, and its
        // walks over every subject) without waiting behind a verification.
        let connections = std::thread::available_parallelism().map_or(2, |n| n.get()) as u32 + 3;
        self.reader
            .get_or_try_init(|| async {
                Ok(match self.dialect {
                    Dialect::Sqlite => {
                        let options: sqlx::sqlite::SqliteConnectOptions =
                            self.url.parse().map_err(unavailable)?;
                        let options = options
                            .pragma("mmap_size", "268435456")
                            .pragma("cache_size", "-16000");
                        Reader::Sqlite(
                            sqlx::sqlite::SqlitePoolOptions::new()
                                .max_connections(connections)
                                .min_connections(0)
                                .idle_timeout(Duration::from_secs(60))
                                .connect_with(options)
                                .await
                                .map_err(unavailable)?,
                        )
                    }
                    Dialect::Postgres => {
                        let options: sqlx::postgres::PgConnectOptions =
                            self.url.parse().map_err(unavailable)?;
                        Reader::Postgres(
                            sqlx::postgres::PgPoolOptions::new()
                                .max_connections(connections)
                                .min_connections(0)
                                .idle_timeout(Duration::from_secs(60))
                                .acquire_timeout(Duration::from_secs(10))
                                .connect_with(options)
                                .await
                                .map_err(unavailable)?,
                        )
                    }
                })
            })
            .await
    }
}

fn thread_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Unavailable(format!("a checking thread failed: {e}"))
}

#[async_trait]
impl Verifications for SqlStore {
    async fn ledger_page_end(
        &self,
        tenant: &str,
        after: u64,
        upto: u64,
        rows: u32,
    ) -> Result<Option<u64>> {
        let sql = "SELECT l.seq FROM ledger l WHERE l.tenant = $1 AND l.seq > $2 AND l.seq <= $3
                   ORDER BY l.seq LIMIT 1 OFFSET $4";
        let after = after.min(i64::MAX as u64) as i64;
        let upto = upto.min(i64::MAX as u64) as i64;
        let offset = i64::from(rows.max(1) - 1);
        let end: Option<i64> = match self.reader().await? {
            Reader::Sqlite(pool) => sqlx::query_scalar(sql)
                .bind(tenant)
                .bind(after)
                .bind(upto)
                .bind(offset)
                .fetch_optional(pool)
                .await
                .map_err(unavailable)?,
            Reader::Postgres(pool) => sqlx::query_scalar(sql)
                .bind(tenant)
                .bind(after)
                .bind(upto)
                .bind(offset)
                .fetch_optional(pool)
                .await
                .map_err(unavailable)?,
        };
        Ok(end.map(|s| s as u64))
    }

    async fn check_ledger_range(
        &self,
        tenant: &str,
        after: u64,
        upto: u64,
        mut checker: Checker,
    ) -> Result<Checks> {
        match self.reader().await? {
            Reader::Sqlite(pool) => {
                let mut conn = pool.acquire().await.map_err(unavailable)?;
                let tenant = tenant.to_string();
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let mut handle = runtime.block_on(conn.lock_handle()).map_err(unavailable)?;
                    check_range_raw(handle.as_raw_handle(), &tenant, after, upto, checker)
                        .map_err(StoreError::Unavailable)
                })
                .await
                .map_err(thread_failed)?
            }
            Reader::Postgres(pool) => {
                let rows = sqlx::query(&range_sql())
                    .bind(tenant)
                    .bind(after.min(i64::MAX as u64) as i64)
                    .bind(upto.min(i64::MAX as u64) as i64)
                    .fetch_all(pool)
                    .await
                    .map_err(unavailable)?;
                tokio::task::spawn_blocking(move || {
                    rows.iter().map(|r| check_row(r, &mut checker)).collect()
                })
                .await
                .map_err(thread_failed)
            }
        }
    }

    async fn ledger_partitions(&self, tenant: &str) -> Result<Vec<Head>> {
        self.partition_heads(tenant).await
    }

    async fn ledger_past_heads(&self, tenant: &str) -> Result<Option<u64>> {
        // One statement: per partition (numbers we make, so written into
        // it) the first entry past its recorded head, by `ledger_by_part`.
        let parts = self.partition_count(tenant, None).await?;
        let list = (0..parts)
            .map(|p| format!("({p})"))
            .collect::<Vec<_>>()
            .join(", ");
        let seq: Option<i64> = sqlx::query_scalar(&format!(
            "WITH p(n) AS (VALUES {list})
             SELECT MIN((SELECT l.seq FROM ledger l
                         WHERE l.part = p.n AND l.tenant = $1 AND l.pseq > COALESCE(h.size, 0)
                         ORDER BY l.pseq LIMIT 1)) AS seq
             FROM p LEFT JOIN ledger_partitions h ON h.tenant = $1 AND h.part = p.n"
        ))
        .bind(tenant)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(seq.map(|s| s as u64))
    }

    async fn ledger_last_seq(&self, tenant: &str) -> Result<u64> {
        let seq: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM ledger WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(seq.unwrap_or(0) as u64)
    }

    async fn insert_verification(&self, v: &VerificationRow) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO verifications (tenant, id, status, total, checked, started_by, started_at, heartbeat_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&v.tenant)
        .bind(&v.id)
        .bind(&v.status)
        .bind(v.total as i64)
        .bind(v.checked as i64)
        .bind(&v.started_by)
        .bind(v.started_at)
        .bind(v.heartbeat_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn verification(&self, tenant: &str, id: &str) -> Result<Option<VerificationRow>> {
        let row = sqlx::query("SELECT * FROM verifications WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(verification_from_row))
    }

    async fn verifications(&self, tenant: &str, limit: u32) -> Result<Vec<VerificationRow>> {
        let rows = sqlx::query(
            "SELECT * FROM verifications WHERE tenant = $1
             ORDER BY started_at DESC, id DESC LIMIT $2",
        )
        .bind(tenant)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().map(verification_from_row).collect())
    }

    async fn progress_verification(
        &self,
        tenant: &str,
        id: &str,
        checked: u64,
        at: Micros,
    ) -> Result<bool> {
        let _writing = self.exclusive().await;
        let done = sqlx::query(
            "UPDATE verifications SET checked = $3, heartbeat_at = $4
             WHERE tenant = $1 AND id = $2 AND status = 'running'",
        )
        .bind(tenant)
        .bind(id)
        .bind(checked as i64)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn finish_verification(&self, v: &VerificationRow) -> Result<bool> {
        let _writing = self.exclusive().await;
        let done = sqlx::query(
            "UPDATE verifications SET status = $3, checked = $4, ok = $5, broken_seq = $6,
                 broken_problem = $7, error = $8, heartbeat_at = $9, finished_at = $10
             WHERE tenant = $1 AND id = $2 AND status = 'running'",
        )
        .bind(&v.tenant)
        .bind(&v.id)
        .bind(&v.status)
        .bind(v.checked as i64)
        .bind(v.ok.map(i64::from))
        .bind(v.broken.as_ref().map(|b| b.seq as i64))
        .bind(v.broken.as_ref().map(|b| b.problem.as_str()))
        .bind(v.error.as_deref())
        .bind(v.heartbeat_at)
        .bind(v.finished_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn expire_verifications(&self, stale_before: Micros, at: Micros) -> Result<u64> {
        // Readers call this on every look: a plain read first, so that the
        // common case (nothing stale) takes no write lock.
        let stale: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM verifications WHERE status = 'running' AND heartbeat_at < $1",
        )
        .bind(stale_before)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        if stale == 0 {
            return Ok(0);
        }
        let _writing = self.exclusive().await;
        let done = sqlx::query(
            "UPDATE verifications SET status = 'failed', error = $2, finished_at = $3
             WHERE status = 'running' AND heartbeat_at < $1",
        )
        .bind(stale_before)
        .bind(INTERRUPTED)
        .bind(at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}
