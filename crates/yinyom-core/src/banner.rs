//! A tenant's banner design (colours, font, corner radius, position, logo,
//! texts, dark mode) and the rules every design must keep: "Accept" and
//! "Reject" with equal prominence, and text contrast of at least WCAG AA
//! (4.5:1) everywhere the banner writes text.
//!
//! A design is presentation only: it never changes the notice people
//! consent to (the banner's title and body come from the notice; a design
//! may retitle the banner and relabel its buttons, nothing more).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::purpose::Lang;

/// WCAG 2.x AA for normal text.
pub const MIN_CONTRAST: f64 = 4.5;

/// How far apart the two buttons' fills may stand out from the banner:
/// the larger contrast with the banner background over the smaller.
pub const MAX_WEIGHT_RATIO: f64 = 1.5;

/// Where the banner sits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Position {
    /// Across the bottom of the page (the default).
    #[default]
    BottomBar,
    /// A box in the bottom corner.
    CornerBox,
    /// A centred modal dialog over the page.
    CenterModal,
}

/// The colours of one scheme (light, or dark mode), as `#rrggbb`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Palette {
    pub background: String,
    pub text: String,
    /// Links, the "manage preferences" button, focus rings, switches.
    pub accent: String,
    pub accept_background: String,
    pub accept_text: String,
    pub reject_background: String,
    pub reject_text: String,
}

impl Default for Palette {
    fn default() -> Self {
        Palette {
            background: "#ffffff".into(),
            text: "#111827".into(),
            accent: "#1d4ed8".into(),
            accept_background: "#1d4ed8".into(),
            accept_text: "#ffffff".into(),
            reject_background: "#1d4ed8".into(),
            reject_text: "#ffffff".into(),
        }
    }
}

/// An "Accept all" or "Reject all" button.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ButtonStyle {
    /// Pixels; absent: the banner's `font_size`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub font_size: Option<u8>,
    /// 400-900.
    #[serde(default = "default_weight")]
    pub font_weight: u16,
    /// Never allowed: both buttons are always shown.
    #[serde(default)]
    pub hidden: bool,
}

fn default_weight() -> u16 {
    600
}

impl Default for ButtonStyle {
    fn default() -> Self {
        ButtonStyle {
            font_size: None,
            font_weight: default_weight(),
            hidden: false,
        }
    }
}

/// Texts of one language that replace the banner's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Texts {
    /// The banner's heading (default: the notice's title).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manage: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub save: Option<String>,
}

/// A banner design. Every field has a default: `{}` is the standard banner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct BannerDesign {
    #[serde(default)]
    pub position: Position,
    /// A CSS font stack (`Georgia, serif`); Thai fallbacks are added.
    #[serde(default = "default_font")]
    pub font_family: String,
    /// Base text size in pixels, 12-24.
    #[serde(default = "default_size")]
    pub font_size: u8,
    /// Corner radius of the banner and its buttons in pixels, 0-32.
    #[serde(default = "default_radius")]
    pub radius: u8,
    /// An https image shown in the banner's heading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    #[serde(default)]
    pub colors: Palette,
    /// Colours when the visitor's system is in dark mode; absent: the
    /// light colours always.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dark: Option<Palette>,
    #[serde(default)]
    pub accept: ButtonStyle,
    #[serde(default)]
    pub reject: ButtonStyle,
    /// Per language (`th`, `en`): texts that replace the defaults.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub texts: BTreeMap<Lang, Texts>,
}

fn default_font() -> String {
    "system-ui".into()
}
fn default_size() -> u8 {
    16
}
fn default_radius() -> u8 {
    6
}

impl Default for BannerDesign {
    fn default() -> Self {
        BannerDesign {
            position: Position::default(),
            font_family: default_font(),
            font_size: default_size(),
            radius: default_radius(),
            logo_url: None,
            colors: Palette::default(),
            dark: None,
            accept: ButtonStyle::default(),
            reject: ButtonStyle::default(),
            texts: BTreeMap::new(),
        }
    }
}

/// Why a design is refused: the field (JSON path with dots) and the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub field: String,
    pub message: String,
}

fn refuse<T>(field: impl Into<String>, message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        field: field.into(),
        message: message.into(),
    })
}

/// `#rrggbb` or `#rgb` as (r, g, b).
pub fn parse_hex(s: &str) -> Option<[u8; 3]> {
    let h = s.strip_prefix('#')?;
    if !h.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let v = |x: &str| u8::from_str_radix(x, 16).ok();
    match h.len() {
        6 => Some([v(&h[0..2])?, v(&h[2..4])?, v(&h[4..6])?]),
        3 => {
            let d = |i: usize| v(&h[i..i + 1]).map(|x| x * 17);
            Some([d(0)?, d(1)?, d(2)?])
        }
        _ => None,
    }
}

/// WCAG 2.x relative luminance of an sRGB colour.
pub fn luminance(c: [u8; 3]) -> f64 {
    let lin = |x: u8| {
        let c = f64::from(x) / 255.0;
        if c <= 0.04045 {
            c / 12.92
        } else {
            ((c + 0.055) / 1.055).powf(2.4)
        }
    };
    0.2126 * lin(c[0]) + 0.7152 * lin(c[1]) + 0.0722 * lin(c[2])
}

