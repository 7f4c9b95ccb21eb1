//! Contact points of data subjects: validation, the normalised form that is
//! stored and hashed for lookups, and masks for staff who may not see them.

use serde::{Deserialize, Serialize};

use crate::purpose::Channel;
use crate::validate::Invalid;

/// The kinds of contact point a subject profile holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ContactKind {
    Email,
    Phone,
    LineId,
}

const MAX_INPUT: usize = 320;

impl ContactKind {
    pub const ALL: [ContactKind; 3] = [Self::Email, Self::Phone, Self::LineId];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Email => "email",
            Self::Phone => "phone",
            Self::LineId => "line_id",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The channels a contact point of this kind reaches.
    pub fn channels(self) -> &'static [Channel] {
        match self {
            Self::Email => &[Channel::Email],
            Self::Phone => &[Channel::Sms, Channel::Phone],
            Self::LineId => &[Channel::Line],
        }
    }

    /// The kind of contact point a channel delivers to.
    pub fn for_channel(c: Channel) -> Option<Self> {
        match c {
            Channel::Email => Some(Self::Email),
            Channel::Sms | Channel::Phone => Some(Self::Phone),
            Channel::Line => Some(Self::LineId),
            _ => None,
        }
    }

    /// Validate and normalise a value: the canonical form stored and hashed.
    pub fn normalize(self, value: &str) -> Result<String, Invalid> {
        let field = self.as_str();
        if value.len() > MAX_INPUT {
            return Err(Invalid::new(
                field,
                format!("must be at most {MAX_INPUT} bytes"),
            ));
        }
        if value.chars().any(char::is_control) {
            return Err(Invalid::new(field, "must not contain control characters"));
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(Invalid::new(field, "must not be empty"));
        }
        match self {
            Self::Email => normalize_email(value),
            Self::Phone => normalize_phone(value),
            Self::LineId => normalize_line_id(value),
        }
    }

    /// Mask a normalised value for people who may not see it in clear.
    pub fn mask(self, normalized: &str) -> String {
        match self {
            Self::Email => mask_email(normalized),
            Self::Phone => mask_phone(normalized),
            Self::LineId => {
                let tail: String = normalized
                    .chars()
                    .rev()
                    .take(4)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                format!("U***{tail}")
            }
        }
    }
}

fn normalize_email(value: &str) -> Result<String, Invalid> {
    let bad = |why: &str| Err(Invalid::new("email", why.to_string()));
    if value.len() > 254 {
        return bad("must be at most 254 bytes");
    }
    if value.contains(['<', '>', '"', ' ']) {
        return bad("must be a bare address (local@domain), without a display name");
    }
    let parsed: email_address::EmailAddress = match value.parse() {
        Ok(p) => p,
        Err(_) => return bad("is not a valid email address"),
    };
    let domain = parsed.domain();
    if !domain.contains('.') || domain.starts_with('[') || domain.ends_with('.') {
        return bad("needs a domain name with a dot (example.com)");
    }
    Ok(value.to_lowercase())
}

fn normalize_phone(value: &str) -> Result<String, Invalid> {
    let invalid = || {
        Invalid::new(
            "phone",
            "is not a valid phone number (Thai national, or +country code)",
        )
    };
    if value.chars().any(|c| c.is_alphabetic()) {
        return Err(invalid());
    }
    let number =
        phonenumber::parse(Some(phonenumber::country::Id::TH), value).map_err(|_| invalid())?;
    if !number.is_valid() {
        return Err(invalid());
    }
    Ok(number.format().mode(phonenumber::Mode::E164).to_string())
}

fn normalize_line_id(value: &str) -> Result<String, Invalid> {
    let ok = value.len() == 33
        && value.starts_with('U')
        && value[1..].bytes().all(|b| b.is_ascii_hexdigit());
    if ok {
        Ok(format!("U{}", value[1..].to_ascii_lowercase()))
    } else {
        Err(Invalid::new(
            "line_id",
            "must be a LINE user id: U followed by 32 hexadecimal digits",
        ))
    }
}

fn mask_email(normalized: &str) -> String {
    match normalized.rsplit_once('@') {
        Some((local, domain)) => {
            let first: String = local
                .chars()
                .take(if local.chars().count() > 1 { 1 } else { 0 })
                .collect();
            format!("{first}***@{domain}")
        }
        None => "***".into(),
    }
}

