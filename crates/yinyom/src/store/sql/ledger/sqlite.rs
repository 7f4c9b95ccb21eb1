//! The consent write path on SQLite: the steps of [`Ledger::commit`]
//! (heads locked, idempotency, subjects, entries, evidence, the day's choice
//! counts, outbox, current state, receipts, idempotency rows, heads updated: the tenant's entry
//! counter in `ledger_heads`, each written partition's head in
//! `ledger_partitions`) in one synchronous
//! call on the connection's own thread, through SQLite's C API with each
//! statement prepared once per batch and stepped once per row.
//!
//! Through sqlx every statement step is a hand-off to the connection's
//! worker thread and every bound value is copied twice (into the `Any`
//! driver's arguments, then into SQLite's); a million-row import spent
//! most of its time there rather than in SQLite. Here values are bound in
//! place (`SQLITE_STATIC`: SQLite reads them during the step) and a row
//! costs one step of an already prepared statement.
//!
//! Durability is unchanged: the batch is one `BEGIN IMMEDIATE … COMMIT`
//! on a connection in WAL mode with `synchronous = FULL`, so it has been
//! fsync'd when `commit` returns.

use std::ffi::{CStr, CString, c_int};
use std::ptr::NonNull;

use libsqlite3_sys as ffi;

use super::*;

/// The columns of a `ledger_rows` row (the table behind the `ledger` view,
/// which names the tenant and the subject by their numbers: migrations 0160
/// and 0170), in the order [`ledger_params`] binds them. A column is added
/// here and there, nowhere else.
const LEDGER_COLUMNS: &str = "tenant_no, seq, part, pseq, subject_no, purpose, channel, action, \
     notice_key, notice_version, notice_hash, source, actor, evidence_hash, evidence_kept, \
     occurred_at, recorded_at, expires_at, receipt_id, prev_hash, hash, guardian";

/// A ledger row's values, in the order of [`LEDGER_COLUMNS`]; `tenant`
/// and `subject` are the numbers of the entry's tenant and subject, the
/// purpose, channel and action are numbered by `terms`.
fn ledger_params<'a>(
    s: &'a StoredEntry<'_>,
    tenant: i64,
    subject: i64,
    terms: &Terms,
) -> Result<[Param<'a>; 22]> {
    let e = s.entry;
    let b = &e.body;
    Ok([
        Param::Int(tenant),
        Param::Int(e.seq as i64),
        Param::Int(i64::from(e.partition)),
        Param::Int(e.pseq as i64),
        Param::Int(subject),
        Param::Int(terms.of(&b.purpose)?),
        match b.channel {
            Some(c) => Param::Int(terms.of(c.as_str())?),
            None => Param::Null,
        },
        Param::Int(terms.of(b.action.as_str())?),
        b.notice.as_ref().map(|n| n.key.as_str()).into(),
        b.notice.as_ref().map(|n| n.version as i64).into(),
        b.notice.as_ref().map(|n| n.hash.as_str()).into(),
        Param::Text(&b.source),
        Param::Text(&b.actor),
        s.evidence_hash.as_ref().map(|h| &h[..]).into(),
        Param::Int(i64::from(s.evidence_kept)),
        Param::Int(b.occurred_at),
        Param::Int(b.recorded_at),
        b.expires_at.into(),
        b.receipt.as_deref().into(),
        Param::Blob(&s.prev_hash),
        Param::Blob(&s.hash),
        Param::Int(i64::from(b.guardian)),
    ])
}

/// A batch's entries counted per tenant, day, purpose, channel and action,
/// summed over its chunks (see [`choice_rows`]).
type ChoiceCounts = std::collections::BTreeMap<(String, i64, String, String, String), i64>;

/// Batches of at least this many items are chained on a second thread
/// while this one writes, [`PIPELINE_CHUNK`] items at a time. (A group
/// commit of API requests is smaller: for it a thread would cost more than
/// it saves, and the other core is busy serving requests anyway.)
const PIPELINE_FROM: usize = 2_048;
const PIPELINE_CHUNK: usize = 1_024;

/// `INSERT INTO table (columns) VALUES (?, …)` with one `?` per column.
fn insert(table: &str, columns: &str, tail: &str) -> String {
    let n = columns.split(',').count();
    let marks = vec!["?"; n].join(", ");
    format!("INSERT INTO {table} ({columns}) VALUES ({marks}){tail}")
}

