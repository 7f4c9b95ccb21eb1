//! [`Outbox`] for both databases: events after a cursor, webhook endpoints
//! and deliveries (retries, dead letters, replay), sink cursors.

use super::*;

/// The `sink_cursors` row that records how far events were forgotten
/// (not a consumer: it holds nothing back).
const PRUNED: &str = "~pruned";

#[async_trait]
impl Outbox for SqlStore {
    async fn events_after(&self, tenant: &str, seq: u64, limit: u32) -> Result<Vec<OutboxEvent>> {
        let horizon = self.horizon().await?;
        let rows = sqlx::query(hot::EVENTS_AFTER)
            .bind(tenant)
            .bind(seq as i64)
            .bind(horizon)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(outbox_event).collect()
    }

    async fn last_event(&self, tenant: &str) -> Result<u64> {
        let seq: Option<i64> = sqlx::query_scalar(hot::LAST_EVENT)
            .bind(tenant)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(seq.unwrap_or(0) as u64)
    }

    async fn prune_events(
        &self,
        tenant: &str,
        after: u64,
        before: Micros,
        limit: u32,
    ) -> Result<PrunedEvents> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        // Every consumer has passed the events up to the least cursor.
        let passed: Option<i64> = sqlx::query_scalar(
            "SELECT min(c) AS c FROM (
                 SELECT cursor AS c FROM webhooks WHERE tenant = $1 AND deleted_at IS NULL
                 UNION ALL SELECT seq AS c FROM sink_cursors WHERE tenant = $1 AND sink <> $2
             ) AS f",
        )
        .bind(tenant)
        .bind(PRUNED)
        .fetch_one(&mut *tx)
        .await
        .map_err(unavailable)?;
        let passed = passed.unwrap_or(i64::MAX);
        // A page of the oldest events, each with its time and whether an
        // undelivered webhook delivery still needs it (by primary key).
        let page = sqlx::query(
            "SELECT o.seq, l.recorded_at,
                    CASE WHEN EXISTS (SELECT 1 FROM webhooks w JOIN webhook_deliveries d
                             ON d.tenant = w.tenant AND d.webhook = w.id AND d.seq = o.seq
                         WHERE w.tenant = o.tenant AND w.deleted_at IS NULL
                           AND d.status <> 'delivered') THEN 1 ELSE 0 END AS pinned
             FROM outbox o JOIN ledger l ON l.tenant = o.tenant AND l.seq = o.seq
             WHERE o.tenant = $1 AND o.seq > $2
             ORDER BY o.seq LIMIT $3",
        )
        .bind(tenant)
        .bind(after as i64)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await
        .map_err(unavailable)?;
        let mut gone = Vec::new();
        let mut next = (page.len() == limit as usize).then_some(after);
        for r in &page {
            let seq: i64 = r.get("seq");
            if seq > passed || r.get::<i64, _>("recorded_at") >= before {
                next = None;
                break;
            }
            if r.get::<i64, _>("pinned") == 0 {
                gone.push(seq);
            }
            next = next.map(|_| seq as u64);
        }
        // (On SQLite `outbox` is a view: the rows are `outbox_rows`.)
        let delete = match self.dialect {
            Dialect::Sqlite => {
                "DELETE FROM outbox_rows
                 WHERE tenant_no = (SELECT no FROM tenant_numbers WHERE id = $1) AND seq IN"
            }
            Dialect::Postgres => "DELETE FROM outbox WHERE tenant = $1 AND seq IN",
        };
        for chunk in gone.chunks(CHUNK) {
            let sql = format!("{delete} ({})", numbered(2, chunk.len()));
            let mut q = sqlx::query(&sql).bind(tenant);
            for seq in chunk {
                q = q.bind(*seq);
            }
            q.execute(&mut *tx).await.map_err(unavailable)?;
        }
        if let Some(last) = gone.last() {
            sqlx::query(
                "INSERT INTO sink_cursors (sink, tenant, seq) VALUES ($1, $2, $3)
                 ON CONFLICT (sink, tenant) DO UPDATE SET seq = excluded.seq
                 WHERE excluded.seq > sink_cursors.seq",
            )
            .bind(PRUNED)
            .bind(tenant)
            .bind(*last)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(PrunedEvents {
            deleted: gone.len() as u64,
            next,
        })
    }

    async fn events_pruned_upto(&self, tenant: &str) -> Result<u64> {
        self.sink_cursor(PRUNED, tenant).await
    }

    async fn insert_webhook(&self, w: &Webhook) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO webhooks (tenant, id, url, events, purposes, description, secret, cursor, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(w.tenant.as_str())
        .bind(w.id.as_str())
        .bind(w.url.as_str())
        .bind(serde_json::to_string(&w.events).map_err(json_err)?)
        .bind(serde_json::to_string(&w.purposes).map_err(json_err)?)
        .bind(w.description.as_str())
        .bind(w.secret.as_str())
        .bind(w.cursor as i64)
        .bind(w.created_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn webhooks(&self, tenant: Option<&str>) -> Result<Vec<Webhook>> {
        let rows = sqlx::query(
            "SELECT * FROM webhooks WHERE deleted_at IS NULL AND ($1 IS NULL OR tenant = $1)
             ORDER BY created_at, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(Webhook {
                    id: r.get("id"),
                    tenant: r.get("tenant"),
                    url: r.get("url"),
                    events: serde_json::from_str(r.get("events")).map_err(json_err)?,
                    purposes: serde_json::from_str(r.get("purposes")).map_err(json_err)?,
                    description: r.get("description"),
                    secret: r.get("secret"),
                    cursor: r.get::<i64, _>("cursor") as u64,
                    created_at: r.get("created_at"),
                })
            })
            .collect()
    }

    async fn delete_webhook(&self, tenant: &str, id: &str, at: Micros) -> Result<bool> {
        let _writing = self.exclusive().await;
        let done = sqlx::query(
            "UPDATE webhooks SET deleted_at = $1 WHERE tenant = $2 AND id = $3 AND deleted_at IS NULL",
        )
        .bind(at)
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() > 0)
    }

    async fn pending_subjects(&self, tenant: &str, webhook: &str) -> Result<Vec<String>> {
        sqlx::query_scalar(hot::PENDING_SUBJECTS)
            .bind(tenant)
            .bind(webhook)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)
    }

    async fn due_deliveries(&self, now: Micros, limit: u32) -> Result<Vec<DueDelivery>> {
        let rows = sqlx::query(hot::DUE_DELIVERIES)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut due: Vec<DueDelivery> = rows
            .iter()
            .map(|r| DueDelivery {
                tenant: r.get("tenant"),
                webhook: r.get("webhook"),
                seq: r.get::<i64, _>("seq") as u64,
                subject_uid: r.get("subject_uid"),
                attempts: r.get::<i64, _>("attempts") as u32,
                created_at: r.get("created_at"),
                url: r.get("url"),
                secret: r.get("secret"),
                payload: String::new(),
            })
            .collect();
        // The events themselves, per tenant.
        let mut wanted: HashMap<&str, Vec<i64>> = HashMap::new();
        for d in &due {
            wanted
                .entry(d.tenant.as_str())
                .or_default()
                .push(d.seq as i64);
        }
        let mut payloads: HashMap<(String, u64), String> = HashMap::new();
        for (tenant, seqs) in wanted {
            for chunk in seqs.chunks(CHUNK) {
                let sql = format!(
                    "{OUTBOX_EVENTS} WHERE o.tenant = $1 AND o.seq IN ({})",
                    numbered(2, chunk.len())
                );
                let mut q = sqlx::query(&sql).bind(tenant);
                for seq in chunk {
                    q = q.bind(*seq);
                }
                for r in q.fetch_all(&self.pool).await.map_err(unavailable)? {
                    let e = outbox_event(&r)?;
                    payloads.insert((tenant.to_string(), e.seq), e.payload);
                }
            }
        }
        for d in &mut due {
            if let Some(p) = payloads.remove(&(d.tenant.clone(), d.seq)) {
                d.payload = p;
            }
        }
        Ok(due)
    }

    async fn settle(
        &self,
        new: &[(DueDelivery, Option<Attempt>)],
        retried: &[(DueDelivery, Attempt)],
        cursors: &[(String, String, u64)],
    ) -> Result<()> {
        let _writing = self.exclusive().await;
        if new.is_empty() && retried.is_empty() && cursors.is_empty() {
            return Ok(());
        }
        let mut tx = self.begin().await?;
        let rows: Vec<(
            &DueDelivery,
            &str,
            i64,
            Micros,
            Option<i64>,
            Option<&str>,
            Micros,
        )> = new
            .iter()
            .map(|(d, a)| match a {
                Some(a) => (
                    d,
                    a.status,
                    1,
                    a.next_at,
                    a.code.map(i64::from),
                    a.error.as_deref(),
                    a.at,
                ),
                None => (d, "pending", 0, d.created_at, None, None, d.created_at),
            })
            .collect();
        insert_rows(
            &mut tx,
            self.dialect,
            "INSERT INTO webhook_deliveries (tenant, webhook, seq, subject_uid, status, attempts, next_at,
                last_code, last_error, created_at, updated_at)",
            " ON CONFLICT (tenant, webhook, seq) DO NOTHING",
            &rows,
            11,
            |q, (d, status, attempts, next_at, code, error, at)| {
                q.bind(d.tenant.as_str())
                    .bind(d.webhook.as_str())
                    .bind(d.seq as i64)
                    .bind(d.subject_uid.as_str())
                    .bind(*status)
                    .bind(*attempts)
                    .bind(*next_at)
                    .bind(*code)
                    .bind(*error)
                    .bind(d.created_at)
                    .bind(*at)
            },
        )
        .await?;
        for (d, a) in retried {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = $1, attempts = attempts + 1, next_at = $2,
                    last_code = $3, last_error = $4, updated_at = $5
                 WHERE tenant = $6 AND webhook = $7 AND seq = $8",
            )
            .bind(a.status)
            .bind(a.next_at)
            .bind(a.code.map(i64::from))
            .bind(a.error.as_deref())
            .bind(a.at)
            .bind(d.tenant.as_str())
            .bind(d.webhook.as_str())
            .bind(d.seq as i64)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        for (tenant, webhook, seq) in cursors {
            sqlx::query(
                "UPDATE webhooks SET cursor = $1 WHERE tenant = $2 AND id = $3 AND cursor < $1",
            )
            .bind(*seq as i64)
            .bind(tenant.as_str())
            .bind(webhook.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(())
    }

    async fn deliveries(
        &self,
        tenant: &str,
        webhook: &str,
        status: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Delivery>> {
        let rows = sqlx::query(
            "SELECT * FROM webhook_deliveries WHERE tenant = $1 AND webhook = $2
                AND ($3 IS NULL OR status = $3)
             ORDER BY seq DESC LIMIT $4",
        )
        .bind(tenant)
        .bind(webhook)
        .bind(status)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| Delivery {
                seq: r.get::<i64, _>("seq") as u64,
                status: r.get("status"),
                attempts: r.get::<i64, _>("attempts") as u32,
                next_at: r.get("next_at"),
                last_code: r.get::<Option<i64>, _>("last_code").map(|c| c as u16),
                last_error: r.get("last_error"),
                created_at: r.get("created_at"),
                updated_at: r.get("updated_at"),
            })
            .collect())
    }

    async fn replay(
        &self,
        tenant: &str,
        webhook: &str,
        seqs: Option<&[u64]>,
        at: Micros,
    ) -> Result<u64> {
        let _writing = self.exclusive().await;
        let base = "UPDATE webhook_deliveries SET status = 'pending', next_at = $1, updated_at = $1
             WHERE tenant = $2 AND webhook = $3 AND status = 'dead'";
        let done = match seqs {
            None => sqlx::query(base)
                .bind(at)
                .bind(tenant)
                .bind(webhook)
                .execute(&self.pool)
                .await
                .map_err(unavailable)?,
            Some(seqs) => {
                let mut total = 0;
                for seq in seqs {
                    total += sqlx::query(&format!("{base} AND seq = $4"))
                        .bind(at)
                        .bind(tenant)
                        .bind(webhook)
                        .bind(*seq as i64)
                        .execute(&self.pool)
                        .await
                        .map_err(unavailable)?
                        .rows_affected();
                }
                return Ok(total);
            }
        };
        Ok(done.rows_affected())
    }

    async fn sink_cursor(&self, sink: &str, tenant: &str) -> Result<u64> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM sink_cursors WHERE sink = $1 AND tenant = $2")
                .bind(sink)
                .bind(tenant)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(seq.unwrap_or(0) as u64)
    }

    async fn set_sink_cursor(&self, sink: &str, tenant: &str, seq: u64) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO sink_cursors (sink, tenant, seq) VALUES ($1, $2, $3)
             ON CONFLICT (sink, tenant) DO UPDATE SET seq = excluded.seq",
        )
        .bind(sink)
        .bind(tenant)
        .bind(seq as i64)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}

