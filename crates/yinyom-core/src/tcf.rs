//! IAB TCF v2.2 TC strings, decoded bit by bit.
//!
//! A TC string is what an ad-tech CMP hands to vendors: the consent and
//! legitimate-interest choices for the framework's purposes and for each
//! vendor of the Global Vendor List. The banner writes one (`euconsent-v2`)
//! and sends it with the choice; the server keeps it as evidence and decodes
//! it here, so what the ledger records for the tenant's own purposes can be
//! checked against what vendors were told.
//!
//! Layout (IAB Tech Lab, "Consent string and vendor list formats v2"):
//! segments separated by `.`, each base64url without padding; the first is
//! the core segment, the others start with a 3-bit segment type (1 disclosed
//! vendors, 2 allowed vendors, 3 publisher purposes). Vendor sets are a
//! bitfield or a list of ranges, whichever the encoder found shorter.

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

/// Longest TC string we decode (a full GVL bitfield is about 1.5 KB).
pub const MAX_LEN: usize = 64 * 1024;

/// Most vendor ids all ranges of one string may expand to: bounds the work a
/// crafted string of many `1..=65535` ranges can cause.
const MAX_EXPANDED: usize = 1 << 20;

/// Why a TC string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TcfError {
    #[error("empty TC string")]
    Empty,
    #[error("TC string longer than {MAX_LEN} bytes")]
    TooLong,
    #[error("segment {0} is not base64url")]
    Base64(usize),
    #[error("the string ends inside {0}")]
    Truncated(&'static str),
    #[error("TC string version {0}; only version 2 is supported")]
    Version(u64),
    #[error("unknown segment type {0}")]
    SegmentType(u64),
    #[error("segment type {0} appears twice")]
    DuplicateSegment(u64),
    #[error("a range in {0} is empty or goes past the largest id")]
    Range(&'static str),
    #[error("{0} is not a letter code")]
    Letters(&'static str),
    #[error("the vendor ranges expand to too many ids")]
    TooManyIds,
}

/// A decoded TC string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TcString {
    pub core: Core,
    /// Vendors the CMP disclosed to the user (segment type 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disclosed_vendors: Option<Vec<u16>>,
    /// Vendors the publisher allows (segment type 2, no longer written in v2.2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_vendors: Option<Vec<u16>>,
    /// The publisher's own purposes (segment type 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publisher_tc: Option<PublisherTc>,
}

/// The core segment. Ids are listed in increasing order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Core {
    pub version: u8,
    /// Milliseconds since the Unix epoch (the string holds deciseconds).
    pub created: i64,
    pub last_updated: i64,
    pub cmp_id: u16,
    pub cmp_version: u16,
    pub consent_screen: u8,
    /// Two letters, upper case (`EN`).
    pub consent_language: String,
    pub vendor_list_version: u16,
    pub policy_version: u8,
    pub is_service_specific: bool,
    pub use_non_standard_texts: bool,
    pub special_feature_opt_ins: Vec<u8>,
    pub purposes_consent: Vec<u8>,
    pub purposes_li_transparency: Vec<u8>,
    pub purpose_one_treatment: bool,
    pub publisher_cc: String,
    pub vendor_consents: Vec<u16>,
    pub vendor_legitimate_interests: Vec<u16>,
    pub publisher_restrictions: Vec<PublisherRestriction>,
}

/// A publisher restriction: for `purpose`, these vendors may process only
/// as `restriction_type` says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherRestriction {
    pub purpose: u8,
    /// 0 not allowed, 1 require consent, 2 require legitimate interest.
    pub restriction_type: u8,
    pub vendors: Vec<u16>,
}

/// The publisher purposes segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherTc {
    pub purposes_consent: Vec<u8>,
    pub purposes_li_transparency: Vec<u8>,
    /// Custom purposes are numbered from 1 up to `num_custom_purposes`.
    pub num_custom_purposes: u8,
    pub custom_purposes_consent: Vec<u8>,
    pub custom_purposes_li_transparency: Vec<u8>,
}

