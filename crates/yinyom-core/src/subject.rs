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
    Ok(())
}

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
}

impl SubjectFlags {
    pub fn restricts(&self, purpose: &str) -> bool {
        self.restricted.contains("*") || self.restricted.contains(purpose)
    }

    pub fn objects_to(&self, purpose: &str) -> bool {
        self.objected.contains("*") || self.objected.contains(purpose)
    }
}
