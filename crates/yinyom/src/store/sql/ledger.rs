//! [`Ledger`] for both databases: the consent write path (one transaction
//! per batch: chain heads locked in a fixed order, subjects, entries,
//! current state, outbox, idempotency, receipts) and reading history.
//! PostgreSQL writes a batch with one statement (`write_batch_pg`);
//! SQLite runs the same steps with prepared statements on the connection's
//! own thread (`ledger/sqlite.rs`). The rows both write are gathered here
//! (`chain_items`, `ledger_rows`, `latest_states`, `outbox_rows`, …).

use super::*;
use yinyom_core::ledger::{GENESIS, PARTITIONS, partition_of};

mod sqlite;

#[async_trait]
impl Ledger for SqlStore {
    fn write_lanes(&self) -> usize {
        match self.dialect {
            Dialect::Sqlite => 1,
            Dialect::Postgres => self.write_lanes.load(std::sync::atomic::Ordering::Relaxed),
        }
    }

    fn lane_of(&self, item: &WriteItem, lanes: usize) -> usize {
        // A tenant whose partition count was not read yet (its first
        // write on this node) goes to lane 0: that is only slower.
        match (lanes, self.cached_partition_count(&item.tenant)) {
            (2.., Some(n)) => partition_of(&item.tenant, &item.subject_id, n) as usize % lanes,
            _ => 0,
        }
    }

    async fn commit(&self, items: &[WriteItem], seal: Sealer<'_>) -> Result<Vec<ItemOutcome>> {
        let _writing = self.exclusive().await;
        if self.dialect == Dialect::Sqlite {
            // The same steps as below, run in one call on the connection's
            // own thread with prepared statements (`ledger/sqlite.rs`).
            return sqlite::commit(self, items, seal).await;
        }
        // PostgreSQL: three round trips (`commit_pg`). A subject created
        // by another writer between the read and the write (`PUT
        // /v1/subjects`) makes the write give way; the batch then runs
        // again, and its read finds that subject.
        for _ in 0..3 {
            if let Some(outcomes) = self.commit_pg(items, seal).await? {
                return Ok(outcomes);
            }
        }
        Err(StoreError::Unavailable(
            "the batch's subjects kept being created by other writers".into(),
        ))
    }

    async fn idempotent_response(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(String, serde_json::Value)>> {
        let row = sqlx::query(
            "SELECT request_hash, response FROM idempotency_keys WHERE tenant = $1 AND key = $2",
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
        let rows = sqlx::query(hot::HISTORY)
            .bind(tenant)
            .bind(subject_uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter()
            .map(|r| entry_from_row(r).map_err(StoreError::Unavailable))
            .collect()
    }

    async fn evidence(
        &self,
        tenant: &str,
        subject_uid: &str,
    ) -> Result<std::collections::BTreeMap<u64, serde_json::Value>> {
        let rows = sqlx::query(hot::EVIDENCE)
            .bind(tenant)
            .bind(subject_uid)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        let mut out = std::collections::BTreeMap::new();
        for r in rows {
            let seq: i64 = r.try_get("seq").map_err(unavailable)?;
            let text: String = r.try_get("evidence").map_err(unavailable)?;
            let v = serde_json::from_str(&text).map_err(json_err)?;
            out.insert(seq as u64, v);
        }
        Ok(out)
    }

    async fn receipts(&self, tenant: &str, subject_uid: &str) -> Result<Vec<StoredReceipt>> {
        let rows = sqlx::query(hot::RECEIPTS)
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

    async fn ledger(&self, tenant: &str) -> Result<Vec<(Option<String>, LedgerEntry)>> {
        self.ledger_rows(tenant, 0, None).await
    }

    async fn ledger_after(
        &self,
        tenant: &str,
        seq: u64,
        limit: u32,
    ) -> Result<Vec<(Option<String>, LedgerEntry)>> {
        self.ledger_rows(tenant, seq, Some(limit)).await
    }

    async fn heads(&self) -> Result<HashMap<String, u64>> {
        let rows = match self.dialect {
            Dialect::Sqlite => sqlx::query("SELECT tenant, seq FROM ledger_heads")
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?,
            // The last entry below the horizon, per tenant (an index seek).
            Dialect::Postgres => sqlx::query(&format!(
                "SELECT t.id AS tenant, COALESCE((SELECT MAX(l.seq) FROM ledger l
                     WHERE l.tenant = t.id AND l.seq < h.horizon), 0) AS seq
                 FROM tenants t, (SELECT {PG_HORIZON} AS horizon) h"
            ))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?,
        };
        Ok(rows
            .iter()
            .map(|r| (r.get("tenant"), r.get::<i64, _>("seq") as u64))
            .collect())
    }
}

/// The items not answered by an earlier use of their idempotency key:
/// the ones whose subjects must exist.
fn fresh<'i>(
    items: &'i [WriteItem],
    seen: &HashMap<Key, (String, serde_json::Value)>,
) -> Vec<&'i WriteItem> {
    items
        .iter()
        .filter(|i| {
            i.idempotency
                .as_ref()
                .is_none_or(|k| !seen.contains_key(&(i.tenant.clone(), k.key.clone())))
        })
        .collect()
}