impl TcString {
    /// Decode a TC string (the `euconsent-v2` cookie's value).
    pub fn decode(s: &str) -> Result<TcString, TcfError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(TcfError::Empty);
        }
        if s.len() > MAX_LEN {
            return Err(TcfError::TooLong);
        }
        let mut budget = MAX_EXPANDED;
        let mut segments = s.split('.');
        let first = segments.next().unwrap_or_default();
        let bytes = unbase64(first).ok_or(TcfError::Base64(0))?;
        let core = Core::read(&mut Bits::new(&bytes), &mut budget)?;
        let mut out = TcString {
            core,
            disclosed_vendors: None,
            allowed_vendors: None,
            publisher_tc: None,
        };
        for (i, seg) in segments.enumerate() {
            let bytes = unbase64(seg).ok_or(TcfError::Base64(i + 1))?;
            let mut b = Bits::new(&bytes);
            let kind = b.read(3, "the segment type")?;
            let slot_taken = match kind {
                1 => out.disclosed_vendors.is_some(),
                2 => out.allowed_vendors.is_some(),
                3 => out.publisher_tc.is_some(),
                k => return Err(TcfError::SegmentType(k)),
            };
            if slot_taken {
                return Err(TcfError::DuplicateSegment(kind));
            }
            match kind {
                1 => out.disclosed_vendors = Some(b.vendors("disclosed vendors", &mut budget)?),
                2 => out.allowed_vendors = Some(b.vendors("allowed vendors", &mut budget)?),
                _ => out.publisher_tc = Some(PublisherTc::read(&mut b)?),
            }
        }
        Ok(out)
    }

    /// The user consented to TCF purpose `id` (1-24).
    pub fn purpose_consent(&self, id: u8) -> bool {
        self.core.purposes_consent.contains(&id)
    }

    /// The user consented to vendor `id`.
    pub fn vendor_consent(&self, id: u16) -> bool {
        self.core.vendor_consents.binary_search(&id).is_ok()
    }
}

impl Core {
    fn read(b: &mut Bits, budget: &mut usize) -> Result<Core, TcfError> {
        let version = b.read(6, "Version")?;
        if version != 2 {
            return Err(TcfError::Version(version));
        }
        Ok(Core {
            version: 2,
            created: b.read(36, "Created")? as i64 * 100,
            last_updated: b.read(36, "LastUpdated")? as i64 * 100,
            cmp_id: b.read(12, "CmpId")? as u16,
            cmp_version: b.read(12, "CmpVersion")? as u16,
            consent_screen: b.read(6, "ConsentScreen")? as u8,
            consent_language: b.letters("ConsentLanguage")?,
            vendor_list_version: b.read(12, "VendorListVersion")? as u16,
            policy_version: b.read(6, "TcfPolicyVersion")? as u8,
            is_service_specific: b.flag("IsServiceSpecific")?,
            use_non_standard_texts: b.flag("UseNonStandardTexts")?,
            special_feature_opt_ins: b.ids(12, "SpecialFeatureOptIns")?,
            purposes_consent: b.ids(24, "PurposesConsent")?,
            purposes_li_transparency: b.ids(24, "PurposesLITransparency")?,
            purpose_one_treatment: b.flag("PurposeOneTreatment")?,
            publisher_cc: b.letters("PublisherCC")?,
            vendor_consents: b.vendors("the vendor consent section", budget)?,
            vendor_legitimate_interests: b.vendors("the vendor LI section", budget)?,
            publisher_restrictions: b.restrictions(budget)?,
        })
    }
}

impl PublisherTc {
    fn read(b: &mut Bits) -> Result<PublisherTc, TcfError> {
        let purposes_consent = b.ids(24, "PubPurposesConsent")?;
        let purposes_li_transparency = b.ids(24, "PubPurposesLITransparency")?;
        let n = b.read(6, "NumCustomPurposes")? as usize;
        Ok(PublisherTc {
            purposes_consent,
            purposes_li_transparency,
            num_custom_purposes: n as u8,
            custom_purposes_consent: b.ids(n, "CustomPurposesConsent")?,
            custom_purposes_li_transparency: b.ids(n, "CustomPurposesLITransparency")?,
        })
    }
}

/// What the server needs to know of a Global Vendor List (v3 format).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorListSummary {
    pub version: u32,
    pub policy_version: u32,
    /// Vendor ids, increasing.
    pub vendors: Vec<u16>,
}