/// [`Ledger::commit`] on SQLite; the caller holds the process's write turn.
pub(super) async fn commit(
    store: &SqlStore,
    items: &[WriteItem],
    seal: Sealer<'_>,
) -> Result<Vec<ItemOutcome>> {
    let writer = store.writer().await?;
    let mut conn = writer.pool.acquire().await.map_err(unavailable)?;
    let (result, in_transaction) = {
        let mut handle = conn.lock_handle().await.map_err(unavailable)?;
        let db = Db(handle.as_raw_handle());
        let result = blocking(|| db.batch(store, items, seal));
        (result, db.in_transaction())
    };
    if let Ok((_, frames)) = &result {
        writer.committed(*frames);
    }
    let result = result.map(|(outcomes, _)| outcomes);
    if in_transaction {
        // Neither COMMIT nor ROLLBACK went through (a disk full rolls back
        // by itself, but not always): the connection is not reused.
        conn.close_on_drop();
    }
    result
}

/// Run `f`, which blocks (SQLite, fsync), without stalling the other tasks
/// of a multi-threaded runtime; on a single-threaded one (tests) in place.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// A bound value.
#[derive(Clone, Copy)]
enum Param<'a> {
    Null,
    Int(i64),
    Text(&'a str),
    Blob(&'a [u8]),
}

impl<'a> From<Option<&'a str>> for Param<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(Param::Null, Param::Text)
    }
}

impl<'a> From<Option<&'a [u8]>> for Param<'a> {
    fn from(v: Option<&'a [u8]>) -> Self {
        v.map_or(Param::Null, Param::Blob)
    }
}

impl From<Option<i64>> for Param<'_> {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Param::Null, Param::Int)
    }
}

/// The connection, borrowed from sqlx's worker thread for one batch.
struct Db(NonNull<ffi::sqlite3>);

impl Db {
    fn raw(&self) -> *mut ffi::sqlite3 {
        self.0.as_ptr()
    }

    fn in_transaction(&self) -> bool {
        // SAFETY: the handle is open and locked out of the worker for us.
        unsafe { ffi::sqlite3_get_autocommit(self.raw()) == 0 }
    }

    /// The connection's last error.
    fn error(&self) -> StoreError {
        // SAFETY: as above; the message is copied before the next call.
        let (code, message) = unsafe {
            let code = ffi::sqlite3_extended_errcode(self.raw());
            let message = CStr::from_ptr(ffi::sqlite3_errmsg(self.raw()))
                .to_string_lossy()
                .into_owned();
            (code, message)
        };
        match code {
            ffi::SQLITE_CONSTRAINT_UNIQUE | ffi::SQLITE_CONSTRAINT_PRIMARYKEY => {
                StoreError::Conflict
            }
            _ => {
                StoreError::Unavailable(format!("error returned from database: ({code}) {message}"))
            }
        }
    }

