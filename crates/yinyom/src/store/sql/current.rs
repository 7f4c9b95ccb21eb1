//! [`CurrentState`] for both databases: `consent_states` as the decision
//! view reads it (by subject id, page by page; one subject; the flagged).
//! The view's load reads the pages through the native drivers (on SQLite
//! through the connection's handle, [`raw`]) rather than `Any`: a cold
//! start without a snapshot reads every current state.

use super::hot::{STATES_AFTER, STATES_AFTER_SQLITE, STATES_OF, STATES_OF_SQLITE};
use super::raw::{self, Columns};
use super::verifications::Reader;
use super::*;

/// The statement of [`STATES_OF`] on `dialect`.
fn states_of(dialect: Dialect) -> &'static str {
    match dialect {
        Dialect::Sqlite => STATES_OF_SQLITE,
        Dialect::Postgres => STATES_OF,
    }
}

/// A page of `rows` rows (`limit` asked for), grouped in `page`, may end
/// inside its last subject when it is full: that subject is dropped, to
/// come whole with the next page. Its id, when it was all the page held:
/// then it is read whole on its own ([`STATES_OF`]).
fn cut_last_subject(page: &mut Vec<SubjectSnapshot>, rows: u64, limit: u32) -> Option<String> {
    if rows < u64::from(limit) {
        return None;
    }
    let last = page.pop()?;
    page.is_empty().then_some(last.id)
}

/// A row of [`STATES_AFTER`] added to `out`: to its subject when that is
/// the last one there (rows come grouped by subject), else to a new one.
/// A row of an unknown channel or state is left out.
fn push_state_row<C: Columns + ?Sized>(
    tenant: &str,
    r: &C,
    out: &mut Vec<SubjectSnapshot>,
) -> std::result::Result<(), String> {
    let text = |i: usize| -> std::result::Result<&str, String> {
        r.text(i)?.ok_or_else(|| format!("column {i} is null"))
    };
    let int = |i: usize| -> std::result::Result<i64, String> {
        r.int(i)?.ok_or_else(|| format!("column {i} is null"))
    };
    let uid = text(1)?;
    if out.last().is_none_or(|s| s.uid != uid) {
        out.push(SubjectSnapshot {
            tenant: tenant.to_string(),
            id: text(0)?.to_string(),
            uid: uid.to_string(),
            flags: SubjectFlags::default(),
            records: Vec::new(),
        });
    }
    let channel = match text(3)? {
        "" => None,
        c => match Channel::parse(c) {
            Some(c) => Some(c),
            None => return Ok(()),
        },
    };
    let Some(state) = ConsentState::parse(text(4)?) else {
        return Ok(());
    };
    let record = ConsentRecord {
        purpose: text(2)?.into(),
        channel,
        state,
        seq: int(5)? as u64,
        occurred_at: int(6)?,
        expires_at: r.int(7)?,
        notice: match r.text(8)? {
            None => None,
            Some(key) => Some(NoticeVersion {
                key: key.into(),
                version: r.int(9)?.unwrap_or(0) as u32,
            }),
        },
        source: text(10)?.into(),
        guardian: r.int(11)?.unwrap_or(0) != 0,
    };
    if let Some(s) = out.last_mut() {
        s.records.push(record);
    }
    Ok(())
}

#[async_trait]
impl CurrentState for SqlStore {
    async fn states_page(
        &self,
        tenant: &str,
        after_id: &str,
        limit: u32,
    ) -> Result<Vec<SubjectSnapshot>> {
        // Through the native drivers: on SQLite read and grouped on a
        // blocking thread through the connection's handle, on PostgreSQL
        // as the driver's own rows.
        let limit = limit.max(1);
        match self.reader().await? {
            Reader::Sqlite(pool) => {
                let mut conn = pool.acquire().await.map_err(unavailable)?;
                let (tenant, after_id) = (tenant.to_string(), after_id.to_string());
                let runtime = tokio::runtime::Handle::current();
                tokio::task::spawn_blocking(move || {
                    let mut handle = runtime.block_on(conn.lock_handle()).map_err(unavailable)?;
                    let db = handle.as_raw_handle().as_ptr();
                    let read = |sql: &str, id: &str, limit: Option<u32>, page: &mut Vec<_>| {
                        let mut stmt = raw::Stmt::prepare(db, sql)?;
                        stmt.bind_text(1, &tenant)?;
                        stmt.bind_text(2, id)?;
                        if let Some(limit) = limit {
                            stmt.bind_int(3, i64::from(limit))?;
                        }
                        let mut rows = 0;
                        while stmt.step()? {
                            rows += 1;
                            push_state_row(&tenant, &stmt, page)?;
                        }
                        Ok::<u64, String>(rows)
                    };
                    let mut page = Vec::new();
                    let rows = read(STATES_AFTER_SQLITE, &after_id, Some(limit), &mut page)
                        .map_err(StoreError::Unavailable)?;
                    if let Some(id) = cut_last_subject(&mut page, rows, limit) {
                        read(STATES_OF_SQLITE, &id, None, &mut page)
                            .map_err(StoreError::Unavailable)?;
                    }
                    Ok(page)
                })
                .await
                .map_err(|e| {
                    StoreError::Unavailable(format!("reading current state failed: {e}"))
                })?
            }
            Reader::Postgres(pool) => {
                let rows = sqlx::query(STATES_AFTER)
                    .bind(tenant)
                    .bind(after_id)
                    .bind(i64::from(limit))
                    .fetch_all(pool)
                    .await
                    .map_err(unavailable)?;
                let mut page = Vec::new();
                for r in &rows {
                    push_state_row(tenant, r, &mut page).map_err(StoreError::Unavailable)?;
                }
                if let Some(id) = cut_last_subject(&mut page, rows.len() as u64, limit) {
                    let rows = sqlx::query(STATES_OF)
                        .bind(tenant)
                        .bind(&id)
                        .fetch_all(pool)
                        .await
                        .map_err(unavailable)?;
                    for r in &rows {
                        push_state_row(tenant, r, &mut page).map_err(StoreError::Unavailable)?;
                    }
                }
                Ok(page)
            }
        }
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
        let rows = sqlx::query(states_of(self.dialect))
            .bind(tenant)
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut subject = Vec::new();
        for r in &rows {
            push_state_row(tenant, r, &mut subject).map_err(StoreError::Unavailable)?;
        }
        Ok(subject.pop().map(|s| s.records).unwrap_or_default())
    }
}
