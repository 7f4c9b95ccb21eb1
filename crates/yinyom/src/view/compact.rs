//! Subjects' consent records in a compact form: one heap allocation per
//! subject holding its id and its records, four machine words a record, in
//! a hash table keyed by the subject id (no `String`, no map entry per
//! record). At 5 records a subject this is about 45 bytes a record in all.
//!
//! Layout of a subject's words: `[header, id words…, records…]`. The header
//! holds the id's length (bits 0–15), the number of records (bits 16–31)
//! and a "used since the last eviction sweep" bit (bit 63) for the bounded
//! mode. The id's bytes follow, eight to a word, zero-padded. A record is
//! `[seq, occurred_at, expires_at, provenance | purpose | channel | bits]`
//! where provenance (source and notice) and purpose are small ids interned
//! per tenant. Words are atomics so that a reader (under the view's read
//! lock) can mark the subject used; everything else is written under the
//! write lock.

use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use hashbrown::{DefaultHashBuilder, HashTable};
use yinyom_core::consent::{Choice, ConsentState};
use yinyom_core::purpose::Channel;
use yinyom_core::time::Micros;

const USED: u64 = 1 << 63;
const NO_EXPIRY: i64 = i64::MIN;
/// Every record of one purpose: a purpose-wide one and one per channel.
pub const MAX_PER_PURPOSE: usize = 1 + Channel::ALL.len();

/// One record, decoded from its four words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rec {
    pub seq: u64,
    pub occurred_at: Micros,
    pub expires_at: Option<Micros>,
    /// Interned (source, notice) of the tenant.
    pub provenance: u32,
    /// Interned purpose key of the tenant.
    pub purpose: u16,
    pub channel: Option<Channel>,
    pub state: ConsentState,
    pub guardian: bool,
}

const STATES: [ConsentState; 6] = [
    ConsentState::Unspecified,
    ConsentState::Granted,
    ConsentState::Denied,
    ConsentState::Withdrawn,
    ConsentState::Expired,
    ConsentState::Erased,
];

impl Rec {
    fn encode(&self) -> [u64; 4] {
        let channel = self
            .channel
            .and_then(|c| Channel::ALL.iter().position(|&x| x == c))
            .map_or(0, |i| i as u64 + 1);
        let state = STATES.iter().position(|&s| s == self.state).unwrap_or(0) as u64;
        let bits = state | (u64::from(self.guardian) << 3);
        [
            self.seq,
            self.occurred_at as u64,
            self.expires_at.unwrap_or(NO_EXPIRY) as u64,
            u64::from(self.provenance)
                | (u64::from(self.purpose) << 32)
                | (channel << 48)
                | (bits << 56),
        ]
    }

    fn decode(w: &[AtomicU64]) -> Rec {
        let last = w[3].load(Relaxed);
        let channel = ((last >> 48) & 0xff) as usize;
        let bits = (last >> 56) as usize;
        let expires = w[2].load(Relaxed) as i64;
        Rec {
            seq: w[0].load(Relaxed),
            occurred_at: w[1].load(Relaxed) as i64,
            expires_at: (expires != NO_EXPIRY).then_some(expires),
            provenance: last as u32,
            purpose: (last >> 32) as u16,
            channel: channel.checked_sub(1).map(|i| Channel::ALL[i]),
            state: STATES[(bits & 7).min(STATES.len() - 1)],
            guardian: bits & 8 != 0,
        }
    }

    fn purpose_of(w: &[AtomicU64]) -> u16 {
        (w[3].load(Relaxed) >> 32) as u16
    }

    pub fn order(&self) -> (Micros, u64) {
        (self.occurred_at, self.seq)
    }
}

impl Choice for Rec {
    fn channel(&self) -> Option<Channel> {
        self.channel
    }
    fn order(&self) -> (Micros, u64) {
        Rec::order(self)
    }
    fn is_grant(&self) -> bool {
        self.state == ConsentState::Granted
    }
}

type Entry = Box<[AtomicU64]>;

fn id_words(len: usize) -> usize {
    len.div_ceil(8)
}

fn header(e: &[AtomicU64]) -> (usize, usize) {
    let h = e[0].load(Relaxed);
    ((h & 0xffff) as usize, ((h >> 16) & 0xffff) as usize)
}

fn id_chunks(id: &[u8]) -> impl Iterator<Item = u64> + '_ {
    id.chunks(8).map(|c| {
        let mut b = [0u8; 8];
        b[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(b)
    })
}