    fn exec(&self, sql: &str) -> Result<()> {
        let sql = CString::new(sql).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        // SAFETY: a NUL-terminated statement, no callback.
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.raw(),
                sql.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.error())
        }
    }

    fn prepare(&self, sql: &str) -> Result<Stmt<'_>> {
        let mut raw = std::ptr::null_mut();
        // SAFETY: `sql` outlives the call; its length is given.
        let rc = unsafe {
            ffi::sqlite3_prepare_v2(
                self.raw(),
                sql.as_ptr().cast(),
                c_int::try_from(sql.len()).map_err(|e| StoreError::Unavailable(e.to_string()))?,
                &mut raw,
                std::ptr::null_mut(),
            )
        };
        if rc != ffi::SQLITE_OK || raw.is_null() {
            return Err(self.error());
        }
        // SAFETY: a prepared statement.
        let params = unsafe { ffi::sqlite3_bind_parameter_count(raw) } as usize;
        Ok(Stmt {
            db: self,
            raw,
            params,
        })
    }

    /// The batch in one transaction, rolled back on any error; with the
    /// frames its commit left in the WAL.
    fn batch(
        &self,
        store: &SqlStore,
        items: &[WriteItem],
        seal: Sealer<'_>,
    ) -> Result<(Vec<ItemOutcome>, i32)> {
        self.exec("BEGIN IMMEDIATE")?;
        let mut frames: c_int = 0;
        let result = self.write(store, items, seal).and_then(|outcomes| {
            let _hook = WalHook::count(self, &mut frames);
            self.exec("COMMIT")?;
            Ok(outcomes)
        });
        if result.is_err() && self.in_transaction() {
            let _ = self.exec("ROLLBACK");
        }
        let outcomes = result?;
        if frames >= super::CHECKPOINT_INLINE_FRAMES {
            // The checkpointer is not keeping up: this writer checkpoints.
            // SAFETY: an open handle; no transaction is open.
            unsafe {
                ffi::sqlite3_wal_checkpoint_v2(
                    self.raw(),
                    std::ptr::null(),
                    ffi::SQLITE_CHECKPOINT_PASSIVE,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                );
            }
        }
        Ok((outcomes, frames))
    }

    /// The steps of [`Ledger::commit`], inside the transaction.
    ///
    /// A large batch (an import's) is chained and written in chunks, the
    /// chaining (canonical JSON, SHA-256, the rows' values) on a second
    /// thread while this one writes the chunk before: SQLite has one
    /// writer, and it then spends its time in SQLite. The chunks are
    /// written in order in the same transaction, so the result is the
    /// batch written at once: each chunk reads the current state the chunks
    /// before it left.
    fn write(
        &self,
        store: &SqlStore,
        items: &[WriteItem],
        seal: Sealer<'_>,
    ) -> Result<Vec<ItemOutcome>> {
        let mut heads = self.lock_heads(store, items)?;
        let numbers = self.tenant_numbers(items)?;
        let mut seen = self.prior_idempotency(items)?;
        let (Subjects { uids, mut new }, subjects) = self.ensure_subjects(&fresh(items, &seen))?;
        if items.len() < PIPELINE_FROM {
            let (rows, outcomes) = chain_items(items, &mut seen, &uids, &mut heads, seal)?;
            let mut choices = ChoiceCounts::new();
            self.write_rows(&rows, &numbers, &subjects, &mut new, &mut choices)?;
            self.write_choices(&choices)?;
            self.write_heads(&heads)?;
            return Ok(outcomes);
        }
        let (heads, outcomes, choices) = std::thread::scope(|scope| {
            // Two chunks ahead at most: memory stays bounded.
            let (chained, chunks) = std::sync::mpsc::sync_channel(2);
            let chainer = scope.spawn(|| {
                for chunk in items.chunks(PIPELINE_CHUNK) {
                    let result = chain_items(chunk, &mut seen, &uids, &mut heads, seal);
                    let failed = result.is_err();
                    // The writer stopped (an error): so does the chaining.
                    if chained.send(result).is_err() || failed {
                        break;
                    }
                }
                drop(chained);
                heads
            });
            let mut outcomes = Vec::with_capacity(items.len());
            let mut choices = ChoiceCounts::new();
            let mut written = Ok(());
            for chunk in chunks.iter() {
                match chunk.and_then(|(rows, o)| {
                    self.write_rows(&rows, &numbers, &subjects, &mut new, &mut choices)
                        .map(|_| o)
                }) {
                    Ok(o) => outcomes.extend(o),
                    Err(e) => {
                        written = Err(e);
                        break;
                    }
                }
            }
            drop(chunks);
            let heads = chainer
                .join()
                .map_err(|_| StoreError::Unavailable("chaining the batch panicked".into()))?;
            written.map(|_| (heads, outcomes, choices))
        })?;
        if outcomes.len() != items.len() {
            return Err(StoreError::Unavailable(
                "the batch was not chained whole".into(),
            ));
        }
        self.write_choices(&choices)?;
        self.write_heads(&heads)?;
        Ok(outcomes)
    }

    /// The batch's choice counts added to `choice_days` (in partition 0:
    /// one writer), once per transaction: an import's chunks add up first.
    fn write_choices(&self, choices: &ChoiceCounts) -> Result<()> {
        if choices.is_empty() {
            return Ok(());
        }
        let mut upsert = self.prepare(&insert(
            "choice_days",
            "tenant, day, purpose, channel, action, part, n",
            UPSERT_CHOICES,
        ))?;
        for ((tenant, day, purpose, channel, action), n) in choices {
            upsert.run(&[
                Param::Text(tenant),
                Param::Int(*day),
                Param::Text(purpose),
                Param::Text(channel),
                Param::Text(action),
                Param::Int(0),
                Param::Int(*n),
            ])?;
        }
        Ok(())
    }

    /// The rows of chained items (entries, evidence, outbox, current state,
    /// receipts, idempotency records). `new` holds the uids of subjects
    /// this batch created that no chunk has written yet: they have no
    /// current state to read. This chunk's subjects leave it.
    fn write_rows(
        &self,
        rows: &Rows<'_>,
        numbers: &TenantNumbers,
        subjects: &SubjectNumbers,
        new: &mut std::collections::HashSet<String>,
        choices: &mut ChoiceCounts,
    ) -> Result<()> {
        let ledger = ledger_rows(rows);
        let terms = self.terms(&ledger)?;
        let evidence = evidence_rows(&ledger);
        if !evidence.is_empty() {
            let mut upsert = self.prepare(&insert(
                "evidence",
                "tenant, part, hash, body, refs",
                UPSERT_EVIDENCE,
            ))?;
            for (tenant, part, hash, body, refs) in evidence {
                let hash = hash_bytes(hash)?;
                upsert.run(&[
                    Param::Text(tenant),
                    Param::Int(i64::from(part)),
                    Param::Blob(&hash),
                    Param::Text(body),
                    Param::Int(refs),
                ])?;
            }
        }
        for (tenant, day, purpose, channel, action, _, n) in choice_rows(&ledger) {
            *choices
                .entry((
                    tenant.to_string(),
                    day,
                    purpose.to_string(),
                    channel.to_string(),
                    action.to_string(),
                ))
                .or_default() += n;
        }
        let mut append = self.prepare(&insert("ledger_rows", LEDGER_COLUMNS, ""))?;
        for s in &stored_entries(&ledger)? {
            let b = &s.entry.body;
            append.run(&ledger_params(
                s,
                numbers.of(&b.tenant)?,
                subjects.of(&b.subject_uid)?,
                &terms,
            )?)?;
        }
        let current = self.current_states(&ledger, numbers, subjects, &terms, new)?;
        for (e, _) in &ledger {
            new.remove(&e.body.subject_uid);
        }
        let mut outbox = self.prepare(&insert(
            "outbox_rows",
            "tenant_no, seq, before_state, after_state",
            "",
        ))?;
        for (e, before, after) in outbox_rows(&ledger, &current) {
            outbox.run(&[
                Param::Int(numbers.of(&e.body.tenant)?),
                Param::Int(e.seq as i64),
                Param::Int(terms.of(before.as_str())?),
                Param::Int(terms.of(after.as_str())?),
            ])?;
        }
        let mut state = self.prepare(&insert(
            "consent_state_rows",
            "tenant_no, subject_no, purpose, channel, state, seq, occurred_at, expires_at, \
             notice_key, notice_version, source, guardian",
            UPSERT_STATE_ROW,
        ))?;
        for e in latest_states(rows) {
            let b = &e.body;
            state.run(&[
                Param::Int(numbers.of(&b.tenant)?),
                Param::Int(subjects.of(&b.subject_uid)?),
                Param::Int(terms.of(&b.purpose)?),
                Param::Int(terms.of(b.channel.map(Channel::as_str).unwrap_or(""))?),
                Param::Int(
                    terms.of(b
                        .action
                        .state()
                        .unwrap_or(ConsentState::Unspecified)
                        .as_str())?,
                ),
                Param::Int(e.seq as i64),
                Param::Int(b.occurred_at),
                b.expires_at.into(),
                b.notice.as_ref().map(|n| n.key.as_str()).into(),
                b.notice.as_ref().map(|n| n.version as i64).into(),
                Param::Text(&b.source),
                Param::Int(i64::from(b.guardian)),
            ])?;
        }
        if !rows.receipts.is_empty() {
            let mut receipt = self.prepare(&insert(
                "receipts",
                "tenant, id, subject_uid, jws, created_at",
                "",
            ))?;
            for (tenant, uid, r) in &rows.receipts {
                receipt.run(&[
                    Param::Text(tenant),
                    Param::Text(&r.id),
                    Param::Text(uid),
                    Param::Text(&r.jws),
                    Param::Int(r.created_at),
                ])?;
            }
        }
        if !rows.idempotency.is_empty() {
            let mut idempotency = self.prepare(&insert(
                "idempotency_keys",
                "tenant, key, request_hash, response, created_at, subject_uid",
                "",
            ))?;
            for (tenant, key, hash, response, at, uid) in &rows.idempotency {
                idempotency.run(&[
                    Param::Text(tenant),
                    Param::Text(key),
                    Param::Text(hash),
                    Param::Text(response),
                    Param::Int(*at),
                    Param::Text(uid),
                ])?;
            }
        }
        Ok(())
    }

    /// The tenant's entry counter (its hash is no longer kept), then the
    /// head of each partition appended to.
    fn write_heads(&self, heads: &Heads) -> Result<()> {
        let mut counter = self.prepare("UPDATE ledger_heads SET seq = ? WHERE tenant = ?")?;
        for (tenant, seq) in &heads.next_seq {
            let Some(seq) = seq else { continue };
            counter.run(&[Param::Int((*seq - 1) as i64), Param::Text(tenant)])?;
        }
        let mut partition = self.prepare(&insert(
            "ledger_partitions",
            "tenant, part, size, hash, last_seq",
            " ON CONFLICT (tenant, part) DO UPDATE SET size = excluded.size, \
             hash = excluded.hash, last_seq = excluded.last_seq",
        ))?;
        for (tenant, part, head, last) in heads.touched() {
            partition.run(&[
                Param::Text(tenant),
                Param::Int(i64::from(part)),
                Param::Int(head.seq as i64),
                Param::Text(&head.hash),
                Param::Int(last as i64),
            ])?;
        }
        Ok(())
    }

    /// The chain heads the batch appends to (the transaction already
    /// holds the write lock: nothing read from here on changes until it
    /// commits): per tenant its partition count and its entry counter in
    /// `ledger_heads` (created at 0 the first time), which numbers the
    /// entries; the recorded head of each of its partitions, the ones
    /// without one starting at genesis.
    fn lock_heads(&self, store: &SqlStore, items: &[WriteItem]) -> Result<Heads> {
        let tenants: BTreeSet<&String> = items.iter().map(|i| &i.tenant).collect();
        let mut counts = HashMap::new();
        let mut count = None;
        for tenant in &tenants {
            let n = match store.cached_partition_count(tenant) {
                Some(n) => n,
                None => {
                    let stmt = match &mut count {
                        Some(stmt) => stmt,
                        None => count
                            .insert(self.prepare("SELECT partitions FROM tenants WHERE id = ?")?),
                    };
                    let mut stored = None;
                    stmt.query(&[Param::Text(tenant)], |r| {
                        stored = Some(r.int(0));
                        Ok(())
                    })?;
                    store.remember_partition_count(tenant, stored)
                }
            };
            counts.insert((*tenant).clone(), n);
        }
        let mut heads = Heads::new(counts);
        let wanted = heads.wanted(items);
        // An upsert that changes nothing locks the row (and creates it the
        // first time) and returns it.
        let mut counter = self.prepare(
            "INSERT INTO ledger_heads (tenant, seq, hash) VALUES (?, 0, ?)
             ON CONFLICT (tenant) DO UPDATE SET seq = ledger_heads.seq
             RETURNING seq",
        )?;
        let mut partitions =
            self.prepare("SELECT part, size, hash FROM ledger_partitions WHERE tenant = ?")?;
        for tenant in tenants {
            let mut seq = None;
            counter.query(&[Param::Text(tenant), Param::Text(GENESIS)], |r| {
                seq = Some(r.int(0) as u64);
                Ok(())
            })?;
            let seq =
                seq.ok_or_else(|| StoreError::Unavailable("chain head not returned".into()))?;
            heads.next_seq.insert(tenant.clone(), Some(seq + 1));
            partitions.query(&[Param::Text(tenant)], |r| {
                heads.parts.insert(
                    (tenant.clone(), r.int(0) as u32),
                    Chain {
                        seq: r.int(1) as u64,
                        hash: r.text(2),
                    },
                );
                Ok(())
            })?;
        }
        heads.start_at_genesis(&wanted);
        Ok(heads)
    }

    /// The number of each tenant of the batch (`tenant_numbers`), which
    /// the ledger, current-state and outbox rows are keyed by.
    fn tenant_numbers(&self, items: &[WriteItem]) -> Result<TenantNumbers> {
        let tenants: BTreeSet<&String> = items.iter().map(|i| &i.tenant).collect();
        let mut stmt = self.prepare("SELECT no FROM tenant_numbers WHERE id = ?")?;
        let mut numbers = HashMap::with_capacity(tenants.len());
        for tenant in tenants {
            stmt.query(&[Param::Text(tenant)], |r| {
                numbers.insert(tenant.clone(), r.int(0));
                Ok(())
            })?;
        }
        Ok(TenantNumbers(numbers))
    }

    /// The numbers (`terms`, migration 0170) of the purposes, channels,
    /// actions and states the rows of these entries name, numbering the
    /// new ones. (A few per batch; a term numbered by a batch that rolls
    /// back goes with it.)
    fn terms(&self, ledger: &[(&LedgerEntry, Option<&str>)]) -> Result<Terms> {
        let mut wanted: BTreeSet<&str> = ConsentState::ALL.iter().map(|s| s.as_str()).collect();
        wanted.insert("");
        for (e, _) in ledger {
            let b = &e.body;
            wanted.insert(&b.purpose);
            wanted.insert(b.action.as_str());
            if let Some(c) = b.channel {
                wanted.insert(c.as_str());
            }
        }
        let mut select = self.prepare("SELECT no FROM terms WHERE term = ?")?;
        let mut insert = None;
        let mut numbers = HashMap::with_capacity(wanted.len());
        for term in wanted {
            let mut no = None;
            select.query(&[Param::Text(term)], |r| {
                no = Some(r.int(0));
                Ok(())
            })?;
            let no = match no {
                Some(no) => no,
                None => {
                    let stmt = match &mut insert {
                        Some(stmt) => stmt,
                        None => insert.insert(self.prepare("INSERT INTO terms (term) VALUES (?)")?),
                    };
                    stmt.run(&[Param::Text(term)])?;
                    // SAFETY: an open handle; the insert just made is this
                    // connection's last.
                    unsafe { ffi::sqlite3_last_insert_rowid(self.raw()) }
                }
            };
            numbers.insert(term.to_string(), no);
        }
        Ok(Terms(numbers))
    }

    /// Earlier uses of the batch's idempotency keys: (tenant, key) →
    /// (request hash, response).
    fn prior_idempotency(
        &self,
        items: &[WriteItem],
    ) -> Result<HashMap<Key, (String, serde_json::Value)>> {
        let mut found = HashMap::new();
        let keyed: Vec<(&String, &String)> = items
            .iter()
            .filter_map(|i| i.idempotency.as_ref().map(|k| (&i.tenant, &k.key)))
            .collect();
        if keyed.is_empty() {
            return Ok(found);
        }
        let mut stmt = self.prepare(
            "SELECT request_hash, response FROM idempotency_keys WHERE tenant = ? AND key = ?",
        )?;
        for (tenant, key) in keyed {
            stmt.query(&[Param::Text(tenant), Param::Text(key)], |r| {
                found.insert(
                    (tenant.clone(), key.clone()),
                    (
                        r.text(0),
                        serde_json::from_str(&r.text(1)).map_err(json_err)?,
                    ),
                );
                Ok(())
            })?;
        }
        Ok(found)
    }

    /// The uids and numbers of the items' subjects, creating the subjects
    /// that do not exist yet (under the write lock no other writer can
    /// meanwhile).
    fn ensure_subjects(&self, items: &[&WriteItem]) -> Result<(Subjects, SubjectNumbers)> {
        let wanted: BTreeSet<(&String, &String)> =
            items.iter().map(|i| (&i.tenant, &i.subject_id)).collect();
        let mut uids = HashMap::with_capacity(wanted.len());
        let mut numbers = HashMap::with_capacity(wanted.len());
        let mut new = std::collections::HashSet::new();
        let mut select =
            self.prepare("SELECT uid, no FROM subjects WHERE tenant = ? AND id = ?")?;
        let mut missing = Vec::new();
        for (tenant, id) in wanted {
            let mut found = None;
            select.query(&[Param::Text(tenant), Param::Text(id)], |r| {
                found = Some((r.text(0), r.int(1)));
                Ok(())
            })?;
            match found {
                Some((uid, no)) => {
                    numbers.insert(uid.clone(), no);
                    uids.insert((tenant.clone(), id.clone()), uid);
                }
                None => missing.push((tenant, id)),
            }
        }
        if missing.is_empty() {
            return Ok((Subjects { uids, new }, SubjectNumbers(numbers)));
        }
        let at = time::now();
        let mut create = self.prepare(&insert(
            "subjects",
            "tenant, id, uid, created_at, updated_at",
            "",
        ))?;
        for (tenant, id) in missing {
            // Time-ordered uids: index inserts append instead of splitting pages.
            let uid = uuid::Uuid::now_v7().to_string();
            create.run(&[
                Param::Text(tenant),
                Param::Text(id),
                Param::Text(&uid),
                Param::Int(at),
                Param::Int(at),
            ])?;
            // SAFETY: an open handle; the insert just made is this
            // connection's last (the writer's connection is not shared).
            let no = unsafe { ffi::sqlite3_last_insert_rowid(self.raw()) };
            numbers.insert(uid.clone(), no);
            new.insert(uid.clone());
            uids.insert((tenant.clone(), id.clone()), uid);
        }
        Ok((Subjects { uids, new }, SubjectNumbers(numbers)))
    }

    /// (state, occurred_at, seq) of the `consent_states` rows the entries
    /// set, before this batch; subjects created by this batch have none.
    fn current_states(
        &self,
        ledger: &[(&LedgerEntry, Option<&str>)],
        numbers: &TenantNumbers,
        subjects: &SubjectNumbers,
        terms: &Terms,
        new: &std::collections::HashSet<String>,
    ) -> Result<HashMap<StateKey, (ConsentState, Micros, u64)>> {
        let keys: BTreeSet<StateKey> = ledger
            .iter()
            .filter(|(e, _)| !new.contains(&e.body.subject_uid))
            .map(|(e, _)| state_key(e))
            .collect();
        let mut current = HashMap::new();
        if keys.is_empty() {
            return Ok(current);
        }
        let mut stmt = self.prepare(
            "SELECT COALESCE((SELECT term FROM terms WHERE no = c.state), c.state),
                 c.occurred_at, c.seq
             FROM consent_state_rows c
             WHERE c.tenant_no = ? AND c.subject_no = ? AND c.purpose = ? AND c.channel = ?",
        )?;
        for key in keys {
            let mut found = None;
            let (t, u, p, c) = &key;
            stmt.query(
                &[
                    Param::Int(numbers.of(t)?),
                    Param::Int(subjects.of(u)?),
                    Param::Int(terms.of(p)?),
                    Param::Int(terms.of(c)?),
                ],
                |r| {
                    let state =
                        ConsentState::parse(&r.text(0)).unwrap_or(ConsentState::Unspecified);
                    found = Some((state, r.int(1), r.int(2) as u64));
                    Ok(())
                },
            )?;
            if let Some(found) = found {
                current.insert(key, found);
            }
        }
        Ok(current)
    }
}

