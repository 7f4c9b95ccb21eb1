//! Turning a consent request into a [`WriteItem`]: every check that must pass
//! before anything is written. Shared by `POST /v1/consents` and `import`,
//! so a CRM import obeys the same rules as the API.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use yinyom_core::Invalid;
use yinyom_core::consent::Action;
use yinyom_core::notice::NoticeRef;
use yinyom_core::purpose::Channel;
use yinyom_core::subject::{self, AgeBand};
use yinyom_core::time::{self, MICROS_PER_DAY, Micros};

use crate::store::{Idempotency, PreparedAction, WriteItem};
use crate::view::TenantView;

/// Body of `POST /v1/consents`.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    /// The controller's identifier for the subject (`cust-42`).
    pub subject: String,
    /// The notice version shown to the subject; required for grants.
    #[serde(default)]
    pub notice: Option<NoticeSelector>,
    /// `web`, `app`, `crm`, `call_center`, `import`, `preference_center`, …
    pub source: String,
    /// Proof of the choice: IP, user agent, locale, form, double opt-in.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub evidence: Option<serde_json::Value>,
    /// When the subject made the choice (RFC 3339); defaults to now.
    #[serde(default)]
    pub occurred_at: Option<String>,
    pub actions: Vec<ActionRequest>,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NoticeSelector {
    pub key: String,
    pub version: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ActionRequest {
    pub purpose: String,
    #[serde(default)]
    pub channel: Option<Channel>,
    pub action: Action,
}

/// Where a request comes from: imports may carry history (past times,
/// grants recorded before notices were versioned, expiries).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Api,
    Import,
}

/// Why a request was refused; `kind` is the problem type's slug.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub kind: &'static str,
    pub field: String,
    pub detail: String,
}

impl Rejected {
    fn new(kind: &'static str, field: impl Into<String>, detail: impl Into<String>) -> Self {
        Rejected {
            kind,
            field: field.into(),
            detail: detail.into(),
        }
    }
}

impl From<Invalid> for Rejected {
    fn from(i: Invalid) -> Self {
        Rejected::new("validation", i.field, i.reason)
    }
}

/// Clocks disagree a little; a choice "made" further in the future than
/// this is refused rather than allowed to override later choices.
const MAX_CLOCK_SKEW: Micros = 5 * 60 * 1_000_000;
const MAX_ACTIONS: usize = 100;
const MAX_EVIDENCE_BYTES: usize = 16 * 1024;

pub fn validate_source(source: &str) -> Result<(), Rejected> {
    let ok = !source.is_empty()
        && source.len() <= 32
        && source
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Rejected::new(
            "validation",
            "source",
            "must be 1-32 characters of a-z, 0-9 or '_'",
        ))
    }
}

