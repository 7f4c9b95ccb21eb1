//! [`BannerDesigns`] for both databases: every design a tenant saved, the
//! newest being the one its banner shows (also kept in the tenant's body,
//! so the view and the change feed carry it like any tenant setting).

use super::*;

#[async_trait]
impl BannerDesigns for SqlStore {
    async fn save_banner_design(&self, t: &Tenant, by: &str, at: Micros) -> Result<u64> {
        let design = t
            .banner_design
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(json_err)?
            .unwrap_or_else(|| "null".into());
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        let version: i64 = sqlx::query(
            "SELECT COALESCE(MAX(version), 0) + 1 AS v FROM banner_designs WHERE tenant = $1",
        )
        .bind(&t.id)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?
        .get("v");
        sqlx::query(
            "INSERT INTO banner_designs (tenant, version, design, created_by, created_at)
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&t.id)
        .bind(version)
        .bind(&design)
        .bind(by)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let done = sqlx::query("UPDATE tenants SET body = $1 WHERE id = $2")
            .bind(super::registry::tenant_body(t))
            .bind(&t.id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        self.announce(&mut *tx, &Change::Tenant { id: t.id.clone() })
            .await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(version as u64)
    }

    async fn banner_designs(
        &self,
        tenant: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<StoredDesign>> {
        let rows = sqlx::query(
            "SELECT version, design, created_by, created_at FROM banner_designs
             WHERE tenant = $1 AND version < $2 ORDER BY version DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(before.map_or(i64::MAX, |b| b.min(i64::MAX as u64) as i64))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let design: Option<yinyom_core::banner::BannerDesign> =
                    serde_json::from_str(r.get("design")).map_err(json_err)?;
                Ok(StoredDesign {
                    version: r.get::<i64, _>("version") as u64,
                    design: design.unwrap_or_default(),
                    created_by: r.get("created_by"),
                    created_at: r.get("created_at"),
                })
            })
            .collect()
    }
}