fn records_of(e: &[AtomicU64]) -> &[AtomicU64] {
    let (len, _) = header(e);
    &e[1 + id_words(len)..]
}

fn id_of(e: &[AtomicU64]) -> String {
    let (len, _) = header(e);
    let mut bytes: Vec<u8> = e[1..1 + id_words(len)]
        .iter()
        .flat_map(|w| w.load(Relaxed).to_le_bytes())
        .collect();
    bytes.truncate(len);
    String::from_utf8_lossy(&bytes).into_owned()
}

fn matches(e: &[AtomicU64], id: &[u8]) -> bool {
    header(e).0 == id.len()
        && e[1..]
            .iter()
            .zip(id_chunks(id))
            .all(|(w, c)| w.load(Relaxed) == c)
}

fn build(id: &[u8], recs: &[Rec]) -> Entry {
    let mut words = Vec::with_capacity(1 + id_words(id.len()) + 4 * recs.len());
    words.push(AtomicU64::new(
        id.len() as u64 | ((recs.len() as u64) << 16),
    ));
    words.extend(id_chunks(id).map(AtomicU64::new));
    for r in recs {
        words.extend(r.encode().map(AtomicU64::new));
    }
    words.into_boxed_slice()
}

/// What an entry costs: its words and the allocator's header (its slot in
/// the table is counted with the table).
fn cost(e: &[AtomicU64]) -> usize {
    e.len() * 8 + 16
}

/// A table slot: a fat pointer and a control byte.
const SLOT: usize = 17;

/// The subjects of one tenant.
pub struct Subjects {
    table: HashTable<Entry>,
    hasher: DefaultHashBuilder,
    bytes: usize,
    records: usize,
}

impl Default for Subjects {
    fn default() -> Self {
        Subjects {
            table: HashTable::new(),
            hasher: DefaultHashBuilder::default(),
            bytes: 0,
            records: 0,
        }
    }
}

/// A subject's records, decoded (a subject has a handful).
pub struct Found<'a> {
    entry: &'a [AtomicU64],
}

impl Found<'_> {
    pub fn records(&self) -> impl Iterator<Item = Rec> + '_ {
        records_of(self.entry).chunks_exact(4).map(Rec::decode)
    }

    /// The records of one purpose, on the stack.
    pub fn of_purpose(&self, purpose: u16) -> ([Rec; MAX_PER_PURPOSE], usize) {
        let mut out = [EMPTY; MAX_PER_PURPOSE];
        let mut n = 0;
        for w in records_of(self.entry).chunks_exact(4) {
            if Rec::purpose_of(w) == purpose && n < MAX_PER_PURPOSE {
                out[n] = Rec::decode(w);
                n += 1;
            }
        }
        (out, n)
    }
}

const EMPTY: Rec = Rec {
    seq: 0,
    occurred_at: 0,
    expires_at: None,
    provenance: 0,
    purpose: 0,
    channel: None,
    state: ConsentState::Unspecified,
    guardian: false,
};

