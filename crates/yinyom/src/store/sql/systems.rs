//! [`Systems`] for both databases: connected systems, the work requests do
//! in them, consent propagation.

use super::*;
use crate::store::systems::{Propagation, SystemJob, SystemRow, Systems};

fn system_from_row(r: &AnyRow) -> Result<SystemRow> {
    Ok(SystemRow {
        tenant: r.get("tenant"),
        key: r.get("key"),
        name: r.get("name"),
        kind: r.get("kind"),
        config: serde_json::from_str(r.get::<&str, _>("config")).map_err(json_err)?,
        secret: r.get("secret"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

fn job_from_row(r: &AnyRow) -> Result<SystemJob> {
    Ok(SystemJob {
        tenant: r.get("tenant"),
        request_id: r.get("request_id"),
        system: r.get("system"),
        status: r.get("status"),
        rows: r.get("rows"),
        error: r.get("error"),
        attempts: r.get("attempts"),
        next_at: r.get("next_at"),
        finished_at: r.get("finished_at"),
        detail: r
            .get::<Option<String>, _>("detail")
            .map(|d| serde_json::from_str(&d))
            .transpose()
            .map_err(json_err)?,
        payload: r.get("payload"),
        result: r.get("result"),
        updated_at: r.get("updated_at"),
    })
}

fn propagation_from_row(r: &AnyRow) -> Propagation {
    Propagation {
        tenant: r.get("tenant"),
        subject_uid: r.get("subject_uid"),
        system: r.get("system"),
        status: r.get("status"),
        rows: r.get("rows"),
        error: r.get("error"),
        attempts: r.get("attempts"),
        next_at: r.get("next_at"),
        finished_at: r.get("finished_at"),
        payload: r.get("payload"),
        updated_at: r.get("updated_at"),
    }
}

#[async_trait]
impl Systems for SqlStore {
    async fn put_system(&self, s: &SystemRow) -> Result<bool> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        let existed = sqlx::query("SELECT 1 AS one FROM systems WHERE tenant = $1 AND key = $2")
            .bind(&s.tenant)
            .bind(&s.key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .is_some();
        sqlx::query(
            "INSERT INTO systems (tenant, key, name, kind, config, secret, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (tenant, key) DO UPDATE SET
                name = excluded.name, kind = excluded.kind, config = excluded.config,
                secret = excluded.secret, updated_at = excluded.updated_at",
        )
        .bind(&s.tenant)
        .bind(&s.key)
        .bind(&s.name)
        .bind(&s.kind)
        .bind(s.config.to_string())
        .bind(s.secret.clone())
        .bind(s.created_at)
        .bind(s.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(!existed)
    }

    async fn system(&self, tenant: &str, key: &str) -> Result<Option<SystemRow>> {
        sqlx::query("SELECT * FROM systems WHERE tenant = $1 AND key = $2")
            .bind(tenant)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .as_ref()
            .map(system_from_row)
            .transpose()
    }

    async fn systems(&self, tenant: &str) -> Result<Vec<SystemRow>> {
        sqlx::query("SELECT * FROM systems WHERE tenant = $1 ORDER BY key")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?
            .iter()
            .map(system_from_row)
            .collect()
    }

    async fn delete_system(&self, tenant: &str, key: &str) -> Result<bool> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        let n = sqlx::query("DELETE FROM systems WHERE tenant = $1 AND key = $2")
            .bind(tenant)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
        sqlx::query("DELETE FROM consent_propagations WHERE tenant = $1 AND system = $2")
            .bind(tenant)
            .bind(key)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(n > 0)
    }

    async fn open_system_jobs(&self, tenant: &str, system: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM request_systems WHERE tenant = $1 AND system = $2
             AND status <> 'done'",
        )
        .bind(tenant)
        .bind(system)
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(n as u64)
    }

    async fn insert_system_jobs(&self, jobs: &[SystemJob]) -> Result<()> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        for j in jobs {
            sqlx::query(
                "INSERT INTO request_systems (tenant, request_id, system, status, rows, error,
                    attempts, next_at, finished_at, detail, payload, result, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                 ON CONFLICT (tenant, request_id, system) DO NOTHING",
            )
            .bind(&j.tenant)
            .bind(&j.request_id)
            .bind(&j.system)
            .bind(&j.status)
            .bind(j.rows)
            .bind(j.error.clone())
            .bind(j.attempts)
            .bind(j.next_at)
            .bind(j.finished_at)
            .bind(j.detail.as_ref().map(|d| d.to_string()))
            .bind(j.payload.clone())
            .bind(j.result.clone())
            .bind(j.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    async fn request_system_jobs(&self, tenant: &str, request_id: &str) -> Result<Vec<SystemJob>> {
        sqlx::query(
            "SELECT * FROM request_systems WHERE tenant = $1 AND request_id = $2 ORDER BY system",
        )
        .bind(tenant)
        .bind(request_id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?
        .iter()
        .map(job_from_row)
        .collect()
    }

    async fn due_system_jobs(&self, now: Micros, limit: u32) -> Result<Vec<SystemJob>> {
        sqlx::query(
            "SELECT * FROM request_systems WHERE next_at IS NOT NULL AND next_at <= $1
             AND status IN ('pending', 'failed', 'running') ORDER BY next_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?
        .iter()
        .map(job_from_row)
        .collect()
    }

    async fn update_system_job(&self, j: &SystemJob, expected_updated_at: Micros) -> Result<bool> {
        let _writing = self.exclusive().await;
        let n = sqlx::query(
            "UPDATE request_systems SET status = $1, rows = $2, error = $3, attempts = $4,
                next_at = $5, finished_at = $6, detail = $7, payload = $8, result = $9,
                updated_at = $10
             WHERE tenant = $11 AND request_id = $12 AND system = $13 AND updated_at = $14",
        )
        .bind(&j.status)
        .bind(j.rows)
        .bind(j.error.clone())
        .bind(j.attempts)
        .bind(j.next_at)
        .bind(j.finished_at)
        .bind(j.detail.as_ref().map(|d| d.to_string()))
        .bind(j.payload.clone())
        .bind(j.result.clone())
        .bind(j.updated_at)
        .bind(&j.tenant)
        .bind(&j.request_id)
        .bind(&j.system)
        .bind(expected_updated_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(n == 1)
    }

    async fn put_propagation(&self, p: &Propagation) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO consent_propagations (tenant, subject_uid, system, status, rows, error,
                attempts, next_at, finished_at, payload, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (tenant, subject_uid, system) DO UPDATE SET
                status = excluded.status, rows = excluded.rows, error = excluded.error,
                attempts = excluded.attempts, next_at = excluded.next_at,
                finished_at = excluded.finished_at, payload = excluded.payload,
                updated_at = excluded.updated_at",
        )
        .bind(&p.tenant)
        .bind(&p.subject_uid)
        .bind(&p.system)
        .bind(&p.status)
        .bind(p.rows)
        .bind(p.error.clone())
        .bind(p.attempts)
        .bind(p.next_at)
        .bind(p.finished_at)
        .bind(p.payload.clone())
        .bind(p.updated_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn propagations(&self, tenant: &str, subject_uid: &str) -> Result<Vec<Propagation>> {
        Ok(sqlx::query(
            "SELECT * FROM consent_propagations WHERE tenant = $1 AND subject_uid = $2
             ORDER BY system",
        )
        .bind(tenant)
        .bind(subject_uid)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?
        .iter()
        .map(propagation_from_row)
        .collect())
    }

    async fn due_propagations(&self, now: Micros, limit: u32) -> Result<Vec<Propagation>> {
        Ok(sqlx::query(
            "SELECT * FROM consent_propagations WHERE next_at IS NOT NULL AND next_at <= $1
             AND status IN ('pending', 'failed', 'running') ORDER BY next_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?
        .iter()
        .map(propagation_from_row)
        .collect())
    }

    async fn update_propagation(
        &self,
        p: &Propagation,
        expected_updated_at: Micros,
    ) -> Result<bool> {
        let _writing = self.exclusive().await;
        let n = sqlx::query(
            "UPDATE consent_propagations SET status = $1, rows = $2, error = $3, attempts = $4,
                next_at = $5, finished_at = $6, payload = $7, updated_at = $8
             WHERE tenant = $9 AND subject_uid = $10 AND system = $11 AND updated_at = $12",
        )
        .bind(&p.status)
        .bind(p.rows)
        .bind(p.error.clone())
        .bind(p.attempts)
        .bind(p.next_at)
        .bind(p.finished_at)
        .bind(p.payload.clone())
        .bind(p.updated_at)
        .bind(&p.tenant)
        .bind(&p.subject_uid)
        .bind(&p.system)
        .bind(expected_updated_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(n == 1)
    }
}
