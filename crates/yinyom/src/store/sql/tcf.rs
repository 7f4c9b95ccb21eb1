//! [`VendorLists`] for both databases: the IAB TCF Global Vendor Lists
//! fetched for tenants' banners, one row per version.

use super::*;

#[async_trait]
impl VendorLists for SqlStore {
    async fn put_vendor_list(&self, tenant: &str, list: &StoredVendorList) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO tcf_vendor_lists (tenant, version, url, fetched_at, body)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (tenant, version) DO UPDATE SET url = $3, fetched_at = $4",
        )
        .bind(tenant)
        .bind(i64::from(list.version))
        .bind(&list.url)
        .bind(list.fetched_at)
        .bind(&list.body)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn vendor_list(
        &self,
        tenant: &str,
        version: Option<u32>,
    ) -> Result<Option<StoredVendorList>> {
        let q = match version {
            Some(v) => sqlx::query(
                "SELECT version, url, fetched_at, body FROM tcf_vendor_lists
                 WHERE tenant = $1 AND version = $2",
            )
            .bind(tenant)
            .bind(i64::from(v)),
            None => sqlx::query(
                "SELECT version, url, fetched_at, body FROM tcf_vendor_lists
                 WHERE tenant = $1 ORDER BY version DESC LIMIT 1",
            )
            .bind(tenant),
        };
        let row = q.fetch_optional(&self.pool).await.map_err(unavailable)?;
        Ok(row.map(|r| StoredVendorList {
            version: r.get::<i64, _>("version") as u32,
            url: r.get("url"),
            fetched_at: r.get("fetched_at"),
            body: r.get("body"),
        }))
    }
}