impl Subjects {
    fn hash(&self, id: &[u8]) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_usize(id.len());
        for c in id_chunks(id) {
            h.write_u64(c);
        }
        h.finish()
    }

    fn hash_entry(hasher: &DefaultHashBuilder, e: &[AtomicU64]) -> u64 {
        let (len, _) = header(e);
        let mut h = hasher.build_hasher();
        h.write_usize(len);
        for w in &e[1..1 + id_words(len)] {
            h.write_u64(w.load(Relaxed));
        }
        h.finish()
    }

    /// Which of `n` stripes the subject falls in.
    pub fn stripe(&self, id: &str, n: usize) -> usize {
        (self.hash(id.as_bytes()) % n as u64) as usize
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn records(&self) -> usize {
        self.records
    }

    /// Bytes held: entries and the table's slots.
    pub fn bytes(&self) -> usize {
        self.bytes + self.table.capacity() * SLOT
    }

    /// Look a subject up; marks it used (for the bounded mode's sweeps).
    pub fn get(&self, id: &str) -> Option<Found<'_>> {
        let hash = self.hash(id.as_bytes());
        let e = self.table.find(hash, |e| matches(e, id.as_bytes()))?;
        if e[0].load(Relaxed) & USED == 0 {
            e[0].fetch_or(USED, Relaxed);
        }
        Some(Found { entry: e })
    }

    pub fn contains(&self, id: &str) -> bool {
        let hash = self.hash(id.as_bytes());
        self.table
            .find(hash, |e| matches(e, id.as_bytes()))
            .is_some()
    }

    /// Every subject, without decoding its id.
    pub fn iter_found(&self) -> impl Iterator<Item = Found<'_>> + '_ {
        self.table.iter().map(|e| Found { entry: e })
    }

    /// Every subject, with its id.
    pub fn iter(&self) -> impl Iterator<Item = (String, Found<'_>)> + '_ {
        self.table.iter().map(|e| (id_of(e), Found { entry: e }))
    }

    /// Put a subject with exactly these records (replacing what was held).
    pub fn put(&mut self, id: &str, recs: &[Rec]) {
        self.replace(id, build(id.as_bytes(), recs));
    }

    /// Hold `e` as the subject `id` (replacing what was held), counted.
    fn replace(&mut self, id: &str, e: Entry) {
        self.remove(id);
        self.bytes += cost(&e);
        self.records += header(&e).1;
        let hash = self.hash(id.as_bytes());
        let hasher = &self.hasher;
        self.table
            .insert_unique(hash, e, |e| Self::hash_entry(hasher, e));
    }

    pub fn remove(&mut self, id: &str) -> bool {
        let hash = self.hash(id.as_bytes());
        match self.table.find_entry(hash, |e| matches(e, id.as_bytes())) {
            Ok(found) => {
                let (e, _) = found.remove();
                self.bytes -= cost(&e);
                self.records -= header(&e).1;
                true
            }
            Err(_) => false,
        }
    }

    /// Fold a record in: per (purpose, channel) the greatest
    /// `(occurred_at, seq)` wins. Returns whether it changed the state.
    pub fn apply(&mut self, id: &str, rec: Rec) -> bool {
        let hash = self.hash(id.as_bytes());
        let Some(e) = self.table.find_mut(hash, |e| matches(e, id.as_bytes())) else {
            self.put(id, &[rec]);
            return true;
        };
        let start = 1 + id_words(header(e).0);
        let slot = e[start..].chunks_exact(4).position(|w| {
            let r = Rec::decode(w);
            r.purpose == rec.purpose && r.channel == rec.channel
        });
        match slot {
            Some(i) => {
                let w = &e[start + 4 * i..start + 4 * i + 4];
                if Rec::decode(w).order() >= rec.order() {
                    return false;
                }
                for (dst, v) in w.iter().zip(rec.encode()) {
                    dst.store(v, Relaxed);
                }
                true
            }
            None => {
                // Grow by one record: a new allocation, the old one freed.
                let (len, n) = header(e);
                let mut words: Vec<AtomicU64> = Vec::with_capacity(e.len() + 4);
                words.push(AtomicU64::new(
                    (len as u64 | ((n as u64 + 1) << 16)) | (e[0].load(Relaxed) & USED),
                ));
                words.extend(e[1..].iter().map(|w| AtomicU64::new(w.load(Relaxed))));
                words.extend(rec.encode().map(AtomicU64::new));
                let old = std::mem::replace(e, words.into_boxed_slice());
                self.bytes = self.bytes + cost(e) - cost(&old);
                self.records += 1;
                true
            }
        }
    }

    /// Evict subjects not used since the last sweep (and clear the marks of
    /// the others) until at most `target` bytes are held; a second pass
    /// evicts regardless if marks alone do not get there.
    pub fn sweep(&mut self, target: usize) -> usize {
        let mut evicted = 0;
        let target = target.saturating_sub(self.table.capacity() * SLOT);
        for pass in 0..2 {
            if self.bytes <= target {
                break;
            }
            let mut bytes = self.bytes;
            let mut records = self.records;
            self.table.retain(|e| {
                if bytes <= target {
                    return true;
                }
                let h = e[0].load(Relaxed);
                if h & USED != 0 && pass == 0 {
                    e[0].store(h & !USED, Relaxed);
                    return true;
                }
                bytes -= cost(e);
                records -= header(e).1;
                evicted += 1;
                false
            });
            self.bytes = bytes;
            self.records = records;
        }
        if self.table.capacity() > 2 * self.table.len().max(1024) {
            let hasher = &self.hasher;
            self.table.shrink_to_fit(|e| Self::hash_entry(hasher, e));
        }
        evicted
    }

    /// Every subject as its words (the used mark cleared), with its id.
    pub fn raw(&self) -> impl Iterator<Item = (String, Vec<u64>)> + '_ {
        self.table.iter().map(|e| {
            let words = e
                .iter()
                .enumerate()
                .map(|(i, w)| {
                    let v = w.load(Relaxed);
                    if i == 0 { v & !USED } else { v }
                })
                .collect();
            (id_of(e), words)
        })
    }

    /// Insert a subject from words written by [`Subjects::raw`] (perhaps by
    /// another process), with its records' purpose and provenance ids
    /// translated by `purposes` and `provenances`. `None` when the words
    /// are not a well-formed subject. Returns the number of records.
    pub fn insert_raw(
        &mut self,
        words: &[u64],
        purposes: &[u16],
        provenances: &[u32],
    ) -> Option<usize> {
        let head = *words.first()? & !USED;
        let (len, n) = ((head & 0xffff) as usize, ((head >> 16) & 0xffff) as usize);
        let start = 1 + id_words(len);
        if head >> 32 != 0 || words.len() != start + 4 * n {
            return None;
        }
        let mut id = Vec::with_capacity(len);
        for w in &words[1..start] {
            id.extend_from_slice(&w.to_le_bytes());
        }
        id.truncate(len);
        let id = String::from_utf8(id).ok()?;
        let mut out: Vec<AtomicU64> = Vec::with_capacity(words.len());
        out.push(AtomicU64::new(head));
        out.extend(words[1..start].iter().map(|&w| AtomicU64::new(w)));
        for r in words[start..].chunks_exact(4) {
            let last = r[3];
            let provenance = *provenances.get(last as u32 as usize)?;
            let purpose = *purposes.get(((last >> 32) & 0xffff) as usize)?;
            let last =
                (last & !0xffff_ffff_ffff) | u64::from(provenance) | (u64::from(purpose) << 32);
            out.extend([r[0], r[1], r[2], last].map(AtomicU64::new));
        }
        self.replace(&id, out.into_boxed_slice());
        Some(n)
    }

    pub fn reserve(&mut self, more: usize) {
        let hasher = &self.hasher;
        self.table.reserve(more, |e| Self::hash_entry(hasher, e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(purpose: u16, channel: Option<Channel>, state: ConsentState, at: i64, seq: u64) -> Rec {
        Rec {
            seq,
            occurred_at: at,
            expires_at: seq.is_multiple_of(2).then_some(at + 5),
            provenance: 7,
            purpose,
            channel,
            state,
            guardian: seq.is_multiple_of(3),
        }
    }

    #[test]
    fn records_round_trip_and_fold() {
        let mut s = Subjects::default();
        let ids = ["a", "exactly8", "a-longer-subject-id-with-ไทย", ""];
        for (i, id) in ids.iter().enumerate() {
            assert!(s.apply(id, rec(1, None, ConsentState::Granted, 100, i as u64)));
            assert!(s.apply(
                id,
                rec(1, Some(Channel::Email), ConsentState::Denied, 50, 10)
            ));
            // Older than what is held: kept in the ledger, not in state.
            assert!(!s.apply(id, rec(1, None, ConsentState::Withdrawn, 99, 11)));
            assert!(s.apply(
                id,
                rec(2, Some(Channel::Line), ConsentState::Expired, 1, 12)
            ));
        }
        assert_eq!(s.len(), 4);
        assert_eq!(s.records(), 12);
        for (i, id) in ids.iter().enumerate() {
            let f = s.get(id).unwrap();
            let all: Vec<Rec> = f.records().collect();
            assert_eq!(all[0], rec(1, None, ConsentState::Granted, 100, i as u64));
            assert_eq!(all[2].channel, Some(Channel::Line));
            let (p1, n) = f.of_purpose(1);
            assert_eq!(n, 2);
            assert_eq!(p1[1].state, ConsentState::Denied);
        }
        let mut seen: Vec<String> = s.iter().map(|(id, _)| id).collect();
        seen.sort();
        let mut want: Vec<String> = ids.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(seen, want);
        assert!(s.get("b").is_none() && s.get("exactly9").is_none());
        assert!(s.remove("a"));
        assert_eq!(s.records(), 9);
    }

    #[test]
    fn sweeps_keep_what_was_used() {
        let mut s = Subjects::default();
        for i in 0..1000 {
            s.put(
                &format!("s{i}"),
                &[rec(0, None, ConsentState::Granted, 1, i)],
            );
        }
        let full = s.bytes();
        s.sweep(full); // nothing to do
        assert_eq!(s.len(), 1000);
        for i in 0..100 {
            assert!(s.get(&format!("s{i}")).is_some());
        }
        s.sweep(full / 2);
        assert!(s.bytes() <= full / 2);
        for i in 0..100 {
            assert!(s.contains(&format!("s{i}")), "hot subject s{i} evicted");
        }
    }
}