/// Chain the batch's items onto the locked heads, in order, each item's
/// entries onto its subject's partition: each item's entries, sealed
/// response and the rows to write; an item whose idempotency key was used
/// before is answered from `seen` instead. Both databases' write paths.
fn chain_items<'i>(
    items: &'i [WriteItem],
    seen: &mut HashMap<Key, (String, serde_json::Value)>,
    uids: &HashMap<Key, String>,
    heads: &mut Heads,
    seal: Sealer<'_>,
) -> Result<(Rows<'i>, Vec<ItemOutcome>)> {
    let mut outcomes = Vec::with_capacity(items.len());
    let mut rows = Rows::default();
    // Evidence repeats (an import's campaign forms, a banner's fields):
    // each distinct text is hashed once per batch.
    let mut evidence_hashes: HashMap<String, String> = HashMap::new();
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
            .get(&(item.tenant.clone(), item.subject_id.clone()))
            .cloned()
            .ok_or_else(|| StoreError::Unavailable("subject row missing".into()))?;
        let part = heads.partition_of(item);
        let evidence = item.evidence.as_ref().map(|e| (e, e.to_string()));
        let ev_hash = evidence.as_ref().map(|(e, text)| {
            if let Some(hash) = evidence_hashes.get(text) {
                return hash.clone();
            }
            let hash = evidence_hash(e);
            evidence_hashes.insert(text.clone(), hash.clone());
            hash
        });
        let entries: Vec<LedgerEntry> = item
            .actions
            .iter()
            .map(|a| {
                heads.append(
                    &item.tenant,
                    part,
                    EntryBody {
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
                            .filter(|_| matches!(a.action, Action::Grant | Action::Withdraw))
                            .map(|r| r.id.clone()),
                        guardian: item.guardian && a.action == Action::Grant,
                    },
                )
            })
            .collect::<Result<_>>()?;
        let response = seal(item, &entries);
        // Replays and reused keys were skipped above: index evidence by
        // written item, not by position in the batch.
        let written = rows.evidence.len();
        rows.evidence.push(evidence.map(|(_, text)| text));
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
                uid.clone(),
            ));
        }
        outcomes.push(ItemOutcome::Written {
            subject_uid: uid,
            entries,
            response,
        });
    }
    Ok((rows, outcomes))
}

/// The chain heads a batch writes to, locked: per tenant the `seq` its
/// next entry gets, and the head of each partition it appends to.
pub(super) struct Heads {
    /// tenant → the next entry's `seq`; `None` when it is the position in
    /// the tenant's only partition (PostgreSQL, a tenant of one partition:
    /// its lock orders everything, so `seq` stays dense as it always was).
    next_seq: HashMap<String, Option<u64>>,
    /// tenant → its number of partitions.
    counts: HashMap<String, u32>,
    parts: HashMap<(String, u32), Chain>,
    /// Partitions appended to, in order of first append.
    touched: Vec<(String, u32)>,
    /// The `seq` of the last entry appended to each partition.
    last: HashMap<(String, u32), u64>,
}

impl Heads {
    /// No heads yet, for tenants of `counts` partitions.
    fn new(counts: HashMap<String, u32>) -> Self {
        Heads {
            next_seq: HashMap::new(),
            counts,
            parts: HashMap::new(),
            touched: Vec::new(),
            last: HashMap::new(),
        }
    }

    /// The (tenant, partition) pairs the batch appends to, in lock order.
    fn wanted<'i>(&self, items: &'i [WriteItem]) -> BTreeSet<(&'i String, u32)> {
        items
            .iter()
            .map(|i| (&i.tenant, self.partition_of(i)))
            .collect()
    }

    /// The partitions of `wanted` with no recorded head start at genesis.
    fn start_at_genesis(&mut self, wanted: &BTreeSet<(&String, u32)>) {
        for (t, p) in wanted {
            self.parts
                .entry(((*t).clone(), *p))
                .or_insert_with(Chain::genesis);
        }
    }

    fn partition_of(&self, item: &WriteItem) -> u32 {
        let n = self.counts.get(&item.tenant).copied().unwrap_or(PARTITIONS);
        partition_of(&item.tenant, &item.subject_id, n)
    }

    /// Seal `body` as the next entry of `tenant`'s partition `part`.
    fn append(&mut self, tenant: &str, part: u32, body: EntryBody) -> Result<LedgerEntry> {
        let missing = || StoreError::Unavailable("chain head missing".into());
        let seq = self.next_seq.get_mut(tenant).ok_or_else(missing)?;
        let key = (tenant.to_string(), part);
        let chain = self.parts.get_mut(&key).ok_or_else(missing)?;
        let entry = match seq {
            Some(seq) => {
                let entry = chain.append_at(part, *seq, body);
                *seq += 1;
                entry
            }
            None => chain.append_at(part, chain.seq + 1, body),
        };
        // First append to the partition: remembered in order (a lookup,
        // not a scan of the partitions touched, for each of an import's
        // million entries).
        if let Some(last) = self.last.get_mut(&key) {
            *last = entry.seq;
        } else {
            self.last.insert(key.clone(), entry.seq);
            self.touched.push(key);
        }
        Ok(entry)
    }

    /// The new heads of the partitions appended to.
    fn touched(&self) -> Vec<(&String, u32, &Chain, u64)> {
        self.touched
            .iter()
            .filter_map(|k| {
                let last = self.last.get(k).copied().unwrap_or(0);
                self.parts.get(k).map(|c| (&k.0, k.1, c, last))
            })
            .collect()
    }
}

impl SqlStore {
    /// One PostgreSQL batch in three round trips:
    /// 1. `BEGIN`, the partitions' advisory locks and one read of
    ///    everything the batch must know (`read_batch_sql`), sent together
    ///    with the simple protocol;
    /// 2. the write, subjects new to the store included (`write_batch_pg`);
    /// 3. `COMMIT`, and then the change notification (its own tiny
    ///    transaction: a `NOTIFY` inside the write would serialise the
    ///    commits of every writer on the notification queue's lock).
    ///
    /// `None`: a new subject was created meanwhile by another writer;
    /// nothing was written.
    async fn commit_pg(
        &self,
        items: &[WriteItem],
        seal: Sealer<'_>,
    ) -> Result<Option<Vec<ItemOutcome>>> {
        let mut heads = self.heads_for(items).await?;
        let wanted = heads.wanted(items);
        let salt = self.channel.as_deref().unwrap_or("");
        let (mut batch, read) =
            PgBatch::begin(&self.pool, &read_batch_sql(salt, items, &wanted)?).await?;
        let written = self
            .chain_and_write(&mut batch, &read, items, &wanted, &mut heads, seal)
            .await;
        match written {
            Ok(Some((outcomes, notify))) => {
                batch.commit(&notify).await?;
                Ok(Some(outcomes))
            }
            Ok(None) => {
                batch.rollback().await;
                Ok(None)
            }
            Err(e) => {
                batch.rollback().await;
                Err(e)
            }
        }
    }