/// WCAG 2.x contrast ratio, 1 to 21, whichever colour is lighter.
pub fn contrast(a: [u8; 3], b: [u8; 3]) -> f64 {
    let (x, y) = (luminance(a), luminance(b));
    (x.max(y) + 0.05) / (x.min(y) + 0.05)
}

fn label(field: &str, s: &Option<String>, max: usize) -> Result<(), Refusal> {
    if let Some(s) = s
        && (s.trim().is_empty() || s.chars().count() > max || s.chars().any(char::is_control))
    {
        return refuse(
            field,
            format!("must be 1-{max} characters, no control characters"),
        );
    }
    Ok(())
}

fn check_palette(name: &str, p: &Palette) -> Result<(), Refusal> {
    let colour = |field: &str, v: &str| {
        parse_hex(v).ok_or_else(|| Refusal {
            field: format!("{name}.{field}"),
            message: "must be a colour as #rrggbb".into(),
        })
    };
    let bg = colour("background", &p.background)?;
    let text = colour("text", &p.text)?;
    let accent = colour("accent", &p.accent)?;
    let acc_bg = colour("accept_background", &p.accept_background)?;
    let acc_fg = colour("accept_text", &p.accept_text)?;
    let rej_bg = colour("reject_background", &p.reject_background)?;
    let rej_fg = colour("reject_text", &p.reject_text)?;
    for (field, fg, back, what) in [
        ("text", text, bg, "the banner's text on its background"),
        ("accent", accent, bg, "links and the preferences button"),
        ("accept_text", acc_fg, acc_bg, "the Accept button's text"),
        ("reject_text", rej_fg, rej_bg, "the Reject button's text"),
    ] {
        let c = contrast(fg, back);
        if c < MIN_CONTRAST {
            return refuse(
                format!("{name}.{field}"),
                format!(
                    "contrast of {what} is {:.2}:1, below WCAG AA {MIN_CONTRAST}:1",
                    floor2(c)
                ),
            );
        }
    }
    // Visual weight: how much each button's fill stands out from the banner.
    let (wa, wr) = (contrast(acc_bg, bg), contrast(rej_bg, bg));
    if wa.max(wr) / wa.min(wr) > MAX_WEIGHT_RATIO {
        return refuse(
            format!("{name}.reject_background"),
            format!(
                "Accept and Reject must have equal prominence: their fills stand out from the \
                 banner at {:.2}:1 and {:.2}:1 (at most {MAX_WEIGHT_RATIO} times apart)",
                floor2(wa),
                floor2(wr)
            ),
        );
    }
    Ok(())
}

/// Shown rounded down, so a refused 4.499 never reads "4.50".
fn floor2(x: f64) -> f64 {
    (x * 100.0).floor() / 100.0
}

