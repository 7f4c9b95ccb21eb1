//! The decision view: current consent state that decisions are served from.
//!
//! It is loaded from the store's current-state table at start-up (never by
//! replaying history) and then kept exact by the write path: the writer
//! applies every committed batch here *before* answering the request that
//! caused it, so a client that has seen its write acknowledged never reads
//! an older decision from this node.
//!
//! Records are held compactly (see [`compact`]): about 45 bytes a consent
//! record. In the **bounded mode** (`--view-memory`) the view holds at most
//! a budget of subjects, the ones used lately; a subject it does not hold
//! is read from the store on demand (and then held), the way Zanzibar-style
//! systems serve checks from a cache over a datastore. Subjects' flags
//! (erasure, restriction, objection, age) are few and always held whole, so
//! a decision never misses them. Exactness holds in both modes: the writer
//! updates a held subject before acknowledging, and a load that raced with
//! a write to the same subject is answered but not kept.

pub mod compact;
pub mod snapshot;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use yinyom_core::consent::{self, ConsentRecord, ConsentState, NoticeVersion, SubjectConsents};
use yinyom_core::decision::{self, Decision, Facts};
use yinyom_core::ledger::LedgerEntry;
use yinyom_core::notice::Notice;
use yinyom_core::purpose::{Channel, Purpose};
use yinyom_core::subject::SubjectFlags;
use yinyom_core::time::Micros;

use crate::model::Tenant;
use crate::store::{Store, StoreError, SubjectSnapshot};
use compact::{Rec, Subjects};

/// What the write path needs to know of a published notice version.
#[derive(Debug, Clone)]
pub struct NoticeMeta {
    pub hash: String,
    pub purposes: Vec<String>,
    pub material: bool,
    pub url: Option<String>,
}

/// One subject as decisions see it, in full (materialised from the compact
/// form, or read from the store).
#[derive(Debug, Default, Clone)]
pub struct SubjectView {
    pub flags: Option<SubjectFlags>,
    pub consents: SubjectConsents,
}

impl SubjectView {
    /// A subject with its records in a stable order: by purpose, then
    /// channel (purpose-wide first), however they were held or read.
    pub fn new(flags: Option<SubjectFlags>, mut records: Vec<ConsentRecord>) -> Self {
        records.sort_by(|a, b| (&a.purpose, a.channel).cmp(&(&b.purpose, b.channel)));
        SubjectView {
            flags,
            consents: SubjectConsents { records },
        }
    }

    pub fn erased(&self) -> bool {
        self.flags.as_ref().is_some_and(|f| f.erased)
    }
}

/// Where a provenance id points: the source and notice of a record.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Provenance {
    source: Arc<str>,
    notice: Option<(Arc<str>, u32)>,
}

pub struct TenantView {
    pub tenant: Tenant,
    pub purposes: HashMap<String, Purpose>,
    pub notices: HashMap<(String, u32), NoticeMeta>,
    /// Notice key → its latest version.
    pub latest_notice: HashMap<String, u32>,
    /// Notice key → its latest material version.
    pub material: HashMap<String, u32>,
    /// Subjects' current records, compact.
    pub subjects: Subjects,
    /// Every subject with flags set (few; held whole in both modes).
    flags: HashMap<Box<str>, SubjectFlags>,
    /// How many of them are erased (held under their keyed pseudonym).
    erased: usize,
    /// The tenant's keys, to find an erased subject by the id it had: set
    /// when the tenant has erased subjects (`Services::arm_pseudonyms`).
    pseudonyms: Option<Arc<crate::vault::TenantKeys>>,
    /// A subject not in `subjects` may have records in the store.
    bounded: bool,
    purpose_ids: HashMap<Arc<str>, u16>,
    purpose_keys: Vec<Arc<str>>,
    provenance_ids: HashMap<Provenance, u32>,
    provenances: Vec<Provenance>,
    strings: HashSet<Arc<str>>,
    /// Every ledger seq up to here has been applied (the snapshot's cursor).
    pub(crate) watermark: Watermark,
    /// Bumped per stripe of subjects by every write a bounded view does not
    /// hold: a load that saw a bump while it read does not keep its result.
    stripes: Vec<AtomicU64>,
}

