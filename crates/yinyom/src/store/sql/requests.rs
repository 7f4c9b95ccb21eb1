//! [`Requests`] for both databases: rights requests, and erasure by
//! crypto-shredding.

use yinyom_core::rights::{Kind, Status};

use super::*;

fn reminder_from_row(r: &AnyRow) -> Reminder {
    Reminder {
        tenant: r.get("tenant"),
        kind: r.get("kind"),
        ref_id: r.get("ref_id"),
        reminder: r.get("reminder"),
        due_at: r.get("due_at"),
        created_at: r.get("created_at"),
        email_status: r.get("email_status"),
        email_attempts: r.get("email_attempts"),
        email_error: r.try_get("email_error").ok().flatten(),
    }
}

fn request_from_row(r: &AnyRow) -> Result<RequestRow> {
    let kind: String = r.get("kind");
    let status: String = r.get("status");
    let bad = |what: &str| StoreError::Unavailable(format!("stored request has a bad {what}"));
    Ok(RequestRow {
        tenant: r.get("tenant"),
        id: r.get("id"),
        subject_uid: r.get("subject_uid"),
        subject_id: r.try_get("subject_id").ok().flatten(),
        kind: Kind::parse(&kind).ok_or_else(|| bad("kind"))?,
        status: Status::parse(&status).ok_or_else(|| bad("status"))?,
        purposes: serde_json::from_str(r.get::<&str, _>("purposes")).map_err(json_err)?,
        changes: r.get("changes"),
        via: r.get("via"),
        received_at: r.get("received_at"),
        due_at: r.get("due_at"),
        extended: r.get::<i64, _>("extended") != 0,
        closed_at: r.get("closed_at"),
        steps: serde_json::from_str(r.get::<&str, _>("steps")).map_err(json_err)?,
        verification: r
            .get::<Option<String>, _>("verification")
            .map(|v| serde_json::from_str(&v))
            .transpose()
            .map_err(json_err)?,
        updated_at: r.get("updated_at"),
    })
}

macro_rules! with_subject {
    ($($rest:tt)*) => {
        concat!(
            "SELECT r.*, (SELECT s.id FROM subjects s WHERE s.uid = r.subject_uid
         AND s.tenant = r.tenant) AS subject_id
     FROM rights_requests r ",
            $($rest)*
        )
    };
}

/// One request.
pub const REQUEST: &str = with_subject!("WHERE r.tenant = $1 AND r.id = $2");

/// A subject's requests (`rights_requests_by_subject`): the duplicate check
/// of `POST /v1/requests`, the access bundle, retention.
pub const SUBJECT_REQUESTS: &str =
    with_subject!("WHERE r.tenant = $1 AND r.subject_uid = $2 ORDER BY r.due_at, r.id LIMIT 1000");

// The pages of `GET /v1/requests`: $1 tenant, ($2, $3) the last (due_at, id)
// of the previous page, $4 the page size, $5 the subject's uid or the status,
// $6 the status filter ('' = any), $7 overdue before ($7 < 0 = any).
macro_rules! requests_page {
    ($where:literal) => {
        with_subject!(concat!(
            "WHERE r.tenant = $1 AND ",
            $where,
            " AND (r.due_at, r.id) > ($2, $3)
               AND ($6 = '' OR r.status = $6)
               AND ($7 < 0 OR (r.due_at < $7 AND r.status NOT IN ('completed', 'rejected')))
             ORDER BY r.due_at, r.id LIMIT $4"
        ))
    };
}

/// Every request (`rights_requests_by_due`).
pub const REQUESTS: &str = requests_page!("$5 = ''");
/// Requests in one status (`rights_requests_by_status`).
pub const REQUESTS_IN_STATUS: &str = requests_page!("r.status = $5");
/// Open requests, for the overdue list (`rights_requests_open`, partial).
pub const REQUESTS_OPEN: &str =
    requests_page!("$5 = '' AND r.status NOT IN ('completed', 'rejected')");
/// One subject's requests (`rights_requests_by_subject`).
pub const REQUESTS_OF_SUBJECT: &str = requests_page!("r.subject_uid = $5");