/// Outbox rows joined with their ledger entries: what an event is made of.
/// A `subject.erased` entry's evidence (its systems' outcomes, no personal
/// data) comes along (`hot::erased_evidence`), looked up for those rows only.
const OUTBOX_EVENTS: &str = concat!(
    "SELECT o.before_state, o.after_state, l.*, ",
    hot::erased_evidence!(),
    " FROM outbox o JOIN ledger l ON l.tenant = o.tenant AND l.seq = o.seq"
);

fn outbox_event(r: &AnyRow) -> Result<OutboxEvent> {
    let entry = entry_from_row(r).map_err(StoreError::Unavailable)?;
    let state = |c: &str| {
        r.try_get::<&str, _>(c)
            .ok()
            .and_then(ConsentState::parse)
            .ok_or_else(|| StoreError::Unavailable(format!("outbox row {}: bad {c}", entry.seq)))
    };
    let mut event = ConsentEvent::new(&entry, state("before_state")?, state("after_state")?);
    if event.systems.is_some() {
        // `subject.erased`: the connected systems' outcomes, kept in its
        // evidence (no personal data; see `systems::finish_if_done`).
        let evidence: Option<String> = r.try_get("evidence").ok().flatten();
        if let Some(outcomes) = evidence
            .and_then(|e| serde_json::from_str::<serde_json::Value>(&e).ok())
            .and_then(|e| serde_json::from_value(e["systems"].clone()).ok())
        {
            event.systems = Some(outcomes);
        }
    }
    Ok(OutboxEvent {
        seq: entry.seq,
        subject_uid: entry.body.subject_uid.clone(),
        purpose: entry.body.purpose.clone(),
        kind: events::kind(entry.body.action).to_string(),
        payload: serde_json::to_string(&event).map_err(json_err)?,
    })
}
