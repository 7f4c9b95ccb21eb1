//! Consent events and the consent state they fold into.
//!
//! State is a pure function of the ledger: for each (subject, purpose,
//! channel) the event with the greatest `(occurred_at, seq)` wins. Ordering
//! by when a choice was *made* (not recorded) lets an import of old CRM
//! history land after newer web choices without overriding them; `seq`
//! breaks ties deterministically.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::purpose::Channel;
use crate::time::Micros;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Action {
    Grant,
    Deny,
    Withdraw,
    /// Written by the system when a consent outlives its validity.
    Expire,
    /// The subject restricted processing for the purpose (`*`: all), PDPA
    /// s.34, GDPR Art. 18. Entries of this and the next three kinds record
    /// a change of the subject's flags: they are chained and propagated
    /// like consent changes, but no consent state follows from them.
    Restrict,
    /// The subject objected to processing for the purpose (`*`: all),
    /// direct marketing included (PDPA s.32, GDPR Art. 21).
    Object,
    LiftRestriction,
    LiftObjection,
    /// Written by an erasure, one per record the subject held: the record
    /// becomes `erased` (never exported as granted, never revived).
    Erase,
    /// The last entry an erasure writes (purpose `*`): the subject was
    /// erased. Sets no consent state; carried as `subject.erased`.
    EraseSubject,
    /// A rights request of the subject was received / completed (purpose
    /// `*`, actor `request:<id>`): chained as proof of handling (PDPA s.39)
    /// and carried as `request.received` / `request.completed`; no state.
    RequestReceived,
    RequestCompleted,
    /// A deadline (a rights request's, a breach's 72 hours to the
    /// regulator, PDPA s.25 notices) comes near / passed unmet (purpose
    /// `*`, actor `deadline:<kind>:<id>:<due_at>`, on the tenant's
    /// `system:deadlines` subject): carried as `deadline.approaching` /
    /// `deadline.missed`; no state.
    DeadlineApproaching,
    DeadlineMissed,
}

impl Action {
    /// What `POST /v1/consents` records: choices that set a consent state.
    pub const CONSENT: [Action; 4] = [Self::Grant, Self::Deny, Self::Withdraw, Self::Expire];
    /// Changes of the subject's restriction and objection flags.
    pub const FLAGS: [Action; 4] = [
        Self::Restrict,
        Self::Object,
        Self::LiftRestriction,
        Self::LiftObjection,
    ];
    pub const ALL: [Action; 14] = [
        Self::Grant,
        Self::Deny,
        Self::Withdraw,
        Self::Expire,
        Self::Restrict,
        Self::Object,
        Self::LiftRestriction,
        Self::LiftObjection,
        Self::Erase,
        Self::EraseSubject,
        Self::RequestReceived,
        Self::RequestCompleted,
        Self::DeadlineApproaching,
        Self::DeadlineMissed,
    ];

    /// The consent state this action sets; none for flag changes.
    pub fn state(self) -> Option<ConsentState> {
        match self {
            Self::Grant => Some(ConsentState::Granted),
            Self::Deny => Some(ConsentState::Denied),
            Self::Withdraw => Some(ConsentState::Withdrawn),
            Self::Expire => Some(ConsentState::Expired),
            Self::Erase => Some(ConsentState::Erased),
            Self::Restrict
            | Self::Object
            | Self::LiftRestriction
            | Self::LiftObjection
            | Self::EraseSubject
            | Self::RequestReceived
            | Self::RequestCompleted
            | Self::DeadlineApproaching
            | Self::DeadlineMissed => None,
        }
    }

    pub fn is_consent(self) -> bool {
        self.state().is_some()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Grant => "grant",
            Self::Deny => "deny",
            Self::Withdraw => "withdraw",
            Self::Expire => "expire",
            Self::Restrict => "restrict",
            Self::Object => "object",
            Self::LiftRestriction => "lift_restriction",
            Self::LiftObjection => "lift_objection",
            Self::Erase => "erase",
            Self::EraseSubject => "erase_subject",
            Self::RequestReceived => "request_received",
            Self::RequestCompleted => "request_completed",
            Self::DeadlineApproaching => "deadline_approaching",
            Self::DeadlineMissed => "deadline_missed",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        Self::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ConsentState {
    Unspecified,
    Granted,
    Denied,
    Withdrawn,
    Expired,
    /// The subject was erased: the record stays (pseudonymous proof) but
    /// nothing may follow from it.
    Erased,
}

impl ConsentState {
    /// Every state.
    pub const ALL: [ConsentState; 6] = [
        Self::Unspecified,
        Self::Granted,
        Self::Denied,
        Self::Withdrawn,
        Self::Expired,
        Self::Erased,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Granted => "granted",
            Self::Denied => "denied",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
            Self::Erased => "erased",
        }
    }

    /// The three values a CRM shows.
    pub fn tri_state(self) -> &'static str {
        match self {
            Self::Unspecified => "unspecified",
            Self::Granted => "consented",
            _ => "not_consented",
        }
    }

