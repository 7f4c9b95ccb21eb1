//! Decisions: "may purpose P use subject S on channel C now?"
//!
//! The rules (DESIGN.md), in the order they are checked:
//! 1. an erased subject is denied everything;
//! 2. restricted processing is denied whatever the basis;
//! 3. basis `consent`, or any purpose touching sensitive data: allowed only
//!    when the effective consent is `granted`, not expired, given to a notice
//!    that has not since changed materially, and not objected to;
//! 4. `legitimate_interest`: allowed unless the subject objected;
//! 5. every other basis: allowed.

use serde::{Deserialize, Serialize};

use crate::consent::{ConsentRecord, ConsentState};
use crate::purpose::LawfulBasis;
use crate::subject::SubjectFlags;
use crate::time::Micros;

/// The parts of a purpose a decision needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PurposeRule {
    pub basis: LawfulBasis,
    pub sensitive: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Reason {
    ConsentGranted,
    LawfulBasis,
    NoConsent,
    Withdrawn,
    Expired,
    NoticeOutdated,
    Restricted,
    Objected,
    Erased,
    /// A minor's consent without a guardian's (PDPA s.20).
    GuardianRequired,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ConsentGranted => "consent_granted",
            Self::LawfulBasis => "lawful_basis",
            Self::NoConsent => "no_consent",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
            Self::NoticeOutdated => "notice_outdated",
            Self::Restricted => "restricted",
            Self::Objected => "objected",
            Self::Erased => "erased",
            Self::GuardianRequired => "guardian_required",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
}

impl Decision {
    fn allow(reason: Reason) -> Self {
        Decision {
            allowed: true,
            reason,
        }
    }
    fn deny(reason: Reason) -> Self {
        Decision {
            allowed: false,
            reason,
        }
    }
}

/// Everything a decision depends on, gathered by the caller.
pub struct Facts<'a> {
    pub purpose_key: &'a str,
    pub purpose: PurposeRule,
    pub flags: Option<&'a SubjectFlags>,
    /// The effective consent record (see `SubjectConsents::effective`).
    pub record: Option<&'a ConsentRecord>,
    /// The latest material version of the notice the consent was given
    /// under, if any version is material.
    pub latest_material_version: Option<u32>,
    pub now: Micros,
}

pub fn decide(f: &Facts<'_>) -> Decision {
    let flags = f.flags;
    if flags.is_some_and(|s| s.erased) {
        return Decision::deny(Reason::Erased);
    }
    if flags.is_some_and(|s| s.restricts(f.purpose_key)) {
        return Decision::deny(Reason::Restricted);
    }
    let objected = flags.is_some_and(|s| s.objects_to(f.purpose_key));
    if f.purpose.basis == LawfulBasis::Consent || f.purpose.sensitive {
        if objected {
            return Decision::deny(Reason::Objected);
        }
        let Some(record) = f.record else {
            return Decision::deny(Reason::NoConsent);
        };
        return match record.state_at(f.now) {
            ConsentState::Granted => {
                let outdated = match (&record.notice, f.latest_material_version) {
                    (Some(n), Some(material)) => n.version < material,
                    _ => false,
                };
                let minor = flags.is_some_and(|s| {
                    s.age_band_at(record.occurred_at) != crate::subject::AgeBand::Adult
                });
                if outdated {
                    Decision::deny(Reason::NoticeOutdated)
                } else if minor && !record.guardian {
                    Decision::deny(Reason::GuardianRequired)
                } else {
                    Decision::allow(Reason::ConsentGranted)
                }
            }
            ConsentState::Expired => Decision::deny(Reason::Expired),
            ConsentState::Withdrawn => Decision::deny(Reason::Withdrawn),
            ConsentState::Erased => Decision::deny(Reason::Erased),
            ConsentState::Denied | ConsentState::Unspecified => Decision::deny(Reason::NoConsent),
        };
    }
    if f.purpose.basis == LawfulBasis::LegitimateInterest && objected {
        return Decision::deny(Reason::Objected);
    }
    Decision::allow(Reason::LawfulBasis)
}
