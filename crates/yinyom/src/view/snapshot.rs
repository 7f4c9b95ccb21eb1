//! The decision view saved to a file, so that a node starts in seconds: it
//! loads the file (the compact records as they are, ~45 bytes a record)
//! and then applies the ledger entries written after the file's cursor,
//! instead of reading every current-state row through SQL.
//!
//! The fold is idempotent and order-free (per key the greatest
//! `(occurred_at, seq)` wins), so applying again an entry the file already
//! reflects changes nothing: what matters is that every entry up to the
//! cursor is in the file. The cursor is the tenant's watermark: every seq
//! up to it has been applied to the view.
//!
//! The file is encrypted under a key derived from the master key in 1 MiB
//! chunks (AES-256-GCM, each chunk bound to the store, its position and
//! whether it is the last), since subject ids can be personal data; it is
//! written to a temporary file, synced and renamed, and belongs to one
//! database (a file from another store, or one ahead of the ledger, is
//! ignored). Subjects marked erased are not written.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::Ordering;

use yinyom_core::consent::NoticeVersion;

use super::compact::Subjects;
use super::{TenantView, View};
use crate::vault::MasterKey;

const MAGIC: &[u8; 8] = b"YYVIEW02";
const CHUNK: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the snapshot does not open with this master key, or is damaged")]
    Damaged,
    #[error("the snapshot belongs to another store")]
    OtherStore,
}

fn chunk_name(store_id: &str, index: u64, last: bool) -> String {
    format!("yinyom view snapshot {store_id} chunk {index} last {last}")
}

struct Sealed<'a, W: Write> {
    out: W,
    key: &'a MasterKey,
    store_id: &'a str,
    buf: Vec<u8>,
    index: u64,
}

impl<W: Write> Sealed<'_, W> {
    fn flush_chunk(&mut self, last: bool) -> std::io::Result<()> {
        let name = chunk_name(self.store_id, self.index, last);
        let sealed = self.key.seal_secret(&name, &self.buf);
        self.out.write_all(&(sealed.len() as u32).to_le_bytes())?;
        self.out.write_all(&sealed)?;
        self.buf.clear();
        self.index += 1;
        Ok(())
    }

    fn put(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            self.flush_chunk(false)?;
        }
        Ok(())
    }

    fn u64(&mut self, v: u64) -> std::io::Result<()> {
        self.put(&v.to_le_bytes())
    }

    fn str(&mut self, s: &str) -> std::io::Result<()> {
        self.u64(s.len() as u64)?;
        self.put(s.as_bytes())
    }
}

struct Opened<'a, R: Read> {
    input: R,
    key: &'a MasterKey,
    store_id: &'a str,
    buf: Vec<u8>,
    at: usize,
    index: u64,
    last: bool,
}

impl<R: Read> Opened<'_, R> {
    fn next_chunk(&mut self) -> Result<(), SnapshotError> {
        if self.last {
            return Err(SnapshotError::Damaged);
        }
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len)?;
        let mut sealed = vec![0u8; u32::from_le_bytes(len) as usize];
        self.input.read_exact(&mut sealed)?;
        for last in [false, true] {
            let name = chunk_name(self.store_id, self.index, last);
            if let Ok(plain) = self.key.open_secret(&name, &sealed) {
                self.buf = plain;
                self.at = 0;
                self.index += 1;
                self.last = last;
                return Ok(());
            }
        }
        Err(if self.index == 0 {
            SnapshotError::OtherStore
        } else {
            SnapshotError::Damaged
        })
    }

    fn take(&mut self, n: usize) -> Result<Vec<u8>, SnapshotError> {
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            if self.at == self.buf.len() {
                self.next_chunk()?;
            }
            let k = (n - out.len()).min(self.buf.len() - self.at);
            out.extend_from_slice(&self.buf[self.at..self.at + k]);
            self.at += k;
        }
        Ok(out)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        if self.buf.len() - self.at >= 8 {
            let v = u64::from_le_bytes(self.buf[self.at..self.at + 8].try_into().unwrap_or([0; 8]));
            self.at += 8;
            return Ok(v);
        }
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn len(&mut self, limit: u64) -> Result<usize, SnapshotError> {
        let n = self.u64()?;
        if n > limit {
            return Err(SnapshotError::Damaged);
        }
        Ok(n as usize)
    }

    fn str(&mut self) -> Result<String, SnapshotError> {
        let n = self.len(1 << 16)?;
        String::from_utf8(self.take(n)?).map_err(|_| SnapshotError::Damaged)
    }

    /// Whether everything was read, through the last chunk.
    fn finished(&mut self) -> bool {
        self.at == self.buf.len() && self.last
    }
}

