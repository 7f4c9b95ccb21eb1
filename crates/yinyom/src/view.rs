//! The in-memory view of current state that decisions are served from.
//!
//! It is loaded from the store at start-up and then kept exact by the write
//! path: the writer applies every committed batch here *before* answering
//! the request that caused it, so a client that has seen its write
//! acknowledged never reads an older decision from this node.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use yinyom_core::consent::{ConsentRecord, SubjectConsents};
use yinyom_core::decision::{self, Decision, Facts};
use yinyom_core::ledger::LedgerEntry;
use yinyom_core::notice::Notice;
use yinyom_core::purpose::{Channel, Purpose};
use yinyom_core::subject::SubjectFlags;
use yinyom_core::time::Micros;

use crate::model::Tenant;
use crate::store::SubjectSnapshot;

/// What the write path needs to know of a published notice version.
#[derive(Debug, Clone)]
pub struct NoticeMeta {
    pub hash: String,
    pub purposes: Vec<String>,
    pub material: bool,
    pub url: Option<String>,
}

/// One subject as decisions see it. Kept small: the view holds every
/// subject of every tenant (flags are rare, so they live behind a pointer).
#[derive(Debug, Default)]
pub struct SubjectView {
    pub flags: Option<Box<SubjectFlags>>,
    pub consents: SubjectConsents,
}

impl SubjectView {
    pub fn erased(&self) -> bool {
        self.flags.as_ref().is_some_and(|f| f.erased)
    }
}

#[derive(Debug)]
pub struct TenantView {
    pub tenant: Tenant,
    pub purposes: HashMap<String, Purpose>,
    pub notices: HashMap<(String, u32), NoticeMeta>,
    /// Notice key → its latest version.
    pub latest_notice: HashMap<String, u32>,
    /// Notice key → its latest material version.
    pub material: HashMap<String, u32>,
    pub subjects: HashMap<String, SubjectView>,
    /// One shared copy of each purpose key, source and notice key.
    strings: HashSet<Arc<str>>,
}

/// A decision with the consent record behind it, as the API reports it.
#[derive(Debug, Clone)]
pub struct Answer<'a> {
    pub decision: Decision,
    pub record: Option<&'a ConsentRecord>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Unknown {
    Tenant,
    Purpose,
}

#[derive(Default)]
pub struct View {
    tenants: RwLock<HashMap<String, TenantView>>,
}

impl TenantView {
    pub fn new(tenant: Tenant) -> Self {
        TenantView {
            tenant,
            purposes: HashMap::new(),
            notices: HashMap::new(),
            latest_notice: HashMap::new(),
            material: HashMap::new(),
            subjects: HashMap::new(),
            strings: HashSet::new(),
        }
    }

    pub fn with(tenant: Tenant, purposes: Vec<Purpose>, notices: &[Notice]) -> Self {
        let mut tv = TenantView::new(tenant);
        for p in purposes {
            tv.purposes.insert(p.key.clone(), p);
        }
        for n in notices {
            tv.put_notice(n);
        }
        tv
    }

    fn intern(&mut self, s: &Arc<str>) -> Arc<str> {
        match self.strings.get(s) {
            Some(shared) => shared.clone(),
            None => {
                self.strings.insert(s.clone());
                s.clone()
            }
        }
    }

    /// Fold a record in, sharing its strings with every other record.
    pub fn apply(&mut self, subject_id: &str, mut record: ConsentRecord) {
        record.purpose = self.intern(&record.purpose);
        record.source = self.intern(&record.source);
        if let Some(n) = &mut record.notice {
            n.key = self.intern(&n.key);
        }
        match self.subjects.get_mut(subject_id) {
            Some(sv) => {
                sv.consents.apply(record);
            }
            None => {
                let mut sv = SubjectView::default();
                sv.consents.apply(record);
                self.subjects.insert(subject_id.to_string(), sv);
            }
        }
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

    pub fn decide(
        &self,
        subject: &str,
        purpose_key: &str,
        channel: Option<Channel>,
        now: Micros,
    ) -> Result<Answer<'_>, Unknown> {
        let purpose = self.purposes.get(purpose_key).ok_or(Unknown::Purpose)?;
        let sv = self.subjects.get(subject);
        let record = sv.and_then(|s| s.consents.effective(purpose_key, channel));
        let latest_material_version = record
            .and_then(|r| r.notice.as_ref())
            .and_then(|n| self.material.get(&*n.key).copied());
        let decision = decision::decide(&Facts {
            purpose_key,
            purpose: purpose.rule(),
            flags: sv.and_then(|s| s.flags.as_deref()),
            record,
            latest_material_version,
            now,
        });
        Ok(Answer { decision, record })
    }
}

