//! SQLite implementation of [`Store`]: the embedded default.
//!
//! WAL journal with `synchronous = FULL`, so a committed transaction has
//! been fsync'd before `commit` returns. Write transactions start with
//! `BEGIN IMMEDIATE` to take the write lock up front (a deferred transaction
//! that upgrades can fail with SQLITE_BUSY instead of waiting).

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::TryStreamExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqlitePool};
use yinyom_core::consent::{Action, ConsentRecord, ConsentState, NoticeVersion};
use yinyom_core::ledger::{Broken, Chain, EntryBody, LedgerEntry, Verifier, evidence_hash};
use yinyom_core::notice::{Notice, NoticeDraft, NoticeRef};
use yinyom_core::purpose::{Channel, Purpose};
use yinyom_core::time::{self, Micros};

use super::*;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    pool: SqlitePool,
}

fn unavailable(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(d) if d.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Unavailable(e.to_string()),
    }
}

fn json_err(e: serde_json::Error) -> StoreError {
    StoreError::Unavailable(format!("stored JSON is unreadable: {e}"))
}

impl SqliteStore {
    /// Open (creating if needed) the database file at `path` and migrate it.
    pub async fn open(path: &Path) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        Self::connect(options).await
    }

    /// Open from a `sqlite://` URL.
    pub async fn open_url(url: &str) -> Result<Self> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(unavailable)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        Self::connect(options).await
    }

    async fn connect(options: SqliteConnectOptions) -> Result<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            .connect_with(options)
            .await
            .map_err(unavailable)?;
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        Ok(SqliteStore { pool })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }
}

fn tenant_from_row(row: &SqliteRow) -> Result<Tenant> {
    let mut v: serde_json::Value = serde_json::from_str(row.get("body")).map_err(json_err)?;
    v["id"] = row.get::<String, _>("id").into();
    v["name"] = row.get::<String, _>("name").into();
    v["created_at"] = row.get::<i64, _>("created_at").into();
    serde_json::from_value(v).map_err(json_err)
}

fn tenant_body(t: &Tenant) -> String {
    serde_json::json!({
        "dpo": t.dpo,
        "jurisdictions": t.jurisdictions,
        "default_lang": t.default_lang,
        "policy_url": t.policy_url,
    })
    .to_string()
}

