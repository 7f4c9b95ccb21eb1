//! [`Verifications`] for both databases: the ledger read in keyset pages
//! for verification (through the native SQLite or PostgreSQL driver, the
//! rows decoded by the checking threads in [`decode`], the one place that
//! reads a ledger row back for verification), and the verification jobs.

use super::*;

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
/// own value types cost more than the hashing (`BENCHMARKS.md`). Opened on
/// first use, next to the store's pool.
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

/// The one place a ledger row is read back for verification, generic
/// over the native row types: the entry (or why the row is not one) and
/// its evidence as stored.
fn decode<R>(tenant: &str, r: &R) -> LedgerRow
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let seq = r.try_get::<i64, _>(0).map_or(0, |s| s as u64);
    let entry = (|| -> std::result::Result<(LedgerEntry, Option<String>), sqlx::Error> {
        let text = |i: usize| r.try_get::<&str, _>(i).map(str::to_owned);
        let opt = |i: usize| {
            r.try_get::<Option<&str>, _>(i)
                .map(|s| s.map(str::to_owned))
        };
        let int = |i: usize| r.try_get::<i64, _>(i);
        let bad = |what: String| sqlx::Error::Decode(what.into());
        // A hash as stored: 32 bytes, read back as 64 lowercase hex digits.
        let opt_hash = |i: usize| match r.try_get::<Option<&[u8]>, _>(i)? {
            None => Ok(None),
            Some(b) if b.len() == 32 => Ok(Some(hex::encode(b))),
            Some(b) => Err(bad(format!(
                "column {i} is {} bytes, not a SHA-256 hash",
                b.len()
            ))),
        };
        let hash =
            |i: usize| opt_hash(i)?.ok_or_else(|| bad(format!("column {i}: the hash is missing")));
        let channel = match r.try_get::<Option<&str>, _>(3)? {
            None => None,
            Some(c) => {
                Some(Channel::parse(c).ok_or_else(|| bad(format!("unknown channel {c:?}")))?)
            }
        };
        let action = r.try_get::<&str, _>(4)?;
        let action =
            Action::parse(action).ok_or_else(|| bad(format!("unknown action {action:?}")))?;
        let notice = match opt(5)? {
            None => None,
            Some(key) => Some(NoticeRef {
                key,
                version: int(6)? as u32,
                hash: text(7)?,
            }),
        };
        let entry = LedgerEntry {
            seq,
            partition: int(19)? as u32,
            pseq: int(20)? as u64,
            body: EntryBody {
                tenant: tenant.to_string(),
                subject_uid: text(1)?,
                purpose: text(2)?,
                channel,
                action,
                notice,
                source: text(8)?,
                actor: text(9)?,
                evidence_hash: opt_hash(10)?,
                occurred_at: int(12)?,
                recorded_at: int(13)?,
                expires_at: r.try_get(14)?,
                receipt: opt(15)?,
                guardian: int(16)? != 0,
            },
            prev_hash: hash(17)?,
            hash: hash(18)?,
        };
        Ok((entry, opt(11)?))
    })();
    match entry {
        Ok((entry, evidence)) => LedgerRow {
            seq,
            entry: Ok(entry),
            evidence,
        },
        Err(e) => LedgerRow {
            seq,
            entry: Err(match e {
                sqlx::Error::Decode(e) => e.to_string(),
                e => e.to_string(),
            }),
            evidence: None,
        },
    }
}

/// A page of native rows, decoded when the checking thread asks.
fn page<R>(tenant: &str, rows: Vec<R>) -> LedgerPage
where
    R: Row + Send + 'static,
    usize: sqlx::ColumnIndex<R>,
    for<'r> &'r str: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> &'r [u8]: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let last_seq = rows
        .last()
        .and_then(|r| r.try_get::<i64, _>(0).ok())
        .map(|s| s as u64);
    let tenant = tenant.to_string();
    LedgerPage::new(rows.len(), last_seq, move || {
        rows.iter().map(|r| decode(&tenant, r)).collect()
    })
}

impl SqlStore {
    /// The native pool verification reads with, opened on first use.
    async fn reader(&self) -> Result<&Reader> {
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
                                .max_connections(2)
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
                                .max_connections(2)
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

#[async_trait]
impl Verifications for SqlStore {
    async fn ledger_page(
        &self,
        tenant: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<LedgerPage> {
        let sql = format!(
            "SELECT {} FROM ledger l WHERE l.tenant = $1 AND l.seq > $2 AND l.seq <= $3
             ORDER BY l.seq LIMIT $4",
            columns()
        );
        let upto = upto.min(i64::MAX as u64) as i64;
        Ok(match self.reader().await? {
            Reader::Sqlite(pool) => page(
                tenant,
                sqlx::query(&sql)
                    .bind(tenant)
                    .bind(after as i64)
                    .bind(upto)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(unavailable)?,
            ),
            Reader::Postgres(pool) => page(
                tenant,
                sqlx::query(&sql)
                    .bind(tenant)
                    .bind(after as i64)
                    .bind(upto)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(unavailable)?,
            ),
        })
    }

    async fn ledger_partitions(&self, tenant: &str) -> Result<Vec<Head>> {
        self.partition_heads(tenant).await
    }

    async fn ledger_past_heads(&self, tenant: &str) -> Result<Option<u64>> {
        let parts = self.partition_count(tenant, None).await?;
        let mut first: Option<u64> = None;
        for part in 0..parts {
            let seq: Option<i64> = sqlx::query_scalar(
                "SELECT l.seq FROM ledger l WHERE l.tenant = $1 AND l.part = $2
                 AND l.pseq > COALESCE((SELECT h.size FROM ledger_partitions h
                                        WHERE h.tenant = $1 AND h.part = $2), 0)
                 ORDER BY l.pseq LIMIT 1",
            )
            .bind(tenant)
            .bind(i64::from(part))
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
            if let Some(seq) = seq {
                first = Some(first.map_or(seq as u64, |f| f.min(seq as u64)));
            }
        }
        Ok(first)
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