    /// Round trip 2 of [`Self::commit_pg`]: the batch chained onto what
    /// round trip 1 read (`read`), and written. Its outcomes and what to
    /// send after `COMMIT`; `None` when a new subject was created
    /// meanwhile.
    async fn chain_and_write(
        &self,
        batch: &mut PgBatch,
        read: &[AnyRow],
        items: &[WriteItem],
        wanted: &BTreeSet<(&String, u32)>,
        heads: &mut Heads,
        seal: Sealer<'_>,
    ) -> Result<Option<(Vec<ItemOutcome>, String)>> {
        let known = Known::from_rows(read)?;
        heads.start_pg(items, wanted, known.xid, known.heads)?;
        let mut seen = known.seen;
        let subjects = new_subjects(&fresh(items, &seen), known.uids);
        let (rows, outcomes) = chain_items(items, &mut seen, &subjects.uids, heads, seal)?;
        if !write_batch_pg(batch, &rows, heads, &subjects.created, &known.states).await? {
            return Ok(None);
        }
        Ok(Some((
            outcomes,
            notify_sql(self.channel.as_deref(), &rows)?,
        )))
    }

    /// The chain heads a PostgreSQL batch appends to, before anything is
    /// locked: each tenant's number of partitions (read once, cached).
    async fn heads_for(&self, items: &[WriteItem]) -> Result<Heads> {
        let tenants: BTreeSet<&String> = items.iter().map(|i| &i.tenant).collect();
        let mut counts = HashMap::new();
        for tenant in tenants {
            counts.insert(tenant.clone(), self.partition_count(tenant, None).await?);
        }
        Ok(Heads::new(counts))
    }
}

impl Heads {
    /// PostgreSQL: the heads as read after the locks, and the transaction
    /// id that numbers the batch's entries (`xid * 2^SEQ_SHIFT + i`).
    /// Nothing is written before the locks, so a transaction that waited
    /// for a partition has a greater id than the one it waited for: within
    /// a partition, `seq` follows the chain. A tenant of one partition
    /// keeps dense seqs (its lock orders everything).
    fn start_pg(
        &mut self,
        items: &[WriteItem],
        wanted: &BTreeSet<(&String, u32)>,
        xid: i64,
        heads: Vec<(String, u32, Chain)>,
    ) -> Result<()> {
        for (tenant, part, chain) in heads {
            self.parts.insert((tenant, part), chain);
        }
        let first = (xid as u64) << SEQ_SHIFT;
        for (tenant, n) in &self.counts {
            self.next_seq
                .insert(tenant.clone(), (*n != 1).then_some(first));
        }
        let entries: usize = items.iter().map(|i| i.actions.len()).sum();
        if entries >= 1 << SEQ_SHIFT {
            return Err(StoreError::Unavailable(format!(
                "a batch of {entries} entries is too large for one transaction"
            )));
        }
        self.start_at_genesis(wanted);
        Ok(())
    }
}

/// The statement that takes the transaction advisory locks of `wanted`'s
/// partitions, in key order, so that writers cannot deadlock (its one row
/// has `k = 'l'`).
fn lock_statement(salt: &str, wanted: &BTreeSet<(&String, u32)>) -> String {
    let keys: BTreeSet<i64> = wanted
        .iter()
        .map(|(t, p)| advisory_key(salt, t, *p))
        .collect();
    let list = keys
        .iter()
        .map(|k| format!("({k})"))
        .collect::<Vec<_>>()
        .join(",");
    format!(
        "SELECT 'l' AS k, count(*) AS n FROM (SELECT pg_advisory_xact_lock(k)
         FROM (SELECT k FROM (VALUES {list}) AS v(k) ORDER BY k) AS s) AS l"
    )
}

/// `s` as a PostgreSQL string constant, for statements sent with the
/// simple protocol (which has no parameters): an escape string, which
/// reads the same whatever `standard_conforming_strings` says. Text with
/// a NUL cannot be stored by PostgreSQL at all (nor sent in a query).
fn pg_text(s: &str) -> Result<String> {
    if s.contains('\0') {
        return Err(StoreError::Unavailable(
            "PostgreSQL cannot store text with a NUL character".into(),
        ));
    }
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
    Ok(out)
}

/// `(a, b), (c, d), …` of string constants.
fn pg_text_pairs<'a>(pairs: impl Iterator<Item = (&'a String, &'a String)>) -> Result<String> {
    let mut out = Vec::new();
    for (a, b) in pairs {
        out.push(format!("({}, {})", pg_text(a)?, pg_text(b)?));
    }
    Ok(out.join(", "))
}

/// What a PostgreSQL batch reads after its locks, in one statement.
struct Known {
    xid: i64,
    heads: Vec<(String, u32, Chain)>,
    /// Earlier uses of the batch's idempotency keys.
    seen: HashMap<Key, (String, serde_json::Value)>,
    /// The batch's subjects already stored: (tenant, id) → uid.
    uids: HashMap<Key, String>,
    /// Their current states (every purpose of each), for the outbox's
    /// "before".
    states: HashMap<StateKey, (ConsentState, Micros, u64)>,
}

/// The first round trip of a PostgreSQL batch, one simple-protocol query:
/// `BEGIN`, the partitions' locks, then one statement after them (so it
/// sees what earlier holders committed) reading the transaction id, the
/// partitions' heads, earlier uses of the idempotency keys, the subjects'
/// uids and their current states, as rows of one shape (`k` says which).
/// The values are written into the query as string constants
/// ([`pg_text`]): the simple protocol takes no parameters.
fn read_batch_sql(
    salt: &str,
    items: &[WriteItem],
    wanted: &BTreeSet<(&String, u32)>,
) -> Result<String> {
    let keys: BTreeSet<(&String, &String)> = items
        .iter()
        .filter_map(|i| i.idempotency.as_ref().map(|k| (&i.tenant, &k.key)))
        .collect();
    let subjects: BTreeSet<(&String, &String)> =
        items.iter().map(|i| (&i.tenant, &i.subject_id)).collect();
    let mut sql = format!(
        "BEGIN; {};
         SELECT 'x' AS k, pg_current_xact_id()::text AS a, NULL::text AS b, NULL::text AS c,
                NULL::text AS d, NULL::text AS e, NULL::text AS f, NULL::text AS g",
        lock_statement(salt, wanted)
    );
    if !wanted.is_empty() {
        let list = wanted
            .iter()
            .map(|(t, p)| Ok(format!("({}, {p})", pg_text(t)?)))
            .collect::<Result<Vec<_>>>()?
            .join(", ");
        sql.push_str(&format!(
            "\nUNION ALL SELECT 'h', tenant, part::text, size::text, hash, NULL, NULL, NULL
             FROM ledger_partitions WHERE (tenant, part) IN (VALUES {list})"
        ));
    }
    if !keys.is_empty() {
        let list = pg_text_pairs(keys.iter().copied())?;
        sql.push_str(&format!(
            "\nUNION ALL SELECT 'i', tenant, key, request_hash, response, NULL, NULL, NULL
             FROM idempotency_keys WHERE (tenant, key) IN (VALUES {list})"
        ));
    }
    if !subjects.is_empty() {
        let list = pg_text_pairs(subjects.iter().copied())?;
        sql.push_str(&format!(
            "\nUNION ALL SELECT 's', tenant, id, uid, NULL, NULL, NULL, NULL
             FROM subjects WHERE (tenant, id) IN (VALUES {list})
             UNION ALL SELECT 'c', c.tenant, c.subject_uid, c.purpose, c.channel, c.state,
                 c.occurred_at::text, c.seq::text
             FROM subjects s JOIN consent_states c
                 ON c.tenant = s.tenant AND c.subject_uid = s.uid
             WHERE (s.tenant, s.id) IN (VALUES {list})"
        ));
    }
    Ok(sql)
}