/// Thai numbers in national form with all but the first two and last four
/// digits hidden (`08x-xxx-5678`); others as `+CC` and the last four.
fn mask_phone(e164: &str) -> String {
    let digits: String = e164.chars().filter(char::is_ascii_digit).collect();
    if let Some(national) = digits.strip_prefix("66") {
        let national = format!("0{national}");
        let n = national.len();
        if n >= 7 {
            let head = &national[..2];
            let tail = &national[n - 4..];
            let middle = n - 6;
            // 10 digits (mobiles): 3-3-4; 9 digits (Bangkok): 2-3-4.
            return if n == 10 {
                format!("{head}x-{}-{tail}", "x".repeat(middle - 1))
            } else {
                format!("{head}-{}-{tail}", "x".repeat(middle))
            };
        }
    }
    let number = phonenumber::parse(None, e164).ok();
    let code = number
        .as_ref()
        .map(|n| n.code().value().to_string())
        .unwrap_or_default();
    let national = digits.strip_prefix(code.as_str()).unwrap_or(&digits);
    let n = national.len();
    if n <= 4 {
        return format!("+{code} xxxx");
    }
    format!("+{code} {}{}", "x".repeat(n - 4), &national[n - 4..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn thai_numbers_normalise_to_e164_in_every_usual_form() {
        for input in [
            "081-234-5678",
            "0812345678",
            "+66 81 234 5678",
            "+66812345678",
            "(081) 234 5678",
        ] {
            assert_eq!(
                ContactKind::Phone.normalize(input).unwrap(),
                "+66812345678",
                "{input}"
            );
        }
        assert_eq!(
            ContactKind::Phone.normalize("02 123 4567").unwrap(),
            "+6621234567"
        );
    }

    #[test]
    fn other_countries_need_their_code() {
        assert_eq!(
            ContactKind::Phone.normalize("+44 20 7946 0958").unwrap(),
            "+442079460958"
        );
        assert_eq!(
            ContactKind::Phone.normalize("+1 415 555 2671").unwrap(),
            "+14155552671"
        );
    }

    #[test]
    fn invalid_numbers_are_refused() {
        for bad in [
            "12345",
            "081-234",
            "08l2345678",
            "+999 1234 5678",
            "",
            "   ",
            "+66 12",
        ] {
            assert!(
                ContactKind::Phone.normalize(bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn emails_are_bare_addresses_with_a_domain() {
        assert_eq!(
            ContactKind::Email
                .normalize(" Somchai.J@Example.COM ")
                .unwrap(),
            "somchai.j@example.com"
        );
        let long = format!("{}@example.com", "a".repeat(300));
        for bad in [
            "Somchai <s@example.com>",
            "s@localhost",
            "no-at-sign",
            "a b@example.com",
            "s@",
            long.as_str(),
        ] {
            assert!(
                ContactKind::Email.normalize(bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn line_ids_are_messaging_api_user_ids() {
        assert_eq!(
            ContactKind::LineId
                .normalize("U0123456789ABCDEF0123456789abcdef")
                .unwrap(),
            "U0123456789abcdef0123456789abcdef"
        );
        for bad in [
            "@shop",
            "U123",
            "X0123456789abcdef0123456789abcdef",
            "U0123456789abcdef0123456789abcdeg",
        ] {
            assert!(
                ContactKind::LineId.normalize(bad).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn masks_show_little() {
        assert_eq!(ContactKind::Phone.mask("+66812345678"), "08x-xxx-5678");
        assert_eq!(ContactKind::Phone.mask("+6621234567"), "02-xxx-4567");
        assert_eq!(ContactKind::Phone.mask("+442079460958"), "+44 xxxxxx0958");
        assert_eq!(
            ContactKind::Email.mask("somchai@example.com"),
            "s***@example.com"
        );
        assert_eq!(ContactKind::Email.mask("s@example.com"), "***@example.com");
        assert_eq!(
            ContactKind::LineId.mask("U0123456789abcdef0123456789abcdef"),
            "U***cdef"
        );
    }

    #[test]
    fn channels_and_kinds_agree() {
        for k in ContactKind::ALL {
            for c in k.channels() {
                assert_eq!(ContactKind::for_channel(*c), Some(k));
            }
            assert_eq!(ContactKind::parse(k.as_str()), Some(k));
        }
    }

    proptest! {
        #[test]
        fn thai_mobile_masks_reveal_at_most_the_last_four_digits(rest in "[0-9]{7}", lead in "[689]") {
            let input = format!("0{lead}{rest}");
            if let Ok(n) = ContactKind::Phone.normalize(&input) {
                prop_assert_eq!(ContactKind::Phone.normalize(&n).unwrap(), n.clone());
                let mask = ContactKind::Phone.mask(&n);
                let shown: String = mask.chars().filter(char::is_ascii_digit).collect();
                prop_assert!(shown.len() <= 6, "{}", mask);
                prop_assert!(mask.ends_with(&input[input.len() - 4..]));
            }
        }

        #[test]
        fn email_masks_never_hold_the_local_part(local in "[a-z0-9._]{2,30}", domain in "[a-z]{2,10}\\.(com|co\\.th|org)") {
            let input = format!("{local}@{domain}");
            if let Ok(n) = ContactKind::Email.normalize(&input) {
                prop_assert_eq!(ContactKind::Email.normalize(&n).unwrap(), n.clone());
                let mask = ContactKind::Email.mask(&n);
                prop_assert!(!mask.contains(&format!("{local}@")), "{}", mask);
            }
        }
    }
}