/// Check that `v` is a v3 Global Vendor List the banner can show: the
/// version fields, the maps of purposes, special features, stacks, data
/// categories and vendors, each vendor with its id, name and purposes.
pub fn check_vendor_list(v: &serde_json::Value) -> Result<VendorListSummary, String> {
    let int = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
    if int("gvlSpecificationVersion") != Some(3) {
        return Err("gvlSpecificationVersion must be 3".into());
    }
    let version = int("vendorListVersion")
        .filter(|n| (1..=4095).contains(n))
        .ok_or("vendorListVersion must be 1-4095")? as u32;
    let policy_version = int("tcfPolicyVersion")
        .filter(|n| (4..=63).contains(n))
        .ok_or("tcfPolicyVersion must be 4 or later (TCF v2.2)")? as u32;
    for k in [
        "purposes",
        "specialPurposes",
        "features",
        "specialFeatures",
        "stacks",
        "dataCategories",
    ] {
        if !v.get(k).is_some_and(serde_json::Value::is_object) {
            return Err(format!("{k} must be an object"));
        }
    }
    let vendors = v
        .get("vendors")
        .and_then(serde_json::Value::as_object)
        .ok_or("vendors must be an object")?;
    let mut ids = Vec::with_capacity(vendors.len());
    for (key, vendor) in vendors {
        let id = vendor.get("id").and_then(serde_json::Value::as_u64);
        match id {
            Some(id) if (1..=65535).contains(&id) && key == &id.to_string() => ids.push(id as u16),
            _ => return Err(format!("vendors.{key}.id must be its key, 1-65535")),
        }
        if !vendor.get("name").is_some_and(serde_json::Value::is_string)
            || !vendor
                .get("purposes")
                .is_some_and(serde_json::Value::is_array)
        {
            return Err(format!("vendors.{key} needs a name and purposes"));
        }
    }
    ids.sort_unstable();
    Ok(VendorListSummary {
        version,
        policy_version,
        vendors: ids,
    })
}

/// Base64url without padding; also takes the standard alphabet and padding,
/// which some CMPs write.
fn unbase64(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    if s.is_empty() {
        return None;
    }
    let s: String = s
        .chars()
        .map(|c| match c {
            '+' => '-',
            '/' => '_',
            c => c,
        })
        .collect();
    LENIENT.decode(s.trim_end_matches('=')).ok()
}

/// A big-endian bit reader over one segment.
struct Bits<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Bits<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Bits { bytes, pos: 0 }
    }

    /// The next `n` (≤ 64) bits as an unsigned integer.
    fn read(&mut self, n: usize, field: &'static str) -> Result<u64, TcfError> {
        if self.pos + n > self.bytes.len() * 8 {
            return Err(TcfError::Truncated(field));
        }
        let mut v = 0u64;
        for i in self.pos..self.pos + n {
            let bit = (self.bytes[i / 8] >> (7 - i % 8)) & 1;
            v = (v << 1) | u64::from(bit);
        }
        self.pos += n;
        Ok(v)
    }

    fn flag(&mut self, field: &'static str) -> Result<bool, TcfError> {
        Ok(self.read(1, field)? == 1)
    }

    /// Two 6-bit letters, `A` = 0.
    fn letters(&mut self, field: &'static str) -> Result<String, TcfError> {
        let mut s = String::with_capacity(2);
        for _ in 0..2 {
            let v = self.read(6, field)?;
            if v > 25 {
                return Err(TcfError::Letters(field));
            }
            s.push(char::from(b'A' + v as u8));
        }
        Ok(s)
    }

    /// A bitfield of `n` bits: the ids (from 1) whose bit is set.
    fn ids(&mut self, n: usize, field: &'static str) -> Result<Vec<u8>, TcfError> {
        let mut out = Vec::new();
        for id in 1..=n {
            if self.flag(field)? {
                out.push(id as u8);
            }
        }
        Ok(out)
    }

    /// A vendor section: MaxVendorId, then a bitfield or a range list.
    fn vendors(&mut self, field: &'static str, budget: &mut usize) -> Result<Vec<u16>, TcfError> {
        let max = self.read(16, field)? as u16;
        if !self.flag(field)? {
            let mut out = Vec::new();
            for id in 1..=max {
                if self.flag(field)? {
                    out.push(id);
                }
            }
            return Ok(out);
        }
        let mut set = IdSet::default();
        self.ranges(&mut set, Some(max), field, budget)?;
        Ok(set.into_vec())
    }

    /// NumEntries, then entries of IsARange, StartOrOnlyVendorId[, EndVendorId].
    fn ranges(
        &mut self,
        set: &mut IdSet,
        max: Option<u16>,
        field: &'static str,
        budget: &mut usize,
    ) -> Result<(), TcfError> {
        let n = self.read(12, field)?;
        for _ in 0..n {
            let range = self.flag(field)?;
            let start = self.read(16, field)? as u16;
            let end = if range {
                self.read(16, field)? as u16
            } else {
                start
            };
            if start == 0 || end < start || max.is_some_and(|m| end > m) {
                return Err(TcfError::Range(field));
            }
            let len = usize::from(end - start) + 1;
            *budget = budget.checked_sub(len).ok_or(TcfError::TooManyIds)?;
            set.insert_range(start, end);
        }
        Ok(())
    }

    fn restrictions(&mut self, budget: &mut usize) -> Result<Vec<PublisherRestriction>, TcfError> {
        const F: &str = "the publisher restrictions";
        let n = self.read(12, F)?;
        // Purpose and type may repeat across entries: merge them.
        let mut by_key: BTreeMap<(u8, u8), IdSet> = BTreeMap::new();
        for _ in 0..n {
            let purpose = self.read(6, F)? as u8;
            let restriction_type = self.read(2, F)? as u8;
            let set = by_key.entry((purpose, restriction_type)).or_default();
            self.ranges(set, None, F, budget)?;
        }
        Ok(by_key
            .into_iter()
            .map(|((purpose, restriction_type), set)| PublisherRestriction {
                purpose,
                restriction_type,
                vendors: set.into_vec(),
            })
            .collect())
    }
}

