//! Data-subject rights requests (PDPA ss.30–36, GDPR Arts. 12–22): what a
//! subject may ask for, the status flow a request follows, and its due date.
//!
//! ```text
//! received ──verify──▶ verified ──start──▶ in_progress ──complete──▶ completed
//!     │                   │  └──────────complete─────────────────────▲
//!     └──reject──▶ rejected ◀──reject──┴──────reject──────────────────┘
//! ```
//!
//! Nothing is carried out before the requester's identity is verified, and a
//! rejection always carries its reason (PDPA s.30 para. 3 and s.39 require the
//! controller to record it).

use serde::{Deserialize, Serialize};

use crate::Invalid;
use crate::consent::{ConsentRecord, ConsentState};
use crate::time::{MICROS_PER_DAY, Micros, from_micros, to_micros};

/// What the subject asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A copy of the personal data (PDPA s.30, GDPR Art. 15).
    Access,
    /// The data in a machine-readable format (PDPA s.31, GDPR Art. 20).
    Portability,
    /// Correct inaccurate data (PDPA s.35, GDPR Art. 16).
    Rectification,
    /// Erase or anonymise (PDPA s.33, GDPR Art. 17).
    Erasure,
    /// Restrict processing (PDPA s.34, GDPR Art. 18).
    Restriction,
    /// Object to processing, direct marketing included (PDPA s.32, GDPR Art. 21).
    Objection,
    /// Withdraw consent (PDPA s.19, GDPR Art. 7(3)).
    Withdrawal,
}

impl Kind {
    pub const ALL: [Kind; 7] = [
        Kind::Access,
        Kind::Portability,
        Kind::Rectification,
        Kind::Erasure,
        Kind::Restriction,
        Kind::Objection,
        Kind::Withdrawal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Access => "access",
            Kind::Portability => "portability",
            Kind::Rectification => "rectification",
            Kind::Erasure => "erasure",
            Kind::Restriction => "restriction",
            Kind::Objection => "objection",
            Kind::Withdrawal => "withdrawal",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Whether the request names purposes (`*` or none = every purpose).
    pub fn takes_purposes(self) -> bool {
        matches!(self, Kind::Restriction | Kind::Objection | Kind::Withdrawal)
    }
}

/// Where a request stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Received,
    Verified,
    InProgress,
    Completed,
    Rejected,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Verified => "verified",
            Status::InProgress => "in_progress",
            Status::Completed => "completed",
            Status::Rejected => "rejected",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        [
            Status::Received,
            Status::Verified,
            Status::InProgress,
            Status::Completed,
            Status::Rejected,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Completed and rejected requests are closed for good.
    pub fn is_open(self) -> bool {
        !matches!(self, Status::Completed | Status::Rejected)
    }
}

/// What staff do to a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// The requester's identity was checked.
    Verify,
    /// Work on the request began.
    Start,
    /// Carry the request out (erase, restrict, …) and close it.
    Complete,
    /// Refuse it, with the reason.
    Reject,
    /// Push the due date back, with the reason.
    Extend,
}

impl Step {
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Verify => "verify",
            Step::Start => "start",
            Step::Complete => "complete",
            Step::Reject => "reject",
            Step::Extend => "extend",
        }
    }
}

/// The status after `step`, or why it may not be taken now.
/// `reason` is required to reject or extend; `extended` says whether the
/// request was extended before (once only).
pub fn next(
    status: Status,
    step: Step,
    reason: Option<&str>,
    extended: bool,
) -> Result<Status, Invalid> {
    let reason_given = reason.is_some_and(|r| !r.trim().is_empty());
    if !status.is_open() {
        return Err(Invalid::new(
            "action",
            format!("the request is {} and cannot change", status.as_str()),
        ));
    }
    match (status, step) {
        (_, Step::Reject | Step::Extend) if !reason_given => Err(Invalid::new(
            "reason",
            format!("{} needs the reason, which is recorded", step.as_str()),
        )),
        (_, Step::Reject) => Ok(Status::Rejected),
        (_, Step::Extend) if extended => Err(Invalid::new(
            "action",
            "the request was extended already; it may be extended once",
        )),
        (s, Step::Extend) => Ok(s),
        (Status::Received, Step::Verify) => Ok(Status::Verified),
        (Status::Received, Step::Start | Step::Complete) => Err(Invalid::new(
            "action",
            "verify the requester's identity first",
        )),
        (Status::Verified, Step::Start) => Ok(Status::InProgress),
        (Status::Verified | Status::InProgress, Step::Complete) => Ok(Status::Completed),
        (s, st) => Err(Invalid::new(
            "action",
            format!("cannot {} a request that is {}", st.as_str(), s.as_str()),
        )),
    }
}