impl Known {
    /// The rows of [`read_batch_sql`].
    fn from_rows(rows: &[AnyRow]) -> Result<Known> {
        let mut known = Known {
            xid: 0,
            heads: Vec::new(),
            seen: HashMap::new(),
            uids: HashMap::new(),
            states: HashMap::new(),
        };
        let text = |r: &AnyRow, c: &str| -> Result<String> {
            r.try_get::<Option<String>, _>(c)
                .map_err(unavailable)?
                .ok_or_else(|| StoreError::Unavailable(format!("batch read: {c} missing")))
        };
        let number = |r: &AnyRow, c: &str| -> Result<i64> {
            text(r, c)?
                .parse::<i64>()
                .map_err(|e| StoreError::Unavailable(format!("batch read: {c}: {e}")))
        };
        for r in rows {
            match text(r, "k")?.as_str() {
                "l" => {}
                "x" => known.xid = number(r, "a")?,
                "h" => known.heads.push((
                    text(r, "a")?,
                    number(r, "b")? as u32,
                    Chain {
                        seq: number(r, "c")? as u64,
                        hash: text(r, "d")?,
                    },
                )),
                "i" => {
                    let response = serde_json::from_str(&text(r, "d")?).map_err(json_err)?;
                    known
                        .seen
                        .insert((text(r, "a")?, text(r, "b")?), (text(r, "c")?, response));
                }
                "s" => {
                    known
                        .uids
                        .insert((text(r, "a")?, text(r, "b")?), text(r, "c")?);
                }
                _ => {
                    let state =
                        ConsentState::parse(&text(r, "e")?).unwrap_or(ConsentState::Unspecified);
                    known.states.insert(
                        (text(r, "a")?, text(r, "b")?, text(r, "c")?, text(r, "d")?),
                        (state, number(r, "f")?, number(r, "g")? as u64),
                    );
                }
            }
        }
        if known.xid == 0 {
            return Err(StoreError::Unavailable("no transaction id".into()));
        }
        Ok(known)
    }
}

/// A PostgreSQL transaction begun and ended by hand, so that `BEGIN`
/// travels with the batch's first statements and `COMMIT` with what
/// follows it (sqlx's transactions send each alone: two more round
/// trips). One that was not ended closes its connection instead of
/// returning it to the pool inside a transaction.
struct PgBatch {
    conn: sqlx::pool::PoolConnection<Any>,
    open: bool,
}

impl PgBatch {
    /// Run `sql` (it starts with `BEGIN`) with the simple protocol: the
    /// open transaction and the rows its statements returned.
    async fn begin(pool: &AnyPool, sql: &str) -> Result<(PgBatch, Vec<AnyRow>)> {
        let conn = pool.acquire().await.map_err(unavailable)?;
        let mut batch = PgBatch { conn, open: true };
        match batch.conn.fetch_all(sqlx::raw_sql(sql)).await {
            Ok(rows) => Ok((batch, rows)),
            Err(e) => {
                batch.rollback().await;
                Err(unavailable(e))
            }
        }
    }

    /// End the transaction without writing anything.
    async fn rollback(mut self) {
        if self.conn.execute(sqlx::raw_sql("ROLLBACK")).await.is_ok() {
            self.open = false;
        }
    }

