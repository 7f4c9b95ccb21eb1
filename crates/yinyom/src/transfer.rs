//! Import and export of consent records as CSV or JSON Lines.
//!
//! An import row is one choice a subject made: `subject`, `purpose`,
//! optional `channel`, `state` (granted/denied/withdrawn/expired) or
//! `action` (grant/deny/withdraw/expire), `occurred_at` (RFC 3339, when the
//! choice was made), `source` (defaults to `import`), optional
//! `notice_key` + `notice_version`, optional `evidence` (a JSON object).
//! Every row passes the same checks as `POST /v1/consents`; rows that fail
//! are reported by line number and the others are kept. Rows are committed
//! in large batches through the same ledger write as the API.
//!
//! Records of erased subjects are exported with state `erased` under the
//! subject's pseudonym, never as granted. An import skips such rows, and
//! refuses rows naming a subject erased here (by its old id: the view finds
//! it by its pseudonym); both are reported by line.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use yinyom_core::consent::{Action, ConsentState};
use yinyom_core::purpose::Channel;
use yinyom_core::time;

use crate::cli::Format;
use crate::record::{self, ActionRequest, ConsentRequest, NoticeSelector, Origin, Rejected};
use crate::services::load_view;
use crate::store::{ItemOutcome, Store, WriteItem};

/// Rows per committed transaction: large enough that the commit's fsync
/// and WAL checkpoint are spread over many rows (an import has no one
/// waiting for a response), small enough to keep a batch in tens of MB.
const BATCH: usize = 20_000;

/// Rows parsed and handed on to be checked at a time.
const CHUNK: usize = 1_024;

pub fn guess_format(path: &Path) -> Option<Format> {
    match path.extension()?.to_str()? {
        "csv" => Some(Format::Csv),
        "jsonl" | "ndjson" => Some(Format::Jsonl),
        _ => None,
    }
}

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct Row {
    pub subject: String,
    pub purpose: String,
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub state: Option<String>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub occurred_at: Option<String>,
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub notice_key: Option<String>,
    #[serde(default)]
    pub notice_version: Option<u32>,
    /// Exported for reference; an import derives it from the purpose's validity.
    #[serde(default)]
    pub expires_at: Option<String>,
}

#[derive(Debug, Default)]
pub struct ImportReport {
    pub imported: usize,
    /// (line number, reason)
    pub rejected: Vec<(usize, String)>,
}

fn invalid(field: &str, detail: impl Into<String>) -> Rejected {
    Rejected {
        kind: "validation",
        field: field.into(),
        detail: detail.into(),
    }
}

fn to_request(row: Row, evidence: Option<serde_json::Value>) -> Result<ConsentRequest, Rejected> {
    let action = match (row.action.as_deref(), row.state.as_deref()) {
        (Some(a), _) if !a.is_empty() => {
            Action::parse(a).ok_or_else(|| invalid("action", format!("unknown action {a:?}")))?
        }
        (_, Some(s)) if !s.is_empty() => match ConsentState::parse(s) {
            None => return Err(invalid("state", format!("unknown state {s:?}"))),
            Some(ConsentState::Erased) => {
                return Err(invalid(
                    "state",
                    "skipped: the subject was erased, and an import never revives an erased subject",
                ));
            }
            Some(state) => state
                .action()
                .ok_or_else(|| invalid("state", "an unspecified state records nothing"))?,
        },
        _ => return Err(invalid("state", "each row needs a state or an action")),
    };
    let channel = match row.channel.as_deref() {
        None | Some("") => None,
        Some(c) => Some(
            Channel::parse(c)
                .ok_or_else(|| invalid("channel", format!("unknown channel {c:?}")))?,
        ),
    };
    let occurred_at = row
        .occurred_at
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("occurred_at", "each row needs the time the choice was made"))?;
    let notice = match (row.notice_key.filter(|k| !k.is_empty()), row.notice_version) {
        (Some(key), Some(version)) => Some(NoticeSelector { key, version }),
        (None, None) => None,
        _ => {
            return Err(invalid(
                "notice_version",
                "notice_key and notice_version go together",
            ));
        }
    };
    Ok(ConsentRequest {
        subject: row.subject,
        notice,
        source: row
            .source
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "import".into()),
        evidence,
        occurred_at: Some(occurred_at),
        actions: vec![ActionRequest {
            purpose: row.purpose,
            channel,
            action,
        }],
    })
}