/// The law that sets a tenant's deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Law {
    /// Thailand: 30 days from receipt (PDPA s.30 para. 3).
    Pdpa,
    /// EU: one month from receipt, extendable by two further months
    /// (GDPR Art. 12(3)).
    Gdpr,
}

impl Law {
    /// The laws of a tenant's jurisdictions (`TH`, `EU`); PDPA when none.
    pub fn of(jurisdictions: &[String]) -> Vec<Law> {
        let mut laws = Vec::new();
        if jurisdictions.iter().any(|j| j == "TH") || jurisdictions.is_empty() {
            laws.push(Law::Pdpa);
        }
        if jurisdictions.iter().any(|j| j == "EU") {
            laws.push(Law::Gdpr);
        }
        if laws.is_empty() {
            laws.push(Law::Pdpa);
        }
        laws
    }

    pub fn due(self, received: Micros) -> Micros {
        match self {
            Law::Pdpa => received + 30 * MICROS_PER_DAY,
            Law::Gdpr => add_months(received, 1),
        }
    }

    /// The latest a due date may be pushed back to.
    pub fn extended(self, due: Micros) -> Micros {
        match self {
            // The PDPA names no extension; the Office's guidance accepts a
            // reasoned delay, which we cap at another 30 days.
            Law::Pdpa => due + 30 * MICROS_PER_DAY,
            Law::Gdpr => add_months(due, 2),
        }
    }
}

/// The due date under every law that applies: the earliest one.
pub fn due_at(jurisdictions: &[String], received: Micros) -> Micros {
    Law::of(jurisdictions)
        .into_iter()
        .map(|l| l.due(received))
        .min()
        .unwrap_or(received + 30 * MICROS_PER_DAY)
}

/// When a subject whose data came from a third party must have been told
/// (PDPA s.25: within 30 days of collection; GDPR Art. 14(3)(a): within a
/// month at the latest): the earliest under the tenant's laws.
pub fn third_party_notice_due(jurisdictions: &[String], acquired_at: Micros) -> Micros {
    due_at(jurisdictions, acquired_at)
}

/// The due date after an extension: again the earliest any law allows.
pub fn extended_due(jurisdictions: &[String], due: Micros) -> Micros {
    Law::of(jurisdictions)
        .into_iter()
        .map(|l| l.extended(due))
        .min()
        .unwrap_or(due)
}

/// The same time of day `n` calendar months later; the month's last day when
/// the day does not exist (31 January + 1 month = 28/29 February), as the
/// Court of Justice reads "one month" (Reg. 1182/71).
pub fn add_months(t: Micros, n: u32) -> Micros {
    let at = from_micros(t);
    let total = at.year() * 12 + (at.month() as i32 - 1) + n as i32;
    let (year, month) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let month = time::Month::try_from(month as u8).expect("1..=12");
    let last = time::util::days_in_month(month, year);
    let day = at.day().min(last);
    let date = time::Date::from_calendar_date(year, month, day).expect("a valid day");
    to_micros(at.replace_date(date))
}