const STRIPES: usize = 64;

/// The seqs applied to a tenant's view: all up to `low`, and some above
/// (commits are applied nearly in order; a gap closes when its entry is
/// applied).
#[derive(Debug, Default)]
pub(crate) struct Watermark {
    pub(crate) low: u64,
    above: std::collections::BTreeSet<u64>,
}

impl Watermark {
    pub(crate) fn reset(&mut self, low: u64) {
        self.low = low;
        self.above.clear();
    }

    /// Every seq up to `seq` has been applied: a follower read the ledger
    /// up to it, below the store's horizon, so nothing at or below it can
    /// still come (PostgreSQL numbers entries with gaps).
    pub(crate) fn advance(&mut self, seq: u64) {
        if seq > self.low {
            self.low = seq;
            self.above = self.above.split_off(&(seq + 1));
        }
    }

    pub(crate) fn mark(&mut self, seq: u64) {
        if seq <= self.low {
            return;
        }
        if seq != self.low + 1 {
            // A gap that never closes (an entry this view will not see)
            // only keeps the watermark low: correct, and caught up on at
            // the next start.
            if self.above.len() < 1 << 20 {
                self.above.insert(seq);
            }
            return;
        }
        self.low = seq;
        while self.above.first() == Some(&(self.low + 1)) {
            self.low += 1;
            self.above.pop_first();
        }
    }
}

/// Per (purpose, channel): records granted, records in all.
pub type Tally = std::collections::BTreeMap<(String, Option<Channel>), (u64, u64)>;
/// Purpose ids are 16 bits; registering purposes stops well before.
pub const MAX_PURPOSES: usize = 10_000;

/// A decision with the consent record behind it, as the API reports it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub decision: Decision,
    pub record: Option<ConsentRecord>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Unknown {
    Tenant,
    Purpose,
    /// A bounded view does not hold the subject: read it from the store.
    Subject,
}

/// Where the view is saved between runs, and the key it is sealed with.
#[derive(Clone)]
pub struct SnapshotFile {
    pub path: std::path::PathBuf,
    pub key: crate::vault::MasterKey,
}

/// Load progress, for `/readyz`.
#[derive(Default)]
pub struct Progress {
    pub records: AtomicU64,
    pub subjects: AtomicU64,
    pub ready: AtomicBool,
}

#[derive(Default)]
pub struct View {
    tenants: RwLock<HashMap<String, Arc<RwLock<TenantView>>>>,
    /// Bounded mode: the most bytes of subjects to hold, across tenants.
    budget: Option<usize>,
    held: AtomicI64,
    pub progress: Progress,
    misses: AtomicU64,
}

impl TenantView {
    pub fn new(tenant: Tenant) -> Self {
        TenantView {
            tenant,
            purposes: HashMap::new(),
            notices: HashMap::new(),
            latest_notice: HashMap::new(),
            material: HashMap::new(),
            subjects: Subjects::default(),
            flags: HashMap::new(),
            erased: 0,
            pseudonyms: None,
            bounded: false,
            purpose_ids: HashMap::new(),
            purpose_keys: Vec::new(),
            provenance_ids: HashMap::new(),
            provenances: Vec::new(),
            strings: HashSet::new(),
            stripes: (0..STRIPES).map(|_| AtomicU64::new(0)).collect(),
            watermark: Watermark::default(),
        }
    }

    pub fn with(tenant: Tenant, purposes: Vec<Purpose>, notices: &[Notice]) -> Self {
        let mut tv = TenantView::new(tenant);
        for p in purposes {
            tv.put_purpose(p);
        }
        for n in notices {
            tv.put_notice(n);
        }
        tv
    }

    pub fn put_purpose(&mut self, p: Purpose) {
        self.purpose_id(&p.key);
        self.purposes.insert(p.key.clone(), p);
    }

    fn intern(&mut self, s: &str) -> Arc<str> {
        match self.strings.get(s) {
            Some(shared) => shared.clone(),
            None => {
                let a: Arc<str> = s.into();
                self.strings.insert(a.clone());
                a
            }
        }
    }