/// The consent requests an import file holds, by line (what `import`
/// reads before it checks each against the registry; for fuzzing).
pub fn parse(format: Format, input: Vec<u8>) -> Vec<(usize, Result<ConsentRequest, String>)> {
    rows(format, Box::new(std::io::Cursor::new(input)))
        .map(|(line, _, r)| (line, r))
        .collect()
}

/// Parse rows one by one: `(line number, bytes read so far, row or error)`.
fn rows(
    format: Format,
    input: Box<dyn Read>,
) -> Box<dyn Iterator<Item = (usize, u64, Result<ConsentRequest, String>)>> {
    match format {
        Format::Csv => {
            let lines = LineIndex::default();
            let input = CountingReader {
                inner: input,
                offset: 0,
                lines: lines.clone(),
            };
            let mut reader = csv::ReaderBuilder::new().flexible(false).from_reader(input);
            let headers = match reader.headers() {
                Ok(h) => h.clone(),
                Err(e) => {
                    return Box::new(std::iter::once((
                        1,
                        0,
                        Err(format!("unreadable header: {e}")),
                    )));
                }
            };
            let mut record = csv::StringRecord::new();
            let mut evidence = EvidenceColumn::new(&headers);
            Box::new(std::iter::from_fn(move || {
                match reader.read_record(&mut record) {
                    Ok(false) => None,
                    Ok(true) => {
                        let line = record
                            .position()
                            .map(|p| lines.line_of(p.byte()))
                            .unwrap_or(0);
                        let bytes = reader.position().byte();
                        let parsed = record
                            .deserialize::<Row>(Some(&headers))
                            .map_err(|e| e.to_string())
                            .and_then(|row| {
                                let evidence = evidence.of(&record)?;
                                to_request(row, evidence)
                                    .map_err(|r| format!("{}: {}", r.field, r.detail))
                            });
                        Some((line, bytes, parsed))
                    }
                    Err(e) => {
                        let line = e.position().map(|p| lines.line_of(p.byte())).unwrap_or(0);
                        let bytes = reader.position().byte();
                        Some((line, bytes, Err(e.to_string())))
                    }
                }
            }))
        }
        Format::Jsonl => {
            let mut reader = BufReader::new(input);
            let mut line_no = 0;
            let mut bytes = 0u64;
            let mut buf = Vec::new();
            Box::new(std::iter::from_fn(move || {
                loop {
                    buf.clear();
                    let n = match reader.read_until(b'\n', &mut buf) {
                        Ok(0) => return None,
                        Ok(n) => n,
                        Err(e) => {
                            line_no += 1;
                            return Some((line_no, bytes, Err(e.to_string())));
                        }
                    };
                    line_no += 1;
                    bytes += n as u64;
                    if buf.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let parsed = serde_json::from_slice::<serde_json::Value>(&buf)
                        .map_err(|e| format!("not valid JSON: {e}"))
                        .and_then(|mut v| {
                            let evidence = v.as_object_mut().and_then(|o| o.remove("evidence"));
                            let row: Row = serde_json::from_value(v).map_err(|e| e.to_string())?;
                            to_request(row, evidence.filter(|e| !e.is_null()))
                                .map_err(|r| format!("{}: {}", r.field, r.detail))
                        });
                    return Some((line_no, bytes, parsed));
                }
            }))
        }
    }
}

/// Line numbers of byte offsets, counted as the bytes stream past (the csv
/// crate's own line count is off by one for CRLF files, which is what CRMs
/// and spreadsheets export). Offsets are asked for in increasing order, so
/// newline positions already passed are dropped.
#[derive(Clone, Default)]
struct LineIndex(std::rc::Rc<std::cell::RefCell<LineState>>);

#[derive(Default)]
struct LineState {
    newlines: std::collections::VecDeque<u64>,
    passed: usize,
}