    /// The action that, recorded now, produces this state (for imports that
    /// carry a state rather than an action). None for `erased`: an import
    /// never writes an erasure; it skips the record.
    pub fn action(self) -> Option<Action> {
        match self {
            Self::Unspecified | Self::Erased => None,
            Self::Granted => Some(Action::Grant),
            Self::Denied => Some(Action::Deny),
            Self::Withdrawn => Some(Action::Withdraw),
            Self::Expired => Some(Action::Expire),
        }
    }

    pub fn parse(s: &str) -> Option<ConsentState> {
        [
            Self::Unspecified,
            Self::Granted,
            Self::Denied,
            Self::Withdrawn,
            Self::Expired,
            Self::Erased,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// The notice version a consent was given under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoticeVersion {
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub key: Arc<str>,
    pub version: u32,
}

/// The current consent for one (subject, purpose, channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConsentRecord {
    // Shared strings: millions of records name the same few purposes,
    // sources and notices, and the decision view holds them all.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub purpose: Arc<str>,
    pub channel: Option<Channel>,
    pub state: ConsentState,
    /// Ledger entry that set this state.
    pub seq: u64,
    pub occurred_at: Micros,
    pub expires_at: Option<Micros>,
    pub notice: Option<NoticeVersion>,
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub source: Arc<str>,
    /// A guardian gave or joined this consent (PDPA s.20).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub guardian: bool,
}

impl ConsentRecord {
    /// The order in which choices supersede each other.
    pub fn order(&self) -> (Micros, u64) {
        (self.occurred_at, self.seq)
    }

    /// The state as it stands at `now`: a grant past its validity is expired
    /// even before the expiry job has written the `expire` entry.
    pub fn state_at(&self, now: Micros) -> ConsentState {
        state_at(self.state, self.expires_at, now)
    }
}

/// A recorded state as it stands at `now`: a grant past its validity is
/// expired even before the expiry job has written the `expire` entry.
pub fn state_at(state: ConsentState, expires_at: Option<Micros>, now: Micros) -> ConsentState {
    match (state, expires_at) {
        (ConsentState::Granted, Some(exp)) if exp <= now => ConsentState::Expired,
        (s, _) => s,
    }
}

/// All consent records of one subject, kept small: a subject rarely has more
/// than a handful of purposes × channels.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubjectConsents {
    pub records: Vec<ConsentRecord>,
}

impl SubjectConsents {
    /// Fold one event in. Returns whether it changed the state (an event
    /// older than the current record is kept in the ledger, not in state).
    pub fn apply(&mut self, event: ConsentRecord) -> bool {
        match self
            .records
            .iter_mut()
            .find(|r| r.purpose == event.purpose && r.channel == event.channel)
        {
            Some(current) if current.order() >= event.order() => false,
            Some(current) => {
                *current = event;
                true
            }
            None => {
                self.records.push(event);
                true
            }
        }
    }

    pub fn get(&self, purpose: &str, channel: Option<Channel>) -> Option<&ConsentRecord> {
        self.records
            .iter()
            .find(|r| &*r.purpose == purpose && r.channel == channel)
    }

    /// The record that answers "may `purpose` use this subject on `channel`".
    ///
    /// On a channel: the latest of the channel's own record and the
    /// purpose-wide one (a purpose-wide withdrawal after a channel grant
    /// withdraws that channel too).
    ///
    /// Without a channel, the question is about the purpose as a whole, so
    /// the most restrictive choice still in force answers: among the
    /// purpose-wide record and the channel records made after it, the latest
    /// one that is not a grant if there is one, else the latest grant. A grant
    /// for email alone never lets the whole purpose proceed over a refusal
    /// on another channel.
    pub fn effective(&self, purpose: &str, channel: Option<Channel>) -> Option<&ConsentRecord> {
        effective(
            self.records.iter().filter(|r| &*r.purpose == purpose),
            channel,
        )
    }
}