    fn purpose_id(&mut self, key: &str) -> u16 {
        if let Some(&id) = self.purpose_ids.get(key) {
            return id;
        }
        // Records name registered purposes only, and registration stops at
        // MAX_PURPOSES, far below the 16-bit limit.
        let id = u16::try_from(self.purpose_keys.len()).unwrap_or(u16::MAX);
        let key = self.intern(key);
        self.purpose_keys.push(key.clone());
        self.purpose_ids.insert(key, id);
        id
    }

    fn provenance_id(&mut self, source: &str, notice: Option<&NoticeVersion>) -> u32 {
        let p = Provenance {
            source: self.intern(source),
            notice: notice.map(|n| (self.intern(&n.key), n.version)),
        };
        if let Some(&id) = self.provenance_ids.get(&p) {
            return id;
        }
        let id = self.provenances.len() as u32;
        self.provenances.push(p.clone());
        self.provenance_ids.insert(p, id);
        id
    }

    fn compact(&mut self, r: &ConsentRecord) -> Rec {
        Rec {
            seq: r.seq,
            occurred_at: r.occurred_at,
            expires_at: r.expires_at,
            provenance: self.provenance_id(&r.source, r.notice.as_ref()),
            purpose: self.purpose_id(&r.purpose),
            channel: r.channel,
            state: r.state,
            guardian: r.guardian,
        }
    }

    fn full(&self, r: &Rec) -> ConsentRecord {
        let p = &self.provenances[r.provenance as usize];
        ConsentRecord {
            purpose: self.purpose_keys[usize::from(r.purpose)].clone(),
            channel: r.channel,
            state: r.state,
            seq: r.seq,
            occurred_at: r.occurred_at,
            expires_at: r.expires_at,
            notice: p.notice.as_ref().map(|(key, version)| NoticeVersion {
                key: key.clone(),
                version: *version,
            }),
            source: p.source.clone(),
            guardian: r.guardian,
        }
    }

    /// Fold a committed record in. A bounded view that does not hold the
    /// subject leaves it to be read from the store when next asked.
    pub fn apply(&mut self, subject_id: &str, record: &ConsentRecord) {
        if self.bounded && !self.subjects.contains(subject_id) {
            self.bump(subject_id);
            return;
        }
        let rec = self.compact(record);
        self.subjects.apply(subject_id, rec);
    }

    /// Fold committed ledger entries in, each with its subject's id (none
    /// once erased), and note their seqs as applied.
    pub fn apply_entries(&mut self, entries: &[(Option<String>, LedgerEntry)]) {
        for (subject, entry) in entries {
            if let Some(subject) = subject
                && let Some(r) = entry.record()
            {
                self.apply(subject, &r);
            }
            self.watermark.mark(entry.seq);
        }
    }

    fn bump(&self, subject_id: &str) {
        self.stripes[self.subjects.stripe(subject_id, STRIPES)].fetch_add(1, Ordering::AcqRel);
    }

    fn stripe_version(&self, subject_id: &str) -> u64 {
        self.stripes[self.subjects.stripe(subject_id, STRIPES)].load(Ordering::Acquire)
    }

    /// Hold a subject's records as read from the store.
    fn hold(&mut self, subject_id: &str, records: &[ConsentRecord]) {
        let recs: Vec<Rec> = records.iter().map(|r| self.compact(r)).collect();
        self.subjects.put(subject_id, &recs);
    }

    /// The subject's flags, found by its id or, once it was erased, by the
    /// keyed pseudonym that replaced the id.
    pub fn flags(&self, subject_id: &str) -> Option<&SubjectFlags> {
        match self.flags.get(subject_id) {
            Some(f) => Some(f),
            None => self.flags.get(self.pseudonym_of(subject_id)?.as_str()),
        }
    }

    pub fn erased(&self, subject_id: &str) -> bool {
        self.flags(subject_id).is_some_and(|f| f.erased)
    }

    /// The flags of a subject by the id it is stored under (as listed by
    /// the view or the store: no pseudonym to look for).
    pub fn stored_flags(&self, stored_id: &str) -> Option<&SubjectFlags> {
        self.flags.get(stored_id)
    }