impl LineIndex {
    /// 1-based line of a record starting at `offset`. A newline *at* the
    /// offset counts as passed: after a CR the csv reader starts the next
    /// record on the LF.
    fn line_of(&self, offset: u64) -> usize {
        let mut s = self.0.borrow_mut();
        while s.newlines.front().is_some_and(|&n| n <= offset) {
            s.newlines.pop_front();
            s.passed += 1;
        }
        s.passed + 1
    }
}

struct CountingReader {
    inner: Box<dyn Read>,
    offset: u64,
    lines: LineIndex,
}

impl Read for CountingReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut s = self.lines.0.borrow_mut();
        for (i, b) in buf[..n].iter().enumerate() {
            if *b == b'\n' {
                s.newlines.push_back(self.offset + i as u64);
            }
        }
        self.offset += n as u64;
        Ok(n)
    }
}

/// The `evidence` column of a CSV file. A CRM export repeats a few values
/// (the campaign form a row came from) over millions of rows: the values
/// met recently are kept parsed, up to [`EvidenceColumn::KEPT`] of them.
struct EvidenceColumn {
    column: Option<usize>,
    parsed: std::collections::HashMap<String, serde_json::Value>,
}

impl EvidenceColumn {
    const KEPT: usize = 256;

    fn new(headers: &csv::StringRecord) -> Self {
        EvidenceColumn {
            column: headers.iter().position(|h| h == "evidence"),
            parsed: std::collections::HashMap::new(),
        }
    }

    fn of(&mut self, record: &csv::StringRecord) -> Result<Option<serde_json::Value>, String> {
        let text = match self.column.and_then(|i| record.get(i)) {
            None | Some("") => return Ok(None),
            Some(text) => text,
        };
        if let Some(v) = self.parsed.get(text) {
            return Ok(Some(v.clone()));
        }
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| format!("evidence: not valid JSON: {e}"))?;
        if self.parsed.len() >= Self::KEPT {
            self.parsed.clear();
        }
        self.parsed.insert(text.to_string(), v.clone());
        Ok(Some(v))
    }
}

