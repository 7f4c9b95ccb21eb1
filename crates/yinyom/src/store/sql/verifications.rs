//! [`Verifications`] for both databases: the ledger read in keyset pages
//! for verification, and the verification jobs.

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

#[async_trait]
impl Verifications for SqlStore {
    async fn ledger_page(
        &self,
        tenant: &str,
        after: u64,
        upto: u64,
        limit: u32,
    ) -> Result<Vec<LedgerRow>> {
        let rows = sqlx::query(&format!(
            "SELECT l.*, {EVIDENCE_OF_ROW} AS evidence FROM ledger l
             WHERE l.tenant = $1 AND l.seq > $2 AND l.seq <= $3 ORDER BY l.seq LIMIT $4"
        ))
        .bind(tenant)
        .bind(after as i64)
        .bind(upto.min(i64::MAX as u64) as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let seq: i64 = r.try_get("seq").map_err(unavailable)?;
                Ok(LedgerRow {
                    seq: seq as u64,
                    entry: entry_from_row(r),
                    evidence: r.try_get("evidence").ok().flatten(),
                })
            })
            .collect()
    }

    async fn ledger_head(&self, tenant: &str) -> Result<Chain> {
        Ok(
            sqlx::query("SELECT seq, hash FROM ledger_heads WHERE tenant = $1")
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .map(|r| Chain {
                    seq: r.get::<i64, _>("seq") as u64,
                    hash: r.get("hash"),
                })
                .unwrap_or_else(Chain::genesis),
        )
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