/// Tenant id → its number (`tenant_numbers.no`), for the tenants of a batch.
struct TenantNumbers(HashMap<String, i64>);

impl TenantNumbers {
    fn of(&self, tenant: &str) -> Result<i64> {
        self.0
            .get(tenant)
            .copied()
            .ok_or_else(|| StoreError::Unavailable(format!("no tenant {tenant} is stored")))
    }
}

/// Term → its number (`terms.no`), for the terms of a batch's rows.
struct Terms(HashMap<String, i64>);

impl Terms {
    fn of(&self, term: &str) -> Result<i64> {
        self.0
            .get(term)
            .copied()
            .ok_or_else(|| StoreError::Unavailable(format!("no term {term:?} in the batch")))
    }
}

/// Subject uid → its number (`subjects.no`), for the subjects of a batch.
struct SubjectNumbers(HashMap<String, i64>);

impl SubjectNumbers {
    fn of(&self, uid: &str) -> Result<i64> {
        self.0
            .get(uid)
            .copied()
            .ok_or_else(|| StoreError::Unavailable(format!("no subject {uid} in the batch")))
    }
}

/// While alive, the connection's commits write the number of frames they
/// leave in the WAL to a counter (SQLite's WAL hook, which is also how it
/// checkpoints by itself; that is off on the writer's connection).
struct WalHook<'d>(&'d Db);

