//! [`Profiles`] for both databases: sealed profiles, keyed-hash lookups,
//! tenant keys and the audit log.

use super::*;

#[async_trait]
impl Profiles for SqlStore {
    async fn tenant_key(&self, tenant: &str) -> Result<Option<Vec<u8>>> {
        sqlx::query_scalar("SELECT wrapped FROM tenant_keys WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn insert_tenant_key(&self, tenant: &str, master_id: &str, wrapped: &[u8]) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO tenant_keys (tenant, master_id, wrapped, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (tenant) DO NOTHING",
        )
        .bind(tenant)
        .bind(master_id)
        .bind(wrapped.to_vec())
        .bind(time::now())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn put_profile(&self, tenant: &str, w: &ProfileWrite, at: Micros) -> Result<bool> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        let flags = w.flags.as_ref().map(super::flags_json).transpose()?;
        let done = match w.rev {
            None => sqlx::query(
                "INSERT INTO subjects (tenant, id, uid, data_key, profile, profile_rev, flags,
                                       created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, 1, $6, $7, $7)
                 ON CONFLICT (tenant, id) DO NOTHING",
            )
            .bind(tenant)
            .bind(&w.id)
            .bind(&w.uid)
            .bind(w.data_key.clone())
            .bind(w.profile.clone())
            .bind(flags.unwrap_or_else(|| "{}".into()))
            .bind(at),
            // The data key is set once: a row made by a consent write has
            // none yet; afterwards only the same key may be written back.
            Some(rev) => sqlx::query(
                "UPDATE subjects SET data_key = $1, profile = $2, profile_rev = profile_rev + 1,
                        flags = COALESCE($3, flags), identifiers = '{}', attributes = '{}',
                        updated_at = $4
                 WHERE tenant = $5 AND id = $6 AND uid = $7 AND profile_rev = $8
                   AND (data_key IS NULL OR data_key = $1)",
            )
            .bind(w.data_key.clone())
            .bind(w.profile.clone())
            .bind(flags)
            .bind(at)
            .bind(tenant)
            .bind(&w.id)
            .bind(&w.uid)
            .bind(rev),
        }
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM subject_lookups WHERE tenant = $1 AND uid = $2")
            .bind(tenant)
            .bind(&w.uid)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        for (kind, hash) in &w.lookups {
            if w.exclusive.contains(&kind.as_str()) {
                sqlx::query(
                    "DELETE FROM subject_lookups WHERE tenant = $1 AND kind = $2 AND hash = $3",
                )
                .bind(tenant)
                .bind(kind)
                .bind(hash)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
            sqlx::query(
                "INSERT INTO subject_lookups (tenant, kind, hash, uid) VALUES ($1, $2, $3, $4)
                 ON CONFLICT DO NOTHING",
            )
            .bind(tenant)
            .bind(kind)
            .bind(hash)
            .bind(&w.uid)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        if w.flags.is_some() {
            self.announce(
                &mut *tx,
                &Change::Subject {
                    tenant: tenant.into(),
                    id: w.id.clone(),
                },
            )
            .await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn subjects_by_lookup(
        &self,
        tenant: &str,
        kind: &str,
        hash: &str,
    ) -> Result<Vec<SubjectRecord>> {
        let rows = sqlx::query(hot::SUBJECTS_BY_LOOKUP)
            .bind(tenant)
            .bind(kind)
            .bind(hash)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(subject_from_row).collect()
    }

    async fn subject_id(&self, tenant: &str, uid: &str) -> Result<Option<String>> {
        sqlx::query_scalar(hot::SUBJECT_ID)
            .bind(tenant)
            .bind(uid)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn profiles(&self, tenant: &str, after: &str, limit: u32) -> Result<Vec<SubjectRecord>> {
        let rows = sqlx::query(
            "SELECT * FROM subjects WHERE tenant = $1 AND id > $2 AND profile IS NOT NULL
             ORDER BY id LIMIT $3",
        )
        .bind(tenant)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(subject_from_row).collect()
    }

    async fn clear_profiles(&self, limit: u32) -> Result<Vec<(String, String, String, String)>> {
        let rows = sqlx::query(
            "SELECT tenant, id, identifiers, attributes FROM subjects
             WHERE identifiers <> '{}' OR attributes <> '{}' LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get("tenant"),
                    r.get("id"),
                    r.get("identifiers"),
                    r.get("attributes"),
                )
            })
            .collect())
    }

    async fn insert_audit(&self, entries: &[AuditEntry]) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        for e in entries {
            sqlx::query(
                "INSERT INTO audit_log (tenant, at, actor, subject_uid, fields, context)
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&e.tenant)
            .bind(e.at)
            .bind(&e.actor)
            .bind(&e.subject_uid)
            .bind(serde_json::to_string(&e.fields).map_err(json_err)?)
            .bind(&e.context)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn audit(
        &self,
        tenant: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT a.*, (SELECT s.id FROM subjects s WHERE s.uid = a.subject_uid
         AND s.tenant = a.tenant) AS subject_id
     FROM audit_log a 
             WHERE a.tenant = $1 AND a.id < $2 ORDER BY a.id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(before.unwrap_or(i64::MAX))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    id: r.get("id"),
                    tenant: r.get("tenant"),
                    at: r.get("at"),
                    actor: r.get("actor"),
                    subject_uid: r.get("subject_uid"),
                    subject: r.get("subject_id"),
                    fields: serde_json::from_str(r.get("fields")).map_err(json_err)?,
                    context: r.get("context"),
                })
            })
            .collect()
    }
}
