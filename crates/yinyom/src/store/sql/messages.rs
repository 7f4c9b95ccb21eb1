//! [`Messages`] for both databases: connectors, messages and their log.

use super::*;

const FINAL: [&str; 3] = ["sent", "suppressed", "dead"];

fn message_from_row(r: &AnyRow) -> MessageRow {
    MessageRow {
        tenant: r.get("tenant"),
        id: r.get("id"),
        audience: r.get("audience"),
        subject_uid: r.get("subject_uid"),
        subject_id: r.try_get("subject_id").ok().flatten(),
        channel: r.get("channel"),
        purpose: r.get("purpose"),
        status: r.get("status"),
        reason: r.get("reason"),
        attempts: r.get::<i64, _>("attempts") as u32,
        next_at: r.get("next_at"),
        content: r.get("content"),
        created_at: r.get("created_at"),
        updated_at: r.get("updated_at"),
    }
}

const WITH_SUBJECT: &str = "SELECT m.*, (SELECT s.id FROM subjects s WHERE s.uid = m.subject_uid
         AND s.tenant = m.tenant) AS subject_id
     FROM messages m ";

#[async_trait]
impl Messages for SqlStore {
    async fn put_connector(&self, c: &ConnectorRow) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO connectors (tenant, channel, config, secret, dkim_key, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (tenant, channel) DO UPDATE SET
                config = excluded.config, secret = excluded.secret,
                dkim_key = excluded.dkim_key, updated_at = excluded.updated_at",
        )
        .bind(&c.tenant)
        .bind(&c.channel)
        .bind(c.config.to_string())
        .bind(c.secret.clone())
        .bind(c.dkim_key.clone())
        .bind(c.updated_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn connectors(&self, tenant: &str) -> Result<Vec<ConnectorRow>> {
        let rows = sqlx::query("SELECT * FROM connectors WHERE tenant = $1 ORDER BY channel")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(ConnectorRow {
                    tenant: r.get("tenant"),
                    channel: r.get("channel"),
                    config: serde_json::from_str(r.get("config")).map_err(json_err)?,
                    secret: r.get("secret"),
                    dkim_key: r.get("dkim_key"),
                    updated_at: r.get("updated_at"),
                })
            })
            .collect()
    }

    async fn insert_messages(&self, messages: &[MessageRow]) -> Result<()> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        insert_message_rows(&mut tx, self.dialect, messages).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn message(&self, tenant: &str, id: &str) -> Result<Option<MessageRow>> {
        let row = sqlx::query(&format!("{WITH_SUBJECT} WHERE m.tenant = $1 AND m.id = $2"))
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(message_from_row))
    }

    async fn subject_messages(&self, tenant: &str, uid: &str) -> Result<Vec<MessageRow>> {
        let rows = sqlx::query(hot::SUBJECT_MESSAGES)
            .bind(tenant)
            .bind(uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(message_from_row).collect())
    }

    async fn message_log(&self, tenant: &str, id: &str) -> Result<Vec<MessageLogEntry>> {
        let rows = sqlx::query(
            "SELECT at, status, detail FROM message_log WHERE tenant = $1 AND message = $2 ORDER BY id",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| MessageLogEntry {
                at: r.get("at"),
                status: r.get("status"),
                detail: r.get("detail"),
            })
            .collect())
    }

    async fn due_messages(&self, now: Micros, limit: u32) -> Result<Vec<MessageRow>> {
        let rows = sqlx::query(hot::DUE_MESSAGES)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(message_from_row).collect())
    }

    async fn settle_message(&self, m: &MessageRow, detail: Option<&str>) -> Result<()> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        // A final message keeps no content: what was sent, or would have
        // been, is not kept longer than needed.
        let keep_content = !FINAL.contains(&m.status.as_str());
        sqlx::query(
            "UPDATE messages SET status = $1, reason = $2, attempts = $3, next_at = $4,
                    updated_at = $5, content = CASE WHEN $6 THEN content ELSE NULL END
             WHERE tenant = $7 AND id = $8",
        )
        .bind(m.status.as_str())
        .bind(m.reason.as_deref())
        .bind(i64::from(m.attempts))
        .bind(m.next_at)
        .bind(m.updated_at)
        .bind(keep_content)
        .bind(m.tenant.as_str())
        .bind(m.id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO message_log (tenant, message, at, status, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(m.tenant.as_str())
        .bind(m.id.as_str())
        .bind(m.updated_at)
        .bind(m.status.as_str())
        .bind(detail)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn audience_counts(
        &self,
        tenant: &str,
        audience: &str,
    ) -> Result<Vec<(String, Option<String>, u64)>> {
        let rows = sqlx::query(
            "SELECT status, CASE WHEN status = 'suppressed' THEN reason END AS why, COUNT(*) AS n
             FROM messages WHERE tenant = $1 AND audience = $2 GROUP BY status, why ORDER BY status, why",
        )
        .bind(tenant)
        .bind(audience)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| (r.get("status"), r.get("why"), r.get::<i64, _>("n") as u64))
            .collect())
    }
}

/// Queued messages and the first line of their log, in multi-row
/// statements inside the caller's transaction (messages sent, breach and
/// s.25 notices).
pub(super) async fn insert_message_rows(
    tx: &mut Tx<'_>,
    dialect: Dialect,
    messages: &[MessageRow],
) -> Result<()> {
    insert_rows(
        tx,
        dialect,
        "INSERT INTO messages (tenant, id, audience, subject_uid, channel, purpose, status, reason,
                               attempts, next_at, content, created_at, updated_at)",
        "",
        messages,
        13,
        |q, m| {
            q.bind(m.tenant.as_str())
                .bind(m.id.as_str())
                .bind(m.audience.as_deref())
                .bind(m.subject_uid.as_str())
                .bind(m.channel.as_str())
                .bind(m.purpose.as_str())
                .bind(m.status.as_str())
                .bind(m.reason.as_deref())
                .bind(i64::from(m.attempts))
                .bind(m.next_at)
                .bind(m.content.clone())
                .bind(m.created_at)
                .bind(m.updated_at)
        },
    )
    .await?;
    insert_rows(
        tx,
        dialect,
        "INSERT INTO message_log (tenant, message, at, status, detail)",
        "",
        messages,
        5,
        |q, m| {
            q.bind(m.tenant.as_str())
                .bind(m.id.as_str())
                .bind(m.created_at)
                .bind(m.status.as_str())
                .bind(m.reason.as_deref())
        },
    )
    .await?;
    Ok(())
}
