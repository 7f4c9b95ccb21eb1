//! Purposes: why personal data is processed, on which lawful basis, which
//! kinds of data and which channels they touch.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::validate::{self, Invalid};

/// Languages Yinyom speaks to people in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Lang {
    Th,
    En,
}

/// The lawful bases of PDPA s.24 / GDPR Art. 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum LawfulBasis {
    Consent,
    Contract,
    LegalObligation,
    VitalInterest,
    PublicTask,
    LegitimateInterest,
    ResearchStatistics,
}

impl LawfulBasis {
    pub const ALL: [LawfulBasis; 7] = [
        Self::Consent,
        Self::Contract,
        Self::LegalObligation,
        Self::VitalInterest,
        Self::PublicTask,
        Self::LegitimateInterest,
        Self::ResearchStatistics,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Consent => "consent",
            Self::Contract => "contract",
            Self::LegalObligation => "legal_obligation",
            Self::VitalInterest => "vital_interest",
            Self::PublicTask => "public_task",
            Self::LegitimateInterest => "legitimate_interest",
            Self::ResearchStatistics => "research_statistics",
        }
    }
}

/// PDPA s.26 / GDPR Art. 9 distinguish sensitive data (health, biometrics,
/// religion, …), which needs explicit consent whatever else is claimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Sensitivity {
    General,
    Sensitive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DataCategory {
    pub name: String,
    pub sensitivity: Sensitivity,
}

/// Where a person can be reached or observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Channel {
    Email,
    Sms,
    Phone,
    Line,
    Push,
    Post,
    Web,
}

impl Channel {
    pub const ALL: [Channel; 7] = [
        Self::Email,
        Self::Sms,
        Self::Phone,
        Self::Line,
        Self::Push,
        Self::Post,
        Self::Web,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Sms => "sms",
            Self::Phone => "phone",
            Self::Line => "line",
            Self::Push => "push",
            Self::Post => "post",
            Self::Web => "web",
        }
    }

    pub fn parse(s: &str) -> Option<Channel> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// A purpose as registered by the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Purpose {
    pub key: String,
    pub names: BTreeMap<Lang, String>,
    #[serde(default)]
    pub descriptions: BTreeMap<Lang, String>,
    pub basis: LawfulBasis,
    #[serde(default)]
    pub categories: Vec<DataCategory>,
    #[serde(default)]
    pub channels: Vec<Channel>,
    /// How long data collected for this purpose is kept, in days.
    pub retention_days: u32,
    /// How long a consent stays valid after it is given, in days; none means
    /// until withdrawn.
    #[serde(default)]
    pub validity_days: Option<u32>,
    /// Who receives the data (processors, other controllers), for the
    /// record of processing (PDPA s.39, GDPR Art. 30).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recipients: Vec<String>,
    /// Grants on email, SMS or LINE wait until the subject confirms them
    /// from a message sent to that contact point (double opt-in).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub double_opt_in: bool,
    /// Shown as a cookie category in the website banner when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub banner: Option<BannerCategory>,
}

/// How a purpose appears in the website banner: the Google Consent Mode
/// signals it grants, whether it is a sale or sharing of personal data
/// (Global Privacy Control opts people out of those), and the cookies to
/// clear when it is withdrawn.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct BannerCategory {
    #[serde(default)]
    pub consent_mode: Vec<String>,
    /// A sale or sharing of personal data, or targeted advertising (CCPA/CPRA
    /// "sale or sharing"): Global Privacy Control opts people out. A banner
    /// submission that carries GPC (`Sec-GPC: 1`, or `evidence.gpc`) never
    /// grants such a purpose: the server records it as denied, with `gpc`
    /// in the evidence.
    #[serde(default)]
    pub sale_or_sharing: bool,
    /// Cookie names; a trailing `*` matches a prefix (`_ga_*`).
    #[serde(default)]
    pub cookies: Vec<String>,
}

/// The Google Consent Mode v2 signals a banner category may grant.
pub const CONSENT_MODE_SIGNALS: [&str; 7] = [
    "ad_storage",
    "analytics_storage",
    "ad_user_data",
    "ad_personalization",
    "functionality_storage",
    "personalization_storage",
    "security_storage",
];

impl BannerCategory {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (i, s) in self.consent_mode.iter().enumerate() {
            if !CONSENT_MODE_SIGNALS.contains(&s.as_str()) {
                return Err(Invalid::new(
                    format!("banner.consent_mode/{i}"),
                    format!("must be one of {}", CONSENT_MODE_SIGNALS.join(", ")),
                ));
            }
        }
        if self.cookies.len() > 50 {
            return Err(Invalid::new("banner.cookies", "at most 50 cookies"));
        }
        for (i, c) in self.cookies.iter().enumerate() {
            let name = c.strip_suffix('*').unwrap_or(c);
            // RFC 6265 cookie-name token characters, minus the ones that need quoting.
            let ok = !name.is_empty()
                && name.len() <= 100
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'+-.^_`|~".contains(&b));
            if !ok {
                return Err(Invalid::new(
                    format!("banner.cookies/{i}"),
                    "must be a cookie name, optionally ending in * to match a prefix",
                ));
            }
        }
        Ok(())
    }
}