/// Import `file` into `tenant`.
pub async fn import(
    store: Arc<dyn Store>,
    tenant: &str,
    file: &Path,
    format: Format,
    progress: bool,
    master: Option<crate::vault::MasterKey>,
) -> Result<ImportReport, Box<dyn std::error::Error>> {
    let input = std::fs::File::open(file)?;
    let len = input.metadata()?.len();
    let bar = if progress {
        ProgressBar::new(len)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
        )
        .expect("the template is valid"),
    );
    let view = Arc::new(load_view(store.as_ref()).await?);
    if view.read(tenant, |tv| tv.has_erased()).unwrap_or(false) {
        let master = master.ok_or(
            "the tenant has erased subjects: give the master key (YINYOM_MASTER_KEY or \
             --master-key-file) so that the import can refuse their old ids",
        )?;
        let vault = crate::vault::Vault::new(master);
        crate::services::arm_pseudonyms(&view, &vault, store.as_ref(), tenant).await?;
    }
    // Three stages, each overlapping the others: this task reads and
    // parses rows; a thread checks them against the registry
    // (`record::prepare`) and gathers batches; a task commits them. The
    // channels' small capacities bound memory.
    let (batches, mut queue) = tokio::sync::mpsc::channel::<Vec<WriteItem>>(1);
    let committer = tokio::spawn({
        let (store, bar) = (store.clone(), bar.clone());
        async move {
            let started = std::time::Instant::now();
            let mut imported = 0;
            // Where the store commits batches of different ledger
            // partitions at once (PostgreSQL's write lanes), each batch is
            // split into lanes committed together; a subject is always in
            // the same lane, so its rows stay in order.
            let lanes = store.write_lanes().max(1);
            while let Some(batch) = queue.recv().await {
                // An import has no one waiting for a response.
                let seal = |_: &WriteItem, _: &[_]| serde_json::Value::Null;
                let outcomes = if lanes == 1 {
                    store.commit(&batch, &seal).await?
                } else {
                    let mut parts: Vec<Vec<WriteItem>> = (0..lanes).map(|_| Vec::new()).collect();
                    for item in batch {
                        parts[store.lane_of(&item, lanes).min(lanes - 1)].push(item);
                    }
                    let commits = parts
                        .iter()
                        .filter(|p| !p.is_empty())
                        .map(|p| store.commit(p, &seal));
                    futures_util::future::try_join_all(commits)
                        .await?
                        .into_iter()
                        .flatten()
                        .collect()
                };
                imported += outcomes
                    .iter()
                    .filter(|o| matches!(o, ItemOutcome::Written { .. }))
                    .count();
                let rate = imported as f64 / started.elapsed().as_secs_f64().max(1e-3);
                bar.set_message(format!("{imported} imported, {rate:.0} records/s"));
            }
            Ok::<usize, crate::store::StoreError>(imported)
        }
    });
    type Parsed = Vec<(usize, Result<ConsentRequest, String>)>;
    let (parsed, mut checking) = tokio::sync::mpsc::channel::<Parsed>(4);
    let checker = tokio::task::spawn_blocking({
        let (bar, tenant) = (bar.clone(), tenant.to_string());
        move || {
            let now = time::now();
            let mut rejected = Vec::new();
            let mut batch: Vec<WriteItem> = Vec::with_capacity(BATCH);
            while let Some(rows) = checking.blocking_recv() {
                for (line, parsed) in rows {
                    let item = parsed.and_then(|req| {
                        view.read(&tenant, |tv| {
                            record::prepare(tv, req, "import", Origin::Import, None, now)
                        })
                        .ok_or_else(|| "unknown tenant".to_string())?
                        .map_err(|r| format!("{}: {}", r.field, r.detail))
                    });
                    match item {
                        Ok(item) => batch.push(item),
                        Err(reason) => {
                            bar.suspend(|| eprintln!("line {line}: {reason}"));
                            rejected.push((line, reason));
                        }
                    }
                    if batch.len() >= BATCH
                        && batches.blocking_send(std::mem::take(&mut batch)).is_err()
                    {
                        return rejected; // the committer failed; its error is reported
                    }
                }
            }
            if !batch.is_empty() {
                let _ = batches.blocking_send(batch);
            }
            rejected
        }
    });
    let mut chunk: Parsed = Vec::with_capacity(CHUNK);
    for (line, bytes, row) in rows(format, Box::new(input)) {
        bar.set_position(bytes);
        chunk.push((line, row));
        if chunk.len() >= CHUNK && parsed.send(std::mem::take(&mut chunk)).await.is_err() {
            break; // the checker stopped: the committer failed
        }
    }
    if !chunk.is_empty() {
        let _ = parsed.send(chunk).await;
    }
    drop(parsed);
    let rejected = checker.await?;
    let imported = committer.await??;
    // The import's pages are copied from the write-ahead log into the
    // database file and the log emptied (SQLite): the data directory then
    // holds the data once, as after a clean shutdown. It is all committed
    // already; a failure here costs only the log's disk space.
    if let Err(e) = store.truncate_wal().await {
        tracing::warn!("after the import, the write-ahead log was not truncated: {e}");
    }
    bar.finish_and_clear();
    Ok(ImportReport { imported, rejected })
}

#[derive(Serialize)]
struct HistoryRow {
    subject: Option<String>,
    seq: u64,
    /// The hash chain (partition) the entry is in, and its position there.
    partition: u32,
    pseq: u64,
    purpose: String,
    channel: Option<&'static str>,
    action: &'static str,
    occurred_at: String,
    recorded_at: String,
    source: String,
    actor: String,
    notice_key: Option<String>,
    notice_version: Option<u32>,
    notice_hash: Option<String>,
    expires_at: Option<String>,
    receipt: Option<String>,
    hash: String,
    prev_hash: String,
}

