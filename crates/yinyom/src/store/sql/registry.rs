//! [`Registry`] for both databases: tenants, API keys, receipt-signing keys,
//! purposes and notice versions.

use super::*;

fn tenant_from_row(row: &AnyRow) -> Result<Tenant> {
    let mut v: serde_json::Value = serde_json::from_str(row.get("body")).map_err(json_err)?;
    v["id"] = row.get::<String, _>("id").into();
    v["name"] = row.get::<String, _>("name").into();
    v["created_at"] = row.get::<i64, _>("created_at").into();
    let partitions = row.try_get::<i64, _>("partitions").map_err(unavailable)?;
    v["partitions"] = partitions.clamp(1, 4096).into();
    serde_json::from_value(v).map_err(json_err)
}

pub(super) fn tenant_body(t: &Tenant) -> String {
    serde_json::json!({
        "dpo": t.dpo,
        "jurisdictions": t.jurisdictions,
        "default_lang": t.default_lang,
        "policy_url": t.policy_url,
        "pii_readers": t.pii_readers,
        "security_measures": t.security_measures,
        "banner": t.banner,
        "banner_design": t.banner_design,
        "reminders": t.reminders,
    })
    .to_string()
}

fn key_from_row(row: &AnyRow) -> ApiKey {
    ApiKey {
        id: row.get("id"),
        tenant: row.get("tenant"),
        role: Role::parse(row.get("role")).unwrap_or(Role::Service),
        label: row.get("label"),
        hash: row.get("hash"),
        prefix: row.get("prefix"),
        created_at: row.get("created_at"),
        revoked_at: row.get("revoked_at"),
    }
}

#[async_trait]
impl Registry for SqlStore {
    async fn tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query("SELECT * FROM tenants ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn insert_tenant(&self, t: &Tenant) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO tenants (id, name, body, created_at, partitions) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&t.id)
        .bind(&t.name)
        .bind(tenant_body(t))
        .bind(t.created_at)
        .bind(t.partitions.clamp(1, 4096) as i32)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        self.announce(&self.pool, &Change::Tenant { id: t.id.clone() })
            .await?;
        Ok(())
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<()> {
        let _writing = self.exclusive().await;
        let done = sqlx::query("UPDATE tenants SET name = $1, body = $2 WHERE id = $3")
            .bind(&t.name)
            .bind(tenant_body(t))
            .bind(&t.id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.announce(&self.pool, &Change::Tenant { id: t.id.clone() })
            .await?;
        Ok(())
    }

    async fn insert_api_key(&self, k: &ApiKey) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, role, label, hash, prefix, created_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&k.id)
        .bind(&k.tenant)
        .bind(k.role.as_str())
        .bind(&k.label)
        .bind(&k.hash)
        .bind(&k.prefix)
        .bind(k.created_at)
        .bind(k.revoked_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        self.announce(&self.pool, &Change::Keys).await?;
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE hash = $1")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(key_from_row))
    }

    async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT * FROM api_keys WHERE tenant = $1 ORDER BY created_at, id")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(key_from_row).collect())
    }

    async fn revoke_api_key(&self, tenant: &str, id: &str, at: Micros) -> Result<Option<ApiKey>> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant = $2 AND id = $3 AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        self.announce(&self.pool, &Change::Keys).await?;
        let row = sqlx::query("SELECT * FROM api_keys WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(key_from_row))
    }

    async fn signing_keys(&self) -> Result<Vec<SigningKeyRow>> {
        let rows = sqlx::query("SELECT * FROM signing_keys ORDER BY created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| SigningKeyRow {
                kid: r.get("kid"),
                secret: r.get("secret"),
                created_at: r.get("created_at"),
            })
            .collect())
    }

    async fn insert_signing_key(&self, k: &SigningKeyRow) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query("INSERT INTO signing_keys (kid, secret, created_at) VALUES ($1, $2, $3)")
            .bind(&k.kid)
            .bind(&k.secret)
            .bind(k.created_at)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn reseal_signing_key(&self, kid: &str, old: &[u8], new: &[u8]) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query("UPDATE signing_keys SET secret = $1 WHERE kid = $2 AND secret = $3")
            .bind(new)
            .bind(kid)
            .bind(old)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn insert_purpose(&self, tenant: &str, p: &Purpose, at: Micros) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query("INSERT INTO purposes (tenant, key, body, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(tenant)
            .bind(&p.key)
            .bind(serde_json::to_string(p).map_err(json_err)?)
            .bind(at)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        self.announce(
            &self.pool,
            &Change::Purposes {
                tenant: tenant.into(),
            },
        )
        .await?;
        Ok(())
    }

    async fn update_purpose(&self, tenant: &str, p: &Purpose, at: Micros) -> Result<()> {
        let _writing = self.exclusive().await;
        let done = sqlx::query(
            "UPDATE purposes SET body = $1, updated_at = $2 WHERE tenant = $3 AND key = $4",
        )
        .bind(serde_json::to_string(p).map_err(json_err)?)
        .bind(at)
        .bind(tenant)
        .bind(&p.key)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.announce(
            &self.pool,
            &Change::Purposes {
                tenant: tenant.into(),
            },
        )
        .await?;
        Ok(())
    }

    async fn purposes(&self, tenant: &str) -> Result<Vec<Purpose>> {
        let rows = sqlx::query("SELECT body FROM purposes WHERE tenant = $1 ORDER BY key")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| serde_json::from_str(r.get("body")).map_err(json_err))
            .collect()
    }

    async fn publish_notice(&self, tenant: &str, draft: NoticeDraft, at: Micros) -> Result<Notice> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM notices WHERE tenant = $1 AND key = $2")
                .bind(tenant)
                .bind(&draft.key)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        let notice = draft.publish(latest.unwrap_or(0) as u32 + 1, at);
        sqlx::query(
            "INSERT INTO notices (tenant, key, version, body, content_hash, material, published_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant)
        .bind(&notice.key)
        .bind(notice.version as i64)
        .bind(serde_json::to_string(&notice).map_err(json_err)?)
        .bind(&notice.content_hash)
        .bind(notice.material)
        .bind(notice.published_at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        self.announce(
            &mut *tx,
            &Change::Notices {
                tenant: tenant.into(),
            },
        )
        .await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(notice)
    }

    async fn notices(&self, tenant: &str) -> Result<Vec<Notice>> {
        let rows = sqlx::query("SELECT body FROM notices WHERE tenant = $1 ORDER BY key, version")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| serde_json::from_str(r.get("body")).map_err(json_err))
            .collect()
    }
}