/// What the rule for the effective record needs to know of a record of one
/// purpose: [`ConsentRecord`] here, the decision view's compact form there.
pub trait Choice {
    fn channel(&self) -> Option<Channel>;
    fn order(&self) -> (Micros, u64);
    fn is_grant(&self) -> bool;
}

impl Choice for ConsentRecord {
    fn channel(&self) -> Option<Channel> {
        self.channel
    }
    fn order(&self) -> (Micros, u64) {
        ConsentRecord::order(self)
    }
    fn is_grant(&self) -> bool {
        self.state == ConsentState::Granted
    }
}

/// The record, among `of_purpose` (the records of one purpose), that answers
/// "may the purpose use this subject on `channel`" (see
/// [`SubjectConsents::effective`], which is this rule on full records).
pub fn effective<'a, C: Choice + 'a>(
    of_purpose: impl Iterator<Item = &'a C> + Clone,
    channel: Option<Channel>,
) -> Option<&'a C> {
    if channel.is_some() {
        return of_purpose
            .filter(|r| r.channel().is_none() || r.channel() == channel)
            .max_by_key(|r| r.order());
    }
    let wide = of_purpose.clone().find(|r| r.channel().is_none());
    let in_force = of_purpose.filter(|r| wide.is_none_or(|w| r.order() >= w.order()));
    let mut refusal: Option<&C> = None;
    let mut grant: Option<&C> = None;
    for r in in_force {
        let slot = if r.is_grant() {
            &mut grant
        } else {
            &mut refusal
        };
        if slot.is_none_or(|s| r.order() >= s.order()) {
            *slot = Some(r);
        }
    }
    refusal.or(grant)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(channel: Option<Channel>, action: Action, at: Micros, seq: u64) -> ConsentRecord {
        ConsentRecord {
            purpose: "p".into(),
            channel,
            state: action.state().unwrap(),
            seq,
            occurred_at: at,
            expires_at: None,
            notice: None,
            source: "web".into(),
            guardian: false,
        }
    }

    #[test]
    fn older_choices_do_not_override_newer_ones() {
        let mut s = SubjectConsents::default();
        assert!(s.apply(rec(None, Action::Grant, 200, 1)));
        assert!(!s.apply(rec(None, Action::Withdraw, 100, 2)));
        assert_eq!(s.get("p", None).unwrap().state, ConsentState::Granted);
    }

    #[test]
    fn a_purpose_wide_withdrawal_covers_every_channel() {
        let mut s = SubjectConsents::default();
        s.apply(rec(Some(Channel::Email), Action::Grant, 100, 1));
        s.apply(rec(None, Action::Withdraw, 200, 2));
        let eff = s.effective("p", Some(Channel::Email)).unwrap();
        assert_eq!(eff.state, ConsentState::Withdrawn);
        s.apply(rec(Some(Channel::Email), Action::Grant, 300, 3));
        assert_eq!(
            s.effective("p", Some(Channel::Email)).unwrap().state,
            ConsentState::Granted
        );
        assert_eq!(
            s.effective("p", Some(Channel::Sms)).unwrap().state,
            ConsentState::Withdrawn
        );
    }

    #[test]
    fn without_a_channel_the_most_restrictive_choice_in_force_answers() {
        let mut s = SubjectConsents::default();
        s.apply(rec(None, Action::Withdraw, 100, 1));
        s.apply(rec(Some(Channel::Email), Action::Grant, 200, 2));
        // The purpose-wide withdrawal still holds for every other channel.
        assert_eq!(
            s.effective("p", None).unwrap().state,
            ConsentState::Withdrawn
        );
        s.apply(rec(None, Action::Grant, 300, 3));
        assert_eq!(s.effective("p", None).unwrap().state, ConsentState::Granted);
        s.apply(rec(Some(Channel::Sms), Action::Deny, 400, 4));
        assert_eq!(s.effective("p", None).unwrap().state, ConsentState::Denied);
    }

    #[test]
    fn grants_past_their_validity_read_as_expired() {
        let mut r = rec(None, Action::Grant, 100, 1);
        r.expires_at = Some(500);
        assert_eq!(r.state_at(499), ConsentState::Granted);
        assert_eq!(r.state_at(500), ConsentState::Expired);
    }
}
