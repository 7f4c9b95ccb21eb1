//! Subjects: the people consent is about, and the flags from their rights
//! requests that decisions honour immediately.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::validate::Invalid;

/// The identifier a controller uses for a subject (`cust-42`). The ledger
/// never stores it: it stores the subject's random `uid`, so that erasing the
/// mapping leaves only pseudonymous proof behind.
pub fn validate_id(id: &str) -> Result<(), Invalid> {
    if id.is_empty() || id.len() > 200 {
        return Err(Invalid::new("subject", "must be 1-200 bytes"));
    }
    if id.chars().any(|c| c.is_control() || c == '/') {
        return Err(Invalid::new(
            "subject",
            "must not contain control characters or '/'",
        ));
    }
    if id.starts_with(RESERVED_PREFIX) {
        return Err(Invalid::new(
            "subject",
            "must not start with 'system:': that prefix names Yinyom's own records (deadline reminders)",
        ));
    }
    Ok(())
}

/// Subject ids Yinyom writes under itself (`system:deadlines`, which carries
/// deadline reminders in the ledger); no client may name one.
pub const RESERVED_PREFIX: &str = "system:";

/// Restriction (PDPA s.34, GDPR Art. 18) and objection (PDPA s.32,
/// GDPR Art. 21) as they stand for one subject, plus erasure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SubjectFlags {
    #[serde(default)]
    pub erased: bool,
    /// Purposes whose processing is restricted; `*` restricts all.
    #[serde(default)]
    pub restricted: BTreeSet<String>,
    /// Purposes the subject objected to; `*` objects to all.
    #[serde(default)]
    pub objected: BTreeSet<String>,
    /// Date of birth (`YYYY-MM-DD`), when known: decides whether a consent
    /// needs a guardian (PDPA s.20).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub born_on: Option<String>,
    /// The age band declared when the date of birth is not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_band: Option<AgeBand>,
}

/// Age bands of PDPA s.20 (the age of majority in Thailand is 20).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum AgeBand {
    /// Under 10: only the guardian may consent.
    #[serde(rename = "under_10")]
    Under10,
    /// 10 to 19: the minor consents, and the guardian too.
    #[serde(rename = "10_to_19")]
    From10To19,
    #[serde(rename = "adult")]
    Adult,
}

/// The date a `YYYY-MM-DD` names, checked.
pub fn parse_birth_date(s: &str) -> Result<time::Date, Invalid> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, &format)
        .map_err(|_| Invalid::new("flags.born_on", "must be a date as YYYY-MM-DD"))
}

impl SubjectFlags {
    pub fn restricts(&self, purpose: &str) -> bool {
        self.restricted.contains("*") || self.restricted.contains(purpose)
    }

    /// The subject's age band at `at`: from the date of birth, else the
    /// declared band, else adult (nothing says otherwise).
    pub fn age_band_at(&self, at: crate::time::Micros) -> AgeBand {
        if let Some(born) = self
            .born_on
            .as_deref()
            .and_then(|b| parse_birth_date(b).ok())
        {
            let day = crate::time::from_micros(at).date();
            let mut years = day.year() - born.year();
            if (day.month() as u8, day.day()) < (born.month() as u8, born.day()) {
                years -= 1;
            }
            return match years {
                y if y < 10 => AgeBand::Under10,
                y if y < 20 => AgeBand::From10To19,
                _ => AgeBand::Adult,
            };
        }
        self.age_band.unwrap_or(AgeBand::Adult)
    }

    pub fn objects_to(&self, purpose: &str) -> bool {
        self.objected.contains("*") || self.objected.contains(purpose)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::parse_rfc3339;

    #[test]
    fn ids_yinyom_writes_under_itself_are_refused() {
        assert!(validate_id("cust-42").is_ok());
        assert!(validate_id("system-owner@example.com").is_ok());
        let e = validate_id("system:deadlines").unwrap_err();
        assert_eq!(e.field, "subject");
        assert!(validate_id("a/b").is_err());
        assert!(validate_id("").is_err());
    }

    #[test]
    fn pdpa_s20_majority_comes_on_the_twentieth_birthday() {
        let flags = SubjectFlags {
            born_on: Some("2006-03-15".into()),
            ..SubjectFlags::default()
        };
        let at = |s: &str| parse_rfc3339(s).unwrap();
        assert_eq!(
            flags.age_band_at(at("2016-03-14T23:59:59Z")),
            AgeBand::Under10
        );
        assert_eq!(
            flags.age_band_at(at("2016-03-15T00:00:00Z")),
            AgeBand::From10To19
        );
        assert_eq!(
            flags.age_band_at(at("2026-03-14T12:00:00Z")),
            AgeBand::From10To19
        );
        assert_eq!(
            flags.age_band_at(at("2026-03-15T00:00:00Z")),
            AgeBand::Adult
        );
        let declared = SubjectFlags {
            age_band: Some(AgeBand::Under10),
            ..SubjectFlags::default()
        };
        assert_eq!(declared.age_band_at(0), AgeBand::Under10);
        assert_eq!(SubjectFlags::default().age_band_at(0), AgeBand::Adult);
        assert!(parse_birth_date("2006-02-30").is_err());
        assert!(parse_birth_date("15/03/2006").is_err());
    }
}