    /// The pseudonym of `subject_id` when an erased subject is held under
    /// it (a keyed hash is computed only when the tenant has erased subjects).
    fn pseudonym_of(&self, subject_id: &str) -> Option<String> {
        if self.erased == 0 {
            return None;
        }
        let p = self.pseudonyms.as_ref()?.pseudonym(subject_id);
        self.flags
            .get(p.as_str())
            .is_some_and(|f| f.erased)
            .then_some(p)
    }

    /// The id a subject is held and stored under: its own, or once erased
    /// its pseudonym.
    pub fn resolve<'a>(&self, subject_id: &'a str) -> std::borrow::Cow<'a, str> {
        if self.flags.contains_key(subject_id) {
            return subject_id.into();
        }
        match self.pseudonym_of(subject_id) {
            Some(p) => p.into(),
            None => subject_id.into(),
        }
    }

    /// Whether the tenant has erased subjects (then it needs its keys).
    pub fn has_erased(&self) -> bool {
        self.erased > 0
    }

    /// Whether erased subjects can be found by the ids they had.
    pub fn pseudonyms_armed(&self) -> bool {
        self.pseudonyms.is_some()
    }

    pub fn arm_pseudonyms(&mut self, keys: Arc<crate::vault::TenantKeys>) {
        self.pseudonyms = Some(keys);
    }

    pub fn set_flags(&mut self, subject_id: &str, flags: SubjectFlags) {
        let now_erased = flags.erased;
        let was = if flags == SubjectFlags::default() {
            self.flags.remove(subject_id)
        } else {
            self.flags.insert(subject_id.into(), flags)
        };
        let was_erased = was.is_some_and(|f| f.erased);
        match (was_erased, now_erased) {
            (false, true) => self.erased += 1,
            (true, false) => self.erased -= 1,
            _ => {}
        }
    }

    /// An erased subject's id was replaced by its pseudonym: hold its
    /// records (as stored, all `erased`) and flags under that, nothing
    /// under the id.
    pub fn put_erased(
        &mut self,
        subject_id: &str,
        pseudonym: &str,
        flags: SubjectFlags,
        records: &[ConsentRecord],
    ) {
        self.forget(subject_id);
        if !records.is_empty() {
            self.hold(pseudonym, records);
        }
        self.set_flags(pseudonym, flags);
    }

    /// Drop what is held under an id that no longer names a subject (an
    /// erasure on another node renamed it).
    pub fn forget(&mut self, subject_id: &str) {
        self.subjects.remove(subject_id);
        self.set_flags(subject_id, SubjectFlags::default());
    }

    /// The subject in full; `None` when a bounded view does not hold it
    /// (see [`View::subject`], which then reads the store).
    pub fn subject(&self, subject_id: &str) -> Option<SubjectView> {
        let subject_id = &*self.resolve(subject_id);
        let records = match self.subjects.get(subject_id) {
            Some(found) => self.records_of(&found),
            None if self.bounded => return None,
            None => Vec::new(),
        };
        Some(SubjectView::new(self.flags(subject_id).cloned(), records))
    }

    /// Every subject the view holds with records, in full.
    pub fn each_held(&self, mut f: impl FnMut(&str, SubjectView)) {
        for (id, found) in self.subjects.iter() {
            let flags = self.stored_flags(&id).cloned();
            f(&id, SubjectView::new(flags, self.records_of(&found)));
        }
    }

    fn records_of(&self, found: &compact::Found<'_>) -> Vec<ConsentRecord> {
        found.records().map(|r| self.full(&r)).collect()
    }

    /// Subjects held, and per (purpose, channel) how many records stand
    /// granted at `now` out of how many (the console's dashboard).
    pub fn tally(&self, now: Micros) -> (usize, Tally) {
        let mut by_id: HashMap<(u16, Option<Channel>), (u64, u64)> = HashMap::new();
        for found in self.subjects.iter_found() {
            for r in found.records() {
                let e = by_id.entry((r.purpose, r.channel)).or_default();
                e.1 += 1;
                if consent::state_at(r.state, r.expires_at, now) == ConsentState::Granted {
                    e.0 += 1;
                }
            }
        }
        let counts = by_id
            .into_iter()
            .map(|((p, c), n)| ((self.purpose_keys[usize::from(p)].to_string(), c), n))
            .collect();
        (self.subjects.len(), counts)
    }

    pub fn put_notice(&mut self, n: &Notice) {
        self.notices.insert(
            (n.key.clone(), n.version),
            NoticeMeta {
                hash: n.content_hash.clone(),
                purposes: n.purposes.clone(),
                material: n.material,
                url: n.texts.values().find_map(|t| t.url.clone()),
            },
        );
        let latest = self.latest_notice.entry(n.key.clone()).or_insert(0);
        *latest = (*latest).max(n.version);
        if n.material {
            let m = self.material.entry(n.key.clone()).or_insert(0);
            *m = (*m).max(n.version);
        }
    }

    /// Decide from the held records; `Unknown::Subject` when a bounded view
    /// does not hold the subject.
    pub fn decide(
        &self,
        subject: &str,
        purpose_key: &str,
        channel: Option<Channel>,
        now: Micros,
    ) -> Result<Answer, Unknown> {
        let purpose = self.purposes.get(purpose_key).ok_or(Unknown::Purpose)?;
        let record = match self.subjects.get(subject) {
            Some(found) => match self.purpose_ids.get(purpose_key) {
                Some(&pid) => {
                    let (recs, n) = found.of_purpose(pid);
                    consent::effective(recs[..n].iter(), channel).map(|r| self.full(r))
                }
                None => None,
            },
            None if self.bounded => return Err(Unknown::Subject),
            None => None,
        };
        // A subject held with records under this id is not erased (erased
        // ones are held under their pseudonym): no keyed hash on that path.
        let flags = if record.is_some() {
            self.flags.get(subject)
        } else {
            self.flags(subject)
        };
        Ok(self.answer(purpose, purpose_key, flags, record, now))
    }

    /// Decide for a subject read in full.
    pub fn decide_for(
        &self,
        subject: &SubjectView,
        purpose_key: &str,
        channel: Option<Channel>,
        now: Micros,
    ) -> Result<Answer, Unknown> {
        let purpose = self.purposes.get(purpose_key).ok_or(Unknown::Purpose)?;
        let record = subject.consents.effective(purpose_key, channel).cloned();
        Ok(self.answer(purpose, purpose_key, subject.flags.as_ref(), record, now))
    }

    fn answer(
        &self,
        purpose: &Purpose,
        purpose_key: &str,
        flags: Option<&SubjectFlags>,
        record: Option<ConsentRecord>,
        now: Micros,
    ) -> Answer {
        let latest_material_version = record
            .as_ref()
            .and_then(|r| r.notice.as_ref())
            .and_then(|n| self.material.get(&*n.key).copied());
        let decision = decision::decide(&Facts {
            purpose_key,
            purpose: purpose.rule(),
            flags,
            record: record.as_ref(),
            latest_material_version,
            now,
        });
        Answer { decision, record }
    }
}