fn key_from_row(row: &SqliteRow) -> ApiKey {
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

fn subject_from_row(row: &SqliteRow) -> Result<SubjectRow> {
    Ok(SubjectRow {
        id: row.get("id"),
        uid: row.get("uid"),
        identifiers: serde_json::from_str(row.get("identifiers")).map_err(json_err)?,
        attributes: serde_json::from_str(row.get("attributes")).map_err(json_err)?,
        flags: serde_json::from_str(row.get("flags")).map_err(json_err)?,
        created_at: row.get("created_at"),
        updated_at: row.get("updated_at"),
    })
}

/// Read a ledger row back into the exact entry that was hashed. Rows edited
/// into something unreadable are reported, not panicked on.
fn entry_from_row(row: &SqliteRow) -> std::result::Result<LedgerEntry, String> {
    let channel: Option<String> = row.try_get("channel").map_err(|e| e.to_string())?;
    let channel = match channel {
        None => None,
        Some(c) => Some(Channel::parse(&c).ok_or_else(|| format!("unknown channel {c:?}"))?),
    };
    let action: String = row.try_get("action").map_err(|e| e.to_string())?;
    let action = Action::parse(&action).ok_or_else(|| format!("unknown action {action:?}"))?;
    let notice_key: Option<String> = row.try_get("notice_key").map_err(|e| e.to_string())?;
    let notice = match notice_key {
        None => None,
        Some(key) => Some(NoticeRef {
            key,
            version: row
                .try_get::<i64, _>("notice_version")
                .map_err(|e| e.to_string())? as u32,
            hash: row.try_get("notice_hash").map_err(|e| e.to_string())?,
        }),
    };
    let get = |c: &str| row.try_get::<String, _>(c).map_err(|e| e.to_string());
    let get_i = |c: &str| row.try_get::<i64, _>(c).map_err(|e| e.to_string());
    Ok(LedgerEntry {
        seq: get_i("seq")? as u64,
        body: EntryBody {
            tenant: get("tenant")?,
            subject_uid: get("subject_uid")?,
            purpose: get("purpose")?,
            channel,
            action,
            notice,
            source: get("source")?,
            actor: get("actor")?,
            evidence_hash: row.try_get("evidence_hash").map_err(|e| e.to_string())?,
            occurred_at: get_i("occurred_at")?,
            recorded_at: get_i("recorded_at")?,
            expires_at: row.try_get("expires_at").map_err(|e| e.to_string())?,
            receipt: row.try_get("receipt_id").map_err(|e| e.to_string())?,
        },
        prev_hash: get("prev_hash")?,
        hash: get("hash")?,
    })
}

fn record_from_state_row(row: &SqliteRow) -> Option<ConsentRecord> {
    let channel: String = row.get("channel");
    let notice_key: Option<String> = row.get("notice_key");
    Some(ConsentRecord {
        purpose: row.get::<&str, _>("purpose").into(),
        channel: if channel.is_empty() {
            None
        } else {
            Some(Channel::parse(&channel)?)
        },
        state: ConsentState::parse(row.get("state"))?,
        seq: row.get::<i64, _>("seq") as u64,
        occurred_at: row.get("occurred_at"),
        expires_at: row.get("expires_at"),
        notice: notice_key.map(|key| NoticeVersion {
            key: key.into(),
            version: row.get::<Option<i64>, _>("notice_version").unwrap_or(0) as u32,
        }),
        source: row.get::<&str, _>("source").into(),
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        let rows = sqlx::query("SELECT * FROM tenants ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(tenant_from_row).collect()
    }

    async fn insert_tenant(&self, t: &Tenant) -> Result<()> {
        sqlx::query("INSERT INTO tenants (id, name, body, created_at) VALUES (?, ?, ?, ?)")
            .bind(&t.id)
            .bind(&t.name)
            .bind(tenant_body(t))
            .bind(t.created_at)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn update_tenant(&self, t: &Tenant) -> Result<()> {
        let done = sqlx::query("UPDATE tenants SET name = ?, body = ? WHERE id = ?")
            .bind(&t.name)
            .bind(tenant_body(t))
            .bind(&t.id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    async fn insert_api_key(&self, k: &ApiKey) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, role, label, hash, prefix, created_at, revoked_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
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
        Ok(())
    }

    async fn api_key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>> {
        let row = sqlx::query("SELECT * FROM api_keys WHERE hash = ?")
            .bind(hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(row.as_ref().map(key_from_row))
    }

    async fn api_keys(&self, tenant: &str) -> Result<Vec<ApiKey>> {
        let rows = sqlx::query("SELECT * FROM api_keys WHERE tenant = ? ORDER BY created_at, id")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows.iter().map(key_from_row).collect())
    }

    async fn revoke_api_key(&self, tenant: &str, id: &str, at: Micros) -> Result<Option<ApiKey>> {
        sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE tenant = ? AND id = ? AND revoked_at IS NULL",
        )
        .bind(at)
        .bind(tenant)
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        let row = sqlx::query("SELECT * FROM api_keys WHERE tenant = ? AND id = ?")
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
        sqlx::query("INSERT INTO signing_keys (kid, secret, created_at) VALUES (?, ?, ?)")
            .bind(&k.kid)
            .bind(&k.secret)
            .bind(k.created_at)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn insert_purpose(&self, tenant: &str, p: &Purpose, at: Micros) -> Result<()> {
        sqlx::query("INSERT INTO purposes (tenant, key, body, created_at, updated_at) VALUES (?, ?, ?, ?, ?)")
            .bind(tenant)
            .bind(&p.key)
            .bind(serde_json::to_string(p).map_err(json_err)?)
            .bind(at)
            .bind(at)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn update_purpose(&self, tenant: &str, p: &Purpose, at: Micros) -> Result<()> {
        let done = sqlx::query(
            "UPDATE purposes SET body = ?, updated_at = ? WHERE tenant = ? AND key = ?",
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
        Ok(())
    }

    async fn purposes(&self, tenant: &str) -> Result<Vec<Purpose>> {
        let rows = sqlx::query("SELECT body FROM purposes WHERE tenant = ? ORDER BY key")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| serde_json::from_str(r.get("body")).map_err(json_err))
            .collect()
    }

    async fn publish_notice(&self, tenant: &str, draft: NoticeDraft, at: Micros) -> Result<Notice> {
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let latest: Option<i64> =
            sqlx::query_scalar("SELECT MAX(version) FROM notices WHERE tenant = ? AND key = ?")
                .bind(tenant)
                .bind(&draft.key)
                .fetch_one(&mut *tx)
                .await
                .map_err(unavailable)?;
        let notice = draft.publish(latest.unwrap_or(0) as u32 + 1, at);
        sqlx::query(
            "INSERT INTO notices (tenant, key, version, body, content_hash, material, published_at)
             VALUES (?, ?, ?, ?, ?, ?, ?)",
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
        tx.commit().await.map_err(unavailable)?;
        Ok(notice)
    }

    async fn notices(&self, tenant: &str) -> Result<Vec<Notice>> {
        let rows = sqlx::query("SELECT body FROM notices WHERE tenant = ? ORDER BY key, version")
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| serde_json::from_str(r.get("body")).map_err(json_err))
            .collect()
    }

    async fn upsert_subject(
        &self,
        tenant: &str,
        s: &SubjectUpdate,
        at: Micros,
    ) -> Result<SubjectRow> {
        let flags = s.flags.clone().unwrap_or_default();
        sqlx::query(
            "INSERT INTO subjects (tenant, id, uid, identifiers, attributes, flags, created_at, updated_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (tenant, id) DO UPDATE SET
                identifiers = excluded.identifiers,
                attributes = excluded.attributes,
                flags = CASE WHEN ? THEN excluded.flags ELSE subjects.flags END,
                updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(&s.id)
        .bind(uuid::Uuid::now_v7().to_string())
        .bind(serde_json::to_string(&s.identifiers).map_err(json_err)?)
        .bind(serde_json::to_string(&s.attributes).map_err(json_err)?)
        .bind(serde_json::to_string(&flags).map_err(json_err)?)
        .bind(at)
        .bind(at)
        .bind(s.flags.is_some())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        self.subject(tenant, &s.id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    async fn subject(&self, tenant: &str, id: &str) -> Result<Option<SubjectRow>> {
        let row = sqlx::query("SELECT * FROM subjects WHERE tenant = ? AND id = ?")
            .bind(tenant)
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(subject_from_row).transpose()
    }

    async fn commit(&self, items: &[WriteItem], seal: Sealer<'_>) -> Result<Vec<ItemOutcome>> {
        // Set-based: a handful of statements per batch, not per item, so a
        // batch costs little more than its fsync.
        let mut tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(unavailable)?;
        let mut seen = prior_idempotency(&mut tx, items).await?;
        let mut uids = subject_uids(&mut tx, items).await?;
        let mut heads: HashMap<String, Chain> = HashMap::new();
        for tenant in items.iter().map(|i| &i.tenant) {
            if !heads.contains_key(tenant) {
                let head = sqlx::query("SELECT seq, hash FROM ledger_heads WHERE tenant = ?")
                    .bind(tenant)
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(unavailable)?
                    .map(|r| Chain {
                        seq: r.get::<i64, _>("seq") as u64,
                        hash: r.get("hash"),
                    })
                    .unwrap_or_else(Chain::genesis);
                heads.insert(tenant.clone(), head);
            }
        }

        let mut outcomes = Vec::with_capacity(items.len());
        let mut new_subjects: Vec<(&str, &str, String, Micros)> = Vec::new();
        let mut rows = Rows::default();
        for item in items {
            if let Some(idem) = &item.idempotency
                && let Some((hash, response)) = seen.get(&(item.tenant.clone(), idem.key.clone()))
            {
                outcomes.push(if *hash == idem.request_hash {
                    ItemOutcome::Replayed {
                        response: response.clone(),
                    }
                } else {
                    ItemOutcome::KeyReused
                });
                continue;
            }
            let recorded_at = time::now();
            let uid = uids
                .entry((item.tenant.clone(), item.subject_id.clone()))
                .or_insert_with(|| {
                    let uid = uuid::Uuid::now_v7().to_string();
                    new_subjects.push((&item.tenant, &item.subject_id, uid.clone(), recorded_at));
                    uid
                })
                .clone();
            let chain = heads
                .get_mut(&item.tenant)
                .expect("heads hold every tenant of the batch");
            let ev_hash = item.evidence.as_ref().map(evidence_hash);
            let entries: Vec<LedgerEntry> = item
                .actions
                .iter()
                .map(|a| {
                    chain.append(EntryBody {
                        tenant: item.tenant.clone(),
                        subject_uid: uid.clone(),
                        purpose: a.purpose.clone(),
                        channel: a.channel,
                        action: a.action,
                        notice: item.notice.clone(),
                        source: item.source.clone(),
                        actor: item.actor.clone(),
                        evidence_hash: ev_hash.clone(),
                        occurred_at: item.occurred_at,
                        recorded_at,
                        expires_at: a.expires_at,
                        receipt: item
                            .receipt
                            .as_ref()
                            .filter(|_| a.action == Action::Grant)
                            .map(|r| r.id.clone()),
                    })
                })
                .collect();
            let response = seal(item, &entries);
            // Replays and reused keys were skipped above: index evidence by
            // written item, not by position in the batch.
            let written = rows.evidence.len();
            rows.evidence
                .push(item.evidence.as_ref().map(|e| e.to_string()));
            for e in &entries {
                rows.entries.push((e.clone(), written));
            }
            if let Some(r) = &item.receipt {
                rows.receipts.push((&item.tenant, uid.clone(), r));
            }
            if let Some(idem) = &item.idempotency {
                seen.insert(
                    (item.tenant.clone(), idem.key.clone()),
                    (idem.request_hash.clone(), response.clone()),
                );
                rows.idempotency.push((
                    &item.tenant,
                    &idem.key,
                    &idem.request_hash,
                    response.to_string(),
                    recorded_at,
                ));
            }
            outcomes.push(ItemOutcome::Written {
                subject_uid: uid,
                entries,
                response,
            });
        }

        for chunk in new_subjects.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO subjects (tenant, id, uid, created_at, updated_at) ",
            );
            q.push_values(chunk, |mut b, (tenant, id, uid, at)| {
                b.push_bind(*tenant)
                    .push_bind(*id)
                    .push_bind(uid)
                    .push_bind(at)
                    .push_bind(at);
            });
            q.build().execute(&mut *tx).await.map_err(unavailable)?;
        }
        insert_entries(&mut tx, &rows).await?;
        for chunk in rows.receipts.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO receipts (tenant, id, subject_uid, jws, created_at) ",
            );
            q.push_values(chunk, |mut b, (tenant, uid, r)| {
                b.push_bind(*tenant)
                    .push_bind(&r.id)
                    .push_bind(uid)
                    .push_bind(&r.jws)
                    .push_bind(r.created_at);
            });
            q.build().execute(&mut *tx).await.map_err(unavailable)?;
        }
        for chunk in rows.idempotency.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO idempotency_keys (tenant, key, request_hash, response, created_at) ",
            );
            q.push_values(chunk, |mut b, (tenant, key, hash, response, at)| {
                b.push_bind(*tenant)
                    .push_bind(*key)
                    .push_bind(*hash)
                    .push_bind(response)
                    .push_bind(at);
            });
            q.build().execute(&mut *tx).await.map_err(unavailable)?;
        }
        for (tenant, head) in &heads {
            sqlx::query(
                "INSERT INTO ledger_heads (tenant, seq, hash) VALUES (?, ?, ?)
                 ON CONFLICT (tenant) DO UPDATE SET seq = excluded.seq, hash = excluded.hash",
            )
            .bind(tenant)
            .bind(head.seq as i64)
            .bind(&head.hash)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(outcomes)
    }

    async fn idempotent_response(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(String, serde_json::Value)>> {
        let row = sqlx::query(
            "SELECT request_hash, response FROM idempotency_keys WHERE tenant = ? AND key = ?",
        )
        .bind(tenant)
        .bind(key)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.map(|r| {
            Ok((
                r.get("request_hash"),
                serde_json::from_str(r.get("response")).map_err(json_err)?,
            ))
        })
        .transpose()
    }

    async fn history(&self, tenant: &str, subject_uid: &str) -> Result<Vec<LedgerEntry>> {
        let rows =
            sqlx::query("SELECT * FROM ledger WHERE tenant = ? AND subject_uid = ? ORDER BY seq")
                .bind(tenant)
                .bind(subject_uid)
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|r| entry_from_row(r).map_err(StoreError::Unavailable))
            .collect()
    }

    async fn receipts(&self, tenant: &str, subject_uid: &str) -> Result<Vec<StoredReceipt>> {
        let rows = sqlx::query("SELECT id, jws, created_at FROM receipts WHERE tenant = ? AND subject_uid = ? ORDER BY created_at, id")
            .bind(tenant)
            .bind(subject_uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(rows
            .iter()
            .map(|r| StoredReceipt {
                id: r.get("id"),
                jws: r.get("jws"),
                created_at: r.get("created_at"),
            })
            .collect())
    }

    async fn snapshot(&self) -> Result<Vec<SubjectSnapshot>> {
        let mut by_uid: HashMap<String, SubjectSnapshot> = HashMap::new();
        let mut rows = sqlx::query("SELECT tenant, id, uid, flags FROM subjects").fetch(&self.pool);
        while let Some(r) = rows.try_next().await.map_err(unavailable)? {
            let uid: String = r.get("uid");
            by_uid.insert(
                uid.clone(),
                SubjectSnapshot {
                    tenant: r.get("tenant"),
                    id: r.get("id"),
                    uid,
                    flags: serde_json::from_str(r.get("flags")).map_err(json_err)?,
                    records: Vec::new(),
                },
            );
        }
        drop(rows);
        let mut rows = sqlx::query("SELECT * FROM consent_states").fetch(&self.pool);
        while let Some(r) = rows.try_next().await.map_err(unavailable)? {
            let uid: String = r.get("subject_uid");
            if let (Some(s), Some(rec)) = (by_uid.get_mut(&uid), record_from_state_row(&r)) {
                s.records.push(rec);
            }
        }
        Ok(by_uid.into_values().collect())
    }

    async fn verify_ledger(&self, tenant: &str) -> Result<VerifyReport> {
        let mut verifier = Verifier::default();
        let mut rows = sqlx::query("SELECT * FROM ledger WHERE tenant = ? ORDER BY seq")
            .bind(tenant)
            .fetch(&self.pool);
        while let Some(r) = rows.try_next().await.map_err(unavailable)? {
            let seq = r.try_get::<i64, _>("seq").unwrap_or(-1) as u64;
            let checked = verifier.checked();
            let result = entry_from_row(&r)
                .map_err(|problem| Broken { seq, problem })
                .and_then(|entry| {
                    let evidence: Option<String> = r.try_get("evidence").ok().flatten();
                    let evidence = match evidence.map(|e| serde_json::from_str(&e)) {
                        Some(Ok(v)) => Some(v),
                        Some(Err(_)) => {
                            return Err(Broken {
                                seq,
                                problem: "evidence is not valid JSON".into(),
                            });
                        }
                        None => None,
                    };
                    verifier.push(&entry, evidence.as_ref())
                });
            if let Err(broken) = result {
                return Ok(VerifyReport {
                    ok: false,
                    checked,
                    broken: Some(broken),
                });
            }
        }
        drop(rows);
        let head = sqlx::query("SELECT seq, hash FROM ledger_heads WHERE tenant = ?")
            .bind(tenant)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
            .map(|r| Chain {
                seq: r.get::<i64, _>("seq") as u64,
                hash: r.get("hash"),
            })
            .unwrap_or_else(Chain::genesis);
        let checked = verifier.checked();
        Ok(match verifier.finish(&head) {
            Ok(checked) => VerifyReport {
                ok: true,
                checked,
                broken: None,
            },
            Err(broken) => VerifyReport {
                ok: false,
                checked,
                broken: Some(broken),
            },
        })
    }

    async fn ledger(&self, tenant: &str) -> Result<Vec<(Option<String>, LedgerEntry)>> {
        let rows = sqlx::query(
            "SELECT l.*, s.id AS subject_id FROM ledger l
             LEFT JOIN subjects s ON s.tenant = l.tenant AND s.uid = l.subject_uid
             WHERE l.tenant = ? ORDER BY l.seq",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.get("subject_id"),
                    entry_from_row(r).map_err(StoreError::Unavailable)?,
                ))
            })
            .collect()
    }
}

/// Rows per multi-row statement: well under SQLite's limit of 32,766
/// bound parameters for the widest table (18 columns).
const CHUNK: usize = 500;

/// The rows a batch adds, gathered before they are written set-wise.
#[derive(Default)]
struct Rows<'a> {
    /// Each entry with the index of its item's evidence in `evidence`.
    entries: Vec<(LedgerEntry, usize)>,
    /// Evidence JSON per written item.
    evidence: Vec<Option<String>>,
    receipts: Vec<(&'a String, String, &'a StoredReceipt)>,
    idempotency: Vec<(&'a String, &'a String, &'a String, String, Micros)>,
}

type Key = (String, String);

/// Finish `… WHERE (a, b) IN (VALUES ` with the pairs and the closing `)`.
fn push_pairs<'a>(q: &mut QueryBuilder<'a, Sqlite>, pairs: &[(&'a String, &'a String)]) {
    let mut sep = q.separated(", ");
    for (a, b) in pairs {
        sep.push("(")
            .push_bind_unseparated(*a)
            .push_unseparated(", ")
            .push_bind_unseparated(*b)
            .push_unseparated(")");
    }
    q.push(")");
}

/// Earlier uses of the batch's idempotency keys: (tenant, key) → (request hash, response).
async fn prior_idempotency(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    items: &[WriteItem],
) -> Result<HashMap<Key, (String, serde_json::Value)>> {
    let mut found = HashMap::new();
    let wanted: Vec<(&String, &String)> = items
        .iter()
        .filter_map(|i| i.idempotency.as_ref().map(|k| (&i.tenant, &k.key)))
        .collect();
    for chunk in wanted.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT tenant, key, request_hash, response FROM idempotency_keys WHERE (tenant, key) IN (VALUES ",
        );
        push_pairs(&mut q, chunk);
        for r in q.build().fetch_all(&mut **tx).await.map_err(unavailable)? {
            found.insert(
                (r.get("tenant"), r.get("key")),
                (
                    r.get("request_hash"),
                    serde_json::from_str(r.get("response")).map_err(json_err)?,
                ),
            );
        }
    }
    Ok(found)
}