impl View {
    pub fn load(
        tenants: Vec<(Tenant, Vec<Purpose>, Vec<Notice>)>,
        subjects: Vec<SubjectSnapshot>,
    ) -> Self {
        Self::load_iter(tenants, subjects)
    }

    pub fn load_iter(
        tenants: Vec<(Tenant, Vec<Purpose>, Vec<Notice>)>,
        subjects: impl IntoIterator<Item = SubjectSnapshot>,
    ) -> Self {
        let mut map = HashMap::new();
        for (tenant, purposes, notices) in tenants {
            let tv = TenantView::with(tenant, purposes, &notices);
            map.insert(tv.tenant.id.clone(), tv);
        }
        for s in subjects {
            if let Some(tv) = map.get_mut(&s.tenant) {
                for r in s.records {
                    tv.apply(&s.id, r);
                }
                let sv = tv.subjects.entry(s.id).or_default();
                if s.flags != SubjectFlags::default() {
                    sv.flags = Some(Box::new(s.flags));
                }
            }
        }
        View {
            tenants: RwLock::new(map),
        }
    }

    /// Read one tenant's view.
    pub fn read<R>(&self, tenant: &str, f: impl FnOnce(&TenantView) -> R) -> Option<R> {
        let guard = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        guard.get(tenant).map(f)
    }

    /// The tenant whose banner has this public site key, and the origins
    /// allowed to use it.
    pub fn tenant_by_site_key(&self, key: &str) -> Option<(String, Vec<String>)> {
        let guard = self.tenants.read().unwrap_or_else(|e| e.into_inner());
        guard.values().find_map(|tv| {
            let b = tv.tenant.banner.as_ref()?;
            (b.site_key == key).then(|| (tv.tenant.id.clone(), b.origins.clone()))
        })
    }

    /// Change one tenant's view.
    pub fn write<R>(&self, tenant: &str, f: impl FnOnce(&mut TenantView) -> R) -> Option<R> {
        let mut guard = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        guard.get_mut(tenant).map(f)
    }

    /// Add a tenant the view does not know yet (created by another process);
    /// one it knows is left as it is.
    pub fn add_new_tenant(&self, tenant: Tenant, purposes: Vec<Purpose>, notices: &[Notice]) {
        let mut guard = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        if !guard.contains_key(&tenant.id) {
            guard.insert(
                tenant.id.clone(),
                TenantView::with(tenant, purposes, notices),
            );
        }
    }

    pub fn add_tenant(&self, tenant: Tenant) {
        let mut guard = self.tenants.write().unwrap_or_else(|e| e.into_inner());
        let id = tenant.id.clone();
        match guard.get_mut(&id) {
            Some(tv) => tv.tenant = tenant,
            None => {
                guard.insert(id, TenantView::new(tenant));
            }
        }
    }

    /// Fold committed ledger entries in (called by the writer after commit).
    pub fn apply(&self, tenant: &str, subject_id: &str, entries: &[LedgerEntry]) {
        self.write(tenant, |tv| {
            for r in entries.iter().filter_map(LedgerEntry::record) {
                tv.apply(subject_id, r);
            }
        });
    }

    pub fn set_flags(&self, tenant: &str, subject_id: &str, flags: SubjectFlags) {
        self.write(tenant, |tv| {
            let sv = tv.subjects.entry(subject_id.to_string()).or_default();
            sv.flags = (flags != SubjectFlags::default()).then(|| Box::new(flags));
        });
    }
}