pub fn prepare(
    tv: &TenantView,
    req: ConsentRequest,
    actor: &str,
    origin: Origin,
    idempotency: Option<Idempotency>,
    now: Micros,
) -> Result<WriteItem, Rejected> {
    subject::validate_id(&req.subject)?;
    validate_source(&req.source)?;
    if tv.erased(&req.subject) || req.subject.starts_with(crate::vault::ERASED_PREFIX) {
        return Err(Rejected::new(
            "subject-erased",
            "subject",
            "the subject has been erased",
        ));
    }
    if req.actions.is_empty() {
        return Err(Rejected::new(
            "validation",
            "actions",
            "must hold at least one action",
        ));
    }
    if req.actions.len() > MAX_ACTIONS {
        return Err(Rejected::new(
            "validation",
            "actions",
            format!("at most {MAX_ACTIONS} actions per request"),
        ));
    }
    if let Some(ev) = &req.evidence {
        if !ev.is_object() {
            return Err(Rejected::new(
                "validation",
                "evidence",
                "must be a JSON object",
            ));
        }
        if ev.to_string().len() > MAX_EVIDENCE_BYTES {
            return Err(Rejected::new(
                "validation",
                "evidence",
                "must be at most 16 KiB",
            ));
        }
    }
    let occurred_at = match &req.occurred_at {
        None => now,
        Some(s) => time::parse_rfc3339(s).ok_or_else(|| {
            Rejected::new("validation", "occurred_at", "must be an RFC 3339 date-time")
        })?,
    };
    if occurred_at > now + MAX_CLOCK_SKEW {
        return Err(Rejected::new(
            "validation",
            "occurred_at",
            "is in the future",
        ));
    }
    if occurred_at < 0 {
        return Err(Rejected::new("validation", "occurred_at", "is before 1970"));
    }
    let notice = match &req.notice {
        None => None,
        Some(sel) => {
            let meta = tv
                .notices
                .get(&(sel.key.clone(), sel.version))
                .ok_or_else(|| {
                    Rejected::new(
                        "unknown-notice",
                        "notice",
                        format!("notice {:?} has no version {}", sel.key, sel.version),
                    )
                })?;
            Some((
                NoticeRef {
                    key: sel.key.clone(),
                    version: sel.version,
                    hash: meta.hash.clone(),
                },
                meta,
            ))
        }
    };
    let guardian = guardian_named(req.evidence.as_ref())?;
    let mut seen = HashSet::new();
    let mut actions = Vec::with_capacity(req.actions.len());
    for (i, a) in req.actions.iter().enumerate() {
        let field = |f: &str| format!("actions/{i}/{f}");
        if !Action::CONSENT.contains(&a.action) {
            return Err(Rejected::new(
                "validation",
                field("action"),
                "must be grant, deny, withdraw or expire; restriction and objection are rights requests (POST /v1/requests)",
            ));
        }
        let purpose = tv.purposes.get(&a.purpose).ok_or_else(|| {
            Rejected::new(
                "unknown-purpose",
                field("purpose"),
                format!("purpose {:?} does not exist", a.purpose),
            )
        })?;
        if !purpose.requires_consent() {
            return Err(Rejected::new(
                "basis-not-consent",
                field("purpose"),
                format!(
                    "purpose {:?} rests on {}, not consent; record an objection or restriction instead",
                    a.purpose,
                    purpose.basis.as_str()
                ),
            ));
        }
        if !purpose.allows_channel(a.channel) {
            return Err(Rejected::new(
                "validation",
                field("channel"),
                format!("purpose {:?} is not used on this channel", a.purpose),
            ));
        }
        if a.action == Action::Expire && origin == Origin::Api {
            return Err(Rejected::new(
                "validation",
                field("action"),
                "expiry is recorded by the system",
            ));
        }
        if !seen.insert((a.purpose.as_str(), a.channel)) {
            return Err(Rejected::new(
                "validation",
                field("purpose"),
                "the same purpose and channel appear twice",
            ));
        }
        match &notice {
            Some((n, meta)) if !meta.purposes.contains(&a.purpose) => {
                return Err(Rejected::new(
                    "validation",
                    field("purpose"),
                    format!(
                        "notice {:?} version {} does not ask for {:?}",
                        n.key, n.version, a.purpose
                    ),
                ));
            }
            None if a.action == Action::Grant && origin == Origin::Api => {
                return Err(Rejected::new(
                    "notice-required",
                    "notice",
                    "a grant must name the notice version the subject was shown",
                ));
            }
            _ => {}
        }
        let expires_at = match (a.action, purpose.validity_days) {
            (Action::Grant, Some(days)) => Some(occurred_at + days as Micros * MICROS_PER_DAY),
            _ => None,
        };
        actions.push(PreparedAction {
            purpose: a.purpose.clone(),
            channel: a.channel,
            action: a.action,
            expires_at,
        });
    }
    // PDPA s.20: a minor's consent needs the guardian's (under 10, only
    // the guardian may give it).
    let band = tv
        .flags(&req.subject)
        .map_or(AgeBand::Adult, |f| f.age_band_at(occurred_at));
    if origin == Origin::Api
        && band != AgeBand::Adult
        && !guardian
        && actions.iter().any(|a| a.action == Action::Grant)
    {
        return Err(Rejected::new(
            "guardian-required",
            "evidence.guardian",
            match band {
                AgeBand::Under10 => {
                    "the subject is under 10: only a guardian may consent; name the guardian and the relationship in evidence.guardian (PDPA s.20)"
                }
                _ => {
                    "the subject is a minor: the guardian must consent too; name the guardian and the relationship in evidence.guardian (PDPA s.20)"
                }
            },
        ));
    }
    Ok(WriteItem {
        guardian,
        tenant: tv.tenant.id.clone(),
        subject_id: req.subject,
        actor: actor.to_string(),
        source: req.source,
        notice: notice.map(|(n, _)| n),
        evidence: req.evidence,
        occurred_at,
        actions,
        idempotency,
        receipt: None,
    })
}

/// Whether the evidence names a guardian (`{"guardian": {"name": …,
/// "relationship": …}}`); a malformed one is refused.
fn guardian_named(evidence: Option<&serde_json::Value>) -> Result<bool, Rejected> {
    let Some(g) = evidence.and_then(|e| e.get("guardian")) else {
        return Ok(false);
    };
    let text = |k: &str| {
        g.get(k)
            .and_then(|v| v.as_str())
            .is_some_and(|s| !s.trim().is_empty() && s.len() <= 200)
    };
    if !text("name") || !text("relationship") {
        return Err(Rejected::new(
            "validation",
            "evidence.guardian",
            "must name the guardian (`name`) and the relationship (`relationship`, e.g. parent)",
        ));
    }
    Ok(true)
}