    /// `COMMIT`, then `then` (statements of their own transaction, in the
    /// same round trip). Once the commit is done the batch is written,
    /// whatever `then` does: its failure is only logged.
    async fn commit(mut self, then: &str) -> Result<()> {
        let sql = format!("COMMIT;{then}");
        let mut results = self.conn.fetch_many(sqlx::raw_sql(&sql));
        let mut committed = false;
        let mut failed = None;
        loop {
            match results.try_next().await {
                Ok(Some(_)) => committed = true,
                Ok(None) => break,
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        drop(results);
        match failed {
            None => {
                self.open = false;
                Ok(())
            }
            // A statement failed: the transaction is over either way (a
            // failed COMMIT rolls back); the connection is fine.
            Some(e @ sqlx::Error::Database(_)) => {
                self.open = false;
                if committed {
                    tracing::warn!(error = %e, "after the ledger commit");
                    Ok(())
                } else {
                    Err(unavailable(e))
                }
            }
            // The connection broke: whether it committed is unknown (the
            // writer answers 503; an idempotency key makes a retry safe).
            Some(e) if committed => {
                tracing::warn!(error = %e, "after the ledger commit");
                Ok(())
            }
            Some(e) => Err(unavailable(e)),
        }
    }
}

impl Drop for PgBatch {
    fn drop(&mut self) {
        if self.open {
            self.conn.close_on_drop();
        }
    }
}

/// The advisory lock of a tenant's partition, within this database schema
/// (`salt`, the notification channel) so deployments sharing a database do
/// not wait on each other.
fn advisory_key(salt: &str, tenant: &str, part: u32) -> i64 {
    let d = sha2::Sha256::new()
        .chain_update(b"yinyom-ledger-lock\0")
        .chain_update(salt.as_bytes())
        .chain_update(b"\0")
        .chain_update(tenant.as_bytes())
        .chain_update(part.to_be_bytes())
        .finalize();
    i64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// The subjects of a batch: (tenant, id) → uid, and the uids created by
/// this batch (they have no state yet, so nothing needs reading for them).
pub(super) struct Subjects {
    pub uids: HashMap<Key, String>,
    pub new: std::collections::HashSet<String>,
}

/// The uids of the subjects of (tenant, id) `pairs`, creating those that
/// do not exist yet: one read, then for the missing ones one insert that
/// returns what it created. A subject created meanwhile by another writer
/// (a `PUT /v1/subjects` on another node) is read back, not duplicated.
pub(super) async fn ensure_subject_ids<'a>(
    tx: &mut Tx<'_>,
    d: Dialect,
    pairs: impl Iterator<Item = (&'a String, &'a String)>,
) -> Result<Subjects> {
    let wanted: Vec<(&String, &String)> = pairs.collect::<BTreeSet<_>>().into_iter().collect();
    let mut found = HashMap::new();
    let select = "SELECT tenant, id, uid FROM subjects WHERE (tenant, id)";
    select_pairs(tx, d, select, &wanted, |r| {
        found.insert((r.get("tenant"), r.get("id")), r.get("uid"));
        Ok(())
    })
    .await?;
    add_subjects(tx, d, wanted, found).await
}

/// The subjects of a PostgreSQL batch: the uids of those stored
/// (`found`), and uids made now for the others (written with the batch).
struct NewSubjects<'i> {
    uids: HashMap<Key, String>,
    /// (tenant, id, uid) of the subjects to create.
    created: Vec<(&'i String, &'i String, String)>,
}

fn new_subjects<'i>(items: &[&'i WriteItem], mut found: HashMap<Key, String>) -> NewSubjects<'i> {
    let mut created = Vec::new();
    for (tenant, id) in items
        .iter()
        .map(|i| (&i.tenant, &i.subject_id))
        .collect::<BTreeSet<_>>()
    {
        let key = (tenant.clone(), id.clone());
        if let std::collections::hash_map::Entry::Vacant(e) = found.entry(key) {
            // Time-ordered uids: index inserts append instead of splitting pages.
            let uid = uuid::Uuid::now_v7().to_string();
            e.insert(uid.clone());
            created.push((tenant, id, uid));
        }
    }
    NewSubjects {
        uids: found,
        created,
    }
}

/// Create the subjects of `wanted` not in `found` (one insert that returns
/// what it created); one created meanwhile by another writer is read back.
async fn add_subjects(
    tx: &mut Tx<'_>,
    d: Dialect,
    wanted: Vec<(&String, &String)>,
    mut found: HashMap<Key, String>,
) -> Result<Subjects> {
    let select = "SELECT tenant, id, uid FROM subjects WHERE (tenant, id)";
    let mut new = std::collections::HashSet::new();
    let missing: Vec<(&String, &String)> = wanted
        .into_iter()
        .filter(|(t, id)| !found.contains_key(&((*t).clone(), (*id).clone())))
        .collect();
    if missing.is_empty() {
        return Ok(Subjects { uids: found, new });
    }
    let at = time::now();
    // Time-ordered uids: index inserts append instead of splitting pages.
    let rows: Vec<(&String, &String, String)> = missing
        .iter()
        .map(|(t, id)| (*t, *id, uuid::Uuid::now_v7().to_string()))
        .collect();
    for chunk in rows.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO subjects (tenant, id, uid, created_at, updated_at) VALUES {}
             ON CONFLICT (tenant, id) DO NOTHING RETURNING tenant, id, uid",
            groups(d, 1, chunk.len(), 5)
        );
        let mut q = sqlx::query(&sql);
        for (tenant, id, uid) in chunk {
            q = q
                .bind(tenant.as_str())
                .bind(id.as_str())
                .bind(uid.as_str())
                .bind(at)
                .bind(at);
        }
        for r in q.fetch_all(&mut **tx).await.map_err(unavailable)? {
            let uid: String = r.get("uid");
            new.insert(uid.clone());
            found.insert((r.get("tenant"), r.get("id")), uid);
        }
    }
    // Created by another writer between the read and the insert.
    let raced: Vec<(&String, &String)> = missing
        .into_iter()
        .filter(|(t, id)| !found.contains_key(&((*t).clone(), (*id).clone())))
        .collect();
    select_pairs(tx, d, select, &raced, |r| {
        found.insert((r.get("tenant"), r.get("id")), r.get("uid"));
        Ok(())
    })
    .await?;
    Ok(Subjects { uids: found, new })
}

/// Each written entry with its evidence (JSON text).
fn ledger_rows<'r>(rows: &'r Rows<'_>) -> Vec<(&'r LedgerEntry, Option<&'r str>)> {
    rows.entries
        .iter()
        .map(|(e, item)| (e, rows.evidence[*item].as_deref()))
        .collect()
}

/// A ledger row in its stored form: the hashes as bytes, and whether the
/// row keeps evidence (in `evidence`, once per distinct value and partition).
struct StoredEntry<'r> {
    entry: &'r LedgerEntry,
    prev_hash: [u8; 32],
    hash: [u8; 32],
    evidence_hash: Option<[u8; 32]>,
    evidence_kept: bool,
}

fn stored_entries<'r>(ledger: &[(&'r LedgerEntry, Option<&str>)]) -> Result<Vec<StoredEntry<'r>>> {
    ledger
        .iter()
        .map(|(e, evidence)| {
            Ok(StoredEntry {
                entry: e,
                prev_hash: hash_bytes(&e.prev_hash)?,
                hash: hash_bytes(&e.hash)?,
                evidence_hash: e
                    .body
                    .evidence_hash
                    .as_deref()
                    .map(hash_bytes)
                    .transpose()?,
                evidence_kept: evidence.is_some() && e.body.evidence_hash.is_some(),
            })
        })
        .collect()
}

