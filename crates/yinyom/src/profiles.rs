//! Subject profiles (the customer-data side): identifiers, contact points
//! and attributes, sealed per subject (see [`crate::vault`]) and found by
//! keyed hashes of their normalised identifiers.
//!
//! Writers read, change and compare-and-swap on the row's `rev`, so two
//! concurrent changes of one profile (an `identify` from the tracker and a
//! CRM update) both land.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use yinyom_core::contact::ContactKind;
use yinyom_core::subject::SubjectFlags;
use yinyom_core::time;

use crate::model::{ProfileWrite, SubjectRecord};
use crate::services::Services;
use crate::store::StoreError;
use crate::vault::{TenantKeys, VaultError};

/// Lookup kinds beyond contact points.
pub const CUSTOMER_ID: &str = "customer_id";
pub const ANONYMOUS_ID: &str = "anonymous_id";
/// An anonymous id belongs to one person: linking it elsewhere moves it.
const EXCLUSIVE: &[&str] = &[ANONYMOUS_ID];
const ATTEMPTS: usize = 8;

/// What a profile holds, sealed as JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    /// Normalised contact points: email, E.164 phone, LINE user id.
    #[serde(default)]
    pub contacts: BTreeMap<ContactKind, String>,
    #[serde(default)]
    pub customer_id: Option<String>,
    /// Device/browser ids linked to this person by `identify`/`alias`.
    #[serde(default)]
    pub anonymous_ids: BTreeSet<String>,
    #[serde(default)]
    pub attributes: serde_json::Map<String, serde_json::Value>,
}

impl Profile {
    fn lookups(&self, keys: &TenantKeys) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .contacts
            .iter()
            .map(|(k, v)| (k.as_str().to_string(), keys.lookup_hash(k.as_str(), v)))
            .collect();
        if let Some(c) = &self.customer_id {
            out.push((CUSTOMER_ID.into(), keys.lookup_hash(CUSTOMER_ID, c)));
        }
        for a in &self.anonymous_ids {
            out.push((ANONYMOUS_ID.into(), keys.lookup_hash(ANONYMOUS_ID, a)));
        }
        out
    }
}

/// A subject with its profile opened.
#[derive(Debug, Clone)]
pub struct Subject {
    pub record: SubjectRecord,
    pub profile: Profile,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError<E> {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The change itself refused (bad input).
    #[error("refused")]
    Refused(E),
}

impl<E> From<VaultError> for ProfileError<E> {
    fn from(e: VaultError) -> Self {
        ProfileError::Store(e.into())
    }
}

/// Open a stored subject's profile.
pub fn open(keys: &TenantKeys, record: SubjectRecord) -> Result<Subject, VaultError> {
    let profile = match (&record.data_key, &record.profile) {
        (Some(dk), Some(blob)) => {
            let dk = keys.unwrap_data_key(&record.uid, dk)?;
            serde_json::from_slice(&dk.open(blob)?).map_err(|_| VaultError::Corrupt)?
        }
        _ => Profile::default(),
    };
    Ok(Subject { record, profile })
}

/// Read and open one subject.
pub async fn read(svc: &Services, tenant: &str, id: &str) -> Result<Option<Subject>, StoreError> {
    let Some(record) = svc.store.subject(tenant, &svc.resolve(tenant, id)).await? else {
        return Ok(None);
    };
    let keys = svc.vault.tenant(svc.store.as_ref(), tenant).await?;
    Ok(Some(open(&keys, record)?))
}

/// Subjects holding an identifier (`kind` is a contact kind, `customer_id`
/// or `anonymous_id`; `value` normalised).
pub async fn find(
    svc: &Services,
    tenant: &str,
    kind: &str,
    value: &str,
) -> Result<Vec<Subject>, StoreError> {
    let keys = svc.vault.tenant(svc.store.as_ref(), tenant).await?;
    let hash = keys.lookup_hash(kind, value);
    let mut out = Vec::new();
    for record in svc.store.subjects_by_lookup(tenant, kind, &hash).await? {
        out.push(open(&keys, record)?);
    }
    Ok(out)
}

/// Create or change a subject's profile (and optionally its flags) with
/// `change`, retried on concurrent writes. `change` sees the current
/// profile (empty for a new subject) and may refuse with its own error.
pub async fn modify<E>(
    svc: &Services,
    tenant: &str,
    id: &str,
    flags: Option<SubjectFlags>,
    mut change: impl FnMut(&mut Profile) -> Result<(), E>,
) -> Result<Subject, ProfileError<E>> {
    let keys = svc.vault.tenant(svc.store.as_ref(), tenant).await?;
    for _ in 0..ATTEMPTS {
        let current = svc.store.subject(tenant, id).await?;
        let (uid, rev, data_key, wrapped, mut profile) = match current {
            Some(record) => {
                let (dk, wrapped) = match &record.data_key {
                    Some(w) => (keys.unwrap_data_key(&record.uid, w)?, w.clone()),
                    None => keys.new_data_key(&record.uid),
                };
                let s = open(&keys, record.clone())?;
                (record.uid, Some(record.rev), dk, wrapped, s.profile)
            }
            None => {
                let uid = uuid::Uuid::now_v7().to_string();
                let (dk, wrapped) = keys.new_data_key(&uid);
                (uid, None, dk, wrapped, Profile::default())
            }
        };
        change(&mut profile).map_err(ProfileError::Refused)?;
        let plain = serde_json::to_vec(&profile).expect("a profile serialises");
        let write = ProfileWrite {
            id: id.to_string(),
            uid: uid.clone(),
            rev,
            data_key: wrapped,
            profile: data_key.seal(&plain),
            lookups: profile.lookups(&keys),
            exclusive: EXCLUSIVE,
            flags: flags.clone(),
        };
        if svc.store.put_profile(tenant, &write, time::now()).await? {
            let record = svc
                .store
                .subject(tenant, id)
                .await?
                .ok_or(StoreError::NotFound)?;
            if let Some(f) = &flags {
                svc.view.set_flags(tenant, id, f.clone());
            }
            return Ok(Subject { record, profile });
        }
    }
    Err(ProfileError::Store(StoreError::Unavailable(
        "the profile kept changing under concurrent writes; try again".into(),
    )))
}

/// Encrypt profiles stored in clear by earlier versions (identifiers and
/// attributes columns), once, at start-up.
pub async fn seal_clear_profiles(svc: &Services) -> Result<u64, StoreError> {
    let mut done = 0;
    loop {
        let batch = svc.store.clear_profiles(500).await?;
        if batch.is_empty() {
            return Ok(done);
        }
        for (tenant, id, identifiers, attributes) in batch {
            let identifiers: BTreeMap<String, String> =
                serde_json::from_str(&identifiers).unwrap_or_default();
            let attributes: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&attributes).unwrap_or_default();
            modify::<()>(svc, &tenant, &id, None, |p| {
                for (k, v) in &identifiers {
                    match k.as_str() {
                        CUSTOMER_ID => p.customer_id = Some(v.clone()),
                        ANONYMOUS_ID => {
                            p.anonymous_ids.insert(v.clone());
                        }
                        other => {
                            if let Some(kind) = ContactKind::parse(other) {
                                let v = kind.normalize(v).unwrap_or_else(|_| v.clone());
                                p.contacts.insert(kind, v);
                            }
                        }
                    }
                }
                p.attributes.extend(attributes.clone());
                Ok(())
            })
            .await
            .map_err(|e| match e {
                ProfileError::Store(e) => e,
                ProfileError::Refused(()) => StoreError::Unavailable("refused".into()),
            })?;
            done += 1;
        }
    }
}