fn breach_from_row(r: &AnyRow) -> Result<Breach> {
    let mut b: Breach = serde_json::from_str(r.get::<&str, _>("body")).map_err(json_err)?;
    b.tenant = r.get("tenant");
    b.id = r.get("id");
    b.discovered_at = r.get("discovered_at");
    b.created_at = r.get("created_at");
    b.updated_at = r.get("updated_at");
    Ok(b)
}

fn acquisition_from_row(r: &AnyRow) -> Acquisition {
    Acquisition {
        tenant: r.get("tenant"),
        subject_uid: r.get("subject_uid"),
        subject_id: r.try_get("subject_id").ok().flatten(),
        source: r.get("source"),
        acquired_at: r.get("acquired_at"),
        due_at: r.get("due_at"),
        notified_at: r.get("notified_at"),
        method: r.get("method"),
        notice: r.get("notice"),
        recorded_by: r.get("recorded_by"),
        updated_at: r.get("updated_at"),
        message_id: r.try_get("message_id").ok().flatten(),
    }
}

macro_rules! acquisitions {
    ($($rest:tt)*) => {
        concat!(
            "SELECT a.*, (SELECT s.id FROM subjects s WHERE s.uid = a.subject_uid
         AND s.tenant = a.tenant) AS subject_id
     FROM acquisitions a ",
            $($rest)*
        )
    };
}

const ACQUISITIONS: &str = acquisitions!("");

// Pages by (due_at, subject_uid): $1 tenant, ($2, $3) the previous page's
// last, $4 the page size, $5 due before ($5 < 0 = any).
macro_rules! acquisitions_page {
    ($where:literal) => {
        acquisitions!(concat!(
            "WHERE a.tenant = $1 AND ",
            $where,
            " AND (a.due_at, a.subject_uid) > ($2, $3) AND ($5 < 0 OR a.due_at < $5)
             ORDER BY a.due_at, a.subject_uid LIMIT $4"
        ))
    };
}

/// Every acquisition (`acquisitions_by_due`).
pub const ACQUISITIONS_ALL: &str = acquisitions_page!("1 = 1");
/// Subjects not yet told (`acquisitions_pending`, partial).
pub const ACQUISITIONS_PENDING: &str = acquisitions_page!("a.notified_at IS NULL");