/// The batch's evidence, once per (tenant, partition, hash): its JSON and
/// how many of the batch's ledger rows keep it (added to `evidence.refs`).
/// Per partition, so that only the writers of a partition, who hold its
/// lock, touch its evidence rows.
fn evidence_rows<'r>(
    ledger: &[(&'r LedgerEntry, Option<&'r str>)],
) -> Vec<(&'r str, u32, &'r str, &'r str, i64)> {
    let mut seen: HashMap<(&str, u32, &str), (&str, i64)> = HashMap::new();
    let mut order = Vec::new();
    for (e, evidence) in ledger {
        if let (Some(body), Some(hash)) = (evidence, e.body.evidence_hash.as_deref()) {
            let key = (e.body.tenant.as_str(), e.partition, hash);
            seen.entry(key)
                .and_modify(|(_, refs)| *refs += 1)
                .or_insert_with(|| {
                    order.push(key);
                    (*body, 1)
                });
        }
    }
    // In key order, as the partitions' locks are taken.
    order.sort_unstable();
    order
        .into_iter()
        .filter_map(|k| {
            seen.get(&k)
                .map(|(body, refs)| (k.0, k.1, k.2, *body, *refs))
        })
        .collect()
}

/// A row of `choice_days`: tenant, day, purpose, channel (`""` for every
/// channel), action, partition, and how many of the batch's entries it
/// counts.
type ChoiceRow<'r> = (&'r str, i64, &'r str, &'r str, &'r str, u32, i64);

/// What a `choice_days` row counts: tenant, day, purpose, channel, action.
type ChoiceKey<'r> = (&'r str, i64, &'r str, &'r str, &'r str);

/// The batch's entries counted per day (of `occurred_at`, UTC, as
/// `occurred_at / 86400000000` in SQL), purpose, channel and action, in
/// key order: added to `choice_days` (migration 0180), the console's chart
/// of choices. A row also names a partition, so that concurrent batches
/// never touch the same row: each count goes to the lowest partition the
/// batch appends entries of that key to, one the batch holds the lock of
/// on PostgreSQL (a row per key and batch, not per partition: writers of
/// other partitions never wait on it, and a batch of 64 entries adds a few
/// rows, not 64). SQLite has one writer: it counts everything in
/// partition 0.
fn choice_rows<'r>(ledger: &[(&'r LedgerEntry, Option<&'r str>)]) -> Vec<ChoiceRow<'r>> {
    let mut counts: std::collections::BTreeMap<ChoiceKey<'r>, (u32, i64)> = Default::default();
    for (e, _) in ledger {
        let b = &e.body;
        let key = (
            b.tenant.as_str(),
            b.occurred_at / time::MICROS_PER_DAY,
            b.purpose.as_str(),
            b.channel.map(Channel::as_str).unwrap_or(""),
            b.action.as_str(),
        );
        let (lowest, n) = counts.entry(key).or_insert((e.partition, 0));
        *lowest = (*lowest).min(e.partition);
        *n += 1;
    }
    counts
        .into_iter()
        .map(|((t, d, p, c, a), (part, n))| (t, d, p, c, a, part, n))
        .collect()
}

/// `choice_days` rows are added to.
/// (A macro, so that both write paths' statements are built from it.)
macro_rules! upsert_choices {
    () => {
        " ON CONFLICT (tenant, day, purpose, channel, action, part) \
         DO UPDATE SET n = choice_days.n + excluded.n"
    };
}
const UPSERT_CHOICES: &str = upsert_choices!();

/// Evidence rows are added to, never replaced: a value already stored for
/// another entry gains references.
/// (A macro, so that both write paths' statements are built from it.)
macro_rules! upsert_evidence {
    () => {
        " ON CONFLICT (tenant, part, hash) DO UPDATE SET refs = evidence.refs + excluded.refs"
    };
}
const UPSERT_EVIDENCE: &str = upsert_evidence!();

/// The entries that set `consent_states` rows: per (subject, purpose,
/// channel) only the latest `(occurred_at, seq)` of the batch (PostgreSQL
/// refuses to update one row twice in a statement); flag changes
/// (restrict, object, …) set no consent state.
fn latest_states<'r>(rows: &'r Rows<'_>) -> Vec<&'r LedgerEntry> {
    let mut latest: HashMap<StateRef<'_>, &LedgerEntry> = HashMap::new();
    for (e, _) in rows
        .entries
        .iter()
        .filter(|(e, _)| e.body.action.is_consent())
    {
        let slot = latest.entry(state_ref(e)).or_insert(e);
        if (e.body.occurred_at, e.seq) > (slot.body.occurred_at, slot.seq) {
            *slot = e;
        }
    }
    let mut states: Vec<&LedgerEntry> = latest.into_values().collect();
    states.sort_by_key(|e| e.seq);
    states
}

