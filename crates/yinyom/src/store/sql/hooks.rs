//! [`Hooks`] for both databases: request hooks and their calls.

use super::*;
use crate::store::hooks::{HookCall, HookRow, Hooks};

fn hook_from_row(r: &AnyRow) -> Result<HookRow> {
    Ok(HookRow {
        tenant: r.get("tenant"),
        id: r.get("id"),
        name: r.get("name"),
        url: r.get("url"),
        stage: r.get("stage"),
        kinds: serde_json::from_str(r.get::<&str, _>("kinds")).map_err(json_err)?,
        secret: r.get("secret"),
        timeout_ms: r.get("timeout_ms"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    })
}

fn call_from_row(r: &AnyRow) -> HookCall {
    HookCall {
        tenant: r.get("tenant"),
        request_id: r.get("request_id"),
        hook: r.get("hook"),
        stage: r.get("stage"),
        status: r.get("status"),
        reason: r.get("reason"),
        error: r.get("error"),
        attempts: r.get("attempts"),
        next_at: r.get("next_at"),
        answered_at: r.get("answered_at"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

#[async_trait]
impl Hooks for SqlStore {
    async fn put_hook(&self, h: &HookRow) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO request_hooks (tenant, id, name, url, stage, kinds, secret, timeout_ms,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
             ON CONFLICT (tenant, id) DO UPDATE SET
                name = excluded.name, url = excluded.url, stage = excluded.stage,
                kinds = excluded.kinds, secret = excluded.secret,
                timeout_ms = excluded.timeout_ms, updated_at = excluded.updated_at",
        )
        .bind(&h.tenant)
        .bind(&h.id)
        .bind(&h.name)
        .bind(&h.url)
        .bind(&h.stage)
        .bind(serde_json::to_string(&h.kinds).map_err(json_err)?)
        .bind(h.secret.clone())
        .bind(h.timeout_ms)
        .bind(h.created_at)
        .bind(h.updated_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn hook(&self, tenant: &str, id: &str) -> Result<Option<HookRow>> {
        sqlx::query("SELECT * FROM request_hooks WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .as_ref()
            .map(hook_from_row)
            .transpose()
    }

    async fn hooks(&self, tenant: &str) -> Result<Vec<HookRow>> {
        sqlx::query("SELECT * FROM request_hooks WHERE tenant = $1 ORDER BY id")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?
            .iter()
            .map(hook_from_row)
            .collect()
    }

    async fn delete_hook(&self, tenant: &str, id: &str) -> Result<bool> {
        let _writing = self.exclusive().await;
        let n = sqlx::query("DELETE FROM request_hooks WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
        Ok(n > 0)
    }

    async fn insert_hook_calls(&self, calls: &[HookCall]) -> Result<()> {
        if calls.is_empty() {
            return Ok(());
        }
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        for c in calls {
            sqlx::query(
                "INSERT INTO request_hook_calls (tenant, request_id, hook, stage, status, reason,
                     error, attempts, next_at, answered_at, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                 ON CONFLICT (tenant, request_id, hook) DO NOTHING",
            )
            .bind(&c.tenant)
            .bind(&c.request_id)
            .bind(&c.hook)
            .bind(&c.stage)
            .bind(&c.status)
            .bind(c.reason.clone())
            .bind(c.error.clone())
            .bind(c.attempts)
            .bind(c.next_at)
            .bind(c.answered_at)
            .bind(c.created_at)
            .bind(c.updated_at)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    async fn request_hook_calls(&self, tenant: &str, request_id: &str) -> Result<Vec<HookCall>> {
        Ok(sqlx::query(
            "SELECT * FROM request_hook_calls WHERE tenant = $1 AND request_id = $2
             ORDER BY created_at, hook",
        )
        .bind(tenant)
        .bind(request_id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?
        .iter()
        .map(call_from_row)
        .collect())
    }

    async fn hook_call(&self, request_id: &str, hook: &str) -> Result<Option<HookCall>> {
        Ok(
            sqlx::query("SELECT * FROM request_hook_calls WHERE request_id = $1 AND hook = $2")
                .bind(request_id)
                .bind(hook)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?
                .as_ref()
                .map(call_from_row),
        )
    }

    async fn due_hook_calls(&self, now: Micros, limit: u32) -> Result<Vec<HookCall>> {
        Ok(sqlx::query(
            "SELECT * FROM request_hook_calls WHERE next_at IS NOT NULL AND next_at <= $1
             AND status IN ('pending', 'failed') ORDER BY next_at LIMIT $2",
        )
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?
        .iter()
        .map(call_from_row)
        .collect())
    }

    async fn wake_hook_calls(&self, tenant: &str, hook: &str, now: Micros) -> Result<u64> {
        let _writing = self.exclusive().await;
        Ok(sqlx::query(
            "UPDATE request_hook_calls SET next_at = $1, updated_at = updated_at + 1
             WHERE tenant = $2 AND hook = $3 AND status IN ('pending', 'failed')",
        )
        .bind(now)
        .bind(tenant)
        .bind(hook)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected())
    }

    async fn update_hook_call(&self, c: &HookCall, expected_updated_at: Micros) -> Result<bool> {
        let _writing = self.exclusive().await;
        let n = sqlx::query(
            "UPDATE request_hook_calls SET status = $1, reason = $2, error = $3, attempts = $4,
                next_at = $5, answered_at = $6, updated_at = $7
             WHERE tenant = $8 AND request_id = $9 AND hook = $10 AND updated_at = $11",
        )
        .bind(&c.status)
        .bind(c.reason.clone())
        .bind(c.error.clone())
        .bind(c.attempts)
        .bind(c.next_at)
        .bind(c.answered_at)
        .bind(c.updated_at)
        .bind(&c.tenant)
        .bind(&c.request_id)
        .bind(&c.hook)
        .bind(expected_updated_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(n == 1)
    }
}
