//! [`CurrentState`] for both databases: `consent_states` as the decision
//! view reads it (by subject id, page by page; one subject; the flagged).

use super::*;

#[async_trait]
impl CurrentState for SqlStore {
    async fn states_page(
        &self,
        tenant: &str,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<SubjectSnapshot>> {
        let rows = sqlx::query(
            "SELECT s.id AS subject_id, c.* FROM subjects s
               JOIN consent_states c ON c.tenant = s.tenant AND c.subject_uid = s.uid
             WHERE s.tenant = $1 AND s.id > $2
             ORDER BY s.id LIMIT $3",
        )
        .bind(tenant)
        .bind(after_id)
        .bind(i64::from(limit.max(1)))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let full = rows.len() as u64 == u64::from(limit.max(1));
        let mut page = group_states(tenant, &rows);
        if full && let Some(last) = page.pop() {
            // The page may end inside its last subject: that one is read
            // whole, on its own when it is all the page holds.
            if page.is_empty() {
                let rows = sqlx::query(
                    "SELECT s.id AS subject_id, c.* FROM subjects s
                       JOIN consent_states c ON c.tenant = s.tenant AND c.subject_uid = s.uid
                     WHERE s.tenant = $1 AND s.id = $2",
                )
                .bind(tenant)
                .bind(&last.id)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
                page = group_states(tenant, &rows);
            }
        }
        Ok(page)
    }

    async fn flagged_subjects(&self, tenant: &str) -> Result<Vec<(String, SubjectFlags)>> {
        let rows =
            sqlx::query("SELECT id, flags FROM subjects WHERE tenant = $1 AND flags <> '{}'")
                .bind(tenant)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get("id"),
                    serde_json::from_str(r.get("flags")).map_err(json_err)?,
                ))
            })
            .collect()
    }

    async fn subject_states(&self, tenant: &str, id: &str) -> Result<Vec<ConsentRecord>> {
        let rows = sqlx::query(
            "SELECT c.* FROM subjects s
               JOIN consent_states c ON c.tenant = s.tenant AND c.subject_uid = s.uid
             WHERE s.tenant = $1 AND s.id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().filter_map(record_from_state_row).collect())
    }
}