/// Current state follows the latest `(occurred_at, seq)`, like the domain
/// fold; an older event (an import of history) leaves it alone.
/// (A macro, so that both write paths' statements are built from it.) The
/// row is upserted into `$table`, keyed by `$tenant` and `$subject` (on
/// SQLite the table keyed by their numbers: see migrations 0160 and 0170).
macro_rules! upsert_state {
    ($tenant:literal, $subject:literal, $table:literal) => {
        concat!(
            " ON CONFLICT (",
            $tenant,
            ", ",
            $subject,
            ", purpose, channel) DO UPDATE SET
            state = excluded.state, seq = excluded.seq, occurred_at = excluded.occurred_at,
            expires_at = excluded.expires_at, notice_key = excluded.notice_key,
            notice_version = excluded.notice_version, source = excluded.source,
            guardian = excluded.guardian
         WHERE (excluded.occurred_at, excluded.seq) > (",
            $table,
            ".occurred_at, ",
            $table,
            ".seq)"
        )
    };
}
/// [`upsert_state!`] on SQLite's `consent_state_rows`.
const UPSERT_STATE_ROW: &str = upsert_state!("tenant_no", "subject_no", "consent_state_rows");

/// The whole batch in one PostgreSQL statement (each sub-statement of a
/// `WITH` runs once, to completion): new subjects, ledger rows, evidence,
/// outbox, current state, receipts, idempotency records, the chain
/// heads and the day's choice counts. Rows travel as JSON recordsets (one parameter per table,
/// whatever the batch size). `false`: one of `created` had been created
/// meanwhile by another writer (its uid is not the one chained); the
/// batch must be rolled back and run again.
async fn write_batch_pg(
    batch: &mut PgBatch,
    rows: &Rows<'_>,
    heads: &Heads,
    created: &[(&String, &String, String)],
    current: &HashMap<StateKey, (ConsentState, Micros, u64)>,
) -> Result<bool> {
    use serde_json::json;
    let ledger = ledger_rows(rows);
    let outbox = outbox_rows(&ledger, current);
    let ledger_json: Vec<serde_json::Value> = ledger
        .iter()
        .map(|(e, evidence)| {
            let b = &e.body;
            let kept = evidence.is_some() && b.evidence_hash.is_some();
            json!({
                "tenant": b.tenant, "seq": e.seq, "part": e.partition, "pseq": e.pseq,
                "subject_uid": b.subject_uid,
                "purpose": b.purpose, "channel": b.channel.map(Channel::as_str),
                "action": b.action.as_str(),
                "notice_key": b.notice.as_ref().map(|n| n.key.as_str()),
                "notice_version": b.notice.as_ref().map(|n| n.version),
                "notice_hash": b.notice.as_ref().map(|n| n.hash.as_str()),
                "source": b.source, "actor": b.actor, "evidence_hash": b.evidence_hash,
                "evidence_kept": i64::from(kept), "occurred_at": b.occurred_at, "recorded_at": b.recorded_at,
                "expires_at": b.expires_at, "receipt_id": b.receipt, "prev_hash": e.prev_hash,
                "hash": e.hash, "guardian": i64::from(b.guardian),
            })
        })
        .collect();
    let outbox_json: Vec<serde_json::Value> = outbox
        .iter()
        .map(|(e, before, after)| {
            json!({
                "tenant": e.body.tenant, "seq": e.seq,
                "before_state": before.as_str(), "after_state": after.as_str(),
            })
        })
        .collect();
    let evidence_json: Vec<serde_json::Value> = evidence_rows(&ledger)
        .iter()
        .map(|(tenant, part, hash, body, refs)| {
            json!({"tenant": tenant, "part": part, "hash": hash, "body": body, "refs": refs})
        })
        .collect();
    let choices_json: Vec<serde_json::Value> = choice_rows(&ledger)
        .iter()
        .map(|(tenant, day, purpose, channel, action, part, n)| {
            json!({"tenant": tenant, "day": day, "purpose": purpose, "channel": channel,
                   "action": action, "part": part, "n": n})
        })
        .collect();
    let states_json: Vec<serde_json::Value> = latest_states(rows)
        .iter()
        .map(|e| {
            let b = &e.body;
            json!({
                "tenant": b.tenant, "subject_uid": b.subject_uid, "purpose": b.purpose,
                "channel": b.channel.map(Channel::as_str).unwrap_or(""),
                "state": b.action.state().unwrap_or(ConsentState::Unspecified).as_str(),
                "seq": e.seq, "occurred_at": b.occurred_at, "expires_at": b.expires_at,
                "notice_key": b.notice.as_ref().map(|n| n.key.as_str()),
                "notice_version": b.notice.as_ref().map(|n| n.version),
                "source": b.source, "guardian": i64::from(b.guardian),
            })
        })
        .collect();
    let receipts_json: Vec<serde_json::Value> = rows
        .receipts
        .iter()
        .map(|(tenant, uid, r)| {
            json!({"tenant": tenant, "id": r.id, "subject_uid": uid, "jws": r.jws, "created_at": r.created_at})
        })
        .collect();
    let idempotency_json: Vec<serde_json::Value> = rows
        .idempotency
        .iter()
        .map(|(tenant, key, hash, response, at, uid)| {
            json!({"tenant": tenant, "key": key, "request_hash": hash, "response": response,
                   "created_at": at, "subject_uid": uid})
        })
        .collect();
    let heads_json: Vec<serde_json::Value> = heads
        .touched()
        .iter()
        .map(|(tenant, part, h, last)| {
            json!({"tenant": tenant, "part": part, "size": h.seq, "hash": h.hash, "last_seq": last})
        })
        .collect();
    let at = time::now();
    let subjects_json: Vec<serde_json::Value> = created
        .iter()
        .map(|(tenant, id, uid)| json!({"tenant": tenant, "id": id, "uid": uid, "at": at}))
        .collect();
    let row = sqlx::query(PG_WRITE_BATCH)
        .bind(serde_json::Value::Array(ledger_json).to_string())
        .bind(serde_json::Value::Array(outbox_json).to_string())
        .bind(serde_json::Value::Array(states_json).to_string())
        .bind(serde_json::Value::Array(receipts_json).to_string())
        .bind(serde_json::Value::Array(idempotency_json).to_string())
        .bind(serde_json::Value::Array(heads_json).to_string())
        .bind(serde_json::Value::Array(evidence_json).to_string())
        .bind(serde_json::Value::Array(subjects_json).to_string())
        .bind(serde_json::Value::Array(choices_json).to_string())
        .fetch_one(&mut *batch.conn)
        .await
        .map_err(unavailable)?;
    let inserted: i64 = row.try_get("s").map_err(unavailable)?;
    Ok(inserted == created.len() as i64)
}

/// The statements sent after `COMMIT` (in the same round trip): the
/// change notification of each tenant written, naming its last `seq`.
fn notify_sql(channel: Option<&str>, rows: &Rows<'_>) -> Result<String> {
    let Some(channel) = channel else {
        return Ok(String::new());
    };
    let mut upto: HashMap<&str, u64> = HashMap::new();
    for (e, _) in &rows.entries {
        let last = upto.entry(e.body.tenant.as_str()).or_default();
        *last = (*last).max(e.seq);
    }
    let channel = pg_text(channel)?;
    let mut sql = String::new();
    for (tenant, upto) in upto {
        let payload = serde_json::to_string(&Change::Ledger {
            tenant: tenant.to_string(),
            upto,
        })
        .map_err(json_err)?;
        sql.push_str(&format!(
            " SELECT pg_notify({channel}, {});",
            pg_text(&payload)?
        ));
    }
    Ok(sql)
}

/// See [`write_batch_pg`].
const PG_WRITE_BATCH: &str = concat!(
    "WITH
  l AS (INSERT INTO ledger (tenant, seq, part, pseq, subject_uid, purpose, channel, action,
            notice_key, notice_version, notice_hash, source, actor, evidence_hash, evidence_kept,
            occurred_at, recorded_at, expires_at, receipt_id, prev_hash, hash, guardian)
        SELECT tenant, seq, part, pseq, subject_uid, purpose, channel, action, notice_key, notice_version,
            notice_hash, source, actor, decode(evidence_hash, 'hex'), evidence_kept, occurred_at,
            recorded_at, expires_at, receipt_id, decode(prev_hash, 'hex'), decode(hash, 'hex'),
            guardian
        FROM jsonb_to_recordset($1::jsonb) AS x(tenant text, seq bigint, part bigint,
            pseq bigint, subject_uid text,
            purpose text, channel text, action text, notice_key text, notice_version bigint,
            notice_hash text, source text, actor text, evidence_hash text, evidence_kept smallint,
            occurred_at bigint, recorded_at bigint, expires_at bigint, receipt_id text,
            prev_hash text, hash text, guardian bigint)
        RETURNING 1),
  e AS (INSERT INTO evidence (tenant, part, hash, body, refs)
        SELECT tenant, part, decode(hash, 'hex'), body, refs
        FROM jsonb_to_recordset($7::jsonb) AS x(tenant text, part bigint, hash text, body text,
            refs bigint)",
    upsert_evidence!(),
    "
        RETURNING 1),
  o AS (INSERT INTO outbox (tenant, seq, before_state, after_state)
        SELECT tenant, seq, before_state, after_state
        FROM jsonb_to_recordset($2::jsonb) AS x(tenant text, seq bigint, before_state text,
            after_state text)
        RETURNING 1),
  c AS (INSERT INTO consent_states (tenant, subject_uid, purpose, channel, state, seq,
            occurred_at, expires_at, notice_key, notice_version, source, guardian)
        SELECT tenant, subject_uid, purpose, channel, state, seq, occurred_at, expires_at,
            notice_key, notice_version, source, guardian
        FROM jsonb_to_recordset($3::jsonb) AS x(tenant text, subject_uid text, purpose text,
            channel text, state text, seq bigint, occurred_at bigint, expires_at bigint,
            notice_key text, notice_version bigint, source text, guardian bigint)",
    upsert_state!("tenant", "subject_uid", "consent_states"),
    "
        RETURNING 1),
  r AS (INSERT INTO receipts (tenant, id, subject_uid, jws, created_at)
        SELECT tenant, id, subject_uid, jws, created_at
        FROM jsonb_to_recordset($4::jsonb) AS x(tenant text, id text, subject_uid text, jws text,
            created_at bigint)
        RETURNING 1),
  i AS (INSERT INTO idempotency_keys (tenant, key, request_hash, response, created_at,
            subject_uid)
        SELECT tenant, key, request_hash, response, created_at, subject_uid
        FROM jsonb_to_recordset($5::jsonb) AS x(tenant text, key text, request_hash text,
            response text, created_at bigint, subject_uid text)
        RETURNING 1),
  h AS (INSERT INTO ledger_partitions (tenant, part, size, hash, last_seq)
        SELECT tenant, part, size, hash, last_seq
        FROM jsonb_to_recordset($6::jsonb) AS x(tenant text, part bigint, size bigint, hash text,
            last_seq bigint)
        ON CONFLICT (tenant, part) DO UPDATE SET size = excluded.size, hash = excluded.hash,
            last_seq = excluded.last_seq
        RETURNING 1),
  s AS (INSERT INTO subjects (tenant, id, uid, created_at, updated_at)
        SELECT tenant, id, uid, at, at
        FROM jsonb_to_recordset($8::jsonb) AS x(tenant text, id text, uid text, at bigint)
        ON CONFLICT (tenant, id) DO NOTHING
        RETURNING 1),
  d AS (INSERT INTO choice_days (tenant, day, purpose, channel, action, part, n)
        SELECT tenant, day, purpose, channel, action, part, n
        FROM jsonb_to_recordset($9::jsonb) AS x(tenant text, day bigint, purpose text,
            channel text, action text, part bigint, n bigint)",
    upsert_choices!(),
    "
        RETURNING 1)
SELECT (SELECT count(*) FROM l) AS l, (SELECT count(*) FROM e) AS e, (SELECT count(*) FROM o) AS o, (SELECT count(*) FROM c) AS c,
       (SELECT count(*) FROM r) AS r, (SELECT count(*) FROM i) AS i, (SELECT count(*) FROM h) AS h,
       (SELECT count(*) FROM s) AS s, (SELECT count(*) FROM d) AS d"
);

/// (tenant, subject uid, purpose, channel or '') of a `consent_states` row.
type StateKey = (String, String, String, String);

/// [`StateKey`] borrowed from an entry (the channel as it is chained).
type StateRef<'r> = (&'r str, &'r str, &'r str, Option<Channel>);