/// Whether a subject's data has outlived every purpose it was held for:
/// no consent stands granted at `now`, and each choice ended (its time, or
/// its expiry) more than that purpose's retention ago. A subject without
/// consent records is never due (its data may be held on another basis).
/// `retention_days` gives a purpose's retention (none: unknown purpose,
/// which keeps the subject).
pub fn retention_over(
    records: &[ConsentRecord],
    retention_days: impl Fn(&str) -> Option<u32>,
    now: Micros,
) -> bool {
    !records.is_empty()
        && records.iter().all(|r| {
            if r.state_at(now) == ConsentState::Granted {
                return false;
            }
            let ended = match (r.state, r.expires_at) {
                (ConsentState::Granted, Some(exp)) => exp,
                _ => r.occurred_at,
            };
            retention_days(&r.purpose).is_some_and(|d| ended + i64::from(d) * MICROS_PER_DAY <= now)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;

    fn at(s: &str) -> Micros {
        parse_rfc3339(s).unwrap()
    }

    #[test]
    fn pdpa_s30_gives_thirty_days_and_gdpr_art12_one_month() {
        let th = vec!["TH".to_string()];
        let eu = vec!["EU".to_string()];
        let r = at("2026-01-31T10:00:00Z");
        assert_eq!(due_at(&th, r), at("2026-03-02T10:00:00Z"));
        assert_eq!(due_at(&eu, r), at("2026-02-28T10:00:00Z"));
        let both = vec!["TH".to_string(), "EU".to_string()];
        assert_eq!(due_at(&both, r), at("2026-02-28T10:00:00Z"), "the earlier");
        assert_eq!(
            extended_due(&eu, at("2026-02-28T10:00:00Z")),
            at("2026-04-28T10:00:00Z")
        );
        assert_eq!(
            add_months(at("2024-01-31T00:00:00Z"), 1),
            at("2024-02-29T00:00:00Z")
        );
        assert_eq!(
            add_months(at("2026-12-15T00:00:00Z"), 1),
            at("2027-01-15T00:00:00Z")
        );
    }

    #[test]
    fn retention_ends_only_when_every_choice_ended_longer_ago_than_its_purpose_keeps_data() {
        let day = MICROS_PER_DAY;
        let rec = |purpose: &str, state, at, exp| ConsentRecord {
            purpose: purpose.into(),
            channel: None,
            state,
            seq: 1,
            occurred_at: at,
            expires_at: exp,
            notice: None,
            source: "web".into(),
            guardian: false,
        };
        let days = |p: &str| match p {
            "short" => Some(10),
            "long" => Some(100),
            _ => None,
        };
        let now = 1_000 * day;
        let withdrawn = rec("short", ConsentState::Withdrawn, now - 11 * day, None);
        assert!(retention_over(std::slice::from_ref(&withdrawn), days, now));
        assert!(!retention_over(
            &[
                withdrawn.clone(),
                rec("long", ConsentState::Withdrawn, now - 11 * day, None)
            ],
            days,
            now
        ));
        assert!(
            !retention_over(
                &[rec("short", ConsentState::Granted, now - 50 * day, None)],
                days,
                now
            ),
            "still granted"
        );
        let lapsed = rec(
            "short",
            ConsentState::Granted,
            now - 50 * day,
            Some(now - 9 * day),
        );
        assert!(
            !retention_over(std::slice::from_ref(&lapsed), days, now),
            "expired 9 days ago"
        );
        let lapsed = rec(
            "short",
            ConsentState::Granted,
            now - 50 * day,
            Some(now - 10 * day),
        );
        assert!(retention_over(&[lapsed], days, now));
        assert!(!retention_over(&[], days, now));
        assert!(!retention_over(
            &[rec("gone", ConsentState::Denied, 0, None)],
            days,
            now
        ));
    }

    #[test]
    fn nothing_is_carried_out_before_verification_and_rejections_need_a_reason() {
        use Status::*;
        use Step::*;
        assert!(next(Received, Complete, None, false).is_err());
        assert!(next(Received, Start, None, false).is_err());
        assert_eq!(next(Received, Verify, None, false), Ok(Verified));
        assert_eq!(next(Verified, Complete, None, false), Ok(Completed));
        assert_eq!(next(Verified, Start, None, false), Ok(InProgress));
        assert_eq!(next(InProgress, Complete, None, false), Ok(Completed));
        assert!(next(Received, Reject, None, false).is_err());
        assert!(next(Received, Reject, Some("  "), false).is_err());
        assert_eq!(
            next(Received, Reject, Some("not the subject"), false),
            Ok(Rejected)
        );
        assert_eq!(next(Verified, Extend, Some("large"), false), Ok(Verified));
        assert!(next(Verified, Extend, Some("again"), true).is_err());
        for closed in [Completed, Rejected] {
            for step in [Verify, Start, Complete, Reject, Extend] {
                assert!(next(closed, step, Some("r"), false).is_err());
            }
        }
        assert!(next(Verified, Verify, None, false).is_err());
    }
}
