//! [`Events`] for both databases: collector sources and stored events.

use super::*;

fn source_from_row(r: &AnyRow) -> Result<Source> {
    Ok(Source {
        id: r.get("id"),
        tenant: r.get("tenant"),
        name: r.get("name"),
        purposes: serde_json::from_str(r.get("purposes")).map_err(json_err)?,
        // BOOLEAN on PostgreSQL, INTEGER on SQLite.
        store: r
            .try_get::<bool, _>("store_events")
            .or_else(|_| r.try_get::<i64, _>("store_events").map(|n| n != 0))
            .map_err(unavailable)?,
        forward: r
            .try_get::<bool, _>("forward")
            .or_else(|_| r.try_get::<i64, _>("forward").map(|n| n != 0))
            .map_err(unavailable)?,
        write_key: String::new(),
        key_hash: r.get("key_hash"),
        key_prefix: r.get("key_prefix"),
        accepted: r.get::<i64, _>("accepted") as u64,
        dropped: r.get::<i64, _>("dropped") as u64,
        created_at: r.get("created_at"),
    })
}

#[async_trait]
impl Events for SqlStore {
    async fn insert_source(&self, s: &Source) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO sources (tenant, id, name, key_hash, key_prefix, purposes, store_events, forward, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&s.tenant)
        .bind(&s.id)
        .bind(&s.name)
        .bind(&s.key_hash)
        .bind(&s.key_prefix)
        .bind(serde_json::to_string(&s.purposes).map_err(json_err)?)
        .bind(s.store)
        .bind(s.forward)
        .bind(s.created_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn sources(&self, tenant: Option<&str>) -> Result<Vec<Source>> {
        let rows = sqlx::query(
            "SELECT * FROM sources WHERE deleted_at IS NULL AND ($1 IS NULL OR tenant = $1)
             ORDER BY created_at, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(source_from_row).collect()
    }

    async fn delete_source(&self, tenant: &str, id: &str, at: Micros) -> Result<bool> {
        let _writing = self.exclusive().await;
        let done = sqlx::query(
            "UPDATE sources SET deleted_at = $1 WHERE tenant = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(at)
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() > 0)
    }

    async fn store_events(&self, events: &[TrackedEvent], counts: &[SourceCounts]) -> Result<()> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        if !events.is_empty() {
            let uids = ensure_subject_ids(
                &mut tx,
                self.dialect,
                events.iter().map(|e| (&e.tenant, &e.subject_id)),
            )
            .await?
            .uids;
            // One row per message id: a retried batch (or a duplicate
            // inside one) is kept once.
            let mut seen = BTreeSet::new();
            let rows: Vec<(&TrackedEvent, &String)> = events
                .iter()
                .filter(|e| seen.insert((&e.tenant, &e.id)))
                .map(|e| {
                    let uid = uids
                        .get(&(e.tenant.clone(), e.subject_id.clone()))
                        .expect("ensure_subject_ids returns every subject");
                    (e, uid)
                })
                .collect();
            insert_rows(
                &mut tx,
                self.dialect,
                "INSERT INTO events (tenant, id, source, subject_uid, type, name, body, occurred_at, received_at, expires_at)",
                " ON CONFLICT (tenant, id) DO NOTHING",
                &rows,
                10,
                |q, (e, uid)| {
                    q.bind(e.tenant.as_str())
                        .bind(e.id.as_str())
                        .bind(e.source.as_str())
                        .bind(uid.as_str())
                        .bind(e.kind)
                        .bind(e.name.as_deref())
                        .bind(e.body.as_str())
                        .bind(e.occurred_at)
                        .bind(e.received_at)
                        .bind(e.expires_at)
                },
            )
            .await?;
        }
        for c in counts {
            sqlx::query(
                "UPDATE sources SET accepted = accepted + $1, dropped = dropped + $2
                 WHERE tenant = $3 AND id = $4",
            )
            .bind(c.accepted as i64)
            .bind(c.dropped as i64)
            .bind(&c.tenant)
            .bind(&c.source)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn event_counts(
        &self,
        tenant: &str,
        name: &str,
        since: Micros,
    ) -> Result<HashMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT subject_uid, COUNT(*) AS n FROM events
             WHERE tenant = $1 AND name = $2 AND occurred_at >= $3 GROUP BY subject_uid",
        )
        .bind(tenant)
        .bind(name)
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| (r.get("subject_uid"), r.get::<i64, _>("n") as u64))
            .collect())
    }

    async fn subject_events(
        &self,
        tenant: &str,
        uid: &str,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        let rows = sqlx::query(hot::SUBJECT_EVENTS)
            .bind(tenant)
            .bind(uid)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(StoredEvent {
                    id: r.get("id"),
                    source: r.get("source"),
                    kind: r.get("type"),
                    name: r.get("name"),
                    body: serde_json::from_str(r.get("body")).map_err(json_err)?,
                    occurred_at: r.get("occurred_at"),
                    received_at: r.get("received_at"),
                    expires_at: r.get("expires_at"),
                })
            })
            .collect()
    }

    async fn expire_events(&self, now: Micros) -> Result<u64> {
        let _writing = self.exclusive().await;
        let done = sqlx::query(hot::EXPIRE_EVENTS)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}
