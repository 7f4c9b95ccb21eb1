//! [`StaffStore`] for both databases: console staff and their sessions.

use super::*;

fn staff_from_row(r: &AnyRow) -> StaffMember {
    StaffMember {
        id: r.get("id"),
        tenant: r.get("tenant"),
        email: r.get("email"),
        name: r.get("name"),
        role: Role::parse(r.get("role")).unwrap_or(Role::User),
        password_hash: r.get("password_hash"),
        created_at: r.get("created_at"),
        disabled_at: r.get("disabled_at"),
    }
}

#[async_trait]
impl StaffStore for SqlStore {
    async fn insert_staff(&self, s: &StaffMember) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO staff (id, tenant, email, name, role, password_hash, created_at, disabled_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&s.id)
        .bind(&s.tenant)
        .bind(&s.email)
        .bind(&s.name)
        .bind(s.role.as_str())
        .bind(&s.password_hash)
        .bind(s.created_at)
        .bind(s.disabled_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn staff_by_email(&self, email: &str) -> Result<Option<StaffMember>> {
        let row = sqlx::query("SELECT * FROM staff WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(staff_from_row))
    }

    async fn staff(&self, tenant: &str) -> Result<Vec<StaffMember>> {
        let rows = sqlx::query("SELECT * FROM staff WHERE tenant = $1 ORDER BY created_at, id")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(staff_from_row).collect())
    }

    async fn disable_staff(&self, tenant: &str, id: &str, at: Micros) -> Result<bool> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        let n = sqlx::query(
            "UPDATE staff SET disabled_at = $1 WHERE tenant = $2 AND id = $3 AND disabled_at IS NULL",
        )
        .bind(at)
        .bind(tenant)
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        sqlx::query("DELETE FROM staff_sessions WHERE staff_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(n == 1)
    }

    async fn insert_session(&self, s: &StaffSession) -> Result<()> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        // Sessions past their time go when new ones come.
        sqlx::query("DELETE FROM staff_sessions WHERE expires_at <= $1")
            .bind(s.created_at)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO staff_sessions (hash, staff_id, csrf, created_at, expires_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&s.hash)
        .bind(&s.staff_id)
        .bind(&s.csrf)
        .bind(s.created_at)
        .bind(s.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    async fn session(
        &self,
        hash: &str,
        now: Micros,
    ) -> Result<Option<(StaffSession, StaffMember)>> {
        let row = sqlx::query(
            "SELECT s.hash, s.csrf, s.created_at AS s_created, s.expires_at, m.*
             FROM staff_sessions s JOIN staff m ON m.id = s.staff_id
             WHERE s.hash = $1 AND s.expires_at > $2 AND m.disabled_at IS NULL",
        )
        .bind(hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.map(|r| {
            let m = staff_from_row(&r);
            (
                StaffSession {
                    hash: r.get("hash"),
                    staff_id: m.id.clone(),
                    csrf: r.get("csrf"),
                    created_at: r.get("s_created"),
                    expires_at: r.get("expires_at"),
                },
                m,
            )
        }))
    }

    async fn delete_session(&self, hash: &str) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query("DELETE FROM staff_sessions WHERE hash = $1")
            .bind(hash)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn daily_choices(&self, tenant: &str, since: Micros) -> Result<Vec<DailyChoices>> {
        // Counted as they are written (`choice_days`): the rows of the
        // days asked for, whatever the ledger's size.
        let rows = sqlx::query(super::hot::DAILY_CHOICES)
            .bind(tenant)
            .bind(since.div_euclid(time::MICROS_PER_DAY))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| {
                let channel: String = r.get("channel");
                DailyChoices {
                    day: r.get("day"),
                    purpose: r.get("purpose"),
                    channel: (!channel.is_empty()).then_some(channel),
                    action: r.get("action"),
                    count: r.get("n"),
                }
            })
            .collect())
    }

    async fn suppressions(&self, tenant: &str) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT COALESCE(reason, 'unknown') AS reason, COUNT(*) AS n FROM messages
             WHERE tenant = $1 AND status = 'suppressed' GROUP BY COALESCE(reason, 'unknown') ORDER BY n DESC",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().map(|r| (r.get("reason"), r.get("n"))).collect())
    }
}
