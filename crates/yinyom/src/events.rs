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
pub const TYPES: [&str; 14] = [
    "consent.granted",
    "consent.denied",
    "consent.withdrawn",
    "consent.expired",
    "subject.restricted",
    "subject.objected",
    "subject.restriction_lifted",
    "subject.objection_lifted",
    "consent.erased",
    "subject.erased",
    "request.received",
    "request.completed",
    "deadline.approaching",
    "deadline.missed",
];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentEvent {
    /// Stable across retries and replays: `evt_<tenant>_<seq>`.
    pub id: String,
    /// `consent.granted`, `consent.denied`, `consent.withdrawn`, `consent.expired`,
    /// `consent.erased` (one per record of an erased subject);
    /// or a change of the subject's flags for `purpose` (`*`: all):
    /// `subject.restricted`, `subject.objected`, `subject.restriction_lifted`,
    /// `subject.objection_lifted` (`before` = `after`: no consent changed);
    /// `subject.erased` (purpose `*`, the last event of an erasure);
    /// `request.received`, `request.completed` (purpose `*`, `request` set);
    /// `deadline.approaching`, `deadline.missed` (purpose `*`, `deadline`
    /// set; the subject is the tenant's `system:deadlines` pseudo-subject,
    /// never a person).
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
    /// The rights request that caused the event (an erasure, a
    /// restriction), when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<String>,
    /// `subject.erased`: what each connected system did with the erasure
    /// (empty when none takes part). The event is written once every
    /// system finished, so the outcomes are final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub systems: Option<Vec<SystemOutcome>>,
    /// `deadline.*`: which deadline, when it is due, how long is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline: Option<DeadlineRef>,
}

/// The deadline a `deadline.approaching` / `deadline.missed` event is about.
/// No personal data: ids and times only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DeadlineRef {
    /// `request` (a rights request), `breach` (the 72 hours to the
    /// regulator) or `notice` (PDPA s.25 notices due on one day).
    pub kind: String,
    /// The request's or breach's id; for `notice`, `s25:<YYYY-MM-DD>`.
    pub id: String,
    pub due_at: String,
    /// Seconds left when the event was written (negative: overdue).
    pub remaining: i64,
}

/// The actor of a deadline event's ledger entry.
pub fn deadline_actor(kind: &str, id: &str, due_at: time::Micros) -> String {
    format!("deadline:{kind}:{id}:{due_at}")
}

fn deadline_of(actor: &str, occurred_at: time::Micros) -> Option<DeadlineRef> {
    let rest = actor.strip_prefix("deadline:")?;
    let (kind, rest) = rest.split_once(':')?;
    let (id, due) = rest.rsplit_once(':')?;
    let due: time::Micros = due.parse().ok()?;
    Some(DeadlineRef {
        kind: kind.to_string(),
        id: id.to_string(),
        due_at: time::rfc3339(due),
        remaining: (due - occurred_at).div_euclid(1_000_000),
    })
}

/// One connected system's part in carrying out a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SystemOutcome {
    pub key: String,
    /// `done` (carried out by Yinyom), `manual` (a manual system,
    /// confirmed by staff); in a request's view also `pending`, `running`,
    /// `failed`.
    pub status: String,
    #[serde(default)]
    pub rows: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
        Action::Erase => TYPES[8],
        Action::EraseSubject => TYPES[9],
        Action::RequestReceived => TYPES[10],
        Action::RequestCompleted => TYPES[11],
        Action::DeadlineApproaching => TYPES[12],
        Action::DeadlineMissed => TYPES[13],
    }
}

/// Whether an event passes a filter of purposes (empty: all). An event of
/// every purpose (`*`: a restriction, an objection, an erasure) concerns
/// each; a rights request's own events and deadline reminders concern none
/// in particular, so a purpose filter leaves them out.
pub fn for_purposes(purposes: &[String], kind: &str, purpose: &str) -> bool {
    purposes.is_empty()
        || (purpose == "*" && !kind.starts_with("request.") && !kind.starts_with("deadline."))
        || purposes.iter().any(|p| p == purpose)
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
            request: b.actor.strip_prefix("request:").map(str::to_string),
            systems: (b.action == Action::EraseSubject).then(Vec::new),
            deadline: matches!(
                b.action,
                Action::DeadlineApproaching | Action::DeadlineMissed
            )
            .then(|| deadline_of(&b.actor, b.occurred_at))
            .flatten(),
        }
    }
}