#[async_trait]
impl Requests for SqlStore {
    async fn insert_opt_in(&self, o: &OptIn) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO opt_ins (tenant, id, subject_id, request, actor, channel, message,
                 created_at, expires_at, confirmed_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&o.tenant)
        .bind(&o.id)
        .bind(&o.subject_id)
        .bind(o.request.clone())
        .bind(&o.actor)
        .bind(&o.channel)
        .bind(&o.message)
        .bind(o.created_at)
        .bind(o.expires_at)
        .bind(o.confirmed_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn opt_in(&self, tenant: &str, id: &str) -> Result<Option<OptIn>> {
        let row = sqlx::query("SELECT * FROM opt_ins WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| OptIn {
            tenant: r.get("tenant"),
            id: r.get("id"),
            subject_id: r.get("subject_id"),
            request: r.get("request"),
            actor: r.get("actor"),
            channel: r.get("channel"),
            message: r.get("message"),
            created_at: r.get("created_at"),
            expires_at: r.get("expires_at"),
            confirmed_at: r.get("confirmed_at"),
        }))
    }

    async fn confirm_opt_in(&self, tenant: &str, id: &str, at: Micros) -> Result<bool> {
        let _writing = self.exclusive().await;
        let done = sqlx::query(
            "UPDATE opt_ins SET confirmed_at = $1
             WHERE tenant = $2 AND id = $3 AND confirmed_at IS NULL",
        )
        .bind(at)
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(done == 1)
    }

    async fn put_acquisition(&self, a: &Acquisition) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO acquisitions (tenant, subject_uid, source, acquired_at, due_at, notified_at,
                 method, notice, recorded_by, updated_at, message_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (tenant, subject_uid) DO UPDATE SET source = excluded.source,
                 acquired_at = excluded.acquired_at, due_at = excluded.due_at,
                 notified_at = excluded.notified_at, method = excluded.method,
                 notice = excluded.notice, recorded_by = excluded.recorded_by,
                 updated_at = excluded.updated_at, message_id = excluded.message_id",
        )
        .bind(&a.tenant)
        .bind(&a.subject_uid)
        .bind(&a.source)
        .bind(a.acquired_at)
        .bind(a.due_at)
        .bind(a.notified_at)
        .bind(a.method.clone())
        .bind(a.notice.clone())
        .bind(&a.recorded_by)
        .bind(a.updated_at)
        .bind(a.message_id.clone())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn acquisition(&self, tenant: &str, uid: &str) -> Result<Option<Acquisition>> {
        let row = sqlx::query(&format!(
            "{ACQUISITIONS}WHERE a.tenant = $1 AND a.subject_uid = $2"
        ))
        .bind(tenant)
        .bind(uid)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.as_ref().map(acquisition_from_row))
    }

    async fn acquisitions(
        &self,
        tenant: &str,
        pending: bool,
        due_before: Option<Micros>,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> Result<Vec<Acquisition>> {
        let sql = if pending || due_before.is_some() {
            ACQUISITIONS_PENDING
        } else {
            ACQUISITIONS_ALL
        };
        let (after_due, after_uid) = after.unwrap_or((Micros::MIN, ""));
        let rows = sqlx::query(sql)
            .bind(tenant)
            .bind(after_due)
            .bind(after_uid)
            .bind(i64::from(limit))
            .bind(due_before.unwrap_or(-1))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(acquisition_from_row).collect())
    }

    async fn claim_reminder(&self, r: &Reminder) -> Result<bool> {
        let _writing = self.exclusive().await;
        let done = sqlx::query(
            "INSERT INTO deadline_reminders (tenant, kind, ref_id, reminder, due_at, created_at,
                 email_status, email_attempts, email_error)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
             ON CONFLICT (tenant, kind, ref_id, reminder) DO NOTHING",
        )
        .bind(&r.tenant)
        .bind(&r.kind)
        .bind(&r.ref_id)
        .bind(&r.reminder)
        .bind(r.due_at)
        .bind(r.created_at)
        .bind(&r.email_status)
        .bind(r.email_attempts)
        .bind(r.email_error.clone())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(done == 1)
    }

    async fn reminders_to_email(&self, limit: u32) -> Result<Vec<Reminder>> {
        let rows = sqlx::query(
            "SELECT * FROM deadline_reminders WHERE email_status = 'pending'
             ORDER BY created_at LIMIT $1",
        )
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().map(reminder_from_row).collect())
    }

    async fn settle_reminder(&self, r: &Reminder) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "UPDATE deadline_reminders SET email_status = $1, email_attempts = $2, email_error = $3
             WHERE tenant = $4 AND kind = $5 AND ref_id = $6 AND reminder = $7",
        )
        .bind(&r.email_status)
        .bind(r.email_attempts)
        .bind(r.email_error.clone())
        .bind(&r.tenant)
        .bind(&r.kind)
        .bind(&r.ref_id)
        .bind(&r.reminder)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn reminders(&self, tenant: &str, kind: &str, ref_id: &str) -> Result<Vec<Reminder>> {
        let rows = sqlx::query(
            "SELECT * FROM deadline_reminders WHERE tenant = $1 AND kind = $2 AND ref_id = $3
             ORDER BY created_at, reminder",
        )
        .bind(tenant)
        .bind(kind)
        .bind(ref_id)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows.iter().map(reminder_from_row).collect())
    }

    async fn pending_notices_by_day(
        &self,
        tenant: &str,
        from: Micros,
        to: Micros,
    ) -> Result<Vec<(Micros, u64, Micros)>> {
        let rows = sqlx::query(
            "SELECT due_at / 86400000000 AS day, COUNT(*) AS n, MIN(due_at) AS first_due
             FROM acquisitions
             WHERE tenant = $1 AND notified_at IS NULL AND due_at >= $2 AND due_at < $3
             GROUP BY due_at / 86400000000 ORDER BY day",
        )
        .bind(tenant)
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<i64, _>("day") * 86_400_000_000,
                    r.get::<i64, _>("n").max(0) as u64,
                    r.get::<i64, _>("first_due"),
                )
            })
            .collect())
    }

    async fn add_breach_recipients(
        &self,
        tenant: &str,
        breach: &str,
        uids: &[String],
        at: Micros,
    ) -> Result<u64> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        let mut added = 0;
        for uid in uids {
            added += sqlx::query(
                "INSERT INTO breach_recipients (tenant, breach, subject_uid, status, created_at)
                 VALUES ($1, $2, $3, 'pending', $4)
                 ON CONFLICT (tenant, breach, subject_uid) DO NOTHING",
            )
            .bind(tenant)
            .bind(breach)
            .bind(uid)
            .bind(at)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(added)
    }

    async fn pending_breach_recipients(
        &self,
        tenant: &str,
        breach: &str,
        limit: u32,
    ) -> Result<Vec<String>> {
        sqlx::query_scalar(
            "SELECT subject_uid FROM breach_recipients
             WHERE tenant = $1 AND breach = $2 AND status = 'pending'
             ORDER BY subject_uid LIMIT $3",
        )
        .bind(tenant)
        .bind(breach)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)
    }

    async fn queue_breach_messages(
        &self,
        tenant: &str,
        breach: &str,
        queued: &[MessageRow],
        failed: &[(String, String)],
    ) -> Result<()> {
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        super::messages::insert_message_rows(&mut tx, self.dialect, queued).await?;
        for m in queued {
            sqlx::query(
                "UPDATE breach_recipients SET status = 'queued', message_id = $1
                 WHERE tenant = $2 AND breach = $3 AND subject_uid = $4",
            )
            .bind(m.id.as_str())
            .bind(tenant)
            .bind(breach)
            .bind(m.subject_uid.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        for (uid, error) in failed {
            sqlx::query(
                "UPDATE breach_recipients SET status = 'failed', error = $1
                 WHERE tenant = $2 AND breach = $3 AND subject_uid = $4",
            )
            .bind(error.as_str())
            .bind(tenant)
            .bind(breach)
            .bind(uid.as_str())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn breach_recipient_counts(
        &self,
        tenant: &str,
        breach: &str,
    ) -> Result<BTreeMap<String, u64>> {
        let rows = sqlx::query(
            "SELECT COALESCE(m.status, r.status) AS status, COUNT(*) AS n
             FROM breach_recipients r
             LEFT JOIN messages m ON m.tenant = r.tenant AND m.id = r.message_id
             WHERE r.tenant = $1 AND r.breach = $2
             GROUP BY COALESCE(m.status, r.status)",
        )
        .bind(tenant)
        .bind(breach)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| {
                (
                    r.get::<String, _>("status"),
                    r.get::<i64, _>("n").max(0) as u64,
                )
            })
            .collect())
    }

    async fn breach_recipients(
        &self,
        tenant: &str,
        breach: &str,
        after: &str,
        limit: u32,
    ) -> Result<Vec<BreachRecipient>> {
        let rows = sqlx::query(
            "SELECT r.subject_uid, COALESCE(m.status, r.status) AS status, r.message_id, r.error,
                    (SELECT s.id FROM subjects s WHERE s.uid = r.subject_uid) AS subject_id
             FROM breach_recipients r
             LEFT JOIN messages m ON m.tenant = r.tenant AND m.id = r.message_id
             WHERE r.tenant = $1 AND r.breach = $2 AND r.subject_uid > $3
             ORDER BY r.subject_uid LIMIT $4",
        )
        .bind(tenant)
        .bind(breach)
        .bind(after)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| BreachRecipient {
                subject_uid: r.get("subject_uid"),
                subject: r
                    .try_get::<Option<String>, _>("subject_id")
                    .ok()
                    .flatten()
                    .filter(|id| !id.starts_with("erased:")),
                status: r.get("status"),
                message_id: r.try_get("message_id").ok().flatten(),
                error: r.try_get("error").ok().flatten(),
            })
            .collect())
    }

    async fn insert_breach(&self, b: &Breach) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO breaches (tenant, id, discovered_at, body, created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&b.tenant)
        .bind(&b.id)
        .bind(b.discovered_at)
        .bind(serde_json::to_string(b).map_err(json_err)?)
        .bind(b.created_at)
        .bind(b.updated_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn breaches(&self, tenant: Option<&str>) -> Result<Vec<Breach>> {
        let rows = sqlx::query(
            "SELECT * FROM breaches WHERE ($1 = '' OR tenant = $1)
             ORDER BY discovered_at DESC, id LIMIT 10000",
        )
        .bind(tenant.unwrap_or(""))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(breach_from_row).collect()
    }

    async fn breach(&self, tenant: &str, id: &str) -> Result<Option<Breach>> {
        let row = sqlx::query("SELECT * FROM breaches WHERE tenant = $1 AND id = $2")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(breach_from_row).transpose()
    }

    async fn update_breach(&self, b: &Breach, expected_updated_at: Micros) -> Result<bool> {
        let _writing = self.exclusive().await;
        let done = sqlx::query(
            "UPDATE breaches SET body = $1, updated_at = $2
             WHERE tenant = $3 AND id = $4 AND updated_at = $5",
        )
        .bind(serde_json::to_string(b).map_err(json_err)?)
        .bind(b.updated_at)
        .bind(&b.tenant)
        .bind(&b.id)
        .bind(expected_updated_at)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(done == 1)
    }

    async fn insert_request(&self, r: &RequestRow) -> Result<()> {
        let _writing = self.exclusive().await;
        sqlx::query(
            "INSERT INTO rights_requests (tenant, id, subject_uid, kind, status, purposes, changes,
                 via, received_at, due_at, extended, closed_at, steps, updated_at, verification)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(&r.tenant)
        .bind(&r.id)
        .bind(&r.subject_uid)
        .bind(r.kind.as_str())
        .bind(r.status.as_str())
        .bind(serde_json::to_string(&r.purposes).map_err(json_err)?)
        .bind(r.changes.clone())
        .bind(&r.via)
        .bind(r.received_at)
        .bind(r.due_at)
        .bind(i64::from(r.extended))
        .bind(r.closed_at)
        .bind(serde_json::to_string(&r.steps).map_err(json_err)?)
        .bind(r.updated_at)
        .bind(
            r.verification
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(json_err)?,
        )
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn request(&self, tenant: &str, id: &str) -> Result<Option<RequestRow>> {
        let row = sqlx::query(REQUEST)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(request_from_row).transpose()
    }

    async fn subject_requests(&self, tenant: &str, uid: &str) -> Result<Vec<RequestRow>> {
        let rows = sqlx::query(SUBJECT_REQUESTS)
            .bind(tenant)
            .bind(uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(request_from_row).collect()
    }

    async fn requests(
        &self,
        tenant: &str,
        filter: &RequestFilter<'_>,
        after: Option<(Micros, &str)>,
        limit: u32,
    ) -> Result<Vec<RequestRow>> {
        // One statement per filter, each with an index that serves both its
        // filter and its order, so a page reads `limit` rows, not the tenant.
        let (sql, key) = match (filter.subject_uid, filter.due_before, filter.status) {
            (Some(uid), _, _) => (REQUESTS_OF_SUBJECT, uid.to_string()),
            (None, Some(_), _) => (REQUESTS_OPEN, String::new()),
            (None, None, Some(status)) => (REQUESTS_IN_STATUS, status.as_str().to_string()),
            (None, None, None) => (REQUESTS, String::new()),
        };
        let (after_due, after_id) = after.unwrap_or((Micros::MIN, ""));
        let rows = sqlx::query(sql)
            .bind(tenant)
            .bind(after_due)
            .bind(after_id)
            .bind(i64::from(limit))
            .bind(key)
            .bind(filter.status.map_or("", Status::as_str))
            .bind(filter.due_before.unwrap_or(-1))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(request_from_row).collect()
    }

    async fn update_request(&self, r: &RequestRow, expected_updated_at: Micros) -> Result<bool> {
        let _writing = self.exclusive().await;
        let done = sqlx::query(
            "UPDATE rights_requests SET status = $1, due_at = $2, extended = $3, closed_at = $4,
                    steps = $5, changes = $6, updated_at = $7, verification = $11
             WHERE tenant = $8 AND id = $9 AND updated_at = $10",
        )
        .bind(r.status.as_str())
        .bind(r.due_at)
        .bind(i64::from(r.extended))
        .bind(r.closed_at)
        .bind(serde_json::to_string(&r.steps).map_err(json_err)?)
        .bind(r.changes.clone())
        .bind(r.updated_at)
        .bind(&r.tenant)
        .bind(&r.id)
        .bind(expected_updated_at)
        .bind(
            r.verification
                .as_ref()
                .map(serde_json::to_string)
                .transpose()
                .map_err(json_err)?,
        )
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected();
        Ok(done == 1)
    }

    async fn erase_subject(&self, e: &Erasure<'_>) -> Result<Erased> {
        let (tenant, uid) = (e.tenant, e.uid);
        let _writing = self.exclusive().await;
        let mut tx = self.begin().await?;
        let mut run = async |sql: &str| -> Result<u64> {
            Ok(sqlx::query(sql)
                .bind(tenant)
                .bind(uid)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?
                .rows_affected())
        };
        run("DELETE FROM subject_lookups WHERE tenant = $1 AND uid = $2").await?;
        let events = run("DELETE FROM events WHERE tenant = $1 AND subject_uid = $2").await?;
        // Errors from a provider may quote the recipient.
        run(
            "UPDATE message_log SET detail = NULL WHERE tenant = $1 AND message IN
                 (SELECT id FROM messages WHERE tenant = $1 AND subject_uid = $2)",
        )
        .await?;
        let messages = run("UPDATE messages SET content = NULL,
                    reason = CASE WHEN status = 'suppressed' THEN reason ELSE NULL END,
                    status = CASE WHEN status IN ('queued', 'retrying') THEN 'suppressed'
                                  ELSE status END
             WHERE tenant = $1 AND subject_uid = $2")
        .await?;
        // Evidence is stored once per distinct value and partition,
        // counting the ledger rows that keep it: the subject's rows let go
        // of theirs, and a value no other entry keeps is deleted. (A value
        // other subjects' entries hold too, identical to the byte, stays
        // theirs.)
        run(
            "UPDATE evidence SET refs = refs - (SELECT COUNT(*) FROM ledger l
                 WHERE l.tenant = $1 AND l.subject_uid = $2 AND l.evidence_kept = 1
                   AND l.part = evidence.part AND l.evidence_hash = evidence.hash)
             WHERE tenant = $1 AND (part, hash) IN (SELECT part, evidence_hash FROM ledger
                 WHERE tenant = $1 AND subject_uid = $2 AND evidence_kept = 1)",
        )
        .await?;
        run(
            "DELETE FROM evidence WHERE tenant = $1 AND refs <= 0 AND (part, hash) IN
                 (SELECT part, evidence_hash FROM ledger
                  WHERE tenant = $1 AND subject_uid = $2 AND evidence_kept = 1)",
        )
        .await?;
        // (On SQLite `ledger` is a view: the rows are `ledger_rows`.)
        let evidence = run(match self.dialect {
            Dialect::Sqlite => {
                "UPDATE ledger_rows SET evidence_kept = 0
                 WHERE tenant_no = (SELECT no FROM tenant_numbers WHERE id = $1)
                   AND subject_no = (SELECT no FROM subjects WHERE uid = $2)
                   AND evidence_kept = 1"
            }
            Dialect::Postgres => {
                "UPDATE ledger SET evidence_kept = 0
                 WHERE tenant = $1 AND subject_uid = $2 AND evidence_kept = 1"
            }
        })
        .await?;
        run("UPDATE rights_requests SET changes = NULL WHERE tenant = $1 AND subject_uid = $2")
            .await?;
        // Connected systems: the rows an access request collected are
        // sealed with the tenant key, not the subject's, so they go here;
        // so do the identifiers of another request's unfinished jobs (it
        // has nothing left to act on). An erasure's own jobs keep theirs
        // until each is done: they carry the erasure to the systems.
        run(
            "UPDATE request_systems SET result = NULL, updated_at = updated_at + 1
             WHERE tenant = $1 AND result IS NOT NULL AND request_id IN
                 (SELECT id FROM rights_requests WHERE tenant = $1 AND subject_uid = $2)",
        )
        .await?;
        run(
            "UPDATE request_systems SET payload = NULL, next_at = NULL, status = 'failed',
                    error = 'the subject was erased; nothing is left to do here',
                    updated_at = updated_at + 1
             WHERE tenant = $1 AND payload IS NOT NULL AND request_id IN
                 (SELECT id FROM rights_requests WHERE tenant = $1 AND subject_uid = $2
                      AND kind <> 'erasure')",
        )
        .await?;
        // Held double opt-ins carry the subject's request and evidence.
        run("DELETE FROM opt_ins WHERE tenant = $1 AND subject_id IN
                 (SELECT id FROM subjects WHERE tenant = $1 AND uid = $2)")
        .await?;
        // Stored responses (replayed to a retry) quote the id, and a
        // client's key may too. Rows written before they were tagged with
        // their subject are found by the id in the key or the response.
        let pattern = format!(
            "%{}%",
            e.id.replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_")
        );
        let responses = sqlx::query(
            "DELETE FROM idempotency_keys WHERE tenant = $1 AND (subject_uid = $2
                 OR (subject_uid IS NULL
                     AND (key LIKE $3 ESCAPE '\\' OR response LIKE $3 ESCAPE '\\')))",
        )
        .bind(tenant)
        .bind(uid)
        .bind(&pattern)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        for (id, jws) in &e.receipts {
            sqlx::query("UPDATE receipts SET jws = $1 WHERE tenant = $2 AND id = $3")
                .bind(jws.as_str())
                .bind(tenant)
                .bind(id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
        }
        sqlx::query(
            "UPDATE subjects SET id = $1, data_key = NULL, profile = NULL, identifiers = '{}',
                    attributes = '{}', flags = $2, profile_rev = profile_rev + 1, updated_at = $3
             WHERE tenant = $4 AND uid = $5",
        )
        .bind(e.pseudonym)
        .bind(super::flags_json(e.flags)?)
        .bind(e.at)
        .bind(tenant)
        .bind(uid)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        if self.dialect == Dialect::Sqlite {
            // ANALYZE keeps sample keys of indexes (sqlite_stat4, when
            // SQLite is built with it): the subject's id among them.
            let stat4: Option<i64> = sqlx::query_scalar(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_stat4'",
            )
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            if stat4.is_some() {
                sqlx::query(
                    "DELETE FROM sqlite_stat4
                     WHERE tbl IN ('subjects', 'idempotency_keys', 'opt_ins', 'receipts')",
                )
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            }
        }
        // Other nodes drop what they held under the id and take the
        // pseudonym's flags.
        for id in [e.id, e.pseudonym] {
            self.announce(
                &mut *tx,
                &Change::Subject {
                    tenant: tenant.into(),
                    id: id.into(),
                },
            )
            .await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(Erased {
            events,
            messages,
            evidence,
            responses,
        })
    }

    async fn expire_idempotency_keys(&self, before: Micros, limit: u32) -> Result<u64> {
        let _writing = self.exclusive().await;
        Ok(sqlx::query(
            "DELETE FROM idempotency_keys WHERE (tenant, key) IN
                 (SELECT tenant, key FROM idempotency_keys WHERE created_at < $1
                  ORDER BY created_at LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(limit))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected())
    }

    async fn due_expiries(
        &self,
        now: Micros,
        limit: u32,
    ) -> Result<Vec<(String, String, String, String, Micros)>> {
        let sql = match self.dialect {
            Dialect::Sqlite => hot::DUE_EXPIRIES_SQLITE,
            Dialect::Postgres => hot::DUE_EXPIRIES,
        };
        let rows = sqlx::query(sql)
            .bind(now)
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
                    r.get("purpose"),
                    r.get("channel"),
                    r.get("expires_at"),
                )
            })
            .collect())
    }

    async fn optimize(&self) -> Result<()> {
        if self.dialect == Dialect::Sqlite {
            let _writing = self.exclusive().await;
            // Analyzes only the tables whose statistics are missing or stale,
            // with a bounded number of rows per index (SQLite >= 3.46).
            sqlx::query("PRAGMA optimize")
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    async fn purge_deleted(&self) -> Result<()> {
        // secure_delete zeroed the freed content in the pages written to
        // the WAL; copying them into the database and truncating the WAL
        // leaves no older page image behind.
        self.truncate_wal().await
    }

    async fn truncate_wal(&self) -> Result<()> {
        if self.dialect == Dialect::Sqlite {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }
}