impl BannerDesign {
    /// Every rule a design must keep; the first one broken, naming its field.
    pub fn validate(&self) -> Result<(), Refusal> {
        let f = &self.font_family;
        if f.trim().is_empty()
            || f.len() > 200
            || !f
                .chars()
                .all(|c| c.is_alphanumeric() || " ,-_'\"".contains(c))
            || f.matches('"').count() % 2 == 1
            || f.matches('\'').count() % 2 == 1
        {
            return refuse(
                "font_family",
                "must be a CSS font stack of 1-200 characters: names, spaces, commas, quotes, hyphens",
            );
        }
        if !(12..=24).contains(&self.font_size) {
            return refuse("font_size", "must be 12-24 (pixels)");
        }
        if self.radius > 32 {
            return refuse("radius", "must be 0-32 (pixels)");
        }
        if let Some(u) = &self.logo_url
            && (!u.starts_with("https://")
                || u.len() > 2000
                || u.chars().any(|c| c.is_whitespace() || c.is_control()))
        {
            return refuse("logo_url", "must be an https URL of at most 2000 bytes");
        }
        check_palette("colors", &self.colors)?;
        if let Some(d) = &self.dark {
            check_palette("dark", d)?;
        }
        for (name, b) in [("accept", &self.accept), ("reject", &self.reject)] {
            if b.hidden {
                return refuse(
                    format!("{name}.hidden"),
                    "Accept and Reject are always both shown, with equal prominence",
                );
            }
            if let Some(s) = b.font_size
                && !(12..=24).contains(&s)
            {
                return refuse(format!("{name}.font_size"), "must be 12-24 (pixels)");
            }
            if !(400..=900).contains(&b.font_weight) || !b.font_weight.is_multiple_of(100) {
                return refuse(format!("{name}.font_weight"), "must be 400, 500, … 900");
            }
        }
        let size = |b: &ButtonStyle| b.font_size.unwrap_or(self.font_size);
        if size(&self.accept) != size(&self.reject) {
            return refuse(
                "reject.font_size",
                format!(
                    "Accept and Reject must have equal prominence: font sizes {} and {} differ",
                    size(&self.accept),
                    size(&self.reject)
                ),
            );
        }
        if self.accept.font_weight != self.reject.font_weight {
            return refuse(
                "reject.font_weight",
                format!(
                    "Accept and Reject must have equal prominence: font weights {} and {} differ",
                    self.accept.font_weight, self.reject.font_weight
                ),
            );
        }
        for (lang, t) in &self.texts {
            let l = match lang {
                Lang::Th => "th",
                Lang::En => "en",
            };
            label(&format!("texts.{l}.title"), &t.title, 120)?;
            label(&format!("texts.{l}.accept"), &t.accept, 40)?;
            label(&format!("texts.{l}.reject"), &t.reject, 40)?;
            label(&format!("texts.{l}.manage"), &t.manage, 40)?;
            label(&format!("texts.{l}.save"), &t.save, 40)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contrast_matches_wcag_reference_values() {
        let white = [255, 255, 255];
        assert!((contrast(white, [0, 0, 0]) - 21.0).abs() < 1e-9);
        assert!((contrast([0, 0, 0], white) - 21.0).abs() < 1e-9);
        assert!((contrast(white, white) - 1.0).abs() < 1e-9);
        // #767676 on white is the lightest grey that passes AA: 4.54:1.
        let c = contrast(parse_hex("#767676").unwrap(), white);
        assert!((c - 4.54).abs() < 0.01, "{c}");
        // #777777 fails it: 4.48:1.
        assert!(contrast(parse_hex("#777").unwrap(), white) < MIN_CONTRAST);
    }

    #[test]
    fn hex_colours() {
        assert_eq!(parse_hex("#1d4ed8"), Some([0x1d, 0x4e, 0xd8]));
        assert_eq!(parse_hex("#fff"), Some([255, 255, 255]));
        assert_eq!(parse_hex("1d4ed8"), None);
        assert_eq!(parse_hex("#12345"), None);
        assert_eq!(parse_hex("#gggggg"), None);
        assert_eq!(parse_hex("#+1+1+1"), None);
    }

    #[test]
    fn the_default_design_keeps_every_rule() {
        assert_eq!(BannerDesign::default().validate(), Ok(()));
        let d: BannerDesign = serde_json::from_str("{}").unwrap();
        assert_eq!(d, BannerDesign::default());
    }

    fn field(d: &BannerDesign) -> String {
        d.validate().unwrap_err().field
    }

    #[test]
    fn unequal_prominence_is_refused() {
        // A filled Accept beside a Reject that melts into the banner.
        let mut d = BannerDesign::default();
        d.colors.reject_background = "#ffffff".into();
        d.colors.reject_text = "#1d4ed8".into();
        assert_eq!(field(&d), "colors.reject_background");
        // Both outlined (same fill as the banner) is equal.
        d.colors.accept_background = "#ffffff".into();
        d.colors.accept_text = "#1d4ed8".into();
        assert_eq!(d.validate(), Ok(()));

        let mut d = BannerDesign::default();
        d.reject.font_size = Some(12);
        assert_eq!(field(&d), "reject.font_size");
        let mut d = BannerDesign::default();
        d.accept.font_weight = 800;
        assert_eq!(field(&d), "reject.font_weight");
        let mut d = BannerDesign::default();
        d.reject.hidden = true;
        assert_eq!(field(&d), "reject.hidden");
    }

    #[test]
    fn low_contrast_is_refused_in_either_scheme() {
        let mut d = BannerDesign::default();
        d.colors.reject_text = "#6b8bf0".into();
        assert_eq!(field(&d), "colors.reject_text");
        let mut d = BannerDesign::default();
        d.colors.text = "#999999".into();
        assert_eq!(field(&d), "colors.text");
        let mut d = BannerDesign {
            dark: Some(Palette {
                background: "#111827".into(),
                text: "#f9fafb".into(),
                accent: "#93c5fd".into(),
                accept_background: "#93c5fd".into(),
                accept_text: "#111827".into(),
                reject_background: "#93c5fd".into(),
                reject_text: "#111827".into(),
            }),
            ..Default::default()
        };
        assert_eq!(d.validate(), Ok(()));
        if let Some(p) = d.dark.as_mut() {
            p.accept_text = "#5b7fbf".into();
        }
        assert_eq!(field(&d), "dark.accept_text");
    }

    #[test]
    fn other_fields_are_checked() {
        let mut d = BannerDesign {
            font_family: "x; background:url(evil)".into(),
            ..Default::default()
        };
        assert_eq!(field(&d), "font_family");
        d.font_family = "\"Sarabun, Georgia, serif".into();
        assert_eq!(field(&d), "font_family", "an unclosed quote");
        d.font_family = "\"Sarabun\", Georgia, serif".into();
        assert_eq!(d.validate(), Ok(()));
        d.logo_url = Some("javascript:alert(1)".into());
        assert_eq!(field(&d), "logo_url");
        d.logo_url = None;
        d.texts.insert(
            Lang::Th,
            Texts {
                reject: Some(" ".into()),
                ..Default::default()
            },
        );
        assert_eq!(field(&d), "texts.th.reject");
    }
}