/// A set of vendor ids (1-65535) as a bitmap: 8 KiB, sorted for free.
#[derive(Default)]
struct IdSet(Vec<u64>);

impl IdSet {
    fn insert_range(&mut self, start: u16, end: u16) {
        if self.0.is_empty() {
            self.0 = vec![0; 1024];
        }
        for id in start..=end {
            self.0[usize::from(id) / 64] |= 1 << (id % 64);
        }
    }

    fn into_vec(self) -> Vec<u16> {
        let mut out = Vec::new();
        for (w, word) in self.0.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let b = bits.trailing_zeros();
                out.push((w * 64) as u16 + b as u16);
                bits &= bits - 1;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer for tests: the inverse of `Bits`.
    #[derive(Default)]
    struct W(Vec<bool>);
    impl W {
        fn put(&mut self, v: u64, n: usize) -> &mut Self {
            for i in (0..n).rev() {
                self.0.push((v >> i) & 1 == 1);
            }
            self
        }
        fn finish(&self) -> String {
            let mut bytes = vec![0u8; self.0.len().div_ceil(8)];
            for (i, b) in self.0.iter().enumerate() {
                if *b {
                    bytes[i / 8] |= 1 << (7 - i % 8);
                }
            }
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
        }
    }

    fn core_head(w: &mut W) {
        w.put(2, 6)
            .put(16_000_000_000, 36)
            .put(16_000_000_001, 36)
            .put(300, 12)
            .put(7, 12)
            .put(1, 6)
            .put(4, 6) // E
            .put(13, 6) // N
            .put(150, 12)
            .put(4, 6)
            .put(1, 1)
            .put(0, 1)
            .put(0b0100_0000_0000, 12)
            .put(0b1011 << 20, 24)
            .put(0b0001 << 20, 24)
            .put(0, 1)
            .put(3, 6) // D
            .put(4, 6); // E
    }

    #[test]
    fn a_hand_written_core_segment_decodes_field_by_field() {
        let mut w = W::default();
        core_head(&mut w);
        // Consents: bitfield, max 5, vendors 2 and 5.
        w.put(5, 16).put(0, 1).put(0b01001, 5);
        // LI: ranges, max 900: 7 and 800-802.
        w.put(900, 16).put(1, 1).put(2, 12);
        w.put(0, 1).put(7, 16);
        w.put(1, 1).put(800, 16).put(802, 16);
        // One restriction: purpose 2, require consent, vendors 10-11.
        w.put(1, 12)
            .put(2, 6)
            .put(1, 2)
            .put(1, 12)
            .put(1, 1)
            .put(10, 16)
            .put(11, 16);
        let tc = TcString::decode(&w.finish()).unwrap();
        let c = &tc.core;
        assert_eq!(c.created, 1_600_000_000_000);
        assert_eq!(c.last_updated, 1_600_000_000_100);
        assert_eq!((c.cmp_id, c.cmp_version, c.consent_screen), (300, 7, 1));
        assert_eq!(c.consent_language, "EN");
        assert_eq!((c.vendor_list_version, c.policy_version), (150, 4));
        assert!(c.is_service_specific && !c.use_non_standard_texts);
        assert_eq!(c.special_feature_opt_ins, vec![2]);
        assert_eq!(c.purposes_consent, vec![1, 3, 4]);
        assert_eq!(c.purposes_li_transparency, vec![4]);
        assert_eq!(c.publisher_cc, "DE");
        assert_eq!(c.vendor_consents, vec![2, 5]);
        assert_eq!(c.vendor_legitimate_interests, vec![7, 800, 801, 802]);
        assert_eq!(
            c.publisher_restrictions,
            vec![PublisherRestriction {
                purpose: 2,
                restriction_type: 1,
                vendors: vec![10, 11]
            }]
        );
        assert!(tc.purpose_consent(3) && !tc.purpose_consent(2));
        assert!(tc.vendor_consent(5) && !tc.vendor_consent(7));
    }

    #[test]
    fn bad_strings_are_refused_with_a_reason() {
        assert_eq!(TcString::decode(""), Err(TcfError::Empty));
        assert_eq!(TcString::decode("!!!"), Err(TcfError::Base64(0)));
        // Version 1.
        let mut w = W::default();
        w.put(1, 6).put(0, 30);
        assert_eq!(TcString::decode(&w.finish()), Err(TcfError::Version(1)));
        // Cut inside the vendor section.
        let mut w = W::default();
        core_head(&mut w);
        w.put(50, 16).put(0, 1).put(0, 10);
        assert_eq!(
            TcString::decode(&w.finish()),
            Err(TcfError::Truncated("the vendor consent section"))
        );
        // A range past MaxVendorId.
        let mut w = W::default();
        core_head(&mut w);
        w.put(10, 16)
            .put(1, 1)
            .put(1, 12)
            .put(1, 1)
            .put(5, 16)
            .put(11, 16);
        assert_eq!(
            TcString::decode(&w.finish()),
            Err(TcfError::Range("the vendor consent section"))
        );
    }

    #[test]
    fn huge_ranges_are_bounded() {
        let mut w = W::default();
        core_head(&mut w);
        w.put(0, 16).put(0, 1).put(0, 16).put(0, 1);
        w.put(40, 12);
        for _ in 0..40 {
            w.put(1, 6)
                .put(0, 2)
                .put(1, 12)
                .put(1, 1)
                .put(1, 16)
                .put(65535, 16);
        }
        assert_eq!(TcString::decode(&w.finish()), Err(TcfError::TooManyIds));
    }

    proptest::proptest! {
        /// Any text over the alphabet decodes or is refused, never panics;
        /// what decodes is well formed (ids in range, increasing, unique).
        #[test]
        fn any_string_decodes_or_is_refused(s in "C[A-Za-z0-9_-]{30,400}(\\.[A-Za-z0-9_-]{0,80}){0,3}") {
            if let Ok(tc) = TcString::decode(&s) {
                let c = &tc.core;
                let increasing = |v: &[u16]| v.windows(2).all(|w| w[0] < w[1]) && v.first() != Some(&0);
                proptest::prop_assert!(increasing(&c.vendor_consents));
                proptest::prop_assert!(increasing(&c.vendor_legitimate_interests));
                proptest::prop_assert!(c.purposes_consent.iter().all(|p| (1..=24).contains(p)));
                proptest::prop_assert!(c.special_feature_opt_ins.iter().all(|p| (1..=12).contains(p)));
                proptest::prop_assert!(c.publisher_restrictions.iter().all(|r| increasing(&r.vendors)));
                proptest::prop_assert_eq!(c.consent_language.len(), 2);
            }
        }
    }

    #[test]
    fn other_segments_decode() {
        let mut w = W::default();
        core_head(&mut w);
        w.put(0, 16).put(0, 1).put(0, 16).put(0, 1).put(0, 12);
        let core = w.finish();
        let mut d = W::default();
        d.put(1, 3).put(3, 16).put(0, 1).put(0b101, 3);
        let mut p = W::default();
        p.put(3, 3)
            .put(1 << 23, 24)
            .put(0, 24)
            .put(2, 6)
            .put(0b01, 2)
            .put(0b10, 2);
        let tc = TcString::decode(&format!("{core}.{}.{}", d.finish(), p.finish())).unwrap();
        assert_eq!(tc.disclosed_vendors, Some(vec![1, 3]));
        let p = tc.publisher_tc.unwrap();
        assert_eq!(p.purposes_consent, vec![1]);
        assert_eq!(p.num_custom_purposes, 2);
        assert_eq!(p.custom_purposes_consent, vec![2]);
        assert_eq!(p.custom_purposes_li_transparency, vec![1]);
        let dup = format!("{core}.{}.{}", d.finish(), d.finish());
        assert_eq!(TcString::decode(&dup), Err(TcfError::DuplicateSegment(1)));
    }
}
