//! Personal data breaches (PDPA s.37(4), GDPR Arts. 33–34): who must be
//! told, and by when.
//!
//! The controller notifies the regulator (the PDPC Office; the supervisory
//! authority) without delay and within 72 hours of becoming aware of a
//! breach, unless it is unlikely to result in a risk to people's rights and
//! freedoms; when the risk is high, the people affected are told too,
//! without delay. A late notification states the reasons for the delay.

use serde::{Deserialize, Serialize};

use crate::Invalid;
use crate::time::Micros;

/// Hours from discovery to the regulator's deadline.
pub const REGULATOR_HOURS: i64 = 72;

/// The controller's assessment of the breach's risk to people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Unlikely to result in a risk: recorded, nobody need be notified.
    Unlikely,
    /// A risk: the regulator is notified within 72 hours.
    Risk,
    /// A high risk: the regulator, and the people affected without delay.
    High,
}

/// Who is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    Regulator,
    Subjects,
}

impl Risk {
    pub fn regulator_required(self) -> bool {
        self != Risk::Unlikely
    }

    pub fn subjects_required(self) -> bool {
        self == Risk::High
    }
}

pub fn regulator_due(discovered_at: Micros) -> Micros {
    discovered_at + REGULATOR_HOURS * 3_600_000_000
}

/// Whether the regulator should have been told by `now` and was not.
pub fn regulator_overdue(
    risk: Risk,
    discovered_at: Micros,
    regulator_notified_at: Option<Micros>,
    now: Micros,
) -> bool {
    risk.regulator_required()
        && regulator_notified_at.is_none()
        && regulator_due(discovered_at) < now
}

/// Check a notification's time: not before the breach was discovered, not
/// in the future; a late one to the regulator must give the reasons.
pub fn check_notification(
    to: Recipient,
    discovered_at: Micros,
    at: Micros,
    now: Micros,
    delay_reason: Option<&str>,
) -> Result<(), Invalid> {
    if at < discovered_at {
        return Err(Invalid::new("at", "is before the breach was discovered"));
    }
    if at > now + 60_000_000 {
        return Err(Invalid::new("at", "is in the future"));
    }
    let late = at > regulator_due(discovered_at);
    if to == Recipient::Regulator && late && delay_reason.is_none_or(|r| r.trim().is_empty()) {
        return Err(Invalid::new(
            "delay_reason",
            "the notification is later than 72 hours after discovery: give the reasons for the delay (GDPR Art. 33(1))",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Micros = 3_600_000_000;

    #[test]
    fn pdpa_s37_the_regulator_is_due_72_hours_after_discovery_unless_the_risk_is_unlikely() {
        let d = 1_000 * H;
        assert_eq!(regulator_due(d), d + 72 * H);
        assert!(!regulator_overdue(Risk::Risk, d, None, d + 72 * H));
        assert!(regulator_overdue(Risk::Risk, d, None, d + 72 * H + 1));
        assert!(regulator_overdue(Risk::High, d, None, d + 100 * H));
        assert!(!regulator_overdue(Risk::Unlikely, d, None, d + 100 * H));
        assert!(!regulator_overdue(
            Risk::Risk,
            d,
            Some(d + 80 * H),
            d + 100 * H
        ));
        assert!(Risk::High.subjects_required() && !Risk::Risk.subjects_required());
    }

    #[test]
    fn late_regulator_notifications_give_reasons_and_times_are_checked() {
        let d = 1_000 * H;
        let now = d + 200 * H;
        assert!(check_notification(Recipient::Regulator, d, d + 10 * H, now, None).is_ok());
        let e = check_notification(Recipient::Regulator, d, d + 73 * H, now, None).unwrap_err();
        assert_eq!(e.field, "delay_reason");
        assert!(
            check_notification(Recipient::Regulator, d, d + 73 * H, now, Some("forensics")).is_ok()
        );
        assert!(check_notification(Recipient::Subjects, d, d + 73 * H, now, None).is_ok());
        assert_eq!(
            check_notification(Recipient::Subjects, d, d - 1, now, None)
                .unwrap_err()
                .field,
            "at"
        );
        assert_eq!(
            check_notification(Recipient::Subjects, d, now + H, now, None)
                .unwrap_err()
                .field,
            "at"
        );
    }
}