/// [`state_key`] borrowed.
fn state_ref(e: &LedgerEntry) -> StateRef<'_> {
    let b = &e.body;
    (
        b.tenant.as_str(),
        b.subject_uid.as_str(),
        b.purpose.as_str(),
        b.channel,
    )
}

/// The key of the `consent_states` row an entry sets.
fn state_key(e: &LedgerEntry) -> StateKey {
    let b = &e.body;
    (
        b.tenant.clone(),
        b.subject_uid.clone(),
        b.purpose.clone(),
        b.channel.map(Channel::as_str).unwrap_or("").to_string(),
    )
}

/// One outbox row per entry, with the state in force before and after it.
fn outbox_rows<'r>(
    ledger: &[(&'r LedgerEntry, Option<&str>)],
    current: &HashMap<StateKey, (ConsentState, Micros, u64)>,
) -> Vec<(&'r LedgerEntry, ConsentState, ConsentState)> {
    // The state as the batch goes, by borrowed key: the stored state is
    // looked up (an owned key) once per key, and not at all when there is
    // none (subjects new in this batch, as in most of an import).
    let mut going: HashMap<StateRef<'_>, (ConsentState, Micros, u64)> =
        HashMap::with_capacity(ledger.len());
    let mut rows = Vec::with_capacity(ledger.len());
    for (e, _) in ledger {
        let slot = going.entry(state_ref(e)).or_insert_with(|| {
            (!current.is_empty())
                .then(|| current.get(&state_key(e)).copied())
                .flatten()
                .unwrap_or((ConsentState::Unspecified, i64::MIN, 0))
        });
        let before = slot.0;
        if let Some(state) = e.body.action.state()
            && (e.body.occurred_at, e.seq) > (slot.1, slot.2)
        {
            *slot = (state, e.body.occurred_at, e.seq);
        }
        rows.push((*e, before, slot.0));
    }
    rows
}