impl<'d> WalHook<'d> {
    fn count(db: &'d Db, frames: &'d mut c_int) -> Self {
        unsafe extern "C" fn hook(
            counter: *mut std::ffi::c_void,
            _: *mut ffi::sqlite3,
            _: *const std::ffi::c_char,
            frames: c_int,
        ) -> c_int {
            // SAFETY: `counter` is the `frames` borrowed for the hook's life.
            unsafe { *counter.cast::<c_int>() = frames };
            ffi::SQLITE_OK
        }
        // SAFETY: an open handle; `frames` outlives the hook, which `drop`
        // removes before the borrow ends.
        unsafe {
            ffi::sqlite3_wal_hook(db.raw(), Some(hook), (frames as *mut c_int).cast());
        }
        WalHook(db)
    }
}

impl Drop for WalHook<'_> {
    fn drop(&mut self) {
        // SAFETY: an open handle; no hook from here on.
        unsafe {
            ffi::sqlite3_wal_hook(self.0.raw(), None, std::ptr::null_mut());
        }
    }
}

/// A prepared statement, finalized when dropped.
struct Stmt<'d> {
    db: &'d Db,
    raw: *mut ffi::sqlite3_stmt,
    params: usize,
}

impl Stmt<'_> {
    /// Bind every parameter. Values are bound `SQLITE_STATIC`: SQLite reads
    /// them in place during the following step, which the callers make
    /// before `params` goes out of scope; every step rebinds all of them.
    fn bind(&mut self, params: &[Param<'_>]) -> Result<()> {
        if params.len() != self.params {
            return Err(StoreError::Unavailable(format!(
                "{} values for {} parameters",
                params.len(),
                self.params
            )));
        }
        for (i, p) in params.iter().enumerate() {
            let i = i as c_int + 1;
            // SAFETY: a live statement; text and blobs outlive the step.
            let rc = unsafe {
                match *p {
                    Param::Null => ffi::sqlite3_bind_null(self.raw, i),
                    Param::Int(v) => ffi::sqlite3_bind_int64(self.raw, i, v),
                    Param::Text(s) => ffi::sqlite3_bind_text(
                        self.raw,
                        i,
                        s.as_ptr().cast(),
                        c_int::try_from(s.len()).unwrap_or(c_int::MAX),
                        ffi::SQLITE_STATIC(),
                    ),
                    Param::Blob(b) => ffi::sqlite3_bind_blob(
                        self.raw,
                        i,
                        b.as_ptr().cast(),
                        c_int::try_from(b.len()).unwrap_or(c_int::MAX),
                        ffi::SQLITE_STATIC(),
                    ),
                }
            };
            if rc != ffi::SQLITE_OK {
                return Err(self.db.error());
            }
        }
        Ok(())
    }

    /// Run with `params`, each returned row to `each`.
    fn query(
        &mut self,
        params: &[Param<'_>],
        mut each: impl FnMut(&Columns) -> Result<()>,
    ) -> Result<()> {
        self.bind(params)?;
        let result = loop {
            // SAFETY: a live statement with every parameter bound.
            match unsafe { ffi::sqlite3_step(self.raw) } {
                ffi::SQLITE_ROW => {
                    if let Err(e) = each(&Columns(self.raw)) {
                        break Err(e);
                    }
                }
                ffi::SQLITE_DONE => break Ok(()),
                _ => break Err(self.db.error()),
            }
        };
        // SAFETY: as above. The reset's code repeats the step's error.
        unsafe { ffi::sqlite3_reset(self.raw) };
        result
    }

    /// Run with `params`, for its effect.
    fn run(&mut self, params: &[Param<'_>]) -> Result<()> {
        self.query(params, |_| Ok(()))
    }
}

impl Drop for Stmt<'_> {
    fn drop(&mut self) {
        // SAFETY: finalized once, here.
        unsafe { ffi::sqlite3_finalize(self.raw) };
    }
}

/// The current row of a statement.
struct Columns(*mut ffi::sqlite3_stmt);

impl Columns {
    fn int(&self, i: c_int) -> i64 {
        // SAFETY: the statement is on a row; `i` is one of its columns.
        unsafe { ffi::sqlite3_column_int64(self.0, i) }
    }

    fn text(&self, i: c_int) -> String {
        // SAFETY: as above; the text is copied before the next step.
        unsafe {
            let p = ffi::sqlite3_column_text(self.0, i);
            if p.is_null() {
                return String::new();
            }
            let n = ffi::sqlite3_column_bytes(self.0, i) as usize;
            String::from_utf8_lossy(std::slice::from_raw_parts(p, n)).into_owned()
        }
    }
}