/// The uids of the batch's subjects that exist already: (tenant, id) → uid.
async fn subject_uids(
    tx: &mut sqlx::Transaction<'_, Sqlite>,
    items: &[WriteItem],
) -> Result<HashMap<Key, String>> {
    let mut found = HashMap::new();
    let wanted: Vec<(&String, &String)> =
        items.iter().map(|i| (&i.tenant, &i.subject_id)).collect();
    for chunk in wanted.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT tenant, id, uid FROM subjects WHERE (tenant, id) IN (VALUES ",
        );
        push_pairs(&mut q, chunk);
        for r in q.build().fetch_all(&mut **tx).await.map_err(unavailable)? {
            found.insert((r.get("tenant"), r.get("id")), r.get("uid"));
        }
    }
    Ok(found)
}

/// Append the ledger rows and fold them into `consent_states`. Current
/// state follows the latest `(occurred_at, seq)`, like the domain fold; an
/// older event (an import of history) leaves it alone.
async fn insert_entries(tx: &mut sqlx::Transaction<'_, Sqlite>, rows: &Rows<'_>) -> Result<()> {
    for chunk in rows.entries.chunks(CHUNK) {
        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO ledger (tenant, seq, subject_uid, purpose, channel, action, notice_key, notice_version,
                notice_hash, source, actor, evidence_hash, evidence, occurred_at, recorded_at, expires_at, receipt_id,
                prev_hash, hash) ",
        );
        q.push_values(chunk, |mut r, (e, item)| {
            let b = &e.body;
            r.push_bind(&b.tenant)
                .push_bind(e.seq as i64)
                .push_bind(&b.subject_uid)
                .push_bind(&b.purpose)
                .push_bind(b.channel.map(Channel::as_str))
                .push_bind(b.action.as_str())
                .push_bind(b.notice.as_ref().map(|n| n.key.as_str()))
                .push_bind(b.notice.as_ref().map(|n| n.version as i64))
                .push_bind(b.notice.as_ref().map(|n| n.hash.as_str()))
                .push_bind(&b.source)
                .push_bind(&b.actor)
                .push_bind(b.evidence_hash.as_deref())
                .push_bind(rows.evidence[*item].as_deref())
                .push_bind(b.occurred_at)
                .push_bind(b.recorded_at)
                .push_bind(b.expires_at)
                .push_bind(b.receipt.as_deref())
                .push_bind(&e.prev_hash)
                .push_bind(&e.hash);
        });
        q.build().execute(&mut **tx).await.map_err(unavailable)?;

        let mut q = QueryBuilder::<Sqlite>::new(
            "INSERT INTO consent_states (tenant, subject_uid, purpose, channel, state, seq, occurred_at, expires_at,
                notice_key, notice_version, source) ",
        );
        q.push_values(chunk, |mut r, (e, _)| {
            let b = &e.body;
            r.push_bind(&b.tenant)
                .push_bind(&b.subject_uid)
                .push_bind(&b.purpose)
                .push_bind(b.channel.map(Channel::as_str).unwrap_or(""))
                .push_bind(b.action.state().as_str())
                .push_bind(e.seq as i64)
                .push_bind(b.occurred_at)
                .push_bind(b.expires_at)
                .push_bind(b.notice.as_ref().map(|n| n.key.as_str()))
                .push_bind(b.notice.as_ref().map(|n| n.version as i64))
                .push_bind(&b.source);
        });
        q.push(
            " ON CONFLICT (tenant, subject_uid, purpose, channel) DO UPDATE SET
                state = excluded.state, seq = excluded.seq, occurred_at = excluded.occurred_at,
                expires_at = excluded.expires_at, notice_key = excluded.notice_key,
                notice_version = excluded.notice_version, source = excluded.source
             WHERE (excluded.occurred_at, excluded.seq) > (consent_states.occurred_at, consent_states.seq)",
        );
        q.build().execute(&mut **tx).await.map_err(unavailable)?;
    }
    Ok(())
}