/// Write every full tenant of `view` (a bounded view holds only some
/// subjects: it is not saved). Returns the subjects written.
pub fn write(
    view: &View,
    path: &Path,
    key: &MasterKey,
    store_id: &str,
) -> Result<u64, SnapshotError> {
    if view.bounded() {
        return Ok(0);
    }
    let tmp = path.with_extension("tmp");
    let file = std::fs::File::create(&tmp)?;
    let mut w = Sealed {
        out: std::io::BufWriter::new(file),
        key,
        store_id,
        buf: Vec::with_capacity(CHUNK + 4096),
        index: 0,
    };
    w.put(MAGIC)?;
    let tenants = view.all_tenants();
    w.u64(tenants.len() as u64)?;
    let mut written = 0;
    for tv in tenants {
        let tv = tv.read().unwrap_or_else(|e| e.into_inner());
        written += write_tenant(&mut w, &tv)?;
    }
    w.flush_chunk(true)?;
    let file = w.out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(written)
}

fn write_tenant<W: Write>(w: &mut Sealed<'_, W>, tv: &TenantView) -> Result<u64, SnapshotError> {
    w.str(&tv.tenant.id)?;
    w.u64(tv.watermark.low)?;
    w.u64(tv.purpose_keys.len() as u64)?;
    for p in &tv.purpose_keys {
        w.str(p)?;
    }
    w.u64(tv.provenances.len() as u64)?;
    for p in &tv.provenances {
        w.str(&p.source)?;
        match &p.notice {
            Some((k, v)) => {
                w.u64(1)?;
                w.str(k)?;
                w.u64(u64::from(*v))?;
            }
            None => w.u64(0)?,
        }
    }
    // How many follow, at most (for the reader to size its table once).
    w.u64(tv.subjects.len() as u64)?;
    let mut n = 0;
    for (id, words) in tv.subjects.raw() {
        if tv.stored_flags(&id).is_some_and(|f| f.erased) {
            continue;
        }
        w.u64(words.len() as u64)?;
        for word in words {
            w.u64(word)?;
        }
        n += 1;
    }
    w.u64(u64::MAX)?;
    Ok(n)
}

/// Load a snapshot into `view` (whose tenants and registries are loaded):
/// per tenant found in both, its subjects; returns each such tenant's
/// cursor. `heads` are the ledger's current heads: a snapshot ahead of
/// them (a database restored from an older backup) is not used.
pub fn load(
    view: &View,
    path: &Path,
    key: &MasterKey,
    store_id: &str,
    heads: &HashMap<String, u64>,
) -> Result<HashMap<String, u64>, SnapshotError> {
    let file = std::fs::File::open(path)?;
    let mut r = Opened {
        input: std::io::BufReader::with_capacity(CHUNK, file),
        key,
        store_id,
        buf: Vec::new(),
        at: 0,
        index: 0,
        last: false,
    };
    if r.take(MAGIC.len())? != MAGIC {
        return Err(SnapshotError::Damaged);
    }
    // Read everything into staged tables first: a damaged file changes
    // no tenant's subjects.
    let mut staged = Vec::new();
    for _ in 0..r.len(1 << 20)? {
        let id = r.str()?;
        let cursor = r.u64()?;
        let purposes: Vec<String> = (0..r.len(1 << 16)?)
            .map(|_| r.str())
            .collect::<Result<_, _>>()?;
        let mut provenances = Vec::new();
        for _ in 0..r.len(1 << 32)? {
            let source = r.str()?;
            let notice = match r.u64()? {
                0 => None,
                _ => {
                    let k = r.str()?;
                    let v = u32::try_from(r.u64()?).map_err(|_| SnapshotError::Damaged)?;
                    Some(NoticeVersion {
                        key: k.as_str().into(),
                        version: v,
                    })
                }
            };
            provenances.push((source, notice));
        }
        // The ids this view gives the file's purposes and provenances.
        let usable = heads.get(&id).copied().unwrap_or(0) >= cursor;
        let remap = view
            .write(&id, |tv| {
                let purposes: Vec<u16> = purposes.iter().map(|p| tv.purpose_id(p)).collect();
                let provenances: Vec<u32> = provenances
                    .iter()
                    .map(|(source, notice)| tv.provenance_id(source, notice.as_ref()))
                    .collect();
                (purposes, provenances)
            })
            .filter(|_| usable);
        let mut subjects = Subjects::default();
        let hint = r.u64()?;
        if remap.is_some() {
            subjects.reserve(hint.min(1 << 30) as usize);
        }
        let mut records = 0u64;
        let mut words = Vec::new();
        loop {
            let n = r.u64()?;
            if n == u64::MAX {
                break;
            }
            if n == 0 || n > 1 << 20 {
                return Err(SnapshotError::Damaged);
            }
            words.clear();
            for _ in 0..n {
                words.push(r.u64()?);
            }
            if let Some((purposes, provenances)) = &remap {
                let n = subjects
                    .insert_raw(&words, purposes, provenances)
                    .ok_or(SnapshotError::Damaged)?;
                records += n as u64;
            }
        }
        if remap.is_some() {
            staged.push((id, cursor, subjects, records));
        }
    }
    if !r.finished() {
        return Err(SnapshotError::Damaged);
    }
    let mut cursors = HashMap::new();
    for (id, cursor, subjects, records) in staged {
        view.write(&id, |tv| {
            tv.subjects = subjects;
            tv.watermark.reset(cursor);
        });
        view.progress.records.fetch_add(records, Ordering::Relaxed);
        cursors.insert(id, cursor);
    }
    Ok(cursors)
}