impl View {
    /// An empty view; with a budget, a bounded one.
    pub fn new(budget: Option<usize>) -> Self {
        View {
            budget,
            ..View::default()
        }
    }

    pub fn bounded(&self) -> bool {
        self.budget.is_some()
    }

    /// A view holding exactly these subjects (tests and benchmarks).
    pub fn load_iter(
        tenants: Vec<(Tenant, Vec<Purpose>, Vec<Notice>)>,
        subjects: impl IntoIterator<Item = SubjectSnapshot>,
    ) -> Self {
        let view = View::new(None);
        for (tenant, purposes, notices) in tenants {
            view.add_new_tenant(tenant, purposes, &notices);
        }
        for s in subjects {
            view.write(&s.tenant, |tv| {
                if !s.records.is_empty() {
                    tv.hold(&s.id, &s.records);
                }
                tv.set_flags(&s.id, s.flags);
            });
        }
        view.progress.ready.store(true, Ordering::Release);
        view
    }

    /// Load every tenant's current state: from the snapshot file when one
    /// fits this store (then the ledger entries written after its cursor),
    /// else from the store's current-state table, page by page (progress in
    /// [`View::progress`]). A bounded view loads subjects' flags only: the
    /// subjects come when asked for.
    pub async fn load(
        &self,
        store: &dyn Store,
        tenants: Vec<(Tenant, Vec<Purpose>, Vec<Notice>)>,
        snapshot: Option<&SnapshotFile>,
    ) -> Result<(), StoreError> {
        const PAGE: u32 = 20_000;
        let ids: Vec<String> = tenants.iter().map(|(t, _, _)| t.id.clone()).collect();
        for (tenant, purposes, notices) in tenants {
            self.add_new_tenant(tenant, purposes, &notices);
        }
        // Every entry up to these heads is in what is loaded next.
        let heads = store.heads().await?;
        for tenant in &ids {
            let flagged = store.flagged_subjects(tenant).await?;
            self.write(tenant, |tv| {
                for (id, flags) in flagged {
                    tv.set_flags(&id, flags);
                }
            });
        }
        if self.bounded() {
            self.progress.ready.store(true, Ordering::Release);
            return Ok(());
        }
        let mut cursors = HashMap::new();
        if let Some(file) = snapshot
            && file.path.exists()
        {
            let store_id = store.store_id().await?;
            let started = std::time::Instant::now();
            match snapshot::load(self, &file.path, &file.key, &store_id, &heads) {
                Ok(c) => {
                    tracing::info!(
                        tenants = c.len(),
                        seconds = started.elapsed().as_secs_f64(),
                        "decision view loaded from its snapshot"
                    );
                    cursors = c;
                }
                Err(e) => tracing::warn!(error = %e, "the view's snapshot is not used"),
            }
        }
        for tenant in &ids {
            if let Some(&cursor) = cursors.get(tenant) {
                // Catch up on what was written after the snapshot.
                let mut after = cursor;
                loop {
                    let page = store.ledger_after(tenant, after, PAGE).await?;
                    let Some((_, last)) = page.last() else { break };
                    after = last.seq;
                    self.write(tenant, |tv| tv.apply_entries(&page));
                }
                continue;
            }
            let mut after = String::new();
            loop {
                let page = store.states_page(tenant, &after, PAGE).await?;
                let Some(last) = page.last() else { break };
                after = last.id.clone();
                let (mut subjects, mut records) = (0, 0);
                self.write(tenant, |tv| {
                    tv.subjects.reserve(page.len());
                    for s in &page {
                        subjects += 1;
                        records += s.records.len() as u64;
                        tv.hold(&s.id, &s.records);
                    }
                });
                self.progress
                    .subjects
                    .fetch_add(subjects, Ordering::Relaxed);
                self.progress.records.fetch_add(records, Ordering::Relaxed);
            }
            let head = heads.get(tenant).copied().unwrap_or(0);
            self.write(tenant, |tv| tv.watermark.reset(head));
        }
        self.progress.ready.store(true, Ordering::Release);
        Ok(())
    }