impl Purpose {
    pub fn is_sensitive(&self) -> bool {
        self.categories
            .iter()
            .any(|c| c.sensitivity == Sensitivity::Sensitive)
    }

    /// Whether processing rests on a consent the subject can grant and
    /// withdraw: the basis is consent, or the purpose touches sensitive data.
    pub fn requires_consent(&self) -> bool {
        self.basis == LawfulBasis::Consent || self.is_sensitive()
    }

    pub fn rule(&self) -> crate::decision::PurposeRule {
        crate::decision::PurposeRule {
            basis: self.basis,
            sensitive: self.is_sensitive(),
        }
    }

    /// Whether `channel` may carry a consent for this purpose. A purpose
    /// without channels accepts only purpose-wide consents.
    pub fn allows_channel(&self, channel: Option<Channel>) -> bool {
        match channel {
            None => true,
            Some(c) => self.channels.contains(&c),
        }
    }

    pub fn validate(&self) -> Result<(), Invalid> {
        validate::key("key", &self.key)?;
        if self.names.is_empty() {
            return Err(Invalid::new(
                "names",
                "needs a name in at least one language (th, en)",
            ));
        }
        for (lang, name) in &self.names {
            validate::text(&format!("names.{}", lang_str(*lang)), name, 200)?;
        }
        for (lang, d) in &self.descriptions {
            validate::text(&format!("descriptions.{}", lang_str(*lang)), d, 4000)?;
        }
        for (i, c) in self.categories.iter().enumerate() {
            validate::text(&format!("categories/{i}/name"), &c.name, 100)?;
        }
        for (i, r) in self.recipients.iter().enumerate() {
            validate::text(&format!("recipients/{i}"), r, 200)?;
        }
        let mut seen = self.channels.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != self.channels.len() {
            return Err(Invalid::new("channels", "lists a channel twice"));
        }
        if self.retention_days == 0 {
            return Err(Invalid::new("retention_days", "must be at least 1 day"));
        }
        match self.validity_days {
            Some(0) => return Err(Invalid::new("validity_days", "must be at least 1 day")),
            Some(v) if v > self.retention_days => {
                return Err(Invalid::new(
                    "validity_days",
                    "consent validity cannot outlast the retention period",
                ));
            }
            _ => {}
        }
        if let Some(b) = &self.banner {
            b.validate()?;
        }
        Ok(())
    }
}

pub fn lang_str(l: Lang) -> &'static str {
    match l {
        Lang::Th => "th",
        Lang::En => "en",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn purpose(basis: LawfulBasis) -> Purpose {
        Purpose {
            key: "marketing.email".into(),
            names: [(Lang::En, "Email marketing".to_string())].into(),
            descriptions: BTreeMap::new(),
            basis,
            categories: vec![],
            channels: vec![Channel::Email],
            retention_days: 365,
            validity_days: Some(180),
            recipients: vec![],
            double_opt_in: false,
            banner: None,
        }
    }

    #[test]
    fn banner_categories_name_known_signals_and_cookie_names() {
        let mut p = purpose(LawfulBasis::Consent);
        p.banner = Some(BannerCategory {
            consent_mode: vec!["analytics_storage".into()],
            sale_or_sharing: false,
            cookies: vec!["_ga".into(), "_ga_*".into()],
        });
        assert!(p.validate().is_ok());
        p.banner.as_mut().unwrap().consent_mode.push("ads".into());
        assert_eq!(p.validate().unwrap_err().field, "banner.consent_mode/1");
        p.banner.as_mut().unwrap().consent_mode.pop();
        for bad in ["", "*", "a b", "a;b", "<x>"] {
            p.banner.as_mut().unwrap().cookies = vec![bad.into()];
            assert_eq!(
                p.validate().unwrap_err().field,
                "banner.cookies/0",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn sensitive_data_requires_consent_whatever_the_basis() {
        let mut p = purpose(LawfulBasis::Contract);
        assert!(!p.requires_consent());
        p.categories.push(DataCategory {
            name: "health".into(),
            sensitivity: Sensitivity::Sensitive,
        });
        assert!(p.requires_consent());
    }

    #[test]
    fn validity_longer_than_retention_is_rejected() {
        let mut p = purpose(LawfulBasis::Consent);
        p.validity_days = Some(400);
        assert_eq!(p.validate().unwrap_err().field, "validity_days");
        p.validity_days = Some(365);
        assert!(p.validate().is_ok());
    }

    #[test]
    fn keys_are_url_and_subject_safe() {
        let mut p = purpose(LawfulBasis::Consent);
        for bad in ["", "Marketing", "a b", ".x", "x/y", "ยินยอม"] {
            p.key = bad.into();
            assert!(p.validate().is_err(), "{bad:?} accepted");
        }
    }
}
