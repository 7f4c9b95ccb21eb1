//! Consent change events: what the outbox holds and what webhooks, NATS
//! and the event stream carry. One event per ledger entry: consent
//! changes, and restriction/objection changes of a subject.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use yinyom_core::consent::{Action, ConsentState};
use yinyom_core::ledger::LedgerEntry;
use yinyom_core::purpose::Channel;
use yinyom_core::time;

/// Every event type, for filters.
pub const TYPES: [&str; 8] = [
    "consent.granted",
    "consent.denied",
    "consent.withdrawn",
    "consent.expired",
    "subject.restricted",
    "subject.objected",
    "subject.restriction_lifted",
    "subject.objection_lifted",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentEvent {
    /// Stable across retries and replays: `evt_<tenant>_<seq>`.
    pub id: String,
    /// `consent.granted`, `consent.denied`, `consent.withdrawn`, `consent.expired`;
    /// or a change of the subject's flags for `purpose` (`*`: all):
    /// `subject.restricted`, `subject.objected`, `subject.restriction_lifted`,
    /// `subject.objection_lifted` (`before` = `after`: no consent changed).
    #[serde(rename = "type")]
    pub kind: String,
    pub tenant: String,
    /// The subject's pseudonymous id (never the identifiers given to Yinyom).
    pub subject: String,
    pub purpose: String,
    /// `null`: purpose-wide.
    pub channel: Option<Channel>,
    pub action: Action,
    /// The state in force before and after this event (equal when an older
    /// event, e.g. an imported one, was recorded after a newer one).
    pub before: ConsentState,
    pub after: ConsentState,
    pub ledger: LedgerRef,
    pub occurred_at: String,
    pub recorded_at: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct LedgerRef {
    pub seq: u64,
    pub hash: String,
}

pub fn kind(action: Action) -> &'static str {
    match action {
        Action::Grant => TYPES[0],
        Action::Deny => TYPES[1],
        Action::Withdraw => TYPES[2],
        Action::Expire => TYPES[3],
        Action::Restrict => TYPES[4],
        Action::Object => TYPES[5],
        Action::LiftRestriction => TYPES[6],
        Action::LiftObjection => TYPES[7],
    }
}

impl ConsentEvent {
    pub fn new(entry: &LedgerEntry, before: ConsentState, after: ConsentState) -> ConsentEvent {
        let b = &entry.body;
        ConsentEvent {
            id: format!("evt_{}_{}", b.tenant, entry.seq),
            kind: kind(b.action).to_string(),
            tenant: b.tenant.clone(),
            subject: b.subject_uid.clone(),
            purpose: b.purpose.clone(),
            channel: b.channel,
            action: b.action,
            before,
            after,
            ledger: LedgerRef {
                seq: entry.seq,
                hash: entry.hash.clone(),
            },
            occurred_at: time::rfc3339(b.occurred_at),
            recorded_at: time::rfc3339(b.recorded_at),
        }
    }
}