    /// Save the view to its snapshot file (see [`snapshot`]); a bounded
    /// view is not saved.
    pub async fn save(
        self: &Arc<Self>,
        store: &dyn Store,
        file: &SnapshotFile,
    ) -> Result<u64, String> {
        if self.bounded() {
            return Ok(0);
        }
        let store_id = store.store_id().await.map_err(|e| e.to_string())?;
        let (view, file) = (self.clone(), file.clone());
        tokio::task::spawn_blocking(move || {
            snapshot::write(&view, &file.path, &file.key, &store_id).map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| e.to_string())?
    }

    fn tenant(&self, tenant: &str) -> Option<Arc<RwLock<TenantView>>> {
        let guard = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        guard.get(tenant).cloned()
    }

    /// Read one tenant's view.
    pub fn read<R>(&self, tenant: &str, f: impl FnOnce(&TenantView) -> R) -> Option<R> {
        let tv = self.tenant(tenant)?;
        let guard = tv.read().unwrap_or_else(|e| e.into_inner());
        Some(f(&guard))
    }

    /// The tenant whose banner has this public site key, and the origins
    /// allowed to use it.
    pub fn tenant_by_site_key(&self, key: &str) -> Option<(String, Vec<String>)> {
        self.all_tenants().iter().find_map(|tv| {
            let tv = tv.read().unwrap_or_else(|e| e.into_inner());
            let b = tv.tenant.banner.as_ref()?;
            (b.site_key == key).then(|| (tv.tenant.id.clone(), b.origins.clone()))
        })
    }

    /// Whether some tenant lists `origin` among its banner's origins (a
    /// CORS preflight names no tenant: the actual request is then checked
    /// against its own tenant's list).
    pub fn origin_listed(&self, origin: &str) -> bool {
        self.all_tenants().iter().any(|tv| {
            let tv = tv.read().unwrap_or_else(|e| e.into_inner());
            tv.tenant
                .banner
                .as_ref()
                .is_some_and(|b| b.origins.iter().any(|o| o == origin))
        })
    }

    /// The origins a tenant's banner lists (none without a banner).
    pub fn tenant_origins(&self, tenant: &str) -> Vec<String> {
        self.read(tenant, |tv| {
            tv.tenant
                .banner
                .as_ref()
                .map(|b| b.origins.clone())
                .unwrap_or_default()
        })
        .unwrap_or_default()
    }

    /// Change one tenant's view (a bounded view then keeps to its budget).
    pub fn write<R>(&self, tenant: &str, f: impl FnOnce(&mut TenantView) -> R) -> Option<R> {
        let tv = self.tenant(tenant)?;
        let mut guard = tv.write().unwrap_or_else(|e| e.into_inner());
        let before = guard.subjects.bytes() as i64;
        let r = f(&mut guard);
        let after = guard.subjects.bytes() as i64;
        let held = self.held.fetch_add(after - before, Ordering::Relaxed) + after - before;
        if let Some(budget) = self.budget
            && held as usize > budget
        {
            // Down to 90% of the budget, from this tenant's share.
            let excess = held as usize - budget / 10 * 9;
            let target = (after as usize).saturating_sub(excess);
            guard.subjects.sweep(target);
            let swept = guard.subjects.bytes() as i64;
            self.held.fetch_add(swept - after, Ordering::Relaxed);
        }
        Some(r)
    }

    /// Add a tenant the view does not know yet (created by another process);
    /// one it knows is left as it is.
    pub fn add_new_tenant(&self, tenant: Tenant, purposes: Vec<Purpose>, notices: &[Notice]) {
        let mut guard = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        if !guard.contains_key(&tenant.id) {
            let mut tv = TenantView::with(tenant, purposes, notices);
            tv.bounded = self.bounded();
            guard.insert(tv.tenant.id.clone(), Arc::new(RwLock::new(tv)));
        }
    }

    pub fn add_tenant(&self, tenant: Tenant) {
        let existing = self.tenant(&tenant.id);
        match existing {
            Some(tv) => tv.write().unwrap_or_else(|e| e.into_inner()).tenant = tenant,
            None => self.add_new_tenant(tenant, Vec::new(), &[]),
        }
    }

    /// Fold committed ledger entries in (called by the writer after commit).
    pub fn apply(&self, tenant: &str, subject_id: &str, entries: &[LedgerEntry]) {
        self.write(tenant, |tv| {
            for e in entries {
                if let Some(r) = e.record() {
                    tv.apply(subject_id, &r);
                }
                tv.watermark.mark(e.seq);
            }
        });
    }

    /// Every tenant's view.
    pub(crate) fn all_tenants(&self) -> Vec<Arc<RwLock<TenantView>>> {
        let guard = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        guard.values().cloned().collect()
    }

    /// Each tenant's watermark: every seq up to it has been applied.
    pub fn watermarks(&self) -> HashMap<String, u64> {
        self.all_tenants()
            .into_iter()
            .map(|tv| {
                let tv = tv.read().unwrap_or_else(|e| e.into_inner());
                (tv.tenant.id.clone(), tv.watermark.low)
            })
            .collect()
    }

    pub fn set_flags(&self, tenant: &str, subject_id: &str, flags: SubjectFlags) {
        self.write(tenant, |tv| tv.set_flags(subject_id, flags));
    }

    /// A subject in full, read from the store when a bounded view does not
    /// hold it (and then held); `None` for an unknown tenant.
    pub async fn subject(
        &self,
        store: &dyn Store,
        tenant: &str,
        id: &str,
    ) -> Result<Option<SubjectView>, StoreError> {
        let Some(resolved) = self.read(tenant, |tv| tv.resolve(id).into_owned()) else {
            return Ok(None);
        };
        let id = resolved.as_str();
        match self.read(tenant, |tv| tv.subject(id).ok_or(tv.stripe_version(id))) {
            None => Ok(None),
            Some(Ok(held)) => Ok(Some(held)),
            Some(Err(version)) => {
                self.misses.fetch_add(1, Ordering::Relaxed);
                let records = store.subject_states(tenant, id).await?;
                let flags = self.write(tenant, |tv| {
                    // A write to the subject's stripe meanwhile: answer
                    // from what was read, keep nothing.
                    if tv.stripe_version(id) == version && !tv.subjects.contains(id) {
                        tv.hold(id, &records);
                    }
                    tv.flags(id).cloned()
                });
                Ok(flags.map(|flags| SubjectView::new(flags, records)))
            }
        }
    }

    /// One decision, reading the subject from the store when a bounded view
    /// does not hold it.
    pub async fn decide(
        &self,
        store: &dyn Store,
        tenant: &str,
        subject: &str,
        purpose: &str,
        channel: Option<Channel>,
        now: Micros,
    ) -> Result<Result<Answer, Unknown>, StoreError> {
        match self.read(tenant, |tv| tv.decide(subject, purpose, channel, now)) {
            None => Ok(Err(Unknown::Tenant)),
            Some(Err(Unknown::Subject)) => {
                let Some(s) = self.subject(store, tenant, subject).await? else {
                    return Ok(Err(Unknown::Tenant));
                };
                Ok(self
                    .read(tenant, |tv| tv.decide_for(&s, purpose, channel, now))
                    .unwrap_or(Err(Unknown::Tenant)))
            }
            Some(answer) => Ok(answer),
        }
    }

    /// Every subject of the tenant with records, in full: from memory, or
    /// for a bounded view from the store, page by page.
    pub async fn each_subject(
        &self,
        store: &dyn Store,
        tenant: &str,
        mut f: impl FnMut(&TenantView, &str, SubjectView),
    ) -> Result<(), StoreError> {
        if !self.bounded() {
            self.read(tenant, |tv| tv.each_held(|id, s| f(tv, id, s)));
            return Ok(());
        }
        let mut after = String::new();
        loop {
            let page = store.states_page(tenant, &after, 5_000).await?;
            let Some(last) = page.last() else {
                return Ok(());
            };
            after = last.id.clone();
            self.read(tenant, |tv| {
                for s in page {
                    let flags = tv.stored_flags(&s.id).cloned();
                    f(tv, &s.id, SubjectView::new(flags, s.records));
                }
            });
        }
    }

    /// Subjects and records held, bytes they take, and (bounded) how often
    /// a subject was read from the store because the view did not hold it.
    pub fn stats(&self) -> ViewStats {
        let all = self.all_tenants();
        let mut s = ViewStats {
            bounded: self.bounded(),
            budget: self.budget.unwrap_or(0) as u64,
            misses: self.misses.load(Ordering::Relaxed),
            ..ViewStats::default()
        };
        for tv in all {
            let tv = tv.read().unwrap_or_else(|e| e.into_inner());
            s.subjects += tv.subjects.len() as u64;
            s.records += tv.subjects.records() as u64;
            s.bytes += tv.subjects.bytes() as u64;
        }
        s
    }
}

impl std::fmt::Debug for View {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("View")
            .field("stats", &self.stats())
            .finish()
    }
}

/// What the view holds (for `/readyz` and `/metrics`).
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ViewStats {
    pub bounded: bool,
    pub budget: u64,
    pub subjects: u64,
    pub records: u64,
    pub bytes: u64,
    pub misses: u64,
}
