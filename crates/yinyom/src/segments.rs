//! Evaluating segment filters (`yinyom_core::segment`) over a tenant's
//! subjects: profile attributes come from the sealed profiles (opened one
//! page at a time), event counts from one grouped query per `events(…)`
//! term, and the consent filter from the in-memory view.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use utoipa::ToSchema;
use yinyom_core::purpose::Channel;
use yinyom_core::segment::{EventTerm, Facts, Segment};
use yinyom_core::time;

use crate::profiles::{self, Subject};
use crate::services::Services;
use crate::store::{Store, StoreError};

const PAGE: u32 = 2_000;

struct SubjectFacts<'a> {
    attributes: &'a serde_json::Map<String, serde_json::Value>,
    uid: &'a str,
    counts: &'a HashMap<EventTerm, HashMap<String, u64>>,
}

impl Facts for SubjectFacts<'_> {
    fn attribute(&self, path: &[&str]) -> Option<&serde_json::Value> {
        let (first, rest) = path.split_first()?;
        let mut v = self.attributes.get(*first)?;
        for p in rest {
            v = v.as_object()?.get(*p)?;
        }
        Some(v)
    }

    fn event_count(&self, term: &EventTerm) -> u64 {
        self.counts
            .get(term)
            .and_then(|m| m.get(self.uid))
            .copied()
            .unwrap_or(0)
    }
}

async fn event_counts(
    store: &dyn Store,
    tenant: &str,
    seg: &Segment,
) -> Result<HashMap<EventTerm, HashMap<String, u64>>, StoreError> {
    let now = time::now();
    let mut counts = HashMap::new();
    for term in seg.event_terms() {
        let since = now - term.window_secs * 1_000_000;
        let c = store.event_counts(tenant, &term.name, since).await?;
        counts.insert(term, c);
    }
    Ok(counts)
}

/// Visit every subject with a profile that matches `seg` (all of them
/// without a segment), a page at a time.
async fn each_match(
    svc: &Services,
    tenant: &str,
    seg: Option<&Segment>,
    mut visit: impl FnMut(Subject),
) -> Result<(), StoreError> {
    let counts = match seg {
        Some(s) => event_counts(svc.store.as_ref(), tenant, s).await?,
        None => HashMap::new(),
    };
    let keys = svc.vault.tenant(svc.store.as_ref(), tenant).await?;
    let mut after = String::new();
    loop {
        let page = svc.store.profiles(tenant, &after, PAGE).await?;
        let Some(last) = page.last() else {
            return Ok(());
        };
        after = last.id.clone();
        for record in page {
            let subject = profiles::open(&keys, record)?;
            let keep = seg.is_none_or(|s| {
                s.matches(&SubjectFacts {
                    attributes: &subject.profile.attributes,
                    uid: &subject.record.uid,
                    counts: &counts,
                })
            });
            if keep {
                visit(subject);
            }
        }
    }
}

/// The subjects matching a segment.
pub async fn members(
    svc: &Services,
    tenant: &str,
    seg: &Segment,
) -> Result<Vec<Subject>, StoreError> {
    let mut out = Vec::new();
    each_match(svc, tenant, Some(seg), |s| out.push(s)).await?;
    Ok(out)
}

/// How a segment splits under the consent filter of one purpose and channel.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct Evaluation {
    /// Subjects matching the filter.
    pub matched: u64,
    /// Of those, allowed for the purpose on the channel.
    pub allowed: u64,
    /// The others, per reason (`no_consent`, `withdrawn`, …).
    pub suppressed: BTreeMap<String, u64>,
    /// Up to 20 allowed subjects' ids.
    pub sample: Vec<String>,
}

pub async fn evaluate(
    svc: &Services,
    tenant: &str,
    seg: Option<&Segment>,
    purpose: &str,
    channel: Option<Channel>,
) -> Result<Evaluation, StoreError> {
    let now = time::now();
    let mut ids = Vec::new();
    each_match(svc, tenant, seg, |s| ids.push(s.record.id)).await?;
    let mut e = Evaluation::default();
    for id in ids {
        e.matched += 1;
        match svc
            .view
            .decide(svc.store.as_ref(), tenant, &id, purpose, channel, now)
            .await?
        {
            Ok(a) if a.decision.allowed => {
                e.allowed += 1;
                if e.sample.len() < 20 {
                    e.sample.push(id);
                }
            }
            Ok(a) => {
                *e.suppressed
                    .entry(a.decision.reason.as_str().into())
                    .or_default() += 1
            }
            Err(_) => *e.suppressed.entry("unknown_purpose".into()).or_default() += 1,
        }
    }
    Ok(e)
}

/// A consent that needs renewal: given under an older version of a notice
/// than its latest material one.
#[derive(Debug, Serialize, ToSchema)]
pub struct Renewal {
    pub subject: String,
    #[schema(value_type = String)]
    pub purpose: std::sync::Arc<str>,
    pub channel: Option<Channel>,
    /// The version the subject agreed to.
    pub agreed_version: u32,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Renewals {
    pub notice: String,
    /// The latest material version; none: no version is material, nothing
    /// needs renewal.
    pub material_version: Option<u32>,
    /// Sorted by subject.
    pub subjects: Vec<Renewal>,
}

/// Every standing grant under `notice` given before its latest material
/// version: these subjects must agree again (decisions answer
/// `notice_outdated` until they do).
pub async fn renewals(
    svc: &Services,
    tenant: &str,
    notice: &str,
) -> Result<Renewals, crate::api::problem::Problem> {
    use crate::api::problem::Problem;
    let now = time::now();
    let material = svc
        .view
        .read(tenant, |tv| {
            tv.latest_notice
                .contains_key(notice)
                .then(|| tv.material.get(notice).copied())
        })
        .ok_or_else(|| Problem::not_found("the tenant does not exist"))?
        .ok_or_else(|| Problem::not_found(format!("notice {notice:?} does not exist")))?;
    let mut subjects = Vec::new();
    if let Some(m) = material {
        svc.view
            .each_subject(svc.store.as_ref(), tenant, |_, id, s| {
                if s.erased() {
                    return;
                }
                for r in &s.consents.records {
                    let Some(n) = &r.notice else { continue };
                    if &*n.key == notice
                        && n.version < m
                        && r.state_at(now) == yinyom_core::consent::ConsentState::Granted
                    {
                        subjects.push(Renewal {
                            subject: id.to_string(),
                            purpose: r.purpose.clone(),
                            channel: r.channel,
                            agreed_version: n.version,
                        });
                    }
                }
            })
            .await?;
    }
    subjects.sort_by(|a, b| a.subject.cmp(&b.subject).then(a.purpose.cmp(&b.purpose)));
    Ok(Renewals {
        notice: notice.to_string(),
        material_version: material,
        subjects,
    })
}