/// Write the tenant's records; returns how many.
pub async fn export(
    store: &dyn Store,
    tenant: &str,
    format: Format,
    history: bool,
    out: Box<dyn Write>,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut sink = Sink::new(format, out);
    let mut n = 0;
    if history {
        for (subject, e) in store.ledger(tenant).await? {
            let b = e.body;
            sink.write(&HistoryRow {
                subject,
                seq: e.seq,
                partition: e.partition,
                pseq: e.pseq,
                purpose: b.purpose,
                channel: b.channel.map(Channel::as_str),
                action: b.action.as_str(),
                occurred_at: time::rfc3339(b.occurred_at),
                recorded_at: time::rfc3339(b.recorded_at),
                source: b.source,
                actor: b.actor,
                notice_key: b.notice.as_ref().map(|n| n.key.clone()),
                notice_version: b.notice.as_ref().map(|n| n.version),
                notice_hash: b.notice.map(|n| n.hash),
                expires_at: b.expires_at.map(time::rfc3339),
                receipt: b.receipt,
                hash: e.hash,
                prev_hash: e.prev_hash,
            })?;
            n += 1;
        }
    } else {
        // Page by page, by subject.
        let mut after = String::new();
        loop {
            let page = store.states_page(tenant, &after, 10_000).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            for s in page {
                let mut records = s.records;
                records.sort_by(|a, b| (&a.purpose, a.channel).cmp(&(&b.purpose, b.channel)));
                for r in records {
                    sink.write(&Row {
                        subject: s.id.clone(),
                        purpose: r.purpose.to_string(),
                        channel: r.channel.map(|c| c.as_str().to_string()),
                        state: Some(r.state.as_str().to_string()),
                        action: None,
                        occurred_at: Some(time::rfc3339(r.occurred_at)),
                        source: Some(r.source.to_string()),
                        notice_key: r.notice.as_ref().map(|n| n.key.to_string()),
                        notice_version: r.notice.map(|n| n.version),
                        expires_at: r.expires_at.map(time::rfc3339),
                    })?;
                    n += 1;
                }
            }
        }
    }
    sink.finish()?;
    Ok(n)
}

enum Sink {
    Csv(Box<csv::Writer<Box<dyn Write>>>),
    Jsonl(Box<dyn Write>),
}

impl Sink {
    fn new(format: Format, out: Box<dyn Write>) -> Self {
        match format {
            Format::Csv => Sink::Csv(Box::new(csv::Writer::from_writer(out))),
            Format::Jsonl => Sink::Jsonl(out),
        }
    }

    fn write<T: Serialize>(&mut self, row: &T) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Sink::Csv(w) => w.serialize(row)?,
            Sink::Jsonl(w) => {
                serde_json::to_writer(&mut *w, row)?;
                w.write_all(b"\n")?;
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<(), Box<dyn std::error::Error>> {
        match self {
            Sink::Csv(mut w) => w.flush()?,
            Sink::Jsonl(mut w) => w.flush()?,
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Repeated evidence is parsed once and kept, yet every row gets its
    /// own value; a bad value is refused even right after good ones, and
    /// more distinct values than are kept still each come out right.
    #[test]
    fn every_row_gets_its_own_evidence() {
        let mut csv = String::from("subject,purpose,state,occurred_at,evidence\n");
        let value = |i: usize| format!("{{\"form\":\"campaign-{}\"}}", i % 300);
        for i in 0..1_000 {
            let v = value(i).replace('"', "\"\"");
            csv.push_str(&format!("s{i},p,granted,2024-01-01T00:00:00Z,\"{v}\"\n"));
        }
        csv.push_str("bad,p,granted,2024-01-01T00:00:00Z,{oops\n");
        csv.push_str("none,p,granted,2024-01-01T00:00:00Z,\n");
        let rows = parse(Format::Csv, csv.into_bytes());
        assert_eq!(rows.len(), 1_002);
        for (i, (line, row)) in rows.iter().take(1_000).enumerate() {
            assert_eq!(*line, i + 2);
            let req = row.as_ref().expect("a valid row");
            let want: serde_json::Value = serde_json::from_str(&value(i)).unwrap();
            assert_eq!(req.evidence.as_ref(), Some(&want), "row {i}");
        }
        let bad = rows[1_000].1.as_ref().expect_err("bad evidence");
        assert!(bad.contains("evidence: not valid JSON"), "{bad}");
        assert_eq!(rows[1_001].1.as_ref().unwrap().evidence, None);
    }
}
