//! [`Checkpoints`] for both databases: a partition's entry hashes by
//! position (`ledger_by_part`), stored Merkle subtrees, signed checkpoints.

use yinyom_core::merkle::{Hash, Subtree};

use super::*;

fn checkpoint_from_row(r: &AnyRow) -> Result<CheckpointRow> {
    Ok(CheckpointRow {
        tenant: r.try_get("tenant").map_err(unavailable)?,
        number: r.try_get::<i64, _>("number").map_err(unavailable)? as u64,
        size: r.try_get::<i64, _>("size").map_err(unavailable)? as u64,
        root: r.try_get("root").map_err(unavailable)?,
        body: serde_json::from_str(r.try_get("body").map_err(unavailable)?).map_err(json_err)?,
        jws: r.try_get("jws").map_err(unavailable)?,
        created_at: r.try_get("created_at").map_err(unavailable)?,
    })
}

fn hash_from_hex(text: &str) -> Result<Hash> {
    yinyom_core::merkle::hash_from_hex(text).ok_or_else(|| {
        StoreError::Unavailable(format!("stored hash {text:?} is not 32 bytes of hex"))
    })
}

#[async_trait]
impl Checkpoints for SqlStore {
    async fn entry_hashes(
        &self,
        tenant: &str,
        part: u32,
        after: u64,
        upto: u64,
    ) -> Result<Vec<(u64, String)>> {
        let rows = sqlx::query(
            "SELECT seq, hash FROM ledger WHERE tenant = $1 AND part = $2
             AND pseq > $3 AND pseq <= $4 ORDER BY pseq",
        )
        .bind(tenant)
        .bind(i64::from(part))
        .bind(after as i64)
        .bind(upto.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get::<i64, _>("seq").map_err(unavailable)? as u64,
                    stored_hash(r, "hash").map_err(StoreError::Unavailable)?,
                ))
            })
            .collect()
    }

    async fn merkle_nodes(
        &self,
        tenant: &str,
        part: u32,
        wanted: &[Subtree],
    ) -> Result<HashMap<Subtree, Hash>> {
        let mut found = HashMap::new();
        for chunk in wanted.chunks(CHUNK) {
            // SQLite binds anonymous `?`s from the first argument on: the
            // whole statement uses them there.
            let (t, p) = match self.dialect {
                Dialect::Sqlite => ("?", "?"),
                Dialect::Postgres => ("$1", "$2"),
            };
            let sql = format!(
                "SELECT level, idx, hash FROM ledger_nodes WHERE tenant = {t} AND part = {p}
                 AND (level, idx) IN (VALUES {})",
                groups(self.dialect, 3, chunk.len(), 2)
            );
            let mut q = sqlx::query(&sql).bind(tenant).bind(i64::from(part));
            for s in chunk {
                q = q.bind(i64::from(s.level)).bind(s.index as i64);
            }
            for r in q.fetch_all(&self.pool).await.map_err(unavailable)? {
                let level: i64 = r.try_get("level").map_err(unavailable)?;
                let idx: i64 = r.try_get("idx").map_err(unavailable)?;
                found.insert(
                    Subtree {
                        level: level as u32,
                        index: idx as u64,
                    },
                    hash_from_hex(r.try_get("hash").map_err(unavailable)?)?,
                );
            }
        }
        Ok(found)
    }

    async fn insert_merkle_nodes(
        &self,
        tenant: &str,
        part: u32,
        nodes: &[(Subtree, Hash)],
    ) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let rows: Vec<(&str, i64, i64, i64, String)> = nodes
            .iter()
            .map(|(s, h)| {
                (
                    tenant,
                    i64::from(part),
                    i64::from(s.level),
                    s.index as i64,
                    hex::encode(h),
                )
            })
            .collect();
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        insert_rows(
            &mut tx,
            self.dialect,
            "INSERT INTO ledger_nodes (tenant, part, level, idx, hash)",
            " ON CONFLICT (tenant, part, level, idx) DO NOTHING",
            &rows,
            5,
            |q, (tenant, part, level, idx, hash)| {
                q.bind(*tenant)
                    .bind(*part)
                    .bind(*level)
                    .bind(*idx)
                    .bind(hash.as_str())
            },
        )
        .await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    async fn insert_checkpoint(&self, c: &CheckpointRow) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO ledger_checkpoints (tenant, number, size, root, body, jws, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant, number) DO NOTHING",
        )
        .bind(c.tenant.as_str())
        .bind(c.number as i64)
        .bind(c.size as i64)
        .bind(c.root.as_str())
        .bind(c.body.to_string())
        .bind(c.jws.as_str())
        .bind(c.created_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn checkpoint(&self, tenant: &str, number: Option<u64>) -> Result<Option<CheckpointRow>> {
        let row = match number {
            Some(n) => {
                sqlx::query("SELECT * FROM ledger_checkpoints WHERE tenant = $1 AND number = $2")
                    .bind(tenant)
                    .bind(n.min(i64::MAX as u64) as i64)
                    .fetch_optional(&self.pool)
                    .await
            }
            None => sqlx::query(
                "SELECT * FROM ledger_checkpoints WHERE tenant = $1 ORDER BY number DESC LIMIT 1",
            )
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await,
        }
        .map_err(unavailable)?;
        row.as_ref().map(checkpoint_from_row).transpose()
    }

    async fn checkpoints(
        &self,
        tenant: &str,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<CheckpointRow>> {
        let rows = sqlx::query(
            "SELECT * FROM ledger_checkpoints WHERE tenant = $1 AND number < $2
             ORDER BY number DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(before.unwrap_or(i64::MAX as u64).min(i64::MAX as u64) as i64)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(checkpoint_from_row).collect()
    }

    async fn receipt(&self, tenant: &str, id: &str) -> Result<Option<(String, StoredReceipt)>> {
        let row = sqlx::query(
            "SELECT subject_uid, id, jws, created_at FROM receipts WHERE tenant = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.map(|r| {
            (
                r.get("subject_uid"),
                StoredReceipt {
                    id: r.get("id"),
                    jws: r.get("jws"),
                    created_at: r.get("created_at"),
                },
            )
        }))
    }
}
