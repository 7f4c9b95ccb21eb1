//! Notices: the versioned privacy notice / consent text a subject was shown.
//! A consent always points at the exact version (and its content hash), so
//! what the person agreed to can be proven later.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::canonical;
use crate::purpose::{Lang, lang_str};
use crate::time::Micros;
use crate::validate::{self, Invalid};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NoticeText {
    pub title: String,
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
}

/// What an editor submits to publish a new version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct NoticeDraft {
    pub key: String,
    pub texts: BTreeMap<Lang, NoticeText>,
    /// Keys of the purposes this notice asks consent for.
    pub purposes: Vec<String>,
    /// A material change: consents given to earlier versions need renewal.
    #[serde(default)]
    pub material: bool,
}

/// A published, immutable notice version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Notice {
    pub key: String,
    pub version: u32,
    pub texts: BTreeMap<Lang, NoticeText>,
    pub purposes: Vec<String>,
    pub material: bool,
    /// SHA-256 (hex) over the canonical texts and purposes.
    pub content_hash: String,
    pub published_at: Micros,
}

/// The reference a consent event keeps to the notice it was given under.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NoticeRef {
    pub key: String,
    pub version: u32,
    pub hash: String,
}

impl NoticeDraft {
    pub fn validate(&self) -> Result<(), Invalid> {
        validate::key("key", &self.key)?;
        if self.texts.is_empty() {
            return Err(Invalid::new(
                "texts",
                "needs a text in at least one language (th, en)",
            ));
        }
        for (lang, t) in &self.texts {
            let l = lang_str(*lang);
            validate::text(&format!("texts.{l}.title"), &t.title, 300)?;
            validate::text(&format!("texts.{l}.body"), &t.body, 100_000)?;
            if let Some(url) = &t.url
                && !(url.starts_with("https://") || url.starts_with("http://"))
            {
                return Err(Invalid::new(
                    format!("texts.{l}.url"),
                    "must be an http(s) URL",
                ));
            }
        }
        if self.purposes.is_empty() {
            return Err(Invalid::new("purposes", "must name at least one purpose"));
        }
        for (i, p) in self.purposes.iter().enumerate() {
            validate::key(&format!("purposes/{i}"), p)?;
        }
        Ok(())
    }

    pub fn content_hash(&self) -> String {
        #[derive(Serialize)]
        struct Content<'a> {
            key: &'a str,
            texts: &'a BTreeMap<Lang, NoticeText>,
            purposes: &'a [String],
        }
        canonical::hash_of(&Content {
            key: &self.key,
            texts: &self.texts,
            purposes: &self.purposes,
        })
    }

    /// Freeze this draft as `version`.
    pub fn publish(self, version: u32, at: Micros) -> Notice {
        let content_hash = self.content_hash();
        Notice {
            key: self.key,
            version,
            texts: self.texts,
            purposes: self.purposes,
            material: self.material && version > 1,
            content_hash,
            published_at: at,
        }
    }
}

impl Notice {
    pub fn reference(&self) -> NoticeRef {
        NoticeRef {
            key: self.key.clone(),
            version: self.version,
            hash: self.content_hash.clone(),
        }
    }

    pub fn asks_for(&self, purpose: &str) -> bool {
        self.purposes.iter().any(|p| p == purpose)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn draft(body: &str) -> NoticeDraft {
        NoticeDraft {
            key: "marketing".into(),
            texts: [(
                Lang::Th,
                NoticeText {
                    title: "การตลาด".into(),
                    body: body.into(),
                    url: None,
                },
            )]
            .into(),
            purposes: vec!["marketing.email".into()],
            material: true,
        }
    }

    #[test]
    fn content_hash_changes_with_the_text_only() {
        assert_eq!(draft("a").content_hash(), draft("a").content_hash());
        assert_ne!(draft("a").content_hash(), draft("b").content_hash());
        let mut d = draft("a");
        d.material = false;
        assert_eq!(d.content_hash(), draft("a").content_hash());
    }

    #[test]
    fn a_first_version_is_never_material() {
        assert!(!draft("a").publish(1, 0).material);
        assert!(draft("a").publish(2, 0).material);
    }
}
